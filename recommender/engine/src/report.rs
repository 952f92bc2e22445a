//! What is said about a recommendation set: reasons, confidence, risk, cost-benefit,
//! conflicts, the execution plan, the summary and per-node scores (docs/engine.md §7).

use std::collections::BTreeMap;

use crate::numeric::{mean, round_to};
use crate::reference::Generator;
use crate::score::Impact;
use crate::set::{
    Conflict, CostBenefit, ExecutionPlan, ExecutionStep, NodeScore, ReasonKind, Recommendation,
    Risk, SkippedGuest, Summary, Urgency,
};
use crate::view::{Cluster, GuestKind};

const MIB: f64 = 1_048_576.0;
/// The per-node limits a batch of arrivals must stay under (docs/engine.md §7).
const SAFETY_CPU: f64 = 85.0;
const SAFETY_MEM: f64 = 90.0;
/// Confidence takes the outcome history at this neutral value: no outcomes are recorded.
const OUTCOME_NEUTRAL: f64 = 65.0;

/// Fills in the reason text, confidence, risk and cost-benefit of a recommendation.
pub(crate) fn annotate(r: &mut Recommendation, planner: &Generator<'_>, cluster_health: f64) {
    let cluster = planner.cluster;
    let Some(g) = cluster.guest(r.vmid) else {
        return;
    };
    let msi = cluster.config.min_score_improvement;
    let src = &r.score_details.source.metrics;
    let tgt = &r.score_details.target;

    // reason
    let mut factors = Vec::new();
    let level = |v: f64, high: f64| if v > high { " (high)" } else { "" };
    if src.cpu_blend > 60.0 {
        factors.push(format!(
            "source CPU {:.1}%{}",
            src.cpu_blend,
            level(src.cpu_blend, 80.0)
        ));
    }
    if src.mem > 65.0 {
        factors.push(format!(
            "source memory {:.1}%{}",
            src.mem,
            level(src.mem, 85.0)
        ));
    }
    if src.iowait_blend > 15.0 {
        factors.push(format!(
            "source IOWait {:.1}%{}",
            src.iowait_blend,
            level(src.iowait_blend, 25.0)
        ));
    }
    let cpu_headroom = 100.0 - tgt.metrics.predicted_cpu;
    if cpu_headroom > 30.0 {
        factors.push(format!("target CPU headroom {cpu_headroom:.1}%"));
    }
    let io_mbps = g.disk_io_bps() / MIB;
    r.reason.summary = match r.reason.kind {
        ReasonKind::MaintenanceEvacuation => {
            format!(
                "{} is in maintenance: move {} to {}",
                r.source_node, r.name, r.target_node
            )
        }
        ReasonKind::IowaitRelief => format!(
            "relieve I/O pressure on {} (IOWait {:.1}%): move {} ({io_mbps:.1} MiB/s of disk I/O) to {}",
            r.source_node, src.iowait_blend, r.name, r.target_node
        ),
        ReasonKind::CpuImbalance => format!(
            "balance CPU: {} at {:.1}% against {} at {:.1}%",
            r.source_node, src.cpu_blend, r.target_node, tgt.metrics.cpu_blend
        ),
        ReasonKind::MemImbalance => format!(
            "balance memory: {} at {:.1}% against {} at {:.1}%",
            r.source_node, src.mem, r.target_node, tgt.metrics.mem
        ),
        ReasonKind::AntiAffinity => format!(
            "separate anti-affinity group {}: move {} from {} to {}",
            g.tags
                .exclude
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            r.name,
            r.source_node,
            r.target_node
        ),
        ReasonKind::NodeAffinity => format!(
            "{} may only run on the nodes its rules allow: move it from {} to {}",
            r.name, r.source_node, r.target_node
        ),
        ReasonKind::Affinity => format!(
            "bring affinity group {} together: move {} from {} to {}",
            r.affinity_group.as_deref().unwrap_or("?"),
            r.name,
            r.source_node,
            r.target_node
        ),
        ReasonKind::Overcommit => format!(
            "relieve memory overcommit on {} (ratio {:.2}): move {} ({:.0} GiB configured) to {}",
            r.source_node, src.overcommit_ratio, r.name, g.mem_max_gb, r.target_node
        ),
    };
    if let (Some(group), Some(leader)) = (&r.affinity_group, r.affinity_leader_vmid) {
        r.reason.summary = format!(
            "follows {leader} (affinity group {group}): {}",
            r.reason.summary
        );
    }
    r.reason.factors = factors;

    // confidence
    let impr = r.score_improvement;
    let impr_score = if impr >= 60.0 {
        100.0
    } else if impr >= 40.0 {
        80.0 + (impr - 40.0)
    } else if impr >= 25.0 {
        55.0 + (impr - 25.0) / 15.0 * 25.0
    } else if impr >= msi && msi < 25.0 {
        30.0 + (impr - msi) / (25.0 - msi) * 25.0
    } else if msi > 0.0 {
        (30.0 * impr / msi).max(0.0)
    } else {
        30.0
    };
    let mem_headroom = 100.0 - tgt.metrics.predicted_mem;
    let headroom = (1.5 * mean([cpu_headroom, mem_headroom])).min(100.0);
    let complexity = if g.unshared_bind_mount {
        20.0
    } else if g.mem_max_gb > 32.0 || g.cpu_cores > 8 {
        40.0
    } else if g.mem_max_gb > 16.0 || g.cpu_cores > 4 {
        60.0
    } else if g.mem_max_gb > 4.0 {
        80.0
    } else {
        100.0
    };
    let target_rising = cluster
        .node_index(&r.target_node)
        .and_then(|i| planner.nodes[i].trend)
        .is_some_and(|t| t.cpu_rising);
    let stability = if target_rising {
        if cpu_headroom >= 50.0 {
            70.0
        } else if cpu_headroom >= 30.0 {
            50.0
        } else {
            30.0
        }
    } else if tgt.total_penalties > 50.0 {
        50.0
    } else if tgt.total_penalties > 20.0 {
        70.0
    } else {
        100.0
    };
    let confidence = (0.35 * impr_score
        + 0.20 * headroom
        + 0.15 * complexity
        + 0.15 * stability
        + 0.15 * OUTCOME_NEUTRAL)
        .clamp(0.0, 100.0);
    r.confidence = round_to(confidence, 1);

    // risk
    let net_mbps = (g.net_in_bps + g.net_out_bps) / MIB;
    let size = band(
        g.mem_max_gb,
        [64.0, 32.0, 16.0, 4.0],
        [100.0, 75.0, 50.0, 25.0],
        10.0,
    );
    let io = band(
        io_mbps,
        [100.0, 50.0, 20.0, 5.0],
        [100.0, 75.0, 50.0, 25.0],
        5.0,
    );
    let net = band(net_mbps, [100.0, 50.0, 10.0], [90.0, 65.0, 35.0], 10.0);
    let storage = 10.0;
    let health = if cluster_health < 30.0 {
        90.0
    } else if cluster_health < 50.0 {
        60.0
    } else if cluster_health < 70.0 {
        30.0
    } else {
        10.0
    };
    let risk = round_to(
        0.30 * size + 0.25 * io + 0.20 * storage + 0.15 * net + 0.10 * health,
        1,
    );
    let mut risk_factors = Vec::new();
    if size >= 50.0 {
        risk_factors.push(format!("{:.0} GiB of memory to transfer", g.mem_max_gb));
    }
    if io >= 50.0 {
        risk_factors.push(format!("{io_mbps:.0} MiB/s of disk I/O"));
    }
    if net >= 35.0 {
        risk_factors.push(format!("{net_mbps:.0} MiB/s of network traffic"));
    }
    if health >= 30.0 {
        risk_factors.push(format!("cluster health {cluster_health:.0}"));
    }
    let level = if risk <= 25.0 {
        "low"
    } else if risk <= 50.0 {
        "moderate"
    } else if risk <= 75.0 {
        "high"
    } else {
        "very_high"
    };
    r.risk = Risk {
        score: risk,
        level: level.to_owned(),
        factors: risk_factors,
    };

    // cost-benefit
    let benefit = 0.7 * impr + 0.3 * r.confidence;
    let mut duration = (g.mem_max_gb / 4.0).max(1.0) + io_mbps / 50.0;
    let mut disruption = 1.0;
    if g.kind == GuestKind::Lxc {
        duration /= 2.0;
        disruption = 1.5;
    }
    if g.mem_max_gb > 32.0 {
        disruption *= 1.3;
    }
    let cost = duration * disruption;
    let ratio = benefit / cost.max(0.1);
    r.cost_benefit = CostBenefit {
        benefit: round_to(benefit, 2),
        cost: round_to(cost, 2),
        ratio: round_to(ratio, 2),
        viable: ratio >= 1.0,
    };
}

