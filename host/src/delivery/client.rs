//! The outbound SMTP/LMTP client: hands one message to one next hop and reports the remote
//! reply for every recipient.
//!
//! Written on `smtp-proto`'s reply and EHLO parsers rather than with a client crate: delivery
//! needs every recipient's own reply (RCPT refusals, and LMTP's one reply per recipient after
//! DATA) and control of pipelining and STARTTLS policy, which the client crates hide.
//!
//! A [`Connection`] carries several messages in turn (RSET between them when a transaction
//! was left open), so the queue runner can reuse it for mail to the same next hop.
//!
//! A refusal by the server (a 4xx/5xx reply) is an [`Outcome`] with that reply per recipient;
//! a failure to talk to the server at all (connection, TLS, timeout, garbage) is a
//! [`ClientError`], which the caller treats as a temporary failure for every recipient.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::dane::HopDane;
use super::tls_config;
use crate::smtp::reply::Reply;

pub use crate::config::TlsPolicy;

/// How to talk to the next hop.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Our name, for EHLO/LHLO.
    pub helo: String,
    /// TLS policy.
    pub tls: TlsPolicy,
    /// AUTH PLAIN credentials, sent only over TLS.
    pub auth: Option<(String, String)>,
    /// Speak LMTP (LHLO, one reply per recipient after DATA).
    pub lmtp: bool,
    /// How long each phase of the conversation may take.
    pub timeouts: Timeouts,
    /// Messages sent over one connection before it is closed (none: no limit).
    pub max_messages: Option<u32>,
    /// What DANE asks of this next hop (RFC 7672): TLS required, and the certificate checked
    /// by the host's TLSA records instead of the system's roots.
    pub dane: HopDane,
}

/// Deadlines for each phase of a conversation with a next hop, like Postfix's
/// `smtp_*_timeout` family: a host that accepts the connection and never greets is given up
/// after `greeting`, not after the much longer time a large message's data may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The TCP (or Unix socket) connection.
    pub connect: Duration,
    /// The greeting, and each step of setting the session up: EHLO/LHLO, STARTTLS and its
    /// handshake, AUTH.
    pub greeting: Duration,
    /// Each command of a transaction and its reply: RSET, MAIL, RCPT, DATA, QUIT.
    pub command: Duration,
    /// Sending the message, and the reply to its end of data.
    pub data: Duration,
}

impl Timeouts {
    /// The same deadline for every phase.
    pub fn all(d: Duration) -> Timeouts {
        Timeouts {
            connect: d,
            greeting: d,
            command: d,
            data: d,
        }
    }

    /// The deadline of the step named `stage` (as in [`ClientError::Conversation`]).
    fn of(&self, stage: &str) -> Duration {
        match stage {
            "greeting" | "EHLO" | "STARTTLS" | "AUTH" => self.greeting,
            "message" | "end of DATA" => self.data,
            _ => self.command,
        }
    }
}

/// One message to hand over.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    /// MAIL FROM (empty for the null sender).
    pub sender: &'a str,
    /// RCPT TO addresses.
    pub recipients: &'a [String],
    /// The message, CRLF line endings, not dot-stuffed.
    pub message: &'a [u8],
    /// The message has 8-bit content (BODY=8BITMIME when the server offers it).
    pub eight_bit: bool,
    /// Addresses or headers need SMTPUTF8.
    pub smtputf8: bool,
    /// DSN parameters to pass on when the next hop offers DSN.
    pub dsn: DsnParams<'a>,
    /// The sender asked for REQUIRETLS (RFC 8689): sent only over verified TLS to a next
    /// hop that offers REQUIRETLS, with the parameter; refused with 5.7.30 otherwise.
    pub requiretls: bool,
}

/// The DSN parameters of a message (RFC 3461 §4.1: a relay passes them on to a next hop that
/// offers DSN), already formatted as ESMTP parameters with a leading space.
#[derive(Debug, Clone, Copy, Default)]
pub struct DsnParams<'a> {
    /// RET and ENVID for MAIL FROM, e.g. ` RET=HDRS ENVID=abc`; empty for none.
    pub mail: &'a str,
    /// NOTIFY and ORCPT for each RCPT TO, in the order of `recipients`; missing or empty for
    /// none.
    pub rcpt: &'a [String],
}

/// RFC 3461 §4 xtext: `+` and `=`, and anything outside printable ASCII, as `+HH`.
pub fn xtext(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (33..=126).contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// The remote answer for every recipient, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The server that answered (name or address).
    pub remote: String,
    /// (recipient, the reply that decided it).
    pub recipients: Vec<(String, Reply)>,
    /// TLS was used.
    pub tls: bool,
    /// The next hop offered DSN, so the DSN parameters went with the message: success
    /// notices are its business from here.
    pub dsn: bool,
}

