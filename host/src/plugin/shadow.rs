//! Shadow versions: `NAME.shadow.wasm` beside a plugin's file runs beside the live plugin on
//! the same transactions, with the same inputs and settings but its own `kv` namespace
//! (`NAME.shadow`). Its verdicts are recorded and compared with the live ones, never applied;
//! its calls have its own deadline. [`ShadowStats`] keeps the comparison for the console,
//! `/plugins` and `plugin list`; [`promote`] and [`rollback`] swap the files.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::Hook;
use super::directory::{shadow_path, sig_path, with_suffix};

/// The differing transactions kept, newest first.
pub const RECENT: usize = 20;

/// Latencies kept for the percentiles (the most recent ones).
const LATENCIES: usize = 1000;

/// One verdict, as the comparison shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The decision's name (`continue`, `reject`, …), or `failed`.
    pub action: String,
    /// The points of its symbols (`check-message`), 0 otherwise.
    pub score: f64,
    /// Its symbols, reply or failure, in one line.
    pub detail: String,
    /// Wall-clock time of the call, microseconds; 0 when the shadow was not called (it lacks
    /// the hook), and then not counted in its call times.
    pub micros: u64,
}

/// A transaction where the shadow answered otherwise than the live version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    /// The transaction.
    pub transaction: String,
    /// The hook's name.
    pub hook: String,
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// The live version's verdict.
    pub live: Answer,
    /// The shadow's.
    pub shadow: Answer,
}

/// The comparison of a shadow with its live version since it was loaded.
#[derive(Default)]
pub struct ShadowStats {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    calls: u64,
    transactions: u64,
    last_transaction: String,
    differing: u64,
    by_action: BTreeMap<(String, String), u64>,
    score_delta_sum: f64,
    live_failures: u64,
    shadow_failures: u64,
    live_micros: VecDeque<u64>,
    shadow_micros: VecDeque<u64>,
    recent: VecDeque<Difference>,
}

/// What [`ShadowStats`] shows: in `/plugins`, `plugin list` and the console.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowRow {
    /// The shadow's file.
    pub file: String,
    /// The version the shadow declares.
    pub version: String,
    /// Its sampling rate (the share of transactions it sees).
    pub sample: f64,
    /// Transactions it saw.
    pub transactions: u64,
    /// Hook calls it answered beside the live version.
    pub calls: u64,
    /// Calls where its verdict's action or score differed from the live one.
    pub differing: u64,
    /// Those calls by (live action, shadow action), with how many (agreeing pairs included).
    pub by_action: Vec<(String, String, u64)>,
    /// The mean of (shadow score − live score) over the calls.
    pub mean_score_delta: f64,
    /// Failures of the live version in those calls.
    pub live_failures: u64,
    /// Failures of the shadow.
    pub shadow_failures: u64,
    /// Median call time of the live version, microseconds (recent calls).
    pub live_p50_us: u64,
    /// Median call time of the shadow.
    pub shadow_p50_us: u64,
    /// 99th percentile call time of the live version.
    pub live_p99_us: u64,
    /// 99th percentile call time of the shadow.
    pub shadow_p99_us: u64,
    /// The last differing calls, newest first.
    pub recent: Vec<Difference>,
}

fn push_bounded(q: &mut VecDeque<u64>, v: u64) {
    if q.len() == LATENCIES {
        q.pop_front();
    }
    q.push_back(v);
}

