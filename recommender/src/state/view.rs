//! The engine's view of a cluster ([`ClusterView`]), built from the nodes' latest snapshots
//! and windows.
//!
//! Time: the windows and the view use the data's own clock (the newest snapshot of the
//! cluster), so replicas and restarts that saw the same messages compute the same set.
//! Staleness compares a node's last snapshot with the later of that instant and the wall clock.

use std::collections::{BTreeMap, BTreeSet};

use proxbalance_engine::window::Sample;
use proxbalance_engine::{
    self as engine, ClusterView, CurrentMetrics, DayAverages, GuestKind, GuestView, HaGuests,
    NodeStatus, NodeView, VIEW_FORMAT, WeekStats,
};
use proxbalance_proto::v1 as pb;

use super::State;
use crate::placement;

const GIB: f64 = (1u64 << 30) as f64;

/// The window sample of a snapshot (IOWait carried over from the previous one when unread).
pub(super) fn sample_of(s: &pb::NodeSnapshot, previous_iowait: f64) -> Sample {
    let mem = if s.mem_total_bytes > 0 {
        s.mem_used_bytes as f64 / s.mem_total_bytes as f64 * 100.0
    } else {
        0.0
    };
    Sample {
        t_ms: s.observed_at_unix_ms,
        cpu: s.cpu_fraction * 100.0,
        mem,
        iowait: s.iowait_fraction.map_or(previous_iowait, |v| v * 100.0),
        load: s.load_average.first().copied().unwrap_or(0.0),
    }
}

/// The window samples of a history series (points missing CPU or memory are skipped).
pub(super) fn history_samples(points: &[pb::HistoryPoint]) -> Vec<Sample> {
    points
        .iter()
        .filter_map(|p| {
            let cpu = p.cpu_fraction?;
            let total = p.mem_total_bytes.filter(|t| *t > 0.0)?;
            let used = p.mem_used_bytes?;
            Some(Sample {
                t_ms: p.time_unix_ms,
                cpu: cpu * 100.0,
                mem: used / total * 100.0,
                iowait: p.iowait_fraction.unwrap_or(0.0) * 100.0,
                load: p.load_average.unwrap_or(0.0),
            })
        })
        .collect()
}

/// Proxmox's scheduler settings as the engine reads them.
pub(crate) fn crs_of(c: &pb::CrsSettings) -> proxbalance_engine::Crs {
    use proxbalance_engine::CrsMode;
    proxbalance_engine::Crs {
        ha: match c.ha.as_str() {
            "static" => CrsMode::Static,
            "dynamic" => CrsMode::Dynamic,
            _ => CrsMode::Basic,
        },
        auto_rebalance: c.ha_auto_rebalance,
    }
}

