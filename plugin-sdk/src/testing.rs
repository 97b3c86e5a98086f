//! Test helpers for running a plugin natively with `cargo test`, without Sluice.
//!
//! ```ignore
//! sluice_plugin_sdk::testing::set_config(&[("threshold", ConfigValue::Integer(5))]);
//! let mut plugin = MyPlugin::new(&Config).unwrap();
//! ```
//! State is per thread, so parallel tests do not see each other's settings.

use crate::bindings::sluice::filter::authentication::AuthResults;
use crate::bindings::sluice::filter::host::Level;
use crate::bindings::sluice::filter::types::{Address, ConfigValue, Session};

/// Replaces the configuration that [`crate::Config`] reads on this thread.
pub fn set_config(entries: &[(&str, ConfigValue)]) {
    native::CONFIG.with(|c| {
        *c.borrow_mut() = entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
    });
}

/// Sets what [`crate::authentication`] returns on this thread.
pub fn set_authentication(results: Option<AuthResults>) {
    native::AUTH.with(|a| *a.borrow_mut() = results);
}

/// Returns and clears the lines the plugin logged on this thread.
pub fn take_logs() -> Vec<(Level, String)> {
    native::LOGS.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

/// A plain-text session from 192.0.2.1 (a documentation address) for tests.
pub fn session() -> Session {
    Session {
        listener: "test".to_string(),
        client_ip: "192.0.2.1".to_string(),
        client_port: 40000,
        helo: "client.example".to_string(),
        tls: None,
        auth_user: None,
        transaction_id: "TEST".to_string(),
    }
}

/// An address without ESMTP parameters.
pub fn address(address: &str) -> Address {
    Address {
        address: address.to_string(),
        params: Vec::new(),
    }
}

#[doc(hidden)]
pub mod native {
    //! The native stand-ins for the host's imports.
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    thread_local! {
        pub(crate) static CONFIG: RefCell<BTreeMap<String, ConfigValue>> = const { RefCell::new(BTreeMap::new()) };
        pub(crate) static LOGS: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
        pub(crate) static AUTH: RefCell<Option<AuthResults>> = const { RefCell::new(None) };
    }

    /// The results set by [`super::set_authentication`].
    pub fn authentication() -> Option<AuthResults> {
        AUTH.with(|a| a.borrow().clone())
    }

    /// Records a log line.
    pub fn log(level: Level, message: &str) {
        LOGS.with(|l| l.borrow_mut().push((level, message.to_string())));
    }
    /// Reads a setting.
    pub fn get_config(key: &str) -> Option<ConfigValue> {
        CONFIG.with(|c| c.borrow().get(key).cloned())
    }
    /// Lists the settings' keys.
    pub fn config_keys() -> Vec<String> {
        CONFIG.with(|c| c.borrow().keys().cloned().collect())
    }
    /// The system clock.
    pub fn now_ms() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}
