//! The decision pipeline: accepted events, in log order, through normalise/enrich
//! ([`apply_event`]), features, price candidate, guardrails, forecast and promotion policy
//! ([`decide()`]) to decision records ([`crate::audit`]) and published deltas
//! ([`crate::publish`]).
//!
//! [`Pipeline::process_batch`] takes up to `batch_size` pending events and, in one
//! SQLite transaction, folds them into their SKUs' state, decides once per touched SKU
//! (SKUs are independent; events of one SKU are applied in log order), appends a
//! decision record for every SKU whose published entry, status or alerts changed,
//! marks the events processed and advances the snapshot version. After the commit the
//! changed entries go out as one delta. A crash before the commit redoes the batch; a
//! crash after it resyncs the edge with a full snapshot at start-up
//! ([`Pipeline::resync`]), so nothing is applied twice and nothing is lost.

mod apply;
pub mod config;
pub mod controls;
pub mod decide;

pub use apply::apply_event;
pub use config::{CategoryRules, PipelineConfig};
pub use decide::{decide, Alert, Decision, DecisionRecord, DecisionStatus};

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use edgeprice_pricing::{PriceEntry, PriceKey, Sku};
use edgeprice_schemas::admin::AlertRow;
use edgeprice_schemas::codec::{DeltaData, PromotionsDoc, SnapshotData};
use rusqlite::Connection;
use tracing::{info, warn};

use crate::admin::board::{BatchFigures, Board};
use crate::admin::controls::Controls;
use crate::admin::promotions::PromotionBook;
use crate::audit;
use crate::feeds::FeedEvent;
use crate::publish::{PublishError, Publisher};
use crate::store::{self, EventLog, SkuState, StoreError};

const VERSION_KEY: &str = "published_version";

/// Most SKU states kept in memory between batches; past it the cache starts over.
const MAX_CACHED_SKUS: usize = 200_000;

/// Why a batch failed. Storage errors leave the batch unprocessed (it is redone);
/// publishing errors never fail a batch: the edge is resynced later.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid pipeline config: {0}")]
    Config(String),
    #[error("unknown SKU {0}")]
    UnknownSku(String),
    #[error("cannot encode a decision record: {0}")]
    Encode(String),
    #[error("{0}")]
    NothingPending(&'static str),
}

impl PipelineError {
    /// The API error code.
    pub fn code(&self) -> &'static str {
        match self {
            PipelineError::Store(e) => e.code(),
            PipelineError::Config(_) => "invalid_config",
            PipelineError::UnknownSku(_) => "unknown_sku",
            PipelineError::Encode(_) => "encode_failed",
            PipelineError::NothingPending(_) => "nothing_pending",
        }
    }
}

impl From<rusqlite::Error> for PipelineError {
    fn from(e: rusqlite::Error) -> Self {
        PipelineError::Store(e.into())
    }
}

/// What one batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    pub events: usize,
    pub decisions: usize,
    /// Entries published in the batch's delta.
    pub published: usize,
    /// The snapshot version after the batch.
    pub version: u64,
    /// Whether the edge took the update (false: it will be resynced).
    pub edge_in_sync: bool,
}

/// The pipeline over one data directory, publishing to one [`Publisher`].
pub struct Pipeline<P: Publisher> {
    conn: Connection,
    config: PipelineConfig,
    publisher: P,
    /// Last snapshot version assigned.
    version: u64,
    /// False until the edge has our full table (at start-up, after a failed publish).
    edge_in_sync: bool,
    /// SKU states as last committed. The pipeline is the only writer of `sku_state`,
    /// so this stays true to the database; a batch takes states out and puts them back
    /// only after its commit, so a failed batch leaves nothing half-applied here.
    cache: HashMap<Sku, SkuState>,
    /// Overrides and kill switches in force.
    controls: Controls,
    /// Promotion definitions managed through the control plane.
    promotions: PromotionBook,
    /// The admin API's read model.
    board: Arc<Board>,
    /// Edges published to (for blast radii).
    edges: u64,
}

