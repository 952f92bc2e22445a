//! Names and values of the NATS headers every proxbalance message carries, and the
//! de-duplication ids (`Nats-Msg-Id`) of every message kind.
//!
//! An id starts with the message kind and joins its parts with `:`; every name in it is escaped
//! by [`id_part`], so no part contains `:` and an id splits back into exactly the parts it was
//! made of. Two messages therefore share an id only when they are the same message, whatever
//! their cluster and node names (a node named `cluster` or `history`, a cluster named `a:b`).

use std::fmt::Write as _;

/// JetStream de-duplication id (see the module documentation and [`snapshot_msg_id`]), so a
/// retried publish is stored once.
pub const MSG_ID: &str = "Nats-Msg-Id";

/// W3C trace context (`00-<trace-id>-<span-id>-<flags>`).
pub const TRACEPARENT: &str = "traceparent";

/// MIME type of the payload.
pub const CONTENT_TYPE: &str = "Content-Type";

/// The value of [`CONTENT_TYPE`] for protobuf payloads.
pub const CONTENT_TYPE_PROTOBUF: &str = "application/x-protobuf";

/// Compression of the payload: absent for plain protobuf, [`CONTENT_ENCODING_GZIP`] for gzip
/// (see [`crate::codec::compress`]). Consumers must accept both.
pub const CONTENT_ENCODING: &str = "Content-Encoding";

/// The value of [`CONTENT_ENCODING`] for a gzip-compressed payload.
pub const CONTENT_ENCODING_GZIP: &str = "gzip";

/// Schema version of the payload (decimal, see [`crate::SCHEMA_VERSION`]).
pub const SCHEMA_VERSION: &str = "Proxbalance-Schema-Version";

/// Fully qualified protobuf message name of the payload (e.g. `proxbalance.v1.NodeSnapshot`).
pub const MESSAGE_TYPE: &str = "Proxbalance-Message-Type";

/// Escapes one name for use inside a message id: every byte outside RFC 3986's unreserved
/// characters (`A–Z a–z 0–9 - . _ ~`) is written as `%XX` (upper-case hex), so the result
/// never contains `:`, `%` only starts an escape, and distinct names give distinct parts.
pub fn id_part(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The id of one node's snapshot in one cycle: `snapshot:<cluster>:<node>:<cycle>`.
pub fn snapshot_msg_id(cluster: &str, node: &str, cycle: u64) -> String {
    format!("snapshot:{}:{}:{cycle}", id_part(cluster), id_part(node))
}

/// The id of one node's history: `history:<cluster>:<node>:<collected_at_unix_ms>`.
pub fn history_msg_id(cluster: &str, node: &str, collected_at_unix_ms: i64) -> String {
    format!(
        "history:{}:{}:{collected_at_unix_ms}",
        id_part(cluster),
        id_part(node)
    )
}

/// The id of a cluster's status of one cycle: `cluster:<cluster>:<cycle>`.
pub fn cluster_status_msg_id(cluster: &str, cycle: u64) -> String {
    format!("cluster:{}:{cycle}", id_part(cluster))
}

/// The id of an overload transition:
/// `overload:<cluster>:<node>:<reason>:<state>:<since_unix_ms>` (`reason` and `state` are the
/// words of the event, e.g. `cpu` and `raised`). Every replica computes the same id for the same
/// transition, so JetStream stores it once.
pub fn overload_msg_id(
    cluster: &str,
    node: &str,
    reason: &str,
    state: &str,
    since_unix_ms: i64,
) -> String {
    format!(
        "overload:{}:{}:{}:{}:{since_unix_ms}",
        id_part(cluster),
        id_part(node),
        id_part(reason),
        id_part(state)
    )
}

/// The id of the recommendations computed for one cycle: `recommendations:<cluster>:<cycle>`.
pub fn recommendations_msg_id(cluster: &str, cycle: u64) -> String {
    format!("recommendations:{}:{cycle}", id_part(cluster))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reverses [`id_part`] (tests only: ids are never parsed by the services).
    fn unescape(part: &str) -> Option<String> {
        let bytes = part.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = part.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).ok()
    }

    #[test]
    fn msg_ids_have_the_documented_shape() {
        assert_eq!(snapshot_msg_id("prod", "pve1", 42), "snapshot:prod:pve1:42");
        assert_eq!(history_msg_id("prod", "pve1", 7), "history:prod:pve1:7");
        assert_eq!(cluster_status_msg_id("prod", 3), "cluster:prod:3");
        assert_eq!(
            overload_msg_id("prod", "pve1", "cpu", "raised", 9),
            "overload:prod:pve1:cpu:raised:9"
        );
        assert_eq!(recommendations_msg_id("prod", 5), "recommendations:prod:5");
        assert_eq!(
            snapshot_msg_id("eu.west:1%", "nœud a", 1),
            "snapshot:eu.west%3A1%25:n%C5%93ud%20a:1"
        );
    }

    #[test]
    fn a_node_named_cluster_or_history_has_ids_of_its_own() {
        // The defect: `<cluster>:cluster:<cycle>` was both the status id and the snapshot id
        // of a node named `cluster`, so JetStream dropped the status as a duplicate.
        for node in ["cluster", "history"] {
            let snapshot = snapshot_msg_id("prod", node, 42);
            assert_ne!(snapshot, cluster_status_msg_id("prod", 42));
            assert_ne!(snapshot, history_msg_id("prod", node, 42));
        }
        // Names with the separator cannot forge another message's id either.
        assert_ne!(
            snapshot_msg_id("a:b", "c", 1),
            snapshot_msg_id("a", "b:c", 1)
        );
        assert_ne!(
            cluster_status_msg_id("a:1", 2),
            snapshot_msg_id("a", "1", 2)
        );
    }

    proptest! {
        /// Every id splits into its kind and exactly its parts, each unescaping to the name it
        /// was made from: the mapping from message to id is injective.
        #[test]
        fn ids_split_back_into_their_parts(cluster in any::<String>(), node in any::<String>(),
                                            reason in any::<String>(), n in any::<u64>(), t in any::<i64>()) {
            for part in [&cluster, &node, &reason] {
                let escaped = id_part(part);
                prop_assert!(!escaped.contains(':'));
                prop_assert!(escaped.bytes().all(|b| b.is_ascii_graphic()));
                prop_assert_eq!(unescape(&escaped), Some(part.clone()));
            }
            let cases = [
                (snapshot_msg_id(&cluster, &node, n), vec!["snapshot".to_owned(), cluster.clone(), node.clone(), n.to_string()]),
                (history_msg_id(&cluster, &node, t), vec!["history".to_owned(), cluster.clone(), node.clone(), t.to_string()]),
                (cluster_status_msg_id(&cluster, n), vec!["cluster".to_owned(), cluster.clone(), n.to_string()]),
                (overload_msg_id(&cluster, &node, &reason, "raised", t),
                    vec!["overload".to_owned(), cluster.clone(), node.clone(), reason.clone(), "raised".to_owned(), t.to_string()]),
                (recommendations_msg_id(&cluster, n), vec!["recommendations".to_owned(), cluster.clone(), n.to_string()]),
            ];
            for (id, parts) in cases {
                let split: Vec<Option<String>> = id.split(':').map(unescape).collect();
                let expected: Vec<Option<String>> = parts.into_iter().map(Some).collect();
                prop_assert_eq!(split, expected);
            }
        }
    }
}
