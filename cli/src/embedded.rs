//! The control plane as `edgeprice up` and `edgeprice control` run it: the decision
//! pipeline with its publisher, feed ingestion over HTTP, and the demo simulator.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use std::sync::Arc;

use edgeprice_control::checkout::payment::{SimulatedGateway, SimulatorConfig};
use edgeprice_control::checkout::{
    kill_switch_gate, BookCoupons, Checkout, CheckoutConfig, CheckoutDeps, CouponLimits, Faults,
};
use edgeprice_control::http::{AdminToken, FeedSource, IngestHttpConfig, IngestServer};
use edgeprice_control::kafka::{FeedConsumer, KafkaConfig, KafkaPublisher};
use edgeprice_control::publish::{FanOut, Publisher};
use edgeprice_control::runtime::{ControlPlane, RuntimeConfig};
use edgeprice_pricing::quote::Keyring;
use edgeprice_schemas::admin::Role;
use tracing::{info, warn};

use crate::demo::Simulator;

/// The control plane's flags, shared by `up` and `control`.
#[derive(Debug, Args)]
pub struct ControlPlaneArgs {
    /// Where state is kept between runs (control plane under `control/`, an embedded
    /// edge under `edge/`, generated tokens beside them).
    #[arg(long, env = "EDGEPRICE_DATA_DIR", default_value = "edgeprice-data")]
    pub data_dir: PathBuf,
    /// Address of the control plane (feeds, admin API).
    #[arg(long, env = "EDGEPRICE_FEEDS_LISTEN", default_value = "127.0.0.1:8081")]
    pub feeds_listen: SocketAddr,
    /// Admin bearer token; by default one is generated into DATA_DIR/admin.token.
    #[arg(long, env = "EDGEPRICE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// More admin API tokens with their roles: a TOML file of
    /// `[[token]]` tables with `name`, `token` (at least 16 characters) and `role`
    /// (`viewer`, `operator` or `admin`). The admin token above always has the admin role.
    #[arg(long, env = "EDGEPRICE_ADMIN_TOKENS_FILE")]
    admin_tokens_file: Option<PathBuf>,
    /// Feed bearer token; by default one is generated into DATA_DIR/feed.token.
    #[arg(long, env = "EDGEPRICE_FEED_TOKEN", hide_env_values = true)]
    feed_token: Option<String>,
    /// Run the feed simulator: 10,000 SKUs, 4 stores, 3 channels, demand, competitor
    /// moves, vendor cost changes and a flash sale, through the real feed path.
    #[arg(long)]
    pub demo: bool,
    #[command(flatten)]
    kafka: KafkaArgs,
}

/// The bearer tokens of a control plane.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// The admin token (role admin), also the edge's admin token in `up`.
    pub admin: String,
    pub feed: String,
    /// Every admin API token, the admin token first.
    pub admin_tokens: Vec<AdminToken>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<AdminToken>,
}

/// Reads a tokens file (see `--admin-tokens-file`).
pub fn read_tokens_file(path: &Path) -> anyhow::Result<Vec<AdminToken>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading admin tokens {}", path.display()))?;
    let file: TokensFile = toml::from_str(&text)
        .with_context(|| format!("parsing admin tokens {}", path.display()))?;
    for token in &file.token {
        anyhow::ensure!(
            token.token.len() >= 16,
            "admin token {:?} in {} is shorter than 16 characters",
            token.name,
            path.display()
        );
        anyhow::ensure!(
            !token.name.is_empty(),
            "an admin token in {} has no name",
            path.display()
        );
    }
    Ok(file.token)
}

impl ControlPlaneArgs {
    /// Creates the data directory and resolves the tokens: the given ones, or those
    /// kept in DATA_DIR/admin.token and DATA_DIR/feed.token (generated on first use).
    pub fn prepare(&self) -> anyhow::Result<Tokens> {
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("creating data directory {}", self.data_dir.display()))?;
        let admin = match &self.admin_token {
            Some(token) => token.clone(),
            None => token_file(&self.data_dir, "admin.token")?,
        };
        let feed = match &self.feed_token {
            Some(token) => token.clone(),
            None => token_file(&self.data_dir, "feed.token")?,
        };
        let mut admin_tokens = vec![AdminToken {
            name: "admin".into(),
            token: admin.clone(),
            role: Role::Admin,
        }];
        if let Some(path) = &self.admin_tokens_file {
            admin_tokens.extend(read_tokens_file(path)?);
        }
        Ok(Tokens {
            admin,
            feed,
            admin_tokens,
        })
    }
}

