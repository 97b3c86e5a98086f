//! Harnesses for the `cargo fuzz` targets in `host/fuzz/` and for their regression tests.
//!
//! Each harness takes arbitrary bytes, drives one parser or state machine of the host with
//! them, and panics only when an invariant is broken — a crash in a harness is a bug in Sluice
//! (or in a harness assumption worth writing down). They live in the library, not in the fuzz
//! crate, so that the inputs the fuzzer found interesting run in the normal test suite
//! (`tests/fuzz_regressions.rs`) on stable Rust, without the fuzzer.

use std::path::Path;

use base64::Engine as _;

use crate::config::{Config, ListenerKind};
use crate::delivery::bounce;
use crate::envelope::Decision;
use crate::envelope::TlsParams;
use crate::pipeline;
use crate::plugin::bindings::types::FailedRecipient;
use crate::smtp::reply::Reply;
use crate::smtp::session::{self, AuthOutcome, Session, SessionConfig, Step, auth};

/// A harness: arbitrary bytes in, a panic when an invariant breaks.
pub type Harness = fn(&[u8]);

/// The fuzz targets, by the name of their file in `host/fuzz/fuzz_targets/`.
pub const TARGETS: &[(&str, Harness)] = &[
    ("session", session),
    ("session_tokens", session_tokens),
    ("transaction_isolation", transaction_isolation),
    ("data", data),
    ("auth", auth_decoding),
    ("config", config),
    ("message", message),
    ("milter", milter),
];

/// Largest message the fuzzed sessions accept (small, so the 552 paths are reached).
const MAX_MESSAGE: usize = 2048;

fn session_config(flags: u8) -> SessionConfig {
    SessionConfig {
        hostname: "mx.test".into(),
        listener: if flags & 1 == 0 {
            ListenerKind::Smtp
        } else {
            ListenerKind::Submission
        },
        tls_available: flags & 2 == 0,
        max_message_size: MAX_MESSAGE,
        max_recipients: 3,
        max_errors: 10,
        max_auth_failures: 3,
        local_domains: vec!["example.org".into()],
        trusted_client: flags & 4 != 0,
        plaintext_auth: flags & 8 != 0,
        senders: Default::default(),
    }
}

/// What a fuzzed dialogue produced.
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    out: Vec<u8>,
    messages: Vec<Vec<u8>>,
    closed: bool,
}

/// A verdict for an address: with flag 32, derived from its bytes so the fuzzer reaches every
/// branch; otherwise "continue".
fn verdict(flags: u8, address: &str) -> Decision {
    if flags & 32 == 0 {
        return Decision::Continue;
    }
    match address.bytes().map(u32::from).sum::<u32>() % 7 {
        0 => Decision::Reject {
            reply: Reply::new(550, "5.7.1", "refused"),
        },
        1 => Decision::Tempfail {
            reply: Reply::new(451, "4.7.1", "later"),
        },
        2 => Decision::Discard,
        3 => Decision::Quarantine {
            reason: "fuzz".into(),
        },
        4 if address.starts_with("bye") => Decision::Tempfail {
            reply: Reply::new(421, "4.7.0", "closing"),
        },
        _ => Decision::Continue,
    }
}

/// No CR, LF or NUL: what the session hands out ends up in logs, spool files and DSN fields.
fn assert_clean(what: &str, text: &str) {
    assert!(
        !text.contains(['\r', '\n', '\0']),
        "{what} carries a line break or NUL: {text:?}"
    );
}

/// [`assert_clean`] for an envelope address and each of its parameters.
fn assert_clean_address(what: &str, address: &str, params: &[crate::envelope::Param]) {
    assert_clean(what, address);
    for p in params {
        let value = p.value.as_deref().unwrap_or("");
        assert_clean(
            &format!("{what}'s parameter"),
            &format!("{}={value}", p.keyword),
        );
    }
}

