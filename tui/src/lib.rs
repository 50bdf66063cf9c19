//! The operator console: live metrics, the SKU table, overrides and kill switches over
//! the control plane's admin API (`edgeprice_schemas::admin`).
//!
//! Three parts that share nothing but channels:
//! - [`app::App`]: the state and its pure transitions, `update(Message) -> Option<Command>`;
//! - [`poller`]: a thread that does every HTTP call and sends the answers back as
//!   messages, reconnecting with backoff;
//! - [`ui::render`]: draws a frame from the state alone.
//!
//! The key map ([`keymap::KEYMAP`]) is the one source of the key handler, the `?` help
//! and the `:` palette.

pub mod app;
pub mod client;
pub mod format;
pub mod keymap;
pub mod poller;
pub mod ui;

#[cfg(test)]
mod fixtures;

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use crossterm::event::{self, Event};

use crate::app::{App, Command, Message};
use crate::client::AdminClient;

/// How `edgeprice tui` runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The control plane's base URL (`http://127.0.0.1:8081`).
    pub url: String,
    /// Admin API bearer token.
    pub token: String,
    /// Hide and refuse every action that changes the server.
    pub read_only: bool,
    /// Poll interval, ms.
    pub refresh_ms: u64,
    /// Colours.
    pub theme: ui::Theme,
}

/// How often the clock ticks (countdowns, status expiry) when nothing else happens.
const TICK: Duration = Duration::from_millis(250);
/// Per-request timeout of the admin client.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs the console in this terminal until the operator quits.
pub fn run(options: Options) -> anyhow::Result<()> {
    let url = options.url.trim_end_matches('/').to_owned();
    if !url.starts_with("http://") {
        anyhow::bail!("--url must be an http:// URL of the control plane, got {url:?}");
    }
    ui::set_theme(options.theme);
    let mut app = App::new(&url, options.read_only, options.refresh_ms, now_ms());
    let (messages_tx, messages_rx) = mpsc::channel();
    let client = AdminClient::new(&url, &options.token, REQUEST_TIMEOUT);
    let (commands_tx, _poller_jh) = poller::spawn(
        client,
        Duration::from_millis(app.refresh_ms),
        messages_tx.clone(),
    );
    // Terminal input blocks; it gets its own thread and feeds the same channel. It is
    // not joined: it ends with the process.
    std::thread::Builder::new()
        .name("edgeprice-tui-input".to_owned())
        .spawn(move || loop {
            match event::read() {
                Ok(Event::Key(key)) => {
                    if messages_tx.send(Message::Key(key)).is_err() {
                        return;
                    }
                }
                Ok(_) => {
                    if messages_tx
                        .send(Message::Tick { now_ms: now_ms() })
                        .is_err()
                    {
                        return;
                    }
                }
                Err(_) => return,
            }
        })
        .context("spawning the input thread")?;

    let mut terminal = ratatui::try_init().context("setting up the terminal")?;
    let result = (|| -> anyhow::Result<()> {
        loop {
            terminal
                .draw(|frame| ui::render(&app, frame))
                .context("drawing")?;
            let first = match messages_rx.recv_timeout(TICK) {
                Ok(message) => message,
                Err(RecvTimeoutError::Timeout) => Message::Tick { now_ms: now_ms() },
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            };
            // Everything already waiting is applied before the next frame.
            let pending = std::iter::once(first)
                .chain(std::iter::once(Message::Tick { now_ms: now_ms() }))
                .chain(messages_rx.try_iter());
            for message in pending {
                if let Some(command) = app.update(message) {
                    let quit = command == Command::Quit;
                    let _ = commands_tx.send(command);
                    if quit {
                        return Ok(());
                    }
                }
            }
        }
    })();
    ratatui::restore();
    result
}
