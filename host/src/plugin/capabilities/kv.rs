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
    /// The grant (store, quota, longest time-to-live), the namespaced key and the deadline
    /// for a kv call; recording a capture, the key's value before the first call on it is
    /// read and noted first.
    async fn kv_call(
        &mut self,
        what: &str,
        key: &str,
    ) -> wasmtime::Result<(KvGrant, Vec<u8>, Instant)> {
        let (grant, full, deadline) = self.checked(what, key)?;
        if let Some(tap) = &self.ctx.tap
            && tap.kv_first_touch(key)
        {
            let before = bounded(what, deadline, grant.store.get(full.clone())).await?;
            tap.kv_first_value(key, before.as_deref());
        }
        Ok((grant, full, deadline))
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
        let (grant, key, deadline) = self.kv_call("kv.get", &key).await?;
        bounded("kv.get", deadline, grant.store.get(key)).await
    }

    async fn set(&mut self, key: String, value: Vec<u8>, ttl_secs: u32) -> wasmtime::Result<()> {
        let (g, key, deadline) = self.kv_call("kv.set", &key).await?;
        check_value("kv.set", &value)?;
        let set = g.store.set_within(key, value, g.ttl(ttl_secs), g.quota);
        bounded("kv.set", deadline, set).await
    }

    async fn increment(&mut self, key: String, delta: i64, ttl_secs: u32) -> wasmtime::Result<i64> {
        let (g, key, deadline) = self.kv_call("kv.increment", &key).await?;
        let add = g
            .store
            .increment_within(key, delta, g.ttl(ttl_secs), g.quota);
        bounded("kv.increment", deadline, add).await
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<bool> {
        let (grant, key, deadline) = self.kv_call("kv.delete", &key).await?;
        bounded(
            "kv.delete",
            deadline,
            grant.store.delete_within(key, grant.quota),
        )
        .await
    }

    async fn compare_and_set(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        ttl_secs: u32,
    ) -> wasmtime::Result<bool> {
        let (g, key, deadline) = self.kv_call("kv.compare-and-set", &key).await?;
        check_value("kv.compare-and-set", &value)?;
        let (ttl, quota) = (g.ttl(ttl_secs), g.quota);
        let swap = g
            .store
            .compare_and_set_within(key, expected, value, ttl, quota);
        bounded("kv.compare-and-set", deadline, swap).await
    }
}
