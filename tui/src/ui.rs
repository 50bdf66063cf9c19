//! Drawing: a function of [`App`] only. Nothing here changes state or reads the clock
//! (times are shown relative to `App::now_ms`), so a frame is reproducible.

use edgeprice_schemas::admin::{Metrics, SkuRow, Switch};
use ratatui::layout::{Alignment, Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{
    Block, Borders, Cell, Clear, Paragraph, Row, Sparkline, Table, TableState, Wrap,
};
use ratatui::Frame;

use crate::app::{
    self, App, Connection, FormStage, Level, Modal, Panel, SwitchStage, Tab, OVERRIDE_FIELDS,
};
use crate::format;
use crate::keymap;

/// Colours of the console; chosen once at start (`--theme`, `NO_COLOR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Theme {
    pub accent: Color,
    pub danger: Color,
    pub good: Color,
    pub warn: Color,
    /// Secondary text.
    pub dim: Style,
    /// The selected row.
    pub highlight: Style,
    /// No colour at all: emphasis by bold and reverse video only.
    pub mono: bool,
}

impl Theme {
    /// For dark terminal backgrounds (the default).
    pub const DARK: Theme = Theme {
        accent: Color::Cyan,
        danger: Color::Red,
        good: Color::Green,
        warn: Color::Yellow,
        dim: Style::new().fg(Color::DarkGray),
        highlight: Style::new().bg(Color::DarkGray),
        mono: false,
    };
    /// For light terminal backgrounds.
    pub const LIGHT: Theme = Theme {
        accent: Color::Blue,
        danger: Color::Red,
        good: Color::Green,
        warn: Color::Magenta,
        dim: Style::new().fg(Color::DarkGray),
        highlight: Style::new().bg(Color::Gray),
        mono: false,
    };
    /// No colour (`NO_COLOR`, or terminals that render colour badly).
    pub const MONO: Theme = Theme {
        accent: Color::Reset,
        danger: Color::Reset,
        good: Color::Reset,
        warn: Color::Reset,
        dim: Style::new(),
        highlight: Style::new().add_modifier(Modifier::REVERSED),
        mono: true,
    };

    /// `dark`, `light` or `mono`.
    pub fn named(name: &str) -> Option<Theme> {
        match name {
            "dark" => Some(Theme::DARK),
            "light" => Some(Theme::LIGHT),
            "mono" => Some(Theme::MONO),
            _ => None,
        }
    }

    /// A label set off by its background colour.
    fn badge(&self, color: Color) -> Style {
        if self.mono {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new().fg(Color::Black).bg(color)
        }
    }
}

static THEME: std::sync::OnceLock<Theme> = std::sync::OnceLock::new();

/// Chooses the theme; only the first call counts (it is process-wide).
pub fn set_theme(theme: Theme) {
    let _ = THEME.set(theme);
}

fn theme() -> &'static Theme {
    THEME.get_or_init(|| Theme::DARK)
}

/// Draws the whole screen.
pub fn render(app: &App, frame: &mut Frame) {
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    render_header(app, frame, header);
    match app.tab {
        Tab::Dashboard => render_dashboard(app, frame, body),
        Tab::Skus => match &app.detail {
            Some(_) => render_detail(app, frame, body),
            None => render_skus(app, frame, body),
        },
        Tab::Switches => render_switches(app, frame, body),
        Tab::Overrides => render_overrides(app, frame, body),
        Tab::Activity => render_activity(app, frame, body),
        Tab::Approvals => render_approvals(app, frame, body),
    }
    render_footer(app, frame, footer);
    match &app.modal {
        None => {}
        Some(Modal::Help { scroll }) => render_help(app, frame, *scroll),
        Some(Modal::Palette { input, error }) => render_palette(app, frame, input, error),
        Some(Modal::Switch(dialog)) => render_switch_dialog(frame, dialog),
        Some(Modal::Override(form)) => render_override_form(app, frame, form),
        Some(Modal::EndOverride(dialog)) => render_end_override(app, frame, dialog),
        Some(Modal::Decide(dialog)) => render_decide(app, frame, dialog),
        Some(Modal::Record {
            title,
            lines,
            scroll,
        }) => render_record(frame, title, lines, *scroll),
    }
}

fn render_header(app: &App, frame: &mut Frame, area: Rect) {
    let mut spans = vec![Span::styled(
        " edgeprice ",
        theme().badge(theme().accent).bold(),
    )];
    for (i, tab) in Tab::ALL.iter().enumerate() {
        spans.push(Span::raw(" "));
        let mut text = format!("{} {}", i + 1, tab.title());
        if *tab == Tab::Approvals && !app.approvals.is_empty() {
            text.push_str(&format!(" ({})", app.approvals.len()));
        }
        spans.push(if *tab == app.tab {
            Span::styled(text, Style::new().fg(theme().accent).bold().reversed())
        } else {
            Span::raw(text)
        });
    }
    frame.render_widget(Line::from(spans), area);
    let used: usize = Tab::ALL.iter().map(|t| t.title().len() + 3).sum::<usize>() + 16;
    if (area.width as usize) > used + app.url.len() + 2 {
        frame.render_widget(
            Paragraph::new(Span::styled(format!("{} ", app.url), theme().dim))
                .alignment(Alignment::Right),
            area,
        );
    }
}

fn render_footer(app: &App, frame: &mut Frame, area: Rect) {
    let mut spans = Vec::new();
    match &app.connection {
        Connection::Connecting => {
            spans.push(Span::styled("◌ connecting…", Style::new().fg(theme().warn)))
        }
        Connection::Up { .. } => {
            spans.push(Span::styled("● connected", Style::new().fg(theme().good)))
        }
        Connection::Down {
            error,
            attempt,
            retry_at_ms,
        } => {
            let retry = (*retry_at_ms - app.now_ms).max(0);
            spans.push(Span::styled(
                format!(
                    "✖ disconnected, retry {} in {} ({error})",
                    attempt,
                    format::span(retry)
                ),
                Style::new().fg(theme().danger).bold(),
            ));
        }
    }
    let sep = || Span::styled(" · ", theme().dim);
    if let Some(who) = &app.whoami {
        spans.push(sep());
        spans.push(Span::raw(format!("{} ({})", who.name, who.role)));
    }
    spans.push(sep());
    spans.push(Span::raw(format!(
        "every {}",
        format::span(app.refresh_ms as i64)
    )));
    if app.frozen {
        spans.push(sep());
        spans.push(Span::styled(
            format!("FROZEN ({} held)", app.held_back),
            theme().badge(theme().warn).bold(),
        ));
    }
    if app.is_read_only() {
        spans.push(sep());
        spans.push(Span::styled(
            "READ-ONLY",
            theme().badge(theme().accent).bold(),
        ));
    }
    match app.current_status() {
        Some(status) => {
            let color = match status.level {
                Level::Info => theme().accent,
                Level::Done => theme().good,
                Level::Error => theme().danger,
            };
            spans.push(Span::styled(" │ ", theme().dim));
            spans.push(Span::styled(status.text.clone(), Style::new().fg(color)));
        }
        None => {
            spans.push(Span::styled(" │ ", theme().dim));
            spans.push(Span::styled(
                "? help  : commands  p freeze  q quit",
                theme().dim,
            ));
        }
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn panel(title: &str) -> Block<'_> {
    Block::bordered()
        .title(Span::styled(
            format!(" {title} "),
            Style::new().fg(theme().accent).bold(),
        ))
        .border_style(theme().dim)
}

/// A panel whose last fetch failed says so in its title.
fn panel_with_error<'a>(app: &App, title: &'a str, which: Panel) -> Block<'a> {
    let block = panel(title);
    match app.panel_errors.get(&which) {
        Some(error) => block.title(Span::styled(
            format!(" ✖ {error} "),
            Style::new().fg(theme().danger),
        )),
        None => block,
    }
}

