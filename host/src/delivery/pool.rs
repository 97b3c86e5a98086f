//! Outbound connections kept open between messages to the same next hop, and a cap on how
//! many are open to one destination at once.
//!
//! A destination is a next-hop address together with how we talk to it (TLS policy, AUTH,
//! SMTP or LMTP), so two routes to one host with different credentials never share a
//! connection. Each open connection, busy or idle, holds one of the destination's permits;
//! a delivery that finds neither an idle connection nor a free permit waits for either. Idle connections are closed after
//! `connection_idle_secs`, and every connection after [`MAX_AGE`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::smtp::reply::Reply;

use super::client::{ClientConfig, ClientError, Connection, Outcome, Outgoing, Target};
use super::dane::HopDane;

/// No connection is used for longer than this (servers drop long sessions anyway).
pub const MAX_AGE: Duration = Duration::from_secs(300);

/// An open connection with its destination permit.
struct Pooled {
    conn: Connection,
    /// The server name the connection was opened for (its certificate was verified for it,
    /// when TLS is verified): reused only for the same name, whatever the address.
    name: String,
    idle_since: Instant,
    _permit: OwnedSemaphorePermit,
}

/// What sending through the pool came to.
#[derive(Debug)]
pub enum Sent {
    /// The server answered for every recipient.
    Answered(Outcome),
    /// The server refused the session (greeting, EHLO or AUTH) with this reply.
    Refused(Reply),
    /// The server could not be talked to.
    Failed(ClientError),
}

/// The connection pool.
pub struct Pool {
    idle: Mutex<HashMap<String, Vec<Pooled>>>,
    slots: Mutex<HashMap<String, Slot>>,
    cap: usize,
    idle_for: Duration,
    opened: std::sync::atomic::AtomicU64,
}

/// A destination's permits, and a signal that one of its connections became idle.
#[derive(Clone)]
struct Slot {
    permits: Arc<Semaphore>,
    cap: usize,
    idle: Arc<Notify>,
}

fn key(target: &Target, cfg: &ClientConfig) -> String {
    let auth = cfg.auth.as_ref().map(|(u, _)| u.as_str()).unwrap_or("");
    // A connection authenticated by one set of TLSA records serves only that set.
    let dane = match &cfg.dane {
        HopDane::Authenticate(t) => t.fingerprint(),
        HopDane::EncryptOnly(_) => "encrypt".to_string(),
        _ => String::new(),
    };
    format!("{target}|{:?}|{}|{auth}|{dane}", cfg.tls, cfg.lmtp)
}

impl Pool {
    /// At most `cap` connections per destination; idle ones kept for `idle_for`.
    pub fn new(cap: usize, idle_for: Duration) -> Pool {
        Pool {
            idle: Mutex::new(HashMap::new()),
            slots: Mutex::new(HashMap::new()),
            cap: cap.max(1),
            idle_for,
            opened: Default::default(),
        }
    }

    /// Connections opened so far (for tests and metrics).
    pub fn opened(&self) -> u64 {
        self.opened.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// An idle connection to `key` opened for `name`. Stale ones met on the way are dropped
    /// (closing the socket and freeing the permit).
    fn take_idle(&self, key: &str, name: &str) -> Option<Pooled> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(key)?;
        list.retain(|p| {
            p.idle_since.elapsed() < self.idle_for && p.conn.opened.elapsed() < MAX_AGE
        });
        let at = list.iter().rposition(|p| p.name == name)?;
        Some(list.remove(at))
    }

    /// Closes one idle connection to `key` (opened for another name) to free its permit:
    /// true when there was one.
    fn drop_idle(&self, key: &str) -> bool {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.get_mut(key).and_then(|list| list.pop()).is_some()
    }

    /// The permits of `key`, at most `cap` (a route's own limit, else the pool's); a slot
    /// whose limit changed (a reload) is replaced, and connections holding the old one's
    /// permits finish as they are.
    fn slot(&self, key: &str, cap: Option<usize>) -> Slot {
        let cap = cap.unwrap_or(self.cap).max(1);
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = slots.entry(key.to_string()).or_insert_with(|| Slot {
            permits: Arc::new(Semaphore::new(cap)),
            cap,
            idle: Arc::new(Notify::new()),
        });
        if slot.cap != cap {
            slot.permits = Arc::new(Semaphore::new(cap));
            slot.cap = cap;
        }
        slot.clone()
    }

