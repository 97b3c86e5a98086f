//! The listeners: bind every configured address, accept connections under the connection
//! limits, and hand each to [`crate::smtp::connection::serve`] in its own task. Also starts the
//! queue runner, the plugin-directory watcher and the metrics endpoint.
//! [`Server::start`] is what `sluice serve` and the integration tests run.
//!
//! What they share, and what a reload swaps, is in [`crate::server::context`].
//!
//! May use: every front end and service it starts (SMTP, milter, delivery, admin endpoints, the
//! plugin watcher) and the configuration. Nothing but the binary and the tests start it.

mod acme;
pub mod context;
mod lifetime;
pub mod reload;
mod reports;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::config::ListenerKind;
use crate::server::context::ServerContext;

/// A running server.
pub struct Server {
    /// The bound listeners (with the real port when 0 was configured).
    pub listeners: Vec<(ListenerKind, SocketAddr)>,
    /// The Unix sockets listened on (milter).
    pub sockets: Vec<std::path::PathBuf>,
    /// The metrics endpoint, when configured.
    pub metrics: Option<SocketAddr>,
    /// The web console, when configured.
    pub admin: Option<SocketAddr>,
    ctx: Arc<ServerContext>,
    accepting: JoinSet<()>,
    background: JoinSet<()>,
    runner: Option<tokio::task::JoinHandle<()>>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {address} ({kind}): {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The listener kind.
        kind: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// A Unix socket could not be bound.
    #[error("cannot listen on {} (milter): {source}", .path.display())]
    BindUnix {
        /// The socket path.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The webhook's backlog could not be opened.
    #[error("webhook: {0}")]
    Webhook(std::io::Error),
}

/// Connection counts per client, released when a connection ends: per IPv4 address, per IPv6
/// prefix (`limits.ipv6_prefix_len`).
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

impl PerIp {
    fn try_take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot(self.clone(), ip))
    }
}

struct IpSlot(Arc<PerIp>, IpAddr);

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = (self.0).0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.1);
            }
        }
    }
}