/// Drives a session over `chunks` (one read each), answering every step as a server would,
/// and checks the invariants of the dialogue on the way.
fn drive(flags: u8, chunks: &[&[u8]]) -> Outcome {
    let tls = (flags & 16 != 0).then(|| TlsParams {
        version: "TLSv1.3".into(),
        cipher: "TLS13_AES_128_GCM_SHA256".into(),
    });
    let mut s = Session::new(session_config(flags), tls);
    s.greet();
    let mut outcome = Outcome::default();
    let mut chunks = chunks.iter();
    // Every step either consumes input or is answered; a session that asks for the same
    // thing forever without reading is stuck.
    let mut budget = 100_000usize;
    loop {
        budget = budget.checked_sub(1).expect("session makes no progress");
        match s.step() {
            Step::Read => {
                outcome.out.extend(s.take_output());
                match chunks.next() {
                    Some(c) => s.receive(c),
                    None => break,
                }
            }
            Step::Close => {
                outcome.closed = true;
                assert_eq!(s.step(), Step::Close, "a closed session reopened");
                break;
            }
            Step::Mail(sender) => {
                assert_clean_address("sender", &sender.address, &sender.params);
                let d = verdict(flags, &sender.address);
                s.mail_decided(sender, &d);
            }
            Step::Rcpt(rcpt) => {
                assert!(s.envelope().is_some(), "RCPT step outside a transaction");
                assert_clean_address("recipient", &rcpt.address, &rcpt.params);
                let d = verdict(flags, &rcpt.address);
                s.rcpt_decided(rcpt, &d);
            }
            Step::Message(raw) => {
                let txn = s.envelope().expect("message without sender");
                assert!(!txn.recipients.is_empty(), "message without recipients");
                assert!(txn.recipients.len() <= 3, "recipient limit not enforced");
                assert!(raw.len() <= MAX_MESSAGE, "size limit not enforced");
                assert_eq!(
                    session::normalise_line_endings(raw.clone()),
                    raw,
                    "message has bare line endings"
                );
                outcome.messages.push(raw);
                s.message_done(&Reply::new(250, "2.0.0", "queued"));
            }
            Step::Auth { user, password } => {
                assert!(!user.is_empty(), "empty AUTH user");
                s.auth_decided(
                    user,
                    if password == "good" {
                        AuthOutcome::Accepted
                    } else {
                        AuthOutcome::Refused
                    },
                );
            }
            Step::StartTls => {
                assert!(s.tls().is_none(), "STARTTLS inside TLS");
                s.tls_started(TlsParams {
                    version: "TLSv1.3".into(),
                    cipher: "TLS13_AES_128_GCM_SHA256".into(),
                });
            }
        }
    }
    outcome.out.extend(s.take_output());
    assert_replies(&outcome.out);
    outcome
}

/// Every reply line is `DDD` + space or hyphen + text + CRLF, with a code from 2xx to 5xx.
fn assert_replies(out: &[u8]) {
    assert!(
        out.is_empty() || out.ends_with(b"\r\n"),
        "unterminated reply"
    );
    for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let line = line.strip_suffix(b"\r").expect("bare LF in a reply");
        assert!(!line.contains(&b'\r'), "bare CR in a reply");
        assert!(
            line.len() >= 4
                && (b'2'..=b'5').contains(&line[0])
                && line[1..3].iter().all(u8::is_ascii_digit)
                && (line[3] == b' ' || line[3] == b'-'),
            "malformed reply line {:?}",
            String::from_utf8_lossy(line)
        );
    }
}

/// Splits `data` into reads at the bytes after which the fuzzer put a `0xff` (a byte that is
/// never valid in SMTP commands, so the split markers cost the fuzzer little).
fn reads(data: &[u8]) -> Vec<&[u8]> {
    data.split(|&b| b == 0xff).collect()
}

/// Arbitrary bytes as a client's side of the dialogue. The first byte picks the listener
/// flavour (submission, TLS available or already on, trusted client, plaintext AUTH).
pub fn session(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    drive(flags, &reads(rest));
}

/// The SMTP alphabet: each input byte picks a token, so the fuzzer composes whole dialogues
/// (pipelined commands, DATA with dot-stuffing, BDAT, AUTH exchanges) instead of guessing
/// keywords byte by byte.
const TOKENS: &[&[u8]] = &[
    b"EHLO client.test\r\n",
    b"HELO client.test\r\n",
    b"MAIL FROM:<alice@example.com>\r\n",
    b"MAIL FROM:<> RET=FULL ENVID=QQ+2B1\r\n",
    b"MAIL FROM:<bye@x.test> SIZE=100 BODY=8BITMIME SMTPUTF8\r\n",
    b"RCPT TO:<bob@example.org>\r\n",
    b"RCPT TO:<carol@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;carol@example.org\r\n",
    b"RCPT TO:<postmaster>\r\n",
    b"RCPT TO:<x@elsewhere.test>\r\n",
    b"RCPT TO:<\"a b\"@example.org>\r\n",
    b"DATA\r\n",
    b"Subject: hi\r\n",
    b"\r\n",
    b"body line\r\n",
    b"..dot-stuffed\r\n",
    b".\r\n",
    b"\n.\n",
    b"\r.\r",
    b"BDAT 5\r\nhello",
    b"BDAT 0 LAST\r\n",
    b"BDAT 3 LAST\r\n.\r\n",
    b"BDAT 99999999999\r\n",
    b"AUTH PLAIN AGFsaWNlAGdvb2Q=\r\n",
    b"AUTH PLAIN\r\n",
    b"AGFsaWNlAGJhZA==\r\n",
    b"AUTH LOGIN\r\n",
    b"YWxpY2U=\r\n",
    b"Z29vZA==\r\n",
    b"*\r\n",
    b"STARTTLS\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"VRFY bob\r\n",
    b"HELP\r\n",
    b"QUIT\r\n",
    b"X",
    b"\r\n\r\n",
    b"\0",
    b"\xc3\xa9",
];

