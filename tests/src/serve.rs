//! `sluice serve` as a child process, for tests of the binary as operators run it.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::sluice_bin;

/// A `sluice serve` child, killed by PID when dropped.
pub struct Serve {
    /// The process.
    pub child: tokio::process::Child,
    /// The first smtp listener.
    pub smtp: std::net::SocketAddr,
    /// The first submission listener, if any.
    pub submission: Option<std::net::SocketAddr>,
    /// The first smtps listener, if any.
    pub smtps: Option<std::net::SocketAddr>,
    /// The metrics endpoint, if configured.
    pub metrics: Option<std::net::SocketAddr>,
    /// The web console, if configured.
    pub admin: Option<std::net::SocketAddr>,
}

impl Serve {
    /// Starts `sluice serve --config cfg`; its log goes to `cfg` with extension `log`.
    pub async fn start(cfg: &Path) -> Serve {
        let mut cmd = tokio::process::Command::new(sluice_bin());
        cmd.args(["serve", "--config"]).arg(cfg);
        Serve::start_command(cmd, cfg).await
    }

    /// Starts `sluice serve --config cfg` trusting the CA certificates in `roots` (PEM) as its
    /// system roots (`SSL_CERT_FILE`): for verified TLS to peers a test's CA signed.
    pub async fn start_trusting(cfg: &Path, roots: &Path) -> Serve {
        let mut cmd = tokio::process::Command::new(sluice_bin());
        cmd.args(["serve", "--config"])
            .arg(cfg)
            .env("SSL_CERT_FILE", roots);
        Serve::start_command(cmd, cfg).await
    }

    /// Starts `cmd`, a `sluice serve` command line for the configuration `cfg` (run another
    /// way: another binary, another user); its log goes to `cfg` with extension `log`.
    pub async fn start_command(mut cmd: tokio::process::Command, cfg: &Path) -> Serve {
        let mut child = cmd
            .env("SLUICE_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(cfg.with_extension("log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("sluice serve starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut smtp, mut metrics, mut submission, mut smtps) = (None, None, None, None);
        let mut admin = None;
        // The server prints one line per listener, then flushes: read until the smtp (and,
        // when configured, metrics) line has come and no more lines follow at once.
        let want_metrics = has_metrics(cfg);
        loop {
            let done = smtp.is_some() && (metrics.is_some() || !want_metrics);
            let wait = if done { 300 } else { 60_000 };
            let line =
                match tokio::time::timeout(Duration::from_millis(wait), lines.next_line()).await {
                    Err(_) if done => break,
                    Err(_) => panic!("sluice serve printed no listeners within 60 s"),
                    Ok(line) => line.unwrap(),
                };
            let line = line.unwrap_or_else(|| {
                panic!(
                    "sluice serve exited before listening:\n{}",
                    std::fs::read_to_string(cfg.with_extension("log")).unwrap_or_default()
                )
            });
            let mut w = line.split_whitespace().skip(1);
            match (w.next(), w.next()) {
                (Some("smtp"), Some(a)) if smtp.is_none() => smtp = a.parse().ok(),
                (Some("metrics"), Some(a)) => metrics = a.parse().ok(),
                (Some("admin"), Some(a)) => admin = a.parse().ok(),
                (Some("submission"), Some(a)) if submission.is_none() => {
                    submission = a.parse().ok()
                }
                (Some("smtps"), Some(a)) if smtps.is_none() => smtps = a.parse().ok(),
                _ => {}
            }
        }
        Serve {
            child,
            smtp: smtp.unwrap(),
            submission,
            smtps,
            metrics,
            admin,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Sends a signal by name (`HUP`, `TERM`).
    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// Waits (bounded) for the process to exit; returns its status.
    pub async fn exited(&mut self, within: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .expect("server exits in time")
            .unwrap()
    }

    /// `GET path` from the metrics endpoint: (status line, body).
    pub async fn get(&self, path: &str) -> (String, String) {
        let addr = self.metrics.expect("metrics listener");
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_string(), body.to_string())
    }

    /// Polls /metrics (bounded: 15 s) until every line in `want` is present.
    pub async fn metrics_until(&self, want: &[&str]) -> String {
        let mut body = String::new();
        for _ in 0..150 {
            body = self.get("/metrics").await.1;
            if want.iter().all(|w| body.lines().any(|l| l == *w)) {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let missing: Vec<&&str> = want
            .iter()
            .filter(|w| !body.lines().any(|l| l == **w))
            .collect();
        panic!("metrics never showed {missing:?}:\n{body}");
    }
}

/// True when the configuration file sets up the metrics endpoint.
pub fn has_metrics(cfg: &Path) -> bool {
    // A `# [metrics]` comment (as in the packaged configuration) is not a section.
    std::fs::read_to_string(cfg)
        .unwrap()
        .lines()
        .any(|l| l.trim_start().starts_with("[metrics]"))
}

/// Writes the configuration of a relay under test in `dir` and returns its path: server
/// `a.test` (data in `dir`, an empty `plugins/`), one smtp listener, relaying for 127.0.0.0/8,
/// sender checks off; then `rest` (its `[delivery]`, `[reports]`, routes).
pub fn relay_config(dir: &Path, rest: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    let cfg = dir.join("sluice.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nhostname = \"a.test\"\ndata_dir = {dir:?}\n\
             [[listener]]\nkind = \"smtp\"\naddress = \"127.0.0.1:0\"\n\
             [relay]\nlocal_domains = [\"a.test\"]\ntrusted_networks = [\"127.0.0.0/8\"]\n\
             [authentication]\nverify = false\n{rest}"
        ),
    )
    .unwrap();
    cfg
}

/// The `event=delivery` lines of the server log `log` for the recipient `to`, waiting
/// (bounded: 30 s) for the first.
pub async fn delivery_lines(log: &Path, to: &str) -> Vec<String> {
    let want = format!("to={to} ");
    for _ in 0..300 {
        let lines: Vec<String> = std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("event=delivery") && l.contains(&want))
            .map(str::to_string)
            .collect();
        if !lines.is_empty() {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "no delivery line for {to} in:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// What `sluice queue show` says, under the configuration `cfg`, of the message a delivery log
/// line (from [`delivery_lines`]) is about.
pub fn queue_show(cfg: &Path, line: &str) -> String {
    let id = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("id="))
        .expect("a queue id in the line");
    let out = std::process::Command::new(sluice_bin())
        .args(["queue", "show", id, "--config"])
        .arg(cfg)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
