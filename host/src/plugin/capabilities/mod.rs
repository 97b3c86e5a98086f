//! The capabilities an operator may grant a plugin (`[plugin.NAME] capabilities`), and the
//! host functions behind them: `sluice:filter/kv` (the [`crate::store`]) and
//! `sluice:filter/dns` (the host's resolver).
//!
//! Default-deny twice over: a plugin importing a capability it was not granted is refused at
//! load ([`check_imports`]), and an instance carries only the [`Grants`] of its plugin, so a
//! call without a grant fails even if a component got past the load check.
//!
//! Bounds on every call: keys of 1 to [`MAX_KEY_BYTES`], values up to [`MAX_VALUE_BYTES`],
//! `kv_ops_per_call` calls (kv and dns together) per hook call, and the hook's deadline — a
//! store that does not answer in time fails the call as "store unavailable", and a DNS lookup
//! that does not finish in time answers `temporary`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use wasmtime::component::types::ComponentItem;

use super::bindings::v0_1::sluice::filter::{dns, kv};
use super::host_api::StoreState;
use crate::config::Capability;
use crate::store::{KvStore, StoreError};

/// Longest key a plugin may use, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Largest value a plugin may store, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Longest DNS name a plugin may look up (RFC 1035's limit on a name's text).
const MAX_NAME_BYTES: usize = 253;

/// What the runtime can grant: the store and the resolver, when configured.
#[derive(Clone, Default)]
pub struct Services {
    /// The key-value store (`[store]`).
    pub kv: Option<KvStore>,
    /// The resolver for plugins (`[plugins] resolver`).
    pub dns: Option<Arc<PluginDns>>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("kv", &self.kv.as_ref().map(KvStore::describe))
            .field("dns", &self.dns.is_some())
            .finish()
    }
}

impl Services {
    /// What a server grants from: the configured store (Redis when `[store] url` is set,
    /// else the embedded file, created if missing) and the plugins' resolver.
    pub fn for_server(config: &crate::config::Config) -> Result<Services, String> {
        let kv = match &config.store.url {
            Some(url) => KvStore::Redis(crate::store::redis::Redis::new(
                url,
                config.store.ca_file.as_deref(),
            )?),
            None => {
                let path = config.store_path();
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| format!("store.path: creating {}: {e}", dir.display()))?;
                }
                let flush = Duration::from_millis(config.store.flush_interval_ms);
                KvStore::Embedded(
                    crate::store::embedded::Embedded::open_bounded(
                        &path,
                        flush,
                        Some(config.store.max_mb << 20),
                        usize::try_from(config.store.cache_mb << 20).unwrap_or(usize::MAX),
                    )
                    .map_err(|e| e.to_string())?,
                )
            }
        };
        Ok(Services {
            kv: Some(kv),
            dns: Some(Arc::new(PluginDns::from_config(config))),
        })
    }

    /// What `sluice plugin check` and `plugin list` grant from: an empty store in memory, so
    /// a replay never reads or changes a server's state, and the plugins' resolver.
    pub fn scratch(config: &crate::config::Config) -> Result<Services, String> {
        let kv = crate::store::embedded::Embedded::in_memory().map_err(|e| e.to_string())?;
        Ok(Services {
            kv: Some(KvStore::Embedded(kv)),
            dns: Some(Arc::new(PluginDns::from_config(config))),
        })
    }
}

