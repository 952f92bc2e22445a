//! Publishing to NATS JetStream: streams created if missing, every publish acknowledged within
//! a timeout, `Nats-Msg-Id` for de-duplication and a W3C `traceparent` header, payloads of
//! 1 KiB and more gzipped. Publishing itself is the shared path of
//! [`proxbalance_runtime::publish`]: a message that can never be stored (larger than the
//! server's `max_payload`, no stream, refused subject) is dropped and counted, never retried,
//! so it cannot hold up the cluster's later messages.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::stream;
use proxbalance_proto::headers;
use proxbalance_proto::subjects::Subjects;
use proxbalance_proto::v1::ClusterStatus;
use proxbalance_runtime::{JetStreamPublisher, NatsConnection, OutMessage};

use crate::cycle::CycleOutput;
use crate::retry::RetryBuffer;

/// Limits of the streams the collector creates when they do not exist.
#[derive(Debug, Clone)]
pub struct StreamLimits {
    /// `max_age` of the snapshot stream (at least the recommender's replay window).
    pub snapshots_max_age: Duration,
    /// `max_bytes` of the snapshot stream (-1 = unlimited).
    pub snapshots_max_bytes: i64,
    /// `max_age` of the history stream (0 = unlimited; one message per node is kept anyway,
    /// but a node that left its cluster would be kept forever, and recreated by every
    /// recommender start).
    pub history_max_age: Duration,
    /// Replicas of every stream.
    pub replicas: usize,
    /// JetStream de-duplication window.
    pub duplicate_window: Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            snapshots_max_age: Duration::from_secs(2 * 3600),
            snapshots_max_bytes: -1,
            history_max_age: Duration::from_secs(86_400),
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
        }
    }
}

/// Why the stream set-up failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A stream could not be looked up or created.
    #[error("JetStream stream {stream}: {detail}")]
    Stream {
        /// Stream name.
        stream: String,
        /// The server's answer.
        detail: String,
    },
}

/// Outcome of publishing one cycle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// Messages of this cycle acknowledged (including duplicates the server dropped).
    pub published: usize,
    /// Messages of this cycle not acknowledged (or not attempted because NATS was still
    /// failing the retries); they went to the retry buffer when it has room.
    pub failed: usize,
    /// Messages of earlier cycles taken from the retry buffer and acknowledged now.
    pub retried: usize,
    /// Messages the retry buffer dropped in this cycle (the oldest, beyond its bound).
    pub dropped: usize,
    /// Messages (of this cycle or from the buffer) dropped because they can never be stored:
    /// larger than the server's `max_payload`, no stream for the subject, subject refused.
    pub refused: usize,
    /// Messages waiting in the retry buffer after this cycle.
    pub buffered: usize,
}

/// Publishes the collector's messages.
#[derive(Debug, Clone)]
pub struct Publisher {
    inner: JetStreamPublisher,
    subjects: Subjects,
    /// The refusals already logged as warnings.
    warned: Arc<Mutex<BTreeSet<RefusalKind>>>,
}

/// `(cluster, message type, reason)` of a refused message: what "log once" is once per.
type RefusalKind = (String, &'static str, &'static str);

/// A fresh W3C traceparent with a random trace id and span id.
pub fn new_traceparent() -> String {
    let rng = ring::rand::SystemRandom::new();
    let mut bytes = [0u8; 24];
    if ring::rand::SecureRandom::fill(&rng, &mut bytes).is_err() {
        // Fall back to the clock: the ids only need to be unlikely to collide.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(1);
        bytes[..16].copy_from_slice(&nanos.to_le_bytes());
        bytes[16..].copy_from_slice(&(nanos as u64 | 1).to_be_bytes());
    }
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!("00-{}-{}-01", hex(&bytes[..16]), hex(&bytes[16..]))
}

/// `message` encoded as it travels: protobuf, gzipped from 1 KiB on
/// ([`proxbalance_proto::codec::compress`]).
fn out_message<M: prost::Message>(
    (subject, stream): (String, String),
    msg_id: String,
    message_type: &'static str,
    traceparent: &str,
    message: &M,
) -> OutMessage {
    let (payload, content_encoding) =
        proxbalance_proto::codec::compress(proxbalance_proto::encode(message));
    OutMessage {
        subject,
        msg_id,
        message_type,
        stream,
        traceparent: Some(traceparent.to_owned()),
        content_encoding,
        payload: payload.into(),
    }
}

impl Publisher {
    /// Creates the publisher and makes sure the snapshot and history streams exist.
    /// `connection` is best the one [`proxbalance_runtime::connect_nats`] made (it reports
    /// refused subjects at once); a bare client works too.
    pub async fn new(
        connection: impl Into<NatsConnection>,
        subjects: Subjects,
        limits: &StreamLimits,
        ack_timeout: Duration,
    ) -> Result<Self, PublishError> {
        let publisher = Self {
            inner: JetStreamPublisher::new(connection, ack_timeout),
            subjects,
            warned: Arc::default(),
        };
        publisher.ensure_streams(limits).await?;
        Ok(publisher)
    }

