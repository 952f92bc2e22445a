//! What the state tells the web dashboard and `/api/v1/`: the overview of every cluster, a
//! cluster's nodes with their 24 h series, and one guest's figures. Each is built under the
//! read lock from what ingest already keeps (no view, no planning, no snapshot cloned whole),
//! as JSON values the caller serialises after releasing the lock.

use std::collections::VecDeque;

use proxbalance_proto::v1 as pb;
use serde::Serialize;
use serde_json::{Value, json};

use super::State;

/// Hourly points of a node's sparkline (the 24 hours up to its newest data).
const SPARK_HOURS: usize = 24;

const HOUR_MS: i64 = 3_600_000;

/// A node's committed memory (percent of its total) hour by hour over the last 24 hours, from
/// its snapshots: PVE's RRD history has no committed memory, so these hours start with the
/// snapshots the recommender applied (live or replayed). At most 24 entries.
#[derive(Debug, Default, Clone)]
pub struct CommittedHours {
    /// (hour since the epoch, sum of the samples' percents, samples), oldest first.
    hours: VecDeque<(i64, f64, u32)>,
}

impl CommittedHours {
    /// Adds a sample observed at `at_ms`; a sample older than the hours kept is ignored.
    pub fn record(&mut self, at_ms: i64, pct: f64) {
        if !pct.is_finite() {
            return;
        }
        let hour = at_ms.div_euclid(HOUR_MS);
        if let Some(b) = self.hours.iter_mut().rev().find(|b| b.0 == hour) {
            b.1 += pct;
            b.2 += 1;
            return;
        }
        let newest = self.hours.back().map_or(hour, |b| b.0.max(hour));
        if hour <= newest - SPARK_HOURS as i64 {
            return;
        }
        let at = self.hours.iter().position(|b| b.0 > hour);
        match at {
            Some(i) => self.hours.insert(i, (hour, pct, 1)),
            None => self.hours.push_back((hour, pct, 1)),
        }
        while self
            .hours
            .front()
            .is_some_and(|f| f.0 <= newest - SPARK_HOURS as i64)
        {
            self.hours.pop_front();
        }
    }

    /// The hourly means of the 24 hours up to `now_ms`, by hour start (unix seconds).
    pub fn hourly(&self, now_ms: i64) -> Vec<(i64, f64)> {
        let last = now_ms.div_euclid(HOUR_MS);
        self.hours
            .iter()
            .filter(|b| b.0 > last - SPARK_HOURS as i64 && b.0 <= last && b.2 > 0)
            .map(|b| (b.0 * 3600, b.1 / f64::from(b.2)))
            .collect()
    }

    /// The mean of the samples of the 24 hours up to `now_ms`.
    pub fn day_mean(&self, now_ms: i64) -> Option<f64> {
        let last = now_ms.div_euclid(HOUR_MS);
        let (sum, n) = self
            .hours
            .iter()
            .filter(|b| b.0 > last - SPARK_HOURS as i64 && b.0 <= last)
            .fold((0.0, 0u32), |(s, n), b| (s + b.1, n + b.2));
        (n > 0).then(|| sum / f64::from(n))
    }
}

/// How bad a cluster looks, worst first when sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// No data younger than `state.max_answer_age_s`, or no set yet.
    Critical,
    /// Overloads raised, stale nodes or collector errors.
    Warning,
    /// Nothing to report.
    Ok,
}

/// One row of the clusters page and of `GET /api/v1/clusters`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterOverview {
    /// Cluster name.
    pub name: String,
    /// Worst first.
    pub health: Health,
    /// Why the health is not `ok`, in words.
    pub problems: Vec<String>,
    /// Nodes with a snapshot.
    pub nodes: u32,
    /// Stale nodes among them.
    pub stale_nodes: u32,
    /// Guests over every node.
    pub guests: u32,
    /// Overloads currently raised (node × reason).
    pub overloads: u32,
    /// Moves in the cached set.
    pub moves: u32,
    /// The newest snapshot, unix ms.
    pub data_at_unix_ms: i64,
    /// Wall clock minus that, ms (0 when the collector's clock is ahead).
    pub age_ms: i64,
    /// Errors of the last collection cycle (cluster-wide and per node).
    pub collector_errors: u32,
    /// The generation of the cached set (0: none yet).
    pub generation: u64,
}

/// `part` as a percentage of `total` (0 when `total` is 0).
pub fn pct(part: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        part as f64 / total as f64 * 100.0
    }
}

