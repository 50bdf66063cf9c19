//! The admin API's read model: what the pipeline thread last committed, kept in memory
//! so reads (SKU table, metrics, kill switches) never touch the pipeline's database
//! connection or wait for a batch. The pipeline thread writes it after each commit;
//! HTTP handlers read it under a short read lock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};

use edgeprice_pricing::guardrail::margin_bp;
use edgeprice_schemas::admin::{
    AlertRow, Amount, Approval, MarginBucket, PipelineMetrics, SkuPage, SkuRow,
};

use super::controls::Controls;
use super::promotions::PromotionBook;
use crate::pipeline::PipelineConfig;
use crate::store::SkuState;

/// Alerts kept for the API.
const MAX_ALERTS: usize = 1_000;
/// Window of the rate and latency figures.
const WINDOW_MS: i64 = 60_000;

/// Margin histogram edges, basis points.
const MARGIN_EDGES_BP: [i64; 9] = [
    i64::MIN,
    0,
    1_000,
    2_000,
    3_000,
    4_000,
    5_000,
    6_000,
    i64::MAX,
];

#[derive(Debug, Default)]
struct Inner {
    rows: HashMap<String, SkuRow>,
    /// SKU → id of the promotion tag on its decided entry.
    promotion_of: HashMap<String, String>,
    approvals: BTreeMap<String, Approval>,
    controls: Controls,
    promotions: Arc<PromotionBook>,
    alerts: VecDeque<AlertRow>,
    events_total: u64,
    decisions_total: u64,
    version: u64,
    /// `(at_ms, events_total, decisions_total)` after each batch, last minute.
    progress: VecDeque<(i64, u64, u64)>,
    /// `(at_ms, stage, µs)`, last minute.
    stages: VecDeque<(i64, &'static str, u64)>,
    feed_lag_ms: BTreeMap<String, i64>,
    /// `(at_ms, currency, minor)` of sales, last minute.
    revenue: VecDeque<(i64, String, i64)>,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Board {
    inner: RwLock<Inner>,
}

/// How the SKU table may be sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkuSort {
    Sku,
    Price,
    Margin,
    Changed,
}

impl std::str::FromStr for SkuSort {
    type Err = String;

    fn from_str(s: &str) -> Result<SkuSort, String> {
        match s {
            "" | "sku" => Ok(SkuSort::Sku),
            "price" => Ok(SkuSort::Price),
            "margin" => Ok(SkuSort::Margin),
            "changed" => Ok(SkuSort::Changed),
            other => Err(format!(
                "cannot sort by {other:?}; sort by sku, price, margin or changed"
            )),
        }
    }
}

/// The row of a SKU as its state and the controls make it.
pub fn row_of(
    state: &SkuState,
    config: &PipelineConfig,
    controls: &Controls,
    now_ms: i64,
) -> SkuRow {
    let published = state.published.as_ref();
    let price = published.map_or(state.list_price_minor, |e| e.price_minor);
    let margin = state.cost_minor.and_then(|cost| {
        let economics = state.economics(cost);
        margin_bp(
            price,
            &economics,
            &config.rules_for(&state.category).guardrails,
        )
    });
    SkuRow {
        sku: state.sku.to_string(),
        category: state.category.clone(),
        currency: state.currency.to_string(),
        list_minor: state.list_price_minor,
        price_minor: price,
        promo_price_minor: published
            .and_then(|e| e.promotion.as_ref())
            .filter(|tag| tag.is_active_at(now_ms) && !controls.promotion_killed(&tag.id))
            .map(|tag| tag.price_minor.max(published.map_or(0, |e| e.floor_minor))),
        floor_minor: published.map(|e| e.floor_minor),
        margin_bp: margin,
        changed_at_ms: 0,
        on_hand: Some(state.on_hand()),
        frozen: controls.is_frozen(state.sku.as_str()),
        overridden: controls.overrides_of(state.sku.as_str()).next().is_some(),
        needs_review: state.held_cost.is_some() || state.pending_suggestion.is_some(),
    }
}

/// A pending approval of a state, if it has one.
pub fn approval_of(state: &SkuState) -> Option<Approval> {
    let suggestion = state.pending_suggestion.as_ref()?;
    Some(Approval {
        sku: state.sku.to_string(),
        category: state.category.clone(),
        currency: state.currency.to_string(),
        current_minor: state
            .published
            .as_ref()
            .map_or(state.list_price_minor, |e| e.price_minor),
        suggested_minor: suggestion.price_minor,
        reason_code: suggestion.rules.first().cloned().unwrap_or_default(),
        suggested_at_ms: suggestion.suggested_at_ms,
    })
}

impl Board {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the rows and approvals of the given SKUs; a row whose prices moved
    /// gets `now_ms` as its change time.
    pub fn put_states<'a>(
        &self,
        states: impl IntoIterator<Item = &'a SkuState>,
        config: &PipelineConfig,
        now_ms: i64,
    ) {
        let mut inner = self.write();
        let inner = &mut *inner;
        for state in states {
            let mut row = row_of(state, config, &inner.controls, now_ms);
            row.changed_at_ms = match inner.rows.get(&row.sku) {
                Some(old)
                    if old.price_minor == row.price_minor
                        && old.promo_price_minor == row.promo_price_minor =>
                {
                    old.changed_at_ms
                }
                Some(_) => now_ms,
                None => 0,
            };
            match state.published.as_ref().and_then(|e| e.promotion.as_ref()) {
                Some(tag) => inner.promotion_of.insert(row.sku.clone(), tag.id.clone()),
                None => inner.promotion_of.remove(&row.sku),
            };
            match approval_of(state) {
                Some(approval) => inner.approvals.insert(row.sku.clone(), approval),
                None => inner.approvals.remove(&row.sku),
            };
            inner.rows.insert(row.sku.clone(), row);
        }
    }

