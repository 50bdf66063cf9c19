//! The checkout saga: an orchestrator over the ledger's durable step log.
//!
//! ```text
//! verify quote → reserve (+ coupon redemptions) → pay → create order → confirm inventory → notify
//!                      ↑ payment fails: release      ↑ order fails: refund, release
//!                                                   any other failure: cancel order, refund, release
//! ```
//!
//! Each arrow is a durable ledger transition ([`Transition`]) — pay, create order and
//! confirm are committed together (see [`settle`]) — and the saga's state says
//! what comes next, so [`drive`] can pick a saga up in any state: the request that
//! started it, or the recovery loop after a crash. Recovery never charges: a saga
//! found `reserved` is finished only if the gateway booked its charge (looked up by
//! the saga's key), and otherwise rolled back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use edgeprice_pricing::quote::Quote;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::{oneshot, watch};
use tracing::{debug, error, info, warn};

use super::events;
use super::ledger::{BeginOutcome, BeginSaga, CouponClaim, SagaRecord, Transition, WantedLine};
use super::limits::Scope;
use super::payment::{with_retries, ChargeRequest, PaymentError, PaymentStatus, RefundRequest};
use super::{now_ms, CheckoutError, Inner, SagaState, StoredResponse};
use crate::feeds::FeedKind;
use crate::kafka::KafkaConfig;
use crate::store::{Outcome, Submission};

/// The body of `POST /v1/checkout`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutBody {
    /// The signed quote from the edge's `POST /v1/quote`.
    pub quote_token: String,
    /// Purchase tokens for SKUs in a flash sale.
    #[serde(default)]
    pub purchase_tokens: Vec<String>,
    /// What the customer pays with (opaque, passed to the gateway).
    #[serde(default)]
    pub payment_method: Option<String>,
}

/// One checkout request as the HTTP layer hands it over.
#[derive(Debug, Clone)]
pub struct CheckoutInput {
    pub idempotency_key: Option<String>,
    pub body: bytes::Bytes,
    pub peer: Option<IpAddr>,
    pub device: Option<String>,
}

