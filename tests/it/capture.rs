//! Capture and exact replay over real SMTP (Python's smtplib) against `sluice serve`: the
//! bundled greylisting (kv and the clock) and dnsbl (DNS) decide live transactions; the
//! records are kept owner-only; after the DNS server's answers and the store have changed,
//! `sluice plugin check --capture` still gives every recorded verdict, while a plain replay of
//! the same message sees today's answers. Another version of a plugin under the same name is
//! reported with both verdicts and exits 1. The console's button keeps the next
//! transactions whatever the rules say.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use sluice_tests::browser::Browser;
use sluice_tests::dns::{Dns, Zone};
use sluice_tests::*;

/// The configuration: greylisting (1 s delay) then dnsbl scoring listed links, a reject
/// threshold the listed link reaches, and capture of `rules`.
fn write_config(dir: &Path, resolver: std::net::SocketAddr, rules: &str) -> std::path::PathBuf {
    let cfg = dir.join("sluice.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nhostname = \"mx.test\"\ndata_dir = {data:?}\n\
             [plugins]\nresolver = \"{resolver}\"\n\
             [plugin.greylisting]\ncapabilities = [\"kv\"]\n\
             [plugin.greylisting.config]\ndelay_secs = 1\n\
             [plugin.dnsbl]\ncapabilities = [\"dns\"]\ntimeout_ms = 2000\n\
             [plugin.dnsbl.config]\nuri_zones.dbl.zone = \"dbl.test\"\nuri_zones.dbl.score = 20.0\n\
             [scoring]\nreject_threshold = 15.0\n\
             [capture]\nenabled = true\n{rules}\n\
             [[listener]]\nkind = \"smtp\"\naddress = \"127.0.0.1:0\"\n\
             [admin]\naddress = \"127.0.0.1:0\"\n\
             [relay]\nlocal_domains = [\"example.org\"]\n[authentication]\nverify = false\n",
            data = dir,
        ),
    )
    .unwrap();
    cfg
}

