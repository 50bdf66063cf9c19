//! Per-SKU state: everything the pipeline knows about one SKU, stored as one JSON
//! document per SKU in `sku_state` with `through_seq`, the processing cursor the
//! document is current as of. The pipeline keeps the working copy in memory and writes
//! documents back at checkpoints (see [`crate::pipeline`] on crash recovery).

use std::collections::{BTreeMap, VecDeque};

use edgeprice_pricing::{Currency, Discount, PriceEntry, Sku};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::feeds::CatalogEvent;

/// Minutes of sales history kept (the longest demand window).
pub const DEMAND_MINUTES: i64 = 60;

/// One applied vendor cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CostPoint {
    pub cost_minor: i64,
    pub vendor: String,
    pub effective_at_ms: i64,
}

/// A cost that takes effect later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledCost {
    pub cost: CostPoint,
    /// A new logistics cost per unit coming with it.
    pub logistics_minor: Option<i64>,
}

/// A cost held for review because it is far from the recent history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldCost {
    pub cost_minor: i64,
    pub vendor: String,
    pub effective_at_ms: i64,
    /// Mean of the recent history it was compared with.
    pub reference_minor: i64,
    /// Deviation from the reference, basis points (signed).
    pub deviation_bp: i64,
    pub event_id: String,
}

/// Sales and demand signals of one minute. Stored as a compact
/// `[minute, units, views, cart_adds]` array: a SKU keeps up to 60 of them and its state
/// is rewritten whenever it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(i64, i64, i64, i64)", into = "(i64, i64, i64, i64)")]
pub struct DemandBucket {
    /// Unix minute (`occurred_at_ms / 60_000`).
    pub minute: i64,
    /// Units sold (POS sales and checkouts).
    pub units: i64,
    pub views: i64,
    pub cart_adds: i64,
}

impl From<(i64, i64, i64, i64)> for DemandBucket {
    fn from((minute, units, views, cart_adds): (i64, i64, i64, i64)) -> Self {
        DemandBucket {
            minute,
            units,
            views,
            cart_adds,
        }
    }
}

impl From<DemandBucket> for (i64, i64, i64, i64) {
    fn from(b: DemandBucket) -> Self {
        (b.minute, b.units, b.views, b.cart_adds)
    }
}

/// A promotion as configured by its feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionState {
    pub promotion_id: String,
    pub label: String,
    pub discount: Discount,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub max_per_customer: Option<i64>,
}

/// A dynamic price for a high-risk category, waiting for a person to approve it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingSuggestion {
    pub price_minor: i64,
    /// Rules that produced it.
    pub rules: Vec<String>,
    pub suggested_at_ms: i64,
}

/// Everything the control plane knows about one SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuState {
    pub sku: Sku,
    pub category: String,
    pub currency: Currency,
    pub list_price_minor: i64,
    pub tax_rate_bp: i64,
    pub logistics_minor: i64,
    /// MAP or regulatory floor.
    pub floor_minor: Option<i64>,
    /// Regulatory ceiling.
    pub ceiling_minor: Option<i64>,
    /// The cost in force; `None` until the first cost event (no discounts until then).
    pub cost_minor: Option<i64>,
    /// Recent applied costs, oldest first.
    pub cost_history: Vec<CostPoint>,
    /// Costs announced for a later effective time, earliest first; applied when due.
    #[serde(default)]
    pub scheduled_costs: Vec<ScheduledCost>,
    /// An anomalous cost waiting for review.
    pub held_cost: Option<HeldCost>,
    /// While a cost is held: the largest discount (minor units) promotions may give.
    pub discount_cap_minor: Option<i64>,
    /// Lowest fresh price per competitor: (price, observed at).
    pub competitors: BTreeMap<String, (i64, i64)>,
    /// Units on hand per store (`*` for the central warehouse).
    pub inventory: BTreeMap<String, i64>,
    /// The last 60 minutes of demand (the longest window), oldest first.
    pub demand: VecDeque<DemandBucket>,
    pub promotions: BTreeMap<String, PromotionState>,
    /// The entry last published for the SKU.
    pub published: Option<PriceEntry>,
    /// Start of the current change interval, and the price in force then.
    pub interval_start_ms: i64,
    pub interval_start_price_minor: Option<i64>,
    /// High-risk categories: the last dynamic price approved by a person.
    pub approved_price_minor: Option<i64>,
    pub pending_suggestion: Option<PendingSuggestion>,
}

