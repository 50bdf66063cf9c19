//! Checkout: inventory reservations, the checkout saga, payments, coupon redemptions,
//! flash-sale protection and checkout events.
//!
//! - [`ledger`]: stock, reservations, coupon redemptions, sagas with their step log,
//!   orders and the event outbox in `checkout.db`, written by one group-commit thread
//!   (the zero-oversell argument is in its docs). Stock comes from the accepted
//!   `inventory` and `sales` events of the control plane's log, followed with the
//!   ledger's own durable cursor.
//! - [`saga`]: the orchestrator. `POST /v1/checkout` verifies the quote token, then
//!   reserve → pay → create order → confirm inventory → notify (sales events into the
//!   feed log, checkout events out). Payment fails → release; order creation fails →
//!   refund and release; anything else → compensate in reverse order. Every step is in
//!   the durable step log before the next starts.
//! - Background (its own thread and runtime): the recovery loop finishes or compensates
//!   sagas left in flight by a crash; the sweeper releases expired reservations; the
//!   reconciliation compares the gateway's payments with the orders; the relay
//!   delivers the outbox to the [`events::EventBus`] and Kafka.
//! - [`payment`]: the [`payment::PaymentGateway`] trait, the simulated gateway, retries
//!   with backoff under the same idempotency key.
//! - [`limits`]: token buckets per customer, IP and device, the concurrency cap.
//! - `crate::http::checkout`: the routes on the control plane's listener.
//!
//! Fault injection for crash tests: [`Faults`] (from `EDGEPRICE_CHECKOUT_FAULT`, only
//! when set) makes the saga hang at a named step, after writing a marker file, so a
//! test can SIGKILL the process exactly there; or fail a step.

pub mod events;
pub mod ledger;
pub mod limits;
pub mod payment;
pub mod saga;
pub mod stats;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use edgeprice_pricing::promo::CouponRule;
use edgeprice_pricing::quote::{Keyring, TokenError};
use edgeprice_server::SnapshotStore;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{watch, Semaphore};
use tracing::{info, warn};

use crate::kafka::KafkaConfig;
use crate::store::Ingestor;
use events::EventBus;
use ledger::{Ledger, LedgerConfig, OpenState};
use limits::{Limiter, LimitsConfig};
use payment::{PaymentGateway, RetryPolicy};
pub use saga::ReconciliationReport;
pub use stats::{CheckoutStats, SagaState};

/// Wall-clock Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A new id: `prefix_`, 12 hex digits of Unix milliseconds, then 20 random hex digits
/// (80 bits: unguessable, so ids of orders and purchase tokens can be handed to
/// customers). The time prefix makes ids increase, so every table keyed by them (holds,
/// sagas and their steps, orders) grows at the right edge of its B-tree: a group commit
/// of thousands of reservations writes a handful of pages instead of one random page per
/// reservation (a third of the ledger's CPU with fully random ids).
pub fn new_id(prefix: &str) -> String {
    use rand::Rng;
    let random: u128 = rand::thread_rng().gen();
    let millis = (now_ms() as u64) & 0xffff_ffff_ffff;
    format!("{prefix}_{millis:012x}{:020x}", random >> 48)
}

/// An answer kept for idempotent replays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    /// JSON.
    pub body: String,
}