impl<P: Publisher> std::fmt::Debug for Pipeline<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("version", &self.version)
            .field("edge_in_sync", &self.edge_in_sync)
            .finish_non_exhaustive()
    }
}

impl<P: Publisher> Pipeline<P> {
    /// Opens the pipeline's connection to the data directory.
    pub fn open(
        data_dir: &Path,
        config: PipelineConfig,
        publisher: P,
    ) -> Result<Pipeline<P>, PipelineError> {
        config.validate().map_err(PipelineError::Config)?;
        let conn = store::open(data_dir)?;
        let version = store::meta_get(&conn, VERSION_KEY)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let controls = Controls::load(&conn)?;
        let promotions = PromotionBook::load(&conn)?;
        let board = Arc::new(Board::default());
        board.set_controls(&controls);
        board.set_promotions(&promotions);
        board.set_version(version);
        let now_ms = crate::now_ms();
        SkuState::for_each(&conn, |state| board.put_states([&state], &config, now_ms))?;
        Ok(Pipeline {
            conn,
            config,
            publisher,
            version,
            edge_in_sync: false,
            cache: HashMap::new(),
            controls,
            promotions,
            board,
            edges: 1,
        })
    }

    /// The admin API's read model, kept current by this pipeline.
    pub fn board(&self) -> Arc<Board> {
        Arc::clone(&self.board)
    }

    /// Sets how many edges the publisher reaches (reported in blast radii).
    pub fn set_edge_count(&mut self, edges: u64) {
        self.edges = edges;
    }

    /// The pipeline config.
    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// The last snapshot version assigned.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether the edge has everything decided so far.
    pub fn edge_in_sync(&self) -> bool {
        self.edge_in_sync
    }

    /// Read access to the database (decisions, dead letters, state).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Sends the edge a full snapshot of every SKU's current entry, at a version past
    /// both ours and the edge's.
    pub fn resync(&mut self, now_ms: i64) -> Result<bool, PipelineError> {
        let entries: Vec<PriceEntry> = SkuState::all_published(&self.conn)?
            .iter()
            .flat_map(|decided| self.controls.overlay(decided))
            .collect();
        let promotions = self.promotions_doc(now_ms);
        let mut version = self.version + 1;
        for _attempt in 0..2 {
            let snapshot = SnapshotData {
                version,
                created_at_ms: now_ms,
                promotions: Some(Arc::clone(&promotions)),
                entries: entries.clone(),
            };
            match self.publisher.publish_snapshot(snapshot) {
                Ok(edge_version) => {
                    self.set_version(edge_version.max(version))?;
                    self.edge_in_sync = true;
                    info!(
                        version,
                        entries = entries.len(),
                        "edge resynced with a full snapshot"
                    );
                    return Ok(true);
                }
                Err(err) => match err.current_version() {
                    Some(current) => version = current.max(version) + 1,
                    None => {
                        warn!(error = %err, code = err.code(), "edge resync failed; will retry");
                        self.edge_in_sync = false;
                        return Ok(false);
                    }
                },
            }
        }
        self.edge_in_sync = false;
        Ok(false)
    }

    /// Keeps committed states for the next batches.
    fn remember(&mut self, states: impl IntoIterator<Item = SkuState>) {
        for state in states {
            if self.cache.len() >= MAX_CACHED_SKUS {
                self.cache.clear();
            }
            self.cache.insert(state.sku.clone(), state);
        }
    }

    fn set_version(&mut self, version: u64) -> Result<(), PipelineError> {
        store::meta_set(&self.conn, VERSION_KEY, &version.to_string())?;
        self.version = version;
        Ok(())
    }

    /// Processes up to `batch_size` pending events (see the module docs). Returns an
    /// empty report when there was nothing to do.
    pub fn process_batch(&mut self, now_ms: i64) -> Result<BatchReport, PipelineError> {
        self.process_batch_with(&|| now_ms)
    }

