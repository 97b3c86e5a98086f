//! The spool: accepted messages on disk. A message is acknowledged (250) only after
//! [`Spool::store`] returns, and `store` returns only after the message and its envelope are
//! durable — written, synced, and renamed into their state directory with the directory synced.
//!
//! Layout under the spool root, one directory per state, moves by atomic rename:
//! - `tmp/`: being written; anything here at start-up was never acknowledged and is removed.
//! - `queue/`: accepted, waiting for delivery.
//! - `quarantine/`: accepted and held by a plugin's verdict.
//!
//! Each message is one file `<queue-id>.msg`: a line of JSON (the [`SpooledEnvelope`]), then
//! the message bytes. One file means one rename: a message and its envelope appear together.
//!
//! Group commit: one writer thread takes every message waiting to be stored, writes them all,
//! makes them durable with one `syncfs`, renames them all and syncs the directories once — so
//! under concurrency many acceptances share each flush to disk.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::envelope::{Recipient, Sender};

/// The envelope stored with a message.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SpooledEnvelope {
    /// The queue id (also the file name).
    pub id: String,
    /// When it was accepted, RFC 3339.
    pub received_at: String,
    /// MAIL FROM with its parameters (RET, ENVID, …).
    pub sender: Sender,
    /// Recipients with their parameters (NOTIFY, ORCPT); discarded ones are not stored.
    pub recipients: Vec<Recipient>,
    /// The client's address.
    pub client_ip: String,
    /// HELO/EHLO name.
    pub helo: String,
    /// The listener that accepted it.
    pub listener: String,
    /// The authenticated user, if any.
    pub auth_user: Option<String>,
    /// Why it is quarantined, if it is.
    pub quarantine: Option<String>,
}

/// A state directory of the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoolState {
    /// Waiting for delivery.
    Queue,
    /// Held.
    Quarantine,
}

impl SpoolState {
    fn dir(self) -> &'static str {
        match self {
            SpoolState::Queue => "queue",
            SpoolState::Quarantine => "quarantine",
        }
    }
}

/// Why a message could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file-system operation failed.
    #[error("spool {}: {source}", .path.display())]
    Io {
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The writer thread is gone (shutting down).
    #[error("the spool is shut down")]
    Closed,
    /// A spool file is not in the expected format.
    #[error("spool file {} is damaged: {problem}", .path.display())]
    Damaged {
        /// Which.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

impl SpoolError {
    /// True when the file system is out of space or quota: the client should retry later,
    /// with 452 4.3.1 (RFC 3463: mail system full).
    pub fn is_full(&self) -> bool {
        match self {
            SpoolError::Io { source, .. } => {
                source.kind() == std::io::ErrorKind::StorageFull
                    || source.kind() == std::io::ErrorKind::QuotaExceeded
                    || source.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error())
                    || source.raw_os_error() == Some(rustix::io::Errno::DQUOT.raw_os_error())
            }
            _ => false,
        }
    }
}

struct Job {
    state: SpoolState,
    id: String,
    data: Vec<u8>,
    done: oneshot::Sender<Result<(), SpoolError>>,
}

/// Handle to the spool; cheap to clone.
#[derive(Clone)]
pub struct Spool {
    root: PathBuf,
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool").field("root", &self.root).finish()
    }
}

