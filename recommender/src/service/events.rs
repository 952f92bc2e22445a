//! Publishing overload and recommendation events to the JetStream events stream, and the
//! recent overload events the dashboard shows.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use proxbalance_proto::subjects::Subjects;
use proxbalance_proto::v1 as pb;
use proxbalance_runtime::{JetStreamPublisher, OutMessage};
use tokio::sync::mpsc;

use super::{ServiceError, metric};
use crate::config::NatsConfig;
use crate::state::{overload_event_id, recommendations_event_id};

/// An event waiting to be published.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// An overload transition.
    Overload(pb::OverloadEvent),
    /// A changed recommendation set.
    Recommendations(Box<pb::RecommendationsChanged>),
}

/// Overload events kept for the event feed (every cluster together).
pub const RECENT_EVENTS: usize = 2000;

/// The latest overload events, newest last, at most [`RECENT_EVENTS`] (the dashboard's event
/// feed): seeded from the events stream when the start-up replay ends, then every transition as
/// it is emitted.
#[derive(Debug, Default)]
pub struct Recent {
    events: Mutex<VecDeque<Arc<pb::OverloadEvent>>>,
}

impl Recent {
    /// Keeps `event`, forgetting the oldest beyond [`RECENT_EVENTS`].
    pub fn push(&self, event: pb::OverloadEvent) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if events.len() == RECENT_EVENTS {
            events.pop_front();
        }
        events.push_back(Arc::new(event));
    }

    /// The newest `limit` events of `cluster` (every cluster when empty), newest first.
    pub fn latest(&self, cluster: &str, limit: usize) -> Vec<Arc<pb::OverloadEvent>> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events
            .iter()
            .rev()
            .filter(|e| cluster.is_empty() || e.cluster == cluster)
            .take(limit)
            .cloned()
            .collect()
    }
}

/// Creates the events stream when it does not exist (an existing one is left as configured).
pub async fn ensure_stream(
    js: &jetstream::Context,
    subjects: &Subjects,
    cfg: &NatsConfig,
) -> Result<(), ServiceError> {
    let name = subjects.events_stream();
    let config = stream::Config {
        name: name.clone(),
        subjects: vec![subjects.all_events()],
        max_age: Duration::from_secs(cfg.events_max_age_s),
        storage: stream::StorageType::File,
        num_replicas: cfg.events_replicas.max(1),
        duplicate_window: Duration::from_secs(120),
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    };
    js.get_or_create_stream(config)
        .await
        .map_err(|e| ServiceError::Stream {
            stream: name,
            detail: e.to_string(),
        })?;
    Ok(())
}

/// Attempts per event before it is dropped (see [`publish_loop`]).
const EVENT_ATTEMPTS: u32 = 12;

/// The message of an event: its subject, deterministic `Nats-Msg-Id` and plain protobuf
/// payload (events are not compressed: any subscriber reads them as they are).
fn out_message(subjects: &Subjects, event: &Outgoing) -> OutMessage {
    let (subject, msg_id, message_type, payload) = match event {
        Outgoing::Overload(e) => (
            subjects.overload(&e.cluster, &e.node),
            overload_event_id(e),
            "proxbalance.v1.OverloadEvent",
            proxbalance_proto::encode(e),
        ),
        Outgoing::Recommendations(c) => (
            subjects.recommendations(&c.cluster),
            recommendations_event_id(c),
            "proxbalance.v1.RecommendationsChanged",
            proxbalance_proto::encode(c),
        ),
    };
    OutMessage {
        subject,
        msg_id,
        message_type,
        stream: subjects.events_stream(),
        traceparent: None,
        content_encoding: None,
        payload: payload.into(),
    }
}

/// Publishes events until the channel closes (the ingest loop ended), each with its
/// deterministic `Nats-Msg-Id` and an acknowledgement within the publisher's timeout, through
/// the services' shared publish path ([`proxbalance_runtime::publish`]).
///
/// - Sets travel in their basic view; one too large even so for the server's `max_payload` is
///   published without its `recommendations` (fetch them over gRPC).
/// - An event that can never be stored (too large, no stream, subject refused) is dropped at
///   once and counted in `proxbalance_recommender_events_refused_total{kind,reason}`.
/// - Any other failure is retried with the same id (JetStream stores it once), waiting 100 ms,
///   200 ms, … up to 2 s between attempts, at most `EVENT_ATTEMPTS` times (about 20 s: a NATS
///   restart or a stream leader election), in order: later events wait. At shutdown there is
///   one attempt.
pub async fn publish_loop(
    publisher: JetStreamPublisher,
    subjects: Subjects,
    mut rx: mpsc::Receiver<Outgoing>,
) {
    while let Some(out) = rx.recv().await {
        let kind = match &out {
            Outgoing::Overload(_) => "overload",
            Outgoing::Recommendations(_) => "recommendations",
        };
        let mut message = out_message(&subjects, &out);
        if let Outgoing::Recommendations(c) = &out
            && publisher.check_size(&message).is_err()
        {
            let mut slim = (**c).clone();
            slim.recommendations = None;
            tracing::warn!(cluster = %c.cluster, bytes = message.wire_size(), max = publisher.max_payload(), "recommendation set too large for one NATS message; published without the set");
            message = out_message(&subjects, &Outgoing::Recommendations(Box::new(slim)));
        }
        for attempt_no in 1..=EVENT_ATTEMPTS {
            let error = match publisher.publish(&message).await {
                Ok(()) => {
                    metrics::counter!(metric::EVENTS_PUBLISHED, "kind" => kind).increment(1);
                    tracing::debug!(subject = %message.subject, id = message.msg_id, attempt_no, "event published");
                    break;
                }
                Err(e) => e,
            };
            metrics::counter!(metric::EVENTS_FAILED, "kind" => kind).increment(1);
            if error.is_permanent() {
                metrics::counter!(metric::EVENTS_REFUSED, "kind" => kind, "reason" => error.failure.label())
                    .increment(1);
                tracing::warn!(id = message.msg_id, %error, "event can never be stored; dropped");
                break;
            }
            // At shutdown (the channel closed) one attempt only, so shutdown stays bounded.
            if attempt_no == EVENT_ATTEMPTS || rx.is_closed() {
                tracing::warn!(id = message.msg_id, %error, attempts = attempt_no, "event publish failed; event dropped");
                break;
            } else {
                tracing::warn!(id = message.msg_id, %error, attempt_no, "event publish failed; retrying");
                let backoff = Duration::from_millis(100u64 << (attempt_no - 1).min(4))
                    .min(Duration::from_secs(2));
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(cluster: &str, node: &str) -> pb::OverloadEvent {
        pb::OverloadEvent {
            cluster: cluster.into(),
            node: node.into(),
            ..Default::default()
        }
    }

    #[test]
    fn recent_keeps_the_newest_first_and_is_bounded() {
        let r = Recent::default();
        for i in 0..RECENT_EVENTS + 5 {
            r.push(event(if i % 2 == 0 { "a" } else { "b" }, &i.to_string()));
        }
        let all = r.latest("", usize::MAX);
        assert_eq!(all.len(), RECENT_EVENTS);
        assert_eq!(all[0].node, (RECENT_EVENTS + 4).to_string());
        let a = r.latest("a", 2);
        assert_eq!(a.len(), 2);
        assert!(a.iter().all(|e| e.cluster == "a"));
    }
}
