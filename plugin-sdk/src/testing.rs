//! Test helpers for running a plugin natively with `cargo test`, without Sluice.
//!
//! ```ignore
//! sluice_plugin_sdk::testing::set_config(&[("threshold", ConfigValue::Integer(5))]);
//! let settings = MySettings::parse(&Config).unwrap();
//! let verdict = MyPlugin::default().verify_sender(&settings, &session(), &address("a@b.test"));
//! ```
//! State is per thread, so parallel tests do not see each other's settings.

use crate::bindings::sluice::filter::authentication::{ArcCheck, AuthResults};
use crate::bindings::sluice::filter::host::Level;
use crate::bindings::sluice::filter::types::{Address, ConfigValue, Session};

/// Replaces the configuration that [`crate::Config`] reads on this thread.
pub fn set_config(entries: &[(&str, ConfigValue)]) {
    native::CONFIG.with(|c| {
        *c.borrow_mut() = entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
    });
}

/// Sets what [`crate::authentication`] returns on this thread.
pub fn set_authentication(results: Option<AuthResults>) {
    native::AUTH.with(|a| *a.borrow_mut() = results);
}

/// Sets what [`crate::arc`] returns on this thread.
pub fn set_arc(check: Option<ArcCheck>) {
    native::ARC.with(|a| *a.borrow_mut() = check);
}

/// Fixes the clock [`crate::now_ms`] reads on this thread (`None`: the system clock again). The
/// native key-value store expires keys by this clock.
pub fn set_now(ms: Option<u64>) {
    native::NOW.with(|n| n.set(ms));
}

/// Empties this thread's native key-value store.
pub fn clear_kv() {
    native::KV.with(|k| k.borrow_mut().clear());
}

/// Sets the answer [`crate::dns`] gives on this thread for `kind` (`"a"`, `"aaaa"`, `"txt"`,
/// `"ptr"` or `"mx"` — for `"mx"`, records are `"PREFERENCE EXCHANGE"`) lookups of `name`
/// (for `"ptr"`, the address). A name with no answer set is NXDOMAIN.
pub fn set_dns(kind: &str, name: &str, answer: Result<Vec<String>, crate::dns::LookupError>) {
    native::DNS.with(|d| {
        d.borrow_mut().insert(
            (kind.to_string(), name.trim_end_matches('.').to_string()),
            answer,
        )
    });
}

/// Forgets every DNS answer set on this thread, and how many lookups were made.
pub fn clear_dns() {
    native::DNS.with(|d| d.borrow_mut().clear());
    native::DNS_LOOKUPS.with(|n| n.set(0));
}

/// How many DNS lookups the plugin made on this thread since [`clear_dns`].
pub fn dns_lookups() -> u32 {
    native::DNS_LOOKUPS.with(std::cell::Cell::get)
}

