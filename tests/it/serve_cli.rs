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
    let creds = sluice::credentials::Credentials::load(&dir.path().join("users")).unwrap();
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
