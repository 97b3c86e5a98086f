//! The `kv` capability: a plugin's keys in the [`crate::store`], under its own namespace,
//! with its quota and longest time-to-live, each call within the hook's deadline.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::HasData;

use super::super::bindings::v0_1::sluice::filter::kv;
use super::super::limits::CallBudget;
use super::{BadCall, MAX_KEY_BYTES, MAX_VALUE_BYTES, StoreUnavailable};
use crate::plugin::tape::PluginTap;
use crate::store::{KvStore, StoreError};

/// The store a plugin granted `kv` writes to, and its bounds there.
#[derive(Clone)]
pub struct KvGrant {
    pub(super) store: KvStore,
    /// `NAME:`, before every key of the plugin.
    pub(super) namespace: Arc<[u8]>,
    /// What the plugin may keep in the store.
    pub(super) quota: Option<crate::store::Quota>,
    /// The time-to-live a key written with 0 ("never") gets, and the most any may have.
    pub(super) max_ttl_secs: u32,
}

impl KvGrant {
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

/// An instance's `kv` context: its grant, if any.
#[derive(Clone, Default)]
pub struct KvCtx {
    pub(crate) grant: Option<KvGrant>,
    /// Notes the value each key had before the plugin's first call on it, for a capture.
    pub(crate) tap: Option<PluginTap>,
}

impl KvCtx {
    /// This context for a tapped instance: recording notes first values; a replay's calls go
    /// to the replay's scratch store instead of the real one.
    pub(crate) fn tapped(mut self, tap: &PluginTap) -> KvCtx {
        if let (Some(grant), Some(scratch)) = (&mut self.grant, tap.replay_store()) {
            grant.store = scratch.clone();
        }
        self.tap = Some(tap.clone());
        self
    }
}

/// What a `kv` call sees of the store's data: the context and the hook call's budget.
pub struct KvView<'a> {
    pub ctx: &'a KvCtx,
    pub budget: &'a mut CallBudget,
}

/// The `kv` interface's view type for the linker.
pub struct KvApi;

impl HasData for KvApi {
    type Data<'a> = KvView<'a>;
}

impl KvView<'_> {
    /// The grant (store, quota, longest time-to-live), the namespaced key, the deadline for a
    /// kv call, and whether a capture is to note the key's first value after this call (the
    /// plugin's first call on it, recording).
    fn kv_call(
        &mut self,
        what: &str,
        key: &str,
    ) -> wasmtime::Result<(KvGrant, Vec<u8>, Instant, bool)> {
        let (grant, full, deadline) = self.checked(what, key)?;
        let first = self.ctx.tap.as_ref().is_some_and(|t| t.kv_first_touch(key));
        Ok((grant, full, deadline, first))
    }

    /// Notes, for a capture, the value `key` had before the plugin's first call on it, as
    /// that call's answer shows it: no extra round trip to the store, except after a
    /// compare-and-set that did not match (then the value is read, unchanged by the call).
    fn first_value(&self, key: &str, value: Option<&[u8]>) {
        if let Some(tap) = &self.ctx.tap {
            tap.kv_first_value(key, value);
        }
    }

    fn checked(&mut self, what: &str, key: &str) -> wasmtime::Result<(KvGrant, Vec<u8>, Instant)> {
        self.budget.spend(what)?;
        let Some(grant) = &self.ctx.grant else {
            return Err(BadCall(format!("{what}: the kv capability is not granted")).into());
        };
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(BadCall(format!(
                "{what}: a key has 1 to {MAX_KEY_BYTES} bytes, this one {}",
                key.len()
            ))
            .into());
        }
        let mut full = Vec::with_capacity(grant.namespace.len() + key.len());
        full.extend_from_slice(&grant.namespace);
        full.extend_from_slice(key.as_bytes());
        Ok((grant.clone(), full, self.budget.deadline))
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

impl kv::Host for KvView<'_> {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        let (grant, full, deadline, first) = self.kv_call("kv.get", &key)?;
        let value = bounded("kv.get", deadline, grant.store.get(full)).await?;
        if first {
            self.first_value(&key, value.as_deref());
        }
        Ok(value)
    }

    async fn set(&mut self, key: String, value: Vec<u8>, ttl_secs: u32) -> wasmtime::Result<()> {
        let (g, full, deadline, first) = self.kv_call("kv.set", &key)?;
        check_value("kv.set", &value)?;
        let set = g.store.set_within(full, value, g.ttl(ttl_secs), g.quota);
        bounded("kv.set", deadline, set).await?;
        // What it held before cannot be seen any more: replayed, the key starts absent.
        if first {
            self.first_value(&key, None);
        }
        Ok(())
    }

    async fn increment(&mut self, key: String, delta: i64, ttl_secs: u32) -> wasmtime::Result<i64> {
        let (g, full, deadline, first) = self.kv_call("kv.increment", &key)?;
        let add = g
            .store
            .increment_within(full, delta, g.ttl(ttl_secs), g.quota);
        let n = bounded("kv.increment", deadline, add).await?;
        // The counter before: the answer less the step (0 and absent answer alike).
        if first {
            let before = n.wrapping_sub(delta);
            let text = before.to_string();
            self.first_value(&key, (before != 0).then_some(text.as_bytes()));
        }
        Ok(n)
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<bool> {
        let (grant, full, deadline, first) = self.kv_call("kv.delete", &key)?;
        let delete = grant.store.delete_within(full, grant.quota);
        let existed = bounded("kv.delete", deadline, delete).await?;
        // Only that it existed can be seen: any value replays the same.
        if first {
            self.first_value(&key, existed.then_some(&b""[..]));
        }
        Ok(existed)
    }

    async fn compare_and_set(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        ttl_secs: u32,
    ) -> wasmtime::Result<bool> {
        let (g, full, deadline, first) = self.kv_call("kv.compare-and-set", &key)?;
        check_value("kv.compare-and-set", &value)?;
        let (ttl, quota) = (g.ttl(ttl_secs), g.quota);
        let swap =
            g.store
                .compare_and_set_within(full.clone(), expected.clone(), value, ttl, quota);
        let swapped = bounded("kv.compare-and-set", deadline, swap).await?;
        if first {
            if swapped {
                self.first_value(&key, expected.as_deref());
            } else {
                let before = bounded("kv.compare-and-set", deadline, g.store.get(full)).await?;
                self.first_value(&key, before.as_deref());
            }
        }
        Ok(swapped)
    }
}
