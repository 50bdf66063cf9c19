//! Control-plane pipeline throughput on one core: accepted events, already durable in
//! the event log, through the whole decision pipeline — read from the log, apply,
//! decide, decision records into the hash-chained audit log, state persisted, cursor
//! advanced, committed (`synchronous = FULL`), delta handed to the publisher.
//!
//! Setup (not timed): a fresh data directory, a catalog of `--skus` SKUs (costs, stock,
//! competitor prices, a flash sale; see `edgeprice_bench::feedgen`) ingested and
//! processed, then `--events` stream events ingested through the real ingest writer.
//! Timed: the pipeline thread, pinned to `--cpu`, processing batches until the log is
//! drained; wall time and the thread's own CPU time are both reported. The publisher
//! counts and drops deltas (`--edge` publishes to an in-process edge instead, whose
//! writer thread then runs beside the pipeline). Afterwards the audit chain is verified.
//!
//! Run: `cargo bench -p edgeprice-bench --bench pipeline` (options after `--`, e.g.
//! `-- --skus 10000 --events 300000`). Acceptance (issue 3): ≥ 100,000 events/s.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use edgeprice_bench::feedgen::{FeedGen, FEEDS};
use edgeprice_control::audit;
use edgeprice_control::feeds::FeedKind;
use edgeprice_control::pipeline::{Pipeline, PipelineConfig};
use edgeprice_control::publish::{InProcessEdge, PublishError, Publisher};
use edgeprice_control::store::{Ingestor, Outcome, Submission};
use edgeprice_schemas::codec::{DeltaData, SnapshotData};

/// The same allocator as the `edgeprice` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    /// SKUs in the catalog.
    #[arg(long, default_value_t = 10_000)]
    skus: usize,
    /// Stream events processed in the timed part.
    #[arg(long, default_value_t = 300_000)]
    events: usize,
    /// The pipeline's batch size (default: the pipeline's default).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Core the pipeline thread is pinned to.
    #[arg(long, default_value_t = 1)]
    cpu: usize,
    /// Publish to an in-process edge (as `edgeprice up`) instead of dropping deltas.
    #[arg(long)]
    edge: bool,
    /// Data directory (default: a fresh one under the system temp dir, removed after).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Ignored: cargo bench passes it.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Takes every delta and counts the entries; keeps nothing.
#[derive(Debug, Default)]
struct CountingPublisher {
    deltas: AtomicU64,
    entries: AtomicU64,
}

impl Publisher for CountingPublisher {
    fn publish_snapshot(&self, snapshot: SnapshotData) -> Result<u64, PublishError> {
        Ok(snapshot.version)
    }
    fn publish_delta(&self, delta: DeltaData) -> Result<u64, PublishError> {
        self.deltas.fetch_add(1, Ordering::Relaxed);
        self.entries
            .fetch_add(delta.upserts.len() as u64, Ordering::Relaxed);
        Ok(delta.version)
    }
}

/// The publisher the bench runs with.
enum BenchPublisher {
    Counting(Arc<CountingPublisher>),
    Edge(InProcessEdge),
}

impl Publisher for BenchPublisher {
    fn publish_snapshot(&self, snapshot: SnapshotData) -> Result<u64, PublishError> {
        match self {
            BenchPublisher::Counting(p) => p.publish_snapshot(snapshot),
            BenchPublisher::Edge(p) => p.publish_snapshot(snapshot),
        }
    }
    fn publish_delta(&self, delta: DeltaData) -> Result<u64, PublishError> {
        match self {
            BenchPublisher::Counting(p) => p.publish_delta(delta),
            BenchPublisher::Edge(p) => p.publish_delta(delta),
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn thread_cpu_s() -> f64 {
    edgeprice_bench::cpu::thread_cpu_ns() as f64 / 1e9
}

/// This thread's time waiting on a run queue (runnable, not running), seconds.
fn run_queue_wait_s() -> f64 {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |ns| ns / 1e9)
}

fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays within it for cpu < 1024.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!("warning: could not pin to cpu {cpu}");
        }
    }
}

