//! The operator's metrics endpoint (`[metrics] address`), on axum: `GET /metrics` (Prometheus
//! text format), `GET /healthz` (200 `ok`, or 503 while shutting down) and `GET /plugins` (the
//! plugins in service, as JSON, for `sluice plugin list --server`). The console
//! ([`crate::console`], `[admin] address`) serves `/metrics` and `/healthz` too, from here.

use std::sync::Arc;

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

/// Serves the endpoint until the server shuts down.
pub async fn serve(ctx: Arc<ServerContext>, listener: TcpListener) {
    let mut shutdown = ctx.shutdown.subscribe();
    let _ = axum::serve(listener, router(ctx))
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await;
}
