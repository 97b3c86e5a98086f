//! Table tests of the whole dialogue, no sockets: a scripted driver answers every step.

use super::*;
use crate::envelope::Decision;
use base64::Engine as _;

fn cfg(listener: ListenerKind) -> SessionConfig {
    SessionConfig {
        hostname: "mx.test".into(),
        listener,
        tls_available: true,
        max_message_size: 1000,
        max_recipients: 3,
        max_errors: 20,
        max_auth_failures: 3,
        local_domains: vec!["example.org".into()],
        trusted_client: false,
        plaintext_auth: false,
        senders: Default::default(),
    }
}

/// What the scripted driver saw.
#[derive(Default, Debug)]
struct Seen {
    out: String,
    messages: Vec<Vec<u8>>,
    senders: Vec<String>,
    recipients: Vec<String>,
    tls_started: bool,
    closed: bool,
}

/// The scripted plugin: refuses addresses whose local part is `reject`, and answers `bye@`
/// with 421 (as a plugin does against address harvesting).
fn plugin(address: &str, refusal: Reply) -> Decision {
    if address.starts_with("bye@") {
        Decision::Tempfail {
            reply: Reply::new(
                421,
                "4.7.0",
                "Too many unknown recipients, closing connection",
            ),
        }
    } else if address.starts_with("reject@") {
        Decision::Reject { reply: refusal }
    } else {
        Decision::Continue
    }
}

/// Feeds `chunks` one by one (as separate reads) and answers every step: senders and
/// recipients whose local part is `reject` are refused, password `good` is right.
fn drive(session: &mut Session, chunks: &[&[u8]]) -> Seen {
    let mut seen = Seen::default();
    let mut chunks = chunks.iter();
    loop {
        match session.step() {
            Step::Read => match chunks.next() {
                Some(c) => session.receive(c),
                None => break,
            },
            Step::Close => {
                seen.closed = true;
                break;
            }
            Step::Mail(s) => {
                seen.senders.push(s.address.clone());
                let d = plugin(
                    &s.address,
                    Reply::new(550, "5.7.1", "sender refused by plugin"),
                );
                session.mail_decided(s, &d);
            }
            Step::Rcpt(r) => {
                seen.recipients.push(r.address.clone());
                let d = plugin(&r.address, Reply::new(550, "5.1.1", "no such user"));
                session.rcpt_decided(r, &d);
            }
            Step::Message(raw) => {
                seen.messages.push(raw);
                session.message_done(&Reply::new(250, "2.0.0", "Queued as Q1"));
            }
            Step::Auth { user, password } => session.auth_decided(
                user,
                if password == "good" {
                    AuthOutcome::Accepted
                } else {
                    AuthOutcome::Refused
                },
            ),
            Step::StartTls => {
                seen.tls_started = true;
                seen.out
                    .push_str(&String::from_utf8_lossy(&session.take_output()));
                seen.out.push_str("<TLS>\r\n");
                session.tls_started(TlsParams {
                    version: "TLSv1.3".into(),
                    cipher: "TLS13_AES_128_GCM_SHA256".into(),
                });
            }
        }
        seen.out
            .push_str(&String::from_utf8_lossy(&session.take_output()));
    }
    seen.out
        .push_str(&String::from_utf8_lossy(&session.take_output()));
    seen
}

fn run(listener: ListenerKind, input: &str) -> Seen {
    let mut s = Session::new(cfg(listener), None);
    drive(&mut s, &[input.as_bytes()])
}

/// True when an EHLO reply in `out` announces `capability`.
fn ehlo_has(out: &str, capability: &str) -> bool {
    out.contains(&format!("250-{capability}\r\n")) || out.contains(&format!("250 {capability}\r\n"))
}

/// The reply codes, in order.
fn codes(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.len() >= 3 && !l.starts_with("<TLS>"))
        .filter(|l| l.as_bytes().get(3) != Some(&b'-'))
        .map(|l| l[..3].to_string())
        .collect()
}

