//! Synthetic feed events for the control-plane benches, shaped like the `up --demo`
//! simulator's: a catalog of SKUs in five categories with vendor costs, stock in four
//! stores and competitor prices for a third of them, then a stream that is mostly
//! demand signals and sales (a quarter of them on a few hot SKUs) with occasional
//! competitor moves, small vendor cost changes, stock movements, and a flash sale.
//!
//! Events are NDJSON lines, as a producer would send them to `POST /v1/feeds/{feed}`.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The feed names of the control plane.
pub const FEEDS: [&str; 6] = [
    "catalog",
    "cost",
    "competitor",
    "inventory",
    "sales",
    "promotions",
];

const STORES: [&str; 4] = ["store-1", "store-2", "store-3", "store-4"];
const CHANNELS: [&str; 3] = ["web", "app", "pos"];
const CATEGORIES: [(&str, i64); 5] = [
    ("grocery", 700),
    ("electronics", 2_000),
    ("apparel", 2_000),
    ("home", 2_000),
    ("toys", 2_000),
];

/// One event: its feed (an index into [`FEEDS`]), its SKU index and its JSON line.
#[derive(Debug, Clone)]
pub struct Event {
    pub feed: usize,
    pub sku: usize,
    pub json: String,
}

/// The SKU name for index `i` (0-based), as the demo and generated snapshots name them.
pub fn sku(i: usize) -> String {
    format!("SKU-{:07}", i + 1)
}

/// A deterministic producer of events over `skus` SKUs.
#[derive(Debug)]
pub struct FeedGen {
    rng: SmallRng,
    run: String,
    next_event: u64,
    /// List price and current cost per SKU.
    items: Vec<(i64, i64)>,
}

impl FeedGen {
    /// `run` makes event ids unique across runs over the same data directory.
    pub fn new(skus: usize, run: &str) -> FeedGen {
        let mut rng = SmallRng::seed_from_u64(2026);
        let items = (0..skus)
            .map(|_| {
                let magnitude = [1_000, 10_000, 100_000][rng.gen_range(0..3)];
                let list = rng.gen_range(magnitude / 10..magnitude) / 10 * 10 + 9;
                (list, list * rng.gen_range(40..=60) / 100)
            })
            .collect();
        FeedGen {
            rng,
            run: run.to_owned(),
            next_event: 0,
            items,
        }
    }

    /// SKUs in the catalog.
    pub fn skus(&self) -> usize {
        self.items.len()
    }

    fn event_id(&mut self) -> String {
        self.next_event += 1;
        format!("{}-{}", self.run, self.next_event)
    }

    /// The catalog, costs, stock and competitor prices of every SKU, and a flash sale
    /// (30% off) on every 200th SKU, all at `now_ms`.
    pub fn seed(&mut self, now_ms: i64) -> Vec<Event> {
        let mut out = Vec::new();
        for i in 0..self.items.len() {
            let (category, tax_rate_bp) = CATEGORIES[i % CATEGORIES.len()];
            let (list, cost) = self.items[i];
            let sku = sku(i);
            let id = self.event_id();
            out.push(Event { feed: 0, sku: i, json: format!(
                r#"{{"event_id":"{id}","sku":"{sku}","category":"{category}","currency":"EUR","list_price_minor":{list},"tax_rate_bp":{tax_rate_bp},"logistics_minor":{},"occurred_at_ms":{now_ms}}}"#,
                list / 50
            )});
            let id = self.event_id();
            out.push(Event { feed: 1, sku: i, json: format!(
                r#"{{"event_id":"{id}","sku":"{sku}","vendor":"acme","currency":"EUR","cost_minor":{cost},"effective_at_ms":{now_ms},"occurred_at_ms":{now_ms}}}"#
            )});
            for store in STORES {
                let id = self.event_id();
                let quantity = self.rng.gen_range(50..400);
                out.push(Event { feed: 3, sku: i, json: format!(
                    r#"{{"event_id":"{id}","sku":"{sku}","store":"{store}","kind":"on_hand","quantity":{quantity},"occurred_at_ms":{now_ms}}}"#
                )});
            }
            if i % 3 == 0 {
                let id = self.event_id();
                let price = list - list * self.rng.gen_range(0..8) / 100;
                out.push(Event { feed: 2, sku: i, json: format!(
                    r#"{{"event_id":"{id}","sku":"{sku}","competitor":"rival","currency":"EUR","price_minor":{price},"occurred_at_ms":{now_ms}}}"#
                )});
            }
            if i % 200 == 0 {
                let id = self.event_id();
                out.push(Event { feed: 5, sku: i, json: format!(
                    r#"{{"event_id":"{id}","promotion_id":"flash","sku":"{sku}","action":"upsert","label":"Flash sale -30%","discount":{{"kind":"percent_bp","value":3000}},"starts_at_ms":{now_ms},"ends_at_ms":{},"max_per_customer":2,"occurred_at_ms":{now_ms}}}"#,
                    now_ms + 3_600_000
                )});
            }
        }
        out
    }

