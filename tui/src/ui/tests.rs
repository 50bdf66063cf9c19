//! Whole-screen snapshots (TestBackend + insta) at 80×24 and 160×48, and checks on
//! what a frame shows. All data is fixed (`fixtures`), so frames are reproducible.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use edgeprice_schemas::admin::{Role, Switch};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::render;
use crate::app::{App, Command, ConnectionEvent, Message};
use crate::fixtures::{self, NOW_MS};
use crate::keymap;

const SMALL: (u16, u16) = (80, 24);
const LARGE: (u16, u16) = (160, 48);

fn draw(app: &App, (width, height): (u16, u16)) -> TestBackend {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| render(app, frame)).unwrap();
    terminal.backend().clone()
}

/// The frame as plain text, one string per row.
fn text(app: &App, size: (u16, u16)) -> Vec<String> {
    let backend = draw(app, size);
    let buffer = backend.buffer();
    (0..buffer.area.height)
        .map(|y| {
            (0..buffer.area.width)
                .map(|x| buffer[(x, y)].symbol())
                .collect::<String>()
        })
        .collect()
}

fn screen(app: &App, size: (u16, u16)) -> String {
    text(app, size).join("\n")
}

fn press(app: &mut App, code: KeyCode) -> Option<Command> {
    app.update(Message::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}

fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        press(app, KeyCode::Char(c));
    }
}

fn app() -> App {
    fixtures::connected_app(Role::Admin, false)
}

fn with_skus(mut app: App) -> App {
    if let Some(Command::WatchSkus(query)) = press(&mut app, KeyCode::Char('2')) {
        let page = fixtures::sku_page(&query);
        app.update(Message::Skus {
            query,
            result: Ok(page),
        });
    }
    app
}

#[test]
fn dashboard() {
    let app = app();
    insta::assert_snapshot!("dashboard_80x24", draw(&app, SMALL));
    insta::assert_snapshot!("dashboard_160x48", draw(&app, LARGE));
}

#[test]
fn dashboard_shows_every_figure_the_issue_names() {
    let app = app();
    let large = screen(&app, LARGE);
    for label in [
        "edge req/s",
        "edge p99",
        "decisions/s",
        "feed lag",
        "revenue/min",
        "oversell",
        "Margin distribution",
        "sagas",
        "completed 1,204",
        "Alerts",
        "promotion_blocked",
        "● connected",
        "ops-anna (admin)",
    ] {
        assert!(large.contains(label), "160×48 lacks {label:?}:\n{large}");
    }
    let small = screen(&app, SMALL);
    for label in [
        "edge req/s",
        "edge p99",
        "decisions/s",
        "feed lag",
        "revenue/min",
        "oversell",
        "sagas",
    ] {
        assert!(small.contains(label), "80×24 lacks {label:?}:\n{small}");
    }
}

#[test]
fn dashboard_before_the_first_reading_and_while_disconnected() {
    let mut app = App::new(fixtures::URL, false, 1_000, NOW_MS);
    insta::assert_snapshot!("connecting_80x24", draw(&app, SMALL));
    app.update(Message::Connection(ConnectionEvent::Down {
        error: "cannot reach the control plane: connection refused".to_owned(),
        attempt: 4,
        retry_in_ms: 2_000,
    }));
    let small = screen(&app, SMALL);
    assert!(small.contains("✖ disconnected, retry 4 in 2s"), "{small}");
    insta::assert_snapshot!("disconnected_80x24", draw(&app, SMALL));
}

#[test]
fn sku_table() {
    let app = with_skus(app());
    insta::assert_snapshot!("skus_80x24", draw(&app, SMALL));
    insta::assert_snapshot!("skus_160x48", draw(&app, LARGE));
}

#[test]
fn sku_table_marks_the_sort_column_and_the_filter() {
    let mut app = with_skus(app());
    press(&mut app, KeyCode::Char('/'));
    type_text(&mut app, "snack");
    let editing = screen(&app, SMALL);
    assert!(editing.contains("filter snack_"), "{editing}");
    let Some(Command::WatchSkus(query)) = press(&mut app, KeyCode::Enter) else {
        panic!("filter should watch");
    };
    app.update(Message::Skus {
        query: query.clone(),
        result: Ok(fixtures::sku_page(&query)),
    });
    let Some(Command::WatchSkus(query)) = press(&mut app, KeyCode::Char('S')) else {
        panic!("reverse should watch");
    };
    app.update(Message::Skus {
        query: query.clone(),
        result: Ok(fixtures::sku_page(&query)),
    });
    let frame = screen(&app, SMALL);
    assert!(frame.contains("SKU ▼"), "{frame}");
    assert!(frame.contains("filter snack"), "{frame}");
    assert!(frame.contains("1–50 of 10,000 SKUs"), "{frame}");
}

