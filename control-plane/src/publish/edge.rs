//! The in-process edge of embedded mode (`edgeprice up`): updates go straight to the
//! edge's snapshot store, decoded, without HTTP or encoding.

use std::sync::Arc;

use edgeprice_schemas::codec::{DeltaData, SnapshotData};
use edgeprice_server::store::UpdateError;
use edgeprice_server::{SnapshotStore, Update};

use super::{PublishError, Publisher};

/// Publishes to an edge [`SnapshotStore`] in the same process. Each call waits until
/// the edge has swapped the new version in (and persisted it, if it has a data
/// directory).
#[derive(Debug, Clone)]
pub struct InProcessEdge(pub Arc<SnapshotStore>);

fn publish_error(err: UpdateError) -> PublishError {
    match (&err, err.current_version()) {
        (UpdateError::Stale { .. }, Some(current_version)) => {
            PublishError::Stale { current_version }
        }
        (_, Some(current_version)) => PublishError::VersionConflict { current_version },
        (UpdateError::NoBase, None) => PublishError::NoBase,
        (UpdateError::Stopped, None) => PublishError::Unavailable(err.to_string()),
        _ => PublishError::Rejected {
            status: 400,
            code: "rejected".into(),
            message: err.to_string(),
        },
    }
}

impl Publisher for InProcessEdge {
    fn publish_snapshot(&self, snapshot: SnapshotData) -> Result<u64, PublishError> {
        self.0
            .update_blocking(Update::FullData {
                data: snapshot,
                force: false,
            })
            .map(|applied| applied.version)
            .map_err(publish_error)
    }

    fn publish_delta(&self, delta: DeltaData) -> Result<u64, PublishError> {
        self.0
            .update_blocking(Update::DeltaData { data: delta })
            .map(|applied| applied.version)
            .map_err(publish_error)
    }
}
