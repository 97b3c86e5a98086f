//! Each hook, called through the pipeline, with verdicts merged as the server merges them.

use sluice::envelope::Decision;
use sluice::plugin::Hook;
use sluice::plugin::bindings::types::{
    BounceRequest, DeliveryReport, DeliveryStatus, FailedRecipient,
};
use sluice::smtp::reply::Reply;
use sluice_tests::*;

const CONFIG: &str = r#"
[plugin.sender-gate.config]
deny_domain = "Bad.Example"
[plugin.tagger.config]
tag = "seen"
score = 3.0
reject_word = "forbidden"
"#;

async fn all() -> sluice::pipeline::Pipeline {
    let rt = runtime();
    pipeline(
        &rt,
        &config(CONFIG),
        &[
            ("sender-gate", plugin("test", "sender-gate")),
            ("tagger", plugin("test", "tagger")),
            ("delivery-notes", plugin("test", "delivery-notes")),
        ],
    )
    .await
    .expect("plugins load")
}

#[tokio::test]
async fn describe_decides_which_hooks_are_called() {
    let p = all().await;
    let hooks: Vec<Vec<&str>> = p.plugins().iter().map(|p| p.hook_names()).collect();
    assert_eq!(
        hooks,
        [
            vec!["verify-sender", "check-recipient"],
            vec!["check-message"],
            vec!["on-delivery", "render-bounce"]
        ]
    );
    let mut txn = p.start(&client(), "t1");
    txn.verify_sender(&sender("a@example.org")).await;
    let called: Vec<_> = txn
        .calls()
        .iter()
        .map(|c| (c.hook, c.plugin.as_str()))
        .collect();
    assert_eq!(called, [(Hook::VerifySender, "sender-gate")]);
}

#[tokio::test]
async fn verify_sender_rejects_with_the_plugins_reply_domain_case_insensitive() {
    let p = all().await;
    let mut txn = p.start(&client(), "t");
    assert_eq!(
        txn.verify_sender(&sender("x@bad.EXAMPLE")).await,
        Decision::Reject {
            reply: Reply::new(550, "5.7.1", "senders from Bad.Example are refused")
        }
    );
    let mut txn = p.start(&client(), "t");
    assert_eq!(
        txn.verify_sender(&sender("x@good.example")).await,
        Decision::Continue
    );
}

#[tokio::test]
async fn check_recipient_rejects_and_tempfails_per_recipient() {
    let p = all().await;
    let mut txn = p.start(&client(), "t");
    let env = envelope("a@example.org", &[]);
    assert_eq!(
        txn.check_recipient(&env, &rcpt("nobody@example.net")).await,
        Decision::Reject {
            reply: Reply::new(550, "5.1.1", "no such user")
        }
    );
    assert_eq!(
        txn.check_recipient(&env, &rcpt("later@example.net")).await,
        Decision::Tempfail {
            reply: Reply::new(451, "4.2.0", "mailbox busy")
        }
    );
    assert_eq!(
        txn.check_recipient(&env, &rcpt("b@example.net")).await,
        Decision::Continue
    );
    assert_eq!(
        txn.calls().len(),
        3,
        "one instance serves every hook of the transaction"
    );
}

#[tokio::test]
async fn check_message_edits_headers_and_sums_scores() {
    let p = all().await;
    let mut txn = p.start(&client(), "t");
    let env = envelope("a@example.org", &["b@example.net"]);
    let out = txn.check_message(&env, &message("hello", "body")).await;
    assert_eq!(out.decision, Decision::Continue);
    assert_eq!(out.score, 3.0);
    assert!(!out.spam);
    assert_eq!(out.symbols.len(), 1);
    assert_eq!(out.symbols[0].name, "TAGGED");
    assert_eq!(
        out.add_headers,
        [
            ("X-Tagged".to_string(), "seen".to_string()),
            ("X-Spam-Score".to_string(), "3.00".to_string()),
            (
                "X-Spam-Status".to_string(),
                "No, score=3.00 required=5.00 tests=TAGGED".to_string()
            ),
        ]
    );
    assert!(out.remove_headers.contains(&"X-Remove-Me".to_string()));
    let logs = &txn.calls()[0].logs;
    assert_eq!(
        logs[0].message,
        "call 1: subject \"hello\", 1 recipients, 93 bytes"
    );

    let mut txn = p.start(&client(), "t");
    let out = txn
        .check_message(&env, &message("Forbidden fruit", "body"))
        .await;
    assert_eq!(
        out.decision,
        Decision::Reject {
            reply: Reply::new(554, "5.7.1", "subject contains \"forbidden\"")
        }
    );
}

