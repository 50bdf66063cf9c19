//! The edge's HTTP API, independent of any transport.
//!
//! A transport (hyper today, io_uring next) parses a request into a [`Request`] view,
//! calls [`Api::route`], and writes the [`Response`] it gets back. Routes that need the
//! request body (snapshot uploads) come back as [`Routed::NeedsBody`]; the transport
//! reads the body (up to [`Api::body_limit`]) and calls [`Api::admin`].
//!
//! Routes:
//! - `GET /v1/prices/{sku}?store=&channel=&segment=`: one price (JSON, or a flatbuffer
//!   `PriceAnswer` with `Accept: application/x-flatbuffers`), weak `ETag`, `304` on
//!   `If-None-Match`.
//! - `GET /v1/prices?skus=a,b,c&store=&channel=&segment=`: a batch from one version.
//! - `POST /v1/quote`: a priced, signed cart (see [`crate::quote`]); no admin token,
//!   body up to [`crate::quote::MAX_BODY_BYTES`], 503 `quotes_disabled` without a
//!   signing key ([`Api::with_quotes`]).
//! - `GET /healthz`, `GET /readyz`, `GET /metrics`.
//! - `GET /v1/admin/snapshot`: what is loaded. `POST /v1/admin/snapshot[?force=true]`:
//!   load a full snapshot. `POST /v1/admin/snapshot/delta`: apply a delta. All admin
//!   routes need `Authorization: Bearer <admin token>`.
//!
//! Errors are `{"error":{"code":"…","message":"…"}}` with the matching status.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use edgeprice_pricing::key::{validate, KeyError};
use edgeprice_schemas::fb;
use flatbuffers::FlatBufferBuilder;

use crate::metrics::{Metrics, Route};
use crate::quote::{QuoteConfig, Quoter};
use crate::render;
use crate::snapshot::{Query, Resolved, Shelf, Snapshot};
use crate::store::{now_ms, SnapshotStore, Update, UpdateError};

pub const JSON: &str = "application/json";
pub const FLATBUFFERS: &str = "application/x-flatbuffers";
const PROMETHEUS: &str = "text/plain; version=0.0.4";

/// Default [`ApiConfig::max_delta_changes`]: a change set of a million-entry table's
/// size, about 330 MB to apply.
pub const DEFAULT_MAX_DELTA_CHANGES: usize = 1_000_000;

/// Default [`ApiConfig::max_snapshot_entries`]: twenty times the benchmark table, about
/// 3 GB held once built and as much again while decoding.
pub const DEFAULT_MAX_SNAPSHOT_ENTRIES: usize = 20_000_000;

/// Settings of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Most SKUs in one batch request.
    pub batch_limit: usize,
    /// Bearer token for admin routes; `None` disables them.
    pub admin_token: Option<String>,
    /// Largest accepted snapshot or delta upload, in bytes.
    pub max_upload_bytes: usize,
    /// Most changes (upserts plus removals) in one delta. Applying a change holds a few
    /// hundred bytes until the new version is built, while on the wire it can be 4
    /// bytes (elements may share an entry table), so the upload size alone does not
    /// bound a delta's memory. A larger change set goes as a full snapshot: refused
    /// deltas make the control plane resync the edge with one.
    pub max_delta_changes: usize,
    /// Most entries in one full snapshot upload, for the same reason: the edge refuses
    /// a larger table (413 `snapshot_too_large`) instead of running out of memory
    /// decoding it.
    pub max_snapshot_entries: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            batch_limit: 100,
            admin_token: None,
            max_upload_bytes: 1 << 30,
            max_delta_changes: DEFAULT_MAX_DELTA_CHANGES,
            max_snapshot_entries: DEFAULT_MAX_SNAPSHOT_ENTRIES,
        }
    }
}

/// HTTP methods the API distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Other,
}

/// A transport's view of a request: the parts the API reads, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub accept: Option<&'a [u8]>,
    pub if_none_match: Option<&'a [u8]>,
    pub authorization: Option<&'a [u8]>,
}

/// A weak entity tag: `W/"` + 16 hex digits + `"`.
pub type ETag = [u8; 20];

/// What to send back.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub etag: Option<ETag>,
    /// `Allow` header for 405 answers.
    pub allow: Option<&'static str>,
    /// `WWW-Authenticate` for 401 answers.
    pub authenticate: bool,
}

