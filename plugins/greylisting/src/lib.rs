//! greylisting: the first delivery attempt of an unknown (client network, sender, recipient)
//! triplet is refused with 451 4.7.1; a retry after `delay_secs` and within `retry_window_secs`
//! passes, and the triplet passes without delay for `pass_secs` after. A client network whose
//! triplets passed `allow_after_passes` times is let through without delay for `allow_secs`.
//!
//! State lives in the host's key-value store (capability `kv`), so relays sharing one Redis
//! share one greylist. Keys: `t:NETWORK:SENDER:RECIPIENT` (a triplet: its first-seen time, or
//! `pass`) and `n:NETWORK` (passes counted for the network).
use std::net::IpAddr;
use std::time::Duration;

use sluice_plugin_sdk::net::Network;
use sluice_plugin_sdk::{
    Address, Config, ConfigError, Envelope, Session, Settings, Verdict, domain_eq, kv, log, now_ms,
    plugin,
};

/// The value of a triplet that passed.
const PASSED: &str = "pass";

/// The settings. The greylist itself is in the key-value store.
struct Greylist {
    delay: u64,
    retry_window: u64,
    pass_secs: u64,
    allow_after_passes: i64,
    allow_secs: u64,
    ipv4_prefix: u8,
    ipv6_prefix: u8,
    allow_networks: Vec<Network>,
    allow_sender_domains: Vec<String>,
    allow_recipient_domains: Vec<String>,
}

fn secs(config: &Config, key: &str, default: u64, max: u64) -> Result<u64, ConfigError> {
    let v: i64 = config.get_or(key, i64::try_from(default).unwrap_or(i64::MAX))?;
    u64::try_from(v)
        .ok()
        .filter(|v| *v <= max)
        .ok_or_else(|| ConfigError::new(key, format!("must be 0 to {max} seconds")))
}

fn prefix(config: &Config, key: &str, default: u8, max: u8) -> Result<u8, ConfigError> {
    let v: i64 = config.get_or(key, i64::from(default))?;
    u8::try_from(v)
        .ok()
        .filter(|v| *v <= max)
        .ok_or_else(|| ConfigError::new(key, format!("must be 0 to {max}")))
}

fn domains(config: &Config, key: &str) -> Result<Vec<String>, ConfigError> {
    let list: Vec<String> = config.get_or(key, Vec::new())?;
    for d in &list {
        if d.is_empty() || d.contains(['@', ' ']) {
            return Err(ConfigError::new(key, format!("{d:?} is not a domain")));
        }
    }
    Ok(list
        .into_iter()
        .map(|d| d.trim_start_matches('.').to_ascii_lowercase())
        .collect())
}

/// True when `domain` is `listed` or one of its subdomains.
fn in_domains(domain: &str, listed: &[String]) -> bool {
    listed.iter().any(|l| {
        domain_eq(domain, l)
            || domain
                .to_ascii_lowercase()
                .strip_suffix(l.as_str())
                .is_some_and(|head| head.ends_with('.'))
    })
}

const DAY: u64 = 86400;

/// No per-transaction state: each recipient is one triplet, looked up in the store.
#[derive(Default)]
struct Greylisting;

plugin!(Greylisting {
    type Settings = Greylist;

    fn check_recipient(
        &mut self,
        greylist: &Greylist,
        session: &Session,
        env: &Envelope,
        rcpt: &Address,
    ) -> Verdict {
        greylist.check_recipient(session, env, rcpt)
    }
});

impl Settings for Greylist {
    fn parse(config: &Config) -> Result<Self, ConfigError> {
        config.deny_unknown(&[
            "delay_secs",
            "retry_window_secs",
            "pass_secs",
            "allow_after_passes",
            "allow_secs",
            "ipv4_prefix",
            "ipv6_prefix",
            "allow_networks",
            "allow_sender_domains",
            "allow_recipient_domains",
        ])?;
        let networks: Vec<String> = config.get_or("allow_networks", Vec::new())?;
        let allow_networks = networks
            .iter()
            .map(|n| Network::parse(n).map_err(|e| ConfigError::new("allow_networks", e)))
            .collect::<Result<_, _>>()?;
        let g = Greylist {
            delay: secs(config, "delay_secs", 300, DAY)?,
            retry_window: secs(config, "retry_window_secs", 4 * 3600, 7 * DAY)?,
            pass_secs: secs(config, "pass_secs", 36 * DAY, 90 * DAY)?,
            allow_after_passes: config.get_or("allow_after_passes", 5)?,
            allow_secs: secs(config, "allow_secs", 36 * DAY, 90 * DAY)?,
            ipv4_prefix: prefix(config, "ipv4_prefix", 24, 32)?,
            ipv6_prefix: prefix(config, "ipv6_prefix", 64, 128)?,
            allow_networks,
            allow_sender_domains: domains(config, "allow_sender_domains")?,
            allow_recipient_domains: domains(config, "allow_recipient_domains")?,
        };
        if g.retry_window == 0 {
            return Err(ConfigError::new("retry_window_secs", "must be at least 1"));
        }
        if g.allow_after_passes < 0 {
            return Err(ConfigError::new(
                "allow_after_passes",
                "must be 0 (off) or more",
            ));
        }
        Ok(g)
    }
}

