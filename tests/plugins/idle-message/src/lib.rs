//! A plugin that does nothing at `check-message`. With `idle-recipient`, the load benchmark's
//! `sluice-floor`: the bundled chain's two sandboxes per transaction, with no work in them.
use sluice_plugin_sdk::{Envelope, Hook, Message, MessageVerdict, Plugin, Session, export};

#[derive(Default)]
struct Idle;

impl Plugin for Idle {
    const HOOKS: &'static [Hook] = &[Hook::CheckMessage];
    type Settings = ();

    fn check_message(
        &mut self,
        _: &(),
        _s: &Session,
        _e: &Envelope,
        _m: &Message,
    ) -> MessageVerdict {
        MessageVerdict::default()
    }
}

export!(Idle);
