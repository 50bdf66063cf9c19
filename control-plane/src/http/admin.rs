//! The admin API, `/v1/admin/…`: the route table, roles and bodies are in
//! `edgeprice_schemas::admin`. Reads come from the in-memory board or a read-only
//! database connection; every change runs on the pipeline thread
//! ([`crate::runtime::ControlHandle::operate`]) and answers with the state the server
//! holds afterwards.

use edgeprice_pricing::promo::Promotion;
use edgeprice_pricing::Sku;
use edgeprice_schemas::admin::{
    ApprovalRequest, AuditRow, CheckoutMetrics, DryRunRequest, KillSwitchRequest, Metrics,
    OverrideRequest, Role, SkuDetail, WhoAmI,
};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use super::{
    bearer, constant_time_eq, decode_path, error_reply, json_reply, method_not_allowed,
    query_param, read_body, Reply, Service,
};
use crate::admin::board::SkuSort;
use crate::admin::promotions::dry_run;
use crate::pipeline::controls::{Actor, AdminError, ADMIN_AUDIT_KEY};
use crate::store::{EventLog, SkuState, StoreError};

/// Largest admin request body.
const MAX_ADMIN_BODY: usize = 1024 * 1024;

fn ok<T: Serialize>(status: StatusCode, value: &T) -> Reply {
    match serde_json::to_value(value) {
        Ok(body) => json_reply(status, body),
        Err(err) => error_reply(500, "internal", &err.to_string()),
    }
}

fn admin_error(err: &AdminError) -> Reply {
    error_reply(err.status(), err.code(), &err.to_string())
}

fn stopped(err: StoreError) -> Reply {
    error_reply(503, err.code(), &err.to_string())
}

/// The role a route needs.
fn required_role(method: &Method, route: &str) -> Role {
    match (method, route) {
        (&Method::GET, _) => Role::Viewer,
        (&Method::POST, "promotions/dry-run") => Role::Viewer,
        _ => Role::Operator,
    }
}

async fn body_json<T: DeserializeOwned>(request: Request<Incoming>) -> Result<T, Reply> {
    let body = read_body(request.into_body(), MAX_ADMIN_BODY).await?;
    serde_json::from_slice(&body).map_err(|e| {
        error_reply(
            400,
            "malformed_body",
            &format!("the body is not valid: {e}"),
        )
    })
}

fn reason_param(request: &Request<Incoming>) -> String {
    query_param(request.uri().query(), "reason").unwrap_or_default()
}

fn limit_param(request: &Request<Incoming>, default: usize, max: usize) -> usize {
    query_param(request.uri().query(), "limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(default)
        .clamp(1, max)
}

/// Runs a blocking closure (database reads, pipeline calls) off the async thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Reply> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| error_reply(500, "internal", &e.to_string()))
}

