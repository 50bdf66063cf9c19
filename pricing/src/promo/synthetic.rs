//! Synthetic, deterministic promotion sets and carts for benchmarks and timing tests.
//!
//! ```
//! use edgeprice_pricing::promo::{evaluate, synthetic, CartContext};
//! use edgeprice_pricing::Currency;
//!
//! // 10,000 active promotions over a catalogue of 10,000 SKUs, and a 20-line cart.
//! let set = synthetic::promotion_set(10_000, 10_000);
//! let cart = synthetic::cart(20, 10_000);
//! let ctx = CartContext::new(Currency::EUR, synthetic::NOW_MS, chrono_tz::Europe::Paris);
//! let evaluation = evaluate(&set, &cart, &ctx).unwrap();
//! assert_eq!(evaluation.lines.len(), 20);
//! ```
//!
//! Promotion `i` is of kind `i % 10`: SKU percentage, amount, fixed price, buy X get Y,
//! buy N get P %, app-only percentage (one in ten of these a tiered volume deal on a
//! category instead), bundle, clearance in a flash-sale window, percentage in a
//! recurring window; and for `i % 10 == 9`: six in a thousand cart-level amount,
//! percentage or free shipping (some behind coupons), one in a hundred a segment-only
//! (`gold`) category percentage, the rest store-only deals. Every SKU-targeted
//! promotion names two SKUs, so with as many SKUs as promotions each SKU is named by
//! about two; with a tenth as many, by about twenty (a dense worst case). Priorities,
//! stacking groups (every mode), exclusive promotions and exclusions are spread over
//! them, so an evaluation exercises every path. Everything is active at [`NOW_MS`].

use chrono::Weekday;

use crate::key::Sku;
use crate::money::Currency;

use super::eval::CartLine;
use super::model::{
    BundleComponent, Conditions, CouponRule, Promotion, RecurringWindow, Rule, Stacking, Target,
    VolumeTier, PROMOTION_SCHEMA_VERSION,
};
use super::policy::{GroupMode, GroupPolicy, StackingPolicy};
use super::set::PromotionSet;

/// The time at which every synthetic promotion is active: 2026-11-23 12:00 UTC (a
/// Monday).
pub const NOW_MS: i64 = 1_795_435_200_000;

/// Number of categories the synthetic catalogue uses.
pub const CATEGORIES: usize = 100;

/// The `index`-th synthetic SKU, `SKU-000042`.
pub fn sku(index: usize) -> Sku {
    Sku::new(&format!("SKU-{index:06}")).expect("synthetic SKUs are valid")
}

/// The category of the `index`-th synthetic SKU.
pub fn category(index: usize) -> String {
    category_number(index / 7)
}

fn category_number(number: usize) -> String {
    format!("cat-{:03}", number % CATEGORIES)
}

