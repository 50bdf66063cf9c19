//! The Kafka path against librdkafka's in-process mock cluster (the real protocol,
//! consumer groups and offset commits): feeds consumed into the store and on to the
//! edge, rejects on the dead-letter topic and table, a restarted consumer resuming
//! from its committed offsets, and price updates on the compacted topic.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgeprice_control::feeds::FeedKind;
use edgeprice_control::kafka::{
    ConsumerStats, FeedConsumer, KafkaConfig, KafkaPublisher, PriceUpdate, REASON_HEADER,
    VERSION_HEADER,
};
use edgeprice_control::publish::{FanOut, InProcessEdge, PublishError, Publisher};
use edgeprice_control::runtime::{ControlPlane, RuntimeConfig};
use edgeprice_control::store::{self, EventLog, Ingestor, Outcome, Submission};
use edgeprice_pricing::{Currency, Dimension, PriceEntry, PriceKey, Sku};
use edgeprice_schemas::codec::{DeltaData, SnapshotData};
use edgeprice_server::SnapshotStore;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// Partitions of each feed topic: more than one, so commits cover several partitions.
const FEED_PARTITIONS: i32 = 2;
const PATIENCE: Duration = Duration::from_secs(20);

/// A mock cluster with the project's topics created.
struct Cluster {
    mock: MockCluster<'static, DefaultProducerContext>,
    config: KafkaConfig,
}

impl Cluster {
    fn new(group_id: &str) -> Cluster {
        let mock = MockCluster::new(1).unwrap();
        let config = KafkaConfig {
            brokers: mock.bootstrap_servers(),
            group_id: group_id.into(),
            // Small batches: several commits per test.
            poll_batch_size: 3,
            delivery_timeout_ms: 10_000,
            // The mock broker waits a session timeout (less a second) for members to
            // rejoin after one leaves: keep it short, or a restart waits 44 seconds.
            properties: [
                ("session.timeout.ms".to_owned(), "2500".to_owned()),
                ("heartbeat.interval.ms".to_owned(), "500".to_owned()),
            ]
            .into(),
            ..KafkaConfig::default()
        };
        for feed in FeedKind::ALL {
            mock.create_topic(&config.feed_topic(feed), FEED_PARTITIONS, 1)
                .unwrap();
        }
        mock.create_topic(&config.dead_letter_topic, 1, 1).unwrap();
        mock.create_topic(&config.updates_topic, 1, 1).unwrap();
        Cluster { mock, config }
    }

    /// Produces feed events keyed by SKU and waits until the broker has them.
    fn produce(&self, feed: FeedKind, events: &[(&str, String)]) {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", self.mock.bootstrap_servers())
            .create()
            .unwrap();
        let topic = self.config.feed_topic(feed);
        for (sku, body) in events {
            producer
                .send(BaseRecord::to(&topic).key(*sku).payload(body))
                .unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
    }

    /// Every message on `topic` (one partition), in order; waits for `expected` and then
    /// a moment longer, so extra messages would show too.
    fn read(&self, topic: &str, expected: usize) -> Vec<Read> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.mock.bootstrap_servers())
            .set("group.id", "test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&assignment).unwrap();
        let mut read = Vec::new();
        let deadline = Instant::now() + PATIENCE;
        let mut quiet_until = None;
        loop {
            let now = Instant::now();
            assert!(now < deadline, "timed out reading {topic}: {read:?}");
            if quiet_until.is_some_and(|until| now >= until) {
                return read;
            }
            if let Some(message) = consumer.poll(Duration::from_millis(50)) {
                let message = message.unwrap();
                let headers = message
                    .headers()
                    .map(|headers| {
                        headers
                            .iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                read.push(Read {
                    key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
                    payload: message.payload().map(<[u8]>::to_vec),
                    headers,
                });
            }
            if read.len() >= expected && quiet_until.is_none() {
                quiet_until = Some(Instant::now() + Duration::from_millis(300));
            }
        }
    }

    /// The group's committed offsets on `feed`'s topic, summed over its partitions:
    /// with every partition starting at 0, the number of messages it has consumed.
    fn committed(&self, feed: FeedKind) -> i64 {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.mock.bootstrap_servers())
            .set("group.id", &self.config.group_id)
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let topic = self.config.feed_topic(feed);
        let mut partitions = TopicPartitionList::new();
        for partition in 0..FEED_PARTITIONS {
            partitions.add_partition(&topic, partition);
        }
        let committed = consumer
            .committed_offsets(partitions, Duration::from_secs(10))
            .unwrap();
        committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(offset) => offset,
                _ => 0,
            })
            .sum()
    }
}

