//! Operator actions on the pipeline: price overrides and kill switches (see
//! [`crate::admin::controls`] for what they do to published entries). Each action is
//! validated, written with its audit record in one transaction, and the entries it
//! changes go to the edges as one delta before the call returns.

use std::collections::BTreeSet;
use std::sync::Arc;

use edgeprice_pricing::promo::Promotion;
use edgeprice_pricing::{Dimension, PriceEntry, PriceKey, Sku};
use edgeprice_schemas::admin::{
    BlastRadius, EngagedSwitch, KillSwitchOutcome, KillSwitchRequest, Override, OverrideRequest,
    PromotionChange, Role, Switch,
};
use edgeprice_schemas::codec::PromotionsDoc;
use serde_json::json;
use tracing::info;

use super::{DecisionRecord, Pipeline, PipelineError, VERSION_KEY};
use crate::admin::controls::{override_key, Controls, MAX_OVERRIDE_MS};
use crate::admin::promotions::{DefinitionAction, DefinitionEvent, PromotionBook};
use crate::audit;
use crate::feeds::{FeedError, FeedKind};
use crate::publish::Publisher;
use crate::store::{self, SkuState};
use crate::store::{EventLog, Outcome};

/// The `sku` column of audit records of operator actions (no SKU has this name).
pub const ADMIN_AUDIT_KEY: &str = "@admin";

/// Longest reason accepted, bytes.
const MAX_REASON_LEN: usize = 500;

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The token's name.
    pub name: String,
    pub role: Role,
}

/// Why an operator action was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

impl AdminError {
    fn invalid(code: &'static str, message: impl Into<String>) -> AdminError {
        AdminError::Invalid {
            code,
            message: message.into(),
        }
    }

    /// HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            AdminError::Invalid { .. } => 422,
            AdminError::Forbidden(_) => 403,
            AdminError::NotFound(_) => 404,
            AdminError::Pipeline(PipelineError::UnknownSku(_)) => 404,
            AdminError::Pipeline(PipelineError::NothingPending(_)) => 409,
            AdminError::Pipeline(_) => 503,
        }
    }

    /// API error code.
    pub fn code(&self) -> &'static str {
        match self {
            AdminError::Invalid { code, .. } => code,
            AdminError::Forbidden(_) => "forbidden",
            AdminError::NotFound(_) => "not_found",
            AdminError::Pipeline(err) => err.code(),
        }
    }
}

fn check_reason(reason: &str) -> Result<(), AdminError> {
    if reason.trim().is_empty() {
        return Err(AdminError::invalid(
            "missing_reason",
            "say why: a non-empty reason is required and audited",
        ));
    }
    if reason.len() > MAX_REASON_LEN {
        return Err(AdminError::invalid(
            "reason_too_long",
            format!("reasons are limited to {MAX_REASON_LEN} bytes"),
        ));
    }
    Ok(())
}

