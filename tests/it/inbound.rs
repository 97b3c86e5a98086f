//! The inbound core decides for every front end: the same messages through the SMTP server
//! and through `sluice plugin check`'s replay get the same decisions and the same edits.

use std::io::Write as _;
use std::sync::Arc;

use sluice::pipeline::replay::EnvelopeArgs;
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
        // (Marked mail stays in the inbox, where it is compared: junk_folder = "".)
        "[plugin.sender-gate.config]\ndeny_domain = \"bad.example\"\n[plugin.tagger.config]\ntag = \"parity\"\nscore = 5.5\nreject_word = \"forbidden\"\n[delivery]\njunk_folder = \"\"\n",
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
        let report = sluice::pipeline::replay::replay(&Arc::clone(&live), &file, &args, i)
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
            for h in &report.outcome.add_headers {
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

/// One transaction of the table: who sends (authenticated as alice or not), the envelope and
/// the body's size.
struct Case {
    name: &'static str,
    auth: bool,
    from: &'static str,
    rcpts: &'static [&'static str],
    body_bytes: usize,
}

const TABLE: &[Case] = &[
    Case {
        name: "relay denied",
        auth: false,
        from: "a@remote.test",
        rcpts: &["x@elsewhere.test"],
        body_bytes: 100,
    },
    Case {
        name: "sender not owned",
        auth: true,
        from: "bob@example.org",
        rcpts: &["carol@example.org"],
        body_bytes: 100,
    },
    Case {
        name: "too many recipients",
        auth: false,
        from: "a@remote.test",
        rcpts: &["bob@example.org", "carol@example.org", "dave@example.org"],
        body_bytes: 100,
    },
    Case {
        name: "too big",
        auth: false,
        from: "a@remote.test",
        rcpts: &["bob@example.org"],
        body_bytes: 3000,
    },
    Case {
        name: "quarantined at MAIL",
        auth: false,
        from: "x@suspect.example",
        rcpts: &["bob@example.org"],
        body_bytes: 100,
    },
    Case {
        name: "accepted",
        auth: true,
        from: "alice@example.org",
        rcpts: &["x@elsewhere.test"],
        body_bytes: 100,
    },
];

fn table_message(c: &Case) -> String {
    let head = format!(
        "From: <{}>\r\nTo: <{}>\r\nSubject: {}\r\n\r\n",
        c.from, c.rcpts[0], c.name
    );
    let line = "x".repeat(70) + "\r\n";
    let mut body = String::new();
    while head.len() + body.len() < c.body_bytes {
        body.push_str(&line);
    }
    head + &body
}

/// The outcome as a line: `mail=CODE rcpt=CODE,… end=CODE ACTION`.
fn summary(mail: u16, rcpts: &[u16], end: Option<(u16, &str)>) -> String {
    let mut s = format!("mail={mail}");
    if mail != 250 {
        return s;
    }
    let codes: Vec<String> = rcpts.iter().map(u16::to_string).collect();
    s += &format!(" rcpt={}", codes.join(","));
    if let Some((code, action)) = end {
        s += &format!(" end={code} {action}");
    }
    s
}

fn code_of(reply: &str) -> u16 {
    reply.lines().last().unwrap_or("")[..3].parse().unwrap_or(0)
}

async fn over_smtp(s: &TestServer, c: &Case) -> String {
    use base64::Engine as _;
    let mut conv = Conversation::connect(s.smtp).await;
    conv.send("EHLO client.test").await;
    conv.expect("250 ").await;
    if c.auth {
        let token = base64::engine::general_purpose::STANDARD.encode("\0alice\0wonderland");
        conv.send(&format!("AUTH PLAIN {token}")).await;
        conv.expect("235").await;
    }
    conv.send(&format!("MAIL FROM:<{}>", c.from)).await;
    let mail = code_of(&conv.reply().await);
    let mut rcpts = Vec::new();
    let mut end = None;
    if mail == 250 {
        for r in c.rcpts {
            conv.send(&format!("RCPT TO:<{r}>")).await;
            rcpts.push(code_of(&conv.reply().await));
        }
        if rcpts.contains(&250) {
            let quarantined = s
                .ctx()
                .spool
                .list(sluice::spool::SpoolState::Quarantine)
                .unwrap()
                .len();
            conv.send("DATA").await;
            conv.expect("354").await;
            conv.raw(format!("{}.\r\n", table_message(c)).as_bytes())
                .await;
            let code = code_of(&conv.reply().await);
            let held = s
                .ctx()
                .spool
                .list(sluice::spool::SpoolState::Quarantine)
                .unwrap()
                .len();
            let action = match code {
                250 if held > quarantined => "quarantined",
                250 => "queued",
                _ => "refused",
            };
            end = Some((code, action));
        }
    }
    conv.send("QUIT").await;
    summary(mail, &rcpts, end)
}

