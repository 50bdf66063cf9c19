//! The snapshot store: the one `ArcSwap` the read path loads from, and the writer
//! thread that is the only thing ever storing into it.
//!
//! Request threads call [`SnapshotStore::load`] (an arc-swap guard: no lock, no
//! allocation, no refcount traffic in the common case) and answer a whole request from
//! that one version. Every update — a full snapshot, a delta, a reload — is sent to the
//! writer thread, which decodes it, builds the next version and swaps it in.
//!
//! # Visible first, then durable
//!
//! An update is acknowledged once it is served; the writer then persists it, together
//! with every other update that queued meanwhile, with one fsync, before it takes the
//! next command. A price change is therefore never held back by the disk (an fsync of
//! a growing log on a busy disk takes tens of milliseconds, and in embedded mode the
//! control plane's pipeline waits for the acknowledgement). A crash between the swap
//! and the fsync restarts the edge at the version before: it serves that, as it would
//! with the control plane away, and the publisher, finding the edge behind, resends
//! (a delta for a base the edge does not have is refused with its current version, and
//! the publisher resyncs). What is on disk is always a consistent prefix of what was
//! served; a failed write is healed by writing the current version as a new snapshot.
//! `edgeprice_snapshot_persisted_version` shows how far the disk is.
//!
//! # Requests first
//!
//! The writer runs under `SCHED_IDLE`: a serving thread that wakes preempts it at once,
//! so building a delta takes the core's idle time instead of adding its milliseconds to
//! the requests queued behind it (at 80% serving load, a 10,000-entry delta at nice 10
//! put GET p99 at 74 ms; under `SCHED_IDLE` 3.1 ms, `benches/RESULTS.md`). An idle-class
//! thread can starve on a saturated core, so a guard thread watches it: an update the
//! writer has held for [`BOOST_AFTER`] is finished at normal class, nice
//! [`WRITER_NICE`] (a tenth of a core against a busy worker), and the writer returns to
//! `SCHED_IDLE` when it is idle again. Leaving `SCHED_IDLE` needs `CAP_SYS_NICE` (or an
//! `RLIMIT_NICE` of 20); without it the writer runs at nice 10 throughout, with a
//! warning at start.
//!
//! Old versions are dropped on the writer thread, never on a request thread: a replaced
//! version goes to a retire list and is released only when the writer holds its last
//! reference (arc-swap turns outstanding guards into real references when it swaps, so
//! `strong_count == 1` really means no request can still be reading it). Versions share
//! most of their memory, so a drop frees only what the delta replaced.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwapOption, Guard};
use bytes::Bytes;
use edgeprice_schemas::codec::{self, DecodeError, DeltaData, SnapshotData};
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use crate::persist::{Persistence, Recovered};
use crate::snapshot::{Snapshot, SnapshotError};

/// How often the writer releases retired versions when idle.
const RECLAIM_INTERVAL: Duration = Duration::from_millis(50);

/// An update to the table.
#[derive(Debug)]
pub enum Update {
    /// An encoded full snapshot. Refused unless its version is newer than the current
    /// one, or `force` is set (an operator rolling back).
    Full { encoded: Bytes, force: bool },
    /// An encoded delta.
    Delta { encoded: Bytes },
    /// A decoded full snapshot (in-process publishers).
    FullData { data: SnapshotData, force: bool },
    /// A decoded delta (in-process publishers).
    DeltaData { data: DeltaData },
}

/// What an applied update produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub version: u64,
    pub entries: usize,
    /// Decode, build and swap, in microseconds.
    pub apply_us: u64,
}

