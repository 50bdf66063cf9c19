//! Crash tests of the checkout saga: `edgeprice up` is killed with SIGKILL at each saga
//! step in turn (the process hangs there through `EDGEPRICE_CHECKOUT_FAULT`, writes a
//! marker file, and the test kills it), then restarted. Afterwards no reservation is
//! stuck, no payment lacks an order or a refund, and no order is duplicated.

mod support;

use std::path::Path;

use support::{eventually, up_command, Up};

const SKU: &str = "CRASH-1";
const STOCK: i64 = 50;

/// `edgeprice up` without the demo, hanging at saga step `fault` if given.
fn start(data_dir: &Path, fault: Option<&str>) -> Up {
    let mut command = up_command(data_dir);
    if let Some(fault) = fault {
        command.env("EDGEPRICE_CHECKOUT_FAULT", format!("hang:{fault}"));
    }
    Up::start(command, data_dir)
}

struct Reply {
    status: u16,
    body: serde_json::Value,
}

fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<Reply> {
    let (status, body) = support::http(addr, method, path, headers, body)?;
    Some(Reply {
        status,
        body: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Catalogs the SKU and counts its stock through the feeds API; waits for its price.
fn seed(up: &Up) {
    let feed = format!("Bearer {}", up.token("feed.token"));
    let t = now_ms();
    for (kind, body) in [
        (
            "catalog",
            format!(
                r#"{{"event_id":"crash-cat","sku":"{SKU}","category":"toys","currency":"EUR","list_price_minor":2000,"tax_rate_bp":2000,"occurred_at_ms":{t}}}"#
            ),
        ),
        (
            "cost",
            format!(
                r#"{{"event_id":"crash-cost","sku":"{SKU}","vendor":"acme","currency":"EUR","cost_minor":800,"effective_at_ms":{t},"occurred_at_ms":{t}}}"#
            ),
        ),
        (
            "inventory",
            format!(
                r#"{{"event_id":"crash-inv","sku":"{SKU}","kind":"on_hand","quantity":{STOCK},"occurred_at_ms":{t}}}"#
            ),
        ),
    ] {
        let reply = http(
            &up.control,
            "POST",
            &format!("/v1/feeds/{kind}"),
            &[("Authorization", &feed)],
            &body,
        )
        .unwrap();
        assert!(
            reply.status == 202 || reply.status == 200,
            "{kind}: {} {}",
            reply.status,
            reply.body
        );
    }
    eventually("the price at the edge", || {
        http(&up.edge, "GET", &format!("/v1/prices/{SKU}"), &[], "").filter(|r| r.status == 200)
    });
}

fn quote(up: &Up, customer: &str) -> (String, i64) {
    let body = serde_json::json!({"lines": [{"sku": SKU, "qty": 1}], "customer_id": customer, "channel": "web"});
    let reply = http(&up.edge, "POST", "/v1/quote", &[], &body.to_string()).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let total = reply.body["totals"]["total_minor"]
        .as_i64()
        .unwrap_or_else(|| panic!("{}", reply.body));
    (reply.body["token"].as_str().unwrap().to_owned(), total)
}

fn admin(up: &Up, path: &str) -> serde_json::Value {
    let auth = format!("Bearer {}", up.token("admin.token"));
    let reply = http(&up.control, "GET", path, &[("Authorization", &auth)], "").unwrap();
    assert_eq!(reply.status, 200, "{path}: {}", reply.body);
    reply.body
}

#[test]
fn killed_at_each_saga_step_and_restarted_nothing_is_stuck_lost_or_duplicated() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path();
    let up = start(data_dir, None);
    seed(&up);
    up.kill();

    // What recovery must make of a saga killed at each point: before the charge is
    // logged and with no charge booked it is rolled back; once the gateway booked the
    // charge it is finished. Normally payment, order and confirmation are one commit
    // (`charged` is just before it, `confirmed` just after); hanging at `paid` or
    // `ordered` ends that commit there, so those states are recovered from too.
    let points = [
        ("reserved", 409),
        ("charged", 201),
        ("paid", 201),
        ("ordered", 201),
        ("confirmed", 201),
        ("completed", 201),
    ];
    let mut orders = Vec::new();
    for (i, (point, expected)) in points.iter().enumerate() {
        let up = start(data_dir, Some(point));
        let (token, total) = quote(&up, &format!("crash-customer-{i}"));
        let body = serde_json::json!({"quote_token": token}).to_string();
        let key = format!("crash-{point}");
        let control = up.control.clone();
        let (request_key, request_body) = (key.clone(), body.clone());
        let request = std::thread::spawn(move || {
            http(
                &control,
                "POST",
                "/v1/checkout",
                &[("Idempotency-Key", &request_key)],
                &request_body,
            )
        });
        let marker = data_dir.join("control").join(format!("fault-{point}"));
        eventually(&format!("the saga to reach {point}"), || {
            marker.exists().then_some(())
        });
        up.kill();
        let answered = request.join().unwrap();
        // Once the order is confirmed the customer is answered; the sales events and the
        // completion follow (the kill may still beat the answer to the client). Before
        // that, nobody was answered.
        let early = match (*point, answered) {
            ("completed", Some(answered)) => {
                assert_eq!(answered.status, 201, "{}", answered.body);
                Some(answered.body["order_id"].clone())
            }
            ("completed", None) => None,
            (_, answered) => {
                assert!(answered.is_none(), "{point}: the killed process answered");
                None
            }
        };
        std::fs::remove_file(&marker).unwrap();

        // Restarted without the fault: recovery settles the saga, and the same request
        // gets its final answer.
        let up = start(data_dir, None);
        let reply = eventually(&format!("the saga killed at {point} to settle"), || {
            let reply = http(
                &up.control,
                "POST",
                "/v1/checkout",
                &[("Idempotency-Key", &key)],
                &body,
            )?;
            let pending =
                reply.body["error"]["code"] == "checkout_in_progress" || reply.status == 429;
            (!pending).then_some(reply)
        });
        assert_eq!(reply.status, *expected, "{point}: {}", reply.body);
        // The answer is kept from the confirmation on; recovery then sends the sales
        // events and completes the saga.
        let saga_id = reply.body["saga_id"]
            .as_str()
            .or(reply.body["error"]["saga_id"].as_str())
            .unwrap_or_else(|| panic!("{point}: no saga id in {}", reply.body))
            .to_owned();
        eventually(&format!("the saga killed at {point} to end"), || {
            let saga = http(
                &up.control,
                "GET",
                &format!("/v1/checkout/{saga_id}"),
                &[],
                "",
            )?;
            let state = saga.body["saga"]["state"].as_str()?.to_owned();
            (state == "completed" || state == "failed").then_some(())
        });
        if reply.status == 201 {
            assert_eq!(
                reply.body["total_minor"].as_i64(),
                Some(total),
                "{point}: charged the quoted total"
            );
            let again = http(
                &up.control,
                "POST",
                "/v1/checkout",
                &[("Idempotency-Key", &key)],
                &body,
            )
            .unwrap();
            assert_eq!(
                again.body["order_id"], reply.body["order_id"],
                "{point}: one order"
            );
            if let Some(early) = &early {
                assert_eq!(
                    &reply.body["order_id"], early,
                    "{point}: the answer changed"
                );
            }
            orders.push(reply.body["order_id"].as_str().unwrap().to_owned());
        } else {
            assert_eq!(
                reply.body["error"]["code"], "checkout_interrupted",
                "{point}"
            );
        }
        up.kill();
    }

    let up = start(data_dir, None);
    let report = admin(&up, "/v1/admin/checkout/reconciliation");
    assert_eq!(
        report["payments_without_order"],
        serde_json::json!([]),
        "{report}"
    );
    assert_eq!(
        report["orders_without_payment"],
        serde_json::json!([]),
        "{report}"
    );
    assert_eq!(report["in_flight"], 0, "{report}");
    let stats = &admin(&up, "/v1/admin/checkout")["stats"];
    assert_eq!(
        stats["active_reservations"], 0,
        "no reservation stuck: {stats}"
    );
    assert_eq!(stats["oversell"], 0);
    assert_eq!(
        stats["orders"].as_u64(),
        Some(orders.len() as u64),
        "no order duplicated: {stats}"
    );
    orders.sort();
    orders.dedup();
    assert_eq!(orders.len(), 5);
    for order in &orders {
        let reply = http(&up.control, "GET", &format!("/v1/orders/{order}"), &[], "").unwrap();
        assert_eq!(reply.body["order"]["status"], "confirmed");
        assert_eq!(reply.body["saga"]["state"], "completed");
    }
    let stock = admin(&up, &format!("/v1/admin/checkout/stock/{SKU}"));
    let location = &stock["locations"][0];
    let available =
        location["on_hand"].as_i64().unwrap() - location["sold_pending"].as_i64().unwrap();
    assert_eq!(location["reserved"], 0, "{stock}");
    assert_eq!(available, STOCK - orders.len() as i64, "{stock}");
    up.kill();
}
