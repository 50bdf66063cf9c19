//! The hash-chained, append-only audit log of decisions (and, later, admin actions).
//!
//! Each record `n` is stored with `hash_n = SHA-256(hash_{n−1} ‖ n ‖ at_ms ‖ len(sku) ‖
//! sku ‖ record)`, where `n` and `at_ms` are 8-byte big-endian integers, `len(sku)` a
//! 4-byte big-endian length, `record` the canonical JSON of the record (serde field
//! order, no maps with unordered keys, integers only) and `hash_0` 32 zero bytes. The
//! newest `(seq, hash)` is kept as the head in `meta`; an external copy of the head
//! (printed by [`verify`]) also catches removing records from the end.
//!
//! [`verify`] walks the chain and reports the first sequence number that is missing or
//! whose hash does not match: any edit, insertion or removal shows up there.

use rusqlite::{params, Connection};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::store::{meta_get, meta_set, StoreError};

const HEAD_KEY: &str = "audit_head";

/// One stored audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub sku: String,
    pub at_ms: i64,
    /// Canonical JSON of the record.
    pub record: String,
    /// Hex SHA-256 chain hash.
    pub hash: String,
}

/// The result of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Records checked.
    pub records: i64,
    /// Head of the chain: last sequence number and its hash (hex).
    pub head_seq: i64,
    pub head_hash: String,
    /// The first record that breaks the chain, if any.
    pub first_bad: Option<BadRecord>,
}

impl VerifyReport {
    /// Whether the whole chain verified.
    pub fn is_intact(&self) -> bool {
        self.first_bad.is_none()
    }
}

/// Where and how the chain broke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadRecord {
    pub seq: i64,
    /// `missing`, `hash_mismatch` or `head_mismatch`.
    pub problem: &'static str,
}

fn chain_hash(prev: &[u8; 32], seq: i64, at_ms: i64, sku: &str, record: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(seq.to_be_bytes());
    hasher.update(at_ms.to_be_bytes());
    hasher.update((sku.len() as u32).to_be_bytes());
    hasher.update(sku.as_bytes());
    hasher.update(record.as_bytes());
    hasher.finalize().into()
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

fn from_hex(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

fn head(conn: &Connection) -> Result<(i64, [u8; 32]), StoreError> {
    match meta_get(conn, HEAD_KEY)? {
        None => Ok((0, [0u8; 32])),
        Some(text) => {
            let parsed = text
                .split_once(':')
                .and_then(|(seq, hash)| Some((seq.parse().ok()?, from_hex(hash)?)));
            parsed.ok_or_else(|| StoreError::Corrupt(format!("audit head {text:?}")))
        }
    }
}

/// Appends a record (inside the caller's transaction) and returns its sequence number.
pub fn append(conn: &Connection, sku: &str, at_ms: i64, record: &str) -> Result<i64, StoreError> {
    let mut appender = Appender::start(conn)?;
    let seq = appender.append(sku, at_ms, record)?;
    appender.finish()?;
    Ok(seq)
}

/// Appends many records inside one transaction: the head is read once at the start and
/// written once by [`Appender::finish`], which must run in the same transaction (a
/// dropped, unfinished appender leaves records past the stored head, so the caller's
/// transaction must then roll back; every caller returns the error, which does).
#[derive(Debug)]
pub struct Appender<'c> {
    conn: &'c Connection,
    last_seq: i64,
    last_hash: [u8; 32],
    appended: usize,
}

impl<'c> Appender<'c> {
    /// Reads the head of the chain.
    pub fn start(conn: &'c Connection) -> Result<Appender<'c>, StoreError> {
        let (last_seq, last_hash) = head(conn)?;
        Ok(Appender {
            conn,
            last_seq,
            last_hash,
            appended: 0,
        })
    }

    /// Appends one record and returns its sequence number.
    pub fn append(&mut self, sku: &str, at_ms: i64, record: &str) -> Result<i64, StoreError> {
        let seq = self.last_seq + 1;
        let hash = chain_hash(&self.last_hash, seq, at_ms, sku, record);
        self.conn
            .prepare_cached(
                "INSERT INTO audit (seq, sku, at_ms, record, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![seq, sku, at_ms, record, to_hex(&hash)])?;
        self.last_seq = seq;
        self.last_hash = hash;
        self.appended += 1;
        Ok(seq)
    }

    /// Stores the new head (nothing to do when nothing was appended).
    pub fn finish(self) -> Result<(), StoreError> {
        if self.appended > 0 {
            let head = format!("{}:{}", self.last_seq, to_hex(&self.last_hash));
            meta_set(self.conn, HEAD_KEY, &head)?;
        }
        Ok(())
    }
}

/// A row of `SELECT seq, sku, at_ms, record, hash FROM audit`.
fn entry_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        seq: row.get(0)?,
        sku: row.get(1)?,
        at_ms: row.get(2)?,
        record: row.get(3)?,
        hash: row.get(4)?,
    })
}

