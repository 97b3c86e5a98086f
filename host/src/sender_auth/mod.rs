//! Sender authentication: SPF at MAIL FROM (the HELO and MAIL FROM identities), DKIM and
//! DMARC after DATA, summed up in one `Authentication-Results:` field (RFC 8601) and handed to
//! plugins; and DKIM signing of the mail our own users send out.
//!
//! The checks themselves are `mail-auth`'s. This module holds its resolver (hickory, with its
//! cache and a per-query timeout), turns its outputs into plain [`Results`] that logs, the
//! replay harness and the WIT can carry, applies a listener's DMARC policy, and loads the
//! signing keys.
//!
//! May use: `mail-auth`, the DNS settings of the configuration and the shared vocabulary. Used
//! by the inbound core and the replay harness.

pub mod arc;
pub mod dkim_key;
pub mod dmarc_report;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{DkimSigner, Done};
use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    ArcOutput, AuthenticatedMessage, AuthenticationResults, DkimOutput, DkimResult, DmarcOutput,
    DmarcResult, MessageAuthenticator, SpfOutput, SpfResult,
};
use serde::{Deserialize, Serialize};

use crate::config::{Config, DmarcMode};
use crate::envelope::Decision;
use crate::smtp::reply::Reply;

/// The result of one check, by RFC 8601's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Authenticated.
    Pass,
    /// Explicitly not authorised (or a signature that does not verify).
    Fail,
    /// SPF `~all`: probably not authorised.
    Softfail,
    /// No statement either way.
    Neutral,
    /// Nothing to check (no record, no signature).
    None,
    /// A temporary DNS failure: try again later.
    Temperror,
    /// A broken record (or too many DNS lookups).
    Permerror,
}

impl Status {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Softfail => "softfail",
            Status::Neutral => "neutral",
            Status::None => "none",
            Status::Temperror => "temperror",
            Status::Permerror => "permerror",
        }
    }

    fn of_spf(r: SpfResult) -> Status {
        match r {
            SpfResult::Pass => Status::Pass,
            SpfResult::Fail => Status::Fail,
            SpfResult::SoftFail => Status::Softfail,
            SpfResult::Neutral => Status::Neutral,
            SpfResult::TempError => Status::Temperror,
            SpfResult::PermError => Status::Permerror,
            SpfResult::None => Status::None,
        }
    }

    fn of_dkim(r: &DkimResult) -> Status {
        match r {
            DkimResult::Pass => Status::Pass,
            DkimResult::Neutral(_) => Status::Neutral,
            DkimResult::Fail(_) => Status::Fail,
            DkimResult::PermError(_) => Status::Permerror,
            DkimResult::TempError(_) => Status::Temperror,
            DkimResult::None => Status::None,
        }
    }

    fn of_dmarc(r: &DmarcResult) -> Status {
        match r {
            DmarcResult::Pass => Status::Pass,
            DmarcResult::Fail(_) => Status::Fail,
            DmarcResult::TempError(_) => Status::Temperror,
            DmarcResult::PermError(_) => Status::Permerror,
            DmarcResult::None => Status::None,
        }
    }
}

/// SPF for one identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpfCheck {
    /// The result.
    pub verdict: Status,
    /// The domain whose record was checked.
    pub domain: String,
}

/// One DKIM signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DkimCheck {
    /// The result.
    pub verdict: Status,
    /// The signing domain (`d=`).
    pub domain: String,
    /// The selector (`s=`).
    pub selector: String,
    /// Why it did not pass, if it did not.
    pub detail: String,
}

/// DMARC for the domain of the From header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DmarcCheck {
    /// The result: pass when SPF or DKIM passed aligned with the From domain.
    pub verdict: Status,
    /// The From domain.
    pub domain: String,
    /// The domain's policy: `none`, `quarantine`, `reject`, or `unspecified` without a record.
    pub policy: String,
}

