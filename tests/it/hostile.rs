//! Hostile plugins are stopped within their limits, mapped by their failure policy, and never
//! affect the next transaction or other plugins.

use sluice::envelope::Decision;
use sluice::pipeline::Pipeline;
use sluice::plugin::CallFailure;
use sluice::smtp::reply::Reply;
use sluice_tests::*;

/// The hostile plugin with a deadline no finite work reaches, even on a busy machine: the
/// tests that use it are about other limits (memory, traps, replies).
async fn hostile_pipeline(mode: &str, extra: &str) -> Pipeline {
    hostile_pipeline_within(mode, extra, 10_000).await
}

/// [`hostile_pipeline`] with the hostile plugin's deadline `timeout_ms`.
async fn hostile_pipeline_within(mode: &str, extra: &str, timeout_ms: u64) -> Pipeline {
    let rt = runtime();
    let cfg = config(&format!(
        "[plugin.hostile]\ntimeout_ms = {timeout_ms}\nmemory_mb = 32\nlog_lines = 5\n{extra}\n[plugin.hostile.config]\nmode = \"{mode}\"\n"
    ));
    pipeline(
        &rt,
        &cfg,
        &[
            ("hostile", plugin("test", "hostile")),
            ("tagger", plugin("test", "tagger")),
        ],
    )
    .await
    .expect("plugins load")
}

/// Runs a full transaction; returns the message decision and the hostile plugin's failure.
async fn run(p: &Pipeline, subject: &str) -> (Decision, Option<CallFailure>, Vec<String>) {
    let mut txn = p.start(&client(), "t");
    assert_eq!(
        txn.verify_sender(&sender("a@example.org")).await,
        Decision::Continue
    );
    let env = envelope("a@example.org", &["b@example.net"]);
    let out = txn.check_message(&env, &message(subject, "body")).await;
    let calls = txn.take_calls();
    let failure = calls
        .iter()
        .find(|c| c.plugin == "hostile" && c.failure.is_some())
        .and_then(|c| c.failure.clone());
    let called: Vec<String> = calls
        .iter()
        .filter(|c| c.hook == sluice::plugin::Hook::CheckMessage)
        .map(|c| c.plugin.clone())
        .collect();
    (out.decision, failure, called)
}

fn tempfail() -> Decision {
    Decision::Tempfail {
        reply: Reply::plugin_tempfail(),
    }
}

#[tokio::test]
async fn infinite_loop_is_stopped_at_its_deadline_then_next_transaction_is_normal() {
    // Long enough that the ordinary transaction after it never meets it, busy machine or not.
    let p = hostile_pipeline_within("loop", "", 2000).await;
    let (decision, failure, _) = run(&p, "hostile").await;
    assert_eq!(decision, tempfail());
    assert_eq!(failure, Some(CallFailure::Deadline { limit_ms: 2000 }));
    let (decision, failure, called) = run(&p, "ordinary").await;
    assert_eq!(decision, Decision::Continue);
    assert_eq!(failure, None);
    assert_eq!(called, ["hostile", "tagger"]);
}

#[tokio::test]
async fn memory_hog_hits_its_limit() {
    let p = hostile_pipeline("hog", "").await;
    let (decision, failure, _) = run(&p, "hostile").await;
    assert_eq!(decision, tempfail());
    assert_eq!(failure, Some(CallFailure::Memory { limit_mb: 32 }));
    assert_eq!(run(&p, "fine").await.0, Decision::Continue);
}

