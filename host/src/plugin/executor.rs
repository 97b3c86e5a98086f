//! The plugin thread: where every sandbox is created, called and dropped.
//!
//! Why a thread of its own: a fresh instance writes to pages of its memory image for the first
//! time (copy-on-write faults), and a used slot is reset before reuse (pages rewritten or
//! released). When those happen on several threads of the process at once, the kernel flushes
//! the other cores' TLBs by interrupt for each fault (`flush_tlb_mm_range` from `do_wp_page`).
//! Under the load benchmark with the interpreted examples that was 45 % of the relay's CPU.
//! On one thread they never race, deliveries and SMTP I/O never wait behind guest code on the
//! same worker, and the pooling allocator's slots stay affine to that thread.
//!
//! Guests still take turns fairly: a running guest yields at every epoch tick
//! ([`super::engine::EPOCH_TICK`]), and each call is bounded by its deadline. A piece of work
//! that has kept the plugin thread busy for [`MAIN_LANE_BUDGET`] in all (a plugin looping
//! until its deadline, one exhausting its memory, or one that is simply very slow) moves to a
//! second thread, the slow lane, for the rest of it: one misbehaving plugin cannot take the
//! plugin thread from everyone else's mail for its whole deadline. (Under the load benchmark
//! with plugins looping on 1 % of messages, that was 0.21 of the well-behaved throughput
//! without the slow lane.) Such work is rare, so the two threads seldom fault at once.
//!
//! The number of threads is `[plugins] threads` (default 1), fixed when the first runtime
//! starts.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::runtime::{Builder, Handle};

/// Time a piece of work may spend running on the plugin thread before it moves to the slow
/// lane. A Python plugin's whole transaction takes about 3 ms, a Rust plugin's 0.1 ms.
pub const MAIN_LANE_BUDGET: Duration = Duration::from_millis(20);

std::thread_local! {
    static ON_PLUGIN_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// True on a plugin thread: where sandboxes may be created.
pub fn on_plugin_thread() -> bool {
    ON_PLUGIN_THREAD.with(std::cell::Cell::get)
}

/// The plugin threads' runtime, how many threads it has, and the slow lane's runtime.
static EXECUTOR: OnceLock<(Handle, usize, Handle)> = OnceLock::new();

/// Starts the plugin threads, `threads` of them, unless they run already (then a different
/// count is logged and ignored: it takes effect at the next start of the process).
pub fn start(threads: usize) {
    let (_, running, _) = EXECUTOR.get_or_init(|| spawn(threads));
    if *running != threads {
        tracing::warn!(
            running,
            configured = threads,
            "plugins.threads changed; takes effect after a restart"
        );
    }
}

/// The plugin runtime's handle, starting one thread if [`start`] was not called.
fn handle() -> &'static Handle {
    &EXECUTOR.get_or_init(|| spawn(1)).0
}

/// The slow lane's handle.
fn slow_lane() -> &'static Handle {
    &EXECUTOR.get_or_init(|| spawn(1)).2
}

fn spawn(threads: usize) -> (Handle, usize, Handle) {
    (
        runtime(threads, "sluice-plugins"),
        threads,
        runtime(1, "sluice-plugins-slow"),
    )
}

/// A runtime of `threads` threads named `name`, kept alive for the life of the process.
fn runtime(threads: usize, name: &'static str) -> Handle {
    let runtime = if threads == 1 {
        Builder::new_current_thread().enable_all().build()
    } else {
        Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(name)
            .on_thread_start(|| ON_PLUGIN_THREAD.with(|f| f.set(true)))
            .enable_all()
            .build()
    }
    .expect("building the plugin runtime");
    let handle = runtime.handle().clone();
    // This thread keeps the runtime alive for the life of the process (and is its one worker
    // when `threads` is 1).
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            ON_PLUGIN_THREAD.with(|f| f.set(true));
            runtime.block_on(std::future::pending::<()>())
        })
        .expect("spawning the plugin thread");
    handle
}

/// A piece of plugin work that counts the time its polls take, and moves itself to the slow
/// lane once that passes [`MAIN_LANE_BUDGET`] on the plugin thread.
struct Laned {
    work: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    spent: Duration,
    slow: bool,
}