/// Talking to the next hop failed before it decided anything.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not connect.
    #[error("cannot connect to {remote}: {source}")]
    Connect {
        /// Where.
        remote: String,
        /// Why.
        source: std::io::Error,
    },
    /// The connection broke or the server stopped answering.
    #[error("{remote}: {stage}: {problem}")]
    Conversation {
        /// Where.
        remote: String,
        /// The command in progress.
        stage: &'static str,
        /// What happened.
        problem: String,
    },
    /// TLS was required but not offered or failed.
    #[error("{remote}: TLS: {problem}")]
    Tls {
        /// Where.
        remote: String,
        /// What happened.
        problem: String,
    },
}

impl ClientError {
    /// True when the failure came before the server could have taken the message (at RSET
    /// or MAIL), so sending it again elsewhere cannot duplicate it.
    pub fn before_message(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::Tls { .. } => true,
            ClientError::Conversation { stage, .. } => matches!(*stage, "RSET" | "MAIL"),
        }
    }
}

impl ClientError {
    /// True when the connection failed after the whole message and its end-of-data marker
    /// were sent: the server may have taken it, so it must not be sent to another host in the
    /// same attempt (a later retry may still duplicate it: at-least-once, never twice at once).
    pub fn after_end_of_data(&self) -> bool {
        matches!(
            self,
            ClientError::Conversation {
                stage: "end of DATA",
                ..
            }
        )
    }
}

/// Where the next hop listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix-domain socket (LMTP to a local mailbox server).
    Unix(PathBuf),
}