pub(super) async fn handle(service: &Service, request: Request<Incoming>, route: &str) -> Reply {
    if service.config.admin_tokens.is_empty() {
        return error_reply(404, "admin_disabled", "no admin token is configured");
    }
    let Some(token) = bearer(&request).and_then(|presented| {
        service.config.admin_tokens.iter().find(|t| {
            !t.token.is_empty() && constant_time_eq(t.token.as_bytes(), presented.as_bytes())
        })
    }) else {
        return error_reply(
            401,
            "unauthorized",
            "send Authorization: Bearer <admin token>",
        );
    };
    let needed = required_role(request.method(), route);
    if token.role < needed {
        return error_reply(
            403,
            "forbidden",
            &format!(
                "{} has the {} role; this needs {needed}",
                token.name, token.role
            ),
        );
    }
    let actor = Actor {
        name: token.name.clone(),
        role: token.role,
    };
    let method = request.method().clone();
    let (head, tail) = match route.split_once('/') {
        Some((head, tail)) => (head, Some(decode_path(tail))),
        None => (route, None),
    };
    let control = &service.control;
    match (head, tail.as_deref(), &method) {
        ("whoami", None, &Method::GET) => ok(
            StatusCode::OK,
            &WhoAmI {
                name: actor.name,
                role: actor.role,
            },
        ),
        ("metrics", None, &Method::GET) => metrics(service).await,
        ("alerts", None, &Method::GET) => {
            let limit = limit_param(&request, 100, 1_000);
            ok(StatusCode::OK, &control.board().alerts(limit))
        }
        ("skus", None, &Method::GET) => {
            let query = request.uri().query();
            let sort = match query_param(query, "sort")
                .unwrap_or_default()
                .parse::<SkuSort>()
            {
                Ok(sort) => sort,
                Err(message) => return error_reply(400, "invalid_sort", &message),
            };
            let desc = query_param(query, "desc").is_some_and(|d| d == "1" || d == "true");
            let offset = query_param(query, "offset")
                .and_then(|o| o.parse().ok())
                .unwrap_or(0);
            let filter = query_param(query, "q").unwrap_or_default();
            let limit = limit_param(&request, 50, 1_000);
            ok(
                StatusCode::OK,
                &control.board().page(&filter, sort, desc, offset, limit),
            )
        }
        ("skus", Some(sku), &Method::GET) => sku_detail(service, sku).await,
        ("decisions", None, &Method::GET) => decisions(service, &request).await,
        ("overrides", None, &Method::GET) => {
            ok(StatusCode::OK, &control.board().controls().overrides)
        }
        ("overrides", None, &Method::POST) => {
            let body: OverrideRequest = match body_json(request).await {
                Ok(body) => body,
                Err(reply) => return reply,
            };
            operate(service, StatusCode::CREATED, move |ops, now| {
                ops.set_override(body, &actor, now)
            })
            .await
        }
        ("overrides", Some(id), &Method::DELETE) => {
            let Ok(id) = id.parse::<u64>() else {
                return error_reply(404, "not_found", "override ids are numbers");
            };
            let reason = reason_param(&request);
            operate(service, StatusCode::OK, move |ops, now| {
                ops.end_override(id, &actor.name, &reason, now)
            })
            .await
        }
        ("kill-switches", None, &Method::GET) => {
            ok(StatusCode::OK, &control.board().controls().kill_switches())
        }
        ("kill-switches", None, &Method::POST) => {
            let body: KillSwitchRequest = match body_json(request).await {
                Ok(body) => body,
                Err(reply) => return reply,
            };
            let edges = control.edges().len().max(1) as u64;
            operate(service, StatusCode::OK, move |ops, now| {
                ops.kill_switch(body, &actor, now).map(|mut outcome| {
                    outcome.blast_radius.edges = edges;
                    outcome
                })
            })
            .await
        }
        ("promotions", None, &Method::GET) => {
            let board = control.board();
            let rows = board.promotions().rows(
                &board.controls(),
                crate::now_ms(),
                &board.rows(),
                &board.promotion_tags(),
            );
            ok(StatusCode::OK, &rows)
        }
        ("promotions", Some("dry-run"), &Method::POST) => {
            let body: DryRunRequest = match body_json(request).await {
                Ok(body) => body,
                Err(reply) => return reply,
            };
            // From the board: the pipeline thread is not involved.
            let control = control.clone();
            let report = blocking(move || {
                let board = control.board();
                let rows = board.rows();
                dry_run(
                    &board.promotions(),
                    &board.controls(),
                    &rows,
                    &body,
                    crate::now_ms(),
                )
            })
            .await;
            match report {
                Ok(Ok(report)) => ok(StatusCode::OK, &report),
                Ok(Err(message)) => error_reply(422, "invalid_promotion", &message),
                Err(reply) => reply,
            }
        }
        ("promotions", Some(id), &Method::GET) => {
            match control.board().promotions().promotions.get(id) {
                Some(promotion) => ok(StatusCode::OK, promotion),
                None => error_reply(404, "unknown_promotion", "no such promotion"),
            }
        }
        ("promotions", Some(id), &Method::PUT) => {
            let id = id.to_owned();
            let reason = reason_param(&request);
            let promotion: Promotion = match body_json(request).await {
                Ok(body) => body,
                Err(reply) => return reply,
            };
            if promotion.id != id {
                return error_reply(
                    422,
                    "id_mismatch",
                    &format!("the body defines {}, the path names {id}", promotion.id),
                );
            }
            operate(service, StatusCode::OK, move |ops, now| {
                ops.put_promotion(promotion, &actor, &reason, now)
            })
            .await
        }
        ("promotions", Some(id), &Method::DELETE) => {
            let id = id.to_owned();
            let reason = reason_param(&request);
            operate(service, StatusCode::OK, move |ops, now| {
                ops.end_promotion(&id, &actor, &reason, now)
            })
            .await
        }
        ("audit", None, &Method::GET) => audit(service, &request).await,
        ("approvals", None, &Method::GET) => ok(StatusCode::OK, &control.board().approvals()),
        ("approvals", Some(sku), &Method::POST) => {
            let sku = match Sku::new(sku) {
                Ok(sku) => sku,
                Err(err) => return error_reply(400, "invalid_sku", &err.to_string()),
            };
            let body: ApprovalRequest = match body_json(request).await {
                Ok(body) => body,
                Err(reply) => return reply,
            };
            operate(service, StatusCode::OK, move |ops, now| {
                ops.decide_suggestion(&sku, body.approve, &actor, &body.reason, now)
            })
            .await
        }
        (
            "whoami" | "metrics" | "alerts" | "skus" | "decisions" | "overrides" | "kill-switches"
            | "promotions" | "audit" | "approvals",
            _,
            _,
        ) => method_not_allowed(allowed(head, tail.is_some())),
        _ => error_reply(
            404,
            "not_found",
            "no such admin route; see GET /v1/admin/whoami",
        ),
    }
}