#[test]
fn a_plain_transaction_with_pipelining() {
    let seen = run(
        ListenerKind::Smtp,
        "EHLO client.test\r\nMAIL FROM:<a@example.net> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<bob@example.org> NOTIFY=FAILURE,DELAY ORCPT=rfc822;bob@example.org\r\nDATA\r\nSubject: hi\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(codes(&seen.out), ["250", "250", "250", "354", "250", "221"]);
    assert!(
        seen.out
            .starts_with("250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n")
    );
    assert!(ehlo_has(&seen.out, "STARTTLS"));
    assert!(
        !seen.out.contains("AUTH"),
        "no AUTH before TLS: {}",
        seen.out
    );
    assert_eq!(
        seen.messages,
        [b"Subject: hi\r\n\r\n.dot\r\nbody\r\n".to_vec()]
    );
    assert!(seen.closed);
}

#[test]
fn byte_by_byte_input_gives_the_same_result() {
    let input = "HELO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n";
    let chunks: Vec<&[u8]> = input.as_bytes().chunks(1).collect();
    let mut s = Session::new(cfg(ListenerKind::Smtp), None);
    let seen = drive(&mut s, &chunks);
    assert_eq!(codes(&seen.out), ["250", "250", "250", "354", "250", "221"]);
    assert_eq!(seen.messages, [b"x\r\n".to_vec()]);
}

#[test]
fn sequence_errors_and_unknown_commands() {
    let table = [
        (
            "MAIL FROM:<a@example.net>\r\n",
            "503 5.5.1 Send HELO or EHLO first",
        ),
        (
            "HELO c\r\nRCPT TO:<bob@example.org>\r\n",
            "503 5.5.1 Send MAIL first",
        ),
        ("HELO c\r\nDATA\r\n", "503 5.5.1 Send MAIL first"),
        (
            "HELO c\r\nMAIL FROM:<a@x.test>\r\nDATA\r\n",
            "554 5.5.1 No valid recipients",
        ),
        (
            "HELO c\r\nMAIL FROM:<a@x.test>\r\nMAIL FROM:<a@x.test>\r\n",
            "503 5.5.1 Nested MAIL command",
        ),
        ("FROB\r\n", "500 5.5.1 Unknown command"),
        (
            "HELO c\r\nMAIL FROM:<a@x.test> SIZE=5000\r\n",
            "552 5.3.4 Message size exceeds the limit of 1000 bytes",
        ),
        (
            "HELO c\r\nMAIL FROM:<a@x.test> FOO=BAR\r\n",
            "555 5.5.4 Unsupported parameter FOO=BAR",
        ),
        (
            "HELO c\r\nMAIL FROM:a@x.test\r\n",
            "501 5.5.4 Syntax: MAIL FROM:<reverse-path>",
        ),
        ("VRFY bob\r\n", "252 2.5.0 Cannot VRFY user"),
        ("EXPN staff\r\n", "502 5.5.1 Command not implemented"),
        ("HELO c\r\nAUTH PLAIN\r\n", "503 5.5.1 Send EHLO first"),
        ("EHLO c\r\nAUTH PLAIN\r\n", "538 5.7.11 Encryption required"),
        ("NOOP\r\nRSET\r\n", "250 2.0.0 OK\r\n250 2.0.0 OK"),
    ];
    for (input, expected) in table {
        let seen = run(ListenerKind::Smtp, input);
        assert!(seen.out.contains(expected), "{input:?}\n got: {}", seen.out);
    }
}

#[test]
fn relay_control_and_its_tricks() {
    let table = [
        ("bob@example.org", "250 2.1.5"),
        ("bob@EXAMPLE.ORG", "250 2.1.5"),
        ("postmaster", "250 2.1.5"),
        ("bob@elsewhere.test", "550 5.7.1 Relaying denied"),
        (
            "bob%elsewhere.test@example.org",
            "550 5.7.1 Relaying denied",
        ),
        (
            "elsewhere.test!bob@example.org",
            "550 5.7.1 Relaying denied",
        ),
        (
            "\"bob@elsewhere.test\"@example.org",
            "550 5.7.1 Relaying denied",
        ),
        ("bob@example.org.", "550 5.7.1 Relaying denied"),
        // The grammar refuses address literals outright, before relay control.
        ("bob@[192.0.2.1]", "501 5.1.3 Bad recipient address syntax"),
        (
            "@example.org:bob@elsewhere.test",
            "550 5.7.1 Relaying denied",
        ),
    ];
    for (rcpt, expected) in table {
        let seen = run(
            ListenerKind::Smtp,
            &format!("HELO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<{rcpt}>\r\n"),
        );
        assert!(seen.out.contains(expected), "{rcpt}\n got: {}", seen.out);
    }
    let seen = run(
        ListenerKind::Smtp,
        "HELO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<postmaster>\r\n",
    );
    assert_eq!(seen.recipients, ["postmaster@example.org"]);
}

#[test]
fn trusted_clients_may_relay() {
    let mut c = cfg(ListenerKind::Smtp);
    c.trusted_client = true;
    let mut s = Session::new(c, None);
    let seen = drive(
        &mut s,
        &[b"HELO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<bob@elsewhere.test>\r\n"],
    );
    assert!(
        seen.out.ends_with("250 2.1.5 Recipient OK\r\n"),
        "{}",
        seen.out
    );
}

#[test]
fn too_many_recipients_get_452_each_and_the_rest_go_through() {
    let seen = run(
        ListenerKind::Smtp,
        "HELO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\nRCPT TO:<d@example.org>\r\nRCPT TO:<e@example.org>\r\nDATA\r\nx\r\n.\r\n",
    );
    assert_eq!(
        codes(&seen.out),
        [
            "250", "250", "250", "250", "250", "452", "452", "354", "250"
        ]
    );
    assert_eq!(seen.recipients.len(), 3);
}

#[test]
fn plugin_refusals_reach_the_client() {
    let seen = run(
        ListenerKind::Smtp,
        "HELO c\r\nMAIL FROM:<reject@x.test>\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<reject@example.org>\r\nRCPT TO:<ok@example.org>\r\n",
    );
    assert_eq!(codes(&seen.out), ["250", "550", "250", "550", "250"]);
    assert!(seen.out.contains("550 5.7.1 sender refused by plugin"));
    assert!(seen.out.contains("550 5.1.1 no such user"));
}

#[test]
fn a_421_from_a_plugin_closes_the_session() {
    let seen = run(
        ListenerKind::Smtp,
        "HELO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<bye@example.org>\r\nRCPT TO:<ok@example.org>\r\n",
    );
    assert_eq!(codes(&seen.out), ["250", "250", "421"]);
    assert!(seen.closed, "421 means closing the channel");
    assert_eq!(
        seen.recipients,
        ["bye@example.org"],
        "nothing is read after it"
    );
}

#[test]
fn data_size_is_enforced_while_receiving_and_sync_is_kept() {
    let big = "x".repeat(3000);
    let seen = run(
        ListenerKind::Smtp,
        &format!(
            "HELO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n{big}\r\n.\r\nNOOP\r\n"
        ),
    );
    assert_eq!(codes(&seen.out), ["250", "250", "250", "354", "552", "250"]);
    assert!(seen.messages.is_empty());
}

#[test]
fn smuggling_variants_never_end_or_split_a_message() {
    // Only <CRLF>.<CRLF> ends DATA: bare-LF and bare-CR "ends" are message content.
    for trick in ["\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n", "\r.\r\n"] {
        let input = format!(
            "HELO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nfirst{trick}MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nsmuggled\r\n.\r\n"
        );
        let seen = run(ListenerKind::Smtp, &input);
        assert_eq!(seen.messages.len(), 1, "{trick:?}: {}", seen.out);
        assert_eq!(seen.senders, ["a@x.test"], "{trick:?}");
        let m = String::from_utf8(seen.messages[0].clone()).unwrap();
        assert!(
            m.contains("MAIL FROM:<evil@x.test>\r\n"),
            "{trick:?}: {m:?}"
        );
        assert!(
            !m.contains('\n') || m.split("\r\n").all(|l| !l.contains(['\r', '\n'])),
            "bare line ending stored: {m:?}"
        );
    }
}

#[test]
fn bare_line_endings_are_normalised() {
    assert_eq!(
        normalise_line_endings(b"a\nb\rc\r\n".to_vec()),
        b"a\r\nb\r\nc\r\n"
    );
    assert_eq!(normalise_line_endings(b"a\r\n".to_vec()), b"a\r\n");
}

#[test]
fn bdat_chunks_and_size() {
    let seen = run(
        ListenerKind::Smtp,
        "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@example.org>\r\nBDAT 5\r\nhelloBDAT 7 LAST\r\n world\n",
    );
    assert_eq!(codes(&seen.out), ["250", "250", "250", "250", "250"]);
    assert_eq!(seen.messages, [b"hello world\r\n".to_vec()]);
    assert!(ehlo_has(&seen.out, "CHUNKING"));

    let seen = run(ListenerKind::Smtp, "EHLO c\r\nBDAT 3 LAST\r\nabcNOOP\r\n");
    assert_eq!(codes(&seen.out), ["250", "503", "250"], "{}", seen.out);
}

#[test]
fn over_long_lines_are_refused_without_losing_sync() {
    // In one read or across reads, the line-length cap refuses it before the grammar sees it.
    let long = "A".repeat(10_000);
    let seen = run(ListenerKind::Smtp, &format!("HELO {long}\r\nNOOP\r\n"));
    assert_eq!(codes(&seen.out), ["500", "250"]);
    let first = format!("HELO {}", &long[..6000]);
    let second = format!("{}\r\nNOOP\r\n", &long[6000..]);
    let mut s = Session::new(cfg(ListenerKind::Smtp), None);
    let seen = drive(&mut s, &[first.as_bytes(), second.as_bytes()]);
    assert!(
        seen.out.starts_with("500 5.5.2 Line too long\r\n"),
        "{}",
        seen.out
    );
    assert!(seen.out.ends_with("250 2.0.0 OK\r\n"), "{}", seen.out);
}

#[test]
fn garbage_and_nul_bytes_get_errors_then_a_disconnect() {
    let mut c = cfg(ListenerKind::Smtp);
    c.max_errors = 3;
    let mut s = Session::new(c, None);
    let seen = drive(
        &mut s,
        &[b"\x00\x01\x02\r\n\xff\xfe\r\nHELO \x00\r\nNOOP\r\n"],
    );
    assert!(seen.closed);
    assert!(
        seen.out
            .ends_with("421 4.7.0 Too many errors, closing connection\r\n"),
        "{}",
        seen.out
    );
    assert!(!seen.out.contains("250 2.0.0 OK"));
}

#[test]
fn starttls_drops_pipelined_commands_and_resets_the_session() {
    let mut s = Session::new(cfg(ListenerKind::Smtp), None);
    let seen = drive(
        &mut s,
        &[
            b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<injected@x.test>\r\n",
            b"MAIL FROM:<a@x.test>\r\nEHLO c\r\nMAIL FROM:<a@x.test>\r\n",
        ],
    );
    assert!(seen.tls_started);
    assert!(
        seen.senders.iter().all(|s| s != "injected@x.test"),
        "{seen:?}"
    );
    let after = seen.out.split("<TLS>\r\n").nth(1).unwrap();
    // No EHLO state survives TLS: MAIL before a new EHLO is out of sequence.
    assert!(
        after.starts_with("503 5.5.1 Send HELO or EHLO first\r\n"),
        "{after}"
    );
    assert!(!ehlo_has(after, "STARTTLS"), "{after}");
    assert_eq!(s.tls().map(|t| t.version.as_str()), Some("TLSv1.3"));
}

fn plain(user: &str, pw: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pw}"))
}

