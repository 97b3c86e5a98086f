//! The console's pages (maud: every `(value)` is HTML-escaped, so nothing a message, a client
//! or a plugin wrote can become markup).

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::QueueFilter;
use crate::admin::journal::Transaction;
use crate::delivery::admin::Entry;
use crate::server::context::ServerContext;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}\
nav{background:#234;padding:.6em 1em;display:flex;gap:1.2em;align-items:center}\
nav a{color:#fff;text-decoration:none}nav form{margin-left:auto}\
main{padding:1em 1.5em}table{border-collapse:collapse;width:100%;background:#fff}\
th,td{border-bottom:1px solid #ddd;padding:.35em .5em;text-align:left;vertical-align:top;font-size:.92em}\
th{background:#eef}pre{background:#fff;border:1px solid #ddd;padding:.8em;white-space:pre-wrap;word-break:break-all}\
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{background:#fff;border:1px solid #ddd;padding:.7em 1em;min-width:9em}\
.card b{font-size:1.6em;display:block}.note{background:#ffd;border:1px solid #cc8;padding:.5em 1em}\
.bad{color:#a00}button{cursor:pointer}form.inline{display:inline}\
main{box-sizing:border-box;max-width:100vw;overflow-x:auto}td{overflow-wrap:anywhere}";

fn layout(title: &str, user: Option<(&str, &str)>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;
                title { (title) " · Sluice" }
                style { (PreEscaped(STYLE)) }
                script src="/assets/htmx.min.js" {}
            }
            body {
                @if let Some((user, csrf)) = user {
                    nav {
                        strong style="color:#fff" { "Sluice" }
                        a href="/" { "Overview" }
                        a href="/plugins" { "Plugins" }
                        a href="/queue" { "Queue" }
                        a href="/quarantine" { "Quarantine" }
                        a href="/transactions" { "Transactions" }
                        a href="/state" { "Plugin state" }
                        form.inline method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            span style="color:#cde" { (user) " " }
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// The log-in page, with a message after a failure.
pub fn login(message: Option<&str>) -> Markup {
    layout(
        "Log in",
        None,
        html! {
            @if let Some(m) = message { p.note { (m) } }
            form method="post" action="/login" {
                p { label { "User " input name="user" autocomplete="username" required; } }
                p { label { "Password " input name="password" type="password" autocomplete="current-password" required; } }
                button type="submit" { "Log in" }
            }
        },
    )
}

/// An SVG bar chart of `series` (oldest first), drawn here so the page needs no chart script.
/// A bar chart of `series` (one bar per hour, the last 24 hours, the last bar this hour),
/// with a labelled y axis (messages per hour: 0, half, the highest) and x axis (hours ago).
fn chart(label: &str, series: &[u64], color: &str) -> Markup {
    let max = series.iter().copied().max().unwrap_or(0).max(1);
    let n = series.len() as u64;
    // Bar width and plot height; margins for the axis labels.
    let (w, h, left, bottom, top) = (16u64, 80u64, 40u64, 20u64, 8u64);
    let width = left + w * n + 8;
    let height = top + h + bottom;
    let y = |v: u64| top + h - v * h / max;
    let hours_ago = |i: u64| n - 1 - i;
    html! {
        figure style="margin:0 0 1em 0" {
            figcaption { (label) ": messages per hour, the last " (n) " hours" }
            svg width=(width) height=(height) viewBox=(format!("0 0 {width} {height}")) role="img" aria-label=(format!("{label}, messages per hour")) style="max-width:100%;height:auto" {
                rect x=(left) y=(top) width=(w * n) height=(h) fill="#fff" stroke="#ddd" {}
                // The y axis: 0, half and the highest value, with grid lines.
                @for v in [0, max / 2, max] {
                    line x1=(left - 4) y1=(y(v)) x2=(left + w * n) y2=(y(v)) stroke="#eee" {}
                    text x=(left - 6) y=(y(v) + 4) text-anchor="end" font-size="10" fill="#555" { (v) }
                }
                line x1=(left) y1=(top) x2=(left) y2=(top + h) stroke="#888" {}
                line x1=(left) y1=(top + h) x2=(left + w * n) y2=(top + h) stroke="#888" {}
                @for (i, v) in series.iter().enumerate() {
                    @let bh = v * h / max;
                    rect x=(left + i as u64 * w + 1) y=(top + h - bh) width=(w - 2) height=(bh) fill=(color) {
                        title { (v) " in the hour " (hours_ago(i as u64)) " h ago" }
                    }
                }
                // The x axis: hours ago, every sixth hour, and "now".
                @for i in (0..n).filter(|i| hours_ago(*i) % 6 == 0) {
                    text x=(left + i * w + w / 2) y=(top + h + 14) text-anchor="middle" font-size="10" fill="#555" {
                        @if hours_ago(i) == 0 { "now" } @else { "-" (hours_ago(i)) "h" }
                    }
                }
            }
        }
    }
}

/// The overview's numbers and charts (the part htmx refreshes).
pub fn overview_panel(ctx: &ServerContext, (queued, quarantined): (usize, usize)) -> Markup {
    let j = crate::admin::journal::get();
    // (row, counted events): the last hour's and day's totals of their sum.
    // `message:accepted` was the milter's name for `queued` before both front ends used one;
    // a journal restored from then still counts.
    let events: [(&str, &[&str]); 7] = [
        ("accepted", &["message:queued", "message:accepted"]),
        // Refusals at MAIL and RCPT (greylisting, relay denial, …) count with those after
        // DATA.
        ("rejected", &["message:reject", "envelope:reject"]),
        ("tempfailed", &["message:tempfail", "envelope:tempfail"]),
        ("quarantined", &["message:quarantined"]),
        ("discarded", &["message:discarded"]),
        ("delivered", &["delivery:delivered"]),
        ("deferred", &["delivery:deferred"]),
    ];
    let rows: Vec<(&str, u64, u64)> = events
        .iter()
        .map(|(name, events)| {
            let sum = |m: u64| events.iter().map(|e| j.total(e, m)).sum::<u64>();
            (*name, sum(60), sum(24 * 60))
        })
        .collect();
    let hourly = |a: &str, b: &str| -> Vec<u64> {
        j.series(a, 60, 24)
            .iter()
            .zip(j.series(b, 60, 24))
            .map(|(x, y)| x + y)
            .collect()
    };
    let live = ctx.live();
    let described = live.pipeline.describe();
    let stats = j.plugin_stats();
    html! {
        div #panel hx-get="/overview/panel" hx-trigger="every 10s" hx-swap="outerHTML" {
            div.cards {
                div.card { "In the queue" b #queue-size { (queued) } }
                div.card { "In quarantine" b #quarantine-size { (quarantined) } }
            }
            h2 { "Messages" }
            table #traffic {
                tr { th { "" } th { "last hour" } th { "last day" } }
                @for (name, hour, day) in &rows {
                    tr { td { (name) } td { (hour) } td { (day) } }
                }
            }
            h2 { "Traffic" }
            (chart("Accepted", &hourly("message:queued", "message:accepted"), "#4a7"))
            (chart("Rejected", &hourly("message:reject", "envelope:reject"), "#c44"))
            (chart("Delivered", &j.series("delivery:delivered", 60, 24), "#47a"))
            h2 { "Plugins" }
            table #plugin-stats {
                tr { th { "plugin" } th { "calls" } th { "failures" } th { "cool-downs" } th { "p50 ms" } th { "p99 ms" } }
                @for p in &described {
                    @let name = p.name.as_str();
                    @let s = stats.iter().find(|s| s.plugin == name);
                    tr {
                        td { (name) }
                        td { (s.map_or(0, |s| s.calls)) }
                        td { (s.map_or(0, |s| s.failures)) }
                        td { (p.health.cooldowns) }
                        td { (format!("{:.2}", s.map_or(0, |s| s.p50_us) as f64 / 1000.0)) }
                        td { (format!("{:.2}", s.map_or(0, |s| s.p99_us) as f64 / 1000.0)) }
                    }
                }
            }
        }
    }
}

/// The overview page.
pub fn overview(user: &str, csrf: &str, ctx: &ServerContext, sizes: (usize, usize)) -> Markup {
    layout("Overview", Some((user, csrf)), overview_panel(ctx, sizes))
}

/// The plugins in service, with the reload button and the last reload's outcome, and the
/// capture's state.
pub fn plugins(
    user: &str,
    csrf: &str,
    ctx: &ServerContext,
    capture: &crate::capture::Status,
    reloaded: Option<Result<String, String>>,
) -> Markup {
    let rows = ctx.live().pipeline.describe();
    let problems: Vec<(String, String)> = ctx
        .load_problems
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(f, why)| (f.display().to_string(), why.clone()))
        .collect();
    layout(
        "Plugins",
        Some((user, csrf)),
        html! {
            @match &reloaded {
                Some(Ok(summary)) => p.note #reload-result { "Reloaded: " (summary) },
                Some(Err(why)) => p.note.bad #reload-result { "Reload refused, the old configuration stays: " (why) },
                None => {},
            }
            form method="post" action="/plugins/reload" {
                input type="hidden" name="csrf" value=(csrf);
                button type="submit" { "Reload configuration and plugins" }
            }
            @if !problems.is_empty() {
                div.note.bad #load-problems {
                    b { "Files of the plugin directory not in service:" }
                    @for (file, why) in &problems {
                        div { code { (file) } ": " (why) }
                    }
                }
            }
            table #plugins {
                tr { th { "#" } th { "name" } th { "version" } th { "hooks" } th { "scope" } th { "limits" } th { "on failure" } th { "health" } th { "sha256" } th { "signed by" } }
                @for p in &rows {
                    tr {
                        td { (p.order) }
                        td { (p.name) }
                        td { (p.version) }
                        td { (p.hooks.join(", ")) }
                        td { "listeners: " (p.scope.listeners.iter().map(|l| l.as_str()).collect::<Vec<_>>().join(", ")) br; "domains: " (p.scope.domains.join(", ")) }
                        td { (p.limits.timeout_ms) " ms, " (p.limits.memory_mb) " MiB" br; "capabilities: " (p.capabilities.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")) }
                        td { (p.limits.on_failure) }
                        td {
                            @match p.health.cooldown_secs_left {
                                Some(s) => span.bad { "cooling down, " (s) " s left" },
                                None => "in service",
                            }
                        }
                        td { code { (p.sha256.get(..16).unwrap_or_default()) "…" } }
                        td { @match &p.signed_by { Some(s) => { (s.name) }, None => { "unsigned" } } }
                    }
                }
            }
            h3 { "What each plugin costs" }
            p { "Means per call since each plugin was loaded; CPU time is the plugin thread's while the call runs. An instance is created for each transaction that calls the plugin." }
            table #costs {
                tr { th { "plugin" } th { "hook" } th { "calls" } th { "CPU µs" } th { "wall µs" } th { "kv / call" } th { "dns / call" } th { "memory" } }
                @for p in &rows {
                    @for h in &p.cost.hooks {
                        tr {
                            td { (p.name) }
                            td { (h.hook) @if h.hook == "instantiate" { " (" (format!("{:.0} %", p.cost.instantiate_share * 100.0)) " of its CPU)" } }
                            td { (h.calls) }
                            td { (format!("{:.0}", h.cpu_us)) }
                            td { (format!("{:.0}", h.wall_us)) }
                            td { (format!("{:.1}", h.kv_per_call)) }
                            td { (format!("{:.1}", h.dns_per_call)) }
                            td { (format!("{:.1} MiB", h.memory_max as f64 / 1048576.0)) }
                        }
                    }
                }
            }
            @for p in &rows {
                @if let Some(s) = &p.shadow {
                    (shadow_section(&p.name, s, csrf))
                }
            }
            (capture_section(capture, csrf))
        },
    )
}

/// The capture: on or off, its records, and the button that keeps the next transactions.
fn capture_section(s: &crate::capture::Status, csrf: &str) -> Markup {
    html! {
        section.capture id="capture" {
            h3 { "Capture" }
            @if let Some(dir) = &s.dir {
                p {
                    (s.records) " records (" (format!("{:.1} MiB", s.bytes as f64 / 1048576.0))
                    ") in " code { (dir) } "; " (s.kept) " kept and " (s.dropped)
                    " dropped since start; " (s.pending_on_demand) " transactions still to keep on demand. "
                    "Replay them with " code { "sluice plugin check --capture " (dir) } "."
                }
                form method="post" action="/capture/next" {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="number" name="count" value="10" min="1" max="1000";
                    button type="submit" { "Capture the next transactions" }
                }
            } @else {
                p { "Capture is off (" code { "[capture] enabled = true" } " turns it on)." }
            }
        }
    }
}

/// A plugin's shadow: how its verdicts compare with the live version's, the last differing
/// transactions, and the button that promotes it.
fn shadow_section(name: &str, s: &crate::plugin::shadow::ShadowRow, csrf: &str) -> Markup {
    html! {
        section.shadow id={ "shadow-" (name) } {
            h3 { "Shadow of " (name) ": " code { (s.file) } " (version " (s.version) ")" }
            p {
                "Sample " (format!("{:.0} %", s.sample * 100.0)) " of transactions; "
                (s.transactions) " transactions, " (s.calls) " calls; "
                b { (s.differing) " differing" } "; mean score change "
                (format!("{:+.2}", s.mean_score_delta)) "."
                br;
                "Call time p50 / p99: live " (s.live_p50_us) " / " (s.live_p99_us) " µs, shadow "
                (s.shadow_p50_us) " / " (s.shadow_p99_us) " µs. Failures: live "
                (s.live_failures) ", shadow " (s.shadow_failures) "."
            }
            table.by-action {
                tr { th { "live" } th { "shadow" } th { "calls" } }
                @for (l, sh, n) in &s.by_action {
                    tr.(if l == sh { "same" } else { "differs" }) { td { (l) } td { (sh) } td { (n) } }
                }
            }
            @if !s.recent.is_empty() {
                table.recent {
                    tr { th { "transaction" } th { "hook" } th { "live" } th { "shadow" } }
                    @for d in &s.recent {
                        tr {
                            td { code { (d.transaction) } }
                            td { (d.hook) }
                            td { (d.live.action) " " (format!("{:+.2}", d.live.score)) " " small { (d.live.detail) } }
                            td { (d.shadow.action) " " (format!("{:+.2}", d.shadow.score)) " " small { (d.shadow.detail) } }
                        }
                    }
                }
            }
            form method="post" action="/plugins/promote" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="plugin" value=(name);
                button type="submit" { "Promote the shadow of " (name) }
            }
        }
    }
}

fn results_note(results: &Option<Vec<String>>) -> Markup {
    html! {
        @if let Some(lines) = results {
            div.note #results { @for l in lines { div { (l) } } }
        }
    }
}

/// One entry of a plugin's state.
#[derive(Debug, Clone)]
pub struct StateRow {
    /// The key, without the plugin's `NAME:` namespace.
    pub key: String,
    /// The value (as text, cut to 200 characters).
    pub value: String,
    /// Seconds before it expires, when it does.
    pub expires_secs: Option<u64>,
}

/// The plugin-state page: the plugins granted `kv`, the chosen one's entries, each with a
/// button that clears it.
pub fn state(
    user: &str,
    csrf: &str,
    plugins: &[String],
    plugin: Option<&str>,
    q: &str,
    rows: Option<Result<Vec<StateRow>, String>>,
    note: Option<String>,
) -> Markup {
    layout(
        "Plugin state",
        Some((user, csrf)),
        html! {
            @if let Some(n) = &note { p.note #results { (n) } }
            @if plugins.is_empty() {
                p { "No plugin in service is granted the key-value store." }
            } @else {
                form method="get" action="/state" {
                    "Plugin " select name="plugin" {
                        @for p in plugins {
                            option value=(p) selected[Some(p.as_str()) == plugin] { (p) }
                        }
                    }
                    " key contains " input name="q" value=(q); " " button type="submit" { "Show" }
                }
                @match &rows {
                    Some(Err(why)) => p.bad { "The store cannot be read: " (why) },
                    Some(Ok(rows)) => {
                        p { (rows.len()) " entries shown (at most 200), in key order" }
                        table #state {
                            tr { th { "key" } th { "value" } th { "expires in" } th { "" } }
                            @for r in rows {
                                tr {
                                    td { code { (r.key) } }
                                    td { code { (r.value) } }
                                    td { @match r.expires_secs { Some(s) => { (s) " s" }, None => "never" } }
                                    td {
                                        form.inline method="post" action="/state/delete" {
                                            input type="hidden" name="csrf" value=(csrf);
                                            input type="hidden" name="plugin" value=(plugin.unwrap_or_default());
                                            input type="hidden" name="key" value=(r.key);
                                            button type="submit" { "Clear" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    None => {}
                }
            }
        },
    )
}

/// A quarantined message's subject and spam verdict, read from its head.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// The decoded subject.
    pub subject: String,
    /// Its `X-Spam-Status` (score and symbols), unfolded; empty when it has none.
    pub spam: String,
}

fn entries_table(
    kind: &str,
    csrf: &str,
    entries: &[Entry],
    summaries: &std::collections::HashMap<String, Summary>,
    actions: &[(&str, &str)],
) -> Markup {
    html! {
        form method="post" action=(format!("/{kind}/action")) {
            input type="hidden" name="csrf" value=(csrf);
            p {
                @for (value, label) in actions {
                    button type="submit" name="action" value=(value) { (label) } " "
                }
                " the selected messages"
            }
            table #messages {
                tr {
                    th { "" } th { "id" } th { "received" } th { "sender" } th { "recipients" }
                    th { "size" } th { "attempts" }
                    @if kind == "quarantine" { th { "reason" } th { "subject" } th { "spam status (score, symbols)" } } @else { th { "next attempt" } }
                }
                @for e in entries {
                    tr {
                        td { input type="checkbox" name="id" value=(e.id); }
                        td { a href=(format!("/{kind}/{}", e.id)) { (e.id) } @if e.held { " (held)" } }
                        td { (e.received_at) }
                        td { (e.sender) }
                        td {
                            @for (r, status, reply) in &e.recipients {
                                div { (r) " — " (format!("{status:?}").to_lowercase())
                                    @if let Some(reply) = reply { ": " (reply) } }
                            }
                        }
                        td { (e.size) }
                        td { (e.attempts) }
                        @if kind == "quarantine" {
                            @let summary = summaries.get(&e.id).cloned().unwrap_or_default();
                            td { (e.quarantine.as_deref().unwrap_or_default()) }
                            td { (summary.subject) }
                            td { (summary.spam) }
                        } @else {
                            td { (e.next_attempt.as_deref().unwrap_or("now")) }
                        }
                    }
                }
            }
        }
    }
}

/// The queue, filtered, with the actions.
/// One page of a listing.
pub struct Listed {
    /// The entries shown.
    pub entries: Vec<Entry>,
    /// How many there are in all (after the filter).
    pub total: usize,
    /// The page shown, from 1.
    pub page: usize,
    /// How many pages there are.
    pub pages: usize,
}

/// "N messages, page P of Q" with links to the neighbouring pages; `query` is the rest of the
/// page's query string (the filters).
fn pager(path: &str, query: &str, l: &Listed) -> Markup {
    let link = |page: usize| format!("{path}?{query}page={page}");
    html! {
        p {
            (l.total) " messages"
            @if l.pages > 1 {
                ", page " (l.page) " of " (l.pages) " "
                @if l.page > 1 { a href=(link(l.page - 1)) { "previous" } " " }
                @if l.page < l.pages { a href=(link(l.page + 1)) { "next" } }
            }
        }
    }
}

/// A query string's part for a filter value (`key=value&`, encoded), or nothing.
fn query_part(key: &str, value: &str) -> String {
    if value.is_empty() {
        return String::new();
    }
    let encoded: String = value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.@".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("{key}={encoded}&")
}

pub fn queue(
    user: &str,
    csrf: &str,
    filter: &QueueFilter,
    entries: Result<Listed, String>,
    results: Option<Vec<String>>,
) -> Markup {
    let query = query_part("sender", &filter.sender)
        + &query_part("recipient", &filter.recipient)
        + &query_part("domain", &filter.domain)
        + &query_part(
            "min_age_minutes",
            &filter
                .min_age_minutes
                .map(|m| m.to_string())
                .unwrap_or_default(),
        );
    layout(
        "Queue",
        Some((user, csrf)),
        html! {
            (results_note(&results))
            form method="get" action="/queue" {
                "Sender " input name="sender" value=(filter.sender);
                " recipient " input name="recipient" value=(filter.recipient);
                " domain " input name="domain" value=(filter.domain);
                " at least " input name="min_age_minutes" size="4" value=(filter.min_age_minutes.map(|m| m.to_string()).unwrap_or_default()); " minutes old "
                button type="submit" { "Filter" }
            }
            @match entries {
                Ok(listed) => {
                    (pager("/queue", &query, &listed))
                    (entries_table("queue", csrf, &listed.entries, &std::collections::HashMap::new(), &[("retry", "Retry now"), ("hold", "Hold"), ("release", "Release"), ("delete-bounce", "Delete and bounce"), ("delete-drop", "Delete silently")]))
                },
                Err(e) => p.bad { "Cannot read the queue: " (e) },
            }
        },
    )
}

/// The quarantine, with the actions.
pub fn quarantine(
    user: &str,
    csrf: &str,
    entries: Result<Listed, String>,
    summaries: &std::collections::HashMap<String, Summary>,
    results: Option<Vec<String>>,
) -> Markup {
    layout(
        "Quarantine",
        Some((user, csrf)),
        html! {
            (results_note(&results))
            @match entries {
                Ok(listed) => {
                    (pager("/quarantine", "", &listed))
                    (entries_table("quarantine", csrf, &listed.entries, summaries, &[("release", "Release to delivery"), ("delete", "Delete"), ("learn-spam", "Learn as spam"), ("learn-ham", "Learn as ham")]))
                },
                Err(e) => p.bad { "Cannot read the quarantine: " (e) },
            }
        },
    )
}

/// One message as `sluice queue show` gives it.
pub struct Shown {
    /// Its envelope and status.
    pub entry: Entry,
    /// Its delivery history.
    pub history: Vec<String>,
    /// Its header section.
    pub header: String,
    /// The whole message.
    pub message: Vec<u8>,
}

/// One message: envelope, status, delivery history, its headers and its text, all as text.
pub fn message(user: &str, csrf: &str, kind: &str, found: Result<Shown, String>) -> Markup {
    let title = if kind == "quarantine" {
        "Quarantined message"
    } else {
        "Queued message"
    };
    layout(
        title,
        Some((user, csrf)),
        html! {
            @match found {
                Err(e) => p.bad { (e) },
                Ok(Shown { entry: e, history, header, message: raw }) => {
                    @let parsed = mail_parser::MessageParser::default().parse(&raw);
                    @let headers: String = header.chars().take(64 << 10).collect();
                    @let text = parsed.as_ref().and_then(|m| m.body_text(0)).map(|t| t.chars().take(100_000).collect::<String>());
                    table {
                        tr { th { "id" } td { (e.id) } }
                        tr { th { "received" } td { (e.received_at) } }
                        tr { th { "sender" } td { (e.sender) } }
                        @for (r, status, reply) in &e.recipients {
                            tr { th { "recipient" } td { (r) " — " (format!("{status:?}").to_lowercase()) @if let Some(reply) = reply { ": " (reply) } } }
                        }
                        @if let Some(q) = &e.quarantine { tr { th { "reason" } td #reason { (q) } } }
                        tr { th { "size" } td { (raw.len()) " bytes" } }
                    }
                    form method="post" action=(format!("/{kind}/action")) {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="id" value=(e.id);
                        @if kind == "quarantine" {
                            button type="submit" name="action" value="release" { "Release to delivery" } " "
                            button type="submit" name="action" value="delete" { "Delete" } " "
                            button type="submit" name="action" value="learn-spam" { "Learn as spam" } " "
                            button type="submit" name="action" value="learn-ham" { "Learn as ham" }
                        } @else {
                            button type="submit" name="action" value="retry" { "Retry now" } " "
                            button type="submit" name="action" value="hold" { "Hold" } " "
                            button type="submit" name="action" value="release" { "Release" } " "
                            button type="submit" name="action" value="delete-bounce" { "Delete and bounce" }
                        }
                    }
                    @if !history.is_empty() {
                        h2 { "Delivery history" }
                        pre #history { @for line in &history { (line) "\n" } }
                    }
                    h2 { "Headers" }
                    pre #headers { (headers) }
                    h2 { "Text" }
                    @match text {
                        Some(t) => pre #body { (t) },
                        None => p { "(no text part)" },
                    }
                }
            }
        },
    )
}

/// Recent transactions, searchable.
pub fn transactions(user: &str, csrf: &str, q: &str, found: &[Transaction]) -> Markup {
    layout(
        "Recent transactions",
        Some((user, csrf)),
        html! {
            form method="get" action="/transactions" {
                "Queue id, address or client " input name="q" value=(q); " " button type="submit" { "Search" }
            }
            p { (found.len()) " shown (newest first)" }
            table #transactions {
                tr { th { "time" } th { "id" } th { "client" } th { "sender" } th { "recipients" } th { "plugins" } th { "score" } th { "disposition" } th { "reply" } }
                @for t in found {
                    tr {
                        td { (t.at) } td { (t.id) } td { (t.client) " (" (t.listener) ")" } td { (t.sender) }
                        td { @for r in &t.recipients { div { (r) } } }
                        td { @for v in &t.verdicts { div { code { (v) } } } }
                        td { (format!("{:.2}", t.score)) } td { (t.disposition) } td { (t.reply) }
                    }
                }
            }
        },
    )
}
