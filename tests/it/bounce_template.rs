//! The bundled bounce-template plugin writes the text of a real DSN: the configured language,
//! an operator's HTML template with values escaped, and the original subject.

use std::time::Duration;

use sluice::spool::SpoolState;
use sluice_tests::sink::{Sink, SinkOptions};
use sluice_tests::*;

use crate::routes::{envelope, relay_with};

#[tokio::test]
async fn a_bounce_in_german_with_an_escaped_html_template() {
    let sink = Sink::tcp("127.0.0.1:0", SinkOptions::default())
        .await
        .unwrap();
    let extra = format!(
        r#"[[route]]
domains = ["dest.test"]
kind = "smtp"
host = "127.0.0.1:{}"
tls = "none"
[plugin.bounce-template.config]
language = "de"
html = "<p>{{{{subject}}}}</p><ul>{{{{#recipients}}}}<li>{{{{address}}}}: {{{{reply}}}}</li>{{{{/recipients}}}}</ul>"
"#,
        sink.addr.unwrap().port()
    );
    let (_d, spool, runner) = relay_with(
        &extra,
        &[("bounce-template", plugin("bundled", "90-bounce-template"))],
    )
    .await;
    let msg = b"From: alice@relay.test\r\nSubject: Zahlen <Q3> & Pl\xc3\xa4ne\r\nDate: Tue, 12 Nov 2024 09:14:03 +0100\r\nMessage-ID: <z@relay.test>\r\n\r\nHallo.\r\n";
    spool
        .store(
            SpoolState::Queue,
            &envelope("B1", &["reject-me@dest.test", "ok@dest.test"], vec![]),
            msg,
        )
        .await
        .unwrap();
    let pass = runner.run_once(1_800_000_000).await;
    assert_eq!(pass.bounces.len(), 1, "{:?}", pass.attempts);
    assert_eq!(sink.wait_for(1, Duration::from_secs(5)).await.len(), 1);
    let (_env, dsn) = spool.read(SpoolState::Queue, &pass.bounces[0]).unwrap();
    let parsed = mail_parser::MessageParser::default().parse(&dsn).unwrap();
    assert_eq!(parsed.subject(), Some("Unzustellbare Nachricht"));
    let text = parsed.body_text(0).unwrap();
    for want in [
        "hier ist das Mailsystem von relay.test",
        "an 1 Empfänger nicht zugestellt",
        "Betreff:   Zahlen <Q3> & Pläne",
        "reject-me@dest.test\r\n    Antwort des empfangenden Servers: 550 5.1.1 no such user",
        "Tippfehler",
        "(Referenz: B1)",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(
        !text.contains("ok@dest.test"),
        "delivered recipients are not listed"
    );
    let html = parsed.body_html(0).unwrap();
    assert!(
        html.contains("<p>Zahlen &lt;Q3&gt; &amp; Pläne</p><ul><li>reject-me@dest.test: 550 5.1.1 no such user</li></ul>"),
        "{html}"
    );
}

#[tokio::test]
async fn template_mistakes_are_refused_at_load() {
    let rt = runtime();
    let file = plugin("bundled", "90-bounce-template");
    for (settings, want) in [
        ("language = \"xx\"", "\"xx\" is not one of en, de, fr"),
        ("text = \"{{subjet}}\"", "unknown placeholder {{subjet}}"),
        (
            "html = \"{{#recipients}}{{queue_id}}{{/recipients}}\"",
            "known here: address, reply, status, remote_host",
        ),
        (
            "text = \"x\"\ntext_file = \"/x\"",
            "set text or text_file, not both",
        ),
        ("html_file = \"/etc/hostname\"", "grant its directory"),
    ] {
        let toml = format!(
            "[plugins]\ncache_dir = {:?}\n[plugin.bounce-template.config]\n{settings}\n",
            workspace_root().join("target/test-compile-cache")
        );
        let err = load_one(&rt, &config(&toml), "bounce-template", &file)
            .await
            .expect_err(settings);
        assert!(err.contains(want), "{settings:?}: {err}");
    }
}
