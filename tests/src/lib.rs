//! Test harness shared by Sluice's integration tests: where the built plugins are, a plugin
#![allow(clippy::unwrap_used)]
//! runtime with a persistent compile cache, and builders for sessions, envelopes and messages.
//!
//! Plugins are built from source by `scripts/build-plugins` (the test command runs it first);
//! nothing here builds or commits `.wasm` files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod browser;
pub mod ca;
pub mod dns;
pub mod dnssec;
pub mod milter_client;
pub mod peers;
pub mod serve;
pub mod sink;

use sluice::config::Config;
use sluice::envelope::{Client, Envelope, Recipient, Sender};
use sluice::pipeline::{LoadError, Pipeline};
use sluice::plugin::engine::PoolSize;
use sluice::plugin::{LoadedPlugin, Runtime};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The built plugin `name` of `kind` (`test`, `examples` or `bundled`).
pub fn plugin(kind: &str, name: &str) -> PathBuf {
    let path = workspace_root()
        .join("target/plugins")
        .join(kind)
        .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: build the plugins with scripts/build-plugins (scripts/test does)",
        path.display()
    );
    path
}

/// The `sluice` binary built by cargo for this test run.
pub fn sluice_bin() -> PathBuf {
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    target.join("debug/sluice")
}

/// A plugin runtime with a small pool and a compile cache kept across test runs (keyed by
/// engine and component hash, so always safe to reuse).
pub fn runtime() -> Runtime {
    Runtime::new(
        PoolSize {
            max_memory_bytes: 256 << 20,
            max_instances: 64,
            threads: 1,
        },
        &workspace_root().join("target/test-compile-cache"),
    )
    .expect("plugin runtime")
}

/// [`runtime`] with the store and resolver behind the `kv` and `dns` capabilities.
pub fn runtime_with(services: sluice::plugin::capabilities::Services) -> Runtime {
    runtime().with_services(services)
}

/// A scratch in-memory key-value store and a resolver asking `dns` (a loopback server).
pub fn scratch_services(
    dns: Option<std::net::SocketAddr>,
) -> sluice::plugin::capabilities::Services {
    use sluice::plugin::capabilities::{PluginDns, Services};
    Services {
        kv: Some(sluice::store::KvStore::Embedded(
            sluice::store::embedded::Embedded::in_memory().expect("in-memory store"),
        )),
        dns: Some(Arc::new(PluginDns::new(
            dns.map(|a| a.to_string()).as_deref(),
            std::time::Duration::from_millis(300),
        ))),
    }
}

/// Parses a configuration for tests; panics with the parser's message when invalid.
pub fn config(toml: &str) -> Config {
    let c = Config::parse(toml).expect("test configuration parses");
    c.validate().expect("test configuration is valid");
    c
}

/// Loads the given plugins (name, file) in order under `config`.
pub async fn pipeline(
    runtime: &Runtime,
    config: &Config,
    plugins: &[(&str, PathBuf)],
) -> Result<Pipeline, Vec<LoadError>> {
    let files: Vec<(String, PathBuf)> = plugins
        .iter()
        .map(|(n, p)| (n.to_string(), p.clone()))
        .collect();
    Pipeline::load_files(runtime, config, &files).await
}

/// Loads one plugin, returning the load error's text on failure.
pub async fn load_one(
    runtime: &Runtime,
    config: &Config,
    name: &str,
    file: &Path,
) -> Result<Arc<LoadedPlugin>, String> {
    sluice::plugin::loader::load(
        runtime,
        file,
        name,
        &config.plugin_settings(name),
        &config.plugins.defaults,
    )
    .await
    .map_err(|e| e.to_string())
}

/// A plain-text client from a documentation address, on the `test` listener.
pub fn client() -> Client {
    Client {
        listener: "test".into(),
        ip: [192, 0, 2, 7].into(),
        port: 50000,
        helo: "client.example".into(),
        esmtp: true,
        tls: None,
        auth_user: None,
        trusted: false,
    }
}

/// A sender without parameters.
pub fn sender(a: &str) -> Sender {
    Sender {
        address: a.into(),
        params: Vec::new(),
    }
}

/// A recipient without parameters.
pub fn rcpt(a: &str) -> Recipient {
    Recipient {
        address: a.into(),
        params: Vec::new(),
        discarded: false,
    }
}

