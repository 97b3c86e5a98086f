//! Sender authentication end to end: SPF, DKIM and DMARC of mail arriving over SMTP, checked
//! against a DNS server the test runs on loopback with the records each case needs; the
//! listener DMARC policy; forged `Authentication-Results:`; what plugins see (through the
//! `auth-echo` test plugin, and a plugin built against the 0.1.0 WIT); DKIM signing of our
//! users' mail, verified by mail-auth and by an independent verifier (Python's dkimpy); and
//! `sluice dkim keygen`.

use std::path::Path;

use sluice_tests::dns::{Dns, Zone};
use sluice_tests::{Conversation, TestServer, plugin, run_client, sluice_bin, workspace_root};

/// A signing key for `domain`/`selector`: (PEM file, DNS TXT record).
fn key(dir: &Path, domain: &str, selector: &str, ed25519: bool) -> (std::path::PathBuf, String) {
    let (pem, record) = sluice::sender_auth::keygen(ed25519).unwrap();
    let path = dir.join(format!("{domain}.{selector}.key"));
    std::fs::write(&path, pem).unwrap();
    (path, record)
}

/// An authenticator that signs for `domain` with `key` (the remote senders of these tests).
fn signer(domain: &str, selector: &str, key: &Path) -> sluice::sender_auth::Authenticator {
    let cfg = sluice_tests::config(&format!(
        "[authentication]\nverify = false\n[[authentication.dkim_key]]\ndomain = {domain:?}\nselector = {selector:?}\nkey = {key:?}\n"
    ));
    sluice::sender_auth::Authenticator::new(&cfg).unwrap()
}

/// A message with its DKIM-Signature field first (when `signer` is given).
fn message(
    signer: Option<&sluice::sender_auth::Authenticator>,
    from: &str,
    subject: &str,
    body: &str,
) -> String {
    let m = format!(
        "From: <{from}>\r\nTo: <bob@example.org>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@test>\r\n\r\n{body}\r\n"
    );
    match signer {
        Some(s) => format!(
            "{}{m}",
            s.sign_as(m.as_bytes(), "signed.test")
                .expect("a key")
                .expect("signed")
        ),
        None => m,
    }
}

/// Sends `data` from `from` to bob@example.org on `addr`; returns the reply to the data.
async fn send(addr: std::net::SocketAddr, from: &str, data: &str) -> String {
    let mut c = Conversation::connect(addr).await;
    c.begin_data(from, "bob@example.org").await;
    c.raw(format!("{data}.\r\n").as_bytes()).await;
    let r = c.reply().await;
    c.send("QUIT").await;
    r
}

/// The delivered message whose Subject is `subject`.
fn by_subject<'a>(mail: &'a [String], subject: &str) -> &'a str {
    mail.iter()
        .find(|m| m.contains(&format!("\r\nSubject: {subject}\r\n")))
        .unwrap_or_else(|| panic!("no delivered message with subject {subject}"))
}

