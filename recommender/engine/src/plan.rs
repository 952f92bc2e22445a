//! Recommendation generation (ENGINE.md §4.2–4.5).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::{CapacityBasis, PenaltyConfig, Thresholds};
use crate::report;
use crate::score::{Impact, NodeBase, NodeLoad, PreparedNode, ScoreDetails, io_impact};
use crate::view::{Cluster, Guest, GuestKind, NodeStatus, overcommit_ratio};

/// Why a guest is recommended to move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonKind {
    MaintenanceEvacuation,
    IowaitRelief,
    CpuImbalance,
    MemImbalance,
}

impl ReasonKind {
    /// The reason in words, for people.
    pub fn describe(self) -> &'static str {
        match self {
            ReasonKind::MaintenanceEvacuation => "evacuate node in maintenance",
            ReasonKind::IowaitRelief => "relieve I/O pressure",
            ReasonKind::CpuImbalance => "balance CPU load",
            ReasonKind::MemImbalance => "balance memory load",
        }
    }
}

/// Why a guest is not recommended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    HasIgnoreTag,
    HaManaged,
    Stopped,
    Template,
    Locked,
    ConfigUnknown,
    PassthroughDisk,
    UnsharedBindMount,
    SourceMemoryHealthy,
    InsufficientImprovement,
    NoSuitableTarget,
}

impl SkipReason {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::HasIgnoreTag => "has_ignore_tag",
            SkipReason::HaManaged => "ha_managed",
            SkipReason::Stopped => "stopped",
            SkipReason::Template => "template",
            SkipReason::Locked => "locked",
            SkipReason::ConfigUnknown => "config_unknown",
            SkipReason::PassthroughDisk => "passthrough_disk",
            SkipReason::UnsharedBindMount => "unshared_bind_mount",
            SkipReason::SourceMemoryHealthy => "source_memory_healthy",
            SkipReason::InsufficientImprovement => "insufficient_improvement",
            SkipReason::NoSuitableTarget => "no_suitable_target",
        }
    }
}

/// The structured reason of a recommendation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecommendationReason {
    pub kind: ReasonKind,
    /// One sentence for people.
    pub summary: String,
    /// What contributed, e.g. `source CPU 82% (high)`.
    pub factors: Vec<String>,
}

/// How risky a move is (reference §4.7): 0–100 and a level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Risk {
    pub score: f64,
    /// `low`, `moderate`, `high` or `very_high`.
    pub level: String,
    pub factors: Vec<String>,
}

/// Whether a move is worth what it costs (reference §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CostBenefit {
    pub benefit: f64,
    pub cost: f64,
    pub ratio: f64,
    pub viable: bool,
}

/// Source and target score details of a move.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MoveDetails {
    pub source: ScoreDetails,
    pub target: ScoreDetails,
}

/// One recommended migration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    pub vmid: u32,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: GuestKind,
    pub source_node: String,
    pub target_node: String,
    /// Source score including the maintenance and IOWait boosts.
    pub source_score: f64,
    pub target_score: f64,
    pub score_improvement: f64,
    /// `max(0, 100 − min(target_score, 100))`.
    pub suitability: f64,
    pub reason: RecommendationReason,
    /// 0–100.
    pub confidence: f64,
    pub risk: Risk,
    pub cost_benefit: CostBenefit,
    /// The guest's configured memory, GiB.
    pub mem_gb: f64,
    /// The Proxmox command that performs the move.
    pub command: String,
    pub score_details: MoveDetails,
    /// Another recommendation into the same target would push it past the safety limits.
    pub has_conflict: bool,
    /// Set on an affinity companion: the group it follows its leader in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_group: Option<String>,
    /// Set on an affinity companion: the recommendation it follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_leader_vmid: Option<u32>,
    /// Set on an affinity leader: the guests that follow it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub affinity_companions: Vec<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A guest the run did not recommend, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedGuest {
    pub vmid: u32,
    pub name: String,
    pub node: String,
    pub reason: SkipReason,
    pub detail: String,
}

