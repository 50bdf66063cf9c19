//! Synthetic price tables for demos, tests and benchmarks.
//!
//! Realistic in shape: list prices spread over three orders of magnitude ending in 9,
//! vendor costs at 45–65% of list, floors at the 30%-margin price for that cost,
//! store and channel variants a few percent around the chain price, member prices for
//! about one SKU in ten, and about one SKU in eight on promotion (some running now,
//! some starting within the hour, some cut by their floor).
//!
//! Entries: `skus × (1 + stores × channels)` plus the member prices.
//! SKUs are `SKU-0000001`…, stores `store-1`…, channels `web`, `app`, `pos`,
//! `marketplace`, `kiosk`, `phone`, then `channel-7`….

use edgeprice_pricing::{Currency, Dimension, PriceEntry, PriceKey, PromotionTag, Sku};
use edgeprice_schemas::codec::SnapshotData;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const CHANNELS: [&str; 6] = ["web", "app", "pos", "marketplace", "kiosk", "phone"];

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthSpec {
    pub skus: usize,
    pub stores: usize,
    pub channels: usize,
    pub seed: u64,
    pub version: u64,
    /// Promotions are placed around this time (Unix ms).
    pub now_ms: i64,
    pub currency: Currency,
}

/// The SKU name for index `i` (1-based).
pub fn sku_name(i: usize) -> String {
    format!("SKU-{i:07}")
}

/// The channel name for index `i` (0-based).
pub fn channel_name(i: usize) -> String {
    CHANNELS
        .get(i)
        .map(|c| c.to_string())
        .unwrap_or_else(|| format!("channel-{}", i + 1))
}

/// The lowest price with at least a 30% margin over `cost` (rounded up).
fn floor_for(cost: i64) -> i64 {
    (cost * 10_000 + 6_999) / 7_000
}

/// Generates a table. The same spec always gives the same table.
pub fn generate(spec: &SynthSpec) -> SnapshotData {
    let mut rng = SmallRng::seed_from_u64(spec.seed);
    let stores: Vec<Dimension> = (1..=spec.stores)
        .map(|i| Dimension::new(&format!("store-{i}")).expect("valid"))
        .collect();
    let channels: Vec<Dimension> = (0..spec.channels)
        .map(|i| Dimension::new(&channel_name(i)).expect("valid"))
        .collect();
    let member = Dimension::new("member").expect("valid");
    let mut entries =
        Vec::with_capacity(spec.skus * (1 + spec.stores * spec.channels) + spec.skus / 10);
    for i in 1..=spec.skus {
        let sku = Sku::new(&sku_name(i)).expect("valid");
        // 0.99 .. 999.99, log-uniform-ish, ending in 9.
        let magnitude = [100, 1_000, 10_000, 100_000][rng.gen_range(0..4)];
        let list = (rng.gen_range(magnitude / 10..magnitude) / 10) * 10 + 9;
        let cost = list * rng.gen_range(45..=65) / 100;
        let floor = floor_for(cost);
        let chain_price = (list - list * rng.gen_range(0..=10) / 100).max(floor);
        let promotion = (rng.gen_range(0..8) == 0).then(|| {
            let starts_at_ms = spec.now_ms + [-3_600_000, -60_000, 1_800_000][rng.gen_range(0..3)];
            let discount_pct = [10, 20, 30, 50][rng.gen_range(0..4)];
            PromotionTag {
                id: format!("promo-{i}"),
                label: format!("{discount_pct}% off"),
                price_minor: list - list * discount_pct / 100,
                starts_at_ms,
                ends_at_ms: starts_at_ms + rng.gen_range(1..=48) * 3_600_000,
            }
        });
        let entry = |key: PriceKey, price: i64| PriceEntry {
            key,
            currency: spec.currency,
            list_price_minor: list,
            price_minor: price.max(floor),
            floor_minor: floor,
            promotion: promotion.clone(),
            valid_from_ms: None,
            valid_until_ms: None,
            revision: spec.version,
        };
        entries.push(entry(PriceKey::chain_wide(sku.clone()), chain_price));
        for store in &stores {
            let store_adjust_pct = rng.gen_range(-5..=5);
            for (c, channel) in channels.iter().enumerate() {
                let channel_adjust_pct = if c == 0 { -3 } else { 0 };
                let price =
                    chain_price + chain_price * (store_adjust_pct + channel_adjust_pct) / 100;
                let key = PriceKey {
                    sku: sku.clone(),
                    store: store.clone(),
                    channel: channel.clone(),
                    segment: Dimension::any(),
                };
                entries.push(entry(key, price));
            }
        }
        if i % 10 == 0 {
            let key = PriceKey {
                sku: sku.clone(),
                store: Dimension::any(),
                channel: Dimension::any(),
                segment: member.clone(),
            };
            entries.push(entry(key, chain_price - chain_price * 5 / 100));
        }
    }
    SnapshotData {
        version: spec.version,
        created_at_ms: spec.now_ms,
        promotions: None,
        entries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SynthSpec {
        SynthSpec {
            skus: 200,
            stores: 3,
            channels: 2,
            seed: 7,
            version: 1,
            now_ms: 1_800_000_000_000,
            currency: Currency::EUR,
        }
    }

    #[test]
    fn generates_the_documented_shape_with_valid_entries() {
        let data = generate(&spec());
        assert_eq!(data.entries.len(), 200 * (1 + 3 * 2) + 20);
        for e in &data.entries {
            e.validate().unwrap();
            assert!(e.list_price_minor % 10 == 9);
            assert!(e.price_minor >= e.floor_minor);
        }
        let promoted = data
            .entries
            .iter()
            .filter(|e| e.key.store.is_any() && e.key.segment.is_any() && e.promotion.is_some())
            .count();
        assert!((5..=60).contains(&promoted), "{promoted} SKUs on promotion");
    }

    #[test]
    fn is_deterministic() {
        assert_eq!(generate(&spec()), generate(&spec()));
    }

    #[test]
    fn floors_keep_a_thirty_percent_margin() {
        for cost in [1, 7, 100, 12_345] {
            let floor = floor_for(cost);
            assert!(
                (floor - cost) * 100 >= 30 * floor,
                "cost {cost} floor {floor}"
            );
            assert!((floor - 1 - cost) * 100 < 30 * (floor - 1));
        }
    }
}
