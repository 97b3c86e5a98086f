//! Embeds the default model: the file named by `SLUICE_SPAM_MODEL` (scripts/build-plugins
//! trains it on the shared corpus), else an empty file — the plugin then scores with its
//! structural rules only and says so in its log.
//!
//! It also starts the plugin with 8 MiB of linear memory (the model, the stack and room to
//! score a message): a guest that grows its memory during a call makes the host change the
//! protection of the sandbox's pages on that call and the next, and on a busy server each
//! such change is a TLB shoot-down on every core. See the SDK's README.
fn main() {
    // A flag of the wasm linker only.
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg-cdylib=--initial-memory=8388608");
    }
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