impl From<SocketAddr> for Target {
    fn from(a: SocketAddr) -> Target {
        Target::Tcp(a)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(a) => write!(f, "{a}"),
            Target::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A byte stream to the next hop, TCP or Unix.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Stream =
    crate::tls::stream::MaybeTls<tokio_rustls::client::TlsStream<Box<dyn Io>>, Box<dyn Io>>;

/// An open, greeted (and, as configured, encrypted and authenticated) connection to a next
/// hop, ready for a message.
pub struct Connection {
    stream: Stream,
    buf: Vec<u8>,
    remote: String,
    cfg: ClientConfig,
    caps: u32,
    tls: bool,
    /// A transaction was begun and not completed: RSET before the next one.
    dirty: bool,
    /// Messages sent over this connection.
    pub messages: u32,
    /// When it was opened.
    pub opened: Instant,
}

/// The largest reply accepted from a server (a defence against a hostile next hop).
const MAX_REPLY: usize = 64 * 1024;

impl Connection {
    fn fail(&self, stage: &'static str, problem: impl Into<String>) -> ClientError {
        ClientError::Conversation {
            remote: self.remote.clone(),
            stage,
            problem: problem.into(),
        }
    }

    async fn send(&mut self, stage: &'static str, bytes: &[u8]) -> Result<(), ClientError> {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.cfg.timeouts.of(stage), write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.fail(stage, e.to_string())),
            Err(_) => Err(self.fail(stage, "timeout while sending")),
        }
    }

    /// Reads one complete reply (all its lines); returns its raw bytes.
    async fn reply_bytes(&mut self, stage: &'static str) -> Result<Vec<u8>, ClientError> {
        loop {
            if let Some(end) = reply_end(&self.buf) {
                return Ok(self.buf.drain(..end).collect());
            }
            if self.buf.len() > MAX_REPLY {
                return Err(self.fail(stage, "reply too long"));
            }
            let mut chunk = [0u8; 8192];
            let deadline = self.cfg.timeouts.of(stage);
            let n = match tokio::time::timeout(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) => return Err(self.fail(stage, "connection closed by the server")),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(self.fail(stage, e.to_string())),
                Err(_) => return Err(self.fail(stage, "timeout waiting for the reply")),
            };
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn reply(&mut self, stage: &'static str) -> Result<Reply, ClientError> {
        let raw = self.reply_bytes(stage).await?;
        self.reply_from(&raw, stage)
    }

    /// EHLO (or LHLO); returns the server's capabilities, or its refusal.
    async fn hello(&mut self) -> Result<Result<u32, Reply>, ClientError> {
        let verb = if self.cfg.lmtp { "LHLO" } else { "EHLO" };
        let line = format!("{verb} {}\r\n", self.cfg.helo);
        self.send("EHLO", line.as_bytes()).await?;
        let raw = self.reply_bytes("EHLO").await?;
        if !raw.starts_with(b"250") {
            let reply = self.reply_from(&raw, "EHLO")?;
            return Ok(Err(reply));
        }
        let ehlo = smtp_proto::EhloResponse::parse(&mut raw.iter())
            .map_err(|e| self.fail("EHLO", format!("malformed EHLO reply: {e:?}")))?;
        Ok(Ok(ehlo.capabilities))
    }

    fn reply_from(&self, raw: &[u8], stage: &'static str) -> Result<Reply, ClientError> {
        let parsed = smtp_proto::response::parser::ResponseReceiver::default()
            .parse(&mut raw.iter())
            .map_err(|e| self.fail(stage, format!("malformed reply: {e:?}")))?;
        Ok(Reply {
            code: parsed.code,
            enhanced: if parsed.esc[0] > 0 {
                format!("{}.{}.{}", parsed.esc[0], parsed.esc[1], parsed.esc[2])
            } else {
                String::new()
            },
            text: parsed.message.replace(['\r', '\n'], " ").trim().to_string(),
        })
    }

    /// The server that answered (name or address), for logs and the DSN's Remote-MTA.
    pub fn remote(&self) -> &str {
        &self.remote
    }

    /// TLS is in use.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// Connects to `target` (whose name is `server_name`, for TLS and reports), reads the
    /// greeting, says EHLO/LHLO, negotiates STARTTLS and AUTH as `cfg` says. A refusal by the
    /// server (greeting, EHLO or AUTH) is `Ok(Err(reply))`.
    pub async fn open(
        target: &Target,
        server_name: &str,
        cfg: &ClientConfig,
    ) -> Result<Result<Connection, Reply>, ClientError> {
        let remote = server_name.to_string();
        let connected: std::io::Result<Box<dyn Io>> = match target {
            Target::Tcp(addr) => {
                match tokio::time::timeout(cfg.timeouts.connect, TcpStream::connect(addr)).await {
                    Ok(Ok(s)) => {
                        let _ = s.set_nodelay(true);
                        Ok(Box::new(s))
                    }
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
                }
            }
            Target::Unix(path) => {
                match tokio::time::timeout(cfg.timeouts.connect, UnixStream::connect(path)).await {
                    Ok(Ok(s)) => Ok(Box::new(s)),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
                }
            }
        };
        let io = connected.map_err(|source| ClientError::Connect {
            remote: remote.clone(),
            source,
        })?;
        let mut c = Connection {
            stream: Stream::Plain(io),
            buf: Vec::new(),
            remote: remote.clone(),
            cfg: cfg.clone(),
            caps: 0,
            tls: false,
            dirty: false,
            messages: 0,
            opened: Instant::now(),
        };
        let greeting = c.reply("greeting").await?;
        if greeting.code != 220 {
            return Ok(Err(greeting));
        }
        c.caps = match c.hello().await? {
            Ok(caps) => caps,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let offers_tls = c.caps & smtp_proto::EXT_START_TLS != 0;
        if cfg.tls == TlsPolicy::Required && !offers_tls {
            return Err(ClientError::Tls {
                remote,
                problem: "STARTTLS is required but not offered".into(),
            });
        }
        if cfg.tls != TlsPolicy::None && offers_tls {
            c.send("STARTTLS", b"STARTTLS\r\n").await?;
            let r = c.reply("STARTTLS").await?;
            if r.code != 220 {
                if cfg.tls == TlsPolicy::Required {
                    return Err(ClientError::Tls {
                        remote,
                        problem: format!("STARTTLS refused: {r}"),
                    });
                }
            } else {
                c.starttls(server_name).await?;
                c.caps = match c.hello().await? {
                    Ok(caps) => caps,
                    Err(refusal) => return Ok(Err(refusal)),
                };
            }
        }
        if let Some((user, password)) = &cfg.auth {
            if !c.tls {
                return Err(ClientError::Tls {
                    remote,
                    problem: "AUTH needs TLS, which was not negotiated".into(),
                });
            }
            use base64::Engine as _;
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
            c.send("AUTH", format!("AUTH PLAIN {token}\r\n").as_bytes())
                .await?;
            let r = c.reply("AUTH").await?;
            if r.code != 235 {
                return Ok(Err(r));
            }
        }
        Ok(Ok(c))
    }

    /// The TLS handshake after the server's 220 to STARTTLS.
    async fn starttls(&mut self, server_name: &str) -> Result<(), ClientError> {
        self.buf.clear();
        let Some(io) = self.stream.take_plain() else {
            return Err(self.fail("STARTTLS", "not a plain connection"));
        };
        let tls_error = |problem: String| ClientError::Tls {
            remote: self.remote.clone(),
            problem,
        };
        let config = match &self.cfg.dane {
            HopDane::Authenticate(tlsa) => tls_config::dane(tlsa.clone()),
            HopDane::EncryptOnly(_) => tls_config::unverified(),
            _ if self.cfg.tls == TlsPolicy::Required => tls_config::verified(),
            _ => tls_config::unverified(),
        };
        let connector = tokio_rustls::TlsConnector::from(config);
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
            .map_err(|e| tls_error(e.to_string()))?;
        let handshake = connector.connect(name, io);
        let stream = match tokio::time::timeout(self.cfg.timeouts.greeting, handshake).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(tls_error(tls_problem(&e))),
            Err(_) => return Err(tls_error("handshake timeout".into())),
        };
        self.stream = Stream::Tls(Box::new(stream));
        self.tls = true;
        Ok(())
    }

    /// Sends one message: MAIL and every RCPT (pipelined when offered), then DATA; returns
    /// the reply that decided each recipient. The connection stays open for the next one.
    pub async fn transact(&mut self, msg: &Outgoing<'_>) -> Result<Outcome, ClientError> {
        if self.dirty {
            self.send("RSET", b"RSET\r\n").await?;
            let r = self.reply("RSET").await?;
            if r.code / 100 != 2 {
                return Err(self.fail("RSET", format!("RSET refused: {r}")));
            }
            self.dirty = false;
        }
        let caps = self.caps;
        // RFC 6152 §3 and RFC 6531 §3.2: 8-bit or internationalised mail is never sent as it
        // is to a server that did not say it takes it; it is returned (no conversion here).
        let refusal = if msg.eight_bit && caps & smtp_proto::EXT_8BIT_MIME == 0 {
            Some(Reply::new(
                554,
                "5.6.3",
                &format!(
                    "{} does not offer 8BITMIME; the message has 8-bit content and was not converted",
                    self.remote
                ),
            ))
        } else if msg.smtputf8 && caps & smtp_proto::EXT_SMTP_UTF8 == 0 {
            Some(Reply::new(
                553,
                "5.6.7",
                &format!(
                    "{} does not offer SMTPUTF8; the message needs it (non-ASCII addresses or header fields)",
                    self.remote
                ),
            ))
        } else {
            None
        };
        if let Some(r) = refusal {
            return Ok(Outcome {
                remote: self.remote.clone(),
                recipients: all(msg.recipients, &r),
                tls: self.tls,
                dsn: false,
            });
        }
        self.messages += 1;
        let dsn = caps & smtp_proto::EXT_DSN != 0;
        if msg.requiretls && !(self.tls && caps & smtp_proto::EXT_REQUIRE_TLS != 0) {
            // Nothing of the message is sent: the next hop could not keep the promise.
            let why = if self.tls {
                "the next hop does not offer REQUIRETLS"
            } else {
                "the next hop was not reached over TLS"
            };
            let reply = Reply::new(
                550,
                "5.7.30",
                &format!("REQUIRETLS support required: {why}"),
            );
            return Ok(Outcome {
                remote: self.remote.clone(),
                recipients: msg
                    .recipients
                    .iter()
                    .map(|r| (r.clone(), reply.clone()))
                    .collect(),
                tls: self.tls,
                dsn: false,
            });
        }
        let rcpt_line = |i: usize, r: &str| {
            let params = if dsn {
                msg.dsn.rcpt.get(i).map_or("", String::as_str)
            } else {
                ""
            };
            format!("RCPT TO:<{r}>{params}\r\n")
        };
        let mut mail = format!("MAIL FROM:<{}>", msg.sender);
        if caps & smtp_proto::EXT_SIZE != 0 {
            mail.push_str(&format!(" SIZE={}", msg.message.len()));
        }
        if msg.eight_bit && caps & smtp_proto::EXT_8BIT_MIME != 0 {
            mail.push_str(" BODY=8BITMIME");
        }
        if msg.smtputf8 && caps & smtp_proto::EXT_SMTP_UTF8 != 0 {
            mail.push_str(" SMTPUTF8");
        }
        if dsn {
            mail.push_str(msg.dsn.mail);
        }
        if msg.requiretls {
            mail.push_str(" REQUIRETLS");
        }
        mail.push_str("\r\n");
        self.dirty = true;
        let mut results: Vec<(String, Option<Reply>)> = Vec::new();
        let mail_reply;
        if caps & smtp_proto::EXT_PIPELINING != 0 {
            let mut batch = mail.into_bytes();
            for (i, r) in msg.recipients.iter().enumerate() {
                batch.extend_from_slice(rcpt_line(i, r).as_bytes());
            }
            self.send("MAIL", &batch).await?;
            mail_reply = self.reply("MAIL").await?;
            for r in msg.recipients {
                let reply = self.reply("RCPT").await?;
                results.push((r.clone(), Some(reply)));
            }
        } else {
            self.send("MAIL", mail.as_bytes()).await?;
            mail_reply = self.reply("MAIL").await?;
            if mail_reply.code / 100 == 2 {
                for (i, r) in msg.recipients.iter().enumerate() {
                    self.send("RCPT", rcpt_line(i, r).as_bytes()).await?;
                    let reply = self.reply("RCPT").await?;
                    results.push((r.clone(), Some(reply)));
                }
            }
        }
        let outcome = |recipients| Outcome {
            remote: self.remote.clone(),
            recipients,
            tls: self.tls,
            dsn,
        };
        if mail_reply.code / 100 != 2 {
            return Ok(outcome(all(msg.recipients, &mail_reply)));
        }
        let accepted: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, (_, r))| r.as_ref().is_some_and(|r| r.code / 100 == 2))
            .map(|(i, _)| i)
            .collect();
        if !accepted.is_empty() {
            self.send("DATA", b"DATA\r\n").await?;
            let go = self.reply("DATA").await?;
            if go.code != 354 {
                for &i in &accepted {
                    results[i].1 = Some(go.clone());
                }
            } else {
                self.send("message", &dot_stuff(msg.message)).await?;
                if self.cfg.lmtp {
                    // LMTP: one reply per accepted recipient, in order (RFC 2033 §4.2).
                    for &i in &accepted {
                        let r = self.reply("end of DATA").await?;
                        results[i].1 = Some(r);
                    }
                } else {
                    let r = self.reply("end of DATA").await?;
                    for &i in &accepted {
                        results[i].1 = Some(r.clone());
                    }
                }
                self.dirty = false;
            }
        }
        let recipients = results
            .into_iter()
            .map(|(r, reply)| {
                (
                    r,
                    reply.unwrap_or_else(|| Reply::new(451, "4.4.0", "no reply")),
                )
            })
            .collect();
        Ok(Outcome {
            remote: self.remote.clone(),
            recipients,
            tls: self.tls,
            dsn,
        })
    }

