//! `sluice reload`: check the configuration, signal the running server (SIGHUP), and report
//! what it did: the plugins in service and any warnings, or why it refused the configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sluice::server::reload::ReloadStatus;

use crate::setup::load_config;

/// Checks the configuration and sends SIGHUP to the server of its pid file.
pub fn run(config: Option<&PathBuf>) -> anyhow::Result<ExitCode> {
    // Check the file here too, so the operator sees its problems at once; the server
    // checks again (and also loads the plugins) before applying it.
    let config = load_config(config)
        .context("the configuration is not valid; the server was not signalled")?;
    let pid_file = config.paths().pid_file;
    let text = std::fs::read_to_string(&pid_file).with_context(|| {
        format!(
            "{}: cannot read the pid file (is sluice serve running with this configuration?)",
            pid_file.display()
        )
    })?;
    let pid: i32 = text
        .trim()
        .parse()
        .with_context(|| format!("{}: not a process id", pid_file.display()))?;
    let pid = rustix::process::Pid::from_raw(pid)
        .with_context(|| format!("{}: not a process id", pid_file.display()))?;
    // A stale pid file may name a process that is not Sluice at all now (the number was
    // reused): it must not get a SIGHUP, which would end most programs.
    let exe = std::fs::read_link(format!("/proc/{}/exe", pid.as_raw_nonzero()));
    let is_sluice = exe.as_ref().is_ok_and(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("sluice"))
    });
    if !is_sluice {
        bail!(
            "{} names process {}, which is not a running sluice ({}): is the server running? (the pid file is stale)",
            pid_file.display(),
            pid.as_raw_nonzero(),
            match &exe {
                Ok(p) => format!("it runs {}", p.display()),
                Err(e) => format!("{e}"),
            }
        );
    }
    let status_file = sluice::server::reload::status_file(&config);
    let read_status = || -> Option<ReloadStatus> {
        serde_json::from_slice(&std::fs::read(&status_file).ok()?).ok()
    };
    let before = read_status()
        .filter(|s| s.pid == pid.as_raw_nonzero().get().unsigned_abs())
        .map_or(0, |s| s.generation);
    rustix::process::kill_process(pid, rustix::process::Signal::HUP)
        .with_context(|| format!("cannot signal process {pid:?} from {}", pid_file.display()))?;
    // The server records the outcome; plugins may take a while to compile on first load.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(s) = read_status()
            .filter(|s| s.pid == pid.as_raw_nonzero().get().unsigned_abs() && s.generation > before)
        {
            if s.applied {
                println!("{}", s.message);
                return Ok(ExitCode::SUCCESS);
            }
            eprintln!(
                "sluice: the server refused the configuration, the old one stays: {}",
                s.message
            );
            return Ok(ExitCode::from(1));
        }
        if Instant::now() > deadline {
            bail!(
                "sent SIGHUP to sluice (pid {}), but it reported no outcome within 120 s (see its log; is {} writable?)",
                pid.as_raw_nonzero(),
                status_file.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Tell the running server to re-read its configuration, certificate and plugins (it
/// applies them only if all are valid). Checks the file first, then sends SIGHUP to the
/// PID in the pid file.
#[derive(clap::Args)]
pub struct Reload {
    /// Configuration file (for the pid file's location).
    #[arg(long)]
    config: Option<PathBuf>,
}

impl Reload {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        run(self.config.as_ref())
    }
}
