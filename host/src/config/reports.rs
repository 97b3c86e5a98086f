//! `[reports]`: the aggregate reports Sluice sends to domains that ask for them — TLS reports
//! (RFC 8460) of its outbound sessions, DMARC aggregate reports (RFC 7489 §7.2) of the mail it
//! received. Each off unless turned on.

use serde::Deserialize;

use super::Problems;

/// `[reports]`: who sends the reports, how often, and which.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportsConfig {
    /// Send TLS reports (RFC 8460) to the `rua` of `_smtp._tls.DOMAIN` for each domain
    /// mail was delivered to over an `mx` route. Default false.
    pub tls: bool,
    /// Send DMARC aggregate reports (RFC 7489 §7.2) to the `rua` of the From domains of the
    /// mail received, when it publishes one (and, for an address outside the domain, the
    /// receiving domain agrees, §7.1). Default false.
    pub dmarc: bool,
    /// The organization named in the reports; default `server.hostname`.
    pub organization: Option<String>,
    /// Where the domains may write about the reports (`mailto:…` or an address); default
    /// `postmaster@` the host name.
    pub contact: Option<String>,
    /// The sender of mailed reports; default `postmaster@` the host name.
    pub from: Option<String>,
    /// The period each report covers, in seconds (default a day, as the RFC says).
    pub interval_secs: u64,
}

impl Default for ReportsConfig {
    fn default() -> Self {
        ReportsConfig {
            tls: false,
            dmarc: false,
            organization: None,
            contact: None,
            from: None,
            interval_secs: 86_400,
        }
    }
}

impl ReportsConfig {
    pub(super) fn validate(&self, p: &mut Problems) {
        p.range("reports.interval_secs", self.interval_secs, 1, 7 * 86_400);
        if let Some(from) = &self.from {
            let ok = from
                .split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
                && !from.contains([' ', '<', '>', ',', '\r', '\n']);
            if !ok {
                p.add(
                    "reports.from",
                    format_args!("{from:?} is not a mail address"),
                );
            }
        }
        for (key, value) in [
            ("reports.organization", &self.organization),
            ("reports.contact", &self.contact),
        ] {
            if value
                .as_deref()
                .is_some_and(|v| v.is_empty() || v.len() > 200 || v.chars().any(char::is_control))
            {
                p.add(key, "must be 1 to 200 printable characters");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::super::tests::{problems_of, says_all};

    #[test]
    fn report_mistakes_are_named_by_key() {
        let msg = problems_of(
            "[reports]\ntls = true\ninterval_secs = 0\nfrom = \"postmaster\"\norganization = \"\"\n",
        );
        says_all(
            &msg,
            &[
                "reports.interval_secs: 0 is out of range (1 to 604800)",
                "reports.from: \"postmaster\" is not a mail address",
                "reports.organization: must be 1 to 200 printable characters",
            ],
        );
        assert!(Config::parse("[reports]\narf = true\n").is_err());
    }
}
