//! MTA-STS (RFC 8461) on MX delivery, all on loopback: the tests' DNS server publishes MX
//! records and `_mta-sts` TXT records, a Python HTTPS server (certificate from the test's CA)
//! serves the policies, and Sluice B is every domain's MX host, with a certificate for
//! `mx.good.test` only. Sluice A (`sluice serve`, trusting the test's CA) relays to them:
//! - enforce, matching MX, valid certificate: delivered, over verified TLS;
//! - enforce, certificate not for the MX host: deferred, never sent;
//! - enforce, MX host not in the policy: deferred, never sent;
//! - testing, mismatching MX and certificate: delivered;
//! - no policy: delivered (opportunistic, as without MTA-STS);
//! - REQUIRETLS to the enforce domain: delivered (the MX host is authenticated by the policy);
//! - `TLS-Required: No` to the domain with the wrong certificate: delivered (RFC 8689 §5);
//!
//! and after a restart with the policy server gone, the cached policy still applies. With
//! `[reports] tls` on, A sends TLS reports (RFC 8460) to the `rua` of `_smtp._tls` records:
//! a capture sink gets them, gzipped JSON counting the sessions.

use std::path::Path;
use std::time::Duration;

use mail_parser::MimeHeaders as _;
use sluice_tests::dns::{Dns, Zone};
use sluice_tests::peers::free_port;
use sluice_tests::serve::{Serve, delivery_lines, queue_show, relay_config};
use sluice_tests::*;
use tokio::io::AsyncBufReadExt as _;

const DOMAINS: [&str; 8] = [
    "good.test",
    "badcert.test",
    "elsewhere.test",
    "testing.test",
    "plain.test",
    // Policy servers that misbehave: a policy past 64 KiB, one served as HTML, a redirect.
    "huge.test",
    "html.test",
    "redirect.test",
];