/// The value of the first `name:` field of `m` (unfolded).
fn field(m: &str, name: &str) -> String {
    let parsed = mail_parser::MessageParser::new()
        .parse_headers(m.as_bytes())
        .unwrap();
    parsed
        .header_raw(name)
        .unwrap_or_else(|| panic!("no {name} in\n{m}"))
        .replace("\r\n", "")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn spf_zone() -> Zone {
    let mut z = Zone::new()
        .txt("spf-pass.test", "v=spf1 ip4:127.0.0.1 -all")
        .txt("spf-fail.test", "v=spf1 ip4:192.0.2.1 -all")
        .txt("spf-soft.test", "v=spf1 ~all")
        .addr("spf-none.test", "192.0.2.9".parse().unwrap())
        .txt("spf-loop.test", "v=spf1 include:l1.spf-loop.test -all")
        .silent("spf-slow.test");
    // Eleven includes deep: past the 10-lookup limit of RFC 7208 §4.6.4.
    for i in 1..=11 {
        z = z.txt(
            &format!("l{i}.spf-loop.test"),
            &format!("v=spf1 include:l{}.spf-loop.test -all", i + 1),
        );
    }
    z.txt("l12.spf-loop.test", "v=spf1 ip4:127.0.0.1 -all")
}

fn auth_config(dns: &Dns) -> String {
    format!(
        "[authentication]\nresolver = \"{}\"\ndns_timeout_secs = 1\n",
        dns.addr
    )
}

#[tokio::test]
async fn spf_results_reach_the_header_and_the_plugins() {
    let dns = Dns::start(spf_zone()).await;
    let s = TestServer::start(
        &auth_config(&dns),
        &[("auth-echo", plugin("test", "auth-echo"))],
    )
    .await;
    let cases = [
        ("spf-pass.test", "pass"),
        ("spf-fail.test", "fail"),
        ("spf-soft.test", "softfail"),
        ("spf-none.test", "none"),
        ("spf-loop.test", "permerror"),
        ("spf-slow.test", "temperror"),
    ];
    for (domain, _) in cases {
        let reply = send(
            s.smtp,
            &format!("user@{domain}"),
            &message(None, "x@y.test", domain, "hi"),
        )
        .await;
        // SPF is recorded, never enforced by itself: every message is accepted.
        assert!(reply.starts_with("250"), "{domain}: {reply}");
    }
    let mail = s.mailbox("bob", cases.len()).await;
    for (domain, verdict) in cases {
        let m = by_subject(&mail, domain);
        let echo = field(m, "X-Auth-Echo");
        assert!(
            echo.contains(&format!("spf={verdict}@{domain}")),
            "{domain}: plugin saw {echo}"
        );
        // The HELO name `client.test` has no record.
        assert!(echo.starts_with("spf-helo=none "), "{domain}: {echo}");
        let ar = field(m, "Authentication-Results");
        assert!(ar.starts_with("mx.test;"), "{domain}: {ar}");
        assert!(
            ar.contains(&format!("spf={verdict}"))
                && ar.contains(&format!("smtp.mailfrom=user@{domain}")),
            "{domain}: {ar}"
        );
    }
    // Operators see the same in the metrics (process-wide, so at least these).
    let metrics = sluice::admin::metrics::get().encode();
    for verdict in ["pass", "fail", "softfail", "none", "permerror", "temperror"] {
        let line = format!(
            "sluice_authentication_results_total{{check=\"spf_mail_from\",verdict=\"{verdict}\"}} "
        );
        assert!(
            metrics.lines().any(|l| l.starts_with(&line)),
            "no {line} in\n{metrics}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn dkim_and_dmarc_recorded_or_enforced_per_listener() {
    let keys = tempfile::tempdir().unwrap();
    let (signed_key, signed_record) = key(keys.path(), "signed.test", "sel", true);
    let dns = Dns::start(
        Zone::new()
            .txt("signed.test", "v=spf1 -all")
            .txt("sel._domainkey.signed.test", &signed_record)
            .txt("_dmarc.signed.test", "v=DMARC1; p=reject")
            .txt("quar.test", "v=spf1 -all")
            .txt("_dmarc.quar.test", "v=DMARC1; p=quarantine")
            .txt("monitor.test", "v=spf1 -all")
            .txt("_dmarc.monitor.test", "v=DMARC1; p=none")
            .txt("slow-dmarc.test", "v=spf1 -all")
            .silent("_dmarc.slow-dmarc.test"),
    )
    .await;
    let extra = format!(
        "{}\n[[listener]]\nkind = \"smtp\"\naddress = \"127.0.0.1:0\"\ndmarc = \"enforce\"\n",
        auth_config(&dns)
    );
    let s = TestServer::start(&extra, &[("auth-echo", plugin("test", "auth-echo"))]).await;
    let enforcing = s.listeners[3].1;
    let signer = signer("signed.test", "sel", &signed_key);
    let good = message(Some(&signer), "news@signed.test", "good", "Hello.");
    let body_altered = message(Some(&signer), "news@signed.test", "body", "Hello.")
        .replace("\r\n\r\nHello.", "\r\n\r\nHello, changed.");
    // The Subject is signed: changing it breaks the signature.
    let header_altered = message(Some(&signer), "news@signed.test", "header", "Hello.")
        .replace("Subject: header", "Subject: header2");
    let no_key = {
        let other = signer_for_selector(&signed_key);
        message(Some(&other), "news@signed.test", "nokey", "Hello.")
    };
    let unaligned = message(Some(&signer), "boss@quar.test", "unaligned", "Hello.");

    // The recording listener accepts everything and says what it found.
    for (from, data) in [
        ("news@signed.test", &good),
        ("news@signed.test", &body_altered),
        ("news@signed.test", &header_altered),
        ("news@signed.test", &no_key),
        ("boss@quar.test", &unaligned),
    ] {
        let r = send(s.smtp, from, data).await;
        assert!(r.starts_with("250"), "{r}");
    }
    let mail = s.mailbox("bob", 5).await;
    let echo = |subject: &str| field(by_subject(&mail, subject), "X-Auth-Echo");
    assert_eq!(
        echo("good"),
        "spf-helo=none spf=fail@signed.test dkim=pass@signed.test/sel dmarc=pass@signed.test/reject"
    );
    // mail-auth reports a body that no longer matches its hash as `neutral` (and says so in
    // the header); DMARC fails either way.
    assert!(
        echo("body").contains("dkim=neutral@signed.test/sel dmarc=fail@signed.test/reject"),
        "{}",
        echo("body")
    );
    assert!(
        echo("header2").contains("dkim=fail@signed.test/sel"),
        "{}",
        echo("header2")
    );
    let nokey = echo("nokey");
    assert!(
        nokey.contains("dkim=permerror@signed.test/missing") && nokey.contains("dmarc=fail"),
        "{nokey}"
    );
    // Signed by signed.test, From quar.test: DKIM passes but is not aligned.
    assert!(
        echo("unaligned").contains("dkim=pass@signed.test/sel dmarc=fail@quar.test/quarantine"),
        "{}",
        echo("unaligned")
    );
    let ar = field(by_subject(&mail, "good"), "Authentication-Results");
    assert!(
        ar.contains("dkim=pass")
            && ar.contains("header.d=signed.test")
            && ar.contains("dmarc=pass"),
        "{ar}"
    );

    // The enforcing listener applies each domain's policy.
    let r = send(enforcing, "news@signed.test", &body_altered).await;
    assert!(
        r.starts_with("550 5.7.1") && r.contains("DMARC policy of signed.test"),
        "{r}"
    );
    let r = send(enforcing, "boss@quar.test", &unaligned).await;
    assert!(r.starts_with("250"), "{r}");
    let r = send(
        enforcing,
        "someone@slow-dmarc.test",
        &message(None, "someone@slow-dmarc.test", "slow", "Hello."),
    )
    .await;
    assert!(r.starts_with("451 4.7.1"), "{r}");
    // p=none only asks for reports: a failure is delivered.
    let r = send(
        enforcing,
        "someone@monitor.test",
        &message(None, "someone@monitor.test", "monitored", "Hello."),
    )
    .await;
    assert!(r.starts_with("250"), "{r}");
    let r = send(enforcing, "news@signed.test", &good).await;
    assert!(r.starts_with("250"), "{r}");
    // The quarantined one waits in the quarantine; the others are delivered (7 in all).
    let mail = s.mailbox("bob", 7).await;
    assert!(
        field(by_subject(&mail, "monitored"), "X-Auth-Echo")
            .ends_with("dmarc=fail@monitor.test/none"),
        "{mail:?}"
    );
    let quarantine = sluice_tests::maildir_files(&s.dir.path().join("spool/quarantine"));
    assert_eq!(quarantine.len(), 1, "one message quarantined");
    assert!(quarantine[0].contains("Subject: unaligned"));
    s.stop().await;
}

/// A signer for signed.test whose selector has no key in DNS.
fn signer_for_selector(key: &Path) -> sluice::sender_auth::Authenticator {
    signer("signed.test", "missing", key)
}

#[tokio::test]
async fn forged_authentication_results_for_our_host_are_removed() {
    let dns = Dns::start(spf_zone()).await;
    let s = TestServer::start(&auth_config(&dns), &[]).await;
    let data = format!(
        "Authentication-Results: mx.test; dkim=pass header.d=bank.test\r\nAuthentication-Results: other.example; spf=pass smtp.mailfrom=x@other.example\r\n{}",
        message(None, "user@spf-pass.test", "forged", "Hello.")
    );
    assert!(
        send(s.smtp, "user@spf-pass.test", &data)
            .await
            .starts_with("250")
    );
    let m = &s.mailbox("bob", 1).await[0];
    let ours: Vec<&str> = m
        .split("\r\n")
        .filter(|l| l.starts_with("Authentication-Results: mx.test"))
        .collect();
    assert_eq!(ours.len(), 1, "{m}");
    assert!(!m.contains("bank.test"), "the forged field is gone:\n{m}");
    assert!(
        m.contains("Authentication-Results: other.example; spf=pass"),
        "{m}"
    );
    s.stop().await;
}

#[tokio::test]
async fn our_users_mail_is_signed_not_verified_and_verifies_elsewhere() {
    let keys = tempfile::tempdir().unwrap();
    let (ed_key, ed_record) = key(keys.path(), "example.org", "ed", true);
    let (rsa_key, rsa_record) = key(keys.path(), "catchall.example.org", "rsa", false);
    let dns = Dns::start(
        Zone::new()
            .txt("ed._domainkey.example.org", &ed_record)
            .txt("rsa._domainkey.catchall.example.org", &rsa_record),
    )
    .await;
    let extra = format!(
        "{}[auth]\nallow_plaintext_on_loopback = true\n[[authentication.dkim_key]]\ndomain = \"example.org\"\nselector = \"ed\"\nkey = {ed_key:?}\n[[authentication.dkim_key]]\ndomain = \"catchall.example.org\"\nselector = \"rsa\"\nkey = {rsa_key:?}\n",
        auth_config(&dns)
    );
    let s = TestServer::start(&extra, &[("auth-echo", plugin("test", "auth-echo"))]).await;
    for (from, subject) in [
        ("alice@example.org", "ed25519"),
        ("alice@catchall.example.org", "rsa"),
    ] {
        let mut c = Conversation::connect(s.smtp).await;
        c.send("EHLO laptop").await;
        c.expect("250 ").await;
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode("\0alice\0wonderland");
        c.send(&format!("AUTH PLAIN {token}")).await;
        c.expect("235").await;
        c.raw(format!("MAIL FROM:<{from}>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n").as_bytes())
            .await;
        c.expect("250").await;
        c.expect("250").await;
        c.expect("354").await;
        c.raw(
            format!("From: Alice <{from}>\r\nTo: bob@example.org\r\nSubject: {subject}\r\nMessage-ID: <{subject}@laptop>\r\n\r\nSigned by the relay.\r\n.\r\n")
                .as_bytes(),
        )
        .await;
        c.expect("250").await;
        c.send("QUIT").await;
    }
    let mail = s.mailbox("bob", 2).await;
    let verifier = {
        let cfg = sluice_tests::config(&auth_config(&dns));
        sluice::sender_auth::Authenticator::new(&cfg).unwrap()
    };
    for (subject, domain, selector, algorithm) in [
        ("ed25519", "example.org", "ed", "ed25519-sha256"),
        ("rsa", "catchall.example.org", "rsa", "rsa-sha256"),
    ] {
        let m = by_subject(&mail, subject);
        // Authenticated mail is not verified: no results for plugins, no header.
        assert_eq!(field(m, "X-Auth-Echo"), "none");
        assert!(!m.contains("Authentication-Results:"), "{m}");
        let sig = field(m, "DKIM-Signature");
        assert!(
            sig.contains(&format!("d={domain}"))
                && sig.contains(&format!("s={selector}"))
                && sig.contains(&format!("a={algorithm}")),
            "{sig}"
        );
        // The signature covers the plugin's header edits: it comes after them.
        assert!(m.find("DKIM-Signature:") < m.find("X-Auth-Echo:"), "{m}");
        // mail-auth, through the test DNS.
        let checks = verifier
            .check_sender("127.0.0.1".parse().unwrap(), "laptop", "alice@x.test")
            .await;
        let results = verifier.check_message(m.as_bytes(), &checks).await;
        assert_eq!(
            results.dkim.first().map(|d| (d.verdict, d.domain.as_str())),
            Some((sluice::sender_auth::Status::Pass, domain)),
            "{results:?}"
        );
        // dkimpy, an independent implementation, with the published record.
        let record = if subject == "rsa" {
            &rsa_record
        } else {
            &ed_record
        };
        let file = s.dir.path().join(format!("{subject}.eml"));
        std::fs::write(&file, m).unwrap();
        let out = run_client(
            tokio::process::Command::new(workspace_root().join(".venv/bin/python3"))
                .arg("-c")
                .arg("import dkim, os, sys\nmsg = open(os.environ['MSG'], 'rb').read()\nrecord = os.environ['RECORD'].encode()\nok = dkim.verify(msg, dnsfunc=lambda name, timeout=5: record)\nprint('verified' if ok else 'FAILED')")
                .env("MSG", &file)
                .env("RECORD", record),
        )
        .await;
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "verified",
            "dkimpy on {subject}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn dkim_keygen_writes_a_private_key_and_prints_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(sluice_bin());
        cmd.args(args);
        cmd
    };
    let out_dir = dir.path().to_str().unwrap();
    let out = run_client(&mut run(&[
        "dkim",
        "keygen",
        "example.org",
        "s2026",
        "--algorithm",
        "ed25519",
        "--out",
        out_dir,
    ]))
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("s2026._domainkey.example.org. IN TXT \"v=DKIM1; k=ed25519; p="),
        "{stdout}"
    );
    let file = dir.path().join("example.org.s2026.key");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Never overwritten.
    let again = run_client(&mut run(&[
        "dkim",
        "keygen",
        "example.org",
        "s2026",
        "--algorithm",
        "ed25519",
        "--out",
        out_dir,
    ]))
    .await;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists; not overwritten"));
    // The configuration accepts the key, and names a missing one.
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(
        &cfg,
        format!("[[authentication.dkim_key]]\ndomain = \"example.org\"\nselector = \"s2026\"\nkey = {file:?}\n[[authentication.dkim_key]]\ndomain = \"example.net\"\nselector = \"s1\"\nkey = \"/nonexistent/example.net.key\"\n"),
    )
    .unwrap();
    let check = run_client(&mut run(&["check-config", cfg.to_str().unwrap()])).await;
    assert!(!check.status.success());
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(
        err.contains("authentication.dkim_key for example.net: /nonexistent/example.net.key:"),
        "{err}"
    );
    assert!(!err.contains("for example.org"), "{err}");
}

#[tokio::test]
async fn plugin_check_shows_what_plugins_see() {
    let dns = Dns::start(spf_zone()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\ndata_dir = {:?}\n[plugins]\ncache_dir = {:?}\n[relay]\nlocal_domains = [\"example.org\"]\n{}",
            dir.path(),
            workspace_root().join("target/test-compile-cache"),
            auth_config(&dns)
        ),
    )
    .unwrap();
    let eml = dir.path().join("m.eml");
    std::fs::write(
        &eml,
        message(None, "user@spf-pass.test", "replayed", "Hello."),
    )
    .unwrap();
    let out = run_client(
        tokio::process::Command::new(sluice_bin())
            .args(["plugin", "check", "--authenticate", "--config"])
            .arg(&cfg)
            .arg("--plugin")
            .arg(plugin("test", "auth-echo"))
            .arg("--plugin")
            .arg(plugin("test", "wit-0-1-0"))
            .arg("--plugin")
            .arg(plugin("test", "wit-0-1-1"))
            .args([
                "--helo",
                "client.test",
                "--mail-from",
                "user@spf-pass.test",
                "--rcpt",
                "bob@example.org",
            ])
            .arg(&eml),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let auth = &report["authentication"];
    assert_eq!(auth["spf_mail_from"]["verdict"], "pass", "{report}");
    assert_eq!(auth["spf_mail_from"]["domain"], "spf-pass.test");
    assert_eq!(
        auth["dmarc"]["verdict"], "none",
        "no DMARC record: {report}"
    );
    let headers = report["add_headers"].as_array().unwrap();
    let value = |name: &str| {
        headers
            .iter()
            .find(|h| h["name"] == name)
            .map(|h| h["value"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no {name} in {report}"))
    };
    assert!(
        value("X-Auth-Echo").starts_with("spf-helo=none spf=pass@spf-pass.test dkim=- dmarc=none@"),
        "{report}"
    );
    // Plugins built against sluice:filter@0.1.0 and @0.1.1 run in this host, and the 0.1.1
    // one reads the authentication results through its own version of the interface.
    assert_eq!(value("X-Wit-Version"), "0.1.0");
    assert_eq!(value("X-Wit-0-1-1"), "dmarc=none");
    // At MAIL FROM the plugin saw SPF only.
    let logs = report["calls"][0]["logs"].to_string();
    assert!(
        logs.contains("at MAIL FROM: spf-helo=none spf=pass@spf-pass.test dkim=- dmarc=-"),
        "{report}"
    );
}

/// DMARC aggregate reports (RFC 7489 §7.2): with `[reports] dmarc`, mail from a domain whose
/// DMARC record has a `rua` is counted, and a report (XML, gzip) goes to each address that may
/// have it — the domain's own, and an outside one that authorizes it by its
/// `DOMAIN._report._dmarc` record — but not to an outside one that does not (§7.1).
#[tokio::test]
async fn dmarc_reports_go_to_the_rua_that_may_have_them() {
    let dns = Dns::start(
        Zone::new()
            .txt("spf-pass.test", "v=spf1 ip4:127.0.0.1 -all")
            .txt(
                "_dmarc.spf-pass.test",
                "v=DMARC1; p=reject; rua=mailto:dmarc@spf-pass.test,mailto:agg@outside.test,mailto:nope@stranger.test",
            )
            .txt("spf-pass.test._report._dmarc.outside.test", "v=DMARC1"),
    )
    .await;
    let sink = sluice_tests::sink::Sink::tcp("127.0.0.1:0", Default::default())
        .await
        .unwrap();
    let s = TestServer::start(
        &format!(
            "{}[reports]\ndmarc = true\ninterval_secs = 2\norganization = \"Sluice test\"\n\
             [[route]]\ndomains = [\"spf-pass.test\", \"outside.test\", \"stranger.test\"]\n\
             kind = \"smtp\"\nhost = \"127.0.0.1:{}\"\ntls = \"none\"\n",
            auth_config(&dns),
            sink.addr.unwrap().port()
        ),
        &[],
    )
    .await;
    for i in 0..2 {
        let m = message(None, "user@spf-pass.test", &format!("m{i}"), "hi");
        let reply = send(s.smtp, "user@spf-pass.test", &m).await;
        assert!(reply.starts_with("250"), "{reply}");
    }
    // The reports (a period is 2 s: the two messages may be counted in two), summed.
    let mut counted = 0;
    let mut seen = Vec::new();
    for _ in 0..60 {
        counted = 0;
        seen.clear();
        for r in sink.messages() {
            seen.push(r.rcpts.clone());
            let parsed = mail_parser::MessageParser::new().parse(&r.data).unwrap();
            assert!(
                parsed
                    .subject()
                    .unwrap()
                    .starts_with("Report Domain: spf-pass.test Submitter: mx.test")
            );
            let xml = r.gzipped_report("gzip");
            assert!(xml.contains("<domain>spf-pass.test</domain>"), "{xml}");
            assert!(xml.contains("<p>reject</p>"), "{xml}");
            assert!(xml.contains("<org_name>Sluice test</org_name>"), "{xml}");
            assert!(xml.contains("<source_ip>127.0.0.1</source_ip>"), "{xml}");
            for piece in xml.split("<count>").skip(1) {
                counted += piece
                    .split("</count>")
                    .next()
                    .unwrap()
                    .parse::<u32>()
                    .unwrap();
            }
        }
        if counted == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert_eq!(counted, 2, "{seen:?}");
    for rcpts in &seen {
        assert_eq!(rcpts, &["dmarc@spf-pass.test", "agg@outside.test"]);
    }
}

/// ARC (RFC 8617): A seals what it relays with `[authentication.arc_seal]`; the next hop B
/// verifies the chain (mail-auth) and gives the verdict to plugins (`authentication.arc`, WIT
/// 0.1.4: the `auth-echo` plugin; a plugin built against 0.1.3 still loads beside it), and so
/// does dkimpy, an independent implementation. A seal broken in transit fails; a message
/// without ARC has none.
#[tokio::test]
async fn arc_sets_sealed_on_relay_verify_at_the_next_hop() {
    let keys = tempfile::tempdir().unwrap();
    let (signed_key, signed_record) = key(keys.path(), "signed.test", "sel", true);
    let (arc_key, arc_record) = key(keys.path(), "relay.test", "arc", false);
    let dns = Dns::start(
        Zone::new()
            .txt("signed.test", "v=spf1 -all")
            .txt("sel._domainkey.signed.test", &signed_record)
            .txt("_dmarc.signed.test", "v=DMARC1; p=reject")
            .txt("arc._domainkey.relay.test", &arc_record),
    )
    .await;
    let sink = sluice_tests::sink::Sink::tcp("127.0.0.1:0", Default::default())
        .await
        .unwrap();
    // A: an MX that passes example.org's mail on to its mailbox server (the sink), sealed.
    let a = TestServer::start(
        &format!(
            "{}[authentication.arc_seal]\ndomain = \"relay.test\"\nselector = \"arc\"\nkey = {arc_key:?}\n\
             [[route]]\ndomains = [\"example.org\"]\nkind = \"smtp\"\nhost = \"127.0.0.1:{}\"\ntls = \"none\"\n",
            auth_config(&dns),
            sink.addr.unwrap().port()
        ),
        &[("tagger", plugin("test", "tagger"))],
    )
    .await;
    let signer = signer("signed.test", "sel", &signed_key);
    let original = message(Some(&signer), "news@signed.test", "sealed", "Hello.");
    let reply = send(a.smtp, "user@signed.test", &original).await;
    assert!(reply.starts_with("250"), "{reply}");
    let mut relayed = None;
    for _ in 0..100 {
        if let Some(m) = sink.messages().first() {
            relayed = Some(String::from_utf8(m.data.clone()).unwrap());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let relayed = relayed.expect("A relayed the message");
    // Our set, on top: the first instance, what A saw, and its seal.
    assert!(relayed.starts_with("ARC-Seal: i=1;"), "{relayed}");
    let seal = field(&relayed, "ARC-Seal");
    assert!(
        seal.contains("cv=none") && seal.contains("d=relay.test") && seal.contains("s=arc"),
        "{seal}"
    );
    let aar = field(&relayed, "ARC-Authentication-Results");
    assert!(
        aar.starts_with("i=1; mx.test;") && aar.contains("dkim=pass") && aar.contains("arc=none"),
        "{aar}"
    );
    assert!(
        field(&relayed, "ARC-Message-Signature").contains("d=relay.test"),
        "{relayed}"
    );
    // The plugin's field is below the seal: covered by it, as A passes the message on.
    assert!(relayed.contains("\r\nX-Tagged: "), "{relayed}");

    // dkimpy verifies the chain with the published key.
    let file = keys.path().join("relayed.eml");
    std::fs::write(&file, &relayed).unwrap();
    let out = run_client(
        tokio::process::Command::new(workspace_root().join(".venv/bin/python3"))
            .arg("-c")
            .arg("import dkim, os\nmsg = open(os.environ['MSG'], 'rb').read()\nrecord = os.environ['RECORD'].encode()\ncv, results, comment = dkim.arc_verify(msg, dnsfunc=lambda name, timeout=5: record)\nprint(cv.decode(), comment)")
            .env("MSG", &file)
            .env("RECORD", &arc_record),
    )
    .await;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with("pass"),
        "dkimpy: {said} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // B: the next hop, verifying; its plugins see the chain.
    let b = TestServer::start(
        &auth_config(&dns),
        &[
            ("auth-echo", plugin("test", "auth-echo")),
            ("wit-0-1-3", plugin("test", "wit-0-1-3")),
        ],
    )
    .await;
    // (A's own fields go: B, too, is called mx.test, and strips what claims to be its own.)
    let tampered = relayed.replacen("Subject: sealed", "Subject: tampered", 1);
    for (data, subject) in [
        (relayed.clone(), "sealed"),
        (tampered, "tampered"),
        (
            message(None, "news@signed.test", "plain", "Hello."),
            "plain",
        ),
    ] {
        let reply = send(b.smtp, "user@signed.test", &data).await;
        assert!(reply.starts_with("250"), "{subject}: {reply}");
    }
    let mail = b.mailbox("bob", 3).await;
    for (subject, arc, ar) in [
        ("sealed", "pass sets=1 domains=relay.test", "arc=pass"),
        ("tampered", "fail sets=1 domains=relay.test", "arc=fail"),
        ("plain", "none sets=0 domains=", "arc=none"),
    ] {
        let m = by_subject(&mail, subject);
        assert_eq!(field(m, "X-Auth-Echo-Arc"), arc, "{subject}");
        assert!(
            field(m, "Authentication-Results").contains(ar),
            "{subject}: {m}"
        );
        assert!(field(m, "X-Wit-0-1-3").starts_with("raw="), "{subject}");
    }
    a.stop().await;
    b.stop().await;
}
