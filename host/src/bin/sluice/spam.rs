//! `sluice spam learn|forget`: teaching the spam-score plugin the site's own judgement.
//!
//! The site model is the file the plugin reads, `[plugin.spam-score.config] learned`. Beside
//! it, in `learned-messages/`, is the site's log of learned messages, one file per message
//! (its first 16 KiB, all the classifier reads), named `<sequence>-<sha256>.<label>`. After
//! every change the site model is retrained from the whole log (see `sluice_spam::site`:
//! milliseconds for thousands of messages, and forgetting is exact) and replaced atomically.
//! The plugin reads it at the start of every transaction, so the running server uses the new
//! model for the next message, without a reload.
//!
//! The state lives in the learned file's directory, not in the data directory, because the
//! learner usually runs as another user: Dovecot's IMAPSieve runs it as the mail user when a
//! user moves a message into or out of Junk. The directory belongs to that user, and the site
//! model is written readable by its group (Sluice's), the log by its owner only.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use sha2::{Digest, Sha256};
use sluice::config::Config;
use sluice_spam::features::{SCAN_BYTES, extract_with};
use sluice_spam::model::Scorer;
use sluice_spam::site;
use sluice_spam::trust::{Trust, parse_network};

/// The plugin whose model is taught.
const PLUGIN: &str = "spam-score";

/// What to do with the messages given.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Learn them as spam.
    Spam,
    /// Learn them as ham.
    Ham,
    /// Take them out of the log.
    Forget,
}

/// One message to learn or forget: where it came from, and its bytes (first 16 KiB).
struct Input {
    from: String,
    bytes: Vec<u8>,
}

/// Every message file under `path` (a file; a folder of files or a Maildir, recursively);
/// `-` is standard input.
fn inputs(path: &Path) -> anyhow::Result<Vec<Input>> {
    let read = |p: &Path| -> anyhow::Result<Input> {
        let mut bytes = Vec::new();
        let f = std::fs::File::open(p).with_context(|| format!("cannot read {}", p.display()))?;
        std::io::Read::read_to_end(&mut std::io::Read::take(f, SCAN_BYTES as u64), &mut bytes)
            .with_context(|| format!("cannot read {}", p.display()))?;
        Ok(Input {
            from: p.display().to_string(),
            bytes,
        })
    };
    if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(std::io::stdin().lock(), SCAN_BYTES as u64),
            &mut bytes,
        )
        .context("cannot read standard input")?;
        // The rest of a longer message is not needed, but a pipe must be drained.
        std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink()).ok();
        return Ok(vec![Input {
            from: "standard input".into(),
            bytes,
        }]);
    }
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_dir() {
        return Ok(vec![read(path)?]);
    }
    let mut files = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in
            std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let p = e?.path();
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            if name.starts_with('.') {
                continue;
            }
            if p.is_dir() {
                // A Maildir's tmp/ holds messages still being written.
                if name != "tmp" {
                    stack.push(p);
                }
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    files.iter().map(|p| read(p)).collect()
}

/// The settings of the plugin that matter here.
struct Site {
    /// The site model file the plugin reads.
    learned: PathBuf,
    /// The log of learned messages.
    log: PathBuf,
    trust: Trust,
    /// The model the plugin scores with before the site's corrections.
    base: Vec<u8>,
}

fn setting<'a>(config: &'a Config, key: &str) -> Option<&'a toml::Value> {
    config.plugin.get(PLUGIN).and_then(|p| p.config.get(key))
}

fn strings(config: &Config, key: &str) -> anyhow::Result<Vec<String>> {
    match setting(config, key) {
        None => Ok(Vec::new()),
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| anyhow!("plugin.{PLUGIN}.config.{key}: a list of strings"))
            })
            .collect(),
        Some(_) => bail!("plugin.{PLUGIN}.config.{key}: a list of strings"),
    }
}

impl Site {
    fn of(config: &Config) -> anyhow::Result<Site> {
        let learned = match setting(config, "learned") {
            Some(toml::Value::String(p)) => PathBuf::from(p),
            Some(_) => bail!("plugin.{PLUGIN}.config.learned: a path"),
            None => bail!(
                "the site model's file is not configured: set [plugin.{PLUGIN}.config] learned = \"/var/lib/sluice/spam/learned.bin\" \
                 and grant its directory with [plugin.{PLUGIN}] read_dirs = [\"/var/lib/sluice/spam\"] (see plugins/spam-score/README.md)"
            ),
        };
        // Our own hops (the Received field Sluice writes) are inside the border, and so are
        // the relays the operator names.
        let mut trust = Trust::default();
        trust
            .internal_hosts
            .push(config.server.hostname.to_ascii_lowercase());
        for h in strings(config, "internal_hosts")? {
            trust.internal_hosts.push(h.to_ascii_lowercase());
        }
        for n in strings(config, "internal_networks")? {
            trust.internal_networks.push(
                parse_network(&n)
                    .map_err(|e| anyhow!("plugin.{PLUGIN}.config.internal_networks: {e}"))?,
            );
        }
        let base = match setting(config, "model") {
            Some(toml::Value::String(p)) => {
                let bytes = std::fs::read(p)
                    .with_context(|| format!("plugin.{PLUGIN}.config.model: cannot read {p}"))?;
                Scorer::new(&bytes)
                    .map_err(|e| anyhow!("plugin.{PLUGIN}.config.model: {p}: {e}"))?;
                bytes
            }
            _ => built_in_model(&config.plugin_dir())?,
        };
        Ok(Site {
            learned: learned.clone(),
            log: learned
                .parent()
                .unwrap_or(Path::new("."))
                .join("learned-messages"),
            trust,
            base,
        })
    }
}

