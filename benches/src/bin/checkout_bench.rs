//! Checkout benchmark: durable reservations on one hot SKU, and whole checkouts over
//! HTTP with a zero-latency simulated gateway.
//!
//! 1. Reservations: a control-plane data directory with one SKU counted at `--stock`
//!    units (through the inventory feed, as in production), the checkout ledger
//!    following it, and `--in-flight` concurrent callers reserving one unit each until
//!    `--stock + --overflow` attempts are made. Every granted reservation is durable
//!    (committed, fsynced) before its caller hears of it. Reports granted
//!    reservations per second, call latency, and checks zero oversell from the
//!    database afterwards: granted == stock, refusals == overflow, and the holds in
//!    the ledger sum to the stock.
//! 2. Checkouts: a running control plane (pipeline, ingestion, checkout, the HTTP
//!    listener) with the simulated gateway at zero latency and no rate limits;
//!    `--clients` keep-alive connections each run checkouts of signed quotes on the
//!    same hot SKU (`--checkouts` in all), every one with its own idempotency key and
//!    customer. Reports checkouts per second and latency percentiles.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use edgeprice_bench::latency::new_histogram;
use edgeprice_control::checkout::ledger::{self, Ledger, LedgerConfig, WantedLine};
use edgeprice_control::checkout::limits::LimitsConfig;
use edgeprice_control::checkout::payment::{SimulatedGateway, SimulatorConfig};
use edgeprice_control::checkout::{
    Checkout, CheckoutConfig, CheckoutDeps, CheckoutError, FnCoupons,
};
use edgeprice_control::feeds::FeedKind;
use edgeprice_control::http::{IngestHttpConfig, IngestServer};
use edgeprice_control::publish::InProcessEdge;
use edgeprice_control::runtime::{ControlPlane, RuntimeConfig};
use edgeprice_control::store::{Ingestor, Submission};
use edgeprice_pricing::promo::Totals;
use edgeprice_pricing::quote::{Keyring, Quote, QuoteLine};
use edgeprice_pricing::{Currency, Dimension, Sku};
use edgeprice_server::SnapshotStore;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

// The allocator of the `edgeprice` binary, so the figures are the product's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(about = "Checkout benchmark: durable reservations and HTTP checkouts")]
struct Args {
    /// Units on hand of the hot SKU in the reservation run.
    #[arg(long, default_value_t = 200_000)]
    stock: i64,
    /// Attempts beyond the stock (all must be refused).
    #[arg(long, default_value_t = 20_000)]
    overflow: i64,
    /// Concurrent reservation callers.
    #[arg(long, default_value_t = 1_024)]
    in_flight: usize,
    /// Checkouts in the HTTP run (0 skips it).
    #[arg(long, default_value_t = 5_000)]
    checkouts: usize,
    /// Keep-alive client connections in the HTTP run.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Where to put the data directories (a temporary directory by default).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let base = match &args.dir {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    println!("data under {}", base.path().display());
    reservations(&args, &base.path().join("reservations"))?;
    if args.checkouts > 0 {
        checkouts(&args, &base.path().join("checkouts"))?;
    }
    Ok(())
}

/// p50/p95/p99/p99.9/max of a nanosecond histogram, in milliseconds.
fn percentiles(histogram: &Histogram<u64>) -> String {
    let ms = |ns: u64| ns as f64 / 1e6;
    format!(
        "n {} p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        histogram.len(),
        ms(histogram.value_at_quantile(0.50)),
        ms(histogram.value_at_quantile(0.95)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.value_at_quantile(0.999)),
        ms(histogram.max())
    )
}

fn now_ms() -> i64 {
    edgeprice_control::checkout::now_ms()
}

/// Catalogs `sku` and counts `on_hand` units of it through the ingest writer.
fn seed(ingestor: &Ingestor, sku: &str, on_hand: i64) -> anyhow::Result<()> {
    let t = now_ms();
    let events = [
        (
            FeedKind::Catalog,
            format!(
                r#"{{"event_id":"bench-cat-{sku}","sku":"{sku}","category":"bench","currency":"EUR","list_price_minor":1000,"tax_rate_bp":2000,"occurred_at_ms":{t}}}"#
            ),
        ),
        (
            FeedKind::Cost,
            format!(
                r#"{{"event_id":"bench-cost-{sku}","sku":"{sku}","vendor":"v","currency":"EUR","cost_minor":400,"effective_at_ms":{t},"occurred_at_ms":{t}}}"#
            ),
        ),
        (
            FeedKind::Inventory,
            format!(
                r#"{{"event_id":"bench-inv-{sku}","sku":"{sku}","kind":"on_hand","quantity":{on_hand},"occurred_at_ms":{t}}}"#
            ),
        ),
    ];
    for (feed, body) in events {
        ingestor
            .ingest_blocking(vec![Submission {
                feed,
                body: body.into_bytes(),
            }])
            .context("seeding the feed")?;
    }
    Ok(())
}