impl Greylist {
    fn check_recipient(&self, session: &Session, env: &Envelope, rcpt: &Address) -> Verdict {
        if session.auth_user.is_some() {
            return Verdict::Continue;
        }
        let Ok(ip) = session.client_ip.parse::<IpAddr>() else {
            return Verdict::Continue; // replay without a client address
        };
        if self.allow_networks.iter().any(|n| n.contains(ip))
            || (!env.sender.is_null()
                && in_domains(env.sender.domain(), &self.allow_sender_domains))
            || in_domains(rcpt.domain(), &self.allow_recipient_domains)
        {
            return Verdict::Continue;
        }
        let network = Network::of(ip, self.ipv4_prefix, self.ipv6_prefix).to_string();
        let network_key = kv::key(&["n", &network]);
        if self.allow_after_passes > 0
            && kv::get_string(&network_key)
                .and_then(|n| n.parse::<i64>().ok())
                .is_some_and(|n| n >= self.allow_after_passes)
        {
            return Verdict::Continue;
        }
        let sender = if env.sender.is_null() {
            "<>".to_string()
        } else {
            env.sender.address.to_ascii_lowercase()
        };
        let recipient = rcpt.address.to_ascii_lowercase();
        let key = kv::key(&["t", &network, &sender, &recipient]);
        let now = now_ms() / 1000;
        let seen = kv::get_string(&key);
        match seen.as_deref() {
            Some(PASSED) => Verdict::Continue,
            Some(first) => {
                let first: u64 = first.parse().unwrap_or(now);
                let waited = now.saturating_sub(first);
                if waited < self.delay {
                    return self.greylist(self.delay - waited);
                }
                // Exactly one of racing retries turns the entry into a pass and counts it.
                if kv::compare_and_set(
                    &key,
                    Some(first.to_string().as_bytes()),
                    PASSED,
                    Some(Duration::from_secs(self.pass_secs)),
                ) && self.allow_after_passes > 0
                {
                    kv::increment(&network_key, 1, Some(Duration::from_secs(self.allow_secs)));
                }
                log::debug(&format!(
                    "{network} {sender} {recipient}: passed after {waited} s"
                ));
                Verdict::Continue
            }
            None => {
                let ttl = Duration::from_secs(self.delay + self.retry_window);
                kv::create(&key, now.to_string(), Some(ttl));
                log::info(&format!("{network} {sender} {recipient}: greylisted"));
                self.greylist(self.delay)
            }
        }
    }

