//! Money: an integer count of minor units and an ISO 4217 currency.
//!
//! There are no floats anywhere on a money path. Every operation that can produce a
//! fraction of a minor unit rounds with the one rounding mode of the project:
//! **half away from zero** ("commercial rounding": 0.5 → 1, −0.5 → −1), implemented by
//! [`round_div`]. Arithmetic is checked; overflow is an error, never a wrap.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Errors from money arithmetic and parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("unknown currency code {0:?} (expected an ISO 4217 code such as EUR)")]
    UnknownCurrency(String),
    #[error("currency mismatch: {left} and {right}")]
    CurrencyMismatch { left: Currency, right: Currency },
    #[error("amount overflow")]
    Overflow,
}

/// ISO 4217 currencies this build knows, with their minor-unit exponent.
///
/// Kept sorted by code so lookup is a binary search.
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EGP", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("MAD", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("NGN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PEN", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("SAR", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TND", 3),
    ("TRY", 2),
    ("TWD", 2),
    ("UAH", 2),
    ("USD", 2),
    ("VND", 0),
    ("ZAR", 2),
];

/// An ISO 4217 currency code (three upper-case ASCII letters) known to this build.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

impl Currency {
    pub const EUR: Currency = Currency(*b"EUR");
    pub const USD: Currency = Currency(*b"USD");
    pub const GBP: Currency = Currency(*b"GBP");
    pub const JPY: Currency = Currency(*b"JPY");

    /// Parses a code; only currencies in the ISO table are accepted.
    pub fn parse(code: &str) -> Result<Currency, MoneyError> {
        let bytes = code.as_bytes();
        if bytes.len() != 3 || CURRENCIES.binary_search_by(|(c, _)| c.cmp(&code)).is_err() {
            return Err(MoneyError::UnknownCurrency(code.to_owned()));
        }
        Ok(Currency([bytes[0], bytes[1], bytes[2]]))
    }

    /// The three-letter code.
    pub fn as_str(&self) -> &str {
        // Constructed only from ASCII codes in the table.
        std::str::from_utf8(&self.0).expect("currency codes are ASCII")
    }

    /// Number of decimal places of the minor unit (2 for EUR, 0 for JPY, 3 for KWD).
    pub fn exponent(&self) -> u8 {
        CURRENCIES
            .binary_search_by(|(c, _)| c.as_bytes().cmp(&self.0[..]))
            .map(|i| CURRENCIES[i].1)
            .unwrap_or(2)
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::parse(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Currency::parse(&code).map_err(serde::de::Error::custom)
    }
}

/// An amount of money: minor units (cents for EUR) and a currency.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub minor: i64,
    pub currency: Currency,
}

impl Money {
    pub const fn new(minor: i64, currency: Currency) -> Money {
        Money { minor, currency }
    }

    pub const fn zero(currency: Currency) -> Money {
        Money { minor: 0, currency }
    }

    fn same_currency(&self, other: &Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            })
        }
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(&other)?;
        let minor = self
            .minor
            .checked_add(other.minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money { minor, ..self })
    }

    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(&other)?;
        let minor = self
            .minor
            .checked_sub(other.minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money { minor, ..self })
    }

    /// Multiplies by a quantity.
    pub fn times(self, quantity: i64) -> Result<Money, MoneyError> {
        let minor = self
            .minor
            .checked_mul(quantity)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money { minor, ..self })
    }

    /// `basis_points / 10_000` of this amount, rounded half away from zero.
    /// 1,500 bp of 999 is 149.85 → 150.
    pub fn percent_bp(self, basis_points: i64) -> Result<Money, MoneyError> {
        let minor = round_div(self.minor as i128 * basis_points as i128, 10_000)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money { minor, ..self })
    }

    pub fn max(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(&other)?;
        Ok(if other.minor > self.minor {
            other
        } else {
            self
        })
    }

    pub fn min(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(&other)?;
        Ok(if other.minor < self.minor {
            other
        } else {
            self
        })
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// `12.34 EUR`, `-0.05 EUR`, `1200 JPY`.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exponent = self.currency.exponent() as u32;
        if exponent == 0 {
            return write!(f, "{} {}", self.minor, self.currency);
        }
        let scale = 10u64.pow(exponent);
        let sign = if self.minor < 0 { "-" } else { "" };
        let abs = self.minor.unsigned_abs();
        write!(
            f,
            "{sign}{}.{:0width$} {}",
            abs / scale,
            abs % scale,
            self.currency,
            width = exponent as usize
        )
    }
}

