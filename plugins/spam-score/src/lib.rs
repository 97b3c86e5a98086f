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
//! - `learned`: path of the site model that `sluice spam learn` writes (what the site's users
//!   taught it). Read at the start of every transaction, so learning takes effect without a
//!   restart; a missing file means nothing was learned yet.
//! - `internal_hosts`, `internal_networks`: the site's own relays in front of Sluice (host
//!   names, a leading `.` for a whole domain; `ADDR/PREFIX`), so the border is found past them
//!   (see `sluice_spam::trust`).

use sluice_plugin_sdk::{
    Config, ConfigError, Envelope, Message, MessageVerdict, Session, Settings, log, plugin,
};
use sluice_spam::features::extract_with;
use sluice_spam::model::{Scorer, judgement};
use sluice_spam::site::SiteModel;
use sluice_spam::trust::{Client, Trust};

/// The model trained by scripts/build-plugins on the shared corpus (empty when none was).
static BUILT_IN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/model.bin"));

enum Model {
    BuiltIn,
    File(Vec<u8>),
    RulesOnly,
}

/// The settings: which model scores, what the site learned, and the site's own hosts.
struct Scoring {
    model: Model,
    /// The site model's bytes (empty when nothing was learned).
    learned: Vec<u8>,
    trust: Trust,
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
        config.deny_unknown(&["model", "learned", "internal_hosts", "internal_networks"])?;
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
        let learned = match config.get::<String>("learned")? {
            Some(path) => match std::fs::read(&path) {
                Ok(bytes) => match SiteModel::new(&bytes) {
                    Ok(_) => bytes,
                    // A damaged or forged site model (NaN or huge weights, a bad header) is
                    // refused, and the shipped model scores alone: failing here would make
                    // every message wait (451) for a file only the learner can mend. Sluice's
                    // learner and the fleet sync never write one (they check it first).
                    Err(e) => {
                        log::warn(&format!(
                            "learned: {path}: {e}: refused; scoring with the shipped model alone"
                        ));
                        Vec::new()
                    }
                },
                // Nothing learned yet.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => {
                    return Err(ConfigError::new(
                        "learned",
                        format!(
                            "cannot read {path}: {e} (grant its directory to this plugin with read_dirs)"
                        ),
                    ));
                }
            },
            None => Vec::new(),
        };
        let trust = Trust::site(
            &config
                .get::<Vec<String>>("internal_hosts")?
                .unwrap_or_default(),
            &config
                .get::<Vec<String>>("internal_networks")?
                .unwrap_or_default(),
        )
        .map_err(|e| ConfigError::new("internal_networks", e))?;
        Ok(Scoring {
            model,
            learned,
            trust,
        })
    }
}

plugin!(SpamScore {
    type Settings = Scoring;

    fn check_message(
        &mut self,
        scoring: &Scoring,
        session: &Session,
        _env: &Envelope,
        msg: &Message,
    ) -> MessageVerdict {
        // The session's client is the border client, unless it is one of the site's relays.
        let trust = Trust {
            session: Some(Client {
                ip: session.client_ip.parse().ok(),
                helo: session.helo.to_ascii_lowercase(),
            }),
            ..scoring.trust.clone()
        };
        let features = extract_with(&msg.raw, &trust);
        let site = SiteModel::new(&scoring.learned).ok();
        let mut verdict = MessageVerdict::default();
        match scoring.scorer() {
            Some(scorer) => {
                let site_logit = site.map_or(0.0, |s| s.logit(&features));
                let j = judgement(&features, scorer.logit(&features) + site_logit);
                if site_logit != 0.0 {
                    verdict = verdict.symbol(
                        "SITE_LEARNED",
                        0.0,
                        &format!("the site's learned model moved the log-odds by {site_logit:+.2}"),
                    );
                }
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
});