/// Errors of checkout, each with its API code and HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckoutError {
    #[error("checkout storage failed: {0}; nothing was stored, retry")]
    Storage(String),
    #[error("checkout has stopped")]
    Stopped,
    #[error("{0}")]
    InvalidRequest(String),
    #[error("send an Idempotency-Key header (1-128 characters)")]
    MissingIdempotencyKey,
    #[error("this Idempotency-Key was used with another request body")]
    IdempotencyKeyReused,
    #[error("a checkout with this Idempotency-Key is still running (saga {0}); retry shortly")]
    InProgress(String),
    #[error(transparent)]
    Quote(#[from] TokenError),
    #[error("{sku}: {requested} requested, {available} available")]
    InsufficientStock {
        sku: String,
        requested: i64,
        available: i64,
    },
    #[error("{0} is in a flash sale: a customer_id is required")]
    CustomerRequired(String),
    #[error(
        "{sku}: at most {limit} per customer during the sale ({already} already held or bought)"
    )]
    CustomerLimit {
        sku: String,
        limit: i64,
        already: i64,
    },
    #[error("coupon {code} cannot be redeemed ({reason})")]
    CouponExhausted { code: String, reason: &'static str },
    #[error("purchase token {0} is not open, not this customer's, or does not match the cart")]
    InvalidPurchaseToken(String),
    #[error("{0} is in a flash sale: checkout needs a purchase token (POST /v1/purchase-tokens)")]
    PurchaseTokenRequired(String),
    #[error("{0} has no flash sale running")]
    NoFlashSale(String),
    #[error("no saga {0}")]
    UnknownSaga(String),
    #[error("saga {saga} is {state}; the step does not apply")]
    WrongState { saga: String, state: SagaState },
    #[error("reservation {0} expired and its units are gone")]
    ReservationLost(String),
    #[error("payment declined: {0}")]
    PaymentDeclined(String),
    #[error("the payment gateway did not answer; nothing was charged or the charge was refunded")]
    PaymentUnavailable,
    #[error("the order could not be created; the payment was refunded")]
    OrderFailed(String),
    #[error("the checkout was interrupted and rolled back; nothing was charged or the charge was refunded")]
    Interrupted,
    #[error("checkout is closed: {0}")]
    Closed(String),
    #[error("too many requests for this {scope}; retry after {retry_after_s} s")]
    RateLimited {
        scope: &'static str,
        retry_after_s: u64,
    },
    #[error("too many checkouts in progress; retry shortly")]
    TooManyCheckouts,
    #[error("injected fault at {0}")]
    InjectedFault(String),
}

impl From<rusqlite::Error> for CheckoutError {
    fn from(err: rusqlite::Error) -> Self {
        CheckoutError::Storage(err.to_string())
    }
}

impl CheckoutError {
    /// The API error code.
    pub fn code(&self) -> &'static str {
        match self {
            CheckoutError::Storage(_) => "storage_error",
            CheckoutError::Stopped => "checkout_stopped",
            CheckoutError::InvalidRequest(_) => "invalid_request",
            CheckoutError::MissingIdempotencyKey => "missing_idempotency_key",
            CheckoutError::IdempotencyKeyReused => "idempotency_key_reused",
            CheckoutError::InProgress(_) => "checkout_in_progress",
            CheckoutError::Quote(err) => err.code(),
            CheckoutError::InsufficientStock { .. } => "insufficient_stock",
            CheckoutError::CustomerRequired(_) => "customer_required",
            CheckoutError::CustomerLimit { .. } => "customer_limit_exceeded",
            CheckoutError::CouponExhausted { .. } => "coupon_unavailable",
            CheckoutError::InvalidPurchaseToken(_) => "invalid_purchase_token",
            CheckoutError::PurchaseTokenRequired(_) => "purchase_token_required",
            CheckoutError::NoFlashSale(_) => "no_flash_sale",
            CheckoutError::UnknownSaga(_) => "unknown_saga",
            CheckoutError::WrongState { .. } => "saga_state_conflict",
            CheckoutError::ReservationLost(_) => "reservation_lost",
            CheckoutError::PaymentDeclined(_) => "payment_declined",
            CheckoutError::PaymentUnavailable => "payment_unavailable",
            CheckoutError::OrderFailed(_) => "order_failed",
            CheckoutError::Interrupted => "checkout_interrupted",
            CheckoutError::Closed(_) => "checkout_closed",
            CheckoutError::RateLimited { .. } => "rate_limited",
            CheckoutError::TooManyCheckouts => "too_many_checkouts",
            CheckoutError::InjectedFault(_) => "injected_fault",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            CheckoutError::Storage(_) | CheckoutError::Stopped | CheckoutError::Closed(_) => 503,
            CheckoutError::InvalidRequest(_)
            | CheckoutError::MissingIdempotencyKey
            | CheckoutError::CustomerRequired(_) => 400,
            CheckoutError::Quote(TokenError::Expired { .. }) => 409,
            CheckoutError::Quote(_) => 400,
            CheckoutError::IdempotencyKeyReused => 422,
            CheckoutError::InProgress(_)
            | CheckoutError::InsufficientStock { .. }
            | CheckoutError::CustomerLimit { .. }
            | CheckoutError::CouponExhausted { .. }
            | CheckoutError::InvalidPurchaseToken(_)
            | CheckoutError::PurchaseTokenRequired(_)
            | CheckoutError::NoFlashSale(_)
            | CheckoutError::WrongState { .. }
            | CheckoutError::ReservationLost(_)
            | CheckoutError::Interrupted => 409,
            CheckoutError::UnknownSaga(_) => 404,
            CheckoutError::PaymentDeclined(_) => 402,
            CheckoutError::PaymentUnavailable => 502,
            CheckoutError::OrderFailed(_) | CheckoutError::InjectedFault(_) => 500,
            CheckoutError::RateLimited { .. } | CheckoutError::TooManyCheckouts => 429,
        }
    }

    /// Whether sending the same request again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            CheckoutError::Storage(_)
                | CheckoutError::InProgress(_)
                | CheckoutError::RateLimited { .. }
                | CheckoutError::TooManyCheckouts
                | CheckoutError::Closed(_)
        )
    }

    /// The error as an API answer (with the saga id when there is one).
    pub fn stored_response(&self, saga_id: Option<&str>) -> StoredResponse {
        let mut error = json!({"code": self.code(), "message": self.to_string()});
        if let Some(saga_id) = saga_id {
            error["saga_id"] = json!(saga_id);
        }
        match self {
            CheckoutError::InsufficientStock {
                sku,
                requested,
                available,
            } => {
                error["sku"] = json!(sku);
                error["requested"] = json!(requested);
                error["available"] = json!(available);
            }
            CheckoutError::CustomerLimit { sku, limit, .. } => {
                error["sku"] = json!(sku);
                error["limit"] = json!(limit);
            }
            CheckoutError::PurchaseTokenRequired(sku) | CheckoutError::NoFlashSale(sku) => {
                error["sku"] = json!(sku);
            }
            CheckoutError::CouponExhausted { code, .. } => error["coupon"] = json!(code),
            CheckoutError::RateLimited {
                scope,
                retry_after_s,
            } => {
                error["scope"] = json!(scope);
                error["retry_after_s"] = json!(retry_after_s);
            }
            _ => {}
        }
        StoredResponse {
            status: self.status(),
            body: json!({ "error": error }).to_string(),
        }
    }
}

