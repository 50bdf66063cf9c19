//! The group-commit ingest writer.
//!
//! One thread owns the ingest connection. It takes every submission waiting in its
//! channel (up to [`MAX_GROUP_EVENTS`] events), validates and writes them all in one
//! transaction, commits once (one fsync), and only then answers each submitter. An
//! event answered [`Outcome::Accepted`] is therefore on disk; a crash before the commit
//! answers nobody, and the producer retries with the same `event_id`.
//!
//! Besides the checks of [`crate::feeds::parse_event`], the writer knows every SKU
//! whose catalog event it accepted (and its currency), so an event for an unknown SKU
//! or in the wrong currency is rejected at the door instead of after the fact.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use edgeprice_pricing::{Currency, Sku};
use rusqlite::Connection;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::{EventLog, StoreError};
use crate::feeds::{parse_event, FeedError, FeedEvent, FeedKind};
use crate::sqlite::WalCheckpointer;

/// Most events written in one transaction.
pub const MAX_GROUP_EVENTS: usize = 8_192;

/// What one group commit did: the pipeline's wake-up and the ingest timings in the
/// admin metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupReport {
    /// The highest `seq` accepted in the group (none: nothing new to process).
    pub max_seq: Option<i64>,
    /// Waiting for the database's write lock, µs.
    pub lock_wait_us: u64,
    /// Validating and writing the events, µs.
    pub write_us: u64,
    /// The commit (its fsync), µs.
    pub commit_us: u64,
}

/// One raw event as a producer sent it.
#[derive(Debug, Clone)]
pub struct Submission {
    pub feed: FeedKind,
    pub body: Vec<u8>,
}

/// What became of one submitted event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Durable in the log at this position; it will be processed.
    Accepted { seq: i64 },
    /// Its `event_id` was already in the log: acknowledged, not processed again.
    Duplicate,
    /// Refused and kept in the dead-letter table.
    Rejected(FeedError),
}

struct Request {
    submissions: Vec<Submission>,
    reply_tx: oneshot::Sender<Result<Vec<Outcome>, StoreError>>,
}

/// Handle to the ingest writer thread. Dropping it stops the thread once the
/// submissions already queued are written.
#[derive(Debug)]
pub struct Ingestor {
    requests_tx: Option<mpsc::Sender<Request>>,
    writer_jh: Option<JoinHandle<()>>,
    /// The database's WAL checkpoints: the ingestor runs in every process that writes
    /// `control.db`, and no connection checkpoints on commit.
    _checkpointer: WalCheckpointer,
}

impl Ingestor {
    /// Opens the database in `data_dir` and starts the writer. `on_commit` is called
    /// after each commit, before the submitters are answered, so the pipeline can be
    /// woken when the group accepted events.
    pub fn start(
        data_dir: &Path,
        on_commit: impl Fn(&GroupReport) + Send + 'static,
    ) -> Result<Ingestor, StoreError> {
        let conn = super::open(data_dir)?;
        let checkpointer =
            WalCheckpointer::start(super::open(data_dir)?, "control").map_err(|source| {
                StoreError::DataDir {
                    path: data_dir.to_owned(),
                    source,
                }
            })?;
        let known = EventLog::catalog_currencies(&conn)?;
        let (requests_tx, requests_rx) = mpsc::channel();
        let writer = Writer { conn, known };
        let writer_jh = std::thread::Builder::new()
            .name("edgeprice-ingest".into())
            .spawn(move || writer.run(requests_rx, on_commit))
            .map_err(|source| StoreError::DataDir {
                path: data_dir.to_owned(),
                source,
            })?;
        Ok(Ingestor {
            requests_tx: Some(requests_tx),
            writer_jh: Some(writer_jh),
            _checkpointer: checkpointer,
        })
    }

    fn send(
        &self,
        submissions: Vec<Submission>,
    ) -> Result<oneshot::Receiver<Result<Vec<Outcome>, StoreError>>, StoreError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.requests_tx
            .as_ref()
            .ok_or(StoreError::Stopped)?
            .send(Request {
                submissions,
                reply_tx,
            })
            .map_err(|_| StoreError::Stopped)?;
        Ok(reply_rx)
    }

    /// Submits events; resolves once they are durable (or refused), one outcome per
    /// submission in order.
    pub async fn ingest(&self, submissions: Vec<Submission>) -> Result<Vec<Outcome>, StoreError> {
        self.send(submissions)?
            .await
            .map_err(|_| StoreError::Stopped)?
    }

    /// [`Self::ingest`] for threads outside an async runtime.
    pub fn ingest_blocking(
        &self,
        submissions: Vec<Submission>,
    ) -> Result<Vec<Outcome>, StoreError> {
        self.send(submissions)?
            .blocking_recv()
            .map_err(|_| StoreError::Stopped)?
    }
}

