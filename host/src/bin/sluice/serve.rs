//! `sluice serve`: check the data directory, load the plugins, start the server, write the
//! pid file, print the listeners, and run until SIGTERM/SIGINT (SIGHUP reloads).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use sluice::config::Config;

use crate::plugin::load_pipeline;
use crate::setup::{load_config, runtime_for, tokio_runtime};

pub async fn run(config: Config, path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    if path.is_none() {
        // The built-in development configuration starts from nothing: make its data and
        // plugin directories (an explicit configuration's missing directory stays an error).
        let dir = config.paths().plugin_dir;
        if !dir.exists() {
            std::fs::create_dir_all(&dir) // owner-only: the umask is 077
                .with_context(|| format!("creating {}", dir.display()))?;
            tracing::info!(dir = %dir.display(), "created an empty plugin directory; ./run installs the bundled plugins, or copy .wasm files into it (write, then rename)");
        }
    }
    for (dir, key) in [
        (&config.server.data_dir, "server.data_dir"),
        (&config.paths().cache_dir, "plugins.cache_dir"),
    ] {
        sluice::private_files::check_not_shared(dir, key).map_err(|e| anyhow::anyhow!(e))?;
    }
    let runtime = runtime_for(&config, true)?;
    if let Some(s) = &runtime.services.kv {
        tracing::info!("plugins' key-value store: {}", s.describe());
    }
    let pipeline = load_pipeline(&runtime, &config, &[]).await?;
    for p in pipeline.plugins() {
        tracing::info!(plugin = %p.name, version = %p.info.version, hooks = %p.hook_names().join(","), "plugin loaded");
    }
    for w in pipeline.warnings() {
        tracing::warn!("{w}");
    }
    let ctx = sluice::server::context::context(config, pipeline, runtime)?;
    let server = sluice::server::Server::start(std::sync::Arc::new(ctx)).await?;
    // One line per listener on stdout, so scripts and tests learn the ports. A closed
    // stdout does not stop the server: these lines are for whoever reads them.
    let announce = |server: &sluice::server::Server| {
        let mut lines = Vec::new();
        for (kind, addr) in &server.listeners {
            lines.push(format!("listening {} {addr}", kind.as_str()));
        }
        for path in &server.sockets {
            lines.push(format!("listening milter unix:{}", path.display()));
        }
        if let Some(addr) = server.metrics {
            lines.push(format!("listening metrics {addr}"));
        }
        if let Some(addr) = server.admin {
            lines.push(format!("listening admin {addr}"));
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", lines.join("\n")).and_then(|()| out.flush());
    };
    server
        .run(path.as_deref(), announce, std::future::pending())
        .await?;
    Ok(ExitCode::SUCCESS)
}

/// Run the SMTP server (the default configuration listens on 127.0.0.1:2525/2587/2465).
#[derive(clap::Args)]
pub struct Serve {
    /// Configuration file (default: the built-in configuration).
    #[arg(long)]
    config: Option<PathBuf>,
}

impl Serve {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let config = load_config(self.config.as_ref())?;
        tokio_runtime()?.block_on(run(config, self.config))
    }
}
