//! The text log format: one line per event, `key=value` pairs (logfmt), which `grep`, `awk`
//! and log shippers read without a parser of their own:
//!
//! ```text
//! ts=2026-12-06T09:14:03.201Z level=info target=sluice::admin::decisions msg=refused event=refused client=192.0.2.7 stage=RCPT reason=relay-denied code=550 enhanced=5.7.1 text="Relaying denied"
//! ```
//!
//! `ts` (UTC, milliseconds), `level`, `target` and `msg` come first, then the event's fields
//! in the order they were given. A value is written bare when it is printable ASCII without
//! spaces, quotes, `=` or backslashes; otherwise it is quoted, with `"` and `\` escaped and
//! control characters written as `\n`, `\r`, `\t` or `\u{…}`: whatever a client or a plugin
//! sent, one event stays one line. (`tracing-subscriber`'s own text format puts the message
//! first and Debug-formats values, which is neither stable nor safe to split on spaces.)

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The logfmt event formatter (see the module documentation).
pub struct Logfmt;

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        writer.write_str(&line(event))
    }
}

/// The line (with its newline) for `event`.
pub fn line(event: &tracing::Event<'_>) -> String {
    let meta = event.metadata();
    let mut fields = Fields::default();
    event.record(&mut fields);
    let mut out = format!(
        "ts={} level={} target={}",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        meta.level().as_str().to_ascii_lowercase(),
        meta.target()
    );
    if let Some(m) = &fields.message {
        let _ = write!(out, " msg={}", value(m));
    }
    out.push_str(&fields.pairs);
    out.push('\n');
    out
}

/// `s` as a logfmt value: bare when it can be, else quoted and escaped.
pub fn value(s: &str) -> String {
    let bare = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'=' | b'\\'));
    if bare {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[derive(Default)]
struct Fields {
    message: Option<String>,
    pairs: String,
}

impl Fields {
    fn push(&mut self, field: &Field, text: &str) {
        if field.name() == "message" {
            self.message = Some(text.to_string());
        } else {
            let _ = write!(self.pairs, " {}={}", field.name(), value(text));
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, v: &str) {
        self.push(field, v);
    }

    fn record_i64(&mut self, field: &Field, v: i64) {
        self.push(field, &v.to_string());
    }

    fn record_u64(&mut self, field: &Field, v: u64) {
        self.push(field, &v.to_string());
    }

    fn record_bool(&mut self, field: &Field, v: bool) {
        self.push(field, if v { "true" } else { "false" });
    }

    fn record_f64(&mut self, field: &Field, v: f64) {
        self.push(field, &v.to_string());
    }

    fn record_error(&mut self, field: &Field, v: &(dyn std::error::Error + 'static)) {
        self.push(field, &v.to_string());
    }

    fn record_debug(&mut self, field: &Field, v: &dyn std::fmt::Debug) {
        self.push(field, &format!("{v:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::value;

    #[test]
    fn values_are_bare_or_quoted_and_never_break_the_line() {
        assert_eq!(value("192.0.2.7"), "192.0.2.7");
        assert_eq!(value("5.7.1"), "5.7.1");
        assert_eq!(value(""), "\"\"");
        assert_eq!(value("Relaying denied"), "\"Relaying denied\"");
        assert_eq!(value("a=b"), "\"a=b\"");
        assert_eq!(
            value("evil\r\nts=0 level=error \"x\"\\"),
            "\"evil\\r\\nts=0 level=error \\\"x\\\"\\\\\""
        );
        assert_eq!(value("bell\u{7}"), "\"bell\\u{7}\"");
        assert_eq!(value("grüße"), "\"grüße\"");
    }
}
