//! `App::update` state tests: keys in, state and commands out, no terminal.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use edgeprice_schemas::admin::{KillSwitchRequest, OverrideRequest, Role, Switch};

use super::*;
use crate::fixtures::{self, NOW_MS};

fn key(app: &mut App, code: KeyCode) -> Option<Command> {
    app.update(Message::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}

fn char(app: &mut App, c: char) -> Option<Command> {
    key(app, KeyCode::Char(c))
}

fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        assert_eq!(char(app, c), None, "typing {c:?} sent a command");
    }
}

fn palette(app: &mut App, line: &str) -> Option<Command> {
    char(app, ':');
    type_text(app, line);
    key(app, KeyCode::Enter)
}

fn app() -> App {
    fixtures::connected_app(Role::Admin, false)
}

fn skus_loaded(app: &mut App) {
    let command = char(app, '2');
    let Some(Command::WatchSkus(query)) = command else {
        panic!("entering the SKU tab should watch a page, got {command:?}");
    };
    let page = fixtures::sku_page(&query);
    app.update(Message::Skus {
        query,
        result: Ok(page),
    });
}

fn dialog(app: &App) -> &SwitchDialog {
    match &app.modal {
        Some(Modal::Switch(dialog)) => dialog,
        other => panic!("expected a kill-switch dialog, got {other:?}"),
    }
}

#[test]
fn polls_fill_the_dashboard_and_its_history() {
    let app = app();
    assert_eq!(
        app.connection,
        Connection::Up {
            since_ms: NOW_MS - 61_000
        }
    );
    assert_eq!(app.whoami.as_ref().unwrap().role, Role::Admin);
    assert_eq!(app.history.edge_rps.len(), 60);
    assert_eq!(app.metrics.as_ref().unwrap().at_ms, NOW_MS);
    assert_eq!(app.alerts.len(), 4);
    assert_eq!(app.overrides.len(), 2);
    // A reading seen twice (same at_ms) is not recorded twice.
    let mut app = app;
    app.update(Message::Polled(Box::new(fixtures::poll(60, Role::Admin))));
    assert_eq!(app.history.edge_rps.len(), 60);
}

#[test]
fn tabs_switch_by_number_tab_key_and_palette() {
    let mut app = app();
    assert_eq!(char(&mut app, '3'), None);
    assert_eq!(app.tab, Tab::Switches);
    key(&mut app, KeyCode::Tab);
    assert_eq!(app.tab, Tab::Overrides);
    key(&mut app, KeyCode::BackTab);
    key(&mut app, KeyCode::BackTab);
    assert_eq!(app.tab, Tab::Skus);
    palette(&mut app, "activity");
    assert_eq!(app.tab, Tab::Activity);
    assert_eq!(app.modal, None);
}

#[test]
fn help_opens_and_any_key_closes_it() {
    let mut app = app();
    char(&mut app, '?');
    assert_eq!(app.modal, Some(Modal::Help { scroll: 0 }));
    key(&mut app, KeyCode::Down);
    assert_eq!(app.modal, Some(Modal::Help { scroll: 1 }));
    // q inside help closes help, it does not quit.
    assert_eq!(char(&mut app, 'q'), None);
    assert_eq!(app.modal, None);
    assert!(!app.quit);
    assert_eq!(char(&mut app, 'q'), Some(Command::Quit));
    assert!(app.quit);
}

#[test]
fn the_palette_completes_runs_and_reports_unknown_commands() {
    let mut app = app();
    char(&mut app, ':');
    type_text(&mut app, "swi");
    key(&mut app, KeyCode::Tab);
    assert_eq!(
        app.modal,
        Some(Modal::Palette {
            input: "switches ".to_owned(),
            error: None
        })
    );
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.tab, Tab::Switches);

    palette(&mut app, "launch-rockets");
    match &app.modal {
        Some(Modal::Palette {
            error: Some(error), ..
        }) => {
            assert!(error.contains("no command :launch-rockets"), "{error}")
        }
        other => panic!("expected the palette with an error, got {other:?}"),
    }
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.modal, None);

    assert_eq!(
        palette(&mut app, "refresh 500"),
        Some(Command::SetRefresh { ms: 500 })
    );
    assert_eq!(app.refresh_ms, 500);
}

