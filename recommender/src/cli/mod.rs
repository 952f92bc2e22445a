//! The `proxbalance` command line.
//!
//! Exit status: 0 on success, 2 when the input is refused (bad flags, an unreadable or invalid
//! cluster view, an unknown key, an unknown cluster or guest); 1 when the recommender cannot be
//! reached or fails. The message goes to stderr and nothing to stdout.

mod offline;
mod online;
mod table;

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use offline::{load_cluster, overrides_from, render_options, render_plan};

/// Scored migration recommendations for Proxmox VE clusters.
#[derive(Debug, Parser)]
#[command(name = "proxbalance", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Plan migrations for a JSON cluster view (`proxbalance.cluster-view.v1`).
    Plan(PlanArgs),
    /// Score one guest on every node of a JSON cluster view (`--input`) or of a cluster a
    /// recommender tracks (`--server`, `--cluster`).
    Options(OptionsArgs),
    /// The recommendations of a cluster, from a running recommender.
    Recommendations(RecommendationsArgs),
    /// The nodes of a cluster as a running recommender sees them.
    State(StateArgs),
    /// Print the recommendation set of each cluster, then every change, as they happen.
    Watch(WatchArgs),
    /// Print overload events as they happen.
    Events(EventsArgs),
    /// Show the penalty configuration.
    Config {
        #[command(subcommand)]
        what: ConfigWhat,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigWhat {
    /// The default penalty configuration.
    Defaults {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// The conservative, balanced and aggressive presets.
    Presets {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// The machine-readable structure.
    Json,
}

/// Flags that change the computation, shared by `plan` and `options`.
#[derive(Debug, Clone, Default, Args)]
pub struct TuningArgs {
    /// Start from a preset (conservative, balanced, aggressive) instead of the view's config.
    #[arg(long, value_name = "NAME")]
    pub preset: Option<String>,
    /// Override a penalty key (`min_score_improvement=20`) or a threshold (`thresholds.cpu=70`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Put a node in maintenance (in addition to those of the view).
    #[arg(long = "maintenance", value_name = "NODE")]
    pub maintenance: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The cluster view file, or `-` for stdin.
    #[arg(long, value_name = "FILE|-")]
    pub input: String,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(flatten)]
    pub tuning: TuningArgs,
    /// Return at most this many recommendations.
    #[arg(long)]
    pub limit: Option<usize>,
}

/// Where the recommender listens.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// gRPC address of the recommender (`http://host:port`, or `https://` for TLS; `http://` is
    /// assumed, `https://` when --ca or --cert is given).
    #[arg(long, value_name = "URL", env = "PROXBALANCE_SERVER")]
    pub server: String,
    /// PEM CA that signed the recommender's certificate (TLS).
    #[arg(long, value_name = "FILE", env = "PROXBALANCE_CA")]
    pub ca: Option<std::path::PathBuf>,
    /// PEM client certificate for mutual TLS (with --key).
    #[arg(long, value_name = "FILE", env = "PROXBALANCE_CERT", requires = "key")]
    pub cert: Option<std::path::PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, value_name = "FILE", env = "PROXBALANCE_KEY", requires = "cert")]
    pub key: Option<std::path::PathBuf>,
    /// File holding the bearer token the recommender requires. Without it the token is read
    /// from the PROXBALANCE_TOKEN environment variable, if set; it is never a command-line value.
    #[arg(long, value_name = "FILE", env = "PROXBALANCE_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct RecommendationsArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The cluster.
    #[arg(long)]
    pub cluster: String,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(flatten)]
    pub tuning: TuningArgs,
    /// Return at most this many recommendations.
    #[arg(long)]
    pub limit: Option<usize>,
}

#[derive(Debug, Args)]
pub struct StateArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The cluster.
    #[arg(long)]
    pub cluster: String,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Only this cluster (default: every cluster).
    #[arg(long)]
    pub cluster: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Stop after this many messages.
    #[arg(long)]
    pub count: Option<usize>,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Only this cluster (default: every cluster).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Only this node.
    #[arg(long)]
    pub node: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<usize>,
}

#[derive(Debug, Args)]
pub struct OptionsArgs {
    /// The cluster view file, or `-` for stdin.
    #[arg(long, value_name = "FILE|-", required_unless_present = "server", conflicts_with_all = ["server", "cluster"])]
    pub input: Option<String>,
    /// gRPC address of a recommender to ask instead of reading a view.
    #[arg(long, value_name = "URL", requires = "cluster")]
    pub server: Option<String>,
    /// The cluster (with `--server`).
    #[arg(long, requires = "server")]
    pub cluster: Option<String>,
    /// PEM CA of the recommender's certificate (with `--server`).
    #[arg(long, value_name = "FILE", requires = "server")]
    pub ca: Option<std::path::PathBuf>,
    /// PEM client certificate for mutual TLS (with `--server` and `--key`).
    #[arg(long, value_name = "FILE", requires_all = ["server", "key"])]
    pub cert: Option<std::path::PathBuf>,
    /// PEM private key of `--cert`.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<std::path::PathBuf>,
    /// File holding the bearer token (else PROXBALANCE_TOKEN; never a command-line value).
    #[arg(long, value_name = "FILE", requires = "server")]
    pub token_file: Option<std::path::PathBuf>,
    /// The guest to score.
    #[arg(long)]
    pub vmid: u32,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(flatten)]
    pub tuning: TuningArgs,
}

/// A failure of the command line: refused input (exit 2) or an output error (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Input(String),
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
    #[error("{0}")]
    Unavailable(String),
}

/// Parses the process arguments, runs the command and maps the outcome to an exit status.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    if let Command::Watch(_) | Command::Events(_) = &cli.command {
        let mut stdout = std::io::stdout().lock();
        let r = match &cli.command {
            Command::Watch(args) => online::watch(args, &mut stdout),
            Command::Events(args) => online::events(args, &mut stdout),
            _ => Ok(()),
        };
        return exit_code(r.map(|()| String::new()));
    }
    exit_code(run(cli))
}

fn exit_code(result: Result<String, CliError>) -> ExitCode {
    match result {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            match stdout
                .write_all(out.as_bytes())
                .and_then(|_| stdout.flush())
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("proxbalance: writing output: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(CliError::Input(msg)) => {
            eprintln!("proxbalance: {msg}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("proxbalance: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a parsed command and returns what it prints. Nothing is printed on error.
pub fn run(cli: Cli) -> Result<String, CliError> {
    match cli.command {
        Command::Plan(args) => offline::plan(&args),
        Command::Options(args) => match (&args.input, &args.server, &args.cluster) {
            (Some(_), _, _) => offline::options(&args),
            (None, Some(server), Some(cluster)) => online::options(
                &ServerArgs {
                    server: server.clone(),
                    ca: args.ca.clone(),
                    cert: args.cert.clone(),
                    key: args.key.clone(),
                    token_file: args.token_file.clone(),
                },
                cluster,
                args.vmid,
                &args.tuning,
                args.format,
            ),
            _ => Err(CliError::Input(
                "options: expected --input FILE, or --server URL with --cluster NAME".into(),
            )),
        },
        Command::Config { what } => offline::config(&what),
        Command::Recommendations(args) => online::recommendations(&args),
        Command::State(args) => online::state(&args),
        Command::Watch(args) => {
            let mut buf = Vec::new();
            online::watch(&args, &mut buf)?;
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
        Command::Events(args) => {
            let mut buf = Vec::new();
            online::events(&args, &mut buf)?;
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
    }
}
