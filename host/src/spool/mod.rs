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
//!
//! Recycled files (`free/`): a delivered message's file is moved to `free/` instead of
//! unlinked, and a later message is written over it, so a busy spool allocates no inode and
//! frees no blocks per message. On ext4 without a journal, allocating an inode after many
//! deletions scans the recently deleted ones (`recently_deleted` in `find_inode_bit`), and
//! with the `discard` mount option freeing blocks waits for the device: the load benchmark's
//! profile had the two at up to a fifth of the relay's CPU. A recycled file is reused only
//! after a `syncfs` that followed its move into `free/`, so a crash can never bring back a
//! delivered message's name over a newer message's bytes. Until it is reused, a file in
//! `free/` still holds the delivered message (owner-only, like the whole spool). At most
//! [`MAX_FREE`] files of at most [`MAX_FREE_FILE`] bytes, [`MAX_FREE_BYTES`] in all, wait
//! there; the rest are unlinked.
//!
//! May use: the shared vocabulary and owner-only files; nothing of the front ends, plugins or
//! delivery, which all use it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

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
    /// The plugins' score marked it spam (local delivery files it in the Junk folder).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub spam: bool,
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
    free: Arc<FreeFiles>,
}

/// Most files kept in `free/` for reuse.
pub const MAX_FREE: usize = 4096;
/// Largest file kept in `free/` (a larger one is unlinked: its blocks are not worth keeping).
pub const MAX_FREE_FILE: u64 = 256 << 10;
/// Most bytes kept in `free/` in all.
pub const MAX_FREE_BYTES: u64 = 64 << 20;

/// The files of `free/` this process may write over.
struct FreeFiles {
    dir: PathBuf,
    lists: Mutex<FreeLists>,
    /// For unique names in `free/` (with the process id: a `sluice queue` command recycles
    /// into the same directory as the server).
    next: AtomicU64,
}

#[derive(Default)]
struct FreeLists {
    /// Moved into `free/` before a completed `syncfs`: safe to reuse (path, size).
    settled: Vec<(PathBuf, u64)>,
    /// Moved in since: reused only after the next `syncfs`.
    pending: Vec<(PathBuf, u64)>,
    /// The size of all of them.
    bytes: u64,
}