impl SkuState {
    /// A new SKU from its first catalog event.
    pub fn from_catalog(event: &CatalogEvent) -> SkuState {
        let mut state = SkuState {
            sku: event.sku.clone(),
            category: String::new(),
            currency: event.currency,
            list_price_minor: 0,
            tax_rate_bp: 0,
            logistics_minor: 0,
            floor_minor: None,
            ceiling_minor: None,
            cost_minor: None,
            cost_history: Vec::new(),
            scheduled_costs: Vec::new(),
            held_cost: None,
            discount_cap_minor: None,
            competitors: BTreeMap::new(),
            inventory: BTreeMap::new(),
            demand: VecDeque::new(),
            promotions: BTreeMap::new(),
            published: None,
            interval_start_ms: 0,
            interval_start_price_minor: None,
            approved_price_minor: None,
            pending_suggestion: None,
        };
        state.apply_catalog(event);
        state
    }

    /// Applies a later catalog event (reference data is replaced; history is kept).
    pub fn apply_catalog(&mut self, event: &CatalogEvent) {
        self.category = event.category.clone();
        self.currency = event.currency;
        self.list_price_minor = event.list_price_minor;
        self.tax_rate_bp = event.tax_rate_bp;
        self.logistics_minor = event.logistics_minor;
        self.floor_minor = event.floor_minor;
        self.ceiling_minor = event.ceiling_minor;
    }

    /// Adds sales or demand signals to their minute and drops minutes older than the
    /// longest window (relative to the newest minute seen).
    pub fn record_demand(&mut self, at_ms: i64, units: i64, views: i64, cart_adds: i64) {
        let minute = at_ms.div_euclid(60_000);
        let position = self.demand.iter().position(|b| b.minute >= minute);
        match position {
            Some(i) if self.demand[i].minute == minute => {
                let bucket = &mut self.demand[i];
                bucket.units += units;
                bucket.views += views;
                bucket.cart_adds += cart_adds;
            }
            _ => {
                let bucket = DemandBucket {
                    minute,
                    units,
                    views,
                    cart_adds,
                };
                self.demand
                    .insert(position.unwrap_or(self.demand.len()), bucket);
            }
        }
        let newest = self.demand.back().map_or(minute, |b| b.minute);
        while self
            .demand
            .front()
            .is_some_and(|b| b.minute <= newest - DEMAND_MINUTES)
        {
            self.demand.pop_front();
        }
    }

    /// Units sold in the `minutes` minutes up to and including the minute of `now_ms`.
    pub fn units_sold(&self, now_ms: i64, minutes: i64) -> i64 {
        let now_minute = now_ms.div_euclid(60_000);
        self.demand
            .iter()
            .filter(|b| b.minute <= now_minute && b.minute > now_minute - minutes)
            .map(|b| b.units)
            .sum()
    }

    /// Makes `cost` the cost in force and adds it to the history (keeping the newest
    /// `history_len`).
    pub fn apply_cost(
        &mut self,
        cost: CostPoint,
        logistics_minor: Option<i64>,
        history_len: usize,
    ) {
        self.cost_minor = Some(cost.cost_minor);
        if let Some(logistics) = logistics_minor {
            self.logistics_minor = logistics;
        }
        self.cost_history.push(cost);
        let excess = self.cost_history.len().saturating_sub(history_len.max(1));
        self.cost_history.drain(..excess);
    }

    /// Applies the scheduled costs that are due at `now_ms`, in effective order.
    pub fn apply_due_costs(&mut self, now_ms: i64, history_len: usize) {
        while self
            .scheduled_costs
            .first()
            .is_some_and(|s| s.cost.effective_at_ms <= now_ms)
        {
            let due = self.scheduled_costs.remove(0);
            self.apply_cost(due.cost, due.logistics_minor, history_len);
        }
    }

    /// Units on hand across stores.
    pub fn on_hand(&self) -> i64 {
        self.inventory.values().sum()
    }

    /// Loads one SKU's stored state (which may be older than the pipeline's working
    /// copy, see [`crate::pipeline`]).
    pub fn load(conn: &Connection, sku: &Sku) -> Result<Option<SkuState>, StoreError> {
        Ok(Self::load_with_cursor(conn, sku)?.map(|(state, _)| state))
    }

