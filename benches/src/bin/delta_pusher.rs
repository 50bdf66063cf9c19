//! Pushes snapshot deltas to an edge while it serves, and reports how long the edge
//! took to apply them.
//!
//! Every `--interval-ms` it sends a delta of `--entries` price changes for distinct
//! random keys of a snapshot made by `edgeprice snapshot generate` with the same
//! `--skus/--stores/--channels` (chain-wide keys and `store × channel` keys), encoded
//! with `edgeprice_schemas::codec::encode_delta` before the first push (so encoding does
//! not compete with a load generator on the same core), POSTed to
//! `/v1/admin/snapshot/delta`. The first base version comes from the
//! `edgeprice_snapshot_version` gauge in `/metrics`; a `409 version_conflict` carries the
//! current version, and the push is retried on it.
//!
//! Reports the edge's own `apply_us` (build and swap; the edge persists right after
//! answering), the round trip seen from here, and how many deltas were applied,
//! rejected or failed.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use edgeprice_bench::latency::{new_histogram, Summary};
use edgeprice_bench::target::HttpTarget;
use edgeprice_pricing::{Currency, Dimension, PriceEntry, PriceKey, Sku};
use edgeprice_schemas::codec::{encode_delta, DeltaData};
use edgeprice_server::synth::{channel_name, sku_name};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::time::{Instant, MissedTickBehavior};

const DELTA_PATH: &str = "/v1/admin/snapshot/delta";

#[derive(Debug, Parser)]
#[command(about = "Push snapshot deltas to an edge and report apply times")]
struct Args {
    /// Base URL of the edge, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    url: String,
    /// Admin bearer token.
    #[arg(long, env = "EDGEPRICE_ADMIN_TOKEN", hide_env_values = true)]
    token: String,
    /// Milliseconds between deltas.
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    /// Price changes per delta (distinct keys).
    #[arg(long, default_value_t = 10_000)]
    entries: usize,
    /// SKUs of the generated snapshot.
    #[arg(long, default_value_t = 125_000)]
    skus: usize,
    /// Stores of the generated snapshot.
    #[arg(long, default_value_t = 4)]
    stores: usize,
    /// Channels per store of the generated snapshot.
    #[arg(long, default_value_t = 2)]
    channels: usize,
    /// Seconds to push for.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Random seed for keys and prices.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Written once the deltas are prepared (encoded up front), so a harness can start
    /// its load only then.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// What one run measured.
#[derive(Debug, Serialize)]
struct Report {
    /// Deltas the edge applied.
    applied: u64,
    /// Pushes answered with `409` (then retried on the current version).
    conflicts: u64,
    /// Pushes that failed otherwise (status or connection).
    errors: u64,
    first_version: u64,
    last_version: u64,
    entries_per_delta: usize,
    delta_bytes: usize,
    /// Build and swap time reported by the edge.
    apply_us: Summary,
    /// Request to response, measured here.
    round_trip_us: Summary,
    /// Encoding time here, mostly before the pushes start (not the edge's cost).
    encode_us: Summary,
}

/// The edge's answer to an applied delta.
#[derive(Debug, Deserialize)]
struct Applied {
    version: u64,
    apply_us: u64,
}

/// The edge's error body; `current_version` is set on conflicts.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
    current_version: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.skus >= 1, "--skus must be at least 1");
    let keys_in_snapshot = args.skus * (1 + args.stores * args.channels);
    anyhow::ensure!(
        args.entries <= keys_in_snapshot / 2,
        "--entries {} is more than half of the {keys_in_snapshot} keys",
        args.entries
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building runtime")?;
    let report = runtime.block_on(run(&args))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_text(&report);
    }
    Ok(())
}

