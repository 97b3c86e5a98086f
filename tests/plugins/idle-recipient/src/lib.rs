//! A plugin that does nothing at `check-recipient`. With `idle-message`, the load benchmark's
//! `sluice-floor`: the bundled chain's two sandboxes per transaction, with no work in them.
use sluice_plugin_sdk::{Address, Envelope, Hook, Plugin, Session, Verdict, export};

#[derive(Default)]
struct Idle;

impl Plugin for Idle {
    const HOOKS: &'static [Hook] = &[Hook::CheckRecipient];
    type Settings = ();

    fn check_recipient(&mut self, _: &(), _s: &Session, _e: &Envelope, _a: &Address) -> Verdict {
        Verdict::Continue
    }
}

export!(Idle);