    /// [`Pipeline::process_batch`] reading the time from `clock` once the batch's events
    /// are read: an event accepted while an edge was being resynced (a cost effective
    /// at its sending time, say) is never judged at a time before it arrived.
    pub fn process_batch_with(
        &mut self,
        clock: &dyn Fn() -> i64,
    ) -> Result<BatchReport, PipelineError> {
        if !self.edge_in_sync {
            self.resync(clock())?;
        }
        let started = Instant::now();
        let events = EventLog::pending(&self.conn, self.config.batch_size)?;
        let read_us = started.elapsed().as_micros() as u64;
        let now_ms = clock();
        if events.is_empty() {
            return Ok(BatchReport {
                version: self.version,
                edge_in_sync: self.edge_in_sync,
                ..BatchReport::default()
            });
        }
        let version = self.version + 1;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut states: HashMap<Sku, Option<SkuState>> = HashMap::new();
        // SKUs in order of their first event in the batch, with their events' ids and
        // the alerts raised while applying them.
        let mut touched: Vec<(Sku, Vec<String>, Vec<Alert>)> = Vec::new();
        let mut position: HashMap<Sku, usize> = HashMap::new();
        for stored in &events {
            let sku = stored.event.sku();
            if !states.contains_key(sku) {
                let state = match self.cache.remove(sku) {
                    Some(state) => Some(state),
                    None => SkuState::load(&tx, sku)?,
                };
                states.insert(sku.clone(), state);
            }
            let state = states.get_mut(sku).expect("loaded above");
            let category = match (&*state, &stored.event) {
                (Some(s), _) => s.category.clone(),
                (None, crate::feeds::FeedEvent::Catalog(c)) => c.category.clone(),
                (None, _) => String::new(),
            };
            let alerts = apply_event(
                state,
                &stored.event,
                self.config.rules_for(&category),
                now_ms,
            );
            let index = *position.entry(sku.clone()).or_insert_with(|| {
                touched.push((sku.clone(), Vec::new(), Vec::new()));
                touched.len() - 1
            });
            touched[index].1.push(stored.event.event_id().to_owned());
            touched[index].2.extend(alerts);
        }
        let applied_at = Instant::now();
        let mut upserts: Vec<PriceEntry> = Vec::new();
        let mut decisions = 0;
        let mut alerts: Vec<AlertRow> = Vec::new();
        for (sku, event_ids, apply_alerts) in touched {
            let Some(state) = states.get_mut(&sku).and_then(Option::as_mut) else {
                // Ingestion refuses events for unknown SKUs; nothing to decide.
                continue;
            };
            let trigger = Trigger {
                event_ids,
                alerts: apply_alerts,
                always_record: false,
            };
            let (entry, recorded) = decide_and_record(
                &tx,
                &self.config,
                state,
                now_ms,
                version,
                trigger,
                &mut alerts,
            )?;
            decisions += usize::from(recorded);
            upserts.extend(entry);
            state.save(&tx)?;
        }
        let decide_us = applied_at.elapsed().as_micros() as u64;
        let committing = Instant::now();
        let last_seq = events.last().map_or(0, |e| e.seq);
        EventLog::mark_processed_through(&tx, last_seq)?;
        if !upserts.is_empty() {
            store::meta_set(&tx, VERSION_KEY, &version.to_string())?;
        }
        tx.commit()?;
        let commit_us = committing.elapsed().as_micros() as u64;
        let mut revenue: Vec<(String, i64)> = Vec::new();
        let mut feed_lag_ms: Vec<(String, i64)> = Vec::new();
        for stored in &events {
            let feed = stored.event.kind().to_string();
            match feed_lag_ms.iter_mut().find(|(f, _)| *f == feed) {
                Some(lag) => lag.1 = now_ms - stored.received_at_ms,
                None => feed_lag_ms.push((feed, now_ms - stored.received_at_ms)),
            }
            if let FeedEvent::Sales(sale) = &stored.event {
                if sale.kind.is_sale() {
                    if let Some(Some(state)) = states.get(&sale.sku) {
                        if let Some(entry) = &state.published {
                            let amount = entry.effective_price_at(now_ms) * sale.quantity;
                            revenue.push((state.currency.to_string(), amount));
                        }
                    }
                }
            }
        }
        self.board
            .put_states(states.values().flatten(), &self.config, now_ms);
        self.board.push_alerts(alerts);
        self.remember(states.into_values().flatten());
        let published = upserts.len();
        let publishing = Instant::now();
        if !upserts.is_empty() {
            self.version = version;
            self.publish(version, now_ms, upserts)?;
        }
        let publish_us = publishing.elapsed().as_micros() as u64;
        self.board.record_batch(BatchFigures {
            at_ms: now_ms,
            events: events.len() as u64,
            decisions: decisions as u64,
            version: self.version,
            stages_us: vec![
                ("read", read_us),
                ("decide", decide_us),
                ("commit", commit_us),
                ("publish", publish_us),
                ("batch", started.elapsed().as_micros() as u64),
            ],
            feed_lag_ms,
            revenue,
        });
        Ok(BatchReport {
            events: events.len(),
            decisions,
            published,
            version: self.version,
            edge_in_sync: self.edge_in_sync,
        })
    }

