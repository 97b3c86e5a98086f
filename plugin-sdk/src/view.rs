//! The message of `check-message`, parsed by Sluice (WIT 0.1.3): its parts, decoded text,
//! attachments and links, and decoded From/To/Subject/Date, without parsing MIME in the
//! plugin. Every plugin of a transaction shares the host's one parse, made on the first call;
//! a plugin that never calls these pays nothing. Call them from `check_message` (outside it
//! there is no message: lists are empty and options none). No capability is needed.
//!
//! ```ignore
//! use sluice_plugin_sdk::view;
//! for link in view::links() {
//!     // `shop.example.co.uk` has the registrable domain `example.co.uk`.
//!     if link.registrable_domain.as_deref() == Some("example.co.uk") { /* … */ }
//! }
//! let risky = view::attachments()
//!     .iter()
//!     .any(|a| a.sniffed_type.as_deref() == Some("application/x-msdownload"));
//! ```
//!
//! Bounds (the view is cut short past them, and [`limits_hit`] says which): 1,000 parts,
//! nesting 32 deep, 1 MiB of decoded text per part, 1,000 links, 1 MiB per slice.
//!
//! In native tests, [`crate::testing::set_view`] sets what these functions answer.

pub use crate::bindings::sluice::filter::message_view::{
    Attachment, HeaderSummary, Link, Mailbox, Part, PartKind,
};

#[cfg(target_family = "wasm")]
mod imp {
    pub use crate::bindings::sluice::filter::message_view::{
        attachment_bytes, attachments, body_text, limits_hit, links, parts, raw_size, raw_slice,
        summary, text, visible_text,
    };
}

#[cfg(not(target_family = "wasm"))]
mod imp {
    pub use crate::testing::native::view::{
        attachment_bytes, attachments, body_text, limits_hit, links, parts, raw_size, raw_slice,
        summary, text, visible_text,
    };
}

/// The parts tree, depth first; index 0 is the message itself.
pub fn parts() -> Vec<Part> {
    imp::parts()
}

/// The decoded text of a text or HTML part (HTML as markup); none for another part.
pub fn text(part: u32) -> Option<String> {
    imp::text(part)
}

/// What a reader sees of a text or HTML part: HTML without its markup.
pub fn visible_text(part: u32) -> Option<String> {
    imp::visible_text(part)
}

/// The message's readable text: every text part that is not an attachment, HTML made text
/// where there is no plain alternative, separated by blank lines.
pub fn body_text() -> String {
    imp::body_text()
}

/// The attachments: name, declared and sniffed type, size and SHA-256, without their bytes.
pub fn attachments() -> Vec<Attachment> {
    imp::attachments()
}

/// Up to `length` decoded bytes of a part from `offset` (at most 1 MiB per call).
pub fn attachment_bytes(part: u32, offset: u64, length: u32) -> Option<Vec<u8>> {
    imp::attachment_bytes(part, offset, length)
}

/// The whole decoded content of an attachment, read 1 MiB at a time.
pub fn read_attachment(attachment: &Attachment) -> Vec<u8> {
    const CHUNK: u32 = 1 << 20;
    let mut out = Vec::with_capacity(usize::try_from(attachment.size).unwrap_or(0));
    while (out.len() as u64) < attachment.size {
        match imp::attachment_bytes(attachment.part, out.len() as u64, CHUNK) {
            Some(chunk) if !chunk.is_empty() => out.extend_from_slice(&chunk),
            _ => break,
        }
    }
    out
}

/// The links of the text and HTML parts (`href`s included), each URL once, with host and
/// registrable domain.
pub fn links() -> Vec<Link> {
    imp::links()
}

/// The decoded From, To, Subject and Date (milliseconds since the Unix epoch).
pub fn summary() -> HeaderSummary {
    imp::summary()
}

/// Bytes of the raw message.
pub fn raw_size() -> u64 {
    imp::raw_size()
}

/// Up to `length` bytes of the raw message from `offset` (at most 1 MiB per call); with a
/// part's `raw_offset` and `raw_length`, that part as it was sent.
pub fn raw_slice(offset: u64, length: u32) -> Vec<u8> {
    imp::raw_slice(offset, length)
}

/// The bounds that cut what this plugin read (`parts`, `depth`, `text`, `links`); empty when
/// nothing was cut. `text` of [`body_text`] and `links` are checked only once they were read
/// (making them costs a scan of all the text): call it after the reads it is about.
pub fn limits_hit() -> Vec<String> {
    imp::limits_hit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{View, set_view};

    #[test]
    fn native_tests_answer_what_set_view_set() {
        let big = vec![7u8; (1 << 20) + 10];
        let zip = Part {
            index: 0,
            parent: None,
            depth: 0,
            kind: PartKind::Binary,
            content_type: "application/zip".into(),
            params: Vec::new(),
            disposition: Some("attachment".into()),
            filename: Some("a.zip".into()),
            charset: None,
            transfer_encoding: Some("base64".into()),
            size: big.len() as u64,
            raw_offset: 0,
            raw_length: 0,
            attachment: true,
        };
        let described = Attachment {
            part: 0,
            name: Some("a.zip".into()),
            declared_type: "application/zip".into(),
            sniffed_type: None,
            size: big.len() as u64,
            sha256: String::new(),
        };
        let v = View {
            parts: vec![zip],
            attachments: vec![described],
            bytes: [(0, big.clone())].into(),
            raw: b"Subject: x\r\n\r\nbody".to_vec(),
            ..View::default()
        };
        set_view(v);
        assert_eq!(parts()[0].filename.as_deref(), Some("a.zip"));
        assert_eq!(text(0), None, "a zip is not text");
        assert_eq!(
            attachment_bytes(0, 0, u32::MAX).unwrap().len(),
            1 << 20,
            "1 MiB a call"
        );
        assert_eq!(
            read_attachment(&attachments()[0]),
            big,
            "read whole, chunk by chunk"
        );
        assert_eq!(raw_size(), 18);
        assert_eq!(
            raw_slice(9, 3),
            b"x\r\n",
            "from offset 9: {:?}",
            raw_slice(0, 20)
        );
        assert!(links().is_empty() && limits_hit().is_empty());
    }
}
