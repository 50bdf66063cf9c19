//! Price keys: which SKU, in which store, on which channel, for which customer segment.
//!
//! Store, channel and segment may be `*` ("any"). A lookup falls back from the most
//! specific entry to the chain-wide one in this fixed order (store outranks channel,
//! channel outranks segment):
//!
//! | rank | store | channel | segment |
//! |------|-------|---------|---------|
//! | 7    | S     | C       | G       |
//! | 6    | S     | C       | *       |
//! | 5    | S     | *       | G       |
//! | 4    | S     | *       | *       |
//! | 3    | *     | C       | G       |
//! | 2    | *     | C       | *       |
//! | 1    | *     | *       | G       |
//! | 0    | *     | *       | *       |
//!
//! [`specificity`] computes the rank; the entry with the highest rank among those that
//! match wins.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The wildcard dimension value.
pub const ANY: &str = "*";

/// Longest accepted SKU or dimension value, in bytes.
pub const MAX_KEY_LEN: usize = 64;

/// Why a key was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{field} is empty")]
    Empty { field: &'static str },
    #[error("{field} is {len} bytes long; the limit is {MAX_KEY_LEN}")]
    TooLong { field: &'static str, len: usize },
    #[error("{field} contains {ch:?}; allowed are letters, digits and . _ - :")]
    BadCharacter { field: &'static str, ch: char },
}

/// Checks a SKU or dimension value: 1–64 bytes of `[A-Za-z0-9._:-]`.
pub fn validate(field: &'static str, value: &str) -> Result<(), KeyError> {
    if value.is_empty() {
        return Err(KeyError::Empty { field });
    }
    if value.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong {
            field,
            len: value.len(),
        });
    }
    // Bytes, not chars: every key character is ASCII, so the first byte that is not a
    // key character starts the character to report.
    match value.bytes().position(|b| !is_key_byte(b)) {
        Some(at) => Err(KeyError::BadCharacter {
            field,
            ch: value[at..]
                .chars()
                .next()
                .expect("a character starts at `at`"),
        }),
        None => Ok(()),
    }
}

#[inline]
fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':')
}

/// A validated stock-keeping unit identifier.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sku(Box<str>);

impl Sku {
    pub fn new(value: &str) -> Result<Sku, KeyError> {
        validate("sku", value)?;
        Ok(Sku(value.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Sku {
    type Error = KeyError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        validate("sku", &value)?;
        Ok(Sku(value.into_boxed_str()))
    }
}

impl From<Sku> for String {
    fn from(sku: Sku) -> String {
        sku.0.into()
    }
}

impl fmt::Debug for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A store, channel or segment value, or `*` for "any".
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Dimension(Box<str>);

impl Dimension {
    pub fn any() -> Dimension {
        Dimension(ANY.into())
    }

    /// `*` or a valid key value.
    pub fn new(value: &str) -> Result<Dimension, KeyError> {
        if value != ANY {
            validate("dimension", value)?;
        }
        Ok(Dimension(value.into()))
    }

    pub fn is_any(&self) -> bool {
        &*self.0 == ANY
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Dimension {
    fn default() -> Self {
        Dimension::any()
    }
}

impl TryFrom<String> for Dimension {
    type Error = KeyError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Dimension::new(&value)
    }
}

impl From<Dimension> for String {
    fn from(d: Dimension) -> String {
        d.0.into()
    }
}

impl fmt::Debug for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The full address of a price.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PriceKey {
    pub sku: Sku,
    #[serde(default)]
    pub store: Dimension,
    #[serde(default)]
    pub channel: Dimension,
    #[serde(default)]
    pub segment: Dimension,
}

impl PriceKey {
    /// The chain-wide key `(sku, *, *, *)`.
    pub fn chain_wide(sku: Sku) -> PriceKey {
        PriceKey {
            sku,
            store: Dimension::any(),
            channel: Dimension::any(),
            segment: Dimension::any(),
        }
    }
}

impl fmt::Display for PriceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}/{}/{}",
            self.sku, self.store, self.channel, self.segment
        )
    }
}

/// The fallback rank of an entry whose dimensions are specific (`true`) or `*`
/// (`false`); see the module docs.
#[inline]
pub const fn specificity(store: bool, channel: bool, segment: bool) -> u8 {
    ((store as u8) << 2) | ((channel as u8) << 1) | (segment as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_skus() {
        for s in ["SKU-1", "a.b_c:d-9", &"x".repeat(MAX_KEY_LEN)] {
            assert!(Sku::new(s).is_ok(), "{s}");
        }
    }

    #[test]
    fn rejects_bad_skus_with_a_reason() {
        assert_eq!(Sku::new(""), Err(KeyError::Empty { field: "sku" }));
        assert_eq!(
            Sku::new(&"x".repeat(MAX_KEY_LEN + 1)),
            Err(KeyError::TooLong {
                field: "sku",
                len: MAX_KEY_LEN + 1
            })
        );
        assert_eq!(
            Sku::new("a b"),
            Err(KeyError::BadCharacter {
                field: "sku",
                ch: ' '
            })
        );
        assert_eq!(
            Sku::new("*"),
            Err(KeyError::BadCharacter {
                field: "sku",
                ch: '*'
            })
        );
        // The whole character is reported, not the byte it starts with.
        assert_eq!(
            Sku::new("SKU-é1"),
            Err(KeyError::BadCharacter {
                field: "sku",
                ch: 'é'
            })
        );
    }

    #[test]
    fn dimension_allows_wildcard() {
        assert!(Dimension::new("*").unwrap().is_any());
        assert!(!Dimension::new("store-1").unwrap().is_any());
        assert!(Dimension::new("st ore").is_err());
    }

    #[test]
    fn specificity_orders_store_over_channel_over_segment() {
        assert_eq!(specificity(true, true, true), 7);
        assert!(specificity(true, false, false) > specificity(false, true, true));
        assert!(specificity(false, true, false) > specificity(false, false, true));
        assert_eq!(specificity(false, false, false), 0);
    }

    #[test]
    fn key_round_trips_through_json() {
        let key: PriceKey = serde_json::from_str(r#"{"sku":"A1","store":"s1"}"#).unwrap();
        assert_eq!(key.store.as_str(), "s1");
        assert!(key.channel.is_any());
        assert!(serde_json::from_str::<PriceKey>(r#"{"sku":"A 1"}"#).is_err());
    }
}
