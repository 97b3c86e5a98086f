//! Training (logistic regression by Adagrad SGD over shuffled epochs, averaged over several
//! shuffles) and k-fold evaluation.

use crate::features::{BITS, Features};
use crate::model::Model;

/// A labelled example.
#[derive(Debug, Clone)]
pub struct Example {
    /// Its features.
    pub features: Features,
    /// True for spam.
    pub spam: bool,
    /// Examples sharing a group (duplicates) stay on one side of a split.
    pub group: u64,
}

/// How weights are learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learner {
    /// Logistic regression, Adagrad SGD over every example in every epoch.
    Logistic,
    /// Logistic regression trained only on errors and on examples inside the thick threshold
    /// (CRM114's train-on-error with a margin).
    LogisticOnError,
    /// Passive-aggressive (PA-I): a hinge-loss online large-margin learner, the relaxed
    /// online SVM's cheap cousin.
    PassiveAggressive,
    /// Winnow in log space: additive promotions and demotions of the features of mistakes and
    /// near-misses (thick threshold), as in OSB-Winnow.
    Winnow,
}

impl std::str::FromStr for Learner {
    type Err = String;
    fn from_str(s: &str) -> Result<Learner, String> {
        Ok(match s {
            "logistic" => Learner::Logistic,
            "logistic-on-error" => Learner::LogisticOnError,
            "pa" => Learner::PassiveAggressive,
            "winnow" => Learner::Winnow,
            _ => {
                return Err(format!(
                    "unknown learner `{s}` (logistic, logistic-on-error, pa, winnow)"
                ));
            }
        })
    }
}

/// The spam log-odds of the deployed decision: 5 points is `10 × (2p − 1) = 5`, p = 0.75.
pub const DECISION_LOGIT: f32 = 1.0986;

/// Training settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The learner.
    pub learner: Learner,
    /// Margin (in log-odds) beyond the decision that counts as a sure judgement for the
    /// margin learners.
    pub margin: f32,
    /// Passes over the data.
    pub epochs: usize,
    /// Adagrad learning rate.
    pub rate: f32,
    /// Weight given to ham examples' errors (>1 trades spam recall for fewer false positives).
    pub ham_weight: f32,
    /// Models trained, each on its own shuffle of the data, and averaged. One model trained
    /// by SGD at a high rate depends on the order of its last steps; the average of models
    /// that saw the data in different orders does not, and is one linear model again (the
    /// mean of the weights), so scoring costs the same.
    pub bags: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            learner: Learner::Logistic,
            margin: 2.0,
            epochs: 12,
            rate: 1.0,
            ham_weight: 1.0,
            bags: 8,
        }
    }
}

/// A small deterministic generator for shuffling (training must be reproducible).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The seed of the first model's shuffles; model `b` uses a seed derived from it.
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// Trains a model on `examples`: the mean of `s.bags` models, each trained on its own shuffle.
pub fn train(examples: &[&Example], s: Settings) -> Model {
    let n = 1usize << BITS;
    let bags = s.bags.max(1);
    let mut mean = vec![0f32; n];
    let mut w = vec![0f32; n];
    let mut g2 = vec![0f32; n];
    for b in 0..bags {
        w.fill(0.0);
        g2.fill(1e-6);
        let seed = SEED ^ (b as u64).wrapping_mul(0x1234_5678_9abc);
        train_one(&mut w, &mut g2, examples, s, seed);
        for (m, x) in mean.iter_mut().zip(&w) {
            *m += x / bags as f32;
        }
    }
    Model { weights: mean }
}

/// One online step of `s.learner` on one example; true when the weights changed.
pub fn step(w: &mut [f32], g2: &mut [f32], e: &Example, s: &Settings) -> bool {
    let z: f32 = e.features.terms().map(|(i, x)| w[i as usize] * x).sum();
    let y = if e.spam { 1.0 } else { -1.0 };
    let weight = if e.spam { 1.0 } else { s.ham_weight };
    // Distance past the decision on the right side.
    let past = y * (z - DECISION_LOGIT);
    match s.learner {
        Learner::Logistic | Learner::LogisticOnError => {
            if s.learner == Learner::LogisticOnError && past >= s.margin {
                return false;
            }
            let p = 1.0 / (1.0 + (-z).exp());
            let g0 = (p - if e.spam { 1.0 } else { 0.0 }) * weight;
            if g0.abs() < 1e-7 {
                return false;
            }
            for (i, x) in e.features.terms() {
                let i = i as usize;
                let g = g0 * x;
                g2[i] += g * g;
                w[i] -= s.rate * g / g2[i].sqrt();
            }
            true
        }
        Learner::PassiveAggressive => {
            let loss = s.margin - past;
            if loss <= 0.0 {
                return false;
            }
            let norm2: f32 = e.features.terms().map(|(_, x)| x * x).sum();
            let tau = (loss / norm2.max(1e-6)).min(s.rate) * weight;
            for (i, x) in e.features.terms() {
                w[i as usize] += tau * y * x;
            }
            true
        }
        Learner::Winnow => {
            if past >= s.margin {
                return false;
            }
            for (i, x) in e.features.terms() {
                w[i as usize] += s.rate * 0.1 * y * x * weight;
            }
            true
        }
    }
}

/// Trains the weights `w` (with Adagrad's accumulators `g2`) on `examples`, shuffled anew in
/// each epoch from `seed`.
fn train_one(w: &mut [f32], g2: &mut [f32], examples: &[&Example], s: Settings, seed: u64) {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    let mut rng = Rng(seed);
    for _ in 0..s.epochs {
        for i in (1..order.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        for &k in &order {
            step(w, g2, examples[k], &s);
        }
    }
}

/// Results of an evaluation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Confusion {
    /// Spam judged spam.
    pub true_spam: usize,
    /// Ham judged ham.
    pub true_ham: usize,
    /// Ham judged spam.
    pub false_spam: usize,
    /// Spam judged ham.
    pub false_ham: usize,
}

impl Confusion {
    /// Adds one judgement.
    pub fn add(&mut self, spam: bool, judged_spam: bool) {
        match (spam, judged_spam) {
            (true, true) => self.true_spam += 1,
            (false, false) => self.true_ham += 1,
            (false, true) => self.false_spam += 1,
            (true, false) => self.false_ham += 1,
        }
    }

    /// Messages judged.
    pub fn total(&self) -> usize {
        self.true_spam + self.true_ham + self.false_spam + self.false_ham
    }

    /// Share judged right.
    pub fn accuracy(&self) -> f64 {
        (self.true_spam + self.true_ham) as f64 / self.total().max(1) as f64
    }

    /// Share of ham judged spam.
    pub fn false_positive_rate(&self) -> f64 {
        self.false_spam as f64 / (self.true_ham + self.false_spam).max(1) as f64
    }

    /// Share of spam caught.
    pub fn spam_recall(&self) -> f64 {
        self.true_spam as f64 / (self.true_spam + self.false_ham).max(1) as f64
    }
}

/// The fold (0..k) of a duplicate group: a hash, so duplicates share a fold.
pub fn fold_of(group: u64, k: usize) -> usize {
    (group.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 33) as usize % k
}
