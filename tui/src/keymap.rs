//! The one key map: every binding the console answers to, where it applies, and
//! whether it changes anything on the server. The key handler, the `?` help screen
//! and the `:` command palette are all read from [`KEYMAP`], so what help shows is
//! exactly what the keys do.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// Where a binding applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Anywhere no dialog is open.
    Global,
    Dashboard,
    /// The SKU table.
    Skus,
    /// One SKU's detail view.
    Detail,
    /// The kill-switch panel.
    Switches,
    /// Active overrides.
    Overrides,
    /// Alerts and the audit log.
    Activity,
    /// Price suggestions waiting for a person.
    Approvals,
}

impl Scope {
    /// Heading in the help screen.
    pub fn title(self) -> &'static str {
        match self {
            Scope::Global => "Everywhere",
            Scope::Dashboard => "Dashboard",
            Scope::Skus => "SKU table",
            Scope::Detail => "SKU detail",
            Scope::Switches => "Kill switches",
            Scope::Overrides => "Overrides",
            Scope::Activity => "Alerts and audit",
            Scope::Approvals => "Approvals",
        }
    }

    /// Help order.
    pub const ALL: [Scope; 8] = [
        Scope::Global,
        Scope::Dashboard,
        Scope::Skus,
        Scope::Detail,
        Scope::Switches,
        Scope::Overrides,
        Scope::Activity,
        Scope::Approvals,
    ];
}

/// What a binding does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Quit,
    Help,
    Palette,
    /// Stop (or resume) updating the view.
    FreezeView,
    RefreshNow,
    FasterRefresh,
    SlowerRefresh,
    /// Palette only: `refresh MS`.
    SetRefresh,
    NextTab,
    PrevTab,
    GoDashboard,
    GoSkus,
    GoSwitches,
    GoOverrides,
    GoActivity,
    GoApprovals,
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    /// Edit the SKU filter (palette: `filter TEXT`).
    Filter,
    ClearFilter,
    /// Next sort column (palette: `sort COLUMN`).
    SortNext,
    SortReverse,
    Open,
    Back,
    /// Palette only: `sku ID` opens a SKU's detail.
    OpenSku,
    /// Pin a price for the selected SKU.
    OverrideForm,
    /// Freeze (or unfreeze) the selected SKU's price.
    FreezeSku,
    /// Engage or release the selected kill switch.
    ToggleSwitch,
    /// Shortcut: all promotions off (or back on).
    AllPromotionsSwitch,
    PipelineSwitch,
    CheckoutSwitch,
    /// Freeze a SKU by id (asks for it).
    FreezeSkuById,
    /// Palette only: `promotion-off ID` for a promotion not in the list (feed ones).
    PromotionSwitch,
    /// End the selected override.
    RemoveOverride,
    /// Show the selected audit record in full.
    ShowRecord,
    /// Approve the selected price suggestion.
    Approve,
    /// Reject the selected price suggestion.
    Reject,
}

/// A key as written in the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub code: KeyCode,
    pub modifiers: KeyModifiers,
}

const fn key(c: char) -> Key {
    Key {
        code: KeyCode::Char(c),
        modifiers: KeyModifiers::NONE,
    }
}

const fn code(code: KeyCode) -> Key {
    Key {
        code,
        modifiers: KeyModifiers::NONE,
    }
}

const fn ctrl(c: char) -> Key {
    Key {
        code: KeyCode::Char(c),
        modifiers: KeyModifiers::CONTROL,
    }
}

impl Key {
    /// Whether a pressed key is this one. Shift is ignored for characters because
    /// terminals report `S` as `Shift+S` or as plain `S` depending on the protocol.
    pub fn matches(&self, event: &KeyEvent) -> bool {
        let wanted = self.modifiers & !KeyModifiers::SHIFT;
        let pressed = event.modifiers & !KeyModifiers::SHIFT;
        self.code == event.code && wanted == pressed
    }

    /// How help shows it.
    pub fn label(&self) -> String {
        let base = match self.code {
            KeyCode::Char(' ') => "Space".to_owned(),
            KeyCode::Char(c) => c.to_string(),
            KeyCode::Enter => "Enter".to_owned(),
            KeyCode::Esc => "Esc".to_owned(),
            KeyCode::Tab => "Tab".to_owned(),
            KeyCode::BackTab => "S-Tab".to_owned(),
            KeyCode::Up => "↑".to_owned(),
            KeyCode::Down => "↓".to_owned(),
            KeyCode::Left => "←".to_owned(),
            KeyCode::Right => "→".to_owned(),
            KeyCode::PageUp => "PgUp".to_owned(),
            KeyCode::PageDown => "PgDn".to_owned(),
            KeyCode::Home => "Home".to_owned(),
            KeyCode::End => "End".to_owned(),
            KeyCode::Backspace => "Bksp".to_owned(),
            KeyCode::F(n) => format!("F{n}"),
            other => format!("{other:?}"),
        };
        if self.modifiers.contains(KeyModifiers::CONTROL) {
            format!("C-{base}")
        } else {
            base
        }
    }
}

