//! Teaching the bundled spam-score plugin the site's judgement (`sluice spam learn|forget`,
//! and the hand-over `sluice spam submit` that users' Junk folders use).
//!
//! The plugin reads its site model from the file `[plugin.spam-score.config] learned` at the
//! start of every transaction, so a new model applies to the next message without a reload.
//! The model is a set of corrections to the shipped model (`sluice_spam::site`), retrained after
//! every batch of changes from the site's log of learned messages (each message's first
//! 16 KiB, all the classifier reads; at most `[spam_learning] max_messages`, the oldest
//! forgotten first). Retraining from the log makes forgetting exact.
//!
//! **One owner.** The model, its log and its lock are written by Sluice's own account only,
//! in directories no other account may write ([`check_own_dir`] refuses to learn otherwise).
//! Another account — Dovecot's mail user, running IMAPSieve — only hands a message and its
//! label over, the way Postfix's `postdrop` hands mail to the queue: `sluice spam submit`
//! writes one file into the drop directory (mode 1730: the mail user's group may create
//! files there but not list or remove others'), and Sluice collects it ([`collect`], every
//! [`SYNC_INTERVAL`] in `sluice serve`). Every file in the drop directory is opened with
//! `O_NOFOLLOW`, must be a regular file with one link and within its size cap, is never
//! written or chmodded, and is removed once read. A user may hand over
//! `max_per_user_per_day` messages a day; one collection retrains once, whatever it holds.
//!
//! Where the log and the model live:
//! - **One node** (no `[store] url`): beside the model file, in `learned-messages/`, one file
//!   per message named `<sequence>-<sha256>.<spam|ham>`.
//! - **A fleet** (`[store] url`, Redis): in the shared store, so every node learns together.
//!   The learner writes the log and the model there and bumps a version; every server copies a
//!   new model, once checked, to its own `learned` file within [`SYNC_INTERVAL`] ([`sync`]).

use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use sluice_spam::features::{SCAN_BYTES, extract_with};
use sluice_spam::model::Scorer;
use sluice_spam::site;
use sluice_spam::trust::Trust;

use crate::config::{Config, LearningConfig};
use crate::store::KvStore;

/// The plugin whose model is taught.
pub const PLUGIN: &str = "spam-score";

/// How often a server of a fleet looks for a new site model in the shared store, and how
/// often `sluice serve` collects the drop directory.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(2);

/// Keys in the shared store. Plugins' keys start with their name and a colon, and a plugin
/// name never holds `@`, so these can never be a plugin's.
const KEY_INDEX: &[u8] = b"@spam-learning:index";
const KEY_MODEL: &[u8] = b"@spam-learning:model";
const KEY_VERSION: &[u8] = b"@spam-learning:model-version";
const KEY_LOCK: &[u8] = b"@spam-learning:lock";
const KEY_MESSAGE: &str = "@spam-learning:message:";
const KEY_QUOTA: &str = "@spam-learning:quota:";

/// The first line of a drop file: `sluice-learn 1 <spam|ham> <user>`.
const DROP_MAGIC: &str = "sluice-learn 1";

/// The largest drop file: its first line and the part of a message the classifier reads.
const MAX_DROP: u64 = SCAN_BYTES as u64 + 512;

/// The longest user name a drop file may carry.
const MAX_USER: usize = 256;

/// The most distinct users counted per day in the local quota file (past it, new users wait
/// for the next day): the file stays small whatever names a mail user makes up.
const MAX_QUOTA_USERS: usize = 100_000;

/// What to do with the messages given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Learn them as spam.
    Spam,
    /// Learn them as ham.
    Ham,
    /// Take them out of the log.
    Forget,
}

impl Action {
    fn label(self) -> Option<bool> {
        match self {
            Action::Spam => Some(true),
            Action::Ham => Some(false),
            Action::Forget => None,
        }
    }
}

/// Why learning failed: the message names the setting or file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LearnError(String);

fn fail(message: impl Into<String>) -> LearnError {
    LearnError(message.into())
}

/// One learned message in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    sequence: u64,
    sha: String,
    spam: bool,
}

impl Entry {
    fn file_name(&self) -> String {
        format!(
            "{:012}-{}.{}",
            self.sequence,
            self.sha,
            if self.spam { "spam" } else { "ham" }
        )
    }

    fn parse(name: &str) -> Option<Entry> {
        let (stem, label) = name.rsplit_once('.')?;
        let (sequence, sha) = stem.split_once('-')?;
        let spam = match label {
            "spam" => true,
            "ham" => false,
            _ => return None,
        };
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(Entry {
            sequence: sequence.parse().ok()?,
            sha: sha.to_string(),
            spam,
        })
    }
}

/// Where the log and the model are kept.
enum Log {
    Files(PathBuf),
    Store(KvStore),
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    /// Messages learned, relabelled or forgotten.
    pub changed: usize,
    /// Messages already learned with that label, or not learned (forget).
    pub unchanged: usize,
    /// Messages handed over past their user's daily quota, not learned.
    pub over_quota: usize,
    /// The oldest messages forgotten to keep the log within `max_messages`.
    pub dropped_oldest: usize,
    /// Spam in the log afterwards.
    pub spam: usize,
    /// Ham in the log afterwards.
    pub ham: usize,
    /// Features the site model corrects.
    pub features: usize,
    /// Where the model went.
    pub written_to: String,
}

