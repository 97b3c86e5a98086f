//! DNS lookups that say whether their answer was DNSSEC-validated, for DANE: each query asks
//! the configured resolver with the AD bit set (RFC 6840 §5.7) and reads the AD bit of its
//! reply. As Postfix does with `smtp_dns_support_level = dnssec`, Sluice trusts that bit, so
//! the resolver must validate and be reached over a path nobody can tamper with (unbound on
//! loopback). A bogus answer is SERVFAIL from a validating resolver: a failed lookup here.
//!
//! Written here, on `hickory-proto`'s message codec, rather than through `hickory-resolver`:
//! that resolver sets neither AD nor DO in its queries unless it validates by itself, and its
//! cached lookups do not keep the reply's AD bit.
//!
//! Answers are cached for their TTL (at most an hour, 10,000 names); failures are not.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one query may wait for its reply (UDP, then TCP when truncated), per attempt.
const QUERY_DEADLINE: Duration = Duration::from_secs(4);
/// UDP attempts before a query fails.
const ATTEMPTS: usize = 2;
/// The most answers kept.
const MAX_CACHED: usize = 10_000;
/// The longest an answer is kept, and the shortest.
const MAX_TTL: u32 = 3600;
const MIN_TTL: u32 = 5;

/// A lookup's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// NOERROR or NXDOMAIN (other codes are failures).
    pub code: ResponseCode,
    /// The resolver validated it (the AD bit): records, or their absence, are proven.
    pub secure: bool,
    /// The records of the asked type owned by the name asked (no CNAME is followed).
    pub records: Vec<RData>,
}

/// Answers by (lower-case name, type), with when they expire.
type Cache = HashMap<(String, RecordType), (Arc<Answer>, Instant)>;

/// Asks one resolver, caching answers.
pub struct SecureLookups {
    server: SocketAddr,
    cache: Mutex<Cache>,
}

