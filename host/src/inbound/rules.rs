//! The envelope rules every front end applies, in one place: the declared and actual size,
//! which addresses an authenticated user may send as, the recipient limit and relay control.
//! The SMTP session checks them as each command arrives (so a client is answered at once),
//! and the inbound core checks them again for every front end, so replay (`sluice plugin
//! check`) and the milter decide as the server would. Relay control is the MTA's own business
//! behind a milter, so that front end leaves it out ([`super::FrontEnd::relay_control`]).

use std::net::IpAddr;

use crate::envelope::Decision;
use crate::smtp::reply::Reply;
use crate::smtp::session::address;

use super::Action;

/// True when `ip` is in `[relay] trusted_networks`: its mail may be relayed and is signed as
/// the operator's. A client whose address is unknown (a milter's MTA could not name it:
/// `0.0.0.0` or `::`) is never trusted, whatever the networks hold (`0.0.0.0/0` included).
/// Computed once per connection by each front end.
pub fn trusted(trusted_networks: &[ipnet::IpNet], ip: IpAddr) -> bool {
    !ip.is_unspecified() && trusted_networks.iter().any(|n| n.contains(&ip))
}

/// What is done with a message that no check refused: `decision` is what the plugins (or
/// the DMARC policy) decided at `check-message`; `discard` is set when a plugin discarded
/// the transaction at an earlier stage; `recipients_left` counts the recipients not
/// discarded; `quarantine` is a reason given at an earlier stage. A discard wins over a
/// quarantine, which wins over queueing; the quarantine reason is `check-message`'s when it
/// gave one.
pub fn action(
    decision: &Decision,
    discard: bool,
    recipients_left: usize,
    quarantine: Option<&str>,
) -> (Action, Option<String>) {
    let quarantine = match decision {
        Decision::Quarantine { reason } => Some(reason.clone()),
        _ => quarantine.map(str::to_string),
    };
    let action = if matches!(decision, Decision::Discard) || discard || recipients_left == 0 {
        Action::Discard
    } else if quarantine.is_some() {
        Action::Quarantine
    } else {
        Action::Queue
    };
    (action, quarantine)
}

/// A message larger than `max` bytes (declared with SIZE, or as received).
pub fn too_big(size: usize, max: usize) -> Option<Reply> {
    (size > max).then(|| {
        Reply::new(
            552,
            "5.3.4",
            &format!("Message size exceeds the limit of {max} bytes"),
        )
    })
}

/// MAIL FROM `sender` by the authenticated `user` (none: not authenticated), who may send as
/// the addresses of `senders` (`[auth.senders]`) or as themselves in `local_domains`.
pub fn sender_not_owned(
    user: Option<&str>,
    sender: &str,
    senders: Option<&Vec<String>>,
    local_domains: &[String],
) -> Option<Reply> {
    let user = user?;
    (!address::sender_allowed(user, sender, senders, local_domains)).then(|| {
        Reply::new(
            553,
            "5.7.1",
            &format!(
                "Sender address not owned by user {}",
                crate::inbound::message::printable(user)
            ),
        )
    })
}

/// MAIL FROM's rules in order: the declared `size` against `max`, then whether the
/// authenticated `user` may send as `sender` (see [`sender_not_owned`]). The refusal comes
/// with its reason word ([`crate::admin::decisions::Refusal::reason`]).
pub fn sender_refused(
    size: usize,
    max: usize,
    user: Option<&str>,
    sender: &str,
    senders: Option<&Vec<String>>,
    local_domains: &[String],
) -> Option<(&'static str, Reply)> {
    too_big(size, max).map(|r| ("size", r)).or_else(|| {
        sender_not_owned(user, sender, senders, local_domains).map(|r| ("sender-not-owned", r))
    })
}

