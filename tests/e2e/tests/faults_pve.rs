//! PVE faults end to end: pvesim injects them, the collector reports them (an error in the
//! cluster status naming node, endpoint and path, and `proxbalance_collector_api_errors_total`),
//! the recommender marks the node not online, and no recommendation ever moves a guest to or
//! from it. A second cluster on the same NATS and recommender is collected and recomputed
//! every cycle without an error. Last, the first API endpoint goes down and the second
//! answers.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use proxbalance_collector::publisher::StreamLimits;
use proxbalance_e2e::NatsServer;
use proxbalance_e2e::metric_sum;
use proxbalance_proto::v1 as pb;
use pvesim::{DownMode, Fault};
use support::{Driver, Recommender, until_cycle};

const TIMEOUT: Duration = Duration::from_millis(1500);

/// What to do to one node.
#[derive(Debug, Clone, Copy)]
enum Inject {
    /// The node is down: PVE lists it offline (no request to it is made).
    Down,
    /// PVE's proxy answers 595 for the node's own paths.
    Unreachable,
    Http500,
    Slow,
    Truncated,
    NotJson,
}

/// Moves per target and source node of a set.
fn involved(set: &pb::RecommendationSet) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in &set.recommendations {
        *m.entry(r.target_node.clone()).or_insert(0) += 1;
        *m.entry(r.source_node.clone()).or_insert(0) += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pve_faults_are_reported_and_unread_nodes_are_never_recommended() {
    support::log();
    let prometheus = proxbalance_e2e::prometheus();
    let nats = NatsServer::start().expect("nats-server");
    let url = nats.url();
    let sim = support::demo_sim("demo").await;
    let second = sim
        .add_endpoint("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("second endpoint");
    let endpoints = vec![
        format!("https://{}", sim.local_addr()),
        format!("https://{second}"),
    ];
    let client = support::pve_client("demo", endpoints.clone(), &sim, TIMEOUT);
    let limits = StreamLimits::default();
    let ack = Duration::from_secs(5);
    let mut demo = Driver::with_client("demo", sim, client, &url, &limits, ack).await;
    let mut other = Driver::start("other", &url, &limits, ack).await;
    let rec = Recommender::start(&url).await;
    let mut watch_demo = rec.watch("demo").await;
    let mut watch_other = rec.watch("other").await;

    // Two clean cycles (disk rates need two).
    let mut set = pb::RecommendationSet::default();
    for _ in 0..2 {
        let (out, _) = demo.cycle(10.0).await;
        assert!(out.status.errors.is_empty(), "{:?}", out.status.errors);
        other.cycle(10.0).await;
        set = until_cycle(&mut watch_demo, demo.last_cycle)
            .await
            .recommendations
            .expect("set");
    }
    assert!(!set.recommendations.is_empty());

    let faults = [
        (Inject::Down, pb::CollectionErrorKind::NodeUnreachable),
        (
            Inject::Unreachable,
            pb::CollectionErrorKind::NodeUnreachable,
        ),
        (Inject::Http500, pb::CollectionErrorKind::Http),
        (Inject::Slow, pb::CollectionErrorKind::Timeout),
        (Inject::Truncated, pb::CollectionErrorKind::Decode),
        (Inject::NotJson, pb::CollectionErrorKind::Decode),
    ];
    for (inject, kind) in faults {
        // The node most involved in the current recommendations is the one that fails.
        let node = involved(&set)
            .into_iter()
            .max_by_key(|(n, c)| (*c, std::cmp::Reverse(n.clone())))
            .map_or_else(|| "pve5".to_owned(), |(n, _)| n);
        let path = format!("/nodes/{node}/status");
        match inject {
            Inject::Down => demo.sim.node_down(&node, DownMode::NoRoute).expect("down"),
            Inject::Unreachable => demo
                .sim
                .inject_fault(&path, Fault::Status(595, "No route to host".into())),
            Inject::Http500 => demo
                .sim
                .inject_fault(&path, Fault::Status(500, "simulated failure".into())),
            Inject::Slow => demo
                .sim
                .inject_fault(&path, Fault::Delay(TIMEOUT + Duration::from_secs(1))),
            Inject::Truncated => demo.sim.inject_fault(&path, Fault::Truncated),
            Inject::NotJson => demo.sim.inject_fault(&path, Fault::NotJson),
        }
        let (out, report) = demo.cycle(10.0).await;
        let (other_out, _) = other.cycle(10.0).await;
        assert_eq!(report.failed, 0);

        // The collector: one error naming the node and the path; every other node read.
        let errors: Vec<(&str, pb::CollectionErrorKind)> = out
            .status
            .errors
            .iter()
            .map(|e| (e.node.as_str(), e.kind()))
            .collect();
        let message = if matches!(inject, Inject::Down) {
            // Listed offline by PVE: nothing to ask it, so no error (only its offline state).
            assert!(
                errors.iter().all(|(n, k)| *n == node && *k == kind),
                "{inject:?}: {:?}",
                out.status.errors
            );
            "listed offline by /cluster/resources".to_owned()
        } else {
            assert_eq!(errors, vec![(node.as_str(), kind)], "{inject:?}");
            let e = &out.status.errors[0];
            // A timeout fails over to the second endpoint (which has the same fault).
            assert!(
                e.path == path && e.message.contains(&path) && endpoints.contains(&e.endpoint),
                "{inject:?}: {e:?} {endpoints:?}"
            );
            e.message.clone()
        };
        for s in &out.snapshots {
            let online = s.status == pb::NodeStatus::Online as i32;
            assert_eq!(
                online,
                s.node != node,
                "{inject:?}: {} {}",
                s.node,
                s.status
            );
        }
        // The other cluster: nothing.
        assert!(other_out.status.errors.is_empty(), "{inject:?}");
        until_cycle(&mut watch_other, other.last_cycle).await;

        // The recommender: the node is not online in the view; no move to or from it.
        set = until_cycle(&mut watch_demo, demo.last_cycle)
            .await
            .recommendations
            .expect("set");
        assert!(
            !involved(&set).contains_key(&node),
            "{inject:?}: {node} still in {:?}",
            involved(&set)
        );
        let state = rec
            .client
            .clone()
            .get_cluster_state(pb::GetClusterStateRequest {
                cluster: "demo".into(),
            })
            .await
            .expect("state")
            .into_inner();
        let latest = state
            .nodes
            .iter()
            .filter_map(|n| n.latest.as_ref())
            .find(|s| s.node == node)
            .expect("node state");
        assert_ne!(latest.status, pb::NodeStatus::Online as i32, "{inject:?}");
        println!("{inject:?} on {node}: {message}");

        demo.sim.clear_faults();
        if matches!(inject, Inject::Down) {
            demo.sim.node_up(&node).expect("up");
        }
        let (out, _) = demo.cycle(10.0).await;
        assert!(out.status.errors.is_empty(), "{:?}", out.status.errors);
        other.cycle(10.0).await;
        set = until_cycle(&mut watch_demo, demo.last_cycle)
            .await
            .recommendations
            .expect("set");
    }

    // The first endpoint goes down: the second answers the whole cycle.
    demo.sim.stop_endpoint(0).await.expect("stop endpoint 0");
    let (out, _) = demo.cycle(10.0).await;
    assert!(out.status.errors.is_empty(), "{:?}", out.status.errors);
    assert_eq!(out.status.endpoint, endpoints[1]);
    until_cycle(&mut watch_demo, demo.last_cycle).await;

    let text = prometheus.render();
    let errors = |kind: &str| {
        metric_sum(
            &text,
            &[
                "proxbalance_collector_api_errors_total",
                "cluster=\"demo\"",
                &format!("kind=\"{kind}\""),
            ],
        )
    };
    // One each; the timeout twice (both endpoints were tried), decode twice (truncated and
    // not JSON).
    let counted: Vec<(&str, u64)> = ["node_unreachable", "http", "timeout", "decode"]
        .into_iter()
        .map(|k| (k, errors(k)))
        .collect();
    assert_eq!(
        counted,
        vec![
            ("node_unreachable", 1),
            ("http", 1),
            ("timeout", 2),
            ("decode", 2)
        ],
        "{text}"
    );
    assert_eq!(
        metric_sum(
            &text,
            &[
                "proxbalance_collector_api_errors_total",
                "cluster=\"other\""
            ]
        ),
        0
    );
    assert!(
        metric_sum(
            &text,
            &[
                "proxbalance_collector_endpoint_failovers_total",
                "cluster=\"demo\""
            ]
        ) >= 1,
        "{text}"
    );
    println!(
        "api errors: node_unreachable {}, http {}, timeout {}, decode {}",
        errors("node_unreachable"),
        errors("http"),
        errors("timeout"),
        errors("decode")
    );
    rec.stop().await;
    demo.sim.shutdown().await;
    other.sim.shutdown().await;
}