/// The JSON word of a node status.
pub fn status_word(s: i32) -> &'static str {
    match pb::NodeStatus::try_from(s) {
        Ok(pb::NodeStatus::Online) => "online",
        Ok(pb::NodeStatus::Offline) => "offline",
        Ok(pb::NodeStatus::Unreachable) => "unreachable",
        _ => "unknown",
    }
}

/// The word of an overload reason (JSON, and the events' message ids).
pub fn reason_word(r: i32) -> &'static str {
    match pb::OverloadReason::try_from(r) {
        Ok(pb::OverloadReason::Cpu) => "cpu",
        Ok(pb::OverloadReason::Memory) => "memory",
        Ok(pb::OverloadReason::Iowait) => "iowait",
        Ok(pb::OverloadReason::MemOvercommit) => "mem_overcommit",
        _ => "unspecified",
    }
}

/// The JSON word of an overload state.
pub fn state_word(s: i32) -> &'static str {
    match pb::OverloadState::try_from(s) {
        Ok(pb::OverloadState::Raised) => "raised",
        Ok(pb::OverloadState::Cleared) => "cleared",
        _ => "unspecified",
    }
}

/// An overload event as JSON (the dashboard's feed, `/api/v1/events`, the CLI's `events`).
pub fn event_json(e: &pb::OverloadEvent) -> Value {
    json!({
        "cluster": e.cluster,
        "node": e.node,
        "reason": reason_word(e.reason),
        "state": state_word(e.state),
        "value": e.value,
        "avg_24h": e.avg_24h,
        "threshold": e.threshold,
        "since_unix_ms": e.since_unix_ms,
        "at_unix_ms": e.at_unix_ms,
        "event_id": e.event_id,
    })
}

/// A collection error as JSON.
fn error_json(e: &pb::CollectionError) -> Value {
    json!({
        "node": e.node,
        "endpoint": e.endpoint,
        "path": e.path,
        "kind": pb::CollectionErrorKind::try_from(e.kind).map_or_else(
            |_| "unspecified".to_owned(),
            |k| k.as_str_name().trim_start_matches("COLLECTION_ERROR_KIND_").to_lowercase(),
        ),
        "message": e.message,
    })
}

impl State {
    /// Every cluster with snapshots, worst first (health, then overloads, moves, name).
    /// `max_age_ms` is `state.max_answer_age_s`: older data is critical.
    pub fn overview(&self, wall_ms: i64, max_age_ms: i64) -> Vec<ClusterOverview> {
        let mut out: Vec<ClusterOverview> = self
            .clusters
            .iter()
            .filter_map(|(name, c)| {
                let data_now = c.data_now_ms()?;
                let reference = data_now.max(wall_ms);
                let mut nodes = 0u32;
                let mut stale = 0u32;
                let mut guests = 0u32;
                let mut overloads = 0u32;
                let mut node_errors = 0u32;
                for n in c.nodes.values() {
                    let Some(s) = n.latest.as_ref() else { continue };
                    nodes += 1;
                    guests = guests.saturating_add(s.guests.len() as u32);
                    if self.is_stale(s.observed_at_unix_ms, reference) {
                        stale += 1;
                    }
                    overloads += n.overload.raised().len() as u32;
                    if !s.error.is_empty() {
                        node_errors += 1;
                    }
                }
                let status_errors = c.status.as_ref().map_or(0, |s| s.errors.len() as u32);
                let collector_errors = status_errors + node_errors;
                let age_ms = wall_ms.saturating_sub(data_now).max(0);
                let moves = c
                    .cached
                    .as_ref()
                    .map_or(0, |x| x.full.recommendations.len() as u32);
                let mut problems = Vec::new();
                if age_ms >= max_age_ms {
                    problems.push(format!("no data for {} s", age_ms / 1000));
                }
                if c.cached.is_none() {
                    problems.push("no recommendations yet".to_owned());
                }
                let critical = !problems.is_empty();
                if overloads > 0 {
                    problems.push(format!("{overloads} overload(s) raised"));
                }
                if stale > 0 {
                    problems.push(format!("{stale} stale node(s)"));
                }
                if collector_errors > 0 {
                    problems.push(format!("{collector_errors} collector error(s)"));
                }
                let health = if critical {
                    Health::Critical
                } else if problems.is_empty() {
                    Health::Ok
                } else {
                    Health::Warning
                };
                Some(ClusterOverview {
                    name: name.clone(),
                    health,
                    problems,
                    nodes,
                    stale_nodes: stale,
                    guests,
                    overloads,
                    moves,
                    data_at_unix_ms: data_now,
                    age_ms,
                    collector_errors,
                    generation: c.cached.as_ref().map_or(0, |x| x.generation),
                })
            })
            .collect();
        out.sort_by(|a, b| {
            a.health
                .cmp(&b.health)
                .then(b.overloads.cmp(&a.overloads))
                .then(b.moves.cmp(&a.moves))
                .then(b.collector_errors.cmp(&a.collector_errors))
                .then_with(|| a.name.cmp(&b.name))
        });
        out
    }

