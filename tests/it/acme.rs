//! ACME certificates against Debian's `pebble` (the ACME test CA) on loopback, with
//! `sluice serve` as operators run it: Sluice obtains a certificate for its name by answering
//! TLS-ALPN-01 on its smtps listener, serves it on STARTTLS and implicit TLS (Python's `ssl`
//! verifies it against pebble's root), renews it without a restart before it expires
//! (pebble issues 60-second certificates here), and after an order the CA refuses says why in
//! the log and the metrics while the certificate in service stays. A second test obtains one
//! by HTTP-01, and by TLS-ALPN-01 on an address of its own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice_tests::dns::{Dns, Zone};
use sluice_tests::peers::free_port;
use sluice_tests::serve::Serve;
use sluice_tests::*;

/// A pebble process, killed when dropped.
struct Pebble {
    child: tokio::process::Child,
    /// The ACME directory URL, and its port.
    directory: String,
    listen: u16,
    /// The management interface (pebble's roots).
    management: SocketAddr,
    /// The CA of pebble's own HTTPS (made by the test).
    https_ca: PathBuf,
}

impl Pebble {
    /// Starts pebble with its checks resolved by `dns`, made on `tls_port` (TLS-ALPN-01) and
    /// `http_port` (HTTP-01); `blocked` names it refuses; certificates valid for `validity`.
    async fn start(
        dir: &Path,
        dns: SocketAddr,
        checks: (u16, u16),
        blocked: &str,
        validity: Duration,
    ) -> Pebble {
        let ca = ca::Ca::new();
        std::fs::write(dir.join("pebble-https-ca.pem"), ca.pem()).unwrap();
        ca.leaf(dir, "pebble-https", &["127.0.0.1", "localhost"]);
        let ports = (free_port(), free_port());
        Pebble::start_on(dir, dns, checks, blocked, validity, ports).await
    }

