//! The one JetStream publish path of both services: the collector's snapshots, histories and
//! statuses, and the recommender's events, go through [`JetStreamPublisher::publish`], so both
//! tell a message that can never be stored from one worth trying again the same way.
//!
//! - Before sending, the message's size as the server counts it (headers and payload) is checked
//!   against the `max_payload` the server announced: a larger one is refused at once
//!   ([`PublishFailure::TooLarge`]) instead of being sent and retried forever.
//! - async-nats' error kinds are kept ([`PublishError::source`]) and mapped to a
//!   [`PublishFailure`]: no stream for the subject and a message over the stream's size limit
//!   are permanent; a missing acknowledgement, a broken connection or another JetStream refusal
//!   is transient. "No responders" is only taken for a missing stream once JetStream confirms
//!   that the message's stream does not exist: a replicated stream electing a new leader does
//!   not answer either, for a moment.
//! - A subject the server refuses to this user is reported by the server as an error on the
//!   connection, not as an answer to the publish (whose acknowledgement then never comes). The
//!   connection made by [`crate::connect_nats`] feeds those errors to its publishers
//!   ([`Refusals`]), so the publish ends at once with [`PublishFailure::PermissionDenied`]
//!   instead of waiting for its acknowledgement timeout.
//!
//! [`PublishFailure::is_permanent`] is the rule both services follow: drop and count a
//! permanent failure (retrying cannot help and would hold up every later message), retry a
//! transient one with the same `Nats-Msg-Id`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::{PublishError as NatsPublishError, PublishErrorKind};
use async_nats::jetstream::{self, ErrorCode};
use async_nats::{HeaderMap, ServerError};
use bytes::Bytes;
use tokio::sync::broadcast;

/// A NATS connection and the feed of the server's refusals of its publishes.
#[derive(Debug, Clone)]
pub struct NatsConnection {
    /// The client.
    pub client: async_nats::Client,
    refusals: Refusals,
}

impl NatsConnection {
    /// The connection `client`, whose server errors `refusals` is fed with (see
    /// [`crate::connect_nats`]).
    pub fn new(client: async_nats::Client, refusals: Refusals) -> Self {
        Self { client, refusals }
    }

    /// The refusals of this connection's publishes, as the server reports them.
    pub fn refusals(&self) -> &Refusals {
        &self.refusals
    }
}

/// A connection made without [`crate::connect_nats`]: nothing feeds its refusals, so a refused
/// subject shows as an acknowledgement timeout (transient).
impl From<async_nats::Client> for NatsConnection {
    fn from(client: async_nats::Client) -> Self {
        Self::new(client, Refusals::default())
    }
}

/// Subjects the server refused to publish for this connection (`Permissions Violation for
/// Publish to "…"`), broadcast to the publishes waiting for an acknowledgement.
#[derive(Debug, Clone)]
pub struct Refusals {
    tx: broadcast::Sender<Arc<str>>,
}

impl Default for Refusals {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(256).0,
        }
    }
}

impl Refusals {
    /// Takes note of a server error; a publish permission violation wakes the publishes to
    /// that subject.
    pub fn observe(&self, error: &ServerError) {
        if let ServerError::Other(text) = error
            && let Some(subject) = refused_publish(text)
        {
            // No receiver: no publish is waiting.
            let _ = self.tx.send(subject.into());
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.tx.subscribe()
    }
}

/// The subject of a `Permissions Violation for Publish to "<subject>"` server error.
fn refused_publish(text: &str) -> Option<&str> {
    text.strip_prefix("Permissions Violation for Publish to \"")?
        .strip_suffix('"')
}

/// One message to publish to JetStream, with everything its headers carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutMessage {
    /// The subject.
    pub subject: String,
    /// The de-duplication id (`Nats-Msg-Id`), unchanged on every retry.
    pub msg_id: String,
    /// The full protobuf message name (`Proxbalance-Message-Type`).
    pub message_type: &'static str,
    /// The stream meant to store it (asked whether it exists when no stream answers).
    pub stream: String,
    /// The W3C trace context, when the message has one.
    pub traceparent: Option<String>,
    /// `Content-Encoding` of the payload (`gzip`), none for plain protobuf.
    pub content_encoding: Option<&'static str>,
    /// The payload.
    pub payload: Bytes,
}