/// RCPT TO `recipient` after `accepted` recipients: past `max` it is answered 452 (RFC 5321
/// §4.5.3.1.10, not an error); a recipient outside `local_domains` needs a client that may
/// relay (authenticated or in a trusted network) when `relay_control` applies.
pub fn recipient_refused(
    recipient: &str,
    accepted: usize,
    max: usize,
    may_relay: bool,
    relay_control: bool,
    local_domains: &[String],
) -> Option<Reply> {
    if accepted >= max {
        return Some(Reply::new(452, "4.5.3", "Too many recipients"));
    }
    if relay_control
        && !may_relay
        && !recipient.is_empty()
        && !address::deliverable_without_relay(recipient, local_domains)
    {
        return Some(Reply::new(550, "5.7.1", "Relaying denied"));
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_action_for_a_message_not_refused() {
        use super::{Action, Decision, action};
        let held = |r: &str| Decision::Quarantine { reason: r.into() };
        let q = Some("earlier");
        // (decision, discarded earlier, recipients left, earlier quarantine) -> (action, reason)
        type Row<'a> = (
            Decision,
            bool,
            usize,
            Option<&'a str>,
            Action,
            Option<&'a str>,
        );
        let table: [Row; 9] = [
            (Decision::Continue, false, 1, None, Action::Queue, None),
            (Decision::Accept, false, 2, None, Action::Queue, None),
            (Decision::Continue, false, 1, q, Action::Quarantine, q),
            (
                held("spam"),
                false,
                1,
                None,
                Action::Quarantine,
                Some("spam"),
            ),
            (held("spam"), false, 1, q, Action::Quarantine, Some("spam")),
            (Decision::Discard, false, 1, q, Action::Discard, q),
            (Decision::Continue, true, 1, None, Action::Discard, None),
            (Decision::Continue, false, 0, None, Action::Discard, None),
            (held("spam"), true, 1, None, Action::Discard, Some("spam")),
        ];
        for (decision, discard, left, earlier, want, reason) in table {
            let got = action(&decision, discard, left, earlier);
            assert_eq!(
                got,
                (want, reason.map(str::to_string)),
                "{decision:?} discard={discard} left={left} earlier={earlier:?}"
            );
        }
    }

    #[test]
    fn trusted_networks_never_trust_an_unknown_client() {
        use super::trusted;
        let all: Vec<ipnet::IpNet> = vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
        let lan: Vec<ipnet::IpNet> = vec!["192.0.2.0/24".parse().unwrap()];
        for (nets, ip, want) in [
            (&lan, "192.0.2.9", true),
            (&lan, "198.51.100.1", false),
            (&all, "198.51.100.1", true),
            (&all, "0.0.0.0", false),
            (&all, "::", false),
            (&Vec::new(), "127.0.0.1", false),
        ] {
            assert_eq!(trusted(nets, ip.parse().unwrap()), want, "{ip} in {nets:?}");
        }
    }

    use super::*;

    #[test]
    fn the_rules() {
        let local = vec!["example.org".to_string()];
        assert!(too_big(10, 10).is_none());
        assert_eq!(too_big(11, 10).map(|r| r.code), Some(552));
        assert!(sender_not_owned(None, "x@elsewhere.test", None, &local).is_none());
        assert!(sender_not_owned(Some("alice"), "alice@example.org", None, &local).is_none());
        assert_eq!(
            sender_not_owned(Some("alice"), "bob@example.org", None, &local).map(|r| r.code),
            Some(553)
        );
        let refused = |rcpt: &str, n: usize, relay: bool, control: bool| {
            recipient_refused(rcpt, n, 2, relay, control, &local).map(|r| r.code)
        };
        assert_eq!(refused("b@example.org", 0, false, true), None);
        assert_eq!(refused("b@example.org", 2, false, true), Some(452));
        assert_eq!(refused("b@elsewhere.test", 0, false, true), Some(550));
        assert_eq!(refused("b@elsewhere.test", 0, true, true), None);
        assert_eq!(refused("b@elsewhere.test", 0, false, false), None);
    }
}