/// Several moves into one target that together exceed the safety limits (85 % CPU, 90 % memory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    pub target_node: String,
    pub incoming_guests: Vec<u32>,
    pub combined_predicted_cpu: f64,
    pub combined_predicted_mem: f64,
    pub exceeds_cpu: bool,
    pub exceeds_mem: bool,
    pub resolution: String,
}

/// One step of the execution plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionStep {
    pub step: usize,
    pub parallel_group: usize,
    pub vmid: u32,
    pub name: String,
    pub source_node: String,
    pub target_node: String,
    pub reason_for_order: String,
}

/// The order to run the moves in: a move that frees a node runs before moves into it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecutionPlan {
    pub ordered_recommendations: Vec<ExecutionStep>,
    /// vmids per group; the moves of one group can run at the same time.
    pub parallel_groups: Vec<Vec<u32>>,
    pub total_steps: usize,
    pub can_parallelize: bool,
}

/// How urgent acting on the set is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Urgency {
    None,
    Low,
    Medium,
    High,
}

/// Totals of a recommendation run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub total_recommendations: usize,
    pub total_skipped: usize,
    pub skip_reasons: BTreeMap<SkipReason, usize>,
    /// `100 − mean(node health)` over online nodes.
    pub cluster_health: f64,
    pub predicted_health: f64,
    pub avg_cpu: f64,
    pub avg_mem: f64,
    pub urgency: Urgency,
    /// Set when the cluster is balanced and nothing was evaluated.
    pub convergence_message: Option<String>,
    pub iowait_stressed_nodes: Vec<String>,
    pub maintenance_nodes: Vec<String>,
    /// `balanced`, `conservative`, `aggressive` or `custom`.
    pub active_preset: String,
}

/// A node's standing as a target for a guest of no size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeScore {
    pub node: String,
    pub status: NodeStatus,
    pub maintenance: bool,
    pub iowait_stressed: bool,
    pub iowait_exempt: bool,
    pub committed_mem_gb: f64,
    pub mem_overcommit_ratio: f64,
    pub health: f64,
    pub score: f64,
    pub suitability: f64,
    pub cpu_stability_factor: f64,
    pub penalties: crate::score::PenaltyBreakdown,
}

/// The output of [`plan`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecommendationSet {
    pub cluster: String,
    /// The view's instant, unix seconds.
    pub generated_at: i64,
    pub thresholds: Thresholds,
    pub recommendations: Vec<Recommendation>,
    pub skipped: Vec<SkippedGuest>,
    pub conflicts: Vec<Conflict>,
    pub execution_plan: ExecutionPlan,
    pub summary: Summary,
    pub node_scores: Vec<NodeScore>,
}

/// Why a target was refused before scoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TargetGate {
    AntiAffinity,
    MemoryCapacity,
    Storage,
}

impl TargetGate {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetGate::AntiAffinity => "anti-affinity conflict",
            TargetGate::MemoryCapacity => "insufficient memory capacity",
            TargetGate::Storage => "storage incompatible",
        }
    }
}

/// The state of one run: per-node facts, the loads that departures and arrivals change, and
/// the anti-affinity groups present on (or pending to) each node.
pub(crate) struct Planner<'a> {
    pub cluster: &'a Cluster,
    pub cfg: &'a PenaltyConfig,
    pub t: &'a Thresholds,
    pub nodes: Vec<PreparedNode<'a>>,
    pub loads: Vec<NodeLoad>,
    /// The guest-independent part of each node's score under its current load.
    pub bases: Vec<NodeBase>,
    exclude: Vec<BTreeMap<&'a str, u32>>,
    pub stressed: Vec<bool>,
    /// Every storage id of the cluster, numbered.
    storage_ids: BTreeMap<&'a str, usize>,
    /// Per node, per storage number: active there.
    storage_active: Vec<Vec<bool>>,
    /// Per node, the positions in `cluster.guests` of the guests on it.
    guests_on: Vec<Vec<usize>>,
}

