//! The recommender end to end: the demo scenario played by pvesim over HTTPS, the real collector
//! publishing to a real nats-server, the recommender in-process answering over gRPC and
//! publishing events to JetStream. Time moves by pvesim's manual clock and the collector's
//! cycle; waits are on streams (the events stream, watch streams, the health watch).

use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use futures_util::StreamExt;
use proxbalance_collector::cycle::{ClusterCollector, CycleSettings};
use proxbalance_collector::publisher::{Publisher, StreamLimits};
use proxbalance_collector::pve::tls::parse_fingerprint;
use proxbalance_collector::pve::{ApiToken, PveClient, PveClientSettings, TlsVerification};
use proxbalance_e2e::NatsServer;
use proxbalance_engine::{ReasonKind, RecommendationSet};
use proxbalance_proto::subjects::{Subject, Subjects};
use proxbalance_proto::v1 as pb;
use proxbalance_proto::v1::recommender_client::RecommenderClient;
use proxbalance_recommender::{Config, RunningService, convert};
use pvesim::{RunningSim, Scenario, Simulator};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::support::until_cycle;

const DEMO: &str = include_str!("../../../../deploy/demo-scenario.toml");
const TOKEN_ID: &str = "proxbalance@pve!collector";
const TOKEN_SECRET: &str = "5f0c8a8e-2b1d-4c3e-9a77-0d1e2f3a4b5c";
const WAIT: Duration = Duration::from_secs(60);

/// nats-server, pvesim with the demo scenario on a manual clock, and the collector.
struct Stack {
    nats: NatsServer,
    sim: RunningSim,
    collector: ClusterCollector,
    publisher: Publisher,
    http: reqwest::Client,
}

impl Stack {
    async fn start() -> Stack {
        proxbalance_collector::app::install_crypto_provider();
        let nats = NatsServer::start().expect("nats-server");
        let mut scenario = Scenario::from_toml_str(DEMO).expect("demo scenario");
        scenario.cluster.acceleration = 0.0;
        let sim = Simulator::start(scenario, "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("pvesim");
        let client = PveClient::new(PveClientSettings {
            cluster: "demo".into(),
            endpoints: vec![format!("https://{}", sim.local_addr())],
            token: ApiToken::new(TOKEN_ID, TOKEN_SECRET).expect("token"),
            tls: TlsVerification::Fingerprints(vec![
                parse_fingerprint(&sim.fingerprint_sha256()).expect("fingerprint"),
            ]),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            max_concurrency: 4,
        })
        .expect("pve client");
        let collector = ClusterCollector::new(
            CycleSettings {
                cluster: "demo".into(),
                guest_config_ttl: Duration::from_secs(600),
                guest_config_budget: 10_000,
                rrd_refresh: Duration::ZERO,
                history_interval: Duration::from_secs(3600),
                use_metrics_export: true,
            },
            client,
        );
        let nc = async_nats::connect(nats.url()).await.expect("nats");
        let publisher = Publisher::new(
            nc,
            Subjects::default(),
            &StreamLimits::default(),
            Duration::from_secs(5),
        )
        .await
        .expect("publisher");
        let ca = reqwest::Certificate::from_pem(sim.ca_pem().as_bytes()).expect("ca");
        let http = reqwest::Client::builder()
            .tls_certs_only([ca])
            .build()
            .expect("http");
        Stack {
            nats,
            sim,
            collector,
            publisher,
            http,
        }
    }

    /// Moves the simulated clock by `advance_s`, collects and publishes one cycle.
    async fn cycle(&mut self, advance_s: f64) -> u64 {
        self.sim.advance(advance_s);
        let out = self.collector.collect().await;
        assert!(out.status.errors.is_empty(), "{:?}", out.status.errors);
        let report = self.publisher.publish_cycle(&out).await;
        assert_eq!(report.failed, 0);
        out.status.cycle
    }

    /// Migrates a guest through the PVE API (as an operator applying a recommendation would).
    async fn migrate(&self, node: &str, vmid: u32, target: &str) {
        let url = format!(
            "{}/nodes/{node}/qemu/{vmid}/migrate?target={target}&online=1",
            self.sim.api_url()
        );
        let r = self
            .http
            .post(url)
            .header(
                "Authorization",
                format!("PVEAPIToken={TOKEN_ID}={TOKEN_SECRET}"),
            )
            .send()
            .await
            .expect("migrate request");
        assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
    }
}

fn config(nats_url: &str) -> Config {
    let mut c = Config::default();
    c.nats.url = nats_url.to_owned();
    c.grpc.listen = "127.0.0.1:0".into();
    c
}

struct Recommender {
    service: RunningService,
    token: CancellationToken,
    client: RecommenderClient<Channel>,
}

impl Recommender {
    async fn start(nats_url: &str) -> Recommender {
        let token = CancellationToken::new();
        let service = proxbalance_recommender::start(config(nats_url), token.clone())
            .await
            .expect("recommender starts");
        let client = RecommenderClient::connect(format!("http://{}", service.grpc_addr()))
            .await
            .expect("grpc connect")
            .max_decoding_message_size(256 << 20);
        Recommender {
            service,
            token,
            client,
        }
    }

