//! The key-value store behind the plugins' `kv` capability: an embedded file in the data
//! directory ([`embedded`], one node) or Redis ([`redis`], a fleet sharing state).
//!
//! Both give the same five operations with the same meaning (WIT `sluice:filter/kv`): values
//! are bytes, counters are decimal text, a time-to-live of 0 means "never expires", and
//! increments and compare-and-set are atomic (within the process for the embedded store; on
//! the server, by native commands and scripts, for Redis). Keys arrive here already namespaced
//! by the plugin runtime.

pub mod embedded;
pub mod redis;

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
}

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
        let ttl = ttl(ttl_secs);
        match self {
            KvStore::Embedded(e) => e.clone().run(move |e| e.set(&key, &value, ttl)).await,
            KvStore::Redis(r) => r.set(&key, &value, ttl).await,
        }
    }

    /// Adds `delta` to the counter `key` (created with `ttl_secs` when missing); the new value.
    pub async fn increment(
        &self,
        key: Vec<u8>,
        delta: i64,
        ttl_secs: u32,
    ) -> Result<i64, StoreError> {
        let ttl = ttl(ttl_secs);
        match self {
            KvStore::Embedded(e) => e.clone().run(move |e| e.increment(&key, delta, ttl)).await,
            KvStore::Redis(r) => r.increment(&key, delta, ttl).await,
        }
    }

    /// Removes `key`; true when it was set.
    pub async fn delete(&self, key: Vec<u8>) -> Result<bool, StoreError> {
        match self {
            KvStore::Embedded(e) => e.clone().run(move |e| e.delete(&key)).await,
            KvStore::Redis(r) => r.delete(&key).await,
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
        let ttl = ttl(ttl_secs);
        match self {
            KvStore::Embedded(e) => {
                e.clone()
                    .run(move |e| e.compare_and_set(&key, expected.as_deref(), &value, ttl))
                    .await
            }
            KvStore::Redis(r) => {
                r.compare_and_set(&key, expected.as_deref(), &value, ttl)
                    .await
            }
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
