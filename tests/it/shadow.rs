//! Shadow versions over real SMTP (Python's smtplib): a shadow dropped beside a live plugin
//! sees the same transactions, its verdicts are compared and never applied, the comparison
//! shows in `/plugins`, `plugin list`, the console and the metrics, and the console's promote
//! button and `sluice plugin rollback` swap the versions under the running server.

use std::time::Duration;

use sluice_tests::browser::Browser;
use sluice_tests::*;

/// Sends one message with smtplib; the server's reply to it (`ok` or the SMTP error).
async fn send(port: u16, subject: &str) -> String {
    let script = r#"
import os, smtplib
c = smtplib.SMTP("127.0.0.1", int(os.environ["PORT"]), timeout=30)
try:
    c.sendmail("carol@example.com", ["bob@example.org"], ("Subject: " + os.environ["SUBJECT"] + "\r\n\r\nhello\r\n").encode())
    print("ok")
except smtplib.SMTPDataError as e:
    print(e.smtp_code, e.smtp_error.decode())
c.quit()
"#;
    python(
        script,
        &[("PORT", port.to_string()), ("SUBJECT", subject.to_string())],
    )
    .await
    .trim()
    .to_string()
}

/// Waits (bounded: 30 s, a compile included) until `check` holds for the plugins in service.
async fn until(
    s: &TestServer,
    what: &str,
    check: impl Fn(&[std::sync::Arc<sluice::plugin::LoadedPlugin>]) -> bool,
) {
    for _ in 0..300 {
        if check(s.ctx().live().pipeline.plugins()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let problems = s.ctx().load_problems.lock().unwrap().clone();
    panic!("not within 30 s: {what}; load problems: {problems:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_is_compared_never_applied_then_promoted_and_rolled_back() {
    // The live plugin lets everything through; its next version (tagger, given the same
    // settings) tags every message and refuses those whose subject says "forbidden".
    let s = TestServer::start(
        "[plugin.gate.config]\nreject_word = \"forbidden\"\n[metrics]\naddress = \"127.0.0.1:0\"\nplugins = true\n[admin]\naddress = \"127.0.0.1:0\"\n",
        &[("gate", plugin("test", "hostile"))],
    )
    .await;
    let plugins = s.dir.path().join("plugins");
    // Installed as an operator would: written, then renamed into place.
    std::fs::copy(plugin("test", "tagger"), plugins.join(".next.tmp")).unwrap();
    std::fs::rename(plugins.join(".next.tmp"), plugins.join("gate.shadow.wasm")).unwrap();
    until(&s, "the shadow loaded", |p| p[0].shadow.is_some()).await;

    let port = s.smtp.port();
    assert_eq!(send(port, "hello").await, "ok");
    // The shadow would refuse this one; its verdict is not applied.
    assert_eq!(send(port, "forbidden fruit").await, "ok");
    let delivered = s.mailbox("bob", 2).await;
    for m in &delivered {
        assert!(
            !m.contains("X-Tagged") && !m.contains("TAGGED"),
            "the shadow's edits or symbols were applied:\n{m}"
        );
    }

    let rows = s.ctx().live().pipeline.describe();
    let shadow = rows[0].shadow.as_ref().expect("the shadow's row");
    // Three hooks each: the live plugin's verify-sender and check-recipient (which the
    // shadow lacks: no opinion, as a live plugin without them) and check-message.
    assert_eq!((shadow.transactions, shadow.calls), (2, 6), "{shadow:?}");
    // Both differ: the first by score (TAGGED +1 against nothing), the second by action.
    assert_eq!(shadow.differing, 2, "{shadow:?}");
    assert!(
        shadow
            .by_action
            .contains(&("continue".into(), "reject".into(), 1)),
        "{shadow:?}"
    );
    assert!(shadow.mean_score_delta > 0.0, "{shadow:?}");
    let newest = &shadow.recent[0];
    assert_eq!(
        (newest.live.action.as_str(), newest.shadow.action.as_str()),
        ("continue", "reject")
    );
    assert!(
        newest.shadow.detail.contains("554 subject contains"),
        "{newest:?}"
    );

    // `plugin list --server` and the metrics say the same.
    let metrics = s.metrics.unwrap().to_string();
    let listed = plugin_list_server(&metrics, false);
    assert!(
        listed.contains("shadow ")
            && listed.contains("differing=2")
            && listed.contains("continue->reject:1"),
        "{listed}"
    );
    let text = scrape(&metrics).await;
    assert!(
        text.contains(
            r#"sluice_shadow_calls_total{plugin="gate",hook="check-message",live="continue",shadow="reject"} 1"#
        ),
        "{text}"
    );

    // The console shows the comparison and what each plugin costs; its button promotes.
    sluice::smtp_auth::credentials::set_password(
        &s.dir.path().join("admins"),
        "root",
        "correct horse",
    )
    .unwrap();
    let mut b = Browser::new(s.admin.expect("console address"));
    assert_eq!(b.log_in("root", "correct horse").await.status, 303);
    let page = b.get("/plugins").await;
    for want in [
        "Shadow of gate",
        "2 differing",
        "What each plugin costs",
        "instantiate",
        "Promote the shadow of gate",
    ] {
        assert!(page.body.contains(want), "{want} not in:\n{}", page.body);
    }
    let csrf = page.csrf();
    let r = b
        .post("/plugins/promote", &[("csrf", &csrf), ("plugin", "nope")])
        .await;
    assert!(
        r.body.contains("no plugin nope with a shadow"),
        "{}",
        r.body
    );
    let r = b
        .post("/plugins/promote", &[("csrf", &csrf), ("plugin", "gate")])
        .await;
    assert!(r.body.contains("promoted the shadow of gate"), "{}", r.body);
    assert!(!plugins.join("gate.shadow.wasm").exists());
    assert!(plugins.join("10-gate.wasm.previous").exists());
    let sha = |f: std::path::PathBuf| {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(std::fs::read(f).unwrap()))
    };
    let (tagger, hostile) = (
        sha(plugin("test", "tagger")),
        sha(plugin("test", "hostile")),
    );
    until(&s, "the promoted version in service", |p| {
        p[0].sha256 == tagger && p[0].shadow.is_none()
    })
    .await;
    let refused = send(port, "forbidden again").await;
    assert!(refused.starts_with("554"), "{refused}");

    // Rollback, from the command line: the replaced version serves again.
    let cfg = s.dir.path().join("sluice.toml");
    let out = std::process::Command::new(sluice_bin())
        .args(["plugin", "rollback", "gate", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    until(&s, "the previous version back", |p| p[0].sha256 == hostile).await;
    assert_eq!(send(port, "forbidden once more").await, "ok");
    s.stop().await;
}