    fn greylist(&self, wait: u64) -> Verdict {
        Verdict::tempfail(
            451,
            "4.7.1",
            &format!("Greylisted: please try again in {} seconds", wait.max(1)),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sluice_plugin_sdk::testing::{address, clear_kv, session, set_config, set_now};
    use sluice_plugin_sdk::{ConfigValue, Envelope};

    fn env(from: &str) -> Envelope {
        Envelope {
            sender: address(from),
            recipients: Vec::new(),
        }
    }

    fn plugin(extra: &[(&str, ConfigValue)]) -> Greylist {
        clear_kv();
        set_config(extra);
        Greylist::parse(&Config).unwrap()
    }

    fn code(v: &Verdict) -> Option<u16> {
        match v {
            Verdict::Tempfail(r) => Some(r.code),
            Verdict::Continue => None,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn first_attempt_waits_retry_after_the_delay_passes_then_the_network_is_allowed() {
        let g = plugin(&[("allow_after_passes", ConfigValue::Integer(2))]);
        let s = session(); // 192.0.2.1
        let t0 = 1_700_000_000_000;
        set_now(Some(t0));
        let v = g.check_recipient(&s, &env("a@sender.test"), &address("bob@example.org"));
        assert_eq!(code(&v), Some(451));
        let Verdict::Tempfail(r) = &v else {
            unreachable!()
        };
        assert_eq!(r.enhanced, "4.7.1");
        assert_eq!(r.text, "Greylisted: please try again in 300 seconds");
        // Too early: still greylisted, and told how long is left.
        set_now(Some(t0 + 100_000));
        let Verdict::Tempfail(r) =
            g.check_recipient(&s, &env("a@sender.test"), &address("bob@example.org"))
        else {
            panic!()
        };
        assert!(r.text.contains("200 seconds"), "{}", r.text);
        // After the delay it passes, and keeps passing.
        set_now(Some(t0 + 301_000));
        for _ in 0..2 {
            let v = g.check_recipient(&s, &env("a@sender.test"), &address("bob@example.org"));
            assert_eq!(code(&v), None);
        }
        // Another client in the same /24 shares the triplet.
        let mut other = session();
        other.client_ip = "192.0.2.200".into();
        assert_eq!(
            code(&g.check_recipient(&other, &env("A@Sender.test"), &address("Bob@example.org"))),
            None
        );
        // A new triplet is greylisted; once it passes, the network has 2 passes and is allowed.
        set_now(Some(t0 + 400_000));
        assert_eq!(
            code(&g.check_recipient(&s, &env("c@sender.test"), &address("bob@example.org"))),
            Some(451)
        );
        set_now(Some(t0 + 800_000));
        assert_eq!(
            code(&g.check_recipient(&s, &env("c@sender.test"), &address("bob@example.org"))),
            None
        );
        assert_eq!(
            code(&g.check_recipient(&s, &env("new@elsewhere.test"), &address("x@example.org"))),
            None
        );
        set_now(None);
    }

    #[test]
    fn a_retry_after_the_window_starts_over() {
        let g = plugin(&[
            ("delay_secs", ConfigValue::Integer(60)),
            ("retry_window_secs", ConfigValue::Integer(600)),
        ]);
        let s = session();
        let t0 = 1_700_000_000_000;
        set_now(Some(t0));
        assert_eq!(
            code(&g.check_recipient(&s, &env("a@x.test"), &address("b@y.test"))),
            Some(451)
        );
        set_now(Some(t0 + 661_000));
        assert_eq!(
            code(&g.check_recipient(&s, &env("a@x.test"), &address("b@y.test"))),
            Some(451)
        );
        set_now(None);
    }

    #[test]
    fn allowlists_and_authenticated_clients_skip_it() {
        let g = plugin(&[
            (
                "allow_networks",
                ConfigValue::TextList(vec!["192.0.2.0/28".into()]),
            ),
            (
                "allow_sender_domains",
                ConfigValue::TextList(vec!["partner.test".into()]),
            ),
            (
                "allow_recipient_domains",
                ConfigValue::TextList(vec!["abuse.test".into()]),
            ),
        ]);
        let s = session();
        assert_eq!(
            code(&g.check_recipient(&s, &env("a@x.test"), &address("b@y.test"))),
            None
        );
        let mut far = session();
        far.client_ip = "198.51.100.9".into();
        assert_eq!(
            code(&g.check_recipient(&far, &env("a@mail.partner.test"), &address("b@y.test"))),
            None
        );
        assert_eq!(
            code(&g.check_recipient(&far, &env("a@x.test"), &address("b@ABUSE.test"))),
            None
        );
        assert_eq!(
            code(&g.check_recipient(&far, &env("a@notpartner.test"), &address("b@y.test"))),
            Some(451)
        );
        let mut authed = far.clone();
        authed.auth_user = Some("alice".into());
        assert_eq!(
            code(&g.check_recipient(&authed, &env("a@z.test"), &address("b@y.test"))),
            None
        );
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        set_config(&[(
            "allow_networks",
            ConfigValue::TextList(vec!["10.0.0.0/40".into()]),
        )]);
        let e = Greylist::parse(&Config).err().unwrap();
        assert!(e.to_string().contains("allow_networks"), "{e}");
        set_config(&[("delay_secs", ConfigValue::Integer(-1))]);
        assert!(
            Greylist::parse(&Config)
                .err()
                .unwrap()
                .to_string()
                .contains("delay_secs")
        );
        set_config(&[("nonsense", ConfigValue::Integer(1))]);
        assert!(Greylist::parse(&Config).is_err());
    }
}