    async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(WAIT, self.service.wait())
            .await
            .expect("stops in time")
            .expect("stops cleanly");
    }

    /// A watch stream that reports every recomputation, with full sets.
    async fn watch(&self) -> tonic::Streaming<pb::RecommendationsChanged> {
        self.client
            .clone()
            .watch_recommendations(pb::WatchRecommendationsRequest {
                cluster: "demo".into(),
                every_recompute: true,
                view: pb::SetView::Full.into(),
            })
            .await
            .expect("watch")
            .into_inner()
    }

    /// The cached set, full.
    async fn recommendations(&self) -> pb::RecommendationSet {
        self.client
            .clone()
            .get_recommendations(pb::GetRecommendationsRequest {
                cluster: "demo".into(),
                view: pb::SetView::Full.into(),
                ..Default::default()
            })
            .await
            .expect("recommendations")
            .into_inner()
            .set
            .expect("set")
    }

    /// A client of the recommender's health service.
    async fn health_client(&self) -> tonic_health::pb::health_client::HealthClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.service.grpc_addr()))
            .expect("url")
            .connect()
            .await
            .expect("connect");
        tonic_health::pb::health_client::HealthClient::new(channel)
    }

    /// The health `Check` of `service` ("" for the server as a whole).
    async fn health(
        &self,
        service: &str,
    ) -> tonic_health::pb::health_check_response::ServingStatus {
        self.health_client()
            .await
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status()
    }

    /// Waits until the health service reports SERVING.
    async fn serving(&self) {
        let mut stream = self
            .health_client()
            .await
            .watch(tonic_health::pb::HealthCheckRequest {
                service: "proxbalance.v1.Recommender".into(),
            })
            .await
            .expect("health watch")
            .into_inner();
        tokio::time::timeout(WAIT, async {
            while let Some(m) = stream.message().await.expect("health message") {
                if m.status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                {
                    return;
                }
            }
            panic!("health stream ended");
        })
        .await
        .expect("serving in time");
    }
}

/// One event read from the events stream.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    Overload {
        node: String,
        reason: pb::OverloadReason,
        state: pb::OverloadState,
    },
    Changed {
        generation: u64,
        cycle: u64,
    },
}

/// Follows `PROXBALANCE_EVENTS` from its first message.
struct Events {
    messages: async_nats::jetstream::consumer::pull::Ordered,
    raw: Vec<pb::OverloadEvent>,
    changes: Vec<pb::RecommendationsChanged>,
}

impl Events {
    async fn follow(nats_url: &str) -> Events {
        let nc = async_nats::connect(nats_url).await.expect("nats");
        let js = async_nats::jetstream::new(nc);
        let stream = js
            .get_stream("PROXBALANCE_EVENTS")
            .await
            .expect("events stream");
        let messages = stream
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .expect("consumer")
            .messages()
            .await
            .expect("messages");
        Events {
            messages,
            raw: Vec::new(),
            changes: Vec::new(),
        }
    }