fn waiting(app: &App) -> Paragraph<'static> {
    let text = match &app.connection {
        Connection::Down { .. } => "no data: the control plane is unreachable",
        _ => "waiting for the first reading…",
    };
    Paragraph::new(Span::styled(text, theme().dim))
}

// ---------------------------------------------------------------- dashboard

fn render_dashboard(app: &App, frame: &mut Frame, area: Rect) {
    let row_height: u16 = match area.height {
        0..=25 => 1,
        26..=39 => 2,
        _ => 3,
    };
    let live_height = 7 * row_height + 2;
    let [top, bottom] =
        Layout::vertical([Constraint::Length(live_height), Constraint::Min(0)]).areas(area);
    let [live, state] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(top);
    let [margins, alerts] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(bottom);

    let block = panel("Live");
    let inner = block.inner(live);
    frame.render_widget(block, live);
    match &app.metrics {
        None => frame.render_widget(waiting(app), inner),
        Some(metrics) => render_live_rows(app, metrics, frame, inner, row_height),
    }

    let block = panel("Checkout · pipeline · edges");
    let inner = block.inner(state);
    frame.render_widget(block, state);
    match &app.metrics {
        None => frame.render_widget(waiting(app), inner),
        Some(metrics) => frame.render_widget(
            Paragraph::new(system_lines(
                metrics,
                inner.height as usize,
                inner.width as usize,
            ))
            .wrap(Wrap { trim: false }),
            inner,
        ),
    }

    let block = panel("Margin distribution (SKUs by margin %)");
    let inner = block.inner(margins);
    frame.render_widget(block, margins);
    match &app.metrics {
        Some(metrics) if !metrics.margin_histogram.is_empty() => {
            render_margins(metrics, frame, inner)
        }
        Some(_) => frame.render_widget(
            Paragraph::new(Span::styled("no margins yet", theme().dim)),
            inner,
        ),
        None => frame.render_widget(waiting(app), inner),
    }

    render_alert_list(app, frame, alerts);
}

fn render_live_rows(app: &App, metrics: &Metrics, frame: &mut Frame, area: Rect, height: u16) {
    let history = &app.history;
    let currency = metrics
        .revenue_per_min
        .first()
        .map(|a| a.currency.as_str())
        .unwrap_or("");
    let revenue = metrics
        .revenue_per_min
        .iter()
        .map(|a| format::money(a.minor, &a.currency))
        .collect::<Vec<_>>()
        .join(" + ");
    let oversell = metrics.checkout.oversell;
    let rows: [(&str, &std::collections::VecDeque<u64>, String, Color); 7] = [
        (
            "edge req/s",
            &history.edge_rps,
            format::rate(app::total_rps(metrics)),
            theme().accent,
        ),
        (
            "edge p99",
            &history.edge_p99_us,
            format::micros(app::worst_p99_us(metrics)),
            theme().accent,
        ),
        (
            "decisions/s",
            &history.decisions,
            format::rate(metrics.pipeline.decisions_per_s),
            theme().accent,
        ),
        (
            "feed lag",
            &history.feed_lag_ms,
            format::span(app::worst_feed_lag_ms(metrics)),
            if app::worst_feed_lag_ms(metrics) > 60_000 {
                theme().warn
            } else {
                theme().accent
            },
        ),
        (
            "revenue/min",
            &history.revenue,
            if revenue.is_empty() {
                format!("0 {currency}").trim_end().to_owned()
            } else {
                revenue
            },
            theme().good,
        ),
        (
            "oversell",
            &history.oversell,
            format::thousands(oversell),
            if oversell > 0 {
                theme().danger
            } else {
                theme().good
            },
        ),
        (
            "backlog",
            &history.backlog,
            format::thousands(metrics.pipeline.backlog),
            theme().accent,
        ),
    ];
    let areas = Layout::vertical(vec![Constraint::Length(height); rows.len()]).split(area);
    for ((label, series, value, color), row) in rows.iter().zip(areas.iter()) {
        let [label_area, spark_area, value_area] = Layout::horizontal([
            Constraint::Length(11),
            Constraint::Min(4),
            Constraint::Length(16),
        ])
        .spacing(1)
        .areas(*row);
        frame.render_widget(Span::raw(*label), label_area);
        let width = spark_area.width as usize;
        let tail: Vec<u64> = series
            .iter()
            .skip(series.len().saturating_sub(width))
            .copied()
            .collect();
        frame.render_widget(
            Sparkline::default()
                .data(&tail)
                .style(Style::new().fg(*color)),
            spark_area,
        );
        frame.render_widget(
            Paragraph::new(Span::styled(value.clone(), Style::new().fg(*color).bold()))
                .alignment(Alignment::Right),
            value_area,
        );
    }
}

