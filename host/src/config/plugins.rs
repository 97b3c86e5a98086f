//! `[plugins]` and `[plugin.NAME]`: where plugins come from, the limits every plugin gets
//! unless its own table says otherwise, and each plugin's settings and grants.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use super::{DAY, ListenerKind, Problems};

/// Where plugins come from, and default limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PluginsConfig {
    /// Plugin directory; default `<data_dir>/plugins`.
    pub dir: Option<PathBuf>,
    /// Compile cache directory; default `<data_dir>/cache`.
    pub cache_dir: Option<PathBuf>,
    /// Explicit run order by plugin name. Plugins not listed run after these, by file name.
    pub order: Vec<String>,
    /// The largest linear memory any plugin may be given, in MiB (sizes the instance pool).
    pub max_memory_mb: u64,
    /// How many plugin instances may exist at once across all transactions (sizes the pool).
    pub max_instances: u32,
    /// Threads that run plugin code (create, call and drop sandboxes); default 1. More
    /// threads let plugin work use more cores, but sandboxes on several threads at once make
    /// each guest page fault interrupt the other cores (a TLB flush): with interpreted
    /// plugins on 2 cores, 2 threads cost 2.5 times the CPU of 1. Takes effect at start.
    pub threads: usize,
    /// Limits and failure policy for plugins that do not set their own.
    pub defaults: PluginLimits,
    /// Watch the plugin directory and apply added, replaced and removed `.wasm` files
    /// without a restart.
    pub watch: bool,
    /// Seconds between rescans of the plugin directory (the fallback when file-system
    /// events are missed, e.g. on network file systems).
    pub rescan_secs: u64,
    /// After this many failures in a row (traps, deadline or memory overruns) a plugin is
    /// put in cool-down: its failure policy applies without calling it.
    pub cooldown_after_failures: u32,
    /// How long a cool-down lasts, in seconds; then the plugin is called again.
    pub cooldown_secs: u64,
    /// The DNS server for plugins granted `dns` (`ip` or `ip:port`); default: the system's.
    pub resolver: Option<String>,
    /// Longest wait for one DNS answer to a plugin, in milliseconds (the hook's deadline
    /// bounds it too).
    pub dns_timeout_ms: u64,
    /// DNS lookups one plugin may make in one transaction (all its hook calls together);
    /// past it a lookup answers `temporary`.
    pub dns_lookups_per_transaction: u32,
    /// DNS lookups all plugins together may make per second; past it a lookup answers
    /// `temporary`.
    pub dns_lookups_per_second: u32,
    /// Public keys whose plugin signatures are trusted, each the line of a `.pub` file that
    /// `sluice plugin keygen` wrote: `ed25519:BASE64 NAME`.
    pub trusted_keys: Vec<String>,
    /// Load only plugins signed by one of `trusted_keys` (`NAME.wasm.sig` beside the file,
    /// from `sluice plugin sign`), unchanged since, and importing only the capabilities the
    /// signature allows.
    pub require_signature: bool,
}

impl PluginsConfig {
    /// `trusted_keys` and `require_signature`, parsed (start-up validation reported any key
    /// that does not parse; such a key is left out here).
    pub fn signing_policy(&self) -> super::SigningPolicy {
        super::SigningPolicy {
            trusted: self
                .trusted_keys
                .iter()
                .filter_map(|k| super::TrustedKey::parse(k).ok())
                .collect(),
            required: self.require_signature,
        }
    }
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            dir: None,
            cache_dir: None,
            order: Vec::new(),
            max_memory_mb: 256,
            max_instances: 1000,
            threads: 1,
            defaults: PluginLimits::default(),
            watch: true,
            rescan_secs: 5,
            cooldown_after_failures: 5,
            cooldown_secs: 30,
            resolver: None,
            dns_timeout_ms: 2000,
            dns_lookups_per_transaction: 100,
            dns_lookups_per_second: 1000,
            trusted_keys: Vec::new(),
            require_signature: false,
        }
    }
}

/// What happens to a transaction when a plugin fails (traps, overruns its deadline or memory,
/// or returns something invalid). A plugin's *verdict* is never subject to this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// Answer 451 4.3.0: the client retries later. The default: no mail slips through unfiltered.
    Tempfail,
    /// Ignore the failed plugin (fail open).
    Continue,
    /// Answer 550 5.7.0.
    Reject,
}

