//! Fixed data for state tests and screen snapshots: every time is relative to
//! [`NOW_MS`] and every series is computed, so frames are the same on every run.

use std::collections::BTreeMap;

use edgeprice_schemas::admin::{
    AlertRow, Amount, Approval, AuditRow, BlastRadius, CheckoutMetrics, EdgeMetrics, EngagedSwitch,
    KillSwitchOutcome, KillSwitches, MarginBucket, Metrics, Override, PipelineMetrics,
    PromotionRow, Role, SkuDetail, SkuPage, SkuRow, Switch, WhoAmI,
};

use crate::app::{App, ConnectionEvent, Message, Poll};
use crate::client::SkuQuery;

/// 2026-11-23 17:00:00 UTC.
pub const NOW_MS: i64 = 1_795_453_200_000;
pub const URL: &str = "http://127.0.0.1:8081";

pub fn whoami(role: Role) -> WhoAmI {
    WhoAmI {
        name: "ops-anna".to_owned(),
        role,
    }
}

/// Reading number `i` of a steady, busy system.
pub fn metrics(i: i64) -> Metrics {
    let wave = |period: i64, amplitude: f64| {
        ((i as f64) * std::f64::consts::TAU / period as f64).sin() * amplitude
    };
    let mut stage_p99_us = BTreeMap::new();
    for (stage, us) in [
        ("ingest", 310),
        ("decide", 820),
        ("commit", 2_400),
        ("publish", 1_900),
        ("batch", 5_100),
    ] {
        stage_p99_us.insert(stage.to_owned(), us);
    }
    let mut feed_lag_ms = BTreeMap::new();
    for (feed, ms) in [
        ("competitor", 1_800 + (wave(7, 900.0) as i64)),
        ("cost", 420),
        ("inventory", 260),
        ("sales", 95),
    ] {
        feed_lag_ms.insert(feed.to_owned(), ms);
    }
    let mut sagas = BTreeMap::new();
    for (state, n) in [
        ("completed", 1_204),
        ("compensated", 17),
        ("paid", 3),
        ("reserved", 9),
    ] {
        sagas.insert(state.to_owned(), n);
    }
    Metrics {
        at_ms: NOW_MS - (60 - i) * 1_000,
        edges: vec![
            EdgeMetrics {
                name: "in-process".to_owned(),
                reachable: true,
                requests_total: 4_812_330 + i as u64 * 18_000,
                requests_per_s: 18_250.0 + wave(12, 4_000.0),
                p50_us: 42,
                p99_us: (780.0 + wave(9, 300.0)) as u64,
                snapshot_version: 5_120 + i as u64,
                snapshot_age_ms: 180,
            },
            EdgeMetrics {
                name: "http://10.0.0.6:8080".to_owned(),
                reachable: true,
                requests_total: 2_100_000 + i as u64 * 9_000,
                requests_per_s: 9_100.0 + wave(10, 2_000.0),
                p50_us: 51,
                p99_us: (910.0 + wave(11, 250.0)) as u64,
                snapshot_version: 5_120 + i as u64,
                snapshot_age_ms: 240,
            },
        ],
        pipeline: PipelineMetrics {
            paused: false,
            events_total: 912_004 + i as u64 * 400,
            events_per_s: 412.0 + wave(8, 90.0),
            decisions_total: 301_220 + i as u64 * 150,
            decisions_per_s: 150.0 + wave(6, 40.0),
            backlog: (12.0 + wave(5, 10.0)).max(0.0) as u64,
            dead_letters_total: 3,
            stage_max_us: stage_p99_us
                .iter()
                .map(|(s, us)| (s.clone(), us * 3))
                .collect(),
            stage_p99_us,
            feed_lag_ms,
            version: 5_120 + i as u64,
        },
        margin_histogram: (0..12)
            .map(|b| MarginBucket {
                lo_bp: -1_000 + b * 600,
                hi_bp: -400 + b * 600,
                skus: [
                    4, 11, 40, 160, 520, 1_300, 2_100, 2_400, 1_700, 980, 510, 275,
                ][b as usize],
            })
            .collect(),
        revenue_per_min: vec![Amount {
            minor: 184_520 + (wave(15, 30_000.0) as i64),
            currency: "EUR".to_owned(),
        }],
        checkout: CheckoutMetrics {
            open: true,
            reservations_active: 9,
            oversell: 0,
            orders_total: 1_233,
            sagas,
        },
        kill_switches_active: 1,
        alerts_last_hour: 4,
    }
}

