//! `sluice queue …`: list, show, retry, hold, release and delete queued messages, and the
//! quarantine. What remote parties wrote is printed with control characters escaped.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;

use sluice::config::Config;

use crate::setup::load_config;

/// Prints queue entries. Addresses, reasons and remote replies came from clients, plugins and
/// other servers: control characters in them are shown escaped, never sent to the terminal.
fn print_entries(entries: &[sluice::delivery::admin::Entry], json: bool) -> anyhow::Result<()> {
    use sluice::inbound::message::printable;
    if json {
        println!("{}", serde_json::to_string_pretty(entries)?);
        return Ok(());
    }
    if entries.is_empty() {
        println!("empty");
    }
    for e in entries {
        let sender = if e.sender.is_empty() {
            "<>"
        } else {
            e.sender.as_str()
        };
        let mut flags = String::new();
        if e.held {
            flags.push_str(" HELD");
        }
        if let Some(q) = &e.quarantine {
            flags.push_str(&format!(" quarantined: {}", printable(q)));
        }
        println!(
            "{} {} {} bytes from {}{flags}",
            e.id,
            e.received_at,
            e.size,
            printable(sender)
        );
        if let Some(next) = &e.next_attempt {
            println!("    next attempt {next} (attempts so far: {})", e.attempts);
        }
        for (rcpt, status, reply) in &e.recipients {
            println!(
                "    {} {status:?}{}",
                printable(rcpt),
                reply
                    .as_ref()
                    .map(|r| format!(": {}", printable(&r.to_string())))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}

pub fn run(config: &Config, command: QueueCommand) -> anyhow::Result<ExitCode> {
    use sluice::delivery::admin;
    use sluice::spool::SpoolState;
    let spool = sluice::spool::Spool::attach(&config.server.data_dir.join("spool"))?;
    match command {
        QueueCommand::List { json } => {
            print_entries(&admin::list(&spool, SpoolState::Queue)?, json)?
        }
        QueueCommand::Show { id } => {
            let (entry, history, headers, _) = admin::show(&spool, SpoolState::Queue, &id)
                .or_else(|_| admin::show(&spool, SpoolState::Quarantine, &id))?;
            print_entries(std::slice::from_ref(&entry), false)?;
            println!("history:");
            for h in history {
                println!(
                    "    {}",
                    sluice::inbound::message::printable(&h.to_string())
                );
            }
            println!("headers:");
            for line in headers.lines() {
                println!("{}", sluice::inbound::message::printable(line));
            }
        }
        QueueCommand::Retry { id, all } => {
            let ids = match (id, all) {
                (Some(id), false) => vec![id],
                (None, true) => spool.list(SpoolState::Queue)?,
                _ => bail!("give a queue id or --all"),
            };
            for id in &ids {
                admin::retry(&spool, id)?;
            }
            println!("{} message(s) scheduled for delivery now", ids.len());
        }
        QueueCommand::Hold { id } => act(&spool, &id, admin::hold, "held")?,
        QueueCommand::Release { id } => act(&spool, &id, admin::release, "released")?,
        QueueCommand::Delete { id, bounce, .. } => {
            admin::delete(&spool, &id, bounce)?;
            println!(
                "{id}: {}",
                if bounce {
                    "deleted; the sender will get a bounce"
                } else {
                    "dropped"
                }
            );
        }
        QueueCommand::Quarantine { command } => match command {
            QuarantineCommand::List { json } => {
                print_entries(&admin::list(&spool, SpoolState::Quarantine)?, json)?
            }
            QuarantineCommand::Release { id } => act(
                &spool,
                &id,
                admin::quarantine_release,
                "released to the queue",
            )?,
            QuarantineCommand::Delete { id } => {
                act(&spool, &id, admin::quarantine_delete, "deleted")?
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

/// Inspect and steer the delivery queue (safe beside a running server).
#[derive(clap::Args)]
pub struct Queue {
    /// Configuration file (for the data directory).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: QueueCommand,
}

impl Queue {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let config = load_config(self.config.as_ref())?;
        run(&config, self.command)
    }
}

#[derive(clap::Subcommand)]
pub enum QueueCommand {
    /// List queued messages: id, age, sender, recipients with state and last reply, next attempt.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one message: envelope, delivery history and headers.
    Show {
        /// Queue id.
        id: String,
    },
    /// Attempt delivery now: one message, or all with --all.
    Retry {
        /// Queue id.
        id: Option<String>,
        /// Every queued message.
        #[arg(long)]
        all: bool,
    },
    /// Keep a message from being delivered until released.
    Hold {
        /// Queue id.
        id: String,
    },
    /// Release a held message for delivery now.
    Release {
        /// Queue id.
        id: String,
    },
    /// Delete a message: --bounce tells the sender, --drop does not. One is required.
    Delete {
        /// Queue id.
        id: String,
        /// Fail its pending recipients and send the sender a bounce.
        #[arg(long, conflicts_with = "drop", required_unless_present = "drop")]
        bounce: bool,
        /// Remove it silently.
        #[arg(long)]
        drop: bool,
    },
    /// The quarantine: list, release (deliver) or delete.
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
}

#[derive(clap::Subcommand)]
pub enum QuarantineCommand {
    /// List quarantined messages with the reason.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move a message to the queue for delivery.
    Release {
        /// Queue id.
        id: String,
    },
    /// Delete a message.
    Delete {
        /// Queue id.
        id: String,
    },
}

/// Does `op` to message `id` and says it is `done`.
fn act(
    spool: &sluice::spool::Spool,
    id: &str,
    op: fn(&sluice::spool::Spool, &str) -> Result<(), sluice::delivery::admin::AdminError>,
    done: &str,
) -> anyhow::Result<()> {
    op(spool, id)?;
    println!("{id}: {done}");
    Ok(())
}
