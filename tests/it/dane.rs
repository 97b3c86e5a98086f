//! DANE (RFC 7672) on MX delivery, on loopback: Knot DNS serves `dane.test` signed with keys
//! it makes for the test, unbound validates it (the zone's key as trust anchor), and Sluice A
//! (`sluice serve`) asks unbound. Sluice B is every MX host, with a certificate per MX name:
//! - DANE-EE 3 1 1 matching the host's key: delivered, and a REQUIRETLS message too;
//! - DANE-TA 2 0 1 naming the CA of the host's chain: delivered;
//! - DANE-EE naming another key: deferred, never sent (nor in the clear);
//! - TLSA records under a bogus delegation (a DS no key matches): deferred, never sent;
//! - no TLSA records: delivered as before (opportunistic TLS), and deferred by a route that
//!   requires DANE;
//! - DANE and an MTA-STS enforce policy that does not list the MX host: delivered, DANE
//!   taking precedence (RFC 8461 §2); the same policy without DANE defers.
//!
//! The delivery log and `sluice queue show` name the policy of each attempt, and A's TLS
//! reports (RFC 8460) count the sessions under each host's TLSA records.

use std::path::Path;
use std::time::Duration;

use sha2::Digest as _;
use sluice_tests::dnssec::SignedDns;
use sluice_tests::serve::{Serve, delivery_lines, queue_show, relay_config};
use sluice_tests::*;

const DOMAINS: [&str; 8] = [
    "ok", "ta", "bad", "bogus", "plain", "strict", "sts", "stsonly",
];

