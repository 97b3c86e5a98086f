//! One HTTPS request from the delivery side (MTA-STS policies, TLS reports): the host is
//! resolved with the delivery resolver (so a private or test DNS answers), the certificate is
//! verified for the host against the system's roots, redirects are not followed, and the
//! answer's body is read up to a bound. Written on hyper's client rather than with `ureq`,
//! whose resolver is the system's.

use http_body_util::BodyExt as _;

use super::mx::MxResolver;

/// What the server answered.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: hyper::StatusCode,
    /// The `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The body, at most the bound asked for.
    pub body: bytes::Bytes,
}

/// Sends `request` to `host`:`port` over verified TLS; reads at most `limit` bytes of the
/// answer's body. The caller bounds the time.
pub async fn send(
    dns: &MxResolver,
    (host, port): (&str, u16),
    request: hyper::Request<http_body_util::Full<bytes::Bytes>>,
    limit: usize,
) -> Result<Answer, String> {
    let ip = *dns
        .addresses(host)
        .await
        .map_err(|e| e.to_string())?
        .first()
        .ok_or_else(|| format!("{host} has no address"))?;
    let tcp = tokio::net::TcpStream::connect((ip, port))
        .await
        .map_err(|e| format!("{host}: {e}"))?;
    let name =
        rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(super::tls_config::verified())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("{host}: TLS: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let response = match sender.send_request(request).await {
        Ok(r) => r,
        Err(e) => {
            driver.abort();
            return Err(e.to_string());
        }
    };
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = http_body_util::Limited::new(response.into_body(), limit)
        .collect()
        .await
        .map(|b| b.to_bytes());
    driver.abort();
    let body = body.map_err(|e| format!("body: {e}"))?;
    Ok(Answer {
        status,
        content_type,
        body,
    })
}