    /// Loads one SKU's stored state with the processing cursor it is current as of.
    pub fn load_with_cursor(
        conn: &Connection,
        sku: &Sku,
    ) -> Result<Option<(SkuState, i64)>, StoreError> {
        let row: Option<(String, i64)> = conn
            .prepare_cached("SELECT state, through_seq FROM sku_state WHERE sku = ?1")?
            .query_row([sku.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        row.map(|(text, through_seq)| {
            serde_json::from_str(&text)
                .map(|state| (state, through_seq))
                .map_err(|e| StoreError::Corrupt(format!("state of {sku}: {e}")))
        })
        .transpose()
    }

    /// Stores the state as current through event `through_seq` (the processing cursor).
    pub fn save(&self, conn: &Connection, through_seq: i64) -> Result<(), StoreError> {
        let text = serde_json::to_string(self)
            .map_err(|e| StoreError::Corrupt(format!("state of {}: {e}", self.sku)))?;
        conn.prepare_cached(
            "INSERT INTO sku_state (sku, state, through_seq) VALUES (?1, ?2, ?3)
             ON CONFLICT (sku) DO UPDATE SET state = excluded.state,
                                             through_seq = excluded.through_seq",
        )?
        .execute(params![self.sku.as_str(), text, through_seq])?;
        Ok(())
    }

    /// Every SKU with state, in name order.
    pub fn all_skus(conn: &Connection) -> Result<Vec<Sku>, StoreError> {
        let mut stmt = conn.prepare("SELECT sku FROM sku_state ORDER BY sku")?;
        let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
        let mut skus = Vec::new();
        for row in rows {
            let name = row?;
            skus.push(
                Sku::new(&name).map_err(|e| StoreError::Corrupt(format!("sku {name:?}: {e}")))?,
            );
        }
        Ok(skus)
    }

    /// The SKU's economics for the guardrails, at unit cost `cost_minor`.
    pub fn economics(&self, cost_minor: i64) -> edgeprice_pricing::SkuEconomics {
        edgeprice_pricing::SkuEconomics {
            currency: self.currency,
            cost_minor,
            logistics_minor: self.logistics_minor,
            tax_rate_bp: self.tax_rate_bp,
            floor_minor: self.floor_minor,
            ceiling_minor: self.ceiling_minor,
        }
    }

    /// Calls `f` with every SKU's state, in name order.
    pub fn for_each(conn: &Connection, mut f: impl FnMut(SkuState)) -> Result<(), StoreError> {
        let mut stmt = conn.prepare("SELECT sku, state FROM sku_state ORDER BY sku")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let sku: String = row.get(0)?;
            let text: String = row.get(1)?;
            let state: SkuState = serde_json::from_str(&text)
                .map_err(|e| StoreError::Corrupt(format!("state of {sku}: {e}")))?;
            f(state);
        }
        Ok(())
    }

    /// Every SKU's published entry: the content of a full snapshot.
    pub fn all_published(conn: &Connection) -> Result<Vec<PriceEntry>, StoreError> {
        let mut stmt = conn.prepare("SELECT sku, state FROM sku_state ORDER BY sku")?;
        let rows = stmt.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?;
        let mut entries = Vec::new();
        for row in rows {
            let (sku, text) = row?;
            let state: SkuState = serde_json::from_str(&text)
                .map_err(|e| StoreError::Corrupt(format!("state of {sku}: {e}")))?;
            entries.extend(state.published);
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> SkuState {
        SkuState::from_catalog(&CatalogEvent {
            event_id: "c".into(),
            sku: Sku::new("A").unwrap(),
            category: "snacks".into(),
            currency: Currency::EUR,
            list_price_minor: 1000,
            tax_rate_bp: 2000,
            logistics_minor: 0,
            floor_minor: None,
            ceiling_minor: None,
            occurred_at_ms: 0,
        })
    }

    #[test]
    fn demand_windows_count_recent_minutes_only() {
        let mut s = state();
        let now = 1_790_000_000_000 - 1_790_000_000_000 % 60_000;
        s.record_demand(now - 70 * 60_000, 100, 0, 0);
        s.record_demand(now - 10 * 60_000, 5, 0, 0);
        s.record_demand(now - 2 * 60_000, 3, 0, 0);
        s.record_demand(now, 2, 1, 0);
        s.record_demand(now + 30_000, 1, 0, 0);
        assert_eq!(s.units_sold(now, 5), 6);
        assert_eq!(s.units_sold(now, 15), 11);
        assert_eq!(s.units_sold(now, 60), 11, "the 70-minute-old sale is gone");
        assert_eq!(s.demand.len(), 3);
        // An out-of-order late event lands in its own minute.
        s.record_demand(now - 3 * 60_000, 4, 0, 0);
        assert_eq!(s.units_sold(now, 5), 10);
        assert!(s
            .demand
            .iter()
            .zip(s.demand.iter().skip(1))
            .all(|(a, b)| a.minute < b.minute));
    }

    #[test]
    fn state_round_trips_through_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::open(dir.path()).unwrap();
        let mut s = state();
        s.inventory.insert("s1".into(), 7);
        s.save(&conn, 42).unwrap();
        assert_eq!(SkuState::load(&conn, &s.sku).unwrap(), Some(s.clone()));
        assert_eq!(
            SkuState::load_with_cursor(&conn, &s.sku).unwrap(),
            Some((s.clone(), 42))
        );
        assert_eq!(
            SkuState::load(&conn, &Sku::new("B").unwrap()).unwrap(),
            None
        );
        assert!(SkuState::all_published(&conn).unwrap().is_empty());
    }
}
