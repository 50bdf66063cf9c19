//! Publishing to a remote edge over HTTP: a real edge server on an ephemeral port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use edgeprice_control::feeds::FeedKind;
use edgeprice_control::pipeline::{Pipeline, PipelineConfig};
use edgeprice_control::publish::{FanOut, HttpPublisher, PublishError, Publisher};
use edgeprice_control::store::{Ingestor, Submission};
use edgeprice_pricing::{Currency, PriceEntry, PriceKey, Sku};
use edgeprice_schemas::codec::{DeltaData, SnapshotData};
use edgeprice_server::http::{serve, ServerHandle};
use edgeprice_server::metrics::Metrics;
use edgeprice_server::{Api, ApiConfig, SnapshotStore, Update};

const NOW: i64 = 1_790_000_040_000;
const TOKEN: &str = "edge-admin-secret";

fn edge() -> (Arc<SnapshotStore>, ServerHandle) {
    edge_with(ApiConfig {
        admin_token: Some(TOKEN.into()),
        ..ApiConfig::default()
    })
}

fn edge_with(config: ApiConfig) -> (Arc<SnapshotStore>, ServerHandle) {
    let store = Arc::new(SnapshotStore::open(None).unwrap());
    let api = Api::new(store.clone(), Arc::new(Metrics::new(1)), config);
    let handle = serve("127.0.0.1:0".parse().unwrap(), 1, Arc::new(api)).unwrap();
    (store, handle)
}

fn publisher(addr: SocketAddr, token: &str) -> HttpPublisher {
    HttpPublisher::new(addr, token, Duration::from_secs(5)).unwrap()
}

fn entry(sku: &str, price: i64) -> PriceEntry {
    PriceEntry {
        key: PriceKey::chain_wide(Sku::new(sku).unwrap()),
        currency: Currency::EUR,
        list_price_minor: price,
        price_minor: price,
        floor_minor: price,
        promotion: None,
        valid_from_ms: None,
        valid_until_ms: None,
        revision: 1,
    }
}

fn edge_price(store: &SnapshotStore, sku: &str) -> Option<(i64, i64)> {
    let guard = store.load();
    let snapshot = guard.as_ref()?;
    let found = snapshot.entries().find(|e| e.key.sku.as_str() == sku);
    found.map(|e| (e.price_minor, e.floor_minor))
}

#[test]
fn the_edge_answers_are_mapped_onto_publish_errors() {
    let (_store, handle) = edge();
    let addr = handle.local_addr();
    let delta = DeltaData {
        base_version: 1,
        version: 2,
        created_at_ms: NOW,
        promotions: None,
        upserts: vec![entry("A", 100)],
        removals: Vec::new(),
    };
    let wrong = publisher(addr, "wrong-token").publish_delta(delta.clone());
    assert!(
        matches!(wrong, Err(PublishError::Rejected { status: 401, .. })),
        "{wrong:?}"
    );
    let right = publisher(addr, TOKEN);
    assert_eq!(
        right.publish_delta(delta.clone()),
        Err(PublishError::NoBase)
    );
    let snapshot = SnapshotData {
        version: 5,
        created_at_ms: NOW,
        promotions: None,
        entries: vec![entry("A", 100)],
    };
    assert_eq!(right.publish_snapshot(snapshot.clone()), Ok(5));
    assert_eq!(
        right.publish_snapshot(snapshot),
        Err(PublishError::Stale { current_version: 5 })
    );
    assert_eq!(
        right.publish_delta(delta),
        Err(PublishError::VersionConflict { current_version: 5 })
    );
    handle.shutdown();
    let gone = right.publish_delta(DeltaData {
        base_version: 5,
        version: 6,
        created_at_ms: NOW,
        promotions: None,
        upserts: Vec::new(),
        removals: Vec::new(),
    });
    assert!(
        matches!(gone, Err(PublishError::Unavailable(_))),
        "{gone:?}"
    );
}