/// The resolver plugins ask, with its timeout per lookup and its budgets: lookups per
/// transaction (each plugin instance lives for one transaction) and lookups per second for
/// all plugins together.
pub struct PluginDns {
    resolver: Result<TokioResolver, String>,
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
            resolver: crate::dns::resolver(server, "plugins.resolver", timeout, 1),
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

/// What one plugin may use.
#[derive(Clone, Default)]
pub struct Grants {
    kv: Option<(KvStore, Arc<[u8]>)>,
    dns: Option<Arc<PluginDns>>,
    /// What the plugin may keep in the store.
    quota: Option<crate::store::Quota>,
    /// The time-to-live a key written with 0 ("never") gets, and the most any may have.
    max_ttl_secs: u32,
}

impl Grants {
    /// The grants of the plugin `name` given `granted` capabilities, from `services`. Fails
    /// with a message when a granted capability has no service behind it.
    pub fn new(name: &str, granted: &[Capability], services: &Services) -> Result<Grants, String> {
        let mut grants = Grants::default();
        for c in granted {
            match c {
                Capability::Kv => {
                    let store = services.kv.clone().ok_or_else(|| {
                        "it is granted kv, but this Sluice has no key-value store".to_string()
                    })?;
                    // Keys are `NAME:key`; plugin names have no ':' so namespaces never meet.
                    let mut namespace = name.as_bytes().to_vec();
                    namespace.push(b':');
                    grants.kv = Some((store, namespace.into()));
                }
                Capability::Dns => {
                    grants.dns = Some(services.dns.clone().ok_or_else(|| {
                        "it is granted dns, but this Sluice has no plugin resolver".to_string()
                    })?);
                }
            }
        }
        Ok(grants)
    }

    /// These grants with the store quota and the longest time-to-live of `limits`.
    pub fn with_kv_limits(mut self, limits: &crate::config::PluginLimits) -> Grants {
        self.quota = Some(crate::store::Quota {
            max_keys: limits.kv_max_keys,
            max_bytes: limits.kv_max_bytes,
        });
        self.max_ttl_secs = limits.kv_max_ttl_secs;
        self
    }

    /// A plugin's time-to-live: 0 ("never") and anything longer become the maximum, so
    /// every key a plugin writes expires.
    fn ttl(&self, ttl_secs: u32) -> u32 {
        let max = if self.max_ttl_secs == 0 {
            crate::store::MAX_TTL_SECS
        } else {
            self.max_ttl_secs
        };
        if ttl_secs == 0 {
            max
        } else {
            ttl_secs.min(max)
        }
    }
}

/// Checks that `component` imports no capability missing from `granted`; the message names
/// the setting to add.
pub fn check_imports(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
    plugin: &str,
    granted: &[Capability],
) -> Result<(), String> {
    let ty = component.component_type();
    for (import, item) in ty.imports(engine) {
        if !matches!(item.ty, ComponentItem::ComponentInstance(_)) {
            continue;
        }
        for c in Capability::ALL {
            let prefix = format!("sluice:filter/{}@", c.as_str());
            if import.starts_with(&prefix) && !granted.contains(&c) {
                let mut wanted: Vec<&str> = granted.iter().map(|g| g.as_str()).collect();
                wanted.push(c.as_str());
                wanted.sort_unstable();
                let list = wanted
                    .iter()
                    .map(|w| format!("\"{w}\""))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(format!(
                    "it imports {import} (the {c} capability), which it is not granted: to allow it, set capabilities = [{list}] in [plugin.{plugin}]",
                    c = c.as_str()
                ));
            }
        }
    }
    Ok(())
}

/// A store call that failed for reasons outside the plugin (the store is unreachable or did
/// not answer within the deadline): the hook fails, the failure policy applies, and the
/// plugin's health is not blamed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreUnavailable(pub String);

/// A call the plugin got wrong (a limit, a key that is not a counter): the hook fails.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadCall(pub String);

impl StoreState {
    /// Counts one capability call against the hook call's budget.
    fn spend(&mut self, what: &str) -> wasmtime::Result<()> {
        if self.ops_left == 0 {
            return Err(BadCall(format!(
                "{what}: more than {} kv and dns calls in one hook call (kv_ops_per_call)",
                self.ops_per_call
            ))
            .into());
        }
        self.ops_left -= 1;
        Ok(())
    }

