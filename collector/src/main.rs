//! `proxbalance-collector --config FILE`: loads the configuration, sets up logging and the
//! Prometheus exporter, wires SIGTERM/SIGINT to a graceful shutdown and runs the collector.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use tokio_util::sync::CancellationToken;

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

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot listen for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.json_logs);
    proxbalance_collector::app::install_crypto_provider();
    let config = proxbalance_collector::config::Config::load(cli.config.as_deref())?;

    if let Some(listen) = &config.metrics.listen {
        let addr: SocketAddr = listen
            .parse()
            .with_context(|| format!("metrics.listen: expected host:port, found {listen:?}"))?;
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .with_context(|| format!("cannot start the Prometheus exporter on {addr}"))?;
        tracing::info!(%addr, "Prometheus metrics at /metrics");
    }

    let shutdown = CancellationToken::new();
    let signal_token = shutdown.clone();
    tokio::spawn(async move {
        match wait_for_signal().await {
            Ok(()) => tracing::info!("shutdown signal received"),
            Err(e) => tracing::error!(error = %e, "signal handling failed; shutting down"),
        }
        signal_token.cancel();
    });

    proxbalance_collector::app::run(config, shutdown).await?;
    Ok(())
}
