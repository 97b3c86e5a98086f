//! The operator's web console on `[admin] address`: traffic, plugins, queue, quarantine and
//! recent transactions, server-rendered HTML (maud, escaped by construction) with htmx for the
//! overview's refresh, and `/metrics` and `/healthz` beside it.
//!
//! Security:
//! - Every page but `/login`, `/metrics`, `/healthz` and the embedded script needs a log-in
//!   (administrators in `[admin] users_file`, Argon2id, added with `sluice admin passwd`).
//! - A log-in is a random 256-bit token in a cookie (`HttpOnly`, `SameSite=Strict`), expiring
//!   after `session_minutes` without use; its CSRF token must come with every POST.
//! - Failed log-ins are counted per client address and per user name; past
//!   `max_failed_logins` the console refuses to check for `lockout_minutes`.
//! - Everything a message or plugin wrote is escaped (maud does it for every interpolation),
//!   a message's body is shown as text, never as HTML, and the Content-Security-Policy allows
//!   scripts from the console itself only.
//!
//! Actions go through the same code as the command line: `delivery::admin` (as `sluice queue`),
//! `reload::reload_config` (as `sluice reload`), `spam_learning::learn` (as `sluice spam learn`).
//!
//! May use: the server context, the spool and delivery's queue actions, the reload, spam
//! learning and the journal; it renders, the library decides.

mod pages;
mod queue;
mod sign_in;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use rand::RngCore;

use crate::server::context::ServerContext;
use crate::smtp_auth::login_throttle::{Admission, LoginThrottle};

use queue::*;
use sign_in::*;
pub use sign_in::{Console, Form, unlock_request};

/// Headers every console response carries.
async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; form-action 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The console's routes.
pub fn router(ctx: Arc<ServerContext>) -> Router {
    let config = ctx.live().config.clone();
    let check =
        crate::admin::http::HostCheck::new(&config.server.hostname, &config.admin.allowed_hosts);
    let console = Arc::new(Console {
        ctx,
        sessions: Mutex::new(HashMap::new()),
        throttle: LoginThrottle::new(2),
        admins: Mutex::new(None),
    });
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/", get(overview))
        .route("/overview/panel", get(overview_panel))
        .route("/plugins", get(plugins))
        .route("/plugins/reload", post(reload))
        .route("/plugins/promote", post(promote))
        .route("/capture/next", post(capture_next))
        .merge(queue::routes())
        .route("/transactions", get(transactions))
        .route("/state", get(state))
        .route("/state/delete", post(state_delete))
        .route("/assets/htmx.min.js", get(htmx))
        .route(
            "/metrics",
            get(|State(c): State<Arc<Console>>| async move {
                crate::admin::http::metrics(&c.ctx).await
            }),
        )
        .route(
            "/healthz",
            get(|State(c): State<Arc<Console>>| async move { crate::admin::http::healthz(&c.ctx) }),
        )
        .layer(axum::middleware::from_fn(security_headers))
        .layer(axum::middleware::from_fn_with_state(
            check,
            crate::admin::http::check_host,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_FORM))
        .with_state(console)
}

/// Connections the console serves at once (browsers open several).
const MAX_CONNECTIONS: usize = 32;

/// Serves the console on `listener` until the server shuts down.
pub async fn serve(ctx: Arc<ServerContext>, listener: tokio::net::TcpListener) {
    let shutdown = ctx.shutdown.subscribe();
    crate::admin::http::serve_bounded(listener, router(ctx), MAX_CONNECTIONS, shutdown).await;
}

async fn htmx() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        include_str!("../../../assets/htmx-2.0.11.min.js"),
    )
        .into_response()
}

/// Spool counts, off the async workers (listing reads directories).
async fn spool_sizes(ctx: &ServerContext) -> (usize, usize) {
    let spool = ctx.spool.clone();
    tokio::task::spawn_blocking(move || {
        (
            spool
                .list(crate::spool::SpoolState::Queue)
                .map_or(0, |l| l.len()),
            spool
                .list(crate::spool::SpoolState::Quarantine)
                .map_or(0, |l| l.len()),
        )
    })
    .await
    .unwrap_or((0, 0))
}

