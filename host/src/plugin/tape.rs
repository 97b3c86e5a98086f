//! What one plugin got from the host during one transaction, kept for a capture and given
//! back on replay: each clock reading (`host.now`), each DNS answer, and the value each `kv`
//! key had when the plugin first touched it. Replayed, the same plugin version sees the same
//! inputs and so gives the same verdicts, whatever the resolver and the store say today.
//!
//! A [`PluginTap`] is handed to an instance when it is made: `Record` adds to a tape,
//! `Replay` answers from one (the clock and DNS from the tape, `kv` from a scratch store
//! filled with the tape's first values, so the plugin's writes change nothing real).

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use hickory_resolver::proto::rr::rdata::{MX, PTR, TXT};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use serde::{Deserialize, Serialize};

use super::bindings::v0_1::sluice::filter::dns::LookupError;
use super::capabilities::records::Lookup;
use crate::store::KvStore;

/// What one plugin got from the host in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tape {
    /// Every reading of the clock (`host.now`), in milliseconds since the Unix epoch, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clock: Vec<u64>,
    /// Every reading of WASI's wall clock (what `time.time()` in Python and `Date.now()` in
    /// JavaScript read), in nanoseconds since the Unix epoch, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wall_clock: Vec<u64>,
    /// Every DNS answer, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<DnsEntry>,
    /// Each key the plugin touched, with the value it had before (none: absent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kv: Vec<KvEntry>,
}

/// One DNS answer a plugin got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsEntry {
    /// The name asked, fully qualified, lower case (`2.0.0.127.zen.example.`).
    pub name: String,
    /// `A`, `AAAA`, `TXT`, `MX` or `PTR`.
    #[serde(rename = "type")]
    pub kind: String,
    /// What it got.
    pub answer: DnsAnswer,
}

/// A DNS answer as the plugin saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DnsAnswer {
    /// Records: addresses, texts, `PREFERENCE EXCHANGE` for MX, names for PTR.
    Records(Vec<String>),
    /// The name does not exist.
    Nxdomain,
    /// The name exists without records of the type.
    NoRecords,
    /// No answer now (timeout, server failure, a budget spent).
    Temporary(String),
    /// The question was not valid.
    Invalid(String),
}

/// One `kv` key a plugin touched, and its value before the plugin's first call on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvEntry {
    /// The plugin's key (without the namespace the host adds).
    pub key: String,
    /// The value, base64 (none: the key was absent).
    pub value: Option<String>,
}

impl KvEntry {
    /// The value's bytes (none when absent or not base64).
    pub fn bytes(&self) -> Option<Vec<u8>> {
        let v = self.value.as_deref()?;
        base64::engine::general_purpose::STANDARD.decode(v).ok()
    }
}

/// What an instance does with the host's answers: records them, or gives recorded ones back.
#[derive(Clone)]
pub enum PluginTap {
    /// Adds every answer to the tape.
    Record(Arc<Mutex<Tape>>),
    /// Answers from a recorded tape.
    Replay(Arc<Replay>),
}

/// A recorded tape being played back to one plugin (every instance of it in the transaction).
pub struct Replay {
    tape: Tape,
    /// The scratch store the plugin's `kv` calls go to, filled with the tape's values.
    store: Option<KvStore>,
    cursor: Mutex<Cursor>,
}

#[derive(Default)]
struct Cursor {
    clock: usize,
    wall_clock: usize,
    dns_used: Vec<bool>,
}