/// The plugin's settings that matter here.
pub struct Site {
    /// The site model file the plugin reads.
    pub learned: PathBuf,
    trust: Trust,
    /// The model the plugin scores with before the site's corrections.
    base: Vec<u8>,
    limits: LearningConfig,
}

fn setting<'a>(config: &'a Config, key: &str) -> Option<&'a toml::Value> {
    config.plugin.get(PLUGIN).and_then(|p| p.config.get(key))
}

fn strings(config: &Config, key: &str) -> Result<Vec<String>, LearnError> {
    let bad = || fail(format!("plugin.{PLUGIN}.config.{key}: a list of strings"));
    match setting(config, key) {
        None => Ok(Vec::new()),
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(bad))
            .collect(),
        Some(_) => Err(bad()),
    }
}

/// The site model's path, when configured.
pub fn learned_path(config: &Config) -> Option<PathBuf> {
    match setting(config, "learned") {
        Some(toml::Value::String(p)) => Some(PathBuf::from(p)),
        _ => None,
    }
}

/// The directory that holds the site model (and, on one node, its log).
fn learning_dir(learned: &Path) -> &Path {
    learned
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The drop directory mail users hand messages over through: `[spam_learning] drop_dir`, or
/// `drop/` beside the site model. `None` when no site model is configured.
pub fn drop_dir(config: &Config) -> Option<PathBuf> {
    config
        .learning
        .drop_dir
        .clone()
        .or_else(|| learned_path(config).map(|l| learning_dir(&l).join("drop")))
}

impl Site {
    /// The plugin's settings in `config`, and the model it scores with.
    pub fn of(config: &Config) -> Result<Site, LearnError> {
        let learned = learned_path(config).ok_or_else(|| {
            fail(format!(
                "the site model's file is not configured: set [plugin.{PLUGIN}.config] learned = \"/var/lib/sluice-spam/learned.bin\" \
                 and grant its directory with [plugin.{PLUGIN}] read_dirs = [\"/var/lib/sluice-spam\"] (see plugins/spam-score/README.md)"
            ))
        })?;
        // Our own hops (the Received field Sluice writes) are inside the border, and so are
        // the relays the operator names: the same border the plugin finds as mail arrives.
        let mut hosts = strings(config, "internal_hosts")?;
        hosts.push(config.server.hostname.clone());
        let trust = Trust::site(&hosts, &strings(config, "internal_networks")?)
            .map_err(|e| fail(format!("plugin.{PLUGIN}.config.internal_networks: {e}")))?;
        let base = match setting(config, "model") {
            Some(toml::Value::String(p)) => {
                let bytes = std::fs::read(p).map_err(|e| {
                    fail(format!(
                        "plugin.{PLUGIN}.config.model: cannot read {p}: {e}"
                    ))
                })?;
                Scorer::new(&bytes)
                    .map_err(|e| fail(format!("plugin.{PLUGIN}.config.model: {p}: {e}")))?;
                bytes
            }
            _ => built_in_model(&config.plugin_dir())?,
        };
        Ok(Site {
            learned,
            trust,
            base,
            limits: config.learning.clone(),
        })
    }
}

/// The model built into the installed plugin, read from its component file.
fn built_in_model(dir: &Path) -> Result<Vec<u8>, LearnError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        fail(format!(
            "cannot read the plugin directory {}: {e}",
            dir.display()
        ))
    })?;
    let file = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n == format!("{PLUGIN}.wasm") || n.ends_with(&format!("-{PLUGIN}.wasm"))
            })
        })
        .ok_or_else(|| {
            fail(format!(
                "no {PLUGIN} plugin in {}: install it, or name a model with [plugin.{PLUGIN}.config] model",
                dir.display()
            ))
        })?;
    let bytes =
        std::fs::read(&file).map_err(|e| fail(format!("cannot read {}: {e}", file.display())))?;
    let scorer = Scorer::find_in(&bytes).ok_or_else(|| {
        fail(format!(
            "{} has no built-in model (it was built without the corpus): name one with [plugin.{PLUGIN}.config] model",
            file.display()
        ))
    })?;
    Ok(scorer.to_owned_bytes())
}