/// The operator actions, object-safe so the runtime can hand them to the pipeline
/// thread without knowing its publisher type.
pub trait Operations {
    /// Pins a price (see [`OverrideRequest`]).
    fn set_override(
        &mut self,
        request: OverrideRequest,
        actor: &Actor,
        now_ms: i64,
    ) -> Result<Override, AdminError>;
    /// Ends override `id` (`by` is a token name, or `expiry`).
    fn end_override(
        &mut self,
        id: u64,
        by: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<Override, AdminError>;
    /// Engages or releases a kill switch (see [`KillSwitchRequest`]).
    fn kill_switch(
        &mut self,
        request: KillSwitchRequest,
        actor: &Actor,
        now_ms: i64,
    ) -> Result<KillSwitchOutcome, AdminError>;
    /// Creates or replaces a promotion and publishes the new document.
    fn put_promotion(
        &mut self,
        promotion: Promotion,
        actor: &Actor,
        reason: &str,
        now_ms: i64,
    ) -> Result<PromotionChange, AdminError>;
    /// Ends (removes) a promotion and publishes the new document.
    fn end_promotion(
        &mut self,
        id: &str,
        actor: &Actor,
        reason: &str,
        now_ms: i64,
    ) -> Result<PromotionChange, AdminError>;
    /// Applies a promotion definition event from the promotions feed (see
    /// [`DefinitionEvent`]): accepted once durable, acknowledged as a duplicate when its
    /// id was applied already, refused (and dead-lettered) with the reason otherwise.
    fn apply_definition(&mut self, source: &str, body: &[u8], now_ms: i64) -> Outcome;
    /// Approves or rejects a high-risk SKU's pending price suggestion.
    fn decide_suggestion(
        &mut self,
        sku: &Sku,
        approve: bool,
        actor: &Actor,
        reason: &str,
        now_ms: i64,
    ) -> Result<DecisionRecord, AdminError>;
}

impl<P: Publisher> Operations for Pipeline<P> {
    fn set_override(
        &mut self,
        request: OverrideRequest,
        actor: &Actor,
        now_ms: i64,
    ) -> Result<Override, AdminError> {
        check_reason(&request.reason)?;
        let sku = Sku::new(&request.sku)
            .map_err(|e| AdminError::invalid("invalid_sku", format!("sku: {e}")))?;
        for (name, value) in [("store", &request.store), ("channel", &request.channel)] {
            if let Some(value) = value {
                Dimension::new(value)
                    .map_err(|e| AdminError::invalid("invalid_key", format!("{name}: {e}")))?;
            }
        }
        if request.price_minor <= 0 {
            return Err(AdminError::invalid(
                "invalid_price",
                "price_minor must be positive",
            ));
        }
        if request.expires_at_ms <= now_ms || request.expires_at_ms > now_ms + MAX_OVERRIDE_MS {
            return Err(AdminError::invalid(
                "invalid_expiry",
                "expires_at_ms must be in the future and at most 30 days ahead",
            ));
        }
        let state = self.state_of(&sku)?;
        if request.currency != state.currency.as_str() {
            return Err(AdminError::invalid(
                "currency_mismatch",
                format!(
                    "{} is priced in {}, not {}",
                    sku, state.currency, request.currency
                ),
            ));
        }
        let floor = state.published.as_ref().map(|e| e.floor_minor);
        let below_floor = floor.is_some_and(|floor| request.price_minor < floor);
        if below_floor {
            if !request.force {
                return Err(AdminError::invalid(
                    "below_floor",
                    format!(
                        "{} is below the floor {} of {sku}; an admin may force it with force: true",
                        request.price_minor,
                        floor.unwrap_or_default()
                    ),
                ));
            }
            if actor.role < Role::Admin {
                return Err(AdminError::Forbidden(format!(
                    "only the admin role may force a price below the floor; {} is {}",
                    actor.name, actor.role
                )));
            }
        }
        let mut controls = self.controls.clone();
        let scope = |o: &Override| {
            o.sku == request.sku && o.store == request.store && o.channel == request.channel
        };
        let replaced: Vec<Override> = controls
            .overrides
            .iter()
            .filter(|o| scope(o))
            .cloned()
            .collect();
        controls.overrides.retain(|o| !scope(o));
        controls.last_override_id += 1;
        let version = self.version + 1;
        let created = Override {
            id: controls.last_override_id,
            sku: request.sku.clone(),
            store: request.store.clone(),
            channel: request.channel.clone(),
            price_minor: request.price_minor,
            currency: request.currency.clone(),
            floor_minor: floor,
            below_floor,
            created_at_ms: now_ms,
            expires_at_ms: request.expires_at_ms,
            reason: request.reason.clone(),
            by: actor.name.clone(),
            ended_by: None,
            snapshot_version: version,
        };
        controls.overrides.push(created.clone());
        let record = json!({
            "kind": if below_floor { "override_below_floor" } else { "override" },
            "actor": actor.name,
            "role": actor.role,
            "reason": request.reason,
            "sku": request.sku,
            "override": created,
            "replaced": replaced.iter().map(|o| o.id).collect::<Vec<_>>(),
            "snapshot_version": version,
        });
        self.commit_controls(controls, &record, [sku], Vec::new(), now_ms)?;
        info!(sku = %request.sku, price = request.price_minor, below_floor, by = %actor.name, "price override set");
        Ok(created)
    }

