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
//! ([`super::engine::EPOCH_TICK`]), and each call is bounded by its deadline.
//!
//! The number of threads is `[plugins] threads` (default 1), fixed when the first runtime
//! starts.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle};

std::thread_local! {
    static ON_PLUGIN_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// True on a plugin thread: where sandboxes may be created.
pub fn on_plugin_thread() -> bool {
    ON_PLUGIN_THREAD.with(std::cell::Cell::get)
}

/// The plugin threads' runtime, and how many threads it has.
static EXECUTOR: OnceLock<(Handle, usize)> = OnceLock::new();

/// Starts the plugin threads, `threads` of them, unless they run already (then a different
/// count is logged and ignored: it takes effect at the next start of the process).
pub fn start(threads: usize) {
    let (_, running) = EXECUTOR.get_or_init(|| spawn(threads));
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

fn spawn(threads: usize) -> (Handle, usize) {
    let runtime = if threads == 1 {
        Builder::new_current_thread().enable_all().build()
    } else {
        Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("sluice-plugins")
            .on_thread_start(|| ON_PLUGIN_THREAD.with(|f| f.set(true)))
            .enable_all()
            .build()
    }
    .expect("building the plugin runtime");
    let handle = runtime.handle().clone();
    // This thread keeps the runtime alive for the life of the process (and is its one worker
    // when `threads` is 1).
    std::thread::Builder::new()
        .name("sluice-plugins".into())
        .spawn(move || {
            ON_PLUGIN_THREAD.with(|f| f.set(true));
            runtime.block_on(std::future::pending::<()>())
        })
        .expect("spawning the plugin thread");
    (handle, threads)
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
    let task = handle().spawn(async move {
        let (value, leftover) = work.await;
        let _ = answer.send(value);
        drop(leftover);
    });
    match answered.await {
        Ok(value) => value,
        // The task ended without answering: it panicked (the plugin runtime is never shut
        // down), and its join handle holds the panic.
        Err(_) => match task.await {
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            _ => unreachable!("a plugin task ended without an answer or a panic"),
        },
    }
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
    async fn a_panic_on_the_plugin_thread_reaches_the_caller_and_the_thread_goes_on() {
        let caught = tokio::spawn(run(async { panic!("guest glue bug") })).await;
        assert!(caught.unwrap_err().is_panic());
        assert_eq!(run(async { 2 + 2 }).await, 4);
    }
}