/// A message's identity in the log: the SHA-256 of the bytes the classifier reads, with line
/// endings made one (a message delivered with CRLF and learned from a Maildir with LF is one).
pub fn digest(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    for line in bytes.split(|&b| b == b'\n') {
        h.update(line.strip_suffix(b"\r").unwrap_or(line));
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// Checks that `dir` is a directory of this account's that no other account may write: the
/// learner writes the model and the log there, and a directory another account can write
/// lets that account put a symbolic link where the learner writes.
pub fn check_own_dir(dir: &Path) -> Result<(), LearnError> {
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| fail(format!("cannot read {}: {e}", dir.display())))?;
    let me = rustix::process::geteuid().as_raw();
    if !meta.is_dir() {
        return Err(fail(format!(
            "{} is not a directory (a symbolic link is not taken)",
            dir.display()
        )));
    }
    if meta.uid() != me || meta.mode() & 0o022 != 0 {
        return Err(fail(format!(
            "{} (owner uid {}, mode {:o}) must belong to this account (uid {me}) and be writable by no one else: \
             the site model and its log are Sluice's alone; mail users hand messages over through the drop directory \
             with `sluice spam submit` (see host/deploy/dovecot-imapsieve/README.md)",
            dir.display(),
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Creates `dir` (mode 0700) when missing, then checks it with [`check_own_dir`].
fn own_dir(dir: &Path) -> Result<(), LearnError> {
    if std::fs::symlink_metadata(dir).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    }
    check_own_dir(dir)
}

/// A name no one can guess, for temporary and drop files.
fn random_name() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Writes `bytes` to `path` durably and atomically (a reader sees the old file or the new),
/// with permissions `mode`. The temporary file has a new random name and is created with
/// `O_EXCL | O_NOFOLLOW`, so nothing already in the directory (a symbolic link least of all)
/// is ever opened or written; the rename replaces the name `path`, never what it points to.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", random_name()));
    write_new(&tmp, path, bytes, mode)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `bytes` to the new file `tmp` (`O_EXCL | O_NOFOLLOW`; permissions exactly `mode`,
/// whatever the umask: the file is this call's own), syncs it and renames it to `target`;
/// `tmp` is removed when anything fails.
fn write_new(tmp: &Path, target: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc_flags::NOFOLLOW)
            .open(tmp)?;
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        std::io::Write::write_all(&mut f, bytes)?;
        f.sync_all()?;
        std::fs::rename(tmp, target)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    written
}

/// Open flags from rustix, as `std` takes them.
mod libc_flags {
    /// `O_NOFOLLOW`: a symbolic link in the last component is an error, never followed.
    pub const NOFOLLOW: i32 = rustix::fs::OFlags::NOFOLLOW.bits() as i32;
    /// `O_NONBLOCK`: opening a FIFO does not wait for a writer.
    pub const NONBLOCK: i32 = rustix::fs::OFlags::NONBLOCK.bits() as i32;
}

/// Reads a file that another account may have put in place: not through a symbolic link
/// (`O_NOFOLLOW`), only a regular file with one link (not a FIFO, a device or a hard link to
/// someone else's file), at most `cap` bytes.
fn read_untrusted(path: &Path, cap: u64) -> Result<(Vec<u8>, std::fs::Metadata), String> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags::NOFOLLOW | libc_flags::NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                "a symbolic link, refused".to_string()
            } else {
                format!("cannot open: {e}")
            }
        })?;
    let meta = f.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file, refused".into());
    }
    if meta.nlink() != 1 {
        return Err(format!("{} hard links, refused", meta.nlink()));
    }
    if meta.len() > cap {
        return Err(format!("{} bytes, more than the {cap} allowed", meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(cap)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    Ok((bytes, meta))
}

// ---------------------------------------------------------------------------------------------
// The hand-over: `sluice spam submit` (the mail user) and the collection (Sluice).

/// Checks a user name a drop file carries: printable, no spaces, at most [`MAX_USER`] bytes.
fn valid_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= MAX_USER
        && user.chars().all(|c| !c.is_control() && !c.is_whitespace())
}

/// Hands one message over for learning (run by the mail user, e.g. from Dovecot's
/// IMAPSieve): writes it, with its label and the IMAP user it came from, as a new file in
/// `drop` (`O_EXCL`, a random name, renamed into place once whole). Needs no configuration
/// and no secret: only the right to create files in the drop directory.
pub fn submit(
    drop: &Path,
    action: Action,
    user: Option<&str>,
    message: &[u8],
) -> Result<PathBuf, LearnError> {
    let label = match action {
        Action::Spam => "spam",
        Action::Ham => "ham",
        Action::Forget => return Err(fail("only spam or ham can be handed over")),
    };
    let user = user.unwrap_or("-");
    if !valid_user(user) {
        return Err(fail(format!(
            "--user {:?}: a user name is printable, without spaces, at most {MAX_USER} bytes",
            crate::inbound::message::printable(user)
        )));
    }
    let mut bytes = format!("{DROP_MAGIC} {label} {user}\n").into_bytes();
    bytes.extend_from_slice(&message[..message.len().min(SCAN_BYTES)]);
    let name = random_name();
    let tmp = drop.join(format!(".{name}.tmp"));
    let target = drop.join(format!("{name}.{label}"));
    // Readable by Sluice's account whatever the umask (sluice runs with 077). The drop
    // directory is not synced: the mail user may not open it for reading.
    if let Err(e) = write_new(&tmp, &target, &bytes, 0o644) {
        return Err(fail(format!(
            "cannot hand the message over into {}: {e} (this account needs to create files there: \
             install -d -o sluice -g MAILGROUP -m 1730 {})",
            drop.display(),
            drop.display()
        )));
    }
    Ok(target)
}

/// One message taken from the drop directory.
struct Dropped {
    spam: bool,
    /// Who handed it over: the IMAP user it names, else the file's owner.
    user: String,
    message: Vec<u8>,
}

/// Parses a drop file.
fn parse_drop(bytes: &[u8], uid: u32) -> Result<Dropped, String> {
    let end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .filter(|&n| n <= 64 + MAX_USER)
        .ok_or("no first line")?;
    let line = std::str::from_utf8(&bytes[..end]).map_err(|_| "a first line that is not UTF-8")?;
    let rest = line
        .strip_prefix(DROP_MAGIC)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or("not a drop file of this version")?;
    let (label, user) = rest.split_once(' ').ok_or("no user on the first line")?;
    let spam = match label {
        "spam" => true,
        "ham" => false,
        _ => return Err("a label that is neither spam nor ham".into()),
    };
    if !valid_user(user) {
        return Err("an invalid user name".into());
    }
    let user = if user == "-" {
        format!("uid:{uid}")
    } else {
        user.to_string()
    };
    Ok(Dropped {
        spam,
        user,
        message: bytes[end + 1..].to_vec(),
    })
}

/// Whether `dir` holds a drop file (a name not starting with a dot), without reading any.
fn has_drops(dir: &Path) -> Result<bool, LearnError> {
    let mut entries = std::fs::read_dir(dir).map_err(|e| {
        fail(format!(
            "cannot read the drop directory {}: {e}",
            dir.display()
        ))
    })?;
    Ok(entries.any(|e| e.is_ok_and(|e| !e.file_name().to_string_lossy().starts_with('.'))))
}

/// Takes up to `batch` drop files out of `dir`: each is read as [`read_untrusted`] allows and
/// removed, whatever it was. Temporary files older than an hour (a submitter that died) go
/// too. Refusals are logged with the file's name (escaped).
fn take_drops(dir: &Path, batch: usize) -> Result<Vec<Dropped>, LearnError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        fail(format!(
            "cannot read the drop directory {}: {e}",
            dir.display()
        ))
    })?;
    // Oldest first, so a user's quota is spent on what they handed over first.
    let mut entries: Vec<(SystemTime, String, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| {
            let when = std::fs::symlink_metadata(e.path())
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            (when, e.file_name().to_string_lossy().into_owned(), e.path())
        })
        .collect();
    entries.sort();
    let mut out = Vec::new();
    let mut taken = 0;
    for (modified, name, path) in entries {
        if taken >= batch {
            break;
        }
        if name.starts_with('.') {
            let stale = modified
                .elapsed()
                .is_ok_and(|age| age > Duration::from_secs(3600));
            if stale {
                let _ = std::fs::remove_file(&path);
            }
            continue;
        }
        taken += 1;
        let read = read_untrusted(&path, MAX_DROP)
            .and_then(|(bytes, meta)| parse_drop(&bytes, meta.uid()));
        // Removed whatever it is: a symbolic link is unlinked, not what it points to.
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(file = %crate::inbound::message::printable(&name), "spam learning: cannot remove a drop file: {e}");
        }
        match read {
            Ok(d) => out.push(d),
            Err(why) => tracing::warn!(
                dir = %dir.display(),
                file = %crate::inbound::message::printable(&name),
                "spam learning: drop file refused: {why}"
            ),
        }
    }
    Ok(out)
}

