//! Sluice as a Postfix milter, end to end: a private Postfix with
//! `smtpd_milters = inet:127.0.0.1:PORT` pointing at Sluice's milter listener, an SMTP client
//! talking to Postfix. Plugin verdicts and edits must reach the client and the delivered mail
//! through Postfix; with the milter gone, Postfix's `milter_default_action` applies.

use std::time::Duration;

use sluice::config::ListenerKind;
use sluice_tests::peers::Postfix;
use sluice_tests::*;

#[tokio::test]
async fn postfix_with_sluice_as_milter_applies_verdicts_and_edits() {
    let s = TestServer::start(
        r#"
[[listener]]
kind = "milter"
address = "127.0.0.1:0"

[plugin.recipient-validation.config]
domains = ["pf.test"]
users = ["bob@pf.test"]

[plugin.tagger.config]
tag = "through-postfix"
score = 0.5
reject_word = "forbidden"
"#,
        &[
            (
                "recipient-validation",
                plugin("bundled", "10-recipient-validation"),
            ),
            ("tagger", plugin("test", "tagger")),
            ("spam-score", plugin("bundled", "20-spam-score")),
        ],
    )
    .await;
    let milter = s
        .listeners
        .iter()
        .find(|(k, _)| *k == ListenerKind::Milter)
        .map(|(_, a)| *a)
        .expect("milter listener");
    let postfix = Postfix::start(&format!(
        "myhostname = pf.test\nvirtual_mailbox_domains = pf.test\nvirtual_mailbox_maps = inline:{{ bob@pf.test=bob/Maildir/ }}\nsmtpd_milters = inet:127.0.0.1:{}\nmilter_default_action = tempfail\nmilter_protocol = 6\n",
        milter.port()
    ));
    let corpus = workspace_root().join("../shared/corpus/spamassassin");
    let script = r#"
import os, smtplib
def send(rcpt, subject, extra=b"", raw=None):
    c = smtplib.SMTP("127.0.0.1", int(os.environ["PORT"]), timeout=30)
    try:
        msg = raw or (b"From: ann@friends.example\r\nTo: bob@pf.test\r\nSubject: " + subject.encode() + b"\r\nMessage-ID: <" + subject.replace(" ", "-").encode() + b"@friends.example>\r\n" + extra + b"\r\nHello Bob.\r\n")
        c.sendmail("ann@friends.example", [rcpt], msg)
        print(subject, "accepted")
    except smtplib.SMTPRecipientsRefused as e:
        code, text = list(e.recipients.values())[0]
        print(subject, "refused-rcpt", code, text.decode())
    except smtplib.SMTPDataError as e:
        print(subject, "refused-data", e.smtp_code, e.smtp_error.decode())
    except smtplib.SMTPResponseException as e:
        print(subject, "refused", e.smtp_code, e.smtp_error.decode())
    finally:
        try:
            c.quit()
        except Exception:
            pass
send("nobody@pf.test", "unknown")
send("bob@pf.test", "clean", b"X-Remove-Me: please\r\n")
send("bob@pf.test", "forbidden words")
raw = open(os.environ["SPAM"], "rb").read().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
send("bob@pf.test", "spam", raw=raw)
"#;
    let out = python(
        script,
        &[
            ("PORT", postfix.smtp.to_string()),
            (
                "SPAM",
                corpus
                    .join("spam/sa-spam-00001.7848dde101aa985090474a91ec93fcf0.eml")
                    .display()
                    .to_string(),
            ),
        ],
    )
    .await;
    let lines: Vec<&str> = out.lines().collect();
    // A plugin's 550 for a recipient reaches the client through Postfix, with its text.
    assert!(
        lines[0].starts_with("unknown refused-rcpt 550") && lines[0].contains("5.1.1"),
        "{out}\n{}",
        postfix.log()
    );
    assert_eq!(lines[1], "clean accepted", "{out}\n{}", postfix.log());
    // A refusal after the data, with the plugin's code.
    assert!(
        lines[2].starts_with("forbidden words refused-data 5"),
        "{out}\n{}",
        postfix.log()
    );
    let mut got = Vec::new();
    for _ in 0..200 {
        got = postfix.delivered("bob");
        let expected = if lines[3] == "spam accepted" { 2 } else { 1 };
        if got.len() >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let clean = got
        .iter()
        .find(|m| m.contains("Subject: clean"))
        .unwrap_or_else(|| panic!("clean message not delivered: {got:?}\n{}", postfix.log()));
    // The plugin's header is in the delivered message, the field it removes is gone, and the
    // spam verdict fields are there.
    assert!(clean.contains("X-Tagged: through-postfix"), "{clean}");
    assert!(!clean.contains("X-Remove-Me"), "{clean}");
    assert!(clean.contains("X-Spam-Status: No"), "{clean}");
    // Postfix kept and delivered the message itself: its own Received field, not ours.
    assert!(clean.contains("by pf.test (Postfix)"), "{clean}");
    assert!(!clean.contains("(Sluice)"), "{clean}");
    // Spam is tagged (or refused at the reject threshold).
    if lines[3] == "spam accepted" {
        let spam = got
            .iter()
            .find(|m| !m.contains("Subject: clean"))
            .expect("the spam message");
        assert!(spam.contains("X-Spam-Status: Yes"), "{spam}");
    } else {
        assert!(lines[3].starts_with("spam refused-data 550"), "{out}");
    }

    // With Sluice's milter gone, Postfix applies milter_default_action (tempfail).
    s.stop().await;
    let out = python(
        r#"
import os, smtplib
c = smtplib.SMTP("127.0.0.1", int(os.environ["PORT"]), timeout=30)
try:
    c.sendmail("ann@friends.example", ["bob@pf.test"], b"Subject: later\r\n\r\nx\r\n")
    print("accepted")
except smtplib.SMTPException as e:
    print("refused", getattr(e, "smtp_code", None) or list(getattr(e, "recipients", {0: (0,)}).values())[0][0])
"#,
        &[("PORT", postfix.smtp.to_string())],
    )
    .await;
    assert!(
        out.trim().starts_with("refused 4"),
        "{out}\n{}",
        postfix.log()
    );
}

#[tokio::test]
async fn postfix_reaches_the_milter_over_a_unix_socket() {
    use std::os::unix::fs::PermissionsExt as _;
    // Postfix's smtpd runs as its own user: the directory must be traversable, the socket
    // writable by it (socket_mode).
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("milter.sock");
    let s = TestServer::start(
        &format!(
            "[[listener]]\nkind = \"milter\"\nsocket = {socket:?}\nsocket_mode = \"0666\"\n[plugin.tagger.config]\ntag = \"over-unix\"\nreject_word = \"forbidden\"\n"
        ),
        &[("tagger", plugin("test", "tagger"))],
    )
    .await;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666);
    let postfix = Postfix::start(&format!(
        "myhostname = pf.test\nvirtual_mailbox_domains = pf.test\nvirtual_mailbox_maps = inline:{{ bob@pf.test=bob/Maildir/ }}\nsmtpd_milters = unix:{}\nmilter_default_action = tempfail\n",
        socket.display()
    ));
    let out = python(
        r#"
import os, smtplib
c = smtplib.SMTP("127.0.0.1", int(os.environ["PORT"]), timeout=30)
for subject in ("hello", "forbidden"):
    try:
        c.sendmail("ann@friends.example", ["bob@pf.test"], ("Subject: %s\r\n\r\nbody\r\n" % subject).encode())
        print(subject, "accepted")
    except smtplib.SMTPDataError as e:
        print(subject, "refused", e.smtp_code)
c.quit()
"#,
        &[("PORT", postfix.smtp.to_string())],
    )
    .await;
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["hello accepted", "forbidden refused 554"],
        "{}",
        postfix.log()
    );
    let mut got = Vec::new();
    for _ in 0..100 {
        got = postfix.delivered("bob");
        if !got.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        got.first()
            .is_some_and(|m| m.contains("X-Tagged: over-unix")),
        "{got:?}"
    );
    s.stop().await;
}

