//! The operator's configuration: one TOML file, typed with serde, unknown keys refused, then
//! validated as a whole so that every problem is reported at once, each naming its key.
//!
//! Without a file Sluice runs on [`Config::default`], the built-in development configuration.
//! This module only parses and validates; it opens no sockets and loads no plugins.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Host-wide settings (host name, data directory).
    pub server: ServerConfig,
    /// Where plugins come from and the limits every plugin gets unless it says otherwise.
    pub plugins: PluginsConfig,
    /// Settings per plugin, keyed by plugin name (the file name without `NN-` prefix and `.wasm`).
    pub plugin: BTreeMap<String, PluginSettings>,
    /// What the summed spam score of a message leads to.
    pub scoring: ScoringConfig,
    /// The file this was read from, for error messages; `None` for the built-in default.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// Host-wide settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The name this host uses in replies, `Received:` headers and bounces.
    pub hostname: String,
    /// Directory for the spool, the compile cache and (by default) plugins.
    pub data_dir: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            hostname: "localhost".to_string(),
            data_dir: PathBuf::from("sluice-data"),
        }
    }
}

/// Where plugins come from, and default limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
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
    /// Limits and failure policy for plugins that do not set their own.
    pub defaults: PluginLimits,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            dir: None,
            cache_dir: None,
            order: Vec::new(),
            max_memory_mb: 256,
            max_instances: 1000,
            defaults: PluginLimits::default(),
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
#[serde(deny_unknown_fields, default)]
pub struct PluginLimits {
    /// Wall-clock time one hook call may take, in milliseconds.
    pub timeout_ms: u64,
    /// Linear memory the plugin may use, in MiB.
    pub memory_mb: u64,
    /// Log lines the plugin may write per transaction; the rest are dropped and counted.
    pub log_lines: u32,
    /// What a failure of this plugin does to the transaction.
    pub on_failure: FailurePolicy,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            timeout_ms: 200,
            memory_mb: 64,
            log_lines: 100,
            on_failure: FailurePolicy::Tempfail,
        }
    }
}

/// `[plugin.NAME]`: settings of one plugin.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
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
    /// When set, the plugin file's SHA-256 (hex) must match or the plugin is refused.
    pub sha256: Option<String>,
    /// The plugin's own settings, handed to it through `host.get-config`.
    pub config: toml::Table,
}

impl PluginSettings {
    /// These settings' limits, falling back to `defaults` field by field.
    pub fn limits(&self, defaults: &PluginLimits) -> PluginLimits {
        PluginLimits {
            timeout_ms: self.timeout_ms.unwrap_or(defaults.timeout_ms),
            memory_mb: self.memory_mb.unwrap_or(defaults.memory_mb),
            log_lines: self.log_lines.unwrap_or(defaults.log_lines),
            on_failure: self.on_failure.unwrap_or(defaults.on_failure),
        }
    }
}

/// Spam-score thresholds applied to the sum of every plugin's symbols.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoringConfig {
    /// Add `X-Spam-Score` and `X-Spam-Status` headers to every message that reaches
    /// `check-message`.
    pub add_headers: bool,
    /// At or above this score the message is marked spam (`X-Spam-Status: Yes`).
    pub spam_threshold: f64,
    /// At or above this score the message is rejected with 550 5.7.1; none to never reject.
    pub reject_threshold: Option<f64>,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        ScoringConfig {
            add_headers: true,
            spam_threshold: 5.0,
            reject_threshold: Some(15.0),
        }
    }
}

/// A configuration that could not be read or is invalid. Its display lists every problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema (unknown key, wrong type).
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: PathBuf,
        /// The parser's message, which names the key and position.
        message: String,
    },
    /// The file parsed but some values are invalid.
    #[error("{}", .problems.iter().map(|p| format!("{}: {p}", .file.display())).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file (or `<built-in>`).
        file: PathBuf,
        /// Every problem, each naming its key.
        problems: Vec<String>,
    },
}

/// The text of the built-in configuration.
pub const BUILTIN: &str = include_str!("default.toml");

