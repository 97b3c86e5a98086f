//! The operator's metrics endpoint (`[metrics] address`), on axum: `GET /metrics` (Prometheus
//! text format), `GET /healthz` (200 `ok`, or 503 while shutting down) and `GET /plugins` (the
//! plugins in service, as JSON, for `sluice plugin list --server`; only with `[metrics]
//! plugins = true`). A request naming another host is refused ([`HostCheck`]), and one client
//! address holds at most a quarter of the connections. The console
//! ([`crate::admin::console`], `[admin] address`) serves `/metrics` and `/healthz` too, from here.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::server::context::ServerContext;
use crate::spool::SpoolState;

/// The Prometheus text, with the spool's sizes counted now.
pub async fn metrics(ctx: &ServerContext) -> Response {
    let m = crate::admin::metrics::get();
    // Listing the spool reads directories: on a blocking thread, not an async worker that SMTP
    // sessions and plugin calls share.
    let spool = ctx.spool.clone();
    let counts = tokio::task::spawn_blocking(move || {
        [
            (SpoolState::Queue, "queue"),
            (SpoolState::Quarantine, "quarantine"),
        ]
        .map(|(state, name)| (name, spool.list(state).map(|ids| ids.len())))
    })
    .await;
    for (name, count) in counts.into_iter().flatten() {
        if let Ok(n) = count {
            m.spool(name, n);
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
        .into_response()
}

/// 200 `ok`, or 503 while shutting down.
pub fn healthz(ctx: &ServerContext) -> Response {
    if ctx.shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

/// The plugins in service, as JSON.
pub fn plugins(ctx: &ServerContext) -> Response {
    let rows = ctx.live().pipeline.describe();
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string_pretty(&rows).unwrap_or_default(),
    )
        .into_response()
}

/// The metrics endpoint's routes.
pub fn router(ctx: Arc<ServerContext>) -> Router {
    let config = ctx.live().config.clone();
    let check = HostCheck::new(&config.server.hostname, &config.metrics.allowed_hosts);
    Router::new()
        .route(
            "/metrics",
            get(|State(c): State<Arc<ServerContext>>| async move { metrics(&c).await }),
        )
        .route(
            "/healthz",
            get(|State(c): State<Arc<ServerContext>>| async move { healthz(&c) }),
        )
        .route(
            "/plugins",
            get(|State(c): State<Arc<ServerContext>>| async move {
                if c.live().config.metrics.plugins {
                    plugins(&c)
                } else {
                    (
                        StatusCode::NOT_FOUND,
                        "/plugins is off: set [metrics] plugins = true to serve it\n",
                    )
                        .into_response()
                }
            }),
        )
        .layer(axum::middleware::from_fn_with_state(check, check_host))
        .with_state(ctx)
}

/// The host names a request's `Host` may give, against DNS rebinding: a page on another
/// site whose name was made to resolve to this address would reach the endpoint with that
/// name in `Host`. IP literals are always fine (rebinding needs a name), and so are
/// `localhost`, `server.hostname` and the names configured.
#[derive(Clone)]
pub struct HostCheck {
    names: Arc<Vec<String>>,
}

impl HostCheck {
    /// `server.hostname` and `extra` (`allowed_hosts`), with `localhost`.
    pub fn new(hostname: &str, extra: &[String]) -> HostCheck {
        let mut names: Vec<String> = extra.iter().map(|n| n.to_ascii_lowercase()).collect();
        names.push(hostname.to_ascii_lowercase());
        names.push("localhost".to_string());
        HostCheck {
            names: Arc::new(names),
        }
    }

    /// Whether a `Host` value names this server.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        let name = match host.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or_default(),
            None => match host.rsplit_once(':') {
                Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
                _ => host.as_str(),
            },
        };
        let name = name.trim_end_matches('.');
        name.parse::<std::net::IpAddr>().is_ok() || self.names.iter().any(|n| n == name)
    }
}

/// Refuses (421) a request whose `Host` names another server.
pub async fn check_host(
    State(check): State<HostCheck>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let allowed = match req.headers().get(header::HOST) {
        // HTTP/1.0 without Host: not a browser, so not rebinding.
        None => true,
        Some(h) => h.to_str().is_ok_and(|h| check.allows(h)),
    };
    if allowed {
        next.run(req).await
    } else {
        (
            StatusCode::MISDIRECTED_REQUEST,
            "this server does not answer to that host name (see allowed_hosts)\n",
        )
            .into_response()
    }
}

/// Connections the metrics endpoint serves at once; more wait in the listen queue (a client
/// opening thousands of connections costs no more than this many tasks).
pub const MAX_METRICS_CONNECTIONS: usize = 16;

/// How long a client may take to send a request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one connection may stay open, requests and keep-alive together.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);

/// Serves `app` on `listener` until the server shuts down, bounded: at most `max`
/// connections at once (each accepted only when a slot is free), a deadline for every request
/// head and for every connection's life. By hand on hyper rather than `axum::serve`, which
/// has neither a connection bound nor a head deadline. Handlers see the client's address as
/// `ConnectInfo<SocketAddr>`.
pub async fn serve_bounded(
    listener: TcpListener,
    app: Router,
    max: usize,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(max));
    // Shared fairly: one client address holds at most a quarter of the slots, so a client
    // that opens connections and keeps them cannot take the endpoint from everyone else.
    let per_client = (max / 4).max(2);
    let held: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>> =
        Arc::default();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stopped(&mut shutdown) => return,
        };
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => return,
        };
        let client = crate::smtp_auth::login_throttle::client_key(peer.ip(), 64);
        {
            let mut held = held.lock().unwrap_or_else(|p| p.into_inner());
            let n = held.entry(client).or_insert(0);
            if *n >= per_client {
                // Closed at once; the slot goes back.
                continue;
            }
            *n += 1;
        }
        let service = hyper_util::service::TowerToHyperService::new(
            app.clone()
                .layer(axum::Extension(axum::extract::ConnectInfo(peer))),
        );
        let held = held.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
            let mut held = held.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = held.get_mut(&client) {
                *n -= 1;
                if *n == 0 {
                    held.remove(&client);
                }
            }
            drop(permit);
        });
    }
}

/// Returns once the server begins to shut down.
async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Serves the endpoint until the server's tasks end: through the drain of a shutdown too,
/// so that `/healthz` answers 503 to a load balancer meanwhile instead of a refused
/// connection.
pub async fn serve(ctx: Arc<ServerContext>, listener: TcpListener) {
    // A stop signal that never comes: the server ends this task after the drain.
    let (_never, until) = tokio::sync::watch::channel(false);
    serve_bounded(listener, router(ctx), MAX_METRICS_CONNECTIONS, until).await;
}
