//! The simulated cluster a plan is made on.
//!
//! Every accepted move shifts the moving guests' contribution from their source to their target,
//! so each later decision sees the cluster as the plan leaves it. A guest's contribution, in the
//! units of the node it is measured against:
//!
//! - CPU: the cores it uses (`cpu_percent × vCPUs`), as points of the node's cores, taken off the
//!   source and added to the target in the current, 24-hour and week figures (averages and
//!   maxima) alike, and its busy cores in the 24-hour load average. The engine has no per-guest
//!   history, so a guest is assumed to have used over the windows what it uses now.
//! - Memory: the memory it uses, as points of the node's RAM, in the same figures; its configured
//!   memory (`maxmem`, running guests only) in committed memory and the overcommit ratio.
//! - IOWait (the IOWait-share model): a node's IOWait is attributed to its running guests in
//!   proportion to their disk I/O. A guest leaving takes its share with it: the source's IOWait
//!   (current, 24 h and week) is multiplied by `1 − io_guest / io_node`. A guest arriving adds
//!   the seed's prediction of what its I/O costs a node, 5 points per 100 MiB/s, at most 20 per
//!   guest (docs/engine.md §5), to the same three figures. The two sides differ on purpose: the
//!   source's share is measured, the target's cost is predicted, and the prediction is the one
//!   the scores already use.
//! - A guest tagged `io_exempt` takes the node's IOWait exemption with it.
//!
//! Nodes keep their history-based trend and stability: a plan does not rewrite the past.

use crate::config::{CapacityBasis, PenaltyConfig, Thresholds};
use crate::gates::TargetState;
use crate::score::{
    Impact, NodeBase, NodeLoad, PenaltyClass, PreparedNode, ScoreDetails, io_impact,
};
use crate::set::NodeFigures;
use crate::view::{Cluster, Guest, overcommit_ratio};

use super::groups::{Groups, StorageSet};
use super::objective::{Values, balance_values};

/// What one guest, or a group of guests moving together, brings to a node.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Contribution {
    /// Cores in use: Σ `cpu_percent / 100 × vCPUs`.
    pub cores_used: f64,
    /// Memory in use, GiB.
    pub mem_used_gb: f64,
    /// Configured memory of the running guests, GiB (what committed memory counts).
    pub committed_gb: f64,
    /// Configured memory of every guest, GiB (what the capacity gate and the move's cost count).
    pub mem_max_gb: f64,
    /// Disk read + write, bytes per second.
    pub io_bps: f64,
    /// IOWait points the guests are predicted to add to a node (docs/engine.md §5).
    pub io_points: f64,
    /// Running guests tagged `io_exempt` or with a passthrough disk.
    pub exempt: u32,
    pub running: u32,
}

impl Contribution {
    /// One guest's contribution.
    pub fn of(g: &Guest) -> Self {
        if !g.is_running() {
            return Contribution {
                mem_max_gb: g.mem_max_gb,
                ..Contribution::default()
            };
        }
        Contribution {
            cores_used: g.cpu_percent / 100.0 * f64::from(g.cpu_cores),
            mem_used_gb: g.mem_used_gb,
            committed_gb: g.mem_max_gb,
            mem_max_gb: g.mem_max_gb,
            io_bps: g.disk_io_bps(),
            io_points: io_impact(g),
            exempt: u32::from(g.tags.io_exempt || g.passthrough),
            running: 1,
        }
    }

    /// The sum of two contributions.
    pub fn plus(self, o: Contribution) -> Self {
        Contribution {
            cores_used: self.cores_used + o.cores_used,
            mem_used_gb: self.mem_used_gb + o.mem_used_gb,
            committed_gb: self.committed_gb + o.committed_gb,
            mem_max_gb: self.mem_max_gb + o.mem_max_gb,
            io_bps: self.io_bps + o.io_bps,
            io_points: self.io_points + o.io_points,
            exempt: self.exempt + o.exempt,
            running: self.running + o.running,
        }
    }
}

/// A node's score for a guest of no size, split by what it is made of.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct ScoreParts {
    pub cpu: f64,
    pub mem: f64,
    pub iowait: f64,
    pub overcommit: f64,
    /// The weighted components (health, predicted health, headroom, storage).
    pub components: f64,
}

