//! The control plane's admin API (`/v1/admin/…`): routes and the JSON bodies they
//! take and give. The control plane serves these types and the operator console reads
//! them, so this module is the contract between the two.
//!
//! Authentication: `Authorization: Bearer <token>`; each configured token has a
//! [`Role`]. A missing or unknown token is `401 unauthorized`; a token whose role is too
//! low is `403 forbidden` (the message names the role needed). Errors are
//! `{"error":{"code":"…","message":"…"}}`.
//!
//! | route | role | body → answer |
//! |---|---|---|
//! | `GET /v1/admin/whoami` | viewer | → [`WhoAmI`] |
//! | `GET /v1/admin/metrics` | viewer | → [`Metrics`] |
//! | `GET /v1/admin/alerts?limit=N` | viewer | → `Vec<`[`AlertRow`]`>` (newest first) |
//! | `GET /v1/admin/skus?q=&sort=&desc=&limit=&offset=` | viewer | → [`SkuPage`] |
//! | `GET /v1/admin/skus/{sku}` | viewer | → [`SkuDetail`] |
//! | `GET /v1/admin/decisions?sku=&limit=` | viewer | → `{"sku", "decisions": [decision record…]}` |
//! | `GET /v1/admin/overrides` | viewer | → `Vec<`[`Override`]`>` (active ones) |
//! | `POST /v1/admin/overrides` | operator (admin to go below floor, with `force`) | [`OverrideRequest`] → `201` [`Override`] |
//! | `DELETE /v1/admin/overrides/{id}?reason=` | operator | → [`Override`] (as it was, `ended_by` set) |
//! | `GET /v1/admin/kill-switches` | viewer | → [`KillSwitches`] |
//! | `POST /v1/admin/kill-switches` | operator | [`KillSwitchRequest`] → [`KillSwitchOutcome`] |
//! | `GET /v1/admin/promotions` | viewer | → `Vec<`[`PromotionRow`]`>` |
//! | `GET /v1/admin/promotions/{id}` | viewer | → the definition (`edgeprice_pricing::promo::Promotion`) |
//! | `PUT /v1/admin/promotions/{id}?reason=` | operator | definition → [`PromotionChange`] |
//! | `DELETE /v1/admin/promotions/{id}?reason=` | operator | → [`PromotionChange`] |
//! | `POST /v1/admin/promotions/dry-run` | viewer | [`DryRunRequest`] → [`DryRunReport`] |
//! | `GET /v1/admin/audit?limit=&before=` | viewer | → `Vec<`[`AuditRow`]`>` (newest first) |
//! | `GET /v1/admin/approvals` | viewer | → `Vec<`[`Approval`]`>` (pending) |
//! | `POST /v1/admin/approvals/{sku}` | operator | [`ApprovalRequest`] → decision record |
//!
//! Every mutating call needs a non-empty `reason` and is written to the audit log with
//! the token's name; its answer is the state the server now holds (the console shows
//! that, never what it asked for).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a token may do; each role may do everything the roles below it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Also overrides prices (not below floor), flips kill switches, approves.
    Operator,
    /// Also forces overrides below the floor.
    Admin,
}

impl Role {
    /// The role's name as in config files and answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?}; roles are viewer, operator, admin"
            )),
        }
    }
}

/// `GET /v1/admin/whoami`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    /// The token's name (what the audit log records as the actor).
    pub name: String,
    pub role: Role,
}

/// `GET /v1/admin/metrics`: one consistent reading of the whole system.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Metrics {
    /// When it was read, Unix ms.
    pub at_ms: i64,
    pub edges: Vec<EdgeMetrics>,
    pub pipeline: PipelineMetrics,
    /// SKUs by margin at their published regular price.
    pub margin_histogram: Vec<MarginBucket>,
    /// Revenue of orders and POS sales over the last minute, per currency.
    pub revenue_per_min: Vec<Amount>,
    pub checkout: CheckoutMetrics,
    /// Active kill switches (also in [`KillSwitches`]).
    pub kill_switches_active: u32,
    /// Alerts raised over the last hour.
    pub alerts_last_hour: u32,
}

