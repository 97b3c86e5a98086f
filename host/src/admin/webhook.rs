//! Events out: delivery outcomes (delivered, deferred, failed, bounced, expired) and refusals,
//! POSTed to an operator's HTTPS endpoint in batches of JSON (`[webhook]`).
//!
//! Nothing is lost and nothing is sent twice in one batch:
//! - every event is appended as one JSON line to `<data_dir>/webhook/events.jsonl`, the
//!   backlog, before anything is sent;
//! - the sender takes the oldest unsent lines (at most `batch` of them), POSTs them as
//!   `{"batch": ID, "events": [...]}` and, only after a 2xx answer, records in `sent` how far
//!   it got (written atomically). A batch that fails is sent again, the same events under the
//!   same id, after a back-off that doubles from 1 s to 5 minutes; the id lets a receiver
//!   drop a batch it already has (a crash between its answer and our record sends it again);
//! - the backlog is bounded (`max_backlog_mb`): past it the oldest unsent events are dropped,
//!   counted in `/metrics` and logged, rather than filling the disk while the receiver is
//!   down.
//!
//! Each POST carries `X-Sluice-Signature: sha256=HEX`, the HMAC-SHA256 of the body under the
//! configured secret, and `X-Sluice-Batch: ID`.
//!
//! One server per process: the backlog is process-wide ([`install`]), as the events come from
//! the SMTP sessions, the inbound core and the queue runner alike.

use std::io::{BufRead, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hmac::Mac;

use crate::config::WebhookConfig;

/// The longest back-off between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The backlog of one server.
struct Backlog {
    dir: PathBuf,
    /// The events file, appended to under this lock.
    file: Mutex<std::fs::File>,
    events: Vec<String>,
    max_bytes: u64,
    wake: tokio::sync::Notify,
}

fn slot() -> &'static Mutex<Option<Arc<Backlog>>> {
    static SLOT: OnceLock<Mutex<Option<Arc<Backlog>>>> = OnceLock::new();
    SLOT.get_or_init(|| Mutex::new(None))
}

fn current() -> Option<Arc<Backlog>> {
    slot().lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Records `event` (`delivered`, `deferred`, `failed`, `bounced`, `expired`, `refused`) with
/// its `fields`, when a webhook is configured and wants it.
pub fn emit(event: &str, fields: serde_json::Value) {
    let Some(b) = current() else { return };
    if !b.events.iter().any(|e| e == event) {
        return;
    }
    let mut line = serde_json::json!({
        "event": event,
        "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    if let (Some(obj), serde_json::Value::Object(more)) = (line.as_object_mut(), fields) {
        obj.extend(more);
    }
    let mut text = line.to_string();
    text.push('\n');
    let written = {
        let mut f = b.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(text.as_bytes())
    };
    match written {
        Ok(()) => b.wake.notify_one(),
        Err(e) => {
            crate::admin::metrics::get().webhook("lost");
            tracing::warn!(error = %e, "webhook: cannot append to the backlog; event lost");
        }
    }
}

/// Opens the backlog under `data_dir` and starts sending it, until the task is dropped.
pub fn install(
    config: &WebhookConfig,
    data_dir: &Path,
) -> std::io::Result<impl std::future::Future<Output = ()> + use<>> {
    let dir = data_dir.join("webhook");
    crate::private_files::create_private_dir(&dir)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("events.jsonl"))?;
    let backlog = Arc::new(Backlog {
        dir,
        file: Mutex::new(file),
        events: config.events.clone(),
        max_bytes: config.max_backlog_mb.saturating_mul(1 << 20),
        wake: tokio::sync::Notify::new(),
    });
    *slot().lock().unwrap_or_else(|p| p.into_inner()) = Some(backlog.clone());
    let secret = config.secret()?;
    let agent = agent(config)?;
    let sender = Sender {
        backlog,
        agent,
        url: config.url.clone(),
        secret,
        batch: config.batch.max(1),
        flush: Duration::from_millis(config.flush_ms),
    };
    Ok(sender.run())
}

/// The HTTP client: the configured CA file's certificates as the only roots, else Mozilla's.
fn agent(config: &WebhookConfig) -> std::io::Result<ureq::Agent> {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let mut tls = TlsConfig::builder();
    if let Some(ca) = &config.ca_file {
        let pem = std::fs::read(ca)?;
        let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err(std::io::Error::other(format!(
                "webhook.ca_file {}: no certificate in it",
                ca.display()
            )));
        }
        tls = tls.root_certs(RootCerts::Specific(Arc::new(certs)));
    }
    Ok(ureq::Agent::config_builder()
        .tls_config(tls.build())
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(config.timeout_secs)))
        .build()
        .into())
}

struct Sender {
    backlog: Arc<Backlog>,
    agent: ureq::Agent,
    url: String,
    secret: Vec<u8>,
    batch: usize,
    flush: Duration,
}

/// The next batch: (first byte, end byte, the events' lines).
type Batch = (u64, u64, Vec<String>);

