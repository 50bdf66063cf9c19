//! What operators impose on the automated prices: price overrides and kill switches.
//!
//! The pipeline keeps deciding every SKU as usual (its decision is the SKU's
//! `published` entry in its state); [`Controls::overlay`] turns a SKU's decided entry
//! into the entries the edges get:
//!
//! 1. a frozen SKU keeps the entry it had when it was frozen;
//! 2. a killed promotion (or every promotion, with the global switch) is removed from
//!    the entry's promotion tag;
//! 3. a chain-wide override replaces the price (and drops the promotion: a pinned price
//!    is what customers pay); a store- or channel-scoped override adds an entry for
//!    that scope, which the edge's fallback prefers for that store or channel.
//!
//! A price below the entry's floor is refused unless the override was forced by an
//! admin; a forced override lowers the published floor to its price, so the edge can
//! quote it, and says so in the audit log.
//!
//! The controls are stored as one JSON document in the control plane's `meta` table,
//! written in the transaction that audits the change.

use std::collections::{BTreeMap, BTreeSet};

use edgeprice_pricing::{Dimension, PriceEntry, PriceKey};
use edgeprice_schemas::admin::{EngagedSwitch, KillSwitches, Override, Switch};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::store::{self, StoreError};

const CONTROLS_KEY: &str = "admin_controls";

/// Longest an override may last: 30 days.
pub const MAX_OVERRIDE_MS: i64 = 30 * 24 * 60 * 60 * 1_000;

/// Overrides and kill switches in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Controls {
    /// Last override id given out.
    pub last_override_id: u64,
    /// Overrides in force.
    pub overrides: Vec<Override>,
    /// Engaged kill switches.
    pub switches: Vec<EngagedSwitch>,
    /// Frozen SKU → the decided entry it keeps.
    pub frozen: BTreeMap<String, PriceEntry>,
}

impl Controls {
    /// Reads the controls (none when nothing was ever set).
    pub fn load(conn: &Connection) -> Result<Controls, StoreError> {
        match store::meta_get(conn, CONTROLS_KEY)? {
            None => Ok(Controls::default()),
            Some(text) => serde_json::from_str(&text)
                .map_err(|e| StoreError::Corrupt(format!("admin controls: {e}"))),
        }
    }

    /// Writes the controls inside the caller's transaction.
    pub fn save(&self, conn: &Connection) -> Result<(), StoreError> {
        let text = serde_json::to_string(self)
            .map_err(|e| StoreError::Corrupt(format!("admin controls: {e}")))?;
        store::meta_set(conn, CONTROLS_KEY, &text)
    }

    /// The switches as the API shows them.
    pub fn kill_switches(&self) -> KillSwitches {
        KillSwitches {
            engaged: self.switches.clone(),
        }
    }

    pub fn is_engaged(&self, switch: &Switch) -> bool {
        self.switches.iter().any(|e| &e.switch == switch)
    }

    /// The automated pipeline is paused.
    pub fn pipeline_paused(&self) -> bool {
        self.is_engaged(&Switch::Pipeline)
    }

    /// Checkout is closed.
    pub fn checkout_closed(&self) -> bool {
        self.is_engaged(&Switch::Checkout)
    }

    /// Whether promotion `id` is off (by its own switch or the global one).
    pub fn promotion_killed(&self, id: &str) -> bool {
        self.switches.iter().any(|e| match &e.switch {
            Switch::AllPromotions => true,
            Switch::Promotion { id: killed } => killed == id,
            _ => false,
        })
    }

    /// Whether any promotion switch is engaged.
    pub fn any_promotion_killed(&self) -> bool {
        self.switches
            .iter()
            .any(|e| matches!(e.switch, Switch::AllPromotions | Switch::Promotion { .. }))
    }

    pub fn is_frozen(&self, sku: &str) -> bool {
        self.frozen.contains_key(sku)
    }

    /// Overrides in force on `sku`.
    pub fn overrides_of<'a>(&'a self, sku: &'a str) -> impl Iterator<Item = &'a Override> + 'a {
        self.overrides.iter().filter(move |o| o.sku == sku)
    }

    /// SKUs with an override, frozen or carrying a killed promotion are the ones whose
    /// published entries differ from their decisions.
    pub fn controlled_skus(&self) -> BTreeSet<String> {
        self.overrides
            .iter()
            .map(|o| o.sku.clone())
            .chain(self.frozen.keys().cloned())
            .collect()
    }

    /// The entries the edges get for a SKU whose decided entry is `decided` (see the
    /// module docs). The first is the chain-wide entry.
    pub fn overlay(&self, decided: &PriceEntry) -> Vec<PriceEntry> {
        let sku = decided.key.sku.as_str();
        let mut base = self.frozen.get(sku).unwrap_or(decided).clone();
        if self.any_promotion_killed() {
            if let Some(tag) = &base.promotion {
                if self.promotion_killed(&tag.id) {
                    base.promotion = None;
                }
            }
        }
        let mut entries = Vec::with_capacity(1);
        let mut chain = base.clone();
        let mut scoped = Vec::new();
        for o in self.overrides_of(sku) {
            if o.store.is_none() && o.channel.is_none() {
                pin(&mut chain, o);
            } else {
                let mut entry = base.clone();
                entry.key = override_key(o);
                pin(&mut entry, o);
                scoped.push(entry);
            }
        }
        entries.push(chain);
        entries.extend(scoped);
        entries
    }
}

