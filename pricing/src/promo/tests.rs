//! Table tests for every rule and stacking mode (including the failures of other
//! engines listed in ANCHORS.md) and property tests of the evaluation invariants.

use chrono::Weekday;
use chrono_tz::Tz;
use proptest::prelude::*;

use super::*;
use crate::key::{Dimension, Sku};
use crate::money::Currency;

/// 2026-11-23 12:00 UTC, a Monday.
const NOW: i64 = synthetic::NOW_MS;

fn sku(s: &str) -> Sku {
    Sku::new(s).unwrap()
}

fn line(s: &str, quantity: u32, price: i64, floor: i64) -> CartLine {
    CartLine {
        sku: sku(s),
        quantity,
        unit_list_price_minor: price,
        unit_price_minor: price,
        unit_floor_minor: floor,
        category: None,
    }
}

fn in_category(mut line: CartLine, category: &str) -> CartLine {
    line.category = Some(category.into());
    line
}

fn promo(id: &str, target: Target, rule: Rule) -> Promotion {
    Promotion {
        id: id.into(),
        schema: PROMOTION_SCHEMA_VERSION,
        revision: 1,
        label: format!("label {id}"),
        currency: Some(Currency::EUR),
        target,
        rule,
        conditions: Conditions::default(),
        stacking: Stacking::default(),
        coupon: None,
    }
}

fn skus(list: &[&str]) -> Target {
    Target::Skus {
        skus: list.iter().map(|s| sku(s)).collect(),
    }
}

fn percent(id: &str, target: Target, basis_points: u32) -> Promotion {
    promo(id, target, Rule::PercentOff { basis_points })
}

fn grouped(mut p: Promotion, group: &str, priority: i32) -> Promotion {
    p.stacking.group = Some(group.into());
    p.stacking.priority = priority;
    p
}

fn policy(group: &str, mode: GroupMode) -> StackingPolicy {
    StackingPolicy {
        version: 7,
        default_mode: GroupMode::BestForCustomer,
        groups: vec![GroupPolicy {
            name: group.into(),
            mode,
        }],
    }
}

fn compile(promotions: Vec<Promotion>) -> PromotionSet {
    PromotionSet::compile(1, promotions, StackingPolicy::default()).unwrap()
}

fn ctx() -> CartContext {
    CartContext::new(Currency::EUR, NOW, Tz::UTC)
}

fn run(set: &PromotionSet, lines: &[CartLine]) -> Evaluation {
    evaluate(set, lines, &ctx()).unwrap()
}

fn priced<'a>(evaluation: &'a Evaluation, s: &str) -> &'a PricedLine {
    evaluation
        .lines
        .iter()
        .find(|l| l.sku.as_str() == s)
        .unwrap()
}

fn ids(line: &PricedLine) -> Vec<&str> {
    line.discounts
        .iter()
        .map(|d| d.promotion_id.as_str())
        .collect()
}

// ---- item rules ----

#[test]
fn percent_off_is_rounded_once_per_line() {
    let set = compile(vec![percent("P", skus(&["A"]), 1_000)]);
    // 10 % of 3 × 3.33 = 0.999 → 1.00 (not 3 × 0.33 = 0.99).
    let e = run(&set, &[line("A", 3, 333, 0), line("B", 1, 500, 0)]);
    assert_eq!(priced(&e, "A").discount_minor, 100);
    assert_eq!(priced(&e, "A").total_minor, 899);
    assert_eq!(priced(&e, "B").discount_minor, 0);
    assert_eq!(e.totals.total_minor, 899 + 500);
    assert_eq!(e.applied[0].kind, RuleKind::PercentOff);
}

#[test]
fn amount_off_is_per_unit_and_never_beyond_the_line() {
    let set = compile(vec![promo(
        "P",
        skus(&["A"]),
        Rule::AmountOff { amount_minor: 150 },
    )]);
    let e = run(&set, &[line("A", 4, 1_000, 0)]);
    assert_eq!(priced(&e, "A").discount_minor, 600);
    let e = run(&set, &[line("A", 2, 100, 0)]);
    assert_eq!(priced(&e, "A").total_minor, 0, "capped at the line total");
}

#[test]
fn fixed_price_lowers_and_never_raises() {
    let set = compile(vec![promo(
        "P",
        Target::All,
        Rule::FixedPrice {
            unit_price_minor: 700,
        },
    )]);
    let e = run(&set, &[line("A", 3, 1_000, 0), line("B", 1, 500, 0)]);
    assert_eq!(priced(&e, "A").total_minor, 2_100);
    assert_eq!(priced(&e, "B").total_minor, 500);
    assert!(priced(&e, "B").discounts.is_empty());
}

fn buy_2_get_1(max: Option<u32>) -> PromotionSet {
    compile(vec![promo(
        "B2G1",
        skus(&["A", "B"]),
        Rule::BuyXGetY {
            buy: 2,
            get: 1,
            get_basis_points: 10_000,
            max_applications: max,
        },
    )])
}

#[test]
fn buy_x_get_y_applies_per_multiple_medusa_13265() {
    let set = buy_2_get_1(None);
    for (quantity, free_units) in [(2, 0), (3, 1), (5, 1), (6, 2), (9, 3)] {
        let e = run(&set, &[line("A", quantity, 1_000, 0)]);
        assert_eq!(
            priced(&e, "A").discount_minor,
            free_units * 1_000,
            "{quantity} units"
        );
    }
}

#[test]
fn buy_x_get_y_honours_its_maximum() {
    let set = buy_2_get_1(Some(2));
    let e = run(&set, &[line("A", 9, 1_000, 0)]);
    assert_eq!(
        priced(&e, "A").discount_minor,
        2_000,
        "at most two free units"
    );
}

#[test]
fn buy_x_get_y_gives_the_cheapest_units_across_lines() {
    let set = buy_2_get_1(None);
    let e = run(&set, &[line("A", 2, 1_000, 0), line("B", 4, 300, 0)]);
    // Six units, two applications: the two cheapest (B at 3.00) are free.
    assert_eq!(priced(&e, "B").discount_minor, 600);
    assert_eq!(priced(&e, "A").discount_minor, 0);
}

