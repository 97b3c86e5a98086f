//! Sluice as a milter: the second front end of the [`crate::inbound`] core. Postfix (or
//! Sendmail) calls it at each SMTP stage through `smtpd_milters`; the core decides as it does
//! for Sluice's own SMTP server, and its decisions travel back as milter responses:
//! reject and tempfail with the plugin's own reply (SMFIR_REPLYCODE), discard, quarantine,
//! header additions and removals. The message is not spooled here: the MTA keeps it, and
//! writes its own `Received:` field.
//!
//! - [`protocol`]: the packets, sans-IO.
//! - This module: the listener and one conversation per MTA connection, several messages each.
//!
//! May use: the inbound core (every decision), the server context, the configuration and the
//! admin reports. Not the spool: the MTA keeps the message.

pub mod protocol;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};

use crate::config::DmarcMode;
use crate::envelope::Decision;
use crate::envelope::{Param, Recipient, Sender, TlsParams};
use crate::inbound::{Action, Client, Disposition, FrontEnd, Inbound, refuses};
use crate::server::context::ServerContext;
use crate::smtp::reply::Reply;
use protocol::{Command, Decoder, ProtocolError, Response, action, step};

/// Binds a milter Unix socket at `path` (replacing a stale socket file) with permissions
/// `mode` (octal, default 0660) so that the MTA's user can connect.
pub fn bind_unix(path: &Path, mode: Option<&str>) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket; not replaced",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    let mode = mode
        .and_then(|m| u32::from_str_radix(m.trim_start_matches("0o"), 8).ok())
        .unwrap_or(0o660);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// The largest TCP segment a milter connection's peer may send (TCP_MAXSEG on the listener,
/// announced in the SYN-ACK). Postfix sizes a milter stream's buffers at four times the
/// connection's MSS when that is above 1 KiB (`vstream_tweak_tcp`, against Nagle delays), and
/// its allocator fills every block with a pattern when it is allocated and again when it is
/// freed. Over loopback (an MSS of 32,741 on this machine, 65,483 on others) that is 128 or
/// 256 KiB for reading and as much for writing, mapped, filled and unmapped again for each
/// message in its cleanup process (which takes the connection over from smtpd per message).
/// With this cap they are 16 KiB: Postfix with Sluice as its milter spent 0.22–0.36 ms less
/// CPU per message in the milter benchmark (three runs), and delivered 7–12 % more; 100 KB
/// messages gained too, though a 64 KiB body chunk now travels in 16 segments. Over a real
/// network the MSS is below the cap already; a Unix socket gets 4 KiB buffers.
pub const MTA_MSS: u32 = 4096;

/// Binds a milter TCP listener with its peers' segments capped at [`MTA_MSS`].
pub fn bind_tcp(address: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    // As tokio's `TcpListener::bind` does: a restart can bind while old connections linger.
    socket.set_reuse_address(true)?;
    socket.set_tcp_mss(MTA_MSS)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

/// A TCP connection from the MTA that acknowledges what it reads at once (TCP_QUICKACK,
/// re-armed after every read: Linux clears it). The MTA sends macros as a packet of their own
/// that gets no answer, then the command; with Nagle's algorithm on its side (Postfix's milter
/// socket), the command waits until the macros are acknowledged, and a delayed ACK costs
/// 40 ms per stage — measured as 48 ms per message in the load benchmark.
struct QuickAck(tokio::net::TcpStream);

impl tokio::io::AsyncRead for QuickAck {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let r = std::pin::Pin::new(&mut self.0).poll_read(cx, buf);
        if r.is_ready() {
            let _ = rustix::net::sockopt::set_tcp_quickack(&self.0, true);
        }
        r
    }
}

impl tokio::io::AsyncWrite for QuickAck {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// An accepted MTA connection, over TCP or a Unix socket.
trait MtaStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> MtaStream for T {}

/// An accepted connection on its way to the plugin runtime, where its conversation runs: it
/// leaves the accepting runtime's reactor as a standard socket and is registered again there.
trait Rehome: Send + 'static {
    /// The stream, registered with the runtime this is called on.
    fn into_stream(self) -> std::io::Result<impl MtaStream>;
}

impl Rehome for std::net::TcpStream {
    fn into_stream(self) -> std::io::Result<impl MtaStream> {
        Ok(QuickAck(tokio::net::TcpStream::from_std(self)?))
    }
}

