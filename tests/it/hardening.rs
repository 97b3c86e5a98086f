//! What a hostile client, plugin or peer can do to Sluice, tried over real sockets against a
//! running server: bounded buffers, transactions that leave nothing behind, deadlines on
//! whole commands and on writes, AUTH throttled across connections, loops refused, plugin
//! returns validated, private files.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use sluice_tests::serve::Serve;
use sluice_tests::*;

/// A configuration for `sluice serve` on loopback with `extra` appended.
fn serve_config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let cfg = dir.join("sluice.toml");
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "[server]\nhostname = \"mx.test\"\ndata_dir = {:?}\n[plugins]\ncache_dir = {:?}\n[[listener]]\nkind = \"smtp\"\naddress = \"127.0.0.1:0\"\n[relay]\nlocal_domains = [\"example.org\"]\n[authentication]\nverify = false\n{extra}\n",
            dir,
            workspace_root().join("target/test-compile-cache")
        ),
    )
    .unwrap();
    cfg
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Writes `total` bytes of `byte` without a line ending, in 1 MiB writes, stopping early
/// (without failing) if the server closes the connection. Bounded: 60 s.
async fn endless_line(tcp: &mut TcpStream, byte: u8, total: usize) -> usize {
    let block = vec![byte; 1 << 20];
    let mut sent = 0;
    let write_all = async {
        while sent < total {
            if tcp.write_all(&block).await.is_err() {
                break;
            }
            sent += block.len();
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(60), write_all).await;
    sent
}

#[tokio::test]
async fn an_endless_sasl_line_is_refused_without_being_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = serve_config(dir.path(), "[auth]\nallow_plaintext_on_loopback = true\n");
    let server = Serve::start(&cfg).await;
    let before = rss_kib(server.pid());
    let tcp = TcpStream::connect(server.smtp).await.unwrap();
    let mut c = tokio::io::BufReader::new(tcp);
    let mut greeting = [0u8; 256];
    let _ = c.read(&mut greeting).await.unwrap();
    c.get_mut()
        .write_all(b"EHLO client.test\r\nAUTH LOGIN\r\n")
        .await
        .unwrap();
    // 64 MiB without a line ending (the relay once grew by 113 MiB on this).
    endless_line(c.get_mut(), b'A', 64 << 20).await;
    let grown = rss_kib(server.pid()).saturating_sub(before);
    c.get_mut().write_all(b"\r\nNOOP\r\n").await.unwrap();
    let mut replies = String::new();
    let read = async {
        let mut buf = [0u8; 4096];
        while !replies.contains("250 2.0.0") {
            let n = c.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            replies.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("replies within 10 s");
    assert!(
        replies.contains("334 VXNlcm5hbWU6") && replies.contains("500 5.5.6"),
        "{replies}"
    );
    assert!(
        replies.contains("250 2.0.0"),
        "the session goes on: {replies}"
    );
    assert!(
        grown < 16 * 1024,
        "the relay grew by {grown} KiB on one unfinished SASL line"
    );
}

#[tokio::test]
async fn a_bdat_chunk_announced_past_the_size_limit_is_refused_before_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = serve_config(dir.path(), "[limits]\nmax_message_size = 1048576\n");
    let server = Serve::start(&cfg).await;
    let before = rss_kib(server.pid());
    let mut c = Conversation::connect(server.smtp).await;
    c.send("EHLO client.test").await;
    c.expect("250 ").await;
    c.send("MAIL FROM:<a@example.net>").await;
    c.expect("250 2.1.0").await;
    c.send("RCPT TO:<bob@example.org>").await;
    c.expect("250 2.1.5").await;
    c.send("BDAT 100000000000 LAST").await;
    // Answered at once, without waiting for a byte of the chunk, and closed: skipping 100 GB
    // to stay in sync is not worth it.
    c.expect("552 5.3.4").await;
    c.expect("421 ").await;
    assert!(c.closed().await, "the connection is closed");

    // A chunk within one message's size but past the limit is read and dropped, not kept;
    // the session goes on and the next transaction is clean.
    let mut c = Conversation::connect(server.smtp).await;
    c.send("EHLO client.test").await;
    c.expect("250 ").await;
    c.send("MAIL FROM:<a@example.net>").await;
    c.expect("250 2.1.0").await;
    c.send("RCPT TO:<bob@example.org>").await;
    c.expect("250 2.1.5").await;
    c.raw(b"BDAT 600000\r\n").await;
    c.raw(&vec![b'x'; 600_000]).await;
    c.expect("250 2.0.0").await;
    c.raw(b"BDAT 600000 LAST\r\n").await;
    c.raw(&vec![b'y'; 600_000]).await;
    c.expect("552 5.3.4").await;
    c.send("MAIL FROM:<a@example.net>").await;
    c.expect("250 2.1.0").await;
    let grown = rss_kib(server.pid()).saturating_sub(before);
    assert!(grown < 32 * 1024, "the relay grew by {grown} KiB");
}

/// Sends MAIL, RCPT and a non-final BDAT chunk `STALE` to bob.
async fn stale_chunk(c: &mut Conversation) {
    c.send("MAIL FROM:<a@example.net>").await;
    c.expect("250 2.1.0").await;
    c.send("RCPT TO:<bob@example.org>").await;
    c.expect("250 2.1.5").await;
    c.raw(b"BDAT 7\r\nSTALE\r\n").await;
    c.expect("250 2.0.0").await;
}

/// MAIL, RCPT and a last chunk `Subject: fresh`; expects it queued.
async fn fresh_message(c: &mut Conversation) {
    c.send("MAIL FROM:<a@example.net>").await;
    c.expect("250 2.1.0").await;
    c.send("RCPT TO:<bob@example.org>").await;
    c.expect("250 2.1.5").await;
    let body = b"Subject: fresh\r\n\r\nbody\r\n";
    c.raw(format!("BDAT {} LAST\r\n", body.len()).as_bytes())
        .await;
    c.raw(body).await;
    c.expect("250 2.0.0 Ok: queued").await;
}

#[tokio::test]
async fn nothing_of_a_transaction_survives_rset_ehlo_or_a_refused_chunk() {
    let s = TestServer::start("[limits]\nmax_message_size = 4096\n", &[]).await;
    let mut c = Conversation::connect(s.smtp).await;
    c.send("EHLO client.test").await;
    c.expect("250 ").await;
    stale_chunk(&mut c).await;
    c.send("RSET").await;
    c.expect("250").await;
    fresh_message(&mut c).await;

    stale_chunk(&mut c).await;
    c.send("EHLO again.test").await;
    c.expect("250 ").await;
    fresh_message(&mut c).await;

    // A refused chunk (past the limit) ends the transaction and drops what came before it.
    stale_chunk(&mut c).await;
    c.raw(b"BDAT 4095\r\n").await;
    c.raw(&[b'z'; 4095]).await;
    c.expect("552 5.3.4").await;
    fresh_message(&mut c).await;
    c.send("QUIT").await;

    let mail = s.mailbox("bob", 3).await;
    for m in &mail {
        assert!(
            !m.contains("STALE") && !m.contains("zzz"),
            "bytes of an ended transaction reached a message:\n{m}"
        );
        assert!(m.contains("Subject: fresh"), "{m}");
    }
    s.stop().await;
}

#[tokio::test]
async fn a_chunk_sent_before_starttls_never_reaches_the_message_sent_over_tls() {
    let s = TestServer::start("", &[]).await;
    // STARTTLS during a transaction is refused; after RSET it starts afresh, and nothing of
    // the plain-text transaction is inside the TLS one.
    let out = python(
        r#"
import os, smtplib, ssl
host, port = os.environ["HOST"], int(os.environ["PORT"])
s = smtplib.SMTP(host, port, timeout=10)
s.ehlo("client.test")
print(s.docmd("STARTTLS", "now")[0])
assert s.docmd("MAIL", "FROM:<a@example.net>")[0] == 250
assert s.docmd("RCPT", "TO:<bob@example.org>")[0] == 250
s.send(b"BDAT 7\r\nSTALE\r\n")
assert s.getreply()[0] == 250
print(s.docmd("STARTTLS")[0])
assert s.docmd("RSET")[0] == 250
s.starttls(context=ssl._create_unverified_context())
s.ehlo("client.test")
assert s.docmd("MAIL", "FROM:<a@example.net>")[0] == 250
assert s.docmd("RCPT", "TO:<bob@example.org>")[0] == 250
body = b"Subject: over tls\r\n\r\nbody\r\n"
s.send(b"BDAT %d LAST\r\n" % len(body) + body)
print(s.getreply()[0])
s.quit()
"#,
        &[
            ("HOST", s.smtp.ip().to_string()),
            ("PORT", s.smtp.port().to_string()),
        ],
    )
    .await;
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["501", "503", "250"],
        "STARTTLS with a parameter, STARTTLS mid-transaction, the message over TLS"
    );
    let mail = s.mailbox("bob", 1).await;
    assert!(mail[0].contains("Subject: over tls"), "{}", mail[0]);
    assert!(!mail[0].contains("STALE"), "{}", mail[0]);
    s.stop().await;
}

