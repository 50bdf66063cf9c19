//! HTTP feed ingestion: `POST /v1/feeds/{feed}`.
//!
//! - Body: one JSON event (`Content-Type: application/json`), or NDJSON
//!   (`application/x-ndjson`: one event per line, blank lines ignored).
//! - Auth: `Authorization: Bearer <token>` of a configured feed source; a source may be
//!   limited to some feeds. Missing or unknown token: `401 unauthorized`; feed not
//!   allowed: `403 forbidden_feed`.
//! - Rate limit: a token bucket per source, one token per event; `429 rate_limited` with
//!   `Retry-After` (seconds); a request with more events than the source's burst is
//!   `413 too_many_events`.
//! - Answers only once every event of the request is durable or refused:
//!   - one event: `202 {"status":"accepted","seq":N}`, `200 {"status":"duplicate"}`, or
//!     the event's error;
//!   - NDJSON: `202 {"accepted":A,"duplicates":D,"rejected":0,"results":[…]}`; if any
//!     line was refused, the status and `error` of the first refusal, with the same
//!     summary: accepted lines are durable and, thanks to `event_id`, safe to resend.
//! - Errors: `{"error":{"code":"…","message":"…"}}`; `413 body_too_large`,
//!   `404 unknown_feed`/`not_found`, `405 method_not_allowed`, `503 storage_error`
//!   (retry later).
//! - `GET /v1/admin/decisions?sku=…[&limit=N]`: the SKU's decision records, newest
//!   first (why it has its price), with `Authorization: Bearer <admin token>`;
//!   `404 unknown_sku` when there is none.
//! - `GET /healthz`: `200 ok`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::feeds::{FeedError, FeedKind};
use crate::store::{Ingestor, Outcome, Submission};

/// One producer of feed events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FeedSource {
    /// Name in logs.
    pub name: String,
    /// Its bearer token.
    pub token: String,
    /// Feeds it may send; empty: all.
    pub feeds: Vec<FeedKind>,
    /// Sustained events per second.
    pub rate_per_s: u32,
    /// Events it may send at once above the sustained rate.
    pub burst: u32,
}

impl Default for FeedSource {
    fn default() -> Self {
        FeedSource {
            name: "default".into(),
            token: String::new(),
            feeds: Vec::new(),
            rate_per_s: 50_000,
            burst: 100_000,
        }
    }
}

/// Settings of the feed ingestion listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IngestHttpConfig {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// Who may send feeds.
    pub sources: Vec<FeedSource>,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Bearer token for `/v1/admin/…`; `None` disables those routes.
    pub admin_token: Option<String>,
}

impl Default for IngestHttpConfig {
    fn default() -> Self {
        IngestHttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            sources: Vec::new(),
            max_body_bytes: 16 * 1024 * 1024,
            admin_token: None,
        }
    }
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

struct Service {
    ingestor: Arc<Ingestor>,
    checkout: Option<Arc<crate::checkout::Checkout>>,
    data_dir: PathBuf,
    config: IngestHttpConfig,
    buckets: Mutex<HashMap<String, Bucket>>,
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

impl Service {
    fn authenticate(&self, request: &Request<Incoming>) -> Option<&FeedSource> {
        let header = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
        let token = header.strip_prefix("Bearer ")?;
        self.config
            .sources
            .iter()
            .find(|s| !s.token.is_empty() && constant_time_eq(s.token.as_bytes(), token.as_bytes()))
    }

    /// Takes `events` tokens from the source's bucket, or says how many seconds to wait.
    fn take_tokens(&self, source: &FeedSource, events: usize) -> Result<(), u64> {
        // The bucket is a few floats: the lock is held for nanoseconds.
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let capacity = source.burst.max(1) as f64;
        let bucket = buckets.entry(source.name.clone()).or_insert(Bucket {
            tokens: capacity,
            refilled: Instant::now(),
        });
        let now = Instant::now();
        let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * source.rate_per_s as f64).min(capacity);
        bucket.refilled = now;
        let wanted = events as f64;
        if bucket.tokens >= wanted {
            bucket.tokens -= wanted;
            Ok(())
        } else {
            let missing = wanted - bucket.tokens;
            Err((missing / source.rate_per_s.max(1) as f64).ceil().max(1.0) as u64)
        }
    }

