//! Test plugin built against `sluice:filter@0.1.3` (that WIT, kept in `wit/`), without the SDK:
//! shows that a newer host still loads and calls it. Its `check-message` adds
//! `X-Wit-0-1-3: raw=N` with the size of the message it was given.
#![allow(unsafe_code)]
wit_bindgen::generate!({ world: "plugin", path: "wit" });

use exports::sluice::filter::hooks::Guest;
use sluice::filter::types::{
    Address, BounceRequest, BounceText, DeliveryReport, Envelope, Header, Hooks, Message,
    MessageVerdict, PluginInfo, Session, Verdict,
};

struct Old;

impl Guest for Old {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "wit-0-1-3".to_string(),
            version: "0.1.3".to_string(),
            hooks: Hooks::CHECK_MESSAGE,
        }
    }

    fn validate_config() -> Result<(), String> {
        Ok(())
    }

    fn verify_sender(_session: Session, _sender: Address) -> Verdict {
        Verdict::Continue
    }

    fn check_recipient(_session: Session, _envelope: Envelope, _recipient: Address) -> Verdict {
        Verdict::Continue
    }

    fn check_message(_session: Session, _envelope: Envelope, message: Message) -> MessageVerdict {
        MessageVerdict {
            verdict: Verdict::Continue,
            add_headers: vec![Header {
                name: "X-Wit-0-1-3".to_string(),
                value: format!("raw={}", message.raw.len()),
            }],
            remove_headers: Vec::new(),
            symbols: Vec::new(),
        }
    }

    fn on_delivery(_report: DeliveryReport) {}

    fn render_bounce(_request: BounceRequest) -> Option<BounceText> {
        None
    }
}

export!(Old);
