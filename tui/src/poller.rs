//! The poller thread: the only place that talks HTTP. It polls the admin API every
//! refresh interval, keeps what the view watches (a SKU page, a SKU's detail) fresh,
//! carries out the operator's mutations, and sends every answer back to the UI thread
//! as a [`Message`]. When the control plane cannot be reached it retries with
//! exponential backoff and says so ([`ConnectionEvent::Down`]).

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::app::{Command, ConnectionEvent, Message, Poll};
use crate::client::{AdminClient, ApiError, SkuQuery};

/// First retry after a failure; doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_START: Duration = Duration::from_millis(250);
pub const BACKOFF_MAX: Duration = Duration::from_secs(8);
/// Alert and audit rows fetched per poll.
const ROWS: u32 = 100;

/// The delay before retry number `attempt` (1-based).
pub fn backoff(attempt: u32) -> Duration {
    let shift = attempt.saturating_sub(1).min(16);
    (BACKOFF_START * (1u32 << shift)).min(BACKOFF_MAX)
}

/// Starts the poller; it stops on [`Command::Quit`] or when either channel closes.
pub fn spawn(
    client: AdminClient,
    refresh: Duration,
    messages_tx: Sender<Message>,
) -> (Sender<Command>, JoinHandle<()>) {
    let (commands_tx, commands_rx) = mpsc::channel();
    let poller_jh = std::thread::Builder::new()
        .name("edgeprice-tui-poller".to_owned())
        .spawn(move || {
            Poller {
                client,
                refresh,
                frozen: false,
                skus: None,
                sku: None,
                connected: false,
                attempt: 0,
                messages_tx,
            }
            .run(commands_rx)
        })
        .expect("spawning the poller thread");
    (commands_tx, poller_jh)
}

struct Poller {
    client: AdminClient,
    refresh: Duration,
    frozen: bool,
    skus: Option<SkuQuery>,
    sku: Option<String>,
    connected: bool,
    /// Failed attempts in a row.
    attempt: u32,
    messages_tx: Sender<Message>,
}

/// The UI thread is gone.
struct Closed;

impl Poller {
    fn run(mut self, commands_rx: Receiver<Command>) {
        let mut next_poll = Instant::now();
        loop {
            let wait = next_poll.saturating_duration_since(Instant::now());
            let result = match commands_rx.recv_timeout(wait) {
                Ok(Command::Quit) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(command) => self.command(command, &mut next_poll),
                Err(RecvTimeoutError::Timeout) => {
                    if self.frozen {
                        next_poll = Instant::now() + Duration::from_secs(3600);
                        Ok(())
                    } else {
                        self.poll().map(|delay| next_poll = Instant::now() + delay)
                    }
                }
            };
            if result.is_err() {
                return;
            }
        }
    }

    fn send(&self, message: Message) -> Result<(), Closed> {
        self.messages_tx.send(message).map_err(|_| Closed)
    }

    fn command(&mut self, command: Command, next_poll: &mut Instant) -> Result<(), Closed> {
        let now = Instant::now();
        match command {
            Command::Quit => {}
            Command::RefreshNow => *next_poll = now,
            Command::SetRefresh { ms } => {
                self.refresh = Duration::from_millis(ms);
                if self.connected {
                    *next_poll = (*next_poll).min(now + self.refresh);
                }
            }
            Command::SetFrozen(frozen) => {
                self.frozen = frozen;
                if !frozen {
                    *next_poll = now;
                }
            }
            Command::WatchSkus(query) => {
                let result = self.client.skus(&query);
                self.skus = Some(query.clone());
                self.send(Message::Skus { query, result })?;
            }
            Command::WatchSku(sku) => {
                self.sku = sku.clone();
                if let Some(sku) = sku {
                    let result = self.client.sku(&sku);
                    self.send(Message::Sku { sku, result })?;
                }
            }
            Command::KillSwitch(request) => {
                let result = self.client.kill_switch(&request);
                let changed = !request.dry_run && result.is_ok();
                self.send(Message::KillSwitch { request, result })?;
                if changed {
                    *next_poll = now;
                }
            }
            Command::CreateOverride(request) => {
                let result = self.client.create_override(&request);
                let changed = result.is_ok();
                self.send(Message::OverrideCreated(result))?;
                if changed {
                    *next_poll = now;
                }
            }
            Command::Decide { sku, request } => {
                let result = self.client.decide(&sku, &request);
                let changed = result.is_ok();
                self.send(Message::Decided { sku, result })?;
                if changed {
                    *next_poll = now;
                }
            }
            Command::RemoveOverride { id, reason } => {
                let result = self.client.remove_override(id, &reason);
                let changed = result.is_ok();
                self.send(Message::OverrideRemoved { id, result })?;
                if changed {
                    *next_poll = now;
                }
            }
        }
        Ok(())
    }

    /// One refresh of everything; answers how long until the next one.
    fn poll(&mut self) -> Result<Duration, Closed> {
        match self.poll_once() {
            Ok(poll) => {
                if !self.connected {
                    self.connected = true;
                    self.send(Message::Connection(ConnectionEvent::Up))?;
                }
                self.attempt = 0;
                self.send(Message::Polled(Box::new(poll)))?;
                if let Some(query) = self.skus.clone() {
                    let result = self.client.skus(&query);
                    self.send(Message::Skus { query, result })?;
                }
                if let Some(sku) = self.sku.clone() {
                    let result = self.client.sku(&sku);
                    self.send(Message::Sku { sku, result })?;
                }
                Ok(self.refresh)
            }
            Err(error) => {
                self.connected = false;
                self.attempt += 1;
                let delay = backoff(self.attempt);
                self.send(Message::Connection(ConnectionEvent::Down {
                    error: describe(&error),
                    attempt: self.attempt,
                    retry_in_ms: delay.as_millis() as u64,
                }))?;
                Ok(delay)
            }
        }
    }

    fn poll_once(&self) -> Result<Poll, ApiError> {
        // whoami is read on every (re)connect: the token's role may have changed.
        let whoami = if self.connected {
            None
        } else {
            Some(self.client.whoami()?)
        };
        let metrics = self.client.metrics()?;
        Ok(Poll {
            whoami,
            metrics,
            alerts: self.client.alerts(ROWS),
            switches: self.client.kill_switches(),
            promotions: self.client.promotions(),
            overrides: self.client.overrides(),
            audit: self.client.audit(ROWS),
            approvals: self.client.approvals(),
        })
    }
}

fn describe(error: &ApiError) -> String {
    match error {
        ApiError::Status { status: 401, .. } => format!("{error} (check --token)"),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_ceiling() {
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_millis(500));
        assert_eq!(backoff(4), Duration::from_secs(2));
        assert_eq!(backoff(6), BACKOFF_MAX);
        assert_eq!(backoff(60), BACKOFF_MAX);
    }
}
