//! AUTH (RFC 4954): PLAIN and LOGIN exchanges, over-long responses refused, the outcome
//! reported by the driver; and the decoding of SASL PLAIN (RFC 4616) and LOGIN responses. Hand-written on top of `base64`:
//! the formats are a few lines each and the crates that implement SASL bring whole server
//! frameworks with them.

use base64::Engine as _;

use super::{MAX_SASL_LINE, Session, State, Step};
use crate::smtp::reply::Reply;

/// A SASL response that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthDecodeError {
    /// Not base64.
    #[error("Invalid base64 in authentication response")]
    Base64,
    /// Not UTF-8.
    #[error("Authentication response is not UTF-8")]
    Utf8,
    /// PLAIN without the two NUL separators, or with an empty user.
    #[error("Malformed PLAIN response: expected authzid NUL user NUL password")]
    Plain,
}

/// Decodes a base64 text response (LOGIN user name or password).
pub fn decode_text(response: &str) -> Result<String, AuthDecodeError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(response.trim())
        .map_err(|_| AuthDecodeError::Base64)?;
    String::from_utf8(bytes).map_err(|_| AuthDecodeError::Utf8)
}

/// Decodes a PLAIN response into (user, password). An authorization identity, if given,
/// must equal the user (Sluice does not support acting as someone else).
pub fn decode_plain(response: &str) -> Result<(String, String), AuthDecodeError> {
    let text = if response.trim() == "=" {
        String::new()
    } else {
        decode_text(response)?
    };
    let mut parts = text.split('\0');
    let (Some(authz), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthDecodeError::Plain);
    };
    if user.is_empty() || (!authz.is_empty() && authz != user) {
        return Err(AuthDecodeError::Plain);
    }
    Ok((user.to_string(), password.to_string()))
}

/// A SASL response line, as far as it has arrived.
pub(super) enum Line {
    /// Not all there yet.
    Partial,
    /// Longer than [`MAX_SASL_LINE`].
    TooLong,
    /// The line, trimmed.
    Complete(String),
}

/// How an AUTH attempt ended, as the driver reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The credentials are right.
    Accepted,
    /// The credentials are wrong.
    Refused,
    /// Too many recent failures from this client or for this user: not checked (454).
    Throttled,
}

impl Session {
    pub(super) fn auth(&mut self, mechanism: u64, initial: String) -> Option<Step> {
        if self.out_of_sequence(&[
            (!self.esmtp, 503, "Send EHLO first"),
            (self.auth_user.is_some(), 503, "Already authenticated"),
            (
                self.txn.is_some(),
                503,
                "AUTH not allowed during a transaction",
            ),
        ]) {
            return None;
        }
        if !self.auth_offered() {
            self.refuse(
                "starttls-required",
                Reply::new(
                    538,
                    "5.7.11",
                    "Encryption required for requested authentication mechanism",
                ),
            );
            return None;
        }
        match mechanism {
            smtp_proto::AUTH_PLAIN if initial.is_empty() => {
                self.out.extend_from_slice(b"334 \r\n");
                self.state = State::AuthPlain;
                None
            }
            smtp_proto::AUTH_PLAIN => self.auth_plain(&initial),
            smtp_proto::AUTH_LOGIN if initial.is_empty() => {
                self.out.extend_from_slice(b"334 VXNlcm5hbWU6\r\n");
                self.state = State::AuthLogin(None);
                None
            }
            smtp_proto::AUTH_LOGIN => self.auth_login(None, &initial),
            _ => {
                self.error(Reply::new(504, "5.5.4", "Unrecognized authentication type"));
                None
            }
        }
    }

    pub(super) fn auth_plain(&mut self, response: &str) -> Option<Step> {
        if response == "*" {
            self.error(Reply::new(501, "5.0.0", "Authentication cancelled"));
            return None;
        }
        match decode_plain(response) {
            Ok((user, password)) => Some(Step::Auth { user, password }),
            Err(e) => {
                self.error(Reply::new(501, "5.5.2", &e.to_string()));
                None
            }
        }
    }

