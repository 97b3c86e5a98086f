//! Files only Sluice may read: secrets are written owner-only through a unique temporary file,
//! and the data directory and compile cache must not be writable by other users (a compiled
//! artefact there is executed as code; a spool file there is mail we vouched for).
//!
//! `sluice` also sets its umask to 077 at start, so everything else it creates (spool,
//! Maildir, cache, state) is owner-only too.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

/// Makes everything this process creates from now on owner-only (0600 files, 0700 dirs).
pub fn restrict_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Creates `dir` (and its parents) if needed, owner-only.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Writes `data` to `path` readable by the owner only: into a new, uniquely named 0600 file in
/// the same directory, synced, then renamed over `path`. A reader never sees a half-written
/// file, and two writers never share a temporary file.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    // tempfile creates its files 0600 with O_EXCL under a random name.
    let mut tmp = tempfile::Builder::new()
        .prefix(".sluice-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Refuses a directory that other users may write to (or whose files they could replace).
/// `what` names it in the message, e.g. "server.data_dir".
pub fn check_not_shared(path: &Path, what: &str) -> Result<(), String> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{what}: {}: {e}", path.display())),
    };
    let mode = meta.permissions().mode();
    if mode & 0o002 != 0 {
        return Err(format!(
            "{what}: {} is writable by every user (mode {:o}); Sluice keeps mail, keys and compiled plugins there: chmod o-w it (700 is best)",
            path.display(),
            mode & 0o7777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_owner_only_and_replace_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn world_writable_directories_are_refused_with_the_key_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_not_shared(dir.path(), "server.data_dir").unwrap_err();
        assert!(
            e.starts_with("server.data_dir: ") && e.contains("chmod o-w"),
            "{e}"
        );
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
        assert!(check_not_shared(dir.path(), "server.data_dir").is_ok());
        assert!(check_not_shared(&dir.path().join("absent"), "x").is_ok());
    }
}
