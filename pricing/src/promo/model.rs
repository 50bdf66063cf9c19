//! Promotion definitions as they travel in snapshots and through the control plane's
//! feeds: what a promotion targets, what it gives, when and to whom it applies, how it
//! stacks, and which coupon codes unlock it. [`Promotion::validate`] checks a definition
//! and names the first problem it finds.

use chrono::Weekday;
use serde::{Deserialize, Serialize};

use crate::key::{self, KeyError, Sku};
use crate::money::Currency;

/// Version of the promotion definition schema this build reads and writes.
pub const PROMOTION_SCHEMA_VERSION: u32 = 1;

/// 100 % in basis points.
pub const FULL_BASIS_POINTS: u32 = 10_000;

/// Largest amount (in minor units) a definition may carry: 10^13, far above any real
/// price, small enough that `amount × quantity` never overflows an `i64` for the
/// quantities the evaluator accepts.
pub const MAX_AMOUNT_MINOR: i64 = 10_000_000_000_000;

/// Longest accepted coupon code, in bytes.
pub const MAX_COUPON_CODE_LEN: usize = 64;

fn schema_version() -> u32 {
    PROMOTION_SCHEMA_VERSION
}

/// One promotion definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promotion {
    /// Unique id (same character rules as a SKU).
    pub id: String,
    /// Schema version of this definition; only [`PROMOTION_SCHEMA_VERSION`] is accepted.
    #[serde(default = "schema_version")]
    pub schema: u32,
    /// Revision of this promotion, raised by the control plane on every change.
    #[serde(default)]
    pub revision: u64,
    /// Shown to customers and in explanations ("Flash sale -20%").
    pub label: String,
    /// Currency of the amounts in [`Rule`]; required by rules that carry amounts. A
    /// promotion with a currency never applies to a cart in another currency.
    #[serde(default)]
    pub currency: Option<Currency>,
    /// Which lines the rule looks at. Bundles name their SKUs in the rule and must keep
    /// the default, [`Target::All`].
    #[serde(default)]
    pub target: Target,
    /// What the promotion gives.
    pub rule: Rule,
    /// Who, where and when.
    #[serde(default)]
    pub conditions: Conditions,
    /// How it combines with other promotions.
    #[serde(default)]
    pub stacking: Stacking,
    /// When set, the promotion applies only if one of its codes is presented.
    #[serde(default)]
    pub coupon: Option<CouponRule>,
}

/// The cart lines a promotion looks at.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Target {
    /// Every line.
    #[default]
    All,
    /// Lines whose SKU is listed.
    Skus { skus: Vec<Sku> },
    /// Lines whose category is listed (lines without a category never match).
    Categories { categories: Vec<String> },
}

/// A volume tier: from `min_quantity` targeted units on, every targeted unit gets
/// `basis_points` off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeTier {
    pub min_quantity: u32,
    pub basis_points: u32,
}

/// One SKU of a bundle and how many units of it one bundle takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleComponent {
    pub sku: Sku,
    pub quantity: u32,
}

