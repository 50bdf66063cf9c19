//! One decision for one SKU: features → price candidate → guardrails → forecast →
//! promotion policy → decision record and price entry. Pure: everything comes from the
//! SKU's state, its category rules and the time.
//!
//! # Features
//! - `units_5m`, `units_15m`, `units_60m`: units sold (POS sales and checkouts) in the
//!   last 5, 15, 60 minutes; velocities `v_w = units_w × 60 / w` units per hour, kept in
//!   milli-units (× 1,000) so they stay integers.
//! - baseline: the velocity of the 55 minutes before the last 5,
//!   `(units_60m − units_5m) × 60 / 55`; `surge_ratio_bp = v_5 × 10,000 / baseline`
//!   (none when the baseline is zero: any burst of at least `surge_min_units_5m` then
//!   counts as a surge and a spike).
//! - expected sales per hour (the forecast): `(5·v_5 + 3·v_15 + 2·v_60) / 10`;
//!   depletion ETA: `on_hand / expected` hours.
//! - inventory pressure: `out` (nothing on hand), `overstock` (at least
//!   `overstock_min_units` and `overstock_cover_hours` of cover), `low` (would run out
//!   within `end_early_within_ms`), `normal`, or `unknown` (no inventory events yet).
//! - competitor delta: lowest competitor price seen within `competitor_max_age_ms`,
//!   and its distance from the list price in basis points.
//!
//! # Candidate (the regular price)
//! `list + surge uplift − overstock clearance`, then competitor matching: if the
//! lowest competitor is below, go to it (minus `competitor_undercut_minor`) but never
//! more than `competitor_max_match_bp` below list. High-risk categories publish the list
//! price (or the last approved price) and keep a dynamic candidate that differs from
//! both as a suggestion waiting for approval; when the dynamic candidate is back at the
//! list price, the approval lapses.
//!
//! # Guardrails
//! [`edgeprice_pricing::guardrail::guard`] with the price at the start of the change
//! interval. Without a known cost there is no margin to protect, so the list price is
//! published with the floor at that price: no discount goes below it.
//!
//! # Promotion policy
//! Of the SKU's promotions, the active one (else the next upcoming one) is published as
//! the entry's promotion tag, after, in order: ending it early if stock would run out
//! within `end_early_within_ms` (`promotion_end_early`); during a demand spike keeping
//! only `spike_keep_discount_bp` of its discount (`demand_spike_reduce_discount`) and
//! limiting it per customer (`quantity_limit`); capping it while a cost is held for
//! review (`cost_anomaly_cap`, which turns it into an amount off); and cutting it to the
//! largest discount that keeps the floor, or blocking it (`promotion_cut`,
//! `promotion_blocked`).

use edgeprice_pricing::guardrail::{cut_promotion, guard, Adjustment, Floor, PromotionVerdict};
use edgeprice_pricing::money::round_div;
use edgeprice_pricing::{Discount, Money, PriceEntry, PriceKey, PromotionTag, Rule};
use serde::{Deserialize, Serialize};

use super::config::CategoryRules;
use crate::store::{PendingSuggestion, PromotionState, SkuState};

/// Inventory pressure of a SKU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InventoryPressure {
    Unknown,
    Out,
    Low,
    Normal,
    Overstock,
}

