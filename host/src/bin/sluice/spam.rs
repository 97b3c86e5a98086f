//! `sluice spam learn|forget`: the command line of `sluice::spam_learning`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use sluice::config::Config;
pub use sluice::spam_learning::Action;
use sluice::spam_learning::learn;
use sluice::store::KvStore;
use sluice_spam::features::SCAN_BYTES;

use crate::setup::load_config;

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

/// The fleet's shared store, when the configuration names one (the embedded store belongs to
/// the server).
fn shared_store(config: &Config) -> anyhow::Result<Option<KvStore>> {
    Ok(match &config.store.url {
        Some(url) => Some(KvStore::Redis(
            sluice::store::redis::Redis::new(url, config.store.ca_file.as_deref())
                .map_err(|e| anyhow::anyhow!("store.url: {e}"))?,
        )),
        None => None,
    })
}

fn print_summary(verb: &str, summary: &sluice::spam_learning::Summary) {
    let mut extra = String::new();
    if summary.over_quota > 0 {
        extra += &format!(", {} over their user's daily quota", summary.over_quota);
    }
    if summary.dropped_oldest > 0 {
        extra += &format!(
            ", {} oldest forgotten to keep the log within its cap",
            summary.dropped_oldest
        );
    }
    println!(
        "{} message(s) {verb}, {} unchanged{extra}; the site's log holds {} ({} spam, {} ham); site model: {} features, written to {}",
        summary.changed,
        summary.unchanged,
        summary.spam + summary.ham,
        summary.spam,
        summary.ham,
        summary.features,
        summary.written_to
    );
}

/// `sluice spam submit`: hands one message over into the drop directory.
pub fn submit(drop: &Path, spam: bool, user: Option<&str>, path: &Path) -> anyhow::Result<()> {
    let message = messages(path)?
        .into_iter()
        .next()
        .with_context(|| format!("no message in {}", path.display()))?;
    let action = if spam { Action::Spam } else { Action::Ham };
    sluice::spam_learning::submit(drop, action, user, &message)?;
    Ok(())
}

/// `sluice spam collect`: learns what the drop directory holds, once.
pub fn collect(config: &Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let summary = rt.block_on(async {
        let shared = shared_store(config)?;
        anyhow::Ok(sluice::spam_learning::collect(config, shared).await?)
    })?;
    match summary {
        Some(s) => print_summary("learned from the drop directory", &s),
        None => println!("the drop directory holds nothing to learn"),
    }
    Ok(())
}

/// Runs `sluice spam learn|forget` on `paths`.
pub fn run(config: &Config, action: Action, paths: &[PathBuf]) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for p in paths {
        all.extend(messages(p)?);
    }
    if all.is_empty() {
        bail!("no messages found in {}", crate::setup::joined(paths));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let summary = rt.block_on(async {
        let shared = shared_store(config)?;
        anyhow::Ok(learn(config, shared, action, &all).await?)
    })?;
    let verb = match action {
        Action::Spam => "learned as spam",
        Action::Ham => "learned as ham",
        Action::Forget => "forgotten",
    };
    print_summary(verb, &summary);
    Ok(())
}

/// Teach the spam-score plugin the site's judgement (its users' Junk folders).
#[derive(clap::Args)]
pub struct Spam {
    /// Configuration file (for the plugin's settings and the data directory).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: SpamCommand,
}

#[derive(clap::Subcommand)]
pub enum SpamCommand {
    /// Learn messages as spam or as ham; the running plugin uses the new model for the next
    /// message. A message learned again with the other label is relabelled.
    Learn {
        /// The messages are spam.
        #[arg(long, conflicts_with = "ham", required_unless_present = "ham")]
        spam: bool,
        /// The messages are ham (not spam).
        #[arg(long)]
        ham: bool,
        /// Message files, folders or Maildirs; `-` reads one message from standard input.
        #[arg(required = true)]
        messages: Vec<PathBuf>,
    },
    /// Undo learning messages: the model becomes what it would be had they never been learned.
    Forget {
        /// Message files, folders or Maildirs; `-` reads one message from standard input.
        #[arg(required = true)]
        messages: Vec<PathBuf>,
    },
    /// Hand one message over for learning, as a mail user (Dovecot's IMAPSieve): it is
    /// written into the drop directory, which Sluice collects. Needs no configuration and no
    /// secret, only the right to create files in DROP.
    Submit {
        /// The message is spam.
        #[arg(long, conflicts_with = "ham", required_unless_present = "ham")]
        spam: bool,
        /// The message is ham (not spam).
        #[arg(long)]
        ham: bool,
        /// The IMAP user it comes from (each user's hand-overs count against a daily quota).
        #[arg(long)]
        user: Option<String>,
        /// The drop directory, e.g. /var/lib/sluice-spam/drop.
        #[arg(long)]
        drop: PathBuf,
        /// The message file, or `-` for standard input.
        message: PathBuf,
    },
    /// Learn what mail users handed over (`sluice submit`) now, once; `sluice serve` does it
    /// every 2 seconds by itself.
    Collect,
}

impl Spam {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            SpamCommand::Submit {
                spam,
                user,
                drop,
                message,
                ..
            } => submit(&drop, spam, user.as_deref(), &message)?,
            SpamCommand::Collect => collect(&load_config(self.config.as_ref())?)?,
            SpamCommand::Learn { spam, messages, .. } => {
                let action = if spam { Action::Spam } else { Action::Ham };
                run(&load_config(self.config.as_ref())?, action, &messages)?
            }
            SpamCommand::Forget { messages } => run(
                &load_config(self.config.as_ref())?,
                Action::Forget,
                &messages,
            )?,
        }
        Ok(ExitCode::SUCCESS)
    }
}
