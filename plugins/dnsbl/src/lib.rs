//! dnsbl: DNS blocklists (and allowlists) of client addresses, Spamhaus-style, and domain
//! blocklists for the links in a message (as Sluice parsed it: decoded parts, registrable
//! domains by the Public Suffix List). Per zone, a listing either refuses the client at
//! RCPT TO (`action = "reject"`), adds a weighted symbol to the spam score (`"score"`), or —
//! for an allowlist (`"allow"`) — exempts the client from the refusing zones and adds its
//! (negative) score.
//!
//! Answers are read as DNS lists define them: an A record in 127.0.0.0/8 means listed (only
//! the `codes` given, when the zone's meanings are configured); `127.255.255.x` means the list
//! refused the query (an open resolver, a quota) and is treated as not listed, with a warning;
//! anything outside 127/8 is a broken zone or a hijacked NXDOMAIN and is ignored, with a
//! warning; NXDOMAIN is not listed; and a lookup without an answer (timeout, SERVFAIL) is not
//! listed either: mail is not refused because a list is down.
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use sluice_plugin_sdk::dns::{self, LookupError};
use sluice_plugin_sdk::net::Network;
use sluice_plugin_sdk::{
    Address, Config, ConfigError, Envelope, Message, MessageVerdict, Session, Settings, Verdict,
    log, plugin, view,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Reject,
    Score,
    Allow,
}

#[derive(Debug, Clone)]
struct Zone {
    /// The name in the configuration (`zones.NAME`), for symbols.
    name: String,
    zone: String,
    action: Action,
    score: f64,
    /// Return codes that count, with their meaning; empty: any 127.0.0.0/8 answer.
    codes: Vec<(Ipv4Addr, String)>,
}

/// A zone's verdict on one name: listed (with the meaning of the code), or not.
type Listing = Option<String>;

/// The settings: the zones to ask and who is exempt.
struct Lists {
    zones: Vec<Zone>,
    uri_zones: Vec<Zone>,
    max_uri_lookups: usize,
    exempt_networks: Vec<Network>,
}

/// The state of one transaction.
#[derive(Default)]
struct Dnsbl {
    /// The client's listings, looked up once per transaction (at the first recipient).
    client: Option<Vec<Listing>>,
}

fn zone_names(config: &Config, prefix: &str) -> BTreeSet<String> {
    config
        .keys()
        .iter()
        .filter_map(|k| {
            k.strip_prefix(prefix)?
                .split_once('.')
                .map(|(n, _)| n.to_string())
        })
        .collect()
}

fn read_zones(config: &Config, prefix: &str, uri: bool) -> Result<Vec<Zone>, ConfigError> {
    let mut out = Vec::new();
    for name in zone_names(config, prefix) {
        let key = |k: &str| format!("{prefix}{name}.{k}");
        for k in config
            .keys()
            .iter()
            .filter(|k| k.starts_with(&format!("{prefix}{name}.")))
        {
            let field = &k[prefix.len() + name.len() + 1..];
            if !["zone", "action", "score", "codes"].contains(&field) {
                return Err(ConfigError::new(
                    k,
                    "unknown setting; a zone has zone, action, score and codes",
                ));
            }
        }
        let zone: String = config.require(&key("zone"))?;
        let zone = zone.trim_end_matches('.').to_ascii_lowercase();
        if zone.is_empty() || !zone.contains('.') || zone.contains(' ') {
            return Err(ConfigError::new(
                &key("zone"),
                format!("{zone:?} is not a DNS zone"),
            ));
        }
        let action = match config.get::<String>(&key("action"))?.as_deref() {
            None | Some("score") => Action::Score,
            Some("reject") if !uri => Action::Reject,
            Some("allow") if !uri => Action::Allow,
            Some(other) => {
                return Err(ConfigError::new(
                    &key("action"),
                    format!(
                        "{other:?}: expected {}",
                        if uri {
                            "\"score\""
                        } else {
                            "\"reject\", \"score\" or \"allow\""
                        }
                    ),
                ));
            }
        };
        let default_score = match action {
            Action::Allow => -5.0,
            Action::Reject => 0.0,
            Action::Score => 3.0,
        };
        let score: f64 = config.get_or(&key("score"), default_score)?;
        if !(-100.0..=100.0).contains(&score) {
            return Err(ConfigError::new(
                &key("score"),
                "must be between -100 and 100",
            ));
        }
        let mut codes = Vec::new();
        for c in config.get_or::<Vec<String>>(&key("codes"), Vec::new())? {
            let (ip, meaning) = c.split_once('=').unwrap_or((c.as_str(), ""));
            let ip: Ipv4Addr = ip.trim().parse().map_err(|_| {
                ConfigError::new(
                    &key("codes"),
                    format!("{c:?}: expected \"127.0.0.N=MEANING\""),
                )
            })?;
            codes.push((ip, meaning.trim().to_string()));
        }
        out.push(Zone {
            name: name.to_ascii_uppercase().replace('-', "_"),
            zone,
            action,
            score,
            codes,
        });
    }
    Ok(out)
}

