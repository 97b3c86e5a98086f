//! Per-transaction cost of a plugin: a fresh instance plus `verify-sender`, `check-recipient`
//! and `check-message` on a 10 KB message, for a Rust, a Python and a JavaScript plugin; and
//! the time to load each plugin from a cold compile versus from the compile cache.
//!
//! Run: `scripts/bench-plugins` (builds the plugins and this binary in release mode).
//! Prints a table and one machine-readable line per plugin. The Rust plugin is the baseline:
//! the other rows show their ratio to it, measured in the same run, interleaved round by round
//! so a noisy machine affects all rows alike.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sluice::config::Config;
use sluice::plugin::bindings::types::{Address, Envelope, Session};
use sluice::plugin::engine::PoolSize;
use sluice::plugin::{LoadedPlugin, PluginInstance, Runtime};

const ROUNDS: usize = 20;
const PER_ROUND: usize = 25;

fn address(a: &str) -> Address {
    Address {
        address: a.into(),
        params: Vec::new(),
    }
}

/// A realistic 10 KB message: common headers and a plain-text body.
fn message_10k() -> Vec<u8> {
    let mut m = String::from(
        "Received: from mail.example.org (mail.example.org [192.0.2.10])\r\n\tby mx.example.net with ESMTPS id 4Xyz; Sat, 28 Nov 2026 10:00:00 +0000\r\nFrom: Alice Example <alice@example.org>\r\nTo: Bob Example <bob@example.net>\r\nSubject: Quarterly report and meeting notes\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\nMessage-ID: <20261128100000.1234@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
    );
    let line = "The quarterly figures are attached below; please review them before Thursday.\r\n";
    while m.len() < 10 * 1024 {
        m.push_str(line);
    }
    m.into_bytes()
}

fn load_config() -> Config {
    let mut c = Config::default();
    c.plugins.defaults.memory_mb = 128;
    c.plugins.defaults.timeout_ms = 5000;
    c
}

async fn load(rt: &Runtime, name: &str, file: &Path) -> anyhow::Result<Arc<LoadedPlugin>> {
    let c = load_config();
    Ok(sluice::plugin::loader::load(
        rt,
        file,
        name,
        &c.plugin_settings(name),
        &c.plugins.defaults,
    )
    .await?)
}

async fn one_transaction(
    p: &Arc<LoadedPlugin>,
    msg: &sluice::plugin::bindings::types::Message,
) -> anyhow::Result<()> {
    let session = Session {
        listener: "bench".into(),
        client_ip: "192.0.2.1".into(),
        client_port: 1,
        helo: "client.example".into(),
        tls: None,
        auth_user: None,
        transaction_id: "bench".into(),
    };
    let mut inst = PluginInstance::new(p.clone())
        .await
        .map_err(|f| anyhow::anyhow!("{f}"))?;
    let sender = address("alice@example.org");
    inst.verify_sender(&session, &sender)
        .await
        .map_err(|f| anyhow::anyhow!("{f}"))?;
    let mut env = Envelope {
        sender,
        recipients: Vec::new(),
    };
    let rcpt = address("bob@example.net");
    inst.check_recipient(&session, &env, &rcpt)
        .await
        .map_err(|f| anyhow::anyhow!("{f}"))?;
    env.recipients.push(rcpt);
    inst.check_message(&session, &env, msg)
        .await
        .map_err(|f| anyhow::anyhow!("{f}"))?;
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let plugins = [
        (
            "rust (tagger)",
            "tagger",
            root.join("target/plugins/test/tagger.wasm"),
        ),
        (
            "python (python-attachments)",
            "python-attachments",
            root.join("target/plugins/examples/python-attachments.wasm"),
        ),
        (
            "javascript (js-keywords)",
            "js-keywords",
            root.join("target/plugins/examples/js-keywords.wasm"),
        ),
        (
            "rust (bundled spam-score)",
            "spam-score",
            root.join("target/plugins/bundled/20-spam-score.wasm"),
        ),
    ];
    for (_, _, f) in &plugins {
        anyhow::ensure!(
            f.is_file(),
            "{} is missing: run scripts/build-plugins",
            f.display()
        );
    }
    let pool = PoolSize {
        max_memory_bytes: 256 << 20,
        max_instances: 64,
    };

    // Compile cost: cold (empty cache) versus cache hit, each in a fresh runtime.
    let cache = tempfile::tempdir()?;
    let mut compile = Vec::new();
    for (label, name, file) in &plugins {
        let rt = Runtime::new(pool, cache.path())?;
        let t = Instant::now();
        load(&rt, name, file)
            .await
            .with_context(|| label.to_string())?;
        let cold = t.elapsed();
        let rt = Runtime::new(pool, cache.path())?;
        let t = Instant::now();
        let p = load(&rt, name, file).await?;
        let hit = t.elapsed();
        anyhow::ensure!(
            p.cache == sluice::plugin::cache::CacheOutcome::Hit,
            "expected a cache hit"
        );
        compile.push((cold, hit));
    }

    // Per-transaction cost, interleaved by round.
    let rt = Runtime::new(pool, cache.path())?;
    let mut loaded = Vec::new();
    for (_, name, file) in &plugins {
        loaded.push(load(&rt, name, file).await?);
    }
    let msg = sluice::pipeline::message(message_10k());
    for p in &loaded {
        for _ in 0..5 {
            one_transaction(p, &msg).await?; // warm-up
        }
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); loaded.len()];
    for _ in 0..ROUNDS {
        for (i, p) in loaded.iter().enumerate() {
            for _ in 0..PER_ROUND {
                let t = Instant::now();
                one_transaction(p, &msg).await?;
                samples[i].push(t.elapsed());
            }
        }
    }

    println!(
        "per transaction = new instance + verify-sender + check-recipient + check-message (10 KB message)"
    );
    println!(
        "{} transactions per plugin, interleaved in {ROUNDS} rounds\n",
        ROUNDS * PER_ROUND
    );
    println!(
        "{:<30} {:>10} {:>10} {:>10} {:>12} {:>12} {:>12}",
        "plugin", "mean µs", "p50 µs", "p99 µs", "vs rust", "compile ms", "cache-hit ms"
    );
    let mut base = 0.0;
    let mut lines = Vec::new();
    for (i, (label, name, _)) in plugins.iter().enumerate() {
        let s = &mut samples[i];
        s.sort();
        let mean = s.iter().map(Duration::as_secs_f64).sum::<f64>() / s.len() as f64 * 1e6;
        if i == 0 {
            base = mean;
        }
        let (p50, p99) = (
            percentile(s, 0.5).as_secs_f64() * 1e6,
            percentile(s, 0.99).as_secs_f64() * 1e6,
        );
        let (cold, hit) = compile[i];
        println!(
            "{label:<30} {mean:>10.1} {p50:>10.1} {p99:>10.1} {:>11.2}x {:>12.1} {:>12.2}",
            mean / base,
            cold.as_secs_f64() * 1e3,
            hit.as_secs_f64() * 1e3
        );
        lines.push(format!(
            "BENCH plugin={name} mean_us={mean:.1} p50_us={p50:.1} p99_us={p99:.1} ratio_vs_rust={:.2} compile_ms={:.1} cache_hit_ms={:.2}",
            mean / base,
            cold.as_secs_f64() * 1e3,
            hit.as_secs_f64() * 1e3
        ));
    }
    println!();
    for l in lines {
        println!("{l}");
    }
    Ok(())
}
