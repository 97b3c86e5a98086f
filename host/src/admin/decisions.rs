//! One log line, one metric and (for the console) one journal entry per refusal, whoever
//! made it: the connection limits, the SMTP session (protocol, STARTTLS or AUTH required,
//! size, relay denial, sender not owned), the inbound core's rules, sender authentication,
//! or a plugin (greylisting included).
//!
//! The line is the `refused` event (target `sluice::admin::decisions`), with these fields, each
//! present when known: `event=refused`, `id` (transaction id), `client`, `listener`, `helo`,
//! `user` (AUTH), `stage` (CONNECT, HELO, AUTH, STARTTLS, MAIL, RCPT, DATA, COMMAND),
//! `reason` (see [`Refusal::reason`]), `from`, `to` (the recipients accepted so far),
//! `rcpt` (the recipient refused), `code`, `enhanced`, `text`, `plugin` (the plugin that
//! decided). Every value a client or plugin chose is made printable first.

use std::net::IpAddr;

use crate::inbound::message::printable;
use crate::smtp::reply::Reply;

/// One refusal and what is known of its transaction.
#[derive(Debug, Clone, Default)]
pub struct Refusal<'a> {
    /// The transaction id (empty before MAIL).
    pub id: &'a str,
    /// The client.
    pub client: Option<IpAddr>,
    /// The listener (`smtp`, `submission`, `milter`, …).
    pub listener: &'a str,
    /// The HELO/EHLO name.
    pub helo: &'a str,
    /// The authenticated user.
    pub user: Option<&'a str>,
    /// Where: `CONNECT`, `HELO`, `AUTH`, `STARTTLS`, `MAIL`, `RCPT`, `DATA` or `COMMAND`.
    pub stage: &'a str,
    /// Why, as a stable word: `connection-limit`, `proxy-untrusted` (a PROXY protocol
    /// listener's peer not in `proxy_trusted`), `proxy-header` (no valid PROXY header in
    /// time), `protocol`, `too-many-errors`,
    /// `starttls-required`, `auth-required`, `auth-failed`, `auth-throttled`, `size`,
    /// `sender-not-owned`, `relay-denied`, `too-many-recipients`, `mail-loop`, `dmarc`,
    /// `plugin`, `required-plugin-missing`, `spool`.
    pub reason: &'a str,
    /// The envelope sender, once given.
    pub sender: Option<&'a str>,
    /// The recipients accepted so far.
    pub recipients: &'a [String],
    /// The recipient refused (at RCPT).
    pub recipient: Option<&'a str>,
    /// The reply the client got.
    pub reply: Option<&'a Reply>,
    /// The plugin that decided, when one did.
    pub plugin: Option<&'a str>,
}

/// Logs, counts and journals `r`.
pub fn refused(r: &Refusal<'_>) {
    let (code, enhanced, text) = r
        .reply
        .map(|reply| (reply.code, reply.enhanced.as_str(), reply.text.as_str()))
        .unwrap_or((0, "", ""));
    let class = if code >= 500 {
        "permanent"
    } else {
        "temporary"
    };
    crate::admin::metrics::get().refusal(r.stage, r.reason, class);
    let to = r
        .recipients
        .iter()
        .map(|a| printable(a))
        .collect::<Vec<_>>()
        .join(",");
    tracing::info!(
        target: "sluice::admin::decisions",
        event = "refused",
        id = r.id,
        client = %r.client.map(|c| c.to_string()).unwrap_or_default(),
        listener = r.listener,
        helo = %printable(r.helo),
        user = %printable(r.user.unwrap_or("")),
        stage = r.stage,
        reason = r.reason,
        from = %printable(r.sender.unwrap_or("")),
        to = %to,
        rcpt = %printable(r.recipient.unwrap_or("")),
        code,
        enhanced,
        text = %printable(text),
        plugin = %printable(r.plugin.unwrap_or("")),
        "refused"
    );
    crate::admin::webhook::emit(
        "refused",
        serde_json::json!({
            "id": r.id,
            "client": r.client.map(|c| c.to_string()),
            "listener": r.listener,
            "stage": r.stage,
            "reason": r.reason,
            "from": r.sender,
            "rcpt": r.recipient,
            "code": code,
            "enhanced": enhanced,
            "text": text,
            "plugin": r.plugin,
        }),
    );
    // The console counts envelope refusals with the messages refused after DATA, and shows
    // them among the transactions (not protocol errors: they decide nothing about mail).
    if matches!(r.stage, "MAIL" | "RCPT") && !matches!(r.reason, "protocol" | "too-many-errors") {
        let j = crate::admin::journal::get();
        j.count(if code >= 500 {
            "envelope:reject"
        } else {
            "envelope:tempfail"
        });
        let mut recipients: Vec<String> = r.recipients.to_vec();
        if let Some(rcpt) = r.recipient {
            recipients.push(rcpt.to_string());
        }
        j.transaction(crate::admin::journal::Transaction {
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            id: r.id.to_string(),
            client: r.client.map(|c| c.to_string()).unwrap_or_default(),
            listener: r.listener.to_string(),
            sender: r.sender.unwrap_or("").to_string(),
            recipients,
            score: 0.0,
            verdicts: r
                .plugin
                .map(|p| vec![format!("{p}:{}", r.stage.to_ascii_lowercase())])
                .unwrap_or_default(),
            disposition: format!(
                "{} at {}",
                if code >= 500 {
                    "rejected"
                } else {
                    "tempfailed"
                },
                r.stage
            ),
            reply: r.reply.map(|x| x.to_string()).unwrap_or_default(),
        });
    }
}