impl OutMessage {
    /// The headers: `Nats-Msg-Id`, `Content-Type`, the schema version, the message type, and
    /// `traceparent` and `Content-Encoding` when set.
    pub fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in self.header_pairs() {
            h.insert(name, value);
        }
        h
    }

    fn header_pairs(&self) -> Vec<(&'static str, String)> {
        use proxbalance_proto::headers;
        let mut pairs = vec![
            (headers::MSG_ID, self.msg_id.clone()),
            (
                headers::CONTENT_TYPE,
                headers::CONTENT_TYPE_PROTOBUF.to_owned(),
            ),
            (
                headers::SCHEMA_VERSION,
                proxbalance_proto::SCHEMA_VERSION.to_string(),
            ),
            (headers::MESSAGE_TYPE, self.message_type.to_owned()),
        ];
        if let Some(tp) = &self.traceparent {
            pairs.push((headers::TRACEPARENT, tp.clone()));
        }
        if let Some(enc) = self.content_encoding {
            pairs.push((headers::CONTENT_ENCODING, enc.to_owned()));
        }
        pairs
    }

    /// The size the server checks against its `max_payload`: the header block as sent
    /// (`NATS/1.0\r\n`, a `name: value\r\n` line per header, `\r\n`) plus the payload.
    pub fn wire_size(&self) -> usize {
        let headers: usize = self
            .header_pairs()
            .iter()
            .map(|(name, value)| name.len() + 2 + value.len() + 2)
            .sum();
        "NATS/1.0\r\n".len() + headers + 2 + self.payload.len()
    }
}

/// Why a publish failed, and whether trying again can succeed ([`PublishFailure::is_permanent`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishFailure {
    /// Headers and payload exceed the server's `max_payload`. Permanent.
    #[error("message of {size} bytes exceeds the server's max_payload of {max} bytes")]
    TooLarge {
        /// Size of headers and payload.
        size: usize,
        /// The server's `max_payload`.
        max: usize,
    },
    /// No stream stores the subject (JetStream: no responders, and the message's stream does
    /// not exist). Permanent until an operator creates one.
    #[error("no stream stores this subject")]
    NoStream,
    /// No stream answered although the message's stream exists (or JetStream could not say):
    /// a replicated stream between leaders. Transient.
    #[error("no stream answered; stream {stream} {detail}")]
    NoResponders {
        /// The message's stream.
        stream: String,
        /// What JetStream said about it.
        detail: String,
    },
    /// The server refused the subject to this user. Permanent until its permissions change.
    #[error("the server refused the subject to this user (permissions violation)")]
    PermissionDenied,
    /// JetStream answered with an error. Permanent for a message over the stream's size limit
    /// (error code 10054), transient otherwise (a full stream, a leader election, …).
    #[error("JetStream refused the message: {description} (error code {code})")]
    Rejected {
        /// JetStream's error code (`err_code`).
        code: u64,
        /// JetStream's description.
        description: String,
    },
    /// No acknowledgement within the timeout. Transient.
    #[error("no acknowledgement within {timeout_ms} ms")]
    Timeout {
        /// The timeout.
        timeout_ms: u64,
    },
    /// The message could not be sent or its acknowledgement was lost with the connection.
    /// Transient.
    #[error("connection: {detail}")]
    Transport {
        /// The client's error.
        detail: String,
    },
}

impl PublishFailure {
    /// Whether publishing the same message again can never succeed: drop it (and count it)
    /// rather than retry it.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::TooLarge { .. } | Self::NoStream | Self::PermissionDenied => true,
            Self::Rejected { code, .. } => *code == ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM.0,
            Self::NoResponders { .. } | Self::Timeout { .. } | Self::Transport { .. } => false,
        }
    }

    /// A short label for metrics (`reason`).
    pub fn label(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::Rejected { code, .. } if *code == ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM.0 => {
                "too_large"
            }
            Self::NoStream => "no_stream",
            Self::PermissionDenied => "permission",
            Self::Rejected { .. } => "rejected",
            Self::NoResponders { .. } => "no_responders",
            Self::Timeout { .. } => "timeout",
            Self::Transport { .. } => "transport",
        }
    }
}

/// A failed publish: the subject, what failed, and async-nats' error when it came from there.
#[derive(Debug, thiserror::Error)]
#[error("publish to {subject}: {failure}")]
pub struct PublishError {
    /// The subject of the message.
    pub subject: String,
    /// What failed.
    pub failure: PublishFailure,
    /// async-nats' error (with its [`PublishErrorKind`]), when the client reported it.
    #[source]
    pub source: Option<NatsPublishError>,
}

