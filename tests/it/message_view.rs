//! The parsed view of the message (`message-view`, WIT 0.1.3) as plugins get it: a Rust
//! plugin reads the parts, attachments, links and decoded header fields of a message sent
//! over SMTP with Python's smtplib, and by `sluice plugin check`; a plugin built against
//! the 0.1.2 WIT, which does not know the view, still loads and runs beside it.

use sluice_tests::*;

/// multipart/mixed: a plain and a base64 HTML alternative (the HTML's link only in base64),
/// a PDF with an RFC 2231 file name (`tests/fixtures/mixed.eml`, the host's unit tests' too).
fn mixed() -> String {
    include_str!("../fixtures/mixed.eml").replace('\n', "\r\n")
}

/// What `view-probe` reports for [`mixed`]: (header, value).
const EXPECTED: &[(&str, &str)] = &[
    (
        "X-View-Parts",
        "multipart/mixed@0 multipart/alternative@1 text/plain@2 text/html@2 application/pdf@1",
    ),
    // name|sniffed type|size|sha256 prefix|bytes read back
    (
        "X-View-Attachments",
        "Rechnung über.pdf|application/pdf|15|b5f218923574|15",
    ),
    // The base64 HTML part's link, with its registrable domain (not `co.uk`).
    (
        "X-View-Links",
        "www.example.org=example.org shop.example.co.uk=example.co.uk",
    ),
    ("X-View-Subject", "Rechnung über 5 EUR"),
    ("X-View-From", "Jürgen"),
    ("X-View-Text", "Pay"),
    ("X-View-Raw", "true true"),
    ("X-View-Limits", ""),
];