#[test]
fn submission_requires_tls_then_auth() {
    let seen = run(
        ListenerKind::Submission,
        "EHLO c\r\nMAIL FROM:<alice@example.org>\r\n",
    );
    assert!(
        seen.out
            .contains("530 5.7.0 Must issue a STARTTLS command first")
    );

    let tls = Some(TlsParams {
        version: "TLSv1.3".into(),
        cipher: "x".into(),
    });
    let mut s = Session::new(cfg(ListenerKind::Submission), tls.clone());
    let seen = drive(&mut s, &[b"EHLO c\r\nMAIL FROM:<alice@example.org>\r\n"]);
    assert!(ehlo_has(&seen.out, "AUTH PLAIN LOGIN"));
    assert!(seen.out.contains("530 5.7.0 Authentication required"));

    let mut s = Session::new(cfg(ListenerKind::Submission), tls);
    let input = format!(
        "EHLO c\r\nAUTH PLAIN {}\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<anyone@elsewhere.test>\r\nMAIL FROM:<x@y>\r\n",
        plain("alice", "good")
    );
    let seen = drive(&mut s, &[input.as_bytes()]);
    assert!(
        seen.out.contains("235 2.7.0 Authentication successful"),
        "{}",
        seen.out
    );
    assert!(
        seen.out.contains("250 2.1.5"),
        "authenticated users may relay: {}",
        seen.out
    );
    assert_eq!(s.auth_user(), Some("alice"));
}

