//! The control plane's HTTP listener: feed ingestion ([`feeds`]) and the admin API
//! ([`admin`]) on one port, served on its own thread and runtime (never on the threads
//! that serve prices).
//!
//! - `POST /v1/feeds/{feed}`: see [`feeds`].
//! - `/v1/admin/…`: see [`admin`] and the contract in `edgeprice_schemas::admin`.
//! - `/v1/checkout`, `/v1/orders/…`, `/v1/purchase-tokens`, `/v1/admin/checkout/…`:
//!   see [`checkout`].
//! - `GET /healthz`: `200 {"status":"ok"}`.
//!
//! Errors are `{"error":{"code":"…","message":"…"}}`; unknown paths are `404 not_found`.

pub mod admin;
pub mod checkout;
pub mod feeds;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use edgeprice_schemas::admin::Role;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;
use tracing::{info, warn};

pub use feeds::FeedSource;

use crate::runtime::ControlHandle;

/// A bearer token of the admin API.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminToken {
    /// Who holds it; the audit log records this name as the actor.
    pub name: String,
    pub token: String,
    pub role: Role,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken")
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .field("role", &self.role)
            .finish()
    }
}

/// Settings of the control plane's listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IngestHttpConfig {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// Who may send feeds.
    pub sources: Vec<FeedSource>,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Who may use `/v1/admin/…`, with which role; empty disables those routes.
    pub admin_tokens: Vec<AdminToken>,
}

impl Default for IngestHttpConfig {
    fn default() -> Self {
        IngestHttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            sources: Vec::new(),
            max_body_bytes: 16 * 1024 * 1024,
            admin_tokens: Vec::new(),
        }
    }
}

/// What every handler shares.
struct Service {
    control: ControlHandle,
    checkout: Option<Arc<crate::checkout::Checkout>>,
    config: IngestHttpConfig,
    buckets: Mutex<HashMap<String, feeds::Bucket>>,
}

type Reply = Response<Full<Bytes>>;

fn json_reply(status: StatusCode, body: serde_json::Value) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        "application/json".parse().expect("static header"),
    );
    response
}

fn error_reply(status: u16, code: &str, message: &str) -> Reply {
    json_reply(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        json!({"error": {"code": code, "message": message}}),
    )
}

fn method_not_allowed(allow: &str) -> Reply {
    let mut reply = error_reply(
        405,
        "method_not_allowed",
        &format!("this route takes {allow}"),
    );
    reply
        .headers_mut()
        .insert("allow", allow.parse().expect("static header"));
    reply
}

/// Reads a whole body of at most `limit` bytes.
async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, Reply> {
    match Limited::new(body, limit).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(error_reply(
            413,
            "body_too_large",
            &format!("bodies are limited to {limit} bytes"),
        )),
        Err(err) => Err(error_reply(400, "unreadable_body", &err.to_string())),
    }
}

/// The value of query parameter `name` (percent-decoded), if present.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| percent_decode(value))
}

/// Decodes a query value (`+` is a space).
fn percent_decode(value: &str) -> String {
    decode(value, true)
}

/// Decodes a path segment (`+` is itself).
fn decode_path(value: &str) -> String {
    decode(value, false)
}

fn decode(value: &str, plus_is_space: bool) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(high), Some(low)) => {
                        out.push((high * 16 + low) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Compares tokens without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bearer token of a request, if any.
fn bearer(request: &Request<Incoming>) -> Option<&str> {
    request
        .headers()
        .get(hyper::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

impl Service {
    async fn handle(&self, request: Request<Incoming>) -> Reply {
        let path = request.uri().path();
        if path == "/healthz" {
            return json_reply(StatusCode::OK, json!({"status": "ok"}));
        }
        if checkout::is_checkout_path(path) {
            return checkout::route(self, request).await;
        }
        if let Some(feed) = path.strip_prefix("/v1/feeds/") {
            let feed = feed.to_owned();
            return feeds::handle(self, request, &feed).await;
        }
        if let Some(route) = path.strip_prefix("/v1/admin/") {
            let route = route.to_owned();
            return admin::handle(self, request, &route).await;
        }
        error_reply(
            404,
            "not_found",
            "no such route; feeds go to POST /v1/feeds/{feed}, the admin API is under /v1/admin/",
        )
    }
}

/// A running control-plane listener.
#[derive(Debug)]
pub struct IngestServer {
    local_addr: SocketAddr,
    shutdown_tx: watch::Sender<bool>,
    server_jh: Option<JoinHandle<()>>,
}

impl IngestServer {
    /// Binds `config.listen` and serves feeds and the admin API of `control` on its own
    /// thread and runtime.
    pub fn start(
        config: IngestHttpConfig,
        control: ControlHandle,
    ) -> std::io::Result<IngestServer> {
        Self::start_with_checkout(config, control, None)
    }

    /// [`IngestServer::start`], also serving the checkout routes ([`checkout`]) when
    /// `checkout` is given (otherwise they answer 503 `checkout_disabled`).
    pub fn start_with_checkout(
        config: IngestHttpConfig,
        control: ControlHandle,
        checkout: Option<Arc<crate::checkout::Checkout>>,
    ) -> std::io::Result<IngestServer> {
        let listener = std::net::TcpListener::bind(config.listen)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let service = Arc::new(Service {
            control,
            checkout,
            config,
            buckets: Mutex::new(HashMap::new()),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let server_jh = std::thread::Builder::new()
            .name("edgeprice-control-http".into())
            .spawn(move || runtime.block_on(accept_loop(listener, service, shutdown_rx)))?;
        info!(%local_addr, "control plane listening (feeds, admin API)");
        Ok(IngestServer {
            local_addr,
            shutdown_tx,
            server_jh: Some(server_jh),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for IngestServer {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
        if let Some(server_jh) = self.server_jh.take() {
            let _ = server_jh.join();
        }
    }
}

async fn accept_loop(
    listener: std::net::TcpListener,
    service: Arc<Service>,
    mut shutdown_rx: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            warn!(error = %err, "cannot register the control-plane listener");
            return;
        }
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let service = Arc::clone(&service);
                let mut shutdown_rx = shutdown_rx.clone();
                tokio::spawn(async move {
                    let handler = service_fn(move |mut request: Request<Incoming>| {
                        request.extensions_mut().insert(checkout::PeerIp(peer.ip()));
                        let service = Arc::clone(&service);
                        async move { Ok::<_, Infallible>(service.handle(request).await) }
                    });
                    let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), handler);
                    tokio::pin!(connection);
                    tokio::select! {
                        _ = connection.as_mut() => {}
                        _ = shutdown_rx.changed() => {
                            connection.as_mut().graceful_shutdown();
                            let _ = connection.await;
                        }
                    }
                });
            }
            _ = shutdown_rx.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_decoded() {
        let query = Some("q=SKU%2D1&sort=price&flag&name=a+b&bad=%zz");
        assert_eq!(query_param(query, "q").as_deref(), Some("SKU-1"));
        assert_eq!(query_param(query, "sort").as_deref(), Some("price"));
        assert_eq!(query_param(query, "flag").as_deref(), Some(""));
        assert_eq!(query_param(query, "name").as_deref(), Some("a b"));
        assert_eq!(query_param(query, "bad").as_deref(), Some("%zz"));
        assert_eq!(query_param(query, "missing"), None);
        assert_eq!(query_param(Some("x=%4"), "x").as_deref(), Some("%4"));
        assert_eq!(decode_path("SKU%2D1+2"), "SKU-1+2");
    }
}
