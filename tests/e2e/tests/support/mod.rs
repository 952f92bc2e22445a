//! What the fault tests share: the demo scenario in pvesim on a manual clock, the collector
//! driven one cycle at a time through a retry buffer, and the recommender in-process.
#![allow(dead_code)]

use std::time::Duration;

use proxbalance_collector::cycle::{ClusterCollector, CycleOutput, CycleSettings};
use proxbalance_collector::publisher::{PublishReport, Publisher, StreamLimits};
use proxbalance_collector::pve::tls::parse_fingerprint;
use proxbalance_collector::pve::{ApiToken, PveClient, PveClientSettings, TlsVerification};
use proxbalance_collector::retry::RetryBuffer;
use proxbalance_proto::subjects::Subjects;
use proxbalance_proto::v1 as pb;
use proxbalance_proto::v1::recommender_client::RecommenderClient;
use proxbalance_recommender::{Config, RunningService};
use pvesim::{RunningSim, Scenario, Simulator};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub const DEMO: &str = include_str!("../../../../deploy/demo-scenario.toml");
pub const TOKEN_ID: &str = "proxbalance@pve!collector";
pub const TOKEN_SECRET: &str = "5f0c8a8e-2b1d-4c3e-9a77-0d1e2f3a4b5c";
pub const WAIT: Duration = Duration::from_secs(60);

/// pvesim with the demo scenario (7 nodes) on a manual clock.
pub async fn demo_sim(cluster: &str) -> RunningSim {
    scenario_sim(DEMO, cluster).await
}

/// pvesim playing the scenario `toml` on a manual clock, its cluster named `cluster`.
pub async fn scenario_sim(toml: &str, cluster: &str) -> RunningSim {
    proxbalance_collector::app::install_crypto_provider();
    let mut scenario = Scenario::from_toml_str(toml).expect("scenario");
    scenario.cluster.acceleration = 0.0;
    scenario.cluster.name = cluster.to_owned();
    Simulator::start(scenario, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("pvesim")
}

/// A PVE client for `sim`'s endpoints (in order), with the given request timeout, pinned to
/// every node's certificate (each endpoint presents its node's own).
pub fn pve_client(
    cluster: &str,
    endpoints: Vec<String>,
    sim: &RunningSim,
    timeout: Duration,
) -> PveClient {
    PveClient::new(PveClientSettings {
        cluster: cluster.into(),
        endpoints,
        token: ApiToken::new(TOKEN_ID, TOKEN_SECRET).expect("token"),
        tls: TlsVerification::Fingerprints(
            sim.fingerprints()
                .iter()
                .map(|f| parse_fingerprint(f).expect("fingerprint"))
                .collect(),
        ),
        request_timeout: timeout,
        connect_timeout: Duration::from_secs(2),
        max_concurrency: 4,
    })
    .expect("pve client")
}

pub fn collector(cluster: &str, client: PveClient) -> ClusterCollector {
    ClusterCollector::new(
        CycleSettings {
            cluster: cluster.into(),
            guest_config_ttl: Duration::from_secs(600),
            guest_config_budget: 10_000,
            rrd_refresh: Duration::ZERO,
            history_interval: Duration::from_secs(3600),
            use_metrics_export: true,
        },
        client,
    )
}

/// The collector of one cluster, driven a cycle at a time.
pub struct Driver {
    pub sim: RunningSim,
    pub collector: ClusterCollector,
    pub publisher: Publisher,
    /// The publisher's NATS connection.
    pub nats: async_nats::Client,
    pub retry: RetryBuffer,
    /// Snapshots built by the collector, every cycle.
    pub snapshots_built: usize,
    /// Every message built (histories, snapshots, statuses).
    pub messages_built: usize,
    /// Sum of the reports.
    pub acked: usize,
    pub dropped: usize,
    /// The id of the last cycle collected.
    pub last_cycle: u64,
}

impl Driver {
    /// The demo cluster `cluster` published through NATS at `nats_url`, with `limits` and an
    /// acknowledgement timeout of `ack_timeout`.
    pub async fn start(
        cluster: &str,
        nats_url: &str,
        limits: &StreamLimits,
        ack_timeout: Duration,
    ) -> Driver {
        let sim = demo_sim(cluster).await;
        let client = pve_client(
            cluster,
            vec![format!("https://{}", sim.local_addr())],
            &sim,
            Duration::from_secs(10),
        );
        Self::with_client(cluster, sim, client, nats_url, limits, ack_timeout).await
    }

    /// The demo cluster `cluster` with the default stream limits and a 5 s acknowledgement
    /// timeout.
    pub async fn demo(cluster: &str, nats_url: &str) -> Driver {
        Self::start(
            cluster,
            nats_url,
            &StreamLimits::default(),
            Duration::from_secs(5),
        )
        .await
    }

    /// Like [`Driver::start`] with a given simulator and PVE client.
    pub async fn with_client(
        cluster: &str,
        sim: RunningSim,
        client: PveClient,
        nats_url: &str,
        limits: &StreamLimits,
        ack_timeout: Duration,
    ) -> Driver {
        let nc = nats_connect(nats_url).await;
        let publisher = Publisher::new(nc.clone(), Subjects::default(), limits, ack_timeout)
            .await
            .expect("publisher");
        Driver {
            sim,
            collector: collector(cluster, client),
            publisher,
            nats: nc,
            retry: RetryBuffer::new(10_000),
            snapshots_built: 0,
            messages_built: 0,
            acked: 0,
            dropped: 0,
            last_cycle: 0,
        }
    }

    /// Advances the simulated clock, collects and publishes one cycle through the buffer.
    pub async fn cycle(&mut self, advance_s: f64) -> (CycleOutput, PublishReport) {
        self.sim.advance(advance_s);
        let out = self.collector.collect().await;
        let report = self
            .publisher
            .publish_cycle_buffered(&out, &mut self.retry)
            .await;
        self.snapshots_built += out.snapshots.len();
        self.messages_built += out.histories.len() + out.snapshots.len() + 1;
        self.acked += report.published + report.retried;
        self.dropped += report.dropped;
        self.last_cycle = out.status.cycle;
        (out, report)
    }

    /// The id of the last cycle collected.
    pub fn collector_last_cycle(&self) -> u64 {
        self.last_cycle
    }
}

pub fn config(nats_url: &str) -> Config {
    let mut c = Config::default();
    c.nats.url = nats_url.to_owned();
    c.grpc.listen = "127.0.0.1:0".into();
    c
}

/// The recommender in-process with a gRPC client.
pub struct Recommender {
    pub service: RunningService,
    pub token: CancellationToken,
    pub client: RecommenderClient<Channel>,
}

impl Recommender {
    pub async fn start(nats_url: &str) -> Recommender {
        Self::start_with(config(nats_url)).await
    }

    pub async fn start_with(config: Config) -> Recommender {
        let token = CancellationToken::new();
        let service = proxbalance_recommender::start(config, token.clone())
            .await
            .expect("recommender starts");
        let client = connect(&format!("http://{}", service.grpc_addr())).await;
        Recommender {
            service,
            token,
            client,
        }
    }

    pub async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(WAIT, self.service.wait())
            .await
            .expect("stops in time")
            .expect("stops cleanly");
    }

    pub fn applied(&self) -> u64 {
        self.service.shared().read().snapshots_applied()
    }

    /// A watch of every recomputation, with full sets.
    pub async fn watch(&self, cluster: &str) -> tonic::Streaming<pb::RecommendationsChanged> {
        watch(&self.client, cluster).await
    }

    /// The cached set, full.
    pub async fn recommendations(&self, cluster: &str) -> pb::RecommendationSet {
        recommendations(&self.client, cluster).await
    }
}

