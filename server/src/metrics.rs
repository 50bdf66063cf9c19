//! Request metrics without contention, rendered as Prometheus text.
//!
//! Each serving thread owns one cache-padded slot of relaxed atomic counters (a request
//! costs a few uncontended increments); `/metrics` sums the slots. Threads that are not
//! registered workers (tests, admin helpers) share the last slot.

use std::cell::Cell;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_utils::CachePadded;

/// Routes, as they appear in the `route` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Route {
    Price = 0,
    PriceBatch,
    Health,
    Ready,
    Metrics,
    Admin,
    Quote,
    Other,
}

const ROUTES: [(Route, &str); 8] = [
    (Route::Price, "price"),
    (Route::PriceBatch, "price_batch"),
    (Route::Health, "healthz"),
    (Route::Ready, "readyz"),
    (Route::Metrics, "metrics"),
    (Route::Admin, "admin"),
    (Route::Quote, "quote"),
    (Route::Other, "other"),
];

/// Status codes counted individually; anything else is counted as `other`.
const STATUSES: [u16; 12] = [200, 304, 400, 401, 403, 404, 405, 409, 413, 422, 500, 503];
const STATUS_SLOTS: usize = STATUSES.len() + 1;

/// Upper bounds of the latency buckets, in microseconds.
const BUCKETS_US: [u64; 14] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 1_000_000,
];
const BUCKET_SLOTS: usize = BUCKETS_US.len() + 1;

#[derive(Default)]
struct RouteSlot {
    by_status: [AtomicU64; STATUS_SLOTS],
    buckets: [AtomicU64; BUCKET_SLOTS],
    sum_ns: AtomicU64,
}

#[derive(Default)]
struct WorkerSlot {
    routes: [RouteSlot; ROUTES.len()],
}

/// Request counters and latency histograms for the whole process.
pub struct Metrics {
    slots: Box<[CachePadded<WorkerSlot>]>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("slots", &self.slots.len())
            .finish()
    }
}

thread_local! {
    static WORKER_SLOT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Marks the calling thread as serving worker `index`.
pub fn register_worker(index: usize) {
    WORKER_SLOT.with(|slot| slot.set(Some(index)));
}

impl Metrics {
    /// Room for `workers` serving threads plus the shared slot.
    pub fn new(workers: usize) -> Metrics {
        Metrics {
            slots: (0..workers + 1)
                .map(|_| CachePadded::new(WorkerSlot::default()))
                .collect(),
        }
    }

    #[inline]
    fn slot(&self) -> &WorkerSlot {
        let shared = self.slots.len() - 1;
        let index = WORKER_SLOT
            .with(|slot| slot.get())
            .filter(|&i| i < shared)
            .unwrap_or(shared);
        &self.slots[index]
    }

    /// Counts one request.
    #[inline]
    pub fn record(&self, route: Route, status: u16, elapsed: Duration) {
        let slot = &self.slot().routes[route as usize];
        let status_index = STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(STATUSES.len());
        slot.by_status[status_index].fetch_add(1, Ordering::Relaxed);
        let micros = elapsed.as_micros() as u64;
        let bucket = BUCKETS_US
            .iter()
            .position(|&b| micros <= b)
            .unwrap_or(BUCKETS_US.len());
        slot.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        slot.sum_ns
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }

    fn sum(&self, f: impl Fn(&WorkerSlot) -> u64) -> u64 {
        self.slots.iter().map(|s| f(s)).sum()
    }

    /// Requests answered so far, all routes.
    pub fn total_requests(&self) -> u64 {
        self.sum(|w| {
            w.routes
                .iter()
                .flat_map(|r| r.by_status.iter())
                .map(|c| c.load(Ordering::Relaxed))
                .sum()
        })
    }

    /// Appends the request metrics in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        out.push_str(
            "# HELP edgeprice_http_requests_total HTTP requests answered, by route and status.\n",
        );
        out.push_str("# TYPE edgeprice_http_requests_total counter\n");
        for (route, name) in ROUTES {
            for status_index in 0..STATUS_SLOTS {
                let count = self.sum(|w| {
                    w.routes[route as usize].by_status[status_index].load(Ordering::Relaxed)
                });
                if count == 0 {
                    continue;
                }
                let status = STATUSES
                    .get(status_index)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "other".into());
                let _ = writeln!(
                    out,
                    "edgeprice_http_requests_total{{route=\"{name}\",status=\"{status}\"}} {count}"
                );
            }
        }
        out.push_str("# HELP edgeprice_http_request_duration_seconds Time from request parsed to response ready.\n");
        out.push_str("# TYPE edgeprice_http_request_duration_seconds histogram\n");
        for (route, name) in ROUTES {
            let counts: Vec<u64> = (0..BUCKET_SLOTS)
                .map(|b| self.sum(|w| w.routes[route as usize].buckets[b].load(Ordering::Relaxed)))
                .collect();
            let total: u64 = counts.iter().sum();
            if total == 0 {
                continue;
            }
            let mut cumulative = 0;
            for (bound, count) in BUCKETS_US.iter().zip(&counts) {
                cumulative += count;
                let _ = writeln!(
                    out,
                    "edgeprice_http_request_duration_seconds_bucket{{route=\"{name}\",le=\"{}\"}} {cumulative}",
                    *bound as f64 / 1e6
                );
            }
            let _ = writeln!(out, "edgeprice_http_request_duration_seconds_bucket{{route=\"{name}\",le=\"+Inf\"}} {total}");
            let sum_ns = self.sum(|w| w.routes[route as usize].sum_ns.load(Ordering::Relaxed));
            let _ = writeln!(
                out,
                "edgeprice_http_request_duration_seconds_sum{{route=\"{name}\"}} {}",
                sum_ns as f64 / 1e9
            );
            let _ = writeln!(
                out,
                "edgeprice_http_request_duration_seconds_count{{route=\"{name}\"}} {total}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_buckets_add_up_across_threads() {
        let metrics = std::sync::Arc::new(Metrics::new(2));
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let m = std::sync::Arc::clone(&metrics);
                std::thread::spawn(move || {
                    register_worker(i);
                    for _ in 0..100 {
                        m.record(Route::Price, 200, Duration::from_micros(30));
                    }
                    m.record(Route::Price, 404, Duration::from_millis(3));
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(metrics.total_requests(), 303);
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(
            out.contains("edgeprice_http_requests_total{route=\"price\",status=\"200\"} 300"),
            "{out}"
        );
        assert!(out.contains("edgeprice_http_requests_total{route=\"price\",status=\"404\"} 3"));
        assert!(out.contains(
            "edgeprice_http_request_duration_seconds_bucket{route=\"price\",le=\"0.00005\"} 300"
        ));
        assert!(out.contains(
            "edgeprice_http_request_duration_seconds_bucket{route=\"price\",le=\"+Inf\"} 303"
        ));
        assert!(out.contains("edgeprice_http_request_duration_seconds_count{route=\"price\"} 303"));
    }
}
