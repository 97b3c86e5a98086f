//! `sluice spam learn|forget`: the command line of `sluice::spam_learning`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sluice::config::Config;
pub use sluice::spam_learning::Action;
use sluice::spam_learning::learn;
use sluice::store::KvStore;
use sluice_spam::features::SCAN_BYTES;

/// Reads at most the first 16 KiB of `r` (all the classifier reads), then drains the rest.
fn first_bytes(mut r: impl std::io::Read) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(&mut r, SCAN_BYTES as u64),
        &mut bytes,
    )?;
    std::io::copy(&mut r, &mut std::io::sink())?;
    Ok(bytes)
}

/// The messages under `path`: a file, a folder of files or a Maildir (see
/// `sluice_spam::files::message_files`), or `-` for one message on standard input.
fn messages(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    if path == Path::new("-") {
        return Ok(vec![
            first_bytes(std::io::stdin().lock()).context("cannot read standard input")?,
        ]);
    }
    let read = |p: &Path| {
        std::fs::File::open(p)
            .and_then(first_bytes)
            .with_context(|| format!("cannot read {}", p.display()))
    };
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_dir() {
        return Ok(vec![read(path)?]);
    }
    let files = sluice_spam::files::message_files(path).map_err(anyhow::Error::msg)?;
    files.iter().map(|p| read(p)).collect()
}

/// Runs `sluice spam learn|forget` on `paths`.
pub fn run(config: &Config, action: Action, paths: &[PathBuf]) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for p in paths {
        all.extend(messages(p)?);
    }
    if all.is_empty() {
        bail!(
            "no messages found in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let summary = rt.block_on(async {
        // A fleet's shared store holds the state; the embedded one belongs to the server.
        let shared = match &config.store.url {
            Some(url) => Some(KvStore::Redis(
                sluice::store::redis::Redis::new(url, config.store.ca_file.as_deref())
                    .map_err(|e| anyhow::anyhow!("store.url: {e}"))?,
            )),
            None => None,
        };
        anyhow::Ok(learn(config, shared, action, &all).await?)
    })?;
    let verb = match action {
        Action::Spam => "learned as spam",
        Action::Ham => "learned as ham",
        Action::Forget => "forgotten",
    };
    println!(
        "{} message(s) {verb}, {} unchanged; the site's log holds {} ({} spam, {} ham); site model: {} features, written to {}",
        summary.changed,
        summary.unchanged,
        summary.spam + summary.ham,
        summary.spam,
        summary.ham,
        summary.features,
        summary.written_to
    );
    Ok(())
}
