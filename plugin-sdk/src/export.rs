//! The glue between the generated component exports and the [`Plugin`] trait. Hidden from the
//! docs: the [`export!`](crate::export!) macro is its only user.

use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;

use crate::bindings::exports::sluice::filter::hooks::Guest;
use crate::bindings::sluice::filter::types::{
    Address, BounceRequest, BounceText, DeliveryReport, Envelope, Hooks, Message, MessageVerdict,
    PluginInfo, Session, Verdict,
};
use crate::{Config, Hook, Plugin, log};

/// The plugin's name and version, taken from its `Cargo.toml` by the export macro.
pub trait Identity {
    /// Crate name.
    const NAME: &'static str;
    /// Crate version.
    const VERSION: &'static str;
}

/// Implements the generated `Guest` trait for any [`Plugin`].
pub struct Adapter<P, I>(PhantomData<(P, I)>);

thread_local! {
    /// The plugin value of this instance (one instance serves one transaction), built on first use.
    static STATE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// Runs `f` on this instance's plugin, building it first if needed. `None` when the
/// configuration is refused (which `validate-config` already reported at load time).
fn with_plugin<P: Plugin, R>(f: impl FnOnce(&mut P) -> R) -> Option<R> {
    STATE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|b| !b.is::<P>()) {
            match P::new(&Config) {
                Ok(p) => *slot = Some(Box::new(p)),
                Err(e) => {
                    log::error(&format!("configuration refused: {e}"));
                    return None;
                }
            }
        }
        slot.as_mut().and_then(|b| b.downcast_mut::<P>()).map(f)
    })
}

fn misconfigured() -> Verdict {
    Verdict::tempfail(451, "4.3.0", "plugin configuration error")
}

impl<P: Plugin, I: Identity> Guest for Adapter<P, I> {
    fn describe() -> PluginInfo {
        let mut hooks = Hooks::empty();
        for hook in P::HOOKS {
            hooks |= match hook {
                Hook::VerifySender => Hooks::VERIFY_SENDER,
                Hook::CheckRecipient => Hooks::CHECK_RECIPIENT,
                Hook::CheckMessage => Hooks::CHECK_MESSAGE,
                Hook::OnDelivery => Hooks::ON_DELIVERY,
                Hook::RenderBounce => Hooks::RENDER_BOUNCE,
            };
        }
        PluginInfo {
            name: I::NAME.to_string(),
            version: I::VERSION.to_string(),
            hooks,
        }
    }

    fn validate_config() -> Result<(), String> {
        P::new(&Config).map(|_| ()).map_err(|e| e.to_string())
    }

    fn verify_sender(session: Session, sender: Address) -> Verdict {
        with_plugin(|p: &mut P| p.verify_sender(&session, &sender)).unwrap_or_else(misconfigured)
    }

    fn check_recipient(session: Session, envelope: Envelope, recipient: Address) -> Verdict {
        with_plugin(|p: &mut P| p.check_recipient(&session, &envelope, &recipient))
            .unwrap_or_else(misconfigured)
    }

    fn check_message(session: Session, envelope: Envelope, message: Message) -> MessageVerdict {
        with_plugin(|p: &mut P| p.check_message(&session, &envelope, &message))
            .unwrap_or_else(|| MessageVerdict::from(misconfigured()))
    }

    fn on_delivery(report: DeliveryReport) {
        with_plugin(|p: &mut P| p.on_delivery(&report));
    }

    fn render_bounce(request: BounceRequest) -> Option<BounceText> {
        with_plugin(|p: &mut P| p.render_bounce(&request)).flatten()
    }
}
