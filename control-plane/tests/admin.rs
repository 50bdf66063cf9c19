//! The admin API over HTTP against a running control plane with an in-process edge:
//! roles and tokens on every route, overrides (floor rules, scope, expiry), each kill
//! switch as seen at the edge, promotions defined through the control plane with a dry
//! run, and the audit trail of it all.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeprice_control::audit;
use edgeprice_control::http::{AdminToken, FeedSource, IngestHttpConfig, IngestServer};
use edgeprice_control::publish::InProcessEdge;
use edgeprice_control::runtime::{ControlPlane, RuntimeConfig};
use edgeprice_pricing::PriceEntry;
use edgeprice_schemas::admin::Role;
use edgeprice_server::SnapshotStore;
use serde_json::{json, Value};
use support::{eventually, now_ms, post, request, Reply};

const FEED: &str = "feed-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789";
const OPERATOR: &str = "operator-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

struct Plant {
    edge: Arc<SnapshotStore>,
    control: ControlPlane,
    server: IngestServer,
    dir: tempfile::TempDir,
}

impl Plant {
    fn start() -> Plant {
        let dir = tempfile::tempdir().unwrap();
        let edge = Arc::new(SnapshotStore::open(None).unwrap());
        let control = ControlPlane::start(
            RuntimeConfig {
                data_dir: dir.path().to_owned(),
                tick_ms: 100,
                ..RuntimeConfig::default()
            },
            InProcessEdge(edge.clone()),
        )
        .unwrap();
        let token = |name: &str, token: &str, role| AdminToken {
            name: name.into(),
            token: token.into(),
            role,
        };
        let server = IngestServer::start(
            IngestHttpConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                sources: vec![FeedSource {
                    name: "pos".into(),
                    token: FEED.into(),
                    ..FeedSource::default()
                }],
                admin_tokens: vec![
                    token("vera", VIEWER, Role::Viewer),
                    token("otto", OPERATOR, Role::Operator),
                    token("ada", ADMIN, Role::Admin),
                ],
                ..IngestHttpConfig::default()
            },
            control.handle(Vec::new()),
        )
        .unwrap();
        let plant = Plant {
            edge,
            control,
            server,
            dir,
        };
        let t = now_ms();
        // A: list 15.00, cost 6.00 + 1.00 logistics, 20% VAT: floor 12.00 at 30% margin.
        for sku in ["A", "B"] {
            plant.feed("catalog", &format!(
                r#"{{"event_id":"cat-{sku}","sku":"{sku}","category":"snacks","currency":"EUR","list_price_minor":1500,"tax_rate_bp":2000,"logistics_minor":100,"occurred_at_ms":{t}}}"#
            ));
            plant.feed("cost", &format!(
                r#"{{"event_id":"cost-{sku}","sku":"{sku}","vendor":"acme","currency":"EUR","cost_minor":600,"effective_at_ms":{t},"occurred_at_ms":{t}}}"#
            ));
        }
        plant.control.flush().unwrap();
        for sku in ["A", "B"] {
            let entry = plant.entry(sku).map(|e| (e.price_minor, e.floor_minor));
            if entry != Some((1_500, 1_200)) {
                let decisions = plant.get(&format!("/v1/admin/decisions?sku={sku}"));
                panic!("{sku}: {entry:?}\n{decisions:#}");
            }
        }
        plant
    }

    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    fn feed(&self, feed: &str, body: &str) {
        let reply = post(self.addr(), feed, FEED, body);
        assert_eq!(reply.status, 202, "{feed}: {}", reply.body);
    }

    fn call(&self, method: &str, path: &str, token: Option<&str>, body: &Value) -> Reply {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        request(self.addr(), method, path, token, "application/json", &body)
    }

    fn get(&self, path: &str) -> Value {
        let reply = self.call("GET", path, Some(VIEWER), &Value::Null);
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.body);
        reply.body
    }

    /// The edge's entry for a key (`sku@store/channel/segment`).
    fn entry_at(&self, key: &str) -> Option<PriceEntry> {
        let guard = self.edge.load();
        let snapshot = guard.as_ref()?;
        let found = snapshot.entries().find(|e| e.key.to_string() == key);
        found
    }

    fn entry(&self, sku: &str) -> Option<PriceEntry> {
        self.entry_at(&format!("{sku}@*/*/*"))
    }

    fn promotion_ids_at_edge(&self) -> Vec<String> {
        let guard = self.edge.load();
        guard
            .as_ref()
            .and_then(|s| s.promotions().cloned())
            .map(|p| p.doc().promotions.iter().map(|p| p.id.clone()).collect())
            .unwrap_or_default()
    }

    fn switch(&self, token: &str, switch: Value, engaged: bool, dry_run: bool) -> Reply {
        self.call(
            "POST",
            "/v1/admin/kill-switches",
            Some(token),
            &json!({"switch": switch, "engaged": engaged, "reason": "incident 42", "dry_run": dry_run}),
        )
    }
}