impl ScoreParts {
    fn of(d: &ScoreDetails) -> Self {
        let mut parts = ScoreParts {
            components: d.score - d.total_penalties,
            ..ScoreParts::default()
        };
        for (class, v) in d.penalties.classified() {
            *match class {
                PenaltyClass::Cpu => &mut parts.cpu,
                PenaltyClass::Memory => &mut parts.mem,
                PenaltyClass::Iowait => &mut parts.iowait,
                PenaltyClass::Overcommit => &mut parts.overcommit,
            } += v;
        }
        parts
    }

    pub fn total(&self) -> f64 {
        self.cpu + self.mem + self.iowait + self.overcommit + self.components
    }
}

/// One node of the simulated cluster.
#[derive(Debug, Clone)]
pub(crate) struct SimNode {
    pub load: NodeLoad,
    /// Σ disk I/O of the running guests on the node, bytes per second.
    pub io_bps: f64,
    /// Running guests that carry the IOWait exemption.
    pub exempt: u32,
    /// Running guests on the node.
    pub running: u32,
    /// The node's score for a guest of no size under `load`.
    pub score: ScoreParts,
    /// Online and not in maintenance: may receive guests and counts in the balance terms.
    pub eligible: bool,
}

/// The cluster as the plan has left it so far.
pub(crate) struct Sim<'a> {
    pub cluster: &'a Cluster,
    pub cfg: &'a PenaltyConfig,
    pub t: &'a Thresholds,
    pub prepared: Vec<PreparedNode<'a>>,
    pub nodes: Vec<SimNode>,
    /// Per guest (index into `cluster.guests`): the node it is on now.
    pub placement: Vec<usize>,
    /// Per node: the guests on it now (indices into `cluster.guests`, ascending).
    pub on_node: Vec<Vec<usize>>,
    pub groups: Groups,
    /// Per node: IOWait-stressed when the plan began. Such a node receives nothing in this
    /// plan, even once the plan expects it relieved: its IOWait has not been seen to fall yet.
    pub stressed_at_start: Vec<bool>,
    /// Per node: refused as a target for IOWait stress, now or at the start.
    refused_for_iowait: Vec<bool>,
    /// Per node: RAM over the memory it offers guests (its reserve held back), to turn its
    /// memory % into a percentage of what it offers.
    mem_scale: Vec<f64>,
}

impl<'a> Sim<'a> {
    pub fn new(cluster: &'a Cluster) -> Self {
        let cfg = &cluster.config;
        let t = &cluster.thresholds;
        let prepared: Vec<PreparedNode<'a>> = cluster
            .nodes
            .iter()
            .map(|n| PreparedNode::new(n, cfg))
            .collect();
        let mut nodes: Vec<SimNode> = cluster
            .nodes
            .iter()
            .map(|n| SimNode {
                load: NodeLoad::of(n),
                io_bps: 0.0,
                exempt: 0,
                running: 0,
                score: ScoreParts::default(),
                eligible: n.is_online() && !n.maintenance,
            })
            .collect();
        for g in cluster.guests.iter().filter(|g| g.is_running()) {
            let c = Contribution::of(g);
            let n = &mut nodes[g.node];
            n.io_bps += c.io_bps;
            n.exempt += c.exempt;
            n.running += 1;
        }
        let mut sim = Sim {
            cluster,
            cfg,
            t,
            prepared,
            nodes,
            placement: cluster.guests.iter().map(|g| g.node).collect(),
            on_node: {
                let mut on = vec![Vec::new(); cluster.nodes.len()];
                for (gi, g) in cluster.guests.iter().enumerate() {
                    on[g.node].push(gi);
                }
                on
            },
            groups: Groups::new(cluster),
            stressed_at_start: Vec::new(),
            refused_for_iowait: Vec::new(),
            mem_scale: cluster
                .nodes
                .iter()
                .map(|n| {
                    let offered = n.offered_mem_gb(cfg);
                    if offered > 0.0 {
                        n.total_mem_gb / offered
                    } else {
                        1.0
                    }
                })
                .collect(),
        };
        for i in 0..sim.nodes.len() {
            sim.nodes[i].score = sim.score_of(i, &sim.nodes[i].load);
        }
        sim.stressed_at_start = (0..sim.nodes.len()).map(|i| sim.is_stressed(i)).collect();
        sim.refused_for_iowait = sim.stressed_at_start.clone();
        sim
    }

