//! Encoding and decoding of the protobuf payloads, with a typed error, and the optional gzip
//! compression of NATS payloads ([`compress`], [`decompress`]).

use std::borrow::Cow;
use std::io::Read as _;

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

/// Most HA rules one [`ClusterStatus`] may carry (checked on the wire like the guests; PVE
/// clusters have tens, a group or rule per service at the very most).
pub const MAX_HA_RULES_PER_STATUS: usize = 10_000;

/// `ClusterStatus.ha_rules` field number (see `snapshot.proto`).
const STATUS_HA_RULES_FIELD: u64 = 14;

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
    /// The payload names a `Content-Encoding` this build does not know.
    #[error("Content-Encoding {encoding:?}: expected none or \"gzip\"")]
    UnknownEncoding {
        /// The header's value.
        encoding: String,
    },
    /// A gzip payload could not be inflated (corrupt, truncated, bad checksum).
    #[error("cannot inflate the gzip payload: {source}")]
    Inflate {
        /// The inflater's error.
        #[source]
        source: std::io::Error,
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

/// Payloads from this size on are worth compressing (see [`compress`]): below it gzip's
/// 18 bytes of framing eat most of the gain.
pub const COMPRESS_FROM_BYTES: usize = 1024;

/// gzips `payload` when it is at least [`COMPRESS_FROM_BYTES`] long and comes out smaller,
/// returning the bytes to send and the `Content-Encoding` to send with them
/// ([`crate::headers::CONTENT_ENCODING_GZIP`], or `None` for the payload as it was).
///
/// Why: a snapshot repeats the same field tags and words (`running`, storage names) for every
/// guest and shrinks to less than half (5,000 guests of pvesim: 597 kB → 248 kB), so a node
/// with 5,000 guests fits NATS' default `max_payload` of 1 MB with room for long names and
/// tags; a node's PVE 9 history (1,776 points, 96 kB) shrinks to 7 kB on pvesim and, its
/// values travelling at single precision, to 41 kB when every value is noise.
pub fn compress(payload: Vec<u8>) -> (Vec<u8>, Option<&'static str>) {
    if payload.len() < COMPRESS_FROM_BYTES {
        return (payload, None);
    }
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(payload.len() / 4),
        flate2::Compression::default(),
    );
    // Writing into a Vec cannot fail.
    let gzipped = std::io::Write::write_all(&mut encoder, &payload)
        .and_then(|()| encoder.finish())
        .ok();
    match gzipped {
        Some(g) if g.len() < payload.len() => (g, Some(crate::headers::CONTENT_ENCODING_GZIP)),
        _ => (payload, None),
    }
}

/// The protobuf bytes of a NATS payload whose `Content-Encoding` header is `encoding`: the
/// payload itself when there is none, the inflated payload for `gzip`. Inflating stops past
/// [`MAX_PAYLOAD_BYTES`] (a small gzip can expand a thousandfold), which is refused as
/// [`CodecError::TooLarge`].
pub fn decompress<'a>(
    encoding: Option<&str>,
    payload: &'a [u8],
) -> Result<Cow<'a, [u8]>, CodecError> {
    match encoding {
        None | Some("" | "identity") => Ok(Cow::Borrowed(payload)),
        Some(crate::headers::CONTENT_ENCODING_GZIP) => {
            let mut out =
                Vec::with_capacity(payload.len().saturating_mul(4).min(MAX_PAYLOAD_BYTES));
            flate2::read::GzDecoder::new(payload)
                .take(MAX_PAYLOAD_BYTES as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|source| CodecError::Inflate { source })?;
            if out.len() > MAX_PAYLOAD_BYTES {
                return Err(CodecError::TooLarge {
                    message: "inflated payload",
                    len: out.len(),
                    max: MAX_PAYLOAD_BYTES,
                });
            }
            Ok(Cow::Owned(out))
        }
        Some(other) => Err(CodecError::UnknownEncoding {
            encoding: other.to_owned(),
        }),
    }
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

