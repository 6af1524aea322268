//! Tokens: minted from the OS CSPRNG, identified only by their SHA-256 and 8-char prefix.

use std::fmt;

use base64::Engine;
use rand::TryRngCore;
use sha2::{Digest, Sha256};

use crate::api::{Encoding, TokenSpec};

/// Characters of a token that may be shown (status, logs, the platform's list answer).
pub(crate) const PREFIX_LEN: usize = 8;

/// A plaintext token. It never prints: `Debug` and `Display` show the prefix only, so a
/// token can't reach a log line, an error or a panic message by accident.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Token(String);

impl Token {
    /// Mints `spec.bytes` random bytes from the OS CSPRNG, encoded as the spec says.
    pub fn mint(spec: &TokenSpec) -> std::io::Result<Token> {
        let mut bytes = vec![0u8; spec.bytes as usize];
        rand::rngs::OsRng
            .try_fill_bytes(&mut bytes)
            .map_err(|e| std::io::Error::other(format!("OS random number generator: {e}")))?;
        let body = match spec.encoding {
            Encoding::Base64url => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes),
            Encoding::Hex => hex::encode(&bytes),
        };
        Ok(Token(format!(
            "{}{body}",
            spec.prefix.as_deref().unwrap_or("")
        )))
    }

    /// Wraps a token read from a Secret or an issuer's answer.
    pub(crate) fn from_plaintext(token: String) -> Token {
        Token(token)
    }

    /// The plaintext, for writing into a Secret or an Authorization header only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    pub fn sha256_hex(&self) -> String {
        sha256_hex(self.0.as_bytes())
    }

    pub fn prefix(&self) -> String {
        prefix_of(&self.0)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({}…)", self.prefix())
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}…", self.prefix())
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub(crate) fn prefix_of(token: &str) -> String {
    token.chars().take(PREFIX_LEN).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a token has the shape `spec` asks for (length, alphabet, literal prefix).
    fn has_shape(token: &Token, spec: &TokenSpec) -> bool {
        let literal = spec.prefix.as_deref().unwrap_or("");
        let Some(body) = token.0.strip_prefix(literal) else {
            return false;
        };
        match spec.encoding {
            Encoding::Base64url => {
                body.len() == (spec.bytes as usize * 4).div_ceil(3)
                    && base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(body)
                        .is_ok()
            }
            Encoding::Hex => {
                body.len() == spec.bytes as usize * 2
                    && body
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            }
        }
    }

    fn spec(bytes: u32, encoding: Encoding, prefix: Option<&str>) -> TokenSpec {
        TokenSpec {
            bytes,
            encoding,
            prefix: prefix.map(str::to_string),
        }
    }

    #[test]
    fn default_token_is_43_chars_of_unpadded_base64url() {
        let token = Token::mint(&TokenSpec::default()).unwrap();
        assert_eq!(token.expose().len(), 43);
        assert!(
            token
                .expose()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert!(has_shape(&token, &TokenSpec::default()));
    }

    #[test]
    fn hex_token_is_two_chars_per_byte_with_the_literal_prefix() {
        let spec = spec(16, Encoding::Hex, Some("wst_"));
        let token = Token::mint(&spec).unwrap();
        assert_eq!(token.expose().len(), 4 + 32);
        assert!(token.expose().starts_with("wst_"));
        assert!(has_shape(&token, &spec));
        assert!(!has_shape(&token, &self::spec(16, Encoding::Hex, None)));
        assert!(!has_shape(
            &token,
            &self::spec(32, Encoding::Hex, Some("wst_"))
        ));
    }

    #[test]
    fn minted_tokens_differ() {
        let a = Token::mint(&TokenSpec::default()).unwrap();
        let b = Token::mint(&TokenSpec::default()).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn debug_and_display_show_only_the_prefix() {
        let token = Token::from_plaintext("abcdefghSECRETPART".to_string());
        assert_eq!(format!("{token:?}"), "Token(abcdefgh…)");
        assert_eq!(format!("{token}"), "abcdefgh…");
        assert!(!format!("{token:?} {token}").contains("SECRET"));
    }

    #[test]
    fn sha256_is_lowercase_hex_of_the_plaintext() {
        let token = Token::from_plaintext("password".to_string());
        assert_eq!(
            token.sha256_hex(),
            "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
        );
    }
}
