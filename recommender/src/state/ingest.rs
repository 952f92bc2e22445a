//! Applying messages: [`State::ingest`] checks a message ([`super::validate`]) and applies it;
//! a snapshot extends its node's window, a history seeds it, a cluster status records the
//! cycle's node list. It reports when a cluster's cycle is complete (its `ClusterStatus`
//! arrived, or every node the last status listed has sent this cycle's snapshot, and every
//! history the status listed was applied).

use std::collections::BTreeSet;

use proxbalance_proto::codec;
use proxbalance_proto::subjects::Subject;
use proxbalance_proto::v1 as pb;

use super::validate::{
    Problem, Rejection, check_history_not_ahead, check_match, check_not_ahead, reject,
    validate_history, validate_snapshot, validate_status,
};
use super::view::{history_samples, sample_of};
use super::{Arrival, State};

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
    /// Checks and applies one message, arrived at `at`.
    pub fn ingest(
        &mut self,
        subject: &str,
        payload: &[u8],
        at: Arrival,
    ) -> Result<Ingested, Rejection> {
        match self.settings.subjects.parse(subject)? {
            Subject::Snapshot { cluster, node } => {
                let s = codec::decode_snapshot(payload)?;
                check_match("cluster", &cluster, &s.cluster)?;
                check_match("node", &node, &s.node)?;
                validate_snapshot(&s)?;
                let sent_ms = s.observed_at_unix_ms;
                self.check_clock(&s.cluster, sent_ms, "observed_at_unix_ms", at)?;
                if self.already_applied(&s) {
                    return Ok(Ingested::Ignored);
                }
                self.check_guests_unclaimed(&s)?;
                let cluster = s.cluster.clone();
                let applied = self.apply_snapshot(s);
                self.note_clock(&cluster, sent_ms, at);
                Ok(applied)
            }
            Subject::History { cluster, node } => {
                let h = codec::decode_history(payload)?;
                check_match("cluster", &cluster, &h.cluster)?;
                check_match("node", &node, &h.node)?;
                validate_history(&h)?;
                check_history_not_ahead(&h, at.wall_ms, self.settings.max_clock_skew_ms)?;
                // A history older than the retention is of a node gone (a history stream
                // without max_age keeps it forever): it does not bring the node back.
                if at.wall_ms.saturating_sub(h.collected_at_unix_ms) > self.settings.retention_ms {
                    return Ok(Ingested::Ignored);
                }
                Ok(self.apply_history(&h))
            }
            Subject::ClusterStatus { cluster } => {
                let st = codec::decode_cluster_status(payload)?;
                check_match("cluster", &cluster, &st.cluster)?;
                validate_status(&st)?;
                let sent_ms = st.collected_at_unix_ms;
                self.check_clock(&st.cluster, sent_ms, "collected_at_unix_ms", at)?;
                let cluster = st.cluster.clone();
                let applied = self.apply_status(st);
                self.note_clock(&cluster, sent_ms, at);
                Ok(applied)
            }
            Subject::Overload { .. } | Subject::Recommendations { .. } => Ok(Ingested::Ignored),
        }
    }

    /// Records the clock skew of a known cluster's collector: the message's own time minus
    /// when NATS stored it.
    fn note_clock(&mut self, cluster: &str, sent_ms: i64, at: Arrival) {
        if let Some(c) = self.clusters.get_mut(cluster) {
            c.clock_skew_ms = Some(sent_ms.saturating_sub(at.stored_ms));
        }
    }

    /// Refuses a message sent (by its own clock) more than the allowed skew after the wall
    /// clock, noting the skew of its cluster's collector: that is when the figure matters most
    /// (a refused message of an unknown cluster does not create it).
    fn check_clock(
        &mut self,
        cluster: &str,
        sent_ms: i64,
        field: &'static str,
        at: Arrival,
    ) -> Result<(), Rejection> {
        let ahead = check_not_ahead(
            || field.to_owned(),
            sent_ms,
            at.wall_ms,
            self.settings.max_clock_skew_ms,
        );
        if ahead.is_err() {
            self.note_clock(cluster, sent_ms, at);
        }
        ahead
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
        let staleness = self.settings.staleness_ms;
        let cluster_name = s.cluster.clone();
        let cycle = s.cycle;
        let observed_at_ms = s.observed_at_unix_ms;
        let c = self.clusters.entry(s.cluster.clone()).or_default();
        let node = c.nodes.entry(s.node.clone()).or_default();
        let prev_iowait = node.window.latest().map_or(0.0, |l| l.iowait);
        if s.status == pb::NodeStatus::Online as i32 {
            node.window.record(sample_of(&s, prev_iowait));
            if s.mem_total_bytes > 0 {
                let committed = super::dashboard::pct(s.committed_mem_bytes, s.mem_total_bytes);
                node.committed.record(s.observed_at_unix_ms, committed);
            }
        }
        // A node's snapshots are ordered by cycle (the collector's cycle ids only increase,
        // even when its clock steps back) or, across a collector restart after such a step,
        // by observation time: the newer by either replaces the latest. A copy of an older
        // cycle arriving late is older by both and only extends the window.
        if node
            .latest
            .as_ref()
            .is_none_or(|l| s.cycle > l.cycle || s.observed_at_unix_ms > l.observed_at_unix_ms)
        {
            if let Some(old) = &node.latest {
                let silent_ms = s.observed_at_unix_ms - old.observed_at_unix_ms;
                if silent_ms > staleness && node.gap_at_ms.is_none() {
                    node.gap_at_ms = Some(old.observed_at_unix_ms + staleness);
                }
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
            node.current = true;
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
        if let Some(cycle) = completed {
            c.complete(cycle);
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
            if let Some(cycle) = completed {
                c.complete(cycle);
            }
        }
        Ingested::History {
            cluster: h.cluster.clone(),
            completed,
        }
    }

    /// Applies a checked cluster status. It completes its cycle, unless the cycle's snapshots
    /// already did or histories are awaited; a status whose HA rules or CRS differ from the
    /// previous one completes its cycle again (see below).
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
        // A cycle usually completes on its last snapshot, before its status: when the status
        // changes what the plan reads from it (the HA rules, PVE's CRS), the cycle is planned
        // again with it, not a cycle later. (Its overload was evaluated on the snapshots.)
        if completed.is_none()
            && c.completed_cycle == Some(cycle)
            && c.status
                .as_ref()
                .is_some_and(|old| placement_inputs(old) != placement_inputs(&st))
        {
            completed = Some(cycle);
        }
        c.status = Some(st);
        if let Some(cycle) = completed {
            c.complete(cycle);
        }
        Ingested::Status { cluster, completed }
    }
}

