//! A plugin's health: failures in a row, and the cool-downs they lead to.
//!
//! A plugin that fails `after` calls of one hook in a row (traps, deadline or memory
//! overruns, bad returns) is put in cool-down for `secs` seconds: its failure policy applies
//! without calling it, so a crash-looping plugin costs nothing and floods no log. When the
//! cool-down ends the plugin is called again; one more failure starts the next cool-down, one
//! success of that hook clears its count. Counting per hook means a plugin that always crashes
//! in `check-message` is caught even though its `verify-sender` works.
//!
//! **One client cannot switch a filter off for everyone.** A client can make a plugin fail on
//! purpose (a message built to exceed its deadline), so failures are counted twice:
//! - per client (an IPv4 address, an IPv6 /64): `after` failures in a row from one client cool
//!   the plugin down *for that client only*; everyone else is still filtered;
//! - for all traffic: the plugin cools down for everyone only when its run of `after` failures
//!   in a row came from `after` distinct clients (a plugin broken for everyone shows that
//!   quickly; one client cannot fake it without as many addresses).
//!
//! State belongs to one loaded version of a plugin: a replaced file starts healthy.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::Hook;

/// Clients whose failures are remembered; past it, the oldest are forgotten.
const MAX_CLIENTS: usize = 4096;

/// Failure count and cool-downs of one loaded plugin.
#[derive(Debug)]
pub struct Health {
    after: AtomicU32,
    secs: AtomicU64,
    state: Mutex<State>,
}

/// A run of failures in a row and the cool-down it led to.
#[derive(Debug, Default, Clone)]
struct Run {
    /// Failures in a row, per hook.
    failures_in_a_row: [u32; 8],
    until: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    all: Run,
    /// The distinct clients of the current run of failures, per hook (at most `after`).
    clients_in_run: [Vec<IpAddr>; 8],
    per_client: HashMap<IpAddr, (Run, Instant)>,
    cooldowns: u64,
}

/// Whom a cool-down applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every client.
    All,
    /// This client (address, or IPv6 /64) only.
    Client(IpAddr),
}

/// What [`Health::failed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Still in service.
    None,
    /// This failure started a cool-down of the given length, for these clients.
    CooledDown(Duration, Scope),
}

impl Default for Health {
    fn default() -> Self {
        Health {
            after: AtomicU32::new(5),
            secs: AtomicU64::new(30),
            state: Mutex::new(State::default()),
        }
    }
}

/// The key a client's failures are counted under.
fn key(client: IpAddr) -> IpAddr {
    crate::smtp_auth::login_throttle::client_key(client, 64)
}

