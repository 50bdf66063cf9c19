//! Promotions managed by the control plane: the book of definitions (the full model of
//! `edgeprice_pricing::promo`), published to every edge as the snapshot's promotions
//! document, and the dry run that shows what a definition would change before it goes
//! out.
//!
//! The book is one JSON document in the `meta` table, written with the audit record of
//! each change. Every change raises the book's version (quotes carry it) and the
//! changed promotion's revision. Killed promotions (kill switches) stay in the book but
//! are left out of the published document.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use chrono_tz::Tz;
use edgeprice_pricing::promo::{
    evaluate, shelf_price, CartContext, CartLine, CouponInput, Promotion, PromotionSet,
    StackingPolicy,
};
use edgeprice_pricing::{Currency, Dimension, Sku};
use edgeprice_schemas::admin::{
    DryRunCart, DryRunCartResult, DryRunReport, DryRunRequest, DryRunSku, PromotionRow, SkuRow,
};
use edgeprice_schemas::codec::PromotionsDoc;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use super::controls::Controls;
use crate::store::{self, StoreError};

const BOOK_KEY: &str = "promotion_book";

/// Definition events remembered for deduplication.
const REMEMBERED_EVENTS: usize = 10_000;

/// Most promotions the book holds.
pub const MAX_PROMOTIONS: usize = 100_000;

/// Every promotion the control plane manages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PromotionBook {
    /// Raised on every change.
    pub version: u64,
    pub policy: StackingPolicy,
    /// By id.
    pub promotions: BTreeMap<String, Promotion>,
    /// Shipping fee of a cart before free-shipping promotions, minor units.
    pub shipping_fee_minor: i64,
    /// Ids of the last definition events applied (oldest first), so a resent event is
    /// acknowledged and not applied twice.
    pub applied_events: VecDeque<String>,
}

impl PromotionBook {
    /// Reads the book (empty when nothing was ever defined).
    pub fn load(conn: &Connection) -> Result<PromotionBook, StoreError> {
        match store::meta_get(conn, BOOK_KEY)? {
            None => Ok(PromotionBook::default()),
            Some(text) => serde_json::from_str(&text)
                .map_err(|e| StoreError::Corrupt(format!("promotion book: {e}"))),
        }
    }

    /// Writes the book inside the caller's transaction.
    pub fn save(&self, conn: &Connection) -> Result<(), StoreError> {
        let text = serde_json::to_string(self)
            .map_err(|e| StoreError::Corrupt(format!("promotion book: {e}")))?;
        store::meta_set(conn, BOOK_KEY, &text)
    }

    pub fn len(&self) -> usize {
        self.promotions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.promotions.is_empty()
    }

    /// Checks a definition and the book it would make: the definition's own rules, and
    /// that the whole set still compiles (unique coupon codes, the policy's groups).
    pub fn check(&self, promotion: &Promotion) -> Result<(), String> {
        promotion.validate().map_err(|e| e.to_string())?;
        if !self.promotions.contains_key(&promotion.id) && self.promotions.len() >= MAX_PROMOTIONS {
            return Err(format!("the book is full ({MAX_PROMOTIONS} promotions)"));
        }
        self.with(promotion.clone())
            .compile(&Controls::default())
            .map(|_| ())
    }

    /// Whether a definition event was applied already.
    pub fn has_applied(&self, event_id: &str) -> bool {
        self.applied_events.iter().any(|e| e == event_id)
    }

    /// Remembers an applied definition event.
    pub fn remember(&mut self, event_id: &str) {
        if self.applied_events.len() == REMEMBERED_EVENTS {
            self.applied_events.pop_front();
        }
        self.applied_events.push_back(event_id.to_owned());
    }

    /// The book with `promotion` added or replacing the one with its id.
    pub fn with(&self, promotion: Promotion) -> PromotionBook {
        let mut book = self.clone();
        book.promotions.insert(promotion.id.clone(), promotion);
        book
    }

