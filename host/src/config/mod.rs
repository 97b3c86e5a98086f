//! The operator's configuration: one TOML file, typed with serde, then validated as a whole so
//! that every problem is reported at once, each naming its key. Unknown keys are refused —
//! all of them in one message: they are collected with `serde_ignored` rather than stopping
//! at the first (as `deny_unknown_fields` would). A plugin's own `config` table is the
//! plugin's to check, in its `validate-config`.
//!
//! Without a file Sluice runs on [`Config::default`], the built-in development configuration.
//! This module only parses and validates; it opens no sockets and loads no plugins.
//!
//! May use: serde and the few parsers its checks need (store URLs, DKIM keys, the trusted
//! public keys of signed plugins in [`signing`]); everything else uses it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod admin;
mod capture;
mod delivery;
mod limits;
mod plugins;
mod relay;
mod reports;
mod scoring;
mod sender_auth;
mod server;
pub mod signing;
mod store;
mod tls;

pub use admin::{AdminConfig, MetricsConfig, WEBHOOK_EVENTS, WebhookConfig};
pub use capture::{CAPTURE_VERDICTS, CaptureConfig};
pub use delivery::{DeliveryConfig, PolicyUse, RouteConfig, RouteKind, TlsPolicy};
pub use limits::LimitsConfig;
pub use plugins::{
    Capability, FailurePolicy, PluginLimits, PluginSettings, PluginsConfig, valid_plugin_name,
};
pub use relay::{AuthConfig, RelayConfig};
pub use reports::ReportsConfig;
pub use scoring::{
    AuthenticatedScoring, LearningConfig, ScoringConfig, ScoringOverride, Thresholds,
};
pub use sender_auth::{ArcSealConfig, AuthenticationConfig, DkimKeyConfig, DmarcMode, UnownedFrom};
pub use server::{ListenerConfig, ListenerKind, ServerConfig};
pub use signing::{SigningPolicy, TrustedKey};
pub use store::StoreConfig;
pub use tls::{AcmeChallenge, AcmeConfig, CertificateConfig, TlsConfig};

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
    /// Transactions recorded for exact replay (off unless `enabled`).
    pub capture: CaptureConfig,
    /// Aggregate reports to the domains that ask for them (TLS reports).
    pub reports: ReportsConfig,
    /// The file this was read from, for error messages; `None` for the built-in default.
    #[serde(skip)]
    pub source: Option<PathBuf>,
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
    /// The built-in configuration (`host/src/config/default.toml`), used when no file is given.
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

    /// Checks every value, collecting all problems: each area checks its own keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Problems::default();
        self.server.validate(&mut p);
        server::validate_listeners(&self.listeners, &mut p);
        let smtps = self
            .effective_listeners()
            .iter()
            .any(|l| l.kind == ListenerKind::Smtps);
        self.tls.validate(&mut p, smtps);
        self.relay.validate(&mut p);
        self.limits.validate(&mut p);
        plugins::validate(&self.plugins, &self.plugin, &mut p);
        self.scoring.validate(&mut p);
        self.learning.validate(&mut p);
        self.store.validate(&mut p);
        self.capture.validate(&mut p);
        self.reports.validate(&mut p);
        self.delivery.validate(&mut p);
        delivery::validate_routes(&self.routes, &mut p);
        self.authentication.validate(&mut p);
        admin::validate(&self.admin, &self.metrics, self.webhook.as_ref(), &mut p);
        if p.0.is_empty() {
            return Ok(());
        }
        Err(ConfigError::Invalid {
            file: self
                .source
                .clone()
                .unwrap_or_else(|| PathBuf::from("<built-in>")),
            problems: p.0,
        })
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
            proxy_protocol: false,
            proxy_trusted: Vec::new(),
            proxy_timeout_secs: 5,
        })
        .collect()
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
                port: 25,
                tls: TlsPolicy::None,
                mta_sts: Default::default(),
                dane: Default::default(),
                auth_user: None,
                auth_password: None,
                max_connections: None,
                max_messages_per_connection: None,
                max_messages_per_minute: None,
            });
        }
        self.routes.iter().find(star).cloned()
    }

    /// The files and directories that default to the data directory.
    pub fn paths(&self) -> DataPaths {
        let in_data_dir = |set: &Option<PathBuf>, default: &str| {
            set.clone()
                .unwrap_or_else(|| self.server.data_dir.join(default))
        };
        DataPaths {
            users_file: in_data_dir(&self.auth.users_file, "users"),
            admins_file: in_data_dir(&self.admin.users_file, "admins"),
            pid_file: in_data_dir(&self.server.pid_file, "sluice.pid"),
            plugin_dir: in_data_dir(&self.plugins.dir, "plugins"),
            cache_dir: in_data_dir(&self.plugins.cache_dir, "cache"),
            store_path: in_data_dir(&self.store.path, "kv.redb"),
            maildir: in_data_dir(&self.delivery.maildir, "maildir"),
            capture_dir: in_data_dir(&self.capture.dir, "capture"),
        }
    }

    /// Settings of plugin `name` (empty settings when the file has none).
    pub fn plugin_settings(&self, name: &str) -> PluginSettings {
        let mut settings = self.plugin.get(name).cloned().unwrap_or_default();
        settings.signing = self.plugins.signing_policy();
        settings
    }
}