fn allowed(head: &str, with_id: bool) -> &'static str {
    match (head, with_id) {
        ("overrides", false) | ("kill-switches", false) => "GET, POST",
        ("overrides", true) => "DELETE",
        ("promotions", true) => "GET, PUT, DELETE, POST",
        ("approvals", true) => "POST",
        _ => "GET",
    }
}

/// Runs an operator action on the pipeline thread and answers with its result.
async fn operate<T: Serialize + Send + 'static>(
    service: &Service,
    status: StatusCode,
    action: impl FnOnce(&mut dyn crate::pipeline::controls::Operations, i64) -> Result<T, AdminError>
        + Send
        + 'static,
) -> Reply {
    let control = service.control.clone();
    match blocking(move || control.operate(action)).await {
        Ok(Ok(Ok(value))) => ok(status, &value),
        Ok(Ok(Err(err))) => admin_error(&err),
        Ok(Err(err)) => stopped(err),
        Err(reply) => reply,
    }
}

async fn metrics(service: &Service) -> Reply {
    let control = &service.control;
    let now = crate::now_ms();
    let board = control.board();
    let mut pipeline = board.pipeline_metrics(now);
    let data_dir = control.data_dir().to_owned();
    let counts = blocking(move || -> Result<(i64, i64), StoreError> {
        let conn = crate::store::open_read(&data_dir)?;
        let backlog = EventLog::backlog(&conn)?;
        let dead = EventLog::dead_letter_count(&conn)?;
        Ok((backlog, dead))
    })
    .await;
    if let Ok(Ok((backlog, dead))) = counts {
        pipeline.backlog = backlog.max(0) as u64;
        pipeline.dead_letters_total = dead.max(0) as u64;
    }
    let controls = board.controls();
    let metrics = Metrics {
        at_ms: now,
        edges: control.edges().read().await,
        pipeline,
        margin_histogram: board.margin_histogram(),
        revenue_per_min: board.revenue_per_min(now),
        checkout: match &service.checkout {
            Some(checkout) => {
                let stats = checkout.stats();
                CheckoutMetrics {
                    open: stats.open,
                    reservations_active: stats.active_reservations,
                    oversell: stats.oversell,
                    orders_total: stats.orders,
                    sagas: stats
                        .sagas_by_state
                        .iter()
                        .map(|(state, n)| (state.to_string(), *n))
                        .collect(),
                }
            }
            None => CheckoutMetrics {
                open: !controls.checkout_closed(),
                ..CheckoutMetrics::default()
            },
        },
        kill_switches_active: controls.switches.len() as u32,
        alerts_last_hour: board.alerts_since(now - 3_600_000) as u32,
    };
    ok(StatusCode::OK, &metrics)
}

