//! The PROXY protocol (HAProxy's, versions 1 and 2) in front of an SMTP listener: a load
//! balancer that accepts the client's connection sends one header first, saying whom the
//! connection is from; that client, not the balancer, is then the session's client for
//! everything (SPF, DNS lists, rate limits, greylisting, `Received:`, the journal, the logs).
//!
//! Only peers in the listener's `proxy_trusted` may send one; a header from anyone else, a
//! malformed one, a connection without one, or one that does not arrive within the
//! listener's `proxy_timeout_secs` closes the connection. The header is read exactly (byte by
//! byte for version 1, by its stated length for version 2), so nothing after it is consumed:
//! the SMTP server speaks first, and the client's bytes stay in the socket for the session.
//!
//! [`frame`] and [`parse`] are sans-IO; [`read`] drives them over a socket. The header's
//! grammar is the `ppp` crate's; what is written here is the framing (how many bytes to read
//! next, and the bounds) and what a header means for a session.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt as _;

/// The first twelve bytes of a version 2 header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// The longest version 1 header, CRLF included (the specification's bound).
const V1_MAX: usize = 107;

/// The longest version 2 header read: 16 fixed bytes and addresses with TLVs (HAProxy's
/// SSL and unique-id TLVs fit well within it).
const V2_MAX: usize = 16 + 1024;

/// Where a proxied connection comes from, according to its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxied {
    /// The client's address and port.
    Client(SocketAddr),
    /// The proxy's own connection (a health check: version 2 `LOCAL`, version 1 `UNKNOWN`,
    /// or an address family without an IP address): the peer is the client.
    Local,
}

/// Why a connection's header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The connection did not start with a PROXY header.
    #[error("the connection did not start with a PROXY protocol header")]
    Missing,
    /// The header is longer than the bounds allow.
    #[error("the PROXY header is longer than {0} bytes")]
    TooLong(usize),
    /// The header does not parse.
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
    /// The header did not arrive in time.
    #[error("no complete PROXY header within {0} s")]
    Timeout(u64),
    /// The connection closed or failed before the header was complete.
    #[error("the connection ended before the PROXY header was complete: {0}")]
    Io(String),
}

/// What the bytes read so far need: more bytes (how many), or nothing more (the header is
/// `buf` whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Read this many more bytes.
    More(usize),
    /// `buf` is the whole header.
    Complete,
}

/// How many more bytes the header in `buf` (the connection's first bytes, nothing past the
/// header) needs.
pub fn frame(buf: &[u8]) -> Result<Framing, ProxyError> {
    let head = buf.len().min(V2_SIGNATURE.len());
    let v1 = b"PROXY ";
    if buf.len() < v1.len() {
        // Either signature may still come.
        let could_be = |sig: &[u8]| sig.starts_with(buf);
        return if could_be(v1) || could_be(V2_SIGNATURE) {
            Ok(Framing::More(v1.len() - buf.len()))
        } else {
            Err(ProxyError::Missing)
        };
    }
    if buf.starts_with(v1) {
        if buf.ends_with(b"\r\n") {
            return Ok(Framing::Complete);
        }
        if buf.len() >= V1_MAX {
            return Err(ProxyError::TooLong(V1_MAX));
        }
        return Ok(Framing::More(1));
    }
    if !V2_SIGNATURE.starts_with(&buf[..head]) {
        return Err(ProxyError::Missing);
    }
    // The whole signature before the rest of the fixed part: a stranger's bytes are refused
    // as soon as they differ, not after the wait for more.
    if buf.len() < V2_SIGNATURE.len() {
        return Ok(Framing::More(V2_SIGNATURE.len() - buf.len()));
    }
    if buf.len() < 16 {
        return Ok(Framing::More(16 - buf.len()));
    }
    let total = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if total > V2_MAX {
        return Err(ProxyError::TooLong(V2_MAX));
    }
    Ok(if buf.len() >= total {
        Framing::Complete
    } else {
        Framing::More(total - buf.len())
    })
}

/// What a complete header says.
pub fn parse(header: &[u8]) -> Result<Proxied, ProxyError> {
    use ppp::{HeaderResult, v1, v2};
    let malformed = |e: &dyn std::fmt::Display| ProxyError::Malformed(e.to_string());
    match HeaderResult::parse(header) {
        HeaderResult::V1(Ok(h)) => Ok(match h.addresses {
            v1::Addresses::Tcp4(a) => {
                Proxied::Client(SocketAddr::new(a.source_address.into(), a.source_port))
            }
            v1::Addresses::Tcp6(a) => {
                Proxied::Client(SocketAddr::new(a.source_address.into(), a.source_port))
            }
            v1::Addresses::Unknown => Proxied::Local,
        }),
        HeaderResult::V2(Ok(h)) => Ok(match (h.command, h.addresses) {
            (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                Proxied::Client(SocketAddr::new(a.source_address.into(), a.source_port))
            }
            (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                Proxied::Client(SocketAddr::new(a.source_address.into(), a.source_port))
            }
            _ => Proxied::Local,
        }),
        HeaderResult::V1(Err(e)) => Err(malformed(&e)),
        HeaderResult::V2(Err(e)) => Err(malformed(&e)),
    }
}