/// Why an update was refused. Nothing is swapped in when an update fails.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("cannot decode the update: {0}")]
    Decode(#[from] DecodeError),
    #[error("{0}")]
    Snapshot(#[from] SnapshotError),
    #[error("snapshot version {offered} is not newer than the current version {current}")]
    Stale { offered: u64, current: u64 },
    #[error("no snapshot is loaded yet; send a full snapshot first")]
    NoBase,
    #[error("the snapshot writer has stopped")]
    Stopped,
}

impl UpdateError {
    /// The version the edge is at, for errors a publisher resolves by resyncing.
    pub fn current_version(&self) -> Option<u64> {
        match self {
            UpdateError::Snapshot(SnapshotError::VersionConflict { current, .. }) => Some(*current),
            UpdateError::Stale { current, .. } => Some(*current),
            _ => None,
        }
    }
}

struct Command {
    update: Update,
    reply_tx: oneshot::Sender<Result<Applied, UpdateError>>,
}

#[derive(Default)]
struct Shared {
    current: ArcSwapOption<Snapshot>,
    /// When the current version was swapped in at this edge (Unix ms).
    applied_at_ms: AtomicI64,
    updates_applied: AtomicU64,
    updates_failed: AtomicU64,
    persisted_version: AtomicU64,
    persist_failures: AtomicU64,
    persists: AtomicU64,
    persist_us_total: AtomicU64,
}

/// Counters about updates, for metrics.
#[derive(Debug, Clone, Copy)]
pub struct UpdateStats {
    pub applied_at_ms: i64,
    pub applied: u64,
    pub failed: u64,
    /// The newest version on disk (0: none, or no data directory).
    pub persisted_version: u64,
    /// Writes to the data directory that failed (each healed by a new snapshot).
    pub persist_failures: u64,
    /// Persisting groups of updates: how many, and the time they took.
    pub persists: u64,
    pub persist_us_total: u64,
}

/// The current price table and the way to replace it.
pub struct SnapshotStore {
    shared: Arc<Shared>,
    commands_tx: Option<mpsc::Sender<Command>>,
    writer_jh: Option<thread::JoinHandle<()>>,
    data_dir: Option<PathBuf>,
}

impl Drop for SnapshotStore {
    /// Waits for the writer to persist what it has applied.
    fn drop(&mut self) {
        self.commands_tx.take();
        if let Some(writer_jh) = self.writer_jh.take() {
            let _ = writer_jh.join();
        }
    }
}

impl std::fmt::Debug for SnapshotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotStore")
            .field("version", &self.load().as_ref().map(|s| s.version()))
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

impl SnapshotStore {
    /// Opens the store. With a data directory, the last persisted state is recovered
    /// (before this returns) and every later update is persisted right after it is
    /// swapped in (see the module docs).
    pub fn open(data_dir: Option<PathBuf>) -> anyhow::Result<SnapshotStore> {
        let shared = Arc::new(Shared::default());
        let mut persistence = match &data_dir {
            Some(dir) => Some(Persistence::open(dir)?),
            None => None,
        };
        if let Some(p) = &mut persistence {
            if let Some(Recovered { snapshot, deltas }) = p.recover()? {
                let started = Instant::now();
                let mut table = Snapshot::build(snapshot)?;
                for delta in deltas {
                    table = table.apply(delta)?;
                }
                p.start_log(table.version())?;
                info!(
                    version = table.version(),
                    entries = table.entry_count(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "serving recovered snapshot"
                );
                shared
                    .persisted_version
                    .store(table.version(), Ordering::Relaxed);
                shared.current.store(Some(Arc::new(table)));
                shared.applied_at_ms.store(now_ms(), Ordering::Relaxed);
            }
        }
        let (commands_tx, commands_rx) = mpsc::channel();
        let priority = Arc::new(WriterPriority::new());
        let writer = Writer {
            priority: Arc::clone(&priority),
            shared: Arc::clone(&shared),
            persistence,
            unpersisted: Vec::new(),
            persist_broken: false,
            retired: Vec::new(),
            compaction: None,
        };
        let writer_jh = thread::Builder::new()
            .name("snapshot-writer".into())
            .spawn(move || writer.run(commands_rx))?;
        if priority.idle_class {
            thread::Builder::new()
                .name("snapshot-guard".into())
                .spawn(move || priority.guard())?;
        }
        Ok(SnapshotStore {
            shared,
            commands_tx: Some(commands_tx),
            writer_jh: Some(writer_jh),
            data_dir,
        })
    }

    /// The current version, for one request. Hold it for the whole request so every
    /// part of the answer comes from the same version.
    #[inline]
    pub fn load(&self) -> Guard<Option<Arc<Snapshot>>> {
        self.shared.current.load()
    }

    /// Whether a snapshot is loaded (readiness).
    pub fn is_ready(&self) -> bool {
        self.shared.current.load().is_some()
    }

    pub fn stats(&self) -> UpdateStats {
        UpdateStats {
            applied_at_ms: self.shared.applied_at_ms.load(Ordering::Relaxed),
            applied: self.shared.updates_applied.load(Ordering::Relaxed),
            failed: self.shared.updates_failed.load(Ordering::Relaxed),
            persisted_version: self.shared.persisted_version.load(Ordering::Relaxed),
            persist_failures: self.shared.persist_failures.load(Ordering::Relaxed),
            persists: self.shared.persists.load(Ordering::Relaxed),
            persist_us_total: self.shared.persist_us_total.load(Ordering::Relaxed),
        }
    }

    fn send(&self, command: Command) -> Result<(), UpdateError> {
        self.commands_tx
            .as_ref()
            .ok_or(UpdateError::Stopped)?
            .send(command)
            .map_err(|_| UpdateError::Stopped)
    }

    /// Sends an update to the writer; resolves once it is served (persisted right
    /// after, see the module docs), or refused. Runtime-agnostic: works from any
    /// executor.
    pub async fn update(&self, update: Update) -> Result<Applied, UpdateError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.send(Command { update, reply_tx })?;
        reply_rx.await.map_err(|_| UpdateError::Stopped)?
    }

    /// [`Self::update`] for threads outside any async runtime.
    pub fn update_blocking(&self, update: Update) -> Result<Applied, UpdateError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.send(Command { update, reply_tx })?;
        reply_rx.blocking_recv().map_err(|_| UpdateError::Stopped)?
    }
}

