//! The plugin set: the plugins of the directory, loaded in order, with what their loading
//! found (stray files, naming problems, required plugins missing), and the row each plugin
//! shows in `sluice plugin list`, `/plugins` and the console.

use std::sync::Arc;
use std::time::Instant;

use crate::config::{Capability, Config, PluginLimits, ScoringConfig};
use crate::envelope::Client;
use crate::plugin::cache::CacheOutcome;
use crate::plugin::{self, LoadedPlugin, Runtime, Scope, directory};

use super::run::{PluginRun, Tapping};

/// One plugin of the set as the operator sees it (the JSON of `/plugins` and
/// `sluice plugin list --json`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PluginRow {
    /// Position in run order, from 1.
    pub order: usize,
    /// The plugin's name: its file's, without `NN-` and `.wasm`.
    pub name: String,
    /// The name the plugin gives itself in `describe`.
    pub plugin_name: String,
    /// The version it declares.
    pub version: String,
    /// The hooks it implements.
    pub hooks: Vec<String>,
    /// Its file.
    pub file: String,
    /// SHA-256 of its file.
    pub sha256: String,
    /// Who signed its file (a key of `[plugins] trusted_keys`), if signed.
    #[serde(default)]
    pub signed_by: Option<crate::plugin::signature::Signer>,
    /// What its instances and hook calls have cost since it was loaded.
    #[serde(default)]
    pub cost: crate::plugin::cost::CostRow,
    /// Its shadow version and how it compares, if it has one.
    #[serde(default)]
    pub shadow: Option<crate::plugin::shadow::ShadowRow>,
    /// Its limits and failure policy.
    #[serde(flatten)]
    pub limits: PluginLimits,
    /// The capabilities granted.
    pub capabilities: Vec<Capability>,
    /// The listeners and recipient domains it runs for (empty: all).
    #[serde(flatten)]
    pub scope: Scope,
    /// Its cool-downs.
    #[serde(flatten)]
    pub health: RowHealth,
    /// Whether its compiled code came from the cache.
    pub cache: CacheOutcome,
    /// Stages its final verdict ended before later plugins were called.
    pub stages_ended: u64,
}

/// A plugin's cool-downs, as [`PluginRow`] shows them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RowHealth {
    /// Seconds left of a cool-down for every client, if in one.
    pub cooldown_secs_left: Option<u64>,
    /// Clients for whom it is cooling down.
    pub clients_in_cooldown: usize,
    /// Cool-downs since it was loaded.
    pub cooldowns: u64,
}

/// The loaded plugins, in order, and the settings that shape how their verdicts combine.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub(super) plugins: Arc<[Arc<LoadedPlugin>]>,
    scoring: ScoringConfig,
    /// Plugins the configuration marks `required` that are not in service: transactions
    /// fail closed while any is missing.
    missing_required: Arc<[String]>,
    /// Naming problems found at load ([`name_warnings`]), for the commands to show.
    warnings: Arc<[String]>,
    /// Files of the plugin directory skipped because they are not Sluice plugins, with why.
    skipped: Arc<[(std::path::PathBuf, String)]>,
    /// Where transactions' records go when capture is on.
    capture: Option<Arc<dyn super::recording::RecordSink>>,
}

/// Refuses `plugin` when it calls itself by another name than its file's and the
/// configuration has settings under that other name and none under its file's: it would run
/// without the settings the operator wrote for it.
pub fn name_refusal(config: &Config, plugin: &LoadedPlugin) -> Option<plugin::Error> {
    let own = plugin.info.name.trim();
    (own != plugin.name
        && config.plugin.contains_key(own)
        && !config.plugin.contains_key(&plugin.name))
    .then(|| plugin::Error {
        file: plugin.file.clone(),
        kind: plugin::ErrorKind::NameMismatch {
            file_name: plugin.name.clone(),
            own: own.to_string(),
        },
    })
}