#[test]
fn sku_detail_with_explanation() {
    let mut app = with_skus(app());
    press(&mut app, KeyCode::Enter);
    app.update(Message::Sku {
        sku: "SKU-0000001".to_owned(),
        result: Ok(fixtures::sku_detail(1)),
    });
    let frame = screen(&app, SMALL);
    assert!(frame.contains("Why this price"), "{frame}");
    assert!(frame.contains("competitor median 12.35 EUR"), "{frame}");
    insta::assert_snapshot!("detail_80x24", draw(&app, SMALL));
    insta::assert_snapshot!("detail_160x48", draw(&app, LARGE));
}

#[test]
fn kill_switch_panel() {
    let mut app = app();
    press(&mut app, KeyCode::Char('3'));
    let frame = screen(&app, LARGE);
    assert!(frame.contains("ENGAGED"), "{frame}");
    assert!(frame.contains("Freeze SKU-0000007"), "{frame}");
    assert!(frame.contains("supplier dispute"), "{frame}");
    assert!(frame.contains("Promotion flash-20"), "{frame}");
    insta::assert_snapshot!("switches_80x24", draw(&app, SMALL));
    insta::assert_snapshot!("switches_160x48", draw(&app, LARGE));
}

#[test]
fn kill_switch_confirmation_shows_the_blast_radius() {
    let mut app = app();
    press(&mut app, KeyCode::Char('3'));
    press(&mut app, KeyCode::Enter);
    type_text(&mut app, "flash sale misconfigured");
    let Some(Command::KillSwitch(request)) = press(&mut app, KeyCode::Enter) else {
        panic!("expected the dry run");
    };
    let previewing = screen(&app, SMALL);
    assert!(previewing.contains("dry run"), "{previewing}");
    app.update(Message::KillSwitch {
        request,
        result: Ok(fixtures::outcome(Switch::AllPromotions, true, true)),
    });
    let frame = screen(&app, SMALL);
    assert!(frame.contains("engage: all promotions off"), "{frame}");
    assert!(
        frame.contains("blast radius: 1,240 SKUs · 3 promotions · 2 edges"),
        "{frame}"
    );
    assert!(frame.contains("y: engage"), "{frame}");
    insta::assert_snapshot!("switch_confirm_80x24", draw(&app, SMALL));
    insta::assert_snapshot!("switch_confirm_160x48", draw(&app, LARGE));
}

#[test]
fn override_form_and_its_confirmation() {
    let mut app = with_skus(app());
    press(&mut app, KeyCode::Char('o'));
    insta::assert_snapshot!("override_form_80x24", draw(&app, SMALL));
    for _ in 0..4 {
        press(&mut app, KeyCode::Tab);
    }
    type_text(&mut app, "match competitor");
    press(&mut app, KeyCode::Enter);
    let frame = screen(&app, SMALL);
    assert!(
        frame.contains("blast radius: 1 SKU · 0 promotions · 2 edges"),
        "{frame}"
    );
    assert!(frame.contains("every store / every channel"), "{frame}");
    insta::assert_snapshot!("override_confirm_160x48", draw(&app, LARGE));
}

#[test]
fn overrides_and_activity() {
    let mut app = app();
    press(&mut app, KeyCode::Char('4'));
    let frame = screen(&app, LARGE);
    assert!(frame.contains("BELOW FLOOR"), "{frame}");
    insta::assert_snapshot!("overrides_80x24", draw(&app, SMALL));
    insta::assert_snapshot!("overrides_160x48", draw(&app, LARGE));
    press(&mut app, KeyCode::Char('5'));
    insta::assert_snapshot!("activity_80x24", draw(&app, SMALL));
    insta::assert_snapshot!("activity_160x48", draw(&app, LARGE));
}

#[test]
fn help_is_generated_from_the_key_map() {
    let mut app = app();
    press(&mut app, KeyCode::Char('?'));
    let frame = screen(&app, (160, 100));
    for (_, keys, command, help) in keymap::help_lines(false) {
        assert!(frame.contains(help), "help lacks {help:?}");
        assert!(frame.contains(&keys), "help lacks keys {keys:?}");
        assert!(frame.contains(&command), "help lacks command {command:?}");
    }
    insta::assert_snapshot!("help_160x48", draw(&app, LARGE));
}