    fn end_override(
        &mut self,
        id: u64,
        by: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<Override, AdminError> {
        check_reason(reason)?;
        let mut controls = self.controls.clone();
        let position = controls
            .overrides
            .iter()
            .position(|o| o.id == id)
            .ok_or_else(|| AdminError::NotFound(format!("no override {id} is in force")))?;
        let mut ended = controls.overrides.remove(position);
        ended.ended_by = Some(by.to_owned());
        ended.snapshot_version = self.version + 1;
        let sku =
            Sku::new(&ended.sku).map_err(|e| AdminError::invalid("invalid_sku", e.to_string()))?;
        let removals = if ended.store.is_some() || ended.channel.is_some() {
            vec![override_key(&ended)]
        } else {
            Vec::new()
        };
        let record = json!({
            "kind": "override_end",
            "actor": by,
            "reason": reason,
            "sku": ended.sku,
            "override": ended,
            "snapshot_version": ended.snapshot_version,
        });
        self.commit_controls(controls, &record, [sku], removals, now_ms)?;
        info!(id, by, "price override ended");
        Ok(ended)
    }

    fn kill_switch(
        &mut self,
        request: KillSwitchRequest,
        actor: &Actor,
        now_ms: i64,
    ) -> Result<KillSwitchOutcome, AdminError> {
        check_reason(&request.reason)?;
        let blast_radius = self.blast_radius(&request.switch);
        let engaged_now = self.controls.is_engaged(&request.switch);
        if let Switch::Promotion { id } = &request.switch {
            if id.is_empty() {
                return Err(AdminError::invalid("invalid_switch", "name the promotion"));
            }
        }
        let frozen_sku = match &request.switch {
            Switch::FreezeSku { sku } => Some(
                Sku::new(sku)
                    .map_err(|e| AdminError::invalid("invalid_sku", format!("sku: {e}")))?,
            ),
            _ => None,
        };
        if request.dry_run || engaged_now == request.engaged {
            return Ok(KillSwitchOutcome {
                switch: request.switch,
                engaged: engaged_now,
                dry_run: request.dry_run,
                blast_radius,
                snapshot_version: None,
                state: self.controls.kill_switches(),
            });
        }
        let mut controls = self.controls.clone();
        if request.engaged {
            controls.switches.push(EngagedSwitch {
                switch: request.switch.clone(),
                by: actor.name.clone(),
                reason: request.reason.clone(),
                since_ms: now_ms,
            });
        } else {
            controls.switches.retain(|e| e.switch != request.switch);
        }
        // The SKUs whose published entries change.
        let touched: Vec<Sku> = match &request.switch {
            Switch::AllPromotions | Switch::Promotion { .. } => {
                let id = match &request.switch {
                    Switch::Promotion { id } => Some(id.as_str()),
                    _ => None,
                };
                self.board
                    .skus_with_promotion(id)
                    .into_iter()
                    .filter_map(|s| Sku::new(&s).ok())
                    .collect()
            }
            Switch::FreezeSku { .. } => {
                let sku = frozen_sku.clone().expect("parsed above");
                let state = self.state_of(&sku)?;
                if request.engaged {
                    let entry = state.published.clone().ok_or_else(|| {
                        AdminError::invalid(
                            "nothing_published",
                            format!("{sku} has no price to freeze yet"),
                        )
                    })?;
                    controls.frozen.insert(sku.to_string(), entry);
                } else {
                    controls.frozen.remove(sku.as_str());
                }
                vec![sku]
            }
            Switch::Pipeline | Switch::Checkout => Vec::new(),
        };
        let promotions_changed = matches!(
            request.switch,
            Switch::AllPromotions | Switch::Promotion { .. }
        );
        let version = self.version + 1;
        let record = json!({
            "kind": "kill_switch",
            "actor": actor.name,
            "role": actor.role,
            "reason": request.reason,
            "switch": request.switch,
            "engaged": request.engaged,
            "blast_radius": blast_radius,
            "sku": frozen_sku.as_ref().map(Sku::as_str),
            "snapshot_version": version,
        });
        let published = self.commit_controls_with(
            controls,
            &record,
            touched,
            Vec::new(),
            promotions_changed,
            now_ms,
        )?;
        info!(switch = %request.switch, engaged = request.engaged, by = %actor.name, "kill switch");
        Ok(KillSwitchOutcome {
            switch: request.switch,
            engaged: request.engaged,
            dry_run: false,
            blast_radius,
            snapshot_version: published.then_some(self.version),
            state: self.controls.kill_switches(),
        })
    }

    fn put_promotion(
        &mut self,
        promotion: Promotion,
        actor: &Actor,
        reason: &str,
        now_ms: i64,
    ) -> Result<PromotionChange, AdminError> {
        self.put_promotion_from(promotion, actor, reason, None, now_ms)
    }

    fn end_promotion(
        &mut self,
        id: &str,
        actor: &Actor,
        reason: &str,
        now_ms: i64,
    ) -> Result<PromotionChange, AdminError> {
        self.end_promotion_from(id, actor, reason, None, now_ms)
    }

    fn apply_definition(&mut self, source: &str, body: &[u8], now_ms: i64) -> Outcome {
        let refuse = |this: &mut Self, event_id: Option<&str>, message: String| {
            let error = FeedError::InvalidEvent(message);
            let text = String::from_utf8_lossy(body);
            if let Err(err) = EventLog::dead_letter(
                &this.conn,
                FeedKind::Promotions.as_str(),
                event_id,
                error.code(),
                &error.to_string(),
                &text,
                now_ms,
            ) {
                tracing::warn!(error = %err, "cannot keep a refused definition event");
            }
            Outcome::Rejected(error)
        };
        let event = match DefinitionEvent::parse(body) {
            Ok(event) => event,
            Err(message) => return refuse(self, None, message),
        };
        if self.promotions.has_applied(&event.event_id) {
            return Outcome::Duplicate;
        }
        let actor = Actor {
            name: format!("feed:{source}"),
            role: Role::Operator,
        };
        let reason = event
            .reason
            .clone()
            .unwrap_or_else(|| format!("promotions feed event {}", event.event_id));
        let result = match (event.action, event.definition) {
            (DefinitionAction::Define, Some(definition)) => {
                self.put_promotion_from(definition, &actor, &reason, Some(&event.event_id), now_ms)
            }
            _ => self.end_promotion_from(
                &event.promotion_id,
                &actor,
                &reason,
                Some(&event.event_id),
                now_ms,
            ),
        };
        match result {
            Ok(change) => Outcome::Accepted {
                seq: change.promotions_version as i64,
            },
            Err(AdminError::Pipeline(err)) => {
                tracing::warn!(error = %err, "definition event not applied");
                Outcome::Rejected(FeedError::InvalidEvent(format!("not stored, retry: {err}")))
            }
            Err(err) => refuse(self, Some(&event.event_id), err.to_string()),
        }
    }

    fn decide_suggestion(
        &mut self,
        sku: &Sku,
        approve: bool,
        actor: &Actor,
        reason: &str,
        now_ms: i64,
    ) -> Result<DecisionRecord, AdminError> {
        check_reason(reason)?;
        let record = if approve {
            self.approve_suggestion(sku, now_ms)?
        } else {
            self.reject_suggestion(sku, now_ms)?
        };
        let note = json!({
            "kind": "approval",
            "actor": actor.name,
            "role": actor.role,
            "reason": reason,
            "sku": sku.as_str(),
            "approve": approve,
            "snapshot_version": record.snapshot_version,
        });
        audit::append(&self.conn, ADMIN_AUDIT_KEY, now_ms, &note.to_string())
            .map_err(PipelineError::from)?;
        Ok(record)
    }
}

impl<P: Publisher> Pipeline<P> {
    /// The controls in force.
    pub fn controls(&self) -> &Controls {
        &self.controls
    }

