//! The `kv` and `dns` capabilities (WIT 0.1.2): granted per plugin or refused at load,
//! keys namespaced per plugin, state kept across transactions, limits per call, DNS answers
//! from a loopback server, and an unreachable store failing the hook by its policy without
//! blaming the plugin.

use std::time::Duration;

use sluice::envelope::Decision;
use sluice::plugin::CallFailure;
use sluice_tests::dns::{Dns, Zone};
use sluice_tests::*;

fn probe() -> std::path::PathBuf {
    plugin("test", "kv-probe")
}

#[tokio::test]
async fn a_plugin_importing_a_capability_it_was_not_granted_is_refused_naming_the_setting() {
    let rt = runtime_with(scratch_services(None));
    let cfg = config("[plugin.probe.config]\nread = \"x\"\n");
    let err = load_one(&rt, &cfg, "probe", &probe()).await.unwrap_err();
    assert!(
        err.contains("imports sluice:filter/kv@0.1.4")
            && err.contains("set capabilities = [\"kv\"] in [plugin.probe]"),
        "{err}"
    );
    // Granting one of the two it imports names the one still missing, keeping the other.
    let cfg = config("[plugin.probe]\ncapabilities = [\"kv\"]\n");
    let err = load_one(&rt, &cfg, "probe", &probe()).await.unwrap_err();
    assert!(
        err.contains("sluice:filter/dns@0.1.4") && err.contains("[\"dns\", \"kv\"]"),
        "{err}"
    );
    // A capability the runtime cannot serve is refused too, by name.
    let cfg = config("[plugin.probe]\ncapabilities = [\"kv\", \"dns\"]\n");
    let err = load_one(&runtime(), &cfg, "probe", &probe())
        .await
        .unwrap_err();
    assert!(err.contains("no key-value store"), "{err}");
    // A plugin that imports neither loads without grants (the bundled ones do).
    let cfg = config("");
    load_one(&rt, &cfg, "tagger", &plugin("test", "tagger"))
        .await
        .unwrap();
}

#[tokio::test]
async fn unknown_capabilities_are_refused_by_the_configuration() {
    let err = sluice::config::Config::parse("[plugin.p]\ncapabilities = [\"net\"]\n")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("capabilities") && err.contains("net"), "{err}");
}

