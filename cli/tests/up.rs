//! `edgeprice up --demo` as a user runs it: a real process, real ports, real signals.

mod support;

use support::{eventually, http, Up};

fn snapshot_version(up: &Up) -> Option<u64> {
    let (_, metrics) = up.get("/metrics")?;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("edgeprice_snapshot_version ")?.parse().ok())
}

#[test]
fn demo_prices_appear_move_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::demo(dir.path());
    let body = eventually("a price for SKU-0000042", || {
        match up.get("/v1/prices/SKU-0000042?store=store-1&channel=web") {
            Some((200, body)) => Some(body),
            _ => None,
        }
    });
    let price: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(price["price_minor"].as_i64().unwrap() >= price["floor_minor"].as_i64().unwrap());
    assert_eq!(price["currency"], "EUR");
    let first = snapshot_version(&up).unwrap();
    let moved = eventually("the simulator to move prices", || {
        snapshot_version(&up).filter(|v| *v > first + 2)
    });
    up.stop();

    // State survives: the restarted edge serves at least the version it had.
    let up = Up::demo(dir.path());
    let restarted = eventually("the restarted edge", || snapshot_version(&up));
    assert!(restarted >= moved, "restarted at {restarted}, had {moved}");
    assert_eq!(up.get("/v1/prices/SKU-0000042").map(|(s, _)| s), Some(200));
    up.stop();
}

#[test]
fn promotions_defined_at_the_control_plane_price_quotes_at_the_edge() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::demo(dir.path());
    let token = up.token("admin.token");
    let auth = format!("Bearer {token}");
    let sku = "SKU-0000042";
    let regular: serde_json::Value = eventually("a price for the SKU", || {
        match up.get(&format!("/v1/prices/{sku}")) {
            Some((200, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    });
    let definition = serde_json::json!({
        "id": "demo-multibuy",
        "label": "3 for 2",
        "rule": {"type": "buy_x_get_y", "buy": 2, "get": 1},
        "target": {"type": "skus", "skus": [sku]},
    });
    let (status, body) = http(
        &up.control,
        "POST",
        "/v1/admin/promotions/dry-run",
        &[("Authorization", &auth)],
        &serde_json::json!({"promotion": definition, "carts": [{"lines": [[sku, 3]]}]}).to_string(),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        report["carts"][0]["after_total_minor"].as_i64()
            < report["carts"][0]["before_total_minor"].as_i64(),
        "{report}"
    );
    let (status, body) = http(
        &up.control,
        "PUT",
        "/v1/admin/promotions/demo-multibuy?reason=test",
        &[("Authorization", &auth)],
        &definition.to_string(),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let cart = serde_json::json!({"lines": [{"sku": sku, "qty": 3}]}).to_string();
    let quote: serde_json::Value = eventually("the promotion in quotes", || {
        let (status, body) = http(&up.edge, "POST", "/v1/quote", &[], &cart)?;
        let quote: serde_json::Value = serde_json::from_str(&body).ok()?;
        (status == 200 && quote.to_string().contains("demo-multibuy")).then_some(quote)
    });
    let unit = regular["price_minor"].as_i64().unwrap();
    let total = quote["totals"]["merchandise_minor"].as_i64().unwrap();
    assert!(
        total < 3 * unit,
        "three for the price of two (floor permitting): {quote}"
    );
    assert!(total >= 3 * regular["floor_minor"].as_i64().unwrap());
    up.stop();
}
