//! The embedded key-value store: one `redb` file in the data directory.
//!
//! Why redb: a pure-Rust, actively maintained, ACID embedded database (copy-on-write B-trees,
//! crash-safe file format, one writer with concurrent readers), so one node needs no other
//! service and no C library. sled is unmaintained; RocksDB and LMDB bring C builds; fjall (an
//! LSM tree) is built for write-heavy data far larger than a greylist.
//!
//! Durability mode: every write commits at once without an fsync (`Durability::None`), and a
//! background thread makes the commits durable (an fsync'd commit) every `flush_interval`
//! (one second by default) and at shutdown. So a write is visible to every caller on this node
//! as soon as it returns, and a SIGKILL or power loss loses at most the writes of the last
//! flush interval; the file itself is never left corrupt. Greylist entries and rate counters
//! tolerate that; an fsync per write would cost milliseconds per SMTP command.
//!
//! Expiry: each value carries its expiry time (milliseconds since the Unix epoch, 0 for none)
//! in front of the data. Reads treat an expired value as absent; the background thread deletes
//! expired entries every minute.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};

use super::{StoreError, parse_counter};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

/// Usage per namespace ([`super::namespace`]): keys and bytes stored (key and stored value
/// together, expired entries until they are swept), as two big-endian `u64`s. The row under
/// the empty key is the whole store's. Kept in the same transaction as every write.
const USAGE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("usage");

/// Keys and bytes of one namespace (or of the whole store).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Usage {
    keys: u64,
    bytes: u64,
}

impl Usage {
    fn read(t: &redb::Table<&[u8], &[u8]>, ns: &[u8]) -> Result<Usage, StoreError> {
        Ok(t.get(ns).map_err(failed)?.map_or(Usage::default(), |v| {
            let b = v.value();
            let word = |at: usize| {
                b.get(at..at + 8)
                    .and_then(|w| w.try_into().ok())
                    .map_or(0, u64::from_be_bytes)
            };
            Usage {
                keys: word(0),
                bytes: word(8),
            }
        }))
    }

    fn write(self, t: &mut redb::Table<&[u8], &[u8]>, ns: &[u8]) -> Result<(), StoreError> {
        if self == Usage::default() {
            t.remove(ns).map_err(failed)?;
        } else {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&self.keys.to_be_bytes());
            b[8..].copy_from_slice(&self.bytes.to_be_bytes());
            t.insert(ns, &b[..]).map_err(failed)?;
        }
        Ok(())
    }
}

/// Changes the usage of `key`'s namespace and of the whole store: `old` and `new` are the
/// entry's stored sizes (None: absent). Checks `quota` for the namespace and `max_total`
/// for the store when the change grows either.
fn account(
    usage: &mut redb::Table<&[u8], &[u8]>,
    key: &[u8],
    old: Option<usize>,
    new: Option<usize>,
    quota: Option<super::Quota>,
    max_total: Option<u64>,
) -> Result<(), StoreError> {
    let size = |n: Option<usize>| n.map_or(0, |n| (key.len() + n) as u64);
    let (old_bytes, new_bytes) = (size(old), size(new));
    let add_key = u64::from(old.is_none() && new.is_some());
    let drop_key = u64::from(old.is_some() && new.is_none());
    let change = |u: Usage| Usage {
        keys: (u.keys + add_key).saturating_sub(drop_key),
        bytes: (u.bytes + new_bytes).saturating_sub(old_bytes),
    };
    let ns = super::namespace(key);
    let mine = Usage::read(usage, ns)?;
    let total = Usage::read(usage, b"")?;
    let (mine_after, total_after) = (change(mine), change(total));
    if let Some(q) = quota {
        if add_key > 0 && mine_after.keys > q.max_keys {
            return Err(StoreError::QuotaExceeded(format!(
                "{} keys, at most {}",
                mine_after.keys, q.max_keys
            )));
        }
        if new_bytes > old_bytes && mine_after.bytes > q.max_bytes {
            return Err(StoreError::QuotaExceeded(format!(
                "{} bytes, at most {}",
                mine_after.bytes, q.max_bytes
            )));
        }
    }
    if let Some(max) = max_total
        && new_bytes > old_bytes
        && total_after.bytes > max
    {
        return Err(StoreError::Unavailable(format!(
            "the embedded store is full ({} bytes, store.max_mb allows {max})",
            total_after.bytes
        )));
    }
    mine_after.write(usage, ns)?;
    total_after.write(usage, b"")
}

