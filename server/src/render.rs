//! Rendering answers: JSON written straight into a byte buffer (no serde on the read
//! path), flatbuffer `PriceAnswer`s, and the error shape.
//!
//! A price answer names the entry that answered (its store, channel and segment, `*`
//! where it is chain-wide), the unit price to charge now (`price_minor`: the active
//! promotion's price if any, never below `floor_minor`), the regular `list_price_minor`,
//! the active promotion or `null`, `valid_until` (when this answer may change without a
//! new snapshot: a promotion or price window opening or closing; `null` if only a new
//! version can change it) and the `snapshot_version`.
//!
//! When the snapshot carries promotions, the price and the promotion come from the
//! promotion set ([`Snapshot::shelf`]: the best automatic item-level promotions for the
//! entry's store, channel and segment, clamped at the floor) instead of the entry's own
//! promotion tag, so they change the moment a promotion starts or ends. `valid_until`
//! then also stops at the shown promotion's end (a set promotion's start is not foreseen:
//! the ETag changes with the price).

use std::borrow::Cow;

use edgeprice_schemas::fb;
use flatbuffers::{FlatBufferBuilder, WIPOffset};

use crate::snapshot::{json_escape, Promo, Query, Resolved, Shelf, Snapshot};

/// `{"error":{"code":…,"message":…}}`, with `current_version` when a publisher needs it.
pub fn error_body(code: &str, message: &str, current_version: Option<u64>) -> String {
    let mut body = format!(
        r#"{{"error":{{"code":"{}","message":"{}""#,
        json_escape(code),
        json_escape(message)
    );
    if let Some(v) = current_version {
        body.push_str(&format!(r#","current_version":{v}"#));
    }
    body.push_str("}}");
    body
}

fn push_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

fn push_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Appends a JSON string; `value` must already be JSON-safe (validated keys, currency
/// codes and pre-escaped promotion texts are).
fn push_str(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    out.extend_from_slice(value.as_bytes());
    out.push(b'"');
}

fn push_time(out: &mut Vec<u8>, ms: i64) {
    if ms == i64::MAX || ms == i64::MIN {
        out.extend_from_slice(b"null");
    } else {
        out.push(b'"');
        write_rfc3339(out, ms);
        out.push(b'"');
    }
}

/// The price, promotion (with its shown price) and expiry an answer shows.
fn shown<'a>(
    r: &'a Resolved<'_>,
    shelf: Option<&'a Shelf>,
    now_ms: i64,
) -> (i64, Option<(&'a Promo, i64)>, i64) {
    let e = &r.variant.entry;
    match shelf {
        Some(shelf) => {
            let promotion = shelf.promotion.as_ref().map(|(p, price)| (&**p, *price));
            let valid_until = promotion.map_or(r.valid_until_ms, |(p, _)| {
                r.valid_until_ms.min(p.ends_at_ms)
            });
            (shelf.price_minor, promotion, valid_until)
        }
        None => (
            e.effective_price_at(now_ms),
            e.active_promotion(now_ms)
                .map(|p| (p, p.price_minor.max(e.floor_minor))),
            r.valid_until_ms,
        ),
    }
}

/// One price object. `snapshot_version` is omitted inside batches (the batch has it).
pub fn price_json(
    out: &mut Vec<u8>,
    snapshot: &Snapshot,
    r: &Resolved<'_>,
    now_ms: i64,
    snapshot_version: Option<u64>,
) {
    let shelf = snapshot.shelf(r, now_ms);
    price_json_with(out, snapshot, r, now_ms, snapshot_version, shelf.as_ref());
}

/// [`price_json`] with the shelf price already computed (`None`: no promotion set).
pub fn price_json_with(
    out: &mut Vec<u8>,
    snapshot: &Snapshot,
    r: &Resolved<'_>,
    now_ms: i64,
    snapshot_version: Option<u64>,
    shelf: Option<&Shelf>,
) {
    let (price_minor, promotion, valid_until_ms) = shown(r, shelf, now_ms);
    let dict = snapshot.dictionary();
    let v = r.variant;
    let e = &v.entry;
    out.extend_from_slice(b"{\"sku\":");
    push_str(out, &r.sku.sku);
    out.extend_from_slice(b",\"store\":");
    push_str(out, dict.name(v.store));
    out.extend_from_slice(b",\"channel\":");
    push_str(out, dict.name(v.channel));
    out.extend_from_slice(b",\"segment\":");
    push_str(out, dict.name(v.segment));
    out.extend_from_slice(b",\"currency\":");
    push_str(out, e.currency.as_str());
    out.extend_from_slice(b",\"price_minor\":");
    push_i64(out, price_minor);
    out.extend_from_slice(b",\"list_price_minor\":");
    push_i64(out, e.list_price_minor);
    out.extend_from_slice(b",\"floor_minor\":");
    push_i64(out, e.floor_minor);
    out.extend_from_slice(b",\"promotion\":");
    match promotion {
        Some((p, promo_price)) => {
            out.extend_from_slice(b"{\"id\":");
            push_str(out, &p.id_json);
            out.extend_from_slice(b",\"label\":");
            push_str(out, &p.label_json);
            out.extend_from_slice(b",\"price_minor\":");
            push_i64(out, promo_price);
            out.extend_from_slice(b",\"starts_at\":");
            out.extend_from_slice(p.starts_at_json.as_bytes());
            out.extend_from_slice(b",\"ends_at\":");
            out.extend_from_slice(p.ends_at_json.as_bytes());
            out.push(b'}');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"valid_until\":");
    // Most answers that expire do so when their promotion ends: reuse its rendering.
    let tag = match shelf {
        Some(_) => promotion.map(|(p, _)| p),
        None => e.promotion.as_deref(),
    };
    match tag {
        Some(p) if p.ends_at_ms == valid_until_ms => {
            out.extend_from_slice(p.ends_at_json.as_bytes())
        }
        Some(p) if p.starts_at_ms == valid_until_ms => {
            out.extend_from_slice(p.starts_at_json.as_bytes())
        }
        _ => push_time(out, valid_until_ms),
    }
    if let Some(version) = snapshot_version {
        out.extend_from_slice(b",\"snapshot_version\":");
        push_u64(out, version);
    }
    out.push(b'}');
}

/// `{"snapshot_version":V,"prices":[…],"missing":[…]}`, all from one snapshot.
pub fn batch_json(
    out: &mut Vec<u8>,
    snapshot: &Snapshot,
    skus: &[Cow<'_, str>],
    query: Query,
    now_ms: i64,
) {
    out.extend_from_slice(b"{\"snapshot_version\":");
    push_u64(out, snapshot.version());
    out.extend_from_slice(b",\"prices\":[");
    let mut missing: Vec<&str> = Vec::new();
    let mut first = true;
    for sku in skus {
        match snapshot.resolve(sku, query, now_ms) {
            Some(resolved) => {
                if !first {
                    out.push(b',');
                }
                first = false;
                price_json(out, snapshot, &resolved, now_ms, None);
            }
            None => missing.push(sku),
        }
    }
    out.extend_from_slice(b"],\"missing\":[");
    for (i, sku) in missing.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_str(out, sku);
    }
    out.extend_from_slice(b"]}");
}

/// One `PriceAnswer` table; `snapshot_version` 0 inside batches.
pub fn price_answer<'b>(
    fbb: &mut FlatBufferBuilder<'b>,
    snapshot: &Snapshot,
    r: &Resolved<'_>,
    now_ms: i64,
    snapshot_version: u64,
) -> WIPOffset<fb::PriceAnswer<'b>> {
    let shelf = snapshot.shelf(r, now_ms);
    price_answer_with(fbb, snapshot, r, now_ms, snapshot_version, shelf.as_ref())
}

/// [`price_answer`] with the shelf price already computed.
pub fn price_answer_with<'b>(
    fbb: &mut FlatBufferBuilder<'b>,
    snapshot: &Snapshot,
    r: &Resolved<'_>,
    now_ms: i64,
    snapshot_version: u64,
    shelf: Option<&Shelf>,
) -> WIPOffset<fb::PriceAnswer<'b>> {
    let (price_minor, promotion, valid_until_ms) = shown(r, shelf, now_ms);
    let dict = snapshot.dictionary();
    let v = r.variant;
    let e = &v.entry;
    let sku = fbb.create_string(&r.sku.sku);
    let store = fbb.create_string(dict.name(v.store));
    let channel = fbb.create_string(dict.name(v.channel));
    let segment = fbb.create_string(dict.name(v.segment));
    let currency = fbb.create_string(e.currency.as_str());
    let promotion = promotion.map(|(p, promo_price)| {
        let id = fbb.create_string(&p.id);
        let label = fbb.create_string(&p.label);
        fb::Promotion::create(
            fbb,
            &fb::PromotionArgs {
                id: Some(id),
                label: Some(label),
                price_minor: promo_price,
                starts_at_ms: p.starts_at_ms,
                ends_at_ms: p.ends_at_ms,
            },
        )
    });
    fb::PriceAnswer::create(
        fbb,
        &fb::PriceAnswerArgs {
            sku: Some(sku),
            store: Some(store),
            channel: Some(channel),
            segment: Some(segment),
            currency: Some(currency),
            price_minor,
            list_price_minor: e.list_price_minor,
            floor_minor: e.floor_minor,
            promotion,
            valid_until_ms: if valid_until_ms == i64::MAX {
                0
            } else {
                valid_until_ms
            },
            snapshot_version,
        },
    )
}