#[tokio::test]
async fn an_over_long_command_line_is_refused_and_the_session_goes_on() {
    let s = TestServer::start("", &[]).await;
    let mut c = Conversation::connect(s.smtp).await;
    c.send("EHLO client.test").await;
    c.expect("250 ").await;
    c.send(&format!("MAIL FROM:<{}@example.net>", "a".repeat(5000)))
        .await;
    c.expect("500 5.5.2 Line too long").await;
    c.send("NOOP").await;
    c.expect("250 2.0.0").await;
    s.stop().await;
}

#[tokio::test]
async fn a_trickled_command_is_cut_off_at_the_command_deadline() {
    let s = TestServer::start("[limits]\ncommand_timeout_secs = 2\n", &[]).await;
    let mut tcp = TcpStream::connect(s.smtp).await.unwrap();
    let mut buf = [0u8; 512];
    let _ = tcp.read(&mut buf).await.unwrap();
    // One byte every 300 ms: each read is well within the deadline, the command never is.
    let mut closed_after = None;
    let started = std::time::Instant::now();
    for _ in 0..40 {
        if tcp.write_all(b"N").await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        match tokio::time::timeout(Duration::from_millis(300), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Ok(Ok(n)) => {
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                assert!(text.starts_with("421 "), "{text}");
            }
            Err(_) => {}
        }
    }
    let after = closed_after.expect("the trickling client was never cut off (12 s)");
    assert!(after < Duration::from_secs(6), "cut off after {after:?}");
    s.stop().await;
}

