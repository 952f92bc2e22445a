//! NATS faults: the server stopped for 10 s in the middle of a run and restarted on the same
//! port and store. The collector keeps polling and keeps what it cannot publish in its retry
//! buffer; once the server is back it re-publishes in order with the original `Nats-Msg-Id`,
//! and the recommender's consumer resumes. Published, stored and applied snapshots match.

use crate::support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use proxbalance_collector::publisher::StreamLimits;
use proxbalance_e2e::NatsServer;
use support::{Driver, Recommender, stored_snapshots, until_cycle};

/// nats-server with a 64 KiB `max_payload`, a collector user allowed to publish snapshots and
/// statuses but not histories, and a cluster whose first node holds 2,500 guests: every cycle
/// that node's snapshot (about 120 kB gzipped) can never be stored, nor can the histories. The
/// collector drops them at once (too large: before sending; refused subject: on the server's
/// error, not after the acknowledgement timeout), counts them, keeps nothing in its retry buffer
/// and sends the status without the dropped histories, so every cycle completes with the other
/// nodes. (Before, the first such message was retried forever and the whole cluster queued
/// behind it: no status, no cycle, NOT_SERVING.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_the_server_can_never_store_are_dropped_and_the_cluster_goes_on() {
    use proxbalance_collector::cycle::{ClusterCollector, CycleSettings};
    use proxbalance_collector::publisher::Publisher;
    use proxbalance_collector::retry::RetryBuffer;
    use proxbalance_proto::subjects::Subjects;
    support::log();
    // The process's recorder: this test reads only its own cluster's (`big`) series from it, so
    // the other areas' tests running beside it in this binary cannot change what it asserts.
    let prometheus = proxbalance_e2e::prometheus();
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = |name: &str, value: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, value).expect("secret file");
        path
    };
    let (collector_pw, recommender_pw) = (
        secret("collector", "collector-pw"),
        secret("recommender", "recommender-pw"),
    );
    let conf = dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            r#"