/// One binding.
#[derive(Debug, Clone, Copy)]
pub struct Binding {
    /// Keys that trigger it (none: palette only).
    pub keys: &'static [Key],
    pub scope: Scope,
    pub action: Action,
    /// Changes state on the server: hidden and refused with `--read-only`.
    pub mutating: bool,
    /// Its name in the `:` palette, if it has one.
    pub command: Option<&'static str>,
    /// What the palette command takes, for help (`MS`, `TEXT`, …).
    pub argument: Option<&'static str>,
    pub help: &'static str,
}

const fn bind(
    keys: &'static [Key],
    scope: Scope,
    action: Action,
    command: Option<&'static str>,
    help: &'static str,
) -> Binding {
    Binding {
        keys,
        scope,
        action,
        mutating: false,
        command,
        argument: None,
        help,
    }
}

const fn mutating(mut binding: Binding) -> Binding {
    binding.mutating = true;
    binding
}

const fn with_argument(mut binding: Binding, argument: &'static str) -> Binding {
    binding.argument = Some(argument);
    binding
}

use Action as A;
use Scope as S;

/// Every binding of the console.
pub const KEYMAP: &[Binding] = &[
    bind(
        &[key('q'), ctrl('c')],
        S::Global,
        A::Quit,
        Some("quit"),
        "quit",
    ),
    bind(&[key('?')], S::Global, A::Help, Some("help"), "this help"),
    bind(&[key(':')], S::Global, A::Palette, None, "command palette"),
    bind(
        &[key('p')],
        S::Global,
        A::FreezeView,
        Some("freeze"),
        "freeze the view (stop updating) / resume",
    ),
    bind(
        &[key('r')],
        S::Global,
        A::RefreshNow,
        Some("reload"),
        "refresh now",
    ),
    bind(
        &[key('+')],
        S::Global,
        A::FasterRefresh,
        Some("faster"),
        "refresh twice as often",
    ),
    bind(
        &[key('-')],
        S::Global,
        A::SlowerRefresh,
        Some("slower"),
        "refresh half as often",
    ),
    with_argument(
        bind(
            &[],
            S::Global,
            A::SetRefresh,
            Some("refresh"),
            "set the refresh interval (250..60000 ms)",
        ),
        "MS",
    ),
    bind(
        &[code(KeyCode::Tab)],
        S::Global,
        A::NextTab,
        None,
        "next tab",
    ),
    bind(
        &[code(KeyCode::BackTab)],
        S::Global,
        A::PrevTab,
        None,
        "previous tab",
    ),
    bind(
        &[key('1')],
        S::Global,
        A::GoDashboard,
        Some("dashboard"),
        "dashboard",
    ),
    bind(&[key('2')], S::Global, A::GoSkus, Some("skus"), "SKU table"),
    bind(
        &[key('3')],
        S::Global,
        A::GoSwitches,
        Some("switches"),
        "kill switches",
    ),
    bind(
        &[key('4')],
        S::Global,
        A::GoOverrides,
        Some("overrides"),
        "active overrides",
    ),
    bind(
        &[key('5')],
        S::Global,
        A::GoActivity,
        Some("activity"),
        "alerts and audit log",
    ),
    bind(
        &[key('6')],
        S::Global,
        A::GoApprovals,
        Some("approvals"),
        "price suggestions waiting for approval",
    ),
    bind(
        &[code(KeyCode::Up), key('k')],
        S::Global,
        A::Up,
        None,
        "move up",
    ),
    bind(
        &[code(KeyCode::Down), key('j')],
        S::Global,
        A::Down,
        None,
        "move down",
    ),
    bind(
        &[code(KeyCode::PageUp)],
        S::Global,
        A::PageUp,
        None,
        "previous page",
    ),
    bind(
        &[code(KeyCode::PageDown)],
        S::Global,
        A::PageDown,
        None,
        "next page",
    ),
    bind(
        &[code(KeyCode::Home), key('g')],
        S::Global,
        A::Top,
        None,
        "first row",
    ),
    bind(
        &[code(KeyCode::End), key('G')],
        S::Global,
        A::Bottom,
        None,
        "last row",
    ),
    // SKU table
    with_argument(
        bind(
            &[key('/')],
            S::Skus,
            A::Filter,
            Some("filter"),
            "filter SKUs (id or category)",
        ),
        "TEXT",
    ),
    bind(
        &[code(KeyCode::Esc)],
        S::Skus,
        A::ClearFilter,
        None,
        "clear the filter",
    ),
    with_argument(
        bind(
            &[key('s')],
            S::Skus,
            A::SortNext,
            Some("sort"),
            "sort by the next column (sku, price, margin, changed)",
        ),
        "COLUMN",
    ),
    bind(
        &[key('S')],
        S::Skus,
        A::SortReverse,
        Some("reverse"),
        "reverse the sort order",
    ),
    bind(
        &[code(KeyCode::Enter)],
        S::Skus,
        A::Open,
        None,
        "open the SKU: price explanation, overrides",
    ),
    with_argument(
        bind(&[], S::Skus, A::OpenSku, Some("sku"), "open a SKU by id"),
        "ID",
    ),
    mutating(bind(
        &[key('o')],
        S::Skus,
        A::OverrideForm,
        Some("override"),
        "override the selected SKU's price",
    )),
    mutating(bind(
        &[key('f')],
        S::Skus,
        A::FreezeSku,
        None,
        "freeze / unfreeze the selected SKU's price",
    )),
    // detail
    bind(
        &[code(KeyCode::Esc), code(KeyCode::Backspace)],
        S::Detail,
        A::Back,
        None,
        "back to the table",
    ),
    mutating(bind(
        &[key('o')],
        S::Detail,
        A::OverrideForm,
        None,
        "override this SKU's price",
    )),
    mutating(bind(
        &[key('f')],
        S::Detail,
        A::FreezeSku,
        None,
        "freeze / unfreeze this SKU's price",
    )),
    // kill switches
    mutating(bind(
        &[code(KeyCode::Enter), key(' ')],
        S::Switches,
        A::ToggleSwitch,
        None,
        "engage / release the selected switch",
    )),
    mutating(bind(
        &[],
        S::Switches,
        A::AllPromotionsSwitch,
        Some("promotions-off"),
        "all promotions off (again: back on)",
    )),
    mutating(bind(
        &[],
        S::Switches,
        A::PipelineSwitch,
        Some("pause-pipeline"),
        "pause the pipeline (again: resume)",
    )),
    mutating(bind(
        &[],
        S::Switches,
        A::CheckoutSwitch,
        Some("close-checkout"),
        "close checkout (again: open)",
    )),
    mutating(with_argument(
        bind(
            &[key('f')],
            S::Switches,
            A::FreezeSkuById,
            Some("freeze-sku"),
            "freeze a SKU's price by id",
        ),
        "ID",
    )),
    mutating(with_argument(
        bind(
            &[],
            S::Switches,
            A::PromotionSwitch,
            Some("promotion-off"),
            "one promotion off by id (again: back on)",
        ),
        "ID",
    )),
    // overrides
    mutating(bind(
        &[key('d'), code(KeyCode::Delete)],
        S::Overrides,
        A::RemoveOverride,
        None,
        "end the selected override",
    )),
    // activity
    bind(
        &[code(KeyCode::Enter)],
        S::Activity,
        A::ShowRecord,
        None,
        "show the selected audit record in full",
    ),
    // approvals
    mutating(bind(
        &[key('a')],
        S::Approvals,
        A::Approve,
        None,
        "approve the selected suggestion (publishes its price)",
    )),
    mutating(bind(
        &[key('x')],
        S::Approvals,
        A::Reject,
        None,
        "reject the selected suggestion",
    )),
];