/// A candidate target that passed the gates.
pub(crate) struct Scored {
    pub node: usize,
    pub details: ScoreDetails,
}

impl<'a> Planner<'a> {
    pub fn new(cluster: &'a Cluster) -> Self {
        let cfg = &cluster.config;
        let t = &cluster.thresholds;
        let nodes: Vec<PreparedNode<'a>> = cluster
            .nodes
            .iter()
            .map(|n| PreparedNode::new(n, cfg))
            .collect();
        let loads: Vec<NodeLoad> = cluster.nodes.iter().map(NodeLoad::of).collect();
        let bases = nodes
            .iter()
            .zip(&loads)
            .map(|(pn, load)| NodeBase::new(cfg, t, pn, load))
            .collect();
        let mut exclude = vec![BTreeMap::new(); cluster.nodes.len()];
        for g in &cluster.guests {
            for group in &g.tags.exclude {
                *exclude[g.node].entry(group.as_str()).or_insert(0) += 1;
            }
        }
        let stressed = nodes
            .iter()
            .map(|pn| {
                let n = pn.node;
                let avg = n.avg_24h.map_or(n.current.iowait, |d| d.iowait);
                n.is_online()
                    && !n.maintenance
                    && !pn.iowait_exempt(cfg)
                    && n.current.iowait > t.iowait
                    && avg > 0.7 * t.iowait
            })
            .collect();
        let mut guests_on = vec![Vec::new(); cluster.nodes.len()];
        for (i, g) in cluster.guests.iter().enumerate() {
            guests_on[g.node].push(i);
        }
        let mut storage_ids = BTreeMap::new();
        for s in cluster.nodes.iter().flat_map(|n| &n.storage) {
            let next = storage_ids.len();
            storage_ids.entry(s.id.as_str()).or_insert(next);
        }
        let storage_active = cluster
            .nodes
            .iter()
            .map(|n| {
                let mut active = vec![false; storage_ids.len()];
                for s in n.storage.iter().filter(|s| s.active) {
                    active[storage_ids[s.id.as_str()]] = true;
                }
                active
            })
            .collect();
        Planner {
            cluster,
            cfg,
            t,
            nodes,
            loads,
            bases,
            exclude,
            stressed,
            storage_ids,
            storage_active,
            guests_on,
        }
    }

    /// The source score of a guest where it is now, without boosts.
    pub fn source_details(&self, g: &Guest) -> ScoreDetails {
        self.details(g, g.node, false)
    }

    fn details(&self, g: &Guest, ni: usize, adding: bool) -> ScoreDetails {
        let node = self.nodes[ni].node;
        self.bases[ni].score(
            self.cfg,
            self.t,
            node,
            &self.loads[ni],
            Impact::of(g, node),
            adding,
        )
    }

    /// Maintenance and IOWait boosts a guest's source score gets.
    pub fn boost(&self, g: &Guest, iowait_selected: bool) -> f64 {
        let mut b = 0.0;
        if self.cluster.nodes[g.node].maintenance {
            b += self.cfg.maintenance_score_boost;
        }
        if iowait_selected {
            b += self.cfg.iowait_score_boost;
        }
        b
    }

