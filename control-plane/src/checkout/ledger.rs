//! The checkout ledger: stock, reservations, coupon redemptions, sagas, orders and the
//! event outbox in one SQLite database (`checkout.db`), written by one thread.
//!
//! # Why one writer is enough for zero oversell
//!
//! Every change to what is available — a reservation, a release, a confirmation, an
//! inventory event — is a command on one channel, applied by one thread to its
//! in-memory view and to the database in the same step. A reservation is granted only
//! when `on_hand − reserved − sold_pending ≥ quantity` for every line, checked and
//! applied with nothing in between, so two buyers can never both take the last unit.
//! That is "one writer per SKU" with one writer for all SKUs, which is stronger and
//! fast enough: the in-memory check costs nanoseconds, and SQLite takes tens of
//! thousands of small inserts per transaction.
//!
//! # Durable before acknowledged, group commit
//!
//! The writer takes every command waiting in its channel (up to [`MAX_GROUP`]), applies
//! them in one `IMMEDIATE` transaction, commits once (WAL, `synchronous = FULL`: one
//! fsync) and only then answers each caller. A crash before the commit answers nobody
//! and loses nothing acknowledged. If the transaction fails, the in-memory view is
//! rebuilt from the database, so it never holds what the disk does not.
//!
//! # Stock
//!
//! Per SKU and location (a store, or `*` for the central warehouse):
//! - `on_hand`: perpetual inventory from the accepted `inventory` events (a count sets
//!   it, stock in adds, stock out subtracts) and `sales` events (a sale subtracts),
//!   like the pipeline's own view. The writer follows the control plane's event log
//!   with its own cursor (`meta.feed_cursor`), advanced in the transaction that applies
//!   the events, so every accepted event is applied exactly once across restarts.
//! - `reserved`: units held by open reservations.
//! - `sold_pending`: units of confirmed orders whose `sales` event (which checkout
//!   sends, `event_id = checkout:{order}:{sku}`) has not come back through the log
//!   yet. When it does, the units move from `sold_pending` to `on_hand`'s decrement.
//!
//! `available = on_hand − reserved − sold_pending`. A checkout for store S reserves
//! from S when S has inventory records, otherwise from `*`.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use edgeprice_pricing::promo::CouponRule;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

use super::events::CheckoutEvent;
use super::stats::{LedgerCounters, SagaState};
use super::{new_id, now_ms, CheckoutError, StoredResponse};
use crate::feeds::{parse_event, FeedEvent, FeedKind, InventoryKind};
use crate::sqlite::WalCheckpointer;

/// File name of the ledger inside the control plane's data directory.
pub const DB_FILE: &str = "checkout.db";

/// Most commands applied in one transaction.
pub const MAX_GROUP: usize = 16_384;

/// Prefix of the `event_id` of the sales events checkout sends.
pub const SALES_EVENT_PREFIX: &str = "checkout:";

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS stock (
    sku      TEXT NOT NULL,
    location TEXT NOT NULL,
    on_hand  INTEGER NOT NULL,
    PRIMARY KEY (sku, location)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS holds (
    id            TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    saga_id       TEXT,
    customer      TEXT,
    lines         TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    state         TEXT NOT NULL,
    closed_at_ms  INTEGER
);
CREATE INDEX IF NOT EXISTS holds_open ON holds (state) WHERE state = 'held';
CREATE TABLE IF NOT EXISTS sold (
    order_id  TEXT NOT NULL,
    sku       TEXT NOT NULL,
    location  TEXT NOT NULL,
    quantity  INTEGER NOT NULL,
    customer  TEXT,
    at_ms     INTEGER NOT NULL,
    absorbed  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (order_id, sku)
);
CREATE INDEX IF NOT EXISTS sold_pending ON sold (absorbed) WHERE absorbed = 0;
CREATE TABLE IF NOT EXISTS redemptions (
    saga_id      TEXT NOT NULL,
    promotion_id TEXT NOT NULL,
    code         TEXT NOT NULL,
    customer     TEXT,
    state        TEXT NOT NULL,
    at_ms        INTEGER NOT NULL,
    PRIMARY KEY (saga_id, promotion_id)
);
CREATE TABLE IF NOT EXISTS sagas (
    id              TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    request_hash    TEXT NOT NULL,
    state           TEXT NOT NULL,
    customer        TEXT,
    quote           TEXT NOT NULL,
    total_minor     INTEGER NOT NULL,
    currency        TEXT NOT NULL,
    hold_id         TEXT,
    payment_id      TEXT,
    order_id        TEXT,
    error_code      TEXT,
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL,
    response_status INTEGER,
    response_body   TEXT
);
CREATE INDEX IF NOT EXISTS sagas_open ON sagas (state)
    WHERE state NOT IN ('completed', 'failed');
CREATE TABLE IF NOT EXISTS saga_steps (
    saga_id TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    step    TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail  TEXT NOT NULL,
    at_ms   INTEGER NOT NULL,
    PRIMARY KEY (saga_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS orders (
    id            TEXT PRIMARY KEY,
    saga_id       TEXT NOT NULL UNIQUE,
    customer      TEXT,
    currency      TEXT NOT NULL,
    total_minor   INTEGER NOT NULL,
    lines         TEXT NOT NULL,
    payment_id    TEXT NOT NULL,
    status        TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    key   TEXT NOT NULL,
    event TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#;

/// Opens (creating if needed) the ledger database with the project's settings.
pub fn open(data_dir: &Path) -> Result<Connection, CheckoutError> {
    std::fs::create_dir_all(data_dir).map_err(|e| CheckoutError::Storage(e.to_string()))?;
    let conn = Connection::open(data_dir.join(DB_FILE))?;
    conn.busy_handler(Some(crate::sqlite::retry_soon))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Checkpointed by the ledger's `WalCheckpointer`, never inside a group commit.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "cache_size", -65_536)?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// One line of a reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldLine {
    pub sku: String,
    /// Where the units are taken from: a store, or `*`.
    pub location: String,
    pub quantity: i64,
}

/// One line asked for: the ledger picks the location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WantedLine {
    pub sku: String,
    /// The store of the quote (`*` when none).
    pub store: String,
    pub quantity: i64,
}

/// A granted reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub id: String,
    pub lines: Vec<HoldLine>,
    pub expires_at_ms: i64,
}

/// A flash sale on one SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FlashSale {
    pub sku: String,
    /// Window start (inclusive), Unix ms.
    pub starts_at_ms: i64,
    /// Window end (exclusive), Unix ms.
    pub ends_at_ms: i64,
    /// Most units one customer may hold and buy during the sale.
    pub per_customer_limit: i64,
    /// How long a purchase token holds its units, ms (shorter than a checkout hold).
    pub hold_ttl_ms: i64,
    /// Checkout of this SKU needs a purchase token during the sale (tokens are issued
    /// in arrival order up to the stock, which is what makes the sale fair).
    pub require_token: bool,
}

impl Default for FlashSale {
    fn default() -> Self {
        FlashSale {
            sku: String::new(),
            starts_at_ms: 0,
            ends_at_ms: i64::MAX,
            per_customer_limit: 2,
            hold_ttl_ms: 5 * 60 * 1_000,
            require_token: true,
        }
    }
}

impl FlashSale {
    pub fn is_active(&self, now_ms: i64) -> bool {
        self.starts_at_ms <= now_ms && now_ms < self.ends_at_ms
    }
}

/// A coupon redemption the saga asks to hold, with the promotion's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouponClaim {
    pub promotion_id: String,
    pub code: String,
    /// `None` when the promotion is no longer known: no limits are enforced then (the
    /// quote was signed while it existed and the price is locked).
    pub rule: Option<CouponRule>,
}

/// What a saga starts with.
#[derive(Debug, Clone)]
pub struct BeginSaga {
    /// Chosen by the caller, so it can mark the saga as its own before it exists.
    pub saga_id: String,
    pub idempotency_key: String,
    pub request_hash: String,
    pub customer: Option<String>,
    /// The quote as JSON (kept for recovery and for the order).
    pub quote_json: String,
    pub total_minor: i64,
    pub currency: String,
    pub lines: Vec<WantedLine>,
    pub coupons: Vec<CouponClaim>,
    /// Purchase tokens (flash-sale holds) the checkout converts.
    pub purchase_tokens: Vec<String>,
    pub hold_ttl_ms: i64,
}

/// What [`Ledger::begin`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeginOutcome {
    /// New saga with its reservation and coupon redemptions held.
    Started { saga_id: String, hold: Hold },
    /// The key was used with the same body and the saga finished: its answer.
    Replay(StoredResponse),
    /// The key was used with the same body and the saga is still running.
    InProgress { saga_id: String },
    /// The key was used with another body.
    KeyReused,
    /// Refused before anything was held; stored so the same key gets the same answer.
    Refused {
        saga_id: String,
        response: StoredResponse,
    },
}

