//! The operator's HTTP endpoint (`[metrics] address`): `GET /metrics` (Prometheus text
//! format), `GET /healthz` (200 `ok`, or 503 while shutting down) and `GET /plugins` (the
//! plugins in service, as JSON, for `sluice plugin list --server`).
//!
//! Written by hand on tokio rather than with an HTTP server crate: three read-only GET
//! routes on a loopback or management address need no more than reading one request head
//! and writing one response, and this keeps hyper and its stack out of the relay.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::context::ServerContext;
use crate::spool::SpoolState;

/// Requests answered at once; more connections wait in the listen queue (a client opening
/// thousands of connections costs the relay no more than this many tasks).
const MAX_CONNECTIONS: usize = 16;

/// Serves the endpoint until the task is dropped.
pub async fn serve(ctx: Arc<ServerContext>, listener: TcpListener) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), answer(&ctx, stream)).await;
            drop(permit);
        });
    }
}

async fn answer(ctx: &ServerContext, mut stream: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > 8192 {
            return respond(&mut stream, 431, "text/plain", "request head too large\n").await;
        }
    }
    let line =
        String::from_utf8_lossy(head.split(|b| *b == b'\r').next().unwrap_or(&[])).into_owned();
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, 405, "text/plain", "only GET\n").await;
    }
    match path {
        "/metrics" => {
            let m = crate::metrics::get();
            // Listing the spool reads directories: on a blocking thread, not an async worker
            // that SMTP sessions and plugin calls share.
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
            let body = m.encode();
            respond(
                &mut stream,
                200,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                &body,
            )
            .await
        }
        "/healthz" if ctx.shutting_down() => {
            respond(&mut stream, 503, "text/plain", "shutting down\n").await
        }
        "/healthz" => respond(&mut stream, 200, "text/plain", "ok\n").await,
        "/plugins" => {
            let rows = ctx.live().pipeline.describe();
            let body = serde_json::to_string_pretty(&rows).unwrap_or_default();
            respond(&mut stream, 200, "application/json", &body).await
        }
        _ => respond(&mut stream, 404, "text/plain", "not found\n").await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
