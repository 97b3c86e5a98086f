//! Routes other than a smarthost, against recording sinks and a loopback DNS server: MX in
//! preference order with fallback, implicit MX, null MX, NXDOMAIN and SERVFAIL; LMTP over a
//! Unix socket with per-recipient replies; connection reuse and the per-destination cap;
//! delay warnings.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use sluice::delivery::runner::Runner;
use sluice::delivery::state::RcptStatus;
use sluice::envelope::{Param, Recipient, Sender};
use sluice::spool::{Spool, SpoolState, SpooledEnvelope};
use sluice_tests::dns::{Dns, Zone};
use sluice_tests::sink::{Sink, SinkOptions};
use sluice_tests::*;

const T0: i64 = 1_800_000_000;
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const LOCAL6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// A relay (hostname relay.test, local domain relay.test) with `extra` TOML (delivery
/// settings and routes); returns its directory, spool and runner.
async fn relay(extra: &str) -> (tempfile::TempDir, Spool, Runner) {
    relay_with(extra, &[]).await
}

/// [`relay`] with plugins (name, file) loaded.
pub(crate) async fn relay_with(
    extra: &str,
    plugins: &[(&str, std::path::PathBuf)],
) -> (tempfile::TempDir, Spool, Runner) {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[server]\nhostname = \"relay.test\"\ndata_dir = {:?}\n[plugins]\ncache_dir = {:?}\n[relay]\nlocal_domains = [\"relay.test\"]\n{extra}",
        dir.path(),
        workspace_root().join("target/test-compile-cache"),
    );
    let cfg = config(&toml);
    let spool = Spool::open(&dir.path().join("spool")).unwrap();
    let rt = runtime();
    let p = pipeline(&rt, &cfg, plugins).await.unwrap();
    let runner = Runner::new(spool.clone(), cfg, p);
    (dir, spool, runner)
}

pub(crate) fn envelope(id: &str, rcpts: &[&str], rcpt_params: Vec<Param>) -> SpooledEnvelope {
    SpooledEnvelope {
        id: id.into(),
        received_at: "2027-01-15T08:00:00+00:00".into(),
        sender: Sender {
            address: "alice@relay.test".into(),
            params: Vec::new(),
        },
        recipients: rcpts
            .iter()
            .map(|r| Recipient {
                address: r.to_string(),
                params: rcpt_params.clone(),
                discarded: false,
            })
            .collect(),
        client_ip: "192.0.2.1".into(),
        helo: "c".into(),
        listener: "smtp".into(),
        auth_user: None,
        quarantine: None,
        spam: false,
    }
}

fn msg(n: usize) -> Vec<u8> {
    format!("From: alice@relay.test\r\nSubject: note {n}\r\nMessage-ID: <{n}@relay.test>\r\n\r\nBody {n}.\r\n.dot line\r\n").into_bytes()
}

/// Outcome per recipient, in recipient order.
fn outcomes(
    pass: &sluice::delivery::runner::PassReport,
    rcpts: &[&str],
) -> Vec<(RcptStatus, String)> {
    rcpts
        .iter()
        .map(|r| {
            let (_, _, s, reply) = pass
                .attempts
                .iter()
                .find(|(_, a, _, _)| a == r)
                .unwrap_or_else(|| panic!("{r} was not attempted: {:?}", pass.attempts));
            (*s, reply.clone())
        })
        .collect()
}