    /// [`Pebble::start`] on the given (directory, management) ports, with the HTTPS
    /// certificate already in `dir`: a restart, which forgets every account.
    async fn start_on(
        dir: &Path,
        dns: SocketAddr,
        (tls_port, http_port): (u16, u16),
        blocked: &str,
        validity: Duration,
        (listen, management): (u16, u16),
    ) -> Pebble {
        let https_ca = dir.join("pebble-https-ca.pem");
        let config = dir.join("pebble.json");
        let json = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.join("pebble-https.crt"),
            "privateKey": dir.join("pebble-https.key"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "domainBlocklist": [blocked],
            "certificateValidityPeriod": validity.as_secs(),
        }});
        std::fs::write(&config, json.to_string()).unwrap();
        let child = tokio::process::Command::new("pebble")
            .arg("-config")
            .arg(&config)
            .arg("-dnsserver")
            .arg(dns.to_string())
            // No random sleeps before checks, no refused nonces, no authorization reuse:
            // every order is checked again on the running server.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("pebble.log"))
                    .unwrap(),
            )
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("pebble starts (Debian package pebble)");
        let pebble = Pebble {
            child,
            directory: format!("https://127.0.0.1:{listen}/dir"),
            listen,
            management: ([127, 0, 0, 1], management).into(),
            https_ca,
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", listen))
                .await
                .is_ok()
            {
                return pebble;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("pebble did not listen within 10 s");
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A `sluice serve` configuration for the ACME name `mx.acme.test`; `acme` is the rest of
/// `[tls.acme]`, `listeners` the `[[listener]]` tables.
fn write_config(dir: &Path, pebble: &Pebble, names: &str, acme: &str, listeners: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    let cfg = dir.join("sluice.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nhostname = \"mx.acme.test\"\ndata_dir = {data:?}\n\
             {listeners}\
             [metrics]\naddress = \"127.0.0.1:0\"\n\
             [tls]\nreload_check_secs = 0\n\
             [tls.acme]\ndirectory = {directory:?}\ncontact = [\"mailto:postmaster@acme.test\"]\n\
             names = {names}\nterms_agreed = true\nca_file = {ca:?}\n{acme}\n\
             [relay]\nlocal_domains = [\"acme.test\"]\n[authentication]\nverify = false\n",
            data = dir,
            directory = pebble.directory,
            ca = pebble.https_ca,
        ),
    )
    .unwrap();
    cfg
}

/// For each (port, STARTTLS?, SNI name): the SHA-256 of the certificate served, verified
/// against pebble's root (fetched from its management interface) and for `mx.acme.test`, or
/// `refused:WHY`.
async fn served(pebble: &Pebble, asks: &[(u16, bool, &str)]) -> Vec<String> {
    let root = tokio::process::Command::new("curl")
        .args(["-sf", "--max-time", "10", "--cacert"])
        .arg(&pebble.https_ca)
        .arg(format!("https://{}/roots/0", pebble.management))
        .output()
        .await
        .unwrap();
    assert!(root.status.success(), "pebble's root: {root:?}");
    ca::served(
        &String::from_utf8_lossy(&root.stdout),
        asks,
        Some("mx.acme.test"),
    )
    .await
}

/// Sets `[tls.acme] names` of `cfg` (written for `mx.acme.test`) to `names`, and reloads.
fn reload_with_names(s: &Serve, cfg: &Path, names: &str) {
    let text = std::fs::read_to_string(cfg)
        .unwrap()
        .replace("names = [\"mx.acme.test\"]", &format!("names = {names}"));
    std::fs::write(cfg, text).unwrap();
    s.signal("HUP");
}

/// The SHA-256 of the first certificate in Sluice's ACME file.
fn on_disk(data: &Path) -> String {
    use sha2::Digest as _;
    let pem = std::fs::read(data.join("acme/certificate.pem")).unwrap();
    let first = rustls_pemfile::certs(&mut &pem[..])
        .next()
        .unwrap()
        .unwrap();
    hex::encode(sha2::Sha256::digest(first.as_ref()))
}

/// The value of the metric line that starts with `name` (0 when absent).
async fn metric(s: &Serve, name: &str) -> f64 {
    let body = s.get("/metrics").await.1;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits (bounded by `within`) until the metric `name` reaches `at_least`; the server's log
/// (beside `cfg`) is shown if it does not.
async fn metric_reaches(s: &Serve, cfg: &Path, name: &str, at_least: f64, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while metric(s, name).await < at_least {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never reached {at_least} within {within:?}; the log:\n{}",
            std::fs::read_to_string(cfg.with_extension("log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const ISSUED: &str = "sluice_acme_orders_total{result=\"issued\"}";
const FAILED: &str = "sluice_acme_orders_total{result=\"failed\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_the_ca_is_served_renewed_without_a_restart_and_kept_when_an_order_fails()
 {
    let dir = tempfile::tempdir().unwrap();
    let dns = Dns::start(
        Zone::new()
            .addr("mx.acme.test", [127, 0, 0, 1].into())
            .addr("blocked.acme.test", [127, 0, 0, 1].into()),
    )
    .await;
    let smtps = free_port();
    let pebble = Pebble::start(
        dir.path(),
        dns.addr,
        (smtps, free_port()),
        "blocked.acme.test",
        Duration::from_secs(60),
    )
    .await;
    let listeners = format!(
        "[[listener]]\nkind = \"smtp\"\naddress = \"127.0.0.1:0\"\n\
         [[listener]]\nkind = \"smtps\"\naddress = \"127.0.0.1:{smtps}\"\n"
    );
    let cfg = write_config(dir.path(), &pebble, "[\"mx.acme.test\"]", "", &listeners);
    let mut s = Serve::start(&cfg).await;
    let pid = s.pid();
    let smtp = s.smtp.port();

    // The first certificate: ordered at start (a self-signed stand-in until it comes), its
    // name checked by TLS-ALPN-01 on the smtps listener.
    metric_reaches(&s, &cfg, ISSUED, 1.0, Duration::from_secs(60)).await;
    let first = on_disk(dir.path());
    let got = served(
        &pebble,
        &[
            (smtp, true, "mx.acme.test"),
            (smtp, true, ""),
            (smtps, false, "mx.acme.test"),
            (smtps, false, ""),
        ],
    )
    .await;
    assert_eq!(
        got,
        vec![first.clone(); 4],
        "verified against pebble's root"
    );
    let log = std::fs::read_to_string(cfg.with_extension("log")).unwrap();
    assert!(
        log.contains("answered the ACME CA's TLS-ALPN-01 check"),
        "{log}"
    );
    // Kept owner-only: the account key and the certificate's key.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &str| {
        std::fs::metadata(dir.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(
        (
            mode("acme"),
            mode("acme/account.json"),
            mode("acme/certificate.pem")
        ),
        (0o700, 0o600, 0o600)
    );
    let expiry = metric(&s, "sluice_acme_certificate_expiry_timestamp_seconds").await;
    assert!(expiry > 1.7e9, "{expiry}");

    // Renewed when a third of its 60 s is left, by the same process: new connections get
    // the new certificate.
    metric_reaches(&s, &cfg, ISSUED, 2.0, Duration::from_secs(90)).await;
    let second = on_disk(dir.path());
    assert_ne!(second, first);
    let got = served(&pebble, &[(smtps, false, "mx.acme.test"), (smtp, true, "")]).await;
    assert_eq!(got, vec![second.clone(); 2]);
    assert_eq!(s.pid(), pid);

    // A name the CA refuses, added by a reload: the order fails, the log says why, and the
    // certificate in service stays.
    reload_with_names(&s, &cfg, "[\"mx.acme.test\", \"blocked.acme.test\"]");
    metric_reaches(&s, &cfg, FAILED, 1.0, Duration::from_secs(30)).await;
    let now = on_disk(dir.path());
    let got = served(&pebble, &[(smtps, false, "mx.acme.test"), (smtp, true, "")]).await;
    assert_eq!(
        got,
        vec![now.clone(); 2],
        "the certificate in service stays"
    );
    let log = std::fs::read_to_string(cfg.with_extension("log")).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("ACME: no certificate; the one in service stays"))
        .unwrap_or_else(|| panic!("no failure line in:\n{log}"));
    assert!(line.contains("blocked.acme.test"), "{line}");
    assert!(line.contains("rejectedIdentifier"), "{line}");
    assert!(line.contains("retry_in_secs="), "{line}");
    s.signal("TERM");
    assert!(s.exited(Duration::from_secs(30)).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_is_obtained_by_http_01_and_by_tls_alpn_01_on_an_address_of_its_own() {
    let dns = Dns::start(
        Zone::new()
            .addr("mx.acme.test", [127, 0, 0, 1].into())
            .addr("mail.acme.test", [127, 0, 0, 1].into()),
    )
    .await;
    let smtp_only = "[[listener]]\nkind = \"smtp\"\naddress = \"127.0.0.1:0\"\n";
    for challenge in ["http-01", "tls-alpn-01"] {
        let dir = tempfile::tempdir().unwrap();
        let (alpn, http) = (free_port(), free_port());
        let pebble = Pebble::start(
            dir.path(),
            dns.addr,
            (alpn, http),
            "blocked.acme.test",
            Duration::from_secs(86_400),
        )
        .await;
        let acme = match challenge {
            "http-01" => format!("challenge = \"http-01\"\nhttp_listen = \"127.0.0.1:{http}\"\n"),
            _ => format!("tls_alpn_listen = \"127.0.0.1:{alpn}\"\n"),
        };
        let cfg = write_config(dir.path(), &pebble, "[\"mx.acme.test\"]", &acme, smtp_only);
        // check-config says ok and leaves nothing behind (it may run as another user).
        let check = std::process::Command::new(sluice_bin())
            .arg("check-config")
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
        assert!(!dir.path().join("acme").exists());
        let s = Serve::start(&cfg).await;
        metric_reaches(&s, &cfg, ISSUED, 1.0, Duration::from_secs(60)).await;
        let got = served(&pebble, &[(s.smtp.port(), true, "mx.acme.test")]).await;
        assert_eq!(got, [on_disk(dir.path())], "{challenge}");
        if challenge == "tls-alpn-01" {
            // The CA forgets the account (pebble restarted: its data is in memory); a name
            // added by a reload is ordered with a new account, without a failure.
            let ports = (pebble.listen, pebble.management.port());
            drop(pebble);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let pebble = Pebble::start_on(
                dir.path(),
                dns.addr,
                (alpn, http),
                "blocked.acme.test",
                Duration::from_secs(86_400),
                ports,
            )
            .await;
            reload_with_names(&s, &cfg, "[\"mx.acme.test\", \"mail.acme.test\"]");
            metric_reaches(&s, &cfg, ISSUED, 2.0, Duration::from_secs(60)).await;
            assert_eq!(metric(&s, FAILED).await, 0.0);
            let log = std::fs::read_to_string(cfg.with_extension("log")).unwrap();
            assert!(log.contains("does not know the kept account"), "{log}");
            let got = served(&pebble, &[(s.smtp.port(), true, "mail.acme.test")]).await;
            assert_eq!(got, [on_disk(dir.path())]);
        }
        if challenge == "http-01" {
            // Nothing but open checks is answered there.
            let out = tokio::process::Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!(
                    "http://127.0.0.1:{http}/.well-known/acme-challenge/nope"
                ))
                .output()
                .await
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
        }
    }
}
