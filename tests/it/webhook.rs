//! Events out: `sluice serve` POSTs delivery events and refusals in signed batches to a local
//! HTTPS receiver (Python's `http.server` with a certificate the test makes) that fails for a
//! while, then recovers: nothing is lost, nothing is sent twice in one batch, a failed batch
//! is sent again under its id, and every body's HMAC is right.

use std::collections::BTreeSet;
use std::time::Duration;

use sluice_tests::serve::Serve;
use sluice_tests::*;
use tokio::io::AsyncBufReadExt;

const RECEIVER: &str = r#"
import http.server, ssl, sys, json, hmac, hashlib
cert, key, secret, out, fail = sys.argv[1:6]
fail = int(fail)
seen = [0]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        seen[0] += 1
        batch = self.headers.get("X-Sluice-Batch")
        if seen[0] <= fail:
            with open(out, "a") as f:
                f.write(json.dumps({"failed": batch}) + "\n")
            self.send_response(503)
            self.end_headers()
            return
        want = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(want, self.headers.get("X-Sluice-Signature", ""))
        with open(out, "a") as f:
            f.write(json.dumps({"batch": batch, "sig_ok": ok, "body": json.loads(body)}) + "\n")
        self.send_response(200)
        self.end_headers()
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

#[tokio::test]
async fn events_reach_a_receiver_that_fails_for_a_while_nothing_lost_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.signing_key.serialize_pem()).unwrap();
    let secret = "a webhook secret of some length";
    let secret_file = dir.path().join("webhook.secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let out = dir.path().join("received.jsonl");

    let mut receiver = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(RECEIVER)
        .args([&cert_pem, &key_pem])
        .arg(secret)
        .arg(&out)
        .arg("3")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let mut lines = tokio::io::BufReader::new(receiver.stdout.take().unwrap()).lines();
    let port: u16 = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the receiver starts")
        .unwrap()
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nhostname = \"mx.test\"\ndata_dir = {:?}\n[plugins]\ncache_dir = {:?}\n\
             [[listener]]\nkind = \"smtp\"\naddress = \"127.0.0.1:0\"\n[relay]\nlocal_domains = [\"example.org\"]\n\
             [authentication]\nverify = false\n[metrics]\naddress = \"127.0.0.1:0\"\n\
             [webhook]\nurl = \"https://127.0.0.1:{port}/hook\"\nsecret_file = {secret_file:?}\nca_file = {cert_pem:?}\n\
             batch = 5\nflush_ms = 100\nevents = [\"delivered\", \"refused\"]\n",
            dir.path(),
            workspace_root().join("target/test-compile-cache")
        ),
    )
    .unwrap();
    let s = Serve::start(&cfg).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let r = send_to_bob(s.smtp, &format!("event {i}"), "hello").await;
        assert!(r.starts_with("250 "), "{r}");
        ids.push(r.trim().rsplit(' ').next().unwrap().to_string());
    }
    for who in ["x", "y"] {
        let mut c = Conversation::connect(s.smtp).await;
        c.send("EHLO c").await;
        c.expect("250 ").await;
        c.send("MAIL FROM:<a@example.net>").await;
        c.expect("250 ").await;
        c.send(&format!("RCPT TO:<{who}@elsewhere.test>")).await;
        c.expect("550 5.7.1").await;
        c.send("QUIT").await;
    }

    // The first three POSTs fail (1 + 2 + 4 s of back-off), then everything arrives.
    s.metrics_until(&["sluice_webhook_events_total{result=\"sent\"} 8"])
        .await;
    let received: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let failed: Vec<&str> = received
        .iter()
        .filter_map(|r| r["failed"].as_str())
        .collect();
    assert_eq!(failed.len(), 3, "{received:#?}");
    let batches: Vec<&serde_json::Value> =
        received.iter().filter(|r| r["batch"].is_string()).collect();
    // The batch that failed is sent again as it was, the same id each time (more events
    // may have come meanwhile: they wait for later batches), and it is the first to go through.
    assert!(failed.iter().all(|f| *f == failed[0]), "{failed:?}");
    assert_eq!(batches[0]["batch"].as_str(), Some(failed[0]));
    let mut all = BTreeSet::new();
    for b in &batches {
        assert_eq!(b["sig_ok"], true, "bad signature on {b}");
        assert_eq!(b["body"]["batch"], b["batch"]);
        let events = b["body"]["events"].as_array().unwrap();
        assert!(events.len() <= 5);
        let mut in_batch = BTreeSet::new();
        for e in events {
            let key = format!("{} {} {} {}", e["event"], e["id"], e["to"], e["rcpt"]);
            assert!(in_batch.insert(key.clone()), "{key} twice in one batch");
            assert!(all.insert(key.clone()), "{key} sent in two batches");
        }
    }
    let delivered: BTreeSet<String> = all
        .iter()
        .filter(|k| k.starts_with("\"delivered\""))
        .cloned()
        .collect();
    assert_eq!(delivered.len(), 6, "{all:#?}");
    for id in &ids {
        assert!(
            delivered.iter().any(|k| k.contains(id.as_str())),
            "{id} missing"
        );
    }
    let refused: Vec<&String> = all
        .iter()
        .filter(|k| k.starts_with("\"refused\""))
        .collect();
    assert_eq!(refused.len(), 2, "{all:#?}");
    assert!(refused.iter().any(|k| k.contains("x@elsewhere.test")));
    drop(s);
}
