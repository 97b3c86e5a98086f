//! What each plugin costs: the CPU and wall-clock time of its instance creation and of each
//! hook call, its `kv` and `dns` calls, and its linear memory. Measured per call
//! ([`CallCost`]), kept per plugin ([`CostStats`]) for `plugin list`, `/plugins` and the
//! console, and given to the metrics.
//!
//! CPU time is the plugin thread's, counted only while the call's future is being polled
//! ([`timed`]): a call that waits on the store or the resolver does not count the other
//! sandboxes' work done on that thread meanwhile. Two `clock_gettime` calls per poll.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The CPU time this thread has used.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// A future and the thread CPU time spent polling it.
struct CpuTimed<F> {
    inner: Pin<Box<F>>,
    cpu: Duration,
}

impl<F: Future> Future for CpuTimed<F> {
    type Output = (F::Output, Duration);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let before = thread_cpu();
        let polled = self.inner.as_mut().poll(cx);
        let spent = thread_cpu().saturating_sub(before);
        self.cpu += spent;
        match polled {
            Poll::Ready(v) => Poll::Ready((v, self.cpu)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Runs `fut`, and says what it cost: its output, the CPU time spent polling it, and the
/// wall-clock time it took.
pub async fn timed<F: Future>(fut: F) -> (F::Output, Duration, Duration) {
    let started = Instant::now();
    let (out, cpu) = CpuTimed {
        inner: Box::pin(fut),
        cpu: Duration::ZERO,
    }
    .await;
    (out, cpu, started.elapsed())
}

/// What one call (or the instance's creation) cost.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallCost {
    /// CPU time on the plugin thread.
    pub cpu: Duration,
    /// Wall-clock time.
    pub wall: Duration,
    /// `kv` calls it made.
    pub kv: u32,
    /// `dns` calls it made.
    pub dns: u32,
    /// Bytes of linear memory of the instance after it (memories never shrink: the peak).
    pub memory: usize,
}

/// The running totals of one plugin's calls, by hook (and `instantiate`).
#[derive(Default)]
pub struct CostStats {
    inner: Mutex<BTreeMap<&'static str, Totals>>,
}

#[derive(Default, Clone, Copy)]
struct Totals {
    calls: u64,
    cpu: Duration,
    wall: Duration,
    kv: u64,
    dns: u64,
    memory_max: usize,
}

/// One hook's (or `instantiate`'s) cost, averaged over its calls since the plugin was loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookCost {
    /// The hook, or `instantiate` for the creation of the plugin's instances.
    pub hook: String,
    /// Calls (instances created).
    pub calls: u64,
    /// Mean CPU time per call, microseconds.
    pub cpu_us: f64,
    /// Mean wall-clock time per call, microseconds.
    pub wall_us: f64,
    /// Mean `kv` calls per call.
    pub kv_per_call: f64,
    /// Mean `dns` calls per call.
    pub dns_per_call: f64,
    /// The most linear memory seen after one of these calls, bytes.
    pub memory_max: usize,
}

/// A plugin's cost, as `plugin list`, `/plugins` and the console show it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CostRow {
    /// By hook, `instantiate` first.
    pub hooks: Vec<HookCost>,
    /// The share of the plugin's CPU time spent creating its instances, 0 to 1.
    pub instantiate_share: f64,
}

impl CostStats {
    /// Adds one call of `hook` (`instantiate` for an instance's creation).
    pub fn add(&self, hook: &'static str, c: CallCost) {
        let mut all = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let t = all.entry(hook).or_default();
        t.calls += 1;
        t.cpu += c.cpu;
        t.wall += c.wall;
        t.kv += u64::from(c.kv);
        t.dns += u64::from(c.dns);
        t.memory_max = t.memory_max.max(c.memory);
    }

    /// The averages so far.
    pub fn row(&self) -> CostRow {
        let all = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let per = |x: f64, n: u64| if n == 0 { 0.0 } else { x / n as f64 };
        let mut hooks: Vec<HookCost> = all
            .iter()
            .map(|(hook, t)| HookCost {
                hook: hook.to_string(),
                calls: t.calls,
                cpu_us: per(t.cpu.as_secs_f64() * 1e6, t.calls),
                wall_us: per(t.wall.as_secs_f64() * 1e6, t.calls),
                kv_per_call: per(t.kv as f64, t.calls),
                dns_per_call: per(t.dns as f64, t.calls),
                memory_max: t.memory_max,
            })
            .collect();
        hooks.sort_by_key(|h| h.hook != "instantiate");
        let total: Duration = all.values().map(|t| t.cpu).sum();
        let creating = all.get("instantiate").map_or(Duration::ZERO, |t| t.cpu);
        CostRow {
            hooks,
            instantiate_share: if total.is_zero() {
                0.0
            } else {
                creating.as_secs_f64() / total.as_secs_f64()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cpu_is_counted_while_polled_not_while_waiting() {
        let ((), cpu, wall) = timed(async {
            // 20 ms of this thread's CPU, however busy the machine, then asleep for 60 ms.
            let start = thread_cpu();
            let mut x = 0u64;
            while thread_cpu() - start < Duration::from_millis(20) {
                x = x.wrapping_add(std::hint::black_box(1));
            }
            tokio::time::sleep(Duration::from_millis(60)).await;
        })
        .await;
        assert!(wall >= Duration::from_millis(80), "{wall:?}");
        // The sleep costs no CPU: what was counted is the busy part and little more.
        assert!(
            cpu >= Duration::from_millis(20) && cpu < Duration::from_millis(60),
            "{cpu:?}"
        );
    }

    #[test]
    fn averages_by_hook_with_the_creation_share() {
        let s = CostStats::default();
        let ms = Duration::from_millis;
        s.add(
            "instantiate",
            CallCost {
                cpu: ms(3),
                wall: ms(3),
                memory: 100,
                ..CallCost::default()
            },
        );
        s.add(
            "check-message",
            CallCost {
                cpu: ms(1),
                wall: ms(2),
                kv: 2,
                memory: 300,
                ..CallCost::default()
            },
        );
        s.add(
            "check-message",
            CallCost {
                cpu: ms(0),
                wall: ms(2),
                kv: 0,
                dns: 1,
                memory: 200,
            },
        );
        let row = s.row();
        assert_eq!(row.hooks[0].hook, "instantiate");
        let m = &row.hooks[1];
        assert_eq!((m.calls, m.memory_max), (2, 300));
        assert!((m.cpu_us - 500.0).abs() < 1.0 && (m.wall_us - 2000.0).abs() < 1.0);
        assert!((m.kv_per_call - 1.0).abs() < 1e-9 && (m.dns_per_call - 0.5).abs() < 1e-9);
        assert!((row.instantiate_share - 0.75).abs() < 1e-9);
    }
}
