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
//!   [`publish::HttpPublisher`]) with version-conflict resync.
//!
//! Embedding: start an [`store::Ingestor`] and a [`pipeline::Pipeline`] on the same data
//! directory; feed raw events to the ingestor; call
//! [`pipeline::Pipeline::process_batch`] from one thread whenever the ingestor reports a
//! commit.

pub mod audit;
pub mod feeds;
pub mod pipeline;
pub mod publish;
pub mod store;
