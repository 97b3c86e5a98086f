//! How much of spam-score's feature extraction is the MIME parse and decode that the host's
//! message view (WIT 0.1.3) could do instead: over a folder of messages, the time of the whole
//! `extract_with` against the time of mail-parser's parse plus the decoded text and HTML
//! bodies it reads, both on the same first 16 KB of each message.
//!
//! `cargo run --release -p sluice-spam --example parse-share -- DIR...`

use std::hint::black_box;
use std::time::{Duration, Instant};

use sluice_spam::features::{SCAN_BYTES, extract_with, parser};
use sluice_spam::trust::Trust;

/// The parse and decode that `extract_with` does, and nothing else.
fn parse_and_decode(raw: &[u8]) -> usize {
    let Some(msg) = parser().parse(raw) else {
        return 0;
    };
    let mut n = 0;
    for i in 0..msg.text_body_count().min(8) {
        n += msg.body_text(i).map_or(0, |t| t.len());
    }
    for i in 0..msg.html_body_count().min(4) {
        n += msg.body_html(i).map_or(0, |t| t.len());
    }
    n
}

fn main() {
    let dirs: Vec<String> = std::env::args().skip(1).collect();
    assert!(!dirs.is_empty(), "usage: parse-share DIR...");
    let mut raws = Vec::new();
    for d in &dirs {
        for f in sluice_spam::files::message_files(std::path::Path::new(d)).expect("a folder") {
            let mut raw = std::fs::read(&f).expect("readable");
            raw.truncate(SCAN_BYTES);
            raws.push(raw);
        }
    }
    let trust = Trust::default();
    let (mut whole, mut parse) = (Duration::MAX, Duration::MAX);
    // The best of five rounds of each, interleaved.
    for _ in 0..5 {
        let t = Instant::now();
        for r in &raws {
            black_box(extract_with(r, &trust));
        }
        whole = whole.min(t.elapsed());
        let t = Instant::now();
        for r in &raws {
            black_box(parse_and_decode(r));
        }
        parse = parse.min(t.elapsed());
    }
    let n = raws.len() as f64;
    println!(
        "{} messages: extract_with {:.1} us/message, parse and decode {:.1} us/message ({:.0} % of it)",
        raws.len(),
        whole.as_secs_f64() * 1e6 / n,
        parse.as_secs_f64() * 1e6 / n,
        100.0 * parse.as_secs_f64() / whole.as_secs_f64()
    );
}
