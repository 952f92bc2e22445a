//! The service: one task per cluster, each polling on its own interval and publishing, so a
//! slow or failing cluster never holds up the others.

use std::time::{Duration, Instant};

use proxbalance_proto::subjects::Subjects;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::config::{Config, ConfigError};
use crate::cycle::ClusterCollector;
use crate::publisher::{PublishError, Publisher};
use crate::pve::PveClient;
use crate::retry::RetryBuffer;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// NATS could not be reached or refused the login.
    #[error("cannot connect to NATS at {url}: {detail}")]
    Connect {
        /// The configured URL, user-info redacted.
        url: String,
        /// The client's error.
        detail: String,
    },
    /// The streams could not be set up.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// A cluster's task panicked; the other clusters were stopped so that the process exits
    /// (status 1) and its supervisor restarts it.
    #[error(transparent)]
    Task(#[from] proxbalance_runtime::TaskFailure),
}

/// Installs the ring TLS provider as the process default (idempotent).
pub fn install_crypto_provider() {
    proxbalance_runtime::install_crypto_provider();
}

/// Connects to NATS with the configured options. The URL in an error has its user-info
/// redacted; a setting that cannot be used (an unreadable password file, a bad seed) is a
/// configuration error naming its key.
pub async fn connect_nats(
    config: &Config,
) -> Result<proxbalance_runtime::NatsConnection, RunError> {
    use proxbalance_runtime::RuntimeError;
    proxbalance_runtime::connect_nats(&config.nats.connection(), "proxbalance-collector")
        .await
        .map_err(|e| match e {
            RuntimeError::Connect { url, detail } => RunError::Connect { url, detail },
            RuntimeError::Invalid { field, detail } => {
                RunError::Config(ConfigError::Invalid { field, detail })
            }
            RuntimeError::Secret(e) => RunError::Config(ConfigError::Invalid {
                field: e.field,
                detail: e.detail,
            }),
            other => RunError::Connect {
                url: config.nats.connection().redacted_url(),
                detail: other.to_string(),
            },
        })
}

/// Runs the collector until `shutdown` is cancelled: connects to NATS, creates the streams,
/// then polls every configured cluster on its interval and publishes each cycle.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    config.validate()?;
    install_crypto_provider();
    let subjects =
        Subjects::new(&config.nats.subject_prefix).map_err(|e| ConfigError::Invalid {
            field: "nats.subject_prefix".into(),
            detail: e.to_string(),
        })?;
    let connection = connect_nats(&config).await?;
    let nats = connection.client.clone();
    let publisher = Publisher::new(
        connection,
        subjects,
        &config.nats.stream_limits(),
        Duration::from_millis(config.nats.publish_timeout_ms),
    )
    .await?;

    let mut collectors = Vec::new();
    for (index, c) in config.clusters.iter().enumerate() {
        let client = c
            .client_settings()
            .and_then(PveClient::new)
            .map_err(|source| ConfigError::Pve { index, source })?;
        collectors.push((
            ClusterCollector::new(c.cycle_settings(), client),
            c.interval(),
        ));
    }

    // A panic in one cluster's task stops them all and makes `run` fail: a collector that
    // silently stopped polling one cluster would look healthy to its supervisor.
    let tasks = proxbalance_runtime::CriticalTasks::new(shutdown.clone());
    for (collector, interval) in collectors {
        let name = format!("cluster:{}", collector.cluster());
        tasks.spawn(
            &name,
            cluster_loop(
                collector,
                interval,
                publisher.clone(),
                RetryBuffer::new(config.nats.retry_buffer_messages),
                shutdown.clone(),
            ),
        );
    }
    tasks.close();
    tracing::info!(clusters = config.clusters.len(), "collector running");
    let ended = tasks.wait().await;
    if let Err(e) = nats.flush().await {
        tracing::warn!(error = %e, "NATS flush at shutdown failed");
    }
    tracing::info!("collector stopped");
    Ok(ended?)
}

/// Polls one cluster until shutdown. A cycle in progress is abandoned on shutdown. Messages
/// that could not be published wait in `retry` for the next cycle (see
/// [`Publisher::publish_cycle_buffered`]).
pub async fn cluster_loop(
    mut collector: ClusterCollector,
    interval: Duration,
    publisher: Publisher,
    mut retry: RetryBuffer,
    shutdown: CancellationToken,
) {
    let cluster = collector.cluster().to_owned();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let started = Instant::now();
        // One trace per cycle: the PVE requests and the publish are children of this span, and
        // the published messages carry the publish span's traceparent.
        let cycle_span = tracing::info_span!("collector.cycle", cluster = %cluster, cycle = tracing::field::Empty);
        let cycle = async {
            let out = collector.collect().await;
            tracing::Span::current().record("cycle", out.status.cycle);
            let publish_span = tracing::info_span!("collector.publish", cluster = %cluster, cycle = out.status.cycle);
            let report = publisher
                .publish_cycle_buffered(&out, &mut retry)
                .instrument(publish_span)
                .await;
            (out, report)
        }
        .instrument(cycle_span);
        let (out, report) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = cycle => r,
        };
        let elapsed = started.elapsed();
        metrics::histogram!("proxbalance_collector_cycle_duration_seconds", "cluster" => cluster.clone())
            .record(elapsed.as_secs_f64());
        metrics::counter!("proxbalance_collector_snapshots_published_total", "cluster" => cluster.clone())
            .increment(report.published as u64);
        metrics::counter!("proxbalance_collector_publish_failures_total", "cluster" => cluster.clone())
            .increment(report.failed as u64);
        metrics::counter!("proxbalance_collector_cycles_total", "cluster" => cluster.clone())
            .increment(1);
        metrics::gauge!("proxbalance_collector_api_requests_per_cycle", "cluster" => cluster.clone())
            .set(f64::from(out.status.api_requests));
        tracing::info!(
            cluster = %cluster,
            cycle = out.status.cycle,
            nodes = out.snapshots.len(),
            errors = out.status.errors.len(),
            api_requests = out.status.api_requests,
            published = report.published,
            failed = report.failed,
            retried = report.retried,
            buffered = report.buffered,
            dropped = report.dropped,
            refused = report.refused,
            elapsed_ms = elapsed.as_millis() as u64,
            "cycle done"
        );
    }
}