/// Divides `numerator / denominator` rounding half away from zero — the project's one
/// rounding mode. `None` if the denominator is zero or the result does not fit an `i64`.
pub fn round_div(numerator: i128, denominator: i128) -> Option<i64> {
    if denominator == 0 {
        return None;
    }
    let (n, d) = if denominator < 0 {
        (-numerator, -denominator)
    } else {
        (numerator, denominator)
    };
    let quotient = n / d;
    let remainder = n % d;
    // |remainder| * 2 >= d means the fraction is at least one half: move away from zero.
    let rounded = if remainder.abs() * 2 >= d {
        quotient + n.signum()
    } else {
        quotient
    };
    i64::try_from(rounded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rounding_is_half_away_from_zero() {
        assert_eq!(round_div(15, 10), Some(2));
        assert_eq!(round_div(14, 10), Some(1));
        assert_eq!(round_div(-15, 10), Some(-2));
        assert_eq!(round_div(-14, 10), Some(-1));
        assert_eq!(round_div(25, -10), Some(-3));
        assert_eq!(round_div(1, 0), None);
    }

    #[test]
    fn percent_of_amount() {
        let price = Money::new(999, Currency::EUR);
        assert_eq!(price.percent_bp(1_500).unwrap().minor, 150);
        assert_eq!(price.percent_bp(10_000).unwrap().minor, 999);
        assert_eq!(price.percent_bp(0).unwrap().minor, 0);
    }

    #[test]
    fn currencies_are_validated() {
        assert_eq!(Currency::parse("EUR").unwrap(), Currency::EUR);
        assert!(Currency::parse("eur").is_err());
        assert!(Currency::parse("XXX").is_err());
        assert!(Currency::parse("EURO").is_err());
        assert_eq!(Currency::JPY.exponent(), 0);
        assert_eq!(Currency::parse("KWD").unwrap().exponent(), 3);
    }

    #[test]
    fn mixing_currencies_is_an_error() {
        let a = Money::new(100, Currency::EUR);
        let b = Money::new(100, Currency::USD);
        assert!(matches!(
            a.checked_add(b),
            Err(MoneyError::CurrencyMismatch { .. })
        ));
    }

    #[test]
    fn overflow_is_an_error() {
        let a = Money::new(i64::MAX, Currency::EUR);
        assert_eq!(
            a.checked_add(Money::new(1, Currency::EUR)),
            Err(MoneyError::Overflow)
        );
        assert_eq!(a.times(2), Err(MoneyError::Overflow));
    }

    #[test]
    fn display_uses_the_currency_exponent() {
        assert_eq!(Money::new(1234, Currency::EUR).to_string(), "12.34 EUR");
        assert_eq!(Money::new(-5, Currency::EUR).to_string(), "-0.05 EUR");
        assert_eq!(Money::new(1200, Currency::JPY).to_string(), "1200 JPY");
    }

    #[test]
    fn currency_table_is_sorted() {
        assert!(CURRENCIES.windows(2).all(|w| w[0].0 < w[1].0));
    }

    proptest! {
        #[test]
        fn round_div_is_within_half_a_unit(n in -1_000_000_000i64..1_000_000_000, d in 1i64..100_000) {
            let r = round_div(n as i128, d as i128).unwrap() as i128;
            // |r*d - n| <= d/2
            prop_assert!(((r * d as i128) - n as i128).abs() * 2 <= d as i128);
        }

        #[test]
        fn round_div_is_symmetric(n in -1_000_000_000i64..1_000_000_000, d in 1i64..100_000) {
            prop_assert_eq!(round_div(n as i128, d as i128), round_div(-n as i128, d as i128).map(|v| -v));
        }

        #[test]
        fn percentage_never_exceeds_amount(minor in 0i64..1_000_000_000, bp in 0i64..=10_000) {
            let part = Money::new(minor, Currency::EUR).percent_bp(bp).unwrap();
            prop_assert!(part.minor >= 0 && part.minor <= minor);
        }
    }
}
