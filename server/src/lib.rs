//! The edge price server.
//!
//! - [`snapshot`]: the immutable, versioned, structurally shared price table.
//! - [`store`]: the one `ArcSwap` readers load from and the writer thread that builds,
//!   persists and swaps new versions ([`persist`] is its on-disk format).
//! - [`api`]: the HTTP API as plain functions of a request view, shared by every
//!   transport; [`render`] writes its answers.
//! - [`transport`]: choosing a transport; [`http`] is hyper on epoll (the portable
//!   default), [`uring`] is io_uring with multishot receives and batched sends, both
//!   thread per core with `SO_REUSEPORT`; [`h1`] is the HTTP/1.1 codec `uring` uses.
//! - [`quote`]: `POST /v1/quote`, priced carts with signed price locks.
//! - [`metrics`]: contention-free request metrics in Prometheus format.
//! - [`synth`]: synthetic tables for demos and benchmarks.

pub mod api;
pub mod h1;
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
pub mod transport;
pub mod uring;

pub use api::{Api, ApiConfig};
pub use quote::QuoteConfig;
pub use snapshot::Snapshot;
pub use store::{SnapshotStore, Update};
pub use transport::{ServerHandle, Transport};
