//! Overload evaluation of a completed cycle: each fresh, online node's latest reading through
//! its hysteresis ([`crate::overload`]), the transitions returned as events.

use proxbalance_proto::v1 as pb;

use super::State;
use super::event_ids::overload_event_id;
use crate::overload::{Limits, Reading};

impl State {
    /// Evaluates overload on every node of `cluster` that is online, fresh and has a snapshot
    /// not evaluated yet, and returns the events of the transitions.
    pub fn evaluate_overload(&mut self, cluster: &str, wall_ms: i64) -> Vec<pb::OverloadEvent> {
        let staleness = self.settings.staleness_ms;
        let cfg = self.settings.overload.clone();
        let t = self.settings.thresholds;
        let limits = Limits {
            cpu: t.cpu,
            mem: t.mem,
            iowait: t.iowait,
        };
        let Some(c) = self.clusters.get_mut(cluster) else {
            return Vec::new();
        };
        let Some(data_now) = c.data_now_ms() else {
            return Vec::new();
        };
        let reference = data_now.max(wall_ms);
        let mut events = Vec::new();
        for (name, node) in &mut c.nodes {
            let Some(s) = &node.latest else { continue };
            if s.status != pb::NodeStatus::Online as i32
                || reference - s.observed_at_unix_ms > staleness
                || node.evaluated_at_ms == Some(s.observed_at_unix_ms)
            {
                continue;
            }
            node.evaluated_at_ms = Some(s.observed_at_unix_ms);
            let Some(cur) = node.window.latest() else {
                continue;
            };
            let day = node.window.day_stats(s.observed_at_unix_ms);
            let reading = Reading {
                at_ms: s.observed_at_unix_ms,
                cpu: cur.cpu,
                mem: cur.mem,
                iowait: cur.iowait,
                avg_24h: day.map(|d| (d.avg_cpu, d.avg_mem, d.avg_iowait)),
                overcommit_ratio: s.overcommit_ratio,
            };
            for tr in node.overload.evaluate(&reading, &limits, &cfg) {
                let mut e = pb::OverloadEvent {
                    cluster: cluster.to_owned(),
                    node: name.clone(),
                    reason: tr.reason as i32,
                    state: tr.state as i32,
                    value: tr.value,
                    avg_24h: tr.avg_24h,
                    threshold: tr.threshold,
                    since_unix_ms: tr.since_ms,
                    at_unix_ms: tr.at_ms,
                    event_id: String::new(),
                };
                e.event_id = overload_event_id(&e);
                events.push(e);
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
    fn overload_events_carry_deterministic_ids() {
        let mut st = State::new(settings());
        st.apply_status(status(1, &["a"]));
        ingest_snap(&mut st, &snap("a", 1, T0, 0.9)).unwrap();
        let ev = st.evaluate_overload("c", T0);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].event_id, format!("c:a:cpu:raised:{T0}"));
        assert_eq!(ev[0].value, 90.0);
        // The same snapshot is not evaluated twice.
        assert!(st.evaluate_overload("c", T0).is_empty());
    }
}
