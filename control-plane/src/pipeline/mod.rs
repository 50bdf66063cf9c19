//! The decision pipeline: accepted events, in log order, through normalise/enrich
//! ([`apply_event`]), features, price candidate, guardrails, forecast and promotion policy
//! ([`decide()`]) to decision records ([`crate::audit`]) and published deltas
//! ([`crate::publish`]).
//!
//! [`Pipeline::process_batch`] takes up to `batch_size` pending events, folds them into
//! their SKUs' state, decides once per touched SKU (SKUs are independent; events of one
//! SKU are applied in log order), and in one SQLite transaction appends a decision
//! record for every SKU whose published entry, status or alerts changed, journals the
//! batch (`batches`: its event range, the time and the version it was decided with),
//! marks the events processed and advances the snapshot version. After the commit the
//! changed entries go out as one delta.
//!
//! # SKU state: a working copy in memory, checkpointed
//!
//! The pipeline is the only writer of SKU state, so it keeps the working copy in memory
//! and does not rewrite every touched SKU's stored document (`sku_state`) in every
//! batch — that was most of a batch's cost. Each stored row carries `through_seq`, the
//! processing cursor it is current as of. Rows are written back (checkpointed):
//! - by a batch, for states changed more than [`CHECKPOINT_AGE_MS`] or
//!   [`CHECKPOINT_EVENTS`] ago (a bounded number per batch), so under a sustained
//!   backlog the replay after a crash stays short;
//! - when the pipeline has caught up ([`Pipeline::process_batch`] finds nothing pending),
//!   for states changed more than [`IDLE_CHECKPOINT_AGE_MS`] ago (bounded too);
//! - all of them by [`Pipeline::checkpoint`] (a flush, before a full resync, before a
//!   re-evaluation, before the working copy is trimmed), and by admin decisions and
//!   re-evaluations for the SKUs they decide.
//!
//! Journal rows no state needs any more (at or below the oldest row cursor of a state
//! not yet written back) are deleted at the checkpoints.
//!
//! Write-backs outside a batch commit without waiting for the disk (`synchronous =
//! NORMAL` for that transaction): losing one in a crash loses nothing, because it
//! also takes back its deletion of journal rows and the replay redoes its work. A later
//! `FULL` commit on the same WAL makes it durable anyway.
//!
//! # Crash recovery
//!
//! The event log is the source of truth and decisions are deterministic (a pure function
//! of the SKU's state, its category rules, the time and the version). So:
//! - a crash before a batch's commit leaves its events pending, nothing of it stored: the
//!   batch is redone;
//! - a crash after a batch's commit but before its states were written back loses only
//!   the working copy. [`Pipeline::open`] rebuilds it: each row as stored, then every
//!   journaled batch past the row's `through_seq` replayed for that SKU — the same events,
//!   the same batch boundaries, the same time and version — without appending the
//!   decision records again (they were committed with the batch) or publishing. The
//!   result is the state the crashed process had, and the edge, resynced with a full
//!   snapshot at start-up ([`Pipeline::resync`]), gets the same prices. Nothing is
//!   applied twice and nothing is lost. Replay uses the rules configured at restart: a
//!   rule change across a crash applies to the replayed batches too (the decision
//!   records keep what was actually published).
//!
//! A batch that fails after it started changing states (a storage error) rebuilds the
//! working copy the same way before the next batch, since its changes never committed.

mod apply;
pub mod config;
pub mod controls;
pub mod decide;

pub use apply::apply_event;
pub use config::{CategoryRules, PipelineConfig};
pub use decide::{decide, Alert, Decision, DecisionRecord, DecisionStatus};

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use edgeprice_pricing::{PriceEntry, PriceKey, Sku};
use edgeprice_schemas::admin::AlertRow;
use edgeprice_schemas::codec::{DeltaData, PromotionsDoc, SnapshotData};
use rusqlite::{params, Connection};
use tracing::{info, warn};

use crate::admin::board::{BatchFigures, Board};
use crate::admin::controls::Controls;
use crate::admin::promotions::PromotionBook;
use crate::audit;
use crate::feeds::FeedEvent;
use crate::publish::{PublishError, Publisher};
use crate::store::{self, EventLog, SkuState, StoreError, StoredEvent};

const VERSION_KEY: &str = "published_version";

