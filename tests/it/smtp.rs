//! The SMTP server with real clients: Python smtplib, swaks and curl, and exact
//! conversations over TCP. Each test asserts the reply codes and what was stored.

use tokio::process::Command;

use sluice_tests::*;

const MSG: &str = "From: a@example.net\r\nTo: bob@example.org\r\nSubject: hello\r\nMessage-ID: <1@example.net>\r\n\r\nHello Bob.\r\n";

#[tokio::test]
async fn plain_delivery_with_smtplib_adds_received_and_spam_headers() {
    let s = TestServer::start("", &[("tagger", plugin("test", "tagger"))]).await;
    let out = python(
        r#"
import os, smtplib
with smtplib.SMTP("127.0.0.1", int(os.environ["PORT"])) as c:
    c.ehlo("client.test")
    assert c.has_extn("pipelining") and c.has_extn("8bitmime") and c.has_extn("starttls")
    print(c.sendmail("a@example.net", ["bob@example.org"], os.environ["MSG"]))
"#,
        &[
            ("PORT", s.smtp.port().to_string()),
            ("MSG", MSG.to_string()),
        ],
    )
    .await;
    assert_eq!(out.trim(), "{}");
    let mail = s.mailbox("bob", 1).await;
    let m = &mail[0];
    assert!(
        m.starts_with(
            "Received: from client.test ([127.0.0.1])\r\n\tby mx.test (Sluice) with ESMTP id "
        ),
        "{m}"
    );
    assert!(m.contains("\r\nX-Tagged: yes\r\n"), "{m}");
    assert!(
        m.contains("\r\nX-Spam-Status: No, score=1.00 required=5.00 tests=TAGGED\r\n"),
        "{m}"
    );
    assert!(
        m.ends_with("Subject: hello\r\nMessage-ID: <1@example.net>\r\n\r\nHello Bob.\r\n"),
        "{m}"
    );
    s.stop().await;
}

#[tokio::test]
async fn starttls_auth_and_relay_with_smtplib_on_submission() {
    let s = TestServer::start("", &[]).await;
    let script = r#"
import os, smtplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
with smtplib.SMTP("127.0.0.1", int(os.environ["PORT"])) as c:
    c.ehlo("laptop")
    assert not c.has_extn("auth"), "AUTH must not be offered before TLS"
    code, _ = c.mail("alice@example.org")
    print("before-tls", code)
    c.rset()
    c.starttls(context=ctx)
    c.ehlo("laptop")
    assert "PLAIN" in c.esmtp_features["auth"]
    try:
        c.login("alice", "wrong")
    except smtplib.SMTPAuthenticationError as e:
        print("bad-password", e.smtp_code)
    c.login("alice", "wonderland")
    print(c.sendmail("alice@example.org", ["bob@example.org", "carol@elsewhere.test"], os.environ["MSG"]))
    try:
        c.sendmail("ceo@example.org", ["bob@example.org"], os.environ["MSG"])
    except smtplib.SMTPSenderRefused as e:
        print("not-owned", e.smtp_code)
"#;
    let out = python(
        script,
        &[
            ("PORT", s.submission.port().to_string()),
            ("MSG", MSG.to_string()),
        ],
    )
    .await;
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["before-tls 530", "bad-password 535", "{}", "not-owned 553"]
    );
    // bob is local and gets his copy; carol's domain has no route, so the message waits in
    // the queue for her.
    let mail = s.mailbox("bob", 1).await;
    assert!(mail[0].contains("with ESMTPSA id"));
    let queued = s.queued();
    assert_eq!(queued.len(), 1);
    let text = &queued[0];
    assert!(text.contains("with ESMTPSA id"), "{text}");
    assert!(text.contains("(using TLSv1.3 with cipher TLS13_"), "{text}");
    assert!(text.contains("(authenticated as alice)"), "{text}");
    s.stop().await;
}

