//! The control plane inside `edgeprice up`: the decision pipeline publishing straight
//! into this process's edge, feed ingestion over HTTP, and the demo simulator.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use edgeprice_control::http::{FeedSource, IngestHttpConfig, IngestServer};
use edgeprice_control::publish::InProcessEdge;
use edgeprice_control::runtime::{ControlPlane, RuntimeConfig};
use edgeprice_server::SnapshotStore;
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
    /// Starts the control plane over `data_dir/control`, publishing into `edge`.
    pub fn start(
        edge: Arc<SnapshotStore>,
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
        let control = ControlPlane::start(config, InProcessEdge(edge))
            .context("starting the control plane")?;
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