    /// The guest gates of §4.4 in order; `None` when the guest may move.
    pub fn guest_gate(&self, g: &Guest, check_floor: bool) -> Option<(SkipReason, String)> {
        let src = &self.cluster.nodes[g.node];
        let maint = src.maintenance;
        if g.tags.ignore && !maint {
            return Some((SkipReason::HasIgnoreTag, "tagged ignore".into()));
        }
        if g.ha_managed && !maint {
            return Some((
                SkipReason::HaManaged,
                "managed by Proxmox HA, which decides where it runs".into(),
            ));
        }
        if g.template {
            return Some((
                SkipReason::Template,
                "a template, not a running guest".into(),
            ));
        }
        if let Some(lock) = &g.lock {
            return Some((SkipReason::Locked, format!("locked ({lock})")));
        }
        if !g.is_running() && !maint {
            return Some((SkipReason::Stopped, format!("status {}", g.status)));
        }
        if !g.config_known {
            return Some((
                SkipReason::ConfigUnknown,
                "configuration not read yet: passthrough disks and bind mounts are unknown".into(),
            ));
        }
        if g.passthrough {
            return Some((
                SkipReason::PassthroughDisk,
                "has a passthrough disk pinning it to its node".into(),
            ));
        }
        if g.unshared_bind_mount && !maint {
            return Some((
                SkipReason::UnsharedBindMount,
                "has a bind mount of a host path that is not shared".into(),
            ));
        }
        if check_floor && !maint && !self.stressed[g.node] {
            let cur = self.loads[g.node].current;
            let floor = self.cfg.source_mem_migration_floor;
            if cur.mem < floor && cur.cpu < self.t.cpu {
                return Some((
                    SkipReason::SourceMemoryHealthy,
                    format!(
                        "{} is healthy: memory {:.1}% < floor {floor}%, CPU {:.1}% < threshold {}%",
                        src.name, cur.mem, cur.cpu, self.t.cpu
                    ),
                ));
            }
        }
        None
    }

    /// The storage numbers a guest needs; `None` when some storage exists on no node at all.
    fn needed_storages(&self, g: &Guest) -> Option<Vec<usize>> {
        g.storages
            .iter()
            .map(|s| self.storage_ids.get(s.as_str()).copied())
            .collect()
    }

    /// The hard target gates of §4.3 for moving `g` to node `ti` (an online, non-maintenance
    /// node other than the source).
    pub fn target_gate(&self, g: &Guest, ti: usize) -> Option<TargetGate> {
        self.target_gate_with(g, ti, self.needed_storages(g).as_deref())
    }

    fn target_gate_with(
        &self,
        g: &Guest,
        ti: usize,
        storages: Option<&[usize]>,
    ) -> Option<TargetGate> {
        if g.tags
            .exclude
            .iter()
            .any(|grp| self.exclude[ti].get(grp.as_str()).is_some_and(|&c| c > 0))
        {
            return Some(TargetGate::AntiAffinity);
        }
        let node = &self.cluster.nodes[ti];
        let load = &self.loads[ti];
        let base = match self.cfg.capacity_basis {
            CapacityBasis::Committed => load.committed_mem_gb,
            CapacityBasis::Used => load.current.mem / 100.0 * node.total_mem_gb,
        };
        if base + load.pending_mem_max_gb + g.mem_max_gb
            > (1.0 - self.cfg.capacity_headroom) * node.total_mem_gb
        {
            return Some(TargetGate::MemoryCapacity);
        }
        let storage_ok =
            storages.is_some_and(|need| need.iter().all(|&s| self.storage_active[ti][s]));
        if !storage_ok {
            return Some(TargetGate::Storage);
        }
        None
    }

    /// Whether node `ti` can receive anything at all.
    pub fn is_candidate(&self, ti: usize, source: usize) -> bool {
        let n = &self.cluster.nodes[ti];
        ti != source && n.is_online() && !n.maintenance
    }

    /// The score of `g` on node `ti`, counting everything pending to it.
    pub fn target_details(&self, g: &Guest, ti: usize) -> ScoreDetails {
        self.details(g, ti, true)
    }

    /// Scores every gated candidate; returns the best (lowest score, then node name) and the
    /// refused candidates with their gate, in node-name order.
    pub fn best_target(&self, g: &Guest) -> (Option<Scored>, Vec<(usize, TargetGate)>) {
        let mut best: Option<Scored> = None;
        let mut refused = Vec::new();
        let storages = self.needed_storages(g);
        for ti in 0..self.nodes.len() {
            if !self.is_candidate(ti, g.node) {
                continue;
            }
            if let Some(gate) = self.target_gate_with(g, ti, storages.as_deref()) {
                refused.push((ti, gate));
                continue;
            }
            let details = self.target_details(g, ti);
            if best
                .as_ref()
                .is_none_or(|b| details.score < b.details.score)
            {
                best = Some(Scored { node: ti, details });
            }
        }
        (best, refused)
    }