/// Reads the header from `stream` (exactly its bytes) within `timeout`.
pub async fn read<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<Proxied, ProxyError> {
    let reading = async {
        let mut buf = Vec::with_capacity(64);
        loop {
            match frame(&buf)? {
                Framing::Complete => return parse(&buf),
                Framing::More(n) => {
                    let at = buf.len();
                    buf.resize(at + n, 0);
                    stream
                        .read_exact(&mut buf[at..])
                        .await
                        .map_err(|e| ProxyError::Io(e.to_string()))?;
                }
            }
        }
    };
    tokio::time::timeout(timeout, reading)
        .await
        .unwrap_or(Err(ProxyError::Timeout(timeout.as_secs())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` through the framing as [`read`] does; the header's meaning.
    fn through(bytes: &[u8]) -> Result<Proxied, ProxyError> {
        let mut buf = Vec::new();
        loop {
            match frame(&buf)? {
                Framing::Complete => return parse(&buf),
                Framing::More(n) => {
                    let at = buf.len();
                    if at + n > bytes.len() {
                        return Err(ProxyError::Io("eof".into()));
                    }
                    buf.extend_from_slice(&bytes[at..at + n]);
                }
            }
        }
    }

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&u16::try_from(addresses.len()).unwrap().to_be_bytes());
        h.extend_from_slice(addresses);
        h
    }

    #[test]
    fn version_1_and_2_give_the_client_and_stop_at_the_header() {
        let client = |s: &str| Ok(Proxied::Client(s.parse().unwrap()));
        assert_eq!(
            through(b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\nEHLO x\r\n"),
            client("192.0.2.7:40000")
        );
        assert_eq!(
            through(b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 25\r\n"),
            client("[2001:db8::7]:40000")
        );
        assert_eq!(through(b"PROXY UNKNOWN\r\n"), Ok(Proxied::Local));
        let ipv4 = [192, 0, 2, 9, 198, 51, 100, 1, 0x9c, 0x40, 0, 25];
        assert_eq!(through(&v2(1, 0x11, &ipv4)), client("192.0.2.9:40000"));
        let mut ipv6 = [0u8; 36];
        ipv6[..2].copy_from_slice(&[0x20, 0x01]);
        ipv6[15] = 9;
        ipv6[32..34].copy_from_slice(&[0x9c, 0x41]);
        assert_eq!(through(&v2(1, 0x21, &ipv6)), client("[2001::9]:40001"));
        // LOCAL (a health check) carries no client.
        assert_eq!(through(&v2(0, 0x00, &[])), Ok(Proxied::Local));
        // A v2 header is read to its stated length, and no further.
        let mut with_tlv = v2(
            1,
            0x11,
            &[ipv4.as_slice(), &[0x05, 0, 2, b'i', b'd']].concat(),
        );
        let len = with_tlv.len();
        with_tlv.extend_from_slice(b"EHLO x\r\n");
        let mut buf = with_tlv[..16].to_vec();
        assert_eq!(frame(&buf), Ok(Framing::More(len - 16)));
        buf.extend_from_slice(&with_tlv[16..len]);
        assert_eq!(frame(&buf), Ok(Framing::Complete));
    }

    #[test]
    fn anything_else_is_refused_with_its_reason() {
        assert_eq!(
            through(b"EHLO client.example\r\n"),
            Err(ProxyError::Missing)
        );
        assert_eq!(through(b"\r\n\r\n\0\r\nQUIZ\n"), Err(ProxyError::Missing));
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        assert_eq!(through(&long), Err(ProxyError::TooLong(V1_MAX)));
        assert!(matches!(
            through(b"PROXY TCP4 999.0.2.7 198.51.100.1 40000 25\r\n"),
            Err(ProxyError::Malformed(_))
        ));
        assert!(matches!(
            through(b"PROXY TCP9 a b c d\r\n"),
            Err(ProxyError::Malformed(_))
        ));
        let mut huge = v2(1, 0x11, &[]);
        huge[14..16].copy_from_slice(&60_000u16.to_be_bytes());
        assert_eq!(through(&huge), Err(ProxyError::TooLong(V2_MAX)));
        // A wrong version nibble, and addresses shorter than the family needs.
        let mut v3 = v2(1, 0x11, &[0; 12]);
        v3[12] = 0x31;
        assert!(matches!(through(&v3), Err(ProxyError::Malformed(_))));
        assert!(matches!(
            through(&v2(1, 0x11, &[1, 2, 3])),
            Err(ProxyError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn a_header_that_does_not_come_in_time_is_refused() {
        let (mut client, mut server) = tokio::io::duplex(64);
        use tokio::io::AsyncWriteExt as _;
        client.write_all(b"PROXY TCP4 192.0.2.7").await.unwrap();
        let r = read(&mut server, Duration::from_millis(50)).await;
        assert_eq!(r, Err(ProxyError::Timeout(0)));
        drop(client);
        let r = read(&mut server, Duration::from_secs(1)).await;
        assert!(
            matches!(r, Err(ProxyError::Missing | ProxyError::Io(_))),
            "{r:?}"
        );
    }
}