/// How long until `check` holds, failing after five seconds.
fn time_until(what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    eventually(what, &mut check);
    started.elapsed()
}

#[test]
fn every_admin_route_checks_the_token_and_the_role() {
    let plant = Plant::start();
    let reads = [
        "/v1/admin/whoami",
        "/v1/admin/metrics",
        "/v1/admin/alerts",
        "/v1/admin/skus",
        "/v1/admin/skus/A",
        "/v1/admin/decisions?sku=A",
        "/v1/admin/overrides",
        "/v1/admin/kill-switches",
        "/v1/admin/promotions",
        "/v1/admin/audit",
        "/v1/admin/approvals",
    ];
    for path in reads {
        for (token, status) in [(None, 401), (Some("not-a-token"), 401), (Some(FEED), 401)] {
            let reply = plant.call("GET", path, token, &Value::Null);
            assert_eq!(reply.status, status, "GET {path} with {token:?}");
            assert_eq!(reply.body["error"]["code"], "unauthorized");
        }
        for token in [VIEWER, OPERATOR, ADMIN] {
            let reply = plant.call("GET", path, Some(token), &Value::Null);
            assert_eq!(reply.status, 200, "GET {path}: {}", reply.body);
        }
    }
    let writes = [
        ("POST", "/v1/admin/overrides"),
        ("DELETE", "/v1/admin/overrides/1?reason=x"),
        ("POST", "/v1/admin/kill-switches"),
        ("PUT", "/v1/admin/promotions/p1?reason=x"),
        ("DELETE", "/v1/admin/promotions/p1?reason=x"),
        ("POST", "/v1/admin/approvals/A"),
    ];
    for (method, path) in writes {
        let reply = plant.call(method, path, None, &Value::Null);
        assert_eq!(reply.status, 401, "{method} {path}");
        let reply = plant.call(method, path, Some(VIEWER), &json!({}));
        assert_eq!(reply.status, 403, "{method} {path}: {}", reply.body);
        assert_eq!(reply.body["error"]["code"], "forbidden");
        assert!(reply.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs operator"));
        // An operator gets past authorization (the empty body is then refused).
        let reply = plant.call(method, path, Some(OPERATOR), &json!({}));
        assert!(
            ![401, 403].contains(&reply.status),
            "{method} {path}: {}",
            reply.body
        );
    }
    let whoami = plant.call("GET", "/v1/admin/whoami", Some(OPERATOR), &Value::Null);
    assert_eq!(whoami.body, json!({"name": "otto", "role": "operator"}));
    let reply = plant.call("GET", "/v1/admin/nope", Some(VIEWER), &Value::Null);
    assert_eq!(reply.status, 404);
    let reply = plant.call("PATCH", "/v1/admin/overrides", Some(ADMIN), &Value::Null);
    assert_eq!(reply.status, 405);
    let reply = plant.call(
        "GET",
        "/v1/admin/skus?sort=colour",
        Some(VIEWER),
        &Value::Null,
    );
    assert_eq!(reply.body["error"]["code"], "invalid_sort");
}

#[test]
fn overrides_pin_prices_at_the_edge_keep_the_floor_and_expire() {
    let plant = Plant::start();
    let later = now_ms() + 3_600_000;
    let pin = |token: &str, price: i64, store: Option<&str>, force: bool, expires: i64| {
        plant.call(
            "POST",
            "/v1/admin/overrides",
            Some(token),
            &json!({"sku": "A", "store": store, "price_minor": price, "currency": "EUR",
                    "expires_at_ms": expires, "reason": "price match for a key account", "force": force}),
        )
    };
    let reply = pin(OPERATOR, 1_400, None, false, later);
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.body["by"], "otto");
    assert_eq!(plant.entry("A").unwrap().price_minor, 1_400);

    // Below the floor: refused, then forbidden for an operator, then forced by an admin.
    let reply = pin(OPERATOR, 1_000, None, false, later);
    assert_eq!(
        (reply.status, reply.body["error"]["code"].as_str()),
        (422, Some("below_floor"))
    );
    let reply = pin(OPERATOR, 1_000, None, true, later);
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_eq!(
        plant.entry("A").unwrap().price_minor,
        1_400,
        "refusals change nothing"
    );
    let reply = pin(ADMIN, 1_000, None, true, later);
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.body["below_floor"], true);
    let entry = plant.entry("A").unwrap();
    assert_eq!((entry.price_minor, entry.floor_minor), (1_000, 1_000));

    // Bad requests.
    let reply = pin(OPERATOR, 1_400, None, false, now_ms() - 1);
    assert_eq!(reply.body["error"]["code"], "invalid_expiry");
    let reply = plant.call("POST", "/v1/admin/overrides", Some(OPERATOR),
        &json!({"sku": "A", "price_minor": 1_400, "currency": "USD", "expires_at_ms": later, "reason": "x"}));
    assert_eq!(reply.body["error"]["code"], "currency_mismatch");
    let reply = plant.call("POST", "/v1/admin/overrides", Some(OPERATOR),
        &json!({"sku": "NOPE", "price_minor": 1_400, "currency": "EUR", "expires_at_ms": later, "reason": "x"}));
    assert_eq!(reply.status, 404);
    let reply = plant.call("POST", "/v1/admin/overrides", Some(OPERATOR),
        &json!({"sku": "A", "price_minor": 1_400, "currency": "EUR", "expires_at_ms": later, "reason": " "}));
    assert_eq!(reply.body["error"]["code"], "missing_reason");
    let reply = plant.call(
        "POST",
        "/v1/admin/overrides",
        Some(OPERATOR),
        &json!({"sku": "A"}),
    );
    assert_eq!(
        (reply.status, reply.body["error"]["code"].as_str()),
        (400, Some("malformed_body"))
    );

    // A store-scoped pin that runs out: the edge's store entry goes away within a second
    // of its expiry.
    let expires = now_ms() + 1_500;
    let reply = pin(OPERATOR, 1_300, Some("store-7"), false, expires);
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(plant.entry_at("A@store-7/*/*").unwrap().price_minor, 1_300);
    let overrides = plant.get("/v1/admin/overrides");
    assert_eq!(overrides.as_array().unwrap().len(), 2);
    eventually("the store override to expire", || {
        plant.entry_at("A@store-7/*/*").is_none()
    });
    assert!(
        now_ms() - expires < 1_000,
        "expired {} ms late",
        now_ms() - expires
    );
    assert_eq!(
        plant.get("/v1/admin/overrides").as_array().unwrap().len(),
        1
    );

    // Ending the chain-wide pin brings the decided price back.
    let id = plant.get("/v1/admin/overrides")[0]["id"].as_u64().unwrap();
    let reply = plant.call(
        "DELETE",
        &format!("/v1/admin/overrides/{id}?reason=deal%20over"),
        Some(OPERATOR),
        &Value::Null,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["ended_by"], "otto");
    let entry = plant.entry("A").unwrap();
    assert_eq!((entry.price_minor, entry.floor_minor), (1_500, 1_200));
    let reply = plant.call(
        "DELETE",
        &format!("/v1/admin/overrides/{id}?reason=again"),
        Some(OPERATOR),
        &Value::Null,
    );
    assert_eq!(reply.status, 404);

    // Everything is in the audit log, which verifies.
    let audit_rows = plant.get("/v1/admin/audit?limit=50");
    let kinds: Vec<&str> = audit_rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"override_below_floor"), "{kinds:?}");
    assert_eq!(
        kinds.iter().filter(|k| **k == "override_end").count(),
        2,
        "{kinds:?}"
    );
    let expiry = audit_rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["actor"] == "expiry")
        .expect("expiry audited");
    assert_eq!(expiry["sku"], "A");
    let conn = rusqlite::Connection::open(plant.dir.path().join("control.db")).unwrap();
    assert!(audit::verify(&conn).unwrap().is_intact());
}