fn ingest(ingestor: &Ingestor, events: Vec<edgeprice_bench::feedgen::Event>) {
    for chunk in events.chunks(4_096) {
        let submissions = chunk
            .iter()
            .map(|e| Submission {
                feed: FEEDS[e.feed].parse::<FeedKind>().unwrap(),
                body: e.json.clone().into_bytes(),
            })
            .collect();
        for outcome in ingestor.ingest_blocking(submissions).unwrap() {
            assert!(
                matches!(outcome, Outcome::Accepted { .. }),
                "bench event not accepted: {outcome:?}"
            );
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (data_dir, remove_after) = match &args.data_dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("edgeprice-pipeline-bench-{}", std::process::id())),
            true,
        ),
    };
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut config = PipelineConfig::default();
    if let Some(batch_size) = args.batch_size {
        config.batch_size = batch_size;
    }
    let counting = Arc::new(CountingPublisher::default());
    let edge_store = match args.edge {
        true => Some(Arc::new(edgeprice_server::SnapshotStore::open(None)?)),
        false => None,
    };
    let publisher = match &edge_store {
        Some(store) => BenchPublisher::Edge(InProcessEdge(Arc::clone(store))),
        None => BenchPublisher::Counting(Arc::clone(&counting)),
    };
    let mut pipeline = Pipeline::open(&data_dir, config.clone(), publisher)?;
    let ingestor = Ingestor::start(&data_dir, |_| {})?;
    let mut feed = FeedGen::new(args.skus, &format!("bench-{}", now_ms()));

    let seeding = Instant::now();
    ingest(&ingestor, feed.seed(now_ms()));
    pipeline.process_all(now_ms())?;
    let seed_s = seeding.elapsed().as_secs_f64();

    let started_ingest = Instant::now();
    let now = now_ms();
    let stream: Vec<_> = (0..args.events).map(|_| feed.next(now)).collect();
    let mut per_feed = [0usize; 6];
    for e in &stream {
        per_feed[e.feed] += 1;
    }
    ingest(&ingestor, stream);
    let ingest_s = started_ingest.elapsed().as_secs_f64();
    drop(ingestor);

    pin_to(args.cpu);
    let (deltas_before, entries_before) = (
        counting.deltas.load(Ordering::Relaxed),
        counting.entries.load(Ordering::Relaxed),
    );
    let cpu_before = thread_cpu_s();
    let waited_before = run_queue_wait_s();
    let started = Instant::now();
    let mut batches = 0u64;
    let mut events = 0usize;
    let mut decisions = 0usize;
    let mut published = 0usize;
    loop {
        let report = pipeline.process_batch(now_ms())?;
        if report.events == 0 {
            break;
        }
        batches += 1;
        events += report.events;
        decisions += report.decisions;
        published += report.published;
    }
    // Every state written back, so the figure carries the whole cost of persistence.
    let checkpointing = Instant::now();
    let written_back = pipeline.checkpoint()?;
    let checkpoint_s = checkpointing.elapsed().as_secs_f64();
    let wall_s = started.elapsed().as_secs_f64();
    let cpu_s = thread_cpu_s() - cpu_before;
    let waited_s = run_queue_wait_s() - waited_before;
    assert_eq!(events, args.events, "every ingested event is processed");
    let chain = audit::verify(pipeline.connection())?;
    assert!(chain.is_intact(), "audit chain broken: {chain:?}");

    println!("pipeline throughput (control plane, one core)");
    println!(
        "  skus {}  stream events {}  batch size {}  publisher {}",
        feed.skus(),
        args.events,
        config.batch_size,
        if args.edge {
            "in-process edge"
        } else {
            "counting (deltas dropped)"
        }
    );
    println!(
        "  mix: {}",
        FEEDS
            .iter()
            .zip(per_feed)
            .filter(|(_, n)| *n > 0)
            .map(|(f, n)| format!("{f} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  setup: seed {seed_s:.1} s, ingest of the stream {ingest_s:.1} s ({:.0} ev/s, not timed below)", args.events as f64 / ingest_s);
    println!(
        "  batches {batches}  decisions recorded {decisions}  entries published {published}  audit records {}",
        chain.records
    );
    if !args.edge {
        println!(
            "  deltas {}  entries {}",
            counting.deltas.load(Ordering::Relaxed) - deltas_before,
            counting.entries.load(Ordering::Relaxed) - entries_before
        );
    }
    println!(
        "  final checkpoint: {written_back} states written back in {:.1} ms (timed)",
        checkpoint_s * 1e3
    );
    println!(
        "  wall {wall_s:.3} s = pipeline thread CPU {cpu_s:.3} s + waiting for a core {waited_s:.3} s + blocked (fsync, I/O) {:.3} s",
        (wall_s - cpu_s - waited_s).max(0.0)
    );
    println!(
        "  throughput: {:.0} events/s (wall), {:.0} events/s on a core of its own (wall minus run-queue wait), {:.0} events per CPU-second, {:.2} µs CPU per event",
        events as f64 / wall_s,
        events as f64 / (wall_s - waited_s),
        events as f64 / cpu_s,
        cpu_s * 1e6 / events as f64
    );
    drop(pipeline);
    drop(edge_store);
    if remove_after {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    Ok(())
}
