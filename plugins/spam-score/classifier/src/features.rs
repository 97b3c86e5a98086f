//! Turning a message into hashed features.
//!
//! Only content a sender controls is read: the decoded subject and body parts (HTML parts
//! both as text and by their markup), and the headers in [`READ_HEADERS`]. Everything a
//! receiving system or an archive adds — `Received`, `X-Spam-*`, `X-Keywords`, `X-Razor*`,
//! `Status`, list and archive headers — is ignored, so the model learns nothing from how a
//! corpus was collected.

use std::net::IpAddr;

use mail_parser::{HeaderName, MessageParser, MimeHeaders};

use crate::trust::{Evidence, Hop, Trust, parse_hop};

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
    "list-id",
    "precedence",
    "sender",
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
    "list-id",
    "list-unsubscribe",
    "list-post",
    "list-help",
    "list-subscribe",
    "list-archive",
    "precedence",
    "sender",
    "errors-to",
    "x-beenthere",
    "x-mailman-version",
    "mailing-list",
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

impl Features {
    /// Each feature with the factor its weight is multiplied by: text and meta features are
    /// normalised by their own counts, so a long body does not drown the headers.
    pub fn terms(&self) -> impl Iterator<Item = (u32, f32)> + '_ {
        let t = norm(self.indices.len());
        let m = norm(self.meta.len());
        self.indices
            .iter()
            .map(move |&i| (i, t))
            .chain(self.meta.iter().map(move |&i| (i, m)))
    }
}

/// A message's features: distinct bucket indices, and the structural facts found.
#[derive(Debug, Clone, Default)]
pub struct Features {
    /// Distinct hashed feature indices of the text (< `1 << BITS`).
    pub indices: Vec<u32>,
    /// Distinct hashed feature indices of headers and structure.
    pub meta: Vec<u32>,
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

/// Where features are collected: each distinct index once, text and meta apart. Distinct
/// indices are found with a small open-addressing set, not by sorting: sorting the few
/// thousand indices of a message was a tenth of the plugin's time.
struct Sink {
    indices: Vec<u32>,
    meta: Vec<u32>,
    in_meta: bool,
    /// Slots of the set: 0 is empty, else `1 + index + (meta << BITS)`.
    seen: Vec<u32>,
}

impl Sink {
    fn new() -> Sink {
        Sink {
            indices: Vec::with_capacity(4096),
            meta: Vec::with_capacity(64),
            in_meta: true,
            seen: vec![0; 1 << 11],
        }
    }

    fn add(&mut self, parts: &[&[u8]]) {
        self.add_hash(fnv(parts));
    }

    fn add_hash(&mut self, h: u64) {
        let i = (h >> (64 - BITS)) as u32;
        let key = 1 + i + (u32::from(self.in_meta) << BITS);
        if !self.insert(key) {
            return;
        }
        if self.in_meta {
            self.meta.push(i);
        } else {
            self.indices.push(i);
        }
    }

    /// Adds `key` to the set; false when it was there.
    fn insert(&mut self, key: u32) -> bool {
        if 2 * (self.indices.len() + self.meta.len() + 1) > self.seen.len() {
            let grown = vec![0; self.seen.len() * 2];
            let old = std::mem::replace(&mut self.seen, grown);
            for k in old.into_iter().filter(|&k| k != 0) {
                self.place(k);
            }
        }
        self.place(key)
    }

    fn place(&mut self, key: u32) -> bool {
        let mask = self.seen.len() - 1;
        let mut slot = (key.wrapping_mul(0x9e37_79b1) as usize) & mask;
        loop {
            match self.seen[slot] {
                0 => {
                    self.seen[slot] = key;
                    return true;
                }
                k if k == key => return false,
                _ => slot = (slot + 1) & mask,
            }
        }
    }
}

/// ASCII bytes that continue a word: letters, digits and the joiners other than `!` and `%`
/// (which end a word and are words of their own).
const WORD_BYTE: [bool; 128] = {
    let mut t = [false; 128];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'$' | b'\'' | b'-' | b'.');
        b += 1;
    }
    t
};