/// The warning for a file of the plugin directory that is not a Sluice plugin.
pub fn stray_warning(file: &std::path::Path, why: &str) -> String {
    format!(
        "{} is not a Sluice plugin ({why}); skipped: remove it from the plugin directory (list the filters you cannot do without in [plugin.NAME] required = true, so that mail waits while one is missing)",
        file.display()
    )
}

/// Warnings about plugin names, the one trap of the naming rule ("a plugin is named after its
/// file: `NN-NAME.wasm` is `NAME`, and its settings are `[plugin.NAME]`"):
/// - a loaded plugin whose file name disagrees with the name it gives itself in `describe`
///   (its settings are read under the file's name, which its author may not expect);
/// - with `present` (every plugin name of the directory, disabled ones too), a `[plugin.X]`
///   section of an operator's file that matches none of them. The built-in configuration is
///   exempt: it configures the opt-in plugins in advance.
pub fn name_warnings(
    config: &Config,
    plugins: &[Arc<LoadedPlugin>],
    present: Option<&[String]>,
) -> Vec<String> {
    let mut out = Vec::new();
    for p in plugins {
        let own = p.info.name.trim();
        if own != p.name && crate::config::valid_plugin_name(own) {
            let section = if config.plugin.contains_key(own) {
                format!(" (so [plugin.{own}] does not apply to it)")
            } else {
                String::new()
            };
            out.push(format!(
                "plugin file {} runs as {:?}, its file name, but calls itself {own:?}: its settings are read from [plugin.{}]{section}; rename the file to {own}.wasm (or NN-{own}.wasm) to match",
                p.file.display(),
                p.name,
                p.name
            ));
        }
    }
    if let (Some(present), Some(source)) = (present, &config.source) {
        for name in config.plugin.keys() {
            if !present.iter().any(|n| n == name) {
                out.push(format!(
                    "[plugin.{name}] in {} matches no plugin in {} (a plugin is named after its file: NN-NAME.wasm is NAME; there: {})",
                    source.display(),
                    config.paths().plugin_dir.display(),
                    if present.is_empty() { "none".to_string() } else { present.join(", ") }
                ));
            }
        }
    }
    out
}

impl Pipeline {
    /// A pipeline over already loaded plugins.
    pub fn new(plugins: Vec<Arc<LoadedPlugin>>, scoring: ScoringConfig) -> Pipeline {
        Pipeline {
            plugins: plugins.into(),
            scoring,
            missing_required: Arc::new([]),
            warnings: Arc::new([]),
            skipped: Arc::new([]),
            capture: None,
        }
    }

    /// The files of the plugin directory skipped because they are not Sluice plugins (file,
    /// why). Their warnings are among [`Pipeline::warnings`].
    pub fn skipped(&self) -> &[(std::path::PathBuf, String)] {
        &self.skipped
    }

    /// Naming problems found when it was loaded (see [`name_warnings`]).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// This pipeline with `warnings` (shown by the command that loaded it).
    fn with_warnings(mut self, warnings: Vec<String>) -> Pipeline {
        self.warnings = warnings.into();
        self
    }

    /// Notes the plugins `config` marks `required` that are not in this pipeline; while any
    /// is missing, every transaction is refused with 451 at MAIL FROM.
    pub fn with_required(mut self, config: &Config) -> Pipeline {
        let missing: Vec<String> = config
            .plugin
            .iter()
            .filter(|(name, s)| s.required && !self.plugins.iter().any(|p| &p.name == *name))
            .map(|(name, _)| name.clone())
            .collect();
        if !missing.is_empty() {
            tracing::error!(plugins = %missing.join(","), "required plugin(s) not in service: every transaction is refused with 451 until they are");
        }
        self.missing_required = missing.into();
        self
    }

    /// The required plugins that are not in service.
    pub fn missing_required(&self) -> &[String] {
        &self.missing_required
    }