fn store_error(e: crate::store::StoreError) -> LearnError {
    fail(format!("the shared store: {e}"))
}

fn message_key(sha: &str) -> Vec<u8> {
    format!("{KEY_MESSAGE}{sha}").into_bytes()
}

/// Today, as days since the Unix epoch (UTC): the quota's period.
fn today() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

impl Log {
    fn of(site: &Site, shared: Option<KvStore>) -> Log {
        match shared {
            Some(kv) => Log::Store(kv),
            None => Log::Files(learning_dir(&site.learned).join("learned-messages")),
        }
    }

    async fn entries(&self) -> Result<Vec<Entry>, LearnError> {
        let mut out: Vec<Entry> = match self {
            Log::Files(dir) => match std::fs::read_dir(dir) {
                Ok(d) => d
                    .filter_map(Result::ok)
                    .filter_map(|e| Entry::parse(&e.file_name().to_string_lossy()))
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(fail(format!("cannot read {}: {e}", dir.display()))),
            },
            Log::Store(kv) => {
                let index = kv
                    .get(KEY_INDEX.to_vec())
                    .await
                    .map_err(store_error)?
                    .unwrap_or_default();
                String::from_utf8_lossy(&index)
                    .lines()
                    .filter_map(Entry::parse)
                    .collect()
            }
        };
        out.sort_by_key(|e| e.sequence);
        Ok(out)
    }

    async fn read(&self, e: &Entry) -> Result<Vec<u8>, LearnError> {
        match self {
            Log::Files(dir) => {
                let path = dir.join(e.file_name());
                read_untrusted(&path, SCAN_BYTES as u64)
                    .map(|(bytes, _)| bytes)
                    .map_err(|why| fail(format!("{}: {why}", path.display())))
            }
            Log::Store(kv) => kv
                .get(message_key(&e.sha))
                .await
                .map_err(store_error)?
                .ok_or_else(|| fail(format!("the shared store has no message {}", e.sha))),
        }
    }

