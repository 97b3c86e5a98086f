//! The web console over real HTTP (ureq): log-in, sessions and CSRF, the lock-out after failed
//! log-ins, every page, the queue and quarantine actions and their effect on the spool (a
//! released message reaches the mailbox), and escaping of what a message carries.

use std::time::Duration;

use sluice::spool::{SpoolState, SpooledEnvelope};
use sluice_tests::browser::Browser;
use sluice_tests::*;

fn envelope(id: &str, reason: &str) -> SpooledEnvelope {
    spooled(id, "mallory@evil.test", "bob@example.org", Some(reason))
}

async fn console() -> TestServer {
    let server = TestServer::start(
        "[admin]\naddress = \"127.0.0.1:0\"\nmax_failed_logins = 3\n",
        &[],
    )
    .await;
    let admins = server.dir.path().join("admins");
    sluice::smtp_auth::credentials::set_password(&admins, "root", "correct horse").unwrap();
    server
}

#[tokio::test]
async fn log_in_sessions_csrf_and_the_lock_out() {
    let server = console().await;
    let mut b = Browser::new(server.admin.expect("console address"));

    // Nothing but the log-in page, /metrics and /healthz without a log-in.
    for page in [
        "/",
        "/plugins",
        "/queue",
        "/quarantine",
        "/transactions",
        "/quarantine/x",
    ] {
        let r = b.get(page).await;
        assert_eq!(
            (r.status, r.header("location")),
            (303, Some("/login")),
            "{page}"
        );
    }
    let r = b
        .post("/queue/action", &[("action", "retry"), ("id", "x")])
        .await;
    assert_eq!(r.status, 303, "a POST without a log-in goes nowhere");
    assert_eq!(b.get("/healthz").await.body, "ok\n");
    assert!(b.get("/metrics").await.body.contains("# EOF"));
    let page = b.get("/login").await;
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );

    // A form beyond the console's bound (256 KiB) is refused unread.
    let huge = "x".repeat(300 << 10);
    let r = b
        .post("/login", &[("user", "root"), ("password", &huge)])
        .await;
    assert_eq!(r.status, 413);

    // A wrong password, then the right one: a cookie that scripts cannot read.
    let r = b.log_in("root", "wrong").await;
    assert_eq!(r.status, 401);
    assert!(r.body.contains("Wrong user name or password"));
    let r = b.log_in("root", "correct horse").await;
    assert_eq!(r.status, 303);
    let cookie = r.header("set-cookie").unwrap_or_default().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let overview = b.get("/").await;
    assert_eq!(overview.status, 200);
    assert!(
        overview.body.contains("In the queue")
            && overview.body.contains("hx-trigger=\"every 10s\"")
    );
    assert!(b.get("/assets/htmx.min.js").await.body.contains("htmx"));

    // A state-changing request needs the page's CSRF token.
    let csrf = overview.csrf();
    let r = b.post("/plugins/reload", &[]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = b
        .post("/plugins/reload", &[("csrf", "0".repeat(64).as_str())])
        .await;
    assert_eq!(r.status, 403);
    let r = b.post("/plugins/reload", &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("Reloaded: "), "{}", r.body);

    // Logged out: the cookie no longer opens anything.
    let old = b.cookie.clone();
    assert_eq!(b.post("/logout", &[("csrf", &csrf)]).await.status, 303);
    b.cookie = old;
    assert_eq!(b.get("/").await.status, 303);

    // Three failures for a user (the first was above, and a success does not clear a user's
    // count) lock it out, even with the right password afterwards.
    let mut other = Browser::new(server.admin.unwrap());
    for _ in 0..2 {
        assert_eq!(other.log_in("root", "guess").await.status, 401);
    }
    let r = other.log_in("root", "correct horse").await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body.contains("Too many failed log-ins"));
    // The operator ends the lock-out from the command line.
    let cfg = server.dir.path().join("sluice.toml");
    let out = run_client(
        tokio::process::Command::new(sluice_bin())
            .args(["admin", "unlock", "--config"])
            .arg(&cfg),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = other.log_in("root", "correct horse").await;
    assert_eq!(r.status, 303, "{}", r.body);
    server.stop().await;
}

