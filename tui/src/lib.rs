//! The operator console: live metrics, overrides and kill switches over the admin API.
//!
//! Not built yet (see the admin API and operator console issue).
