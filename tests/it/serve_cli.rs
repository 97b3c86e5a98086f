//! The `sluice` binary as an operator runs it: `sluice passwd`, then `sluice serve` on a
//! configuration with ephemeral ports, mail sent with swaks, SIGKILL after the 250 — the
//! acknowledged message must be on disk.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use sluice_tests::*;

/// Kills the child by PID when dropped, so a failing test leaves no server behind.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn passwd_then_serve_then_sigkill_keeps_the_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nhostname = \"mx.test\"\ndata_dir = {:?}\n[plugins]\ncache_dir = {:?}\n[[listener]]\nkind = \"smtp\"\naddress = \"127.0.0.1:0\"\n[relay]\nlocal_domains = [\"example.org\"]\ntrusted_networks = [\"127.0.0.0/8\"]\n",
            dir.path(),
            workspace_root().join("target/test-compile-cache")
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();

    let mut passwd = Command::new(sluice_bin())
        .args(["passwd", "bob", "--config"])
        .arg(&cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    passwd
        .stdin
        .take()
        .unwrap()
        .write_all(b"hunter2\n")
        .unwrap();
    let out = passwd.wait_with_output().unwrap();
    assert!(out.status.success());
    let creds =
        sluice::smtp_auth::credentials::Credentials::load(&dir.path().join("users")).unwrap();
    assert!(creds.verify("bob", "hunter2"));

    let mut child = Child(
        Command::new(sluice_bin())
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("SLUICE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening smtp ")
        .unwrap_or_else(|| panic!("{line:?}"));
    let port = addr.rsplit(':').next().unwrap();

    // Relayed mail for a remote domain stays queued (no routes yet), so it is on disk only
    // in the spool: exactly what an acknowledgement promises.
    let swaks = Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", port, "--timeout", "20"])
        .args([
            "--from",
            "a@example.org",
            "--to",
            "someone@elsewhere.test",
            "--header",
            "Subject: durable",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&swaks.stdout);
    assert!(swaks.status.success(), "{text}");
    let id = text
        .lines()
        .find_map(|l| l.split("Ok: queued as ").nth(1))
        .expect("queue id in the 250 reply")
        .trim()
        .to_string();
    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-9", &pid])
            .status()
            .unwrap()
            .success()
    );
    let _ = child.0.wait();

    let spooled = dir.path().join("spool/queue").join(format!("{id}.msg"));
    let bytes = std::fs::read(&spooled).unwrap_or_else(|e| panic!("{}: {e}", spooled.display()));
    let (envelope, message) = sluice::spool::parse_file(&spooled, &bytes).unwrap();
    assert_eq!(envelope.recipients[0].address, "someone@elsewhere.test");
    assert!(String::from_utf8_lossy(&message).contains("Subject: durable"));
}

/// Starts `sluice serve --config cfg`; returns the child and its smtp address.
fn serve(cfg: &std::path::Path) -> (Child, std::net::SocketAddr) {
    let mut child = Child(
        Command::new(sluice_bin())
            .args(["serve", "--config"])
            .arg(cfg)
            .env("SLUICE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening smtp ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .parse()
        .unwrap();
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_delivery_loses_nothing() {
    use sluice_tests::sink::{Sink, SinkOptions};
    use std::time::Duration;

    // A next hop that takes its time answering the end of DATA, so the kill lands while
    // Sluice waits for it (after the sink has the message, before Sluice knows).
    let sink = Sink::tcp(
        "127.0.0.1:0",
        SinkOptions {
            data_delay: Duration::from_millis(300),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nhostname = \"mx.test\"\ndata_dir = {:?}\n[plugins]\ncache_dir = {:?}\n[[listener]]\nkind = \"smtp\"\naddress = \"127.0.0.1:0\"\n[relay]\nlocal_domains = [\"example.org\"]\ntrusted_networks = [\"127.0.0.0/8\"]\n[delivery]\nretry_secs = [1]\nconcurrency = 4\n[[route]]\ndomains = [\"elsewhere.test\"]\nkind = \"smtp\"\nhost = \"127.0.0.1:{}\"\ntls = \"none\"\n",
            dir.path(),
            workspace_root().join("target/test-compile-cache"),
            sink.addr.unwrap().port()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();

    let (child, addr) = serve(&cfg);
    // Twelve messages, each acknowledged with 250 (so on disk).
    let mut acknowledged = Vec::new();
    let mut c = sluice_tests::Conversation::connect(addr).await;
    for n in 0..12 {
        c.begin_data("a@example.org", &format!("user{n}@elsewhere.test"))
            .await;
        c.raw(
            format!(
                "Subject: crash {n}\r\nMessage-ID: <crash-{n}@example.org>\r\n\r\nbody {n}\r\n.\r\n"
            )
            .as_bytes(),
        )
        .await;
        c.expect("250 ").await;
        acknowledged.push(format!("<crash-{n}@example.org>"));
    }
    c.send("QUIT").await;

    // Kill -9 while a message is in the sink's hands, unanswered.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sink.unanswered() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivery never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-9", &pid])
            .status()
            .unwrap()
            .success()
    );
    drop(child);
    let before_restart = sink.messages().len();
    assert!(
        before_restart < acknowledged.len(),
        "the kill came too late to test anything ({before_restart} delivered)"
    );

    // Restart on the same data directory: everything acknowledged reaches the sink.
    let (_child, _addr) = serve(&cfg);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let ids = |sink: &Sink| -> Vec<String> {
        sink.messages()
            .iter()
            .filter_map(|m| {
                let text = String::from_utf8_lossy(&m.data).to_string();
                text.lines()
                    .find_map(|l| l.strip_prefix("Message-ID: ").map(str::to_string))
            })
            .collect()
    };
    loop {
        let got = ids(&sink);
        if acknowledged.iter().all(|a| got.contains(a)) || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = ids(&sink);
    let missing: Vec<&String> = acknowledged.iter().filter(|a| !got.contains(a)).collect();
    assert!(missing.is_empty(), "lost after kill -9: {missing:?}");
    // Finished messages leave the spool.
    let queue = dir.path().join("spool/queue");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let left = loop {
        let left = std::fs::read_dir(&queue)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "msg"))
            .count();
        if left == 0 || tokio::time::Instant::now() > deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(left, 0, "delivered messages must leave the queue");
    let got = ids(&sink);
    let duplicates = got.len() - acknowledged.len();
    eprintln!(
        "kill -9 during delivery: {} acknowledged, {before_restart} delivered before the kill, {duplicates} delivered twice (at-least-once)",
        acknowledged.len()
    );
    assert!(
        duplicates >= 1,
        "the message unanswered at the kill must be delivered again"
    );
}
