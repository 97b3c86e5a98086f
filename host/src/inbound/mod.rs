//! The inbound core: every decision about one incoming transaction, whatever carries it.
//!
//! Three front ends drive it — the SMTP connection ([`crate::smtp::connection`]), the milter server
//! ([`crate::milter`]) and `sluice plugin check` ([`crate::pipeline::replay`]) — by feeding it the
//! client's facts and the envelope as it arrives; they carry out what it decides and hold no
//! policy of their own. It owns:
//! - the sender: SPF (for mail that is verified), then `verify-sender`;
//! - each recipient: `check-recipient`;
//! - the message: the hop limit, DKIM and DMARC and the listener's DMARC policy, the
//!   plugins' `check-message` with the score thresholds, and the edits — trace fields
//!   (`Received:` where the front end is the receiving MTA, `Authentication-Results:`), the
//!   plugins' header additions and removals, removal of forged `Authentication-Results:`
//!   for our host, and DKIM signing of our own users' mail (after every other edit);
//! - the outcome: refuse, discard, quarantine or queue, with its reply and its log line.
//!
//! Spooling is the one step left to the front end that needs it ([`Inbound::spool`]): a milter
//! does not spool, Postfix keeps the message.
//!
//! May use: the pipeline, sender authentication, the spool, the configuration, the shared
//! vocabulary and the admin reports (log line, metrics, journal). No sockets: the front ends do
//! the I/O.

pub mod message;

use std::sync::Arc;

use crate::config::{DmarcMode, UnownedFrom};
pub use crate::envelope::Client;
use crate::envelope::Decision;
use crate::envelope::{Envelope, Recipient, Sender};
use crate::pipeline::{self, CallRecord, MessageOutcome};
use crate::sender_auth::{Results, SenderChecks, SignRefusal};
use crate::server::context::Live;
use crate::smtp::reply::Reply;
use crate::spool::{Spool, SpoolState, SpooledEnvelope};

pub mod rules;

/// How the front end stands in the mail flow.
#[derive(Debug, Clone, Copy)]
pub struct FrontEnd {
    /// What a DMARC failure does here.
    pub dmarc: DmarcMode,
    /// We are the receiving MTA and write the `Received:` field (a milter's MTA writes its own).
    pub writes_received: bool,
    /// Run SPF, DKIM and DMARC for unauthenticated, untrusted clients (when configured).
    pub verify: bool,
    /// Apply relay control (recipients outside the local domains only for clients that may
    /// relay): not behind a milter, where the MTA decides what it relays.
    pub relay_control: bool,
}

/// The message after [`Inbound::message`]: what happens to it and what changes.
#[derive(Debug, Clone)]
pub struct Disposition {
    /// What is done with the message.
    pub action: Action,
    /// The reply for the client (250 with the queue id when accepted).
    pub reply: Reply,
    /// The decision that led there (DMARC policy or the plugins').
    pub decision: Decision,
    /// Fields to put on top of the message, in order, each formatted with its CRLF.
    pub prepend: Vec<String>,
    /// Field names to remove (every occurrence).
    pub remove: Vec<String>,
    /// The plugins' outcome (score, symbols, their header edits), when they ran.
    pub outcome: Option<MessageOutcome>,
    /// Sender-authentication results, when the message was verified.
    pub authentication: Option<Results>,
    /// The recipients it goes to (none discarded).
    pub deliver_to: Vec<Recipient>,
    /// The quarantine reason, when held.
    pub quarantine: Option<String>,
    /// The message as received, less forged `Authentication-Results:` for our host.
    pub received: Vec<u8>,
    /// Why it was refused, as a [`crate::admin::decisions::Refusal::reason`] word.
    pub why: &'static str,
}

/// What is done with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Refused (reject or tempfail; the reply says which).
    Refuse,
    /// Accepted and dropped.
    Discard,
    /// Accepted and held.
    Quarantine,
    /// Accepted for delivery.
    Queue,
}

impl Disposition {
    /// Its one name in logs, metrics and the journal: `queued`, `quarantined`, `discarded`,
    /// or the refusal's decision (`reject`, `tempfail`).
    pub fn name(&self) -> &'static str {
        match self.action {
            Action::Refuse => self.decision.name(),
            Action::Discard => "discarded",
            Action::Quarantine => "quarantined",
            Action::Queue => "queued",
        }
    }

    /// The message as it goes on: prepended fields, the received header without removed
    /// fields, the body unchanged.
    pub fn final_message(&self) -> Vec<u8> {
        message::finalize(&self.received, &self.prepend, &self.remove)
    }
}

