//! `[delivery]` and `[[route]]`: where accepted mail goes (Maildir, LMTP, a smarthost or MX),
//! with retries, expiry, timeouts and per-destination limits.

use std::path::PathBuf;

use serde::Deserialize;

use super::{DAY, Problems};

/// `[delivery]`: local Maildir, retries and expiry.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DeliveryConfig {
    /// Maildir root for local recipients; default `<data_dir>/maildir`.
    pub maildir: Option<PathBuf>,
    /// The folder of each Maildir that mail marked spam is filed in (Maildir++: `.Junk`
    /// inside the user's Maildir, as Dovecot reads it); empty: the inbox, like other mail.
    pub junk_folder: String,
    /// Seconds to wait before each retry of a deferred message; the last value repeats.
    /// Default like Postfix: 5 minutes, doubling, up to 4 hours.
    pub retry_secs: Vec<u64>,
    /// How long a message may stay in the queue before it fails (default 5 days).
    pub max_queue_lifetime_secs: u64,
    /// Seconds to wait for the reply to each command (MAIL, RCPT, RSET, DATA) from a next
    /// hop, and to send one (like Postfix's `smtp_mail_timeout`, `smtp_rcpt_timeout`).
    pub timeout_secs: u64,
    /// Seconds to wait for a TCP connection to a next hop (Postfix's `smtp_connect_timeout`).
    pub connect_timeout_secs: u64,
    /// Seconds to wait for the greeting, and for each reply while the session is set up
    /// (EHLO, STARTTLS and its handshake, AUTH; Postfix's `smtp_helo_timeout`).
    pub greeting_timeout_secs: u64,
    /// Seconds to send the message and wait for the reply to its end of data (Postfix's
    /// `smtp_data_xfer_timeout` and `smtp_data_done_timeout`).
    pub data_timeout_secs: u64,
    /// Send a "delayed" DSN once a message has waited this long (off when unset).
    pub delay_warning_secs: Option<u64>,
    /// Deliveries (one message to one destination) in progress at the same time.
    pub concurrency: usize,
    /// Deliveries in progress to one destination (an MX domain, or a route's next hop) at
    /// most, and open connections to one next-hop address; a route's `max_connections`
    /// overrides it. Keep it below `concurrency`, so that one destination that does not
    /// answer cannot hold every delivery.
    pub max_connections_per_destination: usize,
    /// Seconds an idle connection is kept for the next message to the same next hop.
    pub connection_idle_secs: u64,
    /// The DNS server for MX routes (`ip` or `ip:port`); default: the system's resolvers.
    pub resolver: Option<String>,
    /// The HTTPS port MTA-STS policies are fetched from: 443 (another only for tests and
    /// private set-ups).
    pub mta_sts_port: u16,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            maildir: None,
            junk_folder: "Junk".to_string(),
            retry_secs: vec![300, 600, 1200, 2400, 4800, 9600, 14400],
            max_queue_lifetime_secs: 5 * 24 * 3600,
            timeout_secs: 300,
            connect_timeout_secs: 30,
            greeting_timeout_secs: 300,
            data_timeout_secs: 600,
            delay_warning_secs: None,
            concurrency: 20,
            max_connections_per_destination: 10,
            connection_idle_secs: 10,
            resolver: None,
            mta_sts_port: 443,
        }
    }
}

/// How a route delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteKind {
    /// SMTP to a fixed next hop (a smarthost).
    Smtp,
    /// LMTP to a local server (e.g. Dovecot), over TCP or a Unix socket.
    Lmtp,
    /// SMTP to the domain's mail exchangers (MX records, else its A/AAAA; RFC 5321 §5).
    Mx,
    /// Into the Maildir tree.
    Maildir,
}

