//! The control plane: feeds in, the decision pipeline with its guardrails, publishing
//! snapshot deltas to the edges, the admin API and the checkout saga.
//!
//! Built so far:
//! - [`feeds`]: event types of the six feeds, validation with error codes;
//! - [`store`]: SQLite (WAL) — the accepted-event log with `event_id` dedup and a
//!   group-commit ingest writer, dead letters, per-SKU state;
//! - [`pipeline`]: normalise/enrich → features → candidate → guardrails → forecast →
//!   promotion policy → decision record → publish, configurable per category;
//! - [`audit`]: the hash-chained decision log and its verification;
//! - [`publish`]: the [`publish::Publisher`] trait (in-process edge or
//!   [`publish::HttpPublisher`]) with version-conflict resync;
//! - [`runtime`]: [`runtime::ControlPlane`], the ingest writer and the pipeline on
//!   their threads;
//! - [`http`]: `POST /v1/feeds/{feed}` with per-source tokens and rate limits.
//! - [`checkout`]: inventory reservations (one group-commit ledger writer, stock from
//!   the feed log), the checkout saga with its durable step log, recovery, sweeper and
//!   reconciliation, payments behind a trait, flash-sale limits, checkout events; its
//!   routes are [`http::checkout`] ([`http::IngestServer::start_with_checkout`]).
//!
//! Embedding (`edgeprice up`): call [`runtime::ControlPlane::start`] with
//! [`publish::InProcessEdge`] around the edge's snapshot store, and serve feeds with
//! [`http::IngestServer::start`] on [`runtime::ControlPlane::ingestor`].

pub mod admin;
pub mod audit;
pub mod checkout;
pub mod feeds;
pub mod http;
pub mod kafka;
pub mod pipeline;
pub mod publish;
pub mod runtime;
pub mod sqlite;
pub mod store;

/// The wall clock, Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
