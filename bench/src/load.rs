//! `sluice-load`: an SMTP load generator and the relay comparison of the speed issue.
//!
//! ```text
//! sluice-load [--connections 50] [--messages 2000] [--size 5000] [--rounds 4] [--idle 1000]
//!             [--fresh] [--no-postfix] [--only CONFIG,…] [--plugins DIR]
//! ```
//!
//! Two ways of sending: by default each client keeps its connection and pipelines MAIL, RCPT
//! and DATA (RFC 2920), as a busy relay does; with `--fresh`, every message comes on a new
//! connection (greeting, EHLO, MAIL, RCPT, DATA, QUIT), one command at a time, as
//! `smtp-source` and most single-message senders do.
//!
//! Configurations, measured in the same run and interleaved round by round (A/B/C/…, then
//! again) so a noisy machine skews them alike:
//! 1. `sink`: the load generator straight into the recording sink (the machine's ceiling);
//! 2. `sluice-none`: Sluice (release build, fsync on) with no plugins, relaying to the sink;
//! 3. `sluice-bundled`: with the three bundled Rust plugins;
//! 4. `sluice-all`: plus the Python and JavaScript examples;
//! 5. `sluice-benign`: the bundled plugins plus the hostile test plugin three times, behaving;
//! 6. `sluice-hostile`: the same, misbehaving — one loops forever, one exhausts its memory,
//!    one traps, each on 1 % of messages (failure policies continue, tempfail and reject);
//! 7. `sluice-floor`: two plugins that do nothing, one at `check-recipient` and one at
//!    `check-message` like the bundled chain's two: what two sandboxes per transaction cost
//!    before any plugin does any work — the floor under `sluice-bundled`;
//! 8. `sluice-custom`: the plugins in `--plugins DIR`, when given (what does my plugin cost?);
//! 9. `postfix`: Debian's Postfix as a relay to the same sink (private config, its default
//!    durable queue), when it is installed and we are root;
//! 10. `postfix-milter`: the same Postfix with Sluice as its milter (`smtpd_milters`, the
//!     bundled plugins); its CPU time is Postfix's and Sluice's together;
//! 11. `postfix-milter-unix`: the same over a Unix socket (`smtpd_milters = unix:PATH`), the
//!     usual transport when both run on one host;
//! 12. `postfix-milter-none`: the same over TCP with a Sluice milter without plugins: the
//!     cost of the milter protocol alone;
//! 13. `sluice-stateful`: the bundled plugins plus the opt-in greylisting (its triplet
//!     passed beforehand), rate-limit (three limits, never reached) and dnsbl (a rejecting
//!     zone not listing the client, on a loopback DNS server), on a loopback `redis-server`
//!     (when installed): what state and lookups cost per message;
//! 14. `sluice-shadowed`: the bundled plugins, each shadowed by a copy of itself
//!     (`NAME.shadow.wasm`, every transaction sampled): what shadows cost;
//! 15. `sluice-captured`: the bundled plugins with `[capture]` on and no rule that keeps a
//!     transaction: what recording every transaction costs (the clock, DNS and kv answers
//!     taped, the record made and offered, then dropped);
//! 16. `sluice-captured-all`: the same keeping every transaction (`sample = 1.0`, a file
//!     written per message, the oldest removed past 1,000);
//! 17. `sluice-stateful-captured`: `sluice-stateful` with capture on and nothing kept: the
//!     taping of kv (a read of each key's first value) and DNS on Redis.
//!
//! For each: accepted messages/s, p50/p99 latency from MAIL to the 250 after the data,
//! delivered messages/s end to end (until the sink has them all) and p50/p99 delivery
//! latency (250 to the sink), the relay's CPU time per message and peak resident memory, and
//! messages refused. Then the resident memory of Sluice with `--idle` connections open and
//! idle after EHLO. A table, then one
//! `RESULT` line of key=value pairs per configuration for machines. Bounded: every wait has a
//! deadline; the counts are fixed by the arguments.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use sluice_tests::peers::Postfix;
use sluice_tests::sink::{Sink, SinkOptions};

struct Args {
    connections: usize,
    messages: usize,
    size: usize,
    rounds: usize,
    postfix: bool,
    idle: usize,
    /// Measure only these configurations (comma-separated; with one, `perf record -p` its
    /// pid).
    only: Option<Vec<String>>,
    /// A directory of plugins to measure as configuration `sluice-custom`.
    custom: Option<PathBuf>,
    /// A new connection for every message, commands not pipelined.
    fresh: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        connections: 50,
        messages: 2000,
        size: 5000,
        rounds: 4,
        postfix: true,
        idle: 1000,
        only: None,
        custom: None,
        fresh: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut num = |name: &str| -> anyhow::Result<usize> {
            it.next()
                .with_context(|| format!("{name} needs a number"))?
                .parse()
                .with_context(|| format!("{name} needs a number"))
        };
        match k.as_str() {
            "--connections" => a.connections = num("--connections")?.max(1),
            "--messages" => a.messages = num("--messages")?.max(1),
            "--size" => a.size = num("--size")?.max(200),
            "--rounds" => a.rounds = num("--rounds")?.max(1),
            "--no-postfix" => a.postfix = false,
            "--fresh" => a.fresh = true,
            "--idle" => a.idle = num("--idle")?,
            "--only" => {
                let list = it.next().context("--only needs configuration names")?;
                a.only = Some(list.split(',').map(str::to_string).collect())
            }
            "--plugins" => {
                a.custom = Some(it.next().context("--plugins needs a directory")?.into())
            }
            _ => bail!(
                "usage: sluice-load [--connections N] [--messages N] [--size BYTES] [--rounds N] [--idle N] [--fresh] [--no-postfix] [--only CONFIG,...] [--plugins DIR]"
            ),
        }
    }
    Ok(a)
}