impl Rehome for std::os::unix::net::UnixStream {
    fn into_stream(self) -> std::io::Result<impl MtaStream> {
        tokio::net::UnixStream::from_std(self)
    }
}

/// Accepts MTA connections on TCP until the task is dropped or shutdown begins.
pub async fn accept_loop(
    ctx: Arc<ServerContext>,
    listener: TcpListener,
    dmarc: DmarcMode,
    allowed: Vec<ipnet::IpNet>,
    total: Arc<tokio::sync::Semaphore>,
) {
    serve_accepted(ctx.clone(), dmarc, total, || async {
        loop {
            let (tcp, peer) = listener.accept().await?;
            // An IPv4 peer on a dual-stack socket arrives as ::ffff:a.b.c.d.
            let ip = peer.ip().to_canonical();
            if !allowed.iter().any(|n| n.contains(&ip)) {
                tracing::warn!(mta = %peer, "milter: connection refused: the address is not in the listener's allow_from");
                continue;
            }
            let _ = tcp.set_nodelay(true);
            return Ok((tcp.into_std()?, peer.to_string()));
        }
    })
    .await;
}

/// Accepts MTA connections on a Unix socket until the task is dropped or shutdown begins.
pub async fn accept_loop_unix(
    ctx: Arc<ServerContext>,
    listener: UnixListener,
    dmarc: DmarcMode,
    total: Arc<tokio::sync::Semaphore>,
) {
    serve_accepted(ctx.clone(), dmarc, total, || async {
        let (s, _) = listener.accept().await?;
        Ok((s.into_std()?, "unix".to_string()))
    })
    .await;
}

/// The accept loop: one task per MTA connection, under the server's connection limit.
///
/// A conversation runs on the plugin runtime (see [`crate::plugin::executor`]): the MTA waits
/// for the answer to each stage, and each stage that runs plugins would otherwise cost two
/// cross-thread wake-ups (to the plugin thread and back) on top of the one for the MTA's
/// packet. Plugin work still goes to the slow lane when it runs long.
async fn serve_accepted<S, F, Fut>(
    ctx: Arc<ServerContext>,
    dmarc: DmarcMode,
    total: Arc<tokio::sync::Semaphore>,
    accept: F,
) where
    S: Rehome,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<(S, String)>>,
{
    let mut shutdown = ctx.shutdown.subscribe();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = accept() => a,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let Ok((stream, peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        while tasks.try_join_next().is_some() {}
        let Ok(permit) = total.clone().try_acquire_owned() else {
            tracing::warn!(mta = %peer, "milter: connection limit reached; closing");
            continue;
        };
        let ctx = ctx.clone();
        let conversation = async move {
            let ended = match stream.into_stream() {
                Ok(stream) => Conversation::new(ctx, dmarc).run(stream).await,
                Err(e) => Err(e.into()),
            };
            if let Err(e) = ended {
                tracing::info!(mta = %peer, error = %e, "milter connection ended");
            }
            drop(permit);
        };
        tasks.spawn_on(conversation, crate::plugin::executor::plugin_runtime());
    }
    while tasks.join_next().await.is_some() {}
}

/// Why a milter conversation ended early.
#[derive(Debug, thiserror::Error)]
enum ConversationError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("no command within {0} s")]
    Timeout(u64),
}

/// One MTA connection: the SMTP sessions it reports, one after another, and their messages.
struct Conversation {
    ctx: Arc<ServerContext>,
    dmarc: DmarcMode,
    /// The negotiated steps that change the conversation: replies the MTA does not wait
    /// for, and header values with their leading space.
    steps: u32,
    /// The actions the MTA allowed: modifications it did not allow are not sent.
    actions: u32,
    /// Macros sent so far in this SMTP session.
    macros: std::collections::HashMap<String, String>,
    /// The SMTP client, from the connect and HELO commands.
    client: Option<Client>,
    /// The transaction in progress.
    txn: Option<Inbound>,
    /// The message received so far: header fields as the MTA sent them, then the body.
    message: Vec<u8>,
    /// The message grew past the size limit: it is refused at its end.
    too_big: bool,
    /// `limits.max_message_size` in force at MAIL FROM (not looked up per chunk).
    max_message: usize,
}

impl Conversation {
    fn new(ctx: Arc<ServerContext>, dmarc: DmarcMode) -> Conversation {
        Conversation {
            ctx,
            dmarc,
            steps: 0,
            actions: 0,
            macros: Default::default(),
            client: None,
            txn: None,
            message: Vec::new(),
            too_big: false,
            max_message: 0,
        }
    }

