//! Evaluating a cart against a [`PromotionSet`]: the semantics are described in the
//! module docs of [`crate::promo`]; this file implements them.

use chrono::{Datelike, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

use crate::entry::PriceEntry;
use crate::key::{Dimension, Sku};
use crate::money::{round_div, Currency, Money};

use super::model::{
    normalize_coupon_code, BundleComponent, Level, Promotion, Rule, RuleKind, FULL_BASIS_POINTS,
    MINUTES_PER_DAY,
};
use super::policy::GroupMode;
use super::set::PromotionSet;
use super::spread::{largest_remainder, spread_capped};

/// Most lines in one cart.
pub const MAX_LINES: usize = 1_000;
/// Most units on one line.
pub const MAX_QUANTITY: u32 = 100_000;
/// Largest unit price (list, current or floor) accepted, in minor units.
pub const MAX_UNIT_PRICE_MINOR: i64 = 1_000_000_000_000;
/// Largest cart list total accepted, in minor units: keeps every sum of line totals,
/// and every intermediate product, far from `i64` overflow.
pub const MAX_CART_MINOR: i64 = 1_000_000_000_000_000_000;

/// One cart line as the edge knows it from its snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartLine {
    pub sku: Sku,
    pub quantity: u32,
    /// The regular (strikethrough) unit price.
    pub unit_list_price_minor: i64,
    /// The unit price from the snapshot, before cart promotions.
    pub unit_price_minor: i64,
    /// No unit may be sold below this on average over the line.
    pub unit_floor_minor: i64,
    /// Category for category-targeted promotions.
    #[serde(default)]
    pub category: Option<String>,
}

impl CartLine {
    /// A line priced from its snapshot entry: the list price, the price the control
    /// plane decided **before** any promotion (`price_minor`), and the floor. The
    /// entry's [`crate::entry::PromotionTag`] is display data for `GET /v1/prices`;
    /// automatic promotions come from the [`PromotionSet`], so a promotion that is both a
    /// tag and in the set is never applied twice. The caller checks that the entry's
    /// currency is the cart's and supplies the category (entries do not carry one).
    pub fn from_entry(entry: &PriceEntry, quantity: u32, category: Option<String>) -> CartLine {
        CartLine {
            sku: entry.key.sku.clone(),
            quantity,
            unit_list_price_minor: entry.list_price_minor,
            unit_price_minor: entry.price_minor,
            unit_floor_minor: entry.floor_minor,
            category,
        }
    }
}

/// A coupon code presented with the cart, and its current redemption counts (from the
/// checkout saga's store; zero when unknown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CouponInput {
    pub code: String,
    /// Redemptions of this code so far (checked against single-use codes).
    #[serde(default)]
    pub code_redemptions: u64,
    /// Redemptions of the code's promotion so far, over all codes and customers.
    #[serde(default)]
    pub promotion_redemptions: u64,
    /// Redemptions of the code's promotion by this customer so far.
    #[serde(default)]
    pub customer_redemptions: u64,
}

impl CouponInput {
    /// A code with no redemptions recorded.
    pub fn new(code: &str) -> CouponInput {
        CouponInput {
            code: code.to_owned(),
            code_redemptions: 0,
            promotion_redemptions: 0,
            customer_redemptions: 0,
        }
    }
}

/// Who is buying, where, when, with which codes.
#[derive(Debug, Clone)]
pub struct CartContext {
    /// The cart's currency; promotions in other currencies do not apply.
    pub currency: Currency,
    pub store: Dimension,
    pub channel: Dimension,
    /// The customer's segment, `*` when none.
    pub segment: Dimension,
    pub customer_id: Option<String>,
    pub coupons: Vec<CouponInput>,
    /// Evaluation time, Unix milliseconds.
    pub now_ms: i64,
    /// The store's time zone, for recurring windows.
    pub time_zone: Tz,
    /// Shipping fee before free-shipping promotions, minor units.
    pub shipping_fee_minor: i64,
    /// Write [`Evaluation::explanation`] (the default). Terminals that show no prose
    /// can turn it off: formatting the sentences is about half of an evaluation's cost.
    pub explain: bool,
}

impl CartContext {
    /// A context with every dimension `*`, no customer, no coupons and no shipping fee.
    pub fn new(currency: Currency, now_ms: i64, time_zone: Tz) -> CartContext {
        CartContext {
            currency,
            store: Dimension::any(),
            channel: Dimension::any(),
            segment: Dimension::any(),
            customer_id: None,
            coupons: Vec::new(),
            now_ms,
            time_zone,
            shipping_fee_minor: 0,
            explain: true,
        }
    }
}

/// Why a cart could not be evaluated. All are caller errors (HTTP 400); retrying the
/// same request does not help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("the cart has no lines")]
    EmptyCart,
    #[error("the cart has {0} lines; the limit is {MAX_LINES}")]
    TooManyLines(usize),
    #[error("line {sku}: quantity {quantity} is outside 1..={MAX_QUANTITY}")]
    Quantity { sku: Sku, quantity: u32 },
    #[error("line {sku}: {field} {value} is outside 0..={MAX_UNIT_PRICE_MINOR}")]
    Price {
        sku: Sku,
        field: &'static str,
        value: i64,
    },
    #[error("line {sku}: unit price {price} is below its floor {floor}")]
    PriceBelowFloor { sku: Sku, price: i64, floor: i64 },
    #[error("SKU {0} appears on several lines with different prices or categories")]
    ConflictingLines(Sku),
    #[error("shipping fee {0} is outside 0..={MAX_UNIT_PRICE_MINOR}")]
    Shipping(i64),
    #[error("the cart's list total exceeds {MAX_CART_MINOR} minor units")]
    Overflow,
}

