//! Failed SMTP AUTH attempts counted across connections, and a bound on password hashing.
//!
//! A session alone only counts its own failures, so a guesser that reconnects after each
//! failure, or spreads over an IPv6 /64, or tries one user name from many hosts, would never
//! be slowed. Here failures are counted per client (IPv6 by prefix, see [`client_key`]) and
//! per user name over a window; each failure delays the reply a little more, and past the
//! limit AUTH is answered 454 4.7.0 without looking at the password. Argon2id hashing is
//! memory-hard by design (19 MiB each), so at most one hash per core runs at a time: a flood
//! of AUTH commands queues instead of exhausting memory or blocking threads.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

/// Most keys remembered; past it, expired ones go, then the least-failed ones.
const MAX_KEYS: usize = 65_536;

/// The delay added per failure, and its cap.
const DELAY_STEP: Duration = Duration::from_millis(500);
const MAX_DELAY: Duration = Duration::from_secs(5);

/// The key a client is counted under: its IPv4 address, or its IPv6 address cut to
/// `v6_prefix` bits (an IPv4-mapped IPv6 address counts as the IPv4 address).
pub fn client_key(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6);
                let prefix = u32::from(v6_prefix.clamp(1, 128));
                let mask = u128::MAX << (128 - prefix);
                IpAddr::V6((bits & mask).into())
            }
        },
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Client(IpAddr),
    User(String),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last: Instant,
}

/// What an AUTH attempt may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Check the password.
    Check,
    /// Too many recent failures: answer 454 without checking.
    LockedOut,
}

/// The shared failure counts and the hashing bound.
#[derive(Debug)]
pub struct LoginThrottle {
    entries: Mutex<HashMap<Key, Entry>>,
    hashing: Semaphore,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle::new(
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(2),
        )
    }
}

impl LoginThrottle {
    /// A throttle allowing `hashers` password checks at once.
    pub fn new(hashers: usize) -> LoginThrottle {
        LoginThrottle {
            entries: Mutex::new(HashMap::new()),
            hashing: Semaphore::new(hashers.max(1)),
        }
    }

    fn failures(map: &HashMap<Key, Entry>, key: &Key, window: Duration, now: Instant) -> u32 {
        map.get(key)
            .filter(|e| now.duration_since(e.last) < window)
            .map_or(0, |e| e.failures)
    }

    /// Whether `client` (already a [`client_key`]) may try `user` now. When it may, the
    /// attempt is counted as a failure at once, before the password is checked, so guesses
    /// sent in parallel each see the ones before them and cannot pass the limit together;
    /// [`LoginThrottle::succeeded`] takes it back.
    ///
    /// The user's count locks out only clients that have failed themselves: a guesser
    /// spread over many addresses cannot lock the user out from everywhere, while each of
    /// its addresses gets one guess per window once the user is locked.
    pub fn admit(&self, client: IpAddr, user: &str, limit: u32, window: Duration) -> Admission {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let by_client = Self::failures(&map, &Key::Client(client), window, now);
        let by_user = Self::failures(&map, &Key::User(user.to_ascii_lowercase()), window, now);
        if by_client >= limit || (by_client > 0 && by_user >= limit) {
            return Admission::LockedOut;
        }
        Self::count(&mut map, client, user, window, now);
        Admission::Check
    }

    /// How long to wait before answering an attempt that failed or was locked out (the
    /// failure itself was counted by [`LoginThrottle::admit`]).
    pub fn failed(&self, client: IpAddr, user: &str, window: Duration) -> Duration {
        let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let worst = Self::failures(&map, &Key::Client(client), window, now).max(Self::failures(
            &map,
            &Key::User(user.to_ascii_lowercase()),
            window,
            now,
        ));
        (DELAY_STEP * worst).min(MAX_DELAY)
    }

