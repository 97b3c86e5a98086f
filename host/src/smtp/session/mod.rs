//! The SMTP server dialogue as a pure state machine: bytes in, replies and requests out.
//!
//! The session owns the protocol — command grammar (via `smtp-proto`), sequencing, extensions,
//! limits, relay control and AUTH decoding — and nothing else: it does no I/O, has no clock
//! and calls no plugin. Its driver ([`crate::smtp::connection`]) feeds it bytes with
//! [`Session::receive`], asks for the next [`Step`], performs what the step asks (run a hook,
//! verify a password, start TLS, spool a message) and reports back. Replies accumulate in an
//! output buffer that the driver flushes before it waits for anything, so pipelined commands
//! get their replies in one write.
//!
//! Because it is pure, the whole dialogue is table-tested below and can be fuzzed.
//!
//! By verb: [`hello`] (HELO, EHLO), [`mail`] (MAIL, RCPT), [`transfer`] (DATA, BDAT),
//! [`starttls`], [`auth`] (AUTH); this file holds the state machine, the command dispatch and
//! the replies.
//!
//! May use: the SMTP reply type, the envelope vocabulary and `smtp-proto`; nothing with I/O,
//! time or plugins.

pub mod address;
pub mod auth;
pub mod data;
mod hello;
mod mail;
mod starttls;
mod transfer;

pub use auth::AuthOutcome;
use auth::Line;

use smtp_proto::Request;
use smtp_proto::request::receiver::{BdatReceiver, DummyDataReceiver, RequestReceiver};

use crate::config::ListenerKind;
use crate::envelope::{Envelope, Recipient, Sender, TlsParams};
use crate::smtp::reply::Reply;
use data::DataReceiver;

/// Longest command line accepted, in bytes with its CRLF. RFC 5321 §4.5.3.1.4 sets 512; the
/// extensions (SMTPUTF8 addresses, DSN parameters, AUTH=) need more, so take Postfix's
/// `line_length_limit`. A longer line is refused and skipped without being buffered.
pub const MAX_COMMAND_LINE: usize = 2048;

/// Longest SASL response line (RFC 4954 §4: 12288 octets for the AUTH command line).
pub const MAX_SASL_LINE: usize = 12288;

/// What the session needs to know about its listener and client.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our host name, for the greeting and EHLO.
    pub hostname: String,
    /// The listener kind (submission requires TLS and AUTH before mail).
    pub listener: ListenerKind,
    /// A certificate is available, so STARTTLS can be offered.
    pub tls_available: bool,
    /// Largest message, in bytes.
    pub max_message_size: usize,
    /// Recipients per transaction.
    pub max_recipients: usize,
    /// Errors before disconnecting.
    pub max_errors: u32,
    /// AUTH failures before disconnecting.
    pub max_auth_failures: u32,
    /// Domains we accept mail for.
    pub local_domains: Vec<String>,
    /// The client is in a trusted network (may relay without AUTH).
    pub trusted_client: bool,
    /// AUTH is allowed before TLS (loopback clients, when configured).
    pub plaintext_auth: bool,
    /// Addresses each user may send as (see [`address::sender_allowed`]).
    pub senders: std::collections::BTreeMap<String, Vec<String>>,
}

/// What the driver must do next.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Flush output, then read more bytes and [`Session::receive`] them.
    Read,
    /// Run `verify-sender` for this sender, then call [`Session::mail_decided`].
    Mail(Sender),
    /// Run `check-recipient`, then call [`Session::rcpt_decided`].
    Rcpt(Recipient),
    /// The message is complete (CRLF line endings, dot-unstuffed). Run `check-message`,
    /// spool it durably, then call [`Session::message_done`] with the reply.
    Message(Vec<u8>),
    /// Verify these credentials, then call [`Session::auth_decided`].
    Auth {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// Flush output, perform the TLS handshake, then call [`Session::tls_started`].
    StartTls,
    /// Flush output and close the connection.
    Close,
}

impl Step {
    /// True for steps the driver must answer before the session can go on.
    fn awaits_answer(&self) -> bool {
        !matches!(self, Step::Read | Step::Close)
    }
}