/// One edge as the control plane sees it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct EdgeMetrics {
    /// `in-process` or the edge's URL.
    pub name: String,
    /// Whether the last reading or publish reached it.
    pub reachable: bool,
    /// Requests served since it started.
    pub requests_total: u64,
    /// Requests per second over the last reading interval.
    pub requests_per_s: f64,
    /// Latency percentiles over the last reading interval, microseconds.
    pub p50_us: u64,
    pub p99_us: u64,
    /// The snapshot version it serves.
    pub snapshot_version: u64,
    /// How old that snapshot is, ms.
    pub snapshot_age_ms: i64,
}

/// The decision pipeline.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PipelineMetrics {
    /// Paused by a kill switch: edges keep serving, events keep being accepted.
    pub paused: bool,
    pub events_total: u64,
    pub events_per_s: f64,
    pub decisions_total: u64,
    pub decisions_per_s: f64,
    /// Accepted events not processed yet.
    pub backlog: u64,
    pub dead_letters_total: u64,
    /// p99 of each stage over the last minute, microseconds (`read`, `decide`,
    /// `commit`, `publish`, `batch` per pipeline batch; `ingest_lock_wait`,
    /// `ingest_write`, `ingest_commit` per ingest group commit).
    pub stage_p99_us: BTreeMap<String, u64>,
    /// The slowest of each stage over the last minute, microseconds: the stalls a p99
    /// hides.
    pub stage_max_us: BTreeMap<String, u64>,
    /// Per feed: age of the newest event processed when it was processed, ms (how far
    /// behind the feed the prices are).
    pub feed_lag_ms: BTreeMap<String, i64>,
    /// Snapshot version last published.
    pub version: u64,
}

/// SKUs whose margin (basis points) is in `[lo_bp, hi_bp)`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MarginBucket {
    pub lo_bp: i64,
    pub hi_bp: i64,
    pub skus: u64,
}

/// An amount of money in minor units of `currency` (ISO 4217).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Amount {
    pub minor: i64,
    pub currency: String,
}

/// Checkout and inventory.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckoutMetrics {
    /// Whether checkout takes orders (a kill switch closes it).
    pub open: bool,
    pub reservations_active: u64,
    /// Units sold beyond stock: must stay 0.
    pub oversell: u64,
    pub orders_total: u64,
    /// Sagas by state (`reserved`, `paid`, `completed`, `compensated`, …).
    pub sagas: BTreeMap<String, u64>,
}

/// An alert for operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRow {
    pub at_ms: i64,
    /// `promotion_blocked`, `guardrail_conflict`, `cost_anomaly`, `inventory_exhausted`,
    /// `override_expired`, …
    pub kind: String,
    pub sku: Option<String>,
    pub message: String,
}

/// `sort` values of `GET /v1/admin/skus`.
pub const SKU_SORTS: &[&str] = &["sku", "price", "margin", "changed"];

/// One SKU in the SKU table: its chain-wide published price.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SkuRow {
    pub sku: String,
    pub category: String,
    pub currency: String,
    pub list_minor: i64,
    /// The regular price at the edges.
    pub price_minor: i64,
    /// The price with the SKU's active promotion, when it has one.
    pub promo_price_minor: Option<i64>,
    pub floor_minor: Option<i64>,
    pub margin_bp: Option<i64>,
    /// When the price last changed, Unix ms.
    pub changed_at_ms: i64,
    pub on_hand: Option<i64>,
    pub frozen: bool,
    pub overridden: bool,
    /// A held cost or a suggestion waits for review.
    pub needs_review: bool,
}

/// `GET /v1/admin/skus`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SkuPage {
    /// SKUs matching the filter.
    pub total: u64,
    pub offset: u64,
    pub skus: Vec<SkuRow>,
}

/// `GET /v1/admin/skus/{sku}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SkuDetail {
    pub row: SkuRow,
    pub cost_minor: Option<i64>,
    /// Why the SKU has its price, for a person (from the latest decision).
    pub explanation: Vec<String>,
    /// The latest decision record as stored in the audit log.
    pub latest_decision: Option<serde_json::Value>,
    pub overrides: Vec<Override>,
}