/// What a promotion gives. Item-level rules discount lines; cart-level rules discount
/// the subtotal and are spread over lines; [`Rule::FreeShipping`] waives shipping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Rule {
    /// `basis_points` off each targeted line.
    PercentOff { basis_points: u32 },
    /// `amount_minor` off each targeted unit.
    AmountOff { amount_minor: i64 },
    /// Each targeted unit costs `unit_price_minor` (never raises a price).
    FixedPrice { unit_price_minor: i64 },
    /// For every `buy + get` targeted units, the `get` cheapest get `get_basis_points`
    /// off (10,000 = free); at most `max_applications` times per cart.
    BuyXGetY {
        buy: u32,
        get: u32,
        #[serde(default = "full_basis_points")]
        get_basis_points: u32,
        #[serde(default)]
        max_applications: Option<u32>,
    },
    /// Every complete group of `quantity` targeted units gets `basis_points` off ("buy 2,
    /// get 30 % off"); units outside a complete group pay full price; at most
    /// `max_applications` groups per cart.
    BuyNPercentOff {
        quantity: u32,
        basis_points: u32,
        #[serde(default)]
        max_applications: Option<u32>,
    },
    /// Buy more, save more: the highest tier reached by the total targeted quantity
    /// applies to every targeted unit.
    TieredVolume { tiers: Vec<VolumeTier> },
    /// Each complete set of `components` costs `bundle_price_minor`; at most
    /// `max_applications` sets per cart.
    Bundle {
        components: Vec<BundleComponent>,
        bundle_price_minor: i64,
        #[serde(default)]
        max_applications: Option<u32>,
    },
    /// An inventory-driven markdown: `basis_points` off each targeted line. The control
    /// plane starts and ends it from stock levels; the engine treats it like
    /// [`Rule::PercentOff`] and reports it as clearance.
    Clearance { basis_points: u32 },
    /// `amount_minor` off the targeted subtotal once it reaches `threshold_minor`.
    CartAmountOff {
        threshold_minor: i64,
        amount_minor: i64,
    },
    /// `basis_points` off the targeted subtotal once it reaches `threshold_minor`.
    CartPercentOff {
        threshold_minor: i64,
        basis_points: u32,
    },
    /// Shipping is free once the targeted merchandise total reaches `threshold_minor`.
    FreeShipping { threshold_minor: i64 },
}

fn full_basis_points() -> u32 {
    FULL_BASIS_POINTS
}

/// Where in the evaluation a rule acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Discounts lines directly.
    Item,
    /// Discounts a subtotal that is then spread over lines.
    Cart,
    /// Waives shipping.
    Shipping,
}

/// The kind of a rule, for explanations and API output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    PercentOff,
    AmountOff,
    FixedPrice,
    BuyXGetY,
    BuyNPercentOff,
    TieredVolume,
    Bundle,
    Clearance,
    CartAmountOff,
    CartPercentOff,
    FreeShipping,
}

impl RuleKind {
    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::PercentOff => "percent_off",
            RuleKind::AmountOff => "amount_off",
            RuleKind::FixedPrice => "fixed_price",
            RuleKind::BuyXGetY => "buy_x_get_y",
            RuleKind::BuyNPercentOff => "buy_n_percent_off",
            RuleKind::TieredVolume => "tiered_volume",
            RuleKind::Bundle => "bundle",
            RuleKind::Clearance => "clearance",
            RuleKind::CartAmountOff => "cart_amount_off",
            RuleKind::CartPercentOff => "cart_percent_off",
            RuleKind::FreeShipping => "free_shipping",
        }
    }
}

impl std::fmt::Display for RuleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Rule {
    /// The rule's kind.
    pub fn kind(&self) -> RuleKind {
        match self {
            Rule::PercentOff { .. } => RuleKind::PercentOff,
            Rule::AmountOff { .. } => RuleKind::AmountOff,
            Rule::FixedPrice { .. } => RuleKind::FixedPrice,
            Rule::BuyXGetY { .. } => RuleKind::BuyXGetY,
            Rule::BuyNPercentOff { .. } => RuleKind::BuyNPercentOff,
            Rule::TieredVolume { .. } => RuleKind::TieredVolume,
            Rule::Bundle { .. } => RuleKind::Bundle,
            Rule::Clearance { .. } => RuleKind::Clearance,
            Rule::CartAmountOff { .. } => RuleKind::CartAmountOff,
            Rule::CartPercentOff { .. } => RuleKind::CartPercentOff,
            Rule::FreeShipping { .. } => RuleKind::FreeShipping,
        }
    }

    /// Where in the evaluation the rule acts.
    pub fn level(&self) -> Level {
        match self {
            Rule::CartAmountOff { .. } | Rule::CartPercentOff { .. } => Level::Cart,
            Rule::FreeShipping { .. } => Level::Shipping,
            _ => Level::Item,
        }
    }

    fn carries_amounts(&self) -> bool {
        matches!(
            self,
            Rule::AmountOff { .. }
                | Rule::FixedPrice { .. }
                | Rule::Bundle { .. }
                | Rule::CartAmountOff { .. }
                | Rule::CartPercentOff { .. }
                | Rule::FreeShipping { .. }
        )
    }
}

