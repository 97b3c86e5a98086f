//! An SMTP reply as data: code, enhanced status code and text.

use std::fmt;

/// An SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reply {
    /// Three-digit code.
    pub code: u16,
    /// RFC 3463 enhanced status code, e.g. `5.7.1`.
    pub enhanced: String,
    /// Human-readable text (one line).
    pub text: String,
}

impl Reply {
    /// A reply.
    pub fn new(code: u16, enhanced: &str, text: &str) -> Reply {
        Reply {
            code,
            enhanced: enhanced.to_string(),
            text: text.to_string(),
        }
    }

    /// The reply to send when a plugin failed under the `tempfail` policy.
    pub fn plugin_tempfail() -> Reply {
        Reply::new(
            451,
            "4.3.0",
            "Local error in processing, please try again later",
        )
    }

    /// The reply to send when a plugin failed under the `reject` policy.
    pub fn plugin_reject() -> Reply {
        Reply::new(550, "5.7.0", "Message refused by local policy")
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.enhanced.is_empty() {
            write!(f, "{} {}", self.code, self.text)
        } else {
            write!(f, "{} {} {}", self.code, self.enhanced, self.text)
        }
    }
}
