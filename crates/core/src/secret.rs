//! Secrets: a wrapper whose `Debug` redacts, and sealing of credentials at rest.
//!
//! Merchant tokens are stored sealed with ChaCha20-Poly1305 under a 32-byte master key. The
//! associated data binds each sealed value to the row it belongs to, so a sealed token copied
//! into another merchant's row does not open.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use std::fmt;

/// A value that must not be logged. `Debug` prints `Secret([REDACTED])`; the value is reached
/// only through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Secret<T> {
        Secret(value)
    }

    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("master key must be 64 hex characters (32 bytes)")]
    BadKey,
    #[error("sealed value is malformed")]
    Malformed,
    #[error("sealed value does not open with this master key")]
    WrongKey,
}

/// Seals and opens credentials with the master key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: ChaCha20Poly1305,
    /// The key of the hosted payment pages' tokens, derived from the master key.
    page_key: [u8; 32],
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBox([REDACTED])")
    }
}

const SEALED_PREFIX: &str = "v1.";

impl SecretBox {
    /// A box from a 64-hex-character master key.
    pub fn from_hex(hex_key: &str) -> Result<SecretBox, SecretError> {
        let bytes = hex::decode(hex_key.trim()).map_err(|_| SecretError::BadKey)?;
        if bytes.len() != 32 {
            return Err(SecretError::BadKey);
        }
        Ok(SecretBox {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&bytes)),
            page_key: crate::page::derive_key(&bytes),
        })
    }

    /// The tokens of the hosted payment pages, under a key derived from the master key: every
    /// node of one database makes and checks the same tokens.
    pub fn page_tokens(&self) -> crate::page::PageTokens {
        crate::page::PageTokens::new(self.page_key)
    }

    /// A fresh random master key, hex encoded.
    pub fn generate_key_hex() -> Secret<String> {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        Secret::new(hex::encode(key))
    }

    /// Seals `plain`, bound to `context` (e.g. "store:200043/303660").
    pub fn seal(&self, plain: &str, context: &str) -> String {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .unwrap_or_default();
        let mut out = Vec::with_capacity(12 + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        format!("{SEALED_PREFIX}{}", hex::encode(out))
    }

    /// Opens a value sealed for the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Secret<String>, SecretError> {
        let body = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or(SecretError::Malformed)?;
        let bytes = hex::decode(body).map_err(|_| SecretError::Malformed)?;
        if bytes.len() < 12 + 16 {
            return Err(SecretError::Malformed);
        }
        let (nonce, ct) = bytes.split_at(12);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretError::WrongKey)?;
        String::from_utf8(plain)
            .map(Secret::new)
            .map_err(|_| SecretError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("359c05eb811c7c8576f4a8a277dc6f6b".to_string());
        assert_eq!(format!("{s:?}"), "Secret([REDACTED])");
        assert!(!format!("{:?}", Some(&s)).contains("359c"));
    }

    #[test]
    fn sealed_tokens_open_only_with_their_key_and_row() {
        let key = SecretBox::generate_key_hex();
        let b = SecretBox::from_hex(key.expose()).unwrap();
        let sealed = b.seal("token", "store:1/2");
        assert!(!sealed.contains("token"));
        assert_eq!(b.open(&sealed, "store:1/2").unwrap().expose(), "token");
        assert!(matches!(
            b.open(&sealed, "store:1/3"),
            Err(SecretError::WrongKey)
        ));
        let other = SecretBox::from_hex(SecretBox::generate_key_hex().expose()).unwrap();
        assert!(matches!(
            other.open(&sealed, "store:1/2"),
            Err(SecretError::WrongKey)
        ));
        assert!(matches!(
            SecretBox::from_hex("abcd"),
            Err(SecretError::BadKey)
        ));
    }
}
