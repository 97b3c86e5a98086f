//! The operator's configuration: one TOML file, typed with serde, then validated as a whole so
//! that every problem is reported at once, each naming its key. Unknown keys are refused —
//! all of them in one message: they are collected with `serde_ignored` rather than stopping
//! at the first (as `deny_unknown_fields` would). A plugin's own `config` table is the
//! plugin's to check, in its `validate-config`.
//!
//! Without a file Sluice runs on [`Config::default`], the built-in development configuration.
//! This module only parses and validates; it opens no sockets and loads no plugins.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Config {
    /// Host-wide settings (host name, data directory).
    pub server: ServerConfig,
    /// Where plugins come from and the limits every plugin gets unless it says otherwise.
    pub plugins: PluginsConfig,
    /// Settings per plugin, keyed by plugin name (the file name without `NN-` prefix and `.wasm`).
    pub plugin: BTreeMap<String, PluginSettings>,
    /// What the summed spam score of a message leads to.
    pub scoring: ScoringConfig,
    /// The SMTP listeners. Empty means the built-in trio on 127.0.0.1 (2525, 2587, 2465).
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// Certificate and key for STARTTLS and implicit TLS.
    pub tls: TlsConfig,
    /// Which mail may be relayed where.
    pub relay: RelayConfig,
    /// SMTP AUTH.
    pub auth: AuthConfig,
    /// Protocol limits.
    pub limits: LimitsConfig,
    /// Where accepted mail goes.
    pub delivery: DeliveryConfig,
    /// Delivery routes by recipient domain.
    #[serde(rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// Prometheus metrics, `/healthz` and `/plugins` over HTTP.
    pub metrics: MetricsConfig,
    /// The operator's web console.
    pub admin: AdminConfig,
    /// Delivery events and refusals POSTed to an HTTPS endpoint (off unless `url` is set).
    pub webhook: Option<WebhookConfig>,
    /// SPF, DKIM and DMARC for mail from other servers; DKIM signing for our own.
    pub authentication: AuthenticationConfig,
    /// Where plugins granted `kv` keep their state.
    pub store: StoreConfig,
    /// How users' Junk folders teach the spam filter (`sluice spam submit`, the drop
    /// directory Sluice collects from).
    #[serde(rename = "spam_learning")]
    pub learning: LearningConfig,
    /// The file this was read from, for error messages; `None` for the built-in default.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `[store]`: the key-value store of plugins granted the `kv` capability. Embedded (a file in
/// the data directory) unless `url` names a Redis server shared by a fleet.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct StoreConfig {
    /// `redis://[user:password@]host[:port][/db]`, `rediss://…` (TLS), or
    /// `redis+sentinel://[:password@]host:port[,host:port…]/SERVICE[/DB]` (the primary that
    /// Redis Sentinel names, followed across failovers). Unset: embedded.
    pub url: Option<String>,
    /// PEM file of the CA that signed Redis's certificate (`rediss://`); default: the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// The embedded store's file; default `<data_dir>/kv.redb`.
    pub path: Option<PathBuf>,
    /// The embedded store makes its writes durable this often (milliseconds): a crash loses
    /// at most the writes of one interval.
    pub flush_interval_ms: u64,
    /// The most the embedded store holds, keys and values (MiB); past it writes fail as the
    /// store being unavailable. Each plugin has its own quota besides (`kv_max_bytes`).
    pub max_mb: u64,
    /// The embedded store's page cache (MiB).
    pub cache_mb: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: None,
            ca_file: None,
            path: None,
            flush_interval_ms: 1000,
            max_mb: 1024,
            cache_mb: 64,
        }
    }
}

/// `[spam_learning]`: the hand-over of learned messages from mail users to Sluice, and the
/// bounds on what one user may teach. The model, its log and its lock are Sluice's alone
/// (beside `[plugin.spam-score.config] learned`); a mail user may only drop a message and its
/// label into the drop directory (`sluice spam submit`), which Sluice collects.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LearningConfig {
    /// The drop directory; default `drop/` beside the `learned` file. Make it mode 1730,
    /// owned by Sluice's user and the mail user's group (see host/deploy/dovecot-imapsieve).
    pub drop_dir: Option<PathBuf>,
    /// Messages one user may hand over per day (UTC); the rest are dropped with a log line.
    pub max_per_user_per_day: u32,
    /// Messages the site's log keeps; past it the oldest are forgotten.
    pub max_messages: usize,
    /// Messages collected from the drop directory per pass (one retraining per pass).
    pub batch: usize,
    /// How long a learner waits for another's lock before it gives up (seconds).
    pub lock_timeout_secs: u64,
}

impl Default for LearningConfig {
    fn default() -> Self {
        LearningConfig {
            drop_dir: None,
            max_per_user_per_day: 200,
            max_messages: 10_000,
            batch: 500,
            lock_timeout_secs: 30,
        }
    }
}

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

/// What a listener does with a DMARC failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DmarcMode {
    /// Only record the results (in `Authentication-Results:`, for plugins and logs).
    #[default]
    Record,
    /// Apply the sender domain's policy: `p=reject` failures get 550 5.7.1, `p=quarantine`
    /// failures are quarantined, and a DNS temperror gets 451 4.7.1.
    Enforce,
}