#[tokio::test]
async fn a_client_that_never_reads_its_replies_is_dropped() {
    let s = TestServer::start(
        "[limits]\ncommand_timeout_secs = 2\nmax_errors = 1000000\n",
        &[],
    )
    .await;
    let mut tcp = TcpStream::connect(s.smtp).await.unwrap();
    // Pipelined NOOPs without reading a reply: the replies fill the socket buffers, the
    // server's write blocks, and after the command timeout it gives up on the client.
    let lines = b"NOOP\r\n".repeat(10_000);
    let outcome = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Err(e) = tcp.write_all(&lines).await {
                return e;
            }
        }
    })
    .await;
    let e = outcome.expect("the server kept a non-reading client for 30 s");
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        "{e}"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_session_ends_at_its_maximum_lifetime_however_busy() {
    let s = TestServer::start("[limits]\nmax_session_secs = 2\n", &[]).await;
    let mut c = Conversation::connect(s.smtp).await;
    let mut last = String::new();
    for _ in 0..40 {
        c.send("NOOP").await;
        last = c.reply().await;
        if !last.starts_with("250") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(last.starts_with("421 "), "never closed: {last:?}");
    assert!(c.closed().await);
    s.stop().await;
}

#[tokio::test]
async fn auth_failures_are_counted_across_connections_and_lock_out_the_client() {
    let s = TestServer::start(
        "[auth]\nallow_plaintext_on_loopback = true\n[limits]\nauth_lockout_failures = 3\n",
        &[],
    )
    .await;
    use base64::Engine as _;
    let plain = |user: &str, pass: &str| {
        base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"))
    };
    // Three failures over two connections (each session alone would allow three).
    for attempts in [2, 1] {
        let mut c = Conversation::connect(s.smtp).await;
        c.send("EHLO client.test").await;
        c.expect("250 ").await;
        for _ in 0..attempts {
            c.send(&format!("AUTH PLAIN {}", plain("alice", "guess")))
                .await;
            let r = c.reply().await;
            assert!(r.contains("535 5.7.8"), "{r}");
        }
    }
    // A new connection with the right password is not even checked now.
    let mut c = Conversation::connect(s.smtp).await;
    c.send("EHLO client.test").await;
    c.expect("250 ").await;
    c.send(&format!("AUTH PLAIN {}", plain("alice", "wonderland")))
        .await;
    c.expect("454 4.7.0").await;
    s.stop().await;
}

#[tokio::test]
async fn a_message_that_has_looped_is_refused() {
    let s = TestServer::start("", &[]).await;
    let hops: String = (0..50)
        .map(|i| format!("Received: from hop{i}.example by hop{}.example; Mon, 30 Nov 2026 10:00:00 +0000\r\n", i + 1))
        .collect();
    let mut c = Conversation::connect(s.smtp).await;
    c.begin_data("a@example.net", "bob@example.org").await;
    c.raw(format!("{hops}Subject: loop\r\n\r\nbody\r\n.\r\n").as_bytes())
        .await;
    c.expect("554 5.4.6").await;
    // 49 hops is not yet a loop.
    let hops49: String = hops.lines().skip(1).map(|l| format!("{l}\r\n")).collect();
    c.begin_transaction("a@example.net", "bob@example.org")
        .await;
    c.raw(format!("{hops49}Subject: far\r\n\r\nbody\r\n.\r\n").as_bytes())
        .await;
    c.expect("250 2.0.0").await;
    s.stop().await;
}

#[tokio::test]
async fn a_symbol_name_cannot_inject_header_lines() {
    let s = TestServer::start(
        "[scoring]\nadd_headers = true\n[plugin.hostile]\non_failure = \"continue\"\n[plugin.hostile.config]\nmode = \"inject\"\n",
        &[("hostile", plugin("test", "hostile"))],
    )
    .await;
    let r = send_to_bob(s.smtp, "hostile", "body").await;
    assert!(r.starts_with("250 "), "{r}");
    let mail = s.mailbox("bob", 1).await;
    assert!(!mail[0].contains("X-Injected"), "{}", mail[0]);
    assert!(mail[0].contains("X-Spam-Status: No"), "{}", mail[0]);
    s.stop().await;
}

#[tokio::test]
async fn files_are_private_and_a_shared_data_directory_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = serve_config(&data, "");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // `sluice passwd` writes the users file owner-only.
    let mut passwd = std::process::Command::new(sluice_bin())
        .args(["passwd", "bob", "--config"])
        .arg(&cfg)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    passwd.stdin.take().unwrap().write_all(b"pw\n").unwrap();
    assert!(passwd.wait().unwrap().success());
    assert_eq!(mode(&data.join("users")), 0o600);

    let server = Serve::start(&cfg).await;
    let r = send_to_bob(server.smtp, "private", "body").await;
    assert!(r.starts_with("250 "), "{r}");
    let new = data.join("maildir/bob/new");
    for _ in 0..100 {
        if maildir_files(&new).len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delivered: Vec<_> = std::fs::read_dir(&new)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(delivered.len(), 1);
    assert_eq!(mode(&delivered[0]), 0o600, "delivered message");
    for d in ["spool", "spool/queue", "maildir", "maildir/bob", "tls"] {
        assert_eq!(mode(&data.join(d)), 0o700, "{d}");
    }
    assert_eq!(mode(&data.join("tls/self-signed.key")), 0o600);
    drop(server);

    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = std::process::Command::new(sluice_bin())
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.data_dir") && err.contains("writable by every user"),
        "{err}"
    );
}

