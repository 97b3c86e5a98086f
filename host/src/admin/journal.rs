//! What the console shows of recent traffic, kept in memory: counts per minute for the last
//! day (messages by disposition, deliveries by outcome) and the facts of the last
//! [`MAX_TRANSACTIONS`] transactions (the `message` log line's fields).
//!
//! Bounded by construction: 1,440 minutes of a few counters, and a ring of transactions whose
//! text fields are cut to [`MAX_FIELD`] characters, at most [`MAX_TRANSACTIONS`] of them and
//! [`MAX_TRANSACTION_BYTES`] in all.
//!
//! It survives a restart: the server writes a [`Journal::snapshot`] to
//! `<data_dir>/console-journal.json` every minute and at shutdown (replaced atomically, owner
//! only), and [`Journal::restore`]s it at start, applying the same bounds to what it reads.
//! A file of its own rather than keys in the plugins' store: that store may be a Redis a
//! fleet shares, and these are one server's counts.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, OnceLock};

/// Transactions remembered.
pub const MAX_TRANSACTIONS: usize = 1000;
/// Characters kept of each text field of a transaction (addresses, verdict lists, replies).
pub const MAX_FIELD: usize = 1000;
/// Minutes of counts kept.
pub const MINUTES: usize = 24 * 60;
/// Bytes of transactions remembered, all fields together: a transaction with a hundred
/// recipients of a thousand characters each weighs hundreds of KiB, and a thousand of them
/// would otherwise take hundreds of MiB.
pub const MAX_TRANSACTION_BYTES: usize = 8 << 20;

/// The facts of one transaction, as its log line gives them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Transaction {
    /// When it ended (RFC 3339).
    pub at: String,
    /// Queue or transaction id.
    pub id: String,
    /// Client address.
    pub client: String,
    /// Listener name.
    pub listener: String,
    /// Envelope sender.
    pub sender: String,
    /// Envelope recipients.
    pub recipients: Vec<String>,
    /// The summed spam score.
    pub score: f64,
    /// Every plugin call: `plugin:hook:verdict[=score][!failure]`.
    pub verdicts: Vec<String>,
    /// What happened to the message (`queued`, `rejected`, …).
    pub disposition: String,
    /// The reply the client got.
    pub reply: String,
}

/// Counts of one minute.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Minute {
    /// Minutes since the Unix epoch.
    at: u64,
    counts: BTreeMap<String, u64>,
}

#[derive(Default)]
struct Inner {
    minutes: VecDeque<Minute>,
    transactions: VecDeque<Transaction>,
    /// The bytes of `transactions` ([`Transaction::weight`]).
    transaction_bytes: usize,
    plugins: BTreeMap<String, PluginCalls>,
}

impl Transaction {
    /// What it holds in memory, about: its text fields and a fixed part.
    fn weight(&self) -> usize {
        let texts = [
            &self.at,
            &self.id,
            &self.client,
            &self.listener,
            &self.sender,
            &self.disposition,
            &self.reply,
        ];
        std::mem::size_of::<Transaction>()
            + texts.iter().map(|t| t.len()).sum::<usize>()
            + self
                .recipients
                .iter()
                .chain(&self.verdicts)
                .map(|t| t.len() + std::mem::size_of::<String>())
                .sum::<usize>()
    }
}

/// Latencies kept per plugin for its percentiles.
const LATENCIES: usize = 1000;

/// One plugin's calls since start, and its latest latencies.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct PluginCalls {
    calls: u64,
    failures: u64,
    micros: VecDeque<u64>,
}

/// A plugin's calls, failures and latency percentiles (of its last 1,000 calls).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PluginStats {
    /// The plugin.
    pub plugin: String,
    /// Calls since start.
    pub calls: u64,
    /// Failed calls (traps, timeouts, bad returns) since start.
    pub failures: u64,
    /// Median latency, microseconds.
    pub p50_us: u64,
    /// 99th percentile latency, microseconds.
    pub p99_us: u64,
}

/// The process's journal.
pub fn get() -> &'static Journal {
    static JOURNAL: OnceLock<Journal> = OnceLock::new();
    JOURNAL.get_or_init(Journal::default)
}

/// The process's journal.
#[derive(Default)]
pub struct Journal {
    inner: Mutex<Inner>,
}

