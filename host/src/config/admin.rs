//! `[admin]`, `[metrics]` and `[webhook]`: the operator's console, the metrics endpoint, and
//! delivery events POSTed out.

use std::path::PathBuf;

use serde::Deserialize;

use super::{DAY, Problems};

/// `[metrics]`: the HTTP endpoint for `/metrics` (Prometheus text format), `/healthz` and
/// `/plugins` (what is loaded, as JSON). Off unless `address` is set.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct MetricsConfig {
    /// Address to listen on, e.g. `127.0.0.1:9325`.
    pub address: Option<std::net::SocketAddr>,
    /// Serve `/plugins` (what is loaded, for `sluice plugin list --server`): off unless
    /// set, since it tells anyone who can reach the address which filters run.
    pub plugins: bool,
    /// Host names the endpoint answers to besides its own address, `localhost` and
    /// `server.hostname`.
    pub allowed_hosts: Vec<String>,
}

/// `[admin]`: the operator's web console (and `/metrics`, `/healthz`). Off unless `address`
/// is set; every page but `/login`, `/metrics` and `/healthz` needs an administrator's log-in
/// (`sluice admin passwd NAME`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AdminConfig {
    /// Address to listen on, e.g. `127.0.0.1:9326`. Keep it on loopback or a management
    /// network: the console speaks plain HTTP.
    pub address: Option<std::net::SocketAddr>,
    /// Administrators and their Argon2id password hashes; default `<data_dir>/admins`.
    pub users_file: Option<PathBuf>,
    /// A log-in lasts this long without use (minutes).
    pub session_minutes: u64,
    /// Failed log-ins per client address or user name before further tries are refused
    /// for `lockout_minutes`.
    pub max_failed_logins: u32,
    /// See `max_failed_logins`.
    pub lockout_minutes: u64,
    /// A log-in ends this long after it began, however much it is used (minutes).
    pub session_max_minutes: u64,
    /// Host names the console answers to besides its own address, `localhost` and
    /// `server.hostname` (a request naming another host is refused: DNS rebinding).
    pub allowed_hosts: Vec<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            address: None,
            users_file: None,
            session_minutes: 60,
            max_failed_logins: 5,
            lockout_minutes: 15,
            session_max_minutes: 12 * 60,
            allowed_hosts: Vec::new(),
        }
    }
}

/// `[webhook]`: delivery events and refusals out, in batches of JSON ([`crate::admin::webhook`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The endpoint, `https://…`.
    pub url: String,
    /// A file holding the HMAC-SHA256 key of the `X-Sluice-Signature` header (owner-only).
    pub secret_file: PathBuf,
    /// The events sent: any of `delivered`, `deferred`, `failed`, `bounced`, `expired`,
    /// `refused`; default all.
    #[serde(default = "all_webhook_events")]
    pub events: Vec<String>,
    /// Events per POST at most.
    #[serde(default = "webhook_batch")]
    pub batch: usize,
    /// Milliseconds to wait for more events before sending a batch.
    #[serde(default = "webhook_flush_ms")]
    pub flush_ms: u64,
    /// Unsent events kept on disk at most, in MiB; past it the oldest are dropped.
    #[serde(default = "webhook_backlog_mb")]
    pub max_backlog_mb: u64,
    /// Seconds a POST may take.
    #[serde(default = "webhook_timeout")]
    pub timeout_secs: u64,
    /// A PEM file of the CA certificates the endpoint's certificate must chain to (instead of
    /// the public roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// The events a webhook can send.
pub const WEBHOOK_EVENTS: [&str; 6] = [
    "delivered",
    "deferred",
    "failed",
    "bounced",
    "expired",
    "refused",
];

fn all_webhook_events() -> Vec<String> {
    WEBHOOK_EVENTS.iter().map(|e| e.to_string()).collect()
}

fn webhook_batch() -> usize {
    100
}

fn webhook_flush_ms() -> u64 {
    1000
}

fn webhook_backlog_mb() -> u64 {
    64
}

fn webhook_timeout() -> u64 {
    10
}

impl WebhookConfig {
    /// The HMAC key: the secret file's content, surrounding white space removed.
    pub fn secret(&self) -> std::io::Result<Vec<u8>> {
        let text = std::fs::read_to_string(&self.secret_file).map_err(|e| {
            std::io::Error::other(format!(
                "webhook.secret_file {}: {e}",
                self.secret_file.display()
            ))
        })?;
        Ok(text.trim().as_bytes().to_vec())
    }
}

/// `[admin]`, `[metrics]` and `[webhook]` (the console and the metrics endpoint may not share
/// an address: the console serves `/metrics` itself).
pub(super) fn validate(
    admin: &AdminConfig,
    metrics: &MetricsConfig,
    webhook: Option<&WebhookConfig>,
    p: &mut Problems,
) {
    if let (Some(a), Some(m)) = (admin.address, metrics.address)
        && a == m
        && a.port() != 0
    {
        p.add(
            "admin.address",
            format_args!(
                "{a} is also metrics.address; the console serves /metrics and /healthz itself, so remove [metrics] or give it another address"
            ),
        );
    }
    p.range(
        "admin.session_minutes",
        admin.session_minutes,
        1,
        7 * 24 * 60,
    );
    if admin.max_failed_logins == 0 || admin.lockout_minutes == 0 {
        p.add(
            "admin.max_failed_logins and admin.lockout_minutes",
            "must be at least 1",
        );
    }
    p.at_most_secs(
        "admin.lockout_minutes",
        admin.lockout_minutes.saturating_mul(60),
        7 * DAY,
    );
    p.at_most_secs(
        "admin.session_max_minutes",
        admin.session_max_minutes.saturating_mul(60),
        7 * DAY,
    );
    if admin.session_max_minutes < admin.session_minutes {
        p.add(
            "admin.session_max_minutes",
            format_args!(
                "{} is shorter than admin.session_minutes ({})",
                admin.session_max_minutes, admin.session_minutes
            ),
        );
    }
    if let Some(w) = webhook {
        w.validate(p);
    }
}

impl WebhookConfig {
    fn validate(&self, p: &mut Problems) {
        if !self.url.starts_with("https://") {
            p.add(
                "webhook.url",
                format_args!("{:?} must be an https:// URL", self.url),
            );
        }
        p.one_of("webhook.events", &self.events, &WEBHOOK_EVENTS);
        p.range("webhook.batch", self.batch as u64, 1, 10_000);
        p.range("webhook.flush_ms", self.flush_ms, 1, 60_000);
        p.range("webhook.max_backlog_mb", self.max_backlog_mb, 1, 1 << 20);
        p.range("webhook.timeout_secs", self.timeout_secs, 1, 300);
        match self.secret() {
            Ok(s) if s.len() < 16 => p.add(
                format_args!("webhook.secret_file {}", self.secret_file.display()),
                "the secret is shorter than 16 bytes",
            ),
            Ok(_) => {}
            Err(e) => p.0.push(e.to_string()),
        }
    }
}
