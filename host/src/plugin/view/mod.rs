//! The `message-view` interface (WIT 0.1.3): the message of `check-message`, parsed once by
//! the host and shared by every plugin of the transaction ([`MessageView`]). The parse is
//! pure ([`parsed`], with [`links`]); this module copies from it into the WIT types.
//!
//! It may use: mail-parser, linkify and the Public Suffix List (through `parsed` and
//! `links`), and the plugin bindings. Nothing here does I/O.

pub mod links;
pub mod parsed;

use std::sync::Arc;

use wasmtime::component::HasData;

use super::bindings::v0_1::sluice::filter::message_view as wit;
use parsed::{Kind, slice};
pub use parsed::{MessageView, ParsedMessage};

/// The store's part of the view: the message of the `check-message` call in progress.
#[derive(Default)]
pub struct ViewCtx {
    /// Set for the `check-message` call; none before it (there is no message yet).
    pub(crate) message: Option<Arc<MessageView>>,
}

impl ViewCtx {
    fn parsed(&self) -> Option<&ParsedMessage> {
        self.message.as_deref().map(MessageView::parsed)
    }
}

/// Links `message-view` to [`ViewCtx`].
pub struct ViewApi;

impl HasData for ViewApi {
    type Data<'a> = &'a mut ViewCtx;
}

impl wit::Host for ViewCtx {
    fn parts(&mut self) -> Vec<wit::Part> {
        let Some(p) = self.parsed() else {
            return Vec::new();
        };
        p.parts
            .iter()
            .map(|i| wit::Part {
                index: i.index,
                parent: i.parent,
                depth: i.depth,
                kind: match i.kind {
                    Kind::Text => wit::PartKind::Text,
                    Kind::Html => wit::PartKind::Html,
                    Kind::Binary => wit::PartKind::Binary,
                    Kind::Multipart => wit::PartKind::Multipart,
                    Kind::Message => wit::PartKind::Message,
                },
                content_type: i.content_type.clone(),
                params: i.params.clone(),
                disposition: i.disposition.clone(),
                filename: i.filename.clone(),
                charset: i.charset.clone(),
                transfer_encoding: i.transfer_encoding.clone(),
                size: i.size,
                raw_offset: i.raw_offset,
                raw_length: i.raw_length,
                attachment: i.attachment,
            })
            .collect()
    }

    fn text(&mut self, part: u32) -> Option<String> {
        self.parsed()?.text(part).map(str::to_string)
    }

    fn visible_text(&mut self, part: u32) -> Option<String> {
        self.parsed()?.visible_text(part)
    }

    fn body_text(&mut self) -> String {
        self.parsed()
            .map(|p| p.body_text.clone())
            .unwrap_or_default()
    }

    fn attachments(&mut self) -> Vec<wit::Attachment> {
        let Some(p) = self.parsed() else {
            return Vec::new();
        };
        p.attachments
            .iter()
            .map(|a| wit::Attachment {
                part: a.part,
                name: a.name.clone(),
                declared_type: a.declared_type.clone(),
                sniffed_type: a.sniffed_type.clone(),
                size: a.size,
                sha256: a.sha256.clone(),
            })
            .collect()
    }

    fn attachment_bytes(&mut self, part: u32, offset: u64, length: u32) -> Option<Vec<u8>> {
        let bytes = self.parsed()?.bytes(part)?;
        Some(slice(bytes, offset, length).to_vec())
    }

    fn links(&mut self) -> Vec<wit::Link> {
        let Some(p) = self.parsed() else {
            return Vec::new();
        };
        p.links
            .iter()
            .map(|l| wit::Link {
                url: l.url.clone(),
                host: l.host.clone(),
                registrable_domain: l.registrable_domain.clone(),
                part: l.part,
            })
            .collect()
    }

    fn summary(&mut self) -> wit::HeaderSummary {
        let mailboxes = |m: &[parsed::Mailbox]| {
            m.iter()
                .map(|m| wit::Mailbox {
                    name: m.name.clone(),
                    address: m.address.clone(),
                })
                .collect()
        };
        match self.parsed() {
            Some(p) => wit::HeaderSummary {
                from: mailboxes(&p.summary.from),
                to: mailboxes(&p.summary.to),
                subject: p.summary.subject.clone(),
                date: p.summary.date,
            },
            None => wit::HeaderSummary {
                from: Vec::new(),
                to: Vec::new(),
                subject: None,
                date: None,
            },
        }
    }

    fn raw_size(&mut self) -> u64 {
        self.message.as_ref().map_or(0, |m| m.raw().len() as u64)
    }

    fn raw_slice(&mut self, offset: u64, length: u32) -> Vec<u8> {
        self.message
            .as_ref()
            .map(|m| slice(m.raw(), offset, length).to_vec())
            .unwrap_or_default()
    }

    fn limits_hit(&mut self) -> Vec<String> {
        self.parsed()
            .map(|p| p.limits_hit.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default()
    }
}