/// An envelope.
pub fn envelope(from: &str, rcpts: &[&str]) -> Envelope {
    Envelope {
        sender: sender(from),
        recipients: rcpts.iter().map(|r| rcpt(r)).collect(),
    }
}

/// A small CRLF message with the given subject and body.
pub fn message(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: a@example.org\r\nTo: b@example.net\r\nSubject: {subject}\r\nMessage-ID: <t@example.org>\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// A Sluice server running in this process on 127.0.0.1 with ephemeral ports, a temporary
/// data directory, a self-signed certificate, local domains `example.org` and
/// `catchall.example.org`, and the user `alice` (password `wonderland`).
pub struct TestServer {
    /// The data directory (spool, maildir, certificate, users).
    pub dir: tempfile::TempDir,
    /// The smtp listener.
    pub smtp: std::net::SocketAddr,
    /// The submission listener.
    pub submission: std::net::SocketAddr,
    /// The smtps listener.
    pub smtps: std::net::SocketAddr,
    /// Every bound listener.
    pub listeners: Vec<(sluice::config::ListenerKind, std::net::SocketAddr)>,
    /// The web console, when `[admin] address` is set.
    pub admin: Option<std::net::SocketAddr>,
    /// The metrics endpoint, when `[metrics] address` is set.
    pub metrics: Option<std::net::SocketAddr>,
    server: Option<sluice::server::Server>,
}

impl TestServer {
    /// Starts a server with `extra` TOML appended to the base configuration and `plugins`
    /// (name, file) installed in its plugin directory in that order.
    pub async fn start(extra: &str, plugins: &[(&str, PathBuf)]) -> TestServer {
        TestServer::start_full("", extra, plugins).await
    }

    /// Like [`TestServer::start`], with `plugins_toml` added to the `[plugins]` table.
    pub async fn start_full(
        plugins_toml: &str,
        extra: &str,
        plugins: &[(&str, PathBuf)],
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let plugin_dir = dir.path().join("plugins");
        std::fs::create_dir_all(&plugin_dir).unwrap();
        for (i, (name, file)) in plugins.iter().enumerate() {
            std::fs::copy(file, plugin_dir.join(format!("{:02}-{name}.wasm", 10 + i))).unwrap();
        }
        // Sender authentication is off unless a test asks for it: it would ask the system's
        // DNS about every test sender (tests/it/authentication.rs runs its own DNS server).
        let auth_default = if extra.contains("[authentication]") {
            ""
        } else {
            "[authentication]\nverify = false\n"
        };
        // A test that sets its own `[relay]` table names its local domains there.
        let relay_default = if extra.contains("[relay]\n") {
            ""
        } else {
            "[relay]\nlocal_domains = [\"example.org\", \"catchall.example.org\"]\n"
        };
        let toml = format!(
            r#"
[server]
hostname = "mx.test"
data_dir = {data:?}

[plugins]
cache_dir = {cache:?}
max_instances = 64
rescan_secs = 1
{plugins_toml}

[[listener]]
kind = "smtp"
address = "127.0.0.1:0"
[[listener]]
kind = "submission"
address = "127.0.0.1:0"
[[listener]]
kind = "smtps"
address = "127.0.0.1:0"

{relay_default}
{auth_default}
{extra}
"#,
            data = dir.path(),
            cache = workspace_root().join("target/test-compile-cache"),
        );
        // Written to a file the configuration names as its source, as `sluice serve --config`
        // does: a reload (SIGHUP, the console's button) re-reads this file, not the built-in
        // configuration.
        let file = dir.path().join("sluice.toml");
        std::fs::write(&file, &toml).unwrap();
        let mut config = config(&toml);
        config.source = Some(file);
        sluice::smtp_auth::credentials::set_password(
            &config.paths().users_file,
            "alice",
            "wonderland",
        )
        .unwrap();
        let rt = runtime();
        let pipeline = Pipeline::load(&rt, &config)
            .await
            .unwrap_or_else(|e| panic!("plugins: {e:?}"));
        let ctx =
            sluice::server::context::context(config, pipeline, rt.clone()).expect("server context");
        let server = sluice::server::Server::start(Arc::new(ctx))
            .await
            .expect("server starts");
        use sluice::config::ListenerKind as K;
        TestServer {
            smtp: server.address(K::Smtp).unwrap(),
            submission: server.address(K::Submission).unwrap(),
            smtps: server.address(K::Smtps).unwrap(),
            listeners: server.listeners.clone(),
            admin: server.admin,
            metrics: server.metrics,
            server: Some(server),
            dir,
        }
    }

    /// Messages delivered to the Maildir of `user`, waiting (bounded: 10 s) until there are
    /// at least `n`.
    pub async fn mailbox(&self, user: &str, n: usize) -> Vec<String> {
        let new = self.dir.path().join("maildir").join(user).join("new");
        for _ in 0..200 {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&new)
                .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
                .unwrap_or_default();
            if files.len() >= n {
                files.sort();
                return files
                    .iter()
                    .map(|f| String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned())
                    .collect();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("{user} did not receive {n} message(s) within 10 s");
    }

    /// Waits (bounded: 10 s) until the spool queue holds no message: a delivered message
    /// leaves the queue just after its Maildir file appears.
    pub async fn queue_drained(&self) {
        for _ in 0..200 {
            if self.queued().is_empty() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the queue did not drain within 10 s");
    }

    /// Every message delivered to any mailbox or still in the spool (queue or quarantine).
    pub fn stored_count(&self) -> usize {
        let count = |p: PathBuf, spool: bool| {
            std::fs::read_dir(p)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .filter(|e| !spool || e.file_name().to_string_lossy().ends_with(".msg"))
                        .count()
                })
                .unwrap_or(0)
        };
        let maildir = self.dir.path().join("maildir");
        let delivered: usize = std::fs::read_dir(&maildir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| count(e.path().join("new"), false))
                    .sum()
            })
            .unwrap_or(0);
        delivered
            + count(self.dir.path().join("spool/queue"), true)
            + count(self.dir.path().join("spool/quarantine"), true)
    }

    /// The messages (as text) waiting in the spool queue.
    pub fn queued(&self) -> Vec<String> {
        let dir = self.dir.path().join("spool/queue");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|f| f.extension().is_some_and(|e| e == "msg"));
        files.sort();
        // A message delivered between the listing and the read is no longer queued.
        files
            .iter()
            .filter_map(|f| std::fs::read(f).ok())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .collect()
    }

    /// The running server's shared context (live configuration and plugins, reloads).
    pub fn ctx(&self) -> &Arc<sluice::server::context::ServerContext> {
        self.server.as_ref().expect("server running").context()
    }

    /// The names of the plugins in service now, in order.
    pub fn plugins_in_service(&self) -> Vec<String> {
        self.ctx()
            .live()
            .pipeline
            .plugins()
            .iter()
            .map(|p| p.name.clone())
            .collect()
    }

    /// Stops the server.
    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
    }
}