impl Drop for Ingestor {
    fn drop(&mut self) {
        self.requests_tx.take();
        if let Some(writer_jh) = self.writer_jh.take() {
            let _ = writer_jh.join();
        }
    }
}

struct Writer {
    conn: Connection,
    /// Catalog currency per SKU, as of the last accepted catalog event.
    known: HashMap<Sku, Currency>,
}

impl Writer {
    fn run(mut self, requests_rx: mpsc::Receiver<Request>, on_commit: impl Fn(&GroupReport)) {
        while let Ok(first) = requests_rx.recv() {
            let mut group = vec![first];
            let mut events = group[0].submissions.len();
            while events < MAX_GROUP_EVENTS {
                match requests_rx.try_recv() {
                    Ok(request) => {
                        events += request.submissions.len();
                        group.push(request);
                    }
                    Err(_) => break,
                }
            }
            match self.write_group(&group) {
                Ok((outcomes, report)) => {
                    debug!(requests = group.len(), events, "ingest group committed");
                    // Wake the pipeline before acknowledging: it starts sooner, and a
                    // producer that sees its ack can rely on the wake-up having happened.
                    on_commit(&report);
                    for (request, outcomes) in group.into_iter().zip(outcomes) {
                        let _ = request.reply_tx.send(Ok(outcomes));
                    }
                }
                Err(err) => {
                    warn!(error = %err, events, "ingest group failed; nothing of it was stored");
                    // The transaction rolled back: forget SKUs it would have added.
                    if let Ok(known) = EventLog::catalog_currencies(&self.conn) {
                        self.known = known;
                    }
                    for request in group {
                        let _ = request
                            .reply_tx
                            .send(Err(StoreError::GroupFailed(err.to_string())));
                    }
                }
            }
        }
    }

    fn write_group(
        &mut self,
        group: &[Request],
    ) -> Result<(Vec<Vec<Outcome>>, GroupReport), StoreError> {
        let now_ms = now_ms();
        let locking = Instant::now();
        // IMMEDIATE: take the write lock up front. A deferred transaction that reads
        // (the dedup check) and then writes fails with SQLITE_BUSY at once, without
        // waiting, when the pipeline committed in between.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let lock_wait_us = locking.elapsed().as_micros() as u64;
        let writing = Instant::now();
        let mut max_seq = None;
        let mut all = Vec::with_capacity(group.len());
        for request in group {
            let mut outcomes = Vec::with_capacity(request.submissions.len());
            for submission in &request.submissions {
                let outcome = match parse_event(submission.feed, &submission.body)
                    .and_then(|event| check_known(&self.known, event))
                {
                    Ok(event) => match EventLog::append(&tx, &event, now_ms)? {
                        Some(seq) => {
                            if let FeedEvent::Catalog(catalog) = &event {
                                self.known.insert(catalog.sku.clone(), catalog.currency);
                            }
                            max_seq = Some(seq);
                            Outcome::Accepted { seq }
                        }
                        None => Outcome::Duplicate,
                    },
                    Err(error) => {
                        let body = String::from_utf8_lossy(&submission.body);
                        let event_id =
                            serde_json::from_slice::<serde_json::Value>(&submission.body)
                                .ok()
                                .and_then(|v| v.get("event_id")?.as_str().map(str::to_owned));
                        EventLog::dead_letter(
                            &tx,
                            submission.feed.as_str(),
                            event_id.as_deref(),
                            error.code(),
                            &error.to_string(),
                            &body,
                            now_ms,
                        )?;
                        debug!(feed = %submission.feed, code = error.code(), "event dead-lettered");
                        Outcome::Rejected(error)
                    }
                };
                outcomes.push(outcome);
            }
            all.push(outcomes);
        }
        let write_us = writing.elapsed().as_micros() as u64;
        let committing = Instant::now();
        tx.commit()?;
        Ok((
            all,
            GroupReport {
                max_seq,
                lock_wait_us,
                write_us,
                commit_us: committing.elapsed().as_micros() as u64,
            },
        ))
    }
}

fn check_known(known: &HashMap<Sku, Currency>, event: FeedEvent) -> Result<FeedEvent, FeedError> {
    let currency = match &event {
        FeedEvent::Catalog(_) => return Ok(event),
        FeedEvent::Cost(e) => Some(e.currency),
        FeedEvent::Competitor(e) => Some(e.currency),
        FeedEvent::Inventory(_) | FeedEvent::Sales(_) | FeedEvent::Promotions(_) => None,
    };
    let catalog = known
        .get(event.sku())
        .ok_or_else(|| FeedError::UnknownSku(event.sku().to_string()))?;
    match currency {
        Some(got) if got != *catalog => Err(FeedError::CurrencyMismatch {
            got,
            catalog: *catalog,
        }),
        _ => Ok(event),
    }
}

