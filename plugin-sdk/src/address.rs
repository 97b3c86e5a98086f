//! Helpers on envelope addresses and message headers.

use crate::bindings::sluice::filter::types::{Address, Message};

/// Compares two domain names as DNS does: ASCII case-insensitively, ignoring one trailing dot.
pub fn domain_eq(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

impl Address {
    /// True for the null sender `<>` used by bounces.
    pub fn is_null(&self) -> bool {
        self.address.is_empty()
    }

    /// The part before the last `@` (the whole address when it has none).
    pub fn local_part(&self) -> &str {
        match self.address.rsplit_once('@') {
            Some((local, _)) => local,
            None => &self.address,
        }
    }

    /// The part after the last `@`; empty when there is none.
    pub fn domain(&self) -> &str {
        match self.address.rsplit_once('@') {
            Some((_, domain)) => domain,
            None => "",
        }
    }

    /// True when the address's domain is `domain`, compared case-insensitively.
    pub fn domain_is(&self, domain: &str) -> bool {
        !self.domain().is_empty() && domain_eq(self.domain(), domain)
    }

    /// The value of an ESMTP parameter (`SIZE`, `BODY`, …), keyword compared case-insensitively.
    /// `Some(None)` when the parameter is present without a value.
    pub fn param(&self, keyword: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|p| p.keyword.eq_ignore_ascii_case(keyword))
            .map(|p| p.value.as_deref())
    }
}

impl Message {
    /// The first header field of this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Every header field of this name (case-insensitive), in message order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// The body: the bytes after the blank line that ends the header section.
    pub fn body(&self) -> &[u8] {
        let raw = &self.raw;
        raw.windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| &raw[i + 4..])
            .or_else(|| {
                raw.windows(2)
                    .position(|w| w == b"\n\n")
                    .map(|i| &raw[i + 2..])
            })
            .unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Address {
        Address {
            address: s.to_string(),
            params: vec![],
        }
    }

    #[test]
    fn splits_on_last_at() {
        let a = addr("\"a@b\"@Example.ORG");
        assert_eq!(a.local_part(), "\"a@b\"");
        assert_eq!(a.domain(), "Example.ORG");
        assert!(a.domain_is("example.org."));
        assert!(!a.domain_is("example.com"));
    }

    #[test]
    fn null_sender_has_no_domain() {
        let a = addr("");
        assert!(a.is_null());
        assert!(!a.domain_is(""));
    }
}
