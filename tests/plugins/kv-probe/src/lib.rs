//! Test plugin for the `kv` and `dns` capabilities. At `check-message` it does what its
//! settings say and reports each result in a header:
//! - `write = "KEY=VALUE"`: `kv::set` (no expiry);
//! - `read = "KEY"`: `X-Probe-Read: VALUE` or `(none)`;
//! - `count = "KEY"`: `kv::increment` by 1, `X-Probe-Count: N`;
//! - `lookup = "NAME"`: `dns::a`, `X-Probe-A: ADDRESSES` or the error's kind;
//! - `ptr = "IP"`: `dns::ptr`, `X-Probe-Ptr: NAMES` or the error's kind;
//! - `gets = N`: N `kv::get` calls (to pass the per-call limit).
use sluice_plugin_sdk::dns::{self, LookupError};
use sluice_plugin_sdk::{
    Config, ConfigError, Envelope, Hook, Message, MessageVerdict, Plugin, Session, export, kv,
};

struct Probe {
    write: Option<String>,
    read: Option<String>,
    count: Option<String>,
    lookup: Option<String>,
    ptr: Option<String>,
    gets: i64,
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

impl Plugin for Probe {
    const HOOKS: &'static [Hook] = &[Hook::CheckMessage];

    fn new(config: &Config) -> Result<Self, ConfigError> {
        config.deny_unknown(&["write", "read", "count", "lookup", "ptr", "gets"])?;
        Ok(Probe {
            write: config.get("write")?,
            read: config.get("read")?,
            count: config.get("count")?,
            lookup: config.get("lookup")?,
            ptr: config.get("ptr")?,
            gets: config.get_or("gets", 0)?,
        })
    }

    fn check_message(&mut self, _s: &Session, _e: &Envelope, _m: &Message) -> MessageVerdict {
        let mut v = MessageVerdict::default();
        if let Some((key, value)) = self.write.as_deref().and_then(|w| w.split_once('=')) {
            kv::set(key, value, None);
        }
        if let Some(key) = &self.read {
            let value = kv::get_string(key).unwrap_or_else(|| "(none)".to_string());
            v = v.add_header("X-Probe-Read", &value);
        }
        if let Some(key) = &self.count {
            v = v.add_header("X-Probe-Count", &kv::increment(key, 1, None).to_string());
        }
        if let Some(name) = &self.lookup {
            let found = dns::a(name).map(|a| a.iter().map(ToString::to_string).collect());
            v = v.add_header("X-Probe-A", &outcome(found));
        }
        if let Some(ip) = &self.ptr {
            let found = match ip.parse() {
                Ok(ip) => dns::ptr(ip),
                Err(_) => Err(LookupError::Invalid(ip.clone())),
            };
            v = v.add_header("X-Probe-Ptr", &outcome(found));
        }
        for i in 0..self.gets {
            kv::get(&format!("k{i}"));
        }
        v
    }
}

export!(Probe);
