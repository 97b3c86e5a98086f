//! Test plugin that reads the host's parsed view of the message (WIT 0.1.3, `sluice::view`)
//! and reports it in header fields of `check-message`: the parts, the attachments, the links
//! with their registrable domains, the decoded summary, the readable text and the bounds hit.
use sluice_plugin_sdk::{Envelope, Message, MessageVerdict, Session, plugin, view};

#[derive(Default)]
struct Probe;

plugin!(Probe {
    fn check_message(&mut self, _: &(), _s: &Session, _e: &Envelope, m: &Message) -> MessageVerdict {
        let parts: Vec<String> = view::parts().iter().map(|p| format!("{}@{}", p.content_type, p.depth)).collect();
        let attachments: Vec<String> = view::attachments()
            .iter()
            .map(|a| {
                let whole = view::read_attachment(a);
                format!(
                    "{}|{}|{}|{}|{}",
                    a.name.clone().unwrap_or_default(),
                    a.sniffed_type.clone().unwrap_or_default(),
                    a.size,
                    &a.sha256[..12],
                    whole.len()
                )
            })
            .collect();
        let links: Vec<String> = view::links()
            .iter()
            .map(|l| format!("{}={}", l.host, l.registrable_domain.clone().unwrap_or_default()))
            .collect();
        let summary = view::summary();
        let from = summary.from.first().and_then(|m| m.name.clone()).unwrap_or_default();
        let text = view::body_text();
        let first_word = text.split_whitespace().next().unwrap_or("").to_string();
        let head = view::raw_slice(0, 8);
        let same_head = head[..] == m.raw[..m.raw.len().min(8)];
        MessageVerdict::default()
            .add_header("X-View-Parts", &parts.join(" "))
            .add_header("X-View-Attachments", &attachments.join(" "))
            .add_header("X-View-Links", &links.join(" "))
            .add_header("X-View-Subject", &summary.subject.unwrap_or_default())
            .add_header("X-View-From", &from)
            .add_header("X-View-Text", &first_word)
            .add_header(
                "X-View-Raw",
                &format!("{} {same_head}", view::raw_size() == m.raw.len() as u64),
            )
            .add_header("X-View-Limits", &view::limits_hit().join(","))
    }
});
