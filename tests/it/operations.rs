//! Running Sluice for months: plugins added, replaced and removed while mail flows; broken
//! plugin files refused while the old version serves; crash-looping plugins cooled down;
//! configuration reloads that keep the old configuration when the new one is bad; plugin
//! scope by listener and recipient domain.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sluice_tests::*;

/// Sends one trickle message with `subject` to bob@example.org; returns the reply.
async fn send(addr: std::net::SocketAddr, subject: &str) -> String {
    send_to_bob(addr, subject, "A trickle message.").await
}

/// Waits (bounded: 15 s) until `check` holds for the server's plugins in service.
async fn until_plugins(s: &TestServer, what: &str, check: impl Fn(&TestServer) -> bool) {
    for _ in 0..300 {
        if check(s) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{what}: not within 15 s; in service: {:?}",
        s.plugins_in_service()
    );
}

fn sha_in_service(s: &TestServer, name: &str) -> Option<String> {
    s.ctx()
        .live()
        .pipeline
        .plugins()
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.sha256.clone())
}

/// Installs `file` as `dir/name` the recommended way: write a dot-file, then rename.
fn install(dir: &std::path::Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// A plugin file whose own name has settings in the configuration, but whose file name does
/// not, is refused by the directory watcher (it would run without them); under its own name
/// it comes into service with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_would_miss_its_settings_is_refused_until_renamed() {
    let s = TestServer::start("[plugin.test-tagger.config]\ntag = \"mine\"\n", &[]).await;
    let dir = s.dir.path().join("plugins");
    let tagger = std::fs::read(plugin("test", "tagger")).unwrap();
    install(&dir, "10-tagger.wasm", &tagger);
    // Refused once looked at (after it settled), with the rename to make: waited for as the
    // problem the console shows, not by the clock.
    let file = dir.join("10-tagger.wasm");
    let problem = || {
        s.ctx()
            .load_problems
            .lock()
            .unwrap()
            .get(&file)
            .cloned()
            .unwrap_or_default()
    };
    until_plugins(&s, "refused", |_| !problem().is_empty()).await;
    assert!(
        problem().contains("rename the file to test-tagger.wasm"),
        "{}",
        problem()
    );
    assert!(
        s.plugins_in_service().is_empty(),
        "{:?}",
        s.plugins_in_service()
    );
    std::fs::rename(dir.join("10-tagger.wasm"), dir.join("10-test-tagger.wasm")).unwrap();
    until_plugins(&s, "in service under its own name", |s| {
        s.plugins_in_service() == ["test-tagger"]
    })
    .await;
    let reply = send(s.smtp, "tagged").await;
    assert!(reply.starts_with("250 "), "{reply}");
    let m = s.mailbox("bob", 1).await;
    assert!(m[0].contains("mine"), "the settings apply: {}", m[0]);
    s.stop().await;
}

