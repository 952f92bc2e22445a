//! NATS subjects of the wire contract, with reversible token sanitizing.
//!
//! | subject | message |
//! |---|---|
//! | `<prefix>.v1.snapshot.<cluster>.<node>` | `NodeSnapshot` |
//! | `<prefix>.v1.history.<cluster>.<node>` | `NodeHistory` |
//! | `<prefix>.v1.cluster.<cluster>` | `ClusterStatus` |
//! | `<prefix>.v1.event.overload.<cluster>.<node>` | `OverloadEvent` |
//! | `<prefix>.v1.event.recommendations.<cluster>` | `RecommendationsChanged` |
//!
//! Cluster and node names become single NATS tokens through [`encode_token`]: the bytes of
//! `.`, `*`, `>`, `%`, whitespace and control characters are written as `%XX` (upper-case hex),
//! and an empty name becomes `%_`. [`decode_token`] reverses it exactly, so
//! `decode_token(&encode_token(s)) == Ok(s)` for every string.

use std::fmt::Write as _;

/// The default subject prefix.
pub const DEFAULT_PREFIX: &str = "proxbalance";

/// Default stream holding snapshots and cluster statuses.
pub const SNAPSHOTS_STREAM: &str = "PROXBALANCE_SNAPSHOTS";
/// Default stream holding the latest history per node.
pub const HISTORY_STREAM: &str = "PROXBALANCE_HISTORY";
/// Default stream holding overload and recommendation events.
pub const EVENTS_STREAM: &str = "PROXBALANCE_EVENTS";

/// Token an empty name is encoded to.
const EMPTY_TOKEN: &str = "%_";

/// Why a prefix, token or subject was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// The prefix is empty, has an empty token, or contains a wildcard or whitespace.
    #[error(
        "subject prefix {prefix:?}: expected dot-separated non-empty tokens without `*`, `>` or whitespace"
    )]
    InvalidPrefix {
        /// The refused prefix.
        prefix: String,
    },
    /// A token is not a valid encoding produced by [`encode_token`].
    #[error("subject token {token:?}: {reason}")]
    InvalidToken {
        /// The refused token.
        token: String,
        /// What was expected.
        reason: &'static str,
    },
    /// The subject does not have the shape of any proxbalance subject under this prefix.
    #[error("subject {subject:?}: expected {expected}")]
    UnknownSubject {
        /// The refused subject.
        subject: String,
        /// What was expected.
        expected: String,
    },
}

fn must_escape(c: char) -> bool {
    matches!(c, '.' | '*' | '>' | '%') || c.is_whitespace() || c.is_control()
}

/// Encodes a cluster or node name into one NATS subject token (reversible, see module docs).
pub fn encode_token(name: &str) -> String {
    if name.is_empty() {
        return EMPTY_TOKEN.to_owned();
    }
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if must_escape(c) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                // Writing to a String cannot fail.
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes a token produced by [`encode_token`] back into the original name.
///
/// Refuses anything [`encode_token`] never produces (lower-case hex, a bare `%`, an escaped
/// character that needs no escaping, invalid UTF-8), so the mapping is a bijection.
pub fn decode_token(token: &str) -> Result<String, SubjectError> {
    let invalid = |reason| SubjectError::InvalidToken {
        token: token.to_owned(),
        reason,
    };
    if token == EMPTY_TOKEN {
        return Ok(String::new());
    }
    if token.is_empty() {
        return Err(invalid("expected a non-empty token"));
    }
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_value);
            let lo = bytes.get(i + 2).copied().and_then(hex_value);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => {
                    return Err(invalid(
                        "expected `%` followed by two upper-case hex digits",
                    ));
                }
            }
            i += 3;
        } else {
            if matches!(b, b'.' | b'*' | b'>') || b.is_ascii_whitespace() {
                return Err(invalid("expected no `.`, `*`, `>` or whitespace"));
            }
            out.push(b);
            i += 1;
        }
    }
    let decoded = String::from_utf8(out).map_err(|_| invalid("escapes do not form UTF-8"))?;
    // Canonical form only: re-encoding must give the same token.
    if encode_token(&decoded) != token {
        return Err(invalid("expected the canonical encoding"));
    }
    Ok(decoded)
}

