//! IP networks for plugins that key or allow by client address (greylisting, rate limits,
//! allowlists): `192.0.2.0/24`, `2001:db8::/32`.
//!
//! Written here rather than taken from `ipnet` to keep the SDK's only dependency
//! `wit-bindgen` (a guest's size and build time matter); it is the few lines plugins need.

use std::fmt;
use std::net::IpAddr;

/// An IPv4 or IPv6 network: an address with the host bits cleared, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            IpAddr::V6((bits & m).into())
        }
    }
}

impl Network {
    /// The network of `ip` with prefix length `v4` (IPv4) or `v6` (IPv6), e.g. the /24 of a
    /// client. IPv4-mapped IPv6 addresses count as IPv4.
    pub fn of(ip: IpAddr, v4: u8, v6: u8) -> Network {
        let ip = match ip {
            IpAddr::V6(v) => v.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let prefix = match ip {
            IpAddr::V4(_) => v4.min(32),
            IpAddr::V6(_) => v6.min(128),
        };
        Network {
            addr: mask(ip, prefix),
            prefix,
        }
    }

    /// Parses `ADDRESS/PREFIX` or a bare address (a /32 or /128).
    pub fn parse(text: &str) -> Result<Network, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Network {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// True when `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v) if self.addr.is_ipv4() => match v.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            other => other,
        };
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_of_clients_and_membership() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            Network::of(ip("192.0.2.77"), 24, 64).to_string(),
            "192.0.2.0/24"
        );
        assert_eq!(
            Network::of(ip("2001:db8:1:2:3:4:5:6"), 24, 64).to_string(),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            Network::of(ip("::ffff:192.0.2.9"), 24, 64).to_string(),
            "192.0.2.0/24"
        );
        let n = Network::parse("10.1.0.0/16").unwrap();
        assert!(n.contains(ip("10.1.200.3")));
        assert!(!n.contains(ip("10.2.0.1")));
        assert!(n.contains(ip("::ffff:10.1.0.1")));
        assert!(
            Network::parse("192.0.2.1")
                .unwrap()
                .contains(ip("192.0.2.1"))
        );
        assert!(Network::parse("10.0.0.0/33").is_err());
        assert!(Network::parse("nope").is_err());
        assert!(
            !Network::parse("2001:db8::/32")
                .unwrap()
                .contains(ip("192.0.2.1"))
        );
    }
}