/// One inbound transaction, from MAIL FROM to the message's outcome.
pub struct Inbound {
    live: Arc<Live>,
    id: String,
    client: Client,
    front: FrontEnd,
    plugins: pipeline::PluginRun,
    checks: Option<SenderChecks>,
    sender: Sender,
    recipients: Vec<Recipient>,
    discard: bool,
    quarantine: Option<String>,
}

/// True for decisions that refuse at SMTP time.
pub fn refuses(d: &Decision) -> bool {
    matches!(d, Decision::Reject { .. } | Decision::Tempfail { .. })
}

impl Inbound {
    /// Starts a transaction at MAIL FROM under the configuration and plugins in `live`:
    /// sender authentication (SPF) when the front end verifies this client, then
    /// `verify-sender`. The transaction is returned even when the sender is refused, so its
    /// plugin calls can be reported.
    pub async fn mail(
        live: Arc<Live>,
        client: Client,
        front: FrontEnd,
        id: String,
        sender: Sender,
    ) -> (Inbound, Decision) {
        let mut plugins = live.pipeline.start(&client, &id);
        let mut checks = None;
        // The envelope rules first (the SMTP session has applied them already; replay and the
        // milter have not): a refused sender costs no DNS query and no plugin call.
        let config = &live.config;
        let declared = sender
            .params
            .iter()
            .find(|p| p.keyword.eq_ignore_ascii_case("SIZE"))
            .and_then(|p| p.value.as_deref()?.parse::<usize>().ok())
            .unwrap_or(0);
        let user = client.auth_user.as_deref();
        let refusal = rules::sender_refused(
            declared,
            config.limits.max_message_size,
            user,
            &sender.address,
            user.and_then(|u| config.auth.senders.get(u)),
            &config.relay.local_domains,
        );
        if refusal.is_none() && front.verify && client.auth_user.is_none() && !client.trusted {
            let c = live
                .verifier
                .check_sender(client.ip, &client.helo, &sender.address)
                .await;
            let results = c.results();
            let m = crate::admin::metrics::get();
            for (check, r) in [
                ("spf_helo", &results.spf_helo),
                ("spf_mail_from", &results.spf_mail_from),
            ] {
                if let Some(r) = r {
                    m.authentication(check, r.verdict.as_str());
                }
            }
            plugins.set_authentication(Some(results));
            checks = Some(c);
        }
        let (why, decision) = match refusal {
            Some((why, reply)) => (Some(why), Decision::Reject { reply }),
            None => (None, plugins.verify_sender(&sender).await),
        };
        let mut t = Inbound {
            live,
            id,
            client,
            front,
            plugins,
            checks,
            sender,
            recipients: Vec::new(),
            discard: false,
            quarantine: None,
        };
        match &decision {
            Decision::Discard => t.discard = true,
            Decision::Quarantine { reason } => t.quarantine = Some(reason.clone()),
            d if refuses(d) => t.log_refusal("MAIL", why, None, d, t.plugins.calls()),
            _ => {}
        }
        (t, decision)
    }

    /// The queue id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The sender.
    pub fn sender(&self) -> &Sender {
        &self.sender
    }

    /// The recipients accepted so far (discarded ones included, marked).
    pub fn recipients(&self) -> &[Recipient] {
        &self.recipients
    }

    /// The sender-authentication results so far (SPF, after MAIL FROM), when verified.
    pub fn sender_authentication(&self) -> Option<Results> {
        self.checks.as_ref().map(SenderChecks::results)
    }

    /// Every plugin call so far, taken.
    pub fn take_calls(&mut self) -> Vec<CallRecord> {
        self.plugins.take_calls()
    }

    /// RCPT TO: `check-recipient`. An accepted recipient is remembered (a discarded one
    /// marked so).
    pub async fn rcpt(&mut self, mut recipient: Recipient) -> Decision {
        let config = &self.live.config;
        if let Some(reply) = rules::recipient_refused(
            &recipient.address,
            self.recipients.len(),
            config.limits.max_recipients,
            self.client.auth_user.is_some() || self.client.trusted,
            self.front.relay_control,
            &config.relay.local_domains,
        ) {
            let why = if reply.code == 452 {
                "too-many-recipients"
            } else {
                "relay-denied"
            };
            let decision = Decision::refusal(reply);
            self.log_refusal("RCPT", Some(why), Some(&recipient.address), &decision, &[]);
            return decision;
        }
        let envelope = self.envelope();
        let decision = self.plugins.check_recipient(&envelope, &recipient).await;
        match &decision {
            d if refuses(d) => {
                let calls = self.plugins.calls();
                self.log_refusal("RCPT", None, Some(&recipient.address), d, calls)
            }
            Decision::Discard => {
                recipient.discarded = true;
                self.recipients.push(recipient);
            }
            Decision::Quarantine { reason } => {
                self.quarantine = Some(reason.clone());
                self.recipients.push(recipient);
            }
            _ => self.recipients.push(recipient),
        }
        decision
    }

