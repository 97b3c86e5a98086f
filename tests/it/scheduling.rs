//! The delivery scheduler: per-destination queues that one destination cannot stall, the
//! suspension of a destination that cannot be reached, and the per-route throttles
//! (connections, messages per connection, messages per minute).

use std::time::Duration;

use sluice::delivery::runner::Runner;
use sluice::delivery::state::RcptStatus;
use sluice::spool::{Spool, SpoolState};
use sluice_tests::sink::{BlackHole, Sink, SinkOptions};
use sluice_tests::*;

/// Sends `n` messages to `rcpt` over one SMTP session, each acknowledged with 250.
async fn send_many(addr: std::net::SocketAddr, rcpt: &str, n: usize, tag: &str) {
    let mut c = Conversation::connect(addr).await;
    c.send("EHLO client.test").await;
    c.expect("250 ").await;
    for i in 0..n {
        c.begin_transaction("a@example.net", rcpt).await;
        c.raw(format!("Subject: {tag} {i}\r\n\r\nbody {i}\r\n.\r\n").as_bytes())
            .await;
        c.expect("250 ").await;
    }
    c.send("QUIT").await;
}

/// Waits (bounded by `within`) until `f` holds; false when it never did.
async fn eventually(within: Duration, f: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

fn routes(black: &BlackHole, sink: &Sink, extra: &str) -> String {
    format!(
        "[relay]\nlocal_domains = [\"example.org\", \"black.test\", \"healthy.test\"]\n\
         [delivery]\nmax_connections_per_destination = 10\nconcurrency = 20\n{extra}\n\
         [[route]]\ndomains = [\"black.test\"]\nkind = \"smtp\"\nhost = \"{}\"\ntls = \"none\"\n\
         [[route]]\ndomains = [\"healthy.test\"]\nkind = \"smtp\"\nhost = \"{}\"\ntls = \"none\"\n",
        black.addr,
        sink.addr.unwrap()
    )
}

/// A next hop that accepts connections and never greets holds up its own mail and nothing
/// else: with the default greeting timeout (300 s), its connections stay open for the whole
/// test, while mail to a healthy next hop and to a local Maildir is delivered meanwhile.
/// (The queue runner this replaced worked in passes that ended with their slowest delivery:
/// everything queued behind a black hole waited out its timeout.)
#[tokio::test]
async fn a_destination_that_never_greets_holds_up_only_itself() {
    let black = BlackHole::start().await.unwrap();
    let sink = Sink::tcp("127.0.0.1:0", SinkOptions::default())
        .await
        .unwrap();
    let s = TestServer::start(&routes(&black, &sink, ""), &[]).await;

    // More mail for the black hole than it may have connections: 10 are held open, the
    // rest wait in its queue without being attempted.
    send_many(s.smtp, "x@black.test", 25, "stuck").await;
    assert!(
        eventually(Duration::from_secs(20), || black.open() == 10).await,
        "the black hole holds {} connections, not its limit of 10",
        black.open()
    );

    // Meanwhile: 200 messages to the healthy next hop, and one local delivery.
    send_many(s.smtp, "y@healthy.test", 200, "healthy").await;
    send_to_bob(s.smtp, "local", "while a destination hangs").await;
    let got = sink.wait_for(200, Duration::from_secs(60)).await;
    assert_eq!(got.len(), 200, "mail to the healthy next hop waited");
    let local = s.mailbox("bob", 1).await;
    assert!(local[0].contains("Subject: local"));

    // All of that while the black hole still held its connections: nothing waited out its
    // timeout, and it never got more than its limit.
    assert_eq!(black.open(), 10);
    assert_eq!(black.accepted(), 10);
    // (A delivered message leaves the queue just after its next hop has it.)
    assert!(
        eventually(Duration::from_secs(10), || s.queued().len() == 25).await,
        "only the black hole's mail is still queued: {} are",
        s.queued().len()
    );
    s.stop().await;
}

/// A destination that cannot be talked to is suspended after three failed deliveries in a
/// row: its other mail is deferred at once with the reason, without a connection each.
#[tokio::test]
async fn an_unreachable_destination_is_suspended_and_its_mail_deferred_at_once() {
    let black = BlackHole::start().await.unwrap();
    let sink = Sink::tcp("127.0.0.1:0", SinkOptions::default())
        .await
        .unwrap();
    let extra = "greeting_timeout_secs = 1\n";
    let s = TestServer::start(
        &routes(&black, &sink, extra).replace(
            "domains = [\"black.test\"]\nkind = \"smtp\"",
            "domains = [\"black.test\"]\nmax_connections = 1\nkind = \"smtp\"",
        ),
        &[],
    )
    .await;
    send_many(s.smtp, "x@black.test", 8, "stuck").await;
    let queue = s.dir.path().join("spool/queue");
    let states = || -> Vec<sluice::delivery::state::QueueState> {
        s.ctx()
            .spool
            .list(SpoolState::Queue)
            .unwrap()
            .iter()
            .filter_map(|id| sluice::delivery::state::read(&queue, id).ok().flatten())
            .collect()
    };
    // Every message attempted once: three waited out the greeting timeout, one at a time,
    // and the other five were deferred as soon as the destination was suspended.
    assert!(
        eventually(Duration::from_secs(30), || {
            let st = states();
            st.len() == 8 && st.iter().all(|s| s.recipients[0].attempts == 1)
        })
        .await,
        "not every message was attempted: {:?}",
        states()
            .iter()
            .map(|s| s.recipients[0].last_reply.clone())
            .collect::<Vec<_>>()
    );
    let replies: Vec<String> = states()
        .iter()
        .map(|s| s.recipients[0].last_reply.clone().unwrap_or_default())
        .collect();
    let timed_out = replies
        .iter()
        .filter(|r| r.contains("greeting") && !r.contains("suspended"))
        .count();
    let suspended: Vec<&String> = replies.iter().filter(|r| r.contains("suspended")).collect();
    assert_eq!((timed_out, suspended.len()), (3, 5), "{replies:#?}");
    assert!(suspended[0].starts_with("451 4.4.1") && suspended[0].contains("black.test"));
    assert!(
        suspended[0].contains("timeout"),
        "the reason is given: {}",
        suspended[0]
    );
    assert_eq!(
        black.accepted(),
        3,
        "a suspended destination gets no connection"
    );
    assert!(
        states()
            .iter()
            .all(|s| s.recipients[0].status == RcptStatus::Pending)
    );
    s.stop().await;
}

/// A route's throttles, on a queue run by hand with a clock of the test's: at most 2
/// messages per connection, at most 3 messages per minute (the rest wait for the next
/// minute without an attempt counted).
#[tokio::test]
async fn route_throttles_messages_per_connection_and_per_minute() {
    let sink = Sink::tcp("127.0.0.1:0", SinkOptions::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&format!(
        "[server]\nhostname = \"relay.test\"\ndata_dir = {:?}\n[plugins]\ncache_dir = {:?}\n\
         [delivery]\nconcurrency = 1\n\
         [[route]]\ndomains = [\"example.org\"]\nkind = \"smtp\"\nhost = \"{}\"\ntls = \"none\"\n\
         max_messages_per_connection = 2\nmax_messages_per_minute = 3\n",
        dir.path(),
        workspace_root().join("target/test-compile-cache"),
        sink.addr.unwrap()
    ));
    let spool = Spool::open(&dir.path().join("spool")).unwrap();
    let rt = runtime();
    let p = pipeline(&rt, &cfg, &[]).await.unwrap();
    let runner = Runner::new(spool.clone(), cfg, p);
    for i in 0..5 {
        let env = spooled(
            &format!("T{i}"),
            "a@relay.test",
            &format!("r{i}@example.org"),
            None,
        );
        spool
            .store(SpoolState::Queue, &env, b"Subject: t\r\n\r\nx\r\n")
            .await
            .unwrap();
    }
    const T0: i64 = 1_800_000_010;
    let first = runner.run_once(T0).await;
    assert_eq!(first.attempts.len(), 3, "three in the first minute");
    assert_eq!(sink.count(), 3);
    // The other two wait for the next minute, not counted as attempts.
    let queue = dir.path().join("spool/queue");
    let waiting: Vec<_> = spool
        .list(SpoolState::Queue)
        .unwrap()
        .iter()
        .map(|id| sluice::delivery::state::read(&queue, id).unwrap().unwrap())
        .collect();
    assert_eq!(waiting.len(), 2);
    for st in &waiting {
        assert_eq!(st.recipients[0].attempts, 0);
        assert_eq!(st.next_attempt, 1_800_000_060, "the next minute");
    }
    assert!(runner.run_once(T0 + 45).await.attempts.is_empty());
    let second = runner.run_once(1_800_000_060).await;
    assert_eq!(second.attempts.len(), 2);
    assert_eq!(sink.count(), 5);
    // Five messages, at most two per connection.
    assert!(
        sink.connections() >= 3,
        "{} connections",
        sink.connections()
    );
    assert!(sink.messages().iter().all(|m| {
        sink.messages()
            .iter()
            .filter(|o| o.connection == m.connection)
            .count()
            <= 2
    }));
}
