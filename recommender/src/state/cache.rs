//! The cached recommendation set of each cluster: the full set as messages and both views
//! encoded once, with a generation that increases when the moves change. Answers and watch
//! messages are written around the encoded set ([`Encoded`]), never by cloning it.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use prost::Message as _;
use prost::bytes::Bytes;
use proxbalance_engine as engine;
use proxbalance_proto::v1 as pb;

use super::State;
use crate::convert;

/// An encoded message in pieces, sent one after the other: the set's bytes, shared by every
/// answer and watcher, are not copied into a buffer per answer.
pub type Encoded = Vec<Bytes>;

/// The key and length of a length-delimited field `tag` holding `len` bytes.
fn field_head(tag: u32, len: usize) -> Bytes {
    let mut head = Vec::with_capacity(8);
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, &mut head);
    prost::encoding::encode_varint(len as u64, &mut head);
    head.into()
}

/// The encoded `GetRecommendationsResponse` of `set` (the encoded set message) with the
/// given generation, data time and age (`computed_fresh` false): the set's bytes are shared,
/// not copied.
pub fn encoded_response(set: &Bytes, generation: u64, data_at_ms: i64, age_ms: i64) -> Encoded {
    // Field numbers of `GetRecommendationsResponse` (recommender.proto).
    const SET: u32 = 1;
    const GENERATION: u32 = 3;
    const DATA_AT: u32 = 4;
    const AGE: u32 = 5;
    let mut tail = Vec::with_capacity(32);
    if generation != 0 {
        prost::encoding::uint64::encode(GENERATION, &generation, &mut tail);
    }
    if data_at_ms != 0 {
        prost::encoding::int64::encode(DATA_AT, &data_at_ms, &mut tail);
    }
    if age_ms != 0 {
        prost::encoding::int64::encode(AGE, &age_ms, &mut tail);
    }
    vec![field_head(SET, set.len()), set.clone(), tail.into()]
}

/// The encoded `RecommendationsChanged` of `event` (whose `recommendations` is empty) carrying
/// `set` (the encoded set message) as its `recommendations`.
pub fn encoded_change(event: &pb::RecommendationsChanged, set: &Bytes) -> Encoded {
    // Field number of `RecommendationsChanged.recommendations` (events.proto).
    const RECOMMENDATIONS: u32 = 7;
    debug_assert!(event.recommendations.is_none());
    vec![
        event.encode_to_vec().into(),
        field_head(RECOMMENDATIONS, set.len()),
        set.clone(),
    ]
}

/// A cached recommendation set. The full set is kept as messages (its moves are compared with
/// the next set's); both views are kept encoded, and every answer and watch message is built
/// from those bytes.
#[derive(Debug)]
pub struct Cached {
    /// The set, converted once for gRPC.
    pub full: Arc<pb::RecommendationSet>,
    /// Increases with every change of the moves.
    pub generation: u64,
    /// The collection cycle the set was computed on.
    pub cycle: u64,
    /// The newest snapshot the set was computed from (the data's own clock), unix ms: what an
    /// answer's age is measured from.
    pub data_at_ms: i64,
    /// The set message in the full view, encoded once.
    pub set_full: Bytes,
    /// The set message in the basic view ([`convert::basic_view`]), encoded once.
    pub set_basic: Bytes,
    /// The set as JSON (what `proxbalance plan --format json` prints), encoded on first use
    /// by the dashboard and kept with the set.
    json: OnceLock<Bytes>,
}

impl Cached {
    /// The set as JSON: the engine's form of the full set (what the CLI prints), encoded once
    /// per set on first use and shared by every later answer.
    pub fn set_json(&self) -> Result<Bytes, convert::ConvertError> {
        if let Some(json) = self.json.get() {
            return Ok(json.clone());
        }
        let set = convert::set_from_proto(&self.full)?;
        let json: Bytes = serde_json::to_vec(&set)
            .map_err(|e| convert::ConvertError {
                field: "set".into(),
                message: e.to_string(),
            })?
            .into();
        Ok(self.json.get_or_init(|| json).clone())
    }

    /// Whether [`Cached::set_json`] has been encoded already.
    pub fn has_json(&self) -> bool {
        self.json.get().is_some()
    }

    /// The encoded set in the full or the basic view.
    pub fn set_bytes(&self, full: bool) -> &Bytes {
        if full {
            &self.set_full
        } else {
            &self.set_basic
        }
    }

    /// The encoded `GetRecommendationsResponse` in the full or the basic view, `age_ms` old.
    pub fn response(&self, full: bool, age_ms: i64) -> Encoded {
        encoded_response(
            self.set_bytes(full),
            self.generation,
            self.data_at_ms,
            age_ms,
        )
    }

