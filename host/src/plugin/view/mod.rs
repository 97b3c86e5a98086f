//! The `message-view` interface (WIT 0.1.3): the message of `check-message`, parsed once by
//! the host and shared by every plugin of the transaction ([`MessageView`]). The parse is
//! pure ([`parsed`], with [`links`]) and describes the message in the WIT's own records, so
//! this module only hands out copies.
//!
//! It may use: mail-parser, linkify and the Public Suffix List (through `parsed` and
//! `links`), and the plugin bindings. Nothing here does I/O.

pub mod links;
pub mod parsed;

use std::sync::Arc;

use wasmtime::component::HasData;

pub(crate) use super::bindings::v0_1::sluice::filter::message_view as wit;
use parsed::slice;
pub use parsed::{MessageView, ParsedMessage};

/// The store's part of the view: the message of the `check-message` call in progress.
#[derive(Default)]
pub struct ViewCtx {
    /// Set for the `check-message` call; none before it (there is no message yet).
    pub(crate) message: Option<Arc<MessageView>>,
    /// What this plugin read, so that `limits-hit` checks only the bounds of what it read
    /// (the readable text and the links are made on the first call for them, and a plugin
    /// that reads only the parts tree must not pay for a scan of every byte of text).
    read: Reads,
}

/// The lazily made parts of the view that this plugin has read.
#[derive(Default, Clone, Copy)]
pub struct Reads {
    pub body_text: bool,
    pub links: bool,
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
        self.parsed().map(|p| p.parts.clone()).unwrap_or_default()
    }

    fn text(&mut self, part: u32) -> Option<String> {
        self.parsed()?.text(part).map(str::to_string)
    }

    fn visible_text(&mut self, part: u32) -> Option<String> {
        self.parsed()?.visible_text(part)
    }

    fn body_text(&mut self) -> String {
        self.read.body_text = true;
        self.parsed()
            .map(|p| p.body_text().to_string())
            .unwrap_or_default()
    }

    fn attachments(&mut self) -> Vec<wit::Attachment> {
        self.parsed()
            .map(|p| p.attachments().to_vec())
            .unwrap_or_default()
    }

    fn attachment_bytes(&mut self, part: u32, offset: u64, length: u32) -> Option<Vec<u8>> {
        let bytes = self.parsed()?.bytes(part)?;
        Some(slice(bytes, offset, length).to_vec())
    }

    fn links(&mut self) -> Vec<wit::Link> {
        self.read.links = true;
        self.parsed()
            .map(|p| p.links().to_vec())
            .unwrap_or_default()
    }

    fn summary(&mut self) -> wit::HeaderSummary {
        match self.parsed() {
            Some(p) => p.summary.clone(),
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
        let read = self.read;
        self.parsed()
            .map(|p| p.limits_hit(read).iter().map(|s| s.to_string()).collect())
            .unwrap_or_default()
    }
}