    /// The live promotions (not killed), compiled.
    pub fn compile(&self, controls: &Controls) -> Result<PromotionSet, String> {
        PromotionSet::compile(self.version, self.live(controls), self.policy.clone())
            .map_err(|e| e.to_string())
    }

    fn live(&self, controls: &Controls) -> Vec<Promotion> {
        self.promotions
            .values()
            .filter(|p| !controls.promotion_killed(&p.id))
            .cloned()
            .collect()
    }

    /// The document the edges get: live promotions and SKU categories.
    pub fn document(
        &self,
        controls: &Controls,
        categories: BTreeMap<String, String>,
    ) -> Arc<PromotionsDoc> {
        Arc::new(PromotionsDoc {
            version: self.version,
            policy: self.policy.clone(),
            promotions: self.live(controls),
            categories,
            time_zone: None,
            store_time_zones: BTreeMap::new(),
            shipping_fee_minor: self.shipping_fee_minor,
        })
    }

    /// The SKUs (of `rows`) promotion `id` can change: listed SKUs, SKUs of listed
    /// categories, every SKU for item-level rules on all lines; none for cart-level and
    /// shipping rules (they change baskets, not SKUs).
    pub fn targeted<'r>(&self, id: &str, rows: &'r [SkuRow]) -> Vec<&'r str> {
        use edgeprice_pricing::promo::{Level, Target};
        let Some(promotion) = self.promotions.get(id) else {
            return Vec::new();
        };
        if promotion.rule.level() != Level::Item {
            return Vec::new();
        }
        rows.iter()
            .filter(|row| match &promotion.target {
                Target::All => true,
                Target::Skus { skus } => skus.iter().any(|s| s.as_str() == row.sku),
                Target::Categories { categories } => categories.contains(&row.category),
            })
            .map(|row| row.sku.as_str())
            .collect()
    }

    /// The promotions as the admin API lists them: the book's, then the per-SKU
    /// promotions of the promotions feed (`tagged`: promotion id → SKUs carrying it).
    pub fn rows(
        &self,
        controls: &Controls,
        now_ms: i64,
        sku_rows: &[SkuRow],
        tagged: &BTreeMap<String, u64>,
    ) -> Vec<PromotionRow> {
        let book = self.promotions.values().map(|p| {
            let conditions = &p.conditions;
            PromotionRow {
                id: p.id.clone(),
                name: p.label.clone(),
                kind: p.rule.kind().as_str().to_owned(),
                active: conditions.starts_at_ms.is_none_or(|s| s <= now_ms)
                    && conditions.ends_at_ms.is_none_or(|e| now_ms < e),
                killed: controls.promotion_killed(&p.id),
                skus: self.targeted(&p.id, sku_rows).len() as u64,
                starts_at_ms: conditions.starts_at_ms,
                ends_at_ms: conditions.ends_at_ms,
            }
        });
        let per_sku = tagged
            .iter()
            .filter(|(id, _)| !self.promotions.contains_key(*id))
            .map(|(id, skus)| PromotionRow {
                id: id.clone(),
                name: id.clone(),
                kind: "per_sku".into(),
                active: true,
                killed: controls.promotion_killed(id),
                skus: *skus,
                starts_at_ms: None,
                ends_at_ms: None,
            });
        book.chain(per_sku).collect()
    }
}

/// What a definition event does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefinitionAction {
    /// Create or replace the promotion with `definition`.
    Define,
    /// End (remove) the promotion.
    Retire,
}

/// A promotion definition sent on the promotions feed (`POST /v1/feeds/promotions`),
/// the feed counterpart of `PUT`/`DELETE /v1/admin/promotions/{id}`; see
/// `schemas/json/promotion_definitions.schema.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefinitionEvent {
    pub event_id: String,
    pub promotion_id: String,
    pub action: DefinitionAction,
    /// The full definition (`edgeprice_pricing::promo::Promotion`); required to define.
    #[serde(default)]
    pub definition: Option<Promotion>,
    /// Why, for the audit log.
    #[serde(default)]
    pub reason: Option<String>,
    pub occurred_at_ms: i64,
}

