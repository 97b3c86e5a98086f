//! The queue runner with a real next hop (a Sluice server in-process, which records what it
//! accepts in its Maildir) and an injected clock: delivered, deferred then retried, failed
//! with a DSN checked field by field, expired with a DSN, bounce of a bounce dropped,
//! on-delivery hooks, and a new runner resuming from the state on disk.

use sluice::delivery::runner::Runner;
use sluice::delivery::state::RcptStatus;
use sluice::envelope::{Param, Recipient, Sender};
use sluice::spool::{Spool, SpoolState, SpooledEnvelope};
use sluice_tests::*;

const T0: i64 = 1_800_000_000;

/// A next hop that refuses `nobody@` (550 5.1.1) and defers `later@` (451 4.2.0).
async fn next_hop() -> TestServer {
    TestServer::start("", &[("sender-gate", plugin("test", "sender-gate"))]).await
}

/// A relay's spool and runner routing example.org to `hop`; relay.test is its local domain.
async fn relay(
    hop: &TestServer,
    extra_plugins: &[(&str, std::path::PathBuf)],
) -> (tempfile::TempDir, Spool, Runner) {
    let dir = tempfile::tempdir().unwrap();
    let (spool, runner) = relay_at(dir.path(), hop, extra_plugins).await;
    (dir, spool, runner)
}

/// The relay over an existing data directory (a restart).
async fn relay_at(
    dir: &std::path::Path,
    hop: &TestServer,
    extra_plugins: &[(&str, std::path::PathBuf)],
) -> (Spool, Runner) {
    let toml = format!(
        "[server]\nhostname = \"relay.test\"\ndata_dir = {:?}\n[plugins]\ncache_dir = {:?}\n[relay]\nlocal_domains = [\"relay.test\"]\n[delivery]\nretry_secs = [300, 600]\nmax_queue_lifetime_secs = 3600\ntimeout_secs = 10\n[[route]]\ndomains = [\"example.org\"]\nkind = \"smtp\"\nhost = \"127.0.0.1:{}\"\ntls = \"opportunistic\"\n",
        dir,
        workspace_root().join("target/test-compile-cache"),
        hop.smtp.port()
    );
    let cfg = config(&toml);
    let spool = Spool::open(&dir.join("spool")).unwrap();
    let rt = runtime();
    let p = pipeline(&rt, &cfg, extra_plugins).await.unwrap();
    let runner = Runner::new(spool.clone(), cfg, p);
    (spool, runner)
}

fn envelope(id: &str, from: &str, rcpts: &[&str], sender_params: Vec<Param>) -> SpooledEnvelope {
    SpooledEnvelope {
        id: id.into(),
        received_at: "2027-01-15T08:00:00+00:00".into(),
        sender: Sender {
            address: from.into(),
            params: sender_params,
        },
        recipients: rcpts
            .iter()
            .map(|r| Recipient {
                address: r.to_string(),
                params: vec![Param {
                    keyword: "ORCPT".into(),
                    value: Some(format!("rfc822;{r}")),
                }],
                discarded: false,
            })
            .collect(),
        client_ip: "192.0.2.1".into(),
        helo: "c".into(),
        listener: "smtp".into(),
        auth_user: None,
        quarantine: None,
        spam: false,
    }
}

const MSG: &[u8] = b"From: alice@relay.test\r\nSubject: quarterly figures\r\nMessage-ID: <q@relay.test>\r\n\r\nNumbers.\r\n";

