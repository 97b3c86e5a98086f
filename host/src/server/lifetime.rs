//! A started server's life as `sluice serve` runs it: the pid file, SIGHUP reloads (with the
//! status file that `sluice reload` waits for), and the drain on SIGTERM, SIGINT or a
//! caller's shutdown signal. In the library so that the binary and the tests run a server
//! the same way.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use super::Server;
use super::reload::{ReloadStatus, reload_config, status_file};

impl Server {
    /// Runs until SIGTERM or SIGINT, or until `shutdown` completes, then drains (within
    /// `server.drain_timeout_secs`) and flushes the plugins' store. The pid file is written
    /// first (then `ready` is called, to announce the listeners) and removed last. On SIGHUP the configuration is read again from `source` (the
    /// built-in one when `None`) and applied if it is whole; each outcome is written to the
    /// reload status file.
    pub async fn run(
        self,
        source: Option<&Path>,
        ready: impl FnOnce(&Server),
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let config = self.context().live().config.clone();
        let pid_file = config.paths().pid_file;
        if let Some(dir) = pid_file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&pid_file, format!("{}\n", std::process::id())).map_err(|e| {
            std::io::Error::new(e.kind(), format!("writing {}: {e}", pid_file.display()))
        })?;
        ready(&self);
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        let status_file = status_file(&config);
        let _ = std::fs::remove_file(&status_file);
        let mut generation = 0u64;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = &mut shutdown => break,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    let outcome = reload_config(self.context(), source).await;
                    generation += 1;
                    let status = ReloadStatus {
                        generation,
                        pid: std::process::id(),
                        applied: outcome.is_ok(),
                        message: match outcome { Ok(m) | Err(m) => m },
                    };
                    // For `sluice reload`, which waits for it.
                    if let Err(e) = serde_json::to_vec(&status)
                        .map_err(std::io::Error::other)
                        .and_then(|b| crate::private_files::write_private(&status_file, &b))
                    {
                        tracing::warn!("cannot write {}: {e}", status_file.display());
                    }
                }
            }
        }
        let store = self.context().runtime.services.kv.clone();
        let drain = Duration::from_secs(self.context().live().config.server.drain_timeout_secs);
        self.shutdown(drain).await;
        if let Some(s) = &store {
            s.flush();
        }
        let _ = std::fs::remove_file(&pid_file);
        Ok(())
    }
}
