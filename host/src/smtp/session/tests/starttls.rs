//! Session tests of STARTTLS: what the upgrade drops and resets.

use super::*;

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

#[test]
fn starttls_takes_no_parameters() {
    let seen = run(ListenerKind::Smtp, "EHLO c\r\nSTARTTLS now\r\nNOOP\r\n");
    assert_eq!(codes(&seen.out), ["250", "501", "250"]);
    assert!(!seen.tls_started);
}

#[test]
fn requiretls_is_offered_and_accepted_only_over_tls() {
    // In the clear: not offered, and MAIL FROM with it is refused with 5.7.10.
    let seen = run(
        ListenerKind::Smtp,
        "EHLO c\r\nMAIL FROM:<a@x.test> REQUIRETLS\r\nMAIL FROM:<a@x.test>\r\n",
    );
    assert!(!ehlo_has(&seen.out, "REQUIRETLS"), "{}", seen.out);
    assert!(
        seen.out
            .contains("530 5.7.10 REQUIRETLS needs a TLS session: STARTTLS first\r\n"),
        "{}",
        seen.out
    );
    assert_eq!(seen.senders, ["a@x.test"], "{seen:?}");
    // Over TLS: offered, and the parameter stays with the sender.
    let mut s = Session::new(cfg(ListenerKind::Smtp), None);
    let seen = drive(
        &mut s,
        &[
            b"EHLO c\r\nSTARTTLS\r\n",
            b"EHLO c\r\nMAIL FROM:<a@x.test> REQUIRETLS\r\n",
        ],
    );
    let after = seen.out.split("<TLS>\r\n").nth(1).unwrap();
    assert!(ehlo_has(after, "REQUIRETLS"), "{after}");
    assert!(after.ends_with("250 2.1.0 Sender OK\r\n"), "{after}");
    assert_eq!(seen.senders, ["a@x.test"], "{seen:?}");
}