#[test]
fn the_pipeline_publishes_over_http_and_resyncs_an_edge_that_moved() {
    let (store, handle) = edge();
    let dir = tempfile::tempdir().unwrap();
    let ingestor = Ingestor::start(dir.path(), |_| {}).unwrap();
    let mut pipeline = Pipeline::open(
        dir.path(),
        PipelineConfig::default(),
        publisher(handle.local_addr(), TOKEN),
    )
    .unwrap();
    let send = |feed, json: String| {
        ingestor
            .ingest_blocking(vec![Submission {
                feed,
                body: json.into_bytes(),
            }])
            .unwrap()
    };
    send(
        FeedKind::Catalog,
        format!(
            r#"{{"event_id":"c1","sku":"A","category":"snacks","currency":"EUR","list_price_minor":1500,"tax_rate_bp":2000,"logistics_minor":100,"occurred_at_ms":{NOW}}}"#
        ),
    );
    send(
        FeedKind::Cost,
        format!(
            r#"{{"event_id":"k1","sku":"A","vendor":"v","currency":"EUR","cost_minor":600,"effective_at_ms":{NOW},"occurred_at_ms":{NOW}}}"#
        ),
    );
    let report = pipeline.process_all(NOW).unwrap();
    assert!(report.edge_in_sync);
    assert_eq!(edge_price(&store, "A"), Some((1_500, 1_200)));

    // Someone else loads a snapshot at version 100: the next delta conflicts and the
    // pipeline resyncs past it with everything it has.
    store
        .update_blocking(Update::FullData {
            data: SnapshotData {
                version: 100,
                created_at_ms: NOW,
                promotions: None,
                entries: vec![entry("OTHER", 5)],
            },
            force: false,
        })
        .unwrap();
    send(
        FeedKind::Cost,
        format!(
            r#"{{"event_id":"k2","sku":"A","vendor":"v","currency":"EUR","cost_minor":800,"effective_at_ms":{NOW},"occurred_at_ms":{NOW}}}"#
        ),
    );
    let report = pipeline.process_all(NOW).unwrap();
    assert!(report.edge_in_sync);
    assert!(report.version > 100, "{report:?}");
    assert_eq!(edge_price(&store, "A"), Some((1_543, 1_543)));
    assert_eq!(edge_price(&store, "OTHER"), None);
    assert_eq!(store.load().as_ref().unwrap().version(), report.version);
    handle.shutdown();
}

