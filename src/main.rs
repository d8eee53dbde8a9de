//! The `rtbd` command: parse arguments, load the config, run the server.
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rtbd::config::{self, Routing};
use rtbd::server::{Options, Server};

#[derive(Parser)]
#[command(name = "rtbd", version, about = "A real-time-bidding engine for pay-per-call")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default command).
    Serve(ServeArgs),
    /// Check a config file: exit 0 with a summary, or exit 1 with the errors.
    CheckConfig {
        /// The config file to check.
        file: PathBuf,
    },
    /// Work with snapshot files.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Print what a snapshot holds and whether its checksum is good.
    Inspect {
        /// The snapshot file.
        file: PathBuf,
    },
}

#[derive(clap::Args, Default)]
struct ServeArgs {
    /// Config file. Default: config/rtbd.toml if it exists, else the
    /// built-in demo config.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Listen on this address instead of the config's `server.listen`.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Keep snapshots in this folder instead of the config's
    /// `server.data_dir`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

const DEFAULT_CONFIG: &str = "config/rtbd.toml";

// Every ping allocates a little and frees it soon: mimalloc's thread-local
// free lists do that faster than glibc's malloc. It is built with `no_thp`:
// otherwise it asks the kernel for 2 MiB pages for its large regions, which
// rounds every partly written big buffer (the record rings, the live index)
// up to 2 MiB and cost about 100 bytes per live reservation at a million.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => check_config(&file),
        Some(Command::Snapshot(SnapshotCommand::Inspect { file })) => match rtbd::snapshot::inspect(&file) {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(report) => {
                eprintln!("{report}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Serve(args)) => serve(args),
        None => serve(ServeArgs::default()),
    }
}

fn check_config(file: &Path) -> ExitCode {
    match config::load(file) {
        Ok(routing) => {
            println!(
                "{}: ok: {} campaigns, {} rtb keys, {} targets, {} publishers",
                file.display(),
                routing.campaigns.len(),
                routing.key_count(),
                routing.target_count(),
                routing.publishers.len()
            );
            for warning in &routing.warnings {
                println!("{warning}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The config and the file it came from (none for the built-in demo).
fn load(args: &ServeArgs) -> Result<(Routing, Option<PathBuf>), config::ConfigError> {
    let path = match &args.config {
        Some(path) => Some(path.clone()),
        None if Path::new(DEFAULT_CONFIG).exists() => Some(PathBuf::from(DEFAULT_CONFIG)),
        None => None,
    };
    match path {
        Some(path) => config::load(&path).map(|routing| (routing, Some(path))),
        None => config::parse(config::DEMO, config::DEMO_SOURCE).map(|routing| (routing, None)),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let (routing, config_path) = match load(&args) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    for warning in &routing.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // The worker threads start first: each counts into a stripe of its own.
        .on_thread_start(rtbd::stats::claim_stripe)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let source = routing.source.clone();
        let example = example_curl(&routing);
        let data_dir = args.data_dir.clone().unwrap_or_else(|| routing.server.data_dir.clone());
        let options = Options {
            listen: args.listen,
            watch: config_path.is_some(),
            config_path,
            data_dir: Some(data_dir),
            ..Options::default()
        };
        let server = match Server::start(routing, options).await {
            Ok(server) => server,
            Err(e) => {
                eprintln!("cannot start: {e}");
                return ExitCode::FAILURE;
            }
        };
        let addr = server.addr();
        // A closed stdout (`rtbd | head -1`) must not stop the server.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "rtbd listening on http://{addr} (config: {source})");
        if let Some(query) = example {
            let _ = writeln!(out, "get a reservation:");
            let _ = writeln!(out, "  curl -s -X POST 'http://{addr}/rtbs.json?{query}'");
        }
        let _ = out.flush();
        drop(out);
        server.run_until_signal().await;
        ExitCode::SUCCESS
    })
}

/// The query of a ping that the config can answer with a reservation.
fn example_curl(routing: &Routing) -> Option<String> {
    let campaign = routing.campaigns.iter().find(|c| !c.keys.is_empty() && !c.targets.is_empty())?;
    let key = &campaign.keys[0].key;
    let publisher = campaign.criteria.iter().find_map(|c| c.publisher.as_deref()).unwrap_or("demo-publisher");
    Some(format!("key={key}&publisher_id={publisher}&caller_number=%2B18005551234&caller_zip=10001"))
}
