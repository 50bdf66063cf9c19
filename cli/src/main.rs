//! `edgeprice`: the one binary.
//!
//! - `edgeprice up [--demo]`: everything on one machine — control plane and edge in one
//!   process, SQLite state in a data directory; `--demo` adds a feed simulator.
//! - `edgeprice server`: an edge price server.
//! - `edgeprice control`: the control plane alone, publishing to remote edges.
//! - `edgeprice tui`: the operator console over the control plane's admin API.
//! - `edgeprice audit verify`: check the decision audit chain.
//! - `edgeprice snapshot generate|inspect`: synthetic snapshots and their contents.

mod config;
mod control;
mod demo;
mod edge;
mod embedded;

/// mimalloc: snapshot builds allocate millions of small objects and glibc malloc spent
/// more than half of a delta's build time in its own bookkeeping (perf, delta_apply).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use edgeprice_pricing::Currency;
use edgeprice_schemas::codec;
use edgeprice_server::synth::{self, SynthSpec};

#[derive(Debug, Parser)]
#[command(
    name = "edgeprice",
    version,
    about = "Real-time retail prices at the edge"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything on this machine, with embedded storage.
    Up(edge::UpArgs),
    /// Run an edge price server.
    Server(edge::ServerArgs),
    /// Run the control plane alone, publishing to remote edges.
    Control(control::ControlArgs),
    /// The operator console: live metrics, SKUs, overrides and kill switches.
    Tui(TuiArgs),
    /// Check the tamper-evident decision audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Work with snapshot files.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

#[derive(Debug, Args)]
struct TuiArgs {
    /// The control plane's URL (its admin API).
    #[arg(long, env = "EDGEPRICE_URL", default_value = "http://127.0.0.1:8081")]
    url: String,
    /// Admin API bearer token (its role decides what the console may do).
    #[arg(
        long,
        env = "EDGEPRICE_ADMIN_TOKEN",
        hide_env_values = true,
        required_unless_present = "token_file"
    )]
    token: Option<String>,
    /// Read the token from a file instead (like DATA_DIR/admin.token).
    #[arg(long, conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// Hide every action that changes the server.
    #[arg(long)]
    read_only: bool,
    /// Poll interval in milliseconds (250..60000; `+`/`-` change it while running).
    #[arg(long, default_value_t = 1_000)]
    refresh_ms: u64,
    /// Colours: dark, light or mono [default: dark, or mono when NO_COLOR is set].
    #[arg(long, env = "EDGEPRICE_THEME")]
    theme: Option<String>,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify the hash chain; exits 1 if any record was altered or removed.
    Verify {
        /// The data directory of `edgeprice up` or `edgeprice control`.
        #[arg(long, env = "EDGEPRICE_DATA_DIR", default_value = "edgeprice-data")]
        data_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum SnapshotCommand {
    /// Write a synthetic snapshot (realistic prices, variants and promotions).
    Generate(GenerateArgs),
    /// Print what a snapshot file holds.
    Inspect {
        /// The snapshot file.
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
struct GenerateArgs {
    /// Number of SKUs.
    #[arg(long, default_value_t = 10_000)]
    skus: usize,
    /// Stores with their own prices.
    #[arg(long, default_value_t = 4)]
    stores: usize,
    /// Channels per store (web, app, pos, marketplace, …).
    #[arg(long, default_value_t = 2)]
    channels: usize,
    /// Output file.
    #[arg(long)]
    out: PathBuf,
    /// Random seed (the same seed gives the same snapshot).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Snapshot version to stamp.
    #[arg(long, default_value_t = 1)]
    version: u64,
    /// ISO 4217 currency of the prices.
    #[arg(long, default_value = "EUR")]
    currency: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Tui(args) = cli.command {
        // No log subscriber: log lines on stderr would tear the console's screen.
        return tui(args);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Tui(args) => tui(args),
        Command::Up(args) => edge::up(args),
        Command::Server(args) => edge::server(args),
        Command::Control(args) => control::control(args),
        Command::Audit(AuditCommand::Verify { data_dir }) => {
            if !control::verify(&data_dir)? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Snapshot(SnapshotCommand::Generate(args)) => generate(args),
        Command::Snapshot(SnapshotCommand::Inspect { file }) => inspect(&file),
    }
}

fn tui(args: TuiArgs) -> anyhow::Result<()> {
    let token = match (args.token, &args.token_file) {
        (Some(token), _) => token,
        (None, Some(file)) => std::fs::read_to_string(file)
            .with_context(|| format!("reading the token from {}", file.display()))?
            .trim()
            .to_owned(),
        (None, None) => anyhow::bail!("give --token or --token-file"),
    };
    let theme = match args.theme.as_deref() {
        Some(name) => edgeprice_tui::ui::Theme::named(name)
            .with_context(|| format!("unknown theme {name:?}: dark, light or mono"))?,
        // https://no-color.org: any non-empty value.
        None if std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) => {
            edgeprice_tui::ui::Theme::MONO
        }
        None => edgeprice_tui::ui::Theme::DARK,
    };
    edgeprice_tui::run(edgeprice_tui::Options {
        url: args.url,
        token,
        read_only: args.read_only,
        refresh_ms: args.refresh_ms,
        theme,
    })
}

fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let spec = SynthSpec {
        skus: args.skus,
        stores: args.stores,
        channels: args.channels,
        seed: args.seed,
        version: args.version,
        now_ms: edgeprice_server::store::now_ms(),
        currency: Currency::parse(&args.currency)?,
    };
    let data = synth::generate(&spec);
    let encoded = codec::encode_snapshot(&data);
    std::fs::write(&args.out, &encoded)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {} entries ({} SKUs, version {}) to {} ({} bytes)",
        data.entries.len(),
        args.skus,
        data.version,
        args.out.display(),
        encoded.len()
    );
    Ok(())
}

fn inspect(file: &PathBuf) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let data =
        codec::decode_snapshot(&bytes).with_context(|| format!("decoding {}", file.display()))?;
    let skus: std::collections::BTreeSet<_> =
        data.entries.iter().map(|e| e.key.sku.as_str()).collect();
    let promotions = data
        .entries
        .iter()
        .filter(|e| e.promotion.is_some())
        .count();
    println!("version:      {}", data.version);
    println!("created_at:   {} (Unix ms)", data.created_at_ms);
    println!("entries:      {}", data.entries.len());
    println!("skus:         {}", skus.len());
    println!("promoted:     {promotions} entries");
    Ok(())
}
