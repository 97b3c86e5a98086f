//! The DATA receiver: finds the end of a message and undoes dot-stuffing (RFC 5321 §4.5.2).
//!
//! Hand-written rather than `smtp-proto`'s `DataReceiver`, because the `data` fuzz target
//! found two disagreements with the RFC in that one: it starts as if in the middle of a line
//! (so a dot-stuffed first line kept its extra dot, and `DATA` followed at once by `.` did not
//! end an empty message), and it also ended a message at `CRLF . CR CR LF`. Only exactly
//! `CRLF . CRLF` may end a message: where two servers disagree about the end, one of them can
//! be fed a smuggled message.
//!
//! Line starts are CRLF only. A bare LF does not begin a line, so `LF . LF` is content (it is
//! stored as `CRLF . CRLF` after line-ending normalisation, and dot-stuffed again on the way
//! out).

/// Where in the line the receiver is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// After CRLF (or at the start of the message).
    LineStart,
    /// After a dot at the start of a line.
    Dot,
    /// After `.` CR at the start of a line: LF now ends the message.
    DotCr,
    /// Inside a line.
    InLine,
    /// After a CR inside a line.
    Cr,
}

/// Receives the bytes after `354`, keeping the message as sent minus dot-stuffing. The
/// message keeps the CRLF before the terminating dot.
#[derive(Debug, Clone)]
pub struct DataReceiver {
    position: Position,
}

impl Default for DataReceiver {
    fn default() -> Self {
        DataReceiver::new()
    }
}

impl DataReceiver {
    /// A receiver at the start of the first line (the CRLF of the DATA command begins it).
    pub fn new() -> DataReceiver {
        DataReceiver {
            position: Position::LineStart,
        }
    }

    /// Appends the message bytes of `input` to `out`. Returns how many bytes were consumed
    /// and whether the end of data was reached (bytes after it are left unconsumed: they
    /// are the next pipelined command).
    pub fn ingest(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        use Position::*;
        let mut i = 0;
        while i < input.len() {
            if self.position == InLine {
                // The common case: copy up to and including the next CR in one go.
                match input[i..].iter().position(|&b| b == b'\r') {
                    Some(n) => {
                        out.extend_from_slice(&input[i..=i + n]);
                        i += n + 1;
                        self.position = Cr;
                    }
                    None => {
                        out.extend_from_slice(&input[i..]);
                        i = input.len();
                    }
                }
                continue;
            }
            let b = input[i];
            i += 1;
            self.position = match (self.position, b) {
                (LineStart, b'.') => Dot,
                (Dot, b'\r') => DotCr,
                (DotCr, b'\n') => {
                    self.position = LineStart;
                    return (i, true);
                }
                (DotCr, _) => {
                    // `.` CR then something else: the dot was stuffing, the CR is content.
                    out.push(b'\r');
                    out.push(b);
                    after(b)
                }
                (Cr, b'\n') => {
                    out.push(b);
                    LineStart
                }
                (LineStart | Dot | Cr, _) => {
                    out.push(b);
                    after(b)
                }
                (InLine, _) => unreachable!("handled above"),
            };
        }
        (i, false)
    }
}

/// The position after content byte `b` that is not the LF of a CRLF.
fn after(b: u8) -> Position {
    if b == b'\r' {
        Position::Cr
    } else {
        Position::InLine
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in reads of `step` bytes; returns (message, bytes left after the end).
    fn receive(input: &[u8], step: usize) -> (Option<Vec<u8>>, Vec<u8>) {
        let mut r = DataReceiver::new();
        let mut out = Vec::new();
        for (k, chunk) in input.chunks(step).enumerate() {
            let (used, done) = r.ingest(chunk, &mut out);
            if done {
                return (Some(out), input[k * step + used..].to_vec());
            }
            assert_eq!(used, chunk.len());
        }
        (None, Vec::new())
    }

    #[test]
    fn ends_only_at_crlf_dot_crlf_in_every_split() {
        // (input, message, what is left after the end)
        type Case<'a> = (&'a [u8], Option<&'a [u8]>, &'a [u8]);
        let cases: &[Case] = &[
            (b"a\r\n.\r\nQUIT\r\n", Some(b"a\r\n"), b"QUIT\r\n"),
            (b".\r\n", Some(b""), b""),
            (b"..x\r\n..\r\n.\r\n", Some(b".x\r\n.\r\n"), b""),
            (b"a\r\n.\r\r\nb\r\n.\r\n", Some(b"a\r\n\r\r\nb\r\n"), b""),
            (b"a\n.\nb\r\n.\r\n", Some(b"a\n.\nb\r\n"), b""),
            (b"a\r\n.x\r\n", None, b""),
            (b"a\r\n.\rx\r\n.\r\n", Some(b"a\r\n\rx\r\n"), b""),
        ];
        for (input, message, rest) in cases {
            for step in 1..=input.len() {
                let (m, r) = receive(input, step);
                assert_eq!(m.as_deref(), *message, "{input:?} in reads of {step}");
                if m.is_some() {
                    assert_eq!(r, *rest, "{input:?} in reads of {step}");
                }
            }
        }
    }
}
