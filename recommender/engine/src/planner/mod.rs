//! The cluster planner (`planner = "cluster"`, the default): a plan for the whole cluster, made
//! on a simulated copy of it (see [`sim`] for how a move shifts load, including the IOWait-share
//! model, and [`objective`] for what a plan minimises).
//!
//! The work is done in this order, each move applied to the simulation before the next is
//! chosen:
//!
//! 1. evacuate nodes in maintenance;
//! 2. repair anti-affinity violations;
//! 3. relieve IOWait-stressed nodes by the seed's selection (guests by disk I/O, only as many
//!    as the reduction needs, never one without disk I/O);
//! 4. balance: the move with the largest gain net of its cost, while one gains more than its
//!    cost plus `min_move_gain`.
//!
//! Mandatory moves (1–3) go to their best target whatever they cost. The plan is then cut at
//! `max_moves` / `max_gib`; what is cut is reported as deferred, with its gain.

mod bounds;
mod groups;
mod objective;
mod search;
mod sim;
mod units;

use std::collections::BTreeMap;

use crate::config::PlannerKind;
use crate::numeric::round_to;
use crate::reference::{Generator, new_recommendation};
use crate::report;
use crate::set::{
    DeferredMove, Imbalance, NodePrediction, Prediction, Recommendation, RecommendationSet,
    SkipReason, SkippedGuest,
};
use crate::view::Cluster;

use objective::{Weights, objective};
use search::{Search, Step};
use sim::{Contribution, Sim};

/// Plans `cluster` (docs/engine.md §1–5 and §7 with this module's search). `limit`, when given,
/// caps the plan's moves like `max_moves` does.
pub(crate) fn plan(cluster: &Cluster, limit: Option<usize>) -> RecommendationSet {
    let cfg = &cluster.config;
    let generator = Generator::new(cluster);
    let initial_health = generator.cluster_health();
    let node_scores = report::node_scores(&generator);
    let w = Weights::of(cfg);

    let mut search = Search::new(Sim::new(cluster));
    let start = Sim::new(cluster);
    search.evacuate();
    search.repair_pins();
    search.repair_anti_affinity();
    search.repair_affinity();
    search.relieve_iowait();
    search.balance();

    // limits: the plan is the longest prefix within them, the rest is deferred
    let max_moves = match (cfg.max_moves as usize, limit) {
        (0, None) => usize::MAX,
        (0, Some(l)) => l,
        (m, None) => m,
        (m, Some(l)) => m.min(l),
    };
    let max_gib = if cfg.max_gib > 0.0 {
        cfg.max_gib
    } else {
        f64::INFINITY
    };
    let (mut moves, mut gib, mut cut) = (0usize, 0.0f64, search.steps.len());
    for (i, step) in search.steps.iter().enumerate() {
        let c = step.members.iter().fold(Contribution::default(), |c, &gi| {
            c.plus(Contribution::of(&cluster.guests[gi]))
        });
        if moves + step.members.len() > max_moves || gib + c.mem_max_gb > max_gib + 1e-9 {
            cut = i;
            break;
        }
        moves += step.members.len();
        gib += c.mem_max_gb;
    }
    let limit_reason = if moves >= max_moves {
        format!("max_moves ({max_moves}) reached")
    } else {
        format!("max_gib ({}) reached", cfg.max_gib)
    };
    let kept: Vec<Step> = search.steps[..cut].to_vec();
    let deferred: Vec<DeferredMove> = search.steps[cut..]
        .iter()
        .flat_map(|s| {
            s.members.iter().enumerate().map(|(k, &gi)| {
                let g = &cluster.guests[gi];
                DeferredMove {
                    vmid: g.vmid,
                    name: g.name.clone(),
                    source_node: cluster.nodes[s.from].name.clone(),
                    target_node: cluster.nodes[s.to].name.clone(),
                    term: s.term,
                    mem_gb: g.mem_max_gb,
                    gain: if k == 0 {
                        round_to(s.gain.net(), 2)
                    } else {
                        0.0
                    },
                    reason: limit_reason.clone(),
                }
            })
        })
        .collect();
    let unresolved = std::mem::take(&mut search.unresolved);
    // the cluster as the plan leaves it: the search's own state, unless the limits cut it
    let end = if cut == search.steps.len() {
        search
    } else {
        Search::new(replay(
            cluster,
            kept.iter().map(|s| (s.members.as_slice(), s.to)),
        ))
    };

    let mut recs: Vec<Recommendation> = Vec::new();
    for step in &kept {
        let leader = step.members.first().map(|&gi| cluster.guests[gi].vmid);
        let group = step
            .members
            .first()
            .and_then(|&gi| cluster.guests[gi].tags.affinity.iter().next().cloned());
        for (k, (&gi, (source, target))) in step.members.iter().zip(&step.details).enumerate() {
            let g = &cluster.guests[gi];
            let boost = if cluster.nodes[step.from].maintenance {
                cfg.maintenance_score_boost
            } else {
                0.0
            } + if step.iowait_selected {
                cfg.iowait_score_boost
            } else {
                0.0
            };
            let kind = step.term.reason_kind(source, target);
            let mut r = new_recommendation(
                cluster,
                g,
                (step.from, step.to),
                (*source, source.score + boost),
                *target,
                kind,
            );
            r.term = step.term;
            if k == 0 {
                r.gain = Some(round_gain(step.gain));
                r.affinity_companions = step.members[1..]
                    .iter()
                    .map(|&m| cluster.guests[m].vmid)
                    .collect();
            } else {
                r.affinity_group = group.clone();
                r.affinity_leader_vmid = leader;
            }
            report::annotate(&mut r, &generator, initial_health.0);
            recs.push(r);
        }
    }

    let prediction = prediction(&start, &end.sim, &w);
    let skipped = skipped(cluster, &end, &kept, &deferred);
    let conflicts = report::conflicts(&mut recs, cluster);
    let execution_plan = report::ordered_plan(&recs);
    let stressed_nodes: Vec<String> = (0..cluster.nodes.len())
        .filter(|&n| start.is_stressed(n))
        .map(|n| cluster.nodes[n].name.clone())
        .collect();
    let maintenance_nodes: Vec<String> = cluster
        .nodes
        .iter()
        .filter(|n| n.maintenance)
        .map(|n| n.name.clone())
        .collect();
    let convergence =
        (recs.is_empty() && deferred.is_empty() && unresolved.is_empty()).then(|| {
            "cluster is balanced: no move lowers the plan objective by more than its cost"
                .to_owned()
        });
    let mut summary = report::summary(
        &recs,
        &skipped,
        initial_health,
        cluster,
        convergence,
        stressed_nodes,
        maintenance_nodes,
    );
    // The health of the simulated cluster, not ProxBalance's estimate from the moves' score
    // improvements, which a balancing move onto a node of higher score would lower.
    summary.predicted_health = round_to(end.sim.cluster_health().min(100.0), 2);
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
        planner: PlannerKind::Cluster,
        prediction,
        deferred,
        unresolved,
    }
}

