//! Changing what runs without a restart: the plugin directory watcher and configuration
//! reload (SIGHUP, `sluice reload`).
//!
//! Both build a new [`Live`] beside the one in force and swap it in only when it is whole;
//! transactions already running keep the plugin set they started with.
//!
//! - **Directory**: file-system events (`notify`, inotify on Linux) trigger a rescan, and a
//!   periodic rescan (`plugins.rescan_secs`) catches what events miss. A `.wasm` file that
//!   is new or changed (length, modification time or inode) is loaded once it has been
//!   still for [`SETTLE`]; a file that fails to load is refused with a log line naming it
//!   and the reason, the version already in service (if any) stays, and the same bytes are
//!   not retried until the file changes. Names starting with `.` are never loaded, so
//!   "write to `.name.wasm.tmp`, then rename" installs atomically. Renaming a plugin in
//!   service is one change: the file under its new name replaces the old one in one swap.
//! - **Configuration**: the file is read and validated, the certificate loaded and every
//!   plugin loaded under the new settings; only when all of that succeeded is it applied.
//!   Otherwise the old configuration stays and the error is logged. Listener addresses,
//!   the data directory and the instance pool are fixed at start: changes to them are
//!   reported as needing a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::pipeline::{LoadError, Pipeline};
use crate::plugin::directory::fingerprint;
use crate::plugin::{LoadedPlugin, directory};
use crate::server::context::{Live, ServerContext};

/// How long a new or changed plugin file must stay unchanged before it is loaded.
pub const SETTLE: Duration = Duration::from_millis(500);

/// What a rescan did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rescan {
    /// Plugins loaded (new or replaced).
    pub loaded: Vec<String>,
    /// Files refused.
    pub refused: Vec<PathBuf>,
    /// Plugins taken out of service (file removed or disabled).
    pub removed: Vec<String>,
    /// Files seen changing, to be looked at again shortly.
    pub unsettled: Vec<PathBuf>,
}

/// Rescans the plugin directory and applies what changed.
pub async fn rescan(ctx: &ServerContext) -> Rescan {
    let mut state = ctx.reload_lock.lock().await;
    if state.loaded.is_empty() && state.refused.is_empty() {
        *state = ctx.live().pipeline.dir_state();
    }
    let live = ctx.live();
    let config = &live.config;
    let dir = config.paths().plugin_dir;
    let mut report = Rescan::default();
    let files = match directory::scan(&dir, &config.plugins.order) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot rescan the plugin directory; the plugins in service stay");
            return report;
        }
    };
    let current = |name: &str| -> Option<Arc<LoadedPlugin>> {
        live.pipeline
            .plugins()
            .iter()
            .find(|p| p.name == name)
            .cloned()
    };
    let mut next: Vec<Arc<LoadedPlugin>> = Vec::new();
    let mut changed = false;
    for f in files {
        if config.plugin_settings(&f.name).enabled == Some(false) {
            continue;
        }
        let Some(fp) = fingerprint(&f.path) else {
            continue;
        };
        let cur = current(&f.name);
        if cur.is_some() && state.loaded.get(&f.name) == Some(&(f.path.clone(), fp)) {
            next.extend(cur);
            continue;
        }
        if state.refused.get(&f.path) == Some(&fp) {
            next.extend(cur);
            continue;
        }
        let still_for = fp
            .file
            .modified
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or(SETTLE);
        // A plugin in service renamed (same inode, length and time, its old name gone) is
        // one change: it is loaded under its new name now, in the same swap that takes the
        // old name out, so that mail never meets neither or both.
        let renamed = state
            .loaded
            .values()
            .any(|(path, loaded)| *loaded == fp && *path != f.path && !path.exists());
        if still_for < SETTLE && !renamed {
            report.unsettled.push(f.path.clone());
            next.extend(cur);
            continue;
        }
        let settings = config.plugin_settings(&f.name);
        let loaded = crate::plugin::loader::load(
            &ctx.runtime,
            &f.path,
            &f.name,
            &settings,
            &config.plugins.defaults,
        )
        .await
        .and_then(|p| match crate::pipeline::name_refusal(config, &p) {
            Some(refused) => Err(refused),
            None => Ok(p),
        });
        match loaded {
            Ok(p) => {
                p.health.configure(
                    config.plugins.cooldown_after_failures,
                    config.plugins.cooldown_secs,
                );
                tracing::info!(
                    plugin = %p.name,
                    file = %f.path.display(),
                    version = %p.info.version,
                    sha256 = %p.sha256,
                    "{}",
                    if cur.is_some() { "plugin replaced" } else { "plugin added" }
                );
                for w in crate::pipeline::name_warnings(config, std::slice::from_ref(&p), None) {
                    tracing::warn!("{w}");
                }
                state.loaded.insert(f.name.clone(), (f.path.clone(), fp));
                state.refused.remove(&f.path);
                problems(ctx).remove(&f.path);
                report.loaded.push(f.name.clone());
                next.push(p);
                changed = true;
            }
            Err(e) if e.not_a_plugin() => {
                // Skipped, as at start and on a reload (crate::pipeline::stray_warning).
                let warning = crate::pipeline::stray_warning(&e.file, &e.kind.to_string());
                tracing::warn!("{warning}");
                problems(ctx).insert(f.path.clone(), warning);
                state.refused.insert(f.path.clone(), fp);
                report.refused.push(f.path.clone());
                next.extend(cur);
            }
            Err(e) => {
                problems(ctx).insert(f.path.clone(), e.to_string());
                match &cur {
                    Some(old) => tracing::warn!(
                        plugin = %f.name,
                        "{e}; refused, version {} from {} stays in service",
                        old.info.version,
                        old.file.display()
                    ),
                    None => tracing::warn!(plugin = %f.name, "{e}; refused"),
                }
                crate::admin::metrics::get().reload("plugin", false);
                state.refused.insert(f.path.clone(), fp);
                report.refused.push(f.path.clone());
                next.extend(cur);
            }
        }
    }
    // A problem file that is gone is no problem any more.
    problems(ctx).retain(|path, _| path.exists());
    for p in live.pipeline.plugins() {
        if !next.iter().any(|n| n.name == p.name) {
            tracing::info!(plugin = %p.name, file = %p.file.display(), "plugin removed from service");
            state.loaded.remove(&p.name);
            report.removed.push(p.name.clone());
            changed = true;
        }
    }
    let order_changed = next.iter().map(|p| p.name.as_str()).ne(live
        .pipeline
        .plugins()
        .iter()
        .map(|p| p.name.as_str()));
    if changed || order_changed {
        let names: Vec<&str> = next.iter().map(|p| p.name.as_str()).collect();
        tracing::info!(plugins = %names.join(","), "plugin set in service");
        crate::admin::metrics::get().plugins_loaded(next.len());
        crate::admin::metrics::get().reload("plugin", true);
        ctx.live.store(Arc::new(Live {
            config: live.config.clone(),
            pipeline: Pipeline::new(next, live.config.scoring.clone())
                .with_required(&live.config)
                .with_capture(live.pipeline.capture()),
            tls: live.tls.clone(),
            certificates: live.certificates.clone(),
            verifier: live.verifier.clone(),
        }));
    }
    report
}

