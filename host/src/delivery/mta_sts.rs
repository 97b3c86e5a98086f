//! MTA-STS (RFC 8461): whether a recipient domain asks that its mail reach only its listed MX
//! hosts over TLS with a verified certificate. The `_mta-sts.DOMAIN` TXT record names the
//! policy's id; the policy is fetched from `https://mta-sts.DOMAIN/.well-known/mta-sts.txt`
//! with a verified certificate (bounded: 64 KiB, 20 s), and cached — in memory and in
//! `<data_dir>/mta-sts/`, so across restarts — until its `max_age` runs out or the id changes.
//! As the RFC says, a policy that cannot be fetched, or a TXT record that went away, leaves
//! the cached policy in force while it lasts; without one, delivery goes on as for a domain
//! without MTA-STS.
//!
//! Written here rather than taken from a crate: `mail-auth` has no MTA-STS, and the crates
//! that do fetch with their own HTTP stacks, which could not use the delivery resolver (the
//! tests' DNS) or the delivery's roots.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::mx::MxResolver;
use crate::smtp::reply::Reply;

/// The largest policy fetched (the RFC suggests 64 KiB).
const MAX_POLICY: usize = 64 * 1024;
/// How long a fetch may take, connection and TLS included.
const FETCH_DEADLINE: Duration = Duration::from_secs(20);
/// The longest `max_age` (RFC 8461 §3.2: one year).
const MAX_AGE: u64 = 31_557_600;
/// The most domains remembered (see [`MtaSts::remember`]).
const MAX_KNOWN: usize = 100_000;
/// How long a policy that could not be fetched is not asked for again (seconds): a policy
/// server that is down must not add a fetch's deadline to every delivery to its domain.
const RETRY_FETCH_SECS: i64 = 300;

/// What a policy asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deliver only to matching MX hosts over verified TLS.
    Enforce,
    /// Deliver as usual; report what enforce would have refused.
    Testing,
    /// No MTA-STS (a domain withdrawing its policy).
    None,
}

/// A domain's policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The record id it was fetched for.
    pub id: String,
    /// What it asks.
    pub mode: Mode,
    /// The MX host patterns (`mx.example.org`, `*.example.org`).
    pub mx: Vec<String>,
    /// Seconds it may be cached.
    pub max_age: u64,
    /// When it was fetched (Unix seconds).
    pub fetched: i64,
}

impl Policy {
    /// True when `host` matches one of the policy's MX patterns (a `*.` pattern covers one
    /// label, RFC 8461 §4.1).
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx.iter().any(|p| match p.strip_prefix("*.") {
            Some(parent) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
            None => *p == host,
        })
    }

    /// Still good at `now` (Unix seconds).
    fn fresh(&self, now: i64) -> bool {
        now < self
            .fetched
            .saturating_add(i64::try_from(self.max_age).unwrap_or(i64::MAX))
    }

    /// How the delivery log and the queue name it: `mta-sts:enforce id=…`.
    pub fn describe(&self) -> String {
        let mode = match self.mode {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        };
        format!("mta-sts:{mode} id={}", self.id)
    }
}

/// The policy id of the `_mta-sts` TXT records: exactly one must start with `v=STSv1`
/// (RFC 8461 §3.1; more than one is as none).
pub fn record_id(txts: &[String]) -> Option<String> {
    let id = tag_of_one(txts, "v=STSv1", "id")?.to_string();
    let ok = !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric());
    ok.then_some(id)
}

/// The value of tag `key` in the one TXT record of `txts` that starts with `version`
/// (`v=STSv1`, `v=TLSRPTv1`): none when no record or more than one does.
pub fn tag_of_one<'a>(txts: &'a [String], version: &str, key: &str) -> Option<&'a str> {
    let mut found = txts.iter().filter(|t| t.starts_with(version));
    let (Some(record), None) = (found.next(), found.next()) else {
        return None;
    };
    record.split(';').find_map(|field| {
        let (k, v) = field.split_once('=')?;
        (k.trim() == key).then(|| v.trim())
    })
}

