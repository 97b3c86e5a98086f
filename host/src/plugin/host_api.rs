//! What a plugin's store holds and the host functions plugins import (`sluice:filter/host`,
//! `sluice:filter/authentication`; `kv` and `dns` are in [`super::capabilities`]).
//!
//! Every store is default-deny: WASI is linked because Python and JavaScript guests import it,
//! but there are no arguments, no environment, no directories, no sockets, and stdin is empty.
//! stdout and stderr go to a bounded buffer that is reported when the plugin fails.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::types::ConfigValue;
use super::bindings::v0_1::sluice::filter::{authentication, host, types};
use crate::sender_auth;

/// Longest log line kept from a plugin; longer ones are cut (and marked so).
pub const MAX_LOG_LINE: usize = 2048;
/// Bytes of stdout+stderr kept per instance.
pub const OUTPUT_CAPACITY: usize = 16 * 1024;

/// One line a plugin logged.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LogLine {
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: &'static str,
    /// The text (cut at [`MAX_LOG_LINE`] bytes).
    pub message: String,
}

/// The data of one plugin instance's store.
pub struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Caps linear memory and tables; records whether the cap was hit.
    pub(crate) limiter: Limiter,
    /// When the running hook call must stop (checked at every epoch tick).
    pub(crate) deadline: Instant,
    /// The plugin's settings, flattened to dotted keys.
    config: Arc<BTreeMap<String, ConfigValue>>,
    /// Lines logged during the current call, collected by the caller.
    pub(crate) logs: Vec<LogLine>,
    /// Lines this instance may still log.
    log_budget: u32,
    /// Lines dropped for exceeding the budget.
    pub(crate) logs_dropped: u32,
    /// What the guest wrote to stdout/stderr.
    pub(crate) output: OutputBuffer,
    /// The sender-authentication results of the transaction, when the host verified it.
    pub(crate) authentication: Option<Arc<sender_auth::Results>>,
    /// The capabilities this plugin was granted.
    pub(crate) grants: super::capabilities::Grants,
    /// `kv` and `dns` calls allowed per hook call, and how many are left in this one.
    pub(crate) ops_per_call: u32,
    pub(crate) ops_left: u32,
    /// DNS lookups made by this instance, that is in its one transaction.
    pub(crate) dns_used: u32,
}

