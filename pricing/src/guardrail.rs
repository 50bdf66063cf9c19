//! Guardrails: the authoritative limits every automated price must respect.
//!
//! # The margin formula
//!
//! All amounts are integer minor units of one currency; rates are basis points
//! (1 bp = 0.01 %, 10,000 bp = 100 %).
//!
//! ```text
//! T          = 10_000 + tax_rate_bp         if prices include tax, else 10_000
//! net(p)     = round_div(p × 10_000, T)     the price without tax
//! unit_cost  = cost + logistics
//! margin(p)  = (net(p) − unit_cost) / net(p)
//! profit(p)  = net(p) − unit_cost
//! ```
//!
//! `round_div` is the project's one rounding mode (half away from zero, see
//! [`crate::money::round_div`]); it is the only place a fraction is rounded. The margin
//! itself is never rounded when it is checked: "margin ≥ m" is evaluated as the exact
//! integer inequality `net × (10_000 − m) ≥ unit_cost × 10_000` (with `net ≥ 1`, because a
//! margin of a zero price is undefined). [`margin_bp`] rounds only for display.
//!
//! # The guardrails
//!
//! * **minimum margin** ([`GuardrailPolicy::min_margin_bp`], default 30 %, per category);
//! * **minimum absolute profit** per unit ([`GuardrailPolicy::min_profit_minor`]);
//! * **floor and ceiling** of the SKU ([`SkuEconomics::floor_minor`] for MAP or regulatory
//!   floors, [`SkuEconomics::ceiling_minor`] for regulated maximum prices);
//! * **maximum change per interval** ([`GuardrailPolicy::max_change_bp`]), relative to the
//!   price in force at the start of the interval.
//!
//! The first three are *hard*: [`floor_for`] is the lowest price that satisfies all of
//! them, and a snapshot entry carries it as its floor. The change limit is *soft*: when a
//! cost rise pushes the floor above the allowed band, the floor wins (a price below floor
//! is never published), and the adjustment says so. A floor above the ceiling cannot be
//! satisfied at all and is an error ([`GuardrailError::FloorAboveCeiling`]): the caller
//! holds the SKU and raises an alert.
//!
//! Every adjustment names the rule that fired ([`Rule`], with a stable snake_case code).

use serde::{Deserialize, Serialize};

use crate::money::{round_div, Currency, Money, MoneyError};

/// One basis point scale: 10,000 bp = 100 %.
pub const BP_SCALE: i64 = 10_000;

/// Guardrail settings for one category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GuardrailPolicy {
    /// Minimum margin in basis points of the net price (3,000 = 30 %). Must be in
    /// `0..10_000`.
    pub min_margin_bp: i64,
    /// Minimum profit per unit in minor units (net price − cost − logistics).
    pub min_profit_minor: i64,
    /// Largest change of the automated price per interval, in basis points of the price
    /// in force at the start of the interval; `None`: unlimited.
    pub max_change_bp: Option<i64>,
    /// Whether shelf prices include tax (consumer retail in most of Europe) or not
    /// (B2B, US shelf prices).
    pub prices_include_tax: bool,
}

impl Default for GuardrailPolicy {
    fn default() -> Self {
        GuardrailPolicy {
            min_margin_bp: 3_000,
            min_profit_minor: 0,
            max_change_bp: None,
            prices_include_tax: true,
        }
    }
}

/// What the guardrails need to know about one SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuEconomics {
    pub currency: Currency,
    /// Vendor cost per unit, minor units, without tax.
    pub cost_minor: i64,
    /// Logistics cost per unit (freight, handling), minor units, without tax.
    pub logistics_minor: i64,
    /// Tax rate in basis points (2,000 = 20 % VAT).
    pub tax_rate_bp: i64,
    /// MAP or regulatory minimum shelf price, if any.
    pub floor_minor: Option<i64>,
    /// Regulatory maximum shelf price, if any.
    pub ceiling_minor: Option<i64>,
}