#[tokio::test]
async fn quarantine_shows_markup_as_text_and_a_released_message_is_delivered() {
    let server = console().await;
    let hostile = "X-Spam-Status: Yes, score=31.00 required=5.00\r\n tests=STAT_90_100,HTML_ONLY\r\nFrom: Mallory <mallory@evil.test>\r\nTo: bob@example.org\r\nSubject: <script>alert(1)</script> win\r\n\
                   Content-Type: text/plain\r\n\r\nClick <a href=\"http://evil.test/\">here</a> <img src=\"http://evil.test/p.gif\"> </textarea><script>steal()</script>\r\n";
    let spool = &server.ctx().spool;
    spool
        .store(
            SpoolState::Quarantine,
            &envelope("QX1", "plugin <b>spam-score</b>: score 31"),
            hostile.as_bytes(),
        )
        .await
        .unwrap();
    spool
        .store(
            SpoolState::Quarantine,
            &envelope("QX2", "second"),
            b"Subject: two\r\n\r\nplain\r\n",
        )
        .await
        .unwrap();
    let mut b = Browser::new(server.admin.unwrap());
    assert_eq!(b.log_in("root", "correct horse").await.status, 303);

    let list = b.get("/quarantine").await;
    assert!(list.body.contains("QX1") && list.body.contains("QX2"));
    assert!(
        list.body
            .contains("plugin &lt;b&gt;spam-score&lt;/b&gt;: score 31"),
        "{}",
        list.body
    );
    assert!(!list.body.contains("<b>spam-score"));
    // Each held message's subject (as text) and spam verdict, read from its head.
    assert!(
        list.body
            .contains("&lt;script&gt;alert(1)&lt;/script&gt; win"),
        "{}",
        list.body
    );
    assert!(
        list.body
            .contains("Yes, score=31.00 required=5.00 tests=STAT_90_100,HTML_ONLY")
    );
    assert!(!list.body.contains("<script>alert"));

    let page = b.get("/quarantine/QX1").await;
    assert_eq!(page.status, 200);
    for markup in [
        "<script>alert",
        "<script>steal",
        "<img src",
        "<a href=\"http://evil",
        "</textarea><script>",
    ] {
        assert!(
            !page.body.contains(markup),
            "{markup} reached the page as markup"
        );
    }
    assert!(
        page.body
            .contains("&lt;script&gt;alert(1)&lt;/script&gt; win"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("&lt;img src=&quot;http://evil.test/p.gif&quot;&gt;")
    );
    assert_eq!(
        page.body.matches("<script").count(),
        1,
        "only the console's own script tag"
    );

    // Release QX1 (the same code as `sluice queue quarantine release`): it is delivered.
    let csrf = page.csrf();
    let r = b
        .post(
            "/quarantine/action",
            &[("csrf", &csrf), ("action", "release"), ("id", "QX1")],
        )
        .await;
    assert!(r.body.contains("QX1: released to delivery"), "{}", r.body);
    let mail = server.mailbox("bob", 1).await;
    assert!(mail[0].contains("alert(1)"));
    // Delete QX2, and an unknown id says so.
    let r = b
        .post(
            "/quarantine/action",
            &[
                ("csrf", &csrf),
                ("action", "delete"),
                ("id", "QX2"),
                ("id", "NOPE"),
            ],
        )
        .await;
    assert!(
        r.body.contains("QX2: deleted") && r.body.contains("NOPE: no message NOPE"),
        "{}",
        r.body
    );
    assert!(
        server
            .ctx()
            .spool
            .list(SpoolState::Quarantine)
            .unwrap()
            .is_empty()
    );
    server.stop().await;
}

#[tokio::test]
async fn queue_filters_and_bulk_actions_and_recent_transactions() {
    let server = console().await;
    // Two messages to a domain that does not answer stay in the queue.
    for (id, sender) in [("QA1", "ann@one.test"), ("QA2", "bea@two.test")] {
        let mut e = envelope(id, "");
        e.quarantine = None;
        e.sender.address = sender.into();
        e.recipients[0].address = format!("x@{id}.unreachable.test");
        server
            .ctx()
            .spool
            .store(SpoolState::Queue, &e, b"Subject: q\r\n\r\nq\r\n")
            .await
            .unwrap();
    }
    let mut b = Browser::new(server.admin.unwrap());
    b.log_in("root", "correct horse").await;
    let all = b.get("/queue").await;
    assert!(all.body.contains("QA1") && all.body.contains("QA2"));
    let one = b.get("/queue?sender=ann").await;
    assert!(
        one.body.contains("QA1") && !one.body.contains("QA2"),
        "{}",
        one.body
    );
    let by_domain = b.get("/queue?domain=qa2.unreachable.test").await;
    assert!(by_domain.body.contains("QA2") && !by_domain.body.contains("QA1"));
    // The form sent with every field left empty is no filter at all.
    let empty = b
        .get("/queue?sender=&recipient=&domain=&min_age_minutes=&page=")
        .await;
    assert_eq!(empty.status, 200, "{}", empty.body);
    assert!(empty.body.contains("QA1") && empty.body.contains("QA2"));
    let young = b.get("/queue?min_age_minutes=100000000").await;
    assert!(!young.body.contains("QA1"), "nothing is that old");

    // Hold both at once, then delete one without a bounce.
    let csrf = all.csrf();
    let r = b
        .post(
            "/queue/action",
            &[
                ("csrf", &csrf),
                ("action", "hold"),
                ("id", "QA1"),
                ("id", "QA2"),
            ],
        )
        .await;
    assert!(
        r.body.contains("QA1: held") && r.body.contains("QA2: held"),
        "{}",
        r.body
    );
    assert!(r.body.contains("(held)"));
    let r = b
        .post(
            "/queue/action",
            &[("csrf", &csrf), ("action", "delete-drop"), ("id", "QA2")],
        )
        .await;
    assert!(r.body.contains("QA2: deleted silently"));
    assert_eq!(
        server.ctx().spool.list(SpoolState::Queue).unwrap(),
        vec!["QA1".to_string()]
    );
    let shown = b.get("/queue/QA1").await;
    assert!(shown.body.contains("ann@one.test") && shown.body.contains("Headers"));

    // A message received over SMTP appears among the recent transactions, by address.
    send_to_bob(server.smtp, "transactions page", "hello").await;
    server.mailbox("bob", 1).await;
    let t = b.get("/transactions?q=a%40example.net").await;
    assert!(
        t.body.contains("a@example.net") && t.body.contains("queued"),
        "{}",
        t.body
    );
    let none = b.get("/transactions?q=nobody-at-all").await;
    assert!(none.body.contains("0 shown"));
    let overview = b.get("/overview/panel").await;
    assert!(overview.body.contains("id=\"traffic\""));
    server.stop().await;
}

/// Drives headless Chromium (Selenium, Debian's chromium-driver): log in, look at the overview
/// and the quarantine, release a message. Screenshots go to `OUT`.
const BROWSER: &str = r##"
import os, sys, time
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from selenium.webdriver.support import expected_conditions as EC

base, out = os.environ["BASE"], os.environ["OUT"]
opts = Options()
for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000", "--disable-dev-shm-usage"]:
    opts.add_argument(a)
opts.binary_location = "/usr/bin/chromium"
d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
d.set_page_load_timeout(30)
try:
    wait = WebDriverWait(d, 20)
    d.get(base + "/login")
    d.find_element(By.NAME, "user").send_keys(os.environ["USER_NAME"])
    d.find_element(By.NAME, "password").send_keys(os.environ["USER_PW"])
    d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(EC.title_contains("Overview"))
    # htmx replaces the panel in place: wait for one refresh request to have run.
    wait.until(lambda d: d.execute_script("return typeof htmx !== 'undefined'"))
    d.save_screenshot(os.path.join(out, "overview.png"))
    # Each chart has a labelled y axis (from 0) and x axis (to "now").
    labels = d.execute_script("return Array.from(document.querySelectorAll('figure svg')).map(s => Array.from(s.querySelectorAll('text')).map(t => t.textContent.trim()))")
    assert len(labels) == 3 and all("0" in l and "now" in l and "-12h" in l for l in labels), labels
    print("chart axes labelled")
    # Wide tables fit a narrow window: the page itself never scrolls sideways.
    d.set_window_size(700, 900)
    for page in ["/", "/queue", "/quarantine", "/transactions", "/plugins"]:
        d.get(base + page)
        sizes = d.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert sizes[0] <= sizes[1], (page, sizes)
    print("pages fit the window")
    d.set_window_size(1280, 1000)
    d.get(base + "/quarantine")
    wait.until(EC.title_contains("Quarantine"))
    d.save_screenshot(os.path.join(out, "quarantine.png"))
    d.find_element(By.CSS_SELECTOR, "a[href='/quarantine/QB1']").click()
    wait.until(EC.presence_of_element_located((By.ID, "headers")))
    # The subject's markup is text on the page, not an element.
    assert "<b>draft</b>" in d.find_element(By.ID, "headers").text
    assert not d.find_elements(By.CSS_SELECTOR, "#headers b")
    d.save_screenshot(os.path.join(out, "message.png"))
    d.find_element(By.CSS_SELECTOR, "button[value=release]").click()
    wait.until(EC.presence_of_element_located((By.ID, "results")))
    print(d.find_element(By.ID, "results").text)
finally:
    d.quit()
"##;

#[tokio::test]
async fn a_browser_logs_in_releases_a_quarantined_message_and_sees_it_delivered() {
    for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            std::path::Path::new(tool).exists(),
            "{tool} is missing: scripts/test installs chromium and chromium-driver"
        );
    }
    let server = console().await;
    // Some traffic for the overview's charts and tables.
    for i in 0..3 {
        send_to_bob(server.smtp, &format!("traffic {i}"), "hello").await;
    }
    server.mailbox("bob", 3).await;
    let spool = &server.ctx().spool;
    spool
        .store(
            SpoolState::Quarantine,
            &envelope("QB1", "spam-score: score 16.2 (STAT_90_100, HTML_ONLY)"),
            b"X-Spam-Score: 16.20\r\nX-Spam-Status: Yes, score=16.20 required=5.00 tests=STAT_90_100,HTML_ONLY\r\nFrom: Newsletter <news@shop.test>\r\nTo: bob@example.org\r\nSubject: Weekly report <b>draft</b>\r\n\r\nThe figures are in.\r\n",
        )
        .await
        .unwrap();
    spool
        .store(
            SpoolState::Quarantine,
            &envelope("QB2", "dmarc: p=quarantine for evil.test"),
            b"Subject: hello\r\n\r\nhi\r\n",
        )
        .await
        .unwrap();
    let out = workspace_root().join("target/console-screenshots");
    std::fs::create_dir_all(&out).unwrap();
    let run = run_client(
        tokio::process::Command::new(workspace_root().join(".venv/bin/python"))
            .arg("-c")
            .arg(BROWSER)
            .env("BASE", format!("http://{}", server.admin.unwrap()))
            .env("OUT", &out)
            .env("USER_NAME", "root")
            .env("USER_PW", "correct horse"),
    )
    .await;
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the browser run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("QB1: released to delivery"), "{stdout}");
    assert!(
        stdout.contains("chart axes labelled") && stdout.contains("pages fit the window"),
        "{stdout}"
    );
    let mail = server.mailbox("bob", 4).await;
    assert!(
        mail.iter()
            .any(|m| m.contains("Weekly report <b>draft</b>"))
    );
    for shot in ["overview.png", "quarantine.png", "message.png"] {
        let png = std::fs::read(out.join(shot)).unwrap();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{shot}: {} bytes",
            png.len()
        );
    }
    server.stop().await;
}