#[tokio::test]
async fn one_client_making_a_plugin_fail_cools_it_down_for_itself_only() {
    let s = TestServer::start_full(
        "cooldown_after_failures = 2\ncooldown_secs = 60",
        "[[listener]]\nkind = \"smtp\"\naddress = \"[::1]:0\"\n[plugin.crashy]\non_failure = \"tempfail\"\n[plugin.crashy.config]\nmode = \"trap\"\n",
        &[("crashy", plugin("test", "hostile"))],
    )
    .await;
    let v6 = s
        .listeners
        .iter()
        .find(|(_, a)| a.is_ipv6())
        .map(|(_, a)| *a)
        .expect("a listener on ::1");
    // The attacker (127.0.0.1) makes the plugin trap twice: cool-down, for the attacker.
    for i in 0..2 {
        let r = send_to_bob(s.smtp, &format!("hostile {i}"), "x").await;
        assert!(r.starts_with("451 "), "{r}");
    }
    let live = s.ctx().live();
    let p = &live.pipeline.plugins()[0];
    assert_eq!(p.health.cooldowns(), 1);
    // Another client (::1) still has its messages filtered: the plugin is called for it (and
    // its trap, on a hostile subject, is answered by the policy as before, not by cool-down).
    let r = send_to_bob(v6, "ordinary", "x").await;
    assert!(r.starts_with("250 "), "{r}");
    let r = send_to_bob(v6, "hostile again", "x").await;
    assert!(r.starts_with("451 "), "{r}");
    let metrics = sluice::admin::metrics::get().encode();
    assert!(
        metrics.contains("sluice_plugin_calls_total{plugin=\"crashy\",hook=\"check-message\",verdict=\"continue\"}"),
        "the plugin was called for the other client:\n{metrics}"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_required_plugin_that_is_missing_fails_closed() {
    let sha = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(
            std::fs::read(plugin("test", "tagger")).unwrap(),
        ))
    };
    let s = TestServer::start(
        &format!("[plugin.guard]\nrequired = true\nsha256 = \"{sha}\"\n"),
        &[],
    )
    .await;
    let mut c = Conversation::connect(s.smtp).await;
    c.send("EHLO client.test").await;
    c.expect("250 ").await;
    c.send("MAIL FROM:<a@example.net>").await;
    let r = c.expect("451 4.3.0").await;
    assert!(r.contains("guard"), "{r}");
    s.stop().await;
}