#[test]
fn buy_n_get_percent_off_discounts_complete_groups() {
    let set = compile(vec![promo(
        "N",
        skus(&["A"]),
        Rule::BuyNPercentOff {
            quantity: 2,
            basis_points: 3_000,
            max_applications: None,
        },
    )]);
    let e = run(&set, &[line("A", 1, 1_000, 0)]);
    assert_eq!(priced(&e, "A").discount_minor, 0);
    // Three units: one group of two gets 30 %, the third pays full price.
    let e = run(&set, &[line("A", 3, 1_000, 0)]);
    assert_eq!(priced(&e, "A").discount_minor, 600);
}

#[test]
fn tiered_volume_uses_the_highest_tier_reached_by_the_pool() {
    let set = compile(vec![promo(
        "T",
        Target::Categories {
            categories: vec!["drinks".into()],
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
    )]);
    let drinks = |a, b| {
        vec![
            in_category(line("A", a, 1_000, 0), "drinks"),
            in_category(line("B", b, 2_000, 0), "drinks"),
            line("C", 20, 100, 0),
        ]
    };
    let e = run(&set, &drinks(1, 1));
    assert_eq!(e.totals.discount_minor, 0);
    let e = run(&set, &drinks(2, 1));
    assert_eq!(priced(&e, "A").discount_minor, 100);
    assert_eq!(priced(&e, "B").discount_minor, 100);
    let e = run(&set, &drinks(5, 5));
    assert_eq!(priced(&e, "A").discount_minor, 500);
    assert_eq!(priced(&e, "B").discount_minor, 1_000);
    assert_eq!(priced(&e, "C").discount_minor, 0, "not in the category");
}

#[test]
fn bundle_prices_complete_sets_and_spreads_the_saving() {
    let set = compile(vec![promo(
        "COMBO",
        Target::All,
        Rule::Bundle {
            components: vec![
                BundleComponent {
                    sku: sku("BURGER"),
                    quantity: 1,
                },
                BundleComponent {
                    sku: sku("FRIES"),
                    quantity: 1,
                },
            ],
            bundle_price_minor: 1_200,
            max_applications: None,
        },
    )]);
    let e = run(
        &set,
        &[line("BURGER", 2, 1_000, 0), line("FRIES", 1, 600, 0)],
    );
    // One complete set worth 16.00 for 12.00: 4.00 spread 10:6 → 2.50 / 1.50.
    assert_eq!(priced(&e, "BURGER").discount_minor, 250);
    assert_eq!(priced(&e, "FRIES").discount_minor, 150);
    let e = run(&set, &[line("BURGER", 2, 1_000, 0)]);
    assert_eq!(e.totals.discount_minor, 0, "incomplete bundle");
}

#[test]
fn clearance_is_reported_as_clearance() {
    let set = compile(vec![promo(
        "CLR",
        skus(&["A"]),
        Rule::Clearance {
            basis_points: 5_000,
        },
    )]);
    let e = run(&set, &[line("A", 1, 1_000, 0)]);
    assert_eq!(priced(&e, "A").discounts[0].kind, RuleKind::Clearance);
    assert_eq!(priced(&e, "A").total_minor, 500);
}

// ---- cart rules and thresholds ----

fn cart_amount(threshold: i64, amount: i64) -> Promotion {
    promo(
        "CART",
        Target::All,
        Rule::CartAmountOff {
            threshold_minor: threshold,
            amount_minor: amount,
        },
    )
}

#[test]
fn cart_discount_cannot_push_itself_under_its_threshold_solidus_2452_vendure_1012() {
    let set = compile(vec![cart_amount(10_000, 1_000)]);
    // 105.00 reaches 100.00; after 10.00 off the cart is at 95.00 and keeps the discount.
    let e = run(&set, &[line("A", 1, 6_000, 0), line("B", 1, 4_500, 0)]);
    assert_eq!(e.totals.cart_discount_minor, 1_000);
    assert_eq!(e.totals.total_minor, 9_500);
    // Evaluating again (what a re-render or checkout does) gives the same answer.
    assert_eq!(
        run(&set, &[line("B", 1, 4_500, 0), line("A", 1, 6_000, 0)]),
        e
    );
}

#[test]
fn threshold_is_checked_after_item_discounts() {
    let set = compile(vec![
        percent("ITEM", skus(&["A"]), 1_000),
        cart_amount(10_000, 1_000),
    ]);
    // 105.00 before, 99.00 after the item discount: under the threshold.
    let e = run(&set, &[line("A", 1, 6_000, 0), line("B", 1, 4_500, 0)]);
    assert_eq!(e.totals.item_discount_minor, 600);
    assert_eq!(e.totals.cart_discount_minor, 0);
    assert!(e
        .explanation
        .iter()
        .any(|s| s.contains("CART") && s.contains("under its threshold 100.00 EUR")));
}

#[test]
fn cart_percent_is_taken_once_and_spread_to_the_cent_saleor_12040_vendure_3003() {
    let set = compile(vec![promo(
        "TEN",
        Target::All,
        Rule::CartPercentOff {
            threshold_minor: 0,
            basis_points: 1_000,
        },
    )]);
    // 10 % of 9.99 is 1.00 (rounded once), spread 34/33/33; per-line rounding would
    // give 0.99.
    let e = run(
        &set,
        &[
            line("A", 1, 333, 0),
            line("B", 1, 333, 0),
            line("C", 1, 333, 0),
        ],
    );
    assert_eq!(e.totals.cart_discount_minor, 100);
    let shares: Vec<i64> = e.lines.iter().map(|l| l.discount_minor).collect();
    assert_eq!(shares, vec![34, 33, 33], "leftover cent to the first SKU");

    // Many lines: 15 % of 100 × 1.99 = 29.85 exactly, no drift.
    let lines: Vec<CartLine> = (0..100)
        .map(|i| line(&format!("S{i:03}"), 1, 199, 0))
        .collect();
    let e = run(&set, &lines);
    assert_eq!(e.totals.cart_discount_minor, 1_990);
    assert_eq!(e.lines.iter().map(|l| l.discount_minor).sum::<i64>(), 1_990);
    assert!(e
        .lines
        .iter()
        .all(|l| l.discount_minor == 19 || l.discount_minor == 20));
}

#[test]
fn free_shipping_is_checked_on_what_the_customer_pays() {
    let mut coupon = promo(
        "TENOFF",
        Target::All,
        Rule::CartPercentOff {
            threshold_minor: 0,
            basis_points: 1_000,
        },
    );
    coupon.coupon = Some(CouponRule {
        codes: vec!["save10".into()],
        ..CouponRule::default()
    });
    let set = compile(vec![
        promo(
            "SHIP",
            Target::All,
            Rule::FreeShipping {
                threshold_minor: 4_000,
            },
        ),
        coupon,
    ]);
    let lines = [line("A", 1, 4_200, 0)];
    let mut context = ctx();
    context.shipping_fee_minor = 499;
    let e = evaluate(&set, &lines, &context).unwrap();
    assert_eq!(e.shipping_promotion_id.as_deref(), Some("SHIP"));
    assert_eq!(e.totals.shipping_minor, 0);
    assert_eq!(e.totals.total_minor, 4_200);

    // With the coupon the goods cost 37.80: under 40.00, shipping is charged.
    context.coupons = vec![CouponInput::new("SAVE10")];
    let e = evaluate(&set, &lines, &context).unwrap();
    assert_eq!(e.shipping_promotion_id, None);
    assert_eq!(e.totals.total_minor, 3_780 + 499);
    assert_eq!(e.coupons[0].status, CouponStatus::Applied);
}

// ---- conditions ----

#[test]
fn segment_member_channel_and_store_conditions() {
    let mut members = percent("GOLD", Target::All, 1_000);
    members.conditions.segments = vec!["gold".into()];
    let mut app = percent("APP", Target::All, 1_000);
    app.conditions.channels = vec!["app".into()];
    app.conditions.stores = vec!["s1".into()];
    let mut signed_in = percent("MEMBER", Target::All, 1_000);
    signed_in.conditions.members_only = true;
    let set = compile(vec![members, app, signed_in]);
    let lines = [line("A", 1, 1_000, 0)];

    let e = run(&set, &lines);
    assert!(e.applied.is_empty(), "anonymous web shopper gets nothing");

    let mut context = ctx();
    context.segment = Dimension::new("gold").unwrap();
    context.channel = Dimension::new("app").unwrap();
    context.store = Dimension::new("s1").unwrap();
    context.customer_id = Some("c-1".into());
    let e = evaluate(&set, &lines, &context).unwrap();
    assert_eq!(ids(priced(&e, "A")), vec!["APP", "GOLD", "MEMBER"]);

    context.store = Dimension::new("s2").unwrap();
    let e = evaluate(&set, &lines, &context).unwrap();
    assert_eq!(ids(priced(&e, "A")), vec!["GOLD", "MEMBER"]);
}

#[test]
fn flash_sale_window_is_half_open() {
    let mut flash = percent("FLASH", Target::All, 2_000);
    flash.conditions.starts_at_ms = Some(NOW);
    flash.conditions.ends_at_ms = Some(NOW + 60_000);
    let set = compile(vec![flash]);
    let lines = [line("A", 1, 1_000, 0)];
    for (at, applies) in [
        (NOW - 1, false),
        (NOW, true),
        (NOW + 59_999, true),
        (NOW + 60_000, false),
    ] {
        let mut context = ctx();
        context.now_ms = at;
        let e = evaluate(&set, &lines, &context).unwrap();
        assert_eq!(!e.applied.is_empty(), applies, "at {at}");
    }
}

#[test]
fn happy_hour_is_evaluated_in_the_store_time_zone() {
    let mut happy = percent("HAPPY", Target::All, 2_000);
    happy.conditions.recurring = vec![RecurringWindow {
        days: vec![Weekday::Mon, Weekday::Fri],
        start_minute: 17 * 60,
        end_minute: 19 * 60,
    }];
    let set = compile(vec![happy]);
    let lines = [line("A", 1, 1_000, 0)];
    let hour = 3_600_000;
    let applies = |now_ms: i64, tz: Tz| {
        let mut context = ctx();
        context.now_ms = now_ms;
        context.time_zone = tz;
        !evaluate(&set, &lines, &context).unwrap().applied.is_empty()
    };
    // NOW is Monday 12:00 UTC; Paris is UTC+1 in November.
    assert!(applies(NOW + 4 * hour + hour / 2, chrono_tz::Europe::Paris)); // 17:30 Paris
    assert!(!applies(NOW + 4 * hour + hour / 2, Tz::UTC)); // 16:30 UTC
    assert!(!applies(NOW + 6 * hour, chrono_tz::Europe::Paris)); // 19:00 Paris, end exclusive
    assert!(applies(NOW + 5 * hour, Tz::UTC)); // 17:00 UTC, start inclusive
    assert!(!applies(NOW + 24 * hour + 5 * hour, Tz::UTC)); // Tuesday
                                                            // Summer time: 2026-06-01 is a Monday; 15:30 UTC is 17:30 in Paris (UTC+2).
    let june_first_midnight_utc = 1_780_272_000_000;
    assert!(applies(
        june_first_midnight_utc + 15 * hour + hour / 2,
        chrono_tz::Europe::Paris
    ));
}

#[test]
fn promotions_in_another_currency_do_not_apply() {
    let mut usd = percent("USD", Target::All, 1_000);
    usd.currency = Some(Currency::USD);
    let set = compile(vec![usd]);
    assert!(run(&set, &[line("A", 1, 1_000, 0)]).applied.is_empty());
}

// ---- coupons ----

#[test]
fn coupon_limits_and_outcomes() {
    let mut p = percent("VIP", Target::All, 1_000);
    p.coupon = Some(CouponRule {
        codes: vec!["VIP-1".into(), "vip-2".into()],
        single_use: true,
        total_limit: Some(100),
        per_customer_limit: Some(1),
    });
    let mut far = cart_amount(1_000_000, 100);
    far.id = "FAR".into();
    far.coupon = Some(CouponRule {
        codes: vec!["BIGSPENDER".into()],
        ..CouponRule::default()
    });
    let set = compile(vec![p, far]);
    let lines = [line("A", 1, 1_000, 0)];
    let status = |coupon: CouponInput, customer: Option<&str>| {
        let mut context = ctx();
        context.customer_id = customer.map(str::to_owned);
        context.coupons = vec![coupon];
        let e = evaluate(&set, &lines, &context).unwrap();
        (e.coupons[0].status, e.totals.discount_minor)
    };
    assert_eq!(
        status(CouponInput::new("vip-1"), Some("c")),
        (CouponStatus::Applied, 100),
        "codes are case-insensitive"
    );
    assert_eq!(
        status(CouponInput::new("NOPE"), Some("c")),
        (CouponStatus::Unknown, 0)
    );
    assert_eq!(
        status(CouponInput::new("VIP-1"), None),
        (CouponStatus::CustomerRequired, 0)
    );
    let used = |code, promotion, customer| CouponInput {
        code_redemptions: code,
        promotion_redemptions: promotion,
        customer_redemptions: customer,
        ..CouponInput::new("VIP-2")
    };
    assert_eq!(
        status(used(1, 1, 0), Some("c")),
        (CouponStatus::AlreadyRedeemed, 0)
    );
    assert_eq!(
        status(used(0, 100, 0), Some("c")),
        (CouponStatus::TotalLimitReached, 0)
    );
    assert_eq!(
        status(used(0, 5, 1), Some("c")),
        (CouponStatus::CustomerLimitReached, 0)
    );
    assert_eq!(
        status(CouponInput::new("bigspender"), None),
        (CouponStatus::NotApplicable, 0)
    );

    // Two codes of one promotion count once; output is sorted whatever the input order.
    let mut context = ctx();
    context.customer_id = Some("c".into());
    context.coupons = vec![CouponInput::new("vip-2"), CouponInput::new("VIP-1")];
    let e = evaluate(&set, &lines, &context).unwrap();
    assert_eq!(e.totals.discount_minor, 100);
    let outcomes: Vec<(&str, CouponStatus)> = e
        .coupons
        .iter()
        .map(|c| (c.code.as_str(), c.status))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("VIP-1", CouponStatus::Applied),
            ("VIP-2", CouponStatus::SamePromotion)
        ]
    );
    assert_eq!(e.applied[0].coupon_code.as_deref(), Some("VIP-1"));
}

