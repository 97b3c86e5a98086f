//! One client connection: the only code that reads and writes the socket. It feeds bytes to
//! the [`Session`], performs each [`Step`] the session asks for — plugin hooks through the
//! [`crate::pipeline`], password checks, the STARTTLS switch, spooling — and writes replies.
//! Timeouts (RFC 5321 §4.5.3.2) are enforced here; a stalled client only holds its own task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::authentication::{Authenticator, SenderChecks, SignRefusal};
use crate::config::ListenerKind;
use crate::config::{DmarcMode, UnownedFrom};
use crate::login_throttle::{Admission, client_key};
use crate::message;
use crate::pipeline::{self, Decision, action_name};
use crate::plugin::bindings::types as wit;
use crate::reply::Reply;
use crate::server::{Live, ServerContext};
use crate::session::{AuthOutcome, Recipient, Sender, Session, SessionConfig, Step, TlsParams};
use crate::spool::{self, SpoolState, SpooledEnvelope};

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The socket, before or after TLS.
type Stream = crate::stream::MaybeTls<tokio_rustls::server::TlsStream<TcpStream>>;

/// Serves one accepted connection to the end.
pub async fn serve(
    ctx: Arc<ServerContext>,
    tcp: TcpStream,
    peer: SocketAddr,
    kind: ListenerKind,
    dmarc: DmarcMode,
) {
    let _ = tcp.set_nodelay(true);
    let mut stream = Stream::Plain(tcp);
    let mut tls = None;
    let live = ctx.live();
    crate::metrics::get().connection(kind.as_str(), kind == ListenerKind::Smtps);
    if kind == ListenerKind::Smtps {
        match handshake(&live, kind, stream).await {
            Some((s, params)) => {
                stream = s;
                tls = Some(params);
            }
            None => return,
        }
    }
    let mut conn = Connection::new(ctx, live, peer, kind, tls);
    conn.dmarc = dmarc;
    if let Err(e) = conn.run(&mut stream).await {
        tracing::debug!(client = %peer, error = %e, "connection ended with an I/O error");
    }
    let _ = stream.shutdown().await;
}

async fn handshake(
    live: &Live,
    kind: ListenerKind,
    mut stream: Stream,
) -> Option<(Stream, TlsParams)> {
    let tcp = stream.take_plain()?;
    let acceptor = live.tls.as_ref()?;
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => {
            let params = crate::tls::describe(s.get_ref().1);
            Some((Stream::Tls(Box::new(s)), params))
        }
        Ok(Err(e)) => {
            tracing::info!(error = %e, "TLS handshake failed");
            crate::metrics::get().tls_failure(kind.as_str());
            None
        }
        Err(_) => {
            tracing::info!("TLS handshake timed out");
            crate::metrics::get().tls_failure(kind.as_str());
            None
        }
    }
}

struct Connection {
    ctx: Arc<ServerContext>,
    /// The configuration and plugins in force; refreshed at each MAIL FROM.
    live: Arc<Live>,
    peer: SocketAddr,
    kind: ListenerKind,
    session: Session,
    /// The plugins' view of the transaction in progress.
    txn: Option<pipeline::Transaction>,
    /// Queue id of the transaction in progress.
    id: String,
    /// The client is in a trusted network.
    trusted: bool,
    /// What a DMARC failure does on this listener.
    dmarc: DmarcMode,
    /// The verifier of the transaction in progress and its MAIL FROM checks, when the
    /// transaction is verified (an unauthenticated, untrusted client).
    checks: Option<(Arc<Authenticator>, SenderChecks)>,
}

fn wit_params(params: &[crate::session::Param]) -> Vec<wit::EsmtpParam> {
    params
        .iter()
        .map(|p| wit::EsmtpParam {
            keyword: p.keyword.clone(),
            value: p.value.clone(),
        })
        .collect()
}

fn wit_sender(s: &Sender) -> wit::Address {
    wit::Address {
        address: s.address.clone(),
        params: wit_params(&s.params),
    }
}

fn wit_recipient(r: &Recipient) -> wit::Address {
    wit::Address {
        address: r.address.clone(),
        params: wit_params(&r.params),
    }
}