    /// The subjects in use.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// Creates the snapshot and history streams when they do not exist (existing streams are
    /// left as configured by the operator).
    pub async fn ensure_streams(&self, limits: &StreamLimits) -> Result<(), PublishError> {
        let snapshots = stream::Config {
            name: self.subjects.snapshots_stream(),
            subjects: self.subjects.snapshots_stream_subjects(),
            max_age: limits.snapshots_max_age,
            max_bytes: limits.snapshots_max_bytes,
            storage: stream::StorageType::File,
            num_replicas: limits.replicas,
            duplicate_window: limits.duplicate_window,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        };
        let history = stream::Config {
            name: self.subjects.history_stream(),
            subjects: vec![self.subjects.all_history()],
            max_messages_per_subject: 1,
            max_age: limits.history_max_age,
            storage: stream::StorageType::File,
            num_replicas: limits.replicas,
            duplicate_window: limits.duplicate_window,
            allow_direct: true,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        };
        for cfg in [snapshots, history] {
            let name = cfg.name.clone();
            self.inner
                .jetstream()
                .get_or_create_stream(cfg)
                .await
                .map_err(|e| PublishError::Stream {
                    stream: name,
                    detail: e.to_string(),
                })?;
        }
        Ok(())
    }

    /// Publishes one message and waits for its acknowledgement.
    pub async fn publish(
        &self,
        message: &OutMessage,
    ) -> Result<(), proxbalance_runtime::PublishError> {
        self.inner.publish(message).await
    }

    /// Publishes every message of a cycle: histories, snapshots, then the cluster status
    /// (so a consumer seeing the status knows the cycle's snapshots are stored). Failures are
    /// counted and logged, not retried (see [`Publisher::publish_cycle_buffered`]).
    pub async fn publish_cycle(&self, out: &CycleOutput) -> PublishReport {
        self.publish_cycle_buffered(out, &mut RetryBuffer::new(0))
            .await
    }

    /// The status message of a cycle.
    fn status_message(&self, st: &ClusterStatus, trace: &str) -> OutMessage {
        out_message(
            (
                self.subjects.cluster_status(&st.cluster),
                self.subjects.snapshots_stream(),
            ),
            headers::cluster_status_msg_id(&st.cluster, st.cycle),
            "proxbalance.v1.ClusterStatus",
            trace,
            st,
        )
    }

    /// Counts a message that can never be stored, and logs it: a warning the first time for
    /// its cluster, message type and reason, then at debug level (the counter keeps counting).
    fn refused(
        &self,
        cluster: &str,
        message: &OutMessage,
        error: &proxbalance_runtime::PublishError,
    ) {
        let reason = error.failure.label();
        metrics::counter!(
            "proxbalance_collector_publish_refused_total",
            "cluster" => cluster.to_owned(),
            "message" => message.message_type,
            "reason" => reason
        )
        .increment(1);
        let first = self
            .warned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((cluster.to_owned(), message.message_type, reason));
        if first {
            tracing::warn!(cluster, message_type = message.message_type, reason, error = %error, "message can never be stored; dropped (further ones of this kind are logged at debug level and counted in proxbalance_collector_publish_refused_total)");
        } else {
            tracing::debug!(cluster, message_type = message.message_type, reason, error = %error, "message can never be stored; dropped");
        }
    }

    /// Books the outcome of publishing one of this cycle's messages: acknowledged, refused for
    /// good (dropped and counted, see [`Publisher::refused`]) or failed (kept in `failed` for the
    /// retry buffer). Returns whether it was refused.
    fn settle(
        &self,
        cluster: &str,
        message: OutMessage,
        result: Result<(), proxbalance_runtime::PublishError>,
        report: &mut PublishReport,
        failed: &mut Vec<OutMessage>,
    ) -> bool {
        match result {
            Ok(()) => report.published += 1,
            Err(e) if e.is_permanent() => {
                self.refused(cluster, &message, &e);
                report.refused += 1;
                return true;
            }
            Err(e) => {
                tracing::warn!(cluster, error = %e, "publish failed");
                failed.push(message);
            }
        }
        false
    }