/// A recurring local-time window ("happy hour"): on the listed days, from `start_minute`
/// (inclusive) to `end_minute` (exclusive), minutes after local midnight in the store's
/// time zone. A window that crosses midnight is written as two windows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecurringWindow {
    pub days: Vec<Weekday>,
    pub start_minute: u16,
    pub end_minute: u16,
}

/// Minutes in a day: the largest `end_minute`.
pub const MINUTES_PER_DAY: u16 = 24 * 60;

/// Who, where and when a promotion applies. Empty lists mean "any".
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Conditions {
    /// Store ids (store-only deals).
    #[serde(default)]
    pub stores: Vec<String>,
    /// Channels such as `web`, `app`, `pos` (app-only, online exclusives).
    #[serde(default)]
    pub channels: Vec<String>,
    /// Customer segments (member tiers, personalised offers).
    #[serde(default)]
    pub segments: Vec<String>,
    /// Only for identified customers (a customer id is present).
    #[serde(default)]
    pub members_only: bool,
    /// Absolute window start, Unix ms, inclusive (flash sales).
    #[serde(default)]
    pub starts_at_ms: Option<i64>,
    /// Absolute window end, Unix ms, exclusive.
    #[serde(default)]
    pub ends_at_ms: Option<i64>,
    /// Recurring windows in the store's local time; when non-empty, `now` must fall in
    /// at least one of them (and in the absolute window, if any).
    #[serde(default)]
    pub recurring: Vec<RecurringWindow>,
}

/// Coupon codes that unlock a promotion, and their redemption limits. The engine reads
/// current redemption counts from the request; reserving a redemption is the checkout
/// saga's job.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CouponRule {
    /// Codes, matched case-insensitively (stored and compared in ASCII upper case).
    pub codes: Vec<String>,
    /// Each code can be redeemed once in total (single-use codes); otherwise a code may
    /// be redeemed many times, within the limits below.
    #[serde(default)]
    pub single_use: bool,
    /// Most redemptions of this promotion over all codes and customers.
    #[serde(default)]
    pub total_limit: Option<u64>,
    /// Most redemptions per customer; requires a customer id.
    #[serde(default)]
    pub per_customer_limit: Option<u64>,
}

/// How a promotion combines with others; see the module docs of [`crate::promo`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Stacking {
    /// Higher goes first. Ties are broken by id (ascending).
    #[serde(default)]
    pub priority: i32,
    /// Applies only to lines nothing else has discounted yet, and then keeps every
    /// other promotion (item and cart level) off the lines it discounted.
    #[serde(default)]
    pub exclusive: bool,
    /// Stacking group; its mode comes from the [`super::StackingPolicy`].
    #[serde(default)]
    pub group: Option<String>,
    /// Promotion ids this one is never combined with in one cart (symmetric).
    #[serde(default)]
    pub never_with: Vec<String>,
}

