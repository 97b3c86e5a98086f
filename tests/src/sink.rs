//! A recording SMTP/LMTP sink: the next hop of delivery tests (and the benchmark). It
//! accepts on TCP or a Unix socket, speaks just enough ESMTP/LMTP (PIPELINING, 8BITMIME
//! unless told not to, SIZE), records every message with its envelope and connection number, and counts
//! connections (total and the most open at once).
//!
//! Recipients steer the replies by their local part: `defer*` gets 451 and `reject*` 550 at
//! RCPT; over LMTP `lmtpdefer*` gets 452 and `lmtpreject*` 550 after DATA (one reply per
//! recipient, RFC 2033).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// One message the sink accepted (for at least one recipient).
#[derive(Debug, Clone)]
pub struct Received {
    /// MAIL FROM.
    pub from: String,
    /// The recipients it was accepted for.
    pub rcpts: Vec<String>,
    /// The message, dot-stuffing removed.
    pub data: Vec<u8>,
    /// Which connection (1, 2, …) carried it.
    pub connection: usize,
    /// When the sink had it whole (before answering).
    pub at: std::time::Instant,
}

impl Received {
    /// The text of the gzipped report the message carries: its attachment of MIME type
    /// `application/SUBTYPE` (`gzip` for DMARC, `tlsrpt+gzip` for TLS reports), gunzipped.
    pub fn gzipped_report(&self, subtype: &str) -> String {
        use mail_parser::MimeHeaders as _;
        let parsed = mail_parser::MessageParser::new()
            .parse(&self.data)
            .expect("a message");
        let gz = parsed
            .attachments()
            .find(|a| {
                a.content_type()
                    .is_some_and(|c| c.subtype() == Some(subtype))
            })
            .unwrap_or_else(|| panic!("no application/{subtype} report attached"))
            .contents()
            .to_vec();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text)
            .expect("a gzipped report");
        text
    }
}

/// How the sink behaves.
#[derive(Debug, Clone, Default)]
pub struct SinkOptions {
    /// Speak LMTP.
    pub lmtp: bool,
    /// Wait this long before answering the end of DATA.
    pub data_delay: Duration,
    /// Greet with this line instead of "220 sink.test ESMTP".
    pub greeting: Option<String>,
    /// Do not offer 8BITMIME.
    pub no_8bitmime: bool,
    /// Close the connection after receiving a message, without answering its end of data
    /// (the message may or may not have been taken, as far as the client can tell).
    pub drop_after_data: bool,
}

#[derive(Default)]
struct Counters {
    messages: Mutex<Vec<Received>>,
    connections: AtomicUsize,
    open: AtomicUsize,
    max_open: AtomicUsize,
    unanswered: AtomicUsize,
}

/// A running sink; stopped when dropped.
pub struct Sink {
    /// Its TCP address, if on TCP.
    pub addr: Option<std::net::SocketAddr>,
    /// Its Unix socket, if on one.
    pub socket: Option<PathBuf>,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sink {
    /// A sink on `bind` (e.g. `127.0.0.1:0`).
    pub async fn tcp(bind: &str, opts: SinkOptions) -> std::io::Result<Sink> {
        let listener = tokio::net::TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                // Replies are small writes: without this, delayed ACKs add ~40 ms each.
                let _ = s.set_nodelay(true);
                tokio::spawn(serve(s, c.clone(), opts.clone()));
            }
        });
        Ok(Sink {
            addr: Some(addr),
            socket: None,
            counters,
            task,
        })
    }

    /// A sink on the Unix socket `path`.
    pub async fn unix(path: PathBuf, opts: SinkOptions) -> std::io::Result<Sink> {
        let listener = tokio::net::UnixListener::bind(&path)?;
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(serve(s, c.clone(), opts.clone()));
            }
        });
        Ok(Sink {
            addr: None,
            socket: Some(path),
            counters,
            task,
        })
    }

    /// The messages received so far.
    pub fn messages(&self) -> Vec<Received> {
        self.counters.messages.lock().unwrap().clone()
    }

    /// Waits (bounded by `within`) until at least `n` messages arrived; returns them all.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let m = self.messages();
            if m.len() >= n || tokio::time::Instant::now() >= deadline {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// How many messages arrived so far (cheap: no copy).
    pub fn count(&self) -> usize {
        self.counters.messages.lock().unwrap().len()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.counters.connections.load(Ordering::SeqCst)
    }

    /// Messages stored whose end-of-DATA reply has not been sent yet.
    pub fn unanswered(&self) -> usize {
        self.counters.unanswered.load(Ordering::SeqCst)
    }

    /// The most connections open at the same time.
    pub fn max_open(&self) -> usize {
        self.counters.max_open.load(Ordering::SeqCst)
    }
}