#[test]
fn auth_login_and_failures_then_disconnect() {
    let tls = Some(TlsParams {
        version: "TLSv1.2".into(),
        cipher: "x".into(),
    });
    let mut s = Session::new(cfg(ListenerKind::Smtp), tls);
    let b = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
    let input = format!(
        "EHLO c\r\nAUTH LOGIN\r\n{}\r\n{}\r\nAUTH PLAIN {}\r\nAUTH PLAIN\r\n{}\r\nNOOP\r\n",
        b("alice"),
        b("bad"),
        plain("alice", "worse"),
        plain("alice", "nope")
    );
    let seen = drive(&mut s, &[input.as_bytes()]);
    assert!(
        seen.out
            .contains("334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n535 5.7.8"),
        "{}",
        seen.out
    );
    assert!(
        seen.out
            .ends_with("421 4.7.0 Too many authentication failures, closing\r\n"),
        "{}",
        seen.out
    );
    assert!(seen.closed);
    assert_eq!(s.auth_failures(), 3);
}

#[test]
fn authenticated_users_send_only_as_their_addresses() {
    let tls = Some(TlsParams {
        version: "TLSv1.3".into(),
        cipher: "x".into(),
    });
    let mut s = Session::new(cfg(ListenerKind::Submission), tls);
    let input = format!(
        "EHLO c\r\nAUTH PLAIN {}\r\nMAIL FROM:<ceo@example.org>\r\nMAIL FROM:<>\r\n",
        plain("alice", "good")
    );
    let seen = drive(&mut s, &[input.as_bytes()]);
    assert!(
        seen.out
            .contains("553 5.7.1 Sender address not owned by user alice"),
        "{}",
        seen.out
    );
    assert!(
        seen.out.ends_with("250 2.1.0 Sender OK\r\n"),
        "{}",
        seen.out
    );
}