fn reservations(args: &Args, dir: &std::path::Path) -> anyhow::Result<()> {
    const SKU: &str = "HOT-RES";
    let ingestor = Ingestor::start(dir, |_| {})?;
    seed(&ingestor, SKU, args.stock)?;
    let ledger = Ledger::start(LedgerConfig {
        data_dir: dir.to_owned(),
        feed_db: Some(dir.join(edgeprice_control::store::DB_FILE)),
        feed_poll: Duration::from_millis(100),
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let attempts = (args.stock + args.overflow) as usize;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let (granted, refused, other, histogram) = runtime.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..args.in_flight {
            let (ledger, next) = (ledger.clone(), Arc::clone(&next));
            tasks.push(tokio::spawn(async move {
                let mut histogram = new_histogram();
                let (mut granted, mut refused, mut other) = (0u64, 0u64, 0u64);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= attempts {
                        return (granted, refused, other, histogram);
                    }
                    let t = Instant::now();
                    let result = ledger
                        .reserve(
                            Some(format!("c{i}")),
                            vec![WantedLine {
                                sku: SKU.into(),
                                store: "*".into(),
                                quantity: 1,
                            }],
                            600_000,
                            "reservation",
                        )
                        .await;
                    let _ = histogram.record(t.elapsed().as_nanos() as u64);
                    match result {
                        Ok(_) => granted += 1,
                        Err(CheckoutError::InsufficientStock { .. }) => refused += 1,
                        Err(_) => other += 1,
                    }
                }
            }));
        }
        let mut total = (0, 0, 0, new_histogram());
        for task in tasks {
            let (g, r, o, h) = task.await.expect("task");
            total.0 += g;
            total.1 += r;
            total.2 += o;
            total.3.add(h).expect("same bounds");
        }
        total
    });
    let elapsed = started.elapsed();
    let stats = ledger.published(|p| p.counters.clone());
    drop(ledger);
    // Zero oversell, from the database: the open holds of the SKU sum to the stock.
    let conn = ledger::open(dir)?;
    let held: i64 = conn.query_row(
        "SELECT COUNT(*) FROM holds WHERE state = 'held' AND kind = 'reservation'",
        [],
        |row| row.get(0),
    )?;
    println!(
        "## reservations: one hot SKU, {} units, {attempts} attempts, {} in flight",
        args.stock, args.in_flight
    );
    println!("granted {granted}, refused (insufficient_stock) {refused}, other errors {other}");
    println!(
        "durable holds in the ledger afterwards: {held}; oversell counter: {}",
        stats.oversell
    );
    println!(
        "elapsed {:.2} s; granted reservations/s: {:.0}; attempts/s: {:.0}",
        elapsed.as_secs_f64(),
        granted as f64 / elapsed.as_secs_f64(),
        attempts as f64 / elapsed.as_secs_f64()
    );
    println!("reserve call latency: {}", percentiles(&histogram));
    anyhow::ensure!(
        granted as i64 == args.stock,
        "granted {granted} != stock {}",
        args.stock
    );
    anyhow::ensure!(held == args.stock, "held {held} != stock {}", args.stock);
    anyhow::ensure!(
        refused as i64 == args.overflow && other == 0,
        "refusals do not add up"
    );
    anyhow::ensure!(stats.oversell == 0, "oversell counter moved");
    Ok(())
}

fn quote_token(keyring: &Keyring, sku: &str, customer: &str) -> String {
    let now = now_ms();
    let quote = Quote {
        snapshot_version: 1,
        promotions_version: 1,
        policy_version: 1,
        currency: Currency::EUR,
        store: Dimension::any(),
        channel: Dimension::new("web").expect("valid"),
        segment: Dimension::any(),
        customer_id: Some(customer.to_owned()),
        issued_at_ms: now,
        expires_at_ms: now + 900_000,
        lines: vec![QuoteLine {
            sku: Sku::new(sku).expect("valid"),
            quantity: 1,
            unit_list_price_minor: 1000,
            unit_price_minor: 1000,
            discounts: Vec::new(),
            total_minor: 1000,
        }],
        totals: Totals {
            list_minor: 1000,
            subtotal_minor: 1000,
            merchandise_minor: 1000,
            total_minor: 1000,
            ..Totals::default()
        },
        shipping_promotion_id: None,
        coupons: Vec::new(),
    };
    keyring.sign(&quote)
}