/// Serves `policies` (host → text) at `/.well-known/mta-sts.txt` over HTTPS on `port`.
async fn policy_server(
    dir: &Path,
    port: u16,
    policies: &serde_json::Value,
) -> tokio::process::Child {
    let script = r#"
import http.server, json, os, ssl
policies = json.loads(os.environ["POLICIES"])
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        # TLS reports POSTed to https://tlsrpt.reports.test/tlsrpt: kept as files.
        if self.path != "/tlsrpt" or not self.headers.get("Host", "").startswith("tlsrpt."):
            self.send_error(404)
            return
        body = self.rfile.read(int(self.headers["Content-Length"]))
        kind = self.headers.get("Content-Type", "")
        name = os.path.join(os.environ["POSTS"], "%d.%s" % (len(os.listdir(os.environ["POSTS"])), kind.replace("/", "_")))
        with open(name, "wb") as f:
            f.write(body)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def do_GET(self):
        body = policies.get(self.headers.get("Host", "").split(":")[0])
        if self.path != "/.well-known/mta-sts.txt" or body is None:
            self.send_error(404)
            return
        host = self.headers.get("Host", "")
        if host.startswith("mta-sts.redirect."):
            self.send_response(302)
            self.send_header("Location", "https://mta-sts.good.test/.well-known/mta-sts.txt")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if host.startswith("mta-sts.huge."):
            body += "x-padding: yes\r\n" * 7000
        b = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html" if host.startswith("mta-sts.html.") else "text/plain")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *args):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(os.environ["CERT"], os.environ["KEY"])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("ready", flush=True)
srv.serve_forever()
"#;
    std::fs::create_dir_all(dir.join("posts")).unwrap();
    let mut child = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("POLICIES", policies.to_string())
        .env("PORT", port.to_string())
        .env("CERT", dir.join("policies.crt"))
        .env("KEY", dir.join("policies.key"))
        .env("POSTS", dir.join("posts"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await;
    assert!(
        matches!(ready, Ok(Ok(Some(ref l))) if l == "ready"),
        "{ready:?}"
    );
    child
}

async fn send(port: u16, mails: &[(&str, bool)]) -> String {
    let script = r#"
import os, smtplib, ssl
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
c = smtplib.SMTP("127.0.0.1", int(os.environ["PORT"]), local_hostname="client.test", timeout=30)
c.starttls(context=ctx)
c.ehlo("client.test")
for mail in os.environ["MAILS"].split(";"):
    to, requiretls = mail.split(",")
    opts = ["REQUIRETLS"] if requiretls == "1" else []
    # The sender of "relaxed@…" asks that the domain's TLS policy be ignored (RFC 8689 §5).
    extra = "TLS-Required: No\r\n" if to.startswith("relaxed@") else ""
    c.sendmail("carol@a.test", [to], ("Subject: to " + to + "\r\n" + extra + "\r\nhello\r\n").encode(), mail_options=opts)
c.quit()
print("sent")
"#;
    let mails = mails
        .iter()
        .map(|(to, r)| format!("{to},{}", u8::from(*r)))
        .collect::<Vec<_>>()
        .join(";");
    python(script, &[("PORT", port.to_string()), ("MAILS", mails)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mta_sts_policies_decide_where_and_how_mail_for_a_domain_may_go() {
    let certs = tempfile::tempdir().unwrap();
    let ca = ca::Ca::new();
    std::fs::write(certs.path().join("ca.pem"), ca.pem()).unwrap();
    ca.leaf(certs.path(), "other", &["other.test"]);
    ca.leaf(certs.path(), "good", &["mx.good.test"]);
    let mut policy_hosts: Vec<String> = DOMAINS.iter().map(|d| format!("mta-sts.{d}")).collect();
    policy_hosts.push("tlsrpt.reports.test".to_string());
    let hosts: Vec<&str> = policy_hosts.iter().map(String::as_str).collect();
    ca.leaf(certs.path(), "policies", &hosts);
    let file = |f: &str| certs.path().join(f).display().to_string();

    // B: every domain's MX host; its default certificate is for other.test.
    let b = TestServer::start(
        &format!(
            "[tls]\ncert = {:?}\nkey = {:?}\n\
             [[tls.certificate]]\nnames = [\"mx.good.test\"]\ncert = {:?}\nkey = {:?}\n\
             [relay]\nlocal_domains = {DOMAINS:?}\n",
            file("other.crt"),
            file("other.key"),
            file("good.crt"),
            file("good.key"),
        ),
        &[],
    )
    .await;
    let policy = |mode: &str, mx: &str| {
        format!("version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: 86400\r\n")
    };
    let policies = serde_json::json!({
        "mta-sts.good.test": policy("enforce", "mx.good.test"),
        "mta-sts.badcert.test": policy("enforce", "*.badcert.test"),
        "mta-sts.elsewhere.test": policy("enforce", "mx.other.test"),
        "mta-sts.testing.test": policy("testing", "mx.other.test"),
        "mta-sts.huge.test": policy("enforce", "mx.other.test"),
        "mta-sts.html.test": policy("enforce", "mx.other.test"),
        "mta-sts.redirect.test": policy("enforce", "mx.other.test"),
    });
    let https = free_port();
    let server = policy_server(certs.path(), https, &policies).await;
    let mut zone = Zone::new();
    for d in DOMAINS {
        zone = zone
            .mx(d, 10, &format!("mx.{d}"))
            .addr(&format!("mx.{d}"), [127, 0, 0, 1].into())
            .addr(&format!("mta-sts.{d}"), [127, 0, 0, 1].into());
        if d != "plain.test" {
            zone = zone.txt(&format!("_mta-sts.{d}"), "v=STSv1; id=20261207;");
        }
    }
    // good.test also wants its reports POSTed.
    zone = zone
        .txt(
            "_smtp._tls.good.test",
            &format!(
                "v=TLSRPTv1; rua=mailto:tlsrpt@reports.test,https://tlsrpt.reports.test:{https}/tlsrpt"
            ),
        )
        .txt(
            "_smtp._tls.badcert.test",
            "v=TLSRPTv1; rua=mailto:tlsrpt@reports.test",
        )
        .addr("tlsrpt.reports.test", [127, 0, 0, 1].into());
    let reports = sluice_tests::sink::Sink::tcp("127.0.0.1:0", Default::default())
        .await
        .unwrap();
    let dns = Dns::start(zone).await;

    // A: the relay under test, trusting the test's CA.
    let a_dir = tempfile::tempdir().unwrap();
    let cfg = relay_config(
        a_dir.path(),
        &format!(
            "[delivery]\nresolver = \"{}\"\nmta_sts_port = {https}\nretry_secs = [3600]\n\
             [reports]\ntls = true\ninterval_secs = 2\norganization = \"A Relay\"\n\
             [[route]]\ndomains = [\"reports.test\"]\nkind = \"smtp\"\nhost = \"127.0.0.1:{}\"\ntls = \"none\"\n\
             [[route]]\ndomains = [\"*\"]\nkind = \"mx\"\nport = {}\n",
            dns.addr,
            reports.addr.unwrap().port(),
            b.smtp.port()
        ),
    );
    let roots = certs.path().join("ca.pem");
    let start_a = || Serve::start_trusting(&cfg, &roots);
    let mut a = start_a().await;
    let out = send(
        a.smtp.port(),
        &[
            ("good@good.test", false),
            ("bad@badcert.test", false),
            ("else@elsewhere.test", false),
            ("testing@testing.test", false),
            ("plain@plain.test", false),
            ("strict@good.test", true),
            ("relaxed@badcert.test", false),
            ("huge@huge.test", false),
            ("html@html.test", false),
            ("redirect@redirect.test", false),
        ],
    )
    .await;
    assert_eq!(out.trim(), "sent");
    let log = cfg.with_extension("log");

    // Delivered: the enforce domain over verified TLS, the testing and the plain domains, and
    // with `TLS-Required: No` the domain whose MX host's certificate is not for it.
    for (user, domain, policy) in [
        ("good", "good", "mta-sts:enforce id=20261207"),
        ("strict", "good", "mta-sts:enforce id=20261207"),
        ("testing", "testing", "mta-sts:testing id=20261207"),
        ("plain", "plain", "none"),
        ("relaxed", "badcert", "mta-sts:enforce id=20261207"),
        // A policy that could not be fetched is no policy (RFC 8461 §5), and says why.
        ("huge", "huge", "none"),
        ("html", "html", "none"),
        ("redirect", "redirect", "none"),
    ] {
        let got = b.mailbox(user, 1).await;
        assert_eq!(got.len(), 1, "{user}");
        assert!(got[0].contains("with ESMTPS"), "{user}: {}", got[0]);
        let lines = delivery_lines(&log, &format!("{user}@{domain}.test")).await;
        assert!(lines[0].contains("outcome=delivered"), "{lines:?}");
        let field = if policy == "none" {
            "policy=none".to_string()
        } else {
            format!("policy=\"{policy}\"")
        };
        assert!(lines[0].contains(&field), "{lines:?}");
    }
    let log_text = std::fs::read_to_string(&log).unwrap();
    for (domain, why) in [
        ("huge.test", "body: length limit exceeded"),
        ("html.test", "not text/plain"),
        ("redirect.test", "HTTP status 302 Found"),
    ] {
        assert!(
            log_text
                .lines()
                .any(|l| l.contains("MTA-STS policy not fetched")
                    && l.contains(&format!("domain={domain}"))
                    && l.contains(why)),
            "{domain}: {why}:\n{log_text}"
        );
    }
    // Deferred and never sent: a certificate not for the MX host, an MX host not listed.
    let bad = delivery_lines(&log, "bad@badcert.test").await;
    assert!(
        bad[0].contains("outcome=deferred")
            && bad[0].contains("451 4.7.5 MTA-STS policy of badcert.test")
            && bad[0].contains("policy=\"mta-sts:enforce id=20261207\""),
        "{bad:?}"
    );
    let elsewhere = delivery_lines(&log, "else@elsewhere.test").await;
    assert!(
        elsewhere[0].contains("outcome=deferred")
            && elsewhere[0].contains("none of its MX hosts is listed"),
        "{elsewhere:?}"
    );
    for user in ["bad", "else"] {
        assert!(
            !b.dir.path().join("maildir").join(user).exists(),
            "{user} must not reach the MX host"
        );
    }
    // `sluice queue show` names the policy of each attempt.
    let show = queue_show(&cfg, &bad[0]);
    assert!(
        show.contains("(policy mta-sts:enforce id=20261207)"),
        "{show}"
    );
    // The policies are kept on disk, owner-only.
    let kept = a_dir.path().join("mta-sts/badcert.test.json");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // TLS reports: good.test's counts two verified sessions under its enforce policy;
    // badcert.test's one session without the policy (TLS-Required: No) and the failure of
    // the certificate for another name. Periods are 2 s: a domain's counts may come in
    // several reports, summed here (bounded: 30 s).
    let mut sums = std::collections::BTreeMap::new();
    let want = [("good.test", (2, 0, false)), ("badcert.test", (1, 1, true))];
    for _ in 0..60 {
        sums.clear();
        for r in reports.messages() {
            assert_eq!(r.rcpts, ["tlsrpt@reports.test"]);
            let parsed = mail_parser::MessageParser::new().parse(&r.data).unwrap();
            let domain = parsed
                .header_raw("TLS-Report-Domain")
                .unwrap()
                .trim()
                .to_string();
            assert!(
                parsed
                    .content_type()
                    .and_then(|c| c.attribute("report-type"))
                    == Some("tlsrpt")
            );
            let json: serde_json::Value =
                serde_json::from_str(&r.gzipped_report("tlsrpt+gzip")).unwrap();
            assert_eq!(json["organization-name"], "A Relay");
            let p = &json["policies"][0];
            assert_eq!(p["policy"]["policy-type"], "sts", "{json}");
            assert_eq!(p["policy"]["policy-domain"], domain.as_str());
            let e = sums.entry(domain).or_insert((0, 0, false));
            e.0 += p["summary"]["total-successful-session-count"]
                .as_u64()
                .unwrap();
            e.1 += p["summary"]["total-failure-session-count"]
                .as_u64()
                .unwrap();
            e.2 |= p["failure-details"].as_array().unwrap().iter().any(|d| {
                d["result-type"] == "certificate-host-mismatch"
                    && d["receiving-mx-hostname"] == "mx.badcert.test"
            });
        }
        if want.iter().all(|(d, w)| sums.get(*d) == Some(w)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (d, w) in want {
        assert_eq!(sums.get(d), Some(&w), "{d}: {sums:?}");
    }
    // The same reports of good.test, POSTed (gzip, application/tlsrpt+gzip).
    let mut posted = 0;
    for _ in 0..60 {
        posted = 0;
        for f in std::fs::read_dir(certs.path().join("posts")).unwrap() {
            let f = f.unwrap().path();
            assert!(
                f.to_string_lossy().ends_with("application_tlsrpt+gzip"),
                "{f:?}"
            );
            let gz = std::fs::read(&f).unwrap();
            let mut json = String::new();
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut json)
                .unwrap();
            let json: serde_json::Value = serde_json::from_str(&json).unwrap();
            let p = &json["policies"][0];
            assert_eq!(p["policy"]["policy-domain"], "good.test");
            posted += p["summary"]["total-successful-session-count"]
                .as_u64()
                .unwrap();
        }
        if posted == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(posted, 2, "good.test's sessions, POSTed");

    // Restarted, with the policy server gone: the cached policy still applies.
    drop(server);
    a.signal("TERM");
    assert!(a.exited(Duration::from_secs(30)).await.success());
    let a = start_a().await;
    let out = send(a.smtp.port(), &[("bad2@badcert.test", false)]).await;
    assert_eq!(out.trim(), "sent");
    let bad2 = delivery_lines(&log, "bad2@badcert.test").await;
    assert!(
        bad2[0].contains("outcome=deferred")
            && bad2[0].contains("policy=\"mta-sts:enforce id=20261207\""),
        "{bad2:?}"
    );
    assert!(!b.dir.path().join("maildir/bad2").exists());
}
