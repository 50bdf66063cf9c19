//! Publishing to several edges, each resynced on its own.
//!
//! [`FanOut`] keeps the full table as published (every entry, by key) so that any one
//! edge that missed updates — it was down, restarted empty, or was loaded by someone
//! else — gets a full snapshot at the current version instead of the delta, while the
//! others carry on with deltas. The pipeline sees one edge that is always in step.

use std::collections::BTreeMap;
use std::sync::Mutex;

use edgeprice_pricing::{PriceEntry, PriceKey};
use edgeprice_schemas::codec::{DeltaData, SnapshotData};
use tracing::{info, warn};

use super::{PublishError, Publisher};

struct Edge {
    publisher: Box<dyn Publisher>,
    /// Whether the edge has every update up to the last published version.
    in_sync: bool,
}

struct Table {
    version: u64,
    created_at_ms: i64,
    entries: BTreeMap<PriceKey, PriceEntry>,
    edges: Vec<Edge>,
}

/// Publishes every update to all its edges; see the module docs.
pub struct FanOut {
    table: Mutex<Table>,
}

impl std::fmt::Debug for FanOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("FanOut")
            .field("version", &table.version)
            .field("edges", &table.edges.len())
            .field("in_sync", &table.edges.iter().filter(|e| e.in_sync).count())
            .finish()
    }
}

impl FanOut {
    /// Fans out to `edges`; none is in sync until the first full snapshot.
    pub fn new(edges: Vec<Box<dyn Publisher>>) -> FanOut {
        FanOut {
            table: Mutex::new(Table {
                version: 0,
                created_at_ms: 0,
                entries: BTreeMap::new(),
                edges: edges
                    .into_iter()
                    .map(|publisher| Edge {
                        publisher,
                        in_sync: false,
                    })
                    .collect(),
            }),
        }
    }

    /// How many edges have every update.
    pub fn edges_in_sync(&self) -> usize {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.edges.iter().filter(|e| e.in_sync).count()
    }
}

impl Table {
    fn snapshot(&self) -> SnapshotData {
        SnapshotData {
            version: self.version,
            created_at_ms: self.created_at_ms,
            promotions: None,
            entries: self.entries.values().cloned().collect(),
        }
    }

    /// Sends the full table to edge `index`; an edge that is already past the version
    /// (loaded by someone else) is left out of sync, and the next update retries.
    fn resync(&mut self, index: usize) {
        let snapshot = self.snapshot();
        let edge = &mut self.edges[index];
        match edge.publisher.publish_snapshot(snapshot) {
            Ok(_) => {
                edge.in_sync = true;
                info!(edge = index, version = self.version, "edge resynced");
            }
            Err(err) => {
                edge.in_sync = false;
                warn!(edge = index, error = %err, code = err.code(), "edge resync failed");
            }
        }
    }
}

impl Publisher for FanOut {
    fn publish_snapshot(&self, snapshot: SnapshotData) -> Result<u64, PublishError> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        // An edge ahead of us (say, restarted from a later persisted version) would
        // refuse the snapshot as stale: start past every edge we hear of.
        let mut version = snapshot.version.max(table.version + 1);
        table.entries = snapshot
            .entries
            .into_iter()
            .map(|e| (e.key.clone(), e))
            .collect();
        table.created_at_ms = snapshot.created_at_ms;
        for _attempt in 0..2 {
            table.version = version;
            let mut highest_seen = None;
            for index in 0..table.edges.len() {
                let full = table.snapshot();
                match table.edges[index].publisher.publish_snapshot(full) {
                    Ok(_) => table.edges[index].in_sync = true,
                    Err(err) => {
                        table.edges[index].in_sync = false;
                        highest_seen = highest_seen.max(err.current_version());
                        warn!(edge = index, error = %err, code = err.code(), "edge refused the snapshot");
                    }
                }
            }
            match highest_seen {
                // Everyone moves past the most advanced edge, in step.
                Some(current) if current >= version => {
                    version = current + 1;
                    for edge in &mut table.edges {
                        edge.in_sync = false;
                    }
                }
                _ => break,
            }
        }
        Ok(table.version)
    }

    fn publish_delta(&self, delta: DeltaData) -> Result<u64, PublishError> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if delta.base_version != table.version {
            // The pipeline and we disagree: it will resync everything.
            return Err(PublishError::VersionConflict {
                current_version: table.version,
            });
        }
        for key in &delta.removals {
            table.entries.remove(key);
        }
        for entry in &delta.upserts {
            table.entries.insert(entry.key.clone(), entry.clone());
        }
        table.version = delta.version;
        table.created_at_ms = delta.created_at_ms;
        for index in 0..table.edges.len() {
            if !table.edges[index].in_sync {
                table.resync(index);
                continue;
            }
            if let Err(err) = table.edges[index].publisher.publish_delta(delta.clone()) {
                warn!(edge = index, error = %err, code = err.code(), "edge missed a delta; resyncing it");
                table.resync(index);
            }
        }
        Ok(table.version)
    }
}