/// Where the dialogue is.
enum State {
    Command,
    Data(DataReceiver),
    Bdat(BdatReceiver),
    /// Swallowing an oversized DATA message or a BDAT chunk that cannot be accepted; then
    /// send the reply.
    Discard(Swallow, Reply),
    /// Waiting for the PLAIN response after `334 `.
    AuthPlain,
    /// Waiting for the LOGIN user name (None) or password (Some(user)).
    AuthLogin(Option<String>),
    /// Dropping the rest of an over-long line, up to its LF; then back to commands.
    SkipLine,
    /// A step was handed out and its answer is awaited.
    Waiting,
    Closed,
}

/// A refusal the session made itself (not one the inbound core decided and reported back),
/// for the driver to log with what it knows of the client ([`crate::admin::decisions`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// The command refused: `HELO`, `AUTH`, `STARTTLS`, `MAIL`, `RCPT`, `DATA`, `COMMAND`.
    pub stage: &'static str,
    /// Why, as a stable word (see [`crate::admin::decisions::Refusal::reason`]).
    pub reason: &'static str,
    /// The reply.
    pub reply: Reply,
    /// The envelope sender, when a transaction was open.
    pub sender: Option<String>,
    /// The recipients accepted so far.
    pub recipients: Vec<String>,
    /// The recipient refused (at RCPT).
    pub recipient: Option<String>,
}

/// What reads and drops data that will not be accepted.
enum Swallow {
    /// The rest of a DATA message (to its end of data).
    Data(DataReceiver),
    /// A BDAT chunk (its announced length).
    Bdat(DummyDataReceiver),
}

impl Swallow {
    /// Drops what `input` holds of the data; returns the bytes consumed and whether the
    /// data ended.
    fn ingest(&mut self, input: &[u8]) -> (usize, bool) {
        match self {
            Swallow::Data(r) => r.ingest(input, &mut Vec::new()),
            Swallow::Bdat(r) => {
                let mut iter = input.iter();
                let done = r.ingest(&mut iter);
                (input.len() - iter.len(), done)
            }
        }
    }
}

/// One SMTP session (one connection, or the part of it after STARTTLS).
pub struct Session {
    cfg: SessionConfig,
    state: State,
    input: Vec<u8>,
    pos: usize,
    receiver: RequestReceiver,
    out: Vec<u8>,
    helo: Option<String>,
    esmtp: bool,
    tls: Option<TlsParams>,
    auth_user: Option<String>,
    /// The envelope of the transaction in progress (from MAIL FROM), as far as the protocol
    /// needs it: sequencing and the recipient limit. What happens to the message is the
    /// inbound core's to decide.
    txn: Option<Envelope>,
    message: Vec<u8>,
    errors: u32,
    auth_failures: u32,
    /// Bytes of the current, unfinished command line already handed to the grammar.
    partial_line: usize,
    /// Commands, SASL lines and message data completed so far: the driver restarts its
    /// deadline when this moves, so a deadline bounds a whole command, not one read.
    completed: u64,
    /// The command being answered, for [`Refused::stage`].
    stage: &'static str,
    /// The recipient being answered at RCPT.
    recipient: Option<String>,
    /// Refusals made since the driver last took them (bounded: the driver takes them after
    /// every step, and an error limit closes the session).
    refused: Vec<Refused>,
}

impl Session {
    /// A new session; `tls` is set for implicit-TLS listeners. Queue the greeting with
    /// [`Session::greet`].
    pub fn new(cfg: SessionConfig, tls: Option<TlsParams>) -> Session {
        Session {
            cfg,
            state: State::Command,
            input: Vec::new(),
            pos: 0,
            receiver: RequestReceiver::default(),
            out: Vec::new(),
            helo: None,
            esmtp: false,
            tls,
            auth_user: None,
            txn: None,
            message: Vec::new(),
            errors: 0,
            auth_failures: 0,
            partial_line: 0,
            completed: 0,
            stage: "CONNECT",
            recipient: None,
            refused: Vec::new(),
        }
    }

    /// Takes the refusals the session made itself since the last call.
    pub fn take_refused(&mut self) -> Vec<Refused> {
        std::mem::take(&mut self.refused)
    }

    /// Queues the 220 greeting.
    pub fn greet(&mut self) {
        let text = format!("{} ESMTP Sluice", self.cfg.hostname);
        self.write_line(220, "", &text);
    }