/// One discount on one line, and the promotion that gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineDiscount {
    pub promotion_id: String,
    pub kind: RuleKind,
    pub level: Level,
    /// The discount granted on the whole line, minor units (positive).
    pub amount_minor: i64,
    /// What the rule asked for, when the floor clamp cut it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clamped_from_minor: Option<i64>,
}

/// A priced line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedLine {
    pub sku: Sku,
    pub quantity: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    pub unit_list_price_minor: i64,
    pub unit_price_minor: i64,
    pub unit_floor_minor: i64,
    /// `quantity × unit_price_minor`.
    pub subtotal_minor: i64,
    /// In the order they were applied.
    pub discounts: Vec<LineDiscount>,
    pub discount_minor: i64,
    /// `subtotal_minor − discount_minor`; never below `quantity × unit_floor_minor`.
    pub total_minor: i64,
    /// Whether the floor clamp cut a discount on this line.
    pub clamped: bool,
}

/// A promotion that gave something, with the total it gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedPromotion {
    pub id: String,
    pub label: String,
    pub kind: RuleKind,
    pub level: Level,
    pub amount_minor: i64,
    /// The coupon code that unlocked it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coupon_code: Option<String>,
}

/// What happened to a presented coupon code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CouponStatus {
    /// Its promotion discounted the cart.
    Applied,
    /// Valid, but its promotion did not apply (conditions, threshold or stacking).
    NotApplicable,
    /// No promotion has this code.
    Unknown,
    /// A single-use code that was already redeemed.
    AlreadyRedeemed,
    /// The promotion's total redemption limit is reached.
    TotalLimitReached,
    /// This customer's redemption limit is reached.
    CustomerLimitReached,
    /// The code has a per-customer limit and the cart has no customer id.
    CustomerRequired,
    /// Another code for the same promotion was already presented.
    SamePromotion,
}

/// A presented coupon code and its fate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CouponOutcome {
    /// Normalised (upper case) when well formed, as presented otherwise.
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion_id: Option<String>,
    pub status: CouponStatus,
}

/// A discount the floor clamp cut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clamp {
    pub promotion_id: String,
    /// The line, for item-level discounts; `None` for a cart-level discount that the
    /// lines together could not absorb.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<Sku>,
    pub requested_minor: i64,
    pub granted_minor: i64,
}

/// Cart totals, minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Totals {
    /// Σ quantity × unit list price.
    pub list_minor: i64,
    /// Σ quantity × unit price, before promotions.
    pub subtotal_minor: i64,
    pub item_discount_minor: i64,
    pub cart_discount_minor: i64,
    /// `item_discount_minor + cart_discount_minor` = Σ line discounts.
    pub discount_minor: i64,
    /// `subtotal_minor − discount_minor` = Σ line totals.
    pub merchandise_minor: i64,
    pub shipping_fee_minor: i64,
    pub shipping_discount_minor: i64,
    /// `shipping_fee_minor − shipping_discount_minor`.
    pub shipping_minor: i64,
    /// `merchandise_minor + shipping_minor`; never negative.
    pub total_minor: i64,
}

/// The result of evaluating a cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evaluation {
    pub currency: Currency,
    pub promotions_version: u64,
    pub policy_version: u32,
    /// In canonical order: by SKU, one line per SKU.
    pub lines: Vec<PricedLine>,
    pub totals: Totals,
    /// The free-shipping promotion that waived shipping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping_promotion_id: Option<String>,
    /// In the order they were applied.
    pub applied: Vec<AppliedPromotion>,
    /// Presented codes, sorted.
    pub coupons: Vec<CouponOutcome>,
    pub clamps: Vec<Clamp>,
    /// One sentence per decision, in the order they were taken; empty when the
    /// context asked for no explanation.
    pub explanation: Vec<String>,
}

/// A line during evaluation.
#[derive(Debug)]
struct LineState {
    sku: Sku,
    quantity: u32,
    category: Option<String>,
    unit_list: i64,
    unit_price: i64,
    unit_floor: i64,
    subtotal: i64,
    floor_total: i64,
    /// Line total after the discounts applied so far.
    current: i64,
    /// An exclusive promotion discounted this line: nothing else may.
    locked: bool,
    clamped: bool,
    discounts: Vec<LineDiscount>,
}

impl LineState {
    fn headroom(&self) -> i64 {
        (self.current - self.floor_total).max(0)
    }
}

fn check_price(sku: &Sku, field: &'static str, value: i64) -> Result<(), EvalError> {
    if !(0..=MAX_UNIT_PRICE_MINOR).contains(&value) {
        return Err(EvalError::Price {
            sku: sku.clone(),
            field,
            value,
        });
    }
    Ok(())
}