#[tokio::test]
async fn a_next_hop_that_is_ourselves_is_a_loop_not_a_delivery() {
    let port = sluice_tests::peers::free_port();
    let s = TestServer::start(
        &format!(
            "[auth]\nallow_plaintext_on_loopback = true\n[[listener]]\nkind = \"smtp\"\naddress = \"127.0.0.1:{port}\"\n[[route]]\ndomains = [\"loop.test\"]\nkind = \"smtp\"\nhost = \"127.0.0.1:{port}\"\ntls = \"none\"\n"
        ),
        &[],
    )
    .await;
    let r = submit_as_alice(
        s.smtp,
        "someone@loop.test",
        "",
        "Subject: round\r\n\r\nbody\r\n",
    )
    .await;
    assert!(r.starts_with("250 "), "{r}");
    // The bounce comes back to alice, saying why; the message was never relayed to us.
    let mail = s.mailbox("alice", 1).await;
    assert!(mail[0].contains("loops back to myself"), "{}", mail[0]);
    assert!(mail[0].contains("5.4.6"), "{}", mail[0]);
    s.stop().await;
}

/// Submits `data` from alice@example.org (AUTH PLAIN on a loopback listener that allows it)
/// to `rcpt` with RCPT parameters `params`; returns the reply to the data.
async fn submit_as_alice(
    addr: std::net::SocketAddr,
    rcpt: &str,
    mail_params: &str,
    data: &str,
) -> String {
    submit_as_alice_with(addr, rcpt, mail_params, "", data).await
}

async fn submit_as_alice_with(
    addr: std::net::SocketAddr,
    rcpt: &str,
    mail_params: &str,
    rcpt_params: &str,
    data: &str,
) -> String {
    use base64::Engine as _;
    let mut c = Conversation::connect(addr).await;
    c.send("EHLO client.test").await;
    c.expect("250 ").await;
    let plain = base64::engine::general_purpose::STANDARD.encode("\0alice\0wonderland");
    c.send(&format!("AUTH PLAIN {plain}")).await;
    c.expect("235 ").await;
    c.send(&format!("MAIL FROM:<alice@example.org>{mail_params}"))
        .await;
    c.expect("250 ").await;
    c.send(&format!("RCPT TO:<{rcpt}>{rcpt_params}")).await;
    c.expect("250 ").await;
    c.send("DATA").await;
    c.expect("354").await;
    c.raw(format!("{data}.\r\n").as_bytes()).await;
    let r = c.reply().await;
    c.send("QUIT").await;
    r
}

