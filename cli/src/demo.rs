//! The `edgeprice up --demo` feed simulator.
//!
//! It plays the producers a shop would have — a catalog system, vendors, a competitor
//! scraper, stores' stock systems, tills and the web shop — and sends their events as
//! JSON through the control plane's real ingestion path (validation, dedup, durable
//! log), so a newcomer sees prices move within seconds:
//! - at start: 10,000 SKUs in five categories, vendor costs, stock in 4 stores,
//!   competitor prices for a third of the SKUs;
//! - every tick (250 ms): views, cart adds and sales on 3 channels, with a handful of
//!   "hot" SKUs selling ten times faster; occasional competitor price drops, vendor cost
//!   changes and stock movements;
//! - after 20 s: a flash sale (30% off 50 SKUs for 10 minutes), some of which the margin
//!   guardrail cuts or blocks.
//!
//! Event ids carry the run's start time, so a restarted demo never collides with the
//! events an earlier run left in the log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use edgeprice_control::feeds::FeedKind;
use edgeprice_control::store::{Ingestor, Outcome, Submission};
use edgeprice_server::store::now_ms;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tracing::{info, warn};

/// SKUs in the demo catalog.
pub const DEMO_SKUS: usize = 10_000;
const STORES: [&str; 4] = ["store-1", "store-2", "store-3", "store-4"];
const CHANNELS: [&str; 3] = ["web", "app", "pos"];
const CATEGORIES: [(&str, i64); 5] = [
    ("grocery", 700),
    ("electronics", 2_000),
    ("apparel", 2_000),
    ("home", 2_000),
    ("toys", 2_000),
];
const TICK: Duration = Duration::from_millis(250);
const FLASH_SALE_AFTER: Duration = Duration::from_secs(20);
const FLASH_SALE_SKUS: usize = 50;

/// The SKU name for index `i` (1-based), the same naming as generated snapshots.
pub fn sku(i: usize) -> String {
    edgeprice_server::synth::sku_name(i)
}

/// What the simulator knows about one SKU (it is a producer: it keeps its own view).
struct Item {
    list_price_minor: i64,
    cost_minor: i64,
}

/// A running simulator; dropping it stops it.
pub struct Simulator {
    stop: Arc<AtomicBool>,
    worker_jh: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator").finish_non_exhaustive()
    }
}

impl Simulator {
    pub fn start(ingestor: Arc<Ingestor>) -> anyhow::Result<Simulator> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let worker_jh = std::thread::Builder::new()
            .name("edgeprice-demo".into())
            .spawn(move || {
                let mut producer = Producer::new(ingestor);
                if let Err(err) = producer.run(&stop_flag) {
                    warn!(error = %format!("{err:#}"), "demo simulator stopped");
                }
            })?;
        Ok(Simulator {
            stop,
            worker_jh: Some(worker_jh),
        })
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(jh) = self.worker_jh.take() {
            let _ = jh.join();
        }
    }
}

struct Producer {
    ingestor: Arc<Ingestor>,
    rng: SmallRng,
    run_id: i64,
    next_event: u64,
    items: Vec<Item>,
    batch: Vec<Submission>,
}

impl Producer {
    fn new(ingestor: Arc<Ingestor>) -> Producer {
        let mut rng = SmallRng::seed_from_u64(2026);
        let items = (0..DEMO_SKUS)
            .map(|_| {
                let magnitude = [1_000, 10_000, 100_000][rng.gen_range(0..3)];
                let list_price_minor = rng.gen_range(magnitude / 10..magnitude) / 10 * 10 + 9;
                Item {
                    list_price_minor,
                    cost_minor: list_price_minor * rng.gen_range(40..=60) / 100,
                }
            })
            .collect();
        Producer {
            ingestor,
            rng,
            run_id: now_ms(),
            next_event: 0,
            items,
            batch: Vec::new(),
        }
    }

    fn event_id(&mut self) -> String {
        self.next_event += 1;
        format!("demo-{}-{}", self.run_id, self.next_event)
    }

    fn push(&mut self, feed: FeedKind, event: serde_json::Value) {
        self.batch.push(Submission {
            feed,
            body: event.to_string().into_bytes(),
        });
    }

