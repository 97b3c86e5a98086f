//! The data of one plugin instance's store, following wasmtime's pattern: one context per
//! capability ([`HostCtx`], [`AuthCtx`], [`KvCtx`], [`DnsCtx`], [`ViewCtx`], and WASI's), each interface
//! linked to its own view of them ([`add_to_linker`]), and the instance's bounds beside them
//! ([`Limiter`], [`CallBudget`], [`OutputBuffer`]). Made with [`StoreState::builder`].
//!
//! Every store is default-deny: WASI is linked because Python and JavaScript guests import it,
//! but there are no arguments, no environment, no directories but those granted read-only, no
//! sockets, and stdin is empty. stdout and stderr go to a bounded buffer that is reported when
//! the plugin fails.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::types::ConfigValue;
use super::bindings::v0_1::sluice::filter::{authentication, dns, host, kv, message_view, types};
use super::capabilities::{DnsApi, DnsCtx, DnsView, Grants, KvApi, KvCtx, KvView};
use super::host_api::{AuthApi, AuthCtx, Clock, HostApi, HostCtx};
use super::limits::{CallBudget, Limiter, OutputBuffer};
use super::tape::PluginTap;
use super::view::{ViewApi, ViewCtx};

/// Resource handles one instance may hold at once.
const MAX_RESOURCES: usize = 4096;

/// The data of one plugin instance's store.
pub struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Caps linear memory and tables; records whether the cap was hit.
    pub(crate) limiter: Limiter,
    /// The hook call in progress: deadline and capability calls left.
    pub(crate) budget: CallBudget,
    /// What the guest wrote to stdout/stderr.
    pub(crate) output: OutputBuffer,
    pub(crate) host: HostCtx,
    pub(crate) auth: AuthCtx,
    pub(crate) kv: KvCtx,
    pub(crate) dns: DnsCtx,
    /// The message of the `check-message` call in progress (`message-view`).
    pub(crate) view: ViewCtx,
}

/// Declares the builder's fields, each with the setter of the same name.
macro_rules! builder {
    ($(#[$meta:meta])* pub struct $name:ident {
        $($(#[$doc:meta])* $field:ident: $ty:ty,)*
    }) => {
        $(#[$meta])*
        pub struct $name {
            $($field: $ty,)*
        }

        impl $name {
            $(
                $(#[$doc])*
                pub fn $field(mut self, $field: $ty) -> Self {
                    self.$field = $field;
                    self
                }
            )*
        }
    };
}

builder! {
    /// Builds a [`StoreState`]; what is not set is denied or empty.
    #[derive(Default)]
    pub struct StoreStateBuilder {
        /// The plugin's settings, flattened (`host.get-config`).
        config: Arc<BTreeMap<String, ConfigValue>>,
        /// What every memory of the instance may hold together.
        memory_bytes: u64,
        /// Lines the instance may log over its life.
        log_lines: u32,
        /// Directories the guest may read, each at its own path.
        read_dirs: Vec<PathBuf>,
        /// The store and resolver the plugin was granted.
        grants: Grants,
        /// `kv` and `dns` calls allowed per hook call.
        ops_per_call: u32,
        /// Records the host's answers for a capture, or plays a capture's back (none: live).
        tap: Option<PluginTap>,
    }
}

impl StoreStateBuilder {
    /// The store's data: no network, no environment, no files but the directories given.
    pub fn build(self) -> anyhow::Result<StoreState> {
        let output = OutputBuffer::default();
        let mut builder = WasiCtx::builder();
        builder
            .stdout(output.clone())
            .stderr(output.clone())
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false);
        for d in &self.read_dirs {
            builder
                .preopened_dir(d, d.to_string_lossy(), wasmtime_wasi::FsPerms::ReadOnly)
                .map_err(|e| anyhow::anyhow!("cannot grant {}: {e}", d.display()))?;
        }
        // A granted directory's files (a model, a list) are read where the guest runs rather
        // than by a hop to tokio's blocking pool for every open, stat and read: the hops cost
        // spam-score 400 µs per transaction to read a 20-byte file. The files are local and
        // small, read once per transaction; a guest reading a slow file system would hold one
        // worker thread for that read (the deadline applies between calls).
        if let Some(tap) = &self.tap {
            builder.wall_clock(super::tape::WallClock(tap.clone()));
        }
        if !self.read_dirs.is_empty() {
            builder.allow_blocking_current_thread(true);
        }
        // Handles a guest may hold at once (WASI streams, descriptors, …): each is host
        // memory, so a guest opening them in a loop is stopped.
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        Ok(StoreState {
            wasi: builder.build(),
            table,
            limiter: Limiter::new(self.memory_bytes),
            budget: CallBudget::new(self.ops_per_call),
            output,
            host: HostCtx {
                config: self.config,
                logs: Vec::new(),
                log_budget: self.log_lines,
                logs_dropped: 0,
                clock: self.tap.clone().map_or(Clock::System, Clock::Tap),
            },
            auth: AuthCtx::default(),
            dns: DnsCtx {
                tap: self.tap.clone(),
                ..self.grants.dns_ctx()
            },
            kv: match &self.tap {
                Some(tap) => self.grants.kv.tapped(tap),
                None => self.grants.kv,
            },
            view: ViewCtx::default(),
        })
    }
}

impl StoreState {
    /// A builder; every capability is denied until granted.
    pub fn builder() -> StoreStateBuilder {
        StoreStateBuilder::default()
    }

    fn kv_view(&mut self) -> KvView<'_> {
        KvView {
            ctx: &self.kv,
            budget: &mut self.budget,
        }
    }

    fn dns_view(&mut self) -> DnsView<'_> {
        DnsView {
            ctx: &mut self.dns,
            budget: &mut self.budget,
        }
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Links WASI and every `sluice:filter` interface, each to its own view of the store's data.
pub fn add_to_linker(linker: &mut Linker<StoreState>) -> anyhow::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    types::add_to_linker::<StoreState, HostApi>(linker, |s| &mut s.host)?;
    host::add_to_linker::<StoreState, HostApi>(linker, |s| &mut s.host)?;
    authentication::add_to_linker::<StoreState, AuthApi>(linker, |s| &mut s.auth)?;
    kv::add_to_linker::<StoreState, KvApi>(linker, StoreState::kv_view)?;
    dns::add_to_linker::<StoreState, DnsApi>(linker, StoreState::dns_view)?;
    message_view::add_to_linker::<StoreState, ViewApi>(linker, |s| &mut s.view)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_cannot_hold_unbounded_resource_handles() {
        let state = StoreState::builder().build().unwrap();
        assert_eq!(state.table.max_capacity(), MAX_RESOURCES);
        assert!(state.kv.grant.is_none() && state.dns.grant.is_none());
    }
}