async fn run(args: &Args) -> anyhow::Result<Report> {
    let target = HttpTarget::parse(&args.url)?;
    let mut client = Client::new(target, args.token.clone());
    let mut version = current_version(&mut client).await?;
    let first_version = version;
    let mut keys = KeyPicker::new(args);
    let mut histograms = [(); 3].map(|()| new_histogram());
    let [apply, round_trip, encode] = &mut histograms;
    let (mut applied, mut conflicts, mut errors, mut delta_bytes) = (0u64, 0u64, 0u64, 0usize);
    // Encoding 10k entries takes tens of milliseconds; done up front, it does not
    // compete with a load generator sharing this core during the measurement. The
    // delta at index i has base version `first_version + i`.
    let planned = (args.duration * 1000.0 / args.interval_ms as f64).ceil() as usize + 1;
    let prepared: Vec<Bytes> = (0..planned as u64)
        .map(|i| {
            let encode_started = Instant::now();
            let body = Bytes::from(keys.delta(first_version + i));
            record(encode, encode_started.elapsed());
            body
        })
        .collect();
    if let Some(ready_file) = &args.ready_file {
        std::fs::write(ready_file, b"ready\n")
            .with_context(|| format!("writing {}", ready_file.display()))?;
    }
    let end = Instant::now() + Duration::from_secs_f64(args.duration);
    let mut ticks = tokio::time::interval(Duration::from_millis(args.interval_ms));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    while ticks.tick().await < end {
        // A conflict names the current version, so a retry normally succeeds; the
        // bound keeps a misbehaving edge from holding the loop.
        for _attempt in 0..3 {
            let prepared_body = version
                .checked_sub(first_version)
                .and_then(|i| prepared.get(usize::try_from(i).ok()?));
            let body = match prepared_body {
                Some(body) => body.clone(),
                // Someone else moved the version: encode for the one the edge has.
                None => {
                    let encode_started = Instant::now();
                    let body = Bytes::from(keys.delta(version));
                    record(encode, encode_started.elapsed());
                    body
                }
            };
            delta_bytes = body.len();
            let sent = Instant::now();
            let outcome = client.post_delta(body).await;
            record(round_trip, sent.elapsed());
            match outcome {
                Ok((StatusCode::OK, body)) => {
                    let answer: Applied = serde_json::from_slice(&body)
                        .with_context(|| format!("decoding {}", String::from_utf8_lossy(&body)))?;
                    version = answer.version;
                    applied += 1;
                    record(apply, Duration::from_micros(answer.apply_us));
                    break;
                }
                Ok((StatusCode::CONFLICT, body)) => {
                    conflicts += 1;
                    version = match serde_json::from_slice::<ErrorBody>(&body)
                        .ok()
                        .and_then(|e| e.error.current_version)
                    {
                        Some(current) => current,
                        None => current_version(&mut client).await?,
                    };
                }
                Ok((status, body)) => {
                    errors += 1;
                    warn_once(errors, &format!("{status}: {}", describe_error(&body)));
                    break;
                }
                Err(error) => {
                    errors += 1;
                    warn_once(errors, &format!("{error:#}"));
                    break;
                }
            }
        }
    }
    Ok(Report {
        applied,
        conflicts,
        errors,
        first_version,
        last_version: version,
        entries_per_delta: args.entries,
        delta_bytes,
        apply_us: Summary::of(apply),
        round_trip_us: Summary::of(round_trip),
        encode_us: Summary::of(encode),
    })
}

fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    histogram.saturating_record(elapsed.as_nanos() as u64);
}

/// Reports the first few failures on stderr; a broken edge would otherwise flood it.
fn warn_once(errors: u64, message: &str) {
    if errors <= 3 {
        eprintln!("delta push failed: {message}");
    }
}

fn describe_error(body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => format!("{}: {}", e.error.code, e.error.message),
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    }
}

/// Reads the `edgeprice_snapshot_version` gauge from `/metrics`.
async fn current_version(client: &mut Client) -> anyhow::Result<u64> {
    let (status, body) = client.get("/metrics").await?;
    anyhow::ensure!(status == StatusCode::OK, "GET /metrics answered {status}");
    let text = std::str::from_utf8(&body).context("/metrics is not UTF-8")?;
    parse_gauge(text, "edgeprice_snapshot_version")
        .context("no edgeprice_snapshot_version gauge in /metrics")
}

/// The value of an unlabelled (or labelled) Prometheus sample named `name`.
fn parse_gauge(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let rest = line.strip_prefix(name)?;
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once('}')?.1,
                None => rest,
            };
            let value: f64 = value.split_whitespace().next()?.parse().ok()?;
            Some(value as u64)
        })
}

/// Picks distinct keys of the generated snapshot and makes deltas of new prices.
struct KeyPicker {
    rng: SmallRng,
    skus: usize,
    /// `None` is the chain-wide key; `(store, channel)` the variants.
    variants: Vec<Option<(Dimension, Dimension)>>,
    entries: usize,
}

impl KeyPicker {
    fn new(args: &Args) -> KeyPicker {
        let mut variants = vec![None];
        for store in 1..=args.stores {
            for channel in 0..args.channels {
                variants.push(Some((
                    Dimension::new(&format!("store-{store}")).expect("valid store name"),
                    Dimension::new(&channel_name(channel)).expect("valid channel name"),
                )));
            }
        }
        KeyPicker {
            rng: SmallRng::seed_from_u64(args.seed),
            skus: args.skus,
            variants,
            entries: args.entries,
        }
    }

