//! The console's state and its pure transitions: [`App::update`] takes a [`Message`]
//! (a key, a tick of the clock, an answer from the poller) and returns at most one
//! [`Command`] for the poller. Nothing here does I/O or reads the clock, so every
//! behaviour is testable without a terminal or a server.
//!
//! The state shown is always what the server acknowledged: a mutation only sends a
//! command, and the view changes when the server's answer (or the next poll) arrives.

use std::collections::{BTreeMap, VecDeque};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use edgeprice_schemas::admin::{
    AlertRow, Approval, ApprovalRequest, AuditRow, BlastRadius, KillSwitchOutcome,
    KillSwitchRequest, KillSwitches, Metrics, Override, OverrideRequest, PromotionRow, Role,
    SkuDetail, SkuPage, SkuRow, Switch, WhoAmI, SKU_SORTS,
};

use crate::client::{ApiError, SkuQuery};
use crate::format;
use crate::keymap::{self, Action, Scope};

/// Shortest and longest refresh interval, ms.
pub const REFRESH_MIN_MS: u64 = 250;
pub const REFRESH_MAX_MS: u64 = 60_000;
/// Readings kept for sparklines.
pub const HISTORY: usize = 240;
/// How long a status message stays, ms.
pub const STATUS_TTL_MS: i64 = 10_000;
/// Longest override the server accepts (30 days).
pub const OVERRIDE_MAX_MS: i64 = 30 * 86_400_000;
/// SKUs per page of the SKU table.
pub const SKU_PAGE: u64 = 50;

/// The tabs, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Dashboard,
    Skus,
    Switches,
    Overrides,
    Activity,
    Approvals,
}

impl Tab {
    pub const ALL: [Tab; 6] = [
        Tab::Dashboard,
        Tab::Skus,
        Tab::Switches,
        Tab::Overrides,
        Tab::Activity,
        Tab::Approvals,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Dashboard => "Dashboard",
            Tab::Skus => "SKUs",
            Tab::Switches => "Switches",
            Tab::Overrides => "Overrides",
            Tab::Activity => "Activity",
            Tab::Approvals => "Approvals",
        }
    }

    fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }
}

/// Everything the poller fetches on each refresh. Each panel's data comes back on its
/// own so that one failing endpoint shows an error in its panel, not a dead console.
#[derive(Debug, Clone)]
pub struct Poll {
    pub whoami: Option<WhoAmI>,
    pub metrics: Metrics,
    pub alerts: Result<Vec<AlertRow>, ApiError>,
    pub switches: Result<KillSwitches, ApiError>,
    pub promotions: Result<Vec<PromotionRow>, ApiError>,
    pub overrides: Result<Vec<Override>, ApiError>,
    pub audit: Result<Vec<AuditRow>, ApiError>,
    pub approvals: Result<Vec<Approval>, ApiError>,
}

/// What the poller reports about the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionEvent {
    Up,
    /// The last attempt failed; the next one is in `retry_in_ms`.
    Down {
        error: String,
        attempt: u32,
        retry_in_ms: u64,
    },
}

/// The connection as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    Connecting,
    Up {
        since_ms: i64,
    },
    Down {
        error: String,
        attempt: u32,
        retry_at_ms: i64,
    },
}

/// Input to [`App::update`].
#[derive(Debug, Clone)]
pub enum Message {
    Key(KeyEvent),
    /// The wall clock, Unix ms (the only way time enters the state).
    Tick {
        now_ms: i64,
    },
    Connection(ConnectionEvent),
    Polled(Box<Poll>),
    Skus {
        query: SkuQuery,
        result: Result<SkuPage, ApiError>,
    },
    Sku {
        sku: String,
        result: Result<SkuDetail, ApiError>,
    },
    KillSwitch {
        request: KillSwitchRequest,
        result: Result<KillSwitchOutcome, ApiError>,
    },
    OverrideCreated(Result<Override, ApiError>),
    OverrideRemoved {
        id: u64,
        result: Result<Override, ApiError>,
    },
    /// The decision record of an approved or rejected suggestion.
    Decided {
        sku: String,
        result: Result<serde_json::Value, ApiError>,
    },
}

/// Output of [`App::update`]: work for the poller thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Quit,
    RefreshNow,
    SetRefresh {
        ms: u64,
    },
    /// Stop (or resume) periodic polling while the view is frozen.
    SetFrozen(bool),
    /// Keep this page of the SKU table fresh.
    WatchSkus(SkuQuery),
    /// Keep this SKU's detail fresh (none: stop).
    WatchSku(Option<String>),
    KillSwitch(KillSwitchRequest),
    CreateOverride(OverrideRequest),
    RemoveOverride {
        id: u64,
        reason: String,
    },
    Decide {
        sku: String,
        request: ApprovalRequest,
    },
}

/// Sparkline series, oldest first.
#[derive(Debug, Clone, Default)]
pub struct History {
    last_at_ms: i64,
    /// Requests/s over all edges, ×1000.
    pub edge_rps: VecDeque<u64>,
    /// Worst edge p99, µs.
    pub edge_p99_us: VecDeque<u64>,
    /// Decisions/s, ×1000.
    pub decisions: VecDeque<u64>,
    /// Worst feed lag, ms.
    pub feed_lag_ms: VecDeque<u64>,
    /// Revenue per minute in the first currency, minor units.
    pub revenue: VecDeque<u64>,
    pub oversell: VecDeque<u64>,
    pub backlog: VecDeque<u64>,
}

fn push(series: &mut VecDeque<u64>, value: u64) {
    if series.len() == HISTORY {
        series.pop_front();
    }
    series.push_back(value);
}

impl History {
    fn record(&mut self, metrics: &Metrics) {
        if metrics.at_ms != 0 && metrics.at_ms == self.last_at_ms {
            return;
        }
        self.last_at_ms = metrics.at_ms;
        push(&mut self.edge_rps, milli(total_rps(metrics)));
        push(&mut self.edge_p99_us, worst_p99_us(metrics));
        push(&mut self.decisions, milli(metrics.pipeline.decisions_per_s));
        push(
            &mut self.feed_lag_ms,
            worst_feed_lag_ms(metrics).max(0) as u64,
        );
        push(
            &mut self.revenue,
            metrics
                .revenue_per_min
                .first()
                .map_or(0, |a| a.minor.max(0) as u64),
        );
        push(&mut self.oversell, metrics.checkout.oversell);
        push(&mut self.backlog, metrics.pipeline.backlog);
    }
}