/// A saga's move from one step to the next, logged and applied atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// A log line with no state change (payment attempts, retries, notes).
    Note {
        step: String,
        outcome: String,
        detail: serde_json::Value,
    },
    /// The gateway charged the quoted total.
    Paid {
        payment_id: String,
        amount_minor: i64,
    },
    /// The order exists (status `created`).
    OrderCreated { order_id: String },
    /// Reservation turned into a sale, coupon redemptions committed, order confirmed;
    /// `response` is the customer's answer from now on (idempotent replays get it).
    Confirmed { response: StoredResponse },
    /// Sales events are durable in the feed log; the saga is done.
    Completed { response: StoredResponse },
    /// Compensation starts; `code` says why.
    Compensating { code: String, detail: String },
    /// The order is cancelled (compensation).
    OrderCancelled,
    /// The payment was refunded (compensation).
    Refunded { refund_id: String },
    /// Reservation and coupon redemptions released (compensation).
    Released,
    /// The saga ended without an order.
    Failed { response: StoredResponse },
}

/// A saga as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SagaRecord {
    pub id: String,
    pub idempotency_key: String,
    #[serde(skip)]
    pub request_hash: String,
    pub state: SagaState,
    pub customer: Option<String>,
    #[serde(skip)]
    pub quote_json: String,
    pub total_minor: i64,
    pub currency: String,
    pub hold_id: Option<String>,
    pub payment_id: Option<String>,
    pub order_id: Option<String>,
    pub error_code: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    #[serde(skip)]
    pub response: Option<StoredResponse>,
}

/// One logged step of a saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepRecord {
    pub seq: i64,
    pub step: String,
    pub outcome: String,
    pub detail: serde_json::Value,
    pub at_ms: i64,
}

/// An order as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderRecord {
    pub id: String,
    pub saga_id: String,
    pub customer: Option<String>,
    pub currency: String,
    pub total_minor: i64,
    pub lines: serde_json::Value,
    pub payment_id: String,
    pub status: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// Stock of one SKU at one location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct StockLevel {
    pub on_hand: i64,
    pub reserved: i64,
    pub sold_pending: i64,
}

impl StockLevel {
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved - self.sold_pending
    }
}

/// Whether checkout is open, who changed it last and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenState {
    pub open: bool,
    pub by: String,
    pub reason: String,
    pub at_ms: i64,
}

impl Default for OpenState {
    fn default() -> Self {
        OpenState {
            open: true,
            by: "default".into(),
            reason: String::new(),
            at_ms: 0,
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, CheckoutError>>;

enum Command {
    Reserve {
        customer: Option<String>,
        lines: Vec<WantedLine>,
        ttl_ms: i64,
        kind: &'static str,
        reply_tx: Reply<Hold>,
    },
    Release {
        hold_id: String,
        customer: Option<String>,
        reply_tx: Reply<bool>,
    },
    Begin {
        begin: Box<BeginSaga>,
        reply_tx: Reply<BeginOutcome>,
    },
    /// Transitions applied in order in one transaction, stopping at the first refused.
    Advance {
        saga_id: String,
        transitions: Vec<Transition>,
        reply_tx: Reply<()>,
    },
    Sweep {
        now_ms: i64,
        reply_tx: Reply<usize>,
    },
    SetOpen {
        state: OpenState,
        reply_tx: Reply<()>,
    },
    SetFlashSale {
        sale: FlashSale,
        remove: bool,
        reply_tx: Reply<()>,
    },
    SyncFeed {
        reply_tx: Reply<i64>,
    },
}

type Finish = Box<dyn FnOnce(Option<&CheckoutError>) + Send>;

fn finish<T: Send + 'static>(reply_tx: Reply<T>, value: Result<T, CheckoutError>) -> Finish {
    Box::new(move |commit_error| {
        let _ = reply_tx.send(match commit_error {
            Some(err) => Err(err.clone()),
            None => value,
        });
    })
}

/// Settings of the ledger writer.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// Where `checkout.db` lives.
    pub data_dir: PathBuf,
    /// The control plane's `control.db`, whose event log supplies stock; `None`: no
    /// feed (no stock: every reservation is refused).
    pub feed_db: Option<PathBuf>,
    /// How often the event log is read when no command arrives.
    pub feed_poll: Duration,
}

/// Shared read-only view the writer publishes after each commit.
#[derive(Debug, Default)]
pub struct Published {
    pub counters: LedgerCounters,
    pub open: OpenState,
    pub flash_sales: HashMap<String, FlashSale>,
}

/// Handle to the ledger writer. Cloning shares the writer.
#[derive(Debug, Clone)]
pub struct Ledger {
    inner: Arc<LedgerInner>,
}

#[derive(Debug)]
struct LedgerInner {
    commands_tx: Mutex<Option<mpsc::Sender<Command>>>,
    writer_jh: Mutex<Option<JoinHandle<()>>>,
    published: Arc<Mutex<Published>>,
    reader: Mutex<Connection>,
    outbox_wake: Arc<tokio::sync::Notify>,
    /// Dropped after the writer stopped (fields drop after `drop` ran).
    _checkpointer: WalCheckpointer,
}

impl Drop for LedgerInner {
    fn drop(&mut self) {
        self.commands_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(writer_jh) = self
            .writer_jh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = writer_jh.join();
        }
    }
}

impl Ledger {
    /// Opens the ledger in `config.data_dir`, rebuilds the in-memory view from it and
    /// starts the writer thread.
    pub fn start(config: LedgerConfig) -> Result<Ledger, CheckoutError> {
        let conn = open(&config.data_dir)?;
        let reader = open(&config.data_dir)?;
        let checkpointer = WalCheckpointer::start(open(&config.data_dir)?, "checkout")
            .map_err(|e| CheckoutError::Storage(e.to_string()))?;
        let published = Arc::new(Mutex::new(Published::default()));
        let outbox_wake = Arc::new(tokio::sync::Notify::new());
        let mut writer = Writer {
            conn,
            view: View::default(),
            feed_db: config.feed_db.clone(),
            feed_conn: None,
            published: Arc::clone(&published),
            outbox_wake: Arc::clone(&outbox_wake),
        };
        writer.reload()?;
        writer.sync_feed_now()?;
        writer.publish();
        let (commands_tx, commands_rx) = mpsc::channel();
        let poll = config.feed_poll;
        let writer_jh = std::thread::Builder::new()
            .name("edgeprice-checkout-ledger".into())
            .spawn(move || writer.run(commands_rx, poll))
            .map_err(|e| CheckoutError::Storage(e.to_string()))?;
        Ok(Ledger {
            inner: Arc::new(LedgerInner {
                commands_tx: Mutex::new(Some(commands_tx)),
                writer_jh: Mutex::new(Some(writer_jh)),
                published,
                reader: Mutex::new(reader),
                outbox_wake,
                _checkpointer: checkpointer,
            }),
        })
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, CheckoutError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        {
            let commands_tx = self
                .inner
                .commands_tx
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            commands_tx
                .as_ref()
                .ok_or(CheckoutError::Stopped)?
                .send(make(reply_tx))
                .map_err(|_| CheckoutError::Stopped)?;
        }
        reply_rx.await.map_err(|_| CheckoutError::Stopped)?
    }

    /// Reserves every line or none (the error names the first line that failed);
    /// durable when it returns. `kind` is `reservation` or `purchase_token`.
    pub async fn reserve(
        &self,
        customer: Option<String>,
        lines: Vec<WantedLine>,
        ttl_ms: i64,
        kind: &'static str,
    ) -> Result<Hold, CheckoutError> {
        self.call(|reply_tx| Command::Reserve {
            customer,
            lines,
            ttl_ms,
            kind,
            reply_tx,
        })
        .await
    }

    /// Releases an open hold not owned by a saga; `false` when it was not open. With a
    /// `customer`, only that customer's holds.
    pub async fn release(
        &self,
        hold_id: String,
        customer: Option<String>,
    ) -> Result<bool, CheckoutError> {
        self.call(|reply_tx| Command::Release {
            hold_id,
            customer,
            reply_tx,
        })
        .await
    }

    /// Starts a saga: idempotency check, reservation and coupon redemptions, in one
    /// durable step.
    pub async fn begin(&self, begin: BeginSaga) -> Result<BeginOutcome, CheckoutError> {
        self.call(|reply_tx| Command::Begin {
            begin: Box::new(begin),
            reply_tx,
        })
        .await
    }

    /// Applies and logs one saga transition, durably.
    pub async fn advance(
        &self,
        saga_id: &str,
        transition: Transition,
    ) -> Result<(), CheckoutError> {
        self.advance_all(saga_id, vec![transition]).await
    }

    /// Applies and logs saga transitions in order with one durable commit. If one is
    /// refused, those before it stand (as after a crash between them) and the error
    /// is returned.
    pub async fn advance_all(
        &self,
        saga_id: &str,
        transitions: Vec<Transition>,
    ) -> Result<(), CheckoutError> {
        let saga_id = saga_id.to_owned();
        self.call(|reply_tx| Command::Advance {
            saga_id,
            transitions,
            reply_tx,
        })
        .await
    }

    /// Releases every hold that expired by `now_ms` and is not owned by a saga still
    /// running in this process (those are the saga's to settle); how many.
    pub async fn sweep(&self, now_ms: i64) -> Result<usize, CheckoutError> {
        self.call(|reply_tx| Command::Sweep { now_ms, reply_tx })
            .await
    }

    /// Opens or closes checkout (durable).
    pub async fn set_open(&self, state: OpenState) -> Result<(), CheckoutError> {
        self.call(|reply_tx| Command::SetOpen { state, reply_tx })
            .await
    }

    /// Creates, replaces or removes a flash sale (durable).
    pub async fn set_flash_sale(&self, sale: FlashSale, remove: bool) -> Result<(), CheckoutError> {
        self.call(|reply_tx| Command::SetFlashSale {
            sale,
            remove,
            reply_tx,
        })
        .await
    }