impl Response {
    fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> Response {
        Response {
            status,
            content_type,
            body,
            etag: None,
            allow: None,
            authenticate: false,
        }
    }

    fn json(status: u16, body: String) -> Response {
        Response::new(status, JSON, body.into_bytes())
    }

    /// The error shape every route uses.
    pub fn error(status: u16, code: &str, message: &str) -> Response {
        Response::json(status, render::error_body(code, message, None))
    }

    fn error_with_version(
        status: u16,
        code: &str,
        message: &str,
        current_version: u64,
    ) -> Response {
        Response::json(
            status,
            render::error_body(code, message, Some(current_version)),
        )
    }
}

/// Calls that need the request body (admin uploads and quotes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminCall {
    LoadSnapshot {
        force: bool,
    },
    ApplyDelta,
    /// `POST /v1/quote` (no admin token needed).
    Quote,
}

/// The result of routing a request.
#[derive(Debug)]
pub enum Routed {
    Done(Response),
    NeedsBody(AdminCall),
}

impl From<Response> for Routed {
    fn from(response: Response) -> Routed {
        Routed::Done(response)
    }
}

/// The API over one snapshot store.
#[derive(Debug)]
pub struct Api {
    store: Arc<SnapshotStore>,
    metrics: Arc<Metrics>,
    config: ApiConfig,
    quoter: Quoter,
    started: Instant,
}

impl Api {
    pub fn new(store: Arc<SnapshotStore>, metrics: Arc<Metrics>, config: ApiConfig) -> Api {
        Api {
            store,
            metrics,
            config,
            quoter: Quoter::new(QuoteConfig::default()).expect("the default quote config is valid"),
            started: Instant::now(),
        }
    }

    /// Enables `POST /v1/quote` with these keys and lifetime.
    pub fn with_quotes(
        mut self,
        config: QuoteConfig,
    ) -> Result<Api, edgeprice_pricing::quote::QuoteError> {
        self.quoter = Quoter::new(config)?;
        Ok(self)
    }