impl fmt::Display for FailurePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailurePolicy::Tempfail => "tempfail",
            FailurePolicy::Continue => "continue",
            FailurePolicy::Reject => "reject",
        })
    }
}

/// Per-plugin limits. In `[plugins.defaults]` every field has a value; in `[plugin.NAME]` a
/// missing field falls back to the default.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct PluginLimits {
    /// Wall-clock time one hook call may take, in milliseconds.
    pub timeout_ms: u64,
    /// Linear memory the plugin may use, in MiB.
    pub memory_mb: u64,
    /// Log lines the plugin may write per transaction; the rest are dropped and counted.
    pub log_lines: u32,
    /// What a failure of this plugin does to the transaction.
    pub on_failure: FailurePolicy,
    /// Header fields one `check-message` verdict may add, and may remove (each list).
    pub max_headers: u32,
    /// Bytes of the header fields one verdict adds, names and values together.
    pub max_header_bytes: u32,
    /// Symbols one verdict may give.
    pub max_symbols: u32,
    /// Bytes of one text a plugin returns: a reply text, a quarantine reason, a symbol's
    /// detail, a bounce subject.
    pub max_text_bytes: u32,
    /// Bytes of a rendered bounce's text and HTML parts together.
    pub max_bounce_bytes: u32,
    /// Calls to `kv` and `dns` one hook call may make.
    pub kv_ops_per_call: u32,
    /// Keys the plugin may keep in the store.
    pub kv_max_keys: u64,
    /// Bytes (keys and values) the plugin may keep in the store.
    pub kv_max_bytes: u64,
    /// The time-to-live of a key written with 0 ("never"), and the longest any key may have
    /// (seconds): every key a plugin writes expires.
    pub kv_max_ttl_secs: u32,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            timeout_ms: 200,
            memory_mb: 64,
            log_lines: 100,
            on_failure: FailurePolicy::Tempfail,
            max_headers: 32,
            max_header_bytes: 16 * 1024,
            max_symbols: 128,
            max_text_bytes: 512,
            max_bounce_bytes: 256 * 1024,
            kv_ops_per_call: 64,
            kv_max_keys: 100_000,
            kv_max_bytes: 64 << 20,
            kv_max_ttl_secs: 90 * 24 * 3600,
        }
    }
}

/// A capability an operator grants a plugin (`[plugin.NAME] capabilities`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    /// `sluice:filter/kv`: state kept between transactions, in `[store]`.
    Kv,
    /// `sluice:filter/dns`: DNS lookups through the host's resolver.
    Dns,
}

impl Capability {
    /// Its name in the configuration, which is also the WIT interface's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Kv => "kv",
            Capability::Dns => "dns",
        }
    }

    /// Every capability.
    pub const ALL: [Capability; 2] = [Capability::Kv, Capability::Dns];
}