impl SecureLookups {
    /// Asks `server`, or the system's first resolver (`/etc/resolv.conf`) when `None`.
    pub fn new(server: Option<SocketAddr>) -> Result<SecureLookups, String> {
        let server = match server {
            Some(s) => s,
            None => hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| format!("no DNS resolver: {e}"))
                .and_then(|(conf, _)| {
                    conf.name_servers()
                        .first()
                        .map(|ns| SocketAddr::new(ns.ip, 53))
                        .ok_or_else(|| "no DNS resolver configured".to_string())
                })?,
        };
        Ok(SecureLookups {
            server,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The `rtype` records of `name`, and whether the answer was validated. `Err` for
    /// SERVFAIL (which a validating resolver answers for bogus data), REFUSED, a timeout or a
    /// malformed reply.
    pub async fn query(&self, name: &str, rtype: RecordType) -> Result<Arc<Answer>, String> {
        let key = (name.trim_end_matches('.').to_ascii_lowercase(), rtype);
        let now = Instant::now();
        if let Some((a, until)) = self.cache().get(&key)
            && *until > now
        {
            return Ok(a.clone());
        }
        let fqdn = Name::from_ascii(format!("{}.", key.0))
            .map_err(|e| format!("{name} is not a DNS name: {e}"))?;
        let (answer, ttl) = ask(self.server, &fqdn, rtype).await?;
        let answer = Arc::new(answer);
        let mut cache = self.cache();
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        let ttl = Duration::from_secs(u64::from(ttl.clamp(MIN_TTL, MAX_TTL)));
        cache.insert(key, (answer.clone(), now + ttl));
        Ok(answer)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One query to `server`: UDP (retried once), TCP when the reply is truncated. The answer and
/// how long it may be kept (the least TTL of its records, or of the SOA of a negative one).
async fn ask(server: SocketAddr, name: &Name, rtype: RecordType) -> Result<(Answer, u32), String> {
    let id: u16 = rand::random();
    let mut query = Message::new(id, MessageType::Query, OpCode::Query);
    query.metadata.recursion_desired = true;
    query.metadata.authentic_data = true;
    query.add_query(Query::query(name.clone(), rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    query.set_edns(edns);
    let bytes = query.to_vec().map_err(|e| e.to_string())?;
    let shown = name.to_string();
    let shown = shown.trim_end_matches('.');
    let failed = |why: String| format!("DNS lookup of {shown} {rtype} at {server} failed: {why}");
    let mut reply = None;
    for _ in 0..ATTEMPTS {
        match tokio::time::timeout(QUERY_DEADLINE, over_udp(server, &bytes, id)).await {
            Ok(Ok(m)) => {
                reply = Some(m);
                break;
            }
            Ok(Err(e)) => return Err(failed(e)),
            Err(_) => continue,
        }
    }
    let mut reply = reply.ok_or_else(|| failed("no reply".to_string()))?;
    if reply.metadata.truncation {
        reply = tokio::time::timeout(QUERY_DEADLINE, over_tcp(server, &bytes, id))
            .await
            .map_err(|_| failed("no reply over TCP".to_string()))?
            .map_err(failed)?;
    }
    let asked = reply.queries.first().map(|q| (&q.name, q.query_type));
    if asked.is_none_or(|(n, t)| n.to_lowercase() != name.to_lowercase() || t != rtype) {
        return Err(failed("the reply is for another question".to_string()));
    }
    let code = reply.metadata.response_code;
    if code == ResponseCode::ServFail {
        return Err(failed(
            "SERVFAIL (a validating resolver's answer to bogus DNSSEC data, too)".to_string(),
        ));
    }
    if code != ResponseCode::NoError && code != ResponseCode::NXDomain {
        return Err(failed(code.to_string()));
    }
    let owned: Vec<_> = reply
        .answers
        .iter()
        .filter(|r| r.record_type() == rtype && r.name.to_lowercase() == name.to_lowercase())
        .collect();
    let ttl = if owned.is_empty() {
        reply
            .authorities
            .iter()
            .find_map(|r| match &r.data {
                RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                _ => None,
            })
            .unwrap_or(60)
    } else {
        owned.iter().map(|r| r.ttl).min().unwrap_or(60)
    };
    let answer = Answer {
        code,
        secure: reply.metadata.authentic_data,
        records: owned.into_iter().map(|r| r.data.clone()).collect(),
    };
    Ok((answer, ttl))
}

/// Sends `bytes` and waits for the reply with `id` from `server` (others are ignored).
async fn over_udp(server: SocketAddr, bytes: &[u8], id: u16) -> Result<Message, String> {
    let local: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(local)
        .await
        .map_err(|e| e.to_string())?;
    socket.connect(server).await.map_err(|e| e.to_string())?;
    socket.send(bytes).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = socket.recv(&mut buf).await.map_err(|e| e.to_string())?;
        if let Ok(m) = Message::from_vec(&buf[..n])
            && m.metadata.id == id
            && m.metadata.message_type == MessageType::Response
        {
            return Ok(m);
        }
    }
}

/// The query over TCP (RFC 1035 §4.2.2: each message after its two-byte length).
async fn over_tcp(server: SocketAddr, bytes: &[u8], id: u16) -> Result<Message, String> {
    let mut s = tokio::net::TcpStream::connect(server)
        .await
        .map_err(|e| e.to_string())?;
    let len = u16::try_from(bytes.len()).map_err(|e| e.to_string())?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    s.write_all(&framed).await.map_err(|e| e.to_string())?;
    let len = s.read_u16().await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; usize::from(len)];
    s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    let m = Message::from_vec(&buf).map_err(|e| e.to_string())?;
    if m.metadata.id != id {
        return Err("a reply with another id".to_string());
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::rr::Record;
    use hickory_resolver::proto::rr::rdata::A;

    /// A resolver on loopback that answers every query once, with the AD bit as told.
    async fn resolver(ad: bool, code: ResponseCode) -> (SocketAddr, tokio::task::JoinHandle<u32>) {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut served = 0;
            let mut buf = vec![0u8; 2048];
            while let Ok(Ok((n, from))) =
                tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buf)).await
            {
                let q = Message::from_vec(&buf[..n]).unwrap();
                assert!(q.metadata.authentic_data, "the query asks for the AD bit");
                let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
                r.metadata.authentic_data = ad;
                r.metadata.response_code = code;
                r.add_query(q.queries[0].clone());
                r.add_answer(Record::from_rdata(
                    q.queries[0].name.clone(),
                    300,
                    RData::A(A::new(127, 0, 0, 9)),
                ));
                socket.send_to(&r.to_vec().unwrap(), from).await.unwrap();
                served += 1;
            }
            served
        });
        (addr, task)
    }

    #[tokio::test]
    async fn the_ad_bit_is_read_and_answers_are_cached() {
        let (addr, task) = resolver(true, ResponseCode::NoError).await;
        let lookups = SecureLookups::new(Some(addr)).unwrap();
        let a = lookups.query("mx.example", RecordType::A).await.unwrap();
        assert!(a.secure);
        assert_eq!(a.records, vec![RData::A(A::new(127, 0, 0, 9))]);
        let again = lookups.query("MX.example.", RecordType::A).await.unwrap();
        assert_eq!(a, again);
        assert_eq!(
            task.await.unwrap(),
            1,
            "the second answer came from the cache"
        );

        let (addr, _task) = resolver(false, ResponseCode::NoError).await;
        let plain = SecureLookups::new(Some(addr)).unwrap();
        assert!(
            !plain
                .query("mx.example", RecordType::A)
                .await
                .unwrap()
                .secure
        );
    }

    #[tokio::test]
    async fn servfail_is_a_failure_and_not_cached() {
        let (addr, task) = resolver(false, ResponseCode::ServFail).await;
        let lookups = SecureLookups::new(Some(addr)).unwrap();
        for _ in 0..2 {
            let e = lookups
                .query("mx.example", RecordType::TLSA)
                .await
                .unwrap_err();
            assert!(
                e.ends_with(&format!("of mx.example TLSA at {addr} failed: SERVFAIL (a validating resolver's answer to bogus DNSSEC data, too)")),
                "{e}"
            );
        }
        assert_eq!(task.await.unwrap(), 2, "a failure is asked again");
    }
}