/// The files and directories whose settings default to a name in `server.data_dir`.
#[derive(Debug, Clone)]
pub struct DataPaths {
    /// The SMTP AUTH credentials file (`auth.users_file`; `users`).
    pub users_file: PathBuf,
    /// The console's administrators file (`admin.users_file`; `admins`).
    pub admins_file: PathBuf,
    /// Where `sluice serve` writes its process id (`server.pid_file`; `sluice.pid`).
    pub pid_file: PathBuf,
    /// The plugin directory (`plugins.dir`; `plugins`).
    pub plugin_dir: PathBuf,
    /// The compile cache directory (`plugins.cache_dir`; `cache`).
    pub cache_dir: PathBuf,
    /// The embedded key-value store's file (`store.path`; `kv.redb`).
    pub store_path: PathBuf,
    /// The Maildir root for local delivery (`delivery.maildir`; `maildir`).
    pub maildir: PathBuf,
    /// Where capture records go (`capture.dir`; `capture`).
    pub capture_dir: PathBuf,
}

/// A day in seconds, the unit of the longer ceilings.
const DAY: u64 = 24 * 3600;

/// The problems found while validating, each a line that names its key first
/// (`route[2].host: "mx" must be host:port`). Every area adds to the same list, so that all
/// problems are reported at once.
#[derive(Debug, Default)]
pub struct Problems(Vec<String>);

impl Problems {
    /// Records `key: problem`.
    pub fn add(&mut self, key: impl fmt::Display, problem: impl fmt::Display) {
        self.0.push(format!("{key}: {problem}"));
    }

    /// `key: VALUE is out of range (LO to HI)`, unless `lo <= value <= hi`.
    pub fn range<T: PartialOrd + fmt::Display>(
        &mut self,
        key: impl fmt::Display,
        value: T,
        lo: T,
        hi: T,
    ) {
        if value < lo || value > hi {
            self.add(key, format_args!("{value} is out of range ({lo} to {hi})"));
        }
    }

    /// `key: must be at least 1`, for a count or a duration that may not be zero.
    pub fn nonzero(&mut self, key: impl fmt::Display, value: u64) {
        if value == 0 {
            self.add(key, "must be at least 1");
        }
    }

    /// A duration's ceiling: a huge one overflows when it becomes a time, or makes a
    /// lock-out or a timeout last for ever.
    pub fn at_most_secs(&mut self, key: impl fmt::Display, secs: u64, max: u64) {
        if secs > max {
            self.add(
                key,
                format_args!("{secs} seconds is too long (at most {max})"),
            );
        }
    }

    /// A DNS resolver's address: an IP address, or `ip:port`.
    pub fn resolver(&mut self, key: impl fmt::Display, value: Option<&str>) {
        if let Some(r) = value
            && resolver_addr(r).is_none()
        {
            self.add(key, format_args!("{r:?} is not an IP address or ip:port"));
        }
    }

    /// `key: "VALUE" is not one of A, B, …`, for each value of `values` not in `allowed`.
    pub fn one_of(&mut self, key: &str, values: &[String], allowed: &[&str]) {
        for v in values {
            if !allowed.contains(&v.as_str()) {
                self.add(
                    key,
                    format_args!("{v:?} is not one of {}", allowed.join(", ")),
                );
            }
        }
    }