#[tokio::test]
async fn dsn_parameters_go_to_a_next_hop_that_offers_dsn_and_it_reports_success() {
    // B is the next hop (Sluice offers DSN); A relays catchall.example.org to it.
    let b = TestServer::start("", &[]).await;
    let a = TestServer::start(
        &format!(
            "[auth]\nallow_plaintext_on_loopback = true\n[[route]]\ndomains = [\"catchall.example.org\"]\nkind = \"smtp\"\nhost = \"{}\"\ntls = \"none\"\n",
            b.smtp
        ),
        &[],
    )
    .await;
    let r = submit_as_alice_with(
        a.smtp,
        "bob@catchall.example.org",
        " RET=HDRS ENVID=env+2B42",
        " NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@catchall.example.org",
        "Subject: with dsn\r\n\r\nbody\r\n",
    )
    .await;
    assert!(r.starts_with("250 "), "{r}");
    b.mailbox("bob", 1).await;
    // B delivered and, as asked, reports success to alice (B's example.org mailbox).
    let dsn = b.mailbox("alice", 1).await;
    for want in [
        "Action: delivered",
        "Original-Envelope-Id: env+42",
        "Original-Recipient: rfc822;bob@catchall.example.org",
    ] {
        assert!(dsn[0].contains(want), "{want}:\n{}", dsn[0]);
    }
    // A passed the parameters on, so it sends no "relayed" notice of its own.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(maildir_files(&a.dir.path().join("maildir/alice/new")).is_empty());
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_next_hop_without_dsn_gets_a_relayed_notice_and_one_without_8bitmime_or_smtputf8_no_such_mail()
 {
    use sluice_tests::sink::{Sink, SinkOptions};
    let plain = Sink::tcp("127.0.0.1:0", SinkOptions::default())
        .await
        .unwrap();
    let seven_bit = Sink::tcp(
        "127.0.0.1:0",
        SinkOptions {
            no_8bitmime: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let a = TestServer::start(
        &format!(
            "[auth]\nallow_plaintext_on_loopback = true\n[[route]]\ndomains = [\"plain.test\"]\nkind = \"smtp\"\nhost = \"{}\"\ntls = \"none\"\n[[route]]\ndomains = [\"seven.test\"]\nkind = \"smtp\"\nhost = \"{}\"\ntls = \"none\"\n",
            plain.addr.unwrap(),
            seven_bit.addr.unwrap()
        ),
        &[],
    )
    .await;
    let r = submit_as_alice_with(
        a.smtp,
        "x@plain.test",
        "",
        " NOTIFY=SUCCESS",
        "Subject: relayed\r\n\r\nbody\r\n",
    )
    .await;
    assert!(r.starts_with("250 "), "{r}");
    let r = submit_as_alice(
        a.smtp,
        "y@seven.test",
        " BODY=8BITMIME",
        "Subject: 8bit\r\n\r\nna\u{ef}ve caf\u{e9}\r\n",
    )
    .await;
    assert!(r.starts_with("250 "), "{r}");
    // Mail that needs SMTPUTF8 (a non-ASCII recipient) to a hop that does not offer it.
    let r = submit_as_alice(
        a.smtp,
        "jos\u{e9}@plain.test",
        " SMTPUTF8",
        "Subject: utf8\r\n\r\nbody\r\n",
    )
    .await;
    assert!(r.starts_with("250 "), "{r}");
    let notices = a.mailbox("alice", 3).await;
    let utf8 = notices
        .iter()
        .find(|m| m.contains("5.6.7"))
        .expect("a bounce for the SMTPUTF8 message");
    assert!(utf8.contains("SMTPUTF8"), "{utf8}");
    let relayed = notices
        .iter()
        .find(|m| m.contains("Action: relayed"))
        .expect("a relayed notice");
    assert!(
        relayed.contains("Final-Recipient: rfc822; x@plain.test"),
        "{relayed}"
    );
    let bounce = notices
        .iter()
        .find(|m| m.contains("Action: failed") && m.contains("y@seven.test"))
        .expect("a bounce for the 8-bit message");
    assert!(
        bounce.contains("5.6.3") && bounce.contains("8BITMIME"),
        "{bounce}"
    );
    assert_eq!(
        plain.count(),
        1,
        "only the relayed message reached the plain hop"
    );
    assert_eq!(seven_bit.count(), 0, "the 8-bit message was sent as it is");
    a.stop().await;
}

#[tokio::test]
async fn the_spool_filesystem_full_gets_452_loses_nothing_and_acceptance_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    // A 256 KiB tmpfs as the spool (the test runs as root, as the test command does).
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs"])
        .arg(&spool)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        mounted,
        "mounting a tmpfs needs root: run the tests as root (scripts/test)"
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(spool.clone());
    // Mail for example.org waits in the queue: its route goes nowhere.
    let cfg = serve_config(
        dir.path(),
        "[delivery]\nretry_secs = [3600]\n[[route]]\ndomains = [\"example.org\"]\nkind = \"smtp\"\nhost = \"127.0.0.1:1\"\ntls = \"none\"\n",
    );
    let server = Serve::start(&cfg).await;
    let body = "z".repeat(40_000);
    let mut acked = 0;
    let mut full = None;
    for i in 0..40 {
        let r = send_to_bob(server.smtp, &format!("fill {i}"), &body).await;
        if r.starts_with("250 ") {
            acked += 1;
        } else {
            full = Some(r);
            break;
        }
    }
    let full = full.expect("the spool never filled up");
    assert!(full.starts_with("452 4.3.1"), "{full}");
    assert!(
        acked >= 2,
        "only {acked} accepted before the spool was full"
    );
    let queued = || {
        std::fs::read_dir(spool.join("queue"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".msg"))
            })
            .count()
    };
    assert_eq!(
        queued(),
        acked,
        "every acknowledged message is in the queue"
    );
    // Space returns: acceptance resumes.
    let grown = std::process::Command::new("mount")
        .args(["-o", "remount,size=4m"])
        .arg(&spool)
        .status()
        .unwrap();
    assert!(grown.success());
    let r = send_to_bob(server.smtp, "after", "small").await;
    assert!(r.starts_with("250 "), "{r}");
    assert_eq!(queued(), acked + 1);
    drop(server);
}

