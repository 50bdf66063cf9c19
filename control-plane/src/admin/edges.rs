//! Edge figures for the admin API: each edge's Prometheus `/metrics` is read over HTTP
//! (the in-process edge of `edgeprice up` too, so embedded and remote edges are
//! measured the same way), and request rate and latency percentiles are computed from
//! the difference between two readings.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use edgeprice_schemas::admin::EdgeMetrics;
use http_body_util::{BodyExt, Empty};
use hyper::header::HOST;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long one reading may take.
const READ_TIMEOUT: Duration = Duration::from_millis(500);

/// One parsed `/metrics` page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    /// Requests answered, all routes and statuses.
    pub requests: u64,
    /// Latency histogram over all routes: upper bound (seconds) → cumulative count.
    pub buckets: Vec<(f64, u64)>,
    pub snapshot_version: u64,
    pub snapshot_age_s: f64,
}

/// Parses the edge's Prometheus text.
pub fn parse(text: &str) -> Scrape {
    let mut scrape = Scrape::default();
    let mut buckets: BTreeMap<u64, (f64, u64)> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name_labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let name = name_labels.split('{').next().unwrap_or("");
        match name {
            "edgeprice_http_requests_total" => scrape.requests += value as u64,
            "edgeprice_http_request_duration_seconds_bucket" => {
                let le = name_labels
                    .split("le=\"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .map(|le| {
                        if le == "+Inf" {
                            f64::INFINITY
                        } else {
                            le.parse().unwrap_or(f64::INFINITY)
                        }
                    })
                    .unwrap_or(f64::INFINITY);
                let slot = buckets.entry(le.to_bits()).or_insert((le, 0));
                slot.1 += value as u64;
            }
            "edgeprice_snapshot_version" => scrape.snapshot_version = value as u64,
            "edgeprice_snapshot_age_seconds" => scrape.snapshot_age_s = value,
            _ => {}
        }
    }
    let mut buckets: Vec<(f64, u64)> = buckets.into_values().collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    scrape.buckets = buckets;
    scrape
}

/// The `q` quantile (0..1) of a cumulative histogram, as the bucket's upper bound in
/// microseconds (the largest finite bound for the overflow bucket).
pub fn quantile_us(buckets: &[(f64, u64)], q: f64) -> u64 {
    let Some(total) = buckets.last().map(|b| b.1) else {
        return 0;
    };
    if total == 0 {
        return 0;
    }
    let rank = (total as f64 * q).ceil() as u64;
    let largest_finite = buckets
        .iter()
        .rev()
        .find(|b| b.0.is_finite())
        .map_or(0.0, |b| b.0);
    let bound = buckets
        .iter()
        .find(|b| b.1 >= rank)
        .map_or(largest_finite, |b| {
            if b.0.is_finite() {
                b.0
            } else {
                largest_finite
            }
        });
    (bound * 1e6).round() as u64
}

fn difference(now: &Scrape, before: &Scrape) -> Vec<(f64, u64)> {
    now.buckets
        .iter()
        .map(|(le, count)| {
            let earlier = before
                .buckets
                .iter()
                .find(|b| b.0 == *le)
                .map_or(0, |b| b.1);
            (*le, count.saturating_sub(earlier))
        })
        .collect()
}

/// Reads the edges' metrics and remembers the last reading of each.
#[derive(Debug)]
pub struct EdgeProbe {
    edges: Vec<SocketAddr>,
    last: Mutex<HashMap<SocketAddr, (Instant, Scrape)>>,
}

