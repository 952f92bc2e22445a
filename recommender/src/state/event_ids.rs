//! The `Nats-Msg-Id` of the events the recommender publishes: derived from the event alone, so
//! replicas and restarts that compute the same event give it the same id and JetStream stores
//! it once.

use proxbalance_proto::v1 as pb;

/// The `Nats-Msg-Id` of an overload event: the same transition computed by two replicas gets
/// the same id, so JetStream stores it once.
pub fn overload_event_id(e: &pb::OverloadEvent) -> String {
    let state = if e.state == pb::OverloadState::Raised as i32 {
        "raised"
    } else {
        "cleared"
    };
    proxbalance_proto::headers::overload_msg_id(
        &e.cluster,
        &e.node,
        super::dashboard::reason_word(e.reason),
        state,
        e.since_unix_ms,
    )
}

/// The `Nats-Msg-Id` of a recommendations-changed event: the cycle it was computed for, the
/// same on every replica. (The view's instant, in seconds, was used before: two cycles
/// completing within one second then shared an id and JetStream dropped the second event.)
pub fn recommendations_event_id(e: &pb::RecommendationsChanged) -> String {
    proxbalance_proto::headers::recommendations_msg_id(&e.cluster, e.cycle)
}
