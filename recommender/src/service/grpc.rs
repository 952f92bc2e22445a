//! The gRPC service `proxbalance.v1.Recommender`, with health and reflection.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use proxbalance_engine::{self as engine, ConfigError};
use proxbalance_proto::v1 as pb;
use proxbalance_proto::v1::recommender_server::{Recommender, RecommenderServer};
use tokio::sync::broadcast;
use tonic::{Code, Request, Response, Status};

use super::{Shared, metric, wall_ms};
use crate::convert;
use crate::state::{Cached, Encoded};

type WatchStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The service implementation.
#[derive(Debug, Clone)]
pub struct Service {
    shared: Arc<Shared>,
}

/// Records a call's latency with its method and status code.
struct Timer {
    method: &'static str,
    started: Instant,
}

impl Timer {
    fn start(method: &'static str) -> Self {
        Timer {
            method,
            started: Instant::now(),
        }
    }

    fn done<T>(self, r: Result<T, Status>) -> Result<T, Status> {
        let code = match &r {
            Ok(_) => Code::Ok,
            Err(s) => s.code(),
        };
        metrics::histogram!(metric::GRPC_LATENCY, "method" => self.method, "code" => format!("{code:?}"))
            .record(self.started.elapsed().as_secs_f64());
        r
    }
}

fn require_cluster(cluster: &str) -> Result<(), Status> {
    if cluster.trim().is_empty() {
        Err(Status::invalid_argument("cluster: expected a cluster name"))
    } else {
        Ok(())
    }
}

fn not_found(cluster: &str) -> Status {
    Status::not_found(format!(
        "cluster: no cluster named {cluster:?} has sent snapshots"
    ))
}

/// `NOT_FOUND` for a cluster nobody reported, but `UNAVAILABLE` while the recommender has no
/// data at all yet (replay not done, or no snapshot received): it cannot tell yet.
pub(super) fn unknown_cluster(
    shared: &Shared,
    state: &crate::state::State,
    cluster: &str,
) -> Status {
    if !shared.ready.load(std::sync::atomic::Ordering::Acquire) || state.cluster_names().is_empty()
    {
        Status::unavailable(format!(
            "cluster {cluster:?}: no data yet (the recommender is starting or no snapshot has arrived)"
        ))
    } else {
        not_found(cluster)
    }
}

/// Maps an override the engine refused to INVALID_ARGUMENT naming the key.
fn bad_override(e: ConfigError) -> Status {
    let msg = match e {
        ConfigError::UnknownKey { key } if key.starts_with("thresholds.") => {
            format!("overrides.{key}: unknown key (expected cpu, mem or iowait)")
        }
        ConfigError::UnknownKey { key } => format!("overrides.penalties.{key}: unknown key"),
        ConfigError::InvalidValue { key, expected }
            if key.starts_with("thresholds.") || key == "maintenance_nodes" =>
        {
            format!("overrides.{key}: {expected}")
        }
        ConfigError::InvalidValue { key, expected } => {
            format!("overrides.penalties.{key}: {expected}")
        }
        ConfigError::UnknownPreset { name } => format!(
            "overrides.preset: unknown preset {name:?} (expected conservative, balanced or aggressive)"
        ),
    };
    Status::invalid_argument(msg)
}

