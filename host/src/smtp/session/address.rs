//! Envelope address checks for relay control: which recipients this host accepts from whom,
//! and the address tricks that try to make a local-looking address relay elsewhere.

/// What is odd about an address, from the relay-control point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trick {
    /// `user%other.example@local` — the "percent hack" some MTAs still route.
    PercentHack,
    /// `other.example!user@local` — a UUCP bang path.
    BangPath,
    /// `"user@other.example"@local` — a quoted local part hiding an `@`.
    QuotedAt,
    /// `user@local.` — a trailing dot, read as "the same domain" by some resolvers.
    TrailingDot,
    /// `user@[192.0.2.1]` — an address literal, bypassing domain-based policy.
    AddressLiteral,
}

/// Splits an address at its last `@` (the local part may be quoted and contain `@`).
pub fn split(address: &str) -> (&str, &str) {
    match address.rsplit_once('@') {
        Some((l, d)) => (l, d),
        None => (address, ""),
    }
}

/// The relay tricks present in `address`.
pub fn tricks(address: &str) -> Vec<Trick> {
    let (local, domain) = split(address);
    let mut found = Vec::new();
    if local.contains('%') {
        found.push(Trick::PercentHack);
    }
    if local.contains('!') {
        found.push(Trick::BangPath);
    }
    // The grammar may hand over a quoted local part with its quotes removed: any `@` left in
    // the local part is the trick.
    if local.contains('@') {
        found.push(Trick::QuotedAt);
    }
    if domain.ends_with('.') {
        found.push(Trick::TrailingDot);
    }
    if domain.starts_with('[') {
        found.push(Trick::AddressLiteral);
    }
    found
}

/// True when `domain` is one of `local_domains` (ASCII case-insensitive, exact).
pub fn is_local_domain(domain: &str, local_domains: &[String]) -> bool {
    !domain.is_empty() && local_domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
}

/// True when `address` is an unqualified `postmaster`, which RFC 5321 §4.5.1 requires every
/// server to accept.
pub fn is_bare_postmaster(address: &str) -> bool {
    address.eq_ignore_ascii_case("postmaster")
}

/// True when a client that may not relay may still send to `address`: it must be in a local
/// domain and free of every trick.
pub fn deliverable_without_relay(address: &str, local_domains: &[String]) -> bool {
    if is_bare_postmaster(address) {
        return true;
    }
    let (_, domain) = split(address);
    is_local_domain(domain, local_domains) && tricks(address).is_empty()
}

/// True when `user` may use `sender` as MAIL FROM. `rules` are the configured addresses for
/// the user (`@domain` allows a whole domain); without rules, the user name itself when it is
/// an address, or `user@` each local domain. The null sender is always allowed.
pub fn sender_allowed(
    user: &str,
    sender: &str,
    rules: Option<&Vec<String>>,
    local_domains: &[String],
) -> bool {
    if sender.is_empty() {
        return true;
    }
    let (local, domain) = split(sender);
    let matches = |rule: &str| match rule.strip_prefix('@') {
        Some(d) => d.eq_ignore_ascii_case(domain),
        None => {
            let (rl, rd) = split(rule);
            rl == local && rd.eq_ignore_ascii_case(domain)
        }
    };
    match rules {
        Some(rules) => rules.iter().any(|r| matches(r)),
        None if user.contains('@') => matches(user),
        None => local == user && is_local_domain(domain, local_domains),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Vec<String> {
        vec!["example.org".to_string()]
    }

    #[test]
    fn relay_tricks_are_refused_without_relay_rights() {
        let table = [
            ("bob@example.org", true),
            ("bob@EXAMPLE.ORG", true),
            ("postmaster", true),
            ("bob@other.example", false),
            ("bob%other.example@example.org", false),
            ("other.example!bob@example.org", false),
            ("\"bob@other.example\"@example.org", false),
            ("bob@example.org.", false),
            ("bob@[192.0.2.1]", false),
            ("bob@sub.example.org", false),
            ("bob", false),
        ];
        for (address, ok) in table {
            assert_eq!(
                deliverable_without_relay(address, &local()),
                ok,
                "{address}"
            );
        }
    }

    #[test]
    fn senders_a_user_may_use() {
        let rules = vec!["alice@example.net".to_string(), "@example.com".to_string()];
        assert!(sender_allowed(
            "alice",
            "alice@Example.NET",
            Some(&rules),
            &local()
        ));
        assert!(sender_allowed(
            "alice",
            "anyone@example.com",
            Some(&rules),
            &local()
        ));
        assert!(!sender_allowed(
            "alice",
            "alice@example.org",
            Some(&rules),
            &local()
        ));
        assert!(sender_allowed("alice", "alice@example.org", None, &local()));
        assert!(!sender_allowed("alice", "bob@example.org", None, &local()));
        assert!(sender_allowed(
            "bob@example.net",
            "bob@example.net",
            None,
            &local()
        ));
        assert!(!sender_allowed(
            "bob@example.net",
            "ceo@example.net",
            None,
            &local()
        ));
        assert!(sender_allowed("alice", "", None, &local()));
    }
}
