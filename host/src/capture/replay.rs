//! `sluice plugin check --capture DIR`: plays captured transactions back to the plugins of a
//! pipeline, each plugin getting exactly what it got then (clock, DNS answers, `kv` values in a
//! scratch store), and compares what they decide now with what they decided then.
//!
//! Calls are matched by hook, plugin and occurrence, over the plugins being replayed (so one
//! plugin's new version can be checked alone). A changed decision, or a call made or no
//! longer made with any decision but `continue`, is a changed verdict; other changes (a
//! score, a symbol, a header edit) are reported as differences.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::envelope::Decision;
use crate::pipeline::recording::{CallSummary, Record, Step, Taps};
use crate::pipeline::{MessageOutcome, Pipeline, Tapping};
use crate::plugin::Hook;
use crate::store::KvStore;

/// What replaying one record found.
#[derive(Debug, Serialize)]
pub struct Replayed {
    /// The record file.
    pub file: String,
    /// The transaction's id.
    pub id: String,
    /// Why it was captured.
    pub why: Vec<String>,
    /// Plugins whose file is not the one recorded: (name, recorded sha256, now).
    pub other_versions: Vec<(String, String, String)>,
    /// Recorded plugins not in the replayed set (their calls are not compared).
    pub not_replayed: Vec<String>,
    /// Each difference, a line of text.
    pub differences: Vec<String>,
    /// True when a verdict changed.
    pub verdict_changed: bool,
}

