//! The message of `check-message` parsed once for every plugin of the transaction
//! (`message-view`, WIT 0.1.3): the parts tree, decoded text, attachments, links and the
//! decoded From/To/Subject/Date. Pure: bytes in, a bounded description out; the WIT functions
//! in [`super`] only copy from it.
//!
//! MIME is mail-parser's; what it adds is the walk over the parts tree with its bounds, the
//! attachment facts (sniffed type, SHA-256) and the links (linkify to find them, the Public
//! Suffix List for their registrable domains).

use std::collections::HashSet;
use std::sync::OnceLock;

use mail_parser::{Encoding, Message, MessageParser, MessagePart, MimeHeaders, PartType};
use sha2::{Digest, Sha256};

use super::Reads;
use crate::plugin::bindings::types::Message as WitMessage;

/// Parts the view lists at most.
pub const MAX_PARTS: usize = 1000;
/// How deep the view follows containers (the message itself is depth 0).
pub const MAX_DEPTH: u32 = 32;
/// Decoded text kept per part, and of the message's readable text; also the most one call
/// copies (`raw-slice`, `attachment-bytes`).
pub const MAX_TEXT_BYTES: usize = 1 << 20;
/// Links the view lists at most.
pub const MAX_LINKS: usize = 1000;
/// A decoded header value, parameter, file name or URL is cut to this many bytes.
pub const MAX_FIELD_BYTES: usize = 2048;
/// Content-Type parameters kept per part.
pub const MAX_PARAMS: usize = 32;
/// The strings of the parts list together, and of the links list together, at most: what
/// `parts` or `links` copies into a plugin's memory stays near 1 MiB.
pub const MAX_LIST_BYTES: usize = 1 << 20;

/// An attachment, described (`message-view.attachment`).
pub use super::wit::Attachment as AttachmentInfo;
/// The decoded header fields plugins ask for most (`message-view.header-summary`).
pub use super::wit::HeaderSummary as Summary;
/// A link of a text or HTML part (`message-view.link`).
pub use super::wit::Link as LinkInfo;
/// A mailbox of From or To (`message-view.mailbox`).
pub use super::wit::Mailbox;
/// One part of the parts tree (`message-view.part`).
pub use super::wit::Part as PartInfo;
/// What a part holds.
pub use super::wit::PartKind as Kind;

/// The bytes of a part's strings, as `parts` copies them.
fn listed_bytes(part: &PartInfo) -> usize {
    let opt = |o: &Option<String>| o.as_ref().map_or(0, String::len);
    64 + part.content_type.len()
        + part
            .params
            .iter()
            .map(|(n, v)| n.len() + v.len())
            .sum::<usize>()
        + opt(&part.disposition)
        + opt(&part.filename)
        + opt(&part.charset)
        + opt(&part.transfer_encoding)
}

/// A part's decoded body, as the view keeps it.
#[derive(Debug, Clone, PartialEq)]
enum Body {
    /// A container.
    None,
    /// Decoded text (HTML: the markup), cut to [`MAX_TEXT_BYTES`].
    Text(String),
    /// Decoded bytes.
    Bytes(Vec<u8>),
}

impl Body {
    /// The decoded bytes; none for a container.
    fn bytes(&self) -> Option<&[u8]> {
        match self {
            Body::Text(t) => Some(t.as_bytes()),
            Body::Bytes(b) => Some(b),
            Body::None => None,
        }
    }
}

/// The parsed message: everything `message-view` answers. The parts tree and the decoded
/// header fields are made by the parse; what costs more and not every plugin asks for (the
/// attachments' digests, the readable text, the links) is made on first use.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedMessage {
    /// The parts, depth first.
    pub parts: Vec<PartInfo>,
    bodies: Vec<Body>,
    /// The parts of the message's readable text, in order (mail-parser's text bodies).
    text_body: Vec<u32>,
    /// From, To, Subject, Date.
    pub summary: Summary,
    /// The bounds that cut the parts tree: `parts`, `depth`, `text`.
    cut: Vec<&'static str>,
    attachments: OnceLock<Vec<AttachmentInfo>>,
    /// The readable text, and whether it was cut.
    body_text: OnceLock<(String, bool)>,
    /// The links, and whether they were cut.
    links: OnceLock<(Vec<LinkInfo>, bool)>,
}

/// A message and, once asked for, its parse: shared by every plugin of one transaction. It
/// holds the WIT `message` the plugins' `check-message` gets, so that the raw bytes exist
/// once.
#[derive(Debug)]
pub struct MessageView {
    message: WitMessage,
    parsed: OnceLock<ParsedMessage>,
}