/// Everything known about the sender of a transaction so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// SPF of the HELO name.
    pub spf_helo: Option<SpfCheck>,
    /// SPF of the MAIL FROM domain (of the HELO name for `<>`).
    pub spf_mail_from: Option<SpfCheck>,
    /// Every DKIM signature, in order (after DATA).
    pub dkim: Vec<DkimCheck>,
    /// DMARC (after DATA).
    pub dmarc: Option<DmarcCheck>,
    /// The ARC chain (after DATA).
    #[serde(default)]
    pub arc: Option<arc::ArcCheck>,
    /// The `Authentication-Results:` field Sluice adds (after DATA), CRLF-terminated.
    pub header: String,
}

/// What the MAIL FROM checks produced, kept for the checks after DATA.
#[derive(Debug, Clone)]
pub struct SenderChecks {
    ip: IpAddr,
    helo: String,
    mail_from: String,
    spf_helo: SpfOutput,
    spf_mail_from: SpfOutput,
}

impl SenderChecks {
    /// `ar` with the SPF results of both identities added.
    fn spf_results<'a>(&self, ar: AuthenticationResults<'a>) -> AuthenticationResults<'a> {
        ar.with_spf_ehlo_result(&self.spf_helo, self.ip, &self.helo)
            .with_spf_mailfrom_result(&self.spf_mail_from, self.ip, &self.mail_from, &self.helo)
    }

    /// The domain DMARC aligns SPF with: MAIL FROM's, or the HELO name's for `<>`.
    fn mail_from_domain(&self) -> &str {
        self.mail_from
            .rsplit_once('@')
            .map_or(self.helo.as_str(), |(_, d)| d)
    }

    /// The plain results (SPF only).
    pub fn results(&self) -> Results {
        Results {
            spf_helo: Some(spf_check(&self.spf_helo)),
            spf_mail_from: Some(spf_check(&self.spf_mail_from)),
            ..Results::default()
        }
    }
}

fn spf_check(o: &SpfOutput) -> SpfCheck {
    SpfCheck {
        verdict: Status::of_spf(o.result()),
        domain: o.domain().to_string(),
    }
}

