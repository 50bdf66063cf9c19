//! `POST /v1/quote`: a priced cart and its signed price lock.
//!
//! Request (JSON, at most [`MAX_BODY_BYTES`]):
//! `{"lines":[{"sku":"A","qty":2}], "store":"s1", "channel":"web", "segment":"gold",
//!   "customer_id":"c-1", "coupons":["SAVE10"], "explain":true}`; everything but `lines`
//! is optional (`*` / none).
//!
//! Every line is priced from **one** snapshot version (one `store.load()`): the entry the
//! GET route would answer for the same store/channel/segment gives the unit list price,
//! the decided price and the floor. The entry's own promotion tag, if active, gives the
//! unit price (what GET shows without a promotion set); the snapshot's promotion set, if
//! any, prices the cart from there. Floors come from the snapshot and are never shown: a line
//! says `clamped: true` when the floor cut a discount, and the explanation names the cut
//! without the floor amount.
//!
//! # Cache
//!
//! Evaluations are cached (moka, bounded, [`CACHE_TTL`]) under the snapshot version, the
//! canonical cart (lines sorted by SKU, quantities merged), the context and the current
//! second. A new snapshot version is a new key, so no answer is ever priced from an
//! older snapshot; promotion windows are resolved to the second at worst. A cached
//! answer is **re-signed**: its quote gets a fresh `issued_at`/`expires_at` (now + TTL)
//! and a new token, so a cache hit never hands out a shortened price lock.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use edgeprice_pricing::key::{validate, Dimension, Sku};
use edgeprice_pricing::promo::{
    evaluate, CartContext, CartLine, CouponInput, Evaluation, PromotionSet, MAX_QUANTITY,
};
use edgeprice_pricing::quote::{Keyring, Quote, QuoteError, DEFAULT_TTL_MS, MAX_TTL_MS};
use edgeprice_pricing::Currency;
use moka::sync::Cache;
use serde::{Deserialize, Serialize};

use crate::api::Response;
use crate::snapshot::Snapshot;

/// Largest accepted quote request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most lines in one quoted cart.
pub const MAX_QUOTE_LINES: usize = 200;
/// Most coupon codes in one request.
pub const MAX_COUPONS: usize = 10;
/// How long a cached evaluation may be reused.
pub const CACHE_TTL: Duration = Duration::from_secs(2);
/// Most cached evaluations.
pub const CACHE_CAPACITY: u64 = 10_000;

/// Settings of the quote route.
#[derive(Debug, Clone)]
pub struct QuoteConfig {
    /// Signing keys; the active one signs. `None` disables quotes (503 `quotes_disabled`).
    pub keyring: Option<Keyring>,
    /// Lifetime of a quote (the price lock), milliseconds.
    pub ttl_ms: i64,
    /// Cache evaluations (see the module docs).
    pub cache: bool,
}

impl Default for QuoteConfig {
    fn default() -> Self {
        QuoteConfig {
            keyring: None,
            ttl_ms: DEFAULT_TTL_MS,
            cache: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestLine {
    sku: String,
    qty: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuoteRequest {
    lines: Vec<RequestLine>,
    #[serde(default)]
    store: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    segment: Option<String>,
    #[serde(default)]
    customer_id: Option<String>,
    #[serde(default, alias = "coupon_codes")]
    coupons: Vec<String>,
    #[serde(default = "yes")]
    explain: bool,
}

fn yes() -> bool {
    true
}

/// What a cached evaluation is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    snapshot_version: u64,
    second: i64,
    lines: Vec<(String, u32)>,
    store: String,
    channel: String,
    segment: String,
    customer_id: Option<String>,
    coupons: Vec<String>,
    explain: bool,
}

#[derive(Debug)]
struct Cached {
    evaluation: Evaluation,
    quote: Quote,
}

/// The quote route's state: keys and cache.
pub struct Quoter {
    config: QuoteConfig,
    cache: Option<Cache<CacheKey, Arc<Cached>>>,
}

impl std::fmt::Debug for Quoter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quoter")
            .field("config", &self.config)
            .field("cached", &self.cache.as_ref().map(|c| c.entry_count()))
            .finish()
    }
}

/// Why a request got no quote: the API error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl Refused {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Refused {
        Refused {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn into_response(self) -> Response {
        Response::error(self.status, self.code, &self.message)
    }
}

/// A quote as the API answers it.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The response body (JSON).
    pub body: String,
    pub token: String,
    pub quote: Quote,
    /// Whether the evaluation came from the cache.
    pub cached: bool,
}

