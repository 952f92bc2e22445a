//! Publishing overload and recommendation events to the JetStream events stream.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use proxbalance_proto::headers;
use proxbalance_proto::subjects::Subjects;
use proxbalance_proto::v1 as pb;
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

fn headers_for(msg_id: &str, message_type: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(headers::MSG_ID, msg_id);
    h.insert(headers::CONTENT_TYPE, headers::CONTENT_TYPE_PROTOBUF);
    h.insert(
        headers::SCHEMA_VERSION,
        proxbalance_proto::SCHEMA_VERSION.to_string().as_str(),
    );
    h.insert(headers::MESSAGE_TYPE, message_type);
    h
}

/// Attempts per event before it is dropped (see [`publish_loop`]).
const EVENT_ATTEMPTS: u32 = 12;

/// Publishes events until the channel closes (the ingest loop ended), each with its
/// deterministic `Nats-Msg-Id` and an acknowledgement within `timeout`, retried with the same
/// id when that fails. Sets travel in their basic view; one too large even so for the server's
/// payload limit is published without its `recommendations` (fetch them over gRPC).
pub async fn publish_loop(
    js: jetstream::Context,
    nats: async_nats::Client,
    subjects: Subjects,
    mut rx: mpsc::Receiver<Outgoing>,
    timeout: Duration,
) {
    while let Some(out) = rx.recv().await {
        let (kind, subject, id, message_type, payload) = match &out {
            Outgoing::Overload(e) => (
                "overload",
                subjects.overload(&e.cluster, &e.node),
                overload_event_id(e),
                "proxbalance.v1.OverloadEvent",
                proxbalance_proto::encode(e),
            ),
            Outgoing::Recommendations(c) => {
                let mut payload = proxbalance_proto::encode(c);
                let max = nats.server_info().max_payload;
                if payload.len() + 1024 > max {
                    let mut slim = (**c).clone();
                    slim.recommendations = None;
                    tracing::warn!(cluster = %c.cluster, bytes = payload.len(), max, "recommendation set too large for one NATS message; published without the set");
                    payload = proxbalance_proto::encode(&slim);
                }
                (
                    "recommendations",
                    subjects.recommendations(&c.cluster),
                    recommendations_event_id(c),
                    "proxbalance.v1.RecommendationsChanged",
                    payload,
                )
            }
        };
        let payload = prost::bytes::Bytes::from(payload);
        // A failed publish is retried with the same id (JetStream stores it once), waiting
        // 100 ms, 200 ms, … up to 2 s between attempts, at most EVENT_ATTEMPTS times (about
        // 20 s: a NATS restart or a stream leader election), in order: later events wait.
        // At shutdown there is one attempt.
        for attempt_no in 1..=EVENT_ATTEMPTS {
            let attempt = async {
                let ack = js
                    .publish_with_headers(
                        subject.clone(),
                        headers_for(&id, message_type),
                        payload.clone(),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                ack.await.map_err(|e| e.to_string())
            };
            let error = match tokio::time::timeout(timeout, attempt).await {
                Ok(Ok(_)) => {
                    metrics::counter!(metric::EVENTS_PUBLISHED, "kind" => kind).increment(1);
                    tracing::debug!(%subject, id, attempt_no, "event published");
                    break;
                }
                Ok(Err(e)) => e,
                Err(_) => format!("not acknowledged within {} ms", timeout.as_millis()),
            };
            metrics::counter!(metric::EVENTS_FAILED, "kind" => kind).increment(1);
            // At shutdown (the channel closed) one attempt only, so shutdown stays bounded.
            if attempt_no == EVENT_ATTEMPTS || rx.is_closed() {
                tracing::warn!(%subject, id, error, attempts = attempt_no, "event publish failed; event dropped");
                break;
            } else {
                tracing::warn!(%subject, id, error, attempt_no, "event publish failed; retrying");
                let backoff = Duration::from_millis(100u64 << (attempt_no - 1).min(4))
                    .min(Duration::from_secs(2));
                tokio::time::sleep(backoff).await;
            }
        }
    }
}