impl Settings for Lists {
    fn parse(config: &Config) -> Result<Self, ConfigError> {
        for k in config.keys() {
            if !(k.starts_with("zones.")
                || k.starts_with("uri_zones.")
                || k == "max_uri_lookups"
                || k == "exempt_networks")
            {
                return Err(ConfigError::new(
                    &k,
                    "unknown setting; known: zones.NAME.*, uri_zones.NAME.*, max_uri_lookups, exempt_networks",
                ));
            }
        }
        let max: i64 = config.get_or("max_uri_lookups", 10)?;
        if !(0..=40).contains(&max) {
            return Err(ConfigError::new("max_uri_lookups", "must be 0 to 40"));
        }
        let exempt: Vec<String> = config.get_or("exempt_networks", Vec::new())?;
        Ok(Lists {
            zones: read_zones(config, "zones.", false)?,
            uri_zones: read_zones(config, "uri_zones.", true)?,
            max_uri_lookups: usize::try_from(max).unwrap_or(0),
            exempt_networks: exempt
                .iter()
                .map(|n| Network::parse(n).map_err(|e| ConfigError::new("exempt_networks", e)))
                .collect::<Result<_, _>>()?,
        })
    }
}

plugin!(Dnsbl {
    type Settings = Lists;

    fn check_recipient(
        &mut self,
        lists: &Lists,
        session: &Session,
        _env: &Envelope,
        _rcpt: &Address,
    ) -> Verdict {
        let Some(ip) = lists.client_ip(session) else {
            return Verdict::Continue;
        };
        let listings = self.client_listings(lists, ip).to_vec();
        let allowed = lists
            .zones
            .iter()
            .zip(&listings)
            .any(|(z, l)| z.action == Action::Allow && l.is_some());
        if allowed {
            return Verdict::Continue;
        }
        for (z, l) in lists.zones.iter().zip(&listings) {
            if let (Action::Reject, Some(meaning)) = (z.action, l) {
                let why = parenthesised(meaning);
                return Verdict::reject(
                    554,
                    "5.7.1",
                    &format!(
                        "Service unavailable; client [{ip}] blocked using {}{why}",
                        z.zone
                    ),
                );
            }
        }
        Verdict::Continue
    }

    fn check_message(
        &mut self,
        lists: &Lists,
        session: &Session,
        _env: &Envelope,
        _msg: &Message,
    ) -> MessageVerdict {
        let mut v = MessageVerdict::default();
        if let Some(ip) = lists.client_ip(session) {
            let listings = self.client_listings(lists, ip).to_vec();
            for (z, l) in lists.zones.iter().zip(&listings) {
                if let (Action::Score | Action::Allow, Some(meaning)) = (z.action, l) {
                    let detail = format!("{ip} listed in {}{}", z.zone, parenthesised(meaning));
                    v = v.symbol(&format!("DNSBL_{}", z.name), z.score, &detail);
                }
            }
        }
        if lists.uri_zones.is_empty() || lists.max_uri_lookups == 0 {
            return v;
        }
        let domains = link_domains(lists.max_uri_lookups);
        for z in &lists.uri_zones {
            for d in &domains {
                if let Some(meaning) = listed(z, &format!("{d}.{}", z.zone)) {
                    let detail = format!("{d} listed in {}{}", z.zone, parenthesised(&meaning));
                    v = v.symbol(&format!("URIBL_{}", z.name), z.score, &detail);
                    break; // one symbol per zone
                }
            }
        }
        v
    }
});