async fn by_replay(s: &TestServer, dir: &std::path::Path, i: usize, c: &Case) -> String {
    let file = dir.join(format!("{i}.eml"));
    std::fs::write(&file, table_message(c)).unwrap();
    let args = EnvelopeArgs {
        mail_from: Some(c.from.to_string()),
        rcpt: c.rcpts.iter().map(|r| r.to_string()).collect(),
        client_ip: Some("192.0.2.10".parse().unwrap()),
        helo: Some("client.test".into()),
        auth_user: c.auth.then(|| "alice".to_string()),
        authenticate: false,
    };
    let r = sluice::pipeline::replay::replay(&s.ctx().live(), &file, &args, i)
        .await
        .unwrap();
    let code = |d: &sluice::envelope::Decision| match d {
        sluice::envelope::Decision::Reject { reply }
        | sluice::envelope::Decision::Tempfail { reply } => reply.code,
        _ => 250,
    };
    if r.result.stage == "verify-sender" {
        return summary(code(&r.result.decision), &[], None);
    }
    let rcpts: Vec<u16> = r.recipients.iter().map(|x| code(&x.decision)).collect();
    if r.result.stage == "check-recipient" {
        return summary(250, &rcpts, None);
    }
    let end = match &r.result.decision {
        sluice::envelope::Decision::Quarantine { .. } => (250, "quarantined"),
        sluice::envelope::Decision::Discard => (250, "discarded"),
        d if code(d) != 250 => (code(d), "refused"),
        _ => (250, "queued"),
    };
    summary(250, &rcpts, Some(end))
}

fn by_milter(addr: std::net::SocketAddr, c: &Case) -> String {
    use sluice_tests::milter_client::{MilterClient, Packet, arg, connect_data};
    let reply_code = |p: &Packet| match p.cmd {
        b'y' => String::from_utf8_lossy(&p.data)[..3].parse().unwrap_or(0),
        b'r' => 550,
        b't' => 450,
        _ => 250,
    };
    let mut m = MilterClient::connect(addr).unwrap();
    m.ask(b'C', &connect_data("client.test", b'4', 4000, "192.0.2.10"))
        .unwrap();
    m.ask(b'H', &arg("client.test")).unwrap();
    if c.auth {
        let mut macros = vec![b'M'];
        macros.extend(arg("{auth_authen}"));
        macros.extend(arg("alice"));
        m.send(b'D', &macros).unwrap();
    }
    let mail = reply_code(&m.ask(b'M', &arg(&format!("<{}>", c.from))).unwrap());
    let mut rcpts = Vec::new();
    let mut end = None;
    if mail == 250 {
        for r in c.rcpts {
            rcpts.push(reply_code(&m.ask(b'R', &arg(&format!("<{r}>"))).unwrap()));
        }
        if rcpts.contains(&250) {
            let text = table_message(c);
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let headers: Vec<(&str, &str)> = head
                .split("\r\n")
                .map(|l| l.split_once(": ").unwrap())
                .collect();
            let answer = m.message(&headers, body).unwrap();
            let last = answer.last().unwrap();
            let code = reply_code(last);
            let action = if answer.iter().any(|p| p.cmd == b'q') {
                "quarantined"
            } else if code == 250 {
                "queued"
            } else {
                "refused"
            };
            end = Some((code, action));
        }
    }
    summary(mail, &rcpts, end)
}

/// The envelope rules live in the inbound core, so every front end applies them: the same
/// transactions through SMTP, replay and (where it applies) the milter end alike. Relay
/// control is the MTA's behind a milter.
#[tokio::test]
async fn every_front_end_applies_the_envelope_rules_alike() {
    let s = TestServer::start(
        "[[listener]]\nkind = \"milter\"\naddress = \"127.0.0.1:0\"\n\
         [auth]\nallow_plaintext_on_loopback = true\n\
         [limits]\nmax_recipients = 2\nmax_message_size = 2000\n",
        &[("sender-gate", plugin("test", "sender-gate"))],
    )
    .await;
    let milter = s
        .listeners
        .iter()
        .find(|(k, _)| *k == sluice::config::ListenerKind::Milter)
        .unwrap()
        .1;
    let dir = tempfile::tempdir().unwrap();
    let expected = [
        "mail=250 rcpt=550",
        "mail=553",
        "mail=250 rcpt=250,250,452 end=250 queued",
        "mail=250 rcpt=250 end=552 refused",
        "mail=250 rcpt=250 end=250 quarantined",
        "mail=250 rcpt=250 end=250 queued",
    ];
    for (i, (c, want)) in TABLE.iter().zip(expected).enumerate() {
        let smtp = over_smtp(&s, c).await;
        let replay = by_replay(&s, dir.path(), i, c).await;
        assert_eq!(smtp, want, "{} over SMTP", c.name);
        assert_eq!(replay, want, "{} by replay", c.name);
        let milter_wants = if c.name == "relay denied" {
            "mail=250 rcpt=250 end=250 queued"
        } else {
            want
        };
        let milter = tokio::task::spawn_blocking(move || by_milter(milter, &TABLE[i]))
            .await
            .unwrap();
        assert_eq!(milter, milter_wants, "{} through the milter", c.name);
    }
}