/// Where a saga can be made to hang (for a SIGKILL) or fail. Each name is a point
/// right after the step's durable write (`charged` is after the gateway answered and
/// before that is logged).
pub const FAULT_POINTS: [&str; 6] = [
    "reserved",
    "charged",
    "paid",
    "ordered",
    "confirmed",
    "completed",
];

/// Fault injection; empty unless explicitly configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Hang at this point after writing `fault-{point}` into the data directory.
    pub hang_at: Option<String>,
    /// Fail this step: `create_order` (order creation fails → refund and release) or
    /// `confirm` (unknown error after the order → compensate in reverse order).
    pub fail_at: Option<String>,
}

impl Faults {
    /// Reads `EDGEPRICE_CHECKOUT_FAULT` (`hang:<point>` or `fail:<step>`); unset: none.
    pub fn from_env() -> Faults {
        let Ok(spec) = std::env::var("EDGEPRICE_CHECKOUT_FAULT") else {
            return Faults::default();
        };
        match spec.split_once(':') {
            Some(("hang", point)) => {
                warn!(point, "checkout fault injection: sagas hang at this point");
                Faults {
                    hang_at: Some(point.to_owned()),
                    fail_at: None,
                }
            }
            Some(("fail", step)) => {
                warn!(step, "checkout fault injection: this step fails");
                Faults {
                    hang_at: None,
                    fail_at: Some(step.to_owned()),
                }
            }
            _ => {
                warn!(spec = %spec, "EDGEPRICE_CHECKOUT_FAULT not understood; ignored");
                Faults::default()
            }
        }
    }
}