fn band<const N: usize>(value: f64, limits: [f64; N], points: [f64; N], otherwise: f64) -> f64 {
    limits
        .iter()
        .zip(points)
        .find(|(l, _)| value >= **l)
        .map_or(otherwise, |(_, p)| p)
}

/// Flags batches into one target that together exceed the safety limits.
pub(crate) fn conflicts(recs: &mut [Recommendation], cluster: &Cluster) -> Vec<Conflict> {
    let mut by_target: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, r) in recs.iter().enumerate() {
        by_target.entry(r.target_node.as_str()).or_default().push(i);
    }
    let mut out = Vec::new();
    let mut flagged = Vec::new();
    for (target, idx) in by_target.into_iter().filter(|(_, v)| v.len() >= 2) {
        let Some(ti) = cluster.node_index(target) else {
            continue;
        };
        let node = &cluster.nodes[ti];
        let mut cpu = node.current.cpu;
        let mut mem = node.current.mem;
        for &i in &idx {
            if let Some(g) = cluster.guest(recs[i].vmid) {
                cpu += Impact::of(g, node).cpu;
                if node.total_mem_gb > 0.0 {
                    mem += g.mem_max_gb / node.total_mem_gb * 100.0;
                }
            }
        }
        let (exceeds_cpu, exceeds_mem) = (cpu > SAFETY_CPU, mem > SAFETY_MEM);
        if !exceeds_cpu && !exceeds_mem {
            continue;
        }
        let t = &cluster.thresholds;
        let alternative = cluster.nodes.iter().find(|n| {
            n.name != target
                && n.is_online()
                && !n.maintenance
                && n.current.cpu < t.cpu - 10.0
                && n.current.mem < t.mem - 10.0
        });
        let incoming: Vec<u32> = idx.iter().map(|&i| recs[i].vmid).collect();
        let resolution = match alternative {
            Some(n) => format!(
                "send some of the moves to {} instead, or run them one at a time and re-plan",
                n.name
            ),
            None => "run the moves one at a time and re-plan after each".to_owned(),
        };
        out.push(Conflict {
            target_node: target.to_owned(),
            incoming_guests: incoming,
            combined_predicted_cpu: round_to(cpu, 2),
            combined_predicted_mem: round_to(mem, 2),
            exceeds_cpu,
            exceeds_mem,
            resolution,
        });
        flagged.extend(idx);
    }
    for i in flagged {
        recs[i].has_conflict = true;
    }
    out
}