/// Sentences explaining a decision record, for people.
pub fn explain(record: &Value) -> Vec<String> {
    let money = |v: &Value| {
        v.as_i64()
            .map(|m| format!("{}.{:02}", m / 100, (m % 100).abs()))
    };
    let mut lines = Vec::new();
    if let Some(price) = money(&record["final_price_minor"]) {
        lines.push(format!(
            "Regular price {price} (reason {}), decided at snapshot version {}.",
            record["reason_code"].as_str().unwrap_or("?"),
            record["snapshot_version"]
        ));
    }
    if let Some(rules) = record["rules_fired"].as_array().filter(|r| !r.is_empty()) {
        let names: Vec<&str> = rules.iter().filter_map(Value::as_str).collect();
        lines.push(format!("Rules fired: {}.", names.join(", ")));
    }
    if let Some(candidate) = money(&record["candidate_minor"]) {
        lines.push(format!("Candidate before guardrails: {candidate}."));
    }
    for adjustment in record["guardrail_adjustments"]
        .as_array()
        .into_iter()
        .flatten()
    {
        lines.push(format!("Guardrail: {}.", compact(adjustment)));
    }
    if let Some(floor) = record.get("floor").filter(|f| !f.is_null()) {
        if let Some(minor) = money(&floor["minor"]) {
            lines.push(format!(
                "Floor {minor}, set by {}.",
                compact(&floor["rule"])
            ));
        }
    }
    if let Some(margin) = record["margin_after_bp"].as_i64() {
        lines.push(format!(
            "Margin after: {}.{:02}%.",
            margin / 100,
            (margin % 100).abs()
        ));
    }
    if let Some(promotion) = record.get("promotion").filter(|p| !p.is_null()) {
        lines.push(format!("Promotion policy: {}.", compact(promotion)));
    }
    for alert in record["alerts"].as_array().into_iter().flatten() {
        lines.push(format!(
            "Alert {}: {}",
            alert["kind"].as_str().unwrap_or("?"),
            alert["message"].as_str().unwrap_or("")
        ));
    }
    lines
}