    /// Queues a 421 reply (shutdown, overload, timeout) and closes.
    pub fn close_with(&mut self, text: &str) {
        self.write_line(421, "4.4.2", &format!("{} {text}", self.cfg.hostname));
        self.state = State::Closed;
    }

    /// Ends the session because the server is shutting down: `421 4.3.2`, then close.
    /// Nothing of an unfinished transaction has been acknowledged, so the client retries.
    pub fn shut_down(&mut self) {
        self.write_line(
            421,
            "4.3.2",
            &format!(
                "{} Service shutting down, try again later",
                self.cfg.hostname
            ),
        );
        self.state = State::Closed;
    }

    /// True between MAIL FROM and the reply to the message: a transaction is open.
    pub fn in_transaction(&self) -> bool {
        self.in_data() || self.txn.is_some()
    }

    /// True when unprocessed client input is buffered (a pipelined command is waiting).
    pub fn has_input(&self) -> bool {
        self.pos < self.input.len()
    }

    /// Appends bytes read from the client.
    pub fn receive(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos == self.input.len() {
            self.input.clear();
            self.pos = 0;
        } else if self.pos > 64 * 1024 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        self.input.extend_from_slice(bytes);
    }

    /// How many commands, SASL responses and message data the session has completed. The
    /// driver's command and data deadlines run from the last change of this count.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// Takes the replies queued so far, to be written to the client.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// True while a message's data is being received (the driver uses the data timeout).
    pub fn in_data(&self) -> bool {
        matches!(
            self.state,
            State::Data(_) | State::Bdat(_) | State::Discard(..)
        )
    }

    /// The HELO/EHLO name.
    pub fn helo(&self) -> &str {
        self.helo.as_deref().unwrap_or("")
    }

    /// True after EHLO (as opposed to HELO).
    pub fn esmtp(&self) -> bool {
        self.esmtp
    }

    /// TLS parameters when encrypted.
    pub fn tls(&self) -> Option<&TlsParams> {
        self.tls.as_ref()
    }

    /// The authenticated user.
    pub fn auth_user(&self) -> Option<&str> {
        self.auth_user.as_deref()
    }

    /// The transaction in progress.
    pub fn envelope(&self) -> Option<&Envelope> {
        self.txn.as_ref()
    }

    /// Failed AUTH attempts so far (the driver delays replies by this much).
    pub fn auth_failures(&self) -> u32 {
        self.auth_failures
    }

