//! Durable state of the control plane: one SQLite database (`control.db`) in the data
//! directory, in WAL mode with `synchronous = FULL`, so a committed transaction survives
//! a crash or a power cut.
//!
//! Tables:
//! - `events`: the accepted-event log. `seq` orders events (and so orders them per SKU);
//!   `event_id` is unique, so a repeated event is recognised and processed once. The
//!   processing cursor (`meta.processed_through`, the last processed `seq`) advances in
//!   the same transaction that applies the events' effects, so a restart resumes
//!   exactly where processing stopped.
//! - `dead_letters`: rejected events with their reason code and message, kept as sent.
//! - `sku_state`: per SKU, the catalog data, cost history, competitor prices, inventory,
//!   demand windows, promotions and the published entry ([`SkuState`], stored as JSON),
//!   with `through_seq`, the processing cursor the row is current as of. The pipeline
//!   works on an in-memory copy and writes rows back at checkpoints.
//! - `batches`: the journal of processed event batches not yet covered by every SKU's
//!   row (`first_seq..=last_seq`, the time and version they were decided with), so a
//!   restart can replay them exactly (see [`crate::pipeline`]).
//! - `audit`: the hash-chained decision log (see [`crate::audit`]).
//! - `meta`: small named values (published version, audit head).
//!
//! Ingestion writes through [`Ingestor`], a group-commit writer thread: concurrent
//! submissions share one transaction and one fsync.

mod events;
mod ingest;
mod state;

pub use events::{DeadLetter, EventLog, StoredEvent};
pub use ingest::{GroupReport, Ingestor, Outcome, Submission};
pub use state::{
    CostPoint, DemandBucket, HeldCost, PendingSuggestion, PromotionState, ScheduledCost, SkuState,
};

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "control.db";

/// Errors of the store. Retrying helps only for [`StoreError::Sqlite`] errors of the
/// "database is busy" kind (another writer held the lock past the busy timeout) and for
/// [`StoreError::Stopped`] after a restart; the rest need a fix.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("the ingest writer has stopped")]
    Stopped,
    /// The group's transaction failed and rolled back: nothing of it was stored, and
    /// resending the same events is safe.
    #[error("storing the events failed, nothing was stored: {0}")]
    GroupFailed(String),
}

impl StoreError {
    /// The API error code.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::DataDir { .. } => "data_dir_unavailable",
            StoreError::Sqlite(_) => "storage_error",
            StoreError::Corrupt(_) => "storage_corrupt",
            StoreError::Stopped => "ingest_stopped",
            StoreError::GroupFailed(_) => "storage_error",
        }
    }
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS events (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id       TEXT NOT NULL UNIQUE,
    feed           TEXT NOT NULL,
    sku            TEXT NOT NULL,
    received_at_ms INTEGER NOT NULL,
    body           TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    feed           TEXT NOT NULL,
    event_id       TEXT,
    code           TEXT NOT NULL,
    message        TEXT NOT NULL,
    body           TEXT NOT NULL,
    received_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sku_state (
    sku         TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    through_seq INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batches (
    last_seq  INTEGER PRIMARY KEY,
    first_seq INTEGER NOT NULL,
    now_ms    INTEGER NOT NULL,
    version   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq    INTEGER PRIMARY KEY,
    sku    TEXT NOT NULL,
    at_ms  INTEGER NOT NULL,
    record TEXT NOT NULL,
    hash   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_sku ON audit (sku, seq);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#;

/// Opens (creating if needed) the database in `data_dir` with the project's settings
/// and schema. Each thread that writes opens its own connection.
pub fn open(data_dir: &Path) -> Result<Connection, StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
        path: data_dir.to_owned(),
        source,
    })?;
    let conn = Connection::open(data_dir.join(DB_FILE))?;
    conn.busy_handler(Some(crate::sqlite::retry_soon))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit is on disk before it returns; group commit pays for the fsync.
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Checkpointed by the ingestor's `WalCheckpointer`, never by a commit.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    // 64 MiB of page cache per connection: SKU states are rewritten every batch, and
    // re-reading their pages from the OS cost more than the writes.
    conn.pragma_update(None, "cache_size", -65_536)?;
    conn.execute_batch(SCHEMA)?;
    migrate(&conn)?;
    Ok(conn)
}

/// Brings a database written by an older version up to the current schema.
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    // Rows written before checkpoints existed were rewritten by every batch, so they
    // are current as of any batch journaled later: cursor 0 is right for them.
    let has_cursor: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('sku_state') WHERE name = 'through_seq'")?
        .exists([])?;
    if !has_cursor {
        conn.execute_batch(
            "ALTER TABLE sku_state ADD COLUMN through_seq INTEGER NOT NULL DEFAULT 0",
        )?;
    }
    Ok(())
}

/// Opens the database read-only (admin reads): no schema, no pragmas that could take
/// the write lock.
pub fn open_read(data_dir: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        data_dir.join(DB_FILE),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// Reads a `meta` value.
pub fn meta_get(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |row| row.get(0))
        .optional()?)
}

/// Writes a `meta` value.
pub fn meta_set(conn: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([key, value])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_in_wal_mode_and_creates_the_schema_once() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(dir.path()).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        meta_set(&conn, "k", "v1").unwrap();
        meta_set(&conn, "k", "v2").unwrap();
        drop(conn);
        let conn = open(dir.path()).unwrap();
        assert_eq!(meta_get(&conn, "k").unwrap().as_deref(), Some("v2"));
        assert_eq!(meta_get(&conn, "missing").unwrap(), None);
    }
}
