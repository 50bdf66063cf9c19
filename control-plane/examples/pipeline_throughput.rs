//! Rough throughput of ingestion (group commit) and of the decision pipeline, embedded
//! mode with an in-process edge. Not the benchmark of record (that belongs in
//! `benches/`); a quick check while developing:
//!
//! Arguments: SKUs, events, pipeline batch size.
//!
//! ```text
//! CARGO_PROFILE_DEV_OPT_LEVEL=2 cargo run -p edgeprice-control --example pipeline_throughput -- 10000 100000 4096
//! ```

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use edgeprice_control::feeds::FeedKind;
use edgeprice_control::pipeline::{Pipeline, PipelineConfig};
use edgeprice_control::publish::InProcessEdge;
use edgeprice_control::store::{Ingestor, Outcome, Submission};
use edgeprice_server::SnapshotStore;

fn main() {
    let mut args = std::env::args().skip(1);
    let skus: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2_000);
    let events: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let batch_size: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4_096);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let dir = tempfile::tempdir().unwrap();
    let edge = Arc::new(SnapshotStore::open(None).unwrap());
    let ingestor = Ingestor::start(dir.path(), |_| {}).unwrap();
    let config = PipelineConfig {
        batch_size,
        ..PipelineConfig::default()
    };
    let mut pipeline = Pipeline::open(dir.path(), config, InProcessEdge(edge.clone())).unwrap();

    let mut setup = Vec::with_capacity(skus * 2);
    for i in 0..skus {
        setup.push(Submission {
            feed: FeedKind::Catalog,
            body: format!(r#"{{"event_id":"cat-{i}","sku":"SKU-{i}","category":"grocery","currency":"EUR","list_price_minor":{},"tax_rate_bp":2000,"logistics_minor":20,"occurred_at_ms":{now}}}"#, 500 + i % 5_000).into_bytes(),
        });
        setup.push(Submission {
            feed: FeedKind::Cost,
            body: format!(r#"{{"event_id":"cost-{i}","sku":"SKU-{i}","vendor":"v","currency":"EUR","cost_minor":{},"effective_at_ms":{now},"occurred_at_ms":{now}}}"#, 200 + i % 2_000).into_bytes(),
        });
    }
    ingestor.ingest_blocking(setup).unwrap();
    pipeline.process_all(now).unwrap();

    let submissions: Vec<Submission> = (0..events)
        .map(|n| {
            let sku = n * 7_919 % skus;
            match n % 4 {
                0 => Submission {
                    feed: FeedKind::Competitor,
                    body: format!(r#"{{"event_id":"c-{n}","sku":"SKU-{sku}","competitor":"r{}","currency":"EUR","price_minor":{},"occurred_at_ms":{now}}}"#, n % 3, 400 + n % 5_000).into_bytes(),
                },
                1 => Submission {
                    feed: FeedKind::Inventory,
                    body: format!(r#"{{"event_id":"i-{n}","sku":"SKU-{sku}","kind":"on_hand","quantity":{},"occurred_at_ms":{now}}}"#, n % 500).into_bytes(),
                },
                _ => Submission {
                    feed: FeedKind::Sales,
                    body: format!(r#"{{"event_id":"s-{n}","sku":"SKU-{sku}","kind":"pos_sale","quantity":1,"occurred_at_ms":{now}}}"#).into_bytes(),
                },
            }
        })
        .collect();
    let started = Instant::now();
    let mut accepted = 0;
    for chunk in submissions.chunks(1_000) {
        let outcomes = ingestor.ingest_blocking(chunk.to_vec()).unwrap();
        accepted += outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Accepted { .. }))
            .count();
    }
    let ingest = started.elapsed();
    let started = Instant::now();
    let report = pipeline.process_all(now).unwrap();
    let process = started.elapsed();
    println!(
        "ingest: {accepted} events in {:.2?} ({:.0} events/s, 1,000 per request)",
        ingest,
        accepted as f64 / ingest.as_secs_f64()
    );
    println!(
        "pipeline: {} events, {} decisions, {} entries published in {:.2?} ({:.0} events/s); edge at version {}",
        report.events,
        report.decisions,
        report.published,
        process,
        report.events as f64 / process.as_secs_f64(),
        edge.load().as_ref().map_or(0, |s| s.version())
    );
}