/// Parses a policy file (RFC 8461 §3.2) fetched for record `id` at `fetched`.
pub fn parse(text: &str, id: &str, fetched: i64) -> Result<Policy, String> {
    let (mut version, mut mode, mut max_age, mut mx) = (None, None, None, Vec::new());
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!("{:?} is not `key: value`", truncate(line)));
        };
        let value = value.trim();
        match key.trim() {
            "version" => version = Some(value.to_string()),
            "mode" => {
                mode = Some(match value {
                    "enforce" => Mode::Enforce,
                    "testing" => Mode::Testing,
                    "none" => Mode::None,
                    other => return Err(format!("mode {:?} is unknown", truncate(other))),
                })
            }
            "max_age" => {
                let age: u64 = value
                    .parse()
                    .ok()
                    .filter(|a| *a <= MAX_AGE && value.len() <= 10)
                    .ok_or_else(|| {
                        format!("max_age {:?} is not 0 to {MAX_AGE}", truncate(value))
                    })?;
                max_age = Some(age);
            }
            "mx" => {
                let bare = value.strip_prefix("*.").unwrap_or(value);
                let good = !bare.is_empty()
                    && bare
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
                if !good {
                    return Err(format!("mx {:?} is not a host pattern", truncate(value)));
                }
                mx.push(value.trim_end_matches('.').to_ascii_lowercase());
            }
            _ => {}
        }
    }
    if version.as_deref() != Some("STSv1") {
        return Err("no `version: STSv1`".to_string());
    }
    let mode = mode.ok_or("no mode")?;
    let max_age = max_age.ok_or("no max_age")?;
    if mode != Mode::None && mx.is_empty() {
        return Err("no mx".to_string());
    }
    Ok(Policy {
        id: id.to_string(),
        mode,
        mx,
        max_age,
        fetched,
    })
}

/// True when the message's header has `TLS-Required: No` (RFC 8689 §5): the sender asks that
/// the recipient domain's TLS policy (MTA-STS, DANE) be ignored for it.
pub fn tls_required_no(message: &[u8]) -> bool {
    let Some(parsed) = mail_parser::MessageParser::new().parse_headers(message) else {
        return false;
    };
    parsed
        .header_raw("TLS-Required")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("no"))
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(80);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The policies known, by domain.
pub struct MtaSts {
    dir: PathBuf,
    port: u16,
    /// What is known of each domain: its policy, or that it has none on disk.
    known: Mutex<HashMap<String, Option<Arc<Policy>>>>,
    /// Domain → (record id, until when) of fetches that failed.
    failed: Mutex<HashMap<String, (String, i64)>>,
}

impl MtaSts {
    /// Policies cached in `dir`, fetched from `port` (443 but in tests).
    pub fn new(dir: PathBuf, port: u16) -> MtaSts {
        MtaSts {
            dir,
            port,
            known: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
        }
    }