    /// Publishes decided entries as the controls make them.
    fn publish(
        &mut self,
        version: u64,
        now_ms: i64,
        decided: Vec<PriceEntry>,
    ) -> Result<(), PipelineError> {
        let upserts = decided
            .iter()
            .flat_map(|entry| self.controls.overlay(entry))
            .collect();
        self.publish_with(version, now_ms, upserts, Vec::new(), None)
    }

    /// Publishes entries as they are, with removals and a new promotions document.
    fn publish_with(
        &mut self,
        version: u64,
        now_ms: i64,
        upserts: Vec<PriceEntry>,
        removals: Vec<PriceKey>,
        promotions: Option<Arc<PromotionsDoc>>,
    ) -> Result<(), PipelineError> {
        if !self.edge_in_sync {
            // The resync carries these entries too.
            self.resync(now_ms)?;
            return Ok(());
        }
        let delta = DeltaData {
            base_version: version - 1,
            version,
            created_at_ms: now_ms,
            promotions,
            upserts,
            removals,
        };
        match self.publisher.publish_delta(delta) {
            Ok(_) => Ok(()),
            Err(
                err @ (PublishError::VersionConflict { .. }
                | PublishError::Stale { .. }
                | PublishError::NoBase),
            ) => {
                info!(error = %err, "edge is elsewhere; resyncing with a full snapshot");
                self.resync(now_ms)?;
                Ok(())
            }
            Err(err) => {
                warn!(error = %err, code = err.code(), version, "publishing failed; the edge will be resynced");
                self.edge_in_sync = false;
                Ok(())
            }
        }
    }

    /// Decides again for every SKU without a new event: prices depend on time too
    /// (demand windows decay, promotions start and end, competitor prices go stale, the
    /// change interval rolls over). Records and publishes only what changed.
    pub fn reevaluate(&mut self, now_ms: i64) -> Result<BatchReport, PipelineError> {
        let skus = SkuState::all_skus(&self.conn)?;
        let mut total = BatchReport::default();
        for chunk in skus.chunks(self.config.batch_size) {
            let version = self.version + 1;
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut upserts = Vec::new();
            let mut alerts = Vec::new();
            let mut states = Vec::with_capacity(chunk.len());
            for sku in chunk {
                let state = match self.cache.remove(sku) {
                    Some(state) => Some(state),
                    None => SkuState::load(&tx, sku)?,
                };
                let Some(mut state) = state else {
                    continue;
                };
                let trigger = Trigger {
                    event_ids: vec!["tick".to_owned()],
                    alerts: Vec::new(),
                    always_record: false,
                };
                let (entry, recorded) = decide_and_record(
                    &tx,
                    &self.config,
                    &mut state,
                    now_ms,
                    version,
                    trigger,
                    &mut alerts,
                )?;
                total.decisions += usize::from(recorded);
                upserts.extend(entry);
                state.save(&tx)?;
                states.push(state);
            }
            if !upserts.is_empty() {
                store::meta_set(&tx, VERSION_KEY, &version.to_string())?;
            }
            tx.commit()?;
            self.board.put_states(&states, &self.config, now_ms);
            self.board.push_alerts(alerts);
            self.remember(states);
            total.published += upserts.len();
            if !upserts.is_empty() {
                self.version = version;
                self.publish(version, now_ms, upserts)?;
            }
        }
        total.version = self.version;
        total.edge_in_sync = self.edge_in_sync;
        Ok(total)
    }

