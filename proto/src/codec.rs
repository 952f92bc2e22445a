//! Encoding and decoding of the protobuf payloads, with a typed error.

use prost::Message;

use crate::SCHEMA_VERSION;
use crate::v1::{ClusterStatus, NodeHistory, NodeSnapshot};

/// Largest payload [`decode`] accepts (8 MiB); NATS' default maximum is 1 MiB.
pub const MAX_PAYLOAD_BYTES: usize = 8 * 1024 * 1024;

/// Why a payload could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The bytes are not a valid encoding of the expected message.
    #[error("cannot decode {message}: {source}")]
    Decode {
        /// Fully qualified message name that was expected.
        message: &'static str,
        /// The protobuf error.
        #[source]
        source: prost::DecodeError,
    },
    /// The payload is larger than [`MAX_PAYLOAD_BYTES`].
    #[error("{message}: payload of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Fully qualified message name that was expected.
        message: &'static str,
        /// Length of the payload.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The message's `schema_version` is not one this build understands.
    #[error("{message}.schema_version: expected {expected}, found {found}")]
    UnsupportedSchemaVersion {
        /// Fully qualified message name.
        message: &'static str,
        /// Version found in the payload.
        found: u32,
        /// Version this build understands.
        expected: u32,
    },
}

/// Encodes a message into a new buffer. Encoding into a growable buffer cannot fail.
pub fn encode<M: Message>(message: &M) -> Vec<u8> {
    message.encode_to_vec()
}

/// Decodes a message of type `M`, refusing payloads over [`MAX_PAYLOAD_BYTES`].
pub fn decode<M: Message + Default>(bytes: &[u8]) -> Result<M, CodecError> {
    if bytes.len() > MAX_PAYLOAD_BYTES {
        return Err(CodecError::TooLarge {
            message: type_name::<M>(),
            len: bytes.len(),
            max: MAX_PAYLOAD_BYTES,
        });
    }
    M::decode(bytes).map_err(|source| CodecError::Decode {
        message: type_name::<M>(),
        source,
    })
}

/// The short Rust type name of `M` (e.g. `NodeSnapshot`), used in error messages.
fn type_name<M>() -> &'static str {
    let full = std::any::type_name::<M>();
    full.rsplit("::").next().unwrap_or(full)
}

fn check_version(message: &'static str, found: u32) -> Result<(), CodecError> {
    if found == SCHEMA_VERSION {
        Ok(())
    } else {
        Err(CodecError::UnsupportedSchemaVersion {
            message,
            found,
            expected: SCHEMA_VERSION,
        })
    }
}

/// Decodes a [`NodeSnapshot`] and checks its schema version.
pub fn decode_snapshot(bytes: &[u8]) -> Result<NodeSnapshot, CodecError> {
    let snapshot: NodeSnapshot = decode(bytes)?;
    check_version("NodeSnapshot", snapshot.schema_version)?;
    Ok(snapshot)
}

/// Decodes a [`NodeHistory`] and checks its schema version.
pub fn decode_history(bytes: &[u8]) -> Result<NodeHistory, CodecError> {
    let history: NodeHistory = decode(bytes)?;
    check_version("NodeHistory", history.schema_version)?;
    Ok(history)
}

/// Decodes a [`ClusterStatus`] and checks its schema version.
pub fn decode_cluster_status(bytes: &[u8]) -> Result<ClusterStatus, CodecError> {
    let status: ClusterStatus = decode(bytes)?;
    check_version("ClusterStatus", status.schema_version)?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Guest, GuestKind, NodeStatus};
    use proptest::prelude::*;

    fn sample() -> NodeSnapshot {
        NodeSnapshot {
            schema_version: SCHEMA_VERSION,
            cluster: "prod".into(),
            node: "pve1".into(),
            cycle: 7,
            observed_at_unix_ms: 1_764_230_400_000,
            status: NodeStatus::Online as i32,
            iowait_fraction: Some(0.35),
            committed_mem_bytes: 3 << 30,
            mem_total_bytes: 2 << 30,
            overcommit_ratio: 1.5,
            guests: vec![Guest {
                vmid: 101,
                kind: GuestKind::Qemu as i32,
                name: "web1".into(),
                tags: vec!["prod".into()],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn snapshot_round_trips() {
        let s = sample();
        let back = decode_snapshot(&encode(&s)).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn wrong_schema_version_is_rejected_with_the_field() {
        let mut s = sample();
        s.schema_version = 99;
        let err = decode_snapshot(&encode(&s)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "NodeSnapshot.schema_version: expected 1, found 99"
        );
    }

    #[test]
    fn garbage_is_a_decode_error() {
        let err = decode::<NodeSnapshot>(&[0xff, 0xff, 0xff]).unwrap_err();
        assert!(
            matches!(
                err,
                CodecError::Decode {
                    message: "NodeSnapshot",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn oversized_payload_is_refused() {
        let big = vec![0u8; MAX_PAYLOAD_BYTES + 1];
        let err = decode::<NodeSnapshot>(&big).unwrap_err();
        assert!(matches!(err, CodecError::TooLarge { len, .. } if len == MAX_PAYLOAD_BYTES + 1));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_snapshot(&bytes);
            let _ = decode_history(&bytes);
            let _ = decode_cluster_status(&bytes);
        }

        #[test]
        fn arbitrary_snapshot_round_trips(cluster in ".{0,20}", node in ".{0,20}", cycle in any::<u64>(),
                                          ratio in -1e9f64..1e9, iow in proptest::option::of(0f64..1.0)) {
            let s = NodeSnapshot { schema_version: SCHEMA_VERSION, cluster, node, cycle,
                overcommit_ratio: ratio, iowait_fraction: iow, ..Default::default() };
            prop_assert_eq!(decode_snapshot(&encode(&s)).unwrap(), s);
        }
    }
}