max_payload: 65536
jetstream {{ store_dir: "{}" }}
accounts {{
  PB {{
    jetstream: enabled
    users: [
      {{ user: collector, password: collector-pw, permissions: {{
          publish: {{ allow: ["proxbalance.v1.snapshot.>", "proxbalance.v1.cluster.>", "$JS.API.>"] }}
          subscribe: {{ allow: ["_INBOX_collector.>"] }} }} }}
      {{ user: recommender, password: recommender-pw }}
    ]
  }}
}}
"#,
            dir.path().join("store").display()
        ),
    )
    .expect("nats.conf");
    let nats = NatsServer::start_with_config(&conf, None, &[]).expect("nats-server");
    let url = nats.url();

    let mut scenario = pvesim::Scenario::generated(3, 2_520, 11);
    scenario.cluster.name = "big".into();
    scenario.cluster.acceleration = 0.0;
    let names: Vec<String> = scenario.nodes.iter().map(|n| n.name.clone()).collect();
    let big = names[0].clone();
    for (i, g) in scenario.guests.iter_mut().enumerate() {
        g.node = if i < 20 {
            names[1 + i % 2].clone()
        } else {
            big.clone()
        };
    }
    proxbalance_collector::app::install_crypto_provider();
    let sim = pvesim::Simulator::start(scenario, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("pvesim");
    let client =
        proxbalance_collector::pve::PveClient::new(proxbalance_collector::pve::PveClientSettings {
            cluster: "big".into(),
            endpoints: vec![format!("https://{}", sim.local_addr())],
            token: proxbalance_collector::pve::ApiToken::new(
                pvesim::DEFAULT_TOKEN_ID,
                pvesim::DEFAULT_TOKEN_SECRET,
            )
            .expect("token"),
            tls: proxbalance_collector::pve::TlsVerification::Fingerprints(vec![
                proxbalance_collector::pve::tls::parse_fingerprint(&sim.fingerprint_sha256())
                    .expect("fingerprint"),
            ]),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(2),
            max_concurrency: 4,
        })
        .expect("pve client");
    let mut collector = ClusterCollector::new(
        CycleSettings {
            cluster: "big".into(),
            guest_config_ttl: Duration::from_secs(600),
            guest_config_budget: 16,
            rrd_refresh: Duration::ZERO,
            history_interval: Duration::from_secs(3600),
            use_metrics_export: true,
        },
        client,
    );
    // The collector connects as the service does, so the server's refusals reach its publisher.
    let login = |user: &str, password: &std::path::Path| proxbalance_runtime::NatsSettings {
        url: url.clone(),
        user: Some(user.into()),
        password_file: Some(password.to_owned()),
        ..Default::default()
    };
    let connection = proxbalance_runtime::connect_nats(
        &login("collector", &collector_pw),
        "proxbalance-collector",
    )
    .await
    .expect("collector logs in");
    let ack_timeout = Duration::from_secs(5);
    let publisher = Publisher::new(
        connection,
        Subjects::default(),
        &StreamLimits::default(),
        ack_timeout,
    )
    .await
    .expect("publisher");
    let mut config = support::config(&url);
    config.nats.user = Some("recommender".into());
    config.nats.password_file = Some(recommender_pw.clone());
    let rec = Recommender::start_with(config).await;
    let mut watch = rec.watch("big").await;
    let mut retry = RetryBuffer::new(10_000);

    for cycle in 0..3 {
        sim.advance(10.0);
        let out = collector.collect().await;
        assert!(out.status.errors.is_empty(), "{:?}", out.status.errors);
        let big_snapshot = out.snapshots.iter().find(|s| s.node == big).expect("big");
        assert_eq!(big_snapshot.guests.len(), 2_500);
        let histories = out.histories.len();
        assert_eq!(histories, if cycle == 0 { 3 } else { 0 });
        let started = Instant::now();
        let report = publisher.publish_cycle_buffered(&out, &mut retry).await;
        let took = started.elapsed();
        // Dropped: the big node's snapshot, and the histories (subject refused).
        assert_eq!(report.refused, 1 + histories, "{report:?}");
        assert_eq!(
            report.published,
            2 + 1,
            "two snapshots and the status: {report:?}"
        );
        assert_eq!((report.failed, report.buffered, report.dropped), (0, 0, 0));
        assert!(took < ack_timeout, "refusals known at once, took {took:?}");
        let changed = until_cycle(&mut watch, out.status.cycle).await;
        assert_eq!(changed.cycle, out.status.cycle);
    }
    let text = prometheus.render();
    let refused = |message: &str, reason: &str| {
        proxbalance_e2e::metric_sum(
            &text,
            &[
                "proxbalance_collector_publish_refused_total{",
                "cluster=\"big\"",
                &format!("message=\"proxbalance.v1.{message}\""),
                &format!("reason=\"{reason}\""),
            ],
        )
    };
    assert_eq!(refused("NodeSnapshot", "too_large"), 3);
    assert_eq!(refused("NodeHistory", "permission"), 3);
    // The other nodes are served, fresh, every cycle.
    let state = rec
        .client
        .clone()
        .get_cluster_state(proxbalance_proto::v1::GetClusterStateRequest {
            cluster: "big".into(),
        })
        .await
        .expect("cluster state")
        .into_inner();
    let nodes: BTreeSet<String> = state
        .nodes
        .iter()
        .filter(|n| !n.stale)
        .filter_map(|n| Some(n.latest.as_ref()?.node.clone()))
        .collect();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    assert!(!nodes.contains(&big));
    rec.stop().await;
    sim.shutdown().await;
}

