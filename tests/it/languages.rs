//! "Any language": the Python and JavaScript example plugins run through the same runtime and
//! pipeline as Rust plugins.

use sluice::envelope::Decision;
use sluice::smtp::reply::Reply;
use sluice_tests::*;

const NESTED_EXE: &str = "From: a@example.org\r\nTo: b@example.net\r\nSubject: invoice\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--XX\r\nContent-Type: message/rfc822\r\n\r\nFrom: c@example.org\r\nSubject: inner\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"YY\"\r\n\r\n--YY\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"invoice.pdf.exe\"\r\n\r\nAAAA\r\n--YY--\r\n--XX--\r\n";

#[tokio::test]
async fn python_plugin_refuses_an_executable_inside_an_attached_message() {
    let rt = runtime();
    let cfg = config("[plugin.python-attachments]\nmemory_mb = 128\ntimeout_ms = 2000\n");
    let p = pipeline(
        &rt,
        &cfg,
        &[(
            "python-attachments",
            plugin("examples", "python-attachments"),
        )],
    )
    .await
    .expect("python plugin loads");
    assert_eq!(p.plugins()[0].info.name, "python-attachments");
    let env = envelope("a@example.org", &["b@example.net"]);
    let mut txn = p.start(&client(), "py1");
    let out = txn.check_message(&env, NESTED_EXE.as_bytes()).await;
    assert_eq!(
        out.decision,
        Decision::Reject {
            reply: Reply::new(
                550,
                "5.7.1",
                "Message refused: it carries an attachment type we do not accept"
            )
        },
        "{:?}",
        txn.calls()
    );
    assert_eq!(
        out.symbols[0].detail,
        "attachment 'invoice.pdf.exe' has a blocked file type (.exe) (inside an attached message)"
    );
    assert_eq!(
        txn.calls()[0].logs[0].message,
        "py1: attachment 'invoice.pdf.exe' has a blocked file type (.exe) (inside an attached message)"
    );

    let out = p
        .start(&client(), "py2")
        .check_message(&env, &message("hello", "plain text"))
        .await;
    assert_eq!(out.decision, Decision::Continue);

    // An executable under an innocent name and type is known by its first bytes (the host's
    // sniffed type in the parsed view).
    let disguised = "From: a@example.org\r\nTo: b@example.net\r\nSubject: report\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nthe report\r\n--XX\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"report.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA//8AAA==\r\n--XX--\r\n";
    let out = p
        .start(&client(), "py3")
        .check_message(&env, disguised.as_bytes())
        .await;
    assert!(matches!(out.decision, Decision::Reject { .. }), "{out:?}");
    assert_eq!(
        out.symbols[0].detail,
        "attachment 'report.pdf' is application/vnd.microsoft.portable-executable"
    );
}

#[tokio::test]
async fn python_plugin_quarantines_when_configured_and_refuses_bad_settings() {
    let rt = runtime();
    let cfg = config(
        "[plugin.python-attachments]\nmemory_mb = 128\ntimeout_ms = 2000\n[plugin.python-attachments.config]\naction = \"quarantine\"\nblocked_extensions = [\"PDF\"]\n",
    );
    let p = pipeline(
        &rt,
        &cfg,
        &[(
            "python-attachments",
            plugin("examples", "python-attachments"),
        )],
    )
    .await
    .unwrap();
    let raw = NESTED_EXE.replace("invoice.pdf.exe", "report.pdf");
    let env = envelope("a@example.org", &["b@example.net"]);
    let out = p
        .start(&client(), "q")
        .check_message(&env, raw.as_bytes())
        .await;
    assert_eq!(
        out.decision,
        Decision::Quarantine {
            reason: "attachment 'report.pdf' has a blocked file type (.pdf) (inside an attached message)".into()
        }
    );

    let bad = config(
        "[plugin.python-attachments]\nmemory_mb = 128\ntimeout_ms = 2000\n[plugin.python-attachments.config]\naction = \"explode\"\n",
    );
    let err = load_one(
        &rt,
        &bad,
        "python-attachments",
        &plugin("examples", "python-attachments"),
    )
    .await
    .expect_err("refused");
    assert!(
        err.ends_with(
            "refused its configuration: setting `action`: expected \"reject\" or \"quarantine\""
        ),
        "{err}"
    );
}