/// `[[route]]`: where mail for some domains goes.
#[derive(Debug, Clone, Deserialize)]
pub struct RouteConfig {
    /// Recipient domains this route serves; `"*"` is the default route.
    pub domains: Vec<String>,
    /// How it delivers.
    pub kind: RouteKind,
    /// `host:port` of the next hop (smtp, lmtp).
    #[serde(default)]
    pub host: Option<String>,
    /// Unix socket of the next hop (lmtp), instead of `host`.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// Port of the mail exchangers (mx); default 25.
    #[serde(default = "smtp_port")]
    pub port: u16,
    /// TLS policy for smtp: `none`, `opportunistic` (default) or `required` (verified).
    #[serde(default = "opportunistic")]
    pub tls: TlsPolicy,
    /// MTA-STS (RFC 8461) for an mx route: `on` (default: a domain's enforce policy is
    /// followed), `off`, or `required` (a domain without an enforce policy is deferred).
    #[serde(default)]
    pub mta_sts: PolicyUse,
    /// DANE (RFC 7672) for an mx route: `on` (default: a host's DNSSEC-validated TLSA records
    /// authenticate it; needs a validating resolver), `off`, or `required` (a domain whose mail
    /// exchangers have no usable TLSA records is deferred).
    #[serde(default)]
    pub dane: PolicyUse,
    /// AUTH user for the next hop (needs TLS).
    #[serde(default)]
    pub auth_user: Option<String>,
    /// AUTH password.
    #[serde(default)]
    pub auth_password: Option<String>,
    /// Deliveries in progress to one of this route's destinations at most; default
    /// `delivery.max_connections_per_destination`.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Messages sent over one connection before it is closed; default: no limit (a connection
    /// lives at most 5 minutes).
    #[serde(default)]
    pub max_messages_per_connection: Option<u32>,
    /// Messages handed to one of this route's destinations per minute at most (a fixed
    /// window); shared by every Sluice of a fleet when `[store]` is Redis. Default: no limit.
    #[serde(default)]
    pub max_messages_per_minute: Option<u32>,
}

/// How an mx route uses a destination's own TLS policy (MTA-STS, DANE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyUse {
    /// Follow a domain's policy when it has one.
    #[default]
    On,
    /// Never look.
    Off,
    /// Deliver only to domains with such a policy (an MTA-STS enforce policy, usable TLSA
    /// records), as it says; defer the others.
    Required,
}

fn smtp_port() -> u16 {
    25
}

fn opportunistic() -> TlsPolicy {
    TlsPolicy::Opportunistic
}

/// When to use TLS with the next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsPolicy {
    /// Never.
    None,
    /// STARTTLS when offered; certificates not verified (as MTAs do opportunistically).
    Opportunistic,
    /// STARTTLS required, certificate verified against the system's roots.
    Required,
}

impl DeliveryConfig {
    pub(super) fn validate(&self, p: &mut Problems) {
        let junk = &self.junk_folder;
        if junk.starts_with('.')
            || junk
                .chars()
                .any(|c| c == '/' || c == '\\' || c.is_control())
            || junk.len() > 64
        {
            p.add(
                "delivery.junk_folder",
                format_args!(
                    "{junk:?} must be a folder name (no '/', not starting with '.', at most 64 bytes), or empty for none"
                ),
            );
        }
        if self.retry_secs.is_empty() || self.retry_secs.contains(&0) {
            p.add(
                "delivery.retry_secs",
                "list at least one delay, each at least 1 second",
            );
        }
        for (key, secs, max) in [
            ("delivery.timeout_secs", self.timeout_secs, 3600),
            (
                "delivery.connect_timeout_secs",
                self.connect_timeout_secs,
                3600,
            ),
            (
                "delivery.greeting_timeout_secs",
                self.greeting_timeout_secs,
                3600,
            ),
            ("delivery.data_timeout_secs", self.data_timeout_secs, 3600),
            (
                "delivery.delay_warning_secs",
                self.delay_warning_secs.unwrap_or(1),
                30 * DAY,
            ),
        ] {
            p.nonzero(key, secs);
            p.at_most_secs(key, secs, max);
        }
        for (key, secs, max) in [
            (
                "delivery.max_queue_lifetime_secs",
                self.max_queue_lifetime_secs,
                60 * DAY,
            ),
            (
                "delivery.connection_idle_secs",
                self.connection_idle_secs,
                3600,
            ),
            (
                "delivery.retry_secs",
                self.retry_secs.iter().copied().max().unwrap_or(0),
                30 * DAY,
            ),
        ] {
            p.at_most_secs(key, secs, max);
        }
        p.nonzero("delivery.concurrency", self.concurrency as u64);
        p.nonzero(
            "delivery.max_connections_per_destination",
            self.max_connections_per_destination as u64,
        );
        p.resolver("delivery.resolver", self.resolver.as_deref());
        p.nonzero("delivery.mta_sts_port", u64::from(self.mta_sts_port));
    }
}