    /// The store, the namespaced key and the deadline for a kv call.
    fn kv_call(&mut self, what: &str, key: &str) -> wasmtime::Result<(KvStore, Vec<u8>, Instant)> {
        self.spend(what)?;
        let Some((store, namespace)) = &self.grants.kv else {
            return Err(BadCall(format!("{what}: the kv capability is not granted")).into());
        };
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(BadCall(format!(
                "{what}: a key has 1 to {MAX_KEY_BYTES} bytes, this one {}",
                key.len()
            ))
            .into());
        }
        let mut full = Vec::with_capacity(namespace.len() + key.len());
        full.extend_from_slice(namespace);
        full.extend_from_slice(key.as_bytes());
        Ok((store.clone(), full, self.deadline))
    }
}

fn check_value(what: &str, value: &[u8]) -> wasmtime::Result<()> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(BadCall(format!(
            "{what}: a value has at most {MAX_VALUE_BYTES} bytes, this one {}",
            value.len()
        ))
        .into());
    }
    Ok(())
}

/// Runs a store call until `deadline`.
async fn bounded<T>(
    what: &str,
    deadline: Instant,
    call: impl std::future::Future<Output = Result<T, StoreError>>,
) -> wasmtime::Result<T> {
    match tokio::time::timeout_at(deadline.into(), call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(StoreError::Unavailable(e))) => Err(StoreUnavailable(format!("{what}: {e}")).into()),
        Ok(Err(e)) => Err(BadCall(format!("{what}: {e}")).into()),
        Err(_) => Err(StoreUnavailable(format!(
            "{what}: the key-value store did not answer within the hook's deadline"
        ))
        .into()),
    }
}

impl kv::Host for StoreState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        let (store, key, deadline) = self.kv_call("kv.get", &key)?;
        bounded("kv.get", deadline, store.get(key)).await
    }

    async fn set(&mut self, key: String, value: Vec<u8>, ttl_secs: u32) -> wasmtime::Result<()> {
        let (store, key, deadline) = self.kv_call("kv.set", &key)?;
        check_value("kv.set", &value)?;
        let (ttl, quota) = (self.grants.ttl(ttl_secs), self.grants.quota);
        bounded("kv.set", deadline, store.set_within(key, value, ttl, quota)).await
    }

    async fn increment(&mut self, key: String, delta: i64, ttl_secs: u32) -> wasmtime::Result<i64> {
        let (store, key, deadline) = self.kv_call("kv.increment", &key)?;
        let (ttl, quota) = (self.grants.ttl(ttl_secs), self.grants.quota);
        bounded(
            "kv.increment",
            deadline,
            store.increment_within(key, delta, ttl, quota),
        )
        .await
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<bool> {
        let (store, key, deadline) = self.kv_call("kv.delete", &key)?;
        let quota = self.grants.quota;
        bounded("kv.delete", deadline, store.delete_within(key, quota)).await
    }

    async fn compare_and_set(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        ttl_secs: u32,
    ) -> wasmtime::Result<bool> {
        let (store, key, deadline) = self.kv_call("kv.compare-and-set", &key)?;
        check_value("kv.compare-and-set", &value)?;
        let (ttl, quota) = (self.grants.ttl(ttl_secs), self.grants.quota);
        bounded(
            "kv.compare-and-set",
            deadline,
            store.compare_and_set_within(key, expected, value, ttl, quota),
        )
        .await
    }
}

type Lookup = Result<Vec<RData>, dns::LookupError>;

