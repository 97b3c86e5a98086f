//! Turning a message into hashed features.
//!
//! Only content a sender controls is read: the decoded subject and body parts (HTML parts
//! both as text and by their markup), and the headers in [`READ_HEADERS`]. Everything a
//! receiving system or an archive adds — `Received`, `X-Spam-*`, `X-Keywords`, `X-Razor*`,
//! `Status`, list and archive headers — is ignored, so the model learns nothing from how a
//! corpus was collected.

use mail_parser::{MessageParser, MimeHeaders};

/// Word tokens of each body part that become features.
const BODY_TOKENS: usize = 3000;

/// Hash buckets are `1 << BITS`.
pub const BITS: u32 = 20;

/// Headers a sender's mail program writes, whose words are features (lower case).
pub const READ_HEADERS: &[&str] = &[
    "subject",
    "from",
    "reply-to",
    "x-mailer",
    "user-agent",
    "organization",
    "x-priority",
    "x-msmail-priority",
    "importance",
    "x-mimeole",
    "content-transfer-encoding",
];

/// Headers a sender's mail program writes, whose presence is a feature. Headers added on
/// the way (`Received`, `Return-Path`, `Delivered-To`), by mailing lists (`List-*`,
/// `Precedence`, `Sender`) or by filters and archives (`X-Spam-*`, `X-Keywords`, …) are
/// not in this list and so never read.
pub const PRESENCE_HEADERS: &[&str] = &[
    "in-reply-to",
    "references",
    "user-agent",
    "x-mailer",
    "x-priority",
    "x-msmail-priority",
    "x-mimeole",
    "organization",
    "x-accept-language",
    "content-disposition",
    "importance",
    "thread-index",
    "content-class",
    "mime-version",
    "content-transfer-encoding",
    "reply-to",
    "cc",
    "to",
];

/// The shape of a value: letters → `a`, digits → `9`, runs collapsed (`<20020101.ab@x>`
/// → `<9.a@a>`).
fn shape(v: &str) -> String {
    let mut out = String::new();
    for c in v.chars().take(80) {
        let k = if c.is_ascii_alphabetic() {
            'a'
        } else if c.is_ascii_digit() {
            '9'
        } else if c.is_whitespace() {
            ' '
        } else {
            c
        };
        if !out.ends_with(k) {
            out.push(k);
        }
    }
    out
}

/// The factor applied to the sum of a message's weights, so long and short messages are
/// judged on one scale.
pub fn norm(n: usize) -> f32 {
    1.0 / (n.max(1) as f32).sqrt()
}

/// A message's features: distinct bucket indices, and the structural facts found.
#[derive(Debug, Clone, Default)]
pub struct Features {
    /// Distinct hashed feature indices (< `1 << BITS`).
    pub indices: Vec<u32>,
    /// Structural facts (rule names) that hold for the message.
    pub facts: Vec<&'static str>,
}

