//! The feed consumer: Kafka feed topics into the ingestor, offsets committed once
//! durable (see the module docs of [`crate::kafka`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::{Message, Offset, TopicPartitionList};
use tracing::{debug, error, info, warn};

use super::producer::{DurableProducer, Outgoing};
use super::{KafkaConfig, KafkaError, FEED_HEADER, REASON_HEADER};
use crate::feeds::FeedKind;
use crate::store::{Ingestor, Outcome, StoreError, Submission};

/// How long one poll waits for a first message; bounds how long a stop takes.
const POLL_WAIT: Duration = Duration::from_millis(100);
/// Pause before retrying a batch the ingestor or the dead-letter topic failed.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Counters of a [`FeedConsumer`], since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Messages taken from the feed topics and handed to the ingestor (a batch retried
    /// after a storage failure counts once).
    pub consumed: u64,
    /// Events the ingestor accepted (durable, to be processed).
    pub accepted: u64,
    /// Events whose `event_id` was already in the log.
    pub duplicates: u64,
    /// Events rejected, kept as dead letters and produced to the dead-letter topic.
    pub rejected: u64,
    /// Offset commits that succeeded, one per batch.
    pub commits: u64,
    /// Offset commits the group refused (say, the partition moved in a rebalance); the
    /// new owner gets those messages again, and dedup by `event_id` absorbs them.
    pub commit_failures: u64,
}

#[derive(Debug, Default)]
struct Counters {
    consumed: AtomicU64,
    accepted: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    commits: AtomicU64,
    commit_failures: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> ConsumerStats {
        ConsumerStats {
            consumed: self.consumed.load(Ordering::Acquire),
            accepted: self.accepted.load(Ordering::Acquire),
            duplicates: self.duplicates.load(Ordering::Acquire),
            rejected: self.rejected.load(Ordering::Acquire),
            commits: self.commits.load(Ordering::Acquire),
            commit_failures: self.commit_failures.load(Ordering::Acquire),
        }
    }
}

/// A running feed consumer: one consumer-group member on its own thread. Dropping it
/// stops it like [`FeedConsumer::stop`] does, without the result.
#[derive(Debug)]
pub struct FeedConsumer {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    consumer_jh: Option<JoinHandle<Result<(), KafkaError>>>,
}

impl FeedConsumer {
    /// Subscribes to every feed topic (`{topic_prefix}{feed}`) in `config.group_id` and
    /// starts consuming into `ingestor`. A new group starts at the earliest offsets, so
    /// nothing already on the topics is skipped.
    pub fn start(
        config: &KafkaConfig,
        ingestor: Arc<Ingestor>,
    ) -> Result<FeedConsumer, KafkaError> {
        if config.poll_batch_size == 0 {
            return Err(KafkaError::Config(
                "poll_batch_size must be at least 1".into(),
            ));
        }
        let mut client = config.client_config();
        client
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest");
        config.apply_properties(&mut client);
        let consumer: BaseConsumer = client.create()?;
        let feeds_by_topic: HashMap<String, FeedKind> = FeedKind::ALL
            .into_iter()
            .map(|feed| (config.feed_topic(feed), feed))
            .collect();
        let topics: Vec<&str> = feeds_by_topic.keys().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        let dead_letters = DurableProducer::new(config)?;

        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let worker = Worker {
            consumer,
            dead_letters,
            dead_letter_topic: config.dead_letter_topic.clone(),
            feeds_by_topic,
            ingestor,
            batch_size: config.poll_batch_size,
            stop: Arc::clone(&stop),
            counters: Arc::clone(&counters),
        };
        let consumer_jh = std::thread::Builder::new()
            .name("edgeprice-kafka-feeds".into())
            .spawn(move || worker.run())
            .map_err(|err| KafkaError::Thread(err.to_string()))?;
        info!(group = %config.group_id, prefix = %config.topic_prefix, "kafka feed consumer started");
        Ok(FeedConsumer {
            stop,
            counters,
            consumer_jh: Some(consumer_jh),
        })
    }

    /// The counters so far.
    pub fn stats(&self) -> ConsumerStats {
        self.counters.snapshot()
    }