/// A guardrail rule, named in adjustments, decision records and alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Raised to keep the minimum margin.
    MinMargin,
    /// Raised to keep the minimum absolute profit.
    MinProfit,
    /// Raised to the MAP or regulatory floor.
    RegulatoryFloor,
    /// Lowered to the regulatory ceiling.
    Ceiling,
    /// Held to the largest increase allowed in one interval.
    MaxChangeUp,
    /// Held to the largest decrease allowed in one interval.
    MaxChangeDown,
    /// A promotion's discount was reduced to the largest one that keeps the floor.
    PromotionCut,
    /// No discount of the promotion keeps the floor: it is blocked.
    PromotionBlocked,
}

impl Rule {
    /// The stable code used in decision records, APIs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Rule::MinMargin => "min_margin",
            Rule::MinProfit => "min_profit",
            Rule::RegulatoryFloor => "regulatory_floor",
            Rule::Ceiling => "ceiling",
            Rule::MaxChangeUp => "max_change_up",
            Rule::MaxChangeDown => "max_change_down",
            Rule::PromotionCut => "promotion_cut",
            Rule::PromotionBlocked => "promotion_blocked",
        }
    }
}

/// Why the guardrails could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardrailError {
    #[error("invalid guardrail policy: {0}")]
    InvalidPolicy(&'static str),
    #[error("invalid SKU economics: {0}")]
    InvalidEconomics(&'static str),
    #[error("floor {floor} ({rule}) is above the ceiling {ceiling}: no price satisfies both")]
    FloorAboveCeiling {
        floor: i64,
        ceiling: i64,
        rule: &'static str,
    },
    #[error(transparent)]
    Money(#[from] MoneyError),
}

impl GuardrailError {
    /// The API error code.
    pub fn code(&self) -> &'static str {
        match self {
            GuardrailError::InvalidPolicy(_) => "invalid_guardrail_policy",
            GuardrailError::InvalidEconomics(_) => "invalid_sku_economics",
            GuardrailError::FloorAboveCeiling { .. } => "floor_above_ceiling",
            GuardrailError::Money(MoneyError::CurrencyMismatch { .. }) => "currency_mismatch",
            GuardrailError::Money(_) => "amount_out_of_range",
        }
    }
}

/// Largest amount the guardrails accept (10^15 minor units): keeps every product of
/// the formulas well inside `i128`.
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000_000;

impl GuardrailPolicy {
    /// Checks the ranges the formulas rely on.
    pub fn validate(&self) -> Result<(), GuardrailError> {
        if !(0..BP_SCALE).contains(&self.min_margin_bp) {
            return Err(GuardrailError::InvalidPolicy(
                "min_margin_bp must be in 0..10000",
            ));
        }
        if !(0..=MAX_AMOUNT_MINOR).contains(&self.min_profit_minor) {
            return Err(GuardrailError::InvalidPolicy(
                "min_profit_minor must be between 0 and 10^15",
            ));
        }
        if self
            .max_change_bp
            .is_some_and(|bp| !(0..=BP_SCALE).contains(&bp))
        {
            return Err(GuardrailError::InvalidPolicy(
                "max_change_bp must be in 0..=10000",
            ));
        }
        Ok(())
    }

    fn tax_divisor(&self, economics: &SkuEconomics) -> i128 {
        if self.prices_include_tax {
            (BP_SCALE + economics.tax_rate_bp) as i128
        } else {
            BP_SCALE as i128
        }
    }
}

impl SkuEconomics {
    /// Checks the ranges the formulas rely on.
    pub fn validate(&self) -> Result<(), GuardrailError> {
        let amount = |v: i64| (0..=MAX_AMOUNT_MINOR).contains(&v);
        if !amount(self.cost_minor) {
            return Err(GuardrailError::InvalidEconomics(
                "cost must be between 0 and 10^15",
            ));
        }
        if !amount(self.logistics_minor) {
            return Err(GuardrailError::InvalidEconomics(
                "logistics cost must be between 0 and 10^15",
            ));
        }
        if !(0..=BP_SCALE).contains(&self.tax_rate_bp) {
            return Err(GuardrailError::InvalidEconomics(
                "tax rate must be between 0 and 10000 bp",
            ));
        }
        if self.floor_minor.is_some_and(|v| !amount(v))
            || self.ceiling_minor.is_some_and(|v| !amount(v))
        {
            return Err(GuardrailError::InvalidEconomics(
                "floor and ceiling must be between 0 and 10^15",
            ));
        }
        Ok(())
    }

    fn unit_cost(&self) -> i128 {
        self.cost_minor as i128 + self.logistics_minor as i128
    }

    fn check_currency(&self, price: Money) -> Result<(), GuardrailError> {
        if price.currency != self.currency {
            return Err(MoneyError::CurrencyMismatch {
                left: price.currency,
                right: self.currency,
            }
            .into());
        }
        if !(0..=MAX_AMOUNT_MINOR).contains(&price.minor) {
            return Err(MoneyError::Overflow.into());
        }
        Ok(())
    }
}

fn net_of(price_minor: i64, divisor: i128) -> i128 {
    // divisor >= 10_000 and price <= 10^15: the quotient fits an i64.
    round_div(price_minor as i128 * BP_SCALE as i128, divisor).unwrap_or(i64::MAX) as i128
}

/// The net (tax-exclusive) price of `price_minor` under the policy (see the module docs).
pub fn net_price_minor(
    price_minor: i64,
    economics: &SkuEconomics,
    policy: &GuardrailPolicy,
) -> i64 {
    net_of(price_minor, policy.tax_divisor(economics)) as i64
}

/// The margin of a price in basis points, rounded half away from zero for display;
/// `None` when the net price is zero or less (margin undefined).
pub fn margin_bp(
    price_minor: i64,
    economics: &SkuEconomics,
    policy: &GuardrailPolicy,
) -> Option<i64> {
    let net = net_of(price_minor, policy.tax_divisor(economics));
    if net <= 0 {
        return None;
    }
    round_div((net - economics.unit_cost()) * BP_SCALE as i128, net)
}

/// The hard guardrail a price breaks first, if any: minimum margin, minimum profit or
/// the regulatory floor (checked in that order), or the ceiling.
pub fn hard_violation(
    price_minor: i64,
    economics: &SkuEconomics,
    policy: &GuardrailPolicy,
) -> Option<Rule> {
    let net = net_of(price_minor, policy.tax_divisor(economics));
    let unit_cost = economics.unit_cost();
    if net < 1 || net * ((BP_SCALE - policy.min_margin_bp) as i128) < unit_cost * BP_SCALE as i128 {
        return Some(Rule::MinMargin);
    }
    if net - unit_cost < policy.min_profit_minor as i128 {
        return Some(Rule::MinProfit);
    }
    if economics
        .floor_minor
        .is_some_and(|floor| price_minor < floor)
    {
        return Some(Rule::RegulatoryFloor);
    }
    if economics
        .ceiling_minor
        .is_some_and(|ceiling| price_minor > ceiling)
    {
        return Some(Rule::Ceiling);
    }
    None
}

/// The lowest price that satisfies every hard guardrail, and the rule that sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Floor {
    pub minor: i64,
    /// The guardrail that binds at the floor.
    pub rule: Rule,
}

