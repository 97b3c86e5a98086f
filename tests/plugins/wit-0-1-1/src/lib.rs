//! Test plugin built against `sluice:filter@0.1.1` (that WIT, kept in `wit/`), without the SDK:
//! shows that a newer host still loads and calls it, `authentication` import included. Its
//! `check-message` adds `X-Wit-0-1-1: dmarc=VERDICT` with the DMARC verdict it read.
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
            name: "wit-0-1-1".to_string(),
            version: "0.1.1".to_string(),
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
                name: "X-Wit-0-1-1".to_string(),
                value: match sluice::filter::authentication::results().and_then(|r| r.dmarc) {
                    Some(d) => {
                        // The Debug form is `Verdict::None`: keep the variant's name.
                        let name = format!("{:?}", d.verdict);
                        format!("dmarc={}", name.rsplit("::").next().unwrap_or("")).to_lowercase()
                    }
                    None => "dmarc=unknown".to_string(),
                },
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