    async fn run(mut self, mut tcp: impl MtaStream) -> Result<(), ConversationError> {
        let mut decoder = Decoder::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let command = match decoder.next_command()? {
                Some(c) => c,
                None => {
                    let secs = self.ctx.live().config.limits.command_timeout_secs;
                    let n = tokio::time::timeout(Duration::from_secs(secs), tcp.read(&mut buf))
                        .await
                        .map_err(|_| ConversationError::Timeout(secs))??;
                    if n == 0 {
                        return Ok(());
                    }
                    decoder.receive(&buf[..n]);
                    continue;
                }
            };
            if matches!(command, Command::Quit) {
                return Ok(());
            }
            let responses = self.handle(command).await;
            if !responses.is_empty() {
                let out: Vec<u8> = responses.iter().flat_map(Response::encode).collect();
                tcp.write_all(&out).await?;
            }
        }
    }

    /// The responses to one command (none for those the MTA does not wait for).
    async fn handle(&mut self, command: Command) -> Vec<Response> {
        match command {
            Command::Negotiate {
                version,
                actions,
                steps,
            } => {
                // Only what we use, of what the MTA offers.
                let ours = action::ADD_HEADERS
                    | action::CHANGE_HEADERS
                    | action::QUARANTINE
                    | action::DELETE_RECIPIENTS
                    | action::SET_MACRO_LIST;
                let skip = step::NO_DATA | step::NO_UNKNOWN;
                let quiet = step::NO_REPLY_CONNECT
                    | step::NO_REPLY_HELO
                    | step::NO_REPLY_HEADER
                    | step::NO_REPLY_EOH
                    | step::NO_REPLY_BODY
                    | step::HEADER_LEADING_SPACE;
                let steps = (skip | quiet) & steps;
                self.steps = steps & quiet;
                self.actions = ours & actions;
                // Only the macros read here, so the MTA expands and sends no others (each
                // stage's macros are a packet of their own).
                let macros = if self.actions & action::SET_MACRO_LIST != 0 {
                    vec![
                        (protocol::stage::CONNECT, "{client_addr}".to_string()),
                        (protocol::stage::HELO, "{tls_version} {cipher}".to_string()),
                        (protocol::stage::MAIL, "i {auth_authen}".to_string()),
                    ]
                } else {
                    Vec::new()
                };
                vec![Response::Negotiate {
                    version: version.min(protocol::VERSION),
                    actions: self.actions,
                    steps,
                    macros,
                }]
            }
            Command::Macros { raw, .. } => {
                // Only the macros read here are kept, each cut to a bound: an MTA that sends
                // others, or long values, grows nothing.
                for (name, value) in protocol::macro_pairs(&raw) {
                    keep_macro(&mut self.macros, name, value);
                }
                Vec::new()
            }
            Command::Connect { hostname, address } => {
                let ip = address
                    .map(|a| a.ip())
                    .or_else(|| self.macro_value("client_addr").and_then(|a| a.parse().ok()))
                    .unwrap_or(UNKNOWN_CLIENT);
                let _ = hostname;
                self.client = Some(mta_client(ip, address.map_or(0, |a: SocketAddr| a.port())));
                self.reply_unless(step::NO_REPLY_CONNECT)
            }
            Command::Helo(helo) => {
                if let Some(c) = self.client.as_mut() {
                    c.helo = helo;
                }
                self.reply_unless(step::NO_REPLY_HELO)
            }
            Command::Mail(args) => self.mail(args).await,
            Command::Rcpt(args) => self.rcpt(args).await,
            Command::Data | Command::Unknown => vec![Response::Continue],
            Command::Header { name, value } => {
                self.append_header(&name, &value);
                self.reply_unless(step::NO_REPLY_HEADER)
            }
            Command::EndOfHeaders => {
                self.push(b"\r\n");
                self.reply_unless(step::NO_REPLY_EOH)
            }
            Command::Body(chunk) => {
                self.push(&chunk);
                self.reply_unless(step::NO_REPLY_BODY)
            }
            Command::EndOfMessage => self.end_of_message().await,
            Command::Abort => {
                self.end_transaction();
                Vec::new()
            }
            Command::QuitNewConnection => {
                self.end_transaction();
                self.client = None;
                self.macros.clear();
                Vec::new()
            }
            Command::Quit => Vec::new(),
        }
    }

    fn reply_unless(&self, quiet: u32) -> Vec<Response> {
        if self.steps & quiet != 0 {
            Vec::new()
        } else {
            vec![Response::Continue]
        }
    }

    fn macro_value(&self, name: &str) -> Option<&str> {
        self.macros
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn end_transaction(&mut self) {
        self.txn = None;
        self.message = Vec::new();
        self.too_big = false;
    }

    /// Appends to the message being received, up to the size limit.
    fn push(&mut self, bytes: &[u8]) {
        if self.txn.is_none() || self.too_big {
            return;
        }
        if self.message.len() + bytes.len() > self.max_message {
            self.too_big = true;
            self.message = Vec::new();
            return;
        }
        self.message.extend_from_slice(bytes);
    }

    /// One header field as it was in the message: the MTA sends the value without the colon
    /// (and with its leading space when negotiated), folded lines with bare LF.
    fn append_header(&mut self, name: &str, value: &[u8]) {
        let mut field = Vec::with_capacity(name.len() + value.len() + 4);
        field.extend_from_slice(name.as_bytes());
        field.push(b':');
        if self.steps & step::HEADER_LEADING_SPACE == 0 && !value.is_empty() {
            field.push(b' ');
        }
        field.extend_from_slice(value);
        field.extend_from_slice(b"\r\n");
        let field = crate::smtp::session::normalise_line_endings(field);
        self.push(&field);
    }

    /// The client's facts as the macros tell them at MAIL FROM (TLS and AUTH are known then).
    fn client_at_mail(&self) -> Client {
        let mut c = self
            .client
            .clone()
            .unwrap_or_else(|| mta_client(UNKNOWN_CLIENT, 0));
        if let Some(v) = self.macro_value("tls_version") {
            c.tls = Some(TlsParams {
                version: v.to_string(),
                cipher: self.macro_value("cipher").unwrap_or("").to_string(),
            });
        }
        c.auth_user = self.macro_value("auth_authen").map(str::to_string);
        c.trusted =
            crate::inbound::rules::trusted(&self.ctx.live().config.relay.trusted_networks, c.ip);
        c
    }

    async fn mail(&mut self, args: Vec<String>) -> Vec<Response> {
        self.end_transaction();
        let (address, params) = envelope_args(&args);
        let live = self.ctx.live();
        self.max_message = live.config.limits.max_message_size;
        let front = FrontEnd {
            dmarc: self.dmarc,
            writes_received: false,
            verify: live.verifier.verifies(),
            // The MTA decides what it relays.
            relay_control: false,
        };
        // The MTA's queue id names the transaction in both logs, when it is known yet.
        let id = self
            .macro_value("i")
            .filter(|i| i.chars().all(|c| c.is_ascii_alphanumeric()))
            .map(str::to_string)
            .unwrap_or_else(crate::spool::new_queue_id);
        let client = self.client_at_mail();
        let (txn, decision) =
            Inbound::mail(live, client, front, id, Sender { address, params }).await;
        if refuses(&decision) {
            return vec![reply_code(&decision)];
        }
        self.txn = Some(txn);
        vec![Response::Continue]
    }

    async fn rcpt(&mut self, args: Vec<String>) -> Vec<Response> {
        let (address, params) = envelope_args(&args);
        let Some(txn) = self.txn.as_mut() else {
            return vec![Response::Continue];
        };
        let decision = txn
            .rcpt(Recipient {
                address,
                params,
                discarded: false,
            })
            .await;
        if refuses(&decision) {
            vec![reply_code(&decision)]
        } else {
            vec![Response::Continue]
        }
    }

    async fn end_of_message(&mut self) -> Vec<Response> {
        let Some(mut txn) = self.txn.take() else {
            return vec![Response::Continue];
        };
        if self.too_big {
            self.end_transaction();
            return vec![Response::ReplyCode(
                "552 5.3.4 Message too big for this filter".to_string(),
            )];
        }
        let raw = std::mem::take(&mut self.message);
        let d = txn.message(raw).await;
        let calls = txn.take_calls();
        let leading_space = self.steps & step::HEADER_LEADING_SPACE != 0;
        let mut responses = responses_for(&d, txn.recipients(), leading_space);
        let allowed = self.actions;
        responses.retain(|r| {
            let needs = match r {
                Response::InsertHeader { .. } | Response::AddHeader { .. } => action::ADD_HEADERS,
                Response::ChangeHeader { .. } => action::CHANGE_HEADERS,
                Response::Quarantine(_) => action::QUARANTINE,
                Response::DeleteRecipient(_) => action::DELETE_RECIPIENTS,
                _ => 0,
            };
            let ok = allowed & needs == needs;
            if !ok {
                tracing::warn!(id = %txn.id(), "the MTA did not allow a modification the plugins asked for ({r:?}); not applied");
            }
            ok
        });
        // Behind a milter the MTA queues the message; its name is the same as ours.
        txn.log(&d, &calls, d.name(), &d.reply);
        self.end_transaction();
        responses
    }
}

