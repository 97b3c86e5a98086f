//! Delivery status notifications (RFC 3464): one `multipart/report` per original message,
//! listing every failed recipient with its remote reply, from `<>` to the original sender.
//! The human-readable part comes from the `render-bounce` hook when a plugin provides it,
//! else from [`default_text`]. Built with `mail-builder`.

use mail_builder::MessageBuilder;
use mail_builder::headers::content_type::ContentType;
use mail_builder::mime::MimePart;

use crate::envelope::{Param, Recipient};
use crate::plugin::bindings::types::{BounceRequest, BounceText, FailedRecipient, Header};
use crate::spool::SpooledEnvelope;

use super::state::{QueueState, RcptStatus};

fn param<'a>(params: &'a [Param], keyword: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|p| p.keyword.eq_ignore_ascii_case(keyword))
        .and_then(|p| p.value.as_deref())
}

/// True when the recipient asked for `kind` notices (FAILURE or DELAY). No NOTIFY means
/// both (RFC 3461 §4.1 leaves it to the MTA; Postfix does the same); NOTIFY=NEVER or a
/// list without `kind` means no.
fn wants_notice(r: &Recipient, kind: &str) -> bool {
    match param(&r.params, "NOTIFY") {
        None => true,
        Some(v) => v.split(',').any(|n| n.eq_ignore_ascii_case(kind)),
    }
}

/// True when the recipient's NOTIFY names `kind` (SUCCESS is never implied).
pub fn wants_notice_explicitly(r: &Recipient, kind: &str) -> bool {
    param(&r.params, "NOTIFY").is_some_and(|v| v.split(',').any(|n| n.eq_ignore_ascii_case(kind)))
}

/// Which notice a DSN gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// Delivered to the mailbox (Maildir, LMTP) and NOTIFY asked for SUCCESS.
    Delivered,
    /// Handed to a next hop that does not take DSN parameters, so no further notice will
    /// come (RFC 3461 §5.2.2.2), and NOTIFY asked for SUCCESS.
    Relayed,
    /// Delivery failed (permanently, or the message expired).
    Failed,
    /// Delivery is delayed; it is retried until this Unix time.
    Delayed {
        /// When the message will expire.
        retry_until: i64,
    },
}

/// The failed recipients that should be reported, or none when no bounce is due: the
/// sender is the null sender (never bounce a bounce), or every failed recipient said
/// NOTIFY=NEVER.
pub fn reportable(envelope: &SpooledEnvelope, state: &QueueState) -> Vec<FailedRecipient> {
    listed(envelope, state, RcptStatus::Failed, "FAILURE")
}

/// The still-pending recipients whose delay should be reported (same rules, NOTIFY=DELAY).
pub fn delayed(envelope: &SpooledEnvelope, state: &QueueState) -> Vec<FailedRecipient> {
    listed(envelope, state, RcptStatus::Pending, "DELAY")
}

fn listed(
    envelope: &SpooledEnvelope,
    state: &QueueState,
    status: RcptStatus,
    notify: &str,
) -> Vec<FailedRecipient> {
    if envelope.sender.address.is_empty() {
        return Vec::new();
    }
    state
        .recipients
        .iter()
        .filter(|r| r.status == status)
        .filter(|r| {
            envelope
                .recipients
                .iter()
                .find(|e| e.address == r.address)
                .is_none_or(|e| wants_notice(e, notify))
        })
        .map(|r| FailedRecipient {
            address: r.address.clone(),
            reply: r.last_reply.clone().unwrap_or_default(),
            status: r.status_code.clone().unwrap_or_else(|| match status {
                RcptStatus::Pending => "4.0.0".to_string(),
                _ => "5.0.0".to_string(),
            }),
            remote_host: r.remote.clone(),
        })
        .collect()
}

/// The request handed to `render-bounce`.
pub fn request(
    envelope: &SpooledEnvelope,
    headers: Vec<Header>,
    failures: Vec<FailedRecipient>,
    reporting_host: &str,
    expired: bool,
) -> BounceRequest {
    BounceRequest {
        queue_id: envelope.id.clone(),
        reporting_host: reporting_host.to_string(),
        sender: envelope.sender.address.clone(),
        failures,
        original_headers: headers,
        expired,
    }
}

/// The built-in text: what happened and what to do, for a non-technical reader.
pub fn default_text(req: &BounceRequest) -> BounceText {
    let subject_line = req
        .original_headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("Subject"))
        .map(|h| format!(" with the subject \"{}\"", h.value))
        .unwrap_or_default();
    let mut text = format!(
        "This is the mail system at {}.\n\nYour message{subject_line} could not be delivered to {} of its recipients:\n\n",
        req.reporting_host,
        if req.failures.len() == 1 {
            "one".to_string()
        } else {
            req.failures.len().to_string()
        },
    );
    for f in &req.failures {
        text.push_str(&format!("  {}\n    {}\n", f.address, f.reply));
    }
    text.push_str(if req.expired {
        "\nWe kept trying for several days, but the receiving system did not accept the message.\nYou may want to check the address and send the message again later.\n"
    } else {
        "\nThe receiving system refused the message. Please check the address for typing\nmistakes; if it looks right, contact the recipient another way.\n"
    });
    text.push_str(&format!("\n(Reference: queue id {})\n", req.queue_id));
    BounceText {
        subject: "Undelivered Mail Returned to Sender".to_string(),
        text,
        html: None,
    }
}

