//! Editing a received message before it is spooled: remove header fields plugins asked to
//! remove, then prepend our `Received:` and the added fields. The body is never touched.
//!
//! Hand-written rather than through `mail-parser`/`mail-builder`: those parse and rebuild
//! messages, and we must keep every byte of the original (signatures cover them) apart from
//! the fields we add or remove.

/// Splits at the blank line ending the header section: (header section incl. its final
/// CRLF, rest). A message without a blank line is all header.
fn split(raw: &[u8]) -> (&[u8], &[u8]) {
    if raw.starts_with(b"\r\n") {
        return (&raw[..0], raw);
    }
    match raw.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => raw.split_at(i + 2),
        None => (raw, &raw[raw.len()..]),
    }
}

/// Removes every field named in `remove` (case-insensitive), folded lines included.
pub fn remove_fields(header: &[u8], remove: &[String]) -> Vec<u8> {
    if remove.is_empty() {
        return header.to_vec();
    }
    let mut out = Vec::with_capacity(header.len());
    let mut skipping = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        let continuation = line.first().is_some_and(|&b| b == b' ' || b == b'\t');
        if !continuation {
            let name = line.split(|&b| b == b':').next().unwrap_or(b"");
            let name = String::from_utf8_lossy(name);
            skipping = remove.iter().any(|r| r.eq_ignore_ascii_case(name.trim()));
        }
        if !skipping {
            out.extend_from_slice(line);
        }
    }
    out
}

/// How many fields named `name` (case-insensitive) the message's header section holds; the
/// `Received:` count is the hop count of RFC 5321 §6.3.
pub fn count_fields(raw: &[u8], name: &str) -> usize {
    let (header, _) = split(raw);
    header
        .split_inclusive(|&b| b == b'\n')
        .filter(|line| {
            line.len() > name.len()
                && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
                && line[name.len()..]
                    .iter()
                    .find(|&&b| b != b' ' && b != b'\t')
                    == Some(&b':')
        })
        .count()
}

/// Removes every `Authentication-Results:` field whose authserv-id is `hostname` — a field
/// that claims to be ours but arrived from outside is forged (RFC 8601 §5). Others stay.
pub fn remove_auth_results_of(raw: &[u8], hostname: &str) -> Vec<u8> {
    let (header, body) = split(raw);
    let mut out = Vec::with_capacity(raw.len());
    let mut fields: Vec<&[u8]> = Vec::new();
    // Group the header into fields (a line and its continuation lines).
    let mut start = 0;
    for (i, line) in header.split_inclusive(|&b| b == b'\n').scan(0, |pos, l| {
        let at = *pos;
        *pos += l.len();
        Some((at, l))
    }) {
        let continuation = line.first().is_some_and(|&b| b == b' ' || b == b'\t');
        if !continuation && i > start {
            fields.push(&header[start..i]);
            start = i;
        }
    }
    if start < header.len() {
        fields.push(&header[start..]);
    }
    for f in fields {
        let text = String::from_utf8_lossy(f);
        let forged = text.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("Authentication-Results")
                && value
                    .split(';')
                    .next()
                    .and_then(|id| id.split_whitespace().next())
                    .is_some_and(|id| id.eq_ignore_ascii_case(hostname))
        });
        if !forged {
            out.extend_from_slice(f);
        }
    }
    out.extend_from_slice(body);
    out
}

/// The final message: `prepend` fields (already formatted, each ending in CRLF) first, then
/// the original header without `remove`d fields, then the body unchanged.
pub fn finalize(raw: &[u8], prepend: &[String], remove: &[String]) -> Vec<u8> {
    let (header, body) = split(raw);
    let extra: usize = prepend.iter().map(String::len).sum();
    let mut out = Vec::with_capacity(raw.len() + extra);
    for field in prepend {
        out.extend_from_slice(field.as_bytes());
    }
    out.extend_from_slice(&remove_fields(header, remove));
    out.extend_from_slice(body);
    out
}

/// Formats `name: value` as a header field, folding long values at spaces (RFC 5322 §2.2.3).
pub fn field(name: &str, value: &str) -> String {
    let mut out = format!("{name}:");
    let mut line_len = out.len();
    for (i, word) in value.split(' ').enumerate() {
        if i > 0 || !word.is_empty() {
            if line_len + 1 + word.len() > 78 && line_len > name.len() + 1 {
                out.push_str("\r\n\t");
                line_len = 1;
            } else {
                out.push(' ');
                line_len += 1;
            }
            out.push_str(word);
            line_len += word.len();
        }
    }
    out.push_str("\r\n");
    out
}

/// What goes into the `Received:` field (RFC 5321 §4.4, protocol names per RFC 3848).
#[derive(Debug, Clone)]
pub struct ReceivedInfo<'a> {
    /// HELO/EHLO name.
    pub helo: &'a str,
    /// Client IP.
    pub client_ip: &'a str,
    /// Our host name.
    pub hostname: &'a str,
    /// EHLO was used.
    pub esmtp: bool,
    /// TLS protocol and cipher.
    pub tls: Option<(&'a str, &'a str)>,
    /// Authenticated user.
    pub auth_user: Option<&'a str>,
    /// Queue id.
    pub id: &'a str,
    /// The recipient, when there is exactly one.
    pub for_rcpt: Option<&'a str>,
    /// RFC 5322 date-time.
    pub date: &'a str,
}

