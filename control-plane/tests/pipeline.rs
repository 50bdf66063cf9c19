//! The control plane end to end in embedded mode: raw feed events through the ingest
//! writer and the pipeline into a real edge snapshot store, read back the way the edge
//! serves them.

use std::path::Path;
use std::sync::Arc;

use edgeprice_control::audit;
use edgeprice_control::feeds::FeedKind;
use edgeprice_control::pipeline::{DecisionRecord, DecisionStatus, Pipeline, PipelineConfig};
use edgeprice_control::publish::InProcessEdge;
use edgeprice_control::store::{EventLog, Ingestor, Outcome, Submission};
use edgeprice_pricing::{PriceEntry, Sku};
use edgeprice_server::SnapshotStore;

/// A minute boundary, so demand windows are easy to reason about.
const NOW: i64 = 1_790_000_040_000;
const MINUTE: i64 = 60_000;

struct Plant {
    _dir: tempfile::TempDir,
    edge: Arc<SnapshotStore>,
    ingestor: Option<Ingestor>,
    pipeline: Option<Pipeline<InProcessEdge>>,
    next_id: u64,
}

fn config() -> PipelineConfig {
    let mut config = PipelineConfig::default();
    let mut alcohol = config.default_rules.clone();
    alcohol.high_risk = true;
    config.categories.insert("alcohol".into(), alcohol);
    config
}

impl Plant {
    fn new() -> Plant {
        let dir = tempfile::tempdir().unwrap();
        let edge = Arc::new(SnapshotStore::open(None).unwrap());
        let mut plant = Plant {
            ingestor: None,
            pipeline: None,
            edge,
            _dir: dir,
            next_id: 0,
        };
        plant.start();
        plant
    }

    fn dir(&self) -> &Path {
        self._dir.path()
    }

    fn start(&mut self) {
        self.ingestor = Some(Ingestor::start(self.dir(), |_| {}).unwrap());
        self.pipeline =
            Some(Pipeline::open(self.dir(), config(), InProcessEdge(self.edge.clone())).unwrap());
    }

    fn stop(&mut self) {
        self.pipeline.take();
        self.ingestor.take();
    }

    fn send(&mut self, feed: FeedKind, json: String) -> Outcome {
        let mut outcomes = self
            .ingestor
            .as_ref()
            .unwrap()
            .ingest_blocking(vec![Submission {
                feed,
                body: json.into_bytes(),
            }])
            .unwrap();
        outcomes.remove(0)
    }

    fn id(&mut self) -> String {
        self.next_id += 1;
        format!("ev-{}", self.next_id)
    }