/// The view a request asks for (`true`: full), or INVALID_ARGUMENT.
fn full_view(view: i32) -> Result<bool, Status> {
    convert::wants_full_view(view).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// The messages of a `WatchRecommendations` stream, encoded.
pub(super) type EncodedStream = WatchStream<Encoded>;

/// A request computed afresh, holding one of `grpc.max_fresh_plans` permits.
type FreshPermit = tokio::sync::OwnedSemaphorePermit;

/// A fresh model and what it was built from.
pub(super) struct Tuned {
    /// The cluster's model with the overrides applied.
    pub(super) model: engine::Cluster,
    overrides: engine::Overrides,
    data_at_ms: i64,
    age_ms: i64,
}

impl Service {
    /// A service over the shared state.
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Service { shared }
    }

    /// The age of data observed at `data_at_ms` (see [`fresh_enough`]).
    fn fresh_enough(&self, cluster: &str, data_at_ms: i64) -> Result<i64, Status> {
        fresh_enough(&self.shared, cluster, data_at_ms)
    }

    /// Computes `work` on the cluster's model with the request's overrides, off the async
    /// threads (building the view, validating and planning a large cluster take tens of ms),
    /// holding one of the `grpc.max_fresh_plans` permits: beyond them `RESOURCE_EXHAUSTED`, so
    /// a burst of requests with overrides cannot take the CPUs cached answers and ingest need.
    pub(super) async fn compute_afresh<T: Send + 'static>(
        &self,
        cluster: &str,
        overrides: Option<&pb::Overrides>,
        limit: u32,
        work: impl FnOnce(Tuned) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let ov = convert::overrides_from_proto(overrides, limit).map_err(bad_override)?;
        let permit: FreshPermit = self
            .shared
            .fresh_plans
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                Status::resource_exhausted(format!(
                    "{} requests computed afresh are running (grpc.max_fresh_plans); retry \
                         later, or ask without overrides and limit for the cached set",
                    self.shared.config.grpc.fresh_plans()
                ))
            })?;
        let shared = self.shared.clone();
        let cluster = cluster.to_owned();
        tokio::task::spawn_blocking(move || {
            let tuned = tuned_cluster(&shared, &cluster, ov)?;
            let r = work(tuned);
            drop(permit);
            r
        })
        .await
        .map_err(|e| Status::internal(format!("computing afresh failed: {e}")))?
    }

    /// `GetRecommendations` without overrides and limit is served from the cache: `Ok(None)`
    /// means the request must be computed afresh.
    pub(super) fn cached_recommendations(
        &self,
        req: &pb::GetRecommendationsRequest,
    ) -> Result<Option<Encoded>, Status> {
        require_cluster(&req.cluster)?;
        let full = full_view(req.view)?;
        if !convert::overrides_are_empty(req.overrides.as_ref()) || req.limit != 0 {
            return Ok(None);
        }
        let cached = {
            let state = self.shared.read();
            if !state.knows(&req.cluster) {
                return Err(unknown_cluster(&self.shared, &state, &req.cluster));
            }
            state.cached(&req.cluster).cloned()
        };
        let cached = cached.ok_or_else(|| {
            Status::unavailable(format!(
                "cluster {:?}: no recommendations yet (waiting for a complete collection cycle)",
                req.cluster
            ))
        })?;
        let age_ms = self.fresh_enough(&req.cluster, cached.data_at_ms)?;
        Ok(Some(cached.response(full, age_ms)))
    }

    /// Plans the cluster afresh with the request's overrides and limit.
    pub(super) async fn fresh_recommendations(
        &self,
        req: &pb::GetRecommendationsRequest,
    ) -> Result<pb::GetRecommendationsResponse, Status> {
        let full = full_view(req.view)?;
        self.compute_afresh(
            &req.cluster,
            req.overrides.as_ref(),
            req.limit,
            move |tuned| {
                let set = engine::plan(&tuned.model, tuned.overrides.limit);
                let set = convert::set_to_proto(&set);
                Ok(pb::GetRecommendationsResponse {
                    set: Some(if full { set } else { convert::basic_view(&set) }),
                    computed_fresh: true,
                    generation: 0,
                    data_at_unix_ms: tuned.data_at_ms,
                    age_ms: tuned.age_ms,
                })
            },
        )
        .await
    }

    /// `GetRecommendations` answered with encoded bytes: the cached response around the
    /// cached set's bytes, or a fresh one encoded once.
    pub(super) async fn get_recommendations_encoded(
        &self,
        req: &pb::GetRecommendationsRequest,
    ) -> Result<Encoded, Status> {
        let t = Timer::start("GetRecommendations");
        let r = match self.cached_recommendations(req) {
            Ok(Some(encoded)) => Ok(encoded),
            Ok(None) => self
                .fresh_recommendations(req)
                .await
                .map(|resp| vec![prost::Message::encode_to_vec(&resp).into()]),
            Err(e) => Err(e),
        };
        t.done(r)
    }

    /// `WatchRecommendations`, its messages encoded: first the cached set of every cluster
    /// asked for, then every recomputation. Only `Arc` handles of the cached sets are taken
    /// under the state lock; each first message is written around the cached bytes when the
    /// client reads it, so a watcher that does not read holds no copy of any set.
    pub(super) fn watch_recommendations_encoded(
        &self,
        req: &pb::WatchRecommendationsRequest,
    ) -> Result<EncodedStream, Status> {
        let t = Timer::start("WatchRecommendations");
        let filter = req.cluster.clone();
        let every = req.every_recompute;
        let full = match full_view(req.view) {
            Ok(full) => full,
            Err(e) => return t.done(Err(e)),
        };
        // Subscribe before reading the cache so no change falls in between.
        let rx = self.shared.changes.subscribe();
        let initial: Vec<Arc<Cached>> = {
            let state = self.shared.read();
            state
                .cluster_names()
                .into_iter()
                .filter(|c| filter.is_empty() || *c == filter)
                .filter_map(|c| state.cached(&c).cloned())
                .collect()
        };
        let at_ms = wall_ms();
        let first = futures_util::stream::iter(initial)
            .map(move |cached| Ok(cached.watch_start(at_ms, full)));
        let updates = broadcast_stream(rx, self.shared.clone(), move |n: &super::Notice| {
            (every || n.changed) && (filter.is_empty() || n.event.cluster == filter)
        })
        .map(move |r| r.map(|n| n.encoded(full)));
        let stream = first
            .chain(updates)
            .take_until(self.shared.shutdown.clone().cancelled_owned());
        t.done(Ok(Box::pin(stream) as EncodedStream))
    }
}

