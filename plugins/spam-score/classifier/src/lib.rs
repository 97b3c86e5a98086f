//! The classifier of Sluice's spam-score plugin, shared by the plugin (in the sandbox) and the
//! native `sluice-spam` tool that trains and evaluates models.
//!
//! - [`features`]: what a message is turned into — hashed word unigrams and orthogonal sparse
//!   bigrams (OSB, as in CRM114) of the decoded subject and body, plus a few header and
//!   structure tokens. Headers stamped by filters and archives (`X-Spam-*`, `X-Keywords`, …)
//!   are never read.
//! - [`model`]: a logistic-regression weight vector over the hashed features, its file format,
//!   and scoring.
//! - [`train`]: training (Adagrad-SGD over shuffled epochs) and k-fold evaluation.

pub mod features;
pub mod files;
pub mod model;
pub mod site;
pub mod train;
pub mod trust;