impl Connection {
    fn new(
        ctx: Arc<ServerContext>,
        live: Arc<Live>,
        peer: SocketAddr,
        kind: ListenerKind,
        tls: Option<TlsParams>,
    ) -> Connection {
        let c = &live.config;
        let ip = peer.ip();
        let trusted = c.relay.trusted_networks.iter().any(|n| n.contains(&ip));
        let cfg = SessionConfig {
            hostname: c.server.hostname.clone(),
            listener: kind,
            tls_available: live.tls.is_some(),
            max_message_size: c.limits.max_message_size,
            max_recipients: c.limits.max_recipients,
            max_errors: c.limits.max_errors,
            max_auth_failures: c.limits.max_auth_failures,
            local_domains: c.relay.local_domains.clone(),
            trusted_client: trusted,
            plaintext_auth: c.auth.allow_plaintext_on_loopback && ip.is_loopback(),
            senders: c.auth.senders.clone(),
        };
        Connection {
            ctx,
            live,
            peer,
            kind,
            session: Session::new(cfg, tls),
            txn: None,
            id: String::new(),
            trusted,
            dmarc: DmarcMode::Record,
            checks: None,
        }
    }

    /// Writes the queued replies. A client that does not read them gets
    /// `command_timeout_secs` before it is dropped (its socket buffer full, a write blocks).
    async fn flush(&mut self, stream: &mut Stream) -> std::io::Result<()> {
        let out = self.session.take_output();
        if !out.is_empty() {
            let secs = self.live.config.limits.command_timeout_secs;
            let write = async {
                stream.write_all(&out).await?;
                stream.flush().await
            };
            match tokio::time::timeout(Duration::from_secs(secs), write).await {
                Ok(r) => r?,
                Err(_) => {
                    tracing::info!(client = %self.peer, "client does not read its replies; closing");
                    return Err(std::io::ErrorKind::TimedOut.into());
                }
            }
        }
        Ok(())
    }