/// `POST /v1/admin/overrides`: pin a price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverrideRequest {
    pub sku: String,
    /// Only this store (default: every store).
    #[serde(default)]
    pub store: Option<String>,
    /// Only this channel (default: every channel).
    #[serde(default)]
    pub channel: Option<String>,
    pub price_minor: i64,
    /// Must be the SKU's currency.
    pub currency: String,
    /// When the pin ends, Unix ms; at most 30 days ahead.
    pub expires_at_ms: i64,
    pub reason: String,
    /// Needed (with the admin role) for a price below the SKU's floor.
    #[serde(default)]
    pub force: bool,
}

/// A price override as the server holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Override {
    pub id: u64,
    pub sku: String,
    pub store: Option<String>,
    pub channel: Option<String>,
    pub price_minor: i64,
    pub currency: String,
    /// The floor when it was set.
    pub floor_minor: Option<i64>,
    /// Forced below the floor.
    pub below_floor: bool,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub reason: String,
    /// Token name that set it.
    pub by: String,
    /// Set once removed: who removed it (`expiry` when it ran out).
    pub ended_by: Option<String>,
    /// The snapshot version that carries it (or its removal).
    pub snapshot_version: u64,
}

/// A kill switch.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Switch {
    /// Every promotion off at every edge.
    AllPromotions,
    /// One promotion off.
    Promotion { id: String },
    /// A SKU's prices stay as they are: the pipeline stops changing them.
    FreezeSku { sku: String },
    /// The automated pipeline stops deciding; edges keep serving, events keep being
    /// accepted and are processed when it resumes.
    Pipeline,
    /// Checkout refuses new orders (`503 checkout_closed`).
    Checkout,
}

impl std::fmt::Display for Switch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Switch::AllPromotions => f.write_str("all promotions off"),
            Switch::Promotion { id } => write!(f, "promotion {id} off"),
            Switch::FreezeSku { sku } => write!(f, "freeze {sku}"),
            Switch::Pipeline => f.write_str("pause pipeline"),
            Switch::Checkout => f.write_str("close checkout"),
        }
    }
}

/// An engaged kill switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngagedSwitch {
    pub switch: Switch,
    pub by: String,
    pub reason: String,
    pub since_ms: i64,
}

/// `GET /v1/admin/kill-switches`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KillSwitches {
    pub engaged: Vec<EngagedSwitch>,
}

impl KillSwitches {
    /// Whether `switch` is engaged.
    pub fn is_engaged(&self, switch: &Switch) -> bool {
        self.engaged.iter().any(|e| &e.switch == switch)
    }
}

/// `POST /v1/admin/kill-switches`: engage or release one switch. With `dry_run`
/// nothing changes and the answer only says what would be affected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillSwitchRequest {
    pub switch: Switch,
    /// `true` engages, `false` releases.
    pub engaged: bool,
    pub reason: String,
    #[serde(default)]
    pub dry_run: bool,
}

/// What a kill switch touches.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BlastRadius {
    pub skus: u64,
    pub promotions: u64,
    pub edges: u64,
}

/// The answer to a [`KillSwitchRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillSwitchOutcome {
    pub switch: Switch,
    /// The switch's state after the call (for a dry run: its state now, unchanged).
    pub engaged: bool,
    pub dry_run: bool,
    pub blast_radius: BlastRadius,
    /// The snapshot version that carries the change (none for a dry run or a switch
    /// that does not change prices).
    pub snapshot_version: Option<u64>,
    /// Every switch after the call.
    pub state: KillSwitches,
}

/// A promotion as the control plane knows it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PromotionRow {
    pub id: String,
    pub name: String,
    /// `percent_off`, `buy_x_get_y`, …
    pub kind: String,
    /// Within its time window now.
    pub active: bool,
    /// Turned off by a kill switch.
    pub killed: bool,
    /// SKUs it applies to (0: basket-wide).
    pub skus: u64,
    pub starts_at_ms: Option<i64>,
    pub ends_at_ms: Option<i64>,
}