/// [`session`] over inputs composed of [`TOKENS`]. Token indexes ≥ the token count split
/// the input into reads there.
pub fn session_tokens(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut chunks: Vec<Vec<u8>> = vec![Vec::new()];
    for &b in rest {
        match TOKENS.get(usize::from(b)) {
            Some(t) => chunks.last_mut().expect("never empty").extend_from_slice(t),
            None => chunks.push(Vec::new()),
        }
    }
    let chunks: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
    drive(flags, &chunks);
}

/// What may come between a buffered BDAT chunk and the command that ends its transaction:
/// AUTH exchanges (complete, cancelled, half-done), STARTTLS, over-long lines, a refused
/// BDAT, recipients. None of these completes a message.
const MIDDLE: &[&[u8]] = &[
    b"BDAT 5\r\nSTALE",
    b"BDAT 99999\r\n",
    b"AUTH LOGIN\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH PLAIN AGFsaWNlAGdvb2Q=\r\n",
    b"YWxpY2U=\r\n",
    b"*\r\n",
    b"STARTTLS\r\n",
    b"STARTTLS x\r\n",
    b"NOOP\r\n",
    b"RCPT TO:<carol@example.org>\r\n",
    b"STALE",
    b"\r\n",
];

/// The commands that end a transaction.
const RESETS: &[&[u8]] = &[b"RSET\r\n", b"EHLO again.test\r\n", b"HELO again.test\r\n"];

/// Nothing of one transaction survives into the next: a BDAT chunk `STALE` is buffered, the
/// fuzzer picks what follows it from [`MIDDLE`] and the command that ends the transaction from
/// [`RESETS`] (second byte), then a fresh transaction sends `FRESH` as its last chunk. No
/// message may contain `STALE`, however the input is split into reads (middle bytes past
/// the token count split it).
pub fn transaction_isolation(data: &[u8]) {
    let [flags, reset, rest @ ..] = data else {
        return;
    };
    let mut chunks: Vec<Vec<u8>> = vec![
        b"EHLO client.test\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<bob@example.org>\r\nBDAT 5\r\nSTALE".to_vec(),
    ];
    for &b in rest {
        match MIDDLE.get(usize::from(b)) {
            Some(t) => chunks.last_mut().expect("never empty").extend_from_slice(t),
            None => chunks.push(Vec::new()),
        }
    }
    let last = chunks.last_mut().expect("never empty");
    last.extend_from_slice(b"\r\n");
    last.extend_from_slice(RESETS[usize::from(*reset) % RESETS.len()]);
    last.extend_from_slice(
        b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<bob@example.org>\r\nBDAT 5 LAST\r\nFRESH",
    );
    let chunks: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
    // Without AUTH verdicts that close the session early: flags 32 (verdicts from the
    // addresses) stays, so refused recipients are covered too.
    let outcome = drive(*flags, &chunks);
    for m in &outcome.messages {
        assert!(
            find(m, b"STALE").is_none(),
            "bytes of an ended transaction reached a message: {:?}",
            String::from_utf8_lossy(m)
        );
    }
}