#[derive(Debug)]
struct Read {
    key: String,
    payload: Option<Vec<u8>>,
    headers: HashMap<String, String>,
}

/// Polls `check` until it holds, for at most [`PATIENCE`] (joining a consumer group on
/// the mock cluster takes about three seconds).
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn catalog(event_id: &str, sku: &str) -> String {
    let t = now_ms();
    format!(
        r#"{{"event_id":"{event_id}","sku":"{sku}","category":"snacks","currency":"EUR","list_price_minor":1500,"tax_rate_bp":2000,"logistics_minor":100,"occurred_at_ms":{t}}}"#
    )
}

fn cost(event_id: &str, sku: &str, cost_minor: i64) -> String {
    let t = now_ms();
    format!(
        r#"{{"event_id":"{event_id}","sku":"{sku}","vendor":"acme","currency":"EUR","cost_minor":{cost_minor},"effective_at_ms":{t},"occurred_at_ms":{t}}}"#
    )
}

/// Events in the log, and how many of them the pipeline has not processed yet.
fn event_counts(dir: &std::path::Path) -> (i64, i64) {
    EventLog::counts(&store::open(dir).unwrap()).unwrap()
}

fn edge_price(edge: &SnapshotStore, sku: &str) -> Option<(i64, i64)> {
    let guard = edge.load();
    let snapshot = guard.as_ref()?;
    let found = snapshot.entries().find(|e| e.key.sku.as_str() == sku);
    found.map(|e| (e.price_minor, e.floor_minor))
}

#[test]
fn feeds_from_kafka_reach_the_store_the_edge_and_the_updates_topic() {
    let cluster = Cluster::new("control-feeds");
    let dir = tempfile::tempdir().unwrap();
    let edge = Arc::new(SnapshotStore::open(None).unwrap());
    let publisher = FanOut::new(vec![
        Box::new(InProcessEdge(edge.clone())),
        Box::new(KafkaPublisher::new(&cluster.config).unwrap()),
    ]);
    let control = ControlPlane::start(
        RuntimeConfig {
            data_dir: dir.path().to_owned(),
            ..RuntimeConfig::default()
        },
        publisher,
    )
    .unwrap();
    let consumer = FeedConsumer::start(&cluster.config, control.ingestor()).unwrap();

    // Catalog first: feeds are separate topics, so a cost consumed before its SKU's
    // catalog event would be rejected as an unknown SKU.
    cluster.produce(FeedKind::Catalog, &[("A", catalog("cat-1", "A"))]);
    eventually("the catalog event to be stored", || {
        consumer.stats().accepted == 1
    });
    cluster.produce(
        FeedKind::Cost,
        &[
            ("A", cost("cost-1", "A", 600)),
            ("A", cost("cost-2", "A", 800)),
        ],
    );
    // Cost 800 + logistics 100, 30% margin, 20% tax: 1,543 (as over HTTP).
    eventually("the cost to reach the edge", || {
        edge_price(&edge, "A") == Some((1_543, 1_543))
    });
    assert_eq!(event_counts(dir.path()), (3, 0));
    eventually("the offsets to be committed", || {
        cluster.committed(FeedKind::Catalog) == 1 && cluster.committed(FeedKind::Cost) == 2
    });

    // The same price went out on the compacted topic, keyed by price key.
    let updates = cluster.read(&cluster.config.updates_topic, 1);
    assert!(updates.iter().all(|u| u.key == "A@*/*/*"), "{updates:?}");
    let last = updates.last().unwrap();
    let update: PriceUpdate = serde_json::from_slice(last.payload.as_ref().unwrap()).unwrap();
    assert_eq!(
        (update.entry.price_minor, update.entry.floor_minor),
        (1_543, 1_543)
    );
    assert_eq!(
        last.headers[VERSION_HEADER],
        update.snapshot_version.to_string()
    );

    let stats = consumer.stop().unwrap();
    assert_eq!(
        (
            stats.consumed,
            stats.accepted,
            stats.duplicates,
            stats.rejected
        ),
        (3, 3, 0, 0)
    );
    assert_eq!(stats.commit_failures, 0);
}

