//! Per-destination queues: what decides whether a delivery to one destination may start now.
//!
//! A destination is where a group of recipients goes: an MX domain, or a route's fixed next
//! hop (or the Maildir tree). Like Postfix's queue manager, each destination has its own
//! limits and its own health, so a slow or dead one only slows itself:
//! - at most `max_connections` deliveries to it at once, and at most `delivery.concurrency`
//!   in all; a delivery that finds no room waits in the queue without being attempted;
//! - at most `max_messages_per_minute` handed to it (a fixed window, counted in the store when
//!   one is shared, so a fleet keeps one limit);
//! - after [`SUSPEND_AFTER`] deliveries in a row that could not talk to it at all (no
//!   connection, no greeting, a timeout), it is suspended: its mail is deferred at once with
//!   the last error, for a back-off that doubles with each failed probe, instead of every
//!   message waiting out the timeouts. When a suspension ends, one delivery probes it.
//!
//! Time is the caller's Unix seconds (tests run the queue on a clock of their own).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::store::KvStore;

/// Failed deliveries in a row after which a destination is suspended.
pub const SUSPEND_AFTER: u32 = 3;
/// The first suspension, in seconds; each further failed probe doubles it, up to
/// [`MAX_SUSPENSION`].
pub const FIRST_SUSPENSION: i64 = 60;
/// The longest suspension, in seconds.
pub const MAX_SUSPENSION: i64 = 3600;

/// A destination's limits (from its route and `[delivery]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deliveries in progress at most.
    pub connections: usize,
    /// Messages per minute at most.
    pub per_minute: Option<u32>,
    /// Counts against the runner's overall limit (`delivery.concurrency`). Local delivery
    /// does not: it holds no connection, and must not wait behind remote destinations.
    pub shared: bool,
}

/// Whether a delivery to a destination may start.
pub enum Admission {
    /// Yes: hold the ticket while delivering.
    Go(Ticket),
    /// Not now: the destination (or the runner) is at its limit. Try again when a delivery
    /// ends; nothing was attempted.
    Busy,
    /// Not before this time (Unix seconds): the destination's rate is used up.
    Throttled(i64),
    /// Suspended until this time: defer now with this reason.
    Suspended(i64, String),
}

/// Room for one delivery; freed (and the queue woken) when dropped.
pub struct Ticket {
    _own: OwnedSemaphorePermit,
    _all: Option<OwnedSemaphorePermit>,
    probe: Option<Arc<Destination>>,
    freed: Arc<Notify>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(d) = &self.probe {
            d.health().probing = false;
        }
        self.freed.notify_one();
    }
}

/// What a delivery came to, for the destination's health.
pub enum Outcome<'a> {
    /// A server answered (whatever it said).
    Answered,
    /// No server could be talked to; this is why.
    Unreachable(&'a str),
    /// Nothing that says anything about the destination (DNS trouble, a loop, a refusal
    /// before connecting).
    Neutral,
}

struct Destination {
    permits: Arc<Semaphore>,
    cap: usize,
    /// Counts against the overall limit ([`Limits::shared`]): a change makes a new count.
    shared: bool,
    health: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    /// Deliveries in a row that reached no server.
    failures: u32,
    suspended_until: i64,
    last_error: String,
    /// A probe of a destination whose suspension ended is under way.
    probing: bool,
    /// The minute (Unix seconds / 60) counted, and the messages counted in it.
    minute: i64,
    sent: u32,
}

impl Destination {
    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How one destination stands, for the console and `sluice queue`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Standing {
    /// The destination's key.
    pub destination: String,
    /// Deliveries to it in progress.
    pub in_progress: usize,
    /// Deliveries in a row that reached no server.
    pub failures: u32,
    /// Suspended until this Unix time (0 when not).
    pub suspended_until: i64,
    /// The error that suspended it.
    pub last_error: String,
}

/// Every destination's limits and health, and the runner's overall limit.
pub struct Destinations {
    map: Mutex<HashMap<String, Arc<Destination>>>,
    all: Mutex<(Arc<Semaphore>, usize)>,
    freed: Arc<Notify>,
    kv: Option<KvStore>,
}

impl Destinations {
    /// At most `concurrency` deliveries in all; rates shared through `kv` when given.
    pub fn new(concurrency: usize, kv: Option<KvStore>) -> Destinations {
        let concurrency = concurrency.max(1);
        Destinations {
            map: Mutex::new(HashMap::new()),
            all: Mutex::new((Arc::new(Semaphore::new(concurrency)), concurrency)),
            freed: Arc::new(Notify::new()),
            kv,
        }
    }

