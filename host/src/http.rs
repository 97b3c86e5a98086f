//! The operator's metrics endpoint (`[metrics] address`), on axum: `GET /metrics` (Prometheus
//! text format), `GET /healthz` (200 `ok`, or 503 while shutting down) and `GET /plugins` (the
//! plugins in service, as JSON, for `sluice plugin list --server`). The console
//! ([`crate::console`], `[admin] address`) serves `/metrics` and `/healthz` too, from here.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::context::ServerContext;
use crate::spool::SpoolState;

/// The Prometheus text, with the spool's sizes counted now.
pub async fn metrics(ctx: &ServerContext) -> Response {
    let m = crate::metrics::get();
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
            get(|State(c): State<Arc<ServerContext>>| async move { plugins(&c) }),
        )
        .with_state(ctx)
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
        let service = hyper_util::service::TowerToHyperService::new(
            app.clone()
                .layer(axum::Extension(axum::extract::ConnectInfo(peer))),
        );
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
            drop(permit);
        });
    }
}

/// Returns once the server begins to shut down.
async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Serves the endpoint until the server shuts down.
pub async fn serve(ctx: Arc<ServerContext>, listener: TcpListener) {
    let shutdown = ctx.shutdown.subscribe();
    serve_bounded(listener, router(ctx), MAX_METRICS_CONNECTIONS, shutdown).await;
}