/// Which clock a reading is of.
#[derive(Clone, Copy)]
enum Reading {
    /// `host.now`.
    Host,
    /// WASI's wall clock.
    Wall,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PluginTap {
    /// A fresh tape to record into.
    pub fn record() -> PluginTap {
        PluginTap::Record(Arc::default())
    }

    /// Plays `tape` back, with `store` as the plugin's scratch key-value store.
    pub fn replay(tape: Tape, store: Option<KvStore>) -> PluginTap {
        PluginTap::Replay(Arc::new(Replay {
            cursor: Mutex::new(Cursor {
                clock: 0,
                wall_clock: 0,
                dns_used: vec![false; tape.dns.len()],
            }),
            tape,
            store,
        }))
    }

    /// What was recorded (empty for a replay).
    pub fn tape(&self) -> Tape {
        match self {
            PluginTap::Record(t) => lock(t).clone(),
            PluginTap::Replay(_) => Tape::default(),
        }
    }

    /// The time for `host.now`, in milliseconds: the system's, noted; or the next recorded
    /// reading (the last one again once they are used up, the system's when there were none).
    pub fn now_ms(&self, system: impl FnOnce() -> u64) -> u64 {
        self.reading(Reading::Host, system)
    }

    /// The time for WASI's wall clock, in nanoseconds: as [`now_ms`](Self::now_ms), from its
    /// own readings.
    pub fn wall_ns(&self, system: impl FnOnce() -> u64) -> u64 {
        self.reading(Reading::Wall, system)
    }

    fn reading(&self, which: Reading, system: impl FnOnce() -> u64) -> u64 {
        match self {
            PluginTap::Record(t) => {
                let now = system();
                let mut t = lock(t);
                match which {
                    Reading::Host => t.clock.push(now),
                    Reading::Wall => t.wall_clock.push(now),
                }
                now
            }
            PluginTap::Replay(r) => {
                let mut c = lock(&r.cursor);
                let c = &mut *c;
                let (readings, cursor) = match which {
                    Reading::Host => (&r.tape.clock, &mut c.clock),
                    Reading::Wall => (&r.tape.wall_clock, &mut c.wall_clock),
                };
                let i = (*cursor).min(readings.len().saturating_sub(1));
                *cursor += 1;
                readings.get(i).copied().unwrap_or_else(system)
            }
        }
    }

    /// Notes a DNS answer (recording only).
    pub fn dns_answered(&self, fqdn: &str, kind: RecordType, found: &Lookup) {
        if let PluginTap::Record(t) = self {
            lock(t).dns.push(DnsEntry {
                name: fqdn.to_ascii_lowercase(),
                kind: kind.to_string(),
                answer: answer_of(found),
            });
        }
    }

    /// The recorded answer for `fqdn` and `kind` when replaying: the first one not given yet,
    /// else the last given; `temporary` when the tape has none (the plugin asks something
    /// the recorded version did not). `None` when recording.
    pub fn dns_replayed(&self, fqdn: &str, kind: RecordType) -> Option<Lookup> {
        let PluginTap::Replay(r) = self else {
            return None;
        };
        let (name, kind_text) = (fqdn.to_ascii_lowercase(), kind.to_string());
        let mut c = lock(&r.cursor);
        let matching: Vec<usize> = (0..r.tape.dns.len())
            .filter(|&i| r.tape.dns[i].name == name && r.tape.dns[i].kind == kind_text)
            .collect();
        let Some(&i) = matching
            .iter()
            .find(|&&i| !c.dns_used[i])
            .or(matching.last())
        else {
            return Some(Err(LookupError::Temporary(format!(
                "{name} {kind_text} is not in the capture being replayed"
            ))));
        };
        c.dns_used[i] = true;
        Some(lookup_of(&r.tape.dns[i].answer, kind))
    }

    /// True when `key`'s first value is still to be noted (recording, first touch).
    pub fn kv_first_touch(&self, key: &str) -> bool {
        match self {
            PluginTap::Record(t) => !lock(t).kv.iter().any(|e| e.key == key),
            PluginTap::Replay(_) => false,
        }
    }

    /// Notes `key`'s value before the plugin's first call on it.
    pub fn kv_first_value(&self, key: &str, value: Option<&[u8]>) {
        if let PluginTap::Record(t) = self {
            let mut t = lock(t);
            if !t.kv.iter().any(|e| e.key == key) {
                t.kv.push(KvEntry {
                    key: key.to_string(),
                    value: value.map(|v| base64::engine::general_purpose::STANDARD.encode(v)),
                });
            }
        }
    }

    /// The scratch store a replay's `kv` calls go to.
    pub fn replay_store(&self) -> Option<&KvStore> {
        match self {
            PluginTap::Replay(r) => r.store.as_ref(),
            PluginTap::Record(_) => None,
        }
    }
}

/// WASI's wall clock for a tapped instance.
pub struct WallClock(pub PluginTap);

impl wasmtime_wasi::HostWallClock for WallClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(1)
    }

    fn now(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.0.wall_ns(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        }))
    }
}

/// A lookup's result as the tape keeps it.
fn answer_of(found: &Lookup) -> DnsAnswer {
    match found {
        Ok(records) => DnsAnswer::Records(records.iter().filter_map(record_text).collect()),
        Err(LookupError::Nxdomain) => DnsAnswer::Nxdomain,
        Err(LookupError::NoRecords) => DnsAnswer::NoRecords,
        Err(LookupError::Temporary(t)) => DnsAnswer::Temporary(t.clone()),
        Err(LookupError::Invalid(t)) => DnsAnswer::Invalid(t.clone()),
    }
}

/// A record as text, in the form the plugin receives it (a TXT record's strings joined).
fn record_text(r: &RData) -> Option<String> {
    use super::capabilities::records::{address, host_name, text};
    match r {
        RData::PTR(p) => Some(host_name(&p.0)),
        RData::MX(m) => Some(format!("{} {}", m.preference, host_name(&m.exchange))),
        other => address(other).or_else(|| text(other)),
    }
}