/// An update served but not on disk yet.
enum Unpersisted {
    Full { version: u64, encoded: Bytes },
    Delta { version: u64, encoded: Bytes },
}

struct Writer {
    priority: Arc<WriterPriority>,
    shared: Arc<Shared>,
    persistence: Option<Persistence>,
    /// Served, not yet persisted, oldest first.
    unpersisted: Vec<Unpersisted>,
    /// A write failed: the log has a gap, so nothing is appended until the current
    /// version is written as a snapshot (a compaction).
    persist_broken: bool,
    /// Replaced versions waiting for their last reader.
    retired: Vec<Arc<Snapshot>>,
    /// A compaction in progress: its version and where its result arrives.
    compaction: Option<(u64, mpsc::Receiver<std::io::Result<()>>)>,
}

impl Writer {
    fn run(mut self, commands_rx: mpsc::Receiver<Command>) {
        // Requests come first: a delta build that competes for a core with the serving
        // threads takes longer, instead of making every request behind it wait.
        self.priority.enter();
        loop {
            match commands_rx.recv_timeout(RECLAIM_INTERVAL) {
                Ok(command) => {
                    self.priority.busy();
                    self.handle(command);
                    // What queued meanwhile is served too before the disk is paid for,
                    // once for all of them.
                    while let Ok(command) = commands_rx.try_recv() {
                        self.handle(command);
                    }
                    self.persist();
                    self.priority.idle();
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.reclaim();
            self.finish_compaction();
        }
        self.priority.stopped.store(true, Ordering::Relaxed);
        // Let the last compaction land so restarts do not replay a huge log.
        if let Some((_, done_rx)) = self.compaction.take() {
            let _ = done_rx.recv();
        }
    }

    fn handle(&mut self, Command { update, reply_tx }: Command) {
        let result = self.apply(update);
        let counter = if result.is_ok() {
            &self.shared.updates_applied
        } else {
            &self.shared.updates_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Err(err) = &result {
            warn!(error = %err, "snapshot update refused");
        }
        // The caller may have gone away (client disconnect); the update stands.
        let _ = reply_tx.send(result);
    }

    /// Writes what was served since the last call: a full snapshot (the newest one
    /// pending) and the deltas after it, with one fsync for the deltas.
    fn persist(&mut self) {
        let Some(p) = &mut self.persistence else {
            self.unpersisted.clear();
            return;
        };
        if self.unpersisted.is_empty() {
            return;
        }
        let started = Instant::now();
        let pending = std::mem::take(&mut self.unpersisted);
        let last_version = match pending.last() {
            Some(Unpersisted::Full { version, .. } | Unpersisted::Delta { version, .. }) => {
                *version
            }
            None => return,
        };
        let written = if self.persist_broken {
            Err(std::io::Error::other(
                "waiting for a snapshot after a failed write",
            ))
        } else {
            let from_full = pending
                .iter()
                .rposition(|u| matches!(u, Unpersisted::Full { .. }));
            let mut result = Ok(());
            if let Some(Unpersisted::Full { version, encoded }) = from_full.map(|i| &pending[i]) {
                // A full snapshot supersedes any compaction in flight.
                self.compaction = None;
                result = p.write_snapshot(*version, encoded);
            }
            let deltas: Vec<&[u8]> = pending[from_full.map_or(0, |i| i + 1)..]
                .iter()
                .filter_map(|u| match u {
                    Unpersisted::Delta { encoded, .. } => Some(&encoded[..]),
                    Unpersisted::Full { .. } => None,
                })
                .collect();
            result.and_then(|()| p.append_deltas(&deltas))
        };
        match written {
            Ok(()) => {
                let shared = &self.shared;
                shared
                    .persisted_version
                    .store(last_version, Ordering::Relaxed);
                shared.persists.fetch_add(1, Ordering::Relaxed);
                shared
                    .persist_us_total
                    .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                self.maybe_compact(false);
            }
            Err(err) => {
                if !self.persist_broken {
                    error!(error = %err, version = last_version, "persisting served updates failed; the current version will be written as a snapshot");
                    self.shared.persist_failures.fetch_add(1, Ordering::Relaxed);
                }
                self.persist_broken = true;
                // Heal: the current version as a new snapshot and a new log.
                self.maybe_compact(true);
            }
        }
    }

    fn apply(&mut self, update: Update) -> Result<Applied, UpdateError> {
        let started = Instant::now();
        let current = self.shared.current.load_full();
        let current_version = current.as_ref().map(|s| s.version());
        match update {
            Update::Full { encoded, force } => {
                let data = codec::decode_snapshot(&encoded)?;
                self.apply_full(data, force, current_version, started, Some(encoded))
            }
            Update::FullData { data, force } => {
                self.apply_full(data, force, current_version, started, None)
            }
            Update::Delta { encoded } => {
                // Read in place: no owned copy of the entries is made.
                let view = codec::DeltaView::parse(&encoded)?;
                let table = current.ok_or(UpdateError::NoBase)?.apply_view(&view)?;
                self.commit_delta(table, started, Some(encoded))
            }
            Update::DeltaData { data } => {
                let current = current.ok_or(UpdateError::NoBase)?;
                let encoded = self
                    .persistence
                    .is_some()
                    .then(|| Bytes::from(codec::encode_delta(&data)));
                let table = current.apply(data)?;
                self.commit_delta(table, started, encoded)
            }
        }
    }

    fn apply_full(
        &mut self,
        data: SnapshotData,
        force: bool,
        current_version: Option<u64>,
        started: Instant,
        encoded: Option<Bytes>,
    ) -> Result<Applied, UpdateError> {
        if let Some(current) = current_version {
            if data.version <= current && !force {
                return Err(UpdateError::Stale {
                    offered: data.version,
                    current,
                });
            }
        }
        let version = data.version;
        let encoded = match (&self.persistence, encoded) {
            (Some(_), None) => Some(Bytes::from(codec::encode_snapshot(&data))),
            (_, encoded) => encoded,
        };
        let table = Snapshot::build(data)?;
        let entries = table.entry_count();
        self.swap(table);
        if let (Some(_), Some(encoded)) = (&self.persistence, encoded) {
            self.unpersisted
                .push(Unpersisted::Full { version, encoded });
        }
        info!(version, entries, "full snapshot applied");
        Ok(Applied {
            version,
            entries,
            apply_us: started.elapsed().as_micros() as u64,
        })
    }

    /// Swaps a built delta version in; it is persisted by [`Self::persist`].
    fn commit_delta(
        &mut self,
        table: Snapshot,
        started: Instant,
        encoded: Option<Bytes>,
    ) -> Result<Applied, UpdateError> {
        let (version, entries) = (table.version(), table.entry_count());
        self.swap(table);
        if let (Some(_), Some(encoded)) = (&self.persistence, encoded) {
            self.unpersisted
                .push(Unpersisted::Delta { version, encoded });
        }
        Ok(Applied {
            version,
            entries,
            apply_us: started.elapsed().as_micros() as u64,
        })
    }

    fn swap(&mut self, table: Snapshot) {
        if let Some(old) = self.shared.current.swap(Some(Arc::new(table))) {
            self.retired.push(old);
        }
        self.shared.applied_at_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Drops retired versions nobody reads any more — here, not on a request thread.
    fn reclaim(&mut self) {
        self.retired
            .retain(|snapshot| Arc::strong_count(snapshot) > 1);
    }

    /// Starts a compaction when the log is large, or when `heal`ing after a failed
    /// write. A compaction that starts while the log is broken heals it: later deltas go
    /// to a new log that begins at the compacted version.
    fn maybe_compact(&mut self, heal: bool) {
        let Some(p) = &mut self.persistence else {
            return;
        };
        if self.compaction.is_some() || !(heal || p.wants_compaction()) {
            return;
        }
        let Some(snapshot) = self.shared.current.load_full() else {
            return;
        };
        let version = snapshot.version();
        if let Err(err) = p.start_log(version) {
            error!(error = %err, "cannot start a new delta log; compaction postponed");
            return;
        }
        let dir = p.dir().to_owned();
        let (done_tx, done_rx) = mpsc::channel();
        let spawned = thread::Builder::new()
            .name("snapshot-compact".into())
            .spawn(move || {
                // (It inherits the writer's class; a compaction nobody waits for is
                // fine at nice 10.)
                if let Err(err) = sched::set_normal(0, WRITER_NICE) {
                    warn!(error = %err, "cannot set the compaction thread's priority");
                }
                let encoded = codec::encode_snapshot_parts(
                    snapshot.version(),
                    snapshot.created_at_ms(),
                    snapshot.entries().collect::<Vec<_>>().iter(),
                    snapshot.promotions().map(|p| &**p.doc()),
                );
                let _ = done_tx.send(Persistence::write_compacted(&dir, version, &encoded));
            });
        match spawned {
            Ok(_) => {
                self.compaction = Some((version, done_rx));
                self.persist_broken = false;
            }
            Err(err) => error!(error = %err, "cannot start compaction"),
        }
    }

    fn finish_compaction(&mut self) {
        let Some((version, done_rx)) = &self.compaction else {
            return;
        };
        let result = match done_rx.try_recv() {
            Ok(result) => result,
            Err(mpsc::TryRecvError::Empty) => return,
            Err(mpsc::TryRecvError::Disconnected) => {
                Err(std::io::Error::other("compaction thread died"))
            }
        };
        let version = *version;
        self.compaction = None;
        match result.and_then(|()| {
            self.persistence
                .as_ref()
                .expect("compaction implies persistence")
                .remove_older_than(version)
        }) {
            Ok(()) => info!(version, "delta log compacted into a snapshot"),
            Err(err) => {
                error!(version, error = %err, "compaction failed; the previous snapshot and logs are kept, and the next write compacts again");
                // The chain may now have a gap (when the compaction was healing one).
                self.persist_broken = true;
                self.shared.persist_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Nice value of the compaction thread, and of the writer when it is boosted out of
/// `SCHED_IDLE` or cannot use it (serving threads stay at 0).
const WRITER_NICE: i32 = 10;

/// How long the writer may hold an update under `SCHED_IDLE` before the guard moves it
/// to normal class: the bound on how stale a saturated edge's prices get.
const BOOST_AFTER: Duration = Duration::from_millis(100);

/// The writer's scheduling (see the module docs), shared with its guard thread.
#[derive(Debug)]
struct WriterPriority {
    /// `SCHED_IDLE` with a guard; false: nice [`WRITER_NICE`] throughout.
    idle_class: bool,
    /// The writer's thread id, once it runs.
    tid: AtomicI32,
    /// When the writer took the update in hand (ns since `epoch`); 0: idle.
    busy_since_ns: AtomicU64,
    /// The guard moved the writer to normal class for the update in hand.
    boosted: AtomicBool,
    stopped: AtomicBool,
    epoch: Instant,
}

impl WriterPriority {
    fn new() -> WriterPriority {
        let idle_class = sched::idle_class_is_reversible();
        if !idle_class {
            warn!("the snapshot writer cannot leave SCHED_IDLE once in it (needs CAP_SYS_NICE), so it runs at nice {WRITER_NICE}: delta builds then add to request latency on a busy core");
        }
        WriterPriority {
            idle_class,
            tid: AtomicI32::new(0),
            busy_since_ns: AtomicU64::new(0),
            boosted: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            epoch: Instant::now(),
        }
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    /// Called by the writer thread when it starts.
    fn enter(&self) {
        self.tid.store(sched::gettid(), Ordering::Relaxed);
        let result = if self.idle_class {
            sched::set_idle(0)
        } else {
            sched::set_normal(0, WRITER_NICE)
        };
        if let Err(err) = result {
            warn!(error = %err, "cannot lower the snapshot writer's priority");
        }
    }

    /// The writer took an update in hand.
    fn busy(&self) {
        self.busy_since_ns.store(self.now_ns(), Ordering::Relaxed);
    }

    /// The writer is done with what it had; back to `SCHED_IDLE` if it was boosted.
    fn idle(&self) {
        self.busy_since_ns.store(0, Ordering::Relaxed);
        if self.boosted.swap(false, Ordering::Relaxed) {
            if let Err(err) = sched::set_idle(0) {
                warn!(error = %err, "cannot return the snapshot writer to SCHED_IDLE");
            }
        }
    }

    /// The guard thread: boosts a writer that has held an update for [`BOOST_AFTER`].
    /// (A boost racing with the writer going idle leaves it at nice 10 until the end of
    /// its next update: the policy it had before `SCHED_IDLE`, never worse.)
    fn guard(&self) {
        let tick = BOOST_AFTER / 4;
        let boost_after_ns = BOOST_AFTER.as_nanos() as u64;
        while !self.stopped.load(Ordering::Relaxed) {
            thread::sleep(tick);
            let since = self.busy_since_ns.load(Ordering::Relaxed);
            if since == 0
                || self.now_ns().saturating_sub(since) < boost_after_ns
                || self.boosted.load(Ordering::Relaxed)
            {
                continue;
            }
            let tid = self.tid.load(Ordering::Relaxed);
            match sched::set_normal(tid, WRITER_NICE) {
                Ok(()) => {
                    self.boosted.store(true, Ordering::Relaxed);
                    info!(
                        held_ms = BOOST_AFTER.as_millis() as u64,
                        "the serving threads left the snapshot writer no idle time; finishing its update at nice {WRITER_NICE}"
                    );
                }
                Err(err) => {
                    warn!(error = %err, "cannot boost the starved snapshot writer");
                    return;
                }
            }
        }
    }
}

/// Thread scheduling calls. On Linux policies and nice values are per thread; `tid` 0
/// is the calling thread.
mod sched {
    use std::io;

    #[cfg(target_os = "linux")]
    pub fn gettid() -> i32 {
        // SAFETY: plain syscall without arguments.
        unsafe { libc::syscall(libc::SYS_gettid) as i32 }
    }

    #[cfg(target_os = "linux")]
    fn set_policy(tid: i32, policy: libc::c_int) -> io::Result<()> {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: plain syscall on a thread id with a live parameter struct.
        if unsafe { libc::sched_setscheduler(tid, policy, &param) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Idle class: runs only when nothing else on the core wants to.
    #[cfg(target_os = "linux")]
    pub fn set_idle(tid: i32) -> io::Result<()> {
        set_policy(tid, libc::SCHED_IDLE)
    }

    /// Normal class at `nice`.
    #[cfg(target_os = "linux")]
    pub fn set_normal(tid: i32, nice: i32) -> io::Result<()> {
        set_policy(tid, libc::SCHED_OTHER)?;
        // SAFETY: plain syscall on a thread id.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether a thread of this process may leave `SCHED_IDLE` again: tried on a
    /// throwaway thread, so no real thread is stranded in the idle class.
    #[cfg(target_os = "linux")]
    pub fn idle_class_is_reversible() -> bool {
        std::thread::spawn(|| set_idle(0).is_ok() && set_normal(0, 0).is_ok())
            .join()
            .unwrap_or(false)
    }

    #[cfg(not(target_os = "linux"))]
    pub fn gettid() -> i32 {
        0
    }

    #[cfg(not(target_os = "linux"))]
    pub fn set_idle(_tid: i32) -> io::Result<()> {
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    pub fn set_normal(_tid: i32, _nice: i32) -> io::Result<()> {
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    pub fn idle_class_is_reversible() -> bool {
        false
    }
}

/// Wall-clock time as Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{chain_entry as entry, reprice_a};

    fn full(version: u64, price: i64) -> Update {
        Update::FullData {
            data: SnapshotData {
                version,
                created_at_ms: 0,
                promotions: None,
                entries: vec![entry("A", price)],
            },
            force: false,
        }
    }

    fn delta(base: u64, price: i64) -> Update {
        Update::DeltaData {
            data: reprice_a(base, price),
        }
    }

    fn price(store: &SnapshotStore) -> i64 {
        let guard = store.load();
        let s = guard.as_ref().unwrap();
        s.resolve("A", s.query(None, None, None), 0)
            .unwrap()
            .variant
            .entry
            .price_minor
    }

    #[test]
    fn updates_apply_in_order_and_stale_ones_are_refused() {
        let store = SnapshotStore::open(None).unwrap();
        assert!(!store.is_ready());
        assert!(matches!(
            store.update_blocking(delta(1, 5)),
            Err(UpdateError::NoBase)
        ));
        store.update_blocking(full(1, 10)).unwrap();
        assert!(store.is_ready());
        let applied = store.update_blocking(delta(1, 11)).unwrap();
        assert_eq!(applied.version, 2);
        assert_eq!(price(&store), 11);
        let err = store.update_blocking(delta(1, 12)).unwrap_err();
        assert_eq!(err.current_version(), Some(2));
        assert!(matches!(
            store.update_blocking(full(2, 99)),
            Err(UpdateError::Stale {
                offered: 2,
                current: 2
            })
        ));
        assert_eq!(price(&store), 11, "refused updates change nothing");
        let forced = Update::FullData {
            data: SnapshotData {
                version: 1,
                created_at_ms: 0,
                promotions: None,
                entries: vec![entry("A", 1)],
            },
            force: true,
        };
        store.update_blocking(forced).unwrap();
        assert_eq!(price(&store), 1);
        assert_eq!(store.stats().applied, 3);
        assert_eq!(store.stats().failed, 3);
    }

    #[test]
    fn a_failed_write_is_healed_by_a_snapshot_of_the_current_version() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = Writer {
            priority: Arc::new(WriterPriority::new()),
            shared: Arc::new(Shared::default()),
            persistence: Some(Persistence::open(dir.path()).unwrap()),
            unpersisted: Vec::new(),
            persist_broken: false,
            retired: Vec::new(),
            compaction: None,
        };
        let update = |writer: &mut Writer, update: Update| {
            let (reply_tx, reply_rx) = oneshot::channel();
            writer.handle(Command { update, reply_tx });
            reply_rx.blocking_recv().unwrap().unwrap();
            writer.persist();
        };
        update(&mut writer, full(1, 10));
        update(&mut writer, delta(1, 11));
        assert_eq!(writer.shared.persisted_version.load(Ordering::Relaxed), 2);

        writer
            .persistence
            .as_mut()
            .unwrap()
            .fail_log_writes_for_test()
            .unwrap();
        update(&mut writer, delta(2, 12));
        assert_eq!(writer.shared.persist_failures.load(Ordering::Relaxed), 1);
        assert_eq!(writer.shared.persisted_version.load(Ordering::Relaxed), 2);
        // The healing compaction of version 3 runs; later deltas go to its new log.
        assert_eq!(writer.compaction.as_ref().map(|c| c.0), Some(3));
        update(&mut writer, delta(3, 13));
        assert_eq!(writer.shared.persisted_version.load(Ordering::Relaxed), 4);
        while writer.compaction.is_some() {
            std::thread::sleep(Duration::from_millis(5));
            writer.finish_compaction();
        }
        assert!(!writer.persist_broken);
        drop(writer);

        let store = SnapshotStore::open(Some(dir.path().into())).unwrap();
        assert_eq!(store.load().as_ref().unwrap().version(), 4);
        assert_eq!(price(&store), 13);
    }

    #[test]
    fn restart_serves_the_last_applied_version() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SnapshotStore::open(Some(dir.path().into())).unwrap();
            store.update_blocking(full(1, 10)).unwrap();
            store.update_blocking(delta(1, 11)).unwrap();
            store.update_blocking(delta(2, 12)).unwrap();
        }
        let store = SnapshotStore::open(Some(dir.path().into())).unwrap();
        assert_eq!(store.load().as_ref().unwrap().version(), 3);
        assert_eq!(price(&store), 12);
        // And it keeps accepting the chain where it left off.
        store.update_blocking(delta(3, 13)).unwrap();
        drop(store);
        let store = SnapshotStore::open(Some(dir.path().into())).unwrap();
        assert_eq!(price(&store), 13);
    }

    fn promotions_doc(version: u64) -> Arc<edgeprice_schemas::codec::PromotionsDoc> {
        Arc::new(edgeprice_schemas::codec::PromotionsDoc {
            version,
            promotions: edgeprice_pricing::promo::synthetic::promotions(10, 20),
            ..Default::default()
        })
    }

    fn promotions_version(store: &SnapshotStore) -> Option<u64> {
        let guard = store.load();
        guard
            .as_ref()
            .unwrap()
            .promotions()
            .map(|p| p.set().version())
    }

    #[test]
    fn promotions_are_shared_between_versions_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SnapshotStore::open(Some(dir.path().into())).unwrap();
            let Update::FullData { mut data, force } = full(1, 10) else {
                unreachable!()
            };
            data.promotions = Some(promotions_doc(5));
            store
                .update_blocking(Update::FullData { data, force })
                .unwrap();
            let v1 = Arc::clone(store.load().as_ref().unwrap());
            store.update_blocking(delta(1, 11)).unwrap();
            let v2 = Arc::clone(store.load().as_ref().unwrap());
            assert!(
                Arc::ptr_eq(v1.promotions().unwrap(), v2.promotions().unwrap()),
                "a delta without promotions keeps the compiled set"
            );
            let Update::DeltaData { mut data } = delta(2, 12) else {
                unreachable!()
            };
            data.promotions = Some(promotions_doc(6));
            store.update_blocking(Update::DeltaData { data }).unwrap();
            assert_eq!(promotions_version(&store), Some(6));
            assert_eq!(
                store
                    .load()
                    .as_ref()
                    .unwrap()
                    .to_data()
                    .promotions
                    .unwrap()
                    .version,
                6
            );
        }
        let store = SnapshotStore::open(Some(dir.path().into())).unwrap();
        assert_eq!(promotions_version(&store), Some(6));
        assert_eq!(price(&store), 12);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_writer_holding_an_update_too_long_is_boosted_out_of_the_idle_class_and_returns_to_it() {
        let policy = |tid: i32| unsafe { libc::sched_getscheduler(tid) };
        let priority = Arc::new(WriterPriority::new());
        if !priority.idle_class {
            eprintln!("skipped: this process may not leave SCHED_IDLE (no CAP_SYS_NICE)");
            return;
        }
        let guard = thread::spawn({
            let priority = Arc::clone(&priority);
            move || priority.guard()
        });
        let (held_tx, held_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let writer = thread::spawn({
            let priority = Arc::clone(&priority);
            move || {
                priority.enter();
                let tid = sched::gettid();
                assert_eq!(policy(tid), libc::SCHED_IDLE);
                priority.busy();
                held_tx.send(tid).unwrap();
                release_rx.recv().unwrap();
                priority.idle();
                policy(tid)
            }
        });
        let tid = held_rx.recv().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while policy(tid) != libc::SCHED_OTHER {
            assert!(
                Instant::now() < deadline,
                "the held writer was never boosted"
            );
            thread::sleep(Duration::from_millis(10));
        }
        assert!(priority.boosted.load(Ordering::Relaxed));
        release_tx.send(()).unwrap();
        assert_eq!(
            writer.join().unwrap(),
            libc::SCHED_IDLE,
            "back to idle class"
        );
        priority.stopped.store(true, Ordering::Relaxed);
        guard.join().unwrap();
    }

    #[test]
    fn retired_versions_are_released_once_readers_are_done() {
        let store = SnapshotStore::open(None).unwrap();
        store.update_blocking(full(1, 10)).unwrap();
        let reader = store.load();
        let old = Arc::clone(reader.as_ref().unwrap());
        let weak = Arc::downgrade(&old);
        drop(old);
        store.update_blocking(delta(1, 11)).unwrap();
        // The reader still sees version 1, consistently.
        assert_eq!(reader.as_ref().unwrap().version(), 1);
        drop(reader);
        let deadline = Instant::now() + Duration::from_secs(5);
        while weak.upgrade().is_some() {
            assert!(Instant::now() < deadline, "retired version never released");
            thread::sleep(Duration::from_millis(10));
        }
    }
}