/// A console with spam-score learning into a directory of its own (returned), an
/// administrator `root` (password `pw`), `extra` TOML, and message `id` quarantined.
async fn learning_console(extra: &str, id: &str) -> (tempfile::TempDir, TestServer) {
    let state = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        &format!(
            "[admin]\naddress = \"127.0.0.1:0\"\n[plugin.spam-score]\nread_dirs = [{dir:?}]\n\
             [plugin.spam-score.config]\nlearned = {file:?}\n{extra}",
            dir = state.path(),
            file = state.path().join("learned.bin"),
        ),
        &[("spam-score", plugin("bundled", "20-spam-score"))],
    )
    .await;
    sluice::smtp_auth::credentials::set_password(&server.dir.path().join("admins"), "root", "pw")
        .unwrap();
    server
        .ctx()
        .spool
        .store(
            SpoolState::Quarantine,
            &envelope(id, "held for review"),
            b"From: Deals <deals@shop.test>\r\nSubject: Members' prices\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nOur summer catalogue: garden furniture at members' prices, order today.\r\n",
        )
        .await
        .unwrap();
    (state, server)
}

#[tokio::test]
async fn quarantined_mail_is_learned_as_spam_from_the_console() {
    let (state, server) = learning_console("", "QL1").await;
    let mut b = Browser::new(server.admin.unwrap());
    b.log_in("root", "pw").await;
    let csrf = b.get("/quarantine").await.csrf();
    let r = b
        .post(
            "/quarantine/action",
            &[("csrf", &csrf), ("action", "learn-spam"), ("id", "QL1")],
        )
        .await;
    assert!(r.body.contains("1 learned (0 unchanged)"), "{}", r.body);
    let log: Vec<String> = std::fs::read_dir(state.path().join("learned-messages"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".spam"))
        .collect();
    assert_eq!(log.len(), 1, "{log:?}");
    // Learning leaves the message where it was: the operator still decides its fate.
    assert_eq!(
        server.ctx().spool.list(SpoolState::Quarantine).unwrap(),
        vec!["QL1".to_string()]
    );
    server.stop().await;
}