/// `[plugin.NAME]`: settings of one plugin.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct PluginSettings {
    /// Set to false to keep the plugin out of service without removing its file.
    pub enabled: Option<bool>,
    /// Time per hook call, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Linear memory, in MiB.
    pub memory_mb: Option<u64>,
    /// Log lines per transaction.
    pub log_lines: Option<u32>,
    /// Failure policy.
    pub on_failure: Option<FailurePolicy>,
    /// Header fields added, and removed, per verdict.
    pub max_headers: Option<u32>,
    /// Bytes of added header fields per verdict.
    pub max_header_bytes: Option<u32>,
    /// Symbols per verdict.
    pub max_symbols: Option<u32>,
    /// Bytes of one returned text.
    pub max_text_bytes: Option<u32>,
    /// Bytes of a rendered bounce.
    pub max_bounce_bytes: Option<u32>,
    /// Calls to `kv` and `dns` per hook call.
    pub kv_ops_per_call: Option<u32>,
    /// Keys in the store.
    pub kv_max_keys: Option<u64>,
    /// Bytes in the store.
    pub kv_max_bytes: Option<u64>,
    /// The longest time-to-live, given to keys written with 0.
    pub kv_max_ttl_secs: Option<u32>,
    /// The capabilities granted to this plugin (`"kv"`, `"dns"`); none by default. A plugin
    /// importing one it is not granted is refused at load.
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    /// When set, the plugin file's SHA-256 (hex) must match or the plugin is refused.
    pub sha256: Option<String>,
    /// The share of transactions (0 to 1; default 1) a shadow version of this plugin
    /// (`NAME.shadow.wasm` beside its file) sees, to bound what it costs.
    pub shadow_sample: Option<f64>,
    /// The plugin must be in service (needs `sha256`): while its file is missing, refused or
    /// disabled, every transaction is answered 451 4.3.0 at MAIL FROM instead of passing
    /// unfiltered.
    pub required: bool,
    /// Directories this plugin may read (and nothing else on the host): each is visible to
    /// the plugin, read-only, at the same absolute path. Everything else stays default-deny.
    #[serde(default)]
    pub read_dirs: Vec<PathBuf>,
    /// Listeners the plugin applies to; empty means all.
    #[serde(default)]
    pub listeners: Vec<ListenerKind>,
    /// Recipient domains the plugin applies to (case-insensitive); empty means all. A
    /// domain-scoped plugin sees `check-recipient` for recipients in these domains,
    /// `check-message`, `on-delivery` and `render-bounce` when a recipient is in them, and
    /// no `verify-sender` (recipients are not known yet at MAIL FROM).
    #[serde(default)]
    pub domains: Vec<String>,
    /// The plugin's own settings, handed to it through `host.get-config`.
    pub config: toml::Table,
    /// `[plugins] trusted_keys` and `require_signature` (not a key of `[plugin.NAME]`: the
    /// configuration gives it to every plugin's settings, see [`crate::config::Config::plugin_settings`]).
    #[serde(skip)]
    pub signing: super::SigningPolicy,
}

impl PluginSettings {
    /// These settings' limits, falling back to `defaults` field by field.
    pub fn limits(&self, defaults: &PluginLimits) -> PluginLimits {
        PluginLimits {
            timeout_ms: self.timeout_ms.unwrap_or(defaults.timeout_ms),
            memory_mb: self.memory_mb.unwrap_or(defaults.memory_mb),
            log_lines: self.log_lines.unwrap_or(defaults.log_lines),
            on_failure: self.on_failure.unwrap_or(defaults.on_failure),
            max_headers: self.max_headers.unwrap_or(defaults.max_headers),
            max_header_bytes: self.max_header_bytes.unwrap_or(defaults.max_header_bytes),
            max_symbols: self.max_symbols.unwrap_or(defaults.max_symbols),
            max_text_bytes: self.max_text_bytes.unwrap_or(defaults.max_text_bytes),
            max_bounce_bytes: self.max_bounce_bytes.unwrap_or(defaults.max_bounce_bytes),
            kv_ops_per_call: self.kv_ops_per_call.unwrap_or(defaults.kv_ops_per_call),
            kv_max_keys: self.kv_max_keys.unwrap_or(defaults.kv_max_keys),
            kv_max_bytes: self.kv_max_bytes.unwrap_or(defaults.kv_max_bytes),
            kv_max_ttl_secs: self.kv_max_ttl_secs.unwrap_or(defaults.kv_max_ttl_secs),
        }
    }
}

fn check_limits(key: &str, l: &PluginLimits, max_mem: u64, p: &mut Problems) {
    p.range(format_args!("{key}.timeout_ms"), l.timeout_ms, 1, 60_000);
    p.range(
        format_args!("{key}.kv_max_keys"),
        l.kv_max_keys,
        1,
        100_000_000,
    );
    if !(1024..=1 << 40).contains(&l.kv_max_bytes) {
        p.add(
            format_args!("{key}.kv_max_bytes"),
            format_args!("{} is out of range (1024 to 1 TiB)", l.kv_max_bytes),
        );
    }
    if !(1..=crate::store::MAX_TTL_SECS).contains(&l.kv_max_ttl_secs) {
        p.add(
            format_args!("{key}.kv_max_ttl_secs"),
            format_args!(
                "{} is out of range (1 to {}, 90 days)",
                l.kv_max_ttl_secs,
                crate::store::MAX_TTL_SECS
            ),
        );
    }
    p.range(
        format_args!("{key}.kv_ops_per_call"),
        l.kv_ops_per_call,
        1,
        10_000,
    );
    if l.memory_mb == 0 || l.memory_mb > max_mem {
        p.add(
            format_args!("{key}.memory_mb"),
            format_args!(
                "{} is out of range (1 to plugins.max_memory_mb = {max_mem})",
                l.memory_mb
            ),
        );
    }
}

