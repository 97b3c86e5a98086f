//! The site's own model: what its users taught the filter (`sluice spam learn`), added to the
//! shipped model's judgement.
//!
//! The site model is a sparse set of weight corrections, one per feature its learned messages
//! have. It is trained with the shipped model's weights fixed, so a message the shipped model
//! already judges right with room to spare teaches nothing, and a message it gets wrong moves
//! the weights of that message's features just enough (passive-aggressive, the smallest change
//! that puts it a margin past the decision). Messages like it move with it; unrelated mail
//! hardly does.
//!
//! Training always replays the whole log of learned messages from zero, in the order they were
//! learned, so forgetting a message is exact: the result is what it would be had the message
//! never been learned.
//!
//! File format (little endian): the magic `SLUICESPAMSITE1\n`, `u32` count, then `count`
//! entries of (`u32` feature index, `f32` weight), sorted by index.

use std::collections::BTreeMap;

use crate::features::{BITS, Features, norm};
use crate::train::DECISION_LOGIT;

const MAGIC: &[u8; 16] = b"SLUICESPAMSITE1\n";

/// Log-odds past the decision a learned message is put at: spam at p ≥ 0.96, ham at p ≤ 0.29.
pub const MARGIN: f32 = 2.0;

/// The most a single step may move a message's log-odds (a cap, as in PA-I, so one odd
/// message cannot swing the model far).
const MAX_STEP: f32 = 8.0;

/// The part of a learning step that header and structure features take, against 1 for the
/// text's.
const META_SHARE: f32 = 0.2;

/// Passes over the log at most; training stops early once every message is past its margin.
const MAX_EPOCHS: usize = 10;

/// A site model read in place from its file bytes.
#[derive(Debug, Clone, Copy)]
pub struct SiteModel<'a> {
    entries: &'a [u8],
}

/// Why a site model file was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum SiteModelError {
    /// Not a site model.
    BadMagic,
    /// Shorter than its header says, or entries out of order.
    Corrupt,
    /// More corrections than [`MAX_FEATURES`].
    TooLarge(usize),
    /// A weight that is not a finite number within ±[`MAX_WEIGHT`].
    BadWeight(u32, f32),
}

/// The largest correction a site model may hold for one feature. Training moves a message's
/// log-odds by at most [`MAX_STEP`] per step, spread over its features, so a real model stays
/// far below this; a NaN, an infinity or a huge weight can only come from a damaged or
/// forged file, and would make every score meaningless.
pub const MAX_WEIGHT: f32 = 1000.0;

impl std::fmt::Display for SiteModelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SiteModelError::BadMagic => write!(f, "not a Sluice site spam model (bad magic)"),
            SiteModelError::Corrupt => write!(f, "site spam model is truncated or corrupt"),
            SiteModelError::TooLarge(n) => write!(
                f,
                "site spam model has {n} corrections, more than the {MAX_FEATURES} allowed"
            ),
            SiteModelError::BadWeight(i, w) => write!(
                f,
                "site spam model's weight of feature {i} is {w}, not a finite number within ±{MAX_WEIGHT}"
            ),
        }
    }
}

impl std::error::Error for SiteModelError {}

impl<'a> SiteModel<'a> {
    /// Checks a site model file and wraps it.
    pub fn new(b: &'a [u8]) -> Result<SiteModel<'a>, SiteModelError> {
        if b.len() < 20 || &b[..16] != MAGIC {
            return Err(SiteModelError::BadMagic);
        }
        let n = u32::from_le_bytes([b[16], b[17], b[18], b[19]]) as usize;
        if n > MAX_FEATURES {
            return Err(SiteModelError::TooLarge(n));
        }
        let entries = b
            .get(20..20 + n.checked_mul(8).ok_or(SiteModelError::Corrupt)?)
            .ok_or(SiteModelError::Corrupt)?;
        let index =
            |k: usize| u32::from_le_bytes(entries[k * 8..k * 8 + 4].try_into().unwrap_or([0; 4]));
        if (1..n).any(|k| index(k - 1) >= index(k)) || (n > 0 && index(n - 1) >= 1 << BITS) {
            return Err(SiteModelError::Corrupt);
        }
        let model = SiteModel { entries };
        for k in 0..n {
            let w = model.weight_at(k);
            if !w.is_finite() || w.abs() > MAX_WEIGHT {
                return Err(SiteModelError::BadWeight(model.index(k), w));
            }
        }
        Ok(model)
    }

    /// Features with a correction.
    pub fn len(&self) -> usize {
        self.entries.len() / 8
    }

    /// True when nothing was learned.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn index(&self, k: usize) -> u32 {
        u32::from_le_bytes(self.entries[k * 8..k * 8 + 4].try_into().unwrap_or([0; 4]))
    }

