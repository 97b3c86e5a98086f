//! The host functions every plugin imports, each interface with its own context:
//! `sluice:filter/host` ([`HostCtx`]: the plugin's settings, its log lines, the clock) and
//! `sluice:filter/authentication` ([`AuthCtx`]: the transaction's sender-authentication
//! results). `kv` and `dns` are in [`super::capabilities`]; the store's data that holds these
//! contexts is [`super::state::StoreState`].

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::HasData;

use super::bindings::types::ConfigValue;
use super::bindings::v0_1::sluice::filter::{authentication, host, types};
use crate::sender_auth;

/// Longest log line kept from a plugin; longer ones are cut (and marked so).
pub const MAX_LOG_LINE: usize = 2048;

/// One line a plugin logged.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LogLine {
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: &'static str,
    /// The text (cut at [`MAX_LOG_LINE`] bytes).
    pub message: String,
}

/// The time `host.now` gives a plugin: the system's clock, or a capture's readings.
#[derive(Clone, Default)]
pub enum Clock {
    /// The system's clock.
    #[default]
    System,
    /// The system's clock, each reading recorded; or the readings of a recorded transaction
    /// played back ([`super::tape`]).
    Tap(super::tape::PluginTap),
}

impl Clock {
    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        let system = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0)
        };
        match self {
            Clock::System => system(),
            Clock::Tap(tap) => tap.now_ms(system),
        }
    }
}

/// An instance's `host` context.
pub struct HostCtx {
    /// The plugin's settings, flattened to dotted keys.
    pub(crate) config: Arc<BTreeMap<String, ConfigValue>>,
    /// Lines logged during the current call, collected by the caller.
    pub(crate) logs: Vec<LogLine>,
    /// Lines this instance may still log.
    pub(crate) log_budget: u32,
    /// Lines dropped for exceeding the budget.
    pub(crate) logs_dropped: u32,
    /// What `now` answers.
    pub(crate) clock: Clock,
}

/// The `host` (and `types`) interfaces' view type for the linker.
pub struct HostApi;

impl HasData for HostApi {
    type Data<'a> = &'a mut HostCtx;
}

impl types::Host for HostCtx {}

/// An instance's `authentication` context: the results the host found for the transaction,
/// when it verified it.
#[derive(Default)]
pub struct AuthCtx {
    pub(crate) results: Option<Arc<sender_auth::Results>>,
}

/// The `authentication` interface's view type for the linker.
pub struct AuthApi;

impl HasData for AuthApi {
    type Data<'a> = &'a mut AuthCtx;
}

impl authentication::Host for AuthCtx {
    fn results(&mut self) -> Option<authentication::AuthResults> {
        let r = self.results.as_deref()?;
        let spf = |c: &sender_auth::SpfCheck| authentication::SpfCheck {
            verdict: verdict(c.verdict),
            domain: c.domain.clone(),
        };
        Some(authentication::AuthResults {
            spf_helo: r.spf_helo.as_ref().map(spf),
            spf_mail_from: r.spf_mail_from.as_ref().map(spf),
            dkim: r
                .dkim
                .iter()
                .map(|d| authentication::DkimCheck {
                    verdict: verdict(d.verdict),
                    domain: d.domain.clone(),
                    selector: d.selector.clone(),
                    detail: d.detail.clone(),
                })
                .collect(),
            dmarc: r.dmarc.as_ref().map(|d| authentication::DmarcCheck {
                verdict: verdict(d.verdict),
                domain: d.domain.clone(),
                policy: d.policy.clone(),
            }),
            header: r.header.clone(),
        })
    }

    fn arc(&mut self) -> Option<authentication::ArcCheck> {
        let a = self.results.as_deref()?.arc.as_ref()?;
        Some(authentication::ArcCheck {
            verdict: verdict(a.verdict),
            sets: a.sets,
            domains: a.domains.clone(),
            detail: a.detail.clone(),
        })
    }
}

fn verdict(v: sender_auth::Status) -> authentication::Verdict {
    match v {
        sender_auth::Status::Pass => authentication::Verdict::Pass,
        sender_auth::Status::Fail => authentication::Verdict::Fail,
        sender_auth::Status::Softfail => authentication::Verdict::Softfail,
        sender_auth::Status::Neutral => authentication::Verdict::Neutral,
        sender_auth::Status::None => authentication::Verdict::None,
        sender_auth::Status::Temperror => authentication::Verdict::Temperror,
        sender_auth::Status::Permerror => authentication::Verdict::Permerror,
    }
}

impl host::Host for HostCtx {
    fn log(&mut self, level: host::Level, message: String) {
        if self.log_budget == 0 {
            self.logs_dropped = self.logs_dropped.saturating_add(1);
            return;
        }
        self.log_budget -= 1;
        let mut message: String = message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if message.len() > MAX_LOG_LINE {
            message = format!("{}…[cut]", super::truncate(&message, MAX_LOG_LINE));
        }
        let level = match level {
            host::Level::Trace => "trace",
            host::Level::Debug => "debug",
            host::Level::Info => "info",
            host::Level::Warn => "warn",
            host::Level::Error => "error",
        };
        self.logs.push(LogLine { level, message });
    }

    fn get_config(&mut self, key: String) -> Option<ConfigValue> {
        self.config.get(&key).cloned()
    }

    fn config_keys(&mut self) -> Vec<String> {
        self.config.keys().cloned().collect()
    }

    fn now(&mut self) -> u64 {
        self.clock.now_ms()
    }
}

/// Flattens a TOML table into the dotted keys and values plugins see.
pub fn flatten_config(table: &toml::Table) -> BTreeMap<String, ConfigValue> {
    let mut out = BTreeMap::new();
    flatten_into("", table, &mut out);
    out
}

fn flatten_into(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, ConfigValue>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let value = match v {
            toml::Value::String(s) => ConfigValue::Text(s.clone()),
            toml::Value::Integer(i) => ConfigValue::Integer(*i),
            toml::Value::Float(f) => ConfigValue::Float(*f),
            toml::Value::Boolean(b) => ConfigValue::Boolean(*b),
            toml::Value::Datetime(d) => ConfigValue::Text(d.to_string()),
            toml::Value::Array(items) => ConfigValue::TextList(
                items
                    .iter()
                    .map(|i| match i {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect(),
            ),
            toml::Value::Table(t) => {
                flatten_into(&key, t, out);
                continue;
            }
        };
        out.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_flattened_with_dotted_keys() {
        let t: toml::Table =
            toml::from_str("a = 1\nb = [\"x\", 2]\n[lists]\nallow = \"y\"\n").unwrap();
        let f = flatten_config(&t);
        assert_eq!(f["a"], ConfigValue::Integer(1));
        assert_eq!(f["b"], ConfigValue::TextList(vec!["x".into(), "2".into()]));
        assert_eq!(f["lists.allow"], ConfigValue::Text("y".into()));
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;
    use crate::plugin::tape::{PluginTap, Tape};

    #[test]
    fn plugins_read_the_clock_a_replay_gives_them() {
        let tape = Tape {
            clock: vec![1_700_000_000_123],
            ..Tape::default()
        };
        let mut ctx = HostCtx {
            config: Default::default(),
            logs: Vec::new(),
            log_budget: 0,
            logs_dropped: 0,
            clock: Clock::Tap(PluginTap::replay(tape, None)),
        };
        assert_eq!(host::Host::now(&mut ctx), 1_700_000_000_123);
        ctx.clock = Clock::System;
        assert!(host::Host::now(&mut ctx) > 1_700_000_000_123);
    }
}
