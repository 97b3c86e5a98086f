//! The outbound SMTP client against a real server (Sluice itself, in-process): per-recipient
//! replies, opportunistic and required TLS, AUTH, refusals, and unreachable servers.

use std::time::Duration;

use sluice::delivery::client::{ClientConfig, ClientError, Outgoing, Timeouts, TlsPolicy, deliver};
use sluice_tests::*;

fn cfg(tls: TlsPolicy) -> ClientConfig {
    ClientConfig {
        helo: "relay.test".into(),
        tls,
        auth: None,
        lmtp: false,
        timeouts: Timeouts::all(Duration::from_secs(10)),
        max_messages: None,
        dane: Default::default(),
    }
}

const MSG: &[u8] = b"From: a@example.net\r\nSubject: outbound\r\n\r\n.leading dot\r\nbody\r\n";

#[tokio::test]
async fn per_recipient_replies_over_opportunistic_tls() {
    let s = TestServer::start("", &[]).await;
    let rcpts = vec![
        "bob@example.org".to_string(),
        "x@elsewhere.test".to_string(),
        "carol@example.org".to_string(),
    ];
    let out = deliver(
        s.smtp,
        "localhost",
        &cfg(TlsPolicy::Opportunistic),
        &Outgoing {
            sender: "a@example.net",
            recipients: &rcpts,
            message: MSG,
            eight_bit: false,
            smtputf8: false,
            dsn: Default::default(),
            requiretls: false,
        },
    )
    .await
    .expect("delivered");
    assert!(out.tls);
    let codes: Vec<(String, u16, String)> = out
        .recipients
        .iter()
        .map(|(r, reply)| (r.clone(), reply.code, reply.enhanced.clone()))
        .collect();
    assert_eq!(
        codes,
        [
            ("bob@example.org".to_string(), 250, "2.0.0".to_string()),
            ("x@elsewhere.test".to_string(), 550, "5.7.1".to_string()),
            ("carol@example.org".to_string(), 250, "2.0.0".to_string()),
        ]
    );
    let mail = s.mailbox("bob", 1).await;
    assert!(mail[0].contains("with ESMTPS id"), "{}", mail[0]);
    assert!(
        mail[0].ends_with("Subject: outbound\r\n\r\n.leading dot\r\nbody\r\n"),
        "dot-stuffing must round-trip: {}",
        mail[0]
    );
    s.stop().await;
}

#[tokio::test]
async fn auth_over_starttls_lets_the_relay_accept_remote_recipients() {
    let s = TestServer::start("", &[]).await;
    let mut c = cfg(TlsPolicy::Opportunistic);
    c.auth = Some(("alice".into(), "wonderland".into()));
    let rcpts = vec!["someone@elsewhere.test".to_string()];
    let out = deliver(
        s.submission,
        "localhost",
        &c,
        &Outgoing {
            sender: "alice@example.org",
            recipients: &rcpts,
            message: MSG,
            eight_bit: true,
            smtputf8: false,
            dsn: Default::default(),
            requiretls: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(out.recipients[0].1.code, 250, "{:?}", out);
    c.auth = Some(("alice".into(), "wrong".into()));
    let out = deliver(
        s.submission,
        "localhost",
        &c,
        &Outgoing {
            sender: "alice@example.org",
            recipients: &rcpts,
            message: MSG,
            eight_bit: false,
            smtputf8: false,
            dsn: Default::default(),
            requiretls: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(out.recipients[0].1.code, 535);
    s.stop().await;
}

#[tokio::test]
async fn required_tls_refuses_an_untrusted_certificate_and_a_missing_server_is_an_error() {
    let s = TestServer::start("", &[]).await;
    let rcpts = vec!["bob@example.org".to_string()];
    let msg = Outgoing {
        sender: "a@example.net",
        recipients: &rcpts,
        message: MSG,
        eight_bit: false,
        smtputf8: false,
        dsn: Default::default(),
        requiretls: false,
    };
    let err = deliver(s.smtp, "localhost", &cfg(TlsPolicy::Required), &msg)
        .await
        .expect_err("self-signed is not trusted");
    assert!(matches!(err, ClientError::Tls { .. }), "{err}");
    let addr = s.smtp;
    s.stop().await;
    let err = deliver(addr, "localhost", &cfg(TlsPolicy::None), &msg)
        .await
        .expect_err("nobody listens");
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");
}

#[tokio::test]
async fn a_server_refusing_the_sender_refuses_every_recipient() {
    let s = TestServer::start(
        "[plugin.sender-gate.config]\ndeny_domain = \"bad.example\"\n",
        &[("sender-gate", plugin("test", "sender-gate"))],
    )
    .await;
    let rcpts = vec![
        "bob@example.org".to_string(),
        "carol@example.org".to_string(),
    ];
    let out = deliver(
        s.smtp,
        "localhost",
        &cfg(TlsPolicy::None),
        &Outgoing {
            sender: "x@bad.example",
            recipients: &rcpts,
            message: MSG,
            eight_bit: false,
            smtputf8: false,
            dsn: Default::default(),
            requiretls: false,
        },
    )
    .await
    .unwrap();
    assert!(!out.tls);
    assert!(
        out.recipients
            .iter()
            .all(|(_, r)| r.code == 550 && r.text == "senders from bad.example are refused"),
        "{out:?}"
    );
    s.stop().await;
}
