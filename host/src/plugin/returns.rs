//! What a plugin returns is checked before the host acts on it. A plugin's texts end up in
//! SMTP replies, header fields, logs and bounces, so each has a size limit and no control
//! characters that could start a line of its own; names of header fields and symbols are
//! restricted to printable tokens (a symbol name is written into `X-Spam-Status`). A
//! violation is a plugin failure ([`super::CallFailure::BadReturn`]) under the plugin's
//! `on_failure` policy.

use super::bindings::types::{BounceText, MessageVerdict, PluginInfo, Reply, Verdict};
use crate::config::PluginLimits;

/// A symbol name longer than this is refused.
const MAX_SYMBOL_NAME: usize = 64;

/// The longest header field name accepted (RFC 5322 has no limit; a line has 998 bytes).
const MAX_FIELD_NAME: usize = 76;

/// The most bytes the host copies out of a plugin's memory in one lift: the largest return
/// the limits allow (header fields, symbols, texts, a bounce; each list element's own bytes
/// too), or one host call's arguments (a `kv` value of 64 KiB and its key, a log line), with
/// room to spare. Past it the call fails ("too much data is being copied") before more is
/// copied.
pub fn copy_budget(limits: &PluginLimits) -> usize {
    let text = limits.max_text_bytes as usize;
    let per_header = MAX_FIELD_NAME + 2 * 16;
    let per_symbol = MAX_SYMBOL_NAME + text + 32;
    let returns = limits.max_header_bytes as usize
        + 2 * limits.max_headers as usize * per_header
        + limits.max_symbols as usize * per_symbol
        + 4 * text
        + limits.max_bounce_bytes as usize;
    let host_call = super::capabilities::MAX_VALUE_BYTES + 64 * 1024;
    returns.max(host_call) + (256 << 10)
}

/// `text` (called `what`) has no CR, LF, NUL or other control character except tab, and at
/// most `max` bytes.
fn check_text(what: &str, text: &str, max: u32) -> Result<(), String> {
    if text.len() > max as usize {
        return Err(format!(
            "{what} has {} bytes, above the limit of {max} (max_text_bytes)",
            text.len()
        ));
    }
    if let Some(c) = text.chars().find(|&c| c.is_control() && c != '\t') {
        return Err(format!("{what} contains the control character {c:?}"));
    }
    Ok(())
}

/// A header field name: 1 to 76 printable ASCII characters, no colon (RFC 5322 §3.6.8).
fn check_field_name(name: &str) -> Result<(), String> {
    let printable = |b: u8| (33..=126).contains(&b) && b != b':';
    check_name(name, MAX_FIELD_NAME, printable)
        .map_err(|name| format!("header name {name:?} is not a valid field name"))
}

/// A symbol name: 1 to 64 of letters, digits and `_ - . : /` (it is listed in
/// `X-Spam-Status`, comma-separated).
fn check_symbol_name(name: &str) -> Result<(), String> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"_-.:/".contains(&b);
    check_name(name, MAX_SYMBOL_NAME, allowed).map_err(|name| {
        format!("symbol name {name:?} is not 1 to {MAX_SYMBOL_NAME} of letters, digits and _-.:/")
    })
}

/// A name of 1 to `max` bytes, each `allowed`; else the name, shortened for a message.
fn check_name(name: &str, max: usize, allowed: impl Fn(u8) -> bool) -> Result<(), &str> {
    if !name.is_empty() && name.len() <= max && name.bytes().all(allowed) {
        Ok(())
    } else {
        Err(super::truncate(name, 80))
    }
}

/// A reply must be of its verdict's class: 5xx for reject, 4xx for tempfail, with a matching
/// enhanced status code (or none) and one line of text.
fn check_reply(reply: &Reply, class: u16, limits: &PluginLimits) -> Result<(), String> {
    if reply.code / 100 != class || reply.code % 100 > 59 {
        return Err(format!(
            "reply code {} where a {class}xx code is required",
            reply.code
        ));
    }
    if !reply.enhanced.is_empty() {
        let parts: Vec<&str> = reply.enhanced.split('.').collect();
        let well_formed = parts.len() == 3
            && parts[0] == class.to_string()
            && parts[1..]
                .iter()
                .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
        if !well_formed {
            return Err(format!(
                "enhanced status code {:?} is not of the form {class}.x.y",
                super::truncate(&reply.enhanced, 20)
            ));
        }
    }
    check_text("reply text", &reply.text, limits.max_text_bytes)
}