/// Most messages made durable by one flush.
const MAX_BATCH: usize = 256;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Spool {
    /// Opens (creating) the spool at `root` for a server and starts its writer thread.
    /// Removes partial files left in `tmp/` by a crash: they were never acknowledged.
    pub fn open(root: &Path) -> Result<Spool, SpoolError> {
        let spool = Spool::attach(root)?;
        let tmp = root.join("tmp");
        for entry in std::fs::read_dir(&tmp).map_err(io_err(&tmp))? {
            let path = entry.map_err(io_err(&tmp))?.path();
            tracing::info!(path = %path.display(), "removing a message that was never acknowledged");
            std::fs::remove_file(&path).map_err(io_err(&path))?;
        }
        Ok(spool)
    }

    /// Opens the spool at `root` without touching `tmp/`: safe beside a running server
    /// (for `sluice queue`).
    pub fn attach(root: &Path) -> Result<Spool, SpoolError> {
        for dir in ["tmp", "queue", "quarantine"] {
            let d = root.join(dir);
            std::fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        let (jobs, rx) = mpsc::channel::<Job>();
        let writer_root = root.to_path_buf();
        std::thread::Builder::new()
            .name("sluice-spool".into())
            .spawn(move || writer(&writer_root, &rx))
            .map_err(io_err(root))?;
        Ok(Spool {
            root: root.to_path_buf(),
            jobs,
        })
    }

    /// The spool's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Stores a message durably in `state`. When this returns `Ok`, the message survives a
    /// crash or power loss.
    pub async fn store(
        &self,
        state: SpoolState,
        envelope: &SpooledEnvelope,
        message: &[u8],
    ) -> Result<(), SpoolError> {
        let mut data = serde_json::to_vec(envelope).map_err(|e| SpoolError::Damaged {
            path: self.root.clone(),
            problem: e.to_string(),
        })?;
        data.push(b'\n');
        data.extend_from_slice(message);
        let (done, wait) = oneshot::channel();
        self.jobs
            .send(Job {
                state,
                id: envelope.id.clone(),
                data,
                done,
            })
            .map_err(|_| SpoolError::Closed)?;
        wait.await.map_err(|_| SpoolError::Closed)?
    }

    /// The ids of the messages in `state`, oldest first (ids sort by time).
    pub fn list(&self, state: SpoolState) -> Result<Vec<String>, SpoolError> {
        let dir = self.root.join(state.dir());
        let mut ids: Vec<String> = std::fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".msg"))
                    .map(str::to_string)
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The path of message `id` in `state`.
    pub fn path(&self, state: SpoolState, id: &str) -> PathBuf {
        self.root.join(state.dir()).join(format!("{id}.msg"))
    }

    /// Reads message `id` from `state`: its envelope and the message bytes.
    pub fn read(
        &self,
        state: SpoolState,
        id: &str,
    ) -> Result<(SpooledEnvelope, Vec<u8>), SpoolError> {
        let path = self.path(state, id);
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        parse_file(&path, &bytes)
    }

    /// Removes message `id` from `state` (after delivery). The directory is not synced: if
    /// the system crashes before the file system commits the unlink on its own (seconds),
    /// the message comes back and is delivered again — at least once, as with any MTA — and
    /// a sync per delivered message was, in the load benchmark's profile, the largest single
    /// cost of delivery. Callers that need the removal durable sync the directory.
    pub fn remove(&self, state: SpoolState, id: &str) -> Result<(), SpoolError> {
        let path = self.path(state, id);
        std::fs::remove_file(&path).map_err(io_err(&path))
    }
}

/// Splits a spool file into envelope and message.
pub fn parse_file(path: &Path, bytes: &[u8]) -> Result<(SpooledEnvelope, Vec<u8>), SpoolError> {
    let damaged = |problem: String| SpoolError::Damaged {
        path: path.to_path_buf(),
        problem,
    };
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| damaged("no envelope line".into()))?;
    let envelope: SpooledEnvelope =
        serde_json::from_slice(&bytes[..nl]).map_err(|e| damaged(e.to_string()))?;
    Ok((envelope, bytes[nl + 1..].to_vec()))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The writer thread: batches jobs and makes each batch durable with one flush.