/// Returns and clears the lines the plugin logged on this thread.
pub fn take_logs() -> Vec<(Level, String)> {
    native::LOGS.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

/// A plain-text session from 192.0.2.1 (a documentation address) for tests.
pub fn session() -> Session {
    Session {
        listener: "test".to_string(),
        client_ip: "192.0.2.1".to_string(),
        client_port: 40000,
        helo: "client.example".to_string(),
        tls: None,
        auth_user: None,
        transaction_id: "TEST".to_string(),
    }
}

/// An address without ESMTP parameters.
pub fn address(address: &str) -> Address {
    Address {
        address: address.to_string(),
        params: Vec::new(),
    }
}

/// An envelope from `sender` to `recipients` (addresses without parameters).
pub fn envelope(sender: &str, recipients: &[&str]) -> crate::Envelope {
    crate::Envelope {
        sender: address(sender),
        recipients: recipients.iter().map(|r| address(r)).collect(),
    }
}

/// A message with `headers` (name, value) and `body`, as Sluice hands it to `check_message`:
/// CRLF line endings, the header fields also parsed.
pub fn message(headers: &[(&str, &str)], body: &str) -> crate::Message {
    let mut raw = String::new();
    for (name, value) in headers {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    raw.push_str("\r\n");
    raw.push_str(&body.replace("\r\n", "\n").replace('\n', "\r\n"));
    crate::Message {
        headers: headers
            .iter()
            .map(|(n, v)| crate::Header {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
        raw: raw.into_bytes(),
    }
}

/// What the message view answers in native tests ([`set_view`]): set the fields a test needs.
#[derive(Debug, Clone)]
pub struct View {
    /// `view::parts`.
    pub parts: Vec<crate::view::Part>,
    /// The decoded text of text and HTML parts, by part index (`view::text`).
    pub texts: std::collections::BTreeMap<u32, String>,
    /// `view::body_text`.
    pub body_text: String,
    /// `view::attachments`.
    pub attachments: Vec<crate::view::Attachment>,
    /// Decoded bytes by part index (`view::attachment_bytes`).
    pub bytes: std::collections::BTreeMap<u32, Vec<u8>>,
    /// `view::links`.
    pub links: Vec<crate::view::Link>,
    /// `view::summary`.
    pub summary: crate::view::HeaderSummary,
    /// The raw message (`view::raw_size`, `view::raw_slice`).
    pub raw: Vec<u8>,
    /// `view::limits_hit`.
    pub limits_hit: Vec<String>,
}

impl Default for View {
    fn default() -> Self {
        View {
            parts: Vec::new(),
            texts: Default::default(),
            body_text: String::new(),
            attachments: Vec::new(),
            bytes: Default::default(),
            links: Vec::new(),
            summary: crate::view::HeaderSummary {
                from: Vec::new(),
                to: Vec::new(),
                subject: None,
                date: None,
            },
            raw: Vec::new(),
            limits_hit: Vec::new(),
        }
    }
}

/// Sets what [`crate::view`] answers in this thread (the host parses the real message; a
/// native test says what the parse found).
pub fn set_view(view: View) {
    native::VIEW.with(|v| *v.borrow_mut() = view);
}

#[doc(hidden)]
pub mod native {
    //! The native stand-ins for the host's imports.
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::collections::BTreeMap;

    type DnsAnswers = BTreeMap<(String, String), Result<Vec<String>, crate::dns::LookupError>>;

    thread_local! {
        pub(crate) static NOW: Cell<Option<u64>> = const { Cell::new(None) };
        pub(crate) static KV: RefCell<BTreeMap<String, (Vec<u8>, u64)>> = const { RefCell::new(BTreeMap::new()) };
        pub(crate) static DNS: RefCell<DnsAnswers> = const { RefCell::new(BTreeMap::new()) };
        pub(crate) static DNS_LOOKUPS: Cell<u32> = const { Cell::new(0) };
        pub(crate) static CONFIG: RefCell<BTreeMap<String, ConfigValue>> = const { RefCell::new(BTreeMap::new()) };
        pub(crate) static LOGS: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
        pub(crate) static AUTH: RefCell<Option<AuthResults>> = const { RefCell::new(None) };
        pub(crate) static ARC: RefCell<Option<ArcCheck>> = const { RefCell::new(None) };
        pub(crate) static VIEW: RefCell<super::View> = RefCell::new(super::View::default());
    }

    /// The results set by [`super::set_authentication`].
    pub fn authentication() -> Option<AuthResults> {
        AUTH.with(|a| a.borrow().clone())
    }

    /// The verdict set by [`super::set_arc`].
    pub fn arc() -> Option<ArcCheck> {
        ARC.with(|a| a.borrow().clone())
    }

    /// Records a log line.
    pub fn log(level: Level, message: &str) {
        LOGS.with(|l| l.borrow_mut().push((level, message.to_string())));
    }
    /// Reads a setting.
    pub fn get_config(key: &str) -> Option<ConfigValue> {
        CONFIG.with(|c| c.borrow().get(key).cloned())
    }
    /// Lists the settings' keys.
    pub fn config_keys() -> Vec<String> {
        CONFIG.with(|c| c.borrow().keys().cloned().collect())
    }
    /// The clock fixed by [`super::set_now`], else the system clock.
    pub fn now_ms() -> u64 {
        if let Some(ms) = NOW.with(Cell::get) {
            return ms;
        }
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    /// The key-value store: a map per thread, each entry with its expiry (0: none).
    pub mod kv {
        use super::{KV, now_ms};

        fn expiry(ttl_secs: u32) -> u64 {
            if ttl_secs == 0 {
                0
            } else {
                now_ms() + u64::from(ttl_secs) * 1000
            }
        }

        fn live(key: &str) -> Option<(Vec<u8>, u64)> {
            let now = now_ms();
            KV.with(|k| {
                let mut k = k.borrow_mut();
                match k.get(key) {
                    Some((_, e)) if *e != 0 && *e <= now => {
                        k.remove(key);
                        None
                    }
                    other => other.cloned(),
                }
            })
        }

        fn check(key: &str) {
            assert!(
                !key.is_empty() && key.len() <= 256,
                "kv: a key has 1 to 256 bytes, this one {}",
                key.len()
            );
        }

        /// `kv.get`.
        pub fn get(key: &str) -> Option<Vec<u8>> {
            check(key);
            live(key).map(|(v, _)| v)
        }
        /// `kv.set`.
        pub fn set(key: &str, value: &[u8], ttl_secs: u32) {
            check(key);
            KV.with(|k| {
                k.borrow_mut()
                    .insert(key.to_string(), (value.to_vec(), expiry(ttl_secs)))
            });
        }
        /// `kv.increment`.
        pub fn increment(key: &str, delta: i64, ttl_secs: u32) -> i64 {
            check(key);
            let (new, expires) = match live(key) {
                Some((v, e)) => {
                    let old: i64 = std::str::from_utf8(&v)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .expect("kv.increment: the key holds a value that is not a counter");
                    (old.checked_add(delta).expect("kv.increment: overflow"), e)
                }
                None => (delta, expiry(ttl_secs)),
            };
            KV.with(|k| {
                k.borrow_mut()
                    .insert(key.to_string(), (new.to_string().into_bytes(), expires))
            });
            new
        }
        /// `kv.delete`.
        pub fn delete(key: &str) -> bool {
            check(key);
            let was = live(key).is_some();
            KV.with(|k| k.borrow_mut().remove(key));
            was
        }
        /// `kv.compare-and-set`.
        pub fn compare_and_set(
            key: &str,
            expected: Option<&[u8]>,
            value: &[u8],
            ttl_secs: u32,
        ) -> bool {
            check(key);
            let current = live(key).map(|(v, _)| v);
            if current.as_deref() != expected {
                return false;
            }
            set(key, value, ttl_secs);
            true
        }
    }

    /// DNS answers set by [`super::set_dns`].
    /// The message view: what [`super::set_view`] set, answered as the host would.
    pub mod view {
        use super::VIEW;
        use crate::view::{Attachment, HeaderSummary, Link, Part, PartKind};

        fn with<T>(f: impl FnOnce(&super::super::View) -> T) -> T {
            VIEW.with(|v| f(&v.borrow()))
        }
        fn slice(bytes: &[u8], offset: u64, length: u32) -> Vec<u8> {
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let end = start
                .saturating_add(length.min(1 << 20) as usize)
                .min(bytes.len());
            bytes[start..end].to_vec()
        }
        /// `message-view.parts`.
        pub fn parts() -> Vec<Part> {
            with(|v| v.parts.clone())
        }
        /// `message-view.text`.
        pub fn text(part: u32) -> Option<String> {
            with(|v| {
                let p = v.parts.get(part as usize)?;
                matches!(p.kind, PartKind::Text | PartKind::Html)
                    .then(|| v.texts.get(&part).cloned())
                    .flatten()
            })
        }
        /// `message-view.visible-text`: natively, the text as set (no HTML is taken apart).
        pub fn visible_text(part: u32) -> Option<String> {
            text(part)
        }
        /// `message-view.body-text`.
        pub fn body_text() -> String {
            with(|v| v.body_text.clone())
        }
        /// `message-view.attachments`.
        pub fn attachments() -> Vec<Attachment> {
            with(|v| v.attachments.clone())
        }
        /// `message-view.attachment-bytes`.
        pub fn attachment_bytes(part: u32, offset: u64, length: u32) -> Option<Vec<u8>> {
            with(|v| v.bytes.get(&part).map(|b| slice(b, offset, length)))
        }
        /// `message-view.links`.
        pub fn links() -> Vec<Link> {
            with(|v| v.links.clone())
        }
        /// `message-view.summary`.
        pub fn summary() -> HeaderSummary {
            with(|v| v.summary.clone())
        }
        /// `message-view.raw-size`.
        pub fn raw_size() -> u64 {
            with(|v| v.raw.len() as u64)
        }
        /// `message-view.raw-slice`.
        pub fn raw_slice(offset: u64, length: u32) -> Vec<u8> {
            with(|v| slice(&v.raw, offset, length))
        }
        /// `message-view.limits-hit`.
        pub fn limits_hit() -> Vec<String> {
            with(|v| v.limits_hit.clone())
        }
    }

    pub mod dns {
        use super::{DNS, DNS_LOOKUPS};
        use crate::dns::{LookupError, Mx};

        fn answer(kind: &str, name: &str) -> Result<Vec<String>, LookupError> {
            DNS_LOOKUPS.with(|n| n.set(n.get() + 1));
            DNS.with(|d| {
                d.borrow()
                    .get(&(kind.to_string(), name.trim_end_matches('.').to_string()))
                    .cloned()
                    .unwrap_or(Err(LookupError::Nxdomain))
            })
        }
        /// `dns.lookup-a`.
        pub fn lookup_a(name: &str) -> Result<Vec<String>, LookupError> {
            answer("a", name)
        }
        /// `dns.lookup-aaaa`.
        pub fn lookup_aaaa(name: &str) -> Result<Vec<String>, LookupError> {
            answer("aaaa", name)
        }
        /// `dns.lookup-txt`.
        pub fn lookup_txt(name: &str) -> Result<Vec<String>, LookupError> {
            answer("txt", name)
        }
        /// `dns.lookup-ptr`.
        pub fn lookup_ptr(address: &str) -> Result<Vec<String>, LookupError> {
            answer("ptr", address)
        }
        /// `dns.lookup-mx`.
        pub fn lookup_mx(name: &str) -> Result<Vec<Mx>, LookupError> {
            Ok(answer("mx", name)?
                .iter()
                .filter_map(|r| {
                    let (p, e) = r.split_once(' ')?;
                    Some(Mx {
                        preference: p.parse().ok()?,
                        exchange: e.to_string(),
                    })
                })
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn builders_make_what_sluice_hands_over() {
        let m = super::message(
            &[("Subject", "Hi"), ("To", "b@example.org")],
            "line 1\nline 2\n",
        );
        assert_eq!(m.header("subject"), Some("Hi"));
        assert_eq!(m.body(), b"line 1\r\nline 2\r\n");
        let e = super::envelope("a@example.com", &["b@example.org", "c@example.org"]);
        assert_eq!(e.recipients.len(), 2);
        assert!(super::envelope("", &[]).sender.is_null());
    }
}