impl Config {
    /// The built-in configuration (`host/src/default.toml`), used when no file is given.
    pub fn builtin() -> Config {
        match Config::parse(BUILTIN) {
            Ok(c) => c,
            // The text is part of the binary and covered by a unit test.
            Err(e) => unreachable!("built-in configuration does not parse: {e}"),
        }
    }

    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::parse(&text).map_err(|message| ConfigError::Parse {
            file: path.to_path_buf(),
            message,
        })?;
        config.source = Some(path.to_path_buf());
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text without validating it.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    /// Checks every value, collecting all problems.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let max_mem = self.plugins.max_memory_mb;
        if !(1..=4096).contains(&max_mem) {
            problems.push(format!(
                "plugins.max_memory_mb: {max_mem} is out of range (1 to 4096)"
            ));
        }
        if self.plugins.max_instances == 0 {
            problems.push("plugins.max_instances: must be at least 1".to_string());
        }
        check_limits(
            "plugins.defaults",
            &self.plugins.defaults,
            max_mem,
            &mut problems,
        );
        for (name, settings) in &self.plugin {
            if !valid_plugin_name(name) {
                problems.push(format!(
                    "plugin.{name}: a plugin name uses letters, digits, '-' and '_' only"
                ));
            }
            let limits = settings.limits(&self.plugins.defaults);
            check_limits(&format!("plugin.{name}"), &limits, max_mem, &mut problems);
            if let Some(sha) = &settings.sha256
                && (sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                problems.push(format!(
                    "plugin.{name}.sha256: expected 64 hexadecimal digits, found {sha:?}"
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for name in &self.plugins.order {
            if !seen.insert(name) {
                problems.push(format!("plugins.order: {name:?} is listed twice"));
            }
        }
        let s = &self.scoring;
        if !s.spam_threshold.is_finite() {
            problems.push("scoring.spam_threshold: must be a finite number".to_string());
        }
        if let Some(r) = s.reject_threshold
            && (!r.is_finite() || r < s.spam_threshold)
        {
            problems.push(format!(
                    "scoring.reject_threshold: {r} must be a number not below scoring.spam_threshold ({})",
                    s.spam_threshold
                ));
        }
        if self.server.hostname.is_empty() {
            problems.push("server.hostname: must not be empty".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                file: self
                    .source
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("<built-in>")),
                problems,
            })
        }
    }

    /// The plugin directory.
    pub fn plugin_dir(&self) -> PathBuf {
        self.plugins
            .dir
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("plugins"))
    }

    /// The compile cache directory.
    pub fn cache_dir(&self) -> PathBuf {
        self.plugins
            .cache_dir
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("cache"))
    }

    /// Settings of plugin `name` (empty settings when the file has none).
    pub fn plugin_settings(&self, name: &str) -> PluginSettings {
        self.plugin.get(name).cloned().unwrap_or_default()
    }
}

fn check_limits(key: &str, l: &PluginLimits, max_mem: u64, problems: &mut Vec<String>) {
    if !(1..=60_000).contains(&l.timeout_ms) {
        problems.push(format!(
            "{key}.timeout_ms: {} is out of range (1 to 60000)",
            l.timeout_ms
        ));
    }
    if l.memory_mb == 0 || l.memory_mb > max_mem {
        problems.push(format!(
            "{key}.memory_mb: {} is out of range (1 to plugins.max_memory_mb = {max_mem})",
            l.memory_mb
        ));
    }
}

/// True for names made of ASCII letters, digits, `-` and `_`.
pub fn valid_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        Config::default()
            .validate()
            .expect("built-in default must validate");
    }

    #[test]
    fn unknown_key_is_refused_with_its_name() {
        let e = Config::parse("[plugins]\nbogus = 1\n").unwrap_err();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let c = Config::parse(
            r#"
            [plugins.defaults]
            timeout_ms = 0
            [plugin.spam]
            memory_mb = 100000
            sha256 = "xyz"
            [scoring]
            spam_threshold = 5.0
            reject_threshold = 1.0
            "#,
        )
        .unwrap();
        let msg = c.validate().unwrap_err().to_string();
        for key in [
            "plugins.defaults.timeout_ms",
            "plugin.spam.timeout_ms",
            "plugin.spam.memory_mb",
            "plugin.spam.sha256",
            "scoring.reject_threshold",
        ] {
            assert!(msg.contains(key), "missing {key} in:\n{msg}");
        }
        assert!(msg.starts_with("<built-in>: "), "{msg}");
    }

    #[test]
    fn plugin_limits_fall_back_field_by_field() {
        let c = Config::parse("[plugin.a]\ntimeout_ms = 50\non_failure = \"continue\"\n").unwrap();
        let l = c.plugin_settings("a").limits(&c.plugins.defaults);
        assert_eq!(l.timeout_ms, 50);
        assert_eq!(l.memory_mb, 64);
        assert_eq!(l.on_failure, FailurePolicy::Continue);
    }
}
