//! MAIL FROM and RCPT TO: sequencing, relay control, sender ownership for authenticated
//! users, parameter checks; and the core's decisions reported back.

use smtp_proto::{MailFrom, RcptTo};

use super::{Session, State, Step, address};
use crate::config::ListenerKind;
use crate::envelope::{Decision, Envelope, Param, Recipient, Sender};
use crate::inbound::rules;
use crate::smtp::reply::Reply;

impl Session {
    pub(super) fn mail(&mut self, from: MailFrom<String>) -> Option<Step> {
        if self.out_of_sequence(&[
            (self.helo.is_none(), 503, "Send HELO or EHLO first"),
            (self.txn.is_some(), 503, "Nested MAIL command"),
        ]) {
            return None;
        }
        if self.cfg.listener == ListenerKind::Submission && self.tls.is_none() {
            self.refuse(
                "starttls-required",
                Reply::new(530, "5.7.0", "Must issue a STARTTLS command first"),
            );
            return None;
        }
        // REQUIRETLS (RFC 8689) is offered on TLS sessions only, and accepted only there.
        if from.flags & smtp_proto::MAIL_REQUIRETLS != 0 && self.tls.is_none() {
            self.refuse(
                "starttls-required",
                Reply::new(
                    530,
                    "5.7.10",
                    "REQUIRETLS needs a TLS session: STARTTLS first",
                ),
            );
            return None;
        }
        if self.is_submission() && self.auth_user.is_none() {
            self.refuse(
                "auth-required",
                Reply::new(530, "5.7.0", "Authentication required"),
            );
            return None;
        }
        // The inbound core's envelope rules (crate::inbound::rules), answered at once here.
        let user = self.auth_user.as_deref();
        let refusal = rules::sender_refused(
            from.size,
            self.cfg.max_message_size,
            user,
            &from.address,
            user.and_then(|u| self.cfg.senders.get(u)),
            &self.cfg.local_domains,
        );
        if let Some((reason, reply)) = refusal {
            self.refuse(reason, reply);
            return None;
        }
        let params = mail_params(&from);
        if let Some(bad) = control_in(&from.address, &params, BAD_SENDER) {
            self.error(bad);
            return None;
        }
        let address = from.address.clone();
        Some(Step::Mail(Sender { address, params }))
    }

    pub(super) fn rcpt(&mut self, to: RcptTo<String>) -> Option<Step> {
        if self.txn.is_none() {
            self.error(Reply::new(503, "5.5.1", "Send MAIL first"));
            return None;
        }
        let accepted = self.txn.as_ref().map_or(0, |t| t.recipients.len());
        let may_relay = self.auth_user.is_some() || self.cfg.trusted_client;
        match rules::recipient_refused(
            &to.address,
            accepted,
            self.cfg.max_recipients,
            may_relay,
            true,
            &self.cfg.local_domains,
        ) {
            // RFC 5321 §4.5.3.1.10: 452 for each recipient over the limit; not an error.
            Some(reply) if reply.code == 452 => {
                self.record("too-many-recipients", &reply);
                self.reply(&reply);
                return None;
            }
            Some(reply) => {
                self.refuse("relay-denied", reply);
                return None;
            }
            None => {}
        }
        // The grammar reports `<postmaster>` as an empty address (and `<>` likewise, which
        // RFC 5321 forbids anyway): both are taken as the local postmaster.
        let address = if to.address.is_empty() || address::is_bare_postmaster(&to.address) {
            match self.cfg.local_domains.first() {
                Some(d) => format!("postmaster@{d}"),
                None => to.address.clone(),
            }
        } else {
            to.address.clone()
        };
        let params = rcpt_params(&to);
        if let Some(bad) = control_in(&to.address, &params, BAD_RECIPIENT) {
            self.error(bad);
            return None;
        }
        Some(Step::Rcpt(Recipient {
            address,
            params,
            discarded: false,
        }))
    }

    /// Reports the outcome of `verify-sender` for the sender of the last [`Step::Mail`].
    /// A refusal was decided (and logged) by the inbound core.
    pub fn mail_decided(&mut self, sender: Sender, decision: &Decision) {
        self.state = State::Command;
        match decision {
            Decision::Reject { reply } | Decision::Tempfail { reply } => {
                self.count_error(reply.clone())
            }
            _ => {
                self.reset_transaction();
                self.txn = Some(Envelope {
                    sender,
                    recipients: Vec::new(),
                });
                self.reply(&Reply::new(250, "2.1.0", "Sender OK"));
            }
        }
    }