/// Decodes milter packets from `chunks` read one after another: the commands and the first
/// error, if any.
fn milter_commands(
    chunks: &[&[u8]],
) -> (
    Vec<crate::milter::protocol::Command>,
    Option<crate::milter::protocol::ProtocolError>,
) {
    let mut d = crate::milter::protocol::Decoder::default();
    let mut out = Vec::new();
    for c in chunks {
        d.receive(c);
        loop {
            match d.next_command() {
                Ok(Some(cmd)) => out.push(cmd),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

/// The milter decoder: arbitrary bytes from an MTA (the first byte sets a read size). It
/// never panics, and the commands and error do not depend on how the bytes were split.
pub fn milter(data: &[u8]) {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let whole = milter_commands(&[bytes]);
    let pieces: Vec<&[u8]> = bytes.chunks(usize::from(split % 16) + 1).collect();
    assert_eq!(
        whole,
        milter_commands(&pieces),
        "the commands depend on how the input was split"
    );
}

/// The DATA receiver: `data` is the message as sent after `DATA`. Whatever the split into
/// reads, the dialogue must come out the same; and when it ends in `CRLF.CRLF`, the stored
/// message must equal a plain reading of RFC 5321 §4.5.2 (dot-unstuffing up to the first
/// `CRLF.CRLF`), with other line endings normalised.
pub fn data(data: &[u8]) {
    let Some((&split, body)) = data.split_first() else {
        return;
    };
    let head: &[u8] = b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n";
    let whole: Vec<u8> = [head, body].concat();
    let one = drive(0, &[&whole]);
    // The same bytes in reads of `split + 1` bytes each.
    let step = usize::from(split) + 1;
    let pieces: Vec<&[u8]> = whole.chunks(step).collect();
    let many = drive(0, &pieces);
    assert_eq!(one, many, "the dialogue depends on how the input was split");
    if let Some(end) = find(&[b"\r\n", body].concat(), b"\r\n.\r\n") {
        // `end` is in the CRLF-prefixed body, so body[..end] is the message with its last CRLF.
        let expected = session::normalise_line_endings(unstuff(&body[..end]));
        if expected.len() <= MAX_MESSAGE {
            assert_eq!(
                one.messages.first(),
                Some(&expected),
                "stored message differs from the dot-unstuffed input"
            );
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// RFC 5321 §4.5.2: a line beginning with a period loses that period.
fn unstuff(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for (i, line) in text.split_inclusive(|&b| b == b'\n').enumerate() {
        // A line starts after CRLF only: bare LF does not begin a line in SMTP.
        let starts_line = i == 0 || out.ends_with(b"\r\n");
        match line.strip_prefix(b".") {
            Some(rest) if starts_line => out.extend_from_slice(rest),
            _ => out.extend_from_slice(line),
        }
    }
    out
}

/// SASL decoding: never panics; what decodes carries no NUL in the user name, and PLAIN
/// round-trips.
pub fn auth_decoding(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok((user, _password)) = auth::decode_plain(&text) {
        assert!(!user.is_empty() && !user.contains('\0'));
    }
    let _ = auth::decode_text(&text);
    // Round trip: any user and password without NUL encode and decode to themselves.
    let (user, password) = text.split_once('\u{1}').unwrap_or((&text, ""));
    if !user.is_empty() && !user.contains('\0') && !password.contains('\0') {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        assert_eq!(
            auth::decode_plain(&encoded),
            Ok((user.to_string(), password.to_string()))
        );
    }
}

/// The configuration parser and validator: any text gives a config or an error, never a
/// panic; a valid config answers the questions the server asks of it.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = Config::parse(text) else {
        return;
    };
    if cfg.validate().is_ok() {
        let _ = cfg.effective_listeners();
        let _ = cfg.route_for("example.org");
        let _ = cfg.route_for("");
        for name in cfg.plugin.keys() {
            let _ = cfg.plugin_settings(name);
        }
    }
}

/// The message paths of the host: header parsing for plugins, the header edits before
/// spooling, spool files read back, and the DSN built from them.
pub fn message(data: &[u8]) {
    let headers = pipeline::parse_headers(data);
    for h in &headers {
        assert!(
            !h.value.contains(['\r', '\n']),
            "unfolded value keeps a line break"
        );
    }
    // Remove the first parsed field and prepend one: the body is untouched, the field gone.
    let remove: Vec<String> = headers.iter().take(1).map(|h| h.name.clone()).collect();
    let out = crate::inbound::message::finalize(data, &["X-Fuzz: 1\r\n".into()], &remove);
    let body: &[u8] = if data.starts_with(b"\r\n") {
        data
    } else {
        find(data, b"\r\n\r\n").map_or(&[], |i| &data[i + 2..])
    };
    assert!(
        out.starts_with(b"X-Fuzz: 1\r\n"),
        "the added field is not first"
    );
    assert!(out.ends_with(body), "the body was changed");
    // Removing forged Authentication-Results keeps the body and every other field.
    let cleaned = crate::inbound::message::remove_auth_results_of(data, "mx.test");
    assert!(cleaned.ends_with(body), "the body was changed");
    assert!(cleaned.len() <= data.len());
    // A spool file is the envelope as one JSON line and the message.
    if let Ok((envelope, original)) = crate::spool::parse_file(Path::new("fuzz.msg"), data) {
        let failures = envelope
            .recipients
            .iter()
            .map(|r| FailedRecipient {
                address: r.address.clone(),
                reply: "550 5.1.1 no such user".into(),
                status: "5.1.1".into(),
                remote_host: Some("mx.remote.test".into()),
            })
            .collect();
        let req = bounce::request(&envelope, headers, failures, "mx.test", false);
        let text = bounce::default_text(&req);
        let dsn = bounce::build(&envelope, &original, &req, &text, bounce::Notice::Failed);
        assert!(
            mail_parser::MessageParser::new().parse(&dsn[..]).is_some(),
            "the DSN does not parse"
        );
    }
}