    fn weight_at(&self, k: usize) -> f32 {
        let at = k * 8 + 4;
        f32::from_le_bytes(self.entries[at..at + 4].try_into().unwrap_or([0; 4]))
    }

    /// The correction of feature `i` (0 when none).
    pub fn weight(&self, i: u32) -> f32 {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.index(mid).cmp(&i) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return self.weight_at(mid),
            }
        }
        0.0
    }

    /// The log-odds the site model adds to a message's.
    pub fn logit(&self, f: &Features) -> f32 {
        if self.is_empty() {
            return 0.0;
        }
        f.terms().map(|(i, x)| self.weight(i) * x).sum()
    }
}

/// Serialises site weights (zero weights are left out).
pub fn to_bytes(weights: &BTreeMap<u32, f32>) -> Vec<u8> {
    let kept: Vec<(&u32, &f32)> = weights.iter().filter(|(_, w)| **w != 0.0).collect();
    let mut out = Vec::with_capacity(20 + kept.len() * 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(kept.len() as u32).to_le_bytes());
    for (i, w) in kept {
        out.extend_from_slice(&i.to_le_bytes());
        out.extend_from_slice(&w.to_le_bytes());
    }
    out
}

/// Trains the site's weights on its learned messages (`(spam, features)`, in the order they
/// were learned), on top of `base`, the shipped model's log-odds of a message.
///
/// The plugin reads the whole site model at the start of every transaction, so its size is
/// bounded: when the corrections touch more than [`MAX_FEATURES`] features, the largest are
/// kept and the learned messages are trained again on those alone.
pub fn train(base: &dyn Fn(&Features) -> f32, learned: &[(bool, Features)]) -> BTreeMap<u32, f32> {
    let mut w = train_on(base, learned, None);
    if w.len() > MAX_FEATURES {
        let mut by_size: Vec<(u32, f32)> = w.iter().map(|(i, v)| (*i, *v)).collect();
        by_size.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then(a.0.cmp(&b.0)));
        let kept: std::collections::HashSet<u32> =
            by_size.iter().take(MAX_FEATURES).map(|(i, _)| *i).collect();
        w = train_on(base, learned, Some(&kept));
    }
    w
}

/// The most features a site model corrects (8 bytes each in the file: 256 KiB).
pub const MAX_FEATURES: usize = 1 << 15;