/// The action a key triggers in `scope`: scope bindings win over global ones.
/// Mutating bindings do not exist in read-only mode.
pub fn action_for(event: &KeyEvent, scope: Scope, read_only: bool) -> Option<Action> {
    let visible = |b: &&Binding| !(read_only && b.mutating);
    KEYMAP
        .iter()
        .filter(visible)
        .filter(|b| b.scope == scope)
        .chain(
            KEYMAP
                .iter()
                .filter(visible)
                .filter(|b| b.scope == Scope::Global),
        )
        .find(|b| b.keys.iter().any(|k| k.matches(event)))
        .map(|b| b.action)
}

/// Palette commands visible in this mode, in map order.
pub fn commands(read_only: bool) -> impl Iterator<Item = &'static Binding> {
    KEYMAP
        .iter()
        .filter(move |b| b.command.is_some() && !(read_only && b.mutating))
}

/// The binding a palette command names.
pub fn command(name: &str, read_only: bool) -> Option<&'static Binding> {
    commands(read_only).find(|b| b.command == Some(name))
}

/// One line of help per binding, grouped by scope: `(scope, keys, command, help)`.
pub fn help_lines(read_only: bool) -> Vec<(Scope, String, String, &'static str)> {
    let mut lines = Vec::new();
    for scope in Scope::ALL {
        for binding in KEYMAP
            .iter()
            .filter(|b| b.scope == scope && !(read_only && b.mutating))
        {
            let keys = binding
                .keys
                .iter()
                .map(Key::label)
                .collect::<Vec<_>>()
                .join(" ");
            let command = match (binding.command, binding.argument) {
                (Some(name), Some(arg)) => format!(":{name} {arg}"),
                (Some(name), None) => format!(":{name}"),
                _ => String::new(),
            };
            lines.push((scope, keys, command, binding.help));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
    }

    #[test]
    fn scope_bindings_win_and_global_ones_apply_everywhere() {
        assert_eq!(
            action_for(&press('f'), Scope::Skus, false),
            Some(Action::FreezeSku)
        );
        assert_eq!(
            action_for(&press('f'), Scope::Switches, false),
            Some(Action::FreezeSkuById)
        );
        assert_eq!(action_for(&press('f'), Scope::Dashboard, false), None);
        assert_eq!(
            action_for(&press('q'), Scope::Detail, false),
            Some(Action::Quit)
        );
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(action_for(&ctrl_c, Scope::Skus, false), Some(Action::Quit));
        // Shift reported or not, `S` is the same key.
        let shifted = KeyEvent::new(KeyCode::Char('S'), KeyModifiers::SHIFT);
        assert_eq!(
            action_for(&shifted, Scope::Skus, false),
            Some(Action::SortReverse)
        );
    }

    #[test]
    fn read_only_removes_every_mutating_binding() {
        assert_eq!(action_for(&press('o'), Scope::Skus, true), None);
        let enter = KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE);
        assert_eq!(action_for(&enter, Scope::Switches, true), None);
        assert!(command("promotions-off", true).is_none());
        assert!(command("promotions-off", false).is_some());
        let shown: Vec<&str> = help_lines(true).iter().map(|line| line.3).collect();
        for binding in KEYMAP.iter().filter(|b| b.mutating) {
            assert!(!shown.contains(&binding.help), "{:?} shown", binding.help);
        }
        assert!(shown.contains(&"quit"));
    }

    #[test]
    fn no_key_is_bound_twice_in_one_scope() {
        for scope in Scope::ALL {
            let mut seen: Vec<Key> = Vec::new();
            for binding in KEYMAP.iter().filter(|b| b.scope == scope) {
                for key in binding.keys {
                    assert!(
                        !seen.contains(key),
                        "{} bound twice in {scope:?}",
                        key.label()
                    );
                    seen.push(*key);
                }
            }
        }
    }

    #[test]
    fn every_binding_is_reachable_by_key_or_command() {
        for binding in KEYMAP {
            assert!(
                !binding.keys.is_empty() || binding.command.is_some(),
                "{:?} cannot be triggered",
                binding.action
            );
        }
    }
}