/// A milter listener on loopback with a DKIM key for `example.org` and loopback trusted, as
/// the sample configuration has it; `extra` is added to the listener.
async fn milter_server(extra: &str) -> (TestServer, std::net::SocketAddr, tempfile::TempDir) {
    let keys = tempfile::tempdir().unwrap();
    let (pem, _) = sluice::sender_auth::keygen(true).unwrap();
    let key = keys.path().join("example.org.key");
    std::fs::write(&key, pem).unwrap();
    let s = TestServer::start(
        &format!(
            "[[listener]]\nkind = \"milter\"\naddress = \"127.0.0.1:0\"\n{extra}\n\
             [relay]\ntrusted_networks = [\"127.0.0.0/8\", \"::1/128\"]\n\
             [authentication]\nverify = false\n\
             [[authentication.dkim_key]]\ndomain = \"example.org\"\nselector = \"s1\"\nkey = {key:?}\n"
        )
        .replace(
            "[relay]\n",
            "[relay]\nlocal_domains = [\"example.org\", \"catchall.example.org\"]\n",
        ),
        &[],
    )
    .await;
    let addr = s
        .listeners
        .iter()
        .find(|(k, _)| *k == ListenerKind::Milter)
        .unwrap()
        .1;
    (s, addr, keys)
}

