//! Constructors and builders for verdicts, so a hook reads like the decision it makes.

use crate::bindings::sluice::filter::types::{Header, MessageVerdict, Reply, Symbol, Verdict};

impl Reply {
    /// A reply with the given code, enhanced status code (may be empty) and text.
    pub fn new(code: u16, enhanced: &str, text: &str) -> Self {
        Reply {
            code,
            enhanced: enhanced.to_string(),
            text: text.to_string(),
        }
    }
}

impl Verdict {
    /// Refuse permanently: `Verdict::reject(550, "5.7.1", "not welcome")`.
    /// The code should be 5xx; Sluice treats any other class as the plugin failing.
    pub fn reject(code: u16, enhanced: &str, text: &str) -> Self {
        Verdict::Reject(Reply::new(code, enhanced, text))
    }

    /// Refuse temporarily: `Verdict::tempfail(451, "4.7.1", "try again later")`.
    /// The code should be 4xx; Sluice treats any other class as the plugin failing.
    pub fn tempfail(code: u16, enhanced: &str, text: &str) -> Self {
        Verdict::Tempfail(Reply::new(code, enhanced, text))
    }

    /// Keep the message in quarantine, undelivered, with a reason for the operator.
    pub fn quarantine(reason: &str) -> Self {
        Verdict::Quarantine(reason.to_string())
    }

    /// True for verdicts that end the stage (everything but [`Verdict::Continue`]).
    pub fn is_final(&self) -> bool {
        !matches!(self, Verdict::Continue)
    }
}

impl Default for MessageVerdict {
    /// No opinion and no changes.
    fn default() -> Self {
        MessageVerdict {
            verdict: Verdict::Continue,
            add_headers: Vec::new(),
            remove_headers: Vec::new(),
            symbols: Vec::new(),
        }
    }
}

impl From<Verdict> for MessageVerdict {
    fn from(verdict: Verdict) -> Self {
        MessageVerdict {
            verdict,
            ..MessageVerdict::default()
        }
    }
}

impl MessageVerdict {
    /// Sets the verdict.
    pub fn with_verdict(mut self, verdict: Verdict) -> Self {
        self.verdict = verdict;
        self
    }

    /// Adds a header field to the message.
    pub fn add_header(mut self, name: &str, value: &str) -> Self {
        self.add_headers.push(Header {
            name: name.to_string(),
            value: value.to_string(),
        });
        self
    }

    /// Removes every header field of this name (case-insensitive).
    pub fn remove_header(mut self, name: &str) -> Self {
        self.remove_headers.push(name.to_string());
        self
    }

    /// Adds a spam-score symbol.
    pub fn symbol(mut self, name: &str, score: f64, detail: &str) -> Self {
        self.symbols.push(Symbol {
            name: name.to_string(),
            score,
            detail: detail.to_string(),
        });
        self
    }

    /// The sum of this verdict's symbol scores.
    pub fn score(&self) -> f64 {
        self.symbols.iter().map(|s| s.score).sum()
    }
}