fn empty_set() -> &'static PromotionSet {
    static EMPTY: OnceLock<PromotionSet> = OnceLock::new();
    EMPTY.get_or_init(PromotionSet::default)
}

impl Quoter {
    pub fn new(config: QuoteConfig) -> Result<Quoter, QuoteError> {
        if !(1..=MAX_TTL_MS).contains(&config.ttl_ms) {
            return Err(QuoteError::Ttl(config.ttl_ms));
        }
        let cache = config.cache.then(|| {
            Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(CACHE_TTL)
                .build()
        });
        Ok(Quoter { config, cache })
    }

    pub fn enabled(&self) -> bool {
        self.config.keyring.is_some()
    }

    /// Prices and signs a cart from `body` against `snapshot` at `now_ms`.
    pub fn quote(&self, snapshot: &Snapshot, body: &[u8], now_ms: i64) -> Result<Answer, Refused> {
        let Some(keyring) = &self.config.keyring else {
            return Err(Refused::new(
                503,
                "quotes_disabled",
                "quotes are disabled: start the edge with a quote signing key (--quote-key)",
            ));
        };
        let request: QuoteRequest = serde_json::from_slice(body).map_err(|err| {
            Refused::new(400, "invalid_json", format!("bad quote request: {err}"))
        })?;
        let key = canonical(&request, snapshot.version(), now_ms)?;

        let cached = self.cache.as_ref().and_then(|cache| cache.get(&key));
        let (entry, hit) = match cached {
            Some(entry) => (entry, true),
            None => {
                let entry = Arc::new(self.evaluate(snapshot, &key, &request, now_ms)?);
                if let Some(cache) = &self.cache {
                    cache.insert(key, Arc::clone(&entry));
                }
                (entry, false)
            }
        };
        // Fresh lock on every answer, cached or not.
        let mut quote = entry.quote.clone();
        quote.issued_at_ms = now_ms;
        quote.expires_at_ms = now_ms + self.config.ttl_ms;
        let token = keyring.sign(&quote);
        let body = render(&entry.evaluation, &quote, &token);
        Ok(Answer {
            body,
            token,
            quote,
            cached: hit,
        })
    }

    fn evaluate(
        &self,
        snapshot: &Snapshot,
        key: &CacheKey,
        request: &QuoteRequest,
        now_ms: i64,
    ) -> Result<Cached, Refused> {
        let promotions = snapshot.promotions();
        let query = snapshot.query(
            Some(key.store.as_str()),
            Some(key.channel.as_str()),
            Some(key.segment.as_str()),
        );
        let mut currency: Option<Currency> = None;
        let mut lines = Vec::with_capacity(key.lines.len());
        for (sku, quantity) in &key.lines {
            let Some(resolved) = snapshot.resolve(sku, query, now_ms) else {
                let message = if snapshot.sku(sku).is_some() {
                    format!("SKU {sku} has no price for this store, channel and segment")
                } else {
                    format!("unknown SKU {sku}")
                };
                return Err(Refused::new(404, "unknown_sku", message));
            };
            let entry = &resolved.variant.entry;
            match currency {
                None => currency = Some(entry.currency),
                Some(c) if c != entry.currency => {
                    return Err(Refused::new(
                        400,
                        "mixed_currencies",
                        format!(
                            "SKU {sku} is priced in {} but the cart is in {}",
                            entry.currency.as_str(),
                            c.as_str()
                        ),
                    ))
                }
                Some(_) => {}
            }
            // The entry's own promotion tag (decided and guarded by the control plane)
            // gives the unit price; the promotion set prices the cart from there.
            let unit_price_minor = entry.effective_price_at(now_ms);
            lines.push(CartLine {
                sku: Sku::new(sku)
                    .map_err(|err| Refused::new(400, "invalid_sku", err.to_string()))?,
                quantity: *quantity,
                unit_list_price_minor: entry.list_price_minor,
                unit_price_minor,
                unit_floor_minor: entry.floor_minor,
                category: promotions.and_then(|p| p.category(sku)).map(str::to_owned),
            });
        }
        let currency = currency.expect("a cart has at least one line");
        let dimension = |value: &str| {
            Dimension::new(value)
                .map_err(|err| Refused::new(400, "invalid_dimension", err.to_string()))
        };
        let mut ctx = CartContext::new(
            currency,
            now_ms,
            promotions.map_or(chrono_tz::Tz::UTC, |p| p.time_zone(&key.store)),
        );
        ctx.store = dimension(&key.store)?;
        ctx.channel = dimension(&key.channel)?;
        ctx.segment = dimension(&key.segment)?;
        ctx.customer_id = request.customer_id.clone();
        ctx.coupons = key.coupons.iter().map(|c| CouponInput::new(c)).collect();
        ctx.shipping_fee_minor = promotions.map_or(0, |p| p.shipping_fee_minor());
        ctx.explain = key.explain;
        let set = promotions.map_or(empty_set(), |p| p.set());
        let evaluation = evaluate(set, &lines, &ctx)
            .map_err(|err| Refused::new(400, "invalid_cart", err.to_string()))?;
        let quote = Quote::new(&evaluation, &ctx, snapshot.version(), self.config.ttl_ms)
            .map_err(|err| Refused::new(500, "quote_failed", err.to_string()))?;
        Ok(Cached { evaluation, quote })
    }
}