    /// Notified each time a delivery ends (a ticket is dropped).
    pub fn freed(&self) -> Arc<Notify> {
        self.freed.clone()
    }

    /// Follows a changed `delivery.concurrency` (a reload); deliveries in progress finish.
    pub fn set_concurrency(&self, concurrency: usize) {
        let concurrency = concurrency.max(1);
        let mut all = self.all.lock().unwrap_or_else(|p| p.into_inner());
        if all.1 != concurrency {
            *all = (Arc::new(Semaphore::new(concurrency)), concurrency);
        }
    }

    fn get(&self, key: &str, limits: Limits) -> Arc<Destination> {
        let cap = limits.connections.max(1);
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let d = map.entry(key.to_string()).or_insert_with(|| {
            Arc::new(Destination {
                permits: Arc::new(Semaphore::new(cap)),
                cap,
                shared: limits.shared,
                health: Mutex::new(Health::default()),
            })
        });
        if d.cap != cap || d.shared != limits.shared {
            // A reload changed the limits: a new count, the same health.
            let health = std::mem::take(&mut *d.health());
            *d = Arc::new(Destination {
                permits: Arc::new(Semaphore::new(cap)),
                cap,
                shared: limits.shared,
                health: Mutex::new(health),
            });
        }
        d.clone()
    }

    /// False when [`Destinations::admit`] at `now` would surely answer `Busy` for `key`
    /// with `limits` (used to decide whether a message that found no room is worth looking
    /// at again).
    pub fn has_room(&self, key: &str, limits: Limits, now: i64) -> bool {
        self.room(key, limits, now) > 0
    }

    /// How many deliveries to `key` could start at `now`, about (suspended: any number,
    /// since they are deferred at once). The scheduler looks again at no more waiting
    /// messages than that, so a slot that frees costs one message read, not one per message
    /// waiting.
    pub fn room(&self, key: &str, limits: Limits, now: i64) -> usize {
        let d = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned();
        if let Some(d) = &d
            && d.health().suspended_until > now
        {
            return usize::MAX;
        }
        let all = self.all.lock().unwrap_or_else(|p| p.into_inner()).0.clone();
        let overall = match limits.shared {
            true => all.available_permits(),
            false => usize::MAX,
        };
        let own = match &d {
            None => limits.connections.max(1),
            Some(d) => {
                let h = d.health();
                if h.probing && h.failures >= SUSPEND_AFTER {
                    0
                } else {
                    d.permits.available_permits()
                }
            }
        };
        own.min(overall)
    }

    /// May a delivery to `key` start at `now`? With `wait`, waits for room instead of
    /// answering [`Admission::Busy`] (a whole pass, as tests run the queue).
    pub async fn admit(&self, key: &str, limits: Limits, now: i64, wait: bool) -> Admission {
        let d = self.get(key, limits);
        let probe = {
            let h = d.health();
            if h.suspended_until > now {
                return Admission::Suspended(h.suspended_until, h.last_error.clone());
            }
            let dead = h.failures >= SUSPEND_AFTER;
            if dead && h.probing && !wait {
                return Admission::Busy;
            }
            dead
        };
        let all = self.all.lock().unwrap_or_else(|p| p.into_inner()).0.clone();
        let (own, every) = if wait {
            let Ok(own) = d.permits.clone().acquire_owned().await else {
                return Admission::Busy;
            };
            let every = match limits.shared {
                true => match all.acquire_owned().await {
                    Ok(p) => Some(p),
                    Err(_) => return Admission::Busy,
                },
                false => None,
            };
            (own, every)
        } else {
            let Ok(own) = d.permits.clone().try_acquire_owned() else {
                return Admission::Busy;
            };
            let every = match limits.shared {
                true => match all.try_acquire_owned() {
                    Ok(p) => Some(p),
                    Err(_) => return Admission::Busy,
                },
                false => None,
            };
            (own, every)
        };
        if let Some(limit) = limits.per_minute
            && let Some(until) = self.count_minute(key, &d, limit, now).await
        {
            return Admission::Throttled(until);
        }
        let probe = probe.then(|| {
            d.health().probing = true;
            d.clone()
        });
        Admission::Go(Ticket {
            _own: own,
            _all: every,
            probe,
            freed: self.freed.clone(),
        })
    }