// ---- stacking ----

fn two_percentages(mode: GroupMode) -> Evaluation {
    let ten = grouped(percent("TEN", Target::All, 1_000), "g", 5);
    let twenty = grouped(percent("TWENTY", Target::All, 2_000), "g", 1);
    let set = PromotionSet::compile(1, vec![ten, twenty], policy("g", mode)).unwrap();
    run(&set, &[line("A", 1, 10_000, 0)])
}

#[test]
fn two_percentages_in_one_group_best_first_all() {
    let best = two_percentages(GroupMode::BestForCustomer);
    assert_eq!(ids(&best.lines[0]), vec!["TWENTY"]);
    assert_eq!(best.totals.discount_minor, 2_000);

    let first = two_percentages(GroupMode::FirstByPriority);
    assert_eq!(ids(&first.lines[0]), vec!["TEN"], "higher priority first");
    assert_eq!(first.totals.discount_minor, 1_000);

    // `all` compounds: 10 % then 20 % of the rest = 28 %, not 30 %.
    let all = two_percentages(GroupMode::All);
    assert_eq!(ids(&all.lines[0]), vec!["TEN", "TWENTY"]);
    assert_eq!(all.totals.discount_minor, 1_000 + 1_800);
    assert_eq!(all.policy_version, 7);
}

