//! The site's log of learned messages (files under the data directory, or the shared store
//! of a fleet), the per-user daily quota, and the lock that makes one learner at a time.

use super::*;

pub(super) fn store_error(e: crate::store::StoreError) -> LearnError {
    fail(format!("the shared store: {e}"))
}

pub(super) fn message_key(sha: &str) -> Vec<u8> {
    format!("{KEY_MESSAGE}{sha}").into_bytes()
}

/// Today, as days since the Unix epoch (UTC): the quota's period.
pub(super) fn today() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

impl Log {
    pub(super) fn of(site: &Site, shared: Option<KvStore>) -> Log {
        match shared {
            Some(kv) => Log::Store(kv),
            None => Log::Files(learning_dir(&site.learned).join("learned-messages")),
        }
    }

    pub(super) async fn entries(&self) -> Result<Vec<Entry>, LearnError> {
        let mut out: Vec<Entry> = match self {
            Log::Files(dir) => match std::fs::read_dir(dir) {
                Ok(d) => d
                    .filter_map(Result::ok)
                    .filter_map(|e| Entry::parse(&e.file_name().to_string_lossy()))
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(fail(format!("cannot read {}: {e}", dir.display()))),
            },
            Log::Store(kv) => {
                let index = kv
                    .get(KEY_INDEX.to_vec())
                    .await
                    .map_err(store_error)?
                    .unwrap_or_default();
                String::from_utf8_lossy(&index)
                    .lines()
                    .filter_map(Entry::parse)
                    .collect()
            }
        };
        out.sort_by_key(|e| e.sequence);
        Ok(out)
    }

    pub(super) async fn read(&self, e: &Entry) -> Result<Vec<u8>, LearnError> {
        match self {
            Log::Files(dir) => {
                let path = dir.join(e.file_name());
                read_untrusted(&path, SCAN_BYTES as u64)
                    .map(|(bytes, _)| bytes)
                    .map_err(|why| fail(format!("{}: {why}", path.display())))
            }
            Log::Store(kv) => kv
                .get(message_key(&e.sha))
                .await
                .map_err(store_error)?
                .ok_or_else(|| fail(format!("the shared store has no message {}", e.sha))),
        }
    }

    /// Counts one hand-over of `user` today; false when that passes `limit`.
    pub(super) async fn take_quota(&self, user: &str, limit: u32) -> Result<bool, LearnError> {
        let day = today();
        match self {
            Log::Store(kv) => {
                let key = format!("{KEY_QUOTA}{day}:{user}").into_bytes();
                let n = kv
                    .increment(key, 1, 2 * 86_400)
                    .await
                    .map_err(store_error)?;
                Ok(n <= i64::from(limit))
            }
            Log::Files(dir) => {
                // `day` on the first line, then `count user` per line; under the lock.
                let path = dir.join(".quota");
                let text = match read_untrusted(&path, 64 << 20) {
                    Ok((b, _)) => String::from_utf8_lossy(&b).into_owned(),
                    Err(_) => String::new(),
                };
                let mut lines = text.lines();
                let mut counts: std::collections::BTreeMap<String, u32> =
                    if lines.next().and_then(|d| d.parse::<u64>().ok()) == Some(day) {
                        lines
                            .filter_map(|l| l.split_once(' '))
                            .filter_map(|(n, u)| Some((u.to_string(), n.parse().ok()?)))
                            .collect()
                    } else {
                        Default::default()
                    };
                if !counts.contains_key(user) && counts.len() >= MAX_QUOTA_USERS {
                    return Ok(false);
                }
                let n = counts.entry(user.to_string()).or_insert(0);
                *n = n.saturating_add(1);
                let within = *n <= limit;
                let mut out = format!("{day}\n");
                for (u, n) in &counts {
                    out.push_str(&format!("{n} {u}\n"));
                }
                write_atomic(&path, out.as_bytes(), 0o600)
                    .map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
                Ok(within)
            }
        }
    }