/// Smallest integer ≥ `n / d` for `d > 0`.
fn ceil_div(n: i128, d: i128) -> i128 {
    debug_assert!(d > 0);
    n.div_euclid(d) + i128::from(n.rem_euclid(d) != 0)
}

/// The lowest price that satisfies the minimum margin, the minimum profit and the
/// regulatory floor of the SKU: what a snapshot entry carries as `floor_minor`.
///
/// Derivation: the net price must reach `N = max(⌈unit_cost × 10_000 / (10_000 − m)⌉,
/// unit_cost + min_profit, 1)`. Because `net(p)` rounds half away from zero,
/// `net(p) ≥ N ⇔ p × 10_000 / T ≥ N − ½ ⇔ p ≥ ⌈(2N − 1) × T / 20_000⌉`.
pub fn floor_for(
    economics: &SkuEconomics,
    policy: &GuardrailPolicy,
) -> Result<Floor, GuardrailError> {
    policy.validate()?;
    economics.validate()?;
    let unit_cost = economics.unit_cost();
    let divisor = policy.tax_divisor(economics);
    let margin_net = ceil_div(
        unit_cost * BP_SCALE as i128,
        (BP_SCALE - policy.min_margin_bp) as i128,
    )
    .max(1);
    let profit_net = unit_cost + policy.min_profit_minor as i128;
    let (net_needed, mut rule) = if profit_net > margin_net {
        (profit_net, Rule::MinProfit)
    } else {
        (margin_net, Rule::MinMargin)
    };
    let lowest = ceil_div((2 * net_needed - 1) * divisor, 2 * BP_SCALE as i128);
    let mut floor = i64::try_from(lowest).map_err(|_| MoneyError::Overflow)?;
    if let Some(regulatory) = economics.floor_minor {
        if regulatory > floor {
            floor = regulatory;
            rule = Rule::RegulatoryFloor;
        }
    }
    debug_assert_eq!(
        hard_violation(floor, economics, policy).filter(|r| *r != Rule::Ceiling),
        None
    );
    if let Some(ceiling) = economics.ceiling_minor {
        if floor > ceiling {
            return Err(GuardrailError::FloorAboveCeiling {
                floor,
                ceiling,
                rule: rule.code(),
            });
        }
    }
    Ok(Floor { minor: floor, rule })
}