/// A parsed proxbalance subject with its names decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// `<prefix>.v1.snapshot.<cluster>.<node>`
    Snapshot {
        /// Cluster name.
        cluster: String,
        /// Node name.
        node: String,
    },
    /// `<prefix>.v1.history.<cluster>.<node>`
    History {
        /// Cluster name.
        cluster: String,
        /// Node name.
        node: String,
    },
    /// `<prefix>.v1.cluster.<cluster>`
    ClusterStatus {
        /// Cluster name.
        cluster: String,
    },
    /// `<prefix>.v1.event.overload.<cluster>.<node>`
    Overload {
        /// Cluster name.
        cluster: String,
        /// Node name.
        node: String,
    },
    /// `<prefix>.v1.event.recommendations.<cluster>`
    Recommendations {
        /// Cluster name.
        cluster: String,
    },
}

/// Whether `prefix` is one or more dot-separated non-empty tokens without wildcards (`*`,
/// `>`), whitespace or control characters: a literal start of subjects (a subject prefix, an
/// inbox prefix).
pub fn is_literal_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.split('.').all(|t| {
            !t.is_empty()
                && !t
                    .chars()
                    .any(|c| matches!(c, '*' | '>') || c.is_whitespace() || c.is_control())
        })
}

/// Builds and parses the subjects of one deployment (one prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Default for Subjects {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }
}

