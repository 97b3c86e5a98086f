//! `sluice queue …` on a real spool: list, hold, release, retry, delete (drop and bounce), and
//! the quarantine.

use std::process::Command;

use sluice::spool::{Spool, SpoolState, SpooledEnvelope};
use sluice_tests::*;

fn envelope(id: &str, quarantine: Option<&str>) -> SpooledEnvelope {
    spooled(id, "alice@relay.test", "someone@elsewhere.test", quarantine)
}

/// A configuration for a relay whose data directory is `dir`; returns its path.
fn queue_config(dir: &std::path::Path) -> std::path::PathBuf {
    let cfg = dir.join("sluice.toml");
    std::fs::write(
        &cfg,
        format!("[server]\nhostname = \"relay.test\"\ndata_dir = {dir:?}\n[relay]\nlocal_domains = [\"relay.test\"]\n"),
    )
    .unwrap();
    cfg
}

fn queue(cfg: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(sluice_bin())
        .arg("queue")
        .args(args)
        .arg("--config")
        .arg(cfg)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn list_hold_release_delete_and_quarantine() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = queue_config(dir.path());
    let spool = Spool::open(&dir.path().join("spool")).unwrap();
    spool
        .store(
            SpoolState::Queue,
            &envelope("Q1", None),
            b"Subject: one\r\n\r\nx\r\n",
        )
        .await
        .unwrap();
    spool
        .store(
            SpoolState::Queue,
            &envelope("Q2", None),
            b"Subject: two\r\n\r\nx\r\n",
        )
        .await
        .unwrap();
    spool
        .store(
            SpoolState::Quarantine,
            &envelope("Q3", Some("looks like phishing")),
            b"Subject: three\r\n\r\nx\r\n",
        )
        .await
        .unwrap();

    let (code, out, _) = queue(&cfg, &["list", "--json"]);
    assert_eq!(code, 0);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2);
    assert_eq!(rows[0]["id"], "Q1");
    assert_eq!(rows[0]["recipients"][0][0], "someone@elsewhere.test");
    assert_eq!(rows[0]["recipients"][0][1], "pending");

    assert_eq!(queue(&cfg, &["hold", "Q1"]).0, 0);
    let (_, out, _) = queue(&cfg, &["list"]);
    assert!(
        out.contains("Q1 2027-01-15T08:00:00+00:00 19 bytes from alice@relay.test HELD"),
        "{out}"
    );
    let (_, out, _) = queue(&cfg, &["show", "Q1"]);
    assert!(
        out.contains("held by the operator") && out.contains("Subject: one"),
        "{out}"
    );
    assert_eq!(queue(&cfg, &["release", "Q1"]).0, 0);
    let (_, out, _) = queue(&cfg, &["list"]);
    assert!(!out.contains("HELD"), "{out}");

    let (code, _, err) = queue(&cfg, &["delete", "Q2"]);
    assert_eq!(code, 2, "delete needs --bounce or --drop: {err}");
    assert_eq!(queue(&cfg, &["delete", "Q2", "--drop"]).0, 0);
    let (code, _, err) = queue(&cfg, &["hold", "Q2"]);
    assert_eq!(code, 2);
    assert!(err.contains("no message Q2 in the queue"), "{err}");

    let (_, out, _) = queue(&cfg, &["quarantine", "list"]);
    assert!(
        out.contains("Q3") && out.contains("quarantined: looks like phishing"),
        "{out}"
    );
    assert_eq!(queue(&cfg, &["quarantine", "release", "Q3"]).0, 0);
    assert_eq!(spool.list(SpoolState::Queue).unwrap(), ["Q1", "Q3"]);
    assert!(spool.list(SpoolState::Quarantine).unwrap().is_empty());

    // Delete with a bounce: the runner sends the sender a DSN and removes the message.
    assert_eq!(queue(&cfg, &["delete", "Q3", "--bounce"]).0, 0);
    let config = sluice::config::Config::load(&cfg).unwrap();
    let p = sluice::pipeline::Pipeline::new(Vec::new(), config.scoring.clone());
    let runner = sluice::delivery::runner::Runner::new(spool.clone(), config, p);
    let pass = runner.run_once(sluice::delivery::runner::now()).await;
    assert!(pass.finished.contains(&"Q3".to_string()), "{pass:?}");
    assert_eq!(pass.bounces.len(), 1);
}

#[tokio::test]
async fn queue_output_escapes_control_characters_from_remote_parties() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = queue_config(dir.path());
    let spool = Spool::open(&dir.path().join("spool")).unwrap();
    // A reason and a header with a terminal escape and a line break, as a remote party or an
    // old spool file could carry them.
    spool
        .store(
            SpoolState::Quarantine,
            &envelope("E1", Some("evil\u{1b}[2J\r\nFAKE LINE")),
            b"Subject: hi\x1b]0;pwned\x07\r\n\r\nx\r\n",
        )
        .await
        .unwrap();
    let (code, out, _) = queue(&cfg, &["quarantine", "list"]);
    assert_eq!(code, 0);
    assert!(!out.contains('\u{1b}') && !out.contains('\r'), "{out:?}");
    assert!(out.contains("evil\\u{1b}[2J\\r\\nFAKE LINE"), "{out}");
    let (code, out, _) = queue(&cfg, &["show", "E1"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out:?}");
    assert!(out.contains("Subject: hi\\u{1b}]0;pwned\\u{7}"), "{out}");
}

/// An id is checked against the spool's id format before it names a file: `../victim` once
/// deleted `spool/victim.msg`.
#[tokio::test]
async fn ids_that_climb_out_of_the_spool_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = queue_config(dir.path());
    Spool::open(&dir.path().join("spool")).unwrap();
    let victim = dir.path().join("spool").join("victim.msg");
    std::fs::write(&victim, b"keep me").unwrap();
    for args in [
        &["delete", "../victim", "--drop"][..],
        &["delete", "../victim", "--bounce"],
        &["hold", "../victim"],
        &["show", "../victim"],
        &["quarantine", "delete", "../victim"],
        &["quarantine", "release", "../victim"],
    ] {
        let (code, _, err) = queue(&cfg, args);
        assert_ne!(code, 0, "{args:?}");
        assert!(err.contains("is not a queue id"), "{args:?}: {err}");
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
}