/// The features of one decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Features {
    /// Units sold in the last 5 minutes.
    pub units_5m: i64,
    /// Units sold in the last 15 minutes.
    pub units_15m: i64,
    /// Units sold in the last 60 minutes.
    pub units_60m: i64,
    /// Velocities over those windows, milli-units per hour.
    pub velocity_5m_milli: i64,
    /// See `velocity_5m_milli`.
    pub velocity_15m_milli: i64,
    /// See `velocity_5m_milli`.
    pub velocity_60m_milli: i64,
    /// Velocity of the 55 minutes before the last 5, milli-units per hour.
    pub baseline_milli: i64,
    /// 5-minute velocity over the baseline, basis points (none when the baseline is zero).
    pub surge_ratio_bp: Option<i64>,
    /// Demand surge: the price is raised by `surge_uplift_bp`.
    pub surge: bool,
    /// Demand spike: promotions are reduced and limited per customer.
    pub spike: bool,
    /// Units on hand across stores; none before the first inventory event.
    pub on_hand: Option<i64>,
    /// Stock relative to the expected sales.
    pub inventory_pressure: InventoryPressure,
    /// Lowest competitor price seen within `competitor_max_age_ms`.
    pub competitor_min_minor: Option<i64>,
    /// That price's distance from the list price, basis points (negative: cheaper).
    pub competitor_delta_bp: Option<i64>,
}

/// The forecast of one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forecast {
    /// Expected units sold per hour, × 1,000.
    pub expected_units_per_hour_milli: i64,
    /// When stock runs out at that rate; none without stock data or sales.
    pub depletion_eta_ms: Option<i64>,
}

/// What the policy did with the SKU's promotion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionDecision {
    /// The promotion's id.
    pub promotion_id: String,
    /// The discount the promotion asks for.
    pub requested: Discount,
    /// The discount published; none when blocked or ended.
    pub applied: Option<Discount>,
    /// The promotional price published.
    pub price_minor: Option<i64>,
    /// Units one customer may buy at the promotional price.
    pub max_per_customer: Option<i64>,
    /// `keep`, `reduce`, `cut`, `blocked` or `end_early`.
    pub action: String,
}

/// The inputs a decision read from the SKU's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionInputs {
    /// The SKU's category (selects the rules).
    pub category: String,
    /// ISO 4217 code of every amount.
    pub currency: String,
    /// Catalog list price.
    pub list_price_minor: i64,
    /// The cost in force; none before the first cost event.
    pub cost_minor: Option<i64>,
    /// A cost held for review (not applied).
    pub held_cost_minor: Option<i64>,
    /// Largest discount allowed while a cost is held.
    pub discount_cap_minor: Option<i64>,
    /// Logistics cost per unit.
    pub logistics_minor: i64,
    /// Tax rate, basis points.
    pub tax_rate_bp: i64,
    /// MAP or regulatory floor from the catalog.
    pub regulatory_floor_minor: Option<i64>,
    /// Regulatory ceiling from the catalog.
    pub ceiling_minor: Option<i64>,
    /// Price in force at the start of the change interval.
    pub interval_start_price_minor: Option<i64>,
    /// High-risk categories: the approved dynamic price.
    pub approved_price_minor: Option<i64>,
    /// The promotion considered (active, else the next to start).
    pub promotion: Option<PromotionState>,
}

/// Whether the decision reached the edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionStatus {
    /// Published as decided.
    Published,
    /// High-risk category: the list (or approved) price was published; the dynamic
    /// price waits for approval.
    PendingApproval,
    /// The guardrails cannot be met (floor above ceiling): nothing new was published.
    Held,
}

/// Everything about one decision: enough to explain and replay it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// The SKU decided.
    pub sku: String,
    /// When the decision was made (the pipeline's clock), Unix ms.
    pub decided_at_ms: i64,
    /// Version of the rules that made it (`PipelineConfig::rule_set_version`).
    pub rule_set_version: String,
    /// Ids of the events that led to it.
    pub trigger_event_ids: Vec<String>,
    /// What the decision read from the SKU's state.
    pub inputs: DecisionInputs,
    /// Demand, inventory and competitor features.
    pub features: Features,
    /// Rule codes, in the order they fired.
    pub rules_fired: Vec<String>,
    /// The regular price before the guardrails.
    pub candidate_minor: i64,
    /// What the guardrails changed, in order.
    pub guardrail_adjustments: Vec<Adjustment>,
    /// The floor published with the price and the rule that sets it.
    pub floor: Option<Floor>,
    /// Expected sales and depletion.
    pub forecast: Forecast,
    /// What the promotion policy did.
    pub promotion: Option<PromotionDecision>,
    /// The regular price published.
    pub final_price_minor: i64,
    /// Margin at the final regular price, basis points.
    pub margin_after_bp: Option<i64>,
    /// Margin at the promotional price, basis points.
    pub promotion_margin_bp: Option<i64>,
    /// The main reason for the price (see [`reason_code`]).
    pub reason_code: String,
    /// Whether it was published.
    pub status: DecisionStatus,
    /// The snapshot version that carries it.
    pub snapshot_version: u64,
    /// Alerts raised on the way (also logged).
    pub alerts: Vec<Alert>,
}