/// Orders the moves: a move out of a node runs before moves into it; cycles are broken by
/// dropping the dependency whose earlier move improves least. Moves with no order between them
/// form parallel groups.
pub(crate) fn execution_plan(recs: &[Recommendation]) -> ExecutionPlan {
    let n = recs.len();
    let mut into: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, r) in recs.iter().enumerate() {
        into.entry(r.target_node.as_str()).or_default().push(i);
    }
    // edge a → b: a leaves the node b moves into
    let mut edges: Vec<(usize, usize)> = Vec::new();
    for (a, r) in recs.iter().enumerate() {
        for &b in into.get(r.source_node.as_str()).into_iter().flatten() {
            if a != b {
                edges.push((a, b));
            }
        }
    }
    // kept: the dependency is part of the plan; waiting: its tail has not been placed yet
    let mut kept = vec![true; edges.len()];
    let mut waiting = vec![true; edges.len()];
    let mut out_edges = vec![Vec::new(); n];
    let mut indegree = vec![0usize; n];
    for (e, &(a, b)) in edges.iter().enumerate() {
        out_edges[a].push(e);
        indegree[b] += 1;
    }
    let mut placed = vec![false; n];
    let mut remaining = n;
    let mut groups: Vec<Vec<usize>> = Vec::new();
    while remaining > 0 {
        let mut ready: Vec<usize> = (0..n).filter(|&i| !placed[i] && indegree[i] == 0).collect();
        if ready.is_empty() {
            // every remaining move waits on another: drop the edge whose tail improves least
            let drop = (0..edges.len()).filter(|&e| waiting[e]).min_by(|&x, &y| {
                let (ex, ey) = (edges[x], edges[y]);
                recs[ex.0]
                    .score_improvement
                    .total_cmp(&recs[ey.0].score_improvement)
                    .then(recs[ex.0].vmid.cmp(&recs[ey.0].vmid))
                    .then(recs[ex.1].vmid.cmp(&recs[ey.1].vmid))
            });
            match drop {
                Some(e) => {
                    kept[e] = false;
                    waiting[e] = false;
                    indegree[edges[e].1] -= 1;
                    continue;
                }
                None => break,
            }
        }
        ready.sort_by(|&x, &y| {
            let (a, b) = (&recs[x], &recs[y]);
            b.confidence
                .total_cmp(&a.confidence)
                .then(a.risk.score.total_cmp(&b.risk.score))
                .then(b.score_improvement.total_cmp(&a.score_improvement))
                .then(a.vmid.cmp(&b.vmid))
        });
        for &i in &ready {
            placed[i] = true;
            remaining -= 1;
            for &e in &out_edges[i] {
                if waiting[e] {
                    waiting[e] = false;
                    indegree[edges[e].1] -= 1;
                }
            }
        }
        groups.push(ready);
    }
    let mut before: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (e, &(a, b)) in edges.iter().enumerate() {
        if kept[e] {
            before[b].push(recs[a].vmid);
        }
    }
    let mut steps = Vec::with_capacity(n);
    for (gi, group) in groups.iter().enumerate() {
        for &i in group {
            let r = &recs[i];
            let reason_for_order = if before[i].is_empty() {
                "no dependency".to_owned()
            } else {
                let list: Vec<String> = before[i].iter().map(u32::to_string).collect();
                format!("after {} leave {}", list.join(", "), r.target_node)
            };
            steps.push(ExecutionStep {
                step: steps.len() + 1,
                parallel_group: gi + 1,
                vmid: r.vmid,
                name: r.name.clone(),
                source_node: r.source_node.clone(),
                target_node: r.target_node.clone(),
                reason_for_order,
            });
        }
    }
    ExecutionPlan {
        total_steps: steps.len(),
        can_parallelize: groups.iter().any(|g| g.len() > 1),
        parallel_groups: groups
            .iter()
            .map(|g| g.iter().map(|&i| recs[i].vmid).collect())
            .collect(),
        ordered_recommendations: steps,
    }
}

