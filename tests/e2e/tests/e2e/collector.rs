//! The collector end to end: pvesim over real HTTPS, a real nats-server with JetStream.

use std::time::Duration;

use futures_util::StreamExt;
use proxbalance_collector::config::{ClusterConfig, Config};
use proxbalance_collector::cycle::{ClusterCollector, CycleSettings};
use proxbalance_collector::publisher::{Publisher, StreamLimits};
use proxbalance_collector::pve::tls::parse_fingerprint;
use proxbalance_collector::pve::types::ClusterResource;
use proxbalance_collector::pve::types::RrdPoint;
use proxbalance_collector::pve::{
    ApiToken, PveClient, PveClientSettings, PveError, TlsVerification,
};
use proxbalance_e2e::NatsServer;
use proxbalance_proto::subjects::Subjects;
use proxbalance_proto::v1::{CollectionErrorKind, NodeSnapshot, NodeStatus};
use pvesim::{
    DEFAULT_TOKEN_ID, DEFAULT_TOKEN_SECRET, DownMode, Flavour, RunningSim, Scenario, Simulator,
};

fn init() {
    proxbalance_collector::app::install_crypto_provider();
}

async fn start_sim(nodes: usize, guests: usize, flavour: Flavour) -> RunningSim {
    let mut scenario = Scenario::generated(nodes, guests, 7);
    scenario.cluster.flavour = flavour;
    scenario.cluster.version = None;
    scenario.cluster.acceleration = 0.0;
    scenario.cluster.auth_failure_delay_ms = 0;
    Simulator::start(scenario, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn base_url(addr: std::net::SocketAddr) -> String {
    format!("https://{addr}")
}

fn client_for(
    sim: &RunningSim,
    endpoints: Vec<String>,
    secret: &str,
    tls: TlsVerification,
) -> PveClient {
    PveClient::new(PveClientSettings {
        cluster: "sim".into(),
        endpoints,
        token: ApiToken::new(DEFAULT_TOKEN_ID, secret).unwrap(),
        tls,
        request_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        max_concurrency: 4,
    })
    .map_err(|e| format!("{e} ({})", sim.api_url()))
    .unwrap()
}

fn pinned(sim: &RunningSim) -> TlsVerification {
    TlsVerification::Fingerprints(vec![parse_fingerprint(&sim.fingerprint_sha256()).unwrap()])
}

fn settings() -> CycleSettings {
    CycleSettings {
        cluster: "sim".into(),
        guest_config_ttl: Duration::from_secs(600),
        guest_config_budget: 10_000,
        rrd_refresh: Duration::ZERO,
        history_interval: Duration::from_secs(3600),
        use_metrics_export: true,
    }
}

fn collector(sim: &RunningSim) -> ClusterCollector {
    let client = client_for(
        sim,
        vec![base_url(sim.local_addr())],
        DEFAULT_TOKEN_SECRET,
        pinned(sim),
    );
    ClusterCollector::new(settings(), client)
}

fn by_node<'a>(snaps: &'a [NodeSnapshot], node: &str) -> &'a NodeSnapshot {
    snaps.iter().find(|s| s.node == node).unwrap()
}

