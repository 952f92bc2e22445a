//! The ingest loop: the latest history per node, then the snapshot stream replayed from
//! `now − replay window` and followed, each through an ordered (ephemeral, per-replica)
//! consumer so that every replica receives every message.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::{Ordered, OrderedConfig};
use async_nats::jetstream::{self, Message};
use futures_util::StreamExt;
use proxbalance_proto::subjects::Subjects;
use proxbalance_proto::v1 as pb;
use tokio::sync::mpsc;

use super::{Outgoing, Shared, metric, wall_ms};
use crate::state::{Arrival, Ingested, Rejection};

/// How long the snapshot consumer may make no progress before the stream is asked whether
/// it should have (see the stall check in [`ingest_loop`]).
const STALL_CHECK: Duration = Duration::from_secs(5);

/// How often replay progress is logged, in messages.
const PROGRESS_EVERY: u64 = 10_000;

/// Waits for `name` to exist (the collector creates it), retrying every second until shutdown.
async fn wait_for_stream(
    js: &jetstream::Context,
    name: &str,
    shared: &Shared,
) -> Option<jetstream::stream::Stream> {
    let mut warned = false;
    loop {
        match js.get_stream(name).await {
            Ok(s) => return Some(s),
            Err(e) => {
                if !warned {
                    tracing::warn!(stream = name, error = %e, "stream not available yet; waiting for the collector to create it");
                    warned = true;
                }
            }
        }
        tokio::select! {
            () = shared.shutdown.cancelled() => return None,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Creates an ordered consumer and its message stream; returns the number of messages pending
/// at creation too.
async fn ordered(
    stream: &jetstream::stream::Stream,
    filter: String,
    deliver_policy: DeliverPolicy,
) -> Result<(Ordered, u64), String> {
    let mut consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: filter,
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let pending = consumer
        .info()
        .await
        .map(|i| i.num_pending)
        .map_err(|e| e.to_string())?;
    let messages = consumer.messages().await.map_err(|e| e.to_string())?;
    Ok((messages, pending))
}

fn start_time(replay: Duration) -> time::OffsetDateTime {
    let nanos = i128::from(wall_ms()) * 1_000_000 - replay.as_nanos() as i128;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// The span of one snapshot-stream message, a child of the span that published it when the
/// message carries a `traceparent`.
fn ingest_span(msg: &Message, replaying: bool) -> tracing::Span {
    let span = tracing::info_span!("recommender.ingest", subject = %msg.subject, replaying);
    if let Some(tp) = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(proxbalance_proto::headers::TRACEPARENT))
    {
        proxbalance_runtime::telemetry::set_parent_from_traceparent(&span, tp.as_str());
    }
    span
}

/// When `msg` arrived: now, and when the stream stored it (now when unknown).
fn arrival(msg: &Message) -> Arrival {
    let wall = wall_ms();
    let stored_ms = msg
        .info()
        .ok()
        .and_then(|i| i64::try_from(i.published.unix_timestamp_nanos() / 1_000_000).ok())
        .unwrap_or(wall);
    Arrival {
        wall_ms: wall,
        stored_ms,
    }
}

/// A message's protobuf bytes: its payload, inflated when its `Content-Encoding` says gzip.
fn inflated(msg: &Message) -> Result<std::borrow::Cow<'_, [u8]>, proxbalance_proto::CodecError> {
    let encoding = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(proxbalance_proto::headers::CONTENT_ENCODING))
        .map(|v| v.as_str());
    proxbalance_proto::codec::decompress(encoding, &msg.payload)
}

/// Applies one message (inflated first, outside the state lock); returns the cluster and cycle
/// it completed.
fn apply(shared: &Shared, msg: &Message) -> Option<(String, u64)> {
    let at = arrival(msg);
    let result = inflated(msg)
        .map_err(Rejection::from)
        .and_then(|payload| shared.write().ingest(msg.subject.as_str(), &payload, at));
    match result {
        Ok(Ingested::Snapshot {
            cluster,
            observed_at_ms,
            completed,
        }) => {
            metrics::counter!(metric::SNAPSHOTS_CONSUMED, "cluster" => cluster.clone())
                .increment(1);
            metrics::gauge!(metric::INGEST_LAG).set((wall_ms() - observed_at_ms) as f64 / 1000.0);
            completed.map(|c| (cluster, c))
        }
        Ok(Ingested::Status { cluster, completed }) => completed.map(|c| (cluster, c)),
        Ok(Ingested::History { cluster, completed }) => {
            tracing::debug!(cluster, subject = %msg.subject, "history applied");
            completed.map(|c| (cluster, c))
        }
        Ok(Ingested::Ignored) => None,
        Err(e) => {
            metrics::counter!(metric::MESSAGES_REJECTED, "reason" => e.label()).increment(1);
            tracing::warn!(subject = %msg.subject, reason = e.label(), error = %e, "message rejected");
            None
        }
    }
}

/// Publishes overload transitions (JetStream, through the publisher's queue) and tells the
/// `WatchEvents` streams.
pub(super) fn emit_overload(
    shared: &Shared,
    out: &mpsc::Sender<Outgoing>,
    events: Vec<pb::OverloadEvent>,
) {
    for e in events {
        tracing::info!(cluster = %e.cluster, node = %e.node, reason = e.reason, state = e.state, clear_cause = e.clear_cause, value = e.value, "overload transition");
        shared.recent_events.push(e.clone());
        let _ = shared.events.send(e.clone());
        if out.try_send(Outgoing::Overload(e)).is_err() {
            metrics::counter!(metric::EVENTS_FAILED, "kind" => "overload").increment(1);
            tracing::warn!("event queue full; overload event dropped");
        }
    }
}

/// What the replay saw: the clusters to recompute at its end, and the overload transitions it
/// computed, in order (published at its end when the events stream lacks them).
#[derive(Debug, Default)]
struct Replayed {
    dirty: BTreeMap<String, u64>,
    transitions: Vec<pb::OverloadEvent>,
}

/// A cluster's cycle completed: evaluate overload and, unless replaying, recompute and publish.
fn on_cycle(
    shared: &Shared,
    cluster: &str,
    cycle: u64,
    replaying: bool,
    replayed: &mut Replayed,
    out: &mpsc::Sender<Outgoing>,
) {
    let events = shared.write().evaluate_overload(cluster);
    if replaying {
        // Published, if missing from the events stream, when the replay is done.
        replayed.dirty.insert(cluster.to_owned(), cycle);
        replayed.transitions.extend(events);
        return;
    }
    emit_overload(shared, out, events);
    let recomputed = shared.recompute(cluster, cycle);
    if let Some(done) = recomputed.filter(|r| r.notice.changed) {
        let change = done.event_in(false);
        tracing::info!(
            cluster,
            cycle,
            generation = change.generation,
            added = change.added_vmids.len(),
            removed = change.removed_vmids.len(),
            changed = change.changed_vmids.len(),
            "recommendations changed"
        );
        if out
            .try_send(Outgoing::Recommendations(Box::new(change)))
            .is_err()
        {
            metrics::counter!(metric::EVENTS_FAILED, "kind" => "recommendations").increment(1);
            tracing::warn!(cluster, "event queue full; recommendations event dropped");
        }
    }
}

/// The ids of the overload events stored in the events stream; each stored event is handed to
/// `keep` in stream order.
async fn stored_overload_ids(
    js: &jetstream::Context,
    subjects: &Subjects,
    mut keep: impl FnMut(pb::OverloadEvent),
) -> Result<BTreeSet<String>, String> {
    let stream = js
        .get_stream(subjects.events_stream())
        .await
        .map_err(|e| e.to_string())?;
    let (mut messages, mut pending) =
        ordered(&stream, subjects.all_overload(), DeliverPolicy::All).await?;
    let mut ids = BTreeSet::new();
    while pending > 0 {
        let next = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .map_err(|_| "reading the events stream timed out".to_owned())?;
        let msg = match next {
            Some(Ok(msg)) => msg,
            Some(Err(e)) => return Err(e.to_string()),
            None => break,
        };
        pending = msg.info().map_or(0, |i| i.pending);
        match inflated(&msg).and_then(|p| proxbalance_proto::decode::<pb::OverloadEvent>(&p)) {
            Ok(e) => keep(e),
            Err(e) => {
                tracing::warn!(error = %e, "an undecodable message in the events stream; not shown")
            }
        }
        if let Some(id) = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(proxbalance_proto::headers::MSG_ID))
        {
            ids.insert(id.as_str().to_owned());
        }
    }
    Ok(ids)
}

