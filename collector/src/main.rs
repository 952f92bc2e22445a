//! `proxbalance-collector --config FILE`: loads the configuration, sets up logging and the
//! Prometheus exporter, wires SIGTERM/SIGINT to a graceful shutdown and runs the collector.

use std::path::PathBuf;

use clap::Parser;

/// Polls Proxmox VE clusters and publishes per-node snapshots to NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "proxbalance-collector", version)]
struct Cli {
    /// TOML configuration file; every key can be overridden by PROXBALANCE_COLLECTOR__<KEY>
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
    let config = proxbalance_collector::config::Config::load(cli.config.as_deref())?;
    let telemetry = proxbalance_runtime::init_telemetry(
        "proxbalance-collector",
        &config.telemetry,
        cli.json_logs,
    )?;
    // The collector's labels are its configured clusters: none to forget.
    proxbalance_runtime::start_metrics_exporter(config.metrics.listen.as_deref(), None)?;
    let shutdown = proxbalance_runtime::shutdown_on_signal();
    let result = proxbalance_collector::app::run(config, shutdown).await;
    // Export the last cycle's spans before leaving, whatever the outcome.
    telemetry.shutdown().await;
    result?;
    Ok(())
}
