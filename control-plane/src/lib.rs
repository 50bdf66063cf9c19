//! The control plane: feeds in, the decision pipeline with its guardrails, publishing
//! snapshot deltas to the edges, the admin API and the checkout saga.
//!
//! Built so far: [`feeds`] (event types and validation) and [`store`] (SQLite: the
//! accepted-event log with group commit, dead letters, per-SKU state), [`audit`]
//! (the hash-chained decision log and its verification).

pub mod audit;
pub mod feeds;
pub mod store;
