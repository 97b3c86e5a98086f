//! Test harness shared by Sluice's integration tests: where the built plugins are, a plugin
#![allow(clippy::unwrap_used)]
//! runtime with a persistent compile cache, and builders for sessions, envelopes and messages.
//!
//! Plugins are built from source by `scripts/build-plugins` (the test command runs it first);
//! nothing here builds or commits `.wasm` files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sluice::config::Config;
use sluice::pipeline::{LoadError, Pipeline};
use sluice::plugin::bindings::types::{Address, Envelope, Message, Session};
use sluice::plugin::engine::PoolSize;
use sluice::plugin::{LoadedPlugin, Runtime};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The built plugin `name` of `kind` (`test`, `examples` or `bundled`).
pub fn plugin(kind: &str, name: &str) -> PathBuf {
    let path = workspace_root()
        .join("target/plugins")
        .join(kind)
        .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: build the plugins with scripts/build-plugins (scripts/test does)",
        path.display()
    );
    path
}

/// The `sluice` binary built by cargo for this test run.
pub fn sluice_bin() -> PathBuf {
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    target.join("debug/sluice")
}

/// A plugin runtime with a small pool and a compile cache kept across test runs (keyed by
/// engine and component hash, so always safe to reuse).
pub fn runtime() -> Runtime {
    Runtime::new(
        PoolSize {
            max_memory_bytes: 256 << 20,
            max_instances: 64,
        },
        &workspace_root().join("target/test-compile-cache"),
    )
    .expect("plugin runtime")
}

/// Parses a configuration for tests; panics with the parser's message when invalid.
pub fn config(toml: &str) -> Config {
    let c = Config::parse(toml).expect("test configuration parses");
    c.validate().expect("test configuration is valid");
    c
}

/// Loads the given plugins (name, file) in order under `config`.
pub async fn pipeline(
    runtime: &Runtime,
    config: &Config,
    plugins: &[(&str, PathBuf)],
) -> Result<Pipeline, Vec<LoadError>> {
    let files: Vec<(String, PathBuf)> = plugins
        .iter()
        .map(|(n, p)| (n.to_string(), p.clone()))
        .collect();
    Pipeline::load_files(runtime, config, &files).await
}

/// Loads one plugin, returning the load error's text on failure.
pub async fn load_one(
    runtime: &Runtime,
    config: &Config,
    name: &str,
    file: &Path,
) -> Result<Arc<LoadedPlugin>, String> {
    sluice::plugin::loader::load(
        runtime,
        file,
        name,
        &config.plugin_settings(name),
        &config.plugins.defaults,
    )
    .await
    .map_err(|e| e.to_string())
}

/// A plain-text session from a documentation address.
pub fn session(id: &str) -> Session {
    Session {
        listener: "test".into(),
        client_ip: "192.0.2.7".into(),
        client_port: 50000,
        helo: "client.example".into(),
        tls: None,
        auth_user: None,
        transaction_id: id.into(),
    }
}

/// An address without parameters.
pub fn addr(a: &str) -> Address {
    Address {
        address: a.into(),
        params: Vec::new(),
    }
}

/// An envelope.
pub fn envelope(from: &str, rcpts: &[&str]) -> Envelope {
    Envelope {
        sender: addr(from),
        recipients: rcpts.iter().map(|r| addr(r)).collect(),
    }
}

/// A small CRLF message with the given subject and body.
pub fn message(subject: &str, body: &str) -> Message {
    let raw = format!(
        "From: a@example.org\r\nTo: b@example.net\r\nSubject: {subject}\r\nMessage-ID: <t@example.org>\r\n\r\n{body}\r\n"
    );
    sluice::pipeline::message(raw.into_bytes())
}