    /// Whether the consumer thread is still running (it ends on its own only when the
    /// ingestor stops).
    pub fn is_running(&self) -> bool {
        self.consumer_jh
            .as_ref()
            .is_some_and(|consumer_jh| !consumer_jh.is_finished())
    }

    /// Stops gracefully: the batch in hand is finished and committed (unless storing it
    /// keeps failing, in which case it is left uncommitted for the next consumer), the
    /// consumer leaves its group, and the dead-letter producer is flushed. Returns why
    /// the consumer had stopped on its own, if it had.
    pub fn stop(mut self) -> Result<ConsumerStats, KafkaError> {
        self.join()?;
        Ok(self.stats())
    }

    fn join(&mut self) -> Result<(), KafkaError> {
        self.stop.store(true, Ordering::Release);
        match self.consumer_jh.take() {
            Some(consumer_jh) => consumer_jh
                .join()
                .map_err(|_| KafkaError::Thread("the consumer thread panicked".into()))?,
            None => Ok(()),
        }
    }
}

impl Drop for FeedConsumer {
    fn drop(&mut self) {
        if let Err(err) = self.join() {
            error!(error = %err, code = err.code(), "kafka feed consumer failed");
        }
    }
}

/// One polled message, copied out of librdkafka's buffer.
struct Polled {
    topic: String,
    partition: i32,
    offset: i64,
    feed: FeedKind,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
}

struct Worker {
    consumer: BaseConsumer,
    dead_letters: DurableProducer,
    dead_letter_topic: String,
    feeds_by_topic: HashMap<String, FeedKind>,
    ingestor: Arc<Ingestor>,
    batch_size: usize,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
}

enum Handled {
    Committed,
    /// A stop came while the batch could not be stored; nothing was committed.
    Abandoned,
}