    /// Counts one hand-over of `user` today; false when that passes `limit`.
    async fn take_quota(&self, user: &str, limit: u32) -> Result<bool, LearnError> {
        let day = today();
        match self {
            Log::Store(kv) => {
                let key = format!("{KEY_QUOTA}{day}:{user}").into_bytes();
                let n = kv
                    .increment(key, 1, 2 * 86_400)
                    .await
                    .map_err(store_error)?;
                Ok(n <= i64::from(limit))
            }
            Log::Files(dir) => {
                // `day` on the first line, then `count user` per line; under the lock.
                let path = dir.join(".quota");
                let text = match read_untrusted(&path, 64 << 20) {
                    Ok((b, _)) => String::from_utf8_lossy(&b).into_owned(),
                    Err(_) => String::new(),
                };
                let mut lines = text.lines();
                let mut counts: std::collections::BTreeMap<String, u32> =
                    if lines.next().and_then(|d| d.parse::<u64>().ok()) == Some(day) {
                        lines
                            .filter_map(|l| l.split_once(' '))
                            .filter_map(|(n, u)| Some((u.to_string(), n.parse().ok()?)))
                            .collect()
                    } else {
                        Default::default()
                    };
                if !counts.contains_key(user) && counts.len() >= MAX_QUOTA_USERS {
                    return Ok(false);
                }
                let n = counts.entry(user.to_string()).or_insert(0);
                *n = n.saturating_add(1);
                let within = *n <= limit;
                let mut out = format!("{day}\n");
                for (u, n) in &counts {
                    out.push_str(&format!("{n} {u}\n"));
                }
                write_atomic(&path, out.as_bytes(), 0o600)
                    .map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
                Ok(within)
            }
        }
    }

