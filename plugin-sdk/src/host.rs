//! The only place the SDK calls the host. Inside WebAssembly these are the WIT imports; in a
//! native build (the plugin's own `cargo test`) they are answered by [`crate::testing`].

use crate::bindings::sluice::filter::authentication::{ArcCheck, AuthResults};
use crate::bindings::sluice::filter::host::Level;
use crate::bindings::sluice::filter::types::ConfigValue;

#[cfg(target_family = "wasm")]
mod imp {
    use super::*;
    use crate::bindings::sluice::filter::host;

    pub fn log(level: Level, message: &str) {
        host::log(level, message)
    }
    pub fn get_config(key: &str) -> Option<ConfigValue> {
        host::get_config(key)
    }
    pub fn config_keys() -> Vec<String> {
        host::config_keys()
    }
    pub fn now_ms() -> u64 {
        host::now()
    }
    pub fn authentication() -> Option<AuthResults> {
        crate::bindings::sluice::filter::authentication::results()
    }
    pub fn arc() -> Option<ArcCheck> {
        crate::bindings::sluice::filter::authentication::arc()
    }
}

#[cfg(not(target_family = "wasm"))]
mod imp {
    pub use crate::testing::native::{arc, authentication, config_keys, get_config, log, now_ms};
}

pub(crate) fn log(level: Level, message: &str) {
    imp::log(level, message)
}

pub(crate) fn get_config(key: &str) -> Option<ConfigValue> {
    imp::get_config(key)
}

pub(crate) fn config_keys() -> Vec<String> {
    imp::config_keys()
}

/// Current time in milliseconds since the Unix epoch, as the host sees it.
pub fn now_ms() -> u64 {
    imp::now_ms()
}

/// The host's sender-authentication results of the current transaction (SPF from
/// `verify-sender` on, DKIM and DMARC from `check-message` on), or `None` when the host did not
/// verify it: verification is off, or the client authenticated or is in a trusted network.
/// Needs a host of `sluice:filter@0.1.1` or later.
pub fn authentication() -> Option<AuthResults> {
    imp::authentication()
}

/// The host's verdict on the message's ARC chain (RFC 8617), from `check-message` on: `pass`
/// when every set verifies, with the sealing domains oldest first; `None` when the host did not
/// verify the transaction. Needs a host of `sluice:filter@0.1.4` or later: a Rust plugin
/// imports it only if it calls it.
pub fn arc() -> Option<ArcCheck> {
    imp::arc()
}
