//! Kafka for distributed mode: feeds in from `edgeprice.feed.{feed}`, price updates out
//! to the compacted topic `edgeprice.price.updates` (librdkafka through `rdkafka`).
//!
//! - [`FeedConsumer`]: one consumer-group member on its own thread (polling blocks, so
//!   it stays out of async code). Each message's payload is one JSON event, submitted
//!   to the [`crate::store::Ingestor`] with the feed named by its topic. Offsets are
//!   committed by hand (`enable.auto.commit=false`) and only once the ingestor has
//!   answered for the whole batch, that is once every accepted event is durable and
//!   every rejected one is in the dead-letter table *and* delivered to the dead-letter
//!   topic (header `reason` = the error code). A crash before the commit redelivers
//!   the batch; redelivered events are recognised by `event_id` and processed once.
//! - [`KafkaPublisher`]: a [`crate::publish::Publisher`] that writes every published
//!   entry to the updates topic, keyed by its price key (`sku@store/channel/segment`),
//!   value [`PriceUpdate`] as JSON; a removed key gets a tombstone (null value). It
//!   returns only after the broker acknowledged every message (`acks=all`,
//!   idempotent producer), so the pipeline marks a version published only once it is
//!   durable in Kafka. It can stand alone or sit in a [`crate::publish::FanOut`]
//!   next to the in-process edge.
//!
//! ## Wiring it into `edgeprice control` (not done here: `cli/` owns the binary)
//!
//! With a `[kafka]` table ([`KafkaConfig`]) in the config file:
//!
//! ```text
//! let kafka_publisher = KafkaPublisher::new(&config.kafka)?;
//! let publisher = FanOut::new(vec![
//!     Box::new(InProcessEdge(edge_store.clone())),   // or HttpPublisher for a remote edge
//!     Box::new(kafka_publisher),
//! ]);
//! let control = ControlPlane::start(config.control, publisher)?;
//! let feed_consumer = FeedConsumer::start(&config.kafka, control.ingestor())?;
//! // ... on shutdown, stop the feed consumer first (it finishes and commits the batch
//! // in hand and leaves the group), then drop the control plane:
//! feed_consumer.stop()?;
//! drop(control);
//! ```
//!
//! The consumer and the HTTP ingestion server can run side by side on the same
//! ingestor. Several control planes in one consumer group split the feed topics'
//! partitions between them; because topics are keyed by SKU, one SKU's events stay in
//! order on one partition.
//!
//! ## Delivery guarantees and their limits
//! - Order holds within a partition only. The feeds are separate topics, so a SKU's
//!   cost event can be consumed before its catalog event and is then dead-lettered as
//!   `unknown_sku`, as over HTTP: producers send the catalog first and wait for it.
//! - A publisher blocks until the broker acknowledges, up to
//!   [`KafkaConfig::delivery_timeout_ms`]. [`crate::publish::FanOut`] calls its
//!   publishers one after the other, so while Kafka is unreachable each update
//!   reaches the in-process edge up to that long late; then the Kafka publisher
//!   reports [`crate::publish::PublishError::Unavailable`] and is resynced with a full
//!   snapshot later.
//! - Feeds: at least once from Kafka, exactly once into the event log (dedup by
//!   `event_id`). A rejected event redelivered after a crash (or after a rebalance took
//!   its partition before the commit) is dead-lettered again: a second row and a second
//!   dead-letter message.
//! - Updates: every version is on the topic before the publisher returns. The
//!   publisher remembers the keys it has written in this process, so a full snapshot
//!   tombstones the keys it no longer has; keys written by an earlier process and gone
//!   from the first snapshot after a restart are not tombstoned (the pipeline never
//!   removes keys today).

mod consumer;
mod producer;
mod publisher;

pub use consumer::{ConsumerStats, FeedConsumer};
pub use publisher::{KafkaPublisher, PriceUpdate};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::feeds::FeedKind;
use crate::store::StoreError;

/// Header of a dead-letter message that carries the rejection's error code.
pub const REASON_HEADER: &str = "reason";
/// Header of a dead-letter message that names the feed the event came from.
pub const FEED_HEADER: &str = "feed";
/// Header of a price update (tombstones included) with its snapshot version.
pub const VERSION_HEADER: &str = "snapshot_version";

/// Kafka settings (the `[kafka]` table of the config file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    pub brokers: String,
    /// Consumer group of the feed consumers; control planes in one group split the
    /// feed topics' partitions.
    pub group_id: String,
    /// Feed topics are this prefix followed by the feed name (`catalog`, `cost`, ...).
    pub topic_prefix: String,
    /// Where rejected feed events go, with their reason code in the `reason` header.
    pub dead_letter_topic: String,
    /// The compacted topic of price updates, keyed by price key.
    pub updates_topic: String,
    /// Most messages handed to the ingestor (and committed) in one batch.
    pub poll_batch_size: usize,
    /// How long a produced message may take to be acknowledged before it counts as
    /// failed (librdkafka's `message.timeout.ms`), milliseconds.
    pub delivery_timeout_ms: u64,
    /// Extra librdkafka properties for every client (security settings, tuning);
    /// they override the settings above. Consumer-only properties are ignored by the
    /// producers (librdkafka logs that).
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "localhost:9092".into(),
            group_id: "edgeprice-control".into(),
            topic_prefix: "edgeprice.feed.".into(),
            dead_letter_topic: "edgeprice.feed.deadletter".into(),
            updates_topic: "edgeprice.price.updates".into(),
            poll_batch_size: 500,
            delivery_timeout_ms: 30_000,
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// The topic that carries `feed`.
    pub fn feed_topic(&self, feed: FeedKind) -> String {
        format!("{}{}", self.topic_prefix, feed.as_str())
    }

    /// Client settings shared by consumers and producers.
    fn client_config(&self) -> rdkafka::ClientConfig {
        let mut client = rdkafka::ClientConfig::new();
        client.set("bootstrap.servers", &self.brokers);
        client
    }

    fn apply_properties(&self, client: &mut rdkafka::ClientConfig) {
        for (key, value) in &self.properties {
            client.set(key, value);
        }
    }
}

/// Errors of the Kafka path. [`KafkaError::Client`] at start-up needs a config fix;
/// [`KafkaError::IngestStopped`] means the control plane stopped under the consumer.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// librdkafka refused the settings or could not create the client.
    #[error("kafka client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    /// The configuration is unusable as it is.
    #[error("kafka config: {0}")]
    Config(String),
    /// The ingestor stopped; the consumer stopped without committing the batch in hand,
    /// which the next consumer of the group gets again.
    #[error("the ingestor stopped under the kafka consumer: {0}")]
    IngestStopped(StoreError),
    /// The consumer thread could not be started or panicked.
    #[error("kafka consumer thread: {0}")]
    Thread(String),
}

impl KafkaError {
    /// The API error code.
    pub fn code(&self) -> &'static str {
        match self {
            KafkaError::Client(_) => "kafka_client",
            KafkaError::Config(_) => "kafka_config",
            KafkaError::IngestStopped(_) => "ingest_stopped",
            KafkaError::Thread(_) => "kafka_thread",
        }
    }
}