    /// Loads every enabled plugin of the configured plugin directory, in order. Every plugin
    /// that fails to load is reported; the pipeline is built only if none did.
    pub async fn load(runtime: &Runtime, config: &Config) -> Result<Pipeline, Vec<LoadError>> {
        let dir = config.paths().plugin_dir;
        let files = directory::scan(&dir, &config.plugins.order).map_err(|e| {
            let setting = match (&config.plugins.dir, &config.source) {
                (Some(_), Some(f)) => format!("[plugins] dir in {}", f.display()),
                (None, Some(f)) => format!(
                    "[plugins] dir is not set in {}: <server.data_dir>/plugins",
                    f.display()
                ),
                (_, None) => "the built-in configuration's [plugins] dir".to_string(),
            };
            vec![LoadError::Directory(format!(
                "plugin directory {} ({setting}): {e}",
                dir.display()
            ))]
        })?;
        let present: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
        let files: Vec<(String, std::path::PathBuf)> = files
            .into_iter()
            .filter(|f| {
                let enabled = config.plugin_settings(&f.name).enabled != Some(false);
                if !enabled {
                    tracing::info!(plugin = %f.name, "plugin disabled in configuration");
                }
                enabled
            })
            .map(|f| (f.name, f.path))
            .collect();
        let (pipeline, skipped) = Self::load_files_quietly(runtime, config, &files, true).await?;
        let mut warnings: Vec<String> = skipped
            .iter()
            .map(|(file, why)| stray_warning(file, why))
            .collect();
        warnings.extend(name_warnings(config, pipeline.plugins(), Some(&present)));
        let mut pipeline = pipeline.with_warnings(warnings).with_required(config);
        pipeline.skipped = skipped.into();
        Ok(pipeline)
    }

    /// Loads exactly the given plugin files (name, path), in the order given, even those the
    /// configuration disables: naming a plugin is asking for it.
    pub async fn load_files(
        runtime: &Runtime,
        config: &Config,
        files: &[(String, std::path::PathBuf)],
    ) -> Result<Pipeline, Vec<LoadError>> {
        let (pipeline, _) = Self::load_files_quietly(runtime, config, files, false).await?;
        let warnings = name_warnings(config, pipeline.plugins(), None);
        Ok(pipeline.with_warnings(warnings))
    }

    /// Loads `files`; with `skip_stray`, a file that is not a Sluice plugin is skipped (and
    /// returned with why) instead of being an error.
    async fn load_files_quietly(
        runtime: &Runtime,
        config: &Config,
        files: &[(String, std::path::PathBuf)],
        skip_stray: bool,
    ) -> Result<(Pipeline, Vec<(std::path::PathBuf, String)>), Vec<LoadError>> {
        let mut plugins = Vec::new();
        let mut errors = Vec::new();
        let mut skipped = Vec::new();
        // Compiling takes seconds per plugin (tens for a Python one): say so before the wait,
        // and how far it has got, rather than starting silently.
        let to_compile: Vec<bool> = files
            .iter()
            .map(|(_, path)| plugin::loader::needs_compile(runtime, path))
            .collect();
        let total = to_compile.iter().filter(|c| **c).count();
        if total > 0 {
            tracing::info!(
                cache = %runtime.cache.dir().display(),
                "compiling {total} of {} plugins for this machine (once: later starts load them from the cache)",
                files.len()
            );
        }
        let mut compiled = 0;
        for ((name, path), compile) in files.iter().zip(to_compile) {
            let settings = config.plugin_settings(name);
            if compile {
                compiled += 1;
                tracing::info!(plugin = %name, "compiling plugin {compiled}/{total}");
            }
            match plugin::loader::load(runtime, path, name, &settings, &config.plugins.defaults)
                .await
            {
                Ok(p) => match name_refusal(config, &p) {
                    Some(refused) => errors.push(LoadError::Plugin(refused)),
                    None => {
                        tracing::debug!(plugin = %name, version = %p.info.version, cache = ?p.cache, ms = p.compile_ms, "plugin loaded");
                        plugins.push(p)
                    }
                },
                Err(e) if skip_stray && e.not_a_plugin() => {
                    skipped.push((e.file.clone(), e.kind.to_string()));
                }
                Err(e) => errors.push(LoadError::Plugin(e)),
            }
        }
        for p in &plugins {
            p.health.configure(
                config.plugins.cooldown_after_failures,
                config.plugins.cooldown_secs,
            );
        }
        if errors.is_empty() {
            Ok((Pipeline::new(plugins, config.scoring.clone()), skipped))
        } else {
            Err(errors)
        }
    }