    /// Reports the outcome of `check-recipient` for the last [`Step::Rcpt`].
    /// A refusal was decided (and logged) by the inbound core.
    pub fn rcpt_decided(&mut self, mut recipient: Recipient, decision: &Decision) {
        self.state = State::Command;
        match decision {
            Decision::Reject { reply } | Decision::Tempfail { reply } => {
                self.count_error(reply.clone())
            }
            other => {
                recipient.discarded = matches!(other, Decision::Discard);
                if let Some(t) = self.txn.as_mut() {
                    t.recipients.push(recipient);
                }
                self.reply(&Reply::new(250, "2.1.5", "Recipient OK"));
            }
        }
    }
}

pub(super) fn param(keyword: &str, value: Option<String>) -> Param {
    Param {
        keyword: keyword.to_string(),
        value,
    }
}

/// The enhanced code and text for a sender address the session cannot take.
const BAD_SENDER: (&str, &str) = ("5.1.7", "Bad sender address syntax");
/// The enhanced code and text for a recipient address the session cannot take.
const BAD_RECIPIENT: (&str, &str) = ("5.1.3", "Bad recipient address syntax");

/// A 501 refusal for an address or a parameter that holds control characters: `bad_address`
/// (enhanced code, text) for the address, or one that names the parameter.
///
/// The grammar lets control characters through in (quoted) local parts; such an address would
/// reach logs, spool files and a bounce's header (found by the `data` fuzz target). It also
/// decodes xtext (`ENVID=a+0D+0Ab`), and such a value would end up in a DSN's header fields
/// (found by the `session` fuzz target); RFC 3461 allows printable ASCII only.
pub(super) fn control_in(
    address: &str,
    params: &[Param],
    (enhanced, text): (&str, &str),
) -> Option<Reply> {
    if address.chars().any(char::is_control) {
        return Some(Reply::new(501, enhanced, text));
    }
    params
        .iter()
        .find(|p| {
            p.value
                .as_deref()
                .is_some_and(|v| v.chars().any(char::is_control))
        })
        .map(|p| {
            Reply::new(
                501,
                "5.5.4",
                &format!("Invalid {} parameter: control characters", p.keyword),
            )
        })
}

/// The parameters of MAIL FROM, as the grammar understood them.
pub(super) fn mail_params(m: &MailFrom<String>) -> Vec<Param> {
    let mut p = Vec::new();
    if m.size > 0 {
        p.push(param("SIZE", Some(m.size.to_string())));
    }
    if m.flags & smtp_proto::MAIL_BODY_8BITMIME != 0 {
        p.push(param("BODY", Some("8BITMIME".into())));
    } else if m.flags & smtp_proto::MAIL_BODY_BINARYMIME != 0 {
        p.push(param("BODY", Some("BINARYMIME".into())));
    } else if m.flags & smtp_proto::MAIL_BODY_7BIT != 0 {
        p.push(param("BODY", Some("7BIT".into())));
    }
    if m.flags & smtp_proto::MAIL_SMTPUTF8 != 0 {
        p.push(param("SMTPUTF8", None));
    }
    if m.flags & smtp_proto::MAIL_REQUIRETLS != 0 {
        p.push(param("REQUIRETLS", None));
    }
    if m.flags & smtp_proto::MAIL_RET_FULL != 0 {
        p.push(param("RET", Some("FULL".into())));
    } else if m.flags & smtp_proto::MAIL_RET_HDRS != 0 {
        p.push(param("RET", Some("HDRS".into())));
    }
    if let Some(envid) = &m.env_id {
        p.push(param("ENVID", Some(envid.clone())));
    }
    if let Some(auth) = &m.auth {
        p.push(param("AUTH", Some(auth.clone())));
    }
    p
}

/// The parameters of RCPT TO.
pub(super) fn rcpt_params(r: &RcptTo<String>) -> Vec<Param> {
    let mut p = Vec::new();
    let notify: Vec<&str> = [
        (smtp_proto::RCPT_NOTIFY_NEVER, "NEVER"),
        (smtp_proto::RCPT_NOTIFY_SUCCESS, "SUCCESS"),
        (smtp_proto::RCPT_NOTIFY_FAILURE, "FAILURE"),
        (smtp_proto::RCPT_NOTIFY_DELAY, "DELAY"),
    ]
    .into_iter()
    .filter(|(flag, _)| r.flags & flag != 0)
    .map(|(_, name)| name)
    .collect();
    if !notify.is_empty() {
        p.push(param("NOTIFY", Some(notify.join(","))));
    }
    if let Some(orcpt) = &r.orcpt {
        // The grammar keeps only the address of `ORCPT=rfc822;addr`; it accepts no other type.
        p.push(param("ORCPT", Some(format!("rfc822;{orcpt}"))));
    }
    p
}
