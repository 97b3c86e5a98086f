//! `sluice-c-component CORE.wasm OUT.wasm`: makes a component of a C plugin's core module, as
//! `wasm-tools component new CORE.wasm --adapt wasi_snapshot_preview1=ADAPTER -o OUT.wasm`
//! does, with the same library (`wit-component`) and the WASI preview-1 reactor adapter from
//! wasmtime's `wasi-preview1-component-adapter-provider` crate (the version of the host's
//! wasmtime). A C toolchain (clang + wasi-libc) builds preview-1 modules; Sluice runs
//! components. The component type (the WIT world) is embedded in the module by the object
//! file wit-bindgen's C generator writes.

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [core, out] = args.as_slice() else {
        anyhow::bail!("usage: sluice-c-component CORE.wasm OUT.wasm");
    };
    let module = std::fs::read(core).with_context(|| format!("reading {core}"))?;
    let component = wit_component::ComponentEncoder::default()
        .module(&module)
        .with_context(|| format!("{core}: not a module with an embedded component type (link wit-bindgen's *_component_type.o)"))?
        .adapter(
            "wasi_snapshot_preview1",
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )?
        .validate(true)
        .encode()
        .with_context(|| format!("{core}: cannot make a component of it"))?;
    let tmp = format!("{out}.tmp");
    std::fs::write(&tmp, component).with_context(|| format!("writing {tmp}"))?;
    std::fs::rename(&tmp, out).with_context(|| format!("writing {out}"))?;
    Ok(())
}
