//! Score actions like rspamd's: thresholds for marking spam, quarantine and reject, other
//! thresholds for some recipient domains or listeners, and the choice for mail from
//! authenticated users (not judged by default, or scored but never tagged).

use base64::Engine as _;
use sluice_tests::*;

/// Sends one message; as alice (authenticated) when `auth`. Returns the reply to the data.
async fn send(s: &TestServer, to: &str, subject: &str, auth: bool) -> String {
    let mut c = Conversation::connect(s.smtp).await;
    c.send("EHLO laptop").await;
    c.expect("250 ").await;
    let from = if auth {
        let token = base64::engine::general_purpose::STANDARD.encode("\0alice\0wonderland");
        c.send(&format!("AUTH PLAIN {token}")).await;
        c.expect("235").await;
        "alice@example.org"
    } else {
        "a@example.net"
    };
    c.begin_transaction(from, to).await;
    c.raw(format!("From: <{from}>\r\nSubject: {subject}\r\n\r\nHello.\r\n.\r\n").as_bytes())
        .await;
    let r = c.reply().await;
    c.send("QUIT").await;
    r
}

fn quarantined(s: &TestServer) -> usize {
    std::fs::read_dir(s.dir.path().join("spool/quarantine"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".msg"))
                .count()
        })
        .unwrap_or(0)
}

/// The files of a Maildir folder, waiting (bounded: 10 s) until there are `n`.
async fn wait_files(dir: &std::path::Path, n: usize) -> Vec<String> {
    for _ in 0..200 {
        let files = maildir_files(dir);
        if files.len() >= n {
            return files;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{} did not get {n} message(s) within 10 s", dir.display());
}

const TAGGER: &str = "[plugin.tagger.config]\nscore = 1.0\n";

#[tokio::test]
async fn thresholds_per_domain_quarantine_and_authenticated_senders() {
    let scoring = "[auth]\nallow_plaintext_on_loopback = true\n\
                   [scoring]\nspam_threshold = 0.5\nquarantine_threshold = 0.8\nreject_threshold = 5.0\n\
                   [[scoring.override]]\ndomains = [\"catchall.example.org\"]\nquarantine_threshold = 3.0\n";
    let s = TestServer::start(
        &format!("{scoring}{TAGGER}"),
        &[("tagger", plugin("test", "tagger"))],
    )
    .await;
    // Score 1.0: quarantined for example.org…
    assert!(
        send(&s, "bob@example.org", "held", false)
            .await
            .starts_with("250 ")
    );
    assert_eq!(quarantined(&s), 1);
    // …marked and delivered for the domain with its own thresholds: into the user's Junk
    // folder (Maildir++ `.Junk`), as Dovecot with Sieve would file it.
    let r = send(&s, "x@catchall.example.org", "marked", false).await;
    assert!(r.starts_with("250 "), "{r}");
    let junk = s.dir.path().join("maildir/x/.Junk");
    let got = wait_files(&junk.join("new"), 1).await;
    assert!(
        got[0].contains("X-Spam-Status: Yes, score=1.00 required=0.50"),
        "{}",
        got[0]
    );
    assert!(junk.join("maildirfolder").is_file());
    assert!(maildir_files(&s.dir.path().join("maildir/x/new")).is_empty());
    // An authenticated user's own mail is not judged (the default): no quarantine, no
    // score header.
    assert!(
        send(&s, "bob@example.org", "mine", true)
            .await
            .starts_with("250 ")
    );
    let bob = s.mailbox("bob", 1).await;
    assert!(
        bob[0].contains("Subject: mine") && !bob[0].contains("X-Spam"),
        "{}",
        bob[0]
    );
    assert_eq!(quarantined(&s), 1);
    s.stop().await;

    // Scored but never tagged or acted on.
    let s = TestServer::start(
        &format!("{}authenticated = \"score\"\n{TAGGER}", scoring.replace("[[scoring.override]]\ndomains = [\"catchall.example.org\"]\nquarantine_threshold = 3.0\n", "")),
        &[("tagger", plugin("test", "tagger"))],
    )
    .await;
    assert!(
        send(&s, "bob@example.org", "scored", true)
            .await
            .starts_with("250 ")
    );
    let bob = s.mailbox("bob", 1).await;
    assert!(
        bob[0].contains("X-Spam-Status: No, score=1.00") && bob[0].contains("X-Spam-Score: 1.00"),
        "{}",
        bob[0]
    );
    assert_eq!(quarantined(&s), 0);
    s.stop().await;

    // With no Junk folder, marked mail goes to the inbox like the rest.
    let s = TestServer::start(
        &format!("{scoring}[delivery]\njunk_folder = \"\"\n{TAGGER}"),
        &[("tagger", plugin("test", "tagger"))],
    )
    .await;
    let r = send(&s, "x@catchall.example.org", "inbox", false).await;
    assert!(r.starts_with("250 "), "{r}");
    let got = s.mailbox("x", 1).await;
    assert!(got[0].contains("X-Spam-Status: Yes"), "{}", got[0]);
    assert!(!s.dir.path().join("maildir/x/.Junk").exists());
    s.stop().await;
}

#[test]
fn bad_thresholds_are_refused_by_key() {
    let c = sluice::config::Config::parse("[scoring]\nspam_threshold = 5.0\nquarantine_threshold = 20.0\nreject_threshold = 15.0\n[[scoring.override]]\nlisteners = [\"smpt\"]\nspam_threshold = 9.0\nreject_threshold = 8.0\n[[scoring.override]]\nquarantine_threshold = 1.0\n").unwrap();
    let e = c.validate().unwrap_err().to_string();
    for want in [
        "scoring.quarantine_threshold: 20 is above scoring.reject_threshold (15)",
        "scoring.override[0].reject_threshold: 8 must be a number not below scoring.override[0].spam_threshold (9)",
        "scoring.override[0].listeners: \"smpt\" is not a listener kind",
        "scoring.override[1]: name the listeners or domains it is for",
        "scoring.override[1].quarantine_threshold: 1 must be a number not below",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
}
