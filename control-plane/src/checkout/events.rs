//! Checkout and saga events: written to the ledger's outbox in the same transaction as
//! the change they describe, then relayed to an in-process bus and, with Kafka
//! configured, to the topic `edgeprice.checkout.events` (key: saga or hold id, so one
//! saga's events stay in order on one partition).
//!
//! Delivery is at least once: the relay moves its cursor after delivery, so a crash
//! in between delivers some events again; consumers deduplicate by `event_id`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tracing::{debug, warn};

use super::ledger::Ledger;
use crate::kafka::KafkaConfig;

/// Topic of checkout events.
pub const CHECKOUT_EVENTS_TOPIC: &str = "edgeprice.checkout.events";

/// One event. `type` names what happened (`checkout.reserved`, `checkout.paid`,
/// `order.created`, `order.confirmed`, `checkout.completed`, `checkout.compensating`,
/// `payment.refunded`, `order.cancelled`, `reservation.released`,
/// `reservation.expired`, `purchase_token.issued`, `checkout.failed`,
/// `checkout.opened`, `checkout.closed`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckoutEvent {
    /// Unique; consumers deduplicate by it.
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The saga or hold the event is about (the Kafka key).
    pub subject: String,
    pub at_ms: i64,
    pub data: serde_json::Value,
}

impl CheckoutEvent {
    pub fn new(kind: &str, subject: &str, data: serde_json::Value, at_ms: i64) -> CheckoutEvent {
        CheckoutEvent {
            event_id: super::new_id("ev"),
            kind: kind.to_owned(),
            subject: subject.to_owned(),
            at_ms,
            data,
        }
    }

    /// The partitioning key.
    pub fn key(&self) -> &str {
        &self.subject
    }
}

/// The in-process bus: every relayed event, to whoever subscribes. A slow subscriber
/// loses the oldest events (`RecvError::Lagged`), never slows checkout down.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<CheckoutEvent>>,
}

impl EventBus {
    pub fn new(capacity: usize) -> EventBus {
        EventBus {
            tx: broadcast::channel(capacity.max(16)).0,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<CheckoutEvent>> {
        self.tx.subscribe()
    }

    fn send(&self, event: Arc<CheckoutEvent>) {
        // No subscriber is not an error.
        let _ = self.tx.send(event);
    }
}

/// Relays the outbox to the bus and Kafka until the ledger stops.
pub(super) async fn relay(
    ledger: Ledger,
    bus: EventBus,
    kafka: Option<(KafkaConfig, String)>,
    lag: Arc<AtomicI64>,
    mut stop_rx: tokio::sync::watch::Receiver<bool>,
) {
    let wake = ledger.outbox_wake();
    let producer: Option<(FutureProducer, String)> = kafka.and_then(|(config, topic)| {
        let mut client = rdkafka::ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", config.delivery_timeout_ms.to_string())
            .set("linger.ms", "5");
        for (key, value) in &config.properties {
            client.set(key, value);
        }
        match client.create::<FutureProducer>() {
            Ok(producer) => Some((producer, topic)),
            Err(err) => {
                warn!(error = %err, "checkout events: cannot create the Kafka producer");
                None
            }
        }
    });
    // The bus is in-process: it starts from the events written from now on; Kafka
    // resumes from its durable cursor.
    let consumer = "kafka";
    let mut bus_cursor = last_seq(&ledger).unwrap_or(0);
    let mut kafka_cursor = ledger.outbox_cursor(consumer).unwrap_or(0);
    loop {
        let from = if producer.is_some() {
            bus_cursor.min(kafka_cursor)
        } else {
            bus_cursor
        };
        let batch = ledger.outbox_after(from, 1_000).unwrap_or_default();
        if batch.is_empty() {
            lag.store(0, Ordering::Relaxed);
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop_rx.changed() => return,
            }
            continue;
        }
        let last = batch.last().map(|e| e.0).unwrap_or(from);
        lag.store(last_seq(&ledger).unwrap_or(last) - from, Ordering::Relaxed);
        for (seq, _key, event) in &batch {
            if *seq > bus_cursor {
                if let Ok(event) = serde_json::from_str::<CheckoutEvent>(event) {
                    bus.send(Arc::new(event));
                }
            }
        }
        bus_cursor = bus_cursor.max(last);
        if let Some((producer, topic)) = &producer {
            let pending: Vec<_> = batch
                .iter()
                .filter(|(seq, _, _)| *seq > kafka_cursor)
                .collect();
            // Enqueue all, then wait for every delivery report.
            let mut deliveries = Vec::with_capacity(pending.len());
            for (_, key, event) in &pending {
                let record = FutureRecord::to(topic)
                    .key(key.as_str())
                    .payload(event.as_str());
                deliveries.push(producer.send_result(record).map_err(|(err, _)| err));
            }
            let mut results = Vec::with_capacity(deliveries.len());
            for delivery in deliveries {
                results.push(match delivery {
                    Ok(future) => matches!(future.await, Ok(Ok(_))),
                    Err(_) => false,
                });
            }
            match results.iter().position(|ok| !ok) {
                None => {
                    kafka_cursor = last;
                    if let Err(err) = ledger.set_outbox_cursor(consumer, last) {
                        warn!(error = %err, "checkout events: cannot store the Kafka cursor");
                    }
                    debug!(events = pending.len(), "checkout events delivered to Kafka");
                }
                Some(index) => {
                    // Everything before the first failure is delivered; retry the rest.
                    if index > 0 {
                        kafka_cursor = pending[index - 1].0;
                        let _ = ledger.set_outbox_cursor(consumer, kafka_cursor);
                    }
                    warn!("checkout events: Kafka delivery failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop_rx.changed() => return,
                    }
                }
            }
        }
    }
}

fn last_seq(ledger: &Ledger) -> Result<i64, super::CheckoutError> {
    ledger.last_outbox_seq()
}
