//! The `dns` capability: lookups for a plugin through the host's resolver (or a capture's
//! answers, for a replay: [`crate::plugin::tape`]), within per-transaction and per-second
//! budgets and the hook's deadline.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use wasmtime::component::HasData;

use super::super::bindings::v0_1::sluice::filter::dns;
use super::super::limits::CallBudget;
use super::BadCall;
use super::records::{Lookup, address, host_name, text};
use crate::plugin::tape::PluginTap;

/// Longest DNS name a plugin may look up (RFC 1035's limit on a name's text).
const MAX_NAME_BYTES: usize = 253;

/// The resolver plugins ask, with its timeout per lookup and its budgets: lookups per
/// transaction (each plugin instance lives for one transaction) and lookups per second for
/// all plugins together.
pub struct PluginDns {
    /// A caching resolver (hickory) asking the configured server (boxed: it is large, and
    /// there is one per server); an error when it could not be built (every lookup then
    /// answers `temporary` with it).
    resolver: Result<Box<TokioResolver>, String>,
    timeout: Duration,
    per_transaction: u32,
    rate: RateLimit,
}

/// A token bucket: `per_second` tokens a second, at most `per_second` saved up.
struct RateLimit {
    per_second: f64,
    bucket: std::sync::Mutex<(f64, Instant)>,
}

impl RateLimit {
    fn new(per_second: u32) -> RateLimit {
        let per_second = f64::from(per_second.max(1));
        RateLimit {
            per_second,
            bucket: std::sync::Mutex::new((per_second, Instant::now())),
        }
    }

    /// Takes one token; false when none is left.
    fn take(&self) -> bool {
        let mut b = self
            .bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let refill = now.duration_since(b.1).as_secs_f64() * self.per_second;
        *b = ((b.0 + refill).min(self.per_second), now);
        if b.0 >= 1.0 {
            b.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

impl PluginDns {
    /// A caching resolver asking `server` (`ip` or `ip:port`; `None`: the system's), waiting
    /// at most `timeout` for an answer, with the default budgets.
    pub fn new(server: Option<&str>, timeout: Duration) -> PluginDns {
        let defaults = crate::config::PluginsConfig::default();
        PluginDns::with_budgets(
            server,
            timeout,
            defaults.dns_lookups_per_transaction,
            defaults.dns_lookups_per_second,
        )
    }

    /// Like [`PluginDns::new`], with `per_transaction` lookups allowed to each plugin in one
    /// transaction and `per_second` to all plugins together.
    pub fn with_budgets(
        server: Option<&str>,
        timeout: Duration,
        per_transaction: u32,
        per_second: u32,
    ) -> PluginDns {
        PluginDns {
            resolver: crate::dns::resolver(server, "plugins.resolver", timeout, 1).map(Box::new),
            timeout,
            per_transaction,
            rate: RateLimit::new(per_second),
        }
    }

    /// The resolver of `[plugins] resolver`, `dns_timeout_ms` and the lookup budgets.
    pub fn from_config(config: &crate::config::Config) -> PluginDns {
        PluginDns::with_budgets(
            config.plugins.resolver.as_deref(),
            Duration::from_millis(config.plugins.dns_timeout_ms),
            config.plugins.dns_lookups_per_transaction,
            config.plugins.dns_lookups_per_second,
        )
    }
}

/// The most of a hook's remaining time a lookup leaves unused, so the plugin can still act on
/// a `temporary` answer before its deadline.
const ANSWER_MARGIN: Duration = Duration::from_millis(50);

/// An instance's `dns` context: its grant, if any, and the lookups it made (an instance
/// lives for one transaction).
#[derive(Clone, Default)]
pub struct DnsCtx {
    pub(crate) grant: Option<Arc<PluginDns>>,
    pub(crate) used: u32,
    /// Records the answers, or gives a capture's back instead of asking the resolver.
    pub(crate) tap: Option<PluginTap>,
}

/// What a `dns` call sees of the store's data: the context and the hook call's budget.
pub struct DnsView<'a> {
    pub ctx: &'a mut DnsCtx,
    pub budget: &'a mut CallBudget,
}

/// The `dns` interface's view type for the linker.
pub struct DnsApi;

impl HasData for DnsApi {
    type Data<'a> = DnsView<'a>;
}

impl DnsView<'_> {
    /// Looks `name` up for a plugin, bounded by the lookup timeout and the hook's deadline.
    async fn lookup(
        &mut self,
        what: &str,
        name: &str,
        kind: RecordType,
    ) -> wasmtime::Result<Lookup> {
        self.budget.spend(what)?;
        let Some(plugin_dns) = self.ctx.grant.clone() else {
            return Err(BadCall(format!("{what}: the dns capability is not granted")).into());
        };
        let name = name.trim_end_matches('.');
        if name.is_empty()
            || name.len() > MAX_NAME_BYTES
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            || name
                .split('.')
                .any(|label| label.is_empty() || label.len() > 63)
        {
            return Ok(Err(dns::LookupError::Invalid(format!(
                "{:?} is not a DNS name",
                super::super::truncate(name, 80)
            ))));
        }
        // Budgets: per transaction (this instance's lifetime) and for all plugins per second.
        // Spent, the lookup answers `temporary`, as an unreachable list would.
        if self.ctx.used >= plugin_dns.per_transaction {
            return Ok(Err(dns::LookupError::Temporary(format!(
                "this transaction's {} DNS lookups are spent (plugins.dns_lookups_per_transaction)",
                plugin_dns.per_transaction
            ))));
        }
        self.ctx.used += 1;
        let fqdn = format!("{name}.");
        // A replay answers what the recorded transaction got, rate limit and timeouts
        // included: nothing of today's resolver or load shows through.
        if let Some(replayed) = self
            .ctx
            .tap
            .as_ref()
            .and_then(|t| t.dns_replayed(&fqdn, kind))
        {
            return Ok(replayed);
        }
        let found = self.ask(&plugin_dns, &fqdn, kind).await;
        if let Some(tap) = &self.ctx.tap {
            tap.dns_answered(&fqdn, kind, &found);
        }
        Ok(found)
    }

    /// Asks the resolver, within the rate of all plugins' lookups and the time left.
    async fn ask(&self, plugin_dns: &PluginDns, fqdn: &str, kind: RecordType) -> Lookup {
        if !plugin_dns.rate.take() {
            return Err(dns::LookupError::Temporary(
                "plugins' DNS lookups are over their rate (plugins.dns_lookups_per_second)"
                    .to_string(),
            ));
        }
        let resolver = match &plugin_dns.resolver {
            Ok(r) => r,
            Err(e) => return Err(dns::LookupError::Temporary(e.clone())),
        };
        // Ends before the hook's deadline, leaving the plugin a quarter of the time it has
        // left (at most ANSWER_MARGIN) to act on the answer; it used to end at the deadline,
        // so a plugin never saw its `temporary` answer and failed instead.
        let now = Instant::now();
        let left = self.budget.deadline.saturating_duration_since(now);
        let until = (now + left - (left / 4).min(ANSWER_MARGIN)).min(now + plugin_dns.timeout);
        if until <= now {
            return Err(dns::LookupError::Temporary(
                "no time left before the hook's deadline".to_string(),
            ));
        }
        run_lookup(resolver, fqdn, kind, until).await
    }
}

/// Asks the live resolver.
async fn run_lookup(
    resolver: &TokioResolver,
    fqdn: &str,
    kind: RecordType,
    until: Instant,
) -> Lookup {
    match tokio::time::timeout_at(until.into(), resolver.lookup(fqdn, kind)).await {
        Err(_) => Err(dns::LookupError::Temporary(
            "no answer within the time allowed".to_string(),
        )),
        Ok(Ok(lookup)) => {
            let records: Vec<RData> = lookup
                .answers()
                .iter()
                .filter(|r| r.record_type() == kind)
                .map(|r| r.data.clone())
                .collect();
            if records.is_empty() {
                Err(dns::LookupError::NoRecords)
            } else {
                Ok(records)
            }
        }
        Ok(Err(e)) => match crate::dns::negative(&e) {
            Some(ResponseCode::NXDomain) => Err(dns::LookupError::Nxdomain),
            Some(ResponseCode::NoError) => Err(dns::LookupError::NoRecords),
            _ => Err(dns::LookupError::Temporary(
                super::super::truncate(&e.to_string(), 200).to_string(),
            )),
        },
    }
}

/// What a lookup of the `dns` interface answers: a list, or why there is none.
type Answer<T> = wasmtime::Result<Result<Vec<T>, dns::LookupError>>;

impl DnsView<'_> {
    /// The records of one kind at `name`, each made into what the plugin gets by `pick`.
    async fn records<T>(
        &mut self,
        what: &str,
        name: &str,
        kind: RecordType,
        pick: impl Fn(&RData) -> Option<T>,
    ) -> Answer<T> {
        let found = self.lookup(what, name, kind).await?;
        Ok(found.map(|rs| rs.iter().filter_map(pick).collect()))
    }
}

