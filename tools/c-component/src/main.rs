//! The C plugin toolchain's two Rust steps, with the libraries the wit-bindgen and wasm-tools
//! CLIs are made of (built with the workspace, instead of `cargo install`ing the whole
//! wit-bindgen CLI, every language generator in it, into a target of its own):
//!
//! - `sluice-c-component bindgen WIT_DIR WORLD OUT_DIR`: writes the C bindings of `WORLD`
//!   (`plugin.h`, `plugin.c`, `plugin_component_type.o`), as `wit-bindgen c WIT_DIR --world
//!   WORLD --out-dir OUT_DIR` does, with its generator (`wit-bindgen-c`).
//! - `sluice-c-component CORE.wasm OUT.wasm`: makes a component of a C plugin's core module, as
//!   `wasm-tools component new CORE.wasm --adapt wasi_snapshot_preview1=ADAPTER -o OUT.wasm`
//!   does, with the same library (`wit-component`) and the WASI preview-1 reactor adapter from
//!   wasmtime's `wasi-preview1-component-adapter-provider` crate (the version of the host's
//!   wasmtime). A C toolchain (clang + wasi-libc) builds preview-1 modules; Sluice runs
//!   components. The component type (the WIT world) is embedded in the module by the object
//!   file the bindings include.

use std::path::Path;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [cmd, wit, world, out] if cmd == "bindgen" => {
            bindgen(Path::new(wit), world, Path::new(out))
        }
        [core, out] => componentize(core, out),
        _ => anyhow::bail!(
            "usage: sluice-c-component bindgen WIT_DIR WORLD OUT_DIR | sluice-c-component CORE.wasm OUT.wasm"
        ),
    }
}

fn bindgen(wit: &Path, world: &str, out: &Path) -> anyhow::Result<()> {
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve
        .push_path(wit)
        .with_context(|| format!("reading the WIT package in {}", wit.display()))?;
    let world = resolve.select_world(&[package], Some(world))?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&resolve, world, &mut files)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for (name, contents) in files.iter() {
        let path = out.join(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn componentize(core: &str, out: &str) -> anyhow::Result<()> {
    let module = std::fs::read(core).with_context(|| format!("reading {core}"))?;
    let component = wit_component::ComponentEncoder::default()
        .module(&module)
        .with_context(|| format!("{core}: not a module with an embedded component type (link the bindings' *_component_type.o)"))?
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