/// One transaction from `ceo@example.org` after `connect` (None: no connect packet at all);
/// whether the filter DKIM-signed it (it signs only its own users' and trusted networks' mail).
fn signed_after(addr: std::net::SocketAddr, connect: Option<Vec<u8>>) -> bool {
    use sluice_tests::milter_client::{MilterClient, arg};
    let mut c = MilterClient::connect(addr).unwrap();
    if let Some(data) = connect {
        assert_eq!(c.ask(b'C', &data).unwrap().cmd, b'c');
    }
    assert_eq!(c.ask(b'H', &arg("mx.spoof.test")).unwrap().cmd, b'c');
    assert_eq!(c.ask(b'M', &arg("<ceo@example.org>")).unwrap().cmd, b'c');
    assert_eq!(c.ask(b'R', &arg("<bob@example.org>")).unwrap().cmd, b'c');
    let answer = c
        .message(
            &[
                ("From", "CEO <ceo@example.org>"),
                ("Subject", "wire the money"),
            ],
            "Today, please.\r\n",
        )
        .unwrap();
    assert!(
        matches!(answer.last().map(|p| p.cmd), Some(b'a' | b'c')),
        "{answer:?}"
    );
    answer
        .iter()
        .filter_map(|p| p.added_header())
        .any(|(name, _)| name.eq_ignore_ascii_case("DKIM-Signature"))
}

/// A client whose address the MTA does not give (a connect of family `U` or `L`, an address
/// that is not one, no connect at all) is not in the trusted networks: its mail is not
/// signed as the operator's. It used to become 127.0.0.1, which the sample trusts.
#[tokio::test]
async fn a_client_the_mta_cannot_name_is_never_trusted() {
    use sluice_tests::milter_client::connect_data;
    let (_s, addr, _keys) = milter_server("").await;
    let results = tokio::task::spawn_blocking(move || {
        [
            (
                "loopback (trusted)",
                Some(connect_data("localhost", b'4', 4000, "127.0.0.1")),
            ),
            ("family U", Some(connect_data("spoofer", b'U', 0, ""))),
            ("family L", Some(connect_data("localhost", b'L', 0, ""))),
            (
                "unknown",
                Some(connect_data("[UNAVAILABLE]", b'4', 0, "[UNAVAILABLE]")),
            ),
            ("no connect", None),
        ]
        .map(|(what, connect)| (what, signed_after(addr, connect)))
    })
    .await
    .unwrap();
    assert_eq!(
        results,
        [
            ("loopback (trusted)", true),
            ("family U", false),
            ("family L", false),
            ("unknown", false),
            ("no connect", false),
        ]
    );
}

/// The TCP listener serves only the networks in `allow_from` (loopback when unset): a peer
/// from elsewhere is closed before a byte is read.
#[tokio::test]
async fn a_milter_listener_serves_only_its_allowed_peers() {
    use sluice_tests::milter_client::MilterClient;
    let (_open, addr, _k1) = milter_server("").await;
    let (_closed, closed_addr, _k2) = milter_server("allow_from = [\"192.0.2.0/24\"]").await;
    tokio::task::spawn_blocking(move || {
        assert!(
            MilterClient::connect(addr).is_ok(),
            "loopback is allowed by default"
        );
        let refused = std::panic::catch_unwind(|| MilterClient::connect(closed_addr));
        assert!(
            !matches!(refused, Ok(Ok(_))),
            "a peer outside allow_from must not be served"
        );
    })
    .await
    .unwrap();
}

/// A 1 MiB macro packet of small macros is read without a string per macro, and a read
/// holding thousands of packets decodes in one pass: the conversation goes on normally.
#[tokio::test]
async fn huge_macro_packets_and_packet_floods_are_survived() {
    use sluice_tests::milter_client::{MilterClient, arg, encode};
    let (_s, addr, _keys) = milter_server("").await;
    tokio::task::spawn_blocking(move || {
        let mut c = MilterClient::connect(addr).unwrap();
        let mut macros = vec![b'C'];
        while macros.len() < sluice::milter::protocol::MAX_PACKET - 16 {
            macros.extend_from_slice(b"a\0b\0");
        }
        c.send(b'D', &macros).unwrap();
        // 100,000 small macro packets in one write (they get no answer).
        let flood: Vec<u8> = (0..100_000)
            .flat_map(|_| encode(b'D', b"Mx\0y\0"))
            .collect();
        c.send_raw(&flood).unwrap();
        assert_eq!(c.ask(b'M', &arg("<a@example.org>")).unwrap().cmd, b'c');
    })
    .await
    .unwrap();
}
