//! Feed events: what vendors, competitors' scrapers, stores and tills send in.
//!
//! One serde type per feed; `schemas/json/{feed}.schema.json` describes the same shape
//! for the producers (a test keeps the two in step). [`parse_event`] turns one JSON
//! document into a validated [`FeedEvent`] or a [`FeedError`] whose [`FeedError::code`]
//! is the API error code and the dead-letter reason.
//!
//! Units: money is integer minor units of the event's `currency`; rates are basis points
//! (1 bp = 0.01 %); times are Unix milliseconds, UTC. Checks here are the ones that need
//! nothing but the event; whether the SKU is known and the currency matches the catalog
//! is checked against stored state when the event is applied.

mod types;
mod validate;

pub use types::*;
pub use validate::{parse_event, FeedError};

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The six feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedKind {
    /// SKUs, list prices, categories, tax rates, logistics costs, MAP floors.
    Catalog,
    /// Vendor cost updates with their effective time.
    Cost,
    /// Competitors' shelf prices.
    Competitor,
    /// Stock on hand, stock in, stock out.
    Inventory,
    /// POS sales and demand signals (view, cart add/remove, checkout).
    Sales,
    /// Promotion rule changes.
    Promotions,
}

impl FeedKind {
    /// Every feed, in a fixed order.
    pub const ALL: [FeedKind; 6] = [
        FeedKind::Catalog,
        FeedKind::Cost,
        FeedKind::Competitor,
        FeedKind::Inventory,
        FeedKind::Sales,
        FeedKind::Promotions,
    ];

    /// The name used in URLs, topics and file names.
    pub fn as_str(&self) -> &'static str {
        match self {
            FeedKind::Catalog => "catalog",
            FeedKind::Cost => "cost",
            FeedKind::Competitor => "competitor",
            FeedKind::Inventory => "inventory",
            FeedKind::Sales => "sales",
            FeedKind::Promotions => "promotions",
        }
    }
}

impl fmt::Display for FeedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FeedKind {
    type Err = FeedError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FeedKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| FeedError::UnknownFeed(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::collections::BTreeSet;

    fn schema(feed: FeedKind) -> Value {
        let path = format!(
            "{}/../schemas/json/{feed}.schema.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    fn keys(value: &Value) -> BTreeSet<String> {
        value.as_object().unwrap().keys().cloned().collect()
    }

    /// The JSON Schemas in `schemas/json/` and the serde types describe the same events:
    /// every schema example is accepted, dropping any required field is rejected, and the
    /// schema's properties are exactly the fields the types know.
    #[test]
    fn json_schemas_match_the_event_types() {
        for feed in FeedKind::ALL {
            let schema = schema(feed);
            let properties = keys(&schema["properties"]);
            let required: Vec<&str> = schema["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let mut seen = BTreeSet::new();
            for example in schema["examples"].as_array().unwrap() {
                let event = parse_event(feed, example.to_string().as_bytes())
                    .unwrap_or_else(|e| panic!("{feed} example {example}: {e}"));
                let normalised: Value = serde_json::from_str(&event.to_feed_json()).unwrap();
                assert!(
                    keys(&normalised).is_subset(&properties),
                    "{feed}: type has fields the schema lacks"
                );
                seen.extend(keys(example));
                for field in &required {
                    let mut partial = example.clone();
                    partial.as_object_mut().unwrap().remove(*field);
                    assert!(
                        parse_event(feed, partial.to_string().as_bytes()).is_err(),
                        "{feed}: event without required {field} was accepted"
                    );
                }
            }
            assert_eq!(seen, properties, "{feed}: examples must use every property");
            let mut unknown = schema["examples"][0].clone();
            unknown["surprise"] = Value::from(1);
            assert_eq!(
                parse_event(feed, unknown.to_string().as_bytes())
                    .unwrap_err()
                    .code(),
                "invalid_event",
                "{feed}: additionalProperties is false in the schema"
            );
        }
    }
}
