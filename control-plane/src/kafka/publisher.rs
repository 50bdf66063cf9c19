//! Price updates to the compacted topic `edgeprice.price.updates`.

use std::collections::BTreeSet;
use std::sync::Mutex;

use edgeprice_pricing::{PriceEntry, PriceKey};
use edgeprice_schemas::codec::{DeltaData, SnapshotData};
use rdkafka::message::{Header, OwnedHeaders};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use super::producer::{DurableProducer, Outgoing};
use super::{KafkaConfig, KafkaError, VERSION_HEADER};
use crate::publish::{PublishError, Publisher};

/// The value of a message on the updates topic (JSON): one price entry as of a
/// snapshot version. The message key is the entry's price key
/// (`sku@store/channel/segment`); a removed key has a tombstone (null value) instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceUpdate {
    /// The snapshot version this entry belongs to.
    pub snapshot_version: u64,
    /// When the control plane made that version, Unix milliseconds.
    pub created_at_ms: i64,
    pub entry: PriceEntry,
}

#[derive(Debug, Default)]
struct Published {
    /// The version the topic is at; `None` until a full snapshot went out (and again
    /// after a failed write, so that the pipeline resends everything).
    version: Option<u64>,
    /// Keys with a live value on the topic, as far as this process wrote them.
    keys: BTreeSet<PriceKey>,
}

/// A [`Publisher`] to the Kafka updates topic; see the module docs of
/// [`crate::kafka`]. Like an edge, it wants a full snapshot first and deltas whose base
/// is the version it is at.
#[derive(Debug)]
pub struct KafkaPublisher {
    producer: DurableProducer,
    topic: String,
    /// Held across a whole write: versions reach the topic one at a time, in order.
    published: Mutex<Published>,
}

impl KafkaPublisher {
    /// A publisher to `config.updates_topic`. Connecting is lazy: an unreachable broker
    /// shows up as [`PublishError::Unavailable`] on the first publish.
    pub fn new(config: &KafkaConfig) -> Result<KafkaPublisher, KafkaError> {
        if config.updates_topic.is_empty() {
            return Err(KafkaError::Config("updates_topic is empty".into()));
        }
        Ok(KafkaPublisher {
            producer: DurableProducer::new(config)?,
            topic: config.updates_topic.clone(),
            published: Mutex::new(Published::default()),
        })
    }

    /// Writes `upserts` and tombstones for `removals` as version `version`, waiting for
    /// every acknowledgement.
    fn write(
        &self,
        version: u64,
        created_at_ms: i64,
        upserts: &[PriceEntry],
        removals: &[PriceKey],
    ) -> Result<(), PublishError> {
        let values = upserts
            .iter()
            .map(|entry| {
                let update = PriceUpdate {
                    snapshot_version: version,
                    created_at_ms,
                    entry: entry.clone(),
                };
                let value = serde_json::to_vec(&update).map_err(|err| PublishError::Rejected {
                    status: 500,
                    code: "encoding_failed".into(),
                    message: err.to_string(),
                })?;
                Ok((entry.key.to_string(), Some(value)))
            })
            .collect::<Result<Vec<_>, PublishError>>()?;
        // Removals first: a key both removed and upserted in one version ends up live,
        // as it does at an edge.
        let messages: Vec<(String, Option<Vec<u8>>)> = removals
            .iter()
            .map(|key| (key.to_string(), None))
            .chain(values)
            .collect();
        let version_text = version.to_string();
        self.producer
            .send_all(messages.iter().map(|(key, value)| Outgoing {
                topic: &self.topic,
                key: key.as_bytes(),
                payload: value.as_deref(),
                headers: OwnedHeaders::new().insert(Header {
                    key: VERSION_HEADER,
                    value: Some(version_text.as_str()),
                }),
            }))
            .map(|sent| debug!(topic = %self.topic, version, messages = sent, "price updates produced"))
            .map_err(|reason| {
                warn!(topic = %self.topic, version, reason = %reason, "producing price updates failed");
                PublishError::Unavailable(format!("kafka topic {}: {reason}", self.topic))
            })
    }
}

impl Publisher for KafkaPublisher {
    fn publish_snapshot(&self, snapshot: SnapshotData) -> Result<u64, PublishError> {
        let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(current_version) = published.version {
            if snapshot.version <= current_version {
                return Err(PublishError::Stale { current_version });
            }
        }
        let live: BTreeSet<PriceKey> = snapshot.entries.iter().map(|e| e.key.clone()).collect();
        let gone: Vec<PriceKey> = published.keys.difference(&live).cloned().collect();
        // Until it is known to have worked, the topic may hold any of both key sets.
        published.version = None;
        published.keys.extend(live.iter().cloned());
        self.write(
            snapshot.version,
            snapshot.created_at_ms,
            &snapshot.entries,
            &gone,
        )?;
        published.keys = live;
        published.version = Some(snapshot.version);
        Ok(snapshot.version)
    }

    fn publish_delta(&self, delta: DeltaData) -> Result<u64, PublishError> {
        let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        match published.version {
            None => return Err(PublishError::NoBase),
            Some(current_version) if current_version != delta.base_version => {
                return Err(PublishError::VersionConflict { current_version });
            }
            Some(_) => {}
        }
        published.version = None;
        published
            .keys
            .extend(delta.upserts.iter().map(|e| e.key.clone()));
        self.write(
            delta.version,
            delta.created_at_ms,
            &delta.upserts,
            &delta.removals,
        )?;
        for key in &delta.removals {
            if !delta.upserts.iter().any(|e| &e.key == key) {
                published.keys.remove(key);
            }
        }
        published.version = Some(delta.version);
        Ok(delta.version)
    }
}