/// The age of data observed at `data_at_ms` (0 when the collector's clock is ahead), or
/// `UNAVAILABLE` past `state.max_answer_age_s`: the cluster's collector stopped, and an answer
/// would describe the past as if it were now.
pub(super) fn fresh_enough(shared: &Shared, cluster: &str, data_at_ms: i64) -> Result<i64, Status> {
    let age_ms = wall_ms().saturating_sub(data_at_ms).max(0);
    let limit_s = shared.config.state.max_answer_age_s;
    if age_ms / 1000 >= i64::try_from(limit_s).unwrap_or(i64::MAX) {
        return Err(Status::unavailable(format!(
            "cluster {cluster:?}: its newest data is {} s old, over the limit of {limit_s} s \
             (state.max_answer_age_s); no collection cycle completed since",
            age_ms / 1000
        )));
    }
    Ok(age_ms)
}

/// Builds the cluster model with the overrides applied (blocking: the view of a large cluster
/// takes milliseconds).
fn tuned_cluster(shared: &Shared, cluster: &str, ov: engine::Overrides) -> Result<Tuned, Status> {
    let (view, data_at_ms, ha_rules_known) = {
        let state = shared.read();
        if !state.knows(cluster) {
            return Err(unknown_cluster(shared, &state, cluster));
        }
        (
            state.view(cluster, wall_ms()),
            state.data_time_ms(cluster),
            state.ha_rules_known(cluster),
        )
    };
    let (Some(view), Some(data_at_ms)) = (view, data_at_ms) else {
        return Err(Status::unavailable(format!(
            "cluster {cluster:?}: no snapshot yet"
        )));
    };
    let age_ms = fresh_enough(shared, cluster, data_at_ms)?;
    let mut model = view
        .validate()
        .map_err(|e| Status::internal(format!("cluster view: {e}")))?;
    model.apply(&ov).map_err(bad_override)?;
    if model.config.ha_guests == engine::HaGuests::Recommend && !ha_rules_known {
        return Err(Status::failed_precondition(format!(
            "overrides.penalties.ha_guests: the HA rules of cluster {cluster:?} have not been \
             read yet, so its HA guests cannot be planned within them; try again after the \
             collector's next cycle"
        )));
    }
    Ok(Tuned {
        model,
        overrides: ov,
        data_at_ms,
        age_ms,
    })
}

/// Decodes an encoded message (the typed methods' view of the encoded routes).
fn decoded<T: prost::Message + Default>(encoded: Encoded) -> Result<T, Status> {
    T::decode(encoded.concat().as_slice())
        .map_err(|e| Status::internal(format!("encoding an answer: {e}")))
}

#[tonic::async_trait]
impl Recommender for Service {
    async fn list_clusters(
        &self,
        _request: Request<pb::ListClustersRequest>,
    ) -> Result<Response<pb::ListClustersResponse>, Status> {
        let t = Timer::start("ListClusters");
        let clusters = self.shared.read().summaries(wall_ms());
        t.done(Ok(Response::new(pb::ListClustersResponse { clusters })))
    }

    async fn get_cluster_state(
        &self,
        request: Request<pb::GetClusterStateRequest>,
    ) -> Result<Response<pb::GetClusterStateResponse>, Status> {
        let t = Timer::start("GetClusterState");
        let cluster = request.into_inner().cluster;
        let r = require_cluster(&cluster).and_then(|()| {
            let state = self.shared.read();
            state
                .cluster_state(&cluster, wall_ms())
                .map(Response::new)
                .ok_or_else(|| unknown_cluster(&self.shared, &state, &cluster))
        });
        t.done(r)
    }