/// Reads DATA_DIR/NAME, creating it (a random 32-character token, mode 0600) on first use.
pub fn token_file(data_dir: &Path, name: &str) -> anyhow::Result<String> {
    use rand::Rng;
    let path = data_dir.join(name);
    if let Ok(token) = std::fs::read_to_string(&path) {
        return Ok(token.trim().to_owned());
    }
    let token: String = rand::thread_rng()
        .sample_iter(rand::distributions::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    std::fs::write(&path, &token).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    info!(path = %path.display(), "generated a token");
    Ok(token)
}

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

/// What checkout needs from the binary: the keyring the edges sign quotes with (none:
/// checkout answers 503 `checkout_disabled`) and where coupon limits come from (`None`:
/// the control plane's own promotion book).
#[derive(Debug)]
pub struct CheckoutWiring {
    pub keyring: Option<Keyring>,
    pub coupons: Option<Arc<dyn CouponLimits>>,
}

/// Starts checkout over DATA_DIR/control: the ledger, the simulated payment gateway
/// (its book in `gateway.db`; behaviour from `EDGEPRICE_PAYMENT_SIMULATOR`, JSON of
/// `SimulatorConfig`) and fault injection from `EDGEPRICE_CHECKOUT_FAULT`.
fn start_checkout(
    control: &ControlPlane,
    wiring: CheckoutWiring,
    kafka: Option<&KafkaConfig>,
) -> anyhow::Result<Option<Arc<Checkout>>> {
    let Some(keyring) = wiring.keyring else {
        warn!("no quote key: checkout is disabled");
        return Ok(None);
    };
    let dir = control.data_dir().to_owned();
    let simulator: SimulatorConfig = match std::env::var("EDGEPRICE_PAYMENT_SIMULATOR") {
        Ok(json) => serde_json::from_str(&json).context("EDGEPRICE_PAYMENT_SIMULATOR")?,
        Err(_) => SimulatorConfig::default(),
    };
    let board = Arc::clone(control.handle(Vec::new()).board());
    let coupons = wiring
        .coupons
        .unwrap_or_else(|| Arc::new(BookCoupons(Arc::clone(&board))));
    let gate = kill_switch_gate(board);
    let gateway = SimulatedGateway::open(Some(&dir.join("gateway.db")), simulator)
        .context("opening the simulated payment gateway")?;
    let checkout = Checkout::start(
        CheckoutConfig {
            data_dir: dir.clone(),
            faults: Faults::from_env(),
            ..CheckoutConfig::default()
        },
        CheckoutDeps {
            keyring,
            gateway: Arc::new(gateway),
            coupons,
            ingestor: Some(control.ingestor()),
            feed_db: Some(dir.join(edgeprice_control::store::DB_FILE)),
            kafka: kafka.cloned(),
            gate: Some(gate),
        },
    )
    .context("starting checkout")?;
    Ok(Some(Arc::new(checkout)))
}

/// The running control plane; dropping it stops the producers (simulator, Kafka
/// consumer, HTTP ingestion), then checkout, then the pipeline, each finishing the
/// work in hand.
#[derive(Debug)]
pub struct Embedded {
    simulator: Option<Simulator>,
    feed_consumer: Option<FeedConsumer>,
    ingest: Option<IngestServer>,
    checkout: Option<Arc<Checkout>>,
    control: Option<ControlPlane>,
}

impl Embedded {
    /// Starts the control plane over `data_dir/control`, publishing to `publisher`
    /// (this process's edge in `up`, remote edges in `control`).
    pub fn start<P: Publisher + 'static>(
        publisher: P,
        args: &ControlPlaneArgs,
        tokens: &Tokens,
        edges: Vec<SocketAddr>,
        checkout: CheckoutWiring,
    ) -> anyhow::Result<Embedded> {
        let data_dir = &args.data_dir;
        let feeds_listen = args.feeds_listen;
        let kafka = &args.kafka;
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
        let checkout = start_checkout(&control, checkout, kafka.as_ref())?;
        let ingest = IngestServer::start_with_checkout(
            IngestHttpConfig {
                listen: feeds_listen,
                sources: vec![FeedSource {
                    name: "local".into(),
                    token: tokens.feed.clone(),
                    ..FeedSource::default()
                }],
                admin_tokens: tokens.admin_tokens.clone(),
                ..IngestHttpConfig::default()
            },
            control.handle(edges),
            checkout.clone(),
        )
        .with_context(|| format!("serving feeds on {feeds_listen}"))?;
        info!(addr = %ingest.local_addr(), "control plane up");
        let simulator = if args.demo {
            Some(Simulator::start(control.ingestor())?)
        } else {
            None
        };
        Ok(Embedded {
            simulator,
            feed_consumer,
            ingest: Some(ingest),
            checkout,
            control: Some(control),
        })
    }

    /// Checkout, when it runs (the admin kill switch closes it; metrics read it).
    pub fn checkout(&self) -> Option<&Arc<Checkout>> {
        self.checkout.as_ref()
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
        drop(self.checkout.take());
        drop(self.control.take());
    }
}
