//! Host-side bindings generated from the WIT package in `wit/`, one module per incompatible
//! WIT version the host supports. Today that is 0.1: the bindings are generated from 0.1.1, and
//! wasmtime links a component built against 0.1.0 to them by the component model's semver rule
//! (0.1.1 only adds the `authentication` interface, which such a component does not import).

/// `sluice:filter@0.1.1`, serving 0.1.0 components too.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../wit",
        exports: { default: async },
        additional_derives: [PartialEq],
    });
}

/// The WIT version this host speaks, as it appears in export names.
pub const WIT_VERSION: &str = "0.1.1";

/// The export name of the hooks interface of the newest supported version.
pub const HOOKS_EXPORT: &str = "sluice:filter/hooks@0.1.1";

/// The export names of the hooks interface of every supported version.
pub const HOOKS_EXPORTS: &[&str] = &["sluice:filter/hooks@0.1.0", "sluice:filter/hooks@0.1.1"];

pub use v0_1::sluice::filter::types;
