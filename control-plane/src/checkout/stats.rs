//! Saga states and the counters the admin metrics endpoint reads.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a saga is. The happy path is `reserving → reserved → paid → ordered →
/// confirmed → completed`; any failure goes through `compensating` to `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaState {
    /// The saga row exists; the reservation is being taken (same transaction).
    Reserving,
    /// Units and coupon redemptions held; payment next.
    Reserved,
    /// The gateway charged the quoted total; the order next.
    Paid,
    /// The order exists; the reservation is confirmed next.
    Ordered,
    /// Reservation turned into a sale; sales events and notification next.
    Confirmed,
    /// Done: paid, ordered, confirmed, sales fed back.
    Completed,
    /// Undoing in reverse order: cancel the order, refund, release.
    Compensating,
    /// Ended without an order (refused, declined, or compensated).
    Failed,
}

impl SagaState {
    pub const ALL: [SagaState; 8] = [
        SagaState::Reserving,
        SagaState::Reserved,
        SagaState::Paid,
        SagaState::Ordered,
        SagaState::Confirmed,
        SagaState::Completed,
        SagaState::Compensating,
        SagaState::Failed,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            SagaState::Reserving => "reserving",
            SagaState::Reserved => "reserved",
            SagaState::Paid => "paid",
            SagaState::Ordered => "ordered",
            SagaState::Confirmed => "confirmed",
            SagaState::Completed => "completed",
            SagaState::Compensating => "compensating",
            SagaState::Failed => "failed",
        }
    }

    /// Completed or failed: nothing left to do.
    pub fn is_terminal(&self) -> bool {
        matches!(self, SagaState::Completed | SagaState::Failed)
    }
}

impl fmt::Display for SagaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SagaState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SagaState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown saga state {s:?}"))
    }
}

/// What the ledger counts, as of its last commit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LedgerCounters {
    /// Open reservations (checkout holds and purchase tokens).
    pub active_reservations: u64,
    /// Units those reservations hold.
    pub reserved_units: u64,
    /// Reservations found beyond stock when granted; must stay 0.
    pub oversell: u64,
    /// Orders created (including cancelled ones).
    pub orders: u64,
    /// Sagas per state.
    pub sagas_by_state: Vec<(SagaState, u64)>,
    /// Last event-log position applied to stock.
    pub feed_cursor: i64,
}

/// Everything the admin metrics endpoint shows about checkout: a plain struct.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckoutStats {
    pub open: bool,
    pub active_reservations: u64,
    pub reserved_units: u64,
    /// Must stay 0.
    pub oversell: u64,
    pub orders: u64,
    pub sagas_by_state: Vec<(SagaState, u64)>,
    /// Checkouts running now.
    pub in_flight: u64,
    /// Requests refused by rate limits, by the concurrency cap, and while closed.
    pub rate_limited: u64,
    pub concurrency_refused: u64,
    pub closed_refused: u64,
    /// Sagas the recovery loop finished or compensated, and reservations the sweeper
    /// released.
    pub recovered: u64,
    pub swept: u64,
    /// Findings of the last reconciliation (payments without orders and orders
    /// without payments).
    pub reconciliation_issues: u64,
    /// Events not yet delivered to the bus/Kafka.
    pub outbox_lag: i64,
}
