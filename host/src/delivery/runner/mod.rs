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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use tokio::sync::Notify;

use crate::config::{Config, RouteConfig, RouteKind};
use crate::envelope::{Recipient, Sender};
use crate::pipeline::{CallRecord, Pipeline};
use crate::plugin::bindings::types::{DeliveryReport, DeliveryStatus, FailedRecipient};
use crate::smtp::reply::Reply;
use crate::smtp::session::address;
use crate::spool::{self, Spool, SpoolState, SpooledEnvelope};

use super::bounce::Notice;
use super::client::{ClientConfig, DsnParams, Outgoing, Target, Timeouts};
use super::destinations::{Admission, Destinations, Limits, Outcome as DestinationOutcome};
use super::mx::{MxError, MxResolver};
use super::pool::{Pool, Sent};
use super::state::{self, QueueState, RcptStatus, fmt_time};
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

/// The ids of messages put in the queue, for the scheduler to visit without listing the
/// spool: the SMTP sessions add theirs (then wake the runner), and so do the runner's own
/// DSNs. Bounded: past [`MAX_ARRIVALS`] the list is dropped and the next listing of the
/// spool finds them.
#[derive(Clone, Default)]
pub struct Arrivals(Arc<std::sync::Mutex<(Vec<String>, bool)>>);

/// Arrivals remembered at most between two looks.
const MAX_ARRIVALS: usize = 100_000;

impl Arrivals {
    /// Notes that message `id` was put in the queue.
    pub fn add(&self, id: &str) {
        let mut a = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if a.0.len() >= MAX_ARRIVALS {
            a.0.clear();
            a.1 = true;
        }
        a.0.push(id.to_string());
    }

    /// The ids added since the last call, and whether some were dropped (list the spool).
    fn take(&self) -> (Vec<String>, bool) {
        let mut a = self.0.lock().unwrap_or_else(|p| p.into_inner());
        (std::mem::take(&mut a.0), std::mem::take(&mut a.1))
    }
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
}