impl DefinitionEvent {
    /// Whether a promotions-feed body is a definition event (its `action` is `define`
    /// or `retire`) rather than a per-SKU promotion event.
    pub fn is_definition(body: &[u8]) -> bool {
        #[derive(Deserialize)]
        struct Probe {
            action: Option<String>,
        }
        serde_json::from_slice::<Probe>(body)
            .ok()
            .and_then(|p| p.action)
            .is_some_and(|a| a == "define" || a == "retire")
    }

    /// Parses and checks a definition event.
    pub fn parse(body: &[u8]) -> Result<DefinitionEvent, String> {
        let event: DefinitionEvent =
            serde_json::from_slice(body).map_err(|e| format!("invalid definition event: {e}"))?;
        if event.event_id.is_empty() || event.event_id.len() > 128 {
            return Err("event_id must be 1 to 128 bytes".into());
        }
        match (&event.action, &event.definition) {
            (DefinitionAction::Define, None) => {
                return Err("definition is required to define".into())
            }
            (DefinitionAction::Define, Some(d)) if d.id != event.promotion_id => {
                return Err(format!(
                    "the definition is of {}, the event names {}",
                    d.id, event.promotion_id
                ))
            }
            (DefinitionAction::Retire, Some(_)) => {
                return Err("a retire event carries no definition".into())
            }
            _ => {}
        }
        Ok(event)
    }
}

fn line_of(row: &SkuRow) -> Option<(CartLine, Currency)> {
    let currency = Currency::parse(&row.currency).ok()?;
    Some((
        CartLine {
            sku: Sku::new(&row.sku).ok()?,
            quantity: 1,
            unit_list_price_minor: row.list_minor,
            unit_price_minor: row.price_minor,
            unit_floor_minor: row.floor_minor.unwrap_or(0),
            category: Some(row.category.clone()).filter(|c| !c.is_empty()),
        },
        currency,
    ))
}

fn dimension(value: &Option<String>) -> Dimension {
    value
        .as_deref()
        .and_then(|v| Dimension::new(v).ok())
        .unwrap_or_else(Dimension::any)
}

/// Prices every SKU's shelf and the given carts under the book as it is and with the
/// request's promotion, and reports the differences (see [`DryRunRequest`]).
pub fn dry_run(
    book: &PromotionBook,
    controls: &Controls,
    rows: &[SkuRow],
    request: &DryRunRequest,
    now_ms: i64,
) -> Result<DryRunReport, String> {
    book.check(&request.promotion)?;
    let before = book.compile(controls)?;
    let after = book.with(request.promotion.clone()).compile(controls)?;
    let at_ms = request.at_ms.unwrap_or(now_ms);
    let conditions = &request.promotion.conditions;
    // Shelf prices where the promotion can apply: its first store/channel/segment.
    let first = |values: &Vec<String>| values.first().cloned();
    let store = dimension(&first(&conditions.stores));
    let channel = dimension(&first(&conditions.channels));
    let segment = dimension(&first(&conditions.segments));
    let limit = request.limit.unwrap_or(100);
    let mut skus = Vec::new();
    let (mut changed, mut floor_hits) = (0u64, 0u64);
    for row in rows {
        let Some((line, currency)) = line_of(row) else {
            continue;
        };
        let mut ctx = CartContext::new(currency, at_ms, Tz::UTC);
        ctx.store = store.clone();
        ctx.channel = channel.clone();
        ctx.segment = segment.clone();
        ctx.explain = false;
        if conditions.members_only {
            ctx.customer_id = Some("dry-run-member".into());
        }
        let (Ok(old), Ok(new)) = (
            shelf_price(&before, &line, &ctx),
            shelf_price(&after, &line, &ctx),
        ) else {
            continue;
        };
        if old.unit_price_minor == new.unit_price_minor && old.clamped == new.clamped {
            continue;
        }
        changed += 1;
        floor_hits += u64::from(new.clamped);
        if skus.len() < limit {
            skus.push(DryRunSku {
                sku: row.sku.clone(),
                before_minor: old.unit_price_minor,
                after_minor: new.unit_price_minor,
                floor_minor: line.unit_floor_minor,
                at_floor: new.clamped,
            });
        }
    }
    let by_sku: BTreeMap<&str, &SkuRow> = rows.iter().map(|r| (r.sku.as_str(), r)).collect();
    let carts = request
        .carts
        .iter()
        .map(|cart| {
            price_cart(
                &before,
                &after,
                &by_sku,
                cart,
                at_ms,
                book.shipping_fee_minor,
            )
        })
        .collect();
    Ok(DryRunReport {
        promotion_id: request.promotion.id.clone(),
        skus_changed: changed,
        floor_hits,
        skus,
        carts,
    })
}

