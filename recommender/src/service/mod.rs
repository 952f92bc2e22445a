//! The recommender service: NATS ingest, recomputation, events, the gRPC server and the web
//! dashboard ([`http`]).
//!
//! [`start`] connects to NATS, makes sure the events stream exists, binds the gRPC listener and
//! spawns the tasks; [`run`] is `start` followed by [`RunningService::wait`]. Everything stops
//! when the `shutdown` token is cancelled: the ingest loop, the event publisher (after sending
//! what it holds), open watch streams and the gRPC server (bounded by `grpc.shutdown_timeout_ms`).

pub mod auth;
mod encoded;
mod events;
mod grpc;
pub mod http;
mod ingest;
mod maintenance;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use prost::bytes::Bytes;
use proxbalance_engine as engine;
use proxbalance_proto::subjects::Subjects;
use proxbalance_proto::v1 as pb;
use proxbalance_runtime::CriticalTasks;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::state::{Cached, Encoded, State, StateSettings};

pub use events::{Outgoing, Recent};

/// Metric names, in one place.
pub mod metric {
    /// Counter: snapshots applied, by cluster.
    pub const SNAPSHOTS_CONSUMED: &str = "proxbalance_recommender_snapshots_consumed_total";
    /// Counter: messages refused, by reason.
    pub const MESSAGES_REJECTED: &str = "proxbalance_recommender_messages_rejected_total";
    /// Gauge: wall clock minus the observation time of the latest snapshot, seconds.
    pub const INGEST_LAG: &str = "proxbalance_recommender_ingest_lag_seconds";
    /// Histogram: building the view and planning one cluster, seconds.
    pub const RECOMPUTE_DURATION: &str = "proxbalance_recommender_recompute_duration_seconds";
    /// Histogram: gRPC call latency, seconds, by method and code.
    pub const GRPC_LATENCY: &str = "proxbalance_recommender_grpc_request_duration_seconds";
    /// Histogram: dashboard HTTP request latency to the answer's headers, seconds, by route
    /// and status.
    pub const HTTP_LATENCY: &str = "proxbalance_recommender_http_request_duration_seconds";
    /// Counter: events published to JetStream, by kind.
    pub const EVENTS_PUBLISHED: &str = "proxbalance_recommender_events_published_total";
    /// Counter: event publishes that failed, by kind.
    pub const EVENTS_FAILED: &str = "proxbalance_recommender_event_publish_failures_total";
    /// Counter: events dropped because they can never be stored (too large, no stream,
    /// subject refused), by kind and reason.
    pub const EVENTS_REFUSED: &str = "proxbalance_recommender_events_refused_total";
    /// Gauge: 1 while the start-up replay runs.
    pub const REPLAYING: &str = "proxbalance_recommender_replaying";
    /// Gauge: a cluster's collector clock minus NATS' at its last snapshot or status, seconds
    /// (positive: ahead), by cluster.
    pub const CLOCK_SKEW: &str = "proxbalance_recommender_clock_skew_seconds";
}

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// NATS could not be reached.
    #[error(transparent)]
    Nats(#[from] proxbalance_runtime::RuntimeError),
    /// A JetStream stream could not be created or read.
    #[error("JetStream stream {stream}: {detail}")]
    Stream {
        /// The stream.
        stream: String,
        /// What failed.
        detail: String,
    },
    /// The gRPC or dashboard listener could not be bound.
    #[error("{field} {addr}: {source}")]
    Bind {
        /// The key naming the address (`grpc.listen`, `http.listen`).
        field: &'static str,
        /// The address.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(String),
    /// A task the service cannot run without panicked; the process should exit and be
    /// restarted (the binary exits with status 1).
    #[error(transparent)]
    Task(#[from] proxbalance_runtime::TaskFailure),
}

/// Milliseconds since the epoch by the wall clock.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One recomputation of a cluster, as the watchers get it. It holds the set's views as
/// encoded bytes only: the broadcast channel keeps its last notices until every watcher has
/// read them, so a watcher that never reads keeps those bytes, never a set's messages.
#[derive(Debug, Clone)]
pub struct Notice {
    /// The event without its set (empty lists when nothing changed).
    pub event: Arc<pb::RecommendationsChanged>,
    /// The set in the full view, encoded (shared with the cache).
    set_full: Bytes,
    /// The set in the basic view, encoded (shared with the cache).
    set_basic: Bytes,
    /// Whether the moves changed.
    pub changed: bool,
}

impl Notice {
    /// The event carrying its set in the full or the basic view, encoded around the cached
    /// set's bytes.
    pub fn encoded(&self, full: bool) -> Encoded {
        let set = if full {
            &self.set_full
        } else {
            &self.set_basic
        };
        crate::state::cache::encoded_change(&self.event, set)
    }
}

/// What [`Shared::recompute`] did: the notice sent to the watchers and the set it cached.
#[derive(Debug, Clone)]
pub struct Recomputed {
    /// The notice.
    pub notice: Notice,
    /// The cached set.
    pub cached: Arc<Cached>,
}

impl Recomputed {
    /// The event carrying its set in the full or the basic view, as a message.
    pub fn event_in(&self, full: bool) -> pb::RecommendationsChanged {
        pb::RecommendationsChanged {
            recommendations: Some(crate::convert::in_view(&self.cached.full, full)),
            ..(*self.notice.event).clone()
        }
    }
}

/// What the tasks share.
#[derive(Debug)]
pub struct Shared {
    state: RwLock<State>,
    /// Overload events as they happen (for `WatchEvents`).
    pub events: broadcast::Sender<pb::OverloadEvent>,
    /// The latest overload events, stored ones included (the dashboard's event feed).
    pub recent_events: Recent,
    /// Every recomputation, flagged when the moves changed (for `WatchRecommendations`).
    pub changes: broadcast::Sender<Notice>,
    /// False until the start-up replay has caught up.
    pub ready: AtomicBool,
    /// The configuration.
    pub config: Config,
    /// Cancelled at shutdown.
    pub shutdown: CancellationToken,
    /// gRPC TLS and bearer token, loaded at start.
    pub security: auth::GrpcSecurity,
    /// `grpc.max_fresh_plans` permits for requests computed afresh (held by each while it
    /// computes; a test can hold them all).
    pub fresh_plans: Arc<tokio::sync::Semaphore>,
}

impl Shared {
    /// The shared state of a service with `config`, before any message.
    pub fn new(
        config: Config,
        settings: StateSettings,
        security: auth::GrpcSecurity,
        shutdown: CancellationToken,
    ) -> Self {
        let (events, _) = broadcast::channel(1024);
        let (changes, _) = broadcast::channel(64);
        Shared {
            state: RwLock::new(State::new(settings)),
            events,
            recent_events: Recent::default(),
            changes,
            ready: AtomicBool::new(false),
            fresh_plans: Arc::new(tokio::sync::Semaphore::new(config.grpc.fresh_plans())),
            config,
            shutdown,
            security,
        }
    }

    /// Reads the state (a poisoned lock is taken over: the state stays consistent per call).
    pub fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the state.
    pub fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Builds `cluster`'s view, plans it on behalf of `cycle`, caches the set and tells the
    /// watchers. `None` when the cluster has no view.
    pub fn recompute(&self, cluster: &str, cycle: u64) -> Option<Recomputed> {
        let _span = tracing::info_span!("recommender.recompute", cluster, cycle).entered();
        let started = Instant::now();
        let now = wall_ms();
        let (view, data_at_ms) = {
            let state = self.read();
            (state.view(cluster, now)?, state.data_time_ms(cluster)?)
        };
        let cluster_model = match view.validate() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(cluster, error = %e, "the view built from the snapshots was refused by the engine");
                return None;
            }
        };
        let set = engine::plan(&cluster_model, None);
        let recs = set.recommendations.len();
        let rules = crate::placement::rules_to_proto(&cluster_model);
        let (event, changed, cached) = {
            let mut state = self.write();
            state.store_rules(cluster, rules);
            let (event, changed) = state.store_set(set, now, cycle, data_at_ms);
            let cached = state.cached(cluster)?.clone();
            (event, changed, cached)
        };
        let elapsed = started.elapsed();
        metrics::histogram!(metric::RECOMPUTE_DURATION, "cluster" => cluster.to_owned())
            .record(elapsed.as_secs_f64());
        tracing::debug!(
            cluster,
            cycle,
            recommendations = recs,
            elapsed_ms = elapsed.as_millis() as u64,
            changed,
            "recomputed"
        );
        let notice = Notice {
            event: Arc::new(event),
            set_full: cached.set_full.clone(),
            set_basic: cached.set_basic.clone(),
            changed,
        };
        let _ = self.changes.send(notice.clone());
        Some(Recomputed { notice, cached })
    }
}