    fn catalog(&mut self, sku: &str, category: &str, list: i64) {
        let id = self.id();
        let outcome = self.send(FeedKind::Catalog, format!(r#"{{"event_id":"{id}","sku":"{sku}","category":"{category}","currency":"EUR","list_price_minor":{list},"tax_rate_bp":2000,"logistics_minor":100,"occurred_at_ms":{NOW}}}"#));
        assert!(matches!(outcome, Outcome::Accepted { .. }), "{outcome:?}");
    }

    fn cost(&mut self, sku: &str, cost: i64) -> Outcome {
        let id = self.id();
        self.send(FeedKind::Cost, format!(r#"{{"event_id":"{id}","sku":"{sku}","vendor":"acme","currency":"EUR","cost_minor":{cost},"effective_at_ms":{NOW},"occurred_at_ms":{NOW}}}"#))
    }

    fn competitor(&mut self, sku: &str, price: i64) {
        let id = self.id();
        self.send(FeedKind::Competitor, format!(r#"{{"event_id":"{id}","sku":"{sku}","competitor":"rival","currency":"EUR","price_minor":{price},"occurred_at_ms":{NOW}}}"#));
    }

    fn on_hand(&mut self, sku: &str, quantity: i64) {
        let id = self.id();
        self.send(FeedKind::Inventory, format!(r#"{{"event_id":"{id}","sku":"{sku}","kind":"on_hand","quantity":{quantity},"occurred_at_ms":{NOW}}}"#));
    }

    fn sale(&mut self, sku: &str, quantity: i64, at_ms: i64) {
        let id = self.id();
        self.send(FeedKind::Sales, format!(r#"{{"event_id":"{id}","sku":"{sku}","kind":"pos_sale","quantity":{quantity},"occurred_at_ms":{at_ms}}}"#));
    }

    fn promotion(&mut self, sku: &str, promotion_id: &str, percent_bp: i64) {
        let id = self.id();
        let ends = NOW + 3_600_000;
        let outcome = self.send(FeedKind::Promotions, format!(r#"{{"event_id":"{id}","promotion_id":"{promotion_id}","sku":"{sku}","action":"upsert","label":"Flash sale","discount":{{"kind":"percent_bp","value":{percent_bp}}},"starts_at_ms":{},"ends_at_ms":{ends},"occurred_at_ms":{NOW}}}"#, NOW - MINUTE));
        assert!(matches!(outcome, Outcome::Accepted { .. }), "{outcome:?}");
    }

    fn run(&mut self) {
        self.pipeline.as_mut().unwrap().process_all(NOW).unwrap();
    }

    /// The entry the edge serves for a SKU now.
    fn edge_entry(&self, sku: &str) -> PriceEntry {
        let guard = self.edge.load();
        let snapshot = guard.as_ref().expect("the edge has a snapshot");
        let found = snapshot.entries().find(|e| e.key.sku.as_str() == sku);
        found.unwrap_or_else(|| panic!("{sku} is not at the edge"))
    }

    fn last_decision(&self, sku: &str) -> DecisionRecord {
        self.pipeline
            .as_ref()
            .unwrap()
            .decisions_for(sku, 1)
            .unwrap()
            .remove(0)
    }
}

#[test]
fn a_cost_update_raises_the_price_to_the_margin_floor() {
    let mut plant = Plant::new();
    plant.catalog("A", "snacks", 1_500);
    plant.run();
    let entry = plant.edge_entry("A");
    assert_eq!(
        (entry.price_minor, entry.floor_minor),
        (1_500, 1_500),
        "no cost yet: no discount below list"
    );
    assert_eq!(plant.last_decision("A").reason_code, "cost_unknown");

    // 6.00 + 1.00 logistics at 30 % margin with 20 % VAT: floor 12.00.
    plant.cost("A", 600);
    plant.run();
    let entry = plant.edge_entry("A");
    assert_eq!((entry.price_minor, entry.floor_minor), (1_500, 1_200));

    // 8.00 + 1.00: the net price must reach 12.86, so the shelf price 15.43.
    plant.cost("A", 800);
    plant.run();
    let entry = plant.edge_entry("A");
    assert_eq!((entry.price_minor, entry.floor_minor), (1_543, 1_543));
    let decision = plant.last_decision("A");
    assert_eq!(decision.reason_code, "min_margin");
    let margin = decision.margin_after_bp.unwrap();
    assert!((3_000..3_010).contains(&margin), "{margin}");
    assert_eq!(decision.inputs.cost_minor, Some(800));
}

#[test]
fn a_cost_with_a_later_effective_time_applies_when_it_is_due() {
    let mut plant = Plant::new();
    plant.catalog("F", "snacks", 1_500);
    plant.cost("F", 600);
    let later = NOW + 2 * 3_600_000;
    let id = plant.id();
    plant.send(FeedKind::Cost, format!(r#"{{"event_id":"{id}","sku":"F","vendor":"acme","currency":"EUR","cost_minor":800,"effective_at_ms":{later},"occurred_at_ms":{NOW}}}"#));
    plant.run();
    assert_eq!(plant.edge_entry("F").floor_minor, 1_200, "not due yet");
    plant
        .pipeline
        .as_mut()
        .unwrap()
        .reevaluate(later - 1)
        .unwrap();
    assert_eq!(plant.edge_entry("F").floor_minor, 1_200);
    plant.pipeline.as_mut().unwrap().reevaluate(later).unwrap();
    let entry = plant.edge_entry("F");
    assert_eq!((entry.price_minor, entry.floor_minor), (1_543, 1_543));
    assert_eq!(plant.last_decision("F").inputs.cost_minor, Some(800));
}

#[test]
fn a_competitor_drop_is_matched_within_the_rules() {
    let mut plant = Plant::new();
    plant.catalog("B", "snacks", 2_000);
    plant.cost("B", 500);
    plant.competitor("B", 1_850);
    plant.run();
    assert_eq!(plant.edge_entry("B").price_minor, 1_850);
    assert_eq!(plant.last_decision("B").reason_code, "competitor_match");
    // Never more than 15 % below list to match.
    plant.competitor("B", 1_000);
    plant.run();
    assert_eq!(plant.edge_entry("B").price_minor, 1_700);
}

#[test]
fn a_promotion_that_breaks_the_margin_is_cut_or_blocked() {
    let mut plant = Plant::new();
    plant.catalog("A", "snacks", 1_500);
    plant.cost("A", 600);
    plant.promotion("A", "deep", 3_000);
    plant.run();
    let tag = plant
        .edge_entry("A")
        .promotion
        .expect("promotion published");
    assert_eq!(tag.price_minor, 1_200, "30 % off is cut to 20 %: the floor");
    let decision = plant.last_decision("A");
    assert_eq!(decision.reason_code, "promotion_cut");
    let promotion = decision.promotion.unwrap();
    assert_eq!(promotion.action, "cut");
    assert_eq!(
        promotion.applied,
        Some(edgeprice_pricing::Discount::PercentBp(2_000))
    );

    // At a cost of 8.00 the price is the floor: no discount keeps the margin.
    plant.cost("A", 800);
    plant.run();
    assert_eq!(plant.edge_entry("A").promotion, None);
    let decision = plant.last_decision("A");
    assert_eq!(decision.reason_code, "min_margin");
    assert!(decision
        .rules_fired
        .contains(&"promotion_blocked".to_owned()));
    assert_eq!(decision.alerts.last().unwrap().kind, "promotion_blocked");
}

#[test]
fn a_demand_spike_raises_the_price_and_reduces_the_promotion() {
    let mut plant = Plant::new();
    plant.catalog("C", "snacks", 2_000);
    plant.cost("C", 500);
    plant.promotion("C", "flash", 2_000);
    plant.sale("C", 1, NOW - 40 * MINUTE);
    plant.run();
    let entry = plant.edge_entry("C");
    assert_eq!(
        (entry.price_minor, entry.promotion.unwrap().price_minor),
        (2_000, 1_600)
    );

    for minute in 0..4 {
        plant.sale("C", 10, NOW - minute * MINUTE);
    }
    plant.run();
    let entry = plant.edge_entry("C");
    let tag = entry.promotion.unwrap();
    assert_eq!(entry.price_minor, 2_100, "surge: list + 5 %");
    assert_eq!(
        tag.price_minor,
        2_100 - 210,
        "spike: half of the 20 % discount"
    );
    assert!(tag.label.contains("max 2 per customer"), "{}", tag.label);
    let decision = plant.last_decision("C");
    assert_eq!(decision.reason_code, "demand_spike_reduce_discount");
    assert!(decision.features.spike);

    // Without any new event, time moves the price back: the spike leaves the 5-minute
    // window, and later the promotion's window closes.
    let pipeline = plant.pipeline.as_mut().unwrap();
    pipeline.reevaluate(NOW + 20 * MINUTE).unwrap();
    let entry = plant.edge_entry("C");
    let tag = entry.promotion.unwrap();
    assert_eq!((entry.price_minor, tag.price_minor), (2_000, 1_600));
    assert_eq!(tag.label, "Flash sale");
    plant
        .pipeline
        .as_mut()
        .unwrap()
        .reevaluate(NOW + 61 * MINUTE)
        .unwrap();
    assert_eq!(plant.edge_entry("C").promotion, None);
    assert_eq!(plant.last_decision("C").trigger_event_ids, ["tick"]);
}

#[test]
fn an_inventory_drop_ends_the_promotion_early() {
    let mut plant = Plant::new();
    plant.catalog("D", "snacks", 2_000);
    plant.cost("D", 500);
    plant.promotion("D", "flash", 1_000);
    plant.on_hand("D", 500);
    for minute in [50, 40, 30, 20, 10] {
        plant.sale("D", 2, NOW - minute * MINUTE);
    }
    plant.run();
    assert_eq!(plant.edge_entry("D").promotion.unwrap().price_minor, 1_800);

    plant.on_hand("D", 2);
    plant.run();
    assert_eq!(plant.edge_entry("D").promotion, None);
    let decision = plant.last_decision("D");
    assert_eq!(decision.reason_code, "promotion_end_early");
    assert!(decision.forecast.depletion_eta_ms.unwrap() < NOW + 30 * MINUTE);
}

#[test]
fn a_cost_anomaly_is_held_and_caps_discounts() {
    let mut plant = Plant::new();
    plant.catalog("E", "snacks", 2_000);
    plant.cost("E", 500);
    plant.promotion("E", "p10", 1_000);
    plant.run();
    assert_eq!(plant.edge_entry("E").promotion.unwrap().price_minor, 1_800);

    plant.cost("E", 50);
    plant.promotion("E", "p10", 4_000);
    plant.run();
    let entry = plant.edge_entry("E");
    assert_eq!(entry.floor_minor, 1_029, "the held cost is not applied");
    assert_eq!(
        entry.promotion.unwrap().price_minor,
        1_800,
        "discount held at its cap"
    );
    let decision = plant.last_decision("E");
    assert_eq!(decision.alerts[0].kind, "cost_anomaly");
    assert!(decision
        .rules_fired
        .contains(&"cost_anomaly_cap".to_owned()));
    let state = plant
        .pipeline
        .as_ref()
        .unwrap()
        .sku_state(&Sku::new("E").unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(state.held_cost.unwrap().cost_minor, 50);

    // A person accepts the cost: the floor follows it and the cap is lifted.
    let record = plant
        .pipeline
        .as_mut()
        .unwrap()
        .resolve_held_cost(&Sku::new("E").unwrap(), true, NOW)
        .unwrap();
    assert_eq!(record.inputs.cost_minor, Some(50));
    let entry = plant.edge_entry("E");
    assert_eq!(entry.floor_minor, 258);
    assert_eq!(
        entry.promotion.unwrap().price_minor,
        1_200,
        "the full 40 % applies again"
    );
}

#[test]
fn high_risk_suggestions_wait_for_approval() {
    let mut plant = Plant::new();
    plant.catalog("W", "alcohol", 3_000);
    plant.cost("W", 500);
    plant.competitor("W", 2_700);
    plant.run();
    assert_eq!(plant.edge_entry("W").price_minor, 3_000);
    let decision = plant.last_decision("W");
    assert_eq!(decision.status, DecisionStatus::PendingApproval);
    let state = plant
        .pipeline
        .as_ref()
        .unwrap()
        .sku_state(&Sku::new("W").unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(state.pending_suggestion.unwrap().price_minor, 2_700);

    let pipeline = plant.pipeline.as_mut().unwrap();
    let sku = Sku::new("W").unwrap();
    let approved = pipeline.approve_suggestion(&sku, NOW).unwrap();
    assert_eq!(approved.reason_code, "approved_price");
    assert_eq!(approved.trigger_event_ids, ["admin:approve_suggestion"]);
    assert_eq!(plant.edge_entry("W").price_minor, 2_700);
    let again = plant
        .pipeline
        .as_mut()
        .unwrap()
        .approve_suggestion(&sku, NOW);
    assert_eq!(again.unwrap_err().code(), "nothing_pending");
}

#[test]
fn bad_and_duplicate_events_are_refused_and_nothing_accepted_is_lost_across_a_restart() {
    let mut plant = Plant::new();
    plant.catalog("A", "snacks", 1_500);
    plant.run();
    assert!(matches!(plant.cost("Z", 600), Outcome::Rejected(e) if e.code() == "unknown_sku"));
    assert!(matches!(plant.cost("A", -1), Outcome::Rejected(e) if e.code() == "negative_amount"));
    let outcome = plant.send(FeedKind::Cost, "{\"event_id\":".into());
    assert!(matches!(outcome, Outcome::Rejected(e) if e.code() == "malformed_json"));
    let cost = format!(
        r#"{{"event_id":"dup","sku":"A","vendor":"acme","currency":"EUR","cost_minor":600,"effective_at_ms":{NOW},"occurred_at_ms":{NOW}}}"#
    );
    assert!(matches!(
        plant.send(FeedKind::Cost, cost.clone()),
        Outcome::Accepted { .. }
    ));

    // Accepted but not processed yet when the process stops.
    plant.stop();
    plant.start();
    assert_eq!(plant.send(FeedKind::Cost, cost), Outcome::Duplicate);
    plant.run();
    assert_eq!(
        plant.edge_entry("A").floor_minor,
        1_200,
        "the cost accepted before the restart counts"
    );
    let conn = rusqlite::Connection::open(plant.dir().join("control.db")).unwrap();
    assert_eq!(EventLog::counts(&conn).unwrap(), (2, 0));
    assert_eq!(EventLog::dead_letters(&conn, 10).unwrap().len(), 3);

    // A restart resyncs the edge and does not decide again.
    let version = plant.pipeline.as_ref().unwrap().version();
    plant.stop();
    plant.start();
    plant.run();
    assert!(plant.pipeline.as_ref().unwrap().version() > version);
    assert_eq!(plant.edge_entry("A").floor_minor, 1_200);
    assert_eq!(
        plant
            .pipeline
            .as_ref()
            .unwrap()
            .decisions_for("A", 10)
            .unwrap()
            .len(),
        2
    );

    // The audit chain verifies; an edited record is found.
    assert!(audit::verify(&conn).unwrap().is_intact());
    conn.execute(
        "UPDATE audit SET record = replace(record, '1200', '1100') WHERE seq = 2",
        [],
    )
    .unwrap();
    let report = audit::verify(&conn).unwrap();
    assert_eq!(report.first_bad.unwrap().seq, 2);
}

/// What a SKU looks like to the pipeline and at the edge.
fn sku_view(plant: &Plant, sku: &str) -> (edgeprice_control::store::SkuState, PriceEntry) {
    let state = plant
        .pipeline
        .as_ref()
        .unwrap()
        .sku_state(&Sku::new(sku).unwrap())
        .unwrap()
        .unwrap();
    (state, plant.edge_entry(sku))
}

/// Events at three times, each processed as its own batch at that time.
fn feed_three_batches(plant: &mut Plant, run_at: &mut dyn FnMut(&mut Plant, i64)) {
    plant.catalog("A", "snacks", 1_500);
    plant.catalog("B", "snacks", 2_000);
    plant.cost("A", 600);
    plant.cost("B", 900);
    plant.on_hand("A", 400);
    plant.promotion("A", "spring", 2_000);
    run_at(plant, NOW);
    plant.competitor("B", 1_850);
    for _ in 0..4 {
        plant.sale("A", 3, NOW + MINUTE);
    }
    run_at(plant, NOW + MINUTE);
    plant.cost("A", 640);
    for _ in 0..12 {
        plant.sale("A", 5, NOW + 2 * MINUTE);
    }
    run_at(plant, NOW + 2 * MINUTE);
}

#[test]
fn a_crash_before_states_are_written_back_replays_to_the_same_prices() {
    let mut run_at = |plant: &mut Plant, now_ms: i64| {
        plant
            .pipeline
            .as_mut()
            .unwrap()
            .process_all(now_ms)
            .unwrap();
    };
    // The twin never crashes.
    let mut twin = Plant::new();
    feed_three_batches(&mut twin, &mut run_at);

    let mut plant = Plant::new();
    feed_three_batches(&mut plant, &mut run_at);
    let before = (sku_view(&plant, "A"), sku_view(&plant, "B"));
    let conn = rusqlite::Connection::open(plant.dir().join("control.db")).unwrap();
    let stored = edgeprice_control::store::SkuState::load(&conn, &Sku::new("A").unwrap())
        .unwrap()
        .unwrap();
    assert_ne!(
        stored, before.0 .0,
        "the crash must find A's row behind its working copy, or nothing is replayed"
    );
    let records = audit::verify(&conn).unwrap().records;

    // The batches committed; their states were not written back. Crash (no shutdown
    // step runs: dropping the pipeline writes nothing) and restart.
    plant.stop();
    plant.start();
    assert_eq!(
        (sku_view(&plant, "A").0, sku_view(&plant, "B").0),
        (before.0 .0.clone(), before.1 .0.clone()),
        "replaying the journal rebuilds the states"
    );
    plant.run();
    assert_eq!(
        (sku_view(&plant, "A").1, sku_view(&plant, "B").1),
        (before.0 .1.clone(), before.1 .1.clone()),
        "the resynced edge serves the same prices"
    );
    assert_eq!(
        audit::verify(&conn).unwrap().records,
        records,
        "replay appends no decision record"
    );

    // Both carry on alike: later events land on the replayed states.
    for p in [&mut plant, &mut twin] {
        p.cost("A", 700);
        p.competitor("B", 1_800);
        run_at(p, NOW + 3 * MINUTE);
    }
    for sku in ["A", "B"] {
        let (mut state, mut entry) = sku_view(&plant, sku);
        let (mut twin_state, twin_entry) = sku_view(&twin, sku);
        // Revisions are snapshot versions, and the restart's resync took one.
        for published in [&mut state.published, &mut twin_state.published] {
            published.as_mut().unwrap().revision = 0;
        }
        entry.revision = twin_entry.revision;
        assert_eq!((state, entry), (twin_state, twin_entry), "{sku}");
    }
    assert!(audit::verify(&conn).unwrap().is_intact());
    assert_eq!(
        plant
            .pipeline
            .as_ref()
            .unwrap()
            .decisions_for("A", 100)
            .unwrap()
            .len(),
        twin.pipeline
            .as_ref()
            .unwrap()
            .decisions_for("A", 100)
            .unwrap()
            .len()
    );

    // A checkpoint makes the rows current: a restart then has nothing to replay.
    plant.pipeline.as_mut().unwrap().checkpoint().unwrap();
    let (state, _) = sku_view(&plant, "A");
    assert_eq!(
        edgeprice_control::store::SkuState::load(&conn, &Sku::new("A").unwrap())
            .unwrap()
            .unwrap(),
        state
    );
    let journal: i64 = conn
        .query_row("SELECT COUNT(*) FROM batches", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, 0, "no journaled batch is needed any more");
}
