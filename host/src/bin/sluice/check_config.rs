//! `sluice check-config FILE`: "ok" only when `sluice serve` would start with that file and
//! its plugin directory. Beyond the file's own validation (every problem at once, each by
//! key), it loads what serve loads — the certificates (without making a self-signed or ACME
//! stand-in that does not exist yet: it may run as another user), the DKIM keys, the users file, and
//! every plugin of the directory under its settings, so a plugin's own validation
//! (`validate-config`) runs — and reports each failure. Files of the plugin directory that
//! are not Sluice plugins are warned about and skipped, as serve and reloads skip them.

use std::path::Path;
use std::process::ExitCode;

use sluice::config::Config;
use sluice::pipeline::Pipeline;

use crate::setup::{runtime_for, tokio_runtime};

pub fn run(file: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(file)?;
    let mut problems: Vec<String> = Vec::new();
    if let Err(e) = sluice::tls::check(&config) {
        problems.push(format!("TLS: {e}"));
    }
    if let Err(e) = sluice::sender_auth::Authenticator::new(&config) {
        problems.push(format!("sender authentication: {e}"));
    }
    let users = config.paths().users_file;
    if users.exists()
        && let Err(e) = sluice::smtp_auth::credentials::CredentialsFile::open(&users)
    {
        problems.push(format!("users file {}: {e}", users.display()));
    }
    let dir = config.paths().plugin_dir;
    if dir.exists() || config.source.is_some() {
        // Scratch services: the real store may be locked by a running server.
        let runtime = runtime_for(&config, false)?;
        match tokio_runtime()?.block_on(Pipeline::load(&runtime, &config)) {
            Ok(pipeline) => {
                for w in pipeline.warnings() {
                    eprintln!("sluice: warning: {w}");
                }
            }
            Err(errors) => problems.extend(errors.iter().map(|e| e.to_string())),
        }
    }
    if problems.is_empty() {
        println!("{}: ok", file.display());
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "sluice: {}: sluice serve would not start with it:",
        file.display()
    );
    for p in &problems {
        eprintln!("  {p}");
    }
    Ok(ExitCode::from(2))
}

/// Check that `sluice serve` would start with a configuration file and its plugin
/// directory (plugins' own validation included); print every problem.
#[derive(clap::Args)]
pub struct CheckConfig {
    /// The file.
    file: std::path::PathBuf,
}

impl CheckConfig {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        run(&self.file)
    }
}