/// The settings of the state for a configuration.
pub fn state_settings(config: &Config) -> Result<StateSettings, ConfigError> {
    let (penalties, thresholds) = config.engine.resolve()?;
    let ms = |s: u64| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX);
    Ok(StateSettings {
        subjects: config.subjects()?,
        staleness_ms: ms(config.state.staleness_s),
        overload: config.overload.clone(),
        config: penalties,
        thresholds,
        max_clock_skew_ms: ms(config.state.max_clock_skew_s),
        retention_ms: ms(config.state.retention_s),
        placement: crate::placement::Placement::from_config(&config.engine),
    })
}

/// A started service.
#[derive(Debug)]
pub struct RunningService {
    grpc_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    tasks: CriticalTasks,
    nats: async_nats::Client,
}

impl RunningService {
    /// The address the gRPC server listens on (the real port when configured with port 0).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The address the dashboard listens on, when `http.listen` is set (the real port when
    /// configured with port 0).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The shared state (for tests and load drivers).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Waits until every task has ended: after the shutdown token is cancelled, or after a
    /// task panicked ([`ServiceError::Task`]; the other tasks were stopped).
    pub async fn wait(self) -> Result<(), ServiceError> {
        let ended = self.tasks.wait().await;
        // Bounded: while NATS is unreachable a flush would wait for the reconnection.
        let limit = Duration::from_millis(self.shared.config.grpc.shutdown_timeout_ms);
        match tokio::time::timeout(limit, self.nats.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "NATS flush at shutdown failed"),
            Err(_) => tracing::warn!(
                timeout_ms = limit.as_millis() as u64,
                "NATS flush at shutdown timed out (NATS unreachable)"
            ),
        }
        tracing::info!("recommender stopped");
        Ok(ended?)
    }
}

