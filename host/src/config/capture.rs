//! `[capture]`: which transactions are recorded for exact replay (`sluice plugin check
//! --capture DIR`), where, and how many are kept. Off by default: a record holds a whole
//! message and what the plugins learnt about it.

use std::path::PathBuf;

use serde::Deserialize;

use super::Problems;

/// The decisions a `verdicts` rule may name.
pub const CAPTURE_VERDICTS: [&str; 6] = [
    "continue",
    "accept",
    "reject",
    "tempfail",
    "discard",
    "quarantine",
];

/// `[capture]`: records of chosen transactions, for `sluice plugin check --capture`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CaptureConfig {
    /// Records transactions at all (also those asked for from the console). Default false.
    pub enabled: bool,
    /// Where records go (owner-only); default `<data_dir>/capture`.
    pub dir: Option<PathBuf>,
    /// The share of all transactions kept, 0 to 1 (chosen by transaction id).
    pub sample: f64,
    /// Keep every transaction in which a plugin failed (trap, deadline, memory, bad answer).
    pub failures: bool,
    /// Keep every transaction in which a plugin decided one of these (`reject`, `tempfail`,
    /// `quarantine`, `discard`, `accept`, `continue`).
    pub verdicts: Vec<String>,
    /// Keep every transaction with a recipient in one of these domains.
    pub domains: Vec<String>,
    /// The most records kept; the oldest go first.
    pub max_records: u64,
    /// The most the records may take on disk together (MiB); the oldest go first.
    pub max_mb: u64,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            enabled: false,
            dir: None,
            sample: 0.0,
            failures: true,
            verdicts: Vec::new(),
            domains: Vec::new(),
            max_records: 1000,
            max_mb: 256,
        }
    }
}

impl CaptureConfig {
    pub(super) fn validate(&self, p: &mut Problems) {
        if !(0.0..=1.0).contains(&self.sample) {
            p.add(
                "capture.sample",
                format_args!("{} is not a share between 0 and 1", self.sample),
            );
        }
        p.one_of("capture.verdicts", &self.verdicts, &CAPTURE_VERDICTS);
        p.domains("capture.domains", &self.domains);
        p.range("capture.max_records", self.max_records, 1, 1_000_000);
        p.range("capture.max_mb", self.max_mb, 1, 1 << 20);
        if let Some(dir) = &self.dir
            && dir.as_os_str().is_empty()
        {
            p.add("capture.dir", "is empty");
        }
    }
}