/// A problem with the `[authentication]` configuration, found at start-up or reload.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// A DKIM key file could not be read or is not a usable key.
    #[error("authentication.dkim_key for {domain}: {path}: {problem}")]
    Key {
        /// The domain the key signs for.
        domain: String,
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

enum Signer {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

/// The header fields signed, when present (RFC 6376 §5.4.1's recommendations).
const SIGNED_HEADERS: [&str; 12] = [
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

/// The verifier and the signing keys of the configuration in force.
pub struct Authenticator {
    hostname: String,
    verify: bool,
    checker: Result<MessageAuthenticator, String>,
    signers: BTreeMap<String, Signer>,
    sealer: Option<arc::Sealer>,
    /// Where DMARC results are counted for aggregate reports (`[reports] dmarc`).
    reports: Option<Arc<dmarc_report::DmarcReports>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("verify", &self.verify)
            .field("signing_domains", &self.signers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Authenticator {
    /// Builds the resolver and loads every signing key of `config`.
    pub fn new(config: &Config) -> Result<Authenticator, AuthConfigError> {
        let a = &config.authentication;
        let mut opts = ResolverOpts::default();
        opts.timeout = Duration::from_secs(a.dns_timeout_secs.max(1));
        opts.attempts = 1;
        // DKIM keys are long TXT records: ask for EDNS0 so they come over UDP.
        opts.edns0 = true;
        let checker = match a.resolver.as_deref().map(crate::config::resolver_addr) {
            Some(Some(addr)) => {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut ns.connections {
                    c.port = addr.port();
                }
                MessageAuthenticator::new(ResolverConfig::from_name_servers(vec![ns]), opts)
                    .map_err(|e| e.to_string())
            }
            // Validation already refused it; keep the server up and report temperror.
            Some(None) => Err("authentication.resolver is not an address".to_string()),
            None => mail_auth::hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| e.to_string())
                .and_then(|(c, _)| MessageAuthenticator::new(c, opts).map_err(|e| e.to_string())),
        };
        let mut signers = BTreeMap::new();
        for k in &a.dkim_keys {
            let signer = load_signer(&k.key, &k.domain, &k.selector).map_err(|problem| {
                AuthConfigError::Key {
                    domain: k.domain.clone(),
                    path: k.key.clone(),
                    problem,
                }
            })?;
            signers.insert(k.domain.to_ascii_lowercase(), signer);
        }
        let sealer = match &a.arc_seal {
            Some(c) => Some(
                arc::Sealer::load(c).map_err(|problem| AuthConfigError::Key {
                    domain: c.domain.clone(),
                    path: c.key.clone(),
                    problem,
                })?,
            ),
            None => None,
        };
        Ok(Authenticator {
            hostname: config.server.hostname.clone(),
            verify: a.verify,
            checker,
            signers,
            sealer,
            reports: None,
        })
    }

    /// Counts the DMARC results of inbound mail into `reports` (aggregate reports).
    pub fn with_reports(mut self, reports: Option<Arc<dmarc_report::DmarcReports>>) -> Self {
        self.reports = reports;
        self
    }

    /// True when inbound mail is verified at all.
    pub fn verifies(&self) -> bool {
        self.verify
    }

    /// SPF for the HELO name and the MAIL FROM address of a client at `ip`.
    pub async fn check_sender(&self, ip: IpAddr, helo: &str, mail_from: &str) -> SenderChecks {
        let (spf_helo, spf_mail_from) = match &self.checker {
            Ok(c) => {
                let h = c
                    .verify_spf(SpfParameters::verify_ehlo(ip, helo, &self.hostname))
                    .await;
                let m = c
                    .verify_spf(SpfParameters::verify_mail_from(
                        ip,
                        helo,
                        &self.hostname,
                        mail_from,
                    ))
                    .await;
                (h, m)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no DNS resolver for SPF: temperror");
                let domain = mail_from.rsplit_once('@').map_or(helo, |(_, d)| d);
                (
                    SpfOutput::new(helo.to_string()).with_result(SpfResult::TempError),
                    SpfOutput::new(domain.to_string()).with_result(SpfResult::TempError),
                )
            }
        };
        SenderChecks {
            ip,
            helo: helo.to_string(),
            mail_from: mail_from.to_string(),
            spf_helo,
            spf_mail_from,
        }
    }

    /// DKIM and DMARC for the message `raw`, completing `sender`'s results, with the
    /// `Authentication-Results:` field.
    pub async fn check_message(&self, raw: &[u8], sender: &SenderChecks) -> Results {
        let mut results = sender.results();
        let Some(message) = AuthenticatedMessage::parse(raw) else {
            results.header = sender
                .spf_results(AuthenticationResults::new(&self.hostname))
                .to_header();
            return results;
        };
        let Ok(checker) = &self.checker else {
            results.dmarc = Some(DmarcCheck {
                verdict: Status::Temperror,
                domain: message.from().to_string(),
                policy: "unspecified".into(),
            });
            return results;
        };
        let (dkim, arc, dmarc) = verify(checker, &message, sender).await;
        results.arc = Some(arc::ArcCheck::of(&arc));
        let mail_from_domain = sender.mail_from_domain();
        results.dkim = dkim
            .iter()
            .map(|o| DkimCheck {
                verdict: Status::of_dkim(o.result()),
                domain: o.signature().map(|s| s.d.clone()).unwrap_or_default(),
                selector: o.signature().map(|s| s.s.clone()).unwrap_or_default(),
                detail: match o.result() {
                    DkimResult::Pass | DkimResult::None => String::new(),
                    DkimResult::Neutral(e)
                    | DkimResult::Fail(e)
                    | DkimResult::PermError(e)
                    | DkimResult::TempError(e) => e.to_string(),
                },
            })
            .collect();
        if let (Some(reports), Some(record)) = (&self.reports, dmarc.dmarc_record())
            && !record.rua.is_empty()
        {
            let row = mail_auth::report::Record::new()
                .with_dkim_output(&dkim)
                .with_spf_output(
                    &sender.spf_mail_from,
                    mail_auth::report::SPFDomainScope::MailFrom,
                )
                .with_dmarc_output(&dmarc)
                .with_source_ip(sender.ip)
                .with_header_from(dmarc.domain())
                .with_envelope_from(mail_from_domain);
            reports.record(
                dmarc.domain(),
                mail_auth::report::PolicyPublished::from_record(dmarc.domain(), record),
                record.rua.iter().map(|u| u.uri.clone()).collect(),
                row,
            );
        }
        let verdict = dmarc_verdict(
            dmarc.spf_result(),
            dmarc.dkim_result(),
            dmarc.dmarc_record().is_some(),
        );
        results.dmarc = (!dmarc.domain().is_empty()).then(|| DmarcCheck {
            verdict,
            domain: dmarc.domain().to_string(),
            policy: match (dmarc.dmarc_record(), dmarc.policy()) {
                (None, _) | (_, Policy::Unspecified) => "unspecified",
                (_, Policy::None) => "none",
                (_, Policy::Quarantine) => "quarantine",
                (_, Policy::Reject) => "reject",
            }
            .to_string(),
        });
        results.header = self
            .results_of(sender, &message, &dkim, &arc, &dmarc)
            .to_header();
        results
    }

    /// The `Authentication-Results:` of a message's checks.
    fn results_of<'a>(
        &'a self,
        sender: &SenderChecks,
        message: &AuthenticatedMessage<'_>,
        dkim: &[DkimOutput<'_>],
        arc: &ArcOutput<'_>,
        dmarc: &DmarcOutput,
    ) -> AuthenticationResults<'a> {
        sender
            .spf_results(
                AuthenticationResults::new(&self.hostname).with_dkim_results(dkim, message.from()),
            )
            .with_arc_result(arc, sender.ip)
            .with_dmarc_result(dmarc)
    }

    /// Our ARC set (`[authentication.arc_seal]`) for `final_message`, the message as we pass
    /// it on, from the checks of `raw`, the message as it came (their results, and its chain
    /// as it arrived); `None` when sealing is off. The checks are made again (their DNS
    /// answers are cached): `mail-auth`'s results borrow the message they checked.
    pub async fn seal(
        &self,
        raw: &[u8],
        final_message: &[u8],
        sender: &SenderChecks,
    ) -> Option<Result<String, String>> {
        let sealer = self.sealer.as_ref()?;
        let Ok(checker) = &self.checker else {
            return Some(Err("no DNS resolver for the checks".to_string()));
        };
        let Some(message) = AuthenticatedMessage::parse(raw) else {
            return Some(Err("the message cannot be parsed".to_string()));
        };
        let (dkim, arc, dmarc) = verify(checker, &message, sender).await;
        let results = self.results_of(sender, &message, &dkim, &arc, &dmarc);
        Some(sealer.seal(final_message, &results, &arc))
    }

    /// A `DKIM-Signature:` field for `message` (CRLF-terminated) with the key of the From
    /// domain, or else of `envelope_domain`; `None` without a key for either.
    pub fn sign(
        &self,
        message: &[u8],
        may_send_as: impl Fn(&str) -> bool,
    ) -> Option<Result<String, SignRefusal>> {
        let Some(from) = from_address(message) else {
            // No From, or several: nothing to vouch for, unless we hold no key at all.
            return (!self.signers.is_empty()).then_some(Err(SignRefusal::NoSingleFrom));
        };
        let domain = from.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase())?;
        let signer = self.signers.get(&domain)?;
        if !may_send_as(&from) {
            return Some(Err(SignRefusal::NotOwned(from)));
        }
        Some(sign_with(signer, message).map_err(SignRefusal::Failed))
    }

    /// Signs with the key of `domain`, whatever the message's From says: `None` without a key
    /// for it. For tools and tests that need a signature of their choosing (an unaligned one,
    /// say); the relay signs only through [`Authenticator::sign`].
    pub fn sign_as(&self, message: &[u8], domain: &str) -> Option<Result<String, String>> {
        let signer = self.signers.get(&domain.to_ascii_lowercase())?;
        Some(sign_with(signer, message))
    }
}

/// DKIM, ARC and DMARC of `message`.
async fn verify<'x>(
    checker: &MessageAuthenticator,
    message: &'x AuthenticatedMessage<'x>,
    sender: &SenderChecks,
) -> (Vec<DkimOutput<'x>>, ArcOutput<'x>, DmarcOutput) {
    let dkim = checker.verify_dkim(message).await;
    let arc = checker.verify_arc(message).await;
    let dmarc = checker
        .verify_dmarc(DmarcParameters::new(
            message,
            &dkim,
            sender.mail_from_domain(),
            &sender.spf_mail_from,
        ))
        .await;
    (dkim, arc, dmarc)
}

fn sign_with(signer: &Signer, message: &[u8]) -> Result<String, String> {
    let signed = match signer {
        Signer::Rsa(s) => s.sign(message),
        Signer::Ed25519(s) => s.sign(message),
    };
    signed.map(|s| s.to_header()).map_err(|e| e.to_string())
}

/// Why a message we hold a key for was not signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignRefusal {
    /// The header From is not an address the sender may send as: signing would vouch for
    /// a forgery.
    #[error("the From address {0} is not one this sender may send as")]
    NotOwned(String),
    /// The message has no From address, or more than one.
    #[error("the message has no single From address")]
    NoSingleFrom,
    /// The signer failed.
    #[error("signing failed: {0}")]
    Failed(String),
}