/// Most SKU states kept in memory; past it every state is checkpointed and the working
/// copy starts over (states are read back from their rows as needed).
const MAX_CACHED_SKUS: usize = 200_000;

/// A batch writes back states changed longer ago than this, milliseconds...
pub const CHECKPOINT_AGE_MS: i64 = 30_000;

/// ...or more than this many events ago: bounds the replay after a crash under a
/// sustained backlog (replay runs at the pipeline's own speed).
pub const CHECKPOINT_EVENTS: i64 = 500_000;

/// With nothing pending, states changed longer ago than this are written back,
/// milliseconds.
pub const IDLE_CHECKPOINT_AGE_MS: i64 = 1_000;

/// Fewest states a batch may write back (it may write as many as it has events).
const MIN_WRITE_BACK: usize = 256;

/// Most states written back when the pipeline is idle, per call: a write-back of every
/// SKU at once would hold up the events that arrive meanwhile.
const MAX_IDLE_WRITE_BACK: usize = 512;

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
    /// The working copy of SKU states, as of the last committed batch: ahead of their
    /// rows for the SKUs in `dirty`, equal to them for the rest (see the module docs).
    /// SKUs not in it are read from their rows.
    cache: HashMap<Sku, SkuState>,
    /// SKUs whose working copy is ahead of their row.
    dirty: HashMap<Sku, Dirty>,
    /// `dirty` in the order SKUs became dirty, with the time they did (entries of
    /// SKUs written back since, or dirtied again later, are skipped when reached).
    dirty_order: VecDeque<(Sku, i64)>,
    /// The processing cursor: last event `seq` whose batch committed.
    processed_through: i64,
    /// False when the working copy may hold changes of a batch that failed: it is
    /// rebuilt from the rows and the journal before the next batch.
    recovered: bool,
    /// Overrides and kill switches in force.
    controls: Controls,
    /// Promotion definitions managed through the control plane.
    promotions: PromotionBook,
    /// The admin API's read model.
    board: Arc<Board>,
    /// Edges published to (for blast radii).
    edges: u64,
}

/// When a SKU's working copy went ahead of its row.
#[derive(Debug, Clone, Copy)]
struct Dirty {
    /// Batch time of the change.
    at_ms: i64,
    /// The processing cursor before that batch: the row is current at least as of it,
    /// so journaled batches up to here are not needed for this SKU.
    row_through: i64,
}

