//! The plugins' run through one transaction ([`PluginRun`]): the plugin set it started with,
//! its own plugin instances (created on first use, dropped with it), one stage loop for
//! `verify-sender`, `check-recipient` and `check-message`, and the record of every call.

use std::sync::Arc;
use std::time::Instant;

use crate::config::ScoringConfig;
use crate::envelope::{Client, Decision, Envelope, Recipient, Sender};
use crate::plugin::bindings::types::{self as wit, MessageVerdict, Session, Verdict};
use crate::plugin::shadow::Answer;
use crate::plugin::view::MessageView;
use crate::plugin::{CallFailure, Hook, LoadedPlugin, PluginInstance, executor};
use crate::smtp::reply::Reply;

use super::calls::{CallRecord, record};
use super::recording::{CallSummary, PluginFacts, RecordSink, Recording, Step, Taps};
use super::scoring::MessageOutcome;
use super::wit::{
    decision_of_failure, decision_of_verdict, wit_address, wit_envelope, wit_session,
};

/// The plugins' run through one SMTP transaction: the plugin set it started with and its own
/// plugin instances, created on first use and dropped with the transaction. It takes the
/// envelope vocabulary and speaks WIT to the plugins.
///
/// The instances live on the plugin thread ([`executor`]): each stage that calls a plugin is
/// carried out there in one hop, and the instances are dropped there.
pub struct PluginRun {
    /// The run's state; away on the plugin thread during a stage, and gone for good if a
    /// stage was abandoned (its caller dropped while the stage ran).
    chain: Option<Box<Chain>>,
    session: Arc<Session>,
    /// The record being made of this run, when capture is on.
    recording: Option<Recording>,
    /// The taps of the plugins' instances (recording, or playing a record back).
    taps: Option<Arc<Taps>>,
}

/// Whether a run records what its plugins get, or plays a record back to them.
pub enum Tapping {
    /// Neither (no capture).
    Off,
    /// Recorded, and offered to the sink at the end.
    Record(Arc<dyn RecordSink>),
    /// Played back from a record.
    Replay(Arc<Taps>),
}

/// Why a stage cannot run: an earlier stage of this transaction was abandoned mid-way.
fn chain_lost() -> Decision {
    Decision::Tempfail {
        reply: Reply::new(451, "4.3.0", "Filter state lost, try again later"),
    }
}

impl PluginRun {
    /// The run of `plugins` through one transaction of `client`, named `transaction_id`.
    pub(super) fn start(
        plugins: Arc<[Arc<LoadedPlugin>]>,
        scoring: ScoringConfig,
        missing_required: Arc<[String]>,
        client: &Client,
        transaction_id: &str,
        tapping: Tapping,
    ) -> PluginRun {
        let session = Arc::new(wit_session(client, transaction_id));
        let (recording, taps) = match tapping {
            Tapping::Off => (None, None),
            Tapping::Record(sink) => (
                Some(Recording::start(sink, client, transaction_id)),
                Some(Arc::new(Taps::recording())),
            ),
            Tapping::Replay(taps) => (None, Some(taps)),
        };
        PluginRun {
            chain: Some(Box::new(Chain {
                instances: (0..plugins.len()).map(|_| None).collect(),
                shadows: (0..plugins.len()).map(|_| None).collect(),
                plugins,
                scoring,
                missing_required,
                client: Some(client.ip),
                session: session.clone(),
                calls: Vec::new(),
                authentication: None,
                taps: taps.clone(),
            })),
            session,
            recording,
            taps,
        }
    }

    /// Notes a step of the record, when recording.
    fn note(&mut self, step: impl FnOnce() -> Step) {
        if let Some(r) = &mut self.recording {
            r.record.steps.push(step());
        }
    }

    /// The session facts every hook receives.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Every call made so far, in order.
    pub fn calls(&self) -> &[CallRecord] {
        self.chain.as_ref().map_or(&[], |c| &c.calls)
    }

    /// Sets the sender-authentication results the following hooks see (through
    /// `sluice:filter/authentication`); `None` when the host does not verify this transaction.
    pub fn set_authentication(&mut self, results: Option<crate::sender_auth::Results>) {
        self.note(|| Step::Authentication {
            results: results.clone(),
        });
        if let Some(c) = self.chain.as_mut() {
            c.authentication = results.map(Arc::new);
        }
    }