impl Subjects {
    /// Subjects under `prefix` (one or more dot-separated tokens, e.g. `proxbalance` or `lab.pb`).
    pub fn new(prefix: &str) -> Result<Self, SubjectError> {
        if is_literal_prefix(prefix) {
            Ok(Self {
                prefix: prefix.to_owned(),
            })
        } else {
            Err(SubjectError::InvalidPrefix {
                prefix: prefix.to_owned(),
            })
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>.v1.snapshot.<cluster>.<node>`
    pub fn snapshot(&self, cluster: &str, node: &str) -> String {
        format!(
            "{}.v1.snapshot.{}.{}",
            self.prefix,
            encode_token(cluster),
            encode_token(node)
        )
    }

    /// `<prefix>.v1.history.<cluster>.<node>`
    pub fn history(&self, cluster: &str, node: &str) -> String {
        format!(
            "{}.v1.history.{}.{}",
            self.prefix,
            encode_token(cluster),
            encode_token(node)
        )
    }

    /// `<prefix>.v1.cluster.<cluster>`
    pub fn cluster_status(&self, cluster: &str) -> String {
        format!("{}.v1.cluster.{}", self.prefix, encode_token(cluster))
    }

    /// `<prefix>.v1.event.overload.<cluster>.<node>`
    pub fn overload(&self, cluster: &str, node: &str) -> String {
        format!(
            "{}.v1.event.overload.{}.{}",
            self.prefix,
            encode_token(cluster),
            encode_token(node)
        )
    }

    /// `<prefix>.v1.event.recommendations.<cluster>`
    pub fn recommendations(&self, cluster: &str) -> String {
        format!(
            "{}.v1.event.recommendations.{}",
            self.prefix,
            encode_token(cluster)
        )
    }

    /// Every snapshot: `<prefix>.v1.snapshot.>`
    pub fn all_snapshots(&self) -> String {
        format!("{}.v1.snapshot.>", self.prefix)
    }

    /// Every snapshot of one cluster: `<prefix>.v1.snapshot.<cluster>.*`
    pub fn cluster_snapshots(&self, cluster: &str) -> String {
        format!("{}.v1.snapshot.{}.*", self.prefix, encode_token(cluster))
    }

    /// Every history: `<prefix>.v1.history.>`
    pub fn all_history(&self) -> String {
        format!("{}.v1.history.>", self.prefix)
    }

    /// Every cluster status: `<prefix>.v1.cluster.*`
    pub fn all_cluster_status(&self) -> String {
        format!("{}.v1.cluster.*", self.prefix)
    }

    /// Every event: `<prefix>.v1.event.>`
    pub fn all_events(&self) -> String {
        format!("{}.v1.event.>", self.prefix)
    }

    /// Every overload event: `<prefix>.v1.event.overload.>`
    pub fn all_overload(&self) -> String {
        format!("{}.v1.event.overload.>", self.prefix)
    }

    /// Name of the snapshot stream: `PROXBALANCE_SNAPSHOTS` for the default prefix, otherwise
    /// the prefix upper-cased with every non-alphanumeric character replaced by `_`, then `_SNAPSHOTS`.
    pub fn snapshots_stream(&self) -> String {
        self.stream_name("SNAPSHOTS")
    }

    /// Name of the history stream (see [`Subjects::snapshots_stream`]).
    pub fn history_stream(&self) -> String {
        self.stream_name("HISTORY")
    }

    /// Name of the events stream (see [`Subjects::snapshots_stream`]).
    pub fn events_stream(&self) -> String {
        self.stream_name("EVENTS")
    }

    /// Subjects stored in the snapshot stream: snapshots and cluster statuses.
    pub fn snapshots_stream_subjects(&self) -> Vec<String> {
        vec![self.all_snapshots(), self.all_cluster_status()]
    }

    fn stream_name(&self, kind: &str) -> String {
        let base: String = self
            .prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("{base}_{kind}")
    }

    /// Parses a subject of this prefix back into its kind and decoded names.
    pub fn parse(&self, subject: &str) -> Result<Subject, SubjectError> {
        let unknown = || SubjectError::UnknownSubject {
            subject: subject.to_owned(),
            expected: format!(
                "`{}.v1.(snapshot|history).<cluster>.<node>`, `{0}.v1.cluster.<cluster>` or `{0}.v1.event.(overload.<cluster>.<node>|recommendations.<cluster>)`",
                self.prefix
            ),
        };
        let rest = subject
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix(".v1."))
            .ok_or_else(unknown)?;
        let parts: Vec<&str> = rest.split('.').collect();
        match parts.as_slice() {
            ["snapshot", c, n] => Ok(Subject::Snapshot {
                cluster: decode_token(c)?,
                node: decode_token(n)?,
            }),
            ["history", c, n] => Ok(Subject::History {
                cluster: decode_token(c)?,
                node: decode_token(n)?,
            }),
            ["cluster", c] => Ok(Subject::ClusterStatus {
                cluster: decode_token(c)?,
            }),
            ["event", "overload", c, n] => Ok(Subject::Overload {
                cluster: decode_token(c)?,
                node: decode_token(n)?,
            }),
            ["event", "recommendations", c] => Ok(Subject::Recommendations {
                cluster: decode_token(c)?,
            }),
            _ => Err(unknown()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn default_subjects_match_the_architecture() {
        let s = Subjects::default();
        assert_eq!(
            s.snapshot("prod", "pve1"),
            "proxbalance.v1.snapshot.prod.pve1"
        );
        assert_eq!(
            s.history("prod", "pve1"),
            "proxbalance.v1.history.prod.pve1"
        );
        assert_eq!(s.cluster_status("prod"), "proxbalance.v1.cluster.prod");
        assert_eq!(
            s.overload("prod", "pve1"),
            "proxbalance.v1.event.overload.prod.pve1"
        );
        assert_eq!(
            s.recommendations("prod"),
            "proxbalance.v1.event.recommendations.prod"
        );
        assert_eq!(s.all_snapshots(), "proxbalance.v1.snapshot.>");
        assert_eq!(s.snapshots_stream(), SNAPSHOTS_STREAM);
        assert_eq!(s.history_stream(), HISTORY_STREAM);
        assert_eq!(s.events_stream(), EVENTS_STREAM);
    }

    #[test]
    fn custom_prefix() {
        let s = Subjects::new("lab.pb-2").unwrap();
        assert_eq!(s.snapshot("a", "b"), "lab.pb-2.v1.snapshot.a.b");
        assert_eq!(s.snapshots_stream(), "LAB_PB_2_SNAPSHOTS");
        for bad in ["", "a..b", "a.*", "a >", ".a", "a."] {
            assert_eq!(
                Subjects::new(bad),
                Err(SubjectError::InvalidPrefix { prefix: bad.into() }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn sanitizing_examples() {
        assert_eq!(encode_token("pve1.example.com"), "pve1%2Eexample%2Ecom");
        assert_eq!(encode_token("a b*c>d%"), "a%20b%2Ac%3Ed%25");
        assert_eq!(encode_token(""), "%_");
        assert_eq!(encode_token("nœud\u{a0}x"), "nœud%C2%A0x");
        assert_eq!(
            decode_token("pve1%2Eexample%2Ecom").unwrap(),
            "pve1.example.com"
        );
        assert_eq!(decode_token("%_").unwrap(), "");
    }

    #[test]
    fn non_canonical_tokens_are_refused() {
        for bad in ["", "%2e", "%", "%4", "%41", "a.b", "a*", "%FF", "a b"] {
            assert!(decode_token(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn parse_known_and_unknown_subjects() {
        let s = Subjects::default();
        assert_eq!(
            s.parse("proxbalance.v1.snapshot.prod%2Ea.pve1").unwrap(),
            Subject::Snapshot {
                cluster: "prod.a".into(),
                node: "pve1".into()
            }
        );
        assert_eq!(
            s.parse("proxbalance.v1.event.recommendations.c").unwrap(),
            Subject::Recommendations {
                cluster: "c".into()
            }
        );
        assert!(matches!(
            s.parse("other.v1.snapshot.a.b"),
            Err(SubjectError::UnknownSubject { .. })
        ));
        assert!(matches!(
            s.parse("proxbalance.v1.snapshot.a"),
            Err(SubjectError::UnknownSubject { .. })
        ));
        assert!(matches!(
            s.parse("proxbalance.v1.snapshot.a.%zz"),
            Err(SubjectError::InvalidToken { .. })
        ));
    }

    proptest! {
        #[test]
        fn token_round_trip(name in any::<String>()) {
            let token = encode_token(&name);
            prop_assert!(!token.is_empty());
            prop_assert!(!token.contains(['.', '*', '>']));
            prop_assert!(!token.chars().any(char::is_whitespace));
            prop_assert_eq!(decode_token(&token).unwrap(), name);
        }

        #[test]
        fn subject_round_trip(cluster in any::<String>(), node in any::<String>()) {
            let s = Subjects::default();
            prop_assert_eq!(s.parse(&s.snapshot(&cluster, &node)).unwrap(),
                Subject::Snapshot { cluster: cluster.clone(), node: node.clone() });
            prop_assert_eq!(s.parse(&s.history(&cluster, &node)).unwrap(),
                Subject::History { cluster: cluster.clone(), node: node.clone() });
            prop_assert_eq!(s.parse(&s.overload(&cluster, &node)).unwrap(),
                Subject::Overload { cluster: cluster.clone(), node: node.clone() });
            prop_assert_eq!(s.parse(&s.cluster_status(&cluster)).unwrap(),
                Subject::ClusterStatus { cluster: cluster.clone() });
            prop_assert_eq!(s.parse(&s.recommendations(&cluster)).unwrap(),
                Subject::Recommendations { cluster });
        }

        #[test]
        fn decode_token_never_panics(token in any::<String>()) {
            if let Ok(name) = decode_token(&token) {
                prop_assert_eq!(encode_token(&name), token);
            }
        }
    }
}