    /// Says QUIT and closes (best effort).
    pub async fn quit(mut self) {
        let quit = async {
            if self.send("QUIT", b"QUIT\r\n").await.is_ok() {
                let _ = self.reply("QUIT").await;
            }
            let _ = self.stream.shutdown().await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), quit).await;
    }
}

/// Where a complete reply ends in `buf` (after the CRLF of a line whose fourth byte is a
/// space), if it is complete.
fn reply_end(buf: &[u8]) -> Option<usize> {
    let mut start = 0;
    while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
        let line = &buf[start..start + nl];
        start += nl + 1;
        if line.get(3) != Some(&b'-') {
            return Some(start);
        }
    }
    None
}

/// Dot-stuffs a message and appends the end-of-data marker.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 5);
    let mut at_line_start = true;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Every recipient gets the same reply (a refusal at MAIL or DATA).
fn all(recipients: &[String], reply: &Reply) -> Vec<(String, Reply)> {
    recipients
        .iter()
        .map(|r| (r.clone(), reply.clone()))
        .collect()
}

/// Delivers one message over a new connection to `target`, whose name is `server_name`
/// (for TLS), and closes it.
pub async fn deliver(
    target: impl Into<Target>,
    server_name: &str,
    cfg: &ClientConfig,
    msg: &Outgoing<'_>,
) -> Result<Outcome, ClientError> {
    let mut c = match Connection::open(&target.into(), server_name, cfg).await? {
        Ok(c) => c,
        Err(refusal) => {
            return Ok(Outcome {
                remote: server_name.to_string(),
                recipients: all(msg.recipients, &refusal),
                tls: false,
                dsn: false,
            });
        }
    };
    let out = c.transact(msg).await?;
    c.quit().await;
    Ok(out)
}

/// What went wrong in a TLS handshake: rustls's words, or a verifier's own text (the DANE
/// check's, which rustls would prefix with "unexpected error").
fn tls_problem(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::General(why)) => why.clone(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing_is_byte_exact() {
        assert_eq!(
            dot_stuff(b".a\r\nb\r\n..c\r\n"),
            b"..a\r\nb\r\n...c\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b"no newline"), b"no newline\r\n.\r\n");
    }

    #[test]
    fn reply_boundaries() {
        assert_eq!(reply_end(b"250-a\r\n250 b\r\nrest"), Some(14));
        assert_eq!(reply_end(b"250-a\r\n250"), None);
    }
}
