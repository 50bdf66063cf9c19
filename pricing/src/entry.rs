//! The price entry a snapshot holds for one [`PriceKey`].
//!
//! Times are Unix milliseconds (UTC). An entry carries its floor: the lowest price any
//! path may quote for it (the control plane's guardrails computed it); the edge clamps
//! to it whatever promotions stack.

use serde::{Deserialize, Serialize};

use crate::key::PriceKey;
use crate::money::Currency;

/// The best automatic promotion for a key, with its own price and time window.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PromotionTag {
    pub id: String,
    /// Human-readable label for the shelf or the app ("Flash sale -20%").
    pub label: String,
    /// The promotional unit price, before the floor clamp.
    pub price_minor: i64,
    /// Window start, inclusive.
    pub starts_at_ms: i64,
    /// Window end, exclusive.
    pub ends_at_ms: i64,
}

impl PromotionTag {
    pub fn is_active_at(&self, now_ms: i64) -> bool {
        self.starts_at_ms <= now_ms && now_ms < self.ends_at_ms
    }
}

/// One price in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceEntry {
    pub key: PriceKey,
    pub currency: Currency,
    /// The regular (strikethrough) price.
    pub list_price_minor: i64,
    /// The price the control plane decided, before any automatic promotion.
    pub price_minor: i64,
    /// Nothing is sold below this unless an admin forced it.
    pub floor_minor: i64,
    pub promotion: Option<PromotionTag>,
    /// The entry applies from this time (inclusive); `None`: already.
    pub valid_from_ms: Option<i64>,
    /// The entry applies until this time (exclusive); `None`: until replaced.
    pub valid_until_ms: Option<i64>,
    /// The snapshot version that last changed this entry.
    pub revision: u64,
}

/// Why an entry is not acceptable in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("{key}: {field} is negative")]
    Negative { key: String, field: &'static str },
    #[error("{key}: price {price} is below its floor {floor}")]
    BelowFloor { key: String, price: i64, floor: i64 },
    #[error("{key}: {what} window ends before it starts")]
    EmptyWindow { key: String, what: &'static str },
}

impl PriceEntry {
    /// The unit price a customer pays at `now_ms`: the active promotion's price if there
    /// is one, never below the floor.
    pub fn effective_price_at(&self, now_ms: i64) -> i64 {
        let base = match &self.promotion {
            Some(promo) if promo.is_active_at(now_ms) => promo.price_minor.min(self.price_minor),
            _ => self.price_minor,
        };
        base.max(self.floor_minor)
    }

    /// Whether the entry applies at `now_ms` (its effective window).
    pub fn is_effective_at(&self, now_ms: i64) -> bool {
        self.valid_from_ms.is_none_or(|from| from <= now_ms)
            && self.valid_until_ms.is_none_or(|until| now_ms < until)
    }

    /// Checks the invariants a snapshot relies on.
    pub fn validate(&self) -> Result<(), EntryError> {
        let key = || self.key.to_string();
        for (field, value) in [
            ("list_price_minor", self.list_price_minor),
            ("price_minor", self.price_minor),
            ("floor_minor", self.floor_minor),
        ] {
            if value < 0 {
                return Err(EntryError::Negative { key: key(), field });
            }
        }
        if self.price_minor < self.floor_minor {
            return Err(EntryError::BelowFloor {
                key: key(),
                price: self.price_minor,
                floor: self.floor_minor,
            });
        }
        if let (Some(from), Some(until)) = (self.valid_from_ms, self.valid_until_ms) {
            if until <= from {
                return Err(EntryError::EmptyWindow {
                    key: key(),
                    what: "validity",
                });
            }
        }
        if let Some(promo) = &self.promotion {
            if promo.price_minor < 0 {
                return Err(EntryError::Negative {
                    key: key(),
                    field: "promotion.price_minor",
                });
            }
            if promo.ends_at_ms <= promo.starts_at_ms {
                return Err(EntryError::EmptyWindow {
                    key: key(),
                    what: "promotion",
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Sku;

    fn entry() -> PriceEntry {
        PriceEntry {
            key: PriceKey::chain_wide(Sku::new("A").unwrap()),
            currency: Currency::EUR,
            list_price_minor: 1000,
            price_minor: 900,
            floor_minor: 700,
            promotion: Some(PromotionTag {
                id: "p1".into(),
                label: "flash".into(),
                price_minor: 500,
                starts_at_ms: 100,
                ends_at_ms: 200,
            }),
            valid_from_ms: None,
            valid_until_ms: None,
            revision: 1,
        }
    }

    #[test]
    fn promotion_applies_only_inside_its_window_and_never_below_floor() {
        let e = entry();
        assert_eq!(e.effective_price_at(99), 900);
        assert_eq!(
            e.effective_price_at(100),
            700,
            "promo 500 clamps to floor 700"
        );
        assert_eq!(e.effective_price_at(200), 900, "window end is exclusive");
    }

    #[test]
    fn validation_names_the_problem() {
        let mut e = entry();
        e.price_minor = 600;
        assert!(matches!(
            e.validate(),
            Err(EntryError::BelowFloor {
                price: 600,
                floor: 700,
                ..
            })
        ));
        let mut e = entry();
        e.list_price_minor = -1;
        assert!(matches!(
            e.validate(),
            Err(EntryError::Negative {
                field: "list_price_minor",
                ..
            })
        ));
        let mut e = entry();
        e.promotion.as_mut().unwrap().ends_at_ms = 50;
        assert!(matches!(
            e.validate(),
            Err(EntryError::EmptyWindow {
                what: "promotion",
                ..
            })
        ));
        assert!(entry().validate().is_ok());
    }
}