impl MessageView {
    /// The view of `message`, not parsed yet.
    pub fn new(message: WitMessage) -> MessageView {
        MessageView {
            message,
            parsed: OnceLock::new(),
        }
    }

    /// The message as `check-message` gets it.
    pub fn message(&self) -> &WitMessage {
        &self.message
    }

    /// The raw message.
    pub fn raw(&self) -> &[u8] {
        &self.message.raw
    }

    /// The parse, made on the first call. Should mail-parser panic on some input, the view is
    /// that of an empty message rather than a lost transaction (or a lost plugin thread).
    pub fn parsed(&self) -> &ParsedMessage {
        self.parsed.get_or_init(|| {
            std::panic::catch_unwind(|| ParsedMessage::parse(self.raw())).unwrap_or_else(|_| {
                tracing::error!(
                    "parsing a message for the plugins' view panicked; its view is empty"
                );
                ParsedMessage::parse(b"")
            })
        })
    }
}

/// Up to `length` bytes of `bytes` from `offset`, at most [`MAX_TEXT_BYTES`].
pub fn slice(bytes: &[u8], offset: u64, length: u32) -> &[u8] {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let length = (length as usize).min(MAX_TEXT_BYTES);
    &bytes[start..start.saturating_add(length).min(bytes.len())]
}

/// One step of the walk: a part of a (possibly nested) message.
struct Visit<'a, 'x> {
    message: &'a Message<'x>,
    id: usize,
    parent: Option<u32>,
    depth: u32,
    /// Where the message `message` starts in the raw message, when its bytes are the raw
    /// message's (not transfer-encoded inside its container).
    base: Option<u64>,
    /// The raw range of the nearest container whose bytes are the raw message's.
    fallback: (u64, u64),
}

impl ParsedMessage {
    /// Parses `raw`. Never fails: what mail-parser cannot read is an empty message of one
    /// text part, and past a bound the view is cut short and says so.
    pub fn parse(raw: &[u8]) -> ParsedMessage {
        let mut view = ParsedMessage {
            parts: Vec::new(),
            bodies: Vec::new(),
            text_body: Vec::new(),
            summary: Summary {
                from: Vec::new(),
                to: Vec::new(),
                subject: None,
                date: None,
            },
            cut: Vec::new(),
            attachments: OnceLock::new(),
            body_text: OnceLock::new(),
            links: OnceLock::new(),
        };
        let Some(message) = MessageParser::default().parse(raw) else {
            return view;
        };
        view.summary = summary(&message);
        let top = view.walk(&message, raw.len() as u64);
        view.text_body = message
            .text_body
            .iter()
            .filter_map(|id| top.get(*id as usize).copied().flatten())
            .collect();
        view
    }

    /// Visits the parts depth first, within [`MAX_PARTS`] and [`MAX_DEPTH`].
    /// Returns, for each part id of the top-level message, its index in the view.
    fn walk(&mut self, message: &Message<'_>, raw_len: u64) -> Vec<Option<u32>> {
        let mut top = vec![None; message.parts.len()];
        let mut stack = vec![Visit {
            message,
            id: 0,
            parent: None,
            depth: 0,
            base: Some(0),
            fallback: (0, raw_len),
        }];
        let mut listed = 0usize;
        while let Some(v) = stack.pop() {
            if self.parts.len() >= MAX_PARTS {
                self.hit("parts");
                break;
            }
            let Some(part) = v.message.parts.get(v.id) else {
                continue;
            };
            let index = self.parts.len() as u32;
            if std::ptr::eq(v.message, message)
                && let Some(slot) = top.get_mut(v.id)
            {
                *slot = Some(index);
            }
            let (raw_offset, raw_length) = match v.base {
                Some(base) => (
                    base + u64::from(part.offset_header),
                    u64::from(part.offset_end.saturating_sub(part.offset_header)),
                ),
                None => v.fallback,
            };
            let (info, body) = describe(part, index, &v, raw_offset, raw_length);
            if matches!(&body, Body::Text(t) if (t.len() as u64) < info.size) {
                self.hit("text");
            }
            let children: Vec<Visit<'_, '_>> = match &part.body {
                PartType::Multipart(ids) => ids
                    .iter()
                    .map(|&id| Visit {
                        message: v.message,
                        id: id as usize,
                        parent: Some(index),
                        depth: v.depth + 1,
                        base: v.base,
                        fallback: (raw_offset, raw_length),
                    })
                    .collect(),
                PartType::Message(nested) => {
                    // The nested message's offsets count from its container's body, which is
                    // the raw message's own bytes only when not transfer-encoded.
                    let base = match (v.base, part.encoding) {
                        (Some(base), Encoding::None) => Some(base + u64::from(part.offset_body)),
                        _ => None,
                    };
                    vec![Visit {
                        message: nested,
                        id: 0,
                        parent: Some(index),
                        depth: v.depth + 1,
                        base,
                        fallback: (raw_offset, raw_length),
                    }]
                }
                _ => Vec::new(),
            };
            listed += listed_bytes(&info);
            if listed > MAX_LIST_BYTES {
                self.hit("parts");
                break;
            }
            self.parts.push(info);
            self.bodies.push(body);
            if !children.is_empty() && v.depth + 1 > MAX_DEPTH {
                self.hit("depth");
                continue;
            }
            stack.extend(children.into_iter().rev());
        }
        top
    }

