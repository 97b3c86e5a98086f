//! `[tls]`: the certificate and key for STARTTLS and implicit TLS.

use std::path::PathBuf;

use serde::Deserialize;

use super::Problems;

/// `[tls]`: the server certificate.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct TlsConfig {
    /// PEM certificate chain. Without `cert` and `key`, a self-signed certificate for
    /// `server.hostname` is generated on first start and kept in `<data_dir>/tls/`.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
}

impl TlsConfig {
    pub(super) fn validate(&self, p: &mut Problems) {
        if self.cert.is_some() != self.key.is_some() {
            p.add("tls", "set both cert and key, or neither");
        }
        for (key, path) in [("tls.cert", &self.cert), ("tls.key", &self.key)] {
            if let Some(f) = path
                && !f.is_file()
            {
                p.add(key, format_args!("{} is not a readable file", f.display()));
            }
        }
    }
}
