//! The control plane as `edgeprice up` and `edgeprice control` run it: the decision
//! pipeline with its publisher, feed ingestion over HTTP, and the demo simulator.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use clap::Args;
use edgeprice_control::http::{FeedSource, IngestHttpConfig, IngestServer};
use edgeprice_control::kafka::{FeedConsumer, KafkaConfig, KafkaPublisher};
use edgeprice_control::publish::{FanOut, Publisher};
use edgeprice_control::runtime::{ControlPlane, RuntimeConfig};
use tracing::{info, warn};

use crate::demo::Simulator;

/// Kafka flags shared by `up` and `control`: with brokers given, feeds are also
/// consumed from `{prefix}{feed}` topics and every published price is also written to
/// the compacted updates topic.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap brokers (`host:port[,host:port]`); unset: no Kafka.
    #[arg(long, env = "EDGEPRICE_KAFKA_BROKERS")]
    kafka_brokers: Option<String>,
    /// Consumer group of the feed consumers; control planes in one group split the
    /// feed partitions.
    #[arg(
        long,
        env = "EDGEPRICE_KAFKA_GROUP",
        default_value = "edgeprice-control"
    )]
    kafka_group: String,
    /// Feed topics are this prefix followed by the feed name.
    #[arg(
        long,
        env = "EDGEPRICE_KAFKA_TOPIC_PREFIX",
        default_value = "edgeprice.feed."
    )]
    kafka_topic_prefix: String,
}

impl KafkaArgs {
    fn config(&self) -> Option<KafkaConfig> {
        let brokers = self.kafka_brokers.clone()?;
        Some(KafkaConfig {
            brokers,
            group_id: self.kafka_group.clone(),
            topic_prefix: self.kafka_topic_prefix.clone(),
            ..KafkaConfig::default()
        })
    }
}

/// The running control plane; dropping it stops the producers (simulator, Kafka
/// consumer, HTTP ingestion), then the pipeline, each finishing the work in hand.
#[derive(Debug)]
pub struct Embedded {
    simulator: Option<Simulator>,
    feed_consumer: Option<FeedConsumer>,
    ingest: Option<IngestServer>,
    control: Option<ControlPlane>,
}

impl Embedded {
    /// Starts the control plane over `data_dir/control`, publishing to `publisher`
    /// (this process's edge in `up`, remote edges in `control`).
    pub fn start<P: Publisher + 'static>(
        publisher: P,
        data_dir: &Path,
        feeds_listen: SocketAddr,
        feed_token: String,
        admin_token: String,
        demo: bool,
        kafka: &KafkaArgs,
    ) -> anyhow::Result<Embedded> {
        let config = RuntimeConfig {
            data_dir: data_dir.join("control"),
            ..RuntimeConfig::default()
        };
        let kafka = kafka.config();
        let control = match &kafka {
            None => ControlPlane::start(config, publisher),
            Some(kafka) => {
                let updates =
                    KafkaPublisher::new(kafka).context("connecting the price-update producer")?;
                let both: Vec<Box<dyn Publisher>> = vec![Box::new(publisher), Box::new(updates)];
                ControlPlane::start(config, FanOut::new(both))
            }
        }
        .context("starting the control plane")?;
        let feed_consumer = match &kafka {
            None => None,
            Some(kafka) => {
                let consumer = FeedConsumer::start(kafka, control.ingestor())
                    .context("starting the Kafka feed consumer")?;
                info!(brokers = %kafka.brokers, group = %kafka.group_id, "consuming feeds from Kafka");
                Some(consumer)
            }
        };
        let ingest = IngestServer::start(
            IngestHttpConfig {
                listen: feeds_listen,
                sources: vec![FeedSource {
                    name: "local".into(),
                    token: feed_token,
                    ..FeedSource::default()
                }],
                admin_token: Some(admin_token),
                ..IngestHttpConfig::default()
            },
            control.ingestor(),
            control.data_dir().to_owned(),
        )
        .with_context(|| format!("serving feeds on {feeds_listen}"))?;
        info!(addr = %ingest.local_addr(), "control plane up");
        let simulator = if demo {
            Some(Simulator::start(control.ingestor())?)
        } else {
            None
        };
        Ok(Embedded {
            simulator,
            feed_consumer,
            ingest: Some(ingest),
            control: Some(control),
        })
    }

    /// Where feeds are accepted.
    pub fn feeds_addr(&self) -> SocketAddr {
        self.ingest.as_ref().expect("running").local_addr()
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        // Producers first, so nothing new arrives while the rest stops.
        drop(self.simulator.take());
        if let Some(consumer) = self.feed_consumer.take() {
            // Finishes and commits the batch in hand, then leaves the group.
            match consumer.stop() {
                Ok(stats) => info!(?stats, "Kafka feed consumer stopped"),
                Err(err) => warn!(error = %err, "Kafka feed consumer stopped with an error"),
            }
        }
        drop(self.ingest.take());
        drop(self.control.take());
    }
}