    /// The policy in force for `domain` now, if any (see the module documentation).
    pub async fn policy(&self, domain: &str, dns: &MxResolver) -> Option<Arc<Policy>> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let plain = !domain.is_empty()
            && !domain.starts_with('.')
            && domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !plain {
            return None;
        }
        let now = chrono::Utc::now().timestamp();
        let cached = self.cached(&domain).await.filter(|p| p.fresh(now));
        let id = match dns.txt(&format!("_mta-sts.{domain}")).await {
            Ok(txts) => record_id(&txts),
            // DNS trouble: what we know stands.
            Err(_) => return cached,
        };
        let Some(id) = id else {
            return cached;
        };
        if cached.as_ref().is_some_and(|p| p.id == id) {
            return cached;
        }
        let recently_failed = self
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&domain)
            .is_some_and(|(failed_id, until)| *failed_id == id && now < *until);
        if recently_failed {
            return cached;
        }
        let fetched = self.fetch_for(&domain, &id, dns, now).await;
        if fetched.is_none() {
            self.failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(domain.clone(), (id, now + RETRY_FETCH_SECS));
        }
        fetched.or(cached)
    }

    /// Fetches and parses the policy of record `id`, and keeps it; logs why not.
    async fn fetch_for(
        &self,
        domain: &str,
        id: &str,
        dns: &MxResolver,
        now: i64,
    ) -> Option<Arc<Policy>> {
        match tokio::time::timeout(FETCH_DEADLINE, self.fetch(domain, dns)).await {
            Ok(Ok(text)) => match parse(&text, id, now) {
                Ok(policy) => {
                    let policy = Arc::new(policy);
                    self.keep(domain, &policy).await;
                    Some(policy)
                }
                Err(why) => {
                    tracing::info!(domain, "MTA-STS policy refused: {why}");
                    None
                }
            },
            Ok(Err(why)) => {
                tracing::info!(domain, "MTA-STS policy not fetched: {why}");
                None
            }
            Err(_) => {
                tracing::info!(domain, "MTA-STS policy not fetched within 20 s");
                None
            }
        }
    }

    fn path(&self, domain: &str) -> PathBuf {
        self.dir.join(format!("{domain}.json"))
    }

    /// The policy known for `domain`: from memory, else (once) from its file, read off the
    /// async workers. A domain without a file is remembered as such, so the disk is not asked
    /// again at each delivery.
    async fn cached(&self, domain: &str) -> Option<Arc<Policy>> {
        if let Some(known) = self.lock_known().get(domain) {
            return known.clone();
        }
        let path = self.path(domain);
        let read = tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(path).ok()?;
            serde_json::from_slice::<Policy>(&bytes).ok()
        })
        .await
        .ok()
        .flatten()
        .map(Arc::new);
        self.remember(domain, read.clone());
        read
    }

    fn lock_known(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<Arc<Policy>>>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers what is known of `domain`; past [`MAX_KNOWN`] domains, those known to have
    /// no policy are forgotten (they are read again when mail goes to them).
    fn remember(&self, domain: &str, policy: Option<Arc<Policy>>) {
        let mut known = self.lock_known();
        if known.len() >= MAX_KNOWN {
            known.retain(|_, p| p.is_some());
        }
        known.insert(domain.to_string(), policy);
    }

    /// Keeps a fetched policy in memory and on disk (written off the async workers).
    async fn keep(&self, domain: &str, policy: &Arc<Policy>) {
        self.remember(domain, Some(policy.clone()));
        let (dir, path, policy) = (self.dir.clone(), self.path(domain), policy.clone());
        let written = tokio::task::spawn_blocking(move || {
            crate::private_files::create_private_dir(&dir)?;
            let json = serde_json::to_vec(policy.as_ref()).map_err(std::io::Error::other)?;
            crate::private_files::write_private(&path, &json)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = written {
            tracing::warn!(domain, error = %e, "MTA-STS policy not saved: it is kept in memory only");
        }
    }

    /// GET the policy over HTTPS with a verified certificate for `mta-sts.DOMAIN`.
    async fn fetch(&self, domain: &str, dns: &MxResolver) -> Result<String, String> {
        let host = format!("mta-sts.{domain}");
        let request = hyper::Request::get("/.well-known/mta-sts.txt")
            .header("host", &host)
            .header("user-agent", "sluice")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .map_err(|e| e.to_string())?;
        let answer = super::https::send(dns, (&host, self.port), request, MAX_POLICY).await?;
        if answer.status != hyper::StatusCode::OK {
            return Err(format!("HTTP status {}", answer.status));
        }
        let text_plain = answer.content_type.is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/plain")
        });
        if !text_plain {
            return Err("not text/plain".to_string());
        }
        String::from_utf8(answer.body.to_vec()).map_err(|_| "not UTF-8".to_string())
    }
}