/// DMARC passes when SPF or DKIM passed aligned with the From domain. Otherwise a temporary
/// failure (of the DMARC record's lookup, say) is a temperror — the message may pass on
/// retry — and a domain that publishes a record fails; without a record there is nothing to
/// fail (`mail-auth` leaves both results at none when neither check passed at all).
fn dmarc_verdict(spf: &DmarcResult, dkim: &DmarcResult, has_record: bool) -> Status {
    let (s, d) = (Status::of_dmarc(spf), Status::of_dmarc(dkim));
    if s == Status::Pass || d == Status::Pass {
        Status::Pass
    } else if s == Status::Temperror || d == Status::Temperror {
        Status::Temperror
    } else if has_record {
        Status::Fail
    } else if s == Status::Permerror || d == Status::Permerror {
        Status::Permerror
    } else {
        Status::None
    }
}

/// The domain of the first address of the From header, lower-cased.
/// The one address of the message's From field; `None` when it has none or several.
fn from_address(message: &[u8]) -> Option<String> {
    static PARSER: std::sync::LazyLock<mail_parser::MessageParser> =
        std::sync::LazyLock::new(|| {
            mail_parser::MessageParser::new()
                .header_address(mail_parser::HeaderName::From)
                .default_header_ignore()
        });
    let parsed = PARSER.parse_headers(message)?;
    let from = parsed.from()?;
    let mut all = from.iter();
    let first = all.next()?.address()?.to_string();
    if all.next().is_some() || crate::inbound::message::count_fields(message, "From") != 1 {
        return None;
    }
    Some(first)
}

