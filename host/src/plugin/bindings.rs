//! Host-side bindings generated from the WIT package in `wit/`, one module per WIT version the
//! host supports. Today that is 0.1.0 only; a later minor version gets a sibling module, and
//! the loader picks the module matching what a component exports.

/// `sluice:filter@0.1.0`.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../wit",
        exports: { default: async },
        additional_derives: [PartialEq],
    });
}

/// The WIT version this host speaks, as it appears in export names.
pub const WIT_VERSION: &str = "0.1.0";

/// The export name of the hooks interface of the supported version.
pub const HOOKS_EXPORT: &str = "sluice:filter/hooks@0.1.0";

pub use v0_1::sluice::filter::types;