impl PublishError {
    /// Whether retrying can never succeed (see [`PublishFailure::is_permanent`]).
    pub fn is_permanent(&self) -> bool {
        self.failure.is_permanent()
    }
}

/// Maps async-nats' error to a [`PublishFailure`] by its kind (and JetStream's error code).
fn classify(error: &NatsPublishError, size: usize, max: usize, timeout_ms: u64) -> PublishFailure {
    match error.kind() {
        PublishErrorKind::MaxPayloadExceeded => PublishFailure::TooLarge { size, max },
        PublishErrorKind::StreamNotFound => PublishFailure::NoStream,
        PublishErrorKind::TimedOut => PublishFailure::Timeout { timeout_ms },
        PublishErrorKind::Other
        | PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::WrongLastSequence => {
            let api =
                std::error::Error::source(error).and_then(|s| s.downcast_ref::<jetstream::Error>());
            match api {
                Some(api) => PublishFailure::Rejected {
                    code: api.error_code().0,
                    description: api.to_string(),
                },
                None => PublishFailure::Transport {
                    detail: error.to_string(),
                },
            }
        }
        PublishErrorKind::BrokenPipe | PublishErrorKind::MaxAckPending => {
            PublishFailure::Transport {
                detail: error.to_string(),
            }
        }
    }
}

/// Publishes [`OutMessage`]s to JetStream and waits for each acknowledgement (see the module
/// documentation).
#[derive(Debug, Clone)]
pub struct JetStreamPublisher {
    js: jetstream::Context,
    client: async_nats::Client,
    refusals: Refusals,
    ack_timeout: Duration,
}

impl JetStreamPublisher {
    /// A publisher on `connection` that waits at most `ack_timeout` for each acknowledgement.
    pub fn new(connection: impl Into<NatsConnection>, ack_timeout: Duration) -> Self {
        let connection = connection.into();
        // The context keeps async-nats' own request timeout (stream set-up, consumers); the
        // acknowledgement of a publish is bounded by `ack_timeout` around it.
        Self {
            js: jetstream::new(connection.client.clone()),
            client: connection.client,
            refusals: connection.refusals,
            ack_timeout,
        }
    }

    /// The JetStream context (stream set-up).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// The server's `max_payload` (headers and payload of one message), as it announced it.
    pub fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// Refuses a message larger than the server's `max_payload` ([`PublishFailure::TooLarge`]).
    pub fn check_size(&self, message: &OutMessage) -> Result<(), PublishError> {
        let (size, max) = (message.wire_size(), self.max_payload());
        if size > max {
            return Err(PublishError {
                subject: message.subject.clone(),
                failure: PublishFailure::TooLarge { size, max },
                source: None,
            });
        }
        Ok(())
    }

