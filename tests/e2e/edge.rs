//! The edge price server through its HTTP API.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeprice_schemas::codec::{encode_delta, encode_snapshot, DeltaData, SnapshotData};
use edgeprice_schemas::fb;
use edgeprice_server::store::now_ms;
use edgeprice_server::{ApiConfig, Transport};

use crate::assert_eventually;
use crate::support::{entry, key, promotion, request, Edge, TOKEN};

fn snapshot(version: u64, entries: Vec<edgeprice_pricing::PriceEntry>) -> Vec<u8> {
    encode_snapshot(&SnapshotData {
        version,
        created_at_ms: now_ms(),
        promotions: None,
        entries,
    })
}

fn delta(
    base: u64,
    upserts: Vec<edgeprice_pricing::PriceEntry>,
    removals: Vec<edgeprice_pricing::PriceKey>,
) -> Vec<u8> {
    encode_delta(&DeltaData {
        base_version: base,
        version: base + 1,
        created_at_ms: now_ms(),
        promotions: None,
        upserts,
        removals,
    })
}

fn loaded_edge(transport: Transport, entries: Vec<edgeprice_pricing::PriceEntry>) -> Edge {
    let edge = Edge::start(transport, None);
    let reply = edge.admin_post("/v1/admin/snapshot", &snapshot(1, entries));
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    edge
}

fn price_of(edge: &Edge, path: &str) -> i64 {
    let reply = edge.get(path);
    assert_eq!(
        reply.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()["price_minor"].as_i64().unwrap()
}

fn readiness_follows_the_first_snapshot(transport: Transport) {
    let edge = Edge::start(transport, None);
    assert_eq!(edge.get("/healthz").status, 200);
    let reply = edge.get("/readyz");
    assert_eq!((reply.status, reply.code().as_str()), (503, "no_snapshot"));
    assert_eq!(edge.get("/v1/prices/A").status, 503);
    edge.admin_post(
        "/v1/admin/snapshot",
        &snapshot(1, vec![entry(key("A", "*", "*", "*"), 100)]),
    );
    let reply = edge.get("/readyz");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["snapshot_version"], 1);
}

fn fallback_resolution_over_http(transport: Transport) {
    let edge = loaded_edge(
        transport,
        vec![
            entry(key("A", "*", "*", "*"), 1000),
            entry(key("A", "s1", "*", "*"), 900),
            entry(key("A", "s1", "web", "*"), 800),
            entry(key("A", "*", "app", "*"), 950),
            entry(key("A", "*", "*", "gold"), 700),
            entry(key("A", "s1", "web", "gold"), 600),
        ],
    );
    assert_eq!(price_of(&edge, "/v1/prices/A"), 1000);
    assert_eq!(price_of(&edge, "/v1/prices/A?store=s1"), 900);
    assert_eq!(price_of(&edge, "/v1/prices/A?store=s1&channel=web"), 800);
    assert_eq!(
        price_of(&edge, "/v1/prices/A?store=s1&channel=app"),
        900,
        "store outranks channel"
    );
    assert_eq!(price_of(&edge, "/v1/prices/A?store=s2&channel=app"), 950);
    assert_eq!(price_of(&edge, "/v1/prices/A?store=s2&segment=gold"), 700);
    assert_eq!(
        price_of(&edge, "/v1/prices/A?store=s1&channel=web&segment=gold"),
        600
    );
    assert_eq!(
        price_of(&edge, "/v1/prices/A?store=s1&segment=gold"),
        900,
        "store outranks segment"
    );
    let body = edge
        .get("/v1/prices/A?store=s1&channel=web&segment=silver")
        .json();
    assert_eq!(
        (
            body["store"].as_str(),
            body["channel"].as_str(),
            body["segment"].as_str()
        ),
        (Some("s1"), Some("web"), Some("*"))
    );
    assert_eq!(body["list_price_minor"], 900);
    assert_eq!(body["floor_minor"], 400);
    assert_eq!(body["currency"], "EUR");
    assert_eq!(body["snapshot_version"], 1);
}