#[test]
fn dsn_and_utf8_parameters_are_kept() {
    let seen = run(
        ListenerKind::Smtp,
        "EHLO c\r\nMAIL FROM:<a@x.test> RET=HDRS ENVID=abc123 SMTPUTF8\r\nRCPT TO:<b@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@example.org\r\n",
    );
    assert_eq!(codes(&seen.out), ["250", "250", "250"], "{}", seen.out);
    let mut s = Session::new(cfg(ListenerKind::Smtp), None);
    s.receive(b"EHLO c\r\nMAIL FROM:<a@x.test> RET=HDRS ENVID=abc123 SMTPUTF8\r\nRCPT TO:<b@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@example.org\r\n");
    let Step::Mail(sender) = s.step() else {
        panic!("expected MAIL")
    };
    let kw: Vec<(&str, Option<&str>)> = sender
        .params
        .iter()
        .map(|p| (p.keyword.as_str(), p.value.as_deref()))
        .collect();
    assert_eq!(
        kw,
        [
            ("SMTPUTF8", None),
            ("RET", Some("HDRS")),
            ("ENVID", Some("abc123"))
        ]
    );
    s.mail_decided(sender, &Decision::Continue);
    let Step::Rcpt(r) = s.step() else {
        panic!("expected RCPT")
    };
    let kw: Vec<(&str, Option<&str>)> = r
        .params
        .iter()
        .map(|p| (p.keyword.as_str(), p.value.as_deref()))
        .collect();
    assert_eq!(
        kw,
        [
            ("NOTIFY", Some("SUCCESS,FAILURE")),
            ("ORCPT", Some("rfc822;b@example.org"))
        ]
    );
}