    /// A list of domain names (no `@`, spaces, brackets or trailing dot).
    pub fn domains(&mut self, key: &str, domains: &[String]) {
        for d in domains {
            if d.is_empty() || d.contains(['@', ' ', '[']) || d.ends_with('.') {
                self.add(key, format_args!("{d:?} is not a domain name"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The problems `validate` reports for `toml`, as the error prints them.
    pub(super) fn problems_of(toml: &str) -> String {
        let c = Config::parse(toml).unwrap();
        c.validate().unwrap_err().to_string()
    }

    /// Asserts that `msg` names every one of `wants`.
    #[track_caller]
    pub(super) fn says_all(msg: &str, wants: &[&str]) {
        for want in wants {
            assert!(msg.contains(want), "missing {want:?} in:\n{msg}");
        }
    }

    /// Asserts that `c` is valid but for problems that start with one of `allowed` (paths
    /// of the host the sample was written for).
    #[track_caller]
    fn only_host_path_problems(c: &Config, allowed: &[&str]) {
        match c.validate() {
            Ok(()) => {}
            Err(ConfigError::Invalid { problems, .. }) => {
                for p in &problems {
                    assert!(allowed.iter().any(|a| p.starts_with(a)), "{p}");
                }
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn proxy_protocol_mistakes_are_named_by_key() {
        let msg = problems_of(
            "[[listener]]\nkind = \"smtp\"\naddress = \"127.0.0.1:25\"\nproxy_protocol = true\n\
             [[listener]]\nkind = \"submission\"\naddress = \"127.0.0.1:587\"\nproxy_trusted = [\"10.0.0.0/8\"]\nproxy_timeout_secs = 0\n\
             [[listener]]\nkind = \"milter\"\naddress = \"127.0.0.1:8891\"\nproxy_protocol = true\nproxy_trusted = [\"10.0.0.5/32\"]\n",
        );
        says_all(
            &msg,
            &[
                "listener[0].proxy_trusted: list the load balancers",
                "listener[1].proxy_trusted: has no effect without proxy_protocol = true",
                "listener[1].proxy_timeout_secs: 0 is out of range (1 to 300)",
                "listener[2].proxy_protocol: only SMTP listeners",
            ],
        );
        assert!(
            Config::parse("[[listener]]\nkind = \"smtp\"\nproxy_trusted = [\"nope\"]\n").is_err()
        );
    }

    #[test]
    fn certificate_mistakes_are_named_by_key() {
        let msg = problems_of(
            "[tls]\nreload_check_secs = 100000\n\
             [[tls.certificate]]\nnames = []\ncert = \"/nonexistent.crt\"\nkey = \"/nonexistent.key\"\ndefault = true\n\
             [[tls.certificate]]\nnames = [\"mx.example.org\", \"*.*.example\", \"a..b\"]\ncert = \"/nonexistent.crt\"\nkey = \"/nonexistent.key\"\ndefault = true\n",
        );
        says_all(
            &msg,
            &[
                "tls.certificate[0].cert: /nonexistent.crt is not a readable file",
                "tls.certificate[0].key: /nonexistent.key is not a readable file",
                "tls.certificate[0].names: list the names",
                "tls.certificate[1].names: \"*.*.example\" is not a host name or *.domain",
                "tls.certificate[1].names: \"a..b\" is not a host name",
                "tls.certificate: more than one certificate says default = true",
                "tls.reload_check_secs: 100000 seconds is too long",
            ],
        );
    }

    #[test]
    fn capture_mistakes_are_named_by_key() {
        let msg = problems_of(
            "[capture]\nenabled = true\nsample = 2.0\nverdicts = [\"rejected\"]\ndomains = [\"a@b.example\"]\nmax_records = 0\nmax_mb = 0\n",
        );
        says_all(
            &msg,
            &[
                "capture.sample: 2 is not a share between 0 and 1",
                "capture.verdicts: \"rejected\" is not one of continue, accept, reject",
                "capture.domains: \"a@b.example\" is not a domain name",
                "capture.max_records: 0 is out of range (1 to 1000000)",
                "capture.max_mb: 0 is out of range",
            ],
        );
        let unknown = Config::parse("[capture]\nkeep = 3\n").unwrap_err();
        assert!(unknown.contains("capture.keep"), "{unknown}");
    }

    #[test]
    fn the_sample_production_configuration_is_valid_but_for_host_paths() {
        let text = include_str!("../../deploy/production.toml");
        let c = Config::parse(text).expect("production.toml parses");
        assert_eq!(c.effective_listeners().len(), 6);
        assert!(c.route_for("example.org").is_some());
        assert!(c.route_for("gmail.com").is_some());
        // Only the paths that exist on a real mail host may be missing here.
        only_host_path_problems(
            &c,
            &[
                "tls.cert:",
                "tls.key:",
                "plugin.recipient-validation.read_dirs:",
                "authentication.dkim_key for example.org: /etc/",
            ],
        );
    }

    #[test]
    fn the_sample_milter_configuration_is_valid_but_for_host_paths() {
        let c = Config::parse(include_str!("../../deploy/postfix-milter.toml"))
            .expect("postfix-milter.toml parses");
        let kinds: Vec<ListenerKind> = c.effective_listeners().iter().map(|l| l.kind).collect();
        assert_eq!(kinds, [ListenerKind::Milter]);
        only_host_path_problems(&c, &["plugin.recipient-validation.read_dirs:"]);
    }

    #[test]
    fn listeners_need_an_address_or_for_a_milter_a_socket() {
        let msg = problems_of(
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
        );
        says_all(
            &msg,
            &[
                "listener[0] (smtp): set address (host:port)",
                "listener[1].socket: only a milter listener takes a Unix socket",
                "listener[2] (milter): set address or socket, not both",
                "listener[3].socket_mode: \"0999\" is not an octal mode",
            ],
        );
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
        let msg = problems_of(
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
        );
        says_all(
            &msg,
            &[
                "plugins.threads: 0 is out of range (1 to 64)",
                "plugins.defaults.timeout_ms",
                "plugin.spam.timeout_ms",
                "plugin.spam.memory_mb",
                "plugin.spam.sha256",
                "scoring.reject_threshold",
            ],
        );
        assert!(msg.starts_with("<built-in>: "), "{msg}");
    }

    #[test]
    fn signing_problems_name_their_keys() {
        let msg = problems_of(
            r#"
            [plugins]
            require_signature = true
            trusted_keys = ["ssh-ed25519 AAAA alice"]
            "#,
        );
        says_all(&msg, &["plugins.trusted_keys[0]: expected ed25519:BASE64"]);
        let msg = problems_of("[plugins]\nrequire_signature = true\n");
        says_all(
            &msg,
            &[
                "plugins.require_signature: no plugin could load: add the signers' public keys to plugins.trusted_keys",
            ],
        );
    }

    #[test]
    fn store_and_capability_problems_name_their_keys() {
        let msg = problems_of(
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
        );
        says_all(
            &msg,
            &[
                "plugins.resolver: \"dns.example\" is not an IP address or ip:port",
                "plugins.dns_timeout_ms: 0 is out of range",
                "plugin.grey.kv_ops_per_call: 0 is out of range (1 to 10000)",
                "store.url: \"http://:***@10.0.0.1/\" is not a redis://, rediss:// or redis+sentinel:// URL",
                "store.flush_interval_ms: 1 is out of range (10 to 60000)",
            ],
        );
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
        let msg = problems_of(
            r#"
            [delivery]
            resolver = "dns.example"
            concurrency = 0
            mta_sts_port = 0
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
            mta_sts = "required"
            dane = "off"
            "#,
        );
        says_all(
            &msg,
            &[
                "delivery.resolver: \"dns.example\" is not an IP address or ip:port",
                "delivery.mta_sts_port: must be at least 1",
                "route[2].mta_sts: only an mx route looks up MTA-STS policies",
                "route[2].dane: only an mx route looks up TLSA records",
                "delivery.concurrency: must be at least 1",
                "route[0].host: an mx route takes no host",
                "route[1]: an lmtp route needs host (host:port) or socket (a path)",
                "route[2].socket: only an lmtp route takes a socket",
            ],
        );
    }

    #[test]
    fn hardening_settings_are_checked() {
        let msg = problems_of(
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
        );
        says_all(
            &msg,
            &[
                "limits.ipv6_prefix_len: 0 is not a prefix length (1 to 128)",
                "limits.max_session_secs: must be at least 1",
                "limits.max_received: must be at least 1",
                "plugin.guard.required: a required plugin must be pinned",
                "route[0].tls: a route with auth_user sends its password, so it needs tls = \"required\"",
                "it is \"opportunistic\"",
            ],
        );
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