    /// Takes the call records (for logging or reporting).
    pub fn take_calls(&mut self) -> Vec<CallRecord> {
        let calls = self
            .chain
            .as_mut()
            .map(|c| std::mem::take(&mut c.calls))
            .unwrap_or_default();
        if let Some(r) = &mut self.recording {
            r.record.calls.extend(calls.iter().map(CallSummary::from));
        }
        calls
    }

    /// Carries out `stage` on the chain: on the plugin thread when a plugin wants `hook`,
    /// here when none does (no sandbox is touched then). With `last`, the instances are
    /// dropped on the plugin thread right after the stage answers, in the same task: no
    /// second wake-up of that thread per transaction (under load that was 0.43 against 0.53
    /// ms of CPU per message for the bundled chain). `None` when the chain was lost.
    async fn stage<T, F>(
        &mut self,
        hook: Hook,
        last: bool,
        stage: impl FnOnce(Box<Chain>) -> F,
    ) -> Option<T>
    where
        T: Send + 'static,
        F: Future<Output = (Box<Chain>, T)> + Send + 'static,
    {
        let chain = self.chain.take()?;
        let (chain, out) = if chain.wants(hook) {
            let work = stage(chain);
            executor::run_then_drop(async move {
                let (mut chain, out) = work.await;
                let used = if last { chain.release() } else { Vec::new() };
                ((chain, out), used)
            })
            .await
        } else {
            stage(chain).await
        };
        self.chain = Some(chain);
        Some(out)
    }

    /// Runs `verify-sender`.
    pub async fn verify_sender(&mut self, sender: &Sender) -> Decision {
        let sender = sender.clone();
        self.note(|| Step::VerifySender {
            sender: sender.clone(),
        });
        self.stage(Hook::VerifySender, false, |mut c| async move {
            let d = c.verify_sender(&sender).await;
            (c, d)
        })
        .await
        .unwrap_or_else(chain_lost)
    }

    /// Runs `check-recipient` for `recipient`; `envelope.recipients` holds those accepted so far.
    pub async fn check_recipient(
        &mut self,
        envelope: &Envelope,
        recipient: &Recipient,
    ) -> Decision {
        let (envelope, recipient) = (envelope.clone(), recipient.clone());
        self.note(|| Step::CheckRecipient {
            envelope: envelope.clone(),
            recipient: recipient.clone(),
        });
        self.stage(Hook::CheckRecipient, false, |mut c| async move {
            let d = c.check_recipient(&envelope, &recipient).await;
            (c, d)
        })
        .await
        .unwrap_or_else(chain_lost)
    }

    /// Runs `check-message`, gathers header edits and symbols, and applies the score thresholds.
    pub async fn check_message(&mut self, envelope: &Envelope, message: &[u8]) -> MessageOutcome {
        self.message_stage(envelope, message, false).await
    }

    /// [`check_message`](Self::check_message) as the transaction's last stage: the
    /// instances are dropped right after it (a later hook would get fresh ones). The inbound
    /// core ends every transaction with it.
    pub async fn check_message_and_end(
        &mut self,
        envelope: &Envelope,
        message: &[u8],
    ) -> MessageOutcome {
        self.message_stage(envelope, message, true).await
    }

