//! `edgeprice server` and `edgeprice up`: running an edge.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use edgeprice_server::metrics::Metrics;
use edgeprice_server::{transport, Api, ApiConfig, ServerHandle, SnapshotStore, Transport, Update};
use tracing::{error, info, warn};

use crate::config::EdgeConfig;
use crate::embedded::{token_file, CheckoutWiring, ControlPlaneArgs, Embedded};
use edgeprice_control::checkout::SnapshotCoupons;
use edgeprice_control::publish::InProcessEdge;

/// Flags of `edgeprice server`; each overrides the config file.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// TOML config file (see `EdgeConfig`).
    #[arg(long, env = "EDGEPRICE_CONFIG")]
    config: Option<PathBuf>,
    /// Address to serve on [default: 127.0.0.1:8080].
    #[arg(long, env = "EDGEPRICE_LISTEN")]
    listen: Option<SocketAddr>,
    /// Serving threads; 0 = one per core.
    #[arg(long, env = "EDGEPRICE_WORKERS")]
    workers: Option<usize>,
    /// What serves HTTP: hyper (epoll), uring (io_uring) or auto (io_uring where
    /// available, hyper otherwise) [default: auto].
    #[arg(long, env = "EDGEPRICE_TRANSPORT")]
    transport: Option<Transport>,
    /// Directory where the last applied snapshot is persisted.
    #[arg(long, env = "EDGEPRICE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Snapshot file to load at start (when newer than the persisted one) and on SIGHUP.
    #[arg(long, env = "EDGEPRICE_SNAPSHOT")]
    snapshot: Option<PathBuf>,
    /// Bearer token for the admin routes (at least 16 characters).
    #[arg(long, env = "EDGEPRICE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Most SKUs in one batch request.
    #[arg(long, env = "EDGEPRICE_BATCH_LIMIT")]
    batch_limit: Option<usize>,
    /// Quote signing key `kid:secret` (secret at least 32 bytes); repeat for rotation,
    /// the first signs. Without one, POST /v1/quote answers 503 quotes_disabled.
    #[arg(
        long = "quote-key",
        env = "EDGEPRICE_QUOTE_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    quote_keys: Vec<String>,
    /// Lifetime of a quote (the price lock), seconds [default: 900].
    #[arg(long, env = "EDGEPRICE_QUOTE_TTL_SECS")]
    quote_ttl_secs: Option<u64>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

/// Flags of `edgeprice up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    control: ControlPlaneArgs,
    /// Address of the edge.
    #[arg(long, env = "EDGEPRICE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// What serves the edge's HTTP: hyper (epoll), uring (io_uring) or auto (io_uring
    /// where available, hyper otherwise) [default: auto].
    #[arg(long, env = "EDGEPRICE_TRANSPORT")]
    transport: Option<Transport>,
    /// Quote signing key `kid:secret`, repeatable; by default one is generated into
    /// DATA_DIR/quote.key.
    #[arg(
        long = "quote-key",
        env = "EDGEPRICE_QUOTE_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    quote_keys: Vec<String>,
}

pub fn server(args: ServerArgs) -> anyhow::Result<()> {
    let mut config = EdgeConfig::load(args.config.as_deref())?;
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = args.workers {
        config.workers = v;
    }
    if let Some(v) = args.transport {
        config.transport = v;
    }
    if args.data_dir.is_some() {
        config.data_dir = args.data_dir;
    }
    if args.snapshot.is_some() {
        config.snapshot = args.snapshot;
    }
    if args.admin_token.is_some() {
        config.admin_token = args.admin_token;
    }
    if let Some(v) = args.batch_limit {
        config.batch_limit = v;
    }
    if !args.quote_keys.is_empty() {
        config.quote_keys = args.quote_keys;
    }
    if let Some(v) = args.quote_ttl_secs {
        config.quote_ttl_secs = v;
    }
    config.validate()?;
    if args.check_config {
        println!("configuration is valid: {config:?}");
        return Ok(());
    }
    run_edge(config)
}