impl Sender {
    async fn run(self) {
        let mut backoff = Duration::from_secs(1);
        // The batch that failed: sent again as it was, the same events under the same id,
        // although more events may have come since (they go in later batches).
        let mut failed: Option<Batch> = None;
        loop {
            let this = (self.backlog.clone(), self.batch);
            let next = tokio::task::spawn_blocking(move || next_batch(&this.0, this.1)).await;
            let (start, end, lines) = match next {
                // Unless the backlog's bound dropped its oldest events meanwhile: then the
                // batch starts where the backlog now does.
                Ok(Ok(Some(b))) => match failed.take() {
                    Some(again) if again.0 == b.0 => again,
                    _ => b,
                },
                Ok(Ok(None)) => {
                    // Nothing to send: wait for an event, then a little for more to batch.
                    self.backlog.wake.notified().await;
                    tokio::time::sleep(self.flush).await;
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "webhook: cannot read the backlog");
                    tokio::time::sleep(backoff).await;
                    continue;
                }
                Err(_) => return,
            };
            let id = format!("{start:x}-{end:x}");
            let body = format!("{{\"batch\":\"{id}\",\"events\":[{}]}}", lines.join(","));
            let signature = {
                let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.secret)
                    .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
                mac.update(body.as_bytes());
                hex::encode(mac.finalize().into_bytes())
            };
            let (agent, url, n) = (self.agent.clone(), self.url.clone(), lines.len());
            let this_batch = (start, end, lines);
            let batch_id = id.clone();
            let sent = tokio::task::spawn_blocking(move || {
                agent
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .header("X-Sluice-Signature", &format!("sha256={signature}"))
                    .header("X-Sluice-Batch", &batch_id)
                    .send(body.as_bytes())
                    .map(|r| r.status().as_u16())
            })
            .await;
            match sent {
                Ok(Ok(status)) if (200..300).contains(&status) => {
                    let b = self.backlog.clone();
                    let _ = tokio::task::spawn_blocking(move || commit(&b, end)).await;
                    crate::admin::metrics::get().webhook_sent(n);
                    tracing::debug!(batch = %id, events = n, "webhook: batch delivered");
                    backoff = Duration::from_secs(1);
                }
                other => {
                    let why = match other {
                        Ok(Ok(status)) => format!("HTTP {status}"),
                        Ok(Err(e)) => e.to_string(),
                        Err(e) => e.to_string(),
                    };
                    crate::admin::metrics::get().webhook("failed");
                    tracing::warn!(batch = %id, events = n, error = %crate::inbound::message::printable(&why), retry_secs = backoff.as_secs(), "webhook: batch not taken; sent again later");
                    failed = Some(this_batch);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// The byte offset sent so far.
fn sent_offset(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("sent"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Reads the next batch of at most `max` events; drops the oldest unsent events past the
/// backlog's bound first; empties the file once everything in it was sent.
fn next_batch(b: &Backlog, max: usize) -> std::io::Result<Option<Batch>> {
    let path = b.dir.join("events.jsonl");
    let mut sent = sent_offset(&b.dir);
    let len = std::fs::metadata(&path)?.len();
    if sent >= len {
        // All sent: start the file afresh (under the append lock, so no event slips in).
        if len > 0 {
            let f = b.file.lock().unwrap_or_else(|p| p.into_inner());
            if f.metadata()?.len() == len {
                f.set_len(0)?;
                write_offset(&b.dir, 0)?;
            }
        }
        return Ok(None);
    }
    let mut reader = std::io::BufReader::new(std::fs::File::open(&path)?);
    if len - sent > b.max_bytes {
        // Over the bound: skip the oldest until within it.
        reader.seek(std::io::SeekFrom::Start(sent))?;
        let mut dropped = 0u64;
        let mut line = Vec::new();
        while len - sent > b.max_bytes {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            sent += n as u64;
            dropped += 1;
        }
        write_offset(&b.dir, sent)?;
        crate::admin::metrics::get().webhook_dropped(dropped);
        tracing::warn!(
            dropped,
            max_backlog_bytes = b.max_bytes,
            "webhook: backlog full; the oldest unsent events were dropped"
        );
    }
    reader.seek(std::io::SeekFrom::Start(sent))?;
    let mut lines = Vec::new();
    let mut end = sent;
    let mut line = String::new();
    while lines.len() < max {
        line.clear();
        let n = reader.read_line(&mut line)?;
        // An event still being appended (no newline yet) waits for the next batch.
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        end += n as u64;
        let event = line.trim_end();
        if serde_json::from_str::<serde_json::Value>(event).is_ok() {
            lines.push(event.to_string());
        }
    }
    if end == sent {
        return Ok(None);
    }
    Ok(Some((sent, end, lines)))
}

fn commit(b: &Backlog, end: u64) -> std::io::Result<()> {
    write_offset(&b.dir, end)
}

fn write_offset(dir: &Path, offset: u64) -> std::io::Result<()> {
    let tmp = dir.join("sent.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(offset.to_string().as_bytes())?;
    f.sync_all()?;
    std::fs::rename(tmp, dir.join("sent"))
}
