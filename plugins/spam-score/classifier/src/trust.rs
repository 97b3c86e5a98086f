//! The trust path: which `Received` hops are evidence.
//!
//! Mail reaches a site through its border, the first hop written by one of the site's own
//! hosts about a client that is not. As in SpamAssassin (`internal_networks`), what the message
//! carried when it crossed the border is evidence: the border's view of the client (its IP
//! address and HELO name) and the hops written before it by the sender's own relays. What the
//! site added after the border (its own hops, delivery and filter stamps) is not.
//!
//! In Sluice the border is usually Sluice itself: the session's client is the border client and
//! every hop in the message came before it. When Sluice sits behind the site's own relays, or a
//! message is learned from a mailbox after delivery, the border is found in the chain from the
//! operator's `internal_hosts` and `internal_networks`.
//!
//! Hops are parsed by hand: `Received` has no fixed grammar in practice (Sendmail, Postfix,
//! qmail and Exchange each write their own), and mail-parser's structured parse was the
//! largest cost of reading a message. Only the fields used here are taken.

use std::net::IpAddr;

/// One parsed `Received` hop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hop {
    /// The name the client gave (HELO), lower case; empty when the hop has no `from`.
    pub helo: String,
    /// The name the receiving host found for the client, lower case (Sendmail and Postfix
    /// write it in parentheses before the address). Used only to recognise internal hosts.
    pub rdns: String,
    /// The client's address when the hop names one.
    pub ip: Option<IpAddr>,
    /// The host that wrote the hop, lower case.
    pub by: String,
    /// The protocol after `with` (`esmtp`, `smtp`, …), lower case.
    pub with: String,
    /// The first word of the comment after the writing host, e.g. `postfix`, `8.11.6/8.11.6`.
    pub software: String,
    /// The domain of the recipient after `for`, lower case (used to find a site's relays).
    pub for_domain: String,
}

/// The client of a hop or of an SMTP session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Client {
    /// Its address, when known.
    pub ip: Option<IpAddr>,
    /// The name it gave in HELO/EHLO, lower case.
    pub helo: String,
}

/// The site's own hosts and networks, and the session's client when the message is judged as
/// it arrives.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Host names of the site (exact, lower case; a leading `.` matches a whole domain).
    pub internal_hosts: Vec<String>,
    /// The site's networks: (network address, prefix length).
    pub internal_networks: Vec<(IpAddr, u8)>,
    /// The client of the SMTP session that delivers the message, if it is being received now.
    pub session: Option<Client>,
}

/// What a message carried when it crossed the border.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    /// The border's client; none when no hop of the chain was written by the site and the
    /// message is not being received now.
    pub border: Option<Client>,
    /// The hops written before the border, nearest first.
    pub before: Vec<Hop>,
}

/// Parses `ADDR/PREFIX` (or a bare address, a host route).
pub fn parse_network(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, prefix) = s.split_once('/').unwrap_or((s, ""));
    let ip: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not an IP network (e.g. 192.0.2.0/24)"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = if prefix.is_empty() {
        max
    } else {
        prefix
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("`{s}`: the prefix length must be 0 to {max}"))?
    };
    Ok((ip, prefix))
}

fn in_network(ip: IpAddr, (net, prefix): (IpAddr, u8)) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

impl Trust {
    /// The site as an operator lists it (`internal_hosts`, `internal_networks`): host names
    /// are compared in lower case; a network that does not parse is the error.
    pub fn site(hosts: &[String], networks: &[String]) -> Result<Trust, String> {
        Ok(Trust {
            internal_hosts: hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            internal_networks: networks
                .iter()
                .map(|n| parse_network(n))
                .collect::<Result<_, _>>()?,
            session: None,
        })
    }

    fn is_internal_host(&self, name: &str) -> bool {
        !name.is_empty()
            && (name == "localhost"
                || self.internal_hosts.iter().any(|h| {
                    h == name
                        || (h.starts_with('.') && (name.ends_with(h.as_str()) || name == &h[1..]))
                }))
    }

    fn is_internal_ip(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || self.internal_networks.iter().any(|&n| in_network(ip, n))
    }

    /// A hop's or session's client is one of the site's hosts.
    fn is_internal_client(&self, ip: Option<IpAddr>, names: &[&str]) -> bool {
        match ip {
            Some(ip) if self.is_internal_ip(ip) => true,
            _ => names.iter().any(|n| self.is_internal_host(n)),
        }
    }