/// Counts an open connection while alive.
struct Open(Arc<Counters>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(s: S, c: Arc<Counters>, opts: SinkOptions) {
    let number = c.connections.fetch_add(1, Ordering::SeqCst) + 1;
    let now_open = c.open.fetch_add(1, Ordering::SeqCst) + 1;
    c.max_open.fetch_max(now_open, Ordering::SeqCst);
    let _open = Open(c.clone());
    let _ = converse(s, &c, &opts, number).await;
}

async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    s: S,
    c: &Counters,
    opts: &SinkOptions,
    number: usize,
) -> std::io::Result<()> {
    let mut s = BufReader::new(s);
    let greeting = opts
        .greeting
        .clone()
        .unwrap_or_else(|| "220 sink.test ESMTP".to_string());
    s.write_all(format!("{greeting}\r\n").as_bytes()).await?;
    if !greeting.starts_with("220") {
        return Ok(());
    }
    let mut from = String::new();
    let mut rcpts: Vec<String> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if s.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_string();
        let upper = cmd.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") || upper.starts_with("LHLO") {
            if opts.no_8bitmime {
                "250-sink.test\r\n250-PIPELINING\r\n250 SIZE 50000000".into()
            } else {
                "250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 50000000".into()
            }
        } else if upper.starts_with("MAIL FROM:") {
            from = angle(&cmd);
            rcpts.clear();
            "250 2.1.0 ok".into()
        } else if upper.starts_with("RCPT TO:") {
            let r = angle(&cmd);
            if r.starts_with("defer") {
                "451 4.2.0 try later".into()
            } else if r.starts_with("reject") {
                "550 5.1.1 no such user".into()
            } else {
                rcpts.push(r);
                "250 2.1.5 ok".into()
            }
        } else if upper == "DATA" {
            if rcpts.is_empty() {
                "554 5.5.1 no valid recipients".into()
            } else {
                s.write_all(b"354 go ahead\r\n").await?;
                s.flush().await?;
                let data = read_data(&mut s).await?;
                let mut replies = Vec::new();
                let mut taken = Vec::new();
                for r in &rcpts {
                    if opts.lmtp && r.starts_with("lmtpdefer") {
                        replies.push(format!("452 4.2.2 <{r}> mailbox full"));
                    } else if opts.lmtp && r.starts_with("lmtpreject") {
                        replies.push(format!("550 5.1.1 <{r}> unknown mailbox"));
                    } else {
                        replies.push(format!("250 2.0.0 <{r}> stored"));
                        taken.push(r.clone());
                    }
                }
                if !taken.is_empty() {
                    c.messages.lock().unwrap().push(Received {
                        from: from.clone(),
                        rcpts: taken,
                        data,
                        connection: number,
                        at: std::time::Instant::now(),
                    });
                }
                rcpts.clear();
                if opts.drop_after_data {
                    return Ok(());
                }
                // Stored but not yet acknowledged: the window a crash of the client hits.
                c.unanswered.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(opts.data_delay).await;
                c.unanswered.fetch_sub(1, Ordering::SeqCst);
                if opts.lmtp {
                    replies.join("\r\n")
                } else {
                    "250 2.0.0 queued".into()
                }
            }
        } else if upper == "RSET" {
            rcpts.clear();
            "250 2.0.0 ok".into()
        } else if upper == "QUIT" {
            s.write_all(b"221 2.0.0 bye\r\n").await?;
            return Ok(());
        } else if upper == "NOOP" {
            "250 2.0.0 ok".into()
        } else {
            "502 5.5.2 not implemented".into()
        };
        s.write_all(format!("{reply}\r\n").as_bytes()).await?;
        s.flush().await?;
    }
}

fn angle(cmd: &str) -> String {
    let start = cmd.find('<').map(|i| i + 1).unwrap_or(0);
    let end = cmd[start..]
        .find('>')
        .map(|i| start + i)
        .unwrap_or(cmd.len());
    cmd[start..end].to_string()
}

async fn read_data<R: AsyncBufReadExt + Unpin>(s: &mut R) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if s.read_until(b'\n', &mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" {
            return Ok(data);
        }
        let l = if line.starts_with(b"..") {
            &line[1..]
        } else {
            &line[..]
        };
        data.extend_from_slice(l);
    }
}

/// A next hop that accepts TCP connections and never says a word: the destination that
/// must not stall the others. It counts the connections accepted and those still open (a
/// connection is closed when the client gives up on it).
pub struct BlackHole {
    /// Its address.
    pub addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl BlackHole {
    /// Listens on 127.0.0.1 (an ephemeral port).
    pub async fn start() -> std::io::Result<BlackHole> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (accepted, open) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (a, o) = (accepted.clone(), open.clone());
        let task = tokio::spawn(async move {
            let mut held = tokio::task::JoinSet::new();
            while let Ok((mut tcp, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                let o = o.clone();
                held.spawn(async move {
                    use tokio::io::AsyncReadExt;
                    let mut buf = [0u8; 512];
                    // Read (and ignore) until the client closes.
                    while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Ok(BlackHole {
            addr,
            accepted,
            open,
            task,
        })
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections still open.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.task.abort();
    }
}
