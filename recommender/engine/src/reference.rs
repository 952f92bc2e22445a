//! The reference generator (`planner = "reference"`): ProxBalance's per-guest generation with
//! the seed's changes (docs/engine.md §6). Each guest is judged in a fixed order against a cluster
//! that counts the moves already recommended as pending arrivals and departures.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{CapacityBasis, PenaltyConfig, PlannerKind, Thresholds};
use crate::gates::{SEED_TARGET_GATES, TargetGate, TargetState, first_refusal, guest_gate};
use crate::report;
use crate::rules::{GuestRules, Rule, by_guest};
use crate::score::{Impact, NodeBase, NodeLoad, PreparedNode, ScoreDetails, io_impact};
use crate::set::{
    CostBenefit, MoveDetails, ReasonKind, Recommendation, RecommendationReason, RecommendationSet,
    Risk, SkipReason, SkippedGuest,
};
use crate::view::{Cluster, Guest, GuestKind, overcommit_ratio};

/// The state of one run: per-node facts, the loads that departures and arrivals change, and
/// the anti-affinity groups present on (or pending to) each node.
pub(crate) struct Generator<'a> {
    pub cluster: &'a Cluster,
    pub cfg: &'a PenaltyConfig,
    pub t: &'a Thresholds,
    pub nodes: Vec<PreparedNode<'a>>,
    pub loads: Vec<NodeLoad>,
    /// The guest-independent part of each node's score under its current load.
    pub bases: Vec<NodeBase>,
    /// `[node][rule]`: guests of a strict anti-affinity rule there, or pending to it.
    exclude: Vec<Vec<u32>>,
    /// Per guest: the rules that bind it.
    guest_rules: Vec<GuestRules>,
    /// Per node-affinity rule, per node: whether the rule allows it.
    pin_allowed: Vec<Vec<bool>>,
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