/// At the end of the replay: the wall-clock sweep (overloads of nodes gone quiet meanwhile,
/// nodes past the retention), and the transitions the replay computed that the events stream
/// lacks. A transition's id is derived from the data, so one that was published live (by this
/// recommender before a restart, or by another replica) is found in the stream and not sent
/// again, and one nobody published (a fresh deployment, a crash before the publish) is.
/// Without this, a deployment started after its collector stored no `raised` and later
/// published a `cleared` for a raise nobody received.
async fn publish_after_replay(
    shared: &Shared,
    js: &jetstream::Context,
    subjects: &Subjects,
    out: &mpsc::Sender<Outgoing>,
    transitions: Vec<pb::OverloadEvent>,
) {
    let swept = shared.write().sweep(wall_ms());
    let replayed = transitions.len();
    // The stored events seed the dashboard's feed, which then gets every transition as it is
    // emitted: those the stream lacks, below, and the live ones.
    let keep = |e| shared.recent_events.push(e);
    let missing: Vec<pb::OverloadEvent> = match stored_overload_ids(js, subjects, keep).await {
        Ok(stored) => transitions
            .into_iter()
            .filter(|e| !stored.contains(&e.event_id))
            .collect(),
        Err(e) => {
            // JetStream's duplicate window still drops the recent ones already stored.
            tracing::warn!(error = %e, "cannot read the events stream; publishing every transition of the replay");
            transitions
        }
    };
    tracing::info!(
        replayed,
        missing = missing.len(),
        swept = swept.len(),
        "overload transitions of the replay checked against the events stream"
    );
    emit_overload(shared, out, missing);
    emit_overload(shared, out, swept);
}