    async fn get_recommendations(
        &self,
        request: Request<pb::GetRecommendationsRequest>,
    ) -> Result<Response<pb::GetRecommendationsResponse>, Status> {
        // Served by the encoded route (super::encoded); this typed form decodes its bytes.
        let encoded = self.get_recommendations_encoded(request.get_ref()).await?;
        decoded(encoded).map(Response::new)
    }

    async fn get_migration_options(
        &self,
        request: Request<pb::GetMigrationOptionsRequest>,
    ) -> Result<Response<pb::GetMigrationOptionsResponse>, Status> {
        let t = Timer::start("GetMigrationOptions");
        let req = request.into_inner();
        let r = async {
            require_cluster(&req.cluster)?;
            if req.vmid == 0 {
                return Err(Status::invalid_argument("vmid: expected a guest id ≥ 1"));
            }
            let vmid = req.vmid;
            let options = self
                .compute_afresh(&req.cluster, req.overrides.as_ref(), 0, move |tuned| {
                    engine::migration_options(&tuned.model, vmid)
                        .map_err(|e| Status::not_found(e.to_string()))
                })
                .await?;
            Ok(Response::new(pb::GetMigrationOptionsResponse {
                options: Some(convert::options_to_proto(&options)),
            }))
        }
        .await;
        t.done(r)
    }

    type WatchRecommendationsStream = WatchStream<pb::RecommendationsChanged>;

    async fn watch_recommendations(
        &self,
        request: Request<pb::WatchRecommendationsRequest>,
    ) -> Result<Response<Self::WatchRecommendationsStream>, Status> {
        // Served by the encoded route (super::encoded); this typed form decodes its bytes.
        let stream = self
            .watch_recommendations_encoded(request.get_ref())?
            .map(|r| r.and_then(decoded));
        Ok(Response::new(Box::pin(stream) as WatchStream<_>))
    }

    type WatchEventsStream = WatchStream<pb::OverloadEvent>;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let t = Timer::start("WatchEvents");
        let req = request.into_inner();
        let rx = self.shared.events.subscribe();
        let shared = self.shared.clone();
        let stream = broadcast_stream(rx, shared.clone(), move |e: &pb::OverloadEvent| {
            (req.cluster.is_empty() || e.cluster == req.cluster)
                && (req.node.is_empty() || e.node == req.node)
        })
        .take_until(shared.shutdown.clone().cancelled_owned());
        t.done(Ok(Response::new(Box::pin(stream) as WatchStream<_>)))
    }

    async fn get_config(
        &self,
        request: Request<pb::GetConfigRequest>,
    ) -> Result<Response<pb::GetConfigResponse>, Status> {
        let t = Timer::start("GetConfig");
        let cluster = request.into_inner().cluster;
        let r = (|| {
            let state = self.shared.read();
            if !cluster.is_empty() && !state.knows(&cluster) {
                return Err(unknown_cluster(&self.shared, &state, &cluster));
            }
            let s = state.settings();
            let st = &self.shared.config.state;
            let secs = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            let map = s.config.to_map();
            let config_json = serde_json::to_string(&serde_json::json!({
                "penalty_config": map,
                "thresholds": s.thresholds,
                "overload": {
                    "clear_margin": s.overload.clear_margin,
                    "overcommit_threshold": s.overload.overcommit_threshold,
                    "overcommit_clear_margin": s.overload.overcommit_clear_margin,
                    "raise_cycles": s.overload.raise_cycles,
                    "clear_cycles": s.overload.clear_cycles,
                },
                // The pool rules in force there (or everywhere), and the cluster's reserves.
                "pools": s.placement.pools_of(&cluster),
                "cluster": s.placement.cluster(&cluster),
            }))
            .map_err(|e| Status::internal(e.to_string()))?;
            Ok(Response::new(pb::GetConfigResponse {
                thresholds: Some(pb::Thresholds {
                    cpu: Some(s.thresholds.cpu),
                    mem: Some(s.thresholds.mem),
                    iowait: Some(s.thresholds.iowait),
                }),
                preset: s
                    .config
                    .active_preset()
                    .map_or_else(|| "custom".to_owned(), |p| p.name().to_owned()),
                penalties: map
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                    .collect(),
                config_json,
                replay_window_s: secs(st.replay_window_s),
                staleness_limit_s: secs(st.staleness_s),
                max_clock_skew_s: secs(st.max_clock_skew_s),
                max_answer_age_s: secs(st.max_answer_age_s),
                retention_s: secs(st.retention_s),
            }))
        })();
        t.done(r)
    }
}