    /// An encoded delta from `base_version` to the next version.
    fn delta(&mut self, base_version: u64) -> Vec<u8> {
        let version = base_version + 1;
        let mut picked = HashSet::with_capacity(self.entries);
        let mut upserts = Vec::with_capacity(self.entries);
        while upserts.len() < self.entries {
            let sku = self.rng.gen_range(1..=self.skus);
            let variant = self.rng.gen_range(0..self.variants.len());
            if !picked.insert((sku, variant)) {
                continue;
            }
            let sku = Sku::new(&sku_name(sku)).expect("valid sku name");
            let key = match &self.variants[variant] {
                None => PriceKey::chain_wide(sku),
                Some((store, channel)) => PriceKey {
                    sku,
                    store: store.clone(),
                    channel: channel.clone(),
                    segment: Dimension::any(),
                },
            };
            let price_minor = self.rng.gen_range(99..=99_999);
            upserts.push(PriceEntry {
                key,
                currency: Currency::EUR,
                list_price_minor: price_minor + price_minor / 5,
                price_minor,
                floor_minor: price_minor * 7 / 10,
                promotion: None,
                valid_from_ms: None,
                valid_until_ms: None,
                revision: version,
            });
        }
        let created_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        encode_delta(&DeltaData {
            base_version,
            version,
            created_at_ms,
            promotions: None,
            upserts,
            removals: vec![],
        })
    }
}

/// A keep-alive HTTP/1.1 client for one edge that reconnects when the connection closes.
struct Client {
    target: HttpTarget,
    sender: Option<SendRequest<Full<Bytes>>>,
    token: String,
}

impl Client {
    fn new(target: HttpTarget, token: String) -> Client {
        Client {
            target,
            sender: None,
            token,
        }
    }

    async fn get(&mut self, path: &str) -> anyhow::Result<(StatusCode, Bytes)> {
        self.send(Method::GET, path, Bytes::new()).await
    }

    async fn post_delta(&mut self, body: Bytes) -> anyhow::Result<(StatusCode, Bytes)> {
        self.send(Method::POST, DELTA_PATH, body).await
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let mut builder = Request::builder()
            .method(&method)
            .uri(path)
            .header(HOST, &self.target.authority);
        if method == Method::POST {
            builder = builder
                .header(AUTHORIZATION, format!("Bearer {}", self.token))
                .header(CONTENT_TYPE, "application/x-flatbuffers");
        }
        let request = builder.body(Full::new(body)).context("building request")?;
        let sender = self.connected().await?;
        let response = sender.send_request(request).await;
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                self.sender = None;
                return Err(error).with_context(|| format!("{method} {path}"));
            }
        };
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .with_context(|| format!("reading the answer to {method} {path}"))?
            .to_bytes();
        Ok((status, body))
    }

    async fn connected(&mut self) -> anyhow::Result<&mut SendRequest<Full<Bytes>>> {
        if let Some(sender) = &mut self.sender {
            if sender.ready().await.is_ok() {
                return Ok(self.sender.as_mut().expect("checked above"));
            }
        }
        let stream = tokio::net::TcpStream::connect(self.target.addr)
            .await
            .with_context(|| format!("connecting to {}", self.target.addr))?;
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                eprintln!("edge connection ended: {error}");
            }
        });
        Ok(self.sender.insert(sender))
    }
}

fn print_text(report: &Report) {
    println!(
        "deltas of {} entries ({} bytes): {} applied, {} conflicts, {} errors; versions {} → {}",
        report.entries_per_delta,
        report.delta_bytes,
        report.applied,
        report.conflicts,
        report.errors,
        report.first_version,
        report.last_version
    );
    for (name, s) in [
        ("apply (edge)", &report.apply_us),
        ("round trip", &report.round_trip_us),
        ("encode (here)", &report.encode_us),
    ] {
        println!(
            "  {name:<15} µs: p50 {} p99 {} max {}",
            s.p50_us, s.p99_us, s.max_us
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_version_gauge() {
        let text = "# HELP edgeprice_snapshot_version v\n# TYPE edgeprice_snapshot_version gauge\nedgeprice_snapshot_version_other 9\nedgeprice_snapshot_version 42\n";
        assert_eq!(parse_gauge(text, "edgeprice_snapshot_version"), Some(42));
        assert_eq!(parse_gauge("x{a=\"b\"} 7\n", "x"), Some(7));
        assert_eq!(parse_gauge("y 1\n", "x"), None);
    }

    #[test]
    fn deltas_decode_with_distinct_valid_entries_on_the_next_version() {
        let args = Args::parse_from([
            "delta_pusher",
            "--url=http://127.0.0.1:1",
            "--token=t",
            "--entries=500",
            "--skus=100",
            "--stores=2",
            "--channels=3",
        ]);
        let mut picker = KeyPicker::new(&args);
        let delta = edgeprice_schemas::codec::decode_delta(&picker.delta(41)).unwrap();
        assert_eq!((delta.base_version, delta.version), (41, 42));
        assert_eq!(delta.upserts.len(), 500);
        let keys: HashSet<_> = delta.upserts.iter().map(|e| e.key.clone()).collect();
        assert_eq!(keys.len(), 500, "keys are distinct");
        for entry in &delta.upserts {
            entry.validate().unwrap();
            assert!(matches!(
                entry.key.channel.as_str(),
                "*" | "web" | "app" | "pos"
            ));
        }
    }
}
