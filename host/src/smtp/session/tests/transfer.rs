//! Session tests of DATA and BDAT: size limits, smuggling, line endings, chunking, and nothing kept between transactions.

use super::*;

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
    seen.says("503 5.5.1 STARTTLS not allowed during a transaction");
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