/// The checkout, pipeline and edge reading: the essentials, then as much detail as
/// `room` lines of `width` columns hold.
fn system_lines(metrics: &Metrics, room: usize, width: usize) -> Vec<Line<'static>> {
    let checkout = &metrics.checkout;
    let pipeline = &metrics.pipeline;
    let label = |text: &str| Span::styled(format!("{text} "), theme().dim);
    let mut lines = vec![
        Line::from(vec![
            label("checkout"),
            if checkout.open {
                Span::styled("OPEN", Style::new().fg(theme().good).bold())
            } else {
                Span::styled("CLOSED", Style::new().fg(theme().danger).bold())
            },
            label("  oversell"),
            Span::styled(
                format::thousands(checkout.oversell),
                Style::new()
                    .fg(if checkout.oversell > 0 {
                        theme().danger
                    } else {
                        theme().good
                    })
                    .bold(),
            ),
        ]),
        Line::from(vec![
            label("orders"),
            Span::raw(format::thousands(checkout.orders_total)),
            label("  reservations"),
            Span::raw(format::thousands(checkout.reservations_active)),
        ]),
    ];
    let sagas = if checkout.sagas.is_empty() {
        "none".to_owned()
    } else {
        checkout
            .sagas
            .iter()
            .map(|(state, n)| format!("{state} {}", format::thousands(*n)))
            .collect::<Vec<_>>()
            .join(" · ")
    };
    lines.push(Line::from(vec![label("sagas"), Span::raw(sagas)]));
    lines.push(Line::from(vec![
        label("pipeline"),
        if pipeline.paused {
            Span::styled("PAUSED", Style::new().fg(theme().danger).bold())
        } else {
            Span::styled("RUNNING", Style::new().fg(theme().good).bold())
        },
        label("  version"),
        Span::raw(format::thousands(pipeline.version)),
    ]));
    let switches = metrics.kill_switches_active;
    lines.push(Line::from(vec![
        label("switches"),
        Span::styled(
            format!("{switches} engaged"),
            if switches > 0 {
                Style::new().fg(theme().danger).bold()
            } else {
                Style::new().fg(theme().good)
            },
        ),
        label("  alerts/h"),
        Span::raw(metrics.alerts_last_hour.to_string()),
    ]));
    let reachable = metrics.edges.iter().filter(|e| e.reachable).count();
    lines.push(Line::from(vec![
        label("edges"),
        Span::styled(
            format!("{reachable}/{} reachable", metrics.edges.len()),
            if reachable < metrics.edges.len() {
                Style::new().fg(theme().danger).bold()
            } else {
                Style::new().fg(theme().good)
            },
        ),
    ]));
    let mut extras: Vec<Vec<Line<'static>>> = vec![vec![Line::from(vec![
        label("events"),
        Span::raw(format::rate(pipeline.events_per_s)),
        label("  decisions"),
        Span::raw(format::thousands(pipeline.decisions_total)),
        label("  backlog"),
        Span::raw(format::thousands(pipeline.backlog)),
    ])]];
    if !pipeline.stage_p99_us.is_empty() {
        let mut block = vec![Line::from(label("stage p99"))];
        block.extend(flow(
            pipeline
                .stage_p99_us
                .iter()
                .map(|(stage, us)| format!("{stage} {}", format::micros(*us))),
            width,
        ));
        extras.push(block);
    }
    if !pipeline.feed_lag_ms.is_empty() {
        let mut block = vec![Line::from(label("feed lag"))];
        block.extend(flow(
            pipeline
                .feed_lag_ms
                .iter()
                .map(|(feed, ms)| format!("{feed} {}", format::span(*ms))),
            width,
        ));
        extras.push(block);
    }
    extras.push(vec![Line::from(vec![
        label("dead letters"),
        Span::raw(format::thousands(pipeline.dead_letters_total)),
    ])]);
    for edge in &metrics.edges {
        let mut block = vec![Line::from(vec![
            Span::raw(format!("  {} ", edge.name)),
            Span::styled(
                if edge.reachable { "up" } else { "DOWN" },
                Style::new().fg(if edge.reachable {
                    theme().good
                } else {
                    theme().danger
                }),
            ),
        ])];
        block.extend(flow(
            [
                format!("v{}", edge.snapshot_version),
                format!("age {}", format::span(edge.snapshot_age_ms)),
                format::rate(edge.requests_per_s),
                format!("p50 {}", format::micros(edge.p50_us)),
                format!("p99 {}", format::micros(edge.p99_us)),
            ]
            .into_iter(),
            width,
        ));
        extras.push(block);
    }
    extras.push(vec![Line::from(vec![
        label("read at"),
        Span::raw(format!("{} UTC", format::clock(metrics.at_ms))),
    ])]);
    for block in extras {
        if lines.len() + block.len() > room {
            break;
        }
        lines.extend(block);
    }
    lines
}

/// Items joined by ` · ` into indented lines no wider than `width`.
fn flow(items: impl Iterator<Item = String>, width: usize) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let mut current = String::from("  ");
    for item in items {
        let needed = if current.trim().is_empty() {
            item.chars().count()
        } else {
            item.chars().count() + 3
        };
        if current.chars().count() + needed > width && !current.trim().is_empty() {
            lines.push(Line::from(std::mem::replace(
                &mut current,
                String::from("  "),
            )));
        }
        if !current.trim().is_empty() {
            current.push_str(" · ");
        }
        current.push_str(&item);
    }
    if !current.trim().is_empty() {
        lines.push(Line::from(current));
    }
    lines
}

