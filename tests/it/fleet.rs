//! The bundled greylisting and rate-limit plugins on a store shared by a fleet: two `sluice
//! serve` nodes on one real `redis-server` (password, database index), a Redis outage under
//! load, and the embedded store surviving a SIGKILL. Mail is sent with Python's smtplib.

use std::path::Path;
use std::time::{Duration, Instant};

use sluice_tests::peers::Redis;
use sluice_tests::serve::Serve;
use sluice_tests::*;

/// Sends each job `[port, sender, recipient]` with smtplib, `concurrency` at a time, and
/// prints one line per job, in order: the SMTP code that ended it (250 when accepted) and the
/// seconds it took.
const SEND: &str = r#"
import json, os, smtplib, time
from concurrent.futures import ThreadPoolExecutor
def send(job):
    port, sender, rcpt = job
    started = time.monotonic()
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as s:
            s.sendmail(sender, [rcpt], "Subject: fleet\r\nFrom: %s\r\n\r\nhello\r\n" % sender)
        code = 250
    except smtplib.SMTPRecipientsRefused as e:
        code = list(e.recipients.values())[0][0]
    except smtplib.SMTPResponseException as e:
        code = e.smtp_code
    return "%d %.3f" % (code, time.monotonic() - started)
jobs = json.loads(os.environ["JOBS"])
with ThreadPoolExecutor(int(os.environ.get("CONCURRENCY", "1"))) as pool:
    for line in pool.map(send, jobs):
        print(line)
"#;

/// The codes (and the longest time) of sending `jobs`.
async fn send(jobs: &[(u16, &str, &str)], concurrency: usize) -> (Vec<u16>, f64) {
    let json = serde_json::to_string(jobs).unwrap();
    let out = python(
        SEND,
        &[("JOBS", json), ("CONCURRENCY", concurrency.to_string())],
    )
    .await;
    let mut codes = Vec::new();
    let mut longest: f64 = 0.0;
    for line in out.lines() {
        let (code, secs) = line.split_once(' ').unwrap();
        codes.push(code.parse().unwrap());
        longest = longest.max(secs.parse().unwrap());
    }
    (codes, longest)
}

/// A node's configuration in `dir`: the optional plugins `plugins` installed, `extra` TOML
/// appended.
fn node(dir: &Path, plugins: &[&str], extra: &str) -> std::path::PathBuf {
    let plugin_dir = dir.join("plugins");
    std::fs::create_dir_all(&plugin_dir).unwrap();
    for p in plugins {
        let file = plugin("optional", p);
        std::fs::copy(&file, plugin_dir.join(file.file_name().unwrap())).unwrap();
    }
    let cfg = dir.join("sluice.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nhostname = \"mx.test\"\ndata_dir = {:?}\n[plugins]\ncache_dir = {:?}\n\
             [[listener]]\nkind = \"smtp\"\naddress = \"127.0.0.1:0\"\n\
             [relay]\nlocal_domains = [\"example.org\"]\n[authentication]\nverify = false\n{extra}\n",
            dir,
            workspace_root().join("target/test-compile-cache"),
        ),
    )
    .unwrap();
    cfg
}

fn delivered(dir: &Path, user: &str) -> usize {
    maildir_files(&dir.join("maildir").join(user).join("new")).len()
}