/// The newest `limit` records of a SKU, newest first.
pub fn records_for(
    conn: &Connection,
    sku: &str,
    limit: usize,
) -> Result<Vec<AuditEntry>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, sku, at_ms, record, hash FROM audit WHERE sku = ?1 ORDER BY seq DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![sku, limit as i64], entry_of)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The newest `limit` records of every kind (decisions and operator actions) with a
/// sequence number below `before` (all when `None`), newest first.
pub fn recent(
    conn: &Connection,
    limit: usize,
    before: Option<i64>,
) -> Result<Vec<AuditEntry>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, sku, at_ms, record, hash FROM audit WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![before.unwrap_or(i64::MAX), limit as i64], entry_of)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Verifies the audit chain of the control plane's database in `data_dir`, opened
/// read-only (what `edgeprice audit verify` runs).
pub fn verify_data_dir(data_dir: &std::path::Path) -> Result<VerifyReport, StoreError> {
    let path = data_dir.join(crate::store::DB_FILE);
    let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    verify(&conn)
}

/// Walks the whole chain; see the module docs.
pub fn verify(conn: &Connection) -> Result<VerifyReport, StoreError> {
    let mut stmt = conn.prepare("SELECT seq, sku, at_ms, record, hash FROM audit ORDER BY seq")?;
    let mut rows = stmt.query([])?;
    let mut prev = [0u8; 32];
    let mut expected = 1i64;
    let mut first_bad = None;
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        let sku: String = row.get(1)?;
        let at_ms: i64 = row.get(2)?;
        let record: String = row.get(3)?;
        let stored: String = row.get(4)?;
        if seq != expected {
            first_bad = Some(BadRecord {
                seq: expected,
                problem: "missing",
            });
            break;
        }
        let hash = chain_hash(&prev, seq, at_ms, &sku, &record);
        if to_hex(&hash) != stored {
            first_bad = Some(BadRecord {
                seq,
                problem: "hash_mismatch",
            });
            break;
        }
        prev = hash;
        expected += 1;
    }
    let records = expected - 1;
    let (head_seq, head_hash) = head(conn)?;
    if first_bad.is_none() && (head_seq != records || head_hash != prev) {
        // Records were removed from the end (or the head was rewritten).
        first_bad = Some(BadRecord {
            seq: records + 1,
            problem: "head_mismatch",
        });
    }
    Ok(VerifyReport {
        records,
        head_seq,
        head_hash: to_hex(&head_hash),
        first_bad,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with(n: i64) -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open(dir.path()).unwrap();
        for i in 1..=n {
            let seq = append(
                &conn,
                "A-1",
                1_000 + i,
                &format!(r#"{{"price_minor":{i}}}"#),
            )
            .unwrap();
            assert_eq!(seq, i);
        }
        (dir, conn)
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let (dir, conn) = log_with(5);
        assert!(verify_data_dir(dir.path()).unwrap().is_intact());
        let report = verify(&conn).unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!((report.records, report.head_seq), (5, 5));
        assert_eq!(records_for(&conn, "A-1", 2).unwrap()[0].seq, 5);
    }

    #[test]
    fn records_appended_together_chain_like_records_appended_one_by_one() {
        let (_one_by_one_dir, one_by_one) = log_with(4);
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open(dir.path()).unwrap();
        append(&conn, "A-1", 1_001, r#"{"price_minor":1}"#).unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        let mut appender = Appender::start(&tx).unwrap();
        for i in 2..=4 {
            let seq = appender
                .append("A-1", 1_000 + i, &format!(r#"{{"price_minor":{i}}}"#))
                .unwrap();
            assert_eq!(seq, i);
        }
        appender.finish().unwrap();
        tx.commit().unwrap();
        let together = verify(&conn).unwrap();
        assert!(together.is_intact(), "{together:?}");
        assert_eq!(together, verify(&one_by_one).unwrap());
    }

    #[test]
    fn an_edited_record_is_reported_at_its_sequence_number() {
        let (_dir, conn) = log_with(5);
        conn.execute(
            "UPDATE audit SET record = '{\"price_minor\":1}' WHERE seq = 3",
            [],
        )
        .unwrap();
        let report = verify(&conn).unwrap();
        assert_eq!(
            report.first_bad,
            Some(BadRecord {
                seq: 3,
                problem: "hash_mismatch"
            })
        );
    }

    #[test]
    fn a_removed_record_is_reported_in_the_middle_or_at_the_end() {
        let (_dir, conn) = log_with(5);
        conn.execute("DELETE FROM audit WHERE seq = 2", []).unwrap();
        assert_eq!(
            verify(&conn).unwrap().first_bad,
            Some(BadRecord {
                seq: 2,
                problem: "missing"
            })
        );
        let (_dir, conn) = log_with(5);
        conn.execute("DELETE FROM audit WHERE seq = 5", []).unwrap();
        assert_eq!(
            verify(&conn).unwrap().first_bad,
            Some(BadRecord {
                seq: 5,
                problem: "head_mismatch"
            })
        );
    }

    #[test]
    fn a_changed_time_or_sku_breaks_the_chain_too() {
        let (_dir, conn) = log_with(3);
        conn.execute("UPDATE audit SET at_ms = 0 WHERE seq = 1", [])
            .unwrap();
        assert_eq!(verify(&conn).unwrap().first_bad.map(|b| b.seq), Some(1));
        let (_dir, conn) = log_with(3);
        conn.execute("UPDATE audit SET sku = 'B' WHERE seq = 2", [])
            .unwrap();
        assert_eq!(verify(&conn).unwrap().first_bad.map(|b| b.seq), Some(2));
    }
}