impl StoreState {
    /// A default-deny store state: no network, no environment, no files but the
    /// directories in `read_dirs`, read-only at their own paths.
    pub fn new(
        config: Arc<BTreeMap<String, ConfigValue>>,
        memory_bytes: u64,
        log_lines: u32,
        read_dirs: &[std::path::PathBuf],
        grants: super::capabilities::Grants,
        ops_per_call: u32,
    ) -> anyhow::Result<StoreState> {
        let output = OutputBuffer::default();
        let mut builder = WasiCtx::builder();
        builder
            .stdout(output.clone())
            .stderr(output.clone())
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false);
        for d in read_dirs {
            builder
                .preopened_dir(d, d.to_string_lossy(), wasmtime_wasi::FsPerms::ReadOnly)
                .map_err(|e| anyhow::anyhow!("cannot grant {}: {e}", d.display()))?;
        }
        // A granted directory's files (a model, a list) are read where the guest runs rather
        // than by a hop to tokio's blocking pool for every open, stat and read: the hops cost
        // spam-score 400 µs per transaction to read a 20-byte file. The files are local and
        // small, read once per transaction; a guest reading a slow file system would hold one
        // worker thread for that read (the deadline applies between calls).
        if !read_dirs.is_empty() {
            builder.allow_blocking_current_thread(true);
        }
        let wasi = builder.build();
        Ok(StoreState {
            wasi,
            table: {
                // Handles a guest may hold at once (WASI streams, descriptors, …): each is
                // host memory, so a guest opening them in a loop is stopped.
                let mut t = ResourceTable::new();
                t.set_max_capacity(MAX_RESOURCES);
                t
            },
            limiter: Limiter {
                memory_bytes: usize::try_from(memory_bytes).unwrap_or(usize::MAX),
                memory_used: 0,
                table_elements: 0,
                memory_hit: false,
            },
            deadline: Instant::now(),
            config,
            logs: Vec::new(),
            log_budget: log_lines,
            logs_dropped: 0,
            output,
            authentication: None,
            grants,
            ops_per_call,
            ops_left: ops_per_call,
            dns_used: 0,
        })
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for StoreState {}

impl authentication::Host for StoreState {
    fn results(&mut self) -> Option<authentication::AuthResults> {
        let r = self.authentication.as_deref()?;
        let spf = |c: &sender_auth::SpfCheck| authentication::SpfCheck {
            verdict: verdict(c.verdict),
            domain: c.domain.clone(),
        };
        Some(authentication::AuthResults {
            spf_helo: r.spf_helo.as_ref().map(spf),
            spf_mail_from: r.spf_mail_from.as_ref().map(spf),
            dkim: r
                .dkim
                .iter()
                .map(|d| authentication::DkimCheck {
                    verdict: verdict(d.verdict),
                    domain: d.domain.clone(),
                    selector: d.selector.clone(),
                    detail: d.detail.clone(),
                })
                .collect(),
            dmarc: r.dmarc.as_ref().map(|d| authentication::DmarcCheck {
                verdict: verdict(d.verdict),
                domain: d.domain.clone(),
                policy: d.policy.clone(),
            }),
            header: r.header.clone(),
        })
    }
}

fn verdict(v: sender_auth::Status) -> authentication::Verdict {
    match v {
        sender_auth::Status::Pass => authentication::Verdict::Pass,
        sender_auth::Status::Fail => authentication::Verdict::Fail,
        sender_auth::Status::Softfail => authentication::Verdict::Softfail,
        sender_auth::Status::Neutral => authentication::Verdict::Neutral,
        sender_auth::Status::None => authentication::Verdict::None,
        sender_auth::Status::Temperror => authentication::Verdict::Temperror,
        sender_auth::Status::Permerror => authentication::Verdict::Permerror,
    }
}

impl host::Host for StoreState {
    fn log(&mut self, level: host::Level, message: String) {
        if self.log_budget == 0 {
            self.logs_dropped = self.logs_dropped.saturating_add(1);
            return;
        }
        self.log_budget -= 1;
        let mut message: String = message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if message.len() > MAX_LOG_LINE {
            message = format!("{}…[cut]", super::truncate(&message, MAX_LOG_LINE));
        }
        let level = match level {
            host::Level::Trace => "trace",
            host::Level::Debug => "debug",
            host::Level::Info => "info",
            host::Level::Warn => "warn",
            host::Level::Error => "error",
        };
        self.logs.push(LogLine { level, message });
    }

    fn get_config(&mut self, key: String) -> Option<ConfigValue> {
        self.config.get(&key).cloned()
    }

    fn config_keys(&mut self) -> Vec<String> {
        self.config.keys().cloned().collect()
    }

    fn now(&mut self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// Caps a store's memories and tables, in total over every linear memory and table of the
/// component (an interpreted guest has several): `memory_mb` is what the whole plugin
/// instance may hold. Growing past the memory cap traps (rather than returning -1 to the
/// guest) so that the failure is reported as "memory limit", not as whatever the guest's
/// allocator does on failure.
pub(crate) struct Limiter {
    memory_bytes: usize,
    /// Bytes of every linear memory of the store together.
    memory_used: usize,
    /// Elements of every table of the store together.
    table_elements: usize,
    pub(crate) memory_hit: bool,
}

/// Resource handles one instance may hold at once.
const MAX_RESOURCES: usize = 4096;

/// The error a store's limiter raises when a plugin's memory limit is hit.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit} bytes exceeded (asked for {desired})")]
pub struct MemoryLimitExceeded {
    /// The limit.
    pub limit: usize,
    /// What the guest asked for.
    pub desired: usize,
}

/// Most table elements one instance may have, over all its tables (the pool's slots hold
/// 200,000 each; an interpreted guest has one large table and a few small ones).
const MAX_TABLE_ELEMENTS: usize = 400_000;

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .memory_used
            .saturating_sub(current)
            .saturating_add(desired);
        if total > self.memory_bytes {
            self.memory_hit = true;
            return Err(MemoryLimitExceeded {
                limit: self.memory_bytes,
                desired: total,
            }
            .into());
        }
        self.memory_used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .table_elements
            .saturating_sub(current)
            .saturating_add(desired);
        if total > MAX_TABLE_ELEMENTS {
            return Ok(false);
        }
        self.table_elements = total;
        Ok(true)
    }
}

/// A bounded buffer for a guest's stdout and stderr. Unlike wasmtime-wasi's memory pipe it
/// never traps when full: it keeps the first [`OUTPUT_CAPACITY`] bytes and discards the rest,
/// so printing cannot crash a plugin or grow the host's memory.
#[derive(Clone, Default)]
pub struct OutputBuffer(Arc<Mutex<Vec<u8>>>);

impl OutputBuffer {
    /// What was written, lossily decoded, trimmed.
    pub fn text(&self) -> String {
        let buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&buf).trim().to_string()
    }