    /// Finds the border in a message's hops (top first).
    pub fn evidence(&self, hops: &[Hop]) -> Evidence {
        // The site's own hops at the top (a relay in front of Sluice, or delivery and
        // fetching after it).
        let mut at = 0;
        while let Some(hop) = hops.get(at) {
            if !self.is_internal_host(&hop.by)
                || !self.is_internal_client(hop.ip, &[&hop.helo, &hop.rdns])
            {
                break;
            }
            at += 1;
        }
        if let Some(s) = &self.session
            && !self.is_internal_client(s.ip, &[&s.helo])
        {
            return Evidence {
                border: Some(s.clone()),
                before: hops[at..].to_vec(),
            };
        }
        match hops.get(at) {
            Some(hop) if self.is_internal_host(&hop.by) => Evidence {
                border: Some(Client {
                    ip: hop.ip,
                    helo: hop.helo.clone(),
                }),
                before: hops[at + 1..].to_vec(),
            },
            _ => Evidence {
                border: None,
                before: hops[at..].to_vec(),
            },
        }
    }
}

/// The first `[address]` in `s` that parses as an IP address (IPv6 may carry `IPv6:`).
fn bracketed_ip(s: &str) -> Option<IpAddr> {
    let mut rest = s;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let close = after.find(']')?;
        let inner = &after[..close];
        let inner = inner
            .strip_prefix("IPv6:")
            .or_else(|| inner.strip_prefix("ipv6:"))
            .unwrap_or(inner);
        if let Ok(ip) = inner.parse() {
            return Some(ip);
        }
        rest = &after[close..];
    }
    None
}