#[test]
fn ungrouped_promotions_compound() {
    let set = compile(vec![
        percent("TEN", Target::All, 1_000),
        percent("TWENTY", Target::All, 2_000),
    ]);
    let e = run(&set, &[line("A", 1, 10_000, 0)]);
    assert_eq!(e.totals.discount_minor, 2_800);
}

#[test]
fn best_for_customer_is_per_line_when_members_are_disjoint() {
    let a = grouped(percent("A10", skus(&["A"]), 1_000), "g", 0);
    let b = grouped(percent("B20", skus(&["B"]), 2_000), "g", 0);
    let set =
        PromotionSet::compile(1, vec![a, b], policy("g", GroupMode::BestForCustomer)).unwrap();
    let e = run(&set, &[line("A", 1, 1_000, 0), line("B", 1, 1_000, 0)]);
    assert_eq!(ids(priced(&e, "A")), vec!["A10"]);
    assert_eq!(ids(priced(&e, "B")), vec!["B20"]);
}

#[test]
fn group_claims_carry_from_item_to_cart_level() {
    let item = grouped(percent("ITEM", skus(&["A"]), 1_000), "g", 0);
    let mut cart = grouped(cart_amount(0, 300), "g", 0);
    cart.id = "CART".into();
    let set = PromotionSet::compile(1, vec![item, cart], policy("g", GroupMode::FirstByPriority))
        .unwrap();
    let e = run(&set, &[line("A", 1, 1_000, 0), line("B", 1, 1_000, 0)]);
    assert_eq!(ids(priced(&e, "A")), vec!["ITEM"]);
    assert_eq!(ids(priced(&e, "B")), vec!["CART"], "A was taken by ITEM");
    assert_eq!(priced(&e, "B").discount_minor, 300);
}

#[test]
fn exclusive_promotion_keeps_everything_else_off_its_lines() {
    let mut clearance = promo(
        "CLR",
        skus(&["A"]),
        Rule::Clearance {
            basis_points: 3_000,
        },
    );
    clearance.stacking.exclusive = true;
    clearance.stacking.priority = 10;
    let set = compile(vec![
        clearance,
        percent("ALL10", Target::All, 1_000),
        cart_amount(0, 200),
    ]);
    let e = run(&set, &[line("A", 1, 1_000, 0), line("B", 1, 1_000, 0)]);
    assert_eq!(ids(priced(&e, "A")), vec!["CLR"]);
    assert_eq!(priced(&e, "A").total_minor, 700);
    assert_eq!(ids(priced(&e, "B")), vec!["ALL10", "CART"]);
    assert_eq!(priced(&e, "B").total_minor, 700);

    // A lower-priority exclusive promotion does not touch a line already discounted.
    let mut late = promo(
        "LATE",
        skus(&["A"]),
        Rule::Clearance {
            basis_points: 3_000,
        },
    );
    late.stacking.exclusive = true;
    late.stacking.priority = -1;
    let set = compile(vec![late, percent("ALL10", Target::All, 1_000)]);
    let e = run(&set, &[line("A", 1, 1_000, 0)]);
    assert_eq!(ids(priced(&e, "A")), vec!["ALL10"]);
}