fn render_margins(metrics: &Metrics, frame: &mut Frame, area: Rect) {
    let buckets = &metrics.margin_histogram;
    let rows = (area.height as usize).max(1);
    // Neighbouring buckets merge until one row per bucket fits.
    let per_row = buckets.len().div_ceil(rows).max(1);
    let merged: Vec<(i64, i64, u64)> = buckets
        .chunks(per_row)
        .map(|chunk| {
            (
                chunk[0].lo_bp,
                chunk[chunk.len() - 1].hi_bp,
                chunk.iter().map(|b| b.skus).sum(),
            )
        })
        .collect();
    let most = merged.iter().map(|(_, _, n)| *n).max().unwrap_or(0).max(1);
    let bar_room = (area.width as usize).saturating_sub(12 + 7).max(1);
    let lines: Vec<Line<'_>> = merged
        .iter()
        .map(|(lo, hi, skus)| {
            let color = if *hi <= 0 {
                theme().danger
            } else if *lo < 1_000 {
                theme().warn
            } else {
                theme().good
            };
            Line::from(vec![
                Span::styled(
                    format!("{:>11} ", bucket_label(*lo, *hi)),
                    Style::new().fg(color),
                ),
                Span::styled(bar(*skus, most, bar_room), Style::new().fg(color)),
                Span::raw(format!(" {}", short_count(*skus))),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), area);
}

/// A horizontal bar of `value / max` of `width` cells, in eighths.
fn bar(value: u64, max: u64, width: usize) -> String {
    const EIGHTHS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    let eighths = (value as u128 * width as u128 * 8 / max.max(1) as u128) as usize;
    let mut out = "█".repeat(eighths / 8);
    if eighths % 8 > 0 {
        out.push(EIGHTHS[eighths % 8]);
    }
    out
}

/// `[lo, hi)` in percent: `30…36%`; open ends read `<0%`, `≥60%`.
fn bucket_label(lo_bp: i64, hi_bp: i64) -> String {
    let pct = |bp: i64| {
        if bp % 100 == 0 {
            format!("{}", bp / 100)
        } else {
            format!("{:.1}", bp as f64 / 100.0)
        }
    };
    if lo_bp <= -100_000 {
        format!("<{}%", pct(hi_bp))
    } else if hi_bp >= 100_000 {
        format!("≥{}%", pct(lo_bp))
    } else {
        format!("{}…{}%", pct(lo_bp), pct(hi_bp))
    }
}

fn short_count(n: u64) -> String {
    if n < 1_000 {
        n.to_string()
    } else if n < 10_000 {
        format!("{:.1}k", n as f64 / 1_000.0)
    } else {
        format!("{}k", n / 1_000)
    }
}

fn render_alert_list(app: &App, frame: &mut Frame, area: Rect) {
    let block = panel_with_error(app, "Alerts", Panel::Alerts);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if app.alerts.is_empty() {
        if app.metrics.is_none() {
            frame.render_widget(waiting(app), inner);
        } else {
            frame.render_widget(
                Paragraph::new(Span::styled("no alerts", theme().dim)),
                inner,
            );
        }
        return;
    }
    // Narrow: the message goes on its own line so that it is not cut off.
    let narrow = inner.width < 70;
    let mut lines: Vec<Line<'_>> = Vec::new();
    for alert in &app.alerts {
        let head = vec![
            Span::styled(format!("{} ", format::clock(alert.at_ms)), theme().dim),
            Span::styled(format!("{} ", alert.kind), alert_style(&alert.kind)),
        ];
        let sku = match &alert.sku {
            Some(sku) => format!("{sku} "),
            None => String::new(),
        };
        if narrow {
            lines.push(Line::from(head));
            lines.push(Line::from(format!("  {sku}{}", alert.message)));
        } else {
            let mut line = head;
            line.push(Span::raw(sku));
            line.push(Span::raw(alert.message.clone()));
            lines.push(Line::from(line));
        }
    }
    lines.truncate(inner.height as usize);
    frame.render_widget(Paragraph::new(lines), inner);
}

fn alert_style(kind: &str) -> Style {
    match kind {
        "inventory_exhausted" | "guardrail_conflict" | "oversell" => {
            Style::new().fg(theme().danger)
        }
        "override_expired" => theme().dim,
        _ => Style::new().fg(theme().warn),
    }
}

// ---------------------------------------------------------------- SKUs

fn render_skus(app: &App, frame: &mut Frame, area: Rect) {
    let [bar, table_area] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    let table = &app.skus;
    let query = &table.query;
    let mut spans = vec![Span::styled("filter ", theme().dim)];
    match &table.editing_filter {
        Some(text) => {
            spans.push(Span::styled(
                format!("{text}_"),
                theme().badge(theme().accent),
            ));
            spans.push(Span::styled("  Enter apply · Esc cancel", theme().dim));
        }
        None if query.q.is_empty() => spans.push(Span::styled("(none: / to filter)", theme().dim)),
        None => spans.push(Span::styled(
            query.q.clone(),
            Style::new().fg(theme().accent).bold(),
        )),
    }
    if let Some(page) = &table.page {
        let first = if page.skus.is_empty() {
            0
        } else {
            page.offset + 1
        };
        spans.push(Span::styled(
            format!(
                "  │ {}–{} of {} SKUs",
                format::thousands(first),
                format::thousands(page.offset + page.skus.len() as u64),
                format::thousands(page.total)
            ),
            theme().dim,
        ));
    }
    frame.render_widget(Line::from(spans), bar);

    let block = match &table.error {
        Some(error) => panel("SKUs").title(Span::styled(
            format!(" ✖ {error} "),
            Style::new().fg(theme().danger),
        )),
        None => panel("SKUs"),
    };
    let Some(page) = &table.page else {
        let inner = block.inner(table_area);
        frame.render_widget(block, table_area);
        let text = if table.error.is_some() {
            "could not load the SKU table"
        } else {
            "loading…"
        };
        frame.render_widget(Paragraph::new(Span::styled(text, theme().dim)), inner);
        return;
    };
    let wide = area.width >= 120;
    let arrow = if query.desc { "▼" } else { "▲" };
    let heading = |name: &str, sort: Option<&str>| {
        if sort == Some(query.sort.as_str()) {
            Cell::from(format!("{name} {arrow}")).style(Style::new().fg(theme().accent).bold())
        } else {
            Cell::from(name.to_owned()).style(Style::new().bold())
        }
    };
    let mut header = vec![heading("SKU", Some("sku"))];
    if wide {
        header.push(heading("Category", None));
    }
    header.extend([heading("Price", Some("price")), heading("Promo", None)]);
    if wide {
        header.push(heading("List", None));
    }
    header.extend([heading("Floor", None), heading("Margin", Some("margin"))]);
    header.push(heading("Stock", None));
    if wide {
        header.push(heading("Changed", Some("changed")));
    }
    header.push(heading("Flags", None));
    let rows: Vec<Row<'_>> = page
        .skus
        .iter()
        .map(|row| sku_row(app, row, wide))
        .collect();
    let widths: Vec<Constraint> = if wide {
        vec![
            Constraint::Length(14),
            Constraint::Length(14),
            Constraint::Length(12),
            Constraint::Length(12),
            Constraint::Length(12),
            Constraint::Length(12),
            Constraint::Length(9),
            Constraint::Length(7),
            Constraint::Length(12),
            Constraint::Min(6),
        ]
    } else {
        vec![
            Constraint::Length(12),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(9),
            Constraint::Length(6),
            Constraint::Min(5),
        ]
    };
    let widget = Table::new(rows, widths)
        .header(Row::new(header).style(Style::new().bold()))
        .block(with_key_hint(
            block,
            app,
            " Enter detail · s sort · S reverse ",
            " Enter detail · o override · f freeze · s sort ",
        ))
        .row_highlight_style(theme().highlight.bold())
        .highlight_symbol("›");
    let mut state = TableState::default().with_selected(Some(table.selected));
    frame.render_stateful_widget(widget, table_area, &mut state);
}

fn sku_row<'a>(app: &App, row: &'a SkuRow, wide: bool) -> Row<'a> {
    let money = |minor: i64| format::minor(minor, &row.currency);
    let mut cells = vec![Cell::from(row.sku.as_str())];
    if wide {
        cells.push(Cell::from(row.category.as_str()));
    }
    cells.push(Cell::from(money(row.price_minor)));
    cells.push(match row.promo_price_minor {
        Some(promo) => Cell::from(money(promo)).style(Style::new().fg(theme().good)),
        None => Cell::from("—").style(theme().dim),
    });
    if wide {
        cells.push(Cell::from(money(row.list_minor)));
    }
    cells.push(Cell::from(
        row.floor_minor.map(money).unwrap_or_else(|| "—".to_owned()),
    ));
    cells.push(match row.margin_bp {
        Some(bp) => Cell::from(format::percent_bp(bp)).style(if bp < 0 {
            Style::new().fg(theme().danger)
        } else {
            Style::new()
        }),
        None => Cell::from("—").style(theme().dim),
    });
    cells.push(Cell::from(
        row.on_hand
            .map(|n| n.to_string())
            .unwrap_or_else(|| "—".to_owned()),
    ));
    if wide {
        cells.push(Cell::from(format::ago(row.changed_at_ms, app.now_ms)));
    }
    cells.push(Cell::from(Line::from(flags(row))));
    Row::new(cells)
}

fn flags(row: &SkuRow) -> Vec<Span<'static>> {
    let mut spans = Vec::new();
    if row.frozen {
        spans.push(Span::styled("F", Style::new().fg(theme().accent).bold()));
    }
    if row.overridden {
        spans.push(Span::styled("O", Style::new().fg(theme().warn).bold()));
    }
    if row.needs_review {
        spans.push(Span::styled("R", Style::new().fg(theme().danger).bold()));
    }
    spans
}

