//! Payment behind a trait, a simulated gateway, and retries with backoff.
//!
//! Every charge carries an idempotency key (the saga id): the gateway charges a key
//! once, however often the request arrives, and answers a repeated request with the
//! first payment. That is what makes retries after a timeout safe, and what lets the
//! recovery loop ask "did this saga's charge happen?" ([`PaymentGateway::lookup`]).
//! Refunds are keyed the same way (`refund:{saga}`).
//!
//! [`SimulatedGateway`] stands in for a payment service provider: configurable latency,
//! decline rate, timeouts (before or after the charge is booked: the response is lost
//! either way) and duplicate delivery (a request processed twice, as a network retry
//! would), with its own durable book (`gateway.db`) so that it outlives a crash of the
//! control plane the way a real PSP does.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

/// A boxed future: the trait stays object-safe without an extra crate.
pub type PayFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, PaymentError>> + Send + 'a>>;

/// A charge request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeRequest {
    /// The gateway charges a key at most once.
    pub idempotency_key: String,
    pub amount_minor: i64,
    pub currency: String,
    pub customer_id: Option<String>,
    /// What the customer pays with (an opaque token from the payment form).
    pub method: Option<String>,
}

/// A refund request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequest {
    pub idempotency_key: String,
    pub payment_id: String,
    pub amount_minor: i64,
}

/// Status of a payment at the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Succeeded,
    Refunded,
}

/// A payment as the gateway books it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub id: String,
    pub idempotency_key: String,
    pub amount_minor: i64,
    pub currency: String,
    pub status: PaymentStatus,
    pub refunded_minor: i64,
    pub created_at_ms: i64,
    /// How many times the charge request reached the gateway (duplicates included).
    pub deliveries: u64,
}

/// A refund as the gateway books it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub id: String,
    pub payment_id: String,
    pub amount_minor: i64,
}

/// Why a gateway call failed, and whether retrying can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// The issuer said no; retrying does not help.
    #[error("payment declined: {reason}")]
    Declined { reason: String },
    /// No answer in time; the charge may or may not have happened. Retry with the same
    /// key, or look the key up.
    #[error("payment gateway timed out")]
    Timeout,
    /// The gateway could not be reached or failed; retry with the same key.
    #[error("payment gateway unavailable: {0}")]
    Unavailable(String),
    /// The request is wrong (unknown payment, refund above the charge); do not retry.
    #[error("payment request refused: {0}")]
    Invalid(String),
}

impl PaymentError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, PaymentError::Timeout | PaymentError::Unavailable(_))
    }

    pub fn code(&self) -> &'static str {
        match self {
            PaymentError::Declined { .. } => "payment_declined",
            PaymentError::Timeout => "payment_timeout",
            PaymentError::Unavailable(_) => "payment_unavailable",
            PaymentError::Invalid(_) => "payment_invalid",
        }
    }
}

/// A payment service provider.
pub trait PaymentGateway: Send + Sync + std::fmt::Debug + 'static {
    /// Charges once per idempotency key; a repeated key answers the first payment.
    fn charge(&self, request: ChargeRequest) -> PayFuture<'_, Payment>;
    /// Refunds once per idempotency key.
    fn refund(&self, request: RefundRequest) -> PayFuture<'_, Refund>;
    /// The payment booked under a charge key, if any.
    fn lookup(&self, idempotency_key: String) -> PayFuture<'_, Option<Payment>>;
    /// Every payment booked (for reconciliation).
    fn payments(&self) -> PayFuture<'_, Vec<Payment>>;
}

