//! A plugin whose initialisation never ends: a static constructor (run when the component is
//! instantiated, before any hook) that loops. Instantiation must be held to the plugin's
//! deadline like a hook call.
#![allow(unsafe_code)] // a constructor in `.init_array` is the only way to run code at start.

use sluice_plugin_sdk::{Hook, Plugin, export};

// Only in the wasm build: a native build of this crate (the workspace's `cargo test`) would run
// the constructor before its own test harness, and hang.
#[cfg(target_arch = "wasm32")]
extern "C" fn spin_forever() {
    let mut x: u64 = 1;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

#[cfg(target_arch = "wasm32")]
#[used]
#[unsafe(link_section = ".init_array")]
static START: extern "C" fn() = spin_forever;

#[derive(Default)]
struct SlowStart;

impl Plugin for SlowStart {
    const HOOKS: &'static [Hook] = &[Hook::CheckMessage];
    type Settings = ();
}

export!(SlowStart);
