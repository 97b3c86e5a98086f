//! rate-limit: limits per client address, sender domain, authenticated user and recipient,
//! each with its own count and window, shared by every Sluice node using the same store.
//!
//! The window slides: the count in force is the current fixed window's count plus the previous
//! window's, weighted by how much of the previous window still overlaps the last `window`
//! seconds (the estimate Cloudflare and nginx use). It never lets a burst of twice the limit
//! through at a window boundary, as a plain fixed window would, and costs two keys per limit.
//! Every attempt counts, refused ones too, so a client that keeps trying stays limited.
//!
//! Client, sender-domain and user limits count messages (at MAIL FROM); recipient limits count
//! recipients (at RCPT TO). Over a limit: 450 4.7.1, a temporary refusal the client retries.
use std::net::IpAddr;
use std::time::Duration;

use sluice_plugin_sdk::net::Network;
use sluice_plugin_sdk::{
    Address, Config, ConfigError, Envelope, Session, Settings, Verdict, kv, log, now_ms, plugin,
};

/// One limit: at most `count` in any `window` seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Limit {
    count: i64,
    window: u64,
}

/// The settings. The counts are in the key-value store.
struct Limits {
    client: Option<Limit>,
    sender_domain: Option<Limit>,
    auth_user: Option<Limit>,
    recipient: Option<Limit>,
    ipv6_prefix: u8,
    exempt_networks: Vec<Network>,
}

const KINDS: [&str; 4] = ["client", "sender_domain", "auth_user", "recipient"];

fn limit(config: &Config, kind: &str) -> Result<Option<Limit>, ConfigError> {
    let count_key = format!("{kind}.count");
    let window_key = format!("{kind}.window_secs");
    let Some(count) = config.get::<i64>(&count_key)? else {
        if config.raw(&window_key).is_some() {
            return Err(ConfigError::new(
                &count_key,
                "set it too (the window alone limits nothing)",
            ));
        }
        return Ok(None);
    };
    if count < 1 {
        return Err(ConfigError::new(&count_key, "must be at least 1"));
    }
    let window: i64 = config.get_or(&window_key, 3600)?;
    if !(1..=7 * 86400).contains(&window) {
        return Err(ConfigError::new(&window_key, "must be 1 to 604800 seconds"));
    }
    Ok(Some(Limit {
        count,
        window: window.unsigned_abs(),
    }))
}

/// No per-transaction state: every count is in the store.
#[derive(Default)]
struct RateLimit;

plugin!(RateLimit {
    type Settings = Limits;

    fn verify_sender(&mut self, limits: &Limits, session: &Session, sender: &Address) -> Verdict {
        limits.verify_sender(session, sender)
    }

    fn check_recipient(
        &mut self,
        limits: &Limits,
        session: &Session,
        _env: &Envelope,
        rcpt: &Address,
    ) -> Verdict {
        limits.check_recipient(session, rcpt)
    }
});

impl Settings for Limits {
    fn parse(config: &Config) -> Result<Self, ConfigError> {
        let mut known: Vec<String> = vec!["ipv6_prefix".into(), "exempt_networks".into()];
        for k in KINDS {
            known.push(format!("{k}.count"));
            known.push(format!("{k}.window_secs"));
        }
        config.deny_unknown(&known.iter().map(String::as_str).collect::<Vec<_>>())?;
        let prefix: i64 = config.get_or("ipv6_prefix", 64)?;
        let ipv6_prefix = u8::try_from(prefix)
            .ok()
            .filter(|p| *p <= 128)
            .ok_or_else(|| ConfigError::new("ipv6_prefix", "must be 0 to 128"))?;
        let exempt: Vec<String> = config.get_or("exempt_networks", Vec::new())?;
        Ok(Limits {
            client: limit(config, "client")?,
            sender_domain: limit(config, "sender_domain")?,
            auth_user: limit(config, "auth_user")?,
            recipient: limit(config, "recipient")?,
            ipv6_prefix,
            exempt_networks: exempt
                .iter()
                .map(|n| Network::parse(n).map_err(|e| ConfigError::new("exempt_networks", e)))
                .collect::<Result<_, _>>()?,
        })
    }
}

impl Limits {
    fn verify_sender(&self, session: &Session, sender: &Address) -> Verdict {
        if self.exempt(session) {
            return Verdict::Continue;
        }
        if let (Some(l), Ok(ip)) = (self.client, session.client_ip.parse::<IpAddr>()) {
            let net = Network::of(ip, 32, self.ipv6_prefix).to_string();
            if let Some(v) = check("client", &net, l) {
                return v;
            }
        }
        if let (Some(l), Some(user)) = (self.auth_user, &session.auth_user)
            && let Some(v) = check("auth_user", &user.to_ascii_lowercase(), l)
        {
            return v;
        }
        if let Some(l) = self.sender_domain
            && !sender.is_null()
        {
            let domain = sender.domain().to_ascii_lowercase();
            if let Some(v) = check("sender_domain", &domain, l) {
                return v;
            }
        }
        Verdict::Continue
    }

    fn check_recipient(&self, session: &Session, rcpt: &Address) -> Verdict {
        match self.recipient {
            Some(l) if !self.exempt(session) => {
                check("recipient", &rcpt.address.to_ascii_lowercase(), l)
                    .unwrap_or(Verdict::Continue)
            }
            _ => Verdict::Continue,
        }
    }

    fn exempt(&self, session: &Session) -> bool {
        session
            .client_ip
            .parse::<IpAddr>()
            .is_ok_and(|ip| self.exempt_networks.iter().any(|n| n.contains(ip)))
    }
}

