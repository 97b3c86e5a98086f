//! Per-transaction cost of a plugin: a fresh instance plus those of `verify-sender`,
//! `check-recipient` and `check-message` it asked for (as the pipeline calls them), on a 5 KB message (`--size BYTES` for another), for a Rust, a Python and a JavaScript plugin; and
//! the time to load each plugin from a cold compile versus from the compile cache. Then the
//! cost of one capability call from a plugin: a `kv` call on the embedded store and on Redis
//! (a loopback `redis-server`, when installed), and a cached and an uncached DNS lookup (a
//! loopback DNS server) — each the difference between transactions of the `kv-probe` test
//! plugin with and without N calls, divided by N.
//!
//! Run: `scripts/bench-plugins` (builds the plugins and this binary in release mode);
//! `--only python-attachments` (names, comma-separated) measures only those, e.g. under `perf`;
//! `--size 102400` sets the message size; `--plugin NAME=FILE` adds a plugin of yours.
//! Prints a table and one machine-readable line per plugin. The Rust plugin is the baseline:
//! the other rows show their ratio to it, measured in the same run, interleaved round by round
//! so a noisy machine affects all rows alike.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sluice::config::{Capability, Config, PluginSettings};
use sluice::plugin::bindings::types::{Address, Envelope, Session};
use sluice::plugin::capabilities::{PluginDns, Services};
use sluice::plugin::engine::PoolSize;
use sluice::plugin::view::MessageView;
use sluice::plugin::{Hook, LoadedPlugin, PluginInstance, Runtime};
use sluice::store::KvStore;

const ROUNDS: usize = 20;
/// Transaction ids, unique so that `lookup_fresh` names are never cached.
static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
const PER_ROUND: usize = 25;

fn address(a: &str) -> Address {
    Address {
        address: a.into(),
        params: Vec::new(),
    }
}

/// A realistic message of about `size` bytes: common headers and a plain-text body.
fn message_of(size: usize) -> Vec<u8> {
    let mut m = String::from(
        "Received: from mail.example.org (mail.example.org [192.0.2.10])\r\n\tby mx.example.net with ESMTPS id 4Xyz; Sat, 28 Nov 2026 10:00:00 +0000\r\nFrom: Alice Example <alice@example.org>\r\nTo: Bob Example <bob@example.net>\r\nSubject: Quarterly report and meeting notes\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\nMessage-ID: <20261128100000.1234@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
    );
    let line = "The quarterly figures are attached below; please review them before Thursday.\r\n";
    while m.len() < size {
        m.push_str(line);
    }
    m.into_bytes()
}

/// The directory of the largest site model spam-score accepts, for the `spam-score-site` row.
static SITE_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Writes a site model with the most features `sluice spam learn` ever writes.
fn full_site_model(dir: &Path) -> anyhow::Result<()> {
    let mut weights = std::collections::BTreeMap::new();
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let n: usize = std::env::var("SITE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(sluice_spam::site::MAX_FEATURES);
    while weights.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        weights.insert((x >> 44) as u32, ((x & 0xff) as f32 - 128.0) / 256.0);
    }
    std::fs::write(
        dir.join("learned.bin"),
        sluice_spam::site::to_bytes(&weights),
    )?;
    Ok(())
}

fn load_config() -> Config {
    let mut c = Config::default();
    if let Some(dir) = SITE_DIR.get() {
        let mut config = toml::Table::new();
        config.insert(
            "learned".into(),
            toml::Value::String(dir.join("learned.bin").display().to_string()),
        );
        c.plugin.insert(
            "spam-score-site".into(),
            PluginSettings {
                read_dirs: vec![dir.clone()],
                config,
                ..PluginSettings::default()
            },
        );
    }
    c.plugins.defaults.memory_mb = 128;
    c.plugins.defaults.timeout_ms = 5000;
    c.plugins.defaults.kv_ops_per_call = 1000;
    // The JavaScript example counts flagged senders in `kv`.
    c.plugin.insert(
        "js-keywords".into(),
        PluginSettings {
            capabilities: vec![Capability::Kv],
            ..PluginSettings::default()
        },
    );
    c
}

