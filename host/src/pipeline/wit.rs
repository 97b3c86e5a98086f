//! The plugins' side of the contract: the session, envelope and message as WIT types (header
//! fields found and unfolded), and a plugin's verdict or failure as a stage [`Decision`].

use crate::config::FailurePolicy;
use crate::envelope::{Client, Decision, Envelope, Param};
use crate::plugin::bindings::types::{self as wit, Header, Message, Session, Verdict};
use crate::smtp::reply::Reply;

/// A plugin's verdict as a stage decision.
pub(super) fn decision_of_verdict(v: &Verdict) -> Decision {
    match v {
        Verdict::Continue => Decision::Continue,
        Verdict::Accept => Decision::Accept,
        Verdict::Reject(r) => Decision::Reject {
            reply: plugin_reply(r, "5.7.1"),
        },
        Verdict::Tempfail(r) => Decision::Tempfail {
            reply: plugin_reply(r, "4.7.1"),
        },
        Verdict::Discard => Decision::Discard,
        Verdict::Quarantine(reason) => Decision::Quarantine {
            reason: reason.clone(),
        },
    }
}

/// What a plugin's failure decides under its policy.
pub(super) fn decision_of_failure(policy: FailurePolicy) -> Decision {
    match policy {
        FailurePolicy::Tempfail => Decision::Tempfail {
            reply: Reply::plugin_tempfail(),
        },
        FailurePolicy::Continue => Decision::Continue,
        FailurePolicy::Reject => Decision::Reject {
            reply: Reply::plugin_reject(),
        },
    }
}

/// A plugin's reply with defaults filled in and control characters removed.
fn plugin_reply(r: &wit::Reply, enhanced: &str) -> Reply {
    let enhanced = if r.enhanced.is_empty() {
        // Keep the class of the plugin's code with a generic detail.
        format!("{}{}", r.code / 100, &enhanced[1..])
    } else {
        r.enhanced.clone()
    };
    let mut text: String = r
        .text
        .chars()
        .filter(|c| !c.is_control())
        .take(400)
        .collect();
    if text.trim().is_empty() {
        text = if r.code >= 500 {
            "Refused"
        } else {
            "Try again later"
        }
        .to_string();
    }
    Reply {
        code: r.code,
        enhanced,
        text,
    }
}

/// The session facts as plugins see them.
pub(super) fn wit_session(c: &Client, transaction_id: &str) -> Session {
    Session {
        listener: c.listener.clone(),
        client_ip: c.ip.to_string(),
        client_port: c.port,
        helo: c.helo.clone(),
        tls: c.tls.as_ref().map(|t| wit::TlsInfo {
            version: t.version.clone(),
            cipher: t.cipher.clone(),
        }),
        auth_user: c.auth_user.clone(),
        transaction_id: transaction_id.to_string(),
    }
}

/// An address and its ESMTP parameters.
pub(super) fn wit_address(address: &str, params: &[Param]) -> wit::Address {
    wit::Address {
        address: address.to_string(),
        params: params
            .iter()
            .map(|p| wit::EsmtpParam {
                keyword: p.keyword.clone(),
                value: p.value.clone(),
            })
            .collect(),
    }
}

/// The envelope: sender and the recipients accepted so far.
pub(super) fn wit_envelope(e: &Envelope) -> wit::Envelope {
    wit::Envelope {
        sender: wit_address(&e.sender.address, &e.sender.params),
        recipients: e
            .recipients
            .iter()
            .map(|r| wit_address(&r.address, &r.params))
            .collect(),
    }
}

/// Splits a message's header section into unfolded fields, using `mail-parser` to find them.
/// Only where each field starts and ends is wanted, so no value is parsed (by default
/// mail-parser parses every `Received:` field in full, which cost more than the rest).
pub fn parse_headers(raw: &[u8]) -> Vec<Header> {
    // Built once: a configured parser owns a map of header names.
    static PARSER: std::sync::LazyLock<mail_parser::MessageParser> =
        std::sync::LazyLock::new(|| {
            mail_parser::MessageParser::new()
                .ignore_header(mail_parser::HeaderName::Received)
                .default_header_ignore()
        });
    let Some(msg) = PARSER.parse_headers(raw) else {
        return Vec::new();
    };
    msg.headers()
        .iter()
        .map(|h| {
            let value = raw
                .get(h.offset_start as usize..h.offset_end as usize)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            Header {
                name: h.name.as_str().to_string(),
                value: unfold(&value),
            }
        })
        .collect()
}

/// Removes folding line breaks and surrounding whitespace from a raw header value. Every CR
/// and LF goes, bare ones included (the `message` fuzz target found a bare CR surviving), so
/// a plugin never sees a line break inside a value.
fn unfold(value: &str) -> String {
    value.replace(['\r', '\n'], "").trim().to_string()
}

/// Builds the [`Message`] a plugin receives.
pub fn message(raw: Vec<u8>) -> Message {
    Message {
        headers: parse_headers(&raw),
        raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts the (name, value) of each field [`parse_headers`] finds in `raw`.
    fn assert_fields(raw: &[u8], want: &[(&str, &str)]) {
        let h = parse_headers(raw);
        let got: Vec<_> = h
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn headers_are_unfolded_in_order() {
        let raw = b"Subject: hello\r\n  world\r\nFrom: a@b\r\nX-Empty:\r\n\r\nbody\r\n";
        assert_fields(
            raw,
            &[
                ("Subject", "hello  world"),
                ("From", "a@b"),
                ("X-Empty", ""),
            ],
        );
    }

    /// mail-parser's date parser, given the obsolete zone `UT` and LF line endings (a corpus
    /// message), read on past the end of the header section: the body's first lines became
    /// fields. Fields are now found without parsing their values.
    #[test]
    fn the_header_section_ends_at_the_empty_line_whatever_the_values() {
        let raw = b"Date: Sun, 25 Aug 2002 16:50:54 UT\n\nOn Sat, 24 Aug 2002 11:07:00 -0700, someone\nsaid:\n> quoted\n";
        assert_fields(raw, &[("Date", "Sun, 25 Aug 2002 16:50:54 UT")]);
    }

    #[test]
    fn plugin_reply_gets_class_matching_defaults() {
        let r = wit::Reply {
            code: 554,
            enhanced: String::new(),
            text: "no\x07pe".into(),
        };
        assert_eq!(plugin_reply(&r, "5.7.1"), Reply::new(554, "5.7.1", "nope"));
        let r = wit::Reply {
            code: 421,
            enhanced: String::new(),
            text: String::new(),
        };
        assert_eq!(
            plugin_reply(&r, "4.7.1"),
            Reply::new(421, "4.7.1", "Try again later")
        );
    }
}
