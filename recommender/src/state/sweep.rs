//! What the wall clock does to the state, once the replay is done ([`State::sweep`]): the
//! overloads of nodes gone quiet are cleared, and nodes and clusters past the retention are
//! forgotten, so a node or cluster that disappeared does not keep its windows forever.

use proxbalance_proto::v1 as pb;

use super::State;

impl State {
    /// At `wall_ms`: every raised overload of a node without a snapshot for longer than the
    /// staleness is cleared (`node_stale`, at its last snapshot + the staleness: the instant
    /// a replay computes from the gap, so the event id is the same); a node not heard of (no
    /// snapshot, no history) for longer than the retention is evicted, what it had raised
    /// cleared (`node_removed`, at its last message + the retention); then a cluster without
    /// nodes whose last status is older than the retention. Returns the events.
    pub fn sweep(&mut self, wall_ms: i64) -> Vec<pb::OverloadEvent> {
        let staleness = self.settings.staleness_ms;
        let retention = self.settings.retention_ms;
        let mut events = Vec::new();
        let names: Vec<String> = self.clusters.keys().cloned().collect();
        for cluster in names {
            let Some(mut c) = self.clusters.remove(&cluster) else {
                continue;
            };
            let mut nodes = std::mem::take(&mut c.nodes);
            nodes.retain(|name, node| {
                let snapshot_ms = node.latest.as_ref().map(|s| s.observed_at_unix_ms);
                let Some(last_ms) = snapshot_ms.max(node.history_at_ms) else {
                    return false;
                };
                if wall_ms.saturating_sub(last_ms) > retention {
                    let at_ms = last_ms.saturating_add(retention);
                    let cause = pb::OverloadClearCause::NodeRemoved;
                    self.clear_node(&cluster, name, node, at_ms, cause, &mut events);
                    return false;
                }
                if let Some(observed) = snapshot_ms
                    && wall_ms.saturating_sub(observed) > staleness
                {
                    let at_ms = observed.saturating_add(staleness);
                    let cause = pb::OverloadClearCause::NodeStale;
                    self.clear_node(&cluster, name, node, at_ms, cause, &mut events);
                }
                true
            });
            c.claims.retain(|_, owner| nodes.contains_key(owner));
            c.nodes = nodes;
            let recent_status = c
                .status
                .as_ref()
                .is_some_and(|st| wall_ms.saturating_sub(st.collected_at_unix_ms) <= retention);
            if !c.nodes.is_empty() || recent_status {
                self.clusters.insert(cluster, c);
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn quiet_nodes_are_cleared_then_forgotten_with_their_cluster() {
        let mut st = State::new(StateSettings {
            retention_ms: 3_600_000,
            ..settings()
        });
        ingest_snap(&mut st, &hot("a", 1, T0)).unwrap();
        ingest_snap(&mut st, &hot("b", 1, T0)).unwrap();
        st.apply_status(status(1, &["a", "b"]));
        assert_eq!(st.evaluate_overload("c").len(), 2);
        // Within the staleness: nothing.
        assert!(st.sweep(T0 + 60_000).is_empty());
        // The collector died: past the staleness both are cleared as stale, once.
        let cleared = st.sweep(T0 + 61_000);
        assert_eq!(
            lifecycle(&cleared),
            vec![
                (
                    "a".to_owned(),
                    pb::OverloadState::Cleared,
                    T0 + 60_000,
                    pb::OverloadClearCause::NodeStale
                ),
                (
                    "b".to_owned(),
                    pb::OverloadState::Cleared,
                    T0 + 60_000,
                    pb::OverloadClearCause::NodeStale
                ),
            ]
        );
        assert!(st.sweep(T0 + 120_000).is_empty());
        assert!(st.knows("c"));
        // Past the retention the nodes, then the cluster, are forgotten.
        assert!(st.sweep(T0 + 3_600_001).is_empty());
        assert!(!st.knows("c"));
        assert!(st.cluster_names().is_empty());
    }

    #[test]
    fn a_node_forgotten_while_raised_is_cleared_as_removed() {
        let mut st = State::new(StateSettings {
            staleness_ms: 60_000,
            retention_ms: 120_000,
            ..settings()
        });
        ingest_snap(&mut st, &hot("a", 1, T0)).unwrap();
        st.apply_status(status(1, &["a"]));
        assert_eq!(st.evaluate_overload("c").len(), 1);
        // No sweep ran while it was only stale (the recommender was replaying, say).
        let cleared = st.sweep(T0 + 120_001);
        assert_eq!(
            lifecycle(&cleared),
            vec![(
                "a".to_owned(),
                pb::OverloadState::Cleared,
                T0 + 120_000,
                pb::OverloadClearCause::NodeRemoved
            )]
        );
        assert!(!st.knows("c"));
    }
}