    /// Replaces the log's entries for the messages touched: `removed` go, `added` come with
    /// their bytes.
    pub(super) async fn update(
        &self,
        removed: &[Entry],
        added: &[(Entry, Vec<u8>)],
    ) -> Result<(), LearnError> {
        match self {
            Log::Files(dir) => {
                for e in removed {
                    let path = dir.join(e.file_name());
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                        Err(err) => {
                            return Err(fail(format!("cannot remove {}: {err}", path.display())));
                        }
                    }
                }
                for (e, bytes) in added {
                    let path = dir.join(e.file_name());
                    write_atomic(&path, bytes, 0o600)
                        .map_err(|err| fail(format!("cannot write {}: {err}", path.display())))?;
                }
                Ok(())
            }
            Log::Store(kv) => {
                for (e, bytes) in added {
                    kv.set(message_key(&e.sha), bytes.clone(), 0)
                        .await
                        .map_err(store_error)?;
                }
                // The index under the learners' lock; compare-and-set guards it anyway.
                loop {
                    let old = kv.get(KEY_INDEX.to_vec()).await.map_err(store_error)?;
                    let mut entries: Vec<Entry> = old
                        .as_deref()
                        .map(|b| {
                            String::from_utf8_lossy(b)
                                .lines()
                                .filter_map(Entry::parse)
                                .collect()
                        })
                        .unwrap_or_default();
                    entries.retain(|e| !removed.contains(e));
                    entries.extend(added.iter().map(|(e, _)| e.clone()));
                    let text: String = entries.iter().map(|e| e.file_name() + "\n").collect();
                    if kv
                        .compare_and_set(KEY_INDEX.to_vec(), old, text.into_bytes(), 0)
                        .await
                        .map_err(store_error)?
                    {
                        break;
                    }
                }
                for e in removed {
                    if !added.iter().any(|(a, _)| a.sha == e.sha) {
                        kv.delete(message_key(&e.sha)).await.map_err(store_error)?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// The learners' lock: one change and its retraining at a time, on this node (a file lock) or
/// in the fleet (a key with a time-to-live, so a killed learner frees it).
pub(super) enum Lock {
    File(#[allow(dead_code)] std::fs::File),
    Store(KvStore, Vec<u8>),
}

impl Lock {
    /// Takes the lock, waiting at most `timeout` for another learner (never blocking a
    /// thread: the wait is a sleep between tries, so the console's Learn cannot stall the
    /// server's workers).
    pub(super) async fn take(log: &Log, timeout: Duration) -> Result<Lock, LearnError> {
        let deadline = tokio::time::Instant::now() + timeout;
        match log {
            Log::Files(dir) => {
                own_dir(dir)?;
                let path = dir.join(".lock");
                // Our own file in our own directory; O_NOFOLLOW all the same, and no chmod.
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .mode(0o600)
                    .custom_flags(libc_flags::NOFOLLOW)
                    .open(&path)
                    .map_err(|e| fail(format!("cannot open {}: {e}", path.display())))?;
                loop {
                    match f.try_lock() {
                        Ok(()) => return Ok(Lock::File(f)),
                        Err(std::fs::TryLockError::WouldBlock) => {}
                        Err(std::fs::TryLockError::Error(e)) => {
                            return Err(fail(format!("cannot lock {}: {e}", path.display())));
                        }
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(fail(format!(
                            "another learner has held {} for {} s: try again later",
                            path.display(),
                            timeout.as_secs()
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Log::Store(kv) => {
                let token = format!(
                    "{}-{}",
                    std::process::id(),
                    crate::inbound::message::now_rfc5322()
                )
                .into_bytes();
                loop {
                    // Free: absent, or emptied by its last holder.
                    for free in [None, Some(Vec::new())] {
                        if kv
                            .compare_and_set(KEY_LOCK.to_vec(), free, token.clone(), 60)
                            .await
                            .map_err(store_error)?
                        {
                            return Ok(Lock::Store(kv.clone(), token));
                        }
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(fail(format!(
                            "another learner has held the shared store's lock for {} s: try again later",
                            timeout.as_secs()
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    pub(super) async fn release(self) {
        if let Lock::Store(kv, token) = self {
            // Emptied only if still ours (it may have expired and been taken since).
            let _ = kv
                .compare_and_set(KEY_LOCK.to_vec(), Some(token), Vec::new(), 60)
                .await;
        }
    }
}