/// The load problems the console shows (file → why).
fn problems(
    ctx: &ServerContext,
) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<PathBuf, String>> {
    ctx.load_problems.lock().unwrap_or_else(|p| p.into_inner())
}

/// Watches the plugin directory until the task is dropped.
pub async fn watch(ctx: Arc<ServerContext>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let dir = ctx.live().config.paths().plugin_dir;
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = tx.send(());
        }
    })
    .and_then(|mut w| {
        use notify::Watcher as _;
        w.watch(&dir, notify::RecursiveMode::NonRecursive)?;
        Ok(w)
    });
    let _watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the plugin directory; relying on periodic rescans");
            None
        }
    };
    let mut soon = false;
    loop {
        let every = Duration::from_secs(ctx.live().config.plugins.rescan_secs.max(1));
        let wait = if soon { SETTLE } else { every };
        tokio::select! {
            got = rx.recv() => {
                if got.is_none() {
                    tokio::time::sleep(wait).await;
                }
                // Let a burst of events (a copy in progress) settle into one rescan.
                tokio::time::sleep(Duration::from_millis(100)).await;
                while rx.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(wait) => {}
        }
        let r = rescan(&ctx).await;
        soon = !r.unsettled.is_empty();
    }
}

/// Re-reads the configuration (from `path`, or the built-in one) and applies it when the
/// file, the certificate and every plugin load under it; otherwise nothing changes.
/// Applies the configuration at `path` (the built-in one when `None`) if it is valid and its
/// plugins load. On success, a summary of what is in service (and any naming warnings); on
/// failure, why — the old configuration then stays.
pub async fn reload_config(ctx: &ServerContext, path: Option<&Path>) -> Result<String, String> {
    let mut state = ctx.reload_lock.lock().await;
    let result = async {
        let config = match path {
            Some(p) => Config::load(p).map_err(|e| e.to_string())?,
            None => Config::builtin(),
        };
        let old = ctx.live();
        let mut restart_needed = Vec::new();
        for (what, same) in [
            (
                "listeners",
                format!("{:?}", old.config.effective_listeners())
                    == format!("{:?}", config.effective_listeners()),
            ),
            (
                "server.data_dir",
                old.config.server.data_dir == config.server.data_dir,
            ),
            (
                "metrics.address",
                old.config.metrics.address == config.metrics.address,
            ),
            (
                "plugins.max_memory_mb/max_instances/threads",
                old.config.plugins.max_memory_mb == config.plugins.max_memory_mb
                    && old.config.plugins.max_instances == config.plugins.max_instances
                    && old.config.plugins.threads == config.plugins.threads,
            ),
        ] {
            if !same {
                tracing::warn!(
                    key = what,
                    "changed in the configuration; takes effect after a restart"
                );
                restart_needed.push(what);
            }
        }
        let (tls, certificates) = crate::tls::server_config(&config).map_err(|e| e.to_string())?;
        let pipeline = Pipeline::load(&ctx.runtime, &config)
            .await
            .map_err(|errors| {
                errors
                    .iter()
                    .map(LoadError::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            })?;
        for w in pipeline.warnings() {
            tracing::warn!("{w}");
        }
        let mut summary = format!(
            "configuration reloaded; plugins in service: {}",
            if pipeline.plugins().is_empty() {
                "none".to_string()
            } else {
                pipeline
                    .plugins()
                    .iter()
                    .map(|p| format!("{} {}", p.name, p.info.version))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        for w in pipeline.warnings() {
            summary.push_str(&format!("\nwarning: {w}"));
        }
        for r in restart_needed {
            summary.push_str(&format!(
                "\nwarning: {r} changed; takes effect after a restart"
            ));
        }
        *state = pipeline.dir_state();
        *problems(ctx) = pipeline
            .skipped()
            .iter()
            .map(|(file, why)| (file.clone(), crate::pipeline::stray_warning(file, why)))
            .collect();
        crate::admin::metrics::get().plugins_loaded(pipeline.plugins().len());
        let auth = crate::sender_auth::Authenticator::new(&config)
            .map_err(|e| e.to_string())?
            .with_reports(ctx.dmarc_reports.clone());
        ctx.capture.configure(&config);
        let pipeline = pipeline.with_capture(Some(ctx.capture.clone()));
        ctx.live.store(Arc::new(Live {
            config,
            pipeline,
            tls: Some(tokio_rustls::TlsAcceptor::from(tls)),
            certificates: Some(certificates),
            verifier: Arc::new(auth),
        }));
        // The ACME names or settings may have changed: the ACME task looks again.
        ctx.acme.reconsider.notify_one();
        Ok::<String, String>(summary)
    }
    .await;
    crate::admin::metrics::get().reload("config", result.is_ok());
    match &result {
        Ok(_) => tracing::info!("configuration reloaded"),
        Err(e) => tracing::error!("configuration reload refused, the old configuration stays: {e}"),
    }
    result
}

/// Where `sluice serve` records the outcome of the last SIGHUP reload for `sluice reload`.
pub fn status_file(config: &crate::config::Config) -> std::path::PathBuf {
    config.server.data_dir.join("reload.status")
}

/// The outcome of one reload, as recorded in [`status_file`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReloadStatus {
    /// Increases with every reload of this server process (the first is 1).
    pub generation: u64,
    /// The server process.
    pub pid: u32,
    /// Whether the configuration was applied.
    pub applied: bool,
    /// What is in service (and warnings), or why it was refused.
    pub message: String,
}

/// Reads the certificates in service again when their files change, every
/// `[tls] reload_check_secs` (as configured now), until the task is dropped; logs and counts
/// each certificate reloaded or refused.
pub async fn certificates(ctx: Arc<ServerContext>) {
    loop {
        let every = ctx.live().config.tls.reload_check_secs;
        tokio::time::sleep(std::time::Duration::from_secs(if every == 0 {
            60
        } else {
            every
        }))
        .await;
        if every > 0 {
            refresh_certificates(&ctx).await;
        }
    }
}

/// Reads the certificate files in service again (those that changed); logs and counts each
/// certificate reloaded or refused. The watcher calls it, and the ACME task once it has put
/// a new certificate on disk.
pub async fn refresh_certificates(ctx: &ServerContext) {
    let Some(certs) = ctx.live().certificates.clone() else {
        return;
    };
    let Ok(outcomes) = tokio::task::spawn_blocking(move || certs.refresh()).await else {
        return;
    };
    for (file, outcome) in outcomes {
        crate::admin::metrics::get().reload("certificate", outcome.is_ok());
        match outcome {
            Ok(()) => {
                tracing::info!(file = %file.display(), "TLS certificate reloaded: new connections get it");
            }
            Err(why) => {
                tracing::warn!(file = %file.display(), "TLS certificate changed on disk but refused; the one in service stays: {why}");
            }
        }
    }
}
