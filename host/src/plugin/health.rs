//! A plugin's health: failures in a row, and the cool-down they lead to.
//!
//! A plugin that fails `after` calls of one hook in a row (traps, deadline or memory
//! overruns, bad returns) is put in cool-down for `secs` seconds: its failure policy applies without
//! calling it, so a crash-looping plugin costs nothing and floods no log. When the
//! cool-down ends the plugin is called again; one more failure starts the next cool-down,
//! one success of that hook clears its count. Counting per hook means a plugin that always
//! crashes in `check-message` is caught even though its `verify-sender` works. State belongs to one loaded version of a plugin: a
//! replaced file starts healthy.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::Hook;

/// Failure count and cool-down of one loaded plugin.
#[derive(Debug)]
pub struct Health {
    after: AtomicU32,
    secs: AtomicU64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Failures in a row, per hook.
    failures_in_a_row: [u32; 8],
    until: Option<Instant>,
    cooldowns: u64,
}

/// What [`Health::failed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Still in service.
    None,
    /// This failure started a cool-down of the given length.
    CooledDown(Duration),
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

impl Health {
    /// Sets the policy: cool down after `after` failures in a row, for `secs` seconds.
    pub fn configure(&self, after: u32, secs: u64) {
        self.after.store(after.max(1), Ordering::Relaxed);
        self.secs.store(secs.max(1), Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The time left in the current cool-down, if the plugin is cooling down at `now`.
    pub fn cooling_down(&self, now: Instant) -> Option<Duration> {
        let s = self.lock();
        s.until.and_then(|u| u.checked_duration_since(now))
    }

    /// Records a successful call of `hook`.
    pub fn succeeded(&self, hook: Hook) {
        let mut s = self.lock();
        s.failures_in_a_row[hook as usize] = 0;
    }

    /// Records a failed call of `hook` at `now`.
    pub fn failed(&self, hook: Hook, now: Instant) -> Transition {
        let mut s = self.lock();
        let n = &mut s.failures_in_a_row[hook as usize];
        *n += 1;
        if *n >= self.after.load(Ordering::Relaxed) {
            let d = Duration::from_secs(self.secs.load(Ordering::Relaxed));
            s.failures_in_a_row = [0; 8];
            s.until = Some(now + d);
            s.cooldowns += 1;
            return Transition::CooledDown(d);
        }
        Transition::None
    }

    /// How many cool-downs this plugin version has had.
    pub fn cooldowns(&self) -> u64 {
        self.lock().cooldowns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cools_down_after_failures_in_a_row_and_recovers() {
        let h = Health::default();
        h.configure(3, 10);
        let t = Instant::now();
        let m = Hook::CheckMessage;
        assert_eq!(h.failed(m, t), Transition::None);
        assert_eq!(h.failed(m, t), Transition::None);
        h.succeeded(m);
        assert_eq!(h.failed(m, t), Transition::None);
        // Another hook's success does not hide check-message's failures.
        h.succeeded(Hook::VerifySender);
        assert_eq!(h.failed(m, t), Transition::None);
        assert_eq!(
            h.failed(m, t),
            Transition::CooledDown(Duration::from_secs(10))
        );
        assert!(h.cooling_down(t + Duration::from_secs(5)).is_some());
        assert!(h.cooling_down(t + Duration::from_secs(11)).is_none());
        assert_eq!(h.cooldowns(), 1);
    }
}