#[tokio::test]
async fn dkim_signs_only_a_from_the_user_may_send_as() {
    let keys = tempfile::tempdir().unwrap();
    let (pem, _record) = sluice::sender_auth::keygen(true).unwrap();
    let key = keys.path().join("example.org.ed.key");
    std::fs::write(&key, pem).unwrap();
    for refuse in [false, true] {
        let s = TestServer::start(
            &format!(
                "[auth]\nallow_plaintext_on_loopback = true\n[authentication]\nverify = false\nunowned_from = {:?}\n[[authentication.dkim_key]]\ndomain = \"example.org\"\nselector = \"ed\"\nkey = {key:?}\n",
                if refuse { "refuse" } else { "unsigned" }
            ),
            &[],
        )
        .await;
        // Her own From is signed.
        let r = submit_as_alice(
            s.smtp,
            "bob@example.org",
            "",
            "From: <alice@example.org>\r\nSubject: mine\r\n\r\nbody\r\n",
        )
        .await;
        assert!(r.starts_with("250 "), "{r}");
        // The envelope is hers, the header From is not: never signed.
        let r = submit_as_alice(
            s.smtp,
            "bob@example.org",
            "",
            "From: The CEO <ceo@example.org>\r\nSubject: forged\r\n\r\nwire the money\r\n",
        )
        .await;
        if refuse {
            assert!(r.starts_with("550 5.7.1"), "{r}");
            assert!(r.contains("ceo@example.org"), "{r}");
        } else {
            assert!(r.starts_with("250 "), "{r}");
        }
        let mail = s.mailbox("bob", if refuse { 1 } else { 2 }).await;
        for m in &mail {
            let signed = m.contains("DKIM-Signature:");
            if m.contains("Subject: mine") {
                assert!(signed, "{m}");
            } else {
                assert!(!signed, "a forged From was signed:\n{m}");
            }
        }
        s.stop().await;
    }
}

#[tokio::test]
async fn a_flood_of_symbols_is_a_plugin_failure_under_its_policy() {
    use sluice::plugin::CallFailure;
    let rt = runtime();
    let cfg = config(
        "[plugin.hostile]\non_failure = \"continue\"\nmax_symbols = 50\n[plugin.hostile.config]\nmode = \"symbolflood\"\n",
    );
    let p = pipeline(&rt, &cfg, &[("hostile", plugin("test", "hostile"))])
        .await
        .expect("loads");
    let mut txn = p.start(&client(), "flood");
    let env = envelope("a@example.org", &["b@example.net"]);
    let out = txn.check_message(&env, &message("hostile", "body")).await;
    assert_eq!(out.decision, sluice::envelope::Decision::Continue);
    assert!(out.symbols.is_empty(), "no symbol of a failed call is used");
    let calls = txn.take_calls();
    let failure = calls.iter().find_map(|c| c.failure.clone());
    match failure {
        // Refused by the count, or before: at the copy budget its limits give.
        Some(CallFailure::BadReturn { message }) => {
            assert!(message.contains("max_symbols"), "{message}")
        }
        other => panic!("expected a bad return, got {other:?}"),
    }
}

