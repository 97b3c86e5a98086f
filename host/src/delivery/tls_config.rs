//! The rustls client configurations of delivery: verified against the system's roots
//! (`tls = "required"`, REQUIRETLS, MTA-STS, the HTTPS of policies and reports), unverified
//! (opportunistic TLS, as MTAs practise it: RFC 7435), and checked by a host's TLSA records
//! (DANE, [`super::dane`]).

use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use super::dane::Tlsa;

type Provider = Arc<rustls::crypto::CryptoProvider>;

fn builder() -> (
    rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>,
    Provider,
) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    match rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    {
        Ok(b) => (b, provider),
        Err(_) => unreachable!("ring supports TLS 1.2 and 1.3"),
    }
}

/// How long the system's roots, once read, serve before they are read again.
const ROOTS_FOR: Duration = Duration::from_secs(300);

/// Verifies the server's certificate against the system's roots (`SSL_CERT_FILE` and
/// `SSL_CERT_DIR` are honoured). The roots are read from disk at most every five minutes, not
/// for each handshake (a directory of some hundred files, read on the async worker).
pub fn verified() -> Arc<rustls::ClientConfig> {
    static CURRENT: Mutex<Option<(Instant, Arc<rustls::ClientConfig>)>> = Mutex::new(None);
    let mut current = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((read, config)) = current.as_ref()
        && read.elapsed() < ROOTS_FOR
    {
        return config.clone();
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let config = Arc::new(
        builder()
            .0
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    *current = Some((Instant::now(), config.clone()));
    config
}

/// Encrypts without checking the certificate (one configuration serves every handshake).
pub fn unverified() -> Arc<rustls::ClientConfig> {
    static CONFIG: LazyLock<Arc<rustls::ClientConfig>> = LazyLock::new(|| {
        let (b, provider) = builder();
        Arc::new(
            b.dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
                .with_no_client_auth(),
        )
    });
    CONFIG.clone()
}

/// Checks the certificate by `tlsa` (DANE).
pub fn dane(tlsa: Arc<Tlsa>) -> Arc<rustls::ClientConfig> {
    let (b, provider) = builder();
    Arc::new(
        b.dangerous()
            .with_custom_certificate_verifier(Arc::new(DaneVerifier {
                tlsa,
                signatures: NoVerify(provider),
            }))
            .with_no_client_auth(),
    )
}

/// Checks the certificate by a host's TLSA records; the handshake's signatures as usual.
#[derive(Debug)]
struct DaneVerifier {
    tlsa: Arc<Tlsa>,
    signatures: NoVerify,
}

impl rustls::client::danger::ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.tlsa
            .check(
                end_entity,
                intermediates,
                server_name,
                now,
                &self.signatures.0,
            )
            .map(|()| rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(&self, m: &[u8], c: &Cert<'_>, d: &Dss) -> SignatureCheck {
        self.signatures.verify_tls12_signature(m, c, d)
    }

    fn verify_tls13_signature(&self, m: &[u8], c: &Cert<'_>, d: &Dss) -> SignatureCheck {
        self.signatures.verify_tls13_signature(m, c, d)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.signatures.supported_verify_schemes()
    }
}

/// Accepts any certificate: opportunistic TLS protects against passive eavesdropping only,
/// which is all an unauthenticated MX hop can promise (RFC 7435).
#[derive(Debug)]
struct NoVerify(Provider);

type Cert<'a> = rustls::pki_types::CertificateDer<'a>;
type Dss = rustls::DigitallySignedStruct;
type SignatureCheck = Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error>;

impl NoVerify {
    fn algorithms(&self) -> &rustls::crypto::WebPkiSupportedAlgorithms {
        &self.0.signature_verification_algorithms
    }
}

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(&self, m: &[u8], c: &Cert<'_>, d: &Dss) -> SignatureCheck {
        rustls::crypto::verify_tls12_signature(m, c, d, self.algorithms())
    }

    fn verify_tls13_signature(&self, m: &[u8], c: &Cert<'_>, d: &Dss) -> SignatureCheck {
        rustls::crypto::verify_tls13_signature(m, c, d, self.algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