/// The macros the conversation reads (the client's address, TLS, AUTH user, queue id); the
/// negotiation asks the MTA for these only.
const MACROS_READ: &[&str] = &["client_addr", "tls_version", "cipher", "auth_authen", "i"];

/// Longest macro value kept, in bytes.
const MAX_MACRO_VALUE: usize = 512;

/// Stores a macro the conversation reads, its value cut to [`MAX_MACRO_VALUE`]; others are
/// dropped.
fn keep_macro(macros: &mut std::collections::HashMap<String, String>, name: &[u8], value: &[u8]) {
    let name = name.trim_ascii();
    let name = name
        .strip_prefix(b"{")
        .and_then(|n| n.strip_suffix(b"}"))
        .unwrap_or(name);
    if let Some(&kept) = MACROS_READ.iter().find(|m| m.as_bytes() == name) {
        let value = String::from_utf8_lossy(&value[..value.len().min(4 * MAX_MACRO_VALUE)]);
        let value = crate::plugin::truncate(&value, MAX_MACRO_VALUE).to_string();
        macros.insert(kept.to_string(), value);
    }
}

/// The address of a client the MTA does not give: a connect of family `U` (unknown) or `L`
/// (a local socket), an address that does not parse (`unknown`, XCLIENT's `[UNAVAILABLE]`),
/// or no connect at all. It is in no network an operator could mean, never trusted (see
/// [`Conversation::client_at_mail`]), and SPF cannot pass for it; it used to be 127.0.0.1,
/// which trusted networks usually hold, so a spoofed From skipped DMARC and was signed.
const UNKNOWN_CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

