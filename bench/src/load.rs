//! `sluice-load`: an SMTP load generator and the relay comparison of the speed issue.
//!
//! ```text
//! sluice-load [--connections 50] [--messages 2000] [--size 5000] [--rounds 4] [--no-postfix]
//! ```
//!
//! Configurations, measured in the same run and interleaved round by round (A/B/C/…, then
//! again) so a noisy machine skews them alike:
//! 1. `sink`: the load generator straight into the recording sink (the machine's ceiling);
//! 2. `sluice-none`: Sluice (release build, fsync on) with no plugins, relaying to the sink;
//! 3. `sluice-bundled`: with the three bundled Rust plugins;
//! 4. `sluice-all`: plus the Python and JavaScript examples;
//! 5. `postfix`: Debian's Postfix as a relay to the same sink (private config, its default
//!    durable queue), when it is installed and we are root.
//!
//! For each: accepted messages/s, p50/p99 latency from MAIL to the 250 after the data,
//! delivered messages/s end to end (until the sink has them all) and p50/p99 delivery
//! latency (250 to the sink), and the relay's CPU time per message. A table, then one
//! `RESULT` line of key=value pairs per configuration for machines. Bounded: every wait has a
//! deadline; the counts are fixed by the arguments.

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
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        connections: 50,
        messages: 2000,
        size: 5000,
        rounds: 4,
        postfix: true,
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
            _ => bail!(
                "usage: sluice-load [--connections N] [--messages N] [--size BYTES] [--rounds N] [--no-postfix]"
            ),
        }
    }
    Ok(a)
}

/// A message of about `size` bytes with realistic headers and text.
fn message(id: &str, size: usize) -> String {
    let mut m = format!(
        "From: \"Load Generator\" <load@bench.test>\r\nTo: <user@sink.test>\r\nSubject: Quarterly figures and the plan for next week\r\nMessage-ID: {id}\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
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
    cpu_secs: f64,
    failed: usize,
}

/// Sends `n` messages over `c` connections to `port`; ids `<bench-TAG-K@bench.test>`.
async fn load(
    port: u16,
    c: usize,
    n: usize,
    size: usize,
    tag: &str,
) -> (Vec<(String, Instant, Duration)>, usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..c {
        let next = next.clone();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            let mut failed = 0;
            let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                return (done, 1);
            };
            let _ = tcp.set_nodelay(true);
            let mut r = BufReader::new(tcp);
            if reply(&mut r).await.is_err()
                || r.get_mut().write_all(b"EHLO bench.test\r\n").await.is_err()
                || reply(&mut r).await.is_err()
            {
                return (done, 1);
            }
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= n {
                    break;
                }
                let id = format!("<bench-{tag}-{k}@bench.test>");
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
                    r.get_mut().write_all(message(&id, size).as_bytes()).await?;
                    let got = reply(&mut r).await?;
                    if !got.starts_with("250") {
                        bail!("{got}");
                    }
                    Ok(())
                }
                .await;
                match ok {
                    Ok(()) => done.push((id, Instant::now(), started.elapsed())),
                    Err(_) => {
                        failed += 1;
                        break;
                    }
                }
            }
            let _ = r.get_mut().write_all(b"QUIT\r\n").await;
            (done, failed)
        }));
    }
    let mut all = Vec::new();
    let mut failed = 0;
    for t in tasks {
        if let Ok((d, f)) = t.await {
            all.extend(d);
            failed += f;
        }
    }
    (all, failed)
}