/// A hook's return value, checked against the plugin's limits before the host uses it.
pub trait Checked {
    /// `Err` with what is wrong when the value is out of bounds.
    fn check(&self, _limits: &PluginLimits) -> Result<(), String> {
        Ok(())
    }
}

impl Checked for Verdict {
    fn check(&self, limits: &PluginLimits) -> Result<(), String> {
        verdict(self, limits)
    }
}

impl Checked for MessageVerdict {
    fn check(&self, limits: &PluginLimits) -> Result<(), String> {
        message_verdict(self, limits)
    }
}

impl Checked for Option<BounceText> {
    fn check(&self, limits: &PluginLimits) -> Result<(), String> {
        self.as_ref().map_or(Ok(()), |b| bounce(b, limits))
    }
}

// `describe` and `validate-config` are answered once, at load, where the loader reads them
// (the copy budget bounds their size); `on-delivery` returns nothing.
impl Checked for PluginInfo {}
impl Checked for Result<(), String> {}
impl Checked for () {}

/// Checks a verdict of any hook.
pub fn verdict(v: &Verdict, limits: &PluginLimits) -> Result<(), String> {
    match v {
        Verdict::Reject(r) => check_reply(r, 5, limits),
        Verdict::Tempfail(r) => check_reply(r, 4, limits),
        Verdict::Quarantine(reason) => {
            check_text("quarantine reason", reason, limits.max_text_bytes)
        }
        Verdict::Continue | Verdict::Accept | Verdict::Discard => Ok(()),
    }
}

/// Checks a `check-message` verdict: its decision, header edits and symbols.
pub fn message_verdict(v: &MessageVerdict, limits: &PluginLimits) -> Result<(), String> {
    verdict(&v.verdict, limits)?;
    let max = limits.max_headers as usize;
    if v.add_headers.len() > max || v.remove_headers.len() > max {
        return Err(format!(
            "{} header fields added and {} removed, above the limit of {max} each (max_headers)",
            v.add_headers.len(),
            v.remove_headers.len()
        ));
    }
    let mut bytes = 0usize;
    for h in &v.add_headers {
        check_field_name(&h.name)?;
        if let Some(c) = h.value.chars().find(|&c| c.is_control() && c != '\t') {
            return Err(format!(
                "header {} has the control character {c:?} in its value",
                h.name
            ));
        }
        bytes += h.name.len() + h.value.len();
    }
    if bytes > limits.max_header_bytes as usize {
        return Err(format!(
            "added header fields have {bytes} bytes, above the limit of {} (max_header_bytes)",
            limits.max_header_bytes
        ));
    }
    for name in &v.remove_headers {
        check_field_name(name)?;
    }
    if v.symbols.len() > limits.max_symbols as usize {
        return Err(format!(
            "{} symbols, above the limit of {} (max_symbols)",
            v.symbols.len(),
            limits.max_symbols
        ));
    }
    for s in &v.symbols {
        check_symbol_name(&s.name)?;
        if !s.score.is_finite() {
            return Err(format!(
                "symbol {} has a score that is not a finite number",
                s.name
            ));
        }
        check_text(
            &format!("detail of symbol {}", s.name),
            &s.detail,
            limits.max_text_bytes,
        )?;
    }
    Ok(())
}