    /// Ends every override whose time is up; returns how many.
    pub fn expire_overrides(&mut self, now_ms: i64) -> Result<usize, AdminError> {
        let due: Vec<u64> = self
            .controls
            .overrides
            .iter()
            .filter(|o| o.expires_at_ms <= now_ms)
            .map(|o| o.id)
            .collect();
        for id in &due {
            self.end_override(*id, "expiry", "the override expired", now_ms)?;
        }
        Ok(due.len())
    }

    /// What `switch` touches.
    pub fn blast_radius(&self, switch: &Switch) -> BlastRadius {
        let edges = self.edges;
        // SKUs carrying a promotion tag, and SKUs a promotion of the book targets.
        let reach = |id: Option<&str>| -> (u64, u64) {
            let rows = self.board.rows();
            let mut skus: std::collections::HashSet<String> =
                self.board.skus_with_promotion(id).into_iter().collect();
            let mut ids: std::collections::HashSet<String> = self
                .board
                .promotion_tags()
                .into_keys()
                .filter(|t| id.is_none_or(|id| id == t))
                .collect();
            for promotion in self
                .promotions
                .promotions
                .keys()
                .filter(|p| id.is_none_or(|id| id == p.as_str()))
            {
                ids.insert(promotion.clone());
                skus.extend(
                    self.promotions
                        .targeted(promotion, &rows)
                        .into_iter()
                        .map(str::to_owned),
                );
            }
            (
                skus.len() as u64,
                ids.len().max(usize::from(id.is_some())) as u64,
            )
        };
        let (skus, promotions) = match switch {
            Switch::AllPromotions => reach(None),
            Switch::Promotion { id } => reach(Some(id)),
            Switch::FreezeSku { .. } => (1, 0),
            Switch::Pipeline | Switch::Checkout => (self.board.sku_count() as u64, 0),
        };
        BlastRadius {
            skus,
            promotions,
            edges,
        }
    }