fn render_detail(app: &App, frame: &mut Frame, area: Rect) {
    let Some(detail) = &app.detail else { return };
    let title = match &detail.data {
        Some(data) if !data.row.category.is_empty() => {
            format!("{} · {}", detail.sku, data.row.category)
        }
        _ => detail.sku.clone(),
    };
    let mut block = with_key_hint(
        panel(&title),
        app,
        " Esc back · ↑↓ scroll ",
        " Esc back · o override · f freeze · ↑↓ scroll ",
    );
    if let Some(error) = &detail.error {
        block = block.title(Span::styled(
            format!(" ✖ {error} "),
            Style::new().fg(theme().danger),
        ));
    }
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(data) = &detail.data else {
        frame.render_widget(Paragraph::new(Span::styled("loading…", theme().dim)), inner);
        return;
    };
    let row = &data.row;
    let money = |minor: i64| format::money(minor, &row.currency);
    let label = |text: &str| Span::styled(format!("{text} "), theme().dim);
    let yes_no = |flag: bool| if flag { "yes" } else { "no" };
    let mut lines = vec![
        Line::from(vec![
            label("price"),
            Span::styled(money(row.price_minor), Style::new().bold()),
            label("   list"),
            Span::raw(money(row.list_minor)),
            label("   promo"),
            Span::styled(
                row.promo_price_minor
                    .map(money)
                    .unwrap_or_else(|| "—".into()),
                Style::new().fg(theme().good),
            ),
        ]),
        Line::from(vec![
            label("floor"),
            Span::raw(row.floor_minor.map(money).unwrap_or_else(|| "—".into())),
            label("   cost"),
            Span::raw(data.cost_minor.map(money).unwrap_or_else(|| "—".into())),
            label("   margin"),
            Span::raw(
                row.margin_bp
                    .map(format::percent_bp)
                    .unwrap_or_else(|| "—".into()),
            ),
            label("   stock"),
            Span::raw(
                row.on_hand
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "—".into()),
            ),
        ]),
        Line::from(vec![
            label("changed"),
            Span::raw(format::ago(row.changed_at_ms, app.now_ms)),
            label("   frozen"),
            Span::raw(yes_no(row.frozen)),
            label("   overridden"),
            Span::raw(yes_no(row.overridden)),
            label("   needs review"),
            Span::raw(yes_no(row.needs_review)),
        ]),
        Line::default(),
        Line::from(Span::styled(
            "Why this price",
            Style::new().fg(theme().accent).bold(),
        )),
    ];
    if data.explanation.is_empty() {
        lines.push(Line::from(Span::styled(
            "  no decision recorded yet",
            theme().dim,
        )));
    }
    for reason in &data.explanation {
        lines.push(Line::from(format!("  • {reason}")));
    }
    lines.push(Line::default());
    lines.push(Line::from(Span::styled(
        "Overrides",
        Style::new().fg(theme().accent).bold(),
    )));
    if data.overrides.is_empty() {
        lines.push(Line::from(Span::styled("  none", theme().dim)));
    }
    for o in &data.overrides {
        lines.push(Line::from(format!(
            "  #{} {} at {}{} until {} UTC by {}: {}",
            o.id,
            scope(o.store.as_deref(), o.channel.as_deref()),
            format::money(o.price_minor, &o.currency),
            if o.below_floor { " (BELOW FLOOR)" } else { "" },
            format::date_time(o.expires_at_ms),
            o.by,
            o.reason
        )));
    }
    if let Some(decision) = &data.latest_decision {
        lines.push(Line::default());
        lines.push(Line::from(Span::styled(
            "Latest decision record",
            Style::new().fg(theme().accent).bold(),
        )));
        let pretty = serde_json::to_string_pretty(decision).unwrap_or_default();
        lines.extend(
            pretty
                .lines()
                .map(|l| Line::from(Span::styled(format!("  {l}"), theme().dim))),
        );
    }
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .scroll((detail.scroll, 0)),
        inner,
    );
}

fn scope(store: Option<&str>, channel: Option<&str>) -> String {
    format!(
        "{} / {}",
        store.unwrap_or("every store"),
        channel.unwrap_or("every channel")
    )
}

// ---------------------------------------------------------------- kill switches

fn switch_label(switch: &Switch) -> String {
    match switch {
        Switch::AllPromotions => "All promotions".to_owned(),
        Switch::Pipeline => "Automated pipeline".to_owned(),
        Switch::Checkout => "Checkout".to_owned(),
        Switch::FreezeSku { sku } => format!("Freeze {sku}"),
        Switch::Promotion { id } => format!("Promotion {id}"),
    }
}

fn switch_effect(switch: &Switch, engaged: bool) -> &'static str {
    match (switch, engaged) {
        (Switch::AllPromotions, true) => "every promotion OFF at every edge",
        (Switch::AllPromotions, false) => "promotions on",
        (Switch::Pipeline, true) => "pipeline PAUSED (edges keep serving)",
        (Switch::Pipeline, false) => "pipeline running",
        (Switch::Checkout, true) => "checkout CLOSED",
        (Switch::Checkout, false) => "checkout open",
        (Switch::FreezeSku { .. }, true) => "price FROZEN",
        (Switch::FreezeSku { .. }, false) => "",
        (Switch::Promotion { .. }, true) => "promotion OFF",
        (Switch::Promotion { .. }, false) => "",
    }
}

fn render_switches(app: &App, frame: &mut Frame, area: Rect) {
    let [hint, table_area] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    let text = if app.is_read_only() {
        "read-only: switches are shown, not changed"
    } else {
        "Enter engage/release · f freeze a SKU · each asks why, then shows its blast radius"
    };
    frame.render_widget(Span::styled(text, theme().dim), hint);
    let block = panel_with_error(app, "Kill switches (server state)", Panel::Switches);
    if app.switches.is_none() {
        let inner = block.inner(table_area);
        frame.render_widget(block, table_area);
        frame.render_widget(waiting(app), inner);
        return;
    }
    let wide = area.width >= 120;
    let rows: Vec<Row<'_>> = app
        .switch_rows()
        .into_iter()
        .map(|row| {
            let engaged = row.engaged.is_some();
            let state = if engaged {
                Cell::from("ENGAGED").style(Style::new().fg(theme().danger).bold())
            } else {
                Cell::from("off").style(theme().dim)
            };
            let mut effect = switch_effect(&row.switch, engaged).to_owned();
            if let Some(promotion) = row.promotion {
                let window = match (promotion.active, promotion.killed) {
                    (_, true) => "killed",
                    (true, false) => "active",
                    (false, false) => "inactive",
                };
                let skus = if promotion.skus == 0 {
                    "basket-wide".to_owned()
                } else {
                    format!("{} SKUs", format::thousands(promotion.skus))
                };
                effect = format!(
                    "{} · {} · {window} · {skus}",
                    promotion.name, promotion.kind
                );
            }
            let mut cells = vec![
                state,
                Cell::from(switch_label(&row.switch)),
                Cell::from(effect),
            ];
            let (since, by, reason) = match row.engaged {
                Some(e) => (
                    format::ago(e.since_ms, app.now_ms),
                    e.by.clone(),
                    e.reason.clone(),
                ),
                None => Default::default(),
            };
            cells.push(Cell::from(since));
            if wide {
                cells.push(Cell::from(by));
                cells.push(Cell::from(reason));
            }
            Row::new(cells)
        })
        .collect();
    let mut header = vec!["State", "Switch", "Effect", "Since"];
    let mut widths = vec![
        Constraint::Length(8),
        Constraint::Length(24),
        Constraint::Min(20),
        Constraint::Length(9),
    ];
    if wide {
        header.extend(["By", "Reason"]);
        widths.extend([Constraint::Length(12), Constraint::Length(30)]);
    }
    let widget = Table::new(rows, widths)
        .header(Row::new(header).style(Style::new().bold()))
        .block(block)
        .row_highlight_style(theme().highlight.bold())
        .highlight_symbol("›");
    let mut state = TableState::default().with_selected(Some(app.switch_selected));
    frame.render_stateful_widget(widget, table_area, &mut state);
}