#[test]
fn refresh_adjusts_within_bounds() {
    let mut app = app();
    assert_eq!(char(&mut app, '+'), Some(Command::SetRefresh { ms: 500 }));
    assert_eq!(char(&mut app, '+'), Some(Command::SetRefresh { ms: 250 }));
    assert_eq!(char(&mut app, '+'), Some(Command::SetRefresh { ms: 250 }));
    assert_eq!(char(&mut app, '-'), Some(Command::SetRefresh { ms: 500 }));
    assert_eq!(
        palette(&mut app, "refresh 999999"),
        Some(Command::SetRefresh { ms: REFRESH_MAX_MS })
    );
    assert_eq!(palette(&mut app, "refresh soon"), None);
    assert_eq!(app.current_status().unwrap().level, Level::Error);
}

#[test]
fn freeze_holds_the_view_until_released() {
    let mut app = app();
    assert_eq!(char(&mut app, 'p'), Some(Command::SetFrozen(true)));
    let before = app.metrics.clone();
    app.update(Message::Polled(Box::new(fixtures::poll(61, Role::Admin))));
    app.update(Message::Polled(Box::new(fixtures::poll(62, Role::Admin))));
    assert_eq!(app.metrics, before, "a frozen view must not change");
    assert_eq!(app.held_back, 2);
    assert_eq!(app.history.edge_rps.len(), 60);
    // Refresh does nothing while frozen, and says so.
    assert_eq!(char(&mut app, 'r'), None);
    assert_eq!(char(&mut app, 'p'), Some(Command::SetFrozen(false)));
    app.update(Message::Polled(Box::new(fixtures::poll(63, Role::Admin))));
    assert_eq!(
        app.metrics.as_ref().unwrap().at_ms,
        fixtures::metrics(63).at_ms
    );
    assert_eq!(char(&mut app, 'r'), Some(Command::RefreshNow));
}

#[test]
fn connection_loss_shows_the_retry_and_recovers() {
    let mut app = app();
    app.update(Message::Connection(ConnectionEvent::Down {
        error: "connection refused".to_owned(),
        attempt: 3,
        retry_in_ms: 1_000,
    }));
    assert_eq!(
        app.connection,
        Connection::Down {
            error: "connection refused".to_owned(),
            attempt: 3,
            retry_at_ms: NOW_MS + 1_000
        }
    );
    // The last acknowledged data stays on screen while reconnecting.
    assert!(app.metrics.is_some());
    app.update(Message::Tick {
        now_ms: NOW_MS + 1_500,
    });
    app.update(Message::Polled(Box::new(fixtures::poll(61, Role::Admin))));
    assert_eq!(
        app.connection,
        Connection::Up {
            since_ms: NOW_MS + 1_500
        }
    );
}

#[test]
fn a_failing_panel_keeps_its_last_data_and_shows_the_error() {
    let mut app = app();
    let mut poll = fixtures::poll(61, Role::Admin);
    poll.overrides = Err(ApiError::Status {
        status: 500,
        code: "internal".to_owned(),
        message: "database is locked".to_owned(),
    });
    app.update(Message::Polled(Box::new(poll)));
    assert_eq!(app.overrides.len(), 2);
    assert!(app.panel_errors[&Panel::Overrides].contains("database is locked"));
    app.update(Message::Polled(Box::new(fixtures::poll(62, Role::Admin))));
    assert!(!app.panel_errors.contains_key(&Panel::Overrides));
}

#[test]
fn the_sku_table_filters_sorts_pages_and_ignores_stale_answers() {
    let mut app = app();
    skus_loaded(&mut app);
    assert_eq!(
        app.skus.page.as_ref().unwrap().skus.len(),
        SKU_PAGE as usize
    );

    char(&mut app, '/');
    type_text(&mut app, "snack");
    let Some(Command::WatchSkus(filtered)) = key(&mut app, KeyCode::Enter) else {
        panic!("the filter should watch a new page");
    };
    assert_eq!(filtered.q, "snack");
    assert_eq!(filtered.offset, 0);

    let Some(Command::WatchSkus(sorted)) = char(&mut app, 's') else {
        panic!("s should sort");
    };
    assert_eq!((sorted.sort.as_str(), sorted.desc), ("price", false));
    let Some(Command::WatchSkus(reversed)) = char(&mut app, 'S') else {
        panic!("S should reverse");
    };
    assert!(reversed.desc);

    // An answer for a query no longer asked for is dropped.
    app.update(Message::Skus {
        query: filtered.clone(),
        result: Ok(fixtures::sku_page(&filtered)),
    });
    assert_ne!(app.skus.page_query.as_ref(), Some(&filtered));
    app.update(Message::Skus {
        query: reversed.clone(),
        result: Ok(fixtures::sku_page(&reversed)),
    });
    assert_eq!(app.skus.page_query.as_ref(), Some(&reversed));

    let Some(Command::WatchSkus(next)) = key(&mut app, KeyCode::PageDown) else {
        panic!("PgDn should ask for the next page");
    };
    assert_eq!(next.offset, SKU_PAGE);
    assert_eq!(palette(&mut app, "sort vibes"), None);
    assert!(app.current_status().unwrap().text.contains("cannot sort"));
    let Some(Command::WatchSkus(cleared)) = key(&mut app, KeyCode::Esc) else {
        panic!("Esc should clear the filter");
    };
    assert_eq!(cleared.q, "");
}