/// Checkout settings (the `[checkout]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckoutConfig {
    /// Where `checkout.db` (and the simulated gateway's book) live.
    pub data_dir: PathBuf,
    /// How long a checkout reservation holds its units, ms (10-15 min).
    pub hold_ttl_ms: i64,
    /// Default hold of a purchase token when a flash sale does not say, ms (5-10 min).
    pub flash_hold_ttl_ms: i64,
    /// Gateway retries.
    pub retry: RetryPolicy,
    /// Rate limits and the concurrency cap.
    pub limits: LimitsConfig,
    /// How often sagas left in flight are looked for, ms.
    pub recovery_interval_ms: u64,
    /// How often expired reservations are released, ms.
    pub sweep_interval_ms: u64,
    /// How often payments and orders are reconciled, ms.
    pub reconcile_interval_ms: u64,
    /// How often the event log is read for stock changes when idle, ms.
    pub feed_poll_ms: u64,
    /// Kafka topic of checkout events.
    pub events_topic: String,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Fault injection (crash tests only).
    pub faults: Faults,
}

impl Default for CheckoutConfig {
    fn default() -> Self {
        CheckoutConfig {
            data_dir: PathBuf::from("data/control"),
            hold_ttl_ms: 10 * 60 * 1_000,
            flash_hold_ttl_ms: 5 * 60 * 1_000,
            retry: RetryPolicy::default(),
            limits: LimitsConfig::default(),
            recovery_interval_ms: 5_000,
            sweep_interval_ms: 1_000,
            reconcile_interval_ms: 60_000,
            feed_poll_ms: 100,
            events_topic: events::CHECKOUT_EVENTS_TOPIC.into(),
            max_body_bytes: 64 * 1024,
            faults: Faults::default(),
        }
    }
}

/// The limits of a coupon promotion, by promotion id. Embedded mode reads the edge's
/// snapshot ([`SnapshotCoupons`]); a remote control plane can plug in its own store.
pub trait CouponLimits: Send + Sync + std::fmt::Debug + 'static {
    /// The coupon rule of a promotion; `None` when unknown.
    fn rule(&self, promotion_id: &str) -> Option<CouponRule>;
}

/// Coupon limits from the promotions of the snapshot an edge serves.
#[derive(Debug, Clone)]
pub struct SnapshotCoupons(pub Arc<SnapshotStore>);

impl CouponLimits for SnapshotCoupons {
    fn rule(&self, promotion_id: &str) -> Option<CouponRule> {
        let guard = self.0.load();
        let snapshot = guard.as_ref()?;
        let rule = snapshot
            .promotions()?
            .set()
            .promotions()
            .find(|p| p.id == promotion_id)?
            .coupon
            .clone();
        rule
    }
}

/// Coupon limits from the control plane's own promotion book (what it publishes to
/// every edge): the source for a control plane serving remote edges.
#[derive(Debug, Clone)]
pub struct BookCoupons(pub Arc<crate::admin::board::Board>);

impl CouponLimits for BookCoupons {
    fn rule(&self, promotion_id: &str) -> Option<CouponRule> {
        self.0
            .promotions()
            .promotions
            .get(promotion_id)?
            .coupon
            .clone()
    }
}

/// Coupon limits from a function (tests, other stores).
pub struct FnCoupons<F>(pub F);

impl<F> std::fmt::Debug for FnCoupons<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnCoupons")
    }
}

impl<F: Fn(&str) -> Option<CouponRule> + Send + Sync + 'static> CouponLimits for FnCoupons<F> {
    fn rule(&self, promotion_id: &str) -> Option<CouponRule> {
        (self.0)(promotion_id)
    }
}

/// What checkout works with.
#[derive(Debug)]
pub struct CheckoutDeps {
    /// Verifies quote tokens (the keyring the edges sign with).
    pub keyring: Keyring,
    pub gateway: Arc<dyn PaymentGateway>,
    pub coupons: Arc<dyn CouponLimits>,
    /// Where sales events go (the control plane's ingestor); `None`: not fed back.
    pub ingestor: Option<Arc<Ingestor>>,
    /// The control plane's database, whose event log supplies stock; `None`: no feed.
    pub feed_db: Option<PathBuf>,
    /// Kafka for checkout events; `None`: the in-process bus only.
    pub kafka: Option<KafkaConfig>,
    /// Another switch that closes checkout (the admin API's kill switch): `Some(reason)`
    /// while it is engaged.
    pub gate: Option<Gate>,
}

