//! The edge price server.
//!
//! - [`snapshot`]: the immutable, versioned, structurally shared price table.
//! - [`store`]: the one `ArcSwap` readers load from and the writer thread that builds,
//!   persists and swaps new versions ([`persist`] is its on-disk format).
//! - [`api`]: the HTTP API as plain functions of a request view, shared by every
//!   transport; [`render`] writes its answers.
//! - [`http`]: the hyper transport (thread per core, `SO_REUSEPORT`).
//! - [`quote`]: `POST /v1/quote`, priced carts with signed price locks.
//! - [`metrics`]: contention-free request metrics in Prometheus format.
//! - [`synth`]: synthetic tables for demos and benchmarks.

pub mod api;
pub mod http;
pub mod metrics;
pub mod persist;
pub mod quote;
pub mod render;
pub mod snapshot;
pub mod store;
pub mod synth;
#[cfg(test)]
mod testing;

pub use api::{Api, ApiConfig};
pub use quote::QuoteConfig;
pub use snapshot::Snapshot;
pub use store::{SnapshotStore, Update};
