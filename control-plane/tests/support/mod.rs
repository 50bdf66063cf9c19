//! Shared by the integration tests.

use std::sync::Arc;

use edgeprice_control::publish::{PublishError, Publisher};
use edgeprice_schemas::codec::{DeltaData, SnapshotData};
use edgeprice_server::store::UpdateError;
use edgeprice_server::{SnapshotStore, Update};

/// The in-process publisher of `edgeprice up`: applies updates to the edge's store.
pub struct EdgePublisher(pub Arc<SnapshotStore>);

fn publish_error(err: UpdateError) -> PublishError {
    match (&err, err.current_version()) {
        (UpdateError::Stale { .. }, Some(current_version)) => {
            PublishError::Stale { current_version }
        }
        (_, Some(current_version)) => PublishError::VersionConflict { current_version },
        (UpdateError::NoBase, None) => PublishError::NoBase,
        (UpdateError::Stopped | UpdateError::Persist(_), None) => {
            PublishError::Unavailable(err.to_string())
        }
        _ => PublishError::Rejected {
            status: 400,
            code: "rejected".into(),
            message: err.to_string(),
        },
    }
}

impl Publisher for EdgePublisher {
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