/// Node names that read like message kinds (`cluster`, `history`; PVE node names are host names)
/// and a cluster name with `.`, `:` and `%`: every message keeps an id of its own, so JetStream
/// stores every status, every cycle completes and the recommendations appear. (With ids of the
/// form `<cluster>:cluster:<cycle>` the status and the snapshot of the node `cluster` shared
/// one, JetStream dropped the status as a duplicate, and no cycle ever completed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_read_like_message_kinds_keep_ids_of_their_own() {
    use proxbalance_proto::subjects::Subjects;
    support::log();
    let nats = NatsServer::start().expect("nats-server");
    let url = nats.url();
    let cluster = "eu.west:1%";
    let renamed = support::DEMO
        .replace("\"pve1\"", "\"cluster\"")
        .replace("\"pve2\"", "\"history\"");
    let sim = support::scenario_sim(&renamed, cluster).await;
    let client = support::pve_client(
        cluster,
        vec![format!("https://{}", sim.local_addr())],
        &sim,
        Duration::from_secs(10),
    );
    let mut driver = Driver::with_client(
        cluster,
        sim,
        client,
        &url,
        &StreamLimits::default(),
        Duration::from_secs(5),
    )
    .await;
    let rec = Recommender::start(&url).await;
    let mut watch = rec.watch(cluster).await;
    for _ in 0..2 {
        let (out, report) = driver.cycle(10.0).await;
        assert!(out.status.errors.is_empty(), "{:?}", out.status.errors);
        let nodes: BTreeSet<&str> = out.snapshots.iter().map(|s| s.node.as_str()).collect();
        assert!(nodes.is_superset(&BTreeSet::from(["cluster", "history"])));
        assert_eq!((report.failed, report.dropped), (0, 0), "{report:?}");
    }
    // The status of the last cycle is what the stream holds last on its subject.
    let js = async_nats::jetstream::new(driver.nats.clone());
    let subjects = Subjects::default();
    let stored = js
        .get_stream(subjects.snapshots_stream())
        .await
        .expect("snapshot stream")
        .get_last_raw_message_by_subject(&subjects.cluster_status(cluster))
        .await
        .expect("the cluster status is stored");
    let status = proxbalance_proto::codec::decode_cluster_status(&proxbalance_e2e::payload_of(
        Some(&stored.headers),
        &stored.payload,
    ))
    .expect("status");
    assert_eq!(status.cycle, driver.last_cycle);
    let changed = until_cycle(&mut watch, driver.last_cycle).await;
    assert_eq!(changed.cycle, driver.last_cycle);
    let set = rec.recommendations(cluster).await;
    assert_eq!(set.cluster, cluster);
    assert!(!set.recommendations.is_empty(), "{set:?}");
    assert_eq!(
        stored_snapshots(&url).await.len(),
        driver.snapshots_built,
        "every snapshot stored"
    );
    rec.stop().await;
    driver.sim.shutdown().await;
}