pub async fn connect(url: &str) -> RecommenderClient<Channel> {
    RecommenderClient::connect(url.to_owned())
        .await
        .expect("grpc connect")
        .max_decoding_message_size(256 << 20)
}

pub async fn watch(
    client: &RecommenderClient<Channel>,
    cluster: &str,
) -> tonic::Streaming<pb::RecommendationsChanged> {
    client
        .clone()
        .watch_recommendations(pb::WatchRecommendationsRequest {
            cluster: cluster.into(),
            every_recompute: true,
            view: pb::SetView::Full.into(),
        })
        .await
        .expect("watch")
        .into_inner()
}

pub async fn recommendations(
    client: &RecommenderClient<Channel>,
    cluster: &str,
) -> pb::RecommendationSet {
    answer(client, cluster)
        .await
        .expect("recommendations")
        .set
        .expect("set")
}

/// The whole `GetRecommendations` answer of the cached set, full view.
pub async fn answer(
    client: &RecommenderClient<Channel>,
    cluster: &str,
) -> Result<pb::GetRecommendationsResponse, tonic::Status> {
    client
        .clone()
        .get_recommendations(pb::GetRecommendationsRequest {
            cluster: cluster.into(),
            view: pb::SetView::Full.into(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Reads the watch stream until the recomputation of `cycle` (or a later one).
pub async fn until_cycle(
    stream: &mut tonic::Streaming<pb::RecommendationsChanged>,
    cycle: u64,
) -> pb::RecommendationsChanged {
    tokio::time::timeout(WAIT, async {
        loop {
            let m = stream
                .message()
                .await
                .expect("watch message")
                .expect("watch open");
            if m.cycle >= cycle {
                return m;
            }
        }
    })
    .await
    .expect("cycle recomputed in time")
}

/// The `(node, cycle)` of every snapshot stored in the snapshot stream, in stream order.
pub async fn stored_snapshots(nats_url: &str) -> Vec<(String, u64)> {
    use async_nats::jetstream::consumer::DeliverPolicy;
    use async_nats::jetstream::consumer::pull::OrderedConfig;
    use futures_util::StreamExt;
    let nc = nats_connect(nats_url).await;
    let js = async_nats::jetstream::new(nc);
    let subjects = Subjects::default();
    // Right after a cluster lost a server, JetStream API requests may time out while the
    // stream elects a leader; each is asked again (a few times).
    let mut last_error = String::new();
    let mut found = None;
    for _ in 0..6 {
        let attempt = async {
            let mut stream = js
                .get_stream(subjects.snapshots_stream())
                .await
                .map_err(|e| e.to_string())?;
            let total = stream
                .info()
                .await
                .map_err(|e| e.to_string())?
                .state
                .messages;
            let messages = stream
                .create_consumer(OrderedConfig {
                    deliver_policy: DeliverPolicy::All,
                    filter_subject: subjects.all_snapshots(),
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?
                .messages()
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((total, messages))
        };
        match attempt.await {
            Ok(x) => {
                found = Some(x);
                break;
            }
            Err(e) => last_error = e,
        }
    }
    let (total, mut messages) = found.unwrap_or_else(|| panic!("snapshot stream: {last_error}"));
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, async {
        loop {
            let msg = messages.next().await.expect("open").expect("message");
            let payload = proxbalance_e2e::payload_of(msg.headers.as_ref(), &msg.payload);
            let s = proxbalance_proto::codec::decode_snapshot(&payload).expect("snapshot");
            out.push((s.node, s.cycle));
            if msg.info().expect("info").pending == 0 {
                break;
            }
        }
    })
    .await
    .expect("stored snapshots read in time");
    assert!(out.len() as u64 <= total);
    out
}

/// Sends the services' logs to the test output when `RUST_LOG` is set.
pub fn log() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Connects to one server or to a comma-separated list of them.
pub async fn nats_connect(urls: &str) -> async_nats::Client {
    let servers: Vec<async_nats::ServerAddr> = urls
        .split(',')
        .map(|u| u.trim().parse().expect("server url"))
        .collect();
    async_nats::connect(servers).await.expect("nats")
}

/// A real nats-server, the demo cluster's collector driven a cycle at a time and the
/// recommender in-process, with a watch of `demo` that saw the first cycle's recomputation.
/// Keep `nats` bound while the rest is used: dropping it stops the server.
pub struct Live {
    pub nats: proxbalance_e2e::NatsServer,
    pub demo: Driver,
    pub rec: Recommender,
    pub watch: tonic::Streaming<pb::RecommendationsChanged>,
    /// The first cycle's messages.
    pub first: CycleOutput,
}

impl Live {
    /// Starts everything with the recommender's configuration changed by `configure`, and
    /// runs the first cycle.
    pub async fn start(configure: impl FnOnce(&mut Config)) -> Live {
        log();
        let nats = proxbalance_e2e::NatsServer::start().expect("nats-server");
        let url = nats.url();
        let mut demo = Driver::demo("demo", &url).await;
        let mut config = config(&url);
        configure(&mut config);
        let rec = Recommender::start_with(config).await;
        let mut watch = rec.watch("demo").await;
        let (first, _) = demo.cycle(10.0).await;
        until_cycle(&mut watch, demo.last_cycle).await;
        Live {
            nats,
            demo,
            rec,
            watch,
            first,
        }
    }

    /// Runs the next cycle and waits for its recomputation.
    pub async fn cycle(&mut self) -> CycleOutput {
        let (out, _) = self.demo.cycle(10.0).await;
        until_cycle(&mut self.watch, self.demo.last_cycle).await;
        out
    }
}

/// Runs the `proxbalance` CLI with `args` (after the program name); off the test's runtime,
/// since the CLI starts its own. The arguments are copied at once: the future borrows nothing.
pub fn cli(
    args: &[&str],
) -> impl Future<Output = Result<String, proxbalance_recommender::cli::CliError>> + use<> {
    use clap::Parser as _;
    let argv: Vec<String> = std::iter::once("proxbalance")
        .chain(args.iter().copied())
        .map(str::to_owned)
        .collect();
    async move {
        tokio::task::spawn_blocking(move || {
            proxbalance_recommender::cli::run(proxbalance_recommender::cli::Cli::parse_from(argv))
        })
        .await
        .expect("cli task")
    }
}