/// The next hops an MTA-STS policy leaves (`enforced`: only the MX hosts it lists; testing:
/// all, listed ones first), logging the hosts it does not list; under enforce with none
/// listed, the reply that defers the mail and the first host refused.
pub fn allowed_hops<T>(
    sts: Option<&Policy>,
    enforced: bool,
    hops: Vec<(T, String)>,
    (id, domain): (&str, &str),
) -> Result<Vec<(T, String)>, (Reply, String)> {
    let Some(policy) = sts.filter(|p| p.mode != Mode::None) else {
        return Ok(hops);
    };
    let (allowed, not): (Vec<_>, Vec<_>) =
        hops.into_iter().partition(|(_, name)| policy.allows(name));
    if !not.is_empty() {
        let hosts: Vec<&str> = not.iter().map(|(_, n)| n.as_str()).collect();
        tracing::info!(id, domain, policy = %policy.describe(), enforced, hosts = %hosts.join(","), "MTA-STS: MX hosts the policy does not list");
    }
    match (enforced, allowed.is_empty()) {
        (true, true) => Err((
            Reply::new(
                451,
                "4.7.5",
                &format!(
                    "MTA-STS policy of {domain} ({}): none of its MX hosts is listed",
                    policy.describe()
                ),
            ),
            not.first().map(|(_, n)| n.clone()).unwrap_or_default(),
        )),
        (true, false) => Ok(allowed),
        (false, _) => Ok(allowed.into_iter().chain(not).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_names_the_id_once() {
        let one = |t: &str| record_id(&[t.to_string()]);
        assert_eq!(one("v=STSv1; id=20260101T01;"), Some("20260101T01".into()));
        assert_eq!(one("v=STSv1;id=abc"), Some("abc".into()));
        assert_eq!(one("v=STSv2; id=abc"), None);
        assert_eq!(one("v=STSv1; id=a-b"), None, "alphanumeric only");
        assert_eq!(one("v=STSv1;"), None);
        assert_eq!(
            record_id(&["v=STSv1; id=a".into(), "v=STSv1; id=b".into()]),
            None,
            "two records are none"
        );
        assert_eq!(
            record_id(&["spf1".into(), "v=STSv1; id=b".into()]),
            Some("b".into())
        );
    }

    #[test]
    fn a_policy_is_parsed_and_matched_as_the_rfc_says() {
        let p = parse(
            "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.org\r\nmx: *.example.net\r\nmax_age: 86400\r\nextra: ignored\r\n",
            "1",
            100,
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, 86_400);
        assert!(p.allows("MX1.example.org."));
        assert!(p.allows("a.example.net"));
        assert!(!p.allows("a.b.example.net"), "one label");
        assert!(!p.allows("example.net"));
        assert!(!p.allows("mx2.example.org"));
        assert!(p.fresh(100 + 86_399) && !p.fresh(100 + 86_400));
        assert_eq!(p.describe(), "mta-sts:enforce id=1");
        for (bad, why) in [
            ("mode: enforce\nmx: a\nmax_age: 1\n", "no `version: STSv1`"),
            (
                "version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n",
                "mode \"strict\" is unknown",
            ),
            ("version: STSv1\nmode: enforce\nmax_age: 1\n", "no mx"),
            ("version: STSv1\nmode: enforce\nmx: a\n", "no max_age"),
            (
                "version: STSv1\nmode: enforce\nmx: a\nmax_age: 99999999999\n",
                "max_age",
            ),
            (
                "version: STSv1\nmode: enforce\nmx: a b\nmax_age: 1\n",
                "not a host pattern",
            ),
            ("<html>\n", "is not `key: value`"),
        ] {
            let e = parse(bad, "1", 0).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        let none = parse("version: STSv1\nmode: none\nmax_age: 5\n", "2", 0).unwrap();
        assert_eq!(none.mode, Mode::None);
    }

    #[test]
    fn tls_required_no_is_read_from_the_header_only() {
        assert!(tls_required_no(
            b"Subject: a\r\nTLS-Required:  no \r\n\r\nbody"
        ));
        assert!(!tls_required_no(
            b"Subject: a\r\nTLS-Required: yes\r\n\r\nbody"
        ));
        assert!(!tls_required_no(b"Subject: a\r\n\r\nTLS-Required: No\r\n"));
    }
}
