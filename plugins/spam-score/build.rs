//! Embeds the default model: the file named by `SLUICE_SPAM_MODEL` (scripts/build-plugins
//! trains it on the shared corpus), else an empty file — the plugin then scores with its
//! structural rules only and says so in its log.
fn main() {
    println!("cargo:rerun-if-env-changed=SLUICE_SPAM_MODEL");
    let out =
        std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("model.bin");
    let bytes = match std::env::var("SLUICE_SPAM_MODEL") {
        Ok(path) if !path.is_empty() => {
            println!("cargo:rerun-if-changed={path}");
            std::fs::read(&path).unwrap_or_else(|e| panic!("SLUICE_SPAM_MODEL={path}: {e}"))
        }
        _ => Vec::new(),
    };
    std::fs::write(&out, bytes).expect("write model.bin");
}
