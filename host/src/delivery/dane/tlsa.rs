//! A host's TLSA records as SMTP uses them (RFC 7672 §3.1), and the TLS certificate check
//! they make: DANE-EE (3) matches the server's own certificate or key, with no name or expiry
//! check; DANE-TA (2) names a trust anchor in the chain the server presents, from which the
//! chain is verified for the MX host's name as usual. PKIX-TA (0) and PKIX-EE (1) are not
//! usable for SMTP (§3.1.3), nor are unknown selectors and matching types; they are dropped.
//!
//! Written here: rustls has no DANE, and the DANE crates in Rust bring their own TLS stacks.
//! The chain check below a DANE-TA anchor is rustls's own (webpki), with that anchor as root;
//! the rustls verifier that calls [`Tlsa::check`] is in [`super::super::tls_config`].

use std::borrow::Cow;
use std::sync::Arc;

use hickory_resolver::proto::rr::RData;
use hickory_resolver::proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};
use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::Digest as _;

/// One usable certificate association.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Association {
    /// 2 (DANE-TA) or 3 (DANE-EE).
    usage: u8,
    /// The whole certificate, or its public key (SPKI).
    spki: bool,
    /// 0 (the data itself), 1 (SHA-256) or 2 (SHA-512).
    matching: u8,
    data: Vec<u8>,
}

impl Association {
    /// The association of a TLSA record, if SMTP can use it.
    fn of(record: &RData) -> Option<Association> {
        let RData::TLSA(t) = record else {
            return None;
        };
        let usage = match t.cert_usage {
            CertUsage::DaneTa => 2,
            CertUsage::DaneEe => 3,
            _ => return None,
        };
        let spki = match t.selector {
            Selector::Full => false,
            Selector::Spki => true,
            _ => return None,
        };
        let (matching, len) = match t.matching {
            Matching::Raw => (0, None),
            Matching::Sha256 => (1, Some(32)),
            Matching::Sha512 => (2, Some(64)),
            _ => return None,
        };
        // A digest of the wrong length can match nothing (RFC 7671 §5.1).
        if len.is_some_and(|l| t.cert_data.len() != l) || t.cert_data.is_empty() {
            return None;
        }
        Some(Association {
            usage,
            spki,
            matching,
            data: t.cert_data.clone(),
        })
    }

    /// Whether `cert` (DER) is the one this association names.
    fn matches(&self, cert: &[u8]) -> bool {
        let selected: Cow<[u8]> = if self.spki {
            match x509_parser::parse_x509_certificate(cert) {
                Ok((_, c)) => Cow::Owned(c.tbs_certificate.subject_pki.raw.to_vec()),
                Err(_) => return false,
            }
        } else {
            Cow::Borrowed(cert)
        };
        match self.matching {
            0 => selected.as_ref() == self.data.as_slice(),
            1 => sha2::Sha256::digest(&selected).as_slice() == self.data.as_slice(),
            _ => sha2::Sha512::digest(&selected).as_slice() == self.data.as_slice(),
        }
    }
}

/// A certificate refused for `why` (the client reports the text as it is).
fn refused(why: String) -> rustls::Error {
    rustls::Error::General(why)
}

/// The usable TLSA records of one host (`_PORT._tcp.HOST`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlsa {
    /// The TLSA base name: the host the certificate is checked for (DANE-TA).
    pub host: String,
    associations: Vec<Association>,
    /// Records present but not usable by SMTP.
    pub unusable: usize,
}

impl Tlsa {
    /// The records of `host` (from its TLSA lookup).
    pub fn from_records(host: &str, records: &[RData]) -> Tlsa {
        let associations: Vec<Association> = records.iter().filter_map(Association::of).collect();
        Tlsa {
            host: host.to_string(),
            unusable: records.len() - associations.len(),
            associations,
        }
    }

    /// True when some record can authenticate the server.
    pub fn usable(&self) -> bool {
        !self.associations.is_empty()
    }

    /// The usable records, as the log and the queue history name them (`3 1 1`, `2 0 1`).
    pub fn describe(&self) -> String {
        let mut kinds: Vec<String> = self
            .associations
            .iter()
            .map(|a| format!("{} {} {}", a.usage, u8::from(a.spki), a.matching))
            .collect();
        kinds.dedup();
        kinds.join(",")
    }

    /// The usable records as DNS presents them (`3 1 1 HEX`), for TLS reports.
    pub fn records(&self) -> Vec<String> {
        self.associations
            .iter()
            .map(|a| {
                let data: String = a.data.iter().map(|b| format!("{b:02x}")).collect();
                format!("{} {} {} {data}", a.usage, u8::from(a.spki), a.matching)
            })
            .collect()
    }