/// The value of header `name` in `message` (unfolded), if there.
fn field(message: &str, name: &str) -> Option<String> {
    let head = message.split("\r\n\r\n").next().unwrap_or("");
    let unfolded = head.replace("\r\n\t", " ").replace("\r\n ", " ");
    unfolded
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_reads_the_parsed_message_sent_over_smtp() {
    let s = TestServer::start(
        "",
        &[
            ("view-probe", plugin("test", "view-probe")),
            ("wit-0-1-2", plugin("test", "wit-0-1-2")),
        ],
    )
    .await;
    let script = r#"
import os, smtplib
c = smtplib.SMTP("127.0.0.1", int(os.environ["PORT"]), timeout=30)
c.sendmail("jurgen@example.com", ["bob@example.org"], os.environ["MESSAGE"].encode())
c.quit()
print("sent")
"#;
    let out = python(
        script,
        &[("PORT", s.smtp.port().to_string()), ("MESSAGE", mixed())],
    )
    .await;
    assert_eq!(out.trim(), "sent");
    let delivered = s.mailbox("bob", 1).await;
    let m = &delivered[0];
    for (name, want) in EXPECTED {
        assert_eq!(field(m, name).as_deref(), Some(*want), "{name} in:\n{m}");
    }
    // The plugin built against 0.1.2 ran in the same transaction.
    let size = field(m, "X-Wit-0-1-2").expect("the 0.1.2 plugin's field");
    assert!(size.starts_with("raw="), "{size}");
    s.stop().await;
}

#[tokio::test]
async fn plugin_check_gives_the_same_view() {
    let dir = tempfile::tempdir().unwrap();
    let eml = dir.path().join("mixed.eml");
    std::fs::write(&eml, mixed()).unwrap();
    let out = run_client(
        tokio::process::Command::new(sluice_bin())
            .args(["plugin", "check", "--plugin"])
            .arg(plugin("test", "view-probe"))
            .args(["--rcpt", "bob@example.org"])
            .arg(&eml)
            .env("SLUICE_LOG", "error"),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let headers = report["add_headers"].as_array().unwrap();
    for (name, want) in EXPECTED {
        let got = headers
            .iter()
            .find(|h| h["name"] == *name)
            .and_then(|h| h["value"].as_str());
        assert_eq!(got, Some(*want), "{name} in {report}");
    }
}

/// The Python and JavaScript SDKs: each probe reads the same view as the Rust plugin, keeps a
/// counter and a first-seen flag in `kv` across transactions, and looks names up in `dns`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_read_the_view_keep_state_and_look_up_through_their_sdks() {
    use sluice_tests::dns::{Dns, Zone};
    let dns = Dns::start(Zone::new().addr("listed.test", "127.0.0.2".parse().unwrap())).await;
    let rt = runtime_with(scratch_services(Some(dns.addr)));
    let grant = "capabilities = [\"kv\", \"dns\"]\nmemory_mb = 128\ntimeout_ms = 5000\n";
    let cfg = config(&format!(
        "[plugin.py-probe]\n{grant}[plugin.js-probe]\n{grant}"
    ));
    let p = pipeline(
        &rt,
        &cfg,
        &[
            ("py-probe", plugin("test", "py-probe")),
            ("js-probe", plugin("test", "js-probe")),
        ],
    )
    .await
    .expect("the probes load");
    let env = envelope("jurgen@example.com", &["bob@example.org"]);
    for round in 1..=2 {
        let mut txn = p.start(&client(), "t");
        let out = txn.check_message(&env, mixed().as_bytes()).await;
        let value = |name: &str| {
            out.add_headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no {name}: {:?}", txn.calls()))
        };
        for lang in ["Py", "Js"] {
            for (field, want) in [
                ("Parts", EXPECTED[0].1),
                ("Attachments", EXPECTED[1].1),
                ("Links", EXPECTED[2].1),
                ("Subject", EXPECTED[3].1),
                ("Text", "Pay"),
                ("Dns", "127.0.0.2 nxdomain"),
            ] {
                assert_eq!(value(&format!("X-{lang}-{field}")), want, "{lang} {field}");
            }
            let kv = if round == 1 {
                "1/1/True/seen"
            } else {
                "2/2/False/seen"
            };
            assert_eq!(value(&format!("X-{lang}-Kv")), kv, "{lang}, round {round}");
        }
    }
}

/// The Python SDK names its own copy of the WIT in its `componentize-py.toml` (so that a build
/// needs no `-d`): the copy is the contract itself.
#[test]
fn the_python_sdk_carries_the_wit_itself() {
    let root = workspace_root();
    let wit = std::fs::read_to_string(root.join("wit/sluice-filter.wit")).unwrap();
    let copy = root.join("plugin-sdk-python/sluice_plugin/wit/sluice-filter.wit");
    assert!(
        std::fs::read_to_string(&copy).is_ok_and(|c| c == wit),
        "copy wit/sluice-filter.wit to {}",
        copy.display()
    );
    let toml =
        std::fs::read_to_string(root.join("plugin-sdk-python/sluice_plugin/componentize-py.toml"))
            .unwrap();
    assert!(toml.contains("wit_directory = \"wit\""), "{toml}");
}

/// The bundled dnsbl plugin reads the links from the view: the link that is only in the
/// base64 HTML part is found, and `shop.example.co.uk` is looked up as `example.co.uk` (by the
/// Public Suffix List), not as `co.uk`.
#[tokio::test]
async fn dnsbl_looks_up_the_registrable_domains_of_decoded_links() {
    use sluice_tests::dns::{Dns, Zone};
    let dns = Dns::start(
        Zone::new()
            .addr("example.co.uk.dbl.test", "127.0.1.2".parse().unwrap())
            .addr("co.uk.dbl.test", "127.0.1.9".parse().unwrap()),
    )
    .await;
    let rt = runtime_with(scratch_services(Some(dns.addr)));
    let cfg = config(
        "[plugin.dnsbl]\ncapabilities = [\"dns\"]\ntimeout_ms = 2000\n[plugin.dnsbl.config]\nuri_zones.dbl.zone = \"dbl.test\"\nuri_zones.dbl.score = 4.0\n",
    );
    let p = pipeline(&rt, &cfg, &[("dnsbl", plugin("optional", "06-dnsbl"))])
        .await
        .unwrap();
    let env = envelope("jurgen@example.com", &["bob@example.org"]);
    let mut txn = p.start(&client(), "t");
    let out = txn.check_message(&env, mixed().as_bytes()).await;
    let uribl: Vec<(&str, f64, &str)> = out
        .symbols
        .iter()
        .map(|s| (s.name.as_str(), s.score, s.detail.as_str()))
        .collect();
    assert_eq!(
        uribl,
        [("URIBL_DBL", 4.0, "example.co.uk listed in dbl.test")],
        "{:?}",
        txn.calls()
    );
}

/// A message over the parse-ahead size (256 KiB) is parsed whole before the stage, off the
/// plugin thread: the plugin reads the same view, a 300 KB attachment included, in full.
#[tokio::test]
async fn a_large_message_is_parsed_ahead_and_read_whole() {
    use base64::Engine as _;
    let rt = runtime();
    let p = pipeline(
        &rt,
        &config(""),
        &[("view-probe", plugin("test", "view-probe"))],
    )
    .await
    .unwrap();
    let blob: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&blob);
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let attachment = format!(
        "--outer\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"big.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--outer--\r\n",
        lines.join("\r\n")
    );
    let big = mixed().replace("--outer--\r\n", &attachment);
    assert!(big.len() > 256 * 1024);
    let env = envelope("jurgen@example.de", &["bob@example.org"]);
    let mut txn = p.start(&client(), "big");
    let out = txn.check_message(&env, big.as_bytes()).await;
    let attachments = out
        .add_headers
        .iter()
        .find(|(n, _)| n == "X-View-Attachments")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("{:?}", txn.calls()));
    use sha2::Digest as _;
    let sha = hex::encode(sha2::Sha256::digest(&blob));
    assert_eq!(
        attachments,
        format!(
            "{}|application/pdf|15|b5f218923574|15 big.bin||300000|{}|300000",
            EXPECTED[1].1.split('|').next().unwrap(),
            &sha[..12]
        )
    );
}

/// Hostile MIME over a real socket: 10,000 parts, each with two links, sent with smtplib. The
/// message is accepted, and the plugin reads a view cut at its bounds, saying so. (The probe
/// lists every part and link in its header fields: it is allowed the room.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_parts_over_smtp_give_a_bounded_view() {
    let s = TestServer::start(
        "[plugin.view-probe]\nmax_header_bytes = 262144\n",
        &[("view-probe", plugin("test", "view-probe"))],
    )
    .await;
    let script = r#"
import os, smtplib
parts = "".join(f"--b\r\nContent-Type: text/plain\r\n\r\nhttp://h{i}.example.com/ http://k{i}.example.net/\r\n" for i in range(10000))
msg = ("From: a@example.com\r\nTo: bob@example.org\r\nSubject: many\r\nMIME-Version: 1.0\r\n"
       "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n" + parts + "--b--\r\n")
c = smtplib.SMTP("127.0.0.1", int(os.environ["PORT"]), timeout=60)
c.sendmail("a@example.com", ["bob@example.org"], msg.encode())
c.quit()
print("sent")
"#;
    let out = python(script, &[("PORT", s.smtp.port().to_string())]).await;
    assert_eq!(out.trim(), "sent");
    let m = &s.mailbox("bob", 1).await[0];
    assert_eq!(
        field(m, "X-View-Limits").as_deref(),
        Some("parts,links"),
        "{}",
        &m[..2000.min(m.len())]
    );
    let parts = field(m, "X-View-Parts").unwrap();
    assert_eq!(parts.split(' ').count(), 1000, "the parts bound");
    s.stop().await;
}