fn compact(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

async fn sku_detail(service: &Service, sku: &str) -> Reply {
    let control = service.control.clone();
    let Some(row) = control.board().row(sku) else {
        return error_reply(404, "unknown_sku", &format!("no SKU {sku}"));
    };
    let sku = match Sku::new(sku) {
        Ok(sku) => sku,
        Err(err) => return error_reply(400, "invalid_sku", &err.to_string()),
    };
    let data_dir = control.data_dir().to_owned();
    let read = blocking(
        move || -> Result<(Option<SkuState>, Option<Value>), StoreError> {
            let conn = crate::store::open_read(&data_dir)?;
            let state = SkuState::load(&conn, &sku)?;
            let latest = crate::audit::records_for(&conn, sku.as_str(), 1)?
                .into_iter()
                .next()
                .and_then(|r| serde_json::from_str(&r.record).ok());
            Ok((state, latest))
        },
    )
    .await;
    let (state, latest) = match read {
        Ok(Ok(found)) => found,
        Ok(Err(err)) => return stopped(err),
        Err(reply) => return reply,
    };
    let controls = control.board().controls();
    let overrides = controls.overrides_of(&row.sku).cloned().collect();
    let mut explanation = latest.as_ref().map(explain).unwrap_or_default();
    if controls.is_frozen(&row.sku) {
        explanation.insert(
            0,
            "Frozen by a kill switch: the edges keep the price it had.".into(),
        );
    }
    let detail = SkuDetail {
        cost_minor: state.and_then(|s| s.cost_minor),
        explanation,
        latest_decision: latest,
        overrides,
        row,
    };
    ok(StatusCode::OK, &detail)
}

async fn decisions(service: &Service, request: &Request<Incoming>) -> Reply {
    let Some(sku) = query_param(request.uri().query(), "sku").filter(|s| !s.is_empty()) else {
        return error_reply(400, "missing_sku", "pass ?sku=<sku>");
    };
    let limit = limit_param(request, 20, 1_000);
    let data_dir = service.control.data_dir().to_owned();
    let lookup_sku = sku.clone();
    let records = blocking(move || {
        let conn = crate::store::open_read(&data_dir)?;
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
            let decisions: Vec<Value> = records
                .iter()
                .map(|r| {
                    let mut record: Value = serde_json::from_str(&r.record).unwrap_or(Value::Null);
                    record["audit_seq"] = json!(r.seq);
                    record
                })
                .collect();
            json_reply(StatusCode::OK, json!({"sku": sku, "decisions": decisions}))
        }
        Ok(Err(err)) => stopped(err),
        Err(reply) => reply,
    }
}

async fn audit(service: &Service, request: &Request<Incoming>) -> Reply {
    let limit = limit_param(request, 100, 1_000);
    let before = query_param(request.uri().query(), "before").and_then(|b| b.parse().ok());
    let data_dir = service.control.data_dir().to_owned();
    let entries = blocking(move || {
        let conn = crate::store::open_read(&data_dir)?;
        crate::audit::recent(&conn, limit, before)
    })
    .await;
    match entries {
        Ok(Ok(entries)) => {
            let rows: Vec<AuditRow> = entries
                .into_iter()
                .map(|entry| {
                    let record: Value = serde_json::from_str(&entry.record).unwrap_or(Value::Null);
                    let admin = entry.sku == ADMIN_AUDIT_KEY;
                    let kind = if admin {
                        record["kind"].as_str().unwrap_or("admin").to_owned()
                    } else {
                        "decision".to_owned()
                    };
                    let actor = if admin {
                        record["actor"].as_str().unwrap_or("?").to_owned()
                    } else {
                        "pipeline".to_owned()
                    };
                    let sku = if admin {
                        record["sku"].as_str().map(str::to_owned)
                    } else {
                        Some(entry.sku.clone())
                    };
                    let summary = if admin {
                        format!(
                            "{kind}{}: {}",
                            sku.as_deref().map(|s| format!(" {s}")).unwrap_or_default(),
                            record["reason"].as_str().unwrap_or("")
                        )
                    } else {
                        explain(&record).into_iter().next().unwrap_or_default()
                    };
                    AuditRow {
                        seq: entry.seq,
                        at_ms: entry.at_ms,
                        kind,
                        actor,
                        sku,
                        summary,
                        record,
                    }
                })
                .collect();
            ok(StatusCode::OK, &rows)
        }
        Ok(Err(err)) => stopped(err),
        Err(reply) => reply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_need_viewer_and_changes_need_operator() {
        assert_eq!(required_role(&Method::GET, "metrics"), Role::Viewer);
        assert_eq!(
            required_role(&Method::POST, "promotions/dry-run"),
            Role::Viewer
        );
        assert_eq!(
            required_role(&Method::POST, "kill-switches"),
            Role::Operator
        );
        assert_eq!(
            required_role(&Method::DELETE, "overrides/3"),
            Role::Operator
        );
        assert_eq!(required_role(&Method::PUT, "promotions/x"), Role::Operator);
    }

    #[test]
    fn decisions_explain_themselves() {
        let record = json!({
            "final_price_minor": 1234,
            "reason_code": "competitor_match",
            "snapshot_version": 7,
            "rules_fired": ["competitor_match"],
            "candidate_minor": 1199,
            "guardrail_adjustments": [{"rule": "min_margin", "from_minor": 1199, "to_minor": 1234}],
            "floor": {"minor": 1234, "rule": "min_margin"},
            "margin_after_bp": 3000,
            "alerts": [{"kind": "guardrail_conflict", "message": "held at floor"}],
        });
        let lines = explain(&record);
        assert_eq!(
            lines[0],
            "Regular price 12.34 (reason competitor_match), decided at snapshot version 7."
        );
        assert!(lines.contains(&"Margin after: 30.00%.".to_owned()));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("Floor 12.34, set by min_margin")));
        assert!(lines
            .last()
            .unwrap()
            .starts_with("Alert guardrail_conflict"));
    }
}
