//! One sandbox for one transaction: a fresh store and instance of a loaded plugin, reused for
//! that transaction's hooks and then dropped. Every call runs under the plugin's deadline and
//! memory cap; a failure (trap, deadline, memory, invalid return) is reported as a
//! [`CallFailure`] and leaves the instance unusable, so later hooks of the same transaction
//! are not called on a guest in an unknown state.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Store, UpdateDeadline};

use super::Hook;
use super::bindings::types::{
    Address, BounceRequest, BounceText, DeliveryReport, Envelope, Message, MessageVerdict,
    PluginInfo, Session, Verdict,
};
use super::bindings::v0_1;
use super::cost::CallCost;
use super::host_api::LogLine;
use super::limits::MemoryLimitExceeded;
use super::loaded::LoadedPlugin;
use super::returns::{self, Checked};
use super::state::StoreState;
use super::view::MessageView;

/// How a plugin call failed. Distinct from a verdict: this is the plugin misbehaving.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum CallFailure {
    /// The call ran past its deadline and was stopped.
    Deadline {
        /// The deadline, in milliseconds.
        limit_ms: u64,
    },
    /// The plugin tried to grow its memory past its limit.
    Memory {
        /// The limit, in MiB.
        limit_mb: u64,
    },
    /// The guest trapped (a panic, `unreachable`, an out-of-bounds access, …).
    Trap {
        /// wasmtime's description.
        message: String,
        /// What the guest wrote to stdout/stderr (a Python traceback, a Rust panic message).
        output: String,
    },
    /// The plugin returned something invalid, e.g. a reject with a 2xx code.
    BadReturn {
        /// What was wrong.
        message: String,
    },
    /// The instance could not be created.
    Instantiate {
        /// wasmtime's description.
        message: String,
    },
    /// An earlier hook of this transaction failed, so this one was not called.
    EarlierFailure,
    /// The plugin is in cool-down after failing repeatedly, so it was not called.
    CoolingDown {
        /// Seconds until it is called again.
        secs_left: u64,
    },
    /// A `kv` call could not be served: the store is unreachable or did not answer within the
    /// deadline. Not the plugin's fault (its health is not blamed), but the hook has no answer.
    StoreUnavailable {
        /// What failed.
        message: String,
    },
}

/// Writes one method per hook: each resets the deadline, calls the export under the call's
/// timeout, turns a trap, timeout or earlier failure into a [`CallFailure`], and checks what
/// came back against the plugin's limits ([`Checked`]). A table, so that the seven hooks
/// cannot drift apart in how they are called.
macro_rules! hook_calls {
    ($(
        $(#[$doc:meta])*
        $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty = $hook:ident, $export:ident;
    )*) => {$(
        $(#[$doc])*
        pub async fn $name(&mut self $(, $arg: $ty)*) -> Result<$ret, CallFailure> {
            self.begin()?;
            let fut = self
                .bindings
                .sluice_filter_hooks()
                .$export(&mut self.store $(, $arg)*);
            let (r, cpu, wall) = super::cost::timed(run(fut, self.plugin.limits.timeout_ms)).await;
            self.note_cost(cpu, wall);
            let v = self.finish(r, Hook::$hook)?;
            self.checked(v)
        }
    )*};
}

impl CallFailure {
    /// True when the plugin ran and misbehaved (as opposed to not being called at all).
    pub fn is_fault(&self) -> bool {
        !matches!(
            self,
            CallFailure::EarlierFailure
                | CallFailure::CoolingDown { .. }
                | CallFailure::StoreUnavailable { .. }
        )
    }

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            CallFailure::Deadline { .. } => "deadline",
            CallFailure::Memory { .. } => "memory",
            CallFailure::Trap { .. } => "trap",
            CallFailure::BadReturn { .. } => "bad-return",
            CallFailure::Instantiate { .. } => "instantiate",
            CallFailure::EarlierFailure => "earlier-failure",
            CallFailure::CoolingDown { .. } => "cooling-down",
            CallFailure::StoreUnavailable { .. } => "store-unavailable",
        }
    }
}