fn active_promotions_price_the_answer_and_bound_its_validity(transport: Transport) {
    let now = now_ms();
    let mut on_sale = entry(key("P", "*", "*", "*"), 1000);
    on_sale.promotion = Some(promotion("flash", 700, now - 60_000, now + 3_600_000));
    let mut below_floor = entry(key("F", "*", "*", "*"), 1000);
    below_floor.promotion = Some(promotion("deep", 100, now - 60_000, now + 3_600_000));
    let mut upcoming = entry(key("U", "*", "*", "*"), 1000);
    upcoming.promotion = Some(promotion("later", 700, now + 3_600_000, now + 7_200_000));
    let edge = loaded_edge(transport, vec![on_sale, below_floor, upcoming]);

    let body = edge.get("/v1/prices/P").json();
    assert_eq!(body["price_minor"], 700);
    assert_eq!(body["promotion"]["id"], "flash");
    assert_eq!(body["promotion"]["label"], "flash label");
    assert!(body["promotion"]["ends_at"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert_eq!(body["valid_until"], body["promotion"]["ends_at"]);

    let body = edge.get("/v1/prices/F").json();
    assert_eq!(body["price_minor"], 500, "clamped at the floor");
    assert_eq!(body["promotion"]["price_minor"], 500);

    let body = edge.get("/v1/prices/U").json();
    assert_eq!(body["price_minor"], 1000);
    assert!(body["promotion"].is_null());
    assert!(
        body["valid_until"].is_string(),
        "the answer changes when the promotion starts"
    );
}

fn etag_and_conditional_requests(transport: Transport) {
    let edge = loaded_edge(
        transport,
        vec![
            entry(key("A", "*", "*", "*"), 1000),
            entry(key("B", "*", "*", "*"), 2000),
        ],
    );
    let first = edge.get("/v1/prices/A");
    let etag = first.header("etag").expect("etag").to_owned();
    assert!(etag.starts_with("W/\""));
    let again = edge.get_with("/v1/prices/A", &[("If-None-Match", &etag)]);
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    assert_eq!(
        edge.get_with(
            "/v1/prices/A",
            &[("If-None-Match", "W/\"0000000000000000\"")]
        )
        .status,
        200
    );

    // A delta that changes only B leaves A's tag valid.
    assert_eq!(
        edge.admin_post(
            "/v1/admin/snapshot/delta",
            &delta(1, vec![entry(key("B", "*", "*", "*"), 2100)], vec![])
        )
        .status,
        200
    );
    assert_eq!(
        edge.get_with("/v1/prices/A", &[("If-None-Match", &etag)])
            .status,
        304
    );

    // A delta that changes A invalidates it.
    assert_eq!(
        edge.admin_post(
            "/v1/admin/snapshot/delta",
            &delta(2, vec![entry(key("A", "*", "*", "*"), 999)], vec![])
        )
        .status,
        200
    );
    let changed = edge.get_with("/v1/prices/A", &[("If-None-Match", &etag)]);
    assert_eq!(changed.status, 200);
    assert_ne!(changed.header("etag"), Some(etag.as_str()));
    assert_eq!(changed.json()["price_minor"], 999);

    // JSON and flatbuffers are different representations.
    let fb = edge.get_with("/v1/prices/A", &[("Accept", "application/x-flatbuffers")]);
    assert_ne!(fb.header("etag"), changed.header("etag"));
}

fn flatbuffers_answers_carry_the_same_price_as_json(transport: Transport) {
    let now = now_ms();
    let mut a = entry(key("A", "s1", "web", "*"), 1234);
    a.promotion = Some(promotion("p1", 1200, now - 1000, now + 60_000));
    let edge = loaded_edge(transport, vec![a, entry(key("B", "*", "*", "*"), 50)]);
    let json = edge.get("/v1/prices/A?store=s1&channel=web").json();
    let reply = edge.get_with(
        "/v1/prices/A?store=s1&channel=web",
        &[("Accept", "application/x-flatbuffers")],
    );
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("application/x-flatbuffers")
    );
    let answer = flatbuffers::root::<fb::PriceAnswer>(&reply.body).expect("valid PriceAnswer");
    assert_eq!(answer.sku(), json["sku"].as_str().unwrap());
    assert_eq!(answer.store(), json["store"].as_str());
    assert_eq!(answer.channel(), json["channel"].as_str());
    assert_eq!(answer.currency(), Some("EUR"));
    assert_eq!(answer.price_minor(), json["price_minor"].as_i64().unwrap());
    assert_eq!(answer.price_minor(), 1200);
    assert_eq!(
        answer.list_price_minor(),
        json["list_price_minor"].as_i64().unwrap()
    );
    assert_eq!(answer.floor_minor(), json["floor_minor"].as_i64().unwrap());
    assert_eq!(answer.promotion().unwrap().id(), "p1");
    assert_eq!(answer.snapshot_version(), 1);

    let reply = edge.get_with(
        "/v1/prices?skus=A,B,C&store=s1&channel=web",
        &[("Accept", "application/x-flatbuffers")],
    );
    let batch = flatbuffers::root::<fb::PriceBatch>(&reply.body).expect("valid PriceBatch");
    assert_eq!(batch.snapshot_version(), 1);
    let prices: Vec<_> = batch
        .prices()
        .unwrap()
        .iter()
        .map(|p| (p.sku().to_owned(), p.price_minor()))
        .collect();
    assert_eq!(prices, vec![("A".to_owned(), 1200), ("B".to_owned(), 50)]);
    assert_eq!(
        batch.missing().unwrap().iter().collect::<Vec<_>>(),
        vec!["C"]
    );
}

fn error_paths_answer_with_clear_codes(transport: Transport) {
    let edge = Edge::start_with(
        transport,
        None,
        ApiConfig {
            admin_token: Some(TOKEN.into()),
            batch_limit: 3,
            max_upload_bytes: 4096,
            max_delta_changes: 2,
            max_snapshot_entries: 2,
        },
    );
    edge.admin_post(
        "/v1/admin/snapshot",
        &snapshot(1, vec![entry(key("A", "s1", "*", "*"), 1000)]),
    );
    let cases: &[(&str, u16, &str)] = &[
        ("/v1/prices/NOPE", 404, "unknown_sku"),
        ("/v1/prices/A?store=s2", 404, "unknown_sku"),
        ("/v1/prices/bad%20sku", 400, "invalid_key"),
        ("/v1/prices/bad*sku", 400, "invalid_key"),
        ("/v1/prices/a/b", 400, "invalid_key"),
        ("/v1/prices/A?store=bad%2Fstore", 400, "invalid_key"),
        ("/v1/prices/A%zz", 400, "invalid_encoding"),
        ("/v1/prices?skus=A,B,C,D", 400, "too_many_skus"),
        ("/v1/prices?skus=A,,B", 400, "invalid_key"),
        ("/v1/prices", 400, "missing_skus"),
        ("/v2/anything", 404, "not_found"),
    ];
    for (path, status, code) in cases {
        let reply = edge.get(path);
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (*status, *code),
            "{path}"
        );
        assert_eq!(reply.header("content-type"), Some("application/json"));
    }
    let long = format!("/v1/prices/{}", "X".repeat(65));
    let reply = edge.get(&long);
    assert_eq!((reply.status, reply.code().as_str()), (400, "invalid_key"));
    assert!(reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("limit is 64"));

    for method in ["POST", "PUT", "DELETE"] {
        let reply = request(edge.addr, method, "/v1/prices/A", &[], b"");
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (405, "method_not_allowed"),
            "{method}"
        );
        assert_eq!(reply.header("allow"), Some("GET, HEAD"));
    }
    assert_eq!(
        request(edge.addr, "GET", "/v1/admin/snapshot/delta", &[], b"").status,
        405
    );

    // Admin authentication.
    let reply = request(edge.addr, "POST", "/v1/admin/snapshot/delta", &[], b"x");
    assert_eq!((reply.status, reply.code().as_str()), (401, "unauthorized"));
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    let reply = request(
        edge.addr,
        "POST",
        "/v1/admin/snapshot/delta",
        &[("Authorization", "Bearer wrong")],
        b"x",
    );
    assert_eq!(reply.status, 401);
    let disabled = Edge::start_with(transport, None, ApiConfig::default());
    let reply = request(
        disabled.addr,
        "POST",
        "/v1/admin/snapshot",
        &[("Authorization", "Bearer anything")],
        b"x",
    );
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (403, "admin_disabled")
    );

    // Bad uploads change nothing.
    let reply = edge.admin_post("/v1/admin/snapshot/delta", b"not a flatbuffer");
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (400, "invalid_delta")
    );
    let reply = edge.admin_post("/v1/admin/snapshot", &delta(1, vec![], vec![]));
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (400, "invalid_snapshot")
    );
    let reply = edge.admin_post("/v1/admin/snapshot/delta", &delta(7, vec![], vec![]));
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (409, "version_conflict")
    );
    assert_eq!(reply.json()["error"]["current_version"], 1);
    let reply = edge.admin_post("/v1/admin/snapshot", &snapshot(1, vec![]));
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (409, "stale_snapshot")
    );
    let big = vec![b'x'; 8192];
    let reply = edge.admin_post("/v1/admin/snapshot/delta", &big);
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (413, "body_too_large")
    );
    let three = delta(
        1,
        vec![entry(key("A", "s1", "*", "*"), 5)],
        vec![key("B", "*", "*", "*"), key("C", "*", "*", "*")],
    );
    let reply = edge.admin_post("/v1/admin/snapshot/delta", &three);
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (413, "delta_too_large")
    );
    assert!(reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("3 changes"));
    let three_entries = snapshot(
        2,
        vec![
            entry(key("A", "s1", "*", "*"), 5),
            entry(key("B", "*", "*", "*"), 6),
            entry(key("C", "*", "*", "*"), 7),
        ],
    );
    let reply = edge.admin_post("/v1/admin/snapshot", &three_entries);
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (413, "snapshot_too_large")
    );
    let dup = snapshot(
        2,
        vec![
            entry(key("A", "*", "*", "*"), 1),
            entry(key("A", "*", "*", "*"), 2),
        ],
    );
    let reply = edge.admin_post("/v1/admin/snapshot", &dup);
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (400, "duplicate_key")
    );
    assert_eq!(price_of(&edge, "/v1/prices/A?store=s1"), 1000);

    let metrics = String::from_utf8(edge.get("/metrics").body).unwrap();
    assert!(
        metrics.contains("edgeprice_http_requests_total{route=\"price\",status=\"404\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("edgeprice_snapshot_updates_total{result=\"failed\"} 5"),
        "{metrics}"
    );
    // The 413s (the transport's body limit, the delta's and the snapshot's) are counted.
    assert!(
        metrics.contains("edgeprice_http_requests_total{route=\"admin\",status=\"413\"} 3"),
        "{metrics}"
    );
}