    /// Records a move: the target gains a pending arrival, the source loses the guest.
    pub fn commit_move(&mut self, g: &'a Guest, target: usize) {
        let tgt = &self.cluster.nodes[target];
        let arrive = Impact::of(g, tgt);
        let load = &mut self.loads[target];
        load.pending.cpu += arrive.cpu;
        load.pending.mem += arrive.mem;
        load.pending.io += arrive.io;
        load.pending_mem_max_gb += g.mem_max_gb;
        for grp in &g.tags.exclude {
            *self.exclude[target].entry(grp.as_str()).or_insert(0) += 1;
        }

        let src = &self.cluster.nodes[g.node];
        let leave = Impact::of(g, src);
        let load = &mut self.loads[g.node];
        load.current.cpu = (load.current.cpu - leave.cpu).max(0.0);
        load.current.mem = (load.current.mem - leave.mem).max(0.0);
        load.current.iowait = (load.current.iowait - leave.io).max(0.0);
        if g.is_running() {
            load.committed_mem_gb = (load.committed_mem_gb - g.mem_max_gb).max(0.0);
            load.overcommit_ratio = overcommit_ratio(load.committed_mem_gb, src.total_mem_gb);
        }
        for grp in &g.tags.exclude {
            if let Some(c) = self.exclude[g.node].get_mut(grp.as_str()) {
                *c = c.saturating_sub(1);
            }
        }
        self.bases[g.node] =
            NodeBase::new(self.cfg, self.t, &self.nodes[g.node], &self.loads[g.node]);
    }

    /// The guests picked off each IOWait-stressed node (§4.2), by vmid.
    pub fn iowait_selection(&self) -> BTreeSet<u32> {
        let mut selected = BTreeSet::new();
        let limit = self.cfg.iowait_guest_limit as usize;
        for (ni, _) in self.stressed.iter().enumerate().filter(|(_, s)| **s) {
            let node = &self.cluster.nodes[ni];
            let needed = (node.current.iowait - (self.t.iowait - 5.0)).max(0.0);
            let mut candidates: Vec<&Guest> = self.guests_on[ni]
                .iter()
                .map(|&gi| &self.cluster.guests[gi])
                .filter(|g| g.is_running() && g.disk_io_bps() > 0.0)
                .filter(|g| self.guest_gate(g, false).is_none())
                .collect();
            candidates.sort_by(|a, b| {
                b.disk_io_bps()
                    .total_cmp(&a.disk_io_bps())
                    .then(a.vmid.cmp(&b.vmid))
            });
            let mut relief = 0.0;
            for g in candidates.into_iter().take(limit) {
                if relief >= needed {
                    break;
                }
                relief += io_impact(g);
                selected.insert(g.vmid);
            }
        }
        selected
    }

