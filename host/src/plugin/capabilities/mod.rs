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

pub mod dns;
pub mod kv;
pub mod records;

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::types::ComponentItem;

pub use self::dns::{DnsApi, DnsCtx, DnsView, PluginDns};
pub use self::kv::{KvApi, KvCtx, KvGrant, KvView};
pub use super::limits::BadCall;
use crate::config::Capability;
use crate::store::KvStore;

/// Longest key a plugin may use, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Largest value a plugin may store, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

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
                let path = config.paths().store_path;
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

/// What one plugin may use: the store (with its namespace and bounds) and the resolver.
#[derive(Clone, Default)]
pub struct Grants {
    pub(crate) kv: KvCtx,
    pub(crate) dns: Option<Arc<PluginDns>>,
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
                    grants.kv.grant = Some(KvGrant {
                        store,
                        namespace: namespace.into(),
                        quota: None,
                        max_ttl_secs: 0,
                    });
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
        if let Some(g) = &mut self.kv.grant {
            g.quota = Some(crate::store::Quota {
                max_keys: limits.kv_max_keys,
                max_bytes: limits.kv_max_bytes,
            });
            g.max_ttl_secs = limits.kv_max_ttl_secs;
        }
        self
    }

    /// A fresh instance's `dns` context: the grant, no lookups made.
    pub(crate) fn dns_ctx(&self) -> DnsCtx {
        DnsCtx {
            grant: self.dns.clone(),
            used: 0,
            tap: None,
        }
    }
}

/// Checks that `component` imports no capability missing from `granted`; the message names
/// the setting to add.
/// The capabilities `component` imports.
pub fn imported(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
) -> Vec<Capability> {
    let ty = component.component_type();
    let mut found = Vec::new();
    for (import, item) in ty.imports(engine) {
        if !matches!(item.ty, ComponentItem::ComponentInstance(_)) {
            continue;
        }
        for c in Capability::ALL {
            if import.starts_with(&format!("sluice:filter/{}@", c.as_str())) && !found.contains(&c)
            {
                found.push(c);
            }
        }
    }
    found
}

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
