//! Defects found in acceptance testing (issue 11), each reproduced here with real processes:
//! the collector on pvesim publishing to a real nats-server, hand-made messages published
//! beside it, and the recommender in-process answering over gRPC.

use crate::support;

use std::time::Duration;

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
    support::answer(&rec.client, cluster).await
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
    let support::Live {
        nats,
        mut demo,
        rec,
        mut watch,
        first: out,
    } = support::Live::start(|_| {}).await;
    let url = nats.url();

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
    let support::Live {
        nats,
        rec,
        first: out,
        ..
    } = support::Live::start(|c| c.state.max_answer_age_s = 300).await;
    let url = nats.url();
    let mut watch = rec.watch("").await;
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
    let mut old = Driver::demo("old", &url).await;
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

/// The overload events stored in `PROXBALANCE_EVENTS`, read as they come.
struct StoredEvents {
    messages: async_nats::jetstream::consumer::pull::Ordered,
    seen: Vec<pb::OverloadEvent>,
}

impl StoredEvents {
    async fn follow(nats_url: &str) -> StoredEvents {
        use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
        let js = async_nats::jetstream::new(support::nats_connect(nats_url).await);
        let subjects = Subjects::default();
        let stream = tokio::time::timeout(WAIT, async {
            loop {
                // The recommender creates the stream at start.
                if let Ok(s) = js.get_stream(subjects.events_stream()).await {
                    return s;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("events stream");
        let messages = stream
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::All,
                filter_subject: subjects.all_overload(),
                ..Default::default()
            })
            .await
            .expect("consumer")
            .messages()
            .await
            .expect("messages");
        StoredEvents {
            messages,
            seen: Vec::new(),
        }
    }

    /// Reads until an event satisfies `stop`; returns it.
    async fn until(&mut self, stop: impl Fn(&pb::OverloadEvent) -> bool) -> pb::OverloadEvent {
        use futures_util::StreamExt;
        tokio::time::timeout(WAIT, async {
            loop {
                let msg = self
                    .messages
                    .next()
                    .await
                    .expect("stream open")
                    .expect("message");
                let e: pb::OverloadEvent = proxbalance_proto::decode(&msg.payload).expect("event");
                self.seen.push(e.clone());
                if stop(&e) {
                    return e;
                }
            }
        })
        .await
        .expect("the event in time")
    }

    /// Every stored id appears once.
    fn assert_no_duplicate(&self) {
        let mut ids: Vec<&str> = self.seen.iter().map(|e| e.event_id.as_str()).collect();
        let all = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), all, "{:#?}", self.seen);
    }
}

fn is(e: &pb::OverloadEvent, node: &str, state: pb::OverloadState) -> bool {
    e.node == node && e.reason() == pb::OverloadReason::MemOvercommit && e.state() == state
}

/// A deployment whose recommender starts after its collector used to store no event for what
/// the replay found (pve2 overcommitted, shown OVERLOADED by `state`), then published a
/// `cleared` for a raise nobody received. The replay's transitions missing from the events
/// stream are published when it ends; a second recommender replaying the same finds them
/// stored and publishes none again; the node going offline clears it (`node_offline`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitions_seen_in_the_replay_are_published_once() {
    support::log();
    let nats = NatsServer::start().expect("nats-server");
    let url = nats.url();
    let mut demo = Driver::demo("demo", &url).await;
    for _ in 0..2 {
        demo.cycle(10.0).await;
    }
    let first = Recommender::start(&url).await;
    let mut events = StoredEvents::follow(&url).await;
    let raised = events
        .until(|e| is(e, "pve2", pb::OverloadState::Raised))
        .await;
    let pve2 = cluster_state(&first, "demo")
        .await
        .nodes
        .into_iter()
        .find(|n| n.latest.as_ref().is_some_and(|s| s.node == "pve2"))
        .expect("pve2");
    assert_eq!(
        pve2.overloaded,
        vec![pb::OverloadReason::MemOvercommit as i32]
    );
    first.stop().await;

    let second = Recommender::start(&url).await;
    let mut watch = second.watch("demo").await;
    demo.sim
        .set_node_online("pve2", false)
        .expect("pve2 offline");
    demo.cycle(10.0).await;
    until_cycle(&mut watch, demo.last_cycle).await;
    let cleared = events
        .until(|e| is(e, "pve2", pb::OverloadState::Cleared))
        .await;
    assert_eq!(cleared.clear_cause(), pb::OverloadClearCause::NodeOffline);
    assert_eq!(cleared.value, 0.0);
    let pve2_events: Vec<&pb::OverloadEvent> = events
        .seen
        .iter()
        .filter(|e| e.node == "pve2" && e.reason() == pb::OverloadReason::MemOvercommit)
        .collect();
    assert_eq!(pve2_events, vec![&raised, &cleared]);
    events.assert_no_duplicate();
    second.stop().await;
}