fn cut(s: &str) -> String {
    crate::inbound::message::printable(s)
        .chars()
        .take(MAX_FIELD)
        .collect()
}

fn now_minute() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 60)
        .unwrap_or(0)
}

impl Journal {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one event (`message:queued`, `delivery:delivered`, …) in this minute.
    pub fn count(&self, what: &str) {
        self.count_at(now_minute(), what);
    }

    fn count_at(&self, minute: u64, what: &str) {
        let mut inner = self.lock();
        if inner.minutes.back().is_none_or(|m| m.at != minute) {
            inner.minutes.push_back(Minute {
                at: minute,
                counts: BTreeMap::new(),
            });
        }
        while inner
            .minutes
            .front()
            .is_some_and(|m| m.at + MINUTES as u64 <= minute)
        {
            inner.minutes.pop_front();
        }
        if let Some(m) = inner.minutes.back_mut() {
            *m.counts.entry(what.to_string()).or_default() += 1;
        }
    }

    /// Counts one plugin call and its latency.
    pub fn plugin_call(&self, plugin: &str, micros: u64, failed: bool) {
        let mut inner = self.lock();
        if !inner.plugins.contains_key(plugin) && inner.plugins.len() >= 1000 {
            return;
        }
        let p = inner.plugins.entry(plugin.to_string()).or_default();
        p.calls += 1;
        p.failures += u64::from(failed);
        if p.micros.len() >= LATENCIES {
            p.micros.pop_front();
        }
        p.micros.push_back(micros);
    }

    /// Every plugin's calls, failures and latency percentiles.
    pub fn plugin_stats(&self) -> Vec<PluginStats> {
        let inner = self.lock();
        inner
            .plugins
            .iter()
            .map(|(name, p)| {
                let mut sorted: Vec<u64> = p.micros.iter().copied().collect();
                sorted.sort_unstable();
                let at = |q: f64| {
                    sorted
                        .get(
                            ((sorted.len() as f64 * q) as usize)
                                .min(sorted.len().saturating_sub(1)),
                        )
                        .copied()
                        .unwrap_or(0)
                };
                PluginStats {
                    plugin: name.clone(),
                    calls: p.calls,
                    failures: p.failures,
                    p50_us: at(0.5),
                    p99_us: at(0.99),
                }
            })
            .collect()
    }

    /// Remembers a transaction (the oldest is forgotten past [`MAX_TRANSACTIONS`]).
    pub fn transaction(&self, t: Transaction) {
        let t = Transaction {
            id: cut(&t.id),
            client: cut(&t.client),
            listener: cut(&t.listener),
            sender: cut(&t.sender),
            recipients: t.recipients.iter().take(100).map(|r| cut(r)).collect(),
            verdicts: t.verdicts.iter().take(100).map(|v| cut(v)).collect(),
            disposition: cut(&t.disposition),
            reply: cut(&t.reply),
            ..t
        };
        let weight = t.weight();
        let mut inner = self.lock();
        while inner.transactions.len() >= MAX_TRANSACTIONS
            || (!inner.transactions.is_empty()
                && inner.transaction_bytes + weight > MAX_TRANSACTION_BYTES)
        {
            if let Some(old) = inner.transactions.pop_front() {
                inner.transaction_bytes -= old.weight();
            }
        }
        inner.transaction_bytes += weight;
        inner.transactions.push_back(t);
    }

    /// The last transactions, newest first, that contain `needle` (case-insensitive) in their
    /// id, client, sender or a recipient; all when `needle` is empty.
    pub fn transactions(&self, needle: &str, limit: usize) -> Vec<Transaction> {
        let needle = needle.to_lowercase();
        let inner = self.lock();
        inner
            .transactions
            .iter()
            .rev()
            .filter(|t| {
                needle.is_empty()
                    || t.id.to_lowercase().contains(&needle)
                    || t.client.to_lowercase().contains(&needle)
                    || t.sender.to_lowercase().contains(&needle)
                    || t.recipients
                        .iter()
                        .any(|r| r.to_lowercase().contains(&needle))
            })
            .take(limit)
            .cloned()
            .collect()
    }