/// `[authentication]`: sender authentication of mail from other servers (SPF at MAIL FROM,
/// DKIM and DMARC after DATA, one `Authentication-Results:` field) and DKIM signing of mail
/// from authenticated users and trusted networks (which are not verified themselves).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AuthenticationConfig {
    /// Verify SPF, DKIM and DMARC of mail from unauthenticated, untrusted clients.
    pub verify: bool,
    /// The DNS server for the checks (`ip` or `ip:port`); default: the system's resolvers.
    pub resolver: Option<String>,
    /// Seconds one DNS query may take; a query that takes longer is a temperror.
    pub dns_timeout_secs: u64,
    /// DKIM signing keys, one per domain.
    #[serde(rename = "dkim_key")]
    pub dkim_keys: Vec<DkimKeyConfig>,
    /// What happens to an authenticated user's message whose header From is not an address
    /// the user may send as (`[auth.senders]`) or is not a single address, when we hold a key
    /// for its domain: `unsigned` (default: relayed without our signature) or `refuse`
    /// (550 5.7.1). It is never signed.
    pub unowned_from: UnownedFrom,
}

/// See [`AuthenticationConfig::unowned_from`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnownedFrom {
    /// Relay it unsigned.
    #[default]
    Unsigned,
    /// Refuse it: 550 5.7.1.
    Refuse,
}

impl Default for AuthenticationConfig {
    fn default() -> Self {
        AuthenticationConfig {
            verify: true,
            resolver: None,
            dns_timeout_secs: 5,
            dkim_keys: Vec::new(),
            unowned_from: UnownedFrom::Unsigned,
        }
    }
}

/// `[[authentication.dkim_key]]`: the key that signs mail whose From domain is `domain`.
#[derive(Debug, Clone, Deserialize)]
pub struct DkimKeyConfig {
    /// The signing domain (`d=`).
    pub domain: String,
    /// The selector (`s=`): the key is published at `SELECTOR._domainkey.DOMAIN`.
    pub selector: String,
    /// PEM private key, RSA or Ed25519 (`sluice dkim keygen` writes one).
    pub key: PathBuf,
}

/// `[tls]`: the server certificate.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct TlsConfig {
    /// PEM certificate chain. Without `cert` and `key`, a self-signed certificate for
    /// `server.hostname` is generated on first start and kept in `<data_dir>/tls/`.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
}

/// `[relay]`: relay control. Mail for `local_domains` is accepted from anyone; mail for any
/// other domain only from authenticated users or clients in `trusted_networks`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RelayConfig {
    /// Domains this host accepts mail for.
    pub local_domains: Vec<String>,
    /// Client networks allowed to relay without AUTH, e.g. `["10.0.0.0/8"]`.
    pub trusted_networks: Vec<ipnet::IpNet>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            local_domains: vec!["localhost".to_string()],
            trusted_networks: Vec::new(),
        }
    }
}

/// `[auth]`: SMTP AUTH (PLAIN, LOGIN) against a credentials file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct AuthConfig {
    /// Credentials file: one `user:argon2-hash` per line (`sluice passwd USER` writes it).
    /// Default `<data_dir>/users`.
    pub users_file: Option<PathBuf>,
    /// Allow AUTH without TLS on loopback connections (for local tools and tests).
    pub allow_plaintext_on_loopback: bool,
    /// Addresses each user may send as, e.g. `alice = ["alice@example.org", "@example.net"]`
    /// (`@domain` allows the whole domain). A user not listed may send as the user name when it
    /// is an address, or as `user@` each local domain.
    pub senders: BTreeMap<String, Vec<String>>,
}

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
        }
    }
}

/// `[webhook]`: delivery events and refusals out, in batches of JSON ([`crate::webhook`]).
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

/// `ip` or `ip:port` (IPv6 as `[::1]:53`) to a socket address; port 53 by default.
pub fn resolver_addr(s: &str) -> Option<std::net::SocketAddr> {
    if let Ok(a) = s.parse::<std::net::SocketAddr>() {
        return Some(a);
    }
    s.trim_matches(['[', ']'])
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| std::net::SocketAddr::new(ip, 53))
}

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

/// Spam-score thresholds applied to the sum of every plugin's symbols.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ScoringConfig {
    /// Add `X-Spam-Score` and `X-Spam-Status` headers to every message that reaches
    /// `check-message`.
    pub add_headers: bool,
    /// At or above this score the message is marked spam (`X-Spam-Status: Yes`; rspamd's
    /// "add header").
    pub spam_threshold: f64,
    /// At or above this score the message is held in quarantine; none to never.
    pub quarantine_threshold: Option<f64>,
    /// At or above this score the message is rejected with 550 5.7.1; none to never reject.
    pub reject_threshold: Option<f64>,
    /// Mail from authenticated users (submission): `off` (no score headers, no score
    /// actions: the default; a sender's own mail is not judged as spam), `score` (the
    /// headers with the score, never marked spam, no actions) or `on` (as any mail).
    pub authenticated: AuthenticatedScoring,
    /// Other thresholds for some listeners or recipient domains; the first that matches a
    /// transaction applies.
    #[serde(rename = "override")]
    pub overrides: Vec<ScoringOverride>,
}

/// How mail from authenticated users is scored ([`ScoringConfig::authenticated`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthenticatedScoring {
    /// No score headers, no score actions.
    Off,
    /// Score headers, never marked spam, no actions.
    Score,
    /// As any mail.
    On,
}

/// `[[scoring.override]]`: thresholds for the transactions of some listeners or recipient
/// domains (a transaction matches when its listener is listed, or any recipient's domain).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringOverride {
    /// Listener kinds (`smtp`, `submission`, `smtps`, `milter`).
    #[serde(default)]
    pub listeners: Vec<String>,
    /// Recipient domains.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Replaces `spam_threshold`.
    pub spam_threshold: Option<f64>,
    /// Replaces `quarantine_threshold` (a value; leave out to keep the default's).
    pub quarantine_threshold: Option<f64>,
    /// Replaces `reject_threshold`.
    pub reject_threshold: Option<f64>,
}