    /// The score of node `ni` under `load`, for a guest of no size (what `options` and the
    /// node scores show).
    pub fn details_of(&self, ni: usize, load: &NodeLoad) -> ScoreDetails {
        let pn = &self.prepared[ni];
        NodeBase::new(self.cfg, self.t, pn, load).score(
            self.cfg,
            self.t,
            pn.node,
            load,
            Impact::default(),
            true,
        )
    }

    pub fn score_of(&self, ni: usize, load: &NodeLoad) -> ScoreParts {
        ScoreParts::of(&self.details_of(ni, load))
    }

    /// The score of `g` on node `ni` as it is now: as the source (`adding = false`) or as a
    /// target.
    pub fn guest_details(&self, g: &Guest, ni: usize, adding: bool) -> ScoreDetails {
        let pn = &self.prepared[ni];
        let load = &self.nodes[ni].load;
        NodeBase::new(self.cfg, self.t, pn, load).score(
            self.cfg,
            self.t,
            pn.node,
            load,
            Impact::of(g, pn.node),
            adding,
        )
    }

    /// Node `ni`'s load once `c` has left it.
    pub fn without(&self, ni: usize, c: &Contribution) -> NodeLoad {
        let node = &self.cluster.nodes[ni];
        let sim = &self.nodes[ni];
        let (cpu, mem) = points(node, c);
        let keep = if sim.io_bps > 0.0 {
            (1.0 - c.io_bps / sim.io_bps).clamp(0.0, 1.0)
        } else {
            1.0
        };
        let mut l = sim.load.clone();
        let less = |v: &mut f64, d: f64| *v = (*v - d).max(0.0);
        less(&mut l.current.cpu, cpu);
        less(&mut l.current.mem, mem);
        l.current.iowait *= keep;
        if let Some(d) = &mut l.day {
            less(&mut d.cpu, cpu);
            less(&mut d.mem, mem);
            d.iowait *= keep;
            less(&mut d.load, c.cores_used);
        }
        if let Some(w) = &mut l.week {
            less(&mut w.avg_cpu, cpu);
            less(&mut w.max_cpu, cpu);
            less(&mut w.avg_mem, mem);
            less(&mut w.max_mem, mem);
            w.avg_iowait *= keep;
        }
        less(&mut l.committed_mem_gb, c.committed_gb);
        l.overcommit_ratio = overcommit_ratio(l.committed_mem_gb, node.total_mem_gb);
        l.iowait_exempt = sim.exempt > c.exempt;
        l
    }

    /// Node `ni`'s load once `c` has arrived on it.
    pub fn with(&self, ni: usize, c: &Contribution) -> NodeLoad {
        let node = &self.cluster.nodes[ni];
        let sim = &self.nodes[ni];
        let (cpu, mem) = points(node, c);
        let mut l = sim.load.clone();
        l.current.cpu += cpu;
        l.current.mem += mem;
        l.current.iowait += c.io_points;
        if let Some(d) = &mut l.day {
            d.cpu += cpu;
            d.mem += mem;
            d.iowait += c.io_points;
            d.load += c.cores_used;
        }
        if let Some(w) = &mut l.week {
            w.avg_cpu += cpu;
            w.max_cpu += cpu;
            w.avg_mem += mem;
            w.max_mem += mem;
            w.avg_iowait += c.io_points;
        }
        l.committed_mem_gb += c.committed_gb;
        l.overcommit_ratio = overcommit_ratio(l.committed_mem_gb, node.total_mem_gb);
        l.iowait_exempt = sim.exempt + c.exempt > 0;
        l
    }

