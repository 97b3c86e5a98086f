//! Test plugin built against `sluice:filter@0.1.0` (the WIT as first shipped, kept in `wit/`),
//! without the SDK: shows that a host of 0.1.1 still loads and calls it. Its `check-message`
//! adds `X-Wit-Version: 0.1.0`.
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
            name: "wit-0-1-0".to_string(),
            version: "0.1.0".to_string(),
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

    fn check_message(_session: Session, _envelope: Envelope, _message: Message) -> MessageVerdict {
        MessageVerdict {
            verdict: Verdict::Continue,
            add_headers: vec![Header {
                name: "X-Wit-Version".to_string(),
                value: "0.1.0".to_string(),
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
