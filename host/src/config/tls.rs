//! `[tls]`: the certificates for STARTTLS and implicit TLS — a default one, others chosen by
//! the name the client asks for (`[[tls.certificate]]`) — and how often their files are
//! checked for changes — and `[tls.acme]`, a certificate obtained and renewed from an ACME
//! certificate authority (RFC 8555).

use std::net::SocketAddr;
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
    /// A certificate for some names, obtained and renewed from an ACME CA.
    pub acme: Option<AcmeConfig>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            certificates: Vec::new(),
            reload_check_secs: 10,
            acme: None,
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

/// How the CA checks that Sluice answers for a name (RFC 8555 §8).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// TLS-ALPN-01 (RFC 8737): the CA connects with TLS, port 443 in production, to
    /// `tls_alpn_listen` or an smtps listener.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// HTTP-01: the CA fetches `http://NAME/.well-known/acme-challenge/…` (port 80 in
    /// production), answered on `http_listen`.
    #[serde(rename = "http-01")]
    Http01,
}

/// `[tls.acme]`: a certificate obtained from an ACME certificate authority and renewed
/// before it expires; kept with the account key in `<data_dir>/acme/`, owner-only.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// The CA's directory URL (https), e.g. Let's Encrypt's.
    pub directory: String,
    /// Contact addresses for the account (`mailto:…`).
    #[serde(default)]
    pub contact: Vec<String>,
    /// The names the certificate covers (the first is its subject). Default: `server.hostname`.
    #[serde(default)]
    pub names: Vec<String>,
    /// The operator has read and accepts the CA's terms of service (the CA requires it).
    #[serde(default)]
    pub terms_agreed: bool,
    /// How the CA checks the names.
    #[serde(default = "tls_alpn")]
    pub challenge: AcmeChallenge,
    /// Where TLS-ALPN-01 is answered besides the smtps listeners (`0.0.0.0:443`): a responder
    /// that answers only the CA's checks.
    pub tls_alpn_listen: Option<SocketAddr>,
    /// Where HTTP-01 is answered (`0.0.0.0:80`): a responder that answers only the CA's checks.
    pub http_listen: Option<SocketAddr>,
    /// A CA certificate (PEM) to trust for the directory's HTTPS instead of the system's roots:
    /// for a private ACME CA.
    pub ca_file: Option<PathBuf>,
    /// Renew this many days before expiry, or when a third of the lifetime is left if that
    /// is later (a short-lived certificate).
    #[serde(default = "thirty")]
    pub renew_before_days: u32,
    /// Also the default certificate (for clients that send no name). Default: when neither
    /// `[tls] cert` nor a `[[tls.certificate]]` is the default.
    pub default: Option<bool>,
}

fn tls_alpn() -> AcmeChallenge {
    AcmeChallenge::TlsAlpn01
}

fn thirty() -> u32 {
    30
}

/// True for a host name, or `*.domain` when `wildcard` is allowed.
fn is_host_name(n: &str, wildcard: bool) -> bool {
    let bare = match n.strip_prefix("*.") {
        Some(rest) if wildcard => rest,
        _ => n,
    };
    !bare.is_empty()
        && !bare.contains('*')
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !bare.split('.').any(str::is_empty)
}