/// Ids from a form or a URL name spool files only when they have the spool's id format: a
/// `../x` once deleted any `*.msg` file the service could write.
#[tokio::test]
async fn ids_that_climb_out_of_the_spool_are_refused() {
    let server = console().await;
    let spool_root = server.ctx().spool.root().to_path_buf();
    // A file one level above the queue and the quarantine, where `../victim` would lead.
    let victim = spool_root.join("victim.msg");
    std::fs::write(&victim, b"not a queued message").unwrap();
    let mut b = Browser::new(server.admin.unwrap());
    b.log_in("root", "correct horse").await;
    let csrf = b.get("/queue").await.csrf();
    for action in ["delete-drop", "delete-bounce", "hold", "retry"] {
        let r = b
            .post(
                "/queue/action",
                &[("csrf", &csrf), ("action", action), ("id", "../victim")],
            )
            .await;
        assert!(r.body.contains("is not a queue id"), "{action}: {}", r.body);
    }
    for action in ["delete", "release", "learn-spam"] {
        let r = b
            .post(
                "/quarantine/action",
                &[("csrf", &csrf), ("action", action), ("id", "../victim")],
            )
            .await;
        assert!(r.body.contains("is not a queue id"), "{action}: {}", r.body);
    }
    let shown = b.get("/quarantine/..%2Fvictim").await;
    assert!(shown.body.contains("is not a queue id"), "{}", shown.body);
    assert_eq!(std::fs::read(&victim).unwrap(), b"not a queued message");
}