    async fn run(&mut self, stream: &mut Stream) -> std::io::Result<()> {
        self.session.greet();
        let limits = self.live.config.limits.clone();
        let drain = Duration::from_secs(self.live.config.server.drain_timeout_secs);
        let mut shutdown = self.ctx.shutdown.subscribe();
        // Set when shutdown begins: sessions mid-transaction may finish until then.
        let mut drain_until: Option<tokio::time::Instant> = None;
        let mut buf = vec![0u8; 64 * 1024];
        let started = tokio::time::Instant::now();
        let end_of_life = started + Duration::from_secs(limits.max_session_secs);
        // The deadline of the command (or message data) being received: it runs from the end
        // of the previous one, so it bounds the whole command, however it is trickled in.
        let mut deadline = started;
        let mut progress = None;
        loop {
            match self.session.step() {
                Step::Read => {
                    if drain_until.is_none() && *shutdown.borrow() {
                        drain_until = Some(tokio::time::Instant::now() + drain);
                    }
                    if let Some(until) = drain_until
                        && (!self.session.in_transaction() || tokio::time::Instant::now() >= until)
                    {
                        if self.session.in_transaction() {
                            tracing::info!(client = %self.peer, id = %self.id, "drain timeout: closing mid-transaction; nothing of it was accepted");
                        }
                        self.session.shut_down();
                        continue;
                    }
                    self.flush(stream).await?;
                    let now = tokio::time::Instant::now();
                    let at = (self.session.completed(), self.session.in_data());
                    if progress != Some(at) {
                        progress = Some(at);
                        let secs = if at.1 {
                            limits.data_timeout_secs
                        } else {
                            limits.command_timeout_secs
                        };
                        deadline = now + Duration::from_secs(secs);
                    }
                    if now >= end_of_life {
                        tracing::info!(client = %self.peer, secs = limits.max_session_secs, "session lifetime reached; closing");
                        self.session
                            .close_with("Session too long, closing connection");
                        continue;
                    }
                    let mut timeout = deadline.min(end_of_life);
                    if let Some(until) = drain_until {
                        timeout = timeout.min(until);
                    }
                    let read = tokio::select! {
                        r = tokio::time::timeout_at(timeout, stream.read(&mut buf)) => r,
                        _ = shutdown.wait_for(|s| *s), if drain_until.is_none() => {
                            // Re-evaluate: idle sessions close now, others get the drain time.
                            continue;
                        }
                    };
                    if read.is_err() && drain_until.is_some() {
                        continue;
                    }
                    match read {
                        Ok(Ok(0)) => {
                            if self.session.in_data() {
                                tracing::info!(client = %self.peer, id = %self.id, "client disconnected during DATA; nothing was accepted");
                            }
                            return Ok(());
                        }
                        Ok(Ok(n)) => self.session.receive(&buf[..n]),
                        Ok(Err(e)) => return Err(e),
                        Err(_) => {
                            tracing::info!(client = %self.peer, "timeout; closing");
                            self.session.close_with("Timeout, closing connection");
                        }
                    }
                }
                Step::Close => {
                    self.flush(stream).await?;
                    return Ok(());
                }
                Step::Mail(sender) => {
                    self.id = spool::new_queue_id();
                    let info = wit::Session {
                        listener: self.kind.as_str().to_string(),
                        client_ip: self.peer.ip().to_string(),
                        client_port: self.peer.port(),
                        helo: self.session.helo().to_string(),
                        tls: self.session.tls().map(|t| wit::TlsInfo {
                            version: t.version.clone(),
                            cipher: t.cipher.clone(),
                        }),
                        auth_user: self.session.auth_user().map(str::to_string),
                        transaction_id: self.id.clone(),
                    };
                    // A new transaction runs with the plugins in force now.
                    let live = self.ctx.live();
                    let mut txn = live.pipeline.transaction(info);
                    // Mail from other servers is verified; our own users' mail is signed.
                    self.checks = None;
                    if live.auth.verifies() && self.session.auth_user().is_none() && !self.trusted {
                        let checks = live
                            .auth
                            .check_sender(self.peer.ip(), self.session.helo(), &sender.address)
                            .await;
                        let results = checks.results();
                        let m = crate::metrics::get();
                        for (check, c) in [
                            ("spf_helo", &results.spf_helo),
                            ("spf_mail_from", &results.spf_mail_from),
                        ] {
                            if let Some(c) = c {
                                m.authentication(check, c.verdict.as_str());
                            }
                        }
                        txn.set_authentication(Some(results));
                        self.checks = Some((live.auth.clone(), checks));
                    }
                    let decision = txn.verify_sender(&wit_sender(&sender)).await;
                    self.txn = Some(txn);
                    if matches!(
                        decision,
                        Decision::Reject { .. } | Decision::Tempfail { .. }
                    ) {
                        self.log_refusal("MAIL", &sender.address, &decision);
                    }
                    self.session.mail_decided(sender, &decision);
                }
                Step::Rcpt(rcpt) => {
                    let decision = match self.txn.as_mut() {
                        Some(txn) => {
                            let t = self.session.transaction();
                            let envelope = wit::Envelope {
                                sender: t.sender.as_ref().map(wit_sender).unwrap_or(wit::Address {
                                    address: String::new(),
                                    params: Vec::new(),
                                }),
                                recipients: t.recipients.iter().map(wit_recipient).collect(),
                            };
                            txn.check_recipient(&envelope, &wit_recipient(&rcpt)).await
                        }
                        None => Decision::Continue,
                    };
                    if matches!(
                        decision,
                        Decision::Reject { .. } | Decision::Tempfail { .. }
                    ) {
                        self.log_refusal("RCPT", &rcpt.address, &decision);
                    }
                    self.session.rcpt_decided(rcpt, &decision);
                }
                Step::Message(raw) => {
                    let reply = self.accept_message(raw).await;
                    self.session.message_done(&reply);
                    self.txn = None;
                }
                Step::Auth { user, password } => {
                    let limits = self.live.config.limits.clone();
                    let outcome =
                        check_password(&self.ctx, &limits, self.peer, &user, password).await;
                    self.session.auth_decided(user, outcome);
                }
                Step::StartTls => {
                    self.flush(stream).await?;
                    let plain = std::mem::replace(stream, Stream::Switching);
                    match handshake(&self.live, self.kind, plain).await {
                        Some((tls, params)) => {
                            *stream = tls;
                            self.txn = None;
                            self.session.tls_started(params);
                        }
                        None => return Ok(()),
                    }
                }
            }
        }
    }

    fn log_refusal(&self, stage: &str, address: &str, decision: &Decision) {
        if let Decision::Reject { reply } | Decision::Tempfail { reply } = decision {
            crate::metrics::get().refusal(stage, reply.code);
        }
        tracing::info!(id = %self.id, client = %self.peer, stage, address, decision = ?decision, "refused");
    }