impl Future for Laned {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let Some(work) = this.work.as_mut() else {
            return Poll::Ready(());
        };
        let started = Instant::now();
        let polled = work.as_mut().poll(cx);
        this.spent += started.elapsed();
        if polled.is_pending() && !this.slow && this.spent >= MAIN_LANE_BUDGET {
            // The work goes on from where it stopped, as a task of the slow lane; this task
            // ends. (A guest's store and fiber may be resumed on another thread.)
            tracing::debug!(
                spent_ms = this.spent.as_millis(),
                "plugin work moved to the slow lane"
            );
            slow_lane().spawn(Laned {
                work: this.work.take(),
                spent: this.spent,
                slow: true,
            });
            return Poll::Ready(());
        }
        polled
    }
}

/// Runs `work` on the plugin thread and waits for it. If the caller is dropped first, `work`
/// still runs to its end there (a call is bounded by its deadline).
pub async fn run<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> T {
    run_then_drop(async move { (work.await, ()) }).await
}

/// Runs `work` on the plugin thread and answers with the first part of its output as soon as
/// it is ready; the second part is dropped there afterwards, off the caller's path and without
/// another wake-up of the plugin thread (a transaction's instances, when it has no more hooks).
pub async fn run_then_drop<T, L>(work: impl Future<Output = (T, L)> + Send + 'static) -> T
where
    T: Send + 'static,
    L: Send + 'static,
{
    let (answer, answered) = tokio::sync::oneshot::channel();
    let work = async move {
        match AssertUnwindSafe(work).catch_unwind().await {
            Ok((value, leftover)) => {
                let _ = answer.send(Ok(value));
                drop(leftover);
            }
            Err(panic) => {
                let _ = answer.send(Err(panic));
            }
        }
    };
    handle().spawn(Laned {
        work: Some(Box::pin(work)),
        spent: Duration::ZERO,
        slow: false,
    });
    match answered.await {
        Ok(Ok(value)) => value,
        // A panic on the plugin thread is the caller's panic, as if the work had run here.
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("the plugin runtime stopped"),
    }
}

/// The plugin threads' runtime, for a task that should live there: a milter conversation,
/// whose every step waits on plugin work, runs there whole, so each stage is a task on the
/// same thread instead of two cross-thread wake-ups. I/O it creates registers with this
/// runtime.
pub fn plugin_runtime() -> &'static Handle {
    handle()
}

/// Drops `value` on the plugin thread, without waiting.
pub fn drop_there<T: Send + 'static>(value: T) {
    drop(handle().spawn(async move { drop(value) }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_and_drops_run_on_the_plugin_thread() {
        let name = run(async { std::thread::current().name().map(str::to_string) }).await;
        assert_eq!(name.as_deref(), Some("sluice-plugins"));
        assert!(run(async { on_plugin_thread() }).await);
        assert!(!on_plugin_thread());

        struct Witness(std::sync::mpsc::Sender<Option<String>>);
        impl Drop for Witness {
            fn drop(&mut self) {
                let name = std::thread::current().name().map(str::to_string);
                self.0.send(name).unwrap();
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        drop_there(Witness(tx));
        let dropped_on = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(dropped_on.as_deref(), Some("sluice-plugins"));
    }

    #[tokio::test]
    async fn work_that_keeps_the_plugin_thread_busy_moves_to_the_slow_lane() {
        // Polls that take at least 1 ms each: the first budget's worth run on the plugin
        // thread, the rest on the slow lane, while short work keeps running on the plugin
        // thread. Counted in polls, not in wall-clock time: on a loaded machine the time
        // between two polls (which is not the plugin thread's) made the loop end early.
        let polls = MAIN_LANE_BUDGET.as_millis() * 3;
        let threads = run(async move {
            let mut seen = Vec::new();
            for _ in 0..polls {
                std::thread::sleep(Duration::from_millis(1));
                seen.push(std::thread::current().name().map(str::to_string));
                tokio::task::yield_now().await;
            }
            seen
        })
        .await;
        assert_eq!(threads[0].as_deref(), Some("sluice-plugins"));
        assert_eq!(
            threads.last().unwrap().as_deref(),
            Some("sluice-plugins-slow")
        );
        let short = run(async { std::thread::current().name().map(str::to_string) }).await;
        assert_eq!(short.as_deref(), Some("sluice-plugins"));
    }

    #[tokio::test]
    async fn a_panic_on_the_plugin_thread_reaches_the_caller_and_the_thread_goes_on() {
        let caught = tokio::spawn(run(async { panic!("guest glue bug") })).await;
        assert!(caught.unwrap_err().is_panic());
        assert_eq!(run(async { 2 + 2 }).await, 4);
    }
}
