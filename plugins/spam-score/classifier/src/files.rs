//! Finding the messages under a folder: plain folders of `.eml` files and Maildirs alike, for
//! training (`sluice-spam`) and for `sluice spam learn`.

use std::path::{Path, PathBuf};

/// Every message file under `dir`, recursively, sorted. Skipped: names starting with `.` (a
/// Maildir++ subfolder such as `.Junk` is another folder, with its own judgement), a Maildir's
/// `tmp/` (messages still being written), and the corpus' `.tsv` and `.md` files.
pub fn message_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).map_err(|e| format!("cannot read {}: {e}", d.display()))?;
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if p.is_dir() {
                if name != "tmp" {
                    stack.push(p);
                }
            } else if !name.ends_with(".tsv") && !name.ends_with(".md") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maildirs_and_folders() {
        let d = tempfile_dir();
        for f in [
            "cur/1",
            "new/2",
            "tmp/3",
            ".Junk/cur/4",
            ".hidden",
            "a.eml",
            "MANIFEST.tsv",
            "README.md",
        ] {
            let p = d.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"x").unwrap();
        }
        let got: Vec<String> = message_files(&d)
            .unwrap()
            .iter()
            .map(|p| p.strip_prefix(&d).unwrap().display().to_string())
            .collect();
        assert_eq!(got, ["a.eml", "cur/1", "new/2"]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("sluice-spam-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
