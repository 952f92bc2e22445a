//! What the state tells gRPC callers about the clusters: `ListClusters` summaries and
//! `GetClusterState`.

use proxbalance_proto::v1 as pb;

use super::State;

impl State {
    /// The summaries of every cluster with snapshots.
    pub fn summaries(&self, wall_ms: i64) -> Vec<pb::ClusterSummary> {
        self.clusters
            .iter()
            .filter_map(|(name, c)| {
                let data_now = c.data_now_ms()?;
                let reference = data_now.max(wall_ms);
                let latest: Vec<&pb::NodeSnapshot> =
                    c.nodes.values().filter_map(|n| n.latest.as_ref()).collect();
                Some(pb::ClusterSummary {
                    name: name.clone(),
                    nodes: latest.len() as u32,
                    guests: latest.iter().map(|s| s.guests.len() as u32).sum(),
                    stale_nodes: latest
                        .iter()
                        .filter(|s| self.is_stale(s.observed_at_unix_ms, reference))
                        .count() as u32,
                    last_snapshot_unix_ms: data_now,
                    recommendations: c
                        .cached
                        .as_ref()
                        .map_or(0, |x| x.full.recommendations.len() as u32),
                })
            })
            .collect()
    }

    /// The state of one cluster for `GetClusterState`.
    pub fn cluster_state(
        &self,
        cluster: &str,
        wall_ms: i64,
    ) -> Option<pb::GetClusterStateResponse> {
        let c = self.clusters.get(cluster)?;
        let data_now = c.data_now_ms()?;
        let reference = data_now.max(wall_ms);
        let nodes = c
            .nodes
            .values()
            .filter_map(|n| {
                let s = n.latest.as_ref()?;
                let day = n.window.day_stats(data_now);
                let week = n.window.week_stats(data_now);
                Some(pb::NodeState {
                    latest: Some(s.clone()),
                    stale: self.is_stale(s.observed_at_unix_ms, reference),
                    stats: Some(pb::NodeWindowStats {
                        avg_cpu_24h: day.map_or(0.0, |d| d.avg_cpu),
                        max_cpu_24h: day.map_or(0.0, |d| d.max_cpu),
                        avg_mem_24h: day.map_or(0.0, |d| d.avg_mem),
                        max_mem_24h: day.map_or(0.0, |d| d.max_mem),
                        avg_iowait_24h: day.map_or(0.0, |d| d.avg_iowait),
                        avg_cpu_7d: week.map_or(0.0, |w| w.avg_cpu),
                        max_cpu_7d: week.map_or(0.0, |w| w.max_cpu),
                        avg_mem_7d: week.map_or(0.0, |w| w.avg_mem),
                        max_mem_7d: week.map_or(0.0, |w| w.max_mem),
                        avg_iowait_7d: week.map_or(0.0, |w| w.avg_iowait),
                        avg_load_24h: day.map_or(0.0, |d| d.avg_load),
                    }),
                    overloaded: n.overload.raised().into_iter().map(|r| r as i32).collect(),
                    hourly_samples: n.window.hourly(data_now).len() as u32,
                    raw_samples: n.window.raw().count() as u32,
                    missed_cycle: !n.current,
                })
            })
            .collect();
        let status = c.status.as_ref();
        Some(pb::GetClusterStateResponse {
            cluster: cluster.to_owned(),
            nodes,
            last_status: c.status.clone(),
            clock_skew_ms: c.clock_skew_ms,
            rules: c.rules.clone(),
            pve_balances_ha: status
                .and_then(|s| s.crs.as_ref())
                .is_some_and(|crs| super::view::crs_of(crs).balances_ha()),
            ha_guests: crate::placement::ha_guests(&self.settings.config, status) as i32,
        })
    }
}
