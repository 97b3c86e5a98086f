//! The record of each plugin call ([`CallRecord`]), and what a call leaves behind besides: the
//! plugin's log lines in the server's log, its health (failures, cool-downs), its cost and the
//! call metrics.

use std::time::Instant;

use crate::envelope::Decision;
use crate::plugin::health::{Scope, Transition};
use crate::plugin::{CallFailure, Hook, LoadedPlugin, LogLine, PluginInstance};

/// One plugin call, as reported by `sluice plugin check` and logged by the server.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CallRecord {
    /// The hook.
    pub hook: Hook,
    /// The plugin's name.
    pub plugin: String,
    /// What the plugin answered, as a decision (after its failure policy, if it failed).
    pub decision: Decision,
    /// How the plugin failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<CallFailure>,
    /// Wall-clock time of the call (instantiation included for the first call), microseconds.
    pub micros: u64,
    /// What the plugin logged during the call.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogLine>,
    /// Log lines dropped over the plugin's quota.
    #[serde(skip_serializing_if = "is_zero")]
    pub logs_dropped: u32,
    /// The later plugins of this stage that were not called because this decision ended it
    /// (any verdict but `continue` does): what makes an ordering mistake visible.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Builds the record of one call and logs what the plugin logged and how it failed.
pub(super) fn record(
    hook: Hook,
    plugin: &LoadedPlugin,
    slot: &mut Option<PluginInstance>,
    decision: Decision,
    failure: Option<CallFailure>,
    started: Instant,
    (txn, client): (&str, Option<std::net::IpAddr>),
) -> CallRecord {
    let (logs, logs_dropped) = slot.as_mut().map(|i| i.take_logs()).unwrap_or_default();
    for line in &logs {
        match line.level {
            "error" => tracing::error!(id = txn, plugin = %plugin.name, "{}", line.message),
            "warn" => tracing::warn!(id = txn, plugin = %plugin.name, "{}", line.message),
            "info" => tracing::info!(id = txn, plugin = %plugin.name, "{}", line.message),
            _ => tracing::debug!(id = txn, plugin = %plugin.name, "{}", line.message),
        }
    }
    if logs_dropped > 0 {
        tracing::warn!(id = txn, plugin = %plugin.name, dropped = logs_dropped, "plugin log lines over quota dropped");
    }
    let elapsed = started.elapsed();
    // What the call cost, when the plugin was called (not when it was skipped).
    if let Some(inst) = slot.as_ref()
        && failure.as_ref().is_none_or(CallFailure::is_fault)
    {
        let cost = inst.last_cost();
        plugin.cost.add(hook.as_str(), cost);
        crate::admin::metrics::get().plugin_cost(&plugin.name, hook.as_str(), &cost);
    }
    match &failure {
        None => plugin.health.succeeded(hook, client),
        Some(f) if f.is_fault() => {
            tracing::warn!(id = txn, plugin = %plugin.name, %hook, policy = %plugin.limits.on_failure, "plugin failed: {f}");
            if let Transition::CooledDown(d, scope) =
                plugin.health.failed(hook, client, Instant::now())
            {
                let whom = match scope {
                    Scope::All => "every client".to_string(),
                    Scope::Client(c) => format!("client {c}"),
                };
                tracing::warn!(plugin = %plugin.name, file = %plugin.file.display(), secs = d.as_secs(), policy = %plugin.limits.on_failure, "plugin failed repeatedly: in cool-down for {whom}, its failure policy applies without calling it");
                crate::admin::metrics::get().plugin_cooldown(&plugin.name);
            }
        }
        Some(f @ CallFailure::StoreUnavailable { .. }) => {
            tracing::warn!(id = txn, plugin = %plugin.name, %hook, policy = %plugin.limits.on_failure, "plugin's call to the key-value store failed: {f}");
        }
        Some(_) => {}
    }
    crate::admin::metrics::get().plugin_call(
        &plugin.name,
        hook,
        decision.name(),
        failure.as_ref().map(CallFailure::kind),
        elapsed,
    );
    CallRecord {
        hook,
        plugin: plugin.name.clone(),
        decision,
        failure,
        micros: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        logs,
        logs_dropped,
        skipped: Vec::new(),
    }
}