/// Validates the lines and puts them in canonical order: sorted by SKU, lines with the
/// same SKU merged (they must agree on prices and category).
fn canonical_lines(input: &[CartLine]) -> Result<Vec<LineState>, EvalError> {
    if input.is_empty() {
        return Err(EvalError::EmptyCart);
    }
    if input.len() > MAX_LINES {
        return Err(EvalError::TooManyLines(input.len()));
    }
    let mut sorted: Vec<&CartLine> = input.iter().collect();
    sorted.sort_by(|a, b| a.sku.cmp(&b.sku));
    let mut lines: Vec<LineState> = Vec::with_capacity(sorted.len());
    for line in sorted {
        check_price(
            &line.sku,
            "unit_list_price_minor",
            line.unit_list_price_minor,
        )?;
        check_price(&line.sku, "unit_price_minor", line.unit_price_minor)?;
        check_price(&line.sku, "unit_floor_minor", line.unit_floor_minor)?;
        if line.unit_price_minor < line.unit_floor_minor {
            return Err(EvalError::PriceBelowFloor {
                sku: line.sku.clone(),
                price: line.unit_price_minor,
                floor: line.unit_floor_minor,
            });
        }
        if line.quantity == 0 || line.quantity > MAX_QUANTITY {
            return Err(EvalError::Quantity {
                sku: line.sku.clone(),
                quantity: line.quantity,
            });
        }
        if let Some(previous) = lines.last_mut().filter(|l| l.sku == line.sku) {
            let same = previous.unit_list == line.unit_list_price_minor
                && previous.unit_price == line.unit_price_minor
                && previous.unit_floor == line.unit_floor_minor
                && previous.category == line.category;
            if !same {
                return Err(EvalError::ConflictingLines(line.sku.clone()));
            }
            previous.quantity += line.quantity;
            if previous.quantity > MAX_QUANTITY {
                return Err(EvalError::Quantity {
                    sku: line.sku.clone(),
                    quantity: previous.quantity,
                });
            }
            previous.subtotal = line.unit_price_minor * previous.quantity as i64;
            previous.floor_total = line.unit_floor_minor * previous.quantity as i64;
            previous.current = previous.subtotal;
            continue;
        }
        // Bounded by MAX_UNIT_PRICE_MINOR × MAX_QUANTITY = 10^17: no overflow.
        let subtotal = line.unit_price_minor * line.quantity as i64;
        lines.push(LineState {
            sku: line.sku.clone(),
            quantity: line.quantity,
            category: line.category.clone(),
            unit_list: line.unit_list_price_minor,
            unit_price: line.unit_price_minor,
            unit_floor: line.unit_floor_minor,
            subtotal,
            floor_total: line.unit_floor_minor * line.quantity as i64,
            current: subtotal,
            locked: false,
            clamped: false,
            discounts: Vec::new(),
        });
    }
    // Each line is at most 10^17; the sum of at most 1,000 of them fits an i128.
    let list_total: i128 = lines
        .iter()
        .map(|l| l.unit_list.max(l.unit_price) as i128 * l.quantity as i128)
        .sum();
    if list_total > MAX_CART_MINOR as i128 {
        return Err(EvalError::Overflow);
    }
    Ok(lines)
}

/// Local weekday and minute of the day in the store's time zone.
fn local_time(now_ms: i64, time_zone: Tz) -> Option<(Weekday, u16)> {
    let utc = Utc.timestamp_millis_opt(now_ms).single()?;
    let local = utc.with_timezone(&time_zone);
    let minute = (local.hour() * 60 + local.minute()) as u16;
    debug_assert!(minute < MINUTES_PER_DAY);
    Some((local.weekday(), minute))
}

fn dimension_allowed(allowed: &[String], value: &Dimension) -> bool {
    allowed.is_empty() || (!value.is_any() && allowed.iter().any(|a| a == value.as_str()))
}

fn conditions_hold(
    promotion: &Promotion,
    ctx: &CartContext,
    local: Option<(Weekday, u16)>,
) -> bool {
    if promotion.currency.is_some_and(|c| c != ctx.currency) {
        return false;
    }
    let conditions = &promotion.conditions;
    if !dimension_allowed(&conditions.stores, &ctx.store)
        || !dimension_allowed(&conditions.channels, &ctx.channel)
        || !dimension_allowed(&conditions.segments, &ctx.segment)
    {
        return false;
    }
    if conditions.members_only && ctx.customer_id.is_none() {
        return false;
    }
    if conditions
        .starts_at_ms
        .is_some_and(|start| ctx.now_ms < start)
        || conditions.ends_at_ms.is_some_and(|end| ctx.now_ms >= end)
    {
        return false;
    }
    if !conditions.recurring.is_empty() {
        let Some((day, minute)) = local else {
            return false;
        };
        let open = conditions.recurring.iter().any(|window| {
            window.days.contains(&day)
                && window.start_minute <= minute
                && minute < window.end_minute
        });
        if !open {
            return false;
        }
    }
    true
}

/// Checks presented codes against the set and the redemption counts. Returns the
/// promotions unlocked (rank, normalised code), sorted by rank, and every outcome so far.
fn check_coupons(
    set: &PromotionSet,
    ctx: &CartContext,
) -> (Vec<(u32, String)>, Vec<CouponOutcome>) {
    let mut presented: Vec<(String, &CouponInput)> = ctx
        .coupons
        .iter()
        .map(|c| {
            (
                normalize_coupon_code(&c.code).unwrap_or_else(|| c.code.clone()),
                c,
            )
        })
        .collect();
    // Canonical order; a code presented twice counts once (the first in sort order).
    presented.sort_by(|a, b| {
        let counts = |c: &CouponInput| {
            (
                c.code_redemptions,
                c.promotion_redemptions,
                c.customer_redemptions,
            )
        };
        a.0.cmp(&b.0)
            .then_with(|| a.1.code.cmp(&b.1.code))
            .then_with(|| counts(a.1).cmp(&counts(b.1)))
    });
    presented.dedup_by(|a, b| a.0 == b.0);

    let mut unlocked: Vec<(u32, String)> = Vec::new();
    let mut outcomes = Vec::with_capacity(presented.len());
    for (code, input) in presented {
        let Some(rank) = set.rank_for_code(&code) else {
            outcomes.push(CouponOutcome {
                code,
                promotion_id: None,
                status: CouponStatus::Unknown,
            });
            continue;
        };
        let promotion = &set.promotions[rank as usize].definition;
        let status = match &promotion.coupon {
            Some(rule) if rule.single_use && input.code_redemptions > 0 => {
                Some(CouponStatus::AlreadyRedeemed)
            }
            Some(rule)
                if rule
                    .total_limit
                    .is_some_and(|l| input.promotion_redemptions >= l) =>
            {
                Some(CouponStatus::TotalLimitReached)
            }
            Some(rule) if rule.per_customer_limit.is_some() && ctx.customer_id.is_none() => {
                Some(CouponStatus::CustomerRequired)
            }
            Some(rule)
                if rule
                    .per_customer_limit
                    .is_some_and(|l| input.customer_redemptions >= l) =>
            {
                Some(CouponStatus::CustomerLimitReached)
            }
            _ if unlocked.iter().any(|(r, _)| *r == rank) => Some(CouponStatus::SamePromotion),
            _ => None,
        };
        match status {
            Some(status) => outcomes.push(CouponOutcome {
                code,
                promotion_id: Some(promotion.id.clone()),
                status,
            }),
            None => unlocked.push((rank, code)),
        }
    }
    unlocked.sort_unstable();
    (unlocked, outcomes)
}