/// The built-in text of a delay warning (the `render-bounce` hook of `sluice:filter@0.1.0`
/// renders failures only).
pub fn delay_text(req: &BounceRequest, retry_until: i64) -> BounceText {
    let until = chrono::DateTime::from_timestamp(retry_until, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default();
    let mut text = format!(
        "This is the mail system at {}.\n\nYour message could not be delivered yet to these recipients:\n\n",
        req.reporting_host
    );
    for f in &req.failures {
        text.push_str(&format!("  {}\n    {}\n", f.address, f.reply));
    }
    text.push_str(&format!(
        "\nThis is only a warning: you do not need to send the message again. We will keep\ntrying until {until}, and tell you if it fails for good.\n\n(Reference: queue id {})\n",
        req.queue_id
    ));
    BounceText {
        subject: "Delayed Mail (still being retried)".to_string(),
        text,
        html: None,
    }
}

/// The built-in text of a success notice.
pub fn success_text(req: &BounceRequest, notice: Notice) -> BounceText {
    let mut text = format!(
        "This is the mail system at {}.\n\nYou asked to be told when your message reached these recipients:\n\n",
        req.reporting_host
    );
    for f in &req.failures {
        text.push_str(&format!("  {}\n    {}\n", f.address, f.reply));
    }
    text.push_str(if notice == Notice::Relayed {
        "\nIt was passed on to a system that does not report delivery, so this is the last\nnotice you will get about it.\n"
    } else {
        "\nIt was delivered to the mailbox.\n"
    });
    text.push_str(&format!("\n(Reference: queue id {})\n", req.queue_id));
    BounceText {
        subject: if notice == Notice::Relayed {
            "Relayed Mail: delivery notification"
        } else {
            "Successful Mail Delivery Report"
        }
        .to_string(),
        text,
        html: None,
    }
}

/// Builds the DSN message.
pub fn build(
    envelope: &SpooledEnvelope,
    original: &[u8],
    req: &BounceRequest,
    text: &BounceText,
    notice: Notice,
) -> Vec<u8> {
    let mut status = format!("Reporting-MTA: dns; {}\r\n", req.reporting_host);
    if let Some(envid) = param(&envelope.sender.params, "ENVID") {
        status.push_str(&format!("Original-Envelope-Id: {envid}\r\n"));
    }
    status.push_str(&format!("Arrival-Date: {}\r\n", envelope.received_at));
    for f in &req.failures {
        status.push_str("\r\n");
        if let Some(orcpt) = envelope
            .recipients
            .iter()
            .find(|r| r.address == f.address)
            .and_then(|r| param(&r.params, "ORCPT"))
        {
            status.push_str(&format!("Original-Recipient: {orcpt}\r\n"));
        }
        status.push_str(&format!("Final-Recipient: rfc822; {}\r\n", f.address));
        match notice {
            Notice::Failed => status.push_str("Action: failed\r\n"),
            Notice::Delayed { .. } => status.push_str("Action: delayed\r\n"),
            Notice::Delivered => status.push_str("Action: delivered\r\n"),
            Notice::Relayed => status.push_str("Action: relayed\r\n"),
        }
        status.push_str(&format!("Status: {}\r\n", f.status));
        if let Some(host) = &f.remote_host {
            status.push_str(&format!("Remote-MTA: dns; {host}\r\n"));
        }
        let diag: String = f.reply.chars().filter(|c| !c.is_control()).collect();
        status.push_str(&format!("Diagnostic-Code: smtp; {diag}\r\n"));
        if let Notice::Delayed { retry_until } = notice
            && let Some(t) = chrono::DateTime::from_timestamp(retry_until, 0)
        {
            status.push_str(&format!("Will-Retry-Until: {}\r\n", t.to_rfc2822()));
        }
    }
    let human = match &text.html {
        Some(html) => MimePart::new(
            "multipart/alternative",
            vec![
                MimePart::new("text/plain", text.text.clone()),
                MimePart::new("text/html", html.clone()),
            ],
        ),
        None => MimePart::new("text/plain", text.text.clone()),
    };
    // A delay warning returns the headers only: the message is still on its way. So does the
    // bounce of a REQUIRETLS message (RFC 8689 §4.3): the notice may travel where the message
    // itself was not allowed to, so its body stays behind whatever RET asked.
    let full = notice == Notice::Failed
        && param(&envelope.sender.params, "RET").is_some_and(|r| r.eq_ignore_ascii_case("FULL"))
        && !envelope
            .sender
            .params
            .iter()
            .any(|p| p.keyword.eq_ignore_ascii_case("REQUIRETLS"));
    let returned = if full {
        original.to_vec()
    } else {
        let end = original
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| i + 2)
            .unwrap_or(original.len());
        original[..end].to_vec()
    };
    // message/rfc822 must not be base64- or QP-encoded (RFC 2046 §5.2.1): send it as it is.
    let encoding = if returned.is_ascii() { "7bit" } else { "8bit" };
    let returned = MimePart::new(
        if full {
            "message/rfc822"
        } else {
            "text/rfc822-headers"
        },
        returned,
    )
    .transfer_encoding(encoding);
    let report = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
        vec![
            human,
            MimePart::new("message/delivery-status", status).transfer_encoding("7bit"),
            returned,
        ],
    );
    MessageBuilder::new()
        .from((
            "Mail Delivery System".to_string(),
            format!("MAILER-DAEMON@{}", req.reporting_host),
        ))
        .to(envelope.sender.address.clone())
        .subject(text.subject.clone())
        // Ours, under our own name (mail-builder's default names the machine instead).
        .message_id(format!(
            "{}@{}",
            crate::spool::new_queue_id(),
            req.reporting_host
        ))
        .header(
            "Auto-Submitted",
            mail_builder::headers::raw::Raw::new("auto-replied"),
        )
        .body(report)
        .write_to_vec()
        .unwrap_or_default()
}