    /// Processes batches until no event is pending.
    pub fn process_all(&mut self, now_ms: i64) -> Result<BatchReport, PipelineError> {
        let mut total = BatchReport::default();
        loop {
            let report = self.process_batch(now_ms)?;
            total.events += report.events;
            total.decisions += report.decisions;
            total.published += report.published;
            total.version = report.version;
            total.edge_in_sync = report.edge_in_sync;
            if report.events == 0 {
                return Ok(total);
            }
        }
    }

    /// High-risk categories: approves the SKU's pending dynamic price. It becomes the
    /// SKU's regular candidate (still guarded) until another suggestion is approved.
    pub fn approve_suggestion(
        &mut self,
        sku: &Sku,
        now_ms: i64,
    ) -> Result<DecisionRecord, PipelineError> {
        self.admin_decision(sku, now_ms, "admin:approve_suggestion", |state| {
            let suggestion =
                state
                    .pending_suggestion
                    .take()
                    .ok_or(PipelineError::NothingPending(
                        "no price suggestion is pending",
                    ))?;
            state.approved_price_minor = Some(suggestion.price_minor);
            Ok(())
        })
    }

    /// High-risk categories: rejects the SKU's pending dynamic price; the SKU keeps its
    /// current regular candidate.
    pub fn reject_suggestion(
        &mut self,
        sku: &Sku,
        now_ms: i64,
    ) -> Result<DecisionRecord, PipelineError> {
        self.admin_decision(sku, now_ms, "admin:reject_suggestion", |state| {
            state
                .pending_suggestion
                .take()
                .ok_or(PipelineError::NothingPending(
                    "no price suggestion is pending",
                ))?;
            Ok(())
        })
    }

    /// Accepts (applies) or rejects the cost held for review; either way the discount
    /// cap is lifted.
    pub fn resolve_held_cost(
        &mut self,
        sku: &Sku,
        accept: bool,
        now_ms: i64,
    ) -> Result<DecisionRecord, PipelineError> {
        let action = if accept {
            "admin:accept_held_cost"
        } else {
            "admin:reject_held_cost"
        };
        self.admin_decision(sku, now_ms, action, |state| {
            let held = state
                .held_cost
                .take()
                .ok_or(PipelineError::NothingPending("no cost is held for review"))?;
            if accept {
                state.cost_minor = Some(held.cost_minor);
                state.cost_history.push(store::CostPoint {
                    cost_minor: held.cost_minor,
                    vendor: held.vendor,
                    effective_at_ms: held.effective_at_ms,
                });
            }
            state.discount_cap_minor = None;
            Ok(())
        })
    }

    fn admin_decision(
        &mut self,
        sku: &Sku,
        now_ms: i64,
        action: &str,
        change: impl FnOnce(&mut SkuState) -> Result<(), PipelineError>,
    ) -> Result<DecisionRecord, PipelineError> {
        let version = self.version + 1;
        // Read from the database; the cached copy is replaced after the commit.
        self.cache.remove(sku);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut state =
            SkuState::load(&tx, sku)?.ok_or_else(|| PipelineError::UnknownSku(sku.to_string()))?;
        change(&mut state)?;
        let trigger = Trigger {
            event_ids: vec![action.to_owned()],
            alerts: Vec::new(),
            always_record: true,
        };
        let mut alerts = Vec::new();
        let (entry, _) = decide_and_record(
            &tx,
            &self.config,
            &mut state,
            now_ms,
            version,
            trigger,
            &mut alerts,
        )?;
        state.save(&tx)?;
        if entry.is_some() {
            store::meta_set(&tx, VERSION_KEY, &version.to_string())?;
        }
        tx.commit()?;
        self.board.put_states([&state], &self.config, now_ms);
        self.board.push_alerts(alerts);
        self.remember([state]);
        info!(sku = %sku, action, "admin decision recorded");
        if let Some(entry) = entry {
            self.version = version;
            self.publish(version, now_ms, vec![entry])?;
        }
        self.decisions_for(sku.as_str(), 1)?
            .pop()
            .ok_or_else(|| PipelineError::UnknownSku(sku.to_string()))
    }

