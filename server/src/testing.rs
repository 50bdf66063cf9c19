//! Fixtures shared by the crate's unit tests.

use edgeprice_pricing::{Currency, Dimension, PriceEntry, PriceKey, Sku};
use edgeprice_schemas::codec::DeltaData;

/// A key from its four parts (`*` for any).
pub fn key(sku: &str, store: &str, channel: &str, segment: &str) -> PriceKey {
    PriceKey {
        sku: Sku::new(sku).unwrap(),
        store: Dimension::new(store).unwrap(),
        channel: Dimension::new(channel).unwrap(),
        segment: Dimension::new(segment).unwrap(),
    }
}

/// An EUR entry at `price` (list price too), floor 0, no promotion, open windows.
pub fn entry(key: PriceKey, price: i64) -> PriceEntry {
    PriceEntry {
        key,
        currency: Currency::EUR,
        list_price_minor: price,
        price_minor: price,
        floor_minor: 0,
        promotion: None,
        valid_from_ms: None,
        valid_until_ms: None,
        revision: 1,
    }
}

/// The chain-wide entry of `sku`.
pub fn chain_entry(sku: &str, price: i64) -> PriceEntry {
    entry(PriceKey::chain_wide(Sku::new(sku).unwrap()), price)
}

/// The delta `base → base + 1` that sets SKU `A` to `price`.
pub fn reprice_a(base: u64, price: i64) -> DeltaData {
    DeltaData {
        base_version: base,
        version: base + 1,
        created_at_ms: 0,
        promotions: None,
        upserts: vec![chain_entry("A", price)],
        removals: vec![],
    }
}
