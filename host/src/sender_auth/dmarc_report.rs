//! DMARC aggregate reports (RFC 7489 §7.2): the DMARC result of each inbound message whose
//! From domain publishes a `rua`, counted per domain as the report's rows (source address,
//! disposition, aligned DKIM and SPF results, the domains and their checks: `mail-auth`'s
//! report records), kept in `<data_dir>/dmarc-reports/tally.json` (owner-only). The report
//! itself — `mail-auth`'s XML, gzipped, in a message — and the external-destination check of
//! §7.1 are the server's (`server::reports`). Nothing of the messages is kept but what the
//! rows hold.

use std::path::PathBuf;

use mail_auth::report::{PolicyPublished, Record, Report};
use serde::{Deserialize, Serialize};

use crate::report_period::Period;

/// The most distinct rows per domain in a period.
const MAX_ROWS: usize = 1_000;

/// One From domain's rows in a period.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DomainRows {
    /// The policy it published (at the last message).
    pub policy: PolicyPublished,
    /// Its `rua` addresses (mailto only, as `mail-auth` reads them).
    pub rua: Vec<String>,
    /// Distinct rows with their counts.
    pub rows: Vec<(Record, u32)>,
}

/// The rows being counted, shared by the sender checks and the sender of the reports.
pub struct DmarcReports {
    period: Period<DomainRows>,
}

impl DmarcReports {
    /// Counts kept in `dir`, continuing those a previous run left.
    pub fn open(dir: PathBuf) -> DmarcReports {
        DmarcReports {
            period: Period::open(dir),
        }
    }

    /// Counts one message of `domain` (which published `policy` and `rua`) as `row`.
    pub fn record(&self, domain: &str, policy: PolicyPublished, rua: Vec<String>, row: Record) {
        let new = || DomainRows {
            policy: policy.clone(),
            rua: Vec::new(),
            rows: Vec::new(),
        };
        self.period.count(domain, new, |entry| {
            entry.policy = policy.clone();
            entry.rua = rua;
            if let Some((_, n)) = entry.rows.iter_mut().find(|(r, _)| *r == row) {
                *n = n.saturating_add(1);
            } else if entry.rows.len() < MAX_ROWS {
                entry.rows.push((row, 1));
            }
        });
    }

    /// The rows being counted.
    pub fn period(&self) -> &Period<DomainRows> {
        &self.period
    }
}

/// The organizational domain of `domain` (the public suffix list's registrable domain).
pub fn organizational(domain: &str) -> String {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    psl::domain_str(&d).unwrap_or(&d).to_string()
}

/// The name whose TXT record must authorize `rua_domain` to receive `domain`'s reports
/// (RFC 7489 §7.1), or `None` when they share an organizational domain.
pub fn authorization_name(domain: &str, rua_domain: &str) -> Option<String> {
    (organizational(domain) != organizational(rua_domain))
        .then(|| format!("{domain}._report._dmarc.{rua_domain}"))
}

/// True when one of `txts` is a DMARC record (`v=DMARC1`): the authorization of §7.1.
pub fn authorizes(txts: &[String]) -> bool {
    txts.iter().any(|t| {
        t.split(';')
            .next()
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("v=DMARC1"))
    })
}

/// The aggregate report of `domain`'s rows for the period [`start`, `end`].
pub fn report(
    (organization, email): (&str, &str),
    report_id: &str,
    domain: &str,
    rows: &DomainRows,
    (start, end): (i64, i64),
) -> Report {
    let mut report = Report::new()
        .with_version(1.0)
        .with_org_name(organization)
        .with_email(email)
        .with_report_id(report_id)
        .with_date_range_begin(u64::try_from(start).unwrap_or(0))
        .with_date_range_end(u64::try_from(end).unwrap_or(0))
        .with_policy_published(PolicyPublished {
            domain: domain.to_string(),
            ..rows.policy.clone()
        })
        .with_generator("Sluice");
    for (row, n) in &rows.rows {
        report.add_record(row.clone().with_count(*n));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_counted_and_become_the_report() {
        let dir = tempfile::tempdir().unwrap();
        let reports = DmarcReports::open(dir.path().join("dmarc"));
        use mail_auth::report::{Alignment, Disposition};
        let policy = PolicyPublished {
            domain: "example.org".into(),
            version_published: None,
            adkim: Alignment::Relaxed,
            aspf: Alignment::Relaxed,
            p: Disposition::Reject,
            sp: Disposition::Reject,
            np: Disposition::Reject,
            testing: false,
            discovery_method: Default::default(),
            fo: None,
        };
        let row = |ip: [u8; 4]| {
            Record::new()
                .with_source_ip(ip.into())
                .with_header_from("example.org")
                .with_envelope_from("example.org")
        };
        for ip in [[192, 0, 2, 1], [192, 0, 2, 1], [192, 0, 2, 2]] {
            reports.record(
                "Example.org",
                policy.clone(),
                vec!["dmarc@example.org".into()],
                row(ip),
            );
        }
        reports.period().save().unwrap();
        let again = DmarcReports::open(dir.path().join("dmarc"));
        let since = again.period().since();
        assert!(again.period().take_due(since + 1, 60).is_none());
        let tally = again.period().take_due(since + 60, 60).unwrap();
        let rows = &tally.domains["example.org"];
        assert_eq!(
            rows.rows.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
            [2, 1]
        );
        let xml = report(
            ("Sluice at relay.test", "postmaster@relay.test"),
            "r1",
            "example.org",
            rows,
            (0, 60),
        )
        .to_xml();
        assert!(xml.contains("<domain>example.org</domain>"), "{xml}");
        assert!(xml.contains("<p>reject</p>"), "{xml}");
        assert!(xml.contains("<source_ip>192.0.2.1</source_ip>"), "{xml}");
        assert!(xml.contains("<count>2</count>"), "{xml}");
    }

    #[test]
    fn an_outside_destination_needs_the_domains_authorization() {
        assert_eq!(
            authorization_name("example.org", "reports.example.org"),
            None
        );
        assert_eq!(
            authorization_name("example.org", "dmarc.example.net").as_deref(),
            Some("example.org._report._dmarc.dmarc.example.net")
        );
        assert!(authorizes(&["v=DMARC1".into()]));
        assert!(authorizes(&["v=DMARC1; p=none".into()]));
        assert!(!authorizes(&["v=spf1 -all".into()]));
    }
}