/// [`train`], updating only the features in `allowed` when given.
fn train_on(
    base: &dyn Fn(&Features) -> f32,
    learned: &[(bool, Features)],
    allowed: Option<&std::collections::HashSet<u32>>,
) -> BTreeMap<u32, f32> {
    let mut w: BTreeMap<u32, f32> = BTreeMap::new();
    let fixed: Vec<f32> = learned.iter().map(|(_, f)| base(f)).collect();
    let ok = |i: &u32| allowed.is_none_or(|a| a.contains(i));
    for _ in 0..MAX_EPOCHS {
        let mut changed = false;
        for ((spam, f), b) in learned.iter().zip(&fixed) {
            let z = b + f
                .terms()
                .map(|(i, x)| w.get(&i).copied().unwrap_or(0.0) * x)
                .sum::<f32>();
            let y = if *spam { 1.0 } else { -1.0 };
            let loss = MARGIN - y * (z - DECISION_LOGIT);
            if loss <= 1e-4 {
                continue;
            }
            // The step is shared by the features in proportion to `share × x²`: header and
            // structure features (the bias, a missing Date, …) are common to much unrelated
            // mail, so they take a small part of it and the message's own words the rest.
            let (t, m) = (norm(f.indices.len()), norm(f.meta.len()));
            let text = f.indices.iter().filter(|i| ok(i)).count() as f32;
            let meta = f.meta.iter().filter(|i| ok(i)).count() as f32;
            let norm2 = text * t * t + META_SHARE * meta * m * m;
            if norm2 <= 1e-9 {
                continue;
            }
            let tau = loss.min(MAX_STEP) / norm2;
            let steps = f.indices.iter().map(|&i| (i, t, 1.0));
            for (i, x, share) in steps.chain(f.meta.iter().map(|&i| (i, m, META_SHARE))) {
                if ok(&i) {
                    *w.entry(i).or_insert(0.0) += tau * y * x * share;
                }
            }
            changed = true;
        }
        if !changed {
            break;
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::extract;

    fn msg(subject: &str, body: &str) -> Vec<u8> {
        format!("From: a@example.org\r\nSubject: {subject}\r\nMessage-ID: <1@example.org>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\n{body}\r\n").into_bytes()
    }

    #[test]
    fn learning_moves_the_message_and_its_likes_past_the_decision_and_forgetting_undoes_it() {
        let spam = extract(&msg(
            "cheap watches",
            "Genuine replica watches at rock bottom prices, order today from our catalogue",
        ));
        let like = extract(&msg(
            "watches for you",
            "Genuine replica watches at rock bottom prices, visit the catalogue",
        ));
        let other = extract(&msg(
            "lunch",
            "Shall we meet at noon by the fountain for lunch tomorrow",
        ));
        let base = |_: &Features| -2.0;
        let w = train(&base, &[(true, spam.clone())]);
        let bytes = to_bytes(&w);
        let site = SiteModel::new(&bytes).unwrap();
        assert!(-2.0 + site.logit(&spam) >= DECISION_LOGIT + MARGIN - 1e-3);
        assert!(
            site.logit(&like) > 2.0,
            "a similar message moves: {}",
            site.logit(&like)
        );
        assert!(site.logit(&other).abs() < site.logit(&like) / 3.0);

        // Learned as ham afterwards: the later judgement wins, the first is not forgotten.
        let both = train(&base, &[(true, spam.clone()), (false, other.clone())]);
        let bytes2 = to_bytes(&both);
        let site2 = SiteModel::new(&bytes2).unwrap();
        assert!(-2.0 + site2.logit(&other) <= DECISION_LOGIT - MARGIN + 1e-3);
        assert!(-2.0 + site2.logit(&spam) > DECISION_LOGIT);

        // Forgetting is replaying the log without the message: exactly the model before.
        assert_eq!(train(&base, &[(true, spam)]), w);
        assert!(train(&base, &[]).is_empty());
    }

    #[test]
    fn the_site_model_is_bounded_and_still_learns_its_messages() {
        // Many distinct messages, each with words of its own: more features than the bound.
        let learned: Vec<(bool, Features)> = (0..60)
            .map(|k| {
                let words: Vec<String> = (0..400).map(|j| format!("w{k}x{j}")).collect();
                (true, extract(&msg("offer", &words.join(" "))))
            })
            .collect();
        let base = |_: &Features| -2.0;
        let w = train(&base, &learned);
        assert!(w.len() <= MAX_FEATURES, "{}", w.len());
        let bytes = to_bytes(&w);
        let site = SiteModel::new(&bytes).unwrap();
        for (_, f) in &learned {
            assert!(
                -2.0 + site.logit(f) > DECISION_LOGIT,
                "every learned message is spam"
            );
        }
    }

    #[test]
    fn a_message_already_judged_right_teaches_nothing() {
        let spam = extract(&msg("x", "buy now"));
        assert!(train(&|_: &Features| 9.0, &[(true, spam)]).is_empty());
    }

    #[test]
    fn corrupt_files_are_refused() {
        let mut w = BTreeMap::new();
        w.insert(5, 1.0);
        w.insert(9, -1.0);
        let b = to_bytes(&w);
        let s = SiteModel::new(&b).unwrap();
        assert_eq!((s.weight(5), s.weight(9), s.weight(7)), (1.0, -1.0, 0.0));
        assert_eq!(
            SiteModel::new(&b[..b.len() - 1]).unwrap_err(),
            SiteModelError::Corrupt
        );
        assert_eq!(
            SiteModel::new(b"nope").unwrap_err(),
            SiteModelError::BadMagic
        );
        let mut swapped = b.clone();
        swapped[20..28].copy_from_slice(&b[28..36]);
        swapped[28..36].copy_from_slice(&b[20..28]);
        assert_eq!(
            SiteModel::new(&swapped).unwrap_err(),
            SiteModelError::Corrupt
        );
    }

    #[test]
    fn models_with_weights_that_are_not_finite_or_bounded_are_refused() {
        for bad in [f32::NAN, f32::INFINITY, -f32::INFINITY, MAX_WEIGHT * 2.0] {
            let bytes = to_bytes(&BTreeMap::from([(3, 0.5), (7, bad)]));
            assert!(
                matches!(SiteModel::new(&bytes), Err(SiteModelError::BadWeight(7, _))),
                "{bad}"
            );
        }
        let fine = to_bytes(&BTreeMap::from([(3, 0.5), (7, -MAX_WEIGHT)]));
        assert!(SiteModel::new(&fine).is_ok());
        let mut too_many = fine.clone();
        too_many[16..20].copy_from_slice(&((MAX_FEATURES + 1) as u32).to_le_bytes());
        assert!(matches!(
            SiteModel::new(&too_many),
            Err(SiteModelError::TooLarge(_))
        ));
    }
}
