//! Signing quotes: a keyring of HMAC-SHA256 keys by id (one active for signing, the
//! others still accepted for verification so keys can rotate), compact tokens, and
//! verification with distinct errors.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::encode::{decode, encode, DecodeError};
use super::Quote;

type HmacSha256 = Hmac<Sha256>;

/// Shortest accepted secret: 32 bytes, the output size of SHA-256.
pub const MIN_SECRET_LEN: usize = 32;

/// Longest accepted key id.
pub const MAX_KEY_ID_LEN: usize = 32;

/// Why a keyring operation was refused (configuration errors; retrying does not help).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("key id {0:?} must be 1-{MAX_KEY_ID_LEN} characters of [A-Za-z0-9_-]")]
    BadKeyId(String),
    #[error("key {id}: secret is {len} bytes; at least {MIN_SECRET_LEN} are required")]
    ShortSecret { id: String, len: usize },
    #[error("key {0} is already in the keyring")]
    DuplicateKey(String),
    #[error("key {0} is not in the keyring")]
    UnknownKey(String),
    #[error("key {0} is the active signing key; activate another one first")]
    RemoveActive(String),
}

/// Why a token was rejected at verification. Each maps to one API error code
/// ([`TokenError::code`]); none is helped by retrying the same token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed quote token: {0}")]
    Malformed(&'static str),
    #[error("quote token signed with unknown key {0:?}")]
    UnknownKey(String),
    #[error("quote token signature does not match: the token was altered or forged")]
    BadSignature,
    #[error("quote token payload is not a valid quote: {0}")]
    Payload(DecodeError),
    #[error("quote expired at {expired_at_ms} (now {now_ms})")]
    Expired { expired_at_ms: i64, now_ms: i64 },
}

impl TokenError {
    /// The API error code: `quote_malformed`, `quote_unknown_key`, `quote_tampered` or
    /// `quote_expired`.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Malformed(_) | TokenError::Payload(_) => "quote_malformed",
            TokenError::UnknownKey(_) => "quote_unknown_key",
            TokenError::BadSignature => "quote_tampered",
            TokenError::Expired { .. } => "quote_expired",
        }
    }
}

/// One signing key. Its `Debug` output never shows the secret.
#[derive(Clone)]
struct QuoteKey {
    id: String,
    secret: Vec<u8>,
}

impl fmt::Debug for QuoteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuoteKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// HMAC keys by id. The active key signs; every key in the ring verifies. To rotate:
/// add the new key on every verifier, then activate it on the signers, then remove the
/// old key once the longest quote lifetime has passed.
#[derive(Debug, Clone)]
pub struct Keyring {
    /// Sorted by id.
    keys: Vec<QuoteKey>,
    active: String,
}

fn check_key_id(id: &str) -> Result<(), KeyringError> {
    let valid = !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(KeyringError::BadKeyId(id.to_owned()))
    }
}

impl Keyring {
    /// A keyring with one key, active.
    pub fn new(active_id: &str, secret: &[u8]) -> Result<Keyring, KeyringError> {
        let mut keyring = Keyring {
            keys: Vec::new(),
            active: active_id.to_owned(),
        };
        keyring.add(active_id, secret)?;
        Ok(keyring)
    }

    /// Adds a key that verifies (and can later be activated).
    pub fn add(&mut self, id: &str, secret: &[u8]) -> Result<(), KeyringError> {
        check_key_id(id)?;
        if secret.len() < MIN_SECRET_LEN {
            return Err(KeyringError::ShortSecret {
                id: id.to_owned(),
                len: secret.len(),
            });
        }
        match self.keys.binary_search_by(|k| k.id.as_str().cmp(id)) {
            Ok(_) => Err(KeyringError::DuplicateKey(id.to_owned())),
            Err(position) => {
                self.keys.insert(
                    position,
                    QuoteKey {
                        id: id.to_owned(),
                        secret: secret.to_vec(),
                    },
                );
                Ok(())
            }
        }
    }

    /// Makes a key in the ring the signing key.
    pub fn activate(&mut self, id: &str) -> Result<(), KeyringError> {
        self.key(id)
            .ok_or_else(|| KeyringError::UnknownKey(id.to_owned()))?;
        self.active = id.to_owned();
        Ok(())
    }

    /// Removes a key that is not active; tokens it signed stop verifying.
    pub fn remove(&mut self, id: &str) -> Result<(), KeyringError> {
        if id == self.active {
            return Err(KeyringError::RemoveActive(id.to_owned()));
        }
        let position = self
            .keys
            .binary_search_by(|k| k.id.as_str().cmp(id))
            .map_err(|_| KeyringError::UnknownKey(id.to_owned()))?;
        self.keys.remove(position);
        Ok(())
    }

    /// The id of the signing key.
    pub fn active_id(&self) -> &str {
        &self.active
    }

    /// Ids of every key, sorted.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    fn key(&self, id: &str) -> Option<&QuoteKey> {
        self.keys
            .binary_search_by(|k| k.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.keys[i])
    }

    fn mac(key: &QuoteKey, signing_input: &str) -> HmacSha256 {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&key.secret)
            .expect("HMAC accepts keys of any length");
        mac.update(signing_input.as_bytes());
        mac
    }

    /// Signs a quote with the active key: `base64url(payload).kid.base64url(mac)`, where
    /// `payload` is the canonical encoding and the MAC covers `base64url(payload).kid`.
    pub fn sign(&self, quote: &Quote) -> String {
        let key = self
            .key(&self.active)
            .expect("the active key is always in the ring");
        let mut token = URL_SAFE_NO_PAD.encode(encode(quote));
        token.push('.');
        token.push_str(&key.id);
        let tag = Self::mac(key, &token).finalize().into_bytes();
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(tag));
        token
    }

    /// Verifies a token and returns the quote it locks. Checks, in order: the shape, the
    /// key id, the MAC (constant-time comparison), the payload, and the expiry
    /// (`now_ms >= expires_at_ms` is expired).
    pub fn verify(&self, token: &str, now_ms: i64) -> Result<Quote, TokenError> {
        let mut parts = token.split('.');
        let (Some(payload), Some(kid), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("expected payload.kid.mac"));
        };
        let key = self
            .key(kid)
            .ok_or_else(|| TokenError::UnknownKey(kid.chars().take(MAX_KEY_ID_LEN).collect()))?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Malformed("mac is not base64url"))?;
        let signing_input = &token[..payload.len() + 1 + kid.len()];
        Self::mac(key, signing_input)
            .verify_slice(&tag)
            .map_err(|_| TokenError::BadSignature)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed("payload is not base64url"))?;
        let quote = decode(&bytes).map_err(TokenError::Payload)?;
        if now_ms >= quote.expires_at_ms {
            return Err(TokenError::Expired {
                expired_at_ms: quote.expires_at_ms,
                now_ms,
            });
        }
        Ok(quote)
    }
}
