//! TLS reports (RFC 8460): what came of the TLS of each delivery attempt over an `mx` route,
//! counted per recipient domain ([`TlsReports::record`]), and, once per `[reports]
//! interval_secs`, the aggregate report for each domain as the RFC lays it out (JSON, gzip),
//! addressed to the `rua` of its `_smtp._tls` TXT record. The counts are kept in
//! `<data_dir>/tls-reports/tally.json` (owner-only) so a restart loses at most a minute of
//! them. Sending is the server's (`server::reports`): mailto through Sluice's own queue.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::mta_sts::{Mode, Policy};
use crate::report_period::Period;

/// What came of one attempt's TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A TLS session was made (and, under a policy, verified).
    Success,
    /// It failed: the RFC's result type (`starttls-not-supported`, `certificate-host-mismatch`,
    /// `certificate-not-trusted`, `certificate-expired`, `validation-failure`), the MX host,
    /// and a reason in our words.
    Failure {
        /// RFC 8460 §4.3 result type.
        result: &'static str,
        /// The receiving MX host.
        mx: String,
        /// What went wrong.
        reason: String,
    },
}

/// The RFC's result type for a TLS error text from rustls or the client.
pub fn classify(error: &str) -> &'static str {
    // rustls names its certificate errors both ways (`NotValidForName`, "not valid for name").
    let e = error.to_ascii_lowercase().replace(' ', "");
    if e.contains("tlsarecord") || e.contains("tlsatrustanchor") {
        "tlsa-invalid"
    } else if e.contains("starttls") {
        "starttls-not-supported"
    } else if e.contains("notvalidforname") {
        "certificate-host-mismatch"
    } else if e.contains("expired") {
        "certificate-expired"
    } else if e.contains("unknownissuer") || e.contains("badsignature") {
        "certificate-not-trusted"
    } else {
        "validation-failure"
    }
}

/// One domain's counts in a period.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DomainTally {
    /// The MTA-STS policy in force at the last attempt (none: `no-policy-found`).
    pub policy: Option<Policy>,
    /// Successful sessions (not under DANE).
    pub success: u64,
    /// Failed sessions (not under DANE), by (result type, MX host, reason).
    pub failures: BTreeMap<String, u64>,
    /// Sessions under DANE, by MX host (the TLSA base domain).
    #[serde(default)]
    pub tlsa: BTreeMap<String, TlsaTally>,
}

/// The sessions with one MX host under its TLSA records.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TlsaTally {
    /// The records at the last attempt (`3 1 1 HEX`); none when they could not be looked up.
    pub records: Vec<String>,
    /// Successful sessions.
    pub success: u64,
    /// Failed sessions, by (result type, MX host, reason).
    pub failures: BTreeMap<String, u64>,
}

/// The policy an attempt was under: the domain's (MTA-STS, or none), or an MX host's TLSA
/// records (DANE: the host, and its records).
#[derive(Debug, Clone, Copy)]
pub enum Under<'a> {
    /// The domain's MTA-STS policy, or none.
    Domain,
    /// DANE: the MX host and its TLSA records (none when the lookup failed).
    Tlsa(&'a str, &'a [String]),
}

/// Counts `outcome` into `success` and `failures`.
fn count(success: &mut u64, failures: &mut BTreeMap<String, u64>, outcome: Outcome) {
    match outcome {
        Outcome::Success => *success += 1,
        Outcome::Failure { result, mx, reason } => {
            let reason: String = reason
                .chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect();
            *failures
                .entry(format!("{result}\u{1f}{mx}\u{1f}{reason}"))
                .or_default() += 1;
        }
    }
}

/// The counts being made, shared by the delivery runner and the sender of the reports.
pub struct TlsReports {
    period: Period<DomainTally>,
}

impl TlsReports {
    /// Counts kept in `dir`, continuing those a previous run left.
    pub fn open(dir: PathBuf) -> TlsReports {
        TlsReports {
            period: Period::open(dir),
        }
    }

