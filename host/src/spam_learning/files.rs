//! Files only Sluice's own account may write: the learning directories' ownership check,
//! atomic writes of the model and its log, and reads of the files mail users drop (never
//! through a link, never more than their cap).

use super::*;

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
pub(super) fn own_dir(dir: &Path) -> Result<(), LearnError> {
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
pub(super) fn random_name() -> String {
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
pub(super) fn write_new(tmp: &Path, target: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
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
pub(super) mod libc_flags {
    /// `O_NOFOLLOW`: a symbolic link in the last component is an error, never followed.
    pub const NOFOLLOW: i32 = rustix::fs::OFlags::NOFOLLOW.bits() as i32;
    /// `O_NONBLOCK`: opening a FIFO does not wait for a writer.
    pub const NONBLOCK: i32 = rustix::fs::OFlags::NONBLOCK.bits() as i32;
}

/// Reads a file that another account may have put in place: not through a symbolic link
/// (`O_NOFOLLOW`), only a regular file with one link (not a FIFO, a device or a hard link to
/// someone else's file), at most `cap` bytes.
pub(super) fn read_untrusted(
    path: &Path,
    cap: u64,
) -> Result<(Vec<u8>, std::fs::Metadata), String> {
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