async fn load(rt: &Runtime, name: &str, file: &Path) -> anyhow::Result<Arc<LoadedPlugin>> {
    load_with(rt, name, file, toml::Table::new()).await
}

/// Loads `file` as `name` with its plugin settings `config` and every capability granted.
async fn load_with(
    rt: &Runtime,
    name: &str,
    file: &Path,
    config: toml::Table,
) -> anyhow::Result<Arc<LoadedPlugin>> {
    let mut c = load_config();
    if name == "kv-probe" {
        c.plugin.insert(
            name.into(),
            PluginSettings {
                capabilities: vec![Capability::Kv, Capability::Dns],
                config,
                ..PluginSettings::default()
            },
        );
    }
    Ok(sluice::plugin::loader::load(
        rt,
        file,
        name,
        &c.plugin_settings(name),
        &c.plugins.defaults,
    )
    .await?)
}

/// Where one transaction's time went: the fresh instance, then the three hooks.
#[derive(Clone, Copy, Default)]
struct Phases {
    instantiate: Duration,
    hooks: Duration,
}

async fn one_transaction(
    p: &Arc<LoadedPlugin>,
    msg: &sluice::plugin::bindings::types::Message,
) -> anyhow::Result<()> {
    timed_transaction(p, msg).await.map(|_| ())
}

async fn timed_transaction(
    p: &Arc<LoadedPlugin>,
    msg: &sluice::plugin::bindings::types::Message,
) -> anyhow::Result<Phases> {
    let t0 = Instant::now();
    let session = Session {
        listener: "bench".into(),
        client_ip: "192.0.2.1".into(),
        client_port: 1,
        helo: "client.example".into(),
        tls: None,
        auth_user: None,
        transaction_id: format!(
            "bench-{}",
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ),
    };
    let mut inst = PluginInstance::new(p.clone())
        .await
        .map_err(|f| anyhow::anyhow!("{f}"))?;
    let t1 = Instant::now();
    // Only the hooks the plugin asked for, as the pipeline calls them.
    let sender = address("alice@example.org");
    if p.wants(Hook::VerifySender) {
        inst.verify_sender(&session, &sender)
            .await
            .map_err(|f| anyhow::anyhow!("{f}"))?;
    }
    let mut env = Envelope {
        sender,
        recipients: Vec::new(),
    };
    let rcpt = address("bob@example.net");
    if p.wants(Hook::CheckRecipient) {
        inst.check_recipient(&session, &env, &rcpt)
            .await
            .map_err(|f| anyhow::anyhow!("{f}"))?;
    }
    env.recipients.push(rcpt);
    if p.wants(Hook::CheckMessage) {
        // As the pipeline does: the transaction's view of the message, parsed when a plugin
        // first asks (so a plugin that reads the view pays for the host's parse here).
        let view = Arc::new(MessageView::new(msg.clone()));
        inst.set_message_view(view.clone());
        inst.check_message(&session, &env, view.message())
            .await
            .map_err(|f| anyhow::anyhow!("{f}"))?;
    }
    let t2 = Instant::now();
    drop(inst);
    Ok(Phases {
        instantiate: t1 - t0,
        hooks: t2 - t1,
    })
}

/// Minor page faults of this process so far (`/proc/self/stat`, field 10; 0 elsewhere).
fn minor_faults() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // The command name, field 2, is in parentheses and may contain spaces.
            let rest = s.rsplit_once(')')?.1;
            rest.split_whitespace().nth(7)?.parse().ok()
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    // Everything runs on Sluice's plugin thread, where the server creates, calls and drops
    // its sandboxes; the transactions measured here make no hop between threads.
    sluice::plugin::executor::run(measure()).await
}

