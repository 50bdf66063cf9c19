//! The control plane as `edgeprice up` and `edgeprice control` run it: the decision
//! pipeline with its publisher, feed ingestion over HTTP, and the demo simulator.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use edgeprice_control::http::{FeedSource, IngestHttpConfig, IngestServer};
use edgeprice_control::publish::Publisher;
use edgeprice_control::runtime::{ControlPlane, RuntimeConfig};
use tracing::info;

use crate::demo::Simulator;

/// The running control plane; dropping it stops the simulator, then ingestion, then
/// the pipeline (each finishes the work in hand).
#[derive(Debug)]
pub struct Embedded {
    simulator: Option<Simulator>,
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
    ) -> anyhow::Result<Embedded> {
        let config = RuntimeConfig {
            data_dir: data_dir.join("control"),
            ..RuntimeConfig::default()
        };
        let control =
            ControlPlane::start(config, publisher).context("starting the control plane")?;
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
        drop(self.ingest.take());
        drop(self.control.take());
    }
}
