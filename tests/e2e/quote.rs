//! `POST /v1/quote` and promotion-aware GETs through HTTP.

use std::net::SocketAddr;
use std::sync::Arc;

use edgeprice_pricing::quote::Keyring;
use edgeprice_pricing::PriceEntry;
use edgeprice_schemas::codec::{
    encode_delta, encode_snapshot, DeltaData, PromotionsDoc, SnapshotData,
};
use edgeprice_server::metrics::Metrics;
use edgeprice_server::store::now_ms;
use edgeprice_server::transport::{self, ServerHandle, Transport};
use edgeprice_server::{Api, ApiConfig, QuoteConfig, SnapshotStore};
use serde_json::{json, Value};

use crate::support::{entry, key, request, Reply, TOKEN};

const SECRET: &[u8] = b"quote-secret-0123456789abcdef0123456789";
const TTL_MS: i64 = 60_000;

struct QuoteEdge {
    addr: SocketAddr,
    handle: Option<ServerHandle>,
}

impl QuoteEdge {
    fn start(transport: Transport, keyring: Option<Keyring>) -> QuoteEdge {
        let store = Arc::new(SnapshotStore::open(None).expect("open store"));
        let api = Api::new(
            store,
            Arc::new(Metrics::new(2)),
            ApiConfig {
                admin_token: Some(TOKEN.into()),
                max_upload_bytes: 1 << 20,
                ..ApiConfig::default()
            },
        )
        .with_quotes(QuoteConfig {
            keyring,
            ttl_ms: TTL_MS,
            cache: true,
        })
        .expect("quote config");
        let handle = transport::serve(transport, "127.0.0.1:0".parse().unwrap(), 2, Arc::new(api))
            .expect("serve");
        QuoteEdge {
            addr: handle.local_addr(),
            handle: Some(handle),
        }
    }

    fn quote(&self, body: &Value) -> Reply {
        self.quote_raw(body.to_string().as_bytes())
    }

    fn quote_raw(&self, body: &[u8]) -> Reply {
        request(
            self.addr,
            "POST",
            "/v1/quote",
            &[("Content-Type", "application/json")],
            body,
        )
    }

    fn admin_post(&self, path: &str, body: &[u8]) -> Reply {
        let auth = format!("Bearer {TOKEN}");
        request(self.addr, "POST", path, &[("Authorization", &auth)], body)
    }

    fn get(&self, path: &str) -> Reply {
        request(self.addr, "GET", path, &[], &[])
    }
}

impl Drop for QuoteEdge {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown();
        }
    }
}

fn keyring() -> Keyring {
    Keyring::new("k1", SECRET).unwrap()
}

fn entries() -> Vec<PriceEntry> {
    // support::entry: list = price + 100, floor = price / 2.
    let mut c = entry(key("C", "*", "*", "*"), 1000);
    c.floor_minor = 950;
    vec![
        entry(key("A", "*", "*", "*"), 1000),
        entry(key("B", "*", "*", "*"), 2000),
        c,
    ]
}

fn doc(version: u64, promotions: Value) -> Arc<PromotionsDoc> {
    let doc: PromotionsDoc = serde_json::from_value(json!({
        "version": version,
        "promotions": promotions,
    }))
    .expect("document shape");
    Arc::new(doc)
}

/// 10 % off A, 3.00 off each C (C's floor is 9.50 of 10.00: clamped), an expired and a
/// future promotion on B, and a 5.00 cart coupon.
fn promotions() -> Value {
    let now = now_ms();
    json!([
        {"id": "a-10", "label": "A -10%", "target": {"type": "skus", "skus": ["A"]},
         "rule": {"type": "percent_off", "basis_points": 1000}},
        {"id": "c-300", "label": "C -3.00", "currency": "EUR",
         "target": {"type": "skus", "skus": ["C"]},
         "rule": {"type": "amount_off", "amount_minor": 300}},
        {"id": "b-past", "label": "B gone", "target": {"type": "skus", "skus": ["B"]},
         "rule": {"type": "percent_off", "basis_points": 5000},
         "conditions": {"starts_at_ms": now - 20_000_000, "ends_at_ms": now - 10_000_000}},
        {"id": "b-future", "label": "B soon", "target": {"type": "skus", "skus": ["B"]},
         "rule": {"type": "percent_off", "basis_points": 5000},
         "conditions": {"starts_at_ms": now + 10_000_000, "ends_at_ms": now + 20_000_000}},
        {"id": "save5", "label": "5.00 off the cart", "currency": "EUR",
         "rule": {"type": "cart_amount_off", "threshold_minor": 0, "amount_minor": 500},
         "coupon": {"codes": ["SAVE5"]}}
    ])
}