    /// The links of the text and HTML parts, each URL once.
    fn find_links(&self) -> (Vec<LinkInfo>, bool) {
        let mut seen = HashSet::new();
        let mut listed = 0usize;
        let mut links = Vec::new();
        let mut cut_short = false;
        'parts: for (part, body) in self.parts.iter().zip(&self.bodies) {
            let (Body::Text(text), Kind::Text | Kind::Html) = (body, part.kind) else {
                continue;
            };
            for url in super::links::urls(text) {
                if !seen.insert(url) {
                    continue;
                }
                let Some(host) = super::links::host(url) else {
                    continue;
                };
                let url = cut(url);
                listed += url.len() + 2 * host.len();
                if links.len() >= MAX_LINKS || listed > MAX_LIST_BYTES {
                    cut_short = true;
                    break 'parts;
                }
                links.push(LinkInfo {
                    url,
                    registrable_domain: super::links::registrable_domain(&host),
                    host,
                    part: part.index,
                });
            }
        }
        (links, cut_short)
    }

    fn hit(&mut self, bound: &'static str) {
        if !self.cut.contains(&bound) {
            self.cut.push(bound);
        }
    }

    /// The attachments, described (digests made on the first call).
    pub fn attachments(&self) -> &[AttachmentInfo] {
        self.attachments.get_or_init(|| {
            self.parts
                .iter()
                .zip(&self.bodies)
                .filter(|(p, _)| p.attachment)
                .map(|(p, b)| attachment(p, b))
                .collect()
        })
    }

    /// The links, each URL once (found on the first call).
    pub fn links(&self) -> &[LinkInfo] {
        &self.links.get_or_init(|| self.find_links()).0
    }

    /// The readable text: the text bodies, HTML made text, joined by blank lines (made on
    /// the first call).
    pub fn body_text(&self) -> &str {
        &self.body_text.get_or_init(|| self.readable_text()).0
    }

    /// The bounds that cut what a plugin read: `parts`, `depth` and a part's `text` (known
    /// from the parse), then `text` for the readable text and `links` only when it read them,
    /// so that asking never makes them (a scan of every byte of text).
    pub fn limits_hit(&self, read: Reads) -> Vec<&'static str> {
        let mut hit = self.cut.clone();
        if read.body_text
            && self.body_text.get_or_init(|| self.readable_text()).1
            && !hit.contains(&"text")
        {
            hit.push("text");
        }
        if read.links && self.links.get_or_init(|| self.find_links()).1 {
            hit.push("links");
        }
        hit
    }

    /// The readable text and whether [`MAX_TEXT_BYTES`] cut it.
    fn readable_text(&self) -> (String, bool) {
        let mut out = String::new();
        for &part in &self.text_body {
            let Some(text) = self.visible_text(part) else {
                continue;
            };
            if !out.is_empty() {
                out.push_str("\n\n");
            }
            out.push_str(&text);
            if out.len() > MAX_TEXT_BYTES {
                out.truncate(out.floor_char_boundary(MAX_TEXT_BYTES));
                return (out, true);
            }
        }
        (out, false)
    }

    /// The decoded text of a text or HTML part.
    pub fn text(&self, part: u32) -> Option<&str> {
        let i = part as usize;
        match (self.parts.get(i)?.kind, self.bodies.get(i)?) {
            (Kind::Text | Kind::Html, Body::Text(t)) => Some(t),
            _ => None,
        }
    }

    /// What a reader sees of a text or HTML part.
    pub fn visible_text(&self, part: u32) -> Option<String> {
        let text = self.text(part)?;
        Some(match self.parts[part as usize].kind {
            Kind::Html => mail_parser::decoders::html::html_to_text(text),
            _ => text.to_string(),
        })
    }

    /// The decoded bytes of a part that is not a container.
    pub fn bytes(&self, part: u32) -> Option<&[u8]> {
        self.bodies.get(part as usize)?.bytes()
    }
}