    /// Installs the controls in force and marks the rows they touch.
    pub fn set_controls(&self, controls: &Controls) {
        let mut inner = self.write();
        let inner = &mut *inner;
        for row in inner.rows.values_mut() {
            row.frozen = controls.is_frozen(&row.sku);
            row.overridden = controls.overrides_of(&row.sku).next().is_some();
        }
        inner.controls = controls.clone();
    }

    /// The controls in force.
    pub fn controls(&self) -> Controls {
        self.read().controls.clone()
    }

    /// Installs the promotion book as last committed.
    pub fn set_promotions(&self, book: &PromotionBook) {
        self.write().promotions = Arc::new(book.clone());
    }

    /// The promotion book as last committed.
    pub fn promotions(&self) -> Arc<PromotionBook> {
        Arc::clone(&self.read().promotions)
    }

    /// Adds alerts (newest last).
    pub fn push_alerts(&self, alerts: impl IntoIterator<Item = AlertRow>) {
        let mut inner = self.write();
        for alert in alerts {
            if inner.alerts.len() == MAX_ALERTS {
                inner.alerts.pop_front();
            }
            inner.alerts.push_back(alert);
        }
    }

    /// Records a processed batch: counts, stage timings (µs), feed lags (ms) and sales.
    pub fn record_batch(&self, report: BatchFigures) {
        let mut inner = self.write();
        let now = report.at_ms;
        inner.events_total += report.events;
        inner.decisions_total += report.decisions;
        inner.version = report.version;
        let (events, decisions) = (inner.events_total, inner.decisions_total);
        inner.progress.push_back((now, events, decisions));
        for (stage, micros) in report.stages_us {
            inner.stages.push_back((now, stage, micros));
        }
        for (feed, lag) in report.feed_lag_ms {
            inner.feed_lag_ms.insert(feed, lag);
        }
        for (currency, minor) in report.revenue {
            inner.revenue.push_back((now, currency, minor));
        }
        let horizon = now - WINDOW_MS;
        while inner.progress.len() > 2 && inner.progress.front().is_some_and(|p| p.0 < horizon) {
            inner.progress.pop_front();
        }
        while inner.stages.front().is_some_and(|s| s.0 < horizon) {
            inner.stages.pop_front();
        }
        while inner.revenue.front().is_some_and(|s| s.0 < horizon) {
            inner.revenue.pop_front();
        }
    }