/// The thresholds that apply to one transaction ([`ScoringConfig::effective`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Score headers are added.
    pub headers: bool,
    /// Marked spam at or above (none: never).
    pub spam: Option<f64>,
    /// Quarantined at or above.
    pub quarantine: Option<f64>,
    /// Rejected at or above.
    pub reject: Option<f64>,
}

impl ScoringConfig {
    /// The thresholds for a transaction on `listener`, from an authenticated client or not,
    /// to recipients in `domains`.
    pub fn effective<'a>(
        &self,
        listener: &str,
        authenticated: bool,
        mut domains: impl Iterator<Item = &'a str>,
    ) -> Thresholds {
        if authenticated {
            match self.authenticated {
                AuthenticatedScoring::Off => {
                    return Thresholds {
                        headers: false,
                        spam: None,
                        quarantine: None,
                        reject: None,
                    };
                }
                AuthenticatedScoring::Score => {
                    return Thresholds {
                        headers: self.add_headers,
                        spam: None,
                        quarantine: None,
                        reject: None,
                    };
                }
                AuthenticatedScoring::On => {}
            }
        }
        let domains: Vec<&str> = domains.by_ref().collect();
        let o = self.overrides.iter().find(|o| {
            o.listeners.iter().any(|l| l == listener)
                || o.domains
                    .iter()
                    .any(|d| domains.iter().any(|r| r.eq_ignore_ascii_case(d)))
        });
        Thresholds {
            headers: self.add_headers,
            spam: Some(
                o.and_then(|o| o.spam_threshold)
                    .unwrap_or(self.spam_threshold),
            ),
            quarantine: o
                .and_then(|o| o.quarantine_threshold)
                .or(self.quarantine_threshold),
            reject: o.and_then(|o| o.reject_threshold).or(self.reject_threshold),
        }
    }
}

