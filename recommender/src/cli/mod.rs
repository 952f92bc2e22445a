//! The `proxbalance` command line.
//!
//! Exit status: 0 on success, 2 when the input is refused (bad flags, an unreadable or invalid
//! cluster view, an unknown key); the message goes to stderr and nothing to stdout.

mod offline;
mod table;

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use offline::{load_cluster, overrides_from};

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
    /// Score one guest on every node of a JSON cluster view.
    Options(OptionsArgs),
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

#[derive(Debug, Args)]
pub struct OptionsArgs {
    /// The cluster view file, or `-` for stdin.
    #[arg(long, value_name = "FILE|-")]
    pub input: String,
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
    match run(cli) {
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
        Command::Options(args) => offline::options(&args),
        Command::Config { what } => offline::config(&what),
    }
}