async fn overview(SignedIn { c, s }: SignedIn) -> Page {
    let sizes = spool_sizes(&c.ctx).await;
    Ok(pages::overview(&s.user, &s.csrf, &c.ctx, sizes).into_response())
}

async fn overview_panel(SignedIn { c, s: _ }: SignedIn) -> Page {
    let sizes = spool_sizes(&c.ctx).await;
    Ok(pages::overview_panel(&c.ctx, sizes).into_response())
}

/// The plugins page; the capture's state is read off the async workers (it lists the
/// capture directory).
async fn plugins_page(
    ctx: &Arc<ServerContext>,
    user: &str,
    csrf: &str,
    outcome: Option<Result<String, String>>,
) -> Page {
    let capture = ctx.capture.clone();
    let status = tokio::task::spawn_blocking(move || capture.status())
        .await
        .unwrap_or_else(|_| crate::capture::Status::default());
    Ok(pages::plugins(user, csrf, ctx, &status, outcome).into_response())
}

async fn plugins(SignedIn { c, s }: SignedIn) -> Page {
    plugins_page(&c.ctx, &s.user, &s.csrf, None).await
}

async fn reload(State(c): State<Arc<Console>>, Posted(s, _): Posted) -> Page {
    let path = c.ctx.live().config.source.clone();
    let outcome = crate::server::reload::reload_config(&c.ctx, path.as_deref()).await;
    crate::admin::metrics::get().reload("console", outcome.is_ok());
    tracing::info!(user = %crate::inbound::message::printable(&s.user), ok = outcome.is_ok(), "console reload");
    plugins_page(&c.ctx, &s.user, &s.csrf, Some(outcome)).await
}

/// Promotes a plugin's shadow (as `sluice plugin promote`), then reloads so it serves at once.
async fn promote(State(c): State<Arc<Console>>, Posted(s, form): Posted) -> Page {
    let name = form.first("plugin").unwrap_or_default();
    let has_shadow = c
        .ctx
        .live()
        .pipeline
        .plugins()
        .iter()
        .any(|p| p.name == name && p.shadow.is_some());
    let outcome = if !has_shadow {
        Err(format!(
            "no plugin {} with a shadow in service",
            crate::inbound::message::printable(&name)
        ))
    } else {
        let dir = c.ctx.live().config.paths().plugin_dir;
        match crate::plugin::shadow::promote(&dir, &name) {
            Ok(_) => {
                let path = c.ctx.live().config.source.clone();
                crate::server::reload::reload_config(&c.ctx, path.as_deref())
                    .await
                    .map(|summary| format!("promoted the shadow of {name}; {summary}"))
            }
            Err(e) => Err(e.to_string()),
        }
    };
    tracing::info!(user = %crate::inbound::message::printable(&s.user), plugin = %crate::inbound::message::printable(&name), ok = outcome.is_ok(), "console promote");
    plugins_page(&c.ctx, &s.user, &s.csrf, Some(outcome)).await
}

/// Keeps the next `count` transactions (1 to 1,000) whatever the capture rules say.
async fn capture_next(State(c): State<Arc<Console>>, Posted(s, form): Posted) -> Page {
    let count = form.first("count").unwrap_or_default();
    let outcome = match count.trim().parse::<u64>() {
        Ok(n @ 1..=1000) => c.ctx.capture.next(n).map(|pending| {
            format!("the next {n} transactions will be captured ({pending} still to come)")
        }),
        _ => Err(format!(
            "{:?} is not a count of transactions from 1 to 1000",
            crate::inbound::message::printable(&count)
        )),
    };
    tracing::info!(user = %crate::inbound::message::printable(&s.user), ok = outcome.is_ok(), "console capture");
    plugins_page(&c.ctx, &s.user, &s.csrf, Some(outcome)).await
}

/// `?q=` searches the recent transactions.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct Search {
    q: String,
}