    fn envelope(&self) -> Envelope {
        Envelope {
            sender: self.sender.clone(),
            recipients: self.recipients.clone(),
        }
    }

    /// Logs a refusal at `stage` (`MAIL`, `RCPT`, `DATA`): by the host for `why`, else by
    /// the plugin whose call at that stage refused (the latest such call).
    fn log_refusal(
        &self,
        stage: &str,
        why: Option<&'static str>,
        recipient: Option<&str>,
        decision: &Decision,
        calls: &[CallRecord],
    ) {
        let (Decision::Reject { reply } | Decision::Tempfail { reply }) = decision else {
            return;
        };
        let hook = match stage {
            "MAIL" => crate::plugin::Hook::VerifySender,
            "RCPT" => crate::plugin::Hook::CheckRecipient,
            _ => crate::plugin::Hook::CheckMessage,
        };
        let plugin = why
            .is_none()
            .then(|| {
                calls
                    .iter()
                    .rev()
                    .find(|c| c.hook == hook && refuses(&c.decision))
                    .map(|c| c.plugin.as_str())
            })
            .flatten();
        let recipients: Vec<String> = self.recipients.iter().map(|r| r.address.clone()).collect();
        crate::admin::decisions::refused(&crate::admin::decisions::Refusal {
            id: &self.id,
            client: Some(self.client.ip),
            listener: &self.client.listener,
            helo: &self.client.helo,
            user: self.client.auth_user.as_deref(),
            stage,
            reason: why.unwrap_or(if plugin.is_some() {
                "plugin"
            } else {
                "required-plugin-missing"
            }),
            sender: Some(&self.sender.address),
            recipients: &recipients,
            recipient,
            reply: Some(reply),
            plugin,
        });
    }

    /// The message (CRLF line endings, as received): decides what happens to it and what
    /// changes. The transaction's plugin calls stay available through
    /// [`Inbound::take_calls`].
    pub async fn message(&mut self, raw: Vec<u8>) -> Disposition {
        let config = &self.live.config;
        if let Some(reply) = rules::too_big(raw.len(), config.limits.max_message_size) {
            return self.refused(raw, reply, "size", None, None);
        }
        let hops = message::count_fields(&raw, "Received");
        if hops >= config.limits.max_received {
            let reply = Reply::new(
                554,
                "5.4.6",
                &format!("Too many hops ({hops} Received fields): mail loop"),
            );
            return self.refused(raw, reply, "mail-loop", None, None);
        }
        // DKIM and DMARC, before the plugins see the message (and instead of them, when the
        // front end enforces DMARC and the message fails it).
        let mut authentication = None;
        let mut policy = None;
        if let Some(checks) = &self.checks {
            let results = self.live.verifier.check_message(&raw, checks).await;
            let m = crate::admin::metrics::get();
            for d in &results.dkim {
                m.authentication("dkim", d.verdict.as_str());
            }
            if let Some(d) = &results.dmarc {
                m.authentication("dmarc", d.verdict.as_str());
            }
            policy = crate::sender_auth::policy_decision(self.front.dmarc, &results);
            self.plugins.set_authentication(Some(results.clone()));
            authentication = Some(results);
        }
        let envelope = self.envelope();
        let outcome = match &policy {
            None => Some(self.plugins.check_message_and_end(&envelope, &raw).await),
            Some(_) => None,
        };
        let decision = policy
            .clone()
            .or_else(|| outcome.as_ref().map(|o| o.decision.clone()))
            .unwrap_or(Decision::Continue);
        if let Decision::Reject { reply } | Decision::Tempfail { reply } = &decision {
            let reply = reply.clone();
            let why = if policy.is_some() { "dmarc" } else { "plugin" };
            return self.refused(raw, reply, why, outcome, authentication);
        }
        let deliver_to: Vec<Recipient> = self
            .recipients
            .iter()
            .filter(|r| !r.discarded)
            .cloned()
            .collect();
        let queued = Reply::new(250, "2.0.0", &format!("Ok: queued as {}", self.id));
        let (action, quarantine) = rules::action(
            &decision,
            self.discard,
            deliver_to.len(),
            self.quarantine.as_deref(),
        );

        let mut prepend = Vec::new();
        if self.front.writes_received {
            prepend.push(message::received(&message::ReceivedInfo {
                helo: &self.client.helo,
                client_ip: &self.client.ip.to_string(),
                hostname: &config.server.hostname,
                esmtp: self.client.esmtp,
                tls: self
                    .client
                    .tls
                    .as_ref()
                    .map(|t| (t.version.as_str(), t.cipher.as_str())),
                auth_user: self.client.auth_user.as_deref(),
                id: &self.id,
                for_rcpt: (deliver_to.len() == 1).then(|| deliver_to[0].address.as_str()),
                date: &message::now_rfc5322(),
            }));
        }
        if let Some(r) = authentication.as_ref().filter(|r| !r.header.is_empty()) {
            prepend.push(r.header.clone());
        }
        let (adds, remove) = outcome
            .as_ref()
            .map(|o| (o.add_headers.clone(), o.remove_headers.clone()))
            .unwrap_or_default();
        prepend.extend(adds.iter().map(|(n, v)| message::field(n, v)));
        // An Authentication-Results field that claims to be ours but came from outside is
        // forged (RFC 8601 §5): it goes, whoever the client.
        let received = message::remove_auth_results_of(&raw, &config.server.hostname);
        let mut d = Disposition {
            action,
            reply: queued,
            decision,
            prepend,
            remove,
            outcome,
            authentication,
            deliver_to,
            quarantine,
            received,
            why: "",
        };
        if action != Action::Discard
            && let Err(reply) = self.sign(&mut d)
        {
            d.action = Action::Refuse;
            d.why = "sender-not-owned";
            d.decision = Decision::Reject {
                reply: reply.clone(),
            };
            d.reply = reply;
        }
        // Mail from other servers, as we pass it on, under our ARC seal (when configured).
        if let (Some(checks), Action::Queue | Action::Quarantine) = (&self.checks, d.action)
            && let Some(sealed) = self
                .live
                .verifier
                .seal(&raw, &d.final_message(), checks)
                .await
        {
            match sealed {
                // On top: the seal covers the chain and the message below it.
                Ok(set) => d.prepend.insert(0, set),
                Err(e) => {
                    tracing::warn!(id = %self.id, error = %message::printable(&e), "not ARC-sealed; passed on unsealed");
                }
            }
        }
        d
    }

