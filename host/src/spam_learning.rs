//! Teaching the bundled spam-score plugin the site's judgement (`sluice spam learn|forget`).
//!
//! The plugin reads its site model from the file `[plugin.spam-score.config] learned` at the
//! start of every transaction, so a new model applies to the next message without a reload.
//! The model is a set of corrections to the shipped model (`sluice_spam::site`), retrained after
//! every change from the site's whole log of learned messages (each message's first 16 KiB,
//! all the classifier reads). Retraining from the log makes forgetting exact.
//!
//! Where the log and the model live:
//! - **One node** (no `[store] url`): beside the model file, in `learned-messages/`, one file
//!   per message named `<sequence>-<sha256>.<spam|ham>`. Not in the data directory: the learner
//!   usually runs as another user (Dovecot's mail user, from IMAPSieve), who owns that
//!   directory; the model and the log are written readable by the directory's group (Sluice's),
//!   so the console, running as Sluice, can learn too.
//! - **A fleet** (`[store] url`, Redis): in the shared store, so every node learns together.
//!   The learner writes the log and the model there and bumps a version; every server copies a
//!   new model to its own `learned` file within [`SYNC_INTERVAL`] ([`spawn_sync`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use sluice_spam::features::extract_with;
use sluice_spam::model::Scorer;
use sluice_spam::site;
use sluice_spam::trust::Trust;

use crate::config::Config;
use crate::store::KvStore;

/// The plugin whose model is taught.
pub const PLUGIN: &str = "spam-score";

/// How often a server of a fleet looks for a new site model in the shared store.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(2);

/// Keys in the shared store. Plugins' keys start with their name and a colon, and a plugin
/// name never holds `@`, so these can never be a plugin's.
const KEY_INDEX: &[u8] = b"@spam-learning:index";
const KEY_MODEL: &[u8] = b"@spam-learning:model";
const KEY_VERSION: &[u8] = b"@spam-learning:model-version";
const KEY_LOCK: &[u8] = b"@spam-learning:lock";
const KEY_MESSAGE: &str = "@spam-learning:message:";

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Messages learned, relabelled or forgotten.
    pub changed: usize,
    /// Messages already learned with that label, or not learned (forget).
    pub unchanged: usize,
    /// Spam and ham in the log afterwards.
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

/// Writes `bytes` to `path` durably and atomically (a reader sees the old file or the new),
/// with permissions `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    std::io::Write::write_all(&mut f, bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

fn store_error(e: crate::store::StoreError) -> LearnError {
    fail(format!("the shared store: {e}"))
}

fn message_key(sha: &str) -> Vec<u8> {
    format!("{KEY_MESSAGE}{sha}").into_bytes()
}

impl Log {
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
                std::fs::read(&path)
                    .map_err(|err| fail(format!("cannot read {}: {err}", path.display())))
            }
            Log::Store(kv) => kv
                .get(message_key(&e.sha))
                .await
                .map_err(store_error)?
                .ok_or_else(|| fail(format!("the shared store has no message {}", e.sha))),
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
                log_dir(dir)?;
                for e in removed {
                    let path = dir.join(e.file_name());
                    std::fs::remove_file(&path)
                        .map_err(|err| fail(format!("cannot remove {}: {err}", path.display())))?;
                }
                for (e, bytes) in added {
                    let path = dir.join(e.file_name());
                    write_atomic(&path, bytes, 0o640)
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

/// Creates the log directory, shared by its group: the learner run by Dovecot (the mail user)
/// and Sluice's console (user `sluice`) both learn, and the directory's group (set-group-id,
/// as the README sets it up) lets each read and extend what the other wrote.
fn log_dir(dir: &Path) -> Result<(), LearnError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)
        .and_then(|()| {
            std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o2770))
        })
        .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))
}