/// Waits (bounded: 10 s) until `user` has `n` messages in `dir`'s Maildir.
async fn wait_delivered(dir: &Path, user: &str, n: usize) -> usize {
    for _ in 0..200 {
        if delivered(dir, user) >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    delivered(dir, user)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_on_one_redis_share_rate_limits_and_greylist_entries() {
    let redis = Redis::start();
    let shared = format!(
        "[store]\nurl = {:?}\n\
         [plugin.rate-limit]\ncapabilities = [\"kv\"]\n[plugin.rate-limit.config]\nsender_domain.count = 5\nsender_domain.window_secs = 3600\n\
         [plugin.greylisting]\ncapabilities = [\"kv\"]\n[plugin.greylisting.config]\ndelay_secs = 2\nallow_after_passes = 0\nallow_sender_domains = [\"rl.test\"]\n",
        redis.url(3)
    );
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Serve::start(&node(
        a_dir.path(),
        &["05-rate-limit", "30-greylisting"],
        &shared,
    ))
    .await;
    let b = Serve::start(&node(
        b_dir.path(),
        &["05-rate-limit", "30-greylisting"],
        &shared,
    ))
    .await;
    let (pa, pb) = (a.smtp.port(), b.smtp.port());

    // Greylisting: the first attempt, on node A, is refused; the retry after the delay, on
    // node B, passes — the entry A made is in the shared store.
    let (codes, _) = send(&[(pa, "g@grey.test", "bob@example.org")], 1).await;
    assert_eq!(codes, [451]);
    let (codes, _) = send(&[(pb, "g@grey.test", "bob@example.org")], 1).await;
    assert_eq!(codes, [451], "too early on node B as well");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (codes, _) = send(&[(pb, "g@grey.test", "bob@example.org")], 1).await;
    assert_eq!(codes, [250]);

    // Rate limit: 5 messages per sender domain, counted across both nodes. Three via A and two
    // via B pass; the sixth is refused on either node.
    let mut jobs = vec![(pa, "r@rl.test", "bob@example.org"); 3];
    jobs.extend(vec![(pb, "r@rl.test", "bob@example.org"); 2]);
    let (codes, _) = send(&jobs, 1).await;
    assert_eq!(codes, [250; 5]);
    let (codes, _) = send(
        &[
            (pa, "r@rl.test", "bob@example.org"),
            (pb, "s@rl.test", "bob@example.org"),
        ],
        1,
    )
    .await;
    assert_eq!(codes, [450, 450]);
    // Another domain is not affected.
    let (codes, _) = send(&[(pb, "x@other-rl.test", "bob@example.org")], 1).await;
    assert_eq!(codes, [451], "greylisted, not rate limited");

    // The state is in database 3, under Sluice's prefix and each plugin's namespace.
    let keys = redis.cli(3, &["--scan"]);
    assert!(
        keys.lines()
            .any(|k| k.starts_with("sluice:kv:greylisting:t:127.0.0.0/24:g@grey.test:")),
        "{keys}"
    );
    assert!(
        keys.lines()
            .any(|k| k.starts_with("sluice:kv:rate-limit:sender_domain:rl.test:")),
        "{keys}"
    );
    assert!(
        redis.cli(0, &["--scan"]).trim().is_empty(),
        "nothing in database 0"
    );
    // Six accepted messages, all delivered, by one node or the other.
    let total =
        wait_delivered(a_dir.path(), "bob", 1).await + wait_delivered(b_dir.path(), "bob", 1).await;
    assert_eq!(total, 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_outage_under_load_tempfails_by_policy_loses_nothing_and_recovers() {
    let mut redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = node(
        dir.path(),
        &["05-rate-limit"],
        &format!(
            "[store]\nurl = {:?}\n[plugin.rate-limit]\ncapabilities = [\"kv\"]\ntimeout_ms = 1000\n\
             [plugin.rate-limit.config]\nclient.count = 100000\n",
            redis.url(0)
        ),
    );
    let s = Serve::start(&cfg).await;
    let port = s.smtp.port();
    let jobs = |n: usize| vec![(port, "a@sender.test", "bob@example.org"); n];
    let mut accepted = 0;

    let (codes, _) = send(&jobs(20), 5).await;
    assert_eq!(codes, vec![250; 20]);
    accepted += 20;

    // Redis goes away: every transaction is answered 451 (the default policy, tempfail)
    // within the plugin's deadline, never left waiting.
    redis.kill();
    let started = Instant::now();
    let (codes, longest) = send(&jobs(20), 5).await;
    assert_eq!(codes, vec![451; 20]);
    assert!(longest < 5.0, "a transaction waited {longest} s");
    assert!(started.elapsed() < Duration::from_secs(15));

    // Redis returns: the store reconnects by itself and mail flows again.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (codes, _) = send(&jobs(1), 1).await;
        if codes == [250] {
            accepted += 1;
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery within 15 s of Redis's return"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (codes, _) = send(&jobs(20), 5).await;
    assert_eq!(codes, vec![250; 20]);
    accepted += 20;
    // Everything acknowledged was delivered; nothing refused was.
    assert_eq!(wait_delivered(dir.path(), "bob", accepted).await, accepted);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(delivered(dir.path(), "bob"), accepted);
    let log = std::fs::read_to_string(cfg.with_extension("log")).unwrap();
    assert!(
        log.contains("key-value store failed"),
        "the outage is logged"
    );
    drop(s);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_embedded_store_keeps_counts_across_a_sigkill_after_its_flush_interval() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = node(
        dir.path(),
        &["05-rate-limit"],
        "[store]\nflush_interval_ms = 100\n[plugin.rate-limit]\ncapabilities = [\"kv\"]\n\
         [plugin.rate-limit.config]\nsender_domain.count = 3\nsender_domain.window_secs = 3600\n",
    );
    let mut s = Serve::start(&cfg).await;
    let (codes, _) = send(
        &[(s.smtp.port(), "a@counted.test", "bob@example.org"); 3],
        1,
    )
    .await;
    assert_eq!(codes, [250; 3]);
    // Past the flush interval the counts are on disk: a SIGKILL does not lose them.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let pid = s.pid().to_string();
    std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap();
    let _ = s.child.wait().await;
    assert!(dir.path().join("kv.redb").is_file());
    let s = Serve::start(&cfg).await;
    let (codes, _) = send(&[(s.smtp.port(), "b@counted.test", "bob@example.org")], 1).await;
    assert_eq!(
        codes,
        [450],
        "the fourth message of the hour is refused after the restart"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rediss_store_is_reached_over_tls_trusting_the_configured_ca_only() {
    use sluice::plugin::capabilities::Services;
    use sluice::store::KvStore;
    let redis = Redis::start_tls();
    let url = format!("rediss://:{}@127.0.0.1:{}/1", redis.password, redis.port);
    let count = |store: sluice::store::redis::Redis| {
        let services = Services {
            kv: Some(KvStore::Redis(store)),
            ..scratch_services(None)
        };
        async move {
            let rt = runtime_with(services);
            let cfg = config(
                "[plugin.probe]\ncapabilities = [\"kv\", \"dns\"]\ntimeout_ms = 2000\n[plugin.probe.config]\ncount = \"n\"\n",
            );
            let p = pipeline(&rt, &cfg, &[("probe", plugin("test", "kv-probe"))])
                .await
                .unwrap();
            let mut txn = p.start(&client(), "t");
            let out = txn
                .check_message(
                    &envelope("a@x.test", &["b@example.org"]),
                    &message("s", "b"),
                )
                .await;
            let value = out
                .add_headers
                .iter()
                .find(|(n, _)| n == "X-Probe-Count")
                .map(|(_, v)| v.clone());
            (value, format!("{:?}", txn.calls()))
        }
    };
    // With the CA configured (store.ca_file): the counter works over TLS.
    let trusted = sluice::store::redis::Redis::new(&url, Some(&redis.ca_file())).unwrap();
    assert_eq!(count(trusted.clone()).await.0.as_deref(), Some("1"));
    assert_eq!(count(trusted).await.0.as_deref(), Some("2"));
    // Without it the server's certificate is not trusted: the store is unavailable, nothing
    // is sent in the clear.
    let untrusted = sluice::store::redis::Redis::new(&url, None).unwrap();
    let (value, calls) = count(untrusted).await;
    assert_eq!(value, None);
    assert!(calls.contains("StoreUnavailable"), "{calls}");
}

/// Sends a newsletter-like message with smtplib to bob; waits for its delivery into `dir`
/// and returns its X-Spam-Score and X-Spam-Status.
async fn offer(port: u16, dir: &Path, id: &str) -> (f64, String, std::path::PathBuf) {
    python(
        r#"
import os, smtplib, email.utils
msg = ("From: Anna Berg <anna@shop.example>\r\nTo: bob@example.org\r\n"
       "Subject: Summer catalogue for members\r\nDate: " + email.utils.formatdate() + "\r\n"
       "Message-ID: <" + os.environ["ID"] + "@shop.example>\r\n\r\n"
       "Our summer catalogue is here: garden furniture, barbecue sets and parasols at members'\r\n"
       "prices until the end of the month. See you at the garden club on Thursday.\r\n")
with smtplib.SMTP("127.0.0.1", int(os.environ["PORT"])) as c:
    c.sendmail("anna@shop.example", ["bob@example.org"], msg.encode())
"#,
        &[("PORT", port.to_string()), ("ID", id.to_string())],
    )
    .await;
    // Into the inbox, or into the Junk folder once the score marks it spam.
    let folders = [
        dir.join("maildir/bob/new"),
        dir.join("maildir/bob/.Junk/new"),
    ];
    for _ in 0..200 {
        for e in folders
            .iter()
            .flat_map(|f| std::fs::read_dir(f).into_iter().flatten())
        {
            let path = e.unwrap().path();
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
            if text.contains(&format!("<{id}@shop.example>")) {
                // A field's value with its continuation lines.
                let header = |name: &str| {
                    let mut lines = text.lines().skip_while(|l| !l.starts_with(name));
                    let mut value = lines
                        .next()
                        .and_then(|l| l.strip_prefix(name))
                        .unwrap_or_default()
                        .to_string();
                    for l in lines.take_while(|l| l.starts_with([' ', '\t'])) {
                        value.push_str(l);
                    }
                    value.trim().to_string()
                };
                return (
                    header("X-Spam-Score:").parse().unwrap(),
                    header("X-Spam-Status:"),
                    path,
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "<{id}@shop.example> was not delivered into {}",
        dir.display()
    );
}

/// Waits (bounded: 10 s) until `path` holds other bytes than `old`.
async fn file_changes(path: &Path, old: Option<Vec<u8>>) {
    for _ in 0..200 {
        let now = std::fs::read(path).ok();
        if now.is_some() && now != old {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} did not change within 10 s", path.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn what_one_node_learns_about_spam_every_node_of_the_fleet_uses() {
    let redis = Redis::start();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cfg_of = |dir: &Path| {
        let spam = dir.join("spam");
        std::fs::create_dir_all(&spam).unwrap();
        let cfg = node(
            dir,
            &[],
            &format!(
                "[store]\nurl = {:?}\n[plugin.spam-score]\nread_dirs = [{spam:?}]\n\
                 [plugin.spam-score.config]\nlearned = {:?}\n[scoring]\nadd_headers = true\nreject_threshold = 1000.0\n",
                redis.url(2),
                spam.join("learned.bin"),
            ),
        );
        std::fs::copy(
            plugin("bundled", "20-spam-score"),
            dir.join("plugins/20-spam-score.wasm"),
        )
        .unwrap();
        cfg
    };
    let (a_cfg, b_cfg) = (cfg_of(a_dir.path()), cfg_of(b_dir.path()));
    let a = Serve::start(&a_cfg).await;
    let b = Serve::start(&b_cfg).await;

    let (before, _, on_a) = offer(a.smtp.port(), a_dir.path(), "a0").await;
    let (b_before, _, _) = offer(b.smtp.port(), b_dir.path(), "b0").await;
    assert!(
        (before - b_before).abs() < 0.01 && before < 5.0,
        "{before} {b_before}"
    );

    // Learned through node A's configuration: the state goes to Redis, and node B copies the
    // new site model to its own file.
    let out = spam_command(&["learn", "--spam", on_a.to_str().unwrap()], &a_cfg);
    assert!(
        out.contains("1 message(s) learned as spam") && out.contains("redis://"),
        "{out}"
    );
    assert!(
        !out.contains(&redis.password),
        "no password in the output: {out}"
    );
    let b_model = b_dir.path().join("spam/learned.bin");
    file_changes(&b_model, None).await;
    let (after, status, _) = offer(b.smtp.port(), b_dir.path(), "b1").await;
    assert!(
        after >= before + 5.0 && status.contains("SITE_LEARNED"),
        "{before} -> {after}: {status}"
    );
    let keys = redis.cli(2, &["--scan"]);
    assert!(
        keys.lines()
            .any(|k| k.starts_with("sluice:kv:@spam-learning:message:")),
        "{keys}"
    );

    // Forgotten through node B: node A goes back to the shipped model's judgement.
    let a_model = a_dir.path().join("spam/learned.bin");
    let old = std::fs::read(&a_model).ok();
    let out = spam_command(&["forget", on_a.to_str().unwrap()], &b_cfg);
    assert!(out.contains("1 message(s) forgotten"), "{out}");
    file_changes(&a_model, old).await;
    let (forgotten, status, _) = offer(a.smtp.port(), a_dir.path(), "a2").await;
    assert!(
        (forgotten - before).abs() < 0.05,
        "{before} vs {forgotten}: {status}"
    );
    assert!(
        !redis
            .cli(2, &["--scan"])
            .contains("@spam-learning:message:"),
        "the forgotten message is gone from the store"
    );
}

/// A site model with NaN weights on every feature of the offer: what a damaged or forged
/// file or store entry could hold.
fn nan_model() -> Vec<u8> {
    let text = "Subject: Summer catalogue for members\r\n\r\nOur summer catalogue is here: garden furniture, \
                barbecue sets and parasols at members' prices until the end of the month. See you at the \
                garden club on Thursday.\r\n";
    let features = sluice_spam::features::extract(text.as_bytes());
    let weights: std::collections::BTreeMap<u32, f32> =
        features.terms().map(|(i, _)| (i, f32::NAN)).collect();
    assert!(!weights.is_empty());
    sluice_spam::site::to_bytes(&weights)
}

/// A site model is checked before it is used: NaN weights written into the `learned` file
/// leave scoring as the shipped model's (once, every message was answered 451), and written
/// into the shared store they are refused by the sync, which keeps the previous model.
#[tokio::test(flavor = "multi_thread")]
async fn a_site_model_with_nan_weights_is_refused_in_the_file_and_in_the_store() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let spam = dir.path().join("spam");
    std::fs::create_dir_all(&spam).unwrap();
    let learned = spam.join("learned.bin");
    let cfg = node(
        dir.path(),
        &[],
        &format!(
            "[store]\nurl = {:?}\n[plugin.spam-score]\nread_dirs = [{spam:?}]\n\
             [plugin.spam-score.config]\nlearned = {learned:?}\n[scoring]\nadd_headers = true\nreject_threshold = 1000.0\n",
            redis.url(3),
        ),
    );
    std::fs::copy(
        plugin("bundled", "20-spam-score"),
        dir.path().join("plugins/20-spam-score.wasm"),
    )
    .unwrap();
    let node = Serve::start(&cfg).await;
    let port = node.smtp.port();
    let (shipped, _, first) = offer(port, dir.path(), "n0").await;

    // In the file: the message is accepted and scored by the shipped model alone.
    std::fs::write(&learned, nan_model()).unwrap();
    let (with_nan_file, status, _) = offer(port, dir.path(), "n1").await;
    assert!(
        (with_nan_file - shipped).abs() < 0.01 && !status.contains("SITE_LEARNED"),
        "{shipped} vs {with_nan_file}: {status}"
    );

    // A good model from the learner, then NaN in the store: the file keeps the good one.
    let out = spam_command(&["learn", "--spam", first.to_str().unwrap()], &cfg);
    assert!(out.contains("1 message(s) learned as spam"), "{out}");
    let good = std::fs::read(&learned).unwrap();
    assert_ne!(good, nan_model());
    let (taught, _, _) = offer(port, dir.path(), "n2").await;
    assert!(taught >= shipped + 5.0, "{shipped} -> {taught}");
    let kv = sluice::store::KvStore::Redis(
        sluice::store::redis::Redis::new(&redis.url(3), None).unwrap(),
    );
    kv.set(b"@spam-learning:model".to_vec(), nan_model(), 0)
        .await
        .unwrap();
    kv.increment(b"@spam-learning:model-version".to_vec(), 1, 0)
        .await
        .unwrap();
    // Three sync intervals.
    tokio::time::sleep(sluice::spam_learning::SYNC_INTERVAL * 3).await;
    assert_eq!(
        std::fs::read(&learned).unwrap(),
        good,
        "the previous model stays"
    );
    let (after, _, _) = offer(port, dir.path(), "n3").await;
    assert!((after - taught).abs() < 0.01, "{taught} vs {after}");
    drop(node);
}

/// Redis holds each plugin to its quota as the embedded store does: keys and bytes per
/// namespace, counted atomically with each write, given back by a delete and by expiry.
#[tokio::test]
async fn the_redis_store_holds_each_plugin_to_its_quota() {
    use sluice::store::{KvStore, Quota, StoreError};
    let redis = Redis::start();
    let kv = KvStore::Redis(sluice::store::redis::Redis::new(&redis.url(4), None).unwrap());
    let q = Some(Quota {
        max_keys: 3,
        max_bytes: 1000,
    });
    let over = |r: Result<(), StoreError>| matches!(r, Err(StoreError::QuotaExceeded(_)));
    kv.set_within(b"p:a".to_vec(), vec![b'x'; 500], 0, q)
        .await
        .unwrap();
    assert!(over(
        kv.set_within(b"p:b".to_vec(), vec![b'x'; 600], 0, q).await
    ));
    kv.set_within(b"p:b".to_vec(), b"1".to_vec(), 0, q)
        .await
        .unwrap();
    kv.set_within(b"p:c".to_vec(), b"1".to_vec(), 1, q)
        .await
        .unwrap();
    assert!(over(
        kv.set_within(b"p:d".to_vec(), b"1".to_vec(), 0, q).await
    ));
    assert!(matches!(
        kv.increment_within(b"p:n".to_vec(), 1, 0, q).await,
        Err(StoreError::QuotaExceeded(_))
    ));
    assert!(matches!(
        kv.compare_and_set_within(b"p:e".to_vec(), None, b"1".to_vec(), 0, q)
            .await,
        Err(StoreError::QuotaExceeded(_))
    ));
    // Another plugin's namespace is counted apart; a refused write wrote nothing.
    kv.set_within(b"other:d".to_vec(), b"1".to_vec(), 0, q)
        .await
        .unwrap();
    assert_eq!(kv.get(b"p:d".to_vec()).await.unwrap(), None);
    assert_eq!(kv.get(b"p:n".to_vec()).await.unwrap(), None);
    // A delete gives its room back; so does a key Redis expired.
    assert!(kv.delete_within(b"p:b".to_vec(), q).await.unwrap());
    assert_eq!(
        kv.increment_within(b"p:n".to_vec(), 5, 0, q).await.unwrap(),
        5
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    kv.set_within(b"p:d".to_vec(), b"1".to_vec(), 0, q)
        .await
        .unwrap();
    assert!(
        kv.compare_and_set_within(b"p:a".to_vec(), Some(vec![b'x'; 500]), b"2".to_vec(), 0, q)
            .await
            .unwrap()
    );
}

/// A node whose clock runs ahead finds keys due that Redis has not expired yet: they stay
/// counted and are given back once Redis has expired them (a key dropped from the expiry set
/// while it still existed was counted for ever once it expired).
#[tokio::test]
async fn redis_usage_survives_a_node_whose_clock_runs_ahead() {
    use sluice::store::{KvStore, Quota};
    let redis = Redis::start();
    let kv = KvStore::Redis(sluice::store::redis::Redis::new(&redis.url(5), None).unwrap());
    let q = Some(Quota {
        max_keys: 10,
        max_bytes: 10_000,
    });
    kv.set_within(b"p:a".to_vec(), vec![b'x'; 100], 1, q)
        .await
        .unwrap();
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    };
    // A write from a node two minutes ahead, while p:a still exists.
    let ahead = |skew: u128| {
        redis.cli(
            5,
            &[
                "EVAL",
                sluice::store::redis::ACCOUNTED,
                "3",
                "sluice:kv:p:b",
                "sluice:kv-usage:p:",
                "sluice:kv-expiry:p:",
                "set",
                &(now_ms() + skew).to_string(),
                "10",
                "10000",
                "0",
                "y",
                "",
                "0",
            ],
        )
    };
    assert_eq!(ahead(120_000).trim(), "1");
    // p:a expires in Redis; the next write from that node gives its room back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(ahead(240_000).trim(), "1");
    let bytes = redis.cli(5, &["HGET", "sluice:kv-usage:p:", "#bytes"]);
    assert_eq!(
        bytes.trim(),
        ("sluice:kv:p:b".len() + 1).to_string(),
        "only p:b is counted"
    );
}

/// The console's view of a plugin's state lists a namespace from Redis as from the embedded
/// store: SCAN with the namespace's glob characters escaped, values and time left.
#[tokio::test]
async fn a_namespace_is_listed_alike_from_redis_and_the_embedded_store() {
    let redis = Redis::start();
    let stores = [
        sluice::store::KvStore::Redis(
            sluice::store::redis::Redis::new(&redis.url(3), None).unwrap(),
        ),
        sluice::store::KvStore::Embedded(sluice::store::embedded::Embedded::in_memory().unwrap()),
    ];
    for kv in stores {
        for (k, ttl) in [
            ("grey*:a", 60),
            ("grey*:b", 0),
            ("grey:c", 0),
            ("greyx:d", 0),
        ] {
            kv.set(k.as_bytes().to_vec(), b"v".to_vec(), ttl)
                .await
                .unwrap();
        }
        let listed = kv.scan(b"grey*:".to_vec(), 10).await.unwrap();
        let keys: Vec<String> = listed
            .iter()
            .map(|(k, _, _)| String::from_utf8_lossy(k).into_owned())
            .collect();
        assert_eq!(keys, ["grey*:a", "grey*:b"], "{}", kv.describe());
        let left = listed[0].2.expect("a time left");
        assert!(left > 50_000 && left <= 60_000, "{left}");
        assert_eq!(listed[1].2, None);
        assert_eq!(listed[0].1, b"v");
        assert_eq!(kv.scan(b"grey*:".to_vec(), 1).await.unwrap().len(), 1);
    }
}

/// `[store] url = "redis+sentinel://…"`: the primary is killed under load; the sentinel fails
/// over to the replica and the store follows it. Meanwhile every transaction is answered
/// within the plugin's deadline (tempfailed by policy while there is no primary), and after
/// the failover the rate limit still holds: the counts made before the kill were replicated.
#[tokio::test(flavor = "multi_thread")]
async fn a_sentinel_failover_keeps_rate_limits_and_no_transaction_waits_past_the_deadline() {
    let mut sentinel = sluice_tests::peers::Sentinel::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = node(
        dir.path(),
        &["05-rate-limit"],
        &format!(
            "[store]\nurl = {:?}\n[plugin.rate-limit]\ncapabilities = [\"kv\"]\ntimeout_ms = 500\n\
             [plugin.rate-limit.config]\nsender_domain.count = 8\nsender_domain.window_secs = 3600\n",
            sentinel.url(2)
        ),
    );
    let s = Serve::start(&cfg).await;
    let port = s.smtp.port();
    let job = vec![(port, "r@failover.test", "bob@example.org")];
    let (codes, _) = send(&job.repeat(4), 1).await;
    assert_eq!(codes, [250; 4]);
    // The counts are on the replica before the primary goes.
    let offset = |r: &sluice_tests::peers::Redis, field: &str| -> u64 {
        r.cli(0, &["INFO", "replication"])
            .lines()
            .find_map(|l| l.strip_prefix(field)?.trim().parse().ok())
            .unwrap_or(0)
    };
    let written = offset(&sentinel.primary, "master_repl_offset:");
    let mut synced = false;
    for _ in 0..100 {
        if offset(&sentinel.replica, "master_repl_offset:") >= written {
            synced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(synced, "the replica did not catch up with the primary");
    let old = sentinel.primary.port;
    sentinel.primary.kill();

    // Load through the failover: each transaction within the deadline (plus the time a
    // client takes), tempfailed while there is no primary.
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut accepted = 4;
    let mut tempfailed = 0;
    while sentinel.primary_port() == Some(old) || sentinel.primary_port().is_none() {
        assert!(Instant::now() < deadline, "no failover within 45 s");
        let (codes, longest) = send(&job, 1).await;
        assert!(longest < 2.5, "a transaction waited {longest} s");
        match codes[0] {
            250 => accepted += 1,
            451 => tempfailed += 1,
            other => panic!("unexpected {other}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sentinel.primary_port(), Some(sentinel.replica.port));
    assert!(tempfailed > 0, "the outage was not seen");

    // On the new primary: the count goes on from where it was, up to the limit of 8.
    let until = Instant::now() + Duration::from_secs(20);
    let mut refused = false;
    while Instant::now() < until {
        let (codes, longest) = send(&job, 1).await;
        assert!(longest < 2.5, "a transaction waited {longest} s");
        match codes[0] {
            250 => accepted += 1,
            450 => {
                refused = true;
                break;
            }
            451 => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(refused, "the rate limit never refused after the failover");
    assert_eq!(
        accepted, 8,
        "exactly the limit was accepted across the failover"
    );
    let keys = sentinel.replica.cli(2, &["--scan"]);
    assert!(
        keys.contains("sluice:kv:rate-limit:sender_domain:failover.test:"),
        "{keys}"
    );
    drop(s);
}