#[test]
fn each_kill_switch_is_seen_at_the_edge_within_a_second() {
    let plant = Plant::start();
    let t = now_ms();
    plant.feed("promotions", &format!(
        r#"{{"event_id":"promo-1","promotion_id":"spring","sku":"A","action":"upsert","label":"Spring -10%","discount":{{"kind":"percent_bp","value":1000}},"starts_at_ms":{},"ends_at_ms":{},"occurred_at_ms":{t}}}"#,
        t - 60_000,
        t + 3_600_000
    ));
    plant.control.flush().unwrap();
    let tag = |plant: &Plant| plant.entry("A").and_then(|e| e.promotion).map(|p| p.id);
    assert_eq!(tag(&plant).as_deref(), Some("spring"));

    // A dry run only reports the blast radius.
    let reply = plant.switch(
        OPERATOR,
        json!({"kind": "promotion", "id": "spring"}),
        true,
        true,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["blast_radius"]["skus"], 1);
    assert_eq!(reply.body["engaged"], false);
    assert_eq!(tag(&plant).as_deref(), Some("spring"));

    for switch in [
        json!({"kind": "promotion", "id": "spring"}),
        json!({"kind": "all_promotions"}),
    ] {
        let started = Instant::now();
        let reply = plant.switch(OPERATOR, switch.clone(), true, false);
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body["engaged"], true);
        let elapsed = started.elapsed()
            + time_until("the promotion to leave the edge", || tag(&plant).is_none());
        assert!(elapsed < Duration::from_secs(1), "{switch}: {elapsed:?}");
        let state = plant.get("/v1/admin/kill-switches");
        assert_eq!(state["engaged"][0]["by"], "otto");
        assert_eq!(plant.get("/v1/admin/metrics")["kill_switches_active"], 1);
        let reply = plant.switch(OPERATOR, switch, false, false);
        assert_eq!(reply.status, 200, "{}", reply.body);
        time_until("the promotion to come back", || {
            tag(&plant).as_deref() == Some("spring")
        });
    }

    // Freeze: a cost rise moves B but not the frozen A.
    let started = Instant::now();
    let reply = plant.switch(
        OPERATOR,
        json!({"kind": "freeze_sku", "sku": "A"}),
        true,
        false,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(started.elapsed() < Duration::from_secs(1));
    for sku in ["A", "B"] {
        plant.feed("cost", &format!(
            r#"{{"event_id":"cost2-{sku}","sku":"{sku}","vendor":"acme","currency":"EUR","cost_minor":850,"effective_at_ms":{t},"occurred_at_ms":{t}}}"#
        ));
    }
    plant.control.flush().unwrap();
    assert!(
        plant.entry("B").unwrap().price_minor > 1_500,
        "B follows its cost"
    );
    assert_eq!(plant.entry("A").unwrap().price_minor, 1_500, "A is frozen");
    assert_eq!(plant.get("/v1/admin/skus/A")["row"]["frozen"], true);
    plant.switch(
        OPERATOR,
        json!({"kind": "freeze_sku", "sku": "A"}),
        false,
        false,
    );
    let moved = time_until("A to follow its cost once thawed", || {
        plant.entry("A").unwrap().price_minor > 1_500
    });
    assert!(moved < Duration::from_secs(1));

    // Pause: events are accepted and wait; prices move again on release.
    let reply = plant.switch(OPERATOR, json!({"kind": "pipeline"}), true, false);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let before = plant.entry("B").unwrap().price_minor;
    plant.feed("cost", &format!(
        r#"{{"event_id":"cost3-B","sku":"B","vendor":"acme","currency":"EUR","cost_minor":1000,"effective_at_ms":{t},"occurred_at_ms":{t}}}"#
    ));
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(plant.entry("B").unwrap().price_minor, before, "paused");
    let metrics = plant.get("/v1/admin/metrics");
    assert_eq!(metrics["pipeline"]["paused"], true);
    assert!(
        metrics["pipeline"]["backlog"].as_u64().unwrap() >= 1,
        "{metrics}"
    );
    plant.switch(OPERATOR, json!({"kind": "pipeline"}), false, false);
    let resumed = time_until("B to move after the pause", || {
        plant.entry("B").unwrap().price_minor > before
    });
    assert!(resumed < Duration::from_secs(1), "{resumed:?}");

    // Close checkout.
    let reply = plant.switch(OPERATOR, json!({"kind": "checkout"}), true, false);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(plant.get("/v1/admin/metrics")["checkout"]["open"], false);

    // Every flip is audited with who and why.
    let audit_rows = plant.get("/v1/admin/audit?limit=100");
    let flips: Vec<&Value> = audit_rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "kill_switch")
        .collect();
    assert_eq!(flips.len(), 9, "{audit_rows}");
    assert!(flips
        .iter()
        .all(|r| r["actor"] == "otto" && r["record"]["reason"] == "incident 42"));
}