/// An alert for operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// The SKU concerned.
    pub sku: String,
    /// `promotion_blocked`, `guardrail_conflict`, `cost_anomaly`, `inventory_exhausted`.
    pub kind: String,
    /// What happened, for a person.
    pub message: String,
}

/// The result of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The decision record (appended to the audit log).
    pub record: DecisionRecord,
    /// The entry to publish; `None` when nothing new may be published.
    pub entry: Option<PriceEntry>,
}

/// Rule codes in order of importance: the first that fired is the decision's
/// reason code; `list_price` when none did.
pub const REASON_PRIORITY: &[&str] = &[
    "guardrail_conflict",
    "cost_unknown",
    "min_margin",
    "min_profit",
    "regulatory_floor",
    "ceiling",
    "promotion_blocked",
    "promotion_end_early",
    "cost_anomaly_cap",
    "promotion_cut",
    "demand_spike_reduce_discount",
    "max_change_up",
    "max_change_down",
    "awaiting_approval",
    "approved_price",
    "competitor_match",
    "demand_surge",
    "overstock_clearance",
];

/// The most important rule that fired.
pub fn reason_code(rules_fired: &[String]) -> String {
    REASON_PRIORITY
        .iter()
        .find(|code| rules_fired.iter().any(|r| r == *code))
        .map_or("list_price", |code| code)
        .to_owned()
}

fn percent(amount: i64, bp: i64) -> i64 {
    round_div(amount as i128 * bp as i128, 10_000).unwrap_or(i64::MAX)
}

/// Computes the features (see the module docs).
pub fn features(state: &SkuState, rules: &CategoryRules, now_ms: i64) -> (Features, Forecast) {
    let units_5m = state.units_sold(now_ms, 5);
    let units_15m = state.units_sold(now_ms, 15);
    let units_60m = state.units_sold(now_ms, 60);
    let per_hour = |units: i64, minutes: i64| units * 60 * 1_000 / minutes;
    let velocity_5m_milli = per_hour(units_5m, 5);
    let velocity_15m_milli = per_hour(units_15m, 15);
    let velocity_60m_milli = per_hour(units_60m, 60);
    let baseline_milli = per_hour(units_60m - units_5m, 55);
    let surge_ratio_bp = (baseline_milli > 0).then(|| velocity_5m_milli * 10_000 / baseline_milli);
    let enough = units_5m >= rules.surge_min_units_5m;
    let surge = enough && surge_ratio_bp.is_none_or(|r| r >= rules.surge_ratio_bp);
    let spike = enough && surge_ratio_bp.is_none_or(|r| r >= rules.spike_ratio_bp);
    let expected = (5 * velocity_5m_milli + 3 * velocity_15m_milli + 2 * velocity_60m_milli) / 10;
    let on_hand = (!state.inventory.is_empty()).then(|| state.on_hand().max(0));
    let depletion_eta_ms = match on_hand {
        Some(units) if expected > 0 => {
            Some(now_ms + (units as i128 * 3_600_000 * 1_000 / expected as i128) as i64)
        }
        Some(0) => Some(now_ms),
        _ => None,
    };
    let inventory_pressure = match on_hand {
        None => InventoryPressure::Unknown,
        Some(0) => InventoryPressure::Out,
        Some(units) => {
            let cover_ms = depletion_eta_ms.map(|eta| eta - now_ms);
            if cover_ms.is_some_and(|c| c < rules.end_early_within_ms) {
                InventoryPressure::Low
            } else if units >= rules.overstock_min_units
                && cover_ms.is_some_and(|c| c >= rules.overstock_cover_hours * 3_600_000)
            {
                InventoryPressure::Overstock
            } else {
                InventoryPressure::Normal
            }
        }
    };
    let competitor_min_minor = state
        .competitors
        .values()
        .filter(|(_, seen_at)| now_ms - seen_at <= rules.competitor_max_age_ms)
        .map(|(price, _)| *price)
        .min();
    let competitor_delta_bp = competitor_min_minor
        .map(|c| (c - state.list_price_minor) * 10_000 / state.list_price_minor.max(1));
    (
        Features {
            units_5m,
            units_15m,
            units_60m,
            velocity_5m_milli,
            velocity_15m_milli,
            velocity_60m_milli,
            baseline_milli,
            surge_ratio_bp,
            surge,
            spike,
            on_hand,
            inventory_pressure,
            competitor_min_minor,
            competitor_delta_bp,
        },
        Forecast {
            expected_units_per_hour_milli: expected,
            depletion_eta_ms,
        },
    )
}