/// Runs the service until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ServiceError> {
    start(config, shutdown).await?.wait().await
}

/// Starts the service and returns once it listens (see the module documentation).
pub async fn start(
    config: Config,
    shutdown: CancellationToken,
) -> Result<RunningService, ServiceError> {
    config.validate()?;
    let settings = state_settings(&config)?;
    let security = auth::GrpcSecurity::load(&config.grpc)?;
    let subjects: Subjects = settings.subjects.clone();
    let connection =
        proxbalance_runtime::connect_nats(&config.nats.connection(), "proxbalance-recommender")
            .await?;
    let nats = connection.client.clone();
    let publisher = proxbalance_runtime::JetStreamPublisher::new(
        connection,
        Duration::from_millis(config.nats.publish_timeout_ms),
    );
    let js = publisher.jetstream().clone();
    events::ensure_stream(&js, &subjects, &config.nats).await?;

    let addr = config.grpc.listen.clone();
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| ServiceError::Bind {
            field: "grpc.listen",
            addr: addr.clone(),
            source,
        })?;
    let grpc_addr = listener.local_addr().map_err(|source| ServiceError::Bind {
        field: "grpc.listen",
        addr,
        source,
    })?;
    let http_listener = match &config.http.listen {
        Some(addr) => {
            let bind_error = |source| ServiceError::Bind {
                field: "http.listen",
                addr: addr.clone(),
                source,
            };
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(bind_error)?;
            let local = listener.local_addr().map_err(bind_error)?;
            Some((listener, local))
        }
        None => None,
    };
    let http_addr = http_listener.as_ref().map(|(_, a)| *a);

    let shared = Arc::new(Shared::new(
        config.clone(),
        settings,
        security,
        shutdown.clone(),
    ));

    let tasks = CriticalTasks::new(shutdown.clone());
    let (out_tx, out_rx) = mpsc::channel::<Outgoing>(4096);
    tasks.spawn(
        "events",
        events::publish_loop(publisher, subjects.clone(), out_rx),
    );
    tasks.spawn(
        "maintenance",
        maintenance::maintenance_loop(shared.clone(), out_tx.clone()),
    );
    tasks.spawn(
        "ingest",
        ingest::ingest_loop(shared.clone(), js, subjects, out_tx, config.replay_window()),
    );
    let (reporter, health) = tonic_health::server::health_reporter();
    // Both names are registered NOT_SERVING before the server accepts a call: a probe right
    // after start must read NOT_SERVING, not "service not registered" (and not the SERVING
    // that `health_reporter` gives the overall name "").
    set_health(&reporter, tonic_health::ServingStatus::NotServing).await;
    reporter
        .set_service_status(LIVENESS_SERVICE, tonic_health::ServingStatus::Serving)
        .await;
    tasks.spawn(
        "health",
        health_loop(shared.clone(), nats.clone(), reporter),
    );
    tasks.spawn(
        "grpc",
        grpc::serve(
            shared.clone(),
            listener,
            health,
            Duration::from_millis(config.grpc.shutdown_timeout_ms),
        ),
    );
    if let Some((listener, _)) = http_listener {
        tasks.spawn(
            "http",
            http::serve(
                shared.clone(),
                listener,
                Duration::from_millis(config.grpc.shutdown_timeout_ms),
            ),
        );
    }
    tasks.close();
    if let Some(addr) = http_addr {
        tracing::info!(
            dashboard = %format!("{}://{addr}/", if shared.security.tls() { "https" } else { "http" }),
            "dashboard listening"
        );
    }
    tracing::info!(
        %grpc_addr,
        tls = shared.security.tls(),
        token_required = shared.security.token_required(),
        "recommender listening"
    );
    Ok(RunningService {
        grpc_addr,
        http_addr,
        shared,
        tasks,
        nats,
    })
}