#[tokio::test]
async fn looping_delivery_hooks_cost_their_deadline_and_deliveries_go_on() {
    use sluice::spool::SpoolState;
    use sluice_tests::sink::{Sink, SinkOptions};
    let sink = Sink::tcp("127.0.0.1:0", SinkOptions::default())
        .await
        .unwrap();
    let extra = format!(
        "[[route]]\ndomains = [\"dest.test\"]\nkind = \"smtp\"\nhost = \"127.0.0.1:{}\"\ntls = \"none\"\n[plugin.stall-bounce]\ntimeout_ms = 100\n[plugin.stall-bounce.config]\nmode = \"loop\"\nhook = \"render-bounce\"\n[plugin.stall-report]\ntimeout_ms = 100\n[plugin.stall-report.config]\nmode = \"loop\"\nhook = \"on-delivery\"\n",
        sink.addr.unwrap().port()
    );
    let (_d, spool, runner) = crate::routes::relay_with(
        &extra,
        &[
            ("stall-bounce", plugin("test", "hostile")),
            ("stall-report", plugin("test", "hostile")),
        ],
    )
    .await;
    spool
        .store(
            SpoolState::Queue,
            &crate::routes::envelope("S1", &["reject-me@dest.test", "ok@dest.test"], vec![]),
            b"From: alice@relay.test\r\nSubject: stalls\r\n\r\nbody\r\n",
        )
        .await
        .unwrap();
    let pass = tokio::time::timeout(
        Duration::from_secs(20),
        runner.run_once(sluice::delivery::runner::now()),
    )
    .await
    .expect("the delivery pass finished despite the looping hooks");
    assert_eq!(sink.count(), 1, "ok@dest.test was delivered");
    assert_eq!(
        pass.bounces.len(),
        1,
        "the bounce went out with the default text"
    );
    let failures: Vec<_> = pass
        .hook_calls
        .iter()
        .filter_map(|c| c.failure.as_ref().map(|f| (c.plugin.clone(), f.kind())))
        .collect();
    assert!(
        failures.contains(&("stall-bounce".to_string(), "deadline")),
        "{failures:?}"
    );
    assert!(
        failures.contains(&("stall-report".to_string(), "deadline")),
        "{failures:?}"
    );
}

#[tokio::test]
async fn a_plugin_whose_start_never_ends_is_held_to_its_deadline() {
    let rt = runtime();
    let cfg = config("[plugin.slow-start]\ntimeout_ms = 100\n");
    let started = std::time::Instant::now();
    let e = load_one(&rt, &cfg, "slow-start", &plugin("test", "slow-start"))
        .await
        .expect_err("a plugin that never finishes starting is refused");
    assert!(e.contains("deadline of 100 ms exceeded"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stopped at its deadline, not hung"
    );
}

#[tokio::test]
async fn the_metrics_endpoint_answers_a_bounded_number_of_connections_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = serve_config(dir.path(), "[metrics]\naddress = \"127.0.0.1:0\"\n");
    let server = Serve::start(&cfg).await;
    let addr = server.metrics.expect("metrics endpoint");
    // Sixteen clients on four addresses (one address holds at most a quarter of the slots)
    // connect and say nothing: they hold every slot.
    let from = |last: u8| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(std::net::SocketAddr::from(([127, 0, 0, last], 0)))
            .unwrap();
        socket.connect(addr).await.unwrap()
    };
    let mut idle = Vec::new();
    for i in 0..16u8 {
        idle.push(from(2 + i / 4).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut waiting = from(9).await;
    waiting
        .write_all(
            format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut buf = Vec::new();
    let early =
        tokio::time::timeout(Duration::from_millis(500), waiting.read_to_end(&mut buf)).await;
    assert!(early.is_err(), "answered beyond the limit: {buf:?}");
    // One slot frees up: the waiting request is answered.
    drop(idle.pop());
    tokio::time::timeout(Duration::from_secs(5), waiting.read_to_end(&mut buf))
        .await
        .expect("answered once a slot was free")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"),
        "{buf:?}"
    );
}

/// What a plugin returns is bounded before the host copies it: forty header fields of 1 MiB
/// each (40 MiB of the guest's memory) stop at the copy budget its limits give, about a
/// megabyte, instead of being copied whole and refused afterwards.
#[tokio::test]
async fn a_huge_return_is_refused_before_it_is_copied() {
    use sluice::plugin::CallFailure;
    let rt = runtime();
    let cfg = config(
        "[plugin.hostile]\non_failure = \"continue\"\nmemory_mb = 128\n[plugin.hostile.config]\nmode = \"bigreturn\"\n",
    );
    let p = pipeline(&rt, &cfg, &[("hostile", plugin("test", "hostile"))])
        .await
        .expect("loads");
    let mut txn = p.start(&client(), "big");
    let env = envelope("a@example.org", &["b@example.net"]);
    let out = txn.check_message(&env, &message("hostile", "body")).await;
    assert_eq!(out.decision, sluice::envelope::Decision::Continue);
    assert!(out.add_headers.iter().all(|(n, _)| !n.starts_with("X-Big")));
    let calls = txn.take_calls();
    match calls.iter().find_map(|c| c.failure.clone()) {
        Some(CallFailure::BadReturn { message }) => {
            assert!(message.contains("the host stopped copying"), "{message}")
        }
        other => panic!("expected a bad return, got {other:?}"),
    }
}
