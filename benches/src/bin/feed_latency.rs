//! Event-to-edge-visible latency of the control plane in embedded mode (what `edgeprice
//! up` runs): feeds over HTTP (`POST /v1/feeds/{feed}`, NDJSON batches, as producers
//! send them) → durable in the event log (202) → decision pipeline → delta → the
//! in-process edge (persisted to its data directory) → visible in the edge's snapshot.
//!
//! Load: `--rate` events per second (default 20,000), sent every `--tick-ms` as NDJSON
//! batches, one POST per feed present in the tick (mostly `sales`; see
//! `edgeprice_bench::feedgen`) over keep-alive connections, open loop: ticks follow a
//! fixed schedule whatever the answers do. Each tick also carries one probe: a catalog
//! event that changes the list price of one of `--probe-skus` probe SKUs, which the
//! pipeline always publishes. A watcher thread polls the edge's snapshot (every
//! `--poll-us`) and records, per probe, the time from the tick's *scheduled* send time
//! to the moment the edge serves the new list price — so an ingest or pipeline stall
//! is charged to every probe that queued behind it.
//!
//! Run: `cargo run --release -p edgeprice-bench --bin feed_latency` (release build of
//! the whole chain; options after `--`). Acceptance (issue 3): p99 ≤ 50 ms at 20,000
//! events/s.
//!
//! Several runs in a row: give each its own `--data-dir` (kept) and delete them all
//! afterwards. On a filesystem mounted with online `discard` (this VM's ext4 is),
//! deleting the previous run's few hundred megabytes issues TRIMs that every fsync
//! queues behind for seconds: runs right after a cleanup showed 400–800 ms commit
//! stalls (and p99s of 200–700 ms) that runs into kept directories never did.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use edgeprice_bench::feedgen::{FeedGen, FEEDS};
use edgeprice_bench::latency::{new_histogram, Summary};
use edgeprice_control::feeds::FeedKind;
use edgeprice_control::http::{FeedSource, IngestHttpConfig, IngestServer};
use edgeprice_control::publish::InProcessEdge;
use edgeprice_control::runtime::{ControlPlane, RuntimeConfig};
use edgeprice_control::store::{Outcome, Submission};
use edgeprice_server::SnapshotStore;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The same allocator as the `edgeprice` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FEED_TOKEN: &str = "bench-feed-token-0123456789";

