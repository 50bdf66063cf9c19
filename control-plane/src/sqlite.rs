//! SQLite settings shared by the control plane's databases (`control.db`, `checkout.db`).
//!
//! Both are written by group-commit threads that must not stall: a lock wait or a WAL
//! checkpoint inside a commit delays every caller waiting on that group.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// Most time a writer waits for the write lock before giving up with "database is busy".
const BUSY_LIMIT: Duration = Duration::from_secs(5);

/// The busy handler of every connection: retries the lock every 100 µs. SQLite's own
/// busy timeout backs off (1, 2, 5, 10, 15, 20, 25… ms), so a writer that finds the
/// lock taken for 6 ms typically got it only after 18 ms — and the ingest writer and
/// the pipeline take turns on `control.db`'s lock all the time.
pub fn retry_soon(attempt: i32) -> bool {
    const PAUSE: Duration = Duration::from_micros(100);
    let attempts_allowed = (BUSY_LIMIT.as_micros() / PAUSE.as_micros()) as i32;
    if attempt >= attempts_allowed {
        return false;
    }
    std::thread::sleep(PAUSE);
    true
}

/// Checkpoints a database's WAL on its own thread, every [`WalCheckpointer::INTERVAL`]
/// (at 20,000 events/s that is about a thousand pages each time, SQLite's own automatic
/// threshold). The writers' connections set `wal_autocheckpoint = 0`: a checkpoint
/// writes and fsyncs the database file, tens of milliseconds that would otherwise land
/// inside whichever commit crossed the threshold. Passive: it never blocks a writer or
/// a reader, and a checkpoint that could not copy everything (a reader still uses old
/// frames) is continued by the next one. Dropping it runs a last checkpoint and stops
/// the thread.
#[derive(Debug)]
pub struct WalCheckpointer {
    stop_tx: Option<mpsc::SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl WalCheckpointer {
    pub const INTERVAL: Duration = Duration::from_millis(250);

    /// Starts checkpointing the database `conn` is open on (`name` is for logs).
    pub fn start(conn: Connection, name: &str) -> std::io::Result<WalCheckpointer> {
        // Keep the WAL file from staying at its largest size after a burst.
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
            .map_err(std::io::Error::other)?;
        let (stop_tx, stop_rx) = mpsc::sync_channel::<()>(1);
        let db = name.to_owned();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-wal"))
            .spawn(move || loop {
                let stop = !matches!(
                    stop_rx.recv_timeout(Self::INTERVAL),
                    Err(RecvTimeoutError::Timeout)
                );
                let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                    Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
                });
                match done {
                    Ok((wal_pages, copied)) => {
                        tracing::trace!(db, wal_pages, copied, "WAL checkpoint")
                    }
                    Err(err) => tracing::warn!(db, error = %err, "WAL checkpoint failed"),
                }
                if stop {
                    return;
                }
            })?;
        Ok(WalCheckpointer {
            stop_tx: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for WalCheckpointer {
    fn drop(&mut self) {
        self.stop_tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