impl Lists {
    fn client_ip(&self, session: &Session) -> Option<IpAddr> {
        if session.auth_user.is_some() {
            return None;
        }
        let ip: IpAddr = session.client_ip.parse().ok()?;
        let exempt = self.exempt_networks.iter().any(|n| n.contains(ip))
            || ip.is_loopback()
            || matches!(ip, IpAddr::V4(v4) if v4.is_private());
        (!exempt).then_some(ip)
    }
}

impl Dnsbl {
    fn client_listings(&mut self, lists: &Lists, ip: IpAddr) -> &[Listing] {
        self.client.get_or_insert_with(|| {
            lists
                .zones
                .iter()
                .map(|z| listed(z, &dns::list_name(ip, &z.zone)))
                .collect()
        })
    }
}

/// ` (MEANING)` for a listing's configured meaning, nothing when it has none.
fn parenthesised(meaning: &str) -> String {
    if meaning.is_empty() {
        String::new()
    } else {
        format!(" ({meaning})")
    }
}

/// Looks `name` up in `zone`: `Some(meaning)` when listed.
fn listed(zone: &Zone, name: &str) -> Listing {
    let answers = match dns::a(name) {
        Ok(a) => a,
        Err(LookupError::Nxdomain | LookupError::NoRecords) => return None,
        Err(e) => {
            log::debug(&format!(
                "{}: {name}: {e:?}; counted as not listed",
                zone.zone
            ));
            return None;
        }
    };
    for a in &answers {
        let o = a.octets();
        if o[0] != 127 {
            log::warn(&format!(
                "{}: {name} answered {a}, outside 127.0.0.0/8: ignored (a broken zone or an NXDOMAIN-rewriting resolver)",
                zone.zone
            ));
            continue;
        }
        if o[1] == 255 && o[2] == 255 {
            log::warn(&format!(
                "{}: the list refused the query for {name} ({a}): counted as not listed; use your own resolver, not a public one",
                zone.zone
            ));
            continue;
        }
        if zone.codes.is_empty() {
            return Some(String::new());
        }
        if let Some((_, meaning)) = zone.codes.iter().find(|(c, _)| c == a) {
            return Some(meaning.clone());
        }
    }
    None
}