/// What one promotion would do to one line.
#[derive(Debug, Clone, Copy)]
struct PlanEntry {
    line: usize,
    /// What the rule asks for (item level) or the line's share (cart level).
    requested: i64,
    /// After the floor clamp.
    granted: i64,
}

/// What one promotion would do now, before it is committed.
struct Plan {
    /// Lines with a non-zero request, ascending.
    entries: Vec<PlanEntry>,
    /// Cart level: the discount asked for before spreading.
    cart_requested: i64,
    /// Cart level: the subtotal the threshold was checked on.
    base: i64,
    total: i64,
}

/// A promotion as explanations name it: `label [id, kind]`.
struct Named<'a>(&'a Promotion);

impl std::fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} [{}, {}]",
            self.0.label,
            self.0.id,
            self.0.rule.kind()
        )
    }
}

struct Engine<'a> {
    set: &'a PromotionSet,
    currency: Currency,
    lines: Vec<LineState>,
    /// (rank, line) pairs of indexed item-level candidates and the lines that made them
    /// candidates (their target lines), sorted.
    indexed_targets: Vec<(u32, u32)>,
    /// Line totals after item-level promotions: the threshold base of cart promotions.
    after_items: Vec<i64>,
    /// Ranks applied so far, for exclusions.
    applied_ranks: Vec<u32>,
    /// Lines taken in each best/first group: (group, line taken).
    claims: Vec<(u32, Vec<bool>)>,
    unlocked: &'a [(u32, String)],
    /// Whether to write the explanation.
    explain: bool,
    applied: Vec<AppliedPromotion>,
    clamps: Vec<Clamp>,
    explanation: Vec<String>,
}

impl<'a> Engine<'a> {
    fn money(&self, minor: i64) -> Money {
        Money::new(minor, self.currency)
    }