impl Worker {
    fn run(self) -> Result<(), KafkaError> {
        let result = self.consume();
        if let Err(err) = &result {
            error!(error = %err, code = err.code(), "kafka feed consumer stopped");
        }
        // Dropping the consumer leaves the group (rd_kafka_consumer_close), so the
        // partitions move to the other members at once instead of after a session
        // timeout.
        self.dead_letters.flush(Duration::from_secs(5));
        drop(self.consumer);
        info!("kafka feed consumer stopped");
        result
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn consume(&self) -> Result<(), KafkaError> {
        while !self.stopping() {
            let batch = self.poll_batch();
            if batch.is_empty() {
                continue;
            }
            match self.handle(&batch)? {
                Handled::Committed => {}
                Handled::Abandoned => break,
            }
        }
        Ok(())
    }

    /// Up to `batch_size` messages: waits [`POLL_WAIT`] for the first, then takes what
    /// is already fetched.
    fn poll_batch(&self) -> Vec<Polled> {
        let mut batch = Vec::new();
        let mut wait = POLL_WAIT;
        while batch.len() < self.batch_size {
            let message = match self.consumer.poll(wait) {
                None => break,
                Some(Err(err)) => {
                    // librdkafka retries broker errors itself; these are reports.
                    warn!(error = %err, "kafka consumer error");
                    break;
                }
                Some(Ok(message)) => message,
            };
            wait = Duration::ZERO;
            let Some(&feed) = self.feeds_by_topic.get(message.topic()) else {
                debug_assert!(false, "message from a topic we did not subscribe to");
                continue;
            };
            batch.push(Polled {
                topic: message.topic().to_owned(),
                partition: message.partition(),
                offset: message.offset(),
                feed,
                key: message.key().map(<[u8]>::to_vec),
                // A null payload is not an event: the ingestor rejects it as malformed
                // and it goes to the dead letters like any other bad event.
                payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            });
        }
        batch
    }

    fn handle(&self, batch: &[Polled]) -> Result<Handled, KafkaError> {
        let submissions: Vec<Submission> = batch
            .iter()
            .map(|polled| Submission {
                feed: polled.feed,
                body: polled.payload.clone(),
            })
            .collect();
        self.counters
            .consumed
            .fetch_add(batch.len() as u64, Ordering::AcqRel);
        // The position has moved past the batch: skipping ahead after a failure would
        // lose it, so the same batch is retried until it is stored or we stop.
        let outcomes = loop {
            match self.ingestor.ingest_blocking(submissions.clone()) {
                Ok(outcomes) => break outcomes,
                Err(StoreError::Stopped) => {
                    return Err(KafkaError::IngestStopped(StoreError::Stopped))
                }
                Err(err) => {
                    warn!(error = %err, code = err.code(), events = batch.len(), "storing a kafka batch failed; retrying");
                    if !self.pause_unless_stopping() {
                        return Ok(Handled::Abandoned);
                    }
                }
            }
        };
        debug_assert_eq!(outcomes.len(), batch.len());

        let mut rejected = Vec::new();
        for (polled, outcome) in batch.iter().zip(&outcomes) {
            match outcome {
                Outcome::Accepted { .. } => {
                    self.counters.accepted.fetch_add(1, Ordering::AcqRel);
                }
                Outcome::Duplicate => {
                    self.counters.duplicates.fetch_add(1, Ordering::AcqRel);
                }
                Outcome::Rejected(reason) => rejected.push((polled, reason.code())),
            }
        }
        if !rejected.is_empty() {
            loop {
                match self
                    .dead_letters
                    .send_all(rejected.iter().map(|(polled, code)| Outgoing {
                        topic: &self.dead_letter_topic,
                        key: polled.key.as_deref().unwrap_or_default(),
                        payload: Some(polled.payload.as_slice()),
                        headers: dead_letter_headers(polled, code),
                    })) {
                    Ok(_) => break,
                    Err(reason) => {
                        warn!(reason = %reason, topic = %self.dead_letter_topic, "producing dead letters failed; retrying");
                        if !self.pause_unless_stopping() {
                            return Ok(Handled::Abandoned);
                        }
                    }
                }
            }
            self.counters
                .rejected
                .fetch_add(rejected.len() as u64, Ordering::AcqRel);
        }
        self.commit(batch);
        Ok(Handled::Committed)
    }

    /// Commits the offset after the last message of each partition in `batch`.
    fn commit(&self, batch: &[Polled]) {
        let mut next_offsets: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for polled in batch {
            let next = next_offsets
                .entry((&polled.topic, polled.partition))
                .or_default();
            *next = (*next).max(polled.offset + 1);
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), next) in &next_offsets {
            if let Err(err) = offsets.add_partition_offset(topic, *partition, Offset::Offset(*next))
            {
                warn!(error = %err, topic, partition, "bad offset to commit");
            }
        }
        match self.consumer.commit(&offsets, CommitMode::Sync) {
            Ok(()) => {
                self.counters.commits.fetch_add(1, Ordering::AcqRel);
                debug!(
                    messages = batch.len(),
                    partitions = next_offsets.len(),
                    "kafka offsets committed"
                );
            }
            Err(err) => {
                self.counters.commit_failures.fetch_add(1, Ordering::AcqRel);
                warn!(error = %err, messages = batch.len(), "committing kafka offsets failed; the events may be delivered again and are deduplicated");
            }
        }
    }

    /// Sleeps [`RETRY_PAUSE`]; `false` if a stop was asked for.
    fn pause_unless_stopping(&self) -> bool {
        if self.stopping() {
            return false;
        }
        std::thread::sleep(RETRY_PAUSE);
        !self.stopping()
    }
}

fn dead_letter_headers(polled: &Polled, code: &str) -> OwnedHeaders {
    let partition = polled.partition.to_string();
    let offset = polled.offset.to_string();
    OwnedHeaders::new()
        .insert(Header {
            key: REASON_HEADER,
            value: Some(code),
        })
        .insert(Header {
            key: FEED_HEADER,
            value: Some(polled.feed.as_str()),
        })
        .insert(Header {
            key: "source_topic",
            value: Some(polled.topic.as_str()),
        })
        .insert(Header {
            key: "source_partition",
            value: Some(partition.as_str()),
        })
        .insert(Header {
            key: "source_offset",
            value: Some(offset.as_str()),
        })
}
