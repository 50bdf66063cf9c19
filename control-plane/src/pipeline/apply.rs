//! Normalise and enrich: folding one accepted event into its SKU's state.
//!
//! Cost anomalies are caught here: a cost whose distance from the mean of the recent
//! applied costs is at least `cost_anomaly_bp` is not applied but held for review; the
//! SKU's promotions are capped at the discount published at that moment
//! (`discount_cap_minor`) until a person accepts or rejects the cost. A cost whose
//! effective time is still ahead is scheduled and applied when due (by the decision at
//! or after that time, see [`SkuState::apply_due_costs`]).

use edgeprice_pricing::money::round_div;

use super::config::CategoryRules;
use super::decide::Alert;
use crate::feeds::{FeedEvent, InventoryKind, PromotionAction, SalesKind};
use crate::store::{CostPoint, HeldCost, PromotionState, ScheduledCost, SkuState};

/// Folds `event` into `state` (creating it for a catalog event) at `now_ms`. Returns
/// alerts raised. Events for SKUs without state are refused at ingestion, so `state` is
/// `None` only for catalog events.
pub fn apply_event(
    state: &mut Option<SkuState>,
    event: &FeedEvent,
    rules: &CategoryRules,
    now_ms: i64,
) -> Vec<Alert> {
    let Some(sku_state) = state else {
        if let FeedEvent::Catalog(catalog) = event {
            *state = Some(SkuState::from_catalog(catalog));
        }
        return Vec::new();
    };
    let mut alerts = Vec::new();
    match event {
        FeedEvent::Catalog(catalog) => sku_state.apply_catalog(catalog),
        FeedEvent::Cost(cost) => {
            let history = &sku_state.cost_history;
            let reference = (!history.is_empty()).then(|| {
                let sum: i128 = history.iter().map(|c| c.cost_minor as i128).sum();
                round_div(sum, history.len() as i128).unwrap_or(0)
            });
            let deviation_bp = reference
                .filter(|r| *r > 0)
                .map(|r| (cost.cost_minor - r) * 10_000 / r);
            match (reference, deviation_bp) {
                (Some(reference), Some(deviation_bp))
                    if deviation_bp.abs() >= rules.cost_anomaly_bp =>
                {
                    let published_discount = sku_state.published.as_ref().map_or(0, |entry| {
                        entry
                            .promotion
                            .as_ref()
                            .map_or(0, |p| (entry.price_minor - p.price_minor).max(0))
                    });
                    // Keep the lowest cap if anomalies follow each other.
                    sku_state.discount_cap_minor = Some(
                        sku_state
                            .discount_cap_minor
                            .map_or(published_discount, |cap| cap.min(published_discount)),
                    );
                    sku_state.held_cost = Some(HeldCost {
                        cost_minor: cost.cost_minor,
                        vendor: cost.vendor.clone(),
                        effective_at_ms: cost.effective_at_ms,
                        reference_minor: reference,
                        deviation_bp,
                        event_id: cost.event_id.clone(),
                    });
                    tracing::warn!(
                        sku = %cost.sku,
                        cost_minor = cost.cost_minor,
                        reference_minor = reference,
                        deviation_bp,
                        "cost anomaly held for review; discounts capped"
                    );
                    alerts.push(Alert {
                        sku: cost.sku.to_string(),
                        kind: "cost_anomaly".into(),
                        message: format!(
                            "cost {} is {deviation_bp} bp from the recent mean {reference}; held for review, discounts capped at {published_discount}",
                            cost.cost_minor
                        ),
                    });
                }
                _ => {
                    let point = CostPoint {
                        cost_minor: cost.cost_minor,
                        vendor: cost.vendor.clone(),
                        effective_at_ms: cost.effective_at_ms,
                    };
                    if cost.effective_at_ms > now_ms {
                        let scheduled = ScheduledCost {
                            cost: point,
                            logistics_minor: cost.logistics_minor,
                        };
                        let at = sku_state
                            .scheduled_costs
                            .partition_point(|s| s.cost.effective_at_ms <= cost.effective_at_ms);
                        sku_state.scheduled_costs.insert(at, scheduled);
                    } else {
                        sku_state.apply_cost(point, cost.logistics_minor, rules.cost_history_len);
                    }
                }
            }
        }
        FeedEvent::Competitor(competitor) => {
            sku_state.competitors.insert(
                competitor.competitor.clone(),
                (competitor.price_minor, competitor.occurred_at_ms),
            );
        }
        FeedEvent::Inventory(inventory) => {
            let on_hand = sku_state
                .inventory
                .entry(inventory.store.to_string())
                .or_insert(0);
            *on_hand = match inventory.kind {
                InventoryKind::OnHand => inventory.quantity,
                InventoryKind::StockIn => *on_hand + inventory.quantity,
                InventoryKind::StockOut => (*on_hand - inventory.quantity).max(0),
            };
        }
        FeedEvent::Sales(sale) => {
            let units = if sale.kind.is_sale() {
                sale.quantity
            } else {
                0
            };
            let views = if sale.kind == SalesKind::View {
                sale.quantity
            } else {
                0
            };
            let cart_adds = if sale.kind == SalesKind::CartAdd {
                sale.quantity
            } else {
                0
            };
            sku_state.record_demand(sale.occurred_at_ms, units, views, cart_adds);
            // Perpetual inventory: a sale takes units off the store's count (or the
            // chain-wide one) until the next stock count replaces it.
            if units > 0 {
                let store = sale.store.to_string();
                let key = if sku_state.inventory.contains_key(&store) {
                    Some(store)
                } else {
                    sku_state
                        .inventory
                        .contains_key("*")
                        .then(|| "*".to_owned())
                };
                if let Some(on_hand) = key.and_then(|k| sku_state.inventory.get_mut(&k)) {
                    *on_hand = (*on_hand - units).max(0);
                }
            }
        }
        FeedEvent::Promotions(promotion) => match promotion.action {
            PromotionAction::End => {
                sku_state.promotions.remove(&promotion.promotion_id);
            }
            PromotionAction::Upsert => {
                // Validation guarantees these are present for an upsert.
                if let (Some(label), Some(discount), Some(starts_at_ms), Some(ends_at_ms)) = (
                    &promotion.label,
                    promotion.discount,
                    promotion.starts_at_ms,
                    promotion.ends_at_ms,
                ) {
                    sku_state.promotions.insert(
                        promotion.promotion_id.clone(),
                        PromotionState {
                            promotion_id: promotion.promotion_id.clone(),
                            label: label.clone(),
                            discount,
                            starts_at_ms,
                            ends_at_ms,
                            max_per_customer: promotion.max_per_customer,
                        },
                    );
                }
            }
        },
    }
    alerts
}