#[tokio::test]
async fn mixed_outcomes_retry_expiry_and_a_dsn_checked_field_by_field() {
    let hop = next_hop().await;
    let (dir, spool, runner) = relay(
        &hop,
        &[("delivery-notes", plugin("test", "delivery-notes"))],
    )
    .await;
    let env = envelope(
        "Q1",
        "alice@relay.test",
        &["bob@example.org", "nobody@example.org", "later@example.org"],
        vec![
            Param {
                keyword: "RET".into(),
                value: Some("HDRS".into()),
            },
            Param {
                keyword: "ENVID".into(),
                value: Some("env-42".into()),
            },
        ],
    );
    spool.store(SpoolState::Queue, &env, MSG).await.unwrap();

    // First pass: one delivered, one failed, one deferred.
    let pass = runner.run_once(T0).await;
    let outcome: Vec<(&str, RcptStatus)> = pass
        .attempts
        .iter()
        .map(|(_, r, s, _)| (r.as_str(), *s))
        .collect();
    assert_eq!(
        outcome,
        [
            ("bob@example.org", RcptStatus::Delivered),
            ("nobody@example.org", RcptStatus::Failed),
            ("later@example.org", RcptStatus::Pending)
        ]
    );
    assert!(pass.attempts[1].3.contains("550 5.1.1 no such user"));
    assert_eq!(hop.mailbox("bob", 1).await.len(), 1);
    // The on-delivery hook saw every outcome.
    let logged: Vec<&str> = pass
        .hook_calls
        .iter()
        .flat_map(|c| c.logs.iter().map(|l| l.message.as_str()))
        .collect();
    assert_eq!(logged.len(), 3);
    assert!(
        logged[2].starts_with("Q1 to later@example.org deferred: 451 4.2.0 mailbox busy"),
        "{logged:?}"
    );
    assert!(
        pass.bounces.is_empty(),
        "no bounce while a recipient is still pending"
    );

    // Not due yet: nothing happens. A new runner (a restart) picks up the state from disk.
    assert!(runner.run_once(T0 + 100).await.attempts.is_empty());
    drop(runner);
    let (spool, runner) = relay_at(
        dir.path(),
        &hop,
        &[("delivery-notes", plugin("test", "delivery-notes"))],
    )
    .await;
    let second = runner.run_once(T0 + 300).await;
    assert_eq!(
        second.attempts.len(),
        1,
        "only the deferred recipient is retried"
    );
    assert_eq!(second.attempts[0].1, "later@example.org");

    // Past the queue lifetime the pending recipient fails as expired, and one DSN lists both
    // failures.
    let last = runner.run_once(T0 + 3600 + 1).await;
    assert_eq!(last.finished, ["Q1"]);
    assert_eq!(last.bounces.len(), 1);
    // The bounce goes to alice@relay.test, a local domain of the relay: the next pass delivers
    // it to the relay's Maildir.
    let deliver_bounce = runner.run_once(T0 + 3602).await;
    assert_eq!(deliver_bounce.finished.len(), 1);
    let new = dir.path().join("maildir/alice/new");
    let file = std::fs::read_dir(&new)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let dsn = String::from_utf8(std::fs::read(file).unwrap()).unwrap();
    for expected in [
        "From: \"Mail Delivery System\" <MAILER-DAEMON@relay.test>",
        "To: <alice@relay.test>",
        "Subject: Undeliverable: 2 recipient(s)",
        "Auto-Submitted: auto-replied",
        "Content-Type: multipart/report; report-type=\"delivery-status\"",
        "Reporting-MTA: dns; relay.test",
        "Original-Envelope-Id: env-42",
        "Original-Recipient: rfc822;nobody@example.org",
        "Final-Recipient: rfc822; nobody@example.org",
        "Action: failed",
        "Status: 5.1.1",
        "Diagnostic-Code: smtp; 550 5.1.1 no such user",
        "Final-Recipient: rfc822; later@example.org",
        "Status: 4.4.7",
        "Content-Type: text/rfc822-headers",
        "Subject: quarterly figures",
    ] {
        assert!(dsn.contains(expected), "missing {expected:?} in:\n{dsn}");
    }
    assert!(dsn.contains("Remote-MTA: dns; 127.0.0.1"), "{dsn}");
    // The human-readable part is the render-bounce plugin's.
    let parsed = mail_parser::MessageParser::new()
        .parse(dsn.as_bytes())
        .unwrap();
    // Its Message-ID is under server.hostname, not the machine's name.
    let message_id = parsed.message_id().unwrap_or_default();
    assert!(message_id.ends_with("@relay.test"), "{message_id}");
    let text = parsed.body_text(0).unwrap().replace("\r\n", "\n");
    assert!(
        text.starts_with(
            "Your message Q1 could not be delivered:\nnobody@example.org: 550 5.1.1 no such user\n"
        ),
        "{text}"
    );
    assert!(
        !dsn.contains("Final-Recipient: rfc822; bob@example.org"),
        "delivered recipients are not listed"
    );
    assert!(!dsn.contains("Numbers."), "RET=HDRS returns headers only");
    assert_eq!(spool.list(SpoolState::Queue).unwrap().len(), 0);
    hop.stop().await;
}