/// Readers hammer the batch endpoint while a writer applies deltas that set every SKU's
/// price to the new version number: a batch mixing two versions would show prices that
/// differ from each other or from its `snapshot_version`.
fn batches_never_mix_versions_during_concurrent_swaps(transport: Transport) {
    const SKUS: usize = 40;
    let entries = |version: u64| -> Vec<_> {
        (0..SKUS)
            .map(|i| entry(key(&format!("S{i}"), "*", "*", "*"), version as i64))
            .collect()
    };
    let edge = Arc::new(loaded_edge(transport, entries(1)));
    let path = format!(
        "/v1/prices?skus={}",
        (0..SKUS)
            .map(|i| format!("S{i}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (edge, path, stop) = (Arc::clone(&edge), path.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut seen = std::collections::BTreeSet::new();
                while !stop.load(Ordering::Relaxed) {
                    let body = edge.get(&path).json();
                    let version = body["snapshot_version"].as_i64().unwrap();
                    let prices: Vec<i64> = body["prices"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| p["price_minor"].as_i64().unwrap())
                        .collect();
                    assert_eq!(prices.len(), SKUS);
                    assert!(
                        prices.iter().all(|&p| p == version),
                        "version {version} answered {prices:?}"
                    );
                    seen.insert(version);
                }
                seen.len()
            })
        })
        .collect();
    let started = Instant::now();
    let mut version = 1;
    while started.elapsed() < Duration::from_secs(2) {
        let reply = edge.admin_post(
            "/v1/admin/snapshot/delta",
            &delta(version, entries(version + 1), vec![]),
        );
        assert_eq!(reply.status, 200);
        version += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        let versions_seen = reader.join().expect("reader saw a mixed batch");
        assert!(versions_seen > 1, "readers must overlap with swaps");
    }
    assert!(version > 10, "only {version} deltas applied");
}