impl AcmeConfig {
    fn validate(&self, p: &mut Problems, smtps_listener: bool, default_elsewhere: bool) {
        match self.directory.split_once("://") {
            Some(("https", rest)) if !rest.is_empty() => {}
            _ => p.add(
                "tls.acme.directory",
                format_args!("{:?} is not an https:// URL", self.directory),
            ),
        }
        for c in &self.contact {
            let Some(addr) = c.strip_prefix("mailto:") else {
                p.add(
                    "tls.acme.contact",
                    format_args!("{c:?} must be a mailto: address"),
                );
                continue;
            };
            if !addr.contains('@') || addr.contains([' ', ',', '<', '>']) {
                p.add(
                    "tls.acme.contact",
                    format_args!("{c:?} is not a single mail address"),
                );
            }
        }
        for n in &self.names {
            // No wildcards: they need DNS-01, which Sluice does not answer.
            if !is_host_name(n, false) {
                p.add(
                    "tls.acme.names",
                    format_args!(
                        "{n:?} is not a host name (wildcards need DNS-01, which Sluice does not answer)"
                    ),
                );
            }
        }
        if !self.terms_agreed {
            p.add(
                "tls.acme.terms_agreed",
                "the CA requires its terms of service to be accepted: read them and set terms_agreed = true",
            );
        }
        match self.challenge {
            AcmeChallenge::TlsAlpn01 if self.tls_alpn_listen.is_none() && !smtps_listener => {
                p.add(
                    "tls.acme.tls_alpn_listen",
                    "tls-alpn-01 needs an address to answer on (the CA connects to port 443) or an smtps listener",
                );
            }
            AcmeChallenge::Http01 if self.http_listen.is_none() => p.add(
                "tls.acme.http_listen",
                "http-01 needs an address to answer on (the CA connects to port 80)",
            ),
            _ => {}
        }
        if let Some(f) = &self.ca_file
            && !f.is_file()
        {
            p.add(
                "tls.acme.ca_file",
                format_args!("{} is not a readable file", f.display()),
            );
        }
        p.range("tls.acme.renew_before_days", self.renew_before_days, 1, 60);
        if self.default == Some(true) && default_elsewhere {
            p.add(
                "tls.acme.default",
                "another certificate is the default already: set one or the other",
            );
        }
    }
}

impl TlsConfig {
    pub(super) fn validate(&self, p: &mut Problems, smtps_listener: bool) {
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
                if !is_host_name(n, true) {
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
        if let Some(acme) = &self.acme {
            let default_elsewhere =
                self.cert.is_some() || self.certificates.iter().any(|c| c.default);
            acme.validate(p, smtps_listener, default_elsewhere);
        }
    }

    /// True when the ACME certificate is the default one.
    pub fn acme_is_default(&self) -> bool {
        self.acme.as_ref().is_some_and(|a| {
            a.default
                .unwrap_or(self.cert.is_none() && !self.certificates.iter().any(|c| c.default))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::super::tests::{problems_of, says_all};

    #[test]
    fn acme_mistakes_are_named_by_key() {
        let msg = problems_of(
            "[[listener]]\nkind = \"smtp\"\naddress = \"127.0.0.1:25\"\n\
             [tls]\ncert = \"/nonexistent.crt\"\nkey = \"/nonexistent.key\"\n\
             [tls.acme]\ndirectory = \"http://ca.example/dir\"\ncontact = [\"admin@example.org\", \"mailto:nobody\"]\n\
             names = [\"*.example.org\", \"mx..example.org\"]\nca_file = \"/nonexistent.pem\"\nrenew_before_days = 0\ndefault = true\n",
        );
        says_all(
            &msg,
            &[
                "tls.acme.directory: \"http://ca.example/dir\" is not an https:// URL",
                "tls.acme.contact: \"admin@example.org\" must be a mailto: address",
                "tls.acme.contact: \"mailto:nobody\" is not a single mail address",
                "tls.acme.names: \"*.example.org\" is not a host name (wildcards need DNS-01",
                "tls.acme.names: \"mx..example.org\" is not a host name",
                "tls.acme.terms_agreed: the CA requires its terms of service to be accepted",
                "tls.acme.tls_alpn_listen: tls-alpn-01 needs an address to answer on",
                "tls.acme.ca_file: /nonexistent.pem is not a readable file",
                "tls.acme.renew_before_days: 0 is out of range (1 to 60)",
                "tls.acme.default: another certificate is the default already",
            ],
        );
        let msg = problems_of(
            "[tls.acme]\ndirectory = \"https://ca.example/dir\"\nterms_agreed = true\nchallenge = \"http-01\"\n",
        );
        says_all(&msg, &["tls.acme.http_listen: http-01 needs an address"]);
        assert!(
            Config::parse("[tls.acme]\ndirectory = \"https://x\"\nchallenge = \"dns-01\"\n")
                .is_err()
        );
    }
}
