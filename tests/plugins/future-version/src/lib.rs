//! Test plugin built for `sluice:filter@9.0.0`, which this host does not support.
#![allow(unsafe_code)]
wit_bindgen::generate!({ world: "plugin", path: "wit" });

struct Future;

impl exports::sluice::filter::hooks::Guest for Future {
    fn describe() -> String {
        "from the future".to_string()
    }
}

export!(Future);