    /// Publishes what `buffer` holds from earlier cycles, in order, then this cycle's
    /// messages (histories one by one, snapshots concurrently, the status last).
    ///
    /// - A message that can never be stored (larger than the server's `max_payload`, no stream,
    ///   subject refused) is dropped and counted in
    ///   `proxbalance_collector_publish_refused_total{cluster,message,reason}`, whether new or
    ///   from the buffer: it holds up nothing. A refused history is taken off the status's
    ///   `histories`, so the recommender does not wait for it.
    /// - While a retried message still fails otherwise, the rest of the buffer and the whole
    ///   cycle go to the buffer unsent: the order of messages is kept and a NATS outage costs
    ///   one acknowledgement timeout per cycle, not one per message.
    /// - When one of this cycle's histories or snapshots fails (not refused), the cluster
    ///   status is not sent either but buffered behind it, so a status is never stored before
    ///   its snapshots.
    /// - Messages beyond the buffer's capacity are dropped, oldest first, and counted in
    ///   `proxbalance_collector_retry_dropped_total{cluster}`.
    pub async fn publish_cycle_buffered(
        &self,
        out: &CycleOutput,
        buffer: &mut RetryBuffer,
    ) -> PublishReport {
        let cluster = out.status.cluster.clone();
        let mut report = PublishReport::default();
        let mut nats_failing = false;
        for m in buffer.take() {
            if !nats_failing {
                match self.inner.publish(&m).await {
                    Ok(()) => {
                        report.retried += 1;
                        continue;
                    }
                    Err(e) if e.is_permanent() => {
                        self.refused(&cluster, &m, &e);
                        report.refused += 1;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(cluster = %cluster, error = %e, "re-publish failed; keeping the buffered messages");
                        nats_failing = true;
                    }
                }
            }
            report.dropped += buffer.push(m);
        }
        // The current span's context when traces are recorded (so the recommender's spans join
        // the collector's trace), else a fresh random one: every message carries a traceparent.
        let trace =
            proxbalance_runtime::telemetry::current_traceparent().unwrap_or_else(new_traceparent);
        let mut status = out.status.clone();
        let histories = out.histories.iter().map(|h| {
            let m = out_message(
                (
                    self.subjects.history(&h.cluster, &h.node),
                    self.subjects.history_stream(),
                ),
                headers::history_msg_id(&h.cluster, &h.node, h.collected_at_unix_ms),
                "proxbalance.v1.NodeHistory",
                &trace,
                h,
            );
            (h.node.as_str(), m)
        });
        let snapshots: Vec<OutMessage> = out
            .snapshots
            .iter()
            .map(|s| {
                out_message(
                    (
                        self.subjects.snapshot(&s.cluster, &s.node),
                        self.subjects.snapshots_stream(),
                    ),
                    headers::snapshot_msg_id(&s.cluster, &s.node, s.cycle),
                    "proxbalance.v1.NodeSnapshot",
                    &trace,
                    s,
                )
            })
            .collect();
        let mut failed = Vec::new();
        if nats_failing {
            failed.extend(histories.map(|(_, m)| m));
            failed.extend(snapshots);
        } else {
            for (node, m) in histories {
                let result = self.inner.publish(&m).await;
                if self.settle(&cluster, m, result, &mut report, &mut failed) {
                    status.histories.retain(|n| n != node);
                }
            }
            let sends = snapshots.iter().map(|m| self.inner.publish(m));
            let results = futures_util::future::join_all(sends).await;
            for (m, result) in snapshots.into_iter().zip(results) {
                self.settle(&cluster, m, result, &mut report, &mut failed);
            }
        }
        let status = self.status_message(&status, &trace);
        if failed.is_empty() && !nats_failing {
            let result = self.inner.publish(&status).await;
            self.settle(&cluster, status, result, &mut report, &mut failed);
        } else {
            failed.push(status);
        }
        report.failed = failed.len();
        for m in failed {
            report.dropped += buffer.push(m);
        }
        report.buffered = buffer.len();
        if report.dropped > 0 {
            tracing::warn!(cluster = %cluster, dropped = report.dropped, capacity = buffer.capacity(), "retry buffer full; oldest messages dropped");
        }
        metrics::counter!("proxbalance_collector_retry_dropped_total", "cluster" => cluster.clone())
            .increment(report.dropped as u64);
        metrics::counter!("proxbalance_collector_retried_total", "cluster" => cluster.clone())
            .increment(report.retried as u64);
        metrics::gauge!("proxbalance_collector_retry_buffer_messages", "cluster" => cluster)
            .set(report.buffered as f64);
        report
    }
}

#[cfg(test)]
mod tests {
    use super::new_traceparent;

    #[test]
    fn traceparent_has_the_w3c_shape() {
        let t = new_traceparent();
        let parts: Vec<&str> = t.split('-').collect();
        assert_eq!(parts.len(), 4, "{t}");
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1].len(), 32);
        assert_eq!(parts[2].len(), 16);
        assert_eq!(parts[3], "01");
        assert!(parts[1].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(new_traceparent(), t);
    }
}