    /// An idle connection to `key` (unless `reuse` is off), else a permit for a new one,
    /// waiting for whichever comes first when the destination is at its cap.
    async fn checkout(
        &self,
        (key, name): (&str, &str),
        cap: Option<usize>,
        reuse: bool,
    ) -> Result<Pooled, OwnedSemaphorePermit> {
        let slot = self.slot(key, cap);
        loop {
            if reuse && let Some(p) = self.take_idle(key, name) {
                return Ok(p);
            }
            if let Ok(permit) = slot.permits.clone().try_acquire_owned() {
                return Err(permit);
            }
            // At the cap with connections idle for other names (one address, several MX
            // names): one is closed for this name's.
            if self.drop_idle(key) {
                continue;
            }
            // A connection comes back idle (notified) or closes (its permit frees: polled).
            let _ = tokio::time::timeout(Duration::from_millis(50), slot.idle.notified()).await;
        }
    }

    /// Sends `msg` to `target` (named `server_name`), over an idle connection when there is
    /// one, else a new one once the destination has a free slot (of `cap`, default the
    /// pool's). A reused connection that turns out to be closed before the message was sent
    /// is replaced by a new one; one that has carried `cfg.max_messages` is closed.
    pub async fn send(
        &self,
        target: &Target,
        server_name: &str,
        cfg: &ClientConfig,
        cap: Option<usize>,
        msg: &Outgoing<'_>,
    ) -> Sent {
        let key = key(target, cfg);
        let mut reuse = true;
        loop {
            let (mut pooled, reused) = match self.checkout((&key, server_name), cap, reuse).await {
                Ok(p) => (p, true),
                Err(permit) => {
                    self.opened
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    match Connection::open(target, server_name, cfg).await {
                        Ok(Ok(conn)) => (
                            Pooled {
                                conn,
                                name: server_name.to_string(),
                                idle_since: Instant::now(),
                                _permit: permit,
                            },
                            false,
                        ),
                        Ok(Err(refusal)) => return Sent::Refused(refusal),
                        Err(e) => return Sent::Failed(e),
                    }
                }
            };
            match pooled.conn.transact(msg).await {
                Ok(outcome) if cfg.max_messages.is_some_and(|n| pooled.conn.messages >= n) => {
                    // Its permit is freed once QUIT is done.
                    let Pooled { conn, _permit, .. } = pooled;
                    conn.quit().await;
                    return Sent::Answered(outcome);
                }
                Ok(outcome) => {
                    pooled.idle_since = Instant::now();
                    self.idle
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(key.clone())
                        .or_default()
                        .push(pooled);
                    self.slot(&key, cap).idle.notify_one();
                    return Sent::Answered(outcome);
                }
                Err(e) if reused && e.before_message() => {
                    // The idle connection was closed by the server: try a fresh one.
                    reuse = false;
                }
                Err(e) => return Sent::Failed(e),
            }
        }
    }

    /// Closes the idle connections that have waited too long (QUIT, best effort), in a task
    /// of their own: the scheduler that calls this drives every delivery in progress, and a
    /// server that does not answer QUIT must not hold them up.
    pub fn close_idle(&self) {
        let stale: Vec<Pooled> = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let mut stale = Vec::new();
            for list in idle.values_mut() {
                let (keep, old): (Vec<Pooled>, Vec<Pooled>) = list.drain(..).partition(|p| {
                    p.idle_since.elapsed() < self.idle_for && p.conn.opened.elapsed() < MAX_AGE
                });
                *list = keep;
                stale.extend(old);
            }
            idle.retain(|_, l| !l.is_empty());
            stale
        };
        if stale.is_empty() {
            return;
        }
        // All at once: each QUIT waits up to 2 s for a server that may not answer.
        tokio::spawn(futures::future::join_all(
            stale.into_iter().map(|p| p.conn.quit()),
        ));
    }

    /// Closes every idle connection (at shutdown).
    pub async fn close_all(&self) {
        let all: Vec<Pooled> = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.drain().flat_map(|(_, l)| l).collect()
        };
        futures::future::join_all(all.into_iter().map(|p| p.conn.quit())).await;
    }
}