fn milli(value: f64) -> u64 {
    (value.max(0.0) * 1000.0).round() as u64
}

/// Requests/s summed over the edges.
pub fn total_rps(metrics: &Metrics) -> f64 {
    metrics.edges.iter().map(|e| e.requests_per_s).sum()
}

/// The worst p99 of any edge, µs.
pub fn worst_p99_us(metrics: &Metrics) -> u64 {
    metrics.edges.iter().map(|e| e.p99_us).max().unwrap_or(0)
}

/// The feed furthest behind, ms.
pub fn worst_feed_lag_ms(metrics: &Metrics) -> i64 {
    metrics
        .pipeline
        .feed_lag_ms
        .values()
        .copied()
        .max()
        .unwrap_or(0)
}

/// The SKU table.
#[derive(Debug, Clone, Default)]
pub struct SkuTable {
    /// What is asked for (the poller watches it).
    pub query: SkuQuery,
    /// The query `page` answers.
    pub page_query: Option<SkuQuery>,
    pub page: Option<SkuPage>,
    pub selected: usize,
    /// The filter being typed, when the filter line has focus.
    pub editing_filter: Option<String>,
    pub error: Option<String>,
    pub watching: bool,
}

/// One SKU's detail view.
#[derive(Debug, Clone)]
pub struct Detail {
    pub sku: String,
    pub data: Option<SkuDetail>,
    pub error: Option<String>,
    pub scroll: u16,
}

/// Where a kill-switch dialog is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchStage {
    /// Asking which SKU to freeze.
    Sku,
    /// Asking why.
    Reason,
    /// The dry run is out.
    Previewing,
    /// The blast radius is known; `y` applies.
    Confirm(BlastRadius),
    /// Sent; waiting for the server.
    Applying,
    Failed(String),
}

/// Engage or release one kill switch: reason, dry run, confirmation, apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchDialog {
    pub switch: Switch,
    pub engage: bool,
    pub sku_input: String,
    pub reason: String,
    pub stage: SwitchStage,
}

impl SwitchDialog {
    fn request(&self, dry_run: bool) -> KillSwitchRequest {
        KillSwitchRequest {
            switch: self.switch.clone(),
            engaged: self.engage,
            reason: self.reason.trim().to_owned(),
            dry_run,
        }
    }

    /// What the dialog does, for its title: `engage: all promotions off`.
    pub fn title(&self) -> String {
        let verb = if self.engage { "engage" } else { "release" };
        match (&self.switch, self.stage == SwitchStage::Sku) {
            (_, true) => "freeze a SKU's price".to_owned(),
            (switch, false) => format!("{verb}: {switch}"),
        }
    }
}

/// The override form's fields, in focus order.
pub const OVERRIDE_FIELDS: [&str; 5] = ["price", "store", "channel", "expires in", "reason"];

/// Where the override form is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormStage {
    Editing { error: Option<String> },
    Confirm(OverrideRequest),
    Applying(OverrideRequest),
}

/// Pin a price for one SKU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideForm {
    pub sku: String,
    pub currency: String,
    pub current_minor: i64,
    pub floor_minor: Option<i64>,
    /// Price, store, channel, expires in, reason.
    pub fields: [String; 5],
    /// Offered only to admins.
    pub force_allowed: bool,
    pub force: bool,
    /// Index into the fields; `fields.len()` is the force box.
    pub focus: usize,
    pub stage: FormStage,
}

/// End an override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndOverrideDialog {
    pub target: Override,
    pub reason: String,
    /// `false`: typing the reason; `true`: waiting for `y`.
    pub confirming: bool,
    pub applying: bool,
    pub error: Option<String>,
}

/// Approve or reject a price suggestion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecideDialog {
    pub target: Approval,
    pub approve: bool,
    pub reason: String,
    pub confirming: bool,
    pub applying: bool,
    pub error: Option<String>,
}

/// A dialog over the view; it takes every key while open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Modal {
    Help {
        scroll: u16,
    },
    Palette {
        input: String,
        error: Option<String>,
    },
    Switch(SwitchDialog),
    Override(Box<OverrideForm>),
    EndOverride(EndOverrideDialog),
    Decide(DecideDialog),
    /// One audit record, pretty-printed.
    Record {
        title: String,
        lines: Vec<String>,
        scroll: u16,
    },
}

/// How a status message reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Done,
    Error,
}

/// A transient message at the bottom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub level: Level,
    pub text: String,
    pub at_ms: i64,
}

/// A row of the kill-switch panel.
#[derive(Debug, Clone)]
pub struct SwitchRow<'a> {
    pub switch: Switch,
    pub engaged: Option<&'a edgeprice_schemas::admin::EngagedSwitch>,
    pub promotion: Option<&'a PromotionRow>,
}

/// Panels whose last fetch failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Panel {
    Alerts,
    Switches,
    Promotions,
    Overrides,
    Audit,
    Approvals,
}

/// The console.
#[derive(Debug, Clone)]
pub struct App {
    pub url: String,
    /// `--read-only`: no mutating action exists.
    pub read_only: bool,
    pub refresh_ms: u64,
    pub frozen: bool,
    pub now_ms: i64,
    pub tab: Tab,
    pub connection: Connection,
    pub whoami: Option<WhoAmI>,
    pub metrics: Option<Metrics>,
    pub history: History,
    pub alerts: Vec<AlertRow>,
    pub switches: Option<KillSwitches>,
    pub promotions: Vec<PromotionRow>,
    pub overrides: Vec<Override>,
    pub audit: Vec<AuditRow>,
    pub approvals: Vec<Approval>,
    pub panel_errors: BTreeMap<Panel, String>,
    pub skus: SkuTable,
    pub detail: Option<Detail>,
    pub switch_selected: usize,
    pub override_selected: usize,
    pub activity_selected: usize,
    pub approval_selected: usize,
    pub modal: Option<Modal>,
    pub status: Option<Status>,
    /// Readings that arrived while frozen and were not shown.
    pub held_back: u64,
    pub quit: bool,
}

