//! Names and values of the NATS headers every proxbalance message carries.

/// JetStream de-duplication id. For snapshots it is `<cluster>:<node>:<cycle>`
/// (see [`snapshot_msg_id`]), so a retried publish is stored once.
pub const MSG_ID: &str = "Nats-Msg-Id";

/// W3C trace context (`00-<trace-id>-<span-id>-<flags>`).
pub const TRACEPARENT: &str = "traceparent";

/// MIME type of the payload.
pub const CONTENT_TYPE: &str = "Content-Type";

/// The value of [`CONTENT_TYPE`] for protobuf payloads.
pub const CONTENT_TYPE_PROTOBUF: &str = "application/x-protobuf";

/// Schema version of the payload (decimal, see [`crate::SCHEMA_VERSION`]).
pub const SCHEMA_VERSION: &str = "Proxbalance-Schema-Version";

/// Fully qualified protobuf message name of the payload (e.g. `proxbalance.v1.NodeSnapshot`).
pub const MESSAGE_TYPE: &str = "Proxbalance-Message-Type";

/// The de-duplication id of one node's snapshot in one cycle: `<cluster>:<node>:<cycle>`.
///
/// The raw (unsanitized) names are used; the id is a header value, not a subject token.
pub fn snapshot_msg_id(cluster: &str, node: &str, cycle: u64) -> String {
    format!("{cluster}:{node}:{cycle}")
}

/// The de-duplication id of one node's history publish: `<cluster>:<node>:history:<collected_at_unix_ms>`.
pub fn history_msg_id(cluster: &str, node: &str, collected_at_unix_ms: i64) -> String {
    format!("{cluster}:{node}:history:{collected_at_unix_ms}")
}

/// The de-duplication id of a cluster status of one cycle: `<cluster>:cluster:<cycle>`.
pub fn cluster_status_msg_id(cluster: &str, cycle: u64) -> String {
    format!("{cluster}:cluster:{cycle}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msg_ids_have_the_documented_shape() {
        assert_eq!(snapshot_msg_id("prod", "pve1", 42), "prod:pve1:42");
        assert_eq!(history_msg_id("prod", "pve1", 7), "prod:pve1:history:7");
        assert_eq!(cluster_status_msg_id("prod", 3), "prod:cluster:3");
    }
}
