//! Overload evaluation of a completed cycle: each fresh, online node's latest reading through
//! its hysteresis ([`crate::overload`]), the transitions returned as events.
//!
//! The lifecycle: a raised reason is cleared below its threshold, or when its node goes
//! offline (its snapshot says so), stale (no snapshot for `staleness_ms`) or away (left the
//! cluster's node list, or forgotten after the retention): every `raised` gets its `cleared`.
//! Evaluation uses only the data's own clock (snapshot times), never the wall clock, so a
//! replica replaying the stream computes the same transitions with the same ids as the one
//! that saw them live. A node stale by the wall clock alone (its whole cluster went quiet) is
//! cleared by [`State::sweep`], at the same instant (last snapshot + staleness) a replay
//! computes from the gap when the node reports again.

use proxbalance_proto::v1 as pb;

use super::event_ids::overload_event_id;
use super::{NodeState, State};
use crate::overload::{Limits, Reading, Transition};

/// The event of a transition of `node` of `cluster`.
fn event(cluster: &str, node: &str, tr: Transition) -> pb::OverloadEvent {
    let mut e = pb::OverloadEvent {
        cluster: cluster.to_owned(),
        node: node.to_owned(),
        reason: tr.reason as i32,
        state: tr.state as i32,
        value: tr.value,
        avg_24h: tr.avg_24h,
        threshold: tr.threshold,
        since_unix_ms: tr.since_ms,
        at_unix_ms: tr.at_ms,
        event_id: String::new(),
        clear_cause: tr.clear_cause as i32,
    };
    e.event_id = overload_event_id(&e);
    e
}

impl State {
    /// The thresholds overload is judged against.
    pub(super) fn overload_limits(&self) -> Limits {
        let t = self.settings.thresholds;
        Limits {
            cpu: t.cpu,
            mem: t.mem,
            iowait: t.iowait,
        }
    }

    /// Clears every raised reason of `node` at `at_ms` for `cause`; the events are appended.
    pub(super) fn clear_node(
        &self,
        cluster: &str,
        name: &str,
        node: &mut NodeState,
        at_ms: i64,
        cause: pb::OverloadClearCause,
        events: &mut Vec<pb::OverloadEvent>,
    ) {
        let limits = self.overload_limits();
        let cleared = node
            .overload
            .clear_all(at_ms, cause, &limits, &self.settings.overload);
        events.extend(cleared.into_iter().map(|tr| event(cluster, name, tr)));
    }