    /// Forgets what was written.
    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl IsTerminal for OutputBuffer {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutputBuffer {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for OutputBuffer {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let room = OUTPUT_CAPACITY.saturating_sub(buf.len());
        buf.extend_from_slice(&data[..room.min(data.len())]);
        // Claim the whole write so the guest never blocks or fails on a full buffer.
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Flattens a TOML table into the dotted keys and values plugins see.
pub fn flatten_config(table: &toml::Table) -> BTreeMap<String, ConfigValue> {
    let mut out = BTreeMap::new();
    flatten_into("", table, &mut out);
    out
}

fn flatten_into(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, ConfigValue>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let value = match v {
            toml::Value::String(s) => ConfigValue::Text(s.clone()),
            toml::Value::Integer(i) => ConfigValue::Integer(*i),
            toml::Value::Float(f) => ConfigValue::Float(*f),
            toml::Value::Boolean(b) => ConfigValue::Boolean(*b),
            toml::Value::Datetime(d) => ConfigValue::Text(d.to_string()),
            toml::Value::Array(items) => ConfigValue::TextList(
                items
                    .iter()
                    .map(|i| match i {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect(),
            ),
            toml::Value::Table(t) => {
                flatten_into(&key, t, out);
                continue;
            }
        };
        out.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_flattened_with_dotted_keys() {
        let t: toml::Table =
            toml::from_str("a = 1\nb = [\"x\", 2]\n[lists]\nallow = \"y\"\n").unwrap();
        let f = flatten_config(&t);
        assert_eq!(f["a"], ConfigValue::Integer(1));
        assert_eq!(f["b"], ConfigValue::TextList(vec!["x".into(), "2".into()]));
        assert_eq!(f["lists.allow"], ConfigValue::Text("y".into()));
    }
}

#[cfg(test)]
mod limiter_tests {
    use super::*;

    fn limiter(mb: usize) -> Limiter {
        Limiter {
            memory_bytes: mb << 20,
            memory_used: 0,
            table_elements: 0,
            memory_hit: false,
        }
    }

    #[test]
    fn the_memory_limit_counts_every_memory_of_the_instance() {
        let mut l = limiter(64);
        assert!(l.memory_growing(0, 40 << 20, None).is_ok());
        // A second memory of the same component: 80 MiB together, over the limit.
        assert!(l.memory_growing(0, 40 << 20, None).is_err());
        assert!(l.memory_hit);
        // Growing the first memory counts only the growth.
        let mut l = limiter(64);
        assert!(l.memory_growing(0, 40 << 20, None).is_ok());
        assert!(l.memory_growing(40 << 20, 60 << 20, None).is_ok());
        assert!(l.memory_growing(0, 8 << 20, None).is_err());
    }

    #[test]
    fn table_elements_are_counted_over_all_tables() {
        let mut l = limiter(64);
        assert!(l.table_growing(0, 300_000, None).unwrap());
        assert!(!l.table_growing(0, 200_000, None).unwrap());
        assert!(l.table_growing(0, 100_000, None).unwrap());
    }

    #[test]
    fn a_guest_cannot_hold_unbounded_resource_handles() {
        let state =
            StoreState::new(Default::default(), 1 << 20, 1, &[], Default::default(), 1).unwrap();
        assert_eq!(state.table.max_capacity(), MAX_RESOURCES);
    }
}