    /// Applies every inventory and sales event accepted so far; the new cursor.
    pub async fn sync_feed(&self) -> Result<i64, CheckoutError> {
        self.call(|reply_tx| Command::SyncFeed { reply_tx }).await
    }

    /// Counters and settings as of the last commit.
    pub fn published<T>(&self, read: impl FnOnce(&Published) -> T) -> T {
        read(
            &self
                .inner
                .published
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    pub(crate) fn outbox_wake(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.inner.outbox_wake)
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, CheckoutError> {
        let conn = self.inner.reader.lock().unwrap_or_else(|p| p.into_inner());
        Ok(f(&conn)?)
    }

    /// A saga by id.
    pub fn saga(&self, saga_id: &str) -> Result<Option<SagaRecord>, CheckoutError> {
        self.read(|conn| {
            conn.prepare_cached(&format!("{SAGA_SELECT} WHERE id = ?1"))?
                .query_row([saga_id], saga_from_row)
                .optional()
        })
    }

    /// A saga's logged steps, in order.
    pub fn steps(&self, saga_id: &str) -> Result<Vec<StepRecord>, CheckoutError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, step, outcome, detail, at_ms FROM saga_steps
                 WHERE saga_id = ?1 ORDER BY seq",
            )?;
            let rows = stmt.query_map([saga_id], |row| {
                Ok(StepRecord {
                    seq: row.get(0)?,
                    step: row.get(1)?,
                    outcome: row.get(2)?,
                    detail: serde_json::from_str(&row.get::<_, String>(3)?)
                        .unwrap_or(serde_json::Value::Null),
                    at_ms: row.get(4)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Sagas not completed or failed, oldest first.
    pub fn open_sagas(&self) -> Result<Vec<SagaRecord>, CheckoutError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "{SAGA_SELECT} WHERE state NOT IN ('completed', 'failed') ORDER BY created_at_ms"
            ))?;
            let rows = stmt.query_map([], saga_from_row)?;
            rows.collect()
        })
    }

    /// Sagas in one state (newest first), up to `limit`.
    pub fn sagas_in(
        &self,
        state: SagaState,
        limit: usize,
    ) -> Result<Vec<SagaRecord>, CheckoutError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "{SAGA_SELECT} WHERE state = ?1 ORDER BY created_at_ms DESC LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![state.as_str(), limit as i64], saga_from_row)?;
            rows.collect()
        })
    }

    /// An order by id.
    pub fn order(&self, order_id: &str) -> Result<Option<OrderRecord>, CheckoutError> {
        self.read(|conn| {
            conn.prepare_cached(&format!("{ORDER_SELECT} WHERE id = ?1"))?
                .query_row([order_id], order_from_row)
                .optional()
        })
    }

    /// Every order (reconciliation).
    pub fn orders(&self) -> Result<Vec<OrderRecord>, CheckoutError> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare_cached(&format!("{ORDER_SELECT} ORDER BY created_at_ms"))?;
            let rows = stmt.query_map([], order_from_row)?;
            rows.collect()
        })
    }

    /// Every saga that recorded a payment (reconciliation).
    pub fn paid_sagas(&self) -> Result<Vec<SagaRecord>, CheckoutError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "{SAGA_SELECT} WHERE payment_id IS NOT NULL ORDER BY created_at_ms"
            ))?;
            let rows = stmt.query_map([], saga_from_row)?;
            rows.collect()
        })
    }

    /// The saga started under an idempotency key.
    pub fn saga_for_key(&self, key: &str) -> Result<Option<SagaRecord>, CheckoutError> {
        self.read(|conn| {
            conn.prepare_cached(&format!("{SAGA_SELECT} WHERE idempotency_key = ?1"))?
                .query_row([key], saga_from_row)
                .optional()
        })
    }

    /// Stock of a SKU at every location, from the database (committed state).
    pub fn stock(&self, sku: &str) -> Result<Vec<(String, StockLevel)>, CheckoutError> {
        self.read(|conn| {
            // One read transaction: every figure from the same commit (WAL snapshot), or
            // a confirmation between two reads would count units twice.
            let snapshot = conn.unchecked_transaction()?;
            let conn: &Connection = &snapshot;
            let mut stmt = conn.prepare_cached(
                "SELECT location, on_hand FROM stock WHERE sku = ?1 ORDER BY location",
            )?;
            let locations: Vec<(String, i64)> = stmt
                .query_map([sku], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let mut out = Vec::new();
            for (location, on_hand) in locations {
                let mut level = StockLevel {
                    on_hand,
                    ..StockLevel::default()
                };
                let mut holds = conn.prepare_cached(
                    "SELECT lines FROM holds WHERE state = 'held' AND lines LIKE ?1",
                )?;
                let pattern = format!("%\"sku\":\"{sku}\"%");
                for lines in holds.query_map([pattern], |row| row.get::<_, String>(0))? {
                    let lines: Vec<HoldLine> = serde_json::from_str(&lines?).unwrap_or_default();
                    level.reserved += lines
                        .iter()
                        .filter(|l| l.sku == sku && l.location == location)
                        .map(|l| l.quantity)
                        .sum::<i64>();
                }
                level.sold_pending = conn
                    .prepare_cached(
                        "SELECT COALESCE(SUM(quantity), 0) FROM sold
                         WHERE sku = ?1 AND location = ?2 AND absorbed = 0",
                    )?
                    .query_row([sku, &location], |row| row.get(0))?;
                out.push((location, level));
            }
            drop(stmt);
            snapshot.finish()?;
            Ok(out)
        })
    }

    /// Units of a SKU sold through checkout (confirmed), from the database.
    pub fn sold_units(&self, sku: &str) -> Result<i64, CheckoutError> {
        self.read(|conn| {
            conn.prepare_cached("SELECT COALESCE(SUM(quantity), 0) FROM sold WHERE sku = ?1")?
                .query_row([sku], |row| row.get(0))
        })
    }

    /// Outbox events after `after_seq`, up to `limit`.
    pub(crate) fn outbox_after(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String, String)>, CheckoutError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, key, event FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after_seq, limit as i64], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })?;
            rows.collect()
        })
    }

    /// The outbox cursor of a named consumer.
    pub(crate) fn outbox_cursor(&self, consumer: &str) -> Result<i64, CheckoutError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
                .query_row([format!("outbox_cursor:{consumer}")], |row| {
                    row.get::<_, String>(0)
                })
                .optional()?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0))
        })
    }

    /// Moves a consumer's outbox cursor (events up to `seq` were delivered).
    pub(crate) fn set_outbox_cursor(&self, consumer: &str, seq: i64) -> Result<(), CheckoutError> {
        // The cursor is not part of the ledger's invariants: a lost update redelivers
        // (at least once), so it is written outside the writer's groups.
        self.read(|conn| {
            conn.prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![
                format!("outbox_cursor:{consumer}"),
                seq.to_string()
            ])
            .map(|_| ())
        })
    }
}

const SAGA_SELECT: &str =
    "SELECT id, idempotency_key, state, customer, quote, total_minor, currency,
    hold_id, payment_id, order_id, error_code, created_at_ms, updated_at_ms, response_status,
    response_body, request_hash FROM sagas";

fn saga_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SagaRecord> {
    let state: String = row.get(2)?;
    let status: Option<u16> = row.get(13)?;
    let body: Option<String> = row.get(14)?;
    Ok(SagaRecord {
        id: row.get(0)?,
        idempotency_key: row.get(1)?,
        request_hash: row.get(15)?,
        state: state.parse().unwrap_or(SagaState::Compensating),
        customer: row.get(3)?,
        quote_json: row.get(4)?,
        total_minor: row.get(5)?,
        currency: row.get(6)?,
        hold_id: row.get(7)?,
        payment_id: row.get(8)?,
        order_id: row.get(9)?,
        error_code: row.get(10)?,
        created_at_ms: row.get(11)?,
        updated_at_ms: row.get(12)?,
        response: match (status, body) {
            (Some(status), Some(body)) => Some(StoredResponse { status, body }),
            _ => None,
        },
    })
}

const ORDER_SELECT: &str = "SELECT id, saga_id, customer, currency, total_minor, lines, payment_id,
    status, created_at_ms, updated_at_ms FROM orders";

fn order_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<OrderRecord> {
    Ok(OrderRecord {
        id: row.get(0)?,
        saga_id: row.get(1)?,
        customer: row.get(2)?,
        currency: row.get(3)?,
        total_minor: row.get(4)?,
        lines: serde_json::from_str(&row.get::<_, String>(5)?).unwrap_or_default(),
        payment_id: row.get(6)?,
        status: row.get(7)?,
        created_at_ms: row.get(8)?,
        updated_at_ms: row.get(9)?,
    })
}

/// An open hold in memory.
#[derive(Debug, Clone)]
struct OpenHold {
    kind: String,
    saga_id: Option<String>,
    customer: Option<String>,
    lines: Vec<HoldLine>,
    expires_at_ms: i64,
}

