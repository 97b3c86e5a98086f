//! Signed plugins, with the `sluice` binary as an operator runs it: `plugin keygen`, `plugin
//! sign`, a configuration that requires signatures, `plugin list` naming each refusal, a
//! server that serves mail over SMTP (Python's smtplib) through the signed plugin and says who
//! signed it (`plugin list` and the console), and a live plugin directory where an unsigned
//! file waits until it is signed.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sluice_tests::serve::Serve;
use sluice_tests::*;

fn sluice(args: &[&str], extra: &[&Path]) -> std::process::Output {
    Command::new(sluice_bin())
        .args(args)
        .args(extra)
        .output()
        .expect("sluice runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `sluice plugin sign FILE --key KEY [--allow ...]`, which must succeed.
fn sign(file: &Path, key: &Path, allow: &[&str]) {
    let mut args = vec!["plugin", "sign"];
    args.extend(allow.iter().flat_map(|a| ["--allow", a]));
    let out = Command::new(sluice_bin())
        .args(&args)
        .arg(file)
        .arg("--key")
        .arg(key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("signed by ed25519:"),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_plugins_signed_by_a_trusted_key_unchanged_and_within_their_allowances_load() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("alice.key");

    // A key pair: the secret owner-only, the public line ready for trusted_keys.
    let out = sluice(
        &["plugin", "keygen", "--name", "Alice Example", "--out"],
        &[&key],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the signing key is owner-only");
    let public = std::fs::read_to_string(dir.path().join("alice.key.pub")).unwrap();
    let public = public.trim();
    assert!(
        public.starts_with("ed25519:") && public.ends_with(" Alice Example"),
        "{public}"
    );
    // A second keygen never overwrites the key.
    let again = sluice(&["plugin", "keygen", "--out"], &[&key]);
    assert!(!again.status.success() && text(&again.stderr).contains("exists already"));

    // The plugin directory: a signed plugin, one signed without the capabilities it imports,
    // one changed after signing, and one unsigned.
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let tagger = plugins.join("10-tagger.wasm");
    std::fs::copy(plugin("test", "tagger"), &tagger).unwrap();
    sign(&tagger, &key, &[]);
    let probe = plugins.join("20-kv-probe.wasm");
    std::fs::copy(plugin("test", "kv-probe"), &probe).unwrap();
    sign(&probe, &key, &["kv"]);
    let gate = plugins.join("30-sender-gate.wasm");
    std::fs::copy(plugin("test", "sender-gate"), &gate).unwrap();
    sign(&gate, &key, &[]);
    // Another plugin under the signed one's name: a changed file, still a component.
    std::fs::copy(plugin("test", "auth-echo"), &gate).unwrap();
    let unsigned = plugins.join("40-view-probe.wasm");
    std::fs::copy(plugin("test", "view-probe"), &unsigned).unwrap();

    let cfg = dir.path().join("sluice.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nhostname = \"mx.test\"\ndata_dir = {data:?}\n\
             [plugins]\nrequire_signature = true\ntrusted_keys = [{public:?}]\nrescan_secs = 1\n\
             [plugin.kv-probe]\ncapabilities = [\"kv\", \"dns\"]\n\
             [[listener]]\nkind = \"smtp\"\naddress = \"127.0.0.1:0\"\n\
             [metrics]\naddress = \"127.0.0.1:0\"\nplugins = true\n\
             [admin]\naddress = \"127.0.0.1:0\"\n\
             [relay]\nlocal_domains = [\"example.org\"]\n[authentication]\nverify = false\n",
            data = dir.path(),
        ),
    )
    .unwrap();

    // Offline, `plugin list` names every refusal and why.
    let out = sluice(&["plugin", "list", "--config"], &[&cfg]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("20-kv-probe.wasm")
            && err.contains("imports the dns capability, which its signature by Alice Example does not allow (it allows: kv)"),
        "{err}"
    );
    assert!(
        err.contains("30-sender-gate.wasm") && err.contains("changed after it was signed"),
        "{err}"
    );
    assert!(
        err.contains("40-view-probe.wasm")
            && err.contains("unsigned: there is no")
            && err.contains("40-view-probe.wasm.sig beside it"),
        "{err}"
    );
    assert!(!err.contains("10-tagger.wasm"), "{err}");

    // A server with the signed plugin only serves mail through it and says who signed it.
    for f in [&probe, &gate, &unsigned] {
        std::fs::remove_file(f).unwrap();
        let _ = std::fs::remove_file(format!("{}.sig", f.display()));
    }
    sluice::smtp_auth::credentials::set_password(
        &dir.path().join("admins"),
        "root",
        "correct horse",
    )
    .unwrap();
    let server = Serve::start(&cfg).await;
    let script = r#"
import os, smtplib
c = smtplib.SMTP("127.0.0.1", int(os.environ["PORT"]), timeout=30)
c.sendmail("carol@example.com", ["bob@example.org"], b"Subject: signed\r\n\r\nhello\r\n")
c.quit()
print("sent")
"#;
    let out = python(script, &[("PORT", server.smtp.port().to_string())]).await;
    assert_eq!(out.trim(), "sent");
    let bob = dir.path().join("maildir/bob/new");
    let mut delivered = String::new();
    for _ in 0..100 {
        if let Some(f) = std::fs::read_dir(&bob).ok().and_then(|mut d| d.next()) {
            delivered = std::fs::read_to_string(f.unwrap().path()).unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(delivered.contains("X-Tagged: yes"), "{delivered}");
    let metrics = server.metrics.unwrap().to_string();
    let list = || {
        let out = sluice(&["plugin", "list", "--server", &metrics], &[]);
        text(&out.stdout) + &text(&out.stderr)
    };
    let shown = list();
    assert!(
        shown.contains("tagger") && shown.contains("signed-by=\"Alice Example\""),
        "{shown}"
    );

    // The console's plugin page names the signer too.
    let mut b = sluice_tests::browser::Browser::new(server.admin.expect("console address"));
    assert_eq!(b.log_in("root", "correct horse").await.status, 303);
    let page = b.get("/plugins").await;
    assert!(
        page.body.contains("signed by") && page.body.contains("Alice Example"),
        "{}",
        page.body
    );

    // Live: an unsigned file dropped in is refused and stays out of service; once signed
    // (only its .sig added), the next rescan puts it in service.
    let late = plugins.join("50-view-probe.wasm");
    std::fs::copy(
        plugin("test", "view-probe"),
        plugins.join(".view-probe.tmp"),
    )
    .unwrap();
    std::fs::rename(plugins.join(".view-probe.tmp"), &late).unwrap();
    let log = cfg.with_extension("log");
    let mut seen = String::new();
    for _ in 0..100 {
        seen = std::fs::read_to_string(&log).unwrap_or_default();
        if seen.contains("50-view-probe.wasm") && seen.contains("unsigned") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.contains("unsigned: there is no"), "{seen}");
    assert!(!list().contains("view-probe"));
    sign(&late, &key, &[]);
    let mut in_service = String::new();
    for _ in 0..100 {
        in_service = list();
        if in_service.contains("view-probe") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        in_service.contains("view-probe")
            && in_service.matches("signed-by=\"Alice Example\"").count() == 2,
        "{in_service}"
    );
    drop(server);
}