fn snapshot(version: u64, promotions: Option<Arc<PromotionsDoc>>) -> Vec<u8> {
    encode_snapshot(&SnapshotData {
        version,
        created_at_ms: now_ms(),
        entries: entries(),
        promotions,
    })
}

fn loaded(transport: Transport) -> QuoteEdge {
    let edge = QuoteEdge::start(transport, Some(keyring()));
    let reply = edge.admin_post(
        "/v1/admin/snapshot",
        &snapshot(1, Some(doc(7, promotions()))),
    );
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    edge
}

fn cart() -> Value {
    json!({
        "lines": [{"sku": "C", "qty": 1}, {"sku": "A", "qty": 2}, {"sku": "B", "qty": 1}],
        "coupons": ["save5"],
        "customer_id": "cust-1"
    })
}

fn line<'a>(body: &'a Value, sku: &str) -> &'a Value {
    body["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["sku"] == sku)
        .unwrap_or_else(|| panic!("no line {sku} in {body}"))
}

fn a_cart_is_priced_with_its_promotions_clamped_at_floors_and_signed(transport: Transport) {
    let edge = loaded(transport);
    let reply = edge.quote(&cart());
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let body = reply.json();
    assert_eq!(body["snapshot_version"], 1);
    assert_eq!(body["promotions_version"], 7);
    assert_eq!(body["currency"], "EUR");

    // A: 2 × 10.00, 10 % off the line before the cart coupon.
    let a = line(&body, "A");
    assert_eq!(a["unit_list_price_minor"], 1100);
    assert_eq!(a["unit_price_minor"], 1000);
    assert_eq!(a["subtotal_minor"], 2000);
    assert_eq!(a["discounts"][0]["promotion_id"], "a-10");
    let applied = body["applied"].as_array().unwrap();
    let a_10 = applied.iter().find(|p| p["id"] == "a-10").unwrap();
    assert_eq!(a_10["label"], "A -10%");
    assert_eq!(a_10["amount_minor"], 200);
    assert_eq!(a["discounts"][0]["amount_minor"], 200);
    // C: 3.00 asked, only 0.50 above its floor: clamped, and the coupon cannot touch it.
    let c = line(&body, "C");
    assert_eq!(c["discounts"][0]["promotion_id"], "c-300");
    assert_eq!(c["discounts"][0]["amount_minor"], 50);
    assert_eq!(c["discounts"][0]["clamped"], true);
    assert_eq!(c["clamped"], true);
    assert_eq!(c["total_minor"], 950);
    // B: the expired and the future promotion give nothing.
    let b = line(&body, "B");
    assert!(b["discounts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["promotion_id"] == "save5"));

    // Totals: 50.00 before promotions, 2.00 + 0.50 item discounts, 5.00 coupon.
    let totals = &body["totals"];
    assert_eq!(totals["subtotal_minor"], 5000);
    assert_eq!(totals["item_discount_minor"], 250);
    assert_eq!(totals["cart_discount_minor"], 500);
    assert_eq!(totals["total_minor"], 4250);
    let line_discounts: i64 = body["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["discount_minor"].as_i64().unwrap())
        .sum();
    assert_eq!(
        line_discounts, 750,
        "cart discount spread to the minor unit"
    );
    assert_eq!(body["coupons"][0]["code"], "SAVE5");
    assert_eq!(body["coupons"][0]["status"], "applied");

    // The clamp is explained, the floor amount is not shown anywhere.
    let explanation: Vec<&str> = body["explanation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        explanation
            .iter()
            .any(|s| s.contains("C: ") && s.contains("minimum price")),
        "{explanation:?}"
    );
    let text = String::from_utf8_lossy(&reply.body);
    assert!(!text.contains("floor"), "floors leak: {text}");
    assert!(
        !text.contains("9.50") && !text.contains(":950,\"unit"),
        "{text}"
    );

    // The token verifies with the keyring and locks these numbers; tampering fails.
    let token = body["token"].as_str().unwrap();
    let locked = keyring().verify(token, now_ms()).expect("token verifies");
    assert_eq!(locked.totals.total_minor, 4250);
    assert_eq!(locked.snapshot_version, 1);
    assert_eq!(
        locked.expires_at_ms,
        body["expires_at_ms"].as_i64().unwrap()
    );
    assert_eq!(locked.expires_at_ms - locked.issued_at_ms, TTL_MS);
    assert!(body["expires_at"].as_str().unwrap().ends_with('Z'));
    let mut tampered = token.as_bytes().to_vec();
    tampered[10] = if tampered[10] == b'A' { b'B' } else { b'A' };
    let err = keyring()
        .verify(std::str::from_utf8(&tampered).unwrap(), now_ms())
        .unwrap_err();
    assert_eq!(err.code(), "quote_tampered");
    let other = Keyring::new("k1", b"another-secret-0123456789abcdef0123").unwrap();
    assert_eq!(
        other.verify(token, now_ms()).unwrap_err().code(),
        "quote_tampered"
    );
}

fn a_cached_quote_gets_a_fresh_lock_and_a_new_version_changes_the_quote(transport: Transport) {
    let edge = loaded(transport);
    let first = edge.quote(&cart()).json();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let second = edge.quote(&cart()).json();
    assert_eq!(first["totals"], second["totals"]);
    assert!(
        second["expires_at_ms"].as_i64() > first["expires_at_ms"].as_i64(),
        "a cached answer is re-signed with a fresh expiry"
    );
    let locked = keyring()
        .verify(second["token"].as_str().unwrap(), now_ms())
        .unwrap();
    assert_eq!(
        locked.expires_at_ms,
        second["expires_at_ms"].as_i64().unwrap()
    );

    // Version 2 raises A to 15.00: the very next quote uses it (never the cached one).
    let reply = edge.admin_post(
        "/v1/admin/snapshot/delta",
        &encode_delta(&DeltaData {
            base_version: 1,
            version: 2,
            created_at_ms: now_ms(),
            upserts: vec![entry(key("A", "*", "*", "*"), 1500)],
            removals: vec![],
            promotions: None,
        }),
    );
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let after = edge.quote(&cart()).json();
    assert_eq!(after["snapshot_version"], 2);
    assert_eq!(line(&after, "A")["unit_price_minor"], 1500);
    assert_eq!(line(&after, "A")["discounts"][0]["amount_minor"], 300);
    assert_eq!(after["promotions_version"], 7, "promotions carried over");

    // Version 3 replaces the promotions: A's 10 % is gone.
    let without_a: Vec<Value> = promotions()
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["id"] != "a-10")
        .cloned()
        .collect();
    let reply = edge.admin_post(
        "/v1/admin/snapshot/delta",
        &encode_delta(&DeltaData {
            base_version: 2,
            version: 3,
            created_at_ms: now_ms(),
            upserts: vec![],
            removals: vec![],
            promotions: Some(doc(8, Value::Array(without_a))),
        }),
    );
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let after = edge.quote(&cart()).json();
    assert_eq!(after["snapshot_version"], 3);
    assert_eq!(after["promotions_version"], 8);
    assert!(line(&after, "A")["discounts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["promotion_id"] != "a-10"));
}

fn single_price_answers_show_the_best_automatic_promotion(transport: Transport) {
    let edge = loaded(transport);
    let a = edge.get("/v1/prices/A").json();
    assert_eq!(a["price_minor"], 900);
    assert_eq!(a["list_price_minor"], 1100);
    assert_eq!(a["promotion"]["id"], "a-10");
    assert_eq!(a["promotion"]["label"], "A -10%");
    assert_eq!(a["promotion"]["price_minor"], 900);
    let c = edge.get("/v1/prices/C").json();
    assert_eq!(c["price_minor"], 950, "clamped at the floor");
    assert_eq!(c["promotion"]["id"], "c-300");
    // Outside their windows B's promotions are not shown; coupons never are.
    let b = edge.get("/v1/prices/B").json();
    assert_eq!(b["price_minor"], 2000);
    assert_eq!(b["promotion"], Value::Null);
    // Batches agree.
    let batch = edge.get("/v1/prices?skus=A,B").json();
    assert_eq!(batch["prices"][0]["price_minor"], 900);
}

/// The control plane publishes both: per-SKU promotions it decided (and guarded) as
/// entry tags, and a promotion set. The tag gives the unit price; the set applies on top.
fn entry_promotion_tags_and_the_promotion_set_combine(transport: Transport) {
    let edge = QuoteEdge::start(transport, Some(keyring()));
    let now = now_ms();
    let mut entries = entries();
    // B: a decided flash price of 18.00 (regular 20.00), and no set promotion is active.
    entries[1].promotion = Some(crate::support::promotion(
        "flash-b",
        1_800,
        now - 60_000,
        now + 3_600_000,
    ));
    let encoded = encode_snapshot(&SnapshotData {
        version: 1,
        created_at_ms: now,
        entries,
        promotions: Some(doc(7, promotions())),
    });
    assert_eq!(edge.admin_post("/v1/admin/snapshot", &encoded).status, 200);
    let b = edge.get("/v1/prices/B").json();
    assert_eq!(b["price_minor"], 1_800, "{b}");
    assert_eq!(b["promotion"]["id"], "flash-b");
    // A has no tag: the set's promotion as before.
    assert_eq!(edge.get("/v1/prices/A").json()["promotion"]["id"], "a-10");
    let reply = edge.quote(&json!({"lines": [{"sku": "B", "qty": 2}]}));
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(line(&body, "B")["unit_price_minor"], 1_800, "{body}");
    assert_eq!(body["totals"]["merchandise_minor"], 3_600);
}

fn bad_carts_get_clear_errors(transport: Transport) {
    let edge = loaded(transport);
    let unknown =
        edge.quote(&json!({"lines": [{"sku": "A", "qty": 1}, {"sku": "NOPE", "qty": 1}]}));
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.code(), "unknown_sku");
    assert!(unknown.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("NOPE"));
    for qty in [0, -1] {
        let reply = edge.quote(&json!({"lines": [{"sku": "A", "qty": qty}]}));
        assert_eq!(reply.status, 400);
        assert_eq!(reply.code(), "invalid_quantity");
    }
    let reply = edge.quote(&json!({"lines": []}));
    assert_eq!((reply.status, reply.code().as_str()), (400, "empty_cart"));
    let many: Vec<Value> = (0..201)
        .map(|i| json!({"sku": format!("S{i}"), "qty": 1}))
        .collect();
    let reply = edge.quote(&json!({ "lines": many }));
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (400, "too_many_lines")
    );
    let reply = edge.quote_raw(b"{\"lines\": [");
    assert_eq!((reply.status, reply.code().as_str()), (400, "invalid_json"));
    let reply = edge.quote_raw(&vec![b' '; 100 * 1024]);
    assert_eq!(reply.status, 413);
    let reply = edge.get("/v1/quote");
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("POST"));
}

fn quotes_need_a_snapshot_and_a_key_and_invalid_promotions_are_refused(transport: Transport) {
    let empty = QuoteEdge::start(transport, Some(keyring()));
    let reply = empty.quote(&cart());
    assert_eq!((reply.status, reply.code().as_str()), (503, "no_snapshot"));

    let bad = doc(
        1,
        json!([{"id": "x", "label": "too much", "rule": {"type": "percent_off", "basis_points": 20000}}]),
    );
    let reply = empty.admin_post("/v1/admin/snapshot", &snapshot(1, Some(bad)));
    assert_eq!(reply.status, 400);
    assert_eq!(reply.code(), "invalid_promotions");
    assert!(reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("promotion x"));

    let keyless = QuoteEdge::start(transport, None);
    let reply = keyless.admin_post("/v1/admin/snapshot", &snapshot(1, None));
    assert_eq!(reply.status, 200);
    let reply = keyless.quote(&cart());
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (503, "quotes_disabled")
    );
}

crate::each_transport!(
    a_cart_is_priced_with_its_promotions_clamped_at_floors_and_signed,
    a_cached_quote_gets_a_fresh_lock_and_a_new_version_changes_the_quote,
    single_price_answers_show_the_best_automatic_promotion,
    entry_promotion_tags_and_the_promotion_set_combine,
    bad_carts_get_clear_errors,
    quotes_need_a_snapshot_and_a_key_and_invalid_promotions_are_refused,
);
