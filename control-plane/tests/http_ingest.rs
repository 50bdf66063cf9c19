//! Feeds over HTTP into a running control plane with an in-process edge: what a
//! producer sees, and what reaches the edge.

mod support;

use std::sync::Arc;

use edgeprice_control::audit;
use edgeprice_control::feeds::FeedKind;
use edgeprice_control::http::{AdminToken, FeedSource, IngestHttpConfig, IngestServer};
use edgeprice_control::publish::InProcessEdge;
use edgeprice_control::runtime::{ControlPlane, RuntimeConfig};
use edgeprice_control::store::EventLog;
use edgeprice_schemas::admin::Role;
use edgeprice_server::SnapshotStore;
use support::{edge_price, eventually, now_ms, post, post_ndjson, request};

const POS_TOKEN: &str = "pos-token";
const SCRAPER_TOKEN: &str = "scraper-token";
const ADMIN_TOKEN: &str = "admin-token";

struct Running {
    control: ControlPlane,
    server: IngestServer,
}

fn start(dir: &std::path::Path, edge: &Arc<SnapshotStore>) -> Running {
    let control = ControlPlane::start(
        RuntimeConfig {
            data_dir: dir.to_owned(),
            ..RuntimeConfig::default()
        },
        InProcessEdge(edge.clone()),
    )
    .unwrap();
    let server = IngestServer::start(
        IngestHttpConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            sources: vec![
                FeedSource {
                    name: "pos".into(),
                    token: POS_TOKEN.into(),
                    ..FeedSource::default()
                },
                FeedSource {
                    name: "scraper".into(),
                    token: SCRAPER_TOKEN.into(),
                    feeds: vec![FeedKind::Competitor],
                    rate_per_s: 1,
                    burst: 3,
                },
            ],
            admin_tokens: vec![AdminToken {
                name: "ops".into(),
                token: ADMIN_TOKEN.into(),
                role: Role::Admin,
            }],
            ..IngestHttpConfig::default()
        },
        control.handle(Vec::new()),
    )
    .unwrap();
    Running { control, server }
}