    /// Sends the queued events; they are durable when this returns.
    fn flush(&mut self) -> anyhow::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        // Storage can be busy for a while (a long batch holding the write lock on a
        // loaded machine): resend like a real producer, safe thanks to the event ids.
        let mut attempt = 0;
        let outcomes = loop {
            match self.ingestor.ingest_blocking(batch.clone()) {
                Ok(outcomes) => break outcomes,
                Err(err) if attempt < 20 => {
                    attempt += 1;
                    warn!(error = %err, attempt, "demo events not stored yet; resending");
                    std::thread::sleep(std::time::Duration::from_millis(250 * attempt));
                }
                Err(err) => return Err(err.into()),
            }
        };
        for outcome in outcomes {
            if let Outcome::Rejected(err) = outcome {
                // The simulator only sends valid events: a rejection is a bug worth seeing.
                warn!(code = err.code(), error = %err, "demo event rejected");
            }
        }
        Ok(())
    }

    fn seed(&mut self) -> anyhow::Result<()> {
        let now = now_ms();
        for i in 0..DEMO_SKUS {
            let (category, tax_rate_bp) = CATEGORIES[i % CATEGORIES.len()];
            let (list, cost) = (self.items[i].list_price_minor, self.items[i].cost_minor);
            let event_id = self.event_id();
            self.push(
                FeedKind::Catalog,
                json!({"event_id": event_id, "sku": sku(i + 1), "category": category, "currency": "EUR",
                       "list_price_minor": list, "tax_rate_bp": tax_rate_bp, "logistics_minor": list / 50,
                       "occurred_at_ms": now}),
            );
            let event_id = self.event_id();
            self.push(
                FeedKind::Cost,
                json!({"event_id": event_id, "sku": sku(i + 1), "vendor": "acme", "currency": "EUR",
                       "cost_minor": cost, "effective_at_ms": now, "occurred_at_ms": now}),
            );
            for store in STORES {
                let event_id = self.event_id();
                let quantity = self.rng.gen_range(5..200);
                self.push(
                    FeedKind::Inventory,
                    json!({"event_id": event_id, "sku": sku(i + 1), "store": store, "kind": "on_hand",
                           "quantity": quantity, "occurred_at_ms": now}),
                );
            }
            if i % 3 == 0 {
                let event_id = self.event_id();
                let price = list - list * self.rng.gen_range(0..8) / 100;
                self.push(
                    FeedKind::Competitor,
                    json!({"event_id": event_id, "sku": sku(i + 1), "competitor": "rival", "currency": "EUR",
                           "price_minor": price, "occurred_at_ms": now}),
                );
            }
            if self.batch.len() >= 4_000 {
                self.flush()?;
            }
        }
        self.flush()?;
        info!(
            skus = DEMO_SKUS,
            "demo catalog, costs, stock and competitor prices sent"
        );
        Ok(())
    }

    fn tick(&mut self, flash_sale_skus: &[usize]) -> anyhow::Result<()> {
        let now = now_ms();
        // Demand: most SKUs trickle, the flash-sale SKUs and a few hot ones spike.
        for _ in 0..150 {
            let hot = self.rng.gen_range(0..4) == 0;
            let i = if hot && !flash_sale_skus.is_empty() {
                flash_sale_skus[self.rng.gen_range(0..flash_sale_skus.len())]
            } else if hot {
                self.rng.gen_range(0..20)
            } else {
                self.rng.gen_range(0..DEMO_SKUS)
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
            let event_id = self.event_id();
            self.push(
                FeedKind::Sales,
                json!({"event_id": event_id, "sku": sku(i + 1), "store": store, "channel": channel,
                       "kind": kind, "quantity": quantity, "occurred_at_ms": now}),
            );
        }
        // A competitor drops a price now and then.
        for _ in 0..self.rng.gen_range(0..4) {
            let i = self.rng.gen_range(0..DEMO_SKUS / 3) * 3;
            let list = self.items[i].list_price_minor;
            let price = list - list * self.rng.gen_range(5..20) / 100;
            let event_id = self.event_id();
            self.push(
                FeedKind::Competitor,
                json!({"event_id": event_id, "sku": sku(i + 1), "competitor": "rival", "currency": "EUR",
                       "price_minor": price, "occurred_at_ms": now}),
            );
        }
        // A vendor changes a cost by a few percent.
        if self.rng.gen_range(0..2) == 0 {
            let i = self.rng.gen_range(0..DEMO_SKUS);
            let item = &mut self.items[i];
            item.cost_minor = (item.cost_minor * self.rng.gen_range(95..=108) / 100).max(1);
            let cost = item.cost_minor;
            let event_id = self.event_id();
            self.push(
                FeedKind::Cost,
                json!({"event_id": event_id, "sku": sku(i + 1), "vendor": "acme", "currency": "EUR",
                       "cost_minor": cost, "effective_at_ms": now, "occurred_at_ms": now}),
            );
        }
        // Stock arrives or leaves.
        for _ in 0..self.rng.gen_range(0..3) {
            let i = self.rng.gen_range(0..DEMO_SKUS);
            let (kind, quantity) = if self.rng.gen_range(0..2) == 0 {
                ("stock_in", 24)
            } else {
                ("stock_out", 2)
            };
            let store = STORES[self.rng.gen_range(0..STORES.len())];
            let event_id = self.event_id();
            self.push(
                FeedKind::Inventory,
                json!({"event_id": event_id, "sku": sku(i + 1), "store": store, "kind": kind,
                       "quantity": quantity, "occurred_at_ms": now}),
            );
        }
        self.flush()
    }

    fn start_flash_sale(&mut self) -> anyhow::Result<Vec<usize>> {
        let now = now_ms();
        let skus: Vec<usize> = (0..FLASH_SALE_SKUS)
            .map(|n| n * (DEMO_SKUS / FLASH_SALE_SKUS))
            .collect();
        for &i in &skus {
            let event_id = self.event_id();
            self.push(
                FeedKind::Promotions,
                json!({"event_id": event_id, "promotion_id": format!("flash-{}", self.run_id), "sku": sku(i + 1),
                       "action": "upsert", "label": "Flash sale -30%",
                       "discount": {"kind": "percent_bp", "value": 3_000},
                       "starts_at_ms": now, "ends_at_ms": now + 600_000, "max_per_customer": 2,
                       "occurred_at_ms": now}),
            );
        }
        self.flush()?;
        info!(
            skus = skus.len(),
            "demo flash sale started: 30% off for 10 minutes"
        );
        Ok(skus)
    }

    fn run(&mut self, stop: &AtomicBool) -> anyhow::Result<()> {
        self.seed()?;
        let started = Instant::now();
        let mut flash_sale: Option<Vec<usize>> = None;
        while !stop.load(Ordering::Relaxed) {
            let tick_started = Instant::now();
            if flash_sale.is_none() && started.elapsed() >= FLASH_SALE_AFTER {
                flash_sale = Some(self.start_flash_sale()?);
            }
            self.tick(flash_sale.as_deref().unwrap_or(&[]))?;
            std::thread::sleep(TICK.saturating_sub(tick_started.elapsed()));
        }
        Ok(())
    }
}
