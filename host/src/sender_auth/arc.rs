//! ARC (RFC 8617), with `mail-auth`: the verdict on a message's chain of ARC sets, which
//! plugins read (`authentication.arc`, WIT 0.1.4), and our own ARC set, sealed on mail we
//! relay with `[authentication.arc_seal]`'s key: the results we saw (`ARC-Authentication-
//! Results`), a signature of the message as we pass it on (`ARC-Message-Signature`) and the
//! seal over the whole chain (`ARC-Seal`), so the next hop can trust what we saw where our
//! changes (added header fields, a plugin's edits) break the original DKIM signatures.

use mail_auth::arc::ArcSealer;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter as _;
use mail_auth::dkim::Done;
use mail_auth::{ArcOutput, AuthenticatedMessage, AuthenticationResults, DkimResult};
use serde::{Deserialize, Serialize};

use super::Status;
use crate::config::ArcSealConfig;

/// The verdict on a message's ARC chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArcCheck {
    /// pass, fail, none (no ARC sets), temperror or permerror.
    pub verdict: Status,
    /// How many sets the message carries.
    pub sets: u32,
    /// The sealing domain of each set, oldest first.
    pub domains: Vec<String>,
    /// Why it did not pass (empty when it did, or without a chain).
    pub detail: String,
}

impl ArcCheck {
    /// The verdict `mail-auth` reached.
    pub fn of(o: &ArcOutput<'_>) -> ArcCheck {
        let detail = match o.result() {
            DkimResult::Pass | DkimResult::None => String::new(),
            DkimResult::Neutral(e)
            | DkimResult::Fail(e)
            | DkimResult::PermError(e)
            | DkimResult::TempError(e) => e.to_string(),
        };
        ArcCheck {
            verdict: Status::of_dkim(o.result()),
            sets: u32::try_from(o.sets().len()).unwrap_or(u32::MAX),
            domains: o.sets().iter().map(|s| s.seal.header.d.clone()).collect(),
            detail,
        }
    }
}

/// The header fields our message signature covers, when present: those a DKIM signature of
/// ours covers, and the signatures the message arrived with.
fn signed() -> impl Iterator<Item = &'static str> {
    super::SIGNED_HEADERS
        .into_iter()
        .chain(std::iter::once("DKIM-Signature"))
}

/// Our ARC sealer: the configured domain, selector and key.
pub enum Sealer {
    /// An RSA key (SHA-256).
    Rsa(ArcSealer<RsaKey<Sha256>, Done>),
    /// An Ed25519 key.
    Ed25519(ArcSealer<Ed25519Key, Done>),
}

impl Sealer {
    /// The sealer of `[authentication.arc_seal]`.
    pub fn load(c: &ArcSealConfig) -> Result<Sealer, String> {
        Ok(match super::dkim_key::load(&c.key)? {
            super::dkim_key::DkimKey::Rsa(k) => Sealer::Rsa(
                ArcSealer::from_key(k)
                    .domain(c.domain.as_str())
                    .selector(c.selector.as_str())
                    .headers(signed()),
            ),
            super::dkim_key::DkimKey::Ed25519(k) => Sealer::Ed25519(
                ArcSealer::from_key(k)
                    .domain(c.domain.as_str())
                    .selector(c.selector.as_str())
                    .headers(signed()),
            ),
        })
    }

    /// Our ARC set for `message` (as we pass it on), carrying `results` and sealing the chain
    /// `chain` verified on arrival: three CRLF-terminated fields, to go on top. A chain that
    /// failed at an earlier hop is not sealed (RFC 8617 §5.1.2: it could not be repaired).
    pub fn seal(
        &self,
        message: &[u8],
        results: &AuthenticationResults<'_>,
        chain: &ArcOutput<'_>,
    ) -> Result<String, String> {
        if !chain.can_be_sealed() {
            return Err("an earlier hop sealed the chain as failed (cv=fail)".to_string());
        }
        let message = AuthenticatedMessage::parse(message)
            .ok_or_else(|| "the message cannot be parsed".to_string())?;
        let set = match self {
            Sealer::Rsa(s) => s.seal(&message, results, chain),
            Sealer::Ed25519(s) => s.seal(&message, results, chain),
        };
        set.map(|s| s.to_header()).map_err(|e| e.to_string())
    }
}
