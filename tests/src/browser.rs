//! A small HTTP client for the web console: no redirects followed, 4xx answered as they are,
//! and the console's cookie kept by hand.

use std::time::Duration;

/// An HTTP client that neither follows redirects nor treats 4xx as errors, and keeps the
/// console's cookie by hand.
pub struct Browser {
    base: String,
    agent: ureq::Agent,
    /// The session cookie (`name=value`), once the console set one.
    pub cookie: Option<String>,
}

/// A reply.
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The header fields.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Reply {
    /// A header field's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The CSRF token of the page's forms.
    pub fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no CSRF token in {}", self.body));
        let rest = &self.body[at + 19..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

impl Browser {
    /// A browser for the console at `addr`.
    pub fn new(addr: std::net::SocketAddr) -> Browser {
        let agent = ureq::Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        Browser {
            base: format!("http://{addr}"),
            agent,
            cookie: None,
        }
    }

    fn finish(&mut self, r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
        let mut r = r.expect("the console answers");
        let headers: Vec<(String, String)> = r
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect();
        if let Some((_, c)) = headers.iter().find(|(k, _)| k == "set-cookie") {
            let pair = c.split(';').next().unwrap_or_default().to_string();
            self.cookie = (!pair.ends_with('=')).then_some(pair);
        }
        Reply {
            status: r.status().as_u16(),
            body: r.body_mut().read_to_string().unwrap_or_default(),
            headers,
        }
    }

    /// GET `path`.
    pub async fn get(&mut self, path: &str) -> Reply {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header("Cookie", c);
        }
        let r = tokio::task::spawn_blocking(move || req.call())
            .await
            .unwrap();
        self.finish(r)
    }

    /// POST a form to `path`.
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Reply {
        let mut req = self.agent.post(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header("Cookie", c);
        }
        let form: Vec<(String, String)> = form
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let r = tokio::task::spawn_blocking(move || {
            req.send_form(form.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        })
        .await
        .unwrap();
        self.finish(r)
    }

    /// Logs in.
    pub async fn log_in(&mut self, user: &str, password: &str) -> Reply {
        self.post("/login", &[("user", user), ("password", password)])
            .await
    }
}
