//! Deterministic synthetic clusters for property tests, benchmarks and load drivers.
//!
//! The same `(nodes, guests, seed)` always gives the same view. Node load is derived from the
//! guests placed on it, so committed memory, used memory and CPU are consistent with each other.

use serde_json::Map;

use crate::view::{
    ClusterView, CurrentMetrics, DayAverages, GuestKind, GuestView, HistorySample, NodeStatus,
    NodeView, Storage, VIEW_FORMAT, WeekStats,
};

/// A small, fast, seedable generator (splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform index below `n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// One element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

const NOW: i64 = 1_764_230_400;

/// A cluster of `nodes` nodes and `guests` guests drawn from `seed`, with the variety the engine
/// must handle: offline and maintenance nodes, IOWait pressure, histories steady, volatile and
/// rising, anti-affinity and affinity groups, HA, locks, templates, passthrough disks and storages
/// that only some nodes have. `nodes` must be at least 1.
pub fn cluster_view(nodes: usize, guests: usize, seed: u64) -> ClusterView {
    let nodes = nodes.max(1);
    let mut rng = Rng::new(seed);
    let per_node = guests as f64 / nodes.max(1) as f64;
    let base_mem = (per_node * 7.0 / 0.75).max(32.0);
    let mut node_views: Vec<NodeView> = (0..nodes)
        .map(|i| {
            let status = if nodes > 2 && rng.chance(0.04) {
                NodeStatus::Offline
            } else {
                NodeStatus::Online
            };
            let mut storage = vec![Storage {
                id: "local-lvm".into(),
                active: true,
                shared: false,
                usage_pct: rng.range(5.0, 90.0),
            }];
            if rng.chance(0.9) {
                storage.push(Storage {
                    id: "ceph".into(),
                    active: true,
                    shared: true,
                    usage_pct: rng.range(20.0, 70.0),
                });
            }
            if rng.chance(0.5) {
                storage.push(Storage {
                    id: "nfs".into(),
                    active: rng.chance(0.9),
                    shared: true,
                    usage_pct: rng.range(10.0, 80.0),
                });
            }
            NodeView {
                name: format!("pve{i:03}"),
                status,
                cpu_cores: rng.pick(&[8, 16, 32, 64]),
                total_mem_gb: (base_mem * rng.range(0.6, 1.6)).round(),
                current: CurrentMetrics {
                    cpu: 0.0,
                    mem: 0.0,
                    iowait: 0.0,
                },
                avg_24h: None,
                week: None,
                history: Vec::new(),
                storage,
                reserve_gb: None,
            }
        })
        .collect();

    let mut guest_views = Vec::with_capacity(guests);
    let mut running_on: Vec<Vec<usize>> = vec![Vec::new(); nodes];
    for i in 0..guests {
        let node = rng.below(nodes.max(1));
        let position = guest_views.len();
        let kind = if rng.chance(0.8) {
            GuestKind::Qemu
        } else {
            GuestKind::Lxc
        };
        let running = rng.chance(0.88);
        let mem_max: f64 = rng.pick(&[1.0, 2.0, 4.0, 4.0, 8.0, 8.0, 16.0, 32.0]);
        let mut tags = Vec::new();
        if rng.chance(0.08) {
            tags.push(format!("exclude_{}", rng.pick(&["db", "dns", "web"])));
        }
        if rng.chance(0.06) {
            tags.push(format!("affinity_{}", rng.pick(&["app", "cache"])));
        }
        if rng.chance(0.03) {
            tags.push("ignore".into());
        }
        if rng.chance(0.02) {
            tags.push("io_exempt".into());
        }
        let io_heavy = rng.chance(0.15);
        let on = &node_views[node];
        let local: Vec<String> = on.storage.iter().map(|s| s.id.clone()).collect();
        let storages = if rng.chance(0.8) && local.iter().any(|s| s == "ceph") {
            vec!["ceph".to_owned()]
        } else {
            vec![local[rng.below(local.len())].clone()]
        };
        guest_views.push(GuestView {
            vmid: 100 + i as u32,
            name: format!("guest-{i}"),
            kind,
            node: on.name.clone(),
            status: if running { "running" } else { "stopped" }.into(),
            cpu_percent: if running { rng.range(0.0, 90.0) } else { 0.0 },
            cpu_cores: rng.pick(&[1, 2, 2, 4, 4, 8]),
            mem_used_gb: if running {
                mem_max * rng.range(0.2, 1.0)
            } else {
                0.0
            },
            mem_max_gb: mem_max,
            disk_read_bps: if running && io_heavy {
                rng.range(1e6, 2e8)
            } else if running {
                rng.range(0.0, 2e6)
            } else {
                0.0
            },
            disk_write_bps: if running && io_heavy {
                rng.range(1e6, 1e8)
            } else {
                0.0
            },
            net_in_bps: if running { rng.range(0.0, 5e7) } else { 0.0 },
            net_out_bps: if running { rng.range(0.0, 5e7) } else { 0.0 },
            tags,
            ha_managed: rng.chance(0.05),
            lock: rng.chance(0.02).then(|| "backup".to_owned()),
            template: !running && rng.chance(0.1),
            passthrough: rng.chance(0.02),
            unshared_bind_mount: kind == GuestKind::Lxc && rng.chance(0.05),
            storages,
            config_known: true,
            pool: None,
        });
        if running {
            running_on[node].push(position);
        }
    }

    for (ni, n) in node_views.iter_mut().enumerate() {
        let on: Vec<&GuestView> = running_on[ni].iter().map(|&i| &guest_views[i]).collect();
        let cpu: f64 = on
            .iter()
            .map(|g| g.cpu_percent * f64::from(g.cpu_cores))
            .sum::<f64>()
            / f64::from(n.cpu_cores);
        let mem: f64 = on.iter().map(|g| g.mem_used_gb).sum::<f64>() / n.total_mem_gb * 100.0;
        let io: f64 = on
            .iter()
            .map(|g| (g.disk_read_bps + g.disk_write_bps) / 1_048_576.0 / 20.0)
            .sum();
        n.current = CurrentMetrics {
            cpu: (cpu + rng.range(1.0, 5.0)).min(100.0),
            mem: (mem + rng.range(2.0, 6.0)).min(99.0),
            iowait: (io + rng.range(0.0, 3.0)).min(60.0),
        };
        if n.status != NodeStatus::Online || rng.chance(0.15) {
            continue;
        }
        let c = n.current;
        let day = DayAverages {
            cpu: (c.cpu * rng.range(0.6, 1.2)).min(100.0),
            mem: (c.mem * rng.range(0.9, 1.05)).min(100.0),
            iowait: c.iowait * rng.range(0.2, 1.1),
            load: f64::from(n.cpu_cores) * c.cpu / 100.0 * rng.range(0.8, 1.2),
        };
        n.avg_24h = Some(day);
        n.week = Some(WeekStats {
            avg_cpu: (day.cpu * rng.range(0.8, 1.1)).min(100.0),
            max_cpu: (day.cpu * rng.range(1.1, 1.6)).min(100.0),
            avg_mem: day.mem,
            max_mem: (day.mem * rng.range(1.0, 1.15)).min(100.0),
            avg_iowait: day.iowait * rng.range(0.7, 1.1),
        });
        let profile = rng.below(3);
        n.history = (0..48)
            .map(|h| {
                let t = NOW - (48 - h) * 3600;
                let cpu = match profile {
                    0 => day.cpu + rng.range(-1.0, 1.0),
                    1 => day.cpu * rng.range(0.2, 1.8),
                    _ => day.cpu * 0.6 + h as f64 * day.cpu * 0.01,
                };
                HistorySample {
                    t,
                    cpu: cpu.clamp(0.0, 100.0),
                    mem: day.mem,
                    iowait: day.iowait * rng.range(0.5, 1.5),
                }
            })
            .collect();
    }

    let online: Vec<String> = node_views
        .iter()
        .filter(|n| n.status == NodeStatus::Online)
        .map(|n| n.name.clone())
        .collect();
    let maintenance_nodes = if online.len() > 2 && rng.chance(0.2) {
        vec![online[rng.below(online.len())].clone()]
    } else {
        Vec::new()
    };
    ClusterView {
        format: VIEW_FORMAT.to_owned(),
        cluster: format!("synthetic-{seed}"),
        now: NOW,
        thresholds: None,
        maintenance_nodes,
        nodes: node_views,
        guests: guest_views,
        penalty_config: Map::new(),
        rules: Vec::new(),
        crs: None,
    }
}