    /// Advances the dialogue as far as the input allows.
    pub fn step(&mut self) -> Step {
        loop {
            let step = match std::mem::replace(&mut self.state, State::Waiting) {
                State::Closed => {
                    self.state = State::Closed;
                    return Step::Close;
                }
                State::Waiting => {
                    // An answer is still awaited: nothing can progress.
                    self.state = State::Waiting;
                    return Step::Read;
                }
                State::Command => self.command(),
                State::Data(mut r) => {
                    let (used, done) = r.ingest(&self.input[self.pos..], &mut self.message);
                    self.pos += used;
                    let raw = done
                        .then(|| normalise_line_endings(std::mem::take(&mut self.message)))
                        // Normalising bare CR/LF to CRLF can grow a message past the limit
                        // (found by the `data` fuzz target): the limit is on what is stored.
                        .filter(|raw| raw.len() <= self.cfg.max_message_size);
                    if let Some(raw) = raw {
                        self.completed += 1;
                        Some(Step::Message(raw))
                    } else if done {
                        self.completed += 1;
                        self.state = State::Command;
                        self.refuse(
                            "size",
                            Reply::new(552, "5.3.4", "Message too big for this server"),
                        );
                        self.reset_transaction();
                        None
                    } else if self.message.len() > self.cfg.max_message_size {
                        self.message = Vec::new();
                        self.state = State::Discard(
                            Swallow::Data(r),
                            Reply::new(552, "5.3.4", "Message too big for this server"),
                        );
                        None
                    } else {
                        self.state = State::Data(r);
                        return Step::Read;
                    }
                }
                State::Bdat(mut r) => {
                    let mut iter = self.input[self.pos..].iter();
                    let done = r.ingest(&mut iter, &mut self.message);
                    self.pos = self.input.len() - iter.len();
                    if !done {
                        self.state = State::Bdat(r);
                        return Step::Read;
                    }
                    self.completed += 1;
                    // The chunk's announced size was checked against the limit before any
                    // of its bytes were kept (see `bdat`).
                    if r.is_last {
                        let raw = normalise_line_endings(std::mem::take(&mut self.message));
                        if raw.len() > self.cfg.max_message_size {
                            self.refuse(
                                "size",
                                Reply::new(552, "5.3.4", "Message too big for this server"),
                            );
                            self.reset_transaction();
                            None
                        } else {
                            Some(Step::Message(raw))
                        }
                    } else {
                        self.state = State::Command;
                        self.reply(&Reply::new(250, "2.0.0", "Chunk received"));
                        None
                    }
                }
                State::Discard(mut r, reply) => {
                    let (used, done) = r.ingest(&self.input[self.pos..]);
                    self.pos += used;
                    if done {
                        self.completed += 1;
                        self.state = State::Command;
                        let reason = if reply.code == 552 {
                            "size"
                        } else {
                            "protocol"
                        };
                        self.refuse(reason, reply);
                        self.reset_transaction();
                        None
                    } else {
                        self.state = State::Discard(r, reply);
                        return Step::Read;
                    }
                }
                State::SkipLine => {
                    let rest = &self.input[self.pos..];
                    match rest.iter().position(|&b| b == b'\n') {
                        Some(end) => {
                            self.pos += end + 1;
                            self.state = State::Command;
                            None
                        }
                        None => {
                            self.pos = self.input.len();
                            self.state = State::SkipLine;
                            return Step::Read;
                        }
                    }
                }
                State::AuthPlain => match self.take_line() {
                    Line::Partial => {
                        self.state = State::AuthPlain;
                        return Step::Read;
                    }
                    Line::TooLong => self.sasl_too_long(),
                    Line::Complete(line) => {
                        self.state = State::Command;
                        self.auth_plain(&line)
                    }
                },
                State::AuthLogin(user) => match self.take_line() {
                    Line::Partial => {
                        self.state = State::AuthLogin(user);
                        return Step::Read;
                    }
                    Line::TooLong => self.sasl_too_long(),
                    Line::Complete(line) => {
                        self.state = State::Command;
                        self.auth_login(user, &line)
                    }
                },
            };
            if let Some(step) = step {
                if step.awaits_answer() {
                    self.state = State::Waiting;
                }
                return step;
            }
            if matches!(self.state, State::Waiting) {
                self.state = State::Command;
            }
        }
    }

    /// Ends the transaction in progress and forgets everything it buffered: envelope and BDAT
    /// chunks. Called by RSET, HELO/EHLO, STARTTLS, MAIL, the end of
    /// a message and every refused DATA or BDAT, so nothing of one transaction can reach the
    /// next (a BDAT chunk sent before RSET or STARTTLS once did).
    fn reset_transaction(&mut self) {
        self.txn = None;
        self.message = Vec::new();
    }

    // --- commands -------------------------------------------------------------------------

