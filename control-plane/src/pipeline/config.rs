//! Pipeline settings: the rule-set version and the rules of each category.

use std::collections::BTreeMap;

use edgeprice_pricing::GuardrailPolicy;
use serde::{Deserialize, Serialize};

/// Settings of the decision pipeline (the `[pipeline]` table of the control plane's
/// TOML file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PipelineConfig {
    /// Named in every decision record, so a decision can be replayed with its rules.
    pub rule_set_version: String,
    /// Rules of categories not listed in `categories`.
    pub default_rules: CategoryRules,
    /// Rules per category name (the catalog's `category`).
    pub categories: BTreeMap<String, CategoryRules>,
    /// Most events processed in one transaction (and published as one delta).
    pub batch_size: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            rule_set_version: "2026-11-default".into(),
            default_rules: CategoryRules::default(),
            categories: BTreeMap::new(),
            batch_size: 4_096,
        }
    }
}

impl PipelineConfig {
    /// The rules for a category.
    pub fn rules_for(&self, category: &str) -> &CategoryRules {
        self.categories.get(category).unwrap_or(&self.default_rules)
    }

    /// Checks every category's settings.
    pub fn validate(&self) -> Result<(), String> {
        if self.batch_size == 0 {
            return Err("pipeline.batch_size must be at least 1".into());
        }
        std::iter::once(("default", &self.default_rules))
            .chain(self.categories.iter().map(|(k, v)| (k.as_str(), v)))
            .try_for_each(|(name, rules)| {
                rules
                    .guardrails
                    .validate()
                    .map_err(|e| format!("category {name}: {e}"))?;
                for (field, value) in [
                    ("surge_uplift_bp", rules.surge_uplift_bp),
                    ("clearance_bp", rules.clearance_bp),
                    ("competitor_max_match_bp", rules.competitor_max_match_bp),
                    ("spike_keep_discount_bp", rules.spike_keep_discount_bp),
                ] {
                    if !(0..=10_000).contains(&value) {
                        return Err(format!("category {name}: {field} must be in 0..=10000"));
                    }
                }
                Ok(())
            })
    }
}

/// Pricing rules and thresholds of one category. Velocities are units per hour;
/// ratios and percentages are basis points (10,000 = 1× or 100 %).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CategoryRules {
    /// Minimum margin, minimum profit, change limit, tax-inclusive prices.
    pub guardrails: GuardrailPolicy,
    /// Dynamic prices (surge, clearance, competitor matching) wait for a person's
    /// approval; the list price and configured promotions still apply.
    pub high_risk: bool,
    /// Fewest units sold in the last 5 minutes before demand counts as a surge or spike
    /// (keeps single sales from moving prices).
    pub surge_min_units_5m: i64,
    /// Surge: the 5-minute velocity is at least this multiple of the velocity of the
    /// 55 minutes before (30,000 = 3×).
    pub surge_ratio_bp: i64,
    /// Price uplift during a surge, basis points of the list price.
    pub surge_uplift_bp: i64,
    /// Spike: like a surge but at this multiple (100,000 = 10×); promotions are reduced
    /// and limited per customer.
    pub spike_ratio_bp: i64,
    /// Share of a promotion's discount kept during a spike (5,000 = half).
    pub spike_keep_discount_bp: i64,
    /// Units one customer may buy at the promotional price during a spike.
    pub spike_max_per_customer: i64,
    /// Overstock: at least this many units on hand...
    pub overstock_min_units: i64,
    /// ...and at least this many hours of cover at the expected sales rate.
    pub overstock_cover_hours: i64,
    /// Clearance discount when overstocked, basis points of the list price.
    pub clearance_bp: i64,
    /// An active promotion ends early when stock would run out within this time.
    pub end_early_within_ms: i64,
    /// Match the lowest fresh competitor price (within `competitor_max_match_bp`).
    pub competitor_match: bool,
    /// Amount to go below the competitor when matching, minor units (0: match).
    pub competitor_undercut_minor: i64,
    /// Never go further than this below the list price to match, basis points.
    pub competitor_max_match_bp: i64,
    /// Competitor prices older than this are ignored.
    pub competitor_max_age_ms: i64,
    /// A cost this far from the mean of recent costs (either way) is held for review.
    pub cost_anomaly_bp: i64,
    /// Applied costs kept as history for the anomaly check.
    pub cost_history_len: usize,
    /// Length of the interval the guardrails' change limit applies to.
    pub change_interval_ms: i64,
}

impl Default for CategoryRules {
    fn default() -> Self {
        CategoryRules {
            guardrails: GuardrailPolicy::default(),
            high_risk: false,
            surge_min_units_5m: 10,
            surge_ratio_bp: 30_000,
            surge_uplift_bp: 500,
            spike_ratio_bp: 100_000,
            spike_keep_discount_bp: 5_000,
            spike_max_per_customer: 2,
            overstock_min_units: 200,
            overstock_cover_hours: 24 * 30,
            clearance_bp: 1_000,
            end_early_within_ms: 30 * 60_000,
            competitor_match: true,
            competitor_undercut_minor: 0,
            competitor_max_match_bp: 1_500,
            competitor_max_age_ms: 24 * 3_600_000,
            cost_anomaly_bp: 5_000,
            cost_history_len: 10,
            change_interval_ms: 3_600_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_fields_take_their_defaults_and_categories_override() {
        let config: PipelineConfig = serde_json::from_str(
            r#"{"categories":{"alcohol":{"high_risk":true,"guardrails":{"min_margin_bp":4000}}}}"#,
        )
        .unwrap();
        assert_eq!(config.batch_size, 4_096);
        let alcohol = config.rules_for("alcohol");
        assert!(alcohol.high_risk);
        assert_eq!(alcohol.guardrails.min_margin_bp, 4_000);
        assert!(alcohol.guardrails.prices_include_tax);
        assert_eq!(alcohol.surge_ratio_bp, 30_000);
        assert_eq!(config.rules_for("snacks").guardrails.min_margin_bp, 3_000);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn invalid_settings_name_the_category() {
        let mut config = PipelineConfig::default();
        let mut rules = CategoryRules::default();
        rules.guardrails.min_margin_bp = 12_000;
        config.categories.insert("toys".into(), rules);
        assert!(config.validate().unwrap_err().contains("toys"));
    }
}