    /// Counts one failure of `client` and `user`.
    fn count(
        map: &mut HashMap<Key, Entry>,
        client: IpAddr,
        user: &str,
        window: Duration,
        now: Instant,
    ) {
        if map.len() + 2 > MAX_KEYS {
            map.retain(|_, e| now.duration_since(e.last) < window);
        }
        if map.len() + 2 > MAX_KEYS {
            // Still full of live entries: forget the half with the fewest failures.
            let mut counts: Vec<u32> = map.values().map(|e| e.failures).collect();
            counts.sort_unstable();
            let median = counts[counts.len() / 2];
            map.retain(|_, e| e.failures > median);
        }
        for key in [Key::Client(client), Key::User(user.to_ascii_lowercase())] {
            let e = map.entry(key).or_insert(Entry {
                failures: 0,
                last: now,
            });
            if now.duration_since(e.last) >= window {
                e.failures = 0;
            }
            e.failures = e.failures.saturating_add(1);
            e.last = now;
        }
    }

    /// Records a success: the attempt [`LoginThrottle::admit`] counted is taken back from the
    /// user, and the client's count is cleared (the user's earlier failures stay, or a
    /// guesser could reset them by logging in with an account of its own).
    /// Forgets every failure counted (an operator's `sluice admin unlock`).
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    pub fn succeeded(&self, client: IpAddr, user: &str) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&Key::Client(client));
        if let Some(e) = map.get_mut(&Key::User(user.to_ascii_lowercase())) {
            e.failures = e.failures.saturating_sub(1);
        }
    }

    /// Waits for a hashing slot.
    pub async fn hashing_slot(&self) -> SemaphorePermit<'_> {
        // The semaphore is never closed.
        self.hashing
            .acquire()
            .await
            .unwrap_or_else(|_| unreachable!("the hashing semaphore is never closed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_by_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a, 64), client_key(b, 64));
        assert_ne!(client_key(a, 64), client_key(c, 64));
        assert_ne!(client_key(a, 128), client_key(b, 128));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(client_key(mapped, 64), IpAddr::V4([192, 0, 2, 1].into()));
    }

    #[test]
    fn failures_lock_out_the_client_and_the_user_until_the_window_passes() {
        let t = LoginThrottle::new(1);
        let w = Duration::from_secs(60);
        let ip1 = IpAddr::V4([192, 0, 2, 1].into());
        let ip2 = IpAddr::V4([192, 0, 2, 2].into());
        let ip3 = IpAddr::V4([192, 0, 2, 3].into());
        let mut delays = Vec::new();
        for _ in 0..3 {
            assert_eq!(t.admit(ip1, "alice", 3, w), Admission::Check);
            delays.push(t.failed(ip1, "alice", w));
        }
        assert!(delays[0] < delays[1] && delays[1] < delays[2], "{delays:?}");
        assert_eq!(t.admit(ip1, "bob", 3, w), Admission::LockedOut, "client");
        // A client that has not failed is not locked out by the user's count...
        assert_eq!(
            t.admit(ip2, "ALICE", 3, w),
            Admission::Check,
            "a clean client"
        );
        t.succeeded(ip2, "alice");
        // ...but once it fails, it is.
        assert_eq!(t.admit(ip3, "alice", 3, w), Admission::Check);
        let _ = t.failed(ip3, "alice", w);
        assert_eq!(t.admit(ip3, "alice", 3, w), Admission::LockedOut, "user");
        assert_eq!(t.admit(ip2, "bob", 3, w), Admission::Check);
        // A window of zero has always passed.
        assert_eq!(t.admit(ip1, "alice", 3, Duration::ZERO), Admission::Check);
    }

    #[test]
    fn attempts_are_counted_before_the_password_is_checked() {
        let t = LoginThrottle::new(4);
        let w = Duration::from_secs(60);
        let ip = IpAddr::V4([192, 0, 2, 9].into());
        // Ten guesses at once: only the limit's worth get to a password check.
        let admitted = (0..10)
            .filter(|_| t.admit(ip, "root", 3, w) == Admission::Check)
            .count();
        assert_eq!(admitted, 3);
    }

    #[tokio::test]
    async fn password_hashing_waits_for_a_free_slot() {
        let t = LoginThrottle::new(1);
        let first = t.hashing_slot().await;
        let second = tokio::time::timeout(Duration::from_millis(100), t.hashing_slot()).await;
        assert!(
            second.is_err(),
            "a second hash ran while the only slot was taken"
        );
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(5), t.hashing_slot()).await;
        assert!(third.is_ok());
    }
}
