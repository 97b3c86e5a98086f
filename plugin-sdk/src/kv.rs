//! State kept between transactions: the `sluice:filter/kv` capability (WIT 0.1.2).
//!
//! The operator must grant it: `capabilities = ["kv"]` in the plugin's `[plugin.NAME]`
//! section (Sluice refuses to load a plugin calling these functions otherwise). Keys are the
//! plugin's own — Sluice namespaces them — and are shared by every Sluice node using the same
//! Redis. Keys have 1 to 256 bytes, values at most 64 KiB, and a hook may make at most
//! `kv_ops_per_call` (64 by default) calls.
//!
//! A call never returns a store error: when the store is unreachable the hook call ends and
//! the operator's `on_failure` policy applies (tempfail by default), so the client retries.
//!
//! A time-to-live of `None` means the longest the operator allows (`kv_max_ttl_secs`, 90 days
//! by default): every key expires. Each plugin also has a quota of keys and bytes.
//!
//! ```ignore
//! use std::time::Duration;
//! use sluice_plugin_sdk::kv;
//! // Count this client's messages in a fixed one-hour window.
//! let n = kv::increment(&format!("count:{ip}"), 1, Some(Duration::from_secs(3600)));
//! ```
//!
//! In native tests ([`crate::testing`]) the store is a map per thread, expiring by
//! [`crate::now_ms`] (which [`crate::testing::set_now`] can fix).

use std::time::Duration;

fn secs(ttl: Option<Duration>) -> u32 {
    match ttl {
        None => 0,
        // Round up: a TTL under a second still expires, never "never".
        Some(d) => u32::try_from(d.as_secs() + u64::from(d.subsec_nanos() > 0))
            .unwrap_or(u32::MAX)
            .max(1),
    }
}

#[cfg(target_family = "wasm")]
mod imp {
    pub use crate::bindings::sluice::filter::kv::{compare_and_set, delete, get, increment, set};
}

#[cfg(not(target_family = "wasm"))]
mod imp {
    pub use crate::testing::native::kv::{compare_and_set, delete, get, increment, set};
}

/// The value of `key`, or `None` when it is not set (or has expired).
pub fn get(key: &str) -> Option<Vec<u8>> {
    imp::get(key)
}

/// The value of `key` as text (`None` also when it is not UTF-8).
pub fn get_string(key: &str) -> Option<String> {
    get(key).and_then(|v| String::from_utf8(v).ok())
}

/// The counter `key` without changing it: 0 when it is not set (or holds no number). Reading a
/// counter with `increment(key, 0, …)` works too, but writes.
pub fn counter(key: &str) -> i64 {
    get_string(key)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Sets `key` to `value`, expiring after `ttl` (`None`: the longest allowed).
pub fn set(key: &str, value: impl AsRef<[u8]>, ttl: Option<Duration>) {
    imp::set(key, value.as_ref(), secs(ttl))
}

/// Adds `delta` to the counter `key` atomically (across nodes too) and returns the new value.
/// A missing key counts as 0 and is created with `ttl`; an existing key keeps its expiry, so a
/// counter with a time-to-live counts in a fixed window. [`get_string`] reads it as decimal
/// text. Incrementing a key holding anything else ends the hook call as a plugin failure.
pub fn increment(key: &str, delta: i64, ttl: Option<Duration>) -> i64 {
    imp::increment(key, delta, secs(ttl))
}

/// Removes `key`; true when it was set.
pub fn delete(key: &str) -> bool {
    imp::delete(key)
}

/// Sets `key` to `value` only when its current value is `expected` (`None`: only when it is
/// not set), atomically; true when it was set.
pub fn compare_and_set(
    key: &str,
    expected: Option<&[u8]>,
    value: impl AsRef<[u8]>,
    ttl: Option<Duration>,
) -> bool {
    imp::compare_and_set(key, expected, value.as_ref(), secs(ttl))
}

/// Creates `key` with `value` unless it exists: true when this call created it. Of two
/// transactions (or nodes) racing to create one key, exactly one wins.
pub fn create(key: &str, value: impl AsRef<[u8]>, ttl: Option<Duration>) -> bool {
    compare_and_set(key, None, value, ttl)
}

/// A key made of `parts` joined by `:`. When that would pass the 256-byte limit, the end is
/// replaced by a hash of the whole (FNV-1a, 64 bits), so long addresses still make distinct
/// keys of legal length.
pub fn key(parts: &[&str]) -> String {
    let joined = parts.join(":");
    if joined.len() <= 256 {
        return joined;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in joined.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let mut cut = 256 - 17;
    while !joined.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}#{hash:016x}", &joined[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_keys_are_hashed_to_a_legal_length() {
        assert_eq!(key(&["t", "192.0.2.0/24", "a@b"]), "t:192.0.2.0/24:a@b");
        let long = "x".repeat(300);
        let k1 = key(&["t", &long, "a"]);
        let k2 = key(&["t", &long, "b"]);
        assert!(k1.len() <= 256 && k2.len() <= 256);
        assert_ne!(k1, k2);
        let accented = "é".repeat(200);
        assert!(key(&[&accented]).len() <= 256);
    }

    #[test]
    fn ttls_round_up_to_whole_seconds() {
        assert_eq!(secs(None), 0);
        assert_eq!(secs(Some(Duration::from_millis(1))), 1);
        assert_eq!(secs(Some(Duration::from_millis(1500))), 2);
        assert_eq!(secs(Some(Duration::from_secs(300))), 300);
        assert_eq!(secs(Some(Duration::ZERO)), 1);
    }
}
