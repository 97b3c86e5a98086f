//! The queue and quarantine pages and their bulk actions (retry, hold, release, delete,
//! bounce; learn as spam or ham), through the same code as `sluice queue` and `sluice spam`.

use super::*;

/// The queue's filters (`?sender=&recipient=&domain=&min_age_minutes=`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct QueueFilter {
    pub(super) sender: String,
    pub(super) recipient: String,
    pub(super) domain: String,
    /// Empty in the form means no bound (a number field left empty sends `min_age_minutes=`).
    #[serde(deserialize_with = "empty_as_none")]
    pub(super) min_age_minutes: Option<u64>,
    /// The page shown, from 1 ([`PAGE`] messages a page).
    #[serde(deserialize_with = "empty_as_none")]
    pub(super) page: Option<usize>,
}

/// A query value left empty as `None`, else the number.
pub(super) fn empty_as_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
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
    pub(super) page: Option<usize>,
}

/// Page `page` (from 1) of `all`, with the count and the number of pages.
pub(super) fn page_of(
    mut all: Vec<crate::delivery::admin::Entry>,
    page: Option<usize>,
) -> pages::Listed {
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
    pub(super) fn keeps(&self, e: &crate::delivery::admin::Entry) -> bool {
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

pub(super) async fn list(
    ctx: &ServerContext,
    which: crate::spool::SpoolState,
) -> Result<Vec<crate::delivery::admin::Entry>, String> {
    let spool = ctx.spool.clone();
    tokio::task::spawn_blocking(move || crate::delivery::admin::list(&spool, which))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

async fn queue(SignedIn { c, s }: SignedIn, Query(filter): Query<QueueFilter>) -> Page {
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
pub(super) async fn show(
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

/// One message of the queue (`/queue/ID`) or of the quarantine (`/quarantine/ID`).
/// The queue's and the quarantine's pages and actions.
pub(super) fn routes() -> axum::Router<Arc<Console>> {
    use crate::spool::SpoolState;
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/queue", get(queue))
        .route("/queue/{id}", message_route(SpoolState::Queue))
        .route("/queue/action", post(queue_action))
        .route("/quarantine", get(quarantine))
        .route("/quarantine/{id}", message_route(SpoolState::Quarantine))
        .route("/quarantine/action", post(quarantine_action))
}

/// The page of one message of the queue or the quarantine.
fn message_route(state: crate::spool::SpoolState) -> axum::routing::MethodRouter<Arc<Console>> {
    axum::routing::get(move |who: SignedIn, p: Path<String>| message_page(state, who, p))
}

async fn message_page(
    state: crate::spool::SpoolState,
    SignedIn { c, s }: SignedIn,
    Path(id): Path<String>,
) -> Page {
    let page = match state {
        crate::spool::SpoolState::Quarantine => "quarantine",
        _ => "queue",
    };
    let found = show(&c.ctx, state, id).await;
    Ok(pages::message(&s.user, &s.csrf, page, found).into_response())
}

/// Runs `action` on each id off the async workers; one line per id saying what happened.
pub(super) async fn each(
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
pub(super) fn log_actions(page: &str, user: &str, action: &str, results: &[String]) {
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

async fn queue_action(State(c): State<Arc<Console>>, Posted(s, form): Posted) -> Page {
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
pub(super) const SUMMARY_BYTES: usize = 16 << 10;

/// A message's subject and spam verdict (its `X-Spam-Status`), read from its first 16 KiB.
pub(super) fn summary(raw: &[u8]) -> pages::Summary {
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

pub(super) async fn quarantine_page(
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

async fn quarantine(SignedIn { c, s }: SignedIn, Query(paging): Query<Paging>) -> Page {
    Ok(quarantine_page(&c, &s, paging.page, None).await)
}

async fn quarantine_action(State(c): State<Arc<Console>>, Posted(s, form): Posted) -> Page {
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
pub(super) async fn learn(c: &Console, action: &str, ids: Vec<String>) -> Vec<String> {
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
