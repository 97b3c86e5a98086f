//! One transaction's plugin run written down ([`Record`]), so that it can be replayed exactly:
//! the client, each stage's input in order, what every plugin got from the host (its
//! [`Tape`]), and what the plugins answered. A [`RecordSink`] (the server's capture) is
//! offered each record at the end of its transaction and keeps it or not; [`Taps`] hand each
//! plugin instance of a transaction the tap it records into or plays back from.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::envelope::{Client, Decision, Envelope, Recipient, Sender};
use crate::plugin::Hook;
use crate::plugin::tape::{PluginTap, Tape};
use crate::sender_auth::Results;
use crate::store::KvStore;

use super::scoring::MessageOutcome;

/// The version of the record format this Sluice writes and reads.
pub const RECORD_VERSION: u32 = 1;

/// One transaction's plugin run, as a capture keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// [`RECORD_VERSION`].
    pub version: u32,
    /// The transaction's id (the queue id).
    pub id: String,
    /// When the transaction began, milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// Why it was kept (the capture rules that chose it).
    #[serde(default)]
    pub why: Vec<String>,
    /// The client and its session.
    pub client: Client,
    /// Each stage's input, in the order the plugins got them.
    pub steps: Vec<Step>,
    /// Per plugin called: its file's digest and what it got from the host.
    pub plugins: BTreeMap<String, PluginFacts>,
    /// Every call and its decision, in order.
    pub calls: Vec<CallSummary>,
    /// What `check-message` made of the message, when it was reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<MessageOutcome>,
}

/// A stage's input.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum Step {
    /// The sender-authentication results the following hooks see.
    Authentication {
        /// The results (none: the host did not verify this transaction).
        results: Option<Results>,
    },
    /// `verify-sender`.
    VerifySender {
        /// MAIL FROM.
        sender: Sender,
    },
    /// `check-recipient`.
    CheckRecipient {
        /// The envelope so far.
        envelope: Envelope,
        /// The recipient asked about.
        recipient: Recipient,
    },
    /// `check-message`.
    CheckMessage {
        /// The envelope.
        envelope: Envelope,
        /// The message as the plugins got it (base64 in the file).
        #[serde(with = "base64_bytes")]
        message: Vec<u8>,
    },
}

/// Bytes as a base64 string (a message is kept whole, whatever its encoding).
mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// What one plugin was, and what it got from the host.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PluginFacts {
    /// The SHA-256 of its file.
    pub sha256: String,
    /// Its version, as it says.
    pub version: String,
    /// Its clock readings, DNS answers and first `kv` values.
    #[serde(flatten)]
    pub tape: Tape,
}

/// One plugin call and its decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallSummary {
    /// The hook.
    pub hook: Hook,
    /// The plugin.
    pub plugin: String,
    /// Its decision (after its failure policy, when it failed).
    pub decision: Decision,
    /// How it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

impl From<&super::CallRecord> for CallSummary {
    fn from(c: &super::CallRecord) -> Self {
        CallSummary {
            hook: c.hook,
            plugin: c.plugin.clone(),
            decision: c.decision.clone(),
            failure: c.failure.as_ref().map(|f| f.to_string()),
        }
    }
}

/// Where records go at the end of their transactions: the capture, which keeps those its
/// rules choose.
pub trait RecordSink: Send + Sync + std::fmt::Debug {
    /// True while transactions are to be recorded (capture is on).
    fn recording(&self) -> bool;
    /// A finished transaction's record.
    fn offer(&self, record: Record);
}

/// The taps of one transaction's plugin instances, one per plugin (each instance of a plugin
/// in the transaction shares it): all recording, or all playing a record back.
pub struct Taps {
    replay: Option<(BTreeMap<String, Tape>, Option<KvStore>)>,
    by_plugin: Mutex<BTreeMap<String, PluginTap>>,
}

impl Taps {
    /// Taps that record.
    pub fn recording() -> Taps {
        Taps {
            replay: None,
            by_plugin: Mutex::default(),
        }
    }

    /// Taps that play `record` back, each plugin's `kv` calls going to `scratch` (filled here
    /// with the values the record's plugins found, under each plugin's namespace).
    pub async fn replaying(record: &Record, scratch: Option<KvStore>) -> Result<Taps, String> {
        if let Some(store) = &scratch {
            for (name, facts) in &record.plugins {
                for entry in &facts.tape.kv {
                    let Some(value) = entry.bytes() else { continue };
                    let key = format!("{name}:{}", entry.key).into_bytes();
                    store
                        .set(key, value, crate::store::MAX_TTL_SECS)
                        .await
                        .map_err(|e| format!("filling the scratch store: {e}"))?;
                }
            }
        }
        let tapes = record
            .plugins
            .iter()
            .map(|(name, facts)| (name.clone(), facts.tape.clone()))
            .collect();
        Ok(Taps {
            replay: Some((tapes, scratch)),
            by_plugin: Mutex::default(),
        })
    }

    /// The tap of plugin `name` (made on its first instance).
    pub fn tap(&self, name: &str) -> PluginTap {
        let mut by_plugin = self
            .by_plugin
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        by_plugin
            .entry(name.to_string())
            .or_insert_with(|| match &self.replay {
                None => PluginTap::record(),
                Some((tapes, scratch)) => PluginTap::replay(
                    tapes.get(name).cloned().unwrap_or_default(),
                    scratch.clone(),
                ),
            })
            .clone()
    }

    /// What each plugin got, as recorded.
    pub fn tapes(&self) -> BTreeMap<String, Tape> {
        self.by_plugin
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, tap)| (name.clone(), tap.tape()))
            .collect()
    }
}

/// A transaction being recorded: the record so far, and where it goes at the end.
pub(super) struct Recording {
    pub(super) sink: Arc<dyn RecordSink>,
    pub(super) record: Record,
}

impl Recording {
    /// Starts the record of `client`'s transaction `id`.
    pub(super) fn start(sink: Arc<dyn RecordSink>, client: &Client, id: &str) -> Recording {
        let started_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Recording {
            sink,
            record: Record {
                version: RECORD_VERSION,
                id: id.to_string(),
                started_ms,
                why: Vec::new(),
                client: client.clone(),
                steps: Vec::new(),
                plugins: BTreeMap::new(),
                calls: Vec::new(),
                outcome: None,
            },
        }
    }

    /// Notes a `check-message` step.
    pub(super) fn message(&mut self, envelope: &Envelope, message: &[u8]) {
        self.record.steps.push(Step::CheckMessage {
            envelope: envelope.clone(),
            message: message.to_vec(),
        });
    }
}
