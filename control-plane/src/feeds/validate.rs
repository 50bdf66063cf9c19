//! Parsing and validation of one feed event, with error codes for the API and the
//! dead-letter store.

use edgeprice_pricing::{Currency, Discount, Sku};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{FeedEvent, FeedKind, InventoryKind, PromotionAction};

/// Largest money amount a feed may carry: 10^12 minor units (ten billion euros).
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000;
/// Largest tax rate, basis points (50 %).
pub const MAX_TAX_RATE_BP: i64 = 5_000;
/// Largest stock figure, units.
pub const MAX_STOCK: i64 = 1_000_000_000;
/// Largest quantity of one sales event, units.
pub const MAX_SALE_QUANTITY: i64 = 10_000;
/// Earliest accepted timestamp: 2000-01-01T00:00:00Z.
pub const MIN_TIME_MS: i64 = 946_684_800_000;
/// Latest accepted timestamp: 2100-01-01T00:00:00Z.
pub const MAX_TIME_MS: i64 = 4_102_444_800_000;
/// Longest event id, promotion id, category, vendor or competitor name, bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Why an event was rejected. [`FeedError::code`] is the API error code and the
/// dead-letter reason; none of these gets better by retrying the same event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    #[error(
        "unknown feed {0:?}; feeds are catalog, cost, competitor, inventory, sales, promotions"
    )]
    UnknownFeed(String),
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("event_id is required (a non-empty string)")]
    MissingEventId,
    #[error("{0}")]
    InvalidEvent(String),
    #[error("sku: {0}")]
    InvalidSku(String),
    #[error("currency: {0}")]
    UnknownCurrency(String),
    #[error("{field} is required for {context}")]
    MissingField {
        field: &'static str,
        context: &'static str,
    },
    #[error("{field} must not be negative (got {value})")]
    NegativeAmount { field: &'static str, value: i64 },
    #[error("{field} = {value} is outside the sane range {min}..={max}")]
    OutOfRange {
        field: &'static str,
        value: i64,
        min: i64,
        max: i64,
    },
    #[error("{field} must be 1 to {MAX_NAME_LEN} bytes without control characters")]
    InvalidName { field: &'static str },
    #[error("{0}")]
    InvalidWindow(&'static str),
    #[error("unknown SKU {0}: send its catalog event first")]
    UnknownSku(String),
    #[error("currency {got} does not match the catalog currency {catalog} of the SKU")]
    CurrencyMismatch { got: Currency, catalog: Currency },
}

impl FeedError {
    /// The stable API error code.
    pub fn code(&self) -> &'static str {
        match self {
            FeedError::UnknownFeed(_) => "unknown_feed",
            FeedError::MalformedJson(_) => "malformed_json",
            FeedError::MissingEventId => "missing_event_id",
            FeedError::InvalidEvent(_) => "invalid_event",
            FeedError::InvalidSku(_) => "invalid_sku",
            FeedError::UnknownCurrency(_) => "unknown_currency",
            FeedError::MissingField { .. } => "missing_field",
            FeedError::NegativeAmount { .. } => "negative_amount",
            FeedError::OutOfRange { .. } => "out_of_range",
            FeedError::InvalidName { .. } => "invalid_name",
            FeedError::InvalidWindow(_) => "invalid_window",
            FeedError::UnknownSku(_) => "unknown_sku",
            FeedError::CurrencyMismatch { .. } => "currency_mismatch",
        }
    }

    /// The HTTP status for the error.
    pub fn http_status(&self) -> u16 {
        match self {
            FeedError::UnknownFeed(_) => 404,
            FeedError::UnknownSku(_) | FeedError::CurrencyMismatch { .. } => 422,
            _ => 400,
        }
    }
}

/// Parses and validates one JSON event of `feed`.
pub fn parse_event(feed: FeedKind, body: &[u8]) -> Result<FeedEvent, FeedError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| FeedError::MalformedJson(e.to_string()))?;
    let object = value
        .as_object()
        .ok_or_else(|| FeedError::InvalidEvent("an event is a JSON object".into()))?;
    match object.get("event_id") {
        Some(Value::String(id)) if !id.is_empty() => check_name("event_id", id)?,
        _ => return Err(FeedError::MissingEventId),
    }
    // Name the two most common mistakes precisely before serde's generic messages.
    if let Some(Value::String(sku)) = object.get("sku") {
        Sku::new(sku).map_err(|e| FeedError::InvalidSku(e.to_string()))?;
    }
    if let Some(Value::String(code)) = object.get("currency") {
        Currency::parse(code).map_err(|e| FeedError::UnknownCurrency(e.to_string()))?;
    }
    let event = match feed {
        FeedKind::Catalog => FeedEvent::Catalog(typed(value)?),
        FeedKind::Cost => FeedEvent::Cost(typed(value)?),
        FeedKind::Competitor => FeedEvent::Competitor(typed(value)?),
        FeedKind::Inventory => FeedEvent::Inventory(typed(value)?),
        FeedKind::Sales => FeedEvent::Sales(typed(value)?),
        FeedKind::Promotions => FeedEvent::Promotions(typed(value)?),
    };
    check(&event)?;
    Ok(event)
}

