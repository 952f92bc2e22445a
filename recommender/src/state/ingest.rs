//! Applying messages: [`State::ingest`] checks a message ([`super::validate`]) and applies it;
//! a snapshot extends its node's window, a history seeds it, a cluster status records the
//! cycle's node list. It reports when a cluster's cycle is complete (its `ClusterStatus`
//! arrived, or every node the last status listed has sent this cycle's snapshot, and every
//! history the status listed was applied).

use std::collections::BTreeSet;

use proxbalance_proto::codec;
use proxbalance_proto::subjects::Subject;
use proxbalance_proto::v1 as pb;

use super::State;
use super::validate::{
    Problem, Rejection, check_match, reject, validate_history, validate_snapshot, validate_status,
};
use super::view::{history_samples, sample_of};

/// What a message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// A snapshot was applied; `completed` is set when it completed its cluster's cycle.
    Snapshot {
        cluster: String,
        observed_at_ms: i64,
        completed: Option<u64>,
    },
    /// A cluster status was applied; `completed` is set unless its cycle was already complete.
    Status {
        cluster: String,
        completed: Option<u64>,
    },
    /// A history seeded a node's windows; `completed` is set when the cycle's status was
    /// waiting for it (see [`pb::ClusterStatus::histories`]) and it was the last.
    History {
        cluster: String,
        completed: Option<u64>,
    },
    /// A message of another kind on a consumed subject (e.g. an event), or a copy of the
    /// snapshot a node last reported (same cycle: a re-publish JetStream did not de-duplicate,
    /// e.g. outside its duplicate window); nothing to do.
    Ignored,
}

/// A cycle whose status arrived before some of the histories it lists.
#[derive(Debug)]
pub(super) struct AwaitingHistories {
    cycle: u64,
    /// The status' collection time: a history at least as new belongs to the cycle.
    collected_at_ms: i64,
    nodes: BTreeSet<String>,
}

impl State {
    /// Checks and applies one message.
    pub fn ingest(&mut self, subject: &str, payload: &[u8]) -> Result<Ingested, Rejection> {
        match self.settings.subjects.parse(subject)? {
            Subject::Snapshot { cluster, node } => {
                let s = codec::decode_snapshot(payload)?;
                check_match("cluster", &cluster, &s.cluster)?;
                check_match("node", &node, &s.node)?;
                validate_snapshot(&s)?;
                if self.already_applied(&s) {
                    return Ok(Ingested::Ignored);
                }
                self.check_guests_unclaimed(&s)?;
                Ok(self.apply_snapshot(s))
            }
            Subject::History { cluster, node } => {
                let h = codec::decode_history(payload)?;
                check_match("cluster", &cluster, &h.cluster)?;
                check_match("node", &node, &h.node)?;
                validate_history(&h)?;
                Ok(self.apply_history(&h))
            }
            Subject::ClusterStatus { cluster } => {
                let st = codec::decode_cluster_status(payload)?;
                check_match("cluster", &cluster, &st.cluster)?;
                validate_status(&st)?;
                Ok(self.apply_status(st))
            }
            Subject::Overload { .. } | Subject::Recommendations { .. } => Ok(Ingested::Ignored),
        }
    }

    /// Whether `s` is the snapshot its node last reported again (same cycle).
    fn already_applied(&self, s: &pb::NodeSnapshot) -> bool {
        self.clusters
            .get(&s.cluster)
            .and_then(|c| c.nodes.get(&s.node))
            .and_then(|n| n.latest.as_ref())
            .is_some_and(|l| l.cycle == s.cycle && l.observed_at_unix_ms == s.observed_at_unix_ms)
    }