impl Server {
    /// Binds every listener and starts accepting; starts the queue runner, the plugin
    /// directory watcher and the metrics endpoint.
    pub async fn start(ctx: Arc<ServerContext>) -> Result<Server, StartError> {
        let mut accepting = JoinSet::new();
        let mut background = JoinSet::new();
        let mut bound = Vec::new();
        let mut unix = Vec::new();
        let live = ctx.live();
        let config = &live.config;
        let total = Arc::new(Semaphore::new(config.limits.max_connections));
        let per_ip = Arc::new(PerIp::default());
        let bind = |address: SocketAddr, kind: &'static str| async move {
            let listener = if kind == ListenerKind::Milter.as_str() {
                crate::milter::bind_tcp(address)
            } else {
                TcpListener::bind(address).await
            }
            .map_err(|source| StartError::Bind {
                address,
                kind,
                source,
            })?;
            let addr = listener.local_addr().map_err(|source| StartError::Bind {
                address,
                kind,
                source,
            })?;
            Ok::<_, StartError>((listener, addr))
        };
        for l in config.effective_listeners() {
            if let Some(path) = &l.socket {
                // Validation allows a socket for milter listeners only.
                let listener =
                    crate::milter::bind_unix(path, l.socket_mode.as_deref()).map_err(|source| {
                        StartError::BindUnix {
                            path: path.clone(),
                            source,
                        }
                    })?;
                unix.push(path.clone());
                accepting.spawn(crate::milter::accept_loop_unix(
                    ctx.clone(),
                    listener,
                    l.dmarc,
                    total.clone(),
                ));
                continue;
            }
            let Some(address) = l.address else {
                continue;
            };
            if l.kind == ListenerKind::Smtps && live.tls.is_none() {
                tracing::warn!(%address, "smtps listener skipped: no TLS certificate");
                continue;
            }
            let (listener, addr) = bind(address, l.kind.as_str()).await?;
            bound.push((l.kind, addr));
            if l.kind == ListenerKind::Milter {
                accepting.spawn(crate::milter::accept_loop(
                    ctx.clone(),
                    listener,
                    l.dmarc,
                    l.peers_allowed(),
                    total.clone(),
                ));
                continue;
            }
            let proxy = l.proxy_protocol.then(|| Proxy {
                trusted: l.proxy_trusted.clone(),
                timeout: Duration::from_secs(l.proxy_timeout_secs),
            });
            accepting.spawn(accept_loop(
                ctx.clone(),
                listener,
                (l.kind, l.dmarc, proxy),
                total.clone(),
                per_ip.clone(),
            ));
        }
        let mut metrics = None;
        if let Some(address) = config.metrics.address {
            let (listener, addr) = bind(address, "metrics").await?;
            metrics = Some(addr);
            background.spawn(crate::admin::http::serve(ctx.clone(), listener));
        }
        let mut admin = None;
        if let Some(address) = config.admin.address {
            let (listener, addr) = bind(address, "admin").await?;
            admin = Some(addr);
            background.spawn(crate::admin::console::serve(ctx.clone(), listener));
        }
        if config.plugins.watch {
            background.spawn(crate::server::reload::watch(ctx.clone()));
        }
        // Events out, from a backlog on disk.
        if let Some(w) = &config.webhook {
            let sender = crate::admin::webhook::install(w, &config.server.data_dir)
                .map_err(StartError::Webhook)?;
            background.spawn(sender);
        }
        // The console's counts, charts and transactions survive a restart.
        let journal = crate::admin::journal::file(&config.server.data_dir);
        crate::admin::journal::load(&journal);
        background.spawn(save_journal_every_minute(journal));
        background.spawn(crate::server::reload::certificates(ctx.clone()));
        // The ACME certificate, and the CA's checks on addresses of their own.
        background.spawn(acme::keep_current(ctx.clone()));
        if let Some(a) = &config.tls.acme {
            if let Some(address) = a.http_listen {
                let (listener, addr) = bind(address, "acme-http").await?;
                tracing::info!(address = %addr, "answering ACME HTTP-01 checks");
                background.spawn(acme::answer_http(ctx.clone(), listener));
            }
            if let Some(address) = a.tls_alpn_listen {
                let (listener, addr) = bind(address, "acme-tls-alpn").await?;
                tracing::info!(address = %addr, "answering ACME TLS-ALPN-01 checks");
                background.spawn(acme::answer_tls_alpn(ctx.clone(), listener));
            }
        }
        // What mail users hand over for the spam filter is collected here, by Sluice's own
        // account (crate::spam_learning).
        if crate::spam_learning::learned_path(config).is_some() {
            background.spawn(crate::spam_learning::collect_loop(
                ctx.clone(),
                ctx.shutdown.subscribe(),
            ));
        }
        // A fleet shares what its users taught the spam filter (crate::spam_learning).
        if let (Some(kv @ crate::store::KvStore::Redis(_)), Some(learned)) = (
            ctx.runtime.services.kv.clone(),
            crate::spam_learning::learned_path(config),
        ) {
            background.spawn(crate::spam_learning::sync(
                kv,
                learned,
                ctx.shutdown.subscribe(),
            ));
        }
        let runner = crate::delivery::runner::Runner::new(
            ctx.spool.clone(),
            config.clone(),
            live.pipeline.clone(),
        )
        .following(ctx.live.clone())
        .hearing(ctx.arrivals.clone())
        .listening_on(bound.iter().map(|(_, a)| *a).collect());
        // A fleet that shares a store shares each destination's rate too.
        let runner = match ctx.runtime.services.kv.clone() {
            Some(kv @ crate::store::KvStore::Redis(_)) => runner.sharing_rates(kv),
            _ => runner,
        };
        // TLS reports (RFC 8460): the runner counts; DMARC reports: the sender checks count
        // (ctx.dmarc_reports); a task of its own sends both.
        let tls_reports = config.reports.tls.then(|| {
            Arc::new(crate::delivery::tls_report::TlsReports::open(
                config.server.data_dir.join("tls-reports"),
            ))
        });
        let runner = match &tls_reports {
            Some(r) => runner.reporting_tls(r.clone()),
            None => runner,
        };
        if tls_reports.is_some() || ctx.dmarc_reports.is_some() {
            background.spawn(reports::send_reports(
                ctx.clone(),
                reports::Counts {
                    tls: tls_reports,
                    dmarc: ctx.dmarc_reports.clone(),
                },
            ));
        }
        let runner = tokio::spawn(runner.run(
            ctx.delivery_wakeup.clone(),
            ctx.queue_changed.clone(),
            ctx.shutdown.subscribe(),
        ));
        Ok(Server {
            listeners: bound,
            sockets: unix,
            metrics,
            admin,
            ctx,
            accepting,
            background,
            runner: Some(runner),
        })
    }

    /// The first bound address of a listener kind.
    pub fn address(&self, kind: ListenerKind) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, a)| *a)
    }

    /// The shared context (for reloads and tests).
    pub fn context(&self) -> &Arc<ServerContext> {
        &self.ctx
    }

    /// Writes the console's journal to the data directory.
    fn save_journal(&self) {
        let file = crate::admin::journal::file(&self.ctx.live().config.server.data_dir);
        if let Err(e) = crate::admin::journal::save(&file) {
            tracing::warn!(file = %file.display(), error = %e, "cannot save the console's counts");
        }
    }

    /// Stops at once: every task ends, connections in progress are dropped. Nothing
    /// acknowledged is lost (a 250 follows the flush to disk), but clients mid-transaction
    /// see the connection close. [`Server::shutdown`] is the graceful way.
    pub async fn stop(mut self) {
        let _ = self.ctx.shutdown.send(true);
        self.accepting.shutdown().await;
        self.background.shutdown().await;
        if let Some(r) = self.runner.take() {
            r.abort();
            let _ = r.await;
        }
        self.save_journal();
    }

    /// Graceful shutdown: stop accepting, let sessions finish their transactions (idle ones
    /// are told `421 4.3.2` at once), let the delivery pass in progress finish, all within
    /// `drain`; then answer `421` to what is still mid-transaction (it was never
    /// acknowledged, so the client retries) and stop. Deliveries cut off are retried after
    /// restart from their last recorded state.
    pub async fn shutdown(mut self, drain: Duration) {
        tracing::info!(
            drain_secs = drain.as_secs(),
            "shutting down: no new connections; draining sessions and deliveries"
        );
        let _ = self.ctx.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + drain + Duration::from_secs(2);
        // Each accept loop stops accepting at once and returns when its sessions are done
        // (they enforce the drain timeout themselves).
        while tokio::time::timeout_at(deadline, self.accepting.join_next())
            .await
            .ok()
            .flatten()
            .is_some()
        {}
        self.accepting.shutdown().await;
        if let Some(mut r) = self.runner.take()
            && tokio::time::timeout_at(deadline, &mut r).await.is_err()
        {
            tracing::warn!(
                "delivery still in progress at the drain timeout; it resumes after restart"
            );
            r.abort();
            let _ = r.await;
        }
        self.background.shutdown().await;
        self.save_journal();
        tracing::info!("shutdown complete");
    }
}