    /// Our own users' mail is signed last, so the signature covers every edit. The signing
    /// domain is the header From's, and an authenticated user's message is signed only when
    /// that From is theirs (a trusted network's mail is the operator's).
    fn sign(&self, d: &mut Disposition) -> Result<(), Reply> {
        if self.client.auth_user.is_none() && !self.client.trusted {
            return Ok(());
        }
        let config = &self.live.config;
        let user = self.client.auth_user.as_deref();
        let may_send_as = |from: &str| {
            user.is_none_or(|u| {
                crate::smtp::session::address::sender_allowed(
                    u,
                    from,
                    config.auth.senders.get(u),
                    &config.relay.local_domains,
                )
            })
        };
        match self.live.verifier.sign(&d.final_message(), may_send_as) {
            // On top: the signature covers everything below it.
            Some(Ok(field)) => d.prepend.insert(0, field),
            Some(Err(e @ (SignRefusal::NotOwned(_) | SignRefusal::NoSingleFrom)))
                if config.authentication.unowned_from == UnownedFrom::Refuse =>
            {
                return Err(Reply::new(
                    550,
                    "5.7.1",
                    &format!("Message refused: {}", message::printable(&e.to_string())),
                ));
            }
            Some(Err(e)) => {
                tracing::warn!(id = %self.id, error = %message::printable(&e.to_string()), "not DKIM-signed; sent unsigned");
            }
            None => {}
        }
        Ok(())
    }

    fn refused(
        &self,
        raw: Vec<u8>,
        reply: Reply,
        why: &'static str,
        outcome: Option<MessageOutcome>,
        authentication: Option<Results>,
    ) -> Disposition {
        Disposition {
            action: Action::Refuse,
            decision: Decision::refusal(reply.clone()),
            reply,
            prepend: Vec::new(),
            remove: Vec::new(),
            outcome,
            authentication,
            deliver_to: Vec::new(),
            quarantine: None,
            received: raw,
            why,
        }
    }

