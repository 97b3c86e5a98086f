//! The answers to the CA's checks while an order is open: for TLS-ALPN-01 (RFC 8737) a
//! self-signed certificate for the name with the `acmeIdentifier` extension, served only to
//! a client that asks for that name with ALPN `acme-tls/1`; for HTTP-01 the key authorization
//! for a token. [`accept`] is the TLS handshake of every listener that may be asked: it reads
//! the ClientHello first and answers a check there and then, so an ordinary client is never
//! served a challenge certificate and the CA's client never reaches SMTP.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::Notify;

use crate::tls::TlsError;

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The checks being answered, shared by the listeners, the HTTP-01 responder and the order
/// in progress; empty outside an order.
#[derive(Debug, Default)]
pub struct Challenges {
    /// Name (lower case) → the configuration that serves its TLS-ALPN-01 certificate.
    tls_alpn: Mutex<HashMap<String, Arc<ServerConfig>>>,
    /// HTTP-01 token → key authorization.
    http: Mutex<HashMap<String, String>>,
    /// Woken when the configuration was reloaded: the ACME task looks again at once (the
    /// names may have changed, or a mistake been mended).
    pub reconsider: Notify,
}

/// Serves one certificate to whoever asks.
#[derive(Debug)]
struct One(Arc<CertifiedKey>);

impl ResolvesServerCert for One {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl Challenges {
    /// Answers TLS-ALPN-01 for `name` with `digest`, the SHA-256 of the key authorization.
    pub fn add_tls_alpn(&self, name: &str, digest: &[u8]) -> Result<(), TlsError> {
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()])?;
        params
            .custom_extensions
            .push(rcgen::CustomExtension::new_acme_identifier(digest));
        let key = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        // Not `CertifiedKey::from_der`: its check that the key matches parses the certificate
        // as an end entity, which refuses the critical acmeIdentifier extension.
        let signing = provider.key_provider.load_private_key(der)?;
        let certified = CertifiedKey::new(vec![cert.der().clone()], signing);
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(One(Arc::new(certified))));
        config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        lock(&self.tls_alpn).insert(name.to_ascii_lowercase(), Arc::new(config));
        Ok(())
    }

    /// Answers HTTP-01 for `token` with `key_authorization`.
    pub fn add_http(&self, token: &str, key_authorization: &str) {
        lock(&self.http).insert(token.to_string(), key_authorization.to_string());
    }

    /// The key authorization for an HTTP-01 `token`, while its order is open.
    pub fn http_answer(&self, token: &str) -> Option<String> {
        lock(&self.http).get(token).cloned()
    }

    /// Forgets every answer (the order is over, whatever its outcome).
    pub fn clear(&self) {
        lock(&self.tls_alpn).clear();
        lock(&self.http).clear();
    }

    /// The challenge configuration for a ClientHello that asks for `acme-tls/1` and a name
    /// being checked.
    fn tls_alpn_for(&self, hello: &ClientHello<'_>) -> Option<Arc<ServerConfig>> {
        let asks_acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        let name = hello.server_name()?.to_ascii_lowercase();
        asks_acme
            .then(|| lock(&self.tls_alpn).get(&name).cloned())
            .flatten()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A server-side TLS handshake on `io`: `Some(stream)` for a client, `None` when it was the
/// CA's TLS-ALPN-01 check (answered and closed).
pub async fn accept<IO>(
    io: IO,
    config: Arc<ServerConfig>,
    challenges: &Challenges,
) -> std::io::Result<Option<tokio_rustls::server::TlsStream<IO>>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let start =
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io).await?;
    if let Some(check) = challenges.tls_alpn_for(&start.client_hello()) {
        let mut answered = start.into_stream(check).await?;
        let _ = answered.shutdown().await;
        return Ok(None);
    }
    start.into_stream(config).await.map(Some)
}