/// One reply for every recipient of a group.
fn each(n: usize, reply: Reply, remote: Option<String>) -> Vec<Handed> {
    vec![
        Handed {
            reply,
            remote,
            success: None,
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
        let destinations = Destinations::new(d.concurrency, None);
        Runner {
            spool,
            settings: arc_swap::ArcSwap::from_pointee(Settings { config, pipeline }),
            pool,
            mx,
            destinations,
            live: None,
            seen: Default::default(),
            own: Vec::new(),
            panicked: Default::default(),
            unsaved: Default::default(),
            arrivals: Arrivals::default(),
        }
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

    /// Delivers what is due of message `id` at `now`. With `wait`, waits for room at busy
    /// destinations; without, leaves their recipients for later (not an attempt).
    async fn visit(&self, id: String, now: i64, wait: bool) -> anyhow::Result<Visit> {
        let id = id.as_str();
        let settings = self.settings.load_full();
        let config = &settings.config;
        let pipeline = &settings.pipeline;
        let mut visit = Visit::default();
        let dir = self.spool.root().join("queue");
        let (spool, queue, owned_id) = (self.spool.clone(), dir.clone(), id.to_string());
        let loaded = off_worker(move || -> anyhow::Result<_> {
            let disk_state = state::read(&queue, &owned_id)?;
            if let Some(s) = &disk_state
                && (s.held || s.next_attempt > now)
            {
                return Ok(Err(if s.held { i64::MAX } else { s.next_attempt }));
            }
            // The message too, in the same trip to the blocking threads: a visit that finds
            // no room is the exception (the scheduler sends visits where there is room).
            match spool.read(SpoolState::Queue, &owned_id) {
                Ok((envelope, message)) => Ok(Ok((disk_state, envelope, message))),
                // Finished, or deleted by the operator, since the listing.
                Err(_) if !spool.path(SpoolState::Queue, &owned_id).is_file() => Ok(Err(0)),
                Err(e) => Err(e.into()),
            }
        })
        .await??;
        let (disk_state, envelope, message) = match loaded {
            Ok(l) => l,
            Err(0) => return Ok(visit),
            Err(later) => {
                visit.due = Some(later);
                return Ok(visit);
            }
        };
        // Outcomes that could not be written last time are remembered here, so a failed
        // state write never sends to a recipient already delivered.
        let unsaved = self
            .unsaved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        let mut st = match (unsaved, disk_state) {
            (Some(mut mem), disk) => {
                mem.held |= disk.is_some_and(|d| d.held);
                mem
            }
            (None, Some(disk)) => disk,
            (None, None) => QueueState::initial(&envelope, now),
        };
        let lifetime =
            i64::try_from(config.delivery.max_queue_lifetime_secs).unwrap_or(i64::MAX / 2);

        // Group the due recipients by destination: a route (and, for MX routes, a domain).
        let mut groups: BTreeMap<String, (Option<RouteConfig>, String, Vec<usize>)> =
            BTreeMap::new();
        for (i, r) in st.recipients.iter().enumerate() {
            if r.status != RcptStatus::Pending || r.next_attempt.is_some_and(|t| t > now) {
                continue;
            }
            let domain = address::split(&r.address).1.to_ascii_lowercase();
            let route = config.route_for(&domain);
            let key = destination_key(route.as_ref(), &domain);
            groups
                .entry(key)
                .or_insert((route, domain, Vec::new()))
                .2
                .push(i);
        }
        // Nothing can start and nothing else is due: wait.
        let warning_due = config.delivery.delay_warning_secs.is_some_and(|after| {
            !st.warned && now - st.queued_at >= i64::try_from(after).unwrap_or(i64::MAX / 2)
        });
        if !wait
            && !groups.is_empty()
            && now - st.queued_at < lifetime
            && !warning_due
            && !groups.iter().any(|(k, (route, _, _))| {
                route
                    .as_ref()
                    .is_none_or(|r| self.destinations.has_room(k, limits_of(r, config), now))
            })
        {
            visit.waiting_for = groups
                .into_iter()
                .filter_map(|(k, (route, _, _))| Some((k, limits_of(route.as_ref()?, config))))
                .collect();
            visit.due = Some(now);
            return Ok(visit);
        }

        // Every destination at once, each as soon as it has room; outcomes are recorded as
        // they come.
        let mut running = futures::stream::FuturesUnordered::new();
        for (key, (route, domain, indexes)) in groups {
            let rcpts: Vec<String> = indexes
                .iter()
                .map(|&i| st.recipients[i].address.clone())
                .collect();
            let (envelope, message, config) = (&envelope, &message, config);
            running.push(async move {
                let result = self
                    .deliver_to(
                        &key,
                        envelope,
                        message,
                        route.as_ref(),
                        &domain,
                        rcpts,
                        config,
                        now,
                        wait,
                    )
                    .await;
                (key, indexes, result)
            });
        }
        // Recipients whose acceptance the sender asked to hear about (NOTIFY=SUCCESS).
        let mut successes: Vec<(Notice, usize)> = Vec::new();
        let mut attempted = false;
        let mut throttled = false;
        while let Some((key, indexes, result)) = running.next().await {
            let outcomes = match result {
                GroupResult::Tried(outcomes) => outcomes,
                GroupResult::Busy(key, limits) => {
                    visit.waiting_for.push((key, limits));
                    continue;
                }
                GroupResult::Throttled(until) => {
                    tracing::info!(id = %id, destination = %key, until = %fmt_time(until), "delivery: destination's rate is used up; waiting");
                    for &i in &indexes {
                        st.recipients[i].next_attempt = Some(until);
                    }
                    throttled = true;
                    continue;
                }
            };
            if !attempted {
                attempted = true;
                st.attempts += 1;
            }
            for (i, handed) in indexes.into_iter().zip(outcomes) {
                let Handed {
                    reply,
                    remote,
                    success,
                } = handed;
                let r = &mut st.recipients[i];
                r.attempts += 1;
                r.status = match reply.code / 100 {
                    2 => RcptStatus::Delivered,
                    5 => RcptStatus::Failed,
                    _ => RcptStatus::Pending,
                };
                r.next_attempt = (r.status == RcptStatus::Pending).then(|| {
                    now.saturating_add(retry_delay(&config.delivery.retry_secs, r.attempts))
                });
                r.last_reply = Some(reply.to_string());
                r.status_code = Some(if reply.enhanced.is_empty() {
                    format!("{}.0.0", reply.code / 100)
                } else {
                    reply.enhanced.clone()
                });
                r.remote = remote.clone();
                st.history.push(format!(
                    "{} {} {:?}: {reply}",
                    fmt_time(now),
                    r.address,
                    r.status
                ));
                let outcome = match r.status {
                    RcptStatus::Delivered => "delivered",
                    RcptStatus::Failed => "failed",
                    RcptStatus::Pending => "deferred",
                };
                crate::admin::metrics::get().delivery(outcome);
                crate::admin::webhook::emit(
                    outcome,
                    serde_json::json!({
                        "id": id,
                        "from": envelope.sender.address,
                        "to": r.address,
                        "destination": key,
                        "remote": remote,
                        "attempt": r.attempts,
                        "reply": reply.to_string(),
                    }),
                );
                tracing::info!(
                    event = "delivery",
                    id = %id,
                    from = %crate::inbound::message::printable(&envelope.sender.address),
                    to = %crate::inbound::message::printable(&r.address),
                    destination = %key,
                    outcome,
                    remote = %remote.as_deref().map(crate::inbound::message::printable).unwrap_or_default(),
                    attempt = r.attempts,
                    reply = %crate::inbound::message::printable(&reply.to_string()),
                    "delivery"
                );
                visit.report.attempts.push((
                    id.to_string(),
                    r.address.clone(),
                    r.status,
                    reply.to_string(),
                ));
                let delivery = DeliveryReport {
                    queue_id: id.to_string(),
                    sender: envelope.sender.address.clone(),
                    recipient: r.address.clone(),
                    status: match r.status {
                        RcptStatus::Delivered => DeliveryStatus::Delivered,
                        RcptStatus::Failed => DeliveryStatus::Failed,
                        RcptStatus::Pending => DeliveryStatus::Deferred,
                    },
                    remote_host: remote,
                    reply: reply.to_string(),
                    attempts: r.attempts,
                };
                if reply.code / 100 == 2
                    && let Some(notice) = success
                {
                    successes.push((notice, i));
                }
                visit
                    .report
                    .hook_calls
                    .extend(pipeline.on_delivery(&delivery).await);
            }
            // Recorded as it happens: a later group's failure, or a crash, must not send
            // this group's recipients again. (A finished message is removed next; what can
            // fail before that keeps its state in memory.)
            if !st.finished() {
                self.save(id, &st).await;
            }
        }
        drop(running);
        if let Err(e) = self
            .notify_successes(&envelope, &message, &st, &successes, config)
            .await
        {
            self.remember_unsaved(id, &st);
            return Err(e);
        }

        // Expiry: pending recipients of a message past its lifetime fail.
        let expired = !st.finished() && now - st.queued_at >= lifetime;
        if expired {
            for r in st
                .recipients
                .iter_mut()
                .filter(|r| r.status == RcptStatus::Pending)
            {
                r.status = RcptStatus::Failed;
                r.status_code = Some("4.4.7".to_string());
                r.next_attempt = None;
                let last = r.last_reply.clone().unwrap_or_default();
                r.last_reply = Some(format!("message expired in the queue; last reply: {last}"));
                st.history
                    .push(format!("{} {} expired", fmt_time(now), r.address));
                crate::admin::webhook::emit(
                    "expired",
                    serde_json::json!({
                        "id": id,
                        "from": envelope.sender.address,
                        "to": r.address,
                        "reply": r.last_reply,
                    }),
                );
                tracing::info!(event = "expired", id = %id, from = %crate::inbound::message::printable(&envelope.sender.address), to = %crate::inbound::message::printable(&r.address), outcome = "failed", "expired");
            }
        }

        if !st.finished() {
            let mut changed = attempted || throttled;
            // A delay warning, once, when the message has waited long enough.
            if warning_due {
                st.warned = true;
                changed = true;
                let pending = bounce::delayed(&envelope, &st);
                if !pending.is_empty() {
                    let headers = crate::pipeline::parse_headers(&message);
                    let req = bounce::request(
                        &envelope,
                        headers,
                        pending,
                        &config.server.hostname,
                        false,
                    );
                    let retry_until = st.queued_at.saturating_add(lifetime);
                    let text = bounce::delay_text(&req, retry_until);
                    let notice = Notice::Delayed { retry_until };
                    let warning = self
                        .spool_notice(&envelope, &message, &req, &text, notice, config)
                        .await?;
                    st.history.push(format!(
                        "{} delay warning {warning} sent to {}",
                        fmt_time(now),
                        envelope.sender.address
                    ));
                    crate::admin::metrics::get().delay_warning();
                    visit.report.warnings.push(warning);
                }
            }
            // The message is due when its first pending recipient is; one that found no
            // room is due now (the scheduler waits for room before looking again).
            st.next_attempt = st
                .recipients
                .iter()
                .filter(|r| r.status == RcptStatus::Pending)
                .map(|r| r.next_attempt.unwrap_or(now))
                .min()
                .unwrap_or(now);
            visit.due = Some(st.next_attempt);
            if changed {
                if attempted {
                    st.history.push(format!(
                        "{} next attempt {}",
                        fmt_time(now),
                        fmt_time(st.next_attempt)
                    ));
                }
                self.save(id, &st).await;
            }
            return Ok(visit);
        }

        // Finished: bounce the failures (never a bounce of a bounce), then remove.
        let failures = bounce::reportable(&envelope, &st);
        if !failures.is_empty() {
            let headers = crate::pipeline::parse_headers(&message);
            let req = bounce::request(
                &envelope,
                headers,
                failures,
                &config.server.hostname,
                expired,
            );
            let (rendered, calls) = pipeline.render_bounce(&req).await;
            visit.report.hook_calls.extend(calls);
            let text = rendered.unwrap_or_else(|| bounce::default_text(&req));
            let bounce_id = match self
                .spool_notice(&envelope, &message, &req, &text, Notice::Failed, config)
                .await
            {
                Ok(id) => id,
                Err(e) => {
                    self.remember_unsaved(id, &st);
                    return Err(e);
                }
            };
            crate::admin::metrics::get().bounce();
            visit.report.bounces.push(bounce_id);
        } else if envelope.sender.address.is_empty()
            && st.recipients.iter().any(|r| r.status == RcptStatus::Failed)
        {
            tracing::warn!(id = %id, "a bounce could not be delivered; dropped (bounces are never bounced)");
        }
        let (spool, owned_id) = (self.spool.clone(), id.to_string());
        let removed = off_worker(move || {
            state::with_lock(&dir, || -> anyhow::Result<()> {
                if spool.path(SpoolState::Queue, &owned_id).is_file() {
                    spool.remove(SpoolState::Queue, &owned_id)?;
                }
                let _ = std::fs::remove_file(state::path(&dir, &owned_id));
                Ok(())
            })
        })
        .await;
        if !matches!(removed, Ok(Ok(()))) {
            self.remember_unsaved(id, &st);
        }
        removed??;
        visit.report.finished.push(id.to_string());
        Ok(visit)
    }

    /// Writes `st` as the state of `id`, unless the message is gone; the operator's hold,
    /// set meanwhile, is kept. When it cannot be written it is kept in memory for the next
    /// visit.
    async fn save(&self, id: &str, st: &QueueState) {
        let dir = self.spool.root().join("queue");
        let (spool, owned_id, snapshot) = (self.spool.clone(), id.to_string(), st.clone());
        let saved = off_worker(move || {
            state::with_lock(&dir, || -> std::io::Result<()> {
                if !spool.path(SpoolState::Queue, &owned_id).is_file() {
                    return Ok(());
                }
                let mut snapshot = snapshot;
                if let Some(disk) = state::read(&dir, &owned_id)? {
                    snapshot.held |= disk.held;
                }
                state::write(&dir, &owned_id, &snapshot)
            })
        })
        .await;
        if !matches!(saved, Ok(Ok(()))) {
            tracing::error!(id = %id, "cannot record delivery outcomes; kept in memory and written again later");
            self.remember_unsaved(id, st);
        }
    }

    /// Delivers `rcpts` of one message to the destination `key` once it is admitted there;
    /// records what came of it in the destination's health.
    #[allow(clippy::too_many_arguments)]
    async fn deliver_to(
        &self,
        key: &str,
        envelope: &SpooledEnvelope,
        message: &[u8],
        route: Option<&RouteConfig>,
        domain: &str,
        rcpts: Vec<String>,
        config: &Config,
        now: i64,
        wait: bool,
    ) -> GroupResult {
        let Some(route) = route else {
            let r = Reply::new(451, "4.4.0", "No route configured for this domain");
            return GroupResult::Tried(each(rcpts.len(), r, None));
        };
        let limits = limits_of(route, config);
        let _ticket = match self.destinations.admit(key, limits, now, wait).await {
            Admission::Go(ticket) => ticket,
            Admission::Busy => return GroupResult::Busy(key.to_string(), limits),
            Admission::Throttled(until) => return GroupResult::Throttled(until),
            Admission::Suspended(until, why) => {
                let r = Reply::new(
                    451,
                    "4.4.1",
                    &format!(
                        "delivery for {domain} to {} suspended until {} after repeated failures: {why}",
                        key.split_once(':').map_or(key, |(_, d)| d),
                        fmt_time(until)
                    ),
                );
                return GroupResult::Tried(each(rcpts.len(), r, None));
            }
        };
        let (outcomes, health) = self
            .deliver_group(envelope, message, route, domain, &rcpts, config)
            .await;
        self.destinations.record(
            key,
            match &health {
                Some(Ok(())) => DestinationOutcome::Answered,
                Some(Err(e)) => DestinationOutcome::Unreachable(e),
                None => DestinationOutcome::Neutral,
            },
            now,
        );
        GroupResult::Tried(outcomes)
    }

    /// Keeps `st` for the next attempt at `id`, when it could not be written to disk.
    fn remember_unsaved(&self, id: &str, st: &QueueState) {
        self.unsaved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), st.clone());
    }

    /// Sends the success notices due (RFC 3461 §5.2.2: NOTIFY=SUCCESS; "delivered" for final
    /// delivery, "relayed" to a next hop that does not take DSN parameters), one DSN for all.
    async fn notify_successes(
        &self,
        envelope: &SpooledEnvelope,
        message: &[u8],
        st: &QueueState,
        successes: &[(Notice, usize)],
        config: &Config,
    ) -> anyhow::Result<()> {
        if envelope.sender.address.is_empty() {
            return Ok(());
        }
        let wanted: Vec<(Notice, FailedRecipient)> = successes
            .iter()
            .filter_map(|&(notice, i)| {
                let r = &st.recipients[i];
                let asked = envelope
                    .recipients
                    .iter()
                    .find(|e| e.address == r.address)
                    .is_some_and(|e| bounce::wants_notice_explicitly(e, "SUCCESS"));
                asked.then(|| {
                    (
                        notice,
                        FailedRecipient {
                            address: r.address.clone(),
                            reply: r.last_reply.clone().unwrap_or_default(),
                            status: r.status_code.clone().unwrap_or_else(|| "2.0.0".into()),
                            remote_host: r.remote.clone(),
                        },
                    )
                })
            })
            .collect();
        for notice in [Notice::Delivered, Notice::Relayed] {
            let these: Vec<FailedRecipient> = wanted
                .iter()
                .filter(|(n, _)| *n == notice)
                .map(|(_, r)| r.clone())
                .collect();
            if these.is_empty() {
                continue;
            }
            let headers = crate::pipeline::parse_headers(message);
            let req = bounce::request(envelope, headers, these, &config.server.hostname, false);
            let text = bounce::success_text(&req, notice);
            self.spool_notice(envelope, message, &req, &text, notice, config)
                .await?;
        }
        Ok(())
    }

    /// Builds a DSN and spools it from `<>` to the original sender; returns its queue id.
    async fn spool_notice(
        &self,
        envelope: &SpooledEnvelope,
        message: &[u8],
        req: &crate::plugin::bindings::types::BounceRequest,
        text: &crate::plugin::bindings::types::BounceText,
        notice: Notice,
        config: &Config,
    ) -> anyhow::Result<String> {
        let dsn = bounce::build(envelope, message, req, text, notice);
        let dsn_id = spool::new_queue_id();
        let dsn_envelope = SpooledEnvelope {
            id: dsn_id.clone(),
            received_at: chrono::Utc::now().to_rfc3339(),
            sender: Sender {
                address: String::new(),
                params: Vec::new(),
            },
            recipients: vec![Recipient {
                address: envelope.sender.address.clone(),
                params: Vec::new(),
                discarded: false,
            }],
            client_ip: "127.0.0.1".to_string(),
            helo: config.server.hostname.clone(),
            listener: "bounce".to_string(),
            auth_user: None,
            quarantine: None,
            spam: false,
        };
        self.spool
            .store(SpoolState::Queue, &dsn_envelope, &dsn)
            .await?;
        self.arrivals.add(&dsn_id);
        let kind = match notice {
            Notice::Failed => "bounce",
            Notice::Delayed { .. } => "delay-warning",
            Notice::Delivered | Notice::Relayed => "success-notice",
        };
        if notice == Notice::Failed {
            crate::admin::webhook::emit(
                "bounced",
                serde_json::json!({
                    "id": envelope.id,
                    "dsn": dsn_id,
                    "to": envelope.sender.address,
                    "failed": req.failures.iter().map(|f| &f.address).collect::<Vec<_>>(),
                }),
            );
        }
        tracing::info!(event = kind, id = %envelope.id, dsn = %dsn_id, to = %crate::inbound::message::printable(&envelope.sender.address), "{kind} queued");
        Ok(dsn_id)
    }

    /// Delivers to one route: an outcome per recipient of `rcpts`, and what it says of the
    /// destination's health: `Some(Ok)` when a server answered, `Some(Err(why))` when none
    /// could be talked to, `None` when no server was tried.
    async fn deliver_group(
        &self,
        envelope: &SpooledEnvelope,
        message: &[u8],
        route: &RouteConfig,
        domain: &str,
        rcpts: &[String],
        config: &Config,
    ) -> (Vec<Handed>, Option<Result<(), String>>) {
        if route.kind == RouteKind::Maildir {
            let root = config.maildir();
            let outcomes = rcpts
                .iter()
                .map(|a| {
                    let mailbox = root.join(local::mailbox_name(address::split(a).0));
                    let junk = &config.delivery.junk_folder;
                    let (folder, text) = if envelope.spam && !junk.is_empty() {
                        (
                            local::folder(&mailbox, junk),
                            format!("Delivered to maildir folder {junk}"),
                        )
                    } else {
                        (Ok(mailbox), "Delivered to maildir".to_string())
                    };
                    let written = folder.and_then(|f| {
                        local::write_maildir(&f, &envelope.id, &config.server.hostname, message)
                    });
                    let reply = match written {
                        Ok(_) => Reply::new(250, "2.0.0", &text),
                        Err(e) => Reply::new(451, "4.3.0", &format!("Maildir write failed: {e}")),
                    };
                    Handed {
                        reply,
                        remote: None,
                        success: Some(Notice::Delivered),
                    }
                })
                .collect();
            return (outcomes, None);
        }
        let d = &config.delivery;
        let cfg = ClientConfig {
            helo: config.server.hostname.clone(),
            tls: route.tls,
            auth: route.auth_user.clone().zip(route.auth_password.clone()),
            lmtp: route.kind == RouteKind::Lmtp,
            timeouts: Timeouts {
                connect: Duration::from_secs(d.connect_timeout_secs),
                greeting: Duration::from_secs(d.greeting_timeout_secs),
                command: Duration::from_secs(d.timeout_secs),
                data: Duration::from_secs(d.data_timeout_secs),
            },
            max_messages: route.max_messages_per_connection,
        };
        let (dsn_mail, dsn_rcpt) = dsn_params(envelope, rcpts);
        let out = Outgoing {
            sender: &envelope.sender.address,
            recipients: rcpts,
            message,
            eight_bit: message.iter().any(|b| *b >= 0x80),
            smtputf8: needs_smtputf8(envelope, message),
            dsn: DsnParams {
                mail: &dsn_mail,
                rcpt: &dsn_rcpt,
            },
        };
        // LMTP is final delivery; an SMTP next hop that took the DSN parameters reports
        // success itself, one that did not gets a "relayed" notice from us.
        let success = |dsn_passed: bool| match route.kind {
            RouteKind::Lmtp => Some(Notice::Delivered),
            _ if dsn_passed => None,
            _ => Some(Notice::Relayed),
        };
        // The candidate next hops, in order: (target, name for TLS and reports).
        let hops: Vec<(Target, String)> = match (route.kind, &route.socket, &route.host) {
            (RouteKind::Lmtp, Some(path), _) => {
                vec![(Target::Unix(path.clone()), "localhost".to_string())]
            }
            (RouteKind::Mx, _, _) => match self.mx_hops(domain, route.port).await {
                Ok(hops) => hops,
                Err(e) => {
                    let r = match &e {
                        MxError::NullMx(_) => Reply::new(556, "5.1.10", &e.to_string()),
                        MxError::NoSuchDomain(_) | MxError::NoMailHost(_) => {
                            Reply::new(550, "5.1.2", &e.to_string())
                        }
                        MxError::Temporary { .. } => Reply::new(451, "4.4.3", &e.to_string()),
                    };
                    return (each(rcpts.len(), r, None), None);
                }
            },
            (_, _, host) => {
                let host = host.clone().unwrap_or_default();
                let name = host
                    .rsplit_once(':')
                    .map(|(h, _)| h)
                    .unwrap_or(&host)
                    .trim_matches(['[', ']'])
                    .to_string();
                match tokio::net::lookup_host(&host).await {
                    Ok(addrs) => addrs.map(|a| (Target::Tcp(a), name.clone())).collect(),
                    Err(_) => Vec::new(),
                }
            }
        };
        if hops.is_empty() {
            let r = Reply::new(451, "4.4.3", "Cannot resolve the next hop");
            return (each(rcpts.len(), r, None), None);
        }
        let hops: Vec<(Target, String)> = hops
            .into_iter()
            .filter(|(t, _)| !matches!(t, Target::Tcp(a) if loops_back(*a, &self.own)))
            .collect();
        if hops.is_empty() {
            // Like Postfix: the next hop is ourselves, so the mail would circle until its
            // hop count ran out. Permanent: the configuration or DNS must change.
            let r = Reply::new(
                554,
                "5.4.6",
                &format!("mail for {domain} loops back to myself"),
            );
            tracing::warn!(id = %envelope.id, domain, "mail loops back to myself: the next hop is one of our own listeners");
            return (each(rcpts.len(), r, None), None);
        }
        // Try each next hop until one answers for the recipients (RFC 5321 §5.1: a host
        // that cannot be reached or refuses the session sends us to the next one).
        let mut last = Reply::new(451, "4.4.1", "No next hop answered");
        let mut last_remote = None;
        let mut answered = false;
        let cap = route.max_connections;
        for (target, name) in &hops {
            match self.pool.send(target, name, &cfg, cap, &out).await {
                Sent::Answered(o) => {
                    let outcomes = o
                        .recipients
                        .into_iter()
                        .map(|(_, reply)| Handed {
                            reply,
                            remote: Some(o.remote.clone()),
                            success: success(o.dsn),
                        })
                        .collect();
                    return (outcomes, Some(Ok(())));
                }
                Sent::Refused(r) => {
                    last = r;
                    last_remote = Some(name.clone());
                    answered = true;
                }
                Sent::Failed(e) if e.after_end_of_data() => {
                    // The message may have been taken: no other host in this attempt.
                    tracing::info!(id = %envelope.id, hop = %target, error = %e, "connection lost after the end of data; not trying another host now");
                    last = Reply::new(451, "4.4.2", &e.to_string());
                    last_remote = None;
                    answered = true;
                    break;
                }
                Sent::Failed(e) => {
                    tracing::debug!(id = %envelope.id, hop = %target, error = %e, "next hop failed");
                    last = Reply::new(451, "4.4.1", &e.to_string());
                    last_remote = None;
                }
            }
        }
        let health = if answered {
            Ok(())
        } else {
            Err(last.text.clone())
        };
        (each(rcpts.len(), last, last_remote), Some(health))
    }

    /// The addresses of the domain's mail exchangers, in the order to try them.
    async fn mx_hops(&self, domain: &str, port: u16) -> Result<Vec<(Target, String)>, MxError> {
        let exchangers = self.mx.exchangers(domain).await?;
        let implicit = exchangers.len() == 1 && exchangers[0].name == domain;
        let mut hops = Vec::new();
        let mut trouble = None;
        for ex in exchangers {
            match self.mx.addresses(&ex.name).await {
                Ok(addrs) => hops.extend(
                    addrs
                        .into_iter()
                        .map(|ip| (Target::Tcp((ip, port).into()), ex.name.clone())),
                ),
                Err(e) => trouble = Some(e),
            }
        }
        match (hops.is_empty(), trouble) {
            (false, _) => Ok(hops),
            (true, Some(e)) => Err(e),
            (true, None) if implicit => Err(MxError::NoMailHost(domain.to_string())),
            (true, None) => Err(MxError::Temporary {
                name: domain.to_string(),
                problem: "no mail exchanger has an address".to_string(),
            }),
        }
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
