//! Finding the plugins of a plugin directory, and their order.
//!
//! A plugin's name is its file name without a leading numeric prefix and `.wasm`
//! (`10-spam-score.wasm` is `spam-score`). Plugins run in the order of `plugins.order` in the
//! configuration, then the rest by numeric prefix, then by name. Files that are not `*.wasm`,
//! and names starting with `.` (temporary files of a "write then rename" install), are ignored.

use crate::file_stamp::FileStamp;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A plugin file found in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginFile {
    /// The plugin's name.
    pub name: String,
    /// The numeric prefix, if the file name has one.
    pub prefix: Option<u32>,
    /// The file.
    pub path: PathBuf,
}

/// The plugin name and numeric prefix a file name stands for, or `None` when it is not a
/// plugin file.
pub fn parse_file_name(file_name: &str) -> Option<(String, Option<u32>)> {
    if file_name.starts_with('.') {
        return None;
    }
    let stem = file_name.strip_suffix(".wasm")?;
    let (prefix, name) = match stem.split_once('-') {
        Some((digits, rest))
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) =>
        {
            (digits.parse::<u32>().ok(), rest)
        }
        _ => (None, stem),
    };
    crate::config::valid_plugin_name(name).then(|| (name.to_string(), prefix))
}

/// Lists the plugin files of `dir` in run order. Two files with the same plugin name are an
/// error, since the configuration could not tell them apart.
pub fn scan(dir: &Path, order: &[String]) -> std::io::Result<Vec<PluginFile>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        if !entry.file_type()?.is_file() && !entry.path().is_file() {
            continue;
        }
        if let Some((name, prefix)) = parse_file_name(file_name) {
            files.push(PluginFile {
                name,
                prefix,
                path: entry.path(),
            });
        }
    }
    sort(&mut files, order);
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = files.iter().find(|f| !seen.insert(f.name.as_str())) {
        let paths: Vec<String> = files
            .iter()
            .filter(|f| f.name == dup.name)
            .map(|f| f.path.display().to_string())
            .collect();
        return Err(std::io::Error::other(format!(
            "two files in {} are both plugin {:?}: {}",
            dir.display(),
            dup.name,
            paths.join(" and ")
        )));
    }
    Ok(files)
}

/// Sorts by explicit order, then numeric prefix (files without one last), then name.
pub fn sort(files: &mut [PluginFile], order: &[String]) {
    files.sort_by_key(|f| {
        (
            order
                .iter()
                .position(|o| *o == f.name)
                .unwrap_or(usize::MAX),
            f.prefix.unwrap_or(u32::MAX),
            f.name.clone(),
        )
    });
}

/// A file's identity and version, as far as the directory watcher cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    /// The plugin file's (a rename over the file changes its inode).
    pub file: FileStamp,
    /// The same of its signature file (`NAME.wasm.sig`), if any: signing a refused file, or
    /// replacing its signature, is a change too.
    pub signature: Option<FileStamp>,
    /// The same of its shadow (`NAME.shadow.wasm`), if any: adding, replacing or removing
    /// the shadow reloads the plugin.
    pub shadow: Option<FileStamp>,
}

pub fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let shadow = path
        .file_name()
        .and_then(|f| f.to_str())
        .and_then(parse_file_name)
        .and_then(|(name, _)| FileStamp::of(&shadow_path(path, &name)));
    Some(Fingerprint {
        file: FileStamp::of(path)?,
        signature: FileStamp::of(&sig_path(path)),
        shadow,
    })
}

/// What the directory watcher ([`crate::server::reload`]) knows about the files behind the plugins in
/// service.
#[derive(Debug, Default)]
pub struct DirState {
    /// Plugin name → the file and version in service.
    pub loaded: HashMap<String, (PathBuf, Fingerprint)>,
    /// Files refused, with the version refused (not retried until it changes).
    pub refused: HashMap<PathBuf, Fingerprint>,
}

impl DirState {
    /// The state for `plugins` in service, nothing refused.
    pub fn from_plugins(plugins: &[std::sync::Arc<super::LoadedPlugin>]) -> DirState {
        let loaded = plugins
            .iter()
            .filter_map(|pl| Some((pl.name.clone(), (pl.file.clone(), pl.fingerprint?))))
            .collect();
        DirState {
            loaded,
            refused: HashMap::new(),
        }
    }
}

/// The shadow file of plugin `name` whose live file is `live`: `NAME.shadow.wasm` in the same
/// directory.
pub fn shadow_path(live: &Path, name: &str) -> PathBuf {
    live.with_file_name(format!("{name}.shadow.wasm"))
}

/// `path` with `suffix` appended to its file name (`x.wasm` → `x.wasm.previous`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// The signature file beside `file`: `NAME.wasm.sig`.
pub fn sig_path(file: &Path) -> PathBuf {
    with_suffix(file, ".sig")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_prefixes() {
        assert_eq!(
            parse_file_name("10-spam-score.wasm"),
            Some(("spam-score".into(), Some(10)))
        );
        assert_eq!(
            parse_file_name("tagger.wasm"),
            Some(("tagger".into(), None))
        );
        assert_eq!(parse_file_name(".10-x.wasm.tmp"), None);
        assert_eq!(parse_file_name(".x.wasm"), None);
        assert_eq!(parse_file_name("x.wasm.part"), None);
        assert_eq!(parse_file_name("bad name.wasm"), None);
    }

    #[test]
    fn two_files_for_one_plugin_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("10-a.wasm"), b"").unwrap();
        std::fs::write(dir.path().join("20-a.wasm"), b"").unwrap();
        let e = scan(dir.path(), &[]).unwrap_err().to_string();
        assert!(e.contains("are both plugin \"a\""), "{e}");
    }

    #[test]
    fn explicit_order_then_prefix_then_name() {
        let f = |name: &str, prefix| PluginFile {
            name: name.into(),
            prefix,
            path: PathBuf::new(),
        };
        let mut files = vec![
            f("z", None),
            f("b", Some(20)),
            f("a", Some(30)),
            f("c", Some(20)),
        ];
        sort(&mut files, &["a".to_string()]);
        let names: Vec<_> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "z"]);
    }
}
