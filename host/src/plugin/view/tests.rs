//! The parsed view on ordinary, crafted hostile and real mail.

use super::*;

/// A multipart/mixed message: a plain and an HTML alternative (the HTML's link in base64), and
/// a PDF with an RFC 2231 file name (`tests/fixtures/mixed.eml`, the integration tests' too).
fn mixed() -> String {
    include_str!("../../../../tests/fixtures/mixed.eml").replace('\n', "\r\n")
}

/// A plugin that read the readable text and the links.
const EVERYTHING: Reads = Reads {
    body_text: true,
    links: true,
};

#[test]
fn the_parts_tree_text_attachments_links_and_summary() {
    let p = ParsedMessage::parse(mixed().as_bytes());
    let types: Vec<(&str, u32, Option<u32>)> = p
        .parts
        .iter()
        .map(|i| (i.content_type.as_str(), i.depth, i.parent))
        .collect();
    assert_eq!(
        types,
        [
            ("multipart/mixed", 0, None),
            ("multipart/alternative", 1, Some(0)),
            ("text/plain", 2, Some(1)),
            ("text/html", 2, Some(1)),
            ("application/pdf", 1, Some(0)),
        ]
    );
    assert_eq!(p.parts[2].charset.as_deref(), Some("utf-8"));
    assert_eq!(p.parts[3].transfer_encoding.as_deref(), Some("base64"));
    assert_eq!(p.text(2), Some("Pay at www.example.org today."));
    assert_eq!(
        p.text(3),
        Some("<p>Pay <a href=\"https://shop.example.co.uk/pay\">here</a></p>")
    );
    assert_eq!(p.visible_text(3).unwrap().trim(), "Pay here");
    assert_eq!(p.text(4), None, "a PDF is not text");

    assert_eq!(p.attachments().len(), 1);
    let pdf = &p.attachments()[0];
    assert_eq!(pdf.part, 4);
    assert_eq!(pdf.name.as_deref(), Some("Rechnung über.pdf"));
    assert_eq!(pdf.declared_type, "application/pdf");
    assert_eq!(pdf.sniffed_type.as_deref(), Some("application/pdf"));
    assert_eq!(pdf.size, 15);
    assert_eq!(
        pdf.sha256,
        hex::encode(Sha256::digest(b"%PDF-1.4\n%\xc7\xec\x8f\xa2\n"))
    );
    assert_eq!(p.bytes(4).unwrap(), b"%PDF-1.4\n%\xc7\xec\x8f\xa2\n");

    let links: Vec<(&str, &str, Option<&str>, u32)> = p
        .links()
        .iter()
        .map(|l| {
            (
                l.url.as_str(),
                l.host.as_str(),
                l.registrable_domain.as_deref(),
                l.part,
            )
        })
        .collect();
    assert_eq!(
        links,
        [
            ("www.example.org", "www.example.org", Some("example.org"), 2),
            (
                "https://shop.example.co.uk/pay",
                "shop.example.co.uk",
                Some("example.co.uk"),
                3
            ),
        ],
        "the base64 HTML part's link is found, and its registrable domain is not co.uk"
    );

    assert_eq!(p.summary.subject.as_deref(), Some("Rechnung über 5 EUR"));
    assert_eq!(p.summary.from[0].name.as_deref(), Some("Jürgen"));
    assert_eq!(
        p.summary.from[0].address.as_deref(),
        Some("jurgen@example.de")
    );
    let to: Vec<Option<&str>> = p.summary.to.iter().map(|m| m.address.as_deref()).collect();
    assert_eq!(to, [Some("bob@example.org"), Some("carol@example.org")]);
    assert_eq!(p.summary.date, Some(1_796_032_800_000));
    assert!(
        p.body_text().contains("Pay at www.example.org today."),
        "{:?}",
        p.body_text()
    );
    assert!(!p.body_text().contains("<a href"), "{:?}", p.body_text());
    assert!(p.limits_hit(EVERYTHING).is_empty());
}

#[test]
fn raw_offsets_point_at_each_part() {
    let m = mixed();
    let p = ParsedMessage::parse(m.as_bytes());
    let pdf = &p.parts[4];
    let raw = slice(m.as_bytes(), pdf.raw_offset, pdf.raw_length as u32);
    let raw = std::str::from_utf8(raw).unwrap();
    assert!(raw.starts_with("Content-Type: application/pdf"), "{raw:?}");
    assert!(raw.contains("JVBERi0xLjQKJcfsj6IK"), "{raw:?}");
    assert_eq!(slice(b"abc", 1, 10), b"bc");
    assert_eq!(slice(b"abc", 9, 10), b"");
}

#[test]
fn the_view_is_parsed_once_and_only_when_asked() {
    let view = MessageView::new(crate::plugin::bindings::types::Message {
        headers: Vec::new(),
        raw: mixed().into_bytes(),
    });
    assert!(view.parsed.get().is_none());
    let first: *const ParsedMessage = view.parsed();
    assert!(view.parsed.get().is_some());
    assert!(std::ptr::eq(first, view.parsed()));
    // What not every plugin asks for is made on first use, once.
    let p = view.parsed();
    assert!(p.links.get().is_none() && p.attachments.get().is_none());
    assert!(p.body_text.get().is_none());
    let links: *const [LinkInfo] = p.links();
    assert!(std::ptr::eq(links, p.links()));
    assert!(
        p.attachments.get().is_none(),
        "links do not digest attachments"
    );
}

/// A message of `depth` multiparts, each inside the last.
fn nested(depth: usize) -> Vec<u8> {
    let mut m = String::from("Subject: deep\r\n");
    for i in 0..depth {
        m.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
        ));
    }
    m.push_str("Content-Type: text/plain\r\n\r\nbottom\r\n");
    for i in (0..depth).rev() {
        m.push_str(&format!("--b{i}--\r\n"));
    }
    m.into_bytes()
}