fn restart_serves_the_persisted_snapshot(transport: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(transport, Some(dir.path().into()));
    edge.admin_post(
        "/v1/admin/snapshot",
        &snapshot(
            5,
            vec![
                entry(key("A", "*", "*", "*"), 100),
                entry(key("B", "*", "*", "*"), 200),
            ],
        ),
    );
    assert_eq!(
        edge.admin_post(
            "/v1/admin/snapshot/delta",
            &delta(5, vec![entry(key("A", "*", "*", "*"), 150)], vec![])
        )
        .status,
        200
    );
    assert_eq!(
        edge.admin_post(
            "/v1/admin/snapshot/delta",
            &delta(6, vec![], vec![key("B", "*", "*", "*")])
        )
        .status,
        200
    );
    edge.stop();

    let edge = Edge::start(transport, Some(dir.path().into()));
    assert_eventually!(
        edge.get("/readyz").status == 200,
        "restarted edge never became ready"
    );
    assert_eq!(edge.get("/readyz").json()["snapshot_version"], 7);
    assert_eq!(price_of(&edge, "/v1/prices/A"), 150);
    assert_eq!(edge.get("/v1/prices/B").status, 404);
    let info = request(
        edge.addr,
        "GET",
        "/v1/admin/snapshot",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        b"",
    )
    .json();
    assert_eq!(info["version"], 7);
    assert_eq!(info["entries"], 1);
    // The chain continues from the recovered version.
    assert_eq!(
        edge.admin_post(
            "/v1/admin/snapshot/delta",
            &delta(7, vec![entry(key("C", "*", "*", "*"), 1)], vec![])
        )
        .status,
        200
    );
}

fn metrics_report_snapshot_version_and_age(transport: Transport) {
    let edge = loaded_edge(transport, vec![entry(key("A", "*", "*", "*"), 1)]);
    edge.get("/v1/prices/A");
    let text = String::from_utf8(edge.get("/metrics").body).unwrap();
    for needle in [
        "edgeprice_snapshot_version 1",
        "edgeprice_snapshot_entries 1",
        "edgeprice_snapshot_age_seconds ",
        "edgeprice_ready 1",
        "edgeprice_http_requests_total{route=\"price\",status=\"200\"} 1",
        "edgeprice_http_request_duration_seconds_count{route=\"price\"} 1",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}

crate::each_transport!(
    readiness_follows_the_first_snapshot,
    fallback_resolution_over_http,
    active_promotions_price_the_answer_and_bound_its_validity,
    etag_and_conditional_requests,
    flatbuffers_answers_carry_the_same_price_as_json,
    error_paths_answer_with_clear_codes,
    batches_never_mix_versions_during_concurrent_swaps,
    restart_serves_the_persisted_snapshot,
    metrics_report_snapshot_version_and_age,
);