#[test]
fn a_rejected_event_goes_to_the_dead_letter_topic_and_table_before_its_offset_is_committed() {
    let cluster = Cluster::new("control-dead-letters");
    let dir = tempfile::tempdir().unwrap();
    let ingestor = Arc::new(Ingestor::start(dir.path(), |_| {}).unwrap());
    let consumer = FeedConsumer::start(&cluster.config, ingestor).unwrap();
    cluster.produce(FeedKind::Catalog, &[("A", catalog("cat-1", "A"))]);
    eventually("the catalog event to be stored", || {
        consumer.stats().accepted == 1
    });
    let malformed = r#"{"event_id":"x","sku":"A","#.to_owned();
    let unknown_sku = cost("cost-unknown", "NOPE", 500);
    cluster.produce(
        FeedKind::Cost,
        &[
            ("A", malformed.clone()),
            ("NOPE", unknown_sku.clone()),
            ("A", cost("cost-1", "A", 600)),
        ],
    );
    eventually("the cost events to be handled", || {
        consumer.stats().consumed == 4
    });
    eventually("the offsets to be committed", || {
        cluster.committed(FeedKind::Cost) == 3
    });

    // As sent, keyed as sent, with the reason in a header.
    let mut dead = cluster.read(&cluster.config.dead_letter_topic, 2);
    dead.sort_by(|a, b| a.key.cmp(&b.key));
    let seen: Vec<(&str, &str, &str, &[u8])> = dead
        .iter()
        .map(|d| {
            (
                d.key.as_str(),
                d.headers[REASON_HEADER].as_str(),
                d.headers["feed"].as_str(),
                d.payload.as_deref().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("A", "malformed_json", "cost", malformed.as_bytes()),
            ("NOPE", "unknown_sku", "cost", unknown_sku.as_bytes()),
        ]
    );

    // Kept in the table as well, with the same reasons.
    let conn = store::open(dir.path()).unwrap();
    let mut codes: Vec<String> = EventLog::dead_letters(&conn, 10)
        .unwrap()
        .into_iter()
        .map(|d| d.code)
        .collect();
    codes.sort();
    assert_eq!(codes, ["malformed_json", "unknown_sku"]);
    assert_eq!(EventLog::counts(&conn).unwrap().0, 2);

    let stats = consumer.stop().unwrap();
    assert_eq!(
        (
            stats.consumed,
            stats.accepted,
            stats.duplicates,
            stats.rejected
        ),
        (4, 2, 0, 2)
    );
}

#[test]
fn a_restarted_consumer_resumes_from_committed_offsets_without_loss_or_double_apply() {
    let cluster = Cluster::new("control-restart");
    let dir = tempfile::tempdir().unwrap();
    let ingestor = Arc::new(Ingestor::start(dir.path(), |_| {}).unwrap());
    let first: Vec<(String, String)> = (0..6)
        .map(|i| {
            (
                format!("S-{i}"),
                catalog(&format!("cat-{i}"), &format!("S-{i}")),
            )
        })
        .collect();
    // As if an earlier consumer stored two events and died before committing them.
    let outcomes = ingestor
        .ingest_blocking(
            first[..2]
                .iter()
                .map(|(_, body)| Submission {
                    feed: FeedKind::Catalog,
                    body: body.clone().into_bytes(),
                })
                .collect(),
        )
        .unwrap();
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, Outcome::Accepted { .. })));
    cluster.produce(FeedKind::Catalog, &as_refs(&first));

    let consumer = FeedConsumer::start(&cluster.config, Arc::clone(&ingestor)).unwrap();
    eventually("the first six events to be committed", || {
        cluster.committed(FeedKind::Catalog) == 6
    });
    let stats = consumer.stop().unwrap();
    assert_eq!(
        (
            stats.consumed,
            stats.accepted,
            stats.duplicates,
            stats.rejected
        ),
        (6, 4, 2, 0),
        "redelivered events are recognised, not applied twice"
    );
    assert_eq!(event_counts(dir.path()).0, 6);

    // While no consumer runs, more arrives.
    let second: Vec<(String, String)> = (6..10)
        .map(|i| {
            (
                format!("S-{i}"),
                catalog(&format!("cat-{i}"), &format!("S-{i}")),
            )
        })
        .collect();
    cluster.produce(FeedKind::Catalog, &as_refs(&second));

    let consumer = FeedConsumer::start(&cluster.config, Arc::clone(&ingestor)).unwrap();
    eventually("the four new events to be committed", || {
        cluster.committed(FeedKind::Catalog) == 10
    });
    let stats: ConsumerStats = consumer.stop().unwrap();
    // It started from the committed offsets: it read the four new messages only.
    assert_eq!(
        (
            stats.consumed,
            stats.accepted,
            stats.duplicates,
            stats.rejected
        ),
        (4, 4, 0, 0)
    );
    let conn = store::open(dir.path()).unwrap();
    assert_eq!(EventLog::counts(&conn).unwrap().0, 10);
    let mut ids: Vec<String> = EventLog::pending(&conn, 100)
        .unwrap()
        .iter()
        .map(|e| e.event.event_id().to_owned())
        .collect();
    ids.sort();
    let mut expected: Vec<String> = (0..10).map(|i| format!("cat-{i}")).collect();
    expected.sort();
    assert_eq!(ids, expected);
}

