//! The model: one weight per hash bucket (logistic regression), stored as 16-bit fixed point.
//!
//! File format (little endian): the magic `SLUICESPAM1\n`, `u32` bits, `f32` scale, then
//! `1 << bits` `i16` weights (weight = value × scale). About 2 MiB for 20 bits.

use crate::features::{BITS, Features};

const MAGIC: &[u8; 12] = b"SLUICESPAM1\n";

/// A trained model.
#[derive(Debug, Clone)]
pub struct Model {
    /// Weights, one per bucket.
    pub weights: Vec<f32>,
}

/// Why a model file was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelError {
    /// Not a model file.
    BadMagic,
    /// Built for another feature size.
    WrongBits(u32),
    /// Shorter than its header says.
    Truncated,
    /// A weight scale that is not a finite number in (0, 1].
    BadScale(f32),
}

impl std::fmt::Display for ModelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelError::BadMagic => write!(f, "not a Sluice spam model (bad magic)"),
            ModelError::WrongBits(b) => write!(
                f,
                "model has {b}-bit features, this plugin uses {BITS}: retrain it with this version"
            ),
            ModelError::Truncated => write!(f, "model file is truncated"),
            ModelError::BadScale(s) => write!(
                f,
                "model's weight scale is {s}, not a finite number in (0, 1]: the file is damaged"
            ),
        }
    }
}

impl std::error::Error for ModelError {}

impl Model {
    /// A model with every weight zero.
    pub fn empty() -> Model {
        Model {
            weights: vec![0.0; 1 << BITS],
        }
    }

    /// The spam log-odds of a message's features (the features' weights, summed and scaled by
    /// 1/sqrt(n) as in training).
    pub fn logit(&self, f: &Features) -> f32 {
        f.terms().map(|(i, x)| self.weights[i as usize] * x).sum()
    }

    /// Serialises the model.
    pub fn to_bytes(&self) -> Vec<u8> {
        let max = self.weights.iter().fold(0f32, |m, w| m.max(w.abs()));
        let scale = if max > 0.0 { max / 32767.0 } else { 1.0 };
        let mut out = Vec::with_capacity(20 + self.weights.len() * 2);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&BITS.to_le_bytes());
        out.extend_from_slice(&scale.to_le_bytes());
        for w in &self.weights {
            let q = (w / scale).round().clamp(-32767.0, 32767.0) as i16;
            out.extend_from_slice(&q.to_le_bytes());
        }
        out
    }

    /// Reads a model written by [`Model::to_bytes`].
    pub fn from_bytes(b: &[u8]) -> Result<Model, ModelError> {
        let s = Scorer::new(b)?;
        let weights = s
            .weights
            .chunks_exact(2)
            .map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])) * s.scale)
            .collect();
        Ok(Model { weights })
    }
}

/// Points of each structural rule (named as in `X-Spam-Status: tests=`).
pub const RULES: &[(&str, f32)] = &[
    ("SUBJ_ALL_CAPS", 1.0),
    ("MISSING_MID", 0.5),
    ("MISSING_DATE", 1.0),
    ("MISSING_SUBJECT", 0.5),
    ("HTML_ONLY", 0.5),
    ("MANY_URLS", 0.5),
    ("UNPARSEABLE", 1.0),
];

/// Points of the statistical verdict: `STAT_POINTS × (2p − 1)`, so a certain spam scores
/// `STAT_POINTS`, a certain ham `−STAT_POINTS`, an undecided message 0.
pub const STAT_POINTS: f32 = 10.0;

/// What the classifier says about one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// Total points (statistical plus rules).
    pub score: f32,
    /// The spam probability.
    pub probability: f32,
    /// (symbol, points), the statistical one first.
    pub symbols: Vec<(String, f32)>,
}

/// Judges features given the spam log-odds.
pub fn judgement(f: &Features, logit: f32) -> Judgement {
    {
        let p = 1.0 / (1.0 + (-logit).exp());
        let stat = STAT_POINTS * (2.0 * p - 1.0);
        let bucket = ((p * 100.0) as u32 / 10 * 10).min(90);
        let mut symbols = vec![(format!("STAT_{bucket:02}_{:02}", bucket + 10), stat)];
        for fact in &f.facts {
            if let Some((name, pts)) = RULES.iter().find(|(n, _)| n == fact) {
                symbols.push((name.to_string(), *pts));
            }
        }
        Judgement {
            score: symbols.iter().map(|(_, s)| s).sum(),
            probability: p,
            symbols,
        }
    }
}

impl Model {
    /// Judges a message's features.
    pub fn judge(&self, f: &Features) -> Judgement {
        judgement(f, self.logit(f))
    }
}

/// A model read in place from its file bytes (no copy: the plugin scores straight from the
/// model embedded in its data segment or read from the operator's file).
#[derive(Debug, Clone, Copy)]
pub struct Scorer<'a> {
    weights: &'a [u8],
    scale: f32,
}

impl<'a> Scorer<'a> {
    /// Checks the header of a model file and wraps it.
    pub fn new(b: &'a [u8]) -> Result<Scorer<'a>, ModelError> {
        if b.len() < 20 || &b[..12] != MAGIC {
            return Err(ModelError::BadMagic);
        }
        let bits = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
        if bits != BITS {
            return Err(ModelError::WrongBits(bits));
        }
        let scale = f32::from_le_bytes([b[16], b[17], b[18], b[19]]);
        // Weights are i16 times the scale: a scale that is not a small positive number can
        // only come from a damaged or forged file, and would make every score meaningless.
        if !(scale.is_finite() && scale > 0.0 && scale <= 1.0) {
            return Err(ModelError::BadScale(scale));
        }
        let n = 1usize << BITS;
        if b.len() < 20 + n * 2 {
            return Err(ModelError::Truncated);
        }
        Ok(Scorer {
            weights: &b[20..20 + n * 2],
            scale,
        })
    }

    /// The spam log-odds of a message's features.
    pub fn logit(&self, f: &Features) -> f32 {
        let sum: f32 = f
            .terms()
            .map(|(i, x)| {
                let i = i as usize * 2;
                f32::from(i16::from_le_bytes([self.weights[i], self.weights[i + 1]])) * x
            })
            .sum();
        sum * self.scale
    }

    /// Judges a message's features.
    pub fn judge(&self, f: &Features) -> Judgement {
        judgement(f, self.logit(f))
    }

    /// The model file's bytes.
    pub fn to_owned_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20 + self.weights.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&BITS.to_le_bytes());
        out.extend_from_slice(&self.scale.to_le_bytes());
        out.extend_from_slice(self.weights);
        out
    }

    /// Finds a model inside other bytes: the spam-score component carries its built-in model
    /// whole in one data segment, so the learner can start from exactly the model the installed
    /// plugin scores with.
    pub fn find_in(bytes: &'a [u8]) -> Option<Scorer<'a>> {
        let mut at = 0;
        while let Some(i) = bytes[at..].windows(MAGIC.len()).position(|w| w == MAGIC) {
            if let Ok(s) = Scorer::new(&bytes[at + i..]) {
                return Some(s);
            }
            at += i + 1;
        }
        None
    }
}