/// How often expired entries are deleted.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// An open store.
pub struct Embedded {
    db: Database,
    /// The most bytes the store may hold (keys and values), when bounded.
    max_total: Option<u64>,
    /// Written since the last durable commit.
    dirty: AtomicBool,
    /// The file, or `None` in memory.
    path: Option<PathBuf>,
}

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The stored form: expiry (big-endian milliseconds, 0 for none), then the value.
fn encode(value: &[u8], ttl: Option<Duration>) -> Vec<u8> {
    let expires = ttl.map_or(0, |t| {
        now_ms().saturating_add(u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
    });
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&expires.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// The expiry and value of a stored entry.
fn decode(stored: &[u8]) -> (u64, &[u8]) {
    match stored.split_first_chunk::<8>() {
        Some((expires, value)) => (u64::from_be_bytes(*expires), value),
        None => (1, &[]), // not written by us: treat as long expired
    }
}

fn live(stored: &[u8], now: u64) -> Option<&[u8]> {
    let (expires, value) = decode(stored);
    (expires == 0 || expires > now).then_some(value)
}

impl Embedded {
    /// Opens (or creates) the store at `path` and starts its flush-and-sweep thread.
    pub fn open(path: &Path, flush_interval: Duration) -> Result<Arc<Embedded>, StoreError> {
        Embedded::open_bounded(path, flush_interval, None, 64 << 20)
    }

    /// [`Embedded::open`] holding at most `max_total` bytes (keys and values; `None`:
    /// unbounded), with a page cache of `cache_bytes`.
    pub fn open_bounded(
        path: &Path,
        flush_interval: Duration,
        max_total: Option<u64>,
        cache_bytes: usize,
    ) -> Result<Arc<Embedded>, StoreError> {
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Unavailable(format!(
                "{} is in use by another process (is another Sluice running with this data_dir?)",
                path.display()
            )),
            other => StoreError::Unavailable(format!("{}: {other}", path.display())),
        })?;
        let store = Arc::new(Embedded {
            db,
            max_total,
            dirty: AtomicBool::new(false),
            path: Some(path.to_path_buf()),
        });
        store.init()?;
        spawn_flusher(&store, flush_interval);
        Ok(store)
    }

    /// A store in memory, gone when dropped: for `sluice plugin check` (a replay never
    /// touches the server's state) and tests.
    pub fn in_memory() -> Result<Arc<Embedded>, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(failed)?;
        let store = Arc::new(Embedded {
            db,
            max_total: None,
            dirty: AtomicBool::new(false),
            path: None,
        });
        store.init()?;
        Ok(store)
    }

    /// Creates the tables; counts the usage of a store written before it was counted.
    fn init(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(failed)?;
        {
            let table = txn.open_table(TABLE).map_err(failed)?;
            let mut usage = txn.open_table(USAGE).map_err(failed)?;
            if usage.is_empty().map_err(failed)? && !table.is_empty().map_err(failed)? {
                for entry in table.iter().map_err(failed)? {
                    let (k, v) = entry.map_err(failed)?;
                    account(
                        &mut usage,
                        k.value(),
                        None,
                        Some(v.value().len()),
                        None,
                        None,
                    )?;
                }
            }
        }
        txn.commit().map_err(failed)
    }

    /// Where the data lives, for logs.
    pub fn describe(&self) -> String {
        match &self.path {
            Some(p) => format!("embedded store {}", p.display()),
            None => "in-memory store".to_string(),
        }
    }

    /// Runs `op` on a blocking thread (a write may wait for the flush's fsync).
    pub(super) async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        op: impl FnOnce(&Embedded) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = Arc::clone(self);
        tokio::task::spawn_blocking(move || op(&store))
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }

    /// Runs `op` in one write transaction, committed without an fsync (see the module docs);
    /// `op` gets the data and the usage table. An error aborts the whole transaction.
    fn write<T>(
        &self,
        op: impl FnOnce(
            &mut redb::Table<&[u8], &[u8]>,
            &mut redb::Table<&[u8], &[u8]>,
        ) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut txn = self.db.begin_write().map_err(failed)?;
        txn.set_durability(Durability::None).map_err(failed)?;
        let out = {
            let mut table = txn.open_table(TABLE).map_err(failed)?;
            let mut usage = txn.open_table(USAGE).map_err(failed)?;
            match op(&mut table, &mut usage) {
                Ok(out) => out,
                Err(e) => {
                    drop((table, usage));
                    let _ = txn.abort();
                    return Err(e);
                }
            }
        };
        txn.commit().map_err(failed)?;
        self.dirty.store(true, Ordering::Release);
        Ok(out)
    }

    pub(super) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(failed)?;
        let table = txn.open_table(TABLE).map_err(failed)?;
        let value = table.get(key).map_err(failed)?;
        Ok(value.and_then(|v| live(v.value(), now_ms()).map(<[u8]>::to_vec)))
    }

    /// Up to `limit` live entries whose key starts with `prefix`, in key order: (key, value,
    /// milliseconds left before it expires, if it does).
    pub(super) fn scan(
        &self,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<super::Scanned>, StoreError> {
        let txn = self.db.begin_read().map_err(failed)?;
        let table = txn.open_table(TABLE).map_err(failed)?;
        let now = now_ms();
        let mut out = Vec::new();
        for entry in table.range(prefix..).map_err(failed)? {
            let (k, v) = entry.map_err(failed)?;
            if !k.value().starts_with(prefix) || out.len() >= limit {
                break;
            }
            let (expires, value) = decode(v.value());
            if expires != 0 && expires <= now {
                continue;
            }
            let left = (expires != 0).then(|| expires - now);
            out.push((k.value().to_vec(), value.to_vec(), left));
        }
        Ok(out)
    }

    /// The stored size of `key`'s entry, if any (expired or not: it takes room until swept).
    fn stored_len(t: &redb::Table<&[u8], &[u8]>, key: &[u8]) -> Result<Option<usize>, StoreError> {
        Ok(t.get(key).map_err(failed)?.map(|v| v.value().len()))
    }

    pub(super) fn set(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
        quota: Option<super::Quota>,
    ) -> Result<(), StoreError> {
        let stored = encode(value, ttl);
        self.write(|t, usage| {
            let old = Self::stored_len(t, key)?;
            account(usage, key, old, Some(stored.len()), quota, self.max_total)?;
            t.insert(key, stored.as_slice()).map_err(failed)?;
            Ok(())
        })
    }

    pub(super) fn increment(
        &self,
        key: &[u8],
        delta: i64,
        ttl: Option<Duration>,
        quota: Option<super::Quota>,
    ) -> Result<i64, StoreError> {
        let now = now_ms();
        self.write(|t, usage| {
            let old = Self::stored_len(t, key)?;
            let current = t.get(key).map_err(failed)?.and_then(|v| {
                let (expires, value) = decode(v.value());
                (expires == 0 || expires > now).then(|| (expires, value.to_vec()))
            });
            let (new, stored) = match current {
                Some((expires, value)) => {
                    let new = parse_counter(&value)?
                        .checked_add(delta)
                        .ok_or(StoreError::Overflow)?;
                    // An existing counter keeps its expiry: a fixed window.
                    let mut stored = expires.to_be_bytes().to_vec();
                    stored.extend_from_slice(new.to_string().as_bytes());
                    (new, stored)
                }
                None => (delta, encode(delta.to_string().as_bytes(), ttl)),
            };
            account(usage, key, old, Some(stored.len()), quota, self.max_total)?;
            t.insert(key, stored.as_slice()).map_err(failed)?;
            Ok(new)
        })
    }

    pub(super) fn delete(&self, key: &[u8]) -> Result<bool, StoreError> {
        let now = now_ms();
        self.write(|t, usage| {
            let old = t.remove(key).map_err(failed)?;
            let was = old.as_ref().map(|v| v.value().len());
            let live = old.is_some_and(|v| live(v.value(), now).is_some());
            account(usage, key, was, None, None, None)?;
            Ok(live)
        })
    }

    pub(super) fn compare_and_set(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        value: &[u8],
        ttl: Option<Duration>,
        quota: Option<super::Quota>,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let stored = encode(value, ttl);
        self.write(|t, usage| {
            let matches = {
                let current = t.get(key).map_err(failed)?;
                let current = current.as_ref().and_then(|v| live(v.value(), now));
                current == expected
            };
            if matches {
                let old = Self::stored_len(t, key)?;
                account(usage, key, old, Some(stored.len()), quota, self.max_total)?;
                t.insert(key, stored.as_slice()).map_err(failed)?;
            }
            Ok(matches)
        })
    }

    /// Makes the writes so far durable (an fsync'd commit), if there were any.
    pub fn flush(&self) -> Result<(), StoreError> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let mut txn = self.db.begin_write().map_err(failed)?;
        txn.set_durability(Durability::Immediate).map_err(failed)?;
        txn.commit().map_err(|e| {
            self.dirty.store(true, Ordering::Release);
            failed(e)
        })
    }

    /// Deletes expired entries; how many.
    pub fn sweep(&self) -> Result<usize, StoreError> {
        let now = now_ms();
        let mut removed = Vec::new();
        self.write(|t, usage| {
            t.retain(|k, v| {
                let keep = live(v, now).is_some();
                if !keep {
                    removed.push((k.to_vec(), v.len()));
                }
                keep
            })
            .map_err(failed)?;
            for (k, len) in &removed {
                account(usage, k, Some(*len), None, None, None)?;
            }
            Ok(())
        })?;
        Ok(removed.len())
    }
}

