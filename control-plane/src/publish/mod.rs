//! Publishing decisions to the edges as versioned snapshots and deltas.
//!
//! The control plane numbers versions; each delta names the version it applies to
//! (`base_version`). An edge that is somewhere else answers with its current version
//! ([`PublishError::VersionConflict`], [`PublishError::Stale`]) or says it has no
//! snapshot yet ([`PublishError::NoBase`]); the pipeline then sends a full snapshot of
//! every SKU's current entry at a version past the edge's, and carries on with deltas.
//! Because every upsert carries a SKU's whole entry, such a resync loses nothing.
//!
//! [`Publisher`] is implemented by [`InProcessEdge`] for the edge in the same process
//! (embedded mode: decoded updates go to the edge's snapshot store) and by
//! [`HttpPublisher`] for a remote edge (`POST /v1/admin/snapshot[/delta]` with the
//! flatbuffer encoding); [`FanOut`] serves several edges and resyncs each on its own.

mod edge;
mod fanout;
mod http;

pub use edge::InProcessEdge;
pub use fanout::FanOut;
pub use http::HttpPublisher;

use edgeprice_schemas::codec::{DeltaData, SnapshotData};

/// Why an edge did not take an update.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The delta's base is not the edge's version; resync with a full snapshot.
    #[error("edge is at version {current_version}, not the delta's base")]
    VersionConflict { current_version: u64 },
    /// The snapshot is not newer than the edge's; resync past `current_version`.
    #[error("edge already has version {current_version} or newer")]
    Stale { current_version: u64 },
    /// The edge has no snapshot to apply a delta to.
    #[error("edge has no snapshot loaded")]
    NoBase,
    /// The edge refused the content; retrying the same update will not help.
    #[error("edge refused the update ({status} {code}): {message}")]
    Rejected {
        status: u16,
        code: String,
        message: String,
    },
    /// The edge could not be reached or failed; retrying later may help.
    #[error("edge unavailable: {0}")]
    Unavailable(String),
}

impl PublishError {
    /// The edge's version, when it told us.
    pub fn current_version(&self) -> Option<u64> {
        match self {
            PublishError::VersionConflict { current_version }
            | PublishError::Stale { current_version } => Some(*current_version),
            _ => None,
        }
    }

    /// The API error code.
    pub fn code(&self) -> &str {
        match self {
            PublishError::VersionConflict { .. } => "version_conflict",
            PublishError::Stale { .. } => "stale_snapshot",
            PublishError::NoBase => "no_base_snapshot",
            PublishError::Rejected { code, .. } => code,
            PublishError::Unavailable(_) => "edge_unavailable",
        }
    }
}

/// Where decisions go. Calls are made from the pipeline thread, one at a time, and may
/// block (a remote publisher waits for the edge's answer).
pub trait Publisher: Send {
    /// Replaces the edge's table; returns the version the edge is at afterwards.
    fn publish_snapshot(&self, snapshot: SnapshotData) -> Result<u64, PublishError>;
    /// Applies a delta; returns the version the edge is at afterwards.
    fn publish_delta(&self, delta: DeltaData) -> Result<u64, PublishError>;
}

impl<P: Publisher + Sync> Publisher for std::sync::Arc<P> {
    fn publish_snapshot(&self, snapshot: SnapshotData) -> Result<u64, PublishError> {
        (**self).publish_snapshot(snapshot)
    }
    fn publish_delta(&self, delta: DeltaData) -> Result<u64, PublishError> {
        (**self).publish_delta(delta)
    }
}