/// Checks a rendered bounce: a one-line subject, and parts within `max_bounce_bytes`.
pub fn bounce(b: &BounceText, limits: &PluginLimits) -> Result<(), String> {
    check_text("bounce subject", &b.subject, limits.max_text_bytes)?;
    let size = b.text.len() + b.html.as_ref().map_or(0, String::len);
    if size > limits.max_bounce_bytes as usize {
        return Err(format!(
            "bounce has {size} bytes of text and HTML, above the limit of {} (max_bounce_bytes)",
            limits.max_bounce_bytes
        ));
    }
    if b.text.contains('\0') || b.html.as_ref().is_some_and(|h| h.contains('\0')) {
        return Err("bounce text contains NUL".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::bindings::types::{Header, Symbol};
    use super::*;

    fn reply(code: u16, enhanced: &str) -> Reply {
        Reply {
            code,
            enhanced: enhanced.into(),
            text: "t".into(),
        }
    }

    fn limits() -> PluginLimits {
        PluginLimits::default()
    }

    fn with(f: impl FnOnce(&mut MessageVerdict)) -> Result<(), String> {
        let mut v = MessageVerdict {
            verdict: Verdict::Continue,
            add_headers: Vec::new(),
            remove_headers: Vec::new(),
            symbols: Vec::new(),
        };
        f(&mut v);
        message_verdict(&v, &limits())
    }

    fn symbol(name: &str) -> Symbol {
        Symbol {
            name: name.into(),
            score: 1.0,
            detail: String::new(),
        }
    }

    #[test]
    fn replies_must_match_their_class() {
        let l = limits();
        assert!(verdict(&Verdict::Reject(reply(550, "5.7.1")), &l).is_ok());
        assert!(verdict(&Verdict::Reject(reply(554, "")), &l).is_ok());
        assert!(verdict(&Verdict::Reject(reply(250, "2.0.0")), &l).is_err());
        assert!(verdict(&Verdict::Reject(reply(450, "4.7.1")), &l).is_err());
        assert!(verdict(&Verdict::Reject(reply(550, "4.7.1")), &l).is_err());
        assert!(verdict(&Verdict::Reject(reply(599, "5.7")), &l).is_err());
        assert!(verdict(&Verdict::Reject(reply(5500, "5.7.1")), &l).is_err());
        assert!(verdict(&Verdict::Tempfail(reply(451, "4.3.0")), &l).is_ok());
        assert!(verdict(&Verdict::Tempfail(reply(551, "5.3.0")), &l).is_err());
    }

    #[test]
    fn texts_with_line_breaks_nul_or_over_the_limit_are_refused() {
        let l = limits();
        for bad in ["a\r\nX-Injected: 1", "a\nb", "nul\0", "esc\x1b[2J"] {
            let mut r = reply(550, "5.7.1");
            r.text = bad.into();
            assert!(verdict(&Verdict::Reject(r), &l).is_err(), "{bad:?}");
            assert!(verdict(&Verdict::Quarantine(bad.into()), &l).is_err());
        }
        let mut r = reply(550, "5.7.1");
        r.text = "é".repeat(300);
        let e = verdict(&Verdict::Reject(r), &l).unwrap_err();
        assert!(e.contains("max_text_bytes"), "{e}");
        assert!(verdict(&Verdict::Quarantine("tab\tok".into()), &l).is_ok());
    }

    #[test]
    fn symbol_names_are_tokens_so_x_spam_status_cannot_be_split() {
        assert!(with(|v| v.symbols.push(symbol("BAYES_SPAM"))).is_ok());
        for bad in [
            "A\r\nX-Injected: yes",
            "A,B",
            "A B",
            "",
            &"L".repeat(65),
            "é",
        ] {
            let e = with(|v| v.symbols.push(symbol(bad))).unwrap_err();
            assert!(e.contains("symbol name"), "{bad:?}: {e}");
        }
        let e = with(|v| {
            let mut s = symbol("OK");
            s.detail = "x\ny".into();
            v.symbols.push(s)
        })
        .unwrap_err();
        assert!(e.contains("detail of symbol OK"), "{e}");
    }

    #[test]
    fn header_edits_are_bounded_in_number_and_size() {
        let h = |n: &str, v: &str| Header {
            name: n.into(),
            value: v.into(),
        };
        assert!(with(|v| v.add_headers.push(h("X-Ok", "fine\tvalue"))).is_ok());
        assert!(with(|v| v.add_headers.push(h("X-Bad", "a\rb"))).is_err());
        assert!(with(|v| v.add_headers.push(h("X Bad", "a"))).is_err());
        assert!(with(|v| v.remove_headers.push("Bad:Name".into())).is_err());
        let e = with(|v| v.add_headers = (0..33).map(|i| h(&format!("X-{i}"), "v")).collect())
            .unwrap_err();
        assert!(e.contains("max_headers"), "{e}");
        let e =
            with(|v| v.remove_headers = (0..33).map(|i| format!("X-{i}")).collect()).unwrap_err();
        assert!(e.contains("max_headers"), "{e}");
        let e = with(|v| v.add_headers.push(h("X-Big", &"v".repeat(17_000)))).unwrap_err();
        assert!(e.contains("max_header_bytes"), "{e}");
        let e =
            with(|v| v.symbols = (0..129).map(|i| symbol(&format!("S{i}"))).collect()).unwrap_err();
        assert!(e.contains("max_symbols"), "{e}");
    }

    #[test]
    fn bounces_are_bounded() {
        let l = limits();
        let b = |subject: &str, text: String| BounceText {
            subject: subject.into(),
            text,
            html: None,
        };
        assert!(bounce(&b("Undelivered", "why".into()), &l).is_ok());
        assert!(bounce(&b("a\r\nBcc: x", "why".into()), &l).is_err());
        let e = bounce(&b("s", "x".repeat(300 * 1024)), &l).unwrap_err();
        assert!(e.contains("max_bounce_bytes"), "{e}");
    }
}