    async fn handle(&self, request: Request<Incoming>) -> Reply {
        let path = request.uri().path().to_owned();
        if path == "/healthz" {
            return json_reply(StatusCode::OK, json!({"status": "ok"}));
        }
        if path == "/v1/admin/decisions" {
            return self.decisions(&request).await;
        }
        if crate::checkout::http::is_checkout_path(&path) {
            return self.checkout(request).await;
        }
        let Some(feed_name) = path.strip_prefix("/v1/feeds/") else {
            return error_reply(
                404,
                "not_found",
                "no such route; feeds go to POST /v1/feeds/{feed}",
            );
        };
        if request.method() != Method::POST {
            let mut reply = error_reply(405, "method_not_allowed", "feeds take POST");
            reply
                .headers_mut()
                .insert("allow", "POST".parse().expect("static header"));
            return reply;
        }
        let feed: FeedKind = match feed_name.parse() {
            Ok(feed) => feed,
            Err(err @ FeedError::UnknownFeed(_)) => {
                return error_reply(err.http_status(), err.code(), &err.to_string())
            }
            Err(err) => return error_reply(400, err.code(), &err.to_string()),
        };
        let Some(source) = self.authenticate(&request) else {
            return error_reply(
                401,
                "unauthorized",
                "send Authorization: Bearer <feed source token>",
            );
        };
        if !source.feeds.is_empty() && !source.feeds.contains(&feed) {
            return error_reply(
                403,
                "forbidden_feed",
                &format!("source {} may not send the {feed} feed", source.name),
            );
        }
        let ndjson = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("ndjson"));
        let body = match Limited::new(request.into_body(), self.config.max_body_bytes)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(err) => {
                return if err.is::<http_body_util::LengthLimitError>() {
                    error_reply(
                        413,
                        "body_too_large",
                        &format!("bodies are limited to {} bytes", self.config.max_body_bytes),
                    )
                } else {
                    error_reply(400, "unreadable_body", &err.to_string())
                };
            }
        };
        let submissions: Vec<Submission> = if ndjson {
            body.split(|b| *b == b'\n')
                .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
                .map(|line| Submission {
                    feed,
                    body: line.to_vec(),
                })
                .collect()
        } else {
            vec![Submission {
                feed,
                body: body.to_vec(),
            }]
        };
        if submissions.is_empty() {
            return error_reply(400, "empty_body", "no event in the body");
        }
        if submissions.len() > source.burst.max(1) as usize {
            return error_reply(
                413,
                "too_many_events",
                &format!(
                    "{} events in one request; source {} may send at most {} at once",
                    submissions.len(),
                    source.name,
                    source.burst.max(1)
                ),
            );
        }
        if let Err(retry_after) = self.take_tokens(source, submissions.len()) {
            let mut reply = error_reply(
                429,
                "rate_limited",
                &format!(
                    "source {} is over its rate of {} events/s",
                    source.name, source.rate_per_s
                ),
            );
            reply.headers_mut().insert(
                RETRY_AFTER,
                retry_after.to_string().parse().expect("digits"),
            );
            return reply;
        }
        let count = submissions.len();
        let outcomes = match self.ingestor.ingest(submissions).await {
            Ok(outcomes) => outcomes,
            Err(err) => {
                warn!(error = %err, feed = %feed, "ingest failed");
                return error_reply(
                    503,
                    "storage_error",
                    &format!("{err}; nothing was stored, retry later"),
                );
            }
        };
        debug!(source = %source.name, feed = %feed, events = count, "feed request stored");
        if !ndjson {
            return match &outcomes[0] {
                Outcome::Accepted { seq } => json_reply(
                    StatusCode::ACCEPTED,
                    json!({"status": "accepted", "seq": seq}),
                ),
                Outcome::Duplicate => json_reply(StatusCode::OK, json!({"status": "duplicate"})),
                Outcome::Rejected(err) => {
                    error_reply(err.http_status(), err.code(), &err.to_string())
                }
            };
        }
        let mut accepted = 0;
        let mut duplicates = 0;
        let mut first_error: Option<&FeedError> = None;
        let results: Vec<_> = outcomes
            .iter()
            .enumerate()
            .map(|(index, outcome)| match outcome {
                Outcome::Accepted { seq } => {
                    accepted += 1;
                    json!({"line": index + 1, "status": "accepted", "seq": seq})
                }
                Outcome::Duplicate => {
                    duplicates += 1;
                    json!({"line": index + 1, "status": "duplicate"})
                }
                Outcome::Rejected(err) => {
                    first_error.get_or_insert(err);
                    json!({"line": index + 1, "status": "rejected", "code": err.code(), "message": err.to_string()})
                }
            })
            .collect();
        let rejected = count - accepted - duplicates;
        let mut summary = json!({"accepted": accepted, "duplicates": duplicates, "rejected": rejected, "results": results});
        match first_error {
            None => json_reply(StatusCode::ACCEPTED, summary),
            Some(err) => {
                summary["error"] = json!({"code": err.code(), "message": format!("line {}: {err}", results.iter().position(|r| r["status"] == "rejected").unwrap_or(0) + 1)});
                json_reply(
                    StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
                    summary,
                )
            }
        }
    }
}

