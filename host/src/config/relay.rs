//! `[relay]` and `[auth]`: which mail may be relayed where, and SMTP AUTH.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::Problems;

/// `[relay]`: relay control. Mail for `local_domains` is accepted from anyone; mail for any
/// other domain only from authenticated users or clients in `trusted_networks`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RelayConfig {
    /// Domains this host accepts mail for.
    pub local_domains: Vec<String>,
    /// Client networks allowed to relay without AUTH, e.g. `["10.0.0.0/8"]`.
    pub trusted_networks: Vec<ipnet::IpNet>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            local_domains: vec!["localhost".to_string()],
            trusted_networks: Vec::new(),
        }
    }
}

/// `[auth]`: SMTP AUTH (PLAIN, LOGIN) against a credentials file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct AuthConfig {
    /// Credentials file: one `user:argon2-hash` per line (`sluice passwd USER` writes it).
    /// Default `<data_dir>/users`.
    pub users_file: Option<PathBuf>,
    /// Allow AUTH without TLS on loopback connections (for local tools and tests).
    pub allow_plaintext_on_loopback: bool,
    /// Addresses each user may send as, e.g. `alice = ["alice@example.org", "@example.net"]`
    /// (`@domain` allows the whole domain). A user not listed may send as the user name when it
    /// is an address, or as `user@` each local domain.
    pub senders: BTreeMap<String, Vec<String>>,
}

impl RelayConfig {
    pub(super) fn validate(&self, p: &mut Problems) {
        p.domains("relay.local_domains", &self.local_domains);
    }
}