/// A line-level SMTP conversation over plain TCP, for exact protocol checks.
pub struct Conversation {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
}

impl Conversation {
    /// Connects and expects the 220 greeting.
    pub async fn connect(addr: std::net::SocketAddr) -> Conversation {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut c = Conversation {
            stream: tokio::io::BufReader::new(tcp),
        };
        c.expect("220 ").await;
        c
    }

    /// Sends raw bytes.
    pub async fn raw(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.get_mut().write_all(bytes).await.expect("write");
    }

    /// Sends one command line (CRLF added).
    pub async fn send(&mut self, line: &str) {
        self.raw(format!("{line}\r\n").as_bytes()).await;
    }

    /// Reads one whole reply (all its lines) within 10 s.
    pub async fn reply(&mut self) -> String {
        use tokio::io::AsyncBufReadExt;
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                self.stream.read_line(&mut line),
            )
            .await
            .expect("reply within 10 s")
            .expect("read");
            if n == 0 {
                return all;
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    /// Reads a reply and asserts that it starts with `prefix`; returns it.
    pub async fn expect(&mut self, prefix: &str) -> String {
        let r = self.reply().await;
        let last = r.lines().last().unwrap_or("");
        assert!(
            r.starts_with(prefix) || last.starts_with(prefix),
            "expected {prefix:?}, got {r:?}"
        );
        r
    }

    /// Sends EHLO, MAIL, RCPT and DATA (pipelined after EHLO) and expects them accepted;
    /// the message data comes next.
    pub async fn begin_data(&mut self, from: &str, rcpt: &str) {
        self.send("EHLO client.test").await;
        self.expect("250 ").await;
        self.begin_transaction(from, rcpt).await;
    }

    /// Sends MAIL, RCPT and DATA (pipelined) in a session already greeted, and expects them
    /// accepted; the message data comes next.
    pub async fn begin_transaction(&mut self, from: &str, rcpt: &str) {
        self.raw(format!("MAIL FROM:<{from}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n").as_bytes())
            .await;
        self.expect("250 2.1.0").await;
        self.expect("250 2.1.5").await;
        self.expect("354").await;
    }

    /// True when the server closed the connection (reads EOF within 10 s).
    pub async fn closed(&mut self) -> bool {
        self.reply().await.is_empty()
    }
}

/// Sends one message with `subject` and `body` from a@example.net to bob@example.org in a
/// connection of its own; returns the reply to the data (not asserted: callers decide).
pub async fn send_to_bob(addr: std::net::SocketAddr, subject: &str, body: &str) -> String {
    let mut c = Conversation::connect(addr).await;
    c.begin_data("a@example.net", "bob@example.org").await;
    c.raw(format!("Subject: {subject}\r\n\r\n{body}\r\n.\r\n").as_bytes())
        .await;
    let r = c.reply().await;
    c.send("QUIT").await;
    r
}

/// The files of a Maildir folder (e.g. `…/new`), in name order, read as text; none when the
/// folder does not exist yet.
pub fn maildir_files(dir: &Path) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .map(|f| String::from_utf8_lossy(&std::fs::read(f).unwrap_or_default()).into_owned())
        .collect()
}