/// One change the guardrails made to a price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adjustment {
    pub rule: Rule,
    pub from_minor: i64,
    pub to_minor: i64,
}

/// A candidate price after the guardrails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardedPrice {
    pub price: Money,
    /// The floor the published entry carries.
    pub floor: Floor,
    /// The margin at `price`, basis points, rounded for display.
    pub margin_bp: i64,
    /// What the guardrails changed, in the order applied; empty when the candidate passed.
    pub adjustments: Vec<Adjustment>,
}

/// Applies every guardrail to a candidate price.
///
/// `previous_minor` is the price in force at the start of the current change interval
/// (none for a new SKU). Order: change band, ceiling, floor — so the hard limits win over
/// the change limit.
pub fn guard(
    candidate: Money,
    previous_minor: Option<i64>,
    economics: &SkuEconomics,
    policy: &GuardrailPolicy,
) -> Result<GuardedPrice, GuardrailError> {
    economics.check_currency(candidate)?;
    let floor = floor_for(economics, policy)?;
    let mut adjustments = Vec::new();
    let mut price = candidate.minor;
    let mut apply = |rule: Rule, to: i64, price: &mut i64| {
        adjustments.push(Adjustment {
            rule,
            from_minor: *price,
            to_minor: to,
        });
        *price = to;
    };
    if let (Some(previous), Some(max_change_bp)) = (previous_minor, policy.max_change_bp) {
        let step = Money::new(previous, economics.currency)
            .percent_bp(max_change_bp)?
            .minor;
        let (low, high) = (previous.saturating_sub(step), previous.saturating_add(step));
        if price > high {
            apply(Rule::MaxChangeUp, high, &mut price);
        } else if price < low {
            apply(Rule::MaxChangeDown, low, &mut price);
        }
    }
    if let Some(ceiling) = economics.ceiling_minor {
        if price > ceiling {
            apply(Rule::Ceiling, ceiling, &mut price);
        }
    }
    if price < floor.minor {
        apply(floor.rule, floor.minor, &mut price);
    }
    let margin = margin_bp(price, economics, policy).unwrap_or(0);
    Ok(GuardedPrice {
        price: Money::new(price, economics.currency),
        floor,
        margin_bp: margin,
        adjustments,
    })
}

/// A promotion's discount off the regular price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Discount {
    /// A fixed amount off, minor units.
    AmountMinor(i64),
    /// A percentage off, basis points of the regular price.
    PercentBp(i64),
}