/// An outside switch that closes checkout: `Some(reason)` while engaged.
#[derive(Clone)]
pub struct Gate(pub Arc<dyn Fn() -> Option<String> + Send + Sync>);

impl Gate {
    /// Why checkout is closed by this switch, if it is.
    pub fn closed_reason(&self) -> Option<String> {
        (self.0)()
    }
}

/// The admin API's checkout kill switch (`Switch::Checkout`) as a gate.
pub fn kill_switch_gate(board: Arc<crate::admin::board::Board>) -> Gate {
    Gate(Arc::new(move || {
        board
            .controls()
            .switches
            .iter()
            .find(|engaged| engaged.switch == edgeprice_schemas::admin::Switch::Checkout)
            .map(|engaged| format!("closed by {}: {}", engaged.by, engaged.reason))
    }))
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gate")
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub rate_limited: AtomicU64,
    pub concurrency_refused: AtomicU64,
    pub closed_refused: AtomicU64,
    pub recovered: AtomicU64,
    pub swept: AtomicU64,
    pub reconciliation_issues: AtomicU64,
    pub outbox_lag: Arc<AtomicI64>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub config: CheckoutConfig,
    pub ledger: Ledger,
    pub keyring: Keyring,
    pub gateway: Arc<dyn PaymentGateway>,
    pub coupons: Arc<dyn CouponLimits>,
    pub ingestor: Option<Arc<Ingestor>>,
    pub bus: EventBus,
    pub limiter: Limiter,
    pub slots: Arc<Semaphore>,
    /// Sagas being driven in this process (the recovery loop leaves them alone).
    pub running: Mutex<HashSet<String>>,
    pub counters: Counters,
    pub gate: Option<Gate>,
    pub last_reconciliation: Mutex<Option<ReconciliationReport>>,
}

/// Checkout, running. Dropping it stops the background loops and the ledger writer
/// after the work in hand; sagas still running are finished by the next start's
/// recovery.
#[derive(Debug)]
pub struct Checkout {
    inner: Arc<Inner>,
    stop_tx: watch::Sender<bool>,
    background_jh: Option<JoinHandle<()>>,
}

