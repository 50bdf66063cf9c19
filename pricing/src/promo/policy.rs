//! The stacking policy: how promotions that share a stacking group combine. It is
//! versioned and travels with the promotion set, so a quote names the policy it was
//! priced under.

use serde::{Deserialize, Serialize};

use crate::key;

use super::model::PromotionError;

/// How the members of one stacking group combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupMode {
    /// Each line gets at most one member: members are tried in order of the total
    /// discount each would give on its own (largest first, ties by precedence), each on
    /// the lines no earlier member took.
    #[default]
    BestForCustomer,
    /// Each line gets at most one member: members are tried in precedence order
    /// (priority, then id), each on the lines no earlier member took.
    FirstByPriority,
    /// Every member applies, in precedence order, each on the price the previous left
    /// (percentages compound).
    All,
}

impl GroupMode {
    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupMode::BestForCustomer => "best_for_customer",
            GroupMode::FirstByPriority => "first_by_priority",
            GroupMode::All => "all",
        }
    }
}

/// The mode of one named group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupPolicy {
    pub name: String,
    pub mode: GroupMode,
}

/// The stacking policy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StackingPolicy {
    /// Raised by the control plane on every change; quotes carry it.
    pub version: u32,
    /// Mode of groups that [`StackingPolicy::groups`] does not name.
    #[serde(default)]
    pub default_mode: GroupMode,
    /// Named groups and their modes.
    #[serde(default)]
    pub groups: Vec<GroupPolicy>,
}

impl StackingPolicy {
    /// The mode of a group.
    pub fn mode_of(&self, group: &str) -> GroupMode {
        self.groups
            .iter()
            .find(|g| g.name == group)
            .map_or(self.default_mode, |g| g.mode)
    }

    /// Checks group names and that no group is listed twice.
    pub fn validate(&self) -> Result<(), PromotionError> {
        for group in &self.groups {
            key::validate("group", &group.name)
                .map_err(|e| PromotionError::Policy(e.to_string()))?;
        }
        let mut names: Vec<&str> = self.groups.iter().map(|g| g.name.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(PromotionError::Policy(format!(
                "group {} is listed twice",
                pair[0]
            )));
        }
        Ok(())
    }
}
