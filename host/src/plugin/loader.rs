//! Turns a plugin file into a [`LoadedPlugin`]: read, hash (and check a pinned hash), compile
//! (through the cache), check that it is a `sluice:filter` plugin of a supported version, link,
//! then call `describe` and `validate-config` once in a throwaway instance. Any failure refuses
//! the plugin with an [`Error`] naming the file and the reason.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use wasmtime::component::types::ComponentItem;

use super::bindings::types::{Hooks, PluginInfo};
use super::bindings::{HOOKS_EXPORT, HOOKS_EXPORTS, WIT_VERSION, v0_1};
use super::executor;
use super::host_api::{LogLine, flatten_config};
use super::instance::PluginInstance;
use super::loaded::{LoadedPlugin, Scope};
use super::signature::{SignatureError, Signer};
use super::{Error, ErrorKind, Hook, Runtime};
use crate::config::{PluginLimits, PluginSettings};

/// True when loading `file` will compile it (its compiled code is not in the cache). A file
/// that cannot be read counts as compiled: its load reports the error.
pub fn needs_compile(runtime: &Runtime, file: &Path) -> bool {
    match std::fs::read(file) {
        Ok(wasm) => !runtime.cache.contains(&hex::encode(Sha256::digest(&wasm))),
        Err(_) => false,
    }
}

/// Loads the plugin at `file` under the name `name` with `settings`.
pub async fn load(
    runtime: &Runtime,
    file: &Path,
    name: &str,
    settings: &PluginSettings,
    defaults: &PluginLimits,
) -> Result<Arc<LoadedPlugin>, Error> {
    let err = |kind| Error {
        file: file.to_path_buf(),
        kind,
    };
    // Taken before the read: a change made meanwhile is seen as one by the next rescan.
    let fingerprint = super::directory::fingerprint(file);
    let wasm = std::fs::read(file).map_err(|e| err(ErrorKind::Read(e)))?;
    let sha256 = hex::encode(Sha256::digest(&wasm));
    if let Some(expected) = &settings.sha256
        && !expected.eq_ignore_ascii_case(&sha256)
    {
        return Err(err(ErrorKind::HashMismatch {
            expected: expected.clone(),
            actual: sha256,
        }));
    }
    if !wasm.starts_with(b"\0asm") {
        return Err(err(ErrorKind::Compile(
            "the file does not start with the WebAssembly magic bytes".to_string(),
        )));
    }

    // The signature before anything reads the file as code: a file that is not what a
    // trusted signer signed is never compiled when signatures are required.
    // Required, a signature problem refuses the plugin; otherwise it loads as unsigned and
    // the log says why.
    let settle = |checked: Result<Option<Signer>, SignatureError>| match checked {
        Ok(signer) => Ok(signer),
        Err(e) if settings.signing.required => Err(err(ErrorKind::Signature(e))),
        Err(e) => {
            tracing::warn!(plugin = %name, file = %file.display(), "loaded as unsigned: {e}");
            Ok(None)
        }
    };
    let signer = settle(super::signature::verify(&settings.signing, file, &sha256))?;

    let started = Instant::now();
    let (component, cache) = runtime
        .cache
        .load_or_compile(&runtime.engine, &wasm, &sha256)
        .map_err(|e| err(ErrorKind::Compile(explain_compile_error(format!("{e:#}")))))?;
    let compile_ms = started.elapsed().as_secs_f64() * 1000.0;

    check_world(&runtime.engine, &component).map_err(|m| err(ErrorKind::WrongWorld(m)))?;
    let imports = super::capabilities::imported(&runtime.engine, &component);
    let signer = settle(signer.map(|s| s.allow(&imports).map(|()| s)).transpose())?;
    super::capabilities::check_imports(&runtime.engine, &component, name, &settings.capabilities)
        .map_err(|m| err(ErrorKind::NotGranted(m)))?;
    let grants = super::capabilities::Grants::new(name, &settings.capabilities, &runtime.services)
        .map_err(|m| err(ErrorKind::NotGranted(m)))?
        .with_kv_limits(&settings.limits(defaults));

    let instance_pre = runtime
        .linker
        .instantiate_pre(&component)
        .map_err(|e| err(ErrorKind::Link(format!("{e:#}"))))?;
    let pre = v0_1::PluginPre::new(instance_pre)
        .map_err(|e| err(ErrorKind::WrongWorld(format!("{e:#}"))))?;

    let mut plugin = LoadedPlugin {
        name: name.to_string(),
        file: file.to_path_buf(),
        sha256,
        info: PluginInfo {
            name: String::new(),
            version: String::new(),
            hooks: Hooks::empty(),
        },
        limits: settings.limits(defaults),
        config: Arc::new(flatten_config(&settings.config)),
        read_dirs: Arc::new(settings.read_dirs.clone()),
        capabilities: settings.capabilities.clone(),
        grants,
        scope: Scope {
            listeners: settings.listeners.clone(),
            domains: settings
                .domains
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
        },
        health: Arc::default(),
        stages_ended: Arc::default(),
        cache,
        compile_ms,
        reads_view: imports_view(&runtime.engine, &component),
        signer,
        fingerprint,
        shadow: None,
        shadow_sample: settings.shadow_sample.unwrap_or(1.0),
        shadow_stats: Arc::default(),
        cost: Arc::default(),
        engine: runtime.engine.clone(),
        pre,
    };

    // Ask the plugin about itself and its settings, in a throwaway instance (on the plugin
    // thread, like every instance).
    let (info, logs) = executor::run(ask(Arc::new(plugin.clone())))
        .await
        .map_err(err)?;
    for line in logs {
        tracing::info!(plugin = %name, level = line.level, "{}", line.message);
    }
    plugin.info = info;
    plugin.shadow = load_shadow(runtime, file, name, settings, defaults).await;
    Ok(Arc::new(plugin))
}