impl Lock {
    async fn take(log: &Log) -> Result<Lock, LearnError> {
        match log {
            Log::Files(dir) => {
                log_dir(dir)?;
                let path = dir.join(".lock");
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map_err(|e| fail(format!("cannot create {}: {e}", path.display())))?;
                // The other learner's user must open it too.
                let _ = f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o660));
                f.lock()
                    .map_err(|e| fail(format!("cannot lock {}: {e}", path.display())))?;
                Ok(Lock::File(f))
            }
            Log::Store(kv) => {
                let token = format!("{}-{}", std::process::id(), crate::message::now_rfc5322())
                    .into_bytes();
                for _ in 0..600 {
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
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(fail(
                    "another learner has held the shared store's lock for a minute: try again",
                ))
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

/// Learns or forgets `messages` (each at most its first 16 KiB), retrains the site model and
/// publishes it. `shared` is the fleet's store, when the configuration names one.
pub async fn learn(
    config: &Config,
    shared: Option<KvStore>,
    action: Action,
    messages: &[Vec<u8>],
) -> Result<Summary, LearnError> {
    let site = Site::of(config)?;
    let log = match shared {
        Some(kv) => Log::Store(kv),
        None => Log::Files(
            site.learned
                .parent()
                .unwrap_or(Path::new("."))
                .join("learned-messages"),
        ),
    };
    let lock = Lock::take(&log).await?;
    let result = learn_locked(&site, &log, action, messages).await;
    lock.release().await;
    result
}

async fn learn_locked(
    site: &Site,
    log: &Log,
    action: Action,
    messages: &[Vec<u8>],
) -> Result<Summary, LearnError> {
    let entries = log.entries().await?;
    let mut sequence = entries.iter().map(|e| e.sequence).max().unwrap_or(0);
    let want = match action {
        Action::Spam => Some(true),
        Action::Ham => Some(false),
        Action::Forget => None,
    };
    let (mut removed, mut added) = (Vec::new(), Vec::<(Entry, Vec<u8>)>::new());
    let (mut changed, mut unchanged) = (0, 0);
    for bytes in messages {
        let sha = digest(bytes);
        if added.iter().any(|(e, _)| e.sha == sha) {
            unchanged += 1;
            continue;
        }
        let existing: Vec<&Entry> = entries.iter().filter(|e| e.sha == sha).collect();
        // Learned already with this label: nothing to do (moving a message back and forth
        // relabels it; it is never counted twice).
        let same = existing.len() == 1 && Some(existing[0].spam) == want;
        if same || (want.is_none() && existing.is_empty()) {
            unchanged += 1;
            continue;
        }
        removed.extend(existing.into_iter().cloned());
        if let Some(spam) = want {
            sequence += 1;
            added.push((
                Entry {
                    sequence,
                    sha,
                    spam,
                },
                bytes.clone(),
            ));
        }
        changed += 1;
    }
    log.update(&removed, &added).await?;

    // Retrain from the whole log.
    let scorer = Scorer::new(&site.base).map_err(|e| fail(format!("the base model: {e}")))?;
    let mut learned = Vec::new();
    for e in log.entries().await? {
        let bytes = log.read(&e).await?;
        learned.push((e.spam, extract_with(&bytes, &site.trust)));
    }
    let weights = site::train(&|f| scorer.logit(f), &learned);
    let model = site::to_bytes(&weights);
    if let Log::Store(kv) = log {
        kv.set(KEY_MODEL.to_vec(), model.clone(), 0)
            .await
            .map_err(store_error)?;
        kv.increment(KEY_VERSION.to_vec(), 1, 0)
            .await
            .map_err(store_error)?;
    }
    // This node's copy now; the other nodes' within SYNC_INTERVAL.
    write_atomic(&site.learned, &model, 0o640)
        .map_err(|e| fail(format!("cannot write {}: {e}", site.learned.display())))?;
    Ok(Summary {
        changed,
        unchanged,
        spam: learned.iter().filter(|(s, _)| *s).count(),
        ham: learned.iter().filter(|(s, _)| !*s).count(),
        features: weights.len(),
        written_to: match log {
            Log::Store(kv) => format!("{} and {}", kv.describe(), site.learned.display()),
            Log::Files(_) => site.learned.display().to_string(),
        },
    })
}

/// On a server of a fleet (a shared store and a `learned` file configured): copies each new
/// site model from the store to this node's file, checking every [`SYNC_INTERVAL`].
pub async fn sync(kv: KvStore, learned: PathBuf, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut seen: Option<Vec<u8>> = None;
    loop {
        match kv.get(KEY_VERSION.to_vec()).await {
            Ok(Some(version)) if seen.as_ref() != Some(&version) => {
                match kv.get(KEY_MODEL.to_vec()).await {
                    Ok(Some(model)) if site::SiteModel::new(&model).is_ok() => {
                        match write_atomic(&learned, &model, 0o640) {
                            Ok(()) => {
                                tracing::info!(file = %learned.display(), "site spam model updated from the shared store");
                                seen = Some(version);
                            }
                            Err(e) => {
                                tracing::warn!(file = %learned.display(), "cannot write the site spam model: {e}")
                            }
                        }
                    }
                    Ok(_) => {
                        tracing::warn!("the shared store's site spam model is missing or corrupt")
                    }
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
}
