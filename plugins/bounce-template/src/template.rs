//! A deliberately tiny template language: `{{name}}` placeholders and one repeated block,
//! `{{#recipients}}…{{/recipients}}`. Written here rather than with a template crate because
//! bounce texts need nothing more, and a general engine (loops, filters, includes) would add
//! hundreds of kilobytes to a sandboxed plugin and give operators features that can fail at
//! bounce time. Every template is checked at load, so a mistake is a config error, not a
//! broken bounce.

use std::collections::BTreeMap;

/// How placeholder values are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// Plain text: control characters removed (line breaks kept).
    Text,
    /// A header line: every control character, line breaks included, removed.
    Header,
    /// HTML: `& < > " '` escaped too.
    Html,
}

/// The values for one rendering.
#[derive(Debug, Clone, Default)]
pub struct Values {
    /// Message-wide placeholders.
    pub global: BTreeMap<&'static str, String>,
    /// One map per failed recipient, for the `recipients` block.
    pub recipients: Vec<BTreeMap<&'static str, String>>,
}

/// Placeholders allowed outside the block.
pub const GLOBAL: &[&str] = &[
    "reporting_host",
    "queue_id",
    "sender",
    "subject",
    "date",
    "message_id",
    "reason",
    "count",
];

/// Placeholders allowed inside `{{#recipients}}…{{/recipients}}`.
pub const PER_RECIPIENT: &[&str] = &["address", "reply", "status", "remote_host"];

fn escape(v: &str, how: Escape) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match (how, c) {
            (Escape::Text, '\n' | '\t') => out.push(c),
            (Escape::Header, '\t') => out.push(' '),
            (_, c) if c.is_control() => {}
            (Escape::Html, '&') => out.push_str("&amp;"),
            (Escape::Html, '<') => out.push_str("&lt;"),
            (Escape::Html, '>') => out.push_str("&gt;"),
            (Escape::Html, '"') => out.push_str("&quot;"),
            (Escape::Html, '\'') => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn substitute(
    text: &str,
    values: &BTreeMap<&'static str, String>,
    allowed: &[&str],
    how: Escape,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err("a `{{` is never closed by `}}`".to_string());
        };
        let name = after[..end].trim();
        if !allowed.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{{{name}}}}} (known here: {})",
                allowed.join(", ")
            ));
        }
        out.push_str(&escape(
            values.get(name).map(String::as_str).unwrap_or(""),
            how,
        ));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Renders `template` with `values`, escaping as `how` says.
pub fn render(template: &str, values: &Values, how: Escape) -> Result<String, String> {
    const OPEN: &str = "{{#recipients}}";
    const CLOSE: &str = "{{/recipients}}";
    let Some(open) = template.find(OPEN) else {
        return substitute(template, &values.global, GLOBAL, how);
    };
    let body_start = open + OPEN.len();
    let Some(close) = template[body_start..].find(CLOSE).map(|i| body_start + i) else {
        return Err("{{#recipients}} is never closed by {{/recipients}}".to_string());
    };
    let block = &template[body_start..close];
    let after = &template[close + CLOSE.len()..];
    if after.contains(OPEN) {
        return Err("only one {{#recipients}} block is allowed".to_string());
    }
    let mut out = substitute(&template[..open], &values.global, GLOBAL, how)?;
    let empty = BTreeMap::new();
    // Checked even with no recipients, so a mistake in the block is always found.
    substitute(block, &empty, PER_RECIPIENT, how)?;
    for r in &values.recipients {
        out.push_str(&substitute(block, r, PER_RECIPIENT, how)?);
    }
    out.push_str(&substitute(after, &values.global, GLOBAL, how)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Values {
        let mut v = Values::default();
        v.global
            .insert("subject", "Q3 <figures> & \"plans\"\r\nBcc: x".into());
        v.global.insert("queue_id", "Q1".into());
        for a in ["a@x.test", "b@x.test"] {
            let mut r = BTreeMap::new();
            r.insert("address", a.to_string());
            r.insert("reply", "550 5.1.1 unknown".to_string());
            v.recipients.push(r);
        }
        v
    }

    #[test]
    fn placeholders_blocks_and_escaping() {
        let t = "Re: {{subject}} ({{ queue_id }})\n{{#recipients}}- {{address}}: {{reply}}\n{{/recipients}}end";
        assert_eq!(
            render(t, &values(), Escape::Text).unwrap(),
            "Re: Q3 <figures> & \"plans\"\nBcc: x (Q1)\n- a@x.test: 550 5.1.1 unknown\n- b@x.test: 550 5.1.1 unknown\nend"
        );
        assert_eq!(
            render("<p>{{subject}}</p>", &values(), Escape::Html).unwrap(),
            "<p>Q3 &lt;figures&gt; &amp; &quot;plans&quot;Bcc: x</p>"
        );
        assert_eq!(
            render("{{subject}}", &values(), Escape::Header).unwrap(),
            "Q3 <figures> & \"plans\"Bcc: x"
        );
    }

    #[test]
    fn mistakes_are_named() {
        let e = render("{{nope}}", &values(), Escape::Text).unwrap_err();
        assert!(e.contains("unknown placeholder {{nope}}"), "{e}");
        let e = render(
            "{{#recipients}}{{subject}}{{/recipients}}",
            &values(),
            Escape::Text,
        )
        .unwrap_err();
        assert!(e.contains("known here: address, reply"), "{e}");
        assert!(render("{{#recipients}}x", &values(), Escape::Text).is_err());
        assert!(render("{{subject", &values(), Escape::Text).is_err());
    }
}
