//! Certificates from an ACME CA (RFC 8555, with `instant-acme`): the account and the
//! certificate kept in `<data_dir>/acme/` (owner-only), when the certificate is due for
//! renewal ([`Acme::due`]), and one order from start to finish ([`Acme::obtain`]), answered by
//! TLS-ALPN-01 or HTTP-01 through [`Challenges`]. The certificate and its key are one PEM file,
//! replaced by a rename, so the certificate watcher never reads a new key beside an old
//! certificate. When to order and what to do after is the server's (`server::acme`).

pub mod challenges;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};

use super::{CertSource, TlsError};
use crate::config::{AcmeChallenge, AcmeConfig, Config};
pub use challenges::Challenges;

/// Why an order did not give a certificate.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The CA answered with a problem, or could not be reached.
    #[error("{0}")]
    Ca(#[from] instant_acme::Error),
    /// The CA refused the order or a check of a name.
    #[error("the CA refused the order: {0}")]
    Refused(String),
    /// The CA offers no challenge Sluice is configured to answer.
    #[error("the CA offers no {0} challenge for {1}")]
    NoChallenge(&'static str, String),
    /// The account or certificate file could not be read or written, or the certificate
    /// did not load.
    #[error("{0}")]
    Files(#[from] TlsError),
}

/// The account as kept: its credentials are good for the directory they were made on only.
#[derive(Serialize, Deserialize)]
struct KeptAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// When the certificate should be ordered again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Now, and why.
    Now(&'static str),
    /// At this time; the certificate in service expires at `expires`.
    At {
        /// When to order.
        renew: SystemTime,
        /// When the certificate expires.
        expires: SystemTime,
    },
}

/// The ACME certificate of a configuration.
#[derive(Debug, Clone)]
pub struct Acme {
    config: AcmeConfig,
    names: Vec<String>,
    dir: PathBuf,
}

impl Acme {
    /// The ACME certificate `config` asks for, if any.
    pub fn new(config: &Config) -> Option<Acme> {
        let acme = config.tls.acme.clone()?;
        let names = if acme.names.is_empty() {
            vec![config.server.hostname.clone()]
        } else {
            acme.names.clone()
        };
        Some(Acme {
            names: names.iter().map(|n| n.to_ascii_lowercase()).collect(),
            config: acme,
            dir: config.server.data_dir.join("acme"),
        })
    }

    /// The names the certificate covers.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The certificate and its key (one PEM file).
    pub fn pem_path(&self) -> PathBuf {
        self.dir.join("certificate.pem")
    }

    fn account_path(&self) -> PathBuf {
        self.dir.join("account.json")
    }

    /// What the server serves for the names: the file from the CA, or, before the first one
    /// arrives, a self-signed stand-in written in its place (renewed at once).
    pub fn source(&self) -> Result<CertSource, TlsError> {
        let pem = self.pem_path();
        if !pem.is_file() {
            let made = rcgen::generate_simple_self_signed(self.names.clone())?;
            let text = format!("{}{}", made.cert.pem(), made.signing_key.serialize_pem());
            write_private(&pem, text.as_bytes())?;
        }
        Ok(CertSource {
            cert: pem.clone(),
            key: pem,
            names: self.names.clone(),
        })
    }

    /// When the certificate on disk should be ordered again: now when there is none from the
    /// CA (the stand-in is self-signed), when it lacks a configured name, or when
    /// `renew_before_days` are left — or a third of its lifetime, if that is less (a
    /// short-lived certificate).
    pub fn due(&self, now: SystemTime) -> Due {
        let Ok(pem) = std::fs::read(self.pem_path()) else {
            return Due::Now("no certificate yet");
        };
        due(
            &pem,
            &self.names,
            Duration::from_secs(u64::from(self.config.renew_before_days) * 86_400),
            now,
        )
    }

    /// Orders a certificate for the names and, once the CA issued it, puts it in place of the
    /// one on disk. Answers the CA's checks through `challenges` meanwhile. Returns when the
    /// new certificate expires. The caller bounds the time it may take.
    pub async fn obtain(&self, challenges: &Challenges) -> Result<SystemTime, AcmeError> {
        let mut outcome = self.order(challenges).await;
        challenges.clear();
        // An account the CA no longer knows (deactivated, or the CA's data reset): a new one,
        // and the order once more.
        if let Err(AcmeError::Ca(instant_acme::Error::Api(problem))) = &outcome
            && problem
                .r#type
                .as_deref()
                .is_some_and(|t| t.ends_with(":accountDoesNotExist"))
        {
            tracing::info!("ACME: the CA does not know the kept account; opening a new one");
            let _ = std::fs::remove_file(self.account_path());
            outcome = self.order(challenges).await;
            challenges.clear();
        }
        outcome
    }

    async fn order(&self, challenges: &Challenges) -> Result<SystemTime, AcmeError> {
        let account = self.account().await?;
        let identifiers: Vec<Identifier> = self
            .names
            .iter()
            .map(|n| Identifier::Dns(n.clone()))
            .collect();
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
        let kind = match self.config.challenge {
            AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            AcmeChallenge::Http01 => ChallengeType::Http01,
        };
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization?;
            match authorization.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(AcmeError::Refused(format!(
                        "the authorization for {} is {other:?}",
                        authorization.identifier()
                    )));
                }
            }
            let name = authorization.identifier().to_string();
            let Some(mut challenge) = authorization.challenge(kind.clone()) else {
                return Err(AcmeError::NoChallenge(challenge_name(&kind), name));
            };
            let key_authorization = challenge.key_authorization();
            match kind {
                ChallengeType::TlsAlpn01 => {
                    challenges.add_tls_alpn(&name, key_authorization.digest().as_ref())?
                }
                _ => challenges.add_http(&challenge.token, key_authorization.as_str()),
            }
            challenge.set_ready().await?;
        }
        let patience = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .timeout(Duration::from_secs(120));
        match order.poll_ready(&patience).await? {
            OrderStatus::Ready => {}
            status => {
                let why = order
                    .state()
                    .error
                    .as_ref()
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| format!("the order is {status:?}"));
                return Err(AcmeError::Refused(why));
            }
        }
        let key = rcgen::KeyPair::generate().map_err(TlsError::from)?;
        let mut params =
            rcgen::CertificateParams::new(self.names.clone()).map_err(TlsError::from)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, self.names[0].as_str());
        let csr = params.serialize_request(&key).map_err(TlsError::from)?;
        order.finalize_csr(csr.der()).await?;
        let chain = order.poll_certificate(&patience).await?;
        let text = format!("{chain}{}", key.serialize_pem());
        // Checked before it replaces the certificate in service: the chain parses, matches
        // the key and names what was asked.
        let expires = match due(
            text.as_bytes(),
            &self.names,
            Duration::ZERO,
            SystemTime::now(),
        ) {
            Due::At { expires, .. } => expires,
            Due::Now(why) => {
                return Err(AcmeError::Refused(format!(
                    "the certificate the CA issued is unusable: {why}"
                )));
            }
        };
        let staged = self.dir.join(".issued.pem");
        write_private(&staged, text.as_bytes())?;
        let loaded = super::certificates::load(&CertSource {
            cert: staged.clone(),
            key: staged.clone(),
            names: Vec::new(),
        });
        if let Err(e) = loaded {
            let _ = std::fs::remove_file(&staged);
            return Err(e.into());
        }
        std::fs::rename(&staged, self.pem_path()).map_err(super::io(&staged))?;
        Ok(expires)
    }

    /// The account on the configured directory: the kept one, or a new one (then kept).
    async fn account(&self) -> Result<Account, AcmeError> {
        let path = self.account_path();
        let kept = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<KeptAccount>(&b).ok())
            .filter(|k| k.directory == self.config.directory);
        if let Some(kept) = kept {
            return Ok(self.builder()?.from_credentials(kept.credentials).await?);
        }
        let contact: Vec<&str> = self.config.contact.iter().map(String::as_str).collect();
        let (account, credentials) = self
            .builder()?
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: self.config.terms_agreed,
                    only_return_existing: false,
                },
                self.config.directory.clone(),
                None,
            )
            .await?;
        let kept = KeptAccount {
            directory: self.config.directory.clone(),
            credentials,
        };
        let json = serde_json::to_vec_pretty(&kept).map_err(|e| {
            AcmeError::Files(TlsError::Io {
                path: path.clone(),
                source: e.into(),
            })
        })?;
        write_private(&path, &json)?;
        Ok(account)
    }

    fn builder(&self) -> Result<instant_acme::AccountBuilder, AcmeError> {
        Ok(match &self.config.ca_file {
            Some(ca) => Account::builder_with_root(ca)?,
            None => Account::builder()?,
        })
    }
}

