//! Logging to Sluice's log. Each line is tagged by the host with the plugin's name and the
//! transaction id. The host allows a limited number of lines per transaction; lines past the
//! quota are dropped and counted, so logging can never flood the server.
//!
//! ```ignore
//! sluice_plugin_sdk::log::info(&format!("scored {score:.1}"));
//! ```

use crate::bindings::sluice::filter::host::Level;
use crate::host;

/// Logs at trace level.
pub fn trace(message: &str) {
    host::log(Level::Trace, message)
}
/// Logs at debug level.
pub fn debug(message: &str) {
    host::log(Level::Debug, message)
}
/// Logs at info level.
pub fn info(message: &str) {
    host::log(Level::Info, message)
}
/// Logs at warn level.
pub fn warn(message: &str) {
    host::log(Level::Warn, message)
}
/// Logs at error level.
pub fn error(message: &str) {
    host::log(Level::Error, message)
}
