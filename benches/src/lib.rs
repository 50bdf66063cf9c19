//! Benchmark peers and tools; see `benches/README.md`.
//!
//! The binaries in `src/bin/` are the load-benchmark harness: two peer servers that the
//! edge is measured against (`peer_hyper`, `peer_redis_http`), an open-loop load
//! generator (`loadgen`) and a snapshot-delta pusher (`delta_pusher`). This library
//! holds what more than one of them needs.

pub mod cpu;
pub mod feedgen;
pub mod latency;
pub mod serve;
pub mod target;
