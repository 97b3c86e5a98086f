//! The end of `check-message`: the plugins' symbols summed into the message's spam score, the
//! configured thresholds applied (reject, quarantine, spam headers) and the header edits
//! gathered, in plugin order.

use crate::config::ScoringConfig;
use crate::envelope::{Decision, Recipient};
use crate::plugin::bindings::types::{MessageVerdict, Session};
use crate::smtp::reply::Reply;

/// A named score contribution, with the plugin that gave it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScoredSymbol {
    /// The plugin.
    pub plugin: String,
    /// Symbol name.
    pub name: String,
    /// Contribution.
    pub score: f64,
    /// Explanation.
    pub detail: String,
}

/// The outcome of `check-message` for a whole message.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MessageOutcome {
    /// The final decision (including a score-threshold rejection).
    pub decision: Decision,
    /// Sum of every symbol's score.
    pub score: f64,
    /// True when the score reached `scoring.spam_threshold`.
    pub spam: bool,
    /// Every symbol, in plugin order.
    pub symbols: Vec<ScoredSymbol>,
    /// Header fields to add, in order (plugins' and the host's spam headers).
    pub add_headers: Vec<(String, String)>,
    /// Header field names to remove.
    pub remove_headers: Vec<String>,
}

/// The outcome of `check-message`: `decision` is the stage's (what the plugins decided), and
/// `verdicts` the answers of the plugins called, with their names, in order. A score at or
/// above the thresholds in force for the listener and recipients turns a `continue` into a
/// rejection or a quarantine.
pub(super) fn outcome(
    scoring: &ScoringConfig,
    session: &Session,
    recipients: &[Recipient],
    mut decision: Decision,
    verdicts: Vec<(String, MessageVerdict)>,
) -> MessageOutcome {
    let mut symbols = Vec::new();
    let mut add_headers = Vec::new();
    let mut remove_headers = Vec::new();
    for (plugin, mv) in verdicts {
        symbols.extend(mv.symbols.into_iter().map(|s| ScoredSymbol {
            plugin: plugin.clone(),
            name: s.name,
            score: s.score,
            detail: s.detail,
        }));
        add_headers.extend(mv.add_headers.into_iter().map(|h| (h.name, h.value)));
        remove_headers.extend(mv.remove_headers);
    }
    // `+ 0.0` turns the -0.0 of an empty sum into 0.0 for the headers.
    let score: f64 = symbols.iter().map(|s| s.score).sum::<f64>() + 0.0;
    let thresholds = scoring.effective(
        &session.listener,
        session.auth_user.is_some(),
        recipients
            .iter()
            .map(|r| crate::smtp::session::address::split(&r.address).1),
    );
    let spam = thresholds.spam.is_some_and(|t| score >= t);
    if decision == Decision::Continue {
        if let Some(limit) = thresholds.reject
            && score >= limit
        {
            decision = Decision::Reject {
                reply: Reply::new(550, "5.7.1", "Message rejected as spam"),
            };
        } else if let Some(limit) = thresholds.quarantine
            && score >= limit
        {
            decision = Decision::Quarantine {
                reason: format!("spam score {score:.2} at or above {limit:.2}"),
            };
        }
    }
    if thresholds.headers {
        let tests: Vec<&str> = symbols.iter().map(|s| s.name.as_str()).collect();
        add_headers.push(("X-Spam-Score".to_string(), format!("{score:.2}")));
        add_headers.push((
            "X-Spam-Status".to_string(),
            format!(
                "{}, score={score:.2} required={:.2} tests={}",
                if spam { "Yes" } else { "No" },
                thresholds.spam.unwrap_or(scoring.spam_threshold),
                if tests.is_empty() {
                    "none".to_string()
                } else {
                    tests.join(",")
                }
            ),
        ));
    }
    if scoring.add_headers {
        // Never let a sender's own spam verdict through.
        remove_headers.push("X-Spam-Score".to_string());
        remove_headers.push("X-Spam-Status".to_string());
    }
    MessageOutcome {
        decision,
        score,
        spam,
        symbols,
        add_headers,
        remove_headers,
    }
}