/// Renaming a plugin in service is one change: at no moment is neither or both in service
/// (the new name used to wait out the settle time while the old one was already gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renaming_a_plugin_in_service_never_leaves_mail_unfiltered() {
    let s = TestServer::start("", &[("tagger", plugin("test", "tagger"))]).await;
    let dir = s.dir.path().join("plugins");
    assert_eq!(s.plugins_in_service(), ["tagger"]);
    std::fs::rename(dir.join("10-tagger.wasm"), dir.join("20-renamed.wasm")).unwrap();
    // Bounded: at most 1,000 looks, 5 ms apart.
    let mut seen = Vec::new();
    for _ in 0..1000 {
        let now = s.plugins_in_service();
        if seen.last() != Some(&now) {
            seen.push(now.clone());
        }
        if now == ["renamed"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        seen,
        [vec!["tagger".to_string()], vec!["renamed".to_string()]],
        "the plugin sets in service, in order"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_come_and_go_under_a_steady_trickle_without_a_failed_transaction() {
    let s = TestServer::start("", &[]).await;
    let dir = s.dir.path().join("plugins");
    let stop = Arc::new(AtomicBool::new(false));
    let addr = s.smtp;
    let trickle = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut replies = Vec::new();
            // Bounded: at most 600 messages, one every 20 ms or so.
            for i in 0..600 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                replies.push((i, send(addr, &format!("trickle {i}")).await));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            replies
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Add.
    let tagger = std::fs::read(plugin("test", "tagger")).unwrap();
    install(&dir, "10-tagger.wasm", &tagger);
    until_plugins(&s, "tagger added", |s| s.plugins_in_service() == ["tagger"]).await;
    let first = sha_in_service(&s, "tagger").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A corrupt file over it is refused; the loaded version keeps serving.
    install(
        &dir,
        "10-tagger.wasm",
        b"\0asm\x01\0\0\0 this is not a component",
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        sha_in_service(&s, "tagger").as_deref(),
        Some(first.as_str())
    );

    // Replace with a working plugin of another build.
    let other = std::fs::read(plugin("test", "delivery-notes")).unwrap();
    install(&dir, "10-tagger.wasm", &other);
    until_plugins(&s, "tagger replaced", |s| {
        sha_in_service(s, "tagger").is_some_and(|sha| sha != first)
    })
    .await;
    // A second plugin beside it, ordered by its prefix.
    install(&dir, "05-tagger2.wasm", &tagger);
    until_plugins(&s, "tagger2 added first", |s| {
        s.plugins_in_service() == ["tagger2", "tagger"]
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Remove both.
    std::fs::remove_file(dir.join("10-tagger.wasm")).unwrap();
    std::fs::remove_file(dir.join("05-tagger2.wasm")).unwrap();
    until_plugins(&s, "all removed", |s| s.plugins_in_service().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    stop.store(true, Ordering::Relaxed);
    let replies = trickle.await.unwrap();
    assert!(replies.len() >= 20, "only {} transactions", replies.len());
    for (i, r) in &replies {
        assert!(r.starts_with("250 "), "transaction {i} failed: {r:?}");
    }
    // What was delivered shows each phase: untagged, tagged, untagged again.
    let mail = s.mailbox("bob", replies.len()).await;
    let tagged: Vec<bool> = mail
        .iter()
        .map(|m| m.contains("\r\nX-Tagged: yes\r\n"))
        .collect();
    assert!(tagged.iter().any(|t| *t), "no message was tagged");
    assert!(
        tagged.iter().filter(|t| !**t).count() >= 2,
        "no untagged message"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_crash_looping_plugin_is_cooled_down_and_its_policy_applies() {
    let s = TestServer::start_full(
        "cooldown_after_failures = 2\ncooldown_secs = 60",
        "[plugin.crashloop]\non_failure = \"continue\"\n[plugin.crashloop.config]\nmode = \"trap\"\n",
        &[("crashloop", plugin("test", "hostile"))],
    )
    .await;
    for i in 0..5 {
        let r = send(s.smtp, &format!("hostile {i}")).await;
        assert!(r.starts_with("250 "), "message {i}: {r}");
    }
    let live = s.ctx().live();
    let p = &live.pipeline.plugins()[0];
    assert_eq!(p.health.cooldowns(), 1);
    // The failures all came from one client: the cool-down is that client's alone.
    let now = std::time::Instant::now();
    assert!(
        p.health
            .cooling_down(now, Some([127, 0, 0, 1].into()))
            .is_some()
    );
    assert!(
        p.health
            .cooling_down(now, Some([192, 0, 2, 1].into()))
            .is_none()
    );
    let metrics = sluice::admin::metrics::get().encode();
    for want in [
        "sluice_plugin_failures_total{plugin=\"crashloop\",hook=\"check-message\",kind=\"trap\"} 2",
        "sluice_plugin_failures_total{plugin=\"crashloop\",hook=\"check-message\",kind=\"cooling-down\"} 3",
        "sluice_plugin_cooldowns_total{plugin=\"crashloop\"} 1",
    ] {
        assert!(metrics.contains(want), "{want} not in\n{metrics}");
    }
    // The plugin's other hooks are not called during the cool-down either; `plugin list`
    // shows it as a cool-down for one client, not for all.
    let rows = live.pipeline.describe();
    assert_eq!(rows[0].health.clients_in_cooldown, 1, "{rows:?}");
    assert_eq!(rows[0].health.cooldown_secs_left, None, "{rows:?}");
    s.stop().await;
}

#[tokio::test]
async fn a_bad_configuration_reload_keeps_the_old_one_and_a_good_one_applies() {
    let s = TestServer::start("", &[("tagger", plugin("test", "tagger"))]).await;
    let base = s.ctx().live().config.clone();
    let path = s.dir.path().join("reload.toml");
    let text = |extra: &str| {
        format!(
            "[server]\nhostname = \"mx.test\"\ndata_dir = {:?}\n[plugins]\ncache_dir = {:?}\n[relay]\nlocal_domains = [\"example.org\"]\n[[listener]]\nkind = \"smtp\"\naddress = \"127.0.0.1:0\"\n{extra}",
            base.server.data_dir,
            base.paths().cache_dir,
        )
    };

    // Unknown key: refused, nothing changes.
    std::fs::write(&path, text("[scoring]\nspam_treshold = 1.0\n")).unwrap();
    let e = sluice::server::reload::reload_config(s.ctx(), Some(&path))
        .await
        .unwrap_err();
    assert!(e.contains("unknown key `scoring.spam_treshold`"), "{e}");
    // A plugin refusing its new settings: refused as a whole.
    std::fs::write(&path, text("[plugin.tagger.config]\nscore = 1000.0\n")).unwrap();
    let e = sluice::server::reload::reload_config(s.ctx(), Some(&path))
        .await
        .unwrap_err();
    assert!(e.contains("score"), "{e}");
    assert!(send(s.smtp, "still tagged").await.starts_with("250 "));
    let m = s.mailbox("bob", 1).await;
    assert!(m[0].contains("X-Tagged: yes"), "{}", m[0]);

    // A good one applies to the next transaction.
    std::fs::write(&path, text("[plugin.tagger.config]\ntag = \"reloaded\"\n")).unwrap();
    sluice::server::reload::reload_config(s.ctx(), Some(&path))
        .await
        .unwrap();
    assert!(send(s.smtp, "after reload").await.starts_with("250 "));
    let m = s.mailbox("bob", 2).await;
    assert!(m.iter().any(|m| m.contains("X-Tagged: reloaded")), "{m:?}");
    s.stop().await;
}

#[tokio::test]
async fn plugins_apply_only_to_their_listeners_and_recipient_domains() {
    let s = TestServer::start(
        "[plugin.subonly]\nlisteners = [\"submission\"]\n[plugin.subonly.config]\ntag = \"submission\"\n[plugin.orgonly]\ndomains = [\"Example.ORG\"]\n[plugin.orgonly.config]\ntag = \"org\"\n",
        &[
            ("subonly", plugin("test", "tagger")),
            ("orgonly", plugin("test", "tagger")),
        ],
    )
    .await;
    // On the smtp listener: only the domain-scoped plugin, and only for example.org.
    assert!(send(s.smtp, "scoped").await.starts_with("250 "));
    let m = s.mailbox("bob", 1).await;
    assert!(m[0].contains("X-Tagged: org\r\n"), "{}", m[0]);
    assert!(!m[0].contains("X-Tagged: submission"), "{}", m[0]);

    let mut c = Conversation::connect(s.smtp).await;
    c.begin_data("a@example.net", "carol@catchall.example.org")
        .await;
    c.raw(b"Subject: other domain\r\n\r\nx\r\n.\r\n").await;
    c.expect("250 ").await;
    let m = s.mailbox("carol", 1).await;
    assert!(!m[0].contains("X-Tagged"), "{}", m[0]);
    s.stop().await;
}
