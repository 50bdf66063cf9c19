//! Fairness under load: token buckets per customer, IP and device (tighter while a
//! flash sale is on), and a cap on checkouts running at once.
//!
//! Buckets live in a bounded, expiring cache (moka): an idle client's bucket is full
//! again anyway, so forgetting it changes nothing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One token bucket's shape. `rate_per_s = 0` disables the limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Bucket {
    /// Sustained requests per second.
    pub rate_per_s: f64,
    /// Requests allowed at once above the sustained rate.
    pub burst: f64,
}

impl Default for Bucket {
    fn default() -> Self {
        Bucket {
            rate_per_s: 0.0,
            burst: 0.0,
        }
    }
}

impl Bucket {
    pub const fn new(rate_per_s: f64, burst: f64) -> Bucket {
        Bucket { rate_per_s, burst }
    }

    fn enabled(&self) -> bool {
        self.rate_per_s > 0.0
    }
}

/// Limits of checkout and purchase-token requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitsConfig {
    pub per_customer: Bucket,
    pub per_ip: Bucket,
    pub per_device: Bucket,
    /// Used instead of the above when the request touches a SKU in a flash sale.
    pub flash_per_customer: Bucket,
    pub flash_per_ip: Bucket,
    pub flash_per_device: Bucket,
    /// Most checkouts running at once; more are refused with 429 `too_many_checkouts`.
    pub max_concurrent_checkouts: usize,
    /// Most buckets remembered.
    pub max_buckets: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            per_customer: Bucket::new(5.0, 20.0),
            per_ip: Bucket::new(200.0, 1_000.0),
            per_device: Bucket::new(5.0, 20.0),
            flash_per_customer: Bucket::new(1.0, 2.0),
            flash_per_ip: Bucket::new(10.0, 20.0),
            flash_per_device: Bucket::new(1.0, 2.0),
            max_concurrent_checkouts: 2_048,
            max_buckets: 1_000_000,
        }
    }
}

impl LimitsConfig {
    /// No rate limits and no cap (benchmarks, tests of other things).
    pub fn unlimited() -> LimitsConfig {
        LimitsConfig {
            per_customer: Bucket::default(),
            per_ip: Bucket::default(),
            per_device: Bucket::default(),
            flash_per_customer: Bucket::default(),
            flash_per_ip: Bucket::default(),
            flash_per_device: Bucket::default(),
            max_concurrent_checkouts: usize::MAX >> 4,
            max_buckets: 1_000,
        }
    }
}

/// Whose bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Customer,
    Ip,
    Device,
}

impl Scope {
    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::Customer => "customer",
            Scope::Ip => "ip",
            Scope::Device => "device",
        }
    }
}

#[derive(Debug)]
struct Tokens {
    tokens: f64,
    refilled: Instant,
}

/// The buckets.
#[derive(Debug)]
pub struct Limiter {
    config: LimitsConfig,
    buckets: moka::sync::Cache<(Scope, bool, String), Arc<Mutex<Tokens>>>,
}

impl Limiter {
    pub fn new(config: LimitsConfig) -> Limiter {
        let buckets = moka::sync::Cache::builder()
            .max_capacity(config.max_buckets)
            .time_to_idle(Duration::from_secs(600))
            .build();
        Limiter { config, buckets }
    }

    pub fn config(&self) -> &LimitsConfig {
        &self.config
    }

    /// Takes one token from each bucket that applies, or says which scope refused and
    /// after how many seconds to retry. Tokens taken from earlier scopes are not given
    /// back when a later one refuses: a client over any limit pays for trying.
    pub fn check(&self, keys: &[(Scope, &str)], flash: bool) -> Result<(), (Scope, u64)> {
        for (scope, key) in keys {
            if key.is_empty() {
                continue;
            }
            let shape = match (scope, flash) {
                (Scope::Customer, false) => self.config.per_customer,
                (Scope::Ip, false) => self.config.per_ip,
                (Scope::Device, false) => self.config.per_device,
                (Scope::Customer, true) => self.config.flash_per_customer,
                (Scope::Ip, true) => self.config.flash_per_ip,
                (Scope::Device, true) => self.config.flash_per_device,
            };
            if !shape.enabled() {
                continue;
            }
            let capacity = shape.burst.max(1.0);
            let bucket = self
                .buckets
                .get_with((*scope, flash, (*key).to_owned()), || {
                    Arc::new(Mutex::new(Tokens {
                        tokens: capacity,
                        refilled: Instant::now(),
                    }))
                });
            let mut bucket = bucket.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
            bucket.tokens = (bucket.tokens + elapsed * shape.rate_per_s).min(capacity);
            bucket.refilled = now;
            if bucket.tokens >= 1.0 {
                bucket.tokens -= 1.0;
            } else {
                let wait = ((1.0 - bucket.tokens) / shape.rate_per_s).ceil().max(1.0);
                return Err((*scope, wait as u64));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refuse_over_the_burst_and_flash_limits_are_separate() {
        let limiter = Limiter::new(LimitsConfig {
            per_customer: Bucket::new(1.0, 2.0),
            flash_per_customer: Bucket::new(1.0, 1.0),
            ..LimitsConfig::unlimited()
        });
        let keys = [(Scope::Customer, "c1"), (Scope::Ip, "10.0.0.1")];
        assert!(limiter.check(&keys, false).is_ok());
        assert!(limiter.check(&keys, false).is_ok());
        assert_eq!(limiter.check(&keys, false), Err((Scope::Customer, 1)));
        // Another customer has its own bucket.
        assert!(limiter.check(&[(Scope::Customer, "c2")], false).is_ok());
        assert!(limiter.check(&keys, true).is_ok());
        assert_eq!(limiter.check(&keys, true), Err((Scope::Customer, 1)));
    }
}
