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
use crate::{Config, Hook, Plugin, Settings, log};

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
    /// This sandbox's parsed settings and transaction state, a `(P::Settings, P)` built on the
    /// first hook call (one sandbox serves one transaction).
    static STATE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// Runs `f` on this sandbox's settings and state, parsing the settings first if needed.
/// `None` when the settings are refused (which `validate-config` already reported at load time).
fn with_plugin<P: Plugin, R>(f: impl FnOnce(&mut P, &P::Settings) -> R) -> Option<R> {
    STATE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|b| !b.is::<(P::Settings, P)>()) {
            match <P::Settings as Settings>::parse(&Config) {
                Ok(settings) => *slot = Some(Box::new((settings, P::default()))),
                Err(e) => {
                    log::error(&format!("configuration refused: {e}"));
                    return None;
                }
            }
        }
        let (settings, plugin) = slot.as_mut()?.downcast_mut::<(P::Settings, P)>()?;
        Some(f(plugin, settings))
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
        <P::Settings as Settings>::parse(&Config)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn verify_sender(session: Session, sender: Address) -> Verdict {
        with_plugin(|p: &mut P, s| p.verify_sender(s, &session, &sender))
            .unwrap_or_else(misconfigured)
    }

    fn check_recipient(session: Session, envelope: Envelope, recipient: Address) -> Verdict {
        with_plugin(|p: &mut P, s| p.check_recipient(s, &session, &envelope, &recipient))
            .unwrap_or_else(misconfigured)
    }

    fn check_message(session: Session, envelope: Envelope, message: Message) -> MessageVerdict {
        with_plugin(|p: &mut P, s| p.check_message(s, &session, &envelope, &message))
            .unwrap_or_else(|| MessageVerdict::from(misconfigured()))
    }

    fn on_delivery(report: DeliveryReport) {
        with_plugin(|p: &mut P, s| p.on_delivery(s, &report));
    }

    fn render_bounce(request: BounceRequest) -> Option<BounceText> {
        with_plugin(|p: &mut P, s| p.render_bounce(s, &request)).flatten()
    }
}