#[tokio::test]
async fn default_bounce_text_and_ret_full_and_notify_never() {
    let hop = next_hop().await;
    let (dir, spool, runner) = relay(&hop, &[]).await;
    let mut env = envelope(
        "Q2",
        "alice@relay.test",
        &["nobody@example.org"],
        vec![Param {
            keyword: "RET".into(),
            value: Some("FULL".into()),
        }],
    );
    spool.store(SpoolState::Queue, &env, MSG).await.unwrap();
    let pass = runner.run_once(T0).await;
    assert_eq!(pass.bounces.len(), 1);
    runner.run_once(T0 + 1).await;
    let new = dir.path().join("maildir/alice/new");
    let file = std::fs::read_dir(&new)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let dsn = String::from_utf8(std::fs::read(file).unwrap()).unwrap();
    assert!(
        dsn.contains("Subject: Undelivered Mail Returned to Sender"),
        "{dsn}"
    );
    let parsed = mail_parser::MessageParser::new()
        .parse(dsn.as_bytes())
        .unwrap();
    let text = parsed.body_text(0).unwrap().replace("\r\n", "\n");
    assert!(text.contains("Your message with the subject \"quarterly figures\" could not be delivered to one of its recipients"), "{text}");
    assert!(
        text.contains("nobody@example.org\n    550 5.1.1 no such user"),
        "{text}"
    );
    assert!(
        dsn.contains("Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n"),
        "{dsn}"
    );
    assert!(
        dsn.contains("\r\nNumbers.\r\n"),
        "RET=FULL returns the whole message, unencoded: {dsn}"
    );

    // NOTIFY=NEVER: the failure is not reported.
    env.id = "Q3".into();
    env.recipients[0].params.push(Param {
        keyword: "NOTIFY".into(),
        value: Some("NEVER".into()),
    });
    spool.store(SpoolState::Queue, &env, MSG).await.unwrap();
    let pass = runner.run_once(T0 + 2).await;
    assert_eq!(pass.finished, ["Q3"]);
    assert!(pass.bounces.is_empty());
    hop.stop().await;
}

#[tokio::test]
async fn a_failed_bounce_is_dropped_never_bounced() {
    let hop = next_hop().await;
    let (_dir, spool, runner) = relay(&hop, &[]).await;
    spool
        .store(
            SpoolState::Queue,
            &envelope("B1", "", &["nobody@example.org"], vec![]),
            MSG,
        )
        .await
        .unwrap();
    let pass = runner.run_once(T0).await;
    assert_eq!(pass.finished, ["B1"]);
    assert!(pass.bounces.is_empty());
    assert!(spool.list(SpoolState::Queue).unwrap().is_empty());
    hop.stop().await;
}

#[tokio::test]
async fn an_unreachable_next_hop_defers_then_delivers_when_it_is_back() {
    let hop = next_hop().await;
    let (_dir, spool, runner) = relay(&hop, &[]).await;
    let port = hop.smtp.port();
    hop.stop().await;
    spool
        .store(
            SpoolState::Queue,
            &envelope("D1", "alice@relay.test", &["bob@example.org"], vec![]),
            MSG,
        )
        .await
        .unwrap();
    let pass = runner.run_once(T0).await;
    assert_eq!(pass.attempts[0].2, RcptStatus::Pending);
    assert!(
        pass.attempts[0]
            .3
            .starts_with("451 4.4.1 cannot connect to"),
        "{:?}",
        pass.attempts
    );
    // Bring a next hop back on the same port and retry when due.
    let back = TestServer::start(
        &format!("[[listener]]\nkind = \"smtp\"\naddress = \"127.0.0.1:{port}\"\n"),
        &[],
    )
    .await;
    let pass = runner.run_once(T0 + 300).await;
    assert_eq!(
        pass.attempts[0].2,
        RcptStatus::Delivered,
        "{:?}",
        pass.attempts
    );
    assert_eq!(back.mailbox("bob", 1).await.len(), 1);
    back.stop().await;
}
