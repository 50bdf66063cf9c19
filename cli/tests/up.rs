//! `edgeprice up --demo` as a user runs it: a real process, real ports, real signals.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(60);

struct Up {
    child: Child,
    edge: String,
    control: String,
}

/// One HTTP/1.1 exchange on a fresh connection: status and body.
fn exchange(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    // Generous: test builds are unoptimised and the demo keeps the pipeline busy.
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: edgeprice\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    let status = raw.split(' ').nth(1)?.parse().ok()?;
    let body = raw.split("\r\n\r\n").nth(1)?.to_owned();
    Some((status, body))
}

impl Up {
    fn start(data_dir: &std::path::Path) -> Up {
        let mut child = Command::new(env!("CARGO_BIN_EXE_edgeprice"))
            .args([
                "up",
                "--demo",
                "--listen",
                "127.0.0.1:0",
                "--feeds-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start edgeprice up");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("banner");
        // "edgeprice is up: edge http://ADDR, control plane http://ADDR"
        let edge = line
            .split("edge http://")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .unwrap_or_else(|| panic!("unexpected banner {line:?}"))
            .to_owned();
        let control = line
            .split("control plane http://")
            .nth(1)
            .map(|rest| rest.trim().to_owned())
            .unwrap_or_else(|| panic!("unexpected banner {line:?}"));
        // Keep draining stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in stdout.lines() {});
        Up {
            child,
            edge,
            control,
        }
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        exchange(&self.edge, "GET", path, None, "")
    }

    fn snapshot_version(&self) -> Option<u64> {
        let (_, metrics) = self.get("/metrics")?;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("edgeprice_snapshot_version ")?.parse().ok())
    }

    fn stop(mut self) {
        // SIGTERM: the graceful path.
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + PATIENCE;
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "edgeprice up did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn demo_prices_appear_move_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path());
    let body = eventually("a price for SKU-0000042", || {
        match up.get("/v1/prices/SKU-0000042?store=store-1&channel=web") {
            Some((200, body)) => Some(body),
            _ => None,
        }
    });
    let price: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(price["price_minor"].as_i64().unwrap() >= price["floor_minor"].as_i64().unwrap());
    assert_eq!(price["currency"], "EUR");
    let first = up.snapshot_version().unwrap();
    let moved = eventually("the simulator to move prices", || {
        up.snapshot_version().filter(|v| *v > first + 2)
    });
    up.stop();

    // State survives: the restarted edge serves at least the version it had.
    let up = Up::start(dir.path());
    let restarted = eventually("the restarted edge", || up.snapshot_version());
    assert!(restarted >= moved, "restarted at {restarted}, had {moved}");
    assert_eq!(up.get("/v1/prices/SKU-0000042").map(|(s, _)| s), Some(200));
    up.stop();
}

#[test]
fn promotions_defined_at_the_control_plane_price_quotes_at_the_edge() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path());
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
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
    let (status, body) = exchange(
        &up.control,
        "POST",
        "/v1/admin/promotions/dry-run",
        Some(token.trim()),
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
    let (status, body) = exchange(
        &up.control,
        "PUT",
        "/v1/admin/promotions/demo-multibuy?reason=test",
        Some(token.trim()),
        &definition.to_string(),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let cart = serde_json::json!({"lines": [{"sku": sku, "qty": 3}]}).to_string();
    let quote: serde_json::Value = eventually("the promotion in quotes", || {
        let (status, body) = exchange(&up.edge, "POST", "/v1/quote", None, &cart)?;
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