    /// Counts of `what` per bucket of `bucket_minutes`, the last `buckets` buckets, oldest
    /// first (the last bucket ends with the current minute).
    pub fn series(&self, what: &str, bucket_minutes: u64, buckets: usize) -> Vec<u64> {
        self.series_at(now_minute(), what, bucket_minutes, buckets)
    }

    fn series_at(&self, now: u64, what: &str, bucket_minutes: u64, buckets: usize) -> Vec<u64> {
        let mut out = vec![0; buckets];
        let span = bucket_minutes * buckets as u64;
        let inner = self.lock();
        for m in &inner.minutes {
            if m.at > now || now - m.at >= span {
                continue;
            }
            let back = ((now - m.at) / bucket_minutes) as usize;
            if let Some(n) = m.counts.get(what) {
                out[buckets - 1 - back] += n;
            }
        }
        out
    }

    /// The total of `what` over the last `minutes`.
    pub fn total(&self, what: &str, minutes: u64) -> u64 {
        self.series(what, minutes, 1)[0]
    }

    /// Everything remembered, as JSON, for [`Journal::restore`].
    pub fn snapshot(&self) -> Vec<u8> {
        let inner = self.lock();
        let snap = Snapshot {
            minutes: inner.minutes.iter().cloned().collect(),
            transactions: inner.transactions.iter().cloned().collect(),
            plugins: inner.plugins.clone(),
        };
        drop(inner);
        serde_json::to_vec(&snap).unwrap_or_default()
    }

    /// Takes back what a [`Journal::snapshot`] held, within today's bounds: minutes older
    /// than a day and counters beyond a few hundred per minute are dropped, transactions go
    /// through [`Journal::transaction`]. Counts made since start are kept and added to.
    pub fn restore(&self, bytes: &[u8]) -> Result<(), String> {
        let snap: Snapshot = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let now = now_minute();
        for t in snap
            .transactions
            .into_iter()
            .rev()
            .take(MAX_TRANSACTIONS)
            .rev()
        {
            self.transaction(t);
        }
        let mut inner = self.lock();
        let mut merged: BTreeMap<u64, BTreeMap<String, u64>> = BTreeMap::new();
        for m in snap
            .minutes
            .into_iter()
            .chain(inner.minutes.drain(..))
            .filter(|m| m.at <= now && m.at + (MINUTES as u64) > now)
        {
            let counts = merged.entry(m.at).or_default();
            for (k, v) in m.counts.into_iter().take(256) {
                *counts.entry(cut(&k)).or_default() += v;
            }
        }
        inner.minutes = merged
            .into_iter()
            .map(|(at, counts)| Minute { at, counts })
            .collect();
        for (name, p) in snap.plugins.into_iter().take(1000) {
            let mine = inner.plugins.entry(cut(&name)).or_default();
            mine.calls += p.calls;
            mine.failures += p.failures;
            let mut all: VecDeque<u64> = p.micros;
            all.extend(mine.micros.drain(..));
            while all.len() > LATENCIES {
                all.pop_front();
            }
            mine.micros = all;
        }
        Ok(())
    }
}

/// What [`Journal::snapshot`] writes.
#[derive(serde::Serialize, serde::Deserialize)]
struct Snapshot {
    minutes: Vec<Minute>,
    transactions: Vec<Transaction>,
    plugins: BTreeMap<String, PluginCalls>,
}

/// The journal's file in `data_dir`.
pub fn file(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("console-journal.json")
}