fn pin(entry: &mut PriceEntry, o: &Override) {
    entry.price_minor = o.price_minor;
    entry.promotion = None;
    if o.below_floor {
        entry.floor_minor = entry.floor_minor.min(o.price_minor);
    }
    entry.revision = entry.revision.max(o.snapshot_version);
}

/// The key a scoped override publishes under.
pub fn override_key(o: &Override) -> PriceKey {
    let dimension = |value: &Option<String>| {
        value
            .as_deref()
            .and_then(|v| Dimension::new(v).ok())
            .unwrap_or_else(Dimension::any)
    };
    PriceKey {
        sku: edgeprice_pricing::Sku::new(&o.sku).expect("validated when set"),
        store: dimension(&o.store),
        channel: dimension(&o.channel),
        segment: Dimension::any(),
    }
}

#[cfg(test)]
mod tests {
    use edgeprice_pricing::{Currency, PromotionTag, Sku};

    use super::*;

    fn decided() -> PriceEntry {
        PriceEntry {
            key: PriceKey::chain_wide(Sku::new("SKU-1").unwrap()),
            currency: Currency::parse("EUR").unwrap(),
            list_price_minor: 1_000,
            price_minor: 900,
            floor_minor: 700,
            promotion: Some(PromotionTag {
                id: "flash".into(),
                label: "Flash -20%".into(),
                price_minor: 720,
                starts_at_ms: 0,
                ends_at_ms: i64::MAX,
            }),
            valid_from_ms: None,
            valid_until_ms: None,
            revision: 3,
        }
    }

    fn switch(switch: Switch) -> EngagedSwitch {
        EngagedSwitch {
            switch,
            by: "ops".into(),
            reason: "test".into(),
            since_ms: 0,
        }
    }

    fn override_of(store: Option<&str>, price: i64, forced: bool) -> Override {
        Override {
            id: 1,
            sku: "SKU-1".into(),
            store: store.map(str::to_owned),
            price_minor: price,
            currency: "EUR".into(),
            below_floor: forced,
            expires_at_ms: i64::MAX,
            snapshot_version: 9,
            ..Override::default()
        }
    }

    #[test]
    fn no_controls_publish_the_decision() {
        assert_eq!(Controls::default().overlay(&decided()), vec![decided()]);
    }

    #[test]
    fn killing_a_promotion_removes_only_its_tag() {
        let mut controls = Controls::default();
        controls
            .switches
            .push(switch(Switch::Promotion { id: "other".into() }));
        assert!(controls.overlay(&decided())[0].promotion.is_some());
        controls
            .switches
            .push(switch(Switch::Promotion { id: "flash".into() }));
        assert!(controls.overlay(&decided())[0].promotion.is_none());
        let mut all = Controls::default();
        all.switches.push(switch(Switch::AllPromotions));
        let entry = &all.overlay(&decided())[0];
        assert!(entry.promotion.is_none());
        assert_eq!(entry.price_minor, 900);
    }

    #[test]
    fn a_frozen_sku_keeps_its_entry() {
        let mut controls = Controls::default();
        controls.frozen.insert("SKU-1".into(), decided());
        let mut moved = decided();
        moved.price_minor = 800;
        assert_eq!(controls.overlay(&moved)[0].price_minor, 900);
    }

    #[test]
    fn overrides_pin_the_price_and_scope_it() {
        let mut controls = Controls::default();
        controls.overrides.push(override_of(None, 850, false));
        controls
            .overrides
            .push(override_of(Some("store-7"), 800, false));
        let entries = controls.overlay(&decided());
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].key, decided().key);
        assert_eq!(entries[0].price_minor, 850);
        assert!(entries[0].promotion.is_none());
        assert_eq!(entries[0].floor_minor, 700);
        assert_eq!(entries[1].key.store.as_str(), "store-7");
        assert_eq!(entries[1].key.channel.as_str(), "*");
        assert_eq!(entries[1].price_minor, 800);
        assert_eq!(entries[1].revision, 9);
        for entry in &entries {
            entry.validate().expect("valid entries");
        }
    }

    #[test]
    fn a_forced_override_lowers_the_floor_to_its_price() {
        let mut controls = Controls::default();
        controls.overrides.push(override_of(None, 500, true));
        let entry = &controls.overlay(&decided())[0];
        assert_eq!((entry.price_minor, entry.floor_minor), (500, 500));
        entry.validate().expect("valid entry");
    }

    #[test]
    fn controls_round_trip_through_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open(dir.path()).unwrap();
        assert_eq!(Controls::load(&conn).unwrap(), Controls::default());
        let mut controls = Controls::default();
        controls.overrides.push(override_of(None, 850, false));
        controls.switches.push(switch(Switch::Pipeline));
        controls.frozen.insert("SKU-1".into(), decided());
        controls.save(&conn).unwrap();
        let back = Controls::load(&conn).unwrap();
        assert_eq!(back, controls);
        assert!(back.pipeline_paused() && !back.checkout_closed());
    }
}
