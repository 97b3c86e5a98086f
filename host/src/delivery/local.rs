//! Local delivery into a Maildir tree: `<root>/<user>/{tmp,new,cur}`, one mailbox per local
//! part (lower-cased, `+tag` removed). A message is written to `tmp/`, synced, and renamed into
//! `new/` (the Maildir protocol), then removed from the spool. Messages with any recipient
//! outside the local domains stay in the queue for the delivery routes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::session::address;
use crate::spool::{Spool, SpoolState};

/// How often the queue is scanned even without a wake-up.
const RESCAN: Duration = Duration::from_secs(5);

/// Runs local delivery until the task is dropped.
pub async fn run(
    spool: Spool,
    root: PathBuf,
    local_domains: Vec<String>,
    hostname: String,
    wakeup: Arc<Notify>,
) {
    loop {
        let spool2 = spool.clone();
        let root2 = root.clone();
        let domains = local_domains.clone();
        let host = hostname.clone();
        let _ =
            tokio::task::spawn_blocking(move || deliver_queue(&spool2, &root2, &domains, &host))
                .await;
        let _ = tokio::time::timeout(RESCAN, wakeup.notified()).await;
    }
}

/// The mailbox directory name for a local part: lower-cased, `+tag` removed, and only
/// `[a-z0-9._-]` kept (anything else becomes `_`), so no address can name a path outside
/// the Maildir root.
pub fn mailbox_name(local: &str) -> String {
    let base = local.split('+').next().unwrap_or(local).to_lowercase();
    let name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with('.') {
        format!("_{name}")
    } else {
        name
    }
}

fn deliver_queue(spool: &Spool, root: &Path, local_domains: &[String], hostname: &str) {
    let Ok(ids) = spool.list(SpoolState::Queue) else {
        return;
    };
    for id in ids {
        let (envelope, message) = match spool.read(SpoolState::Queue, &id) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(id = %id, error = %e, "cannot read spooled message");
                continue;
            }
        };
        let all_local = envelope
            .recipients
            .iter()
            .all(|r| address::is_local_domain(address::split(&r.address).1, local_domains));
        if !all_local {
            continue;
        }
        let mut ok = true;
        for r in &envelope.recipients {
            let mailbox = mailbox_name(address::split(&r.address).0);
            match write_maildir(&root.join(&mailbox), &id, hostname, &message) {
                Ok(path) => {
                    tracing::info!(id = %id, to = %r.address, path = %path.display(), "delivered to maildir")
                }
                Err(e) => {
                    ok = false;
                    tracing::warn!(id = %id, to = %r.address, error = %e, "maildir delivery failed; will retry");
                }
            }
        }
        // A partial failure retries every recipient: at-least-once, never lost.
        if ok && let Err(e) = spool.remove(SpoolState::Queue, &id) {
            tracing::warn!(id = %id, error = %e, "cannot remove delivered message from the spool");
        }
    }
}

fn write_maildir(dir: &Path, id: &str, hostname: &str, message: &[u8]) -> std::io::Result<PathBuf> {
    use std::io::Write;
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    let name = format!("{micros}.{id}.{}", hostname.replace(['/', ':'], "_"));
    let tmp = dir.join("tmp").join(&name);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(message)?;
    f.sync_all()?;
    let new = dir.join("new").join(&name);
    std::fs::rename(&tmp, &new)?;
    std::fs::File::open(dir.join("new"))?.sync_all()?;
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_names_cannot_escape() {
        assert_eq!(mailbox_name("Bob+lists"), "bob");
        assert_eq!(mailbox_name("../../etc"), "_.._.._etc");
        assert_eq!(mailbox_name(".hidden"), "_.hidden");
        assert_eq!(mailbox_name("\"odd name\""), "_odd_name_");
    }
}