/// The promotion to publish: the active one with the deepest discount, else the next
/// to start.
fn current_promotion(state: &SkuState, now_ms: i64) -> Option<PromotionState> {
    let list = state.list_price_minor;
    let off = |p: &PromotionState| p.discount.amount_off(list, state.currency).unwrap_or(0);
    let active = state
        .promotions
        .values()
        .filter(|p| p.starts_at_ms <= now_ms && now_ms < p.ends_at_ms)
        .max_by_key(|p| (off(p), std::cmp::Reverse(p.promotion_id.clone())));
    active
        .or_else(|| {
            state
                .promotions
                .values()
                .filter(|p| p.starts_at_ms > now_ms)
                .min_by_key(|p| (p.starts_at_ms, p.promotion_id.clone()))
        })
        .cloned()
}

fn scale(discount: Discount, share_bp: i64) -> Discount {
    match discount {
        Discount::PercentBp(bp) => Discount::PercentBp(percent(bp, share_bp)),
        Discount::AmountMinor(amount) => Discount::AmountMinor(percent(amount, share_bp)),
    }
}

/// Makes the decision for one SKU at `now_ms` and updates the state's interval,
/// suggestion and ended promotions. `version` is the snapshot version that will carry it.
pub fn decide(
    state: &mut SkuState,
    rules: &CategoryRules,
    rule_set_version: &str,
    now_ms: i64,
    version: u64,
    trigger_event_ids: Vec<String>,
) -> Decision {
    let ctx = Context {
        rule_set_version,
        now_ms,
        version,
        trigger_event_ids,
    };
    state.apply_due_costs(now_ms, rules.cost_history_len);
    let (features, forecast) = features(state, rules, now_ms);
    let mut rules_fired: Vec<String> = Vec::new();
    let mut alerts = Vec::new();
    let sku = state.sku.to_string();
    let list = state.list_price_minor;
    let published_price = state.published.as_ref().map(|e| e.price_minor);
    if now_ms - state.interval_start_ms >= rules.change_interval_ms {
        state.interval_start_ms = now_ms;
        state.interval_start_price_minor = published_price;
    }
    let promotion = current_promotion(state, now_ms);
    let inputs = DecisionInputs {
        category: state.category.clone(),
        currency: state.currency.to_string(),
        list_price_minor: list,
        cost_minor: state.cost_minor,
        held_cost_minor: state.held_cost.as_ref().map(|h| h.cost_minor),
        discount_cap_minor: state.discount_cap_minor,
        logistics_minor: state.logistics_minor,
        tax_rate_bp: state.tax_rate_bp,
        regulatory_floor_minor: state.floor_minor,
        ceiling_minor: state.ceiling_minor,
        interval_start_price_minor: state.interval_start_price_minor,
        approved_price_minor: state.approved_price_minor,
        promotion: promotion.clone(),
    };

    // Candidate.
    let mut candidate = list;
    if features.surge {
        candidate += percent(list, rules.surge_uplift_bp);
        rules_fired.push("demand_surge".into());
    }
    if features.inventory_pressure == InventoryPressure::Overstock {
        candidate -= percent(list, rules.clearance_bp);
        rules_fired.push("overstock_clearance".into());
    }
    if let (true, Some(competitor)) = (rules.competitor_match, features.competitor_min_minor) {
        let lowest = list - percent(list, rules.competitor_max_match_bp);
        let target = (competitor - rules.competitor_undercut_minor).max(lowest);
        if target < candidate {
            candidate = target;
            rules_fired.push("competitor_match".into());
        }
    }
    let mut status = DecisionStatus::Published;
    if rules.high_risk {
        if candidate == list {
            // Back at the catalog price a person set: nothing to approve, and an earlier
            // approval no longer applies.
            state.pending_suggestion = None;
            state.approved_price_minor = None;
        } else if Some(candidate) == state.approved_price_minor {
            state.pending_suggestion = None;
        } else {
            let unchanged = state
                .pending_suggestion
                .as_ref()
                .is_some_and(|p| p.price_minor == candidate);
            if !unchanged {
                state.pending_suggestion = Some(PendingSuggestion {
                    price_minor: candidate,
                    rules: rules_fired.clone(),
                    suggested_at_ms: now_ms,
                });
            }
            rules_fired.push("awaiting_approval".into());
            status = DecisionStatus::PendingApproval;
        }
        candidate = match state.approved_price_minor {
            Some(approved) => {
                rules_fired.push("approved_price".into());
                approved
            }
            None => list,
        };
    }
    let candidate = candidate.max(1);

    // Guardrails.
    let Some(cost) = state.cost_minor else {
        rules_fired.push("cost_unknown".into());
        let price = state
            .ceiling_minor
            .map_or(list, |c| list.min(c))
            .max(state.floor_minor.unwrap_or(0));
        let entry = entry(state, price, price, None, version);
        return finish(
            state,
            DecisionParts {
                inputs,
                features,
                forecast,
                rules_fired,
                candidate,
                adjustments: Vec::new(),
                floor: None,
                promotion: None,
                final_price: price,
                margin: None,
                promotion_margin: None,
                status,
                entry: Some(entry),
            },
            ctx,
            alerts,
        );
    };
    let economics = state.economics(cost);
    let policy = &rules.guardrails;
    let guarded = match guard(
        Money::new(candidate, state.currency),
        state.interval_start_price_minor,
        &economics,
        policy,
    ) {
        Ok(guarded) => guarded,
        Err(err) => {
            rules_fired.push("guardrail_conflict".into());
            alerts.push(Alert {
                sku: sku.clone(),
                kind: "guardrail_conflict".into(),
                message: err.to_string(),
            });
            let final_price = published_price.unwrap_or(list);
            return finish(
                state,
                DecisionParts {
                    inputs,
                    features,
                    forecast,
                    rules_fired,
                    candidate,
                    adjustments: Vec::new(),
                    floor: None,
                    promotion: None,
                    final_price,
                    margin: None,
                    promotion_margin: None,
                    status: DecisionStatus::Held,
                    entry: None,
                },
                ctx,
                alerts,
            );
        }
    };
    rules_fired.extend(guarded.adjustments.iter().map(|a| a.rule.code().to_owned()));
    let price = guarded.price.minor;
    let floor = guarded.floor;

    // Promotion policy.
    let mut promotion_decision = None;
    let mut tag = None;
    let mut promotion_margin = None;
    if let Some(promo) = promotion {
        let active = promo.starts_at_ms <= now_ms;
        let runs_out_soon = forecast
            .depletion_eta_ms
            .is_some_and(|eta| eta - now_ms < rules.end_early_within_ms);
        let mut action = "keep";
        let mut discount = promo.discount;
        let mut limit = promo.max_per_customer;
        if active && runs_out_soon {
            rules_fired.push("promotion_end_early".into());
            state.promotions.remove(&promo.promotion_id);
            if features.inventory_pressure == InventoryPressure::Out {
                alerts.push(Alert {
                    sku: sku.clone(),
                    kind: "inventory_exhausted".into(),
                    message: format!("promotion {} ended: no stock", promo.promotion_id),
                });
            }
            promotion_decision = Some(PromotionDecision {
                promotion_id: promo.promotion_id.clone(),
                requested: promo.discount,
                applied: None,
                price_minor: None,
                max_per_customer: limit,
                action: "end_early".into(),
            });
        } else {
            if active && features.spike {
                discount = scale(discount, rules.spike_keep_discount_bp);
                rules_fired.push("demand_spike_reduce_discount".into());
                action = "reduce";
                let cap = rules.spike_max_per_customer;
                if limit.is_none_or(|l| l > cap) {
                    limit = Some(cap);
                    rules_fired.push("quantity_limit".into());
                }
            }
            if let Some(cap) = state.discount_cap_minor {
                let off = discount
                    .amount_off(price, state.currency)
                    .unwrap_or(i64::MAX);
                if off > cap {
                    discount = Discount::AmountMinor(cap);
                    rules_fired.push("cost_anomaly_cap".into());
                    action = "reduce";
                }
            }
            let off = discount.amount_off(price, state.currency).unwrap_or(0);
            let verdict = if off <= 0 {
                PromotionVerdict::Blocked {
                    requested: discount,
                }
            } else {
                cut_promotion(Money::new(price, state.currency), floor.minor, discount).unwrap_or(
                    PromotionVerdict::Blocked {
                        requested: discount,
                    },
                )
            };
            let applied = match verdict {
                PromotionVerdict::Keep { discount, .. } => Some(discount),
                PromotionVerdict::Cut { allowed, .. } => {
                    rules_fired.push(Rule::PromotionCut.code().into());
                    action = "cut";
                    Some(allowed)
                }
                PromotionVerdict::Blocked { .. } => {
                    rules_fired.push(Rule::PromotionBlocked.code().into());
                    action = "blocked";
                    alerts.push(Alert {
                        sku: sku.clone(),
                        kind: "promotion_blocked".into(),
                        message: format!(
                            "promotion {} blocked: no discount keeps the floor {}",
                            promo.promotion_id, floor.minor
                        ),
                    });
                    None
                }
            };
            let promo_price = verdict.price_minor();
            if let Some(promo_price) = promo_price {
                promotion_margin =
                    edgeprice_pricing::guardrail::margin_bp(promo_price, &economics, policy);
                let label = match limit {
                    Some(n) => format!("{} (max {n} per customer)", promo.label),
                    None => promo.label.clone(),
                };
                tag = Some(PromotionTag {
                    id: promo.promotion_id.clone(),
                    label,
                    price_minor: promo_price,
                    starts_at_ms: promo.starts_at_ms,
                    ends_at_ms: promo.ends_at_ms,
                });
            }
            promotion_decision = Some(PromotionDecision {
                promotion_id: promo.promotion_id.clone(),
                requested: promo.discount,
                applied,
                price_minor: promo_price,
                max_per_customer: limit,
                action: action.into(),
            });
        }
    }
    let entry = entry(state, price, floor.minor, tag, version);
    finish(
        state,
        DecisionParts {
            inputs,
            features,
            forecast,
            rules_fired,
            candidate,
            adjustments: guarded.adjustments,
            floor: Some(floor),
            promotion: promotion_decision,
            final_price: price,
            margin: Some(guarded.margin_bp),
            promotion_margin,
            status,
            entry: Some(entry),
        },
        ctx,
        alerts,
    )
}