async fn measure() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut plugins = vec![
        (
            "rust (tagger)".to_string(),
            "tagger",
            root.join("target/plugins/test/tagger.wasm"),
        ),
        (
            "python (python-attachments)".to_string(),
            "python-attachments",
            root.join("target/plugins/examples/python-attachments.wasm"),
        ),
        (
            "javascript (js-keywords)".to_string(),
            "js-keywords",
            root.join("target/plugins/examples/js-keywords.wasm"),
        ),
        (
            "rust (bundled spam-score)".to_string(),
            "spam-score",
            root.join("target/plugins/bundled/20-spam-score.wasm"),
        ),
        (
            "spam-score, full site model".to_string(),
            "spam-score-site",
            root.join("target/plugins/bundled/20-spam-score.wasm"),
        ),
    ];
    // The site model `sluice spam learn` writes, at its largest (read every transaction).
    let site = tempfile::tempdir()?;
    full_site_model(site.path())?;
    let _ = SITE_DIR.set(site.path().to_path_buf());
    // One pass over the arguments; anything else is refused.
    // - `--plugin NAME=FILE` (repeatable): your own plugins as further rows;
    // - `--only NAME[,NAME]`: measure only these plugins (for `perf record`), and no
    //   capability calls; the first row measured is then the baseline of the ratio column;
    // - `--size BYTES`: the message size (default 5 KB).
    let usage = "usage: plugin-cost [--only NAME,...] [--plugin NAME=FILE]... [--size BYTES]";
    let mut only: Option<Vec<String>> = None;
    let mut size = 5 * 1024;
    let mut args = std::env::args().skip(1).collect::<Vec<_>>().into_iter();
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{a} needs a value; {usage}"))
        };
        match a.as_str() {
            "--plugin" => {
                let v = value()?;
                let (name, file) = v.split_once('=').context("--plugin takes NAME=FILE")?;
                let name: &'static str = Box::leak(name.to_string().into_boxed_str());
                plugins.push((format!("{name} (--plugin)"), name, PathBuf::from(file)));
            }
            "--only" => only = Some(value()?.split(',').map(str::to_string).collect()),
            "--size" => {
                size = value()?
                    .parse()
                    .ok()
                    .filter(|n| (200..=50 << 20).contains(n))
                    .context("--size takes a number of bytes from 200 to 52428800")?;
            }
            _ => anyhow::bail!("unknown argument {a:?}; {usage}"),
        }
    }
    let plugins: Vec<_> = plugins
        .into_iter()
        .filter(|(_, name, _)| only.as_ref().is_none_or(|o| o.iter().any(|o| o == name)))
        .collect();
    anyhow::ensure!(
        !plugins.is_empty(),
        "--only names no plugin of this benchmark"
    );
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
        threads: 1,
    };

    // Compile cost: cold (empty cache) versus cache hit, each in a fresh runtime.
    let cache = tempfile::tempdir()?;
    let scratch = || -> anyhow::Result<Services> {
        Ok(Services {
            kv: Some(KvStore::Embedded(
                sluice::store::embedded::Embedded::in_memory()?,
            )),
            dns: None,
        })
    };
    let mut compile = Vec::new();
    for (label, name, file) in &plugins {
        let rt = Runtime::new(pool, cache.path())?.with_services(scratch()?);
        let t = Instant::now();
        load(&rt, name, file)
            .await
            .with_context(|| label.to_string())?;
        let cold = t.elapsed();
        let rt = Runtime::new(pool, cache.path())?.with_services(scratch()?);
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
    let rt = Runtime::new(pool, cache.path())?.with_services(scratch()?);
    let mut loaded = Vec::new();
    for (_, name, file) in &plugins {
        loaded.push(load(&rt, name, file).await?);
    }
    let msg = sluice::pipeline::message(message_of(size));
    for p in &loaded {
        for _ in 0..5 {
            one_transaction(p, &msg).await?; // warm-up
        }
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); loaded.len()];
    let mut phases = vec![Phases::default(); loaded.len()];
    let mut faults = vec![0u64; loaded.len()];
    for _ in 0..ROUNDS {
        for (i, p) in loaded.iter().enumerate() {
            let f0 = minor_faults();
            for _ in 0..PER_ROUND {
                let t = Instant::now();
                let ph = timed_transaction(p, &msg).await?;
                samples[i].push(t.elapsed());
                phases[i].instantiate += ph.instantiate;
                phases[i].hooks += ph.hooks;
            }
            faults[i] += minor_faults() - f0;
        }
    }

    println!(
        "per transaction = new instance + verify-sender + check-recipient + check-message ({} byte message)",
        msg.raw.len()
    );
    println!(
        "{} transactions per plugin, interleaved in {ROUNDS} rounds\n",
        ROUNDS * PER_ROUND
    );
    println!(
        "{:<30} {:>10} {:>10} {:>10} {:>12} {:>12} {:>12} {:>9} {:>9} {:>9}",
        "plugin",
        "mean µs",
        "p50 µs",
        "p99 µs",
        "vs rust",
        "compile ms",
        "cache-hit ms",
        "inst µs",
        "hooks µs",
        "faults"
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
        let n = s.len() as f64;
        let inst_us = phases[i].instantiate.as_secs_f64() / n * 1e6;
        let hooks_us = phases[i].hooks.as_secs_f64() / n * 1e6;
        let faults_per = faults[i] as f64 / n;
        println!(
            "{label:<30} {mean:>10.1} {p50:>10.1} {p99:>10.1} {:>11.2}x {:>12.1} {:>12.2} {inst_us:>9.1} {hooks_us:>9.1} {faults_per:>9.1}",
            mean / base,
            cold.as_secs_f64() * 1e3,
            hit.as_secs_f64() * 1e3
        );
        lines.push(format!(
            "BENCH plugin={name} mean_us={mean:.1} p50_us={p50:.1} p99_us={p99:.1} ratio_vs_rust={:.2} compile_ms={:.1} cache_hit_ms={:.2} instantiate_us={inst_us:.1} hooks_us={hooks_us:.1} minor_faults={faults_per:.1}",
            mean / base,
            cold.as_secs_f64() * 1e3,
            hit.as_secs_f64() * 1e3
        ));
    }
    println!();
    for l in lines {
        println!("{l}");
    }
    if only.is_some() {
        return Ok(());
    }
    capability_costs(&root, pool, cache.path(), &msg).await
}

