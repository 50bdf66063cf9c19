//! A producer that sends a batch of messages and waits for every delivery report: what
//! both the dead-letter path and the price-update publisher need before they may say
//! "durable".

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use super::KafkaConfig;

/// The delivery reports of one batch still to come, and the first failure among them.
#[derive(Debug, Default)]
pub(super) struct Batch {
    outstanding: AtomicUsize,
    first_failure: Mutex<Option<String>>,
}

impl Batch {
    fn fail(&self, reason: String) {
        let mut first = self.first_failure.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert(reason);
    }
}

/// Routes each delivery report to the batch its message belongs to.
#[derive(Debug, Default)]
pub(super) struct BatchContext;

impl ClientContext for BatchContext {}

impl ProducerContext for BatchContext {
    type DeliveryOpaque = Arc<Batch>;

    fn delivery(&self, result: &DeliveryResult<'_>, batch: Arc<Batch>) {
        if let Err((err, _message)) = result {
            batch.fail(err.to_string());
        }
        batch.outstanding.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One message to produce; `payload: None` is a tombstone.
pub(super) struct Outgoing<'a> {
    pub topic: &'a str,
    pub key: &'a [u8],
    pub payload: Option<&'a [u8]>,
    pub headers: OwnedHeaders,
}

/// A producer whose [`DurableProducer::send_all`] returns once the broker acknowledged
/// every message (`acks=all`) or one of them failed for good.
pub(super) struct DurableProducer {
    producer: BaseProducer<BatchContext>,
    /// librdkafka reports every message within `message.timeout.ms`; this is a
    /// backstop in case a report never comes.
    patience: Duration,
}

impl std::fmt::Debug for DurableProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableProducer")
            .field("patience", &self.patience)
            .finish_non_exhaustive()
    }
}

impl DurableProducer {
    pub fn new(config: &KafkaConfig) -> Result<DurableProducer, RdKafkaError> {
        let mut client = config.client_config();
        client
            .set("acks", "all")
            // Retries keep per-partition order: a key's updates stay in order.
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", config.delivery_timeout_ms.to_string())
            .set("linger.ms", "5")
            // The Java clients' partitioner, so keys land where other clients expect.
            .set("partitioner", "murmur2_random");
        config.apply_properties(&mut client);
        let producer = client.create_with_context(BatchContext)?;
        Ok(DurableProducer {
            producer,
            patience: Duration::from_millis(config.delivery_timeout_ms) + Duration::from_secs(5),
        })
    }

    /// Produces `messages` and waits for their delivery reports. `Err` carries the
    /// first failure; some of the messages may have been written all the same.
    pub fn send_all<'a>(
        &self,
        messages: impl IntoIterator<Item = Outgoing<'a>>,
    ) -> Result<usize, String> {
        let batch = Arc::new(Batch::default());
        let mut sent = 0;
        for message in messages {
            let mut record: BaseRecord<'_, [u8], [u8], Arc<Batch>> =
                BaseRecord::with_opaque_to(message.topic, Arc::clone(&batch))
                    .key(message.key)
                    .headers(message.headers);
            if let Some(payload) = message.payload {
                record = record.payload(payload);
            }
            batch.outstanding.fetch_add(1, Ordering::AcqRel);
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    // The local queue is full: serve delivery reports to make room.
                    Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        self.producer.poll(Duration::from_millis(10));
                    }
                    Err((err, _)) => {
                        batch.outstanding.fetch_sub(1, Ordering::AcqRel);
                        batch.fail(err.to_string());
                        break;
                    }
                }
            }
            sent += 1;
        }
        let deadline = Instant::now() + self.patience;
        while batch.outstanding.load(Ordering::Acquire) > 0 {
            if Instant::now() >= deadline {
                batch.fail("no delivery report before the deadline".into());
                break;
            }
            self.producer.poll(Duration::from_millis(10));
        }
        let failure = batch
            .first_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match failure {
            Some(reason) => Err(reason),
            None => Ok(sent),
        }
    }

    /// Waits for whatever is still queued, on shutdown.
    pub fn flush(&self, timeout: Duration) {
        let _ = self.producer.flush(timeout);
    }
}