/// The console's Learn waits for another learner's lock without holding up anything else: a
/// greeting on port 25 comes back while the lock is held (the wait used to block a worker
/// thread, and on a one-thread runtime the whole server).
#[tokio::test]
async fn learning_waits_for_the_lock_without_holding_up_smtp() {
    use tokio::io::AsyncReadExt;
    let (state, server) =
        learning_console("[spam_learning]\nlock_timeout_secs = 30\n", "QL2").await;
    // Another learner holds the lock.
    let log = state.path().join("learned-messages");
    std::fs::create_dir(&log).unwrap();
    let held = std::fs::File::create(log.join(".lock")).unwrap();
    held.lock().unwrap();

    let mut b = Browser::new(server.admin.unwrap());
    b.log_in("root", "pw").await;
    let csrf = b.get("/quarantine").await.csrf();
    let learning = tokio::spawn(async move {
        b.post(
            "/quarantine/action",
            &[("csrf", &csrf), ("action", "learn-spam"), ("id", "QL2")],
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let mut smtp = tokio::net::TcpStream::connect(server.smtp).await.unwrap();
    let mut greeting = [0u8; 3];
    tokio::time::timeout(Duration::from_secs(10), smtp.read_exact(&mut greeting))
        .await
        .expect("a greeting while another learner holds the lock")
        .unwrap();
    assert_eq!(&greeting, b"220");
    eprintln!(
        "greeting on port 25 in {:.1} ms while the learner waited for the lock",
        started.elapsed().as_secs_f64() * 1000.0
    );
    assert!(!learning.is_finished(), "the learner is still waiting");
    drop(held);
    let r = learning.await.unwrap();
    assert!(r.body.contains("1 learned (0 unchanged)"), "{}", r.body);
    server.stop().await;
}

/// One HTTP/1.1 request from the loopback address `from` (127.0.0.x), over a raw socket:
/// (status, the whole response).
async fn raw_http(to: std::net::SocketAddr, from: [u8; 4], request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::from((from, 0))).unwrap();
    let mut s = socket.connect(to).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("an answer within 20 s")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn login_request(to: std::net::SocketAddr, user: &str, password: &str) -> String {
    let body = format!("user={user}&password={password}");
    format!(
        "POST /login HTTP/1.1\r\nHost: {to}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A guesser spread over many addresses cannot lock the administrator out from everywhere:
/// the user's count applies only to addresses that failed themselves. And guesses sent at
/// once are counted before the password is checked, so no more than the limit are checked.
#[tokio::test]
async fn the_log_in_throttle_cannot_lock_the_administrator_out_and_counts_parallel_guesses() {
    let server = console().await;
    let addr = server.admin.unwrap();
    // Five addresses fail for root (the limit is 3).
    for last in 2..7 {
        let (status, _) = raw_http(
            addr,
            [127, 0, 0, last],
            &login_request(addr, "root", "guess"),
        )
        .await;
        assert_eq!(status, 401);
    }
    // Each of them is now refused for root without a check...
    let (status, _) = raw_http(
        addr,
        [127, 0, 0, 2],
        &login_request(addr, "root", "correct%20horse"),
    )
    .await;
    assert_eq!(status, 429);
    // ...but the administrator, from an address that never failed, logs in.
    let (status, text) = raw_http(
        addr,
        [127, 0, 0, 1],
        &login_request(addr, "root", "correct%20horse"),
    )
    .await;
    assert_eq!(status, 303, "{text}");

    // Ten guesses at once from one new address: at most three are checked.
    let guesses = (0..10).map(|_| {
        tokio::spawn(async move {
            raw_http(
                addr,
                [127, 0, 0, 9],
                &login_request(addr, "someone", "guess"),
            )
            .await
            .0
        })
    });
    let mut statuses = Vec::new();
    for g in guesses {
        statuses.push(g.await.unwrap());
    }
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!(checked <= 3, "{checked} guesses were checked: {statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 10 - checked);
    server.stop().await;
}

/// A log-in ends when its administrator's password changes or they are removed.
#[tokio::test]
async fn a_session_ends_when_the_password_changes_or_the_user_is_removed() {
    let server = console().await;
    let admins = server.dir.path().join("admins");
    sluice::smtp_auth::credentials::set_password(&admins, "ops", "second pw").unwrap();
    let mut root = Browser::new(server.admin.unwrap());
    let mut ops = Browser::new(server.admin.unwrap());
    assert_eq!(root.log_in("root", "correct horse").await.status, 303);
    assert_eq!(ops.log_in("ops", "second pw").await.status, 303);
    assert_eq!(root.get("/").await.status, 200);
    assert_eq!(ops.get("/").await.status, 200);
    // A new password for root (the file's time must move on for it to be re-read).
    tokio::time::sleep(Duration::from_millis(20)).await;
    sluice::smtp_auth::credentials::set_password(&admins, "root", "new horse").unwrap();
    let r = root.get("/").await;
    assert_eq!((r.status, r.header("location")), (303, Some("/login")));
    assert_eq!(ops.get("/").await.status, 200, "the other log-in stays");
    // ops removed from the file.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let text = std::fs::read_to_string(&admins).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| !l.starts_with("ops:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&admins, kept).unwrap();
    assert_eq!(ops.get("/").await.status, 303);
    assert_eq!(root.log_in("root", "new horse").await.status, 303);
    assert_eq!(root.get("/").await.status, 200);
    server.stop().await;
}

/// Both HTTP servers answer only to their own names (DNS rebinding), serve `/plugins` only
/// when configured, and share their connections fairly between client addresses.
#[tokio::test]
async fn http_endpoints_refuse_other_host_names_and_share_connections_fairly() {
    let server = TestServer::start(
        "[admin]\naddress = \"127.0.0.1:0\"\n[metrics]\naddress = \"127.0.0.1:0\"\n",
        &[],
    )
    .await;
    let console = server.admin.unwrap();
    let metrics = server.metrics.expect("metrics address");
    for addr in [console, metrics] {
        for (host, want) in [
            (format!("{addr}"), 200),
            ("localhost".to_string(), 200),
            ("mx.test".to_string(), 200),
            ("attacker.example".to_string(), 421),
            ("attacker.example:80".to_string(), 421),
        ] {
            let (status, text) = raw_http(
                addr,
                [127, 0, 0, 1],
                &format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
            )
            .await;
            assert_eq!(status, want, "{addr} Host: {host}: {text}");
        }
    }
    let (status, text) = raw_http(
        metrics,
        [127, 0, 0, 1],
        &format!("GET /plugins HTTP/1.1\r\nHost: {metrics}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("[metrics] plugins = true"), "{text}");

    // One address opens all the console's connections and keeps them; another is served.
    let mut held = Vec::new();
    for _ in 0..40 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        held.push(socket.connect(console).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let (status, _) = tokio::time::timeout(
        Duration::from_secs(5),
        raw_http(
            console,
            [127, 0, 0, 2],
            &format!("GET /healthz HTTP/1.1\r\nHost: {console}\r\nConnection: close\r\n\r\n"),
        ),
    )
    .await
    .expect("served while another address holds connections");
    assert_eq!(status, 200);
    eprintln!(
        "served in {:.0} ms while one address held 40 connections",
        started.elapsed().as_secs_f64() * 1000.0
    );
    drop(held);
    server.stop().await;
}

/// The queue and the quarantine show a page at a time (100 messages), with the count and the
/// way to the next page; a filter field left empty is no filter.
#[tokio::test]
async fn queue_and_quarantine_are_shown_a_page_at_a_time() {
    let server = console().await;
    let spool = server.ctx().spool.clone();
    let stores = (0..230).map(|i| {
        let spool = spool.clone();
        async move {
            let id = format!("PG{i:04}");
            spool
                .store(
                    SpoolState::Quarantine,
                    &envelope(&id, "held"),
                    format!("Subject: page test {i}\r\n\r\nx\r\n").as_bytes(),
                )
                .await
                .unwrap();
        }
    });
    for s in stores {
        s.await;
    }
    let mut b = Browser::new(server.admin.unwrap());
    b.log_in("root", "correct horse").await;
    let rows = |body: &str| body.matches("name=\"id\" value=\"PG").count();
    let first = b.get("/quarantine").await;
    assert!(
        first.body.contains("230 messages, page 1 of 3"),
        "{}",
        first.body
    );
    assert_eq!(rows(&first.body), 100);
    assert!(first.body.contains("page test 0<") || first.body.contains("page test 0 "));
    let last = b.get("/quarantine?page=3").await;
    assert_eq!(rows(&last.body), 30);
    assert!(
        last.body.contains("page test 229"),
        "the summaries of the page shown"
    );
    let queue = b
        .get("/queue?sender=&recipient=&domain=&min_age_minutes=")
        .await;
    assert_eq!(queue.status, 200, "{}", queue.body);
    assert!(queue.body.contains("0 messages"), "{}", queue.body);
    server.stop().await;
}