#[tokio::test]
async fn every_node_every_cycle_with_committed_memory_iowait_and_disk_io() {
    init();
    let sim = start_sim(4, 40, Flavour::Pve9).await;
    let mut c = collector(&sim);
    let first = c.collect().await;
    assert!(first.status.errors.is_empty(), "{:?}", first.status.errors);
    // The rates of the next cycle average the counters over the coming 10 s tick, which
    // runs at the load of the current tick.
    let loads: std::collections::HashMap<u32, pvesim::GuestSample> = first
        .snapshots
        .iter()
        .flat_map(|s| s.guests.iter())
        .filter_map(|g| Some((g.vmid, sim.guest_metrics(g.vmid)?)))
        .collect();
    sim.advance(10.0);
    let out = c.collect().await;
    assert!(out.status.errors.is_empty(), "{:?}", out.status.errors);
    assert!(out.status.cycle > first.status.cycle);
    assert!(out.status.quorate);
    let names: Vec<String> = out.snapshots.iter().map(|s| s.node.clone()).collect();
    assert_eq!(names, sim.node_names());
    for s in &out.snapshots {
        assert_eq!(s.status, NodeStatus::Online as i32, "{}", s.node);
        assert_eq!(s.cycle, out.status.cycle);
        assert_eq!(s.schema_version, proxbalance_proto::SCHEMA_VERSION);
        let committed = sim.committed_mem_bytes(&s.node).unwrap();
        let total = sim.node_mem_total(&s.node).unwrap();
        assert_eq!(s.committed_mem_bytes, committed, "{}", s.node);
        assert_eq!(s.mem_total_bytes, total, "{}", s.node);
        assert_eq!(
            s.overcommit_ratio,
            committed as f64 / total as f64,
            "{}",
            s.node
        );
        let expected = sim.node_metrics(&s.node).unwrap();
        let iow = s.iowait_fraction.unwrap();
        assert!(
            (iow - expected.iowait).abs() < 1e-9,
            "{}: iowait {iow} vs {}",
            s.node,
            expected.iowait
        );
        for g in s.guests.iter().filter(|g| g.status == "running") {
            let m = loads[&g.vmid];
            for (got, want, what) in [
                (g.disk_read_bps, m.disk_read, "disk_read"),
                (g.disk_write_bps, m.disk_write, "disk_write"),
            ] {
                assert!(
                    (got - want).abs() <= 0.2 + want * 1e-9,
                    "vmid {} {what}: {got} vs {want}",
                    g.vmid
                );
            }
            assert!(g.config_known, "vmid {} config not read", g.vmid);
        }
    }
    // Histories are collected at start, one per node.
    assert_eq!(first.histories.len(), 4);
    assert!(
        first
            .histories
            .iter()
            .all(|h| !h.day.is_empty() && !h.week.is_empty())
    );
    assert!(out.histories.is_empty());
    // The status names them, so the recommender completes the cycle only once they are in.
    let nodes: Vec<&str> = first.histories.iter().map(|h| h.node.as_str()).collect();
    assert_eq!(first.status.histories, nodes);
    assert!(
        first
            .histories
            .iter()
            .all(|h| h.collected_at_unix_ms == first.status.collected_at_unix_ms)
    );
    assert!(out.status.histories.is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn node_taken_down_is_published_offline_while_the_others_continue() {
    init();
    let sim = start_sim(3, 24, Flavour::Pve9).await;
    let mut c = collector(&sim);
    let _ = c.collect().await;
    sim.node_down("pve3", DownMode::NoRoute).unwrap();
    sim.advance(10.0);
    let out = c.collect().await;
    assert_eq!(out.snapshots.len(), 3);
    let down = by_node(&out.snapshots, "pve3");
    assert_eq!(down.status, NodeStatus::Offline as i32);
    assert_eq!(down.iowait_fraction, None);
    for n in ["pve1", "pve2"] {
        let s = by_node(&out.snapshots, n);
        assert_eq!(s.status, NodeStatus::Online as i32, "{n}");
        assert!(s.iowait_fraction.is_some(), "{n}");
        assert_eq!(s.committed_mem_bytes, sim.committed_mem_bytes(n).unwrap());
    }
    let st = out.status.nodes.iter().find(|n| n.node == "pve3").unwrap();
    assert_eq!(st.status, NodeStatus::Offline as i32);
    sim.shutdown().await;
}

#[tokio::test]
async fn node_answering_595_gives_an_unreachable_error_naming_endpoint_and_path() {
    init();
    let sim = start_sim(3, 12, Flavour::Pve9).await;
    let client = client_for(
        &sim,
        vec![base_url(sim.local_addr())],
        DEFAULT_TOKEN_SECRET,
        pinned(&sim),
    );
    sim.node_down("pve2", DownMode::NoRoute).unwrap();
    let err = client
        .get::<serde_json::Value>("/nodes/pve2/status")
        .await
        .unwrap_err();
    assert!(
        matches!(err, PveError::NodeUnreachable { status: 595, .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "node unreachable (HTTP 595: the API endpoint could not connect to the node) at {} GET /nodes/pve2/status",
            base_url(sim.local_addr())
        )
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn wrong_token_yields_an_auth_error_naming_the_endpoint() {
    init();
    let sim = start_sim(2, 4, Flavour::Pve9).await;
    let ep = base_url(sim.local_addr());
    let client = client_for(&sim, vec![ep.clone()], "wrong-secret", pinned(&sim));
    let err = client
        .get::<Vec<ClusterResource>>("/cluster/resources")
        .await
        .unwrap_err();
    assert!(matches!(err, PveError::Auth { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.starts_with("authentication failed (HTTP 401"), "{msg}");
    assert!(
        msg.ends_with(&format!("at {ep} GET /cluster/resources")),
        "{msg}"
    );

    // Through a whole cycle: the cluster status carries the error with its endpoint and path.
    let mut c = ClusterCollector::new(settings(), client);
    let out = c.collect().await;
    assert!(out.snapshots.is_empty());
    let e = out
        .status
        .errors
        .iter()
        .find(|e| e.path == "/cluster/resources")
        .unwrap();
    assert_eq!(e.kind, CollectionErrorKind::Auth as i32);
    assert_eq!(e.endpoint, ep);
    sim.shutdown().await;
}

#[tokio::test]
async fn fingerprint_mismatch_refuses_the_connection_and_the_ca_file_works() {
    init();
    let sim = start_sim(2, 4, Flavour::Pve9).await;
    let ep = base_url(sim.local_addr());
    let client = client_for(
        &sim,
        vec![ep.clone()],
        DEFAULT_TOKEN_SECRET,
        TlsVerification::Fingerprints(vec![[0xAB; 32]]),
    );
    let err = client
        .get::<Vec<ClusterResource>>("/cluster/resources")
        .await
        .unwrap_err();
    assert!(matches!(err, PveError::Tls { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("certificate fingerprint mismatch"), "{msg}");
    assert!(msg.contains(&sim.fingerprint_sha256()), "{msg}");
    assert!(
        msg.starts_with(&format!(
            "TLS verification failed at {ep} GET /cluster/resources"
        )),
        "{msg}"
    );

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("pve-root-ca.pem");
    std::fs::write(&ca, sim.ca_pem()).unwrap();
    let client = client_for(
        &sim,
        vec![ep],
        DEFAULT_TOKEN_SECRET,
        TlsVerification::CaFile(ca),
    );
    let rows = client
        .get::<Vec<ClusterResource>>("/cluster/resources")
        .await
        .unwrap();
    assert!(rows.iter().any(|r| r.kind.as_deref() == Some("node")));
    sim.shutdown().await;
}

/// Failover to a second endpoint that presents its own node's certificate, as every PVE node
/// does, over real HTTPS: pinned to the first node's fingerprint only, the second endpoint is
/// refused (the defect: a cluster took one fingerprint, so failover always failed); with one
/// fingerprint per endpoint (`fingerprint = [..]`, read through the configuration) or the
/// cluster CA, the second endpoint takes over.
#[tokio::test]
async fn second_endpoint_takes_over_with_its_own_certificate() {
    init();
    let sim = start_sim(2, 8, Flavour::Pve9).await;
    let second = sim
        .add_endpoint("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (fp0, fp1) = (
        sim.endpoint_fingerprint(0).unwrap(),
        sim.endpoint_fingerprint(1).unwrap(),
    );
    assert_ne!(fp0, fp1, "each node has its own certificate");
    assert_eq!(sim.fingerprints(), vec![fp0.clone(), fp1.clone()]);
    let first = base_url(sim.local_addr());
    sim.stop_endpoint(0).await.unwrap();
    let endpoints = vec![first, base_url(second)];

    // One fingerprint, the first node's: the second endpoint's certificate is refused.
    let client = client_for(&sim, endpoints.clone(), DEFAULT_TOKEN_SECRET, pinned(&sim));
    let out = ClusterCollector::new(settings(), client).collect().await;
    let tls_errors: Vec<&str> = out
        .status
        .errors
        .iter()
        .filter(|e| e.kind == CollectionErrorKind::Tls as i32)
        .map(|e| e.message.as_str())
        .collect();
    assert!(
        tls_errors.iter().any(|m| m.contains(&format!(
            "certificate fingerprint mismatch: expected SHA-256 {fp0}, server presented {fp1}"
        ))),
        "{:?}",
        out.status.errors
    );
    assert!(
        out.snapshots
            .iter()
            .all(|s| s.status != NodeStatus::Online as i32)
    );

    // One fingerprint per endpoint, as the configuration takes it.
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("token");
    std::fs::write(&secret, DEFAULT_TOKEN_SECRET).unwrap();
    let cfg = Config::from_toml(&format!(
        "[[clusters]]\nname = \"sim\"\nendpoints = {endpoints:?}\ntoken_id = {DEFAULT_TOKEN_ID:?}\ntoken_secret_file = {secret:?}\nfingerprint = [{fp0:?}, {fp1:?}]\n"
    ))
    .unwrap();
    let client = cfg.clusters[0]
        .client_settings()
        .and_then(PveClient::new)
        .unwrap();
    let ca = dir.path().join("pve-root-ca.pem");
    std::fs::write(&ca, sim.ca_pem()).unwrap();
    for client in [
        client,
        client_for(
            &sim,
            endpoints.clone(),
            DEFAULT_TOKEN_SECRET,
            TlsVerification::CaFile(ca),
        ),
    ] {
        let mut c = ClusterCollector::new(settings(), client);
        let out = c.collect().await;
        assert!(out.status.errors.is_empty(), "{:?}", out.status.errors);
        assert_eq!(out.status.endpoint, base_url(second));
        assert_eq!(out.snapshots.len(), 2);
        assert!(
            out.snapshots
                .iter()
                .all(|s| s.status == NodeStatus::Online as i32)
        );
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn pve8_without_metrics_export_still_yields_iowait() {
    init();
    let sim = start_sim(3, 12, Flavour::Pve8).await;
    let mut c = collector(&sim);
    let out = c.collect().await;
    assert!(out.status.errors.is_empty(), "{:?}", out.status.errors);
    let routes = sim.route_counts();
    assert_eq!(
        routes.get("/cluster/metrics/export").copied().unwrap_or(0),
        0,
        "{routes:?}"
    );
    let reader = client_for(
        &sim,
        vec![base_url(sim.local_addr())],
        DEFAULT_TOKEN_SECRET,
        pinned(&sim),
    );
    for s in &out.snapshots {
        let points: Vec<RrdPoint> = reader
            .get(&format!(
                "/nodes/{}/rrddata?timeframe=hour&cf=AVERAGE",
                s.node
            ))
            .await
            .unwrap();
        let last = points
            .iter()
            .filter(|p| p.iowait.is_some())
            .max_by_key(|p| p.time)
            .unwrap();
        assert_eq!(s.iowait_fraction, last.iowait, "{}", s.node);
        assert_eq!(s.iowait_sampled_at_unix_ms, last.time.unwrap() * 1000);
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn requests_per_cycle_do_not_grow_with_guests() {
    init();
    let mut per_cycle = Vec::new();
    for guests in [40, 160] {
        let sim = start_sim(4, guests, Flavour::Pve9).await;
        let mut c = collector(&sim);
        let _ = c.collect().await; // warms the config cache
        sim.advance(10.0);
        let out = c.collect().await;
        per_cycle.push(out.status.api_requests);
        sim.shutdown().await;
    }
    assert_eq!(per_cycle[0], per_cycle[1], "{per_cycle:?}");
}

#[tokio::test]
async fn cycles_are_published_to_jetstream_with_headers_and_deduplicated() {
    init();
    let nats = NatsServer::start().unwrap();
    let sim = start_sim(3, 12, Flavour::Pve9).await;
    let nc = async_nats::connect(nats.url()).await.unwrap();
    let subjects = Subjects::default();
    let publisher = Publisher::new(
        nc.clone(),
        subjects.clone(),
        &StreamLimits::default(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let mut c = collector(&sim);
    let out = c.collect().await;
    let report = publisher.publish_cycle(&out).await;
    assert_eq!(report.failed, 0);
    assert_eq!(report.published, 3 + 3 + 1); // histories, snapshots, cluster status
    // Publishing the same cycle again is de-duplicated by Nats-Msg-Id.
    let again = publisher.publish_cycle(&out).await;
    assert_eq!(again.failed, 0);

    let js = async_nats::jetstream::new(nc.clone());
    let mut stream = js.get_stream("PROXBALANCE_SNAPSHOTS").await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(
        info.state.messages, 4,
        "3 snapshots + 1 cluster status, once each"
    );
    let msg = stream
        .get_last_raw_message_by_subject(&subjects.snapshot("sim", "pve2"))
        .await
        .unwrap();
    let headers = msg.headers;
    assert_eq!(
        headers.get("Nats-Msg-Id").map(|v| v.as_str()),
        Some(format!("snapshot:sim:pve2:{}", out.status.cycle).as_str())
    );
    let tp = headers
        .get("traceparent")
        .map(|v| v.as_str().to_owned())
        .unwrap();
    assert_eq!(tp.len(), 55, "{tp}");
    let snap = proxbalance_proto::codec::decode_snapshot(&proxbalance_e2e::payload_of(
        Some(&headers),
        &msg.payload,
    ))
    .unwrap();
    assert_eq!(snap.node, "pve2");
    assert_eq!(
        snap.committed_mem_bytes,
        sim.committed_mem_bytes("pve2").unwrap()
    );
    let mut hist = js.get_stream("PROXBALANCE_HISTORY").await.unwrap();
    assert_eq!(hist.info().await.unwrap().state.messages, 3);
    sim.shutdown().await;
}

/// A stream deleted under the running collector: JetStream answers "no responders" for its
/// subjects. That is permanent (nothing stores them until an operator creates the stream), so
/// the cycle's snapshots and status are dropped and counted, not retried forever, and the
/// histories (their stream still there) are stored.
#[tokio::test]
async fn messages_without_a_stream_are_dropped_not_retried() {
    init();
    let nats = NatsServer::start().unwrap();
    let sim = start_sim(3, 12, Flavour::Pve9).await;
    let nc = async_nats::connect(nats.url()).await.unwrap();
    let publisher = Publisher::new(
        nc.clone(),
        Subjects::default(),
        &StreamLimits::default(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let js = async_nats::jetstream::new(nc);
    js.delete_stream("PROXBALANCE_SNAPSHOTS").await.unwrap();
    let mut c = collector(&sim);
    let out = c.collect().await;
    let mut retry = proxbalance_collector::retry::RetryBuffer::new(100);
    let started = std::time::Instant::now();
    let report = publisher.publish_cycle_buffered(&out, &mut retry).await;
    assert_eq!(report.published, 3, "the histories: {report:?}");
    assert_eq!(
        report.refused,
        3 + 1,
        "the snapshots and the status: {report:?}"
    );
    assert_eq!((report.failed, report.buffered), (0, 0), "{report:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no acknowledgement waited for"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn run_polls_two_clusters_and_a_failing_one_does_not_hold_up_the_other() {
    init();
    let nats = NatsServer::start().unwrap();
    let sim = start_sim(2, 8, Flavour::Pve9).await;
    let dir = tempfile::tempdir().unwrap();
    let good_secret = dir.path().join("good");
    std::fs::write(&good_secret, DEFAULT_TOKEN_SECRET).unwrap();
    let bad_secret = dir.path().join("bad");
    std::fs::write(&bad_secret, "nope").unwrap();
    let mk = |name: &str, secret: &std::path::Path| {
        let mut c = ClusterConfig::new(name, vec![base_url(sim.local_addr())], DEFAULT_TOKEN_ID);
        c.token_secret_file = Some(secret.to_owned());
        c.fingerprint = vec![sim.fingerprint_sha256()];
        c.interval_s = 0.2;
        c
    };
    let mut cfg: Config = Config {
        nats: Default::default(),
        metrics: Default::default(),
        clusters: vec![mk("good", &good_secret), mk("bad", &bad_secret)],
        telemetry: Default::default(),
    };
    cfg.nats.url = nats.url();

    let nc = async_nats::connect(nats.url()).await.unwrap();
    let mut sub = nc
        .subscribe("proxbalance.v1.snapshot.good.>")
        .await
        .unwrap();
    let mut status_sub = nc.subscribe("proxbalance.v1.cluster.bad").await.unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(proxbalance_collector::run(cfg, token.clone()));

    // Two cycles of both nodes of the good cluster arrive.
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 4 {
        let m = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .unwrap()
            .unwrap();
        let s = proxbalance_proto::codec::decode_snapshot(&proxbalance_e2e::payload_of(
            m.headers.as_ref(),
            &m.payload,
        ))
        .unwrap();
        seen.insert((s.cycle, s.node.clone()));
    }
    // The bad cluster reports its auth error in its cluster status.
    let m = tokio::time::timeout(Duration::from_secs(20), status_sub.next())
        .await
        .unwrap()
        .unwrap();
    let st = proxbalance_proto::codec::decode_cluster_status(&proxbalance_e2e::payload_of(
        m.headers.as_ref(),
        &m.payload,
    ))
    .unwrap();
    assert_eq!(st.errors[0].kind, CollectionErrorKind::Auth as i32);

    token.cancel();
    let r = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    assert!(r.is_ok(), "{r:?}");
    sim.shutdown().await;
}

/// PVE 8 without `/cluster/metrics/export`: guests' disk and network rates come from the
/// cumulative counters of `/cluster/resources`, which pvestatd refreshes every 10 s (pvesim
/// too: counters and uptime change on its 10 s ticks only). With steady loads and no noise,
/// polled every 5 s (the counters change every other cycle) or every 15 s (one or two refreshes
/// per cycle), every rate is exactly the guest's load, every cycle. (Dividing by the collector's
/// own interval gave 0 and 2× at 5 s, ±33 % at 15 s.)
#[tokio::test]
async fn pve8_rates_are_exact_whatever_the_interval() {
    init();
    for interval in [5.0, 15.0] {
        let mut scenario = Scenario::generated(2, 8, 7);
        scenario.cluster.flavour = Flavour::Pve8;
        scenario.cluster.version = None;
        scenario.cluster.acceleration = 0.0;
        for (i, g) in scenario.guests.iter_mut().enumerate() {
            let k = (i + 1) as f64;
            g.status = pvesim::GuestStatus::Running;
            g.load = pvesim::LoadSpec {
                shape: pvesim::Shape::Steady,
                noise: 0.0,
                disk_read_mb_s: Some(k),
                disk_write_mb_s: Some(0.5 * k),
                net_in_mb_s: 0.25 * k,
                net_out_mb_s: 0.125 * k,
                ..g.load.clone()
            };
        }
        let expected: std::collections::HashMap<u32, [f64; 4]> = scenario
            .guests
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let k = (i + 1) as f64 * 1e6;
                (g.vmid, [k, 0.5 * k, 0.25 * k, 0.125 * k])
            })
            .collect();
        let sim = Simulator::start(scenario, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut c = collector(&sim);
        // Two refreshes apart, so every guest has a rate.
        c.collect().await;
        sim.advance(10.0);
        c.collect().await;
        let mut seen = Vec::new();
        for _ in 0..6 {
            sim.advance(interval);
            let out = c.collect().await;
            assert!(out.status.errors.is_empty(), "{:?}", out.status.errors);
            assert_eq!(
                sim.route_counts()
                    .get("/cluster/metrics/export")
                    .copied()
                    .unwrap_or(0),
                0
            );
            let mut guests = 0;
            for g in out.snapshots.iter().flat_map(|s| s.guests.iter()) {
                let got = [
                    g.disk_read_bps,
                    g.disk_write_bps,
                    g.net_in_bps,
                    g.net_out_bps,
                ];
                assert_eq!(got, expected[&g.vmid], "vmid {} at {interval} s", g.vmid);
                guests += 1;
            }
            assert_eq!(guests, 8);
            seen.push(out.snapshots[0].guests[0].disk_read_bps);
        }
        println!("{interval} s interval: first guest's disk read rate per cycle {seen:?}");
        sim.shutdown().await;
    }
}