#[test]
fn never_with_is_symmetric_and_precedence_decides() {
    let mut a = percent("A", Target::All, 1_000);
    a.stacking.priority = 1;
    let mut b = percent("B", Target::All, 2_000);
    b.stacking.never_with = vec!["A".into()];
    let set = compile(vec![a, b]);
    let e = run(&set, &[line("X", 1, 1_000, 0)]);
    assert_eq!(ids(&e.lines[0]), vec!["A"]);
    assert!(e
        .explanation
        .iter()
        .any(|s| s.contains("[B, percent_off] not applied: never combined with")));
}

// ---- floors ----

#[test]
fn item_discounts_are_clamped_at_the_floor_and_explained() {
    let set = compile(vec![
        percent("HALF", skus(&["A"]), 5_000),
        percent("MORE", skus(&["A"]), 1_000),
    ]);
    let e = run(&set, &[line("A", 2, 1_000, 700)]);
    let a = priced(&e, "A");
    assert_eq!(a.total_minor, 1_400, "2 × 7.00 floor");
    assert!(a.clamped);
    assert_eq!(a.discounts.len(), 1, "MORE had nothing left to give");
    assert_eq!(a.discounts[0].clamped_from_minor, Some(1_000));
    assert_eq!(e.clamps.len(), 2);
    assert!(e
        .explanation
        .iter()
        .any(|s| s.contains("may not go below its floor 14.00 EUR")));
}

#[test]
fn cart_discount_passes_what_a_floored_line_cannot_take() {
    let set = compile(vec![cart_amount(0, 1_000)]);
    // A can take 1.00, B up to 10.00; equal weights would give 5.00 each.
    let e = run(&set, &[line("A", 1, 1_000, 900), line("B", 1, 1_000, 0)]);
    assert_eq!(priced(&e, "A").discount_minor, 100);
    assert_eq!(priced(&e, "B").discount_minor, 900);
    assert!(e.clamps.is_empty(), "everything was placed");

    let e = run(&set, &[line("A", 1, 1_000, 900), line("B", 1, 1_000, 800)]);
    assert_eq!(e.totals.cart_discount_minor, 300);
    assert_eq!(e.clamps[0].requested_minor, 1_000);
    assert_eq!(e.clamps[0].granted_minor, 300);
    assert_eq!(e.clamps[0].sku, None);
}

// ---- input handling ----

#[test]
fn lines_with_the_same_sku_are_merged_or_rejected() {
    let set = compile(vec![buy_2_get_1_promo()]);
    let e = run(&set, &[line("A", 1, 1_000, 0), line("A", 2, 1_000, 0)]);
    assert_eq!(e.lines.len(), 1);
    assert_eq!(e.lines[0].quantity, 3);
    assert_eq!(e.totals.discount_minor, 1_000);
    assert_eq!(
        evaluate(
            &set,
            &[line("A", 1, 1_000, 0), line("A", 1, 900, 0)],
            &ctx()
        ),
        Err(EvalError::ConflictingLines(sku("A")))
    );
}

fn buy_2_get_1_promo() -> Promotion {
    promo(
        "B2G1",
        Target::All,
        Rule::BuyXGetY {
            buy: 2,
            get: 1,
            get_basis_points: 10_000,
            max_applications: None,
        },
    )
}

#[test]
fn bad_carts_are_rejected_with_a_reason() {
    let set = compile(vec![]);
    assert_eq!(evaluate(&set, &[], &ctx()), Err(EvalError::EmptyCart));
    assert!(matches!(
        evaluate(&set, &[line("A", 0, 1_000, 0)], &ctx()),
        Err(EvalError::Quantity { quantity: 0, .. })
    ));
    assert!(matches!(
        evaluate(&set, &[line("A", 1, -5, 0)], &ctx()),
        Err(EvalError::Price {
            field: "unit_list_price_minor",
            ..
        })
    ));
    assert!(matches!(
        evaluate(&set, &[line("A", 1, 500, 600)], &ctx()),
        Err(EvalError::PriceBelowFloor { .. })
    ));
}

// ---- definitions ----

