//! Operators' levers and views: price overrides and kill switches ([`controls`]),
//! promotions managed by the control plane ([`promotions`]), the in-memory read model
//! the admin API answers from ([`board`]), and edge metrics ([`edges`]).

pub mod board;
pub mod controls;
pub mod edges;
pub mod promotions;
