//! Running the control plane: the ingest writer and the pipeline on their own threads.
//!
//! [`ControlPlane::start`] opens the data directory, starts the [`Ingestor`] (group
//! commit) and the pipeline thread, which resyncs the edge with a full snapshot, then
//! processes events whenever the ingestor commits some (and at least every
//! [`RuntimeConfig::tick_ms`], which also retries an edge that was unreachable), and
//! decides every SKU again each [`RuntimeConfig::reevaluate_ms`].
//! Admin calls go to the pipeline thread over a channel, so one thread owns the
//! pipeline's connection.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use edgeprice_pricing::Sku;
use serde::{Deserialize, Serialize};
use tracing::{error, info};

use crate::admin::board::Board;
use crate::admin::edges::EdgeProbe;
use crate::pipeline::controls::Operations;
use crate::pipeline::{BatchReport, DecisionRecord, Pipeline, PipelineConfig, PipelineError};
use crate::publish::Publisher;
use crate::store::{Ingestor, StoreError};

/// How the control plane runs (the `[control]` table of the config file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RuntimeConfig {
    /// Where `control.db` lives.
    pub data_dir: PathBuf,
    /// Longest wait between two pipeline runs when no event arrives, milliseconds.
    pub tick_ms: u64,
    /// How often every SKU is decided again without an event (time moves prices:
    /// demand windows, promotion windows, stale competitor prices), milliseconds.
    pub reevaluate_ms: u64,
    /// The decision pipeline's rules.
    pub pipeline: PipelineConfig,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            data_dir: PathBuf::from("data/control"),
            tick_ms: 1_000,
            reevaluate_ms: 60_000,
            pipeline: PipelineConfig::default(),
        }
    }
}

/// An operator action for the pipeline thread; it gets the current time.
type Operation = Box<dyn FnOnce(&mut dyn Operations, i64) + Send>;

enum Command {
    Wake,
    Stop,
    Approve {
        sku: Sku,
        reply_tx: mpsc::Sender<Result<DecisionRecord, PipelineError>>,
    },
    ResolveCost {
        sku: Sku,
        accept: bool,
        reply_tx: mpsc::Sender<Result<DecisionRecord, PipelineError>>,
    },
    Decisions {
        sku: String,
        limit: usize,
        reply_tx: mpsc::Sender<Result<Vec<DecisionRecord>, PipelineError>>,
    },
    Flush {
        reply_tx: mpsc::Sender<Result<BatchReport, PipelineError>>,
    },
    /// An operator action, run on the pipeline thread with the current time.
    Operate(Operation),
}

/// What the admin API needs of a running control plane; cheap to clone.
#[derive(Clone)]
pub struct ControlHandle {
    commands_tx: mpsc::Sender<Command>,
    ingestor: Arc<Ingestor>,
    data_dir: PathBuf,
    board: Arc<Board>,
    edges: Arc<EdgeProbe>,
}

impl std::fmt::Debug for ControlHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlHandle")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl ControlHandle {
    /// Where accepted events go.
    pub fn ingestor(&self) -> &Arc<Ingestor> {
        &self.ingestor
    }

    /// The control plane's data directory (for read-only connections).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The admin read model.
    pub fn board(&self) -> &Arc<Board> {
        &self.board
    }

    /// The edges' metrics reader.
    pub fn edges(&self) -> &Arc<EdgeProbe> {
        &self.edges
    }

    /// Runs `action` on the pipeline thread and waits for its result (blocking: call
    /// it from a blocking context).
    pub fn operate<T: Send + 'static>(
        &self,
        action: impl FnOnce(&mut dyn Operations, i64) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply_tx, reply_rx) = mpsc::channel();
        self.commands_tx
            .send(Command::Operate(Box::new(move |ops, now_ms| {
                let _ = reply_tx.send(action(ops, now_ms));
            })))
            .map_err(|_| StoreError::Stopped)?;
        reply_rx.recv().map_err(|_| StoreError::Stopped)
    }
}

/// A running control plane. Dropping it stops both threads after the work in hand.
#[derive(Debug)]
pub struct ControlPlane {
    ingestor: Option<Arc<Ingestor>>,
    commands_tx: Option<mpsc::Sender<Command>>,
    pipeline_jh: Option<JoinHandle<()>>,
    data_dir: PathBuf,
    board: Arc<Board>,
}

use crate::now_ms;