/// The writer's in-memory view; the database is the truth it is rebuilt from.
#[derive(Debug, Default)]
struct View {
    stock: HashMap<(String, String), StockLevel>,
    holds: HashMap<String, OpenHold>,
    /// (expires_at_ms, hold id) of open holds, for the sweeper.
    expiries: BTreeSet<(i64, String)>,
    /// Units held or bought per (SKU, customer), for per-customer limits.
    customer_units: HashMap<(String, String), i64>,
    /// Redemptions held or committed per promotion, per (promotion, customer) and per
    /// (promotion, code).
    coupon_total: HashMap<String, u64>,
    coupon_customer: HashMap<(String, String), u64>,
    coupon_code: HashMap<(String, String), u64>,
    saga_states: HashMap<SagaState, u64>,
    orders: u64,
    oversell: u64,
    feed_cursor: i64,
    open: OpenState,
    flash_sales: HashMap<String, FlashSale>,
    /// Step numbers of sagas touched since the last reload.
    step_seq: HashMap<String, i64>,
}

struct Writer {
    conn: Connection,
    view: View,
    feed_db: Option<PathBuf>,
    feed_conn: Option<Connection>,
    published: Arc<Mutex<Published>>,
    outbox_wake: Arc<tokio::sync::Notify>,
}

fn meta_get(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |row| row.get(0))
        .optional()
}

fn meta_set(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([key, value])?;
    Ok(())
}

impl Writer {
    /// Rebuilds the in-memory view from the database.
    fn reload(&mut self) -> Result<(), CheckoutError> {
        let mut view = View::default();
        let conn = &self.conn;
        {
            let mut stmt = conn.prepare("SELECT sku, location, on_hand FROM stock")?;
            for row in stmt.query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })? {
                let (sku, location, on_hand) = row?;
                view.stock.entry((sku, location)).or_default().on_hand = on_hand;
            }
            let mut stmt = conn.prepare(
                "SELECT id, kind, saga_id, customer, lines, expires_at_ms FROM holds WHERE state = 'held'",
            )?;
            for row in stmt.query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, Option<String>>(2)?,
                    row.get::<_, Option<String>>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, i64>(5)?,
                ))
            })? {
                let (id, kind, saga_id, customer, lines, expires_at_ms) = row?;
                let lines: Vec<HoldLine> = serde_json::from_str(&lines)
                    .map_err(|e| CheckoutError::Storage(format!("hold {id}: {e}")))?;
                for line in &lines {
                    view.stock
                        .entry((line.sku.clone(), line.location.clone()))
                        .or_default()
                        .reserved += line.quantity;
                    if let Some(customer) = &customer {
                        *view
                            .customer_units
                            .entry((line.sku.clone(), customer.clone()))
                            .or_default() += line.quantity;
                    }
                }
                view.expiries.insert((expires_at_ms, id.clone()));
                view.holds.insert(
                    id,
                    OpenHold {
                        kind,
                        saga_id,
                        customer,
                        lines,
                        expires_at_ms,
                    },
                );
            }
            let mut stmt =
                conn.prepare("SELECT sku, location, quantity, customer, absorbed FROM sold")?;
            for row in stmt.query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, Option<String>>(3)?,
                    row.get::<_, bool>(4)?,
                ))
            })? {
                let (sku, location, quantity, customer, absorbed) = row?;
                if !absorbed {
                    view.stock
                        .entry((sku.clone(), location))
                        .or_default()
                        .sold_pending += quantity;
                }
                if let Some(customer) = customer {
                    *view.customer_units.entry((sku, customer)).or_default() += quantity;
                }
            }
            let mut stmt = conn.prepare(
                "SELECT promotion_id, code, customer FROM redemptions WHERE state IN ('held', 'committed')",
            )?;
            for row in stmt.query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, Option<String>>(2)?,
                ))
            })? {
                let (promotion_id, code, customer) = row?;
                *view.coupon_total.entry(promotion_id.clone()).or_default() += 1;
                *view
                    .coupon_code
                    .entry((promotion_id.clone(), code))
                    .or_default() += 1;
                if let Some(customer) = customer {
                    *view
                        .coupon_customer
                        .entry((promotion_id, customer))
                        .or_default() += 1;
                }
            }
            let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM sagas GROUP BY state")?;
            for row in stmt.query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })? {
                let (state, count) = row?;
                if let Ok(state) = state.parse() {
                    view.saga_states.insert(state, count as u64);
                }
            }
            view.orders = conn.query_row("SELECT COUNT(*) FROM orders", [], |row| {
                row.get::<_, i64>(0)
            })? as u64;
        }
        view.feed_cursor = meta_get(conn, "feed_cursor")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        view.oversell = meta_get(conn, "oversell")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if let Some(open) = meta_get(conn, "open_state")? {
            view.open = serde_json::from_str(&open).unwrap_or_default();
        }
        if let Some(sales) = meta_get(conn, "flash_sales")? {
            let sales: Vec<FlashSale> = serde_json::from_str(&sales).unwrap_or_default();
            view.flash_sales = sales.into_iter().map(|s| (s.sku.clone(), s)).collect();
        }
        self.view = view;
        Ok(())
    }

    fn publish(&self) {
        let view = &self.view;
        let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        published.counters = LedgerCounters {
            active_reservations: view.holds.len() as u64,
            reserved_units: view.stock.values().map(|s| s.reserved.max(0) as u64).sum(),
            oversell: view.oversell,
            orders: view.orders,
            sagas_by_state: SagaState::ALL
                .iter()
                .map(|s| (*s, view.saga_states.get(s).copied().unwrap_or(0)))
                .collect(),
            feed_cursor: view.feed_cursor,
        };
        published.open = view.open.clone();
        published.flash_sales = view.flash_sales.clone();
    }

    fn run(mut self, commands_rx: mpsc::Receiver<Command>, poll: Duration) {
        let mut next_feed_poll = Instant::now() + poll;
        loop {
            let first = match commands_rx.recv_timeout(poll) {
                Ok(command) => Some(command),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut group: Vec<Command> = first.into_iter().collect();
            while group.len() < MAX_GROUP {
                match commands_rx.try_recv() {
                    Ok(command) => group.push(command),
                    Err(_) => break,
                }
            }
            let poll_feed = Instant::now() >= next_feed_poll
                || group.iter().any(|c| matches!(c, Command::SyncFeed { .. }));
            if group.is_empty() && !poll_feed {
                continue;
            }
            if poll_feed {
                next_feed_poll = Instant::now() + poll;
            }
            let commands = group.len();
            match self.write_group(group, poll_feed) {
                Ok(()) => debug!(commands, "ledger group committed"),
                Err(err) => {
                    error!(error = %err, commands, "ledger group failed; nothing of it was stored")
                }
            }
        }
        info!("checkout ledger stopped");
    }

    fn write_group(&mut self, group: Vec<Command>, poll_feed: bool) -> Result<(), CheckoutError> {
        let now = now_ms();
        let mut finishes: Vec<Finish> = Vec::with_capacity(group.len());
        let mut outbox = false;
        let result = (|| -> Result<(), CheckoutError> {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            if poll_feed {
                apply_feed(
                    &tx,
                    &mut self.view,
                    &mut self.feed_conn,
                    self.feed_db.as_deref(),
                )?;
            }
            for command in group {
                let (finish, wrote_event) = apply(&tx, &mut self.view, command, now)?;
                outbox |= wrote_event;
                finishes.push(finish);
            }
            tx.commit()?;
            Ok(())
        })();
        match &result {
            Ok(()) => {
                self.publish();
                if outbox {
                    self.outbox_wake.notify_one();
                }
                for finish in finishes {
                    finish(None);
                }
            }
            Err(err) => {
                if let Err(reload) = self.reload() {
                    error!(error = %reload, "reloading the ledger view failed");
                }
                self.publish();
                for finish in finishes {
                    finish(Some(err));
                }
            }
        }
        result
    }

    fn sync_feed_now(&mut self) -> Result<(), CheckoutError> {
        let tx = self.conn.transaction()?;
        apply_feed(
            &tx,
            &mut self.view,
            &mut self.feed_conn,
            self.feed_db.as_deref(),
        )?;
        tx.commit()?;
        Ok(())
    }
}

