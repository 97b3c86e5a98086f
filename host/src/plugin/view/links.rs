//! Links in decoded text and HTML: found by linkify (with or without a scheme, so `www.` links
//! count; in HTML an `href` value is text like any other), their host taken from the URL, and
//! the host's registrable domain from the Public Suffix List (`psl`, compiled in).

use std::net::IpAddr;

use linkify::{LinkFinder, LinkKind};

/// The URLs in `text`, in order.
pub fn urls(text: &str) -> impl Iterator<Item = &str> {
    let mut finder = LinkFinder::new();
    finder.kinds(&[LinkKind::Url]).url_must_have_scheme(false);
    finder
        .links(text)
        .map(|l| l.as_str())
        .collect::<Vec<_>>()
        .into_iter()
}

/// The host of `url`, lower case, without user, port or a trailing dot; none when it has no
/// plausible host.
pub fn host(url: &str) -> Option<String> {
    let rest = match url.find("://") {
        Some(i) => &url[i + 3..],
        None => url,
    };
    let authority = rest.split(['/', '?', '#', '\\']).next()?;
    let host_port = authority.rsplit('@').next()?;
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        host_port.split(':').next()?
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty() && host.len() <= 253).then_some(host)
}

/// The registrable domain of `host` (`example.co.uk` for `shop.example.co.uk`); none for an IP
/// address, or a host that is a public suffix itself.
pub fn registrable_domain(host: &str) -> Option<String> {
    if host.parse::<IpAddr>().is_ok() {
        return None;
    }
    psl::domain_str(host).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_registrable_domains() {
        for (url, want_host, want_domain) in [
            (
                "https://shop.example.co.uk/a?b=1",
                "shop.example.co.uk",
                Some("example.co.uk"),
            ),
            (
                "http://user:pw@Mail.Example.COM:8080/x",
                "mail.example.com",
                Some("example.com"),
            ),
            ("www.example.org.", "www.example.org", Some("example.org")),
            ("http://192.0.2.7/login", "192.0.2.7", None),
            ("http://[2001:db8::1]:80/", "2001:db8::1", None),
            ("https://co.uk/", "co.uk", None),
        ] {
            let host = host(url).unwrap();
            assert_eq!(host, want_host, "{url}");
            assert_eq!(registrable_domain(&host).as_deref(), want_domain, "{url}");
        }
    }

    #[test]
    fn links_are_found_with_or_without_a_scheme_and_in_attributes() {
        let found: Vec<&str> =
            urls("see www.example.org and <a href=\"https://x.example.net/p\">here</a>").collect();
        assert_eq!(found, ["www.example.org", "https://x.example.net/p"]);
    }
}