    /// The decision records of a SKU, newest first.
    pub fn decisions_for(
        &self,
        sku: &str,
        limit: usize,
    ) -> Result<Vec<DecisionRecord>, PipelineError> {
        audit::records_for(&self.conn, sku, limit)?
            .into_iter()
            .map(|entry| {
                serde_json::from_str(&entry.record).map_err(|e| {
                    PipelineError::Store(StoreError::Corrupt(format!(
                        "audit record {}: {e}",
                        entry.seq
                    )))
                })
            })
            .collect()
    }

    /// The SKU's state.
    pub fn sku_state(&self, sku: &Sku) -> Result<Option<SkuState>, PipelineError> {
        Ok(SkuState::load(&self.conn, sku)?)
    }
}

/// What led to a decision.
struct Trigger {
    /// Ids of the events (or the admin action) behind it.
    event_ids: Vec<String>,
    /// Alerts raised while applying the events.
    alerts: Vec<Alert>,
    /// Record the decision even if nothing changed (admin actions).
    always_record: bool,
}

/// Decides for one SKU inside the caller's transaction: appends a decision record when
/// the published entry, the pending suggestion or the alerts changed, and updates the
/// state's published entry. Returns the entry to publish if it changed, and whether a
/// record was written; alerts of recorded decisions are added to `alerts`.
fn decide_and_record(
    tx: &Connection,
    config: &PipelineConfig,
    state: &mut SkuState,
    now_ms: i64,
    version: u64,
    trigger: Trigger,
    alerts: &mut Vec<AlertRow>,
) -> Result<(Option<PriceEntry>, bool), PipelineError> {
    let rules = config.rules_for(&state.category).clone();
    let suggestion_before = state.pending_suggestion.as_ref().map(|s| s.price_minor);
    let mut decision = decide(
        state,
        &rules,
        &config.rule_set_version,
        now_ms,
        version,
        trigger.event_ids,
    );
    decision.record.alerts.splice(0..0, trigger.alerts);
    let changed = match (&decision.entry, &state.published) {
        (Some(new), Some(old)) => !same_entry(new, old),
        (Some(_), None) => true,
        (None, _) => false,
    };
    let suggestion_changed =
        state.pending_suggestion.as_ref().map(|s| s.price_minor) != suggestion_before;
    let noteworthy = trigger.always_record
        || changed
        || suggestion_changed
        || !decision.record.alerts.is_empty()
        || decision.record.status == DecisionStatus::Held;
    let sku = state.sku.as_str();
    if noteworthy {
        let record = serde_json::to_string(&decision.record)
            .map_err(|e| PipelineError::Encode(e.to_string()))?;
        audit::append(tx, sku, now_ms, &record)?;
        for alert in &decision.record.alerts {
            warn!(sku, kind = %alert.kind, message = %alert.message, "alert");
            alerts.push(AlertRow {
                at_ms: now_ms,
                kind: alert.kind.clone(),
                sku: Some(alert.sku.clone()),
                message: alert.message.clone(),
            });
        }
    }
    let entry = match decision.entry {
        Some(entry) if changed => {
            state.published = Some(entry.clone());
            Some(entry)
        }
        _ => None,
    };
    Ok((entry, noteworthy))
}

/// Entries equal apart from the revision that published them.
fn same_entry(a: &PriceEntry, b: &PriceEntry) -> bool {
    PriceEntry {
        revision: b.revision,
        ..a.clone()
    } == *b
}