/// The part's description and its decoded body.
fn describe(
    part: &MessagePart<'_>,
    index: u32,
    v: &Visit<'_, '_>,
    raw_offset: u64,
    raw_length: u64,
) -> (PartInfo, Body) {
    let ct = part.content_type();
    let content_type = cut(&match ct {
        Some(ct) => match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub),
            None => ct.ctype().to_string(),
        },
        None => "text/plain".to_string(),
    })
    .to_ascii_lowercase();
    let params: Vec<(String, String)> = ct
        .and_then(|ct| ct.attributes())
        .unwrap_or_default()
        .iter()
        .take(MAX_PARAMS)
        .map(|a| (cut(&a.name).to_ascii_lowercase(), cut(&a.value)))
        .collect();
    let disposition = part
        .content_disposition()
        .map(|d| cut(d.ctype()).to_ascii_lowercase());
    let filename = part.attachment_name().map(cut);
    let (kind, body) = match &part.body {
        PartType::Text(t) => (Kind::Text, Body::Text(cut_text(t))),
        PartType::Html(t) => (Kind::Html, Body::Text(cut_text(t))),
        PartType::Binary(b) | PartType::InlineBinary(b) => (Kind::Binary, Body::Bytes(b.to_vec())),
        PartType::Message(m) => (Kind::Message, Body::Bytes(m.raw_message.to_vec())),
        PartType::Multipart(_) => (Kind::Multipart, Body::None),
    };
    let size = match &part.body {
        PartType::Text(t) | PartType::Html(t) => t.len(),
        PartType::Binary(b) | PartType::InlineBinary(b) => b.len(),
        PartType::Message(m) => m.raw_message.len(),
        PartType::Multipart(_) => 0,
    } as u64;
    let charset = match kind {
        Kind::Text | Kind::Html => params
            .iter()
            .find(|(n, _)| n == "charset")
            .map(|(_, v)| v.to_ascii_lowercase()),
        _ => None,
    };
    let named_or_marked = filename.is_some() || disposition.as_deref() == Some("attachment");
    let attachment = index != 0
        && match kind {
            Kind::Binary | Kind::Message => true,
            Kind::Text | Kind::Html => named_or_marked,
            Kind::Multipart => false,
        };
    let info = PartInfo {
        index,
        parent: v.parent,
        depth: v.depth,
        kind,
        content_type,
        params,
        disposition,
        filename,
        charset,
        transfer_encoding: part
            .content_transfer_encoding()
            .map(|e| cut(e.trim()).to_ascii_lowercase()),
        size,
        raw_offset,
        raw_length,
        attachment,
    };
    (info, body)
}

/// The attachment facts of a part.
fn attachment(info: &PartInfo, body: &Body) -> AttachmentInfo {
    let bytes = body.bytes().unwrap_or_default();
    AttachmentInfo {
        part: info.index,
        name: info.filename.clone(),
        declared_type: info.content_type.clone(),
        sniffed_type: infer::get(bytes).map(|t| t.mime_type().to_string()),
        size: info.size,
        sha256: hex::encode(Sha256::digest(bytes)),
    }
}

/// From, To, Subject and Date, decoded.
fn summary(message: &Message<'_>) -> Summary {
    let mailboxes = |a: Option<&mail_parser::Address<'_>>| -> Vec<Mailbox> {
        a.map(|a| {
            a.iter()
                .take(MAX_PARTS)
                .map(|m| Mailbox {
                    name: m.name().map(cut),
                    address: m.address().map(cut),
                })
                .collect()
        })
        .unwrap_or_default()
    };
    Summary {
        from: mailboxes(message.from()),
        to: mailboxes(message.to()),
        subject: message.subject().map(cut),
        date: message
            .date()
            .map(|d| d.to_timestamp().saturating_mul(1000)),
    }
}

/// A decoded header value or parameter, cut to [`MAX_FIELD_BYTES`].
fn cut(value: &str) -> String {
    value[..value.floor_char_boundary(MAX_FIELD_BYTES)].to_string()
}

/// Decoded text, cut to [`MAX_TEXT_BYTES`].
fn cut_text(text: &str) -> String {
    text[..text.floor_char_boundary(MAX_TEXT_BYTES)].to_string()
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