/// The answer to creating, replacing or ending a promotion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionChange {
    pub id: String,
    /// The promotion's revision after the change (0 once ended).
    pub revision: u64,
    /// The promotions version the edges now have.
    pub promotions_version: u64,
    /// The snapshot version that carries it.
    pub snapshot_version: u64,
}

/// A cart to try a promotion on.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DryRunCart {
    /// `(sku, quantity)`.
    pub lines: Vec<(String, u32)>,
    pub store: Option<String>,
    pub channel: Option<String>,
    pub segment: Option<String>,
    pub customer_id: Option<String>,
    pub coupons: Vec<String>,
}

/// `POST /v1/admin/promotions/dry-run`: what would change if `promotion` were
/// published (replacing the promotion with the same id, if any).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DryRunRequest {
    pub promotion: edgeprice_pricing::promo::Promotion,
    /// Carts to price before and after (for cart-level promotions and coupons).
    #[serde(default)]
    pub carts: Vec<DryRunCart>,
    /// Evaluation time, Unix ms (default: now).
    #[serde(default)]
    pub at_ms: Option<i64>,
    /// Most SKUs listed in the answer (default 100); counts cover all.
    #[serde(default)]
    pub limit: Option<usize>,
}

/// A SKU whose shelf price the promotion changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DryRunSku {
    pub sku: String,
    pub before_minor: i64,
    pub after_minor: i64,
    pub floor_minor: i64,
    /// The promotion wanted more than the floor allows; the price stops at the floor.
    pub at_floor: bool,
}

/// A cart priced before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DryRunCartResult {
    pub before_total_minor: i64,
    pub after_total_minor: i64,
    /// SKUs of lines the floor clamped after the change.
    pub clamped: Vec<String>,
    /// Why the cart could not be priced, if it could not.
    pub error: Option<String>,
}

/// The answer to a [`DryRunRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DryRunReport {
    pub promotion_id: String,
    /// SKUs whose shelf price changes.
    pub skus_changed: u64,
    /// Of those, SKUs held at their floor.
    pub floor_hits: u64,
    pub skus: Vec<DryRunSku>,
    pub carts: Vec<DryRunCartResult>,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditRow {
    pub seq: i64,
    pub at_ms: i64,
    /// `decision`, `override`, `kill_switch`, `promotion`, `approval`, …
    pub kind: String,
    /// Token name, or `pipeline`.
    pub actor: String,
    pub sku: Option<String>,
    pub summary: String,
    pub record: serde_json::Value,
}

/// A high-risk SKU's price suggestion waiting for approval.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Approval {
    pub sku: String,
    pub category: String,
    pub currency: String,
    pub current_minor: i64,
    pub suggested_minor: i64,
    pub reason_code: String,
    pub suggested_at_ms: i64,
}

/// `POST /v1/admin/approvals/{sku}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    pub approve: bool,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_travel_as_tagged_objects() {
        let request = KillSwitchRequest {
            switch: Switch::FreezeSku {
                sku: "SKU-1".into(),
            },
            engaged: true,
            reason: "supplier recall".into(),
            dry_run: false,
        };
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(
            json["switch"],
            serde_json::json!({"kind": "freeze_sku", "sku": "SKU-1"})
        );
        let back: KillSwitchRequest = serde_json::from_value(json).unwrap();
        assert_eq!(back, request);
        let all: Switch = serde_json::from_str(r#"{"kind":"all_promotions"}"#).unwrap();
        assert_eq!(all, Switch::AllPromotions);
    }

    #[test]
    fn roles_are_ordered_and_parse() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        assert_eq!("operator".parse::<Role>(), Ok(Role::Operator));
        assert!("root"
            .parse::<Role>()
            .unwrap_err()
            .contains("viewer, operator, admin"));
        assert_eq!(serde_json::to_string(&Role::Admin).unwrap(), "\"admin\"");
    }

    #[test]
    fn metrics_tolerate_missing_fields() {
        let metrics: Metrics = serde_json::from_str(r#"{"at_ms": 5}"#).unwrap();
        assert_eq!(metrics.at_ms, 5);
        assert!(metrics.edges.is_empty());
    }
}