#[test]
fn shutting_down_tells_the_client_to_come_back() {
    let mut s = Session::new(cfg(ListenerKind::Smtp), None);
    s.greet();
    let seen = drive(&mut s, &[b"EHLO c.example\r\n"]);
    assert!(!s.in_transaction());
    assert_eq!(codes(&seen.out), ["220", "250"]);
    let seen = drive(&mut s, &[b"MAIL FROM:<a@example.net>\r\n"]);
    assert!(s.in_transaction(), "{}", seen.out);
    s.shut_down();
    let out = String::from_utf8_lossy(&s.take_output()).into_owned();
    assert!(
        out.starts_with("421 4.3.2 mx.test Service shutting down"),
        "{out}"
    );
    assert!(matches!(s.step(), Step::Close));
}

#[test]
fn a_syntax_error_never_swallows_the_next_pipelined_command() {
    // `smtp-proto` alone answered `MAIL FROM` (no colon) only after reading the next line,
    // which it then dropped: NOOP got no reply in one read, and one in two reads.
    let input = "EHLO c\r\nMAIL FROM\r\nNOOP\r\nMAIL FROM\n.\r\nNOOP\r\n";
    let whole = run(ListenerKind::Smtp, input);
    assert_eq!(
        codes(&whole.out)[1..],
        ["501", "250", "501", "500", "250"],
        "{}",
        whole.out
    );
    let bytes: Vec<[u8; 1]> = input.bytes().map(|b| [b]).collect();
    let chunks: Vec<&[u8]> = bytes.iter().map(|b| &b[..]).collect();
    let mut s = Session::new(cfg(ListenerKind::Smtp), None);
    let split = drive(&mut s, &chunks);
    assert_eq!(split.out, whole.out);
}

#[test]
fn addresses_and_parameters_with_control_characters_are_refused() {
    let seen = run(
        ListenerKind::Smtp,
        "EHLO c\r\nMAIL FROM:<\"a\0b\"@example.com>\r\nMAIL FROM:<a@example.com> ENVID=x+0D+0Ay\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<\"b\x01\"@example.org>\r\nQUIT\r\n",
    );
    assert_eq!(
        codes(&seen.out)[1..],
        ["501", "501", "250", "501", "221"],
        "{}",
        seen.out
    );
    assert!(
        seen.out.contains("501 5.1.7 Bad sender address syntax"),
        "{}",
        seen.out
    );
    assert!(
        seen.out.contains("501 5.5.4 Invalid ENVID parameter"),
        "{}",
        seen.out
    );
    assert!(
        seen.out.contains("501 5.1.3 Bad recipient address syntax"),
        "{}",
        seen.out
    );
    assert!(seen.senders == ["a@example.com"], "{:?}", seen.senders);
}