fn reason(p: Promotion) -> Invalid {
    match p.validate() {
        Err(PromotionError::Invalid { reason, .. }) => reason,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn invalid_definitions_name_their_problem() {
    assert!(matches!(
        reason(percent("P", Target::All, 0)),
        Invalid::BasisPoints { value: 0, .. }
    ));
    assert!(matches!(
        reason(percent("P", Target::All, 10_001)),
        Invalid::BasisPoints { .. }
    ));
    let mut p = promo("P", Target::All, Rule::AmountOff { amount_minor: 5 });
    p.currency = None;
    assert_eq!(reason(p), Invalid::MissingCurrency(RuleKind::AmountOff));
    assert!(matches!(
        reason(percent("bad id", Target::All, 1)),
        Invalid::Id(_)
    ));
    assert_eq!(
        reason(percent("P", Target::Skus { skus: vec![] }, 1)),
        Invalid::EmptyTarget
    );
    let mut p = percent("P", Target::All, 1);
    p.conditions.starts_at_ms = Some(10);
    p.conditions.ends_at_ms = Some(10);
    assert!(matches!(reason(p), Invalid::Window(_)));
    let mut p = percent("P", Target::All, 1);
    p.conditions.recurring = vec![RecurringWindow {
        days: vec![Weekday::Sat],
        start_minute: 22 * 60,
        end_minute: 2 * 60,
    }];
    assert!(matches!(reason(p), Invalid::Window(_)));
    let p = promo(
        "P",
        Target::All,
        Rule::TieredVolume {
            tiers: vec![
                VolumeTier {
                    min_quantity: 5,
                    basis_points: 500,
                },
                VolumeTier {
                    min_quantity: 3,
                    basis_points: 1_000,
                },
            ],
        },
    );
    assert!(matches!(reason(p), Invalid::Tiers(_)));
    let p = promo(
        "P",
        skus(&["A"]),
        Rule::Bundle {
            components: vec![],
            bundle_price_minor: 1,
            max_applications: None,
        },
    );
    assert_eq!(reason(p), Invalid::BundleTarget);
    let mut p = percent("P", Target::All, 1);
    p.coupon = Some(CouponRule {
        codes: vec!["no spaces".into()],
        ..CouponRule::default()
    });
    assert!(matches!(reason(p), Invalid::Coupon(_)));
    let mut p = percent("P", Target::All, 1);
    p.stacking.never_with = vec!["P".into()];
    assert!(matches!(reason(p), Invalid::Stacking(_)));
    let mut p = buy_2_get_1_promo();
    p.rule = Rule::BuyXGetY {
        buy: 0,
        get: 1,
        get_basis_points: 10_000,
        max_applications: None,
    };
    assert_eq!(reason(p), Invalid::ZeroQuantity { field: "buy" });
}

#[test]
fn set_rejects_duplicate_ids_and_codes() {
    let one = percent("P", Target::All, 1);
    let mut same_id_other_priority = percent("P", Target::All, 2);
    same_id_other_priority.stacking.priority = 9;
    let between = percent("O", Target::All, 1);
    for duplicate in [one.clone(), same_id_other_priority] {
        assert_eq!(
            PromotionSet::compile(
                1,
                vec![one.clone(), between.clone(), duplicate],
                StackingPolicy::default()
            )
            .unwrap_err(),
            PromotionError::DuplicateId("P".into())
        );
    }
    let mut a = percent("A", Target::All, 1);
    let mut b = percent("B", Target::All, 1);
    a.coupon = Some(CouponRule {
        codes: vec!["SAME".into()],
        ..CouponRule::default()
    });
    b.coupon = Some(CouponRule {
        codes: vec!["same".into()],
        ..CouponRule::default()
    });
    assert!(matches!(
        PromotionSet::compile(1, vec![a, b], StackingPolicy::default()),
        Err(PromotionError::DuplicateCouponCode { .. })
    ));
    let twice = StackingPolicy {
        version: 1,
        default_mode: GroupMode::All,
        groups: vec![
            GroupPolicy {
                name: "g".into(),
                mode: GroupMode::All,
            },
            GroupPolicy {
                name: "g".into(),
                mode: GroupMode::BestForCustomer,
            },
        ],
    };
    assert!(matches!(
        PromotionSet::compile(1, vec![], twice),
        Err(PromotionError::Policy(_))
    ));
}

#[test]
fn definitions_round_trip_through_json() {
    let json = r#"{
        "id": "HAPPY-1", "label": "Happy hour", "currency": "EUR",
        "target": {"type": "categories", "categories": ["drinks"]},
        "rule": {"type": "buy_x_get_y", "buy": 2, "get": 1, "max_applications": 3},
        "conditions": {"channels": ["pos"], "recurring": [{"days": ["Fri"], "start_minute": 1020, "end_minute": 1140}]},
        "stacking": {"priority": 5, "group": "drinks", "never_with": ["OTHER"]}
    }"#;
    let p: Promotion = serde_json::from_str(json).unwrap();
    assert_eq!(p.schema, PROMOTION_SCHEMA_VERSION);
    assert_eq!(
        p.rule,
        Rule::BuyXGetY {
            buy: 2,
            get: 1,
            get_basis_points: 10_000,
            max_applications: Some(3)
        }
    );
    p.validate().unwrap();
    let again: Promotion = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
    assert_eq!(again, p);
}

#[test]
fn synthetic_set_is_valid_and_exercises_the_engine() {
    let set = synthetic::promotion_set(10_000, 10_000);
    assert_eq!(set.len(), 10_000);
    let e = evaluate(&set, &synthetic::cart(20, 10_000), &synthetic_ctx()).unwrap();
    assert!(e.applied.len() >= 10, "applied: {}", e.applied.len());
    assert!(e.totals.discount_minor > 0);
}

fn synthetic_ctx() -> CartContext {
    let mut context = CartContext::new(Currency::EUR, synthetic::NOW_MS, chrono_tz::Europe::Paris);
    context.segment = Dimension::new("gold").unwrap();
    context.shipping_fee_minor = 499;
    context.coupons = vec![CouponInput::new("CODE9")];
    context
}

/// This thread's CPU time (user + system) in clock ticks, from `/proc/thread-self/stat`.
fn thread_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Times evaluation of a 20-line cart against 10,000 promotions. Timing is meaningless
/// in debug builds and on a shared machine under load, so this only runs on request:
/// `cargo test --release -p edgeprice-pricing -- --ignored --nocapture ten_thousand`.
/// Wall-clock percentiles suffer from preemption on a busy machine; the CPU time per
/// evaluation (thread utime + stime over all iterations, 10 ms ticks) does not.
#[test]
#[ignore = "timing; run in release mode on request"]
fn ten_thousand_promotions_twenty_lines_timing() {
    const ITERATIONS: u32 = 5_000;
    let definitions = synthetic::promotions(10_000, 10_000);
    let start = std::time::Instant::now();
    let compiled = PromotionSet::compile(1, definitions, synthetic::policy()).unwrap();
    eprintln!("compiling 10,000 promotions: {:?}", start.elapsed());
    std::hint::black_box(compiled);
    for (sku_count, explain) in [
        (10_000, true),
        (10_000, false),
        (1_000, true),
        (1_000, false),
    ] {
        let set = synthetic::promotion_set(10_000, sku_count);
        let cart = synthetic::cart(20, sku_count);
        let mut context = synthetic_ctx();
        context.explain = explain;
        let mut samples = Vec::with_capacity(ITERATIONS as usize);
        let cpu_before = thread_cpu_ticks();
        for _ in 0..ITERATIONS {
            let start = std::time::Instant::now();
            let e = evaluate(&set, &cart, &context).unwrap();
            samples.push(start.elapsed());
            std::hint::black_box(e);
        }
        let cpu_us = cpu_before
            .zip(thread_cpu_ticks())
            .map(|(before, after)| (after - before) as f64 * 10_000.0 / ITERATIONS as f64);
        samples.sort();
        let pct = |p: usize| samples[samples.len() * p / 100];
        eprintln!(
            "10,000 promotions over {sku_count} SKUs, 20 lines, explain {explain}: \
             p50 {:?} p99 {:?} max {:?}, CPU {} µs/evaluation",
            pct(50),
            pct(99),
            samples[samples.len() - 1],
            cpu_us.map_or("unknown".to_owned(), |us| format!("{us:.0}"))
        );
    }
}

// ---- properties ----

fn arb_rule() -> impl Strategy<Value = Rule> {
    prop_oneof![
        (1u32..=10_000).prop_map(|basis_points| Rule::PercentOff { basis_points }),
        (1i64..3_000).prop_map(|amount_minor| Rule::AmountOff { amount_minor }),
        (0i64..3_000).prop_map(|unit_price_minor| Rule::FixedPrice { unit_price_minor }),
        (
            1u32..4,
            1u32..3,
            1u32..=10_000,
            proptest::option::of(1u32..4)
        )
            .prop_map(
                |(buy, get, get_basis_points, max_applications)| Rule::BuyXGetY {
                    buy,
                    get,
                    get_basis_points,
                    max_applications
                }
            ),
        (1u32..4, 1u32..=10_000).prop_map(|(quantity, basis_points)| Rule::BuyNPercentOff {
            quantity,
            basis_points,
            max_applications: None
        }),
        (1u32..4, 1u32..5_000).prop_map(|(min_quantity, basis_points)| Rule::TieredVolume {
            tiers: vec![
                VolumeTier {
                    min_quantity,
                    basis_points
                },
                VolumeTier {
                    min_quantity: min_quantity + 3,
                    basis_points: basis_points + 1_000
                },
            ]
        }),
        (0usize..6, 0usize..6, 0i64..3_000).prop_map(|(a, b, bundle_price_minor)| {
            Rule::Bundle {
                components: vec![
                    BundleComponent {
                        sku: pool_sku(a),
                        quantity: 1,
                    },
                    BundleComponent {
                        sku: pool_sku((a + 1 + b % 5) % 6),
                        quantity: 1 + (b % 2) as u32,
                    },
                ],
                bundle_price_minor,
                max_applications: None,
            }
        }),
        (1u32..=10_000).prop_map(|basis_points| Rule::Clearance { basis_points }),
        (0i64..10_000, 1i64..5_000).prop_map(|(threshold_minor, amount_minor)| {
            Rule::CartAmountOff {
                threshold_minor,
                amount_minor,
            }
        }),
        (0i64..10_000, 1u32..=10_000).prop_map(|(threshold_minor, basis_points)| {
            Rule::CartPercentOff {
                threshold_minor,
                basis_points,
            }
        }),
        (0i64..10_000).prop_map(|threshold_minor| Rule::FreeShipping { threshold_minor }),
    ]
}

fn pool_sku(index: usize) -> Sku {
    sku(&format!("S{index}"))
}

fn arb_promotion(index: usize) -> impl Strategy<Value = Promotion> {
    (
        arb_rule(),
        proptest::option::of(proptest::collection::vec(0usize..6, 1..3)),
        0i32..3,
        proptest::bool::weighted(0.15),
        proptest::option::of(0usize..3),
        proptest::option::of(0usize..8),
        proptest::bool::weighted(0.3),
    )
        .prop_map(
            move |(rule, target, priority, exclusive, group, never, coupon)| {
                let target = match (&rule, target) {
                    (Rule::Bundle { .. }, _) | (_, None) => Target::All,
                    (_, Some(indexes)) => Target::Skus {
                        skus: indexes.into_iter().map(pool_sku).collect(),
                    },
                };
                let mut p = promo(&format!("P{index}"), target, rule);
                p.stacking = Stacking {
                    priority,
                    exclusive,
                    group: group.map(|g| format!("g{g}")),
                    never_with: never
                        .filter(|n| *n != index)
                        .map(|n| format!("P{n}"))
                        .into_iter()
                        .collect(),
                };
                if coupon {
                    p.coupon = Some(CouponRule {
                        codes: vec![format!("C{index}")],
                        ..CouponRule::default()
                    });
                }
                p
            },
        )
}

fn arb_set() -> impl Strategy<Value = PromotionSet> {
    (0usize..8)
        .prop_flat_map(|count| (0..count).map(arb_promotion).collect::<Vec<_>>())
        .prop_flat_map(|promotions| {
            let modes = prop_oneof![
                Just(GroupMode::BestForCustomer),
                Just(GroupMode::FirstByPriority),
                Just(GroupMode::All)
            ];
            (Just(promotions), proptest::collection::vec(modes, 3))
        })
        .prop_map(|(promotions, modes)| {
            let policy = StackingPolicy {
                version: 1,
                default_mode: GroupMode::BestForCustomer,
                groups: modes
                    .into_iter()
                    .enumerate()
                    .map(|(g, mode)| GroupPolicy {
                        name: format!("g{g}"),
                        mode,
                    })
                    .collect(),
            };
            PromotionSet::compile(1, promotions, policy).unwrap()
        })
}

fn arb_cart() -> impl Strategy<Value = Vec<CartLine>> {
    proptest::sample::subsequence((0..6).collect::<Vec<usize>>(), 1..=6).prop_flat_map(|indexes| {
        let lines: Vec<_> = indexes
            .into_iter()
            .map(|i| {
                (1u32..6, 0i64..5_000, 0i64..=100).prop_map(move |(quantity, price, floor_pct)| {
                    CartLine {
                        sku: pool_sku(i),
                        quantity,
                        unit_list_price_minor: price + price / 5,
                        unit_price_minor: price,
                        unit_floor_minor: price * floor_pct / 100,
                        category: None,
                    }
                })
            })
            .collect();
        lines.prop_shuffle()
    })
}

fn arb_coupons() -> impl Strategy<Value = Vec<CouponInput>> {
    proptest::sample::subsequence((0..8).collect::<Vec<usize>>(), 0..=8)
        .prop_map(|codes| {
            codes
                .into_iter()
                .map(|i| CouponInput::new(&format!("c{i}")))
                .collect::<Vec<_>>()
        })
        .prop_shuffle()
}

proptest! {
    #[test]
    fn evaluation_invariants(
        set in arb_set(),
        cart in arb_cart(),
        shipping in 0i64..1_000,
        coupons in arb_coupons(),
    ) {
        let mut context = ctx();
        context.shipping_fee_minor = shipping;
        context.coupons = coupons;
        let e = evaluate(&set, &cart, &context).unwrap();
        let t = e.totals;
        prop_assert!(t.total_minor >= 0 && t.merchandise_minor >= 0 && t.shipping_minor >= 0);
        let mut line_discounts = 0;
        for line in &e.lines {
            prop_assert!(line.total_minor >= line.unit_floor_minor * line.quantity as i64,
                "{} below its floor", line.sku);
            let sum: i64 = line.discounts.iter().map(|d| d.amount_minor).sum();
            prop_assert_eq!(sum, line.discount_minor);
            prop_assert!(line.discounts.iter().all(|d| d.amount_minor > 0));
            prop_assert_eq!(line.total_minor, line.subtotal_minor - line.discount_minor);
            line_discounts += sum;
        }
        prop_assert_eq!(line_discounts, t.discount_minor);
        prop_assert_eq!(t.discount_minor, t.item_discount_minor + t.cart_discount_minor);
        prop_assert_eq!(t.total_minor, t.subtotal_minor - t.discount_minor + t.shipping_minor);
        // Each applied promotion's amount is exactly what its lines received.
        for applied in e.applied.iter().filter(|a| a.level != Level::Shipping) {
            let on_lines: i64 = e.lines.iter()
                .flat_map(|l| &l.discounts)
                .filter(|d| d.promotion_id == applied.id)
                .map(|d| d.amount_minor)
                .sum();
            prop_assert_eq!(on_lines, applied.amount_minor, "{}", applied.id);
        }
    }

    #[test]
    fn evaluation_is_deterministic_and_ignores_line_and_coupon_order(
        set in arb_set(),
        (cart, shuffled) in arb_cart().prop_flat_map(|c| (Just(c.clone()), Just(c).prop_shuffle())),
        (coupons, shuffled_coupons) in arb_coupons().prop_flat_map(|c| (Just(c.clone()), Just(c).prop_shuffle())),
    ) {
        let mut context = ctx();
        context.coupons = coupons;
        let first = evaluate(&set, &cart, &context).unwrap();
        prop_assert_eq!(&first, &evaluate(&set, &cart, &context).unwrap());
        context.coupons = shuffled_coupons;
        prop_assert_eq!(&first, &evaluate(&set, &shuffled, &context).unwrap());
    }
}

#[test]
fn carts_too_large_to_sum_safely_are_rejected() {
    let set = compile(vec![]);
    let huge: Vec<CartLine> = (0..20)
        .map(|i| line(&format!("H{i}"), MAX_QUANTITY, MAX_UNIT_PRICE_MINOR, 0))
        .collect();
    assert_eq!(evaluate(&set, &huge, &ctx()), Err(EvalError::Overflow));
}

#[test]
fn shelf_price_uses_automatic_item_promotions_only() {
    let mut coupon = percent("COUPON", Target::All, 5_000);
    coupon.coupon = Some(CouponRule {
        codes: vec!["HALF".into()],
        ..CouponRule::default()
    });
    let mut flash = percent("FLASH", skus(&["A"]), 2_000);
    flash.conditions.ends_at_ms = Some(NOW + 1);
    let set = compile(vec![
        flash,
        coupon,
        cart_amount(0, 100),
        buy_2_get_1_promo(),
    ]);
    let mut context = ctx();
    context.coupons = vec![CouponInput::new("HALF")];
    let shelf = shelf_price(&set, &line("A", 7, 1_000, 0), &context).unwrap();
    assert_eq!(shelf.unit_price_minor, 800);
    let ids: Vec<&str> = shelf.promotions.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, vec!["FLASH"]);

    // The moment the flash sale ends, the shelf price is back.
    context.now_ms = NOW + 1;
    let shelf = shelf_price(&set, &line("A", 1, 1_000, 0), &context).unwrap();
    assert_eq!(shelf.unit_price_minor, 1_000);
    assert!(shelf.promotions.is_empty());

    // Clamped at the floor like a quote.
    context.now_ms = NOW;
    let shelf = shelf_price(&set, &line("A", 1, 1_000, 900), &context).unwrap();
    assert_eq!(shelf.unit_price_minor, 900);
    assert!(shelf.clamped);
}

