//! Benchmark peers and tools; see benches/README.md.
