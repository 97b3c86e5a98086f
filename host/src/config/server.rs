//! `[server]` and `[[listener]]`: the host's name, data directory and shutdown, and the
//! sockets Sluice listens on.

use std::path::PathBuf;

use serde::Deserialize;

use super::Problems;
use super::sender_auth::DmarcMode;

/// Host-wide settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// The name this host uses in replies, `Received:` headers and bounces.
    pub hostname: String,
    /// Directory for the spool, the compile cache and (by default) plugins.
    pub data_dir: PathBuf,
    /// On SIGTERM/SIGINT, how long sessions and deliveries in progress may take to finish
    /// before what is still mid-transaction is answered 421 (and so not accepted).
    pub drain_timeout_secs: u64,
    /// Where `sluice serve` writes its process id (for `sluice reload`); default
    /// `<data_dir>/sluice.pid`.
    pub pid_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            hostname: "localhost".to_string(),
            data_dir: PathBuf::from("sluice-data"),
            drain_timeout_secs: 30,
            pid_file: None,
        }
    }
}

/// The kind of an SMTP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    /// MTA-to-MTA (port 25): STARTTLS offered when a certificate is available.
    Smtp,
    /// Mail submission (port 587): STARTTLS required before AUTH, AUTH before mail.
    Submission,
    /// Submission over implicit TLS (port 465).
    Smtps,
    /// A milter service for Postfix or Sendmail (`smtpd_milters = inet:HOST:PORT`): the
    /// plugins run inside the MTA's SMTP dialogue; the MTA keeps the message.
    Milter,
}

impl ListenerKind {
    /// The name used in logs and in the plugins' `session.listener`.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Smtp => "smtp",
            ListenerKind::Submission => "submission",
            ListenerKind::Smtps => "smtps",
            ListenerKind::Milter => "milter",
        }
    }
}

/// `[[listener]]`: one listening socket.
#[derive(Debug, Clone, Deserialize)]
pub struct ListenerConfig {
    /// What kind of listener it is.
    pub kind: ListenerKind,
    /// Address and port, e.g. `0.0.0.0:25` or `[::]:587`. Port 0 picks a free port.
    #[serde(default)]
    pub address: Option<std::net::SocketAddr>,
    /// A Unix socket path instead of `address` (milter listeners only), e.g.
    /// `/run/sluice/milter.sock`; a stale socket file there is replaced.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// Permissions of the Unix socket (octal string), so that the MTA's user can connect:
    /// `"0660"` by default (put the MTA's user in Sluice's group).
    #[serde(default)]
    pub socket_mode: Option<String>,
    /// Set to false to keep the entry without listening.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// What a DMARC failure of mail arriving here does: `record` (default) or `enforce`.
    #[serde(default)]
    pub dmarc: DmarcMode,
    /// A milter TCP listener's peers: the networks whose MTAs may connect (the MTA decides
    /// what mail is and who sent it, so a stranger must not speak for it). Loopback only
    /// (`127.0.0.0/8`, `::1/128`) when unset; others are closed at once, with a log line.
    #[serde(default)]
    pub allow_from: Option<Vec<ipnet::IpNet>>,
    /// Connections come through a load balancer that sends the PROXY protocol (version 1 or
    /// 2) first: the client it names is the session's client for everything.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// The balancers allowed to send the header (networks); a connection from anywhere else is
    /// closed. Required with `proxy_protocol`.
    #[serde(default)]
    pub proxy_trusted: Vec<ipnet::IpNet>,
    /// How long a balancer has to send the whole header (seconds; default 5).
    #[serde(default = "proxy_timeout")]
    pub proxy_timeout_secs: u64,
}

fn proxy_timeout() -> u64 {
    5
}

impl ListenerConfig {
    /// The networks allowed to connect to this (milter) listener: `allow_from`, or loopback.
    pub fn peers_allowed(&self) -> Vec<ipnet::IpNet> {
        self.allow_from.clone().unwrap_or_else(|| {
            ["127.0.0.0/8", "::1/128"]
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
    }
}

fn yes() -> bool {
    true
}

impl ServerConfig {
    pub(super) fn validate(&self, p: &mut Problems) {
        if self.hostname.is_empty() {
            p.add("server.hostname", "must not be empty");
        }
        p.at_most_secs("server.drain_timeout_secs", self.drain_timeout_secs, 3600);
    }
}

/// `[[listener]]`: each needs an address or (milter only) a socket, and no two share one.
pub(super) fn validate_listeners(listeners: &[ListenerConfig], p: &mut Problems) {
    for (i, l) in listeners.iter().enumerate() {
        let kind = l.kind.as_str();
        let milter = l.kind == ListenerKind::Milter;
        match (&l.address, &l.socket) {
            (None, None) => p.add(
                format_args!("listener[{i}] ({kind})"),
                format_args!(
                    "set address (host:port){}",
                    if milter { " or socket (a path)" } else { "" }
                ),
            ),
            (Some(_), Some(_)) => p.add(
                format_args!("listener[{i}] ({kind})"),
                "set address or socket, not both",
            ),
            (None, Some(_)) if !milter => p.add(
                format_args!("listener[{i}].socket"),
                "only a milter listener takes a Unix socket",
            ),
            _ => {}
        }
        if l.allow_from.is_some() && !(milter && l.socket.is_none()) {
            p.add(
                format_args!("listener[{i}].allow_from"),
                "only a milter listener on a TCP address takes an allow-list (a Unix socket's peers are set by its socket_mode)",
            );
        }
        if l.proxy_protocol {
            if milter {
                p.add(
                    format_args!("listener[{i}].proxy_protocol"),
                    "only SMTP listeners (smtp, submission, smtps) take the PROXY protocol",
                );
            }
            if l.proxy_trusted.is_empty() {
                p.add(
                    format_args!("listener[{i}].proxy_trusted"),
                    "list the load balancers allowed to send the PROXY header (e.g. [\"10.0.0.5/32\"]): with none, every connection would be closed",
                );
            }
        } else if !l.proxy_trusted.is_empty() {
            p.add(
                format_args!("listener[{i}].proxy_trusted"),
                "has no effect without proxy_protocol = true",
            );
        }
        p.range(
            format_args!("listener[{i}].proxy_timeout_secs"),
            l.proxy_timeout_secs,
            1,
            300,
        );
        if let Some(m) = &l.socket_mode
            && u32::from_str_radix(m.trim_start_matches("0o"), 8).map_or(true, |v| v > 0o777)
        {
            p.add(
                format_args!("listener[{i}].socket_mode"),
                format_args!("{m:?} is not an octal mode such as \"0660\""),
            );
        }
        let same = listeners.iter().skip(i + 1).any(|o| {
            o.enabled
                && l.enabled
                && ((o.address.is_some()
                    && o.address == l.address
                    && l.address.is_some_and(|a| a.port() != 0))
                    || (o.socket.is_some() && o.socket == l.socket))
        });
        if same {
            let at = l
                .address
                .map(|a| a.to_string())
                .or_else(|| l.socket.as_ref().map(|p| p.display().to_string()))
                .unwrap_or_default();
            p.add("listener", format_args!("{at} is used twice"));
        }
    }
}