/// The Subject of message `k`: 1 % of messages each carry the word that sets off one of the
/// hostile plugins of `sluice-hostile` (the others ignore it), so every configuration gets
/// the same traffic.
fn subject(k: usize) -> &'static str {
    match k % 100 {
        7 => "Quarterly figures hostile-loop",
        37 => "Quarterly figures hostile-hog",
        67 => "Quarterly figures hostile-trap",
        _ => "Quarterly figures and the plan for next week",
    }
}

/// A message of about `size` bytes with realistic headers and text.
fn message(id: &str, subject: &str, size: usize) -> String {
    let mut m = format!(
        "From: \"Load Generator\" <load@bench.test>\r\nTo: <user@sink.test>\r\nSubject: {subject}\r\nMessage-ID: {id}\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    );
    let words = "the meeting moved to thursday and the numbers for the third quarter look better than we expected so please bring your notes ";
    while m.len() + 80 < size {
        let mut line = String::new();
        while line.len() < 72 {
            line.push_str(&words[(m.len() + line.len()) % 40..][..8]);
        }
        m.push_str(line.trim_end());
        m.push_str("\r\n");
    }
    m.push_str(".\r\n");
    m
}

async fn reply(r: &mut BufReader<tokio::net::TcpStream>) -> anyhow::Result<String> {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(30), r.read_line(&mut line)).await??;
        if n == 0 {
            bail!("connection closed");
        }
        all.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(all);
        }
    }
}

/// What one run measured.
#[derive(Default)]
struct Run {
    accept_secs: f64,
    e2e_secs: f64,
    latencies: Vec<Duration>,
    delivery: Vec<Duration>,
    /// CPU seconds of the relay: (user, system).
    cpu_secs: (f64, f64),
    /// Of those, the helper process's (Sluice as the milter), user plus system.
    helper_cpu_secs: f64,
    /// Connections that broke (errors, timeouts).
    failed: usize,
    /// Messages answered with 4xx/5xx after the data.
    refused: usize,
    /// Peak resident memory of the relay (VmHWM), in KiB, after the run.
    peak_rss_kib: u64,
}

/// What the clients of one run saw.
#[derive(Default)]
struct Sent {
    /// Message-ID, when its 250 came, and the latency from MAIL to that 250.
    acked: Vec<(String, Instant, Duration)>,
    failed: usize,
    refused: usize,
}

impl Sent {
    /// Counts one message's outcome: acknowledged (true), refused (false) or failed.
    fn record(&mut self, id: String, started: Instant, outcome: &anyhow::Result<bool>) {
        match outcome {
            Ok(true) => self.acked.push((id, Instant::now(), started.elapsed())),
            Ok(false) => self.refused += 1,
            Err(_) => self.failed += 1,
        }
    }
}

/// The next of `n` messages to send, `(k, id)`, or none when every one is taken.
fn claim(next: &AtomicUsize, n: usize, tag: &str) -> Option<(usize, String)> {
    let k = next.fetch_add(1, Ordering::Relaxed);
    (k < n).then(|| (k, format!("<bench-{tag}-{k}@bench.test>")))
}

/// Sends `n` messages from `c` concurrent clients to `port`; ids `<bench-TAG-K@bench.test>`.
/// Pipelined on kept connections, or with `fresh`, one connection per message without
/// pipelining. A refused message counts as refused and the client goes on; a broken
/// connection ends a kept one's client (a fresh client counts it and goes on).
async fn load(port: u16, c: usize, n: usize, size: usize, tag: &str, fresh: bool) -> Sent {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..c {
        let next = next.clone();
        let tag = tag.to_string();
        if fresh {
            tasks.push(tokio::spawn(async move {
                let mut sent = Sent::default();
                while let Some((k, id)) = claim(&next, n, &tag) {
                    let started = Instant::now();
                    let outcome = one_fresh(port, &id, subject(k), size).await;
                    sent.record(id, started, &outcome);
                }
                sent
            }));
            continue;
        }
        tasks.push(tokio::spawn(async move {
            let mut sent = Sent::default();
            let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                sent.failed = 1;
                return sent;
            };
            let _ = tcp.set_nodelay(true);
            let mut r = BufReader::new(tcp);
            if reply(&mut r).await.is_err()
                || r.get_mut().write_all(b"EHLO bench.test\r\n").await.is_err()
                || reply(&mut r).await.is_err()
            {
                sent.failed = 1;
                return sent;
            }
            while let Some((k, id)) = claim(&next, n, &tag) {
                let started = Instant::now();
                let cmds = "MAIL FROM:<load@bench.test>\r\nRCPT TO:<user@sink.test>\r\nDATA\r\n";
                let ok = async {
                    r.get_mut().write_all(cmds.as_bytes()).await?;
                    for want in ["250", "250", "354"] {
                        let got = reply(&mut r).await?;
                        if !got.starts_with(want) {
                            bail!("{got}");
                        }
                    }
                    r.get_mut()
                        .write_all(message(&id, subject(k), size).as_bytes())
                        .await?;
                    let got = reply(&mut r).await?;
                    Ok(got.starts_with("250"))
                }
                .await;
                sent.record(id, started, &ok);
                if ok.is_err() {
                    break;
                }
            }
            let _ = r.get_mut().write_all(b"QUIT\r\n").await;
            sent
        }));
    }
    let mut all = Sent::default();
    for t in tasks {
        if let Ok(s) = t.await {
            all.acked.extend(s.acked);
            all.failed += s.failed;
            all.refused += s.refused;
        }
    }
    all
}