/// Mean time of `n` transactions of `p`.
async fn mean_of(
    p: &Arc<LoadedPlugin>,
    msg: &sluice::plugin::bindings::types::Message,
    n: usize,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    for _ in 0..n {
        one_transaction(p, msg).await?;
    }
    Ok(t.elapsed().as_secs_f64() / n as f64 * 1e6)
}

/// The cost of one `kv` or `dns` call from a plugin, by difference.
async fn capability_costs(
    root: &Path,
    pool: PoolSize,
    cache: &Path,
    msg: &sluice::plugin::bindings::types::Message,
) -> anyhow::Result<()> {
    const CALLS: i64 = 20;
    const TRANSACTIONS: usize = 300;
    let probe = root.join("target/plugins/test/kv-probe.wasm");
    anyhow::ensure!(
        probe.is_file(),
        "{} is missing: run scripts/build-plugins",
        probe.display()
    );
    let dns = sluice_tests::dns::Dns::start(
        sluice_tests::dns::Zone::new().addr("cached.bench.test", "127.0.0.2".parse()?),
    )
    .await;
    let resolver = Arc::new(PluginDns::new(
        Some(&dns.addr.to_string()),
        Duration::from_secs(2),
    ));
    let store_dir = tempfile::tempdir()?;
    let mut stores = vec![(
        "embedded",
        KvStore::Embedded(sluice::store::embedded::Embedded::open(
            &store_dir.path().join("kv.redb"),
            Duration::from_secs(1),
        )?),
    )];
    let redis = if Path::new("/usr/bin/redis-server").exists() {
        let r = sluice_tests::peers::Redis::start();
        stores.push((
            "redis",
            KvStore::Redis(
                sluice::store::redis::Redis::new(&r.url(0), None).map_err(anyhow::Error::msg)?,
            ),
        ));
        Some(r)
    } else {
        println!("(redis-server is not installed: no Redis figures)");
        None
    };
    let settings = |text: &str| -> anyhow::Result<toml::Table> { Ok(toml::from_str(text)?) };
    println!(
        "\none capability call from a plugin (kv-probe; {CALLS} calls per transaction versus none, {TRANSACTIONS} transactions each)"
    );
    println!("{:<42} {:>10}", "call", "µs/call");
    let mut results = Vec::new();
    for (label, store) in &stores {
        let rt = Runtime::new(pool, cache)?.with_services(Services {
            kv: Some(store.clone()),
            dns: Some(resolver.clone()),
        });
        let base = load_with(&rt, "kv-probe", &probe, settings("")?).await?;
        let gets = load_with(
            &rt,
            "kv-probe",
            &probe,
            settings(&format!("gets = {CALLS}"))?,
        )
        .await?;
        let incrs = load_with(
            &rt,
            "kv-probe",
            &probe,
            settings(&format!("incrs = {CALLS}"))?,
        )
        .await?;
        for p in [&base, &gets, &incrs] {
            mean_of(p, msg, 20).await?; // warm-up
        }
        let (mut b, mut g, mut i) = (0.0, 0.0, 0.0);
        for _ in 0..3 {
            b += mean_of(&base, msg, TRANSACTIONS / 3).await?;
            g += mean_of(&gets, msg, TRANSACTIONS / 3).await?;
            i += mean_of(&incrs, msg, TRANSACTIONS / 3).await?;
        }
        results.push((format!("kv.get ({label})"), (g - b) / 3.0 / CALLS as f64));
        results.push((
            format!("kv.increment ({label})"),
            (i - b) / 3.0 / CALLS as f64,
        ));
    }
    let rt = Runtime::new(pool, cache)?.with_services(Services {
        kv: Some(stores[0].1.clone()),
        dns: Some(resolver.clone()),
    });
    let base = load_with(&rt, "kv-probe", &probe, settings("")?).await?;
    let cached = load_with(
        &rt,
        "kv-probe",
        &probe,
        settings(&format!(
            "lookup = \"cached.bench.test\"\nlookups = {CALLS}"
        ))?,
    )
    .await?;
    let fresh = load_with(
        &rt,
        "kv-probe",
        &probe,
        settings("lookup_fresh = \"fresh.bench.test\"")?,
    )
    .await?;
    mean_of(&cached, msg, 5).await?;
    let (mut b, mut c, mut f) = (0.0, 0.0, 0.0);
    for _ in 0..3 {
        b += mean_of(&base, msg, TRANSACTIONS / 3).await?;
        c += mean_of(&cached, msg, TRANSACTIONS / 3).await?;
        f += mean_of(&fresh, msg, TRANSACTIONS / 3).await?;
    }
    results.push(("dns.lookup-a, cached".into(), (c - b) / 3.0 / CALLS as f64));
    results.push((
        "dns.lookup-a, uncached (loopback server)".into(),
        (f - b) / 3.0,
    ));
    for (label, us) in &results {
        println!("{label:<42} {us:>10.1}");
    }
    println!();
    for (label, us) in &results {
        println!("BENCH capability=\"{label}\" us_per_call={us:.1}");
    }
    drop(redis);
    Ok(())
}