fn round_gain(mut g: crate::set::ObjectiveGain) -> crate::set::ObjectiveGain {
    for v in [
        &mut g.node_health,
        &mut g.memory_balance,
        &mut g.cpu_balance,
        &mut g.overcommit,
        &mut g.iowait,
        &mut g.anti_affinity,
        &mut g.affinity,
        &mut g.pins,
        &mut g.total,
        &mut g.cost,
    ] {
        *v = round_to(*v, 2);
    }
    g
}

/// The cluster once `moves` (guests moving together, and where to) are applied in order.
fn replay<'a, 'm>(
    cluster: &'a Cluster,
    moves: impl Iterator<Item = (&'m [usize], usize)>,
) -> Sim<'a> {
    let mut sim = Sim::new(cluster);
    for (members, to) in moves {
        let Some(&first) = members.first() else {
            continue;
        };
        let from = sim.placement[first];
        let c = members.iter().fold(Contribution::default(), |c, &gi| {
            c.plus(Contribution::of(&cluster.guests[gi]))
        });
        let from_load = sim.without(from, &c);
        let to_load = sim.with(to, &c);
        sim.apply(members, &c, (from, from_load), (to, to_load));
    }
    sim
}

/// The predicted state after `moves` (guest index, target node), one guest at a time: what the
/// reference generator's sets carry.
pub(crate) fn predict(cluster: &Cluster, moves: &[(usize, usize)]) -> Prediction {
    let start = Sim::new(cluster);
    let singles: Vec<[usize; 1]> = moves.iter().map(|&(gi, _)| [gi]).collect();
    let end = replay(
        cluster,
        singles
            .iter()
            .zip(moves)
            .map(|(m, &(_, to))| (m.as_slice(), to)),
    );
    prediction(&start, &end, &Weights::of(&cluster.config))
}