    /// Counts one message for `key` in the minute of `now`; the start of the next minute
    /// when that would exceed `limit`. Counted in the shared store when there is one (a
    /// store that fails is not a reason to stop delivering: the local count is used then).
    async fn count_minute(&self, key: &str, d: &Destination, limit: u32, now: i64) -> Option<i64> {
        let minute = now.div_euclid(60);
        let next = (minute + 1) * 60;
        if let Some(kv) = &self.kv {
            let counter = format!("sluice:delivery-rate:{key}:{minute}").into_bytes();
            match kv.increment(counter, 1, 120).await {
                Ok(n) => return (n > i64::from(limit)).then_some(next),
                Err(e) => {
                    tracing::warn!(destination = %key, error = %e, "delivery rate: the store failed; counting on this server alone")
                }
            }
        }
        let mut h = d.health();
        if h.minute != minute {
            h.minute = minute;
            h.sent = 0;
        }
        if h.sent >= limit {
            return Some(next);
        }
        h.sent += 1;
        None
    }

    /// Records what a delivery to `key` came to at `now`.
    pub fn record(&self, key: &str, outcome: Outcome<'_>, now: i64) {
        let Some(d) = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
        else {
            return;
        };
        let mut h = d.health();
        match outcome {
            Outcome::Answered => {
                if h.failures >= SUSPEND_AFTER {
                    tracing::info!(destination = %key, "destination answers again; deliveries resume");
                }
                h.failures = 0;
                h.suspended_until = 0;
            }
            Outcome::Unreachable(error) => {
                h.failures = h.failures.saturating_add(1);
                h.last_error = error.to_string();
                if h.failures >= SUSPEND_AFTER {
                    let doublings = (h.failures - SUSPEND_AFTER).min(16);
                    let secs = (FIRST_SUSPENSION << doublings).min(MAX_SUSPENSION);
                    h.suspended_until = now + secs;
                    tracing::warn!(destination = %key, failures = h.failures, suspended_secs = secs, error = %crate::inbound::message::printable(error), "destination unreachable: its deliveries are suspended");
                }
            }
            Outcome::Neutral => {}
        }
    }