    /// `100 − mean(health)` over online nodes, and the mean blended CPU and memory.
    pub fn cluster_health(&self) -> (f64, f64, f64) {
        let online: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.cluster.nodes[i].is_online())
            .collect();
        if online.is_empty() {
            return (100.0, 0.0, 0.0);
        }
        let n = online.len() as f64;
        let health: f64 = online
            .iter()
            .map(|&i| self.nodes[i].health(&self.loads[i], self.cfg))
            .sum::<f64>()
            / n;
        let cpu: f64 = online
            .iter()
            .map(|&i| self.nodes[i].blend(&self.loads[i].current, self.cfg).0)
            .sum::<f64>()
            / n;
        let mem: f64 = online
            .iter()
            .map(|&i| self.loads[i].current.mem)
            .sum::<f64>()
            / n;
        (100.0 - health, cpu, mem)
    }

    /// The convergence message when the cluster is calm (§5 step 2), unless maintenance or
    /// IOWait stress overrides it.
    fn convergence(&self) -> Option<String> {
        let online: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.cluster.nodes[i].is_online())
            .collect();
        if online.len() < 2
            || self.stressed.iter().any(|s| *s)
            || self
                .cluster
                .nodes
                .iter()
                .any(|n| n.maintenance && n.is_online())
        {
            return None;
        }
        let cpus: Vec<f64> = online
            .iter()
            .map(|&i| self.nodes[i].blend(&self.loads[i].current, self.cfg).0)
            .collect();
        let mems: Vec<f64> = online.iter().map(|&i| self.loads[i].current.mem).collect();
        let spread = |v: &[f64]| {
            v.iter().copied().fold(f64::MIN, f64::max) - v.iter().copied().fold(f64::MAX, f64::min)
        };
        let hot = cpus.iter().any(|&c| c > self.t.cpu) || mems.iter().any(|&m| m > self.t.mem);
        let (cs, ms) = (spread(&cpus), spread(&mems));
        let limit = self.cfg.cluster_convergence_threshold;
        (!hot && cs < limit && ms < limit).then(|| {
            format!(
                "cluster is balanced: no node above its thresholds, CPU spread {cs:.1} and memory spread {ms:.1} points (< {limit})"
            )
        })
    }
}

/// Computes the recommendation set for a cluster (ENGINE.md §4.4). `limit` caps the number of
/// recommendations returned (after sorting).
pub fn plan(cluster: &Cluster, limit: Option<usize>) -> RecommendationSet {
    let mut planner = Planner::new(cluster);
    let initial_health = planner.cluster_health();
    let node_scores = report::node_scores(&planner);
    let maintenance_nodes: Vec<String> = cluster
        .nodes
        .iter()
        .filter(|n| n.maintenance)
        .map(|n| n.name.clone())
        .collect();
    let stressed_nodes: Vec<String> = cluster
        .nodes
        .iter()
        .zip(&planner.stressed)
        .filter(|(_, s)| **s)
        .map(|(n, _)| n.name.clone())
        .collect();

    let convergence = planner.convergence();
    let mut recs: Vec<Recommendation> = Vec::new();
    let mut skipped: Vec<SkippedGuest> = Vec::new();
    if convergence.is_none() {
        let selected = planner.iowait_selection();
        let order = evaluation_order(&planner, &selected);
        for g in order {
            evaluate(
                &mut planner,
                g,
                selected.contains(&g.vmid),
                &mut recs,
                &mut skipped,
            );
        }
        add_affinity_companions(&mut planner, &mut recs, &mut skipped);
        for r in &mut recs {
            report::annotate(r, &planner, initial_health.0);
        }
    }

    recs.sort_by(|a, b| {
        let rank = |r: &Recommendation| match r.reason.kind {
            ReasonKind::MaintenanceEvacuation => 0,
            ReasonKind::IowaitRelief => 1,
            _ => 2,
        };
        rank(a)
            .cmp(&rank(b))
            .then(b.score_improvement.total_cmp(&a.score_improvement))
            .then(a.vmid.cmp(&b.vmid))
    });
    if let Some(limit) = limit {
        recs.truncate(limit);
    }
    skipped.sort_by_key(|s| s.vmid);
    let conflicts = report::conflicts(&mut recs, cluster);
    let execution_plan = report::execution_plan(&recs);
    let summary = report::summary(
        &recs,
        &skipped,
        initial_health,
        cluster,
        convergence,
        stressed_nodes,
        maintenance_nodes,
    );
    RecommendationSet {
        cluster: cluster.name.clone(),
        generated_at: cluster.now,
        thresholds: cluster.thresholds,
        recommendations: recs,
        skipped,
        conflicts,
        execution_plan,
        summary,
        node_scores,
    }
}

