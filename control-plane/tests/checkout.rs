//! Checkout through its HTTP API on a running control plane: stock from the inventory
//! feed, quotes signed with the edge's keyring, the simulated gateway with its durable
//! book, and what customers, operators and the books see.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeprice_control::checkout::ledger::{BeginOutcome, BeginSaga, Transition, WantedLine};
use edgeprice_control::checkout::payment::{
    ChargeRequest, PaymentGateway, PaymentStatus, SimulatedGateway, SimulatorConfig,
};
use edgeprice_control::checkout::{
    Checkout, CheckoutConfig, CheckoutDeps, Faults, FnCoupons, SagaState,
};
use edgeprice_control::feeds::FeedKind;
use edgeprice_control::http::{AdminToken, IngestHttpConfig, IngestServer};
use edgeprice_control::publish::InProcessEdge;
use edgeprice_control::runtime::{ControlPlane, RuntimeConfig};
use edgeprice_control::store::{Outcome, Submission};
use edgeprice_pricing::promo::{CouponRule, Totals};
use edgeprice_pricing::quote::{Keyring, Quote, QuoteCoupon, QuoteLine};
use edgeprice_pricing::{Currency, Dimension, Sku};
use edgeprice_schemas::admin::Role;
use edgeprice_server::SnapshotStore;

const ADMIN: &str = "admin-token";
const VIEWER: &str = "viewer-token";
const PATIENCE: Duration = Duration::from_secs(20);
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn now_ms() -> i64 {
    edgeprice_control::checkout::now_ms()
}

/// Waits until `f` gives a value.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: String,
    body: serde_json::Value,
}

fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    Reply {
        status: head[9..12].parse().unwrap(),
        headers: head.to_ascii_lowercase(),
        body: serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    }
}

struct Options {
    kafka: Option<edgeprice_control::kafka::KafkaConfig>,
    config: CheckoutConfig,
    simulator: SimulatorConfig,
    coupons: Vec<(String, CouponRule)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            kafka: None,
            config: CheckoutConfig {
                limits: edgeprice_control::checkout::limits::LimitsConfig::unlimited(),
                recovery_interval_ms: 3_600_000,
                reconcile_interval_ms: 3_600_000,
                sweep_interval_ms: 3_600_000,
                feed_poll_ms: 20,
                retry: edgeprice_control::checkout::payment::RetryPolicy {
                    max_attempts: 3,
                    initial_backoff_ms: 5,
                    max_backoff_ms: 20,
                },
                ..CheckoutConfig::default()
            },
            simulator: SimulatorConfig::default(),
            coupons: Vec::new(),
        }
    }
}

/// A control plane with checkout, served over HTTP.
struct Plant {
    dir: tempfile::TempDir,
    keyring: Keyring,
    runtime: tokio::runtime::Runtime,
    server: Option<IngestServer>,
    checkout: Option<Arc<Checkout>>,
    gateway: Option<Arc<SimulatedGateway>>,
    control: Option<ControlPlane>,
    next_event: usize,
}

impl Plant {
    fn new(options: Options) -> Plant {
        let mut plant = Plant {
            dir: tempfile::tempdir().unwrap(),
            keyring: Keyring::new("edge", SECRET).unwrap(),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            server: None,
            checkout: None,
            gateway: None,
            control: None,
            next_event: 0,
        };
        plant.start(options);
        plant
    }

