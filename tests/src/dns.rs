//! A tiny authoritative DNS server on loopback UDP for MX, SPF, DKIM, DMARC, DNSBL and PTR tests: answers
//! from a fixed list of records, NOERROR with no answers for a name that exists without the
//! asked type, NXDOMAIN for an unknown name, SERVFAIL for names marked broken, and no answer
//! at all for names marked silent (a timeout). Built on `hickory-proto`'s message codec.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, MX, PTR, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// A zone under test.
#[derive(Debug, Clone, Default)]
pub struct Zone {
    records: Vec<Record>,
    broken: Vec<Name>,
    silent: Vec<Name>,
}

fn name(s: &str) -> Name {
    Name::from_ascii(format!("{}.", s.trim_end_matches('.'))).expect("a DNS name")
}

impl Zone {
    /// An empty zone.
    pub fn new() -> Zone {
        Zone::default()
    }

    /// Adds `owner MX preference exchange` (`"."` for a null MX).
    pub fn mx(mut self, owner: &str, preference: u16, exchange: &str) -> Zone {
        let exchange = if exchange == "." {
            Name::root()
        } else {
            name(exchange)
        };
        self.records.push(Record::from_rdata(
            name(owner),
            60,
            RData::MX(MX::new(preference, exchange)),
        ));
        self
    }

    /// Adds an A or AAAA record.
    pub fn addr(mut self, owner: &str, ip: IpAddr) -> Zone {
        let data = match ip {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        };
        self.records.push(Record::from_rdata(name(owner), 60, data));
        self
    }

    /// Adds the PTR record of `ip` (reverse DNS) naming `target`.
    pub fn ptr(mut self, ip: IpAddr, target: &str) -> Zone {
        self.records.push(Record::from_rdata(
            Name::from(ip),
            60,
            RData::PTR(PTR(name(target))),
        ));
        self
    }

    /// Adds a TXT record (split into 255-byte character-strings as DNS requires).
    pub fn txt(mut self, owner: &str, text: &str) -> Zone {
        let parts: Vec<String> = text
            .as_bytes()
            .chunks(255)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        self.records.push(Record::from_rdata(
            name(owner),
            60,
            RData::TXT(TXT::new(parts)),
        ));
        self
    }

    /// Queries for `owner` get no answer at all: the client times out.
    pub fn silent(mut self, owner: &str) -> Zone {
        self.silent.push(name(owner));
        self
    }

    /// Queries for `owner` get SERVFAIL.
    pub fn broken(mut self, owner: &str) -> Zone {
        self.broken.push(name(owner));
        self
    }

    fn answer(&self, query: &Message) -> Message {
        let mut reply = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
        reply.metadata.authoritative = true;
        reply.metadata.recursion_desired = query.metadata.recursion_desired;
        reply.metadata.recursion_available = true;
        let Some(q) = query.queries.first() else {
            reply.metadata.response_code = ResponseCode::FormErr;
            return reply;
        };
        reply.add_query(q.clone());
        let qname = q.name.to_lowercase();
        if self.broken.iter().any(|b| b.to_lowercase() == qname) {
            reply.metadata.response_code = ResponseCode::ServFail;
            return reply;
        }
        let owned: Vec<&Record> = self
            .records
            .iter()
            .filter(|r| r.name.to_lowercase() == qname)
            .collect();
        if owned.is_empty() {
            reply.metadata.response_code = ResponseCode::NXDomain;
            return reply;
        }
        for r in owned {
            if r.record_type() == q.query_type || q.query_type == RecordType::ANY {
                reply.add_answer(r.clone());
            }
        }
        reply
    }
}

/// A running DNS server; stopped when dropped.
pub struct Dns {
    /// Where it listens (UDP).
    pub addr: SocketAddr,
    queries: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Dns {
    /// Serves `zone` on 127.0.0.1 (an ephemeral UDP port).
    pub async fn start(zone: Zone) -> Dns {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind DNS");
        let addr = socket.local_addr().expect("DNS address");
        let zone = Arc::new(zone);
        let queries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = queries.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let silent = query.queries.first().is_some_and(|q| {
                    zone.silent
                        .iter()
                        .any(|s| s.to_lowercase() == q.name.to_lowercase())
                });
                if silent {
                    continue;
                }
                if let Ok(bytes) = zone.answer(&query).to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
        Dns {
            addr,
            queries,
            task,
        }
    }

    /// Queries received so far.
    pub fn queries(&self) -> usize {
        self.queries.load(std::sync::atomic::Ordering::Relaxed)
    }
}
