//! The accepted-event log and the dead-letter table.

use std::collections::HashMap;

use edgeprice_pricing::{Currency, Sku};
use rusqlite::{params, Connection};

use super::StoreError;
use crate::feeds::{FeedEvent, FeedKind};

/// An accepted event as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Position in the log; processing follows it.
    pub seq: i64,
    pub received_at_ms: i64,
    pub event: FeedEvent,
}

/// A rejected event and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: i64,
    pub feed: String,
    pub event_id: Option<String>,
    /// The error code ([`crate::feeds::FeedError::code`]).
    pub code: String,
    pub message: String,
    /// The event as it was sent (or as far as it could be read).
    pub body: String,
    pub received_at_ms: i64,
}

/// Functions over the `events` and `dead_letters` tables.
#[derive(Debug, Clone, Copy)]
pub struct EventLog;

impl EventLog {
    /// Appends an accepted event; `None` when its `event_id` is already in the log
    /// (a duplicate, which is acknowledged and not processed again).
    pub fn append(
        conn: &Connection,
        event: &FeedEvent,
        received_at_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let inserted = conn
            .prepare_cached(
                "INSERT OR IGNORE INTO events (event_id, feed, sku, received_at_ms, body)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                event.event_id(),
                event.kind().as_str(),
                event.sku().as_str(),
                received_at_ms,
                event.to_feed_json()
            ])?;
        Ok((inserted == 1).then(|| conn.last_insert_rowid()))
    }

    /// Stores a rejected event with its reason.
    pub fn dead_letter(
        conn: &Connection,
        feed: &str,
        event_id: Option<&str>,
        code: &str,
        message: &str,
        body: &str,
        received_at_ms: i64,
    ) -> Result<i64, StoreError> {
        conn.execute(
            "INSERT INTO dead_letters (feed, event_id, code, message, body, received_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![feed, event_id, code, message, body, received_at_ms],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Up to `limit` accepted events not processed yet, in log order.
    pub fn pending(conn: &Connection, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let mut stmt = conn.prepare_cached(
            "SELECT seq, feed, body, received_at_ms FROM events
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let cursor = processed_through(conn)?;
        let rows = stmt.query_map([cursor, limit as i64], read_row)?;
        rows.map(|row| row?.into_stored()).collect()
    }

    /// The accepted events with `first_seq <= seq <= last_seq`, in log order (a batch
    /// being replayed after a crash, see [`crate::pipeline`]).
    pub fn range(
        conn: &Connection,
        first_seq: i64,
        last_seq: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut stmt = conn.prepare_cached(
            "SELECT seq, feed, body, received_at_ms FROM events
             WHERE seq >= ?1 AND seq <= ?2 ORDER BY seq",
        )?;
        let rows = stmt.query_map([first_seq, last_seq], read_row)?;
        rows.map(|row| row?.into_stored()).collect()
    }

    /// The processing cursor: the last processed `seq` (0: none yet).
    pub fn processed_through(conn: &Connection) -> Result<i64, StoreError> {
        processed_through(conn)
    }

    /// Marks every event up to `last_seq` processed (inside the transaction that
    /// applied them): batches are the oldest pending events in order, and a later event
    /// always gets a higher sequence number (SQLite has one writer at a time).
    pub fn mark_processed_through(conn: &Connection, last_seq: i64) -> Result<(), StoreError> {
        super::meta_set(conn, CURSOR_KEY, &last_seq.to_string())
    }

    /// Number of accepted events, and of those not processed yet.
    pub fn counts(conn: &Connection) -> Result<(i64, i64), StoreError> {
        let cursor = processed_through(conn)?;
        Ok(conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(seq > ?1), 0) FROM events",
            [cursor],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?)
    }

    /// Accepted events not processed yet (from the sequence numbers: no scan).
    pub fn backlog(conn: &Connection) -> Result<i64, StoreError> {
        let cursor = processed_through(conn)?;
        let last: i64 = conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |row| {
            row.get(0)
        })?;
        Ok((last - cursor).max(0))
    }

    /// Dead letters kept.
    pub fn dead_letter_count(conn: &Connection) -> Result<i64, StoreError> {
        Ok(conn.query_row("SELECT COUNT(*) FROM dead_letters", [], |row| row.get(0))?)
    }

    /// The most recent dead letters, newest first.
    pub fn dead_letters(conn: &Connection, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let mut stmt = conn.prepare_cached(
            "SELECT id, feed, event_id, code, message, body, received_at_ms
             FROM dead_letters ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |row| {
            Ok(DeadLetter {
                id: row.get(0)?,
                feed: row.get(1)?,
                event_id: row.get(2)?,
                code: row.get(3)?,
                message: row.get(4)?,
                body: row.get(5)?,
                received_at_ms: row.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The catalog currency of every SKU whose catalog event was accepted, in log
    /// order (so the latest catalog event wins): what ingestion checks SKUs against.
    pub fn catalog_currencies(conn: &Connection) -> Result<HashMap<Sku, Currency>, StoreError> {
        let mut stmt =
            conn.prepare("SELECT seq, body FROM events WHERE feed = 'catalog' ORDER BY seq")?;
        let rows = stmt.query_map([], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
        })?;
        let mut known = HashMap::new();
        for row in rows {
            let (seq, body) = row?;
            if let FeedEvent::Catalog(catalog) = decode(seq, "catalog", &body)? {
                known.insert(catalog.sku, catalog.currency);
            }
        }
        Ok(known)
    }
}

const CURSOR_KEY: &str = "processed_through";

/// `seq, feed, body, received_at_ms` of an `events` row, not decoded yet.
struct RawEvent(i64, String, String, i64);

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawEvent> {
    Ok(RawEvent(row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

impl RawEvent {
    fn into_stored(self) -> Result<StoredEvent, StoreError> {
        let RawEvent(seq, feed, body, received_at_ms) = self;
        Ok(StoredEvent {
            seq,
            received_at_ms,
            event: decode(seq, &feed, &body)?,
        })
    }
}

/// The last processed sequence number (0: none yet).
fn processed_through(conn: &Connection) -> Result<i64, StoreError> {
    match super::meta_get(conn, CURSOR_KEY)? {
        None => Ok(0),
        Some(text) => text
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("processing cursor {text:?}"))),
    }
}

/// Reads a stored event. It was validated ([`crate::feeds::parse_event`]) when it was accepted and
/// stored in its normalised form, so it is read straight into its type: the checks
/// would only repeat, at several times the cost of the read.
fn decode(seq: i64, feed: &str, body: &str) -> Result<FeedEvent, StoreError> {
    let kind: FeedKind = feed
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("event {seq}: unknown feed {feed:?}")))?;
    let event = match kind {
        FeedKind::Catalog => serde_json::from_str(body).map(FeedEvent::Catalog),
        FeedKind::Cost => serde_json::from_str(body).map(FeedEvent::Cost),
        FeedKind::Competitor => serde_json::from_str(body).map(FeedEvent::Competitor),
        FeedKind::Inventory => serde_json::from_str(body).map(FeedEvent::Inventory),
        FeedKind::Sales => serde_json::from_str(body).map(FeedEvent::Sales),
        FeedKind::Promotions => serde_json::from_str(body).map(FeedEvent::Promotions),
    };
    event.map_err(|e| StoreError::Corrupt(format!("event {seq}: {e}")))
}
