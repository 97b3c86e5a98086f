//! A milter client as an MTA speaks it (Sendmail's protocol, version 6), over a real socket:
//! for tests that need packets Postfix would not send (a connect of family `U`, huge macro
//! packets, odd splits).

use std::io::{Read, Write};
use std::time::Duration;

/// One packet: its command letter and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The command or response letter.
    pub cmd: u8,
    /// What follows it.
    pub data: Vec<u8>,
}

impl Packet {
    /// A header the filter adds or inserts (`h`, `i`): its name and value.
    pub fn added_header(&self) -> Option<(String, String)> {
        let data = match self.cmd {
            b'h' => &self.data[..],
            b'i' => self.data.get(4..)?,
            _ => return None,
        };
        let mut parts = data.split(|&b| b == 0);
        let name = String::from_utf8_lossy(parts.next()?).into_owned();
        let value = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        Some((name, value))
    }
}

/// A packet's bytes on the wire.
pub fn encode(cmd: u8, data: &[u8]) -> Vec<u8> {
    let mut p = ((data.len() + 1) as u32).to_be_bytes().to_vec();
    p.push(cmd);
    p.extend_from_slice(data);
    p
}

/// A connection to a milter.
pub struct MilterClient {
    stream: std::net::TcpStream,
}

impl MilterClient {
    /// Connects and negotiates version 6 with every action allowed and no step skipped, so
    /// the filter answers every command.
    pub fn connect(addr: std::net::SocketAddr) -> std::io::Result<MilterClient> {
        let stream = std::net::TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut c = MilterClient { stream };
        let mut o = 6u32.to_be_bytes().to_vec();
        o.extend(0x1ffu32.to_be_bytes());
        o.extend(0u32.to_be_bytes());
        c.send(b'O', &o)?;
        let reply = c.read()?;
        assert_eq!(reply.cmd, b'O', "negotiation answered {reply:?}");
        Ok(c)
    }

    /// Sends one packet.
    pub fn send(&mut self, cmd: u8, data: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(&encode(cmd, data))
    }

    /// Sends raw bytes (packets split or joined as the test likes).
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one packet.
    pub fn read(&mut self) -> std::io::Result<Packet> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body)?;
        Ok(Packet {
            cmd: body[0],
            data: body[1..].to_vec(),
        })
    }

    /// Sends a command and reads the filter's answer to it.
    pub fn ask(&mut self, cmd: u8, data: &[u8]) -> std::io::Result<Packet> {
        self.send(cmd, data)?;
        self.read()
    }

    /// Sends a whole message after MAIL and RCPT (headers, end of headers, body, end of
    /// message) and returns every packet of the answer to the end of message: modifications
    /// first, the verdict last.
    pub fn message(
        &mut self,
        headers: &[(&str, &str)],
        body: &str,
    ) -> std::io::Result<Vec<Packet>> {
        for (name, value) in headers {
            let mut d = name.as_bytes().to_vec();
            d.push(0);
            d.extend_from_slice(format!(" {value}").as_bytes());
            d.push(0);
            self.ask(b'L', &d)?;
        }
        self.ask(b'N', b"")?;
        self.ask(b'B', body.as_bytes())?;
        self.send(b'E', b"")?;
        let mut answer = Vec::new();
        loop {
            let p = self.read()?;
            let last = matches!(p.cmd, b'a' | b'c' | b'r' | b't' | b'd' | b'y' | b'q');
            answer.push(p);
            if last {
                return Ok(answer);
            }
        }
    }
}

/// A connect packet's data: host name, family and, for `4`/`6`, port and address.
pub fn connect_data(hostname: &str, family: u8, port: u16, address: &str) -> Vec<u8> {
    let mut d = hostname.as_bytes().to_vec();
    d.push(0);
    d.push(family);
    if family == b'4' || family == b'6' {
        d.extend(port.to_be_bytes());
        d.extend_from_slice(address.as_bytes());
        d.push(0);
    }
    d
}

/// A NUL-terminated string argument.
pub fn arg(s: &str) -> Vec<u8> {
    let mut d = s.as_bytes().to_vec();
    d.push(0);
    d
}