    /// The promotions document the edges get now.
    pub(super) fn promotions_doc(&self, _now_ms: i64) -> Arc<PromotionsDoc> {
        self.promotions
            .document(&self.controls, self.board.categories())
    }

    fn put_promotion_from(
        &mut self,
        mut promotion: Promotion,
        actor: &Actor,
        reason: &str,
        event_id: Option<&str>,
        now_ms: i64,
    ) -> Result<PromotionChange, AdminError> {
        check_reason(reason)?;
        // The book's next version: revisions of an id never repeat, even after an end.
        promotion.revision = self.promotions.version + 1;
        self.promotions
            .check(&promotion)
            .map_err(|e| AdminError::invalid("invalid_promotion", e))?;
        let book = self.promotions.with(promotion.clone());
        self.change_book(
            book,
            "promotion",
            &promotion,
            actor,
            reason,
            event_id,
            now_ms,
        )?;
        info!(id = %promotion.id, revision = promotion.revision, by = %actor.name, "promotion published");
        Ok(PromotionChange {
            id: promotion.id,
            revision: promotion.revision,
            promotions_version: self.promotions.version,
            snapshot_version: self.version,
        })
    }

    fn end_promotion_from(
        &mut self,
        id: &str,
        actor: &Actor,
        reason: &str,
        event_id: Option<&str>,
        now_ms: i64,
    ) -> Result<PromotionChange, AdminError> {
        check_reason(reason)?;
        let mut book = self.promotions.clone();
        let ended = book
            .promotions
            .remove(id)
            .ok_or_else(|| AdminError::NotFound(format!("no promotion {id}")))?;
        self.change_book(
            book,
            "promotion_end",
            &ended,
            actor,
            reason,
            event_id,
            now_ms,
        )?;
        info!(id, by = %actor.name, "promotion ended");
        Ok(PromotionChange {
            id: id.to_owned(),
            revision: 0,
            promotions_version: self.promotions.version,
            snapshot_version: self.version,
        })
    }

    /// Raises the book's version, remembers the feed event (if any), and commits the
    /// book with the audit record of the change (`kind` of `promotion`).
    #[allow(clippy::too_many_arguments)]
    fn change_book(
        &mut self,
        mut book: PromotionBook,
        kind: &str,
        promotion: &Promotion,
        actor: &Actor,
        reason: &str,
        event_id: Option<&str>,
        now_ms: i64,
    ) -> Result<(), AdminError> {
        book.version += 1;
        if let Some(event_id) = event_id {
            book.remember(event_id);
        }
        let record = json!({
            "kind": kind,
            "event_id": event_id,
            "actor": actor.name,
            "role": actor.role,
            "reason": reason,
            "promotion": promotion,
            "promotions_version": book.version,
            "snapshot_version": self.version + 1,
        });
        self.commit_book(book, &record, now_ms)
    }