#[tokio::test]
async fn implicit_tls_with_smtplib_and_curl() {
    let s = TestServer::start("", &[]).await;
    let out = python(
        r#"
import os, smtplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
with smtplib.SMTP_SSL("127.0.0.1", int(os.environ["PORT"]), context=ctx) as c:
    c.login("alice", "wonderland")
    print(c.sendmail("alice@example.org", ["bob@example.org"], os.environ["MSG"]))
"#,
        &[
            ("PORT", s.smtps.port().to_string()),
            ("MSG", MSG.to_string()),
        ],
    )
    .await;
    assert_eq!(out.trim(), "{}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.eml");
    std::fs::write(&file, MSG.replace("Subject: hello", "Subject: by curl")).unwrap();
    let curl = run_client(
        Command::new("curl")
            .args(["--silent", "--show-error", "--insecure", "--max-time", "20"])
            .arg(format!("smtps://127.0.0.1:{}", s.smtps.port()))
            .args([
                "--user",
                "alice:wonderland",
                "--mail-from",
                "alice@example.org",
                "--mail-rcpt",
                "bob@example.org",
                "--upload-file",
            ])
            .arg(&file),
    )
    .await;
    assert!(
        curl.status.success(),
        "{}",
        String::from_utf8_lossy(&curl.stderr)
    );
    let mail = s.mailbox("bob", 2).await;
    assert!(mail.iter().any(|m| m.contains("Subject: by curl")));
    assert!(mail.iter().all(|m| m.contains("with ESMTPSA id")));
    s.stop().await;
}

#[tokio::test]
async fn swaks_auth_failure_and_success_over_starttls() {
    let s = TestServer::start("", &[]).await;
    let port = s.submission.port().to_string();
    let swaks = |password: &'static str| {
        let mut cmd = Command::new("swaks");
        cmd.args(["--server", "127.0.0.1", "--port", &port])
            .args([
                "--tls",
                "--auth",
                "PLAIN",
                "--auth-user",
                "alice",
                "--auth-password",
                password,
            ])
            .args([
                "--from",
                "alice@example.org",
                "--to",
                "bob@example.org",
                "--timeout",
                "20",
            ])
            .args(["--header", "Subject: from swaks"]);
        cmd
    };
    let bad = run_client(&mut swaks("nope")).await;
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stdout)
            .contains("<~* 535 5.7.8 Authentication credentials invalid")
    );
    let good = run_client(&mut swaks("wonderland")).await;
    let out = String::from_utf8_lossy(&good.stdout);
    assert!(good.status.success(), "{out}");
    assert!(out.contains("<~  250 2.0.0 Ok: queued as "), "{out}");
    let mail = s.mailbox("bob", 1).await;
    assert!(mail[0].contains("Subject: from swaks"));
    s.stop().await;
}

#[tokio::test]
async fn relay_is_refused_to_strangers_with_every_trick() {
    let s = TestServer::start("", &[]).await;
    let mut c = Conversation::connect(s.smtp).await;
    c.send("EHLO stranger.test").await;
    c.expect("250 ").await;
    c.send("MAIL FROM:<x@stranger.test>").await;
    c.expect("250 2.1.0").await;
    for rcpt in [
        "victim@elsewhere.test",
        "victim%elsewhere.test@example.org",
        "elsewhere.test!victim@example.org",
        "\"victim@elsewhere.test\"@example.org",
        "victim@example.org.",
        "@example.org:victim@elsewhere.test",
        "victim@ELSEWHERE.test",
    ] {
        c.send(&format!("RCPT TO:<{rcpt}>")).await;
        c.expect("550 5.7.1 Relaying denied").await;
    }
    c.send("RCPT TO:<Bob@EXAMPLE.org>").await;
    c.expect("250 2.1.5").await;
    c.send("QUIT").await;
    c.expect("221").await;
    s.stop().await;
}