    /// Replaces the log's entries for the messages touched: `removed` go, `added` come with
    /// their bytes.
    async fn update(
        &self,
        removed: &[Entry],
        added: &[(Entry, Vec<u8>)],
    ) -> Result<(), LearnError> {
        match self {
            Log::Files(dir) => {
                for e in removed {
                    let path = dir.join(e.file_name());
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                        Err(err) => {
                            return Err(fail(format!("cannot remove {}: {err}", path.display())));
                        }
                    }
                }
                for (e, bytes) in added {
                    let path = dir.join(e.file_name());
                    write_atomic(&path, bytes, 0o600)
                        .map_err(|err| fail(format!("cannot write {}: {err}", path.display())))?;
                }
                Ok(())
            }
            Log::Store(kv) => {
                for (e, bytes) in added {
                    kv.set(message_key(&e.sha), bytes.clone(), 0)
                        .await
                        .map_err(store_error)?;
                }
                // The index under the learners' lock; compare-and-set guards it anyway.
                loop {
                    let old = kv.get(KEY_INDEX.to_vec()).await.map_err(store_error)?;
                    let mut entries: Vec<Entry> = old
                        .as_deref()
                        .map(|b| {
                            String::from_utf8_lossy(b)
                                .lines()
                                .filter_map(Entry::parse)
                                .collect()
                        })
                        .unwrap_or_default();
                    entries.retain(|e| !removed.contains(e));
                    entries.extend(added.iter().map(|(e, _)| e.clone()));
                    let text: String = entries.iter().map(|e| e.file_name() + "\n").collect();
                    if kv
                        .compare_and_set(KEY_INDEX.to_vec(), old, text.into_bytes(), 0)
                        .await
                        .map_err(store_error)?
                    {
                        break;
                    }
                }
                for e in removed {
                    if !added.iter().any(|(a, _)| a.sha == e.sha) {
                        kv.delete(message_key(&e.sha)).await.map_err(store_error)?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// The learners' lock: one change and its retraining at a time, on this node (a file lock) or
/// in the fleet (a key with a time-to-live, so a killed learner frees it).
enum Lock {
    File(#[allow(dead_code)] std::fs::File),
    Store(KvStore, Vec<u8>),
}

impl Lock {
    /// Takes the lock, waiting at most `timeout` for another learner (never blocking a
    /// thread: the wait is a sleep between tries, so the console's Learn cannot stall the
    /// server's workers).
    async fn take(log: &Log, timeout: Duration) -> Result<Lock, LearnError> {
        let deadline = tokio::time::Instant::now() + timeout;
        match log {
            Log::Files(dir) => {
                own_dir(dir)?;
                let path = dir.join(".lock");
                // Our own file in our own directory; O_NOFOLLOW all the same, and no chmod.
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .mode(0o600)
                    .custom_flags(libc_flags::NOFOLLOW)
                    .open(&path)
                    .map_err(|e| fail(format!("cannot open {}: {e}", path.display())))?;
                loop {
                    match f.try_lock() {
                        Ok(()) => return Ok(Lock::File(f)),
                        Err(std::fs::TryLockError::WouldBlock) => {}
                        Err(std::fs::TryLockError::Error(e)) => {
                            return Err(fail(format!("cannot lock {}: {e}", path.display())));
                        }
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(fail(format!(
                            "another learner has held {} for {} s: try again later",
                            path.display(),
                            timeout.as_secs()
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Log::Store(kv) => {
                let token = format!(
                    "{}-{}",
                    std::process::id(),
                    crate::inbound::message::now_rfc5322()
                )
                .into_bytes();
                loop {
                    // Free: absent, or emptied by its last holder.
                    for free in [None, Some(Vec::new())] {
                        if kv
                            .compare_and_set(KEY_LOCK.to_vec(), free, token.clone(), 60)
                            .await
                            .map_err(store_error)?
                        {
                            return Ok(Lock::Store(kv.clone(), token));
                        }
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(fail(format!(
                            "another learner has held the shared store's lock for {} s: try again later",
                            timeout.as_secs()
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn release(self) {
        if let Lock::Store(kv, token) = self {
            // Emptied only if still ours (it may have expired and been taken since).
            let _ = kv
                .compare_and_set(KEY_LOCK.to_vec(), Some(token), Vec::new(), 60)
                .await;
        }
    }
}

/// One message to learn (`Some(label)`) or forget (`None`).
struct Item {
    label: Option<bool>,
    bytes: Vec<u8>,
}

/// Learns or forgets `messages` (each at most its first 16 KiB), retrains the site model and
/// publishes it. `shared` is the fleet's store, when the configuration names one.
pub async fn learn(
    config: &Config,
    shared: Option<KvStore>,
    action: Action,
    messages: &[Vec<u8>],
) -> Result<Summary, LearnError> {
    let site = Site::of(config)?;
    if shared.is_none() {
        check_own_dir(learning_dir(&site.learned))?;
    }
    let items = messages
        .iter()
        .map(|m| Item {
            label: action.label(),
            bytes: m[..m.len().min(SCAN_BYTES)].to_vec(),
        })
        .collect();
    run(&site, shared, items, Vec::new()).await
}

/// Collects the drop directory once: learns what mail users handed over (within each user's
/// daily quota, at most `batch` files) with one retraining. `None` when it held nothing.
pub async fn collect(
    config: &Config,
    shared: Option<KvStore>,
) -> Result<Option<Summary>, LearnError> {
    let Some(dir) = drop_dir(config) else {
        // No site model configured: the reason, as learning gives it.
        return Site::of(config).map(|_| None);
    };
    let config = config.clone();
    let taken = tokio::task::spawn_blocking(move || {
        // The site (its base model is read from the plugin's file) only when something waits:
        // `sluice serve` looks every two seconds.
        if !has_drops(&dir)? {
            return Ok(None);
        }
        let site = Site::of(&config)?;
        // Checked before anything is taken out of the drop directory, so nothing handed over
        // is lost while the learning directory is laid out wrong.
        check_own_dir(learning_dir(&site.learned))?;
        let drops = take_drops(&dir, site.limits.batch)?;
        Ok::<_, LearnError>(Some((site, drops)))
    })
    .await
    .map_err(|e| fail(format!("collecting the drop directory: {e}")))??;
    let Some((site, drops)) = taken.filter(|(_, drops)| !drops.is_empty()) else {
        return Ok(None);
    };
    let users = drops.iter().map(|d| d.user.clone()).collect();
    let items = drops
        .into_iter()
        .map(|d| Item {
            label: Some(d.spam),
            bytes: d.message,
        })
        .collect();
    run(&site, shared, items, users).await.map(Some)
}

/// Takes the lock and runs [`learn_locked`]; `users[i]` is who handed over `items[i]` (empty
/// when no quota applies: an operator's own learning). The callers have checked the learning
/// directory ([`check_own_dir`]).
async fn run(
    site: &Site,
    shared: Option<KvStore>,
    items: Vec<Item>,
    users: Vec<String>,
) -> Result<Summary, LearnError> {
    let log = Log::of(site, shared);
    let timeout = Duration::from_secs(site.limits.lock_timeout_secs);
    let lock = Lock::take(&log, timeout).await?;
    let result = learn_locked(site, &log, items, users).await;
    lock.release().await;
    result
}

async fn learn_locked(
    site: &Site,
    log: &Log,
    items: Vec<Item>,
    users: Vec<String>,
) -> Result<Summary, LearnError> {
    let mut summary = Summary::default();
    let entries = log.entries().await?;
    let mut sequence = entries.iter().map(|e| e.sequence).max().unwrap_or(0);
    let (mut removed, mut added) = (Vec::new(), Vec::<(Entry, Vec<u8>)>::new());
    for (k, item) in items.into_iter().enumerate() {
        if let Some(user) = users.get(k)
            && !log
                .take_quota(user, site.limits.max_per_user_per_day)
                .await?
        {
            summary.over_quota += 1;
            tracing::warn!(user = %crate::inbound::message::printable(user), limit = site.limits.max_per_user_per_day, "spam learning: message not learned: the user's daily quota is used up");
            continue;
        }
        let sha = digest(&item.bytes);
        // A later hand-over of the same message in this batch replaces the earlier one (a
        // message moved into Junk and out again within one collection is ham).
        if let Some(at) = added.iter().position(|(e, _)| e.sha == sha) {
            added.remove(at);
            summary.changed = summary.changed.saturating_sub(1);
        }
        let existing: Vec<&Entry> = entries.iter().filter(|e| e.sha == sha).collect();
        // Learned already with this label: nothing to do (moving a message back and forth
        // relabels it; it is never counted twice).
        let same = existing.len() == 1 && Some(existing[0].spam) == item.label;
        if same || (item.label.is_none() && existing.is_empty()) {
            summary.unchanged += 1;
            continue;
        }
        for e in existing {
            if !removed.contains(e) {
                removed.push(e.clone());
            }
        }
        if let Some(spam) = item.label {
            sequence += 1;
            added.push((
                Entry {
                    sequence,
                    sha,
                    spam,
                },
                item.bytes,
            ));
        }
        summary.changed += 1;
    }
    // The log keeps at most max_messages: the oldest go first.
    let kept = entries.iter().filter(|e| !removed.contains(e)).count() + added.len();
    let excess = kept.saturating_sub(site.limits.max_messages);
    if excess > 0 {
        let oldest: Vec<Entry> = entries
            .iter()
            .filter(|e| !removed.contains(e))
            .take(excess)
            .cloned()
            .collect();
        summary.dropped_oldest = oldest.len();
        removed.extend(oldest);
        // More hand-overs in one batch than the whole log holds: the newest are kept.
        let still = excess - summary.dropped_oldest;
        if still > 0 {
            added.drain(..still.min(added.len()));
            summary.dropped_oldest += still;
        }
    }
    log.update(&removed, &added).await?;

    // Retrain from the whole log, once for the whole batch, off the async workers.
    let mut logged = Vec::new();
    for e in log.entries().await? {
        let bytes = log.read(&e).await?;
        logged.push((e.spam, bytes));
    }
    let base = site.base.clone();
    let trust = site.trust.clone();
    let (weights, spam, ham) = tokio::task::spawn_blocking(move || {
        let scorer = Scorer::new(&base).map_err(|e| fail(format!("the base model: {e}")))?;
        let learned: Vec<_> = logged
            .iter()
            .map(|(spam, bytes)| (*spam, extract_with(bytes, &trust)))
            .collect();
        let weights = site::train(&|f| scorer.logit(f), &learned);
        let spam = learned.iter().filter(|(s, _)| *s).count();
        Ok::<_, LearnError>((weights, spam, learned.len() - spam))
    })
    .await
    .map_err(|e| fail(format!("retraining: {e}")))??;
    let model = site::to_bytes(&weights);
    // Never publish a model the plugin would refuse.
    site::SiteModel::new(&model)
        .map_err(|e| fail(format!("the retrained model was refused: {e}")))?;
    if let Log::Store(kv) = log {
        kv.set(KEY_MODEL.to_vec(), model.clone(), 0)
            .await
            .map_err(store_error)?;
        kv.increment(KEY_VERSION.to_vec(), 1, 0)
            .await
            .map_err(store_error)?;
    }
    // This node's copy now; the other nodes' within SYNC_INTERVAL.
    write_atomic(&site.learned, &model, 0o600)
        .map_err(|e| fail(format!("cannot write {}: {e}", site.learned.display())))?;
    summary.spam = spam;
    summary.ham = ham;
    summary.features = weights.len();
    summary.written_to = match log {
        Log::Store(kv) => format!("{} and {}", kv.describe(), site.learned.display()),
        Log::Files(_) => site.learned.display().to_string(),
    };
    Ok(summary)
}

/// In `sluice serve`, when a site model is configured: collects the drop directory every
/// [`SYNC_INTERVAL`] (when it exists), logging what each collection learned.
pub async fn collect_loop(
    ctx: std::sync::Arc<crate::server::context::ServerContext>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut last_error = String::new();
    loop {
        let config = ctx.live().config.clone();
        if drop_dir(&config).is_some_and(|d| d.is_dir()) {
            let shared = match &ctx.runtime.services.kv {
                Some(kv @ KvStore::Redis(_)) => Some(kv.clone()),
                _ => None,
            };
            let started = std::time::Instant::now();
            match collect(&config, shared).await {
                Ok(Some(s)) => {
                    last_error.clear();
                    tracing::info!(
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        learned = s.changed,
                        unchanged = s.unchanged,
                        over_quota = s.over_quota,
                        dropped_oldest = s.dropped_oldest,
                        spam = s.spam,
                        ham = s.ham,
                        features = s.features,
                        "spam learning: collected the drop directory"
                    );
                }
                Ok(None) => {}
                Err(e) => {
                    // Once per distinct problem, not every two seconds.
                    let e = e.to_string();
                    if e != last_error {
                        tracing::warn!("spam learning: {e}");
                        last_error = e;
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(SYNC_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// On a server of a fleet (a shared store and a `learned` file configured): copies each new
/// site model from the store to this node's file, checking every [`SYNC_INTERVAL`]. A model
/// that fails the plugin's checks (NaN or huge weights, too many, a bad header) is refused
/// with a log line, and the file keeps the previous one.
pub async fn sync(kv: KvStore, learned: PathBuf, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut seen: Option<Vec<u8>> = None;
    loop {
        match kv.get(KEY_VERSION.to_vec()).await {
            Ok(Some(version)) if seen.as_ref() != Some(&version) => {
                match kv.get(KEY_MODEL.to_vec()).await {
                    Ok(Some(model)) => match site::SiteModel::new(&model) {
                        Ok(_) => match write_atomic(&learned, &model, 0o600) {
                            Ok(()) => {
                                tracing::info!(file = %learned.display(), "site spam model updated from the shared store");
                                seen = Some(version);
                            }
                            Err(e) => {
                                tracing::warn!(file = %learned.display(), "cannot write the site spam model: {e}")
                            }
                        },
                        Err(e) => {
                            tracing::warn!(file = %learned.display(), "the shared store's site spam model is refused, the previous one stays: {e}");
                            seen = Some(version);
                        }
                    },
                    Ok(None) => tracing::warn!("the shared store's site spam model is missing"),
                    Err(e) => tracing::warn!("reading the site spam model: {e}"),
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("checking the site spam model: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(SYNC_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn entries_round_trip_and_strangers_are_ignored() {
        let e = Entry {
            sequence: 7,
            sha: "ab".repeat(32),
            spam: true,
        };
        assert_eq!(Entry::parse(&e.file_name()), Some(e));
        for name in [
            ".lock",
            "000000000001-xyz.spam",
            "1-".to_string().as_str(),
            "x.tmp",
        ] {
            assert_eq!(Entry::parse(name), None, "{name}");
        }
    }

    #[test]
    fn the_digest_ignores_line_endings() {
        assert_eq!(
            digest(b"Subject: a\r\n\r\nb\r\n"),
            digest(b"Subject: a\n\nb\n")
        );
        assert_ne!(digest(b"Subject: a\n\nb\n"), digest(b"Subject: a\n\nc\n"));
    }

    #[test]
    fn drop_files_round_trip_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = submit(
            dir.path(),
            Action::Spam,
            Some("bob@dove.test"),
            b"Subject: x\n\ny\n",
        )
        .unwrap();
        let (bytes, meta) = read_untrusted(&path, MAX_DROP).unwrap();
        let d = parse_drop(&bytes, meta.uid()).unwrap();
        assert!(d.spam);
        assert_eq!(d.user, "bob@dove.test");
        assert_eq!(d.message, b"Subject: x\n\ny\n");
        let anon = submit(dir.path(), Action::Ham, None, b"m").unwrap();
        let (bytes, meta) = read_untrusted(&anon, MAX_DROP).unwrap();
        assert_eq!(parse_drop(&bytes, 42).unwrap().user, format!("uid:{}", 42));
        let _ = meta;
        assert!(submit(dir.path(), Action::Spam, Some("two words"), b"m").is_err());
        assert!(submit(dir.path(), Action::Spam, Some("a\nb"), b"m").is_err());
        for bad in [
            &b"sluice-learn 1 spam\nmessage"[..],
            b"sluice-learn 2 spam bob\nmessage",
            b"sluice-learn 1 maybe bob\nmessage",
            b"no line at all",
        ] {
            assert!(
                parse_drop(bad, 0).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // A symbolic link and a FIFO are refused without being followed or waited on.
        let target = dir.path().join("target");
        std::fs::write(&target, b"private").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("link.spam")).unwrap();
        let e = read_untrusted(&dir.path().join("link.spam"), MAX_DROP).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        let fifo = dir.path().join("fifo.spam");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let e = read_untrusted(&fifo, MAX_DROP).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        std::fs::hard_link(&target, dir.path().join("hard.spam")).unwrap();
        let e = read_untrusted(&dir.path().join("hard.spam"), MAX_DROP).unwrap_err();
        assert!(e.contains("hard links"), "{e}");
        std::fs::write(
            dir.path().join("big.spam"),
            vec![b'x'; MAX_DROP as usize + 1],
        )
        .unwrap();
        assert!(read_untrusted(&dir.path().join("big.spam"), MAX_DROP).is_err());
    }

    #[test]
    fn write_atomic_never_writes_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("private");
        std::fs::write(&private, b"secret!").unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
        // The old fixed temporary name and the target itself, both links to the private file.
        std::os::unix::fs::symlink(&private, dir.path().join("learned.tmp")).unwrap();
        std::os::unix::fs::symlink(&private, dir.path().join("learned.bin")).unwrap();
        write_atomic(&dir.path().join("learned.bin"), b"model", 0o600).unwrap();
        assert_eq!(std::fs::read(&private).unwrap(), b"secret!");
        assert_eq!(
            std::fs::metadata(&private).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let learned = std::fs::symlink_metadata(dir.path().join("learned.bin")).unwrap();
        assert!(learned.is_file(), "the link was replaced by a file");
        assert_eq!(
            std::fs::read(dir.path().join("learned.bin")).unwrap(),
            b"model"
        );
    }

    #[test]
    fn a_directory_others_may_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        check_own_dir(dir.path()).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o2770)).unwrap();
        let e = check_own_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("writable by no one else"), "{e}");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        assert!(check_own_dir(&link).is_err());
    }
}