/// Writes the process's journal to `path` (a temporary file, synced, renamed).
pub fn save(path: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&get().snapshot())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Reads the journal saved at `path` into the process's journal, if there is one. A file
/// that cannot be read is reported and set aside, never a reason not to start.
pub fn load(path: &std::path::Path) {
    // Far more than the bounds allow a snapshot to weigh: anything larger is not ours.
    if std::fs::metadata(path).is_ok_and(|m| m.len() > 64 << 20) {
        tracing::warn!(file = %path.display(), "the console's saved counts are too large; starting from none");
        let _ = std::fs::rename(path, path.with_extension("json.bad"));
        return;
    }
    match std::fs::read(path) {
        Ok(bytes) => {
            if let Err(e) = get().restore(&bytes) {
                tracing::warn!(file = %path.display(), error = %e, "the console's saved counts cannot be read; starting from none");
                let _ = std::fs::rename(path, path.with_extension("json.bad"));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read the console's saved counts")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_comes_back_within_the_bounds() {
        let now = now_minute();
        let old = Journal::default();
        old.count_at(now, "message:queued");
        old.count_at(now - 2 * MINUTES as u64, "message:queued");
        old.plugin_call("spam", 1200, false);
        let t = |id: &str| Transaction {
            at: String::new(),
            id: id.into(),
            client: "192.0.2.1".into(),
            listener: "smtp".into(),
            sender: "a@x.test".into(),
            recipients: vec!["b@y.test".into()],
            score: 0.0,
            verdicts: Vec::new(),
            disposition: "queued".into(),
            reply: "250".into(),
        };
        old.transaction(t("T1"));
        let new = Journal::default();
        new.count_at(now, "message:queued");
        new.restore(&old.snapshot()).unwrap();
        assert_eq!(
            new.total("message:queued", MINUTES as u64),
            2,
            "the day-old minute is gone"
        );
        assert_eq!(new.transactions("", 10)[0].id, "T1");
        assert_eq!(new.plugin_stats()[0].calls, 1);
        assert!(new.restore(b"{not json").is_err());
    }

    #[test]
    fn counts_fall_into_buckets_and_age_out() {
        let j = Journal::default();
        j.count_at(1000, "message:queued");
        j.count_at(1000, "message:queued");
        j.count_at(1059, "message:queued");
        j.count_at(1059, "message:rejected");
        assert_eq!(j.series_at(1059, "message:queued", 60, 2), vec![0, 3]);
        assert_eq!(j.series_at(1059, "message:queued", 30, 2), vec![2, 1]);
        assert_eq!(j.series_at(1059, "message:rejected", 60, 1), vec![1]);
        // A day later the first minutes are gone.
        j.count_at(1000 + MINUTES as u64, "message:queued");
        assert_eq!(
            j.series_at(1000 + MINUTES as u64, "message:queued", MINUTES as u64, 1),
            vec![2]
        );
    }

    #[test]
    fn plugin_percentiles() {
        let j = Journal::default();
        for us in 1..=100 {
            j.plugin_call("p", us, us == 100);
        }
        let s = &j.plugin_stats()[0];
        assert_eq!((s.calls, s.failures, s.p50_us, s.p99_us), (100, 1, 51, 100));
    }

    #[test]
    fn transactions_are_bounded_searchable_and_printable() {
        let j = Journal::default();
        for i in 0..MAX_TRANSACTIONS + 5 {
            j.transaction(Transaction {
                at: String::new(),
                id: format!("id{i}"),
                client: "192.0.2.1".into(),
                listener: "smtp".into(),
                sender: format!("a{i}@example.org\r\nX-Evil: 1"),
                recipients: vec!["bob@example.org".into()],
                score: 0.0,
                verdicts: Vec::new(),
                disposition: "queued".into(),
                reply: "250 ok".into(),
            });
        }
        let all = j.transactions("", usize::MAX);
        assert_eq!(all.len(), MAX_TRANSACTIONS);
        assert_eq!(all[0].id, format!("id{}", MAX_TRANSACTIONS + 4));
        assert!(!all[0].sender.contains('\r') && !all[0].sender.contains('\n'));
        assert_eq!(j.transactions("A7@EXAMPLE", 10).len(), 1);
    }

    #[test]
    fn transactions_are_bounded_in_bytes_too() {
        let j = Journal::default();
        let long = "x".repeat(MAX_FIELD);
        for i in 0..100 {
            j.transaction(Transaction {
                at: String::new(),
                id: format!("t{i}"),
                client: long.clone(),
                listener: String::new(),
                sender: long.clone(),
                recipients: vec![long.clone(); 100],
                score: 0.0,
                verdicts: vec![long.clone(); 100],
                disposition: String::new(),
                reply: long.clone(),
            });
        }
        let inner = j.lock();
        let held: usize = inner.transactions.iter().map(Transaction::weight).sum();
        assert_eq!(held, inner.transaction_bytes);
        assert!(held <= MAX_TRANSACTION_BYTES, "{held}");
        assert!(
            inner.transactions.len() < 100,
            "{}",
            inner.transactions.len()
        );
        assert_eq!(
            inner.transactions.back().map(|t| t.id.as_str()),
            Some("t99"),
            "the newest are kept"
        );
    }
}