impl dns::Host for DnsView<'_> {
    async fn lookup_a(&mut self, name: String) -> Answer<String> {
        self.records("dns.lookup-a", &name, RecordType::A, address)
            .await
    }

    async fn lookup_aaaa(&mut self, name: String) -> Answer<String> {
        self.records("dns.lookup-aaaa", &name, RecordType::AAAA, address)
            .await
    }

    async fn lookup_txt(&mut self, name: String) -> Answer<String> {
        self.records("dns.lookup-txt", &name, RecordType::TXT, text)
            .await
    }

    async fn lookup_ptr(
        &mut self,
        address: String,
    ) -> wasmtime::Result<Result<Vec<String>, dns::LookupError>> {
        let Ok(ip) = address.parse::<IpAddr>() else {
            self.budget.spend("dns.lookup-ptr")?;
            return Ok(Err(dns::LookupError::Invalid(format!(
                "{:?} is not an IP address",
                super::super::truncate(&address, 80)
            ))));
        };
        let reverse = hickory_resolver::proto::rr::Name::from(ip).to_ascii();
        let name = |r: &RData| match r {
            RData::PTR(p) => Some(host_name(&p.0)),
            _ => None,
        };
        self.records("dns.lookup-ptr", &reverse, RecordType::PTR, name)
            .await
    }

    async fn lookup_mx(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Vec<dns::Mx>, dns::LookupError>> {
        let found = self.lookup("dns.lookup-mx", &name, RecordType::MX).await?;
        Ok(found.map(|rs| {
            let mut mx: Vec<dns::Mx> = rs
                .iter()
                .filter_map(|r| match r {
                    RData::MX(m) => Some(dns::Mx {
                        preference: m.preference,
                        exchange: host_name(&m.exchange),
                    }),
                    _ => None,
                })
                .collect();
            mx.sort_by(|a, b| {
                a.preference
                    .cmp(&b.preference)
                    .then_with(|| a.exchange.cmp(&b.exchange))
            });
            mx
        }))
    }
}