/// `ms` as a JSON string `"YYYY-MM-DDTHH:MM:SS.mmmZ"`, or `null` when open-ended.
pub fn rfc3339_json(ms: i64) -> String {
    let mut out = Vec::with_capacity(26);
    push_time(&mut out, ms);
    String::from_utf8(out).expect("ASCII")
}

/// Writes `ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn write_rfc3339(out: &mut Vec<u8>, ms: i64) {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let two = |out: &mut Vec<u8>, v: i64| {
        out.push(b'0' + (v / 10) as u8);
        out.push(b'0' + (v % 10) as u8);
    };
    push_i64(out, year);
    out.push(b'-');
    two(out, month);
    out.push(b'-');
    two(out, day);
    out.push(b'T');
    two(out, sod / 3600);
    out.push(b':');
    two(out, sod % 3600 / 60);
    out.push(b':');
    two(out, sod % 60);
    out.push(b'.');
    out.push(b'0' + (millis / 100) as u8);
    two(out, millis % 100);
    out.push(b'Z');
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`).
pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc(ms: i64) -> String {
        let mut out = Vec::new();
        write_rfc3339(&mut out, ms);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn formats_utc_timestamps() {
        assert_eq!(rfc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        assert_eq!(rfc(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn error_bodies_are_valid_json() {
        let body = error_body("bad", "a \"quoted\" thing", Some(4));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "bad");
        assert_eq!(v["error"]["message"], "a \"quoted\" thing");
        assert_eq!(v["error"]["current_version"], 4);
    }
}
