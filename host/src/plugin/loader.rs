//! Turns a plugin file into a [`LoadedPlugin`]: read, hash (and check a pinned hash), compile
//! (through the cache), check that it is a `sluice:filter` plugin of a supported version, link,
//! then call `describe` and `validate-config` once in a throwaway instance. Any failure refuses
//! the plugin with an [`Error`] naming the file and the reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use wasmtime::component::types::ComponentItem;

use super::bindings::types::{ConfigValue, Hooks, PluginInfo};
use super::bindings::{HOOKS_EXPORT, HOOKS_EXPORTS, WIT_VERSION, v0_1};
use super::cache::CacheOutcome;
use super::executor;
use super::host_api::{LogLine, StoreState, flatten_config};
use super::instance::PluginInstance;
use super::{Error, ErrorKind, Hook, Runtime};
use crate::config::{PluginLimits, PluginSettings};

/// A plugin that passed every load check, ready to be instantiated per transaction.
#[derive(Clone)]
pub struct LoadedPlugin {
    /// The operator's name for it: the file name without `NN-` prefix and `.wasm`.
    pub name: String,
    /// Where it was loaded from.
    pub file: PathBuf,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// What the plugin said about itself.
    pub info: PluginInfo,
    /// Limits and failure policy in force.
    pub limits: PluginLimits,
    /// Its settings, flattened, as the plugin reads them.
    pub config: Arc<BTreeMap<String, ConfigValue>>,
    /// Directories granted to it read-only (`read_dirs`).
    pub read_dirs: Arc<Vec<PathBuf>>,
    /// The capabilities granted to it (`capabilities`).
    pub capabilities: Vec<crate::config::Capability>,
    pub(crate) grants: super::capabilities::Grants,
    /// Which listeners and recipient domains it applies to.
    pub scope: Scope,
    /// Failures in a row and cool-down.
    pub health: Arc<super::health::Health>,
    /// Times this plugin's verdict ended a stage before later plugins of it were called.
    pub stages_ended: Arc<std::sync::atomic::AtomicU64>,
    /// Whether the compiled code came from the cache.
    pub cache: CacheOutcome,
    /// Time to compile or load from cache, in milliseconds.
    pub compile_ms: f64,
    pub(crate) engine: wasmtime::Engine,
    pub(crate) pre: v0_1::PluginPre<StoreState>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("file", &self.file)
            .field("info", &self.info)
            .finish()
    }
}

impl LoadedPlugin {
    /// True when the plugin asked for `hook` in `describe`.
    pub fn wants(&self, hook: Hook) -> bool {
        let flag = match hook {
            Hook::VerifySender => Hooks::VERIFY_SENDER,
            Hook::CheckRecipient => Hooks::CHECK_RECIPIENT,
            Hook::CheckMessage => Hooks::CHECK_MESSAGE,
            Hook::OnDelivery => Hooks::ON_DELIVERY,
            Hook::RenderBounce => Hooks::RENDER_BOUNCE,
            Hook::Describe | Hook::ValidateConfig => return true,
        };
        self.info.hooks.contains(flag)
    }

    /// The hooks the plugin asked for, by WIT name.
    pub fn hook_names(&self) -> Vec<&'static str> {
        [
            Hook::VerifySender,
            Hook::CheckRecipient,
            Hook::CheckMessage,
            Hook::OnDelivery,
            Hook::RenderBounce,
        ]
        .into_iter()
        .filter(|h| self.wants(*h))
        .map(Hook::as_str)
        .collect()
    }
}

/// Where a plugin applies (`[plugin.NAME] listeners` and `domains`); empty lists mean
/// everywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Listener kinds.
    pub listeners: Vec<crate::config::ListenerKind>,
    /// Recipient domains, lower case.
    pub domains: Vec<String>,
}

impl Scope {
    /// True when the plugin applies to sessions of the listener named `listener`.
    pub fn listener(&self, listener: &str) -> bool {
        self.listeners.is_empty() || self.listeners.iter().any(|l| l.as_str() == listener)
    }

    /// True when the plugin applies to mail for `address`.
    pub fn recipient(&self, address: &str) -> bool {
        if self.domains.is_empty() {
            return true;
        }
        let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
    }

    /// True when the plugin applies to a message for these recipients (any one will do).
    pub fn any_recipient<'a>(&self, mut addresses: impl Iterator<Item = &'a str>) -> bool {
        self.domains.is_empty() || addresses.any(|a| self.recipient(a))
    }

    /// True when the scope names domains (such a plugin gets no `verify-sender`).
    pub fn by_domain(&self) -> bool {
        !self.domains.is_empty()
    }
}

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

    let started = Instant::now();
    let (component, cache) = runtime
        .cache
        .load_or_compile(&runtime.engine, &wasm, &sha256)
        .map_err(|e| err(ErrorKind::Compile(explain_compile_error(format!("{e:#}")))))?;
    let compile_ms = started.elapsed().as_secs_f64() * 1000.0;

    check_world(&runtime.engine, &component).map_err(|m| err(ErrorKind::WrongWorld(m)))?;
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
    Ok(Arc::new(plugin))
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
