//! `[limits]`: the protocol's bounds (sizes, counts, timeouts) and the AUTH lock-out.

use serde::Deserialize;

use super::{DAY, Problems};

/// `[limits]`: protocol limits, each defending against a named abuse.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LimitsConfig {
    /// Largest message accepted, in bytes (SIZE is announced and enforced during DATA).
    pub max_message_size: usize,
    /// Recipients per transaction; more get 452 4.5.3.
    pub max_recipients: usize,
    /// Simultaneous connections in total (resource exhaustion).
    pub max_connections: usize,
    /// Simultaneous connections per client IP (one client starving others).
    pub max_connections_per_ip: usize,
    /// Seconds a whole command may take to arrive, from the end of the previous one (RFC
    /// 5321 §4.5.3.2: 5 minutes). Also the limit for writing a reply to a client that does
    /// not read. A client trickling a byte at a time is cut off on time.
    pub command_timeout_secs: u64,
    /// Seconds the whole message data (after `354`, or one BDAT chunk) may take to arrive.
    pub data_timeout_secs: u64,
    /// Seconds a connection may last in all, however busy (one client holding a slot).
    pub max_session_secs: u64,
    /// IPv6 clients are counted by this prefix for the per-IP limits (one host has a whole
    /// /64 to pick addresses from).
    pub ipv6_prefix_len: u8,
    /// Errors in one session before it is disconnected (probing, garbage).
    pub max_errors: u32,
    /// Failed AUTH attempts before disconnecting (password guessing).
    pub max_auth_failures: u32,
    /// Failed AUTH attempts from one client (IPv6: prefix) or for one user name, across
    /// connections, within `auth_lockout_secs`, after which AUTH answers 454 4.7.0 without
    /// checking the password.
    pub auth_lockout_failures: u32,
    /// The window over which failed AUTH attempts are counted.
    pub auth_lockout_secs: u64,
    /// A message arriving with this many `Received:` fields is in a mail loop: refused with
    /// 554 5.4.6 instead of relayed once more (Postfix's `hopcount_limit`).
    pub max_received: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_message_size: 25 << 20,
            max_recipients: 100,
            max_connections: 1000,
            max_connections_per_ip: 50,
            command_timeout_secs: 300,
            data_timeout_secs: 180,
            max_session_secs: 3600,
            ipv6_prefix_len: 64,
            max_errors: 10,
            max_auth_failures: 3,
            auth_lockout_failures: 10,
            auth_lockout_secs: 900,
            max_received: 50,
        }
    }
}

impl LimitsConfig {
    pub(super) fn validate(&self, p: &mut Problems) {
        for (key, v) in [
            ("limits.max_message_size", self.max_message_size),
            ("limits.max_recipients", self.max_recipients),
            ("limits.max_connections", self.max_connections),
            ("limits.max_connections_per_ip", self.max_connections_per_ip),
            ("limits.max_received", self.max_received),
        ] {
            p.nonzero(key, v as u64);
        }
        for (key, secs, max) in [
            (
                "limits.command_timeout_secs",
                self.command_timeout_secs,
                3600,
            ),
            ("limits.data_timeout_secs", self.data_timeout_secs, 3600),
            ("limits.max_session_secs", self.max_session_secs, DAY),
            ("limits.auth_lockout_secs", self.auth_lockout_secs, 7 * DAY),
        ] {
            p.nonzero(key, secs);
            p.at_most_secs(key, secs, max);
        }
        p.nonzero(
            "limits.auth_lockout_failures",
            u64::from(self.auth_lockout_failures),
        );
        if !(1..=128).contains(&self.ipv6_prefix_len) {
            p.add(
                "limits.ipv6_prefix_len",
                format_args!("{} is not a prefix length (1 to 128)", self.ipv6_prefix_len),
            );
        }
    }
}