/// The SHA-256 of the public key (SPKI) of the key in `key_pem`.
fn spki_sha256(key_pem: &Path) -> String {
    let key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(key_pem).unwrap()).unwrap();
    hex::encode(sha2::Sha256::digest(
        rcgen::PublicKeyData::subject_public_key_info(&key),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dane_authenticates_mx_hosts_by_their_tlsa_records() {
    let certs = tempfile::tempdir().unwrap();
    let file = |f: &str| certs.path().join(f);
    let ca = ca::Ca::new();
    // One rendering of the CA's certificate: it is both in a chain and named by a TLSA record.
    let ca_pem = ca.pem();
    let ca_der = rustls_pemfile::certs(&mut ca_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    for name in ["other", "ok", "ta", "bad"] {
        ca.leaf(certs.path(), name, &[&format!("mx-{name}.dane.test")]);
    }
    // mx-ta presents its chain up to the CA (RFC 7672 §3.1.2: the anchor is in the chain).
    let chain = std::fs::read_to_string(file("ta.crt")).unwrap() + &ca_pem;
    std::fs::write(file("ta-chain.crt"), chain).unwrap();

    // B: every domain's MX host, a certificate for each MX name.
    let mut tls = format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n",
        file("other.crt"),
        file("other.key")
    );
    for (name, cert) in [("ok", "ok.crt"), ("ta", "ta-chain.crt"), ("bad", "bad.crt")] {
        tls.push_str(&format!(
            "[[tls.certificate]]\nnames = [\"mx-{name}.dane.test\"]\ncert = {:?}\nkey = {:?}\n",
            file(cert),
            file(&format!("{name}.key"))
        ));
    }
    let domains: Vec<String> = DOMAINS.iter().map(|d| format!("{d}.dane.test")).collect();
    let b = TestServer::start(&format!("{tls}[relay]\nlocal_domains = {domains:?}\n"), &[]).await;
    let port = b.smtp.port();

    let mut zone = String::new();
    for d in DOMAINS {
        let mx = match d {
            "strict" | "stsonly" => "plain",
            "sts" => "ok",
            d => d,
        };
        zone.push_str(&format!("{d} MX 10 mx-{mx}\nmx-{d} A 127.0.0.1\n"));
    }
    zone.push_str(&format!(
        "_smtp._tls.ok TXT \"v=TLSRPTv1; rua=mailto:tlsrpt@reports.test\"\n\
         _smtp._tls.bad TXT \"v=TLSRPTv1; rua=mailto:tlsrpt@reports.test\"\n\
         _smtp._tls.bogus TXT \"v=TLSRPTv1; rua=mailto:tlsrpt@reports.test\"\n\
         _mta-sts.sts TXT \"v=STSv1; id=dane1;\"\n\
         _mta-sts.stsonly TXT \"v=STSv1; id=dane1;\"\n\
         _{port}._tcp.mx-ok TLSA 3 1 1 {}\n\
         _{port}._tcp.mx-ta TLSA 2 0 1 {}\n\
         _{port}._tcp.mx-bad TLSA 3 1 1 {}\n\
         _tcp.mx-bogus NS ns\n\
         _tcp.mx-bogus DS 4711 13 2 {}\n",
        spki_sha256(&file("ok.key")),
        hex::encode(sha2::Sha256::digest(&ca_der)),
        // The key of another host.
        spki_sha256(&file("other.key")),
        "00".repeat(32),
    ));
    let bogus_child = format!("_{port} TLSA 3 1 1 {}\n", spki_sha256(&file("other.key")));
    let dns = SignedDns::start(&[
        ("dane.test", &zone),
        ("_tcp.mx-bogus.dane.test", &bogus_child),
    ]);

    // A: the relay under test. strict.dane.test goes by a route that requires DANE; its TLS
    // reports go to a capture sink.
    let reports = sluice_tests::sink::Sink::tcp("127.0.0.1:0", Default::default())
        .await
        .unwrap();
    let a_dir = tempfile::tempdir().unwrap();
    let cfg = relay_config(
        a_dir.path(),
        &format!(
            "[delivery]\nresolver = \"{}\"\nretry_secs = [3600]\n\
             [reports]\ntls = true\ninterval_secs = 2\n\
             [[route]]\ndomains = [\"reports.test\"]\nkind = \"smtp\"\nhost = \"127.0.0.1:{}\"\ntls = \"none\"\n\
             [[route]]\ndomains = [\"strict.dane.test\"]\nkind = \"mx\"\nport = {port}\ndane = \"required\"\n\
             [[route]]\ndomains = [\"*\"]\nkind = \"mx\"\nport = {port}\n",
            dns.resolver,
            reports.addr.unwrap().port(),
        ),
    );
    // The MTA-STS policies of sts and stsonly, cached (as if fetched before): enforce, listing
    // another host.
    std::fs::create_dir_all(a_dir.path().join("mta-sts")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for d in ["sts", "stsonly"] {
        std::fs::write(
            a_dir.path().join(format!("mta-sts/{d}.dane.test.json")),
            format!(
                r#"{{"id":"dane1","mode":"enforce","mx":["mx.elsewhere.test"],"max_age":86400,"fetched":{now}}}"#
            ),
        )
        .unwrap();
    }
    let roots = certs.path().join("ca.pem");
    std::fs::write(&roots, &ca_pem).unwrap();
    // A trusts the test's CA as a web PKI root too: DANE-EE must not lean on it, and the
    // mismatching host's certificate, which that root would accept, is still refused.
    let a = Serve::start_trusting(&cfg, &roots).await;
    let script = r#"
import os, smtplib
c = smtplib.SMTP("127.0.0.1", int(os.environ["PORT"]), local_hostname="client.test", timeout=30)
for to in os.environ["TO"].split(","):
    c.sendmail("carol@a.test", [to], ("Subject: to " + to + "\r\n\r\nhello\r\n").encode())
c.quit()
print("sent")
"#;
    let tos = "ok@ok.dane.test,ta@ta.dane.test,bad@bad.dane.test,bogus@bogus.dane.test,plain@plain.dane.test,strict@strict.dane.test,sts@sts.dane.test,stsonly@stsonly.dane.test";
    let out = python(
        script,
        &[("PORT", a.smtp.port().to_string()), ("TO", tos.to_string())],
    )
    .await;
    assert_eq!(out.trim(), "sent");
    // REQUIRETLS (over STARTTLS, as it must come): the DANE-authenticated host may have it.
    let requiretls = r#"
import os, smtplib, ssl
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
c = smtplib.SMTP("127.0.0.1", int(os.environ["PORT"]), local_hostname="client.test", timeout=30)
c.starttls(context=ctx)
c.ehlo("client.test")
c.sendmail("carol@a.test", ["sealed@ok.dane.test"], b"Subject: sealed\r\n\r\nhello\r\n", mail_options=["REQUIRETLS"])
c.quit()
print("sent")
"#;
    let out = python(requiretls, &[("PORT", a.smtp.port().to_string())]).await;
    assert_eq!(out.trim(), "sent");
    let log = cfg.with_extension("log");

    // Delivered, authenticated by the TLSA records; and without them, as before.
    for (user, domain, policy) in [
        ("ok", "ok", Some("dane mx-ok.dane.test tlsa 3 1 1")),
        ("sealed", "ok", Some("dane mx-ok.dane.test tlsa 3 1 1")),
        ("ta", "ta", Some("dane mx-ta.dane.test tlsa 2 0 1")),
        ("sts", "sts", Some("dane mx-ok.dane.test tlsa 3 1 1")),
        ("plain", "plain", None),
    ] {
        let got = b.mailbox(user, 1).await;
        assert_eq!(got.len(), 1, "{user}");
        assert!(got[0].contains("with ESMTPS"), "{user}: {}", got[0]);
        let lines = delivery_lines(&log, &format!("{user}@{domain}.dane.test")).await;
        assert!(lines[0].contains("outcome=delivered"), "{lines:?}");
        match policy {
            Some(p) => assert!(lines[0].contains(&format!("policy=\"{p}\"")), "{lines:?}"),
            None => assert!(lines[0].contains("policy=none"), "{lines:?}"),
        }
    }
    // Deferred, never sent: a certificate the records do not name, records under a bogus
    // delegation, and a domain without records on a route that requires DANE.
    for (user, why, policy) in [
        (
            "bad",
            "451 4.7.5 DANE: mx-bad.dane.test: TLS: the certificate chain of mx-bad.dane.test matches none of its TLSA records (3 1 1)",
            "dane mx-bad.dane.test tlsa 3 1 1",
        ),
        (
            "bogus",
            "451 4.7.5 DANE: DNS lookup of _",
            "dane (tlsa lookup failed)",
        ),
        (
            "strict",
            "451 4.7.5 strict.dane.test has no DNSSEC-validated TLSA records for its mail exchangers, which this route requires",
            "",
        ),
        (
            "stsonly",
            "none of its MX hosts is listed",
            "mta-sts:enforce id=dane1",
        ),
    ] {
        let lines = delivery_lines(&log, &format!("{user}@{user}.dane.test")).await;
        assert!(
            lines[0].contains("outcome=deferred") && lines[0].contains(why),
            "{user}: {lines:?}"
        );
        if !policy.is_empty() {
            assert!(
                lines[0].contains(&format!("policy=\"{policy}\"")),
                "{lines:?}"
            );
        }
        assert!(
            !b.dir.path().join("maildir").join(user).exists(),
            "{user} must not reach the MX host"
        );
    }
    // The bogus answer is the resolver's SERVFAIL.
    let bogus = delivery_lines(&log, "bogus@bogus.dane.test").await;
    assert!(
        bogus[0].contains(&format!(
            "DNS lookup of _{port}._tcp.mx-bogus.dane.test TLSA at {} failed: SERVFAIL",
            dns.resolver
        )),
        "{bogus:?}"
    );
    // `sluice queue show` names the policy of the attempt.
    let show = queue_show(&cfg, &delivery_lines(&log, "bad@bad.dane.test").await[0]);
    assert!(
        show.contains("(policy dane mx-bad.dane.test tlsa 3 1 1)"),
        "{show}"
    );

    // TLS reports: one "tlsa" policy per MX host, its sessions summed over the 2 s periods
    // (bounded: 30 s): ok's two deliveries, bad's mismatch, bogus's failed lookup.
    let want = [
        ("ok.dane.test", "mx-ok.dane.test", (2, 0, "")),
        ("bad.dane.test", "mx-bad.dane.test", (0, 1, "tlsa-invalid")),
        (
            "bogus.dane.test",
            "mx-bogus.dane.test",
            (0, 1, "dnssec-invalid"),
        ),
    ];
    let mut sums = std::collections::BTreeMap::new();
    for _ in 0..60 {
        sums.clear();
        for r in reports.messages() {
            let json: serde_json::Value =
                serde_json::from_str(&r.gzipped_report("tlsrpt+gzip")).unwrap();
            for p in json["policies"].as_array().unwrap() {
                if p["policy"]["policy-type"] != "tlsa" {
                    continue;
                }
                let host = p["policy"]["policy-domain"].as_str().unwrap().to_string();
                if host == "mx-ok.dane.test" {
                    assert_eq!(
                        p["policy"]["policy-string"],
                        serde_json::json!([format!("3 1 1 {}", spki_sha256(&file("ok.key")))])
                    );
                }
                let e = sums.entry(host).or_insert((0, 0, String::new()));
                e.0 += p["summary"]["total-successful-session-count"]
                    .as_u64()
                    .unwrap();
                e.1 += p["summary"]["total-failure-session-count"]
                    .as_u64()
                    .unwrap();
                if let Some(d) = p["failure-details"].as_array().unwrap().first() {
                    e.2 = d["result-type"].as_str().unwrap().to_string();
                }
            }
        }
        if want
            .iter()
            .all(|(_, h, (s, f, t))| sums.get(*h) == Some(&(*s, *f, t.to_string())))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (_, host, (s, f, t)) in want {
        assert_eq!(
            sums.get(host),
            Some(&(s, f, t.to_string())),
            "{host}: {sums:?}"
        );
    }
}
