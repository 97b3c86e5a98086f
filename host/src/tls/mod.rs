//! The server certificates: PEM files from the configuration, chosen by the name the client
//! asks for ([`certificates`], read again when they change), or a self-signed certificate for
//! the host name generated on first start (with `rcgen`) and kept in `<data_dir>/tls/`.
//! TLS 1.2 and 1.3 only, through rustls with the `ring` provider. A certificate can also come
//! from an ACME CA ([`acme`]), whose checks every TLS handshake may answer
//! ([`acme::challenges::accept`]).
//!
//! May use: rustls, rcgen, instant-acme and the configuration's `[tls]`. Used by the SMTP front end, delivery
//! and the webhook client.

pub mod acme;
pub mod certificates;
pub mod stream;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;
pub use certificates::{CertSource, Certificates};

/// A certificate that could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The PEM file holds no certificate or no key.
    #[error("{}: {problem}", .path.display())]
    Pem {
        /// Which file.
        path: PathBuf,
        /// What is missing.
        problem: &'static str,
    },
    /// rustls refused the pair (e.g. key does not match).
    #[error("certificate and key refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// The self-signed certificate could not be generated.
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The certificates `config` serves, the default first: `[tls] cert`, else the
/// `[[tls.certificate]]` marked default, else the ACME one (unless it says `default = false`),
/// else the first of them, else a self-signed one.
pub fn sources(config: &Config) -> Result<Vec<CertSource>, TlsError> {
    let mut sources = configured(config);
    if let Some(i) = config.tls.certificates.iter().position(|c| c.default) {
        let default = sources.remove(i);
        sources.insert(0, default);
    }
    if let Some(acme) = acme::Acme::new(config) {
        let at = if config.tls.acme_is_default() {
            0
        } else {
            sources.len()
        };
        sources.insert(at, acme.source()?);
    }
    let default = match (&config.tls.cert, &config.tls.key) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        _ if sources.is_empty() => Some(self_signed(config)?),
        _ => None,
    };
    if let Some((cert, key)) = default {
        sources.insert(
            0,
            CertSource {
                cert,
                key,
                names: Vec::new(),
            },
        );
    }
    Ok(sources)
}

/// The `[[tls.certificate]]` entries, in order.
fn configured(config: &Config) -> Vec<CertSource> {
    config
        .tls
        .certificates
        .iter()
        .map(|c| CertSource {
            cert: c.cert.clone(),
            key: c.key.clone(),
            names: c.names.iter().map(|n| n.to_ascii_lowercase()).collect(),
        })
        .collect()
}

/// Loads every certificate `config` names, as [`server_config`] would, without writing
/// anything: a self-signed or ACME stand-in not made yet is not made. `sluice check-config`
/// may run as another user than the server (root, say), and must not leave it files it
/// cannot read.
pub fn check(config: &Config) -> Result<(), TlsError> {
    let mut sources = configured(config);
    if let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) {
        sources.push(CertSource {
            cert: cert.clone(),
            key: key.clone(),
            names: Vec::new(),
        });
    }
    if let Some(acme) = acme::Acme::new(config)
        && acme.pem_path().is_file()
    {
        sources.push(CertSource {
            cert: acme.pem_path(),
            key: acme.pem_path(),
            names: Vec::new(),
        });
    }
    for source in &sources {
        certificates::load(source)?;
    }
    Ok(())
}

/// Builds the rustls server configuration for `config`, and the certificates it serves
/// (which [`Certificates::refresh`] reads again when their files change).
pub fn server_config(
    config: &Config,
) -> Result<(Arc<rustls::ServerConfig>, Arc<Certificates>), TlsError> {
    let certificates = Arc::new(Certificates::load(sources(config)?)?);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(certificates.clone());
    Ok((Arc::new(tls), certificates))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(io(path))?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<_, _>>()
        .map_err(io(path))?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            problem: "no certificate found in the PEM file",
        });
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(io(path))?;
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(io(path))?
        .ok_or_else(|| TlsError::Pem {
            path: path.to_path_buf(),
            problem: "no private key found in the PEM file",
        })
}

/// The paths of the kept self-signed pair, generating it when missing.
fn self_signed(config: &Config) -> Result<(PathBuf, PathBuf), TlsError> {
    let dir = config.server.data_dir.join("tls");
    let cert = dir.join("self-signed.crt");
    let key = dir.join("self-signed.key");
    if cert.is_file() && key.is_file() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let names = vec![config.server.hostname.clone(), "localhost".to_string()];
    let generated = rcgen::generate_simple_self_signed(names)?;
    write_private(&key, generated.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert, generated.cert.pem()).map_err(io(&cert))?;
    tracing::warn!(
        cert = %cert.display(),
        "no TLS certificate configured: generated a self-signed certificate for {}; clients will not trust it — set [tls] cert and key for production",
        config.server.hostname
    );
    Ok((cert, key))
}

/// Writes a private key readable by the owner only.
fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    crate::private_files::write_private(path, data).map_err(io(path))
}

/// The negotiated protocol and cipher of a server connection, for logs and `Received:`.
pub fn describe(conn: &rustls::ServerConnection) -> crate::envelope::TlsParams {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(other) => format!("{other:?}"),
        None => "unknown".to_string(),
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_else(|| "unknown".to_string());
    crate::envelope::TlsParams { version, cipher }
}