/// Checks the request and builds its canonical cache key.
fn canonical(
    request: &QuoteRequest,
    snapshot_version: u64,
    now_ms: i64,
) -> Result<CacheKey, Refused> {
    if request.lines.is_empty() {
        return Err(Refused::new(400, "empty_cart", "the cart has no lines"));
    }
    if request.lines.len() > MAX_QUOTE_LINES {
        return Err(Refused::new(
            400,
            "too_many_lines",
            format!(
                "the cart has {} lines; the limit is {MAX_QUOTE_LINES}",
                request.lines.len()
            ),
        ));
    }
    if request.coupons.len() > MAX_COUPONS {
        return Err(Refused::new(
            400,
            "too_many_coupons",
            format!(
                "{} coupon codes; the limit is {MAX_COUPONS}",
                request.coupons.len()
            ),
        ));
    }
    let mut merged: BTreeMap<&str, i64> = BTreeMap::new();
    for line in &request.lines {
        validate("sku", &line.sku)
            .map_err(|err| Refused::new(400, "invalid_sku", err.to_string()))?;
        if line.qty <= 0 || line.qty > i64::from(MAX_QUANTITY) {
            return Err(Refused::new(
                400,
                "invalid_quantity",
                format!(
                    "line {}: quantity {} is outside 1..={MAX_QUANTITY}",
                    line.sku, line.qty
                ),
            ));
        }
        *merged.entry(line.sku.as_str()).or_default() += line.qty;
    }
    let mut lines = Vec::with_capacity(merged.len());
    for (sku, qty) in merged {
        if qty > i64::from(MAX_QUANTITY) {
            return Err(Refused::new(
                400,
                "invalid_quantity",
                format!("SKU {sku}: total quantity {qty} exceeds {MAX_QUANTITY}"),
            ));
        }
        lines.push((sku.to_owned(), qty as u32));
    }
    let dim = |field: &'static str, value: &Option<String>| -> Result<String, Refused> {
        match value.as_deref() {
            None | Some("") => Ok(edgeprice_pricing::ANY.to_owned()),
            Some(v) => {
                validate(field, v)
                    .map_err(|err| Refused::new(400, "invalid_dimension", err.to_string()))?;
                Ok(v.to_owned())
            }
        }
    };
    let mut coupons: Vec<String> = request
        .coupons
        .iter()
        .map(|c| c.trim().to_uppercase())
        .collect();
    coupons.sort();
    coupons.dedup();
    Ok(CacheKey {
        snapshot_version,
        second: now_ms.div_euclid(1_000),
        lines,
        store: dim("store", &request.store)?,
        channel: dim("channel", &request.channel)?,
        segment: dim("segment", &request.segment)?,
        customer_id: request.customer_id.clone(),
        coupons,
        explain: request.explain,
    })
}

#[derive(Serialize)]
struct LineOut<'a> {
    sku: &'a str,
    quantity: u32,
    unit_list_price_minor: i64,
    unit_price_minor: i64,
    subtotal_minor: i64,
    discounts: Vec<DiscountOut<'a>>,
    discount_minor: i64,
    total_minor: i64,
    /// The floor cut a discount on this line (the floor itself is not shown).
    clamped: bool,
}

