//! `[tls]`: the certificates for STARTTLS and implicit TLS — a default one, others chosen by
//! the name the client asks for (`[[tls.certificate]]`) — and how often their files are
//! checked for changes.

use std::path::PathBuf;

use serde::Deserialize;

use super::Problems;

/// `[tls]`: the server certificates.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TlsConfig {
    /// PEM certificate chain of the default certificate (for clients that send no name, or
    /// a name no `[[tls.certificate]]` covers). Without any certificate, a self-signed one for
    /// `server.hostname` is generated on first start and kept in `<data_dir>/tls/`.
    pub cert: Option<PathBuf>,
    /// PEM private key of the default certificate.
    pub key: Option<PathBuf>,
    /// Certificates chosen by the name the client asks for (SNI).
    #[serde(rename = "certificate")]
    pub certificates: Vec<CertificateConfig>,
    /// How often the certificate and key files are checked for changes (seconds; 0: only on
    /// `sluice reload`). A changed pair serves new connections; one that does not load is
    /// refused and the one in service stays.
    pub reload_check_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            certificates: Vec::new(),
            reload_check_secs: 10,
        }
    }
}

/// `[[tls.certificate]]`: a certificate for some names.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct CertificateConfig {
    /// The names it is chosen for: host names, or `*.example.org` for one label under
    /// `example.org`.
    pub names: Vec<String>,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Also the default (when `[tls] cert` is not set); without one, the first entry is.
    #[serde(default)]
    pub default: bool,
}

impl TlsConfig {
    pub(super) fn validate(&self, p: &mut Problems) {
        if self.cert.is_some() != self.key.is_some() {
            p.add("tls", "set both cert and key, or neither");
        }
        let readable = |p: &mut Problems, key: String, path: &PathBuf| {
            if !path.is_file() {
                p.add(
                    key,
                    format_args!("{} is not a readable file", path.display()),
                );
            }
        };
        for (key, path) in [("tls.cert", &self.cert), ("tls.key", &self.key)] {
            if let Some(f) = path {
                readable(p, key.to_string(), f);
            }
        }
        for (i, c) in self.certificates.iter().enumerate() {
            let at = |k: &str| format!("tls.certificate[{i}].{k}");
            readable(p, at("cert"), &c.cert);
            readable(p, at("key"), &c.key);
            if c.names.is_empty() {
                p.add(at("names"), "list the names this certificate is for");
            }
            for n in &c.names {
                let bare = n.strip_prefix("*.").unwrap_or(n);
                if bare.is_empty()
                    || bare.contains('*')
                    || !bare
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                    || bare.split('.').any(str::is_empty)
                {
                    p.add(
                        at("names"),
                        format_args!("{n:?} is not a host name or *.domain"),
                    );
                }
            }
            if c.default && self.cert.is_some() {
                p.add(
                    at("default"),
                    "[tls] cert is the default already: set one or the other",
                );
            }
        }
        if self.certificates.iter().filter(|c| c.default).count() > 1 {
            p.add(
                "tls.certificate",
                "more than one certificate says default = true",
            );
        }
        p.at_most_secs("tls.reload_check_secs", self.reload_check_secs, 86_400);
    }
}
