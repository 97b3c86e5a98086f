//! `sluice plugin check`: the offline replay harness, the third front end of the
//! [`crate::inbound`] core. It drives the core — so the same plugins, DMARC policy, edits and
//! signing as the server — over `.eml` files and reports, per message, every hook call
//! (verdict, timing, logs), the final decision, the summed spam score with its symbols and the
//! header edits — one JSON object per line. Nothing is spooled.
//!
//! Messages are normalised as the SMTP server would receive them: bare LF and bare CR line
//! endings become CRLF. Envelope values not given on the command line come from the message's headers:
//! the sender from `Return-Path`, else `Sender`, else `From`; the recipients from `To`, `Cc`
//! and `Bcc`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use std::sync::Arc;

use crate::config::{DmarcMode, ListenerKind};
use crate::envelope::Decision;
use crate::envelope::{Recipient, Sender};
use crate::inbound::{self, Client, FrontEnd, Inbound};
use crate::pipeline::{CallRecord, MessageOutcome, ScoredSymbol};
use crate::server::context::Live;

/// Envelope and session values given on the command line (`sluice plugin check`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EnvelopeArgs {
    /// Envelope sender (default: from the message's headers). Use "" for the null sender.
    #[arg(long)]
    pub mail_from: Option<String>,
    /// Envelope recipient (default: the message's To/Cc/Bcc). Repeatable.
    #[arg(long)]
    pub rcpt: Vec<String>,
    /// Client IP address (default 127.0.0.1). Given, the replay also applies relay control
    /// as the server would for that client.
    #[arg(long)]
    pub client_ip: Option<std::net::IpAddr>,
    /// HELO name (default localhost).
    #[arg(long)]
    pub helo: Option<String>,
    /// Authenticated user (default: none).
    #[arg(long)]
    pub auth_user: Option<String>,
    /// Run the SPF, DKIM and DMARC checks as the server would (with the configuration's
    /// `[authentication]` resolver), for the plugins and the `authentication` output.
    /// Off by default: replay needs no network.
    #[arg(long)]
    pub authenticate: bool,
}

/// A message that could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", .file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a message.
    #[error("{}: {problem}", .file.display())]
    NotAMessage {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// The report for one message.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The message file.
    pub file: String,
    /// The envelope used.
    pub envelope: EnvelopeReport,
    /// Every plugin call, in order.
    pub calls: Vec<CallRecord>,
    /// Each recipient's decision at RCPT.
    pub recipients: Vec<RecipientReport>,
    /// The stage that decided, and how.
    pub result: ResultReport,
    /// What the plugins of `check-message` made of the message.
    #[serde(flatten)]
    pub outcome: OutcomeReport,
    /// The sender-authentication results (with `--authenticate`, for unauthenticated senders).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication: Option<crate::sender_auth::Results>,
}

/// What the plugins of `check-message` made of the message (empty when it was not reached).
#[derive(Debug, Default, Serialize)]
pub struct OutcomeReport {
    /// Sum of every symbol's score (0 when `check-message` was not reached).
    pub score: f64,
    /// Whether the score reached the spam threshold.
    pub spam: bool,
    /// The symbols.
    pub symbols: Vec<ScoredSymbol>,
    /// Header fields that would be added.
    pub add_headers: Vec<HeaderReport>,
    /// Header field names that would be removed.
    pub remove_headers: Vec<String>,
}

impl From<MessageOutcome> for OutcomeReport {
    fn from(outcome: MessageOutcome) -> Self {
        let header = |(name, value)| HeaderReport { name, value };
        OutcomeReport {
            score: outcome.score,
            spam: outcome.spam,
            symbols: outcome.symbols,
            add_headers: outcome.add_headers.into_iter().map(header).collect(),
            remove_headers: outcome.remove_headers,
        }
    }
}

/// The envelope of a replayed message.
#[derive(Debug, Serialize)]
pub struct EnvelopeReport {
    /// MAIL FROM.
    pub mail_from: String,
    /// RCPT TO.
    pub rcpt_to: Vec<String>,
    /// Client IP.
    pub client_ip: String,
    /// HELO name.
    pub helo: String,
    /// AUTH user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_user: Option<String>,
}

/// A recipient's decision.
#[derive(Debug, Serialize)]
pub struct RecipientReport {
    /// The address.
    pub address: String,
    /// The decision.
    #[serde(flatten)]
    pub decision: Decision,
}

/// The final outcome for a message.
#[derive(Debug, Serialize)]
pub struct ResultReport {
    /// `verify-sender`, `check-recipient` (every recipient refused) or `check-message`.
    pub stage: &'static str,
    /// The decision.
    #[serde(flatten)]
    pub decision: Decision,
}

