//! The milter protocol (Sendmail's, version 6, as Postfix speaks it) as data: a decoder from
//! bytes to [`Command`]s and an encoder of [`Response`]s. Sans-IO, bounded, fuzzed.
//!
//! Written here rather than taken from a crate: the one complete pure-Rust implementation,
//! `indymilter`, is GPL-3.0 (not compatible with Sluice's Apache-2.0), and the MIT-licensed
//! `miltr-server` owns the socket and the conversation through its own async trait and codec.
//! Sluice needs the decoder as a pure function it can bound (packet size), fuzz and drive
//! from its own connection code with its own deadlines, like the SMTP session. The protocol is
//! small: a 4-byte length, a command byte, NUL-terminated strings.

/// The protocol version spoken (Postfix 2.6 and later, Sendmail 8.14 and later).
pub const VERSION: u32 = 6;

/// Largest packet accepted: a body chunk is at most 64 KiB (Postfix's and libmilter's
/// MILTER_CHUNK_SIZE), macros and headers far less.
pub const MAX_PACKET: usize = 1 << 20;

/// Actions (SMFIF_*) the filter may take.
pub mod action {
    /// Add header fields.
    pub const ADD_HEADERS: u32 = 0x01;
    /// Remove recipients.
    pub const DELETE_RECIPIENTS: u32 = 0x08;
    /// Change or delete header fields.
    pub const CHANGE_HEADERS: u32 = 0x10;
    /// Quarantine the message.
    pub const QUARANTINE: u32 = 0x20;
    /// Choose the macros the MTA sends at each stage.
    pub const SET_MACRO_LIST: u32 = 0x100;
}

/// The stages of [`Response::Negotiate`]'s macro lists (SMFIM_*).
pub mod stage {
    /// The connection.
    pub const CONNECT: u32 = 0;
    /// HELO.
    pub const HELO: u32 = 1;
    /// MAIL FROM.
    pub const MAIL: u32 = 2;
    // RCPT TO (3), DATA (4), end of message (5) and end of headers (6): Sluice asks for
    // no macros there.
}

/// Protocol steps (SMFIP_*): what the MTA may leave out or not wait for.
pub mod step {
    /// Do not send the DATA command.
    pub const NO_DATA: u32 = 0x200;
    /// Do not send unknown commands.
    pub const NO_UNKNOWN: u32 = 0x100;
    /// No reply to each header.
    pub const NO_REPLY_HEADER: u32 = 0x80;
    /// No reply to the connection information.
    pub const NO_REPLY_CONNECT: u32 = 0x1000;
    /// No reply to HELO.
    pub const NO_REPLY_HELO: u32 = 0x2000;
    /// No reply to the end of headers.
    pub const NO_REPLY_EOH: u32 = 0x40000;
    /// No reply to each body chunk.
    pub const NO_REPLY_BODY: u32 = 0x80000;
    /// Header values are sent with their leading space.
    pub const HEADER_LEADING_SPACE: u32 = 0x100000;
}

/// A command from the MTA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `O`: option negotiation.
    Negotiate {
        /// The MTA's protocol version.
        version: u32,
        /// Actions the MTA allows.
        actions: u32,
        /// Steps the MTA can skip.
        steps: u32,
    },
    /// `D`: macros for the command `for` that follows.
    Macros {
        /// The command letter they belong to.
        for_command: u8,
        /// The packet's NUL-separated name and value pairs, undecoded: [`macro_pairs`] reads
        /// them without allocating, so the filter allocates only for the macros it keeps
        /// (a 1 MiB packet of small macros would otherwise be half a million strings).
        raw: Vec<u8>,
    },
    /// `C`: the SMTP client's connection.
    Connect {
        /// Its host name (or `[address]`).
        hostname: String,
        /// Its address and port, when TCP.
        address: Option<std::net::SocketAddr>,
    },
    /// `H`: HELO/EHLO.
    Helo(String),
    /// `M`: MAIL FROM, the address (in angle brackets) and ESMTP parameters.
    Mail(Vec<String>),
    /// `R`: RCPT TO.
    Rcpt(Vec<String>),
    /// `T`: DATA.
    Data,
    /// `L`: one header field.
    Header {
        /// Field name.
        name: String,
        /// Field value.
        value: Vec<u8>,
    },
    /// `N`: end of headers.
    EndOfHeaders,
    /// `B`: a body chunk.
    Body(Vec<u8>),
    /// `E`: end of the message: the filter answers with its modifications and verdict.
    EndOfMessage,
    /// `A`: the message is abandoned; the connection stays.
    Abort,
    /// `Q`: close the connection.
    Quit,
    /// `K`: the SMTP connection ended; a new one follows on this milter connection.
    QuitNewConnection,
    /// `U`: a command the MTA did not know.
    Unknown,
}

