//! Delivery state of a queued message, kept beside it as `<id>.state` (JSON) so the message
//! file itself is never rewritten. Written to a temporary name, synced and renamed: a crash
//! leaves either the old or the new state, and at worst a recipient is delivered twice
//! (at-least-once, as with every MTA), never lost.

use std::path::{Path, PathBuf};

use crate::spool::SpooledEnvelope;

/// Where one recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RcptStatus {
    /// Not yet delivered; will be tried (again).
    Pending,
    /// Accepted by the next hop.
    Delivered,
    /// Refused permanently, or expired.
    Failed,
}

/// One recipient's delivery state.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RcptState {
    /// The address.
    pub address: String,
    /// Where it stands.
    pub status: RcptStatus,
    /// Attempts made.
    pub attempts: u32,
    /// The last reply (or the host's description of the failure).
    pub last_reply: Option<String>,
    /// Enhanced status code of the last reply.
    pub status_code: Option<String>,
    /// The host that gave it.
    pub remote: Option<String>,
    /// Unix time (seconds) before which it is not tried again (after a temporary failure,
    /// or while its destination's rate is used up); none: with the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<i64>,
}

impl RcptState {
    /// Gives up on the recipient: failed for good with `status_code` and `reply`, not to be
    /// tried again.
    pub fn fail(&mut self, status_code: &str, reply: String) {
        self.status = RcptStatus::Failed;
        self.status_code = Some(status_code.to_string());
        self.last_reply = Some(reply);
        self.next_attempt = None;
    }
}

/// The recipients still waiting for delivery.
pub fn pending(recipients: &mut [RcptState]) -> impl Iterator<Item = &mut RcptState> {
    recipients
        .iter_mut()
        .filter(|r| r.status == RcptStatus::Pending)
}

/// A queued message's delivery state.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QueueState {
    /// Delivery passes made.
    pub attempts: u32,
    /// Unix time (seconds) of the next attempt.
    pub next_attempt: i64,
    /// Unix time the message was queued.
    pub queued_at: i64,
    /// Held by the operator: not delivered until released.
    #[serde(default)]
    pub held: bool,
    /// A delay warning has been sent.
    #[serde(default)]
    pub warned: bool,
    /// Per recipient.
    pub recipients: Vec<RcptState>,
    /// One line per event, for `sluice queue show`.
    pub history: Vec<String>,
}

impl QueueState {
    /// The state of a message that was never tried.
    pub fn initial(envelope: &SpooledEnvelope, queued_at: i64) -> QueueState {
        QueueState {
            attempts: 0,
            next_attempt: queued_at,
            queued_at,
            held: false,
            warned: false,
            recipients: envelope
                .recipients
                .iter()
                .map(|r| RcptState {
                    address: r.address.clone(),
                    status: RcptStatus::Pending,
                    attempts: 0,
                    last_reply: None,
                    status_code: None,
                    remote: None,
                    next_attempt: None,
                })
                .collect(),
            history: vec![format!("{} queued", fmt_time(queued_at))],
        }
    }

    /// Makes every pending recipient due now (the operator's "retry").
    pub fn retry_now(&mut self) {
        self.next_attempt = 0;
        for r in &mut self.recipients {
            r.next_attempt = None;
        }
    }

    /// True when no recipient is pending.
    pub fn finished(&self) -> bool {
        self.recipients
            .iter()
            .all(|r| r.status != RcptStatus::Pending)
    }
}

/// The state file of message `id` in the queue directory `dir`.
pub fn path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.state"))
}

/// Reads the state, or `None` when there is none yet.
pub fn read(dir: &Path, id: &str) -> std::io::Result<Option<QueueState>> {
    match std::fs::read(path(dir, id)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes the state atomically and durably.
pub fn write(dir: &Path, id: &str, state: &QueueState) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!(".{id}.state.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path(dir, id))?;
    std::fs::File::open(dir)?.sync_all()
}

/// A Unix time as RFC 3339 (UTC).
pub fn fmt_time(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.to_rfc3339())
        .unwrap_or_else(|| t.to_string())
}

/// Runs `f` holding the queue lock (`<queue>/.lock`, an exclusive `flock`), which the runner
/// and `sluice queue` both take before changing a message's state.
pub fn with_lock<T, E: From<std::io::Error>>(
    dir: &Path,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".lock"))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(std::io::Error::from)?;
    let result = f();
    let _ = rustix::fs::flock(&lock, rustix::fs::FlockOperation::Unlock);
    result
}