fn percentile(q: &VecDeque<u64>, p: f64) -> u64 {
    if q.is_empty() {
        return 0;
    }
    let mut v: Vec<u64> = q.iter().copied().collect();
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

impl ShadowStats {
    /// Records one call of both versions in `transaction`.
    pub fn record(&self, transaction: &str, hook: Hook, live: Answer, shadow: Answer) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        s.calls += 1;
        if s.last_transaction != transaction {
            s.transactions += 1;
            s.last_transaction = transaction.to_string();
        }
        *s.by_action
            .entry((live.action.clone(), shadow.action.clone()))
            .or_default() += 1;
        s.score_delta_sum += shadow.score - live.score;
        s.live_failures += u64::from(live.action == "failed");
        s.shadow_failures += u64::from(shadow.action == "failed");
        push_bounded(&mut s.live_micros, live.micros);
        if shadow.micros > 0 {
            push_bounded(&mut s.shadow_micros, shadow.micros);
        }
        if live.action != shadow.action || (live.score - shadow.score).abs() > 1e-9 {
            s.differing += 1;
            if s.recent.len() == RECENT {
                s.recent.pop_back();
            }
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            s.recent.push_front(Difference {
                transaction: transaction.to_string(),
                hook: hook.as_str().to_string(),
                at,
                live,
                shadow,
            });
        }
    }

    /// The comparison so far.
    pub fn row(&self, file: &Path, version: &str, sample: f64) -> ShadowRow {
        let s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        ShadowRow {
            file: file.display().to_string(),
            version: version.to_string(),
            sample,
            transactions: s.transactions,
            calls: s.calls,
            differing: s.differing,
            by_action: s
                .by_action
                .iter()
                .map(|((l, sh), n)| (l.clone(), sh.clone(), *n))
                .collect(),
            mean_score_delta: if s.calls == 0 {
                0.0
            } else {
                s.score_delta_sum / s.calls as f64
            },
            live_failures: s.live_failures,
            shadow_failures: s.shadow_failures,
            live_p50_us: percentile(&s.live_micros, 0.5),
            shadow_p50_us: percentile(&s.shadow_micros, 0.5),
            live_p99_us: percentile(&s.live_micros, 0.99),
            shadow_p99_us: percentile(&s.shadow_micros, 0.99),
            recent: s.recent.iter().cloned().collect(),
        }
    }
}

/// Whether transaction `id` is in the share `rate` (0 to 1) of transactions a shadow sees:
/// decided by a hash of the id, so every hook of one transaction decides alike.
pub fn sampled(id: &str, name: &str, rate: f64) -> bool {
    if rate >= 1.0 {
        return true;
    }
    if rate <= 0.0 {
        return false;
    }
    let h = id
        .bytes()
        .chain(name.bytes())
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    (h >> 11) as f64 / (1u64 << 53) as f64 <= rate
}

/// What [`promote`] and [`rollback`] did, or why they could not.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// No plugin of that name in the directory.
    #[error("plugin {0:?} has no file in {1}")]
    NoPlugin(String, String),
    /// No shadow file.
    #[error("there is no {0} to promote")]
    NoShadow(String),
    /// No previous version kept.
    #[error("there is no {0} to roll back to (a promotion keeps the version it replaced there)")]
    NoPrevious(String),
    /// A file operation failed.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SwapError + '_ {
    move |e| SwapError::Io(path.display().to_string(), e)
}

/// The live file of plugin `name` in `dir`.
fn live_file(dir: &Path, name: &str) -> Result<PathBuf, SwapError> {
    super::directory::scan(dir, &[])
        .map_err(io(dir))?
        .into_iter()
        .find(|f| f.name == name)
        .map(|f| f.path)
        .ok_or_else(|| SwapError::NoPlugin(name.to_string(), dir.display().to_string()))
}

/// Makes the shadow of plugin `name` its live version: the live file is kept as
/// `FILE.previous` (for [`rollback`]), then the shadow is renamed over it, one atomic step, so
/// a running server sees either version and never neither. Signature files follow their
/// plugin files. Returns the live file.
pub fn promote(dir: &Path, name: &str) -> Result<PathBuf, SwapError> {
    let live = live_file(dir, name)?;
    let shadow = shadow_path(&live, name);
    if !shadow.is_file() {
        return Err(SwapError::NoShadow(shadow.display().to_string()));
    }
    let previous = with_suffix(&live, ".previous");
    let _ = std::fs::remove_file(&previous);
    std::fs::hard_link(&live, &previous).map_err(io(&previous))?;
    let live_sig = sig_path(&live);
    let previous_sig = sig_path(&previous);
    let _ = std::fs::remove_file(&previous_sig);
    if live_sig.is_file() {
        std::fs::hard_link(&live_sig, &previous_sig).map_err(io(&live_sig))?;
    }
    replace(&shadow, &live)?;
    Ok(live)
}

