//! Defects found in acceptance testing (issue 11), each reproduced here with real processes:
//! the collector on pvesim publishing to a real nats-server, hand-made messages published
//! beside it, and the recommender in-process answering over gRPC.

mod support;

use std::time::Duration;

use proxbalance_collector::publisher::StreamLimits;
use proxbalance_e2e::NatsServer;
use proxbalance_proto::subjects::Subjects;
use proxbalance_proto::v1 as pb;
use support::{Driver, Recommender, WAIT, until_cycle};

const DAY_MS: i64 = 86_400_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// Publishes `msg` on `subject` through JetStream and waits for its acknowledgement.
async fn publish<M: prost::Message>(nats_url: &str, subject: String, msg: &M) {
    let js = async_nats::jetstream::new(support::nats_connect(nats_url).await);
    js.publish(subject, proxbalance_proto::encode(msg).into())
        .await
        .expect("publish")
        .await
        .expect("ack");
}

/// The full `GetRecommendations` answer of the cached set.
async fn answer(
    rec: &Recommender,
    cluster: &str,
) -> Result<pb::GetRecommendationsResponse, tonic::Status> {
    rec.client
        .clone()
        .get_recommendations(pb::GetRecommendationsRequest {
            cluster: cluster.into(),
            view: pb::SetView::Full.into(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn cluster_state(rec: &Recommender, cluster: &str) -> pb::GetClusterStateResponse {
    rec.client
        .clone()
        .get_cluster_state(pb::GetClusterStateRequest {
            cluster: cluster.into(),
        })
        .await
        .expect("cluster state")
        .into_inner()
}

/// What froze a cluster, checked after the cycle that follows: no node stale, the set's clock
/// and data not in the future, the answer's age counted from now.
async fn assert_not_frozen(rec: &Recommender, cluster: &str) {
    let state = cluster_state(rec, cluster).await;
    let stale: Vec<&str> = state
        .nodes
        .iter()
        .filter(|n| n.stale)
        .filter_map(|n| n.latest.as_ref().map(|s| s.node.as_str()))
        .collect();
    assert!(stale.is_empty(), "stale nodes: {stale:?}");
    let a = answer(rec, cluster).await.expect("served");
    let now = now_ms();
    let set = a.set.expect("set");
    assert!(
        set.generated_at * 1000 <= now,
        "generated_at {}",
        set.generated_at
    );
    assert!(a.data_at_unix_ms <= now, "data_at {}", a.data_at_unix_ms);
    assert!((0..60_000).contains(&a.age_ms), "age {}", a.age_ms);
}

/// A snapshot observed a day ahead (a collector clock step) used to pin its node's latest
/// snapshot: every other node turned stale, the plan froze with its clock in the future, and
/// a restarted recommender replayed it back. It is refused now, live and in the replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_from_the_future_freezes_nothing() {
    support::log();
    let nats = NatsServer::start().expect("nats-server");
    let url = nats.url();
    let mut demo = Driver::start(
        "demo",
        &url,
        &StreamLimits::default(),
        Duration::from_secs(5),
    )
    .await;
    let rec = Recommender::start(&url).await;
    let mut watch = rec.watch("demo").await;
    let (out, _) = demo.cycle(10.0).await;
    until_cycle(&mut watch, demo.last_cycle).await;

    // The collector's clock a day ahead: its observation time and its cycle id (the cycle's
    // start by its clock) are.
    let mut ahead = out.snapshots[0].clone();
    ahead.cycle += DAY_MS as u64;
    ahead.observed_at_unix_ms += DAY_MS;
    let subject = Subjects::default().snapshot(&ahead.cluster, &ahead.node);
    publish(&url, subject, &ahead).await;
    demo.cycle(10.0).await;
    until_cycle(&mut watch, demo.last_cycle).await;
    assert_not_frozen(&rec, "demo").await;

    // A restart replays the stream, the snapshot from the future with it.
    rec.stop().await;
    let rec = Recommender::start(&url).await;
    let mut watch = rec.watch("demo").await;
    demo.cycle(10.0).await;
    until_cycle(&mut watch, demo.last_cycle).await;
    assert_not_frozen(&rec, "demo").await;
    rec.stop().await;
}

/// A cluster whose collector stopped was served its last set forever. Answers now carry the
/// data's time and age, and are UNAVAILABLE past `state.max_answer_age_s`: a cluster whose
/// newest cycle was observed ten minutes ago is refused, cached or computed afresh, while a
/// live one is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_answers_are_unavailable() {
    support::log();
    let nats = NatsServer::start().expect("nats-server");
    let url = nats.url();
    let limits = StreamLimits::default();
    let mut demo = Driver::start("demo", &url, &limits, Duration::from_secs(5)).await;
    let mut config = support::config(&url);
    config.state.max_answer_age_s = 300;
    let rec = Recommender::start_with(config).await;
    let mut watch = rec.watch("").await;
    let (out, _) = demo.cycle(10.0).await;
    until_cycle(&mut watch, demo.last_cycle).await;
    let a = answer(&rec, "demo")
        .await
        .expect("a live cluster is served");
    let newest = out
        .snapshots
        .iter()
        .map(|s| s.observed_at_unix_ms)
        .max()
        .expect("snapshots");
    assert_eq!(a.data_at_unix_ms, newest);
    assert!((0..60_000).contains(&a.age_ms), "age {}", a.age_ms);

    // Cluster `old`: one cycle collected (pvesim's demo) and published as if ten minutes ago.
    let mut old = Driver::start("old", &url, &limits, Duration::from_secs(5)).await;
    let mut cycle = old.collector.collect().await;
    let ten_minutes_ago = now_ms() - 600_000;
    let subjects = Subjects::default();
    for s in &mut cycle.snapshots {
        s.observed_at_unix_ms = ten_minutes_ago;
        publish(&url, subjects.snapshot("old", &s.node), s).await;
    }
    cycle.status.collected_at_unix_ms = ten_minutes_ago;
    cycle.status.histories.clear();
    publish(&url, subjects.cluster_status("old"), &cycle.status).await;
    tokio::time::timeout(WAIT, async {
        while let Some(m) = watch.message().await.expect("watch") {
            if m.cluster == "old" {
                return;
            }
        }
    })
    .await
    .expect("old recomputed");

    let too_old = |e: tonic::Status| {
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
        let m = e.message();
        assert!(
            m.starts_with("cluster \"old\": its newest data is 60")
                && m.ends_with(
                    " s old, over the limit of 300 s (state.max_answer_age_s); no collection \
                     cycle completed since"
                ),
            "{m}"
        );
    };
    too_old(answer(&rec, "old").await.expect_err("too old"));
    too_old(
        rec.client
            .clone()
            .get_recommendations(pb::GetRecommendationsRequest {
                cluster: "old".into(),
                limit: 1,
                ..Default::default()
            })
            .await
            .expect_err("too old, computed afresh too"),
    );
    too_old(
        rec.client
            .clone()
            .get_migration_options(pb::GetMigrationOptionsRequest {
                cluster: "old".into(),
                vmid: cycle.snapshots[0].guests[0].vmid,
                overrides: None,
            })
            .await
            .expect_err("too old for options too"),
    );
    // The live cluster is still served.
    assert!(answer(&rec, "demo").await.is_ok());
    rec.stop().await;
}