impl ControlPlane {
    /// Starts ingestion and the pipeline over `config.data_dir`, publishing to
    /// `publisher` (the in-process edge of `edgeprice up`, or [`crate::publish::HttpPublisher`]).
    pub fn start<P: Publisher + 'static>(
        config: RuntimeConfig,
        publisher: P,
    ) -> Result<ControlPlane, PipelineError> {
        let mut pipeline = Pipeline::open(&config.data_dir, config.pipeline.clone(), publisher)?;
        let board = pipeline.board();
        let (commands_tx, commands_rx) = mpsc::channel();
        let wake_tx = commands_tx.clone();
        // One wake-up in flight at a time: commits arriving while the pipeline works are
        // picked up by the batch it runs next.
        let wake_pending = Arc::new(AtomicBool::new(false));
        let wake_flag = Arc::clone(&wake_pending);
        let ingest_board = Arc::clone(&board);
        let ingestor = Ingestor::start(&config.data_dir, move |report| {
            if report.max_seq.is_some() && !wake_flag.swap(true, Ordering::AcqRel) {
                let _ = wake_tx.send(Command::Wake);
            }
            ingest_board.record_stages(
                now_ms(),
                &[
                    ("ingest_lock_wait", report.lock_wait_us),
                    ("ingest_write", report.write_us),
                    ("ingest_commit", report.commit_us),
                ],
            );
        })?;
        let tick = Duration::from_millis(config.tick_ms.max(1));
        let reevaluate_every = Duration::from_millis(config.reevaluate_ms.max(1));
        let pipeline_jh = std::thread::Builder::new()
            .name("edgeprice-pipeline".into())
            .spawn(move || {
                info!("pipeline started");
                run(
                    &mut pipeline,
                    &commands_rx,
                    &wake_pending,
                    tick,
                    reevaluate_every,
                );
                info!("pipeline stopped");
            })
            .map_err(|source| StoreError::DataDir {
                path: config.data_dir.clone(),
                source,
            })?;
        Ok(ControlPlane {
            ingestor: Some(Arc::new(ingestor)),
            commands_tx: Some(commands_tx),
            pipeline_jh: Some(pipeline_jh),
            data_dir: config.data_dir,
            board,
        })
    }

    /// A handle for the admin API; `edges` are the addresses of the edges' HTTP
    /// listeners (read for metrics).
    pub fn handle(&self, edges: Vec<SocketAddr>) -> ControlHandle {
        ControlHandle {
            commands_tx: self.commands_tx.clone().expect("running"),
            ingestor: self.ingestor(),
            data_dir: self.data_dir.clone(),
            board: Arc::clone(&self.board),
            edges: Arc::new(EdgeProbe::new(edges)),
        }
    }

    /// Where accepted events go (shared with the HTTP ingestion server).
    pub fn ingestor(&self) -> Arc<Ingestor> {
        Arc::clone(self.ingestor.as_ref().expect("running"))
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn call<T>(
        &self,
        make: impl FnOnce(mpsc::Sender<Result<T, PipelineError>>) -> Command,
    ) -> Result<T, PipelineError> {
        let (reply_tx, reply_rx) = mpsc::channel();
        self.commands_tx
            .as_ref()
            .ok_or(PipelineError::Store(StoreError::Stopped))?
            .send(make(reply_tx))
            .map_err(|_| PipelineError::Store(StoreError::Stopped))?;
        reply_rx
            .recv()
            .map_err(|_| PipelineError::Store(StoreError::Stopped))?
    }

    /// Processes every event accepted so far and returns what that did; for tests and
    /// for a clean shutdown.
    pub fn flush(&self) -> Result<BatchReport, PipelineError> {
        self.call(|reply_tx| Command::Flush { reply_tx })
    }

    /// Approves a high-risk SKU's pending price suggestion.
    pub fn approve_suggestion(&self, sku: Sku) -> Result<DecisionRecord, PipelineError> {
        self.call(|reply_tx| Command::Approve { sku, reply_tx })
    }

    /// Accepts or rejects the cost held for review on a SKU.
    pub fn resolve_held_cost(
        &self,
        sku: Sku,
        accept: bool,
    ) -> Result<DecisionRecord, PipelineError> {
        self.call(|reply_tx| Command::ResolveCost {
            sku,
            accept,
            reply_tx,
        })
    }

    /// A SKU's decision records, newest first: why it has its price.
    pub fn decisions_for(
        &self,
        sku: &str,
        limit: usize,
    ) -> Result<Vec<DecisionRecord>, PipelineError> {
        self.call(|reply_tx| Command::Decisions {
            sku: sku.to_owned(),
            limit,
            reply_tx,
        })
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Other holders of the ingestor (an HTTP server) keep it alive; the pipeline is
        // told to stop explicitly because the ingestor's callback holds a sender.
        self.ingestor.take();
        if let Some(commands_tx) = self.commands_tx.take() {
            let _ = commands_tx.send(Command::Stop);
        }
        if let Some(pipeline_jh) = self.pipeline_jh.take() {
            let _ = pipeline_jh.join();
        }
    }
}