/// Renames `from` over `to`, its signature first: `from`'s signature replaces
/// `to`'s, and where `from` has none, `to`'s old one goes (it signed other bytes).
fn replace(from: &Path, to: &Path) -> Result<(), SwapError> {
    let from_sig = sig_path(from);
    let to_sig = sig_path(to);
    if from_sig.is_file() {
        std::fs::rename(&from_sig, &to_sig).map_err(io(&from_sig))?;
    } else {
        let _ = std::fs::remove_file(&to_sig);
    }
    std::fs::rename(from, to).map_err(io(from))
}

/// Puts back the version [`promote`] replaced (`FILE.previous`). Returns the live file.
pub fn rollback(dir: &Path, name: &str) -> Result<PathBuf, SwapError> {
    let live = live_file(dir, name)?;
    let previous = with_suffix(&live, ".previous");
    if !previous.is_file() {
        return Err(SwapError::NoPrevious(previous.display().to_string()));
    }
    replace(&previous, &live)?;
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(action: &str, score: f64, micros: u64) -> Answer {
        Answer {
            action: action.into(),
            score,
            detail: String::new(),
            micros,
        }
    }

    #[test]
    fn differences_are_counted_by_action_and_score_and_the_recent_ones_kept() {
        let s = ShadowStats::default();
        s.record(
            "t1",
            Hook::CheckMessage,
            answer("continue", 1.0, 10),
            answer("continue", 1.0, 20),
        );
        s.record(
            "t2",
            Hook::CheckRecipient,
            answer("continue", 0.0, 10),
            answer("continue", 0.0, 30),
        );
        s.record(
            "t2",
            Hook::CheckMessage,
            answer("reject", 0.0, 10),
            answer("continue", 2.5, 40),
        );
        let row = s.row(Path::new("x.shadow.wasm"), "2", 1.0);
        assert_eq!((row.transactions, row.calls, row.differing), (2, 3, 1));
        assert_eq!(row.recent[0].transaction, "t2");
        assert!(
            row.by_action
                .contains(&("reject".into(), "continue".into(), 1))
        );
        assert!((row.mean_score_delta - 2.5 / 3.0).abs() < 1e-9);
        assert_eq!((row.live_p50_us, row.shadow_p50_us), (10, 30));
        for i in 0..30 {
            s.record(
                &format!("u{i}"),
                Hook::CheckMessage,
                answer("continue", 0.0, 1),
                answer("failed", 0.0, 1),
            );
        }
        let row = s.row(Path::new("x"), "2", 1.0);
        assert_eq!(row.recent.len(), RECENT);
        assert_eq!(row.recent[0].transaction, "u29");
        assert_eq!(row.shadow_failures, 30);
    }

    #[test]
    fn sampling_keeps_about_the_share_asked() {
        let n = (0..10_000)
            .filter(|i| sampled(&format!("txn-{i}"), "p", 0.1))
            .count();
        assert!((800..1200).contains(&n), "{n}");
        assert!(sampled("a", "p", 1.0) && !sampled("a", "p", 0.0));
        assert_eq!(sampled("same", "p", 0.5), sampled("same", "p", 0.5));
    }

    #[test]
    fn promote_then_rollback_swaps_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("10-p.wasm");
        std::fs::write(&live, b"v1").unwrap();
        assert!(matches!(
            promote(dir.path(), "p"),
            Err(SwapError::NoShadow(_))
        ));
        assert!(matches!(
            rollback(dir.path(), "p"),
            Err(SwapError::NoPrevious(_))
        ));
        assert!(matches!(
            promote(dir.path(), "q"),
            Err(SwapError::NoPlugin(..))
        ));
        std::fs::write(dir.path().join("p.shadow.wasm"), b"v2").unwrap();
        assert_eq!(promote(dir.path(), "p").unwrap(), live);
        assert_eq!(std::fs::read(&live).unwrap(), b"v2");
        assert!(!dir.path().join("p.shadow.wasm").exists());
        assert_eq!(
            std::fs::read(dir.path().join("10-p.wasm.previous")).unwrap(),
            b"v1"
        );
        rollback(dir.path(), "p").unwrap();
        assert_eq!(std::fs::read(&live).unwrap(), b"v1");
        assert!(!dir.path().join("10-p.wasm.previous").exists());
    }
}
