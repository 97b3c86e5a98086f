//! `sluice serve`: check the data directory, load the plugins, start the server, write the
//! pid file, print the listeners, and run until SIGTERM/SIGINT (SIGHUP reloads).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use sluice::config::Config;

use crate::plugin::load_pipeline;
use crate::runtime_for;

pub async fn run(config: Config, path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    if path.is_none() {
        // The built-in development configuration starts from nothing: make its data and
        // plugin directories (an explicit configuration's missing directory stays an error).
        let dir = config.plugin_dir();
        if !dir.exists() {
            std::fs::create_dir_all(&dir) // owner-only: the umask is 077
                .with_context(|| format!("creating {}", dir.display()))?;
            tracing::info!(dir = %dir.display(), "created an empty plugin directory; ./run installs the bundled plugins, or copy .wasm files into it (write, then rename)");
        }
    }
    for (dir, key) in [
        (&config.server.data_dir, "server.data_dir"),
        (&config.cache_dir(), "plugins.cache_dir"),
    ] {
        sluice::private_files::check_not_shared(dir, key).map_err(|e| anyhow::anyhow!(e))?;
    }
    let runtime = runtime_for(&config, true)?;
    let store = runtime.services.kv.clone();
    if let Some(s) = &store {
        tracing::info!("plugins' key-value store: {}", s.describe());
    }
    let pipeline = load_pipeline(&runtime, &config, &[]).await?;
    for p in pipeline.plugins() {
        tracing::info!(plugin = %p.name, version = %p.info.version, hooks = %p.hook_names().join(","), "plugin loaded");
    }
    for w in pipeline.warnings() {
        tracing::warn!("{w}");
    }
    let pid_file = config.pid_file();
    let drain = std::time::Duration::from_secs(config.server.drain_timeout_secs);
    let ctx = sluice::context::context(config, pipeline, runtime)?;
    let server = sluice::server::Server::start(std::sync::Arc::new(ctx)).await?;
    if let Some(dir) = pid_file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))
        .with_context(|| format!("writing {}", pid_file.display()))?;
    for (kind, addr) in &server.listeners {
        // One line per listener on stdout, so scripts and tests learn the ports.
        println!("listening {} {addr}", kind.as_str());
    }
    for path in &server.sockets {
        println!("listening milter unix:{}", path.display());
    }
    if let Some(addr) = server.metrics {
        println!("listening metrics {addr}");
    }
    if let Some(addr) = server.admin {
        println!("listening admin {addr}");
    }
    std::io::stdout().flush()?;
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let status_file = sluice::reload::status_file(&server.context().live().config);
    let _ = std::fs::remove_file(&status_file);
    let mut generation = 0u64;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                let outcome = sluice::reload::reload_config(server.context(), path.as_deref()).await;
                generation += 1;
                let status = sluice::reload::ReloadStatus {
                    generation,
                    pid: std::process::id(),
                    applied: outcome.is_ok(),
                    message: match outcome { Ok(m) | Err(m) => m },
                };
                // For `sluice reload`, which waits for it.
                if let Err(e) = serde_json::to_vec(&status).map_err(std::io::Error::other).and_then(|b| {
                    sluice::private_files::write_private(&status_file, &b)
                }) {
                    tracing::warn!("cannot write {}: {e}", status_file.display());
                }
            }
        }
    }
    server.shutdown(drain).await;
    if let Some(s) = &store {
        s.flush();
    }
    let _ = std::fs::remove_file(&pid_file);
    Ok(ExitCode::SUCCESS)
}