fn checkouts(args: &Args, dir: &std::path::Path) -> anyhow::Result<()> {
    const SKU: &str = "HOT-CHK";
    let keyring = Keyring::new("edge", b"bench-secret-bench-secret-bench-secret")?;
    let edge = Arc::new(SnapshotStore::open(None)?);
    let control = ControlPlane::start(
        RuntimeConfig {
            data_dir: dir.to_owned(),
            ..RuntimeConfig::default()
        },
        InProcessEdge(edge),
    )?;
    seed(&control.ingestor(), SKU, args.checkouts as i64)?;
    let gateway =
        SimulatedGateway::open(Some(&dir.join("gateway.db")), SimulatorConfig::default())?;
    let checkout = Arc::new(Checkout::start(
        CheckoutConfig {
            data_dir: dir.to_owned(),
            limits: LimitsConfig::unlimited(),
            ..CheckoutConfig::default()
        },
        CheckoutDeps {
            keyring: keyring.clone(),
            gateway: Arc::new(gateway),
            coupons: Arc::new(FnCoupons(|_: &str| None)),
            ingestor: Some(control.ingestor()),
            feed_db: Some(dir.join(edgeprice_control::store::DB_FILE)),
            kafka: None,
            gate: None,
        },
    )?);
    let server = IngestServer::start_with_checkout(
        IngestHttpConfig {
            listen: "127.0.0.1:0".parse()?,
            ..IngestHttpConfig::default()
        },
        control.handle(Vec::new()),
        Some(Arc::clone(&checkout)),
    )?;
    let addr = server.local_addr();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(checkout.ledger().sync_feed())?;
    // Quotes are signed before the clock starts: signing is the edge's work.
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..args.checkouts)
            .map(|i| quote_token(&keyring, SKU, &format!("customer-{i}")))
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let (histogram, statuses) = runtime.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..args.clients {
            let (tokens, next) = (Arc::clone(&tokens), Arc::clone(&next));
            tasks.push(tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
                        .await
                        .expect("handshake");
                tokio::spawn(connection);
                let mut histogram = new_histogram();
                let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= tokens.len() {
                        return (histogram, statuses);
                    }
                    let body = format!(r#"{{"quote_token":"{}"}}"#, tokens[i]);
                    let request = Request::builder()
                        .method(Method::POST)
                        .uri("/v1/checkout")
                        .header("host", "bench")
                        .header("content-type", "application/json")
                        .header("idempotency-key", format!("bench-{i}"))
                        .body(Full::new(Bytes::from(body)))
                        .expect("request");
                    let t = Instant::now();
                    let response = sender.send_request(request).await.expect("response");
                    let status = response.status().as_u16();
                    let _ = response.into_body().collect().await;
                    let _ = histogram.record(t.elapsed().as_nanos() as u64);
                    *statuses.entry(status).or_default() += 1;
                }
            }));
        }
        let mut histogram = new_histogram();
        let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
        for task in tasks {
            let (h, s) = task.await.expect("client");
            histogram.add(h).expect("same bounds");
            for (status, n) in s {
                *statuses.entry(status).or_default() += n;
            }
        }
        (histogram, statuses)
    });
    let elapsed = started.elapsed();
    let stats = checkout.stats();
    println!(
        "## checkouts over HTTP: {} checkouts, {} keep-alive clients, zero-latency simulated gateway, no rate limits",
        args.checkouts, args.clients
    );
    println!(
        "statuses: {statuses:?}; orders {}; oversell {}",
        stats.orders, stats.oversell
    );
    println!(
        "elapsed {:.2} s; checkouts/s: {:.0}",
        elapsed.as_secs_f64(),
        args.checkouts as f64 / elapsed.as_secs_f64()
    );
    println!("checkout latency: {}", percentiles(&histogram));
    anyhow::ensure!(
        statuses.get(&201).copied() == Some(args.checkouts as u64),
        "not every checkout succeeded"
    );
    anyhow::ensure!(stats.oversell == 0, "oversell counter moved");
    drop(server);
    drop(checkout);
    drop(control);
    Ok(())
}