fn entry(
    state: &SkuState,
    price: i64,
    floor: i64,
    promotion: Option<PromotionTag>,
    version: u64,
) -> PriceEntry {
    PriceEntry {
        key: PriceKey::chain_wide(state.sku.clone()),
        currency: state.currency,
        list_price_minor: state.list_price_minor,
        price_minor: price,
        floor_minor: floor,
        promotion,
        valid_from_ms: None,
        valid_until_ms: None,
        revision: version,
    }
}

struct DecisionParts {
    inputs: DecisionInputs,
    features: Features,
    forecast: Forecast,
    rules_fired: Vec<String>,
    candidate: i64,
    adjustments: Vec<Adjustment>,
    floor: Option<Floor>,
    promotion: Option<PromotionDecision>,
    final_price: i64,
    margin: Option<i64>,
    promotion_margin: Option<i64>,
    status: DecisionStatus,
    entry: Option<PriceEntry>,
}

/// What a decision record takes from outside the SKU's state.
struct Context<'a> {
    rule_set_version: &'a str,
    now_ms: i64,
    version: u64,
    trigger_event_ids: Vec<String>,
}

fn finish(
    state: &SkuState,
    parts: DecisionParts,
    ctx: Context<'_>,
    alerts: Vec<Alert>,
) -> Decision {
    debug_assert!(parts
        .entry
        .as_ref()
        .is_none_or(|e| e.validate().is_ok() && e.currency == state.currency));
    let reason = reason_code(&parts.rules_fired);
    Decision {
        record: DecisionRecord {
            sku: state.sku.to_string(),
            decided_at_ms: ctx.now_ms,
            rule_set_version: ctx.rule_set_version.to_owned(),
            trigger_event_ids: ctx.trigger_event_ids,
            inputs: parts.inputs,
            features: parts.features,
            rules_fired: parts.rules_fired,
            candidate_minor: parts.candidate,
            guardrail_adjustments: parts.adjustments,
            floor: parts.floor,
            forecast: parts.forecast,
            promotion: parts.promotion,
            final_price_minor: parts.final_price,
            margin_after_bp: parts.margin,
            promotion_margin_bp: parts.promotion_margin,
            reason_code: reason,
            status: parts.status,
            snapshot_version: ctx.version,
            alerts,
        },
        entry: parts.entry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::CatalogEvent;
    use edgeprice_pricing::guardrail::{floor_for, hard_violation};
    use edgeprice_pricing::{Currency, Sku};
    use proptest::prelude::*;

    const NOW: i64 = 1_790_000_040_000;

    #[allow(clippy::too_many_arguments)]
    fn state(
        list: i64,
        cost: Option<i64>,
        logistics: i64,
        floor: Option<i64>,
        ceiling: Option<i64>,
        competitor: Option<i64>,
        on_hand: Option<i64>,
        sales: &[(i64, i64)],
        promotion: Option<Discount>,
        cap: Option<i64>,
        previous: Option<i64>,
    ) -> SkuState {
        let mut state = SkuState::from_catalog(&CatalogEvent {
            event_id: "c".into(),
            sku: Sku::new("P").unwrap(),
            category: "any".into(),
            currency: Currency::EUR,
            list_price_minor: list,
            tax_rate_bp: 2_000,
            logistics_minor: logistics,
            floor_minor: floor,
            ceiling_minor: ceiling,
            occurred_at_ms: NOW,
        });
        state.cost_minor = cost;
        if let Some(price) = competitor {
            state.competitors.insert("rival".into(), (price, NOW));
        }
        if let Some(units) = on_hand {
            state.inventory.insert("*".into(), units);
        }
        for (minutes_ago, units) in sales {
            state.record_demand(NOW - minutes_ago * 60_000, *units, 0, 0);
        }
        if let Some(discount) = promotion {
            state.promotions.insert(
                "promo".into(),
                PromotionState {
                    promotion_id: "promo".into(),
                    label: "Promo".into(),
                    discount,
                    starts_at_ms: NOW - 60_000,
                    ends_at_ms: NOW + 3_600_000,
                    max_per_customer: None,
                },
            );
        }
        state.discount_cap_minor = cap;
        state.interval_start_ms = NOW;
        state.interval_start_price_minor = previous;
        state
    }

    proptest! {
        /// Whatever the signals, a published entry satisfies every guardrail: its price
        /// and its promotional price are at or above its floor, the floor is the
        /// guardrails' floor, and the ceiling holds.
        #[test]
        fn published_entries_never_break_a_guardrail(
            list in 1i64..200_000,
            cost in proptest::option::of(0i64..150_000),
            logistics in 0i64..5_000,
            floor in proptest::option::of(0i64..200_000),
            ceiling in proptest::option::of(1i64..300_000),
            competitor in proptest::option::of(1i64..200_000),
            on_hand in proptest::option::of(0i64..5_000),
            sales in proptest::collection::vec((0i64..60, 1i64..50), 0..12),
            promotion in proptest::option::of(prop_oneof![
                (1i64..9_999).prop_map(Discount::PercentBp),
                (1i64..100_000).prop_map(Discount::AmountMinor),
            ]),
            cap in proptest::option::of(0i64..10_000),
            previous in proptest::option::of(1i64..200_000),
            high_risk in any::<bool>(),
            max_change in proptest::option::of(0i64..3_000),
        ) {
            let floor = floor.filter(|f| ceiling.is_none_or(|c| f <= &c));
            let mut state = state(list, cost, logistics, floor, ceiling, competitor, on_hand, &sales, promotion, cap, previous);
            let mut rules = CategoryRules { high_risk, ..CategoryRules::default() };
            rules.guardrails.max_change_bp = max_change;
            let decision = decide(&mut state, &rules, "test", NOW, 7, vec!["e".into()]);
            let Some(entry) = decision.entry else {
                prop_assert_eq!(decision.record.status, DecisionStatus::Held);
                return Ok(());
            };
            prop_assert!(entry.validate().is_ok(), "{:?}", entry);
            prop_assert_eq!(entry.revision, 7);
            prop_assert_eq!(entry.price_minor, decision.record.final_price_minor);
            if let Some(tag) = &entry.promotion {
                prop_assert!(tag.price_minor >= entry.floor_minor);
                prop_assert!(tag.price_minor < entry.price_minor);
            }
            if let Some(cost) = cost {
                let economics = edgeprice_pricing::SkuEconomics {
                    currency: Currency::EUR,
                    cost_minor: cost,
                    logistics_minor: logistics,
                    tax_rate_bp: 2_000,
                    floor_minor: floor,
                    ceiling_minor: ceiling,
                };
                let expected = floor_for(&economics, &rules.guardrails).unwrap();
                prop_assert_eq!(entry.floor_minor, expected.minor);
                prop_assert_eq!(hard_violation(entry.price_minor, &economics, &rules.guardrails), None);
                if let (Some(cap), Some(tag)) = (cap, &entry.promotion) {
                    prop_assert!(entry.price_minor - tag.price_minor <= cap, "cost anomaly cap exceeded");
                }
            } else {
                prop_assert!(entry.promotion.is_none(), "no discount without a known cost");
                prop_assert_eq!(entry.floor_minor, entry.price_minor);
            }
        }
    }

    #[test]
    fn reason_code_follows_the_priority_list() {
        let fired = |codes: &[&str]| codes.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        assert_eq!(reason_code(&fired(&[])), "list_price");
        assert_eq!(
            reason_code(&fired(&["demand_surge", "min_margin"])),
            "min_margin"
        );
        assert_eq!(
            reason_code(&fired(&["overstock_clearance", "competitor_match"])),
            "competitor_match"
        );
    }
}
