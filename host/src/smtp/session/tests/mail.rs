//! Session tests of MAIL and RCPT: relay control, recipient limits, plugin refusals, who may send as whom, parameters.

use super::*;

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
    seen.ends_with("250 2.1.5 Recipient OK\r\n");
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
    seen.says("550 5.7.1 sender refused by plugin");
    seen.says("550 5.1.1 no such user");
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
fn authenticated_users_send_only_as_their_addresses() {
    let (_, seen) = as_alice("MAIL FROM:<ceo@example.org>\r\nMAIL FROM:<>\r\n");
    seen.says("553 5.7.1 Sender address not owned by user alice");
    seen.ends_with("250 2.1.0 Sender OK\r\n");
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
    assert_eq!(
        keywords(&sender.params),
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
    assert_eq!(
        keywords(&r.params),
        [
            ("NOTIFY", Some("SUCCESS,FAILURE")),
            ("ORCPT", Some("rfc822;b@example.org"))
        ]
    );
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
    seen.says("501 5.1.7 Bad sender address syntax");
    seen.says("501 5.5.4 Invalid ENVID parameter");
    seen.says("501 5.1.3 Bad recipient address syntax");
    assert!(seen.senders == ["a@example.com"], "{:?}", seen.senders);
}

/// The parameters as (keyword, value) pairs.
fn keywords(params: &[crate::envelope::Param]) -> Vec<(&str, Option<&str>)> {
    params
        .iter()
        .map(|p| (p.keyword.as_str(), p.value.as_deref()))
        .collect()
}