#[tokio::test]
async fn pipelined_transaction_in_one_write() {
    let s = TestServer::start("", &[]).await;
    let mut c = Conversation::connect(s.smtp).await;
    c.send("EHLO client.test").await;
    c.expect("250 ").await;
    c.raw(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<bob@example.org>\r\nRCPT TO:<nobody@elsewhere.test>\r\nRCPT TO:<carol@example.org>\r\nDATA\r\n").await;
    c.expect("250 2.1.0").await;
    c.expect("250 2.1.5").await;
    c.expect("550 5.7.1").await;
    c.expect("250 2.1.5").await;
    c.expect("354").await;
    c.raw(format!("{MSG}.\r\nQUIT\r\n").as_bytes()).await;
    c.expect("250 2.0.0 Ok: queued as").await;
    c.expect("221").await;
    assert_eq!(s.mailbox("bob", 1).await.len(), 1);
    assert_eq!(s.mailbox("carol", 1).await.len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn size_limits_declared_and_actual() {
    let s = TestServer::start("[limits]\nmax_message_size = 2000\n", &[]).await;
    let mut c = Conversation::connect(s.smtp).await;
    c.send("EHLO c").await;
    assert!(c.expect("250 ").await.contains("SIZE 2000"));
    c.send("MAIL FROM:<a@example.net> SIZE=5000").await;
    c.expect("552 5.3.4").await;
    c.send("MAIL FROM:<a@example.net>").await;
    c.expect("250").await;
    c.send("RCPT TO:<bob@example.org>").await;
    c.expect("250").await;
    c.send("DATA").await;
    c.expect("354").await;
    let big = "x".repeat(100);
    for _ in 0..50 {
        c.send(&big).await;
    }
    c.send(".").await;
    c.expect("552 5.3.4 Message too big").await;
    c.send("NOOP").await;
    c.expect("250").await;
    assert_eq!(s.stored_count(), 0);
    s.stop().await;
}

#[tokio::test]
async fn smuggling_attempt_stays_one_message() {
    let s = TestServer::start("", &[]).await;
    let mut c = Conversation::connect(s.smtp).await;
    c.begin_data("a@example.net", "bob@example.org").await;
    c.raw(b"Subject: one\r\n\r\nbody\n.\nMAIL FROM:<evil@example.net>\r\nRCPT TO:<carol@example.org>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n").await;
    c.expect("250 2.0.0").await;
    c.send("QUIT").await;
    c.expect("221").await;
    let mail = s.mailbox("bob", 1).await;
    assert!(
        mail[0].contains("body\r\n.\r\nMAIL FROM:<evil@example.net>\r\n"),
        "{}",
        mail[0]
    );
    // The 221 right after the one 250 shows that no smuggled command ran; nothing for carol
    // was ever accepted.
    assert!(
        !s.dir.path().join("maildir/carol").exists(),
        "a second message was smuggled"
    );
    s.queue_drained().await;
    assert_eq!(s.stored_count(), 1);
    s.stop().await;
}

#[tokio::test]
async fn a_client_that_disconnects_mid_data_gets_nothing_stored() {
    let s = TestServer::start("", &[]).await;
    let mut c = Conversation::connect(s.smtp).await;
    c.begin_data("a@example.net", "bob@example.org").await;
    c.raw(b"Subject: cut\r\n\r\nhalf a messa").await;
    drop(c);
    // The server must still serve others, and must not have stored the half message.
    let mut d = Conversation::connect(s.smtp).await;
    d.send("NOOP").await;
    d.expect("250").await;
    assert_eq!(s.stored_count(), 0);
    s.stop().await;
}

#[tokio::test]
async fn a_stalled_client_is_disconnected_without_slowing_others() {
    let s = TestServer::start("[limits]\ncommand_timeout_secs = 1\n", &[]).await;
    let mut stalled = Conversation::connect(s.smtp).await;
    stalled.send("EHLO slow").await;
    stalled.expect("250 ").await;
    // Meanwhile another client completes a whole transaction.
    let mut other = Conversation::connect(s.smtp).await;
    other.send("HELO quick").await;
    other.expect("250").await;
    other.send("QUIT").await;
    other.expect("221").await;
    // Then the stalled one is told and closed.
    stalled.expect("421 4.4.2 mx.test Timeout").await;
    assert!(stalled.closed().await);
    s.stop().await;
}

#[tokio::test]
async fn concurrent_clients_all_get_their_mail_stored() {
    let s = TestServer::start("", &[("tagger", plugin("test", "tagger"))]).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let addr = s.smtp;
        tasks.push(tokio::spawn(async move {
            let mut c = Conversation::connect(addr).await;
            c.begin_data("a@example.net", "bob@example.org").await;
            c.raw(format!("Subject: n{i}\r\n\r\nx\r\n.\r\nQUIT\r\n").as_bytes())
                .await;
            c.expect("250 2.0.0").await;
            c.expect("221").await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mail = s.mailbox("bob", 20).await;
    for i in 0..20 {
        assert!(
            mail.iter()
                .any(|m| m.contains(&format!("Subject: n{i}\r\n"))),
            "n{i} missing"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn per_ip_connection_limit() {
    let s = TestServer::start("[limits]\nmax_connections_per_ip = 2\n", &[]).await;
    let _a = Conversation::connect(s.smtp).await;
    let _b = Conversation::connect(s.smtp).await;
    let tcp = tokio::net::TcpStream::connect(s.smtp).await.unwrap();
    let mut r = tokio::io::BufReader::new(tcp);
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut r, &mut line)
        .await
        .unwrap();
    assert!(
        line.starts_with("421 4.7.0 mx.test Too many connections"),
        "{line}"
    );
    s.stop().await;
}

#[tokio::test]
async fn plugins_refuse_at_each_stage_with_their_own_text() {
    let s = TestServer::start(
        "[plugin.sender-gate.config]\ndeny_domain = \"bad.example\"\n[plugin.tagger.config]\nreject_word = \"forbidden\"\n",
        &[("sender-gate", plugin("test", "sender-gate")), ("tagger", plugin("test", "tagger"))],
    )
    .await;
    let mut c = Conversation::connect(s.smtp).await;
    c.send("EHLO c").await;
    c.expect("250 ").await;
    c.send("MAIL FROM:<x@bad.example>").await;
    c.expect("550 5.7.1 senders from bad.example are refused")
        .await;
    c.send("MAIL FROM:<a@example.net>").await;
    c.expect("250").await;
    c.send("RCPT TO:<nobody@example.org>").await;
    c.expect("550 5.1.1 no such user").await;
    c.send("RCPT TO:<later@example.org>").await;
    c.expect("451 4.2.0 mailbox busy").await;
    c.send("RCPT TO:<bob@example.org>").await;
    c.expect("250").await;
    c.send("DATA").await;
    c.expect("354").await;
    c.raw(b"Subject: forbidden fruit\r\n\r\nx\r\n.\r\n").await;
    c.expect("554 5.7.1 subject contains \"forbidden\"").await;
    c.send("QUIT").await;
    c.expect("221").await;
    assert_eq!(s.stored_count(), 0);
    s.stop().await;
}

#[tokio::test]
async fn a_hostile_plugin_tempfails_and_the_server_keeps_serving() {
    let s = TestServer::start(
        // Long enough that the fine message's calls never meet it, busy machine or not.
        "[plugin.hostile]\ntimeout_ms = 2000\n[plugin.hostile.config]\nmode = \"loop\"\n",
        &[("hostile", plugin("test", "hostile"))],
    )
    .await;
    let mut c = Conversation::connect(s.smtp).await;
    c.begin_data("a@example.net", "bob@example.org").await;
    c.raw(b"Subject: hostile\r\n\r\nx\r\n.\r\n").await;
    c.expect("451 4.3.0").await;
    c.begin_data("a@example.net", "bob@example.org").await;
    c.raw(b"Subject: fine\r\n\r\nx\r\n.\r\n").await;
    c.expect("250 2.0.0").await;
    let mail = s.mailbox("bob", 1).await;
    assert!(mail[0].contains("Subject: fine"));
    s.stop().await;
}

#[tokio::test]
async fn a_user_added_while_running_can_authenticate_on_loopback_plaintext() {
    let s = TestServer::start("[auth]\nallow_plaintext_on_loopback = true\n", &[]).await;
    let users = s.dir.path().join("users");
    // Make sure the file's modification time moves even on coarse-grained file systems.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    sluice::smtp_auth::credentials::set_password(&users, "carol", "opensesame").unwrap();
    // Plaintext AUTH is allowed on loopback by configuration (submission still wants TLS
    // before mail, so this uses the smtp listener).
    let mut c = Conversation::connect(s.smtp).await;
    c.send("EHLO c").await;
    assert!(c.expect("250 ").await.contains("AUTH PLAIN LOGIN"));
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode("\0carol\0opensesame");
    c.send(&format!("AUTH PLAIN {token}")).await;
    c.expect("235 2.7.0").await;
    c.send("MAIL FROM:<carol@example.org>").await;
    c.expect("250").await;
    c.send("RCPT TO:<someone@elsewhere.test>").await;
    c.expect("250 2.1.5").await;
    s.stop().await;
}

#[tokio::test]
async fn an_ipv6_listener_beside_the_ipv4_ones() {
    let s = TestServer::start(
        "[[listener]]\nkind = \"smtp\"\naddress = \"[::1]:0\"\n",
        &[],
    )
    .await;
    let v6 = s
        .listeners
        .iter()
        .map(|(_, a)| *a)
        .find(std::net::SocketAddr::is_ipv6)
        .expect("an IPv6 listener");
    let mut c = Conversation::connect(v6).await;
    c.begin_data("a@example.net", "bob@example.org").await;
    c.raw(b"Subject: over v6\r\n\r\nx\r\n.\r\n").await;
    c.expect("250 2.0.0").await;
    let mail = s.mailbox("bob", 1).await;
    assert!(
        mail[0].starts_with("Received: from client.test ([::1])"),
        "{}",
        mail[0]
    );
    s.stop().await;
}