/// The model built into the installed plugin, read from its component file.
fn built_in_model(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let file = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the plugin directory {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n == format!("{PLUGIN}.wasm") || n.ends_with(&format!("-{PLUGIN}.wasm"))
            })
        })
        .ok_or_else(|| anyhow!("no {PLUGIN} plugin in {}: install it, or name a model with [plugin.{PLUGIN}.config] model", dir.display()))?;
    let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let scorer = Scorer::find_in(&bytes).ok_or_else(|| {
        anyhow!(
            "{} has no built-in model (it was built without the corpus): name one with [plugin.{PLUGIN}.config] model",
            file.display()
        )
    })?;
    Ok(scorer.to_owned_bytes())
}

/// A message's identity in the log: the SHA-256 of the bytes the classifier reads, with line
/// endings made one (a message delivered with CRLF and learned from a Maildir with LF is one).
fn digest(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    for line in bytes.split(|&b| b == b'\n') {
        h.update(line.strip_suffix(b"\r").unwrap_or(line));
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// The log's entries, in the order they were learned: (file name, digest, spam).
fn log_entries(log: &Path) -> anyhow::Result<Vec<(String, String, bool)>> {
    let mut out = Vec::new();
    let dir = match std::fs::read_dir(log) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", log.display())),
    };
    for e in dir {
        let name = e?.file_name().to_string_lossy().to_string();
        let Some((stem, label)) = name.rsplit_once('.') else {
            continue;
        };
        let Some((_, sha)) = stem.split_once('-') else {
            continue;
        };
        match label {
            "spam" | "ham" => out.push((name.clone(), sha.to_string(), label == "spam")),
            _ => {}
        }
    }
    out.sort();
    Ok(out)
}

/// Writes `bytes` to `path` durably and atomically (a reader sees the old file or the new),
/// with permissions `mode`.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        std::io::Write::write_all(&mut f, bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

/// Learns (or forgets) the messages under `paths`, then retrains and writes the site model.
pub fn run(config: &Config, action: Action, paths: &[PathBuf]) -> anyhow::Result<()> {
    if paths.is_empty() {
        bail!("name the messages: files, folders or Maildirs, or - for standard input");
    }
    let mut messages = Vec::new();
    for p in paths {
        messages.extend(inputs(p)?);
    }
    let site = Site::of(config)?;
    if messages.is_empty() {
        bail!(
            "no messages found in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    std::fs::create_dir_all(&site.log)
        .with_context(|| format!("cannot create {}", site.log.display()))?;
    // One learner at a time (two users may move mail to Junk at once): each change and the
    // retraining after it see the whole log.
    let lock_path = site.log.join(".lock");
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("cannot create {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    let entries = log_entries(&site.log)?;
    let mut sequence = entries
        .iter()
        .filter_map(|(n, _, _)| n.split('-').next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let (mut changed, mut unchanged) = (0, 0);
    for m in &messages {
        let sha = digest(&m.bytes);
        let existing: Vec<&(String, String, bool)> =
            entries.iter().filter(|(_, s, _)| *s == sha).collect();
        let want = match action {
            Action::Spam => Some(true),
            Action::Ham => Some(false),
            Action::Forget => None,
        };
        // Learned already with the same label: nothing to do (moving a message back and forth
        // relabels it, it does not count it twice).
        if want.is_some() && existing.len() == 1 && Some(existing[0].2) == want {
            unchanged += 1;
            continue;
        }
        if want.is_none() && existing.is_empty() {
            eprintln!("sluice spam forget: {} was not learned", m.from);
            unchanged += 1;
            continue;
        }
        for (name, _, _) in &existing {
            std::fs::remove_file(site.log.join(name))
                .with_context(|| format!("cannot remove {}", site.log.join(name).display()))?;
        }
        if let Some(spam) = want {
            sequence += 1;
            let name = format!("{sequence:012}-{sha}.{}", if spam { "spam" } else { "ham" });
            write_atomic(&site.log.join(name), &m.bytes, 0o600)?;
        }
        changed += 1;
    }

    // Retrain from the whole log.
    let scorer = Scorer::new(&site.base).map_err(|e| anyhow!("the base model: {e}"))?;
    let mut learned = Vec::new();
    for (name, _, spam) in log_entries(&site.log)? {
        let path = site.log.join(&name);
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        learned.push((spam, extract_with(&bytes, &site.trust)));
    }
    let started = std::time::Instant::now();
    let weights = site::train(&|f| scorer.logit(f), &learned);
    write_atomic(&site.learned, &site::to_bytes(&weights), 0o640)?;
    let verb = match action {
        Action::Spam => "learned as spam",
        Action::Ham => "learned as ham",
        Action::Forget => "forgotten",
    };
    println!(
        "{changed} message(s) {verb}, {unchanged} unchanged; the site's log holds {} ({} spam, {} ham); site model: {} features, trained in {} ms, written to {}",
        learned.len(),
        learned.iter().filter(|(s, _)| *s).count(),
        learned.iter().filter(|(s, _)| !*s).count(),
        weights.len(),
        started.elapsed().as_millis(),
        site.learned.display()
    );
    Ok(())
}
