//! Bounded soak (ignored by default): 100 clusters × 16 nodes publishing a snapshot per node
//! and a status per cluster every second, straight to a real nats-server (the load driver
//! stands in for 100 collectors), into one recommender in-process. Every 5 s it samples the
//! process' resident set, the ingest backlog (published − applied snapshots), the ingest lag
//! (wall clock − the oldest cluster's newest snapshot) and a `GetRecommendations` call.
//!
//! ```sh
//! SOAK_SECS=90 cargo test -p proxbalance-e2e --release --test e2e soak:: -- --ignored --nocapture
//! ```

use crate::support;

use std::time::{Duration, Instant};

use proxbalance_collector::publisher::{Publisher, StreamLimits};
use proxbalance_e2e::NatsServer;
use proxbalance_engine::synthetic::cluster_view;
use proxbalance_proto::subjects::Subjects;
use proxbalance_proto::v1 as pb;
use proxbalance_proto::{SCHEMA_VERSION, headers};

const CLUSTERS: usize = 100;
const NODES: usize = 16;
const GUESTS_PER_CLUSTER: usize = 160;
const GIB: f64 = (1u64 << 30) as f64;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The snapshots of one cluster, built once; each cycle only changes cycle, time and CPU.
fn templates(c: usize) -> (Vec<pb::NodeSnapshot>, pb::ClusterStatus) {
    let mut view = cluster_view(NODES, GUESTS_PER_CLUSTER, c as u64);
    view.cluster = format!("c{c:03}");
    let snaps: Vec<pb::NodeSnapshot> = view
        .nodes
        .iter()
        .map(|n| {
            let total = (n.total_mem_gb * GIB) as u64;
            pb::NodeSnapshot {
                schema_version: SCHEMA_VERSION,
                cluster: view.cluster.clone(),
                node: n.name.clone(),
                status: pb::NodeStatus::Online as i32,
                cpu_fraction: n.current.cpu / 100.0,
                cpu_threads: n.cpu_cores,
                iowait_fraction: Some(n.current.iowait / 100.0),
                load_average: vec![1.0, 1.0, 1.0],
                mem_used_bytes: (n.current.mem / 100.0 * total as f64) as u64,
                mem_total_bytes: total,
                guests: view
                    .guests
                    .iter()
                    .filter(|g| g.node == n.name)
                    .map(|g| pb::Guest {
                        vmid: g.vmid,
                        kind: pb::GuestKind::Qemu as i32,
                        name: g.name.clone(),
                        status: g.status.clone(),
                        cpu_fraction: g.cpu_percent / 100.0,
                        vcpus: f64::from(g.cpu_cores),
                        mem_used_bytes: (g.mem_used_gb * GIB) as u64,
                        mem_max_bytes: (g.mem_max_gb * GIB) as u64,
                        disk_read_bps: g.disk_read_bps,
                        disk_write_bps: g.disk_write_bps,
                        tags: g.tags.clone(),
                        config_known: true,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }
        })
        .collect();
    let status = pb::ClusterStatus {
        schema_version: SCHEMA_VERSION,
        cluster: view.cluster.clone(),
        nodes: view
            .nodes
            .iter()
            .map(|n| pb::ClusterNode {
                node: n.name.clone(),
                status: pb::NodeStatus::Online as i32,
                ..Default::default()
            })
            .collect(),
        quorate: true,
        ..Default::default()
    };
    (snaps, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: run by hand, see the module documentation"]
async fn soak_100_clusters_of_16_nodes_every_second() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(90)
        .min(120);
    let nats = NatsServer::start().expect("nats-server");
    let url = nats.url();
    // The streams as the collector creates them (1 h of snapshots kept).
    let nc = support::nats_connect(&url).await;
    let limits = StreamLimits {
        snapshots_max_age: Duration::from_secs(3600),
        ..StreamLimits::default()
    };
    Publisher::new(
        nc.clone(),
        Subjects::default(),
        &limits,
        Duration::from_secs(5),
    )
    .await
    .expect("streams");
    let js = async_nats::jetstream::new(nc);
    let rec = support::Recommender::start(&url).await;
    let subjects = Subjects::default();
    let clusters: Vec<_> = (0..CLUSTERS).map(templates).collect();

    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut published = 0u64;
    let mut samples = Vec::new();
    let mut late_cycles = 0;
    for k in 0..secs {
        tick.tick().await;
        let cycle_started = Instant::now();
        let now = proxbalance_recommender::service::wall_ms();
        let cycle = now as u64;
        let mut acks = std::collections::VecDeque::new();
        for (snaps, status) in &clusters {
            for s in snaps {
                let mut s = s.clone();
                s.cycle = cycle;
                s.observed_at_unix_ms = now;
                s.cpu_fraction = (s.cpu_fraction + 0.01 * ((k % 7) as f64)).min(1.0);
                let mut h = async_nats::HeaderMap::new();
                h.insert(
                    headers::MSG_ID,
                    headers::snapshot_msg_id(&s.cluster, &s.node, cycle).as_str(),
                );
                acks.push_back(
                    js.publish_with_headers(
                        subjects.snapshot(&s.cluster, &s.node),
                        h,
                        proxbalance_proto::encode(&s).into(),
                    )
                    .await
                    .expect("publish"),
                );
                published += 1;
                if acks.len() >= 512 {
                    acks.pop_front().expect("ack").await.expect("acked");
                }
            }
            let mut st = status.clone();
            st.cycle = cycle;
            st.collected_at_unix_ms = now;
            acks.push_back(
                js.publish(
                    subjects.cluster_status(&st.cluster),
                    proxbalance_proto::encode(&st).into(),
                )
                .await
                .expect("publish"),
            );
        }
        for a in acks {
            a.await.expect("acked");
        }
        if cycle_started.elapsed() > Duration::from_secs(1) {
            late_cycles += 1;
        }
        if k % 5 == 4 {
            let applied = rec.applied();
            let t = Instant::now();
            let cluster = format!("c{:03}", k as usize % CLUSTERS);
            let answer = rec
                .client
                .clone()
                .get_recommendations(pb::GetRecommendationsRequest {
                    cluster,
                    ..Default::default()
                })
                .await;
            let grpc_ms = t.elapsed().as_secs_f64() * 1000.0;
            let oldest = rec
                .client
                .clone()
                .list_clusters(pb::ListClustersRequest {})
                .await
                .expect("list")
                .into_inner()
                .clusters
                .iter()
                .map(|c| c.last_snapshot_unix_ms)
                .min()
                .unwrap_or(0);
            let lag_s = (proxbalance_recommender::service::wall_ms() - oldest) as f64 / 1000.0;
            samples.push((
                started.elapsed().as_secs(),
                rss_bytes(),
                published - applied,
                lag_s,
                grpc_ms,
                answer.is_ok(),
            ));
        }
    }
    println!(
        "| t (s) | RSS (MiB) | backlog (snapshots) | ingest lag (s) | GetRecommendations (ms) | ok |"
    );
    println!("|---|---|---|---|---|---|");
    for (t, rss, backlog, lag, ms, ok) in &samples {
        println!(
            "| {t} | {:.1} | {backlog} | {lag:.2} | {ms:.1} | {ok} |",
            *rss as f64 / (1 << 20) as f64
        );
    }
    println!(
        "published {published} snapshots, applied {}, cycles over 1 s to publish: {late_cycles}",
        rec.applied()
    );
    assert!(samples.iter().all(|s| s.5), "gRPC answered every time");
    // Keeping up: never more than two cycles (3,200 snapshots) behind, lag under 3 s.
    assert!(
        samples
            .iter()
            .all(|s| s.2 <= 2 * (CLUSTERS * NODES) as u64 && s.3 < 3.0),
        "ingest fell behind"
    );
    let warm: Vec<u64> = samples.iter().filter(|s| s.0 >= 30).map(|s| s.1).collect();
    if let (Some(first), Some(max)) = (warm.first(), warm.iter().max()) {
        println!(
            "RSS after warm-up: first {:.1} MiB, max {:.1} MiB ({:+.1} %)",
            *first as f64 / (1 << 20) as f64,
            *max as f64 / (1 << 20) as f64,
            (*max as f64 / *first as f64 - 1.0) * 100.0
        );
        // Flat: under 10 % growth after the 30 s warm-up.
        assert!((*max as f64) < *first as f64 * 1.1, "memory grew");
    }
    rec.stop().await;
}