const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// FNV-1a over one part of a feature, then a separator: the hash of `[a, b]` is
/// `fnv_part(fnv_part(FNV_BASIS, a), b)`, so a shared prefix is hashed once.
fn fnv_part(mut h: u64, part: &[u8]) -> u64 {
    for &b in part {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h ^= 0xff;
    h.wrapping_mul(FNV_PRIME)
}

fn fnv(parts: &[&[u8]]) -> u64 {
    parts.iter().fold(FNV_BASIS, |h, p| fnv_part(h, p))
}

struct Sink {
    indices: Vec<u32>,
}

impl Sink {
    fn add(&mut self, parts: &[&[u8]]) {
        self.add_hash(fnv(parts));
    }

    fn add_hash(&mut self, h: u64) {
        self.indices.push((h >> (64 - BITS)) as u32);
    }
}

/// Lower-cased word tokens: runs of letters, digits and a few joiners, 2..=24 characters
/// long; longer runs (encoded junk) are reduced to a length class. The tokens share one
/// buffer (this runs over every word of every message: one allocation per word was the
/// largest cost of scoring).
#[derive(Debug, Default)]
struct Tokens {
    buf: String,
    spans: Vec<(usize, usize)>,
}

impl Tokens {
    fn len(&self) -> usize {
        self.spans.len()
    }

    fn get(&self, i: usize) -> Option<&str> {
        self.spans.get(i).map(|&(a, b)| &self.buf[a..b])
    }

    /// Ends the word that started at `start` in the buffer.
    fn flush(&mut self, start: usize) {
        let word = &self.buf[start..];
        let t = word.trim_matches(|c| c == '\'' || c == '-' || c == '.');
        let offset = start + (word.len() - word.trim_start_matches(['\'', '-', '.']).len());
        let n = if t.is_ascii() {
            t.len()
        } else {
            t.chars().count()
        };
        if (2..=24).contains(&n) {
            self.spans.push((offset, offset + t.len()));
        } else if n > 24 {
            self.buf.truncate(start);
            self.buf.push_str("#long");
            self.buf.push(char::from(b'0' + (n / 8).min(8) as u8));
            self.spans.push((start, self.buf.len()));
        } else {
            self.buf.truncate(start);
        }
    }
}

/// The first `max` word tokens of `text` (the body uses at most 3000: stopping there keeps
/// long messages cheap and changes no feature).
fn words(text: &str, max: usize) -> Tokens {
    let mut t = Tokens {
        buf: String::with_capacity(text.len().min(max.saturating_mul(8))),
        spans: Vec::with_capacity((text.len() / 5).min(max)),
    };
    let mut start = 0;
    for c in text.chars() {
        if t.spans.len() >= max {
            t.spans.truncate(max);
            return t;
        }
        let joiner = matches!(c, '$' | '\'' | '-' | '.' | '!' | '%');
        if c.is_ascii() {
            if c.is_ascii_alphanumeric() || joiner {
                t.buf.push(c.to_ascii_lowercase());
            } else {
                t.flush(start);
                start = t.buf.len();
                continue;
            }
        } else if c.is_alphanumeric() {
            t.buf.extend(c.to_lowercase());
        } else {
            t.flush(start);
            start = t.buf.len();
            continue;
        }
        if matches!(c, '!' | '%') {
            t.flush(start);
            let at = t.buf.len();
            t.buf.push(c);
            t.spans.push((at, at + 1));
            start = t.buf.len();
        }
    }
    t.flush(start);
    t.spans.truncate(max);
    t
}

/// Unigrams and orthogonal sparse bigrams (pairs up to 2 words apart, with their distance;
/// wider windows measured no better on the corpus). The hash of prefix and word is computed
/// once and continued for each pair.
fn osb(sink: &mut Sink, prefix: &str, tokens: &Tokens, limit: usize) {
    let hp = fnv_part(FNV_BASIS, prefix.as_bytes());
    let n = tokens.len().min(limit);
    let mut hashes: Vec<u64> = Vec::with_capacity(n);
    for i in 0..n {
        let w = tokens.get(i).unwrap_or("");
        let hw = fnv_part(hp, w.as_bytes());
        sink.add_hash(hw);
        hashes.push(hw);
    }
    for (i, &hw) in hashes.iter().enumerate() {
        for d in 1..=2usize {
            if let Some(v) = tokens.get(i + d).filter(|_| i + d < n) {
                sink.add_hash(fnv_part(fnv_part(hw, &[d as u8]), v.as_bytes()));
            }
        }
    }
}

/// HTML markup tokens: tag names and attribute names (and short attribute values).
fn markup(sink: &mut Sink, html: &str) {
    let mut rest = html;
    let mut n = 0;
    while let Some(start) = rest.find('<') {
        let Some(end) = rest[start..].find('>') else {
            break;
        };
        let tag = &rest[start + 1..start + end];
        rest = &rest[start + end + 1..];
        n += 1;
        if n > 2000 {
            break;
        }
        let mut parts = tag.split_whitespace();
        let Some(name) = parts.next() else { continue };
        let name = name.to_ascii_lowercase();
        sink.add(&[b"tag", name.as_bytes()]);
        for attr in parts.take(8) {
            let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
            let k = k.to_ascii_lowercase();
            sink.add(&[b"attr", name.as_bytes(), k.as_bytes()]);
            let v = v.trim_matches(['"', '\'']).to_ascii_lowercase();
            if !v.is_empty() && v.len() <= 12 {
                sink.add(&[b"val", k.as_bytes(), v.as_bytes()]);
            }
        }
    }
}

/// URL host names and their parent domains.
fn urls(sink: &mut Sink, text: &str) -> usize {
    let mut count = 0;
    let lower = text.to_ascii_lowercase();
    for scheme in ["http://", "https://"] {
        let mut rest = lower.as_str();
        while let Some(i) = rest.find(scheme) {
            rest = &rest[i + scheme.len()..];
            let host: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                .collect();
            count += 1;
            if count > 200 {
                return count;
            }
            let labels: Vec<&str> = host.split('.').filter(|l| !l.is_empty()).collect();
            if labels.iter().all(|l| l.chars().all(|c| c.is_ascii_digit())) && !labels.is_empty() {
                sink.add(&[b"url", b"ip-literal"]);
                continue;
            }
            for k in 2..=labels.len().min(3) {
                let d = labels[labels.len() - k..].join(".");
                sink.add(&[b"url", d.as_bytes()]);
            }
        }
    }
    count
}

fn bucket(n: usize) -> &'static [u8] {
    match n {
        0 => b"0",
        1 => b"1",
        2..=3 => b"2-3",
        4..=7 => b"4-7",
        8..=15 => b"8-15",
        _ => b"16+",
    }
}