fn as_refs(events: &[(String, String)]) -> Vec<(&str, String)> {
    events
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect()
}

fn entry(key: &PriceKey, price_minor: i64, revision: u64) -> PriceEntry {
    PriceEntry {
        key: key.clone(),
        currency: Currency::parse("EUR").unwrap(),
        list_price_minor: 1_500,
        price_minor,
        floor_minor: 1_000,
        promotion: None,
        valid_from_ms: None,
        valid_until_ms: None,
        revision,
    }
}

fn snapshot(version: u64, entries: Vec<PriceEntry>) -> SnapshotData {
    SnapshotData {
        version,
        created_at_ms: now_ms(),
        entries,
        promotions: None,
    }
}

fn delta(
    base_version: u64,
    version: u64,
    upserts: Vec<PriceEntry>,
    removals: Vec<PriceKey>,
) -> DeltaData {
    DeltaData {
        base_version,
        version,
        created_at_ms: now_ms(),
        upserts,
        removals,
        promotions: None,
    }
}

#[test]
fn price_updates_are_keyed_by_price_key_and_a_removal_is_a_tombstone() {
    let cluster = Cluster::new("unused");
    let publisher = KafkaPublisher::new(&cluster.config).unwrap();
    let a = PriceKey::chain_wide(Sku::new("A").unwrap());
    let b = PriceKey {
        sku: Sku::new("B").unwrap(),
        store: Dimension::new("s1").unwrap(),
        channel: Dimension::new("web").unwrap(),
        segment: Dimension::any(),
    };
    let c = PriceKey::chain_wide(Sku::new("C").unwrap());

    // Like an edge: a full snapshot first, then deltas on the version it is at.
    assert_eq!(
        publisher.publish_delta(delta(0, 1, vec![entry(&a, 1_200, 1)], vec![])),
        Err(PublishError::NoBase)
    );
    assert_eq!(
        publisher.publish_snapshot(snapshot(1, vec![entry(&a, 1_200, 1), entry(&b, 1_300, 1)])),
        Ok(1)
    );
    assert_eq!(
        publisher.publish_delta(delta(1, 2, vec![entry(&a, 1_250, 2)], vec![b.clone()])),
        Ok(2)
    );
    assert_eq!(
        publisher.publish_delta(delta(1, 3, vec![entry(&a, 1_100, 3)], vec![])),
        Err(PublishError::VersionConflict { current_version: 2 })
    );
    assert_eq!(
        publisher.publish_snapshot(snapshot(2, vec![])),
        Err(PublishError::Stale { current_version: 2 })
    );
    // A full snapshot without A: A gets a tombstone.
    assert_eq!(
        publisher.publish_snapshot(snapshot(3, vec![entry(&c, 900, 3)])),
        Ok(3)
    );

    let read = cluster.read(&cluster.config.updates_topic, 6);
    let seen: Vec<(String, String, Option<i64>)> = read
        .iter()
        .map(|r| {
            let price = r.payload.as_ref().map(|payload| {
                let update: PriceUpdate = serde_json::from_slice(payload).unwrap();
                assert_eq!(
                    update.snapshot_version.to_string(),
                    r.headers[VERSION_HEADER]
                );
                update.entry.price_minor
            });
            (r.key.clone(), r.headers[VERSION_HEADER].clone(), price)
        })
        .collect();
    let expected: Vec<(String, String, Option<i64>)> = [
        ("A@*/*/*", "1", Some(1_200)),
        ("B@s1/web/*", "1", Some(1_300)),
        ("B@s1/web/*", "2", None),
        ("A@*/*/*", "2", Some(1_250)),
        ("A@*/*/*", "3", None),
        ("C@*/*/*", "3", Some(900)),
    ]
    .into_iter()
    .map(|(k, v, p)| (k.to_owned(), v.to_owned(), p))
    .collect();
    assert_eq!(seen, expected);
}