/// Applies inventory and sales events accepted since the cursor, and moves it.
fn apply_feed(
    tx: &Transaction<'_>,
    view: &mut View,
    feed_conn: &mut Option<Connection>,
    feed_db: Option<&Path>,
) -> Result<(), CheckoutError> {
    let Some(feed_db) = feed_db else {
        return Ok(());
    };
    if feed_conn.is_none() {
        if !feed_db.exists() {
            return Ok(());
        }
        let conn = Connection::open_with_flags(
            feed_db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        *feed_conn = Some(conn);
    }
    let conn = feed_conn.as_ref().expect("opened above");
    let exists: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'events'",
        [],
        |row| row.get(0),
    )?;
    if !exists {
        return Ok(());
    }
    let max_seq: i64 = conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |row| {
        row.get(0)
    })?;
    if max_seq <= view.feed_cursor {
        return Ok(());
    }
    // Bounded batches keep one group's transaction short; the next poll continues.
    let upto = max_seq.min(view.feed_cursor + 50_000);
    let mut stmt = conn.prepare_cached(
        "SELECT seq, feed, body FROM events
         WHERE seq > ?1 AND seq <= ?2 AND feed IN ('inventory', 'sales') ORDER BY seq",
    )?;
    let rows: Vec<(i64, String, String)> = stmt
        .query_map([view.feed_cursor, upto], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut touched: BTreeSet<(String, String)> = BTreeSet::new();
    for (seq, feed, body) in rows {
        let Ok(kind) = feed.parse::<FeedKind>() else {
            continue;
        };
        let event = match parse_event(kind, body.as_bytes()) {
            Ok(event) => event,
            Err(err) => {
                warn!(seq, error = %err, "stored feed event does not parse; skipped by checkout");
                continue;
            }
        };
        match event {
            FeedEvent::Inventory(inventory) => {
                let key = (inventory.sku.to_string(), inventory.store.to_string());
                let level = view.stock.entry(key.clone()).or_default();
                level.on_hand = match inventory.kind {
                    InventoryKind::OnHand => inventory.quantity,
                    InventoryKind::StockIn => level.on_hand + inventory.quantity,
                    InventoryKind::StockOut => (level.on_hand - inventory.quantity).max(0),
                };
                touched.insert(key);
            }
            FeedEvent::Sales(sale) if sale.kind.is_sale() => {
                let sku = sale.sku.to_string();
                let own = sale
                    .event_id
                    .strip_prefix(SALES_EVENT_PREFIX)
                    .and_then(|rest| rest.split_once(':'))
                    .map(|(order_id, _)| order_id.to_owned());
                let mut absorbed = None;
                if let Some(order_id) = own {
                    absorbed = tx
                        .prepare_cached(
                            "SELECT location, quantity FROM sold
                             WHERE order_id = ?1 AND sku = ?2 AND absorbed = 0",
                        )?
                        .query_row([&order_id, &sku], |row| {
                            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                        })
                        .optional()?;
                    if absorbed.is_some() {
                        tx.prepare_cached(
                            "UPDATE sold SET absorbed = 1 WHERE order_id = ?1 AND sku = ?2",
                        )?
                        .execute([&order_id, &sku])?;
                    }
                }
                match absorbed {
                    Some((location, quantity)) => {
                        let key = (sku, location);
                        let level = view.stock.entry(key.clone()).or_default();
                        level.sold_pending -= quantity;
                        level.on_hand = (level.on_hand - quantity).max(0);
                        touched.insert(key);
                    }
                    None => {
                        // A till sale (or ours, already absorbed): the pipeline's rule,
                        // the store's count if it has one, else the chain-wide one.
                        let store = sale.store.to_string();
                        let key = if view.stock.contains_key(&(sku.clone(), store.clone())) {
                            Some((sku, store))
                        } else if view.stock.contains_key(&(sku.clone(), "*".to_owned())) {
                            Some((sku, "*".to_owned()))
                        } else {
                            None
                        };
                        if let Some(key) = key {
                            let level = view.stock.get_mut(&key).expect("checked");
                            level.on_hand = (level.on_hand - sale.quantity).max(0);
                            touched.insert(key);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    for key in touched {
        let on_hand = view.stock[&key].on_hand;
        tx.prepare_cached(
            "INSERT INTO stock (sku, location, on_hand) VALUES (?1, ?2, ?3)
             ON CONFLICT (sku, location) DO UPDATE SET on_hand = excluded.on_hand",
        )?
        .execute(params![key.0, key.1, on_hand])?;
    }
    view.feed_cursor = upto;
    meta_set(tx, "feed_cursor", &upto.to_string())?;
    Ok(())
}

/// The location a store's units come from.
fn location_for(view: &View, sku: &str, store: &str) -> String {
    if store != "*" && view.stock.contains_key(&(sku.to_owned(), store.to_owned())) {
        store.to_owned()
    } else {
        "*".to_owned()
    }
}

/// Who a reservation is for.
#[derive(Debug, Clone, Copy)]
struct Owner<'a> {
    customer: Option<&'a str>,
    /// `checkout`, `reservation` or `purchase_token`.
    kind: &'a str,
    saga_id: Option<&'a str>,
}

/// Checks and applies a reservation in memory and in the database.
fn reserve(
    tx: &Transaction<'_>,
    view: &mut View,
    owner: Owner<'_>,
    wanted: &[WantedLine],
    ttl_ms: i64,
    now: i64,
) -> Result<Result<Hold, CheckoutError>, CheckoutError> {
    let Owner {
        customer,
        kind,
        saga_id,
    } = owner;
    // Lines of one SKU are summed: two lines may not each pass against the same units.
    let mut lines: Vec<HoldLine> = Vec::with_capacity(wanted.len());
    for line in wanted {
        if line.quantity <= 0 {
            return Ok(Err(CheckoutError::InvalidRequest(format!(
                "quantity of {} must be at least 1",
                line.sku
            ))));
        }
        let location = location_for(view, &line.sku, &line.store);
        match lines
            .iter_mut()
            .find(|l| l.sku == line.sku && l.location == location)
        {
            Some(existing) => existing.quantity += line.quantity,
            None => lines.push(HoldLine {
                sku: line.sku.clone(),
                location,
                quantity: line.quantity,
            }),
        }
    }
    for line in &lines {
        if let Some(sale) = view.flash_sales.get(&line.sku).filter(|s| s.is_active(now)) {
            let Some(customer) = customer else {
                return Ok(Err(CheckoutError::CustomerRequired(line.sku.clone())));
            };
            let already = view
                .customer_units
                .get(&(line.sku.clone(), customer.to_owned()))
                .copied()
                .unwrap_or(0);
            if already + line.quantity > sale.per_customer_limit {
                return Ok(Err(CheckoutError::CustomerLimit {
                    sku: line.sku.clone(),
                    limit: sale.per_customer_limit,
                    already,
                }));
            }
        }
        let level = view
            .stock
            .get(&(line.sku.clone(), line.location.clone()))
            .copied()
            .unwrap_or_default();
        if level.available() < line.quantity {
            return Ok(Err(CheckoutError::InsufficientStock {
                sku: line.sku.clone(),
                requested: line.quantity,
                available: level.available().max(0),
            }));
        }
    }
    for line in &lines {
        let level = view
            .stock
            .entry((line.sku.clone(), line.location.clone()))
            .or_default();
        level.reserved += line.quantity;
        // The invariant the whole ledger exists for; counted, not assumed.
        if level.reserved + level.sold_pending > level.on_hand {
            view.oversell += 1;
            error!(sku = %line.sku, location = %line.location, "oversell: reservation beyond stock");
            debug_assert!(false, "oversell on {}", line.sku);
            meta_set(tx, "oversell", &view.oversell.to_string())?;
        }
        if let Some(customer) = customer {
            *view
                .customer_units
                .entry((line.sku.clone(), customer.to_owned()))
                .or_default() += line.quantity;
        }
    }
    let id = new_id(if kind == "purchase_token" { "pt" } else { "rs" });
    let expires_at_ms = now.saturating_add(ttl_ms.max(1));
    tx.prepare_cached(
        "INSERT INTO holds (id, kind, saga_id, customer, lines, created_at_ms, expires_at_ms, state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'held')",
    )?
    .execute(params![
        id,
        kind,
        saga_id,
        customer,
        serde_json::to_string(&lines).expect("lines serialise"),
        now,
        expires_at_ms
    ])?;
    view.expiries.insert((expires_at_ms, id.clone()));
    view.holds.insert(
        id.clone(),
        OpenHold {
            kind: kind.to_owned(),
            saga_id: saga_id.map(str::to_owned),
            customer: customer.map(str::to_owned),
            lines: lines.clone(),
            expires_at_ms,
        },
    );
    Ok(Ok(Hold {
        id,
        lines,
        expires_at_ms,
    }))
}

/// Closes an open hold: `released`, `expired`, `converted` or `confirmed`. The units
/// leave `reserved`; a confirmation moves them to `sold_pending` (done by the caller).
fn close_hold(
    tx: &Transaction<'_>,
    view: &mut View,
    hold_id: &str,
    state: &str,
    now: i64,
) -> Result<Option<OpenHold>, CheckoutError> {
    let Some(hold) = view.holds.remove(hold_id) else {
        return Ok(None);
    };
    view.expiries
        .remove(&(hold.expires_at_ms, hold_id.to_owned()));
    for line in &hold.lines {
        if let Some(level) = view
            .stock
            .get_mut(&(line.sku.clone(), line.location.clone()))
        {
            level.reserved -= line.quantity;
        }
        if state != "confirmed" {
            if let Some(customer) = &hold.customer {
                if let Some(units) = view
                    .customer_units
                    .get_mut(&(line.sku.clone(), customer.clone()))
                {
                    *units -= line.quantity;
                }
            }
        }
    }
    tx.prepare_cached("UPDATE holds SET state = ?2, closed_at_ms = ?3 WHERE id = ?1")?
        .execute(params![hold_id, state, now])?;
    Ok(Some(hold))
}

fn outbox(tx: &Transaction<'_>, event: &CheckoutEvent) -> Result<(), CheckoutError> {
    tx.prepare_cached("INSERT INTO outbox (key, event) VALUES (?1, ?2)")?
        .execute(params![
            event.key(),
            serde_json::to_string(event).expect("event serialises")
        ])?;
    Ok(())
}

/// Logs a saga step and queues its event: what every transition records.
fn log_and_emit(
    tx: &Transaction<'_>,
    view: &mut View,
    (saga_id, now): (&str, i64),
    (step, outcome, detail): (&str, &str, serde_json::Value),
    (kind, event_detail): (&str, serde_json::Value),
) -> Result<(), CheckoutError> {
    log_step(tx, view, saga_id, step, outcome, &detail, now)?;
    outbox(tx, &CheckoutEvent::new(kind, saga_id, event_detail, now))
}

/// Keeps the answer a saga gives from now on (idempotent replays get it).
fn store_response(
    tx: &Transaction<'_>,
    saga_id: &str,
    response: &StoredResponse,
) -> Result<(), CheckoutError> {
    tx.prepare_cached("UPDATE sagas SET response_status = ?2, response_body = ?3 WHERE id = ?1")?
        .execute(params![saga_id, response.status, response.body])?;
    Ok(())
}

fn log_step(
    tx: &Transaction<'_>,
    view: &mut View,
    saga_id: &str,
    step: &str,
    outcome: &str,
    detail: &serde_json::Value,
    now: i64,
) -> Result<(), CheckoutError> {
    let seq = match view.step_seq.get(saga_id) {
        Some(seq) => seq + 1,
        None => {
            tx.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM saga_steps WHERE saga_id = ?1")?
                .query_row([saga_id], |row| row.get::<_, i64>(0))?
                + 1
        }
    };
    view.step_seq.insert(saga_id.to_owned(), seq);
    tx.prepare_cached(
        "INSERT INTO saga_steps (saga_id, seq, step, outcome, detail, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![saga_id, seq, step, outcome, detail.to_string(), now])?;
    Ok(())
}

fn set_state(
    tx: &Transaction<'_>,
    view: &mut View,
    saga_id: &str,
    from: SagaState,
    to: SagaState,
    now: i64,
) -> Result<(), CheckoutError> {
    tx.prepare_cached("UPDATE sagas SET state = ?2, updated_at_ms = ?3 WHERE id = ?1")?
        .execute(params![saga_id, to.as_str(), now])?;
    if from != to {
        if let Some(count) = view.saga_states.get_mut(&from) {
            *count = count.saturating_sub(1);
        }
        *view.saga_states.entry(to).or_default() += 1;
    }
    Ok(())
}

/// Holds the coupon redemptions of a saga, or says which limit refused one.
fn claim_coupons(
    tx: &Transaction<'_>,
    view: &mut View,
    saga_id: &str,
    customer: Option<&str>,
    claims: &[CouponClaim],
    now: i64,
) -> Result<Result<(), CheckoutError>, CheckoutError> {
    for claim in claims {
        let Some(rule) = &claim.rule else { continue };
        let total = view
            .coupon_total
            .get(&claim.promotion_id)
            .copied()
            .unwrap_or(0);
        if rule.total_limit.is_some_and(|limit| total >= limit) {
            return Ok(Err(CheckoutError::CouponExhausted {
                code: claim.code.clone(),
                reason: "total_limit",
            }));
        }
        if rule.single_use {
            let used = view
                .coupon_code
                .get(&(claim.promotion_id.clone(), claim.code.clone()))
                .copied()
                .unwrap_or(0);
            if used >= 1 {
                return Ok(Err(CheckoutError::CouponExhausted {
                    code: claim.code.clone(),
                    reason: "single_use",
                }));
            }
        }
        if let Some(limit) = rule.per_customer_limit {
            let Some(customer) = customer else {
                return Ok(Err(CheckoutError::CouponExhausted {
                    code: claim.code.clone(),
                    reason: "customer_required",
                }));
            };
            let used = view
                .coupon_customer
                .get(&(claim.promotion_id.clone(), customer.to_owned()))
                .copied()
                .unwrap_or(0);
            if used >= limit {
                return Ok(Err(CheckoutError::CouponExhausted {
                    code: claim.code.clone(),
                    reason: "per_customer_limit",
                }));
            }
        }
    }
    for claim in claims {
        *view
            .coupon_total
            .entry(claim.promotion_id.clone())
            .or_default() += 1;
        *view
            .coupon_code
            .entry((claim.promotion_id.clone(), claim.code.clone()))
            .or_default() += 1;
        if let Some(customer) = customer {
            *view
                .coupon_customer
                .entry((claim.promotion_id.clone(), customer.to_owned()))
                .or_default() += 1;
        }
        tx.prepare_cached(
            "INSERT INTO redemptions (saga_id, promotion_id, code, customer, state, at_ms)
             VALUES (?1, ?2, ?3, ?4, 'held', ?5)",
        )?
        .execute(params![
            saga_id,
            claim.promotion_id,
            claim.code,
            customer,
            now
        ])?;
    }
    Ok(Ok(()))
}

fn release_coupons(
    tx: &Transaction<'_>,
    view: &mut View,
    saga_id: &str,
    now: i64,
) -> Result<(), CheckoutError> {
    let held: Vec<(String, String, Option<String>)> = tx
        .prepare_cached(
            "SELECT promotion_id, code, customer FROM redemptions WHERE saga_id = ?1 AND state = 'held'",
        )?
        .query_map([saga_id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (promotion_id, code, customer) in held {
        if let Some(n) = view.coupon_total.get_mut(&promotion_id) {
            *n = n.saturating_sub(1);
        }
        if let Some(n) = view.coupon_code.get_mut(&(promotion_id.clone(), code)) {
            *n = n.saturating_sub(1);
        }
        if let Some(customer) = customer {
            if let Some(n) = view.coupon_customer.get_mut(&(promotion_id, customer)) {
                *n = n.saturating_sub(1);
            }
        }
    }
    tx.prepare_cached(
        "UPDATE redemptions SET state = 'released', at_ms = ?2 WHERE saga_id = ?1 AND state = 'held'",
    )?
    .execute(params![saga_id, now])?;
    Ok(())
}

/// A saga's state, hold, order and customer.
type SagaRow = (SagaState, Option<String>, Option<String>, Option<String>);

fn saga_state(tx: &Transaction<'_>, saga_id: &str) -> Result<Option<SagaRow>, CheckoutError> {
    Ok(tx
        .prepare_cached("SELECT state, hold_id, order_id, customer FROM sagas WHERE id = ?1")?
        .query_row([saga_id], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, Option<String>>(1)?,
                row.get::<_, Option<String>>(2)?,
                row.get::<_, Option<String>>(3)?,
            ))
        })
        .optional()?
        .map(|(state, hold, order, customer)| {
            (
                state.parse().unwrap_or(SagaState::Compensating),
                hold,
                order,
                customer,
            )
        }))
}

/// Applies one command; returns how to answer it once the group commits, and whether
/// it wrote an event.
fn apply(
    tx: &Transaction<'_>,
    view: &mut View,
    command: Command,
    now: i64,
) -> Result<(Finish, bool), CheckoutError> {
    match command {
        Command::Reserve {
            customer,
            lines,
            ttl_ms,
            kind,
            reply_tx,
        } => {
            let owner = Owner {
                customer: customer.as_deref(),
                kind,
                saga_id: None,
            };
            let result = reserve(tx, view, owner, &lines, ttl_ms, now)?;
            let mut event = false;
            if let Ok(hold) = &result {
                outbox(
                    tx,
                    &CheckoutEvent::new(
                        if kind == "purchase_token" {
                            "purchase_token.issued"
                        } else {
                            "reservation.created"
                        },
                        &hold.id,
                        serde_json::json!({"hold_id": hold.id, "lines": hold.lines, "expires_at_ms": hold.expires_at_ms, "customer_id": customer}),
                        now,
                    ),
                )?;
                event = true;
            }
            Ok((finish(reply_tx, result), event))
        }
        Command::Release {
            hold_id,
            customer,
            reply_tx,
        } => {
            let owned = view.holds.get(&hold_id).is_some_and(|h| {
                h.saga_id.is_none() && (customer.is_none() || h.customer == customer)
            });
            let released = owned && close_hold(tx, view, &hold_id, "released", now)?.is_some();
            if released {
                outbox(
                    tx,
                    &CheckoutEvent::new(
                        "reservation.released",
                        &hold_id,
                        serde_json::json!({"hold_id": hold_id, "reason": "cancelled"}),
                        now,
                    ),
                )?;
            }
            Ok((finish(reply_tx, Ok(released)), released))
        }
        Command::Begin { begin, reply_tx } => {
            let (outcome, event) = begin_saga(tx, view, *begin, now)?;
            Ok((finish(reply_tx, outcome), event))
        }
        Command::Advance {
            saga_id,
            transitions,
            reply_tx,
        } => {
            let mut result = Ok(());
            for transition in transitions {
                result = advance(tx, view, &saga_id, transition, now)?;
                if result.is_err() {
                    break;
                }
            }
            Ok((finish(reply_tx, result), true))
        }
        Command::Sweep { now_ms, reply_tx } => {
            let expired: Vec<String> = view
                .expiries
                .range(..(now_ms, String::new()))
                .map(|(_, id)| id.clone())
                .collect();
            let mut released = 0;
            for hold_id in expired {
                let Some(hold) = close_hold(tx, view, &hold_id, "expired", now)? else {
                    continue;
                };
                released += 1;
                outbox(
                    tx,
                    &CheckoutEvent::new(
                        "reservation.expired",
                        &hold_id,
                        serde_json::json!({"hold_id": hold_id, "kind": hold.kind, "saga_id": hold.saga_id, "lines": hold.lines}),
                        now,
                    ),
                )?;
            }
            Ok((finish(reply_tx, Ok(released)), released > 0))
        }
        Command::SetOpen { state, reply_tx } => {
            meta_set(
                tx,
                "open_state",
                &serde_json::to_string(&state).expect("serialises"),
            )?;
            outbox(
                tx,
                &CheckoutEvent::new(
                    if state.open {
                        "checkout.opened"
                    } else {
                        "checkout.closed"
                    },
                    "checkout",
                    serde_json::json!({"by": state.by, "reason": state.reason}),
                    now,
                ),
            )?;
            view.open = state;
            Ok((finish(reply_tx, Ok(())), true))
        }
        Command::SetFlashSale {
            sale,
            remove,
            reply_tx,
        } => {
            if remove {
                view.flash_sales.remove(&sale.sku);
            } else {
                view.flash_sales.insert(sale.sku.clone(), sale);
            }
            let mut sales: Vec<&FlashSale> = view.flash_sales.values().collect();
            sales.sort_by(|a, b| a.sku.cmp(&b.sku));
            meta_set(
                tx,
                "flash_sales",
                &serde_json::to_string(&sales).expect("serialises"),
            )?;
            Ok((finish(reply_tx, Ok(())), false))
        }
        Command::SyncFeed { reply_tx } => {
            // The feed was applied at the start of this group.
            Ok((finish(reply_tx, Ok(view.feed_cursor)), false))
        }
    }
}

fn begin_saga(
    tx: &Transaction<'_>,
    view: &mut View,
    begin: BeginSaga,
    now: i64,
) -> Result<(Result<BeginOutcome, CheckoutError>, bool), CheckoutError> {
    let existing = tx
        .prepare_cached(
            "SELECT id, request_hash, state, response_status, response_body FROM sagas
             WHERE idempotency_key = ?1",
        )?
        .query_row([&begin.idempotency_key], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, Option<u16>>(3)?,
                row.get::<_, Option<String>>(4)?,
            ))
        })
        .optional()?;
    if let Some((saga_id, hash, _state, status, body)) = existing {
        let outcome = if hash != begin.request_hash {
            BeginOutcome::KeyReused
        } else {
            match (status, body) {
                (Some(status), Some(body)) => BeginOutcome::Replay(StoredResponse { status, body }),
                _ => BeginOutcome::InProgress { saga_id },
            }
        };
        return Ok((Ok(outcome), false));
    }
    let saga_id = begin.saga_id.clone();
    tx.prepare_cached(
        "INSERT INTO sagas (id, idempotency_key, request_hash, state, customer, quote, total_minor,
         currency, created_at_ms, updated_at_ms)
         VALUES (?1, ?2, ?3, 'reserving', ?4, ?5, ?6, ?7, ?8, ?8)",
    )?
    .execute(params![
        saga_id,
        begin.idempotency_key,
        begin.request_hash,
        begin.customer,
        begin.quote_json,
        begin.total_minor,
        begin.currency,
        now
    ])?;
    *view.saga_states.entry(SagaState::Reserving).or_default() += 1;
    log_step(
        tx,
        view,
        &saga_id,
        "verify_quote",
        "ok",
        &serde_json::json!({"total_minor": begin.total_minor, "currency": begin.currency}),
        now,
    )?;

    // Purchase tokens first: their units go back to the pool and are taken again by
    // this reservation in the same step, so nobody else can take them in between.
    let refusal = (|| -> Result<Option<CheckoutError>, CheckoutError> {
        for token in &begin.purchase_tokens {
            let valid = view.holds.get(token).is_some_and(|h| {
                h.kind == "purchase_token" && h.saga_id.is_none() && h.customer == begin.customer
            });
            if !valid {
                return Ok(Some(CheckoutError::InvalidPurchaseToken(token.clone())));
            }
            let hold = &view.holds[token];
            let covered = hold.lines.iter().all(|line| {
                begin
                    .lines
                    .iter()
                    .any(|w| w.sku == line.sku && w.quantity == line.quantity)
            });
            if !covered {
                return Ok(Some(CheckoutError::InvalidPurchaseToken(token.clone())));
            }
        }
        for line in &begin.lines {
            let needs_token = view
                .flash_sales
                .get(&line.sku)
                .is_some_and(|s| s.is_active(now) && s.require_token);
            let has_token = begin.purchase_tokens.iter().any(|t| {
                view.holds[t]
                    .lines
                    .iter()
                    .any(|l| l.sku == line.sku && l.quantity == line.quantity)
            });
            if needs_token && !has_token {
                return Ok(Some(CheckoutError::PurchaseTokenRequired(line.sku.clone())));
            }
        }
        Ok(None)
    })()?;
    if let Some(err) = refusal {
        return refuse(tx, view, &saga_id, "reserve", err, now);
    }
    let mut converted = Vec::new();
    for token in &begin.purchase_tokens {
        if let Some(hold) = close_hold(tx, view, token, "converted", now)? {
            converted.push((token.clone(), hold));
        }
    }
    let owner = Owner {
        customer: begin.customer.as_deref(),
        kind: "checkout",
        saga_id: Some(&saga_id),
    };
    match reserve(tx, view, owner, &begin.lines, begin.hold_ttl_ms, now)? {
        Ok(hold) => {
            match claim_coupons(
                tx,
                view,
                &saga_id,
                begin.customer.as_deref(),
                &begin.coupons,
                now,
            )? {
                Ok(()) => {}
                Err(err) => {
                    // Undo the reservation in this step; the units go back at once.
                    close_hold(tx, view, &hold.id, "released", now)?;
                    restore_tokens(tx, view, converted, now)?;
                    return refuse(tx, view, &saga_id, "reserve_coupons", err, now);
                }
            }
            tx.prepare_cached("UPDATE sagas SET state = 'reserved', hold_id = ?2 WHERE id = ?1")?
                .execute(params![saga_id, hold.id])?;
            if let Some(count) = view.saga_states.get_mut(&SagaState::Reserving) {
                *count = count.saturating_sub(1);
            }
            *view.saga_states.entry(SagaState::Reserved).or_default() += 1;
            log_and_emit(
                tx,
                view,
                (&saga_id, now),
                (
                    "reserve",
                    "ok",
                    serde_json::json!({"hold_id": hold.id, "lines": hold.lines, "expires_at_ms": hold.expires_at_ms, "coupons": begin.coupons.iter().map(|c| &c.code).collect::<Vec<_>>(), "purchase_tokens": begin.purchase_tokens}),
                ),
                (
                    "checkout.reserved",
                    serde_json::json!({"saga_id": saga_id, "hold_id": hold.id, "lines": hold.lines, "customer_id": begin.customer, "total_minor": begin.total_minor, "currency": begin.currency}),
                ),
            )?;
            Ok((Ok(BeginOutcome::Started { saga_id, hold }), true))
        }
        Err(err) => {
            restore_tokens(tx, view, converted, now)?;
            refuse(tx, view, &saga_id, "reserve", err, now)
        }
    }
}

/// Puts converted purchase tokens back when the checkout that used them was refused.
fn restore_tokens(
    tx: &Transaction<'_>,
    view: &mut View,
    converted: Vec<(String, OpenHold)>,
    _now: i64,
) -> Result<(), CheckoutError> {
    for (id, hold) in converted {
        for line in &hold.lines {
            view.stock
                .entry((line.sku.clone(), line.location.clone()))
                .or_default()
                .reserved += line.quantity;
            if let Some(customer) = &hold.customer {
                *view
                    .customer_units
                    .entry((line.sku.clone(), customer.clone()))
                    .or_default() += line.quantity;
            }
        }
        tx.prepare_cached("UPDATE holds SET state = 'held', closed_at_ms = NULL WHERE id = ?1")?
            .execute([&id])?;
        view.expiries.insert((hold.expires_at_ms, id.clone()));
        view.holds.insert(id, hold);
    }
    Ok(())
}

fn refuse(
    tx: &Transaction<'_>,
    view: &mut View,
    saga_id: &str,
    step: &str,
    err: CheckoutError,
    now: i64,
) -> Result<(Result<BeginOutcome, CheckoutError>, bool), CheckoutError> {
    let response = err.stored_response(Some(saga_id));
    log_step(
        tx,
        view,
        saga_id,
        step,
        "refused",
        &serde_json::json!({"code": err.code(), "message": err.to_string()}),
        now,
    )?;
    tx.prepare_cached(
        "UPDATE sagas SET state = 'failed', error_code = ?2, response_status = ?3, response_body = ?4,
         updated_at_ms = ?5 WHERE id = ?1",
    )?
    .execute(params![saga_id, err.code(), response.status, response.body, now])?;
    if let Some(count) = view.saga_states.get_mut(&SagaState::Reserving) {
        *count = count.saturating_sub(1);
    }
    *view.saga_states.entry(SagaState::Failed).or_default() += 1;
    outbox(
        tx,
        &CheckoutEvent::new(
            "checkout.failed",
            saga_id,
            serde_json::json!({"saga_id": saga_id, "code": err.code(), "step": step}),
            now,
        ),
    )?;
    Ok((
        Ok(BeginOutcome::Refused {
            saga_id: saga_id.to_owned(),
            response,
        }),
        true,
    ))
}

fn advance(
    tx: &Transaction<'_>,
    view: &mut View,
    saga_id: &str,
    transition: Transition,
    now: i64,
) -> Result<Result<(), CheckoutError>, CheckoutError> {
    let Some((state, hold_id, order_id, customer)) = saga_state(tx, saga_id)? else {
        return Ok(Err(CheckoutError::UnknownSaga(saga_id.to_owned())));
    };
    let wrong_state = || {
        Ok(Err(CheckoutError::WrongState {
            saga: saga_id.to_owned(),
            state,
        }))
    };
    match transition {
        Transition::Note {
            step,
            outcome,
            detail,
        } => {
            log_step(tx, view, saga_id, &step, &outcome, &detail, now)?;
        }
        Transition::Paid {
            payment_id,
            amount_minor,
        } => {
            if state != SagaState::Reserved {
                return wrong_state();
            }
            tx.prepare_cached("UPDATE sagas SET payment_id = ?2 WHERE id = ?1")?
                .execute(params![saga_id, payment_id])?;
            set_state(tx, view, saga_id, state, SagaState::Paid, now)?;
            log_and_emit(
                tx,
                view,
                (saga_id, now),
                (
                    "pay",
                    "ok",
                    serde_json::json!({"payment_id": payment_id, "amount_minor": amount_minor}),
                ),
                (
                    "checkout.paid",
                    serde_json::json!({"saga_id": saga_id, "payment_id": payment_id, "amount_minor": amount_minor}),
                ),
            )?;
        }
        Transition::OrderCreated { order_id } => {
            if state != SagaState::Paid {
                return wrong_state();
            }
            let (quote, total, currency, payment_id): (String, i64, String, Option<String>) = tx
                .prepare_cached(
                    "SELECT quote, total_minor, currency, payment_id FROM sagas WHERE id = ?1",
                )?
                .query_row([saga_id], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })?;
            let quote: serde_json::Value = serde_json::from_str(&quote).unwrap_or_default();
            tx.prepare_cached(
                "INSERT INTO orders (id, saga_id, customer, currency, total_minor, lines, payment_id, status,
                 created_at_ms, updated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'created', ?8, ?8)",
            )?
            .execute(params![
                order_id,
                saga_id,
                customer,
                currency,
                total,
                quote["lines"].to_string(),
                payment_id.unwrap_or_default(),
                now
            ])?;
            tx.prepare_cached("UPDATE sagas SET order_id = ?2 WHERE id = ?1")?
                .execute(params![saga_id, order_id])?;
            view.orders += 1;
            set_state(tx, view, saga_id, state, SagaState::Ordered, now)?;
            log_and_emit(
                tx,
                view,
                (saga_id, now),
                (
                    "create_order",
                    "ok",
                    serde_json::json!({"order_id": order_id}),
                ),
                (
                    "order.created",
                    serde_json::json!({"saga_id": saga_id, "order_id": order_id, "total_minor": total, "currency": currency, "customer_id": customer}),
                ),
            )?;
        }
        Transition::Confirmed { response } => {
            if state != SagaState::Ordered {
                return wrong_state();
            }
            let order_id = order_id.unwrap_or_default();
            let hold_id = hold_id.unwrap_or_default();
            let lines = match close_hold(tx, view, &hold_id, "confirmed", now)? {
                Some(hold) => hold.lines,
                None => {
                    // The hold expired and was swept while the saga ran: take the units
                    // again if they are still there, or fail the step (compensation).
                    let lines: String = tx
                        .prepare_cached("SELECT lines FROM holds WHERE id = ?1")?
                        .query_row([&hold_id], |row| row.get(0))?;
                    let lines: Vec<HoldLine> = serde_json::from_str(&lines).unwrap_or_default();
                    let wanted: Vec<WantedLine> = lines
                        .iter()
                        .map(|l| WantedLine {
                            sku: l.sku.clone(),
                            store: l.location.clone(),
                            quantity: l.quantity,
                        })
                        .collect();
                    let owner = Owner {
                        customer: customer.as_deref(),
                        kind: "checkout",
                        saga_id: Some(saga_id),
                    };
                    match reserve(tx, view, owner, &wanted, 60_000, now)? {
                        Ok(hold) => close_hold(tx, view, &hold.id, "confirmed", now)?
                            .map(|h| h.lines)
                            .unwrap_or_default(),
                        Err(err) => {
                            log_step(
                                tx,
                                view,
                                saga_id,
                                "confirm_inventory",
                                "failed",
                                &serde_json::json!({"code": "reservation_lost", "message": err.to_string()}),
                                now,
                            )?;
                            return Ok(Err(CheckoutError::ReservationLost(hold_id)));
                        }
                    }
                }
            };
            for line in &lines {
                view.stock
                    .entry((line.sku.clone(), line.location.clone()))
                    .or_default()
                    .sold_pending += line.quantity;
                tx.prepare_cached(
                    "INSERT INTO sold (order_id, sku, location, quantity, customer, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (order_id, sku) DO UPDATE SET quantity = quantity + excluded.quantity",
                )?
                .execute(params![order_id, line.sku, line.location, line.quantity, customer, now])?;
            }
            tx.prepare_cached("UPDATE redemptions SET state = 'committed', at_ms = ?2 WHERE saga_id = ?1 AND state = 'held'")?
                .execute(params![saga_id, now])?;
            tx.prepare_cached(
                "UPDATE orders SET status = 'confirmed', updated_at_ms = ?2 WHERE id = ?1",
            )?
            .execute(params![order_id, now])?;
            store_response(tx, saga_id, &response)?;
            set_state(tx, view, saga_id, state, SagaState::Confirmed, now)?;
            log_and_emit(
                tx,
                view,
                (saga_id, now),
                (
                    "confirm_inventory",
                    "ok",
                    serde_json::json!({"order_id": order_id, "lines": lines}),
                ),
                (
                    "order.confirmed",
                    serde_json::json!({"saga_id": saga_id, "order_id": order_id, "lines": lines}),
                ),
            )?;
        }
        Transition::Completed { response } => {
            if state != SagaState::Confirmed {
                return wrong_state();
            }
            store_response(tx, saga_id, &response)?;
            set_state(tx, view, saga_id, state, SagaState::Completed, now)?;
            log_and_emit(
                tx,
                view,
                (saga_id, now),
                (
                    "notify",
                    "ok",
                    serde_json::json!({"sales_events": "durable"}),
                ),
                (
                    "checkout.completed",
                    serde_json::json!({"saga_id": saga_id, "order_id": order_id}),
                ),
            )?;
            view.step_seq.remove(saga_id);
        }
        Transition::Compensating { code, detail } => {
            if matches!(state, SagaState::Completed | SagaState::Failed) {
                return wrong_state();
            }
            tx.prepare_cached(
                "UPDATE sagas SET error_code = COALESCE(error_code, ?2) WHERE id = ?1",
            )?
            .execute(params![saga_id, code])?;
            set_state(tx, view, saga_id, state, SagaState::Compensating, now)?;
            log_and_emit(
                tx,
                view,
                (saga_id, now),
                (
                    "compensate",
                    "started",
                    serde_json::json!({"code": code, "from": state.as_str(), "detail": detail}),
                ),
                (
                    "checkout.compensating",
                    serde_json::json!({"saga_id": saga_id, "code": code, "from": state.as_str()}),
                ),
            )?;
        }
        Transition::OrderCancelled => {
            if let Some(order_id) = &order_id {
                tx.prepare_cached(
                    "UPDATE orders SET status = 'cancelled', updated_at_ms = ?2 WHERE id = ?1",
                )?
                .execute(params![order_id, now])?;
            }
            log_and_emit(
                tx,
                view,
                (saga_id, now),
                (
                    "cancel_order",
                    "ok",
                    serde_json::json!({"order_id": order_id}),
                ),
                (
                    "order.cancelled",
                    serde_json::json!({"saga_id": saga_id, "order_id": order_id}),
                ),
            )?;
        }
        Transition::Refunded { refund_id } => {
            log_and_emit(
                tx,
                view,
                (saga_id, now),
                ("refund", "ok", serde_json::json!({"refund_id": refund_id})),
                (
                    "payment.refunded",
                    serde_json::json!({"saga_id": saga_id, "refund_id": refund_id}),
                ),
            )?;
        }
        Transition::Released => {
            if let Some(hold_id) = &hold_id {
                close_hold(tx, view, hold_id, "released", now)?;
            }
            release_coupons(tx, view, saga_id, now)?;
            log_and_emit(
                tx,
                view,
                (saga_id, now),
                ("release", "ok", serde_json::json!({"hold_id": hold_id})),
                (
                    "reservation.released",
                    serde_json::json!({"saga_id": saga_id, "hold_id": hold_id}),
                ),
            )?;
        }
        Transition::Failed { response } => {
            if state == SagaState::Completed {
                return wrong_state();
            }
            store_response(tx, saga_id, &response)?;
            set_state(tx, view, saga_id, state, SagaState::Failed, now)?;
            log_and_emit(
                tx,
                view,
                (saga_id, now),
                (
                    "finish",
                    "failed",
                    serde_json::json!({"status": response.status}),
                ),
                (
                    "checkout.failed",
                    serde_json::json!({"saga_id": saga_id, "status": response.status}),
                ),
            )?;
            view.step_seq.remove(saga_id);
        }
    }
    Ok(Ok(()))
}

impl Ledger {
    /// The newest outbox position (0: none).
    pub(crate) fn last_outbox_seq(&self) -> Result<i64, CheckoutError> {
        self.read(|conn| {
            conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM outbox", [], |row| {
                row.get(0)
            })
        })
    }
}