    pub fn store(&self) -> &Arc<SnapshotStore> {
        &self.store
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Largest body the transport should read for a call.
    pub fn body_limit(&self, call: AdminCall) -> usize {
        match call {
            AdminCall::Quote => crate::quote::MAX_BODY_BYTES,
            _ => self.config.max_upload_bytes,
        }
    }

    /// Routes a request. Records metrics for every answer it gives.
    pub fn route(&self, req: &Request<'_>) -> Routed {
        let started = Instant::now();
        let (route, routed) = self.dispatch(req);
        if let Routed::Done(response) = &routed {
            self.metrics
                .record(route, response.status, started.elapsed());
        }
        routed
    }

    fn dispatch(&self, req: &Request<'_>) -> (Route, Routed) {
        let path = req.path;
        if let Some(sku) = path.strip_prefix("/v1/prices/") {
            return (
                Route::Price,
                Routed::Done(read_only(req).unwrap_or_else(|| self.price(req, sku))),
            );
        }
        let (route, routed) = match path {
            "/v1/prices" => (
                Route::PriceBatch,
                Routed::Done(read_only(req).unwrap_or_else(|| self.batch(req))),
            ),
            "/healthz" => (
                Route::Health,
                Routed::Done(
                    read_only(req)
                        .unwrap_or_else(|| Response::json(200, r#"{"status":"ok"}"#.into())),
                ),
            ),
            "/readyz" => (
                Route::Ready,
                Routed::Done(read_only(req).unwrap_or_else(|| self.ready())),
            ),
            "/metrics" => (
                Route::Metrics,
                Routed::Done(read_only(req).unwrap_or_else(|| self.render_metrics())),
            ),
            "/v1/quote" => (
                Route::Quote,
                match req.method {
                    Method::Post => Routed::NeedsBody(AdminCall::Quote),
                    _ => Routed::Done(method_not_allowed("POST")),
                },
            ),
            "/v1/admin/snapshot" | "/v1/admin/snapshot/delta" => {
                (Route::Admin, self.admin_route(req))
            }
            _ => (
                Route::Other,
                Routed::Done(Response::error(
                    404,
                    "not_found",
                    &format!("no route for {path}"),
                )),
            ),
        };
        (route, routed)
    }

    fn price(&self, req: &Request<'_>, raw_sku: &str) -> Response {
        let sku = match decode_component(raw_sku).and_then(|s| check("sku", s)) {
            Ok(sku) => sku,
            Err(response) => return response,
        };
        let dims = match Dimensions::parse(req.query) {
            Ok(dims) => dims,
            Err(response) => return response,
        };
        let guard = self.store.load();
        let Some(snapshot) = guard.as_deref() else {
            return not_ready();
        };
        let now = now_ms();
        let query = dims.resolve(snapshot);
        let Some(resolved) = snapshot.resolve(&sku, query, now) else {
            return unknown_sku(snapshot, &sku);
        };
        let flatbuffers = wants_flatbuffers(req.accept);
        let shelf = snapshot.shelf(&resolved, now);
        let etag = etag(&resolved, shelf.as_ref(), now, flatbuffers);
        if req
            .if_none_match
            .is_some_and(|inm| etag_matches(inm, &etag))
        {
            let mut response = Response::new(
                304,
                if flatbuffers { FLATBUFFERS } else { JSON },
                Vec::new(),
            );
            response.etag = Some(etag);
            return response;
        }
        let mut response = if flatbuffers {
            Response::new(
                200,
                FLATBUFFERS,
                price_flatbuffer(snapshot, &resolved, shelf.as_ref(), now),
            )
        } else {
            let mut body = Vec::with_capacity(384);
            render::price_json_with(
                &mut body,
                snapshot,
                &resolved,
                now,
                Some(snapshot.version()),
                shelf.as_ref(),
            );
            Response::new(200, JSON, body)
        };
        response.etag = Some(etag);
        response
    }

    fn batch(&self, req: &Request<'_>) -> Response {
        let dims = match Dimensions::parse(req.query) {
            Ok(dims) => dims,
            Err(response) => return response,
        };
        let Some(raw) = dims.skus.as_deref() else {
            return Response::error(400, "missing_skus", "give the SKUs as ?skus=a,b,c");
        };
        let count = raw.split(',').count();
        if count > self.config.batch_limit {
            return Response::error(
                400,
                "too_many_skus",
                &format!(
                    "{count} SKUs requested; the limit is {}",
                    self.config.batch_limit
                ),
            );
        }
        let mut skus = Vec::with_capacity(count);
        for sku in raw.split(',') {
            match check("sku", Cow::Borrowed(sku)) {
                Ok(sku) => skus.push(sku),
                Err(response) => return response,
            }
        }
        // One guard for the whole batch: every line comes from the same version.
        let guard = self.store.load();
        let Some(snapshot) = guard.as_deref() else {
            return not_ready();
        };
        let now = now_ms();
        let query = dims.resolve(snapshot);
        if wants_flatbuffers(req.accept) {
            return Response::new(
                200,
                FLATBUFFERS,
                batch_flatbuffer(snapshot, &skus, query, now),
            );
        }
        let mut body = Vec::with_capacity(64 + skus.len() * 360);
        render::batch_json(&mut body, snapshot, &skus, query, now);
        Response::new(200, JSON, body)
    }

    fn ready(&self) -> Response {
        match self.store.load().as_deref() {
            Some(s) => Response::json(
                200,
                format!(r#"{{"status":"ready","snapshot_version":{}}}"#, s.version()),
            ),
            None => not_ready(),
        }
    }

    fn render_metrics(&self) -> Response {
        let mut out = String::with_capacity(8192);
        self.metrics.render(&mut out);
        let now = now_ms();
        let stats = self.store.stats();
        let guard = self.store.load();
        let gauge = |out: &mut String, name: &str, help: &str, value: f64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        gauge(
            &mut out,
            "edgeprice_ready",
            "1 once a snapshot is loaded.",
            guard.is_some() as u8 as f64,
        );
        if let Some(s) = guard.as_deref() {
            gauge(
                &mut out,
                "edgeprice_snapshot_version",
                "Version of the snapshot being served.",
                s.version() as f64,
            );
            gauge(
                &mut out,
                "edgeprice_snapshot_entries",
                "Price entries in the snapshot.",
                s.entry_count() as f64,
            );
            gauge(
                &mut out,
                "edgeprice_snapshot_skus",
                "SKUs in the snapshot.",
                s.sku_count() as f64,
            );
            gauge(
                &mut out,
                "edgeprice_snapshot_age_seconds",
                "Seconds since the control plane created the snapshot being served.",
                (now - s.created_at_ms()) as f64 / 1e3,
            );
            gauge(
                &mut out,
                "edgeprice_snapshot_applied_age_seconds",
                "Seconds since this edge last applied an update.",
                (now - stats.applied_at_ms) as f64 / 1e3,
            );
        }
        gauge(
            &mut out,
            "edgeprice_snapshot_persisted_version",
            "Newest version written to the data directory (0: none, or no data directory).",
            stats.persisted_version as f64,
        );
        let _ = writeln!(
            out,
            "# HELP edgeprice_snapshot_persist_failures_total Failed writes to the data directory (each healed by writing a snapshot).\n# TYPE edgeprice_snapshot_persist_failures_total counter\nedgeprice_snapshot_persist_failures_total {}",
            stats.persist_failures
        );
        let _ = writeln!(
            out,
            "# HELP edgeprice_snapshot_persist_seconds Writing served updates to the data directory (one fsync per group).\n# TYPE edgeprice_snapshot_persist_seconds summary\nedgeprice_snapshot_persist_seconds_sum {}\nedgeprice_snapshot_persist_seconds_count {}",
            stats.persist_us_total as f64 / 1e6,
            stats.persists
        );
        out.push_str(
            "# HELP edgeprice_snapshot_updates_total Snapshot and delta updates, by result.\n",
        );
        out.push_str("# TYPE edgeprice_snapshot_updates_total counter\n");
        let _ = writeln!(
            out,
            "edgeprice_snapshot_updates_total{{result=\"applied\"}} {}",
            stats.applied
        );
        let _ = writeln!(
            out,
            "edgeprice_snapshot_updates_total{{result=\"failed\"}} {}",
            stats.failed
        );
        gauge(
            &mut out,
            "edgeprice_uptime_seconds",
            "Seconds since the server started.",
            self.started.elapsed().as_secs_f64(),
        );
        Response::new(200, PROMETHEUS, out.into_bytes())
    }

    fn authorize(&self, req: &Request<'_>) -> Result<(), Response> {
        let Some(expected) = &self.config.admin_token else {
            return Err(Response::error(
                403,
                "admin_disabled",
                "admin routes are disabled: start the server with an admin token",
            ));
        };
        let presented = req.authorization.and_then(|h| h.strip_prefix(b"Bearer "));
        match presented {
            Some(token) if constant_time_eq(token, expected.as_bytes()) => Ok(()),
            _ => {
                let mut response = Response::error(
                    401,
                    "unauthorized",
                    "a valid admin bearer token is required",
                );
                response.authenticate = true;
                Err(response)
            }
        }
    }

    fn admin_route(&self, req: &Request<'_>) -> Routed {
        let delta = req.path.ends_with("/delta");
        let allowed = if delta { "POST" } else { "GET, POST" };
        let call = match (req.method, delta) {
            (Method::Post, true) => AdminCall::ApplyDelta,
            (Method::Post, false) => {
                let force = query_pairs(req.query).any(|(k, v)| k == "force" && v == "true");
                AdminCall::LoadSnapshot { force }
            }
            (Method::Get | Method::Head, false) => {
                return Routed::Done(match self.authorize(req) {
                    Ok(()) => self.snapshot_info(),
                    Err(response) => response,
                });
            }
            _ => return Routed::Done(method_not_allowed(allowed)),
        };
        match self.authorize(req) {
            Ok(()) => Routed::NeedsBody(call),
            Err(response) => Routed::Done(response),
        }
    }

    fn snapshot_info(&self) -> Response {
        let stats = self.store.stats();
        match self.store.load().as_deref() {
            Some(s) => Response::json(
                200,
                format!(
                    r#"{{"version":{},"entries":{},"skus":{},"created_at_ms":{},"applied_at_ms":{},"updates_applied":{},"updates_failed":{}}}"#,
                    s.version(),
                    s.entry_count(),
                    s.sku_count(),
                    s.created_at_ms(),
                    stats.applied_at_ms,
                    stats.applied,
                    stats.failed
                ),
            ),
            None => not_ready(),
        }
    }

    /// Records an answer the transport gave a call itself, without running it (its
    /// body was too large or could not be read), so `/metrics` counts it like the rest.
    pub fn record_refused(&self, call: AdminCall, status: u16, elapsed: std::time::Duration) {
        let route = match call {
            AdminCall::Quote => Route::Quote,
            AdminCall::LoadSnapshot { .. } | AdminCall::ApplyDelta => Route::Admin,
        };
        self.metrics.record(route, status, elapsed);
    }

    /// Runs an admin call with its body. The heavy work happens on the snapshot
    /// writer thread; this only waits for it.
    pub async fn admin(&self, call: AdminCall, body: Bytes) -> Response {
        if call == AdminCall::Quote {
            return self.quote_recorded(&body);
        }
        let started = Instant::now();
        if let Some(refused) = self.oversized(call, &body) {
            self.metrics
                .record(Route::Admin, refused.status, started.elapsed());
            return refused;
        }
        let update = match call {
            AdminCall::LoadSnapshot { force } => Update::Full {
                encoded: body,
                force,
            },
            AdminCall::ApplyDelta => Update::Delta { encoded: body },
            AdminCall::Quote => unreachable!("quotes are answered above"),
        };
        let response = match self.store.update(update).await {
            Ok(applied) => Response::json(
                200,
                format!(
                    r#"{{"version":{},"entries":{},"apply_us":{}}}"#,
                    applied.version, applied.entries, applied.apply_us
                ),
            ),
            Err(err) => update_error(call, &err),
        };
        self.metrics
            .record(Route::Admin, response.status, started.elapsed());
        response
    }
}

impl Api {
    /// 413 for an upload with more entries than this edge takes in one go
    /// ([`ApiConfig::max_snapshot_entries`], [`ApiConfig::max_delta_changes`]), counted
    /// from the upload's vector headers before the writer sees it, so before a delta's
    /// base version is: an oversized delta on a stale base gets 413, not 409 (a
    /// publisher resyncs with a full snapshot on either). An upload too damaged to count
    /// goes on to the writer, whose parse reports what is wrong with it.
    fn oversized(&self, call: AdminCall, body: &[u8]) -> Option<Response> {
        use edgeprice_schemas::codec::{delta_change_count, snapshot_entry_count};
        type Message = fn(usize, usize) -> String;
        let (count, limit, code, message): (_, _, _, Message) = match call {
            AdminCall::LoadSnapshot { .. } => (
                snapshot_entry_count(body),
                self.config.max_snapshot_entries,
                "snapshot_too_large",
                |n, limit| {
                    format!("the snapshot has {n} entries, more than this edge holds ({limit}, max_snapshot_entries)")
                },
            ),
            AdminCall::ApplyDelta => (
                delta_change_count(body),
                self.config.max_delta_changes,
                "delta_too_large",
                |n, limit| {
                    format!("the delta has {n} changes (upserts and removals), more than this edge takes in one delta ({limit}, max_delta_changes); send them as a full snapshot")
                },
            ),
            AdminCall::Quote => return None,
        };
        let count = count.ok()?;
        (count > limit).then(|| Response::error(413, code, &message(count, limit)))
    }

    /// [`Self::quote`], counted in the metrics: what a transport calls with a quote's
    /// body. Quotes run inline on the serving thread (they take microseconds).
    pub fn quote_recorded(&self, body: &[u8]) -> Response {
        let started = Instant::now();
        let response = self.quote(body);
        self.metrics
            .record(Route::Quote, response.status, started.elapsed());
        response
    }

    /// `POST /v1/quote`: one snapshot version for the whole cart. Evaluating takes
    /// well under a millisecond (see benches/benches/quote.rs), so it runs inline.
    pub fn quote(&self, body: &[u8]) -> Response {
        if !self.quoter.enabled() {
            return Response::error(
                503,
                "quotes_disabled",
                "quotes are disabled: start the edge with a quote signing key (--quote-key)",
            );
        }
        let guard = self.store.load();
        let Some(snapshot) = guard.as_deref() else {
            return not_ready();
        };
        match self.quoter.quote(snapshot, body, now_ms()) {
            Ok(answer) => Response::json(200, answer.body),
            Err(refused) => refused.into_response(),
        }
    }

    /// The quote route's state (for benches and tests).
    pub fn quoter(&self) -> &Quoter {
        &self.quoter
    }
}

fn update_error(call: AdminCall, err: &UpdateError) -> Response {
    use crate::snapshot::SnapshotError;
    let message = err.to_string();
    match err {
        UpdateError::Decode(edgeprice_schemas::codec::DecodeError::Promotions(_))
        | UpdateError::Snapshot(SnapshotError::Promotions(_)) => {
            Response::error(400, "invalid_promotions", &message)
        }
        UpdateError::Decode(_) => {
            let code = if call == AdminCall::ApplyDelta {
                "invalid_delta"
            } else {
                "invalid_snapshot"
            };
            Response::error(400, code, &message)
        }
        UpdateError::Snapshot(SnapshotError::DuplicateKey(_)) => {
            Response::error(400, "duplicate_key", &message)
        }
        UpdateError::Snapshot(SnapshotError::NotAdvancing { .. }) => {
            Response::error(400, "invalid_delta", &message)
        }
        UpdateError::Snapshot(SnapshotError::VersionConflict { current, .. }) => {
            Response::error_with_version(409, "version_conflict", &message, *current)
        }
        UpdateError::Stale { current, .. } => {
            Response::error_with_version(409, "stale_snapshot", &message, *current)
        }
        UpdateError::NoBase => Response::error(409, "no_base_snapshot", &message),
        UpdateError::Stopped => Response::error(503, "writer_stopped", &message),
    }
}

/// 405 for anything but GET/HEAD on read routes.
fn read_only(req: &Request<'_>) -> Option<Response> {
    match req.method {
        Method::Get | Method::Head => None,
        _ => Some(method_not_allowed("GET, HEAD")),
    }
}

fn method_not_allowed(allow: &'static str) -> Response {
    let mut response = Response::error(
        405,
        "method_not_allowed",
        &format!("allowed methods: {allow}"),
    );
    response.allow = Some(allow);
    response
}

fn not_ready() -> Response {
    Response::error(503, "no_snapshot", "no price snapshot is loaded yet")
}

fn unknown_sku(snapshot: &Snapshot, sku: &str) -> Response {
    let message = if snapshot.sku(sku).is_some() {
        format!("SKU {sku} has no price for this store, channel and segment")
    } else {
        format!("unknown SKU {sku}")
    };
    Response::error(404, "unknown_sku", &message)
}

fn key_error(err: KeyError) -> Response {
    Response::error(400, "invalid_key", &err.to_string())
}

fn check<'a>(field: &'static str, value: Cow<'a, str>) -> Result<Cow<'a, str>, Response> {
    validate(field, &value).map_err(key_error)?;
    Ok(value)
}

/// Store, channel, segment (and the batch's skus) from the query string.
#[derive(Debug, Default)]
struct Dimensions<'a> {
    store: Option<Cow<'a, str>>,
    channel: Option<Cow<'a, str>>,
    segment: Option<Cow<'a, str>>,
    skus: Option<Cow<'a, str>>,
}

impl<'a> Dimensions<'a> {
    fn parse(query: Option<&'a str>) -> Result<Dimensions<'a>, Response> {
        let mut dims = Dimensions::default();
        for (name, raw) in query_pairs(query) {
            let (slot, field) = match name {
                "store" => (&mut dims.store, "store"),
                "channel" => (&mut dims.channel, "channel"),
                "segment" => (&mut dims.segment, "segment"),
                "skus" => {
                    dims.skus = Some(decode_component(raw)?);
                    continue;
                }
                // Unknown parameters are ignored, as caches and proxies add their own.
                _ => continue,
            };
            let value = decode_component(raw)?;
            if value.is_empty() || value == "*" {
                continue;
            }
            *slot = Some(check(field, value)?);
        }
        Ok(dims)
    }

    fn resolve(&self, snapshot: &Snapshot) -> Query {
        snapshot.query(
            self.store.as_deref(),
            self.channel.as_deref(),
            self.segment.as_deref(),
        )
    }
}

fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// Percent-decodes a path segment or query value; borrows when there is nothing to do.
fn decode_component(raw: &str) -> Result<Cow<'_, str>, Response> {
    if !raw.contains(['%', '+']) {
        return Ok(Cow::Borrowed(raw));
    }
    let bad = || Response::error(400, "invalid_encoding", "malformed percent-encoding");
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
                let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map(Cow::Owned).map_err(|_| bad())
}

fn wants_flatbuffers(accept: Option<&[u8]>) -> bool {
    accept.is_some_and(|a| {
        a.windows(FLATBUFFERS.len())
            .any(|w| w.eq_ignore_ascii_case(FLATBUFFERS.as_bytes()))
    })
}

/// A weak ETag for one answer: changes whenever the entry that answered, its
/// revision, whether its promotion is active, or the representation changes. The
/// snapshot version in the body may differ between equal tags, hence weak.
fn etag(resolved: &Resolved<'_>, shelf: Option<&Shelf>, now_ms: i64, flatbuffers: bool) -> ETag {
    let variant = resolved.variant;
    // With a promotion set the shown price and promotion come from the shelf price.
    let (promo_active, price) = match shelf {
        Some(shelf) => (
            shelf
                .promotion
                .as_ref()
                .map_or(0, |(p, _)| crate::snapshot::sku_hash(&p.id)),
            shelf.price_minor,
        ),
        None => (
            variant.entry.active_promotion(now_ms).is_some() as u64,
            variant.entry.effective_price_at(now_ms),
        ),
    };
    let mut h = resolved.sku.hash;
    for word in [
        variant.entry.revision,
        variant.rank() as u64,
        promo_active,
        flatbuffers as u64,
        price as u64,
    ] {
        h = (h ^ word)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }
    let mut tag = *b"W/\"0000000000000000\"";
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in 0..16 {
        tag[3 + i] = HEX[((h >> (60 - 4 * i)) & 0xf) as usize];
    }
    tag
}

/// `If-None-Match` with weak comparison: `*` or any listed tag equal to ours.
fn etag_matches(header: &[u8], ours: &ETag) -> bool {
    let opaque = &ours[2..];
    header
        .split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .any(|t| t == b"*" || t.strip_prefix(b"W/").unwrap_or(t) == opaque)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

thread_local! {
    /// Reused per thread so answering in flatbuffers does not grow a builder each time.
    static BUILDER: RefCell<FlatBufferBuilder<'static>> = RefCell::new(FlatBufferBuilder::with_capacity(1024));
}

fn price_flatbuffer(
    snapshot: &Snapshot,
    resolved: &Resolved<'_>,
    shelf: Option<&Shelf>,
    now_ms: i64,
) -> Vec<u8> {
    BUILDER.with(|cell| {
        let mut fbb = cell.borrow_mut();
        fbb.reset();
        let answer = render::price_answer_with(
            &mut fbb,
            snapshot,
            resolved,
            now_ms,
            snapshot.version(),
            shelf,
        );
        fbb.finish(answer, None);
        fbb.finished_data().to_vec()
    })
}

fn batch_flatbuffer(
    snapshot: &Snapshot,
    skus: &[Cow<'_, str>],
    query: Query,
    now_ms: i64,
) -> Vec<u8> {
    BUILDER.with(|cell| {
        let mut fbb = cell.borrow_mut();
        fbb.reset();
        let mut prices = Vec::with_capacity(skus.len());
        let mut missing = Vec::new();
        for sku in skus {
            match snapshot.resolve(sku, query, now_ms) {
                Some(resolved) => prices.push(render::price_answer(
                    &mut fbb, snapshot, &resolved, now_ms, 0,
                )),
                None => missing.push(fbb.create_string(sku)),
            }
        }
        let prices = fbb.create_vector(&prices);
        let missing = fbb.create_vector(&missing);
        let batch = fb::PriceBatch::create(
            &mut fbb,
            &fb::PriceBatchArgs {
                snapshot_version: snapshot.version(),
                prices: Some(prices),
                missing: Some(missing),
            },
        );
        fbb.finish(batch, None);
        fbb.finished_data().to_vec()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(decode_component("a%3Ab").unwrap(), "a:b");
        assert_eq!(decode_component("plain").unwrap(), "plain");
        assert!(decode_component("bad%2").is_err());
        assert!(decode_component("bad%zz").is_err());
        assert!(decode_component("%ff").is_err(), "not UTF-8");
    }

    #[test]
    fn if_none_match_uses_weak_comparison() {
        let tag = *b"W/\"0123456789abcdef\"";
        assert!(etag_matches(b"W/\"0123456789abcdef\"", &tag));
        assert!(etag_matches(b"\"0123456789abcdef\"", &tag));
        assert!(etag_matches(b"\"x\", W/\"0123456789abcdef\"", &tag));
        assert!(etag_matches(b"*", &tag));
        assert!(!etag_matches(b"W/\"0123456789abcdee\"", &tag));
    }

    #[test]
    fn accept_negotiation() {
        assert!(wants_flatbuffers(Some(b"application/x-flatbuffers")));
        assert!(wants_flatbuffers(Some(
            b"text/html, Application/X-FlatBuffers;q=0.9"
        )));
        assert!(!wants_flatbuffers(Some(b"application/json")));
        assert!(!wants_flatbuffers(None));
    }
}
