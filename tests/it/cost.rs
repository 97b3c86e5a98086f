//! What each plugin costs, measured on real SMTP transactions (Python's smtplib): instance
//! creation and hook calls in CPU and wall time, `kv` calls and linear memory, in `/plugins`
//! (so `plugin list` and the console) and in the metrics.

use sluice_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_creation_hooks_kv_calls_and_memory_are_measured_per_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(plugin("test", "kv-probe"), plugins.join("10-probe.wasm")).unwrap();
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nhostname = \"mx.test\"\ndata_dir = {:?}\n\
             [plugin.probe]\ncapabilities = [\"kv\", \"dns\"]\n[plugin.probe.config]\ngets = 5\n\
             [[listener]]\nkind = \"smtp\"\naddress = \"127.0.0.1:0\"\n\
             [metrics]\naddress = \"127.0.0.1:0\"\nplugins = true\n\
             [relay]\nlocal_domains = [\"example.org\"]\n[authentication]\nverify = false\n",
            dir.path()
        ),
    )
    .unwrap();
    let s = sluice_tests::serve::Serve::start(&cfg).await;
    let script = r#"
import os, smtplib
c = smtplib.SMTP("127.0.0.1", int(os.environ["PORT"]), timeout=30)
for i in range(3):
    c.sendmail("carol@example.com", ["bob@example.org"], b"Subject: cost\r\n\r\nhello\r\n")
c.quit()
print("sent")
"#;
    let out = python(script, &[("PORT", s.smtp.port().to_string())]).await;
    assert_eq!(out.trim(), "sent");
    let metrics = s.metrics.unwrap().to_string();
    let json = plugin_list_server(&metrics, true);
    let rows: Vec<sluice::pipeline::PluginRow> =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let cost = &rows[0].cost;
    let hook = |name: &str| {
        cost.hooks
            .iter()
            .find(|h| h.hook == name)
            .unwrap_or_else(|| panic!("no {name} in {cost:?}"))
    };
    // One instance per transaction, listed first.
    assert_eq!(cost.hooks[0].hook, "instantiate", "{cost:?}");
    assert_eq!(hook("instantiate").calls, 3, "{cost:?}");
    let message = hook("check-message");
    assert_eq!(message.calls, 3, "{cost:?}");
    assert!((message.kv_per_call - 5.0).abs() < 1e-9, "{cost:?}");
    assert_eq!(message.dns_per_call, 0.0, "{cost:?}");
    assert!(
        message.cpu_us > 0.0 && message.wall_us >= message.cpu_us * 0.5,
        "{cost:?}"
    );
    assert!(message.memory_max >= 64 * 1024, "{cost:?}");
    assert!(
        cost.instantiate_share > 0.0 && cost.instantiate_share < 1.0,
        "{cost:?}"
    );

    // The same in `plugin list --server`'s table and the metrics.
    let listed = plugin_list_server(&metrics, false);
    assert!(
        listed.contains("cost: instantiate")
            && listed.contains("check-message")
            && listed.contains("kv=5.0"),
        "{listed}"
    );
    let text = scrape(&metrics).await;
    assert!(
        text.contains(r#"sluice_plugin_host_calls_total{plugin="probe",hook="check-message",capability="kv"} 15"#),
        "{text}"
    );
    assert!(
        text.contains(r#"sluice_plugin_cpu_seconds_count{plugin="probe",hook="instantiate"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(r#"sluice_plugin_memory_bytes_count{plugin="probe"}"#),
        "{text}"
    );
    drop(s);
}