#[test]
fn decisions_are_kept_while_the_edge_is_unreachable() {
    // A port nobody listens on: bind, learn it, close it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ingestor = Ingestor::start(dir.path(), |_| {}).unwrap();
    let mut pipeline = Pipeline::open(
        dir.path(),
        PipelineConfig::default(),
        HttpPublisher::new(closed, TOKEN, Duration::from_millis(500)).unwrap(),
    )
    .unwrap();
    ingestor
        .ingest_blocking(vec![Submission {
            feed: FeedKind::Catalog,
            body: format!(r#"{{"event_id":"c1","sku":"A","category":"snacks","currency":"EUR","list_price_minor":1500,"tax_rate_bp":2000,"occurred_at_ms":{NOW}}}"#).into_bytes(),
        }])
        .unwrap();
    let report = pipeline.process_all(NOW).unwrap();
    assert_eq!(report.events, 1);
    assert!(!report.edge_in_sync, "{report:?}");
    let decisions = pipeline.decisions_for("A", 10).unwrap();
    assert_eq!(
        decisions.len(),
        1,
        "the decision is recorded even though no edge took it"
    );
    assert_eq!(decisions[0].final_price_minor, 1_500);
}

#[test]
fn each_edge_of_a_fan_out_is_resynced_on_its_own() {
    let (store_a, edge_a) = edge();
    let (_store_b, edge_b) = edge();
    let addr_b = edge_b.local_addr();
    let fan_out = Arc::new(FanOut::new(vec![
        Box::new(publisher(edge_a.local_addr(), TOKEN)),
        Box::new(publisher(addr_b, TOKEN)),
    ]));
    let dir = tempfile::tempdir().unwrap();
    let ingestor = Ingestor::start(dir.path(), |_| {}).unwrap();
    let mut pipeline =
        Pipeline::open(dir.path(), PipelineConfig::default(), fan_out.clone()).unwrap();
    let send = |id: &str, sku: &str, list: i64| {
        ingestor
            .ingest_blocking(vec![Submission {
                feed: FeedKind::Catalog,
                body: format!(r#"{{"event_id":"{id}","sku":"{sku}","category":"snacks","currency":"EUR","list_price_minor":{list},"tax_rate_bp":2000,"occurred_at_ms":{NOW}}}"#).into_bytes(),
            }])
            .unwrap()
    };
    send("c1", "A", 1_500);
    pipeline.process_all(NOW).unwrap();
    assert_eq!(fan_out.edges_in_sync(), 2);

    // Edge B goes away; A keeps getting deltas.
    edge_b.shutdown();
    send("c2", "B", 900);
    let report = pipeline.process_all(NOW).unwrap();
    assert!(report.edge_in_sync);
    assert_eq!(fan_out.edges_in_sync(), 1);
    assert_eq!(edge_price(&store_a, "B"), Some((900, 900)));

    // B comes back empty on the same address: the next update brings it everything.
    let store_b = Arc::new(SnapshotStore::open(None).unwrap());
    let api = Api::new(
        store_b.clone(),
        Arc::new(Metrics::new(1)),
        ApiConfig {
            admin_token: Some(TOKEN.into()),
            ..ApiConfig::default()
        },
    );
    let edge_b = serve(addr_b, 1, Arc::new(api)).unwrap();
    send("c3", "C", 700);
    pipeline.process_all(NOW).unwrap();
    assert_eq!(fan_out.edges_in_sync(), 2);
    for sku in ["A", "B", "C"] {
        assert_eq!(
            edge_price(&store_b, sku),
            edge_price(&store_a, sku),
            "{sku}"
        );
    }
    assert_eq!(
        store_a.load().as_ref().unwrap().version(),
        store_b.load().as_ref().unwrap().version()
    );
    edge_a.shutdown();
    edge_b.shutdown();
}

#[test]
fn a_delta_larger_than_the_edge_takes_goes_as_a_full_snapshot() {
    let (store, handle) = edge_with(ApiConfig {
        admin_token: Some(TOKEN.into()),
        max_delta_changes: 2,
        ..ApiConfig::default()
    });
    let direct = publisher(handle.local_addr(), TOKEN);
    let fan_out = FanOut::new(vec![Box::new(publisher(handle.local_addr(), TOKEN))]);
    let first = SnapshotData {
        version: 1,
        created_at_ms: NOW,
        promotions: None,
        entries: vec![entry("A", 100)],
    };
    assert_eq!(fan_out.publish_snapshot(first), Ok(1));
    let big = DeltaData {
        base_version: 1,
        version: 2,
        created_at_ms: NOW,
        promotions: None,
        upserts: vec![entry("A", 110), entry("B", 200), entry("C", 300)],
        removals: Vec::new(),
    };
    let refused = direct.publish_delta(big.clone());
    assert!(
        matches!(&refused, Err(PublishError::Rejected { status: 413, code, message })
            if code == "delta_too_large" && message.contains("3 changes")),
        "{refused:?}"
    );
    assert_eq!(edge_price(&store, "A"), Some((100, 100)), "nothing applied");

    // The fan-out resyncs the edge with the whole table instead.
    assert_eq!(fan_out.publish_delta(big), Ok(2));
    assert_eq!(fan_out.edges_in_sync(), 1);
    assert_eq!(store.load().as_ref().unwrap().version(), 2);
    for (sku, price) in [("A", 110), ("B", 200), ("C", 300)] {
        assert_eq!(edge_price(&store, sku), Some((price, price)), "{sku}");
    }
    // A delta within the limit is still applied as a delta.
    let small = DeltaData {
        base_version: 2,
        version: 3,
        created_at_ms: NOW,
        promotions: None,
        upserts: vec![entry("D", 400)],
        removals: vec![PriceKey::chain_wide(Sku::new("C").unwrap())],
    };
    assert_eq!(direct.publish_delta(small), Ok(3));
    assert_eq!(edge_price(&store, "C"), None);
    handle.shutdown();
}
