//! `[store]`: where plugins granted `kv` keep their state (embedded, or a shared Redis).

use std::path::PathBuf;

use serde::Deserialize;

use super::Problems;

/// `[store]`: the key-value store of plugins granted the `kv` capability. Embedded (a file in
/// the data directory) unless `url` names a Redis server shared by a fleet.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct StoreConfig {
    /// `redis://[user:password@]host[:port][/db]`, `rediss://…` (TLS), or
    /// `redis+sentinel://[:password@]host:port[,host:port…]/SERVICE[/DB]` (the primary that
    /// Redis Sentinel names, followed across failovers). Unset: embedded.
    pub url: Option<String>,
    /// PEM file of the CA that signed Redis's certificate (`rediss://`); default: the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// The embedded store's file; default `<data_dir>/kv.redb`.
    pub path: Option<PathBuf>,
    /// The embedded store makes its writes durable this often (milliseconds): a crash loses
    /// at most the writes of one interval.
    pub flush_interval_ms: u64,
    /// The most the embedded store holds, keys and values (MiB); past it writes fail as the
    /// store being unavailable. Each plugin has its own quota besides (`kv_max_bytes`).
    pub max_mb: u64,
    /// The embedded store's page cache (MiB).
    pub cache_mb: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: None,
            ca_file: None,
            path: None,
            flush_interval_ms: 1000,
            max_mb: 1024,
            cache_mb: 64,
        }
    }
}

impl StoreConfig {
    pub(super) fn validate(&self, p: &mut Problems) {
        p.range("store.max_mb", self.max_mb, 1, 1 << 20);
        p.range("store.cache_mb", self.cache_mb, 1, 65_536);
        p.range(
            "store.flush_interval_ms",
            self.flush_interval_ms,
            10,
            60_000,
        );
        if let Some(url) = &self.url {
            let shown = crate::store::redis::redact(url);
            if url.starts_with("redis+sentinel://") {
                if let Err(e) = crate::store::sentinel::parse(url) {
                    p.add("store.url", format_args!("{shown:?}: {e}"));
                }
            } else if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                p.add(
                    "store.url",
                    format_args!("{shown:?} is not a redis://, rediss:// or redis+sentinel:// URL"),
                );
            }
        }
        if let Some(ca) = &self.ca_file {
            let tls = self
                .url
                .as_deref()
                .is_some_and(|u| u.starts_with("rediss://"));
            if !ca.is_file() {
                p.add(
                    "store.ca_file",
                    format_args!("{} is not a file", ca.display()),
                );
            } else if !tls {
                p.add(
                    "store.ca_file",
                    "only used with a rediss:// store.url (TLS)",
                );
            }
        }
    }
}
