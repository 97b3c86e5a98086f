//! Test plugin in the SDK's short form (`plugin!`): one hook, no settings, no `HOOKS` list —
//! the minimal Rust plugin of the authoring docs. Refuses recipients whose local part is
//! `noreply`.
use sluice_plugin_sdk::{Address, Envelope, Session, Verdict, plugin};

#[derive(Default)]
struct Guard;

plugin!(Guard {
    fn check_recipient(&mut self, _: &(), _s: &Session, _e: &Envelope, r: &Address) -> Verdict {
        if r.local_part() == "noreply" { return Verdict::reject(550, "5.1.1", "No mail here"); }
        Verdict::Continue
    }
});
