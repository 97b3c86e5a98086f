//! Signed plugins: Ed25519 signatures of a plugin file and of the capabilities its signer
//! allows it, kept beside the file as `NAME.wasm.sig`, and the check at load against
//! `[plugins] trusted_keys` and `require_signature`.
//!
//! Three small text formats, each readable and easy to diff:
//! - a signing key (`sluice plugin keygen`): TOML with the signer's name and the PKCS#8
//!   document, written owner-only;
//! - a public key: one line, `ed25519:BASE64 NAME`, which an operator pastes into
//!   `trusted_keys`;
//! - a signature: TOML with the file's SHA-256, the allowed capabilities, the signer's name,
//!   its public key and the signature over [`signed_text`] of those.
//!
//! The cryptography is ring's (already Sluice's TLS and DKIM provider): key generation,
//! signing and verification; nothing here is hand-made but the file formats.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use super::directory::sig_path;
use crate::config::signing::{key_text, parse_key, signer_name};
use crate::config::{Capability, SigningPolicy};

/// The largest signature file read (a real one is about 400 bytes).
const MAX_SIG_FILE: u64 = 16 * 1024;

/// Who signed a plugin, and what the signature allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signer {
    /// The trusted key's name (from `trusted_keys`).
    pub name: String,
    /// The key, `ed25519:BASE64`.
    pub key: String,
    /// The capabilities the signature allows.
    pub allows: Vec<Capability>,
}

/// A signature file's contents.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SigFile {
    version: u32,
    /// The plugin file's SHA-256, hex.
    sha256: String,
    /// The capabilities the signer allows the plugin to import.
    capabilities: Vec<Capability>,
    /// The signer's name as the key pair has it.
    signer: String,
    /// The signer's public key, `ed25519:BASE64`.
    key: String,
    /// The signature of [`signed_text`], base64.
    signature: String,
}

/// What the signature covers: every field of the file but the signature, one per line.
fn signed_text(sha256: &str, capabilities: &[Capability], signer: &str) -> String {
    let caps: Vec<&str> = capabilities.iter().map(|c| c.as_str()).collect();
    format!(
        "sluice-plugin-signature-v1\nsha256 {}\ncapabilities {}\nsigner {signer}\n",
        sha256.to_ascii_lowercase(),
        caps.join(",")
    )
}

/// Why a plugin's signature does not let it load (the loader adds the file's name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "unsigned: there is no {} beside it, and [plugins] require_signature = true (sign it with `sluice plugin sign`)",
        .0.display()
    )]
    Missing(PathBuf),
    #[error("{}: {}", .0.display(), .1)]
    Unreadable(PathBuf, String),
    #[error("signed by {key} ({name}), which is not in [plugins] trusted_keys")]
    Untrusted { key: String, name: String },
    #[error("changed after it was signed: its SHA-256 is {actual}, the signature is for {signed}")]
    Changed { actual: String, signed: String },
    #[error(
        "the signature does not verify with {key}: the .sig file was altered or is not for this key"
    )]
    Invalid { key: String },
    #[error(
        "imports the {} capability, which its signature by {signer} does not allow (it allows: {allowed})",
        .capability.as_str()
    )]
    NotAllowed {
        capability: Capability,
        signer: String,
        allowed: String,
    },
}

/// Checks the signature of the plugin `file` (SHA-256 `sha256`) under `policy`, before the
/// file is compiled: a file that is not what a trusted signer signed is never compiled.
/// `Ok(None)`: unsigned, and signatures are not required. The capabilities the file imports
/// are checked against the signature's allowances once it is compiled ([`Signer::allow`]).
pub fn verify(
    policy: &SigningPolicy,
    file: &Path,
    sha256: &str,
) -> Result<Option<Signer>, SignatureError> {
    let path = sig_path(file);
    let text = match read_bounded(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return if policy.required {
                Err(SignatureError::Missing(path))
            } else {
                Ok(None)
            };
        }
        Err(e) => return Err(SignatureError::Unreadable(path, e.to_string())),
    };
    let sig: SigFile = toml::from_str(&text).map_err(|e| {
        SignatureError::Unreadable(
            path.clone(),
            format!("not a Sluice signature file: {}", e.message()),
        )
    })?;
    if sig.version != 1 {
        return Err(SignatureError::Unreadable(
            path,
            format!(
                "signature format version {} (this Sluice reads version 1)",
                sig.version
            ),
        ));
    }
    let key = parse_key(&sig.key)
        .map_err(|e| SignatureError::Unreadable(path.clone(), format!("key: {e}")))?;
    let bytes = B64.decode(&sig.signature).map_err(|e| {
        SignatureError::Unreadable(path.clone(), format!("signature: not base64: {e}"))
    })?;
    let signed = signed_text(&sig.sha256, &sig.capabilities, &sig.signer);
    if UnparsedPublicKey::new(&ED25519, key)
        .verify(signed.as_bytes(), &bytes)
        .is_err()
    {
        return Err(SignatureError::Invalid {
            key: key_text(&key),
        });
    }
    let Some(trusted) = policy.trusted.iter().find(|t| t.key == key) else {
        return Err(SignatureError::Untrusted {
            key: key_text(&key),
            name: crate::inbound::message::printable(&sig.signer).into_owned(),
        });
    };
    if !sig.sha256.eq_ignore_ascii_case(sha256) {
        return Err(SignatureError::Changed {
            actual: sha256.to_string(),
            signed: crate::inbound::message::printable(&sig.sha256).into_owned(),
        });
    }
    let name = if trusted.name.is_empty() {
        trusted.key_text()
    } else {
        trusted.name.clone()
    };
    Ok(Some(Signer {
        name,
        key: trusted.key_text(),
        allows: sig.capabilities,
    }))
}