/// The features of a raw message (CRLF or LF line endings).
pub fn extract(raw: &[u8]) -> Features {
    let mut sink = Sink {
        indices: Vec::with_capacity(4096),
    };
    let mut facts = Vec::new();
    sink.add(&[b"bias"]);
    let Some(msg) = MessageParser::default().parse(raw) else {
        facts.push("UNPARSEABLE");
        return Features {
            indices: sink.indices,
            facts,
        };
    };

    // Headers the sender wrote.
    for h in msg.headers() {
        let name = h.name().to_ascii_lowercase();
        if PRESENCE_HEADERS.contains(&name.as_str()) {
            sink.add(&[b"has", name.as_bytes()]);
        }
        if matches!(name.as_str(), "message-id" | "date") {
            let v = msg.header_raw(h.name()).unwrap_or("").trim();
            sink.add(&[b"shape", name.as_bytes(), shape(v).as_bytes()]);
        }
        if !READ_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let raw_value = msg
            .header_raw(h.name())
            .map(str::to_string)
            .unwrap_or_default();
        let value = match name.as_str() {
            "subject" => msg.subject().map(str::to_string).unwrap_or(raw_value),
            _ => raw_value,
        };
        let toks = words(&value, usize::MAX);
        if name == "subject" {
            osb(&mut sink, "s:", &toks, usize::MAX);
        } else {
            for i in 0..toks.len() {
                let t = toks.get(i).unwrap_or("");
                sink.add(&[name.as_bytes(), t.as_bytes()]);
            }
        }
    }
    let subject = msg.subject().unwrap_or("");
    let letters: Vec<char> = subject.chars().filter(|c| c.is_alphabetic()).collect();
    if letters.len() >= 8 && letters.iter().all(|c| c.is_uppercase()) {
        facts.push("SUBJ_ALL_CAPS");
    }
    if msg.message_id().is_none() {
        facts.push("MISSING_MID");
    }
    if msg.date().is_none() {
        facts.push("MISSING_DATE");
    }
    if msg.subject().is_none() {
        facts.push("MISSING_SUBJECT");
    }
    if let Some(ct) = msg.content_type() {
        let full = format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")).to_ascii_lowercase();
        sink.add(&[b"ct", full.as_bytes()]);
        if let Some(cs) = ct.attribute("charset") {
            sink.add(&[b"charset", cs.to_ascii_lowercase().as_bytes()]);
        }
    }

    // Body: text parts (HTML converted to text by mail-parser) and HTML markup.
    let mut text_len = 0;
    let mut url_count = 0;
    for i in 0..msg.text_body_count().min(8) {
        if let Some(t) = msg.body_text(i) {
            text_len += t.len();
            let toks = words(&t, BODY_TOKENS);
            osb(&mut sink, "b:", &toks, BODY_TOKENS);
            url_count += urls(&mut sink, &t);
        }
    }
    let html_parts = msg.html_body_count();
    // Only parts that are HTML: mail-parser also lists text parts here, rendered to HTML,
    // which cost a conversion and a second URL scan and told nothing new.
    for i in 0..html_parts.min(4) {
        let is_html = msg
            .html_part(u32::try_from(i).unwrap_or(u32::MAX))
            .is_some_and(|p| p.is_content_type("text", "html"));
        if !is_html {
            continue;
        }
        if let Some(h) = msg.body_html(i) {
            markup(&mut sink, &h);
            url_count += urls(&mut sink, &h);
        }
    }
    let has_plain = msg
        .text_bodies()
        .any(|p| p.is_content_type("text", "plain"));
    if html_parts > 0 && !has_plain {
        facts.push("HTML_ONLY");
    }
    if url_count >= 10 {
        facts.push("MANY_URLS");
    }
    sink.add(&[b"urls", bucket(url_count)]);
    sink.add(&[b"attachments", bucket(msg.attachment_count())]);
    sink.add(&[b"textlen", bucket(text_len / 512)]);
    for f in &facts {
        sink.add(&[b"fact", f.as_bytes()]);
    }

    sink.indices.sort_unstable();
    sink.indices.dedup();
    Features {
        indices: sink.indices,
        facts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_stamps_are_not_features() {
        let plain = b"From: a@example.org\r\nSubject: Hello there\r\nMessage-ID: <1@x>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nSee you soon.\r\n";
        let stamped = b"From: a@example.org\r\nSubject: Hello there\r\nMessage-ID: <1@x>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\nX-Spam-Status: Yes, score=9\r\nX-Keywords: spam\r\nReceived: from relay.example\r\n\r\nSee you soon.\r\n";
        assert_eq!(extract(plain).indices, extract(stamped).indices);
    }

    #[test]
    fn structural_facts() {
        let m = b"From: a@example.org\r\nSubject: FREE MONEY FOR YOU NOW\r\nContent-Type: text/html\r\n\r\n<html><body><a href=\"http://x.example/\">click</a></body></html>\r\n";
        let f = extract(m);
        for want in ["SUBJ_ALL_CAPS", "MISSING_MID", "MISSING_DATE", "HTML_ONLY"] {
            assert!(f.facts.contains(&want), "{want} in {:?}", f.facts);
        }
    }
}