pub fn alerts() -> Vec<AlertRow> {
    vec![
        AlertRow {
            at_ms: NOW_MS - 12_000,
            kind: "promotion_blocked".to_owned(),
            sku: Some("SKU-0000042".to_owned()),
            message: "flash-20 would go below the floor; clamped at 9.80 EUR".to_owned(),
        },
        AlertRow {
            at_ms: NOW_MS - 95_000,
            kind: "cost_anomaly".to_owned(),
            sku: Some("SKU-0000311".to_owned()),
            message: "vendor cost +38% in one event: held for review".to_owned(),
        },
        AlertRow {
            at_ms: NOW_MS - 400_000,
            kind: "inventory_exhausted".to_owned(),
            sku: Some("SKU-0001207".to_owned()),
            message: "store-2 has 0 on hand".to_owned(),
        },
        AlertRow {
            at_ms: NOW_MS - 1_900_000,
            kind: "override_expired".to_owned(),
            sku: Some("SKU-0000090".to_owned()),
            message: "override #2 ran out".to_owned(),
        },
    ]
}

pub fn switches() -> KillSwitches {
    KillSwitches {
        engaged: vec![EngagedSwitch {
            switch: Switch::FreezeSku {
                sku: "SKU-0000007".to_owned(),
            },
            by: "ops-ben".to_owned(),
            reason: "supplier dispute, hold price".to_owned(),
            since_ms: NOW_MS - 3_600_000,
        }],
    }
}

pub fn promotions() -> Vec<PromotionRow> {
    vec![
        PromotionRow {
            id: "flash-20".to_owned(),
            name: "Flash sale 20%".to_owned(),
            kind: "percent_off".to_owned(),
            active: true,
            killed: false,
            skus: 1_000,
            starts_at_ms: Some(NOW_MS - 600_000),
            ends_at_ms: Some(NOW_MS + 3_000_000),
        },
        PromotionRow {
            id: "b2g1-snacks".to_owned(),
            name: "Snacks 3 for 2".to_owned(),
            kind: "buy_x_get_y".to_owned(),
            active: true,
            killed: false,
            skus: 240,
            starts_at_ms: None,
            ends_at_ms: None,
        },
        PromotionRow {
            id: "basket-50".to_owned(),
            name: "5 EUR off 50".to_owned(),
            kind: "basket_threshold".to_owned(),
            active: false,
            killed: false,
            skus: 0,
            starts_at_ms: Some(NOW_MS + 86_400_000),
            ends_at_ms: None,
        },
    ]
}

pub fn overrides() -> Vec<Override> {
    vec![
        Override {
            id: 7,
            sku: "SKU-0000042".to_owned(),
            store: Some("store-1".to_owned()),
            channel: None,
            price_minor: 1_099,
            currency: "EUR".to_owned(),
            floor_minor: Some(980),
            below_floor: false,
            created_at_ms: NOW_MS - 600_000,
            expires_at_ms: NOW_MS + 2_700_000,
            reason: "match competitor in store-1".to_owned(),
            by: "ops-anna".to_owned(),
            ended_by: None,
            snapshot_version: 5_170,
        },
        Override {
            id: 9,
            sku: "SKU-0000311".to_owned(),
            store: None,
            channel: Some("web".to_owned()),
            price_minor: 450,
            currency: "EUR".to_owned(),
            floor_minor: Some(520),
            below_floor: true,
            created_at_ms: NOW_MS - 120_000,
            expires_at_ms: NOW_MS + 7_200_000,
            reason: "clearance, approved by category lead".to_owned(),
            by: "admin-li".to_owned(),
            ended_by: None,
            snapshot_version: 5_176,
        },
    ]
}

pub fn audit() -> Vec<AuditRow> {
    let row = |seq: i64, ago: i64, kind: &str, actor: &str, sku: Option<&str>, summary: &str| {
        AuditRow {
            seq,
            at_ms: NOW_MS - ago,
            kind: kind.to_owned(),
            actor: actor.to_owned(),
            sku: sku.map(str::to_owned),
            summary: summary.to_owned(),
            record: serde_json::json!({"seq": seq, "kind": kind, "actor": actor, "reason": summary}),
        }
    };
    vec![
        row(
            88_412,
            4_000,
            "decision",
            "pipeline",
            Some("SKU-0000042"),
            "12.49 → 12.29 EUR (competitor_match)",
        ),
        row(
            88_411,
            120_000,
            "override",
            "admin-li",
            Some("SKU-0000311"),
            "#9 4.50 EUR web FORCED below floor",
        ),
        row(
            88_390,
            600_000,
            "override",
            "ops-anna",
            Some("SKU-0000042"),
            "#7 10.99 EUR store-1",
        ),
        row(
            88_200,
            3_600_000,
            "kill_switch",
            "ops-ben",
            Some("SKU-0000007"),
            "freeze SKU-0000007 engaged",
        ),
    ]
}