    async fn message_stage(
        &mut self,
        envelope: &Envelope,
        message: &[u8],
        last: bool,
    ) -> MessageOutcome {
        let wanted = self
            .chain
            .as_ref()
            .is_some_and(|c| c.wants(Hook::CheckMessage));
        if let Some(r) = &mut self.recording {
            r.message(envelope, message);
        }
        // The one copy of the message (none when no plugin wants it): the WIT message the
        // plugins get, with its parsed header fields, inside the view they share.
        let view = Arc::new(MessageView::new(super::wit::message(if wanted {
            message.to_vec()
        } else {
            Vec::new()
        })));
        // A plugin that reads the parsed view gets it parsed here, on a blocking thread, not
        // inside its first call on the plugin thread that every transaction's sandboxes share
        // (a large message would hold it for milliseconds). What costs more for a large
        // message (digests, the readable text, the links) is made here too; for a small one it
        // stays for the plugins that ask.
        let reads_view = self.chain.as_ref().is_some_and(|c| {
            c.plugins
                .iter()
                .any(|p| p.reads_view && p.wants(Hook::CheckMessage))
        });
        if wanted && reads_view {
            let parsing = Arc::clone(&view);
            let parsed = tokio::task::spawn_blocking(move || {
                let p = parsing.parsed();
                if parsing.raw().len() > PARSE_AHEAD_BYTES {
                    p.attachments();
                    p.body_text();
                    p.links();
                }
            })
            .await;
            if let Err(e) = parsed {
                // The parse panicked (a bug in it): the plugins get an empty view, not a
                // lost transaction.
                tracing::error!(error = %e, "parsing the message for the plugins' view failed");
            }
        }
        let envelope = envelope.clone();
        let outcome = self
            .stage(Hook::CheckMessage, last, |mut c| async move {
                let out = c.check_message(&envelope, view).await;
                (c, out)
            })
            .await
            .unwrap_or_else(|| MessageOutcome {
                decision: chain_lost(),
                score: 0.0,
                spam: false,
                symbols: Vec::new(),
                add_headers: Vec::new(),
                remove_headers: Vec::new(),
            });
        if let Some(r) = &mut self.recording {
            r.record.outcome = Some(outcome.clone());
        }
        outcome
    }

    /// Ends the record of this run, when one is being made (calls not yet taken included,
    /// and what each plugin got from its tap), and offers it to the capture.
    fn finish_record(&mut self) {
        let Some(mut recording) = self.recording.take() else {
            return;
        };
        let calls = self.take_calls();
        recording
            .record
            .calls
            .extend(calls.iter().map(CallSummary::from));
        let mut tapes = self.taps.as_ref().map(|t| t.tapes()).unwrap_or_default();
        if let Some(chain) = &self.chain {
            for p in chain.plugins.iter() {
                for p in std::iter::once(p).chain(p.shadow.as_ref()) {
                    if let Some(tape) = tapes.remove(&p.name) {
                        recording.record.plugins.insert(
                            p.name.clone(),
                            PluginFacts {
                                sha256: p.sha256.clone(),
                                version: p.info.version.clone(),
                                tape,
                            },
                        );
                    }
                }
            }
        }
        let Recording { sink, record } = recording;
        sink.offer(record);
    }
}

impl Drop for PluginRun {
    /// The instances are dropped on the plugin thread, where their memory slots are reset.
    fn drop(&mut self) {
        // The transaction is over: its record, if one is being made, goes to the capture.
        self.finish_record();
        if let Some(chain) = self.chain.take()
            && chain.instances.iter().any(Option::is_some)
        {
            executor::drop_there(chain);
        }
    }
}

/// Above this size, everything of the parsed view is made before the stage, off the plugin
/// thread; below it, the parts that not every plugin asks for are made on first use.
const PARSE_AHEAD_BYTES: usize = 256 * 1024;

/// The state of a [`PluginRun`], and its stages as carried out on the plugin thread.
struct Chain {
    plugins: Arc<[Arc<LoadedPlugin>]>,
    scoring: ScoringConfig,
    instances: Vec<Option<PluginInstance>>,
    /// The instances of the plugins' shadows (`NAME.shadow.wasm`), created on first use.
    shadows: Vec<Option<PluginInstance>>,
    session: Arc<Session>,
    /// The client's address, for the plugins' per-client failure counts.
    client: Option<std::net::IpAddr>,
    /// Required plugins not in service when the transaction began.
    missing_required: Arc<[String]>,
    calls: Vec<CallRecord>,
    authentication: Option<Arc<crate::sender_auth::Results>>,
    /// The instances' taps, when recording or replaying.
    taps: Option<Arc<Taps>>,
}