/// Every `[[route]]`: the keys its kind needs, and no others.
pub(super) fn validate_routes(routes: &[RouteConfig], p: &mut Problems) {
    for (i, r) in routes.iter().enumerate() {
        r.validate(&format!("route[{i}]"), p);
    }
}

impl RouteConfig {
    fn validate(&self, at: &str, p: &mut Problems) {
        let key = |k: &str| format!("{at}.{k}");
        if self.domains.is_empty() {
            p.add(key("domains"), "list at least one domain, or \"*\"");
        }
        match (self.kind, &self.host, &self.socket) {
            (RouteKind::Smtp, None, _) => p.add(key("host"), "required for an smtp route"),
            (RouteKind::Lmtp, None, None) => p.add(
                at,
                "an lmtp route needs host (host:port) or socket (a path)",
            ),
            (RouteKind::Lmtp, Some(_), Some(_)) => p.add(at, "set host or socket, not both"),
            (RouteKind::Smtp | RouteKind::Lmtp, Some(h), _) if !h.contains(':') => {
                p.add(key("host"), format_args!("{h:?} must be host:port"))
            }
            (RouteKind::Mx | RouteKind::Maildir, Some(_), _) => p.add(
                key("host"),
                format_args!(
                    "an {} route takes no host",
                    if self.kind == RouteKind::Mx {
                        "mx"
                    } else {
                        "maildir"
                    }
                ),
            ),
            (RouteKind::Smtp | RouteKind::Mx | RouteKind::Maildir, _, Some(_)) => {
                p.add(key("socket"), "only an lmtp route takes a socket")
            }
            _ => {}
        }
        if self.kind == RouteKind::Mx && self.port == 0 {
            p.add(key("port"), "must be a port number");
        }
        if self.kind != RouteKind::Mx && self.mta_sts != PolicyUse::On {
            p.add(
                key("mta_sts"),
                "only an mx route looks up MTA-STS policies (a fixed next hop: set tls = \"required\")",
            );
        }
        if self.kind != RouteKind::Mx && self.dane != PolicyUse::On {
            p.add(
                key("dane"),
                "only an mx route looks up TLSA records (a fixed next hop: set tls = \"required\")",
            );
        }
        if self.auth_user.is_some() != self.auth_password.is_some() {
            p.add(at, "set both auth_user and auth_password, or neither");
        }
        for (k, v) in [
            ("max_connections", self.max_connections.map(|n| n as u64)),
            (
                "max_messages_per_connection",
                self.max_messages_per_connection.map(u64::from),
            ),
            (
                "max_messages_per_minute",
                self.max_messages_per_minute.map(u64::from),
            ),
        ] {
            if v == Some(0) {
                p.add(key(k), "must be at least 1 (leave it out for the default)");
            }
        }
        if self.auth_user.is_some() && self.tls != TlsPolicy::Required {
            p.add(
                key("tls"),
                format_args!(
                    "a route with auth_user sends its password, so it needs tls = \"required\" (a verified certificate); it is {:?}",
                    format!("{:?}", self.tls).to_lowercase()
                ),
            );
        }
    }
}