/// Runs a client program without blocking the runtime the in-process server runs on, killing
/// it if it takes more than 60 s.
pub async fn run_client(cmd: &mut tokio::process::Command) -> std::process::Output {
    cmd.kill_on_drop(true);
    tokio::time::timeout(std::time::Duration::from_secs(60), cmd.output())
        .await
        .expect("client finished within 60 s")
        .expect("client runs")
}

/// A spooled message's envelope: from `sender` to `rcpt`, received 2027-01-15 08:00 UTC from
/// 192.0.2.1 on the smtp listener, quarantined with `quarantine` as the reason if given.
pub fn spooled(
    id: &str,
    sender: &str,
    rcpt: &str,
    quarantine: Option<&str>,
) -> sluice::spool::SpooledEnvelope {
    sluice::spool::SpooledEnvelope {
        id: id.into(),
        received_at: "2027-01-15T08:00:00+00:00".into(),
        sender: Sender {
            address: sender.into(),
            params: vec![],
        },
        recipients: vec![Recipient {
            address: rcpt.into(),
            params: vec![],
            discarded: false,
        }],
        client_ip: "192.0.2.1".into(),
        helo: "c".into(),
        listener: "smtp".into(),
        auth_user: None,
        quarantine: quarantine.map(str::to_string),
        spam: false,
    }
}

/// Runs `sluice spam ARGS --config CONFIG` (learn, forget), asserting it succeeds; its
/// standard output.
pub fn spam_command(args: &[&str], config: &Path) -> String {
    let out = std::process::Command::new(sluice_bin())
        .arg("spam")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("sluice runs");
    assert!(
        out.status.success(),
        "sluice spam {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a Python script (`python3 -c`) with the given environment; returns stdout, panicking
/// with stderr on failure.
pub async fn python(script: &str, env: &[(&str, String)]) -> String {
    let out = run_client(
        tokio::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str()))),
    )
    .await;
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `sluice plugin list --server ADDR` (`--json` when asked), as an operator runs it: its
/// output, stderr after stdout (a refusal names its reason there).
pub fn plugin_list_server(addr: &str, json: bool) -> String {
    let mut cmd = std::process::Command::new(sluice_bin());
    cmd.args(["plugin", "list", "--server", addr]);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("sluice runs");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The text of `/metrics` at `addr`, fetched with Python's urllib as a scraper would.
pub async fn scrape(addr: &str) -> String {
    let script = r#"
import os, urllib.request
print(urllib.request.urlopen("http://" + os.environ["ADDR"] + "/metrics", timeout=10).read().decode())
"#;
    python(script, &[("ADDR", addr.to_string())]).await
}
