//! REQUIRETLS (RFC 8689) between two Sluice instances and with Postfix as the next hop: a
//! client's `MAIL FROM:<…> REQUIRETLS` over STARTTLS is relayed by Sluice A to Sluice B over
//! TLS with a verified certificate and the parameter; to Postfix (which does not offer
//! REQUIRETLS) and to an MX destination (not authenticated) it is not sent, and the sender gets
//! a bounce with 5.7.30 (the message's headers only, even with RET=FULL), while the same
//! message without REQUIRETLS reaches Postfix.

use std::path::Path;
use std::time::Duration;

use sluice_tests::peers::Postfix;
use sluice_tests::*;

/// A CA-signed certificate for 127.0.0.1 in `dir` (`ca.pem`, `ip.crt`, `ip.key`).
fn certificates(dir: &Path) {
    let ca = sluice_tests::ca::Ca::new();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    ca.leaf(dir, "ip", &["127.0.0.1"]);
}

/// The files of a Maildir's `new/`, waiting (bounded: 30 s) until there are `n`.
async fn maildir(dir: &Path, n: usize) -> Vec<String> {
    for _ in 0..300 {
        let files = maildir_files(dir);
        if files.len() >= n {
            return files;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    maildir_files(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requiretls_mail_goes_only_over_verified_tls_to_a_next_hop_that_offers_it() {
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let file = |f: &str| certs.path().join(f).display().to_string();
    // B: the next hop that offers REQUIRETLS, with a certificate A verifies.
    let b = TestServer::start(
        &format!(
            "[tls]\ncert = {:?}\nkey = {:?}\n",
            file("ip.crt"),
            file("ip.key")
        ),
        &[],
    )
    .await;
    // Postfix: TLS with the same certificate, no REQUIRETLS.
    let postfix = Postfix::start(&format!(
        "virtual_mailbox_domains = postfix.test\nvirtual_mailbox_maps = static:dave/Maildir/\n\
         smtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\nsmtpd_tls_security_level = may\n",
        file("ip.crt"),
        file("ip.key")
    ));
    // other.test: an MX domain with neither an MTA-STS policy nor DNSSEC (the tests' DNS).
    let dns = sluice_tests::dns::Dns::start(
        sluice_tests::dns::Zone::new()
            .mx("other.test", 10, "mx.other.test")
            .addr("mx.other.test", [127, 0, 0, 1].into()),
    )
    .await;
    // A: the relay under test, trusting the test's CA.
    let a_dir = tempfile::tempdir().unwrap();
    let cfg = sluice_tests::serve::relay_config(
        a_dir.path(),
        &format!(
            "[delivery]\nresolver = \"{}\"\n\
             [[route]]\ndomains = [\"example.org\"]\nkind = \"smtp\"\nhost = \"127.0.0.1:{}\"\n\
             [[route]]\ndomains = [\"postfix.test\"]\nkind = \"smtp\"\nhost = \"127.0.0.1:{}\"\n\
             [[route]]\ndomains = [\"*\"]\nkind = \"mx\"\n",
            dns.addr,
            b.smtp.port(),
            postfix.smtp
        ),
    );
    let a = sluice_tests::serve::Serve::start_trusting(&cfg, &certs.path().join("ca.pem")).await;

    let script = r#"
import os, smtplib, ssl
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
c = smtplib.SMTP("127.0.0.1", int(os.environ["PORT"]), local_hostname="client.test", timeout=30)
try:
    c.sendmail("carol@a.test", ["bob@example.org"], b"Subject: x\r\n\r\nhi\r\n", mail_options=["REQUIRETLS"])
except smtplib.SMTPSenderRefused as e:
    print("in the clear:", e.smtp_code, e.smtp_error.decode())
c.starttls(context=ctx)
c.ehlo("client.test")
print("offered:", c.has_extn("requiretls"))
for to, opts in [("bob@example.org", ["REQUIRETLS"]), ("dave@postfix.test", ["REQUIRETLS", "RET=FULL"]),
                 ("eve@other.test", ["REQUIRETLS"]), ("dave@postfix.test", [])]:
    c.sendmail("carol@a.test", [to], ("Subject: to " + to + " " + " ".join(opts) + "\r\n\r\nsecret body\r\n").encode(), mail_options=opts)
c.quit()
print("sent")
"#;
    let out = python(script, &[("PORT", a.smtp.port().to_string())]).await;
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "in the clear: 530 5.7.10 REQUIRETLS needs a TLS session: STARTTLS first",
            "offered: True",
            "sent"
        ],
        "{out}"
    );

    // B has it, received over TLS.
    let got = b.mailbox("bob", 1).await;
    assert_eq!(got.len(), 1);
    assert!(
        got[0].contains("by mx.test (Sluice) with ESMTPS"),
        "{}",
        got[0]
    );
    assert!(
        got[0].contains("Subject: to bob@example.org REQUIRETLS"),
        "{}",
        got[0]
    );
    // Postfix has only the message without REQUIRETLS.
    let mut delivered = Vec::new();
    for _ in 0..300 {
        delivered = postfix.delivered("dave");
        if !delivered.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(delivered.len(), 1, "{}", postfix.log());
    assert!(
        delivered[0].contains("Subject: to dave@postfix.test")
            && !delivered[0].contains("REQUIRETLS"),
        "{}",
        delivered[0]
    );
    // Carol gets two bounces, each saying 5.7.30 and why.
    let bounces = maildir(&a_dir.path().join("maildir/carol/new"), 2).await;
    assert_eq!(bounces.len(), 2, "{bounces:?}");
    let all = bounces.join("\n");
    // The human-readable parts, decoded (quoted-printable wraps long lines).
    let text: String = bounces
        .iter()
        .map(|b| {
            let parsed = mail_parser::MessageParser::new()
                .parse(b.as_bytes())
                .unwrap();
            parsed
                .body_text(0)
                .unwrap_or_default()
                .replace("\r\n", "\n")
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains("5.7.30") && text.contains("the next hop does not offer REQUIRETLS"),
        "{text}"
    );
    assert!(
        text.contains("the mail exchangers of other.test cannot be authenticated"),
        "{text}"
    );
    // The notice may travel where the message was not allowed to: headers only, whatever
    // RET asked.
    assert!(
        all.contains("text/rfc822-headers") && !all.contains("secret body"),
        "{all}"
    );
    drop(a);
}