/// The key map as Markdown, one table row per binding (the README's key map).
pub fn markdown() -> String {
    let mut out = String::from("| where | keys | command | does |\n|---|---|---|---|\n");
    for (scope, keys, command, help) in help_lines(false) {
        let mutating = KEYMAP
            .iter()
            .any(|b| b.help == help && b.scope == scope && b.mutating);
        let keys = if keys.is_empty() {
            String::new()
        } else {
            format!("`{}`", keys.replace(' ', "` `"))
        };
        let command = if command.is_empty() {
            String::new()
        } else {
            format!("`{command}`")
        };
        out.push_str(&format!(
            "| {} | {keys} | {command} | {help}{} |\n",
            scope.title(),
            if mutating {
                " (not with --read-only)"
            } else {
                ""
            }
        ));
    }
    out
}

#[cfg(test)]
mod readme {
    /// The README's key map is this key map: regenerate it with
    /// `EDGEPRICE_PRINT_KEYMAP=1 cargo test -p edgeprice-tui readme -- --nocapture`.
    #[test]
    fn the_readme_shows_the_key_map() {
        let table = super::markdown();
        if std::env::var_os("EDGEPRICE_PRINT_KEYMAP").is_some() {
            println!("{table}");
        }
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
            .expect("README.md at the workspace root");
        assert!(
            readme.contains(&table),
            "README.md's key map differs from the key map; regenerate it (see this test's doc)"
        );
    }
}