    fn definition(&self, rank: u32) -> &'a Promotion {
        &self.set.promotions[rank as usize].definition
    }

    fn name(&self, rank: u32) -> Named<'a> {
        Named(self.definition(rank))
    }

    fn claimed(&self, group: u32) -> Option<&Vec<bool>> {
        self.claims
            .iter()
            .find(|(g, _)| *g == group)
            .map(|(_, c)| c)
    }

    /// The promotion applied so far that excludes `rank`, if any.
    fn excluded_by(&self, rank: u32) -> Option<u32> {
        let never_with = &self.set.promotions[rank as usize].never_with;
        if never_with.is_empty() {
            return None;
        }
        self.applied_ranks
            .iter()
            .copied()
            .find(|r| never_with.binary_search(r).is_ok())
    }

    /// Lines the promotion may touch now, ascending.
    fn eligible(&self, rank: u32, claim_group: Option<u32>) -> Vec<usize> {
        let compiled = &self.set.promotions[rank as usize];
        let claimed = claim_group.and_then(|g| self.claimed(g));
        let exclusive = compiled.definition.stacking.exclusive;
        let open = |index: usize| {
            let line = &self.lines[index];
            !line.locked
                && !claimed.is_some_and(|c| c[index])
                && (!exclusive || line.discounts.is_empty())
        };
        let start = self.indexed_targets.partition_point(|(r, _)| *r < rank);
        let indexed = &self.indexed_targets[start..];
        if indexed.first().is_some_and(|(r, _)| *r == rank) {
            indexed
                .iter()
                .take_while(|(r, _)| *r == rank)
                .map(|(_, line)| *line as usize)
                .filter(|index| open(*index))
                .collect()
        } else {
            (0..self.lines.len())
                .filter(|index| {
                    let line = &self.lines[*index];
                    open(*index) && compiled.targets(&line.sku, line.category.as_deref())
                })
                .collect()
        }
    }

    fn plan(&self, rank: u32, claim_group: Option<u32>) -> Option<Plan> {
        let eligible = self.eligible(rank, claim_group);
        if eligible.is_empty() {
            return None;
        }
        let rule = &self.definition(rank).rule;
        match rule.level() {
            Level::Item => {
                let mut entries = item_discounts(rule, &self.lines, &eligible);
                let mut total = 0;
                for entry in &mut entries {
                    entry.granted = entry.requested.min(self.lines[entry.line].headroom());
                    total += entry.granted;
                }
                Some(Plan {
                    entries,
                    cart_requested: 0,
                    base: 0,
                    total,
                })
            }
            Level::Cart => {
                let base: i64 = eligible.iter().map(|i| self.after_items[*i]).sum();
                let current: i64 = eligible.iter().map(|i| self.lines[*i].current).sum();
                let (threshold, wanted) = match rule {
                    Rule::CartAmountOff {
                        threshold_minor,
                        amount_minor,
                    } => (*threshold_minor, (*amount_minor).min(current)),
                    Rule::CartPercentOff {
                        threshold_minor,
                        basis_points,
                    } => (*threshold_minor, percent_of(current, *basis_points)),
                    _ => return None,
                };
                let wanted = if base >= threshold { wanted } else { 0 };
                let weights: Vec<i64> = eligible.iter().map(|i| self.lines[*i].current).collect();
                let caps: Vec<i64> = eligible.iter().map(|i| self.lines[*i].headroom()).collect();
                let shares = spread_capped(wanted, &weights, &caps);
                let entries: Vec<PlanEntry> = eligible
                    .iter()
                    .zip(shares)
                    .filter(|(_, share)| *share > 0)
                    .map(|(line, share)| PlanEntry {
                        line: *line,
                        requested: share,
                        granted: share,
                    })
                    .collect();
                let total = entries.iter().map(|e| e.granted).sum();
                Some(Plan {
                    entries,
                    cart_requested: wanted,
                    base,
                    total,
                })
            }
            Level::Shipping => None,
        }
    }

    /// Plans and commits one promotion. Returns whether it gave anything.
    fn try_apply(&mut self, rank: u32, claim_group: Option<u32>) -> bool {
        if let Some(other) = self.excluded_by(rank) {
            if self.explain {
                let line = format!(
                    "{} not applied: never combined with {}",
                    self.name(rank),
                    self.name(other)
                );
                self.explanation.push(line);
            }
            return false;
        }
        let Some(plan) = self.plan(rank, claim_group) else {
            return false;
        };
        self.commit(rank, claim_group, plan)
    }

    fn commit(&mut self, rank: u32, claim_group: Option<u32>, plan: Plan) -> bool {
        let definition = self.definition(rank);
        let kind = definition.rule.kind();
        let level = definition.rule.level();
        if level == Level::Cart {
            if plan.cart_requested == 0 {
                if let Rule::CartAmountOff {
                    threshold_minor, ..
                }
                | Rule::CartPercentOff {
                    threshold_minor, ..
                } = definition.rule
                {
                    if self.explain && plan.base < threshold_minor {
                        let line = format!(
                            "cart: {} not applied: subtotal after item discounts {} is under its threshold {}",
                            self.name(rank),
                            self.money(plan.base),
                            self.money(threshold_minor)
                        );
                        self.explanation.push(line);
                    }
                }
                return false;
            }
            if plan.total < plan.cart_requested {
                self.clamps.push(Clamp {
                    promotion_id: definition.id.clone(),
                    sku: None,
                    requested_minor: plan.cart_requested,
                    granted_minor: plan.total,
                });
                if self.explain {
                    let line = format!(
                        "cart: {} cut from {} to {}: the lines cannot go below their floors",
                        self.name(rank),
                        self.money(plan.cart_requested),
                        self.money(plan.total)
                    );
                    self.explanation.push(line);
                }
            }
        }
        for entry in plan.entries.iter().filter(|e| e.requested > e.granted) {
            let line = &self.lines[entry.line];
            self.clamps.push(Clamp {
                promotion_id: definition.id.clone(),
                sku: Some(line.sku.clone()),
                requested_minor: entry.requested,
                granted_minor: entry.granted,
            });
            if self.explain {
                let sentence = format!(
                    "{}: {} cut from {} to {}: the line may not go below its floor {} ({} × {})",
                    line.sku,
                    self.name(rank),
                    self.money(entry.requested),
                    self.money(entry.granted),
                    self.money(line.floor_total),
                    self.money(line.unit_floor),
                    line.quantity
                );
                self.explanation.push(sentence);
            }
            self.lines[entry.line].clamped = true;
        }
        if plan.total == 0 {
            return false;
        }
        let exclusive = definition.stacking.exclusive;
        let mut sentence = self.explain.then(|| {
            if level == Level::Cart {
                format!(
                    "cart: -{} {} on a subtotal after item discounts of {}:",
                    self.money(plan.total),
                    self.name(rank),
                    self.money(plan.base),
                )
            } else {
                format!("-{} {}:", self.money(plan.total), self.name(rank))
            }
        });
        for entry in plan.entries.iter().filter(|e| e.granted > 0) {
            let line = &mut self.lines[entry.line];
            line.current -= entry.granted;
            debug_assert!(line.current >= line.floor_total);
            line.locked |= exclusive;
            line.discounts.push(LineDiscount {
                promotion_id: definition.id.clone(),
                kind,
                level,
                amount_minor: entry.granted,
                clamped_from_minor: (entry.requested > entry.granted).then_some(entry.requested),
            });
            if let Some(sentence) = sentence.as_mut() {
                let _ = write!(
                    sentence,
                    " {} × {} -{};",
                    line.sku,
                    line.quantity,
                    Money::new(entry.granted, self.currency)
                );
            }
            if let Some(group) = claim_group {
                let line_count = self.lines.len();
                let claims = match self.claims.iter().position(|(g, _)| *g == group) {
                    Some(position) => &mut self.claims[position].1,
                    None => {
                        self.claims.push((group, vec![false; line_count]));
                        &mut self.claims.last_mut().expect("just pushed").1
                    }
                };
                claims[entry.line] = true;
            }
        }
        if let Some(mut sentence) = sentence {
            sentence.pop();
            if exclusive {
                sentence.push_str(" (exclusive: no other promotion touches these lines)");
            }
            self.explanation.push(sentence);
        }
        self.applied_ranks.push(rank);
        self.applied.push(AppliedPromotion {
            id: definition.id.clone(),
            label: definition.label.clone(),
            kind,
            level,
            amount_minor: plan.total,
            coupon_code: self.coupon_code(rank),
        });
        true
    }

    fn coupon_code(&self, rank: u32) -> Option<String> {
        self.unlocked
            .binary_search_by(|(r, _)| r.cmp(&rank))
            .ok()
            .map(|i| self.unlocked[i].1.clone())
    }

    /// Applies the candidates of one level (sorted by rank), a stacking group at a time.
    fn run_level(&mut self, candidates: &[u32]) {
        let mut done = vec![false; candidates.len()];
        for start in 0..candidates.len() {
            if done[start] {
                continue;
            }
            let rank = candidates[start];
            let Some(group) = self.set.promotions[rank as usize].group else {
                done[start] = true;
                self.try_apply(rank, None);
                continue;
            };
            // The whole group is resolved at the place of its first member.
            let mut members = Vec::new();
            for (index, &other) in candidates.iter().enumerate().skip(start) {
                if self.set.promotions[other as usize].group == Some(group) {
                    done[index] = true;
                    members.push(other);
                }
            }
            let (name, mode) = &self.set.groups[group as usize];
            match mode {
                GroupMode::All => {
                    for member in members {
                        self.try_apply(member, None);
                    }
                }
                GroupMode::FirstByPriority => {
                    for member in members {
                        self.try_apply(member, Some(group));
                    }
                }
                GroupMode::BestForCustomer => {
                    let mut ranked: Vec<(i64, u32)> = members
                        .iter()
                        .map(|&member| {
                            let alone = if self.excluded_by(member).is_some() {
                                0
                            } else {
                                self.plan(member, Some(group)).map_or(0, |p| p.total)
                            };
                            (alone, member)
                        })
                        .collect();
                    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                    if self.explain && ranked.len() > 1 && ranked[0].0 > 0 {
                        let sentence = format!(
                            "group {name} (best for the customer): {} gives the most, {}",
                            self.name(ranked[0].1),
                            self.money(ranked[0].0)
                        );
                        self.explanation.push(sentence);
                    }
                    for (_, member) in ranked {
                        self.try_apply(member, Some(group));
                    }
                }
            }
        }
    }

    /// Waives shipping with the first free-shipping promotion (by precedence) whose
    /// threshold the merchandise total after all discounts reaches.
    fn shipping(&mut self, candidates: &[u32], fee: i64) -> Option<u32> {
        if fee == 0 {
            return None;
        }
        for &rank in candidates {
            let definition = self.definition(rank);
            let Rule::FreeShipping { threshold_minor } = definition.rule else {
                continue;
            };
            let compiled = &self.set.promotions[rank as usize];
            let base: i64 = self
                .lines
                .iter()
                .filter(|l| compiled.targets(&l.sku, l.category.as_deref()))
                .map(|l| l.current)
                .sum();
            if base < threshold_minor {
                if self.explain {
                    let sentence = format!(
                    "shipping: {} not applied: merchandise total after discounts {} is under its threshold {}",
                    self.name(rank),
                    self.money(base),
                    self.money(threshold_minor)
                );
                    self.explanation.push(sentence);
                }
                continue;
            }
            if let Some(other) = self.excluded_by(rank) {
                if self.explain {
                    let sentence = format!(
                        "{} not applied: never combined with {}",
                        self.name(rank),
                        self.name(other)
                    );
                    self.explanation.push(sentence);
                }
                continue;
            }
            if self.explain {
                let sentence = format!(
                    "shipping: -{} {}: merchandise total after discounts {} reaches {}",
                    self.money(fee),
                    self.name(rank),
                    self.money(base),
                    self.money(threshold_minor)
                );
                self.explanation.push(sentence);
            }
            self.applied_ranks.push(rank);
            self.applied.push(AppliedPromotion {
                id: definition.id.clone(),
                label: definition.label.clone(),
                kind: RuleKind::FreeShipping,
                level: Level::Shipping,
                amount_minor: fee,
                coupon_code: self.coupon_code(rank),
            });
            return Some(rank);
        }
        None
    }
}