#[test]
fn promotions_are_defined_tried_published_and_ended_through_the_control_plane() {
    let plant = Plant::start();
    let definition = json!({
        "id": "snack-week",
        "label": "Snack week -25%",
        "rule": {"type": "percent_off", "basis_points": 2500},
        "target": {"type": "skus", "skus": ["A"]},
    });
    // The dry run: A would drop to 11.25 but stops at its floor (12.00).
    let reply = plant.call(
        "POST",
        "/v1/admin/promotions/dry-run",
        Some(VIEWER),
        &json!({
            "promotion": definition,
            "carts": [{"lines": [["A", 2], ["B", 1]]}],
        }),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["skus_changed"], 1);
    assert_eq!(reply.body["floor_hits"], 1);
    assert_eq!(reply.body["skus"][0]["after_minor"], 1_200);
    assert_eq!(reply.body["carts"][0]["before_total_minor"], 4_500);
    assert_eq!(reply.body["carts"][0]["after_total_minor"], 3_900);
    assert_eq!(reply.body["carts"][0]["clamped"], json!(["A"]));
    assert!(
        plant.promotion_ids_at_edge().is_empty(),
        "a dry run publishes nothing"
    );

    let mut bad = definition.clone();
    bad["rule"]["basis_points"] = json!(20_000);
    let reply = plant.call(
        "PUT",
        "/v1/admin/promotions/snack-week?reason=launch",
        Some(OPERATOR),
        &bad,
    );
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert_eq!(reply.body["error"]["code"], "invalid_promotion");
    let reply = plant.call(
        "PUT",
        "/v1/admin/promotions/other?reason=launch",
        Some(OPERATOR),
        &definition,
    );
    assert_eq!(reply.body["error"]["code"], "id_mismatch");
    let reply = plant.call(
        "PUT",
        "/v1/admin/promotions/snack-week",
        Some(OPERATOR),
        &definition,
    );
    assert_eq!(reply.body["error"]["code"], "missing_reason");

    let reply = plant.call(
        "PUT",
        "/v1/admin/promotions/snack-week?reason=launch",
        Some(OPERATOR),
        &definition,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["revision"], 1);
    assert_eq!(plant.promotion_ids_at_edge(), ["snack-week"]);
    let listed = plant.get("/v1/admin/promotions");
    assert_eq!(listed[0]["kind"], "percent_off");
    assert_eq!(plant.get("/v1/admin/promotions/snack-week")["revision"], 1);
    let reply = plant.call(
        "PUT",
        "/v1/admin/promotions/snack-week?reason=tweak",
        Some(OPERATOR),
        &definition,
    );
    assert_eq!(reply.body["revision"], 2);

    let reply = plant.switch(
        OPERATOR,
        json!({"kind": "promotion", "id": "snack-week"}),
        true,
        true,
    );
    assert_eq!(reply.body["blast_radius"]["skus"], 1, "{}", reply.body);
    assert_eq!(plant.get("/v1/admin/promotions")[0]["skus"], 1);
    assert_eq!(
        plant.get("/v1/admin/skus/%41")["row"]["sku"],
        "A",
        "paths are decoded"
    );
    // Killing it takes it out of the edges' document; releasing puts it back.
    plant.switch(
        OPERATOR,
        json!({"kind": "promotion", "id": "snack-week"}),
        true,
        false,
    );
    assert!(plant.promotion_ids_at_edge().is_empty());
    assert_eq!(plant.get("/v1/admin/promotions")[0]["killed"], true);
    plant.switch(
        OPERATOR,
        json!({"kind": "promotion", "id": "snack-week"}),
        false,
        false,
    );
    assert_eq!(plant.promotion_ids_at_edge(), ["snack-week"]);

    let reply = plant.call(
        "DELETE",
        "/v1/admin/promotions/snack-week?reason=over",
        Some(OPERATOR),
        &Value::Null,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(plant.promotion_ids_at_edge().is_empty());
    let reply = plant.call(
        "GET",
        "/v1/admin/promotions/snack-week",
        Some(VIEWER),
        &Value::Null,
    );
    assert_eq!(reply.status, 404);

    // The book survives a restart of the control plane.
    let reply = plant.call(
        "PUT",
        "/v1/admin/promotions/snack-week?reason=again",
        Some(OPERATOR),
        &definition,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let Plant {
        edge,
        control,
        server,
        dir,
    } = plant;
    drop(server);
    drop(control);
    let fresh = Arc::new(SnapshotStore::open(None).unwrap());
    let control = ControlPlane::start(
        RuntimeConfig {
            data_dir: dir.path().to_owned(),
            ..RuntimeConfig::default()
        },
        InProcessEdge(fresh.clone()),
    )
    .unwrap();
    control.flush().unwrap();
    let guard = fresh.load();
    let doc = guard.as_ref().unwrap().promotions().unwrap().doc().clone();
    assert_eq!(doc.promotions[0].id, "snack-week");
    assert_eq!(
        doc.promotions[0].revision, 4,
        "revisions never repeat, even after an end"
    );
    drop(edge);
}

#[test]
fn promotion_definitions_also_arrive_on_the_promotions_feed() {
    let plant = Plant::start();
    let t = now_ms();
    let define = json!({
        "event_id": "def-1",
        "promotion_id": "bogo",
        "action": "define",
        "definition": {
            "id": "bogo",
            "label": "Buy 2 get 1",
            "rule": {"type": "buy_x_get_y", "buy": 2, "get": 1},
            "target": {"type": "categories", "categories": ["snacks"]},
        },
        "occurred_at_ms": t,
    });
    let per_sku = format!(
        r#"{{"event_id":"promo-9","promotion_id":"spring","sku":"A","action":"upsert","label":"Spring -10%","discount":{{"kind":"percent_bp","value":1000}},"starts_at_ms":{},"ends_at_ms":{},"occurred_at_ms":{t}}}"#,
        t - 60_000,
        t + 3_600_000
    );
    // Mixed in one NDJSON request with a per-SKU promotion event.
    let reply = support::post_ndjson(
        plant.addr(),
        "promotions",
        FEED,
        &[define.to_string(), per_sku],
    );
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(reply.body["accepted"], 2);
    assert_eq!(plant.promotion_ids_at_edge(), ["bogo"]);
    let guard = plant.edge.load();
    let doc = guard.as_ref().unwrap().promotions().unwrap().doc().clone();
    assert_eq!(
        doc.categories.get("A").map(String::as_str),
        Some("snacks"),
        "categories travel with it"
    );
    drop(guard);
    // Resent: acknowledged, not applied again.
    let reply = post(plant.addr(), "promotions", FEED, &define.to_string());
    assert_eq!(
        (reply.status, reply.body["status"].as_str()),
        (200, Some("duplicate"))
    );
    assert_eq!(plant.get("/v1/admin/promotions/bogo")["revision"], 1);
    // Invalid definitions are refused with the reason and kept.
    let mut bad = define.clone();
    bad["event_id"] = json!("def-2");
    bad["definition"]["rule"]["buy"] = json!(0);
    let reply = post(plant.addr(), "promotions", FEED, &bad.to_string());
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.body["error"]["code"], "invalid_event");
    let conn = rusqlite::Connection::open(plant.dir.path().join("control.db")).unwrap();
    let dead = edgeprice_control::store::EventLog::dead_letters(&conn, 10).unwrap();
    assert!(
        dead.iter().any(|d| d.event_id.as_deref() == Some("def-2")),
        "{dead:?}"
    );
    // Retired from the feed.
    let retire = json!({"event_id": "def-3", "promotion_id": "bogo", "action": "retire", "occurred_at_ms": t});
    let reply = post(plant.addr(), "promotions", FEED, &retire.to_string());
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert!(plant.promotion_ids_at_edge().is_empty());
    let audit_rows = plant.get("/v1/admin/audit?limit=10");
    assert!(audit_rows
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["kind"] == "promotion_end" && r["actor"] == "feed:pos"));
}

