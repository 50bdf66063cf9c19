//! Wire formats shared by the edge, the control plane and the tools.
//!
//! `fbs/price.fbs` is the source of truth for the binary formats; the Rust code in
//! [`generated`] is made from it by `schemas/generate.sh` (flatc 25.x) and checked for
//! staleness in CI. [`codec`] converts between those tables and the domain types of
//! `edgeprice-pricing`, validating everything that comes off the wire.

#[allow(clippy::all, missing_debug_implementations, unsafe_op_in_unsafe_fn)]
#[rustfmt::skip]
pub mod generated {
    include!("generated/price_generated.rs");
}

pub mod admin;
pub mod codec;

pub use generated::edgeprice::fb;
