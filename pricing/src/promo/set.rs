//! A compiled, indexed set of promotions: validated once when a snapshot is built, then
//! read-only on the quote path. Promotions are kept in precedence order (priority
//! descending, then id ascending) and indexed by SKU, by category, and by level, so
//! evaluating a cart touches only the promotions that can apply to its lines.

use std::collections::HashMap;

use crate::key::Sku;

use super::model::{normalize_coupon_code, Level, Promotion, PromotionError, Rule, Target};
use super::policy::{GroupMode, StackingPolicy};

/// One promotion, compiled: its precedence rank, resolved stacking group and the ranks
/// of the promotions it never combines with.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    pub(crate) definition: Promotion,
    pub(crate) group: Option<u32>,
    /// Ranks of promotions this one never combines with (both directions), sorted.
    pub(crate) never_with: Vec<u32>,
    /// Target SKUs (or bundle component SKUs), sorted.
    pub(crate) skus: Vec<Sku>,
    /// Target categories, sorted.
    pub(crate) categories: Vec<String>,
}

impl Compiled {
    /// Whether a line with this SKU and category is in the promotion's target.
    pub(crate) fn targets(&self, sku: &Sku, category: Option<&str>) -> bool {
        match (&self.definition.target, &self.definition.rule) {
            (_, Rule::Bundle { .. }) | (Target::Skus { .. }, _) => {
                self.skus.binary_search(sku).is_ok()
            }
            (Target::Categories { .. }, _) => category.is_some_and(|category| {
                self.categories
                    .binary_search_by(|c| c.as_str().cmp(category))
                    .is_ok()
            }),
            (Target::All, _) => true,
        }
    }
}

/// A validated, indexed promotion set with its stacking policy.
#[derive(Debug, Clone, Default)]
pub struct PromotionSet {
    version: u64,
    policy: StackingPolicy,
    pub(crate) promotions: Vec<Compiled>,
    /// Stacking groups by index: name and mode.
    pub(crate) groups: Vec<(String, GroupMode)>,
    by_sku: HashMap<Sku, Vec<u32>>,
    by_category: HashMap<String, Vec<u32>>,
    /// Item-level promotions that target every line.
    item_all: Vec<u32>,
    /// Cart-level promotions, in precedence order.
    pub(crate) cart: Vec<u32>,
    /// Free-shipping promotions, in precedence order.
    pub(crate) shipping: Vec<u32>,
    /// Normalised coupon code → rank.
    codes: HashMap<String, u32>,
}