/// Which plugins a stage calls: those that want its hook and whose scope covers the
/// listener and the stage's addresses.
#[derive(Clone, Copy)]
enum Reach<'a> {
    /// `verify-sender`: plugins scoped by recipient domain are not called (no recipient yet).
    Sender,
    /// `check-recipient`, for this recipient.
    Recipient(&'a str),
    /// `check-message`, for these recipients (any of them).
    Message(&'a [Recipient]),
}

impl Reach<'_> {
    fn hook(self) -> Hook {
        match self {
            Reach::Sender => Hook::VerifySender,
            Reach::Recipient(_) => Hook::CheckRecipient,
            Reach::Message(_) => Hook::CheckMessage,
        }
    }

    fn covers(self, p: &LoadedPlugin, listener: &str) -> bool {
        p.wants(self.hook())
            && p.scope.listener(listener)
            && match self {
                Reach::Sender => !p.scope.by_domain(),
                Reach::Recipient(address) => p.scope.recipient(address),
                Reach::Message(all) => p
                    .scope
                    .any_recipient(all.iter().map(|r| r.address.as_str())),
            }
    }
}

/// What a stage hands each plugin it calls, in WIT terms.
enum Input<'a> {
    Sender(&'a wit::Address),
    Recipient(&'a wit::Envelope, &'a wit::Address),
    /// The envelope, and the message with the parsed view of it the plugins share.
    Message(&'a wit::Envelope, &'a Arc<MessageView>),
}

impl Chain {
    /// True when a plugin of the chain wants `hook` (then the stage goes to the plugin thread).
    fn wants(&self, hook: Hook) -> bool {
        self.plugins.iter().any(|p| p.wants(hook))
    }

    /// Takes the instances out (each a fresh one again if a later hook wanted it).
    fn release(&mut self) -> Vec<Option<PluginInstance>> {
        let n = self.instances.len();
        let fresh = || (0..n).map(|_| None).collect();
        let mut used = std::mem::replace(&mut self.instances, fresh());
        used.extend(std::mem::replace(&mut self.shadows, fresh()));
        used
    }

    /// Runs `verify-sender`.
    async fn verify_sender(&mut self, sender: &Sender) -> Decision {
        if let Some(name) = self.missing_required.first() {
            // Fail closed: a required filter missing must not let mail through unfiltered.
            return Decision::Tempfail {
                reply: Reply::new(
                    451,
                    "4.3.0",
                    &format!("Required filter {name} is not in service, try again later"),
                ),
            };
        }
        let sender = wit_address(&sender.address, &sender.params);
        self.stage(Reach::Sender, Input::Sender(&sender)).await.0
    }

    /// Runs `check-recipient` for `recipient`; `envelope.recipients` holds those accepted so far.
    async fn check_recipient(&mut self, envelope: &Envelope, recipient: &Recipient) -> Decision {
        let (envelope, address) = (
            wit_envelope(envelope),
            wit_address(&recipient.address, &recipient.params),
        );
        let input = Input::Recipient(&envelope, &address);
        self.stage(Reach::Recipient(&recipient.address), input)
            .await
            .0
    }

    /// Runs `check-message`, gathers header edits and symbols, and applies the score thresholds.
    async fn check_message(
        &mut self,
        envelope: &Envelope,
        view: Arc<MessageView>,
    ) -> MessageOutcome {
        let reach = Reach::Message(&envelope.recipients);
        // The WIT envelope is built only when a plugin is called with it.
        let (decision, verdicts) = if self
            .plugins
            .iter()
            .any(|p| reach.covers(p, &self.session.listener))
        {
            let wit_envelope = wit_envelope(envelope);
            self.stage(reach, Input::Message(&wit_envelope, &view))
                .await
        } else {
            (Decision::Continue, Vec::new())
        };
        super::scoring::outcome(
            &self.scoring,
            &self.session,
            &envelope.recipients,
            decision,
            verdicts,
        )
    }