impl Discount {
    /// The discount in minor units off `regular_minor` (percentages round half away from
    /// zero).
    pub fn amount_off(&self, regular_minor: i64, currency: Currency) -> Result<i64, MoneyError> {
        match *self {
            Discount::AmountMinor(amount) => Ok(amount),
            Discount::PercentBp(bp) => {
                Ok(Money::new(regular_minor, currency).percent_bp(bp)?.minor)
            }
        }
    }
}

/// What the floor does to a promotion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum PromotionVerdict {
    /// The discount keeps the floor as it is.
    Keep {
        discount: Discount,
        price_minor: i64,
    },
    /// The discount was reduced to the largest one that keeps the floor.
    Cut {
        requested: Discount,
        allowed: Discount,
        price_minor: i64,
    },
    /// No discount of this kind keeps the floor.
    Blocked { requested: Discount },
}

impl PromotionVerdict {
    /// The rule that fired, if the promotion was changed.
    pub fn rule(&self) -> Option<Rule> {
        match self {
            PromotionVerdict::Keep { .. } => None,
            PromotionVerdict::Cut { .. } => Some(Rule::PromotionCut),
            PromotionVerdict::Blocked { .. } => Some(Rule::PromotionBlocked),
        }
    }

    /// The promotional price, unless blocked.
    pub fn price_minor(&self) -> Option<i64> {
        match self {
            PromotionVerdict::Keep { price_minor, .. }
            | PromotionVerdict::Cut { price_minor, .. } => Some(*price_minor),
            PromotionVerdict::Blocked { .. } => None,
        }
    }
}

