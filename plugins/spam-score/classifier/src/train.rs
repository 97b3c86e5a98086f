//! Training (logistic regression by Adagrad SGD over shuffled epochs) and k-fold evaluation.

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

/// Training settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Passes over the data.
    pub epochs: usize,
    /// Adagrad learning rate.
    pub rate: f32,
    /// Weight given to ham examples' errors (>1 trades spam recall for fewer false positives).
    pub ham_weight: f32,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            epochs: 12,
            rate: 2.0,
            ham_weight: 1.0,
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

/// Trains a model on `examples`.
pub fn train(examples: &[&Example], s: Settings) -> Model {
    let n = 1usize << BITS;
    let mut w = vec![0f32; n];
    let mut g2 = vec![1e-6f32; n];
    let mut order: Vec<usize> = (0..examples.len()).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..s.epochs {
        for i in (1..order.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        for &k in &order {
            let e = examples[k];
            let z: f32 = e.features.terms().map(|(i, x)| w[i as usize] * x).sum();
            let p = 1.0 / (1.0 + (-z).exp());
            let y = if e.spam { 1.0 } else { 0.0 };
            let weight = if e.spam { 1.0 } else { s.ham_weight };
            let g0 = (p - y) * weight;
            if g0.abs() < 1e-7 {
                continue;
            }
            for (i, x) in e.features.terms() {
                let i = i as usize;
                let g = g0 * x;
                g2[i] += g * g;
                w[i] -= s.rate * g / g2[i].sqrt();
            }
        }
    }
    Model { weights: w }
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