    /// A cluster's nodes for the cluster page: each node's current figures, 24 h averages,
    /// hourly series of the last 24 hours, overloads raised and badges; with the last cycle's
    /// collector errors. `None` for a cluster without snapshots.
    pub fn dashboard_cluster(&self, cluster: &str, wall_ms: i64) -> Option<Value> {
        let c = self.clusters.get(cluster)?;
        let data_now = c.data_now_ms()?;
        let reference = data_now.max(wall_ms);
        let nodes: Vec<Value> = c
            .nodes
            .values()
            .filter_map(|n| {
                let s = n.latest.as_ref()?;
                let day = n.window.day_stats(data_now);
                let hourly = n.window.hourly(data_now);
                let committed: std::collections::HashMap<i64, f64> =
                    n.committed.hourly(data_now).into_iter().collect();
                let series: Vec<Value> = hourly
                    .iter()
                    .skip(hourly.len().saturating_sub(SPARK_HOURS))
                    .map(|h| json!([h.t, h.cpu, h.mem, h.iowait, committed.get(&h.t)]))
                    .collect();
                let stale = self.is_stale(s.observed_at_unix_ms, reference);
                let overloaded: Vec<&str> = n
                    .overload
                    .raised()
                    .into_iter()
                    .map(|r| reason_word(r as i32))
                    .collect();
                Some(json!({
                    "node": s.node,
                    "status": status_word(s.status),
                    "stale": stale,
                    "missed_cycle": !n.current,
                    "maintenance": s.maintenance,
                    "observed_at_unix_ms": s.observed_at_unix_ms,
                    "cpu": s.cpu_fraction * 100.0,
                    "cpu_threads": s.cpu_threads,
                    "mem": pct(s.mem_used_bytes, s.mem_total_bytes),
                    "mem_used_bytes": s.mem_used_bytes,
                    "mem_total_bytes": s.mem_total_bytes,
                    "committed_mem_bytes": s.committed_mem_bytes,
                    "committed_pct": pct(s.committed_mem_bytes, s.mem_total_bytes),
                    "overcommit_ratio": s.overcommit_ratio,
                    "iowait": s.iowait_fraction.map(|v| v * 100.0),
                    "guests": s.guests.len(),
                    "running_guests": s.guests.iter().filter(|g| g.status == "running").count(),
                    "avg_cpu_24h": day.map(|d| d.avg_cpu),
                    "max_cpu_24h": day.map(|d| d.max_cpu),
                    "avg_mem_24h": day.map(|d| d.avg_mem),
                    "avg_iowait_24h": day.map(|d| d.avg_iowait),
                    "avg_committed_24h": n.committed.day_mean(data_now),
                    "series_24h": series,
                    "overloaded": overloaded,
                    "error": s.error,
                }))
            })
            .collect();
        let status = c.status.as_ref();
        Some(json!({
            "cluster": cluster,
            "data_at_unix_ms": data_now,
            "age_ms": wall_ms.saturating_sub(data_now).max(0),
            "clock_skew_ms": c.clock_skew_ms,
            "cycle": c.completed_cycle,
            "pve_version": status.map_or("", |s| s.pve_version.as_str()),
            "quorate": status.map(|s| s.quorate),
            "collector_errors": status.map_or_else(Vec::new, |s| s.errors.iter().map(error_json).collect()),
            "thresholds": self.settings.thresholds,
            "overcommit_threshold": self.settings.overload.overcommit_threshold,
            "nodes": nodes,
        }))
    }