/// Runs one batch (`drain`: batches until nothing is pending). Returns the report
/// (for a single batch, `events > 0` means more may be pending).
fn process<P: Publisher>(
    pipeline: &mut Pipeline<P>,
    drain: bool,
) -> Result<BatchReport, PipelineError> {
    if let Err(err) = pipeline.expire_overrides(now_ms()) {
        error!(error = %err, "expiring overrides failed; it will be retried");
    }
    if pipeline.controls().pipeline_paused() {
        // Paused by an operator: events stay accepted and pending.
        return Ok(BatchReport {
            version: pipeline.version(),
            edge_in_sync: pipeline.edge_in_sync(),
            ..BatchReport::default()
        });
    }
    // Each batch reads the clock after reading its events: events accepted while earlier
    // batches (or a resync) ran must not be judged at an older time (a cost effective
    // "now" would look scheduled).
    let mut total = BatchReport::default();
    let result = loop {
        match pipeline.process_batch_with(&now_ms) {
            Ok(report) => {
                total.events += report.events;
                total.decisions += report.decisions;
                total.published += report.published;
                total.version = report.version;
                total.edge_in_sync = report.edge_in_sync;
                if report.events == 0 || !drain {
                    break Ok(total);
                }
            }
            Err(err) => break Err(err),
        }
    };
    if let Err(err) = &result {
        error!(error = %err, code = err.code(), "pipeline batch failed; it will be retried");
    }
    result
}

/// The pipeline thread: one batch at a time, with commands (operator actions above all)
/// taken between batches, so a busy feed never holds up a kill switch.
fn run<P: Publisher>(
    pipeline: &mut Pipeline<P>,
    commands_rx: &mpsc::Receiver<Command>,
    wake_pending: &AtomicBool,
    tick: Duration,
    reevaluate_every: Duration,
) {
    let mut next_reevaluation = std::time::Instant::now() + reevaluate_every;
    let mut more = process(pipeline, false).is_ok_and(|r| r.events > 0);
    loop {
        if std::time::Instant::now() >= next_reevaluation && !pipeline.controls().pipeline_paused()
        {
            if let Err(err) = pipeline.reevaluate(now_ms()) {
                error!(error = %err, code = err.code(), "re-evaluation failed; it will be retried");
            }
            next_reevaluation = std::time::Instant::now() + reevaluate_every;
        }
        let command = if more {
            match commands_rx.try_recv() {
                Ok(command) => Ok(command),
                Err(mpsc::TryRecvError::Empty) => Err(mpsc::RecvTimeoutError::Timeout),
                Err(mpsc::TryRecvError::Disconnected) => Err(mpsc::RecvTimeoutError::Disconnected),
            }
        } else {
            commands_rx.recv_timeout(tick)
        };
        match command {
            Ok(Command::Wake) => {
                wake_pending.store(false, Ordering::Release);
                more = process(pipeline, false).is_ok_and(|r| r.events > 0);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                more = process(pipeline, false).is_ok_and(|r| r.events > 0);
            }
            Ok(Command::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Ok(Command::Flush { reply_tx }) => {
                // Flushed means stored too: readers of the rows (the admin API's SKU
                // detail) see every processed event.
                let flushed = process(pipeline, true)
                    .and_then(|report| pipeline.checkpoint().map(|_| report));
                let _ = reply_tx.send(flushed);
                more = false;
            }
            Ok(Command::Approve { sku, reply_tx }) => {
                let _ = reply_tx.send(pipeline.approve_suggestion(&sku, now_ms()));
            }
            Ok(Command::ResolveCost {
                sku,
                accept,
                reply_tx,
            }) => {
                let _ = reply_tx.send(pipeline.resolve_held_cost(&sku, accept, now_ms()));
            }
            Ok(Command::Decisions {
                sku,
                limit,
                reply_tx,
            }) => {
                let _ = reply_tx.send(pipeline.decisions_for(&sku, limit));
            }
            Ok(Command::Operate(action)) => action(pipeline, now_ms()),
        }
    }
}