/// `basis_points` of `amount`, rounded half away from zero.
fn percent_of(amount: i64, basis_points: u32) -> i64 {
    // amount ≤ 10^18 and basis points ≤ 10^4: the product fits an i128 and the result
    // is at most `amount`.
    round_div(
        amount as i128 * basis_points as i128,
        FULL_BASIS_POINTS as i128,
    )
    .unwrap_or(0)
}

/// `basis_points` off `units` of a line's `quantity` units, on its current total.
fn percent_of_units(line: &LineState, units: i64, basis_points: u32) -> i64 {
    round_div(
        line.current as i128 * units as i128 * basis_points as i128,
        line.quantity as i128 * FULL_BASIS_POINTS as i128,
    )
    .unwrap_or(0)
}

/// Eligible line indexes, cheapest current unit price first (ties in canonical order).
fn cheapest_first(lines: &[LineState], eligible: &[usize]) -> Vec<usize> {
    let mut order = eligible.to_vec();
    order.sort_by(|&a, &b| {
        // current_a / qty_a vs current_b / qty_b without dividing.
        let left = lines[a].current as i128 * lines[b].quantity as i128;
        let right = lines[b].current as i128 * lines[a].quantity as i128;
        left.cmp(&right).then(a.cmp(&b))
    });
    order
}

fn entry(line: usize, requested: i64) -> PlanEntry {
    PlanEntry {
        line,
        requested,
        granted: 0,
    }
}

/// `basis_points` off the `units` cheapest eligible units.
fn discount_cheapest_units(
    lines: &[LineState],
    eligible: &[usize],
    mut units: i64,
    basis_points: u32,
) -> Vec<PlanEntry> {
    let mut out = Vec::new();
    if units == 0 {
        return out;
    }
    for index in cheapest_first(lines, eligible) {
        if units == 0 {
            break;
        }
        let take = units.min(lines[index].quantity as i64);
        out.push(entry(
            index,
            percent_of_units(&lines[index], take, basis_points),
        ));
        units -= take;
    }
    out.sort_by_key(|e| e.line);
    out
}

