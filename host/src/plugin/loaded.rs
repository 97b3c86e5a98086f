//! A plugin that passed every load check ([`LoadedPlugin`]): what it is, what it was granted,
//! where it applies ([`Scope`]) and its health; the template its per-transaction instances
//! are made from. Made by [`super::loader`], instantiated by [`super::instance`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::Hook;
use super::bindings::types::{ConfigValue, Hooks, PluginInfo};
use super::bindings::v0_1;
use super::cache::CacheOutcome;
use super::state::StoreState;
use crate::config::PluginLimits;

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
    /// It imports `message-view` (WIT 0.1.3): the host parses the message for it before
    /// `check-message`, off the plugin thread.
    pub reads_view: bool,
    /// Who signed the file, when it carries a signature by a trusted key.
    pub signer: Option<super::signature::Signer>,
    /// The file's version when it was loaded (with its signature's and shadow's), which the
    /// directory watcher compares with what is on disk.
    pub fingerprint: Option<super::directory::Fingerprint>,
    /// Its shadow (`NAME.shadow.wasm`), run beside it and compared, never applied.
    pub shadow: Option<Arc<LoadedPlugin>>,
    /// The share of transactions the shadow sees (`[plugin.NAME] shadow_sample`).
    pub shadow_sample: f64,
    /// What its instances and calls have cost since it was loaded.
    pub cost: Arc<super::cost::CostStats>,
    /// The comparison of the shadow with this plugin.
    pub shadow_stats: Arc<super::shadow::ShadowStats>,
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
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