#[tokio::test]
async fn javascript_plugin_blocks_and_flags_words_from_its_config() {
    let rt = runtime_with(scratch_services(None));
    // It keeps a count per sender domain in `kv`: refused without the grant, by name.
    let err = load_one(
        &rt,
        &config(""),
        "js-keywords",
        &plugin("examples", "js-keywords"),
    )
    .await
    .expect_err("refused without kv");
    assert!(
        err.contains("set capabilities = [\"kv\"] in [plugin.js-keywords]"),
        "{err}"
    );
    let cfg = config(
        "[plugin.js-keywords]\nmemory_mb = 128\ntimeout_ms = 2000\ncapabilities = [\"kv\"]\n[plugin.js-keywords.config]\nblocked_words = [\"Lottery\"]\nflagged_words = [\"free\", \"money\"]\nscore = 2.5\nrepeat_after = 2\nrepeat_score = 1.5\n",
    );
    let p = pipeline(
        &rt,
        &cfg,
        &[("js-keywords", plugin("examples", "js-keywords"))],
    )
    .await
    .expect("javascript plugin loads");
    let env = envelope("a@example.org", &["b@example.net"]);
    let out = p
        .start(&client(), "js1")
        .check_message(&env, &message("free money", "free stuff"))
        .await;
    assert_eq!(out.decision, Decision::Continue);
    assert_eq!(out.score, 5.0);
    assert_eq!(
        out.add_headers[0],
        ("X-Keywords-Checked".to_string(), "flagged=2".to_string())
    );

    let mut txn = p.start(&client(), "js2");
    let out = txn
        .check_message(&env, &message("You won the LOTTERY", "x"))
        .await;
    assert_eq!(
        out.decision,
        Decision::Reject {
            reply: Reply::new(550, "5.7.1", "Message refused by content rules")
        }
    );
    assert_eq!(
        txn.calls()[0].logs[0].message,
        "js2: blocked word \"lottery\" in subject"
    );

    // A second flagged message from example.org; from the third on, the domain is a repeat
    // sender (the count lives in `kv`, across transactions and instances).
    let flagged = |id: &'static str| {
        let p = p.clone();
        let env = env.clone();
        async move {
            p.start(&client(), id)
                .check_message(&env, &message("free offer", "x"))
                .await
        }
    };
    let second = flagged("js3").await;
    assert!(second.symbols.iter().all(|s| s.name != "JS_REPEAT_SENDER"));
    let third = flagged("js4").await;
    let repeat = third
        .symbols
        .iter()
        .find(|s| s.name == "JS_REPEAT_SENDER")
        .expect("a repeat sender");
    assert_eq!(repeat.score, 1.5);
    assert!(
        repeat
            .detail
            .contains("2 flagged messages from example.org"),
        "{repeat:?}"
    );

    let bad = config(
        "[plugin.js-keywords]\nmemory_mb = 128\ncapabilities = [\"kv\"]\n[plugin.js-keywords.config]\nblocked_words = \"not a list\"\n",
    );
    let err = load_one(&rt, &bad, "js-keywords", &plugin("examples", "js-keywords"))
        .await
        .expect_err("refused");
    assert!(
        err.contains(
            "refused its configuration: setting `blocked_words`: expected a list, found the string \"not a list\""
        ),
        "{err}"
    );
}

/// A fourth language: C, built with Debian's clang-16 and wasi-libc against bindings from
/// wit-bindgen's C generator, made a component with the preview-1 adapter.
#[tokio::test]
async fn c_plugin_refuses_its_blocked_recipient_and_tags_messages() {
    let rt = runtime();
    let file = plugin("examples", "c-no-reply");
    let p = pipeline(
        &rt,
        &config("[plugin.c-no-reply.config]\nblocked = \"donotreply\"\n"),
        &[("c-no-reply", file.clone())],
    )
    .await
    .expect("the C plugin loads");
    assert_eq!(p.plugins()[0].info.name, "c-no-reply");
    assert_eq!(
        p.plugins()[0].hook_names(),
        ["check-recipient", "check-message"]
    );
    let mut txn = p.start(&client(), "c1");
    let env = envelope("a@example.net", &[]);
    assert_eq!(
        txn.check_recipient(&env, &rcpt("DoNotReply@example.org"))
            .await,
        Decision::Reject {
            reply: Reply::new(550, "5.1.1", "This address does not receive mail")
        }
    );
    assert_eq!(
        txn.check_recipient(&env, &rcpt("noreply@example.org"))
            .await,
        Decision::Continue
    );
    let out = txn
        .check_message(
            &envelope("a@example.net", &["bob@example.org"]),
            &message("hi", "x"),
        )
        .await;
    assert_eq!(
        out.add_headers[0],
        ("X-C-No-Reply".to_string(), "checked".to_string())
    );
    // A bad setting is refused at load with the plugin's message.
    let err = load_one(
        &rt,
        &config("[plugin.c-no-reply.config]\nblocked = 5\n"),
        "c-no-reply",
        &file,
    )
    .await
    .expect_err("refused");
    assert!(
        err.contains("refused its configuration: setting `blocked`: expected a non-empty string"),
        "{err}"
    );
}
