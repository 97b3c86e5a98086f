//! A test certificate authority (rcgen) and the leaves it signs, for TLS peers the tests
//! verify or make Sluice verify.

use std::path::Path;

use sha2::Digest as _;

/// A CA and leaves it signs.
pub struct Ca {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
}

impl Default for Ca {
    fn default() -> Ca {
        Ca::new()
    }
}

impl Ca {
    /// A new CA with a key of its own.
    pub fn new() -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        // A subject of its own: rcgen's default is the leaves' too, and a leaf whose issuer
        // is its subject reads as self-signed.
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Sluice test CA");
        Ca {
            params,
            key: rcgen::KeyPair::generate().unwrap(),
        }
    }

    /// The CA's certificate (PEM), for a client to trust.
    pub fn pem(&self) -> String {
        self.params.self_signed(&self.key).unwrap().pem()
    }

    /// A leaf for `names`: (certificate PEM, key PEM, SHA-256 of the certificate's DER).
    pub fn leaf_pem(&self, names: &[&str]) -> (String, String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let mut params = rcgen::CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0].as_str());
        let cert = params.signed_by(&key, &issuer).unwrap();
        let digest = hex::encode(sha2::Sha256::digest(cert.der()));
        (cert.pem(), key.serialize_pem(), digest)
    }

    /// A leaf for `names` written to `dir/file.crt` and `.key`; the SHA-256 of its DER.
    pub fn leaf(&self, dir: &Path, file: &str, names: &[&str]) -> String {
        let (cert, key, digest) = self.leaf_pem(names);
        // Written whole, then renamed in: a reader never sees half a file.
        for (ext, text) in [("key", key), ("crt", cert)] {
            let tmp = dir.join(format!(".{file}.{ext}.tmp"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, dir.join(format!("{file}.{ext}"))).unwrap();
        }
        digest
    }
}

/// For each (port, STARTTLS?, SNI name; empty: none): the SHA-256 of the certificate the
/// server on 127.0.0.1 shows, its chain verified by Python's `ssl` against `ca_pem` (which
/// certificate it is, the caller compares: a client without SNI gets the default), and
/// holding `san` among its DNS names when given; else `refused:WHY`.
pub async fn served(ca_pem: &str, asks: &[(u16, bool, &str)], san: Option<&str>) -> Vec<String> {
    let script = r#"
import hashlib, os, socket, ssl
out = []
for ask in os.environ["ASKS"].split(";"):
    port, starttls, name = ask.split(",")
    ctx = ssl.create_default_context(cadata=os.environ["CA"])
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    s = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
    try:
        if starttls == "1":
            f = s.makefile("rb")
            assert f.readline().startswith(b"220")
            s.sendall(b"EHLO client.test\r\n")
            while not f.readline().startswith(b"250 "):
                pass
            s.sendall(b"STARTTLS\r\n")
            assert f.readline().startswith(b"220")
        t = ctx.wrap_socket(s, server_hostname=name or None)
        if os.environ["SAN"]:
            names = [v for k, v in t.getpeercert().get("subjectAltName", ()) if k == "DNS"]
            assert os.environ["SAN"] in names, names
        out.append(hashlib.sha256(t.getpeercert(binary_form=True)).hexdigest())
        t.close()
    except (ssl.SSLError, AssertionError) as e:
        out.append("refused:" + str(e).replace(" ", "_"))
print(" ".join(out))
"#;
    let asks = asks
        .iter()
        .map(|(port, starttls, name)| format!("{port},{},{name}", u8::from(*starttls)))
        .collect::<Vec<_>>()
        .join(";");
    crate::python(
        script,
        &[
            ("ASKS", asks),
            ("CA", ca_pem.to_string()),
            ("SAN", san.unwrap_or_default().to_string()),
        ],
    )
    .await
    .split_whitespace()
    .map(str::to_string)
    .collect()
}