/// One FNV-1a step.
fn fnv_byte(h: u64, b: u8) -> u64 {
    (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
}

/// Hashes the words of a text as it reads them, with no copy of the words: a word is a run of
/// letters, digits and the joiners `$ ' - . ! %`, lower-cased, with `' - .` trimmed from its
/// ends. `!` and `%` end a word (which keeps them) and are words of their own. Words of 2 to 24
/// characters count; longer runs (encoded junk) become a length class, `#long0`..`#long8`.
/// Each word's hash is `fnv_part(seed, word)`.
struct WordHasher {
    seed: u64,
    max: usize,
    out: Vec<u64>,
    /// The hash so far of the current word, its length in characters, and the trimmable
    /// characters (`' - .`) read since its last other character: they count only if more of
    /// the word follows.
    h: u64,
    chars: usize,
    pending: Vec<u8>,
}

impl WordHasher {
    fn new(seed: u64, max: usize, capacity: usize) -> WordHasher {
        WordHasher {
            seed,
            max,
            out: Vec::with_capacity(capacity.min(max)),
            h: seed,
            chars: 0,
            pending: Vec::new(),
        }
    }

    fn full(&self) -> bool {
        self.out.len() >= self.max
    }

    /// Adds one lower-cased character (its UTF-8 bytes) to the current word.
    fn push(&mut self, bytes: &[u8]) {
        if let [b'\'' | b'-' | b'.'] = bytes {
            if self.chars > 0 {
                self.pending.push(bytes[0]);
            }
            return;
        }
        for &p in &self.pending {
            self.h = fnv_byte(self.h, p);
        }
        self.chars += self.pending.len() + 1;
        self.pending.clear();
        for &b in bytes {
            self.h = fnv_byte(self.h, b);
        }
    }

    /// Ends the current word.
    fn end(&mut self) {
        let n = self.chars;
        if (2..=24).contains(&n) {
            self.emit(fnv_byte(self.h, 0xff));
        } else if n > 24 {
            let class = [b'#', b'l', b'o', b'n', b'g', b'0' + (n / 8).min(8) as u8];
            self.emit(fnv_part(self.seed, &class));
        }
        self.h = self.seed;
        self.chars = 0;
        self.pending.clear();
    }

    fn emit(&mut self, h: u64) {
        if !self.full() {
            self.out.push(h);
        }
    }
}

/// The hashes (see [`WordHasher`]) of the first `max` words of `text` (the body uses at most
/// 3000: stopping there keeps long messages cheap and changes no feature).
fn words(text: &str, seed: u64, max: usize) -> Vec<u64> {
    let mut w = WordHasher::new(seed, max, text.len() / 5);
    let bytes = text.as_bytes();
    let mut at = 0;
    while at < bytes.len() && !w.full() {
        let b = bytes[at];
        if b < 0x80 {
            at += 1;
            if WORD_BYTE[usize::from(b)] {
                let c = b.to_ascii_lowercase();
                // The common case, a letter or digit after no trimmable character, inline.
                if c.is_ascii_alphanumeric() && w.pending.is_empty() {
                    w.h = fnv_byte(w.h, c);
                    w.chars += 1;
                } else {
                    w.push(&[c]);
                }
            } else if b == b'!' || b == b'%' {
                w.push(&[b]);
                w.end();
                w.emit(fnv_part(seed, &[b]));
            } else {
                w.end();
            }
            continue;
        }
        let c = text[at..]
            .chars()
            .next()
            .unwrap_or(char::REPLACEMENT_CHARACTER);
        at += c.len_utf8();
        if c.is_alphanumeric() {
            let mut utf8 = [0; 4];
            for l in c.to_lowercase() {
                w.push(l.encode_utf8(&mut utf8).as_bytes());
            }
        } else {
            w.end();
        }
    }
    w.end();
    w.out
}

/// Unigrams and orthogonal sparse bigrams (pairs up to 2 words apart, with their distance;
/// wider windows measured no better on the corpus) of words hashed by [`words`]: a pair's
/// feature is the two words' hashes and the distance, mixed.
fn osb(sink: &mut Sink, hashes: &[u64]) {
    for (i, &hw) in hashes.iter().enumerate() {
        sink.add_hash(hw);
        if i >= 1 {
            sink.add_hash(pair(hashes[i - 1], hw, 1));
        }
        if i >= 2 {
            sink.add_hash(pair(hashes[i - 2], hw, 2));
        }
    }
}

/// The feature of words hashed `first` and `second`, `distance` apart: the order matters,
/// and the finaliser of splitmix64 spreads the mix to the high bits that pick the bucket.
fn pair(first: u64, second: u64, distance: u64) -> u64 {
    let mut z = first ^ second.rotate_left(23) ^ distance.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
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
    let bytes = text.as_bytes();
    let mut count = 0;
    let mut at = 0;
    // One pass for both schemes, in any case, from each `://` (rarer in text than `h`; no
    // lower-cased copy of the text). Found by its colon, one byte compared per position.
    while let Some(i) = bytes[at..].iter().position(|&c| c == b':') {
        let colon = at + i;
        at = colon + 1;
        if bytes.get(colon + 1..colon + 3) != Some(b"//".as_slice()) {
            continue;
        }
        at = colon + 3;
        let before = &bytes[..colon];
        let is_scheme = |scheme: &[u8]| {
            before.len() >= scheme.len()
                && before[before.len() - scheme.len()..].eq_ignore_ascii_case(scheme)
        };
        if !is_scheme(b"http") && !is_scheme(b"https") {
            continue;
        }
        let host_len = bytes[at..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-'))
            .count();
        let host = bytes[at..at + host_len].to_ascii_lowercase();
        count += 1;
        if count > 200 {
            return count;
        }
        let labels: Vec<&[u8]> = host
            .split(|&c| c == b'.')
            .filter(|l| !l.is_empty())
            .collect();
        if !labels.is_empty() && labels.iter().all(|l| l.iter().all(u8::is_ascii_digit)) {
            sink.add(&[b"url", b"ip-literal"]);
            continue;
        }
        for k in 2..=labels.len().min(3) {
            let d = labels[labels.len() - k..].join(&b'.');
            sink.add(&[b"url", &d]);
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

/// How much of a message [`extract`] reads: its first 16 KiB.
pub const SCAN_BYTES: usize = 16 << 10;

/// The features of a raw message (CRLF or LF line endings) with no knowledge of the site: no
/// hop is the site's, so the message has no border and every hop is the sender's.
pub fn extract(raw: &[u8]) -> Features {
    extract_with(raw, &Trust::default())
}

/// Hops read from the top of a message: more is a mail loop, and the border is near the top.
const MAX_HOPS: usize = 24;

/// The last two labels of a host name (`mail.example.org` → `example.org`).
fn domain_of(host: &str) -> &str {
    let mut dots = host.rmatch_indices('.');
    match (dots.next(), dots.next()) {
        (Some(_), Some((i, _))) => &host[i + 1..],
        _ => host,
    }
}

/// Features of what the message carried at the border (see [`crate::trust`]): the border
/// client's network and HELO name, and the relays before it.
fn border_features(sink: &mut Sink, evidence: &Evidence) {
    match &evidence.border {
        None => sink.add(&[b"border", b"none"]),
        Some(client) => {
            match client.ip {
                Some(IpAddr::V4(ip)) => {
                    let o = ip.octets();
                    sink.add(&[b"bip16", &o[..2]]);
                    sink.add(&[b"bip24", &o[..3]]);
                }
                Some(IpAddr::V6(ip)) => {
                    let o = ip.octets();
                    sink.add(&[b"bip32", &o[..4]]);
                    sink.add(&[b"bip48", &o[..6]]);
                }
                None => sink.add(&[b"bip", b"none"]),
            }
            let helo = client.helo.as_str();
            let literal = helo.starts_with('[') || helo.parse::<IpAddr>().is_ok();
            if literal {
                sink.add(&[b"bhelo", b"literal"]);
            } else if !helo.contains('.') {
                sink.add(&[b"bhelo", b"nodot"]);
            } else {
                sink.add(&[b"bhelo-dom", domain_of(helo).as_bytes()]);
            }
            sink.add(&[b"bhelo-shape", shape(helo).as_bytes()]);
        }
    }
    sink.add(&[b"hops", bucket(evidence.before.len())]);
    for hop in evidence.before.iter().take(8) {
        sink.add(&[b"hop-by", domain_of(&hop.by).as_bytes()]);
        if !hop.software.is_empty() && hop.software.len() <= 24 {
            sink.add(&[b"hop-sw", hop.software.as_bytes()]);
        }
        sink.add(&[b"hop-with", hop.with.as_bytes()]);
        let class: &[u8] = match hop.ip {
            None => b"none",
            Some(ip) if ip.is_loopback() => b"loopback",
            Some(IpAddr::V4(v4)) if v4.is_private() => b"private",
            Some(_) => b"public",
        };
        sink.add(&[b"hop-ip", class]);
    }
}

/// A parsed message's `Received` hops, top first.
fn hops_of(msg: &mail_parser::Message<'_>) -> Vec<Hop> {
    msg.headers()
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case("received"))
        .take(MAX_HOPS)
        .filter_map(|h| {
            let v = msg
                .raw_message()
                .get(h.offset_start as usize..h.offset_end as usize)?;
            Some(parse_hop(&String::from_utf8_lossy(v)))
        })
        .collect()
}

/// A raw message's `Received` hops, top first (empty when it does not parse).
pub fn received_hops(raw: &[u8]) -> Vec<Hop> {
    let raw = &raw[..raw.len().min(SCAN_BYTES)];
    MessageParser::new()
        .parse_headers(raw)
        .map(|m| hops_of(&m))
        .unwrap_or_default()
}

/// The parser [`extract_with`] reads a message with. Only the headers it reads are parsed into
/// values; the rest (Received above all, whose full parse was the largest cost of reading a
/// message) are kept raw.
pub fn parser() -> MessageParser {
    MessageParser::new()
        .with_mime_headers()
        .header_text(HeaderName::Subject)
        .header_date(HeaderName::Date)
        .header_id(HeaderName::MessageId)
}

/// The features of a raw message (CRLF or LF line endings), its border found by `trust`.
pub fn extract_with(raw: &[u8], trust: &Trust) -> Features {
    // Only the start of a message is read: what decides is near the top, and the cost of
    // parsing, decoding and scanning grows with every byte (a 100 KB message cost seven times
    // a 5 KB one before this cut). A multipart message cut short parses like one whose last
    // part has no closing boundary.
    let raw = &raw[..raw.len().min(SCAN_BYTES)];
    let mut sink = Sink::new();
    let mut facts = Vec::new();
    sink.add(&[b"bias"]);
    let Some(msg) = parser().parse(raw) else {
        facts.push("UNPARSEABLE");
        return Features {
            indices: sink.indices,
            meta: sink.meta,
            facts,
        };
    };

    // The trust path.
    border_features(&mut sink, &trust.evidence(&hops_of(&msg)));

    // Headers the sender and mailing lists wrote.
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
        // Without the leading space and the line ending the raw value carries: `From`'s
        // address and domain must read the same in a mailbox (LF) as over SMTP (CRLF).
        let raw_value = msg
            .header_raw(h.name())
            .map(|v| v.trim().to_string())
            .unwrap_or_default();
        let value = match name.as_str() {
            "subject" => msg.subject().map(str::to_string).unwrap_or(raw_value),
            _ => raw_value,
        };
        let seed = if name == "subject" {
            fnv_part(FNV_BASIS, b"s:")
        } else {
            fnv_part(FNV_BASIS, name.as_bytes())
        };
        let hashes = words(&value, seed, usize::MAX);
        // The sender's address: the shape of its local part (`a9a9` for random ones), its
        // top-level domain, and whether it has a display name.
        if name == "from" {
            let addr = value
                .rsplit('<')
                .next()
                .unwrap_or("")
                .trim_end_matches(['>', ' ']);
            if let Some((local, domain)) = addr.rsplit_once('@') {
                sink.add(&[b"from-local", shape(local).as_bytes()]);
                let tld = domain.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
                sink.add(&[b"from-tld", tld.as_bytes()]);
                let name = value.split('<').next().unwrap_or("").trim();
                sink.add(&[
                    b"from-has-name",
                    if name.is_empty() { b"no" } else { b"yes" },
                ]);
                // A display name that is itself an address (`"gholy_45@hotmail.com"
                // <xx@xx.cc>`): the same one, another at the same domain, or a different one.
                let shown = name.trim_matches(['"', '\'', ' ']).to_ascii_lowercase();
                if let Some((_, shown_domain)) = shown.rsplit_once('@') {
                    let domain = domain.to_ascii_lowercase();
                    let kind: &[u8] = if shown == addr.to_ascii_lowercase() {
                        b"same"
                    } else if domain_of(shown_domain) == domain_of(&domain) {
                        b"same-domain"
                    } else {
                        b"other"
                    };
                    sink.add(&[b"from-name-address", kind]);
                }
            }
        }
        if name == "subject" {
            osb(&mut sink, &hashes);
        } else {
            for h in hashes {
                sink.add_hash(h);
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
    sink.in_meta = false;
    let mut text_len = 0;
    let mut url_count = 0;
    for i in 0..msg.text_body_count().min(8) {
        if let Some(t) = msg.body_text(i) {
            text_len += t.len();
            let hashes = words(&t, fnv_part(FNV_BASIS, b"b:"), BODY_TOKENS);
            osb(&mut sink, &hashes);
            url_count += urls(&mut sink, &t);
        }
    }
    let html_parts = msg.html_body_count();
    // A part without a Content-Type field is text/plain (RFC 2045, 5.2).
    let has_plain = msg
        .text_bodies()
        .any(|p| p.content_type().is_none() || p.is_content_type("text", "plain"));
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
            // Beside a plain-text alternative, the HTML's words are read nowhere else (the
            // text bodies hold the plain part), and the HTML is where a sender puts what the
            // plain part does not say ("your mail program cannot show this message", then
            // the offer). They are a family of unigrams of their own: sharing the plain
            // part's words, or adding sparse bigrams, measured worse.
            if has_plain {
                let text = mail_parser::decoders::html::html_to_text(&h);
                for w in words(&text, fnv_part(FNV_BASIS, b"h:"), BODY_TOKENS) {
                    sink.add_hash(w);
                }
            }
        }
    }
    if html_parts > 0 && !has_plain {
        facts.push("HTML_ONLY");
    }
    if url_count >= 10 {
        facts.push("MANY_URLS");
    }
    sink.in_meta = true;
    sink.add(&[b"urls", bucket(url_count)]);
    sink.add(&[b"attachments", bucket(msg.attachment_count())]);
    sink.add(&[b"textlen", bucket(text_len / 512)]);
    for f in &facts {
        sink.add(&[b"fact", f.as_bytes()]);
    }

    Features {
        indices: sink.indices,
        meta: sink.meta,
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
    fn words_are_lower_cased_trimmed_and_bounded() {
        let seed = fnv_part(FNV_BASIS, b"b:");
        let w = |t: &[u8]| fnv_part(seed, t);
        let text = "Hello, --World-- a.b.. I x FREE! 50% Grüße --.-- Ünïcode ";
        let long = "z".repeat(30);
        let got = words(&format!("{text}{long}"), seed, usize::MAX);
        let want = vec![
            w(b"hello"),
            w(b"world"),
            w(b"a.b"),
            w(b"free!"),
            w(b"!"),
            w(b"50%"),
            w(b"%"),
            w("grüße".as_bytes()),
            w("ünïcode".as_bytes()),
            w(b"#long3"),
        ];
        assert_eq!(got, want);
        assert_eq!(words(text, seed, 3), want[..3]);
    }

    /// Any bytes at all: no panic (in the plugin a panic is a trap, and the message is then
    /// judged by the operator's failure policy instead of the filter), and every index in range.
    #[test]
    fn arbitrary_bytes_are_safe() {
        let pieces: [&[u8]; 12] = [
            b"Subject: ",
            b"From: \"N\" <a9@x.ru>\r\n",
            b"\r\n\r\n",
            b"Content-Type: multipart/alternative; boundary=b\r\n",
            b"--b\r\nContent-Type: text/html\r\n\r\n<a href=http://1.2.3.4/>",
            "Grüße ünïcode".as_bytes(),
            b"HTTP://X.example.COM/p?q https://",
            b"free!!! 50% $$$ -- ..'' ",
            &[0xff, 0xfe, 0xc3, 0x28, 0xe2, 0x82],
            b"=?utf-8?b?w6k=?= =?iso-8859-1?q?=E9?=",
            b"Content-Transfer-Encoding: base64\r\n\r\nw6nDqQ==\r\n",
            b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa ",
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..3000 {
            let mut raw = Vec::new();
            for _ in 0..(state % 24) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                raw.extend_from_slice(pieces[(state % 12) as usize]);
                if state.is_multiple_of(5) {
                    raw.push((state >> 20) as u8);
                }
            }
            let f = extract(&raw);
            assert!(f.indices.iter().chain(&f.meta).all(|&i| i < 1 << BITS));
        }
    }

    #[test]
    fn urls_are_found_by_scheme_in_any_case_and_counted() {
        let mut sink = Sink::new();
        let text = "see http://Mail.Example.COM/x, HTTPS://a.b.example.org and ftp://no.example \
                    or mailto:x@y or a: //gap, https://10.0.0.1/ and a trailing http:/";
        assert_eq!(urls(&mut sink, text), 3);
        let mut want = Sink::new();
        for d in [
            "example.com",
            "mail.example.com",
            "example.org",
            "b.example.org",
        ] {
            want.add(&[b"url", d.as_bytes()]);
        }
        want.add(&[b"url", b"ip-literal"]);
        let (mut got, mut expected) = (sink.meta.clone(), want.meta.clone());
        got.sort_unstable();
        expected.sort_unstable();
        assert_eq!(got, expected);
    }

    /// A message read from a mailbox (LF) and the same message over SMTP (CRLF) have the same
    /// features: the model is trained on the one and judges the other.
    #[test]
    fn line_endings_do_not_change_the_features() {
        let lf = "From: \"Jo\" <jo@example.org>\nReply-To: jo@example.org\nSubject: Lunch\nX-Mailer: Mutt\n\nSee you at noon.\n";
        let crlf = lf.replace('\n', "\r\n");
        let sorted = |raw: &str| {
            let f = extract(raw.as_bytes());
            let (mut t, mut m) = (f.indices, f.meta);
            t.sort_unstable();
            m.sort_unstable();
            (t, m)
        };
        assert_eq!(sorted(lf), sorted(&crlf));
    }

    /// A message without a Content-Type field is plain text (RFC 2045), so not `HTML_ONLY`.
    #[test]
    fn a_message_without_content_type_is_plain_text() {
        let m = b"From: a@example.org\r\nSubject: Lunch\r\n\r\nSee you at noon.\r\n";
        assert!(!extract(m).facts.contains(&"HTML_ONLY"));
    }

    /// The words of an HTML part are read beside a plain-text alternative, as their own
    /// family; an HTML-only message's words are the body's words, read once.
    #[test]
    fn the_html_alternative_s_words_are_features() {
        let html_word = |w: &str| {
            let h = words(w, fnv_part(FNV_BASIS, b"h:"), 1)[0];
            (h >> (64 - BITS)) as u32
        };
        let alternative = b"From: a@example.org\r\nSubject: hi\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/alternative; boundary=\"b\"\r\n\r\n--b\r\n\
Content-Type: text/plain\r\n\r\nYour mail program cannot show this message.\r\n--b\r\n\
Content-Type: text/html\r\n\r\n<p>Claim your <b>jackpot</b> today</p>\r\n--b--\r\n";
        let f = extract(alternative);
        assert!(f.indices.contains(&html_word("jackpot")));
        assert!(f.indices.contains(&html_word("claim")));
        assert!(!f.indices.contains(&html_word("program")));
        let html_only = b"From: a@example.org\r\nSubject: hi\r\nContent-Type: text/html\r\n\r\n\
<p>Claim your <b>jackpot</b> today</p>\r\n";
        let f = extract(html_only);
        assert!(!f.indices.contains(&html_word("jackpot")));
        assert!(f.facts.contains(&"HTML_ONLY"));
    }

    /// A display name that is an address is told apart from the address it stands for.
    #[test]
    fn a_from_display_name_that_is_an_address_is_a_feature() {
        let with = |from: &str| {
            let raw = format!("From: {from}\r\nSubject: hi\r\n\r\nhello\r\n");
            let mut meta = extract(raw.as_bytes()).meta;
            meta.sort_unstable();
            meta
        };
        let mut kinds = Vec::new();
        for kind in [&b"same"[..], b"same-domain", b"other"] {
            let mut sink = Sink::new();
            sink.add(&[b"from-name-address", kind]);
            kinds.push(sink.meta[0]);
        }
        let has = |meta: &[u32], k: usize| meta.binary_search(&kinds[k]).is_ok();
        let other = with("\"gholy_45@hotmail.com\" <xx@xx.cc>");
        assert!(has(&other, 2) && !has(&other, 0) && !has(&other, 1));
        let same = with("\"Jo@Example.org\" <jo@example.org>");
        assert!(has(&same, 0) && !has(&same, 2));
        let domain = with("\"sales@mail.example.org\" <jo@example.org>");
        assert!(has(&domain, 1) && !has(&domain, 2));
        let plain = with("Jo Bloggs <jo@example.org>");
        assert!((0..3).all(|k| !has(&plain, k)));
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
