//! Checkout routes, independent of the listener that serves them.
//!
//! Customer-facing:
//! - `POST /v1/checkout` (`Idempotency-Key` header; body `{"quote_token", "purchase_tokens"?,
//!   "payment_method"?}`; optional `X-Device-Id`) → `201` with the order, or an error:
//!   `quote_expired` (409), `quote_tampered`/`quote_malformed`/`quote_unknown_key`
//!   (400), `insufficient_stock` (409, names the SKU), `payment_declined` (402),
//!   `payment_unavailable` (502), `order_failed` (500), `coupon_unavailable`,
//!   `purchase_token_required`, `customer_limit_exceeded`, `checkout_in_progress` (409),
//!   `idempotency_key_reused` (422), `rate_limited`/`too_many_checkouts` (429 with
//!   `Retry-After`), `checkout_closed` (503). Same key and body → the same answer.
//! - `GET /v1/checkout/{saga_id}`: the saga's state and step log.
//! - `GET /v1/orders/{order_id}`: the order and its saga's state.
//! - `POST /v1/purchase-tokens` `{"sku","quantity","customer_id","store"?}` → `201
//!   {"token","expires_at_ms",…}` while the SKU's flash sale runs: units held in arrival
//!   order up to the stock; `DELETE /v1/purchase-tokens/{token}?customer_id=…` gives
//!   them back.
//!
//! Operator (an admin API token: `GET` needs the viewer role, the rest operator; `by`
//! defaults to the token's name):
//! - `GET /v1/admin/checkout`: counters and open state;
//! - `POST /v1/admin/checkout/close|open` `{"by","reason"}`;
//! - `GET /v1/admin/checkout/reconciliation`; `GET /v1/admin/checkout/sagas?state=`;
//!   `GET /v1/admin/checkout/stock/{sku}`;
//! - `PUT|DELETE /v1/admin/checkout/flash-sales/{sku}` (body: a [`FlashSale`]).

use std::net::IpAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use hyper::header::{CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use edgeprice_schemas::admin::Role;

use super::{bearer, constant_time_eq, Service};
use crate::checkout::ledger::{FlashSale, WantedLine};
use crate::checkout::saga::{self, CheckoutInput};
use crate::checkout::{Checkout, CheckoutError, SagaState, StoredResponse};

type Reply = Response<Full<Bytes>>;

/// Whether `path` is served by [`handle`].
pub fn is_checkout_path(path: &str) -> bool {
    path == "/v1/checkout"
        || path.starts_with("/v1/checkout/")
        || path.starts_with("/v1/orders/")
        || path == "/v1/purchase-tokens"
        || path.starts_with("/v1/purchase-tokens/")
        || path == "/v1/admin/checkout"
        || path.starts_with("/v1/admin/checkout/")
}

fn reply(response: StoredResponse) -> Reply {
    let retry_after = (response.status == 429)
        .then(|| {
            serde_json::from_str::<serde_json::Value>(&response.body)
                .ok()
                .and_then(|v| v["error"]["retry_after_s"].as_u64())
        })
        .flatten();
    let mut out = Response::new(Full::new(Bytes::from(response.body)));
    *out.status_mut() =
        StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    out.headers_mut().insert(
        CONTENT_TYPE,
        "application/json".parse().expect("static header"),
    );
    if response.status == 429 || response.status == 503 {
        let seconds = retry_after.unwrap_or(1);
        out.headers_mut()
            .insert(RETRY_AFTER, seconds.to_string().parse().expect("digits"));
    }
    out
}

fn error(err: &CheckoutError) -> Reply {
    reply(err.stored_response(None))
}

fn plain(status: u16, code: &str, message: &str) -> Reply {
    reply(StoredResponse {
        status,
        body: json!({"error": {"code": code, "message": message}}).to_string(),
    })
}

fn ok(status: u16, body: serde_json::Value) -> Reply {
    reply(StoredResponse {
        status,
        body: body.to_string(),
    })
}

fn method_not_allowed(allow: &str) -> Reply {
    let mut out = plain(405, "method_not_allowed", &format!("use {allow}"));
    out.headers_mut()
        .insert("allow", allow.parse().expect("static header"));
    out
}

async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, Reply>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, limit).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(plain(
            413,
            "body_too_large",
            &format!("bodies are limited to {limit} bytes"),
        )),
        Err(err) => Err(plain(400, "unreadable_body", &err.to_string())),
    }
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

fn storage(err: CheckoutError) -> Reply {
    error(&err)
}

/// The client's address, put into each request's extensions by the accept loop.
#[derive(Debug, Clone, Copy)]
pub(super) struct PeerIp(pub IpAddr);

