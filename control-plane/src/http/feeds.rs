//! Feed ingestion: `POST /v1/feeds/{feed}`.
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
//! - Errors: `413 body_too_large`, `404 unknown_feed`, `405 method_not_allowed`,
//!   `503 storage_error` (retry later).

use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{debug, warn};

use super::{
    bearer, constant_time_eq, error_reply, json_reply, method_not_allowed, read_body, Reply,
    Service,
};
use crate::admin::promotions::DefinitionEvent;
use crate::feeds::{FeedError, FeedKind};
use crate::store::{Outcome, StoreError, Submission};

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

pub(super) struct Bucket {
    tokens: f64,
    refilled: Instant,
}

fn authenticate<'s>(service: &'s Service, request: &Request<Incoming>) -> Option<&'s FeedSource> {
    let token = bearer(request)?;
    service
        .config
        .sources
        .iter()
        .find(|s| !s.token.is_empty() && constant_time_eq(s.token.as_bytes(), token.as_bytes()))
}

/// Takes `events` tokens from the source's bucket, or says how many seconds to wait.
fn take_tokens(service: &Service, source: &FeedSource, events: usize) -> Result<(), u64> {
    // The bucket is a few floats: the lock is held for nanoseconds.
    let mut buckets = service.buckets.lock().unwrap_or_else(|p| p.into_inner());
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

/// Stores the events of a request: promotion definitions (see
/// [`crate::admin::promotions::DefinitionEvent`]) are applied by the pipeline thread in
/// the transaction that makes them durable; every other event goes to the event log.
/// Outcomes are in the order of `submissions`.
async fn submit(
    service: &Service,
    source: &str,
    feed: FeedKind,
    submissions: Vec<Submission>,
) -> Result<Vec<Outcome>, StoreError> {
    let is_definition =
        |s: &Submission| feed == FeedKind::Promotions && DefinitionEvent::is_definition(&s.body);
    if !submissions.iter().any(is_definition) {
        return service.control.ingestor().ingest(submissions).await;
    }
    let (definitions, events): (Vec<_>, Vec<_>) = submissions
        .into_iter()
        .enumerate()
        .partition(|(_, s)| is_definition(s));
    let mut outcomes: Vec<Option<Outcome>> = Vec::new();
    outcomes.resize_with(definitions.len() + events.len(), || None);
    let positions: Vec<usize> = events.iter().map(|(i, _)| *i).collect();
    let logged = service
        .control
        .ingestor()
        .ingest(events.into_iter().map(|(_, s)| s).collect())
        .await?;
    for (position, outcome) in positions.into_iter().zip(logged) {
        outcomes[position] = Some(outcome);
    }
    let control = service.control.clone();
    let source = source.to_owned();
    let applied = tokio::task::spawn_blocking(move || {
        control.operate(move |ops, now_ms| {
            definitions
                .into_iter()
                .map(|(position, s)| (position, ops.apply_definition(&source, &s.body, now_ms)))
                .collect::<Vec<_>>()
        })
    })
    .await
    .map_err(|_| StoreError::Stopped)??;
    for (position, outcome) in applied {
        outcomes[position] = Some(outcome);
    }
    Ok(outcomes
        .into_iter()
        .map(|o| o.expect("every position filled"))
        .collect())
}

pub(super) async fn handle(
    service: &Service,
    request: Request<Incoming>,
    feed_name: &str,
) -> Reply {
    if request.method() != Method::POST {
        return method_not_allowed("POST");
    }
    let feed: FeedKind = match feed_name.parse() {
        Ok(feed) => feed,
        Err(err @ FeedError::UnknownFeed(_)) => {
            return error_reply(err.http_status(), err.code(), &err.to_string())
        }
        Err(err) => return error_reply(400, err.code(), &err.to_string()),
    };
    let Some(source) = authenticate(service, &request) else {
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
    let body = match read_body(request.into_body(), service.config.max_body_bytes).await {
        Ok(body) => body,
        Err(reply) => return reply,
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
    if let Err(retry_after) = take_tokens(service, source, submissions.len()) {
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
    let outcomes = match submit(service, &source.name, feed, submissions).await {
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
            Outcome::Rejected(err) => error_reply(err.http_status(), err.code(), &err.to_string()),
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