/// The health service name of the liveness probe: SERVING from the moment the server accepts
/// calls until shutdown, whatever the data. Readiness (`""` and `proxbalance.v1.Recommender`)
/// is NOT_SERVING while NATS is down or the data is stale, which is no reason to restart the
/// process; a task that died is (the process exits, see [`proxbalance_runtime::tasks`]), and a
/// process whose gRPC server no longer answers is, which this name lets the probe see.
pub const LIVENESS_SERVICE: &str = "liveness";

/// Sets the health of `proxbalance.v1.Recommender` and of the server as a whole ("").
async fn set_health(
    reporter: &tonic_health::server::HealthReporter,
    status: tonic_health::ServingStatus,
) {
    let service = <pb::recommender_server::RecommenderServer<grpc::Service> as tonic::server::NamedService>::NAME;
    reporter.set_service_status(service, status).await;
    reporter.set_service_status("", status).await;
}

/// Keeps the health status up to date: SERVING while NATS is connected, the replay is done and
/// some cluster has fresh data.
async fn health_loop(
    shared: Arc<Shared>,
    nats: async_nats::Client,
    reporter: tonic_health::server::HealthReporter,
) {
    let mut last = Some(false);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let connected = nats.connection_state() == async_nats::connection::State::Connected;
        let serving = connected
            && shared.ready.load(Ordering::Acquire)
            && shared.read().has_fresh_data(wall_ms());
        if last != Some(serving) {
            let status = if serving {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            set_health(&reporter, status).await;
            tracing::info!(serving, nats_connected = connected, "health changed");
            last = Some(serving);
        }
    }
    set_health(&reporter, tonic_health::ServingStatus::NotServing).await;
    reporter
        .set_service_status(LIVENESS_SERVICE, tonic_health::ServingStatus::NotServing)
        .await;
}