/// The registrable domains of the message's links, in order of appearance, at most `max`:
/// Sluice's parsed view finds them in every text and HTML part, decoded (a link in a base64
/// part counts), `href`s included, and takes the registrable domain by the Public Suffix List
/// (`shop.example.co.uk` is looked up as `example.co.uk`, not `co.uk`). Links to IP addresses
/// have none and are skipped.
fn link_domains(max: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for link in view::links() {
        if out.len() >= max {
            break;
        }
        if let Some(domain) = link.registrable_domain
            && !out.contains(&domain)
        {
            out.push(domain);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sluice_plugin_sdk::testing::{
        View, address, clear_dns, dns_lookups, session, set_config, set_dns, set_view, take_logs,
    };
    use sluice_plugin_sdk::{ConfigValue, Plugin};

    fn text(s: &str) -> ConfigValue {
        ConfigValue::Text(s.into())
    }

    /// One transaction: the parsed settings and a fresh state.
    struct Tx(Lists, Dnsbl);

    impl Tx {
        fn check_recipient(&mut self, s: &Session, e: &Envelope, r: &Address) -> Verdict {
            self.1.check_recipient(&self.0, s, e, r)
        }
        fn check_message(&mut self, s: &Session, e: &Envelope, m: &Message) -> MessageVerdict {
            self.1.check_message(&self.0, s, e, m)
        }
    }

    fn plugin(cfg: &[(&str, ConfigValue)]) -> Tx {
        set_config(cfg);
        Tx(Lists::parse(&Config).unwrap(), Dnsbl::default())
    }

    fn env() -> Envelope {
        Envelope {
            sender: address("a@x.test"),
            recipients: Vec::new(),
        }
    }

    fn listed_as(name: &str, code: &str) {
        set_dns("a", name, Ok(vec![code.to_string()]));
    }

    #[test]
    fn a_rejecting_zone_refuses_at_rcpt_with_the_meaning_of_its_code() {
        clear_dns();
        let mut p = plugin(&[
            ("zones.zen.zone", text("zen.test")),
            ("zones.zen.action", text("reject")),
            (
                "zones.zen.codes",
                ConfigValue::TextList(vec!["127.0.0.2=SBL".into(), "127.0.0.4=XBL".into()]),
            ),
        ]);
        listed_as("1.2.0.192.zen.test", "127.0.0.4");
        let v = p.check_recipient(&session(), &env(), &address("b@y.test"));
        let Verdict::Reject(r) = v else {
            panic!("{v:?}")
        };
        assert_eq!((r.code, r.enhanced.as_str()), (554, "5.7.1"));
        assert_eq!(
            r.text,
            "Service unavailable; client [192.0.2.1] blocked using zen.test (XBL)"
        );
        // One lookup per transaction, whatever the number of recipients.
        p.check_recipient(&session(), &env(), &address("c@y.test"));
        assert_eq!(dns_lookups(), 1);
        // A code the zone's meanings do not include does not count.
        listed_as("1.2.0.192.zen.test", "127.0.0.10");
        let mut p2 = plugin(&[
            ("zones.zen.zone", text("zen.test")),
            ("zones.zen.action", text("reject")),
            (
                "zones.zen.codes",
                ConfigValue::TextList(vec!["127.0.0.2=SBL".into()]),
            ),
        ]);
        assert_eq!(
            p2.check_recipient(&session(), &env(), &address("b@y.test")),
            Verdict::Continue
        );
    }

    #[test]
    fn refused_queries_broken_answers_and_failures_are_not_listings() {
        for (answer, warns) in [
            (Ok(vec!["127.255.255.254".to_string()]), true),
            (Ok(vec!["10.0.0.1".to_string()]), true),
            (Err(LookupError::Temporary("timeout".into())), false),
            (Err(LookupError::Nxdomain), false),
        ] {
            clear_dns();
            take_logs();
            set_dns("a", "1.2.0.192.zen.test", answer);
            let mut p = plugin(&[
                ("zones.zen.zone", text("zen.test")),
                ("zones.zen.action", text("reject")),
            ]);
            assert_eq!(
                p.check_recipient(&session(), &env(), &address("b@y.test")),
                Verdict::Continue
            );
            let logged = take_logs().iter().any(|(level, l)| {
                *level == sluice_plugin_sdk::Level::Warn && l.contains("zen.test")
            });
            assert_eq!(logged, warns);
        }
    }

    #[test]
    fn score_zones_allowlists_and_link_domains_become_symbols() {
        clear_dns();
        let mut p = plugin(&[
            ("zones.zen.zone", text("zen.test")),
            ("zones.zen.action", text("reject")),
            ("zones.bl.zone", text("bl.test")),
            ("zones.bl.score", ConfigValue::Float(2.5)),
            ("zones.good.zone", text("wl.test")),
            ("zones.good.action", text("allow")),
            ("uri_zones.dbl.zone", text("dbl.test")),
        ]);
        listed_as("1.2.0.192.zen.test", "127.0.0.2");
        listed_as("1.2.0.192.bl.test", "127.0.0.2");
        listed_as("1.2.0.192.wl.test", "127.0.0.2");
        listed_as("bad.test.dbl.test", "127.0.1.2");
        // Allowlisted: the rejecting zone does not refuse.
        assert_eq!(
            p.check_recipient(&session(), &env(), &address("b@y.test")),
            Verdict::Continue
        );
        // The host's view of the message's links (a link to an IP address has no domain).
        let link = |url: &str, host: &str, domain: Option<&str>| view::Link {
            url: url.into(),
            host: host.into(),
            registrable_domain: domain.map(str::to_string),
            part: 0,
        };
        set_view(View {
            links: vec![
                link(
                    "HTTPS://www.Bad.test/offer",
                    "www.bad.test",
                    Some("bad.test"),
                ),
                link("http://good.test/", "good.test", Some("good.test")),
                link("http://10.0.0.1/", "10.0.0.1", None),
            ],
            ..View::default()
        });
        let msg = Message {
            headers: Vec::new(),
            raw: b"Subject: x\r\n\r\nthe links are the view's\r\n".to_vec(),
        };
        let v = p.check_message(&session(), &env(), &msg);
        let names: Vec<(&str, f64)> = v
            .symbols
            .iter()
            .map(|s| (s.name.as_str(), s.score))
            .collect();
        assert_eq!(
            names,
            [("DNSBL_BL", 2.5), ("DNSBL_GOOD", -5.0), ("URIBL_DBL", 3.0)]
        );
        assert!(v.symbols[2].detail.contains("bad.test"));
    }

    #[test]
    fn authenticated_exempt_and_private_clients_are_not_looked_up() {
        clear_dns();
        let mut p = plugin(&[
            ("zones.zen.zone", text("zen.test")),
            ("zones.zen.action", text("reject")),
            (
                "exempt_networks",
                ConfigValue::TextList(vec!["192.0.2.0/24".into()]),
            ),
        ]);
        listed_as("1.2.0.192.zen.test", "127.0.0.2");
        assert_eq!(
            p.check_recipient(&session(), &env(), &address("b@y.test")),
            Verdict::Continue
        );
        let mut local = session();
        local.client_ip = "10.1.2.3".into();
        let mut p = plugin(&[
            ("zones.zen.zone", text("zen.test")),
            ("zones.zen.action", text("reject")),
        ]);
        p.check_recipient(&local, &env(), &address("b@y.test"));
        assert_eq!(dns_lookups(), 0);
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        set_config(&[("zones.zen.action", text("reject"))]);
        assert!(
            Lists::parse(&Config)
                .err()
                .unwrap()
                .to_string()
                .contains("zones.zen.zone")
        );
        set_config(&[
            ("zones.zen.zone", text("zen.test")),
            ("zones.zen.action", text("block")),
        ]);
        assert!(
            Lists::parse(&Config)
                .err()
                .unwrap()
                .to_string()
                .contains("zones.zen.action")
        );
        set_config(&[
            ("uri_zones.d.zone", text("dbl.test")),
            ("uri_zones.d.action", text("reject")),
        ]);
        assert!(Lists::parse(&Config).is_err());
        set_config(&[
            ("zones.zen.zone", text("zen.test")),
            ("zones.zen.codes", ConfigValue::TextList(vec!["x".into()])),
        ]);
        assert!(
            Lists::parse(&Config)
                .err()
                .unwrap()
                .to_string()
                .contains("codes")
        );
        set_config(&[("zone", text("zen.test"))]);
        assert!(Lists::parse(&Config).is_err());
    }

    #[test]
    fn link_domains_are_registrable_domains_in_order_without_repeats() {
        let link = |host: &str, domain: Option<&str>| view::Link {
            url: format!("http://{host}/"),
            host: host.into(),
            registrable_domain: domain.map(str::to_string),
            part: 1,
        };
        set_view(View {
            links: vec![
                link("a.example.test", Some("example.test")),
                link("b.example.test", Some("example.test")),
                link("1.2.3.4", None),
                link("shop.example.co.uk", Some("example.co.uk")),
            ],
            ..View::default()
        });
        assert_eq!(link_domains(10), ["example.test", "example.co.uk"]);
        assert_eq!(link_domains(1), ["example.test"]);
    }
}
