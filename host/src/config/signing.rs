//! `[plugins] trusted_keys`: the public keys whose signatures an operator trusts, in their text
//! form (`ed25519:BASE64 NAME`, the line `sluice plugin keygen` writes to `KEY.pub`), and the
//! signing policy they make with `require_signature`. The signatures themselves are checked
//! by [`crate::plugin::signature`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// The prefix of a public key in its text form.
const KEY_PREFIX: &str = "ed25519:";

/// The longest signer name: one line shown in `plugin list` and the console.
const MAX_NAME: usize = 100;

/// A public key an operator trusts, with the name it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// The Ed25519 public key.
    pub key: [u8; 32],
    /// Who holds the private half (the text after the key), for logs and the console.
    pub name: String,
}

impl TrustedKey {
    /// Parses `ed25519:BASE64 NAME` (the `.pub` file's line; the name is optional).
    pub fn parse(text: &str) -> Result<TrustedKey, String> {
        let text = text.trim();
        let (key, name) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
        Ok(TrustedKey {
            key: parse_key(key)?,
            name: signer_name(name.trim())?,
        })
    }

    /// The key in its text form, `ed25519:BASE64`.
    pub fn key_text(&self) -> String {
        key_text(&self.key)
    }
}

/// `ed25519:BASE64` of `key`.
pub(crate) fn key_text(key: &[u8; 32]) -> String {
    format!("{KEY_PREFIX}{}", B64.encode(key))
}

pub(crate) fn parse_key(text: &str) -> Result<[u8; 32], String> {
    let b64 = text
        .strip_prefix(KEY_PREFIX)
        .ok_or_else(|| format!("expected {KEY_PREFIX}BASE64 (a line of a .pub file that `sluice plugin keygen` wrote), got {:?}", text.chars().take(40).collect::<String>()))?;
    let bytes = B64
        .decode(b64)
        .map_err(|e| format!("the key is not base64: {e}"))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("an Ed25519 public key is 32 bytes, this one is {}", b.len()))
}

/// A signer's name: one line of printable text, at most [`MAX_NAME`] bytes.
pub(crate) fn signer_name(name: &str) -> Result<String, String> {
    if name.len() > MAX_NAME {
        return Err(format!("the signer's name is over {MAX_NAME} bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err("the signer's name has control characters".to_string());
    }
    Ok(name.to_string())
}

/// `[plugins] trusted_keys` and `require_signature`, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SigningPolicy {
    /// The keys whose signatures are accepted.
    pub trusted: Vec<TrustedKey>,
    /// Refuse a plugin without a valid signature by a trusted key.
    pub required: bool,
}
