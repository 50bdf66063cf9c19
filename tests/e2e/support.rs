//! Test support: an in-process edge on `127.0.0.1:0`, a minimal blocking HTTP/1.1
//! client (so the tests see exactly the bytes a client would), and `assert_eventually`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use edgeprice_pricing::{Currency, Dimension, PriceEntry, PriceKey, PromotionTag, Sku};
use edgeprice_server::metrics::Metrics;
use edgeprice_server::transport::{self, ServerHandle, Transport};
use edgeprice_server::{Api, ApiConfig, SnapshotStore};

pub const TOKEN: &str = "test-admin-token-0123456789";

/// How long `assert_eventually!` waits.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Retries `$cond` until it holds or `PATIENCE` runs out.
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr, $($msg:tt)+) => {{
        let deadline = std::time::Instant::now() + $crate::support::PATIENCE;
        loop {
            if $cond { break; }
            assert!(std::time::Instant::now() < deadline, $($msg)+);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }};
}

/// Runs each named test, a `fn(Transport)` of the enclosing module, once per transport:
/// as `hyper::name` and `uring::name`, so both serve the same routes the same way.
#[macro_export]
macro_rules! each_transport {
    ($($name:ident),* $(,)?) => {
        mod hyper {
            $(#[test]
            fn $name() {
                super::$name(edgeprice_server::Transport::Hyper)
            })*
        }
        mod uring {
            $(#[test]
            fn $name() {
                super::$name(edgeprice_server::Transport::Uring)
            })*
        }
    };
}

/// An edge server running in this process.
pub struct Edge {
    pub addr: SocketAddr,
    handle: Option<ServerHandle>,
}

impl Edge {
    pub fn start(transport: Transport, data_dir: Option<PathBuf>) -> Edge {
        Edge::start_with(
            transport,
            data_dir,
            ApiConfig {
                admin_token: Some(TOKEN.into()),
                max_upload_bytes: 1 << 20,
                ..ApiConfig::default()
            },
        )
    }

    pub fn start_with(transport: Transport, data_dir: Option<PathBuf>, config: ApiConfig) -> Edge {
        let store = Arc::new(SnapshotStore::open(data_dir).expect("open store"));
        let api = Arc::new(Api::new(store, Arc::new(Metrics::new(2)), config));
        let handle =
            transport::serve(transport, "127.0.0.1:0".parse().unwrap(), 2, api).expect("serve");
        assert_eq!(handle.transport(), transport);
        Edge {
            addr: handle.local_addr(),
            handle: Some(handle),
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        request(self.addr, "GET", path, &[], &[])
    }

    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        request(self.addr, "GET", path, headers, &[])
    }

    /// POSTs to an admin route with the admin token.
    pub fn admin_post(&self, path: &str, body: &[u8]) -> Reply {
        let auth = format!("Bearer {TOKEN}");
        request(
            self.addr,
            "POST",
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/x-flatbuffers"),
            ],
            body,
        )
    }

    pub fn stop(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown();
        }
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown();
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The error code of a JSON error answer.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .expect("error code")
            .to_owned()
    }
}

/// Sends one request on a fresh connection and reads the whole response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: edge\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // The server may answer (413, 401) before reading all of a large body.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("complete response head");
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if let Some(len) = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        body.truncate(len.1.parse().unwrap());
    }
    Reply {
        status,
        headers,
        body,
    }
}

pub fn key(sku: &str, store: &str, channel: &str, segment: &str) -> PriceKey {
    PriceKey {
        sku: Sku::new(sku).unwrap(),
        store: Dimension::new(store).unwrap(),
        channel: Dimension::new(channel).unwrap(),
        segment: Dimension::new(segment).unwrap(),
    }
}

pub fn entry(key: PriceKey, price: i64) -> PriceEntry {
    PriceEntry {
        key,
        currency: Currency::EUR,
        list_price_minor: price + 100,
        price_minor: price,
        floor_minor: price / 2,
        promotion: None,
        valid_from_ms: None,
        valid_until_ms: None,
        revision: 1,
    }
}

pub fn promotion(id: &str, price: i64, starts_at_ms: i64, ends_at_ms: i64) -> PromotionTag {
    PromotionTag {
        id: id.into(),
        label: format!("{id} label"),
        price_minor: price,
        starts_at_ms,
        ends_at_ms,
    }
}