impl Default for ScoringConfig {
    fn default() -> Self {
        ScoringConfig {
            add_headers: true,
            spam_threshold: 5.0,
            quarantine_threshold: None,
            reject_threshold: Some(15.0),
            authenticated: AuthenticatedScoring::Off,
            overrides: Vec::new(),
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

    /// Parses TOML text without validating values; refuses unknown keys, naming every one.
    pub fn parse(text: &str) -> Result<Config, String> {
        let mut unknown = Vec::new();
        let config: Config = serde_ignored::deserialize(toml::Deserializer::new(text), |path| {
            unknown.push(path.to_string())
        })
        .map_err(|e| e.to_string().trim_end().to_string())?;
        match unknown.len() {
            0 => Ok(config),
            1 => Err(format!("unknown key `{}`", unknown[0])),
            _ => Err(format!("unknown keys `{}`", unknown.join("`, `"))),
        }
    }

    /// Checks every value, collecting all problems.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if let (Some(a), Some(m)) = (self.admin.address, self.metrics.address)
            && a == m
            && a.port() != 0
        {
            problems.push(format!(
                "admin.address: {a} is also metrics.address; the console serves /metrics and /healthz itself, so remove [metrics] or give it another address"
            ));
        }
        let l = &self.learning;
        for (key, value, max) in [
            (
                "max_per_user_per_day",
                l.max_per_user_per_day as usize,
                1_000_000,
            ),
            ("max_messages", l.max_messages, 1_000_000),
            ("batch", l.batch, 100_000),
            ("lock_timeout_secs", l.lock_timeout_secs as usize, 3600),
        ] {
            if !(1..=max).contains(&value) {
                problems.push(format!(
                    "spam_learning.{key}: {value} is out of range (1 to {max})"
                ));
            }
        }
        if !(1..=7 * 24 * 60).contains(&self.admin.session_minutes) {
            problems.push(format!(
                "admin.session_minutes: {} is out of range (1 to 10080)",
                self.admin.session_minutes
            ));
        }
        if self.admin.max_failed_logins == 0 || self.admin.lockout_minutes == 0 {
            problems.push(
                "admin.max_failed_logins and admin.lockout_minutes must be at least 1".to_string(),
            );
        }
        // Every duration has a ceiling too: a huge one overflows when it becomes a time, or
        // makes a lock-out or a timeout last for ever.
        const DAY: u64 = 24 * 3600;
        let d = &self.delivery;
        let l = &self.limits;
        for (key, secs, max) in [
            (
                "admin.lockout_minutes",
                self.admin.lockout_minutes.saturating_mul(60),
                7 * DAY,
            ),
            (
                "admin.session_max_minutes",
                self.admin.session_max_minutes.saturating_mul(60),
                7 * DAY,
            ),
            (
                "server.drain_timeout_secs",
                self.server.drain_timeout_secs,
                3600,
            ),
            ("plugins.rescan_secs", self.plugins.rescan_secs, 3600),
            ("plugins.cooldown_secs", self.plugins.cooldown_secs, DAY),
            (
                "delivery.max_queue_lifetime_secs",
                d.max_queue_lifetime_secs,
                60 * DAY,
            ),
            ("delivery.timeout_secs", d.timeout_secs, 3600),
            (
                "delivery.connect_timeout_secs",
                d.connect_timeout_secs,
                3600,
            ),
            (
                "delivery.greeting_timeout_secs",
                d.greeting_timeout_secs,
                3600,
            ),
            ("delivery.data_timeout_secs", d.data_timeout_secs, 3600),
            (
                "delivery.delay_warning_secs",
                d.delay_warning_secs.unwrap_or(0),
                30 * DAY,
            ),
            (
                "delivery.connection_idle_secs",
                d.connection_idle_secs,
                3600,
            ),
            (
                "delivery.retry_secs",
                d.retry_secs.iter().copied().max().unwrap_or(0),
                30 * DAY,
            ),
            ("limits.command_timeout_secs", l.command_timeout_secs, 3600),
            ("limits.data_timeout_secs", l.data_timeout_secs, 3600),
            ("limits.max_session_secs", l.max_session_secs, DAY),
            ("limits.auth_lockout_secs", l.auth_lockout_secs, 7 * DAY),
            (
                "authentication.dns_timeout_secs",
                self.authentication.dns_timeout_secs,
                60,
            ),
        ] {
            if secs > max {
                problems.push(format!("{key}: {secs} seconds is too long (at most {max})"));
            }
        }
        if self.admin.session_max_minutes < self.admin.session_minutes {
            problems.push(format!(
                "admin.session_max_minutes: {} is shorter than admin.session_minutes ({})",
                self.admin.session_max_minutes, self.admin.session_minutes
            ));
        }
        let max_mem = self.plugins.max_memory_mb;
        if !(1..=4096).contains(&max_mem) {
            problems.push(format!(
                "plugins.max_memory_mb: {max_mem} is out of range (1 to 4096)"
            ));
        }
        if !(1..=64).contains(&self.plugins.threads) {
            problems.push(format!(
                "plugins.threads: {} is out of range (1 to 64)",
                self.plugins.threads
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
            for d in &settings.read_dirs {
                if !d.is_absolute() {
                    problems.push(format!(
                        "plugin.{name}.read_dirs: {} must be an absolute path",
                        d.display()
                    ));
                } else if !d.is_dir() {
                    problems.push(format!(
                        "plugin.{name}.read_dirs: {} is not a directory",
                        d.display()
                    ));
                }
            }
            for d in &settings.domains {
                if d.is_empty() || d.contains(['@', ' ', '[']) || d.ends_with('.') {
                    problems.push(format!("plugin.{name}.domains: {d:?} is not a domain name"));
                }
            }
            if let Some(sha) = &settings.sha256
                && (sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                problems.push(format!(
                    "plugin.{name}.sha256: expected 64 hexadecimal digits, found {sha:?}"
                ));
            }
            if settings.required && settings.sha256.is_none() {
                problems.push(format!(
                    "plugin.{name}.required: a required plugin must be pinned: set plugin.{name}.sha256 to its file's SHA-256"
                ));
            }
        }
        if let Some(r) = &self.plugins.resolver
            && resolver_addr(r).is_none()
        {
            problems.push(format!(
                "plugins.resolver: {r:?} is not an IP address or ip:port"
            ));
        }
        if !(1..=1 << 20).contains(&self.store.max_mb) {
            problems.push(format!(
                "store.max_mb: {} is out of range (1 to 1048576)",
                self.store.max_mb
            ));
        }
        if !(1..=65_536).contains(&self.store.cache_mb) {
            problems.push(format!(
                "store.cache_mb: {} is out of range (1 to 65536)",
                self.store.cache_mb
            ));
        }
        for (key, value) in [
            (
                "dns_lookups_per_transaction",
                self.plugins.dns_lookups_per_transaction,
            ),
            (
                "dns_lookups_per_second",
                self.plugins.dns_lookups_per_second,
            ),
        ] {
            if !(1..=100_000).contains(&value) {
                problems.push(format!(
                    "plugins.{key}: {value} is out of range (1 to 100000)"
                ));
            }
        }
        if !(1..=30_000).contains(&self.plugins.dns_timeout_ms) {
            problems.push(format!(
                "plugins.dns_timeout_ms: {} is out of range (1 to 30000)",
                self.plugins.dns_timeout_ms
            ));
        }
        if let Some(url) = &self.store.url {
            if url.starts_with("redis+sentinel://") {
                if let Err(e) = crate::store::sentinel::parse(url) {
                    problems.push(format!(
                        "store.url: {:?}: {e}",
                        crate::store::redis::redact(url)
                    ));
                }
            } else if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                problems.push(format!(
                    "store.url: {:?} is not a redis://, rediss:// or redis+sentinel:// URL",
                    crate::store::redis::redact(url)
                ));
            }
        }
        if let Some(ca) = &self.store.ca_file {
            if !ca.is_file() {
                problems.push(format!("store.ca_file: {} is not a file", ca.display()));
            } else if !self
                .store
                .url
                .as_deref()
                .is_some_and(|u| u.starts_with("rediss://"))
            {
                problems
                    .push("store.ca_file: only used with a rediss:// store.url (TLS)".to_string());
            }
        }
        if !(10..=60_000).contains(&self.store.flush_interval_ms) {
            problems.push(format!(
                "store.flush_interval_ms: {} is out of range (10 to 60000)",
                self.store.flush_interval_ms
            ));
        }
        if self.plugins.rescan_secs == 0 {
            problems.push("plugins.rescan_secs: must be at least 1".to_string());
        }
        if self.plugins.cooldown_after_failures == 0 || self.plugins.cooldown_secs == 0 {
            problems.push(
                "plugins.cooldown_after_failures and plugins.cooldown_secs: must be at least 1"
                    .to_string(),
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for name in &self.plugins.order {
            if !seen.insert(name) {
                problems.push(format!("plugins.order: {name:?} is listed twice"));
            }
        }
        let s = &self.scoring;
        let mut thresholds = |at: &str, spam: f64, quarantine: Option<f64>, reject: Option<f64>| {
            if !spam.is_finite() {
                problems.push(format!("{at}spam_threshold: must be a finite number"));
            }
            for (key, v) in [
                ("quarantine_threshold", quarantine),
                ("reject_threshold", reject),
            ] {
                if let Some(v) = v
                    && (!v.is_finite() || v < spam)
                {
                    problems.push(format!(
                        "{at}{key}: {v} must be a number not below {at}spam_threshold ({spam})"
                    ));
                }
            }
            if let (Some(q), Some(r)) = (quarantine, reject)
                && q > r
            {
                problems.push(format!(
                    "{at}quarantine_threshold: {q} is above {at}reject_threshold ({r}): nothing could be quarantined"
                ));
            }
        };
        thresholds(
            "scoring.",
            s.spam_threshold,
            s.quarantine_threshold,
            s.reject_threshold,
        );
        for (i, o) in s.overrides.iter().enumerate() {
            let at = format!("scoring.override[{i}].");
            thresholds(
                &at,
                o.spam_threshold.unwrap_or(s.spam_threshold),
                o.quarantine_threshold.or(s.quarantine_threshold),
                o.reject_threshold.or(s.reject_threshold),
            );
        }
        for (i, o) in s.overrides.iter().enumerate() {
            if o.listeners.is_empty() && o.domains.is_empty() {
                problems.push(format!(
                    "scoring.override[{i}]: name the listeners or domains it is for"
                ));
            }
            for l in &o.listeners {
                if !["smtp", "submission", "smtps", "milter"].contains(&l.as_str()) {
                    problems.push(format!(
                        "scoring.override[{i}].listeners: {l:?} is not a listener kind (smtp, submission, smtps, milter)"
                    ));
                }
            }
        }
        for (i, l) in self.listeners.iter().enumerate() {
            let kind = l.kind.as_str();
            match (&l.address, &l.socket) {
                (None, None) => problems.push(format!(
                    "listener[{i}] ({kind}): set address (host:port){}",
                    if l.kind == ListenerKind::Milter {
                        " or socket (a path)"
                    } else {
                        ""
                    }
                )),
                (Some(_), Some(_)) => problems.push(format!(
                    "listener[{i}] ({kind}): set address or socket, not both"
                )),
                (None, Some(_)) if l.kind != ListenerKind::Milter => problems.push(format!(
                    "listener[{i}].socket: only a milter listener takes a Unix socket"
                )),
                _ => {}
            }
            if l.allow_from.is_some() && !(l.kind == ListenerKind::Milter && l.socket.is_none()) {
                problems.push(format!(
                    "listener[{i}].allow_from: only a milter listener on a TCP address takes an allow-list (a Unix socket's peers are set by its socket_mode)"
                ));
            }
            if let Some(m) = &l.socket_mode
                && u32::from_str_radix(m.trim_start_matches("0o"), 8).map_or(true, |v| v > 0o777)
            {
                problems.push(format!(
                    "listener[{i}].socket_mode: {m:?} is not an octal mode such as \"0660\""
                ));
            }
            let same = self.listeners.iter().skip(i + 1).any(|o| {
                o.enabled
                    && l.enabled
                    && ((o.address.is_some()
                        && o.address == l.address
                        && l.address.is_some_and(|a| a.port() != 0))
                        || (o.socket.is_some() && o.socket == l.socket))
            });
            if same {
                problems.push(format!(
                    "listener: {} is used twice",
                    l.address
                        .map(|a| a.to_string())
                        .or_else(|| l.socket.as_ref().map(|p| p.display().to_string()))
                        .unwrap_or_default()
                ));
            }
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            problems.push("tls: set both cert and key, or neither".to_string());
        }
        for (key, path) in [("tls.cert", &self.tls.cert), ("tls.key", &self.tls.key)] {
            if let Some(p) = path
                && !p.is_file()
            {
                problems.push(format!("{key}: {} is not a readable file", p.display()));
            }
        }
        for d in &self.relay.local_domains {
            if d.is_empty() || d.contains(['@', ' ', '[']) || d.ends_with('.') {
                problems.push(format!("relay.local_domains: {d:?} is not a domain name"));
            }
        }
        let l = &self.limits;
        for (key, v) in [
            ("limits.max_message_size", l.max_message_size),
            ("limits.max_recipients", l.max_recipients),
            ("limits.max_connections", l.max_connections),
            ("limits.max_connections_per_ip", l.max_connections_per_ip),
            ("limits.max_received", l.max_received),
        ] {
            if v == 0 {
                problems.push(format!("{key}: must be at least 1"));
            }
        }
        for (key, v) in [
            ("limits.command_timeout_secs", l.command_timeout_secs),
            ("limits.data_timeout_secs", l.data_timeout_secs),
            ("limits.max_session_secs", l.max_session_secs),
            ("limits.auth_lockout_secs", l.auth_lockout_secs),
            (
                "limits.auth_lockout_failures",
                u64::from(l.auth_lockout_failures),
            ),
        ] {
            if v == 0 {
                problems.push(format!("{key}: must be at least 1"));
            }
        }
        if !(1..=128).contains(&l.ipv6_prefix_len) {
            problems.push(format!(
                "limits.ipv6_prefix_len: {} is not a prefix length (1 to 128)",
                l.ipv6_prefix_len
            ));
        }
        for (i, r) in self.routes.iter().enumerate() {
            if r.domains.is_empty() {
                problems.push(format!(
                    "route[{i}].domains: list at least one domain, or \"*\""
                ));
            }
            match (r.kind, &r.host, &r.socket) {
                (RouteKind::Smtp, None, _) => {
                    problems.push(format!("route[{i}].host: required for an smtp route"))
                }
                (RouteKind::Lmtp, None, None) => problems.push(format!(
                    "route[{i}]: an lmtp route needs host (host:port) or socket (a path)"
                )),
                (RouteKind::Lmtp, Some(_), Some(_)) => {
                    problems.push(format!("route[{i}]: set host or socket, not both"))
                }
                (RouteKind::Smtp | RouteKind::Lmtp, Some(h), _) if !h.contains(':') => {
                    problems.push(format!("route[{i}].host: {h:?} must be host:port"))
                }
                (RouteKind::Mx | RouteKind::Maildir, Some(_), _) => problems.push(format!(
                    "route[{i}].host: an {} route takes no host",
                    if r.kind == RouteKind::Mx {
                        "mx"
                    } else {
                        "maildir"
                    }
                )),
                (RouteKind::Smtp | RouteKind::Mx | RouteKind::Maildir, _, Some(_)) => problems
                    .push(format!(
                        "route[{i}].socket: only an lmtp route takes a socket"
                    )),
                _ => {}
            }
            if r.kind == RouteKind::Mx && r.port == 0 {
                problems.push(format!("route[{i}].port: must be a port number"));
            }
            if r.auth_user.is_some() != r.auth_password.is_some() {
                problems.push(format!(
                    "route[{i}]: set both auth_user and auth_password, or neither"
                ));
            }
            for (key, v) in [
                ("max_connections", r.max_connections.map(|n| n as u64)),
                (
                    "max_messages_per_connection",
                    r.max_messages_per_connection.map(u64::from),
                ),
                (
                    "max_messages_per_minute",
                    r.max_messages_per_minute.map(u64::from),
                ),
            ] {
                if v == Some(0) {
                    problems.push(format!(
                        "route[{i}].{key}: must be at least 1 (leave it out for the default)"
                    ));
                }
            }
            if r.auth_user.is_some() && r.tls != TlsPolicy::Required {
                problems.push(format!(
                    "route[{i}].tls: a route with auth_user sends its password, so it needs tls = \"required\" (a verified certificate); it is {:?}",
                    format!("{:?}", r.tls).to_lowercase()
                ));
            }
        }
        if let Some(w) = &self.webhook {
            if !w.url.starts_with("https://") {
                problems.push(format!("webhook.url: {:?} must be an https:// URL", w.url));
            }
            for e in &w.events {
                if !WEBHOOK_EVENTS.contains(&e.as_str()) {
                    problems.push(format!(
                        "webhook.events: {e:?} is not one of {}",
                        WEBHOOK_EVENTS.join(", ")
                    ));
                }
            }
            for (key, v, max) in [
                ("batch", w.batch as u64, 10_000),
                ("flush_ms", w.flush_ms, 60_000),
                ("max_backlog_mb", w.max_backlog_mb, 1 << 20),
                ("timeout_secs", w.timeout_secs, 300),
            ] {
                if v == 0 || v > max {
                    problems.push(format!("webhook.{key}: {v} is out of range (1 to {max})"));
                }
            }
            match w.secret() {
                Ok(s) if s.len() < 16 => problems.push(format!(
                    "webhook.secret_file {}: the secret is shorter than 16 bytes",
                    w.secret_file.display()
                )),
                Ok(_) => {}
                Err(e) => problems.push(e.to_string()),
            }
        }
        let junk = &self.delivery.junk_folder;
        if junk.starts_with('.')
            || junk
                .chars()
                .any(|c| c == '/' || c == '\\' || c.is_control())
            || junk.len() > 64
        {
            problems.push(format!(
                "delivery.junk_folder: {junk:?} must be a folder name (no '/', not starting with '.', at most 64 bytes), or empty for none"
            ));
        }
        if self.delivery.retry_secs.is_empty() || self.delivery.retry_secs.contains(&0) {
            problems.push(
                "delivery.retry_secs: list at least one delay, each at least 1 second".to_string(),
            );
        }
        for (key, v) in [
            ("delivery.timeout_secs", self.delivery.timeout_secs),
            (
                "delivery.connect_timeout_secs",
                self.delivery.connect_timeout_secs,
            ),
            (
                "delivery.greeting_timeout_secs",
                self.delivery.greeting_timeout_secs,
            ),
            (
                "delivery.data_timeout_secs",
                self.delivery.data_timeout_secs,
            ),
            ("delivery.concurrency", self.delivery.concurrency as u64),
            (
                "delivery.max_connections_per_destination",
                self.delivery.max_connections_per_destination as u64,
            ),
            (
                "delivery.delay_warning_secs",
                self.delivery.delay_warning_secs.unwrap_or(1),
            ),
        ] {
            if v == 0 {
                problems.push(format!("{key}: must be at least 1"));
            }
        }
        if let Some(r) = &self.delivery.resolver
            && resolver_addr(r).is_none()
        {
            problems.push(format!(
                "delivery.resolver: {r:?} is not an IP address or ip:port"
            ));
        }
        if let Some(r) = &self.authentication.resolver
            && resolver_addr(r).is_none()
        {
            problems.push(format!(
                "authentication.resolver: {r:?} is not an IP address or ip:port"
            ));
        }
        if self.authentication.dns_timeout_secs == 0 {
            problems.push("authentication.dns_timeout_secs: must be at least 1".to_string());
        }
        let mut signing = std::collections::BTreeSet::new();
        for k in &self.authentication.dkim_keys {
            if !signing.insert(k.domain.to_ascii_lowercase()) {
                problems.push(format!(
                    "authentication.dkim_key: two keys for {}; one key per domain",
                    k.domain
                ));
            }
            if k.selector.is_empty() || k.selector.contains(|c: char| c.is_whitespace() || c == ';')
            {
                problems.push(format!(
                    "authentication.dkim_key for {}: selector {:?} is not a DNS label",
                    k.domain, k.selector
                ));
            }
            if let Err(e) = crate::dkim_key::load(&k.key) {
                problems.push(format!(
                    "authentication.dkim_key for {}: {}: {e}",
                    k.domain,
                    k.key.display()
                ));
            }
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

    /// The listeners in force: the configured ones, or the built-in trio on 127.0.0.1.
    pub fn effective_listeners(&self) -> Vec<ListenerConfig> {
        if !self.listeners.is_empty() {
            return self
                .listeners
                .iter()
                .filter(|l| l.enabled)
                .cloned()
                .collect();
        }
        [
            (ListenerKind::Smtp, 2525),
            (ListenerKind::Submission, 2587),
            (ListenerKind::Smtps, 2465),
        ]
        .into_iter()
        .map(|(kind, port)| ListenerConfig {
            kind,
            address: Some(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
            socket: None,
            socket_mode: None,
            enabled: true,
            dmarc: DmarcMode::Record,
            allow_from: None,
        })
        .collect()
    }

    /// The Maildir root for local delivery.
    pub fn maildir(&self) -> PathBuf {
        self.delivery
            .maildir
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("maildir"))
    }

    /// The route for a recipient domain: the first route listing it, else the `*` route,
    /// else Maildir for local domains; `None` means no route.
    pub fn route_for(&self, domain: &str) -> Option<RouteConfig> {
        let listed = |r: &&RouteConfig| r.domains.iter().any(|d| d.eq_ignore_ascii_case(domain));
        let star = |r: &&RouteConfig| r.domains.iter().any(|d| d == "*");
        if let Some(r) = self.routes.iter().find(listed) {
            return Some(r.clone());
        }
        if self
            .relay
            .local_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
        {
            return Some(RouteConfig {
                domains: vec![domain.to_string()],
                kind: RouteKind::Maildir,
                host: None,
                socket: None,
                port: smtp_port(),
                tls: TlsPolicy::None,
                auth_user: None,
                auth_password: None,
                max_connections: None,
                max_messages_per_connection: None,
                max_messages_per_minute: None,
            });
        }
        self.routes.iter().find(star).cloned()
    }

    /// The credentials file.
    pub fn users_file(&self) -> PathBuf {
        self.auth
            .users_file
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("users"))
    }

    /// The console's administrators file.
    pub fn admins_file(&self) -> PathBuf {
        self.admin
            .users_file
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("admins"))
    }

    /// Where `sluice serve` writes its process id.
    pub fn pid_file(&self) -> PathBuf {
        self.server
            .pid_file
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("sluice.pid"))
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

    /// The embedded key-value store's file.
    pub fn store_path(&self) -> PathBuf {
        self.store
            .path
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("kv.redb"))
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
    if !(1..=100_000_000).contains(&l.kv_max_keys) {
        problems.push(format!(
            "{key}.kv_max_keys: {} is out of range (1 to 100000000)",
            l.kv_max_keys
        ));
    }
    if !(1024..=1 << 40).contains(&l.kv_max_bytes) {
        problems.push(format!(
            "{key}.kv_max_bytes: {} is out of range (1024 to 1 TiB)",
            l.kv_max_bytes
        ));
    }
    if !(1..=crate::store::MAX_TTL_SECS).contains(&l.kv_max_ttl_secs) {
        problems.push(format!(
            "{key}.kv_max_ttl_secs: {} is out of range (1 to {}, 90 days)",
            l.kv_max_ttl_secs,
            crate::store::MAX_TTL_SECS
        ));
    }
    if !(1..=10_000).contains(&l.kv_ops_per_call) {
        problems.push(format!(
            "{key}.kv_ops_per_call: {} is out of range (1 to 10000)",
            l.kv_ops_per_call
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
    fn the_sample_production_configuration_is_valid_but_for_host_paths() {
        let text = include_str!("../deploy/production.toml");
        let c = Config::parse(text).expect("production.toml parses");
        assert_eq!(c.effective_listeners().len(), 6);
        assert!(c.route_for("example.org").is_some());
        assert!(c.route_for("gmail.com").is_some());
        // Only the paths that exist on a real mail host may be missing here.
        match c.validate() {
            Ok(()) => {}
            Err(ConfigError::Invalid { problems, .. }) => {
                for p in &problems {
                    assert!(
                        p.starts_with("tls.cert:")
                            || p.starts_with("tls.key:")
                            || p.starts_with("plugin.recipient-validation.read_dirs:")
                            || p.starts_with("authentication.dkim_key for example.org: /etc/"),
                        "{p}"
                    );
                }
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_sample_milter_configuration_is_valid_but_for_host_paths() {
        let c = Config::parse(include_str!("../deploy/postfix-milter.toml"))
            .expect("postfix-milter.toml parses");
        let kinds: Vec<ListenerKind> = c.effective_listeners().iter().map(|l| l.kind).collect();
        assert_eq!(kinds, [ListenerKind::Milter]);
        match c.validate() {
            Ok(()) => {}
            Err(ConfigError::Invalid { problems, .. }) => {
                for p in &problems {
                    assert!(
                        p.starts_with("plugin.recipient-validation.read_dirs:"),
                        "{p}"
                    );
                }
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn listeners_need_an_address_or_for_a_milter_a_socket() {
        let c = Config::parse(
            r#"
            [[listener]]
            kind = "smtp"
            [[listener]]
            kind = "smtp"
            socket = "/run/x.sock"
            [[listener]]
            kind = "milter"
            address = "127.0.0.1:8891"
            socket = "/run/m.sock"
            [[listener]]
            kind = "milter"
            socket = "/run/m.sock"
            socket_mode = "0999"
            "#,
        )
        .unwrap();
        let msg = c.validate().unwrap_err().to_string();
        for want in [
            "listener[0] (smtp): set address (host:port)",
            "listener[1].socket: only a milter listener takes a Unix socket",
            "listener[2] (milter): set address or socket, not both",
            "listener[3].socket_mode: \"0999\" is not an octal mode",
        ] {
            assert!(msg.contains(want), "missing {want:?} in:\n{msg}");
        }
    }

    #[test]
    fn default_is_valid() {
        Config::default()
            .validate()
            .expect("built-in default must validate");
    }

    #[test]
    fn unknown_keys_are_refused_all_at_once() {
        let e = Config::parse("[plugins]\nbogus = 1\n").expect_err("unknown key");
        assert_eq!(e, "unknown key `plugins.bogus`");
        let e = Config::parse("[server]\nhostnam = \"x\"\n[limits]\nmax_size = 1\n[plugin.a]\ntimeout = 1\n[plugin.a.config]\nanything = 1\n")
            .expect_err("unknown keys");
        assert_eq!(
            e,
            "unknown keys `server.hostnam`, `limits.max_size`, `plugin.a.timeout`"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let c = Config::parse(
            r#"
            [plugins]
            threads = 0
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
            "plugins.threads: 0 is out of range (1 to 64)",
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
    fn store_and_capability_problems_name_their_keys() {
        let c = Config::parse(
            r#"
            [plugins]
            resolver = "dns.example"
            dns_timeout_ms = 0
            [plugin.grey]
            capabilities = ["kv"]
            kv_ops_per_call = 0
            [store]
            url = "http://:secret@10.0.0.1/"
            flush_interval_ms = 1
            "#,
        )
        .unwrap();
        let msg = c.validate().unwrap_err().to_string();
        for want in [
            "plugins.resolver: \"dns.example\" is not an IP address or ip:port",
            "plugins.dns_timeout_ms: 0 is out of range",
            "plugin.grey.kv_ops_per_call: 0 is out of range (1 to 10000)",
            "store.url: \"http://:***@10.0.0.1/\" is not a redis://, rediss:// or redis+sentinel:// URL",
            "store.flush_interval_ms: 1 is out of range (10 to 60000)",
        ] {
            assert!(msg.contains(want), "missing {want:?} in:\n{msg}");
        }
        assert!(
            !msg.contains("secret"),
            "the password reached the message: {msg}"
        );
        let err = Config::parse("[plugin.p]\ncapabilities = [\"net\"]\n")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("unknown variant `net`, expected `kv` or `dns`"),
            "{err}"
        );
    }

    #[test]
    fn route_problems_name_the_route_and_key() {
        let c = Config::parse(
            r#"
            [delivery]
            resolver = "dns.example"
            concurrency = 0
            [[route]]
            domains = ["a.test"]
            kind = "mx"
            host = "mx.a.test:25"
            [[route]]
            domains = ["b.test"]
            kind = "lmtp"
            [[route]]
            domains = ["c.test"]
            kind = "smtp"
            host = "hop.test:25"
            socket = "/run/x.sock"
            "#,
        )
        .unwrap();
        let msg = c.validate().unwrap_err().to_string();
        for want in [
            "delivery.resolver: \"dns.example\" is not an IP address or ip:port",
            "delivery.concurrency: must be at least 1",
            "route[0].host: an mx route takes no host",
            "route[1]: an lmtp route needs host (host:port) or socket (a path)",
            "route[2].socket: only an lmtp route takes a socket",
        ] {
            assert!(msg.contains(want), "missing {want:?} in:\n{msg}");
        }
    }

    #[test]
    fn hardening_settings_are_checked() {
        let c = Config::parse(
            r#"
            [limits]
            ipv6_prefix_len = 0
            max_session_secs = 0
            max_received = 0
            [plugin.guard]
            required = true
            [[route]]
            domains = ["d.test"]
            kind = "smtp"
            host = "hop.test:587"
            auth_user = "relay"
            auth_password = "secret"
            "#,
        )
        .unwrap();
        let msg = c.validate().unwrap_err().to_string();
        for want in [
            "limits.ipv6_prefix_len: 0 is not a prefix length (1 to 128)",
            "limits.max_session_secs: must be at least 1",
            "limits.max_received: must be at least 1",
            "plugin.guard.required: a required plugin must be pinned",
            "route[0].tls: a route with auth_user sends its password, so it needs tls = \"required\"",
            "it is \"opportunistic\"",
        ] {
            assert!(msg.contains(want), "missing {want:?} in:\n{msg}");
        }
    }

    #[test]
    fn plugin_limits_fall_back_field_by_field() {
        let c = Config::parse("[plugin.a]\ntimeout_ms = 50\non_failure = \"continue\"\n").unwrap();
        let l = c.plugin_settings("a").limits(&c.plugins.defaults);
        assert_eq!(l.timeout_ms, 50);
        assert_eq!(l.memory_mb, 64);
        assert_eq!(l.on_failure, FailurePolicy::Continue);
    }

    #[test]
    fn every_duration_has_a_ceiling() {
        for (toml, key) in [
            (
                "[admin]\nlockout_minutes = 1000000000000\n",
                "admin.lockout_minutes",
            ),
            (
                "[delivery]\ntimeout_secs = 99999999\n",
                "delivery.timeout_secs",
            ),
            (
                "[limits]\nauth_lockout_secs = 99999999999\n",
                "limits.auth_lockout_secs",
            ),
            (
                "[delivery]\nretry_secs = [60, 999999999]\n",
                "delivery.retry_secs",
            ),
        ] {
            let e = Config::parse(toml)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains("too long"), "{toml}: {e}");
        }
    }
}
