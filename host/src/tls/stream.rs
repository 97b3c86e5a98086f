//! A stream before or after TLS, for the server side (STARTTLS, implicit TLS) and the
//! delivery client (STARTTLS) alike: `T` is rustls's server or client stream type, `P` the
//! plain stream (TCP for the server; TCP or Unix for the client).

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The socket, plain or encrypted.
pub enum MaybeTls<T, P = TcpStream> {
    /// Plain.
    Plain(P),
    /// TLS over the plain stream.
    Tls(Box<T>),
    /// Transient, while the plain stream is handed to the TLS handshake.
    Switching,
}

impl<T, P> MaybeTls<T, P> {
    /// Takes the plain stream out for a TLS handshake (leaving `Switching`).
    pub fn take_plain(&mut self) -> Option<P> {
        match std::mem::replace(self, MaybeTls::Switching) {
            MaybeTls::Plain(s) => Some(s),
            other => {
                *self = other;
                None
            }
        }
    }
}

fn not_connected() -> std::io::Error {
    std::io::ErrorKind::NotConnected.into()
}

impl<T: AsyncRead + Unpin, P: AsyncRead + Unpin> AsyncRead for MaybeTls<T, P> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            MaybeTls::Switching => Poll::Ready(Err(not_connected())),
        }
    }
}

impl<T: AsyncWrite + Unpin, P: AsyncWrite + Unpin> AsyncWrite for MaybeTls<T, P> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            MaybeTls::Switching => Poll::Ready(Err(not_connected())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            MaybeTls::Switching => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            MaybeTls::Switching => Poll::Ready(Ok(())),
        }
    }
}
