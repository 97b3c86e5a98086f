//! spam-score: a statistical spam filter for Sluice's `check-message` hook.
//!
//! Each message is turned into hashed word and sparse-bigram features of its decoded subject
//! and body plus a few header and structure tokens (see `sluice_spam::features`), scored by
//! a logistic-regression model, and given structural rules (`HTML_ONLY`, `MISSING_MID`, …).
//! The verdict is a set of symbols with points; the host adds them up, writes `X-Spam-Score`
//! and `X-Spam-Status`, and rejects above its reject threshold.
//!
//! Configuration (`[plugin.spam-score.config]`):
//! - `model`: path of a model file trained with `sluice-spam train` (default: the model
//!   built into the plugin). The plugin can read it only if the operator grants its
//!   directory: `[plugin.spam-score] read_dirs = ["/var/lib/sluice/spam"]`.

use sluice_plugin_sdk::{
    Config, ConfigError, Envelope, Hook, Message, MessageVerdict, Plugin, Session, Settings,
    export, log,
};
use sluice_spam::features::extract;
use sluice_spam::model::Scorer;

/// The model trained by scripts/build-plugins on the shared corpus (empty when none was).
static BUILT_IN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/model.bin"));

enum Model {
    BuiltIn,
    File(Vec<u8>),
    RulesOnly,
}

/// The settings: which model scores.
struct Scoring {
    model: Model,
}

/// No per-transaction state: one message, one score.
#[derive(Default)]
struct SpamScore;

impl Scoring {
    fn scorer(&self) -> Option<Scorer<'_>> {
        match &self.model {
            Model::BuiltIn => Scorer::new(BUILT_IN).ok(),
            Model::File(b) => Scorer::new(b).ok(),
            Model::RulesOnly => None,
        }
    }
}

impl Settings for Scoring {
    fn parse(config: &Config) -> Result<Self, ConfigError> {
        config.deny_unknown(&["model"])?;
        let model = match config.get::<String>("model")? {
            Some(path) => {
                let bytes = std::fs::read(&path).map_err(|e| {
                    ConfigError::new(
                        "model",
                        format!(
                            "cannot read {path}: {e} (grant its directory to this plugin with read_dirs)"
                        ),
                    )
                })?;
                Scorer::new(&bytes)
                    .map_err(|e| ConfigError::new("model", format!("{path}: {e}")))?;
                Model::File(bytes)
            }
            None if Scorer::new(BUILT_IN).is_ok() => Model::BuiltIn,
            None => Model::RulesOnly,
        };
        Ok(Scoring { model })
    }
}

impl Plugin for SpamScore {
    const HOOKS: &'static [Hook] = &[Hook::CheckMessage];
    type Settings = Scoring;

    fn check_message(
        &mut self,
        scoring: &Scoring,
        _s: &Session,
        _env: &Envelope,
        msg: &Message,
    ) -> MessageVerdict {
        let features = extract(&msg.raw);
        let mut verdict = MessageVerdict::default();
        match scoring.scorer() {
            Some(scorer) => {
                let j = scorer.judge(&features);
                for (name, points) in &j.symbols {
                    let why = if name.starts_with("STAT_") {
                        format!("statistical spam probability {:.3}", j.probability)
                    } else {
                        "structural rule".to_string()
                    };
                    verdict = verdict.symbol(name, f64::from(*points), &why);
                }
            }
            None => {
                log::warn("no model built in or configured: structural rules only");
                for fact in &features.facts {
                    if let Some((name, points)) =
                        sluice_spam::model::RULES.iter().find(|(n, _)| n == fact)
                    {
                        verdict = verdict.symbol(name, f64::from(*points), "structural rule");
                    }
                }
            }
        }
        verdict
    }
}

export!(SpamScore);