    /// Counts one attempt's TLS for `domain` (whose MTA-STS policy is `sts`, if any), under
    /// `under`.
    pub fn record(&self, domain: &str, sts: Option<&Policy>, under: Under<'_>, outcome: Outcome) {
        self.period
            .count(domain, DomainTally::default, |entry| match under {
                Under::Domain => {
                    entry.policy = sts.cloned();
                    count(&mut entry.success, &mut entry.failures, outcome);
                }
                Under::Tlsa(host, records) => {
                    let host = host.to_ascii_lowercase();
                    // At most 100 hosts a domain, as the domains are bounded.
                    if entry.tlsa.len() >= 100 && !entry.tlsa.contains_key(&host) {
                        return;
                    }
                    let t = entry.tlsa.entry(host).or_default();
                    if !records.is_empty() {
                        t.records = records.to_vec();
                    }
                    count(&mut t.success, &mut t.failures, outcome);
                }
            });
    }

    /// The counts being made.
    pub fn period(&self) -> &Period<DomainTally> {
        &self.period
    }
}

/// Who writes the report.
#[derive(Debug, Clone)]
pub struct Submitter {
    /// `organization-name`.
    pub organization: String,
    /// `contact-info`.
    pub contact: String,
    /// The host name (the report id's right side).
    pub host: String,
}

