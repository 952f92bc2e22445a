//! Encoding and decoding of the protobuf payloads, with a typed error.

use prost::Message;

use crate::SCHEMA_VERSION;
use crate::v1::{ClusterStatus, NodeHistory, NodeSnapshot};

/// Largest payload [`decode`] accepts (8 MiB); NATS' default maximum is 1 MiB.
pub const MAX_PAYLOAD_BYTES: usize = 8 * 1024 * 1024;

/// Most guests one [`NodeSnapshot`] may list. Checked on the wire before decoding: an empty
/// guest costs 3 bytes encoded but a few hundred in memory, so without this bound an 8 MiB
/// payload could make the decoder allocate about a gigabyte.
pub const MAX_GUESTS_PER_SNAPSHOT: usize = 10_000;

/// Most storages one [`NodeSnapshot`] may list (checked like the guests).
pub const MAX_STORAGES_PER_SNAPSHOT: usize = 1_000;

/// `NodeSnapshot.storages` and `NodeSnapshot.guests` field numbers (see `snapshot.proto`).
const SNAPSHOT_STORAGES_FIELD: u64 = 23;
const SNAPSHOT_GUESTS_FIELD: u64 = 24;

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
    /// A repeated field holds more entries than the limit (counted before decoding).
    #[error("{message}.{field}: {count} entries exceed the limit of {max}")]
    TooMany {
        /// Fully qualified message name.
        message: &'static str,
        /// The repeated field.
        field: &'static str,
        /// Entries found on the wire.
        count: usize,
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

fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Counts the top-level occurrences of each of `fields` in a protobuf encoding without
/// decoding it. Stops at the first malformed key or length (the decoder reports those); the
/// counts found so far are returned.
pub fn count_top_level_fields<const N: usize>(bytes: &[u8], fields: [u64; N]) -> [usize; N] {
    let mut counts = [0usize; N];
    let mut at = 0usize;
    while at < bytes.len() {
        let Some(key) = read_varint(bytes, &mut at) else {
            break;
        };
        let skip = match key & 7 {
            0 => read_varint(bytes, &mut at).map(|_| 0),
            1 => Some(8),
            2 => read_varint(bytes, &mut at).and_then(|l| usize::try_from(l).ok()),
            5 => Some(4),
            _ => None,
        };
        let Some(skip) = skip else { break };
        if let Some(i) = fields.iter().position(|f| *f == key >> 3) {
            counts[i] += 1;
        }
        match at.checked_add(skip) {
            Some(next) if next <= bytes.len() => at = next,
            _ => break,
        }
    }
    counts
}

/// Decodes a [`NodeSnapshot`] and checks its schema version. The guest and storage counts
/// are checked on the wire first ([`MAX_GUESTS_PER_SNAPSHOT`], [`MAX_STORAGES_PER_SNAPSHOT`]).
pub fn decode_snapshot(bytes: &[u8]) -> Result<NodeSnapshot, CodecError> {
    if bytes.len() <= MAX_PAYLOAD_BYTES {
        let [storages, guests] =
            count_top_level_fields(bytes, [SNAPSHOT_STORAGES_FIELD, SNAPSHOT_GUESTS_FIELD]);
        for (field, count, max) in [
            ("guests", guests, MAX_GUESTS_PER_SNAPSHOT),
            ("storages", storages, MAX_STORAGES_PER_SNAPSHOT),
        ] {
            if count > max {
                return Err(CodecError::TooMany {
                    message: "NodeSnapshot",
                    field,
                    count,
                    max,
                });
            }
        }
    }
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

    #[test]
    fn too_many_guests_are_refused_before_decoding() {
        let mut s = sample();
        s.guests = vec![Guest::default(); MAX_GUESTS_PER_SNAPSHOT + 1];
        let bytes = encode(&s);
        assert_eq!(
            count_top_level_fields(&bytes, [SNAPSHOT_GUESTS_FIELD, SNAPSHOT_STORAGES_FIELD]),
            [MAX_GUESTS_PER_SNAPSHOT + 1, 0]
        );
        let err = decode_snapshot(&bytes).unwrap_err();
        assert_eq!(
            err.to_string(),
            "NodeSnapshot.guests: 10001 entries exceed the limit of 10000"
        );
        s.guests.truncate(MAX_GUESTS_PER_SNAPSHOT);
        assert_eq!(
            decode_snapshot(&encode(&s)).unwrap().guests.len(),
            MAX_GUESTS_PER_SNAPSHOT
        );
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
