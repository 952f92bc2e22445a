//! One trace from the PVE request to the recommendation: the collector (its real `run`) polls
//! pvesim and publishes to a real nats-server, the recommender ingests and recomputes, and every
//! span is kept by an in-memory OpenTelemetry exporter. The test then checks the links:
//!
//! `collector.cycle` ─┬─ `pve.request` (one per API call)
//!                    └─ `collector.publish` ──(traceparent header on NATS)── `recommender.ingest`
//!                                                                              └─ `recommender.recompute`
//!
//! and that a gRPC call carrying `traceparent` metadata is served in a child span of the caller.
//!
//! The subscriber is process-wide (the services run on the runtime's worker threads), so this
//! file holds a single test.

use std::time::Duration;

use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use proxbalance_collector::config::{ClusterConfig, Config as CollectorConfig};
use proxbalance_e2e::NatsServer;
use proxbalance_proto::v1 as pb;
use proxbalance_proto::v1::recommender_client::RecommenderClient;
use pvesim::{Scenario, Simulator};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt as _;

const DEMO: &str = include_str!("../../../deploy/demo-scenario.toml");
const TOKEN_ID: &str = "proxbalance@pve!collector";
const TOKEN_SECRET: &str = "5f0c8a8e-2b1d-4c3e-9a77-0d1e2f3a4b5c";
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn trace_id(s: &SpanData) -> String {
    s.span_context.trace_id().to_string()
}

fn span_id(s: &SpanData) -> String {
    s.span_context.span_id().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_pve_request_to_the_recommendation() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry().with(
        proxbalance_runtime::telemetry::otel_layer(&provider, "proxbalance-e2e"),
    );
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    proxbalance_collector::app::install_crypto_provider();
    let nats = NatsServer::start().expect("nats-server");
    let scenario = Scenario::from_toml_str(DEMO).expect("demo scenario");
    let sim = Simulator::start(scenario, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("pvesim");
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("pve-token");
    std::fs::write(&secret, TOKEN_SECRET).expect("secret file");

    let token = CancellationToken::new();
    let mut rc = proxbalance_recommender::Config::default();
    rc.nats.url = nats.url();
    rc.grpc.listen = "127.0.0.1:0".into();
    let recommender = proxbalance_recommender::start(rc, token.clone())
        .await
        .expect("recommender starts");

    let mut cluster = ClusterConfig::new(
        "demo",
        vec![format!("https://{}", sim.local_addr())],
        TOKEN_ID,
    );
    cluster.token_secret_file = Some(secret);
    cluster.fingerprint = vec![sim.fingerprint_sha256()];
    cluster.interval_s = 1.0;
    let cc = CollectorConfig {
        nats: Default::default(),
        metrics: Default::default(),
        clusters: vec![cluster],
        telemetry: Default::default(),
    };
    let mut cc = cc;
    cc.nats.url = nats.url();
    let collector = tokio::spawn(proxbalance_collector::app::run(cc, token.clone()));

    // Wait (bounded) until the recommender has computed a set from the collector's cycle.
    let mut client = RecommenderClient::connect(format!("http://{}", recommender.grpc_addr()))
        .await
        .expect("grpc connect")
        .max_decoding_message_size(256 << 20);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = client
            .get_recommendations(pb::GetRecommendationsRequest {
                cluster: "demo".into(),
                ..Default::default()
            })
            .await;
        if r.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no recommendation set within 60 s: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A caller's trace context in gRPC metadata.
    let mut req = tonic::Request::new(pb::ListClustersRequest {});
    req.metadata_mut().insert(
        "traceparent",
        format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")
            .parse()
            .expect("ascii"),
    );
    client.list_clusters(req).await.expect("ListClusters");

    token.cancel();
    tokio::time::timeout(Duration::from_secs(30), collector)
        .await
        .expect("collector stops in time")
        .expect("collector task")
        .expect("collector stops cleanly");
    tokio::time::timeout(Duration::from_secs(30), recommender.wait())
        .await
        .expect("recommender stops in time")
        .expect("recommender stops cleanly");
    provider.force_flush().expect("flush");
    let spans = exporter.get_finished_spans().expect("spans");

    // The first cycle's root span, and its PVE requests as children.
    let cycles = named(&spans, "collector.cycle");
    assert!(!cycles.is_empty(), "no collector.cycle span");
    let cycle = cycles
        .iter()
        .find(|c| {
            spans
                .iter()
                .any(|s| s.name == "recommender.recompute" && trace_id(s) == trace_id(c))
        })
        .expect("a cycle whose trace reached the recommender's recomputation");
    let trace = trace_id(cycle);
    let in_trace: Vec<&SpanData> = spans.iter().filter(|s| trace_id(s) == trace).collect();
    let child_of = |parent: &SpanData, name: &str| -> Vec<&SpanData> {
        in_trace
            .iter()
            .copied()
            .filter(|s| s.name == name && s.parent_span_id == parent.span_context.span_id())
            .collect()
    };
    let requests = child_of(cycle, "pve.request");
    assert!(
        requests.len() >= 3,
        "the cycle's PVE requests are its children: {requests:?}"
    );

    // The publish is a child of the cycle, and every snapshot ingested in this trace is a
    // child of the publish span (linked through the NATS traceparent header).
    let publish = child_of(cycle, "collector.publish");
    assert_eq!(publish.len(), 1, "{in_trace:?}");
    let publish = publish[0];
    let ingests = named(&spans, "recommender.ingest")
        .into_iter()
        .filter(|s| trace_id(s) == trace)
        .collect::<Vec<_>>();
    // The demo's 7 node snapshots and the cluster status at least (histories too, on cycle 1).
    assert!(ingests.len() >= 8, "{ingests:?}");
    for i in &ingests {
        assert_eq!(
            i.parent_span_id,
            publish.span_context.span_id(),
            "ingest span {} is not a child of the publish span {}",
            span_id(i),
            span_id(publish)
        );
        assert!(i.parent_span_is_remote, "the parent came over NATS");
    }

    // The recomputation the cycle completed is a child of one of those ingest spans.
    let recompute = in_trace
        .iter()
        .find(|s| s.name == "recommender.recompute")
        .expect("recompute in the trace");
    assert!(
        ingests
            .iter()
            .any(|i| i.span_context.span_id() == recompute.parent_span_id),
        "recompute's parent {} is no ingest span of the trace",
        recompute.parent_span_id
    );

    // gRPC: the server span joined the caller's trace.
    let grpc = named(&spans, "grpc.request")
        .into_iter()
        .find(|s| trace_id(s) == CALLER_TRACE)
        .unwrap_or_else(|| panic!("no grpc.request span in the caller's trace: {spans:?}"));
    assert_eq!(grpc.parent_span_id.to_string(), CALLER_SPAN);

    sim.shutdown().await;
    drop(nats);
}
