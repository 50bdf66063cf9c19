//! The control plane: feeds in, the decision pipeline with its guardrails, publishing
//! snapshot deltas to the edges, the admin API and the checkout saga.
//!
//! Not built yet (see the control-plane, checkout and admin issues). Until it is, edges
//! are fed by `edgeprice snapshot generate` and the edge's snapshot admin endpoints.