/// Cuts a promotion on `regular` to the largest discount of the same kind that keeps the
/// price at or above `floor_minor`, or blocks it when none does (a discount of zero is no
/// promotion). Amounts: the largest in minor units. Percentages: the largest discount a
/// percentage can give, named by the roundest basis-point value that gives it (percentages
/// round half away from zero, so neighbouring values can give the same amount).
pub fn cut_promotion(
    regular: Money,
    floor_minor: i64,
    requested: Discount,
) -> Result<PromotionVerdict, GuardrailError> {
    let currency = regular.currency;
    let requested_off = requested.amount_off(regular.minor, currency)?;
    if requested_off <= 0 {
        return Err(GuardrailError::InvalidPolicy("a discount must be positive"));
    }
    let keeps = |off: i64| regular.minor - off >= floor_minor;
    if keeps(requested_off) {
        return Ok(PromotionVerdict::Keep {
            discount: requested,
            price_minor: regular.minor - requested_off,
        });
    }
    let allowed = match requested {
        Discount::AmountMinor(_) => Discount::AmountMinor((regular.minor - floor_minor).max(0)),
        Discount::PercentBp(requested_bp) => {
            // amount_off is monotone in bp: binary search the largest bp that keeps the floor.
            let (mut low, mut high) = (0i64, requested_bp);
            while low < high {
                let mid = low + (high - low + 1) / 2;
                if keeps(Discount::PercentBp(mid).amount_off(regular.minor, currency)?) {
                    low = mid;
                } else {
                    high = mid - 1;
                }
            }
            // Several basis points round to the same amount: of those, name the roundest
            // (whole percent, then tenths), so a cut 30 % reads "20 %" rather than
            // "20.03 %" for the very same discount.
            let largest_off = Discount::PercentBp(low).amount_off(regular.minor, currency)?;
            let band_high = low;
            let (mut band_low, mut high) = (0i64, band_high);
            while band_low < high {
                let mid = band_low + (high - band_low) / 2;
                if Discount::PercentBp(mid).amount_off(regular.minor, currency)? >= largest_off {
                    high = mid;
                } else {
                    band_low = mid + 1;
                }
            }
            let roundest = [100, 10, 1]
                .into_iter()
                .map(|step| (band_low + step - 1) / step * step)
                .find(|bp| *bp <= band_high)
                .unwrap_or(band_high);
            Discount::PercentBp(roundest)
        }
    };
    let allowed_off = allowed.amount_off(regular.minor, currency)?;
    if allowed_off <= 0 {
        return Ok(PromotionVerdict::Blocked { requested });
    }
    Ok(PromotionVerdict::Cut {
        requested,
        allowed,
        price_minor: regular.minor - allowed_off,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn economics(cost: i64, logistics: i64, tax_bp: i64) -> SkuEconomics {
        SkuEconomics {
            currency: Currency::EUR,
            cost_minor: cost,
            logistics_minor: logistics,
            tax_rate_bp: tax_bp,
            floor_minor: None,
            ceiling_minor: None,
        }
    }

    #[test]
    fn margin_formula_matches_the_documented_example() {
        // 12.00 incl. 20 % VAT → net 10.00; cost 6.00 + logistics 1.00 → margin 30 %.
        let econ = economics(600, 100, 2_000);
        let policy = GuardrailPolicy::default();
        assert_eq!(net_price_minor(1_200, &econ, &policy), 1_000);
        assert_eq!(margin_bp(1_200, &econ, &policy), Some(3_000));
        assert_eq!(hard_violation(1_200, &econ, &policy), None);
        assert_eq!(hard_violation(1_199, &econ, &policy), Some(Rule::MinMargin));
        let floor = floor_for(&econ, &policy).unwrap();
        assert_eq!(
            floor,
            Floor {
                minor: 1_200,
                rule: Rule::MinMargin
            }
        );

        // The same SKU priced tax-exclusive: the floor is the net price itself.
        let exclusive = GuardrailPolicy {
            prices_include_tax: false,
            ..GuardrailPolicy::default()
        };
        assert_eq!(floor_for(&econ, &exclusive).unwrap().minor, 1_000);
    }

    #[test]
    fn the_strictest_floor_binds_and_is_named() {
        let mut econ = economics(600, 100, 0);
        let policy = GuardrailPolicy {
            min_profit_minor: 500,
            ..GuardrailPolicy::default()
        };
        assert_eq!(
            floor_for(&econ, &policy).unwrap(),
            Floor {
                minor: 1_200,
                rule: Rule::MinProfit
            }
        );
        econ.floor_minor = Some(1_500);
        assert_eq!(
            floor_for(&econ, &policy).unwrap(),
            Floor {
                minor: 1_500,
                rule: Rule::RegulatoryFloor
            }
        );
        econ.ceiling_minor = Some(1_400);
        assert!(matches!(
            floor_for(&econ, &policy),
            Err(GuardrailError::FloorAboveCeiling {
                floor: 1_500,
                ceiling: 1_400,
                ..
            })
        ));
    }

    #[test]
    fn a_candidate_below_floor_is_raised_and_the_rule_reported() {
        let econ = economics(600, 100, 2_000);
        let guarded = guard(
            Money::new(999, Currency::EUR),
            None,
            &econ,
            &GuardrailPolicy::default(),
        )
        .unwrap();
        assert_eq!(guarded.price.minor, 1_200);
        assert_eq!(guarded.margin_bp, 3_000);
        assert_eq!(
            guarded.adjustments,
            vec![Adjustment {
                rule: Rule::MinMargin,
                from_minor: 999,
                to_minor: 1_200
            }]
        );
    }

    #[test]
    fn change_limit_holds_moves_but_yields_to_the_floor() {
        let econ = economics(600, 100, 2_000);
        let policy = GuardrailPolicy {
            max_change_bp: Some(1_000),
            ..GuardrailPolicy::default()
        };
        let up = guard(
            Money::new(2_000, Currency::EUR),
            Some(1_500),
            &econ,
            &policy,
        )
        .unwrap();
        assert_eq!(up.price.minor, 1_650);
        assert_eq!(up.adjustments[0].rule, Rule::MaxChangeUp);
        // A 10 % cut from 1,300 would be 1,170, under the 1,200 floor: the floor wins.
        let down = guard(
            Money::new(1_000, Currency::EUR),
            Some(1_300),
            &econ,
            &policy,
        )
        .unwrap();
        assert_eq!(down.price.minor, 1_200);
        let rules: Vec<_> = down.adjustments.iter().map(|a| a.rule).collect();
        assert_eq!(rules, vec![Rule::MaxChangeDown, Rule::MinMargin]);
    }

    #[test]
    fn promotions_are_cut_to_the_floor_or_blocked() {
        let regular = Money::new(1_500, Currency::EUR);
        assert_eq!(
            cut_promotion(regular, 1_200, Discount::PercentBp(1_000)).unwrap(),
            PromotionVerdict::Keep {
                discount: Discount::PercentBp(1_000),
                price_minor: 1_350
            }
        );
        // 30 % off 15.00 would be 10.50; the most that keeps 12.00 is 20 %.
        assert_eq!(
            cut_promotion(regular, 1_200, Discount::PercentBp(3_000)).unwrap(),
            PromotionVerdict::Cut {
                requested: Discount::PercentBp(3_000),
                allowed: Discount::PercentBp(2_000),
                price_minor: 1_200
            }
        );
        assert_eq!(
            cut_promotion(regular, 1_200, Discount::AmountMinor(500))
                .unwrap()
                .rule(),
            Some(Rule::PromotionCut)
        );
        assert_eq!(
            cut_promotion(
                Money::new(1_200, Currency::EUR),
                1_200,
                Discount::AmountMinor(1)
            )
            .unwrap(),
            PromotionVerdict::Blocked {
                requested: Discount::AmountMinor(1)
            }
        );
    }

    #[test]
    fn invalid_settings_are_rejected_with_a_code() {
        let econ = economics(600, 100, 2_000);
        let policy = GuardrailPolicy {
            min_margin_bp: 10_000,
            ..GuardrailPolicy::default()
        };
        let err = floor_for(&econ, &policy).unwrap_err();
        assert_eq!(err.code(), "invalid_guardrail_policy");
        let err = guard(
            Money::new(100, Currency::USD),
            None,
            &econ,
            &GuardrailPolicy::default(),
        )
        .unwrap_err();
        assert_eq!(err.code(), "currency_mismatch");
        assert_eq!(
            floor_for(&economics(-1, 0, 0), &GuardrailPolicy::default())
                .unwrap_err()
                .code(),
            "invalid_sku_economics"
        );
    }

    fn arb_case() -> impl Strategy<Value = (SkuEconomics, GuardrailPolicy)> {
        (
            0i64..1_000_000,
            0i64..10_000,
            prop_oneof![Just(0i64), 0i64..3_000],
            proptest::option::of(0i64..3_000_000),
            proptest::option::of(0i64..3_000_000),
            0i64..9_000,
            prop_oneof![Just(0i64), 0i64..100_000],
            proptest::option::of(0i64..=5_000),
            any::<bool>(),
        )
            .prop_map(
                |(cost, logistics, tax, floor, ceiling, margin, profit, change, inclusive)| {
                    (
                        SkuEconomics {
                            currency: Currency::EUR,
                            cost_minor: cost,
                            logistics_minor: logistics,
                            tax_rate_bp: tax,
                            floor_minor: floor,
                            ceiling_minor: ceiling,
                        },
                        GuardrailPolicy {
                            min_margin_bp: margin,
                            min_profit_minor: profit,
                            max_change_bp: change,
                            prices_include_tax: inclusive,
                        },
                    )
                },
            )
    }

    proptest! {
        #[test]
        fn floor_is_the_lowest_price_satisfying_every_hard_guardrail((econ, policy) in arb_case()) {
            match floor_for(&econ, &policy) {
                Ok(floor) => {
                    prop_assert_eq!(hard_violation(floor.minor, &econ, &policy), None);
                    if floor.minor > 0 {
                        prop_assert!(hard_violation(floor.minor - 1, &econ, &policy).is_some());
                    }
                }
                Err(GuardrailError::FloorAboveCeiling { floor, ceiling, .. }) => {
                    prop_assert!(floor > ceiling);
                    // Nothing up to the ceiling satisfies the floors.
                    prop_assert!(hard_violation(ceiling, &econ, &policy).is_some());
                }
                Err(other) => prop_assert!(false, "unexpected error {other}"),
            }
        }

        #[test]
        fn guarded_price_never_violates_a_guardrail(
            (econ, policy) in arb_case(),
            candidate in 0i64..5_000_000,
            previous in proptest::option::of(1i64..5_000_000),
        ) {
            let Ok(guarded) = guard(Money::new(candidate, Currency::EUR), previous, &econ, &policy) else {
                prop_assert!(floor_for(&econ, &policy).is_err());
                return Ok(());
            };
            let price = guarded.price.minor;
            prop_assert_eq!(hard_violation(price, &econ, &policy), None);
            prop_assert!(price >= guarded.floor.minor);
            prop_assert!(guarded.margin_bp >= policy.min_margin_bp);
            if let (Some(prev), Some(bp)) = (previous, policy.max_change_bp) {
                let step = Money::new(prev, Currency::EUR).percent_bp(bp).unwrap().minor;
                let (low, high) = (prev - step, prev + step);
                let hard_high = econ.ceiling_minor.unwrap_or(i64::MAX);
                // The band is kept whenever it leaves room inside the hard limits.
                if high >= guarded.floor.minor && low <= hard_high {
                    prop_assert!(low <= price && price <= high, "{price} outside {low}..={high}");
                }
            }
            if guarded.adjustments.is_empty() {
                prop_assert_eq!(price, candidate);
            }
        }

        #[test]
        fn cut_discount_is_the_largest_that_keeps_the_floor(
            regular in 1i64..2_000_000,
            floor_share in 0i64..=10_000,
            amount in 1i64..2_000_000,
            bp in 1i64..=10_000,
        ) {
            let floor = regular * floor_share / 10_000;
            let money = Money::new(regular, Currency::EUR);
            match cut_promotion(money, floor, Discount::AmountMinor(amount)).unwrap() {
                PromotionVerdict::Keep { price_minor, .. } => prop_assert_eq!(price_minor, regular - amount),
                PromotionVerdict::Cut { allowed: Discount::AmountMinor(off), price_minor, .. } => {
                    prop_assert!(off < amount && price_minor >= floor);
                    prop_assert!(regular - (off + 1) < floor, "one more minor unit would still keep the floor");
                }
                PromotionVerdict::Blocked { .. } => prop_assert!(regular - 1 < floor),
                other => prop_assert!(false, "unexpected {other:?}"),
            }
            let off_at = |b: i64| Discount::PercentBp(b).amount_off(regular, Currency::EUR).unwrap();
            match cut_promotion(money, floor, Discount::PercentBp(bp)).unwrap() {
                PromotionVerdict::Keep { price_minor, .. } => prop_assert_eq!(price_minor, regular - off_at(bp)),
                PromotionVerdict::Cut { allowed: Discount::PercentBp(allowed), price_minor, .. } => {
                    prop_assert!(allowed < bp && price_minor >= floor && off_at(allowed) > 0);
                    prop_assert_eq!(price_minor, regular - off_at(allowed));
                    // Any requested-or-smaller percentage giving a bigger discount breaks the floor.
                    let bigger = (allowed..=bp).find(|b| off_at(*b) > off_at(allowed));
                    prop_assert!(bigger.is_some_and(|b| regular - off_at(b) < floor), "a bigger discount would still keep the floor");
                }
                PromotionVerdict::Blocked { .. } => {
                    // Every discount of at least one minor unit breaks the floor.
                    let smallest = (1..=bp).find(|b| off_at(*b) > 0);
                    prop_assert!(smallest.is_none_or(|b| regular - off_at(b) < floor));
                }
                other => prop_assert!(false, "unexpected {other:?}"),
            }
        }
    }
}