    /// The plugins, in run order.
    pub fn plugins(&self) -> &[Arc<LoadedPlugin>] {
        &self.plugins
    }

    /// What `sluice plugin list`, `/plugins` and the console show: one row per plugin, in
    /// run order.
    pub fn describe(&self) -> Vec<PluginRow> {
        let now = Instant::now();
        self.plugins
            .iter()
            .enumerate()
            .map(|(i, p)| PluginRow {
                order: i + 1,
                name: p.name.clone(),
                plugin_name: p.info.name.clone(),
                version: p.info.version.clone(),
                hooks: p.hook_names().iter().map(|h| h.to_string()).collect(),
                file: p.file.display().to_string(),
                sha256: p.sha256.clone(),
                signed_by: p.signer.clone(),
                cost: p.cost.row(),
                shadow: p.shadow.as_ref().map(|s| {
                    p.shadow_stats
                        .row(&s.file, &s.info.version, p.shadow_sample)
                }),
                limits: p.limits,
                capabilities: p.capabilities.clone(),
                scope: p.scope.clone(),
                health: RowHealth {
                    cooldown_secs_left: p.health.cooling_down(now, None).map(|d| d.as_secs() + 1),
                    clients_in_cooldown: p.health.clients_cooling_down(now),
                    cooldowns: p.health.cooldowns(),
                },
                cache: p.cache,
                stages_ended: p.stages_ended.load(std::sync::atomic::Ordering::Relaxed),
            })
            .collect()
    }

    /// Starts the plugins' run through one transaction, for `client`, named
    /// `transaction_id`. It keeps the plugin set it started with.
    pub fn start(&self, client: &Client, transaction_id: &str) -> PluginRun {
        let tapping = match &self.capture {
            Some(sink) if sink.recording() => Tapping::Record(sink.clone()),
            _ => Tapping::Off,
        };
        self.start_tapped(client, transaction_id, tapping)
    }

    /// [`start`](Self::start), with the plugins' answers from the host recorded or played
    /// back as `tapping` says.
    pub fn start_tapped(
        &self,
        client: &Client,
        transaction_id: &str,
        tapping: Tapping,
    ) -> PluginRun {
        PluginRun::start(
            self.plugins.clone(),
            self.scoring.clone(),
            self.missing_required.clone(),
            client,
            transaction_id,
            tapping,
        )
    }

    /// What the plugin directory's watcher knows of this set: its plugins loaded, the files
    /// it skipped (not Sluice plugins) refused until they change.
    pub fn dir_state(&self) -> plugin::directory::DirState {
        let mut state = plugin::directory::DirState::from_plugins(&self.plugins);
        for (file, _) in self.skipped.iter() {
            if let Some(fp) = plugin::directory::fingerprint(file) {
                state.refused.insert(file.clone(), fp);
            }
        }
        state
    }

    /// This set, offering its transactions' records to `sink` (capture).
    pub fn with_capture(mut self, sink: Option<Arc<dyn super::recording::RecordSink>>) -> Pipeline {
        self.capture = sink;
        self
    }

    /// Where this set's records go.
    pub fn capture(&self) -> Option<Arc<dyn super::recording::RecordSink>> {
        self.capture.clone()
    }
}

/// Why the plugin set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The plugin directory could not be read.
    #[error("{0}")]
    Directory(String),
    /// A plugin was refused.
    #[error(transparent)]
    Plugin(#[from] plugin::Error),
}