    /// Refuses a snapshot that lists a guest another node of its cluster already reported in
    /// the same cycle: one cycle reads every guest's node from one `/cluster/resources`
    /// answer, so a genuine collector never does that (a guest reported by two nodes in
    /// different cycles is a migration; the fresher report wins in the view). The first claim
    /// in stream order stands, so every replica refuses the same message.
    fn check_guests_unclaimed(&self, s: &pb::NodeSnapshot) -> Result<(), Rejection> {
        let Some(c) = self.clusters.get(&s.cluster) else {
            return Ok(());
        };
        for (i, g) in s.guests.iter().enumerate() {
            let Some(name) = c.claims.get(&g.vmid) else {
                continue;
            };
            let same_cycle = c
                .nodes
                .get(name)
                .and_then(|n| n.latest.as_ref())
                .is_some_and(|other| other.cycle == s.cycle);
            if *name != s.node && same_cycle {
                return Err(reject(
                    Problem::GuestOnTwoNodes,
                    format!("guests[{i}].vmid"),
                    format!(
                        "vmid {} was already reported by node {name:?} in cycle {}",
                        g.vmid, s.cycle
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Applies a checked snapshot.
    pub fn apply_snapshot(&mut self, s: pb::NodeSnapshot) -> Ingested {
        self.snapshots_applied += 1;
        let cluster_name = s.cluster.clone();
        let cycle = s.cycle;
        let observed_at_ms = s.observed_at_unix_ms;
        let c = self.clusters.entry(s.cluster.clone()).or_default();
        let node = c.nodes.entry(s.node.clone()).or_default();
        let prev_iowait = node.window.latest().map_or(0.0, |l| l.iowait);
        if s.status == pb::NodeStatus::Online as i32 {
            node.window.record(sample_of(&s, prev_iowait));
        }
        if node
            .latest
            .as_ref()
            .is_none_or(|l| l.observed_at_unix_ms <= s.observed_at_unix_ms)
        {
            if let Some(old) = &node.latest {
                for g in &old.guests {
                    if c.claims.get(&g.vmid).is_some_and(|owner| *owner == s.node) {
                        c.claims.remove(&g.vmid);
                    }
                }
            }
            for g in &s.guests {
                c.claims.insert(g.vmid, s.node.clone());
            }
            node.latest = Some(s);
        }
        // The cycle is complete when every node of the last status has sent this cycle.
        let completed = match &c.status {
            Some(st) if !st.nodes.is_empty() && c.completed_cycle != Some(cycle) => {
                let all = st.nodes.iter().all(|n| {
                    c.nodes
                        .get(&n.node)
                        .and_then(|x| x.latest.as_ref())
                        .is_some_and(|l| l.cycle == cycle)
                });
                all.then_some(cycle)
            }
            _ => None,
        };
        if completed.is_some() {
            c.completed_cycle = completed;
            // A newer cycle completed: the histories still awaited are not coming.
            c.awaiting = None;
        }
        Ingested::Snapshot {
            cluster: cluster_name,
            observed_at_ms,
            completed,
        }
    }

    /// Applies a checked history.
    pub fn apply_history(&mut self, h: &pb::NodeHistory) -> Ingested {
        let c = self.clusters.entry(h.cluster.clone()).or_default();
        let node = c.nodes.entry(h.node.clone()).or_default();
        node.window
            .seed(&history_samples(&h.day), &history_samples(&h.week));
        node.history_at_ms = node.history_at_ms.max(Some(h.collected_at_unix_ms));
        let mut completed = None;
        if let Some(w) = &mut c.awaiting
            && h.collected_at_unix_ms >= w.collected_at_ms
            && w.nodes.remove(&h.node)
            && w.nodes.is_empty()
        {
            completed = (c.completed_cycle != Some(w.cycle)).then_some(w.cycle);
            c.awaiting = None;
            if completed.is_some() {
                c.completed_cycle = completed;
            }
        }
        Ingested::History {
            cluster: h.cluster.clone(),
            completed,
        }
    }

    /// Applies a checked cluster status.
    pub fn apply_status(&mut self, st: pb::ClusterStatus) -> Ingested {
        let cluster = st.cluster.clone();
        let c = self.clusters.entry(st.cluster.clone()).or_default();
        let cycle = st.cycle;
        let mut completed = (c.completed_cycle != Some(cycle)).then_some(cycle);
        // The histories this cycle published that have not been applied yet: the cycle
        // completes with the last of them (the streams are consumed apart, so a history
        // stored before the status may be delivered after it).
        let missing: BTreeSet<String> = st
            .histories
            .iter()
            .filter(|n| {
                c.nodes
                    .get(n.as_str())
                    .and_then(|x| x.history_at_ms)
                    .is_none_or(|at| at < st.collected_at_unix_ms)
            })
            .cloned()
            .collect();
        c.awaiting = None;
        if completed.is_some() && !missing.is_empty() {
            c.awaiting = Some(AwaitingHistories {
                cycle,
                collected_at_ms: st.collected_at_unix_ms,
                nodes: missing,
            });
            completed = None;
        }
        c.status = Some(st);
        if completed.is_some() {
            c.completed_cycle = completed;
        }
        Ingested::Status { cluster, completed }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use proxbalance_proto::subjects::Subjects;

    #[test]
    fn invalid_messages_are_rejected_with_a_reason() {
        let mut st = State::new(settings());
        let subj = Subjects::default();
        let e = st
            .ingest(&subj.snapshot("c", "a"), &[0xff, 0xff])
            .unwrap_err();
        assert_eq!(e.label(), "decode");
        let mut s = snap("a", 1, T0, 0.5);
        s.schema_version = 7;
        let e = ingest_snap(&mut st, &s).unwrap_err();
        assert_eq!(e.label(), "schema_version");
        let s = snap("b", 1, T0, 0.5);
        let e = st
            .ingest(&subj.snapshot("c", "a"), &proxbalance_proto::encode(&s))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "node: subject says \"a\", payload says \"b\""
        );
        let mut s = snap("a", 1, T0, f64::NAN);
        let e = ingest_snap(&mut st, &s).unwrap_err();
        assert_eq!(e.to_string(), "cpu_fraction: expected a finite number");
        s.cpu_fraction = 0.1;
        s.guests[0].disk_read_bps = -1.0;
        let e = ingest_snap(&mut st, &s).unwrap_err();
        assert_eq!(
            e.to_string(),
            "guests[0].disk_read_bps: expected a number ≥ 0"
        );
        assert_eq!(e.label(), "negative_value");
        let e = st.ingest("other.v1.snapshot.c.a", &[]).unwrap_err();
        assert_eq!(e.label(), "subject");
        assert!(st.cluster_names().is_empty());
    }

    #[test]
    fn cycle_completes_on_status_or_when_every_listed_node_reported() {
        let mut st = State::new(settings());
        let r = ingest_snap(&mut st, &snap("a", 1, T0, 0.5)).unwrap();
        assert_eq!(
            r,
            Ingested::Snapshot {
                cluster: "c".into(),
                observed_at_ms: T0,
                completed: None
            }
        );
        assert_eq!(
            st.apply_status(status(1, &["a", "b"])),
            Ingested::Status {
                cluster: "c".into(),
                completed: Some(1)
            }
        );
        // Cycle 2: complete once a and b have both reported; the status then adds nothing.
        let r = ingest_snap(&mut st, &snap("a", 2, T0 + 10_000, 0.5)).unwrap();
        assert!(matches!(
            r,
            Ingested::Snapshot {
                completed: None,
                ..
            }
        ));
        ingest_snap(&mut st, &snap("b", 1, T0, 0.5)).unwrap();
        let r = ingest_snap(&mut st, &snap("b", 2, T0 + 10_000, 0.5)).unwrap();
        assert!(
            matches!(
                r,
                Ingested::Snapshot {
                    completed: Some(2),
                    ..
                }
            ),
            "{r:?}"
        );
        assert!(matches!(
            st.apply_status(status(2, &["a", "b"])),
            Ingested::Status {
                completed: None,
                ..
            }
        ));
    }

    fn iowait_burst(node: &str) -> pb::NodeSnapshot {
        let mut s = snap(node, 1, T0, 0.1);
        s.iowait_fraction = Some(0.4);
        s
    }

    fn history_completion(r: Ingested) -> Option<u64> {
        match r {
            Ingested::History { completed, .. } => completed,
            other => panic!("not a history: {other:?}"),
        }
    }

    #[test]
    fn a_status_listing_histories_completes_its_cycle_with_the_last_of_them() {
        let mut st = State::new(settings());
        ingest_snap(&mut st, &iowait_burst("a")).unwrap();
        ingest_snap(&mut st, &snap("b", 1, T0, 0.1)).unwrap();
        let mut s1 = status(1, &["a", "b"]);
        s1.collected_at_unix_ms = T0;
        s1.histories = vec!["a".into(), "b".into()];
        // The status overtook the histories it lists: the cycle waits for them.
        assert_eq!(
            st.apply_status(s1),
            Ingested::Status {
                cluster: "c".into(),
                completed: None
            }
        );
        // An older history of a does not count; a's and b's of this cycle do, the last completes.
        assert_eq!(
            history_completion(st.apply_history(&history("a", T0 - 1))),
            None
        );
        assert_eq!(
            history_completion(st.apply_history(&history("a", T0))),
            None
        );
        assert_eq!(
            history_completion(st.apply_history(&history("b", T0))),
            Some(1)
        );
        assert_eq!(
            history_completion(st.apply_history(&history("b", T0))),
            None
        );
        // So a's first evaluation knows its 24 h IOWait average (5 %): a 40 % burst alone does
        // not pass the rule (24 h average above 0.7 × 30 %).
        let events = st.evaluate_overload("c", T0);
        assert!(
            events
                .iter()
                .all(|e| e.reason() != pb::OverloadReason::Iowait),
            "{events:?}"
        );
        // Without its history the burst would look sustained.
        let mut blind = State::new(settings());
        ingest_snap(&mut blind, &iowait_burst("a")).unwrap();
        blind.apply_status(status(1, &["a"]));
        let events = blind.evaluate_overload("c", T0);
        assert!(
            events
                .iter()
                .any(|e| e.reason() == pb::OverloadReason::Iowait),
            "{events:?}"
        );

        // Histories applied before their status: the status completes the cycle at once.
        let mut st = State::new(settings());
        st.apply_history(&history("a", T0));
        ingest_snap(&mut st, &snap("a", 1, T0, 0.1)).unwrap();
        let mut s1 = status(1, &["a"]);
        s1.collected_at_unix_ms = T0;
        s1.histories = vec!["a".into()];
        assert!(matches!(
            st.apply_status(s1),
            Ingested::Status {
                completed: Some(1),
                ..
            }
        ));

        // A history that never comes holds its cycle back until the next one completes.
        let mut st = State::new(settings());
        ingest_snap(&mut st, &snap("a", 1, T0, 0.1)).unwrap();
        let mut s1 = status(1, &["a"]);
        s1.collected_at_unix_ms = T0;
        s1.histories = vec!["a".into()];
        assert!(matches!(
            st.apply_status(s1),
            Ingested::Status {
                completed: None,
                ..
            }
        ));
        let r = ingest_snap(&mut st, &snap("a", 2, T0 + 10_000, 0.1)).unwrap();
        assert!(
            matches!(
                r,
                Ingested::Snapshot {
                    completed: Some(2),
                    ..
                }
            ),
            "{r:?}"
        );
        assert_eq!(
            history_completion(st.apply_history(&history("a", T0))),
            None
        );
    }
}