#[test]
fn a_bdat_chunk_past_the_limit_is_refused_on_its_announced_size() {
    // Within one message's size: read and dropped, then refused; the session goes on.
    let seen = run(
        ListenerKind::Smtp,
        &format!(
            "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@example.org>\r\nBDAT 600\r\n{}BDAT 600 LAST\r\n{}NOOP\r\n",
            "x".repeat(600),
            "y".repeat(600)
        ),
    );
    assert_eq!(codes(&seen.out), ["250", "250", "250", "250", "552", "250"]);
    assert!(seen.messages.is_empty());
    // Past a whole message: refused and closed at once, without waiting for the bytes.
    let mut s = Session::new(cfg(ListenerKind::Smtp), None);
    let seen = drive(
        &mut s,
        &[b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@example.org>\r\nBDAT 100000000000 LAST\r\n"],
    );
    assert_eq!(codes(&seen.out), ["250", "250", "250", "552", "421"]);
    assert!(seen.closed);
}

#[test]
fn nothing_buffered_survives_the_end_of_a_transaction() {
    let fresh = "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@example.org>\r\nBDAT 5 LAST\r\nFRESH";
    let stale = "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@example.org>\r\nBDAT 5\r\nSTALE";
    for reset in ["RSET\r\n", "EHLO again\r\n", "HELO again\r\n"] {
        let seen = run(
            ListenerKind::Smtp,
            &format!("EHLO c\r\n{stale}{reset}{fresh}"),
        );
        assert_eq!(
            seen.messages,
            [b"FRESH".to_vec()],
            "after {reset:?}: {}",
            seen.out
        );
    }
    // STARTTLS mid-transaction is refused; after RSET it starts afresh inside TLS.
    let seen = run(
        ListenerKind::Smtp,
        &format!("EHLO c\r\n{stale}STARTTLS\r\nRSET\r\nSTARTTLS\r\n"),
    );
    assert!(
        seen.out
            .contains("503 5.5.1 STARTTLS not allowed during a transaction"),
        "{}",
        seen.out
    );
    assert!(seen.tls_started);
    let mut s = Session::new(cfg(ListenerKind::Smtp), None);
    let seen = drive(
        &mut s,
        &[
            format!("EHLO c\r\n{stale}RSET\r\nSTARTTLS\r\n").as_bytes(),
            format!("EHLO c\r\n{fresh}").as_bytes(),
        ],
    );
    assert_eq!(seen.messages, [b"FRESH".to_vec()], "{}", seen.out);
}

#[test]
fn starttls_takes_no_parameters() {
    let seen = run(ListenerKind::Smtp, "EHLO c\r\nSTARTTLS now\r\nNOOP\r\n");
    assert_eq!(codes(&seen.out), ["250", "501", "250"]);
    assert!(!seen.tls_started);
}

#[test]
fn an_endless_sasl_line_is_refused_once_past_its_limit() {
    let mut c = cfg(ListenerKind::Smtp);
    c.plaintext_auth = true;
    let mut s = Session::new(c, None);
    let block = vec![b'A'; 8192];
    let mut chunks: Vec<&[u8]> = vec![b"EHLO c\r\nAUTH LOGIN\r\n"];
    chunks.extend(std::iter::repeat_n(block.as_slice(), 64));
    chunks.push(b"\r\nNOOP\r\n");
    let seen = drive(&mut s, &chunks);
    assert_eq!(
        codes(&seen.out),
        ["250", "334", "500", "250"],
        "{}",
        seen.out
    );
    assert!(seen.out.contains("500 5.5.6"), "{}", seen.out);
    // Never more than one limit's worth of the line was kept.
    assert!(s.input.len() <= MAX_SASL_LINE + 8192, "{}", s.input.len());
}

#[test]
fn completed_counts_whole_commands_not_reads() {
    let mut s = Session::new(cfg(ListenerKind::Smtp), None);
    s.greet();
    for b in b"NOO" {
        s.receive(&[*b]);
        assert_eq!(s.step(), Step::Read);
    }
    assert_eq!(s.completed(), 0, "a partial command is no progress");
    s.receive(b"P\r\n");
    assert_eq!(s.step(), Step::Read);
    assert_eq!(s.completed(), 1);
}

#[test]
fn the_session_records_each_refusal_of_its_own_with_stage_reason_and_envelope() {
    let mut s = Session::new(cfg(ListenerKind::Smtp), None);
    s.greet();
    drive(
        &mut s,
        &[b"MAIL FROM:<a@x.test>\r\nEHLO c\r\nMAIL FROM:<a@x.test> SIZE=5000\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<ok@example.org>\r\nRCPT TO:<x@elsewhere.test>\r\nRCPT TO:<reject@example.org>\r\nRSET\r\nAUTH PLAIN\r\nSTARTTLS now\r\n"],
    );
    let refused = s.take_refused();
    let got: Vec<String> = refused
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {:?} {} {:?}",
                r.stage,
                r.reason,
                r.reply.code,
                r.sender,
                r.recipients.len(),
                r.recipient
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            "MAIL protocol 503 None 0 None",
            "MAIL size 552 None 0 None",
            "RCPT relay-denied 550 Some(\"a@x.test\") 1 Some(\"x@elsewhere.test\")",
            // The plugin's refusal of reject@ is the inbound core's to log, not the session's.
            "AUTH starttls-required 538 None 0 None",
            "STARTTLS protocol 501 None 0 None",
        ]
    );
    assert!(s.take_refused().is_empty(), "taken once");
}