/// Parses one `Received` value (folded or not).
pub fn parse_hop(value: &str) -> Hop {
    let v: String = value
        .split_whitespace()
        .take(64)
        .collect::<Vec<_>>()
        .join(" ");
    let lower = v.to_ascii_lowercase();
    let mut hop = Hop::default();
    // The `from` part runs to ` by ` (outside parentheses).
    let by_at = {
        let mut depth = 0i32;
        let b = lower.as_bytes();
        let mut found = None;
        for i in 0..b.len() {
            match b[i] {
                b'(' => depth += 1,
                b')' => depth -= 1,
                b' ' if depth <= 0 && lower[i..].starts_with(" by ") => {
                    found = Some(i);
                    break;
                }
                _ => {}
            }
        }
        found
    };
    let from_part = match by_at {
        Some(i) => &lower[..i],
        None => &lower[..],
    };
    if let Some(rest) = from_part.strip_prefix("from ") {
        let first = rest.split_whitespace().next().unwrap_or("");
        hop.helo = first.trim_matches(['(', ')', '[', ']']).to_string();
        if let Some(h) = rest.find("(helo ") {
            // qmail: `from 192.0.2.1 (HELO name)`.
            let name = rest[h + 6..].split([')', ' ']).next().unwrap_or("");
            hop.ip = first.parse().ok();
            hop.helo = name.to_string();
        }
        if let Some(open) = rest.find('(') {
            let name = rest[open + 1..].split([' ', ')', '[']).next().unwrap_or("");
            if name.contains('.') && !name.starts_with("helo") {
                hop.rdns = name.to_string();
            }
        }
        if hop.ip.is_none() {
            // Sendmail and Postfix write `[addr]`; qmail writes `(addr)` after the HELO.
            hop.ip = bracketed_ip(&v[..from_part.len()])
                .or_else(|| first.parse().ok())
                .or_else(|| rest.split(['(', ')']).find_map(|p| p.trim().parse().ok()));
        }
    }
    if let Some(i) = by_at {
        let after = &lower[i + 4..];
        let mut words = after.split_whitespace();
        hop.by = words
            .next()
            .unwrap_or("")
            .trim_end_matches([';', ')'])
            .to_string();
        if let Some(c) = after.find('(')
            && after[..c].split_whitespace().count() <= 1
        {
            hop.software = after[c + 1..]
                .split([' ', ')'])
                .next()
                .unwrap_or("")
                .to_string();
        }
    }
    if let Some(w) = lower.find(" with ") {
        hop.with = lower[w + 6..]
            .split([' ', ';'])
            .next()
            .unwrap_or("")
            .to_string();
    }
    if let Some(f) = lower.find(" for ") {
        let addr = lower[f + 5..]
            .split([' ', ';'])
            .next()
            .unwrap_or("")
            .trim_matches(['<', '>']);
        if let Some((_, domain)) = addr.rsplit_once('@') {
            hop.for_domain = domain.to_string();
        }
    }
    hop
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hops(values: &[&str]) -> Vec<Hop> {
        values.iter().map(|v| parse_hop(v)).collect()
    }

    #[test]
    fn hops_of_the_common_writers() {
        let h = parse_hop(
            "from webnote.net (mail.webnote.net [193.120.211.219])\n\tby dogma.slashnull.org (8.11.6/8.11.6) with ESMTP id g78CK9202584\n\tfor <jm@jmason.org>; Thu, 8 Aug 2002 13:20:09 +0100",
        );
        assert_eq!(h.helo, "webnote.net");
        assert_eq!(h.rdns, "mail.webnote.net");
        assert_eq!(h.ip, Some("193.120.211.219".parse().unwrap()));
        assert_eq!(h.by, "dogma.slashnull.org");
        assert_eq!(h.software, "8.11.6/8.11.6");
        assert_eq!(h.with, "esmtp");
        assert_eq!(h.for_domain, "jmason.org");
        let q = parse_hop(
            "from 65.171.8.235 (HELO www.ussbiddle.org) by smtp.c001.snv.cp.net (209.228.32.109) with SMTP; 23 Jul 2002",
        );
        assert_eq!(q.helo, "www.ussbiddle.org");
        assert_eq!(q.ip, Some("65.171.8.235".parse().unwrap()));
        assert_eq!(q.by, "smtp.c001.snv.cp.net");
        assert_eq!(q.with, "smtp");
        let q2 = parse_hop(
            "from unknown (HELO plesk.rackshack.net) (216.40.246.32) by scgin.cesmail.net with SMTP; 20 Jul 2002",
        );
        assert_eq!(q2.helo, "plesk.rackshack.net");
        assert_eq!(q2.ip, Some("216.40.246.32".parse().unwrap()));
        let ours = parse_hop(
            "from client.example ([2001:db8::7])\r\n\tby mx.example.org (Sluice) with ESMTPS id 1a2b; Mon, 1 Jan 2024",
        );
        assert_eq!(ours.helo, "client.example");
        assert_eq!(ours.ip, Some("2001:db8::7".parse().unwrap()));
        assert_eq!(ours.software, "sluice");
    }

    #[test]
    fn the_border_is_the_first_hop_about_an_outside_client() {
        let chain = hops(&[
            "from localhost (localhost [127.0.0.1]) by phobos.example (Postfix) with ESMTP id 1",
            "from dogma.example [212.17.35.15] by localhost with IMAP (fetchmail-5.9.0)",
            "from backup.example (mail.backup.example [193.120.211.219]) by dogma.example (8.11.6) with ESMTP id 2",
            "from xent.com ([64.161.22.236]) by backup.example (8.9.3) with ESMTP id 3",
            "from lair.xent.com (localhost [127.0.0.1]) by xent.com (Postfix) with ESMTP id 4",
        ]);
        let trust = Trust {
            internal_hosts: vec![
                "phobos.example".into(),
                ".dogma.example".into(),
                "backup.example".into(),
            ],
            ..Trust::default()
        };
        let e = trust.evidence(&chain);
        assert_eq!(
            e.border,
            Some(Client {
                ip: Some("64.161.22.236".parse().unwrap()),
                helo: "xent.com".into()
            })
        );
        assert_eq!(e.before, chain[4..].to_vec());

        // Judged as it arrives from outside: the session's client is the border and every hop
        // came before it.
        let arriving = Trust {
            session: Some(Client {
                ip: Some("198.51.100.9".parse().unwrap()),
                helo: "out.example.net".into(),
            }),
            ..trust.clone()
        };
        let e = arriving.evidence(&chain[3..]);
        assert_eq!(e.border.unwrap().helo, "out.example.net");
        assert_eq!(e.before.len(), 2);

        // A client inside the site's networks is not the border: the chain is searched.
        let inside = Trust {
            internal_networks: vec![parse_network("10.0.0.0/8").unwrap()],
            session: Some(Client {
                ip: Some("10.1.2.3".parse().unwrap()),
                helo: "relay".into(),
            }),
            ..trust
        };
        assert_eq!(inside.evidence(&chain).before, chain[4..].to_vec());

        // No hop written by the site: no border, every hop is the sender's.
        let e = Trust::default().evidence(&chain[3..]);
        assert_eq!(e.border, None);
        assert_eq!(e.before.len(), 2);
    }

    #[test]
    fn networks_are_checked() {
        assert!(in_network(
            "192.0.2.77".parse().unwrap(),
            parse_network("192.0.2.0/24").unwrap()
        ));
        assert!(!in_network(
            "192.0.3.1".parse().unwrap(),
            parse_network("192.0.2.0/24").unwrap()
        ));
        assert!(in_network(
            "2001:db8::1".parse().unwrap(),
            parse_network("2001:db8::/32").unwrap()
        ));
        assert!(in_network(
            "8.8.8.8".parse().unwrap(),
            parse_network("0.0.0.0/0").unwrap()
        ));
        assert!(
            parse_network("192.0.2.0/33")
                .unwrap_err()
                .contains("0 to 32")
        );
        assert!(parse_network("mail.example").is_err());
    }
}