async fn transactions(SignedIn { c: _, s }: SignedIn, Query(search): Query<Search>) -> Page {
    let found = crate::admin::journal::get().transactions(&search.q, 200);
    Ok(pages::transactions(&s.user, &s.csrf, &search.q, &found).into_response())
}

/// `?plugin=&q=` of the plugin-state page.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct StateQuery {
    plugin: String,
    q: String,
}

/// Entries shown on the plugin-state page at most.
const STATE_ROWS: usize = 200;

/// The plugins granted `kv` (whose state can be shown).
fn stateful_plugins(c: &Console) -> Vec<String> {
    c.ctx
        .live()
        .pipeline
        .plugins()
        .iter()
        .filter(|p| p.capabilities.contains(&crate::config::Capability::Kv))
        .map(|p| p.name.clone())
        .collect()
}

/// A plugin's entries in the key-value store (greylist triplets, rate counters, allow
/// lists): key, value and time left, the first [`STATE_ROWS`] whose key contains `q`.
async fn state_rows(c: &Console, plugin: &str, q: &str) -> Result<Vec<pages::StateRow>, String> {
    let Some(kv) = c.ctx.runtime.services.kv.clone() else {
        return Err("this Sluice has no key-value store".to_string());
    };
    let prefix = format!("{plugin}:").into_bytes();
    // Read more than shown, so a search finds entries beyond the first page.
    let entries = kv
        .scan(prefix.clone(), 20 * STATE_ROWS)
        .await
        .map_err(|e| e.to_string())?;
    Ok(entries
        .into_iter()
        .map(|(k, v, left)| pages::StateRow {
            key: String::from_utf8_lossy(&k[prefix.len().min(k.len())..]).into_owned(),
            value: String::from_utf8_lossy(&v).chars().take(200).collect(),
            expires_secs: left.map(|ms| ms.div_ceil(1000)),
        })
        .filter(|r| q.is_empty() || r.key.contains(q))
        .take(STATE_ROWS)
        .collect())
}

async fn state(SignedIn { c, s }: SignedIn, Query(query): Query<StateQuery>) -> Page {
    let plugins = stateful_plugins(&c);
    let plugin = if plugins.contains(&query.plugin) {
        Some(query.plugin.clone())
    } else {
        plugins.first().cloned()
    };
    let rows = match &plugin {
        Some(p) => Some(state_rows(&c, p, &query.q).await),
        None => None,
    };
    Ok(pages::state(
        &s.user,
        &s.csrf,
        &plugins,
        plugin.as_deref(),
        &query.q,
        rows,
        None,
    )
    .into_response())
}

async fn state_delete(State(c): State<Arc<Console>>, Posted(s, form): Posted) -> Page {
    let plugins = stateful_plugins(&c);
    let plugin = form.first("plugin").unwrap_or_default();
    let key = form.first("key").unwrap_or_default();
    let outcome = if !plugins.contains(&plugin) {
        Err(format!(
            "no plugin {} with state in service",
            crate::inbound::message::printable(&plugin)
        ))
    } else if key.is_empty() || key.len() > 1024 {
        Err("no such entry".to_string())
    } else {
        match c.ctx.runtime.services.kv.clone() {
            Some(kv) => kv
                .delete(format!("{plugin}:{key}").into_bytes())
                .await
                .map_err(|e| e.to_string())
                .map(|gone| {
                    if gone {
                        "cleared"
                    } else {
                        "not there (expired?)"
                    }
                    .to_string()
                }),
            None => Err("this Sluice has no key-value store".to_string()),
        }
    };
    let outcome_text = match &outcome {
        Ok(t) | Err(t) => t.clone(),
    };
    log_actions(
        "state",
        &s.user,
        &format!("clear {plugin}"),
        &[format!("{key}: {outcome_text}")],
    );
    let rows = state_rows(&c, &plugin, "").await;
    Ok(pages::state(
        &s.user,
        &s.csrf,
        &plugins,
        Some(&plugin),
        "",
        Some(rows),
        Some(format!("{key}: {outcome_text}")),
    )
    .into_response())
}
