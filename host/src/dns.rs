//! The DNS resolvers Sluice builds (`hickory-resolver`): for MX routes, and for plugins
//! granted `dns`. One builder, so both read `ip` / `ip:port` settings the same way and cache
//! answers for their TTL.

use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;

pub use crate::config::resolver_addr;

/// A caching resolver asking `server` (`ip` or `ip:port`, named by `setting` in errors), or the
/// system's resolvers when `None`; each query waits `timeout` and is tried `attempts` times.
pub fn resolver(
    server: Option<&str>,
    setting: &str,
    timeout: Duration,
    attempts: usize,
) -> Result<TokioResolver, String> {
    let mut opts = ResolverOpts::default();
    opts.timeout = timeout;
    opts.attempts = attempts;
    let built = match server.map(resolver_addr) {
        Some(Some(addr)) => {
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut ns.connections {
                c.port = addr.port();
            }
            Ok(TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                TokioRuntimeProvider::default(),
            ))
        }
        Some(None) => Err(format!("{setting} is not an address")),
        None => TokioResolver::builder_tokio().map_err(|e| e.to_string()),
    };
    built
        .and_then(|b| b.with_options(opts).build().map_err(|e| e.to_string()))
        .map_err(|e| format!("no DNS resolver: {e}"))
}

/// The response code of a definite negative answer (NXDOMAIN, or NOERROR without records).
pub fn negative(e: &NetError) -> Option<ResponseCode> {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(n)) => Some(n.response_code),
        _ => None,
    }
}