impl Signer {
    /// Whether the signature allows a plugin importing `imports`.
    pub fn allow(&self, imports: &[Capability]) -> Result<(), SignatureError> {
        match imports.iter().find(|c| !self.allows.contains(c)) {
            Some(&capability) => Err(SignatureError::NotAllowed {
                capability,
                signer: self.name.clone(),
                allowed: allowed_list(&self.allows),
            }),
            None => Ok(()),
        }
    }
}

fn allowed_list(caps: &[Capability]) -> String {
    if caps.is_empty() {
        "no capability".to_string()
    } else {
        caps.iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_SIG_FILE)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// A signing key, as `sluice plugin keygen` writes it.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    /// Who signs with it.
    name: String,
    /// The PKCS#8 document of the Ed25519 key pair, base64.
    secret: String,
}

/// A new key pair for `name`: the signing key file's text and the public key's line.
pub fn keygen(name: &str) -> Result<(String, String), String> {
    let name = signer_name(name)?;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 =
        Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| "cannot generate a key".to_string())?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| e.to_string())?;
    let public = public_line(&pair, &name);
    let file = KeyFile {
        name,
        secret: B64.encode(pkcs8.as_ref()),
    };
    let text = format!(
        "# A Sluice plugin signing key (Ed25519). Keep it secret: whoever holds it can sign plugins\n# that servers trusting its public key will load.\n{}",
        toml::to_string(&file).map_err(|e| e.to_string())?
    );
    Ok((text, public))
}

fn public_line(pair: &Ed25519KeyPair, name: &str) -> String {
    let key: [u8; 32] = pair.public_key().as_ref().try_into().unwrap_or([0; 32]);
    if name.is_empty() {
        key_text(&key)
    } else {
        format!("{} {name}", key_text(&key))
    }
}