/// What a listener's DMARC policy makes of `results`: `None` to go on.
pub fn policy_decision(mode: DmarcMode, results: &Results) -> Option<Decision> {
    if mode == DmarcMode::Record {
        return None;
    }
    let dmarc = results.dmarc.as_ref()?;
    match (dmarc.verdict, dmarc.policy.as_str()) {
        (Status::Fail, "reject") => Some(Decision::Reject {
            reply: Reply::new(
                550,
                "5.7.1",
                &format!(
                    "Message rejected: it fails the DMARC policy of {} (p=reject)",
                    dmarc.domain
                ),
            ),
        }),
        (Status::Fail, "quarantine") => Some(Decision::Quarantine {
            reason: format!("DMARC policy of {} (p=quarantine)", dmarc.domain),
        }),
        (Status::Temperror, _) => Some(Decision::Tempfail {
            reply: Reply::new(
                451,
                "4.7.1",
                &format!(
                    "Temporary DNS failure checking DMARC for {}, try again later",
                    dmarc.domain
                ),
            ),
        }),
        _ => None,
    }
}

/// A signer for `domain` and `selector` with the key in `path`.
fn load_signer(path: &Path, domain: &str, selector: &str) -> Result<Signer, String> {
    Ok(match crate::sender_auth::dkim_key::load(path)? {
        crate::sender_auth::dkim_key::DkimKey::Ed25519(ed) => Signer::Ed25519(
            DkimSigner::from_key(ed)
                .domain(domain)
                .selector(selector)
                .headers(SIGNED_HEADERS),
        ),
        crate::sender_auth::dkim_key::DkimKey::Rsa(rsa) => Signer::Rsa(
            DkimSigner::from_key(rsa)
                .domain(domain)
                .selector(selector)
                .headers(SIGNED_HEADERS),
        ),
    })
}