    /// The next event of the stream at `now_ms`: 94% demand signals and sales (a quarter
    /// of them on 20 hot SKUs), 3% competitor prices, 1.5% cost changes of a few
    /// percent, 1.5% stock movements.
    pub fn next(&mut self, now_ms: i64) -> Event {
        let roll = self.rng.gen_range(0..1_000);
        let skus = self.items.len();
        let id = self.event_id();
        if roll < 940 {
            let i = if self.rng.gen_range(0..4) == 0 {
                self.rng.gen_range(0..20.min(skus))
            } else {
                self.rng.gen_range(0..skus)
            };
            let kind = ["view", "view", "view", "cart_add", "checkout", "pos_sale"]
                [self.rng.gen_range(0..6)];
            let store = STORES[self.rng.gen_range(0..STORES.len())];
            let channel = CHANNELS[self.rng.gen_range(0..CHANNELS.len())];
            let quantity = if kind == "view" {
                1
            } else {
                self.rng.gen_range(1..3)
            };
            let sku = sku(i);
            Event {
                feed: 4,
                sku: i,
                json: format!(
                    r#"{{"event_id":"{id}","sku":"{sku}","store":"{store}","channel":"{channel}","kind":"{kind}","quantity":{quantity},"occurred_at_ms":{now_ms}}}"#
                ),
            }
        } else if roll < 970 {
            let i = self.rng.gen_range(0..skus.div_ceil(3)) * 3;
            let list = self.items[i].0;
            let price = list - list * self.rng.gen_range(5..20) / 100;
            let sku = sku(i);
            Event {
                feed: 2,
                sku: i,
                json: format!(
                    r#"{{"event_id":"{id}","sku":"{sku}","competitor":"rival","currency":"EUR","price_minor":{price},"occurred_at_ms":{now_ms}}}"#
                ),
            }
        } else if roll < 985 {
            let i = self.rng.gen_range(0..skus);
            let cost = (self.items[i].1 * self.rng.gen_range(98..=103) / 100).max(1);
            self.items[i].1 = cost;
            let sku = sku(i);
            Event {
                feed: 1,
                sku: i,
                json: format!(
                    r#"{{"event_id":"{id}","sku":"{sku}","vendor":"acme","currency":"EUR","cost_minor":{cost},"effective_at_ms":{now_ms},"occurred_at_ms":{now_ms}}}"#
                ),
            }
        } else {
            let i = self.rng.gen_range(0..skus);
            let (kind, quantity) = if self.rng.gen_range(0..2) == 0 {
                ("stock_in", 24)
            } else {
                ("stock_out", 2)
            };
            let store = STORES[self.rng.gen_range(0..STORES.len())];
            let sku = sku(i);
            Event {
                feed: 3,
                sku: i,
                json: format!(
                    r#"{{"event_id":"{id}","sku":"{sku}","store":"{store}","kind":"{kind}","quantity":{quantity},"occurred_at_ms":{now_ms}}}"#
                ),
            }
        }
    }
}