    /// Moves guests `members` (indices into `cluster.guests`), contributing `c` together, from
    /// `from` to `to`, with the loads already computed for both ends.
    pub fn apply(
        &mut self,
        members: &[usize],
        c: &Contribution,
        (from, from_load): (usize, NodeLoad),
        (to, to_load): (usize, NodeLoad),
    ) {
        for &gi in members {
            self.placement[gi] = to;
            self.groups.moved(gi, from, to);
            self.on_node[from].retain(|&x| x != gi);
            let at = self.on_node[to].partition_point(|&x| x < gi);
            self.on_node[to].insert(at, gi);
        }
        let from_score = self.score_of(from, &from_load);
        let to_score = self.score_of(to, &to_load);
        let f = &mut self.nodes[from];
        f.load = from_load;
        f.io_bps = (f.io_bps - c.io_bps).max(0.0);
        f.exempt -= c.exempt.min(f.exempt);
        f.running -= c.running.min(f.running);
        f.score = from_score;
        let t = &mut self.nodes[to];
        t.load = to_load;
        t.io_bps += c.io_bps;
        t.exempt += c.exempt;
        t.running += c.running;
        t.score = to_score;
        for n in [from, to] {
            self.refused_for_iowait[n] = self.stressed_at_start[n] || self.is_stressed(n);
        }
    }

    /// The figures the balance terms read for node `ni` under `load`.
    pub fn values(&self, ni: usize, load: &NodeLoad) -> Values {
        balance_values(load, self.cfg, self.mem_scale[ni])
    }

    /// IOWait-stressed (docs/engine.md §5) as the node stands now.
    pub fn is_stressed(&self, ni: usize) -> bool {
        let node = &self.cluster.nodes[ni];
        let load = &self.nodes[ni].load;
        let avg = load.day.map_or(load.current.iowait, |d| d.iowait);
        node.is_online()
            && !node.maintenance
            && !load.iowait_exempt(self.cfg)
            && load.current.iowait > self.t.iowait
            && avg > 0.7 * self.t.iowait
    }

    /// The cluster health (`100 − mean node health` over online nodes, as the summary reports
    /// it) of the cluster as it stands now.
    pub fn cluster_health(&self) -> f64 {
        let online: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.cluster.nodes[i].is_online())
            .collect();
        if online.is_empty() {
            return 100.0;
        }
        let sum: f64 = online
            .iter()
            .map(|&i| self.prepared[i].health(&self.nodes[i].load, self.cfg))
            .sum();
        100.0 - sum / online.len() as f64
    }

    /// The figures shown for node `ni` as it stands now.
    pub fn figures(&self, ni: usize) -> NodeFigures {
        let node = &self.cluster.nodes[ni];
        let sim = &self.nodes[ni];
        let l = &sim.load;
        NodeFigures {
            cpu: l.current.cpu,
            mem: l.current.mem,
            committed_pct: if node.total_mem_gb > 0.0 {
                l.committed_mem_gb / node.total_mem_gb * 100.0
            } else {
                0.0
            },
            overcommit_ratio: l.overcommit_ratio,
            iowait: l.current.iowait,
            iowait_24h: l.day.map_or(l.current.iowait, |d| d.iowait),
            score: sim.score.total(),
            running_guests: sim.running,
        }
    }

    /// How much more configured memory node `ni` can take within the capacity gate, GiB.
    pub fn room_gb(&self, ni: usize) -> f64 {
        let node = &self.cluster.nodes[ni];
        (1.0 - self.cfg.capacity_headroom) * node.offered_mem_gb(self.cfg) - self.capacity_base(ni)
    }

    /// Memory the capacity gate counts on node `ni`, GiB.
    fn capacity_base(&self, ni: usize) -> f64 {
        let l = &self.nodes[ni].load;
        match self.cfg.capacity_basis {
            CapacityBasis::Committed => l.committed_mem_gb,
            CapacityBasis::Used => l.current.mem / 100.0 * self.cluster.nodes[ni].total_mem_gb,
        }
    }
}

/// A contribution as percentage points of `node`: (CPU, memory).
fn points(node: &crate::view::Node, c: &Contribution) -> (f64, f64) {
    let cpu = c.cores_used * 100.0 / f64::from(node.cpu_cores.max(1));
    let mem = if node.total_mem_gb > 0.0 {
        c.mem_used_gb * 100.0 / node.total_mem_gb
    } else {
        0.0
    };
    (cpu, mem)
}

