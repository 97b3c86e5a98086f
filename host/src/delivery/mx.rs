//! Finding a domain's mail exchangers (RFC 5321 §5.1) with `hickory-resolver`: MX records in
//! preference order (equal preferences in random order), the domain itself as an implicit MX
//! when it has none, and the null MX of RFC 7505 ("this domain accepts no mail").
//!
//! The DNS server is the system's unless `[delivery] resolver` names one (tests run their own
//! on loopback). Answers are cached by the resolver for their TTL.

use std::net::IpAddr;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::op::ResponseCode;

use crate::dns::negative;
use hickory_resolver::proto::rr::RData;

/// Why a domain's mail exchangers could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MxError {
    /// The domain publishes a null MX: it accepts no mail (permanent).
    #[error("{0} does not accept mail (null MX, RFC 7505)")]
    NullMx(String),
    /// The domain does not exist (permanent).
    #[error("domain {0} does not exist (NXDOMAIN)")]
    NoSuchDomain(String),
    /// The domain has neither MX nor address records (permanent).
    #[error("{0} has no MX and no address records")]
    NoMailHost(String),
    /// DNS failed for now: timeout, SERVFAIL, no resolver (temporary).
    #[error("DNS lookup for {name} failed: {problem}")]
    Temporary {
        /// The name looked up.
        name: String,
        /// What went wrong.
        problem: String,
    },
}

impl MxError {
    /// True when retrying later may help.
    pub fn is_temporary(&self) -> bool {
        matches!(self, MxError::Temporary { .. })
    }
}

/// One mail exchanger, with its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchanger {
    /// Its host name (without the trailing dot).
    pub name: String,
    /// MX preference (0 for an implicit MX).
    pub preference: u16,
}

pub use crate::dns::resolver_addr;

/// A caching DNS resolver for MX routes.
pub struct MxResolver {
    resolver: Result<TokioResolver, String>,
}

impl MxResolver {
    /// A resolver asking `server` (an address accepted by [`resolver_addr`]), or the
    /// system's resolvers when `None`.
    pub fn new(server: Option<&str>) -> MxResolver {
        let resolver = crate::dns::resolver(server, "delivery.resolver", Duration::from_secs(5), 2);
        MxResolver { resolver }
    }

    fn resolver(&self, name: &str) -> Result<&TokioResolver, MxError> {
        self.resolver.as_ref().map_err(|e| MxError::Temporary {
            name: name.to_string(),
            problem: e.clone(),
        })
    }

    /// The mail exchangers of `domain`, most preferred first.
    pub async fn exchangers(&self, domain: &str) -> Result<Vec<Exchanger>, MxError> {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        let lookup = self.resolver(domain)?.mx_lookup(fqdn.as_str()).await;
        let mut mx: Vec<Exchanger> = match lookup {
            Ok(l) => l
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(mx) => Some((mx.preference, mx.exchange.clone())),
                    _ => None,
                })
                .map(|(preference, exchange)| {
                    if exchange.is_root() {
                        Exchanger {
                            name: String::new(),
                            preference,
                        }
                    } else {
                        Exchanger {
                            name: exchange.to_ascii().trim_end_matches('.').to_string(),
                            preference,
                        }
                    }
                })
                .collect(),
            Err(e) => match negative(&e) {
                Some(ResponseCode::NXDomain) => {
                    return Err(MxError::NoSuchDomain(domain.to_string()));
                }
                Some(ResponseCode::NoError) => Vec::new(),
                _ => {
                    return Err(MxError::Temporary {
                        name: domain.to_string(),
                        problem: e.to_string(),
                    });
                }
            },
        };
        if mx.iter().any(|m| m.name.is_empty()) {
            return Err(MxError::NullMx(domain.to_string()));
        }
        if mx.is_empty() {
            // No MX: the domain itself is the implicit MX (RFC 5321 §5.1).
            return Ok(vec![Exchanger {
                name: domain.trim_end_matches('.').to_string(),
                preference: 0,
            }]);
        }
        // Preference order; equal preferences shuffled to spread load (RFC 5321 §5.1).
        {
            use rand::seq::SliceRandom as _;
            mx.shuffle(&mut rand::rng());
        }
        mx.sort_by_key(|m| m.preference);
        Ok(mx)
    }

    /// The TXT records of `name`, each one string (its pieces joined); empty when it has none.
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, MxError> {
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        match self.resolver(name)?.txt_lookup(fqdn.as_str()).await {
            Ok(l) => Ok(l
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(t) => Some(
                        t.txt_data
                            .iter()
                            .map(|piece| String::from_utf8_lossy(piece))
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .collect()),
            Err(e) if negative(&e).is_some() => Ok(Vec::new()),
            Err(e) => Err(MxError::Temporary {
                name: name.to_string(),
                problem: e.to_string(),
            }),
        }
    }

    /// The addresses of `host` (AAAA and A); empty when it has none.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, MxError> {
        if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        match self.resolver(host)?.lookup_ip(fqdn.as_str()).await {
            Ok(l) => Ok(l.iter().collect()),
            Err(e) if negative(&e).is_some() => Ok(Vec::new()),
            Err(e) => Err(MxError::Temporary {
                name: host.to_string(),
                problem: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolver_addresses() {
        assert_eq!(resolver_addr("127.0.0.1"), "127.0.0.1:53".parse().ok());
        assert_eq!(
            resolver_addr("127.0.0.1:5353"),
            "127.0.0.1:5353".parse().ok()
        );
        assert_eq!(resolver_addr("[::1]:5353"), "[::1]:5353".parse().ok());
        assert_eq!(resolver_addr("::1"), "[::1]:53".parse().ok());
        assert_eq!(resolver_addr("dns.example"), None);
    }
}