/// Why a definition was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("bad id: {0}")]
    Id(KeyError),
    #[error("label is empty")]
    EmptyLabel,
    #[error("schema version {0} is not supported (this build reads {PROMOTION_SCHEMA_VERSION})")]
    Schema(u32),
    #[error("{field} is {value} basis points; allowed are 1..=10000")]
    BasisPoints { field: &'static str, value: u32 },
    #[error("{field} is {value}; allowed are 0..={MAX_AMOUNT_MINOR} minor units")]
    Amount { field: &'static str, value: i64 },
    #[error("{field} must be at least 1")]
    ZeroQuantity { field: &'static str },
    #[error("a {0} rule carries amounts and needs a currency")]
    MissingCurrency(RuleKind),
    #[error("target lists nothing")]
    EmptyTarget,
    #[error("bad SKU or category in target: {0}")]
    TargetValue(KeyError),
    #[error("bundles name their SKUs in the rule; target must be `all`")]
    BundleTarget,
    #[error("tiers: {0}")]
    Tiers(&'static str),
    #[error("bundle: {0}")]
    Bundle(&'static str),
    #[error("time window: {0}")]
    Window(&'static str),
    #[error("bad store, channel or segment: {0}")]
    Dimension(KeyError),
    #[error("coupon: {0}")]
    Coupon(String),
    #[error("stacking: {0}")]
    Stacking(String),
}

/// Why a promotion set could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromotionError {
    #[error("promotion {id}: {reason}")]
    Invalid { id: String, reason: Invalid },
    #[error("promotion id {0} appears twice")]
    DuplicateId(String),
    #[error("coupon code {code} belongs to both {first} and {second}")]
    DuplicateCouponCode {
        code: String,
        first: String,
        second: String,
    },
    #[error("stacking policy: {0}")]
    Policy(String),
}

/// Normalises a coupon code: ASCII upper case, 1–64 bytes of `[A-Z0-9_-]`.
pub fn normalize_coupon_code(code: &str) -> Option<String> {
    let valid = !code.is_empty()
        && code.len() <= MAX_COUPON_CODE_LEN
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    valid.then(|| code.to_ascii_uppercase())
}

fn check_bp(field: &'static str, value: u32) -> Result<(), Invalid> {
    if value == 0 || value > FULL_BASIS_POINTS {
        return Err(Invalid::BasisPoints { field, value });
    }
    Ok(())
}

fn check_amount(field: &'static str, value: i64) -> Result<(), Invalid> {
    if !(0..=MAX_AMOUNT_MINOR).contains(&value) {
        return Err(Invalid::Amount { field, value });
    }
    Ok(())
}

fn check_positive_amount(field: &'static str, value: i64) -> Result<(), Invalid> {
    check_amount(field, value)?;
    if value == 0 {
        return Err(Invalid::Amount { field, value });
    }
    Ok(())
}

fn check_qty(field: &'static str, value: u32) -> Result<(), Invalid> {
    if value == 0 {
        return Err(Invalid::ZeroQuantity { field });
    }
    Ok(())
}

impl Promotion {
    /// Checks the definition; the error names the promotion and the first problem.
    pub fn validate(&self) -> Result<(), PromotionError> {
        self.check().map_err(|reason| PromotionError::Invalid {
            id: self.id.clone(),
            reason,
        })
    }

    fn check(&self) -> Result<(), Invalid> {
        key::validate("promotion id", &self.id).map_err(Invalid::Id)?;
        if self.schema != PROMOTION_SCHEMA_VERSION {
            return Err(Invalid::Schema(self.schema));
        }
        if self.label.trim().is_empty() {
            return Err(Invalid::EmptyLabel);
        }
        if self.rule.carries_amounts() && self.currency.is_none() {
            return Err(Invalid::MissingCurrency(self.rule.kind()));
        }
        match &self.target {
            Target::All => {}
            Target::Skus { skus } if skus.is_empty() => return Err(Invalid::EmptyTarget),
            Target::Skus { .. } => {}
            Target::Categories { categories } => {
                if categories.is_empty() {
                    return Err(Invalid::EmptyTarget);
                }
                for category in categories {
                    key::validate("category", category).map_err(Invalid::TargetValue)?;
                }
            }
        }
        self.check_rule()?;
        self.check_conditions()?;
        if let Some(coupon) = &self.coupon {
            if coupon.codes.is_empty() {
                return Err(Invalid::Coupon("no codes".into()));
            }
            for code in &coupon.codes {
                if normalize_coupon_code(code).is_none() {
                    return Err(Invalid::Coupon(format!(
                        "code {code:?} is not 1-{MAX_COUPON_CODE_LEN} letters, digits, - or _"
                    )));
                }
            }
            if coupon.total_limit == Some(0) || coupon.per_customer_limit == Some(0) {
                return Err(Invalid::Coupon(
                    "a limit of 0 would never apply; remove the promotion instead".into(),
                ));
            }
        }
        if let Some(group) = &self.stacking.group {
            key::validate("group", group).map_err(|e| Invalid::Stacking(e.to_string()))?;
        }
        if self.stacking.never_with.contains(&self.id) {
            return Err(Invalid::Stacking(
                "never_with names the promotion itself".into(),
            ));
        }
        Ok(())
    }

    fn check_rule(&self) -> Result<(), Invalid> {
        match &self.rule {
            Rule::PercentOff { basis_points } | Rule::Clearance { basis_points } => {
                check_bp("basis_points", *basis_points)
            }
            Rule::AmountOff { amount_minor } => {
                check_positive_amount("amount_minor", *amount_minor)
            }
            Rule::FixedPrice { unit_price_minor } => {
                check_amount("unit_price_minor", *unit_price_minor)
            }
            Rule::BuyXGetY {
                buy,
                get,
                get_basis_points,
                max_applications,
            } => {
                check_qty("buy", *buy)?;
                check_qty("get", *get)?;
                check_bp("get_basis_points", *get_basis_points)?;
                max_applications.map_or(Ok(()), |m| check_qty("max_applications", m))
            }
            Rule::BuyNPercentOff {
                quantity,
                basis_points,
                max_applications,
            } => {
                check_qty("quantity", *quantity)?;
                check_bp("basis_points", *basis_points)?;
                max_applications.map_or(Ok(()), |m| check_qty("max_applications", m))
            }
            Rule::TieredVolume { tiers } => {
                if tiers.is_empty() {
                    return Err(Invalid::Tiers("no tiers"));
                }
                for tier in tiers {
                    check_qty("tiers.min_quantity", tier.min_quantity)?;
                    check_bp("tiers.basis_points", tier.basis_points)?;
                }
                let ascending = tiers.windows(2).all(|pair| {
                    pair[0].min_quantity < pair[1].min_quantity
                        && pair[0].basis_points < pair[1].basis_points
                });
                if !ascending {
                    return Err(Invalid::Tiers(
                        "tiers must rise strictly in both min_quantity and basis_points",
                    ));
                }
                Ok(())
            }
            Rule::Bundle {
                components,
                bundle_price_minor,
                max_applications,
            } => {
                if self.target != Target::All {
                    return Err(Invalid::BundleTarget);
                }
                if components.len() < 2 && components.iter().all(|c| c.quantity < 2) {
                    return Err(Invalid::Bundle("a bundle needs at least two units"));
                }
                for component in components {
                    check_qty("components.quantity", component.quantity)?;
                }
                let mut skus: Vec<&Sku> = components.iter().map(|c| &c.sku).collect();
                skus.sort();
                if skus.windows(2).any(|pair| pair[0] == pair[1]) {
                    return Err(Invalid::Bundle("a SKU appears twice; raise its quantity"));
                }
                check_amount("bundle_price_minor", *bundle_price_minor)?;
                max_applications.map_or(Ok(()), |m| check_qty("max_applications", m))
            }
            Rule::CartAmountOff {
                threshold_minor,
                amount_minor,
            } => {
                check_amount("threshold_minor", *threshold_minor)?;
                check_positive_amount("amount_minor", *amount_minor)
            }
            Rule::CartPercentOff {
                threshold_minor,
                basis_points,
            } => {
                check_amount("threshold_minor", *threshold_minor)?;
                check_bp("basis_points", *basis_points)
            }
            Rule::FreeShipping { threshold_minor } => {
                check_amount("threshold_minor", *threshold_minor)
            }
        }
    }

    fn check_conditions(&self) -> Result<(), Invalid> {
        let conditions = &self.conditions;
        for value in conditions
            .stores
            .iter()
            .chain(&conditions.channels)
            .chain(&conditions.segments)
        {
            key::validate("dimension", value).map_err(Invalid::Dimension)?;
        }
        if let (Some(start), Some(end)) = (conditions.starts_at_ms, conditions.ends_at_ms) {
            if end <= start {
                return Err(Invalid::Window("ends_at_ms is not after starts_at_ms"));
            }
        }
        for window in &conditions.recurring {
            if window.days.is_empty() {
                return Err(Invalid::Window("a recurring window lists no days"));
            }
            if window.start_minute >= window.end_minute || window.end_minute > MINUTES_PER_DAY {
                return Err(Invalid::Window(
                    "recurring windows need start_minute < end_minute <= 1440 (split windows that cross midnight)",
                ));
            }
        }
        Ok(())
    }
}
