//! The hand-over: `sluice spam submit` writes a mail user's message into the drop directory,
//! and Sluice takes the drops back out, checked, for learning.

use super::*;

/// Checks a user name a drop file carries: printable, no spaces, at most [`MAX_USER`] bytes.
pub(super) fn valid_user(user: &str) -> bool {
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
pub(super) struct Dropped {
    pub(super) spam: bool,
    /// Who handed it over: the IMAP user it names, else the file's owner.
    pub(super) user: String,
    pub(super) message: Vec<u8>,
}

/// Parses a drop file.
pub(super) fn parse_drop(bytes: &[u8], uid: u32) -> Result<Dropped, String> {
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
pub(super) fn has_drops(dir: &Path) -> Result<bool, LearnError> {
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
pub(super) fn take_drops(dir: &Path, batch: usize) -> Result<Vec<Dropped>, LearnError> {
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
