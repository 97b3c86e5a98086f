//! Queue administration for `sluice queue …`: list, show, retry, hold, release, delete (with or
//! without a bounce) and the quarantine. Works on a stopped or running server alike: every
//! change to a message's state is made under the queue lock that the runner also takes, and
//! state files are replaced atomically, so neither side ever sees a torn state.

use std::path::Path;

use crate::spool::{Spool, SpoolState};

use super::state::{self, QueueState, RcptStatus, fmt_time};

/// One queued message, as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    /// Queue id.
    pub id: String,
    /// When it was accepted.
    pub received_at: String,
    /// Envelope sender.
    pub sender: String,
    /// Size in bytes.
    pub size: usize,
    /// Held by the operator.
    pub held: bool,
    /// Next attempt (RFC 3339), if one is scheduled.
    pub next_attempt: Option<String>,
    /// Delivery passes so far.
    pub attempts: u32,
    /// Per recipient: address, status, last reply.
    pub recipients: Vec<(String, RcptStatus, Option<String>)>,
    /// Quarantine reason, for quarantined messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<String>,
}

/// Why an admin command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No such message.
    #[error("no message {0} in the {1}")]
    NotFound(String, &'static str),
    /// Not a queue id: refused before it touches the file system.
    #[error("{0:?} is not a queue id (letters and digits only, at most 64)")]
    BadId(String),
    /// Spool trouble.
    #[error(transparent)]
    Spool(#[from] crate::spool::SpoolError),
    /// File trouble.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// `id` when it has the spool's id format ([`crate::spool::is_queue_id`]): every function
/// here takes ids from the command line or the console, and an id such as `../x` must never
/// name a file outside the spool.
fn checked(id: &str) -> Result<&str, AdminError> {
    if crate::spool::is_queue_id(id) {
        Ok(id)
    } else {
        Err(AdminError::BadId(
            crate::inbound::message::printable(id).into_owned(),
        ))
    }
}

fn where_(s: SpoolState) -> &'static str {
    match s {
        SpoolState::Queue => "queue",
        SpoolState::Quarantine => "quarantine",
    }
}

/// The entry of a message already read.
fn entry_of(
    spool: &Spool,
    which: SpoolState,
    id: &str,
    env: &crate::spool::SpooledEnvelope,
    size: usize,
) -> Result<Entry, AdminError> {
    let dir = spool.root().join("queue");
    let st = match which {
        SpoolState::Queue => state::read(&dir, id)?,
        SpoolState::Quarantine => None,
    }
    .unwrap_or_else(|| QueueState::initial(env, 0));
    Ok(Entry {
        id: id.to_string(),
        received_at: env.received_at.clone(),
        sender: env.sender.address.clone(),
        size,
        held: st.held,
        next_attempt: (st.attempts > 0).then(|| fmt_time(st.next_attempt)),
        attempts: st.attempts,
        recipients: st
            .recipients
            .iter()
            .map(|r| (r.address.clone(), r.status, r.last_reply.clone()))
            .collect(),
        quarantine: env.quarantine.clone(),
    })
}

/// Every message in `which`, oldest first: only their envelopes are read.
pub fn list(spool: &Spool, which: SpoolState) -> Result<Vec<Entry>, AdminError> {
    spool
        .list(which)?
        .iter()
        .map(|id| {
            let (env, size) = spool.read_envelope(which, id)?;
            entry_of(spool, which, id, &env, size)
        })
        .collect()
}

/// One message: its entry, history, header section, and the whole message.
pub fn show(
    spool: &Spool,
    which: SpoolState,
    id: &str,
) -> Result<(Entry, Vec<String>, String, Vec<u8>), AdminError> {
    let id = checked(id)?;
    if !spool.path(which, id).is_file() {
        return Err(AdminError::NotFound(id.to_string(), where_(which)));
    }
    let (env, msg) = spool.read(which, id)?;
    let e = entry_of(spool, which, id, &env, msg.len())?;
    let history = state::read(&spool.root().join("queue"), id)?
        .map(|s| s.history)
        .unwrap_or_default();
    let end = msg
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(msg.len());
    let header = String::from_utf8_lossy(&msg[..end]).into_owned();
    Ok((e, history, header, msg))
}

/// Changes a queued message's state under the queue lock.
fn update(spool: &Spool, id: &str, change: impl FnOnce(&mut QueueState)) -> Result<(), AdminError> {
    let id = checked(id)?;
    let dir = spool.root().join("queue");
    state::with_lock(&dir, || {
        if !spool.path(SpoolState::Queue, id).is_file() {
            return Err(AdminError::NotFound(id.to_string(), "queue"));
        }
        let (env, _) = spool.read(SpoolState::Queue, id)?;
        let mut st = state::read(&dir, id)?
            .unwrap_or_else(|| QueueState::initial(&env, crate::delivery::runner::now()));
        change(&mut st);
        state::write(&dir, id, &st)?;
        Ok(())
    })
}

/// Schedules `id` for an attempt now (and releases it if held).
pub fn retry(spool: &Spool, id: &str) -> Result<(), AdminError> {
    update(spool, id, |st| {
        st.held = false;
        st.retry_now();
        st.history.push(format!(
            "{} retry requested by the operator",
            fmt_time(crate::delivery::runner::now())
        ));
    })
}

/// Holds `id`: it is not delivered until released.
pub fn hold(spool: &Spool, id: &str) -> Result<(), AdminError> {
    update(spool, id, |st| {
        st.held = true;
        st.history.push(format!(
            "{} held by the operator",
            fmt_time(crate::delivery::runner::now())
        ));
    })
}

/// Releases a held message for delivery now.
pub fn release(spool: &Spool, id: &str) -> Result<(), AdminError> {
    retry(spool, id)
}

/// Deletes `id` from the queue. With `bounce`, its pending recipients fail ("deleted by the
/// operator") and the runner sends the sender a bounce; without, it is dropped.
pub fn delete(spool: &Spool, id: &str, bounce: bool) -> Result<(), AdminError> {
    let id = checked(id)?;
    if bounce {
        return update(spool, id, |st| {
            for r in state::pending(&mut st.recipients) {
                r.fail(
                    "5.0.0",
                    "deleted from the queue by the postmaster".to_string(),
                );
            }
            st.held = false;
            st.retry_now();
        });
    }
    let dir = spool.root().join("queue");
    state::with_lock(&dir, || {
        if !spool.path(SpoolState::Queue, id).is_file() {
            return Err(AdminError::NotFound(id.to_string(), "queue"));
        }
        let _ = std::fs::remove_file(state::path(&dir, id));
        spool.delete(SpoolState::Queue, id)?;
        // An operator's deletion must stick (a delivery's removal need not, see `remove`).
        sync_dir(&dir)?;
        Ok(())
    })
}

/// Moves a quarantined message into the queue for delivery.
pub fn quarantine_release(spool: &Spool, id: &str) -> Result<(), AdminError> {
    let id = checked(id)?;
    let from = spool.path(SpoolState::Quarantine, id);
    if !from.is_file() {
        return Err(AdminError::NotFound(id.to_string(), "quarantine"));
    }
    let to = spool.path(SpoolState::Queue, id);
    std::fs::rename(&from, &to)?;
    for d in ["queue", "quarantine"] {
        sync_dir(&spool.root().join(d))?;
    }
    Ok(())
}

/// Deletes a quarantined message.
pub fn quarantine_delete(spool: &Spool, id: &str) -> Result<(), AdminError> {
    let id = checked(id)?;
    if !spool.path(SpoolState::Quarantine, id).is_file() {
        return Err(AdminError::NotFound(id.to_string(), "quarantine"));
    }
    spool.delete(SpoolState::Quarantine, id)?;
    sync_dir(&spool.root().join("quarantine"))?;
    Ok(())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