fn request_hash(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs a checkout to its answer.
pub(crate) async fn checkout(inner: &Arc<Inner>, input: CheckoutInput) -> StoredResponse {
    match checkout_inner(inner, input).await {
        Ok(response) => response,
        Err(err) => err.stored_response(None),
    }
}

fn is_flash(inner: &Inner, skus: impl Iterator<Item = String>) -> bool {
    let now = now_ms();
    inner.ledger.published(|p| {
        let sales = &p.flash_sales;
        skus.into_iter()
            .any(|sku| sales.get(&sku).is_some_and(|s| s.is_active(now)))
    })
}

/// Takes a token from every bucket that applies, or refuses.
pub(crate) fn rate_limit(
    inner: &Inner,
    customer: Option<&str>,
    peer: Option<IpAddr>,
    device: Option<&str>,
    flash: bool,
) -> Result<(), CheckoutError> {
    let ip = peer.map(|ip| ip.to_string()).unwrap_or_default();
    let keys = [
        (Scope::Customer, customer.unwrap_or("")),
        (Scope::Ip, ip.as_str()),
        (Scope::Device, device.unwrap_or("")),
    ];
    inner
        .limiter
        .check(&keys, flash)
        .map_err(|(scope, retry_after_s)| {
            inner.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            CheckoutError::RateLimited {
                scope: scope.as_str(),
                retry_after_s,
            }
        })
}

/// Refuses while checkout is closed (by [`super::Checkout::set_open`] or the gate).
pub(crate) fn check_open(inner: &Inner) -> Result<(), CheckoutError> {
    let open = inner.ledger.published(|p| p.open.clone());
    let reason = if !open.open {
        Some(if open.reason.is_empty() {
            format!("closed by {}", open.by)
        } else {
            open.reason
        })
    } else {
        inner.gate.as_ref().and_then(super::Gate::closed_reason)
    };
    match reason {
        None => Ok(()),
        Some(reason) => {
            inner
                .counters
                .closed_refused
                .fetch_add(1, Ordering::Relaxed);
            Err(CheckoutError::Closed(reason))
        }
    }
}

async fn checkout_inner(
    inner: &Arc<Inner>,
    input: CheckoutInput,
) -> Result<StoredResponse, CheckoutError> {
    check_open(inner)?;
    let key = input
        .idempotency_key
        .filter(|k| !k.is_empty() && k.len() <= 128)
        .ok_or(CheckoutError::MissingIdempotencyKey)?;
    let hash = request_hash(&input.body);
    // A finished checkout answers the same again even after its quote expired.
    if let Some(existing) = inner.ledger.saga_for_key(&key)? {
        if existing.request_hash == hash {
            if let Some(response) = existing.response {
                return Ok(response);
            }
        } else {
            return Err(CheckoutError::IdempotencyKeyReused);
        }
    }
    let body: CheckoutBody = serde_json::from_slice(&input.body)
        .map_err(|e| CheckoutError::InvalidRequest(format!("body: {e}")))?;
    let quote = inner.keyring.verify(&body.quote_token, now_ms())?;
    let flash = is_flash(inner, quote.lines.iter().map(|l| l.sku.to_string()));
    rate_limit(
        inner,
        quote.customer_id.as_deref(),
        input.peer,
        input.device.as_deref(),
        flash,
    )?;
    let Ok(_slot) = Arc::clone(&inner.slots).try_acquire_owned() else {
        inner
            .counters
            .concurrency_refused
            .fetch_add(1, Ordering::Relaxed);
        return Err(CheckoutError::TooManyCheckouts);
    };
    let coupons = quote
        .coupons
        .iter()
        .map(|c| CouponClaim {
            promotion_id: c.promotion_id.clone(),
            code: c.code.clone(),
            rule: inner.coupons.rule(&c.promotion_id),
        })
        .collect();
    // Claimed before it exists, so the recovery loop never takes a saga this request
    // is about to drive.
    let saga_id = super::new_id("sg");
    let running = Running::claim(inner, &saga_id);
    let begin = BeginSaga {
        saga_id,
        idempotency_key: key,
        request_hash: hash,
        customer: quote.customer_id.clone(),
        quote_json: serde_json::to_string(&quote).expect("quotes serialise"),
        total_minor: quote.totals.total_minor,
        currency: quote.currency.to_string(),
        lines: quote
            .lines
            .iter()
            .map(|l| WantedLine {
                sku: l.sku.to_string(),
                store: quote.store.to_string(),
                quantity: i64::from(l.quantity),
            })
            .collect(),
        coupons,
        purchase_tokens: body.purchase_tokens.clone(),
        hold_ttl_ms: inner.config.hold_ttl_ms,
    };
    let saga_id = match inner.ledger.begin(begin).await? {
        BeginOutcome::Started { saga_id, .. } => saga_id,
        BeginOutcome::Replay(response) => return Ok(response),
        BeginOutcome::Refused { response, .. } => return Ok(response),
        BeginOutcome::InProgress { saga_id } => return Err(CheckoutError::InProgress(saga_id)),
        BeginOutcome::KeyReused => return Err(CheckoutError::IdempotencyKeyReused),
    };
    let record = inner
        .ledger
        .saga(&saga_id)?
        .ok_or_else(|| CheckoutError::UnknownSaga(saga_id.clone()))?;
    // The saga runs on its own task: a client that hangs up does not stop it halfway
    // (the answer is kept for its retry with the same key).
    let task_inner = Arc::clone(inner);
    let (answer_tx, answer_rx) = oneshot::channel();
    tokio::spawn(async move {
        let _running = running;
        let mut answer_tx = Some(answer_tx);
        let response = drive(
            &task_inner,
            record,
            &quote,
            body.payment_method,
            Mode::Live,
            &mut answer_tx,
        )
        .await;
        if let Some(answer_tx) = answer_tx {
            let _ = answer_tx.send(response);
        }
    });
    answer_rx
        .await
        .map_err(|_| CheckoutError::Storage("the saga task stopped".into()))
}

/// Marks a saga as driven by this process while alive.
struct Running {
    inner: Arc<Inner>,
    saga_id: String,
}

impl Running {
    fn claim(inner: &Arc<Inner>, saga_id: &str) -> Option<Running> {
        let mut running = inner.running.lock().unwrap_or_else(|p| p.into_inner());
        running.insert(saga_id.to_owned()).then(|| Running {
            inner: Arc::clone(inner),
            saga_id: saga_id.to_owned(),
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.saga_id);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The customer is waiting: charge.
    Live,
    /// After a crash: never charge, only find out whether the charge happened.
    Recovery,
}

/// Hangs (for a SIGKILL from a crash test) or fails at a named point, when configured.
async fn fault_point(inner: &Inner, point: &str) -> Result<(), CheckoutError> {
    let faults = &inner.config.faults;
    if faults.hang_at.as_deref() == Some(point) {
        let marker = inner.config.data_dir.join(format!("fault-{point}"));
        let _ = std::fs::write(&marker, point);
        warn!(point, "checkout fault injection: hanging until killed");
        loop {
            tokio::time::sleep(Duration::from_secs(3_600)).await;
        }
    }
    if faults.fail_at.as_deref() == Some(point) {
        return Err(CheckoutError::InjectedFault(point.to_owned()));
    }
    Ok(())
}

fn success_body(
    record: &SagaRecord,
    quote: &Quote,
    payment_id: &str,
    order_id: &str,
) -> StoredResponse {
    StoredResponse {
        status: 201,
        body: json!({
            "order_id": order_id,
            "saga_id": record.id,
            "status": "confirmed",
            "payment_id": payment_id,
            "total_minor": quote.totals.total_minor,
            "currency": quote.currency,
            "customer_id": quote.customer_id,
            "lines": quote.lines,
            "coupons": quote.coupons,
        })
        .to_string(),
    }
}

/// Drives a saga from its stored state to an end; returns the answer for the client.
async fn drive(
    inner: &Inner,
    record: SagaRecord,
    quote: &Quote,
    method: Option<String>,
    mode: Mode,
    answer_tx: &mut Option<oneshot::Sender<StoredResponse>>,
) -> StoredResponse {
    let saga_id = record.id.clone();
    let mut state = record.state;
    let mut payment_id = record.payment_id.clone();
    let mut order_id = record.order_id.clone();
    loop {
        let step: Result<SagaState, (CheckoutError, SagaState)> = match state {
            SagaState::Completed | SagaState::Failed => {
                return inner
                    .ledger
                    .saga(&saga_id)
                    .ok()
                    .flatten()
                    .and_then(|r| r.response)
                    .unwrap_or_else(|| CheckoutError::Interrupted.stored_response(Some(&saga_id)));
            }
            SagaState::Reserving | SagaState::Compensating => {
                let code = record
                    .error_code
                    .clone()
                    .unwrap_or_else(|| "checkout_interrupted".into());
                return compensate(
                    inner,
                    &saga_id,
                    quote,
                    &code,
                    payment_id.clone(),
                    order_id.clone(),
                    state,
                )
                .await;
            }
            SagaState::Reserved => match pay(inner, &saga_id, quote, method.clone(), mode).await {
                Err(err) => Err((err, SagaState::Reserved)),
                Ok((id, charged)) => {
                    payment_id = Some(id.clone());
                    settle(inner, &record, quote, &saga_id, &id, charged)
                        .await
                        .map(|(reached, id)| {
                            order_id = id;
                            reached
                        })
                }
            },
            SagaState::Paid => create_order(inner, &saga_id)
                .await
                .map(|id| {
                    order_id = Some(id);
                    SagaState::Ordered
                })
                .map_err(|err| (err, SagaState::Paid)),
            SagaState::Ordered => confirm(
                inner,
                &saga_id,
                success_body(
                    &record,
                    quote,
                    payment_id.as_deref().unwrap_or_default(),
                    order_id.as_deref().unwrap_or_default(),
                ),
            )
            .await
            .map(|()| SagaState::Confirmed)
            .map_err(|err| (err, SagaState::Ordered)),
            SagaState::Confirmed => {
                let response = success_body(
                    &record,
                    quote,
                    payment_id.as_deref().unwrap_or_default(),
                    order_id.as_deref().unwrap_or_default(),
                );
                // The order is confirmed: the customer has the answer now; the sales
                // events and the completion follow without keeping them waiting.
                if let Some(answer_tx) = answer_tx.take() {
                    let _ = answer_tx.send(response.clone());
                }
                match notify(
                    inner,
                    &saga_id,
                    quote,
                    order_id.as_deref().unwrap_or_default(),
                    response.clone(),
                )
                .await
                {
                    Ok(()) => {
                        let _ = fault_point(inner, "completed").await;
                        return response;
                    }
                    Err(err) => {
                        // Paid, ordered, confirmed: nothing to undo. The recovery loop
                        // sends the sales events later; the customer has the order.
                        warn!(saga = %saga_id, error = %err, "notify failed; recovery will retry");
                        return response;
                    }
                }
            }
        };
        match step {
            Ok(next) => state = next,
            Err((err, at)) => {
                if matches!(err, CheckoutError::Storage(_) | CheckoutError::Stopped) {
                    // The ledger could not log the step: leave the saga where the log
                    // says it is; recovery continues it.
                    error!(saga = %saga_id, error = %err, "saga step could not be logged; left to recovery");
                    return CheckoutError::Storage(err.to_string()).stored_response(Some(&saga_id));
                }
                info!(saga = %saga_id, code = err.code(), at = at.as_str(), "saga compensating");
                let code = match (&err, mode) {
                    (CheckoutError::Interrupted, _) | (_, Mode::Recovery)
                        if at == SagaState::Reserved =>
                    {
                        "checkout_interrupted"
                    }
                    _ => err.code(),
                };
                if let Err(log) = inner
                    .ledger
                    .advance(
                        &saga_id,
                        Transition::Compensating {
                            code: code.to_owned(),
                            detail: err.to_string(),
                        },
                    )
                    .await
                {
                    error!(saga = %saga_id, error = %log, "cannot log compensation; left to recovery");
                    return log.stored_response(Some(&saga_id));
                }
                return compensate(
                    inner,
                    &saga_id,
                    quote,
                    code,
                    payment_id.clone(),
                    order_id.clone(),
                    SagaState::Compensating,
                )
                .await;
            }
        }
    }
}

/// Records the payment, creates the order and confirms the reservation with one
/// durable ledger commit, and returns the state reached and the order's id. All three
/// are the ledger's own writes, so they need not wait for a commit each: a checkout
/// pays for two group commits before its answer (the reservation, this) instead of
/// four. A crash before the commit leaves the saga `reserved` with its charge booked at
/// the gateway, which recovery finds by the saga's key and settles the same way; after
/// it, the saga is `confirmed`. The steps are still logged one by one; a fault injected
/// between them (`paid`, `create_order`, `ordered`, `confirm`) ends the commit there,
/// as a failure or a crash at that point would, and the saga goes on from the state
/// reached.
async fn settle(
    inner: &Inner,
    record: &SagaRecord,
    quote: &Quote,
    saga_id: &str,
    payment_id: &str,
    charged: i64,
) -> Result<(SagaState, Option<String>), (CheckoutError, SagaState)> {
    let faults = &inner.config.faults;
    let injected = |point| {
        faults.fail_at.as_deref() == Some(point) || faults.hang_at.as_deref() == Some(point)
    };
    let order_id = super::new_id("ord");
    let mut transitions = vec![Transition::Paid {
        payment_id: payment_id.to_owned(),
        amount_minor: charged,
    }];
    let mut reached = (SagaState::Paid, "paid");
    if !injected("paid") && !injected("create_order") {
        transitions.push(Transition::OrderCreated {
            order_id: order_id.clone(),
        });
        reached = (SagaState::Ordered, "ordered");
        if !injected("ordered") && !injected("confirm") {
            let response = success_body(record, quote, payment_id, &order_id);
            transitions.push(Transition::Confirmed { response });
            reached = (SagaState::Confirmed, "confirmed");
        }
    }
    let (state, point) = reached;
    inner
        .ledger
        .advance_all(saga_id, transitions)
        .await
        .map_err(|err| (err, SagaState::Reserved))?;
    fault_point(inner, point)
        .await
        .map_err(|err| (err, state))?;
    let order_id = (state != SagaState::Paid).then_some(order_id);
    Ok((state, order_id))
}

/// Charges the quoted total (live), or finds out whether the charge happened
/// (recovery); returns the payment id and the amount charged.
async fn pay(
    inner: &Inner,
    saga_id: &str,
    quote: &Quote,
    method: Option<String>,
    mode: Mode,
) -> Result<(String, i64), CheckoutError> {
    fault_point(inner, "reserved").await?;
    let amount = quote.totals.total_minor;
    let payment = match mode {
        Mode::Live if amount == 0 => None,
        Mode::Live => {
            let request = ChargeRequest {
                idempotency_key: saga_id.to_owned(),
                amount_minor: amount,
                currency: quote.currency.to_string(),
                customer_id: quote.customer_id.clone(),
                method,
            };
            let mut retries = Vec::new();
            let result = with_retries(
                &inner.config.retry,
                || inner.gateway.charge(request.clone()),
                |attempt, err| retries.push((attempt, err.code())),
            )
            .await;
            if !retries.is_empty() {
                let _ = inner
                    .ledger
                    .advance(
                        saga_id,
                        Transition::Note {
                            step: "pay".into(),
                            outcome: "retried".into(),
                            detail: json!({"failed_attempts": retries.iter().map(|(a, c)| json!({"attempt": a, "code": c})).collect::<Vec<_>>()}),
                        },
                    )
                    .await;
            }
            match result {
                Ok(payment) => Some(payment),
                Err(PaymentError::Declined { reason }) => {
                    return Err(CheckoutError::PaymentDeclined(reason))
                }
                Err(PaymentError::Invalid(message)) => {
                    return Err(CheckoutError::PaymentDeclined(message))
                }
                Err(PaymentError::Timeout | PaymentError::Unavailable(_)) => {
                    return Err(CheckoutError::PaymentUnavailable)
                }
            }
        }
        Mode::Recovery => match with_retries(
            &inner.config.retry,
            || inner.gateway.lookup(saga_id.to_owned()),
            |_, _| {},
        )
        .await
        {
            Ok(Some(payment)) if payment.status == PaymentStatus::Succeeded => Some(payment),
            Ok(_) => return Err(CheckoutError::Interrupted),
            Err(_) => return Err(CheckoutError::PaymentUnavailable),
        },
    };
    fault_point(inner, "charged").await?;
    let (payment_id, charged) = match payment {
        Some(payment) => {
            if payment.amount_minor != amount {
                return Err(CheckoutError::PaymentDeclined(format!(
                    "gateway charged {} instead of {amount}",
                    payment.amount_minor
                )));
            }
            (payment.id, payment.amount_minor)
        }
        // Nothing to charge (a fully discounted cart): no payment, an order all the same.
        None => (format!("free_{saga_id}"), 0),
    };
    Ok((payment_id, charged))
}

async fn create_order(inner: &Inner, saga_id: &str) -> Result<String, CheckoutError> {
    if inner.config.faults.fail_at.as_deref() == Some("create_order") {
        return Err(CheckoutError::OrderFailed("injected fault".into()));
    }
    let order_id = super::new_id("ord");
    inner
        .ledger
        .advance(
            saga_id,
            Transition::OrderCreated {
                order_id: order_id.clone(),
            },
        )
        .await?;
    fault_point(inner, "ordered").await?;
    Ok(order_id)
}

async fn confirm(
    inner: &Inner,
    saga_id: &str,
    response: StoredResponse,
) -> Result<(), CheckoutError> {
    fault_point(inner, "confirm").await?;
    inner
        .ledger
        .advance(saga_id, Transition::Confirmed { response })
        .await?;
    fault_point(inner, "confirmed").await?;
    Ok(())
}

/// Sends the sales events (durable in the feed log) and completes the saga.
async fn notify(
    inner: &Inner,
    saga_id: &str,
    quote: &Quote,
    order_id: &str,
    response: StoredResponse,
) -> Result<(), CheckoutError> {
    if let Some(ingestor) = &inner.ingestor {
        let now = now_ms();
        let submissions: Vec<Submission> = quote
            .lines
            .iter()
            .map(|line| Submission {
                feed: FeedKind::Sales,
                body: json!({
                    "event_id": format!("{}{order_id}:{}", super::ledger::SALES_EVENT_PREFIX, line.sku),
                    "sku": line.sku,
                    "store": quote.store,
                    "channel": quote.channel,
                    "kind": "checkout",
                    "quantity": line.quantity,
                    "occurred_at_ms": now,
                })
                .to_string()
                .into_bytes(),
            })
            .collect();
        let outcomes = ingestor
            .ingest(submissions)
            .await
            .map_err(|e| CheckoutError::Storage(format!("sales events: {e}")))?;
        for outcome in outcomes {
            if let Outcome::Rejected(err) = outcome {
                warn!(saga = %saga_id, code = err.code(), "sales event refused by the feed; dead-lettered");
            }
        }
    }
    inner
        .ledger
        .advance(saga_id, Transition::Completed { response })
        .await?;
    Ok(())
}

/// Undoes a saga in reverse order: cancel the order, refund the payment (looked up by
/// the saga's key when its id is not logged: a timeout or a crash may have hidden it),
/// release the reservation and coupon redemptions, and end it `failed`. Each undo is
/// idempotent, so recovery can run this again after a crash in the middle.
async fn compensate(
    inner: &Inner,
    saga_id: &str,
    quote: &Quote,
    code: &str,
    payment_id: Option<String>,
    order_id: Option<String>,
    _state: SagaState,
) -> StoredResponse {
    let failure = |err: CheckoutError| err.stored_response(Some(saga_id));
    if order_id.is_some() {
        if let Err(err) = inner
            .ledger
            .advance(saga_id, Transition::OrderCancelled)
            .await
        {
            return failure(err);
        }
    }
    let payment = match with_retries(
        &inner.config.retry,
        || inner.gateway.lookup(saga_id.to_owned()),
        |_, _| {},
    )
    .await
    {
        Ok(payment) => payment,
        Err(err) => {
            warn!(saga = %saga_id, error = %err, "refund lookup failed; the recovery loop retries");
            return failure(CheckoutError::PaymentUnavailable);
        }
    };
    debug_assert!(
        payment_id.is_none()
            || payment_id
                .as_deref()
                .is_some_and(|id| id.starts_with("free_"))
            || payment.is_some()
    );
    if let Some(payment) = payment {
        let left = payment.amount_minor - payment.refunded_minor;
        if left > 0 {
            let request = RefundRequest {
                idempotency_key: format!("refund:{saga_id}"),
                payment_id: payment.id.clone(),
                amount_minor: left,
            };
            match with_retries(
                &inner.config.retry,
                || inner.gateway.refund(request.clone()),
                |_, _| {},
            )
            .await
            {
                Ok(refund) => {
                    if let Err(err) = inner
                        .ledger
                        .advance(
                            saga_id,
                            Transition::Refunded {
                                refund_id: refund.id,
                            },
                        )
                        .await
                    {
                        return failure(err);
                    }
                }
                Err(err) => {
                    warn!(saga = %saga_id, error = %err, "refund failed; the recovery loop retries");
                    return failure(CheckoutError::PaymentUnavailable);
                }
            }
        }
    }
    if let Err(err) = inner.ledger.advance(saga_id, Transition::Released).await {
        return failure(err);
    }
    let cause = match code {
        "payment_declined" => {
            CheckoutError::PaymentDeclined("the issuer declined the charge".into())
        }
        "payment_unavailable" => CheckoutError::PaymentUnavailable,
        "order_failed" => CheckoutError::OrderFailed(String::new()),
        "reservation_lost" => CheckoutError::ReservationLost(String::new()),
        _ => CheckoutError::Interrupted,
    };
    let _ = quote;
    let response = cause.stored_response(Some(saga_id));
    if let Err(err) = inner
        .ledger
        .advance(
            saga_id,
            Transition::Failed {
                response: response.clone(),
            },
        )
        .await
    {
        return failure(err);
    }
    response
}

/// Finishes or compensates every open saga not driven by this process.
pub(crate) async fn recover(inner: &Arc<Inner>) -> usize {
    let sagas = match inner.ledger.open_sagas() {
        Ok(sagas) => sagas,
        Err(err) => {
            warn!(error = %err, "recovery: cannot list open sagas");
            return 0;
        }
    };
    let mut handled = 0;
    for record in sagas {
        let Some(_running) = Running::claim(inner, &record.id) else {
            continue;
        };
        let quote: Quote = match serde_json::from_str(&record.quote_json) {
            Ok(quote) => quote,
            Err(err) => {
                error!(saga = %record.id, error = %err, "recovery: stored quote unreadable");
                continue;
            }
        };
        info!(saga = %record.id, state = %record.state, "recovery: picking up saga");
        let response = drive(
            inner,
            record.clone(),
            &quote,
            None,
            Mode::Recovery,
            &mut None,
        )
        .await;
        debug!(saga = %record.id, status = response.status, "recovery: saga settled");
        let settled = inner
            .ledger
            .saga(&record.id)
            .ok()
            .flatten()
            .is_some_and(|s| s.state.is_terminal());
        if settled {
            inner.counters.recovered.fetch_add(1, Ordering::Relaxed);
        }
        handled += 1;
    }
    handled
}

pub(crate) async fn sweep(inner: &Inner) -> Result<usize, CheckoutError> {
    let released = inner.ledger.sweep(now_ms()).await?;
    if released > 0 {
        inner
            .counters
            .swept
            .fetch_add(released as u64, Ordering::Relaxed);
        info!(released, "expired reservations released");
    }
    Ok(released)
}

/// One finding of the reconciliation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub saga_id: Option<String>,
    pub payment_id: Option<String>,
    pub order_id: Option<String>,
    pub amount_minor: i64,
    pub problem: String,
}

/// Payments without orders and orders without payments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReconciliationReport {
    pub at_ms: i64,
    pub payments_checked: usize,
    pub orders_checked: usize,
    /// Payments with money kept (not refunded) and no live order.
    pub payments_without_order: Vec<Finding>,
    /// Live orders without a matching payment.
    pub orders_without_payment: Vec<Finding>,
    /// Sagas still running (not judged).
    pub in_flight: usize,
}

impl ReconciliationReport {
    pub fn is_clean(&self) -> bool {
        self.payments_without_order.is_empty() && self.orders_without_payment.is_empty()
    }
}

pub(crate) async fn reconcile(inner: &Inner) -> Result<ReconciliationReport, CheckoutError> {
    let payments = inner
        .gateway
        .payments()
        .await
        .map_err(|_| CheckoutError::PaymentUnavailable)?;
    let orders = inner.ledger.orders()?;
    let open: std::collections::HashSet<String> = inner
        .ledger
        .open_sagas()?
        .into_iter()
        .map(|s| s.id)
        .collect();
    let live_orders: HashMap<&str, &super::ledger::OrderRecord> = orders
        .iter()
        .filter(|o| o.status != "cancelled")
        .map(|o| (o.saga_id.as_str(), o))
        .collect();
    let mut report = ReconciliationReport {
        at_ms: now_ms(),
        payments_checked: payments.len(),
        orders_checked: orders.len(),
        in_flight: open.len(),
        ..ReconciliationReport::default()
    };
    let by_id: HashMap<&str, &super::payment::Payment> =
        payments.iter().map(|p| (p.id.as_str(), p)).collect();
    for payment in &payments {
        let kept = payment.amount_minor - payment.refunded_minor;
        if kept <= 0 || open.contains(&payment.idempotency_key) {
            continue;
        }
        match live_orders.get(payment.idempotency_key.as_str()) {
            Some(order) if order.payment_id == payment.id => {}
            _ => report.payments_without_order.push(Finding {
                saga_id: Some(payment.idempotency_key.clone()),
                payment_id: Some(payment.id.clone()),
                order_id: None,
                amount_minor: kept,
                problem: "payment kept without a live order".into(),
            }),
        }
    }
    for order in orders.iter().filter(|o| o.status != "cancelled") {
        if open.contains(&order.saga_id)
            || (order.total_minor == 0 && order.payment_id.starts_with("free_"))
        {
            continue;
        }
        let problem = match by_id.get(order.payment_id.as_str()) {
            None => Some("no payment at the gateway"),
            Some(p) if p.amount_minor - p.refunded_minor != order.total_minor => {
                Some("payment amount differs from the order total (or was refunded)")
            }
            Some(_) => None,
        };
        if let Some(problem) = problem {
            report.orders_without_payment.push(Finding {
                saga_id: Some(order.saga_id.clone()),
                payment_id: Some(order.payment_id.clone()),
                order_id: Some(order.id.clone()),
                amount_minor: order.total_minor,
                problem: problem.into(),
            });
        }
    }
    let issues = (report.payments_without_order.len() + report.orders_without_payment.len()) as u64;
    inner
        .counters
        .reconciliation_issues
        .store(issues, Ordering::Relaxed);
    if issues > 0 {
        warn!(
            payments_without_order = report.payments_without_order.len(),
            orders_without_payment = report.orders_without_payment.len(),
            "reconciliation found discrepancies"
        );
    }
    *inner
        .last_reconciliation
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(report.clone());
    Ok(report)
}

/// The background loops: recovery (at once, then periodically), sweeper,
/// reconciliation, and the event relay.
pub(crate) async fn background(
    inner: Arc<Inner>,
    kafka: Option<(KafkaConfig, String)>,
    stop_rx: watch::Receiver<bool>,
) {
    let relay = events::relay(
        inner.ledger.clone(),
        inner.bus.clone(),
        kafka,
        Arc::clone(&inner.counters.outbox_lag),
        stop_rx.clone(),
    );
    let loops = async {
        let mut stop_rx = stop_rx.clone();
        let every = |ms: u64| {
            let mut interval = tokio::time::interval(Duration::from_millis(ms.max(10)));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        };
        let mut recovery = every(inner.config.recovery_interval_ms);
        let mut sweeper = every(inner.config.sweep_interval_ms);
        let mut reconciliation = every(inner.config.reconcile_interval_ms);
        loop {
            tokio::select! {
                _ = recovery.tick() => {
                    let handled = recover(&inner).await;
                    if handled > 0 {
                        info!(handled, "recovery settled sagas left in flight");
                    }
                }
                _ = sweeper.tick() => {
                    if let Err(err) = sweep(&inner).await {
                        warn!(error = %err, "sweeper failed");
                    }
                }
                _ = reconciliation.tick() => {
                    if let Err(err) = reconcile(&inner).await {
                        warn!(error = %err, "reconciliation failed");
                    }
                }
                _ = stop_rx.changed() => return,
            }
        }
    };
    tokio::join!(relay, loops);
    debug!("checkout background loops stopped");
}
