//! A plugin that does nothing at `check-recipient`. With `idle-message`, the load benchmark's
//! `sluice-floor`: the bundled chain's two sandboxes per transaction, with no work in them.
use sluice_plugin_sdk::{
    Address, Config, ConfigError, Envelope, Hook, Plugin, Session, Verdict, export,
};

struct Idle;

impl Plugin for Idle {
    const HOOKS: &'static [Hook] = &[Hook::CheckRecipient];

    fn new(_config: &Config) -> Result<Self, ConfigError> {
        Ok(Idle)
    }

    fn check_recipient(&mut self, _s: &Session, _e: &Envelope, _a: &Address) -> Verdict {
        Verdict::Continue
    }
}

export!(Idle);