/// Serves a checkout route of the control plane's listener.
pub(super) async fn route(service: &Service, request: Request<hyper::body::Incoming>) -> Reply {
    let Some(checkout) = &service.checkout else {
        return plain(
            503,
            "checkout_disabled",
            "this control plane does not run checkout (no quote key)",
        );
    };
    let admin = bearer(&request).and_then(|presented| {
        service.config.admin_tokens.iter().find(|t| {
            !t.token.is_empty() && constant_time_eq(t.token.as_bytes(), presented.as_bytes())
        })
    });
    let admin = admin.map(|token| {
        let needed = if request.method() == Method::GET {
            Role::Viewer
        } else {
            Role::Operator
        };
        (token.name.clone(), token.role >= needed)
    });
    let peer = request.extensions().get::<PeerIp>().map(|p| p.0);
    handle(checkout, request, peer, admin).await
}

/// Serves one checkout request. `peer` is the client's address (per-IP limits);
/// `admin` is the admin token's name and whether its role suffices, when one was shown.
pub async fn handle<B>(
    checkout: &Checkout,
    request: Request<B>,
    peer: Option<IpAddr>,
    admin: Option<(String, bool)>,
) -> Reply
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let inner = checkout.inner();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let method = request.method().clone();
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let limit = inner.config.max_body_bytes;
    if let Some(rest) = path.strip_prefix("/v1/admin/checkout") {
        return match admin {
            None => plain(
                401,
                "unauthorized",
                "send Authorization: Bearer <admin token>",
            ),
            Some((name, false)) => plain(
                403,
                "forbidden",
                &format!("{name}: changing checkout needs the operator role"),
            ),
            Some((name, true)) => {
                let body = request.into_body();
                admin_route(checkout, &name, rest, &method, &query, body, limit).await
            }
        };
    }
    match path.as_str() {
        "/v1/checkout" => {
            if method != Method::POST {
                return method_not_allowed("POST");
            }
            let idempotency_key = header("idempotency-key");
            let device = header("x-device-id");
            let body = match read_body(request.into_body(), limit).await {
                Ok(body) => body,
                Err(reply) => return reply,
            };
            let response = saga::checkout(
                inner,
                CheckoutInput {
                    idempotency_key,
                    body,
                    peer,
                    device,
                },
            )
            .await;
            reply(response)
        }
        "/v1/purchase-tokens" => {
            if method != Method::POST {
                return method_not_allowed("POST");
            }
            let device = header("x-device-id");
            let body = match read_body(request.into_body(), limit).await {
                Ok(body) => body,
                Err(reply) => return reply,
            };
            match purchase_token(checkout, &body, peer, device.as_deref()).await {
                Ok(reply) => reply,
                Err(err) => error(&err),
            }
        }
        _ => {
            if let Some(token) = path.strip_prefix("/v1/purchase-tokens/") {
                if method != Method::DELETE {
                    return method_not_allowed("DELETE");
                }
                let customer = query_param(&query, "customer_id");
                return match inner.ledger.release(token.to_owned(), customer).await {
                    Ok(true) => ok(200, json!({"token": token, "status": "released"})),
                    Ok(false) => plain(
                        404,
                        "unknown_purchase_token",
                        "no open purchase token with this id for this customer",
                    ),
                    Err(err) => storage(err),
                };
            }
            if method != Method::GET {
                return method_not_allowed("GET");
            }
            if let Some(saga_id) = path.strip_prefix("/v1/checkout/") {
                return match (inner.ledger.saga(saga_id), inner.ledger.steps(saga_id)) {
                    (Ok(Some(saga)), Ok(steps)) => ok(200, json!({"saga": saga, "steps": steps})),
                    (Ok(None), _) => plain(404, "unknown_saga", &format!("no saga {saga_id}")),
                    (Err(err), _) | (_, Err(err)) => storage(err),
                };
            }
            if let Some(order_id) = path.strip_prefix("/v1/orders/") {
                return match inner.ledger.order(order_id) {
                    Ok(Some(order)) => {
                        let saga = inner.ledger.saga(&order.saga_id).ok().flatten();
                        ok(
                            200,
                            json!({
                                "order": order,
                                "saga": saga.map(|s| json!({"id": s.id, "state": s.state, "updated_at_ms": s.updated_at_ms})),
                            }),
                        )
                    }
                    Ok(None) => plain(404, "unknown_order", &format!("no order {order_id}")),
                    Err(err) => storage(err),
                };
            }
            plain(404, "not_found", "no such checkout route")
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    sku: String,
    #[serde(default = "one")]
    quantity: i64,
    customer_id: String,
    #[serde(default)]
    store: Option<String>,
}

fn one() -> i64 {
    1
}

async fn purchase_token(
    checkout: &Checkout,
    body: &[u8],
    peer: Option<IpAddr>,
    device: Option<&str>,
) -> Result<Reply, CheckoutError> {
    let inner = checkout.inner();
    saga::check_open(inner)?;
    let body: TokenBody = serde_json::from_slice(body)
        .map_err(|e| CheckoutError::InvalidRequest(format!("body: {e}")))?;
    if body.customer_id.is_empty() || body.customer_id.len() > 128 {
        return Err(CheckoutError::InvalidRequest(
            "customer_id is required (1-128 characters)".into(),
        ));
    }
    let now = crate::checkout::now_ms();
    let sale = inner
        .ledger
        .published(|p| p.flash_sales.get(&body.sku).cloned())
        .filter(|s| s.is_active(now))
        .ok_or_else(|| CheckoutError::NoFlashSale(body.sku.clone()))?;
    saga::rate_limit(inner, Some(&body.customer_id), peer, device, true)?;
    let ttl = if sale.hold_ttl_ms > 0 {
        sale.hold_ttl_ms
    } else {
        inner.config.flash_hold_ttl_ms
    };
    let hold = inner
        .ledger
        .reserve(
            Some(body.customer_id.clone()),
            vec![WantedLine {
                sku: body.sku.clone(),
                store: body.store.unwrap_or_else(|| "*".into()),
                quantity: body.quantity,
            }],
            ttl,
            "purchase_token",
        )
        .await?;
    Ok(ok(
        201,
        json!({"token": hold.id, "sku": body.sku, "quantity": body.quantity, "customer_id": body.customer_id, "expires_at_ms": hold.expires_at_ms}),
    ))
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct OpenBody {
    by: String,
    reason: String,
}

async fn admin_route<B>(
    checkout: &Checkout,
    actor: &str,
    rest: &str,
    method: &Method,
    query: &str,
    body: B,
    limit: usize,
) -> Reply
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let ledger = checkout.ledger();
    match (method.clone(), rest) {
        (Method::GET, "" | "/") => ok(
            200,
            json!({"stats": checkout.stats(), "open_state": checkout.open_state(), "flash_sales": ledger.published(|p| p.flash_sales.values().cloned().collect::<Vec<_>>())}),
        ),
        (Method::POST, "/close" | "/open") => {
            let body = match read_body(body, limit).await {
                Ok(body) => body,
                Err(reply) => return reply,
            };
            let body: OpenBody = if body.is_empty() {
                OpenBody::default()
            } else {
                match serde_json::from_slice(&body) {
                    Ok(body) => body,
                    Err(e) => return plain(400, "invalid_request", &format!("body: {e}")),
                }
            };
            let open = rest == "/open";
            let by = if body.by.is_empty() { actor } else { &body.by };
            match checkout.set_open(open, by, &body.reason).await {
                Ok(()) => ok(200, json!({"open_state": checkout.open_state()})),
                Err(err) => storage(err),
            }
        }
        (Method::GET, "/reconciliation") => match checkout.reconcile().await {
            Ok(report) => ok(200, json!(report)),
            Err(err) => error(&err),
        },
        (Method::GET, "/sagas") => {
            let state = query_param(query, "state").unwrap_or_else(|| "compensating".into());
            let Ok(state) = state.parse::<SagaState>() else {
                return plain(400, "invalid_state", "state is one of reserving, reserved, paid, ordered, confirmed, completed, compensating, failed");
            };
            let limit = query_param(query, "limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(100usize)
                .clamp(1, 1_000);
            match ledger.sagas_in(state, limit) {
                Ok(sagas) => ok(200, json!({"state": state, "sagas": sagas})),
                Err(err) => storage(err),
            }
        }
        (Method::GET, rest) if rest.starts_with("/stock/") => {
            let sku = &rest["/stock/".len()..];
            match ledger.stock(sku) {
                Ok(levels) => ok(
                    200,
                    json!({"sku": sku, "locations": levels.iter().map(|(location, level)| json!({"location": location, "on_hand": level.on_hand, "reserved": level.reserved, "sold_pending": level.sold_pending, "available": level.available()})).collect::<Vec<_>>()}),
                ),
                Err(err) => storage(err),
            }
        }
        (Method::PUT | Method::DELETE, rest) if rest.starts_with("/flash-sales/") => {
            let sku = rest["/flash-sales/".len()..].to_owned();
            let remove = method == Method::DELETE;
            let sale = if remove {
                FlashSale {
                    sku: sku.clone(),
                    ..FlashSale::default()
                }
            } else {
                let body = match read_body(body, limit).await {
                    Ok(body) => body,
                    Err(reply) => return reply,
                };
                match serde_json::from_slice::<FlashSale>(&body) {
                    Ok(mut sale) => {
                        sale.sku = sku.clone();
                        if sale.per_customer_limit < 1
                            || sale.hold_ttl_ms < 1
                            || sale.ends_at_ms <= sale.starts_at_ms
                        {
                            return plain(400, "invalid_flash_sale", "per_customer_limit and hold_ttl_ms must be at least 1, and the window must not be empty");
                        }
                        sale
                    }
                    Err(e) => return plain(400, "invalid_flash_sale", &e.to_string()),
                }
            };
            match ledger.set_flash_sale(sale.clone(), remove).await {
                Ok(()) => ok(
                    200,
                    json!({"sku": sku, "removed": remove, "flash_sale": (!remove).then_some(sale)}),
                ),
                Err(err) => storage(err),
            }
        }
        _ => plain(404, "not_found", "no such checkout admin route"),
    }
}
