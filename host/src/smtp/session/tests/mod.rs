//! The session's table tests, by verb like the session: [`mail`] (MAIL, RCPT), [`transfer`]
//! (DATA, BDAT), [`starttls`], [`auth`]; here the helpers and the dialogue as a whole
//! (pipelining, sequencing, errors, shutdown, refusals recorded). No sockets: a scripted
//! driver answers every step.

use super::*;
use crate::envelope::Decision;
use base64::Engine as _;

mod auth;
mod mail;
mod starttls;
mod transfer;

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

impl Seen {
    /// Asserts that the replies contain `text`.
    #[track_caller]
    fn says(&self, text: &str) {
        assert!(self.out.contains(text), "{:?} not in:\n{}", text, self.out);
    }

    /// Asserts that the replies contain `text`, saying why it matters.
    #[track_caller]
    fn says_because(&self, text: &str, why: &str) {
        assert!(
            self.out.contains(text),
            "{why}: {:?} not in:\n{}",
            text,
            self.out
        );
    }

    /// Asserts that the replies end with `text`.
    #[track_caller]
    fn ends_with(&self, text: &str) {
        assert!(
            self.out.ends_with(text),
            "replies do not end with {:?}:\n{}",
            text,
            self.out
        );
    }
}

/// The TLS parameters of a handshake in these tests.
fn tls13() -> TlsParams {
    TlsParams {
        version: "TLSv1.3".into(),
        cipher: "TLS13_AES_128_GCM_SHA256".into(),
    }
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
            Step::Auth { user, password } => {
                let outcome = match password.as_str() {
                    "good" => AuthOutcome::Accepted,
                    _ => AuthOutcome::Refused,
                };
                session.auth_decided(user, outcome)
            }
            Step::StartTls => {
                seen.tls_started = true;
                seen.out
                    .push_str(&String::from_utf8_lossy(&session.take_output()));
                seen.out.push_str("<TLS>\r\n");
                session.tls_started(tls13());
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

/// A submission session over TLS in which alice signs in (EHLO, AUTH PLAIN) before
/// `commands`.
fn as_alice(commands: &str) -> (Session, Seen) {
    let mut s = Session::new(cfg(ListenerKind::Submission), Some(tls13()));
    let input = format!(
        "EHLO c\r\nAUTH PLAIN {}\r\n{commands}",
        plain("alice", "good")
    );
    let seen = drive(&mut s, &[input.as_bytes()]);
    (s, seen)
}

fn plain(user: &str, pw: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pw}"))
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
    seen.ends_with("250 2.0.0 OK\r\n");
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
    seen.ends_with("421 4.7.0 Too many errors, closing connection\r\n");
    assert!(!seen.out.contains("250 2.0.0 OK"));
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