/// A raised overload whose collector stopped was never cleared: the stream ended at `raised`.
/// Past the staleness (12 s here) the wall-clock sweep clears it as `node_stale`, at the node's
/// last snapshot plus the staleness (the instant a replay would compute, so the same id).
///
/// The clock skew allowed must exceed 10 s: the first cycle advances the simulator's clock 10 s
/// past the wall clock, and the newest point of its RRD history is that minute's start, ahead of
/// the recommender's clock whenever the cycle runs in a minute's last 10 s (the history was then
/// refused as `future_time` and the first cycle never completed: 1 run in 6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_overload_is_cleared_when_its_collector_stops() {
    let support::Live {
        nats,
        rec,
        first: out,
        ..
    } = support::Live::start(|c| {
        c.state.staleness_s = 12;
        c.state.max_clock_skew_s = 11;
    })
    .await;
    let mut events = StoredEvents::follow(&nats.url()).await;
    events
        .until(|e| is(e, "pve2", pb::OverloadState::Raised))
        .await;
    // The collector stops here.
    let cleared = events
        .until(|e| is(e, "pve2", pb::OverloadState::Cleared))
        .await;
    let observed = out
        .snapshots
        .iter()
        .find(|s| s.node == "pve2")
        .expect("pve2")
        .observed_at_unix_ms;
    assert_eq!(cleared.clear_cause(), pb::OverloadClearCause::NodeStale);
    assert_eq!(
        (cleared.since_unix_ms, cleared.at_unix_ms),
        (observed + 12_000, observed + 12_000)
    );
    events.assert_no_duplicate();
    rec.stop().await;
}

/// The history stream the collector creates has a max age (a day by default): a node that left
/// its cluster is not kept, and recreated by every recommender start, forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_stream_has_a_max_age() {
    let nats = NatsServer::start().expect("nats-server");
    let nc = support::nats_connect(&nats.url()).await;
    let limits = proxbalance_collector::config::NatsConfig::default().stream_limits();
    proxbalance_collector::publisher::Publisher::new(
        nc.clone(),
        Subjects::default(),
        &limits,
        Duration::from_secs(5),
    )
    .await
    .expect("streams");
    let js = async_nats::jetstream::new(nc);
    let mut history = js
        .get_stream(Subjects::default().history_stream())
        .await
        .expect("history stream");
    let config = history.info().await.expect("info").config.clone();
    assert_eq!(config.max_age, Duration::from_secs(86_400));
    assert_eq!(config.max_messages_per_subject, 1);
}

/// Requests computed afresh (overrides, a limit, migration options) take a permit of
/// `grpc.max_fresh_plans`; beyond them they are refused with RESOURCE_EXHAUSTED at once, and
/// cached answers are not held up. Before, every such request ran a full plan, without a cap.
/// The test holds every permit itself, so which request is refused is not a matter of timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_plans_beyond_the_limit_are_refused() {
    let support::Live {
        rec, nats: _nats, ..
    } = support::Live::start(|c| c.grpc.max_fresh_plans = Some(2)).await;
    let limited = || pb::GetRecommendationsRequest {
        cluster: "demo".into(),
        limit: 1,
        ..Default::default()
    };
    let options = || pb::GetMigrationOptionsRequest {
        cluster: "demo".into(),
        vmid: 601,
        overrides: None,
    };

    let held = rec
        .service
        .shared()
        .fresh_plans
        .clone()
        .acquire_many_owned(2)
        .await
        .expect("permits");
    let expected = "2 requests computed afresh are running (grpc.max_fresh_plans); retry later, \
                    or ask without overrides and limit for the cached set";
    let e = rec
        .client
        .clone()
        .get_recommendations(limited())
        .await
        .expect_err("no permit");
    assert_eq!(
        (e.code(), e.message()),
        (tonic::Code::ResourceExhausted, expected)
    );
    let e = rec
        .client
        .clone()
        .get_migration_options(options())
        .await
        .expect_err("no permit");
    assert_eq!(
        (e.code(), e.message()),
        (tonic::Code::ResourceExhausted, expected)
    );
    // The cached set is served all the same.
    assert!(answer(&rec, "demo").await.is_ok());

    drop(held);
    let fresh = rec
        .client
        .clone()
        .get_recommendations(limited())
        .await
        .expect("a permit is free")
        .into_inner();
    assert!(fresh.computed_fresh);
    assert!(fresh.set.expect("set").recommendations.len() <= 1);
    assert!(
        rec.client
            .clone()
            .get_migration_options(options())
            .await
            .is_ok()
    );
    rec.stop().await;
}

/// `grpc.max_concurrent_streams` is what the server tells each connection: with 1, a second
/// watch on the same connection waits until the first one ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_holds_at_most_max_concurrent_streams() {
    support::log();
    let nats = NatsServer::start().expect("nats-server");
    let mut config = support::config(&nats.url());
    config.grpc.max_concurrent_streams = 1;
    let rec = Recommender::start_with(config).await;
    let first = rec.watch("").await;
    let mut client = rec.client.clone();
    let second = tokio::spawn(async move {
        client
            .watch_recommendations(pb::WatchRecommendationsRequest::default())
            .await
            .map(|_| ())
    });
    // No event can say a stream did not open: the second watch is given half a second.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !second.is_finished(),
        "a second stream opened on the connection"
    );
    drop(first);
    tokio::time::timeout(WAIT, second)
        .await
        .expect("the second watch opens once the first ended")
        .expect("task")
        .expect("watch");
    rec.stop().await;
}

/// Found while writing these tests: with NATS unreachable, stopping the service waited for the
/// final flush until NATS came back (Kubernetes would kill it after its grace period). The flush
/// is bounded by `grpc.shutdown_timeout_ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_stops_while_nats_is_down() {
    let support::Live { mut nats, rec, .. } =
        support::Live::start(|c| c.grpc.shutdown_timeout_ms = 1000).await;
    nats.stop();
    rec.token.cancel();
    tokio::time::timeout(Duration::from_secs(30), rec.service.wait())
        .await
        .expect("stopped within the shutdown timeout")
        .expect("stopped cleanly");
}
