//! `[authentication]`: SPF, DKIM and DMARC of mail from other servers (and each listener's
//! DMARC mode), DKIM signing of our own.

use std::path::PathBuf;

use serde::Deserialize;

use super::Problems;

/// What a listener does with a DMARC failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DmarcMode {
    /// Only record the results (in `Authentication-Results:`, for plugins and logs).
    #[default]
    Record,
    /// Apply the sender domain's policy: `p=reject` failures get 550 5.7.1, `p=quarantine`
    /// failures are quarantined, and a DNS temperror gets 451 4.7.1.
    Enforce,
}

/// `[authentication]`: sender authentication of mail from other servers (SPF at MAIL FROM,
/// DKIM and DMARC after DATA, one `Authentication-Results:` field) and DKIM signing of mail
/// from authenticated users and trusted networks (which are not verified themselves).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AuthenticationConfig {
    /// Verify SPF, DKIM and DMARC of mail from unauthenticated, untrusted clients.
    pub verify: bool,
    /// The DNS server for the checks (`ip` or `ip:port`); default: the system's resolvers.
    pub resolver: Option<String>,
    /// Seconds one DNS query may take; a query that takes longer is a temperror.
    pub dns_timeout_secs: u64,
    /// DKIM signing keys, one per domain.
    #[serde(rename = "dkim_key")]
    pub dkim_keys: Vec<DkimKeyConfig>,
    /// What happens to an authenticated user's message whose header From is not an address
    /// the user may send as (`[auth.senders]`) or is not a single address, when we hold a key
    /// for its domain: `unsigned` (default: relayed without our signature) or `refuse`
    /// (550 5.7.1). It is never signed.
    pub unowned_from: UnownedFrom,
    /// ARC (RFC 8617): seal the mail we relay from other servers with this key, so the next
    /// hop can trust the results we saw. Off unless set.
    pub arc_seal: Option<ArcSealConfig>,
}

/// `[authentication.arc_seal]`: the key our ARC sets are signed with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArcSealConfig {
    /// The sealing domain (`d=`).
    pub domain: String,
    /// The selector (`s=`): the key is published at `SELECTOR._domainkey.DOMAIN`, as for DKIM.
    pub selector: String,
    /// PEM private key, RSA or Ed25519 (`sluice dkim keygen` writes one).
    pub key: PathBuf,
}

/// See [`AuthenticationConfig::unowned_from`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnownedFrom {
    /// Relay it unsigned.
    #[default]
    Unsigned,
    /// Refuse it: 550 5.7.1.
    Refuse,
}

impl Default for AuthenticationConfig {
    fn default() -> Self {
        AuthenticationConfig {
            verify: true,
            resolver: None,
            dns_timeout_secs: 5,
            dkim_keys: Vec::new(),
            unowned_from: UnownedFrom::Unsigned,
            arc_seal: None,
        }
    }
}

/// `[[authentication.dkim_key]]`: the key that signs mail whose From domain is `domain`.
#[derive(Debug, Clone, Deserialize)]
pub struct DkimKeyConfig {
    /// The signing domain (`d=`).
    pub domain: String,
    /// The selector (`s=`): the key is published at `SELECTOR._domainkey.DOMAIN`.
    pub selector: String,
    /// PEM private key, RSA or Ed25519 (`sluice dkim keygen` writes one).
    pub key: PathBuf,
}

impl AuthenticationConfig {
    pub(super) fn validate(&self, p: &mut Problems) {
        p.resolver("authentication.resolver", self.resolver.as_deref());
        p.nonzero("authentication.dns_timeout_secs", self.dns_timeout_secs);
        p.at_most_secs("authentication.dns_timeout_secs", self.dns_timeout_secs, 60);
        let mut signing = std::collections::BTreeSet::new();
        for k in &self.dkim_keys {
            let at = format!("authentication.dkim_key for {}", k.domain);
            if !signing.insert(k.domain.to_ascii_lowercase()) {
                p.add(
                    "authentication.dkim_key",
                    format_args!("two keys for {}; one key per domain", k.domain),
                );
            }
            key_problems(p, &at, &k.selector, &k.key);
        }
        if let Some(a) = &self.arc_seal {
            let at = "authentication.arc_seal";
            if a.domain.is_empty() || a.domain.contains(|c: char| c.is_whitespace() || c == ';') {
                p.add(at, format_args!("domain {:?} is not a DNS name", a.domain));
            }
            key_problems(p, at, &a.selector, &a.key);
        }
    }
}

/// What is wrong with a signing key's selector and file, said at `at`.
fn key_problems(p: &mut Problems, at: &str, selector: &str, key: &std::path::Path) {
    if selector.is_empty() || selector.contains(|c: char| c.is_whitespace() || c == ';') {
        p.add(at, format_args!("selector {selector:?} is not a DNS label"));
    }
    if let Err(e) = crate::sender_auth::dkim_key::load(key) {
        p.add(at, format_args!("{}: {e}", key.display()));
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::super::tests::{problems_of, says_all};

    #[test]
    fn arc_seal_mistakes_are_named_by_key() {
        let msg = problems_of(
            "[authentication.arc_seal]\ndomain = \"\"\nselector = \"a b\"\nkey = \"/nonexistent/arc.key\"\n",
        );
        says_all(
            &msg,
            &[
                "authentication.arc_seal: domain \"\" is not a DNS name",
                "authentication.arc_seal: selector \"a b\" is not a DNS label",
                "authentication.arc_seal: /nonexistent/arc.key:",
            ],
        );
        let unknown = Config::parse(
            "[authentication.arc_seal]\ndomain = \"a.test\"\nselector = \"s\"\nkey = \"k\"\nexpire = 3\n",
        )
        .unwrap_err();
        assert!(unknown.contains("expire"), "{unknown}");
    }
}