    /// Runs `check-message`, applies its edits and spools the message; returns the reply.
    async fn accept_message(&mut self, raw: Vec<u8>) -> Reply {
        let t = self.session.transaction().clone();
        let Some(sender) = t.sender.clone() else {
            return Reply::new(503, "5.5.1", "Send MAIL first");
        };
        let envelope = wit::Envelope {
            sender: wit_sender(&sender),
            recipients: t.recipients.iter().map(wit_recipient).collect(),
        };
        let size = raw.len();
        let hops = message::count_fields(&raw, "Received");
        if hops >= self.live.config.limits.max_received {
            let reply = Reply::new(
                554,
                "5.4.6",
                &format!("Too many hops ({hops} Received fields): mail loop"),
            );
            tracing::info!(id = %self.id, client = %self.peer, hops, "refused: mail loop");
            crate::metrics::get().message("reject");
            return reply;
        }
        // DKIM and DMARC, before the plugins see the message (and instead of them, when the
        // listener enforces DMARC and the message fails it).
        let mut auth_results = None;
        let mut policy = None;
        if let Some((auth, checks)) = &self.checks {
            let results = auth.check_message(&raw, checks).await;
            let m = crate::metrics::get();
            for d in &results.dkim {
                m.authentication("dkim", d.verdict.as_str());
            }
            if let Some(d) = &results.dmarc {
                m.authentication("dmarc", d.verdict.as_str());
            }
            policy = crate::authentication::policy_decision(self.dmarc, &results);
            if let Some(txn) = self.txn.as_mut() {
                txn.set_authentication(Some(results.clone()));
            }
            auth_results = Some(results);
        }
        let msg = pipeline::message(raw);
        let (outcome, calls) = match (self.txn.as_mut(), &policy) {
            (Some(txn), None) => {
                let o = txn.check_message(&envelope, &msg).await;
                (Some(o), txn.take_calls())
            }
            (Some(txn), Some(_)) => (None, txn.take_calls()),
            (None, _) => (None, Vec::new()),
        };
        let raw = msg.raw;
        // Each plugin call of the transaction: `plugin:hook:verdict`, with the plugin's score
        // when it gave symbols, and `!failure` when it failed.
        let verdicts: Vec<String> = calls
            .iter()
            .map(|c| {
                let mut v = format!("{}:{}:{}", c.plugin, c.hook, action_name(&c.decision));
                if c.hook == crate::plugin::Hook::CheckMessage
                    && let Some(o) = &outcome
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
        let decision = policy
            .clone()
            .or_else(|| outcome.as_ref().map(|o| o.decision.clone()))
            .unwrap_or(Decision::Continue);
        let auth_summary = auth_results
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
        let score = outcome.as_ref().map(|o| o.score).unwrap_or(0.0);
        let rcpts: Vec<&str> = t.recipients.iter().map(|r| r.address.as_str()).collect();
        let log = |disposition: &str, reply: &Reply| {
            crate::metrics::get().message(disposition);
            tracing::info!(
                id = %self.id,
                client = %self.peer,
                from = %sender.address,
                to = %rcpts.join(","),
                size,
                score = %format_args!("{score:.2}"),
                plugins = %verdicts.join(" "),
                auth = %auth_summary,
                disposition,
                reply = %reply,
                "message"
            );
        };
        let reply = match &decision {
            Decision::Reject { reply } | Decision::Tempfail { reply } => {
                log(action_name(&decision), reply);
                return reply.clone();
            }
            _ => Reply::new(250, "2.0.0", &format!("Ok: queued as {}", self.id)),
        };
        let deliver_to: Vec<Recipient> = t
            .recipients
            .iter()
            .filter(|r| !r.discarded)
            .cloned()
            .collect();
        if matches!(decision, Decision::Discard) || t.discard || deliver_to.is_empty() {
            log("discarded", &reply);
            return reply;
        }
        let quarantine = match &decision {
            Decision::Quarantine { reason } => Some(reason.clone()),
            _ => t.quarantine.clone(),
        };
        let received = message::received(&message::ReceivedInfo {
            helo: self.session.helo(),
            client_ip: &self.peer.ip().to_string(),
            hostname: &self.live.config.server.hostname,
            esmtp: self.session.esmtp(),
            tls: self
                .session
                .tls()
                .map(|t| (t.version.as_str(), t.cipher.as_str())),
            auth_user: self.session.auth_user(),
            id: &self.id,
            for_rcpt: (deliver_to.len() == 1).then(|| deliver_to[0].address.as_str()),
            date: &message::now_rfc5322(),
        });
        let mut prepend = vec![received];
        if let Some(r) = auth_results.as_ref().filter(|r| !r.header.is_empty()) {
            prepend.push(r.header.clone());
        }
        let (adds, removes) = outcome
            .map(|o| (o.add_headers, o.remove_headers))
            .unwrap_or_default();
        prepend.extend(adds.iter().map(|(n, v)| message::field(n, v)));
        // An Authentication-Results field that claims to be ours but came from outside is
        // forged (RFC 8601 §5): it goes, whoever the client.
        let hostname = &self.live.config.server.hostname;
        let raw = message::remove_auth_results_of(&raw, hostname);
        let mut final_message = message::finalize(&raw, &prepend, &removes);
        // Our own users' mail is signed last, so the signature covers every edit.
        // The signing domain is the header From's, and an authenticated user's message is
        // signed only when that From is theirs (a trusted network's mail is the operator's).
        if self.session.auth_user().is_some() || self.trusted {
            let config = &self.live.config;
            let user = self.session.auth_user();
            let may_send_as = |from: &str| {
                user.is_none_or(|u| {
                    crate::session::address::sender_allowed(
                        u,
                        from,
                        config.auth.senders.get(u),
                        &config.relay.local_domains,
                    )
                })
            };
            match self.ctx.live().auth.sign(&final_message, may_send_as) {
                Some(Ok(field)) => final_message = [field.as_bytes(), &final_message].concat(),
                Some(Err(e @ (SignRefusal::NotOwned(_) | SignRefusal::NoSingleFrom)))
                    if config.authentication.unowned_from == UnownedFrom::Refuse =>
                {
                    let reply = Reply::new(
                        550,
                        "5.7.1",
                        &format!("Message refused: {}", message::printable(&e.to_string())),
                    );
                    log("reject", &reply);
                    return reply;
                }
                Some(Err(e)) => {
                    tracing::warn!(id = %self.id, error = %message::printable(&e.to_string()), "not DKIM-signed; sent unsigned");
                }
                None => {}
            }
        }
        let envelope = SpooledEnvelope {
            id: self.id.clone(),
            received_at: chrono::Utc::now().to_rfc3339(),
            sender: sender.clone(),
            recipients: deliver_to,
            client_ip: self.peer.ip().to_string(),
            helo: self.session.helo().to_string(),
            listener: self.kind.as_str().to_string(),
            auth_user: self.session.auth_user().map(str::to_string),
            quarantine: quarantine.clone(),
        };
        let state = if quarantine.is_some() {
            SpoolState::Quarantine
        } else {
            SpoolState::Queue
        };
        match self.ctx.spool.store(state, &envelope, &final_message).await {
            Ok(()) => {
                log(
                    if quarantine.is_some() {
                        "quarantined"
                    } else {
                        "queued"
                    },
                    &reply,
                );
                self.ctx.delivery_wakeup.notify_one();
                reply
            }
            Err(e) if e.is_full() => {
                tracing::error!(id = %self.id, error = %e, "the spool is full; answering 452");
                let reply = Reply::new(
                    452,
                    "4.3.1",
                    "Insufficient system storage: message not accepted, please try again later",
                );
                log("spool-failed", &reply);
                reply
            }
            Err(e) => {
                tracing::error!(id = %self.id, error = %e, "cannot spool the message; answering 451");
                let reply = Reply::new(
                    451,
                    "4.3.0",
                    "Local error: message not accepted, please try again later",
                );
                log("spool-failed", &reply);
                reply
            }
        }
    }
}

/// Checks AUTH credentials under the cross-connection throttle: a client (IPv6: its
/// prefix) or user name with too many recent failures is answered 454 unchecked, each
/// failure delays the answer more, and hashing waits for a slot.
async fn check_password(
    ctx: &ServerContext,
    limits: &crate::config::LimitsConfig,
    peer: SocketAddr,
    user: &str,
    password: String,
) -> AuthOutcome {
    let client = client_key(peer.ip(), limits.ipv6_prefix_len);
    let window = Duration::from_secs(limits.auth_lockout_secs);
    let logins = &ctx.logins;
    if logins.admit(client, user, limits.auth_lockout_failures, window) == Admission::LockedOut {
        tracing::info!(client = %peer, user = %crate::message::printable(user), "AUTH refused: too many recent failures");
        // The same delay as a failure, so a locked-out guesser gains no speed.
        tokio::time::sleep(logins.failed(client, user, window)).await;
        return AuthOutcome::Throttled;
    }
    let ok = {
        let _slot = logins.hashing_slot().await;
        let creds = ctx.credentials.current();
        let u = user.to_string();
        tokio::task::spawn_blocking(move || creds.verify(&u, &password))
            .await
            .unwrap_or(false)
    };
    if ok {
        logins.succeeded(client);
        return AuthOutcome::Accepted;
    }
    tracing::info!(client = %peer, user = %crate::message::printable(user), "AUTH failed");
    tokio::time::sleep(logins.failed(client, user, window)).await;
    AuthOutcome::Refused
}