impl Checkout {
    /// Opens the ledger, applies the event log's stock, and starts the background
    /// loops (recovery runs at once, for sagas a crash left behind).
    pub fn start(config: CheckoutConfig, deps: CheckoutDeps) -> Result<Checkout, CheckoutError> {
        let ledger = Ledger::start(LedgerConfig {
            data_dir: config.data_dir.clone(),
            feed_db: deps.feed_db.clone(),
            feed_poll: Duration::from_millis(config.feed_poll_ms.max(1)),
        })?;
        let slots = Arc::new(Semaphore::new(
            config
                .limits
                .max_concurrent_checkouts
                .clamp(1, Semaphore::MAX_PERMITS),
        ));
        let inner = Arc::new(Inner {
            limiter: Limiter::new(config.limits.clone()),
            config,
            ledger,
            keyring: deps.keyring,
            gateway: deps.gateway,
            coupons: deps.coupons,
            ingestor: deps.ingestor,
            bus: EventBus::new(4_096),
            slots,
            running: Mutex::new(HashSet::new()),
            counters: Counters::default(),
            gate: deps.gate,
            last_reconciliation: Mutex::new(None),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CheckoutError::Storage(e.to_string()))?;
        let background = Arc::clone(&inner);
        let kafka = deps
            .kafka
            .map(|kafka| (kafka, background.config.events_topic.clone()));
        let background_jh = std::thread::Builder::new()
            .name("edgeprice-checkout".into())
            .spawn(move || runtime.block_on(saga::background(background, kafka, stop_rx)))
            .map_err(|e| CheckoutError::Storage(e.to_string()))?;
        info!("checkout started");
        Ok(Checkout {
            inner,
            stop_tx,
            background_jh: Some(background_jh),
        })
    }

    /// The ledger (reads, and reservations for benchmarks).
    pub fn ledger(&self) -> &Ledger {
        &self.inner.ledger
    }

    /// The in-process event bus.
    pub fn events(&self) -> &EventBus {
        &self.inner.bus
    }

    /// Whether checkout is open, and who changed that last (an engaged outside gate
    /// closes it too).
    pub fn open_state(&self) -> OpenState {
        let state = self.inner.ledger.published(|p| p.open.clone());
        match self.inner.gate.as_ref().and_then(Gate::closed_reason) {
            Some(reason) if state.open => OpenState {
                open: false,
                by: "kill switch".into(),
                reason,
                at_ms: state.at_ms,
            },
            _ => state,
        }
    }

    /// Opens or closes checkout (the operator kill switch); durable. While closed,
    /// `POST /v1/checkout` and purchase tokens answer 503 `checkout_closed`; sagas
    /// already running finish.
    pub async fn set_open(&self, open: bool, by: &str, reason: &str) -> Result<(), CheckoutError> {
        info!(open, by, reason, "checkout open state changed");
        self.inner
            .ledger
            .set_open(OpenState {
                open,
                by: by.to_owned(),
                reason: reason.to_owned(),
                at_ms: now_ms(),
            })
            .await
    }

    /// [`Checkout::set_open`] for threads outside an async runtime.
    pub fn set_open_blocking(
        &self,
        open: bool,
        by: &str,
        reason: &str,
    ) -> Result<(), CheckoutError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| CheckoutError::Storage(e.to_string()))?;
        runtime.block_on(self.set_open(open, by, reason))
    }

    /// Counters for the metrics endpoint.
    pub fn stats(&self) -> CheckoutStats {
        let inner = &self.inner;
        let counters = inner.ledger.published(|p| p.counters.clone());
        let open = self.open_state().open;
        let max = inner
            .config
            .limits
            .max_concurrent_checkouts
            .clamp(1, Semaphore::MAX_PERMITS);
        CheckoutStats {
            open,
            active_reservations: counters.active_reservations,
            reserved_units: counters.reserved_units,
            oversell: counters.oversell,
            orders: counters.orders,
            sagas_by_state: counters.sagas_by_state,
            in_flight: (max - inner.slots.available_permits()) as u64,
            rate_limited: inner.counters.rate_limited.load(Ordering::Relaxed),
            concurrency_refused: inner.counters.concurrency_refused.load(Ordering::Relaxed),
            closed_refused: inner.counters.closed_refused.load(Ordering::Relaxed),
            recovered: inner.counters.recovered.load(Ordering::Relaxed),
            swept: inner.counters.swept.load(Ordering::Relaxed),
            reconciliation_issues: inner.counters.reconciliation_issues.load(Ordering::Relaxed),
            outbox_lag: inner.counters.outbox_lag.load(Ordering::Relaxed),
        }
    }

    /// Finishes or compensates every saga not running in this process; how many.
    pub async fn recover(&self) -> usize {
        saga::recover(&self.inner).await
    }

    /// Releases expired reservations now; how many.
    pub async fn sweep(&self) -> Result<usize, CheckoutError> {
        saga::sweep(&self.inner).await
    }

    /// Compares the gateway's payments with the orders.
    pub async fn reconcile(&self) -> Result<ReconciliationReport, CheckoutError> {
        saga::reconcile(&self.inner).await
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let _ = self.stop_tx.send(true);
        if let Some(background_jh) = self.background_jh.take() {
            let _ = background_jh.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::board::Board;
    use crate::admin::promotions::PromotionBook;

    #[test]
    fn book_coupons_read_the_control_planes_promotions() {
        let coupon: edgeprice_pricing::promo::Promotion =
            serde_json::from_value(serde_json::json!({
                "id": "welcome",
                "label": "5.00 off your first order",
                "currency": "EUR",
                "rule": {"type": "cart_amount_off", "threshold_minor": 0, "amount_minor": 500},
                "coupon": {"codes": ["WELCOME"], "total_limit": 100, "per_customer_limit": 1},
            }))
            .unwrap();
        let board = Arc::new(Board::default());
        let limits = BookCoupons(Arc::clone(&board));
        assert_eq!(limits.rule("welcome"), None);
        board.set_promotions(&PromotionBook::default().with(coupon.clone()));
        assert_eq!(limits.rule("welcome"), coupon.coupon);
        assert!(limits.rule("welcome").is_some());
        assert_eq!(limits.rule("other"), None);
    }
}