    /// Every destination seen, with how it stands (sorted by key).
    pub fn standings(&self) -> Vec<Standing> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Standing> = map
            .iter()
            .map(|(k, d)| {
                let h = d.health();
                Standing {
                    destination: k.clone(),
                    in_progress: d.cap - d.permits.available_permits().min(d.cap),
                    failures: h.failures,
                    suspended_until: h.suspended_until,
                    last_error: h.last_error.clone(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.destination.cmp(&b.destination));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        connections: 2,
        per_minute: None,
        shared: true,
    };

    #[tokio::test]
    async fn a_full_destination_is_busy_and_leaves_room_for_others() {
        let d = Destinations::new(3, None);
        let a1 = d.admit("a", L, 0, false).await;
        let a2 = d.admit("a", L, 0, false).await;
        assert!(matches!(a1, Admission::Go(_)) && matches!(a2, Admission::Go(_)));
        assert!(matches!(d.admit("a", L, 0, false).await, Admission::Busy));
        assert!(!d.has_room("a", L, 0) && d.has_room("b", L, 0));
        let b = d.admit("b", L, 0, false).await;
        assert!(matches!(b, Admission::Go(_)));
        // Three in all: even "c" waits now.
        assert!(matches!(d.admit("c", L, 0, false).await, Admission::Busy));
        drop(a1);
        assert!(d.has_room("a", L, 0));
        assert!(matches!(d.admit("c", L, 0, false).await, Admission::Go(_)));
    }

    #[tokio::test]
    async fn local_delivery_does_not_wait_behind_remote_destinations() {
        let d = Destinations::new(1, None);
        let remote = d.admit("mx:a.test", L, 0, false).await;
        assert!(matches!(remote, Admission::Go(_)));
        assert!(matches!(
            d.admit("mx:b.test", L, 0, false).await,
            Admission::Busy
        ));
        let local = Limits {
            connections: 4,
            per_minute: None,
            shared: false,
        };
        assert!(matches!(
            d.admit("maildir:", local, 0, false).await,
            Admission::Go(_)
        ));
        assert!(d.has_room("maildir:", local, 0) && !d.has_room("mx:b.test", L, 0));
        // Even before its first delivery.
        assert!(d.has_room("maildir:other", local, 0));
    }

    #[tokio::test]
    async fn an_unreachable_destination_is_suspended_then_probed_once() {
        let d = Destinations::new(10, None);
        for _ in 0..SUSPEND_AFTER {
            let t = d.admit("dead", L, 100, false).await;
            assert!(matches!(t, Admission::Go(_)));
            d.record("dead", Outcome::Unreachable("greeting: timeout"), 100);
        }
        match d.admit("dead", L, 120, false).await {
            Admission::Suspended(until, why) => {
                assert_eq!(until, 100 + FIRST_SUSPENSION);
                assert_eq!(why, "greeting: timeout");
            }
            _ => panic!("not suspended"),
        }
        // After the suspension, one probe at a time.
        let probe = d.admit("dead", L, 161, false).await;
        assert!(matches!(probe, Admission::Go(_)));
        assert!(matches!(
            d.admit("dead", L, 161, false).await,
            Admission::Busy
        ));
        // The probe fails: twice as long.
        d.record("dead", Outcome::Unreachable("connect: refused"), 161);
        drop(probe);
        match d.admit("dead", L, 162, false).await {
            Admission::Suspended(until, _) => assert_eq!(until, 161 + 2 * FIRST_SUSPENSION),
            _ => panic!("not suspended again"),
        }
        // A server answers: back to normal at once.
        d.record("dead", Outcome::Answered, 300);
        assert!(matches!(
            d.admit("dead", L, 300, false).await,
            Admission::Go(_)
        ));
        assert_eq!(d.standings()[0].failures, 0);
    }

    #[tokio::test]
    async fn a_rate_limit_throttles_until_the_next_minute() {
        let d = Destinations::new(10, None);
        let l = Limits {
            connections: 5,
            per_minute: Some(2),
            shared: true,
        };
        for _ in 0..2 {
            assert!(matches!(
                d.admit("r", l, 125, false).await,
                Admission::Go(_)
            ));
        }
        match d.admit("r", l, 150, false).await {
            Admission::Throttled(until) => assert_eq!(until, 180),
            _ => panic!("not throttled"),
        }
        assert!(matches!(
            d.admit("r", l, 180, false).await,
            Admission::Go(_)
        ));
    }

    #[tokio::test]
    async fn a_shared_store_keeps_one_rate_for_a_fleet() {
        let kv = KvStore::Embedded(crate::store::embedded::Embedded::in_memory().unwrap());
        let l = Limits {
            connections: 5,
            per_minute: Some(3),
            shared: true,
        };
        let one = Destinations::new(10, Some(kv.clone()));
        let two = Destinations::new(10, Some(kv));
        assert!(matches!(
            one.admit("f", l, 60, false).await,
            Admission::Go(_)
        ));
        assert!(matches!(
            two.admit("f", l, 61, false).await,
            Admission::Go(_)
        ));
        assert!(matches!(
            one.admit("f", l, 62, false).await,
            Admission::Go(_)
        ));
        assert!(matches!(
            two.admit("f", l, 63, false).await,
            Admission::Throttled(120)
        ));
    }
}