/// True for names made of ASCII letters, digits, `-` and `_`.
pub fn valid_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `[plugins]` and every `[plugin.NAME]`.
pub(super) fn validate(
    plugins: &PluginsConfig,
    each: &BTreeMap<String, PluginSettings>,
    p: &mut Problems,
) {
    let max_mem = plugins.max_memory_mb;
    p.range("plugins.max_memory_mb", max_mem, 1, 4096);
    p.range("plugins.threads", plugins.threads, 1, 64);
    p.nonzero("plugins.max_instances", plugins.max_instances as u64);
    check_limits("plugins.defaults", &plugins.defaults, max_mem, p);
    p.resolver("plugins.resolver", plugins.resolver.as_deref());
    for (key, value) in [
        (
            "plugins.dns_lookups_per_transaction",
            plugins.dns_lookups_per_transaction,
        ),
        (
            "plugins.dns_lookups_per_second",
            plugins.dns_lookups_per_second,
        ),
    ] {
        p.range(key, value, 1, 100_000);
    }
    p.range("plugins.dns_timeout_ms", plugins.dns_timeout_ms, 1, 30_000);
    p.nonzero("plugins.rescan_secs", plugins.rescan_secs);
    p.at_most_secs("plugins.rescan_secs", plugins.rescan_secs, 3600);
    p.at_most_secs("plugins.cooldown_secs", plugins.cooldown_secs, DAY);
    if plugins.cooldown_after_failures == 0 || plugins.cooldown_secs == 0 {
        p.add(
            "plugins.cooldown_after_failures and plugins.cooldown_secs",
            "must be at least 1",
        );
    }
    for (i, key) in plugins.trusted_keys.iter().enumerate() {
        if let Err(e) = super::TrustedKey::parse(key) {
            p.add(format_args!("plugins.trusted_keys[{i}]"), e);
        }
    }
    if plugins.require_signature && plugins.trusted_keys.is_empty() {
        p.add(
            "plugins.require_signature",
            "no plugin could load: add the signers' public keys to plugins.trusted_keys",
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for name in &plugins.order {
        if !seen.insert(name) {
            p.add("plugins.order", format_args!("{name:?} is listed twice"));
        }
    }
    for (name, settings) in each {
        settings.validate(name, plugins, p);
    }
}

impl PluginSettings {
    fn validate(&self, name: &str, plugins: &PluginsConfig, p: &mut Problems) {
        let at = |key: &str| format!("plugin.{name}.{key}");
        if !valid_plugin_name(name) {
            p.add(
                format_args!("plugin.{name}"),
                "a plugin name uses letters, digits, '-' and '_' only",
            );
        }
        let limits = self.limits(&plugins.defaults);
        check_limits(&format!("plugin.{name}"), &limits, plugins.max_memory_mb, p);
        for d in &self.read_dirs {
            if !d.is_absolute() {
                p.add(
                    at("read_dirs"),
                    format_args!("{} must be an absolute path", d.display()),
                );
            } else if !d.is_dir() {
                p.add(
                    at("read_dirs"),
                    format_args!("{} is not a directory", d.display()),
                );
            }
        }
        p.domains(&at("domains"), &self.domains);
        if let Some(rate) = self.shadow_sample
            && !(0.0..=1.0).contains(&rate)
        {
            p.add(
                at("shadow_sample"),
                format_args!("{rate} is not between 0 and 1"),
            );
        }
        if let Some(sha) = &self.sha256
            && (sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            p.add(
                at("sha256"),
                format_args!("expected 64 hexadecimal digits, found {sha:?}"),
            );
        }
        if self.required && self.sha256.is_none() {
            p.add(
                at("required"),
                format_args!(
                    "a required plugin must be pinned: set plugin.{name}.sha256 to its file's SHA-256"
                ),
            );
        }
    }
}
