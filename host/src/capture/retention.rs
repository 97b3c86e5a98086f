//! The capture directory: one owner-only JSON file per kept transaction, named so that the
//! oldest sorts first (`STARTED_MS-ID.json`), trimmed to `max_records` and `max_mb` after each
//! write.

use std::path::{Path, PathBuf};

use crate::config::CaptureConfig;
use crate::pipeline::recording::Record;

/// A record file of the capture directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFile {
    /// Its path.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
}

/// The record files of `dir`, oldest first (none when it cannot be read).
pub fn list(dir: &Path) -> Vec<RecordFile> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<RecordFile> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".json") && !name.starts_with('.')
        })
        .filter_map(|e| {
            let meta = e.metadata().ok().filter(std::fs::Metadata::is_file)?;
            Some(RecordFile {
                path: e.path(),
                bytes: meta.len(),
            })
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

/// The file name of `record`: its start time (zero-padded, so names sort by age) and its id,
/// reduced to characters safe in a file name.
fn file_name(record: &Record) -> String {
    let id: String = record
        .id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    format!("{:015}-{id}.json", record.started_ms)
}

/// Writes `record` into `dir` (made owner-only if missing), then removes the oldest records
/// until `settings`' bounds hold.
pub(super) fn keep(dir: &Path, record: &Record, settings: &CaptureConfig) -> std::io::Result<()> {
    crate::private_files::create_private_dir(dir)?;
    // Records hold whole messages: a directory others may enter (one the operator made
    // before, or a shared one) is refused rather than written to.
    let mode = {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(dir)?.permissions().mode() & 0o777
    };
    if mode & 0o077 != 0 {
        return Err(std::io::Error::other(format!(
            "the directory is open to other users (mode {mode:03o}) and records hold mail: chmod 700 it"
        )));
    }
    let json = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    let path = dir.join(file_name(record));
    crate::private_files::write_private(&path, &json)?;
    tracing::debug!(id = %record.id, file = %path.display(), why = %record.why.join(","), "capture: record kept");
    trim(dir, settings.max_records, settings.max_mb << 20);
    Ok(())
}

/// Removes the oldest records of `dir` until at most `max_records` remain, together at most
/// `max_bytes`.
pub(super) fn trim(dir: &Path, max_records: u64, max_bytes: u64) {
    let files = list(dir);
    let mut count = files.len() as u64;
    let mut bytes: u64 = files.iter().map(|f| f.bytes).sum();
    for f in files {
        if count <= max_records && bytes <= max_bytes {
            break;
        }
        match std::fs::remove_file(&f.path) {
            Ok(()) => {
                count -= 1;
                bytes = bytes.saturating_sub(f.bytes);
            }
            Err(e) => {
                tracing::warn!(file = %f.path.display(), "capture: cannot remove an old record: {e}");
                break;
            }
        }
    }
}
