//! `sluice reload`: check the configuration, then signal the running server (SIGHUP).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::load_config;

/// Checks the configuration and sends SIGHUP to the server of its pid file.
pub fn run(config: Option<&PathBuf>) -> anyhow::Result<ExitCode> {
    // Check the file here too, so the operator sees its problems at once; the server
    // checks again (and also loads the plugins) before applying it.
    let config = load_config(config)
        .context("the configuration is not valid; the server was not signalled")?;
    let pid_file = config.pid_file();
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
    rustix::process::kill_process(pid, rustix::process::Signal::HUP)
        .with_context(|| format!("cannot signal process {pid:?} from {}", pid_file.display()))?;
    println!(
        "sent SIGHUP to sluice (pid {}); it applies the configuration only if it is valid — see its log",
        pid.as_raw_nonzero()
    );
    Ok(ExitCode::SUCCESS)
}