#[test]
fn feeds_over_http_change_the_edge_price_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let edge = Arc::new(SnapshotStore::open(None).unwrap());
    let running = start(dir.path(), &edge);
    let addr = running.server.local_addr();
    let t = now_ms();

    let catalog = format!(
        r#"{{"event_id":"cat-1","sku":"A","category":"snacks","currency":"EUR","list_price_minor":1500,"tax_rate_bp":2000,"logistics_minor":100,"occurred_at_ms":{t}}}"#
    );
    let reply = post(addr, "catalog", POS_TOKEN, &catalog);
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(reply.body["status"], "accepted");
    assert_eq!(
        post(addr, "catalog", POS_TOKEN, &catalog).body["status"],
        "duplicate"
    );

    let costs = vec![
        format!(
            r#"{{"event_id":"cost-1","sku":"A","vendor":"acme","currency":"EUR","cost_minor":600,"effective_at_ms":{t},"occurred_at_ms":{t}}}"#
        ),
        String::new(),
        format!(
            r#"{{"event_id":"cost-2","sku":"A","vendor":"acme","currency":"EUR","cost_minor":800,"effective_at_ms":{t},"occurred_at_ms":{t}}}"#
        ),
    ];
    let reply = post_ndjson(addr, "cost", POS_TOKEN, &costs);
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(
        (
            reply.body["accepted"].as_i64(),
            reply.body["rejected"].as_i64()
        ),
        (Some(2), Some(0))
    );
    eventually("the cost to reach the edge", || {
        edge_price(&edge, "A") == Some((1_543, 1_543))
    });

    // A competitor below the floor cannot pull the price under it.
    let competitor = format!(
        r#"{{"event_id":"cmp-1","sku":"A","competitor":"rival","currency":"EUR","price_minor":1300,"occurred_at_ms":{t}}}"#
    );
    assert_eq!(
        post(addr, "competitor", SCRAPER_TOKEN, &competitor).status,
        202
    );
    running.control.flush().unwrap();
    assert_eq!(edge_price(&edge, "A"), Some((1_543, 1_543)));

    // Why A has its price.
    let reply = request(
        addr,
        "GET",
        "/v1/admin/decisions?sku=A&limit=1",
        Some(ADMIN_TOKEN),
        "application/json",
        "",
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let latest = &reply.body["decisions"][0];
    assert_eq!(latest["reason_code"], "min_margin");
    assert_eq!(latest["final_price_minor"], 1_543);
    assert_eq!(latest["inputs"]["cost_minor"], 800);
    let reply = request(
        addr,
        "GET",
        "/v1/admin/decisions?sku=A",
        Some(POS_TOKEN),
        "application/json",
        "",
    );
    assert_eq!(reply.status, 401);
    let reply = request(
        addr,
        "GET",
        "/v1/admin/decisions?sku=NOPE",
        Some(ADMIN_TOKEN),
        "application/json",
        "",
    );
    assert_eq!(
        (reply.status, reply.body["error"]["code"].as_str()),
        (404, Some("unknown_sku"))
    );

    // Refusals a producer sees, all kept as dead letters.
    let bad = [
        (
            "cost",
            "{\"event_id\":\"x\",".to_owned(),
            400,
            "malformed_json",
        ),
        (
            "cost",
            format!(
                r#"{{"event_id":"neg","sku":"A","vendor":"acme","currency":"EUR","cost_minor":-5,"effective_at_ms":{t},"occurred_at_ms":{t}}}"#
            ),
            400,
            "negative_amount",
        ),
        (
            "cost",
            format!(
                r#"{{"event_id":"unk","sku":"NOPE","vendor":"acme","currency":"EUR","cost_minor":5,"effective_at_ms":{t},"occurred_at_ms":{t}}}"#
            ),
            422,
            "unknown_sku",
        ),
        (
            "cost",
            format!(
                r#"{{"sku":"A","vendor":"acme","currency":"EUR","cost_minor":5,"effective_at_ms":{t},"occurred_at_ms":{t}}}"#
            ),
            400,
            "missing_event_id",
        ),
    ];
    for (feed, body, status, code) in &bad {
        let reply = post(addr, feed, POS_TOKEN, body);
        assert_eq!(
            (reply.status, reply.body["error"]["code"].as_str()),
            (*status, Some(*code)),
            "{body}"
        );
        assert!(reply.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    let mixed = vec![
        format!(
            r#"{{"event_id":"inv-1","sku":"A","kind":"on_hand","quantity":40,"occurred_at_ms":{t}}}"#
        ),
        format!(
            r#"{{"event_id":"inv-2","sku":"A","kind":"on_hand","quantity":-4,"occurred_at_ms":{t}}}"#
        ),
    ];
    let reply = post_ndjson(addr, "inventory", POS_TOKEN, &mixed);
    assert_eq!(reply.status, 400);
    assert_eq!(reply.body["accepted"], 1);
    assert_eq!(reply.body["results"][1]["code"], "negative_amount");
    assert!(reply.body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("line 2"));

    // Who may send what, and how much.
    let reply = request(
        addr,
        "POST",
        "/v1/feeds/cost",
        None,
        "application/json",
        &costs[0],
    );
    assert_eq!(
        (reply.status, reply.body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let reply = post(addr, "cost", SCRAPER_TOKEN, &costs[0]);
    assert_eq!(
        (reply.status, reply.body["error"]["code"].as_str()),
        (403, Some("forbidden_feed"))
    );
    let reply = post(addr, "prices", POS_TOKEN, &costs[0]);
    assert_eq!(
        (reply.status, reply.body["error"]["code"].as_str()),
        (404, Some("unknown_feed"))
    );
    let reply = request(
        addr,
        "GET",
        "/v1/feeds/cost",
        Some(POS_TOKEN),
        "application/json",
        "",
    );
    assert_eq!(reply.status, 405);
    let too_many: Vec<String> = (0..4)
        .map(|i| format!(r#"{{"event_id":"cmp-many-{i}","sku":"A","competitor":"rival","currency":"EUR","price_minor":1600,"occurred_at_ms":{t}}}"#))
        .collect();
    let reply = post_ndjson(addr, "competitor", SCRAPER_TOKEN, &too_many);
    assert_eq!(
        (reply.status, reply.body["error"]["code"].as_str()),
        (413, Some("too_many_events"))
    );
    // The scraper's bucket holds at most 3 and refills 1 per second: two events pass,
    // two more right after do not.
    let pair = |name: &str| -> Vec<String> {
        (0..2)
            .map(|i| format!(r#"{{"event_id":"cmp-{name}-{i}","sku":"A","competitor":"rival","currency":"EUR","price_minor":1600,"occurred_at_ms":{t}}}"#))
            .collect()
    };
    assert_eq!(
        post_ndjson(addr, "competitor", SCRAPER_TOKEN, &pair("first")).status,
        202
    );
    let reply = post_ndjson(addr, "competitor", SCRAPER_TOKEN, &pair("second"));
    assert_eq!(
        (reply.status, reply.body["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );
    assert!(reply.headers.contains("retry-after:"), "{}", reply.headers);

    // Restart: nothing accepted is lost, nothing is applied twice, the chain verifies.
    running.control.flush().unwrap();
    let decisions_before = running.control.decisions_for("A", 100).unwrap().len();
    drop(running);
    let running = start(dir.path(), &edge);
    let addr = running.server.local_addr();
    assert_eq!(
        post(addr, "cost", POS_TOKEN, &costs[2]).body["status"],
        "duplicate"
    );
    running.control.flush().unwrap();
    assert_eq!(edge_price(&edge, "A"), Some((1_543, 1_543)));
    assert_eq!(
        running.control.decisions_for("A", 100).unwrap().len(),
        decisions_before
    );
    let conn = rusqlite::Connection::open(dir.path().join("control.db")).unwrap();
    assert_eq!(EventLog::counts(&conn).unwrap(), (7, 0));
    assert_eq!(EventLog::dead_letters(&conn, 100).unwrap().len(), 5);
    assert!(audit::verify(&conn).unwrap().is_intact());
}