#[test]
fn deep_nesting_is_cut_at_the_depth_bound() {
    let p = ParsedMessage::parse(&nested(500));
    assert!(
        p.limits_hit(EVERYTHING).contains(&"depth"),
        "{:?}",
        p.limits_hit(EVERYTHING)
    );
    assert!(p.parts.iter().all(|i| i.depth <= MAX_DEPTH));
    assert!(p.parts.len() <= MAX_DEPTH as usize + 1);
    let shallow = ParsedMessage::parse(&nested(5));
    assert!(
        shallow.limits_hit(EVERYTHING).is_empty(),
        "{:?}",
        shallow.limits_hit(EVERYTHING)
    );
    assert_eq!(shallow.parts.last().unwrap().content_type, "text/plain");
}

#[test]
fn ten_thousand_parts_are_cut_at_the_parts_bound() {
    let mut m = String::from("Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n");
    for i in 0..10_000 {
        m.push_str(&format!("--b\r\nContent-Type: text/plain\r\n\r\nhttp://h{i}.example.com/ http://k{i}.example.net/\r\n"));
    }
    m.push_str("--b--\r\n");
    let p = ParsedMessage::parse(m.as_bytes());
    assert_eq!(p.parts.len(), MAX_PARTS);
    // A plugin that read only the parts tree learns of the parts bound, and asking neither
    // scans the text for links nor joins it.
    assert_eq!(p.limits_hit(Reads::default()), ["parts"]);
    assert!(p.links.get().is_none() && p.body_text.get().is_none());
    assert!(
        p.limits_hit(EVERYTHING).contains(&"parts"),
        "{:?}",
        p.limits_hit(EVERYTHING)
    );
    assert_eq!(p.links().len(), MAX_LINKS);
    assert!(
        p.limits_hit(EVERYTHING).contains(&"links"),
        "{:?}",
        p.limits_hit(EVERYTHING)
    );
}

#[test]
fn a_malformed_boundary_leaves_one_readable_part() {
    for ct in [
        "multipart/mixed; boundary=\"never-seen\"",
        "multipart/mixed; boundary=\"\"",
        "multipart/mixed",
    ] {
        let m = format!(
            "Content-Type: {ct}\r\n\r\n--other\r\nContent-Type: text/plain\r\n\r\nhi http://x.example.com/\r\n--other--\r\n"
        );
        let p = ParsedMessage::parse(m.as_bytes());
        assert!(!p.parts.is_empty(), "{ct}");
        assert!(p.parts.len() <= 3, "{ct}: {:?}", p.parts);
    }
}

#[test]
fn a_one_megabyte_encoded_word_is_decoded_and_cut() {
    let word = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        "ä".repeat(512 * 1024),
    );
    let m = format!("Subject: =?utf-8?b?{word}?=\r\n\r\nbody\r\n");
    let p = ParsedMessage::parse(m.as_bytes());
    let subject = p.summary.subject.unwrap();
    assert!(subject.len() <= MAX_FIELD_BYTES, "{}", subject.len());
    assert!(subject.starts_with("ää"), "{}", &subject[..10]);
}

#[test]
fn a_base64_part_that_never_ends_is_bounded() {
    let mut m = String::from(
        "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    );
    let line = "aHR0cDovL2xvbmcuZXhhbXBsZS5jb20vIGFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFh\r\n";
    while m.len() < 3 << 20 {
        m.push_str(line);
    }
    let p = ParsedMessage::parse(m.as_bytes());
    let text = p.text(1).expect("the text part");
    assert!(text.len() <= MAX_TEXT_BYTES);
    assert!(
        p.limits_hit(EVERYTHING).contains(&"text"),
        "{:?}",
        p.limits_hit(EVERYTHING)
    );
    assert!(p.body_text().len() <= MAX_TEXT_BYTES);
}

#[test]
fn not_a_message_at_all() {
    for raw in [&b""[..], b"\0\0\0", b"\r\n\r\n", b"no header line at all"] {
        let p = ParsedMessage::parse(raw);
        assert!(p.attachments().is_empty());
        assert!(p.links().is_empty());
    }
}

/// Every message of the shared corpus parses (no panic), within the bounds; the corpus, real
/// mail, has links and attachments the view finds.
#[test]
fn the_shared_corpus_parses_within_bounds() {
    let root =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/spamassassin");
    let mut files = Vec::new();
    for class in ["ham", "spam"] {
        let Ok(dir) = std::fs::read_dir(root.join(class)) else {
            continue;
        };
        files.extend(dir.flatten().map(|e| e.path()));
    }
    assert!(
        files.len() > 1000,
        "the corpus is beside the project: {}",
        root.display()
    );
    let (mut with_links, mut with_attachments) = (0, 0);
    for f in &files {
        let raw = std::fs::read(f).unwrap();
        let p = ParsedMessage::parse(&raw);
        assert!(
            p.parts.len() <= MAX_PARTS && p.links().len() <= MAX_LINKS,
            "{}",
            f.display()
        );
        assert!(p.body_text().len() <= MAX_TEXT_BYTES, "{}", f.display());
        for l in p.links() {
            assert!(
                !l.host.is_empty() && l.host == l.host.to_ascii_lowercase(),
                "{}: {l:?}",
                f.display()
            );
        }
        with_links += usize::from(!p.links().is_empty());
        with_attachments += usize::from(!p.attachments().is_empty());
    }
    assert!(
        with_links > files.len() / 2,
        "{with_links} of {} with links",
        files.len()
    );
    assert!(with_attachments > 10, "{with_attachments} with attachments");
}
