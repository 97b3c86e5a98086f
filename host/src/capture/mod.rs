//! Capture: transactions recorded for exact replay. With `[capture] enabled`, every
//! transaction's plugin run is written down as it happens ([`crate::pipeline::recording`]);
//! at its end the rules choose whether to keep it (a sample, a plugin's failure, a verdict, a
//! recipient domain, or the next N asked for from the console), and a writer thread puts the
//! kept ones in the capture directory, owner-only, within a count and a size. `sluice plugin
//! check --capture DIR` ([`replay`]) plays them back.
//!
//! May use: the pipeline's record format, the configuration, the owner-only file helpers and
//! the metrics. Used by the server (which offers it the records) and the console (which asks
//! for more).

pub mod replay;
mod retention;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwapOption;

use crate::config::{CaptureConfig, Config};
use crate::pipeline::recording::{Record, RecordSink, Step};

pub use retention::{RecordFile, list};

/// The rules in force, and where kept records go.
#[derive(Debug, Clone)]
struct Rules {
    settings: CaptureConfig,
    dir: PathBuf,
}

/// The server's capture: its rules (swapped on reload), the transactions asked for from the
/// console, and the writer.
#[derive(Debug)]
pub struct Capture {
    rules: ArcSwapOption<Rules>,
    on_demand: AtomicU64,
    writer: std::sync::mpsc::SyncSender<(Arc<Rules>, Record)>,
    kept: AtomicU64,
    dropped: AtomicU64,
}

/// Records waiting for the writer; past this, records are dropped (and counted) rather than
/// held in memory while the disk is slow.
const QUEUE: usize = 64;