/// `sluice dkim keygen`: a new key pair. Returns the private key as PEM and the DNS TXT
/// record to publish at `SELECTOR._domainkey.DOMAIN`.
pub fn keygen(ed25519: bool) -> Result<(String, String), String> {
    use mail_auth::dkim::generate::DkimKeyPair;
    let (pair, label, algo) = if ed25519 {
        (DkimKeyPair::generate_ed25519(), "PRIVATE KEY", "ed25519")
    } else {
        (DkimKeyPair::generate_rsa(2048), "RSA PRIVATE KEY", "rsa")
    };
    let pair = pair.map_err(|e| e.to_string())?;
    let pem = pem_encode(label, pair.private_key());
    let record = format!("v=DKIM1; k={algo}; p={}", pair.encoded_public_key());
    Ok((pem, record))
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dmarc(verdict: Status, policy: &str) -> Results {
        Results {
            dmarc: Some(DmarcCheck {
                verdict,
                domain: "example.com".into(),
                policy: policy.into(),
            }),
            ..Results::default()
        }
    }

    #[test]
    fn dmarc_needs_an_aligned_pass_and_fails_only_with_a_record() {
        let fail = DmarcResult::Fail(mail_auth::Error::NotAligned);
        let temp = DmarcResult::TempError(mail_auth::Error::NotAligned);
        let none = DmarcResult::None;
        assert_eq!(dmarc_verdict(&DmarcResult::Pass, &fail, true), Status::Pass);
        assert_eq!(dmarc_verdict(&fail, &DmarcResult::Pass, true), Status::Pass);
        assert_eq!(dmarc_verdict(&none, &none, true), Status::Fail);
        assert_eq!(dmarc_verdict(&fail, &none, true), Status::Fail);
        assert_eq!(dmarc_verdict(&none, &none, false), Status::None);
        assert_eq!(dmarc_verdict(&temp, &none, false), Status::Temperror);
    }

    #[test]
    fn the_listener_policy_applies_the_domain_policy_only_when_enforcing() {
        let reject = dmarc(Status::Fail, "reject");
        assert_eq!(policy_decision(DmarcMode::Record, &reject), None);
        match policy_decision(DmarcMode::Enforce, &reject) {
            Some(Decision::Reject { reply }) => {
                assert_eq!((reply.code, reply.enhanced.as_str()), (550, "5.7.1"));
                assert!(reply.text.contains("example.com"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            policy_decision(DmarcMode::Enforce, &dmarc(Status::Fail, "quarantine")),
            Some(Decision::Quarantine { .. })
        ));
        assert_eq!(
            policy_decision(DmarcMode::Enforce, &dmarc(Status::Fail, "none")),
            None
        );
        assert_eq!(
            policy_decision(DmarcMode::Enforce, &dmarc(Status::Pass, "reject")),
            None
        );
        match policy_decision(DmarcMode::Enforce, &dmarc(Status::Temperror, "unspecified")) {
            Some(Decision::Tempfail { reply }) => {
                assert_eq!((reply.code, reply.enhanced.as_str()), (451, "4.7.1"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            policy_decision(DmarcMode::Enforce, &Results::default()),
            None
        );
    }

    #[test]
    fn generated_keys_load_and_sign() {
        let dir = tempfile::tempdir().unwrap();
        for ed25519 in [true, false] {
            let (pem, record) = keygen(ed25519).unwrap();
            assert!(record.starts_with(if ed25519 {
                "v=DKIM1; k=ed25519; p="
            } else {
                "v=DKIM1; k=rsa; p="
            }));
            let path = dir.path().join(format!("{ed25519}.key"));
            std::fs::write(&path, pem).unwrap();
            crate::sender_auth::dkim_key::load(&path).unwrap();
        }
        let junk = dir.path().join("junk.key");
        std::fs::write(&junk, "not a key").unwrap();
        assert!(crate::sender_auth::dkim_key::load(&junk).is_err());
    }
}