/// Flushes every `interval` and sweeps every [`SWEEP_INTERVAL`] until the store is dropped.
fn spawn_flusher(store: &Arc<Embedded>, interval: Duration) {
    let weak = Arc::downgrade(store);
    let spawned = std::thread::Builder::new()
        .name("sluice-kv-flush".into())
        .spawn(move || {
            let mut last_sweep = Instant::now();
            loop {
                std::thread::sleep(interval);
                let Some(store) = weak.upgrade() else { return };
                if let Err(e) = store.flush() {
                    tracing::warn!("{}: flush failed: {e}", store.describe());
                }
                if last_sweep.elapsed() >= SWEEP_INTERVAL {
                    last_sweep = Instant::now();
                    match store.sweep() {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!("{}: {n} expired keys deleted", store.describe()),
                        Err(e) => tracing::warn!("{}: sweep failed: {e}", store.describe()),
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(
            "cannot start the key-value flush thread: {e}; writes become durable only at shutdown"
        );
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!("{}: final flush failed: {e}", self.describe());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_five_operations() {
        let s = Embedded::in_memory().unwrap();
        assert_eq!(s.get(b"k").unwrap(), None);
        s.set(b"k", b"v", None, None).unwrap();
        assert_eq!(s.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(s.increment(b"n", 2, None, None).unwrap(), 2);
        assert_eq!(s.increment(b"n", -5, None, None).unwrap(), -3);
        assert_eq!(s.get(b"n").unwrap().as_deref(), Some(&b"-3"[..]));
        assert_eq!(
            s.increment(b"k", 1, None, None),
            Err(StoreError::NotACounter)
        );
        s.set(b"max", i64::MAX.to_string().as_bytes(), None, None)
            .unwrap();
        assert_eq!(
            s.increment(b"max", 1, None, None),
            Err(StoreError::Overflow)
        );
        assert!(s.compare_and_set(b"c", None, b"1", None, None).unwrap());
        assert!(!s.compare_and_set(b"c", None, b"2", None, None).unwrap());
        assert!(
            !s.compare_and_set(b"c", Some(b"x"), b"2", None, None)
                .unwrap()
        );
        assert!(
            s.compare_and_set(b"c", Some(b"1"), b"2", None, None)
                .unwrap()
        );
        assert_eq!(s.get(b"c").unwrap().as_deref(), Some(&b"2"[..]));
        assert!(s.delete(b"c").unwrap());
        assert!(!s.delete(b"c").unwrap());
    }

    #[test]
    fn expired_keys_are_absent_and_swept() {
        let s = Embedded::in_memory().unwrap();
        let short = Some(Duration::from_millis(30));
        s.set(b"a", b"v", short, None).unwrap();
        assert_eq!(s.increment(b"n", 1, short, None).unwrap(), 1);
        // An existing counter keeps its expiry (a fixed window).
        assert_eq!(
            s.increment(b"n", 1, Some(Duration::from_secs(3600)), None)
                .unwrap(),
            2
        );
        s.set(b"keep", b"v", None, None).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(s.get(b"a").unwrap(), None);
        assert_eq!(s.get(b"n").unwrap(), None);
        // An expired counter starts again; an expired key counts as absent for CAS.
        assert_eq!(s.increment(b"n", 1, None, None).unwrap(), 1);
        assert!(s.compare_and_set(b"a", None, b"w", None, None).unwrap());
        s.set(b"gone", b"v", short, None).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(s.sweep().unwrap(), 1);
        assert_eq!(s.get(b"keep").unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn a_second_open_of_the_same_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.redb");
        let first = Embedded::open(&path, Duration::from_secs(1)).unwrap();
        let err = match Embedded::open(&path, Duration::from_secs(1)) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("opened twice"),
        };
        assert!(err.contains("in use by another process"), "{err}");
        first.set(b"k", b"v", None, None).unwrap();
        drop(first);
        let again = Embedded::open(&path, Duration::from_secs(1)).unwrap();
        assert_eq!(again.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn usage_is_counted_per_namespace_and_the_quota_holds() {
        let s = Embedded::in_memory().unwrap();
        let q = Some(crate::store::Quota {
            max_keys: 3,
            max_bytes: 100,
        });
        s.set(b"p:a", b"1234567890", None, q).unwrap();
        s.set(b"p:b", b"x", None, q).unwrap();
        s.set(b"p:c", b"x", None, q).unwrap();
        let e = s.set(b"p:d", b"x", None, q).unwrap_err();
        assert!(matches!(e, StoreError::QuotaExceeded(_)), "{e}");
        // Another namespace has its own quota; overwriting in place and deleting pass.
        s.set(b"other:d", b"x", None, q).unwrap();
        s.set(b"p:a", b"12", None, q).unwrap();
        let e = s.set(b"p:a", &[b'y'; 200], None, q).unwrap_err();
        assert!(matches!(e, StoreError::QuotaExceeded(_)), "{e}");
        assert_eq!(
            s.get(b"p:a").unwrap().as_deref(),
            Some(&b"12"[..]),
            "nothing written"
        );
        assert!(s.delete(b"p:b").unwrap());
        s.set(b"p:d", b"x", None, q).unwrap();
        assert!(matches!(
            s.increment(b"p:n", 1, None, q),
            Err(StoreError::QuotaExceeded(_))
        ));
        assert!(matches!(
            s.compare_and_set(b"p:e", None, b"x", None, q),
            Err(StoreError::QuotaExceeded(_))
        ));
        // Expired entries are given back when swept.
        s.set(b"p:a", b"x", Some(Duration::from_millis(10)), q)
            .unwrap();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(s.sweep().unwrap(), 1);
        s.set(b"p:e", b"x", None, q).unwrap();
    }
}