#[test]
fn enter_opens_the_detail_with_its_explanation_and_esc_goes_back() {
    let mut app = app();
    skus_loaded(&mut app);
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Down);
    assert_eq!(
        key(&mut app, KeyCode::Enter),
        Some(Command::WatchSku(Some("SKU-0000003".to_owned())))
    );
    assert_eq!(app.scope(), Scope::Detail);
    app.update(Message::Sku {
        sku: "SKU-0000003".to_owned(),
        result: Ok(fixtures::sku_detail(3)),
    });
    let detail = app.detail.as_ref().unwrap().data.as_ref().unwrap();
    assert!(detail.explanation[0].contains("competitor median"));
    assert_eq!(key(&mut app, KeyCode::Esc), Some(Command::WatchSku(None)));
    assert_eq!(app.scope(), Scope::Skus);
}

#[test]
fn a_kill_switch_asks_why_dry_runs_confirms_and_shows_only_the_acknowledged_state() {
    let mut app = app();
    char(&mut app, '3');
    assert_eq!(app.switch_rows()[0].switch, Switch::AllPromotions);
    assert_eq!(key(&mut app, KeyCode::Enter), None);
    assert_eq!(dialog(&app).stage, SwitchStage::Reason);
    assert!(dialog(&app).engage);

    // No reason, no dry run.
    assert_eq!(key(&mut app, KeyCode::Enter), None);
    assert_eq!(dialog(&app).stage, SwitchStage::Reason);

    type_text(&mut app, "flash sale misconfigured");
    let dry_run = KillSwitchRequest {
        switch: Switch::AllPromotions,
        engaged: true,
        reason: "flash sale misconfigured".to_owned(),
        dry_run: true,
    };
    assert_eq!(
        key(&mut app, KeyCode::Enter),
        Some(Command::KillSwitch(dry_run.clone()))
    );
    assert_eq!(dialog(&app).stage, SwitchStage::Previewing);
    // Nothing can be confirmed before the blast radius is known.
    assert_eq!(char(&mut app, 'y'), None);

    app.update(Message::KillSwitch {
        request: dry_run.clone(),
        result: Ok(fixtures::outcome(Switch::AllPromotions, true, true)),
    });
    let SwitchStage::Confirm(radius) = &dialog(&app).stage else {
        panic!("expected the confirmation, got {:?}", dialog(&app).stage);
    };
    assert_eq!(
        (radius.skus, radius.promotions, radius.edges),
        (1_240, 3, 2)
    );

    let apply = KillSwitchRequest {
        dry_run: false,
        ..dry_run
    };
    assert_eq!(
        char(&mut app, 'y'),
        Some(Command::KillSwitch(apply.clone()))
    );
    assert_eq!(dialog(&app).stage, SwitchStage::Applying);
    // Not optimistic: until the server answers, the switch shows as it was.
    assert!(!app
        .switches
        .as_ref()
        .unwrap()
        .is_engaged(&Switch::AllPromotions));
    assert!(app.switch_rows()[0].engaged.is_none());

    app.update(Message::KillSwitch {
        request: apply,
        result: Ok(fixtures::outcome(Switch::AllPromotions, true, false)),
    });
    assert_eq!(app.modal, None);
    assert!(app
        .switches
        .as_ref()
        .unwrap()
        .is_engaged(&Switch::AllPromotions));
    let status = app.current_status().unwrap();
    assert_eq!(status.level, Level::Done);
    assert!(status.text.contains("1,240 SKUs"), "{}", status.text);
    assert!(status.text.contains("snapshot v5181"), "{}", status.text);
}

