//! Test plugin for the delivery hooks: logs each outcome and renders a bounce text.
use sluice_plugin_sdk::{
    BounceRequest, BounceText, DeliveryReport, DeliveryStatus, Hook, Plugin, export, log,
};

#[derive(Default)]
struct Notes;

impl Plugin for Notes {
    const HOOKS: &'static [Hook] = &[Hook::OnDelivery, Hook::RenderBounce];
    type Settings = ();

    fn on_delivery(&mut self, _: &(), report: &DeliveryReport) {
        let status = match report.status {
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Deferred => "deferred",
            DeliveryStatus::Failed => "failed",
        };
        log::info(&format!(
            "{} to {} {status}: {}",
            report.queue_id, report.recipient, report.reply
        ));
    }

    fn render_bounce(&mut self, _: &(), request: &BounceRequest) -> Option<BounceText> {
        let list: Vec<String> = request
            .failures
            .iter()
            .map(|f| format!("{}: {}", f.address, f.reply))
            .collect();
        Some(BounceText {
            subject: format!("Undeliverable: {} recipient(s)", request.failures.len()),
            text: format!(
                "Your message {} could not be delivered:\n{}\n",
                request.queue_id,
                list.join("\n")
            ),
            html: None,
        })
    }
}

export!(Notes);