impl State {
    /// The engine's view of `cluster` built from the windows, or `None` for an unknown
    /// cluster or one without snapshots.
    pub fn view(&self, cluster: &str, wall_ms: i64) -> Option<ClusterView> {
        let c = self.clusters.get(cluster)?;
        let data_now = c.data_now_ms()?;
        let reference = data_now.max(wall_ms);
        let mut nodes = Vec::new();
        let mut maintenance = Vec::new();
        // vmid → (observed_at, node name, guest): the freshest report of a guest wins.
        let mut guests: BTreeMap<u32, (i64, &str, &pb::Guest)> = BTreeMap::new();
        for (name, n) in &c.nodes {
            let Some(s) = &n.latest else { continue };
            let stale = self.is_stale(s.observed_at_unix_ms, reference);
            let total_mem_gb = s.mem_total_bytes as f64 / GIB;
            let status = match pb::NodeStatus::try_from(s.status) {
                Ok(pb::NodeStatus::Online) if !stale && n.current && total_mem_gb > 0.0 => {
                    NodeStatus::Online
                }
                Ok(pb::NodeStatus::Offline) => NodeStatus::Offline,
                _ => NodeStatus::Unknown,
            };
            let cur = sample_of(s, n.window.latest().map_or(0.0, |l| l.iowait));
            let day = n.window.day_stats(data_now);
            let week = n.window.week_stats(data_now);
            let mut storage: Vec<engine::Storage> = Vec::new();
            let mut ids = BTreeSet::new();
            for st in &s.storages {
                if ids.insert(st.id.as_str()) {
                    storage.push(engine::Storage {
                        id: st.id.clone(),
                        active: st.active,
                        shared: st.shared,
                        usage_pct: if st.total_bytes > 0 {
                            st.used_bytes as f64 / st.total_bytes as f64 * 100.0
                        } else {
                            0.0
                        },
                    });
                }
            }
            if s.maintenance && status == NodeStatus::Online {
                maintenance.push(name.clone());
            }
            nodes.push(NodeView {
                name: name.clone(),
                status,
                cpu_cores: s.cpu_threads.max(1),
                total_mem_gb,
                current: CurrentMetrics {
                    cpu: cur.cpu,
                    mem: cur.mem,
                    iowait: cur.iowait,
                },
                avg_24h: day.map(|d| DayAverages {
                    cpu: d.avg_cpu,
                    mem: d.avg_mem,
                    iowait: d.avg_iowait,
                    load: d.avg_load,
                }),
                week: week.map(|w| WeekStats {
                    avg_cpu: w.avg_cpu,
                    max_cpu: w.max_cpu,
                    avg_mem: w.avg_mem,
                    max_mem: w.max_mem,
                    avg_iowait: w.avg_iowait,
                }),
                history: n.window.hourly(data_now),
                storage,
                reserve_gb: self.settings.placement.node_reserve_gb(
                    cluster,
                    name,
                    total_mem_gb,
                    &self.settings.config,
                ),
            });
            for g in &s.guests {
                let better = guests.get(&g.vmid).is_none_or(|(t, node, _)| {
                    (s.observed_at_unix_ms, name.as_str()) > (*t, *node)
                });
                if better {
                    guests.insert(g.vmid, (s.observed_at_unix_ms, name.as_str(), g));
                }
            }
        }
        let guests = guests
            .into_values()
            .map(|(_, node, g)| GuestView {
                vmid: g.vmid,
                name: g.name.clone(),
                kind: if g.kind == pb::GuestKind::Lxc as i32 {
                    GuestKind::Lxc
                } else {
                    GuestKind::Qemu
                },
                node: node.to_owned(),
                status: if g.status.trim().is_empty() {
                    "unknown".to_owned()
                } else {
                    g.status.clone()
                },
                cpu_percent: g.cpu_fraction * 100.0,
                cpu_cores: (g.vcpus.ceil() as u32).max(1),
                mem_used_gb: g.mem_used_bytes as f64 / GIB,
                mem_max_gb: g.mem_max_bytes as f64 / GIB,
                disk_read_bps: g.disk_read_bps,
                disk_write_bps: g.disk_write_bps,
                net_in_bps: g.net_in_bps,
                net_out_bps: g.net_out_bps,
                tags: g.tags.clone(),
                ha_managed: g.ha_managed,
                lock: (!g.lock.is_empty()).then(|| g.lock.clone()),
                template: g.template,
                passthrough: g.passthrough,
                unshared_bind_mount: g.unshared_bind_mount,
                storages: g.storages.clone(),
                config_known: g.config_known,
                pool: (!g.pool.is_empty()).then(|| g.pool.clone()),
            })
            .collect::<Vec<GuestView>>();
        // Pool rules of the configuration, then the cluster's HA rules (crate::placement).
        let status = c.status.as_ref();
        let mut rules = self.settings.placement.pool_rules(cluster, &guests);
        if let Some(st) = status {
            rules.extend(placement::ha_rules(st, &nodes, &maintenance, &guests));
        }
        let mut penalty_config = self.settings.config.to_map();
        // HA guests are planned within their HA rules only once those are known.
        if self.settings.config.ha_guests == HaGuests::Recommend
            && !placement::ha_rules_known(status)
        {
            penalty_config.insert("ha_guests".into(), "skip".into());
        }
        Some(ClusterView {
            format: VIEW_FORMAT.to_owned(),
            cluster: cluster.to_owned(),
            now: data_now.div_euclid(1000),
            thresholds: Some(self.settings.thresholds),
            maintenance_nodes: maintenance,
            nodes,
            guests,
            penalty_config,
            rules,
            crs: status.and_then(|s| s.crs.as_ref()).map(crs_of),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn view_marks_stale_and_offline_nodes_and_dedupes_guests() {
        let mut st = State::new(settings());
        ingest_snap(&mut st, &snap("a", 1, T0, 0.5)).unwrap();
        // Guest 100 migrated to b by the next cycle: b's report is fresher. (In the same cycle
        // it would be a guest on two nodes, refused.)
        let mut b = snap("b", 2, T0 + 120_000, 0.2);
        b.guests[0].vmid = 100;
        ingest_snap(&mut st, &b).unwrap();
        let mut c = snap("d", 1, T0 + 120_000, 0.2);
        c.status = pb::NodeStatus::Unreachable as i32;
        c.guests.clear();
        ingest_snap(&mut st, &c).unwrap();
        let view = st.view("c", T0).unwrap();
        assert_eq!(view.now, (T0 + 120_000) / 1000);
        let status: Vec<(&str, NodeStatus)> = view
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.status))
            .collect();
        assert_eq!(
            status,
            vec![
                ("a", NodeStatus::Unknown),
                ("b", NodeStatus::Online),
                ("d", NodeStatus::Unknown)
            ]
        );
        assert_eq!(view.guests.len(), 1);
        assert_eq!(view.guests[0].node, "b");
        assert_eq!(view.guests[0].cpu_percent, 50.0);
        let b = &view.nodes[1];
        assert_eq!(b.current.cpu, 20.0);
        assert_eq!(b.current.mem, 25.0);
        assert_eq!(b.total_mem_gb, 32.0);
        assert_eq!(b.avg_24h.map(|d| d.cpu), Some(20.0));
        // The view is valid for the engine.
        let cluster = view.validate().unwrap();
        assert_eq!(engine::plan(&cluster, None).cluster, "c");
        // Wall clock far ahead: everything is stale, and the state is not fresh.
        assert!(!st.has_fresh_data(T0)); // no cached set yet
        let v = st.view("c", T0 + 3_600_000).unwrap();
        assert!(v.nodes.iter().all(|n| n.status != NodeStatus::Online));
    }

    #[test]
    fn only_nodes_of_the_completing_cycle_are_targets() {
        let mut st = State::new(settings());
        let d = |cycle, at, cpu| {
            let mut s = snap("d", cycle, at, cpu);
            s.guests[0].vmid = 300;
            s
        };
        ingest_snap(&mut st, &snap("a", 1, T0, 0.5)).unwrap();
        ingest_snap(&mut st, &snap("b", 1, T0, 0.5)).unwrap();
        ingest_snap(&mut st, &d(1, T0, 0.5)).unwrap();
        st.apply_status(status(1, &["a", "b", "d"]));
        // Cycle 2: d's snapshot is refused (NaN); its cycle-1 snapshot is 10 s old, far from
        // stale, but it is not this cycle's.
        let t2 = T0 + 10_000;
        ingest_snap(&mut st, &snap("a", 2, t2, 0.5)).unwrap();
        ingest_snap(&mut st, &snap("b", 2, t2, 0.5)).unwrap();
        assert!(ingest_snap(&mut st, &d(2, t2, f64::NAN)).is_err());
        st.apply_status(status(2, &["a", "b", "d"]));
        let statuses = |st: &State| -> Vec<(String, NodeStatus)> {
            st.view("c", t2)
                .unwrap()
                .nodes
                .into_iter()
                .map(|n| (n.name, n.status))
                .collect()
        };
        assert_eq!(
            statuses(&st),
            vec![
                ("a".to_owned(), NodeStatus::Online),
                ("b".to_owned(), NodeStatus::Online),
                ("d".to_owned(), NodeStatus::Unknown)
            ]
        );
        let missed: Vec<bool> = st
            .cluster_state("c", t2)
            .unwrap()
            .nodes
            .iter()
            .map(|n| n.missed_cycle)
            .collect();
        assert_eq!(missed, vec![false, false, true]);
        // d reports again in cycle 3: a target again, before and after the cycle completes.
        let t3 = T0 + 20_000;
        ingest_snap(&mut st, &d(3, t3, 0.5)).unwrap();
        assert_eq!(statuses(&st)[2], ("d".to_owned(), NodeStatus::Online));
        ingest_snap(&mut st, &snap("a", 3, t3, 0.5)).unwrap();
        ingest_snap(&mut st, &snap("b", 3, t3, 0.5)).unwrap();
        assert!(statuses(&st).iter().all(|(_, s)| *s == NodeStatus::Online));
    }

    #[test]
    fn the_view_carries_pool_and_ha_rules_and_node_reserves() {
        let config = crate::config::Config::from_toml(
            "[engine.penalties]\nha_guests = \"recommend\"\n\
             [engine.pools.db]\nanti_affinity = true\n\
             [engine.clusters.c.nodes.a]\nreserve_gb = 4\n",
        )
        .unwrap();
        let (penalties, _) = config.engine.resolve().unwrap();
        let mut st = State::new(StateSettings {
            config: penalties,
            placement: crate::placement::Placement::from_config(&config.engine),
            ..settings()
        });
        let mut a = snap("a", 1, T0, 0.5);
        a.guests[0].ha_managed = true;
        a.guests[0].pool = "db".into();
        let mut b = snap("b", 1, T0, 0.5);
        b.guests[0].pool = "db".into();
        ingest_snap(&mut st, &a).unwrap();
        ingest_snap(&mut st, &b).unwrap();
        st.apply_status(status(1, &["a", "b"]));
        let view = st.view("c", T0).unwrap();
        let reserves: Vec<Option<f64>> = view.nodes.iter().map(|n| n.reserve_gb).collect();
        assert_eq!(reserves, [Some(4.0), None]);
        let names: Vec<&str> = view.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["pool:db"]);
        assert_eq!(view.rules[0].vmids, [100, 200]);
        // No HA rules read yet: HA guests are not planned, whatever the configuration says.
        assert_eq!(view.penalty_config["ha_guests"], "skip");

        let mut with_rules = status(2, &["a", "b"]);
        with_rules.ha_rules_source = pb::HaRulesSource::Rules as i32;
        with_rules.ha_rules = vec![pb::HaRule {
            name: "stay".into(),
            kind: pb::HaRuleKind::NodeAffinity as i32,
            vmids: vec![100, 200],
            nodes: vec![pb::HaRuleNode {
                node: "a".into(),
                priority: 1,
            }],
            strict: true,
        }];
        for s in [&mut a, &mut b] {
            s.cycle = 2;
            s.observed_at_unix_ms = T0 + 10_000;
            ingest_snap(&mut st, s).unwrap();
        }
        st.apply_status(with_rules);
        let view = st.view("c", T0 + 10_000).unwrap();
        assert_eq!(view.penalty_config["ha_guests"], "recommend");
        let rules: Vec<(&str, &[u32])> = view
            .rules
            .iter()
            .map(|r| (r.name.as_str(), r.vmids.as_slice()))
            .collect();
        // 200 is not HA-managed: the HA rule does not bind it.
        assert_eq!(
            rules,
            [("pool:db", &[100, 200][..]), ("ha:stay", &[100][..])]
        );
        let cluster = view.validate().unwrap();
        let options = engine::migration_options(&cluster, 100).unwrap();
        assert_eq!(
            options.targets[0].gate_reason.as_deref(),
            Some("pinned elsewhere (rule ha:stay)")
        );
    }

    #[test]
    fn a_guest_whose_configuration_is_unread_stays_where_it_is() {
        let mut st = State::new(settings());
        let mut a = snap("a", 1, T0, 0.95);
        a.guests[0].passthrough = false;
        a.guests[0].config_known = false;
        ingest_snap(&mut st, &a).unwrap();
        ingest_snap(&mut st, &snap("b", 1, T0, 0.05)).unwrap();
        let view = st.view("c", T0).unwrap();
        let guest = view.guests.iter().find(|g| g.vmid == 100).unwrap();
        assert!(!guest.config_known);
        let cluster = view.validate().unwrap();
        let set = engine::plan(&cluster, None);
        assert!(set.recommendations.iter().all(|r| r.vmid != 100));
        let skipped = set.skipped.iter().find(|s| s.vmid == 100).unwrap();
        assert_eq!(skipped.reason, engine::SkipReason::ConfigUnknown);
        let options = engine::migration_options(&cluster, 100).unwrap();
        assert_eq!(
            options.source.guest_gate.map(|g| g.reason),
            Some(engine::SkipReason::ConfigUnknown)
        );
    }
}
