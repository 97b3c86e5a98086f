//! The queue runner: takes due messages from the spool to their next hop, per recipient.
//!
//! The scheduler ([`Runner::run`]) visits each message on its own, as soon as it is due and
//! its destinations have room ([`super::destinations`]: per-destination connection limits,
//! rates and suspension of the unreachable, under `delivery.concurrency` in all), so a
//! destination that hangs holds up only its own mail. A visit groups the message's due
//! recipients by destination, delivers to every destination at once over pooled
//! connections ([`super::pool`]), and records each recipient's outcome as it comes (2xx
//! delivered, 5xx failed, 4xx/connection trouble deferred, each recipient with its own next
//! attempt), calls the `on-delivery` hooks, then either schedules the next attempt or — when
//! nothing is pending — spools a bounce for the failures (RFC 3464, via `render-bounce`) and
//! removes the message. Messages older than the queue lifetime fail their pending recipients
//! as expired; messages older than `delivery.delay_warning_secs` get one "delayed" DSN.
//! [`Runner::run_once`] is one pass over every due message at a time the caller gives (tests
//! and tools that run the queue on a clock of their own).
//!
//! Order of writes keeps mail safe across crashes: a bounce is spooled before the original is
//! removed, and the state file is replaced atomically, so a crash repeats work (at-least-once)
//! but never loses a message.

mod notices;
mod trust;
mod visit;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use tokio::sync::Notify;

use crate::config::{Config, PolicyUse, RouteConfig, RouteKind};
use crate::envelope::{Recipient, Sender};
use crate::pipeline::{CallRecord, Pipeline};
use crate::plugin::bindings::types::{DeliveryReport, DeliveryStatus, FailedRecipient};
use crate::smtp::reply::Reply;
use crate::smtp::session::address;
use crate::spool::{self, Spool, SpoolState, SpooledEnvelope};

use super::arrivals::Arrivals;
use super::bounce::Notice;
use super::client::{ClientConfig, DsnParams, Outgoing, Target, Timeouts};
use super::dane::{Dane, HopDane};
use super::destinations::{Admission, Destinations, Limits, Outcome as DestinationOutcome};
use super::mta_sts::{self, MtaSts};
use super::mx::{MxError, MxResolver};
use super::pool::{Pool, Sent};
use super::state::{self, QueueState, RcptStatus, fmt_time};
use super::tls_report;
use super::{bounce, local};

/// Runs the queue files' blocking work (open, read, sync, unlink) on tokio's blocking
/// threads, not on an async worker: on some file systems an unlink waits for the device
/// (a discard) or an open for a long inode search, and a worker blocked there stalls every
/// SMTP session and plugin call scheduled on it.
async fn off_worker<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| anyhow::anyhow!("queue file work failed: {e}"))
}

/// What one pass did, for logs and tests.
#[derive(Debug, Default)]
pub struct PassReport {
    /// (queue id, recipient, outcome, reply) for every recipient attempted.
    pub attempts: Vec<(String, String, RcptStatus, String)>,
    /// Queue ids of the bounces spooled.
    pub bounces: Vec<String>,
    /// Queue ids of the delay warnings spooled.
    pub warnings: Vec<String>,
    /// Queue ids removed because they were finished.
    pub finished: Vec<String>,
    /// The `on-delivery` and `render-bounce` calls made.
    pub hook_calls: Vec<CallRecord>,
}

/// Delivers the queue.
pub struct Runner {
    spool: Spool,
    settings: arc_swap::ArcSwap<Settings>,
    pool: Pool,
    mx: MxResolver,
    /// MTA-STS policies of MX destinations, cached.
    sts: MtaSts,
    /// DNSSEC-validated lookups of MX hosts' TLSA records (DANE), cached.
    dane: Dane,
    /// The TLS of MX deliveries, counted for TLS reports (`[reports] tls`).
    tls_reports: Option<Arc<super::tls_report::TlsReports>>,
    destinations: Destinations,
    /// When set, the configuration and plugins in force are taken from here.
    live: Option<Arc<arc_swap::ArcSwap<crate::server::context::Live>>>,
    /// The `live` state `settings` was taken from.
    seen: std::sync::Mutex<Option<Arc<crate::server::context::Live>>>,
    /// Where this server listens: a next hop there is ourselves (a mail loop).
    own: Vec<std::net::SocketAddr>,
    /// Messages whose processing panicked, and when to try them again.
    panicked: std::sync::Mutex<std::collections::HashMap<String, i64>>,
    /// Delivery states that could not be written to disk, by queue id.
    unsaved: std::sync::Mutex<std::collections::HashMap<String, QueueState>>,
    /// Messages put in the queue since the scheduler last looked ([`Arrivals`]).
    arrivals: Arrivals,
}

