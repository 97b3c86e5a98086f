//! A file's identity and version as Sluice's watchers compare them (the plugin directory's,
//! the TLS certificates'): its length, its modification time and its inode, read through a
//! symbolic link. A rename over the file changes the inode; a rewrite in place changes the
//! time or the length.

use std::path::Path;
use std::time::SystemTime;

/// What a file looked like when it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    /// Length in bytes.
    pub len: u64,
    /// Last modification.
    pub modified: Option<SystemTime>,
    /// Inode.
    pub inode: u64,
}

impl FileStamp {
    /// The stamp of the file at `path` (through a symbolic link); none when it cannot be read.
    pub fn of(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            len: m.len(),
            modified: m.modified().ok(),
            inode: m.ino(),
        })
    }
}