    /// The first message of a watch: the set as a change from nothing (every move added).
    pub fn watch_start(&self, at_ms: i64, full: bool) -> Encoded {
        let event = pb::RecommendationsChanged {
            cluster: self.full.cluster.clone(),
            at_unix_ms: at_ms,
            generation: self.generation,
            added_vmids: self.full.recommendations.iter().map(|r| r.vmid).collect(),
            cycle: self.cycle,
            ..Default::default()
        };
        encoded_change(&event, self.set_bytes(full))
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
        data_at_ms: i64,
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
        c.cached = Some(Arc::new(Cached {
            set_full: full.encode_to_vec().into(),
            set_basic: convert::basic_view(&full).encode_to_vec().into(),
            full,
            generation,
            cycle,
            data_at_ms,
            json: OnceLock::new(),
        }));
        (event, changed)
    }

    /// Keeps the placement rules a cluster's set is planned with (for `GetClusterState`).
    pub fn store_rules(&mut self, cluster: &str, rules: Vec<pb::PlacementRule>) {
        if let Some(c) = self.clusters.get_mut(cluster) {
            c.rules = rules;
        }
    }

    /// The cached set of a cluster.
    pub fn cached(&self, cluster: &str) -> Option<&Arc<Cached>> {
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
        let (e1, changed) = st.store_set(set.clone(), 1, 1, 1);
        assert!(changed);
        assert_eq!(e1.generation, 1);
        assert_eq!(e1.cycle, 1);
        assert_eq!(e1.added_vmids.len(), set.recommendations.len());
        let (same, changed) = st.store_set(set.clone(), 2, 2, 2);
        assert!(!changed);
        assert_eq!((same.generation, same.cycle), (1, 2));
        assert!(same.added_vmids.is_empty() && same.removed_vmids.is_empty());
        let mut fewer = set.clone();
        let gone = fewer.recommendations.pop().unwrap().vmid;
        let (e2, changed) = st.store_set(fewer, 3, 3, 3);
        assert!(changed);
        assert_eq!(e2.generation, 2);
        assert_eq!(e2.removed_vmids, vec![gone]);
        assert!(e2.added_vmids.is_empty());
        assert_eq!(st.cached(&set.cluster).unwrap().generation, 2);
    }

    #[test]
    fn the_json_of_a_set_is_what_the_cli_prints_and_is_encoded_once() {
        let mut st = State::new(settings());
        let cluster = engine::synthetic::cluster_view(6, 60, 3)
            .validate()
            .unwrap();
        let set = engine::plan(&cluster, None);
        st.store_set(set.clone(), 1, 1, 1);
        let cached = st.cached(&set.cluster).unwrap().clone();
        assert!(!cached.has_json());
        let json = cached.set_json().unwrap();
        assert!(cached.has_json());
        assert_eq!(json.as_ref(), serde_json::to_vec(&set).unwrap().as_slice());
        assert_eq!(cached.set_json().unwrap().as_ptr(), json.as_ptr());
    }

    #[test]
    fn encoded_answers_decode_to_their_messages() {
        let cluster = engine::synthetic::cluster_view(6, 60, 3)
            .validate()
            .unwrap();
        let set = convert::set_to_proto(&engine::plan(&cluster, None));
        let set_bytes: Bytes = set.encode_to_vec().into();
        let join = |e: Encoded| -> Vec<u8> { e.concat() };
        for (generation, data_at_ms, age_ms) in [(0, 0, 0), (1, T0, 1500), (u64::MAX, -1, i64::MAX)]
        {
            let bytes = join(encoded_response(&set_bytes, generation, data_at_ms, age_ms));
            let expected = pb::GetRecommendationsResponse {
                set: Some(set.clone()),
                computed_fresh: false,
                generation,
                data_at_unix_ms: data_at_ms,
                age_ms,
            };
            assert_eq!(
                pb::GetRecommendationsResponse::decode(bytes.as_slice()).unwrap(),
                expected
            );
            assert_eq!(bytes, expected.encode_to_vec());
        }
        let event = pb::RecommendationsChanged {
            cluster: "c".into(),
            at_unix_ms: T0,
            generation: 3,
            added_vmids: vec![100, 200],
            cycle: 7,
            ..Default::default()
        };
        let bytes = join(encoded_change(&event, &set_bytes));
        assert_eq!(
            pb::RecommendationsChanged::decode(bytes.as_slice()).unwrap(),
            pb::RecommendationsChanged {
                recommendations: Some(set.clone()),
                ..event
            }
        );
    }
}