/// A panel's key hint on its bottom border, the read-only one or the full one.
fn with_key_hint<'a>(block: Block<'a>, app: &App, read_only: &'a str, full: &'a str) -> Block<'a> {
    let hint = if app.is_read_only() { read_only } else { full };
    block.title_bottom(Line::from(Span::styled(hint, theme().dim)).right_aligned())
}

/// A panel with nothing to list: its border and one dim line.
fn render_empty(frame: &mut Frame, area: Rect, block: Block<'_>, text: &str) {
    let inner = block.inner(area);
    frame.render_widget(block, area);
    frame.render_widget(Paragraph::new(Span::styled(text, theme().dim)), inner);
}

// ---------------------------------------------------------------- overrides

fn render_overrides(app: &App, frame: &mut Frame, area: Rect) {
    let block = with_key_hint(
        panel_with_error(app, "Active overrides (server state)", Panel::Overrides),
        app,
        "",
        " d end the selected override · o on a SKU sets one ",
    );
    if app.overrides.is_empty() {
        render_empty(frame, area, block, "no active overrides");
        return;
    }
    let wide = area.width >= 120;
    let rows: Vec<Row<'_>> = app
        .overrides
        .iter()
        .map(|o| {
            let mut cells = vec![
                Cell::from(format!("#{}", o.id)),
                Cell::from(o.sku.as_str()),
                Cell::from(scope(o.store.as_deref(), o.channel.as_deref())),
                Cell::from(format::minor(o.price_minor, &o.currency)),
                if o.below_floor {
                    Cell::from("BELOW FLOOR").style(Style::new().fg(theme().danger).bold())
                } else {
                    Cell::from(
                        o.floor_minor
                            .map(|f| format::minor(f, &o.currency))
                            .unwrap_or_else(|| "—".into()),
                    )
                },
                Cell::from(format!("in {}", format::span(o.expires_at_ms - app.now_ms))),
            ];
            if wide {
                cells.push(Cell::from(o.by.as_str()));
                cells.push(Cell::from(o.reason.as_str()));
            }
            Row::new(cells)
        })
        .collect();
    let mut header = vec!["Id", "SKU", "Where", "Price", "Floor", "Expires"];
    let mut widths = vec![
        Constraint::Length(5),
        Constraint::Length(12),
        Constraint::Min(16),
        Constraint::Length(9),
        Constraint::Length(11),
        Constraint::Length(8),
    ];
    if wide {
        header.extend(["By", "Reason"]);
        widths.extend([Constraint::Length(12), Constraint::Length(36)]);
    }
    let widget = Table::new(rows, widths)
        .header(Row::new(header).style(Style::new().bold()))
        .block(block)
        .row_highlight_style(theme().highlight.bold())
        .highlight_symbol("›");
    let mut state = TableState::default().with_selected(Some(app.override_selected));
    frame.render_stateful_widget(widget, area, &mut state);
}

// ---------------------------------------------------------------- activity