#[tokio::test]
async fn trap_reports_the_guest_output_and_reject_policy_applies() {
    let p = hostile_pipeline("trap", "on_failure = \"reject\"").await;
    let (decision, failure, called) = run(&p, "hostile").await;
    assert_eq!(
        decision,
        Decision::Reject {
            reply: Reply::plugin_reject()
        }
    );
    assert_eq!(called, ["hostile"], "a final decision stops the chain");
    match failure {
        Some(CallFailure::Trap { output, .. }) => {
            assert!(output.contains("about to panic"), "{output}");
            assert!(output.contains("deliberate panic"), "{output}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_eq!(run(&p, "fine").await.0, Decision::Continue);
}

#[tokio::test]
async fn continue_policy_fails_open_and_later_plugins_still_run() {
    let p = hostile_pipeline("trap", "on_failure = \"continue\"").await;
    let (decision, failure, called) = run(&p, "hostile").await;
    assert_eq!(decision, Decision::Continue);
    assert!(matches!(failure, Some(CallFailure::Trap { .. })));
    assert_eq!(called, ["hostile", "tagger"]);
}

#[tokio::test]
async fn endless_logging_is_cut_at_the_quota() {
    // A deadline no machine reaches: 100,000 log calls take 0.1 s alone, and longer while
    // other tests share the cores; the quota is what this test is about.
    let p = hostile_pipeline_within("logflood", "", 30_000).await;
    let mut txn = p.start(&client(), "t");
    let env = envelope("a@example.org", &["b@example.net"]);
    let out = txn.check_message(&env, &message("hostile", "x")).await;
    assert_eq!(out.decision, Decision::Continue);
    let call = &txn.calls()[0];
    assert_eq!(call.logs.len(), 5);
    assert_eq!(call.logs_dropped, 100_000 - 5);
}

#[tokio::test]
async fn malformed_reply_code_is_a_failure_not_a_verdict() {
    let p = hostile_pipeline("badcode", "").await;
    let (decision, failure, _) = run(&p, "hostile").await;
    assert_eq!(decision, tempfail());
    assert_eq!(
        failure,
        Some(CallFailure::BadReturn {
            message: "reply code 250 where a 5xx code is required".into()
        })
    );
}

#[tokio::test]
async fn a_failed_instance_is_not_called_again_in_the_same_transaction() {
    let rt = runtime();
    let cfg = config(
        "[plugin.hostile]\non_failure = \"continue\"\n[plugin.hostile.config]\nmode = \"trap\"\nhook = \"verify-sender\"\n",
    );
    let p = pipeline(&rt, &cfg, &[("hostile", plugin("test", "hostile"))])
        .await
        .unwrap();
    let mut txn = p.start(&client(), "t");
    assert_eq!(
        txn.verify_sender(&sender("hostile@example.org")).await,
        Decision::Continue
    );
    let env = envelope("hostile@example.org", &[]);
    assert_eq!(
        txn.check_recipient(&env, &rcpt("b@example.net")).await,
        Decision::Continue
    );
    let failures: Vec<_> = txn.calls().iter().map(|c| c.failure.clone()).collect();
    assert!(matches!(failures[0], Some(CallFailure::Trap { .. })));
    assert_eq!(failures[1], Some(CallFailure::EarlierFailure));
}

/// A looping plugin must not hold up other transactions: guests yield at every epoch tick.
#[tokio::test(flavor = "current_thread")]
async fn a_looping_plugin_does_not_stall_other_transactions() {
    let rt = runtime();
    let cfg =
        config("[plugin.hostile]\ntimeout_ms = 3000\n[plugin.hostile.config]\nmode = \"loop\"\n");
    let p = pipeline(&rt, &cfg, &[("hostile", plugin("test", "hostile"))])
        .await
        .unwrap();
    let slow = {
        let p = p.clone();
        tokio::spawn(async move {
            let mut txn = p.start(&client(), "slow");
            let env = envelope("a@example.org", &["b@example.net"]);
            txn.check_message(&env, &message("hostile", "x"))
                .await
                .decision
        })
    };
    let mut quick = Vec::new();
    for i in 0..20 {
        let p = p.clone();
        quick.push(tokio::spawn(async move {
            let mut txn = p.start(&client(), &format!("q{i}"));
            let env = envelope("a@example.org", &["b@example.net"]);
            txn.check_message(&env, &message("fine", "x"))
                .await
                .decision
        }));
    }
    for q in quick {
        assert_eq!(q.await.unwrap(), Decision::Continue);
    }
    // Ordering, not timing: all twenty finished while the looping one was still running.
    assert!(
        !slow.is_finished(),
        "the looping transaction should still be running"
    );
    assert_eq!(slow.await.unwrap(), tempfail());
}