    /// Writes the transaction's `message` log line and counts it: queue id, client, sender,
    /// recipients, size, score, every plugin's verdict, the authentication summary and the
    /// disposition.
    pub fn log(&self, d: &Disposition, calls: &[CallRecord], disposition: &str, reply: &Reply) {
        crate::admin::metrics::get().message(disposition);
        if reply.code >= 400 {
            let why = match d.action {
                Action::Refuse if d.why == "plugin" => None,
                Action::Refuse if !d.why.is_empty() => Some(d.why),
                Action::Refuse => None,
                // Accepted by every check, then the spool could not take it.
                _ => Some("spool"),
            };
            self.log_refusal("DATA", why, None, &Decision::refusal(reply.clone()), calls);
        }
        // Each plugin call of the transaction: `plugin:hook:verdict`, with the plugin's score
        // when it gave symbols, and `!failure` when it failed.
        let verdicts: Vec<String> = calls
            .iter()
            .map(|c| {
                let mut v = format!("{}:{}:{}", c.plugin, c.hook, c.decision.name());
                if c.hook == crate::plugin::Hook::CheckMessage
                    && let Some(o) = &d.outcome
                {
                    let mine: Vec<f64> = o
                        .symbols
                        .iter()
                        .filter(|s| s.plugin == c.plugin)
                        .map(|s| s.score)
                        .collect();
                    if !mine.is_empty() {
                        v.push_str(&format!("={:.2}", mine.iter().sum::<f64>()));
                    }
                }
                if let Some(f) = &c.failure {
                    v.push_str(&format!("!{}", f.kind()));
                }
                v
            })
            .collect();
        let auth = d
            .authentication
            .as_ref()
            .map(|r| {
                format!(
                    "spf={} dkim={} dmarc={}",
                    r.spf_mail_from
                        .as_ref()
                        .map_or("none", |c| c.verdict.as_str()),
                    r.dkim.first().map_or("none", |c| c.verdict.as_str()),
                    r.dmarc.as_ref().map_or("none", |c| c.verdict.as_str()),
                )
            })
            .unwrap_or_else(|| "skipped".to_string());
        let score = d.outcome.as_ref().map(|o| o.score).unwrap_or(0.0);
        let rcpts: Vec<&str> = self.recipients.iter().map(|r| r.address.as_str()).collect();
        tracing::info!(
            event = "message",
            id = %self.id,
            client = %self.client.ip,
            listener = %self.client.listener,
            from = %message::printable(&self.sender.address),
            to = %message::printable(&rcpts.join(",")),
            size = d.received.len(),
            score = %format_args!("{score:.2}"),
            plugins = %verdicts.join(" "),
            auth = %auth,
            disposition,
            reply = %reply,
            "message"
        );
        for c in calls {
            crate::admin::journal::get().plugin_call(&c.plugin, c.micros, c.failure.is_some());
        }
        crate::admin::journal::get().transaction(crate::admin::journal::Transaction {
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            id: self.id.clone(),
            client: self.client.ip.to_string(),
            listener: self.client.listener.to_string(),
            sender: self.sender.address.clone(),
            recipients: rcpts.iter().map(|r| r.to_string()).collect(),
            score,
            verdicts,
            disposition: disposition.to_string(),
            reply: reply.to_string(),
        });
    }

    /// Carries out `d` on the spool (for front ends that are the receiving MTA): queued or
    /// quarantined durably before the 250 is returned; a refusal or discard is only logged.
    /// Returns the reply for the client.
    pub async fn spool(&mut self, d: Disposition, spool: &Spool) -> Reply {
        let calls = self.take_calls();
        let state = match d.action {
            Action::Refuse | Action::Discard => {
                self.log(&d, &calls, d.name(), &d.reply);
                return d.reply;
            }
            Action::Quarantine => SpoolState::Quarantine,
            Action::Queue => SpoolState::Queue,
        };
        let envelope = SpooledEnvelope {
            id: self.id.clone(),
            received_at: chrono::Utc::now().to_rfc3339(),
            sender: self.sender.clone(),
            recipients: d.deliver_to.clone(),
            client_ip: self.client.ip.to_string(),
            helo: self.client.helo.clone(),
            listener: self.client.listener.clone(),
            auth_user: self.client.auth_user.clone(),
            quarantine: d.quarantine.clone(),
            spam: d.outcome.as_ref().is_some_and(|o| o.spam),
        };
        match spool.store(state, &envelope, &d.final_message()).await {
            Ok(()) => {
                self.log(&d, &calls, d.name(), &d.reply);
                d.reply
            }
            Err(e) => {
                let reply = if e.is_full() {
                    tracing::error!(id = %self.id, error = %e, "the spool is full; answering 452");
                    Reply::new(
                        452,
                        "4.3.1",
                        "Insufficient system storage: message not accepted, please try again later",
                    )
                } else {
                    tracing::error!(id = %self.id, error = %e, "cannot spool the message; answering 451");
                    Reply::new(
                        451,
                        "4.3.0",
                        "Local error: message not accepted, please try again later",
                    )
                };
                self.log(&d, &calls, "spool-failed", &reply);
                reply
            }
        }
    }
}