fn render_activity(app: &App, frame: &mut Frame, area: Rect) {
    let [alerts, audit] =
        Layout::vertical([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(area);
    render_alert_list(app, frame, alerts);
    let block = panel_with_error(app, "Audit log (newest first)", Panel::Audit);
    let wide = area.width >= 120;
    let rows: Vec<Row<'_>> = app
        .audit
        .iter()
        .map(|row| {
            let mut cells = vec![
                Cell::from(row.seq.to_string()),
                Cell::from(format::clock(row.at_ms)),
                Cell::from(row.kind.as_str()).style(match row.kind.as_str() {
                    "decision" => theme().dim,
                    _ => Style::new().fg(theme().warn),
                }),
                Cell::from(row.actor.as_str()),
            ];
            if wide {
                cells.push(Cell::from(row.sku.as_deref().unwrap_or("")));
            }
            cells.push(Cell::from(row.summary.as_str()));
            Row::new(cells)
        })
        .collect();
    let mut header = vec!["Seq", "Time", "Kind", "Actor"];
    let mut widths = vec![
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(11),
        Constraint::Length(10),
    ];
    if wide {
        header.push("SKU");
        widths.push(Constraint::Length(12));
    }
    header.push("Summary");
    widths.push(Constraint::Min(10));
    let widget = Table::new(rows, widths)
        .header(Row::new(header).style(Style::new().bold()))
        .block(block)
        .row_highlight_style(theme().highlight)
        .highlight_symbol("›");
    let mut state = TableState::default().with_selected(Some(app.activity_selected));
    frame.render_stateful_widget(widget, audit, &mut state);
}

// ---------------------------------------------------------------- approvals

fn render_approvals(app: &App, frame: &mut Frame, area: Rect) {
    let block = with_key_hint(
        panel_with_error(
            app,
            "Price suggestions waiting for approval",
            Panel::Approvals,
        ),
        app,
        "",
        " a approve · x reject ",
    );
    if app.approvals.is_empty() {
        render_empty(frame, area, block, "nothing waits for approval");
        return;
    }
    let wide = area.width >= 120;
    let rows: Vec<Row<'_>> = app
        .approvals
        .iter()
        .map(|a| {
            let change_bp = if a.current_minor == 0 {
                0
            } else {
                (a.suggested_minor - a.current_minor) * 10_000 / a.current_minor
            };
            let mut cells = vec![
                Cell::from(a.sku.as_str()),
                Cell::from(format::minor(a.current_minor, &a.currency)),
                Cell::from(format::minor(a.suggested_minor, &a.currency)),
                Cell::from(format!(
                    "{}{}",
                    if change_bp > 0 { "+" } else { "" },
                    format::percent_bp(change_bp)
                ))
                .style(Style::new().fg(if change_bp < 0 {
                    theme().warn
                } else {
                    theme().accent
                })),
                Cell::from(a.reason_code.as_str()),
            ];
            if wide {
                cells.insert(1, Cell::from(a.category.as_str()));
                cells.push(Cell::from(format::ago(a.suggested_at_ms, app.now_ms)));
            }
            Row::new(cells)
        })
        .collect();
    let mut header = vec!["SKU", "Now", "Suggested", "Change", "Reason"];
    let mut widths = vec![
        Constraint::Length(13),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(8),
        Constraint::Min(12),
    ];
    if wide {
        header.insert(1, "Category");
        widths.insert(1, Constraint::Length(14));
        header.push("Since");
        widths.push(Constraint::Length(9));
    }
    let widget = Table::new(rows, widths)
        .header(Row::new(header).style(Style::new().bold()))
        .block(block)
        .row_highlight_style(theme().highlight.bold())
        .highlight_symbol("›");
    let mut state = TableState::default().with_selected(Some(app.approval_selected));
    frame.render_stateful_widget(widget, area, &mut state);
}

// ---------------------------------------------------------------- dialogs

/// Rows `lines` take in a dialog `width` wide (border included) once wrapped.
fn wrapped_height(lines: &[Line<'_>], width: u16) -> u16 {
    let inner = width.saturating_sub(2).max(1) as usize;
    // Word wrapping leaves rows short; assume up to 8 columns lost per row.
    let rows: usize = lines
        .iter()
        .map(|l| match l.width() {
            w if w <= inner => 1,
            w => w.div_ceil(inner.saturating_sub(8).max(1)),
        })
        .sum();
    rows as u16 + 2
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let [row] = Layout::vertical([Constraint::Length(height.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [cell] = Layout::horizontal([Constraint::Length(width.min(area.width))])
        .flex(Flex::Center)
        .areas(row);
    cell
}

fn dialog<'a>(title: String, danger: bool) -> Block<'a> {
    let color = if danger {
        theme().danger
    } else {
        theme().accent
    };
    Block::bordered()
        .borders(Borders::ALL)
        .border_style(Style::new().fg(color))
        .title(Span::styled(
            format!(" {title} "),
            Style::new().fg(color).bold(),
        ))
}

fn render_help(app: &App, frame: &mut Frame, scroll: u16) {
    let area = centered(frame.area(), 96, frame.area().height.saturating_sub(2));
    frame.render_widget(Clear, area);
    let block = dialog("Keys (↑↓ scroll · any other key closes)".to_owned(), false);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let mut lines = Vec::new();
    let mut last_scope = None;
    for (scope, keys, command, help) in keymap::help_lines(app.is_read_only()) {
        if last_scope != Some(scope) {
            if last_scope.is_some() {
                lines.push(Line::default());
            }
            lines.push(Line::from(Span::styled(
                scope.title(),
                Style::new().fg(theme().accent).bold(),
            )));
            last_scope = Some(scope);
        }
        lines.push(Line::from(vec![
            Span::styled(format!("  {keys:<14}"), Style::new().bold()),
            Span::styled(format!("{command:<20}"), Style::new().fg(theme().accent)),
            Span::raw(help),
        ]));
    }
    if app.is_read_only() {
        lines.push(Line::default());
        lines.push(Line::from(Span::styled(
            "read-only: actions that change the server are not available",
            theme().dim,
        )));
    }
    frame.render_widget(Paragraph::new(lines).scroll((scroll, 0)), inner);
}

fn render_record(frame: &mut Frame, title: &str, lines: &[String], scroll: u16) {
    let area = centered(frame.area(), 100, frame.area().height.saturating_sub(2));
    frame.render_widget(Clear, area);
    let block = dialog(format!("{title} (↑↓ scroll · any other key closes)"), false);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let text: Vec<Line<'_>> = lines.iter().map(|l| Line::from(l.as_str())).collect();
    frame.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: false })
            .scroll((scroll, 0)),
        inner,
    );
}

fn render_palette(app: &App, frame: &mut Frame, input: &str, error: &Option<String>) {
    let full = frame.area();
    let matches = app.palette_matches(input);
    let height = (matches.len() as u16 + 4)
        .min(full.height.saturating_sub(2))
        .max(5);
    let width = full.width.saturating_sub(4).min(72);
    let [_, row] =
        Layout::vertical([Constraint::Length(2), Constraint::Length(height)]).areas(full);
    let [area] = Layout::horizontal([Constraint::Length(width)])
        .flex(Flex::Center)
        .areas(row);
    frame.render_widget(Clear, area);
    let block = dialog(
        "command (Tab completes · Enter runs · Esc closes)".to_owned(),
        false,
    );
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let mut lines = vec![Line::from(vec![
        Span::styled(":", Style::new().fg(theme().accent).bold()),
        Span::raw(format!("{input}_")),
    ])];
    if let Some(error) = error {
        lines.push(Line::from(Span::styled(
            error.clone(),
            Style::new().fg(theme().danger),
        )));
    }
    for binding in matches {
        let name = match binding.argument {
            Some(arg) => format!("{} {arg}", binding.command.unwrap_or_default()),
            None => binding.command.unwrap_or_default().to_owned(),
        };
        lines.push(Line::from(vec![
            Span::styled(format!("  {name:<20}"), Style::new().fg(theme().accent)),
            Span::styled(binding.help, theme().dim),
        ]));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

fn input_line(label: &str, value: &str, focused: bool) -> Line<'static> {
    let style = if focused {
        theme().badge(theme().accent)
    } else {
        Style::new().add_modifier(Modifier::UNDERLINED)
    };
    Line::from(vec![
        Span::styled(
            format!("{} {label:<11}", if focused { "›" } else { " " }),
            if focused {
                Style::new().fg(theme().accent).bold()
            } else {
                theme().dim
            },
        ),
        Span::styled(format!("{value}{}", if focused { "_" } else { "" }), style),
    ])
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!(
        "{} {}",
        format::thousands(n),
        if n == 1 { one } else { many }
    )
}

fn radius_line(skus: u64, promotions: u64, edges: u64) -> Line<'static> {
    Line::from(vec![
        Span::styled("blast radius: ", Style::new().bold()),
        Span::styled(
            format!(
                "{} · {} · {}",
                plural(skus, "SKU", "SKUs"),
                plural(promotions, "promotion", "promotions"),
                plural(edges, "edge", "edges"),
            ),
            Style::new().fg(theme().danger).bold(),
        ),
    ])
}

fn render_switch_dialog(frame: &mut Frame, dialog_state: &app::SwitchDialog) {
    let effect = switch_effect(&dialog_state.switch, true);
    let mut lines = Vec::new();
    if dialog_state.stage != SwitchStage::Sku && dialog_state.engage && !effect.is_empty() {
        lines.push(Line::from(Span::raw(format!("effect: {effect}"))));
    }
    if !dialog_state.engage {
        lines.push(Line::from(Span::raw(
            "releasing: the switch's effect ends at every edge",
        )));
    }
    let hint = |text: &str| Line::from(Span::styled(text.to_owned(), theme().dim));
    match &dialog_state.stage {
        SwitchStage::Sku => {
            lines.push(input_line("SKU", &dialog_state.sku_input, true));
            lines.push(Line::default());
            lines.push(hint("Enter next · Esc cancel"));
        }
        SwitchStage::Reason => {
            lines.push(input_line("reason", &dialog_state.reason, true));
            lines.push(Line::default());
            lines.push(hint("Enter check the blast radius (dry run) · Esc cancel"));
        }
        SwitchStage::Previewing => {
            lines.push(Line::from(format!("reason: {}", dialog_state.reason)));
            lines.push(Line::default());
            lines.push(hint("checking the blast radius with the server (dry run)…"));
        }
        SwitchStage::Confirm(radius) => {
            lines.push(Line::from(format!("reason: {}", dialog_state.reason)));
            lines.push(radius_line(radius.skus, radius.promotions, radius.edges));
            lines.push(Line::default());
            let verb = if dialog_state.engage {
                "engage"
            } else {
                "release"
            };
            lines.push(Line::from(vec![
                Span::styled(format!(" y: {verb} "), theme().badge(theme().danger).bold()),
                Span::raw("   n / Esc: cancel"),
            ]));
        }
        SwitchStage::Applying => {
            lines.push(Line::from(format!("reason: {}", dialog_state.reason)));
            lines.push(Line::default());
            lines.push(hint("sent; waiting for the server to acknowledge…"));
        }
        SwitchStage::Failed(error) => {
            lines.push(Line::from(Span::styled(
                format!("✖ {error}"),
                Style::new().fg(theme().danger).bold(),
            )));
            lines.push(Line::default());
            lines.push(hint("Enter try again · Esc close"));
        }
    }
    let area = centered(frame.area(), 70, wrapped_height(&lines, 70));
    frame.render_widget(Clear, area);
    let block = dialog(dialog_state.title(), true);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
}

fn render_override_form(app: &App, frame: &mut Frame, form: &app::OverrideForm) {
    let money = |minor: i64| format::money(minor, &form.currency);
    let mut lines = vec![Line::from(Span::styled(
        format!(
            "now {} · floor {}",
            money(form.current_minor),
            form.floor_minor.map(money).unwrap_or_else(|| "none".into())
        ),
        theme().dim,
    ))];
    match &form.stage {
        FormStage::Editing { error } => {
            for (i, label) in OVERRIDE_FIELDS.iter().enumerate() {
                let label = if i == 0 {
                    format!("{label} {}", form.currency)
                } else {
                    (*label).to_owned()
                };
                let placeholder = match i {
                    1 => "every store",
                    2 => "every channel",
                    _ => "",
                };
                let value = if form.fields[i].is_empty() && form.focus != i {
                    placeholder.to_owned()
                } else {
                    form.fields[i].clone()
                };
                lines.push(input_line(&label, &value, form.focus == i));
            }
            if form.force_allowed {
                let focused = form.focus == OVERRIDE_FIELDS.len();
                lines.push(Line::from(vec![
                    Span::styled(
                        format!("{} {:<11}", if focused { "›" } else { " " }, "force"),
                        if focused {
                            Style::new().fg(theme().accent).bold()
                        } else {
                            theme().dim
                        },
                    ),
                    Span::raw(if form.force {
                        "[x] below the floor (admin, audited)"
                    } else {
                        "[ ] below the floor (admin, audited)"
                    }),
                ]));
            }
            lines.push(Line::default());
            match error {
                Some(error) => lines.push(Line::from(Span::styled(
                    format!("✖ {error}"),
                    Style::new().fg(theme().danger).bold(),
                ))),
                None => lines.push(Line::from(Span::styled(
                    "Tab/↑↓ field · Space force · Enter review · Esc cancel",
                    theme().dim,
                ))),
            }
        }
        FormStage::Confirm(request) | FormStage::Applying(request) => {
            lines.push(Line::default());
            lines.push(Line::from(vec![
                Span::raw("pin "),
                Span::styled(request.sku.clone(), Style::new().bold()),
                Span::raw(" at "),
                Span::styled(money(request.price_minor), Style::new().bold()),
            ]));
            lines.push(Line::from(format!(
                "where: {}",
                scope(request.store.as_deref(), request.channel.as_deref())
            )));
            lines.push(Line::from(format!(
                "until: {} UTC ({} from now)",
                format::date_time(request.expires_at_ms),
                format::span(request.expires_at_ms - app.now_ms)
            )));
            lines.push(Line::from(format!("reason: {}", request.reason)));
            lines.push(radius_line(1, 0, app.edge_count() as u64));
            if request.force {
                lines.push(Line::from(Span::styled(
                    "FORCED BELOW THE FLOOR (audited as such)",
                    Style::new().fg(theme().danger).bold(),
                )));
            }
            lines.push(Line::default());
            if matches!(form.stage, FormStage::Applying(_)) {
                lines.push(Line::from(Span::styled(
                    "sent; waiting for the server to acknowledge…",
                    theme().dim,
                )));
            } else {
                lines.push(Line::from(vec![
                    Span::styled(" y: pin it ", theme().badge(theme().danger).bold()),
                    Span::raw("   n / Esc: back to the form"),
                ]));
            }
        }
    }
    let area = centered(frame.area(), 74, wrapped_height(&lines, 74));
    frame.render_widget(Clear, area);
    let block = dialog(format!("override the price of {}", form.sku), true);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    frame.render_widget(Paragraph::new(Text::from(lines)), inner);
}

fn render_end_override(app: &App, frame: &mut Frame, dialog_state: &app::EndOverrideDialog) {
    let target = &dialog_state.target;
    let lines = vec![
        Line::from(format!(
            "{} at {}; the pipeline's price comes back",
            scope(target.store.as_deref(), target.channel.as_deref()),
            format::money(target.price_minor, &target.currency)
        )),
        radius_line(1, 0, app.edge_count() as u64),
    ];
    render_reason_dialog(
        frame,
        format!("end override #{} on {}", target.id, target.sku),
        lines,
        (&dialog_state.reason, dialog_state.error.as_deref()),
        (dialog_state.confirming, dialog_state.applying),
        "end it",
    );
}

fn render_decide(app: &App, frame: &mut Frame, dialog_state: &app::DecideDialog) {
    let target = &dialog_state.target;
    let verb = if dialog_state.approve {
        "approve"
    } else {
        "reject"
    };
    let lines = vec![
        Line::from(format!(
            "{} → {} suggested ({})",
            format::money(target.current_minor, &target.currency),
            format::money(target.suggested_minor, &target.currency),
            target.reason_code
        )),
        if dialog_state.approve {
            radius_line(1, 0, app.edge_count() as u64)
        } else {
            Line::from(Span::styled("the price stays as it is", theme().dim))
        },
    ];
    render_reason_dialog(
        frame,
        format!("{verb} the price of {}", target.sku),
        lines,
        (&dialog_state.reason, dialog_state.error.as_deref()),
        (dialog_state.confirming, dialog_state.applying),
        verb,
    );
}

/// A "type a reason, Enter, then y/n" dialog: `lines`, then the reason (or its input),
/// the next step (`y: {yes}` once confirming) and the last error, drawn centred.
fn render_reason_dialog(
    frame: &mut Frame,
    title: String,
    mut lines: Vec<Line<'_>>,
    (reason, error): (&str, Option<&str>),
    (confirming, applying): (bool, bool),
    yes: &str,
) {
    if applying {
        lines.push(Line::from(format!("reason: {reason}")));
        lines.push(Line::from(Span::styled(
            "sent; waiting for the server to acknowledge…",
            theme().dim,
        )));
    } else if confirming {
        lines.push(Line::from(format!("reason: {reason}")));
        lines.push(Line::default());
        lines.push(Line::from(vec![
            Span::styled(format!(" y: {yes} "), theme().badge(theme().danger).bold()),
            Span::raw("   n / Esc: cancel"),
        ]));
    } else {
        lines.push(input_line("reason", reason, true));
        lines.push(Line::from(Span::styled(
            "Enter next · Esc cancel",
            theme().dim,
        )));
    }
    if let Some(error) = error {
        lines.push(Line::from(Span::styled(
            format!("✖ {error}"),
            Style::new().fg(theme().danger).bold(),
        )));
    }
    let area = centered(frame.area(), 70, wrapped_height(&lines, 70));
    frame.render_widget(Clear, area);
    let block = dialog(title, true);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
}

#[cfg(test)]
mod tests;
