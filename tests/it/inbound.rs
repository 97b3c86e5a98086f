//! The inbound core decides for every front end: the same messages through the SMTP server
//! and through `sluice plugin check`'s replay get the same decisions and the same edits.

use std::io::Write as _;
use std::sync::Arc;

use sluice::replay::EnvelopeArgs;
use sluice_tests::*;

/// (sender, subject, body): a clean message, a word the tagger rejects, a sender the gate
/// refuses, and spam for spam-score.
const CASES: &[(&str, &str, &str)] = &[
    (
        "ann@friends.example",
        "lunch on friday",
        "See you at noon.\r\n",
    ),
    ("ann@friends.example", "forbidden fruit", "Do not open.\r\n"),
    ("x@bad.example", "hello", "From a denied domain.\r\n"),
    (
        "deals@promo-blast.example",
        "FREE CASH WINNER CLAIM NOW",
        "<html><body><p>You have WON $1,000,000 CASH! Click <a href=\"http://claim.example/now\">here</a> to CLAIM your PRIZE now!!!</p></body></html>\r\n",
    ),
];

#[tokio::test]
async fn the_smtp_path_and_replay_decide_and_edit_alike() {
    let s = TestServer::start(
        "[plugin.sender-gate.config]\ndeny_domain = \"bad.example\"\n[plugin.tagger.config]\ntag = \"parity\"\nscore = 5.5\nreject_word = \"forbidden\"\n",
        &[
            ("sender-gate", plugin("test", "sender-gate")),
            ("tagger", plugin("test", "tagger")),
            ("spam-score", plugin("bundled", "20-spam-score")),
        ],
    )
    .await;
    let live = s.ctx().live();
    let dir = tempfile::tempdir().unwrap();
    for (i, (from, subject, body)) in CASES.iter().enumerate() {
        let data = format!(
            "From: <{from}>\r\nTo: <bob@example.org>\r\nSubject: {subject}\r\nMessage-ID: <parity-{i}@test>\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n\r\n{body}"
        );
        // Through SMTP: the reply at MAIL or after the data, and what was delivered.
        let mut c = Conversation::connect(s.smtp).await;
        c.send("EHLO client.test").await;
        c.expect("250 ").await;
        c.send(&format!("MAIL FROM:<{from}>")).await;
        let mail = c.reply().await;
        let smtp_code = if mail.starts_with("250") {
            c.send("RCPT TO:<bob@example.org>").await;
            c.expect("250").await;
            c.send("DATA").await;
            c.expect("354").await;
            c.raw(format!("{data}.\r\n").as_bytes()).await;
            c.reply().await[..3].to_string()
        } else {
            mail[..3].to_string()
        };
        c.send("QUIT").await;

        // Through replay, with the same configuration, plugins and envelope.
        let file = dir.path().join(format!("{i}.eml"));
        std::fs::File::create(&file)
            .unwrap()
            .write_all(data.as_bytes())
            .unwrap();
        let args = EnvelopeArgs {
            mail_from: Some(from.to_string()),
            rcpt: vec!["bob@example.org".into()],
            client_ip: Some([127, 0, 0, 1].into()),
            helo: Some("client.test".into()),
            ..Default::default()
        };
        let report = sluice::replay::replay(&Arc::clone(&live), &file, &args, i)
            .await
            .unwrap();
        let replay_code = match &report.result.decision {
            sluice::envelope::Decision::Reject { reply }
            | sluice::envelope::Decision::Tempfail { reply } => reply.code.to_string(),
            _ => "250".to_string(),
        };
        assert_eq!(smtp_code, replay_code, "case {i} ({subject}): {report:?}");

        if smtp_code == "250" {
            let delivered = s.mailbox("bob", count_accepted(i)).await;
            let m = delivered
                .iter()
                .find(|m| m.contains(&format!("parity-{i}@test")))
                .expect("delivered");
            let unfolded = m.replace("\r\n\t", " ").replace("\r\n ", " ");
            for h in &report.add_headers {
                let line = format!("\r\n{}: {}\r\n", h.name, h.value);
                assert!(
                    unfolded.contains(&line) || unfolded.starts_with(&line[2..]),
                    "case {i}: replay adds {line:?}, the server did not:\n{m}"
                );
            }
        }
    }
    s.stop().await;
}

/// How many of the cases up to `i` are accepted (the clean one and the spam one).
fn count_accepted(i: usize) -> usize {
    [1, 1, 1, 2][i]
}
