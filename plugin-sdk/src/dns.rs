//! DNS lookups through Sluice's resolver: the `sluice:filter/dns` capability (WIT 0.1.2).
//!
//! The operator must grant it: `capabilities = ["dns"]` in the plugin's `[plugin.NAME]`
//! section. Answers come from the host's caching resolver; a lookup that cannot be answered
//! within the resolver's timeout or the hook's deadline returns [`LookupError::Temporary`],
//! so the plugin decides what "no answer" means (a blocklist typically treats it as "not
//! listed").
//!
//! ```ignore
//! use sluice_plugin_sdk::dns::{self, LookupError};
//! match dns::a("2.0.0.127.zen.example") {
//!     Ok(codes) => { /* listed: codes are the 127.0.0.x return codes */ }
//!     Err(LookupError::Nxdomain) => { /* not listed */ }
//!     Err(e) => { /* no answer now: {e} */ }
//! }
//! ```
//!
//! In native tests, [`crate::testing::set_dns`] sets the answers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use crate::bindings::sluice::filter::dns::{LookupError, Mx};

#[cfg(target_family = "wasm")]
mod imp {
    pub use crate::bindings::sluice::filter::dns::{
        lookup_a, lookup_aaaa, lookup_mx, lookup_ptr, lookup_txt,
    };
}

#[cfg(not(target_family = "wasm"))]
mod imp {
    pub use crate::testing::native::dns::{
        lookup_a, lookup_aaaa, lookup_mx, lookup_ptr, lookup_txt,
    };
}

/// The IPv4 addresses of `name`.
pub fn a(name: &str) -> Result<Vec<Ipv4Addr>, LookupError> {
    Ok(imp::lookup_a(name)?
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect())
}

/// The IPv6 addresses of `name`.
pub fn aaaa(name: &str) -> Result<Vec<Ipv6Addr>, LookupError> {
    Ok(imp::lookup_aaaa(name)?
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect())
}

/// The TXT records of `name`, each record's strings joined.
pub fn txt(name: &str) -> Result<Vec<String>, LookupError> {
    imp::lookup_txt(name)
}

/// The reverse-DNS (PTR) names of `ip`, without the trailing dot.
pub fn ptr(ip: IpAddr) -> Result<Vec<String>, LookupError> {
    imp::lookup_ptr(&ip.to_string())
}

/// The mail exchangers of `name`, most preferred first.
pub fn mx(name: &str) -> Result<Vec<Mx>, LookupError> {
    imp::lookup_mx(name)
}

/// The name to look `ip` up under in the DNS list `zone`: the address's octets (IPv4) or
/// nibbles (IPv6) reversed, then the zone — `192.0.2.1` in `zen.example` is
/// `1.2.0.192.zen.example`.
pub fn list_name(ip: IpAddr, zone: &str) -> String {
    let zone = zone.trim_end_matches('.');
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.{zone}", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut out = String::with_capacity(64 + zone.len());
            for byte in v6.octets().iter().rev() {
                for nibble in [byte & 0x0f, byte >> 4] {
                    out.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
                    out.push('.');
                }
            }
            out.push_str(zone);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_names_reverse_the_address() {
        assert_eq!(
            list_name("192.0.2.1".parse().unwrap(), "zen.example."),
            "1.2.0.192.zen.example"
        );
        let v6 = list_name("2001:db8::1".parse().unwrap(), "bl.example");
        assert!(v6.starts_with("1.0.0.0.0.0.0.0"), "{v6}");
        assert!(v6.ends_with("8.b.d.0.1.0.0.2.bl.example"), "{v6}");
        assert_eq!(v6.split('.').count(), 32 + 2);
    }
}
