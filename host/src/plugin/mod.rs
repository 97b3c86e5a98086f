//! The plugin runtime: compiles plugin components once (with an on-disk cache), checks them at
//! load, and runs their hooks in fresh, limited sandboxes.
//!
//! - [`engine`]: the one wasmtime `Engine` (pooling allocator, epoch ticker) and `Linker`.
//! - [`cache`]: compiled artefacts on disk, keyed by engine compatibility and component hash.
//! - [`loader`]: a `.wasm` file to a [`LoadedPlugin`] ([`loaded`]), refusing bad ones with a
//!   clear reason.
//! - [`instance`]: one sandbox for one transaction; every hook call under a deadline.
//! - [`host_api`]: the functions plugins import (log, config, time).
//! - [`capabilities`]: what an operator may grant a plugin (`kv`, `dns`) and the calls behind it.
//! - [`view`]: the message of `check-message` parsed once for the transaction's plugins
//!   (`message-view`).
//! - [`returns`]: what a plugin returns, checked and bounded before the host acts on it.
//! - [`directory`]: finding plugins in the plugin directory, in order.
//! - [`signature`]: signed plugins (Ed25519 over the file's SHA-256 and the capabilities
//!   allowed), checked at load against `[plugins] trusted_keys`.
//! - [`shadow`]: a plugin's shadow version, compared with it and never applied; promote and
//!   rollback.
//! - [`cost`]: what each plugin's instances and calls cost (CPU, wall time, capability calls,
//!   memory).
//! - [`tape`]: what a plugin got from the host in a transaction (clock, DNS, first `kv`
//!   values), recorded for a capture and played back on replay.
//!
//! This module does not decide what verdicts mean for a transaction: that is the pipeline's job.
//!
//! May use: wasmtime, the configuration's plugin settings, the key-value store and the DNS
//! resolver (for the capabilities granted), mail-parser (the message view), ring (signatures),
//! and the shared vocabulary. Used by the pipeline,
//! which alone calls hooks.

pub mod bindings;
pub mod cache;
pub mod capabilities;
pub mod cost;
pub mod directory;
pub mod engine;
pub mod executor;
pub mod health;
pub mod host_api;
pub mod instance;
pub mod limits;
pub mod loaded;
pub mod loader;
pub mod returns;
pub mod shadow;
pub mod signature;
pub mod state;
pub mod tape;
pub mod view;

use std::fmt;
use std::path::PathBuf;

pub use engine::Runtime;
pub use host_api::LogLine;
pub use instance::{CallFailure, PluginInstance};
pub use loaded::{LoadedPlugin, Scope};

/// `text` cut to at most `max` bytes, on a character boundary (guest text is arbitrary
/// UTF-8: `String::truncate` in the middle of a character would panic).
pub fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The hooks of the WIT, as the host names them in logs and reports.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    /// `describe` (at load).
    Describe,
    /// `validate-config` (at load).
    ValidateConfig,
    /// `verify-sender`.
    VerifySender,
    /// `check-recipient`.
    CheckRecipient,
    /// `check-message`.
    CheckMessage,
    /// `on-delivery`.
    OnDelivery,
    /// `render-bounce`.
    RenderBounce,
}

impl Hook {
    /// The WIT name.
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Describe => "describe",
            Hook::ValidateConfig => "validate-config",
            Hook::VerifySender => "verify-sender",
            Hook::CheckRecipient => "check-recipient",
            Hook::CheckMessage => "check-message",
            Hook::OnDelivery => "on-delivery",
            Hook::RenderBounce => "render-bounce",
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a plugin could not be loaded or run. Always names the plugin's file.
#[derive(Debug, thiserror::Error)]
#[error("plugin {}: {kind}", .file.display())]
pub struct Error {
    /// The plugin file.
    pub file: PathBuf,
    /// What went wrong.
    pub kind: ErrorKind,
}

impl Error {
    /// True when the file is not a Sluice plugin at all (not a WebAssembly component, or a
    /// component that does not export Sluice's hooks): a stray file in the plugin directory,
    /// skipped with a warning wherever the directory is loaded. A Sluice plugin that cannot
    /// run (another WIT version, a capability not granted, settings refused) is an error.
    pub fn not_a_plugin(&self) -> bool {
        match &self.kind {
            ErrorKind::Compile(_) => true,
            ErrorKind::WrongWorld(m) => m.starts_with("not a Sluice plugin"),
            _ => false,
        }
    }
}

/// What went wrong with a plugin.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Read(std::io::Error),
    /// The file's SHA-256 is not the one pinned in the configuration.
    #[error("sha256 is {actual}, but the configuration pins {expected}")]
    HashMismatch {
        /// Pinned in config.
        expected: String,
        /// Of the file.
        actual: String,
    },
    /// Its signature does not let it load (`[plugins] require_signature`).
    #[error("{0}")]
    Signature(signature::SignatureError),
    /// The file is not a valid WebAssembly component (or wasmtime cannot compile it).
    #[error("not a valid WebAssembly component: {0}")]
    Compile(String),
    /// The component is not a Sluice plugin or was built for another WIT version.
    #[error("{0}")]
    WrongWorld(String),
    /// The component imports a capability the configuration does not grant it.
    #[error("{0}")]
    NotGranted(String),
    /// The component imports something Sluice does not provide.
    #[error("cannot be linked: {0}")]
    Link(String),
    /// A call at load time (`describe` or `validate-config`) failed.
    #[error("{hook} failed: {failure}")]
    LoadCall {
        /// The hook.
        hook: Hook,
        /// How it failed.
        failure: CallFailure,
    },
    /// The plugin refused its configuration.
    #[error("refused its configuration: {0}")]
    ConfigRefused(String),
    /// `describe` returned something unusable.
    #[error("describe returned {0}")]
    BadDescribe(String),
    /// The plugin calls itself by another name than its file's, and the configuration has
    /// settings under that other name only: it would run without them.
    #[error(
        "runs as {file_name:?}, its file name, but calls itself {own:?}, and the settings are in [plugin.{own}], which does not apply to it (a plugin is named after its file): rename the file to {own}.wasm (or NN-{own}.wasm), or move the settings to [plugin.{file_name}]"
    )]
    NameMismatch {
        /// The name it runs as: its file's.
        file_name: String,
        /// The name it gives itself.
        own: String,
    },
}

#[cfg(test)]
mod tests {
    #[test]
    fn truncate_cuts_on_a_character_boundary() {
        assert_eq!(super::truncate("héllo", 2), "h");
        assert_eq!(super::truncate("héllo", 3), "hé");
        assert_eq!(super::truncate("abc", 10), "abc");
        assert_eq!(super::truncate("€€", 4), "€");
    }
}