    pub(super) fn auth_login(&mut self, user: Option<String>, response: &str) -> Option<Step> {
        if response == "*" {
            self.error(Reply::new(501, "5.0.0", "Authentication cancelled"));
            return None;
        }
        let decoded = match decode_text(response) {
            Ok(t) => t,
            Err(e) => {
                self.error(Reply::new(501, "5.5.2", &e.to_string()));
                return None;
            }
        };
        match user {
            None if decoded.is_empty() => {
                self.error(Reply::new(501, "5.5.2", "Empty user name"));
                None
            }
            None => {
                self.out.extend_from_slice(b"334 UGFzc3dvcmQ6\r\n");
                self.state = State::AuthLogin(Some(decoded));
                None
            }
            Some(user) => Some(Step::Auth {
                user,
                password: decoded,
            }),
        }
    }

    /// One line of input (for AUTH continuations), without its line ending. A line longer
    /// than [`MAX_SASL_LINE`] is refused as soon as that many bytes are there without an LF:
    /// the input buffer never holds more than one limit's worth of an unfinished line.
    pub(super) fn take_line(&mut self) -> Line {
        let rest = &self.input[self.pos..];
        let Some(end) = rest.iter().take(MAX_SASL_LINE).position(|&b| b == b'\n') else {
            if rest.len() < MAX_SASL_LINE {
                return Line::Partial;
            }
            return Line::TooLong;
        };
        let line = &rest[..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = String::from_utf8_lossy(line).trim().to_string();
        self.pos += end + 1;
        self.completed += 1;
        Line::Complete(text)
    }

    /// An over-long SASL response: the exchange is cancelled and the rest of the line dropped.
    pub(super) fn sasl_too_long(&mut self) -> Option<Step> {
        self.completed += 1;
        self.pos = self.input.len();
        self.state = State::SkipLine;
        self.error(Reply::new(
            500,
            "5.5.6",
            "Authentication exchange line is too long",
        ));
        None
    }

    /// Reports the outcome of an AUTH attempt.
    pub fn auth_decided(&mut self, user: String, outcome: AuthOutcome) {
        self.state = State::Command;
        match outcome {
            AuthOutcome::Accepted => {
                self.auth_user = Some(user);
                self.reply(&Reply::new(235, "2.7.0", "Authentication successful"));
                return;
            }
            AuthOutcome::Throttled => {
                // RFC 4954 §6: a temporary failure; the credentials were not even checked.
                self.refuse(
                    "auth-throttled",
                    Reply::new(
                        454,
                        "4.7.0",
                        "Temporary authentication failure: too many failed attempts, try again later",
                    ),
                );
                return;
            }
            AuthOutcome::Refused => {}
        }
        self.auth_failures += 1;
        if self.auth_failures >= self.cfg.max_auth_failures {
            let close = Reply::new(421, "4.7.0", "Too many authentication failures, closing");
            self.give_up("auth-failed", &close);
            return;
        }
        self.refuse(
            "auth-failed",
            Reply::new(535, "5.7.8", "Authentication credentials invalid"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn plain() {
        assert_eq!(
            decode_plain(&b64("\0alice\0s3cret")),
            Ok(("alice".into(), "s3cret".into()))
        );
        assert_eq!(
            decode_plain(&b64("alice\0alice\0pw")),
            Ok(("alice".into(), "pw".into()))
        );
        assert_eq!(
            decode_plain(&b64("bob\0alice\0pw")),
            Err(AuthDecodeError::Plain)
        );
        assert_eq!(decode_plain(&b64("alice\0pw")), Err(AuthDecodeError::Plain));
        assert_eq!(decode_plain(&b64("\0\0pw")), Err(AuthDecodeError::Plain));
        assert_eq!(decode_plain("!!!"), Err(AuthDecodeError::Base64));
        assert_eq!(decode_plain("="), Err(AuthDecodeError::Plain));
    }

    #[test]
    fn text() {
        assert_eq!(decode_text(&b64("alice")), Ok("alice".into()));
        assert_eq!(decode_text("/w=="), Err(AuthDecodeError::Utf8));
    }
}
