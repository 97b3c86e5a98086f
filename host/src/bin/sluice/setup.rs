//! What the commands share: the configuration (a file, or the built-in one), the plugin
//! runtime (the server's, or a scratch one for offline commands) and the async runtime.

use std::path::PathBuf;

use anyhow::Context;

use sluice::config::Config;
use sluice::plugin::Runtime;
use sluice::plugin::capabilities::Services;
use sluice::plugin::engine::PoolSize;

/// Paths for a message: `a, b, c`.
pub fn joined(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::builtin()),
    }
}

/// The plugin runtime for `config`: with the server's store when `serving`, else a scratch
/// store in memory (replays and listings never touch a server's state).
pub fn runtime_for(config: &Config, serving: bool) -> anyhow::Result<Runtime> {
    let services = if serving {
        Services::for_server(config)
    } else {
        Services::scratch(config)
    }
    .map_err(|e| anyhow::anyhow!("the plugins' key-value store: {e}"))?;
    // `plugin check` and `plugin list` (run in a plugin's own folder, say) keep their compile
    // cache in the user's cache directory unless `plugins.cache_dir` names one, rather than in
    // a `sluice-data/cache` they would create wherever they run. The cache is keyed by engine
    // and file hash, so any location is correct.
    let cache_dir = if !serving && config.plugins.cache_dir.is_none() {
        user_cache_dir()
    } else {
        config.paths().cache_dir
    };
    Ok(engine_for(config, &cache_dir)?.with_services(services))
}

/// The plugin engine as `sluice serve` builds it for `config` (the same compile-cache key),
/// with its compile cache in `cache_dir` and no host services.
pub fn engine_for(config: &Config, cache_dir: &std::path::Path) -> anyhow::Result<Runtime> {
    Runtime::new(
        PoolSize {
            max_memory_bytes: config.plugins.max_memory_mb << 20,
            max_instances: config.plugins.max_instances,
            threads: config.plugins.threads,
        },
        cache_dir,
    )
    .context("starting the plugin runtime")
}

/// `$XDG_CACHE_HOME/sluice`, else `~/.cache/sluice`, else a directory under the system's
/// temporary directory.
pub fn user_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    match base {
        Some(b) => b.join("sluice"),
        None => std::env::temp_dir().join(format!(
            "sluice-cache-{}",
            rustix::process::getuid().as_raw()
        )),
    }
}

pub fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Blocking work is the queue runner's file work and password hashing: a few threads
        // keep up with either, where tokio's default (512) lets a busy queue start one
        // thread, with its stack and allocator heap, per message in flight.
        .max_blocking_threads(16)
        .build()?)
}
