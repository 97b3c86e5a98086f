//! DATA and BDAT: when a message may start, chunk sizes checked before a byte is kept, and
//! the end of the transaction.

use smtp_proto::request::receiver::{BdatReceiver, DummyDataReceiver};

use super::data::DataReceiver;
use super::{Session, State, Step, Swallow};
use crate::smtp::reply::Reply;

impl Session {
    /// Why DATA or BDAT cannot start now, if it cannot.
    pub(super) fn data_refusal(&self) -> Option<Reply> {
        if self.txn.is_none() {
            Some(Reply::new(503, "5.5.1", "Send MAIL first"))
        } else if self.txn.as_ref().is_none_or(|t| t.recipients.is_empty()) {
            Some(Reply::new(554, "5.5.1", "No valid recipients"))
        } else {
            None
        }
    }

    pub(super) fn data(&mut self) -> Option<Step> {
        if let Some(refusal) = self.data_refusal() {
            self.error(refusal);
            return None;
        }
        if !self.message.is_empty() {
            self.error(Reply::new(503, "5.5.1", "DATA after BDAT is not allowed"));
            return None;
        }
        self.reply(&Reply::new(
            354,
            "",
            "Start mail input; end with <CRLF>.<CRLF>",
        ));
        self.state = State::Data(DataReceiver::new());
        None
    }

    pub(super) fn bdat(&mut self, chunk_size: usize, is_last: bool) -> Option<Step> {
        let refusal = self.data_refusal().or_else(|| {
            // Checked on the announced size, before a byte of the chunk is kept.
            (self.message.len().saturating_add(chunk_size) > self.cfg.max_message_size)
                .then(|| Reply::new(552, "5.3.4", "Message too big for this server"))
        });
        let Some(refusal) = refusal else {
            self.state = State::Bdat(BdatReceiver::new(chunk_size, is_last));
            return None;
        };
        self.reset_transaction();
        if chunk_size > self.cfg.max_message_size {
            // Skipping more than a whole message's worth of bytes to stay in sync is not
            // worth it (`BDAT 100000000000`): refuse and close.
            self.reply(&refusal);
            self.write_line(421, "4.7.0", "Closing connection");
            self.state = State::Closed;
            return None;
        }
        // The chunk's bytes are read and dropped to stay in sync; the refusal follows.
        self.state = State::Discard(
            Swallow::Bdat(DummyDataReceiver::new_bdat(chunk_size)),
            refusal,
        );
        None
    }

    /// Reports the outcome of the message: the reply for DATA (or the last BDAT). The
    /// transaction ends either way. A refusal was decided (and logged) by the inbound core.
    pub fn message_done(&mut self, reply: &Reply) {
        self.state = State::Command;
        self.reset_transaction();
        if reply.code >= 400 {
            self.count_error(reply.clone());
        } else {
            self.reply(reply);
        }
    }
}