impl fmt::Display for CallFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallFailure::Deadline { limit_ms } => write!(f, "deadline of {limit_ms} ms exceeded"),
            CallFailure::Memory { limit_mb } => {
                write!(f, "memory limit of {limit_mb} MiB exceeded")
            }
            CallFailure::Trap { message, output } if output.is_empty() => {
                write!(f, "trapped: {message}")
            }
            CallFailure::Trap { message, output } => {
                write!(f, "trapped: {message}; plugin output: {output}")
            }
            CallFailure::BadReturn { message } => write!(f, "returned an invalid value: {message}"),
            CallFailure::Instantiate { message } => {
                write!(f, "could not be instantiated: {message}")
            }
            CallFailure::EarlierFailure => {
                f.write_str("not called after an earlier failure in this transaction")
            }
            CallFailure::CoolingDown { secs_left } => write!(
                f,
                "not called: in cool-down after repeated failures ({secs_left} s left)"
            ),
            CallFailure::StoreUnavailable { message } => write!(f, "store unavailable: {message}"),
        }
    }
}

/// A live instance of a plugin.
pub struct PluginInstance {
    plugin: Arc<LoadedPlugin>,
    store: Store<StoreState>,
    bindings: v0_1::Plugin,
    /// Set once a call failed: the guest may be in any state, so it is not called again.
    broken: bool,
    /// What creating this instance cost.
    created: CallCost,
    /// What its last hook call cost.
    last: CallCost,
}

/// Extra time the async timeout allows past the epoch deadline; it only matters when a guest
/// is blocked in a host call (where epochs are not checked).
const TIMEOUT_GRACE: Duration = Duration::from_millis(50);

impl PluginInstance {
    /// Instantiates `plugin` in a fresh store.
    pub async fn new(plugin: Arc<LoadedPlugin>) -> Result<PluginInstance, CallFailure> {
        PluginInstance::tapped(plugin, None).await
    }

