//! DANE for SMTP (RFC 7672): when a domain's MX records and an MX host's address are
//! DNSSEC-validated, the host's TLSA records (`_PORT._tcp.HOST`), if validated too, say how to
//! authenticate its certificate, and mail goes to it only over TLS they authenticate — never
//! in the clear. A host whose TLSA lookup fails (a bogus answer is SERVFAIL from a validating
//! resolver) is not tried. As RFC 8461 §2 says, a domain with DANE is not also held to its
//! MTA-STS policy.
//!
//! Validation is the resolver's: see [`lookup`] for what that asks of it.

pub mod lookup;
pub mod tlsa;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RecordType;

use lookup::SecureLookups;
pub use tlsa::Tlsa;

/// What DANE asks of the connection to one next hop.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HopDane {
    /// Nothing: the MX records, the host's address or its TLSA records are not validated, or
    /// it publishes none.
    #[default]
    None,
    /// TLS authenticated by these records.
    Authenticate(Arc<Tlsa>),
    /// Validated TLSA records, none usable: TLS required, not authenticated (RFC 7672 §2.2).
    EncryptOnly(Arc<Tlsa>),
    /// The host's TLSA records could not be looked up: it is not tried now.
    Failed(String),
}

impl HopDane {
    /// The policy as the log and the queue history name it (`None` when DANE does not apply).
    pub fn describe(&self) -> Option<String> {
        match self {
            HopDane::None => None,
            HopDane::Authenticate(t) => Some(format!("dane {} tlsa {}", t.host, t.describe())),
            HopDane::EncryptOnly(t) => Some(format!("dane {} (no usable tlsa)", t.host)),
            HopDane::Failed(_) => Some("dane (tlsa lookup failed)".to_string()),
        }
    }
}

impl HopDane {
    /// For TLS reports: the host (TLSA base domain) and records this attempt to `host` was
    /// held to; `None` when DANE did not apply.
    pub fn reported(&self, host: &str) -> Option<(String, Vec<String>)> {
        match self {
            HopDane::None => None,
            HopDane::Authenticate(t) | HopDane::EncryptOnly(t) => {
                Some((t.host.clone(), t.records()))
            }
            HopDane::Failed(_) => Some((host.to_string(), Vec::new())),
        }
    }
}

/// The DANE lookups of the delivery runner.
pub struct Dane {
    /// None when no resolver could be found: then DANE never applies (as with a resolver
    /// that does not validate), and MX lookups fail on their own.
    lookups: Option<SecureLookups>,
}

impl Dane {
    /// Asks `resolver` (the delivery resolver; the system's first when `None`).
    pub fn new(resolver: Option<SocketAddr>) -> Dane {
        let lookups = SecureLookups::new(resolver)
            .inspect_err(|e| tracing::warn!(error = %e, "DANE is off: no resolver to ask"))
            .ok();
        Dane { lookups }
    }

    /// What DANE asks for each of `hosts` (MX host names, with whether the address tried is
    /// IPv6) of `domain`'s mail on `port`. `Err` when the domain's MX lookup fails here (it is
    /// deferred rather than sent under a weaker policy).
    pub async fn hops(
        &self,
        domain: &str,
        hosts: &[(String, bool)],
        port: u16,
    ) -> Result<HashMap<(String, bool), HopDane>, String> {
        let mut out = HashMap::new();
        let Some(lookups) = &self.lookups else {
            return Ok(out);
        };
        let mx = lookups.query(domain, RecordType::MX).await?;
        for (host, v6) in hosts {
            if out.contains_key(&(host.clone(), *v6)) {
                continue;
            }
            let dane = if mx.secure {
                host_dane(lookups, host, *v6, port).await
            } else {
                HopDane::None
            };
            out.insert((host.clone(), *v6), dane);
        }
        Ok(out)
    }
}

/// What DANE asks of `host` on `port`. RFC 7672 §2.2.2: TLSA records are asked only for a
/// host whose address is validated.
async fn host_dane(lookups: &SecureLookups, host: &str, v6: bool, port: u16) -> HopDane {
    let rtype = if v6 { RecordType::AAAA } else { RecordType::A };
    match lookups.query(host, rtype).await {
        Ok(a) if a.secure => {}
        Ok(_) => return HopDane::None,
        Err(e) => return HopDane::Failed(e),
    }
    let owner = format!("_{port}._tcp.{host}");
    match lookups.query(&owner, RecordType::TLSA).await {
        Ok(t) if t.secure && t.code == ResponseCode::NoError && !t.records.is_empty() => {
            let tlsa = Arc::new(Tlsa::from_records(host, &t.records));
            if tlsa.usable() {
                HopDane::Authenticate(tlsa)
            } else {
                HopDane::EncryptOnly(tlsa)
            }
        }
        Ok(_) => HopDane::None,
        Err(e) => HopDane::Failed(e),
    }
}