    /// The stage loop: calls each plugin `reach` covers, in order, in this transaction's
    /// instance of it, until one decides (any verdict but `continue`); records every call.
    /// Returns the decision and, for `check-message`, the verdicts of the plugins that
    /// answered, with their names.
    async fn stage(
        &mut self,
        reach: Reach<'_>,
        input: Input<'_>,
    ) -> (Decision, Vec<(String, MessageVerdict)>) {
        let hook = reach.hook();
        // The session is shared (an Arc): held here, its listener is borrowed, not copied.
        let session = self.session.clone();
        let listener = session.listener.as_str();
        let mut decision = Decision::Continue;
        let mut verdicts = Vec::new();
        for i in 0..self.plugins.len() {
            let p = self.plugins[i].clone();
            if !reach.covers(&p, listener) {
                continue;
            }
            let started = Instant::now();
            let answer = self.ask(i, false, &input).await;
            // The live answer as the shadow's comparison sees it, when a shadow runs.
            let shadowed = p.shadow.is_some()
                && crate::plugin::shadow::sampled(
                    &session.transaction_id,
                    &p.name,
                    p.shadow_sample,
                );
            let live = shadowed.then(|| answer_of(&answer, started));
            let answer = answer.map(|(verdict, mv)| {
                if let Some(mv) = mv {
                    verdicts.push((p.name.clone(), mv));
                }
                verdict
            });
            decision = self.settle(hook, i, answer, started);
            if let Some(live) = live {
                self.shadow_call(hook, i, &input, live).await;
            }
            if decision.is_final() {
                self.note_skipped(hook, i, |q| reach.covers(q, listener));
                break;
            }
        }
        (decision, verdicts)
    }

    /// Calls the shadow of plugin `index` with the live call's `input`, and records how its
    /// answer compares with the `live` one. Its verdict is never applied; its failure costs
    /// only itself (its own health and cool-down, its own deadline).
    async fn shadow_call(&mut self, hook: Hook, index: usize, input: &Input<'_>, live: Answer) {
        let p = self.plugins[index].clone();
        let Some(shadow) = p.shadow.clone() else {
            return;
        };
        let started = Instant::now();
        let answer = if !shadow.wants(hook) {
            // As a live plugin without the hook: not called, no opinion.
            Ok((Verdict::Continue, None))
        } else {
            self.ask(index, true, input).await
        };
        let mut theirs = answer_of(&answer, started);
        if shadow.wants(hook) {
            let (decision, failure) = match answer {
                Ok((v, _)) => (decision_of_verdict(&v), None),
                Err(f) => (decision_of_failure(shadow.limits.on_failure), Some(f)),
            };
            // Its logs, health and call metrics under its own name (`NAME.shadow`).
            record(
                hook,
                &shadow,
                &mut self.shadows[index],
                decision,
                failure,
                started,
                (&self.session.transaction_id, self.client),
            );
        } else {
            theirs.micros = 0;
        }
        crate::admin::metrics::get().shadow_call(&p.name, hook, &live.action, &theirs.action);
        if live.action != theirs.action {
            tracing::info!(id = %self.session.transaction_id, plugin = %p.name, %hook, live = %live.action, shadow = %theirs.action, "shadow disagrees");
        }
        p.shadow_stats
            .record(&self.session.transaction_id, hook, live, theirs);
    }

    /// Calls plugin `index` (its shadow, with `shadow`) with `input`, in this transaction's
    /// instance of it.
    async fn ask(
        &mut self,
        index: usize,
        shadow: bool,
        input: &Input<'_>,
    ) -> Result<(Verdict, Option<MessageVerdict>), CallFailure> {
        let (plugin, slot) = if shadow {
            let Some(s) = self.plugins[index].shadow.clone() else {
                return Ok((Verdict::Continue, None));
            };
            (s, &mut self.shadows[index])
        } else {
            (self.plugins[index].clone(), &mut self.instances[index])
        };
        let taps = self.taps.as_deref();
        match instance(slot, &plugin, self.client, &self.authentication, taps).await {
            Ok(inst) => call(inst, &self.session, input).await,
            Err(f) => Err(f),
        }
    }

    /// Turns one call's result into a decision (applying the failure policy) and records it.
    fn settle(
        &mut self,
        hook: Hook,
        index: usize,
        result: Result<Verdict, CallFailure>,
        started: Instant,
    ) -> Decision {
        let p = self.plugins[index].clone();
        let (decision, failure) = match result {
            Ok(v) => (decision_of_verdict(&v), None),
            Err(f) => (decision_of_failure(p.limits.on_failure), Some(f)),
        };
        let rec = record(
            hook,
            &p,
            &mut self.instances[index],
            decision.clone(),
            failure,
            started,
            (&self.session.transaction_id, self.client),
        );
        self.calls.push(rec);
        decision
    }