/// What a move asks of its target, for the gates.
pub(crate) struct Demand<'u> {
    /// The node the guests leave.
    pub from: usize,
    pub contribution: &'u Contribution,
    /// Strict anti-affinity rules of the guests.
    pub exclude: &'u [usize],
    /// Strict node-affinity rules of the guests.
    pub pins: &'u [usize],
    /// Affinity rules with the number of the guests (running) in each.
    pub affinity: &'u [(usize, u32)],
    /// Storages the guests use; `None` when one exists on no node.
    pub storages: Option<&'u StorageSet>,
}

impl TargetState<Demand<'_>> for Sim<'_> {
    fn pinned_elsewhere(&self, d: &Demand<'_>, node: usize) -> bool {
        d.pins
            .iter()
            .any(|&rule| !self.groups.pin_allows(rule, node))
    }

    fn anti_affinity_conflict(&self, d: &Demand<'_>, node: usize) -> bool {
        d.exclude
            .iter()
            .any(|&grp| self.groups.exclude_present(node, grp))
    }

    fn lacks_memory(&self, d: &Demand<'_>, node: usize) -> bool {
        d.contribution.mem_max_gb > self.room_gb(node)
    }

    fn lacks_storage(&self, d: &Demand<'_>, node: usize) -> bool {
        d.storages
            .is_none_or(|need| !self.groups.storages_active(node, need))
    }

    fn iowait_stressed(&self, node: usize) -> bool {
        self.refused_for_iowait[node]
    }

    fn splits_group(&self, d: &Demand<'_>) -> bool {
        d.affinity.iter().any(|&(rule, k)| {
            self.groups.strict[rule] && self.groups.affinity_running(d.from, rule) > k
        })
    }