fn writer(root: &Path, rx: &mpsc::Receiver<Job>) {
    let tmp = root.join("tmp");
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // 1. Write every file of the batch (no sync yet).
        let mut written = Vec::with_capacity(batch.len());
        for job in batch {
            let path = tmp.join(format!("{}.msg", job.id));
            let result = std::fs::File::create(&path).and_then(|mut f| f.write_all(&job.data));
            match result {
                Ok(()) => written.push((job, path)),
                Err(e) => {
                    let _ = std::fs::remove_file(&path);
                    let _ = job.done.send(Err(SpoolError::Io { path, source: e }));
                }
            }
        }
        if written.is_empty() {
            continue;
        }
        // 2. One flush of the whole file system makes every file's data durable.
        if let Err(e) = syncfs(&tmp) {
            fail_all(written, &tmp, e);
            continue;
        }
        // 3. Rename into place, then sync the directories so the renames are durable too.
        let mut renamed = Vec::with_capacity(written.len());
        for (job, path) in written {
            let dest = root.join(job.state.dir()).join(format!("{}.msg", job.id));
            match std::fs::rename(&path, &dest) {
                Ok(()) => renamed.push(job),
                Err(e) => {
                    let _ = std::fs::remove_file(&path);
                    let _ = job.done.send(Err(SpoolError::Io {
                        path: dest,
                        source: e,
                    }));
                }
            }
        }
        let synced = ["tmp", "queue", "quarantine"]
            .iter()
            .try_for_each(|d| sync_dir(&root.join(d)));
        for job in renamed {
            let result = match &synced {
                Ok(()) => Ok(()),
                Err(e) => Err(SpoolError::Io {
                    path: root.to_path_buf(),
                    source: std::io::Error::new(e.kind(), e.to_string()),
                }),
            };
            let _ = job.done.send(result);
        }
    }
}

fn fail_all(written: Vec<(Job, PathBuf)>, dir: &Path, e: std::io::Error) {
    for (job, path) in written {
        let _ = std::fs::remove_file(&path);
        let _ = job.done.send(Err(SpoolError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(e.kind(), e.to_string()),
        }));
    }
}

/// Flushes the file system holding `dir` (Linux `syncfs`): one flush for a whole batch.
fn syncfs(dir: &Path) -> std::io::Result<()> {
    let f = std::fs::File::open(dir)?;
    rustix::fs::syncfs(&f).map_err(std::io::Error::from)
}

/// A new queue id: sortable by time, unique within the process.
pub fn new_queue_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xFFFF;
    let r: u16 = rand::random();
    format!("{micros:014X}{n:04X}{r:04X}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(id: &str) -> SpooledEnvelope {
        SpooledEnvelope {
            id: id.into(),
            received_at: "2026-11-28T00:00:00Z".into(),
            sender: Sender {
                address: "a@example.net".into(),
                params: vec![],
            },
            recipients: vec![Recipient {
                address: "b@example.org".into(),
                params: vec![],
                discarded: false,
            }],
            client_ip: "192.0.2.1".into(),
            helo: "c".into(),
            listener: "smtp".into(),
            auth_user: None,
            quarantine: None,
        }
    }

    #[tokio::test]
    async fn stored_messages_round_trip_and_tmp_leftovers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        std::fs::write(dir.path().join("tmp/partial.msg"), b"half").unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        assert!(!dir.path().join("tmp/partial.msg").exists());

        let mut handles = Vec::new();
        for i in 0..50 {
            let spool = spool.clone();
            handles.push(tokio::spawn(async move {
                let id = format!("ID{i:03}");
                spool
                    .store(
                        SpoolState::Queue,
                        &envelope(&id),
                        format!("Subject: {i}\r\n\r\nbody\r\n").as_bytes(),
                    )
                    .await
            }));
        }
        for h in handles {
            h.await.unwrap().unwrap();
        }
        let ids = spool.list(SpoolState::Queue).unwrap();
        assert_eq!(ids.len(), 50);
        let (env, msg) = spool.read(SpoolState::Queue, "ID007").unwrap();
        assert_eq!(env, envelope("ID007"));
        assert_eq!(msg, b"Subject: 7\r\n\r\nbody\r\n");
        spool.remove(SpoolState::Queue, "ID007").unwrap();
        assert_eq!(spool.list(SpoolState::Queue).unwrap().len(), 49);
        assert!(
            std::fs::read_dir(dir.path().join("tmp"))
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[test]
    fn queue_ids_are_unique_and_sort_by_time() {
        let a = new_queue_id();
        let b = new_queue_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 22);
        assert!(a[..14] <= b[..14]);
    }
}
