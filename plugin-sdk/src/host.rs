//! The only place the SDK calls the host. Inside WebAssembly these are the WIT imports; in a
//! native build (the plugin's own `cargo test`) they are answered by [`crate::testing`].

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
}

#[cfg(not(target_family = "wasm"))]
mod imp {
    pub use crate::testing::native::{config_keys, get_config, log, now_ms};
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
