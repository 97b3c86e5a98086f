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

mod drops;
mod files;
mod log;

pub use drops::submit;
use drops::*;
use files::*;
pub use files::{check_own_dir, write_atomic};
use log::*;

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
            _ => built_in_model(&config.paths().plugin_dir)?,
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