/// A discount on a line; the promotion's label is in `applied` (cart promotions put a
/// discount on every line, so repeating labels would multiply the answer's size).
#[derive(Serialize)]
struct DiscountOut<'a> {
    promotion_id: &'a str,
    kind: edgeprice_pricing::promo::RuleKind,
    level: edgeprice_pricing::promo::Level,
    amount_minor: i64,
    clamped: bool,
}

#[derive(Serialize)]
struct QuoteOut<'a> {
    snapshot_version: u64,
    promotions_version: u64,
    currency: &'a str,
    store: &'a str,
    channel: &'a str,
    segment: &'a str,
    lines: Vec<LineOut<'a>>,
    totals: &'a edgeprice_pricing::promo::Totals,
    shipping_promotion_id: Option<&'a str>,
    applied: Vec<AppliedOut<'a>>,
    coupons: &'a [edgeprice_pricing::promo::CouponOutcome],
    explanation: Vec<String>,
    token: &'a str,
    issued_at_ms: i64,
    expires_at_ms: i64,
    expires_at: String,
}

#[derive(Serialize)]
struct AppliedOut<'a> {
    id: &'a str,
    label: &'a str,
    kind: edgeprice_pricing::promo::RuleKind,
    level: edgeprice_pricing::promo::Level,
    amount_minor: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    coupon_code: Option<&'a str>,
}

/// Explanation sentences without floor amounts: the floor is the retailer's secret.
fn customer_sentence(sentence: &str) -> String {
    const FLOOR: &str = ": the line may not go below its floor";
    match sentence.find(FLOOR) {
        Some(at) => format!(
            "{}: the line may not go below its minimum price",
            &sentence[..at]
        ),
        None => sentence.to_owned(),
    }
}

fn render(evaluation: &Evaluation, quote: &Quote, token: &str) -> String {
    let out = QuoteOut {
        snapshot_version: quote.snapshot_version,
        promotions_version: quote.promotions_version,
        currency: evaluation.currency.as_str(),
        store: quote.store.as_str(),
        channel: quote.channel.as_str(),
        segment: quote.segment.as_str(),
        lines: evaluation
            .lines
            .iter()
            .map(|line| LineOut {
                sku: line.sku.as_str(),
                quantity: line.quantity,
                unit_list_price_minor: line.unit_list_price_minor,
                unit_price_minor: line.unit_price_minor,
                subtotal_minor: line.subtotal_minor,
                discounts: line
                    .discounts
                    .iter()
                    .map(|d| DiscountOut {
                        promotion_id: &d.promotion_id,
                        kind: d.kind,
                        level: d.level,
                        amount_minor: d.amount_minor,
                        clamped: d.clamped_from_minor.is_some(),
                    })
                    .collect(),
                discount_minor: line.discount_minor,
                total_minor: line.total_minor,
                clamped: line.clamped,
            })
            .collect(),
        totals: &evaluation.totals,
        shipping_promotion_id: evaluation.shipping_promotion_id.as_deref(),
        applied: evaluation
            .applied
            .iter()
            .map(|a| AppliedOut {
                id: &a.id,
                label: &a.label,
                kind: a.kind,
                level: a.level,
                amount_minor: a.amount_minor,
                coupon_code: a.coupon_code.as_deref(),
            })
            .collect(),
        coupons: &evaluation.coupons,
        explanation: evaluation
            .explanation
            .iter()
            .map(|s| customer_sentence(s))
            .collect(),
        token,
        issued_at_ms: quote.issued_at_ms,
        expires_at_ms: quote.expires_at_ms,
        expires_at: {
            let mut out = Vec::with_capacity(24);
            crate::render::write_rfc3339(&mut out, quote.expires_at_ms);
            String::from_utf8(out).expect("ASCII")
        },
    };
    serde_json::to_string(&out).expect("a quote always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_amounts_leave_the_explanation() {
        let sentence =
            "A: p1 cut from 5.00 to 2.00: the line may not go below its floor 8.00 (4.00 × 2)";
        let out = customer_sentence(sentence);
        assert_eq!(
            out,
            "A: p1 cut from 5.00 to 2.00: the line may not go below its minimum price"
        );
        assert!(!out.contains("8.00"));
    }
}