/// Orders moves that were decided one after another on a simulated cluster (the cluster
/// planner's): their order is already safe, so it is kept; a move joins the parallel group
/// after the last earlier move that touches one of its nodes, so the moves of one group touch
/// disjoint nodes and may run at once. Guests moving with an affinity leader move in its step.
pub(crate) fn ordered_plan(recs: &[Recommendation]) -> ExecutionPlan {
    let mut level_of_node: BTreeMap<&str, usize> = BTreeMap::new();
    let mut leader_level: BTreeMap<u32, usize> = BTreeMap::new();
    let mut last_on_node: BTreeMap<&str, u32> = BTreeMap::new();
    let mut groups: Vec<Vec<u32>> = Vec::new();
    let mut steps = Vec::with_capacity(recs.len());
    for r in recs {
        let (src, tgt) = (r.source_node.as_str(), r.target_node.as_str());
        let level = match r.affinity_leader_vmid.and_then(|l| leader_level.get(&l)) {
            Some(&l) => l,
            None => {
                let after = level_of_node
                    .get(src)
                    .copied()
                    .unwrap_or(0)
                    .max(level_of_node.get(tgt).copied().unwrap_or(0));
                after + 1
            }
        };
        let before: Vec<String> = [src, tgt]
            .iter()
            .filter_map(|n| last_on_node.get(n).map(|v| (*n, *v)))
            .filter(|(_, v)| Some(*v) != r.affinity_leader_vmid)
            .map(|(n, v)| format!("{v} ({n})"))
            .collect();
        leader_level.insert(r.vmid, level);
        level_of_node.insert(src, level);
        level_of_node.insert(tgt, level);
        last_on_node.insert(src, r.vmid);
        last_on_node.insert(tgt, r.vmid);
        if groups.len() < level {
            groups.resize(level, Vec::new());
        }
        groups[level - 1].push(r.vmid);
        steps.push(ExecutionStep {
            step: steps.len() + 1,
            parallel_group: level,
            vmid: r.vmid,
            name: r.name.clone(),
            source_node: r.source_node.clone(),
            target_node: r.target_node.clone(),
            reason_for_order: if let Some(l) = r.affinity_leader_vmid {
                format!("with {l} (affinity group)")
            } else if before.is_empty() {
                "no dependency".to_owned()
            } else {
                format!("after {}", before.join(", "))
            },
        });
    }
    steps.sort_by_key(|s| (s.parallel_group, s.step));
    for (i, s) in steps.iter_mut().enumerate() {
        s.step = i + 1;
    }
    ExecutionPlan {
        total_steps: steps.len(),
        can_parallelize: groups.iter().any(|g| g.len() > 1),
        parallel_groups: groups,
        ordered_recommendations: steps,
    }
}

