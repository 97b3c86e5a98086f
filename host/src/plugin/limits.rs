//! The bounds of one plugin instance: its memory and tables ([`Limiter`]), the hook call in
//! progress (its deadline and its budget of capability calls, [`CallBudget`]), and the
//! bounded buffer its stdout and stderr go to ([`OutputBuffer`]).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use wasmtime::ResourceLimiter;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Bytes of stdout+stderr kept per instance.
pub const OUTPUT_CAPACITY: usize = 16 * 1024;

/// A call the plugin got wrong (a limit, a key that is not a counter): the hook fails.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadCall(pub String);

/// The hook call in progress: when it must stop (checked at every epoch tick, and by every
/// capability call that waits) and how many `kv` and `dns` calls it may still make.
#[derive(Debug, Clone)]
pub struct CallBudget {
    pub(crate) deadline: Instant,
    per_call: u32,
    left: u32,
    /// `kv` calls of the hook call in progress.
    pub(crate) kv_calls: u32,
    /// `dns` calls of the hook call in progress.
    pub(crate) dns_calls: u32,
}

impl CallBudget {
    /// `per_call` capability calls per hook call; no call started yet.
    pub fn new(per_call: u32) -> CallBudget {
        CallBudget {
            deadline: Instant::now(),
            per_call,
            left: per_call,
            kv_calls: 0,
            dns_calls: 0,
        }
    }

    /// Starts a hook call of at most `timeout`, with a whole budget.
    pub fn start(&mut self, timeout: Duration) {
        self.deadline = Instant::now() + timeout;
        self.left = self.per_call;
        self.kv_calls = 0;
        self.dns_calls = 0;
    }

    /// Counts one capability call against the hook call's budget.
    pub fn spend(&mut self, what: &str) -> wasmtime::Result<()> {
        if self.left == 0 {
            return Err(BadCall(format!(
                "{what}: more than {} kv and dns calls in one hook call (kv_ops_per_call)",
                self.per_call
            ))
            .into());
        }
        self.left -= 1;
        if what.starts_with("kv") {
            self.kv_calls += 1;
        } else {
            self.dns_calls += 1;
        }
        Ok(())
    }
}

/// Caps a store's memories and tables, in total over every linear memory and table of the
/// component (an interpreted guest has several): `memory_mb` is what the whole plugin
/// instance may hold. Growing past the memory cap traps (rather than returning -1 to the
/// guest) so that the failure is reported as "memory limit", not as whatever the guest's
/// allocator does on failure.
pub(crate) struct Limiter {
    pub(crate) memory_bytes: usize,
    /// Bytes of every linear memory of the store together.
    pub(crate) memory_used: usize,
    /// Elements of every table of the store together.
    pub(crate) table_elements: usize,
    pub(crate) memory_hit: bool,
}

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
        match grow(&mut self.memory_used, current, desired, self.memory_bytes) {
            Ok(()) => Ok(true),
            Err(total) => {
                self.memory_hit = true;
                Err(MemoryLimitExceeded {
                    limit: self.memory_bytes,
                    desired: total,
                }
                .into())
            }
        }
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(grow(
            &mut self.table_elements,
            current,
            desired,
            MAX_TABLE_ELEMENTS,
        )
        .is_ok())
    }
}

/// Moves `used` from one memory's or table's `current` size to its `desired` one, unless the
/// instance's total would pass `limit`: then `used` stays, and the total it would have is
/// the error.
fn grow(used: &mut usize, current: usize, desired: usize, limit: usize) -> Result<(), usize> {
    let total = used.saturating_sub(current).saturating_add(desired);
    if total > limit {
        return Err(total);
    }
    *used = total;
    Ok(())
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

impl Limiter {
    /// A limiter of `memory_bytes` for every memory together.
    pub(crate) fn new(memory_bytes: u64) -> Limiter {
        Limiter {
            memory_bytes: usize::try_from(memory_bytes).unwrap_or(usize::MAX),
            memory_used: 0,
            table_elements: 0,
            memory_hit: false,
        }
    }
}

#[cfg(test)]
mod tests {
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
}
