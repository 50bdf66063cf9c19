//! `edgeprice up --demo` as a user runs it: a real process, real ports, real signals.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(60);

struct Up {
    child: Child,
    edge: String,
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
        // Keep draining stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in stdout.lines() {});
        Up { child, edge }
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(&self.edge).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut raw = String::new();
        stream.read_to_string(&mut raw).ok()?;
        let status = raw.split(' ').nth(1)?.parse().ok()?;
        let body = raw.split("\r\n\r\n").nth(1)?.to_owned();
        Some((status, body))
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