#[test]
fn turning_the_explanation_off_changes_nothing_else() {
    let set = synthetic::promotion_set(2_000, 500);
    let cart = synthetic::cart(20, 500);
    let mut context = synthetic_ctx();
    let mut with = evaluate(&set, &cart, &context).unwrap();
    context.explain = false;
    let without = evaluate(&set, &cart, &context).unwrap();
    assert!(!with.explanation.is_empty());
    assert!(without.explanation.is_empty());
    with.explanation.clear();
    assert_eq!(with, without);
}

#[test]
fn lines_from_snapshot_entries_ignore_the_display_tag() {
    let entry = crate::entry::PriceEntry {
        key: crate::key::PriceKey::chain_wide(sku("A")),
        currency: Currency::EUR,
        list_price_minor: 1_200,
        price_minor: 1_000,
        floor_minor: 700,
        promotion: Some(crate::entry::PromotionTag {
            id: "FLASH".into(),
            label: "Flash -20%".into(),
            price_minor: 800,
            starts_at_ms: NOW - 1,
            ends_at_ms: NOW + 1,
        }),
        valid_from_ms: None,
        valid_until_ms: None,
        revision: 1,
    };
    let line = CartLine::from_entry(&entry, 2, Some("toys".into()));
    assert_eq!(line.unit_price_minor, 1_000, "before the tag's promotion");
    assert_eq!(line.unit_floor_minor, 700);
    // The same flash sale in the promotion set is applied exactly once.
    let set = compile(vec![percent("FLASH", skus(&["A"]), 2_000)]);
    let e = run(&set, &[line]);
    assert_eq!(e.lines[0].total_minor, 1_600);
}