impl Replayed {
    /// The report as text: a line for the record, then one per difference.
    pub fn text(&self) -> String {
        let state = if self.verdict_changed {
            "CHANGED"
        } else if self.differences.is_empty() {
            "same"
        } else {
            "differs"
        };
        let mut out = format!(
            "{state:<8} {} (transaction {}; captured for {})\n",
            self.file,
            self.id,
            self.why.join(", ")
        );
        for (name, then, now) in &self.other_versions {
            out.push_str(&format!(
                "         {name}: recorded with {}, replayed with {}\n",
                short(then),
                short(now)
            ));
        }
        if !self.not_replayed.is_empty() {
            out.push_str(&format!(
                "         not replayed: {}\n",
                self.not_replayed.join(", ")
            ));
        }
        for d in &self.differences {
            out.push_str(&format!("         {d}\n"));
        }
        out
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// The record files `path` names: the file itself, or the records of a directory, oldest
/// first.
pub fn record_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if !path.is_dir() {
        return Err(format!(
            "--capture {}: no such file or directory",
            path.display()
        ));
    }
    Ok(super::list(path).into_iter().map(|f| f.path).collect())
}

/// Reads a record file.
pub fn read(file: &Path) -> Result<Record, String> {
    let text = std::fs::read(file).map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
    let record: Record = serde_json::from_slice(&text)
        .map_err(|e| format!("{}: not a capture record: {e}", file.display()))?;
    if record.version != crate::pipeline::recording::RECORD_VERSION {
        return Err(format!(
            "{}: a record of version {}, this Sluice reads version {}",
            file.display(),
            record.version,
            crate::pipeline::recording::RECORD_VERSION
        ));
    }
    Ok(record)
}

/// Plays `record` (from `file`) back to `pipeline`'s plugins and compares.
pub async fn replay(pipeline: &Pipeline, file: &Path, record: &Record) -> Result<Replayed, String> {
    // The plugins' writes go to a store of their own, filled with what the record's plugins
    // found: nothing real is read or changed.
    let scratch = crate::store::embedded::Embedded::in_memory()
        .map(KvStore::Embedded)
        .map_err(|e| format!("a scratch store: {e}"))?;
    let taps = Taps::replaying(record, Some(scratch)).await?;
    let mut run =
        pipeline.start_tapped(&record.client, &record.id, Tapping::Replay(Arc::new(taps)));
    let mut outcome = None;
    for step in &record.steps {
        match step {
            Step::Authentication { results } => run.set_authentication(results.clone()),
            Step::VerifySender { sender } => {
                run.verify_sender(sender).await;
            }
            Step::CheckRecipient {
                envelope,
                recipient,
            } => {
                run.check_recipient(envelope, recipient).await;
            }
            Step::CheckMessage { envelope, message } => {
                outcome = Some(run.check_message_and_end(envelope, message).await);
            }
        }
    }
    let calls: Vec<CallSummary> = run.take_calls().iter().map(CallSummary::from).collect();

    let replayed: BTreeMap<&str, &str> = pipeline
        .plugins()
        .iter()
        .flat_map(|p| std::iter::once(p).chain(p.shadow.as_ref()))
        .map(|p| (p.name.as_str(), p.sha256.as_str()))
        .collect();
    let recorded_names: Vec<&str> = record
        .calls
        .iter()
        .map(|c| c.plugin.as_str())
        .chain(record.plugins.keys().map(String::as_str))
        .collect();
    let mut report = Replayed {
        file: file.display().to_string(),
        id: record.id.clone(),
        why: record.why.clone(),
        other_versions: record
            .plugins
            .iter()
            .filter_map(|(name, facts)| {
                let now = replayed.get(name.as_str())?;
                (*now != facts.sha256)
                    .then(|| (name.clone(), facts.sha256.clone(), now.to_string()))
            })
            .collect(),
        not_replayed: Vec::new(),
        differences: Vec::new(),
        verdict_changed: false,
    };
    for name in recorded_names {
        if !replayed.contains_key(name) && !report.not_replayed.iter().any(|n| n == name) {
            report.not_replayed.push(name.to_string());
        }
    }
    compare_calls(&record.calls, &calls, &replayed, &mut report);
    if let (Some(then), Some(now)) = (&record.outcome, &outcome) {
        compare_outcomes(
            then,
            now,
            report.not_replayed.is_empty(),
            &replayed,
            &mut report,
        );
    }
    Ok(report)
}

/// Each call by hook, plugin and occurrence, over the plugins in `replayed`.
fn keyed<'a>(
    calls: &'a [CallSummary],
    replayed: &BTreeMap<&str, &str>,
) -> BTreeMap<(Hook, &'a str, usize), &'a CallSummary> {
    let mut seen: BTreeMap<(Hook, &str), usize> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for c in calls
        .iter()
        .filter(|c| replayed.contains_key(c.plugin.as_str()))
    {
        let n = seen.entry((c.hook, c.plugin.as_str())).or_default();
        out.insert((c.hook, c.plugin.as_str(), *n), c);
        *n += 1;
    }
    out
}

fn compare_calls(
    then: &[CallSummary],
    now: &[CallSummary],
    replayed: &BTreeMap<&str, &str>,
    report: &mut Replayed,
) {
    let (then, now) = (keyed(then, replayed), keyed(now, replayed));
    let keys: std::collections::BTreeSet<_> = then.keys().chain(now.keys()).copied().collect();
    for key @ (hook, plugin, n) in keys {
        let at = if n == 0 {
            format!("{plugin} {hook}")
        } else {
            format!("{plugin} {hook} (call {})", n + 1)
        };
        match (then.get(&key), now.get(&key)) {
            (Some(a), Some(b)) if a.decision != b.decision => {
                report.verdict_changed = true;
                report.differences.push(format!(
                    "{at}: {} -> {}{}",
                    shown(&a.decision),
                    shown(&b.decision),
                    b.failure
                        .as_ref()
                        .map(|f| format!(" (failed: {f})"))
                        .unwrap_or_default()
                ));
            }
            (Some(a), None) => {
                report.verdict_changed |= a.decision != Decision::Continue;
                report
                    .differences
                    .push(format!("{at}: {} -> not called", shown(&a.decision)));
            }
            (None, Some(b)) => {
                report.verdict_changed |= b.decision != Decision::Continue;
                report
                    .differences
                    .push(format!("{at}: not called -> {}", shown(&b.decision)));
            }
            _ => {}
        }
    }
}

/// A decision in a line: its name, and the reply or reason.
fn shown(d: &Decision) -> String {
    match d {
        Decision::Reject { reply } | Decision::Tempfail { reply } => {
            format!(
                "{} \"{} {} {}\"",
                d.name(),
                reply.code,
                reply.enhanced,
                reply.text
            )
        }
        Decision::Quarantine { reason } => format!("quarantine \"{reason}\""),
        _ => d.name().to_string(),
    }
}

fn compare_outcomes(
    then: &MessageOutcome,
    now: &MessageOutcome,
    whole_set: bool,
    replayed: &BTreeMap<&str, &str>,
    report: &mut Replayed,
) {
    let symbols = |o: &MessageOutcome| -> Vec<String> {
        o.symbols
            .iter()
            .filter(|s| replayed.contains_key(s.plugin.as_str()))
            .map(|s| format!("{}:{}({:+.2})", s.plugin, s.name, s.score))
            .collect()
    };
    let (a, b) = (symbols(then), symbols(now));
    for s in a.iter().filter(|s| !b.contains(s)) {
        report.differences.push(format!("symbol gone: {s}"));
    }
    for s in b.iter().filter(|s| !a.contains(s)) {
        report.differences.push(format!("symbol new: {s}"));
    }
    if !whole_set {
        return;
    }
    if (then.score - now.score).abs() > 1e-9 {
        report
            .differences
            .push(format!("score: {:.2} -> {:.2}", then.score, now.score));
    }
    if then.spam != now.spam {
        report.verdict_changed = true;
        report
            .differences
            .push(format!("spam: {} -> {}", then.spam, now.spam));
    }
    if then.decision != now.decision {
        report.verdict_changed = true;
        report.differences.push(format!(
            "message: {} -> {}",
            shown(&then.decision),
            shown(&now.decision)
        ));
    }
    if then.add_headers != now.add_headers || then.remove_headers != now.remove_headers {
        let fields = |o: &MessageOutcome| {
            o.add_headers
                .iter()
                .map(|(n, v)| format!("+{n}: {v}"))
                .chain(o.remove_headers.iter().map(|n| format!("-{n}")))
                .collect::<Vec<_>>()
                .join(" | ")
        };
        report.differences.push(format!(
            "header edits: [{}] -> [{}]",
            fields(then),
            fields(now)
        ));
    }
}