/// Counts one event for `who` under `kind`; the refusal when that passes the limit.
fn check(kind: &str, who: &str, l: Limit) -> Option<Verdict> {
    let now = now_ms();
    let window_ms = l.window * 1000;
    let current = now / window_ms;
    let ttl = Some(Duration::from_secs(l.window * 2));
    let count = kv::increment(&kv::key(&[kind, who, &current.to_string()]), 1, ttl);
    let previous = kv::get_string(&kv::key(&[kind, who, &(current - 1).to_string()]))
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    // The share of the previous window still inside the sliding window.
    let overlap = 1.0 - (now % window_ms) as f64 / window_ms as f64;
    let estimate = count as f64 + previous as f64 * overlap;
    if estimate <= l.count as f64 {
        return None;
    }
    let what = match kind {
        "client" => "messages from your address",
        "sender_domain" => "messages from your sender domain",
        "auth_user" => "messages from your account",
        _ => "messages to this recipient",
    };
    log::info(&format!(
        "{kind} {who}: {estimate:.0} in the last {} s, over the limit of {}",
        l.window, l.count
    ));
    Some(Verdict::tempfail(
        450,
        "4.7.1",
        &format!(
            "Rate limit reached: at most {} {what} per {} seconds; try again later",
            l.count, l.window
        ),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sluice_plugin_sdk::ConfigValue;
    use sluice_plugin_sdk::Plugin as _;
    use sluice_plugin_sdk::testing::{address, clear_kv, session, set_config, set_now};

    fn plugin(cfg: &[(&str, ConfigValue)]) -> Limits {
        clear_kv();
        set_config(cfg);
        Limits::parse(&Config).unwrap()
    }

    fn refused(v: &Verdict) -> bool {
        match v {
            Verdict::Tempfail(r) => {
                assert_eq!((r.code, r.enhanced.as_str()), (450, "4.7.1"));
                true
            }
            Verdict::Continue => false,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_window_slides_instead_of_resetting_at_its_boundary() {
        let p = plugin(&[
            ("client.count", ConfigValue::Integer(10)),
            ("client.window_secs", ConfigValue::Integer(60)),
        ]);
        let s = session();
        let sender = address("a@x.test");
        // 10 messages late in one window pass; the 11th is refused.
        let t0 = 1_700_000_040_000 + 50_000; // 50 s into a minute-long window
        set_now(Some(t0));
        for i in 0..10 {
            assert!(
                !refused(&RateLimit.verify_sender(&p, &s, &sender)),
                "message {i}"
            );
        }
        assert!(refused(&RateLimit.verify_sender(&p, &s, &sender)));
        // Just after the boundary, most of the previous window still counts: refused.
        set_now(Some(t0 + 15_000));
        assert!(refused(&RateLimit.verify_sender(&p, &s, &sender)));
        // A whole window later the old count has slid out.
        set_now(Some(t0 + 70_000 + 60_000));
        assert!(!refused(&RateLimit.verify_sender(&p, &s, &sender)));
        // Another client has its own count.
        let mut other = session();
        other.client_ip = "198.51.100.1".into();
        set_now(Some(t0));
        assert!(!refused(&RateLimit.verify_sender(&p, &other, &sender)));
        set_now(None);
    }

    #[test]
    fn users_domains_and_recipients_have_their_own_limits() {
        let p = plugin(&[
            ("sender_domain.count", ConfigValue::Integer(2)),
            ("auth_user.count", ConfigValue::Integer(3)),
            ("recipient.count", ConfigValue::Integer(1)),
            (
                "exempt_networks",
                ConfigValue::TextList(vec!["203.0.113.0/24".into()]),
            ),
        ]);
        let mut s = session();
        assert!(!refused(&RateLimit.verify_sender(
            &p,
            &s,
            &address("a@big.test")
        )));
        assert!(!refused(&RateLimit.verify_sender(
            &p,
            &s,
            &address("b@BIG.test")
        )));
        assert!(refused(&RateLimit.verify_sender(
            &p,
            &s,
            &address("c@big.test")
        )));
        assert!(!refused(&RateLimit.verify_sender(
            &p,
            &s,
            &address("c@small.test")
        )));
        s.auth_user = Some("Alice".into());
        for _ in 0..3 {
            assert!(!refused(&RateLimit.verify_sender(&p, &s, &address(""))));
        }
        assert!(refused(&RateLimit.verify_sender(&p, &s, &address(""))));
        let env = Envelope {
            sender: address("a@x.test"),
            recipients: Vec::new(),
        };
        assert!(!refused(&RateLimit.check_recipient(
            &p,
            &s,
            &env,
            &address("r@y.test")
        )));
        assert!(refused(&RateLimit.check_recipient(
            &p,
            &s,
            &env,
            &address("R@y.test")
        )));
        let mut exempt = session();
        exempt.client_ip = "203.0.113.5".into();
        assert!(!refused(&RateLimit.check_recipient(
            &p,
            &exempt,
            &env,
            &address("r@y.test")
        )));
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        set_config(&[("client.window_secs", ConfigValue::Integer(60))]);
        let e = Limits::parse(&Config).err().unwrap().to_string();
        assert!(e.contains("client.count"), "{e}");
        set_config(&[("recipient.count", ConfigValue::Integer(0))]);
        assert!(
            Limits::parse(&Config)
                .err()
                .unwrap()
                .to_string()
                .contains("recipient.count")
        );
        set_config(&[
            ("client.count", ConfigValue::Integer(5)),
            ("client.window_secs", ConfigValue::Integer(0)),
        ]);
        assert!(Limits::parse(&Config).is_err());
    }
}
