//! Test plugin for the `kv` and `dns` capabilities. At `check-message` it does what its
//! settings say and reports each result in a header:
//! - `write = "KEY=VALUE"`: `kv::set` (no expiry);
//! - `read = "KEY"`: `X-Probe-Read: VALUE` or `(none)`;
//! - `count = "KEY"`: `kv::increment` by 1, `X-Probe-Count: N`;
//! - `lookup = "NAME"`: `dns::a`, `X-Probe-A: ADDRESSES` or the error's kind;
//! - `ptr = "IP"`: `dns::ptr`, `X-Probe-Ptr: NAMES` or the error's kind;
//! - `gets = N`: N `kv::get` calls (to pass the per-call limit);
//! - `incrs = N`: N `kv::increment` calls on one key;
//! - `lookups = N`: N `dns::a` lookups of `lookup` (cached after the first);
//! - `lookup_fresh = "ZONE"`: one `dns::a` lookup of `TRANSACTION-ID.ZONE` (a new name per
//!   transaction, so never cached);
//! - `fill = N`: N `kv::set` calls of 64 KiB values under new keys (to pass a quota);
//! - `fresh_lookups = N` (with `lookup_fresh`): N more, of `I.TRANSACTION-ID.ZONE`;
//!   `X-Probe-Fresh: ANSWERED TEMPORARY` counts how they ended.
use sluice_plugin_sdk::Settings;
use sluice_plugin_sdk::dns::{self, LookupError};
use sluice_plugin_sdk::{
    Config, ConfigError, Envelope, Hook, Message, MessageVerdict, Plugin, Session, export, kv,
};

/// No per-transaction state.
#[derive(Default)]
struct Probe;

/// The settings.
struct ProbeSettings {
    write: Option<String>,
    read: Option<String>,
    count: Option<String>,
    lookup: Option<String>,
    ptr: Option<String>,
    gets: i64,
    incrs: i64,
    lookups: i64,
    lookup_fresh: Option<String>,
    fresh_lookups: i64,
    fill: i64,
}

fn outcome(r: Result<Vec<String>, LookupError>) -> String {
    match r {
        Ok(v) => v.join(","),
        Err(LookupError::Nxdomain) => "nxdomain".to_string(),
        Err(LookupError::NoRecords) => "no-records".to_string(),
        Err(LookupError::Temporary(_)) => "temporary".to_string(),
        Err(LookupError::Invalid(_)) => "invalid".to_string(),
    }
}

impl Settings for ProbeSettings {
    fn parse(config: &Config) -> Result<Self, ConfigError> {
        config.deny_unknown(&[
            "write",
            "read",
            "count",
            "lookup",
            "ptr",
            "gets",
            "incrs",
            "lookups",
            "lookup_fresh",
            "fresh_lookups",
            "fill",
        ])?;
        Ok(ProbeSettings {
            write: config.get("write")?,
            read: config.get("read")?,
            count: config.get("count")?,
            lookup: config.get("lookup")?,
            ptr: config.get("ptr")?,
            gets: config.get_or("gets", 0)?,
            incrs: config.get_or("incrs", 0)?,
            lookups: config.get_or("lookups", 0)?,
            lookup_fresh: config.get("lookup_fresh")?,
            fresh_lookups: config.get_or("fresh_lookups", 0)?,
            fill: config.get_or("fill", 0)?,
        })
    }
}

impl Plugin for Probe {
    const HOOKS: &'static [Hook] = &[Hook::CheckMessage];
    type Settings = ProbeSettings;

    fn check_message(
        &mut self,
        cfg: &ProbeSettings,
        s: &Session,
        _e: &Envelope,
        _m: &Message,
    ) -> MessageVerdict {
        let mut v = MessageVerdict::default();
        if let Some((key, value)) = cfg.write.as_deref().and_then(|w| w.split_once('=')) {
            kv::set(key, value, None);
        }
        if let Some(key) = &cfg.read {
            let value = kv::get_string(key).unwrap_or_else(|| "(none)".to_string());
            v = v.add_header("X-Probe-Read", &value);
        }
        if let Some(key) = &cfg.count {
            v = v.add_header("X-Probe-Count", &kv::increment(key, 1, None).to_string());
        }
        if let Some(name) = &cfg.lookup {
            let found = dns::a(name).map(|a| a.iter().map(ToString::to_string).collect());
            v = v.add_header("X-Probe-A", &outcome(found));
        }
        if let Some(ip) = &cfg.ptr {
            let found = match ip.parse() {
                Ok(ip) => dns::ptr(ip),
                Err(_) => Err(LookupError::Invalid(ip.clone())),
            };
            v = v.add_header("X-Probe-Ptr", &outcome(found));
        }
        let big = vec![b'x'; 64 * 1024];
        for i in 0..cfg.fill {
            kv::set(&format!("fill-{}-{i}", s.transaction_id), &big, None);
        }
        for i in 0..cfg.gets {
            kv::get(&format!("k{i}"));
        }
        for _ in 0..cfg.incrs {
            kv::increment("c", 1, None);
        }
        if let Some(name) = &cfg.lookup {
            for _ in 0..cfg.lookups {
                let _ = dns::a(name);
            }
        }
        if let Some(zone) = &cfg.lookup_fresh {
            let _ = dns::a(&format!("{}.{zone}", s.transaction_id));
            let (mut answered, mut temporary) = (0, 0);
            for i in 0..cfg.fresh_lookups {
                match dns::a(&format!("{i}.{}.{zone}", s.transaction_id)) {
                    Err(LookupError::Temporary(_)) => temporary += 1,
                    _ => answered += 1,
                }
            }
            if cfg.fresh_lookups > 0 {
                v = v.add_header("X-Probe-Fresh", &format!("{answered} {temporary}"));
            }
        }
        v
    }
}

export!(Probe);
