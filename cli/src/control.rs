//! `edgeprice control` (the control plane publishing to remote edges) and
//! `edgeprice audit verify`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use edgeprice_control::audit;
use edgeprice_control::publish::{FanOut, HttpPublisher, Publisher};
use tracing::info;

use crate::embedded::{CheckoutWiring, ControlPlaneArgs, Embedded};

/// Flags of `edgeprice control`.
#[derive(Debug, Args)]
pub struct ControlArgs {
    #[command(flatten)]
    control: ControlPlaneArgs,
    /// An edge to publish to (its admin routes: full snapshot, then deltas); repeat the
    /// flag for several edges, each resynced on its own when it misses updates.
    #[arg(
        long = "edge",
        env = "EDGEPRICE_EDGES",
        value_delimiter = ',',
        required = true
    )]
    edges: Vec<SocketAddr>,
    /// The edges' admin bearer token.
    #[arg(long, env = "EDGEPRICE_EDGE_TOKEN", hide_env_values = true)]
    edge_token: String,
    /// The edges' quote signing keys `kid:secret` (repeatable), so checkout can verify
    /// quote tokens; without one, checkout answers 503 checkout_disabled.
    #[arg(
        long = "quote-key",
        env = "EDGEPRICE_QUOTE_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    quote_keys: Vec<String>,
}

pub fn control(args: ControlArgs) -> anyhow::Result<()> {
    let tokens = args.control.prepare()?;
    let publishers = args
        .edges
        .iter()
        .map(|edge| {
            let publisher =
                HttpPublisher::new(*edge, args.edge_token.clone(), Duration::from_secs(30))?;
            Ok(Box::new(publisher) as Box<dyn Publisher>)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let publisher = FanOut::new(publishers);
    let keyring = crate::config::EdgeConfig {
        quote_keys: args.quote_keys.clone(),
        ..crate::config::EdgeConfig::default()
    }
    .keyring()?;
    // Remote edges: coupon limits come from the control plane's own promotion book.
    let coupons = None;
    let embedded = Embedded::start(
        publisher,
        &args.control,
        &tokens,
        args.edges.clone(),
        CheckoutWiring { keyring, coupons },
    )?;
    let edges: Vec<String> = args.edges.iter().map(|e| format!("http://{e}")).collect();
    println!(
        "control plane on http://{}, publishing to {}",
        embedded.feeds_addr(),
        edges.join(", ")
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        anyhow::Ok(())
    })?;
    info!("shutting down");
    drop(embedded);
    Ok(())
}

/// `edgeprice audit verify`: walks the decision audit chain. Exit status 1 when a record
/// was altered or removed.
pub fn verify(data_dir: &Path) -> anyhow::Result<bool> {
    // `up` keeps the control plane under DATA_DIR/control; accept either directory.
    let nested = data_dir.join("control");
    let dir = if nested.is_dir() {
        nested
    } else {
        data_dir.to_owned()
    };
    let report = audit::verify_data_dir(&dir)
        .with_context(|| format!("reading the audit log in {}", dir.display()))?;
    match &report.first_bad {
        None => println!(
            "audit chain intact: {} records, head {} {}",
            report.records, report.head_seq, report.head_hash
        ),
        Some(bad) => println!(
            "audit chain BROKEN at record {}: {} ({} records checked)",
            bad.seq, bad.problem, report.records
        ),
    }
    Ok(report.is_intact())
}