/// Retries of gateway calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Wait before the second attempt, ms; doubled each time, with jitter.
    pub initial_backoff_ms: u64,
    /// Longest wait between attempts, ms.
    pub max_backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff_ms: 50,
            max_backoff_ms: 1_000,
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt` (2, 3, ...): exponential with ±50 % jitter so
    /// that many sagas retrying together spread out.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .initial_backoff_ms
            .saturating_mul(1u64 << attempt.saturating_sub(2).min(20))
            .min(self.max_backoff_ms);
        let jitter = rand::thread_rng().gen_range(0.5..1.5);
        Duration::from_millis(((exp as f64) * jitter) as u64)
    }
}

/// Calls `call` until it succeeds, fails for good, or runs out of attempts;
/// `on_retry(attempt, error)` is told about each failed attempt that will be retried.
pub async fn with_retries<T, F, Fut>(
    policy: &RetryPolicy,
    mut call: F,
    mut on_retry: impl FnMut(u32, &PaymentError),
) -> Result<T, PaymentError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PaymentError>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(err) if err.is_retryable() && attempt < policy.max_attempts.max(1) => {
                on_retry(attempt, &err);
                attempt += 1;
                tokio::time::sleep(policy.backoff(attempt)).await;
            }
            Err(err) => return Err(err),
        }
    }
}

/// Behaviour of the simulated gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimulatorConfig {
    /// Time each call takes, ms.
    pub latency_ms: u64,
    /// Share of new charges declined (0.0–1.0).
    pub decline_rate: f64,
    /// Share of charge calls that time out (0.0–1.0).
    pub timeout_rate: f64,
    /// Whether a timed-out charge was booked before the response was lost.
    pub charge_before_timeout: bool,
    /// How long a timed-out call hangs before it fails, ms.
    pub timeout_ms: u64,
    /// The first N charge calls of each key time out (deterministic retries for
    /// tests), after which the rates apply.
    pub timeouts_per_key: u32,
    /// Share of charge requests the gateway receives twice (0.0–1.0).
    pub duplicate_rate: f64,
    /// Seed of the simulator's randomness.
    pub seed: u64,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            latency_ms: 0,
            decline_rate: 0.0,
            timeout_rate: 0.0,
            charge_before_timeout: false,
            timeout_ms: 100,
            timeouts_per_key: 0,
            duplicate_rate: 0.0,
            seed: 1,
        }
    }
}

/// A payment gateway simulator with a durable book.
#[derive(Debug)]
pub struct SimulatedGateway {
    config: SimulatorConfig,
    conn: Mutex<Connection>,
    rng: Mutex<rand::rngs::SmallRng>,
    attempts: Mutex<std::collections::HashMap<String, u32>>,
    next_id: AtomicU64,
}

const GATEWAY_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS payments (
    id              TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    amount_minor    INTEGER NOT NULL,
    currency        TEXT NOT NULL,
    status          TEXT NOT NULL,
    refunded_minor  INTEGER NOT NULL DEFAULT 0,
    created_at_ms   INTEGER NOT NULL,
    deliveries      INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS declines (
    idempotency_key TEXT PRIMARY KEY,
    reason          TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS refunds (
    id              TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    payment_id      TEXT NOT NULL,
    amount_minor    INTEGER NOT NULL
);
"#;

fn sim_err(err: rusqlite::Error) -> PaymentError {
    PaymentError::Unavailable(format!("simulator book: {err}"))
}

impl SimulatedGateway {
    /// A simulator whose book lives in `path` (`None`: in memory).
    pub fn open(
        path: Option<&Path>,
        config: SimulatorConfig,
    ) -> Result<SimulatedGateway, rusqlite::Error> {
        let conn = match path {
            Some(path) => Connection::open(path)?,
            None => Connection::open_in_memory()?,
        };
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL in WAL mode survives a crash of the process (not of the machine):
        // enough for a simulator that must outlive the control plane's SIGKILL.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(GATEWAY_SCHEMA)?;
        let seed = config.seed;
        Ok(SimulatedGateway {
            config,
            conn: Mutex::new(conn),
            rng: Mutex::new(rand::rngs::SmallRng::seed_from_u64(seed)),
            attempts: Mutex::new(std::collections::HashMap::new()),
            next_id: AtomicU64::new(0),
        })
    }

    fn roll(&self, rate: f64) -> bool {
        rate > 0.0
            && self
                .rng
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .gen_bool(rate.min(1.0))
    }

    fn new_id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}_{}_{n}", super::new_id("").trim_start_matches('_'))
    }

    fn payment_by_key(conn: &Connection, key: &str) -> rusqlite::Result<Option<Payment>> {
        conn.prepare_cached(
            "SELECT id, idempotency_key, amount_minor, currency, status, refunded_minor, created_at_ms, deliveries
             FROM payments WHERE idempotency_key = ?1",
        )?
        .query_row([key], payment_from_row)
        .optional()
    }

    /// Books (or finds) the charge of one delivery of the request.
    fn deliver_charge(&self, request: &ChargeRequest) -> Result<Payment, PaymentError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) =
            Self::payment_by_key(&conn, &request.idempotency_key).map_err(sim_err)?
        {
            conn.execute(
                "UPDATE payments SET deliveries = deliveries + 1 WHERE id = ?1",
                [&existing.id],
            )
            .map_err(sim_err)?;
            if existing.amount_minor != request.amount_minor
                || existing.currency != request.currency
            {
                return Err(PaymentError::Invalid(format!(
                    "key {} was charged {} {}, not {} {}",
                    request.idempotency_key,
                    existing.amount_minor,
                    existing.currency,
                    request.amount_minor,
                    request.currency
                )));
            }
            return Ok(Payment {
                deliveries: existing.deliveries + 1,
                ..existing
            });
        }
        let declined: Option<String> = conn
            .prepare_cached("SELECT reason FROM declines WHERE idempotency_key = ?1")
            .and_then(|mut s| {
                s.query_row([&request.idempotency_key], |row| row.get(0))
                    .optional()
            })
            .map_err(sim_err)?;
        if let Some(reason) = declined {
            return Err(PaymentError::Declined { reason });
        }
        if request.amount_minor <= 0 {
            return Err(PaymentError::Invalid("amount must be positive".into()));
        }
        if request.method.as_deref() == Some("card_declined") || self.roll(self.config.decline_rate)
        {
            let reason = "insufficient_funds".to_owned();
            conn.execute(
                "INSERT OR IGNORE INTO declines (idempotency_key, reason) VALUES (?1, ?2)",
                params![request.idempotency_key, reason],
            )
            .map_err(sim_err)?;
            return Err(PaymentError::Declined { reason });
        }
        let payment = Payment {
            id: self.new_id("pay"),
            idempotency_key: request.idempotency_key.clone(),
            amount_minor: request.amount_minor,
            currency: request.currency.clone(),
            status: PaymentStatus::Succeeded,
            refunded_minor: 0,
            created_at_ms: super::now_ms(),
            deliveries: 1,
        };
        conn.execute(
            "INSERT INTO payments (id, idempotency_key, amount_minor, currency, status, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, 'succeeded', ?5)",
            params![
                payment.id,
                payment.idempotency_key,
                payment.amount_minor,
                payment.currency,
                payment.created_at_ms
            ],
        )
        .map_err(sim_err)?;
        Ok(payment)
    }

    async fn latency(&self) {
        if self.config.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.config.latency_ms)).await;
        }
    }
}

fn payment_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Payment> {
    let status: String = row.get(4)?;
    Ok(Payment {
        id: row.get(0)?,
        idempotency_key: row.get(1)?,
        amount_minor: row.get(2)?,
        currency: row.get(3)?,
        status: if status == "refunded" {
            PaymentStatus::Refunded
        } else {
            PaymentStatus::Succeeded
        },
        refunded_minor: row.get(5)?,
        created_at_ms: row.get(6)?,
        deliveries: row.get::<_, i64>(7)? as u64,
    })
}

impl PaymentGateway for SimulatedGateway {
    fn charge(&self, request: ChargeRequest) -> PayFuture<'_, Payment> {
        Box::pin(async move {
            self.latency().await;
            let forced_timeout = {
                let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
                let n = attempts.entry(request.idempotency_key.clone()).or_insert(0);
                *n += 1;
                *n <= self.config.timeouts_per_key
            };
            let test_card = request.method.as_deref();
            let timeout = forced_timeout
                || test_card == Some("card_timeout")
                || self.roll(self.config.timeout_rate);
            if timeout && !self.config.charge_before_timeout {
                tokio::time::sleep(Duration::from_millis(self.config.timeout_ms)).await;
                debug!(key = %request.idempotency_key, "simulated gateway: timeout, nothing booked");
                return Err(PaymentError::Timeout);
            }
            let duplicate = self.roll(self.config.duplicate_rate);
            let result = self.deliver_charge(&request);
            if duplicate {
                // The same request arrives again; the key makes it harmless.
                let again = self.deliver_charge(&request);
                debug!(key = %request.idempotency_key, same = (again.as_ref().ok().map(|p| &p.id) == result.as_ref().ok().map(|p| &p.id)), "simulated gateway: duplicate delivery");
            }
            if timeout {
                tokio::time::sleep(Duration::from_millis(self.config.timeout_ms)).await;
                debug!(key = %request.idempotency_key, "simulated gateway: booked, response lost");
                return Err(PaymentError::Timeout);
            }
            result
        })
    }

    fn refund(&self, request: RefundRequest) -> PayFuture<'_, Refund> {
        Box::pin(async move {
            self.latency().await;
            let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
            let existing = conn
                .prepare_cached(
                    "SELECT id, payment_id, amount_minor FROM refunds WHERE idempotency_key = ?1",
                )
                .and_then(|mut s| {
                    s.query_row([&request.idempotency_key], |row| {
                        Ok(Refund {
                            id: row.get(0)?,
                            payment_id: row.get(1)?,
                            amount_minor: row.get(2)?,
                        })
                    })
                    .optional()
                })
                .map_err(sim_err)?;
            if let Some(refund) = existing {
                return Ok(refund);
            }
            let (amount, refunded): (i64, i64) = conn
                .query_row(
                    "SELECT amount_minor, refunded_minor FROM payments WHERE id = ?1",
                    [&request.payment_id],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(sim_err)?
                .ok_or_else(|| {
                    PaymentError::Invalid(format!("no payment {}", request.payment_id))
                })?;
            if refunded + request.amount_minor > amount {
                return Err(PaymentError::Invalid(format!(
                    "refund of {} exceeds what is left of {amount}",
                    request.amount_minor
                )));
            }
            let refund = Refund {
                id: self.new_id("rf"),
                payment_id: request.payment_id.clone(),
                amount_minor: request.amount_minor,
            };
            conn.execute(
                "INSERT INTO refunds (id, idempotency_key, payment_id, amount_minor) VALUES (?1, ?2, ?3, ?4)",
                params![refund.id, request.idempotency_key, refund.payment_id, refund.amount_minor],
            )
            .map_err(sim_err)?;
            conn.execute(
                "UPDATE payments SET refunded_minor = refunded_minor + ?2,
                 status = CASE WHEN refunded_minor + ?2 >= amount_minor THEN 'refunded' ELSE status END
                 WHERE id = ?1",
                params![refund.payment_id, refund.amount_minor],
            )
            .map_err(sim_err)?;
            Ok(refund)
        })
    }

    fn lookup(&self, idempotency_key: String) -> PayFuture<'_, Option<Payment>> {
        Box::pin(async move {
            self.latency().await;
            let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
            Self::payment_by_key(&conn, &idempotency_key).map_err(sim_err)
        })
    }

    fn payments(&self) -> PayFuture<'_, Vec<Payment>> {
        Box::pin(async move {
            let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
            let mut stmt = conn
                .prepare(
                    "SELECT id, idempotency_key, amount_minor, currency, status, refunded_minor, created_at_ms, deliveries
                     FROM payments ORDER BY created_at_ms",
                )
                .map_err(sim_err)?;
            let rows = stmt.query_map([], payment_from_row).map_err(sim_err)?;
            let payments: Result<Vec<_>, _> = rows.collect();
            payments.map_err(|e| {
                warn!(error = %e, "simulated gateway: reading payments failed");
                sim_err(e)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(key: &str, amount: i64) -> ChargeRequest {
        ChargeRequest {
            idempotency_key: key.into(),
            amount_minor: amount,
            currency: "EUR".into(),
            customer_id: None,
            method: None,
        }
    }

    #[tokio::test]
    async fn a_key_is_charged_once_even_when_delivered_twice_and_refunds_are_keyed() {
        let gateway = SimulatedGateway::open(
            None,
            SimulatorConfig {
                duplicate_rate: 1.0,
                ..SimulatorConfig::default()
            },
        )
        .unwrap();
        let first = gateway.charge(request("k1", 500)).await.unwrap();
        let again = gateway.charge(request("k1", 500)).await.unwrap();
        assert_eq!(first.id, again.id);
        assert!(again.deliveries >= 3, "{again:?}");
        assert!(matches!(
            gateway.charge(request("k1", 600)).await,
            Err(PaymentError::Invalid(_))
        ));
        assert_eq!(gateway.payments().await.unwrap().len(), 1);
        let refund = RefundRequest {
            idempotency_key: "refund:k1".into(),
            payment_id: first.id.clone(),
            amount_minor: 500,
        };
        let r1 = gateway.refund(refund.clone()).await.unwrap();
        let r2 = gateway.refund(refund).await.unwrap();
        assert_eq!(r1, r2);
        let looked = gateway.lookup("k1".into()).await.unwrap().unwrap();
        assert_eq!(looked.status, PaymentStatus::Refunded);
        assert!(gateway.lookup("k2".into()).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn retries_after_timeouts_reach_the_one_booked_charge() {
        let gateway = SimulatedGateway::open(
            None,
            SimulatorConfig {
                timeouts_per_key: 2,
                charge_before_timeout: true,
                timeout_ms: 1,
                ..SimulatorConfig::default()
            },
        )
        .unwrap();
        let policy = RetryPolicy {
            max_attempts: 3,
            initial_backoff_ms: 1,
            max_backoff_ms: 2,
        };
        let mut retries = 0;
        let payment = with_retries(
            &policy,
            || gateway.charge(request("k", 100)),
            |_, _| retries += 1,
        )
        .await
        .unwrap();
        assert_eq!(retries, 2);
        assert_eq!(payment.deliveries, 3);
        assert_eq!(gateway.payments().await.unwrap().len(), 1);

        let declined = SimulatedGateway::open(
            None,
            SimulatorConfig {
                decline_rate: 1.0,
                ..SimulatorConfig::default()
            },
        )
        .unwrap();
        let mut retries = 0;
        let err = with_retries(
            &policy,
            || declined.charge(request("d", 100)),
            |_, _| retries += 1,
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), "payment_declined");
        assert_eq!(retries, 0, "declines are not retried");
    }
}