pub fn up(args: UpArgs) -> anyhow::Result<()> {
    let tokens = args.control.prepare()?;
    let data_dir = &args.control.data_dir;
    let quote_keys = if args.quote_keys.is_empty() {
        vec![format!("edge:{}", token_file(data_dir, "quote.key")?)]
    } else {
        args.quote_keys
    };
    let config = EdgeConfig {
        listen: args.listen,
        transport: args.transport.unwrap_or_default(),
        data_dir: Some(data_dir.join("edge")),
        admin_token: Some(tokens.admin.clone()),
        quote_keys,
        ..EdgeConfig::default()
    };
    config.validate()?;
    let (store, handle) = start_edge(&config)?;
    let checkout = CheckoutWiring {
        keyring: config.keyring()?,
        coupons: Some(Arc::new(SnapshotCoupons(Arc::clone(&store)))),
    };
    let embedded = Embedded::start(
        InProcessEdge(Arc::clone(&store)),
        &args.control,
        &tokens,
        vec![handle.local_addr()],
        checkout,
    )?;
    let (edge_addr, feeds_addr) = (handle.local_addr(), embedded.feeds_addr());
    println!("edgeprice is up: edge http://{edge_addr}, control plane http://{feeds_addr}");
    println!("  curl 'http://{edge_addr}/v1/prices/SKU-0000042?store=store-1&channel=web'");
    println!("  curl 'http://{edge_addr}/v1/prices?skus=SKU-0000001,SKU-0000002,SKU-0000003'");
    println!("  curl http://{edge_addr}/metrics");
    println!(
        "  curl -H \"Authorization: Bearer $(cat {})\" 'http://{feeds_addr}/v1/admin/decisions?sku=SKU-0000042'",
        data_dir.join("admin.token").display()
    );
    if embedded.checkout().is_some() {
        println!("  checkout: POST http://{feeds_addr}/v1/checkout with an Idempotency-Key and {{\"quote_token\": <token of POST http://{edge_addr}/v1/quote>}}");
    }
    if args.control.demo {
        println!("the demo simulator is feeding the control plane; prices appear within seconds");
    }
    wait_for_signals(&config, &store)?;
    info!("shutting down");
    drop(embedded);
    handle.shutdown();
    Ok(())
}

fn load_snapshot_file(store: &SnapshotStore, path: &Path, force: bool) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading snapshot {}", path.display()))?;
    let applied = store
        .update_blocking(Update::Full {
            encoded: Bytes::from(bytes),
            force,
        })
        .with_context(|| format!("loading snapshot {}", path.display()))?;
    info!(path = %path.display(), version = applied.version, entries = applied.entries, apply_ms = applied.apply_us / 1000, "snapshot file loaded");
    Ok(())
}

fn run_edge(config: EdgeConfig) -> anyhow::Result<()> {
    let (store, handle) = start_edge(&config)?;
    wait_for_signals(&config, &store)?;
    info!("shutting down");
    handle.shutdown();
    Ok(())
}

/// Opens the store (recovering persisted state), loads `config.snapshot` if it is newer,
/// and starts serving.
fn start_edge(config: &EdgeConfig) -> anyhow::Result<(Arc<SnapshotStore>, ServerHandle)> {
    let store = Arc::new(SnapshotStore::open(config.data_dir.clone())?);
    let current = store.load().as_ref().map(|s| s.version());
    if let Some(path) = &config.snapshot {
        match load_snapshot_file(&store, path, false) {
            Ok(()) => {}
            // An older file than the persisted state is expected after a restart.
            Err(err) if current.is_some() => {
                warn!(error = %format!("{err:#}"), "keeping the persisted snapshot")
            }
            Err(err) => return Err(err),
        }
    }
    if !store.is_ready() {
        warn!("no snapshot loaded yet: /readyz answers 503 until one is published");
    }
    let workers = config.worker_count();
    let metrics = Arc::new(Metrics::new(workers));
    let api = Arc::new(
        Api::new(
            Arc::clone(&store),
            metrics,
            ApiConfig {
                batch_limit: config.batch_limit,
                admin_token: config.admin_token.clone(),
                max_upload_bytes: config.max_upload_bytes,
                max_delta_changes: config.max_delta_changes,
                max_snapshot_entries: config.max_snapshot_entries,
            },
        )
        .with_quotes(config.quote_config()?)?,
    );
    let handle = transport::serve(config.transport, config.listen, workers, api)?;
    info!(addr = %handle.local_addr(), workers, transport = %handle.transport(), "edge serving");
    Ok((store, handle))
}

/// Serves until SIGTERM or Ctrl-C; SIGHUP reloads `config.snapshot` (forced).
fn wait_for_signals(config: &EdgeConfig, store: &Arc<SnapshotStore>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = signal(SignalKind::hangup())?;
        let mut terminate = signal(SignalKind::terminate())?;
        loop {
            tokio::select! {
                _ = hangup.recv() => match &config.snapshot {
                    Some(path) => {
                        let (store, path) = (Arc::clone(store), path.clone());
                        // Reading and decoding a large file blocks: keep it off this loop.
                        let result = tokio::task::spawn_blocking(move || load_snapshot_file(&store, &path, true)).await;
                        match result {
                            Ok(Ok(())) => {}
                            Ok(Err(err)) => error!(error = %format!("{err:#}"), "SIGHUP reload failed; still serving the previous snapshot"),
                            Err(err) => error!(error = %err, "SIGHUP reload task failed"),
                        }
                    }
                    None => warn!("SIGHUP ignored: no --snapshot file configured"),
                },
                _ = terminate.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        anyhow::Ok(())
    })
}