/// [`cluster_view`] with placement rules on top, drawn from the same seed: pools with strict and
/// soft anti-affinity, affinity and node-affinity rules (priorities included), Proxmox-HA-style
/// node-affinity rules, `pin_`/`plb_pin_`/`prefer_` tags, HA guests planned within their rules,
/// and node reserves.
pub fn cluster_view_with_rules(nodes: usize, guests: usize, seed: u64) -> ClusterView {
    let mut view = cluster_view(nodes, guests, seed);
    let mut rng = Rng::new(seed ^ 0x7275_6c65);
    let names: Vec<String> = view.nodes.iter().map(|n| n.name.clone()).collect();
    let vmids: Vec<u32> = view.guests.iter().map(|g| g.vmid).collect();
    if vmids.is_empty() {
        return view;
    }
    let pick_guests = |rng: &mut Rng, n: usize| -> Vec<u32> {
        let mut out: Vec<u32> = (0..n).map(|_| vmids[rng.below(vmids.len())]).collect();
        out.sort_unstable();
        out.dedup();
        out
    };
    let pick_nodes = |rng: &mut Rng, n: usize| -> Vec<crate::rules::RuleNode> {
        let mut out: Vec<crate::rules::RuleNode> = Vec::new();
        for _ in 0..n {
            let node = names[rng.below(names.len())].clone();
            if out.iter().all(|x| x.node != node) {
                out.push(crate::rules::RuleNode {
                    node,
                    priority: rng.below(3) as i64,
                });
            }
        }
        out
    };
    let rules = 1 + rng.below(6);
    for i in 0..rules {
        let strict = rng.chance(0.6);
        let kind = rng.below(3);
        let size = rng.below(4);
        let (kind, members, nodes) = match kind {
            0 => (
                crate::rules::RuleKind::AntiAffinity,
                pick_guests(&mut rng, 2 + size),
                Vec::new(),
            ),
            1 => (
                crate::rules::RuleKind::Affinity,
                pick_guests(&mut rng, 2 + size % 2),
                Vec::new(),
            ),
            _ => {
                let members = pick_guests(&mut rng, 1 + size);
                let count = 1 + rng.below(3);
                let nodes = pick_nodes(&mut rng, count);
                (crate::rules::RuleKind::NodeAffinity, members, nodes)
            }
        };
        view.rules.push(crate::rules::RuleView {
            name: format!("{}:{i}", if rng.chance(0.5) { "pool" } else { "ha" }),
            kind,
            vmids: members,
            nodes,
            strict,
        });
    }
    for g in &mut view.guests {
        if rng.chance(0.05) {
            let node = names[rng.below(names.len())].clone();
            let tag = match rng.below(3) {
                0 => format!("pin_{node}"),
                1 => format!("plb_pin_{node}"),
                _ => format!("prefer_{node}"),
            };
            g.tags.push(tag);
        }
    }
    if rng.chance(0.5) {
        view.penalty_config
            .insert("ha_guests".into(), serde_json::Value::from("recommend"));
    }
    if rng.chance(0.3) {
        view.penalty_config
            .insert("node_reserve_percent".into(), serde_json::Value::from(5.0));
    }
    for n in &mut view.nodes {
        if rng.chance(0.1) {
            n.reserve_gb = Some((n.total_mem_gb * 0.1).round());
        }
    }
    view
}