impl App {
    pub fn new(url: &str, read_only: bool, refresh_ms: u64, now_ms: i64) -> App {
        App {
            url: url.to_owned(),
            read_only,
            refresh_ms: refresh_ms.clamp(REFRESH_MIN_MS, REFRESH_MAX_MS),
            frozen: false,
            now_ms,
            tab: Tab::Dashboard,
            connection: Connection::Connecting,
            whoami: None,
            metrics: None,
            history: History::default(),
            alerts: Vec::new(),
            switches: None,
            promotions: Vec::new(),
            overrides: Vec::new(),
            audit: Vec::new(),
            approvals: Vec::new(),
            panel_errors: BTreeMap::new(),
            skus: SkuTable {
                query: SkuQuery {
                    limit: SKU_PAGE,
                    ..SkuQuery::default()
                },
                ..SkuTable::default()
            },
            detail: None,
            switch_selected: 0,
            override_selected: 0,
            activity_selected: 0,
            approval_selected: 0,
            modal: None,
            status: None,
            held_back: 0,
            quit: false,
        }
    }

    /// Mutations are neither shown nor possible: `--read-only`, or a viewer token.
    pub fn is_read_only(&self) -> bool {
        self.read_only || self.whoami.as_ref().is_some_and(|w| w.role == Role::Viewer)
    }

    fn is_admin(&self) -> bool {
        self.whoami.as_ref().is_some_and(|w| w.role == Role::Admin)
    }

    /// Where keys are looked up.
    pub fn scope(&self) -> Scope {
        match self.tab {
            Tab::Dashboard => Scope::Dashboard,
            Tab::Skus if self.detail.is_some() => Scope::Detail,
            Tab::Skus => Scope::Skus,
            Tab::Switches => Scope::Switches,
            Tab::Overrides => Scope::Overrides,
            Tab::Activity => Scope::Activity,
            Tab::Approvals => Scope::Approvals,
        }
    }

    /// Edges the control plane publishes to (the blast radius of an override).
    pub fn edge_count(&self) -> usize {
        self.metrics.as_ref().map_or(0, |m| m.edges.len())
    }

    /// The status message, if it is still fresh.
    pub fn current_status(&self) -> Option<&Status> {
        self.status
            .as_ref()
            .filter(|s| s.level == Level::Error || self.now_ms - s.at_ms < STATUS_TTL_MS)
    }

    fn say(&mut self, level: Level, text: impl Into<String>) {
        self.status = Some(Status {
            level,
            text: text.into(),
            at_ms: self.now_ms,
        });
    }