    /// One guest's figures from the latest snapshot of the node that runs it. `None` when no
    /// node of the cluster lists it.
    pub fn dashboard_guest(&self, cluster: &str, vmid: u32) -> Option<Value> {
        let c = self.clusters.get(cluster)?;
        let node = c.claims.get(&vmid)?;
        let s = c.nodes.get(node)?.latest.as_ref()?;
        let g = s.guests.iter().find(|g| g.vmid == vmid)?;
        Some(json!({
            "cluster": cluster,
            "node": s.node,
            "vmid": g.vmid,
            "name": g.name,
            "type": match pb::GuestKind::try_from(g.kind) {
                Ok(pb::GuestKind::Lxc) => "lxc",
                Ok(pb::GuestKind::Qemu) => "qemu",
                _ => "unknown",
            },
            "status": g.status,
            "cpu": g.cpu_fraction * 100.0,
            "vcpus": g.vcpus,
            "mem_used_bytes": g.mem_used_bytes,
            "mem_max_bytes": g.mem_max_bytes,
            "balloon_min_bytes": g.balloon_min_bytes,
            "disk_read_bps": g.disk_read_bps,
            "disk_write_bps": g.disk_write_bps,
            "net_in_bps": g.net_in_bps,
            "net_out_bps": g.net_out_bps,
            "tags": g.tags,
            "pool": g.pool,
            "ha_managed": g.ha_managed,
            "lock": g.lock,
            "template": g.template,
            "passthrough": g.passthrough,
            "storages": g.storages,
            "local_storages": g.local_storages,
            "uptime_s": g.uptime_s,
            "observed_at_unix_ms": s.observed_at_unix_ms,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn overview_nodes_and_guests_come_from_the_latest_snapshots() {
        let mut st = State::new(settings());
        assert!(st.overview(T0, 300_000).is_empty());
        assert!(st.dashboard_cluster("c", T0).is_none());
        ingest_snap(&mut st, &snap("a", 1, T0, 0.25)).unwrap();
        let mut b = snap("b", 1, T0, 0.5);
        b.error = "rrd: timeout".into();
        ingest_snap(&mut st, &b).unwrap();
        let rows = st.overview(T0 + 1000, 300_000);
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(
            (r.nodes, r.guests, r.moves, r.collector_errors),
            (2, 2, 0, 1)
        );
        assert_eq!(r.age_ms, 1000);
        assert_eq!(r.health, Health::Critical, "no set yet: {:?}", r.problems);
        let old = st.overview(T0 + 400_000, 300_000);
        assert!(
            old[0].problems[0].starts_with("no data for 400 s"),
            "{:?}",
            old[0].problems
        );

        let c = st.dashboard_cluster("c", T0).unwrap();
        assert_eq!(c["nodes"].as_array().unwrap().len(), 2);
        assert_eq!(c["nodes"][0]["node"], "a");
        assert_eq!(c["nodes"][0]["cpu"], 25.0);
        assert_eq!(c["nodes"][0]["committed_pct"], 25.0);
        assert_eq!(c["nodes"][1]["error"], "rrd: timeout");
        let g = st.dashboard_guest("c", 200).unwrap();
        assert_eq!(
            (g["node"].as_str(), g["type"].as_str()),
            (Some("b"), Some("qemu"))
        );
        assert!(st.dashboard_guest("c", 999).is_none());
    }

    #[test]
    fn committed_hours_keep_the_last_day_by_hour() {
        let mut c = CommittedHours::default();
        let h0 = T0 - T0.rem_euclid(HOUR_MS);
        c.record(h0, 50.0);
        c.record(h0 + 60_000, 70.0);
        c.record(h0 + HOUR_MS, 100.0);
        assert_eq!(
            c.hourly(h0 + HOUR_MS),
            vec![(h0 / 1000, 60.0), (h0 / 1000 + 3600, 100.0)]
        );
        assert_eq!(c.day_mean(h0 + HOUR_MS), Some(220.0 / 3.0));
        c.record(h0 + 30 * HOUR_MS, 10.0);
        assert_eq!(
            c.hourly(h0 + 30 * HOUR_MS),
            vec![(h0 / 1000 + 30 * 3600, 10.0)]
        );
        assert_eq!(c.hours.len(), 1, "older than a day: forgotten");
        c.record(h0, 99.0);
        assert_eq!(c.hours.len(), 1, "a sample older than the day is ignored");
        c.record(h0 + 29 * HOUR_MS, 20.0);
        assert_eq!(
            c.hours.iter().map(|b| b.0).collect::<Vec<_>>(),
            vec![h0 / HOUR_MS + 29, h0 / HOUR_MS + 30]
        );
        c.record(h0, f64::NAN);
        assert_eq!(c.day_mean(h0 + 30 * HOUR_MS), Some(15.0));
    }

    #[test]
    fn health_orders_critical_first() {
        let mut v = [Health::Ok, Health::Critical, Health::Warning];
        v.sort();
        assert_eq!(v, [Health::Critical, Health::Warning, Health::Ok]);
        assert_eq!(
            serde_json::to_value(Health::Critical).unwrap(),
            json!("critical")
        );
    }
}