impl StoreState {
    /// Looks `name` up for a plugin, bounded by the lookup timeout and the hook's deadline.
    async fn lookup(
        &mut self,
        what: &str,
        name: &str,
        kind: RecordType,
    ) -> wasmtime::Result<Lookup> {
        self.spend(what)?;
        let Some(plugin_dns) = self.grants.dns.clone() else {
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
                super::truncate(name, 80)
            ))));
        }
        let resolver = match &plugin_dns.resolver {
            Ok(r) => r,
            Err(e) => return Ok(Err(dns::LookupError::Temporary(e.clone()))),
        };
        // Budgets: per transaction (this instance's lifetime) and for all plugins per second.
        // Spent, the lookup answers `temporary`, as an unreachable list would.
        if self.dns_used >= plugin_dns.per_transaction {
            return Ok(Err(dns::LookupError::Temporary(format!(
                "this transaction's {} DNS lookups are spent (plugins.dns_lookups_per_transaction)",
                plugin_dns.per_transaction
            ))));
        }
        self.dns_used += 1;
        if !plugin_dns.rate.take() {
            return Ok(Err(dns::LookupError::Temporary(
                "plugins' DNS lookups are over their rate (plugins.dns_lookups_per_second)"
                    .to_string(),
            )));
        }
        // Ends before the hook's deadline, leaving the plugin a quarter of the time it has
        // left (at most ANSWER_MARGIN) to act on the answer; it used to end at the deadline,
        // so a plugin never saw its `temporary` answer and failed instead.
        let now = Instant::now();
        let left = self.deadline.saturating_duration_since(now);
        let until = (now + left - (left / 4).min(ANSWER_MARGIN)).min(now + plugin_dns.timeout);
        if until <= now {
            return Ok(Err(dns::LookupError::Temporary(
                "no time left before the hook's deadline".to_string(),
            )));
        }
        let fqdn = format!("{name}.");
        Ok(run_lookup(resolver, &fqdn, kind, until).await)
    }
}

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
                super::truncate(&e.to_string(), 200).to_string(),
            )),
        },
    }
}

fn host_name(name: &hickory_resolver::proto::rr::Name) -> String {
    let text = name.to_ascii();
    let trimmed = text.trim_end_matches('.');
    if trimmed.is_empty() {
        ".".to_string()
    } else {
        trimmed.to_string()
    }
}

impl dns::Host for StoreState {
    async fn lookup_a(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Vec<String>, dns::LookupError>> {
        let found = self.lookup("dns.lookup-a", &name, RecordType::A).await?;
        Ok(found.map(|rs| {
            rs.iter()
                .filter_map(|r| match r {
                    RData::A(a) => Some(a.0.to_string()),
                    _ => None,
                })
                .collect()
        }))
    }

    async fn lookup_aaaa(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Vec<String>, dns::LookupError>> {
        let found = self
            .lookup("dns.lookup-aaaa", &name, RecordType::AAAA)
            .await?;
        Ok(found.map(|rs| {
            rs.iter()
                .filter_map(|r| match r {
                    RData::AAAA(a) => Some(a.0.to_string()),
                    _ => None,
                })
                .collect()
        }))
    }

    async fn lookup_txt(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Vec<String>, dns::LookupError>> {
        let found = self
            .lookup("dns.lookup-txt", &name, RecordType::TXT)
            .await?;
        Ok(found.map(|rs| {
            rs.iter()
                .filter_map(|r| match r {
                    RData::TXT(t) => Some(
                        t.txt_data
                            .iter()
                            .map(|part| String::from_utf8_lossy(part))
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .collect()
        }))
    }

    async fn lookup_ptr(
        &mut self,
        address: String,
    ) -> wasmtime::Result<Result<Vec<String>, dns::LookupError>> {
        let Ok(ip) = address.parse::<IpAddr>() else {
            self.spend("dns.lookup-ptr")?;
            return Ok(Err(dns::LookupError::Invalid(format!(
                "{:?} is not an IP address",
                super::truncate(&address, 80)
            ))));
        };
        let reverse = hickory_resolver::proto::rr::Name::from(ip).to_ascii();
        let found = self
            .lookup("dns.lookup-ptr", &reverse, RecordType::PTR)
            .await?;
        Ok(found.map(|rs| {
            rs.iter()
                .filter_map(|r| match r {
                    RData::PTR(p) => Some(host_name(&p.0)),
                    _ => None,
                })
                .collect()
        }))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn grants_need_a_service_behind_them() {
        let none = Services::default();
        assert!(Grants::new("p", &[], &none).is_ok());
        let err = Grants::new("p", &[Capability::Kv], &none).err().unwrap();
        assert!(err.contains("no key-value store"), "{err}");
        let err = Grants::new("p", &[Capability::Dns], &none).err().unwrap();
        assert!(err.contains("no plugin resolver"), "{err}");
    }
}