impl<'a> Generator<'a> {
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
        let guest_rules = by_guest(&cluster.rules, cluster.guests.len());
        let mut exclude = vec![vec![0u32; cluster.rules.len()]; cluster.nodes.len()];
        for (gi, g) in cluster.guests.iter().enumerate() {
            for &rule in &guest_rules[gi].anti_affinity {
                if cluster.rules[rule].strict {
                    exclude[g.node][rule] += 1;
                }
            }
        }
        let pin_allowed = cluster
            .rules
            .iter()
            .map(|r| r.allowed_nodes(&cluster.nodes))
            .collect();
        let stressed = nodes
            .iter()
            .zip(&loads)
            .map(|(pn, load)| {
                let n = pn.node;
                let avg = n.avg_24h.map_or(n.current.iowait, |d| d.iowait);
                n.is_online()
                    && !n.maintenance
                    && !load.iowait_exempt(cfg)
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
        Generator {
            cluster,
            cfg,
            t,
            nodes,
            loads,
            bases,
            exclude,
            guest_rules,
            pin_allowed,
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

    /// The guest gates of §4.4 in order; `None` when the guest may move. `check_floor` adds the
    /// reference's source memory floor after the shared gates.
    pub fn guest_gate(&self, g: &Guest, check_floor: bool) -> Option<(SkipReason, String)> {
        let src = &self.cluster.nodes[g.node];
        let maint = src.maintenance;
        if let Some(gate) = guest_gate(self.cluster, g, maint) {
            return Some(gate);
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

    /// Position of `g` in `cluster.guests`.
    fn index_of(&self, g: &Guest) -> usize {
        self.cluster
            .guests
            .binary_search_by_key(&g.vmid, |x| x.vmid)
            .unwrap_or(0)
    }

    /// The first strict node-affinity rule of `g` that leaves node `ti` out.
    pub fn refusing_pin(&self, g: &Guest, ti: usize) -> Option<&'a Rule> {
        let gi = self.index_of(g);
        self.guest_rules[gi]
            .node_affinity
            .iter()
            .find(|&&r| self.cluster.rules[r].strict && !self.pin_allowed[r][ti])
            .map(|&r| &self.cluster.rules[r])
    }

    /// The first strict anti-affinity rule of `g` with a guest on node `ti` (or pending to it).
    pub fn refusing_anti_affinity(&self, g: &Guest, ti: usize) -> Option<&'a Rule> {
        let gi = self.index_of(g);
        self.guest_rules[gi]
            .anti_affinity
            .iter()
            .find(|&&r| self.cluster.rules[r].strict && self.exclude[ti][r] > 0)
            .map(|&r| &self.cluster.rules[r])
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
        let demand = GuestDemand {
            guest: g,
            storages: self.needed_storages(g),
        };
        first_refusal(&SEED_TARGET_GATES, self, &demand, ti)
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
        let demand = GuestDemand {
            guest: g,
            storages: self.needed_storages(g),
        };
        for ti in 0..self.nodes.len() {
            if !self.is_candidate(ti, g.node) {
                continue;
            }
            if let Some(gate) = first_refusal(&SEED_TARGET_GATES, self, &demand, ti) {
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
        let gi = self.index_of(g);
        for &rule in &self.guest_rules[gi].anti_affinity {
            if self.cluster.rules[rule].strict {
                self.exclude[target][rule] += 1;
            }
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
        for &rule in &self.guest_rules[gi].anti_affinity {
            if self.cluster.rules[rule].strict {
                let c = &mut self.exclude[g.node][rule];
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
            .map(|&i| self.loads[i].blend(self.cfg).0)
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
            .map(|&i| self.loads[i].blend(self.cfg).0)
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

/// What a guest asks of a target, for the seed's gates.
pub(crate) struct GuestDemand<'g> {
    guest: &'g Guest,
    /// The storage numbers it needs; `None` when one exists on no node.
    storages: Option<Vec<usize>>,
}

impl TargetState<GuestDemand<'_>> for Generator<'_> {
    fn pinned_elsewhere(&self, d: &GuestDemand<'_>, ti: usize) -> bool {
        self.refusing_pin(d.guest, ti).is_some()
    }

    fn anti_affinity_conflict(&self, d: &GuestDemand<'_>, ti: usize) -> bool {
        self.refusing_anti_affinity(d.guest, ti).is_some()
    }

    fn lacks_memory(&self, d: &GuestDemand<'_>, ti: usize) -> bool {
        let node = &self.cluster.nodes[ti];
        let load = &self.loads[ti];
        let base = match self.cfg.capacity_basis {
            CapacityBasis::Committed => load.committed_mem_gb,
            CapacityBasis::Used => load.current.mem / 100.0 * node.total_mem_gb,
        };
        base + load.pending_mem_max_gb + d.guest.mem_max_gb
            > (1.0 - self.cfg.capacity_headroom) * node.offered_mem_gb(self.cfg)
    }

    fn lacks_storage(&self, d: &GuestDemand<'_>, ti: usize) -> bool {
        d.storages
            .as_deref()
            .is_none_or(|need| !need.iter().all(|&s| self.storage_active[ti][s]))
    }

    fn iowait_stressed(&self, ti: usize) -> bool {
        self.stressed[ti]
    }

    fn empties_source(&self, _: &GuestDemand<'_>) -> bool {
        false
    }

    fn splits_group(&self, _: &GuestDemand<'_>) -> bool {
        false
    }
}

/// Computes the reference generator's recommendation set (docs/engine.md §6). `limit` caps the
/// number of recommendations returned (after sorting).
pub(crate) fn generate(cluster: &Cluster, limit: Option<usize>) -> RecommendationSet {
    let mut planner = Generator::new(cluster);
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
    let moves: Vec<(usize, usize)> = recs
        .iter()
        .filter_map(|r| {
            let gi = cluster
                .guests
                .binary_search_by_key(&r.vmid, |g| g.vmid)
                .ok()?;
            Some((gi, cluster.node_index(&r.target_node)?))
        })
        .collect();
    let prediction = crate::planner::predict(cluster, &moves);
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
        planner: PlannerKind::Reference,
        prediction,
        deferred: Vec::new(),
        unresolved: Vec::new(),
    }
}

/// Maintenance-source guests first, then IOWait-selected guests by disk I/O, then the rest by
/// their source score at the start of the run; ties by vmid. Guests on nodes that are not
/// online take no part.
fn evaluation_order<'a>(planner: &Generator<'a>, selected: &BTreeSet<u32>) -> Vec<&'a Guest> {
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
    planner: &mut Generator<'a>,
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
    let kind = if cluster.nodes[g.node].maintenance {
        ReasonKind::MaintenanceEvacuation
    } else if iowait_selected {
        ReasonKind::IowaitRelief
    } else {
        ReasonKind::by_balance(&source, &best.details)
    };
    recs.push(new_recommendation(
        cluster,
        g,
        (g.node, best.node),
        (source, source_score),
        best.details,
        kind,
    ));
    planner.commit_move(g, best.node);
}

/// A recommendation to move `g` from node `from` to node `target`, before [`report::annotate`]
/// fills in its reason text, confidence, risk and cost-benefit.
pub(crate) fn new_recommendation(
    cluster: &Cluster,
    g: &Guest,
    (from, target): (usize, usize),
    (source, source_score): (ScoreDetails, f64),
    target_details: ScoreDetails,
    kind: ReasonKind,
) -> Recommendation {
    let src = &cluster.nodes[from];
    let tgt = &cluster.nodes[target];
    let mut warnings = Vec::new();
    if src.maintenance && g.unshared_bind_mount {
        warnings.push("unshared bind mount: its host path must exist on the target".to_owned());
    }
    if src.maintenance && !g.is_running() {
        warnings.push(format!("guest is {}: migrated offline", g.status));
    }
    let command = match (g.kind, g.is_running()) {
        // HA resources are moved through the HA manager, which keeps its own state
        (kind, _) if g.ha_managed => format!(
            "ha-manager crm-command migrate {}:{} {}",
            if kind == GuestKind::Lxc { "ct" } else { "vm" },
            g.vmid,
            tgt.name
        ),
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
        term: kind.term(),
        gain: None,
    }
}

/// Affinity companions (ProxBalance, docs/engine.md §6): the members of a group follow
/// the recommended member with the largest improvement, through the same gates as any move.
fn add_affinity_companions<'a>(
    planner: &mut Generator<'a>,
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
            let kind = if cluster.nodes[g.node].maintenance {
                ReasonKind::MaintenanceEvacuation
            } else {
                ReasonKind::by_balance(&source, &details)
            };
            let mut rec = new_recommendation(
                cluster,
                g,
                (g.node, target),
                (source, source_score),
                details,
                kind,
            );
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