/// User + system CPU seconds of `pid` and its waited-for children, plus its live children.
fn cpu_secs(pid: u32) -> f64 {
    let tick = 100.0; // USER_HZ on Linux
    let stat = |p: &str| -> Option<(u32, f64, f64)> {
        let s = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        let rest = &s[s.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ppid = f.get(1)?.parse().ok()?;
        let own = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        let children = f.get(13)?.parse::<f64>().ok()? + f.get(14)?.parse::<f64>().ok()?;
        Some((ppid, own, children))
    };
    let mut total = 0.0;
    if let Some((_, own, children)) = stat(&pid.to_string()) {
        total += own + children;
    }
    if let Ok(d) = std::fs::read_dir("/proc") {
        for e in d.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some((ppid, own, _)) = stat(&name)
                && ppid == pid
            {
                total += own;
            }
        }
    }
    total / tick
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
    runs: Vec<Run>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Starts `target/release/sluice serve` relaying to `sink` with the given plugin files.
async fn sluice(
    dir: &Path,
    sink: u16,
    plugins: &[PathBuf],
) -> anyhow::Result<(tokio::process::Child, u16)> {
    let plugin_dir = dir.join("plugins");
    std::fs::create_dir_all(&plugin_dir)?;
    for p in plugins {
        std::fs::copy(p, plugin_dir.join(p.file_name().context("plugin file")?))?;
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
[[listener]]
kind = "smtp"
address = "127.0.0.1:0"
[relay]
local_domains = ["sink.test"]
[limits]
max_connections_per_ip = 1000
[delivery]
concurrency = 50
max_connections_per_destination = 20
[[route]]
domains = ["sink.test"]
kind = "smtp"
host = "127.0.0.1:{sink}"
tls = "none"
[plugin.recipient-validation.config]
catch_all = ["sink.test"]
[plugin.python-attachments]
memory_mb = 128
timeout_ms = 1000
[plugin.js-keywords]
memory_mb = 128
timeout_ms = 1000
[plugin.js-keywords.config]
blocked_words = ["you have won the lottery"]
flagged_words = ["viagra", "casino"]
score = 2.0
"#,
            cache = root().join("target/bench-compile-cache"),
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
        if let Some(addr) = line.strip_prefix("listening smtp ") {
            let port = addr.rsplit(':').next().unwrap_or("").parse()?;
            return Ok((child, port));
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let sink = Sink::tcp("127.0.0.1:0", SinkOptions::default()).await?;
    let sink_port = sink.addr.context("sink address")?.port();
    let plugins = root().join("target/plugins");
    let bundled: Vec<PathBuf> = std::fs::read_dir(plugins.join("bundled"))
        .context("target/plugins/bundled: build the plugins first (scripts/bench-load does)")?
        .flatten()
        .map(|e| e.path())
        .collect();
    let mut all = bundled.clone();
    all.extend(
        std::fs::read_dir(plugins.join("examples"))?
            .flatten()
            .map(|e| e.path()),
    );
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir())
        .collect::<Result<_, _>>()?;
    let (none, none_port) = sluice(dirs[0].path(), sink_port, &[]).await?;
    let (bun, bun_port) = sluice(dirs[1].path(), sink_port, &bundled).await?;
    let (alls, all_port) = sluice(dirs[2].path(), sink_port, &all).await?;
    let mut targets = vec![
        Target {
            name: "sink",
            port: sink_port,
            pid: None,
            runs: Vec::new(),
        },
        Target {
            name: "sluice-none",
            port: none_port,
            pid: none.id(),
            runs: Vec::new(),
        },
        Target {
            name: "sluice-bundled",
            port: bun_port,
            pid: bun.id(),
            runs: Vec::new(),
        },
        Target {
            name: "sluice-all",
            port: all_port,
            pid: alls.id(),
            runs: Vec::new(),
        },
    ];
    let postfix = if a.postfix && Path::new("/usr/sbin/postfix").exists() && is_root() {
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
            runs: Vec::new(),
        });
        Some(p)
    } else {
        eprintln!("postfix: skipped (not installed, not root, or --no-postfix)");
        None
    };

    let per_round = a.messages.div_ceil(a.rounds);
    eprintln!(
        "{} connections, {} messages of ~{} bytes per configuration, in {} interleaved rounds",
        a.connections,
        per_round * a.rounds,
        a.size,
        a.rounds
    );
    for round in 0..a.rounds {
        for t in targets.iter_mut() {
            let before_sink = sink.count();
            let cpu0 = t.pid.map(cpu_secs).unwrap_or(0.0);
            let start = Instant::now();
            let tag = format!("{}-{round}", t.name);
            let (acked, failed) = load(t.port, a.connections, per_round, a.size, &tag).await;
            let accept_secs = start.elapsed().as_secs_f64();
            let deadline = Instant::now() + Duration::from_secs(120);
            while sink.count() < before_sink + acked.len() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let e2e_secs = start.elapsed().as_secs_f64();
            let cpu = t.pid.map(cpu_secs).unwrap_or(0.0) - cpu0;
            // Delivery latency: from the 250 to the sink's receipt, by Message-ID.
            let mut at = std::collections::HashMap::new();
            for m in sink.messages().into_iter().skip(before_sink) {
                let text = String::from_utf8_lossy(&m.data[..m.data.len().min(600)]).into_owned();
                if let Some(id) = text.lines().find_map(|l| l.strip_prefix("Message-ID: ")) {
                    at.insert(id.trim().to_string(), m.at);
                }
            }
            let delivery = acked
                .iter()
                .filter_map(|(id, ok, _)| at.get(id).map(|t| t.saturating_duration_since(*ok)))
                .collect();
            t.runs.push(Run {
                accept_secs,
                e2e_secs,
                latencies: acked.iter().map(|(_, _, l)| *l).collect(),
                delivery,
                cpu_secs: cpu,
                failed,
            });
        }
        eprintln!("round {}/{} done", round + 1, a.rounds);
    }

    println!(
        "\n{:<15} {:>10} {:>9} {:>9} {:>11} {:>9} {:>9} {:>10} {:>7}",
        "configuration",
        "accept/s",
        "p50 ms",
        "p99 ms",
        "deliver/s",
        "dl p50",
        "dl p99",
        "cpu ms/msg",
        "failed"
    );
    let mut lines = Vec::new();
    let mut rate = std::collections::HashMap::new();
    for t in &mut targets {
        let n: usize = t.runs.iter().map(|r| r.latencies.len()).sum();
        let accept: f64 = t.runs.iter().map(|r| r.accept_secs).sum();
        let e2e: f64 = t.runs.iter().map(|r| r.e2e_secs).sum();
        let cpu: f64 = t.runs.iter().map(|r| r.cpu_secs).sum();
        let failed: usize = t.runs.iter().map(|r| r.failed).sum();
        let mut lat: Vec<Duration> = t.runs.iter().flat_map(|r| r.latencies.clone()).collect();
        let mut dl: Vec<Duration> = t.runs.iter().flat_map(|r| r.delivery.clone()).collect();
        let (acc_rate, e2e_rate) = (n as f64 / accept, n as f64 / e2e);
        rate.insert(t.name, e2e_rate);
        let cpu_ms = if t.pid.is_some() {
            1000.0 * cpu / n.max(1) as f64
        } else {
            f64::NAN
        };
        let (p50, p99, d50, d99) = (
            pct(&mut lat, 0.5),
            pct(&mut lat, 0.99),
            pct(&mut dl, 0.5),
            pct(&mut dl, 0.99),
        );
        println!(
            "{:<15} {:>10.0} {:>9.2} {:>9.2} {:>11.0} {:>9.2} {:>9.2} {:>10.3} {:>7}",
            t.name, acc_rate, p50, p99, e2e_rate, d50, d99, cpu_ms, failed
        );
        lines.push(format!(
            "RESULT config={} messages={n} size={} connections={} accept_per_s={acc_rate:.1} accept_p50_ms={p50:.3} accept_p99_ms={p99:.3} delivered_per_s={e2e_rate:.1} delivery_p50_ms={d50:.3} delivery_p99_ms={d99:.3} cpu_ms_per_msg={cpu_ms:.4} failed={failed}",
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
    drop(postfix);
    drop((none, bun, alls));
    Ok(())
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
