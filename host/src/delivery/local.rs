//! Local delivery into a Maildir tree: `<root>/<user>/{tmp,new,cur}`, one mailbox per local
//! part (lower-cased, `+tag` removed). The queue runner uses it for the `maildir` route, which
//! is also what the local domains get by default.

use std::path::{Path, PathBuf};

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

/// The Maildir++ folder `name` of the Maildir `mailbox` (`<mailbox>/.<name>`, as Dovecot and
/// Courier read it), created with its `maildirfolder` marker if needed. `name` is checked
/// at start-up (`delivery.junk_folder`): no `/`, no leading `.`.
pub fn folder(mailbox: &Path, name: &str) -> std::io::Result<PathBuf> {
    let dir = mailbox.join(format!(".{name}"));
    std::fs::create_dir_all(&dir)?;
    let marker = dir.join("maildirfolder");
    if !marker.exists() {
        std::fs::File::create(marker)?;
    }
    Ok(dir)
}

/// Writes `message` into the Maildir `dir` (created if needed) by the Maildir protocol:
/// `tmp/`, sync, rename into `new/`, sync the directory. Returns the new file.
pub fn write_maildir(
    dir: &Path,
    id: &str,
    hostname: &str,
    message: &[u8],
) -> std::io::Result<PathBuf> {
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
        for (local, folder) in [
            ("Bob+lists", "bob"),
            ("../../etc", "_.._.._etc"),
            (".hidden", "_.hidden"),
            ("\"odd name\"", "_odd_name_"),
        ] {
            assert_eq!(mailbox_name(local), folder, "{local:?}");
        }
    }
}