    /// Reads events until one satisfies `stop` (included), and returns them all.
    async fn until(&mut self, stop: impl Fn(&Event) -> bool) -> Vec<Event> {
        let subjects = Subjects::default();
        tokio::time::timeout(WAIT, async {
            let mut out = Vec::new();
            loop {
                let msg = self
                    .messages
                    .next()
                    .await
                    .expect("events open")
                    .expect("event");
                let event = match subjects.parse(msg.subject.as_str()).expect("subject") {
                    Subject::Overload { .. } => {
                        let e: pb::OverloadEvent =
                            proxbalance_proto::decode(&msg.payload).expect("overload event");
                        self.raw.push(e.clone());
                        Event::Overload {
                            reason: e.reason(),
                            state: e.state(),
                            node: e.node,
                        }
                    }
                    Subject::Recommendations { .. } => {
                        let c: pb::RecommendationsChanged =
                            proxbalance_proto::decode(&msg.payload).expect("changed event");
                        self.changes.push(c.clone());
                        Event::Changed {
                            generation: c.generation,
                            cycle: c.cycle,
                        }
                    }
                    other => panic!("unexpected subject {other:?}"),
                };
                let done = stop(&event);
                out.push(event);
                if done {
                    return out;
                }
            }
        })
        .await
        .expect("events in time")
    }
}

fn overload(node: &str, reason: pb::OverloadReason, state: pb::OverloadState) -> Event {
    Event::Overload {
        node: node.into(),
        reason,
        state,
    }
}

/// pve4 is built to be bursty: whether its CPU crosses 60 % depends on the hour of the real
/// clock the simulation starts at, so its CPU events are left out of exact sequences.
fn without_bursty_cpu(events: Vec<Event>) -> Vec<Event> {
    events
        .into_iter()
        .filter(|e| {
            !matches!(e, Event::Overload { node, reason: pb::OverloadReason::Cpu, .. } if node == "pve4")
        })
        .collect()
}