/// A kept answer back as a lookup of `kind`; records that do not read as `kind` are left out.
fn lookup_of(answer: &DnsAnswer, kind: RecordType) -> Lookup {
    match answer {
        DnsAnswer::Records(texts) => Ok(texts.iter().filter_map(|t| record_of(t, kind)).collect()),
        DnsAnswer::Nxdomain => Err(LookupError::Nxdomain),
        DnsAnswer::NoRecords => Err(LookupError::NoRecords),
        DnsAnswer::Temporary(t) => Err(LookupError::Temporary(t.clone())),
        DnsAnswer::Invalid(t) => Err(LookupError::Invalid(t.clone())),
    }
}

fn record_of(text: &str, kind: RecordType) -> Option<RData> {
    let name = |t: &str| Name::from_ascii(t).ok();
    Some(match kind {
        RecordType::A | RecordType::AAAA => match text.parse::<IpAddr>().ok()? {
            IpAddr::V4(a) => RData::A(a.into()),
            IpAddr::V6(a) => RData::AAAA(a.into()),
        },
        RecordType::TXT => RData::TXT(TXT::new(vec![text.to_string()])),
        RecordType::PTR => RData::PTR(PTR(name(text)?)),
        RecordType::MX => {
            let (preference, exchange) = text.split_once(' ')?;
            RData::MX(MX::new(preference.parse().ok()?, name(exchange)?))
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::rr::rdata::{A, AAAA};

    #[test]
    fn answers_come_back_as_they_were_given() {
        let rec = PluginTap::record();
        let given: Vec<(&str, RecordType, Lookup)> = vec![
            (
                "2.0.0.127.zen.example.",
                RecordType::A,
                Ok(vec![RData::A(A::new(127, 0, 0, 2))]),
            ),
            (
                "v6.example.",
                RecordType::AAAA,
                Ok(vec![RData::AAAA(AAAA::new(
                    0x2001, 0xdb8, 0, 0, 0, 0, 0, 1,
                ))]),
            ),
            (
                "txt.example.",
                RecordType::TXT,
                Ok(vec![RData::TXT(TXT::new(vec![
                    "v=spf1 ".to_string(),
                    "-all".to_string(),
                ]))]),
            ),
            (
                "example.",
                RecordType::MX,
                Ok(vec![RData::MX(MX::new(
                    10,
                    Name::from_ascii("mx.example").unwrap(),
                ))]),
            ),
            ("gone.example.", RecordType::A, Err(LookupError::Nxdomain)),
            (
                "slow.example.",
                RecordType::A,
                Err(LookupError::Temporary("timeout".into())),
            ),
        ];
        for (name, kind, found) in &given {
            rec.dns_answered(name, *kind, found);
        }
        assert_eq!(rec.now_ms(|| 1_000), 1_000);
        assert_eq!(rec.now_ms(|| 1_007), 1_007);
        assert_eq!(rec.wall_ns(|| 5_000_000_001), 5_000_000_001);
        assert!(rec.kv_first_touch("seen"));
        rec.kv_first_value("seen", Some(b"3"));
        rec.kv_first_value("seen", Some(b"4"));
        assert!(!rec.kv_first_touch("seen"));
        let tape = rec.tape();
        assert_eq!(tape.kv.len(), 1);
        assert_eq!(tape.kv[0].bytes().as_deref(), Some(&b"3"[..]));

        // Through JSON, as a capture file keeps it.
        let tape: Tape = serde_json::from_str(&serde_json::to_string(&tape).unwrap()).unwrap();
        let play = PluginTap::replay(tape, None);
        for (name, kind, found) in &given {
            let back = play.dns_replayed(&name.to_uppercase(), *kind).unwrap();
            let found = found.clone().map(|rs| {
                rs.iter()
                    .map(|r| match r {
                        // The plugin sees a TXT record's strings joined: so does the replay.
                        RData::TXT(_) => RData::TXT(TXT::new(vec![record_text(r).unwrap()])),
                        other => other.clone(),
                    })
                    .collect()
            });
            assert_eq!(back, found, "{name}");
        }
        assert!(matches!(
            play.dns_replayed("other.example.", RecordType::A),
            Some(Err(LookupError::Temporary(t))) if t.contains("not in the capture")
        ));
        assert_eq!(play.now_ms(|| 9), 1_000);
        assert_eq!(play.now_ms(|| 9), 1_007);
        assert_eq!(play.now_ms(|| 9), 1_007, "the last reading once used up");
        assert_eq!(play.wall_ns(|| 9), 5_000_000_001);
        assert_eq!(PluginTap::replay(Tape::default(), None).now_ms(|| 9), 9);
    }
}
