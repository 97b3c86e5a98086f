//! Signing in to the console: administrators' log-ins (Argon2id, throttled per address and
//! user name), the session cookie and its CSRF token, and the forms every POST carries.

use super::*;

/// The session cookie's name.
pub(super) const COOKIE: &str = "sluice_console";
/// Log-ins held at once; the oldest goes when more come.
pub(super) const MAX_SESSIONS: usize = 1000;
/// The largest form accepted (bulk actions name many ids).
pub(super) const MAX_FORM: usize = 256 << 10;

/// The console's state.
pub struct Console {
    pub(super) ctx: Arc<ServerContext>,
    pub(super) sessions: Mutex<HashMap<String, Session>>,
    pub(super) throttle: LoginThrottle,
    /// The administrators file, kept to notice a changed password or a removed user.
    pub(super) admins: Mutex<
        Option<(
            std::path::PathBuf,
            crate::smtp_auth::credentials::CredentialsFile,
        )>,
    >,
}

#[derive(Clone)]
pub(super) struct Session {
    pub(super) user: String,
    pub(super) csrf: String,
    /// The user's password hash when they logged in: the session ends when it changes.
    pub(super) hash: String,
    pub(super) created: Instant,
    pub(super) last_used: Instant,
}

impl Session {
    /// Over: unused for `idle`, or begun more than `max` ago.
    pub(super) fn expired(&self, now: Instant, idle: Duration, max: Duration) -> bool {
        now.duration_since(self.last_used) >= idle || now.duration_since(self.created) >= max
    }
}

pub(super) fn token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl Console {
    pub(super) fn settings(&self) -> crate::config::AdminConfig {
        self.ctx.live().config.admin.clone()
    }

    /// The session the request's cookie names, if it is live (its use is recorded).
    pub(super) fn session(&self, headers: &HeaderMap) -> Option<Session> {
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
    pub(super) fn admins(&self) -> Arc<crate::smtp_auth::credentials::Credentials> {
        let path = self.ctx.live().config.paths().admins_file;
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

    pub(super) fn open_session(&self, user: &str, hash: &str) -> (String, Session) {
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
pub(super) enum Refusal {
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

/// A POST from a signed-in administrator: the session, and the form whose CSRF token is
/// the session's. Extracted before the handler runs, so that no action handler can forget
/// the check.
pub(super) struct Posted(pub(super) Session, pub(super) Form);

impl axum::extract::FromRequest<Arc<Console>> for Posted {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, c: &Arc<Console>) -> Result<Self, Response> {
        let headers = req.headers().clone();
        let body = axum::body::Bytes::from_request(req, c)
            .await
            .map_err(IntoResponse::into_response)?;
        let form = Form::parse(&body);
        let s = signed_in_post(c, &headers, &form).map_err(IntoResponse::into_response)?;
        Ok(Posted(s, form))
    }
}

/// A request from a signed-in administrator: the console, and the session. Extracted before
/// the handler runs; without a session, the way to the log-in page.
pub(super) struct SignedIn {
    pub(super) c: Arc<Console>,
    pub(super) s: Session,
}

impl axum::extract::FromRequestParts<Arc<Console>> for SignedIn {
    type Rejection = Refusal;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        c: &Arc<Console>,
    ) -> Result<Self, Refusal> {
        let s = signed_in(c, &parts.headers)?;
        Ok(SignedIn { c: c.clone(), s })
    }
}

/// A page, or why not.
pub(super) type Page = Result<Response, Refusal>;

/// The session of a GET, or the way to the log-in page.
pub(super) fn signed_in(c: &Console, headers: &HeaderMap) -> Result<Session, Refusal> {
    c.session(headers).ok_or(Refusal::LogIn)
}

/// The session of a POST whose form carries its CSRF token; 403 otherwise.
pub(super) fn signed_in_post(
    c: &Console,
    headers: &HeaderMap,
    form: &Form,
) -> Result<Session, Refusal> {
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
    pub(super) fn parse(body: &[u8]) -> Form {
        Form(url_decode_pairs(body).into_iter().take(10_000).collect())
    }

    pub(super) fn first(&self, key: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    pub(super) fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// `application/x-www-form-urlencoded` pairs. By hand: axum's `Form` extractor (serde_urlencoded)
/// cannot collect a key given many times, which the bulk actions need.
pub(super) fn url_decode_pairs(body: &[u8]) -> Vec<(String, String)> {
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

pub(super) async fn login_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if c.session(&headers).is_some() {
        return Redirect::to("/").into_response();
    }
    pages::login(None).into_response()
}

/// Where `sluice admin unlock` asks the running console to clear its lock-outs.
pub fn unlock_request(config: &crate::config::Config) -> std::path::PathBuf {
    config.server.data_dir.join("admin-unlock")
}

pub(super) async fn login(
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
    let path = c.ctx.live().config.paths().admins_file;
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

pub(super) async fn logout(State(c): State<Arc<Console>>, headers: HeaderMap, _: Posted) -> Page {
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