    fn commit_book(
        &mut self,
        book: PromotionBook,
        record: &serde_json::Value,
        now_ms: i64,
    ) -> Result<(), AdminError> {
        let version = self.version + 1;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(PipelineError::from)?;
        audit::append(&tx, ADMIN_AUDIT_KEY, now_ms, &record.to_string())
            .map_err(PipelineError::from)?;
        book.save(&tx).map_err(PipelineError::from)?;
        store::meta_set(&tx, VERSION_KEY, &version.to_string()).map_err(PipelineError::from)?;
        tx.commit().map_err(PipelineError::from)?;
        self.promotions = book;
        self.board.set_promotions(&self.promotions);
        self.version = version;
        let doc = self.promotions_doc(now_ms);
        self.publish_with(version, now_ms, Vec::new(), Vec::new(), Some(doc))?;
        self.board.set_version(self.version);
        Ok(())
    }

    /// A SKU's state (cached or stored).
    fn state_of(&mut self, sku: &Sku) -> Result<SkuState, AdminError> {
        if let Some(state) = self.cache.get(sku) {
            return Ok(state.clone());
        }
        SkuState::load(&self.conn, sku)
            .map_err(PipelineError::from)?
            .ok_or_else(|| AdminError::Pipeline(PipelineError::UnknownSku(sku.to_string())))
    }

    fn commit_controls(
        &mut self,
        controls: Controls,
        record: &serde_json::Value,
        skus: impl IntoIterator<Item = Sku>,
        removals: Vec<PriceKey>,
        now_ms: i64,
    ) -> Result<bool, AdminError> {
        self.commit_controls_with(controls, record, skus, removals, false, now_ms)
    }

    /// Stores `controls` with its audit record, then publishes the entries of `skus`
    /// as the new controls make them (and the promotions document when it changed).
    /// Returns whether a delta was published.
    fn commit_controls_with(
        &mut self,
        controls: Controls,
        record: &serde_json::Value,
        skus: impl IntoIterator<Item = Sku>,
        removals: Vec<PriceKey>,
        promotions_changed: bool,
        now_ms: i64,
    ) -> Result<bool, AdminError> {
        let skus: BTreeSet<Sku> = skus.into_iter().collect();
        let mut upserts: Vec<PriceEntry> = Vec::new();
        for sku in &skus {
            let state = self.state_of(sku)?;
            if let Some(decided) = &state.published {
                upserts.extend(controls.overlay(decided));
            }
        }
        let publishes = !upserts.is_empty() || !removals.is_empty() || promotions_changed;
        let version = self.version + 1;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(PipelineError::from)?;
        let text = record.to_string();
        audit::append(&tx, ADMIN_AUDIT_KEY, now_ms, &text).map_err(PipelineError::from)?;
        controls.save(&tx).map_err(PipelineError::from)?;
        if publishes {
            store::meta_set(&tx, VERSION_KEY, &version.to_string()).map_err(PipelineError::from)?;
        }
        tx.commit().map_err(PipelineError::from)?;
        self.controls = controls;
        self.board.set_controls(&self.controls);
        if publishes {
            self.version = version;
            for entry in &mut upserts {
                entry.revision = entry.revision.max(version);
            }
            let promotions = promotions_changed.then(|| self.promotions_doc(now_ms));
            self.publish_with(version, now_ms, upserts, removals, promotions)?;
            self.board.set_version(self.version);
        }
        Ok(publishes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_required_and_bounded() {
        assert_eq!(check_reason(" ").unwrap_err().code(), "missing_reason");
        assert_eq!(
            check_reason(&"x".repeat(501)).unwrap_err().code(),
            "reason_too_long"
        );
        assert!(check_reason("recall").is_ok());
    }

    #[test]
    fn errors_map_to_statuses() {
        assert_eq!(AdminError::Forbidden("no".into()).status(), 403);
        assert_eq!(
            AdminError::Pipeline(PipelineError::UnknownSku("X".into())).status(),
            404
        );
        assert_eq!(AdminError::invalid("below_floor", "x").status(), 422);
    }

    #[test]
    fn scoped_override_keys_use_the_given_dimensions() {
        let key = override_key(&Override {
            sku: "SKU-1".into(),
            channel: Some("web".into()),
            ..Override::default()
        });
        assert_eq!(key.to_string(), "SKU-1@*/web/*");
    }
}