/// Seconds before a message whose delivery panicked is tried again.
const PANIC_RETRY_SECS: i64 = 300;

/// Runs `work` for each id, `concurrency` at a time, each under `catch_unwind`, so that a
/// panic in one is caught and reported (as its message) instead of ending the queue runner.
async fn contained<T, F, Fut>(
    ids: Vec<String>,
    concurrency: usize,
    work: F,
) -> Vec<(String, Result<T, String>)>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    use futures::FutureExt as _;
    futures::stream::iter(ids)
        .map(|id| {
            let fut = std::panic::AssertUnwindSafe(work(id.clone())).catch_unwind();
            async move {
                let r = fut.await.map_err(|p| {
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "a panic without a message".to_string())
                });
                (id, r)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// True when delivering to `target` would reach one of our own listeners `own`: the same
/// address and port, or a loopback address on the port of a listener on loopback or on every
/// address.
fn loops_back(target: std::net::SocketAddr, own: &[std::net::SocketAddr]) -> bool {
    own.iter().any(|l| {
        l.port() == target.port()
            && (l.ip() == target.ip()
                || (target.ip().is_loopback() && (l.ip().is_loopback() || l.ip().is_unspecified())))
    })
}

/// The seconds to wait after a recipient's `attempts`-th attempt failed temporarily: the
/// schedule's entry for it, its last entry repeating.
fn retry_delay(schedule: &[u64], attempts: u32) -> i64 {
    let step = usize::try_from(attempts)
        .unwrap_or(usize::MAX)
        .saturating_sub(1)
        .min(schedule.len().saturating_sub(1));
    i64::try_from(schedule.get(step).copied().unwrap_or(300)).unwrap_or(i64::MAX / 2)
}

/// The destination a recipient in `domain` goes to by `route`: the domain for MX routes,
/// the next hop (and how it is reached) for the others.
fn destination_key(route: Option<&RouteConfig>, domain: &str) -> String {
    match route {
        Some(r) if r.kind == RouteKind::Mx => format!("mx:{domain}"),
        Some(r) if r.kind == RouteKind::Maildir => "maildir:".to_string(),
        Some(r) => format!(
            "{}:{}{}",
            format!("{:?}", r.kind).to_lowercase(),
            r.host.clone().unwrap_or_default(),
            r.socket
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ),
        None => format!("none:{domain}"),
    }
}

/// The limits of a destination reached by `route`.
fn limits_of(route: &RouteConfig, config: &Config) -> Limits {
    let d = &config.delivery;
    let local = route.kind == RouteKind::Maildir;
    Limits {
        connections: match local {
            // Local delivery holds no connection: as many at once as deliveries in all.
            true => d.concurrency,
            false => route
                .max_connections
                .unwrap_or(d.max_connections_per_destination),
        },
        per_minute: route.max_messages_per_minute,
        shared: !local,
    }
}

/// The current Unix time in seconds.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// What happened to one recipient in one attempt.
#[derive(Debug, Clone)]
struct Handed {
    /// The reply that decided it.
    reply: Reply,
    /// The server that gave it.
    remote: Option<String>,
    /// The success notice due when it was accepted and its NOTIFY asks for SUCCESS: none
    /// when the next hop took the DSN parameters (it reports from there).
    success: Option<Notice>,
    /// The recipient domain's policy that applied to the attempt (MTA-STS), for the log and
    /// the queue's history.
    policy: Option<String>,
}

/// One reply for every recipient of a group.
fn each(n: usize, reply: Reply, remote: Option<String>) -> Vec<Handed> {
    vec![
        Handed {
            reply,
            remote,
            success: None,
            policy: None,
        };
        n
    ]
}

/// The DSN parameters of a message as ESMTP parameters for the next hop: (MAIL's, each
/// RCPT's in `rcpts` order).
fn dsn_params(envelope: &SpooledEnvelope, rcpts: &[String]) -> (String, Vec<String>) {
    use super::client::xtext;
    let mut mail = String::new();
    for p in &envelope.sender.params {
        if let ("RET" | "ENVID", Some(v)) = (p.keyword.as_str(), &p.value) {
            mail.push_str(&format!(" {}={}", p.keyword, xtext(v)));
        }
    }
    let rcpt = rcpts
        .iter()
        .map(|a| {
            let mut out = String::new();
            if let Some(r) = envelope.recipients.iter().find(|r| &r.address == a) {
                for p in &r.params {
                    match (p.keyword.as_str(), &p.value) {
                        ("NOTIFY", Some(v)) => out.push_str(&format!(" NOTIFY={v}")),
                        ("ORCPT", Some(v)) => {
                            // `addr-type ; xtext` (RFC 3461 §4.2): the type stays as it is.
                            let (kind, addr) = v.split_once(';').unwrap_or(("rfc822", v));
                            out.push_str(&format!(" ORCPT={kind};{}", xtext(addr)));
                        }
                        _ => {}
                    }
                }
            }
            out
        })
        .collect();
    (mail, rcpt)
}

/// True when the envelope's SMTPUTF8 declaration is needed: an address or a header field of
/// the message is not ASCII. Otherwise the message goes to any next hop as it is.
fn needs_smtputf8(envelope: &SpooledEnvelope, message: &[u8]) -> bool {
    let declared = envelope
        .sender
        .params
        .iter()
        .any(|p| p.keyword == "SMTPUTF8");
    let header_end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(message.len());
    declared
        && (!envelope.sender.address.is_ascii()
            || envelope.recipients.iter().any(|r| !r.address.is_ascii())
            || !message[..header_end].is_ascii())
}

impl PassReport {
    fn merge(&mut self, other: PassReport) {
        self.attempts.extend(other.attempts);
        self.bounces.extend(other.bounces);
        self.warnings.extend(other.warnings);
        self.finished.extend(other.finished);
        self.hook_calls.extend(other.hook_calls);
    }
}

/// The configuration and plugins a delivery uses (swapped by reloads).
struct Settings {
    config: Config,
    pipeline: Pipeline,
}

/// What one visit to a message came to, for the scheduler.
#[derive(Default)]
struct Visit {
    report: PassReport,
    /// When the message is due again (`None`: finished or gone).
    due: Option<i64>,
    /// Destinations that had no room for some of its recipients: the message is looked at
    /// again when one of them has.
    waiting_for: Vec<(String, Limits)>,
}

/// How often the scheduler reads every queued message's state again (to see changes made by
/// `sluice queue` from another process), at most.
const RESCAN: Duration = Duration::from_secs(5);

/// The waiting messages to look at again now, from each destination's queue, oldest first:
/// as many as it has room for, and up to as many again sent ahead to wait for a slot with
/// their message read (`ahead` counts those per destination), so that a connection that
/// frees is used at once. Each comes with the destinations it was sent ahead for (none: it
/// had room). `waiting` forgets them; a visit that finds no room puts its message back.
fn take_ready(
    queues: &mut std::collections::HashMap<String, (Limits, std::collections::VecDeque<String>)>,
    waiting: &mut std::collections::HashMap<String, Vec<(String, Limits)>>,
    in_flight: &std::collections::HashSet<String>,
    ahead: &mut std::collections::HashMap<String, usize>,
    destinations: &Destinations,
    now: i64,
) -> Vec<(String, Vec<String>)> {
    let mut ready: Vec<(String, Vec<String>)> = Vec::new();
    for (key, (limits, queue)) in queues.iter_mut() {
        let mut room = destinations.room(key, *limits, now);
        let sent_ahead = ahead.entry(key.clone()).or_default();
        let mut extra = limits.connections.saturating_sub(*sent_ahead);
        while room > 0 || extra > 0 {
            let Some(id) = queue.pop_front() else { break };
            // Gone, already taken from another destination's queue, or under way.
            if in_flight.contains(&id) || waiting.remove(&id).is_none() {
                continue;
            }
            if room > 0 {
                room -= 1;
                ready.push((id, Vec::new()));
            } else {
                extra -= 1;
                *sent_ahead += 1;
                ready.push((id, vec![key.clone()]));
            }
        }
    }
    queues.retain(|_, (_, q)| !q.is_empty());
    ahead.retain(|_, n| *n > 0);
    ready
}

/// What became of one destination's group of recipients in one visit.
enum GroupResult {
    /// Attempted: one outcome per recipient.
    Tried(Vec<Handed>),
    /// No room now: not attempted.
    Busy(String, Limits),
    /// Its rate is used up until then: not attempted.
    Throttled(i64),
}

impl Runner {
    /// A runner over `spool` with the routes and limits of `config`.
    pub fn new(spool: Spool, config: Config, pipeline: Pipeline) -> Runner {
        let d = &config.delivery;
        let pool = Pool::new(
            d.max_connections_per_destination,
            Duration::from_secs(d.connection_idle_secs),
        );
        let mx = MxResolver::new(d.resolver.as_deref());
        let sts = MtaSts::new(config.server.data_dir.join("mta-sts"), d.mta_sts_port);
        let dane = Dane::new(d.resolver.as_deref().and_then(crate::config::resolver_addr));
        let destinations = Destinations::new(d.concurrency, None);
        Runner {
            spool,
            settings: arc_swap::ArcSwap::from_pointee(Settings { config, pipeline }),
            pool,
            mx,
            sts,
            dane,
            tls_reports: None,
            destinations,
            live: None,
            seen: Default::default(),
            own: Vec::new(),
            panicked: Default::default(),
            unsaved: Default::default(),
            arrivals: Arrivals::default(),
        }
    }

    /// Counts the TLS of MX deliveries into `reports` (for TLS reports, RFC 8460).
    pub fn reporting_tls(mut self, reports: Arc<super::tls_report::TlsReports>) -> Runner {
        self.tls_reports = Some(reports);
        self
    }

    /// Hears of new messages through `arrivals` (the server's SMTP sessions add to it).
    pub fn hearing(mut self, arrivals: Arrivals) -> Runner {
        self.arrivals = arrivals;
        self
    }

    /// Tells the runner where this server listens, so that a next hop that is ourselves is
    /// reported as a mail loop (5.4.6) instead of being delivered to.
    pub fn listening_on(mut self, own: Vec<std::net::SocketAddr>) -> Runner {
        self.own = own;
        self
    }

    /// Makes the runner use the configuration and plugins in force in `live` (reloads).
    pub fn following(
        mut self,
        live: Arc<arc_swap::ArcSwap<crate::server::context::Live>>,
    ) -> Runner {
        self.live = Some(live);
        self
    }

    /// Counts per-destination rates in `kv` (a store a fleet shares), not in this process.
    pub fn sharing_rates(mut self, kv: crate::store::KvStore) -> Runner {
        let concurrency = self.settings.load().config.delivery.concurrency;
        self.destinations = Destinations::new(concurrency, Some(kv));
        self
    }

    /// The outbound connection pool (connections opened so far, for tests).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// How each destination stands.
    pub fn destinations(&self) -> &Destinations {
        &self.destinations
    }

    /// Takes the configuration and plugins in force from `live`, when following it and
    /// they changed (a reload).
    fn refresh(&self) {
        let Some(live) = &self.live else { return };
        let l = live.load_full();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.as_ref().is_some_and(|s| Arc::ptr_eq(s, &l)) {
            return;
        }
        self.destinations
            .set_concurrency(l.config.delivery.concurrency);
        self.settings.store(Arc::new(Settings {
            config: l.config.clone(),
            pipeline: l.pipeline.clone(),
        }));
        *seen = Some(l);
    }

    /// Delivers until shut down. Each message is delivered on its own, as soon as it is due
    /// and its destinations have room: a delivery that takes long (a next hop that never
    /// answers) holds up only its own destination, within that destination's limits.
    ///
    /// The scheduler looks at the queue when mail arrives (`wakeup`), when the queue was
    /// changed (`changed`: a console action), when a delivery ends, when the next message is
    /// due, and at least every [`RESCAN`]. On shutdown, the deliveries in progress finish
    /// (the server bounds how long it waits), then the runner returns.
    pub async fn run(
        self,
        wakeup: Arc<Notify>,
        changed: Arc<Notify>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        use futures::FutureExt as _;
        use std::collections::{HashMap, HashSet, VecDeque};
        let freed = self.destinations.freed();
        let mut in_flight: HashSet<String> = HashSet::new();
        // When each message is due again, as its last visit said.
        let mut due: HashMap<String, i64> = HashMap::new();
        // Messages that found no room, with the destinations they wait for; and each
        // destination's queue of them, oldest first. A slot that frees takes the next ones
        // from its queue, without a look at the spool.
        let mut waiting: HashMap<String, Vec<(String, Limits)>> = HashMap::new();
        let mut queues: HashMap<String, (Limits, VecDeque<String>)> = HashMap::new();
        // Visits sent ahead to wait for a slot (the message read, ready to go the moment a
        // connection frees): how many per destination, and which destinations each is for.
        let mut ahead: HashMap<String, usize> = HashMap::new();
        let mut ahead_of: HashMap<String, Vec<String>> = HashMap::new();
        let start = |id: String, wait: bool| {
            std::panic::AssertUnwindSafe(self.visit(id.clone(), now(), wait))
                .catch_unwind()
                .map(move |r| (id, r))
        };
        let mut visits = futures::stream::FuturesUnordered::new();
        let mut last_full: Option<std::time::Instant> = None;
        let mut full = true;
        let mut last_idle_sweep = std::time::Instant::now();
        loop {
            if *shutdown.borrow() {
                break;
            }
            self.refresh();
            let now = now();
            let (arrived, dropped) = self.arrivals.take();
            if dropped || last_full.is_none_or(|t| t.elapsed() >= RESCAN) {
                full = true;
            }
            // The messages to visit: on a full look every queued message (changes made by
            // `sluice queue` from another process show then), otherwise those that arrived
            // and those due by now.
            let mut candidates: Vec<String> = if full {
                last_full = Some(std::time::Instant::now());
                due.clear();
                let spool = self.spool.clone();
                let ids = off_worker(move || spool.list(SpoolState::Queue))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default();
                let listed: HashSet<&String> = ids.iter().collect();
                waiting.retain(|id, _| listed.contains(id));
                ids
            } else {
                let mut c = arrived;
                c.extend(
                    due.iter()
                        .filter(|(_, t)| **t <= now)
                        .map(|(id, _)| id.clone()),
                );
                c
            };
            // Queue ids begin with their time: oldest first.
            candidates.sort_unstable();
            candidates.dedup();
            let skip: HashMap<String, i64> = self
                .panicked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            for id in &candidates {
                if in_flight.contains(id)
                    || waiting.contains_key(id)
                    || skip.get(id).is_some_and(|&until| until > now)
                    || due.get(id).is_some_and(|&t| t > now)
                {
                    continue;
                }
                in_flight.insert(id.clone());
                visits.push(start(id.clone(), false));
            }
            full = false;
            if last_idle_sweep.elapsed() >= Duration::from_secs(1) {
                last_idle_sweep = std::time::Instant::now();
                self.pool.close_idle();
            }
            // Until the next message is due, at most RESCAN.
            let next_due = due
                .values()
                .copied()
                .min()
                .map(|t| Duration::from_secs(u64::try_from(t - now).unwrap_or(0).max(1)))
                .unwrap_or(RESCAN)
                .min(RESCAN);
            let sleep = tokio::time::sleep(next_due);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    Some((id, result)) = visits.next(), if !visits.is_empty() => {
                        in_flight.remove(&id);
                        for key in ahead_of.remove(&id).unwrap_or_default() {
                            if let Some(n) = ahead.get_mut(&key) {
                                *n = n.saturating_sub(1);
                            }
                        }
                        match result {
                            Ok(Ok(v)) => {
                                match v.due {
                                    Some(t) => { due.insert(id.clone(), t); }
                                    None => { due.remove(&id); }
                                }
                                if !v.waiting_for.is_empty() {
                                    due.remove(&id);
                                    for (key, limits) in &v.waiting_for {
                                        let q = queues
                                            .entry(key.clone())
                                            .or_insert_with(|| (*limits, VecDeque::new()));
                                        q.0 = *limits;
                                        q.1.push_back(id.clone());
                                    }
                                    waiting.insert(id, v.waiting_for);
                                }
                            }
                            Ok(Err(e)) => {
                                tracing::warn!(id = %id, error = %e, "queue runner could not process the message");
                            }
                            Err(panic) => self.contain_panic(&id, panic, self::now()),
                        }
                    }
                    _ = freed.notified(), if !queues.is_empty() => {
                        let ready = take_ready(&mut queues, &mut waiting, &in_flight, &mut ahead, &self.destinations, self::now());
                        for (id, waits_for) in ready {
                            in_flight.insert(id.clone());
                            let wait = !waits_for.is_empty();
                            if wait {
                                ahead_of.insert(id.clone(), waits_for);
                            }
                            visits.push(start(id, wait));
                        }
                    }
                    _ = wakeup.notified() => break,
                    _ = changed.notified() => { full = true; break }
                    _ = &mut sleep => break,
                    _ = shutdown.wait_for(|s| *s) => break,
                }
            }
        }
        // Shutting down: let the deliveries in progress finish.
        while let Some((id, result)) = visits.next().await {
            if let Err(panic) = result {
                self.contain_panic(&id, panic, now());
            }
        }
        self.pool.close_all().await;
    }

    /// Records that the delivery of `id` panicked: a bug, not the message's fault. The
    /// message stays queued and is tried again later; the other deliveries go on.
    fn contain_panic(&self, id: &str, panic: Box<dyn std::any::Any + Send>, now: i64) {
        let text = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".to_string());
        tracing::error!(id = %id, panic = %crate::inbound::message::printable(&text), "delivery of the message panicked; it stays queued and is retried in {PANIC_RETRY_SECS} s");
        self.panicked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), now + PANIC_RETRY_SECS);
    }

    /// One pass over the queue at time `now` (Unix seconds): every due message, waiting for
    /// room at busy destinations, so that the pass ends with each due recipient attempted
    /// (for tests and `sluice queue` tools that run the queue on a clock of their own).
    pub async fn run_once(&self, now: i64) -> PassReport {
        self.refresh();
        let mut report = PassReport::default();
        let spool = self.spool.clone();
        let Ok(Ok(ids)) = off_worker(move || spool.list(SpoolState::Queue)).await else {
            return report;
        };
        let ids: Vec<String> = {
            let skip = self.panicked.lock().unwrap_or_else(|p| p.into_inner());
            ids.into_iter()
                .filter(|id| skip.get(id).is_none_or(|&until| until <= now))
                .collect()
        };
        let concurrency = self.settings.load().config.delivery.concurrency.max(1);
        let results = contained(ids, concurrency, |id| async move {
            self.visit(id, now, true).await
        })
        .await;
        for (id, result) in results {
            match result {
                Ok(Ok(v)) => report.merge(v.report),
                Ok(Err(e)) => {
                    tracing::warn!(id = %id, error = %e, "queue runner could not process the message")
                }
                Err(panic) => self.contain_panic(&id, Box::new(panic), now),
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::{contained, loops_back};

    #[tokio::test]
    async fn a_panic_in_one_delivery_is_contained_and_the_others_go_on() {
        let ids: Vec<String> = ["a", "boom", "c"].iter().map(|s| s.to_string()).collect();
        let results = contained(ids, 2, |id| async move {
            tokio::task::yield_now().await;
            if id == "boom" {
                panic!("index out of bounds in {id}");
            }
            id.len()
        })
        .await;
        let mut results = results;
        results.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(results[0], ("a".to_string(), Ok(1)));
        assert_eq!(
            results[1],
            (
                "boom".to_string(),
                Err("index out of bounds in boom".to_string())
            )
        );
        assert_eq!(results[2], ("c".to_string(), Ok(1)));
    }

    #[test]
    fn a_next_hop_on_our_own_listener_is_a_loop() {
        let own = vec![
            "127.0.0.1:2525".parse().unwrap(),
            "[::]:25".parse().unwrap(),
        ];
        assert!(loops_back("127.0.0.1:2525".parse().unwrap(), &own));
        assert!(loops_back("127.0.0.2:2525".parse().unwrap(), &own));
        assert!(loops_back("[::1]:25".parse().unwrap(), &own));
        assert!(!loops_back("127.0.0.1:25".parse().unwrap(), &own[..1]));
        assert!(!loops_back("192.0.2.1:2525".parse().unwrap(), &own));
    }
}