/// The signature file's text for a plugin file of `wasm` bytes, allowing `capabilities`,
/// signed with the key in `key_file` (the text `keygen` wrote). Also gives the public key's
/// line, so the signer can say which key to trust.
pub fn sign(
    key_file: &str,
    wasm: &[u8],
    capabilities: &[Capability],
) -> Result<(String, String), String> {
    use sha2::{Digest, Sha256};
    let key: KeyFile = toml::from_str(key_file)
        .map_err(|e| format!("not a Sluice signing key: {}", e.message()))?;
    let name = signer_name(&key.name)?;
    let pkcs8 = B64
        .decode(key.secret.trim())
        .map_err(|e| format!("secret: not base64: {e}"))?;
    let pair = Ed25519KeyPair::from_pkcs8(&pkcs8)
        .map_err(|e| format!("secret: not an Ed25519 key ({e})"))?;
    let mut capabilities = capabilities.to_vec();
    capabilities.sort();
    capabilities.dedup();
    let sha256 = hex::encode(Sha256::digest(wasm));
    let signature = pair.sign(signed_text(&sha256, &capabilities, &name).as_bytes());
    let public = public_line(&pair, &name);
    let file = SigFile {
        version: 1,
        sha256,
        capabilities,
        signer: name,
        key: public.split(' ').next().unwrap_or_default().to_string(),
        signature: B64.encode(signature.as_ref()),
    };
    let text = format!(
        "# Sluice plugin signature (`sluice plugin sign`): the file's SHA-256 and the capabilities\n# its signer allows it.\n{}",
        toml::to_string(&file).map_err(|e| e.to_string())?
    );
    Ok((text, public))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrustedKey;

    /// [`verify`], then [`Signer::allow`] with `imports`: the loader's two steps at once.
    fn check(
        policy: &SigningPolicy,
        file: &Path,
        sha256: &str,
        imports: &[Capability],
    ) -> Result<Option<Signer>, SignatureError> {
        let signer = verify(policy, file, sha256)?;
        if let Some(s) = &signer {
            s.allow(imports)?;
        }
        Ok(signer)
    }

    /// A plugin file, its signature and the policy trusting its signer, in a scratch folder.
    fn signed(caps: &[Capability]) -> (tempfile::TempDir, PathBuf, String, SigningPolicy) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tagger.wasm");
        std::fs::write(&file, b"\0asm plugin bytes").unwrap();
        let (key, public) = keygen("Alice Example").unwrap();
        let (sig, public_again) = sign(&key, &std::fs::read(&file).unwrap(), caps).unwrap();
        assert_eq!(public, public_again);
        std::fs::write(sig_path(&file), sig).unwrap();
        let policy = SigningPolicy {
            trusted: vec![TrustedKey::parse(&public).unwrap()],
            required: true,
        };
        let sha = {
            use sha2::{Digest, Sha256};
            hex::encode(Sha256::digest(std::fs::read(&file).unwrap()))
        };
        (dir, file, sha, policy)
    }

    #[test]
    fn a_signed_file_loads_with_its_signer_and_allowances() {
        let (_d, file, sha, policy) = signed(&[Capability::Kv]);
        let signer = check(&policy, &file, &sha, &[Capability::Kv])
            .unwrap()
            .unwrap();
        assert_eq!(signer.name, "Alice Example");
        assert_eq!(signer.allows, [Capability::Kv]);
        assert!(signer.key.starts_with("ed25519:"));
    }

    #[test]
    fn each_way_to_fail_is_named() {
        let (_d, file, sha, policy) = signed(&[]);
        // A capability the signature does not allow.
        let e = check(&policy, &file, &sha, &[Capability::Dns]).unwrap_err();
        assert!(
            matches!(
                e,
                SignatureError::NotAllowed {
                    capability: Capability::Dns,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("allows: no capability"), "{e}");
        // The file changed after signing.
        let e = check(&policy, &file, &"0".repeat(64), &[]).unwrap_err();
        assert!(matches!(e, SignatureError::Changed { .. }), "{e}");
        // Another key is trusted.
        let (_, other) = keygen("Mallory").unwrap();
        let stranger = SigningPolicy {
            trusted: vec![TrustedKey::parse(&other).unwrap()],
            required: true,
        };
        let e = check(&stranger, &file, &sha, &[]).unwrap_err();
        assert!(matches!(e, SignatureError::Untrusted { .. }), "{e}");
        // The signature file edited to allow more.
        let text = std::fs::read_to_string(sig_path(&file)).unwrap();
        std::fs::write(
            sig_path(&file),
            text.replace("capabilities = []", "capabilities = [\"kv\"]"),
        )
        .unwrap();
        let e = check(&policy, &file, &sha, &[Capability::Kv]).unwrap_err();
        assert!(matches!(e, SignatureError::Invalid { .. }), "{e}");
        // No signature: refused when required, unsigned otherwise.
        std::fs::remove_file(sig_path(&file)).unwrap();
        let e = check(&policy, &file, &sha, &[]).unwrap_err();
        assert!(matches!(e, SignatureError::Missing(_)), "{e}");
        let optional = SigningPolicy {
            required: false,
            ..policy
        };
        assert_eq!(check(&optional, &file, &sha, &[]).unwrap(), None);
        // Garbage is an error that names the file.
        std::fs::write(sig_path(&file), "sha256 = 1").unwrap();
        let e = check(&optional, &file, &sha, &[]).unwrap_err();
        assert!(e.to_string().contains("tagger.wasm.sig"), "{e}");
    }

    #[test]
    fn keys_and_names_are_checked() {
        assert!(TrustedKey::parse("ssh-ed25519 AAAA").is_err());
        assert!(
            TrustedKey::parse("ed25519:AAAA")
                .unwrap_err()
                .contains("32 bytes")
        );
        assert!(
            TrustedKey::parse("ed25519:!!")
                .unwrap_err()
                .contains("base64")
        );
        assert!(keygen("two\nlines").is_err());
        let (_, public) = keygen("").unwrap();
        assert_eq!(TrustedKey::parse(&public).unwrap().name, "");
    }
}