impl EdgeProbe {
    /// A probe of the edges serving at `edges`.
    pub fn new(edges: Vec<SocketAddr>) -> EdgeProbe {
        EdgeProbe {
            edges,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// How many edges it reads.
    pub fn len(&self) -> usize {
        self.edges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.edges.is_empty()
    }

    /// Reads every edge.
    pub async fn read(&self) -> Vec<EdgeMetrics> {
        // Few edges: one after the other, each within the timeout, is quick enough for
        // an admin page.
        let mut readings = Vec::with_capacity(self.edges.len());
        for edge in &self.edges {
            readings.push(fetch(*edge).await);
        }
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        self.edges
            .iter()
            .zip(readings)
            .map(|(edge, reading)| {
                let name = format!("http://{edge}");
                let Some(scrape) = reading else {
                    return EdgeMetrics {
                        name,
                        reachable: false,
                        ..EdgeMetrics::default()
                    };
                };
                let (rate, window) = match last.get(edge) {
                    Some((at, before)) if now.duration_since(*at) >= Duration::from_millis(100) => {
                        let seconds = now.duration_since(*at).as_secs_f64();
                        (
                            scrape.requests.saturating_sub(before.requests) as f64 / seconds,
                            difference(&scrape, before),
                        )
                    }
                    _ => (0.0, scrape.buckets.clone()),
                };
                let metrics = EdgeMetrics {
                    name,
                    reachable: true,
                    requests_total: scrape.requests,
                    requests_per_s: rate,
                    p50_us: quantile_us(&window, 0.50),
                    p99_us: quantile_us(&window, 0.99),
                    snapshot_version: scrape.snapshot_version,
                    snapshot_age_ms: (scrape.snapshot_age_s * 1e3) as i64,
                };
                last.insert(*edge, (now, scrape));
                metrics
            })
            .collect()
    }
}

async fn fetch(edge: SocketAddr) -> Option<Scrape> {
    let exchange = async {
        let stream = TcpStream::connect(edge).await.ok()?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(connection);
        let request = Request::get("/metrics")
            .header(HOST, edge.to_string())
            .body(Empty::<Bytes>::new())
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some(parse(&String::from_utf8_lossy(&body)))
    };
    tokio::time::timeout(READ_TIMEOUT, exchange)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# HELP edgeprice_http_requests_total HTTP requests answered, by route and status.
# TYPE edgeprice_http_requests_total counter
edgeprice_http_requests_total{route="price",status="200"} 90
edgeprice_http_requests_total{route="price",status="404"} 10
edgeprice_http_request_duration_seconds_bucket{route="price",le="0.00001"} 50
edgeprice_http_request_duration_seconds_bucket{route="price",le="0.000025"} 95
edgeprice_http_request_duration_seconds_bucket{route="price",le="+Inf"} 100
edgeprice_http_request_duration_seconds_bucket{route="quote",le="0.00001"} 0
edgeprice_http_request_duration_seconds_bucket{route="quote",le="0.000025"} 0
edgeprice_http_request_duration_seconds_bucket{route="quote",le="+Inf"} 0
edgeprice_snapshot_version 42
edgeprice_snapshot_age_seconds 1.5
"#;

    #[test]
    fn pages_parse_into_totals_and_one_histogram() {
        let scrape = parse(PAGE);
        assert_eq!(scrape.requests, 100);
        assert_eq!(scrape.snapshot_version, 42);
        assert_eq!(scrape.snapshot_age_s, 1.5);
        assert_eq!(scrape.buckets.len(), 3);
        assert_eq!(quantile_us(&scrape.buckets, 0.5), 10);
        assert_eq!(quantile_us(&scrape.buckets, 0.95), 25);
        assert_eq!(
            quantile_us(&scrape.buckets, 0.99),
            25,
            "overflow reports the largest bound"
        );
        assert_eq!(quantile_us(&[], 0.99), 0);
    }

    #[test]
    fn rates_come_from_the_difference_of_two_readings() {
        let before = parse(PAGE);
        let mut now = before.clone();
        now.buckets = vec![(0.00001, 50), (0.000025, 195), (f64::INFINITY, 200)];
        let window = difference(&now, &before);
        assert_eq!(
            window,
            vec![(0.00001, 0), (0.000025, 100), (f64::INFINITY, 100)]
        );
        assert_eq!(quantile_us(&window, 0.5), 25);
    }
}