#[test]
fn the_sku_table_and_metrics_describe_what_the_pipeline_did() {
    let plant = Plant::start();
    assert_eq!(
        plant.get("/v1/admin/skus?q=snack")["total"],
        2,
        "categories match too"
    );
    let page = plant.get("/v1/admin/skus?q=a&sort=sku&desc=true&limit=1");
    assert_eq!(page["total"], 2);
    assert_eq!(page["skus"].as_array().unwrap().len(), 1);
    let row = &page["skus"][0];
    assert_eq!(
        (
            row["sku"].as_str(),
            row["price_minor"].as_i64(),
            row["floor_minor"].as_i64()
        ),
        (Some("B"), Some(1_500), Some(1_200))
    );
    assert_eq!(plant.get("/v1/admin/skus?q=b")["total"], 1);
    assert_eq!(row["margin_bp"], 4_400, "net 12.50, unit cost 7.00");
    let detail = plant.get("/v1/admin/skus/A");
    assert_eq!(detail["cost_minor"], 600);
    let explanation = detail["explanation"].as_array().unwrap();
    assert!(
        explanation[0]
            .as_str()
            .unwrap()
            .starts_with("Regular price 15.00"),
        "{explanation:?}"
    );
    let reply = plant.call("GET", "/v1/admin/skus/NOPE", Some(VIEWER), &Value::Null);
    assert_eq!(reply.status, 404);
    let metrics = plant.get("/v1/admin/metrics");
    assert!(
        metrics["pipeline"]["events_total"].as_u64().unwrap() >= 4,
        "{metrics}"
    );
    assert!(
        metrics["pipeline"]["stage_p99_us"]["batch"]
            .as_u64()
            .is_some(),
        "{metrics}"
    );
    assert!(
        metrics["pipeline"]["feed_lag_ms"]["cost"]
            .as_i64()
            .is_some(),
        "{metrics}"
    );
    let histogram: u64 = metrics["margin_histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["skus"].as_u64().unwrap())
        .sum();
    assert_eq!(histogram, 2);
}