/// A sink on 127.0.0.1 and a second one on [::1] with the same port (where IPv6 loopback
/// and the port are available).
async fn sink_pair() -> (Sink, Option<Sink>) {
    for _ in 0..20 {
        let a = Sink::tcp("127.0.0.1:0", SinkOptions::default())
            .await
            .unwrap();
        let port = a.addr.unwrap().port();
        match Sink::tcp(&format!("[::1]:{port}"), SinkOptions::default()).await {
            Ok(b) => return (a, Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(_) => return (a, None),
        }
    }
    panic!("no port free on both loopbacks");
}

#[tokio::test]
async fn mx_routes_follow_preference_fallback_implicit_and_null_mx() {
    let (primary, secondary) = sink_pair().await;
    let port = primary.addr.unwrap().port();
    // example.test lists its worse exchanger (on ::1) first in the answer; other.test's best
    // exchanger has only an IPv6 address where nothing listens, so the relay falls back.
    let dns = Dns::start(
        Zone::new()
            .mx("example.test", 50, "mx-b.example.test")
            .mx("example.test", 10, "mx-a.example.test")
            .addr("mx-a.example.test", LOCAL)
            .addr("mx-b.example.test", LOCAL6)
            .mx("other.test", 10, "dead.other.test")
            .mx("other.test", 20, "live.other.test")
            .addr("dead.other.test", LOCAL6)
            .addr("live.other.test", LOCAL)
            .addr("bare.test", LOCAL)
            .mx("nullmx.test", 0, ".")
            .broken("broken.test"),
    )
    .await;
    // Without a second sink, [::1]:port must refuse connections for the fallback case.
    let other_rcpt = if secondary.is_some() {
        // The ::1 sink would take other.test's mail: send that one to a bare host instead.
        None
    } else {
        Some("b@other.test")
    };
    let (_dir, spool, runner) = relay(&format!(
        "[delivery]\nresolver = \"{}\"\ntimeout_secs = 10\n[[route]]\ndomains = [\"*\"]\nkind = \"mx\"\nport = {port}\ntls = \"none\"\n",
        dns.addr
    ))
    .await;
    let mut rcpts = vec![
        "a@example.test",
        "c@bare.test",
        "d@nullmx.test",
        "e@nosuch.test",
        "f@broken.test",
    ];
    rcpts.extend(other_rcpt);
    spool
        .store(SpoolState::Queue, &envelope("M1", &rcpts, vec![]), &msg(1))
        .await
        .unwrap();
    let pass = runner.run_once(T0).await;
    let got = outcomes(&pass, &rcpts);
    assert_eq!(got[0].0, RcptStatus::Delivered, "{got:?}");
    assert_eq!(got[1].0, RcptStatus::Delivered, "implicit MX: {got:?}");
    assert_eq!(got[2].0, RcptStatus::Failed);
    assert!(got[2].1.starts_with("556 5.1.10"), "null MX: {}", got[2].1);
    assert_eq!(got[3].0, RcptStatus::Failed);
    assert!(got[3].1.starts_with("550 5.1.2"), "NXDOMAIN: {}", got[3].1);
    assert_eq!(got[4].0, RcptStatus::Pending);
    assert!(got[4].1.starts_with("451 4.4.3"), "SERVFAIL: {}", got[4].1);
    if other_rcpt.is_some() {
        assert_eq!(got[5].0, RcptStatus::Delivered, "fallback: {got:?}");
    }
    // Everything delivered went to the preferred exchanger on 127.0.0.1.
    let received = primary.wait_for(1, Duration::from_secs(5)).await;
    let mut got_rcpts: Vec<String> = received.iter().flat_map(|m| m.rcpts.clone()).collect();
    got_rcpts.sort();
    let mut want = vec!["a@example.test".to_string(), "c@bare.test".to_string()];
    if other_rcpt.is_some() {
        want.insert(1, "b@other.test".to_string());
    }
    assert_eq!(got_rcpts, want);
    if let Some(b) = &secondary {
        assert!(b.messages().is_empty(), "the less preferred MX got mail");
    }

    // With the ::1 sink present, prove the fallback by stopping the preferred one: a fresh
    // runner (no pooled connection) must go to the exchanger of preference 50.
    if let Some(b) = secondary {
        drop(primary);
        let (_dir2, spool2, runner2) = relay(&format!(
            "[delivery]\nresolver = \"{}\"\ntimeout_secs = 10\n[[route]]\ndomains = [\"example.test\"]\nkind = \"mx\"\nport = {port}\ntls = \"none\"\n",
            dns.addr
        ))
        .await;
        spool2
            .store(
                SpoolState::Queue,
                &envelope("M2", &["z@example.test"], vec![]),
                &msg(2),
            )
            .await
            .unwrap();
        let pass = runner2.run_once(T0).await;
        assert_eq!(
            outcomes(&pass, &["z@example.test"])[0].0,
            RcptStatus::Delivered,
            "{:?}",
            pass.attempts
        );
        assert_eq!(b.wait_for(1, Duration::from_secs(5)).await.len(), 1);
    }
}

#[tokio::test]
async fn lmtp_over_a_unix_socket_records_each_recipients_reply() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("lmtp.sock");
    let sink = Sink::unix(
        socket.clone(),
        SinkOptions {
            lmtp: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (_d, spool, runner) = relay(&format!(
        "[[route]]\ndomains = [\"mail.test\"]\nkind = \"lmtp\"\nsocket = {socket:?}\n"
    ))
    .await;
    let rcpts = [
        "ok@mail.test",
        "lmtpdefer@mail.test",
        "lmtpreject@mail.test",
        "reject@mail.test",
        "ok2@mail.test",
    ];
    spool
        .store(SpoolState::Queue, &envelope("L1", &rcpts, vec![]), &msg(1))
        .await
        .unwrap();
    let pass = runner.run_once(T0).await;
    let got = outcomes(&pass, &rcpts);
    let status: Vec<RcptStatus> = got.iter().map(|g| g.0).collect();
    assert_eq!(
        status,
        [
            RcptStatus::Delivered,
            RcptStatus::Pending,
            RcptStatus::Failed,
            RcptStatus::Failed,
            RcptStatus::Delivered
        ],
        "{got:?}"
    );
    assert!(got[1].1.starts_with("452 4.2.2"), "{}", got[1].1);
    assert!(got[2].1.starts_with("550 5.1.1"), "{}", got[2].1);
    let m = sink.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].rcpts, ["ok@mail.test", "ok2@mail.test"]);
    assert_eq!(m[0].data, msg(1), "the message arrives byte for byte");
    assert_eq!(m[0].from, "alice@relay.test");
}

