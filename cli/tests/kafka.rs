//! `edgeprice up --kafka-brokers …` against librdkafka's mock cluster (the real Kafka
//! protocol, in this test process): feeds consumed from Kafka move the price at the
//! edge, and every published price lands on the compacted updates topic.

mod support;

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use support::{eventually, http, up_command, Up};

const FEEDS: [&str; 6] = [
    "catalog",
    "cost",
    "competitor",
    "inventory",
    "sales",
    "promotions",
];

#[test]
fn feeds_from_kafka_reach_the_edge_and_the_updates_topic() {
    let mock = MockCluster::new(1).unwrap();
    for feed in FEEDS {
        mock.create_topic(&format!("edgeprice.feed.{feed}"), 2, 1)
            .unwrap();
    }
    mock.create_topic("edgeprice.feed.deadletter", 1, 1)
        .unwrap();
    mock.create_topic("edgeprice.price.updates", 1, 1).unwrap();
    let brokers = mock.bootstrap_servers();

    let dir = tempfile::tempdir().unwrap();
    let mut command = up_command(dir.path());
    command.args(["--kafka-brokers", &brokers]);
    let up = Up::start(command, dir.path());
    let (edge, control) = (up.edge.clone(), up.control.clone());
    let feed_token = up.token("feed.token");

    // The catalog over HTTP (202 = durable), so the SKU is known before its cost arrives.
    let now = 1_800_000_000_000i64;
    let catalog = format!(
        r#"{{"event_id":"c1","sku":"K-1","category":"grocery","currency":"EUR","list_price_minor":2000,"tax_rate_bp":700,"logistics_minor":0,"occurred_at_ms":{now}}}"#
    );
    let auth = format!("Bearer {feed_token}");
    assert_eq!(
        http(
            &control,
            "POST",
            "/v1/feeds/catalog",
            &[("Authorization", &auth)],
            &catalog
        )
        .map(|r| r.0),
        Some(202)
    );

    // The vendor cost over Kafka.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let cost = format!(
        r#"{{"event_id":"k1","sku":"K-1","vendor":"acme","currency":"EUR","cost_minor":1100,"effective_at_ms":{now},"occurred_at_ms":{now}}}"#
    );
    producer
        .send(
            BaseRecord::to("edgeprice.feed.cost")
                .key("K-1")
                .payload(&cost),
        )
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();

    // A 30% margin over a cost of 11.00 puts the floor at 15.72 at least.
    let price = eventually("the Kafka cost to reach the edge", || {
        let (status, body) = http(&edge, "GET", "/v1/prices/K-1", &[], "")?;
        let body: serde_json::Value = serde_json::from_str(&body).ok()?;
        (status == 200 && body["floor_minor"].as_i64()? >= 1_572).then_some(body)
    });
    assert!(price["price_minor"].as_i64().unwrap() >= price["floor_minor"].as_i64().unwrap());

    // The same price is on the compacted updates topic under its price key.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset("edgeprice.price.updates", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let published = eventually("a price update with the edge's price", || {
        let message = consumer.poll(Duration::from_millis(100))?.ok()?;
        let update: serde_json::Value = serde_json::from_slice(message.payload()?).ok()?;
        (message.key()? == b"K-1@*/*/*"
            && update
                .to_string()
                .contains(&format!("{}", price["price_minor"])))
        .then_some(update)
    });
    assert!(published.to_string().contains("K-1"));
}