fn prediction(start: &Sim<'_>, end: &Sim<'_>, w: &Weights) -> Prediction {
    let cluster = start.cluster;
    let nodes = (0..cluster.nodes.len())
        .filter(|&n| cluster.nodes[n].is_online())
        .map(|n| NodePrediction {
            node: cluster.nodes[n].name.clone(),
            maintenance: cluster.nodes[n].maintenance,
            before: rounded(start.figures(n)),
            after: rounded(end.figures(n)),
        })
        .collect();
    Prediction {
        nodes,
        imbalance_before: imbalance(start),
        imbalance_after: imbalance(end),
        objective_before: round_to(objective(start, w), 2),
        objective_after: round_to(objective(end, w), 2),
    }
}

fn rounded(mut f: crate::set::NodeFigures) -> crate::set::NodeFigures {
    for v in [
        &mut f.cpu,
        &mut f.mem,
        &mut f.committed_pct,
        &mut f.iowait,
        &mut f.iowait_24h,
        &mut f.score,
    ] {
        *v = round_to(*v, 2);
    }
    f
}

/// Spread and standard deviation of memory % and CPU % over the eligible nodes, and PVE CRS's
/// normalised coefficient of variation of their mean.
fn imbalance(sim: &Sim<'_>) -> Imbalance {
    let loads: Vec<(f64, f64)> = sim
        .nodes
        .iter()
        .filter(|n| n.eligible)
        .map(|n| (n.load.current.mem, n.load.current.cpu))
        .collect();
    if loads.is_empty() {
        return Imbalance::default();
    }
    let stats = |v: &[f64]| {
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        let spread =
            v.iter().copied().fold(f64::MIN, f64::max) - v.iter().copied().fold(f64::MAX, f64::min);
        (spread, sd, mean)
    };
    let mem: Vec<f64> = loads.iter().map(|l| l.0).collect();
    let cpu: Vec<f64> = loads.iter().map(|l| l.1).collect();
    let both: Vec<f64> = loads.iter().map(|l| (l.0 + l.1) / 2.0).collect();
    let (ms, msd, _) = stats(&mem);
    let (cs, csd, _) = stats(&cpu);
    let (_, bsd, bmean) = stats(&both);
    let n = both.len() as f64;
    let ncv = if bmean > 0.0 && n > 1.0 {
        bsd / bmean / (n - 1.0).sqrt()
    } else {
        0.0
    };
    Imbalance {
        mem_spread: round_to(ms, 2),
        mem_stddev: round_to(msd, 2),
        cpu_spread: round_to(cs, 2),
        cpu_stddev: round_to(csd, 2),
        normalized_cv: round_to(ncv, 4),
    }
}

/// Why each guest the plan leaves where it is stays there, judged on the cluster as the plan
/// leaves it.
fn skipped(
    cluster: &Cluster,
    end: &Search<'_>,
    kept: &[Step],
    deferred: &[DeferredMove],
) -> Vec<SkippedGuest> {
    let mut moved = vec![false; cluster.guests.len()];
    for s in kept {
        for &gi in &s.members {
            moved[gi] = true;
        }
    }
    for d in deferred {
        if let Ok(gi) = cluster.guests.binary_search_by_key(&d.vmid, |g| g.vmid) {
            moved[gi] = true;
        }
    }
    let mut out = Vec::new();
    let mut why: BTreeMap<usize, (SkipReason, String)> = BTreeMap::new();
    for (unit, reason) in end.stay_reasons(&moved) {
        for gi in unit {
            why.insert(gi, reason.clone());
        }
    }
    for (gi, g) in cluster.guests.iter().enumerate() {
        if moved[gi] || !cluster.nodes[g.node].is_online() {
            continue;
        }
        let Some((reason, detail)) = why.remove(&gi) else {
            continue;
        };
        out.push(SkippedGuest {
            vmid: g.vmid,
            name: g.name.clone(),
            node: cluster.nodes[g.node].name.clone(),
            reason,
            detail,
        });
    }
    out
}