/// `sluice plugin check` with `args`: (exit code, stdout, stderr).
fn check(cfg: &Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(sluice_bin())
        .args(["plugin", "check", "--config"])
        .arg(cfg)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const LISTED: &str = "Subject: offer\r\n\r\nVisit https://www.spam.test/now\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_transactions_replay_exactly_and_another_version_shows_its_differences() {
    let listed =
        Dns::start(Zone::new().addr("spam.test.dbl.test", "127.0.1.2".parse().unwrap())).await;
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(
        plugin("optional", "30-greylisting"),
        plugins.join("30-greylisting.wasm"),
    )
    .unwrap();
    std::fs::copy(
        plugin("optional", "06-dnsbl"),
        plugins.join("40-dnsbl.wasm"),
    )
    .unwrap();
    let cfg = write_config(dir.path(), listed.addr, "sample = 1.0");
    let s = sluice_tests::serve::Serve::start(&cfg).await;

    // A first attempt is greylisted (the store has no triplet yet); the retry a second later
    // passes greylisting, and its listed link is refused by score; a clean message is queued.
    let script = r#"
import os, smtplib, time
c = smtplib.SMTP("127.0.0.1", int(os.environ["PORT"]), timeout=30)
def send(body):
    try:
        c.sendmail("carol@example.com", ["bob@example.org"], body.encode())
        return "ok"
    except smtplib.SMTPRecipientsRefused as e:
        return str(e.recipients["bob@example.org"][0])
    except smtplib.SMTPDataError as e:
        return str(e.smtp_code)
print(send(os.environ["LISTED"]))
time.sleep(1.5)
print(send(os.environ["LISTED"]))
print(send("Subject: hello\r\n\r\nVisit https://www.example.net/\r\n"))
c.quit()
"#;
    let out = python(
        script,
        &[
            ("PORT", s.smtp.port().to_string()),
            ("LISTED", LISTED.into()),
        ],
    )
    .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["451", "550", "ok"], "{out}");

    // Three records, owner-only, each with what the plugins got from the host.
    let capture = dir.path().join("capture");
    let mut records = Vec::new();
    for _ in 0..100 {
        records = sluice::capture::list(&capture);
        if records.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(records.len(), 3, "{records:?}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&capture), 0o700);
    let read = |i: usize| sluice::capture::replay::read(&records[i].path).unwrap();
    for r in &records {
        assert_eq!(mode(&r.path), 0o600, "{}", r.path.display());
    }
    let (first, second) = (read(0), read(1));
    assert_eq!(first.why, ["sample"]);
    let grey = &first.plugins["greylisting"];
    assert!(
        grey.tape
            .kv
            .iter()
            .any(|e| e.key.starts_with("t:") && e.value.is_none()),
        "the first attempt found no triplet: {grey:?}"
    );
    assert!(!grey.tape.clock.is_empty(), "{grey:?}");
    let dns = &second.plugins["dnsbl"].tape.dns;
    assert!(
        dns.iter()
            .any(|d| d.name == "spam.test.dbl.test." && d.kind == "A"),
        "{dns:?}"
    );
    assert_eq!(second.outcome.as_ref().unwrap().decision.name(), "reject");
    drop(s);

    // Today the list no longer lists the domain, and the store is gone: a plain replay of the
    // message sees that, the capture replay gives every recorded verdict.
    drop(listed);
    let empty = Dns::start(Zone::new()).await;
    let cfg = write_config(dir.path(), empty.addr, "sample = 1.0");
    std::fs::remove_file(dir.path().join("kv.redb")).unwrap();
    let eml = dir.path().join("listed.eml");
    std::fs::write(&eml, LISTED).unwrap();
    let (code, today_out, err) = check(
        &cfg,
        &[
            "--plugin",
            "dnsbl",
            "--mail-from",
            "carol@example.com",
            "--rcpt",
            "bob@example.org",
            eml.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{today_out}{err}");
    assert!(today_out.contains(r#""score":0.0"#), "{today_out}");
    let (code, out, err) = check(&cfg, &["--capture", capture.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("same ")).count(),
        3,
        "{out}"
    );
    assert!(
        err.contains("3 record(s) replayed: 3 the same, 0 with a changed verdict"),
        "{err}"
    );
    let (code, json, err) = check(&cfg, &["--capture", capture.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    for line in json.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(r["verdict_changed"], false, "{line}");
        assert_eq!(r["differences"], serde_json::json!([]), "{line}");
    }

    // Another version under the greylisting name: it never greylists (the tagger tags every
    // message). The report names both files and both verdicts, and the exit status is 1.
    std::fs::copy(
        plugin("test", "tagger"),
        plugins.join("30-greylisting.wasm"),
    )
    .unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("[plugin.greylisting.config]\ndelay_secs = 1\n", ""),
    )
    .unwrap();
    let (code, out, err) = check(&cfg, &["--capture", capture.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.starts_with("CHANGED "), "{out}");
    assert!(out.contains("greylisting: recorded with "), "{out}");
    assert!(
        out.contains(
            r#"greylisting check-recipient: tempfail "451 4.7.1 Greylisted: please try again in 1 seconds" -> not called"#
        ),
        "{out}"
    );
    assert!(
        out.contains("symbol new: greylisting:TAGGED(+1.00)"),
        "{out}"
    );
    assert!(err.contains("with a changed verdict"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_keeps_the_next_transactions_whatever_the_rules() {
    let dns = Dns::start(Zone::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(
        plugin("optional", "06-dnsbl"),
        plugins.join("40-dnsbl.wasm"),
    )
    .unwrap();
    // No rule keeps anything: no sample, failures only, and none happen.
    let cfg = write_config(dir.path(), dns.addr, "");
    let s = sluice_tests::serve::Serve::start(&cfg).await;
    let capture = dir.path().join("capture");
    let r = send_to_bob(s.smtp, "before", "hello").await;
    assert!(r.starts_with("250"), "{r}");
    sluice::smtp_auth::credentials::set_password(
        &dir.path().join("admins"),
        "root",
        "correct horse",
    )
    .unwrap();
    let mut b = Browser::new(s.admin.expect("console address"));
    assert_eq!(b.log_in("root", "correct horse").await.status, 303);
    let page = b.get("/plugins").await;
    assert!(
        page.body.contains("Capture the next transactions"),
        "{}",
        page.body
    );
    let csrf = page.csrf();
    let r = b
        .post("/capture/next", &[("csrf", &csrf), ("count", "0")])
        .await;
    assert!(
        r.body.contains("is not a count of transactions"),
        "{}",
        r.body
    );
    let r = b
        .post("/capture/next", &[("csrf", &csrf), ("count", "2")])
        .await;
    assert!(
        r.body.contains("the next 2 transactions will be captured"),
        "{}",
        r.body
    );
    for i in 0..3 {
        let r = send_to_bob(s.smtp, &format!("after {i}"), "hello").await;
        assert!(r.starts_with("250"), "{r}");
    }
    for _ in 0..100 {
        if sluice::capture::list(&capture).len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // A third would come as quickly as the second did.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let kept = sluice::capture::list(&capture);
    assert_eq!(kept.len(), 2, "{kept:?}");
    for f in &kept {
        let r = sluice::capture::replay::read(&f.path).unwrap();
        assert_eq!(r.why, ["on-demand"]);
    }
    let page = b.get("/plugins").await;
    assert!(page.body.contains("2 records"), "{}", page.body);
}