    /// Evaluates overload on every node of `cluster` (see the module documentation) and
    /// returns the events of the transitions.
    pub fn evaluate_overload(&mut self, cluster: &str) -> Vec<pb::OverloadEvent> {
        let staleness = self.settings.staleness_ms;
        let cfg = self.settings.overload.clone();
        let limits = self.overload_limits();
        let Some(mut c) = self.clusters.remove(cluster) else {
            return Vec::new();
        };
        let mut events = Vec::new();
        if let Some(data_now) = c.data_now_ms() {
            // The cluster's node list, when the last status had one (a failed cycle's has not).
            let listed: Option<(i64, Vec<&str>)> = c
                .status
                .as_ref()
                .filter(|st| !st.nodes.is_empty())
                .map(|st| {
                    let names = st.nodes.iter().map(|n| n.node.as_str()).collect();
                    (st.collected_at_unix_ms, names)
                });
            let mut nodes = std::mem::take(&mut c.nodes);
            for (name, node) in &mut nodes {
                if let Some((at_ms, names)) = &listed
                    && !names.contains(&name.as_str())
                {
                    self.clear_node(
                        cluster,
                        name,
                        node,
                        *at_ms,
                        pb::OverloadClearCause::NodeRemoved,
                        &mut events,
                    );
                    continue;
                }
                // Silent for longer than the staleness between two snapshots: stale meanwhile.
                if let Some(at_ms) = node.gap_at_ms.take() {
                    self.clear_node(
                        cluster,
                        name,
                        node,
                        at_ms,
                        pb::OverloadClearCause::NodeStale,
                        &mut events,
                    );
                }
                let Some(s) = &node.latest else { continue };
                let observed = s.observed_at_unix_ms;
                if data_now - observed > staleness {
                    self.clear_node(
                        cluster,
                        name,
                        node,
                        observed + staleness,
                        pb::OverloadClearCause::NodeStale,
                        &mut events,
                    );
                    continue;
                }
                if node.evaluated_at_ms == Some(observed) {
                    continue;
                }
                node.evaluated_at_ms = Some(observed);
                if s.status != pb::NodeStatus::Online as i32 {
                    self.clear_node(
                        cluster,
                        name,
                        node,
                        observed,
                        pb::OverloadClearCause::NodeOffline,
                        &mut events,
                    );
                    continue;
                }
                let Some(cur) = node.window.latest() else {
                    continue;
                };
                let day = node.window.day_stats(observed);
                let reading = Reading {
                    at_ms: observed,
                    cpu: cur.cpu,
                    mem: cur.mem,
                    iowait: cur.iowait,
                    avg_24h: day.map(|d| (d.avg_cpu, d.avg_mem, d.avg_iowait)),
                    overcommit_ratio: s.overcommit_ratio,
                };
                let transitions = node.overload.evaluate(&reading, &limits, &cfg);
                events.extend(transitions.into_iter().map(|tr| event(cluster, name, tr)));
            }
            c.nodes = nodes;
        }
        self.clusters.insert(cluster.to_owned(), c);
        events
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn overload_events_carry_deterministic_ids() {
        let mut st = State::new(settings());
        st.apply_status(status(1, &["a"]));
        ingest_snap(&mut st, &snap("a", 1, T0, 0.9)).unwrap();
        let ev = st.evaluate_overload("c");
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].event_id, format!("overload:c:a:cpu:raised:{T0}"));
        assert_eq!(ev[0].value, 90.0);
        // The same snapshot is not evaluated twice.
        assert!(st.evaluate_overload("c").is_empty());
    }

    /// Applies a cycle of `nodes` (hot unless `cool`) and its status; returns the events.
    fn cycle(st: &mut State, cycle: u64, at: i64, nodes: &[&str]) -> Vec<pb::OverloadEvent> {
        for n in nodes {
            ingest_snap(st, &hot(n, cycle, at)).unwrap();
        }
        st.apply_status(status(cycle, nodes));
        st.evaluate_overload("c")
    }

    #[test]
    fn every_raise_is_cleared_when_its_node_goes_offline_stale_or_away() {
        use pb::OverloadClearCause as Cause;
        use pb::OverloadState::{Cleared, Raised};
        let mut st = State::new(settings()); // staleness 60 s
        let raised = cycle(&mut st, 1, T0, &["a", "b", "d"]);
        assert_eq!(
            lifecycle(&raised),
            ["a", "b", "d"]
                .map(|n| (n.to_owned(), Raised, T0, Cause::Unspecified))
                .to_vec()
        );
        // Cycle 2: a reports offline, d is no longer listed; b goes on.
        let t2 = T0 + 10_000;
        let mut a = hot("a", 2, t2);
        a.status = pb::NodeStatus::Offline as i32;
        ingest_snap(&mut st, &a).unwrap();
        ingest_snap(&mut st, &hot("b", 2, t2)).unwrap();
        st.apply_status(status(2, &["a", "b"]));
        assert_eq!(
            lifecycle(&st.evaluate_overload("c")),
            vec![
                ("a".to_owned(), Cleared, t2, Cause::NodeOffline),
                ("d".to_owned(), Cleared, 0, Cause::NodeRemoved),
            ]
        );
        // b falls silent while a (back online) goes on: stale by the cluster's own clock, at
        // its last snapshot + the staleness.
        let mut events = Vec::new();
        for k in 3..=10u64 {
            let at = T0 + (k as i64 - 1) * 10_000;
            let mut a = hot("a", k, at);
            a.cpu_fraction = 0.1;
            ingest_snap(&mut st, &a).unwrap();
            st.apply_status(status(k, &["a", "b"]));
            events.extend(st.evaluate_overload("c"));
        }
        assert_eq!(
            lifecycle(&events),
            vec![("b".to_owned(), Cleared, t2 + 60_000, Cause::NodeStale)]
        );
    }

    #[test]
    fn a_node_back_after_a_silence_is_cleared_for_it_first_as_the_sweep_would() {
        use pb::OverloadClearCause as Cause;
        use pb::OverloadState::{Cleared, Raised};
        // The whole cluster was silent for five minutes; no sweep ran (a replay, say). The
        // first evaluation after it clears at the instant the sweep would have, then raises
        // anew: the same events, the same ids, as a recommender that saw it live.
        let mut live = State::new(settings());
        let mut replay = State::new(settings());
        let mut from_live = cycle(&mut live, 1, T0, &["a"]);
        let mut from_replay = cycle(&mut replay, 1, T0, &["a"]);
        from_live.extend(live.sweep(T0 + 300_000));
        let back = T0 + 300_000;
        from_live.extend(cycle(&mut live, 2, back, &["a"]));
        from_replay.extend(cycle(&mut replay, 2, back, &["a"]));
        assert_eq!(
            lifecycle(&from_replay),
            vec![
                ("a".to_owned(), Raised, T0, Cause::Unspecified),
                ("a".to_owned(), Cleared, T0 + 60_000, Cause::NodeStale),
                ("a".to_owned(), Raised, back, Cause::Unspecified),
            ]
        );
        let ids =
            |e: &[pb::OverloadEvent]| e.iter().map(|e| e.event_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&from_live), ids(&from_replay));
    }

    #[test]
    fn a_history_older_than_the_retention_does_not_bring_its_node_back() {
        let mut st = State::new(settings());
        let subj = proxbalance_proto::subjects::Subjects::default();
        let wall = T0 + 86_400_001;
        let r = ingest_at(
            &mut st,
            &subj.history("c", "a"),
            &history("a", T0),
            Arrival::at(wall),
        );
        assert_eq!(r.unwrap(), Ingested::Ignored);
        assert!(!st.knows("c"));
    }
}