fn price_cart(
    before: &PromotionSet,
    after: &PromotionSet,
    rows: &BTreeMap<&str, &SkuRow>,
    cart: &DryRunCart,
    at_ms: i64,
    shipping_fee_minor: i64,
) -> DryRunCartResult {
    let failed = |error: String| DryRunCartResult {
        before_total_minor: 0,
        after_total_minor: 0,
        clamped: Vec::new(),
        error: Some(error),
    };
    let mut lines = Vec::with_capacity(cart.lines.len());
    let mut currency = None;
    for (sku, quantity) in &cart.lines {
        let Some((mut line, line_currency)) = rows.get(sku.as_str()).and_then(|r| line_of(r))
        else {
            return failed(format!("unknown SKU {sku}"));
        };
        line.quantity = *quantity;
        if currency.is_some_and(|c| c != line_currency) {
            return failed("the cart mixes currencies".into());
        }
        currency = Some(line_currency);
        lines.push(line);
    }
    let Some(currency) = currency else {
        return failed("the cart has no lines".into());
    };
    let mut ctx = CartContext::new(currency, at_ms, Tz::UTC);
    ctx.store = dimension(&cart.store);
    ctx.channel = dimension(&cart.channel);
    ctx.segment = dimension(&cart.segment);
    ctx.customer_id = cart.customer_id.clone();
    ctx.coupons = cart.coupons.iter().map(|c| CouponInput::new(c)).collect();
    ctx.shipping_fee_minor = shipping_fee_minor;
    ctx.explain = false;
    match (
        evaluate(before, &lines, &ctx),
        evaluate(after, &lines, &ctx),
    ) {
        (Ok(old), Ok(new)) => DryRunCartResult {
            before_total_minor: old.totals.total_minor,
            after_total_minor: new.totals.total_minor,
            clamped: new
                .clamps
                .iter()
                .filter_map(|c| c.sku.as_ref().map(|s| s.to_string()))
                .collect(),
            error: None,
        },
        (Err(err), _) | (_, Err(err)) => failed(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use edgeprice_pricing::promo::{Conditions, Rule, Stacking, Target};

    use super::*;

    fn promotion(id: &str, bp: u32) -> Promotion {
        serde_json::from_value(serde_json::json!({
            "id": id,
            "label": format!("{id} -{}%", bp / 100),
            "rule": {"type": "percent_off", "basis_points": bp},
            "target": {"type": "skus", "skus": ["SKU-1", "SKU-2"]},
        }))
        .expect("a valid definition")
    }

    fn row(sku: &str, price: i64, floor: i64) -> SkuRow {
        SkuRow {
            sku: sku.into(),
            category: "grocery".into(),
            currency: "EUR".into(),
            list_minor: price,
            price_minor: price,
            floor_minor: Some(floor),
            ..SkuRow::default()
        }
    }

    #[test]
    fn a_dry_run_lists_changed_skus_and_floor_hits() {
        let book = PromotionBook::default();
        let rows = vec![
            row("SKU-1", 1_000, 500),
            row("SKU-2", 1_000, 900),
            row("SKU-3", 1_000, 500),
        ];
        let request = DryRunRequest {
            promotion: promotion("spring", 2_000),
            carts: vec![DryRunCart {
                lines: vec![("SKU-1".into(), 2), ("SKU-3".into(), 1)],
                ..DryRunCart::default()
            }],
            at_ms: Some(0),
            limit: None,
        };
        let report = dry_run(&book, &Controls::default(), &rows, &request, 0).unwrap();
        assert_eq!(report.skus_changed, 2);
        assert_eq!(report.floor_hits, 1);
        let sku2 = report.skus.iter().find(|s| s.sku == "SKU-2").unwrap();
        assert_eq!((sku2.after_minor, sku2.at_floor), (900, true));
        let sku1 = report.skus.iter().find(|s| s.sku == "SKU-1").unwrap();
        assert_eq!(
            (sku1.before_minor, sku1.after_minor, sku1.at_floor),
            (1_000, 800, false)
        );
        assert_eq!(report.carts[0].before_total_minor, 3_000);
        assert_eq!(report.carts[0].after_total_minor, 2_600);
        assert!(report.carts[0].clamped.is_empty());
    }

    #[test]
    fn invalid_definitions_are_refused_with_the_reason() {
        let book = PromotionBook::default();
        let mut bad = promotion("bad", 2_000);
        bad.rule = Rule::PercentOff {
            basis_points: 20_000,
        };
        let err = book.check(&bad).unwrap_err();
        assert!(err.contains("basis"), "{err}");
        let _ = (Conditions::default(), Stacking::default(), Target::All);
    }

    /// `schemas/json/promotion_definitions.schema.json` and [`DefinitionEvent`] agree:
    /// its examples parse, every required field is required, every property is used.
    #[test]
    fn the_definition_schema_matches_the_event_type() {
        let path = format!(
            "{}/../schemas/json/promotion_definitions.schema.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let schema: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for example in schema["examples"].as_array().unwrap() {
            let body = example.to_string();
            assert!(DefinitionEvent::is_definition(body.as_bytes()));
            let event = DefinitionEvent::parse(body.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            if let Some(definition) = &event.definition {
                definition.validate().unwrap();
            }
            seen.extend(example.as_object().unwrap().keys().cloned());
            for field in schema["required"].as_array().unwrap() {
                let mut partial = example.clone();
                partial
                    .as_object_mut()
                    .unwrap()
                    .remove(field.as_str().unwrap());
                assert!(
                    DefinitionEvent::parse(partial.to_string().as_bytes()).is_err(),
                    "{field}"
                );
            }
        }
        let properties: std::collections::BTreeSet<String> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(seen, properties);
        let per_sku = r#"{"event_id":"e","promotion_id":"p","sku":"A","action":"upsert"}"#;
        assert!(!DefinitionEvent::is_definition(per_sku.as_bytes()));
        let retire_with_body = r#"{"event_id":"e","promotion_id":"p","action":"retire","definition":{},"occurred_at_ms":1}"#;
        assert!(DefinitionEvent::parse(retire_with_body.as_bytes()).is_err());
    }

    #[test]
    fn killed_promotions_leave_the_document() {
        let book = PromotionBook::default()
            .with(promotion("spring", 1_000))
            .with(promotion("summer", 1_500));
        let mut controls = Controls::default();
        controls
            .switches
            .push(edgeprice_schemas::admin::EngagedSwitch {
                switch: edgeprice_schemas::admin::Switch::Promotion {
                    id: "spring".into(),
                },
                by: "ops".into(),
                reason: "test".into(),
                since_ms: 0,
            });
        let doc = book.document(&controls, BTreeMap::new());
        assert_eq!(
            doc.promotions
                .iter()
                .map(|p| p.id.as_str())
                .collect::<Vec<_>>(),
            ["summer"]
        );
        doc.validate().unwrap();
        let skus = vec![SkuRow {
            sku: "SKU-1".into(),
            ..SkuRow::default()
        }];
        let tagged = BTreeMap::from([("flash".to_owned(), 3u64)]);
        let rows = book.rows(&controls, 0, &skus, &tagged);
        assert!(rows
            .iter()
            .any(|r| r.id == "spring" && r.killed && r.skus == 1));
        assert!(rows
            .iter()
            .any(|r| r.id == "flash" && r.kind == "per_sku" && r.skus == 3));
    }
}
