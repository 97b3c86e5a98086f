//! The `sluice serve` process as an operator runs it for months: metrics and health over
//! HTTP, `sluice plugin list --server`, SIGHUP and `sluice reload` (a bad configuration
//! keeps the old one), and SIGTERM draining the sessions in flight without losing or
//! half-accepting a message.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice_tests::serve::Serve;
use sluice_tests::*;

/// A configuration in `dir` with ephemeral ports and `extra` appended.
fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let cfg = dir.join("sluice.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nhostname = \"mx.test\"\ndata_dir = {:?}\n[plugins]\ncache_dir = {:?}\n[[listener]]\nkind = \"smtp\"\naddress = \"127.0.0.1:0\"\n[relay]\nlocal_domains = [\"example.org\"]\n{extra}",
            dir,
            workspace_root().join("target/test-compile-cache")
        ),
    )
    .unwrap();
    cfg
}

async fn send(addr: std::net::SocketAddr, subject: &str) -> String {
    send_to_bob(addr, subject, "Hello.").await
}

async fn sluice(args: &[&str]) -> std::process::Output {
    run_client(tokio::process::Command::new(sluice_bin()).args(args)).await
}

fn delivered(dir: &Path, user: &str) -> Vec<String> {
    maildir_files(&dir.join("maildir").join(user).join("new"))
}

