//! Session tests of AUTH: TLS first, PLAIN and LOGIN, failures, and the bound on a SASL line.

use super::*;

#[test]
fn submission_requires_tls_then_auth() {
    let seen = run(
        ListenerKind::Submission,
        "EHLO c\r\nMAIL FROM:<alice@example.org>\r\n",
    );
    seen.says("530 5.7.0 Must issue a STARTTLS command first");

    let mut s = Session::new(cfg(ListenerKind::Submission), Some(tls13()));
    let seen = drive(&mut s, &[b"EHLO c\r\nMAIL FROM:<alice@example.org>\r\n"]);
    assert!(ehlo_has(&seen.out, "AUTH PLAIN LOGIN"));
    seen.says("530 5.7.0 Authentication required");

    let (s, seen) = as_alice(
        "MAIL FROM:<alice@example.org>\r\nRCPT TO:<anyone@elsewhere.test>\r\nMAIL FROM:<x@y>\r\n",
    );
    seen.says("235 2.7.0 Authentication successful");
    seen.says_because("250 2.1.5", "authenticated users may relay");
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
    seen.says("334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n535 5.7.8");
    seen.ends_with("421 4.7.0 Too many authentication failures, closing\r\n");
    assert!(seen.closed);
    assert_eq!(s.auth_failures(), 3);
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
    seen.says("500 5.5.6");
    // Never more than one limit's worth of the line was kept.
    assert!(s.input.len() <= MAX_SASL_LINE + 8192, "{}", s.input.len());
}