/// `count` promotions over a catalogue of `sku_count` SKUs.
pub fn promotions(count: usize, sku_count: usize) -> Vec<Promotion> {
    let sku_count = sku_count.max(1);
    (0..count)
        .map(|i| {
            let first = (i * 7919) % sku_count;
            let second = (first + 1) % sku_count;
            let skus = || Target::Skus {
                skus: vec![sku(first), sku(second)],
            };
            let mut conditions = Conditions::default();
            let mut coupon = None;
            let (target, rule) = match i % 10 {
                0 => (
                    skus(),
                    Rule::PercentOff {
                        basis_points: 1_000,
                    },
                ),
                1 => (skus(), Rule::AmountOff { amount_minor: 50 }),
                2 => (
                    skus(),
                    Rule::FixedPrice {
                        unit_price_minor: 999,
                    },
                ),
                3 => (
                    skus(),
                    Rule::BuyXGetY {
                        buy: 2,
                        get: 1,
                        get_basis_points: 10_000,
                        max_applications: Some(3),
                    },
                ),
                4 => (
                    skus(),
                    Rule::BuyNPercentOff {
                        quantity: 2,
                        basis_points: 3_000,
                        max_applications: None,
                    },
                ),
                5 if i % 100 != 5 => {
                    // App-only deals: present in the set, filtered out for other channels.
                    conditions.channels = vec!["app".into()];
                    (
                        skus(),
                        Rule::PercentOff {
                            basis_points: 2_500,
                        },
                    )
                }
                5 => (
                    Target::Categories {
                        categories: vec![category_number(i / 100)],
                    },
                    Rule::TieredVolume {
                        tiers: vec![
                            VolumeTier {
                                min_quantity: 3,
                                basis_points: 500,
                            },
                            VolumeTier {
                                min_quantity: 10,
                                basis_points: 1_000,
                            },
                        ],
                    },
                ),
                6 => (
                    Target::All,
                    Rule::Bundle {
                        components: vec![
                            BundleComponent {
                                sku: sku(first),
                                quantity: 1,
                            },
                            BundleComponent {
                                sku: sku(second),
                                quantity: 1,
                            },
                        ],
                        bundle_price_minor: 1_500,
                        max_applications: Some(2),
                    },
                ),
                7 => {
                    conditions.starts_at_ms = Some(NOW_MS - 3_600_000);
                    conditions.ends_at_ms = Some(NOW_MS + 3_600_000);
                    (
                        skus(),
                        Rule::Clearance {
                            basis_points: 4_000,
                        },
                    )
                }
                8 => {
                    conditions.recurring = vec![RecurringWindow {
                        days: vec![Weekday::Mon, Weekday::Tue, Weekday::Wed],
                        start_minute: 0,
                        end_minute: 24 * 60,
                    }];
                    (
                        skus(),
                        Rule::PercentOff {
                            basis_points: 1_500,
                        },
                    )
                }
                _ => {
                    coupon = (i % 2_000 == 9).then(|| CouponRule {
                        codes: vec![format!("CODE{i}")],
                        single_use: false,
                        total_limit: Some(1_000),
                        per_customer_limit: None,
                    });
                    match i % 1_000 {
                        9 | 309 => (
                            Target::All,
                            Rule::CartAmountOff {
                                threshold_minor: 5_000,
                                amount_minor: 500,
                            },
                        ),
                        509 | 809 => (
                            Target::All,
                            Rule::CartPercentOff {
                                threshold_minor: 10_000,
                                basis_points: 500,
                            },
                        ),
                        99 | 599 => (
                            Target::All,
                            Rule::FreeShipping {
                                threshold_minor: 4_000,
                            },
                        ),
                        _ if i % 100 == 19 => {
                            conditions.segments = vec!["gold".into()];
                            (
                                Target::Categories {
                                    categories: vec![category_number(i / 100 + 50)],
                                },
                                Rule::PercentOff { basis_points: 700 },
                            )
                        }
                        _ => {
                            // Store-only deals for stores the carts are not in.
                            conditions.stores = vec![format!("store-{}", i % 50)];
                            (skus(), Rule::AmountOff { amount_minor: 100 })
                        }
                    }
                }
            };
            let mut never_with = Vec::new();
            if i % 97 == 0 && i >= 10 {
                never_with.push(format!("P{:05}", i - 10));
            }
            Promotion {
                id: format!("P{i:05}"),
                schema: PROMOTION_SCHEMA_VERSION,
                revision: 1,
                label: format!("synthetic promotion {i}"),
                currency: Some(Currency::EUR),
                target,
                rule,
                conditions,
                stacking: Stacking {
                    priority: (i % 5) as i32,
                    exclusive: i % 53 == 0,
                    group: (i % 3 == 0).then(|| format!("g{}", i % 4)),
                    never_with,
                },
                coupon,
            }
        })
        .collect()
}

/// The stacking policy of the synthetic sets: groups `g0`–`g3` in every mode.
pub fn policy() -> StackingPolicy {
    StackingPolicy {
        version: 1,
        default_mode: GroupMode::BestForCustomer,
        groups: vec![
            GroupPolicy {
                name: "g0".into(),
                mode: GroupMode::BestForCustomer,
            },
            GroupPolicy {
                name: "g1".into(),
                mode: GroupMode::FirstByPriority,
            },
            GroupPolicy {
                name: "g2".into(),
                mode: GroupMode::All,
            },
        ],
    }
}

/// A compiled set of `count` synthetic promotions over `sku_count` SKUs.
pub fn promotion_set(count: usize, sku_count: usize) -> PromotionSet {
    PromotionSet::compile(1, promotions(count, sku_count), policy())
        .expect("synthetic promotions are valid")
}

/// A cart of `lines` distinct synthetic SKUs (spread over the catalogue), 1–4 units
/// each, EUR prices between 10 and 60, floors at 60 % of the price.
pub fn cart(lines: usize, sku_count: usize) -> Vec<CartLine> {
    let sku_count = sku_count.max(lines).max(1);
    (0..lines)
        .map(|j| {
            let index = (j * sku_count) / lines.max(1);
            let price = 1_000 + ((index * 37) % 5_000) as i64;
            CartLine {
                sku: sku(index),
                quantity: 1 + (j % 4) as u32,
                unit_list_price_minor: price + price / 10,
                unit_price_minor: price,
                unit_floor_minor: price * 6 / 10,
                category: Some(category(index)),
            }
        })
        .collect()
}