/// Decodes a [`ClusterStatus`] and checks its schema version. The HA rule count is checked on
/// the wire first ([`MAX_HA_RULES_PER_STATUS`]).
pub fn decode_cluster_status(bytes: &[u8]) -> Result<ClusterStatus, CodecError> {
    if bytes.len() <= MAX_PAYLOAD_BYTES {
        let [rules] = count_top_level_fields(bytes, [STATUS_HA_RULES_FIELD]);
        if rules > MAX_HA_RULES_PER_STATUS {
            return Err(CodecError::TooMany {
                message: "ClusterStatus",
                field: "ha_rules",
                count: rules,
                max: MAX_HA_RULES_PER_STATUS,
            });
        }
    }
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

    #[test]
    fn too_many_ha_rules_are_refused_before_decoding() {
        let mut status = crate::v1::ClusterStatus {
            schema_version: SCHEMA_VERSION,
            ha_rules: vec![Default::default(); MAX_HA_RULES_PER_STATUS],
            ..Default::default()
        };
        let ok = decode_cluster_status(&encode(&status)).expect("at the limit");
        assert_eq!(ok.ha_rules.len(), MAX_HA_RULES_PER_STATUS);
        status.ha_rules.push(Default::default());
        let e = decode_cluster_status(&encode(&status)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "ClusterStatus.ha_rules: {} entries exceed the limit of {MAX_HA_RULES_PER_STATUS}",
                MAX_HA_RULES_PER_STATUS + 1
            )
        );
    }

    #[test]
    fn small_payloads_stay_plain_and_large_ones_are_gzipped() {
        let small = encode(&sample());
        assert!(small.len() < COMPRESS_FROM_BYTES);
        assert_eq!(compress(small.clone()), (small, None));
        let mut s = sample();
        s.guests = (0..200)
            .map(|i| Guest {
                vmid: 100 + i,
                kind: GuestKind::Qemu as i32,
                name: format!("web-{i}"),
                status: "running".into(),
                storages: vec!["ceph-vm".into()],
                ..Default::default()
            })
            .collect();
        let plain = encode(&s);
        let (gzipped, encoding) = compress(plain.clone());
        assert_eq!(encoding, Some("gzip"));
        assert!(
            gzipped.len() * 3 < plain.len(),
            "{} of {}",
            gzipped.len(),
            plain.len()
        );
        let back = decompress(encoding, &gzipped).unwrap();
        assert_eq!(decode_snapshot(&back).unwrap(), s);
        assert!(matches!(
            decompress(None, &plain).unwrap(),
            Cow::Borrowed(_)
        ));
    }

    /// A PVE 9 history (1,440 day and 336 week points) whose every value is noise, the worst
    /// case for compression, still fits a 64 KiB `max_payload` once gzipped, with its values
    /// at single precision as the collector sends them (`HistoryPoint` in `snapshot.proto`).
    #[test]
    fn a_history_of_noise_at_single_precision_fits_64_kib_gzipped() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut noise = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let single = |v: f64| Some(f64::from(v as f32));
        let mut series = |n: usize, step_ms: i64| -> Vec<crate::v1::HistoryPoint> {
            (0..n)
                .map(|i| crate::v1::HistoryPoint {
                    time_unix_ms: 1_764_230_400_000 + i as i64 * step_ms,
                    cpu_fraction: single(noise()),
                    iowait_fraction: single(noise() * 0.2),
                    mem_used_bytes: single(1e11 + noise() * 1e10),
                    mem_total_bytes: single(135_038_619_648.0),
                    load_average: single(noise() * 40.0),
                })
                .collect()
        };
        let h = NodeHistory {
            schema_version: SCHEMA_VERSION,
            cluster: "prod".into(),
            node: "pve1".into(),
            collected_at_unix_ms: 1_764_230_400_000,
            day: series(1440, 60_000),
            week: series(336, 1_800_000),
        };
        let plain = encode(&h);
        let (gzipped, encoding) = compress(plain.clone());
        assert_eq!(encoding, Some("gzip"));
        println!(
            "history of noise: {} bytes, gzipped {}",
            plain.len(),
            gzipped.len()
        );
        assert!(plain.len() > 90_000, "{}", plain.len());
        assert!(gzipped.len() < 64 * 1024 - 512, "{}", gzipped.len());
        assert_eq!(
            decode_history(&decompress(encoding, &gzipped).unwrap()).unwrap(),
            h
        );
    }

    #[test]
    fn unknown_corrupt_and_explosive_encodings_are_refused() {
        assert_eq!(
            decompress(Some("br"), b"x").unwrap_err().to_string(),
            "Content-Encoding \"br\": expected none or \"gzip\""
        );
        let err = decompress(Some("gzip"), b"not gzip at all").unwrap_err();
        assert!(matches!(err, CodecError::Inflate { .. }), "{err}");
        // 9 MiB of zeros gzip to about 9 kB: inflating stops past the 8 MiB limit.
        let (bomb, encoding) = compress(vec![0u8; MAX_PAYLOAD_BYTES + (1 << 20)]);
        assert!(bomb.len() < 16 << 10, "{}", bomb.len());
        let err = decompress(encoding, &bomb).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "inflated payload: payload of {} bytes exceeds the limit of {MAX_PAYLOAD_BYTES} bytes",
                MAX_PAYLOAD_BYTES + 1
            )
        );
    }

    proptest! {
        #[test]
        fn gzip_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let (sent, encoding) = compress(bytes.clone());
            prop_assert_eq!(decompress(encoding, &sent).unwrap().into_owned(), bytes);
        }

        #[test]
        fn decompress_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decompress(Some("gzip"), &bytes);
        }

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
