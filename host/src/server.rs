//! The listeners: bind every configured address, accept connections under the connection
//! limits, and hand each to [`crate::connection::serve`] in its own task. Also starts the
//! queue runner. [`Server::start`] is what `sluice serve` and the integration tests run.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use crate::config::{Config, ListenerKind};
use crate::credentials::CredentialsFile;
use crate::pipeline::Pipeline;
use crate::spool::Spool;

/// What every connection shares.
pub struct ServerContext {
    /// The configuration in force.
    pub config: Config,
    /// The plugins.
    pub pipeline: Pipeline,
    /// Where accepted mail goes.
    pub spool: Spool,
    /// AUTH users.
    pub credentials: Arc<CredentialsFile>,
    /// TLS, when a certificate is available.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Wakes the queue runner when a message was spooled.
    pub delivery_wakeup: Arc<Notify>,
}

/// A running server.
pub struct Server {
    /// The bound listeners (with the real port when 0 was configured).
    pub listeners: Vec<(ListenerKind, SocketAddr)>,
    tasks: JoinSet<()>,
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
}

/// Connection counts per client IP, released when a connection ends.
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
    /// Binds every listener and starts accepting; starts the queue runner.
    pub async fn start(ctx: Arc<ServerContext>) -> Result<Server, StartError> {
        let mut tasks = JoinSet::new();
        let mut bound = Vec::new();
        let total = Arc::new(Semaphore::new(ctx.config.limits.max_connections));
        let per_ip = Arc::new(PerIp::default());
        for l in ctx.config.effective_listeners() {
            if l.kind == ListenerKind::Smtps && ctx.tls.is_none() {
                tracing::warn!(address = %l.address, "smtps listener skipped: no TLS certificate");
                continue;
            }
            let listener =
                TcpListener::bind(l.address)
                    .await
                    .map_err(|source| StartError::Bind {
                        address: l.address,
                        kind: l.kind.as_str(),
                        source,
                    })?;
            let addr = listener.local_addr().map_err(|source| StartError::Bind {
                address: l.address,
                kind: l.kind.as_str(),
                source,
            })?;
            bound.push((l.kind, addr));
            tasks.spawn(accept_loop(
                ctx.clone(),
                listener,
                l.kind,
                total.clone(),
                per_ip.clone(),
            ));
        }
        let runner = crate::delivery::runner::Runner::new(
            ctx.spool.clone(),
            ctx.config.clone(),
            ctx.pipeline.clone(),
        );
        tasks.spawn(runner.run(ctx.delivery_wakeup.clone()));
        Ok(Server {
            listeners: bound,
            tasks,
        })
    }

    /// The first bound address of a listener kind.
    pub fn address(&self, kind: ListenerKind) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, a)| *a)
    }

    /// Stops accepting and ends every task (connections in progress are dropped).
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

async fn accept_loop(
    ctx: Arc<ServerContext>,
    listener: TcpListener,
    kind: ListenerKind,
    total: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
) {
    let mut connections = JoinSet::new();
    loop {
        let (mut tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let limits = &ctx.config.limits;
        let permit = total.clone().try_acquire_owned().ok();
        let slot = per_ip.try_take(peer.ip(), limits.max_connections_per_ip);
        let (Some(permit), Some(slot)) = (permit, slot) else {
            tracing::info!(client = %peer, "connection limit reached; refusing");
            let host = ctx.config.server.hostname.clone();
            connections.spawn(async move {
                let msg = format!("421 4.7.0 {host} Too many connections, try again later\r\n");
                let _ = tcp.write_all(msg.as_bytes()).await;
                let _ = tcp.shutdown().await;
            });
            continue;
        };
        let ctx = ctx.clone();
        connections.spawn(async move {
            crate::connection::serve(ctx, tcp, peer, kind).await;
            drop(slot);
            drop(permit);
        });
    }
}

/// Loads everything a server needs from `config` (spool, credentials, certificate) — the
/// plugins are loaded by the caller, who reports their errors.
pub fn context(config: Config, pipeline: Pipeline) -> anyhow::Result<ServerContext> {
    let spool = Spool::open(&config.server.data_dir.join("spool"))?;
    let credentials = CredentialsFile::open(&config.users_file())?;
    let tls = crate::tls::server_config(&config)?;
    Ok(ServerContext {
        config,
        pipeline,
        spool,
        credentials: Arc::new(credentials),
        tls: Some(tokio_rustls::TlsAcceptor::from(tls)),
        delivery_wakeup: Arc::new(Notify::new()),
    })
}
