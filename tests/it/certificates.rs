//! Several certificates chosen by SNI, with a default for clients that send no name, on
//! STARTTLS and implicit TLS, checked by a real TLS client (Python's `ssl`, verifying against
//! the test's CA); files replaced under the running server serve the next connection, and a
//! broken replacement is refused while the certificate in service stays.

use std::path::Path;

use sluice_tests::ca::Ca;
use sluice_tests::*;

/// The SHA-256 of the certificate the server shows for each (port, STARTTLS?, SNI name),
/// its chain verified against the test's CA in `ca`.
async fn seen(ca: &Path, asks: &[(u16, bool, &str)]) -> Vec<String> {
    sluice_tests::ca::served(&std::fs::read_to_string(ca).unwrap(), asks, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_name_asked_chooses_the_certificate_and_replaced_files_serve_the_next_connection() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    let ca = Ca::new();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let default = ca.leaf(dir, "default", &["mx.default.test"]);
    let a = ca.leaf(dir, "a", &["mx.a.test"]);
    let b = ca.leaf(dir, "b", &["mx.b.test", "*.b.test"]);
    let file = |f: &str| dir.join(f).display().to_string();
    let s = TestServer::start(
        &format!(
            "[tls]\ncert = {:?}\nkey = {:?}\nreload_check_secs = 1\n\
             [[tls.certificate]]\nnames = [\"mx.a.test\"]\ncert = {:?}\nkey = {:?}\n\
             [[tls.certificate]]\nnames = [\"mx.b.test\", \"*.b.test\"]\ncert = {:?}\nkey = {:?}\n\
             [metrics]\naddress = \"127.0.0.1:0\"\n",
            file("default.crt"),
            file("default.key"),
            file("a.crt"),
            file("a.key"),
            file("b.crt"),
            file("b.key"),
        ),
        &[],
    )
    .await;
    let (smtp, smtps) = (s.smtp.port(), s.smtps.port());
    let got = seen(
        &ca_file,
        &[
            (smtp, true, "mx.a.test"),
            (smtp, true, "mx.b.test"),
            (smtp, true, ""),
            (smtps, false, "mx.a.test"),
            (smtps, false, "relay.b.test"),
            (smtps, false, ""),
            (smtps, false, "unknown.test"),
        ],
    )
    .await;
    assert_eq!(
        got,
        [&a, &b, &default, &a, &b, &default, &default].map(String::clone)
    );

    // A new pair for b, written under the running server: the next connection gets it.
    let b2 = ca.leaf(dir, "b", &["mx.b.test"]);
    let mut now = Vec::new();
    for _ in 0..50 {
        now = seen(&ca_file, &[(smtps, false, "mx.b.test")]).await;
        if now == [b2.clone()] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        now,
        std::slice::from_ref(&b2),
        "the replaced certificate within 10 s"
    );
    // A broken replacement is refused: b2 stays, and the others are untouched.
    std::fs::write(
        dir.join("b.crt"),
        "-----BEGIN CERTIFICATE-----\nnot base64\n",
    )
    .unwrap();
    // Once the watcher has counted the refusal (bounded: 10 s), b2 is still served.
    let metrics = s.metrics.unwrap().to_string();
    let refused = r#"sluice_reloads_total{kind="certificate",result="failed"} 1"#;
    for _ in 0..50 {
        if scrape(&metrics).await.contains(refused) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let text = scrape(&metrics).await;
    assert!(text.contains(refused), "{text}");
    let got = seen(
        &ca_file,
        &[(smtps, false, "mx.b.test"), (smtp, true, "mx.a.test")],
    )
    .await;
    assert_eq!(got, [b2, a.clone()]);
}