    /// Instantiates `plugin` in a fresh store whose clock, DNS and `kv` answers `tap` records
    /// or plays back ([`super::tape`]).
    pub async fn tapped(
        plugin: Arc<LoadedPlugin>,
        tap: Option<super::tape::PluginTap>,
    ) -> Result<PluginInstance, CallFailure> {
        debug_assert!(
            super::executor::on_plugin_thread(),
            "a sandbox is created on the plugin thread only (plugin::executor)"
        );
        let limits = plugin.limits;
        let state = StoreState::builder()
            .config(plugin.config.clone())
            .memory_bytes(limits.memory_mb.saturating_mul(1 << 20))
            .log_lines(limits.log_lines)
            .read_dirs(plugin.read_dirs.to_vec())
            .grants(plugin.grants.clone())
            .ops_per_call(limits.kv_ops_per_call)
            .tap(tap)
            .build()
            .map_err(|e| CallFailure::Instantiate {
                message: format!("{e:#}"),
            })?;
        let mut store = Store::new(&plugin.engine, state);
        store.limiter(|s| &mut s.limiter);
        // What the host copies out of the guest in one go (a return value, or the arguments
        // of one host call) is bounded before it is copied: wasmtime counts each string's and
        // list's bytes against this as it lifts them and stops at the bound. By default it is
        // 128 MiB, and a list may name the same guest bytes many times, so a plugin returning
        // 120 header fields that all point at one 1 MiB string made the host copy 120 MiB
        // before the limits below refused the verdict.
        store.set_hostcall_fuel(returns::copy_budget(&limits));
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() >= ctx.data().budget.deadline {
                Err(DeadlineExceeded.into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
            .data_mut()
            .budget
            .start(Duration::from_millis(limits.timeout_ms));
        store.set_epoch_deadline(1);
        // Instantiation runs guest code (start functions, initialisers): it is a call like any
        // other, under the same deadline (epochs, and the async timeout) and memory limit.
        let (started, cpu, wall) = super::cost::timed(run(
            plugin.pre.instantiate_async(&mut store),
            limits.timeout_ms,
        ))
        .await;
        let created = CallCost {
            cpu,
            wall,
            memory: store.data().limiter.memory_used,
            ..CallCost::default()
        };
        let Some(started) = started else {
            return Err(CallFailure::Deadline {
                limit_ms: limits.timeout_ms,
            });
        };
        let bindings = match started {
            Ok(b) => b,
            // The memory the module declares it starts with is above the operator's limit.
            Err(ref e) if let Some(m) = e.downcast_ref::<MemoryLimitExceeded>() => {
                return Err(CallFailure::Instantiate {
                    message: format!(
                        "it needs {} MiB of memory to start, above its memory limit of {} MiB (raise memory_mb)",
                        m.desired.div_ceil(1 << 20),
                        limits.memory_mb
                    ),
                });
            }
            Err(e) => {
                let failure = classify(&e, &store, limits.timeout_ms, limits.memory_mb);
                return Err(match failure {
                    CallFailure::Trap { message, .. } => CallFailure::Instantiate { message },
                    other => other,
                });
            }
        };
        Ok(PluginInstance {
            plugin,
            store,
            bindings,
            broken: false,
            created,
            last: CallCost::default(),
        })
    }

    /// What creating this instance cost.
    pub fn creation_cost(&self) -> CallCost {
        self.created
    }

    /// What its last hook call cost.
    pub fn last_cost(&self) -> CallCost {
        self.last
    }

    fn note_cost(&mut self, cpu: Duration, wall: Duration) {
        let state = self.store.data();
        self.last = CallCost {
            cpu,
            wall,
            kv: state.budget.kv_calls,
            dns: state.budget.dns_calls,
            memory: state.limiter.memory_used,
        };
    }

    /// Sets the sender-authentication results the guest's next calls see.
    pub fn set_authentication(&mut self, results: Option<Arc<crate::sender_auth::Results>>) {
        self.store.data_mut().auth.results = results;
    }

    /// The plugin this is an instance of.
    pub fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.plugin
    }

    /// Gives the instance the transaction's parsed view of the message, for `check-message`
    /// (`message-view`). Every instance of the transaction shares the one view.
    pub fn set_message_view(&mut self, view: Arc<MessageView>) {
        self.store.data_mut().view.message = Some(view);
    }

    /// Takes the lines logged since the last call, and how many were dropped over the quota.
    pub fn take_logs(&mut self) -> (Vec<LogLine>, u32) {
        let state = self.store.data_mut();
        (
            std::mem::take(&mut state.host.logs),
            std::mem::take(&mut state.host.logs_dropped),
        )
    }

    hook_calls! {
        /// `describe`.
        describe() -> PluginInfo = Describe, call_describe;
        /// `validate-config`.
        validate_config() -> Result<(), String> = ValidateConfig, call_validate_config;
        /// `verify-sender`.
        verify_sender(s: &Session, a: &Address) -> Verdict = VerifySender, call_verify_sender;
        /// `check-recipient`.
        check_recipient(s: &Session, e: &Envelope, a: &Address) -> Verdict =
            CheckRecipient, call_check_recipient;
        /// `check-message`.
        check_message(s: &Session, e: &Envelope, m: &Message) -> MessageVerdict =
            CheckMessage, call_check_message;
        /// `on-delivery`.
        on_delivery(r: &DeliveryReport) -> () = OnDelivery, call_on_delivery;
        /// `render-bounce`.
        render_bounce(r: &BounceRequest) -> Option<BounceText> = RenderBounce, call_render_bounce;
    }

    /// Resets the deadline before a call; refuses to call a broken instance.
    fn begin(&mut self) -> Result<(), CallFailure> {
        if self.broken {
            return Err(CallFailure::EarlierFailure);
        }
        let state = self.store.data_mut();
        state
            .budget
            .start(Duration::from_millis(self.plugin.limits.timeout_ms));
        state.output.clear();
        self.store.set_epoch_deadline(1);
        Ok(())
    }

    /// Classifies a call's error; marks the instance broken on failure.
    fn finish<T>(&mut self, r: Option<wasmtime::Result<T>>, hook: Hook) -> Result<T, CallFailure> {
        let limits = self.plugin.limits;
        let failure = match r {
            Some(Ok(v)) => return Ok(v),
            Some(Err(e)) => with_shape_hint(
                classify(&e, &self.store, limits.timeout_ms, limits.memory_mb),
                hook,
            ),
            None => CallFailure::Deadline {
                limit_ms: limits.timeout_ms,
            },
        };
        self.broken = true;
        Err(failure)
    }

    /// Checks a return value against the plugin's limits; marks the instance broken when it
    /// is out of bounds.
    fn checked<T: Checked>(&mut self, v: T) -> Result<T, CallFailure> {
        match v.check(&self.plugin.limits) {
            Ok(()) => Ok(v),
            Err(message) => {
                self.broken = true;
                Err(CallFailure::BadReturn { message })
            }
        }
    }
}

/// Runs a call future under the async timeout (the epoch deadline plus a grace period).
/// `None` when the timeout fired.
async fn run<T>(
    fut: impl std::future::Future<Output = wasmtime::Result<T>>,
    timeout_ms: u64,
) -> Option<wasmtime::Result<T>> {
    tokio::time::timeout(Duration::from_millis(timeout_ms) + TIMEOUT_GRACE, fut)
        .await
        .ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn panic_output_keeps_message_and_location_without_the_backtrace_advice() {
        let out = "thread '<unnamed>' panicked at src/lib.rs:12:5:\nboom\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace";
        assert_eq!(
            super::without_sandbox_advice(out),
            "thread '<unnamed>' panicked at src/lib.rs:12:5:\nboom"
        );
    }
}

/// Raised by the epoch callback when a call's deadline has passed.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
struct DeadlineExceeded;

fn classify(
    e: &wasmtime::Error,
    store: &Store<StoreState>,
    timeout_ms: u64,
    memory_mb: u64,
) -> CallFailure {
    if e.downcast_ref::<DeadlineExceeded>().is_some() {
        return CallFailure::Deadline {
            limit_ms: timeout_ms,
        };
    }
    if let Some(u) = e.downcast_ref::<super::capabilities::StoreUnavailable>() {
        return CallFailure::StoreUnavailable {
            message: u.0.clone(),
        };
    }
    if e.downcast_ref::<MemoryLimitExceeded>().is_some() || store.data().limiter.memory_hit {
        return CallFailure::Memory {
            limit_mb: memory_mb,
        };
    }
    // wasmtime stopped copying a return (or a host call's arguments) at the copy budget
    // (`returns::copy_budget`): a return beyond what the limits could accept.
    let text = format!("{e:#}");
    if text.contains("too much data is being copied") {
        return CallFailure::BadReturn {
            message: format!(
                "it returned more than its limits allow to copy ({} bytes: max_headers, max_header_bytes, max_symbols, max_text_bytes); the host stopped copying there",
                store.hostcall_fuel()
            ),
        };
    }
    let mut message = match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => text,
    };
    if message.len() > 1024 {
        message = super::truncate(&message, 1024).to_string();
    }
    CallFailure::Trap {
        message,
        output: without_sandbox_advice(&store.data().output.text()),
    }
}

/// A trap in a JavaScript guest's generated glue because a hook returned a value of the wrong
/// shape (`'continue'` for `{ tag: 'continue' }`): the glue's words name neither the hook nor
/// the shape it wanted, so say both.
fn with_shape_hint(failure: CallFailure, hook: Hook) -> CallFailure {
    match failure {
        CallFailure::Trap { message, output }
            if output.contains("invalid variant tag value")
                || output.contains("specified for `") =>
        {
            let message = format!(
                "{message}; the {hook} hook returned a value of the wrong shape: in JavaScript a WIT variant is an object with a tag, e.g. {{ tag: 'continue' }} or {{ tag: 'reject', val: {{ code: 550, enhanced: '5.7.1', text: '…' }} }}, and a record an object with every field (the JavaScript SDK's helpers build them)"
            );
            CallFailure::Trap { message, output }
        }
        other => other,
    }
}

/// A guest's output without advice that cannot apply inside the sandbox: Rust's panic hook
/// suggests `RUST_BACKTRACE=1`, but a plugin has no environment (the panic message and its
/// location stay).
fn without_sandbox_advice(output: &str) -> String {
    output
        .lines()
        .filter(|l| !l.contains("RUST_BACKTRACE"))
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string()
}
