//! Helpers shared by the control plane's HTTP tests: one-shot HTTP/1.1 requests,
//! polling, and reading prices back from an in-process edge.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgeprice_server::SnapshotStore;

pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub body: serde_json::Value,
}

/// One HTTP/1.1 request on a fresh connection.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: &str,
) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    Reply {
        status,
        headers: head.to_ascii_lowercase(),
        body: serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    }
}

pub fn post(addr: SocketAddr, feed: &str, token: &str, body: &str) -> Reply {
    request(
        addr,
        "POST",
        &format!("/v1/feeds/{feed}"),
        Some(token),
        "application/json",
        body,
    )
}

pub fn post_ndjson(addr: SocketAddr, feed: &str, token: &str, lines: &[String]) -> Reply {
    request(
        addr,
        "POST",
        &format!("/v1/feeds/{feed}"),
        Some(token),
        "application/x-ndjson",
        &lines.join("\n"),
    )
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Polls `check` until it holds, for at most five seconds.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn edge_price(edge: &SnapshotStore, sku: &str) -> Option<(i64, i64)> {
    let guard = edge.load();
    let snapshot = guard.as_ref()?;
    let found = snapshot.entries().find(|e| e.key.sku.as_str() == sku);
    found.map(|e| (e.price_minor, e.floor_minor))
}
