//! One client connection: the SMTP front end of the [`crate::inbound`] core. It reads and
//! writes the socket, feeds bytes to the [`Session`], performs each [`Step`] the session asks
//! for — envelope and message decisions by the inbound core, password checks, the STARTTLS
//! switch — and writes replies. It holds no acceptance policy.
//! Timeouts (RFC 5321 §4.5.3.2) are enforced here; a stalled client only holds its own task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::DmarcMode;
use crate::config::ListenerKind;
use crate::envelope::{Decision, TlsParams};
use crate::inbound::{Client, FrontEnd, Inbound};
use crate::server::context::{Live, ServerContext};
use crate::smtp::reply::Reply;
use crate::smtp::session::{AuthOutcome, Session, SessionConfig, Step};
use crate::smtp_auth::login_throttle::{Admission, client_key};
use crate::spool;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The socket, before or after TLS.
type Stream = crate::tls::stream::MaybeTls<tokio_rustls::server::TlsStream<TcpStream>>;

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
    crate::admin::metrics::get().connection(kind.as_str(), kind == ListenerKind::Smtps);
    if kind == ListenerKind::Smtps {
        match handshake(&live, &ctx.acme, kind, stream).await {
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
    acme: &crate::tls::acme::Challenges,
    kind: ListenerKind,
    mut stream: Stream,
) -> Option<(Stream, TlsParams)> {
    let tcp = stream.take_plain()?;
    let config = live.tls.as_ref()?.config().clone();
    let accept = crate::tls::acme::challenges::accept(tcp, config, acme);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
        Ok(Ok(None)) => {
            tracing::info!("answered the ACME CA's TLS-ALPN-01 check");
            None
        }
        Ok(Ok(Some(s))) => {
            let params = crate::tls::describe(s.get_ref().1);
            Some((Stream::Tls(Box::new(s)), params))
        }
        Ok(Err(e)) => {
            tracing::info!(error = %e, "TLS handshake failed");
            crate::admin::metrics::get().tls_failure(kind.as_str());
            None
        }
        Err(_) => {
            tracing::info!("TLS handshake timed out");
            crate::admin::metrics::get().tls_failure(kind.as_str());
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
    /// The transaction in progress, decided by the inbound core.
    txn: Option<Inbound>,
    /// Queue id of the transaction in progress (for log lines).
    id: String,
    /// The client is in a trusted network.
    trusted: bool,
    /// What a DMARC failure does on this listener.
    dmarc: DmarcMode,
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
        let trusted = crate::inbound::rules::trusted(&c.relay.trusted_networks, ip);
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
        }
    }

    /// The client's facts for the inbound core.
    fn client(&self) -> Client {
        Client {
            listener: self.kind.as_str().to_string(),
            ip: self.peer.ip(),
            port: self.peer.port(),
            helo: self.session.helo().to_string(),
            esmtp: self.session.esmtp(),
            tls: self.session.tls().cloned(),
            auth_user: self.session.auth_user().map(str::to_string),
            trusted: self.trusted,
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
            let step = self.session.step();
            self.log_refused();
            match step {
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
                    // A new transaction runs with the configuration and plugins in force now.
                    let live = self.ctx.live();
                    let front = FrontEnd {
                        dmarc: self.dmarc,
                        writes_received: true,
                        verify: live.verifier.verifies(),
                        relay_control: true,
                    };
                    let client = self.client();
                    let (txn, decision) =
                        Inbound::mail(live, client, front, self.id.clone(), sender.clone()).await;
                    self.txn = Some(txn);
                    self.session.mail_decided(sender, &decision);
                }
                Step::Rcpt(rcpt) => {
                    let decision = match self.txn.as_mut() {
                        Some(txn) => txn.rcpt(rcpt.clone()).await,
                        None => Decision::Continue,
                    };
                    self.session.rcpt_decided(rcpt, &decision);
                }
                Step::Message(raw) => {
                    let reply = match self.txn.as_mut() {
                        Some(txn) => {
                            let d = txn.message(raw).await;
                            let reply = txn.spool(d, &self.ctx.spool).await;
                            if reply.code / 100 == 2 {
                                self.ctx.arrivals.add(txn.id());
                                self.ctx.delivery_wakeup.notify_one();
                            }
                            reply
                        }
                        None => Reply::new(503, "5.5.1", "Send MAIL first"),
                    };
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
                    match handshake(&self.live, &self.ctx.acme, self.kind, plain).await {
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
}

impl Connection {
    /// Logs the refusals the session made itself since the last step.
    fn log_refused(&mut self) {
        for r in self.session.take_refused() {
            crate::admin::decisions::refused(&crate::admin::decisions::Refusal {
                id: if r.sender.is_some() { &self.id } else { "" },
                client: Some(self.peer.ip()),
                listener: self.kind.as_str(),
                helo: self.session.helo(),
                user: self.session.auth_user(),
                stage: r.stage,
                reason: r.reason,
                sender: r.sender.as_deref(),
                recipients: &r.recipients,
                recipient: r.recipient.as_deref(),
                reply: Some(&r.reply),
                plugin: None,
            });
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
        tracing::info!(client = %peer, user = %crate::inbound::message::printable(user), "AUTH refused: too many recent failures");
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
        logins.succeeded(client, user);
        return AuthOutcome::Accepted;
    }
    tracing::info!(client = %peer, user = %crate::inbound::message::printable(user), "AUTH failed");
    tokio::time::sleep(logins.failed(client, user, window)).await;
    AuthOutcome::Refused
}