/// The facts of an SMTP client the MTA reports, before HELO and MAIL add theirs.
fn mta_client(ip: IpAddr, port: u16) -> Client {
    Client {
        listener: "milter".to_string(),
        ip,
        port,
        helo: String::new(),
        esmtp: true,
        tls: None,
        auth_user: None,
        trusted: false,
    }
}

/// The address (without angle brackets) and ESMTP parameters of a MAIL or RCPT command.
fn envelope_args(args: &[String]) -> (String, Vec<Param>) {
    let address = args
        .first()
        .map(|a| a.trim().trim_start_matches('<').trim_end_matches('>'))
        .unwrap_or("")
        .to_string();
    let params = args
        .iter()
        .skip(1)
        .map(|p| match p.split_once('=') {
            Some((k, v)) => Param {
                keyword: k.to_ascii_uppercase(),
                value: Some(v.to_string()),
            },
            None => Param {
                keyword: p.to_ascii_uppercase(),
                value: None,
            },
        })
        .collect();
    (address, params)
}

/// SMFIR_REPLYCODE for a refusal: the plugin's own code, enhanced code and text.
fn reply_code(decision: &Decision) -> Response {
    match decision {
        Decision::Reject { reply } | Decision::Tempfail { reply } => {
            Response::ReplyCode(reply_text(reply))
        }
        _ => Response::Tempfail,
    }
}

fn reply_text(reply: &Reply) -> String {
    // `%` is a format character in Sendmail's reply handling; no line breaks ever.
    let text: String = reply
        .text
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| if c == '%' { ' ' } else { c })
        .collect();
    if reply.enhanced.is_empty() {
        format!("{} {text}", reply.code)
    } else {
        format!("{} {} {text}", reply.code, reply.enhanced)
    }
}

/// A formatted field (`Name: value` with CRLF and folding) as a milter name and value:
/// unfolded, as header values travel on one line.
fn split_field(field: &str) -> (String, String) {
    let (name, value) = field.split_once(':').unwrap_or((field, ""));
    let value = value
        .trim_end_matches(['\r', '\n'])
        .replace("\r\n\t", " ")
        .replace("\r\n ", " ")
        .replace(['\r', '\n'], " ");
    (name.trim().to_string(), value.trim_start().to_string())
}