    fn command(&mut self) -> Option<Step> {
        // The receiver is given at most one line (up to the first LF). Given more, it parses
        // in place, and after some syntax errors (`MAIL FROM` without a colon) it looks for
        // the end of the line past the LF it stopped at, swallowing the next pipelined
        // command; a line that arrived in pieces it cuts at the LF instead. So the same bytes
        // were one command or two depending on how TCP split them (found by the `data` fuzz
        // target). With one line at a time, that case shows up as "needs more data" for a
        // complete line, and is answered as the syntax error it is.
        let start = self.pos;
        let rest = &self.input[start..];
        let line_end = rest.iter().position(|&b| b == b'\n');
        let line = line_end.map_or(rest, |end| &rest[..=end]);
        if self.partial_line + line.len() > MAX_COMMAND_LINE {
            // Refused without buffering the rest: what is left of the line is dropped as it
            // arrives (`SkipLine`), and the driver's deadline bounds how long that may take.
            self.receiver = RequestReceiver::default();
            self.partial_line = 0;
            self.completed += 1;
            self.state = if line_end.is_some() {
                self.pos = start + line.len();
                State::Command
            } else {
                self.pos = self.input.len();
                State::SkipLine
            };
            self.stage = "COMMAND";
            self.error(Reply::new(500, "5.5.2", "Line too long"));
            return None;
        }
        let mut iter = line.iter();
        let parsed = self.receiver.ingest(&mut iter).map(Request::into_owned);
        self.pos = start + line.len() - iter.len();
        if line_end.is_none() {
            self.partial_line += line.len() - iter.len();
        } else {
            self.partial_line = 0;
            self.completed += 1;
        }
        if let (Err(smtp_proto::Error::NeedsMoreData { .. }), Some(end)) = (&parsed, line_end) {
            self.pos = start + end + 1;
            self.receiver = RequestReceiver::default();
            self.state = State::Command;
            self.stage = "COMMAND";
            self.error(Reply::new(501, "5.5.2", "Syntax error in command"));
            return None;
        }
        self.state = State::Command;
        let request = match parsed {
            Ok(r) => r,
            Err(smtp_proto::Error::NeedsMoreData { .. }) => return Some(Step::Read),
            Err(e) => {
                self.stage = "COMMAND";
                self.error(syntax_reply(e));
                return self.closed();
            }
        };
        self.stage = match &request {
            Request::Ehlo { .. } | Request::Helo { .. } | Request::Lhlo { .. } => "HELO",
            Request::Mail { .. } => "MAIL",
            Request::Rcpt { .. } => "RCPT",
            Request::Data | Request::Bdat { .. } => "DATA",
            Request::StartTls => "STARTTLS",
            Request::Auth { .. } => "AUTH",
            _ => "COMMAND",
        };
        self.recipient = match &request {
            Request::Rcpt { to } => Some(to.address.clone()),
            _ => None,
        };
        let step = match request {
            Request::Ehlo { host } => {
                self.hello(host, true);
                None
            }
            Request::Helo { host } => {
                self.hello(host, false);
                None
            }
            Request::Lhlo { .. } => {
                self.error(Reply::new(500, "5.5.1", "LHLO is for LMTP"));
                None
            }
            Request::Mail { from } => self.mail(from),
            Request::Rcpt { to } => self.rcpt(to),
            Request::Data => self.data(),
            Request::Bdat {
                chunk_size,
                is_last,
            } => self.bdat(chunk_size, is_last),
            Request::Rset => {
                self.reset_transaction();
                self.reply(&Reply::new(250, "2.0.0", "OK"));
                None
            }
            Request::Noop { .. } => {
                self.reply(&Reply::new(250, "2.0.0", "OK"));
                None
            }
            Request::Quit => {
                self.reply(&Reply::new(221, "2.0.0", "Bye"));
                self.state = State::Closed;
                return Some(Step::Close);
            }
            Request::Vrfy { .. } => {
                self.reply(&Reply::new(
                    252,
                    "2.5.0",
                    "Cannot VRFY user, but will accept message and attempt delivery",
                ));
                None
            }
            Request::Help { .. } => {
                self.reply(&Reply::new(214, "2.0.0", "See RFC 5321; commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH"));
                None
            }
            Request::StartTls if has_parameter(line, "STARTTLS") => {
                // RFC 3207 §4: STARTTLS takes no parameters.
                self.error(Reply::new(501, "5.5.4", "Syntax: STARTTLS (no parameters)"));
                None
            }
            Request::StartTls => self.starttls(),
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(mechanism, initial_response),
            Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => {
                self.error(Reply::new(502, "5.5.1", "Command not implemented"));
                None
            }
        };
        if step.is_none() {
            return self.closed();
        }
        step
    }

    /// `Some(Step::Close)` when an error limit closed the session.
    fn closed(&self) -> Option<Step> {
        matches!(self.state, State::Closed).then_some(Step::Close)
    }

    // --- replies --------------------------------------------------------------------------

    fn write_line(&mut self, code: u16, enhanced: &str, text: &str) {
        let line = if enhanced.is_empty() {
            format!("{code} {text}\r\n")
        } else {
            format!("{code} {enhanced} {text}\r\n")
        };
        self.out.extend_from_slice(line.as_bytes());
    }

    fn reply(&mut self, r: &Reply) {
        self.write_line(r.code, &r.enhanced, &r.text);
    }

    /// Sends an error reply of the session's own (a protocol error) and counts it.
    fn error(&mut self, r: Reply) {
        self.refuse("protocol", r);
    }

