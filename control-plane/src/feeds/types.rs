//! The event types of the six feeds. Field names and units are the JSON contract; see
//! `schemas/json/`.

use edgeprice_pricing::{Currency, Dimension, Discount, Sku};
use serde::{Deserialize, Serialize};

use super::FeedKind;

/// A catalog entry: creates or replaces a SKU's reference data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEvent {
    /// Unique per event; a repeated id is processed once.
    pub event_id: String,
    pub sku: Sku,
    /// Category name; selects the pricing rules and guardrails.
    pub category: String,
    pub currency: Currency,
    /// The regular shelf price, minor units.
    pub list_price_minor: i64,
    /// Tax rate, basis points (2,000 = 20 %).
    pub tax_rate_bp: i64,
    /// Logistics cost per unit, minor units, without tax.
    #[serde(default)]
    pub logistics_minor: i64,
    /// MAP or regulatory minimum shelf price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor_minor: Option<i64>,
    /// Regulatory maximum shelf price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceiling_minor: Option<i64>,
    /// When the source produced the event.
    pub occurred_at_ms: i64,
}

/// A vendor cost update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostEvent {
    pub event_id: String,
    pub sku: Sku,
    pub vendor: String,
    pub currency: Currency,
    /// Cost per unit, minor units, without tax.
    pub cost_minor: i64,
    /// A new logistics cost per unit, if the vendor's terms changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logistics_minor: Option<i64>,
    /// From when the cost applies.
    pub effective_at_ms: i64,
    pub occurred_at_ms: i64,
}

/// A competitor's observed shelf price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompetitorEvent {
    pub event_id: String,
    pub sku: Sku,
    pub competitor: String,
    pub currency: Currency,
    pub price_minor: i64,
    pub occurred_at_ms: i64,
}

/// What an inventory event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InventoryKind {
    /// A stock count: `quantity` is the new on-hand figure.
    OnHand,
    /// Goods received: `quantity` is added.
    StockIn,
    /// Goods removed (shrink, transfer): `quantity` is subtracted.
    StockOut,
}

/// A stock movement or count for one SKU in one store (`*` for the central warehouse).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryEvent {
    pub event_id: String,
    pub sku: Sku,
    #[serde(default)]
    pub store: Dimension,
    pub kind: InventoryKind,
    /// Units.
    pub quantity: i64,
    pub occurred_at_ms: i64,
}

/// A demand signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SalesKind {
    View,
    CartAdd,
    CartRemove,
    Checkout,
    PosSale,
}

impl SalesKind {
    /// Whether the signal is a sale (units leave the shelf).
    pub fn is_sale(&self) -> bool {
        matches!(self, SalesKind::Checkout | SalesKind::PosSale)
    }
}

/// A POS sale or a demand signal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SalesEvent {
    pub event_id: String,
    pub sku: Sku,
    #[serde(default)]
    pub store: Dimension,
    #[serde(default)]
    pub channel: Dimension,
    pub kind: SalesKind,
    /// Units (1 for a view).
    pub quantity: i64,
    pub occurred_at_ms: i64,
}

/// What a promotion event does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromotionAction {
    /// Creates or replaces the promotion.
    Upsert,
    /// Ends the promotion now.
    End,
}

/// A promotion on one SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromotionEvent {
    pub event_id: String,
    pub promotion_id: String,
    pub sku: Sku,
    pub action: PromotionAction,
    /// Shelf label ("Flash sale -20%"); required for `upsert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Required for `upsert`: `{"kind":"percent_bp","value":2000}` or
    /// `{"kind":"amount_minor","value":150}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount: Option<Discount>,
    /// Window start (inclusive); required for `upsert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at_ms: Option<i64>,
    /// Window end (exclusive); required for `upsert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at_ms: Option<i64>,
    /// Units one customer may buy at the promotional price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_customer: Option<i64>,
    pub occurred_at_ms: i64,
}

/// One validated event of any feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "feed", content = "event", rename_all = "snake_case")]
pub enum FeedEvent {
    Catalog(CatalogEvent),
    Cost(CostEvent),
    Competitor(CompetitorEvent),
    Inventory(InventoryEvent),
    Sales(SalesEvent),
    Promotions(PromotionEvent),
}

impl FeedEvent {
    /// The feed the event came from.
    pub fn kind(&self) -> FeedKind {
        match self {
            FeedEvent::Catalog(_) => FeedKind::Catalog,
            FeedEvent::Cost(_) => FeedKind::Cost,
            FeedEvent::Competitor(_) => FeedKind::Competitor,
            FeedEvent::Inventory(_) => FeedKind::Inventory,
            FeedEvent::Sales(_) => FeedKind::Sales,
            FeedEvent::Promotions(_) => FeedKind::Promotions,
        }
    }

    /// The producer's event id (the deduplication key).
    pub fn event_id(&self) -> &str {
        match self {
            FeedEvent::Catalog(e) => &e.event_id,
            FeedEvent::Cost(e) => &e.event_id,
            FeedEvent::Competitor(e) => &e.event_id,
            FeedEvent::Inventory(e) => &e.event_id,
            FeedEvent::Sales(e) => &e.event_id,
            FeedEvent::Promotions(e) => &e.event_id,
        }
    }

    /// The SKU the event is about (events are ordered per SKU).
    pub fn sku(&self) -> &Sku {
        match self {
            FeedEvent::Catalog(e) => &e.sku,
            FeedEvent::Cost(e) => &e.sku,
            FeedEvent::Competitor(e) => &e.sku,
            FeedEvent::Inventory(e) => &e.sku,
            FeedEvent::Sales(e) => &e.sku,
            FeedEvent::Promotions(e) => &e.sku,
        }
    }

    /// When the source produced the event.
    pub fn occurred_at_ms(&self) -> i64 {
        match self {
            FeedEvent::Catalog(e) => e.occurred_at_ms,
            FeedEvent::Cost(e) => e.occurred_at_ms,
            FeedEvent::Competitor(e) => e.occurred_at_ms,
            FeedEvent::Inventory(e) => e.occurred_at_ms,
            FeedEvent::Sales(e) => e.occurred_at_ms,
            FeedEvent::Promotions(e) => e.occurred_at_ms,
        }
    }

    /// The event as its feed's JSON document (what the producer sent, normalised).
    pub fn to_feed_json(&self) -> String {
        let result = match self {
            FeedEvent::Catalog(e) => serde_json::to_string(e),
            FeedEvent::Cost(e) => serde_json::to_string(e),
            FeedEvent::Competitor(e) => serde_json::to_string(e),
            FeedEvent::Inventory(e) => serde_json::to_string(e),
            FeedEvent::Sales(e) => serde_json::to_string(e),
            FeedEvent::Promotions(e) => serde_json::to_string(e),
        };
        // Plain structs of strings and integers always serialise.
        result.expect("feed events serialise to JSON")
    }
}