/// What an item-level rule asks for on each eligible line (before the floor clamp);
/// entries in ascending line order, zero requests left out.
fn item_discounts(rule: &Rule, lines: &[LineState], eligible: &[usize]) -> Vec<PlanEntry> {
    let pool: i64 = eligible.iter().map(|i| lines[*i].quantity as i64).sum();
    let each = |f: &dyn Fn(&LineState) -> i64| -> Vec<PlanEntry> {
        eligible
            .iter()
            .map(|&index| entry(index, f(&lines[index]).clamp(0, lines[index].current)))
            .collect()
    };
    let mut out = match rule {
        Rule::PercentOff { basis_points } | Rule::Clearance { basis_points } => {
            each(&|line| percent_of(line.current, *basis_points))
        }
        Rule::AmountOff { amount_minor } => each(&|line| amount_minor * line.quantity as i64),
        Rule::FixedPrice { unit_price_minor } => {
            each(&|line| line.current - unit_price_minor * line.quantity as i64)
        }
        Rule::BuyXGetY {
            buy,
            get,
            get_basis_points,
            max_applications,
        } => {
            let mut applications = pool / (*buy as i64 + *get as i64);
            if let Some(max) = max_applications {
                applications = applications.min(*max as i64);
            }
            let units = applications * *get as i64;
            discount_cheapest_units(lines, eligible, units, *get_basis_points)
        }
        Rule::BuyNPercentOff {
            quantity,
            basis_points,
            max_applications,
        } => {
            let mut applications = pool / *quantity as i64;
            if let Some(max) = max_applications {
                applications = applications.min(*max as i64);
            }
            let units = applications * *quantity as i64;
            discount_cheapest_units(lines, eligible, units, *basis_points)
        }
        Rule::TieredVolume { tiers } => {
            match tiers
                .iter()
                .rev()
                .find(|tier| tier.min_quantity as i64 <= pool)
            {
                Some(tier) => each(&|line| percent_of(line.current, tier.basis_points)),
                None => Vec::new(),
            }
        }
        Rule::Bundle {
            components,
            bundle_price_minor,
            max_applications,
        } => bundle_discounts(
            components,
            *bundle_price_minor,
            *max_applications,
            lines,
            eligible,
        ),
        Rule::CartAmountOff { .. } | Rule::CartPercentOff { .. } | Rule::FreeShipping { .. } => {
            Vec::new()
        }
    };
    out.retain(|e| e.requested > 0);
    out
}

fn bundle_discounts(
    components: &[BundleComponent],
    bundle_price_minor: i64,
    max_applications: Option<u32>,
    lines: &[LineState],
    eligible: &[usize],
) -> Vec<PlanEntry> {
    let mut applications = i64::MAX;
    let mut members = Vec::with_capacity(components.len());
    for component in components {
        let found = lines
            .binary_search_by(|l| l.sku.cmp(&component.sku))
            .ok()
            .filter(|i| eligible.binary_search(i).is_ok());
        let Some(index) = found else {
            return Vec::new();
        };
        applications = applications.min(lines[index].quantity as i64 / component.quantity as i64);
        members.push((index, component.quantity as i64));
    }
    if let Some(max) = max_applications {
        applications = applications.min(max as i64);
    }
    if applications == 0 {
        return Vec::new();
    }
    let values: Vec<i64> = members
        .iter()
        .map(|&(index, per_set)| {
            let line = &lines[index];
            round_div(
                line.current as i128 * (applications * per_set) as i128,
                line.quantity as i128,
            )
            .unwrap_or(0)
        })
        .collect();
    let value: i64 = values.iter().sum();
    let discount = value - applications * bundle_price_minor;
    if discount <= 0 {
        return Vec::new();
    }
    let shares = largest_remainder(discount, &values);
    let mut out: Vec<PlanEntry> = members
        .iter()
        .zip(shares)
        .map(|((index, _), share)| entry(*index, share))
        .collect();
    out.sort_by_key(|e| e.line);
    out
}

/// Prices a cart: item-level promotions, then cart-level promotions, then shipping, with
/// the floor clamp throughout. Deterministic and independent of line and coupon order.
pub fn evaluate(
    set: &PromotionSet,
    lines: &[CartLine],
    ctx: &CartContext,
) -> Result<Evaluation, EvalError> {
    evaluate_levels(set, lines, ctx, Scope::Cart)
}

/// The shelf price of one unit: what `GET /v1/prices` and strikethrough labels show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShelfPrice {
    /// The unit price after automatic item-level promotions, never below the floor.
    pub unit_price_minor: i64,
    /// The promotions that gave it, in the order applied.
    pub promotions: Vec<AppliedPromotion>,
    /// Whether the floor clamp cut a discount.
    pub clamped: bool,
}

/// Prices one unit of `line` (its quantity is ignored) with the automatic item-level
/// promotions only: no coupons, no cart-level or shipping promotions, and multi-unit
/// rules (buy X get Y, buy N, tiers, bundles) apply only if one unit satisfies them.
/// Stacking and clamping are exactly those of [`evaluate`], so the shelf price is the
/// price a one-unit cart without coupons is charged before cart discounts.
pub fn shelf_price(
    set: &PromotionSet,
    line: &CartLine,
    ctx: &CartContext,
) -> Result<ShelfPrice, EvalError> {
    let unit = CartLine {
        quantity: 1,
        ..line.clone()
    };
    let evaluation = evaluate_levels(set, std::slice::from_ref(&unit), ctx, Scope::Shelf)?;
    let priced = evaluation.lines.into_iter().next();
    Ok(ShelfPrice {
        unit_price_minor: priced
            .as_ref()
            .map_or(unit.unit_price_minor, |l| l.total_minor),
        promotions: evaluation.applied,
        clamped: priced.is_some_and(|l| l.clamped),
    })
}

/// Which levels an evaluation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Everything: coupons, item, cart and shipping levels.
    Cart,
    /// Automatic item-level promotions only.
    Shelf,
}

