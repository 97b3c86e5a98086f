//! Keeping the ACME certificate (`[tls.acme]`) current: a task that orders it when it is due
//! ([`crate::tls::acme::Acme::due`]), puts the new one in service without a restart, and after
//! a failure keeps the certificate in service, says so in the log and the metrics, and tries
//! again later (backoff with jitter); and the responders that answer the CA's checks on their
//! own addresses (`http_listen` for HTTP-01, `tls_alpn_listen` for TLS-ALPN-01). The smtps
//! listeners answer TLS-ALPN-01 in their handshake.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use tokio::net::TcpListener;

use crate::server::context::ServerContext;
use crate::tls::acme::{Acme, Challenges, Due};

/// How long one order may take, checks and issuance included.
const ORDER_DEADLINE: Duration = Duration::from_secs(300);
/// The first wait after a failed order; doubled after each failure in a row, up to
/// [`BACKOFF_MAX`], with ±25 % jitter (so a fleet does not retry in step).
const BACKOFF_FIRST: Duration = Duration::from_secs(60);
const BACKOFF_MAX: Duration = Duration::from_secs(6 * 3600);
/// The longest sleep between looks at the certificate (a reload wakes the task sooner).
const LOOK_AGAIN: Duration = Duration::from_secs(3600);

/// Keeps the ACME certificate current until the task is dropped.
pub async fn keep_current(ctx: Arc<ServerContext>) {
    let mut failures = 0u32;
    loop {
        let Some(acme) = Acme::new(&ctx.live().config) else {
            // Not configured (any more): wait for a reload.
            ctx.acme.reconsider.notified().await;
            continue;
        };
        let due = {
            let acme = acme.clone();
            tokio::task::spawn_blocking(move || acme.due(SystemTime::now()))
                .await
                .unwrap_or(Due::Now("the certificate could not be read"))
        };
        let reason = match due {
            Due::Now(reason) => reason,
            Due::At { renew, expires } => {
                crate::admin::metrics::get().acme_expiry(unix(expires));
                let wait = renew
                    .duration_since(SystemTime::now())
                    .unwrap_or_default()
                    .min(LOOK_AGAIN);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = ctx.acme.reconsider.notified() => {}
                }
                continue;
            }
        };
        let names = acme.names().join(",");
        tracing::info!(names = %names, reason, "ACME: ordering a certificate");
        let outcome = tokio::time::timeout(ORDER_DEADLINE, acme.obtain(&ctx.acme))
            .await
            .unwrap_or_else(|_| {
                ctx.acme.clear();
                Err(crate::tls::acme::AcmeError::Refused(format!(
                    "no certificate within {} s",
                    ORDER_DEADLINE.as_secs()
                )))
            });
        crate::admin::metrics::get().acme_order(outcome.is_ok());
        match outcome {
            Ok(expires) => {
                failures = 0;
                crate::admin::metrics::get().acme_expiry(unix(expires));
                // The watcher would read it too, but perhaps not soon.
                crate::server::reload::refresh_certificates(&ctx).await;
                tracing::info!(
                    names = %names,
                    expires = %chrono::DateTime::<chrono::Utc>::from(expires).to_rfc3339(),
                    "ACME: certificate issued and in service for new connections"
                );
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = backoff(failures, rand::random::<f64>());
                let error = truncated(&e.to_string());
                tracing::warn!(
                    names = %names,
                    error = %error,
                    retry_in_secs = wait.as_secs(),
                    "ACME: no certificate; the one in service stays"
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = ctx.acme.reconsider.notified() => {}
                }
            }
        }
    }
}

/// The wait after `failures` failed orders in a row, with `jitter` in [0, 1).
fn backoff(failures: u32, jitter: f64) -> Duration {
    let doubled = BACKOFF_FIRST.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    doubled.min(BACKOFF_MAX).mul_f64(0.75 + jitter / 2.0)
}

/// What the CA said, at most 1,000 bytes (the log escapes control characters).
fn truncated(s: &str) -> String {
    let mut end = s.len().min(1000);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Answers HTTP-01 on `listener`: `GET /.well-known/acme-challenge/TOKEN` while its order is
/// open, 404 for anything else. Bounded as the metrics endpoint is.
pub async fn answer_http(ctx: Arc<ServerContext>, listener: TcpListener) {
    let app = axum::Router::new()
        .route(
            "/.well-known/acme-challenge/{token}",
            axum::routing::get(
                |State(challenges): State<Arc<Challenges>>, Path(token): Path<String>| async move {
                    match challenges.http_answer(&token) {
                        Some(answer) => (StatusCode::OK, answer),
                        None => (StatusCode::NOT_FOUND, "no such challenge\n".to_string()),
                    }
                },
            ),
        )
        .with_state(ctx.acme.clone());
    crate::admin::http::serve_bounded(listener, app, 32, ctx.shutdown.subscribe()).await;
}

/// Answers TLS-ALPN-01 on `listener` and closes every other connection after its handshake.
pub async fn answer_tls_alpn(ctx: Arc<ServerContext>, listener: TcpListener) {
    let slots = Arc::new(tokio::sync::Semaphore::new(32));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let Some(config) = ctx.live().tls.as_ref().map(|t| t.config().clone()) else {
                return;
            };
            let accept = crate::tls::acme::challenges::accept(tcp, config, &ctx.acme);
            let _ = tokio::time::timeout(Duration::from_secs(10), accept).await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_after_failures_doubles_up_to_six_hours_with_a_quarter_of_jitter() {
        assert_eq!(backoff(1, 0.5), Duration::from_secs(60));
        assert_eq!(backoff(2, 0.5), Duration::from_secs(120));
        assert_eq!(backoff(1, 0.0), Duration::from_secs(45));
        assert_eq!(backoff(30, 0.5), Duration::from_secs(6 * 3600));
        assert!(backoff(30, 0.999) <= Duration::from_secs(6 * 3600 * 5 / 4));
        assert_eq!(truncated(&"é".repeat(600)).len(), 1000);
    }
}