fn engine_set(p: &pb::RecommendationSet) -> RecommendationSet {
    convert::set_from_proto(p).expect("convertible set")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_scenarios_yield_the_expected_recommendations_and_events() {
    let mut stack = Stack::start().await;
    let rec = Recommender::start(&stack.nats.url()).await;
    let mut events = Events::follow(&stack.nats.url()).await;
    let mut watch = rec.watch().await;

    // Before any data the recommender cannot tell: NOT_SERVING from the moment it listens (not
    // "service not registered"), and UNAVAILABLE.
    use tonic_health::pb::health_check_response::ServingStatus;
    assert_eq!(
        rec.health("proxbalance.v1.Recommender").await,
        ServingStatus::NotServing
    );
    assert_eq!(rec.health("").await, ServingStatus::NotServing);
    // Liveness (the Kubernetes liveness probe's name) is SERVING all the same: no data is no
    // reason to restart the process.
    assert_eq!(
        rec.health(proxbalance_recommender::service::LIVENESS_SERVICE)
            .await,
        ServingStatus::Serving
    );
    let err = rec
        .client
        .clone()
        .get_recommendations(pb::GetRecommendationsRequest {
            cluster: "demo".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");

    let first_cycle = stack.cycle(10.0).await;
    let first = until_cycle(&mut watch, first_cycle).await;
    assert_eq!(first.generation, 1);
    rec.serving().await;

    // Overload events on NATS for cycle 1, then the first recommendation set.
    let seen = events.until(|e| matches!(e, Event::Changed { .. })).await;
    use pb::OverloadReason as R;
    use pb::OverloadState as S;
    assert_eq!(
        without_bursty_cpu(seen),
        vec![
            overload("pve2", R::MemOvercommit, S::Raised),
            overload("pve6", R::Iowait, S::Raised),
            Event::Changed {
                generation: 1,
                cycle: first_cycle
            },
        ]
    );
    let iow = events
        .raw
        .iter()
        .find(|e| e.node == "pve6")
        .expect("pve6 event");
    assert!(iow.value > 30.0, "{iow:?}");
    assert!(iow.avg_24h.is_some_and(|a| a > 21.0), "{iow:?}");
    assert_eq!(iow.threshold, 30.0);
    // The event on NATS carries the basic view of the set the watch (full view) got.
    let full = first.recommendations.as_ref().expect("full set");
    assert!(!full.skipped.is_empty() && !full.recommendations.is_empty());
    assert!(
        full.recommendations
            .iter()
            .all(|r| r.score_details.is_some())
    );
    assert_eq!(
        events.changes[0].recommendations,
        Some(convert::basic_view(full))
    );
    // A watch that does not ask for a view starts with the cached set in the basic view.
    let mut basic_watch = rec
        .client
        .clone()
        .watch_recommendations(pb::WatchRecommendationsRequest {
            cluster: "demo".into(),
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let current = basic_watch.message().await.expect("watch").expect("open");
    assert_eq!(current.generation, first.generation);
    assert_eq!(current.recommendations, Some(convert::basic_view(full)));
    drop(basic_watch);

    // Disk rates come from counter differences, so guests' disk I/O is known from cycle 2 on.
    let cycle = stack.cycle(10.0).await;
    let second = until_cycle(&mut watch, cycle).await;
    let set = engine_set(second.recommendations.as_ref().expect("set"));
    // The cached set is what GetRecommendations serves: in the basic view by default (no
    // score breakdowns, no skipped guests, their number kept), in full on request.
    let full = second.recommendations.as_ref().unwrap();
    assert_eq!(rec.recommendations().await, *full);
    let view = |view: i32| {
        let mut client = rec.client.clone();
        async move {
            client
                .get_recommendations(pb::GetRecommendationsRequest {
                    cluster: "demo".into(),
                    view,
                    ..Default::default()
                })
                .await
        }
    };
    let basic = view(pb::SetView::Unspecified.into())
        .await
        .expect("default view")
        .into_inner()
        .set
        .expect("set");
    assert_eq!(basic, convert::basic_view(full));
    assert!(basic.skipped.is_empty());
    assert!(
        basic
            .recommendations
            .iter()
            .all(|r| r.score_details.is_none())
    );
    assert_eq!(
        basic.summary.as_ref().map(|s| s.total_skipped),
        Some(full.skipped.len() as u64)
    );
    assert_eq!(
        view(pb::SetView::Basic.into())
            .await
            .expect("basic")
            .into_inner()
            .set,
        Some(basic)
    );
    let err = view(7).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "view: unknown set view 7; expected SET_VIEW_BASIC (1) or SET_VIEW_FULL (2)"
    );

    let score = |node: &str| {
        set.node_scores
            .iter()
            .find(|n| n.node == node)
            .unwrap_or_else(|| panic!("{node} scored"))
    };
    // (2) overcommit 1.3 → 40, 1.09 → 15.
    assert_eq!(score("pve2").mem_overcommit_ratio, 1.3);
    assert_eq!(score("pve2").penalties.mem_overcommit, 40.0);
    assert_eq!(score("pve3").penalties.mem_overcommit, 15.0);
    // (3) volatile ×1.3, rock-steady ×0.7 (stability from the history the collector published).
    assert_eq!(score("pve4").cpu_stability_factor, 1.3);
    assert_eq!(score("pve5").cpu_stability_factor, 0.7);
    // (4) pve6 is IOWait-stressed and its busiest-disk guest goes; pve7 (8 % on average) is not.
    assert_eq!(set.summary.iowait_stressed_nodes, vec!["pve6".to_owned()]);
    let relief: Vec<(u32, &str)> = set
        .recommendations
        .iter()
        .filter(|r| r.reason.kind == ReasonKind::IowaitRelief)
        .map(|r| (r.vmid, r.source_node.as_str()))
        .collect();
    assert_eq!(
        relief,
        vec![(601, "pve6")],
        "{}",
        proxbalance_recommender::cli::render_plan(&set)
    );
    // (1) pve1 (90 % committed, 60 % used) receives nothing: the capacity gate refuses it.
    assert!(set.recommendations.iter().all(|r| r.target_node != "pve1"));
    let options = rec
        .client
        .clone()
        .get_migration_options(pb::GetMigrationOptionsRequest {
            cluster: "demo".into(),
            vmid: 601,
            overrides: None,
        })
        .await
        .expect("options")
        .into_inner()
        .options
        .expect("options");
    let options = convert::options_from_proto(&options).expect("convertible");
    let pve1 = options
        .targets
        .iter()
        .find(|t| t.node == "pve1")
        .expect("pve1");
    assert_eq!(
        pve1.gate_reason.as_deref(),
        Some("insufficient memory capacity")
    );
    assert!(!pve1.eligible);

    // The CLI against the service: `recommendations --format json` prints what `plan --format
    // json` prints for the same set.
    let server = format!("http://{}", rec.service.grpc_addr());
    let at = ["--server", &server, "--cluster", "demo"];
    let cli = |args: &[&str]| crate::support::cli(&[args, &at[..]].concat());
    let json = cli(&["recommendations", "--format", "json"])
        .await
        .expect("cli ok");
    let mut expected = serde_json::to_string_pretty(&set).expect("json");
    expected.push('\n');
    assert_eq!(json, expected);
    let table = cli(&["recommendations"]).await.expect("cli ok");
    assert_eq!(table, proxbalance_recommender::cli::render_plan(&set));
    let state_json = cli(&["state", "--format", "json"]).await.expect("cli ok");
    let v: serde_json::Value = serde_json::from_str(&state_json).expect("state json");
    assert_eq!(v["nodes"].as_array().map(Vec::len), Some(7));
    // The collector's clock skew against NATS (same host: well under a second, the collection
    // time making it slightly negative) and whether a node missed the last cycle.
    let skew = v["clock_skew_ms"].as_i64().expect("clock_skew_ms");
    assert!((-5_000..=1_000).contains(&skew), "{skew}");
    assert!(
        v["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|n| n["missed_cycle"] == serde_json::json!(false)),
        "{v}"
    );
    let options_table = cli(&["options", "--vmid", "601"]).await.expect("cli ok");
    assert!(options_table.contains("pve1  no"), "{options_table}");
    let err = crate::support::cli(&["recommendations", "--server", &server, "--cluster", "nope"])
        .await
        .unwrap_err();
    assert!(
        matches!(err, proxbalance_recommender::cli::CliError::Input(_)),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "cluster: no cluster named \"nope\" has sent snapshots"
    );

    // Overrides compute afresh; errors name what is wrong.
    let fresh = rec
        .client
        .clone()
        .get_recommendations(pb::GetRecommendationsRequest {
            cluster: "demo".into(),
            overrides: Some(pb::Overrides {
                maintenance_nodes: vec!["pve5".into()],
                ..Default::default()
            }),
            limit: 0,
            view: pb::SetView::Full.into(),
        })
        .await
        .expect("with overrides")
        .into_inner();
    assert!(fresh.computed_fresh);
    let fresh = engine_set(fresh.set.as_ref().unwrap());
    assert_eq!(fresh.summary.maintenance_nodes, vec!["pve5".to_owned()]);
    assert!(
        fresh
            .recommendations
            .iter()
            .any(|r| r.reason.kind == ReasonKind::MaintenanceEvacuation)
    );
    // the plan's limit is an override like any key: one move, the rest deferred with its gain;
    // the set carries every node before and after the plan
    let evacuation = fresh.recommendations.len();
    let limited = rec
        .client
        .clone()
        .get_recommendations(pb::GetRecommendationsRequest {
            cluster: "demo".into(),
            overrides: Some(pb::Overrides {
                maintenance_nodes: vec!["pve5".into()],
                penalties: [("max_moves".to_owned(), "1".to_owned())].into(),
                ..Default::default()
            }),
            limit: 0,
            view: pb::SetView::Basic.into(),
        })
        .await
        .expect("with a move limit")
        .into_inner();
    let limited = limited.set.expect("set");
    assert_eq!(limited.planner, "cluster");
    assert_eq!(limited.recommendations.len(), 1);
    assert_eq!(limited.deferred.len(), evacuation - 1);
    assert!(
        limited
            .deferred
            .iter()
            .all(|d| d.reason == "max_moves (1) reached")
    );
    let prediction = limited.prediction.expect("prediction");
    assert_eq!(prediction.nodes.len(), 7);
    let pve5 = prediction
        .nodes
        .iter()
        .find(|n| n.node == "pve5")
        .expect("pve5 predicted");
    let (before, after) = (pve5.before.expect("before"), pve5.after.expect("after"));
    assert_eq!(after.running_guests + 1, before.running_guests);
    let err = rec
        .client
        .clone()
        .get_recommendations(pb::GetRecommendationsRequest {
            cluster: "demo".into(),
            overrides: Some(pb::Overrides {
                penalties: [("no_such_key".to_owned(), "1".to_owned())].into(),
                ..Default::default()
            }),
            limit: 0,
            view: pb::SetView::Full.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "overrides.penalties.no_such_key: unknown key"
    );
    let err = rec
        .client
        .clone()
        .get_migration_options(pb::GetMigrationOptionsRequest {
            cluster: "demo".into(),
            vmid: 4242,
            overrides: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = rec
        .client
        .clone()
        .get_cluster_state(pb::GetClusterStateRequest {
            cluster: "elsewhere".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let state = rec
        .client
        .clone()
        .get_cluster_state(pb::GetClusterStateRequest {
            cluster: "demo".into(),
        })
        .await
        .expect("state")
        .into_inner();
    assert_eq!(state.nodes.len(), 7);
    assert!(
        state
            .nodes
            .iter()
            .all(|n| !n.stale && n.hourly_samples >= 160)
    );
    let clusters = rec
        .client
        .clone()
        .list_clusters(pb::ListClustersRequest {})
        .await
        .expect("clusters")
        .into_inner();
    assert_eq!(clusters.clusters.len(), 1);
    assert_eq!(clusters.clusters[0].name, "demo");
    assert_eq!(clusters.clusters[0].nodes, 7);

    // Shutdown ends the open watch stream cleanly.
    rec.stop().await;
    let end = tokio::time::timeout(WAIT, watch.message())
        .await
        .expect("stream ends");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
    stack.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overload_that_subsides_yields_exactly_one_cleared() {
    let mut stack = Stack::start().await;
    let rec = Recommender::start(&stack.nats.url()).await;
    let mut events = Events::follow(&stack.nats.url()).await;
    let mut watch = rec.watch().await;

    let first_cycle = stack.cycle(10.0).await;
    until_cycle(&mut watch, first_cycle).await;
    // pve2 is overcommitted 1.30; moving a 16 GiB guest away brings it to 1.05 (< 1.2 − 0.05).
    stack.migrate("pve2", 201, "pve5").await;
    let mut last = 0;
    for _ in 0..8 {
        last = stack.cycle(10.0).await;
    }
    until_cycle(&mut watch, last).await;
    // A marker: pve3 goes over 1.2 when another 16 GiB arrive. Everything before it is in.
    stack.migrate("pve2", 202, "pve3").await;
    for _ in 0..4 {
        stack.cycle(10.0).await;
    }
    let seen = events
        .until(|e| {
            *e == overload(
                "pve3",
                pb::OverloadReason::MemOvercommit,
                pb::OverloadState::Raised,
            )
        })
        .await;
    let pve2: Vec<Event> = seen
        .iter()
        .filter(|e| matches!(e, Event::Overload { node, .. } if node == "pve2"))
        .cloned()
        .collect();
    assert_eq!(
        pve2,
        vec![
            overload(
                "pve2",
                pb::OverloadReason::MemOvercommit,
                pb::OverloadState::Raised
            ),
            overload(
                "pve2",
                pb::OverloadReason::MemOvercommit,
                pb::OverloadState::Cleared
            ),
        ]
    );
    let cleared = events
        .raw
        .iter()
        .find(|e| e.node == "pve2" && e.state() == pb::OverloadState::Cleared)
        .expect("cleared");
    assert!(cleared.value < 1.15, "{cleared:?}");
    assert_eq!(cleared.threshold, 1.2);
    rec.stop().await;
    stack.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_agree_and_a_restarted_recommender_serves_the_same_after_replay() {
    let mut stack = Stack::start().await;
    let a = Recommender::start(&stack.nats.url()).await;
    let b = Recommender::start(&stack.nats.url()).await;
    let mut watch_a = a.watch().await;
    let mut watch_b = b.watch().await;
    let mut last = 0;
    for _ in 0..3 {
        last = stack.cycle(10.0).await;
    }
    let from_a = until_cycle(&mut watch_a, last).await;
    let from_b = until_cycle(&mut watch_b, last).await;
    assert_eq!(from_a.cycle, last);
    assert_eq!(from_a.recommendations, from_b.recommendations);
    let set_a = a.recommendations().await;
    assert_eq!(set_a, b.recommendations().await);
    assert!(!set_a.recommendations.is_empty());

    // A goes away; C starts afresh, reads the history and replays the snapshot stream.
    a.stop().await;
    let c = Recommender::start(&stack.nats.url()).await;
    c.serving().await;
    assert_eq!(c.recommendations().await, set_a);
    c.stop().await;
    b.stop().await;
    stack.sim.shutdown().await;
}
