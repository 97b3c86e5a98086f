//! Test plugin for `check-message`: adds `X-Tagged: <tag>`, contributes the symbol `TAGGED`
//! with `score`, removes `X-Remove-Me`, and rejects messages whose subject contains
//! `reject_word`.
use sluice_plugin_sdk::{export, log, Config, ConfigError, Envelope, Hook, Message, MessageVerdict, Plugin, Session, Verdict};

struct Tagger {
    tag: String,
    score: f64,
    reject_word: Option<String>,
}

impl Plugin for Tagger {
    const HOOKS: &'static [Hook] = &[Hook::CheckMessage];

    fn new(config: &Config) -> Result<Self, ConfigError> {
        config.deny_unknown(&["tag", "score", "reject_word"])?;
        let score = config.get_or("score", 1.0)?;
        if !(-100.0..=100.0).contains(&score) {
            return Err(ConfigError::new("score", "must be between -100 and 100"));
        }
        Ok(Tagger {
            tag: config.get_or("tag", "yes".to_string())?,
            score,
            reject_word: config.get("reject_word")?,
        })
    }

    fn check_message(&mut self, _s: &Session, env: &Envelope, msg: &Message) -> MessageVerdict {
        let subject = msg.header("Subject").unwrap_or("");
        log::info(&format!("subject {subject:?}, {} recipients, {} bytes", env.recipients.len(), msg.raw.len()));
        if let Some(word) = &self.reject_word {
            if subject.to_lowercase().contains(&word.to_lowercase()) {
                return Verdict::reject(554, "5.7.1", &format!("subject contains {word:?}")).into();
            }
        }
        MessageVerdict::default()
            .add_header("X-Tagged", &self.tag)
            .remove_header("X-Remove-Me")
            .symbol("TAGGED", self.score, "tagged by the test plugin")
    }
}

export!(Tagger);
