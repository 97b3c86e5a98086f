//! STARTTLS (RFC 3207): refused with a parameter or during a transaction; nothing pipelined
//! before it or learnt in plain text survives the handshake.

use smtp_proto::request::receiver::RequestReceiver;

use super::{Session, State, Step};
use crate::envelope::TlsParams;
use crate::smtp::reply::Reply;

impl Session {
    pub(super) fn starttls(&mut self) -> Option<Step> {
        if self.out_of_sequence(&[
            (self.tls.is_some(), 503, "Already using TLS"),
            (!self.cfg.tls_available, 502, "STARTTLS not available"),
            (
                self.txn.is_some(),
                503,
                "STARTTLS not allowed during a transaction",
            ),
        ]) {
            return None;
        }
        self.reply(&Reply::new(220, "2.0.0", "Ready to start TLS"));
        self.reset_transaction();
        // Whatever the client pipelined after STARTTLS arrived in plain text and must not be
        // executed inside the TLS session (CVE-2011-0411 and kin): drop it.
        self.input.clear();
        self.pos = 0;
        self.receiver = RequestReceiver::default();
        Some(Step::StartTls)
    }

    /// Reports a completed TLS handshake after [`Step::StartTls`]. The session starts afresh:
    /// RFC 3207 §4.2 — nothing learnt before TLS survives it.
    pub fn tls_started(&mut self, params: TlsParams) {
        self.state = State::Command;
        self.tls = Some(params);
        self.helo = None;
        self.esmtp = false;
        self.auth_user = None;
        self.reset_transaction();
        self.input.clear();
        self.pos = 0;
    }
}