#[tokio::test]
async fn score_thresholds_mark_and_reject() {
    let rt = runtime();
    let cfg = config(
        "[scoring]\nspam_threshold = 4.0\nreject_threshold = 6.0\n[plugin.tagger.config]\nscore = 4.5\n",
    );
    let p = pipeline(&rt, &cfg, &[("tagger", plugin("test", "tagger"))])
        .await
        .unwrap();
    let env = envelope("a@example.org", &["b@example.net"]);
    let out = p
        .start(&client(), "t")
        .check_message(&env, &message("s", "b"))
        .await;
    assert!(out.spam);
    assert_eq!(out.decision, Decision::Continue);
    assert!(
        out.add_headers
            .iter()
            .any(|(n, v)| n == "X-Spam-Status" && v.starts_with("Yes, score=4.50"))
    );

    let cfg = config("[scoring]\nreject_threshold = 6.0\n[plugin.tagger.config]\nscore = 6.0\n");
    let p = pipeline(&rt, &cfg, &[("tagger", plugin("test", "tagger"))])
        .await
        .unwrap();
    let out = p
        .start(&client(), "t")
        .check_message(&env, &message("s", "b"))
        .await;
    assert_eq!(
        out.decision,
        Decision::Reject {
            reply: Reply::new(550, "5.7.1", "Message rejected as spam")
        }
    );
}

#[tokio::test]
async fn on_delivery_and_render_bounce() {
    let p = all().await;
    let report = DeliveryReport {
        queue_id: "Q1".into(),
        sender: "a@example.org".into(),
        recipient: "b@example.net".into(),
        status: DeliveryStatus::Failed,
        remote_host: Some("mx.example.net".into()),
        reply: "550 5.1.1 unknown".into(),
        attempts: 1,
    };
    let calls = p.on_delivery(&report).await;
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].logs[0].message,
        "Q1 to b@example.net failed: 550 5.1.1 unknown"
    );

    let request = BounceRequest {
        queue_id: "Q1".into(),
        reporting_host: "mx.local".into(),
        sender: "a@example.org".into(),
        failures: vec![FailedRecipient {
            address: "b@example.net".into(),
            reply: "550 5.1.1 unknown".into(),
            status: "5.1.1".into(),
            remote_host: None,
        }],
        original_headers: vec![],
        expired: false,
    };
    let (text, calls) = p.render_bounce(&request).await;
    let text = text.expect("the plugin renders a bounce");
    assert_eq!(text.subject, "Undeliverable: 1 recipient(s)");
    assert!(text.text.contains("b@example.net: 550 5.1.1 unknown"));
    assert_eq!(calls.len(), 1);
}

#[tokio::test]
async fn one_instance_per_transaction_never_shared() {
    // The tagger counts calls in its own state: within a transaction the count goes on, a new
    // transaction starts from a fresh instance.
    let p = all().await;
    let env = envelope("a@example.org", &["b@example.net"]);
    for i in 0..3 {
        let mut txn = p.start(&client(), &format!("t{i}"));
        txn.check_message(&env, &message("x", "y")).await;
        txn.check_message(&env, &message("x", "y")).await;
        let counts: Vec<&str> = txn
            .calls()
            .iter()
            .map(|c| c.logs[0].message.split(':').next().unwrap_or(""))
            .collect();
        assert_eq!(counts, ["call 1", "call 2"]);
    }
}

#[tokio::test]
async fn the_last_stage_ends_the_transactions_instances() {
    // The inbound core ends a transaction with `check_message_and_end`: its instances are
    // dropped right after, so anything later would start from a fresh one.
    let p = all().await;
    let env = envelope("a@example.org", &["b@example.net"]);
    let mut txn = p.start(&client(), "t-end");
    txn.check_message_and_end(&env, &message("x", "y")).await;
    txn.check_message(&env, &message("x", "y")).await;
    let counts: Vec<&str> = txn
        .calls()
        .iter()
        .filter(|c| c.plugin == "tagger")
        .map(|c| c.logs[0].message.split(':').next().unwrap_or(""))
        .collect();
    assert_eq!(counts, ["call 1", "call 1"]);
}