    /// Records on the last call which later plugins of `hook` (those in scope by `applies`)
    /// its final decision kept from being called.
    fn note_skipped(&mut self, hook: Hook, index: usize, applies: impl Fn(&LoadedPlugin) -> bool) {
        let skipped: Vec<String> = self.plugins[index + 1..]
            .iter()
            .filter(|p| p.wants(hook) && applies(p))
            .map(|p| p.name.clone())
            .collect();
        if !skipped.is_empty() {
            self.plugins[index]
                .stages_ended
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(id = %self.session.transaction_id, %hook, plugin = %self.plugins[index].name, skipped = %skipped.join(","), "stage ended before these plugins");
        }
        if let Some(last) = self.calls.last_mut() {
            last.skipped = skipped;
        }
    }
}

/// One hook call with `input`: the verdict, and for `check-message` the whole message
/// verdict (header edits and symbols).
async fn call(
    inst: &mut PluginInstance,
    session: &Session,
    input: &Input<'_>,
) -> Result<(Verdict, Option<MessageVerdict>), CallFailure> {
    match input {
        Input::Sender(sender) => inst.verify_sender(session, sender).await.map(|v| (v, None)),
        Input::Recipient(envelope, recipient) => inst
            .check_recipient(session, envelope, recipient)
            .await
            .map(|v| (v, None)),
        Input::Message(envelope, view) => {
            inst.set_message_view(Arc::clone(view));
            inst.check_message(session, envelope, view.message())
                .await
                .map(|mv| (mv.verdict.clone(), Some(mv)))
        }
    }
}

/// A call's answer as a shadow comparison shows it: the action, the points of its symbols,
/// and a line of detail (printable, bounded: it comes from a plugin).
fn answer_of(
    result: &Result<(Verdict, Option<MessageVerdict>), CallFailure>,
    started: Instant,
) -> Answer {
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let (action, score, detail) = match result {
        Ok((verdict, mv)) => {
            let decision = decision_of_verdict(verdict);
            let symbols = mv.as_ref().map_or(&[][..], |m| &m.symbols[..]);
            let mut detail: Vec<String> = symbols
                .iter()
                .map(|s| format!("{}({:+.2})", s.name, s.score))
                .collect();
            if let Verdict::Reject(r) | Verdict::Tempfail(r) = verdict {
                detail.insert(0, format!("{} {}", r.code, r.text));
            }
            (
                decision.name().to_string(),
                // + 0.0: an empty sum is -0.0, shown as "-0.00".
                symbols.iter().map(|s| s.score).sum::<f64>() + 0.0,
                detail.join(" "),
            )
        }
        Err(f) => ("failed".to_string(), 0.0, f.to_string()),
    };
    let mut detail = crate::inbound::message::printable(&detail).into_owned();
    if detail.len() > 200 {
        detail.truncate(detail.floor_char_boundary(200));
        detail.push('…');
    }
    Answer {
        action,
        score,
        detail,
        micros,
    }
}

/// The transaction's instance of `plugin`, created on first use.
pub(super) async fn instance<'a>(
    slot: &'a mut Option<PluginInstance>,
    plugin: &Arc<LoadedPlugin>,
    client: Option<std::net::IpAddr>,
    authentication: &Option<Arc<crate::sender_auth::Results>>,
    taps: Option<&Taps>,
) -> Result<&'a mut PluginInstance, CallFailure> {
    if let Some(left) = plugin.health.cooling_down(Instant::now(), client) {
        return Err(CallFailure::CoolingDown {
            secs_left: left.as_secs() + 1,
        });
    }
    if slot.is_none() {
        let tap = taps.map(|t| t.tap(&plugin.name));
        let created = PluginInstance::tapped(plugin.clone(), tap).await?;
        let cost = created.creation_cost();
        plugin.cost.add("instantiate", cost);
        crate::admin::metrics::get().plugin_cost(&plugin.name, "instantiate", &cost);
        *slot = Some(created);
    }
    let instance = slot.as_mut().ok_or(CallFailure::EarlierFailure)?;
    instance.set_authentication(authentication.clone());
    Ok(instance)
}
