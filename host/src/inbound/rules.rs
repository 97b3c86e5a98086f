//! The envelope rules every front end applies, in one place: the declared and actual size,
//! which addresses an authenticated user may send as, the recipient limit and relay control.
//! The SMTP session checks them as each command arrives (so a client is answered at once),
//! and the inbound core checks them again for every front end, so replay (`sluice plugin
//! check`) and the milter decide as the server would. Relay control is the MTA's own business
//! behind a milter, so that front end leaves it out ([`super::FrontEnd::relay_control`]).

use crate::reply::Reply;
use crate::session::address;

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
                crate::message::printable(user)
            ),
        )
    })
}

/// MAIL FROM's rules in order: the declared `size` against `max`, then whether the
/// authenticated `user` may send as `sender` (see [`sender_not_owned`]). The refusal comes
/// with its reason word ([`crate::decisions::Refusal::reason`]).
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