impl Health {
    /// Sets the policy: cool down after `after` failures in a row, for `secs` seconds.
    pub fn configure(&self, after: u32, secs: u64) {
        self.after.store(after.max(1), Ordering::Relaxed);
        self.secs.store(secs.max(1), Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The time left in a cool-down that applies to `client` (or, without one, to everyone)
    /// at `now`.
    pub fn cooling_down(&self, now: Instant, client: Option<IpAddr>) -> Option<Duration> {
        let s = self.lock();
        let own = client
            .and_then(|c| s.per_client.get(&key(c)))
            .and_then(|(r, _)| r.until);
        [s.all.until, own]
            .into_iter()
            .flatten()
            .filter_map(|u| u.checked_duration_since(now))
            .max()
    }

    /// Records a successful call of `hook` for `client`.
    pub fn succeeded(&self, hook: Hook, client: Option<IpAddr>) {
        let mut s = self.lock();
        s.all.failures_in_a_row[hook as usize] = 0;
        s.clients_in_run[hook as usize].clear();
        if let Some(c) = client
            && let Some((run, _)) = s.per_client.get_mut(&key(c))
        {
            run.failures_in_a_row[hook as usize] = 0;
        }
    }

    /// Records a failed call of `hook` for `client` at `now`.
    pub fn failed(&self, hook: Hook, client: Option<IpAddr>, now: Instant) -> Transition {
        let after = self.after.load(Ordering::Relaxed);
        let d = Duration::from_secs(self.secs.load(Ordering::Relaxed));
        let mut s = self.lock();
        let h = hook as usize;
        // For all traffic: `after` in a row, from `after` distinct clients (a failure without
        // a client, at delivery, counts as a client of its own).
        s.all.failures_in_a_row[h] += 1;
        let distinct = match client.map(key) {
            Some(c) => {
                if !s.clients_in_run[h].contains(&c) && s.clients_in_run[h].len() < after as usize {
                    s.clients_in_run[h].push(c);
                }
                s.clients_in_run[h].len() as u32
            }
            None => after,
        };
        if s.all.failures_in_a_row[h] >= after && distinct >= after {
            s.all = Run {
                until: Some(now + d),
                ..Run::default()
            };
            s.clients_in_run = Default::default();
            s.cooldowns += 1;
            return Transition::CooledDown(d, Scope::All);
        }
        let Some(c) = client.map(key) else {
            return Transition::None;
        };
        if s.per_client.len() >= MAX_CLIENTS && !s.per_client.contains_key(&c) {
            s.per_client
                .retain(|_, (r, _)| r.until.is_some_and(|u| u > now));
            if s.per_client.len() >= MAX_CLIENTS
                && let Some(oldest) = s
                    .per_client
                    .iter()
                    .min_by_key(|(_, (_, t))| *t)
                    .map(|(k, _)| *k)
            {
                s.per_client.remove(&oldest);
            }
        }
        let (run, last) = s.per_client.entry(c).or_default_at(now);
        *last = now;
        run.failures_in_a_row[h] += 1;
        if run.failures_in_a_row[h] >= after {
            *run = Run {
                until: Some(now + d),
                ..Run::default()
            };
            s.cooldowns += 1;
            return Transition::CooledDown(d, Scope::Client(c));
        }
        Transition::None
    }

    /// How many clients the plugin is cooling down for at `now` (apart from a cool-down of
    /// all).
    pub fn clients_cooling_down(&self, now: Instant) -> usize {
        self.lock()
            .per_client
            .values()
            .filter(|(r, _)| r.until.is_some_and(|u| u > now))
            .count()
    }

    /// How many cool-downs this plugin version has had (for one client or for all).
    pub fn cooldowns(&self) -> u64 {
        self.lock().cooldowns
    }
}

/// `or_default` for the per-client map, whose default needs a time.
trait OrDefaultAt<'a> {
    fn or_default_at(self, now: Instant) -> &'a mut (Run, Instant);
}

impl<'a> OrDefaultAt<'a> for std::collections::hash_map::Entry<'a, IpAddr, (Run, Instant)> {
    fn or_default_at(self, now: Instant) -> &'a mut (Run, Instant) {
        self.or_insert_with(|| (Run::default(), now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plugin that cools down after three failures in a row, for 10 s; now; and the hook
    /// that fails.
    fn three_failures_cool_down_for_10s() -> (Health, Instant, Hook) {
        let h = Health::default();
        h.configure(3, 10);
        (h, Instant::now(), Hook::CheckMessage)
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::V4([192, 0, 2, last].into()))
    }

    #[test]
    fn cools_down_after_failures_in_a_row_from_distinct_clients_and_recovers() {
        let (h, t, m) = three_failures_cool_down_for_10s();
        assert_eq!(h.failed(m, ip(1), t), Transition::None);
        assert_eq!(h.failed(m, ip(2), t), Transition::None);
        h.succeeded(m, ip(9));
        assert_eq!(h.failed(m, ip(3), t), Transition::None);
        // Another hook's success does not hide check-message's failures.
        h.succeeded(Hook::VerifySender, ip(9));
        assert_eq!(h.failed(m, ip(4), t), Transition::None);
        let d = Duration::from_secs(10);
        assert_eq!(h.failed(m, ip(5), t), Transition::CooledDown(d, Scope::All));
        assert!(h.cooling_down(t + Duration::from_secs(5), ip(7)).is_some());
        assert!(h.cooling_down(t + Duration::from_secs(11), ip(7)).is_none());
        assert_eq!(h.cooldowns(), 1);
    }

    #[test]
    fn one_client_failing_on_purpose_cools_the_plugin_down_for_itself_only() {
        let (h, t, m) = three_failures_cool_down_for_10s();
        assert_eq!(h.failed(m, ip(1), t), Transition::None);
        assert_eq!(h.failed(m, ip(1), t), Transition::None);
        let attacker = crate::smtp_auth::login_throttle::client_key(ip(1).unwrap(), 64);
        assert_eq!(
            h.failed(m, ip(1), t),
            Transition::CooledDown(Duration::from_secs(10), Scope::Client(attacker))
        );
        assert!(h.cooling_down(t, ip(1)).is_some());
        assert!(
            h.cooling_down(t, ip(2)).is_none(),
            "others are still filtered"
        );
        assert!(h.cooling_down(t, None).is_none());
        // Its failures did not count as distinct clients for a cool-down of all.
        assert_eq!(h.failed(m, ip(2), t), Transition::None);
        assert!(h.cooling_down(t, ip(2)).is_none());
    }
}