/// A configuration without plugins whose sessions may drain for `secs` on SIGTERM.
fn drain_config(dir: &Path, secs: u64) -> PathBuf {
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    let cfg = write_config(dir, "[metrics]\naddress = \"127.0.0.1:0\"\n");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "[plugins]",
        &format!("drain_timeout_secs = {secs}\n[plugins]"),
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

#[tokio::test]
async fn metrics_plugin_list_and_reload_against_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(plugin("test", "tagger"), plugins.join("10-tagger.wasm")).unwrap();
    let tagger = "[plugin.tagger.config]\nreject_word = \"forbidden\"\n";
    let metrics = "[metrics]\naddress = \"127.0.0.1:0\"\nplugins = true\n";
    let cfg = write_config(dir.path(), &format!("{metrics}{tagger}"));
    let mut s = Serve::start(&cfg).await;
    assert_eq!(
        s.get("/healthz").await,
        ("HTTP/1.1 200 OK".into(), "ok\n".into())
    );

    // A known sequence: three messages accepted, one rejected by the plugin.
    for i in 0..3 {
        assert!(send(s.smtp, &format!("m{i}")).await.starts_with("250 "));
    }
    assert!(
        send(s.smtp, "forbidden words")
            .await
            .starts_with("554 5.7.1")
    );
    s.metrics_until(&[
        "sluice_connections_total{listener=\"smtp\",tls=\"none\"} 4",
        "sluice_messages_total{disposition=\"queued\"} 3",
        "sluice_messages_total{disposition=\"reject\"} 1",
        "sluice_plugin_calls_total{plugin=\"tagger\",hook=\"check-message\",verdict=\"continue\"} 3",
        "sluice_plugin_calls_total{plugin=\"tagger\",hook=\"check-message\",verdict=\"reject\"} 1",
        "sluice_plugin_call_seconds_count{plugin=\"tagger\",hook=\"check-message\"} 4",
        "sluice_deliveries_total{outcome=\"delivered\"} 3",
        "sluice_spool_messages{state=\"queue\"} 0",
        "sluice_plugins_loaded 1",
    ])
    .await;

    // The plugins in service, asked of the running server.
    let metrics_addr = s.metrics.unwrap().to_string();
    let out = sluice(&["plugin", "list", "--json", "--server", &metrics_addr]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(
            std::fs::read(plugins.join("10-tagger.wasm")).unwrap(),
        ))
    };
    assert_eq!(rows[0]["name"], "tagger");
    assert_eq!(rows[0]["sha256"], sha.as_str());
    assert_eq!(rows[0]["hooks"], serde_json::json!(["check-message"]));
    let table = sluice(&["plugin", "list", "--server", &metrics_addr]).await;
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        table.contains(" 1. tagger") && table.contains("on_failure=tempfail"),
        "{table}"
    );
    // Its reader gone (`… | head -1` that has read its line): a quiet end, no panic.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let piped = tokio::process::Command::new(sluice_bin())
        .args(["plugin", "list", "--server", &metrics_addr])
        .stdout(writer)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&piped.stderr);
    assert!(piped.status.success() && !err.contains("panicked"), "{err}");

    // SIGHUP with a bad configuration: refused, the old one keeps serving.
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg).unwrap() + "[limits]\nmax_recipeints = 5\n",
    )
    .unwrap();
    s.signal("HUP");
    s.metrics_until(&["sluice_reloads_total{kind=\"config\",result=\"failed\"} 1"])
        .await;
    assert!(send(s.smtp, "forbidden again").await.starts_with("554 "));
    // `sluice reload` checks the file itself and does not signal.
    let out = sluice(&["reload", "--config", cfg.to_str().unwrap()]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not valid; the server was not signalled") && err.contains("max_recipeints"),
        "{err}"
    );

    // A valid file whose plugin refuses its settings: `sluice reload` waits for the server's
    // verdict and reports the refusal (exit 1), instead of "see its log".
    write_config(
        dir.path(),
        &format!("{metrics}[plugin.tagger.config]\nscore = 1000.0\n"),
    );
    let out = sluice(&["reload", "--config", cfg.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the server refused the configuration, the old one stays")
            && err.contains("refused its configuration")
            && err.contains("score"),
        "{err}"
    );

    // A good one through `sluice reload`: applies to the next transaction, and the command
    // says what is in service.
    write_config(
        dir.path(),
        &format!("{metrics}[plugin.tagger.config]\ntag = \"v2\"\n"),
    );
    let out = sluice(&["reload", "--config", cfg.to_str().unwrap()]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with("configuration reloaded; plugins in service: tagger "),
        "{said}"
    );
    s.metrics_until(&["sluice_reloads_total{kind=\"config\",result=\"ok\"} 1"])
        .await;
    assert!(
        send(s.smtp, "forbidden is fine now")
            .await
            .starts_with("250 ")
    );
    s.metrics_until(&["sluice_deliveries_total{outcome=\"delivered\"} 4"])
        .await;
    let mail = delivered(dir.path(), "bob");
    assert!(
        mail.iter().any(|m| m.contains("X-Tagged: v2\r\n") && m.contains("Subject: forbidden is fine now")),
        "{mail:?}"
    );

    // The log tells a message's whole story under its queue id: acceptance with each
    // plugin's verdict and score, then delivery.
    let reply = send(s.smtp, "traced").await;
    let id = reply.trim().rsplit(' ').next().unwrap().to_string();
    s.metrics_until(&["sluice_deliveries_total{outcome=\"delivered\"} 5"])
        .await;
    // The delivery's log line is written just after its metric is counted: wait for it
    // (bounded: 10 s).
    let mut log = String::new();
    for _ in 0..200 {
        log = std::fs::read_to_string(cfg.with_extension("log")).unwrap();
        if log.lines().any(|l| {
            l.contains(&id) && l.contains("event=delivery") && l.contains("outcome=delivered")
        }) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let story: Vec<&str> = log.lines().filter(|l| l.contains(&id)).collect();
    assert!(
        story.iter().any(|l| l.starts_with("ts=")
            && l.contains(" event=message ")
            && l.contains(" from=a@example.net ")
            && l.contains(" to=bob@example.org ")
            && l.contains(" plugins=\"tagger:check-message:continue=1.00\" ")
            && l.contains(" disposition=queued ")),
        "{story:#?}"
    );
    assert!(
        story
            .iter()
            .any(|l| l.contains(" event=delivery ") && l.contains(" outcome=delivered ")),
        "{story:#?}"
    );

    // SIGTERM: exits cleanly and removes its pid file.
    assert!(dir.path().join("sluice.pid").is_file());
    s.signal("TERM");
    assert!(s.exited(Duration::from_secs(20)).await.success());
    assert!(!dir.path().join("sluice.pid").exists());
}

#[tokio::test]
async fn sigterm_lets_transactions_in_flight_finish_and_turns_idle_sessions_away() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = drain_config(dir.path(), 10);
    let mut s = Serve::start(&cfg).await;

    // A: mid-DATA. B: connected and idle.
    let mut a = Conversation::connect(s.smtp).await;
    a.begin_data("a@example.net", "bob@example.org").await;
    a.raw(b"Subject: in flight\r\n\r\nFirst half,\r\n").await;
    let mut b = Conversation::connect(s.smtp).await;
    b.send("EHLO idle.test").await;
    b.expect("250 ").await;

    s.signal("TERM");
    b.expect("421 4.3.2 mx.test Service shutting down").await;
    assert!(b.closed().await);
    // No new connections.
    let mut refused = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(s.smtp).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "still accepting after SIGTERM");
    // The health check says so while the drain lasts (a load balancer takes it out).
    assert_eq!(
        s.get("/healthz").await,
        (
            "HTTP/1.1 503 Service Unavailable".into(),
            "shutting down\n".into()
        )
    );

    // A finishes its message and is acknowledged; then it is told to go.
    a.raw(b"second half.\r\n.\r\n").await;
    a.expect("250 2.0.0").await;
    a.send("NOOP").await;
    a.expect("421 4.3.2").await;
    assert!(s.exited(Duration::from_secs(20)).await.success());
    let on_disk = delivered(dir.path(), "bob").len()
        + std::fs::read_dir(dir.path().join("spool/queue"))
            .map(|d| d.count())
            .unwrap_or(0);
    assert!(on_disk >= 1, "the acknowledged message is not on disk");
}