/// Saves the console's journal to `file` every minute, until the task is dropped.
async fn save_journal_every_minute(file: std::path::PathBuf) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
    every.tick().await;
    loop {
        every.tick().await;
        let f = file.clone();
        let saved = tokio::task::spawn_blocking(move || crate::admin::journal::save(&f)).await;
        if let Ok(Err(e)) = saved {
            tracing::warn!(file = %file.display(), error = %e, "cannot save the console's counts");
        }
    }
}

/// A listener's PROXY protocol settings: who may send the header, and how long it may take.
#[derive(Clone)]
struct Proxy {
    trusted: Vec<ipnet::IpNet>,
    timeout: Duration,
}

async fn accept_loop(
    ctx: Arc<ServerContext>,
    listener: TcpListener,
    (kind, dmarc, proxy): (ListenerKind, crate::config::DmarcMode, Option<Proxy>),
    total: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
) {
    let mut connections = JoinSet::new();
    let mut shutdown = ctx.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let ctx = ctx.clone();
        let (total, per_ip, proxy) = (total.clone(), per_ip.clone(), proxy.clone());
        if proxy
            .as_ref()
            .is_some_and(|p| !p.trusted.iter().any(|n| n.contains(&peer.ip())))
        {
            // Only the balancers may say who a client is: anyone else is closed at once (the
            // refusal's log line names the client and the reason).
            refused_at_connect(peer.ip(), kind, "proxy-untrusted", None);
            continue;
        }
        connections.spawn(async move {
            let Some(permit) = total.try_acquire_owned().ok() else {
                return too_many(&ctx, tcp, peer.ip(), kind).await;
            };
            let mut tcp = tcp;
            let client = match &proxy {
                None => peer,
                Some(p) => match crate::smtp::proxy::read(&mut tcp, p.timeout).await {
                    Ok(crate::smtp::proxy::Proxied::Client(client)) => client,
                    Ok(crate::smtp::proxy::Proxied::Local) => peer,
                    Err(e) => {
                        tracing::warn!(proxy = %peer, listener = kind.as_str(), "connection closed: {e}");
                        refused_at_connect(peer.ip(), kind, "proxy-header", None);
                        return;
                    }
                },
            };
            let limits = &ctx.live().config.limits;
            let key =
                crate::smtp_auth::login_throttle::client_key(client.ip(), limits.ipv6_prefix_len);
            let Some(slot) = per_ip.try_take(key, limits.max_connections_per_ip) else {
                return too_many(&ctx, tcp, client.ip(), kind).await;
            };
            crate::smtp::connection::serve(ctx, tcp, client, kind, dmarc).await;
            drop(slot);
            drop(permit);
        });
    }
    // Stop listening now; the sessions in progress end on their own (see `connection`).
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Journals and logs a connection refused before the session began.
fn refused_at_connect(
    client: IpAddr,
    kind: ListenerKind,
    reason: &'static str,
    reply: Option<&crate::smtp::reply::Reply>,
) {
    crate::admin::decisions::refused(&crate::admin::decisions::Refusal {
        client: Some(client),
        listener: kind.as_str(),
        stage: "CONNECT",
        reason,
        reply,
        ..Default::default()
    });
}

/// Answers 421 to a connection over the total or per-client limit, and closes it.
async fn too_many(
    ctx: &ServerContext,
    mut tcp: tokio::net::TcpStream,
    client: IpAddr,
    kind: ListenerKind,
) {
    let host = ctx.live().config.server.hostname.clone();
    let reply = crate::smtp::reply::Reply::new(
        421,
        "4.7.0",
        &format!("{host} Too many connections, try again later"),
    );
    refused_at_connect(client, kind, "connection-limit", Some(&reply));
    let _ = tcp.write_all(format!("{reply}\r\n").as_bytes()).await;
    let _ = tcp.shutdown().await;
}