/// Maintenance-source guests first, then IOWait-selected guests by disk I/O, then the rest by
/// their source score at the start of the run; ties by vmid. Guests on nodes that are not
/// online take no part.
fn evaluation_order<'a>(planner: &Planner<'a>, selected: &BTreeSet<u32>) -> Vec<&'a Guest> {
    let cluster = planner.cluster;
    let mut keyed: Vec<(u8, f64, &'a Guest)> = cluster
        .guests
        .iter()
        .filter(|g| cluster.nodes[g.node].is_online())
        .map(|g| {
            if cluster.nodes[g.node].maintenance {
                let s = planner.source_details(g).score + planner.boost(g, false);
                (0, -s, g)
            } else if selected.contains(&g.vmid) {
                (1, -g.disk_io_bps(), g)
            } else {
                (2, -planner.source_details(g).score, g)
            }
        })
        .collect();
    keyed.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(a.1.total_cmp(&b.1))
            .then(a.2.vmid.cmp(&b.2.vmid))
    });
    keyed.into_iter().map(|(_, _, g)| g).collect()
}

fn skip(g: &Guest, cluster: &Cluster, reason: SkipReason, detail: String) -> SkippedGuest {
    SkippedGuest {
        vmid: g.vmid,
        name: g.name.clone(),
        node: cluster.nodes[g.node].name.clone(),
        reason,
        detail,
    }
}