impl FreeFiles {
    fn lists(&self) -> std::sync::MutexGuard<'_, FreeLists> {
        self.lists
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Moves the file at `path` into `free/`; false when it is too big or `free/` is full
    /// (the caller unlinks it instead).
    fn recycle(&self, path: &Path) -> std::io::Result<bool> {
        let size = std::fs::metadata(path)?.len();
        {
            let mut lists = self.lists();
            if size > MAX_FREE_FILE
                || lists.settled.len() + lists.pending.len() >= MAX_FREE
                || lists.bytes + size > MAX_FREE_BYTES
            {
                return Ok(false);
            }
            lists.bytes += size; // reserved, so concurrent removals stay within the bound
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dest = self.dir.join(format!("{}-{n}.free", std::process::id()));
        if let Err(e) = std::fs::rename(path, &dest) {
            self.lists().bytes -= size;
            return Err(e);
        }
        self.lists().pending.push((dest, size));
        Ok(true)
    }

    /// A settled file to write over, if any.
    fn take(&self) -> Option<PathBuf> {
        let mut lists = self.lists();
        let (path, size) = lists.settled.pop()?;
        lists.bytes -= size;
        Some(path)
    }
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
    /// Files left in `free/` are written over by new messages: moved there by an earlier
    /// run, they hold delivered messages' bytes, and no name in `queue/` refers to them.
    pub fn open(root: &Path) -> Result<Spool, SpoolError> {
        let spool = Spool::attach(root)?;
        let tmp = root.join("tmp");
        for entry in std::fs::read_dir(&tmp).map_err(io_err(&tmp))? {
            let path = entry.map_err(io_err(&tmp))?.path();
            tracing::info!(path = %path.display(), "removing a message that was never acknowledged");
            std::fs::remove_file(&path).map_err(io_err(&path))?;
        }
        let free = &spool.free.dir;
        let mut found = Vec::new();
        let mut bytes = 0;
        for entry in std::fs::read_dir(free).map_err(io_err(free))? {
            let entry = entry.map_err(io_err(free))?;
            let path = entry.path();
            let size = entry.metadata().map_err(io_err(&path))?.len();
            if found.len() < MAX_FREE && size <= MAX_FREE_FILE && bytes + size <= MAX_FREE_BYTES {
                found.push((path, size));
                bytes += size;
            } else {
                std::fs::remove_file(&path).map_err(io_err(&path))?;
            }
        }
        let mut lists = spool.free.lists();
        lists.settled = found;
        lists.bytes = bytes;
        drop(lists);
        Ok(spool)
    }

    /// Opens the spool at `root` without touching `tmp/`: safe beside a running server
    /// (for `sluice queue`).
    pub fn attach(root: &Path) -> Result<Spool, SpoolError> {
        for dir in DIRS {
            let d = root.join(dir);
            std::fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        let free = Arc::new(FreeFiles {
            dir: root.join("free"),
            lists: Mutex::default(),
            next: AtomicU64::new(0),
        });
        let (jobs, rx) = mpsc::channel::<Job>();
        let writer_root = root.to_path_buf();
        let writer_free = free.clone();
        std::thread::Builder::new()
            .name("sluice-spool".into())
            .spawn(move || writer(&writer_root, &rx, &writer_free))
            .map_err(io_err(root))?;
        Ok(Spool {
            root: root.to_path_buf(),
            jobs,
            free,
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

    /// Reads only the envelope of message `id` in `state`, and the message's size: what a
    /// listing shows, without reading the message itself.
    pub fn read_envelope(
        &self,
        state: SpoolState,
        id: &str,
    ) -> Result<(SpooledEnvelope, usize), SpoolError> {
        use std::io::{BufRead, Read};
        let path = self.path(state, id);
        let file = std::fs::File::open(&path).map_err(io_err(&path))?;
        let total = file.metadata().map_err(io_err(&path))?.len() as usize;
        let mut line = Vec::new();
        // An envelope line is small; a file without one within 16 MiB is damaged.
        std::io::BufReader::new(file.take(16 << 20))
            .read_until(b'\n', &mut line)
            .map_err(io_err(&path))?;
        let (envelope, _) = parse_file(&path, &line)?;
        Ok((envelope, total.saturating_sub(line.len())))
    }

    /// The first `max` bytes of message `id` in `state` (after its envelope).
    pub fn read_head(
        &self,
        state: SpoolState,
        id: &str,
        max: usize,
    ) -> Result<Vec<u8>, SpoolError> {
        use std::io::{BufRead, Read};
        let path = self.path(state, id);
        let file = std::fs::File::open(&path).map_err(io_err(&path))?;
        let mut r = std::io::BufReader::new(file.take(16 << 20));
        let mut envelope = Vec::new();
        r.read_until(b'\n', &mut envelope).map_err(io_err(&path))?;
        let mut head = Vec::new();
        r.take(max as u64)
            .read_to_end(&mut head)
            .map_err(io_err(&path))?;
        Ok(head)
    }

    /// Removes message `id` from `state` after its delivery: its file is kept in `free/` for a
    /// later message to be written over, or unlinked when enough are kept (an operator's
    /// deletion uses [`Spool::delete`]). The directory is not synced: if the system crashes
    /// before the file system commits the removal on its own (seconds), the message comes
    /// back and is delivered again — at least once, as with any MTA — and a sync per
    /// delivered message was, in the load benchmark's profile, the largest single cost of
    /// delivery. Callers that need the removal durable sync the directory.
    pub fn remove(&self, state: SpoolState, id: &str) -> Result<(), SpoolError> {
        let path = self.path(state, id);
        match self.free.recycle(&path) {
            Ok(true) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(SpoolError::Io { path, source: e })
            }
            // Full, or recycling failed: unlinked as before.
            Ok(false) | Err(_) => std::fs::remove_file(&path).map_err(io_err(&path)),
        }
    }

    /// Deletes message `id` from `state` for good (an operator's deletion): its file is
    /// unlinked, not kept in `free/`, so its bytes do not wait there. As with
    /// [`Spool::remove`], the directory is not synced.
    pub fn delete(&self, state: SpoolState, id: &str) -> Result<(), SpoolError> {
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

/// The spool's directories.
const DIRS: [&str; 4] = ["tmp", "queue", "quarantine", "free"];

/// Writes `data` as a new file: into a settled recycled file when there is one (no inode to
/// allocate), else a new file in `tmp/`. Returns the path written.
fn write_file(
    tmp: &Path,
    free: &FreeFiles,
    id: &str,
    data: &[u8],
) -> (PathBuf, std::io::Result<()>) {
    if let Some(path) = free.take() {
        let result = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| {
                f.write_all(data)?;
                f.set_len(data.len() as u64)
            });
        if result.is_ok() {
            return (path, result);
        }
        // Gone or broken (an operator cleaning up): a new file instead.
        let _ = std::fs::remove_file(&path);
    }
    let path = tmp.join(format!("{id}.msg"));
    let result = std::fs::File::create(&path).and_then(|mut f| f.write_all(data));
    (path, result)
}

/// The writer thread: batches jobs and makes each batch durable with one flush.
fn writer(root: &Path, rx: &mpsc::Receiver<Job>, free: &FreeFiles) {
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
            let (path, result) = write_file(&tmp, free, &job.id, &job.data);
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
        // 2. One flush of the whole file system makes every file's data durable — and the
        // moves into `free/` made before it, whose files may then be reused.
        let flushed = std::mem::take(&mut free.lists().pending);
        if let Err(e) = syncfs(&tmp) {
            free.lists().pending.extend(flushed);
            fail_all(written, &tmp, e);
            continue;
        }
        free.lists().settled.extend(flushed);
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
        let synced = DIRS.iter().try_for_each(|d| sync_dir(&root.join(d)));
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

/// Whether `id` has the spool's id format: 1 to 64 ASCII letters and digits ([`new_queue_id`]
/// makes 22 hex digits). Ids that come from outside (the console, `sluice queue`) are checked
/// with this before they name a file, so none can climb out of the spool (`../x`).
pub fn is_queue_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
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
            spam: false,
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

    #[tokio::test]
    async fn delivered_files_are_reused_only_after_a_flush_and_big_ones_unlinked() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let inode = |state, id| std::fs::metadata(spool.path(state, id)).unwrap().ino();
        let free_files = || -> Vec<std::fs::Metadata> {
            std::fs::read_dir(dir.path().join("free"))
                .unwrap()
                .map(|e| e.unwrap().metadata().unwrap())
                .collect()
        };
        let long = vec![b'x'; 5000];
        spool
            .store(SpoolState::Queue, &envelope("A"), &long)
            .await
            .unwrap();
        let a = inode(SpoolState::Queue, "A");
        spool.remove(SpoolState::Queue, "A").unwrap();
        let kept = free_files();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].ino(), a);
        // Not reused by the next batch, whose flush is the first after the move...
        spool
            .store(SpoolState::Queue, &envelope("B"), b"b\r\n")
            .await
            .unwrap();
        assert_ne!(inode(SpoolState::Queue, "B"), a);
        // ... but by the one after, with exactly the new bytes (nothing of the longer A).
        spool
            .store(SpoolState::Quarantine, &envelope("C"), b"short\r\n")
            .await
            .unwrap();
        assert_eq!(inode(SpoolState::Quarantine, "C"), a);
        assert!(free_files().is_empty());
        let (env, msg) = spool.read(SpoolState::Quarantine, "C").unwrap();
        assert_eq!((env, msg.as_slice()), (envelope("C"), &b"short\r\n"[..]));
        // A missing message is an error, as before.
        assert!(spool.remove(SpoolState::Queue, "nothing").is_err());
        // A restarted spool reuses what an earlier run kept.
        spool.remove(SpoolState::Quarantine, "C").unwrap();
        drop(spool);
        let spool = Spool::open(dir.path()).unwrap();
        spool
            .store(SpoolState::Queue, &envelope("D"), b"d\r\n")
            .await
            .unwrap();
        assert_eq!(
            std::fs::metadata(spool.path(SpoolState::Queue, "D"))
                .unwrap()
                .ino(),
            a
        );
        // A big file is not kept: its blocks would sit in `free/` for nothing.
        let big = vec![b'x'; usize::try_from(MAX_FREE_FILE).unwrap() + 1];
        spool
            .store(SpoolState::Queue, &envelope("E"), &big)
            .await
            .unwrap();
        spool.remove(SpoolState::Queue, "E").unwrap();
        assert!(free_files().is_empty());
        // An operator's deletion unlinks: nothing of the message waits in `free/`.
        spool
            .store(SpoolState::Quarantine, &envelope("F"), b"f\r\n")
            .await
            .unwrap();
        spool.delete(SpoolState::Quarantine, "F").unwrap();
        assert!(!spool.path(SpoolState::Quarantine, "F").exists());
        assert!(free_files().is_empty());
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
