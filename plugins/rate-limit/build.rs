//! Starts the plugin with 4 MiB of linear memory, enough for a call without growing it (a
//! guest that grows its memory costs the host page-protection changes on that call and the
//! next; see the SDK's README).
fn main() {
    // A flag of the wasm linker only.
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg-cdylib=--initial-memory=4194304");
    }
}
