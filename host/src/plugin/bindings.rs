//! Host-side bindings generated from the WIT package in `wit/`, one module per incompatible
//! WIT version the host supports. Today that is 0.1: the bindings are generated from 0.1.4's
//! widest world (`plugin-kv-dns`), and wasmtime links a component built against 0.1.0 to 0.1.3,
//! or against a narrower world, to them by the component model's semver rule (later versions
//! only add interfaces and functions, which such a component does not import).

/// `sluice:filter@0.1.4`, serving 0.1.0 to 0.1.3 components too.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        world: "plugin-kv-dns",
        path: "../wit",
        exports: { default: async },
        // Store and DNS calls wait on I/O; they may end the call (a trap) when the store is
        // unreachable or the hook's deadline passes.
        imports: {
            "sluice:filter/kv": async | trappable,
            "sluice:filter/dns": async | trappable,
        },
        additional_derives: [PartialEq],
    });

    /// The world the host links: every import of every world.
    pub use self::PluginKvDns as Plugin;
    /// Its pre-instantiated form.
    pub use self::PluginKvDnsPre as PluginPre;
}

/// The WIT version this host speaks, as it appears in export names.
pub const WIT_VERSION: &str = "0.1.4";

/// The export name of the hooks interface of the newest supported version.
pub const HOOKS_EXPORT: &str = "sluice:filter/hooks@0.1.4";

/// The export names of the hooks interface of every supported version.
pub const HOOKS_EXPORTS: &[&str] = &[
    "sluice:filter/hooks@0.1.0",
    "sluice:filter/hooks@0.1.1",
    "sluice:filter/hooks@0.1.2",
    "sluice:filter/hooks@0.1.3",
    "sluice:filter/hooks@0.1.4",
];

pub use v0_1::sluice::filter::types;
