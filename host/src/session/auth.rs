//! Decoding of SASL PLAIN (RFC 4616) and LOGIN responses. Hand-written on top of `base64`:
//! the formats are a few lines each and the crates that implement SASL bring whole server
//! frameworks with them.

use base64::Engine as _;

/// A SASL response that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthDecodeError {
    /// Not base64.
    #[error("Invalid base64 in authentication response")]
    Base64,
    /// Not UTF-8.
    #[error("Authentication response is not UTF-8")]
    Utf8,
    /// PLAIN without the two NUL separators, or with an empty user.
    #[error("Malformed PLAIN response: expected authzid NUL user NUL password")]
    Plain,
}

/// Decodes a base64 text response (LOGIN user name or password).
pub fn decode_text(response: &str) -> Result<String, AuthDecodeError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(response.trim())
        .map_err(|_| AuthDecodeError::Base64)?;
    String::from_utf8(bytes).map_err(|_| AuthDecodeError::Utf8)
}

/// Decodes a PLAIN response into (user, password). An authorization identity, if given,
/// must equal the user (Sluice does not support acting as someone else).
pub fn decode_plain(response: &str) -> Result<(String, String), AuthDecodeError> {
    let text = if response.trim() == "=" {
        String::new()
    } else {
        decode_text(response)?
    };
    let mut parts = text.split('\0');
    let (Some(authz), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthDecodeError::Plain);
    };
    if user.is_empty() || (!authz.is_empty() && authz != user) {
        return Err(AuthDecodeError::Plain);
    }
    Ok((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn plain() {
        assert_eq!(
            decode_plain(&b64("\0alice\0s3cret")),
            Ok(("alice".into(), "s3cret".into()))
        );
        assert_eq!(
            decode_plain(&b64("alice\0alice\0pw")),
            Ok(("alice".into(), "pw".into()))
        );
        assert_eq!(
            decode_plain(&b64("bob\0alice\0pw")),
            Err(AuthDecodeError::Plain)
        );
        assert_eq!(decode_plain(&b64("alice\0pw")), Err(AuthDecodeError::Plain));
        assert_eq!(decode_plain(&b64("\0\0pw")), Err(AuthDecodeError::Plain));
        assert_eq!(decode_plain("!!!"), Err(AuthDecodeError::Base64));
        assert_eq!(decode_plain("="), Err(AuthDecodeError::Plain));
    }

    #[test]
    fn text() {
        assert_eq!(decode_text(&b64("alice")), Ok("alice".into()));
        assert_eq!(decode_text("/w=="), Err(AuthDecodeError::Utf8));
    }
}