/// The modifications and verdict for the end of a message.
/// With `leading_space` (SMFIP_HDR_LEADSPC negotiated) the MTA takes header values exactly
/// as given, so added values carry their space after the colon.
fn responses_for(d: &Disposition, recipients: &[Recipient], leading_space: bool) -> Vec<Response> {
    let mut out = Vec::new();
    match d.action {
        Action::Refuse => return vec![reply_code(&d.decision)],
        Action::Discard => return vec![Response::Discard],
        Action::Quarantine | Action::Queue => {}
    }
    // Removals first, last occurrence first so that the indexes stay right.
    let header_end = d
        .received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(d.received.len(), |i| i + 2);
    let header = String::from_utf8_lossy(&d.received[..header_end]);
    for name in &d.remove {
        let count = header
            .split("\r\n")
            .filter(|l| {
                l.split_once(':')
                    .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            })
            .count();
        for index in (1..=count).rev() {
            out.push(Response::ChangeHeader {
                index: u32::try_from(index).unwrap_or(u32::MAX),
                name: name.clone(),
                value: String::new(),
            });
        }
    }
    // Our fields go on top, in order.
    for (i, field) in d.prepend.iter().enumerate() {
        let (name, mut value) = split_field(field);
        if leading_space {
            value.insert(0, ' ');
        }
        out.push(Response::InsertHeader {
            index: u32::try_from(i).unwrap_or(u32::MAX),
            name,
            value,
        });
    }
    for r in recipients.iter().filter(|r| r.discarded) {
        out.push(Response::DeleteRecipient(format!("<{}>", r.address)));
    }
    if let Some(reason) = &d.quarantine {
        let reason: String = reason.chars().filter(|c| !c.is_control()).collect();
        out.push(Response::Quarantine(reason));
    }
    out.push(Response::Continue);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_mta_connecting_over_tcp_sees_the_capped_segment_size() {
        let listener = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let mta = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        // What Postfix reads with getsockopt(TCP_MAXSEG) to size its buffers (loopback's own
        // MSS is 16 KiB or more).
        let mss = socket2::SockRef::from(&mta).tcp_mss().unwrap();
        assert!(mss <= MTA_MSS && mss > 1024, "MSS {mss}");
        assert!(listener.accept().await.is_ok());
    }

    #[test]
    fn envelope_arguments_lose_their_brackets_and_keep_parameters() {
        let (a, p) = envelope_args(&[
            "<a@example.org>".into(),
            "SIZE=42".into(),
            "SMTPUTF8".into(),
        ]);
        assert_eq!(a, "a@example.org");
        assert_eq!(p[0].keyword, "SIZE");
        assert_eq!(p[0].value.as_deref(), Some("42"));
        assert_eq!(p[1].value, None);
        assert_eq!(envelope_args(&["<>".into()]).0, "");
    }

    #[test]
    fn reply_codes_carry_the_plugins_reply_without_format_characters() {
        let d = Decision::Reject {
            reply: Reply::new(550, "5.7.1", "100% spam"),
        };
        assert_eq!(
            reply_code(&d),
            Response::ReplyCode("550 5.7.1 100  spam".into())
        );
    }

    #[test]
    fn only_the_macros_read_are_kept_and_bounded() {
        let mut m = std::collections::HashMap::new();
        keep_macro(&mut m, b"{client_addr}", b"192.0.2.7");
        keep_macro(&mut m, b"i", b"ABC");
        keep_macro(&mut m, b"{cert_subject}", "x".repeat(10_000).as_bytes());
        for n in 0..1000 {
            keep_macro(&mut m, format!("{{junk{n}}}").as_bytes(), b"y");
        }
        keep_macro(&mut m, b"{auth_authen}", "é".repeat(1000).as_bytes());
        assert_eq!(m.len(), 3, "{:?}", m.keys());
        assert_eq!(m["client_addr"], "192.0.2.7");
        assert!(m["auth_authen"].len() <= MAX_MACRO_VALUE);
    }

    #[test]
    fn folded_fields_travel_unfolded() {
        assert_eq!(
            split_field("X-Spam-Status: Yes, score=9\r\n\ttests=A,B\r\n"),
            (
                "X-Spam-Status".to_string(),
                "Yes, score=9 tests=A,B".to_string()
            )
        );
    }
}