const OUTAGE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_loses_no_cycle_within_the_retry_buffer() {
    support::log();
    let mut nats = NatsServer::start().expect("nats-server");
    let url = nats.url();
    let mut driver = Driver::start(
        "demo",
        &url,
        &StreamLimits::default(),
        Duration::from_millis(500),
    )
    .await;
    let rec = Recommender::start(&url).await;
    let mut watch = rec.watch("demo").await;

    // Two cycles with NATS up.
    for _ in 0..2 {
        let (out, report) = driver.cycle(10.0).await;
        assert!(out.status.errors.is_empty(), "{:?}", out.status.errors);
        assert_eq!((report.failed, report.buffered), (0, 0));
    }
    let before = until_cycle(&mut watch, driver.collector_last_cycle()).await;
    assert_eq!(before.cycle, driver.collector_last_cycle());

    // NATS down for 10 s (real time: the outage's length is the point). The collector keeps
    // polling PVE every second; everything it builds waits in the buffer.
    nats.stop();
    let down = Instant::now();
    let mut outage_cycles = 0;
    while down.elapsed() < OUTAGE {
        let started = Instant::now();
        let (out, report) = driver.cycle(10.0).await;
        assert!(out.status.errors.is_empty(), "{:?}", out.status.errors);
        assert_eq!(report.published, 0, "{report:?}");
        assert_eq!(report.dropped, 0);
        outage_cycles += 1;
        if let Some(rest) = Duration::from_secs(1).checked_sub(started.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    let buffered = driver.retry.len();
    assert_eq!(
        buffered,
        outage_cycles * 8,
        "7 snapshots and 1 status per cycle"
    );
    assert!(
        outage_cycles >= 5,
        "{outage_cycles} cycles during the outage"
    );
    nats.restart().expect("nats-server restarts");
    // The event to wait for: the publisher's connection is back (flush returns once the
    // client has reconnected and the server has answered).
    tokio::time::timeout(support::WAIT, driver.nats.flush())
        .await
        .expect("reconnected in time")
        .expect("flush");

    // The next cycle re-publishes the buffer first, then its own messages.
    let (_, report) = driver.cycle(10.0).await;
    assert_eq!(report.retried, buffered, "{report:?}");
    assert_eq!((report.failed, report.buffered, report.dropped), (0, 0, 0));
    let (_, report) = driver.cycle(10.0).await;
    assert_eq!((report.failed, report.buffered), (0, 0));
    let last = driver.collector_last_cycle();
    let after = until_cycle(&mut watch, last).await;
    assert_eq!(after.cycle, last);

    // Published = stored = applied, every (node, cycle) once.
    let cycles = 2 + outage_cycles + 2;
    assert_eq!(driver.snapshots_built, cycles * 7);
    assert_eq!(driver.acked, driver.messages_built);
    assert_eq!(driver.dropped, 0);
    let stored = stored_snapshots(&url).await;
    let unique: BTreeSet<&(String, u64)> = stored.iter().collect();
    assert_eq!(stored.len(), driver.snapshots_built, "stored");
    assert_eq!(unique.len(), stored.len(), "no duplicates stored");
    assert_eq!(rec.applied(), driver.snapshots_built as u64, "applied");
    println!(
        "outage {:?}: {outage_cycles} cycles buffered ({buffered} messages), {} snapshots published, stored and applied",
        OUTAGE, driver.snapshots_built
    );
    rec.stop().await;
    driver.sim.shutdown().await;
}

/// Events in `PROXBALANCE_EVENTS` read from `url` until `done` says every expected one is in:
/// overload event ids and recommendation generations.
async fn stored_events(
    url: &str,
    done: impl Fn(&[String], &[u64]) -> bool,
) -> (Vec<String>, Vec<u64>) {
    use async_nats::jetstream::consumer::DeliverPolicy;
    use async_nats::jetstream::consumer::pull::OrderedConfig;
    use futures_util::StreamExt;
    use proxbalance_proto::subjects::{Subject, Subjects};
    use proxbalance_proto::v1 as pb;
    let js = async_nats::jetstream::new(support::nats_connect(url).await);
    // Right after losing a server the stream may still be electing a leader: its requests
    // time out, and are asked again.
    let mut last_error = String::new();
    let mut found = None;
    for _ in 0..6 {
        let attempt = async {
            js.get_stream("PROXBALANCE_EVENTS")
                .await
                .map_err(|e| e.to_string())?
                .create_consumer(OrderedConfig {
                    deliver_policy: DeliverPolicy::All,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?
                .messages()
                .await
                .map_err(|e| e.to_string())
        };
        match attempt.await {
            Ok(m) => {
                found = Some(m);
                break;
            }
            Err(e) => last_error = e,
        }
    }
    let mut messages = found.unwrap_or_else(|| panic!("events stream: {last_error}"));
    let subjects = Subjects::default();
    let (mut overload, mut generations) = (Vec::new(), Vec::new());
    tokio::time::timeout(support::WAIT, async {
        while !done(&overload, &generations) {
            let msg = messages.next().await.expect("open").expect("event");
            match subjects.parse(msg.subject.as_str()).expect("subject") {
                Subject::Overload { .. } => {
                    let e: pb::OverloadEvent =
                        proxbalance_proto::decode(&msg.payload).expect("event");
                    overload.push(e.event_id);
                }
                Subject::Recommendations { .. } => {
                    let c: pb::RecommendationsChanged =
                        proxbalance_proto::decode(&msg.payload).expect("event");
                    generations.push(c.generation);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .expect("every event stored in time");
    (overload, generations)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_cluster_member_loses_no_snapshot_or_event() {
    support::log();
    let mut cluster = proxbalance_e2e::NatsCluster::start(3).expect("3-server cluster");
    // The services are given every server (`nats.url` comma-separated; the servers a client
    // learns from the cluster's gossip depend on timing, so one URL is not enough).
    let first = cluster.urls();
    let limits = StreamLimits {
        replicas: 3,
        ..StreamLimits::default()
    };
    let mut driver = Driver::start("demo", &first, &limits, Duration::from_secs(2)).await;
    let mut config = support::config(&first);
    config.nats.events_replicas = 3;
    let rec = Recommender::start_with(config).await;
    let mut watch = rec.watch("demo").await;
    let mut overload_events = rec
        .client
        .clone()
        .watch_events(proxbalance_proto::v1::WatchEventsRequest::default())
        .await
        .expect("watch events")
        .into_inner();

    for _ in 0..2 {
        let (out, report) = driver.cycle(10.0).await;
        assert!(out.status.errors.is_empty(), "{:?}", out.status.errors);
        assert_eq!(report.failed, 0);
    }
    until_cycle(&mut watch, driver.last_cycle).await;

    // Server 0 dies. The collector polls every second; cycles that cannot be stored while the
    // clients reconnect and the streams elect new leaders wait in the retry buffer.
    // The server the collector is connected to dies.
    let port = driver.nats.server_info().port;
    let victim = cluster
        .servers
        .iter()
        .position(|s| s.port() == port)
        .expect("connected to a cluster member");
    cluster.servers[victim].stop();
    let lost = Instant::now();
    let mut cycles_after = 0;
    loop {
        let started = Instant::now();
        let (_, report) = driver.cycle(10.0).await;
        cycles_after += 1;
        assert_eq!(report.dropped, 0);
        if report.buffered == 0 && report.failed == 0 {
            break;
        }
        assert!(cycles_after < 60, "still failing: {report:?}");
        if let Some(rest) = Duration::from_secs(1).checked_sub(started.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    let recovered = lost.elapsed();
    let (_, report) = driver.cycle(10.0).await;
    assert_eq!((report.failed, report.buffered), (0, 0));
    let last = until_cycle(&mut watch, driver.last_cycle).await;

    let survivor = cluster.servers[(victim + 1) % 3].url();
    let stored = stored_snapshots(&survivor).await;
    let unique: BTreeSet<&(String, u64)> = stored.iter().collect();
    assert_eq!(stored.len(), driver.snapshots_built, "stored");
    assert_eq!(unique.len(), stored.len(), "no duplicates stored");
    assert_eq!(rec.applied(), driver.snapshots_built as u64, "applied");
    assert_eq!(driver.acked, driver.messages_built);

    // Every event the recommender emitted is stored once: the overload transitions it told
    // its watchers about, and every recommendations generation up to the last.
    let mut emitted = Vec::new();
    while let Ok(Some(e)) =
        tokio::time::timeout(Duration::from_millis(1), overload_events.message())
            .await
            .unwrap_or(Ok(None))
    {
        emitted.push(e.event_id);
    }
    let generations: Vec<u64> = (1..=last.generation).collect();
    let (overload, stored_generations) = stored_events(&survivor, |o, g| {
        emitted.iter().all(|id| o.contains(id)) && generations.iter().all(|x| g.contains(x))
    })
    .await;
    let unique_overload: BTreeSet<&String> = overload.iter().collect();
    assert_eq!(unique_overload.len(), overload.len(), "{overload:?}");
    assert_eq!(stored_generations, generations);
    println!(
        "server {victim} of 3 killed: {cycles_after} cycles until a clean one ({recovered:?}); {} snapshots built = stored = applied; {} overload events and {} generations stored once",
        driver.snapshots_built,
        overload.len(),
        stored_generations.len()
    );
    rec.stop().await;
    driver.sim.shutdown().await;
}
