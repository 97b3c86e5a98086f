//! DKIM private keys on disk: read and parsed once, for the configuration check and for the
//! signer. Its own module so that the configuration (the ground floor) can check keys without
//! depending on sender authentication.

use std::path::Path;

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};

/// A DKIM private key.
pub enum DkimKey {
    /// RSA (PKCS#1 or PKCS#8), signing with SHA-256.
    Rsa(RsaKey<Sha256>),
    /// Ed25519 (PKCS#8).
    Ed25519(Ed25519Key),
}

impl std::fmt::Debug for DkimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DkimKey::Rsa(_) => "DkimKey::Rsa",
            DkimKey::Ed25519(_) => "DkimKey::Ed25519",
        })
    }
}

/// Reads a PEM private key: RSA (PKCS#1 or PKCS#8) or Ed25519 (PKCS#8).
pub fn load(path: &Path) -> Result<DkimKey, String> {
    let pem = std::fs::read(path).map_err(|e| e.to_string())?;
    let key = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| format!("not a PEM file: {e}"))?
        .ok_or("no private key in the file")?;
    if let rustls::pki_types::PrivateKeyDer::Pkcs8(der) = &key
        && let Ok(ed) = Ed25519Key::from_pkcs8_der(der.secret_pkcs8_der())
    {
        return Ok(DkimKey::Ed25519(ed));
    }
    RsaKey::<Sha256>::from_key_der(key)
        .map(DkimKey::Rsa)
        .map_err(|e| format!("neither an RSA nor an Ed25519 key: {e}"))
}