/// The ingest loop (see the module documentation). Ends at shutdown; dropping `out` then
/// lets the publisher finish.
pub async fn ingest_loop(
    shared: Arc<Shared>,
    js: jetstream::Context,
    subjects: Subjects,
    out: mpsc::Sender<Outgoing>,
    replay: Duration,
) {
    let Some(history_stream) = wait_for_stream(&js, &subjects.history_stream(), &shared).await
    else {
        return;
    };
    let Some(mut snapshot_stream) =
        wait_for_stream(&js, &subjects.snapshots_stream(), &shared).await
    else {
        return;
    };
    let mut seen_in_replay = Replayed::default();

    // 1. The latest history of every node.
    let (mut history, mut pending) = loop {
        match ordered(
            &history_stream,
            subjects.all_history(),
            DeliverPolicy::LastPerSubject,
        )
        .await
        {
            Ok(x) => break x,
            Err(e) => {
                tracing::warn!(error = %e, "cannot create the history consumer; retrying");
                tokio::select! {
                    () = shared.shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    let mut histories = 0u64;
    while pending > 0 {
        let next = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            m = history.next() => m,
        };
        match next {
            Some(Ok(msg)) => {
                histories += 1;
                pending = msg.info().map_or(0, |i| i.pending);
                apply(&shared, &msg);
            }
            Some(Err(e)) => tracing::warn!(error = %e, "history consumer error"),
            None => break,
        }
    }
    tracing::info!(histories, "node histories read");

    // 2. The snapshot stream from now − replay window, then live.
    let mut last_seq = 0u64;
    let mut replaying;
    let (snapshots, pending) = loop {
        match ordered(
            &snapshot_stream,
            String::new(),
            DeliverPolicy::ByStartTime {
                start_time: start_time(replay),
            },
        )
        .await
        {
            Ok(x) => break x,
            Err(e) => {
                tracing::warn!(error = %e, "cannot create the snapshot consumer; retrying");
                tokio::select! {
                    () = shared.shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    replaying = pending > 0;
    let replay_started = Instant::now();
    let mut replayed = 0u64;
    tracing::info!(
        pending,
        replay_window_s = replay.as_secs(),
        "snapshot replay started"
    );
    metrics::gauge!(metric::REPLAYING).set(if replaying { 1.0 } else { 0.0 });
    if !replaying {
        shared.ready.store(true, Ordering::Release);
    }

    // A consumer is `None` while it has to be recreated: after an error the client does not
    // recover from ("consumer not found": a restarted server keeps no ephemeral consumer; a
    // pull times out while a cluster elects a stream leader), after its end, and after every
    // reconnection (the old pulls would only fail when they expire, ~15 s later). The check
    // below recreates it, every second until it succeeds: the snapshots after the last stream
    // sequence applied (nothing twice, nothing skipped), or from the replay start when
    // nothing was applied yet; the latest histories again (harmless: seeding never overrides
    // a live sample).
    let mut history = Some(history);
    let mut snapshots = Some(snapshots);
    let nats = js.client();
    let mut was_connected = true;
    let mut retry_at: Option<Instant> = None;
    // Stall check: a consumer can also go quiet without an error or a disconnection (in a
    // cluster, the server holding it died and the client is still connected elsewhere). Every
    // STALL_CHECK without progress, the stream's last sequence is asked for; if it is ahead
    // of the last message applied, the consumer is recreated.
    let mut stall_checked_at = Instant::now();
    let mut stall_checked_seq = 0u64;
    let mut recreate_check = tokio::time::interval(Duration::from_millis(250));
    recreate_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // History first: a cycle's histories are published before its snapshots.
            biased;
            () = shared.shutdown.cancelled() => break,
            _ = recreate_check.tick() => {
                let connected = nats.connection_state() == async_nats::connection::State::Connected;
                if connected && !was_connected {
                    tracing::info!(last_seq, "NATS reconnected; recreating the consumers after the last message seen");
                    history = None;
                    snapshots = None;
                    retry_at = None;
                }
                was_connected = connected;
                if connected && snapshots.is_some() && stall_checked_at.elapsed() >= STALL_CHECK {
                    if last_seq == stall_checked_seq {
                        let info = tokio::time::timeout(Duration::from_secs(2), snapshot_stream.info()).await;
                        if let Ok(Ok(info)) = info
                            && info.state.last_sequence > last_seq
                        {
                            tracing::warn!(last_seq, stream_last = info.state.last_sequence, "snapshot consumer stalled; recreating it after the last message seen");
                            snapshots = None;
                            retry_at = None;
                        }
                    }
                    stall_checked_at = Instant::now();
                    stall_checked_seq = last_seq;
                }
                if connected
                    && (history.is_none() || snapshots.is_none())
                    && retry_at.is_none_or(|t| Instant::now() >= t)
                {
                    if history.is_none() {
                        match ordered(&history_stream, subjects.all_history(), DeliverPolicy::LastPerSubject).await {
                            Ok((h, _)) => history = Some(h),
                            Err(e) => tracing::warn!(error = %e, "cannot recreate the history consumer; retrying in 1 s"),
                        }
                    }
                    if snapshots.is_none() {
                        let policy = if last_seq == 0 {
                            DeliverPolicy::ByStartTime { start_time: start_time(replay) }
                        } else {
                            DeliverPolicy::ByStartSequence { start_sequence: last_seq + 1 }
                        };
                        match ordered(&snapshot_stream, String::new(), policy).await {
                            Ok((s, _)) => {
                                tracing::info!(last_seq, "snapshot consumer recreated");
                                snapshots = Some(s);
                            }
                            Err(e) => tracing::warn!(last_seq, error = %e, "cannot recreate the snapshot consumer; retrying in 1 s"),
                        }
                    }
                    retry_at = (history.is_none() || snapshots.is_none())
                        .then(|| Instant::now() + Duration::from_secs(1));
                }
            },
            m = async { match history.as_mut() { Some(h) => h.next().await, None => None } }, if history.is_some() => match m {
                Some(Ok(msg)) => {
                    // A history can complete a cycle whose status arrived first.
                    if let Some((cluster, cycle)) = apply(&shared, &msg) {
                        on_cycle(&shared, &cluster, cycle, replaying, &mut seen_in_replay, &out);
                    }
                }
                Some(Err(_)) | None => {
                    if let Some(Err(e)) = &m {
                        tracing::warn!(error = %e, "history consumer error; recreating it");
                    } else {
                        tracing::warn!("history consumer ended; recreating it");
                    }
                    history = None;
                }
            },
            m = async { match snapshots.as_mut() { Some(s) => s.next().await, None => None } }, if snapshots.is_some() => match m {
                Some(Ok(msg)) => {
                    // No await below: the span is entered for the message's whole handling, so
                    // the recomputation it completes is its child in the collector's trace.
                    let span = ingest_span(&msg, replaying);
                    let _entered = span.enter();
                    let info = msg.info().map(|i| (i.stream_sequence, i.pending)).ok();
                    if let Some((seq, _)) = info {
                        last_seq = seq;
                    }
                    if let Some((cluster, cycle)) = apply(&shared, &msg) {
                        on_cycle(&shared, &cluster, cycle, replaying, &mut seen_in_replay, &out);
                    }
                    if replaying {
                        replayed += 1;
                        let left = info.map_or(0, |(_, p)| p);
                        if replayed.is_multiple_of(PROGRESS_EVERY) {
                            tracing::info!(replayed, pending = left, "replaying snapshots");
                        }
                        if left == 0 {
                            replaying = false;
                            metrics::gauge!(metric::REPLAYING).set(0.0);
                            let done = std::mem::take(&mut seen_in_replay);
                            for (cluster, cycle) in &done.dirty {
                                shared.recompute(cluster, *cycle);
                            }
                            drop(_entered);
                            publish_after_replay(&shared, &js, &subjects, &out, done.transitions).await;
                            shared.ready.store(true, Ordering::Release);
                            tracing::info!(replayed, elapsed_ms = replay_started.elapsed().as_millis() as u64, "snapshot replay done");
                        }
                    }
                }
                Some(Err(_)) | None => {
                    if let Some(Err(e)) = &m {
                        tracing::warn!(last_seq, error = %e, "snapshot consumer error; recreating it after the last message seen");
                    } else {
                        tracing::warn!(last_seq, "snapshot consumer ended; recreating it after the last message seen");
                    }
                    snapshots = None;
                }
            },
        }
    }
    tracing::info!("ingest stopped");
}
