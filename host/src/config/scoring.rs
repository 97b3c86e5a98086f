//! `[scoring]` and `[spam_learning]`: what a message's summed spam score leads to (per
//! listener and domain), and how users' Junk folders teach the spam filter.

use std::path::PathBuf;

use serde::Deserialize;

use super::Problems;

/// `[spam_learning]`: the hand-over of learned messages from mail users to Sluice, and the
/// bounds on what one user may teach. The model, its log and its lock are Sluice's alone
/// (beside `[plugin.spam-score.config] learned`); a mail user may only drop a message and its
/// label into the drop directory (`sluice spam submit`), which Sluice collects.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LearningConfig {
    /// The drop directory; default `drop/` beside the `learned` file. Make it mode 1730,
    /// owned by Sluice's user and the mail user's group (see host/deploy/dovecot-imapsieve).
    pub drop_dir: Option<PathBuf>,
    /// Messages one user may hand over per day (UTC); the rest are dropped with a log line.
    pub max_per_user_per_day: u32,
    /// Messages the site's log keeps; past it the oldest are forgotten.
    pub max_messages: usize,
    /// Messages collected from the drop directory per pass (one retraining per pass).
    pub batch: usize,
    /// How long a learner waits for another's lock before it gives up (seconds).
    pub lock_timeout_secs: u64,
}

impl Default for LearningConfig {
    fn default() -> Self {
        LearningConfig {
            drop_dir: None,
            max_per_user_per_day: 200,
            max_messages: 10_000,
            batch: 500,
            lock_timeout_secs: 30,
        }
    }
}

/// Spam-score thresholds applied to the sum of every plugin's symbols.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ScoringConfig {
    /// Add `X-Spam-Score` and `X-Spam-Status` headers to every message that reaches
    /// `check-message`.
    pub add_headers: bool,
    /// At or above this score the message is marked spam (`X-Spam-Status: Yes`; rspamd's
    /// "add header").
    pub spam_threshold: f64,
    /// At or above this score the message is held in quarantine; none to never.
    pub quarantine_threshold: Option<f64>,
    /// At or above this score the message is rejected with 550 5.7.1; none to never reject.
    pub reject_threshold: Option<f64>,
    /// Mail from authenticated users (submission): `off` (no score headers, no score
    /// actions: the default; a sender's own mail is not judged as spam), `score` (the
    /// headers with the score, never marked spam, no actions) or `on` (as any mail).
    pub authenticated: AuthenticatedScoring,
    /// Other thresholds for some listeners or recipient domains; the first that matches a
    /// transaction applies.
    #[serde(rename = "override")]
    pub overrides: Vec<ScoringOverride>,
}

/// How mail from authenticated users is scored ([`ScoringConfig::authenticated`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthenticatedScoring {
    /// No score headers, no score actions.
    Off,
    /// Score headers, never marked spam, no actions.
    Score,
    /// As any mail.
    On,
}

/// `[[scoring.override]]`: thresholds for the transactions of some listeners or recipient
/// domains (a transaction matches when its listener is listed, or any recipient's domain).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringOverride {
    /// Listener kinds (`smtp`, `submission`, `smtps`, `milter`).
    #[serde(default)]
    pub listeners: Vec<String>,
    /// Recipient domains.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Replaces `spam_threshold`.
    pub spam_threshold: Option<f64>,
    /// Replaces `quarantine_threshold` (a value; leave out to keep the default's).
    pub quarantine_threshold: Option<f64>,
    /// Replaces `reject_threshold`.
    pub reject_threshold: Option<f64>,
}

/// The thresholds that apply to one transaction ([`ScoringConfig::effective`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Score headers are added.
    pub headers: bool,
    /// Marked spam at or above (none: never).
    pub spam: Option<f64>,
    /// Quarantined at or above.
    pub quarantine: Option<f64>,
    /// Rejected at or above.
    pub reject: Option<f64>,
}

