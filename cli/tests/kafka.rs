//! `edgeprice up --kafka-brokers …` against librdkafka's mock cluster (the real Kafka
//! protocol, in this test process): feeds consumed from Kafka move the price at the
//! edge, and every published price lands on the compacted updates topic.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const PATIENCE: Duration = Duration::from_secs(60);
const FEEDS: [&str; 6] = [
    "catalog",
    "cost",
    "competitor",
    "inventory",
    "sales",
    "promotions",
];

struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http(addr: &str, method: &str, path: &str, headers: &str, body: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n{headers}\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    let status = raw.split(' ').nth(1)?.parse().ok()?;
    Some((status, raw.split("\r\n\r\n").nth(1)?.to_owned()))
}

fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

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
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgeprice"))
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--feeds-listen",
            "127.0.0.1:0",
            "--kafka-brokers",
            &brokers,
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    let _up = Up(child);
    // "edgeprice is up: edge http://ADDR, control plane http://ADDR"
    let addr = |label: &str| {
        banner
            .split(label)
            .nth(1)
            .unwrap()
            .split([',', '\n'])
            .next()
            .unwrap()
            .trim()
            .to_owned()
    };
    let (edge, control) = (addr("edge http://"), addr("control plane http://"));
    let feed_token = std::fs::read_to_string(dir.path().join("feed.token")).unwrap();

    // The catalog over HTTP (202 = durable), so the SKU is known before its cost arrives.
    let now = 1_800_000_000_000i64;
    let catalog = format!(
        r#"{{"event_id":"c1","sku":"K-1","category":"grocery","currency":"EUR","list_price_minor":2000,"tax_rate_bp":700,"logistics_minor":0,"occurred_at_ms":{now}}}"#
    );
    let auth = format!(
        "Authorization: Bearer {}\r\nContent-Type: application/json\r\n",
        feed_token.trim()
    );
    assert_eq!(
        http(&control, "POST", "/v1/feeds/catalog", &auth, &catalog).map(|r| r.0),
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
        let (status, body) = http(&edge, "GET", "/v1/prices/K-1", "", "")?;
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