    fn empties_source(&self, d: &Demand<'_>) -> bool {
        let from = &self.nodes[d.from];
        from.eligible && d.contribution.running > 0 && from.running <= d.contribution.running
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::Cluster;

    /// Two nodes with 24 h and week figures; `a` carries a disk-heavy guest (300 MiB/s), a
    /// quiet one (100 MiB/s) and one tagged `io_exempt`.
    fn cluster() -> Cluster {
        let text = serde_json::json!({
            "format": "proxbalance.cluster-view.v1", "cluster": "c", "now": 1_764_230_400,
            "nodes": [
                {"name": "a", "status": "online", "cpu_cores": 16, "total_mem_gb": 128.0,
                 "current": {"cpu": 40.0, "mem": 50.0, "iowait": 20.0},
                 "avg_24h": {"cpu": 30.0, "mem": 48.0, "iowait": 16.0, "load": 6.0},
                 "week": {"avg_cpu": 28.0, "max_cpu": 70.0, "avg_mem": 47.0, "max_mem": 60.0, "avg_iowait": 12.0}},
                {"name": "b", "status": "online", "cpu_cores": 32, "total_mem_gb": 256.0,
                 "current": {"cpu": 10.0, "mem": 20.0, "iowait": 1.0},
                 "avg_24h": {"cpu": 10.0, "mem": 20.0, "iowait": 1.0, "load": 3.0},
                 "week": {"avg_cpu": 10.0, "max_cpu": 20.0, "avg_mem": 20.0, "max_mem": 25.0, "avg_iowait": 1.0}}
            ],
            "guests": [
                {"vmid": 1, "type": "qemu", "node": "a", "status": "running", "cpu_percent": 50.0,
                 "cpu_cores": 4, "mem_used_gb": 16.0, "mem_max_gb": 32.0,
                 "disk_read_bps": 200.0 * 1_048_576.0, "disk_write_bps": 100.0 * 1_048_576.0},
                {"vmid": 2, "type": "qemu", "node": "a", "status": "running", "cpu_percent": 25.0,
                 "cpu_cores": 2, "mem_used_gb": 8.0, "mem_max_gb": 8.0,
                 "disk_read_bps": 100.0 * 1_048_576.0},
                {"vmid": 3, "type": "lxc", "node": "a", "status": "running", "cpu_percent": 0.0,
                 "cpu_cores": 1, "mem_used_gb": 1.0, "mem_max_gb": 2.0, "tags": ["io_exempt"]}
            ]
        });
        Cluster::from_json(&text.to_string()).expect("valid")
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    #[test]
    fn a_departure_takes_the_guests_share_of_every_figure() {
        let c = cluster();
        let sim = Sim::new(&c);
        let guest = Contribution::of(&c.guests[0]);
        assert_eq!(guest.io_bps, 300.0 * 1_048_576.0);
        let l = sim.without(0, &guest);
        // 2 cores of 16 = 12.5 points; 16 GiB of 128 = 12.5 points
        close(l.current.cpu, 27.5);
        close(l.current.mem, 37.5);
        // its disk I/O is 3/4 of the node's: a quarter of the IOWait stays, in every window
        close(l.current.iowait, 5.0);
        let day = l.day.expect("day");
        close(day.cpu, 17.5);
        close(day.mem, 35.5);
        close(day.iowait, 4.0);
        close(day.load, 4.0);
        let week = l.week.expect("week");
        close(week.avg_cpu, 15.5);
        close(week.max_cpu, 57.5);
        close(week.avg_mem, 34.5);
        close(week.max_mem, 47.5);
        close(week.avg_iowait, 3.0);
        // committed memory counts maxmem: 42 − 32 = 10 GiB of 128
        close(l.committed_mem_gb, 10.0);
        assert_eq!(l.overcommit_ratio, 0.08);
        // the io_exempt guest stays, and with it the exemption
        assert!(l.iowait_exempt);
        let exempt = Contribution::of(&c.guests[2]);
        assert!(!sim.without(0, &exempt).iowait_exempt);
    }

    #[test]
    fn an_arrival_adds_the_guests_figures_and_the_predicted_iowait() {
        let c = cluster();
        let sim = Sim::new(&c);
        let guest = Contribution::of(&c.guests[0]);
        let l = sim.with(1, &guest);
        // 2 cores of 32 = 6.25 points; 16 GiB of 256 = 6.25 points
        close(l.current.cpu, 16.25);
        close(l.current.mem, 26.25);
        // 300 MiB/s is predicted at 5 points per 100 MiB/s
        close(l.current.iowait, 16.0);
        let day = l.day.expect("day");
        close(day.iowait, 16.0);
        close(day.load, 5.0);
        let week = l.week.expect("week");
        close(week.max_cpu, 26.25);
        close(week.avg_iowait, 16.0);
        close(l.committed_mem_gb, 32.0);
        // 32 / 256 = 0.125, two decimals half to even
        assert_eq!(l.overcommit_ratio, 0.12);
        assert!(!l.iowait_exempt);
        assert!(sim.with(1, &Contribution::of(&c.guests[2])).iowait_exempt);
        // the prediction is capped at 20 points a guest
        let mut heavy = guest;
        heavy.io_points = io_impact(&crate::view::Guest {
            disk_read_bps: 900.0 * 1_048_576.0,
            ..c.guests[0].clone()
        });
        close(heavy.io_points, 20.0);
    }

    #[test]
    fn applying_a_move_updates_scores_membership_and_counts() {
        let c = cluster();
        let mut sim = Sim::new(&c);
        let score_a = sim.nodes[0].score.total();
        let guest = Contribution::of(&c.guests[0]);
        let (from, to) = (sim.without(0, &guest), sim.with(1, &guest));
        sim.apply(&[0], &guest, (0, from.clone()), (1, to.clone()));
        assert_eq!(sim.placement, [1, 0, 0]);
        assert_eq!(sim.on_node, [vec![1, 2], vec![0]]);
        assert_eq!(sim.nodes[0].load, from);
        assert_eq!(sim.nodes[1].load, to);
        assert_eq!((sim.nodes[0].running, sim.nodes[1].running), (2, 1));
        close(sim.nodes[0].io_bps, 100.0 * 1_048_576.0);
        assert!(sim.nodes[0].score.total() < score_a);
        close(sim.nodes[1].score.total(), sim.score_of(1, &to).total());
        // what a later departure from `a` shares is measured against what is left there
        let quiet = Contribution::of(&c.guests[1]);
        close(sim.without(0, &quiet).current.iowait, 0.0);
    }
}
