//! The cached recommendation set of each cluster: the full set as messages and the
//! `GetRecommendationsResponse` encoded once in both views, with a generation that increases
//! when the moves change.

use std::collections::BTreeMap;
use std::sync::Arc;

use proxbalance_engine as engine;
use proxbalance_proto::v1 as pb;

use super::State;
use crate::convert;

/// The encoded `GetRecommendationsResponse` of a cached set (`computed_fresh` false), written
/// field by field so that the set, up to a megabyte of messages, is not cloned into a response
/// message first.
fn cached_response(set: &pb::RecommendationSet, generation: u64) -> prost::bytes::Bytes {
    use prost::Message;
    // Field numbers of `GetRecommendationsResponse` (recommender.proto).
    const SET: u32 = 1;
    const GENERATION: u32 = 3;
    let mut buf = Vec::with_capacity(set.encoded_len() + 16);
    prost::encoding::message::encode(SET, set, &mut buf);
    if generation != 0 {
        prost::encoding::uint64::encode(GENERATION, &generation, &mut buf);
    }
    buf.into()
}

/// A cached recommendation set. Only the full set is kept as messages; its basic view
/// ([`convert::basic_view`]) is kept encoded, and built again when a watcher needs it.
#[derive(Debug, Clone)]
pub struct Cached {
    /// The set, converted once for gRPC.
    pub full: Arc<pb::RecommendationSet>,
    /// Increases with every change of the moves.
    pub generation: u64,
    /// The collection cycle the set was computed on.
    pub cycle: u64,
    /// The `GetRecommendationsResponse` for this set in the full and in the basic view,
    /// encoded once: served as they are to every request without overrides, so a busy
    /// recommender does not re-encode the same megabyte.
    pub encoded_full: prost::bytes::Bytes,
    /// See `encoded_full`.
    pub encoded_basic: prost::bytes::Bytes,
}

impl Cached {
    /// The encoded `GetRecommendationsResponse` in the full or the basic view.
    pub fn encoded(&self, full: bool) -> &prost::bytes::Bytes {
        if full {
            &self.encoded_full
        } else {
            &self.encoded_basic
        }
    }
}

impl State {
    /// Caches a freshly computed set and returns the change event (without the set: its views
    /// are in [`State::cached`]), with `true` when its moves differ from the cached ones (the
    /// first set of a cluster always counts as a change).
    pub fn store_set(
        &mut self,
        set: engine::RecommendationSet,
        at_ms: i64,
        cycle: u64,
    ) -> (pb::RecommendationsChanged, bool) {
        let c = self.clusters.entry(set.cluster.clone()).or_default();
        let full = Arc::new(convert::set_to_proto(&set));
        let moves = |s: &pb::RecommendationSet| -> BTreeMap<u32, (String, String)> {
            s.recommendations
                .iter()
                .map(|r| (r.vmid, (r.source_node.clone(), r.target_node.clone())))
                .collect()
        };
        let new_moves = moves(&full);
        let (old_moves, generation) = match &c.cached {
            Some(old) => (Some(moves(&old.full)), old.generation),
            None => (None, 0),
        };
        let changed = old_moves.as_ref() != Some(&new_moves);
        let generation = if changed { generation + 1 } else { generation };
        let event = {
            let old = if changed {
                old_moves.unwrap_or_default()
            } else {
                new_moves.clone()
            };
            pb::RecommendationsChanged {
                cluster: set.cluster.clone(),
                at_unix_ms: at_ms,
                generation,
                added_vmids: new_moves
                    .keys()
                    .filter(|v| !old.contains_key(v))
                    .copied()
                    .collect(),
                removed_vmids: old
                    .keys()
                    .filter(|v| !new_moves.contains_key(v))
                    .copied()
                    .collect(),
                changed_vmids: new_moves
                    .iter()
                    .filter(|(v, m)| old.get(v).is_some_and(|o| o != *m))
                    .map(|(v, _)| *v)
                    .collect(),
                recommendations: None,
                cycle,
            }
        };
        c.cached = Some(Cached {
            encoded_full: cached_response(&full, generation),
            encoded_basic: cached_response(&convert::basic_view(&full), generation),
            full,
            generation,
            cycle,
        });
        (event, changed)
    }

    /// The cached set of a cluster.
    pub fn cached(&self, cluster: &str) -> Option<&Cached> {
        self.clusters.get(cluster)?.cached.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn store_set_reports_changes_only_when_moves_differ() {
        let mut st = State::new(settings());
        let cluster = engine::synthetic::cluster_view(6, 60, 3)
            .validate()
            .unwrap();
        let set = engine::plan(&cluster, None);
        let (e1, changed) = st.store_set(set.clone(), 1, 1);
        assert!(changed);
        assert_eq!(e1.generation, 1);
        assert_eq!(e1.cycle, 1);
        assert_eq!(e1.added_vmids.len(), set.recommendations.len());
        let (same, changed) = st.store_set(set.clone(), 2, 2);
        assert!(!changed);
        assert_eq!((same.generation, same.cycle), (1, 2));
        assert!(same.added_vmids.is_empty() && same.removed_vmids.is_empty());
        let mut fewer = set.clone();
        let gone = fewer.recommendations.pop().unwrap().vmid;
        let (e2, changed) = st.store_set(fewer, 3, 3);
        assert!(changed);
        assert_eq!(e2.generation, 2);
        assert_eq!(e2.removed_vmids, vec![gone]);
        assert!(e2.added_vmids.is_empty());
        assert_eq!(st.cached(&set.cluster).unwrap().generation, 2);
    }

    #[test]
    fn cached_responses_decode_to_the_response_message() {
        let cluster = engine::synthetic::cluster_view(6, 60, 3)
            .validate()
            .unwrap();
        let set = convert::set_to_proto(&engine::plan(&cluster, None));
        for generation in [0, 1, u64::MAX] {
            let bytes = cached_response(&set, generation);
            let expected = pb::GetRecommendationsResponse {
                set: Some(set.clone()),
                computed_fresh: false,
                generation,
            };
            assert_eq!(
                <pb::GetRecommendationsResponse as prost::Message>::decode(bytes.clone()).unwrap(),
                expected
            );
            assert_eq!(bytes, prost::Message::encode_to_vec(&expected));
        }
    }
}
