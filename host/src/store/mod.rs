//! The key-value store behind the plugins' `kv` capability: an embedded file in the data
//! directory ([`embedded`], one node) or Redis ([`redis`], a fleet sharing state; through
//! Redis Sentinel with [`sentinel`]).
//!
//! Both give the same five operations with the same meaning (WIT `sluice:filter/kv`): values
//! are bytes, counters are decimal text, a time-to-live of 0 means "never expires", and
//! increments and compare-and-set are atomic (within the process for the embedded store; on
//! the server, by native commands and scripts, for Redis). Keys arrive here already namespaced
//! by the plugin runtime.
//!
//! May use: the configuration's `[store]` and owner-only files; nothing else of Sluice. Used by
//! the plugin runtime's `kv` capability and by spam learning.

pub mod embedded;
pub mod redis;
pub mod sentinel;

use std::sync::Arc;
use std::time::Duration;

/// The longest time-to-live a key may have (90 days); longer ones are cut to it.
pub const MAX_TTL_SECS: u32 = 90 * 24 * 3600;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or failed (Redis down, disk error). Retrying later may
    /// help.
    #[error("the key-value store is unavailable: {0}")]
    Unavailable(String),
    /// `increment` of a key that does not hold a decimal integer.
    #[error("the key holds a value that is not a counter")]
    NotACounter,
    /// `increment` past the range of a signed 64-bit integer.
    #[error("the counter would overflow")]
    Overflow,
    /// The write would take the plugin past its quota (`kv_max_keys`, `kv_max_bytes`): the
    /// plugin's own failure.
    #[error("the plugin's store quota is used up ({0})")]
    QuotaExceeded(String),
}

/// What one plugin may keep in the store: keys and bytes (keys and values together, as
/// stored). A write that would pass either fails with [`StoreError::QuotaExceeded`]; writes
/// that do not grow the usage (an overwrite with a value no larger, a delete) always pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Keys at most.
    pub max_keys: u64,
    /// Bytes at most.
    pub max_bytes: u64,
}

/// The part of a key its usage is counted under: up to and including its first `:` (the
/// plugin runtime's `NAME:`), or the whole key.
pub fn namespace(key: &[u8]) -> &[u8] {
    match key.iter().position(|&b| b == b':') {
        Some(i) => &key[..=i],
        None => key,
    }
}

/// One entry listed by [`KvStore::scan`]: key, value, and the milliseconds left before it
/// expires (none: it does not).
pub type Scanned = (Vec<u8>, Vec<u8>, Option<u64>);

/// A key-value store, shared by every plugin granted `kv` (clones share it).
#[derive(Clone)]
pub enum KvStore {
    /// A redb file in the data directory (or in memory, for replays and tests).
    Embedded(Arc<embedded::Embedded>),
    /// A Redis server.
    Redis(redis::Redis),
}

impl std::fmt::Debug for KvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvStore::Embedded(e) => write!(f, "KvStore::Embedded({})", e.describe()),
            KvStore::Redis(r) => write!(f, "KvStore::Redis({})", r.describe()),
        }
    }
}

impl KvStore {
    /// Where the data lives, for logs (a Redis URL without its password).
    pub fn describe(&self) -> String {
        match self {
            KvStore::Embedded(e) => e.describe(),
            KvStore::Redis(r) => r.describe(),
        }
    }

    /// Up to `limit` entries whose key starts with `prefix`: (key, value, milliseconds left
    /// before it expires, if it does). For the console's view of a plugin's state.
    pub async fn scan(&self, prefix: Vec<u8>, limit: usize) -> Result<Vec<Scanned>, StoreError> {
        match self {
            KvStore::Embedded(e) => e.scan(&prefix, limit),
            KvStore::Redis(r) => r.scan(&prefix, limit).await,
        }
    }