/// The `Received:` field, CRLF-terminated.
pub fn received(i: &ReceivedInfo<'_>) -> String {
    let protocol = match (i.esmtp, i.tls.is_some(), i.auth_user.is_some()) {
        (false, _, _) => "SMTP",
        (true, false, false) => "ESMTP",
        (true, true, false) => "ESMTPS",
        (true, false, true) => "ESMTPA",
        (true, true, true) => "ESMTPSA",
    };
    let helo: String = i
        .helo
        .chars()
        .filter(|c| !c.is_control() && *c != '(' && *c != ')')
        .take(100)
        .collect();
    let mut v = format!(
        "from {helo} ([{}])\r\n\tby {} (Sluice) with {protocol} id {}",
        i.client_ip, i.hostname, i.id
    );
    if let Some((version, cipher)) = i.tls {
        v.push_str(&format!("\r\n\t(using {version} with cipher {cipher})"));
    }
    if let Some(user) = i.auth_user {
        let user: String = user
            .chars()
            .filter(|c| !c.is_control() && *c != '(' && *c != ')')
            .collect();
        v.push_str(&format!("\r\n\t(authenticated as {user})"));
    }
    if let Some(rcpt) = i.for_rcpt {
        v.push_str(&format!("\r\n\tfor <{rcpt}>"));
    }
    format!("Received: {v}; {}\r\n", i.date)
}

/// The current time as an RFC 5322 date-time.
pub fn now_rfc5322() -> String {
    chrono::Local::now()
        .format("%a, %d %b %Y %H:%M:%S %z")
        .to_string()
}

/// `text` with control characters (CR, LF, NUL, ESC, …) written as escapes, for logs and
/// admin output: what a client, a plugin or a remote server sent can never start a line of
/// its own or drive a terminal.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_received_fields_of_the_header_only() {
        let raw = b"Received: a\r\n\tfolded\r\nreceived : b\r\nReceived-SPF: pass\r\nX-Received: c\r\n\r\nReceived: in body\r\n";
        assert_eq!(count_fields(raw, "Received"), 2);
        assert_eq!(count_fields(b"\r\nReceived: x\r\n", "Received"), 0);
    }

    #[test]
    fn printable_escapes_control_characters() {
        assert_eq!(printable("plain é"), "plain é");
        assert_eq!(printable("a\r\nb\0\x1b"), "a\\r\\nb\\u{0}\\u{1b}");
    }

    #[test]
    fn removes_folded_fields_and_keeps_the_body_byte_for_byte() {
        let raw = b"X-Spam-Status: Yes,\r\n\tscore=99\r\nSubject: hi\r\nx-spam-status: again\r\n\r\nX-Spam-Status: in body\r\n";
        let out = finalize(raw, &["Received: x\r\n".into()], &["X-Spam-Status".into()]);
        assert_eq!(
            out,
            b"Received: x\r\nSubject: hi\r\n\r\nX-Spam-Status: in body\r\n"
        );
    }

    #[test]
    fn headerless_and_bodyless_messages() {
        assert_eq!(
            finalize(b"\r\nbody\r\n", &["A: 1\r\n".into()], &[]),
            b"A: 1\r\n\r\nbody\r\n"
        );
        assert_eq!(
            finalize(b"Subject: x\r\n", &["A: 1\r\n".into()], &[]),
            b"A: 1\r\nSubject: x\r\n"
        );
    }

    #[test]
    fn long_values_are_folded() {
        let f = field(
            "X-Spam-Status",
            &format!(
                "No, score=1.00 required=5.00 tests={}",
                ["SYMBOL_NUMBER_ONE"; 6].join(",")
            ),
        );
        assert!(f.lines().all(|l| l.len() <= 998));
        assert!(f.ends_with("\r\n"));
        let f = field("X-Short", "yes");
        assert_eq!(f, "X-Short: yes\r\n");
    }

    #[test]
    fn received_names_tls_and_auth() {
        let r = received(&ReceivedInfo {
            helo: "client.test",
            client_ip: "192.0.2.1",
            hostname: "mx.test",
            esmtp: true,
            tls: Some(("TLSv1.3", "TLS13_AES_256_GCM_SHA384")),
            auth_user: Some("alice"),
            id: "Q1",
            for_rcpt: Some("bob@example.org"),
            date: "Sat, 28 Nov 2026 10:00:00 +0000",
        });
        assert_eq!(
            r,
            "Received: from client.test ([192.0.2.1])\r\n\tby mx.test (Sluice) with ESMTPSA id Q1\r\n\t(using TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384)\r\n\t(authenticated as alice)\r\n\tfor <bob@example.org>; Sat, 28 Nov 2026 10:00:00 +0000\r\n"
        );
    }

    #[test]
    fn only_authentication_results_claiming_our_host_are_removed() {
        let raw = b"Authentication-Results: MX.test;\r\n\tdkim=pass header.d=bank.test\r\nSubject: hi\r\nAuthentication-Results: other.example; spf=pass\r\nAuthentication-Results: mx.test.evil; spf=pass\r\n\r\nAuthentication-Results: mx.test; in the body\r\n";
        let out = String::from_utf8(remove_auth_results_of(raw, "mx.test")).unwrap();
        assert_eq!(
            out,
            "Subject: hi\r\nAuthentication-Results: other.example; spf=pass\r\nAuthentication-Results: mx.test.evil; spf=pass\r\n\r\nAuthentication-Results: mx.test; in the body\r\n"
        );
    }
}
