//! End-to-end tests: real servers on ephemeral loopback ports, real HTTP.

mod support;

mod edge;
mod quote;
mod transport;
