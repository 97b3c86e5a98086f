//! Test plugin for `check-message`: adds `X-Tagged: <tag>`, contributes the symbol `TAGGED`
//! with `score`, removes `X-Remove-Me`, and rejects messages whose subject contains
//! `reject_word`.
use sluice_plugin_sdk::{
    Config, ConfigError, Envelope, Hook, Message, MessageVerdict, Plugin, Session, Settings,
    Verdict, export, log,
};

/// The state of one transaction.
#[derive(Default)]
struct Tagger {
    /// Calls in this transaction: shows that state lives exactly one transaction.
    calls: u32,
}

/// The settings.
struct TaggerSettings {
    tag: String,
    score: f64,
    reject_word: Option<String>,
}

impl Settings for TaggerSettings {
    fn parse(config: &Config) -> Result<Self, ConfigError> {
        config.deny_unknown(&["tag", "score", "reject_word"])?;
        let score = config.get_or("score", 1.0)?;
        if !(-100.0..=100.0).contains(&score) {
            return Err(ConfigError::new("score", "must be between -100 and 100"));
        }
        Ok(TaggerSettings {
            tag: config.get_or("tag", "yes".to_string())?,
            score,
            reject_word: config.get("reject_word")?,
        })
    }
}

impl Plugin for Tagger {
    const HOOKS: &'static [Hook] = &[Hook::CheckMessage];
    type Settings = TaggerSettings;

    fn check_message(
        &mut self,
        cfg: &TaggerSettings,
        _s: &Session,
        env: &Envelope,
        msg: &Message,
    ) -> MessageVerdict {
        let subject = msg.header("Subject").unwrap_or("");
        self.calls += 1;
        log::info(&format!(
            "call {}: subject {subject:?}, {} recipients, {} bytes",
            self.calls,
            env.recipients.len(),
            msg.raw.len()
        ));
        if let Some(word) = &cfg.reject_word
            && subject.to_lowercase().contains(&word.to_lowercase())
        {
            return Verdict::reject(554, "5.7.1", &format!("subject contains {word:?}")).into();
        }
        MessageVerdict::default()
            .add_header("X-Tagged", &cfg.tag)
            .remove_header("X-Remove-Me")
            .symbol("TAGGED", cfg.score, "tagged by the test plugin")
    }
}

export!(Tagger);