/// Why the MTA's bytes are not the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A packet declares a length of 0 or above [`MAX_PACKET`].
    #[error("packet length {0} is out of range (1 to {MAX_PACKET})")]
    Length(usize),
    /// A command letter that is not part of the protocol.
    #[error("unknown command {0:?}")]
    UnknownCommand(char),
    /// A command whose data does not have the expected shape.
    #[error("malformed {0} command")]
    Malformed(&'static str),
}

/// The most NUL-terminated strings read from one packet: MAIL and RCPT carry an address and
/// a few ESMTP parameters, so a packet of a million empty strings allocates no more than this.
const MAX_STRINGS: usize = 64;

/// Splits `data` into NUL-terminated strings (a missing final NUL is tolerated), at most
/// [`MAX_STRINGS`].
fn strings(data: &[u8]) -> Vec<String> {
    let data = data.strip_suffix(b"\0").unwrap_or(data);
    if data.is_empty() {
        return Vec::new();
    }
    data.split(|&b| b == 0)
        .take(MAX_STRINGS)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// The name and value pairs of a macro packet's data ([`Command::Macros`]), borrowed; a
/// name without a value gets an empty one.
pub fn macro_pairs(raw: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let raw = raw.strip_suffix(b"\0").unwrap_or(raw);
    let mut fields = raw.split(|&b| b == 0).filter(|_| !raw.is_empty());
    std::iter::from_fn(move || {
        let name = fields.next()?;
        Some((name, fields.next().unwrap_or_default()))
    })
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Decodes one packet's command byte and data.
fn decode(cmd: u8, data: &[u8]) -> Result<Command, ProtocolError> {
    Ok(match cmd {
        b'O' => Command::Negotiate {
            version: u32_at(data, 0).ok_or(ProtocolError::Malformed("negotiate"))?,
            actions: u32_at(data, 4).ok_or(ProtocolError::Malformed("negotiate"))?,
            steps: u32_at(data, 8).ok_or(ProtocolError::Malformed("negotiate"))?,
        },
        b'D' => {
            let (&for_command, rest) = data
                .split_first()
                .ok_or(ProtocolError::Malformed("macro"))?;
            Command::Macros {
                for_command,
                raw: rest.to_vec(),
            }
        }
        b'C' => {
            let nul = data
                .iter()
                .position(|&b| b == 0)
                .ok_or(ProtocolError::Malformed("connect"))?;
            let hostname = String::from_utf8_lossy(&data[..nul]).into_owned();
            let rest = &data[nul + 1..];
            let address = match rest.first() {
                Some(b'4' | b'6') if rest.len() >= 3 => {
                    let port = u16::from_be_bytes([rest[1], rest[2]]);
                    let text = strings(&rest[3..]).into_iter().next().unwrap_or_default();
                    let text = text.strip_prefix("IPv6:").unwrap_or(&text);
                    text.parse::<std::net::IpAddr>()
                        .ok()
                        .map(|ip| std::net::SocketAddr::new(ip, port))
                }
                _ => None,
            };
            Command::Connect { hostname, address }
        }
        b'H' => Command::Helo(strings(data).into_iter().next().unwrap_or_default()),
        b'M' => Command::Mail(strings(data)),
        b'R' => Command::Rcpt(strings(data)),
        b'T' => Command::Data,
        b'L' => {
            let nul = data
                .iter()
                .position(|&b| b == 0)
                .ok_or(ProtocolError::Malformed("header"))?;
            let value = &data[nul + 1..];
            Command::Header {
                name: String::from_utf8_lossy(&data[..nul]).into_owned(),
                value: value.strip_suffix(b"\0").unwrap_or(value).to_vec(),
            }
        }
        b'N' => Command::EndOfHeaders,
        b'B' => Command::Body(data.to_vec()),
        b'E' => Command::EndOfMessage,
        b'A' => Command::Abort,
        b'Q' => Command::Quit,
        b'K' => Command::QuitNewConnection,
        b'U' => Command::Unknown,
        other => return Err(ProtocolError::UnknownCommand(char::from(other))),
    })
}

/// Accumulates the MTA's bytes and yields whole commands.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Where the next packet starts in `buf`: packets are taken by moving this, not by
    /// shifting the rest of the buffer, so a read holding many packets is decoded in linear
    /// time (draining each from the front was quadratic in the packets per read).
    start: usize,
}

impl Decoder {
    /// Appends bytes read from the MTA.
    pub fn receive(&mut self, bytes: &[u8]) {
        // What was decoded goes before the buffer grows: each byte moves at most once per
        // time the buffer doubles, so the cost stays linear in the bytes received.
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole command, `Ok(None)` when more bytes are needed. A length out of range
    /// is refused as soon as the length is there, before its data is buffered.
    pub fn next_command(&mut self) -> Result<Option<Command>, ProtocolError> {
        let Some(len) = u32_at(&self.buf, self.start) else {
            return Ok(None);
        };
        let len = len as usize;
        if len == 0 || len > MAX_PACKET {
            return Err(ProtocolError::Length(len));
        }
        let at = self.start + 4;
        if self.buf.len() < at + len {
            return Ok(None);
        }
        self.start = at + len;
        let command = decode(self.buf[at], &self.buf[at + 1..at + len]);
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        command.map(Some)
    }
}

/// A response to the MTA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `O`: the negotiated version, actions and steps, and (with
    /// [`action::SET_MACRO_LIST`]) the macros wanted at each stage.
    Negotiate {
        /// Version.
        version: u32,
        /// Actions the filter takes.
        actions: u32,
        /// Steps the MTA skips or does not wait for.
        steps: u32,
        /// (stage, space-separated macro names) — only the macros the filter reads.
        macros: Vec<(u32, String)>,
    },
    /// `c`: go on.
    Continue,
    /// `d`: accept and discard the message.
    Discard,
    /// `y`: refuse with this SMTP reply (`550 5.7.1 text`).
    ReplyCode(String),
    /// `t`: refuse temporarily (the MTA's own reply).
    Tempfail,
    /// `h`: add a header field at the end.
    AddHeader {
        /// Name.
        name: String,
        /// Value.
        value: String,
    },
    /// `i`: insert a header field at `index` (0: first).
    InsertHeader {
        /// Position.
        index: u32,
        /// Name.
        name: String,
        /// Value.
        value: String,
    },
    /// `m`: change the `index`-th (from 1) field named `name`; an empty value deletes it.
    ChangeHeader {
        /// Occurrence, from 1.
        index: u32,
        /// Name.
        name: String,
        /// New value; empty deletes.
        value: String,
    },
    /// `-`: remove a recipient.
    DeleteRecipient(String),
    /// `q`: quarantine with this reason.
    Quarantine(String),
}

impl Response {
    /// The packet: length, letter, data.
    pub fn encode(&self) -> Vec<u8> {
        let mut data = Vec::new();
        let letter = match self {
            Response::Negotiate {
                version,
                actions,
                steps,
                macros,
            } => {
                for n in [version, actions, steps] {
                    data.extend_from_slice(&n.to_be_bytes());
                }
                for (stage, names) in macros {
                    data.extend_from_slice(&stage.to_be_bytes());
                    push_str(&mut data, names);
                }
                b'O'
            }
            Response::Continue => b'c',
            Response::Discard => b'd',
            Response::Tempfail => b't',
            Response::ReplyCode(text) => {
                push_str(&mut data, text);
                b'y'
            }
            Response::AddHeader { name, value } => {
                push_str(&mut data, name);
                push_str(&mut data, value);
                b'h'
            }
            Response::InsertHeader { index, name, value } => {
                data.extend_from_slice(&index.to_be_bytes());
                push_str(&mut data, name);
                push_str(&mut data, value);
                b'i'
            }
            Response::ChangeHeader { index, name, value } => {
                data.extend_from_slice(&index.to_be_bytes());
                push_str(&mut data, name);
                push_str(&mut data, value);
                b'm'
            }
            Response::DeleteRecipient(r) => {
                push_str(&mut data, r);
                b'-'
            }
            Response::Quarantine(reason) => {
                push_str(&mut data, reason);
                b'q'
            }
        };
        let len = u32::try_from(data.len() + 1).unwrap_or(u32::MAX);
        let mut out = Vec::with_capacity(data.len() + 5);
        out.extend_from_slice(&len.to_be_bytes());
        out.push(letter);
        out.extend_from_slice(&data);
        out
    }
}

/// A NUL-terminated string, with any NUL inside it dropped (it would end the string early).
fn push_str(out: &mut Vec<u8>, s: &str) {
    out.extend(s.bytes().filter(|&b| b != 0));
    out.push(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(cmd: u8, data: &[u8]) -> Vec<u8> {
        let mut p = ((data.len() + 1) as u32).to_be_bytes().to_vec();
        p.push(cmd);
        p.extend_from_slice(data);
        p
    }

    #[test]
    fn a_conversation_decodes_whatever_the_split() {
        let mut bytes = packet(b'O', &[0, 0, 0, 6, 0, 0, 1, 0xff, 0, 0x1f, 0xff, 0xff]);
        bytes.extend(packet(b'D', b"Cj\0mx.test\0{daemon_name}\0smtpd\0"));
        bytes.extend(packet(b'C', b"client.example\x004\x30\x39192.0.2.7\0"));
        bytes.extend(packet(b'M', b"<a@example.org>\0SIZE=42\0"));
        bytes.extend(packet(b'L', b"Subject\0 hi\0"));
        bytes.extend(packet(b'B', b"body\r\n"));
        bytes.extend(packet(b'E', b""));
        let expected = vec![
            Command::Negotiate {
                version: 6,
                actions: 0x1ff,
                steps: 0x1fffff,
            },
            Command::Macros {
                for_command: b'C',
                raw: b"j\0mx.test\0{daemon_name}\0smtpd\0".to_vec(),
            },
            Command::Connect {
                hostname: "client.example".into(),
                address: Some("192.0.2.7:12345".parse().unwrap()),
            },
            Command::Mail(vec!["<a@example.org>".into(), "SIZE=42".into()]),
            Command::Header {
                name: "Subject".into(),
                value: b" hi".to_vec(),
            },
            Command::Body(b"body\r\n".to_vec()),
            Command::EndOfMessage,
        ];
        for step in [1, 3, 7, bytes.len()] {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for chunk in bytes.chunks(step) {
                d.receive(chunk);
                while let Some(c) = d.next_command().unwrap() {
                    got.push(c);
                }
            }
            assert_eq!(got, expected, "split every {step} bytes");
        }
    }

    #[test]
    fn oversized_and_unknown_packets_are_refused_before_buffering() {
        let mut d = Decoder::default();
        d.receive(&(MAX_PACKET as u32 + 1).to_be_bytes());
        assert_eq!(d.next_command(), Err(ProtocolError::Length(MAX_PACKET + 1)));
        let mut d = Decoder::default();
        d.receive(&packet(b'Z', b""));
        assert_eq!(d.next_command(), Err(ProtocolError::UnknownCommand('Z')));
        let mut d = Decoder::default();
        d.receive(&packet(b'O', b"\0\0"));
        assert_eq!(d.next_command(), Err(ProtocolError::Malformed("negotiate")));
    }

    #[test]
    fn responses_encode_as_libmilter_does() {
        assert_eq!(Response::Continue.encode(), [0, 0, 0, 1, b'c']);
        assert_eq!(
            Response::ReplyCode("550 5.7.1 no".into()).encode(),
            [&[0u8, 0, 0, 14, b'y'][..], b"550 5.7.1 no\0"].concat()
        );
        assert_eq!(
            Response::InsertHeader {
                index: 0,
                name: "X-A".into(),
                value: "1\u{0}2".into(),
            }
            .encode(),
            [&[0u8, 0, 0, 12, b'i', 0, 0, 0, 0][..], b"X-A\x0012\0"].concat()
        );
    }
}
