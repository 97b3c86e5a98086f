//! The envelope vocabulary every part of Sluice shares: who sent (the client's facts, the
//! sender), to whom (recipients), with which ESMTP parameters, and what was decided. The SMTP
//! session, the milter, replay, the inbound core, the plugin pipeline and the spool all speak
//! it; conversion to the WIT types plugins see happens only in the plugin runtime
//! ([`crate::pipeline`]).

use std::net::IpAddr;

use crate::smtp::reply::Reply;

/// A transaction's envelope: the sender and the recipients accepted so far.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Envelope {
    /// MAIL FROM.
    pub sender: Sender,
    /// RCPT TO, in order.
    pub recipients: Vec<Recipient>,
}

/// The negotiated TLS parameters, as reported by the driver.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TlsParams {
    /// e.g. `TLSv1.3`.
    pub version: String,
    /// e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
}

/// An envelope parameter as sent (for plugins and the spool).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Param {
    /// Upper-case keyword.
    pub keyword: String,
    /// Value, if any.
    pub value: Option<String>,
}

/// MAIL FROM as accepted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sender {
    /// The address; empty for `<>`.
    pub address: String,
    /// Parameters (SIZE, BODY, SMTPUTF8, RET, ENVID, …).
    pub params: Vec<Param>,
}

/// RCPT TO as accepted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Recipient {
    /// The address (a bare `postmaster` is qualified with the first local domain).
    pub address: String,
    /// Parameters (NOTIFY, ORCPT).
    pub params: Vec<Param>,
    /// A plugin said "discard" for this recipient: accepted, never delivered.
    pub discarded: bool,
}

/// What the front end knows about the client: the facts every plugin sees.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Client {
    /// The listener kind (`smtp`, `submission`, `smtps`, `milter`, `replay`).
    pub listener: String,
    /// The client's address.
    pub ip: IpAddr,
    /// The client's port (0 when unknown).
    pub port: u16,
    /// Its HELO/EHLO name.
    pub helo: String,
    /// EHLO (rather than HELO) was used.
    pub esmtp: bool,
    /// TLS parameters, when encrypted.
    pub tls: Option<TlsParams>,
    /// The SMTP AUTH user.
    pub auth_user: Option<String>,
    /// The client is in `relay.trusted_networks`.
    pub trusted: bool,
}

/// What a stage decided.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Decision {
    /// Nobody objected: the host's default (accept) applies.
    Continue,
    /// Accepted by a plugin.
    Accept,
    /// Refused permanently.
    Reject {
        /// The reply for the client.
        reply: Reply,
    },
    /// Refused temporarily.
    Tempfail {
        /// The reply for the client.
        reply: Reply,
    },
    /// Accept and drop.
    Discard,
    /// Accept and hold in quarantine.
    Quarantine {
        /// Why.
        reason: String,
    },
}

impl Decision {
    /// The decision's short name, for logs, metrics and the journal: `continue`, `accept`,
    /// `reject`, `tempfail`, `discard` or `quarantine`.
    pub fn name(&self) -> &'static str {
        match self {
            Decision::Continue => "continue",
            Decision::Accept => "accept",
            Decision::Reject { .. } => "reject",
            Decision::Tempfail { .. } => "tempfail",
            Decision::Discard => "discard",
            Decision::Quarantine { .. } => "quarantine",
        }
    }

    /// The refusal `reply` stands for: a reject for a 5xx code, a tempfail otherwise.
    pub fn refusal(reply: Reply) -> Decision {
        if reply.code >= 500 {
            Decision::Reject { reply }
        } else {
            Decision::Tempfail { reply }
        }
    }

    /// True when the stage is decided and later plugins are not called.
    pub fn is_final(&self) -> bool {
        !matches!(self, Decision::Continue)
    }
}