/// A stream of the broadcast values passing `keep`. A receiver that fell behind skips what it
/// missed (logged) and goes on; the stream ends when the sender is gone.
fn broadcast_stream<T: Clone + Send + 'static>(
    rx: broadcast::Receiver<T>,
    shared: Arc<Shared>,
    keep: impl Fn(&T) -> bool + Send + 'static,
) -> impl Stream<Item = Result<T, Status>> + Send + 'static {
    let _ = shared;
    futures_util::stream::unfold((rx, keep), |(mut rx, keep)| async move {
        loop {
            match rx.recv().await {
                Ok(v) if keep(&v) => return Some((Ok(v), (rx, keep))),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "watch stream fell behind; skipping");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// The largest response the server sends (a 20,000-guest set is a few megabytes).
const MAX_ENCODED: usize = 64 * 1024 * 1024;

/// The largest request the server decodes (4 MiB, tonic's default, which the pre-encoded
/// `GetRecommendations` route applies as well). Requests are a cluster name and overrides, a
/// few hundred bytes; a larger one is refused with `OUT_OF_RANGE` before it is decoded.
pub const MAX_DECODED: usize = 4 * 1024 * 1024;

/// Serves gRPC until shutdown; open streams end on the same token, and the whole shutdown is
/// bounded by `shutdown_timeout`.
pub async fn serve(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    shutdown_timeout: Duration,
) {
    let (reflection_v1, reflection_v1alpha) = reflection();
    let token = shared.shutdown.clone();
    let service = Service::new(shared.clone());
    let svc = super::encoded::Routes::new(
        RecommenderServer::new(service.clone())
            .max_encoding_message_size(MAX_ENCODED)
            .max_decoding_message_size(MAX_DECODED),
        service,
        MAX_ENCODED,
    );
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    // TLS and the bearer-token check (super::auth); refused TLS material was reported at start.
    let Ok(builder) = super::auth::server_builder(&shared.security) else {
        tracing::error!("gRPC TLS configuration refused");
        token.cancel();
        return;
    };
    // Resource limits (grpc.*): a call's time to its answer, calls at once per connection,
    // streams per connection, and keepalive pings that find vanished peers (and end their
    // watch streams).
    let g = &shared.config.grpc;
    let router = builder
        .timeout(Duration::from_millis(g.request_timeout_ms))
        .concurrency_limit_per_connection(g.concurrency_limit_per_connection)
        .max_concurrent_streams(g.max_concurrent_streams)
        .http2_keepalive_interval(Some(Duration::from_millis(g.keepalive_interval_ms)))
        .http2_keepalive_timeout(Some(Duration::from_millis(g.keepalive_timeout_ms)))
        .trace_fn(grpc_request_span)
        .add_service(health)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .add_service(svc);
    let server = router.serve_with_incoming_shutdown(incoming, token.clone().cancelled_owned());
    tokio::pin!(server);
    let result = tokio::select! {
        r = &mut server => r,
        () = async {
            token.cancelled().await;
            tokio::time::sleep(shutdown_timeout).await;
        } => {
            tracing::warn!(timeout_ms = shutdown_timeout.as_millis() as u64, "gRPC shutdown timed out; closing");
            Ok(())
        }
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "gRPC server failed");
        token.cancel();
    }
}

/// The reflection services, `grpc.reflection.v1` and `v1alpha` (grpcurl speaks v1; Python's
/// grpcio-reflection and older tools only v1alpha). Both describe every service the server
/// answers: the recommender, health and both reflection versions. A version that cannot be
/// built is logged and left out; the rest of the server runs without it.
fn reflection() -> (
    Option<
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
    >,
    Option<
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    >,
) {
    // Each build adds its own version's descriptor; the other one is registered here.
    let builder = |other_reflection: &'static [u8]| {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proxbalance_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(other_reflection)
    };
    let v1 = builder(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .build_v1()
        .inspect_err(|e| tracing::error!(error = %e, "gRPC reflection v1 unavailable"))
        .ok();
    let v1alpha = builder(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .inspect_err(|e| tracing::error!(error = %e, "gRPC reflection v1alpha unavailable"))
        .ok();
    (v1, v1alpha)
}

/// The span of one gRPC call, named after its path; a caller's `traceparent` metadata makes it
/// a child of the caller's span.
fn grpc_request_span(req: &tonic::codegen::http::Request<()>) -> tracing::Span {
    let span = tracing::info_span!("grpc.request", rpc = %req.uri().path());
    if let Some(tp) = req
        .headers()
        .get(proxbalance_runtime::telemetry::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
    {
        proxbalance_runtime::telemetry::set_parent_from_traceparent(&span, tp);
    }
    span
}