impl PromotionSet {
    /// Validates every promotion and the policy, and builds the indexes. `version` is
    /// the promotions version the control plane published; quotes carry it.
    pub fn compile(
        version: u64,
        promotions: Vec<Promotion>,
        policy: StackingPolicy,
    ) -> Result<PromotionSet, PromotionError> {
        policy.validate()?;
        for promotion in &promotions {
            promotion.validate()?;
        }
        let mut promotions = promotions;
        promotions.sort_by(|a, b| {
            b.stacking
                .priority
                .cmp(&a.stacking.priority)
                .then_with(|| a.id.cmp(&b.id))
        });
        let mut rank_of: HashMap<&str, u32> = HashMap::with_capacity(promotions.len());
        for (rank, promotion) in promotions.iter().enumerate() {
            // Duplicates need not be adjacent: they may differ in priority.
            if rank_of.insert(&promotion.id, rank as u32).is_some() {
                return Err(PromotionError::DuplicateId(promotion.id.clone()));
            }
        }

        let mut never_with: Vec<Vec<u32>> = vec![Vec::new(); promotions.len()];
        for (rank, promotion) in promotions.iter().enumerate() {
            // Ids of promotions that are not in the set are allowed: they may come later.
            for other in &promotion.stacking.never_with {
                if let Some(&other_rank) = rank_of.get(other.as_str()) {
                    never_with[rank].push(other_rank);
                    never_with[other_rank as usize].push(rank as u32);
                }
            }
        }

        let mut set = PromotionSet {
            version,
            ..PromotionSet::default()
        };
        let mut group_index: HashMap<String, u32> = HashMap::new();
        for (rank, (definition, mut excluded)) in promotions.into_iter().zip(never_with).enumerate()
        {
            let rank = rank as u32;
            excluded.sort_unstable();
            excluded.dedup();
            let group = definition.stacking.group.as_ref().map(|name| {
                *group_index.entry(name.clone()).or_insert_with(|| {
                    set.groups.push((name.clone(), policy.mode_of(name)));
                    (set.groups.len() - 1) as u32
                })
            });
            let mut skus: Vec<Sku> = match (&definition.rule, &definition.target) {
                (Rule::Bundle { components, .. }, _) => {
                    components.iter().map(|c| c.sku.clone()).collect()
                }
                (_, Target::Skus { skus }) => skus.clone(),
                _ => Vec::new(),
            };
            skus.sort();
            skus.dedup();
            let mut categories = match &definition.target {
                Target::Categories { categories } => categories.clone(),
                _ => Vec::new(),
            };
            categories.sort();
            categories.dedup();

            if let Some(coupon) = &definition.coupon {
                for code in &coupon.codes {
                    // Validation guarantees every code normalises.
                    let Some(code) = normalize_coupon_code(code) else {
                        continue;
                    };
                    if let Some(first) = set.codes.insert(code.clone(), rank) {
                        if first != rank {
                            return Err(PromotionError::DuplicateCouponCode {
                                code,
                                first: set.promotions[first as usize].definition.id.clone(),
                                second: definition.id.clone(),
                            });
                        }
                    }
                }
            }

            match definition.rule.level() {
                Level::Cart => set.cart.push(rank),
                Level::Shipping => set.shipping.push(rank),
                Level::Item => {
                    if skus.is_empty() && categories.is_empty() {
                        set.item_all.push(rank);
                    }
                    for sku in &skus {
                        set.by_sku.entry(sku.clone()).or_default().push(rank);
                    }
                    for category in &categories {
                        set.by_category
                            .entry(category.clone())
                            .or_default()
                            .push(rank);
                    }
                }
            }
            set.promotions.push(Compiled {
                definition,
                group,
                never_with: excluded,
                skus,
                categories,
            });
        }
        set.policy = policy;
        Ok(set)
    }

    /// The promotions version this set was compiled from.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The stacking policy.
    pub fn policy(&self) -> &StackingPolicy {
        &self.policy
    }

    /// Number of promotions.
    pub fn len(&self) -> usize {
        self.promotions.len()
    }

    /// Whether the set holds no promotion.
    pub fn is_empty(&self) -> bool {
        self.promotions.is_empty()
    }

    /// The definitions, in precedence order.
    pub fn promotions(&self) -> impl Iterator<Item = &Promotion> {
        self.promotions.iter().map(|c| &c.definition)
    }

    /// The promotion a coupon code unlocks (case-insensitive).
    pub fn promotion_for_code(&self, code: &str) -> Option<&Promotion> {
        self.rank_for_code(code)
            .map(|rank| &self.promotions[rank as usize].definition)
    }

    pub(crate) fn rank_for_code(&self, code: &str) -> Option<u32> {
        let code = normalize_coupon_code(code)?;
        self.codes.get(&code).copied()
    }

    /// Appends the ranks of item-level promotions indexed under this SKU or category
    /// (unsorted, possibly with duplicates); [`PromotionSet::item_all`] holds the rest.
    pub(crate) fn item_candidates(&self, sku: &Sku, category: Option<&str>, out: &mut Vec<u32>) {
        if let Some(ranks) = self.by_sku.get(sku) {
            out.extend_from_slice(ranks);
        }
        if let Some(ranks) = category.and_then(|c| self.by_category.get(c)) {
            out.extend_from_slice(ranks);
        }
    }

    /// Item-level promotions that target every line.
    pub(crate) fn item_all(&self) -> &[u32] {
        &self.item_all
    }
}
