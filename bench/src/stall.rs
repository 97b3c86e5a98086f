//! `sluice-stall`: does a destination that never answers slow down the others?
//!
//! ```text
//! sluice-stall [--messages 1000] [--connections 10] [--stuck 40] [--rounds 3]
//! ```
//!
//! Two configurations of the same in-process Sluice (release build, fsync on), measured in
//! the same run and interleaved round by round:
//! 1. `clear`: `--messages` messages to a healthy next hop (a recording sink);
//! 2. `black-hole`: the same, after `--stuck` messages were queued for a next hop that
//!    accepts connections and never greets (with the default greeting timeout of 300 s, its
//!    deliveries hang for the whole run).
//!
//! In each, one local Maildir delivery is made halfway through. Prints, per configuration,
//! the p50/p99 delivery latency (the client's 250 to the sink having the message) and the
//! time the local delivery took, then the ratios black-hole / clear, and one `RESULT` line
//! of key=value pairs per configuration. Bounded: every wait has a deadline.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sluice_tests::sink::{BlackHole, Sink, SinkOptions};
use sluice_tests::{Conversation, TestServer};

struct Args {
    messages: usize,
    connections: usize,
    stuck: usize,
    rounds: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        messages: 1000,
        connections: 10,
        stuck: 40,
        rounds: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v: usize = it
            .next()
            .with_context(|| format!("{k} needs a number"))?
            .parse()
            .with_context(|| format!("{k} needs a number"))?;
        match k.as_str() {
            "--messages" => a.messages = v.max(1),
            "--connections" => a.connections = v.max(1),
            "--stuck" => a.stuck = v,
            "--rounds" => a.rounds = v.max(1),
            _ => bail!(
                "usage: sluice-stall [--messages N] [--connections N] [--stuck N] [--rounds N]"
            ),
        }
    }
    Ok(a)
}

/// Sends `n` messages to `rcpt` over one session; returns (subject, when its 250 came).
async fn session(
    addr: std::net::SocketAddr,
    rcpt: &str,
    tag: &str,
    ids: std::ops::Range<usize>,
) -> Vec<(String, Instant)> {
    let mut c = Conversation::connect(addr).await;
    c.send("EHLO bench.test").await;
    c.expect("250 ").await;
    let mut acked = Vec::new();
    for i in ids {
        let subject = format!("{tag}-{i}");
        c.begin_transaction("load@bench.test", rcpt).await;
        c.raw(
            format!("Subject: {subject}\r\n\r\nthe numbers for the third quarter\r\n.\r\n")
                .as_bytes(),
        )
        .await;
        c.expect("250 ").await;
        acked.push((subject, Instant::now()));
    }
    c.send("QUIT").await;
    acked
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

/// One measured run: (p50 ms, p99 ms, local delivery ms).
async fn run(a: &Args, black_hole: bool, round: usize) -> anyhow::Result<(f64, f64, f64)> {
    let black = BlackHole::start().await?;
    let sink = Sink::tcp("127.0.0.1:0", SinkOptions::default()).await?;
    let config = format!(
        "[relay]\nlocal_domains = [\"example.org\", \"black.test\", \"healthy.test\"]\n\
         [[route]]\ndomains = [\"black.test\"]\nkind = \"smtp\"\nhost = \"{}\"\ntls = \"none\"\n\
         [[route]]\ndomains = [\"healthy.test\"]\nkind = \"smtp\"\nhost = \"{}\"\ntls = \"none\"\n",
        black.addr,
        sink.addr.context("sink address")?
    );
    let s = TestServer::start(&config, &[]).await;
    if black_hole && a.stuck > 0 {
        session(s.smtp, "x@black.test", "stuck", 0..a.stuck).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while black.open() == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if black.open() == 0 {
            bail!("the black hole got no connection within 30 s");
        }
    }
    let tag = format!("r{round}");
    let per = a.messages.div_ceil(a.connections);
    let mut senders = Vec::new();
    for c in 0..a.connections {
        let ids = (c * per)..((c + 1) * per).min(a.messages);
        let tag = tag.clone();
        let addr = s.smtp;
        senders.push(tokio::spawn(async move {
            session(addr, "y@healthy.test", &tag, ids).await
        }));
    }
    // Halfway through, one local delivery.
    let local_sent = loop {
        if sink.count() >= a.messages / 2 {
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    sluice_tests::send_to_bob(s.smtp, "local", "during the load").await;
    let local = {
        let new = s.dir.path().join("maildir/bob/new");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::fs::read_dir(&new).is_ok_and(|mut d| d.next().is_some()) {
                break local_sent.elapsed();
            }
            if Instant::now() > deadline {
                bail!("the local delivery did not land within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let mut acked = std::collections::HashMap::new();
    for t in senders {
        acked.extend(t.await?);
    }
    let got = sink.wait_for(a.messages, Duration::from_secs(120)).await;
    if got.len() < a.messages {
        bail!(
            "only {} of {} messages delivered within 120 s",
            got.len(),
            a.messages
        );
    }
    let mut latencies: Vec<Duration> = got
        .iter()
        .filter_map(|m| {
            let text = String::from_utf8_lossy(&m.data);
            let subject = text.lines().find_map(|l| l.strip_prefix("Subject: "))?;
            let acked_at = acked.get(subject)?;
            Some(m.at.saturating_duration_since(*acked_at))
        })
        .collect();
    if latencies.len() < a.messages {
        bail!(
            "{} of {} deliveries could be matched",
            latencies.len(),
            a.messages
        );
    }
    let out = (
        pct(&mut latencies, 0.5),
        pct(&mut latencies, 0.99),
        local.as_secs_f64() * 1000.0,
    );
    if black_hole && black.open() == 0 {
        bail!("the black hole's connections ended during the run: it did not hang");
    }
    s.stop().await;
    Ok(out)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let mut results: [(Vec<f64>, Vec<f64>, Vec<f64>); 2] = Default::default();
    for round in 0..a.rounds {
        for (i, black_hole) in [false, true].into_iter().enumerate() {
            let (p50, p99, local) = run(&a, black_hole, round * 2 + i).await?;
            eprintln!(
                "round {} {:<10} p50 {p50:7.1} ms  p99 {p99:7.1} ms  local {local:7.1} ms",
                round + 1,
                if black_hole { "black-hole" } else { "clear" }
            );
            results[i].0.push(p50);
            results[i].1.push(p99);
            results[i].2.push(local);
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "{} messages to a healthy next hop over {} connections; black hole: {} messages stuck; median of {} rounds",
        a.messages, a.connections, a.stuck, a.rounds
    );
    println!(
        "{:<12} {:>10} {:>10} {:>12}",
        "config", "p50 ms", "p99 ms", "local ms"
    );
    let rows: Vec<(&str, f64, f64, f64)> = ["clear", "black-hole"]
        .iter()
        .zip(&results)
        .map(|(n, r)| (*n, median(&r.0), median(&r.1), median(&r.2)))
        .collect();
    for (n, p50, p99, local) in &rows {
        println!("{n:<12} {p50:>10.1} {p99:>10.1} {local:>12.1}");
    }
    for (n, p50, p99, local) in &rows {
        println!("RESULT config={n} p50_ms={p50:.1} p99_ms={p99:.1} local_ms={local:.1}");
    }
    println!(
        "ratio black-hole/clear: p50 {:.2}, p99 {:.2}, local {:.2}",
        rows[1].1 / rows[0].1,
        rows[1].2 / rows[0].2,
        rows[1].3 / rows[0].3
    );
    Ok(())
}
