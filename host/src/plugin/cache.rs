//! Compiled plugin artefacts on disk, so a restart (or `sluice plugin check`) does not compile
//! again: Python and JavaScript components take seconds to compile.
//!
//! Layout: `<cache_dir>/<engine-key>/<component-sha256>.cwasm`, where the engine key hashes
//! wasmtime's precompile compatibility hash and version. Each file is the SHA-256 of the
//! artefact followed by the artefact; it is verified before use, so a torn or corrupted file
//! is recompiled rather than trusted. Files are written to a temporary name and renamed. One
//! compiler at a time per component (`<sha256>.lock`, flock): others wait and load its result.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Whether a component came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheOutcome {
    /// Loaded from the cache.
    Hit,
    /// Compiled now (and stored).
    Miss,
}

/// The compile cache of one engine.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    /// The cache for `engine` under `root`, created if missing.
    pub fn new(engine: &Engine, root: &Path) -> std::io::Result<CompileCache> {
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        env!("CARGO_PKG_VERSION").hash(&mut hasher);
        let dir = root.join(format!("wasmtime-48-{:016x}", hasher.finish()));
        std::fs::create_dir_all(&dir)?;
        Ok(CompileCache { dir })
    }

    /// True when a compiled artefact for the component whose SHA-256 is `sha256` (hex) is
    /// stored (it is still verified when loaded).
    pub fn contains(&self, sha256: &str) -> bool {
        self.dir.join(format!("{sha256}.cwasm")).is_file()
    }

    /// The directory holding this engine's artefacts.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The component for `wasm` (whose SHA-256 is `sha256`, hex), from the cache or compiled
    /// and stored. A cache that cannot be written is logged and otherwise ignored.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
        sha256: &str,
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let path = self.dir.join(format!("{sha256}.cwasm"));
        if let Some(component) = self.read(engine, &path) {
            return Ok((component, CacheOutcome::Hit));
        }
        // Another thread or process (a reload, `sluice plugin compile`, a second server on the
        // same cache) may be compiling the same component: wait for it and load its result,
        // rather than compile it twice at once.
        let _compiling = self.lock(sha256);
        if let Some(component) = self.read(engine, &path) {
            return Ok((component, CacheOutcome::Hit));
        }
        let component = Component::new(engine, wasm)?;
        if let Err(e) = self.write(&component, &path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot store compiled plugin in cache");
        }
        Ok((component, CacheOutcome::Miss))
    }

    /// An exclusive lock on compiling the component `sha256`, held until the file is dropped;
    /// none when the cache directory cannot hold the lock file (then nothing waits).
    fn lock(&self, sha256: &str) -> Option<std::fs::File> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(format!("{sha256}.lock")))
            .ok()?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).ok()?;
        Some(file)
    }

    fn read(&self, engine: &Engine, path: &Path) -> Option<Component> {
        let bytes = std::fs::read(path).ok()?;
        if bytes.len() < 32 || Sha256::digest(&bytes[32..]).as_slice() != &bytes[..32] {
            tracing::warn!(path = %path.display(), "cached plugin artefact is corrupt; recompiling");
            return None;
        }
        // SAFETY: `Component::deserialize` requires bytes produced by `Component::serialize` of a
        // compatible engine. The file lives in our own cache directory, under a directory keyed
        // by this engine's compatibility hash, and its checksum over the artefact was verified
        // just above, so these are exactly the bytes `write` serialized.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, &bytes[32..]) };
        match component {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cached plugin artefact unusable; recompiling");
                None
            }
        }
    }

    fn write(&self, component: &Component, path: &Path) -> anyhow::Result<()> {
        let artefact = component.serialize()?;
        let mut data = Vec::with_capacity(32 + artefact.len());
        data.extend_from_slice(&Sha256::digest(&artefact));
        data.extend_from_slice(&artefact);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, &data)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}