/// One journaled batch.
#[derive(Debug, Clone, Copy)]
struct JournaledBatch {
    first_seq: i64,
    last_seq: i64,
    now_ms: i64,
    version: u64,
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
        let mut pipeline = Pipeline {
            conn,
            config,
            publisher,
            version,
            edge_in_sync: false,
            cache: HashMap::new(),
            dirty: HashMap::new(),
            dirty_order: VecDeque::new(),
            processed_through: 0,
            recovered: false,
            controls,
            promotions,
            board,
            edges: 1,
        };
        pipeline.recover(now_ms)?;
        Ok(pipeline)
    }

    /// Rebuilds the working copy from the stored rows and the journal (see the module
    /// docs on crash recovery). Returns the number of batches replayed.
    fn recover(&mut self, now_ms: i64) -> Result<usize, PipelineError> {
        self.cache.clear();
        self.dirty.clear();
        self.dirty_order.clear();
        self.processed_through = EventLog::processed_through(&self.conn)?;
        let journal = journaled_batches(&self.conn)?;
        let mut states: HashMap<Sku, Option<SkuState>> = HashMap::new();
        let mut row_through: HashMap<Sku, i64> = HashMap::new();
        let mut replayed: HashMap<Sku, ()> = HashMap::new();
        let mut events_replayed = 0;
        for batch in &journal {
            let events = EventLog::range(&self.conn, batch.first_seq, batch.last_seq)?;
            for stored in &events {
                let sku = stored.event.sku();
                if !states.contains_key(sku) {
                    let (state, through) = match SkuState::load_with_cursor(&self.conn, sku)? {
                        Some((state, through)) => (Some(state), through),
                        None => (None, 0),
                    };
                    states.insert(sku.clone(), state);
                    row_through.insert(sku.clone(), through);
                }
            }
            // A SKU whose row was written after this batch already has its effects.
            let pending: Vec<&StoredEvent> = events
                .iter()
                .filter(|e| row_through[e.event.sku()] < batch.last_seq)
                .collect();
            events_replayed += pending.len();
            let folded = fold_and_decide(
                &self.config,
                &mut states,
                &pending,
                batch.now_ms,
                batch.version,
                false,
            )?;
            replayed.extend(folded.touched.into_iter().map(|sku| (sku, ())));
        }
        for (sku, state) in states {
            let Some(state) = state else { continue };
            if replayed.contains_key(&sku) {
                self.mark_dirty(&sku, now_ms, row_through[&sku]);
                self.board.put_states([&state], &self.config, now_ms);
            }
            self.cache.insert(sku, state);
        }
        if !journal.is_empty() {
            info!(
                batches = journal.len(),
                events = events_replayed,
                skus = self.dirty.len(),
                "replayed the batches processed since the last checkpoint"
            );
        }
        self.recovered = true;
        Ok(journal.len())
    }

    fn mark_dirty(&mut self, sku: &Sku, at_ms: i64, row_through: i64) {
        if !self.dirty.contains_key(sku) {
            self.dirty.insert(sku.clone(), Dirty { at_ms, row_through });
            self.dirty_order.push_back((sku.clone(), at_ms));
        }
    }

    /// Up to `limit` dirty SKUs, oldest first, that became dirty at or before
    /// `before_ms` or with their row at or before event `before_seq`.
    fn due_for_write_back(&mut self, before_ms: i64, before_seq: i64, limit: usize) -> Vec<Sku> {
        let mut due = Vec::new();
        while due.len() < limit {
            let Some((sku, at_ms)) = self.dirty_order.front() else {
                break;
            };
            match self.dirty.get(sku) {
                // Written back since, or dirtied again later (its later entry counts).
                None => {}
                Some(dirty) if dirty.at_ms != *at_ms => {}
                Some(dirty) if *at_ms > before_ms && dirty.row_through > before_seq => break,
                Some(_) => due.push(sku.clone()),
            }
            self.dirty_order.pop_front();
        }
        due
    }

    /// Writes every state that is ahead of its row back, in one transaction.
    pub fn checkpoint(&mut self) -> Result<usize, PipelineError> {
        if self.dirty.is_empty() {
            return Ok(0);
        }
        let skus: Vec<Sku> = self.dirty.keys().cloned().collect();
        let (cache, dirty, through) = (&self.cache, &self.dirty, self.processed_through);
        without_waiting_for_the_disk(&mut self.conn, |tx| {
            write_back(tx, &skus, &HashMap::new(), cache, dirty, through)
        })?;
        self.dirty.clear();
        self.dirty_order.clear();
        Ok(skus.len())
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
        // The snapshot is read from the rows.
        self.checkpoint()?;
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

    /// Puts states back into the working copy after their batch committed.
    fn remember(
        &mut self,
        states: impl IntoIterator<Item = SkuState>,
    ) -> Result<(), PipelineError> {
        for state in states {
            self.cache.insert(state.sku.clone(), state);
        }
        if self.cache.len() > MAX_CACHED_SKUS {
            // Rows must be current before their working copies go.
            self.checkpoint()?;
            self.cache.clear();
        }
        Ok(())
    }

    fn set_version(&mut self, version: u64) -> Result<(), PipelineError> {
        store::meta_set(&self.conn, VERSION_KEY, &version.to_string())?;
        self.version = version;
        Ok(())
    }

    /// Processes up to `batch_size` pending events (see the module docs). Returns an
    /// empty report when there was nothing to do (and writes back states that have been
    /// ahead of their rows for a while).
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
        if !self.recovered {
            self.recover(clock())?;
        }
        if !self.edge_in_sync {
            self.resync(clock())?;
        }
        let result = self.try_process_batch(clock);
        if result.is_err() {
            // States taken out for the batch may hold its uncommitted changes.
            self.recovered = false;
        }
        result
    }

    fn try_process_batch(&mut self, clock: &dyn Fn() -> i64) -> Result<BatchReport, PipelineError> {
        let started = Instant::now();
        let events = EventLog::pending(&self.conn, self.config.batch_size)?;
        let read_us = started.elapsed().as_micros() as u64;
        let now_ms = clock();
        if events.is_empty() {
            self.write_back_when_idle(now_ms)?;
            return Ok(BatchReport {
                version: self.version,
                edge_in_sync: self.edge_in_sync,
                ..BatchReport::default()
            });
        }
        let version = self.version + 1;
        let first_seq = events[0].seq;
        let last_seq = events.last().map_or(0, |e| e.seq);
        let mut states: HashMap<Sku, Option<SkuState>> = HashMap::new();
        for stored in &events {
            let sku = stored.event.sku();
            if !states.contains_key(sku) {
                let state = match self.cache.remove(sku) {
                    Some(state) => Some(state),
                    None => SkuState::load(&self.conn, sku)?,
                };
                states.insert(sku.clone(), state);
            }
        }
        let batch: Vec<&StoredEvent> = events.iter().collect();
        let applied_at = Instant::now();
        let folded = fold_and_decide(&self.config, &mut states, &batch, now_ms, version, true)?;
        let decide_us = applied_at.elapsed().as_micros() as u64;
        let committing = Instant::now();
        let due = self.due_for_write_back(
            now_ms - CHECKPOINT_AGE_MS,
            last_seq - CHECKPOINT_EVENTS,
            events.len().max(MIN_WRITE_BACK),
        );
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut appender = audit::Appender::start(&tx)?;
        for (sku, record) in &folded.records {
            appender.append(sku.as_str(), now_ms, record)?;
        }
        appender.finish()?;
        tx.prepare_cached(
            "INSERT INTO batches (last_seq, first_seq, now_ms, version) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![last_seq, first_seq, now_ms, version as i64])?;
        EventLog::mark_processed_through(&tx, last_seq)?;
        if !folded.upserts.is_empty() {
            store::meta_set(&tx, VERSION_KEY, &version.to_string())?;
        }
        if !due.is_empty() {
            write_back(&tx, &due, &states, &self.cache, &self.dirty, last_seq)?;
        }
        tx.commit()?;
        let commit_us = committing.elapsed().as_micros() as u64;
        let before = self.processed_through;
        self.processed_through = last_seq;
        for sku in &folded.touched {
            self.mark_dirty(sku, now_ms, before);
        }
        // Written back with this batch's changes.
        for sku in &due {
            self.dirty.remove(sku);
        }
        let mut revenue: Vec<(String, i64)> = Vec::new();
        let mut feed_lag_ms: Vec<(String, i64)> = Vec::new();
        for stored in &events {
            let feed = stored.event.kind().as_str();
            match feed_lag_ms.iter_mut().find(|(f, _)| f == feed) {
                Some(lag) => lag.1 = now_ms - stored.received_at_ms,
                None => feed_lag_ms.push((feed.to_owned(), now_ms - stored.received_at_ms)),
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
        self.board.push_alerts(folded.alerts);
        self.remember(states.into_values().flatten())?;
        let published = folded.upserts.len();
        let publishing = Instant::now();
        if !folded.upserts.is_empty() {
            self.version = version;
            self.publish(version, now_ms, folded.upserts)?;
        }
        let publish_us = publishing.elapsed().as_micros() as u64;
        self.board.record_batch(BatchFigures {
            at_ms: now_ms,
            events: events.len() as u64,
            decisions: folded.decisions as u64,
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
            decisions: folded.decisions,
            published,
            version: self.version,
            edge_in_sync: self.edge_in_sync,
        })
    }

    /// Nothing pending: writes back (some of) the states that have been ahead of their
    /// rows for [`IDLE_CHECKPOINT_AGE_MS`].
    fn write_back_when_idle(&mut self, now_ms: i64) -> Result<(), PipelineError> {
        let due = self.due_for_write_back(
            now_ms - IDLE_CHECKPOINT_AGE_MS,
            i64::MIN,
            MAX_IDLE_WRITE_BACK,
        );
        if due.is_empty() {
            return Ok(());
        }
        let (cache, dirty, through) = (&self.cache, &self.dirty, self.processed_through);
        let written = without_waiting_for_the_disk(&mut self.conn, |tx| {
            write_back(tx, &due, &HashMap::new(), cache, dirty, through)
        });
        if let Err(err) = written {
            // Still dirty: put them back in line.
            for sku in due {
                if let Some(dirty) = self.dirty.get(&sku) {
                    self.dirty_order.push_front((sku, dirty.at_ms));
                }
            }
            return Err(err);
        }
        for sku in &due {
            self.dirty.remove(sku);
        }
        Ok(())
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
        let result = self.try_reevaluate(now_ms);
        if result.is_err() {
            self.recovered = false;
        }
        result
    }

    fn try_reevaluate(&mut self, now_ms: i64) -> Result<BatchReport, PipelineError> {
        // Every SKU is read from and written to its row: make the rows current first.
        self.checkpoint()?;
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
                state.save(&tx, self.processed_through)?;
                states.push(state);
            }
            if !upserts.is_empty() {
                store::meta_set(&tx, VERSION_KEY, &version.to_string())?;
            }
            tx.commit()?;
            self.board.put_states(&states, &self.config, now_ms);
            self.board.push_alerts(alerts);
            self.remember(states)?;
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
        // A copy: the working copy is replaced only after the commit.
        let mut state = self
            .sku_state(sku)?
            .ok_or_else(|| PipelineError::UnknownSku(sku.to_string()))?;
        change(&mut state)?;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
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
        state.save(&tx, self.processed_through)?;
        if entry.is_some() {
            store::meta_set(&tx, VERSION_KEY, &version.to_string())?;
        }
        tx.commit()?;
        // The row is current now (it has every batch's effects and this change).
        self.dirty.remove(sku);
        self.board.put_states([&state], &self.config, now_ms);
        self.board.push_alerts(alerts);
        self.remember([state])?;
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

    /// The SKU's state: the working copy, or its row.
    pub fn sku_state(&self, sku: &Sku) -> Result<Option<SkuState>, PipelineError> {
        match self.cache.get(sku) {
            Some(state) => Ok(Some(state.clone())),
            None => Ok(SkuState::load(&self.conn, sku)?),
        }
    }
}

/// Writes back the states of `skus` (from `batch_states` if the batch holds them, else
/// from the working copy `cache`) as current through `through_seq`, and drops the
/// journaled batches no other state in `dirty` needs; inside the caller's transaction.
fn write_back(
    tx: &Connection,
    skus: &[Sku],
    batch_states: &HashMap<Sku, Option<SkuState>>,
    cache: &HashMap<Sku, SkuState>,
    dirty: &HashMap<Sku, Dirty>,
    through_seq: i64,
) -> Result<(), PipelineError> {
    for sku in skus {
        let state = match batch_states.get(sku) {
            Some(state) => state.as_ref(),
            None => cache.get(sku),
        };
        if let Some(state) = state {
            state.save(tx, through_seq)?;
        }
    }
    let written: HashSet<&Sku> = skus.iter().collect();
    let oldest_needed = dirty
        .iter()
        .filter(|(sku, _)| !written.contains(sku))
        .map(|(_, dirty)| dirty.row_through)
        .min()
        .unwrap_or(through_seq);
    tx.prepare_cached("DELETE FROM batches WHERE last_seq <= ?1")?
        .execute([oldest_needed])?;
    Ok(())
}

/// Runs `write` in an immediate transaction committed with `synchronous = NORMAL`
/// (see the module docs on write-backs), then restores `FULL`.
fn without_waiting_for_the_disk(
    conn: &mut Connection,
    write: impl FnOnce(&Connection) -> Result<(), PipelineError>,
) -> Result<(), PipelineError> {
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let result = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(PipelineError::from)
        .and_then(|tx| {
            write(&tx)?;
            Ok(tx.commit()?)
        });
    conn.pragma_update(None, "synchronous", "FULL")?;
    result
}

/// The journal of batches processed since their states were written back, in order.
fn journaled_batches(conn: &Connection) -> Result<Vec<JournaledBatch>, PipelineError> {
    let mut stmt =
        conn.prepare("SELECT first_seq, last_seq, now_ms, version FROM batches ORDER BY last_seq")?;
    let rows = stmt.query_map([], |row| {
        Ok(JournaledBatch {
            first_seq: row.get(0)?,
            last_seq: row.get(1)?,
            now_ms: row.get(2)?,
            version: row.get::<_, i64>(3)? as u64,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// What folding and deciding one batch produced.
#[derive(Debug, Default)]
struct Folded {
    /// Entries to publish.
    upserts: Vec<PriceEntry>,
    /// Decision records to append: SKU and canonical JSON (none when replaying).
    records: Vec<(Sku, String)>,
    /// Alerts of recorded decisions.
    alerts: Vec<AlertRow>,
    /// Decisions worth a record.
    decisions: usize,
    /// SKUs decided, in order of their first event in the batch.
    touched: Vec<Sku>,
}

/// Folds a batch's events into their SKUs' states (loaded into `states` by the caller)
/// and decides once per touched SKU, in order of each SKU's first event. Pure apart
/// from logging: the live batch and the replay after a crash run exactly this. With
/// `keep_records` false (a replay) the decision records are not encoded.
fn fold_and_decide(
    config: &PipelineConfig,
    states: &mut HashMap<Sku, Option<SkuState>>,
    events: &[&StoredEvent],
    now_ms: i64,
    version: u64,
    keep_records: bool,
) -> Result<Folded, PipelineError> {
    // Per touched SKU: its events' ids and the alerts raised while applying them.
    let mut touched: Vec<(Sku, Vec<String>, Vec<Alert>)> = Vec::new();
    let mut position: HashMap<&Sku, usize> = HashMap::new();
    for stored in events {
        let sku = stored.event.sku();
        let state = states.get_mut(sku).expect("the caller loads every SKU");
        let category = match (&*state, &stored.event) {
            (Some(s), _) => s.category.as_str(),
            (None, FeedEvent::Catalog(c)) => c.category.as_str(),
            (None, _) => "",
        };
        let rules = config.rules_for(category);
        let alerts = apply_event(state, &stored.event, rules, now_ms);
        let index = *position.entry(sku).or_insert_with(|| {
            touched.push((sku.clone(), Vec::new(), Vec::new()));
            touched.len() - 1
        });
        touched[index].1.push(stored.event.event_id().to_owned());
        touched[index].2.extend(alerts);
    }
    let mut folded = Folded::default();
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
        let (entry, record) = decide_one(
            config,
            state,
            now_ms,
            version,
            trigger,
            keep_records,
            &mut folded.alerts,
        )?;
        if let Some(record) = record {
            folded.decisions += 1;
            if keep_records {
                folded.records.push((sku.clone(), record));
            }
        }
        folded.upserts.extend(entry);
        folded.touched.push(sku);
    }
    Ok(folded)
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

/// Decides for one SKU inside the caller's transaction and appends its decision record
/// when it is noteworthy (see [`decide_one`]). Returns the entry to publish if it
/// changed, and whether a record was written.
fn decide_and_record(
    tx: &Connection,
    config: &PipelineConfig,
    state: &mut SkuState,
    now_ms: i64,
    version: u64,
    trigger: Trigger,
    alerts: &mut Vec<AlertRow>,
) -> Result<(Option<PriceEntry>, bool), PipelineError> {
    let (entry, record) = decide_one(config, state, now_ms, version, trigger, true, alerts)?;
    if let Some(record) = &record {
        audit::append(tx, state.sku.as_str(), now_ms, record)?;
    }
    Ok((entry, record.is_some()))
}

/// Decides for one SKU: a decision record is due when the published entry, the pending
/// suggestion or the alerts changed (or the trigger asks for one); the state's
/// published entry is updated. Returns the entry to publish if it changed, and the
/// record if one is due — its canonical JSON, or an empty string when `encode` is false
/// (a replay, whose records are already in the log); alerts of recorded decisions are
/// added to `alerts`.
fn decide_one(
    config: &PipelineConfig,
    state: &mut SkuState,
    now_ms: i64,
    version: u64,
    trigger: Trigger,
    encode: bool,
    alerts: &mut Vec<AlertRow>,
) -> Result<(Option<PriceEntry>, Option<String>), PipelineError> {
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
    let record = if noteworthy {
        let record = if encode {
            serde_json::to_string(&decision.record)
                .map_err(|e| PipelineError::Encode(e.to_string()))?
        } else {
            String::new()
        };
        for alert in &decision.record.alerts {
            if encode {
                warn!(sku, kind = %alert.kind, message = %alert.message, "alert");
            }
            alerts.push(AlertRow {
                at_ms: now_ms,
                kind: alert.kind.clone(),
                sku: Some(alert.sku.clone()),
                message: alert.message.clone(),
            });
        }
        Some(record)
    } else {
        None
    };
    let entry = match decision.entry {
        Some(entry) if changed => {
            state.published = Some(entry.clone());
            Some(entry)
        }
        _ => None,
    };
    Ok((entry, record))
}

/// Entries equal apart from the revision that published them.
fn same_entry(a: &PriceEntry, b: &PriceEntry) -> bool {
    PriceEntry {
        revision: b.revision,
        ..a.clone()
    } == *b
}