    /// The kill-switch panel: the global switches, engaged SKU freezes, then one row
    /// per promotion.
    pub fn switch_rows(&self) -> Vec<SwitchRow<'_>> {
        let engaged = |switch: &Switch| {
            self.switches
                .as_ref()
                .and_then(|s| s.engaged.iter().find(|e| &e.switch == switch))
        };
        let mut rows: Vec<SwitchRow<'_>> =
            [Switch::AllPromotions, Switch::Pipeline, Switch::Checkout]
                .into_iter()
                .map(|switch| SwitchRow {
                    engaged: engaged(&switch),
                    switch,
                    promotion: None,
                })
                .collect();
        if let Some(switches) = &self.switches {
            let mut freezes: Vec<_> = switches
                .engaged
                .iter()
                .filter(|e| matches!(e.switch, Switch::FreezeSku { .. }))
                .collect();
            freezes.sort_by(|a, b| a.switch.cmp(&b.switch));
            rows.extend(freezes.into_iter().map(|e| SwitchRow {
                switch: e.switch.clone(),
                engaged: Some(e),
                promotion: None,
            }));
        }
        for promotion in &self.promotions {
            let switch = Switch::Promotion {
                id: promotion.id.clone(),
            };
            rows.push(SwitchRow {
                engaged: engaged(&switch),
                switch,
                promotion: Some(promotion),
            });
        }
        rows
    }

    fn is_engaged(&self, switch: &Switch) -> bool {
        self.switches.as_ref().is_some_and(|s| s.is_engaged(switch))
    }

    /// The SKU the SKU view points at: the open detail, else the selected row.
    pub fn selected_sku(&self) -> Option<&SkuRow> {
        if let Some(detail) = &self.detail {
            return detail.data.as_ref().map(|d| &d.row).or_else(|| {
                self.skus
                    .page
                    .as_ref()?
                    .skus
                    .iter()
                    .find(|r| r.sku == detail.sku)
            });
        }
        self.skus.page.as_ref()?.skus.get(self.skus.selected)
    }

    /// Applies one message.
    pub fn update(&mut self, message: Message) -> Option<Command> {
        match message {
            Message::Key(key) => self.on_key(key),
            Message::Tick { now_ms } => {
                self.now_ms = now_ms;
                None
            }
            Message::Connection(event) => {
                self.connection = match event {
                    ConnectionEvent::Up => match self.connection {
                        Connection::Up { since_ms } => Connection::Up { since_ms },
                        _ => Connection::Up {
                            since_ms: self.now_ms,
                        },
                    },
                    ConnectionEvent::Down {
                        error,
                        attempt,
                        retry_in_ms,
                    } => Connection::Down {
                        error,
                        attempt,
                        retry_at_ms: self.now_ms + retry_in_ms as i64,
                    },
                };
                None
            }
            Message::Polled(poll) => {
                if !matches!(self.connection, Connection::Up { .. }) {
                    self.connection = Connection::Up {
                        since_ms: self.now_ms,
                    };
                }
                if self.frozen {
                    self.held_back += 1;
                } else {
                    self.apply_poll(*poll);
                }
                None
            }
            Message::Skus { query, result } => {
                // A periodic refresh of what is shown waits while frozen; an answer to
                // something the operator just asked for does not.
                let refresh = self.skus.page_query.as_ref() == Some(&query);
                if query != self.skus.query || (self.frozen && refresh) {
                    return None;
                }
                match result {
                    Ok(page) => {
                        let rows = page.skus.len();
                        self.skus.page = Some(page);
                        self.skus.page_query = Some(query);
                        self.skus.error = None;
                        self.skus.selected = self.skus.selected.min(rows.saturating_sub(1));
                    }
                    Err(error) => self.skus.error = Some(error.to_string()),
                }
                None
            }
            Message::Sku { sku, result } => {
                let frozen = self.frozen;
                if let Some(detail) = self.detail.as_mut().filter(|d| d.sku == sku) {
                    if frozen && detail.data.is_some() {
                        return None;
                    }
                    match result {
                        Ok(data) => {
                            detail.data = Some(data);
                            detail.error = None;
                        }
                        Err(error) => detail.error = Some(error.to_string()),
                    }
                }
                None
            }
            Message::KillSwitch { request, result } => {
                self.on_kill_switch(request, result);
                None
            }
            Message::OverrideCreated(result) => {
                self.on_override_created(result);
                None
            }
            Message::OverrideRemoved { id, result } => {
                self.on_override_removed(id, result);
                None
            }
            Message::Decided { sku, result } => {
                self.on_decided(sku, result);
                None
            }
        }
    }

    fn apply_poll(&mut self, poll: Poll) {
        if let Some(whoami) = poll.whoami {
            self.whoami = Some(whoami);
        }
        self.history.record(&poll.metrics);
        self.metrics = Some(poll.metrics);
        fn keep<T>(
            errors: &mut BTreeMap<Panel, String>,
            panel: Panel,
            slot: &mut T,
            result: Result<T, ApiError>,
        ) {
            match result {
                Ok(value) => {
                    *slot = value;
                    errors.remove(&panel);
                }
                Err(error) => {
                    errors.insert(panel, error.to_string());
                }
            }
        }
        let errors = &mut self.panel_errors;
        keep(errors, Panel::Alerts, &mut self.alerts, poll.alerts);
        match poll.switches {
            Ok(switches) => {
                self.switches = Some(switches);
                errors.remove(&Panel::Switches);
            }
            Err(error) => {
                errors.insert(Panel::Switches, error.to_string());
            }
        }
        keep(
            errors,
            Panel::Promotions,
            &mut self.promotions,
            poll.promotions,
        );
        keep(
            errors,
            Panel::Overrides,
            &mut self.overrides,
            poll.overrides,
        );
        keep(errors, Panel::Audit, &mut self.audit, poll.audit);
        keep(
            errors,
            Panel::Approvals,
            &mut self.approvals,
            poll.approvals,
        );
        self.clamp_selections();
    }

    fn clamp_selections(&mut self) {
        let rows = self.switch_rows().len();
        self.switch_selected = self.switch_selected.min(rows.saturating_sub(1));
        self.override_selected = self
            .override_selected
            .min(self.overrides.len().saturating_sub(1));
        self.activity_selected = self
            .activity_selected
            .min(self.audit.len().saturating_sub(1));
        self.approval_selected = self
            .approval_selected
            .min(self.approvals.len().saturating_sub(1));
    }

    fn on_decided(&mut self, sku: String, result: Result<serde_json::Value, ApiError>) {
        let dialog = match &mut self.modal {
            Some(Modal::Decide(dialog)) if dialog.target.sku == sku => Some(dialog),
            _ => None,
        };
        match result {
            Ok(record) => {
                let verb = match &dialog {
                    Some(d) if !d.approve => "rejected",
                    Some(_) => "approved",
                    None => "decided",
                };
                if dialog.is_some() {
                    self.modal = None;
                }
                self.approvals.retain(|a| a.sku != sku);
                self.clamp_selections();
                let price = record["final_price_minor"]
                    .as_i64()
                    .zip(record["inputs"]["currency"].as_str())
                    .map(|(minor, currency)| {
                        format!(": price now {}", format::money(minor, currency))
                    })
                    .unwrap_or_default();
                self.say(
                    Level::Done,
                    format!("{verb} the suggestion for {sku}{price}"),
                );
            }
            Err(error) => match dialog {
                Some(dialog) => {
                    dialog.applying = false;
                    dialog.error = Some(error.to_string());
                }
                None => self.say(Level::Error, format!("deciding {sku}: {error}")),
            },
        }
    }

    fn on_kill_switch(
        &mut self,
        request: KillSwitchRequest,
        result: Result<KillSwitchOutcome, ApiError>,
    ) {
        let dialog = match &mut self.modal {
            Some(Modal::Switch(dialog))
                if dialog.switch == request.switch && dialog.engage == request.engaged =>
            {
                Some(dialog)
            }
            _ => None,
        };
        if request.dry_run {
            if let Some(dialog) = dialog.filter(|d| d.stage == SwitchStage::Previewing) {
                dialog.stage = match result {
                    Ok(outcome) => SwitchStage::Confirm(outcome.blast_radius),
                    Err(error) => SwitchStage::Failed(error.to_string()),
                };
            }
            return;
        }
        match result {
            Ok(outcome) => {
                let applying = dialog.is_some_and(|d| d.stage == SwitchStage::Applying);
                if applying {
                    self.modal = None;
                }
                let verb = if outcome.engaged {
                    "engaged"
                } else {
                    "released"
                };
                let radius = &outcome.blast_radius;
                let version = outcome
                    .snapshot_version
                    .map(|v| format!("; snapshot v{v}"))
                    .unwrap_or_default();
                self.say(
                    Level::Done,
                    format!(
                        "{verb}: {} ({} SKUs, {} promotions, {} edges{version})",
                        outcome.switch,
                        format::thousands(radius.skus),
                        radius.promotions,
                        radius.edges
                    ),
                );
                // The server's word on every switch, as of its answer.
                self.switches = Some(outcome.state);
                self.clamp_selections();
            }
            Err(error) => match dialog {
                Some(dialog) => dialog.stage = SwitchStage::Failed(error.to_string()),
                None => self.say(Level::Error, format!("{}: {error}", request.switch)),
            },
        }
    }

    fn on_override_created(&mut self, result: Result<Override, ApiError>) {
        let form = match &mut self.modal {
            Some(Modal::Override(form)) if matches!(form.stage, FormStage::Applying(_)) => {
                Some(form)
            }
            _ => None,
        };
        match result {
            Ok(created) => {
                if form.is_some() {
                    self.modal = None;
                }
                self.say(
                    Level::Done,
                    format!(
                        "override #{} set: {} at {} until {} UTC (snapshot v{})",
                        created.id,
                        created.sku,
                        format::money(created.price_minor, &created.currency),
                        format::date_time(created.expires_at_ms),
                        created.snapshot_version
                    ),
                );
                self.overrides.retain(|o| o.id != created.id);
                self.overrides.push(created);
            }
            Err(error) => match form {
                Some(form) => {
                    form.stage = FormStage::Editing {
                        error: Some(error.to_string()),
                    }
                }
                None => self.say(Level::Error, format!("override: {error}")),
            },
        }
    }

    fn on_override_removed(&mut self, id: u64, result: Result<Override, ApiError>) {
        let dialog = match &mut self.modal {
            Some(Modal::EndOverride(dialog)) if dialog.target.id == id => Some(dialog),
            _ => None,
        };
        match result {
            Ok(ended) => {
                if dialog.is_some() {
                    self.modal = None;
                }
                self.overrides.retain(|o| o.id != ended.id);
                self.clamp_selections();
                self.say(
                    Level::Done,
                    format!(
                        "override #{} on {} ended by {}",
                        ended.id,
                        ended.sku,
                        ended.ended_by.as_deref().unwrap_or("?")
                    ),
                );
            }
            Err(error) => match dialog {
                Some(dialog) => {
                    dialog.applying = false;
                    dialog.error = Some(error.to_string());
                }
                None => self.say(Level::Error, format!("ending override #{id}: {error}")),
            },
        }
    }

    fn on_key(&mut self, key: KeyEvent) -> Option<Command> {
        if key.kind == crossterm::event::KeyEventKind::Release {
            return None;
        }
        if let Some(modal) = self.modal.take() {
            return self.on_modal_key(modal, key);
        }
        if let Some(filter) = self.skus.editing_filter.take() {
            return self.on_filter_key(filter, key);
        }
        let action = keymap::action_for(&key, self.scope(), self.is_read_only())?;
        self.perform(action, None)
    }

    fn on_filter_key(&mut self, mut filter: String, key: KeyEvent) -> Option<Command> {
        match key.code {
            KeyCode::Enter => self.set_filter(filter),
            KeyCode::Esc => None,
            _ => {
                edit(&mut filter, &key);
                self.skus.editing_filter = Some(filter);
                None
            }
        }
    }

    fn set_filter(&mut self, filter: String) -> Option<Command> {
        self.skus.query.q = filter.trim().to_owned();
        self.skus.query.offset = 0;
        self.skus.selected = 0;
        self.watch_skus()
    }

    fn watch_skus(&mut self) -> Option<Command> {
        self.skus.watching = true;
        Some(Command::WatchSkus(self.skus.query.clone()))
    }

    /// Does what a binding says; `argument` comes from the palette.
    pub fn perform(&mut self, action: Action, argument: Option<&str>) -> Option<Command> {
        let argument = argument.map(str::trim).filter(|a| !a.is_empty());
        match action {
            Action::Quit => {
                self.quit = true;
                Some(Command::Quit)
            }
            Action::Help => {
                self.modal = Some(Modal::Help { scroll: 0 });
                None
            }
            Action::Palette => {
                self.modal = Some(Modal::Palette {
                    input: String::new(),
                    error: None,
                });
                None
            }
            Action::FreezeView => {
                self.frozen = !self.frozen;
                if self.frozen {
                    self.held_back = 0;
                    self.say(Level::Info, "view frozen: press p to resume");
                } else {
                    self.say(Level::Info, "view live again");
                }
                Some(Command::SetFrozen(self.frozen))
            }
            Action::RefreshNow => {
                if self.frozen {
                    self.say(Level::Info, "view frozen: press p to resume");
                    None
                } else {
                    Some(Command::RefreshNow)
                }
            }
            Action::FasterRefresh => self.set_refresh(self.refresh_ms / 2),
            Action::SlowerRefresh => self.set_refresh(self.refresh_ms * 2),
            Action::SetRefresh => match argument.map(str::parse::<u64>) {
                Some(Ok(ms)) => self.set_refresh(ms),
                _ => {
                    self.say(
                        Level::Error,
                        "refresh takes milliseconds, like :refresh 500",
                    );
                    None
                }
            },
            Action::NextTab => self.go(Tab::ALL[(self.tab.index() + 1) % Tab::ALL.len()]),
            Action::PrevTab => {
                self.go(Tab::ALL[(self.tab.index() + Tab::ALL.len() - 1) % Tab::ALL.len()])
            }
            Action::GoDashboard => self.go(Tab::Dashboard),
            Action::GoSkus => self.go(Tab::Skus),
            Action::GoSwitches => self.go(Tab::Switches),
            Action::GoOverrides => self.go(Tab::Overrides),
            Action::GoActivity => self.go(Tab::Activity),
            Action::GoApprovals => self.go(Tab::Approvals),
            Action::Up => self.move_selection(-1),
            Action::Down => self.move_selection(1),
            Action::PageUp => self.page(-1),
            Action::PageDown => self.page(1),
            Action::Top => self.move_selection(i64::MIN / 2),
            Action::Bottom => self.move_selection(i64::MAX / 2),
            Action::Filter => {
                self.tab = Tab::Skus;
                match argument {
                    Some(text) => {
                        self.detail = None;
                        self.set_filter(text.to_owned())
                    }
                    None => {
                        self.skus.editing_filter = Some(self.skus.query.q.clone());
                        None
                    }
                }
            }
            Action::ClearFilter => {
                if self.skus.query.q.is_empty() {
                    None
                } else {
                    self.set_filter(String::new())
                }
            }
            Action::SortNext => {
                let next = match argument {
                    Some(name) if SKU_SORTS.contains(&name) => name.to_owned(),
                    Some(name) => {
                        self.say(
                            Level::Error,
                            format!("cannot sort by {name:?}: one of {}", SKU_SORTS.join(", ")),
                        );
                        return None;
                    }
                    None => {
                        let at = SKU_SORTS
                            .iter()
                            .position(|s| *s == self.skus.query.sort)
                            .map_or(0, |i| (i + 1) % SKU_SORTS.len());
                        SKU_SORTS[at].to_owned()
                    }
                };
                self.tab = Tab::Skus;
                self.skus.query.sort = next;
                self.skus.query.offset = 0;
                self.skus.selected = 0;
                self.watch_skus()
            }
            Action::SortReverse => {
                self.skus.query.desc = !self.skus.query.desc;
                self.skus.query.offset = 0;
                self.skus.selected = 0;
                self.watch_skus()
            }
            Action::Open => {
                let sku = self.selected_sku()?.sku.clone();
                self.open_sku(sku)
            }
            Action::OpenSku => match argument {
                Some(sku) => {
                    self.tab = Tab::Skus;
                    self.open_sku(sku.to_owned())
                }
                None => {
                    self.say(Level::Error, "which SKU? like :sku SKU-0000042");
                    None
                }
            },
            Action::Back => {
                self.detail = None;
                Some(Command::WatchSku(None))
            }
            Action::OverrideForm => self.open_override_form(),
            Action::FreezeSku => {
                let sku = match self.selected_sku() {
                    Some(row) => row.sku.clone(),
                    None => {
                        self.say(Level::Error, "select a SKU first");
                        return None;
                    }
                };
                self.open_switch_dialog(Switch::FreezeSku { sku })
            }
            Action::ToggleSwitch => {
                let switch = self.switch_rows().get(self.switch_selected)?.switch.clone();
                self.open_switch_dialog(switch)
            }
            Action::AllPromotionsSwitch => self.open_switch_dialog(Switch::AllPromotions),
            Action::PipelineSwitch => self.open_switch_dialog(Switch::Pipeline),
            Action::CheckoutSwitch => self.open_switch_dialog(Switch::Checkout),
            Action::FreezeSkuById => match argument {
                Some(sku) => self.open_switch_dialog(Switch::FreezeSku {
                    sku: sku.to_owned(),
                }),
                None => {
                    self.modal = Some(Modal::Switch(SwitchDialog {
                        switch: Switch::FreezeSku { sku: String::new() },
                        engage: true,
                        sku_input: String::new(),
                        reason: String::new(),
                        stage: SwitchStage::Sku,
                    }));
                    None
                }
            },
            Action::ShowRecord => {
                let row = self.audit.get(self.activity_selected)?;
                let pretty = serde_json::to_string_pretty(&row.record).unwrap_or_default();
                self.modal = Some(Modal::Record {
                    title: format!("audit #{} · {} by {}", row.seq, row.kind, row.actor),
                    lines: pretty.lines().map(str::to_owned).collect(),
                    scroll: 0,
                });
                None
            }
            Action::Approve | Action::Reject => {
                if self.mutation_refused() {
                    return None;
                }
                let target = self.approvals.get(self.approval_selected)?.clone();
                self.modal = Some(Modal::Decide(DecideDialog {
                    target,
                    approve: action == Action::Approve,
                    reason: String::new(),
                    confirming: false,
                    applying: false,
                    error: None,
                }));
                None
            }
            Action::PromotionSwitch => match argument {
                Some(id) => self.open_switch_dialog(Switch::Promotion { id: id.to_owned() }),
                None => {
                    self.say(
                        Level::Error,
                        "which promotion? like :promotion-off flash-20",
                    );
                    None
                }
            },
            Action::RemoveOverride => {
                let target = self.overrides.get(self.override_selected)?.clone();
                self.modal = Some(Modal::EndOverride(EndOverrideDialog {
                    target,
                    reason: String::new(),
                    confirming: false,
                    applying: false,
                    error: None,
                }));
                None
            }
        }
    }

    fn set_refresh(&mut self, ms: u64) -> Option<Command> {
        self.refresh_ms = ms.clamp(REFRESH_MIN_MS, REFRESH_MAX_MS);
        self.say(
            Level::Info,
            format!("refreshing every {}", format::span(self.refresh_ms as i64)),
        );
        Some(Command::SetRefresh {
            ms: self.refresh_ms,
        })
    }

    fn go(&mut self, tab: Tab) -> Option<Command> {
        self.tab = tab;
        if tab == Tab::Skus && !self.skus.watching {
            return self.watch_skus();
        }
        None
    }

    fn open_sku(&mut self, sku: String) -> Option<Command> {
        self.detail = Some(Detail {
            sku: sku.clone(),
            data: None,
            error: None,
            scroll: 0,
        });
        Some(Command::WatchSku(Some(sku)))
    }

    fn move_selection(&mut self, delta: i64) -> Option<Command> {
        fn moved(current: usize, delta: i64, len: usize) -> usize {
            if len == 0 {
                return 0;
            }
            (current as i64)
                .saturating_add(delta)
                .clamp(0, len as i64 - 1) as usize
        }
        match self.tab {
            Tab::Dashboard => {}
            Tab::Skus => {
                if let Some(detail) = &mut self.detail {
                    detail.scroll = moved(detail.scroll as usize, delta, 1000) as u16;
                } else {
                    let rows = self.skus.page.as_ref().map_or(0, |p| p.skus.len());
                    self.skus.selected = moved(self.skus.selected, delta, rows);
                }
            }
            Tab::Switches => {
                self.switch_selected = moved(self.switch_selected, delta, self.switch_rows().len())
            }
            Tab::Overrides => {
                self.override_selected = moved(self.override_selected, delta, self.overrides.len())
            }
            Tab::Activity => {
                self.activity_selected = moved(self.activity_selected, delta, self.audit.len())
            }
            Tab::Approvals => {
                self.approval_selected = moved(self.approval_selected, delta, self.approvals.len())
            }
        }
        None
    }

    fn page(&mut self, direction: i64) -> Option<Command> {
        if self.tab != Tab::Skus || self.detail.is_some() {
            return self.move_selection(direction * 10);
        }
        let total = self.skus.page.as_ref().map_or(0, |p| p.total);
        let limit = self.skus.query.limit;
        let offset = self.skus.query.offset;
        let next = if direction > 0 {
            if offset + limit >= total {
                return None;
            }
            offset + limit
        } else {
            if offset == 0 {
                return None;
            }
            offset.saturating_sub(limit)
        };
        self.skus.query.offset = next;
        self.skus.selected = 0;
        self.watch_skus()
    }

    fn mutation_refused(&mut self) -> bool {
        if self.is_read_only() {
            let why = if self.read_only {
                "read-only console"
            } else {
                "this token is a viewer: read-only"
            };
            self.say(Level::Error, why);
            return true;
        }
        false
    }

    fn open_switch_dialog(&mut self, switch: Switch) -> Option<Command> {
        if self.mutation_refused() {
            return None;
        }
        let engage = !self.is_engaged(&switch);
        self.modal = Some(Modal::Switch(SwitchDialog {
            switch,
            engage,
            sku_input: String::new(),
            reason: String::new(),
            stage: SwitchStage::Reason,
        }));
        None
    }

    fn open_override_form(&mut self) -> Option<Command> {
        if self.mutation_refused() {
            return None;
        }
        let Some(row) = self.selected_sku().cloned() else {
            self.say(Level::Error, "select a SKU first (SKUs tab)");
            return None;
        };
        self.modal = Some(Modal::Override(Box::new(OverrideForm {
            sku: row.sku,
            currency: row.currency.clone(),
            current_minor: row.price_minor,
            floor_minor: row.floor_minor,
            fields: [
                format::minor(row.price_minor, &row.currency),
                String::new(),
                String::new(),
                "1h".to_owned(),
                String::new(),
            ],
            force_allowed: self.is_admin(),
            force: false,
            focus: 0,
            stage: FormStage::Editing { error: None },
        })));
        None
    }

    fn on_modal_key(&mut self, modal: Modal, key: KeyEvent) -> Option<Command> {
        let ctrl_c = key.code == KeyCode::Char('c') && key.modifiers == KeyModifiers::CONTROL;
        if ctrl_c {
            return self.perform(Action::Quit, None);
        }
        match modal {
            Modal::Help { scroll } => {
                self.modal = match key.code {
                    KeyCode::Down | KeyCode::Char('j') => Some(Modal::Help {
                        scroll: scroll.saturating_add(1),
                    }),
                    KeyCode::Up | KeyCode::Char('k') => Some(Modal::Help {
                        scroll: scroll.saturating_sub(1),
                    }),
                    KeyCode::PageDown => Some(Modal::Help {
                        scroll: scroll.saturating_add(10),
                    }),
                    KeyCode::PageUp => Some(Modal::Help {
                        scroll: scroll.saturating_sub(10),
                    }),
                    _ => None,
                };
                None
            }
            Modal::Palette { mut input, .. } => match key.code {
                KeyCode::Esc => None,
                KeyCode::Enter => self.run_palette(&input),
                KeyCode::Tab => {
                    if let Some(first) = self.palette_matches(&input).first() {
                        input = format!("{} ", first.command.unwrap_or_default());
                    }
                    self.modal = Some(Modal::Palette { input, error: None });
                    None
                }
                _ => {
                    edit(&mut input, &key);
                    self.modal = Some(Modal::Palette { input, error: None });
                    None
                }
            },
            Modal::Switch(dialog) => self.on_switch_key(dialog, key),
            Modal::Override(form) => self.on_form_key(*form, key),
            Modal::EndOverride(dialog) => self.on_end_override_key(dialog, key),
            Modal::Decide(dialog) => self.on_decide_key(dialog, key),
            Modal::Record {
                title,
                lines,
                scroll,
            } => {
                let scroll = match key.code {
                    KeyCode::Down | KeyCode::Char('j') => scroll.saturating_add(1),
                    KeyCode::Up | KeyCode::Char('k') => scroll.saturating_sub(1),
                    KeyCode::PageDown => scroll.saturating_add(10),
                    KeyCode::PageUp => scroll.saturating_sub(10),
                    _ => return None,
                };
                self.modal = Some(Modal::Record {
                    title,
                    lines,
                    scroll,
                });
                None
            }
        }
    }

    /// Palette commands starting with what is typed.
    pub fn palette_matches(&self, input: &str) -> Vec<&'static keymap::Binding> {
        let word = input.split_whitespace().next().unwrap_or("");
        keymap::commands(self.is_read_only())
            .filter(|b| b.command.is_some_and(|c| c.starts_with(word)))
            .collect()
    }

    fn run_palette(&mut self, input: &str) -> Option<Command> {
        let input = input.trim().trim_start_matches(':');
        let (name, argument) = match input.split_once(char::is_whitespace) {
            Some((name, argument)) => (name, Some(argument)),
            None => (input, None),
        };
        if name.is_empty() {
            return None;
        }
        match keymap::command(name, self.is_read_only()) {
            Some(binding) => self.perform(binding.action, argument),
            None => {
                let error = if keymap::command(name, false).is_some() {
                    format!(":{name} changes the server: not in a read-only console")
                } else {
                    format!("no command :{name} (? lists them)")
                };
                self.modal = Some(Modal::Palette {
                    input: input.to_owned(),
                    error: Some(error),
                });
                None
            }
        }
    }

    fn on_switch_key(&mut self, mut dialog: SwitchDialog, key: KeyEvent) -> Option<Command> {
        if key.code == KeyCode::Esc {
            // Closing while applying does not cancel: the answer still lands in the
            // status line and the panel.
            return None;
        }
        let mut command = None;
        match &dialog.stage {
            SwitchStage::Sku => match key.code {
                KeyCode::Enter if !dialog.sku_input.trim().is_empty() => {
                    let sku = dialog.sku_input.trim().to_owned();
                    dialog.switch = Switch::FreezeSku { sku };
                    dialog.engage = !self.is_engaged(&dialog.switch);
                    dialog.stage = SwitchStage::Reason;
                }
                _ => edit(&mut dialog.sku_input, &key),
            },
            SwitchStage::Reason => match key.code {
                KeyCode::Enter if !dialog.reason.trim().is_empty() => {
                    dialog.stage = SwitchStage::Previewing;
                    command = Some(Command::KillSwitch(dialog.request(true)));
                }
                _ => edit(&mut dialog.reason, &key),
            },
            SwitchStage::Previewing | SwitchStage::Applying => {}
            SwitchStage::Confirm(_) => match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => {
                    dialog.stage = SwitchStage::Applying;
                    command = Some(Command::KillSwitch(dialog.request(false)));
                }
                KeyCode::Char('n') | KeyCode::Char('N') => return None,
                _ => {}
            },
            SwitchStage::Failed(_) => {
                if key.code == KeyCode::Enter {
                    dialog.stage = SwitchStage::Reason;
                }
            }
        }
        self.modal = Some(Modal::Switch(dialog));
        command
    }

    fn on_form_key(&mut self, mut form: OverrideForm, key: KeyEvent) -> Option<Command> {
        let mut command = None;
        match form.stage.clone() {
            FormStage::Editing { .. } => {
                let fields = form.fields.len() + usize::from(form.force_allowed);
                match key.code {
                    KeyCode::Esc => return None,
                    KeyCode::Tab | KeyCode::Down => form.focus = (form.focus + 1) % fields,
                    KeyCode::BackTab | KeyCode::Up => {
                        form.focus = (form.focus + fields - 1) % fields
                    }
                    KeyCode::Enter => {
                        form.stage = match self.override_request(&form) {
                            Ok(request) => FormStage::Confirm(request),
                            Err(error) => FormStage::Editing { error: Some(error) },
                        }
                    }
                    KeyCode::Char(' ') if form.focus == form.fields.len() => {
                        form.force = !form.force
                    }
                    _ if form.focus < form.fields.len() => {
                        edit(&mut form.fields[form.focus], &key);
                        form.stage = FormStage::Editing { error: None };
                    }
                    _ => {}
                }
            }
            FormStage::Confirm(request) => match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => {
                    form.stage = FormStage::Applying(request.clone());
                    command = Some(Command::CreateOverride(request));
                }
                KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc => {
                    form.stage = FormStage::Editing { error: None }
                }
                _ => {}
            },
            FormStage::Applying(_) => {
                if key.code == KeyCode::Esc {
                    return None;
                }
            }
        }
        self.modal = Some(Modal::Override(Box::new(form)));
        command
    }

    /// The request the form describes, or what is wrong with it.
    pub fn override_request(&self, form: &OverrideForm) -> Result<OverrideRequest, String> {
        let [price, store, channel, expires, reason] = &form.fields;
        let price_minor = format::parse_price(price, &form.currency)?;
        let lasts_ms = format::parse_duration_ms(expires)?;
        if lasts_ms > OVERRIDE_MAX_MS {
            return Err("an override lasts at most 30 days".to_owned());
        }
        if reason.trim().is_empty() {
            return Err("say why (reason)".to_owned());
        }
        if let Some(floor) = form.floor_minor.filter(|floor| price_minor < *floor) {
            if !form.force_allowed {
                return Err(format!(
                    "below the floor ({}): only an admin can force it",
                    format::money(floor, &form.currency)
                ));
            }
            if !form.force {
                return Err(format!(
                    "below the floor ({}): tick force to pin it anyway",
                    format::money(floor, &form.currency)
                ));
            }
        }
        let optional = |text: &String| Some(text.trim().to_owned()).filter(|t| !t.is_empty());
        Ok(OverrideRequest {
            sku: form.sku.clone(),
            store: optional(store),
            channel: optional(channel),
            price_minor,
            currency: form.currency.clone(),
            expires_at_ms: self.now_ms + lasts_ms,
            reason: reason.trim().to_owned(),
            force: form.force,
        })
    }

    fn on_end_override_key(
        &mut self,
        mut dialog: EndOverrideDialog,
        key: KeyEvent,
    ) -> Option<Command> {
        if key.code == KeyCode::Esc {
            return None;
        }
        let d = &mut dialog;
        let command = match reason_then_yes(
            (&mut d.reason, &mut d.confirming),
            (&mut d.applying, &mut d.error),
            &key,
        ) {
            ReasonKey::Close => return None,
            ReasonKey::Keep => None,
            ReasonKey::Confirmed => Some(Command::RemoveOverride {
                id: dialog.target.id,
                reason: dialog.reason.trim().to_owned(),
            }),
        };
        self.modal = Some(Modal::EndOverride(dialog));
        command
    }
}