impl ScoringConfig {
    /// The thresholds for a transaction on `listener`, from an authenticated client or not,
    /// to recipients in `domains`.
    pub fn effective<'a>(
        &self,
        listener: &str,
        authenticated: bool,
        mut domains: impl Iterator<Item = &'a str>,
    ) -> Thresholds {
        if authenticated {
            match self.authenticated {
                AuthenticatedScoring::Off => {
                    return Thresholds {
                        headers: false,
                        spam: None,
                        quarantine: None,
                        reject: None,
                    };
                }
                AuthenticatedScoring::Score => {
                    return Thresholds {
                        headers: self.add_headers,
                        spam: None,
                        quarantine: None,
                        reject: None,
                    };
                }
                AuthenticatedScoring::On => {}
            }
        }
        let domains: Vec<&str> = domains.by_ref().collect();
        let o = self.overrides.iter().find(|o| {
            o.listeners.iter().any(|l| l == listener)
                || o.domains
                    .iter()
                    .any(|d| domains.iter().any(|r| r.eq_ignore_ascii_case(d)))
        });
        Thresholds {
            headers: self.add_headers,
            spam: Some(
                o.and_then(|o| o.spam_threshold)
                    .unwrap_or(self.spam_threshold),
            ),
            quarantine: o
                .and_then(|o| o.quarantine_threshold)
                .or(self.quarantine_threshold),
            reject: o.and_then(|o| o.reject_threshold).or(self.reject_threshold),
        }
    }
}

impl Default for ScoringConfig {
    fn default() -> Self {
        ScoringConfig {
            add_headers: true,
            spam_threshold: 5.0,
            quarantine_threshold: None,
            reject_threshold: Some(15.0),
            authenticated: AuthenticatedScoring::Off,
            overrides: Vec::new(),
        }
    }
}

impl LearningConfig {
    pub(super) fn validate(&self, p: &mut Problems) {
        p.range(
            "spam_learning.max_per_user_per_day",
            self.max_per_user_per_day as usize,
            1,
            1_000_000,
        );
        p.range(
            "spam_learning.max_messages",
            self.max_messages,
            1,
            1_000_000,
        );
        p.range("spam_learning.batch", self.batch, 1, 100_000);
        p.range(
            "spam_learning.lock_timeout_secs",
            self.lock_timeout_secs,
            1,
            3600,
        );
    }
}

impl ScoringConfig {
    pub(super) fn validate(&self, p: &mut Problems) {
        check_thresholds(
            p,
            "scoring.",
            self.spam_threshold,
            self.quarantine_threshold,
            self.reject_threshold,
        );
        for (i, o) in self.overrides.iter().enumerate() {
            check_thresholds(
                p,
                &format!("scoring.override[{i}]."),
                o.spam_threshold.unwrap_or(self.spam_threshold),
                o.quarantine_threshold.or(self.quarantine_threshold),
                o.reject_threshold.or(self.reject_threshold),
            );
        }
        for (i, o) in self.overrides.iter().enumerate() {
            if o.listeners.is_empty() && o.domains.is_empty() {
                p.add(
                    format_args!("scoring.override[{i}]"),
                    "name the listeners or domains it is for",
                );
            }
            for l in &o.listeners {
                if !["smtp", "submission", "smtps", "milter"].contains(&l.as_str()) {
                    p.add(
                        format_args!("scoring.override[{i}].listeners"),
                        format_args!(
                            "{l:?} is not a listener kind (smtp, submission, smtps, milter)"
                        ),
                    );
                }
            }
        }
    }
}

/// The thresholds of `[scoring]` or one of its overrides (`at` is the key's prefix): finite,
/// and in the order spam ≤ quarantine ≤ reject.
fn check_thresholds(
    p: &mut Problems,
    at: &str,
    spam: f64,
    quarantine: Option<f64>,
    reject: Option<f64>,
) {
    if !spam.is_finite() {
        p.add(
            format_args!("{at}spam_threshold"),
            "must be a finite number",
        );
    }
    for (key, v) in [
        ("quarantine_threshold", quarantine),
        ("reject_threshold", reject),
    ] {
        if let Some(v) = v
            && (!v.is_finite() || v < spam)
        {
            p.add(
                format_args!("{at}{key}"),
                format_args!("{v} must be a number not below {at}spam_threshold ({spam})"),
            );
        }
    }
    if let (Some(q), Some(r)) = (quarantine, reject)
        && q > r
    {
        p.add(
            format_args!("{at}quarantine_threshold"),
            format_args!("{q} is above {at}reject_threshold ({r}): nothing could be quarantined"),
        );
    }
}