#[tokio::test]
async fn connections_are_reused_and_capped_per_destination() {
    // One at a time: five messages share one connection, also across passes.
    let sink = Sink::tcp("127.0.0.1:0", SinkOptions::default())
        .await
        .unwrap();
    let route = |port: u16, extra: &str| {
        format!(
            "[delivery]\n{extra}\n[[route]]\ndomains = [\"dest.test\"]\nkind = \"smtp\"\nhost = \"127.0.0.1:{port}\"\ntls = \"none\"\n"
        )
    };
    let (_d, spool, runner) = relay(&route(sink.addr.unwrap().port(), "concurrency = 1")).await;
    for i in 0..5 {
        let env = envelope(&format!("R{i}"), &["u@dest.test"], vec![]);
        spool.store(SpoolState::Queue, &env, &msg(i)).await.unwrap();
    }
    let pass = runner.run_once(T0).await;
    assert_eq!(pass.finished.len(), 5, "{:?}", pass.attempts);
    let env = envelope("R5", &["u@dest.test"], vec![]);
    spool.store(SpoolState::Queue, &env, &msg(5)).await.unwrap();
    assert_eq!(runner.run_once(T0 + 1).await.finished, ["R5"]);
    let got = sink.wait_for(6, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 6);
    assert_eq!(sink.connections(), 1, "one connection carried all six");
    assert_eq!(runner.pool().opened(), 1);

    // Twenty at a time against a slow server, at most two connections to it.
    let slow = Sink::tcp(
        "127.0.0.1:0",
        SinkOptions {
            data_delay: Duration::from_millis(100),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (_d2, spool, runner) = relay(&route(
        slow.addr.unwrap().port(),
        "concurrency = 20\nmax_connections_per_destination = 2",
    ))
    .await;
    for i in 0..12 {
        let env = envelope(&format!("S{i}"), &["u@dest.test"], vec![]);
        spool.store(SpoolState::Queue, &env, &msg(i)).await.unwrap();
    }
    let pass = runner.run_once(T0).await;
    assert_eq!(pass.finished.len(), 12, "{:?}", pass.attempts);
    assert_eq!(slow.wait_for(12, Duration::from_secs(5)).await.len(), 12);
    assert_eq!(slow.max_open(), 2, "the cap is reached and never passed");
    assert_eq!(slow.connections(), 2);
}

#[tokio::test]
async fn a_connection_is_reused_only_for_the_server_name_it_was_opened_for() {
    // Two next-hop names for one address (as MX hosts sharing a server): a connection opened
    // (and, with verified TLS, verified) for one name is never handed to the other. At the
    // cap of one connection, the idle one is closed for the other name's (not waited for).
    let sink = Sink::tcp("127.0.0.1:0", SinkOptions::default())
        .await
        .unwrap();
    let port = sink.addr.unwrap().port();
    let (_d, spool, runner) = relay(&format!(
        "[delivery]\nconcurrency = 1\nmax_connections_per_destination = 1\n\
         [[route]]\ndomains = [\"a.test\"]\nkind = \"smtp\"\nhost = \"127.0.0.1:{port}\"\ntls = \"none\"\n\
         [[route]]\ndomains = [\"b.test\"]\nkind = \"smtp\"\nhost = \"localhost:{port}\"\ntls = \"none\"\n"
    ))
    .await;
    for (i, to) in ["u@a.test", "u@a.test", "u@b.test", "u@a.test"]
        .iter()
        .enumerate()
    {
        let env = envelope(&format!("N{i}"), &[to], vec![]);
        spool.store(SpoolState::Queue, &env, &msg(i)).await.unwrap();
        let pass = runner.run_once(T0 + i as i64).await;
        assert_eq!(pass.finished.len(), 1, "{:?}", pass.attempts);
    }
    assert_eq!(sink.wait_for(4, Duration::from_secs(5)).await.len(), 4);
    // a, a (reused), b (new), a (new: the idle one was b's).
    assert_eq!(sink.connections(), 3);
}

#[tokio::test]
async fn one_delay_warning_after_the_configured_time() {
    let sink = Sink::tcp("127.0.0.1:0", SinkOptions::default())
        .await
        .unwrap();
    let (_d, spool, runner) = relay(&format!(
        "[delivery]\nretry_secs = [300]\ndelay_warning_secs = 600\nmax_queue_lifetime_secs = 86400\n[[route]]\ndomains = [\"dest.test\"]\nkind = \"smtp\"\nhost = \"127.0.0.1:{}\"\ntls = \"none\"\n",
        sink.addr.unwrap().port()
    ))
    .await;
    // D1 asks for delay notices by default; D2's recipient said NOTIFY=FAILURE only.
    spool
        .store(
            SpoolState::Queue,
            &envelope("D1", &["defer-me@dest.test", "fine@dest.test"], vec![]),
            &msg(1),
        )
        .await
        .unwrap();
    let failure_only = vec![Param {
        keyword: "NOTIFY".into(),
        value: Some("FAILURE".into()),
    }];
    spool
        .store(
            SpoolState::Queue,
            &envelope("D2", &["defer-too@dest.test"], failure_only),
            &msg(2),
        )
        .await
        .unwrap();
    assert!(runner.run_once(T0).await.warnings.is_empty());
    assert!(runner.run_once(T0 + 300).await.warnings.is_empty());
    let pass = runner.run_once(T0 + 600).await;
    assert_eq!(pass.warnings.len(), 1, "one warning, for D1 only");
    let (env, dsn) = spool.read(SpoolState::Queue, &pass.warnings[0]).unwrap();
    assert_eq!(env.sender.address, "");
    assert_eq!(env.recipients[0].address, "alice@relay.test");
    let text = String::from_utf8_lossy(&dsn);
    for want in [
        "Subject: Delayed Mail (still being retried)",
        "report-type=\"delivery-status\"",
        "Final-Recipient: rfc822; defer-me@dest.test",
        "Action: delayed",
        "Status: 4.2.0",
        "Diagnostic-Code: smtp; 451 4.2.0 try later",
        "Will-Retry-Until: ",
        "text/rfc822-headers",
        "Subject: note 1",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(
        !text.contains("fine@dest.test\r\nAction"),
        "a delivered recipient is not reported"
    );
    assert!(
        !text.contains("Body 1."),
        "a delay warning returns headers only"
    );
    // Never a second warning for the same message.
    let later = runner.run_once(T0 + 900).await;
    assert!(later.warnings.is_empty());
}

#[tokio::test]
async fn no_other_mx_is_tried_once_the_end_of_data_was_sent() {
    // Two exchangers that both take the data and hang up without answering it.
    let dropping = SinkOptions {
        drop_after_data: true,
        ..Default::default()
    };
    let first = Sink::tcp("127.0.0.1:0", dropping.clone()).await.unwrap();
    let port = first.addr.unwrap().port();
    let Ok(second) = Sink::tcp(&format!("127.0.0.2:{port}"), dropping).await else {
        panic!("127.0.0.2:{port} cannot be bound (loopback is 127.0.0.0/8 on Linux)");
    };
    let dns = Dns::start(
        Zone::new()
            .mx("example.test", 10, "mx-a.example.test")
            .mx("example.test", 20, "mx-b.example.test")
            .addr("mx-a.example.test", LOCAL)
            .addr("mx-b.example.test", IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))),
    )
    .await;
    let (_dir, spool, runner) = relay(&format!(
        "[delivery]\nresolver = \"{}\"\ntimeout_secs = 10\n[[route]]\ndomains = [\"example.test\"]\nkind = \"mx\"\nport = {port}\ntls = \"none\"\n",
        dns.addr
    ))
    .await;
    spool
        .store(
            SpoolState::Queue,
            &envelope("D1", &["x@example.test"], vec![]),
            &msg(1),
        )
        .await
        .unwrap();
    let pass = runner.run_once(T0).await;
    let out = outcomes(&pass, &["x@example.test"]);
    assert_eq!(out[0].0, RcptStatus::Pending, "{out:?}");
    assert!(out[0].1.starts_with("451 4.4.2"), "{out:?}");
    assert_eq!(first.count(), 1, "the preferred exchanger had the data");
    assert_eq!(
        second.connections(),
        0,
        "the message may have been taken: no second exchanger in the same attempt"
    );
}