    fn control_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("control")
    }

    fn start(&mut self, options: Options) {
        let dir = self.control_dir();
        let edge = Arc::new(SnapshotStore::open(None).unwrap());
        let control = ControlPlane::start(
            RuntimeConfig {
                data_dir: dir.clone(),
                tick_ms: 50,
                ..RuntimeConfig::default()
            },
            InProcessEdge(edge),
        )
        .unwrap();
        let gateway = Arc::new(
            SimulatedGateway::open(Some(&dir.join("gateway.db")), options.simulator).unwrap(),
        );
        let coupons = options.coupons;
        let checkout = Arc::new(
            Checkout::start(
                CheckoutConfig {
                    data_dir: dir.clone(),
                    ..options.config
                },
                CheckoutDeps {
                    keyring: self.keyring.clone(),
                    gateway: gateway.clone(),
                    coupons: Arc::new(FnCoupons(move |id: &str| {
                        coupons
                            .iter()
                            .find(|(p, _)| p == id)
                            .map(|(_, rule)| rule.clone())
                    })),
                    ingestor: Some(control.ingestor()),
                    feed_db: Some(dir.join("control.db")),
                    kafka: options.kafka,
                    gate: Some(edgeprice_control::checkout::kill_switch_gate(Arc::clone(
                        control.handle(Vec::new()).board(),
                    ))),
                },
            )
            .unwrap(),
        );
        let server = IngestServer::start_with_checkout(
            IngestHttpConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                admin_tokens: vec![
                    AdminToken {
                        name: "ops".into(),
                        token: ADMIN.into(),
                        role: Role::Operator,
                    },
                    AdminToken {
                        name: "watcher".into(),
                        token: VIEWER.into(),
                        role: Role::Viewer,
                    },
                ],
                ..IngestHttpConfig::default()
            },
            control.handle(Vec::new()),
            Some(checkout.clone()),
        )
        .unwrap();
        self.server = Some(server);
        self.checkout = Some(checkout);
        self.gateway = Some(gateway);
        self.control = Some(control);
    }

    fn stop(&mut self) {
        self.server.take();
        self.checkout.take();
        self.gateway.take();
        self.control.take();
    }

    fn restart(&mut self, options: Options) {
        self.stop();
        self.start(options);
    }

    fn addr(&self) -> SocketAddr {
        self.server.as_ref().unwrap().local_addr()
    }

    fn checkout(&self) -> &Checkout {
        self.checkout.as_ref().unwrap()
    }

    fn gateway(&self) -> &SimulatedGateway {
        self.gateway.as_ref().unwrap()
    }

    fn feed(&mut self, feed: FeedKind, body: String) {
        let outcomes = self
            .control
            .as_ref()
            .unwrap()
            .ingestor()
            .ingest_blocking(vec![Submission {
                feed,
                body: body.into_bytes(),
            }])
            .unwrap();
        assert!(
            matches!(outcomes[0], Outcome::Accepted { .. }),
            "{outcomes:?}"
        );
    }

    fn event_id(&mut self) -> String {
        self.next_event += 1;
        format!("t-{}", self.next_event)
    }

    /// Catalogs a SKU and counts `on_hand` units at the central warehouse; waits until
    /// checkout sees them.
    fn stock(&mut self, sku: &str, on_hand: i64) {
        let (catalog, cost, count) = (self.event_id(), self.event_id(), self.event_id());
        let t = now_ms();
        self.feed(FeedKind::Catalog, format!(r#"{{"event_id":"{catalog}","sku":"{sku}","category":"snacks","currency":"EUR","list_price_minor":1500,"tax_rate_bp":2000,"occurred_at_ms":{t}}}"#));
        self.feed(FeedKind::Cost, format!(r#"{{"event_id":"{cost}","sku":"{sku}","vendor":"acme","currency":"EUR","cost_minor":600,"effective_at_ms":{t},"occurred_at_ms":{t}}}"#));
        self.feed(FeedKind::Inventory, format!(r#"{{"event_id":"{count}","sku":"{sku}","kind":"on_hand","quantity":{on_hand},"occurred_at_ms":{t}}}"#));
        self.sync();
        assert_eq!(self.level(sku).0, on_hand);
    }

    /// (available, reserved): what the sales events coming back do not change.
    fn avail(&self, sku: &str) -> (i64, i64) {
        let (on_hand, reserved, sold) = self.level(sku);
        (on_hand - reserved - sold, reserved)
    }

    fn sync(&self) {
        self.runtime
            .block_on(self.checkout().ledger().sync_feed())
            .unwrap();
    }

    /// (on_hand, reserved, sold_pending) at `*`, through the admin API.
    fn level(&self, sku: &str) -> (i64, i64, i64) {
        let reply = http(
            self.addr(),
            "GET",
            &format!("/v1/admin/checkout/stock/{sku}"),
            &[("Authorization", &format!("Bearer {ADMIN}"))],
            "",
        );
        assert_eq!(reply.status, 200, "{reply:?}");
        let location = reply.body["locations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["location"] == "*")
            .cloned()
            .unwrap_or_default();
        (
            location["on_hand"].as_i64().unwrap_or(0),
            location["reserved"].as_i64().unwrap_or(0),
            location["sold_pending"].as_i64().unwrap_or(0),
        )
    }

    /// A signed quote for `lines` of (sku, quantity, unit price).
    fn quote(
        &self,
        customer: Option<&str>,
        lines: &[(&str, u32, i64)],
        coupons: &[(&str, &str)],
        ttl_ms: i64,
    ) -> String {
        let now = now_ms();
        let mut sorted: Vec<_> = lines.to_vec();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        let lines: Vec<QuoteLine> = sorted
            .iter()
            .map(|(sku, quantity, unit)| QuoteLine {
                sku: Sku::new(sku).unwrap(),
                quantity: *quantity,
                unit_list_price_minor: *unit,
                unit_price_minor: *unit,
                discounts: Vec::new(),
                total_minor: *unit * i64::from(*quantity),
            })
            .collect();
        let sum: i64 = lines.iter().map(|l| l.total_minor).sum();
        let quote = Quote {
            snapshot_version: 1,
            promotions_version: 1,
            policy_version: 1,
            currency: Currency::EUR,
            store: Dimension::any(),
            channel: Dimension::new("web").unwrap(),
            segment: Dimension::any(),
            customer_id: customer.map(str::to_owned),
            issued_at_ms: now - 1,
            expires_at_ms: now + ttl_ms,
            lines,
            totals: Totals {
                list_minor: sum,
                subtotal_minor: sum,
                merchandise_minor: sum,
                total_minor: sum,
                ..Totals::default()
            },
            shipping_promotion_id: None,
            coupons: coupons
                .iter()
                .map(|(code, promotion_id)| QuoteCoupon {
                    code: (*code).into(),
                    promotion_id: (*promotion_id).into(),
                })
                .collect(),
        };
        self.keyring.sign(&quote)
    }

    fn checkout_with(&self, key: &str, body: &serde_json::Value, extra: &[(&str, &str)]) -> Reply {
        let mut headers = vec![("Idempotency-Key", key)];
        headers.extend_from_slice(extra);
        http(
            self.addr(),
            "POST",
            "/v1/checkout",
            &headers,
            &body.to_string(),
        )
    }

    fn buy(&self, key: &str, token: &str) -> Reply {
        self.checkout_with(key, &serde_json::json!({"quote_token": token}), &[])
    }

    fn admin(&self, method: &str, path: &str, body: &str) -> Reply {
        http(
            self.addr(),
            method,
            path,
            &[("Authorization", &format!("Bearer {ADMIN}"))],
            body,
        )
    }

    fn steps(&self, saga_id: &str) -> Vec<(String, String)> {
        let reply = http(
            self.addr(),
            "GET",
            &format!("/v1/checkout/{saga_id}"),
            &[],
            "",
        );
        assert_eq!(reply.status, 200, "{reply:?}");
        reply.body["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["step"].as_str().unwrap().to_owned(),
                    s["outcome"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// Waits until the saga has sent its sales events and completed.
    fn completed(&self, saga_id: &str) {
        eventually("the saga to complete", || {
            (self.saga_state(saga_id) == "completed").then_some(())
        });
    }

    fn saga_state(&self, saga_id: &str) -> String {
        let reply = http(
            self.addr(),
            "GET",
            &format!("/v1/checkout/{saga_id}"),
            &[],
            "",
        );
        reply.body["saga"]["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn reconcile(&self) -> serde_json::Value {
        let reply = self.admin("GET", "/v1/admin/checkout/reconciliation", "");
        assert_eq!(reply.status, 200, "{reply:?}");
        reply.body
    }

    /// The reconciliation finds no payment without an order and no order without a
    /// payment.
    fn assert_reconciled(&self) {
        let report = self.reconcile();
        assert!(
            report["payments_without_order"]
                .as_array()
                .unwrap()
                .is_empty(),
            "{report}"
        );
        assert!(
            report["orders_without_payment"]
                .as_array()
                .unwrap()
                .is_empty(),
            "{report}"
        );
    }

    fn payments(&self) -> Vec<edgeprice_control::checkout::payment::Payment> {
        self.runtime.block_on(self.gateway().payments()).unwrap()
    }
}

impl Drop for Plant {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Units of `sku` in the ledger's `sold` table, read with a connection of our own.
fn rusqlite_free_count(dir: &Path, sku: &str) -> i64 {
    let ledger = edgeprice_control::checkout::ledger::open(dir).unwrap();
    ledger
        .query_row(
            "SELECT COALESCE(SUM(quantity), 0) FROM sold WHERE sku = ?1",
            [sku],
            |row| row.get(0),
        )
        .unwrap()
}

#[test]
fn a_hot_sku_hammered_by_far_more_buyers_than_stock_never_oversells_and_every_order_is_paid_once() {
    const STOCK: i64 = 40;
    const BUYERS: usize = 400;
    const THREADS: usize = 16;
    let mut plant = Plant::new(Options::default());
    plant.stock("HOT-1", STOCK);
    let tokens: Vec<String> = (0..BUYERS)
        .map(|i| plant.quote(Some(&format!("c{i}")), &[("HOT-1", 1, 999)], &[], 900_000))
        .collect();
    let tokens = Arc::new(tokens);
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let addr = plant.addr();
    // An auditor reads the stock all along: sold + reserved never exceeds on hand.
    let auditor = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut reads = 0;
            while !done.load(Ordering::Acquire) {
                let reply = http(
                    addr,
                    "GET",
                    "/v1/admin/checkout/stock/HOT-1",
                    &[("Authorization", &format!("Bearer {ADMIN}"))],
                    "",
                );
                for location in reply.body["locations"].as_array().unwrap() {
                    let (on_hand, reserved, sold) = (
                        location["on_hand"].as_i64().unwrap(),
                        location["reserved"].as_i64().unwrap(),
                        location["sold_pending"].as_i64().unwrap(),
                    );
                    assert!(reserved + sold <= on_hand, "oversold: {location}");
                }
                reads += 1;
            }
            reads
        })
    };
    let plant_ref = &plant;
    let results: Vec<(u16, serde_json::Value)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                let (tokens, next) = (tokens.clone(), next.clone());
                scope.spawn(move || {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= BUYERS {
                            return out;
                        }
                        let reply = plant_ref.buy(&format!("buy-{i}"), &tokens[i]);
                        out.push((reply.status, reply.body));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    done.store(true, Ordering::Release);
    assert!(auditor.join().unwrap() > 0);
    let accepted: Vec<&serde_json::Value> = results
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, b)| b)
        .collect();
    let refused = results
        .iter()
        .filter(|(s, b)| *s == 409 && b["error"]["code"] == "insufficient_stock")
        .count();
    assert_eq!(accepted.len() as i64, STOCK, "every unit sold, none twice");
    assert_eq!(
        accepted.len() + refused,
        BUYERS,
        "others: {:?}",
        results
            .iter()
            .filter(|(s, _)| *s != 201 && *s != 409)
            .take(3)
            .collect::<Vec<_>>()
    );
    let refusal = results.iter().find(|(s, _)| *s == 409).unwrap();
    assert_eq!(
        refusal.1["error"]["sku"], "HOT-1",
        "the refusal names the item"
    );

    // Every accepted order is paid once, for exactly the quoted total.
    let payments = plant.payments();
    assert_eq!(payments.len() as i64, STOCK);
    for order in &accepted {
        let order_id = order["order_id"].as_str().unwrap();
        let payment: Vec<_> = payments
            .iter()
            .filter(|p| p.id == order["payment_id"].as_str().unwrap())
            .collect();
        assert_eq!(payment.len(), 1);
        assert_eq!(payment[0].amount_minor, 999);
        assert_eq!(payment[0].status, PaymentStatus::Succeeded);
        let reply = http(
            plant.addr(),
            "GET",
            &format!("/v1/orders/{order_id}"),
            &[],
            "",
        );
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body["order"]["status"], "confirmed");
        // The answer comes once the order is confirmed; the sales events follow.
        let saga_id = reply.body["order"]["saga_id"].as_str().unwrap();
        plant.completed(saga_id);
    }
    assert_eq!(rusqlite_free_count(&plant.control_dir(), "HOT-1"), STOCK);
    assert!(plant.reconcile()["payments_without_order"]
        .as_array()
        .unwrap()
        .is_empty());
    let stats = plant.checkout().stats();
    assert_eq!(stats.oversell, 0);
    assert_eq!(stats.active_reservations, 0);

    // The sales came back through the feed log: sold units leave on-hand for good.
    eventually("the sales events to be absorbed", || {
        plant.sync();
        (plant.level("HOT-1") == (0, 0, 0)).then_some(())
    });
}

#[test]
fn sales_feed_back_into_the_demand_features() {
    let mut plant = Plant::new(Options::default());
    plant.stock("DEM-1", 10);
    let token = plant.quote(Some("c1"), &[("DEM-1", 3, 500)], &[], 900_000);
    assert_eq!(plant.buy("d1", &token).status, 201);
    // The pipeline counts the checkout in the SKU's demand windows (what the demand
    // features are computed from).
    let control = plant.control.as_ref().unwrap();
    let dir = plant.control_dir();
    let units = eventually("the sale in the demand windows", || {
        control.flush().ok()?;
        let conn = edgeprice_control::store::open(&dir).ok()?;
        let state: String = conn
            .query_row(
                "SELECT state FROM sku_state WHERE sku = 'DEM-1'",
                [],
                |row| row.get(0),
            )
            .ok()?;
        let state: serde_json::Value = serde_json::from_str(&state).ok()?;
        let units: i64 = state["demand"]
            .as_array()?
            .iter()
            .map(|b| b[1].as_i64().unwrap_or(0))
            .sum();
        (units > 0).then_some(units)
    });
    assert_eq!(units, 3);
}

#[test]
fn the_same_key_and_body_get_the_same_answer_even_after_a_restart_and_another_body_is_422() {
    let mut plant = Plant::new(Options::default());
    plant.stock("IDEM-1", 5);
    let token = plant.quote(Some("c1"), &[("IDEM-1", 2, 700)], &[], 900_000);
    let first = plant.buy("key-1", &token);
    assert_eq!(first.status, 201, "{first:?}");
    let again = plant.buy("key-1", &token);
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body, "same key, same body: same answer");
    assert_eq!(plant.payments().len(), 1, "charged once");
    assert_eq!(plant.avail("IDEM-1"), (3, 0), "reserved once");

    let other = plant.quote(Some("c1"), &[("IDEM-1", 1, 700)], &[], 900_000);
    let reused = plant.buy("key-1", &other);
    assert_eq!(reused.status, 422);
    assert_eq!(reused.body["error"]["code"], "idempotency_key_reused");

    let missing = http(
        plant.addr(),
        "POST",
        "/v1/checkout",
        &[],
        &serde_json::json!({"quote_token": token}).to_string(),
    );
    assert_eq!(missing.status, 400);
    assert_eq!(missing.body["error"]["code"], "missing_idempotency_key");

    plant.restart(Options::default());
    let after = plant.buy("key-1", &token);
    assert_eq!(after.body, first.body, "the answer survives a restart");
    assert_eq!(plant.payments().len(), 1);
}

#[test]
fn expired_tampered_and_forged_quotes_are_refused_and_hold_nothing() {
    let mut plant = Plant::new(Options::default());
    plant.stock("Q-1", 5);
    let expired = plant.quote(Some("c1"), &[("Q-1", 1, 100)], &[], 1);
    std::thread::sleep(Duration::from_millis(5));
    let reply = plant.buy("k-expired", &expired);
    assert_eq!(reply.status, 409);
    assert_eq!(reply.body["error"]["code"], "quote_expired");

    // Change the payload (another byte of the price lock) and keep the signature.
    let good = plant.quote(Some("c1"), &[("Q-1", 1, 100)], &[], 900_000);
    let (payload, rest) = good.split_once('.').unwrap();
    let mut bytes = payload.as_bytes().to_vec();
    let at = bytes.len() / 2;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{}.{rest}", String::from_utf8(bytes).unwrap());
    let reply = plant.buy("k-tampered", &tampered);
    assert_eq!(reply.status, 400);
    assert_eq!(reply.body["error"]["code"], "quote_tampered");

    let forged = Keyring::new("edge", b"another-secret-another-secret-00").unwrap();
    let quote = plant.keyring.verify(&good, now_ms()).unwrap();
    let reply = plant.buy("k-forged", &forged.sign(&quote));
    assert_eq!(reply.body["error"]["code"], "quote_tampered");
    let other_kid = Keyring::new("rogue", SECRET).unwrap().sign(&quote);
    assert_eq!(
        plant.buy("k-kid", &other_kid).body["error"]["code"],
        "quote_unknown_key"
    );
    assert_eq!(
        plant.buy("k-junk", "not-a-token").body["error"]["code"],
        "quote_malformed"
    );

    assert_eq!(plant.avail("Q-1"), (5, 0), "nothing held");
    assert!(plant.payments().is_empty(), "nothing charged");
    assert_eq!(plant.buy("k-good", &good).status, 201);
}

#[test]
fn a_declined_payment_releases_the_reservation_and_the_coupon() {
    let mut plant = Plant::new(Options {
        coupons: vec![(
            "promo-once".into(),
            CouponRule {
                codes: vec!["ONCE".into()],
                single_use: false,
                total_limit: Some(1),
                per_customer_limit: None,
            },
        )],
        ..Options::default()
    });
    plant.stock("D-1", 3);
    let token = plant.quote(
        Some("c1"),
        &[("D-1", 2, 1_000)],
        &[("ONCE", "promo-once")],
        900_000,
    );
    let declined = plant.checkout_with(
        "k-1",
        &serde_json::json!({"quote_token": token, "payment_method": "card_declined"}),
        &[],
    );
    assert_eq!(declined.status, 402, "{declined:?}");
    assert_eq!(declined.body["error"]["code"], "payment_declined");
    let saga_id = declined.body["error"]["saga_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        plant.steps(&saga_id),
        [
            ("verify_quote", "ok"),
            ("reserve", "ok"),
            ("compensate", "started"),
            ("release", "ok"),
            ("finish", "failed")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    assert_eq!(plant.avail("D-1"), (3, 0), "units back");
    // The coupon's only redemption is free again: another customer can use it.
    let other = plant.quote(
        Some("c2"),
        &[("D-1", 1, 1_000)],
        &[("ONCE", "promo-once")],
        900_000,
    );
    assert_eq!(plant.buy("k-2", &other).status, 201);
    let third = plant.quote(
        Some("c3"),
        &[("D-1", 1, 1_000)],
        &[("ONCE", "promo-once")],
        900_000,
    );
    let exhausted = plant.buy("k-3", &third);
    assert_eq!(exhausted.status, 409);
    assert_eq!(exhausted.body["error"]["code"], "coupon_unavailable");
    assert_eq!(
        plant.avail("D-1"),
        (2, 0),
        "the refused checkout holds nothing"
    );
}

#[test]
fn gateway_timeouts_are_retried_under_the_same_key_and_charge_once() {
    let mut plant = Plant::new(Options {
        simulator: SimulatorConfig {
            timeouts_per_key: 2,
            charge_before_timeout: true,
            timeout_ms: 5,
            duplicate_rate: 1.0,
            ..SimulatorConfig::default()
        },
        ..Options::default()
    });
    plant.stock("T-1", 2);
    let token = plant.quote(Some("c1"), &[("T-1", 1, 250)], &[], 900_000);
    let reply = plant.buy("k-1", &token);
    assert_eq!(reply.status, 201, "{reply:?}");
    let payments = plant.payments();
    assert_eq!(
        payments.len(),
        1,
        "one charge for three attempts delivered twice each"
    );
    assert!(payments[0].deliveries >= 3, "{:?}", payments[0]);
    let saga_id = reply.body["saga_id"].as_str().unwrap();
    assert!(plant
        .steps(saga_id)
        .contains(&("pay".into(), "retried".into())));

    // A gateway that never answers: the charge it booked is found and refunded.
    let token = plant.quote(Some("c2"), &[("T-1", 1, 250)], &[], 900_000);
    let reply = plant.checkout_with(
        "k-2",
        &serde_json::json!({"quote_token": token, "payment_method": "card_timeout"}),
        &[],
    );
    assert_eq!(reply.status, 502, "{reply:?}");
    assert_eq!(reply.body["error"]["code"], "payment_unavailable");
    let saga_id = reply.body["error"]["saga_id"].as_str().unwrap();
    let steps = plant.steps(saga_id);
    assert!(steps.contains(&("refund".into(), "ok".into())), "{steps:?}");
    let refunded = plant
        .payments()
        .into_iter()
        .find(|p| p.idempotency_key == saga_id)
        .unwrap();
    assert_eq!(refunded.status, PaymentStatus::Refunded);
    assert_eq!(plant.avail("T-1"), (1, 0));
    plant.assert_reconciled();
}

#[test]
fn rate_limits_and_the_concurrency_cap_answer_429_with_retry_after() {
    use edgeprice_control::checkout::limits::{Bucket, LimitsConfig};
    let mut options = Options::default();
    options.config.limits = LimitsConfig {
        per_customer: Bucket::new(0.5, 1.0),
        per_ip: Bucket::new(0.2, 2.0),
        ..LimitsConfig::unlimited()
    };
    let mut plant = Plant::new(options);
    plant.stock("R-1", 10);
    let a1 = plant.quote(Some("a"), &[("R-1", 1, 100)], &[], 900_000);
    let a2 = plant.quote(Some("a"), &[("R-1", 1, 101)], &[], 900_000);
    assert_eq!(plant.buy("r-1", &a1).status, 201);
    let limited = plant.buy("r-2", &a2);
    assert_eq!(limited.status, 429, "{limited:?}");
    assert_eq!(limited.body["error"]["code"], "rate_limited");
    assert_eq!(limited.body["error"]["scope"], "customer");
    assert!(
        limited.headers.contains("retry-after: 2"),
        "{}",
        limited.headers
    );
    // Other customers from the same address run into the per-IP bucket.
    let b = plant.quote(Some("b"), &[("R-1", 1, 100)], &[], 900_000);
    let c = plant.quote(Some("c"), &[("R-1", 1, 100)], &[], 900_000);
    assert_eq!(plant.buy("r-3", &b).status, 201);
    let limited = plant.buy("r-4", &c);
    assert_eq!(limited.status, 429);
    assert_eq!(limited.body["error"]["scope"], "ip");
    assert!(limited.headers.contains("retry-after:"));
    assert_eq!(plant.avail("R-1"), (8, 0), "refused requests hold nothing");

    // The cap on concurrent checkouts.
    let mut options = Options::default();
    options.config.limits.max_concurrent_checkouts = 1;
    options.simulator.latency_ms = 400;
    plant.restart(options);
    let slow = plant.quote(Some("s1"), &[("R-1", 1, 100)], &[], 900_000);
    let fast = plant.quote(Some("s2"), &[("R-1", 1, 100)], &[], 900_000);
    let replies = std::thread::scope(|scope| {
        let first = scope.spawn(|| plant.buy("cap-1", &slow));
        std::thread::sleep(Duration::from_millis(150));
        let second = plant.buy("cap-2", &fast);
        (first.join().unwrap(), second)
    });
    assert_eq!(replies.0.status, 201);
    assert_eq!(replies.1.status, 429);
    assert_eq!(replies.1.body["error"]["code"], "too_many_checkouts");
    assert!(replies.1.headers.contains("retry-after: 1"));
    assert_eq!(plant.checkout().stats().concurrency_refused, 1);
}

#[test]
fn an_operator_closes_checkout_and_buyers_get_503_until_it_opens() {
    let mut plant = Plant::new(Options::default());
    plant.stock("O-1", 5);
    let token = plant.quote(Some("c1"), &[("O-1", 1, 100)], &[], 900_000);
    let anonymous = http(plant.addr(), "POST", "/v1/admin/checkout/close", &[], "{}");
    assert_eq!(anonymous.status, 401);
    let closed = plant.admin(
        "POST",
        "/v1/admin/checkout/close",
        r#"{"by":"ops-anna","reason":"payment provider incident"}"#,
    );
    assert_eq!(closed.status, 200, "{closed:?}");
    let refused = plant.buy("o-1", &token);
    assert_eq!(refused.status, 503);
    assert_eq!(refused.body["error"]["code"], "checkout_closed");
    assert!(refused.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("payment provider incident"));
    assert_eq!(plant.checkout().open_state().by, "ops-anna");
    // Closed survives a restart.
    plant.restart(Options::default());
    assert_eq!(plant.buy("o-1", &token).status, 503);
    plant
        .runtime
        .block_on(plant.checkout().set_open(true, "ops-anna", "incident over"))
        .unwrap();
    assert_eq!(plant.buy("o-1", &token).status, 201);
    let stats = plant.admin("GET", "/v1/admin/checkout", "");
    assert_eq!(stats.body["stats"]["open"], true);
    assert_eq!(stats.body["stats"]["oversell"], 0);
    let viewer = http(
        plant.addr(),
        "POST",
        "/v1/admin/checkout/close",
        &[("Authorization", &format!("Bearer {VIEWER}"))],
        "{}",
    );
    assert_eq!(viewer.status, 403, "a viewer cannot close checkout");

    // The admin API's kill switch closes checkout as well, and the metrics show it.
    let engage = |engaged: bool| {
        let body = serde_json::json!({"switch": {"kind": "checkout"}, "engaged": engaged, "reason": "fraud wave"});
        let reply = plant.admin("POST", "/v1/admin/kill-switches", &body.to_string());
        assert_eq!(reply.status, 200, "{reply:?}");
    };
    engage(true);
    let token = plant.quote(Some("c2"), &[("O-1", 1, 100)], &[], 900_000);
    let refused = plant.buy("o-2", &token);
    assert_eq!(refused.status, 503);
    assert_eq!(refused.body["error"]["code"], "checkout_closed");
    assert!(refused.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("fraud wave"));
    let metrics = plant.admin("GET", "/v1/admin/metrics", "");
    assert_eq!(
        metrics.body["checkout"]["open"], false,
        "{:?}",
        metrics.body
    );
    assert_eq!(metrics.body["checkout"]["orders_total"], 1);
    assert_eq!(metrics.body["checkout"]["oversell"], 0);
    engage(false);
    assert_eq!(plant.buy("o-2", &token).status, 201);
}

#[test]
fn an_order_that_cannot_be_created_is_refunded_and_released() {
    let mut options = Options::default();
    options.config.faults = Faults {
        hang_at: None,
        fail_at: Some("create_order".into()),
    };
    let mut plant = Plant::new(options);
    plant.stock("F-1", 2);
    let token = plant.quote(Some("c1"), &[("F-1", 1, 300)], &[], 900_000);
    let reply = plant.buy("f-1", &token);
    assert_eq!(reply.status, 500, "{reply:?}");
    assert_eq!(reply.body["error"]["code"], "order_failed");
    let saga_id = reply.body["error"]["saga_id"].as_str().unwrap().to_owned();
    assert_eq!(
        plant.steps(&saga_id),
        [
            ("verify_quote", "ok"),
            ("reserve", "ok"),
            ("pay", "ok"),
            ("compensate", "started"),
            ("refund", "ok"),
            ("release", "ok"),
            ("finish", "failed")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    assert_eq!(plant.payments()[0].status, PaymentStatus::Refunded);
    assert_eq!(plant.avail("F-1"), (2, 0));

    // An unknown error after the order: undone in reverse order.
    let mut options = Options::default();
    options.config.faults = Faults {
        hang_at: None,
        fail_at: Some("confirm".into()),
    };
    plant.restart(options);
    let token = plant.quote(Some("c2"), &[("F-1", 1, 300)], &[], 900_000);
    let reply = plant.buy("f-2", &token);
    assert_eq!(reply.status, 409, "{reply:?}");
    let saga_id = reply.body["error"]["saga_id"].as_str().unwrap().to_owned();
    let steps: Vec<String> = plant.steps(&saga_id).into_iter().map(|(s, _)| s).collect();
    assert_eq!(
        steps,
        [
            "verify_quote",
            "reserve",
            "pay",
            "create_order",
            "compensate",
            "cancel_order",
            "refund",
            "release",
            "finish"
        ]
    );
    let order = http(
        plant.addr(),
        "GET",
        &format!("/v1/orders/{}", find_order(&plant, &saga_id)),
        &[],
        "",
    );
    assert_eq!(order.body["order"]["status"], "cancelled");
    assert_eq!(plant.avail("F-1"), (2, 0));
    let report = plant.reconcile();
    assert!(
        report["payments_without_order"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{report}"
    );
}

fn token_for(plant: &Plant, customer: &str) -> Reply {
    http(
        plant.addr(),
        "POST",
        "/v1/purchase-tokens",
        &[],
        &serde_json::json!({"sku": "FL-1", "quantity": 1, "customer_id": customer}).to_string(),
    )
}

fn find_order(plant: &Plant, saga_id: &str) -> String {
    plant
        .checkout()
        .ledger()
        .saga(saga_id)
        .unwrap()
        .unwrap()
        .order_id
        .unwrap()
}

#[test]
fn flash_sale_tokens_are_issued_in_order_up_to_the_stock_with_per_customer_limits() {
    let mut plant = Plant::new(Options::default());
    plant.stock("FL-1", 3);
    let sale = serde_json::json!({"starts_at_ms": 0, "ends_at_ms": now_ms() + 3_600_000, "per_customer_limit": 1, "hold_ttl_ms": 300_000, "require_token": true});
    assert_eq!(
        plant
            .admin(
                "PUT",
                "/v1/admin/checkout/flash-sales/FL-1",
                &sale.to_string()
            )
            .status,
        200
    );

    let issued: Vec<Reply> = ["u1", "u2", "u3", "u4", "u5"]
        .iter()
        .map(|c| token_for(&plant, c))
        .collect();
    assert_eq!(
        issued.iter().map(|r| r.status).collect::<Vec<_>>(),
        [201, 201, 201, 409, 409],
        "first come, first served"
    );
    assert_eq!(issued[3].body["error"]["code"], "insufficient_stock");
    let again = token_for(&plant, "u1");
    assert_eq!(again.status, 409);
    assert_eq!(again.body["error"]["code"], "customer_limit_exceeded");

    // Checkout of a flash SKU needs the customer's token.
    let quote = plant.quote(Some("u1"), &[("FL-1", 1, 100)], &[], 900_000);
    let refused = plant.buy("fl-0", &quote);
    assert_eq!(refused.body["error"]["code"], "purchase_token_required");
    let stolen = plant.checkout_with(
        "fl-x",
        &serde_json::json!({"quote_token": quote, "purchase_tokens": [issued[1].body["token"]]}),
        &[],
    );
    assert_eq!(stolen.body["error"]["code"], "invalid_purchase_token");
    let bought = plant.checkout_with(
        "fl-1",
        &serde_json::json!({"quote_token": quote, "purchase_tokens": [issued[0].body["token"]]}),
        &[],
    );
    assert_eq!(bought.status, 201, "{bought:?}");
    assert_eq!(plant.avail("FL-1"), (0, 2));

    // A token given back frees its unit for the next in line.
    let given_back = http(
        plant.addr(),
        "DELETE",
        &format!(
            "/v1/purchase-tokens/{}?customer_id=u2",
            issued[1].body["token"].as_str().unwrap()
        ),
        &[],
        "",
    );
    assert_eq!(given_back.status, 200);
    assert_eq!(token_for(&plant, "u4").status, 201);

    // Flash-sale limits are tighter: 1 request/s per customer.
    let mut options = Options::default();
    options.config.limits.flash_per_customer =
        edgeprice_control::checkout::limits::Bucket::new(1.0, 1.0);
    options.config.sweep_interval_ms = 50;
    plant.restart(options);
    assert_eq!(
        token_for(&plant, "u9").status,
        409,
        "sold out: {:?}",
        token_for(&plant, "u9")
    );
    let limited = token_for(&plant, "u9");
    assert_eq!(limited.status, 429);
    assert!(limited.headers.contains("retry-after:"));
}

#[test]
fn expired_reservations_are_swept() {
    let mut options = Options::default();
    options.config.sweep_interval_ms = 20;
    let mut plant = Plant::new(options);
    plant.stock("S-1", 2);
    let sale = serde_json::json!({"starts_at_ms": 0, "ends_at_ms": now_ms() + 3_600_000, "per_customer_limit": 2, "hold_ttl_ms": 100, "require_token": true});
    assert_eq!(
        plant
            .admin(
                "PUT",
                "/v1/admin/checkout/flash-sales/S-1",
                &sale.to_string()
            )
            .status,
        200
    );
    let reply = http(
        plant.addr(),
        "POST",
        "/v1/purchase-tokens",
        &[],
        r#"{"sku":"S-1","quantity":2,"customer_id":"u1"}"#,
    );
    assert_eq!(reply.status, 201, "{reply:?}");
    assert_eq!(plant.avail("S-1"), (0, 2));
    eventually("the sweeper", || {
        (plant.avail("S-1") == (2, 0)).then_some(())
    });
    assert!(plant.checkout().stats().swept >= 1);
    // The expired token no longer buys anything.
    let quote = plant.quote(Some("u1"), &[("S-1", 2, 100)], &[], 900_000);
    let reply = plant.checkout_with(
        "s-1",
        &serde_json::json!({"quote_token": quote, "purchase_tokens": [reply.body["token"]]}),
        &[],
    );
    assert_eq!(reply.body["error"]["code"], "invalid_purchase_token");
}

#[test]
fn recovery_finishes_paid_sagas_and_rolls_back_the_rest() {
    let mut plant = Plant::new(Options::default());
    plant.stock("REC-1", 10);
    let ledger = plant.checkout().ledger().clone();
    let gateway = plant.gateway.clone().unwrap();
    let quote_for = |plant: &Plant, customer: &str| {
        let token = plant.quote(Some(customer), &[("REC-1", 1, 400)], &[], 900_000);
        plant.keyring.verify(&token, now_ms()).unwrap()
    };
    // Four sagas as a crash would leave them: reserved and charged, reserved and not
    // charged, paid, and halfway through compensation (charged, then compensating).
    let mut sagas = Vec::new();
    for (i, customer) in ["charged", "uncharged", "paid", "compensating"]
        .iter()
        .enumerate()
    {
        let quote = quote_for(&plant, customer);
        let saga_id = format!("sg_test{i}");
        let outcome = plant
            .runtime
            .block_on(ledger.begin(BeginSaga {
                saga_id: saga_id.clone(),
                idempotency_key: format!("rec-{i}"),
                request_hash: "h".into(),
                customer: Some((*customer).into()),
                quote_json: serde_json::to_string(&quote).unwrap(),
                total_minor: 400,
                currency: "EUR".into(),
                lines: vec![WantedLine {
                    sku: "REC-1".into(),
                    store: "*".into(),
                    quantity: 1,
                }],
                coupons: Vec::new(),
                purchase_tokens: Vec::new(),
                hold_ttl_ms: 600_000,
            }))
            .unwrap();
        assert!(
            matches!(outcome, BeginOutcome::Started { .. }),
            "{outcome:?}"
        );
        if *customer != "uncharged" {
            let payment = plant
                .runtime
                .block_on(gateway.charge(ChargeRequest {
                    idempotency_key: saga_id.clone(),
                    amount_minor: 400,
                    currency: "EUR".into(),
                    customer_id: None,
                    method: None,
                }))
                .unwrap();
            if *customer != "charged" {
                plant
                    .runtime
                    .block_on(ledger.advance(
                        &saga_id,
                        Transition::Paid {
                            payment_id: payment.id,
                            amount_minor: 400,
                        },
                    ))
                    .unwrap();
            }
        }
        if *customer == "compensating" {
            plant
                .runtime
                .block_on(ledger.advance(
                    &saga_id,
                    Transition::Compensating {
                        code: "order_failed".into(),
                        detail: String::new(),
                    },
                ))
                .unwrap();
        }
        sagas.push(saga_id);
    }
    assert_eq!(plant.avail("REC-1"), (6, 4));
    // As after a restart: the recovery loop settles them.
    let handled = plant.runtime.block_on(plant.checkout().recover());
    assert_eq!(handled, 4);
    let states: Vec<String> = sagas.iter().map(|s| plant.saga_state(s)).collect();
    assert_eq!(states, ["completed", "failed", "completed", "failed"]);
    assert_eq!(plant.avail("REC-1"), (8, 0));
    plant.assert_reconciled();
    let stats = plant.checkout().stats();
    assert_eq!(stats.recovered, 4);
    assert!(stats.sagas_by_state.contains(&(SagaState::Completed, 2)));
    // The idempotent answer of a recovered saga is its final one.
    let replay = plant
        .runtime
        .block_on(async { ledger.saga(&sagas[0]) })
        .unwrap()
        .unwrap();
    assert_eq!(replay.response.unwrap().status, 201);
}

#[test]
fn reconciliation_reports_payments_without_orders_and_orders_without_payments() {
    let mut plant = Plant::new(Options::default());
    plant.stock("RC-1", 5);
    let token = plant.quote(Some("c1"), &[("RC-1", 1, 100)], &[], 900_000);
    let reply = plant.buy("rc-1", &token);
    assert_eq!(reply.status, 201);
    plant.completed(reply.body["saga_id"].as_str().unwrap());
    assert!(plant.reconcile()["payments_without_order"]
        .as_array()
        .unwrap()
        .is_empty());
    // A charge nobody ordered (another system, or a bug) shows up.
    plant
        .runtime
        .block_on(plant.gateway().charge(ChargeRequest {
            idempotency_key: "stray".into(),
            amount_minor: 100,
            currency: "EUR".into(),
            customer_id: None,
            method: None,
        }))
        .unwrap();
    let report = plant.reconcile();
    let stray = report["payments_without_order"].as_array().unwrap();
    assert_eq!(stray.len(), 1, "{report}");
    assert_eq!(stray[0]["saga_id"], "stray");
    // An order whose payment was refunded behind its back.
    let order_payment = plant
        .payments()
        .into_iter()
        .find(|p| p.idempotency_key != "stray")
        .unwrap();
    plant
        .runtime
        .block_on(
            plant
                .gateway()
                .refund(edgeprice_control::checkout::payment::RefundRequest {
                    idempotency_key: "manual".into(),
                    payment_id: order_payment.id,
                    amount_minor: 100,
                }),
        )
        .unwrap();
    let report = plant.reconcile();
    assert_eq!(
        report["orders_without_payment"].as_array().unwrap().len(),
        1,
        "{report}"
    );
    assert_eq!(plant.checkout().stats().reconciliation_issues, 2);
}

#[test]
fn checkout_events_reach_the_in_process_bus() {
    let mut plant = Plant::new(Options::default());
    plant.stock("EV-1", 5);
    let mut events = plant.checkout().events().subscribe();
    let token = plant.quote(Some("c1"), &[("EV-1", 1, 100)], &[], 900_000);
    let reply = plant.buy("ev-1", &token);
    let saga_id = reply.body["saga_id"].as_str().unwrap().to_owned();
    let mut kinds = Vec::new();
    plant.runtime.block_on(async {
        while !kinds.contains(&"checkout.completed".to_owned()) {
            let event = tokio::time::timeout(PATIENCE, events.recv())
                .await
                .unwrap()
                .unwrap();
            if event.subject == saga_id {
                kinds.push(event.kind.clone());
            }
        }
    });
    assert_eq!(
        kinds,
        [
            "checkout.reserved",
            "checkout.paid",
            "order.created",
            "order.confirmed",
            "checkout.completed"
        ]
    );
}

#[test]
fn checkout_events_are_published_to_kafka_in_order() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::mocking::MockCluster;
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

    let mock = MockCluster::new(1).unwrap();
    let topic = edgeprice_control::checkout::events::CHECKOUT_EVENTS_TOPIC;
    mock.create_topic(topic, 1, 1).unwrap();
    let mut plant = Plant::new(Options {
        kafka: Some(edgeprice_control::kafka::KafkaConfig {
            brokers: mock.bootstrap_servers(),
            delivery_timeout_ms: 10_000,
            ..edgeprice_control::kafka::KafkaConfig::default()
        }),
        ..Options::default()
    });
    plant.stock("KF-1", 5);
    let token = plant.quote(Some("c1"), &[("KF-1", 1, 100)], &[], 900_000);
    let reply = plant.buy("kf-1", &token);
    assert_eq!(reply.status, 201);
    let saga_id = reply.body["saga_id"].as_str().unwrap().to_owned();

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("group.id", "checkout-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut kinds = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while !kinds.contains(&"checkout.completed".to_owned()) {
        assert!(Instant::now() < deadline, "events so far: {kinds:?}");
        let Some(message) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let message = message.unwrap();
        if message.key() != Some(saga_id.as_bytes()) {
            continue;
        }
        let event: serde_json::Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
        assert!(event["event_id"].as_str().is_some_and(|id| !id.is_empty()));
        kinds.push(event["type"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        kinds,
        [
            "checkout.reserved",
            "checkout.paid",
            "order.created",
            "order.confirmed",
            "checkout.completed"
        ]
    );
}
