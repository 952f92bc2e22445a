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
fn unknown_cluster(shared: &Shared, state: &crate::state::State, cluster: &str) -> Status {
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

/// A cached set: the full message, the view asked for, and the response encoded in that view.
pub(super) struct CachedHit {
    pub full_set: Arc<pb::RecommendationSet>,
    pub full: bool,
    pub generation: u64,
    pub encoded: prost::bytes::Bytes,
}

impl Service {
    /// A service over the shared state.
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Service { shared }
    }

    /// `GetRecommendations` without overrides and limit is served from the cache: `Ok(None)`
    /// means the request must be computed afresh.
    pub(super) fn cached_recommendations(
        &self,
        req: &pb::GetRecommendationsRequest,
    ) -> Result<Option<CachedHit>, Status> {
        require_cluster(&req.cluster)?;
        let full = full_view(req.view)?;
        if !convert::overrides_are_empty(req.overrides.as_ref()) || req.limit != 0 {
            return Ok(None);
        }
        let state = self.shared.read();
        if !state.knows(&req.cluster) {
            return Err(unknown_cluster(&self.shared, &state, &req.cluster));
        }
        match state.cached(&req.cluster) {
            Some(c) => Ok(Some(CachedHit {
                full_set: c.full.clone(),
                full,
                generation: c.generation,
                encoded: c.encoded(full).clone(),
            })),
            None => Err(Status::unavailable(format!(
                "cluster {:?}: no recommendations yet (waiting for a complete collection cycle)",
                req.cluster
            ))),
        }
    }

    /// Plans the cluster afresh with the request's overrides and limit.
    pub(super) async fn fresh_recommendations(
        &self,
        req: &pb::GetRecommendationsRequest,
    ) -> Result<pb::GetRecommendationsResponse, Status> {
        let full = full_view(req.view)?;
        let (model, ov) = self
            .tuned_cluster(&req.cluster, req.overrides.as_ref(), req.limit)
            .await?;
        let set = tokio::task::spawn_blocking(move || engine::plan(&model, ov.limit))
            .await
            .map_err(|e| Status::internal(format!("planning failed: {e}")))?;
        let set = convert::set_to_proto(&set);
        Ok(pb::GetRecommendationsResponse {
            set: Some(if full { set } else { convert::basic_view(&set) }),
            computed_fresh: true,
            generation: 0,
        })
    }

    /// `GetRecommendations` answered with encoded bytes: the cached response as it is, or a
    /// fresh one encoded once.
    pub(super) async fn get_recommendations_encoded(
        &self,
        req: &pb::GetRecommendationsRequest,
    ) -> Result<prost::bytes::Bytes, Status> {
        let t = Timer::start("GetRecommendations");
        let r = match self.cached_recommendations(req) {
            Ok(Some(hit)) => Ok(hit.encoded),
            Ok(None) => self
                .fresh_recommendations(req)
                .await
                .map(|resp| prost::Message::encode_to_vec(&resp).into()),
            Err(e) => Err(e),
        };
        t.done(r)
    }

    /// Builds the cluster model with the request's overrides applied (off the async threads).
    async fn tuned_cluster(
        &self,
        cluster: &str,
        overrides: Option<&pb::Overrides>,
        limit: u32,
    ) -> Result<(engine::Cluster, engine::Overrides), Status> {
        let ov = convert::overrides_from_proto(overrides, limit).map_err(bad_override)?;
        let view = {
            let state = self.shared.read();
            if !state.knows(cluster) {
                return Err(unknown_cluster(&self.shared, &state, cluster));
            }
            state.view(cluster, wall_ms())
        }
        .ok_or_else(|| Status::unavailable(format!("cluster {cluster:?}: no snapshot yet")))?;
        let mut model = view
            .validate()
            .map_err(|e| Status::internal(format!("cluster view: {e}")))?;
        model.apply(&ov).map_err(bad_override)?;
        Ok((model, ov))
    }
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
        let t = Timer::start("GetRecommendations");
        let req = request.into_inner();
        let r = match self.cached_recommendations(&req) {
            Ok(Some(hit)) => Ok(pb::GetRecommendationsResponse {
                set: Some(convert::in_view(&hit.full_set, hit.full)),
                computed_fresh: false,
                generation: hit.generation,
            }),
            Ok(None) => self.fresh_recommendations(&req).await,
            Err(e) => Err(e),
        };
        t.done(r.map(Response::new))
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
            let (model, _) = self
                .tuned_cluster(&req.cluster, req.overrides.as_ref(), 0)
                .await?;
            let options = engine::migration_options(&model, req.vmid)
                .map_err(|e| Status::not_found(e.to_string()))?;
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
        let t = Timer::start("WatchRecommendations");
        let req = request.into_inner();
        let filter = req.cluster;
        let every = req.every_recompute;
        let full = match full_view(req.view) {
            Ok(full) => full,
            Err(e) => return t.done(Err(e)),
        };
        // Subscribe before reading the cache so no change falls in between.
        let rx = self.shared.changes.subscribe();
        let initial: Vec<pb::RecommendationsChanged> = {
            let state = self.shared.read();
            state
                .cluster_names()
                .into_iter()
                .filter(|c| filter.is_empty() || *c == filter)
                .filter_map(|c| {
                    let cached = state.cached(&c)?;
                    Some(pb::RecommendationsChanged {
                        cluster: c.clone(),
                        at_unix_ms: wall_ms(),
                        generation: cached.generation,
                        added_vmids: cached.full.recommendations.iter().map(|r| r.vmid).collect(),
                        removed_vmids: Vec::new(),
                        changed_vmids: Vec::new(),
                        recommendations: Some(convert::in_view(&cached.full, full)),
                        cycle: cached.cycle,
                    })
                })
                .collect()
        };
        let shared = self.shared.clone();
        let updates = broadcast_stream(rx, shared.clone(), move |n: &super::Notice| {
            (every || n.changed) && (filter.is_empty() || n.event.cluster == filter)
        })
        .map(move |r| r.map(|n| n.event_in(full)));
        let stream = futures_util::stream::iter(initial.into_iter().map(Ok))
            .chain(updates)
            .take_until(shared.shutdown.clone().cancelled_owned());
        t.done(Ok(Response::new(Box::pin(stream) as WatchStream<_>)))
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
                replay_window_s: i64::try_from(self.shared.config.state.replay_window_s)
                    .unwrap_or(i64::MAX),
                staleness_limit_s: i64::try_from(self.shared.config.state.staleness_s)
                    .unwrap_or(i64::MAX),
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
    let router = builder
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