fn typed<T: DeserializeOwned>(value: Value) -> Result<T, FeedError> {
    serde_json::from_value(value).map_err(|e| FeedError::InvalidEvent(e.to_string()))
}

fn check_name(field: &'static str, value: &str) -> Result<(), FeedError> {
    if value.is_empty() || value.len() > MAX_NAME_LEN || value.chars().any(char::is_control) {
        return Err(FeedError::InvalidName { field });
    }
    Ok(())
}

fn check_range(field: &'static str, value: i64, min: i64, max: i64) -> Result<(), FeedError> {
    if value < 0 && min >= 0 {
        return Err(FeedError::NegativeAmount { field, value });
    }
    if !(min..=max).contains(&value) {
        return Err(FeedError::OutOfRange {
            field,
            value,
            min,
            max,
        });
    }
    Ok(())
}

fn check_amount(field: &'static str, value: i64) -> Result<(), FeedError> {
    check_range(field, value, 0, MAX_AMOUNT_MINOR)
}

fn check_price(field: &'static str, value: i64) -> Result<(), FeedError> {
    check_range(field, value, 1, MAX_AMOUNT_MINOR)
}

fn check_time(field: &'static str, value: i64) -> Result<(), FeedError> {
    check_range(field, value, MIN_TIME_MS, MAX_TIME_MS)
}