/// The shadow of plugin `name` (`NAME.shadow.wasm` beside `file`), loaded as `NAME.shadow`
/// with the same settings (so its own `kv` namespace). A shadow that cannot load leaves the
/// live plugin alone: the log says why.
async fn load_shadow(
    runtime: &Runtime,
    file: &Path,
    name: &str,
    settings: &PluginSettings,
    defaults: &PluginLimits,
) -> Option<Arc<LoadedPlugin>> {
    if name.ends_with(".shadow") {
        return None;
    }
    let path = super::directory::shadow_path(file, name);
    if !path.is_file() {
        return None;
    }
    let shadow_name = format!("{name}.shadow");
    // The live file's pin is not the shadow's (it is another file by design); a signature,
    // when required, is.
    let settings = PluginSettings {
        sha256: None,
        required: false,
        ..settings.clone()
    };
    match Box::pin(load(runtime, &path, &shadow_name, &settings, defaults)).await {
        Ok(p) => {
            tracing::info!(plugin = %name, file = %path.display(), version = %p.info.version, sample = settings.shadow_sample.unwrap_or(1.0), "shadow loaded: its verdicts are compared with the live plugin's, never applied");
            Some(p)
        }
        Err(e) => {
            tracing::warn!(plugin = %name, "shadow refused, the live plugin runs alone: {e}");
            None
        }
    }
}

/// wasmtime's parse error, with what to do when it says the file ends early (a copy still in
/// progress, or a file written in place).
fn explain_compile_error(message: String) -> String {
    let truncated = message.contains("unexpected end-of-file")
        || (message.contains("is out of bounds (bound = ") && message.contains("range"));
    if truncated {
        format!(
            "{message}: the file looks truncated (cut short, or still being written); install plugins by writing .NAME.wasm.tmp in the plugin directory and renaming it to NAME.wasm, so Sluice never reads half a file"
        )
    } else {
        message
    }
}

/// Whether the component imports `sluice:filter/message-view` (any 0.1 version).
fn imports_view(engine: &wasmtime::Engine, component: &wasmtime::component::Component) -> bool {
    component
        .component_type()
        .imports(engine)
        .any(|(name, _)| name.starts_with("sluice:filter/message-view@"))
}

/// Checks that the component exports `sluice:filter/hooks` of the supported version, with a
/// message that says what it exports instead.
fn check_world(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
) -> Result<(), String> {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(engine)
        .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentInstance(_)))
        .map(|(name, _)| name.to_string())
        .collect();
    if exports.iter().any(|e| HOOKS_EXPORTS.contains(&e.as_str())) {
        return Ok(());
    }
    if let Some(other) = exports
        .iter()
        .find(|e| e.starts_with("sluice:filter/hooks@"))
    {
        let version = other.trim_start_matches("sluice:filter/hooks@");
        return Err(format!(
            "built for sluice:filter@{version}, but this Sluice supports sluice:filter@0.1.0 to @{WIT_VERSION}; rebuild it against the WIT in wit/"
        ));
    }
    Err(format!(
        "not a Sluice plugin: it does not export {HOOKS_EXPORT} (it exports: {})",
        if exports.is_empty() {
            "no interfaces".to_string()
        } else {
            exports.join(", ")
        }
    ))
}

/// What a plugin says about itself (`describe`), once it accepted its settings
/// (`validate-config`), with what it logged meanwhile; or why it is refused.
async fn ask(plugin: Arc<LoadedPlugin>) -> Result<(PluginInfo, Vec<LogLine>), ErrorKind> {
    let call = |hook| move |failure| ErrorKind::LoadCall { hook, failure };
    let mut instance = PluginInstance::new(plugin)
        .await
        .map_err(call(Hook::Describe))?;
    let info = instance.describe().await.map_err(call(Hook::Describe))?;
    if info.name.trim().is_empty() {
        return Err(ErrorKind::BadDescribe("an empty name".to_string()));
    }
    instance
        .validate_config()
        .await
        .map_err(call(Hook::ValidateConfig))?
        .map_err(ErrorKind::ConfigRefused)?;
    Ok((info, instance.take_logs().0))
}