pub fn approvals() -> Vec<Approval> {
    vec![
        Approval {
            sku: "SKU-0000311".to_owned(),
            category: "household".to_owned(),
            currency: "EUR".to_owned(),
            current_minor: 520,
            suggested_minor: 719,
            reason_code: "cost_increase_pass_through".to_owned(),
            suggested_at_ms: NOW_MS - 95_000,
        },
        Approval {
            sku: "SKU-0002048".to_owned(),
            category: "electronics".to_owned(),
            currency: "EUR".to_owned(),
            current_minor: 89_900,
            suggested_minor: 79_900,
            reason_code: "competitor_match".to_owned(),
            suggested_at_ms: NOW_MS - 40_000,
        },
    ]
}

pub fn sku_row(n: u32) -> SkuRow {
    let list = 1_000 + (n as i64 * 377) % 4_000;
    let price = list - (n as i64 * 31) % 200;
    SkuRow {
        sku: format!("SKU-{n:07}"),
        category: ["grocery", "snacks", "household", "beverages"][n as usize % 4].to_owned(),
        currency: "EUR".to_owned(),
        list_minor: list,
        price_minor: price,
        promo_price_minor: (n % 3 == 0).then_some(price * 8 / 10),
        floor_minor: Some(price * 7 / 10),
        margin_bp: Some(2_800 + (n as i64 * 97) % 1_500),
        changed_at_ms: NOW_MS - (n as i64 * 7_000),
        on_hand: Some((n as i64 * 13) % 140),
        frozen: n == 7,
        overridden: n == 42,
        needs_review: n == 11,
    }
}

pub fn sku_page(query: &SkuQuery) -> SkuPage {
    SkuPage {
        total: 10_000,
        offset: query.offset,
        skus: (1..=query.limit as u32)
            .map(|n| sku_row(n + query.offset as u32))
            .collect(),
    }
}

pub fn sku_detail(n: u32) -> SkuDetail {
    let row = sku_row(n);
    SkuDetail {
        cost_minor: Some(row.price_minor * 6 / 10),
        explanation: vec![
            "competitor median 12.35 EUR (3 competitors, newest 40s old)".to_owned(),
            "candidate 12.29 EUR: match competitor median minus 0.5%".to_owned(),
            "margin 31.9% ≥ minimum 30%: kept".to_owned(),
            "max change 10%/h: within".to_owned(),
            "promotion flash-20 applies: 9.83 EUR, floor 9.80 EUR".to_owned(),
        ],
        latest_decision: Some(serde_json::json!({
            "seq": 88_412,
            "reason_code": "competitor_match",
            "price_minor": row.price_minor,
        })),
        overrides: overrides()
            .into_iter()
            .filter(|o| o.sku == row.sku)
            .collect(),
        row,
    }
}

/// A poll with everything present.
pub fn poll(i: i64, role: Role) -> Poll {
    Poll {
        whoami: Some(whoami(role)),
        metrics: metrics(i),
        alerts: Ok(alerts()),
        switches: Ok(switches()),
        promotions: Ok(promotions()),
        overrides: Ok(overrides()),
        audit: Ok(audit()),
        approvals: Ok(approvals()),
    }
}

/// An app that has been connected for a minute, with 60 readings of history.
pub fn connected_app(role: Role, read_only: bool) -> App {
    let mut app = App::new(URL, read_only, 1_000, NOW_MS - 61_000);
    app.update(Message::Connection(ConnectionEvent::Up));
    for i in 1..=60 {
        app.update(Message::Tick {
            now_ms: NOW_MS - (60 - i) * 1_000,
        });
        app.update(Message::Polled(Box::new(poll(i, role))));
    }
    app.update(Message::Tick { now_ms: NOW_MS });
    app
}

pub fn outcome(switch: Switch, engaged: bool, dry_run: bool) -> KillSwitchOutcome {
    let mut state = switches();
    if engaged && !dry_run {
        state.engaged.push(EngagedSwitch {
            switch: switch.clone(),
            by: "ops-anna".to_owned(),
            reason: "flash sale misconfigured".to_owned(),
            since_ms: NOW_MS,
        });
    }
    KillSwitchOutcome {
        switch,
        engaged,
        dry_run,
        blast_radius: BlastRadius {
            skus: 1_240,
            promotions: 3,
            edges: 2,
        },
        snapshot_version: (!dry_run).then_some(5_181),
        state,
    }
}