    /// Records stage timings (µs) measured outside a batch (the ingest writer's).
    pub fn record_stages(&self, at_ms: i64, stages_us: &[(&'static str, u64)]) {
        let mut inner = self.write();
        inner
            .stages
            .extend(stages_us.iter().map(|&(stage, us)| (at_ms, stage, us)));
        let horizon = at_ms - WINDOW_MS;
        while inner.stages.front().is_some_and(|s| s.0 < horizon) {
            inner.stages.pop_front();
        }
    }

    /// The snapshot version last published.
    pub fn set_version(&self, version: u64) {
        self.write().version = version;
    }

    /// One SKU's row.
    pub fn row(&self, sku: &str) -> Option<SkuRow> {
        self.read().rows.get(sku).cloned()
    }

    /// SKUs whose decided entry carries promotion `id` (any promotion: `None`), and
    /// how many distinct promotions that is.
    pub fn promoted(&self, id: Option<&str>) -> (u64, u64) {
        let inner = self.read();
        let mut ids = std::collections::HashSet::new();
        let mut skus = 0;
        for promotion in inner.promotion_of.values() {
            if id.is_none_or(|id| id == promotion) {
                skus += 1;
                ids.insert(promotion.as_str());
            }
        }
        (skus, ids.len() as u64)
    }

    /// SKUs whose decided entry carries promotion `id` (any: `None`).
    pub fn skus_with_promotion(&self, id: Option<&str>) -> Vec<String> {
        self.read()
            .promotion_of
            .iter()
            .filter(|(_, promotion)| id.is_none_or(|id| id == promotion.as_str()))
            .map(|(sku, _)| sku.clone())
            .collect()
    }

    /// Promotion id → SKUs whose decided entry carries it.
    pub fn promotion_tags(&self) -> BTreeMap<String, u64> {
        let mut tags = BTreeMap::new();
        for id in self.read().promotion_of.values() {
            *tags.entry(id.clone()).or_default() += 1;
        }
        tags
    }

    /// Every row.
    pub fn rows(&self) -> Vec<SkuRow> {
        self.read().rows.values().cloned().collect()
    }

    /// SKU → category, for category-targeted promotions.
    pub fn categories(&self) -> BTreeMap<String, String> {
        self.read()
            .rows
            .values()
            .filter(|r| !r.category.is_empty())
            .map(|r| (r.sku.clone(), r.category.clone()))
            .collect()
    }

    /// Number of SKUs known.
    pub fn sku_count(&self) -> usize {
        self.read().rows.len()
    }

    /// SKUs whose name or category contains `filter` (case-insensitive), sorted.
    pub fn page(
        &self,
        filter: &str,
        sort: SkuSort,
        desc: bool,
        offset: usize,
        limit: usize,
    ) -> SkuPage {
        let filter = filter.to_ascii_lowercase();
        let inner = self.read();
        let mut rows: Vec<&SkuRow> = inner
            .rows
            .values()
            .filter(|r| {
                filter.is_empty()
                    || r.sku.to_ascii_lowercase().contains(&filter)
                    || r.category.to_ascii_lowercase().contains(&filter)
            })
            .collect();
        rows.sort_by(|a, b| {
            let order = match sort {
                SkuSort::Sku => a.sku.cmp(&b.sku),
                SkuSort::Price => a.price_minor.cmp(&b.price_minor),
                SkuSort::Margin => a.margin_bp.cmp(&b.margin_bp),
                SkuSort::Changed => a.changed_at_ms.cmp(&b.changed_at_ms),
            }
            .then_with(|| a.sku.cmp(&b.sku));
            if desc {
                order.reverse()
            } else {
                order
            }
        });
        SkuPage {
            total: rows.len() as u64,
            offset: offset as u64,
            skus: rows.into_iter().skip(offset).take(limit).cloned().collect(),
        }
    }

    /// Alerts, newest first.
    pub fn alerts(&self, limit: usize) -> Vec<AlertRow> {
        self.read()
            .alerts
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect()
    }

    /// Alerts raised since `since_ms`.
    pub fn alerts_since(&self, since_ms: i64) -> usize {
        self.read()
            .alerts
            .iter()
            .filter(|a| a.at_ms >= since_ms)
            .count()
    }

    /// Pending approvals.
    pub fn approvals(&self) -> Vec<Approval> {
        self.read().approvals.values().cloned().collect()
    }

    /// Pipeline figures at `now_ms` (`backlog` and `dead_letters_total` are the
    /// caller's to fill in).
    pub fn pipeline_metrics(&self, now_ms: i64) -> PipelineMetrics {
        let inner = self.read();
        let horizon = now_ms - WINDOW_MS;
        let (events_per_s, decisions_per_s) = match (inner.progress.front(), inner.progress.back())
        {
            (Some(first), Some(last)) if last.0 > first.0 && last.0 >= horizon => {
                let seconds = (now_ms.max(last.0) - first.0) as f64 / 1_000.0;
                (
                    (last.1 - first.1) as f64 / seconds,
                    (last.2 - first.2) as f64 / seconds,
                )
            }
            _ => (0.0, 0.0),
        };
        let mut by_stage: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (at, stage, micros) in &inner.stages {
            if *at >= horizon {
                by_stage
                    .entry((*stage).to_owned())
                    .or_default()
                    .push(*micros);
            }
        }
        let mut stage_p99_us = BTreeMap::new();
        let mut stage_max_us = BTreeMap::new();
        for (stage, mut samples) in by_stage {
            samples.sort_unstable();
            let index = (samples.len() * 99).div_ceil(100).saturating_sub(1);
            stage_p99_us.insert(stage.clone(), samples[index]);
            stage_max_us.insert(stage, samples[samples.len() - 1]);
        }
        PipelineMetrics {
            paused: inner.controls.pipeline_paused(),
            events_total: inner.events_total,
            events_per_s,
            decisions_total: inner.decisions_total,
            decisions_per_s,
            backlog: 0,
            dead_letters_total: 0,
            stage_p99_us,
            stage_max_us,
            feed_lag_ms: inner.feed_lag_ms.clone(),
            version: inner.version,
        }
    }

    /// SKUs by margin band.
    pub fn margin_histogram(&self) -> Vec<MarginBucket> {
        let inner = self.read();
        let mut buckets: Vec<MarginBucket> = MARGIN_EDGES_BP
            .windows(2)
            .map(|w| MarginBucket {
                lo_bp: w[0],
                hi_bp: w[1],
                skus: 0,
            })
            .collect();
        for margin in inner.rows.values().filter_map(|r| r.margin_bp) {
            if let Some(bucket) = buckets
                .iter_mut()
                .find(|b| b.lo_bp <= margin && margin < b.hi_bp)
            {
                bucket.skus += 1;
            }
        }
        buckets
    }

    /// Sales over the last minute, per currency.
    pub fn revenue_per_min(&self, now_ms: i64) -> Vec<Amount> {
        let inner = self.read();
        let mut sums: BTreeMap<&str, i64> = BTreeMap::new();
        for (at, currency, minor) in &inner.revenue {
            if *at >= now_ms - WINDOW_MS {
                *sums.entry(currency).or_default() += minor;
            }
        }
        sums.into_iter()
            .map(|(currency, minor)| Amount {
                minor,
                currency: currency.to_owned(),
            })
            .collect()
    }
}

/// What the pipeline reports about one batch.
#[derive(Debug, Default)]
pub struct BatchFigures {
    pub at_ms: i64,
    pub events: u64,
    pub decisions: u64,
    pub version: u64,
    pub stages_us: Vec<(&'static str, u64)>,
    pub feed_lag_ms: Vec<(String, i64)>,
    pub revenue: Vec<(String, i64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(sku: &str, price: i64, margin: Option<i64>) -> SkuRow {
        SkuRow {
            sku: sku.into(),
            category: "grocery".into(),
            price_minor: price,
            margin_bp: margin,
            ..SkuRow::default()
        }
    }

    #[test]
    fn pages_filter_sort_and_skip() {
        let board = Board::default();
        {
            let mut inner = board.write();
            for (sku, price, margin) in [
                ("A-1", 300, Some(3_500)),
                ("B-2", 100, Some(-200)),
                ("A-3", 200, None),
            ] {
                inner.rows.insert(sku.into(), row(sku, price, margin));
            }
        }
        let page = board.page("a-", SkuSort::Price, false, 0, 10);
        assert_eq!(page.total, 2);
        assert_eq!(
            page.skus.iter().map(|r| r.sku.as_str()).collect::<Vec<_>>(),
            ["A-3", "A-1"]
        );
        let page = board.page("", SkuSort::Price, true, 1, 1);
        assert_eq!((page.total, page.skus[0].sku.as_str()), (3, "A-3"));
        let histogram = board.margin_histogram();
        assert_eq!(histogram.iter().map(|b| b.skus).sum::<u64>(), 2);
        assert_eq!(histogram[0].skus, 1, "negative margins have their own band");
        assert_eq!(histogram[4].skus, 1, "35% is in [30%, 40%)");
    }

    #[test]
    fn rates_and_stage_percentiles_cover_the_last_minute() {
        let board = Board::default();
        for i in 0..=10 {
            board.record_batch(BatchFigures {
                at_ms: 1_000_000 + i * 1_000,
                events: 100,
                decisions: 10,
                version: i as u64,
                stages_us: vec![("batch", 1_000 + i as u64)],
                feed_lag_ms: vec![("sales".into(), 40)],
                revenue: vec![("EUR".into(), 250)],
            });
        }
        let metrics = board.pipeline_metrics(1_010_000);
        assert_eq!(metrics.events_total, 1_100);
        assert!(
            (metrics.events_per_s - 100.0).abs() < 1e-9,
            "{}",
            metrics.events_per_s
        );
        assert!((metrics.decisions_per_s - 10.0).abs() < 1e-9);
        assert_eq!(metrics.stage_p99_us["batch"], 1_010);
        assert_eq!(metrics.feed_lag_ms["sales"], 40);
        assert_eq!(
            board.revenue_per_min(1_010_000),
            vec![Amount {
                minor: 2_750,
                currency: "EUR".into()
            }]
        );
        assert_eq!(
            board.pipeline_metrics(2_000_000).events_per_s,
            0.0,
            "stale figures are not rates"
        );
    }
}