    /// A short digest of the records, so pooled connections authenticated by one set are not
    /// reused under another.
    pub fn fingerprint(&self) -> String {
        let mut h = sha2::Sha256::new();
        for a in &self.associations {
            h.update([a.usage, u8::from(a.spki), a.matching]);
            h.update(&a.data);
        }
        h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Checks the chain the server presented (RFC 7672 §3.1): a DANE-EE record matching the
    /// end-entity certificate, or a DANE-TA record matching a certificate of the chain under
    /// which the end-entity verifies for `server_name`.
    pub fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
        provider: &Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<(), rustls::Error> {
        let ee = self.associations.iter().filter(|a| a.usage == 3);
        if ee.clone().any(|a| a.matches(end_entity)) {
            return Ok(());
        }
        let ta = self.associations.iter().filter(|a| a.usage == 2);
        let anchor = intermediates
            .iter()
            .enumerate()
            .find(|(_, c)| ta.clone().any(|a| a.matches(c)));
        let Some((at, anchor)) = anchor else {
            return Err(refused(format!(
                "the certificate chain of {} matches none of its TLSA records ({})",
                self.host,
                self.describe()
            )));
        };
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(anchor.clone())
            .map_err(|e| refused(format!("the TLSA trust anchor of {}: {e}", self.host)))?;
        let below = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| refused(format!("the TLSA trust anchor of {}: {e}", self.host)))?;
        below
            .verify_server_cert(end_entity, &intermediates[..at], server_name, &[], now)
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::rr::rdata::TLSA;

    fn record(usage: u8, selector: u8, matching: u8, data: Vec<u8>) -> RData {
        RData::TLSA(TLSA::new(
            usage.into(),
            selector.into(),
            matching.into(),
            data,
        ))
    }

    struct Chain {
        ca: CertificateDer<'static>,
        leaf: CertificateDer<'static>,
        leaf_spki: Vec<u8>,
    }

    fn chain(name: &str) -> Chain {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        Chain {
            ca: ca.der().clone(),
            leaf: leaf.der().clone(),
            leaf_spki: rcgen::PublicKeyData::subject_public_key_info(&key),
        }
    }

    fn check(tlsa: &Tlsa, c: &Chain, name: &str) -> Result<(), rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let name = ServerName::try_from(name.to_string()).unwrap();
        tlsa.check(
            &c.leaf,
            std::slice::from_ref(&c.ca),
            &name,
            UnixTime::now(),
            &provider,
        )
    }

    #[test]
    fn dane_ee_matches_the_servers_key_whatever_its_name() {
        let c = chain("mx.example");
        let spki_sha256 = sha2::Sha256::digest(&c.leaf_spki).to_vec();
        let t = Tlsa::from_records("mx.example", &[record(3, 1, 1, spki_sha256)]);
        assert!(t.usable());
        assert_eq!(t.describe(), "3 1 1");
        check(&t, &c, "mx.example").unwrap();
        check(&t, &c, "other.example").unwrap();
        let full = Tlsa::from_records("mx.example", &[record(3, 0, 0, c.leaf.to_vec())]);
        check(&full, &c, "mx.example").unwrap();

        let other = chain("mx.example");
        let wrong = Tlsa::from_records(
            "mx.example",
            &[record(
                3,
                1,
                1,
                sha2::Sha256::digest(&other.leaf_spki).to_vec(),
            )],
        );
        let e = check(&wrong, &c, "mx.example").unwrap_err().to_string();
        assert!(
            e.contains("matches none of its TLSA records (3 1 1)"),
            "{e}"
        );
    }

    #[test]
    fn dane_ta_verifies_the_chain_below_the_anchor_for_the_host() {
        let c = chain("mx.example");
        let ca_sha512 = sha2::Sha512::digest(&c.ca).to_vec();
        let t = Tlsa::from_records("mx.example", &[record(2, 0, 2, ca_sha512)]);
        check(&t, &c, "mx.example").unwrap();
        let e = check(&t, &c, "other.example").unwrap_err();
        assert!(
            matches!(
                e,
                rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
                    | rustls::Error::InvalidCertificate(
                        rustls::CertificateError::NotValidForNameContext { .. }
                    )
            ),
            "{e:?}"
        );
        // Another CA's anchor does not vouch for this chain.
        let stranger = chain("mx.example");
        let t = Tlsa::from_records(
            "mx.example",
            &[record(2, 0, 1, sha2::Sha256::digest(&stranger.ca).to_vec())],
        );
        assert!(check(&t, &c, "mx.example").is_err());
    }

    #[test]
    fn records_smtp_cannot_use_are_dropped() {
        let c = chain("mx.example");
        let digest = sha2::Sha256::digest(&c.leaf_spki).to_vec();
        let t = Tlsa::from_records(
            "mx.example",
            &[
                record(1, 1, 1, digest.clone()),        // PKIX-EE
                record(0, 0, 1, digest.clone()),        // PKIX-TA
                record(3, 1, 1, digest[..20].to_vec()), // a digest of the wrong length
                record(3, 7, 1, digest.clone()),        // an unknown selector
            ],
        );
        assert!(!t.usable());
        assert_eq!(t.unusable, 4);
        assert_ne!(
            Tlsa::from_records("mx.example", &[record(3, 1, 1, digest)]).fingerprint(),
            t.fingerprint()
        );
    }
}