#[test]
fn read_only_help_and_screens_show_no_mutation() {
    let mut app = fixtures::connected_app(Role::Admin, true);
    press(&mut app, KeyCode::Char('?'));
    let frame = screen(&app, (160, 100));
    for binding in keymap::KEYMAP.iter().filter(|b| b.mutating) {
        assert!(
            !frame.contains(binding.help),
            "read-only help shows {:?}",
            binding.help
        );
    }
    assert!(frame.contains("READ-ONLY"));
    press(&mut app, KeyCode::Esc);
    press(&mut app, KeyCode::Char('3'));
    let frame = screen(&app, SMALL);
    assert!(
        frame.contains("read-only: switches are shown, not changed"),
        "{frame}"
    );
    assert!(!frame.contains("Enter engage"), "{frame}");
    insta::assert_snapshot!("switches_read_only_80x24", draw(&app, SMALL));
}

#[test]
fn palette_lists_matching_commands() {
    let mut app = app();
    press(&mut app, KeyCode::Char(':'));
    type_text(&mut app, "re");
    let frame = screen(&app, SMALL);
    assert!(frame.contains(":re_"), "{frame}");
    assert!(frame.contains("reload"), "{frame}");
    assert!(frame.contains("refresh MS"), "{frame}");
    assert!(frame.contains("reverse"), "{frame}");
    assert!(!frame.contains("quit "), "{frame}");
    insta::assert_snapshot!("palette_80x24", draw(&app, SMALL));
}

#[test]
fn frozen_view_says_so() {
    let mut app = app();
    press(&mut app, KeyCode::Char('p'));
    app.update(Message::Polled(Box::new(fixtures::poll(61, Role::Admin))));
    let frame = screen(&app, SMALL);
    assert!(frame.contains("FROZEN (1 held)"), "{frame}");
}

#[test]
fn approvals_and_their_dialog() {
    let mut app = app();
    press(&mut app, KeyCode::Char('6'));
    let frame = screen(&app, SMALL);
    assert!(frame.contains("6 Approvals (2)"), "{frame}");
    assert!(frame.contains("+38.3%"), "{frame}");
    insta::assert_snapshot!("approvals_80x24", draw(&app, SMALL));
    press(&mut app, KeyCode::Char('a'));
    type_text(&mut app, "cost confirmed by vendor");
    press(&mut app, KeyCode::Enter);
    let frame = screen(&app, LARGE);
    assert!(
        frame.contains("approve the price of SKU-0000311"),
        "{frame}"
    );
    assert!(frame.contains("5.20 EUR → 7.19 EUR"), "{frame}");
    insta::assert_snapshot!("approve_confirm_160x48", draw(&app, LARGE));
}

#[test]
fn a_dialog_grows_with_wrapped_lines_and_keeps_its_keys_visible() {
    let mut app = app();
    press(&mut app, KeyCode::Char('4'));
    press(&mut app, KeyCode::Char('d'));
    type_text(&mut app, "done checking");
    press(&mut app, KeyCode::Enter);
    let frame = screen(&app, SMALL);
    assert!(frame.contains("y: end it"), "{frame}");
    assert!(frame.contains("the pipeline's price comes"), "{frame}");
}

#[test]
fn themes_are_named_and_mono_uses_no_colour() {
    use super::Theme;
    use ratatui::style::{Color, Modifier};
    assert_eq!(Theme::named("light"), Some(Theme::LIGHT));
    assert_eq!(Theme::named("neon"), None);
    let mono = Theme::MONO;
    for color in [mono.accent, mono.danger, mono.good, mono.warn] {
        assert_eq!(color, Color::Reset);
    }
    assert!(mono
        .badge(Color::Red)
        .add_modifier
        .contains(Modifier::REVERSED));
    assert_eq!(mono.badge(Color::Red).bg, None);
    assert!(mono.highlight.add_modifier.contains(Modifier::REVERSED));
}

#[test]
fn tiny_terminals_draw_without_panicking() {
    let mut app = with_skus(app());
    let sizes = [(1, 1), (20, 5), (40, 12), (79, 23), (300, 90)];
    for tab in ['1', '2', '3', '4', '5', '6'] {
        press(&mut app, KeyCode::Char(tab));
        for size in sizes {
            draw(&app, size);
        }
    }
    press(&mut app, KeyCode::Char('3'));
    press(&mut app, KeyCode::Enter);
    for size in sizes {
        draw(&app, size);
    }
    press(&mut app, KeyCode::Esc);
    press(&mut app, KeyCode::Char('?'));
    for size in sizes {
        draw(&app, size);
    }
}