/// Totals of the run.
pub(crate) fn summary(
    recs: &[Recommendation],
    skipped: &[SkippedGuest],
    (cluster_health, avg_cpu, avg_mem): (f64, f64, f64),
    cluster: &Cluster,
    convergence_message: Option<String>,
    iowait_stressed_nodes: Vec<String>,
    maintenance_nodes: Vec<String>,
) -> Summary {
    let mut skip_reasons = BTreeMap::new();
    for s in skipped {
        *skip_reasons.entry(s.reason).or_insert(0) += 1;
    }
    let online = cluster
        .nodes
        .iter()
        .filter(|n| n.is_online())
        .count()
        .max(1) as f64;
    let gain: f64 = recs.iter().map(|r| r.score_improvement).sum();
    let urgency = if recs
        .iter()
        .any(|r| r.reason.kind == ReasonKind::MaintenanceEvacuation)
    {
        Urgency::High
    } else if recs.iter().any(|r| r.score_improvement >= 50.0) {
        Urgency::Medium
    } else if !recs.is_empty() {
        Urgency::Low
    } else {
        Urgency::None
    };
    Summary {
        total_recommendations: recs.len(),
        total_skipped: skipped.len(),
        skip_reasons,
        cluster_health: round_to(cluster_health, 2),
        predicted_health: round_to((cluster_health + gain * 0.3 / online).min(100.0), 2),
        avg_cpu: round_to(avg_cpu, 2),
        avg_mem: round_to(avg_mem, 2),
        urgency,
        convergence_message,
        iowait_stressed_nodes,
        maintenance_nodes,
        active_preset: cluster
            .config
            .active_preset()
            .map_or("custom", |p| p.name())
            .to_owned(),
    }
}

