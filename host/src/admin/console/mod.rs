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

mod pages;

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

/// The session cookie's name.
const COOKIE: &str = "sluice_console";
/// Log-ins held at once; the oldest goes when more come.
const MAX_SESSIONS: usize = 1000;
/// The largest form accepted (bulk actions name many ids).
const MAX_FORM: usize = 256 << 10;

/// The console's state.
pub struct Console {
    ctx: Arc<ServerContext>,
    sessions: Mutex<HashMap<String, Session>>,
    throttle: LoginThrottle,
    /// The administrators file, kept to notice a changed password or a removed user.
    admins: Mutex<
        Option<(
            std::path::PathBuf,
            crate::smtp_auth::credentials::CredentialsFile,
        )>,
    >,
}

#[derive(Clone)]
struct Session {
    user: String,
    csrf: String,
    /// The user's password hash when they logged in: the session ends when it changes.
    hash: String,
    created: Instant,
    last_used: Instant,
}

impl Session {
    /// Over: unused for `idle`, or begun more than `max` ago.
    fn expired(&self, now: Instant, idle: Duration, max: Duration) -> bool {
        now.duration_since(self.last_used) >= idle || now.duration_since(self.created) >= max
    }
}

fn token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl Console {
    fn settings(&self) -> crate::config::AdminConfig {
        self.ctx.live().config.admin.clone()
    }

    /// The session the request's cookie names, if it is live (its use is recorded).
    fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == COOKIE)
            .map(|(_, v)| v.to_string())?;
        let settings = self.settings();
        let idle = Duration::from_secs(settings.session_minutes * 60);
        let max = Duration::from_secs(settings.session_max_minutes * 60);
        let admins = self.admins();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // A removed administrator's, or one whose password changed, end too.
        sessions.retain(|_, s| {
            !s.expired(now, idle, max) && admins.hash_of(&s.user) == Some(s.hash.as_str())
        });
        let s = sessions.get_mut(&cookie)?;
        s.last_used = now;
        Some(s.clone())
    }

    /// The administrators as the users file holds them now (re-read when it changes).
    fn admins(&self) -> Arc<crate::smtp_auth::credentials::Credentials> {
        let path = self.ctx.live().config.admins_file();
        let mut file = self.admins.lock().unwrap_or_else(|p| p.into_inner());
        if file.as_ref().is_none_or(|(p, _)| *p != path) {
            match crate::smtp_auth::credentials::CredentialsFile::open(&path) {
                Ok(f) => *file = Some((path, f)),
                Err(e) => {
                    tracing::warn!("console: the administrators file: {e}");
                    return Arc::new(crate::smtp_auth::credentials::Credentials::default());
                }
            }
        }
        file.as_ref().map(|(_, f)| f.current()).unwrap_or_default()
    }

    fn open_session(&self, user: &str, hash: &str) -> (String, Session) {
        let now = Instant::now();
        let s = Session {
            user: user.to_string(),
            csrf: token(),
            hash: hash.to_string(),
            created: now,
            last_used: now,
        };
        let id = token();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(id.clone(), s.clone());
        (id, s)
    }
}

/// Why a request gets no page.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// Not logged in (or the log-in expired): to the log-in page.
    LogIn,
    /// A POST without its session's CSRF token.
    Csrf,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::LogIn => Redirect::to("/login").into_response(),
            Refusal::Csrf => (
                StatusCode::FORBIDDEN,
                "the form's CSRF token is missing or stale: reload the page and try again\n",
            )
                .into_response(),
        }
    }
}

/// A page, or why not.
type Page = Result<Response, Refusal>;

/// The session of a GET, or the way to the log-in page.
fn signed_in(c: &Console, headers: &HeaderMap) -> Result<Session, Refusal> {
    c.session(headers).ok_or(Refusal::LogIn)
}

/// The session of a POST whose form carries its CSRF token; 403 otherwise.
fn signed_in_post(c: &Console, headers: &HeaderMap, form: &Form) -> Result<Session, Refusal> {
    let s = signed_in(c, headers)?;
    let given = form.first("csrf").unwrap_or_default();
    // Compared in constant time: the token is a secret.
    let same = given.len() == s.csrf.len()
        && given
            .bytes()
            .zip(s.csrf.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err(Refusal::Csrf);
    }
    Ok(s)
}

/// A URL-encoded form, with repeated keys (bulk actions send one `id` per message).
#[derive(Debug, Default)]
pub struct Form(Vec<(String, String)>);

impl Form {
    fn parse(body: &[u8]) -> Form {
        Form(url_decode_pairs(body).into_iter().take(10_000).collect())
    }