#[derive(Debug, Parser)]
#[command(about = "Event-to-edge-visible latency over HTTP feed ingestion, embedded mode")]
struct Args {
    /// Events per second sent.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Interval between two sends, milliseconds.
    #[arg(long, default_value_t = 10)]
    tick_ms: u64,
    /// Measured seconds.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Seconds at the same rate before measuring (not recorded).
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// SKUs in the catalog.
    #[arg(long, default_value_t = 10_000)]
    skus: usize,
    /// Probe SKUs (one probe per tick, round robin).
    #[arg(long, default_value_t = 1_000)]
    probe_skus: usize,
    /// How often the watcher looks at the edge's snapshot, microseconds.
    #[arg(long, default_value_t = 200)]
    poll_us: u64,
    /// Data directory (default: a fresh one under the system temp dir, removed after).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Run the edge without a data directory (no delta log, no compactions): shows
    /// what the edge's persistence costs.
    #[arg(long)]
    edge_in_memory: bool,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn probe_sku(i: usize) -> String {
    format!("PROBE-{i:05}")
}

/// A probe in flight: the list price the edge should show, and when its tick was due.
struct Probe {
    sku: String,
    list_price_minor: i64,
    scheduled: Instant,
    /// Sent after the warm-up.
    recorded: bool,
    measured: bool,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    events: AtomicU64,
    non_202: AtomicU64,
    errors: AtomicU64,
}

/// One POST on a keep-alive connection; returns the status.
async fn post(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    path: &str,
    body: &[u8],
) -> anyhow::Result<u16> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {FEED_TOKEN}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    buf.clear();
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut response = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head_len) = response.parse(buf)? {
            let status = response.code.unwrap_or(0);
            let length: usize = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                .context("response without content-length")?;
            while buf.len() < head_len + length {
                if stream.read_buf(buf).await? == 0 {
                    bail!("connection closed mid-response");
                }
            }
            return Ok(status);
        }
        if stream.read_buf(buf).await? == 0 {
            bail!("connection closed");
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (data_dir, remove_after) = match &args.data_dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("edgeprice-feed-latency-{}", std::process::id())),
            true,
        ),
    };
    let _ = std::fs::remove_dir_all(&data_dir);

    // Embedded mode, as `edgeprice up` wires it.
    let edge = Arc::new(SnapshotStore::open(
        (!args.edge_in_memory).then(|| data_dir.join("edge")),
    )?);
    let control = ControlPlane::start(
        RuntimeConfig {
            data_dir: data_dir.join("control"),
            ..RuntimeConfig::default()
        },
        InProcessEdge(Arc::clone(&edge)),
    )?;
    let ingest = IngestServer::start(
        IngestHttpConfig {
            listen: "127.0.0.1:0".parse()?,
            sources: vec![FeedSource {
                name: "bench".into(),
                token: FEED_TOKEN.into(),
                ..FeedSource::default()
            }],
            ..IngestHttpConfig::default()
        },
        control.handle(Vec::new()),
    )?;
    let addr = ingest.local_addr();

    // Seed (not measured): the catalog, and the probe SKUs at their first list price.
    let run = format!("lat-{}", now_ms());
    let mut feed = FeedGen::new(args.skus, &run);
    let seeding = Instant::now();
    let mut seed: Vec<Submission> = feed
        .seed(now_ms())
        .into_iter()
        .map(|e| Submission {
            feed: FEEDS[e.feed].parse::<FeedKind>().unwrap(),
            body: e.json.into_bytes(),
        })
        .collect();
    let t0 = now_ms();
    let mut probe_list: Vec<i64> = (0..args.probe_skus).map(|i| 1_000 + i as i64).collect();
    for (i, list) in probe_list.iter().enumerate() {
        seed.push(Submission {
            feed: FeedKind::Catalog,
            body: probe_event(&format!("{run}-probe-seed-{i}"), &probe_sku(i), *list, t0)
                .into_bytes(),
        });
    }
    for chunk in seed.chunks(4_096) {
        for outcome in control.ingestor().ingest_blocking(chunk.to_vec())? {
            anyhow::ensure!(
                matches!(outcome, Outcome::Accepted { .. }),
                "seed event refused: {outcome:?}"
            );
        }
    }
    control.flush()?;
    anyhow::ensure!(
        edge.load()
            .as_ref()
            .is_some_and(|s| s.sku(&probe_sku(0)).is_some()),
        "edge has no probe SKU after the seed"
    );
    let seed_s = seeding.elapsed().as_secs_f64();

    // The watcher: polls the edge's snapshot and times probes.
    let probes: Arc<Mutex<Vec<Probe>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher_jh = {
        let (edge, probes, stop) = (Arc::clone(&edge), Arc::clone(&probes), Arc::clone(&stop));
        let poll = Duration::from_micros(args.poll_us);
        std::thread::Builder::new()
            .name("probe-watcher".into())
            .spawn(move || {
                let mut histogram = new_histogram();
                let mut versions = 0u64;
                let mut last_version = 0;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(poll);
                    let guard = edge.load();
                    let Some(snapshot) = guard.as_ref() else {
                        continue;
                    };
                    if snapshot.version() == last_version {
                        continue;
                    }
                    last_version = snapshot.version();
                    versions += 1;
                    let seen_at = Instant::now();
                    let mut probes = probes.lock().unwrap();
                    for probe in probes.iter_mut() {
                        let visible = snapshot.sku(&probe.sku).is_some_and(|prices| {
                            prices
                                .variants
                                .iter()
                                .any(|v| v.entry.list_price_minor == probe.list_price_minor)
                        });
                        if visible {
                            if probe.recorded {
                                let _ =
                                    histogram
                                        .record(seen_at.duration_since(probe.scheduled).as_nanos()
                                            as u64);
                            }
                            probe.measured = true;
                        }
                    }
                    probes.retain(|p| !p.measured);
                }
                (histogram, versions)
            })?
    };

    // The producers: one current-thread runtime, open loop.
    let counters = Arc::new(Counters::default());
    let ack: Arc<Mutex<Histogram<u64>>> = Arc::new(Mutex::new(new_histogram()));
    let per_tick = (args.rate * args.tick_ms / 1_000).max(1) as usize;
    let ticks_warmup = args.warmup * 1_000 / args.tick_ms;
    let ticks_total = ticks_warmup + args.duration * 1_000 / args.tick_ms;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let sent_probes = runtime.block_on({
        let (probes, counters, ack) =
            (Arc::clone(&probes), Arc::clone(&counters), Arc::clone(&ack));
        async move {
            let pool: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
            let mut interval = tokio::time::interval(Duration::from_millis(args.tick_ms));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut in_flight = tokio::task::JoinSet::new();
            let mut sent_probes = 0u64;
            for tick in 0..ticks_total {
                let scheduled = interval.tick().await.into_std();
                let now = now_ms();
                let mut bodies: HashMap<usize, (Vec<u8>, u64)> = HashMap::new();
                for _ in 0..per_tick.saturating_sub(1) {
                    let event = feed.next(now);
                    let (body, n) = bodies.entry(event.feed).or_default();
                    body.extend_from_slice(event.json.as_bytes());
                    body.push(b'\n');
                    *n += 1;
                }
                // The probe: flip one probe SKU's list price.
                let i = (tick as usize) % args.probe_skus;
                probe_list[i] += if probe_list[i] % 2 == 0 { 1 } else { -1 };
                let sku = probe_sku(i);
                let (body, n) = bodies.entry(0).or_default();
                body.extend_from_slice(
                    probe_event(&format!("{run}-probe-{tick}"), &sku, probe_list[i], now)
                        .as_bytes(),
                );
                body.push(b'\n');
                *n += 1;
                {
                    let mut probes = probes.lock().unwrap();
                    // A probe SKU probed again before its last probe showed: the old one
                    // can no longer be told apart; the newer one stands for both.
                    probes.retain(|p| p.sku != sku);
                    probes.push(Probe {
                        sku,
                        list_price_minor: probe_list[i],
                        scheduled,
                        recorded: tick >= ticks_warmup,
                        measured: false,
                    });
                }
                sent_probes += u64::from(tick >= ticks_warmup);
                for (feed_index, (body, n)) in bodies {
                    let (pool, counters, ack) =
                        (Arc::clone(&pool), Arc::clone(&counters), Arc::clone(&ack));
                    let record = tick >= ticks_warmup;
                    in_flight.spawn(async move {
                        let taken = pool.lock().unwrap().pop();
                        let mut stream = match taken {
                            Some(stream) => stream,
                            None => match TcpStream::connect(addr).await {
                                Ok(s) => {
                                    let _ = s.set_nodelay(true);
                                    s
                                }
                                Err(_) => {
                                    counters.errors.fetch_add(1, Ordering::Relaxed);
                                    return;
                                }
                            },
                        };
                        let mut buf = Vec::with_capacity(1024);
                        let path = format!("/v1/feeds/{}", FEEDS[feed_index]);
                        match post(&mut stream, &mut buf, &path, &body).await {
                            Ok(status) => {
                                if record {
                                    counters.requests.fetch_add(1, Ordering::Relaxed);
                                    counters.events.fetch_add(n, Ordering::Relaxed);
                                    let _ = ack
                                        .lock()
                                        .unwrap()
                                        .record(scheduled.elapsed().as_nanos() as u64);
                                    if status != 202 {
                                        counters.non_202.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                                pool.lock().unwrap().push(stream);
                            }
                            Err(_) => {
                                counters.errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                }
                while in_flight.try_join_next().is_some() {}
            }
            while in_flight.join_next().await.is_some() {}
            sent_probes
        }
    });
    let sent_s = args.duration as f64;
    // Give the last probes time to show, then stop the watcher.
    let grace = Instant::now();
    while grace.elapsed() < Duration::from_secs(5) && !probes.lock().unwrap().is_empty() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let unseen = probes.lock().unwrap().len();
    stop.store(true, Ordering::Relaxed);
    let (histogram, versions) = watcher_jh.join().expect("watcher");
    let visible = Summary::of(&histogram);
    let ack = Summary::of(&ack.lock().unwrap());

    println!("event-to-edge-visible latency (embedded mode, HTTP feed ingestion)");
    println!(
        "  catalog {} SKUs + {} probe SKUs; seeded in {seed_s:.1} s",
        args.skus, args.probe_skus
    );
    println!(
        "  offered {} events/s in NDJSON batches every {} ms ({} events per tick, one POST per feed); warm-up {} s, measured {} s",
        args.rate, args.tick_ms, per_tick, args.warmup, args.duration
    );
    println!(
        "  achieved {:.0} events/s acknowledged; requests {}  non-202 {}  errors {}",
        counters.events.load(Ordering::Relaxed) as f64 / sent_s,
        counters.requests.load(Ordering::Relaxed),
        counters.non_202.load(Ordering::Relaxed),
        counters.errors.load(Ordering::Relaxed)
    );
    println!("  edge versions seen by the watcher: {versions}");
    println!(
        "  202 ack latency from scheduled send, ms: p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
        ack.p50_us / 1e3,
        ack.p90_us / 1e3,
        ack.p99_us / 1e3,
        ack.max_us / 1e3
    );
    println!(
        "  event-to-edge-visible, ms ({} of {sent_probes} probes; {unseen} not visible after 5 s): p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
        visible.count, visible.p50_us / 1e3, visible.p90_us / 1e3, visible.p99_us / 1e3, visible.p999_us / 1e3, visible.max_us / 1e3
    );
    let metrics = control
        .handle(Vec::new())
        .board()
        .pipeline_metrics(now_ms());
    println!("  stages over the last minute, ms (p99 / max):");
    for (stage, p99) in &metrics.stage_p99_us {
        let max = metrics.stage_max_us.get(stage).copied().unwrap_or(0);
        println!(
            "    {stage:<18} {:>6.1} / {:>6.1}",
            *p99 as f64 / 1e3,
            max as f64 / 1e3
        );
    }
    drop(ingest);
    drop(control);
    drop(edge);
    if remove_after {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    Ok(())
}

fn probe_event(event_id: &str, sku: &str, list_price_minor: i64, now_ms: i64) -> String {
    format!(
        r#"{{"event_id":"{event_id}","sku":"{sku}","category":"probe","currency":"EUR","list_price_minor":{list_price_minor},"tax_rate_bp":2000,"occurred_at_ms":{now_ms}}}"#
    )
}