#[tokio::test]
async fn at_the_drain_timeout_an_unfinished_transaction_is_tempfailed_not_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = drain_config(dir.path(), 1);
    let mut s = Serve::start(&cfg).await;
    let mut a = Conversation::connect(s.smtp).await;
    a.begin_data("a@example.net", "bob@example.org").await;
    a.raw(b"Subject: never finished\r\n\r\nhalf").await;
    s.signal("TERM");
    a.expect("421 4.3.2").await;
    assert!(a.closed().await);
    assert!(s.exited(Duration::from_secs(20)).await.success());
    assert!(delivered(dir.path(), "bob").is_empty());
    let queued = std::fs::read_dir(dir.path().join("spool/queue"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(queued, 0, "an unacknowledged message was kept");
}

/// `sluice reload` signals only a Sluice: a stale pid file naming another process (its
/// number reused) is refused, and that process lives on.
#[tokio::test]
async fn reload_refuses_a_pid_file_that_names_another_program() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let mut other = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    std::fs::write(dir.path().join("sluice.pid"), other.id().to_string()).unwrap();
    let out = sluice(&["reload", "--config", cfg.to_str().unwrap()]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("not a running sluice"), "{err}");
    assert!(
        other.try_wait().unwrap().is_none(),
        "the other program got no signal"
    );
    other.kill().unwrap();
    let _ = other.wait();
}