/// A header field.
#[derive(Debug, Serialize)]
pub struct HeaderReport {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// Replays one message file through the inbound core under `live` (configuration, plugins,
/// verifier and signing keys).
pub async fn replay(
    live: &Arc<Live>,
    file: &Path,
    args: &EnvelopeArgs,
    index: usize,
) -> Result<Report, ReplayError> {
    let bytes = std::fs::read(file).map_err(|source| ReplayError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    // As the session stores a message: bare LF and bare CR become CRLF.
    let raw = crate::smtp::session::normalise_line_endings(bytes);
    let not_a_message = |problem: &str| ReplayError::NotAMessage {
        file: file.to_path_buf(),
        problem: problem.to_string(),
    };
    let parsed = mail_parser::MessageParser::new()
        .parse(&raw[..])
        .ok_or_else(|| not_a_message("cannot be parsed as a message"))?;
    if parsed.headers().is_empty() {
        return Err(not_a_message("has no header fields; is it an .eml file?"));
    }

    let mail_from = match &args.mail_from {
        Some(m) => m.clone(),
        None => header_sender(&parsed).ok_or_else(|| {
            not_a_message("no sender: the message has no Return-Path, Sender or From address; pass --mail-from")
        })?,
    };
    let rcpt_to = if args.rcpt.is_empty() {
        let found = header_recipients(&parsed);
        if found.is_empty() {
            return Err(not_a_message(
                "no recipient: the message has no To, Cc or Bcc address; pass --rcpt",
            ));
        }
        found
    } else {
        args.rcpt.clone()
    };
    drop(parsed);
    let client_ip = args
        .client_ip
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    let helo = args.helo.clone().unwrap_or_else(|| "localhost".to_string());
    let config = &live.config;
    let client = Client {
        listener: "replay".to_string(),
        ip: client_ip,
        port: 0,
        helo: helo.clone(),
        esmtp: true,
        tls: None,
        auth_user: args.auth_user.clone(),
        trusted: config
            .relay
            .trusted_networks
            .iter()
            .any(|n| n.contains(&client_ip)),
    };
    // Mail from outside arrives on an smtp listener: its DMARC policy applies.
    let dmarc = config
        .listeners
        .iter()
        .find(|l| l.kind == ListenerKind::Smtp)
        .map_or(DmarcMode::Record, |l| l.dmarc);
    let front = FrontEnd {
        dmarc,
        writes_received: true,
        verify: args.authenticate,
        // Relay control needs to know who sent the message: it applies when --client-ip says
        // (a plugin author replaying test messages to any domain is not refused for relaying).
        relay_control: args.client_ip.is_some(),
    };

    let mut report = Report {
        file: file.display().to_string(),
        envelope: EnvelopeReport {
            mail_from: mail_from.clone(),
            rcpt_to: rcpt_to.clone(),
            client_ip: client_ip.to_string(),
            helo,
            auth_user: args.auth_user.clone(),
        },
        calls: Vec::new(),
        recipients: Vec::new(),
        result: ResultReport {
            stage: "verify-sender",
            decision: Decision::Continue,
        },
        outcome: OutcomeReport::default(),
        authentication: None,
    };
    let sender = Sender {
        address: mail_from,
        params: Vec::new(),
    };
    let (mut txn, decision) = Inbound::mail(
        live.clone(),
        client,
        front,
        format!("replay-{index}"),
        sender,
    )
    .await;
    report.authentication = txn.sender_authentication();
    if inbound::refuses(&decision) {
        report.result.decision = decision;
        report.calls = txn.take_calls();
        return Ok(report);
    }
    let mut last_refusal = None;
    for rcpt in &rcpt_to {
        let decision = txn
            .rcpt(Recipient {
                address: rcpt.clone(),
                params: Vec::new(),
                discarded: false,
            })
            .await;
        if inbound::refuses(&decision) {
            last_refusal = Some(decision.clone());
        }
        report.recipients.push(RecipientReport {
            address: rcpt.clone(),
            decision,
        });
    }
    if txn.recipients().is_empty() {
        report.result = ResultReport {
            stage: "check-recipient",
            decision: last_refusal.unwrap_or(Decision::Continue),
        };
        report.calls = txn.take_calls();
        return Ok(report);
    }

    let d = txn.message(raw).await;
    // What the server would do with it: a quarantine or discard decided at MAIL or RCPT holds
    // or drops the message though check-message said nothing (it used to print `continue`).
    let decision = match (d.action, &d.decision) {
        (inbound::Action::Quarantine, Decision::Continue | Decision::Accept) => {
            Decision::Quarantine {
                reason: d.quarantine.clone().unwrap_or_default(),
            }
        }
        (inbound::Action::Discard, Decision::Continue | Decision::Accept) => Decision::Discard,
        _ => d.decision.clone(),
    };
    report.result = ResultReport {
        stage: "check-message",
        decision,
    };
    if d.authentication.is_some() {
        report.authentication = d.authentication.clone();
    }
    if let Some(outcome) = d.outcome {
        report.outcome = outcome.into();
    }
    report.calls = txn.take_calls();
    Ok(report)
}

fn header_sender(m: &mail_parser::Message<'_>) -> Option<String> {
    let rp = m.return_path();
    let from_rp = rp
        .as_address()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .map(str::to_string)
        .or_else(|| {
            rp.as_text().map(|t| {
                t.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
        });
    from_rp
        .or_else(|| first_address(m.sender()))
        .or_else(|| first_address(m.from()))
}

fn first_address(a: Option<&mail_parser::Address<'_>>) -> Option<String> {
    a.and_then(|a| a.iter().find_map(|a| a.address()))
        .map(str::to_string)
}

fn header_recipients(m: &mail_parser::Message<'_>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for list in [m.to(), m.cc(), m.bcc()].into_iter().flatten() {
        for a in list.iter() {
            if let Some(addr) = a.address()
                && !out.iter().any(|o| o.eq_ignore_ascii_case(addr))
            {
                out.push(addr.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_from_headers() {
        let raw = crate::smtp::session::normalise_line_endings(
            b"Return-Path: <bounce@lists.example>\nFrom: A <a@example.org>\nTo: b@example.net, C <c@example.net>\nCc: b@EXAMPLE.net\nSubject: x\n\nhi\n".to_vec(),
        );
        let m = mail_parser::MessageParser::new().parse(&raw[..]).unwrap();
        assert_eq!(header_sender(&m).as_deref(), Some("bounce@lists.example"));
        assert_eq!(header_recipients(&m), ["b@example.net", "c@example.net"]);
    }
}