#[test]
fn a_refused_kill_switch_leaves_the_state_and_shows_why() {
    let mut app = app();
    char(&mut app, '3');
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Enter);
    assert_eq!(dialog(&app).switch, Switch::Checkout);
    type_text(&mut app, "incident 42");
    let Some(Command::KillSwitch(request)) = key(&mut app, KeyCode::Enter) else {
        panic!("expected a dry run");
    };
    app.update(Message::KillSwitch {
        request,
        result: Err(ApiError::Status {
            status: 403,
            code: "forbidden".to_owned(),
            message: "needs the operator role".to_owned(),
        }),
    });
    let SwitchStage::Failed(error) = &dialog(&app).stage else {
        panic!("expected the failure");
    };
    assert!(error.contains("needs the operator role"));
    assert_eq!(app.switches, Some(fixtures::switches()));
    key(&mut app, KeyCode::Enter);
    assert_eq!(dialog(&app).stage, SwitchStage::Reason);
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.modal, None);
}

#[test]
fn cancelling_at_the_confirmation_sends_nothing() {
    let mut app = app();
    let Some(Command::KillSwitch(dry_run)) = ({
        palette(&mut app, "pause-pipeline");
        type_text(&mut app, "bad cost feed");
        key(&mut app, KeyCode::Enter)
    }) else {
        panic!("expected a dry run");
    };
    assert_eq!(dry_run.switch, Switch::Pipeline);
    app.update(Message::KillSwitch {
        request: dry_run.clone(),
        result: Ok(fixtures::outcome(Switch::Pipeline, true, true)),
    });
    assert_eq!(char(&mut app, 'n'), None);
    assert_eq!(app.modal, None);
    // A late answer to a closed dialog's dry run changes nothing.
    app.update(Message::KillSwitch {
        request: dry_run,
        result: Ok(fixtures::outcome(Switch::Pipeline, true, true)),
    });
    assert_eq!(app.modal, None);
}

#[test]
fn an_engaged_switch_offers_release() {
    let mut app = app();
    char(&mut app, '3');
    // Row 3 is the engaged freeze of SKU-0000007.
    for _ in 0..3 {
        key(&mut app, KeyCode::Down);
    }
    key(&mut app, KeyCode::Enter);
    assert_eq!(
        dialog(&app).switch,
        Switch::FreezeSku {
            sku: "SKU-0000007".to_owned()
        }
    );
    assert!(!dialog(&app).engage, "an engaged switch is released");
}

#[test]
fn freeze_sku_by_id_asks_for_the_sku_first() {
    let mut app = app();
    char(&mut app, '3');
    char(&mut app, 'f');
    assert_eq!(dialog(&app).stage, SwitchStage::Sku);
    type_text(&mut app, "SKU-0000042");
    key(&mut app, KeyCode::Enter);
    assert_eq!(
        dialog(&app).switch,
        Switch::FreezeSku {
            sku: "SKU-0000042".to_owned()
        }
    );
    assert_eq!(dialog(&app).stage, SwitchStage::Reason);
    assert!(dialog(&app).engage);
}