fn check(event: &FeedEvent) -> Result<(), FeedError> {
    check_time("occurred_at_ms", event.occurred_at_ms())?;
    match event {
        FeedEvent::Catalog(e) => {
            check_name("category", &e.category)?;
            check_price("list_price_minor", e.list_price_minor)?;
            check_range("tax_rate_bp", e.tax_rate_bp, 0, MAX_TAX_RATE_BP)?;
            check_amount("logistics_minor", e.logistics_minor)?;
            if let Some(floor) = e.floor_minor {
                check_amount("floor_minor", floor)?;
            }
            if let Some(ceiling) = e.ceiling_minor {
                check_price("ceiling_minor", ceiling)?;
            }
            if let (Some(floor), Some(ceiling)) = (e.floor_minor, e.ceiling_minor) {
                if floor > ceiling {
                    return Err(FeedError::InvalidWindow(
                        "floor_minor is above ceiling_minor",
                    ));
                }
            }
        }
        FeedEvent::Cost(e) => {
            check_name("vendor", &e.vendor)?;
            check_amount("cost_minor", e.cost_minor)?;
            if let Some(logistics) = e.logistics_minor {
                check_amount("logistics_minor", logistics)?;
            }
            check_time("effective_at_ms", e.effective_at_ms)?;
        }
        FeedEvent::Competitor(e) => {
            check_name("competitor", &e.competitor)?;
            check_price("price_minor", e.price_minor)?;
        }
        FeedEvent::Inventory(e) => {
            let min = match e.kind {
                InventoryKind::OnHand => 0,
                InventoryKind::StockIn | InventoryKind::StockOut => 1,
            };
            check_range("quantity", e.quantity, min, MAX_STOCK)?;
        }
        FeedEvent::Sales(e) => {
            check_range("quantity", e.quantity, 1, MAX_SALE_QUANTITY)?;
        }
        FeedEvent::Promotions(e) => {
            check_name("promotion_id", &e.promotion_id)?;
            if e.action == PromotionAction::Upsert {
                const CONTEXT: &str = "a promotion upsert";
                let missing = |field| FeedError::MissingField {
                    field,
                    context: CONTEXT,
                };
                let label = e.label.as_deref().ok_or_else(|| missing("label"))?;
                if label.is_empty() || label.len() > 200 || label.chars().any(char::is_control) {
                    return Err(FeedError::InvalidName { field: "label" });
                }
                match e.discount.ok_or_else(|| missing("discount"))? {
                    Discount::PercentBp(bp) => check_range("discount.value", bp, 1, 9_999)?,
                    Discount::AmountMinor(amount) => check_price("discount.value", amount)?,
                }
                let starts = e.starts_at_ms.ok_or_else(|| missing("starts_at_ms"))?;
                let ends = e.ends_at_ms.ok_or_else(|| missing("ends_at_ms"))?;
                check_time("starts_at_ms", starts)?;
                check_time("ends_at_ms", ends)?;
                if ends <= starts {
                    return Err(FeedError::InvalidWindow(
                        "ends_at_ms must be after starts_at_ms",
                    ));
                }
                if let Some(limit) = e.max_per_customer {
                    check_range("max_per_customer", limit, 1, MAX_SALE_QUANTITY)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_790_000_000_000;

    fn parse(feed: FeedKind, json: &str) -> Result<FeedEvent, FeedError> {
        parse_event(feed, json.as_bytes())
    }

    #[test]
    fn accepts_a_well_formed_event_of_every_feed() {
        let cases = [
            (
                FeedKind::Catalog,
                format!(
                    r#"{{"event_id":"c1","sku":"A-1","category":"snacks","currency":"EUR","list_price_minor":1500,"tax_rate_bp":2000,"logistics_minor":50,"occurred_at_ms":{T}}}"#
                ),
            ),
            (
                FeedKind::Cost,
                format!(
                    r#"{{"event_id":"k1","sku":"A-1","vendor":"acme","currency":"EUR","cost_minor":600,"effective_at_ms":{T},"occurred_at_ms":{T}}}"#
                ),
            ),
            (
                FeedKind::Competitor,
                format!(
                    r#"{{"event_id":"m1","sku":"A-1","competitor":"rival","currency":"EUR","price_minor":1400,"occurred_at_ms":{T}}}"#
                ),
            ),
            (
                FeedKind::Inventory,
                format!(
                    r#"{{"event_id":"i1","sku":"A-1","store":"s1","kind":"on_hand","quantity":0,"occurred_at_ms":{T}}}"#
                ),
            ),
            (
                FeedKind::Sales,
                format!(
                    r#"{{"event_id":"s1","sku":"A-1","kind":"pos_sale","quantity":2,"occurred_at_ms":{T}}}"#
                ),
            ),
            (
                FeedKind::Promotions,
                format!(
                    r#"{{"event_id":"p1","promotion_id":"flash","sku":"A-1","action":"upsert","label":"Flash -20%","discount":{{"kind":"percent_bp","value":2000}},"starts_at_ms":{T},"ends_at_ms":{},"occurred_at_ms":{T}}}"#,
                    T + 3_600_000
                ),
            ),
        ];
        for (feed, json) in cases {
            let event = parse(feed, &json).unwrap_or_else(|e| panic!("{feed}: {e}"));
            assert_eq!(event.kind(), feed);
            assert_eq!(event.sku().as_str(), "A-1");
            // The normalised JSON parses back to the same event.
            assert_eq!(parse(feed, &event.to_feed_json()).unwrap(), event);
        }
    }

    #[test]
    fn rejections_carry_precise_codes() {
        let cases = [
            (FeedKind::Cost, "{not json".to_owned(), "malformed_json"),
            (FeedKind::Cost, "[1,2]".to_owned(), "invalid_event"),
            (FeedKind::Cost, format!(r#"{{"sku":"A","vendor":"v","currency":"EUR","cost_minor":1,"effective_at_ms":{T},"occurred_at_ms":{T}}}"#), "missing_event_id"),
            (FeedKind::Cost, format!(r#"{{"event_id":"","sku":"A","vendor":"v","currency":"EUR","cost_minor":1,"effective_at_ms":{T},"occurred_at_ms":{T}}}"#), "missing_event_id"),
            (FeedKind::Cost, format!(r#"{{"event_id":"e","sku":"A B","vendor":"v","currency":"EUR","cost_minor":1,"effective_at_ms":{T},"occurred_at_ms":{T}}}"#), "invalid_sku"),
            (FeedKind::Cost, format!(r#"{{"event_id":"e","sku":"A","vendor":"v","currency":"EURO","cost_minor":1,"effective_at_ms":{T},"occurred_at_ms":{T}}}"#), "unknown_currency"),
            (FeedKind::Cost, format!(r#"{{"event_id":"e","sku":"A","vendor":"v","currency":"EUR","cost_minor":-5,"effective_at_ms":{T},"occurred_at_ms":{T}}}"#), "negative_amount"),
            (FeedKind::Cost, format!(r#"{{"event_id":"e","sku":"A","vendor":"v","currency":"EUR","cost_minor":"5","effective_at_ms":{T},"occurred_at_ms":{T}}}"#), "invalid_event"),
            (FeedKind::Cost, format!(r#"{{"event_id":"e","sku":"A","vendor":"v","currency":"EUR","cost_minor":5,"effective_at_ms":{T},"occurred_at_ms":{T},"colour":"red"}}"#), "invalid_event"),
            (FeedKind::Cost, r#"{"event_id":"e","sku":"A","vendor":"v","currency":"EUR","cost_minor":5,"effective_at_ms":5,"occurred_at_ms":5}"#.to_owned(), "out_of_range"),
            (FeedKind::Catalog, format!(r#"{{"event_id":"e","sku":"A","category":"c","currency":"EUR","list_price_minor":0,"tax_rate_bp":2000,"occurred_at_ms":{T}}}"#), "out_of_range"),
            (FeedKind::Catalog, format!(r#"{{"event_id":"e","sku":"A","category":"c","currency":"EUR","list_price_minor":100,"tax_rate_bp":9000,"occurred_at_ms":{T}}}"#), "out_of_range"),
            (FeedKind::Sales, format!(r#"{{"event_id":"e","sku":"A","kind":"pos_sale","quantity":0,"occurred_at_ms":{T}}}"#), "out_of_range"),
            (FeedKind::Sales, format!(r#"{{"event_id":"e","sku":"A","kind":"teleport","quantity":1,"occurred_at_ms":{T}}}"#), "invalid_event"),
            (FeedKind::Promotions, format!(r#"{{"event_id":"e","promotion_id":"p","sku":"A","action":"upsert","label":"x","starts_at_ms":{T},"ends_at_ms":{T},"occurred_at_ms":{T}}}"#), "missing_field"),
            (FeedKind::Promotions, format!(r#"{{"event_id":"e","promotion_id":"p","sku":"A","action":"upsert","label":"x","discount":{{"kind":"percent_bp","value":500}},"starts_at_ms":{T},"ends_at_ms":{T},"occurred_at_ms":{T}}}"#), "invalid_window"),
        ];
        for (feed, json, code) in cases {
            let err = parse(feed, &json).expect_err(&json);
            assert_eq!(err.code(), code, "{json}: {err}");
            assert_eq!(err.http_status(), 400);
        }
    }

    #[test]
    fn serde_messages_name_the_offending_field() {
        let json = format!(
            r#"{{"event_id":"e","sku":"A","vendor":"v","currency":"EUR","effective_at_ms":{T},"occurred_at_ms":{T}}}"#
        );
        let err = parse(FeedKind::Cost, &json).unwrap_err();
        assert!(err.to_string().contains("cost_minor"), "{err}");
    }

    #[test]
    fn unknown_feed_is_a_404() {
        let err = "prices".parse::<FeedKind>().unwrap_err();
        assert_eq!((err.code(), err.http_status()), ("unknown_feed", 404));
        assert_eq!("sales".parse::<FeedKind>().unwrap(), FeedKind::Sales);
    }
}