/// `check-config` says "ok" only when `serve` would start: a setting the plugin itself
/// refuses fails the check, naming the plugin and its reason. A file of the plugin directory
/// that is not a Sluice plugin is skipped with a warning everywhere alike: by the check, at
/// start, on a reload (which goes through), and the console shows it.
#[tokio::test]
async fn check_config_tells_the_truth_and_a_stray_file_is_skipped_everywhere_alike() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(
        plugin("optional", "30-greylisting"),
        plugins.join("30-greylisting.wasm"),
    )
    .unwrap();
    let settings = |delay: i64| {
        format!(
            "[metrics]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n[plugin.greylisting]\ncapabilities = [\"kv\"]\n[plugin.greylisting.config]\ndelay_secs = {delay}\n"
        )
    };
    let cfg = write_config(dir.path(), &settings(-5));
    let check = sluice(&["check-config", cfg.to_str().unwrap()]).await;
    let err = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(2), "{err}");
    assert!(
        err.contains("sluice serve would not start")
            && err.contains("30-greylisting.wasm")
            && err.contains("refused its configuration")
            && err.contains("delay_secs"),
        "{err}"
    );

    // A good setting, and a stray file: ok, with a warning.
    let cfg = write_config(dir.path(), &settings(60));
    std::fs::write(plugins.join("notes.wasm"), "not a plugin at all\n").unwrap();
    let check = sluice(&["check-config", cfg.to_str().unwrap()]).await;
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{err}");
    assert!(
        err.contains("notes.wasm is not a Sluice plugin") && err.contains("skipped"),
        "{err}"
    );

    // serve starts with it, and the console shows why the file is not in service.
    let s = Serve::start(&cfg).await;
    let log = std::fs::read_to_string(cfg.with_extension("log")).unwrap();
    assert!(log.contains("notes.wasm is not a Sluice plugin"), "{log}");
    sluice::smtp_auth::credentials::set_password(
        &dir.path().join("admins"),
        "root",
        "correct horse",
    )
    .unwrap();
    let mut b = sluice_tests::browser::Browser::new(s.admin.unwrap());
    assert_eq!(b.log_in("root", "correct horse").await.status, 303);
    let page = b.get("/plugins").await.body;
    assert!(
        page.contains("id=\"load-problems\"") && page.contains("notes.wasm is not a Sluice plugin"),
        "{page}"
    );
    assert!(page.contains(">greylisting<"), "{page}");
    // A reload goes through with the stray file still there.
    s.signal("HUP");
    s.metrics_until(&["sluice_reloads_total{kind=\"config\",result=\"ok\"} 1"])
        .await;
    // Removed, it is no problem any more (the watcher notices).
    std::fs::remove_file(plugins.join("notes.wasm")).unwrap();
    let mut cleared = false;
    for _ in 0..100 {
        if !b.get("/plugins").await.body.contains("load-problems") {
            cleared = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cleared, "the console still shows the removed file");
}

/// The console's counts and transactions survive a restart (saved at shutdown, read at
/// start).
#[tokio::test]
async fn the_console_remembers_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    let cfg = write_config(dir.path(), "[admin]\naddress = \"127.0.0.1:0\"\n");
    sluice::smtp_auth::credentials::set_password(
        &dir.path().join("admins"),
        "root",
        "correct horse",
    )
    .unwrap();
    let overview = |s: &Serve| {
        let addr = s.admin.unwrap();
        async move {
            let mut b = sluice_tests::browser::Browser::new(addr);
            assert_eq!(b.log_in("root", "correct horse").await.status, 303);
            (
                b.get("/overview/panel").await.body,
                b.get("/transactions").await.body,
            )
        }
    };
    let row = |panel: &str, name: &str| -> String {
        let at = panel.find(&format!("<td>{name}</td>")).unwrap();
        panel[at..at + panel[at..].find("</tr>").unwrap()].to_string()
    };
    let mut s = Serve::start(&cfg).await;
    let mut ids = Vec::new();
    for i in 0..2 {
        let r = send(s.smtp, &format!("kept {i}")).await;
        assert!(r.starts_with("250 "), "{r}");
        ids.push(r.trim().rsplit(' ').next().unwrap().to_string());
    }
    let mut c = Conversation::connect(s.smtp).await;
    c.send("EHLO c").await;
    c.expect("250 ").await;
    c.send("MAIL FROM:<a@example.net>").await;
    c.expect("250 ").await;
    c.send("RCPT TO:<x@elsewhere.test>").await;
    c.expect("550 5.7.1").await;
    c.send("QUIT").await;
    let (before, _) = overview(&s).await;
    assert!(row(&before, "accepted").contains("<td>2</td>"), "{before}");
    s.signal("TERM");
    assert!(s.exited(Duration::from_secs(20)).await.success());
    assert!(dir.path().join("console-journal.json").is_file());

    let s = Serve::start(&cfg).await;
    let (after, transactions) = overview(&s).await;
    for name in ["accepted", "rejected"] {
        assert_eq!(row(&after, name), row(&before, name), "{after}");
    }
    assert!(row(&after, "rejected").contains("<td>1</td>"), "{after}");
    for id in &ids {
        assert!(transactions.contains(id.as_str()), "{id} in {transactions}");
    }
    assert!(transactions.contains("rejected at RCPT"), "{transactions}");
}