/// Every node scored as a target for a guest of no size, with nothing pending.
pub(crate) fn node_scores(planner: &Generator<'_>) -> Vec<NodeScore> {
    planner
        .nodes
        .iter()
        .enumerate()
        .map(|(i, pn)| {
            let load = &planner.loads[i];
            let d = planner.bases[i].score(
                planner.cfg,
                planner.t,
                pn.node,
                load,
                Impact::default(),
                true,
            );
            let n = pn.node;
            NodeScore {
                node: n.name.clone(),
                status: n.status,
                maintenance: n.maintenance,
                iowait_stressed: planner.stressed[i],
                iowait_exempt: n.iowait_exempt,
                committed_mem_gb: round_to(n.committed_mem_gb, 2),
                mem_overcommit_ratio: n.mem_overcommit_ratio,
                health: d.components.health,
                score: d.score,
                suitability: d.suitability(),
                cpu_stability_factor: d.cpu_stability_factor,
                penalties: d.penalties,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::ScoreDetails;
    use crate::set::{CostBenefit, MoveDetails, MoveTerm, RecommendationReason};

    fn rec(vmid: u32, from: &str, to: &str, improvement: f64) -> Recommendation {
        let details = ScoreDetails {
            score: 0.0,
            penalties: Default::default(),
            total_penalties: 0.0,
            cpu_stability_factor: 1.0,
            components: Default::default(),
            metrics: Default::default(),
            trend: None,
        };
        Recommendation {
            vmid,
            name: format!("g{vmid}"),
            kind: GuestKind::Qemu,
            source_node: from.into(),
            target_node: to.into(),
            source_score: 0.0,
            target_score: 0.0,
            score_improvement: improvement,
            suitability: 0.0,
            reason: RecommendationReason {
                kind: ReasonKind::CpuImbalance,
                summary: String::new(),
                factors: vec![],
            },
            confidence: 50.0,
            risk: Risk {
                score: 10.0,
                level: "low".into(),
                factors: vec![],
            },
            cost_benefit: CostBenefit {
                benefit: 0.0,
                cost: 0.0,
                ratio: 0.0,
                viable: true,
            },
            mem_gb: 1.0,
            command: String::new(),
            score_details: MoveDetails {
                source: details,
                target: details,
            },
            has_conflict: false,
            affinity_group: None,
            affinity_leader_vmid: None,
            affinity_companions: vec![],
            warnings: vec![],
            term: MoveTerm::CpuBalance,
            gain: None,
        }
    }

    #[test]
    fn moves_out_run_before_moves_in() {
        let recs = [
            rec(1, "b", "c", 20.0),
            rec(2, "a", "b", 30.0),
            rec(3, "d", "e", 40.0),
        ];
        let p = execution_plan(&recs);
        // within a group: higher improvement first at equal confidence and risk
        assert_eq!(p.parallel_groups, vec![vec![3, 1], vec![2]]);
        assert_eq!(
            p.ordered_recommendations[2].reason_for_order,
            "after 1 leave b"
        );
        assert!(p.can_parallelize);
    }

    #[test]
    fn cycles_drop_the_weakest_dependency() {
        // 1: a→b and 2: b→a wait on each other; the edge from the weaker move (1) is dropped,
        // so 2 no longer waits and goes first
        let recs = [rec(1, "a", "b", 20.0), rec(2, "b", "a", 30.0)];
        let p = execution_plan(&recs);
        assert_eq!(p.parallel_groups, vec![vec![2], vec![1]]);
        assert_eq!(p.total_steps, 2);
    }
}