impl Capture {
    /// A capture following `config`'s `[capture]`, with its writer thread.
    pub fn start(config: &Config) -> Arc<Capture> {
        let (writer, queue) = std::sync::mpsc::sync_channel::<(Arc<Rules>, Record)>(QUEUE);
        let capture = Arc::new(Capture {
            rules: ArcSwapOption::empty(),
            on_demand: AtomicU64::new(0),
            writer,
            kept: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        capture.configure(config);
        let spawned = std::thread::Builder::new()
            .name("sluice-capture".into())
            .spawn(move || {
                for (rules, record) in queue {
                    if let Err(e) = retention::keep(&rules.dir, &record, &rules.settings) {
                        tracing::warn!(id = %record.id, dir = %rules.dir.display(), "capture: the record could not be written: {e}");
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!("capture: no writer thread: {e}");
        }
        capture
    }

    /// Follows `config` from now on (a reload): on, off, other rules.
    pub fn configure(&self, config: &Config) {
        let rules = config.capture.enabled.then(|| {
            Arc::new(Rules {
                settings: config.capture.clone(),
                dir: config.paths().capture_dir,
            })
        });
        self.rules.store(rules);
    }

    /// Keeps the next `n` transactions whatever the rules say (the console's button); an
    /// error when capture is off.
    pub fn next(&self, n: u64) -> Result<u64, String> {
        if self.rules.load().is_none() {
            return Err("capture is off: set enabled = true in [capture] and reload".to_string());
        }
        Ok(self.on_demand.fetch_add(n, Ordering::Relaxed) + n)
    }

    /// What the console shows: on or off, the directory, the records there, the transactions
    /// still asked for, and how many were kept and dropped since start.
    pub fn status(&self) -> Status {
        let rules = self.rules.load_full();
        let records = rules.as_ref().map(|r| list(&r.dir)).unwrap_or_default();
        Status {
            enabled: rules.is_some(),
            dir: rules.as_ref().map(|r| r.dir.display().to_string()),
            records: records.len(),
            bytes: records.iter().map(|r| r.bytes).sum(),
            pending_on_demand: self.on_demand.load(Ordering::Relaxed),
            kept: self.kept.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    /// Takes one of the transactions asked for on demand, if any are left.
    fn take_on_demand(&self) -> bool {
        self.on_demand
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// The capture's state, for the console.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Status {
    /// `[capture] enabled`.
    pub enabled: bool,
    /// The directory.
    pub dir: Option<String>,
    /// Records in it.
    pub records: usize,
    /// Their size together.
    pub bytes: u64,
    /// Transactions still to be kept on demand.
    pub pending_on_demand: u64,
    /// Records kept since start.
    pub kept: u64,
    /// Records dropped since start because the writer was behind.
    pub dropped: u64,
}

/// Why `rules` keep `record`: the names of the rules it meets (none: it is not kept).
fn reasons(settings: &CaptureConfig, record: &Record) -> Vec<String> {
    let mut why = Vec::new();
    if crate::plugin::shadow::sampled(&record.id, "capture", settings.sample) {
        why.push("sample".to_string());
    }
    if settings.failures
        && let Some(c) = record.calls.iter().find(|c| c.failure.is_some())
    {
        why.push(format!("failure:{}", c.plugin));
    }
    if let Some(c) = record
        .calls
        .iter()
        .find(|c| settings.verdicts.iter().any(|v| v == c.decision.name()))
    {
        why.push(format!("verdict:{}", c.decision.name()));
    }
    if !settings.domains.is_empty()
        && let Some(d) = recipients(record).find_map(|address| {
            let domain = address.rsplit_once('@')?.1;
            settings
                .domains
                .iter()
                .find(|d| d.eq_ignore_ascii_case(domain))
        })
    {
        why.push(format!("domain:{d}"));
    }
    why
}

/// Every recipient address the record's steps name.
fn recipients(record: &Record) -> impl Iterator<Item = &str> {
    record.steps.iter().flat_map(|s| {
        let (list, one) = match s {
            Step::CheckRecipient {
                envelope,
                recipient,
            } => (&envelope.recipients[..], Some(recipient.address.as_str())),
            Step::CheckMessage { envelope, .. } => (&envelope.recipients[..], None),
            _ => (&[][..], None),
        };
        list.iter().map(|r| r.address.as_str()).chain(one)
    })
}

impl RecordSink for Capture {
    fn recording(&self) -> bool {
        self.rules.load().is_some()
    }

    fn offer(&self, mut record: Record) {
        let Some(rules) = self.rules.load_full() else {
            return;
        };
        // Nothing reached a plugin: nothing to replay.
        if record.calls.is_empty() {
            return;
        }
        record.why = reasons(&rules.settings, &record);
        if self.take_on_demand() {
            record.why.push("on-demand".to_string());
        }
        if record.why.is_empty() {
            return;
        }
        match self.writer.try_send((rules, record)) {
            Ok(()) => {
                self.kept.fetch_add(1, Ordering::Relaxed);
                crate::admin::metrics::get().capture("kept");
            }
            Err(
                std::sync::mpsc::TrySendError::Full((_, record))
                | std::sync::mpsc::TrySendError::Disconnected((_, record)),
            ) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                crate::admin::metrics::get().capture("dropped");
                tracing::warn!(id = %record.id, "capture: the writer is behind or gone; record dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Client, Decision, Envelope, Recipient, Sender};
    use crate::pipeline::recording::CallSummary;
    use crate::plugin::Hook;
    use std::os::unix::fs::PermissionsExt as _;

    fn record(decision: Decision, failure: Option<&str>, rcpt: &str) -> Record {
        let envelope = Envelope {
            sender: Sender {
                address: "a@example.org".into(),
                params: Vec::new(),
            },
            recipients: Vec::new(),
        };
        Record {
            version: 1,
            id: "T1".into(),
            started_ms: 0,
            why: Vec::new(),
            client: Client {
                listener: "smtp".into(),
                ip: [192, 0, 2, 1].into(),
                port: 1,
                helo: "h".into(),
                esmtp: true,
                tls: None,
                auth_user: None,
                trusted: false,
            },
            steps: vec![Step::CheckRecipient {
                envelope,
                recipient: Recipient {
                    address: rcpt.into(),
                    params: Vec::new(),
                    discarded: false,
                },
            }],
            plugins: Default::default(),
            calls: vec![CallSummary {
                hook: Hook::CheckRecipient,
                plugin: "p".into(),
                decision,
                failure: failure.map(str::to_string),
            }],
            outcome: None,
        }
    }

    #[test]
    fn each_rule_says_why_it_keeps_a_transaction() {
        let reject = Decision::Reject {
            reply: crate::smtp::reply::Reply::new(550, "5.7.1", "no"),
        };
        let rules = CaptureConfig {
            verdicts: vec!["reject".into()],
            domains: vec!["Example.NET".into()],
            ..CaptureConfig::default()
        };
        let plain = record(Decision::Continue, None, "b@example.com");
        assert!(reasons(&rules, &plain).is_empty());
        assert_eq!(
            reasons(&rules, &record(reject, None, "b@example.com")),
            ["verdict:reject"]
        );
        assert_eq!(
            reasons(
                &rules,
                &record(Decision::Continue, Some("trap"), "b@example.net")
            ),
            ["failure:p", "domain:Example.NET"]
        );
        let off = CaptureConfig {
            failures: false,
            ..CaptureConfig::default()
        };
        assert!(reasons(&off, &record(Decision::Continue, Some("trap"), "x@y")).is_empty());
        let all = CaptureConfig { sample: 1.0, ..off };
        assert_eq!(reasons(&all, &plain), ["sample"]);
    }

    #[test]
    fn records_are_private_and_the_oldest_go_first() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("capture");
        let mut record: Record = serde_json::from_value(serde_json::json!({
            "version": 1, "id": "../A/B", "started_ms": 5,
            "client": {"listener": "smtp", "ip": "192.0.2.1", "port": 1, "helo": "h",
                       "esmtp": true, "tls": null, "auth_user": null, "trusted": false},
            "steps": [], "plugins": {}, "calls": []
        }))
        .unwrap();
        let settings = CaptureConfig {
            max_records: 2,
            ..CaptureConfig::default()
        };
        for started in [30, 10, 20] {
            record.started_ms = started;
            retention::keep(&dir, &record, &settings).unwrap();
        }
        let names: Vec<String> = list(&dir)
            .iter()
            .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["000000000000020-___A_B.json", "000000000000030-___A_B.json"]
        );
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&list(&dir)[0].path), 0o600);
        // A size bound of 1 byte keeps nothing but the newest write's removal.
        retention::trim(&dir, 10, 1);
        assert!(list(&dir).is_empty());
        // A directory other users may enter is refused, and nothing is written there.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = retention::keep(&dir, &record, &settings).unwrap_err();
        assert!(err.to_string().contains("mode 755"), "{err}");
        assert!(list(&dir).is_empty());
    }
}