    /// Sends a refusal of the session's own, for `reason`, and records it for the log.
    fn refuse(&mut self, reason: &'static str, r: Reply) {
        self.record(reason, &r);
        self.count_error(r);
    }

    fn record(&mut self, reason: &'static str, r: &Reply) {
        let txn = self.txn.as_ref();
        self.refused.push(Refused {
            stage: self.stage,
            reason,
            reply: r.clone(),
            sender: txn.map(|t| t.sender.address.clone()),
            recipients: txn
                .map(|t| t.recipients.iter().map(|r| r.address.clone()).collect())
                .unwrap_or_default(),
            recipient: self.recipient.clone(),
        });
    }

    /// Sends an error reply and counts it; too many errors close the session, and so does a
    /// 421 (its meaning in SMTP: "closing the channel"), e.g. from a plugin against probing.
    /// Not recorded: the caller did, or the inbound core decided and logged it.
    /// Refuses a command given out of sequence with the first of `checks` that holds, each
    /// `(wrong, code, text)` (enhanced code 5.5.1); true when one did.
    fn out_of_sequence(&mut self, checks: &[(bool, u16, &str)]) -> bool {
        match checks.iter().find(|(wrong, _, _)| *wrong) {
            Some((_, code, text)) => {
                self.error(Reply::new(*code, "5.5.1", text));
                true
            }
            None => false,
        }
    }

    /// Sends `close`, records it for the log, and closes the session.
    fn give_up(&mut self, reason: &'static str, close: &Reply) {
        self.record(reason, close);
        self.reply(close);
        self.state = State::Closed;
    }

    fn count_error(&mut self, r: Reply) {
        self.reply(&r);
        if r.code == 421 {
            self.state = State::Closed;
            return;
        }
        self.errors += 1;
        if self.errors >= self.cfg.max_errors {
            let close = Reply::new(421, "4.7.0", "Too many errors, closing connection");
            self.give_up("too-many-errors", &close);
        }
    }
}

/// True when a command line holds more than its verb (`STARTTLS foo`).
fn has_parameter(line: &[u8], verb: &str) -> bool {
    let text = line.trim_ascii();
    text.len() > verb.len()
}

/// The reply for a command the grammar refused, with the expected syntax as a hint.
fn syntax_reply(e: smtp_proto::Error) -> Reply {
    use smtp_proto::Error as E;
    match e {
        E::UnknownCommand => Reply::new(500, "5.5.1", "Unknown command"),
        E::InvalidSenderAddress => Reply::new(501, "5.1.7", "Bad sender address syntax"),
        E::InvalidRecipientAddress => Reply::new(501, "5.1.3", "Bad recipient address syntax"),
        E::SyntaxError { syntax } => Reply::new(501, "5.5.4", &format!("Syntax: {syntax}")),
        E::InvalidParameter { param } => {
            Reply::new(501, "5.5.4", &format!("Invalid parameter {param}"))
        }
        E::UnsupportedParameter { param } => {
            let param: String = param.chars().filter(|c| !c.is_control()).take(64).collect();
            Reply::new(555, "5.5.4", &format!("Unsupported parameter {param}"))
        }
        E::ResponseTooLong => Reply::new(500, "5.5.2", "Line too long"),
        E::NeedsMoreData { .. } | E::InvalidResponse { .. } => {
            Reply::new(500, "5.5.2", "Syntax error")
        }
    }
}

/// Normalises bare LF and bare CR in a received message to CRLF.
///
/// Policy (like Postfix's `smtpd_forbid_bare_newline = normalize`): only `<CRLF>.<CRLF>` ends
/// a message — the receiver guarantees that — and any other line ending inside the message is
/// stored as CRLF, so no next hop can ever read a bare line ending as an end of data (SMTP
/// smuggling) and stored messages always have one line-ending convention.
pub fn normalise_line_endings(raw: Vec<u8>) -> Vec<u8> {
    let bare = raw.iter().enumerate().any(|(i, &b)| {
        (b == b'\n' && (i == 0 || raw[i - 1] != b'\r'))
            || (b == b'\r' && raw.get(i + 1) != Some(&b'\n'))
    });
    if !bare {
        return raw;
    }
    let mut out = Vec::with_capacity(raw.len() + 64);
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'\r' if raw.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
            }
            b'\r' | b'\n' => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
