//! One log line per decision, from `sluice serve` as operators run it: every refusal at every
//! stage (protocol, AUTH, MAIL by a plugin, size, relay denial, greylisting at RCPT, too big
//! at DATA) writes one `event=refused` line in the `key=value` format, with the client, the
//! envelope so far, the stage, the reply and the plugin that decided; `/metrics` counts them
//! by stage and reason; the console counts the refusals at RCPT with the others and lists
//! them among the transactions.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use sluice_tests::browser::Browser;
use sluice_tests::serve::Serve;
use sluice_tests::*;

/// Parses one logfmt line into its pairs (quoted values unescaped); `None` when it is not
/// well-formed.
fn logfmt(line: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut rest = line.trim_end_matches('\n');
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        if key.is_empty() || key.contains([' ', '"']) {
            return None;
        }
        let (value, after) = if let Some(q) = after.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = q.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '"' => break i + 1,
                    '\\' => match chars.next()?.1 {
                        'n' => v.push('\n'),
                        'r' => v.push('\r'),
                        't' => v.push('\t'),
                        c => v.push(c),
                    },
                    c => v.push(c),
                }
            };
            (v, &q[end..])
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (after[..end].to_string(), &after[end..])
        };
        out.insert(key.to_string(), value);
        rest = match after.strip_prefix(' ') {
            Some(r) => r,
            None if after.is_empty() => after,
            None => return None,
        };
    }
    Some(out)
}

fn config(dir: &Path) -> std::path::PathBuf {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(
        plugin("test", "sender-gate"),
        plugins.join("10-sender-gate.wasm"),
    )
    .unwrap();
    std::fs::copy(
        plugin("optional", "30-greylisting"),
        plugins.join("30-greylisting.wasm"),
    )
    .unwrap();
    let cfg = dir.join("sluice.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nhostname = \"mx.test\"\ndata_dir = {:?}\n[plugins]\ncache_dir = {:?}\n\
             [[listener]]\nkind = \"smtp\"\naddress = \"127.0.0.1:0\"\n\
             [relay]\nlocal_domains = [\"example.org\"]\n[authentication]\nverify = false\n\
             [auth]\nallow_plaintext_on_loopback = true\n[limits]\nmax_message_size = 2000\n\
             [metrics]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n\
             [plugin.sender-gate.config]\ndeny_domain = \"bad.example\"\n\
             [plugin.greylisting]\ncapabilities = [\"kv\"]\n\
             [plugin.greylisting.config]\ndelay_secs = 300\nallow_sender_domains = [\"pass.test\"]\n",
            dir,
            workspace_root().join("target/test-compile-cache")
        ),
    )
    .unwrap();
    sluice::smtp_auth::credentials::set_password(&dir.join("users"), "alice", "wonderland")
        .unwrap();
    sluice::smtp_auth::credentials::set_password(&dir.join("admins"), "root", "correct horse")
        .unwrap();
    cfg
}

