//! `proxbalance-recommender --config FILE`: loads the configuration, sets up logging and the
//! Prometheus exporter, wires SIGTERM/SIGINT to a graceful shutdown and runs the service.

use std::path::PathBuf;

use clap::Parser;

/// Keeps rolling windows of the collector's snapshots, publishes overload events and serves
/// recommendations over gRPC.
#[derive(Debug, Parser)]
#[command(name = "proxbalance-recommender", version)]
struct Cli {
    /// TOML configuration file; every key can be overridden by PROXBALANCE_RECOMMENDER__<KEY>
    /// (nested keys joined by `__`).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long)]
    json_logs: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    proxbalance_runtime::install_crypto_provider();
    let config = proxbalance_recommender::Config::load(cli.config.as_deref())?;
    let telemetry = proxbalance_runtime::init_telemetry(
        "proxbalance-recommender",
        &config.telemetry,
        cli.json_logs,
    )?;
    // Clusters and nodes that disappeared are forgotten after the retention, their metric
    // labels with them.
    proxbalance_runtime::start_metrics_exporter(
        config.metrics.listen.as_deref(),
        Some(config.retention()),
    )?;
    let shutdown = proxbalance_runtime::shutdown_on_signal();
    let result = proxbalance_recommender::run(config, shutdown).await;
    // Export the last spans before leaving, whatever the outcome.
    telemetry.shutdown().await;
    result?;
    Ok(())
}