    /// After "no responders": [`PublishFailure::NoStream`] when JetStream says `stream` does
    /// not exist, [`PublishFailure::NoResponders`] (transient) when it exists or JetStream
    /// cannot say (a leader election, NATS unavailable).
    async fn confirm_no_stream(&self, stream: &str) -> PublishFailure {
        use async_nats::jetstream::context::GetStreamErrorKind;
        let lookup = tokio::time::timeout(self.ack_timeout, self.js.get_stream(stream)).await;
        let detail = match lookup {
            Ok(Err(e)) => match e.kind() {
                GetStreamErrorKind::JetStream(api)
                    if api.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    return PublishFailure::NoStream;
                }
                _ => format!("could not be looked up: {e}"),
            },
            Ok(Ok(_)) => "exists (between leaders?)".to_owned(),
            Err(_) => "could not be looked up in time".to_owned(),
        };
        PublishFailure::NoResponders {
            stream: stream.to_owned(),
            detail,
        }
    }

    /// Publishes `message` and waits for JetStream's acknowledgement (a duplicate the stream
    /// dropped counts as acknowledged).
    pub async fn publish(&self, message: &OutMessage) -> Result<(), PublishError> {
        self.check_size(message)?;
        let timeout_ms = u64::try_from(self.ack_timeout.as_millis()).unwrap_or(u64::MAX);
        let subject = message.subject.as_str();
        let fail = |failure, source| PublishError {
            subject: subject.to_owned(),
            failure,
            source,
        };
        // Listen before sending: the refusal may arrive before the send returns.
        let mut refusals = self.refusals.subscribe();
        let refused = async {
            loop {
                match refusals.recv().await {
                    Ok(s) if &*s == subject => return,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await;
                    }
                }
            }
        };
        let attempt = async {
            let ack = self
                .js
                .publish_with_headers(
                    subject.to_owned(),
                    message.headers(),
                    message.payload.clone(),
                )
                .await?;
            ack.await
        };
        tokio::select! {
            result = tokio::time::timeout(self.ack_timeout, attempt) => match result {
                Ok(Ok(_ack)) => Ok(()),
                Ok(Err(e)) => {
                    let mut failure = classify(&e, message.wire_size(), self.max_payload(), timeout_ms);
                    if failure == PublishFailure::NoStream {
                        failure = self.confirm_no_stream(&message.stream).await;
                    }
                    Err(fail(failure, Some(e)))
                }
                Err(_) => Err(fail(PublishFailure::Timeout { timeout_ms }, None)),
            },
            () = refused => Err(fail(PublishFailure::PermissionDenied, None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: usize) -> OutMessage {
        OutMessage {
            subject: "proxbalance.v1.snapshot.prod.pve1".into(),
            msg_id: "snapshot:prod:pve1:1".into(),
            message_type: "proxbalance.v1.NodeSnapshot",
            stream: "PROXBALANCE_SNAPSHOTS".into(),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            content_encoding: Some("gzip"),
            payload: Bytes::from(vec![7u8; payload]),
        }
    }

    #[test]
    fn wire_size_counts_the_header_block_as_sent() {
        let m = message(1000);
        let block = "NATS/1.0\r\n\
            Nats-Msg-Id: snapshot:prod:pve1:1\r\n\
            Content-Type: application/x-protobuf\r\n\
            Proxbalance-Schema-Version: 1\r\n\
            Proxbalance-Message-Type: proxbalance.v1.NodeSnapshot\r\n\
            traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\
            Content-Encoding: gzip\r\n\r\n";
        assert_eq!(m.wire_size(), block.len() + 1000);
        assert_eq!(m.headers().len(), 6);
    }

    #[test]
    fn permission_violations_name_their_subject() {
        assert_eq!(
            refused_publish("Permissions Violation for Publish to \"a.b.c\""),
            Some("a.b.c")
        );
        assert_eq!(
            refused_publish("Permissions Violation for Subscription to \"a.b\""),
            None
        );
        assert_eq!(refused_publish("authorization violation"), None);
    }

    #[test]
    fn permanent_and_transient_failures() {
        let permanent = [
            PublishFailure::TooLarge { size: 2, max: 1 },
            PublishFailure::NoStream,
            PublishFailure::PermissionDenied,
            PublishFailure::Rejected {
                code: 10054,
                description: "message size exceeds maximum allowed".into(),
            },
        ];
        let transient = [
            PublishFailure::NoResponders {
                stream: "S".into(),
                detail: "exists (between leaders?)".into(),
            },
            PublishFailure::Timeout { timeout_ms: 5 },
            PublishFailure::Transport {
                detail: "broken pipe".into(),
            },
            PublishFailure::Rejected {
                code: 10047,
                description: "insufficient storage resources".into(),
            },
        ];
        for f in &permanent {
            assert!(f.is_permanent(), "{f}");
        }
        for f in &transient {
            assert!(!f.is_permanent(), "{f}");
        }
        let labels: Vec<&str> = permanent
            .iter()
            .chain(&transient)
            .map(|f| f.label())
            .collect();
        assert_eq!(
            labels,
            [
                "too_large",
                "no_stream",
                "permission",
                "too_large",
                "no_responders",
                "timeout",
                "transport",
                "rejected"
            ]
        );
    }

    #[test]
    fn async_nats_kinds_are_classified() {
        let kinds = [
            (
                PublishErrorKind::MaxPayloadExceeded,
                PublishFailure::TooLarge { size: 10, max: 5 },
            ),
            (PublishErrorKind::StreamNotFound, PublishFailure::NoStream),
            (
                PublishErrorKind::TimedOut,
                PublishFailure::Timeout { timeout_ms: 7 },
            ),
        ];
        for (kind, expected) in kinds {
            assert_eq!(
                classify(&NatsPublishError::new(kind), 10, 5, 7),
                expected,
                "{kind:?}"
            );
        }
        assert!(matches!(
            classify(
                &NatsPublishError::new(PublishErrorKind::BrokenPipe),
                1,
                1,
                1
            ),
            PublishFailure::Transport { .. }
        ));
    }
}