/// One message on a connection of its own, one command at a time: true when the message got
/// its 250, false when it was refused.
async fn one_fresh(port: u16, id: &str, subject: &str, size: usize) -> anyhow::Result<bool> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let _ = tcp.set_nodelay(true);
    let mut r = BufReader::new(tcp);
    let mut step = async |cmd: &str, want: &str| -> anyhow::Result<bool> {
        if !cmd.is_empty() {
            r.get_mut().write_all(cmd.as_bytes()).await?;
        }
        Ok(reply(&mut r).await?.starts_with(want))
    };
    for (cmd, want) in [
        ("", "220"),
        ("EHLO bench.test\r\n", "250"),
        ("MAIL FROM:<load@bench.test>\r\n", "250"),
        ("RCPT TO:<user@sink.test>\r\n", "250"),
        ("DATA\r\n", "354"),
    ] {
        if !step(cmd, want).await? {
            return Ok(false);
        }
    }
    let accepted = step(&message(id, subject, size), "250").await?;
    let _ = step("QUIT\r\n", "221").await;
    Ok(accepted)
}

/// Resident memory of `pid` in KiB: (now, peak), from /proc/PID/status.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// (user, system) CPU seconds of `pid` and its waited-for children, plus its live children.
/// Apart, because system time on a file system can swing with its history (see the README).
fn cpu_secs(pid: u32) -> (f64, f64) {
    let tick = 100.0; // USER_HZ on Linux
    let field = |f: &[&str], i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    // (ppid, own user, own system, children's user, children's system)
    let stat = |p: &str| -> Option<(u32, [f64; 4])> {
        let s = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        let rest = &s[s.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ppid = f.get(1)?.parse().ok()?;
        Some((
            ppid,
            [
                field(&f, 11)?,
                field(&f, 12)?,
                field(&f, 13)?,
                field(&f, 14)?,
            ],
        ))
    };
    let (mut user, mut system) = (0.0, 0.0);
    if let Some((_, [u, s, cu, cs])) = stat(&pid.to_string()) {
        user += u + cu;
        system += s + cs;
    }
    if let Ok(d) = std::fs::read_dir("/proc") {
        for e in d.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some((ppid, [u, s, _, _])) = stat(&name)
                && ppid == pid
            {
                user += u;
                system += s;
            }
        }
    }
    (user / tick, system / tick)
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

/// One relay under test.
struct Target {
    name: &'static str,
    port: u16,
    /// The relay's process (for CPU time), none for the sink itself.
    pid: Option<u32>,
    /// A second process whose CPU time counts too (Sluice as the milter of `postfix-milter`).
    helper: Option<u32>,
    runs: Vec<Run>,
}

/// CPU time (user, system) of a target's processes.
fn target_cpu(t: &Target) -> (f64, f64) {
    let a = t.pid.map(cpu_secs).unwrap_or_default();
    let b = t.helper.map(cpu_secs).unwrap_or_default();
    (a.0 + b.0, a.1 + b.1)
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The plugins of `sluice-hostile` besides the bundled ones: the hostile test plugin three
/// times, each set off by its word in 1 % of Subjects (see [`subject`]), each with another
/// failure policy.
const HOSTILE: &str = r#"
[plugin.looper]
on_failure = "continue"
[plugin.looper.config]
mode = "loop"
trigger = "hostile-loop"
[plugin.hog]
on_failure = "tempfail"
[plugin.hog.config]
mode = "hog"
trigger = "hostile-hog"
[plugin.trapper]
on_failure = "reject"
[plugin.trapper.config]
mode = "trap"
trigger = "hostile-trap"
"#;

/// `sluice-benign`: the same three plugins as [`HOSTILE`] behaving ("ok" mode), so that
/// `sluice-hostile / sluice-benign` is the cost of the failures alone.
/// The opt-in plugins' settings for `sluice-stateful`: every check runs, none refuses.
/// Capture on, no rule keeping anything: every transaction is recorded and then dropped.
const CAPTURE_NONE: &str = "[capture]\nenabled = true\nfailures = false\n";

/// Capture on, every transaction kept.
const CAPTURE_ALL: &str = "[capture]\nenabled = true\nsample = 1.0\nmax_records = 1000\n";

const STATEFUL: &str = r#"
[plugin.greylisting]
capabilities = ["kv"]
[plugin.rate-limit]
capabilities = ["kv"]
[plugin.rate-limit.config]
client.count = 100000000
sender_domain.count = 100000000
recipient.count = 100000000
[plugin.dnsbl]
capabilities = ["dns"]
[plugin.dnsbl.config]
zones.bl.zone = "bl.bench.test"
zones.bl.action = "reject"
uri_zones.dbl.zone = "dbl.bench.test"
"#;

const BENIGN: &str = r#"
[plugin.looper.config]
mode = "ok"
[plugin.hog.config]
mode = "ok"
[plugin.trapper.config]
mode = "ok"
"#;

/// Starts `target/release/sluice serve` in `dir`, relaying to `sink`, with the given plugin
/// files (each copied under the file name given) and `extra` appended to its configuration;
/// returns it and the address of its first listener of kind `want` (`127.0.0.1:PORT`, or a
/// Unix socket's path).
async fn sluice(
    dir: &Path,
    sink: u16,
    plugins: &[(PathBuf, String)],
    (plugins_toml, extra): (&str, &str),
    want: &str,
    resolver: std::net::SocketAddr,
) -> anyhow::Result<(tokio::process::Child, String)> {
    let plugin_dir = dir.join("plugins");
    std::fs::create_dir_all(&plugin_dir)?;
    for (p, name) in plugins {
        std::fs::copy(p, plugin_dir.join(name))?;
    }
    let cfg = dir.join("sluice.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[server]
hostname = "mx.bench.test"
data_dir = {dir:?}
[plugins]
cache_dir = {cache:?}
watch = false
{plugins_toml}
[[listener]]
kind = "smtp"
address = "127.0.0.1:0"
[relay]
local_domains = ["sink.test"]
# The load comes from 127.0.0.1 with made-up names: SPF/DKIM/DMARC would only time the
# system's DNS resolver.
[authentication]
verify = false
[limits]
max_connections = 2000
max_connections_per_ip = 2000
[delivery]
concurrency = 50
max_connections_per_destination = 20
resolver = "{resolver}"
{route}
[plugin.recipient-validation.config]
catch_all = ["sink.test"]
[plugin.python-attachments]
memory_mb = 128
timeout_ms = 1000
[plugin.js-keywords]
memory_mb = 128
timeout_ms = 1000
capabilities = ["kv"]
[plugin.js-keywords.config]
blocked_words = ["you have won the lottery"]
flagged_words = ["viagra", "casino"]
score = 2.0
{extra}"#,
            cache = root().join("target/bench-compile-cache"),
            // A configuration with a route of its own replaces the sink's.
            route = if extra.contains("[[route]]") {
                String::new()
            } else {
                format!(
                    "[[route]]\ndomains = [\"sink.test\"]\nkind = \"smtp\"\nhost = \"127.0.0.1:{sink}\"\ntls = \"none\""
                )
            },
        ),
    )?;
    let mut child = tokio::process::Command::new(root().join("target/release/sluice"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("SLUICE_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("target/release/sluice: build it first (scripts/bench-load does)")?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
            .await??
            .context("sluice exited before listening")?;
        if let Some(addr) = line.strip_prefix(&format!("listening {want} ")) {
            return Ok((child, addr.to_string()));
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let sink = Sink::tcp("127.0.0.1:0", SinkOptions::default()).await?;
    let sink_port = sink.addr.context("sink address")?.port();
    let plugins = root().join("target/plugins");
    let named = |dir: &str| -> anyhow::Result<Vec<(PathBuf, String)>> {
        Ok(std::fs::read_dir(plugins.join(dir))
            .with_context(|| {
                format!("target/plugins/{dir}: build the plugins first (scripts/bench-load does)")
            })?
            .flatten()
            .map(|e| (e.path(), e.file_name().to_string_lossy().into_owned()))
            .collect())
    };
    let bundled = named("bundled")?;
    let mut all = bundled.clone();
    all.extend(named("examples")?);
    let mut hostile = bundled.clone();
    for name in ["30-looper.wasm", "31-hog.wasm", "32-trapper.wasm"] {
        hostile.push((plugins.join("test/hostile.wasm"), name.to_string()));
    }
    // Two plugins that do nothing, at the hooks of the bundled chain's two (the third,
    // bounce-template, is called only for bounces).
    let floor: Vec<(PathBuf, String)> = ["idle-recipient", "idle-message"]
        .iter()
        .map(|name| {
            (
                plugins.join(format!("test/{name}.wasm")),
                format!("{name}.wasm"),
            )
        })
        .collect();
    // The bundled chain with each plugin shadowed by a copy of itself (every transaction
    // sampled): what shadows cost.
    let mut shadowed = bundled.clone();
    for (path, file) in &bundled {
        let stem = file.trim_end_matches(".wasm");
        let name = stem
            .split_once('-')
            .filter(|(digits, _)| digits.bytes().all(|b| b.is_ascii_digit()))
            .map_or(stem, |(_, n)| n);
        shadowed.push((path.clone(), format!("{name}.shadow.wasm")));
    }
    let custom = match &a.custom {
        Some(dir) => std::fs::read_dir(dir)
            .with_context(|| format!("--plugins {}", dir.display()))?
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "wasm"))
            .map(|e| (e.path(), e.file_name().to_string_lossy().into_owned()))
            .collect(),
        None => Vec::new(),
    };
    // The DNS server of every configuration: the dnsbl zones (empty) and sink.test's MX.
    let zone = sluice_tests::dns::Dns::start(
        sluice_tests::dns::Zone::new()
            .mx("sink.test", 10, "mx.sink.test")
            .addr("mx.sink.test", [127, 0, 0, 1].into())
            .txt("_mta-sts.sink.test", "v=STSv1; id=bench1;"),
    )
    .await;
    // (name, plugin files with the names they get, extra configuration)
    type Configuration<'a> = (&'static str, &'a [(PathBuf, String)], (String, String));
    let none = || (String::new(), String::new());
    let mut configs: Vec<Configuration> = vec![
        ("sluice-none", &[], none()),
        ("sluice-bundled", &bundled, none()),
        ("sluice-all", &all, none()),
        (
            "sluice-benign",
            &hostile,
            (String::new(), BENIGN.to_string()),
        ),
        (
            "sluice-hostile",
            &hostile,
            (String::new(), HOSTILE.to_string()),
        ),
        ("sluice-floor", &floor, none()),
        ("sluice-shadowed", &shadowed, none()),
        (
            "sluice-captured",
            &bundled,
            (String::new(), CAPTURE_NONE.to_string()),
        ),
        (
            "sluice-captured-all",
            &bundled,
            (String::new(), CAPTURE_ALL.to_string()),
        ),
    ];
    if a.custom.is_some() {
        configs.push(("sluice-custom", &custom, none()));
    }
    // The sink as sink.test's MX host, found through DNS, without and with MTA-STS (a
    // testing policy, cached before the run: the warm cache of a busy relay).
    // With DANE on too, sink.test is a DNSSEC-signed zone (Knot DNS) behind a validating
    // resolver (unbound): its MX records and host's address are validated, and the host has no
    // TLSA records, so every delivery makes DANE's lookups (cached) and goes on as before.
    let signed = ["/usr/sbin/knotd", "/usr/sbin/unbound", "/usr/bin/kdig"]
        .iter()
        .all(|b| Path::new(b).exists())
        .then(|| {
            sluice_tests::dnssec::SignedDns::start(&[(
                "sink.test",
                "@ MX 10 mx\nmx A 127.0.0.1\n_mta-sts TXT \"v=STSv1; id=bench1;\"\n",
            )])
        });
    if signed.is_none() {
        eprintln!("sluice-mx-dane: skipped (knot, knot-dnsutils and unbound are not installed)");
    }
    for (name, sts, dane) in [
        ("sluice-mx", "off", "off"),
        ("sluice-mx-sts", "on", "off"),
        ("sluice-mx-dane", "on", "on"),
    ] {
        if name == "sluice-mx-dane" && signed.is_none() {
            continue;
        }
        configs.push((
            name,
            &bundled,
            (
                String::new(),
                format!(
                    "[[route]]\ndomains = [\"sink.test\"]\nkind = \"mx\"\nport = {sink_port}\ntls = \"none\"\nmta_sts = \"{sts}\"\ndane = \"{dane}\"\n"
                ),
            ),
        ));
    }
    // The opt-in plugins on a loopback Redis and DNS server.
    let mut stateful = bundled.clone();
    stateful.extend(named("optional")?);
    let redis = Path::new("/usr/bin/redis-server")
        .exists()
        .then(sluice_tests::peers::Redis::start);
    match &redis {
        Some(r) => {
            configs.push((
                "sluice-stateful",
                &stateful,
                (
                    format!("resolver = \"{}\"", zone.addr),
                    format!("{STATEFUL}[store]\nurl = {:?}\n", r.url(0)),
                ),
            ));
            configs.push((
                "sluice-stateful-captured",
                &stateful,
                (
                    format!("resolver = \"{}\"", zone.addr),
                    format!("{STATEFUL}{CAPTURE_NONE}[store]\nurl = {:?}\n", r.url(1)),
                ),
            ));
        }
        None => eprintln!("sluice-stateful: skipped (redis-server is not installed)"),
    }
    let mut targets = vec![Target {
        name: "sink",
        port: sink_port,
        pid: None,
        helper: None,
        runs: Vec::new(),
    }];
    let mut dirs = Vec::new();
    let mut children = Vec::new();
    for (name, plugins, extra) in configs {
        if a.only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|o| o == name))
        {
            continue;
        }
        let dir = tempfile::tempdir()?;
        if name == "sluice-mx-sts" || name == "sluice-mx-dane" {
            std::fs::create_dir_all(dir.path().join("mta-sts"))?;
            let fetched = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            std::fs::write(
                dir.path().join("mta-sts/sink.test.json"),
                format!(
                    r#"{{"id":"bench1","mode":"testing","mx":["mx.sink.test"],"max_age":86400,"fetched":{fetched}}}"#
                ),
            )?;
        }
        let (child, addr) = sluice(
            dir.path(),
            sink_port,
            plugins,
            (&extra.0, &extra.1),
            "smtp",
            match (&signed, name) {
                (Some(signed), "sluice-mx-dane") => signed.resolver,
                _ => zone.addr,
            },
        )
        .await?;
        let port = addr.rsplit(':').next().unwrap_or("").parse()?;
        eprintln!("{name}: pid {}", child.id().unwrap_or(0));
        let db = match name {
            "sluice-stateful" => Some(0),
            "sluice-stateful-captured" => Some(1),
            _ => None,
        };
        if let (Some(db), Some(r)) = (db, &redis) {
            // The load's one triplet has passed greylisting already (a steady state: a
            // first attempt costs the same and is answered 451).
            let store =
                sluice::store::redis::Redis::new(&r.url(db), None).map_err(anyhow::Error::msg)?;
            sluice::store::KvStore::Redis(store)
                .set(
                    b"greylisting:t:127.0.0.0/24:load@bench.test:user@sink.test".to_vec(),
                    b"pass".to_vec(),
                    0,
                )
                .await?;
        }
        targets.push(Target {
            name,
            port,
            pid: child.id(),
            helper: None,
            runs: Vec::new(),
        });
        dirs.push(dir);
        children.push(child);
    }
    // Postfix with Sluice as its milter, relaying to the same sink: with the bundled plugins
    // over TCP and over a Unix socket, and with none (the floor: what the milter protocol
    // costs Postfix and Sluice).
    /// A configuration's name, its plugins, and whether Postfix reaches Sluice over a Unix
    /// socket.
    type MilterConfig<'a> = (&'static str, &'a [(PathBuf, String)], bool);
    let milter_configs: [MilterConfig; 3] = [
        ("postfix-milter", &bundled, false),
        ("postfix-milter-unix", &bundled, true),
        ("postfix-milter-none", &[], false),
    ];
    if let Some(only) = &a.only {
        let known = |o: &String| {
            o == "postfix"
                || milter_configs.iter().any(|c| c.0 == o.as_str())
                || targets.iter().any(|t| t.name == o.as_str())
        };
        if let Some(unknown) = only.iter().find(|o| !known(o)) {
            bail!("--only {unknown}: no such configuration");
        }
        targets.retain(|t| only.iter().any(|o| o == t.name));
    }
    let postfix = if a.postfix
        && a.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|o| o == "postfix"))
        && Path::new("/usr/sbin/postfix").exists()
        && is_root()
    {
        let p = Postfix::start(&format!(
            "myhostname = relay.bench.test\nrelay_domains = sink.test\nrelayhost = [127.0.0.1]:{sink_port}\nsmtpd_client_connection_count_limit = 0\ndefault_process_limit = 200\n"
        ));
        let pid: u32 = std::fs::read_to_string(p.dir.path().join("queue/pid/master.pid"))?
            .trim()
            .parse()?;
        targets.push(Target {
            name: "postfix",
            port: p.smtp,
            pid: Some(pid),
            helper: None,
            runs: Vec::new(),
        });
        Some(p)
    } else {
        eprintln!("postfix: skipped (not installed, not root, or --no-postfix)");
        None
    };
    let mut postfix_milters = Vec::new();
    for (name, plugins, unix) in milter_configs {
        if !(a.postfix
            && a.only.as_ref().is_none_or(|o| o.iter().any(|o| o == name))
            && Path::new("/usr/sbin/postfix").exists()
            && is_root())
        {
            continue;
        }
        let dir = tempfile::tempdir()?;
        let listener = if unix {
            // Postfix's smtpd and cleanup run as its own user: the directory must be
            // traversable and the socket writable by it.
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
            let socket = dir.path().join("milter.sock");
            format!(
                "[[listener]]\nkind = \"milter\"\nsocket = {socket:?}\nsocket_mode = \"0666\"\n"
            )
        } else {
            "[[listener]]\nkind = \"milter\"\naddress = \"127.0.0.1:0\"\n".to_string()
        };
        let (child, milter) = sluice(
            dir.path(),
            sink_port,
            plugins,
            ("", &listener),
            "milter",
            zone.addr,
        )
        .await?;
        // Sluice prints a socket as `unix:PATH`, Postfix's own notation.
        let milter = if unix {
            milter
        } else {
            format!("inet:{milter}")
        };
        let p = Postfix::start(&format!(
            "myhostname = relay.bench.test\nrelay_domains = sink.test\nrelayhost = [127.0.0.1]:{sink_port}\nsmtpd_client_connection_count_limit = 0\ndefault_process_limit = 200\nsmtpd_milters = {milter}\nmilter_default_action = tempfail\n"
        ));
        let pid: u32 = std::fs::read_to_string(p.dir.path().join("queue/pid/master.pid"))?
            .trim()
            .parse()?;
        eprintln!(
            "{name}: postfix pid {pid}, sluice milter pid {}",
            child.id().unwrap_or(0)
        );
        targets.push(Target {
            name,
            port: p.smtp,
            pid: Some(pid),
            helper: child.id(),
            runs: Vec::new(),
        });
        postfix_milters.push((p, child, dir));
    }

    let per_round = a.messages.div_ceil(a.rounds);
    let mode = if a.fresh { "fresh" } else { "pipelined" };
    eprintln!(
        "{} clients, {} messages of ~{} bytes per configuration, in {} interleaved rounds; {}",
        a.connections,
        per_round * a.rounds,
        a.size,
        a.rounds,
        if a.fresh {
            "a new connection per message, commands one at a time (--fresh)"
        } else {
            "kept connections, MAIL/RCPT/DATA pipelined"
        }
    );
    for round in 0..a.rounds {
        for t in targets.iter_mut() {
            let before_sink = sink.count();
            let cpu0 = target_cpu(t);
            let helper0 = t.helper.map(cpu_secs).unwrap_or_default();
            let start = Instant::now();
            let tag = format!("{}-{round}", t.name);
            let sent = load(t.port, a.connections, per_round, a.size, &tag, a.fresh).await;
            let accept_secs = start.elapsed().as_secs_f64();
            let deadline = Instant::now() + Duration::from_secs(120);
            while sink.count() < before_sink + sent.acked.len() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let e2e_secs = start.elapsed().as_secs_f64();
            let cpu1 = target_cpu(t);
            let cpu = (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1);
            let helper1 = t.helper.map(cpu_secs).unwrap_or_default();
            let helper_cpu_secs = (helper1.0 + helper1.1) - (helper0.0 + helper0.1);
            // Delivery latency: from the 250 to the sink's receipt, by Message-ID.
            let mut at = std::collections::HashMap::new();
            for m in sink.messages().into_iter().skip(before_sink) {
                let text = String::from_utf8_lossy(&m.data[..m.data.len().min(600)]).into_owned();
                if let Some(id) = text.lines().find_map(|l| l.strip_prefix("Message-ID: ")) {
                    at.insert(id.trim().to_string(), m.at);
                }
            }
            let delivery = sent
                .acked
                .iter()
                .filter_map(|(id, ok, _)| at.get(id).map(|t| t.saturating_duration_since(*ok)))
                .collect();
            t.runs.push(Run {
                accept_secs,
                e2e_secs,
                latencies: sent.acked.iter().map(|(_, _, l)| *l).collect(),
                delivery,
                cpu_secs: cpu,
                helper_cpu_secs,
                failed: sent.failed,
                refused: sent.refused,
                peak_rss_kib: t.pid.map(|p| rss_kib(p).1).unwrap_or(0),
            });
        }
        eprintln!("round {}/{} done", round + 1, a.rounds);
    }

    println!(
        "\n{:<15} {:>10} {:>9} {:>9} {:>11} {:>9} {:>9} {:>10} {:>9} {:>8} {:>7} {:>7}",
        "configuration",
        "accept/s",
        "p50 ms",
        "p99 ms",
        "deliver/s",
        "dl p50",
        "dl p99",
        "cpu ms/msg",
        "user ms",
        "peak MiB",
        "refused",
        "failed"
    );
    let mut lines = Vec::new();
    let mut rate = std::collections::HashMap::new();
    for t in &mut targets {
        let n: usize = t.runs.iter().map(|r| r.latencies.len()).sum();
        let accept: f64 = t.runs.iter().map(|r| r.accept_secs).sum();
        let e2e: f64 = t.runs.iter().map(|r| r.e2e_secs).sum();
        let user: f64 = t.runs.iter().map(|r| r.cpu_secs.0).sum();
        let cpu: f64 = user + t.runs.iter().map(|r| r.cpu_secs.1).sum::<f64>();
        let failed: usize = t.runs.iter().map(|r| r.failed).sum();
        let refused: usize = t.runs.iter().map(|r| r.refused).sum();
        // Postfix is many processes: the peak of one says nothing, so only Sluice's is shown.
        let peak_mib = if t.name.starts_with("sluice") {
            t.runs.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0) as f64 / 1024.0
        } else {
            f64::NAN
        };
        let mut lat: Vec<Duration> = t.runs.iter().flat_map(|r| r.latencies.clone()).collect();
        let mut dl: Vec<Duration> = t.runs.iter().flat_map(|r| r.delivery.clone()).collect();
        let (acc_rate, e2e_rate) = (n as f64 / accept, n as f64 / e2e);
        rate.insert(t.name, e2e_rate);
        let per_msg = |secs: f64| {
            if t.pid.is_some() {
                1000.0 * secs / n.max(1) as f64
            } else {
                f64::NAN
            }
        };
        let (cpu_ms, user_ms) = (per_msg(cpu), per_msg(user));
        let (p50, p99, d50, d99) = (
            pct(&mut lat, 0.5),
            pct(&mut lat, 0.99),
            pct(&mut dl, 0.5),
            pct(&mut dl, 0.99),
        );
        println!(
            "{:<15} {:>10.0} {:>9.2} {:>9.2} {:>11.0} {:>9.2} {:>9.2} {:>10.3} {:>9.3} {:>8.1} {:>7} {:>7}",
            t.name,
            acc_rate,
            p50,
            p99,
            e2e_rate,
            d50,
            d99,
            cpu_ms,
            user_ms,
            peak_mib,
            refused,
            failed
        );
        if t.helper.is_some() {
            let helper: f64 = t.runs.iter().map(|r| r.helper_cpu_secs).sum();
            lines.push(format!(
                "{}: of the {cpu_ms:.3} ms of CPU per message, the Sluice milter's {:.3} ms",
                t.name,
                per_msg(helper)
            ));
        }
        lines.push(format!(
            "RESULT config={} mode={mode} messages={n} size={} connections={} accept_per_s={acc_rate:.1} accept_p50_ms={p50:.3} accept_p99_ms={p99:.3} delivered_per_s={e2e_rate:.1} delivery_p50_ms={d50:.3} delivery_p99_ms={d99:.3} cpu_ms_per_msg={cpu_ms:.4} user_cpu_ms_per_msg={user_ms:.4} peak_rss_mib={peak_mib:.1} refused={refused} failed={failed}",
            t.name, a.size, a.connections
        ));
    }
    println!();
    for l in lines {
        println!("{l}");
    }
    let r = |n: &str| rate.get(n).copied().unwrap_or(f64::NAN);
    println!(
        "\nratios (delivered/s): sluice-bundled / postfix = {:.2}; sluice-bundled / sluice-none = {:.2}; sluice-all / sluice-none = {:.2}",
        r("sluice-bundled") / r("postfix"),
        r("sluice-bundled") / r("sluice-none"),
        r("sluice-all") / r("sluice-none"),
    );
    println!(
        "sluice-stateful / postfix = {:.2} (plus greylisting, rate-limit and dnsbl on Redis and DNS); sluice-stateful / sluice-bundled = {:.2}",
        r("sluice-stateful") / r("postfix"),
        r("sluice-stateful") / r("sluice-bundled"),
    );
    println!(
        "sluice-floor / sluice-none = {:.2} (two plugins that do nothing at the bundled chain's hooks: the cost of its sandboxes alone); sluice-bundled / sluice-floor = {:.2}",
        r("sluice-floor") / r("sluice-none"),
        r("sluice-bundled") / r("sluice-floor"),
    );
    println!(
        "sluice-hostile / sluice-benign = {:.2} (the same plugins; 3 % of messages set off one to loop, exhaust its memory or trap)",
        r("sluice-hostile") / r("sluice-benign"),
    );
    println!(
        "sluice-shadowed / sluice-bundled = {:.2} (each bundled plugin shadowed by a copy of itself, every transaction sampled)",
        r("sluice-shadowed") / r("sluice-bundled"),
    );
    println!(
        "sluice-captured / sluice-bundled = {:.2} (capture on, every transaction recorded, none kept); sluice-captured-all / sluice-bundled = {:.2} (every transaction kept, a file each); sluice-stateful-captured / sluice-stateful = {:.2} (greylisting, rate-limit and dnsbl on Redis, recorded, none kept)",
        r("sluice-captured") / r("sluice-bundled"),
        r("sluice-captured-all") / r("sluice-bundled"),
        r("sluice-stateful-captured") / r("sluice-stateful"),
    );
    println!(
        "sluice-mx-sts / sluice-mx = {:.2} (the sink as an MX host found through DNS, with MTA-STS on and the domain's testing policy cached, against MTA-STS off); sluice-mx / sluice-bundled = {:.2}",
        r("sluice-mx-sts") / r("sluice-mx"),
        r("sluice-mx") / r("sluice-bundled"),
    );
    println!(
        "sluice-mx-dane / sluice-mx-sts = {:.2} (DANE on too: sink.test DNSSEC-signed and validated, its MX host without TLSA records, the lookups cached); sluice-mx-dane / sluice-mx = {:.2}",
        r("sluice-mx-dane") / r("sluice-mx-sts"),
        r("sluice-mx-dane") / r("sluice-mx"),
    );
    println!(
        "postfix-milter / postfix = {:.2} (Postfix with Sluice's bundled plugins as its milter over TCP, against Postfix alone); postfix-milter-unix / postfix = {:.2} (the same over a Unix socket); postfix-milter-none / postfix = {:.2} (a milter over TCP with no plugins: the protocol's own cost)",
        r("postfix-milter") / r("postfix"),
        r("postfix-milter-unix") / r("postfix"),
        r("postfix-milter-none") / r("postfix"),
    );
    if a.idle > 0
        && let Some(t) = targets.iter().find(|t| t.name == "sluice-bundled")
        && let Some(pid) = t.pid
    {
        idle_memory(t.port, pid, a.idle).await;
    }
    drop(postfix);
    drop(postfix_milters);
    drop(children);
    drop(dirs);
    drop(signed);
    Ok(())
}

/// Opens `n` connections that greet with EHLO and then sit idle, and reports the relay's
/// resident memory before and with them.
async fn idle_memory(port: u16, pid: u32, n: usize) {
    let (before, _) = rss_kib(pid);
    let mut open = Vec::with_capacity(n);
    for _ in 0..n {
        let Ok(Ok(tcp)) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        else {
            break;
        };
        let mut r = BufReader::new(tcp);
        if reply(&mut r).await.is_err()
            || r.get_mut().write_all(b"EHLO idle.test\r\n").await.is_err()
            || reply(&mut r).await.is_err()
        {
            break;
        }
        open.push(r);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (with, _) = rss_kib(pid);
    let per = (with.saturating_sub(before)) as f64 / open.len().max(1) as f64;
    println!(
        "\nidle connections (sluice-bundled): {} open after EHLO; resident memory {:.1} MiB before, {:.1} MiB with them ({per:.1} KiB per connection)",
        open.len(),
        before as f64 / 1024.0,
        with as f64 / 1024.0,
    );
    println!(
        "RESULT idle_connections={} rss_before_mib={:.1} rss_with_mib={:.1} kib_per_connection={per:.1}",
        open.len(),
        before as f64 / 1024.0,
        with as f64 / 1024.0
    );
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
