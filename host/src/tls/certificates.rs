//! The server's certificates: one or several (`[[tls.certificate]]`, each for its names),
//! chosen by the name the client asks for (SNI), with a default for clients that send none —
//! many MTAs do not — or a name no certificate covers. Files that change on disk are read
//! again ([`Certificates::refresh`], every `[tls] reload_check_secs`): new connections get the
//! new certificate, established ones keep theirs, and a file that does not load is refused
//! with its reason while the certificate in service stays.
//!
//! The choice by name is written here rather than with rustls's `ResolvesServerCertUsingSni`,
//! which has no default for a client without SNI (it would fail the handshake) and cannot
//! swap a certificate in place.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::TlsError;
use crate::file_stamp::FileStamp;

/// One certificate to serve: its files and the names it is chosen for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSource {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// The names (lower case; `*.example.org` covers one label under it). Empty: chosen
    /// only as the default.
    pub names: Vec<String>,
}

/// What a file looked like when it was read: a change to either file of a pair makes it
/// read again.
type Stamp = Option<FileStamp>;

/// A certificate in service.
#[derive(Debug)]
struct Served {
    source: CertSource,
    key: Arc<CertifiedKey>,
    /// The files' stamps when last read (whether or not that read loaded).
    stamps: (Stamp, Stamp),
}

/// The certificates in service; the first is the default.
#[derive(Debug)]
pub struct Certificates {
    served: ArcSwap<Vec<Served>>,
}

/// Reads `source`'s chain and key into what rustls serves.
pub fn load(source: &CertSource) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = super::read_chain(&source.cert)?;
    let key = super::read_key(&source.key)?;
    let provider = rustls::crypto::ring::default_provider();
    Ok(Arc::new(CertifiedKey::from_der(chain, key, &provider)?))
}

impl Certificates {
    /// Loads every source; the first is the default. Fails on the first that does not load.
    pub fn load(sources: Vec<CertSource>) -> Result<Certificates, TlsError> {
        let mut served = Vec::with_capacity(sources.len());
        for source in sources {
            let stamps = (FileStamp::of(&source.cert), FileStamp::of(&source.key));
            let key = load(&source)?;
            served.push(Served {
                source,
                key,
                stamps,
            });
        }
        Ok(Certificates {
            served: ArcSwap::from_pointee(served),
        })
    }

    /// The certificate for a client asking for `name` (none: the default).
    fn choose(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let served = self.served.load();
        let name = name.map(str::to_ascii_lowercase);
        let covers = |pattern: &str, name: &str| match pattern.strip_prefix("*.") {
            Some(parent) => name
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
            None => pattern == name,
        };
        let chosen = name.as_deref().and_then(|n| {
            // An exact name before a wildcard, whatever their order.
            served
                .iter()
                .find(|s| {
                    s.source
                        .names
                        .iter()
                        .any(|p| !p.starts_with("*.") && p == n)
                })
                .or_else(|| {
                    served
                        .iter()
                        .find(|s| s.source.names.iter().any(|p| covers(p, n)))
                })
        });
        chosen.or(served.first()).map(|s| s.key.clone())
    }

    /// Reads again the certificates whose files changed since they were last read. Returns
    /// what happened to each: (certificate file, `Ok` when the new pair is in service, or why
    /// it was refused and the old one kept).
    pub fn refresh(&self) -> Vec<(PathBuf, Result<(), String>)> {
        let current = self.served.load();
        let mut outcomes = Vec::new();
        let mut next = Vec::with_capacity(current.len());
        for s in current.iter() {
            let stamps = (FileStamp::of(&s.source.cert), FileStamp::of(&s.source.key));
            let key = if stamps == s.stamps {
                s.key.clone()
            } else {
                match load(&s.source) {
                    Ok(key) => {
                        outcomes.push((s.source.cert.clone(), Ok(())));
                        key
                    }
                    Err(e) => {
                        outcomes.push((s.source.cert.clone(), Err(e.to_string())));
                        s.key.clone()
                    }
                }
            };
            next.push(Served {
                source: s.source.clone(),
                key,
                stamps,
            });
        }
        if !outcomes.is_empty() {
            self.served.store(Arc::new(next));
        }
        outcomes
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(hello.server_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn pair(dir: &Path, file: &str, names: &[&str]) -> CertSource {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let generated = rcgen::generate_simple_self_signed(names.clone()).unwrap();
        let cert = dir.join(format!("{file}.crt"));
        let key = dir.join(format!("{file}.key"));
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        CertSource { cert, key, names }
    }

    fn der(c: &Certificates, name: Option<&str>) -> Vec<u8> {
        c.choose(name).unwrap().cert[0].to_vec()
    }

    #[test]
    fn the_name_chooses_the_certificate_and_changed_files_are_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let a = pair(dir.path(), "a", &["mx.a.test"]);
        let b = pair(dir.path(), "b", &["mx.b.test", "*.b.test"]);
        let exact = pair(dir.path(), "c", &["x.b.test"]);
        let certs = Certificates::load(vec![a.clone(), b.clone(), exact.clone()]).unwrap();
        let file_der = |s: &CertSource| super::super::read_chain(&s.cert).unwrap()[0].to_vec();
        assert_eq!(der(&certs, None), file_der(&a), "no SNI: the default");
        assert_eq!(der(&certs, Some("other.test")), file_der(&a));
        assert_eq!(der(&certs, Some("MX.B.test")), file_der(&b));
        assert_eq!(der(&certs, Some("y.b.test")), file_der(&b), "wildcard");
        assert_eq!(
            der(&certs, Some("x.b.test")),
            file_der(&exact),
            "exact first"
        );
        assert_eq!(
            der(&certs, Some("z.y.b.test")),
            file_der(&a),
            "one label only"
        );
        assert!(certs.refresh().is_empty(), "nothing changed");

        // A new pair for b: served from the next handshake. A broken one: refused, b stays.
        let before = file_der(&b);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b2 = pair(dir.path(), "b", &["mx.b.test"]);
        let outcomes = certs.refresh();
        assert_eq!(outcomes, vec![(b.cert.clone(), Ok(()))]);
        let after = file_der(&b2);
        assert_ne!(before, after);
        assert_eq!(der(&certs, Some("mx.b.test")), after);
        std::fs::write(&b.key, "not a key").unwrap();
        let outcomes = certs.refresh();
        assert_eq!(outcomes.len(), 1);
        assert!(
            outcomes[0]
                .1
                .as_ref()
                .unwrap_err()
                .contains("no private key"),
            "{outcomes:?}"
        );
        assert_eq!(der(&certs, Some("mx.b.test")), after, "the old one stays");
        assert!(
            certs.refresh().is_empty(),
            "a refused file is not retried until it changes"
        );
    }
}