    /// The value of `key`, if set and not expired.
    pub async fn get(&self, key: Vec<u8>) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            // A read never waits for a writer (redb's readers see the last commit), so it
            // runs inline: a blocking-pool hop would cost more than the read.
            KvStore::Embedded(e) => e.get(&key),
            KvStore::Redis(r) => r.get(&key).await,
        }
    }

    /// Sets `key` to `value` with a time-to-live (0: none).
    pub async fn set(&self, key: Vec<u8>, value: Vec<u8>, ttl_secs: u32) -> Result<(), StoreError> {
        self.set_within(key, value, ttl_secs, None).await
    }

    /// [`KvStore::set`] within `quota` for the key's namespace (a plugin's call).
    pub async fn set_within(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        ttl_secs: u32,
        quota: Option<Quota>,
    ) -> Result<(), StoreError> {
        let ttl = ttl(ttl_secs);
        match self {
            KvStore::Embedded(e) => e.run(move |e| e.set(&key, &value, ttl, quota)).await,
            KvStore::Redis(r) => match quota {
                None => r.set(&key, &value, ttl).await,
                Some(q) => r
                    .accounted(redis::Op::Set(&value), &key, ttl, q)
                    .await
                    .map(|_| ()),
            },
        }
    }

    /// Adds `delta` to the counter `key` (created with `ttl_secs` when missing); the new value.
    pub async fn increment(
        &self,
        key: Vec<u8>,
        delta: i64,
        ttl_secs: u32,
    ) -> Result<i64, StoreError> {
        self.increment_within(key, delta, ttl_secs, None).await
    }

    /// [`KvStore::increment`] within `quota` for the key's namespace (a plugin's call).
    pub async fn increment_within(
        &self,
        key: Vec<u8>,
        delta: i64,
        ttl_secs: u32,
        quota: Option<Quota>,
    ) -> Result<i64, StoreError> {
        let ttl = ttl(ttl_secs);
        match self {
            KvStore::Embedded(e) => e.run(move |e| e.increment(&key, delta, ttl, quota)).await,
            KvStore::Redis(r) => match quota {
                None => r.increment(&key, delta, ttl).await,
                Some(q) => r.accounted(redis::Op::Increment(delta), &key, ttl, q).await,
            },
        }
    }

    /// Removes `key`; true when it was set.
    pub async fn delete(&self, key: Vec<u8>) -> Result<bool, StoreError> {
        self.delete_within(key, None).await
    }

    /// [`KvStore::delete`] of a key counted against a quota (a plugin's call): its usage is
    /// given back.
    pub async fn delete_within(
        &self,
        key: Vec<u8>,
        quota: Option<Quota>,
    ) -> Result<bool, StoreError> {
        match self {
            KvStore::Embedded(e) => e.run(move |e| e.delete(&key)).await,
            KvStore::Redis(r) => match quota {
                None => r.delete(&key).await,
                Some(q) => r
                    .accounted(redis::Op::Delete, &key, None, q)
                    .await
                    .map(|n| n > 0),
            },
        }
    }

    /// Sets `key` to `value` only if it currently holds `expected` (`None`: is not set).
    pub async fn compare_and_set(
        &self,
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        ttl_secs: u32,
    ) -> Result<bool, StoreError> {
        self.compare_and_set_within(key, expected, value, ttl_secs, None)
            .await
    }

    /// [`KvStore::compare_and_set`] within `quota` for the key's namespace (a plugin's call).
    pub async fn compare_and_set_within(
        &self,
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        ttl_secs: u32,
        quota: Option<Quota>,
    ) -> Result<bool, StoreError> {
        let ttl = ttl(ttl_secs);
        match self {
            KvStore::Embedded(e) => {
                e.run(move |e| e.compare_and_set(&key, expected.as_deref(), &value, ttl, quota))
                    .await
            }
            KvStore::Redis(r) => match quota {
                None => {
                    r.compare_and_set(&key, expected.as_deref(), &value, ttl)
                        .await
                }
                Some(q) => r
                    .accounted(
                        redis::Op::CompareAndSet(expected.as_deref(), &value),
                        &key,
                        ttl,
                        q,
                    )
                    .await
                    .map(|n| n == 1),
            },
        }
    }

    /// Makes every write so far durable (the embedded store's periodic flush, now): called at
    /// shutdown. Redis keeps its own durability.
    pub fn flush(&self) {
        if let KvStore::Embedded(e) = self
            && let Err(e) = e.flush()
        {
            tracing::warn!("flushing the key-value store: {e}");
        }
    }
}

/// A time-to-live in seconds as a duration; `None` for 0 (never expires). Capped at
/// [`MAX_TTL_SECS`].
fn ttl(secs: u32) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(u64::from(secs.min(MAX_TTL_SECS))))
}

/// A counter's value from its stored text.
fn parse_counter(bytes: &[u8]) -> Result<i64, StoreError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or(StoreError::NotACounter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_capped_and_zero_means_none() {
        assert_eq!(ttl(0), None);
        assert_eq!(ttl(5), Some(Duration::from_secs(5)));
        assert_eq!(
            ttl(u32::MAX),
            Some(Duration::from_secs(u64::from(MAX_TTL_SECS)))
        );
    }

    #[test]
    fn counters_are_decimal_text() {
        assert_eq!(parse_counter(b"42"), Ok(42));
        assert_eq!(parse_counter(b"-7"), Ok(-7));
        assert_eq!(parse_counter(b"4x"), Err(StoreError::NotACounter));
        assert_eq!(parse_counter(&[0xff]), Err(StoreError::NotACounter));
    }
}