/// The client's address, put into each request's extensions by the accept loop.
#[derive(Debug, Clone, Copy)]
struct PeerIp(std::net::IpAddr);

impl Service {
    async fn checkout(&self, request: Request<Incoming>) -> Reply {
        let Some(checkout) = &self.checkout else {
            return error_reply(
                503,
                "checkout_disabled",
                "this control plane does not run checkout",
            );
        };
        let admin = match (&self.config.admin_token, bearer(&request)) {
            (Some(expected), Some(token)) => {
                constant_time_eq(expected.as_bytes(), token.as_bytes())
            }
            _ => false,
        };
        let peer = request.extensions().get::<PeerIp>().map(|p| p.0);
        crate::checkout::http::handle(checkout, request, peer, admin).await
    }

    async fn decisions(&self, request: &Request<Incoming>) -> Reply {
        if request.method() != Method::GET {
            return error_reply(405, "method_not_allowed", "decisions take GET");
        }
        let token = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let authorized = match (&self.config.admin_token, token) {
            (Some(expected), Some(token)) => {
                constant_time_eq(expected.as_bytes(), token.as_bytes())
            }
            _ => false,
        };
        if !authorized {
            return error_reply(
                401,
                "unauthorized",
                "send Authorization: Bearer <admin token>",
            );
        }
        let query = request.uri().query().unwrap_or("");
        let param = |name: &str| {
            query
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_owned())
        };
        let Some(sku) = param("sku").filter(|s| !s.is_empty()) else {
            return error_reply(400, "missing_sku", "pass ?sku=<sku>");
        };
        let limit = param("limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(20usize)
            .clamp(1, 1_000);
        let data_dir = self.data_dir.clone();
        let lookup_sku = sku.clone();
        // SQLite reads block: keep them off the async threads.
        let records = tokio::task::spawn_blocking(move || {
            let conn = crate::store::open(&data_dir)?;
            crate::audit::records_for(&conn, &lookup_sku, limit)
        })
        .await;
        match records {
            Ok(Ok(records)) if records.is_empty() => error_reply(
                404,
                "unknown_sku",
                &format!("no decision recorded for {sku}"),
            ),
            Ok(Ok(records)) => {
                let decisions: Vec<serde_json::Value> = records
                    .iter()
                    .map(|r| {
                        let mut record: serde_json::Value =
                            serde_json::from_str(&r.record).unwrap_or(serde_json::Value::Null);
                        record["audit_seq"] = json!(r.seq);
                        record
                    })
                    .collect();
                json_reply(StatusCode::OK, json!({"sku": sku, "decisions": decisions}))
            }
            Ok(Err(err)) => error_reply(503, err.code(), &err.to_string()),
            Err(err) => error_reply(500, "internal", &err.to_string()),
        }
    }
}

fn bearer(request: &Request<Incoming>) -> Option<&str> {
    request
        .headers()
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// Compares tokens without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A running feed listener.
#[derive(Debug)]
pub struct IngestServer {
    local_addr: SocketAddr,
    shutdown_tx: watch::Sender<bool>,
    server_jh: Option<JoinHandle<()>>,
}

impl IngestServer {
    /// Binds `config.listen` and serves on its own thread and runtime (feeds never run
    /// on the threads that serve prices). `data_dir` is the control plane's, for the
    /// admin reads.
    pub fn start(
        config: IngestHttpConfig,
        ingestor: Arc<Ingestor>,
        data_dir: PathBuf,
    ) -> std::io::Result<IngestServer> {
        Self::start_with_checkout(config, ingestor, data_dir, None)
    }

    /// [`IngestServer::start`], also serving the checkout routes
    /// ([`crate::checkout::http`]) when `checkout` is given.
    pub fn start_with_checkout(
        config: IngestHttpConfig,
        ingestor: Arc<Ingestor>,
        data_dir: PathBuf,
        checkout: Option<Arc<crate::checkout::Checkout>>,
    ) -> std::io::Result<IngestServer> {
        let listener = std::net::TcpListener::bind(config.listen)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let service = Arc::new(Service {
            ingestor,
            checkout,
            data_dir,
            config,
            buckets: Mutex::new(HashMap::new()),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let server_jh = std::thread::Builder::new()
            .name("edgeprice-feeds-http".into())
            .spawn(move || runtime.block_on(accept_loop(listener, service, shutdown_rx)))?;
        info!(%local_addr, "feed ingestion listening");
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
            warn!(error = %err, "cannot register the feed listener");
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
                        request.extensions_mut().insert(PeerIp(peer.ip()));
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