fn header(out: &sluice::pipeline::MessageOutcome, name: &str) -> Option<String> {
    out.add_headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

#[tokio::test]
async fn keys_are_namespaced_per_plugin_and_kept_across_transactions() {
    let rt = runtime_with(scratch_services(None));
    let cfg = config(
        "[plugin.writer]\ncapabilities = [\"kv\", \"dns\"]\n[plugin.writer.config]\nwrite = \"x=from-writer\"\nread = \"x\"\ncount = \"n\"\n\
         [plugin.reader]\ncapabilities = [\"kv\", \"dns\"]\n[plugin.reader.config]\nread = \"x\"\ncount = \"n\"\n",
    );
    // The same file under two names: two plugins, two namespaces.
    let p = pipeline(&rt, &cfg, &[("writer", probe()), ("reader", probe())])
        .await
        .unwrap();
    let env = envelope("a@example.org", &["b@example.net"]);
    for round in 1..=3 {
        let mut txn = p.start(&client(), "t");
        // Each plugin's headers are merged in order; look at each plugin's own verdict.
        let out = txn.check_message(&env, &message("s", "b")).await;
        assert_eq!(out.decision, Decision::Continue, "{:?}", txn.calls());
        let reads: Vec<&String> = out
            .add_headers
            .iter()
            .filter(|(n, _)| n == "X-Probe-Read")
            .map(|(_, v)| v)
            .collect();
        assert_eq!(reads, ["from-writer", "(none)"], "round {round}");
        let counts: Vec<&String> = out
            .add_headers
            .iter()
            .filter(|(n, _)| n == "X-Probe-Count")
            .map(|(_, v)| v)
            .collect();
        // Both count `n`, each in its own namespace, and the count survives the instance.
        assert_eq!(counts, [&round.to_string(), &round.to_string()]);
    }
}

#[tokio::test]
async fn calls_past_the_per_call_limit_fail_the_hook_by_its_policy() {
    let rt = runtime_with(scratch_services(None));
    let cfg = config(
        "[plugin.probe]\ncapabilities = [\"kv\", \"dns\"]\nkv_ops_per_call = 10\n[plugin.probe.config]\ngets = 10\n\
         [plugin.greedy]\ncapabilities = [\"kv\", \"dns\"]\nkv_ops_per_call = 10\n[plugin.greedy.config]\ngets = 11\n",
    );
    let ok = pipeline(&rt, &cfg, &[("probe", probe())]).await.unwrap();
    let env = envelope("a@example.org", &["b@example.net"]);
    let out = ok
        .start(&client(), "t")
        .check_message(&env, &message("s", "b"))
        .await;
    assert_eq!(out.decision, Decision::Continue);

    let greedy = pipeline(&rt, &cfg, &[("greedy", probe())]).await.unwrap();
    let mut txn = greedy.start(&client(), "t");
    let out = txn.check_message(&env, &message("s", "b")).await;
    assert!(
        matches!(out.decision, Decision::Tempfail { .. }),
        "{:?}",
        out.decision
    );
    let failure = txn.calls()[0].failure.clone().unwrap();
    assert!(
        failure
            .to_string()
            .contains("more than 10 kv and dns calls in one hook call (kv_ops_per_call)"),
        "{failure}"
    );
}

#[tokio::test]
async fn dns_answers_records_nxdomain_and_temporary_failure_apart() {
    let dns = Dns::start(
        Zone::new()
            .addr("2.0.0.127.bl.test", "127.0.0.2".parse().unwrap())
            .silent("1.0.0.127.slow.test")
            .broken("broken.test")
            .ptr("192.0.2.7".parse().unwrap(), "mail.client.test"),
    )
    .await;
    let rt = runtime_with(scratch_services(Some(dns.addr)));
    let run = |lookup: &str, ptr: &str| {
        config(&format!(
            "[plugin.probe]\ncapabilities = [\"kv\", \"dns\"]\ntimeout_ms = 2000\n[plugin.probe.config]\nlookup = {lookup:?}\nptr = {ptr:?}\n"
        ))
    };
    let env = envelope("a@example.org", &["b@example.net"]);
    for (name, ptr, want_a, want_ptr) in [
        (
            "2.0.0.127.bl.test",
            "192.0.2.7",
            "127.0.0.2",
            "mail.client.test",
        ),
        ("9.9.9.9.bl.test", "192.0.2.8", "nxdomain", "nxdomain"),
        ("broken.test", "not-an-ip", "temporary", "invalid"),
        (
            "1.0.0.127.slow.test",
            "192.0.2.7",
            "temporary",
            "mail.client.test",
        ),
        ("bad name!", "192.0.2.7", "invalid", "mail.client.test"),
    ] {
        let cfg = run(name, ptr);
        let p = pipeline(&rt, &cfg, &[("probe", probe())]).await.unwrap();
        let started = std::time::Instant::now();
        let mut txn = p.start(&client(), "t");
        let out = txn.check_message(&env, &message("s", "b")).await;
        assert_eq!(
            out.decision,
            Decision::Continue,
            "{name}: {:?}",
            txn.calls()
        );
        assert_eq!(header(&out, "X-Probe-A").as_deref(), Some(want_a), "{name}");
        assert_eq!(
            header(&out, "X-Probe-Ptr").as_deref(),
            Some(want_ptr),
            "{ptr}"
        );
        // An unanswered lookup ends at the resolver's timeout (300 ms here), well inside the
        // hook's deadline.
        assert!(started.elapsed() < Duration::from_millis(1500), "{name}");
    }
}

#[tokio::test]
async fn an_unreachable_store_fails_the_hook_by_policy_within_the_deadline_without_blaming_the_plugin()
 {
    // A Redis URL on a loopback port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let redis =
        sluice::store::redis::Redis::new(&format!("redis://127.0.0.1:{port}/"), None).unwrap();
    let mut services = scratch_services(None);
    services.kv = Some(sluice::store::KvStore::Redis(redis));
    let rt = runtime_with(services);
    let cfg = config(
        "[plugins]\ncooldown_after_failures = 2\n[plugin.probe]\ncapabilities = [\"kv\", \"dns\"]\ntimeout_ms = 300\n[plugin.probe.config]\ncount = \"n\"\n",
    );
    let p = pipeline(&rt, &cfg, &[("probe", probe())]).await.unwrap();
    let env = envelope("a@example.org", &["b@example.net"]);
    for _ in 0..4 {
        let started = std::time::Instant::now();
        let mut txn = p.start(&client(), "t");
        let out = txn.check_message(&env, &message("s", "b")).await;
        assert!(started.elapsed() < Duration::from_millis(1000));
        match out.decision {
            Decision::Tempfail { reply } => assert_eq!(reply.code, 451),
            other => panic!("{other:?}"),
        }
        // Every time the store is asked (no cool-down: the store's fault is not the plugin's).
        assert!(
            matches!(
                txn.calls()[0].failure,
                Some(CallFailure::StoreUnavailable { .. })
            ),
            "{:?}",
            txn.calls()
        );
    }
}

#[tokio::test]
async fn the_bundled_dnsbl_refuses_a_listed_client_and_scores_a_listed_link_from_a_loopback_zone() {
    let dns = Dns::start(
        Zone::new()
            // client() is 192.0.2.7.
            .addr("7.2.0.192.zen.test", "127.0.0.4".parse().unwrap())
            .addr(
                "7.2.0.192.refusing.test",
                "127.255.255.254".parse().unwrap(),
            )
            .addr("spam.test.dbl.test", "127.0.1.2".parse().unwrap()),
    )
    .await;
    let rt = runtime_with(scratch_services(Some(dns.addr)));
    let file = plugin("optional", "06-dnsbl");
    let base = "[plugin.dnsbl]\ncapabilities = [\"dns\"]\ntimeout_ms = 2000\n\
                [plugin.dnsbl.config]\nuri_zones.dbl.zone = \"dbl.test\"\nuri_zones.dbl.score = 4.0\n";
    let reject = config(&format!(
        "{base}zones.zen.zone = \"zen.test\"\nzones.zen.action = \"reject\"\nzones.zen.codes = [\"127.0.0.2=SBL\", \"127.0.0.4=XBL\"]\n"
    ));
    let p = pipeline(&rt, &reject, &[("dnsbl", file.clone())])
        .await
        .unwrap();
    let mut txn = p.start(&client(), "t");
    let decision = txn
        .check_recipient(&envelope("a@x.test", &[]), &rcpt("b@example.org"))
        .await;
    match decision {
        Decision::Reject { reply } => {
            assert_eq!(reply.code, 554);
            assert!(
                reply
                    .text
                    .contains("client [192.0.2.7] blocked using zen.test (XBL)"),
                "{reply:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // A zone that refuses the query is not a listing; the link's domain list scores.
    let score = config(&format!(
        "{base}zones.refusing.zone = \"refusing.test\"\nzones.refusing.action = \"reject\"\n"
    ));
    let p = pipeline(&rt, &score, &[("dnsbl", file)]).await.unwrap();
    let mut txn = p.start(&client(), "t");
    let env = envelope("a@x.test", &["b@example.org"]);
    assert_eq!(
        txn.check_recipient(&envelope("a@x.test", &[]), &rcpt("b@example.org"))
            .await,
        Decision::Continue
    );
    let out = txn
        .check_message(&env, &message("offer", "Visit https://www.spam.test/now"))
        .await;
    assert_eq!(out.score, 4.0, "{:?}", out.symbols);
    assert_eq!(out.symbols[0].name, "URIBL_DBL");
    let logs = format!("{:?}", txn.calls());
    assert!(logs.contains("the list refused the query"), "{logs}");
}

/// Services whose resolver asks `dns` and waits up to 2 s for an answer (the default), with
/// the given budgets.
fn budgeted(
    dns: std::net::SocketAddr,
    per_transaction: u32,
    per_second: u32,
) -> sluice::plugin::capabilities::Services {
    let mut services = scratch_services(None);
    services.dns = Some(std::sync::Arc::new(
        sluice::plugin::capabilities::PluginDns::with_budgets(
            Some(&dns.to_string()),
            Duration::from_millis(2000),
            per_transaction,
            per_second,
        ),
    ));
    services
}

/// A lookup a silent resolver never answers ends before the hook's deadline, so the plugin
/// gets its `temporary` answer and goes on (it used to end at the deadline: the plugin was
/// stopped before it could use the answer, and every message was tempfailed).
#[tokio::test]
async fn a_lookup_answers_temporary_before_the_hooks_deadline() {
    let dns = Dns::start(Zone::new().silent("1.0.0.127.slow.test")).await;
    let rt = runtime_with(budgeted(dns.addr, 100, 1000));
    let cfg = config(
        "[plugin.probe]\ncapabilities = [\"kv\", \"dns\"]\ntimeout_ms = 200\n[plugin.probe.config]\nlookup = \"1.0.0.127.slow.test\"\n",
    );
    let p = pipeline(&rt, &cfg, &[("probe", probe())]).await.unwrap();
    let env = envelope("a@example.org", &["b@example.net"]);
    let mut txn = p.start(&client(), "t");
    let out = txn.check_message(&env, &message("s", "b")).await;
    assert_eq!(out.decision, Decision::Continue, "{:?}", txn.calls());
    assert_eq!(header(&out, "X-Probe-A").as_deref(), Some("temporary"));
}

/// Lookups are budgeted per transaction, not only per hook call, and for all plugins per
/// second: past either a lookup answers `temporary` without reaching the resolver.
#[tokio::test]
async fn dns_lookups_are_budgeted_per_transaction_and_per_second() {
    let dns = Dns::start(Zone::new()).await;
    let rt = runtime_with(budgeted(dns.addr, 30, 100_000));
    let cfg = config(
        "[plugin.probe]\ncapabilities = [\"kv\", \"dns\"]\ntimeout_ms = 5000\nkv_ops_per_call = 1000\n\
         [plugin.probe.config]\nlookup_fresh = \"fresh.test\"\nfresh_lookups = 200\n",
    );
    let p = pipeline(&rt, &cfg, &[("probe", probe())]).await.unwrap();
    let env = envelope("a@example.org", &["b@example.net"]);
    let mut txn = p.start(&client(), "t1");
    let out = txn.check_message(&env, &message("s", "b")).await;
    assert_eq!(out.decision, Decision::Continue, "{:?}", txn.calls());
    // One lookup of TRANSACTION.fresh.test, then 29 of the 200: 171 spent nothing.
    assert_eq!(header(&out, "X-Probe-Fresh").as_deref(), Some("29 171"));
    assert_eq!(dns.queries(), 30, "queries that reached the resolver");

    // A rate of 10 a second for everyone: two transactions' worth of lookups in a moment
    // reach the resolver only as fast as the rate allows.
    let dns = Dns::start(Zone::new()).await;
    let rt = runtime_with(budgeted(dns.addr, 1000, 10));
    let p = pipeline(&rt, &cfg, &[("probe", probe())]).await.unwrap();
    let started = std::time::Instant::now();
    for t in ["t2", "t3"] {
        let mut txn = p.start(&client(), t);
        let out = txn.check_message(&env, &message("s", "b")).await;
        assert_eq!(out.decision, Decision::Continue, "{:?}", txn.calls());
    }
    let allowed = 10.0 + 10.0 * started.elapsed().as_secs_f64() + 1.0;
    assert!(
        (dns.queries() as f64) <= allowed,
        "{} queries, at most {allowed:.0} allowed",
        dns.queries()
    );
    assert!(
        dns.queries() >= 10,
        "the rate's worth got through: {}",
        dns.queries()
    );
}

/// A plugin cannot fill the store: writing as many 64 KiB values as it may, over ten
/// transactions, it stops at its quota (its own failure, unlike an unreachable store), and
/// the store's file stays near the quota instead of growing by the 20 MiB written.
#[tokio::test]
async fn a_plugin_cannot_fill_the_store_past_its_quota() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.redb");
    let mut services = scratch_services(None);
    services.kv = Some(sluice::store::KvStore::Embedded(
        sluice::store::embedded::Embedded::open(&path, Duration::from_millis(50)).unwrap(),
    ));
    let rt = runtime_with(services);
    let cfg = config(
        "[plugins]\ncooldown_after_failures = 3\n\
         [plugin.probe]\ncapabilities = [\"kv\", \"dns\"]\ntimeout_ms = 5000\nkv_max_bytes = 1048576\n\
         [plugin.probe.config]\nfill = 32\n",
    );
    let p = pipeline(&rt, &cfg, &[("probe", probe())]).await.unwrap();
    let env = envelope("a@example.org", &["b@example.net"]);
    let mut failures = Vec::new();
    for t in 0..10 {
        let mut txn = p.start(&client(), &format!("t{t}"));
        let out = txn.check_message(&env, &message("s", "b")).await;
        assert!(
            matches!(out.decision, Decision::Tempfail { .. }),
            "{:?}",
            out.decision
        );
        let failure = txn.calls()[0].failure.clone().unwrap();
        assert!(
            !matches!(failure, CallFailure::StoreUnavailable { .. }),
            "the plugin's own failure: {failure}"
        );
        failures.push(failure.to_string());
    }
    // Three failures over the quota, then the plugin is cooled down (an unreachable store
    // never cools a plugin down).
    assert!(
        failures[..3].iter().all(|f| f.contains("quota is used up")),
        "{failures:?}"
    );
    assert!(
        failures[3..].iter().all(|f| f.contains("cool-down")),
        "{failures:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let size = std::fs::metadata(&path).unwrap().len();
    eprintln!("kv.redb after transactions writing 2 MiB each against a 1 MiB quota: {size} bytes");
    assert!(size < 8 << 20, "the store grew to {size} bytes");
}

/// A key written with a time-to-live of 0 gets the configured maximum, not "never".
#[tokio::test]
async fn a_key_without_a_time_to_live_expires_at_the_configured_maximum() {
    let rt = runtime_with(scratch_services(None));
    let write = config(
        "[plugin.probe]\ncapabilities = [\"kv\", \"dns\"]\nkv_max_ttl_secs = 1\n[plugin.probe.config]\nwrite = \"k=v\"\n",
    );
    let read = config(
        "[plugin.probe]\ncapabilities = [\"kv\", \"dns\"]\nkv_max_ttl_secs = 1\n[plugin.probe.config]\nread = \"k\"\n",
    );
    let env = envelope("a@example.org", &["b@example.net"]);
    let p = pipeline(&rt, &write, &[("probe", probe())]).await.unwrap();
    p.start(&client(), "w")
        .check_message(&env, &message("s", "b"))
        .await;
    let p = pipeline(&rt, &read, &[("probe", probe())]).await.unwrap();
    let out = p
        .start(&client(), "r1")
        .check_message(&env, &message("s", "b"))
        .await;
    assert_eq!(header(&out, "X-Probe-Read").as_deref(), Some("v"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let out = p
        .start(&client(), "r2")
        .check_message(&env, &message("s", "b"))
        .await;
    assert_eq!(header(&out, "X-Probe-Read").as_deref(), Some("(none)"));
}