fn evaluate<'a>(
    planner: &mut Planner<'a>,
    g: &'a Guest,
    iowait_selected: bool,
    recs: &mut Vec<Recommendation>,
    skipped: &mut Vec<SkippedGuest>,
) {
    let cluster = planner.cluster;
    if let Some((reason, detail)) = planner.guest_gate(g, true) {
        skipped.push(skip(g, cluster, reason, detail));
        return;
    }
    let source = planner.source_details(g);
    let source_score = source.score + planner.boost(g, iowait_selected);
    let (best, refused) = planner.best_target(g);
    let Some(best) = best else {
        let detail = if refused.is_empty() {
            "no other online node outside maintenance".to_owned()
        } else {
            format!(
                "every target was refused: {}",
                refused
                    .iter()
                    .take(3)
                    .map(|&(ti, gate)| format!("{}: {}", cluster.nodes[ti].name, gate.as_str()))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        };
        skipped.push(skip(g, cluster, SkipReason::NoSuitableTarget, detail));
        return;
    };
    let improvement = source_score - best.details.score;
    let msi = planner.cfg.min_score_improvement;
    if improvement < msi {
        let detail = format!(
            "best target {} scores {:.2} against {:.2} here: improvement {:.2} < {msi}",
            cluster.nodes[best.node].name, best.details.score, source_score, improvement
        );
        skipped.push(skip(
            g,
            cluster,
            SkipReason::InsufficientImprovement,
            detail,
        ));
        return;
    }
    recs.push(new_recommendation(
        planner,
        g,
        best.node,
        source,
        source_score,
        best.details,
        iowait_selected,
    ));
    planner.commit_move(g, best.node);
}

fn new_recommendation(
    planner: &Planner<'_>,
    g: &Guest,
    target: usize,
    source: ScoreDetails,
    source_score: f64,
    target_details: ScoreDetails,
    iowait_selected: bool,
) -> Recommendation {
    let cluster = planner.cluster;
    let src = &cluster.nodes[g.node];
    let tgt = &cluster.nodes[target];
    let kind = if src.maintenance {
        ReasonKind::MaintenanceEvacuation
    } else if iowait_selected {
        ReasonKind::IowaitRelief
    } else if source.metrics.cpu_blend - target_details.metrics.cpu_blend
        > source.metrics.mem - target_details.metrics.mem
    {
        ReasonKind::CpuImbalance
    } else {
        ReasonKind::MemImbalance
    };
    let mut warnings = Vec::new();
    if src.maintenance && g.unshared_bind_mount {
        warnings.push("unshared bind mount: its host path must exist on the target".to_owned());
    }
    if src.maintenance && !g.is_running() {
        warnings.push(format!("guest is {}: migrated offline", g.status));
    }
    let command = match (g.kind, g.is_running()) {
        (GuestKind::Qemu, true) => format!("qm migrate {} {} --online", g.vmid, tgt.name),
        (GuestKind::Lxc, true) => format!("pct migrate {} {} --restart", g.vmid, tgt.name),
        (GuestKind::Qemu, false) => format!("qm migrate {} {}", g.vmid, tgt.name),
        (GuestKind::Lxc, false) => format!("pct migrate {} {}", g.vmid, tgt.name),
    };
    Recommendation {
        vmid: g.vmid,
        name: g.name.clone(),
        kind: g.kind,
        source_node: src.name.clone(),
        target_node: tgt.name.clone(),
        source_score,
        target_score: target_details.score,
        score_improvement: source_score - target_details.score,
        suitability: target_details.suitability(),
        reason: RecommendationReason {
            kind,
            summary: String::new(),
            factors: Vec::new(),
        },
        confidence: 0.0,
        risk: Risk {
            score: 0.0,
            level: String::new(),
            factors: Vec::new(),
        },
        cost_benefit: CostBenefit {
            benefit: 0.0,
            cost: 0.0,
            ratio: 0.0,
            viable: false,
        },
        mem_gb: g.mem_max_gb,
        command,
        score_details: MoveDetails {
            source,
            target: target_details,
        },
        has_conflict: false,
        affinity_group: None,
        affinity_leader_vmid: None,
        affinity_companions: Vec::new(),
        warnings,
    }
}

/// Affinity companions (reference §5.3, ENGINE.md §4.4 rule 7): the members of a group follow
/// the recommended member with the largest improvement, through the same gates as any move.
fn add_affinity_companions<'a>(
    planner: &mut Planner<'a>,
    recs: &mut Vec<Recommendation>,
    skipped: &mut Vec<SkippedGuest>,
) {
    let cluster = planner.cluster;
    let groups: BTreeSet<&str> = recs
        .iter()
        .filter_map(|r| cluster.guest(r.vmid))
        .flat_map(|g| g.tags.affinity.iter().map(String::as_str))
        .collect();
    let mut moved: BTreeSet<u32> = recs.iter().map(|r| r.vmid).collect();
    for group in groups {
        let leader = recs
            .iter()
            .enumerate()
            .filter(|(_, r)| r.affinity_leader_vmid.is_none())
            .filter(|(_, r)| {
                cluster
                    .guest(r.vmid)
                    .is_some_and(|g| g.tags.affinity.contains(group))
            })
            .max_by(|(_, a), (_, b)| {
                a.score_improvement
                    .total_cmp(&b.score_improvement)
                    .then(b.vmid.cmp(&a.vmid))
            })
            .map(|(i, _)| i);
        let Some(leader) = leader else { continue };
        let Some(target) = cluster.node_index(&recs[leader].target_node) else {
            continue;
        };
        let leader_vmid = recs[leader].vmid;
        for g in cluster
            .guests
            .iter()
            .filter(|g| g.tags.affinity.contains(group))
        {
            if moved.contains(&g.vmid) || g.node == target || !cluster.nodes[g.node].is_online() {
                continue;
            }
            if planner.guest_gate(g, false).is_some() || planner.target_gate(g, target).is_some() {
                continue;
            }
            let source = planner.source_details(g);
            let source_score = source.score + planner.boost(g, false);
            let details = planner.target_details(g, target);
            let mut rec =
                new_recommendation(planner, g, target, source, source_score, details, false);
            rec.affinity_group = Some(group.to_owned());
            rec.affinity_leader_vmid = Some(leader_vmid);
            planner.commit_move(g, target);
            moved.insert(g.vmid);
            recs[leader].affinity_companions.push(g.vmid);
            recs.push(rec);
        }
    }
    skipped.retain(|s| !moved.contains(&s.vmid));
}