    fn first(&self, key: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// `application/x-www-form-urlencoded` pairs. By hand: axum's `Form` extractor (serde_urlencoded)
/// cannot collect a key given many times, which the bulk actions need.
fn url_decode_pairs(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &[u8]| -> String {
        let mut out = Vec::with_capacity(s.len());
        let mut i = 0;
        while i < s.len() {
            match s[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < s.len() => {
                    let hex = std::str::from_utf8(&s[i + 1..i + 3]).unwrap_or("");
                    match u8::from_str_radix(hex, 16) {
                        Ok(b) => {
                            out.push(b);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    body.split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut kv = p.splitn(2, |&b| b == b'=');
            let k = decode(kv.next().unwrap_or_default());
            let v = decode(kv.next().unwrap_or_default());
            (k, v)
        })
        .collect()
}

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
        .route("/queue", get(queue))
        .route("/queue/{id}", get(queue_message))
        .route("/queue/action", post(queue_action))
        .route("/quarantine", get(quarantine))
        .route("/quarantine/{id}", get(quarantine_message))
        .route("/quarantine/action", post(quarantine_action))
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

async fn login_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if c.session(&headers).is_some() {
        return Redirect::to("/").into_response();
    }
    pages::login(None).into_response()
}

/// Where `sluice admin unlock` asks the running console to clear its lock-outs.
pub fn unlock_request(config: &crate::config::Config) -> std::path::PathBuf {
    config.server.data_dir.join("admin-unlock")
}

async fn login(
    State(c): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> Response {
    let form = Form::parse(&body);
    let user = form.first("user").unwrap_or_default();
    let password = form.first("password").unwrap_or_default();
    let settings = c.settings();
    let window = Duration::from_secs(settings.lockout_minutes * 60);
    let client: IpAddr = crate::smtp_auth::login_throttle::client_key(peer.ip(), 64);
    let refused =
        |message: &str| (StatusCode::UNAUTHORIZED, pages::login(Some(message))).into_response();
    if user.is_empty() || user.len() > 256 || password.len() > 1024 {
        return refused("Give a user name and a password.");
    }
    // `sluice admin unlock` leaves a request in the data directory: every lock-out ends.
    let request = unlock_request(&c.ctx.live().config);
    if std::fs::remove_file(&request).is_ok() {
        c.throttle.clear();
        tracing::warn!(
            event = "console-unlock",
            "console lock-outs cleared (sluice admin unlock)"
        );
    }
    if c.throttle
        .admit(client, &user, settings.max_failed_logins, window)
        == Admission::LockedOut
    {
        tracing::warn!(client = %peer.ip(), user = %crate::inbound::message::printable(&user), "console log-in refused: too many failures");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            pages::login(Some("Too many failed log-ins: try again later.")),
        )
            .into_response();
    }
    let path = c.ctx.live().config.admins_file();
    let hash = {
        let _slot = c.throttle.hashing_slot().await;
        let (u, p) = (user.clone(), password.clone());
        tokio::task::spawn_blocking(move || {
            crate::smtp_auth::credentials::Credentials::load(&path)
                .ok()
                .filter(|cr| cr.verify(&u, &p))
                .and_then(|cr| cr.hash_of(&u).map(str::to_string))
        })
        .await
        .unwrap_or(None)
    };
    let Some(hash) = hash else {
        let wait = c.throttle.failed(client, &user, window);
        tracing::warn!(client = %peer.ip(), user = %crate::inbound::message::printable(&user), "console log-in failed");
        tokio::time::sleep(wait).await;
        return refused("Wrong user name or password.");
    };
    c.throttle.succeeded(client, &user);
    tracing::info!(client = %peer.ip(), user = %crate::inbound::message::printable(&user), "console log-in");
    let (id, _) = c.open_session(&user, &hash);
    let cookie = format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        settings.session_minutes * 60
    );
    let mut resp = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

async fn logout(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Page {
    let form = Form::parse(&body);
    signed_in_post(&c, &headers, &form)?;
    let mut sessions = c.sessions.lock().unwrap_or_else(|p| p.into_inner());
    let cookie_value = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(';')
                .find_map(|kv| kv.trim().strip_prefix(&format!("{COOKIE}=")))
        })
        .unwrap_or_default()
        .to_string();
    sessions.remove(&cookie_value);
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("sluice_console=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    Ok(resp)
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

async fn overview(State(c): State<Arc<Console>>, headers: HeaderMap) -> Page {
    let s = signed_in(&c, &headers)?;
    let sizes = spool_sizes(&c.ctx).await;
    Ok(pages::overview(&s.user, &s.csrf, &c.ctx, sizes).into_response())
}

async fn overview_panel(State(c): State<Arc<Console>>, headers: HeaderMap) -> Page {
    signed_in(&c, &headers)?;
    let sizes = spool_sizes(&c.ctx).await;
    Ok(pages::overview_panel(&c.ctx, sizes).into_response())
}

async fn plugins(State(c): State<Arc<Console>>, headers: HeaderMap) -> Page {
    let s = signed_in(&c, &headers)?;
    Ok(pages::plugins(&s.user, &s.csrf, &c.ctx, None).into_response())
}

async fn reload(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Page {
    let form = Form::parse(&body);
    let s = signed_in_post(&c, &headers, &form)?;
    let path = c.ctx.live().config.source.clone();
    let outcome = crate::server::reload::reload_config(&c.ctx, path.as_deref()).await;
    crate::admin::metrics::get().reload("console", outcome.is_ok());
    tracing::info!(user = %crate::inbound::message::printable(&s.user), ok = outcome.is_ok(), "console reload");
    Ok(pages::plugins(&s.user, &s.csrf, &c.ctx, Some(outcome)).into_response())
}

/// The queue's filters (`?sender=&recipient=&domain=&min_age_minutes=`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct QueueFilter {
    sender: String,
    recipient: String,
    domain: String,
    /// Empty in the form means no bound (a number field left empty sends `min_age_minutes=`).
    #[serde(deserialize_with = "empty_as_none")]
    min_age_minutes: Option<u64>,
    /// The page shown, from 1 ([`PAGE`] messages a page).
    #[serde(deserialize_with = "empty_as_none")]
    page: Option<usize>,
}

/// A query value left empty as `None`, else the number.
fn empty_as_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let text = <Option<String> as serde::Deserialize>::deserialize(d)?;
    match text.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(t) => t.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

/// Messages shown per page of the queue and of the quarantine.
pub const PAGE: usize = 100;

/// The query of the quarantine's pages (`?page=`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct Paging {
    page: Option<usize>,
}

/// Page `page` (from 1) of `all`, with the count and the number of pages.
fn page_of(mut all: Vec<crate::delivery::admin::Entry>, page: Option<usize>) -> pages::Listed {
    let total = all.len();
    let pages = total.div_ceil(PAGE).max(1);
    let page = page.unwrap_or(1).clamp(1, pages);
    let start = (page - 1) * PAGE;
    all.truncate((start + PAGE).min(total));
    pages::Listed {
        entries: all.split_off(start.min(all.len())),
        total,
        page,
        pages,
    }
}

impl QueueFilter {
    fn keeps(&self, e: &crate::delivery::admin::Entry) -> bool {
        let has = |hay: &str, needle: &str| {
            needle.is_empty() || hay.to_lowercase().contains(&needle.trim().to_lowercase())
        };
        let domain = self.domain.trim().to_lowercase();
        let in_domain = |a: &str| {
            a.rsplit_once('@')
                .is_some_and(|(_, d)| d.to_lowercase() == domain)
        };
        let age_ok = self.min_age_minutes.is_none_or(|m| {
            chrono::DateTime::parse_from_rfc3339(&e.received_at).is_ok_and(|t| {
                (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_minutes() >= m as i64
            })
        });
        has(&e.sender, &self.sender)
            && (self.recipient.is_empty()
                || e.recipients.iter().any(|(r, _, _)| has(r, &self.recipient)))
            && (domain.is_empty()
                || in_domain(&e.sender)
                || e.recipients.iter().any(|(r, _, _)| in_domain(r)))
            && age_ok
    }
}

async fn list(
    ctx: &ServerContext,
    which: crate::spool::SpoolState,
) -> Result<Vec<crate::delivery::admin::Entry>, String> {
    let spool = ctx.spool.clone();
    tokio::task::spawn_blocking(move || crate::delivery::admin::list(&spool, which))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

async fn queue(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(filter): Query<QueueFilter>,
) -> Page {
    let s = signed_in(&c, &headers)?;
    // Only envelopes are read to list and filter; one page is shown.
    let entries = list(&c.ctx, crate::spool::SpoolState::Queue)
        .await
        .map(|v| {
            page_of(
                v.into_iter().filter(|e| filter.keeps(e)).collect(),
                filter.page,
            )
        });
    Ok(pages::queue(&s.user, &s.csrf, &filter, entries, None).into_response())
}

/// One message as `sluice queue show` gives it: entry, delivery history, header section, and
/// the message.
async fn show(
    ctx: &ServerContext,
    which: crate::spool::SpoolState,
    id: String,
) -> Result<pages::Shown, String> {
    let spool = ctx.spool.clone();
    tokio::task::spawn_blocking(move || {
        crate::delivery::admin::show(&spool, which, &id)
            .map(|(entry, history, header, message)| pages::Shown {
                entry,
                history,
                header,
                message,
            })
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

async fn queue_message(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Page {
    let s = signed_in(&c, &headers)?;
    let found = show(&c.ctx, crate::spool::SpoolState::Queue, id).await;
    Ok(pages::message(&s.user, &s.csrf, "queue", found).into_response())
}

async fn quarantine_message(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Page {
    let s = signed_in(&c, &headers)?;
    let found = show(&c.ctx, crate::spool::SpoolState::Quarantine, id).await;
    Ok(pages::message(&s.user, &s.csrf, "quarantine", found).into_response())
}

/// Runs `action` on each id off the async workers; one line per id saying what happened.
async fn each(
    ids: Vec<String>,
    action: impl Fn(&str) -> Result<String, String> + Send + 'static,
) -> Vec<String> {
    tokio::task::spawn_blocking(move || {
        ids.iter()
            .take(10_000)
            .map(|id| match action(id) {
                Ok(done) => format!("{id}: {done}"),
                Err(e) => format!("{id}: {e}"),
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// One log line per message an administrator's action touched (`event=console-action`):
/// who, what, which message, and what came of it.
fn log_actions(page: &str, user: &str, action: &str, results: &[String]) {
    use crate::inbound::message::printable;
    for r in results {
        let (id, outcome) = r.split_once(": ").unwrap_or((r.as_str(), ""));
        tracing::info!(
            event = "console-action",
            user = %printable(user),
            page,
            action = %printable(action),
            id = %printable(id),
            outcome = %printable(outcome),
            "console action"
        );
    }
}

async fn queue_action(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Page {
    let form = Form::parse(&body);
    let s = signed_in_post(&c, &headers, &form)?;
    let action = form.first("action").unwrap_or_default();
    let ids = form.all("id");
    let spool = c.ctx.spool.clone();
    use crate::delivery::admin;
    let act = action.clone();
    let results = each(ids, move |id| {
        let r = match act.as_str() {
            "retry" => admin::retry(&spool, id).map(|_| "retry scheduled now"),
            "hold" => admin::hold(&spool, id).map(|_| "held"),
            "release" => admin::release(&spool, id).map(|_| "released"),
            "delete-bounce" => admin::delete(&spool, id, true).map(|_| "deleted, sender told"),
            "delete-drop" => admin::delete(&spool, id, false).map(|_| "deleted silently"),
            other => {
                return Err(format!(
                    "unknown action `{}`",
                    crate::inbound::message::printable(other)
                ));
            }
        };
        r.map(str::to_string).map_err(|e| e.to_string())
    })
    .await;
    c.ctx.queue_changed.notify_one();
    log_actions("queue", &s.user, &action, &results);
    let entries = list(&c.ctx, crate::spool::SpoolState::Queue)
        .await
        .map(|all| page_of(all, None));
    Ok(pages::queue(
        &s.user,
        &s.csrf,
        &QueueFilter::default(),
        entries,
        Some(results),
    )
    .into_response())
}

/// The bytes of a quarantined message read for its summary.
const SUMMARY_BYTES: usize = 16 << 10;

/// A message's subject and spam verdict (its `X-Spam-Status`), read from its first 16 KiB.
fn summary(raw: &[u8]) -> pages::Summary {
    let head = &raw[..raw.len().min(SUMMARY_BYTES)];
    let Some(parsed) = mail_parser::MessageParser::new().parse_headers(head) else {
        return pages::Summary::default();
    };
    pages::Summary {
        subject: parsed.subject().unwrap_or_default().to_string(),
        spam: parsed
            .header_raw("X-Spam-Status")
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
    }
}

async fn quarantine_page(
    c: &Console,
    s: &Session,
    page: Option<usize>,
    results: Option<Vec<String>>,
) -> Response {
    // Envelopes for the list; the head of each message on the page shown for its summary.
    let spool = c.ctx.spool.clone();
    let listed = tokio::task::spawn_blocking(move || {
        let all = crate::delivery::admin::list(&spool, crate::spool::SpoolState::Quarantine)?;
        let listed = page_of(all, page);
        let summaries: HashMap<String, pages::Summary> = listed
            .entries
            .iter()
            .filter_map(|e| {
                let head = spool
                    .read_head(crate::spool::SpoolState::Quarantine, &e.id, SUMMARY_BYTES)
                    .ok()?;
                Some((e.id.clone(), summary(&head)))
            })
            .collect();
        Ok::<_, crate::delivery::admin::AdminError>((listed, summaries))
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r.map_err(|e| e.to_string()));
    let (entries, summaries) = match listed {
        Ok((l, s)) => (Ok(l), s),
        Err(e) => (Err(e), HashMap::new()),
    };
    pages::quarantine(&s.user, &s.csrf, entries, &summaries, results).into_response()
}

async fn quarantine(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(paging): Query<Paging>,
) -> Page {
    let s = signed_in(&c, &headers)?;
    Ok(quarantine_page(&c, &s, paging.page, None).await)
}

async fn quarantine_action(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Page {
    let form = Form::parse(&body);
    let s = signed_in_post(&c, &headers, &form)?;
    let action = form.first("action").unwrap_or_default();
    let ids = form.all("id");
    use crate::delivery::admin;
    let results = match action.as_str() {
        "learn-spam" | "learn-ham" => learn(&c, &action, ids).await,
        _ => {
            let spool = c.ctx.spool.clone();
            let act = action.clone();
            each(ids, move |id| {
                let r = match act.as_str() {
                    "release" => {
                        admin::quarantine_release(&spool, id).map(|_| "released to delivery")
                    }
                    "delete" => admin::quarantine_delete(&spool, id).map(|_| "deleted"),
                    other => {
                        return Err(format!(
                            "unknown action `{}`",
                            crate::inbound::message::printable(other)
                        ));
                    }
                };
                r.map(str::to_string).map_err(|e| e.to_string())
            })
            .await
        }
    };
    if action == "release" {
        c.ctx.delivery_wakeup.notify_one();
        c.ctx.queue_changed.notify_one();
    }
    log_actions("quarantine", &s.user, &action, &results);
    Ok(quarantine_page(&c, &s, None, Some(results)).await)
}

/// Learns quarantined messages as spam or ham (`sluice spam learn`); they stay in quarantine.
async fn learn(c: &Console, action: &str, ids: Vec<String>) -> Vec<String> {
    let spool = c.ctx.spool.clone();
    let read = tokio::task::spawn_blocking(move || {
        ids.into_iter()
            .take(1000)
            .map(|id| {
                if !crate::spool::is_queue_id(&id) {
                    let e = crate::delivery::admin::AdminError::BadId(id.clone()).to_string();
                    return (crate::inbound::message::printable(&id).into_owned(), Err(e));
                }
                let r = spool
                    .read(crate::spool::SpoolState::Quarantine, &id)
                    .map(|(_, raw)| {
                        raw[..raw.len().min(sluice_spam::features::SCAN_BYTES)].to_vec()
                    })
                    .map_err(|e| e.to_string());
                (id, r)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let config = c.ctx.live().config.clone();
    let kv = match &c.ctx.runtime.services.kv {
        Some(kv @ crate::store::KvStore::Redis(_)) => Some(kv.clone()),
        _ => None,
    };
    let what = if action == "learn-spam" {
        crate::spam_learning::Action::Spam
    } else {
        crate::spam_learning::Action::Ham
    };
    let mut out = Vec::new();
    let mut messages = Vec::new();
    for (id, r) in read {
        match r {
            Ok(m) => {
                messages.push(m);
                out.push(id);
            }
            Err(e) => out.push(format!("{id}: {e}")),
        }
    }
    if messages.is_empty() {
        return out;
    }
    match crate::spam_learning::learn(&config, kv, what, &messages).await {
        Ok(summary) => out.push(format!(
            "{} learned ({} unchanged); the site model corrects {} features",
            summary.changed, summary.unchanged, summary.features
        )),
        Err(e) => out.push(format!("not learned: {e}")),
    }
    out
}

/// `?q=` searches the recent transactions.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct Search {
    q: String,
}

async fn transactions(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(search): Query<Search>,
) -> Page {
    let s = signed_in(&c, &headers)?;
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

async fn state(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(query): Query<StateQuery>,
) -> Page {
    let s = signed_in(&c, &headers)?;
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

async fn state_delete(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Page {
    let form = Form::parse(&body);
    let s = signed_in_post(&c, &headers, &form)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_keep_repeated_keys_and_decode() {
        let f = Form::parse(b"id=a1&id=b%202&csrf=x%2By+z&action=retry&bad=%zz&tail=%4");
        assert_eq!(f.all("id"), vec!["a1", "b 2"]);
        assert_eq!(f.first("csrf").as_deref(), Some("x+y z"));
        assert_eq!(f.first("bad").as_deref(), Some("%zz"));
        assert_eq!(f.first("tail").as_deref(), Some("%4"));
        assert_eq!(f.first("none"), None);
    }
}