#[test]
fn read_only_hides_every_mutation() {
    let mut app = fixtures::connected_app(Role::Admin, true);
    char(&mut app, '3');
    assert_eq!(key(&mut app, KeyCode::Enter), None);
    assert_eq!(app.modal, None);
    assert_eq!(char(&mut app, 'f'), None);
    assert_eq!(app.modal, None);
    palette(&mut app, "promotions-off");
    match &app.modal {
        Some(Modal::Palette {
            error: Some(error), ..
        }) => {
            assert!(error.contains("read-only"), "{error}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    key(&mut app, KeyCode::Esc);
    skus_loaded(&mut app);
    assert_eq!(char(&mut app, 'o'), None);
    assert_eq!(app.modal, None);
}

#[test]
fn a_viewer_token_is_read_only_too() {
    let mut app = fixtures::connected_app(Role::Viewer, false);
    assert!(app.is_read_only());
    char(&mut app, '3');
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.modal, None);
}

fn override_form(app: &App) -> &OverrideForm {
    match &app.modal {
        Some(Modal::Override(form)) => form,
        other => panic!("expected the override form, got {other:?}"),
    }
}

fn clear_field(app: &mut App) {
    for _ in 0..12 {
        key(app, KeyCode::Backspace);
    }
}

#[test]
fn an_override_is_validated_confirmed_with_its_reach_and_sent() {
    let mut app = app();
    skus_loaded(&mut app);
    char(&mut app, 'o');
    let form = override_form(&app);
    assert_eq!(form.sku, "SKU-0000001");
    assert_eq!(form.fields[0], "13.46", "prefilled with the current price");
    assert!(form.force_allowed);

    clear_field(&mut app);
    type_text(&mut app, "12.99");
    key(&mut app, KeyCode::Tab);
    type_text(&mut app, "store-1");
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Tab);
    clear_field(&mut app);
    type_text(&mut app, "2h");
    key(&mut app, KeyCode::Enter);
    // No reason yet.
    assert_eq!(
        override_form(&app).stage,
        FormStage::Editing {
            error: Some("say why (reason)".to_owned())
        }
    );
    key(&mut app, KeyCode::Tab);
    type_text(&mut app, "match competitor");
    key(&mut app, KeyCode::Enter);
    let expected = OverrideRequest {
        sku: "SKU-0000001".to_owned(),
        store: Some("store-1".to_owned()),
        channel: None,
        price_minor: 1_299,
        currency: "EUR".to_owned(),
        expires_at_ms: NOW_MS + 7_200_000,
        reason: "match competitor".to_owned(),
        force: false,
    };
    assert_eq!(
        override_form(&app).stage,
        FormStage::Confirm(expected.clone())
    );
    assert_eq!(
        char(&mut app, 'y'),
        Some(Command::CreateOverride(expected.clone()))
    );
    // Not shown as set until the server says so.
    assert!(app.overrides.iter().all(|o| o.sku != "SKU-0000001"));
    let created = Override {
        id: 12,
        sku: expected.sku.clone(),
        store: expected.store.clone(),
        price_minor: 1_299,
        currency: "EUR".to_owned(),
        expires_at_ms: expected.expires_at_ms,
        snapshot_version: 5_190,
        ..Override::default()
    };
    app.update(Message::OverrideCreated(Ok(created)));
    assert_eq!(app.modal, None);
    assert!(app.overrides.iter().any(|o| o.id == 12));
    assert!(app
        .current_status()
        .unwrap()
        .text
        .contains("override #12 set"));
}

#[test]
fn below_the_floor_needs_force_and_only_admins_get_it() {
    let mut operator = fixtures::connected_app(Role::Operator, false);
    skus_loaded(&mut operator);
    char(&mut operator, 'o');
    assert!(!override_form(&operator).force_allowed);
    clear_field(&mut operator);
    type_text(&mut operator, "1.00");
    for _ in 0..4 {
        key(&mut operator, KeyCode::Tab);
    }
    type_text(&mut operator, "clearance");
    key(&mut operator, KeyCode::Enter);
    let FormStage::Editing { error: Some(error) } = &override_form(&operator).stage else {
        panic!("expected a refusal");
    };
    assert!(error.contains("only an admin"), "{error}");

    let mut admin = app();
    skus_loaded(&mut admin);
    char(&mut admin, 'o');
    clear_field(&mut admin);
    type_text(&mut admin, "1.00");
    for _ in 0..4 {
        key(&mut admin, KeyCode::Tab);
    }
    type_text(&mut admin, "clearance");
    key(&mut admin, KeyCode::Enter);
    let FormStage::Editing { error: Some(error) } = &override_form(&admin).stage else {
        panic!("expected a refusal without force");
    };
    assert!(error.contains("tick force"), "{error}");
    key(&mut admin, KeyCode::Tab);
    char(&mut admin, ' ');
    assert!(override_form(&admin).force);
    key(&mut admin, KeyCode::Enter);
    let FormStage::Confirm(request) = &override_form(&admin).stage else {
        panic!("expected the confirmation");
    };
    assert!(request.force);
    assert_eq!(request.price_minor, 100);
}

#[test]
fn a_refused_override_returns_to_the_form_with_the_server_error() {
    let mut app = app();
    skus_loaded(&mut app);
    char(&mut app, 'o');
    for _ in 0..4 {
        key(&mut app, KeyCode::Tab);
    }
    type_text(&mut app, "test");
    key(&mut app, KeyCode::Enter);
    assert!(matches!(
        char(&mut app, 'y'),
        Some(Command::CreateOverride(_))
    ));
    app.update(Message::OverrideCreated(Err(ApiError::Status {
        status: 409,
        code: "sku_frozen".to_owned(),
        message: "SKU-0000001 is frozen".to_owned(),
    })));
    let FormStage::Editing { error: Some(error) } = &override_form(&app).stage else {
        panic!("expected the form with the error");
    };
    assert!(error.contains("is frozen"));
}

#[test]
fn ending_an_override_asks_why_and_confirms() {
    let mut app = app();
    char(&mut app, '4');
    key(&mut app, KeyCode::Down);
    char(&mut app, 'd');
    let Some(Modal::EndOverride(dialog)) = &app.modal else {
        panic!("expected the end-override dialog");
    };
    assert_eq!(dialog.target.id, 9);
    type_text(&mut app, "clearance over");
    key(&mut app, KeyCode::Enter);
    assert_eq!(
        char(&mut app, 'y'),
        Some(Command::RemoveOverride {
            id: 9,
            reason: "clearance over".to_owned()
        })
    );
    assert_eq!(app.overrides.len(), 2, "still there until acknowledged");
    let mut ended = fixtures::overrides()[1].clone();
    ended.ended_by = Some("ops-anna".to_owned());
    app.update(Message::OverrideRemoved {
        id: 9,
        result: Ok(ended),
    });
    assert_eq!(app.modal, None);
    assert_eq!(app.overrides.len(), 1);
    assert_eq!(app.override_selected, 0);
}

#[test]
fn status_messages_expire_but_errors_stay() {
    let mut app = app();
    char(&mut app, '+');
    assert!(app.current_status().is_some());
    app.update(Message::Tick {
        now_ms: NOW_MS + STATUS_TTL_MS + 1,
    });
    assert!(app.current_status().is_none());
    palette(&mut app, "refresh x");
    app.update(Message::Tick {
        now_ms: NOW_MS + 10 * STATUS_TTL_MS,
    });
    assert_eq!(app.current_status().unwrap().level, Level::Error);
}

#[test]
fn a_suggestion_is_approved_with_a_reason_and_leaves_the_list_once_acknowledged() {
    let mut app = app();
    char(&mut app, '6');
    assert_eq!(app.tab, Tab::Approvals);
    key(&mut app, KeyCode::Down);
    char(&mut app, 'a');
    let Some(Modal::Decide(dialog)) = &app.modal else {
        panic!("expected the approval dialog, got {:?}", app.modal);
    };
    assert_eq!(dialog.target.sku, "SKU-0002048");
    assert!(dialog.approve);
    type_text(&mut app, "checked competitor");
    key(&mut app, KeyCode::Enter);
    assert_eq!(
        char(&mut app, 'y'),
        Some(Command::Decide {
            sku: "SKU-0002048".to_owned(),
            request: edgeprice_schemas::admin::ApprovalRequest {
                approve: true,
                reason: "checked competitor".to_owned()
            }
        })
    );
    assert_eq!(app.approvals.len(), 2, "still listed until acknowledged");
    app.update(Message::Decided {
        sku: "SKU-0002048".to_owned(),
        result: Ok(serde_json::json!({
            "final_price_minor": 79_900,
            "inputs": {"currency": "EUR"}
        })),
    });
    assert_eq!(app.modal, None);
    assert_eq!(app.approvals.len(), 1);
    assert_eq!(
        app.current_status().unwrap().text,
        "approved the suggestion for SKU-0002048: price now 799.00 EUR"
    );
    // Rejecting takes the same path with approve = false.
    char(&mut app, 'x');
    let Some(Modal::Decide(dialog)) = &app.modal else {
        panic!("expected the reject dialog");
    };
    assert!(!dialog.approve);
}

#[test]
fn a_promotion_missing_from_the_list_can_be_switched_off_by_id() {
    let mut app = app();
    palette(&mut app, "promotion-off flash-1795449419787");
    assert_eq!(
        dialog(&app).switch,
        Switch::Promotion {
            id: "flash-1795449419787".to_owned()
        }
    );
    assert!(dialog(&app).engage);
}

#[test]
fn enter_on_an_audit_row_shows_its_record() {
    let mut app = app();
    char(&mut app, '5');
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Enter);
    let Some(Modal::Record { title, lines, .. }) = &app.modal else {
        panic!("expected the record, got {:?}", app.modal);
    };
    assert_eq!(title, "audit #88411 · override by admin-li");
    assert!(
        lines.iter().any(|l| l.contains("FORCED below floor")),
        "{lines:?}"
    );
    key(&mut app, KeyCode::Down);
    assert!(matches!(app.modal, Some(Modal::Record { scroll: 1, .. })));
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.modal, None);
}
