//! Prometheus metrics. One process-wide registry (metrics describe the process), filled by
//! the connection, pipeline and delivery code through [`get`], and encoded in the text
//! format by [`encode`] for the `/metrics` endpoint ([`crate::admin::http`]).

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::plugin::Hook;

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn memory_histogram() -> Histogram {
    // 64 KiB to 4 GiB.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        65536.0, 2.0, 17,
    ))
}

fn latency_histogram() -> Histogram {
    // 50 µs to ~1.6 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.00005, 2.0, 16,
    ))
}

/// Every metric Sluice exports.
pub struct Metrics {
    registry: Registry,
    // The SMTP side.
    connections: Family<Labels, Counter>,
    tls_failures: Family<Labels, Counter>,
    messages: Family<Labels, Counter>,
    refusals: Family<Labels, Counter>,
    authentication: Family<Labels, Counter>,
    bounces: Counter,
    // Plugins.
    plugin_calls: Family<Labels, Counter>,
    plugin_failures: Family<Labels, Counter>,
    plugin_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    plugin_cooldowns: Family<Labels, Counter>,
    capture_records: Family<Labels, Counter>,
    shadow_calls: Family<Labels, Counter>,
    plugin_cpu: Family<Labels, Histogram, fn() -> Histogram>,
    plugin_memory: Family<Labels, Histogram, fn() -> Histogram>,
    plugin_host_calls: Family<Labels, Counter>,
    reloads: Family<Labels, Counter>,
    acme_orders: Family<Labels, Counter>,
    acme_not_after: Gauge,
    plugins_loaded: Gauge,
    // The spool and delivery.
    spool: Family<Labels, Gauge>,
    deliveries: Family<Labels, Counter>,
    webhook: Family<Labels, Counter>,
    delay_warnings: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("sluice"),
            connections: Family::default(),
            tls_failures: Family::default(),
            messages: Family::default(),
            refusals: Family::default(),
            plugin_calls: Family::default(),
            shadow_calls: Family::default(),
            plugin_failures: Family::default(),
            plugin_seconds: Family::new_with_constructor(latency_histogram),
            plugin_cpu: Family::new_with_constructor(latency_histogram),
            plugin_memory: Family::new_with_constructor(memory_histogram),
            plugin_host_calls: Family::default(),
            plugin_cooldowns: Family::default(),
            capture_records: Family::default(),
            plugins_loaded: Gauge::default(),
            reloads: Family::default(),
            acme_orders: Family::default(),
            acme_not_after: Gauge::default(),
            spool: Family::default(),
            deliveries: Family::default(),
            webhook: Family::default(),
            authentication: Family::default(),
            bounces: Counter::default(),
            delay_warnings: Counter::default(),
        };
        let r = &mut m.registry;
        r.register(
            "connections",
            "SMTP connections accepted, by listener and TLS (implicit or none at connect)",
            m.connections.clone(),
        );
        r.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out, by listener",
            m.tls_failures.clone(),
        );
        r.register(
            "messages",
            "Messages at the end of DATA, by disposition (queued, quarantined, discarded, rejected, tempfailed, spool-failed)",
            m.messages.clone(),
        );
        r.register(
            "refusals",
            "Refusals at any stage (connection, HELO, AUTH, STARTTLS, MAIL, RCPT, DATA, commands), by stage, reason and reply class",
            m.refusals.clone(),
        );
        r.register(
            "plugin_calls",
            "Plugin hook calls, by plugin, hook and resulting verdict",
            m.plugin_calls.clone(),
        );
        r.register(
            "plugin_failures",
            "Plugin hook calls that failed, by plugin, hook and kind",
            m.plugin_failures.clone(),
        );
        r.register(
            "plugin_call_seconds",
            "Wall-clock time of plugin hook calls, instantiation included",
            m.plugin_seconds.clone(),
        );
        r.register(
            "plugin_cpu_seconds",
            "CPU time of plugin hook calls and of the creation of plugin instances (hook=\"instantiate\"), on the plugin thread",
            m.plugin_cpu.clone(),
        );
        r.register(
            "plugin_memory_bytes",
            "Linear memory of a plugin instance after each hook call and after its creation",
            m.plugin_memory.clone(),
        );
        r.register(
            "plugin_host_calls",
            "Capability calls (kv, dns) plugins made, by plugin, hook and capability",
            m.plugin_host_calls.clone(),
        );
        r.register(
            "shadow_calls",
            "Calls of a shadow plugin beside its live version, by plugin, hook, the live verdict and the shadow's (equal when they agree)",
            m.shadow_calls.clone(),
        );
        r.register(
            "capture_records",
            "Transactions the capture chose to keep: kept (handed to the writer) or dropped (the writer was behind)",
            m.capture_records.clone(),
        );
        r.register(
            "plugin_cooldowns",
            "Times a plugin was put in cool-down after repeated failures",
            m.plugin_cooldowns.clone(),
        );
        r.register(
            "plugins_loaded",
            "Plugins in service",
            m.plugins_loaded.clone(),
        );
        r.register(
            "reloads",
            "Reloads of the plugin directory, the configuration and changed certificate files, by kind and result",
            m.reloads.clone(),
        );
        r.register(
            "acme_orders",
            "Certificate orders to the ACME CA, by result (issued, failed: the certificate in service stays)",
            m.acme_orders.clone(),
        );
        r.register(
            "acme_certificate_expiry_timestamp_seconds",
            "When the ACME certificate in service expires (Unix time; 0: none from the CA yet)",
            m.acme_not_after.clone(),
        );
        r.register(
            "spool_messages",
            "Messages in the spool, by state (queue, quarantine)",
            m.spool.clone(),
        );
        r.register(
            "webhook_events",
            "Webhook events, by result (sent; dropped: over the backlog's bound; lost: not written to the backlog) and failed batches (failed)",
            m.webhook.clone(),
        );
        r.register(
            "deliveries",
            "Delivery attempts per recipient, by outcome (delivered, deferred, failed)",
            m.deliveries.clone(),
        );
        r.register(
            "authentication_results",
            "Sender-authentication results of inbound mail, by check (spf_helo, spf_mail_from, dkim per signature, dmarc) and verdict",
            m.authentication.clone(),
        );
        r.register(
            "bounces",
            "Bounces (failure DSNs) spooled",
            m.bounces.clone(),
        );
        r.register(
            "delay_warnings",
            "Delay warnings (delayed DSNs) spooled",
            m.delay_warnings.clone(),
        );
        m
    }

    /// A connection was accepted.
    pub fn connection(&self, listener: &str, implicit_tls: bool) {
        let tls = if implicit_tls { "implicit" } else { "none" };
        self.connections
            .get_or_create(&labels(&[("listener", listener), ("tls", tls)]))
            .inc();
    }

    /// A TLS handshake failed.
    pub fn tls_failure(&self, listener: &str) {
        self.tls_failures
            .get_or_create(&labels(&[("listener", listener)]))
            .inc();
    }

    /// One sender-authentication check came out as `verdict`.
    pub fn authentication(&self, check: &str, verdict: &str) {
        self.authentication
            .get_or_create(&labels(&[("check", check), ("verdict", verdict)]))
            .inc();
    }

    /// A message reached its disposition.
    pub fn message(&self, disposition: &str) {
        crate::admin::journal::get().count(&format!("message:{disposition}"));
        self.messages
            .get_or_create(&labels(&[("disposition", disposition)]))
            .inc();
    }

    /// A refusal (see [`crate::admin::decisions`]): by stage, reason and class (`permanent`,
    /// `temporary`).
    pub fn refusal(&self, stage: &str, reason: &str, class: &str) {
        self.refusals
            .get_or_create(&labels(&[
                ("stage", stage),
                ("reason", reason),
                ("class", class),
            ]))
            .inc();
    }

    /// A plugin call ended.
    pub fn plugin_call(
        &self,
        plugin: &str,
        hook: Hook,
        verdict: &str,
        failure: Option<&str>,
        elapsed: Duration,
    ) {
        let hook = hook.as_str();
        self.plugin_calls
            .get_or_create(&labels(&[
                ("plugin", plugin),
                ("hook", hook),
                ("verdict", verdict),
            ]))
            .inc();
        if let Some(kind) = failure {
            self.plugin_failures
                .get_or_create(&labels(&[
                    ("plugin", plugin),
                    ("hook", hook),
                    ("kind", kind),
                ]))
                .inc();
        }
        self.plugin_seconds
            .get_or_create(&labels(&[("plugin", plugin), ("hook", hook)]))
            .observe(elapsed.as_secs_f64());
    }

    /// A shadow answered beside its live version: `live` and `shadow` are the verdicts'
    /// names (`failed` for a failure).
    pub fn shadow_call(&self, plugin: &str, hook: Hook, live: &str, shadow: &str) {
        self.shadow_calls
            .get_or_create(&labels(&[
                ("plugin", plugin),
                ("hook", hook.as_str()),
                ("live", live),
                ("shadow", shadow),
            ]))
            .inc();
    }

    /// What one call of `plugin` (its `hook`, or `instantiate`) cost.
    pub fn plugin_cost(&self, plugin: &str, hook: &str, cost: &crate::plugin::cost::CallCost) {
        let at = labels(&[("plugin", plugin), ("hook", hook)]);
        self.plugin_cpu
            .get_or_create(&at)
            .observe(cost.cpu.as_secs_f64());
        self.plugin_memory
            .get_or_create(&labels(&[("plugin", plugin)]))
            .observe(cost.memory as f64);
        if hook == "instantiate" {
            self.plugin_seconds
                .get_or_create(&at)
                .observe(cost.wall.as_secs_f64());
        }
        for (capability, n) in [("kv", cost.kv), ("dns", cost.dns)] {
            if n > 0 {
                self.plugin_host_calls
                    .get_or_create(&labels(&[
                        ("plugin", plugin),
                        ("hook", hook),
                        ("capability", capability),
                    ]))
                    .inc_by(u64::from(n));
            }
        }
    }

    /// The capture chose a transaction: `kept` or `dropped`.
    pub fn capture(&self, result: &str) {
        self.capture_records
            .get_or_create(&labels(&[("result", result)]))
            .inc();
    }

    /// A plugin went into cool-down.
    pub fn plugin_cooldown(&self, plugin: &str) {
        self.plugin_cooldowns
            .get_or_create(&labels(&[("plugin", plugin)]))
            .inc();
    }

    /// The number of plugins in service.
    pub fn plugins_loaded(&self, n: usize) {
        self.plugins_loaded
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A reload ran.
    pub fn reload(&self, kind: &str, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads
            .get_or_create(&labels(&[("kind", kind), ("result", result)]))
            .inc();
    }

    /// An ACME order ended: issued, or failed.
    pub fn acme_order(&self, issued: bool) {
        let result = if issued { "issued" } else { "failed" };
        self.acme_orders
            .get_or_create(&labels(&[("result", result)]))
            .inc();
    }

    /// The ACME certificate in service expires at `unix` seconds (0: none from the CA yet).
    pub fn acme_expiry(&self, unix: i64) {
        self.acme_not_after.set(unix);
    }

    /// The spool holds `n` messages in `state`.
    pub fn spool(&self, state: &str, n: usize) {
        self.spool
            .get_or_create(&labels(&[("state", state)]))
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A recipient's delivery attempt ended.
    /// A webhook event or batch came to `result` (`failed`, `lost`).
    pub fn webhook(&self, result: &str) {
        self.webhook
            .get_or_create(&labels(&[("result", result)]))
            .inc();
    }

    /// `n` webhook events were taken by the receiver.
    pub fn webhook_sent(&self, n: usize) {
        self.webhook
            .get_or_create(&labels(&[("result", "sent")]))
            .inc_by(n as u64);
    }

    /// `n` webhook events were dropped over the backlog's bound.
    pub fn webhook_dropped(&self, n: u64) {
        self.webhook
            .get_or_create(&labels(&[("result", "dropped")]))
            .inc_by(n);
    }

    /// A delivery attempt came to `outcome`.
    pub fn delivery(&self, outcome: &str) {
        crate::admin::journal::get().count(&format!("delivery:{outcome}"));
        self.deliveries
            .get_or_create(&labels(&[("outcome", outcome)]))
            .inc();
    }

    /// A bounce was spooled.
    pub fn bounce(&self) {
        self.bounces.inc();
    }

    /// A delay warning was spooled.
    pub fn delay_warning(&self) {
        self.delay_warnings.inc();
    }

    /// The registry in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = text::encode(&mut out, &self.registry);
        out
    }
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_appear_in_the_text_format() {
        let m = Metrics::new();
        m.message("queued");
        m.message("queued");
        m.plugin_call(
            "tagger",
            Hook::CheckMessage,
            "continue",
            Some("trap"),
            Duration::from_millis(3),
        );
        let text = m.encode();
        assert!(
            text.contains("sluice_messages_total{disposition=\"queued\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "sluice_plugin_failures_total{plugin=\"tagger\",hook=\"check-message\",kind=\"trap\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "sluice_plugin_call_seconds_count{plugin=\"tagger\",hook=\"check-message\"} 1"
            ),
            "{text}"
        );
    }
}