impl App {
    fn on_decide_key(&mut self, mut dialog: DecideDialog, key: KeyEvent) -> Option<Command> {
        if key.code == KeyCode::Esc {
            return None;
        }
        let d = &mut dialog;
        let command = match reason_then_yes(
            (&mut d.reason, &mut d.confirming),
            (&mut d.applying, &mut d.error),
            &key,
        ) {
            ReasonKey::Close => return None,
            ReasonKey::Keep => None,
            ReasonKey::Confirmed => Some(Command::Decide {
                sku: dialog.target.sku.clone(),
                request: ApprovalRequest {
                    approve: dialog.approve,
                    reason: dialog.reason.trim().to_owned(),
                },
            }),
        };
        self.modal = Some(Modal::Decide(dialog));
        command
    }
}

/// What a key did in a "type a reason, Enter, then y/n" dialog.
enum ReasonKey {
    /// `n`: the dialog closes.
    Close,
    /// Typing, or a key that means nothing here.
    Keep,
    /// `y`: the dialog is now applying; the caller sends its command.
    Confirmed,
}

/// The keys of a "type a reason, Enter, then y/n" dialog (ending an override,
/// deciding a suggestion), over its `(reason, confirming)` and `(applying, error)`.
fn reason_then_yes(
    (reason, confirming): (&mut String, &mut bool),
    (applying, error): (&mut bool, &mut Option<String>),
    key: &KeyEvent,
) -> ReasonKey {
    if *applying {
        return ReasonKey::Keep;
    }
    if *confirming {
        return match key.code {
            KeyCode::Char('y') | KeyCode::Char('Y') => {
                *applying = true;
                ReasonKey::Confirmed
            }
            KeyCode::Char('n') | KeyCode::Char('N') => ReasonKey::Close,
            _ => ReasonKey::Keep,
        };
    }
    match key.code {
        KeyCode::Enter if !reason.trim().is_empty() => {
            *confirming = true;
            *error = None;
        }
        _ => edit(reason, key),
    }
    ReasonKey::Keep
}

/// Line editing: characters, Backspace, Ctrl-U to clear.
fn edit(input: &mut String, key: &KeyEvent) {
    match key.code {
        KeyCode::Backspace => {
            input.pop();
        }
        KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => input.clear(),
        KeyCode::Char(c)
            if !key
                .modifiers
                .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT) =>
        {
            input.push(c)
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