fn evaluate_levels(
    set: &PromotionSet,
    lines: &[CartLine],
    ctx: &CartContext,
    scope: Scope,
) -> Result<Evaluation, EvalError> {
    let lines = canonical_lines(lines)?;
    if !(0..=MAX_UNIT_PRICE_MINOR).contains(&ctx.shipping_fee_minor) {
        return Err(EvalError::Shipping(ctx.shipping_fee_minor));
    }
    let local = local_time(ctx.now_ms, ctx.time_zone);
    let (unlocked, mut coupons) = match scope {
        Scope::Cart => check_coupons(set, ctx),
        Scope::Shelf => (Vec::new(), Vec::new()),
    };
    let available = |rank: &u32| {
        let definition = &set.promotions[*rank as usize].definition;
        (definition.coupon.is_none() || unlocked.binary_search_by(|(r, _)| r.cmp(rank)).is_ok())
            && conditions_hold(definition, ctx, local)
    };

    // Indexed candidates with the lines that pulled them in: those are their targets.
    let mut indexed_targets: Vec<(u32, u32)> = Vec::new();
    let mut ranks = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        ranks.clear();
        set.item_candidates(&line.sku, line.category.as_deref(), &mut ranks);
        indexed_targets.extend(ranks.iter().map(|rank| (*rank, index as u32)));
    }
    indexed_targets.sort_unstable();
    indexed_targets.dedup();
    indexed_targets.retain(|(rank, _)| available(rank));
    let mut item: Vec<u32> = indexed_targets.iter().map(|(rank, _)| *rank).collect();
    item.extend(set.item_all().iter().copied().filter(available));
    item.sort_unstable();
    item.dedup();
    let (cart, shipping): (Vec<u32>, Vec<u32>) = match scope {
        Scope::Cart => (
            set.cart.iter().copied().filter(available).collect(),
            set.shipping.iter().copied().filter(available).collect(),
        ),
        Scope::Shelf => (Vec::new(), Vec::new()),
    };

    let mut engine = Engine {
        set,
        currency: ctx.currency,
        lines,
        indexed_targets,
        after_items: Vec::new(),
        applied_ranks: Vec::new(),
        claims: Vec::new(),
        unlocked: &unlocked,
        explain: ctx.explain,
        applied: Vec::new(),
        clamps: Vec::new(),
        explanation: Vec::new(),
    };
    engine.run_level(&item);
    engine.after_items = engine.lines.iter().map(|l| l.current).collect();
    engine.run_level(&cart);
    let shipping_rank = engine.shipping(&shipping, ctx.shipping_fee_minor);

    for (rank, code) in &unlocked {
        let applied = engine.applied_ranks.contains(rank);
        let id = set.promotions[*rank as usize].definition.id.clone();
        if !applied && engine.explain {
            engine.explanation.push(format!(
                "coupon {code}: valid, but {} did not apply to this cart",
                engine.name(*rank)
            ));
        }
        coupons.push(CouponOutcome {
            code: code.clone(),
            promotion_id: Some(id),
            status: if applied {
                CouponStatus::Applied
            } else {
                CouponStatus::NotApplicable
            },
        });
    }
    coupons.sort_by(|a, b| a.code.cmp(&b.code));
    for outcome in coupons.iter().filter(|_| engine.explain) {
        if !matches!(
            outcome.status,
            CouponStatus::Applied | CouponStatus::NotApplicable
        ) {
            engine.explanation.push(format!(
                "coupon {}: rejected ({})",
                outcome.code,
                coupon_reason(outcome.status)
            ));
        }
    }

    let mut totals = Totals {
        shipping_fee_minor: ctx.shipping_fee_minor,
        ..Totals::default()
    };
    let mut priced = Vec::with_capacity(engine.lines.len());
    let add = |a: i64, b: i64| a.checked_add(b).ok_or(EvalError::Overflow);
    for line in engine.lines {
        let item_discount: i64 = line
            .discounts
            .iter()
            .filter(|d| d.level == Level::Item)
            .map(|d| d.amount_minor)
            .sum();
        let discount = line.subtotal - line.current;
        debug_assert_eq!(
            discount,
            line.discounts.iter().map(|d| d.amount_minor).sum::<i64>()
        );
        totals.list_minor = add(totals.list_minor, line.unit_list * line.quantity as i64)?;
        totals.subtotal_minor = add(totals.subtotal_minor, line.subtotal)?;
        totals.item_discount_minor = add(totals.item_discount_minor, item_discount)?;
        totals.cart_discount_minor = add(totals.cart_discount_minor, discount - item_discount)?;
        totals.merchandise_minor = add(totals.merchandise_minor, line.current)?;
        priced.push(PricedLine {
            sku: line.sku,
            quantity: line.quantity,
            category: line.category,
            unit_list_price_minor: line.unit_list,
            unit_price_minor: line.unit_price,
            unit_floor_minor: line.unit_floor,
            subtotal_minor: line.subtotal,
            discounts: line.discounts,
            discount_minor: discount,
            total_minor: line.current,
            clamped: line.clamped,
        });
    }
    totals.discount_minor = totals.item_discount_minor + totals.cart_discount_minor;
    totals.shipping_discount_minor = if shipping_rank.is_some() {
        ctx.shipping_fee_minor
    } else {
        0
    };
    totals.shipping_minor = totals.shipping_fee_minor - totals.shipping_discount_minor;
    totals.total_minor = add(totals.merchandise_minor, totals.shipping_minor)?;

    Ok(Evaluation {
        currency: ctx.currency,
        promotions_version: set.version(),
        policy_version: set.policy().version,
        lines: priced,
        totals,
        shipping_promotion_id: shipping_rank
            .map(|rank| set.promotions[rank as usize].definition.id.clone()),
        applied: engine.applied,
        coupons,
        clamps: engine.clamps,
        explanation: engine.explanation,
    })
}

fn coupon_reason(status: CouponStatus) -> &'static str {
    match status {
        CouponStatus::Applied => "applied",
        CouponStatus::NotApplicable => "its promotion does not apply to this cart",
        CouponStatus::Unknown => "unknown code",
        CouponStatus::AlreadyRedeemed => "single-use code already redeemed",
        CouponStatus::TotalLimitReached => "the promotion's redemption limit is reached",
        CouponStatus::CustomerLimitReached => "this customer's redemption limit is reached",
        CouponStatus::CustomerRequired => "the code is limited per customer; sign in to use it",
        CouponStatus::SamePromotion => "another code for the same promotion is already used",
    }
}