/// What a plan reads from a cluster status.
fn placement_inputs(st: &pb::ClusterStatus) -> (&[pb::HaRule], i32, Option<&pb::CrsSettings>) {
    (&st.ha_rules, st.ha_rules_source, st.crs.as_ref())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use proxbalance_engine::NodeStatus;
    use proxbalance_proto::subjects::Subjects;

    #[test]
    fn a_status_changing_ha_rules_or_crs_completes_its_cycle_again() {
        let mut st = State::new(settings());
        let completed_by = |ingested: Ingested| match ingested {
            Ingested::Status { completed, .. } | Ingested::Snapshot { completed, .. } => completed,
            _ => None,
        };
        let snapshots = |st: &mut State, cycle: u64| {
            let at = T0 + cycle as i64 * 10_000;
            let a = ingest_snap(st, &snap("a", cycle, at, 0.5)).unwrap();
            assert_eq!(completed_by(a), None);
            completed_by(ingest_snap(st, &snap("b", cycle, at, 0.5)).unwrap())
        };
        let rules = vec![pb::HaRule {
            name: "r".into(),
            kind: pb::HaRuleKind::NodeAffinity as i32,
            vmids: vec![100],
            nodes: vec![pb::HaRuleNode {
                node: "a".into(),
                priority: 0,
            }],
            strict: true,
        }];
        let with = |cycle: u64, rules: &[pb::HaRule], crs: &str| {
            let mut s = status(cycle, &["a", "b"]);
            s.ha_rules = rules.to_vec();
            s.ha_rules_source = pb::HaRulesSource::Rules as i32;
            s.ha_rules_read_at_unix_ms = cycle as i64;
            s.crs = Some(pb::CrsSettings {
                ha: crs.into(),
                ..Default::default()
            });
            s
        };
        // The first cycle completes with its status (no node list before it).
        assert_eq!(snapshots(&mut st, 1), None);
        assert_eq!(
            completed_by(st.apply_status(with(1, &[], "basic"))),
            Some(1)
        );
        // Later cycles complete on their last snapshot; the same inputs: nothing more.
        assert_eq!(snapshots(&mut st, 2), Some(2));
        assert_eq!(completed_by(st.apply_status(with(2, &[], "basic"))), None);
        // New HA rules (only their read time changing does not count), then a new CRS mode.
        assert_eq!(snapshots(&mut st, 3), Some(3));
        assert_eq!(
            completed_by(st.apply_status(with(3, &rules, "basic"))),
            Some(3)
        );
        assert_eq!(snapshots(&mut st, 4), Some(4));
        assert_eq!(
            completed_by(st.apply_status(with(4, &rules, "basic"))),
            None
        );
        assert_eq!(snapshots(&mut st, 5), Some(5));
        assert_eq!(
            completed_by(st.apply_status(with(5, &rules, "dynamic"))),
            Some(5)
        );
    }

    #[test]
    fn invalid_messages_are_rejected_with_a_reason() {
        let mut st = State::new(settings());
        let subj = Subjects::default();
        let e = st
            .ingest(&subj.snapshot("c", "a"), &[0xff, 0xff], at_t0())
            .unwrap_err();
        assert_eq!(e.label(), "decode");
        let mut s = snap("a", 1, T0, 0.5);
        s.schema_version = 7;
        let e = ingest_snap(&mut st, &s).unwrap_err();
        assert_eq!(e.label(), "schema_version");
        let s = snap("b", 1, T0, 0.5);
        let e = st
            .ingest(
                &subj.snapshot("c", "a"),
                &proxbalance_proto::encode(&s),
                at_t0(),
            )
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
        let e = st
            .ingest("other.v1.snapshot.c.a", &[], at_t0())
            .unwrap_err();
        assert_eq!(e.label(), "subject");
        assert!(st.cluster_names().is_empty());
    }

    #[test]
    fn messages_from_the_future_are_refused_and_do_not_freeze_the_cluster() {
        let mut st = State::new(settings());
        let subj = Subjects::default();
        for n in ["a", "b"] {
            ingest_snap(&mut st, &snap(n, 1, T0, 0.5)).unwrap();
        }
        st.apply_status(status(1, &["a", "b"]));
        // a's collector clock stepped a day ahead for one cycle: refused, and the skew noted.
        let wall = T0 + 10_000;
        let ahead = snap("a", 2, T0 + DAY_MS, 0.5);
        assert_eq!(
            refusal(ingest_snap_at(&mut st, &ahead, wall)),
            "future_time | observed_at_unix_ms: 86390000 ms ahead of the recommender's clock \
             (at most 30000 ms allowed: state.max_clock_skew_s)"
        );
        assert_eq!(
            st.cluster_state("c", wall).unwrap().clock_skew_ms,
            Some(DAY_MS - 10_000)
        );
        // So is a history or status of that clock.
        let h = history("a", T0 + DAY_MS);
        assert_eq!(
            refusal(ingest_at(
                &mut st,
                &subj.history("c", "a"),
                &h,
                Arrival::at(wall)
            )),
            "future_time | collected_at_unix_ms: 86390000 ms ahead of the recommender's clock \
             (at most 30000 ms allowed: state.max_clock_skew_s)"
        );
        let mut h = history("a", T0);
        h.day[0].time_unix_ms = T0 + 3_600_000;
        assert_eq!(
            refusal(ingest_at(
                &mut st,
                &subj.history("c", "a"),
                &h,
                Arrival::at(wall)
            )),
            "future_time | day[0].time_unix_ms: 3590000 ms ahead of the recommender's clock \
             (at most 30000 ms allowed: state.max_clock_skew_s)"
        );
        let mut s2 = status(2, &["a", "b"]);
        s2.collected_at_unix_ms = T0 + DAY_MS;
        assert_eq!(
            refusal(ingest_at(
                &mut st,
                &subj.cluster_status("c"),
                &s2,
                Arrival::at(wall)
            ))
            .split(" | ")
            .next(),
            Some("future_time")
        );
        // Within the allowed skew is accepted, and the skew measured against NATS' clock.
        let mut a2 = snap("a", 2, wall + 20_000, 0.5);
        a2.guests.clear();
        let r = ingest_at(
            &mut st,
            &subj.snapshot("c", "a"),
            &a2,
            Arrival {
                wall_ms: wall,
                stored_ms: wall - 5_000,
            },
        );
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(
            st.cluster_state("c", wall).unwrap().clock_skew_ms,
            Some(25_000)
        );
        // The next cycles go on: nobody is stale, the view's clock is not in the future.
        ingest_snap_at(&mut st, &snap("b", 2, wall, 0.5), wall).unwrap();
        let view = st.view("c", wall).unwrap();
        assert_eq!(view.now, (wall + 20_000) / 1000);
        assert!(
            view.nodes.iter().all(|n| n.status == NodeStatus::Online),
            "{:?}",
            view.nodes
        );
    }

    #[test]
    fn a_nodes_snapshots_are_ordered_by_cycle() {
        let mut st = State::new(settings());
        ingest_snap(&mut st, &snap("a", 5, T0, 0.5)).unwrap();
        // The collector's clock stepped back a minute: its cycle ids still increase, and the
        // newer cycle is the node's latest although observed "earlier".
        ingest_snap(&mut st, &snap("a", 6, T0 - 60_000, 0.7)).unwrap();
        let latest = |st: &State| {
            let n = &st.cluster_state("c", T0).unwrap().nodes[0];
            let s = n.latest.as_ref().unwrap();
            (s.cycle, s.observed_at_unix_ms)
        };
        assert_eq!(latest(&st), (6, T0 - 60_000));
        // A copy of an older cycle arriving late is older by both: it does not replace.
        ingest_snap(&mut st, &snap("a", 4, T0 - 120_000, 0.1)).unwrap();
        assert_eq!(latest(&st), (6, T0 - 60_000));
        // A restarted collector after the step: lower cycle ids, later observations: newer.
        ingest_snap(&mut st, &snap("a", 2, T0 + 10_000, 0.2)).unwrap();
        assert_eq!(latest(&st), (2, T0 + 10_000));
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
        let events = st.evaluate_overload("c");
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
        let events = blind.evaluate_overload("c");
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
