//! Crash durability under load: `sluice serve` is killed with SIGKILL at pseudo-random
//! moments while clients keep sending and deliveries to a recording sink are in flight, then
//! restarted on the same spool. At the end every message that got a 250 must have reached
//! the sink at least once; duplicates (at-least-once delivery) are counted and reported.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use sluice_tests::peers::free_port;
use sluice_tests::serve::Serve;
use sluice_tests::sink::{Sink, SinkOptions};
use sluice_tests::*;

/// The most messages the clients send in all.
const MAX_MESSAGES: usize = 3000;

/// Reads one reply; `None` when the connection broke.
async fn reply(r: &mut BufReader<tokio::net::TcpStream>) -> Option<String> {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut line))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        all.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return Some(all);
        }
    }
}

/// One client: sends messages until `stop`, one connection at a time, recording the ids
/// acknowledged with 250. Any break (the server was killed) means reconnect.
async fn client(
    port: u16,
    who: usize,
    next: Arc<AtomicUsize>,
    acked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut c = BufReader::new(tcp);
        if reply(&mut c).await.is_none_or(|r| !r.starts_with("220")) {
            continue;
        }
        if c.get_mut().write_all(b"EHLO load.test\r\n").await.is_err()
            || reply(&mut c).await.is_none()
        {
            continue;
        }
        while !stop.load(Ordering::Relaxed) {
            // Bounded load: at most MAX_MESSAGES in all, each client at most one per 10 ms.
            tokio::time::sleep(Duration::from_millis(10)).await;
            let n = next.fetch_add(1, Ordering::Relaxed);
            if n >= MAX_MESSAGES {
                return;
            }
            let id = format!("<crash-{n}-{who}@load.test>");
            let body = "x".repeat(2000);
            let msg =
                format!("MAIL FROM:<load@load.test>\r\nRCPT TO:<user{n}@sink.test>\r\nDATA\r\n");
            if c.get_mut().write_all(msg.as_bytes()).await.is_err() {
                break;
            }
            let (a, b, d) = (
                reply(&mut c).await,
                reply(&mut c).await,
                reply(&mut c).await,
            );
            if !matches!((&a, &b, &d), (Some(a), Some(b), Some(d)) if a.starts_with("250") && b.starts_with("250") && d.starts_with("354"))
            {
                break;
            }
            let data = format!("Message-ID: {id}\r\nSubject: crash {n}\r\n\r\n{body}\r\n.\r\n");
            if c.get_mut().write_all(data.as_bytes()).await.is_err() {
                break;
            }
            match reply(&mut c).await {
                Some(r) if r.starts_with("250") => acked.lock().unwrap().push(id),
                _ => break,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_under_load_loses_no_acknowledged_message() {
    let sink = Sink::tcp(
        "127.0.0.1:0",
        SinkOptions {
            data_delay: Duration::from_millis(5),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    let port = free_port();
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nhostname = \"mx.test\"\ndata_dir = {:?}\n[plugins]\ncache_dir = {:?}\n[[listener]]\nkind = \"smtp\"\naddress = \"127.0.0.1:{port}\"\n[relay]\nlocal_domains = [\"sink.test\"]\n[authentication]\nverify = false\n[delivery]\nretry_secs = [1]\nconcurrency = 8\n[[route]]\ndomains = [\"sink.test\"]\nkind = \"smtp\"\nhost = \"127.0.0.1:{}\"\ntls = \"none\"\n",
            dir.path(),
            workspace_root().join("target/test-compile-cache"),
            sink.addr.unwrap().port()
        ),
    )
    .unwrap();

    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|who| tokio::spawn(client(port, who, next.clone(), acked.clone(), stop.clone())))
        .collect();

    // Twelve kills, 200..1000 ms apart (a fixed pseudo-random sequence, so a failure
    // repeats), during acceptance and delivery alike.
    let mut rng: u64 = 0x5eed_1234_abcd_ef01;
    let mut kills = 0;
    let mut delivered_at_kill = Vec::new();
    for _ in 0..12 {
        let mut s = Serve::start(&cfg).await;
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokio::time::sleep(Duration::from_millis(200 + rng % 800)).await;
        delivered_at_kill.push((
            acked.lock().unwrap().len(),
            sink.messages().len(),
            sink.unanswered(),
        ));
        s.signal("KILL");
        s.exited(Duration::from_secs(10)).await;
        kills += 1;
    }
    // A last run: the load stops, the queue drains.
    let s = Serve::start(&cfg).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = tokio::time::timeout(Duration::from_secs(15), c).await;
    }
    let spool = sluice::spool::Spool::attach(&dir.path().join("spool")).unwrap();
    for _ in 0..600 {
        let left = spool
            .list(sluice::spool::SpoolState::Queue)
            .map(|l| l.len())
            .unwrap_or(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(s);
    let still_queued = spool
        .list(sluice::spool::SpoolState::Queue)
        .map(|l| l.len())
        .unwrap_or(0);

    let acked = acked.lock().unwrap().clone();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for m in sink.messages() {
        let text = String::from_utf8_lossy(&m.data).into_owned();
        if let Some(id) = text.lines().find_map(|l| l.strip_prefix("Message-ID: ")) {
            *seen.entry(id.trim().to_string()).or_default() += 1;
        }
    }
    let lost: Vec<&String> = acked.iter().filter(|id| !seen.contains_key(*id)).collect();
    let duplicates: usize = seen.values().filter(|n| **n > 1).map(|n| n - 1).sum();
    eprintln!(
        "crash test: {kills} SIGKILLs, {} messages acknowledged, {} delivered ({} distinct), {duplicates} duplicate deliveries, {} lost; at each kill (acked, delivered, in flight at the sink): {delivered_at_kill:?}",
        acked.len(),
        seen.values().sum::<usize>(),
        seen.len(),
        lost.len()
    );
    assert!(kills >= 10, "{kills} kills");
    assert!(
        acked.len() >= 50,
        "too little load: {} acknowledged",
        acked.len()
    );
    assert_eq!(still_queued, 0, "the queue did not drain within 60 s");
    assert!(
        lost.is_empty(),
        "{} acknowledged messages never delivered, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}