#[tokio::test]
async fn every_refusal_writes_one_key_value_line_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let s = Serve::start(&cfg).await;

    let mut c = Conversation::connect(s.smtp).await;
    // Protocol: MAIL before EHLO.
    c.send("MAIL FROM:<a@example.net>").await;
    c.expect("503 5.5.1").await;
    // A HELO name with quotes and `=` (it reaches the log as one quoted value).
    c.send("EHLO evil\"helo=x").await;
    c.expect("250 ").await;
    let wrong = base64::engine::general_purpose::STANDARD.encode("\0alice\0guess");
    c.send(&format!("AUTH PLAIN {wrong}")).await;
    c.expect("535 5.7.8").await;
    // A plugin refuses the sender.
    c.send("MAIL FROM:<x@bad.example>").await;
    c.expect("550 5.7.1").await;
    // Declared too big.
    c.send("MAIL FROM:<a@example.net> SIZE=999999").await;
    c.expect("552 5.3.4").await;
    c.send("MAIL FROM:<a@example.net>").await;
    c.expect("250 ").await;
    // Relay denied, then greylisting three times.
    c.send("RCPT TO:<x@elsewhere.test>").await;
    c.expect("550 5.7.1 Relaying denied").await;
    for who in ["bob", "carol", "dave"] {
        c.send(&format!("RCPT TO:<{who}@example.org>")).await;
        c.expect("451 4.7.1").await;
    }
    c.send("RSET").await;
    c.expect("250 ").await;
    // Too big at DATA (past greylisting: an allowed sender domain).
    c.begin_transaction("a@pass.test", "bob@example.org").await;
    let big = "x".repeat(3000);
    c.raw(format!("Subject: big\r\n\r\n{big}\r\n.\r\n").as_bytes())
        .await;
    c.expect("552 5.3.4").await;
    c.send("QUIT").await;

    let body = s
        .metrics_until(&[
            "sluice_refusals_total{stage=\"RCPT\",reason=\"plugin\",class=\"temporary\"} 3",
            "sluice_refusals_total{stage=\"RCPT\",reason=\"relay-denied\",class=\"permanent\"} 1",
            "sluice_refusals_total{stage=\"MAIL\",reason=\"plugin\",class=\"permanent\"} 1",
            "sluice_refusals_total{stage=\"MAIL\",reason=\"size\",class=\"permanent\"} 1",
            "sluice_refusals_total{stage=\"MAIL\",reason=\"protocol\",class=\"permanent\"} 1",
            "sluice_refusals_total{stage=\"AUTH\",reason=\"auth-failed\",class=\"permanent\"} 1",
            "sluice_refusals_total{stage=\"DATA\",reason=\"size\",class=\"permanent\"} 1",
        ])
        .await;
    assert!(body.contains("sluice_refusals_total"));

    // The log: every line is logfmt; one `refused` line per refusal, with its facts.
    let log = std::fs::read_to_string(cfg.with_extension("log")).unwrap();
    let lines: Vec<BTreeMap<String, String>> = log
        .lines()
        .map(|l| logfmt(l).unwrap_or_else(|| panic!("not a key=value line: {l:?}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l.contains_key("ts") && l.contains_key("level"))
    );
    let refused: Vec<&BTreeMap<String, String>> = lines
        .iter()
        .filter(|l| l.get("event").map(String::as_str) == Some("refused"))
        .collect();
    let summary: Vec<String> = refused
        .iter()
        .map(|l| {
            format!(
                "{} {} {} {} {}",
                l["stage"], l["reason"], l["code"], l["enhanced"], l["plugin"]
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            "MAIL protocol 503 5.5.1 ",
            "AUTH auth-failed 535 5.7.8 ",
            "MAIL plugin 550 5.7.1 sender-gate",
            "MAIL size 552 5.3.4 ",
            "RCPT relay-denied 550 5.7.1 ",
            "RCPT plugin 451 4.7.1 greylisting",
            "RCPT plugin 451 4.7.1 greylisting",
            "RCPT plugin 451 4.7.1 greylisting",
            "DATA size 552 5.3.4 ",
        ],
        "{log}"
    );
    for l in &refused {
        assert_eq!(l["client"], "127.0.0.1");
        assert_eq!(l["listener"], "smtp");
    }
    let relay = refused
        .iter()
        .find(|l| l["reason"] == "relay-denied")
        .unwrap();
    assert_eq!(relay["helo"], "evil\"helo=x");
    assert_eq!(relay["from"], "a@example.net");
    assert_eq!(relay["rcpt"], "x@elsewhere.test");
    assert_eq!(relay["text"], "Relaying denied");
    assert!(!relay["id"].is_empty());
    let grey: Vec<_> = refused
        .iter()
        .filter(|l| l["plugin"] == "greylisting")
        .collect();
    assert_eq!(grey[2]["rcpt"], "dave@example.org");
    assert_eq!(grey[2]["from"], "a@example.net");
    let sized = refused.iter().find(|l| l["stage"] == "DATA").unwrap();
    assert_eq!(
        (sized["from"].as_str(), sized["to"].as_str()),
        ("a@pass.test", "bob@example.org")
    );

    // The console counts the refusals at MAIL and RCPT, and lists them.
    let mut b = Browser::new(s.admin.expect("the console listens"));
    assert_eq!(b.log_in("root", "correct horse").await.status, 303);
    let panel = b.get("/overview/panel").await.body;
    let row = |name: &str| -> String {
        let at = panel
            .find(&format!("<td>{name}</td>"))
            .unwrap_or_else(|| panic!("no {name} row: {panel}"));
        let rest = &panel[at..];
        rest[..rest.find("</tr>").unwrap()].to_string()
    };
    assert!(
        row("tempfailed").contains("<td>3</td>"),
        "{}",
        row("tempfailed")
    );
    // Rejected: the sender-gate and the size at MAIL, the relay denial at RCPT (a protocol
    // error decides nothing about mail; the size at DATA is the session's, before the
    // message's checks).
    assert!(
        row("rejected").contains("<td>3</td>"),
        "{}",
        row("rejected")
    );
    let tx = b.get("/transactions?q=dave").await.body;
    assert!(tx.contains("tempfailed at RCPT"), "{tx}");

    // The plugin-state view: greylisting's triplets, one cleared from the console.
    let page = b.get("/state?plugin=greylisting").await.body;
    let keys: Vec<String> = page
        .split("name=\"key\" value=\"")
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].to_string())
        .collect();
    let bob = keys
        .iter()
        .find(|k| k.contains("bob@example.org"))
        .unwrap_or_else(|| panic!("no triplet for bob in {keys:?}"))
        .clone();
    assert!(
        keys.iter().any(|k| k.contains("dave@example.org")),
        "{keys:?}"
    );
    let csrf = b.get("/state").await.csrf();
    let cleared = b
        .post(
            "/state/delete",
            &[("csrf", &csrf), ("plugin", "greylisting"), ("key", &bob)],
        )
        .await
        .body;
    assert!(cleared.contains(": cleared"), "{cleared}");
    assert!(!cleared.contains(&format!("value=\"{bob}\"")), "{cleared}");
    assert!(cleared.contains("dave@example.org"), "the others stay");

    // A console action is logged with each message id it touched.
    let csrf = b.get("/queue").await.csrf();
    b.post(
        "/queue/action",
        &[
            ("csrf", &csrf),
            ("action", "hold"),
            ("id", "NOPE1"),
            ("id", "NOPE2"),
        ],
    )
    .await;
    let mut actions = Vec::new();
    for _ in 0..100 {
        let log = std::fs::read_to_string(cfg.with_extension("log")).unwrap();
        actions = log
            .lines()
            .filter_map(logfmt)
            .filter(|l| l.get("event").map(String::as_str) == Some("console-action"))
            .map(|l| format!("{} {} {} {}", l["user"], l["action"], l["id"], l["page"]))
            .collect();
        if actions.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        actions[actions.len() - 2..],
        ["root hold NOPE1 queue", "root hold NOPE2 queue"]
    );
    assert!(
        actions[0].starts_with("root clear greylisting ") && actions[0].ends_with(" state"),
        "{actions:?}"
    );
    drop(s);
}