/// Wall-clock Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    const T: i64 = 1_790_000_000_000;

    fn catalog(event_id: &str, sku: &str) -> Submission {
        Submission {
            feed: FeedKind::Catalog,
            body: format!(r#"{{"event_id":"{event_id}","sku":"{sku}","category":"snacks","currency":"EUR","list_price_minor":1500,"tax_rate_bp":2000,"occurred_at_ms":{T}}}"#).into_bytes(),
        }
    }

    fn cost(event_id: &str, sku: &str, currency: &str, cost: i64) -> Submission {
        Submission {
            feed: FeedKind::Cost,
            body: format!(r#"{{"event_id":"{event_id}","sku":"{sku}","vendor":"acme","currency":"{currency}","cost_minor":{cost},"effective_at_ms":{T},"occurred_at_ms":{T}}}"#).into_bytes(),
        }
    }

    #[test]
    fn accepts_dedups_and_dead_letters_and_nothing_accepted_is_lost_on_restart() {
        let dir = tempfile::tempdir().unwrap();
        let last_commit = Arc::new(AtomicI64::new(0));
        let seen = last_commit.clone();
        let ingestor = Ingestor::start(dir.path(), move |report| {
            if let Some(seq) = report.max_seq {
                seen.store(seq, Ordering::SeqCst)
            }
        })
        .unwrap();
        let outcomes = ingestor
            .ingest_blocking(vec![
                catalog("c1", "A-1"),
                cost("k1", "A-1", "EUR", 600),
                cost("k1", "A-1", "EUR", 600),
                cost("k2", "B-9", "EUR", 600),
                cost("k3", "A-1", "USD", 600),
                cost("k4", "A-1", "EUR", -1),
            ])
            .unwrap();
        assert!(matches!(outcomes[0], Outcome::Accepted { .. }));
        let Outcome::Accepted { seq: cost_seq } = outcomes[1] else {
            panic!("{:?}", outcomes[1])
        };
        assert_eq!(outcomes[2], Outcome::Duplicate);
        let codes: Vec<_> = outcomes[3..]
            .iter()
            .map(|o| match o {
                Outcome::Rejected(e) => e.code(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            codes,
            ["unknown_sku", "currency_mismatch", "negative_amount"]
        );
        assert_eq!(last_commit.load(Ordering::SeqCst), cost_seq);
        drop(ingestor);

        // After a restart: the log has exactly the accepted events, the dead letters
        // keep their reasons, and the catalog is still known.
        let conn = super::super::open(dir.path()).unwrap();
        assert_eq!(EventLog::counts(&conn).unwrap(), (2, 2));
        let pending = EventLog::pending(&conn, 10).unwrap();
        assert_eq!(
            pending
                .iter()
                .map(|e| e.event.event_id())
                .collect::<Vec<_>>(),
            ["c1", "k1"]
        );
        let dead = EventLog::dead_letters(&conn, 10).unwrap();
        assert_eq!(dead.len(), 3);
        assert_eq!(dead[0].code, "negative_amount");
        assert_eq!(dead[0].event_id.as_deref(), Some("k4"));
        drop(conn);
        let ingestor = Ingestor::start(dir.path(), |_| {}).unwrap();
        let again = ingestor
            .ingest_blocking(vec![
                cost("k1", "A-1", "EUR", 600),
                cost("k5", "A-1", "EUR", 610),
            ])
            .unwrap();
        assert_eq!(again[0], Outcome::Duplicate);
        assert!(matches!(again[1], Outcome::Accepted { .. }));
    }

    #[test]
    fn concurrent_submitters_share_commits_and_all_get_answers() {
        let dir = tempfile::tempdir().unwrap();
        let ingestor = Arc::new(Ingestor::start(dir.path(), |_| {}).unwrap());
        ingestor
            .ingest_blocking(vec![catalog("c1", "A-1")])
            .unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let ingestor = ingestor.clone();
                std::thread::spawn(move || {
                    (0..50)
                        .map(|i| {
                            let outcomes = ingestor
                                .ingest_blocking(vec![cost(
                                    &format!("k{t}-{i}"),
                                    "A-1",
                                    "EUR",
                                    600,
                                )])
                                .unwrap();
                            matches!(outcomes[0], Outcome::Accepted { .. })
                        })
                        .filter(|accepted| *accepted)
                        .count()
                })
            })
            .collect();
        let accepted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(accepted, 200);
        drop(ingestor);
        let conn = super::super::open(dir.path()).unwrap();
        assert_eq!(EventLog::counts(&conn).unwrap().0, 201);
    }
}