/// The RFC 8460 §4.4 JSON report of `domain`'s counts for the period [`start`, `end`].
pub fn report_json(
    who: &Submitter,
    domain: &str,
    tally: &DomainTally,
    (start, end): (i64, i64),
    report_id: &str,
) -> serde_json::Value {
    let time = |t: i64| {
        chrono::DateTime::<chrono::Utc>::from_timestamp(t, 0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let policy = match &tally.policy {
        Some(p) if p.mode != Mode::None => {
            let mode = match p.mode {
                Mode::Enforce => "enforce",
                _ => "testing",
            };
            let mut lines = vec!["version: STSv1".to_string(), format!("mode: {mode}")];
            lines.extend(p.mx.iter().map(|m| format!("mx: {m}")));
            lines.push(format!("max_age: {}", p.max_age));
            serde_json::json!({
                "policy-type": "sts",
                "policy-string": lines,
                "policy-domain": domain,
                "mx-host": p.mx,
            })
        }
        _ => serde_json::json!({ "policy-type": "no-policy-found", "policy-domain": domain }),
    };
    // The domain's policy, when some attempt was not under DANE (or nothing was counted
    // under DANE), then one "tlsa" policy per MX host under DANE (RFC 8460 §4.4).
    let mut policies = Vec::new();
    if tally.success + tally.failures.values().sum::<u64>() > 0 || tally.tlsa.is_empty() {
        policies.push(policy_entry(policy, tally.success, &tally.failures));
    }
    for (host, t) in &tally.tlsa {
        let policy = serde_json::json!({
            "policy-type": "tlsa",
            "policy-string": t.records,
            "policy-domain": host,
        });
        policies.push(policy_entry(policy, t.success, &t.failures));
    }
    serde_json::json!({
        "organization-name": who.organization,
        "date-range": { "start-datetime": time(start), "end-datetime": time(end) },
        "contact-info": who.contact,
        "report-id": report_id,
        "policies": policies,
    })
}

/// One entry of a report's `policies`: the policy, its summary and its failures.
fn policy_entry(
    policy: serde_json::Value,
    success: u64,
    failures: &BTreeMap<String, u64>,
) -> serde_json::Value {
    let failed: u64 = failures.values().sum();
    let details: Vec<serde_json::Value> = failures
        .iter()
        .map(|(key, count)| {
            let mut parts = key.splitn(3, '\u{1f}');
            let (result, mx, reason) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            serde_json::json!({
                "result-type": result,
                "receiving-mx-hostname": mx,
                "failed-session-count": count,
                "failure-reason-code": reason,
            })
        })
        .collect();
    serde_json::json!({
        "policy": policy,
        "summary": {
            "total-successful-session-count": success,
            "total-failure-session-count": failed,
        },
        "failure-details": details,
    })
}

/// Where a domain wants its reports: the `rua` of its one `v=TLSRPTv1` record
/// (RFC 8460 §3): `mailto:` addresses and `https:` URLs.
pub fn rua(txts: &[String]) -> Vec<String> {
    super::mta_sts::tag_of_one(txts, "v=TLSRPTv1", "rua")
        .map(|v| {
            v.split(',')
                .map(|u| u.trim().to_string())
                .filter(|u| u.starts_with("mailto:") || u.starts_with("https:"))
                .collect()
        })
        .unwrap_or_default()
}

/// `bytes`, gzipped (the report's encoding, RFC 8460 §5.3).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = e.write_all(bytes);
    e.finish().unwrap_or_default()
}

/// The report as a message (RFC 8460 §5.3): multipart/report of type `tlsrpt`, the gzipped
/// JSON attached as `application/tlsrpt+gzip`.
pub fn message(
    who: &Submitter,
    (from, to): (&str, &[String]),
    domain: &str,
    (start, end): (i64, i64),
    report_id: &str,
    gz: Vec<u8>,
) -> Vec<u8> {
    use mail_builder::headers::content_type::ContentType;
    use mail_builder::headers::raw::Raw;
    use mail_builder::mime::MimePart;
    let file = format!(
        "{}!{domain}!{start}!{end}!{}.json.gz",
        who.host,
        report_id.split('@').next().unwrap_or(report_id)
    );
    let body = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "tlsrpt"),
        vec![
            MimePart::new(
                "text/plain",
                format!(
                    "This is an aggregate TLS report (RFC 8460) from {} for {domain}.\r\n",
                    who.organization
                ),
            ),
            MimePart::new("application/tlsrpt+gzip", gz).attachment(file),
        ],
    );
    mail_builder::MessageBuilder::new()
        .from(from.to_string())
        .to(to.to_vec())
        .subject(format!(
            "Report Domain: {domain} Submitter: {} Report-ID: <{report_id}>",
            who.host
        ))
        .message_id(report_id.to_string())
        .header("TLS-Report-Domain", Raw::new(domain.to_string()))
        .header("TLS-Report-Submitter", Raw::new(who.host.clone()))
        .header("Auto-Submitted", Raw::new("auto-generated"))
        .body(body)
        .write_to_vec()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_become_the_rfc_report() {
        let dir = tempfile::tempdir().unwrap();
        let reports = TlsReports::open(dir.path().join("tls-reports"));
        let policy = super::super::mta_sts::parse(
            "version: STSv1\nmode: enforce\nmx: mx.example.org\nmax_age: 86400\n",
            "1",
            0,
        )
        .unwrap();
        let sts = Under::Domain;
        reports.record("Example.org", Some(&policy), sts, Outcome::Success);
        reports.record("example.org", Some(&policy), sts, Outcome::Success);
        reports.record(
            "example.org",
            Some(&policy),
            sts,
            Outcome::Failure {
                result: classify("invalid peer certificate: NotValidForName"),
                mx: "mx.example.org".into(),
                reason: "bad\nname".into(),
            },
        );
        reports.record("plain.example", None, Under::Domain, Outcome::Success);
        // DANE: a host's records, a success and a mismatch; another host's failed lookup.
        let records = ["3 1 1 00ff".to_string()];
        let tlsa = Under::Tlsa("mx1.dane.example", &records);
        reports.record("dane.example", None, tlsa, Outcome::Success);
        reports.record(
            "dane.example",
            None,
            tlsa,
            Outcome::Failure {
                result: classify("the certificate chain of mx1.dane.example matches none of its TLSA records (3 1 1)"),
                mx: "mx1.dane.example".into(),
                reason: "mismatch".into(),
            },
        );
        reports.record(
            "dane.example",
            None,
            Under::Tlsa("MX2.dane.example", &[]),
            Outcome::Failure {
                result: "dnssec-invalid",
                mx: "mx2.dane.example".into(),
                reason: "SERVFAIL".into(),
            },
        );
        reports.period().save().unwrap();
        // A restart continues the counts.
        let again = TlsReports::open(dir.path().join("tls-reports"));
        let since = again.period().since();
        assert!(again.period().take_due(since + 10, 86_400).is_none());
        let tally = again.period().take_due(since + 86_400, 86_400).unwrap();
        assert_eq!(again.period().since(), since + 86_400, "a new period");
        let who = Submitter {
            organization: "Example Relay".into(),
            contact: "mailto:postmaster@relay.test".into(),
            host: "relay.test".into(),
        };
        let json = report_json(
            &who,
            "example.org",
            &tally.domains["example.org"],
            (0, 86_400),
            "r1@relay.test",
        );
        assert_eq!(json["date-range"]["end-datetime"], "1970-01-02T00:00:00Z");
        let p = &json["policies"][0];
        assert_eq!(p["policy"]["policy-type"], "sts");
        assert_eq!(p["policy"]["policy-string"][1], "mode: enforce");
        assert_eq!(p["summary"]["total-successful-session-count"], 2);
        assert_eq!(p["summary"]["total-failure-session-count"], 1);
        assert_eq!(
            p["failure-details"][0]["result-type"],
            "certificate-host-mismatch"
        );
        assert_eq!(p["failure-details"][0]["failure-reason-code"], "badname");
        let plain = report_json(
            &who,
            "plain.example",
            &tally.domains["plain.example"],
            (0, 1),
            "r2@relay.test",
        );
        assert_eq!(
            plain["policies"][0]["policy"]["policy-type"],
            "no-policy-found"
        );
        // Under DANE: one "tlsa" policy per MX host, and no domain entry with nothing in it.
        let dane = report_json(
            &who,
            "dane.example",
            &tally.domains["dane.example"],
            (0, 1),
            "r3@relay.test",
        );
        let policies = dane["policies"].as_array().unwrap();
        assert_eq!(policies.len(), 2, "{dane}");
        let (p1, p2) = (&policies[0], &policies[1]);
        assert_eq!(p1["policy"]["policy-type"], "tlsa");
        assert_eq!(p1["policy"]["policy-domain"], "mx1.dane.example");
        assert_eq!(p1["policy"]["policy-string"][0], "3 1 1 00ff");
        assert_eq!(p1["summary"]["total-successful-session-count"], 1);
        assert_eq!(p1["failure-details"][0]["result-type"], "tlsa-invalid");
        assert_eq!(p2["policy"]["policy-domain"], "mx2.dane.example");
        assert_eq!(p2["failure-details"][0]["result-type"], "dnssec-invalid");
        // The gzip round-trips.
        let gz = gzip(json.to_string().as_bytes());
        let mut back = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut back)
            .unwrap();
        assert_eq!(back, json.to_string());
    }

    #[test]
    fn the_rua_comes_from_the_one_record() {
        let one = |t: &str| rua(&[t.to_string()]);
        assert_eq!(
            one("v=TLSRPTv1; rua=mailto:a@b.test, https://r.test/x ,ftp://no"),
            ["mailto:a@b.test", "https://r.test/x"]
        );
        assert!(one("v=TLSRPTv2; rua=mailto:a@b.test").is_empty());
        assert!(
            rua(&[
                "v=TLSRPTv1; rua=mailto:a@b".into(),
                "v=TLSRPTv1; rua=mailto:c@d".into()
            ])
            .is_empty()
        );
        assert_eq!(
            classify("the server does not offer STARTTLS"),
            "starttls-not-supported"
        );
        assert_eq!(classify("UnknownIssuer"), "certificate-not-trusted");
        assert_eq!(
            classify("invalid peer certificate: certificate not valid for name \"mx.a\""),
            "certificate-host-mismatch"
        );
        assert_eq!(
            classify(
                "invalid peer certificate: the certificate chain of mx.a matches none of its TLSA records (3 1 1)"
            ),
            "tlsa-invalid"
        );
    }
}