fn challenge_name(kind: &ChallengeType) -> &'static str {
    match kind {
        ChallengeType::TlsAlpn01 => "tls-alpn-01",
        _ => "http-01",
    }
}

/// Writes `data` owner-only into the ACME directory (made owner-only).
fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    if let Some(dir) = path.parent() {
        crate::private_files::create_private_dir(dir).map_err(super::io(dir))?;
    }
    super::write_private(path, data)
}

/// When the certificate in `pem` (its first) should be ordered again (see [`Acme::due`]).
fn due(pem: &[u8], names: &[String], renew_before: Duration, now: SystemTime) -> Due {
    let Ok((_, block)) = x509_parser::pem::parse_x509_pem(pem) else {
        return Due::Now("the certificate file does not parse");
    };
    let Ok(cert) = block.parse_x509() else {
        return Due::Now("the certificate file does not parse");
    };
    if cert.issuer() == cert.subject() {
        return Due::Now("no certificate from the CA yet");
    }
    let covered: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => {
                        Some(d.to_ascii_lowercase())
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names.iter().any(|n| !covered.contains(n)) {
        return Due::Now("the configured names changed");
    }
    let at = |t: x509_parser::time::ASN1Time| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or(0))
    };
    let (issued, expires) = (
        at(cert.validity().not_before),
        at(cert.validity().not_after),
    );
    let lifetime = expires.duration_since(issued).unwrap_or_default();
    let renew = expires - renew_before.min(lifetime / 3);
    if renew <= now {
        return Due::Now(if expires <= now {
            "the certificate expired"
        } else {
            "the certificate is due for renewal"
        });
    }
    Due::At { renew, expires }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate for `names` issued by a test CA, valid from `from` for `days`.
    fn issued(names: &[&str], from: SystemTime, days: u64) -> Vec<u8> {
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "test CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
        let mut leaf =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        leaf.distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        leaf.not_before = from.into();
        leaf.not_after = (from + Duration::from_secs(days * 86_400)).into();
        let key = rcgen::KeyPair::generate().unwrap();
        leaf.signed_by(&key, &issuer).unwrap().pem().into_bytes()
    }

    #[test]
    fn renewal_is_due_the_days_before_expiry_or_at_a_third_left_if_that_is_later() {
        let day = Duration::from_secs(86_400);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let names = vec!["mx.example.org".to_string()];
        let month = Duration::from_secs(30 * 86_400);
        // (lifetime, renewal) in days: 30 days before expiry, or at a third left if that is
        // later (6 days: at 4, not 30 days before, which is before it was issued).
        for (lifetime, renew) in [(365, 335), (90, 60), (6, 4)] {
            let pem = issued(&["mx.example.org"], t0, lifetime);
            assert_eq!(
                due(&pem, &names, month, t0),
                Due::At {
                    renew: t0 + renew * day,
                    expires: t0 + u32::try_from(lifetime).unwrap() * day
                },
                "{lifetime} days"
            );
        }
        let pem = issued(&["mx.example.org"], t0, 6);
        assert_eq!(
            due(&pem, &names, month, t0 + 5 * day),
            Due::Now("the certificate is due for renewal")
        );
        assert_eq!(
            due(&pem, &names, month, t0 + 7 * day),
            Due::Now("the certificate expired")
        );
        // A name added to the configuration: now.
        let more = vec!["mx.example.org".to_string(), "mail.example.org".to_string()];
        assert_eq!(
            due(&pem, &more, month, t0),
            Due::Now("the configured names changed")
        );
        // The self-signed stand-in, and garbage: now.
        let own = rcgen::generate_simple_self_signed(names.clone()).unwrap();
        assert_eq!(
            due(own.cert.pem().as_bytes(), &names, month, t0),
            Due::Now("no certificate from the CA yet")
        );
        assert_eq!(
            due(b"not a pem", &names, month, t0),
            Due::Now("the certificate file does not parse")
        );
    }

    #[test]
    fn the_stand_in_is_written_owner_only_and_kept() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::builtin();
        config.server.data_dir = dir.path().to_path_buf();
        config.tls.acme = Some(
            toml::from_str("directory = \"https://ca.test/dir\"\nnames = [\"MX.example.org\"]\n")
                .unwrap(),
        );
        let acme = Acme::new(&config).unwrap();
        assert_eq!(acme.names(), ["mx.example.org"]);
        let source = acme.source().unwrap();
        assert_eq!(source.cert, source.key, "one file, replaced whole");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&source.cert), 0o600);
        assert_eq!(mode(&dir.path().join("acme")), 0o700);
        let first = std::fs::read(&source.cert).unwrap();
        assert!(super::super::certificates::load(&source).is_ok());
        acme.source().unwrap();
        assert_eq!(std::fs::read(&source.cert).unwrap(), first, "kept");
        assert_eq!(
            acme.due(SystemTime::now()),
            Due::Now("no certificate from the CA yet")
        );
    }
}
