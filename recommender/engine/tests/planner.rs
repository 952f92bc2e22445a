//! The cluster planner (`planner = "cluster"`, the default): the seed's scenarios, its own
//! behaviours, properties on generated clusters, and the targets of the public plan-quality
//! scenarios (copied into `tests/quality/`), judged from the plan's own predicted after-state.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use proptest::prelude::*;
use proxbalance_engine::synthetic::cluster_view;
use proxbalance_engine::{
    CapacityBasis, Cluster, ClusterView, MoveTerm, Recommendation, RecommendationSet, SkipReason,
    plan,
};
use serde_json::{Value, json};

/// Terms of moves that may be mandatory (taken whatever they cost): maintenance, repairs of
/// strict rules and IOWait relief.
const MANDATORY: [MoveTerm; 5] = [
    MoveTerm::Maintenance,
    MoveTerm::AntiAffinity,
    MoveTerm::IowaitRelief,
    MoveTerm::NodeAffinity,
    MoveTerm::Affinity,
];

fn moves(set: &RecommendationSet) -> Vec<(u32, &str)> {
    set.recommendations
        .iter()
        .map(|r| (r.vmid, r.target_node.as_str()))
        .collect()
}

/// IOWait-stressed as docs/engine.md §5 defines it, from the view alone.
fn stressed(c: &Cluster) -> Vec<bool> {
    c.nodes
        .iter()
        .map(|n| {
            let avg = n.avg_24h.map_or(n.current.iowait, |d| d.iowait);
            let exempt = c.config.iowait_exempt_enabled && n.iowait_exempt;
            n.is_online()
                && !n.maintenance
                && !exempt
                && n.current.iowait > c.thresholds.iowait
                && avg > 0.7 * c.thresholds.iowait
        })
        .collect()
}

/// The plan's moves grouped into the steps they were made in: a leader and the guests of its
/// affinity group that move with it.
fn steps(set: &RecommendationSet) -> Vec<Vec<&Recommendation>> {
    let mut out: Vec<Vec<&Recommendation>> = Vec::new();
    for r in &set.recommendations {
        match r.affinity_leader_vmid {
            Some(l) if out.last().is_some_and(|s| s[0].vmid == l) => {
                if let Some(step) = out.last_mut() {
                    step.push(r);
                }
            }
            _ => out.push(vec![r]),
        }
    }
    out
}

/// Replays a cluster plan step by step and checks every hard gate on the state each step is
/// made in, with an accounting of its own (not the planner's).
fn check_every_state(c: &Cluster, set: &RecommendationSet) -> Result<(), TestCaseError> {
    let stressed = stressed(c);
    let mut node_of: BTreeMap<u32, usize> = c.guests.iter().map(|g| (g.vmid, g.node)).collect();
    let mut committed: Vec<f64> = c.nodes.iter().map(|n| n.committed_mem_gb).collect();
    let mut used: Vec<f64> = c
        .nodes
        .iter()
        .map(|n| n.current.mem / 100.0 * n.total_mem_gb)
        .collect();
    let mut running: Vec<usize> = vec![0; c.nodes.len()];
    for g in c.guests.iter().filter(|g| g.is_running()) {
        running[g.node] += 1;
    }
    let mut seen = BTreeSet::new();
    for step in steps(set) {
        let lead = step[0];
        let from = c.node_index(&lead.source_node).expect("source");
        let to = c.node_index(&lead.target_node).expect("target");
        let target = &c.nodes[to];
        prop_assert!(to != from && target.is_online() && !target.maintenance);
        prop_assert!(
            !stressed[to],
            "{} moved onto IOWait-stressed {}",
            lead.vmid,
            target.name
        );
        let guests: Vec<_> = step
            .iter()
            .map(|r| c.guest(r.vmid).expect("guest"))
            .collect();
        let need: f64 = guests.iter().map(|g| g.mem_max_gb).sum();
        let base = match c.config.capacity_basis {
            CapacityBasis::Committed => committed[to],
            CapacityBasis::Used => used[to],
        };
        prop_assert!(
            base + need <= (1.0 - c.config.capacity_headroom) * target.total_mem_gb + 1e-6,
            "step of {} overfills {}: {} + {} GiB",
            lead.vmid,
            target.name,
            base,
            need
        );
        for g in &guests {
            prop_assert!(seen.insert(g.vmid), "guest {} moves twice", g.vmid);
            prop_assert_eq!(
                node_of[&g.vmid],
                from,
                "guest {} is not on its source",
                g.vmid
            );
            for s in &g.storages {
                prop_assert!(
                    target.storage.iter().any(|x| &x.id == s && x.active),
                    "{} needs storage {} that {} lacks",
                    g.vmid,
                    s,
                    target.name
                );
            }
            for other in c.guests.iter().filter(|o| node_of[&o.vmid] == to) {
                prop_assert!(
                    g.tags.exclude.is_disjoint(&other.tags.exclude),
                    "{} joins {} on {} in an anti-affinity group",
                    g.vmid,
                    other.vmid,
                    target.name
                );
            }
            let on_maintenance = c.nodes[from].maintenance;
            prop_assert!(!g.passthrough && g.lock.is_none() && !g.template && g.config_known);
            prop_assert!(on_maintenance || (g.is_running() && !g.tags.ignore && !g.ha_managed));
        }
        let leaving = guests.iter().filter(|g| g.is_running()).count();
        if !MANDATORY.contains(&lead.term) {
            prop_assert!(
                running[from] > leaving,
                "balancing move of {} empties {}",
                lead.vmid,
                lead.source_node
            );
            let gain = lead.gain.expect("a cluster plan's leader carries its gain");
            prop_assert!(
                gain.total - gain.cost > c.config.min_move_gain - 0.01,
                "balancing move of {} gains {} for {}",
                lead.vmid,
                gain.total,
                gain.cost
            );
        }
        for g in &guests {
            node_of.insert(g.vmid, to);
            if g.is_running() {
                committed[from] -= g.mem_max_gb;
                committed[to] += g.mem_max_gb;
                used[from] -= g.mem_used_gb;
                used[to] += g.mem_used_gb;
                running[from] -= 1;
                running[to] += 1;
            }
        }
    }
    Ok(())
}

/// The gains of the moves add up to the objective's fall (they are exact).
fn check_gains_add_up(set: &RecommendationSet) -> Result<(), TestCaseError> {
    if !set.deferred.is_empty() {
        return Ok(());
    }
    let gains: f64 = set
        .recommendations
        .iter()
        .filter_map(|r| r.gain.map(|g| g.total))
        .sum();
    let p = &set.prediction;
    let fall = p.objective_before - p.objective_after;
    let tolerance = 0.02 * (set.recommendations.len() as f64 + 1.0);
    prop_assert!(
        (fall - gains).abs() <= tolerance,
        "objective fell {} but the moves claim {}",
        fall,
        gains
    );
    Ok(())
}

/// A cluster of `nodes` equal nodes, each holding the same guests: nothing to balance.
fn even_cluster(nodes: usize, sizes: &[(f64, f64, u32, f64)]) -> Value {
    let per_node_mem: f64 = sizes.iter().map(|s| s.0).sum();
    let per_node_cpu: f64 = sizes.iter().map(|s| s.3 * f64::from(s.2)).sum();
    let mut guests = Vec::new();
    let mut vmid = 100;
    let node_views: Vec<Value> = (0..nodes)
        .map(|i| {
            let name = format!("n{i}");
            for &(used, max, cores, cpu) in sizes {
                guests.push(guest(vmid, &name, cpu, cores, used, max));
                vmid += 1;
            }
            node(
                &name,
                32,
                256.0,
                per_node_cpu / 32.0,
                per_node_mem / 256.0 * 100.0,
                1.0,
            )
        })
        .collect();
    view_json(node_views, guests)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn every_intermediate_state_keeps_every_gate(nodes in 2usize..12, guests in 0usize..120, seed: u64) {
        let c = cluster_view(nodes, guests, seed).validate().expect("valid");
        let set = plan(&c, None);
        check_every_state(&c, &set)?;
        check_gains_add_up(&set)?;
    }

    #[test]
    fn gates_hold_under_other_configurations(
        nodes in 2usize..10,
        guests in 0usize..100,
        seed: u64,
        used_basis: bool,
        preset in 0usize..3,
        maintenance in proptest::option::of(0usize..10),
    ) {
        let mut view = cluster_view(nodes, guests, seed);
        if let Some(m) = maintenance {
            view.maintenance_nodes = vec![view.nodes[m % view.nodes.len()].name.clone()];
        }
        let mut c = view.validate().expect("valid");
        let mut o = proxbalance_engine::Overrides {
            preset: Some(proxbalance_engine::Preset::ALL[preset]),
            ..Default::default()
        };
        if used_basis {
            o.penalties.insert("capacity_basis".into(), "used".into());
        }
        c.apply(&o).expect("valid overrides");
        let set = plan(&c, None);
        check_every_state(&c, &set)?;
        check_gains_add_up(&set)?;
        // everything movable on a node in maintenance leaves it, or is reported
        for g in c.guests.iter().filter(|g| c.nodes[g.node].maintenance && c.nodes[g.node].is_online()) {
            let moved = set.recommendations.iter().any(|r| r.vmid == g.vmid);
            let skipped = set.skipped.iter().any(|s| s.vmid == g.vmid);
            prop_assert!(moved || skipped, "guest {} on a maintenance node is neither moved nor skipped", g.vmid);
        }
    }

    #[test]
    fn a_balanced_cluster_gets_no_moves(
        nodes in 2usize..8,
        sizes in proptest::collection::vec((1.0f64..16.0, 0u32..3, 1u32..8, 0.0f64..60.0), 1..12),
    ) {
        let sizes: Vec<(f64, f64, u32, f64)> = sizes
            .into_iter()
            .map(|(used, extra, cores, cpu)| (used, used + f64::from(extra), cores, cpu))
            .collect();
        // even, and below the thresholds (a cluster at a threshold may still gain by moving)
        let mem: f64 = sizes.iter().map(|s| s.1).sum();
        let cpu: f64 = sizes.iter().map(|s| s.3 * f64::from(s.2)).sum::<f64>() / 32.0;
        prop_assume!(mem <= 0.6 * 256.0 && cpu <= 50.0);
        let set = plan(&cluster(&even_cluster(nodes, &sizes)), None);
        prop_assert!(set.recommendations.is_empty(), "{:?}", moves(&set));
        prop_assert!(set.summary.convergence_message.is_some());
    }

    #[test]
    fn limits_cut_the_plan_to_a_prefix(nodes in 2usize..10, guests in 10usize..120, seed: u64, max_moves in 1usize..6, max_gib in 1.0f64..80.0) {
        let c = cluster_view(nodes, guests, seed).validate().expect("valid");
        let full = plan(&c, None);
        let mut limited = c.clone();
        limited.config = limited
            .config
            .with_text_override("max_moves", &max_moves.to_string())
            .and_then(|cfg| cfg.with_text_override("max_gib", &max_gib.to_string()))
            .expect("valid limits");
        let cut = plan(&limited, None);
        prop_assert!(cut.recommendations.len() <= max_moves);
        let gib: f64 = cut.recommendations.iter().map(|r| r.mem_gb).sum();
        prop_assert!(gib <= max_gib + 1e-9, "{} GiB over {}", gib, max_gib);
        let n = cut.recommendations.len();
        prop_assert_eq!(moves(&cut), moves(&full)[..n].to_vec());
        let deferred: Vec<(u32, &str)> = cut.deferred.iter().map(|d| (d.vmid, d.target_node.as_str())).collect();
        prop_assert_eq!(deferred, moves(&full)[n..].to_vec());
        prop_assert!(cut.deferred.iter().all(|d| d.reason.starts_with("max_")));
        check_every_state(&limited, &cut)?;
        // the prediction is of the cut plan
        let after: BTreeMap<&str, u32> = cut.prediction.nodes.iter().map(|p| (p.node.as_str(), p.after.running_guests)).collect();
        let mut count: BTreeMap<&str, u32> = BTreeMap::new();
        for g in c.guests.iter().filter(|g| g.is_running() && c.nodes[g.node].is_online()) {
            let node = cut
                .recommendations
                .iter()
                .find(|r| r.vmid == g.vmid)
                .map_or(c.nodes[g.node].name.as_str(), |r| r.target_node.as_str());
            *count.entry(node).or_default() += 1;
        }
        for (node, n) in after {
            prop_assert_eq!(count.get(node).copied().unwrap_or(0), n, "{}", node);
        }
    }
}

/// A view whose node figures are exactly the sum of their guests (no history, no IOWait).
fn flat_view(guests: &[(u32, usize, f64, u32, f64, f64)], nodes: &[(u32, f64)]) -> Value {
    let node_views: Vec<Value> = nodes
        .iter()
        .enumerate()
        .map(|(i, &(cores, mem))| {
            let on = guests.iter().filter(|g| g.1 == i);
            let cpu: f64 = on.clone().map(|g| g.2 * f64::from(g.3)).sum::<f64>() / f64::from(cores);
            let used: f64 = on.map(|g| g.4).sum::<f64>() / mem * 100.0;
            node(&format!("n{i}"), cores, mem, cpu, used, 0.0)
        })
        .collect();
    let guest_views: Vec<Value> = guests
        .iter()
        .map(|&(vmid, n, cpu, cores, used, max)| {
            guest(vmid, &format!("n{n}"), cpu, cores, used, max)
        })
        .collect();
    view_json(node_views, guest_views)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// What the plan predicts is a state it would not change: planning the predicted cluster,
    /// with the guests it moved held where it put them (a plan moves a guest at most once),
    /// gives no move.
    #[test]
    fn the_planned_cluster_needs_no_further_move(
        nodes in proptest::collection::vec((prop_oneof![Just(16u32), Just(32)], prop_oneof![Just(128.0f64), Just(256.0)]), 2..6),
        guests in proptest::collection::vec((0usize..6, 0.0f64..90.0, 1u32..8, 1.0f64..24.0, 0.0f64..8.0), 1..40),
    ) {
        let guests: Vec<(u32, usize, f64, u32, f64, f64)> = guests
            .into_iter()
            .enumerate()
            .map(|(i, (n, cpu, cores, used, extra))| (100 + i as u32, n % nodes.len(), cpu, cores, used, used + extra))
            .collect();
        let before = cluster(&flat_view(&guests, &nodes));
        let set = plan(&before, None);
        let target: BTreeMap<u32, usize> = set
            .recommendations
            .iter()
            .map(|r| (r.vmid, before.node_index(&r.target_node).expect("node")))
            .collect();
        let moved: Vec<(u32, usize, f64, u32, f64, f64)> = guests
            .iter()
            .map(|g| (g.0, target.get(&g.0).copied().unwrap_or(g.1), g.2, g.3, g.4, g.5))
            .collect();
        // the guests the plan moved are pinned where it put them (it moves a guest once)
        let mut after = flat_view(&moved, &nodes);
        if let Some(list) = after["guests"].as_array_mut() {
            for g in list.iter_mut() {
                if g["vmid"].as_u64().is_some_and(|v| target.contains_key(&(v as u32))) {
                    g["tags"] = json!(["ignore"]);
                }
            }
        }
        let again = plan(&cluster(&after), None);
        prop_assert!(again.recommendations.is_empty(), "after {:?}: {:?}", moves(&set), moves(&again));
    }
}

// --- the seed's scenarios (docs/engine.md) with the cluster planner

/// Seed scenario 1: a node at 90 % committed and 60 % used is refused; the guest goes to the
/// roomy node.
#[test]
fn a_node_without_committed_room_is_never_a_target() {
    let v = seed_full_node_view(vec![guest(998, "src", 1.0, 1, 0.5, 1.0)]);
    let set = plan(&cluster(&v), None);
    assert_eq!(moves(&set), [(999, "roomy")]);
    let r = &set.recommendations[0];
    assert_eq!(r.term, MoveTerm::CpuBalance);
    let gain = r.gain.expect("gain");
    assert!(gain.cpu_balance > gain.memory_balance && gain.total > gain.cost);
}

/// Seed scenario 4: sustained IOWait moves the guests with the most disk I/O, only as many as
/// the reduction needs; a spike moves nothing; no guest without disk I/O is picked.
#[test]
fn iowait_relief_moves_only_what_the_reduction_needs() {
    let v = seed_iowait_view();
    let set = plan(&cluster(&v), None);
    assert_eq!(set.summary.iowait_stressed_nodes, ["hot-io"]);
    // the predicted health is that of the simulated cluster: hot-io's IOWait halves, its health
    // term (0.25 × blended IOWait) with it, and the other nodes' load is the same in sum
    assert!(
        set.summary.predicted_health > set.summary.cluster_health,
        "{} -> {}",
        set.summary.cluster_health,
        set.summary.predicted_health
    );
    let relief: Vec<u32> = set
        .recommendations
        .iter()
        .filter(|r| r.term == MoveTerm::IowaitRelief)
        .map(|r| r.vmid)
        .collect();
    // 150 of the node's 300 MiB/s: half of its 35 points of IOWait leave with guest 11, more
    // than the 10 points (35 − (30 − 5)) the trigger needs
    assert_eq!(relief, [11]);
    let first = &set.recommendations[0];
    assert_eq!(first.vmid, 11);
    assert!((first.source_score - first.score_details.source.score - 30.0).abs() < 1e-9);
    let hot = set
        .prediction
        .nodes
        .iter()
        .find(|n| n.node == "hot-io")
        .expect("hot-io");
    assert!(
        (hot.after.iowait - 17.5).abs() < 0.01,
        "{}",
        hot.after.iowait
    );
    // nothing moves onto either node with IOWait above the threshold, and the spike is no
    // trigger
    assert!(
        set.recommendations
            .iter()
            .all(|r| r.target_node.starts_with("calm"))
    );
    assert!(
        set.recommendations
            .iter()
            .all(|r| r.source_node != "spike-io" || r.term != MoveTerm::IowaitRelief)
    );
}

#[test]
fn anti_affinity_violations_are_repaired_or_reported() {
    let db = |g: Value| with(g, "tags", json!(["plb_anti_affinity_db"]));
    let v = view_json(
        vec![
            node("a", 16, 128.0, 20.0, 30.0, 1.0),
            node("b", 16, 128.0, 20.0, 30.0, 1.0),
            node("c", 16, 128.0, 20.0, 30.0, 1.0),
        ],
        vec![
            db(guest(1, "a", 5.0, 2, 4.0, 8.0)),
            db(guest(2, "a", 5.0, 2, 4.0, 8.0)),
            db(guest(3, "a", 5.0, 2, 4.0, 8.0)),
            db(guest(4, "a", 5.0, 2, 4.0, 8.0)),
            guest(5, "b", 5.0, 2, 4.0, 8.0),
        ],
    );
    let set = plan(&cluster(&v), None);
    let repairs: Vec<_> = set
        .recommendations
        .iter()
        .filter(|r| r.term == MoveTerm::AntiAffinity)
        .collect();
    // two can leave (one to b, one to c); the fourth has nowhere to go
    assert_eq!(repairs.len(), 2);
    let targets: BTreeSet<&str> = repairs.iter().map(|r| r.target_node.as_str()).collect();
    assert_eq!(targets, BTreeSet::from(["b", "c"]));
    assert_eq!(set.unresolved.len(), 1);
    let u = &set.unresolved[0];
    assert_eq!((u.rule.as_str(), u.node.as_str()), ("anti_affinity", "a"));
    assert_eq!(u.group.as_deref(), Some("exclude_db"));
    assert!(u.detail.contains("anti-affinity conflict"), "{}", u.detail);
    assert!(
        repairs
            .iter()
            .all(|r| r.gain.is_some_and(|g| g.anti_affinity >= 200.0))
    );
}

/// A plan's predicted health is that of the planned cluster. Repairing anti-affinity onto the
/// only other node, whose IOWait spike gives it the higher score, moves load between two equal
/// nodes: the cluster's health stays about what it was (the seed's estimate from the move's score
/// improvement, negative here, would say it fell by about 10 points).
#[test]
fn the_predicted_health_is_the_planned_clusters() {
    let db = |g: Value| with(g, "tags", json!(["exclude_db"]));
    let v = view_json(
        vec![
            steady_history(node("a", 16, 128.0, 30.0, 40.0, 1.0), 1.0),
            steady_history(node("spiky", 16, 128.0, 30.0, 40.0, 35.0), 5.0),
        ],
        vec![
            db(guest(1, "a", 5.0, 2, 4.0, 4.0)),
            db(guest(2, "a", 5.0, 2, 4.0, 4.0)),
            guest(3, "a", 5.0, 2, 4.0, 4.0),
            guest(4, "spiky", 5.0, 2, 4.0, 4.0),
        ],
    );
    let set = plan(&cluster(&v), None);
    assert_eq!(moves(&set), [(1, "spiky")]);
    assert!(set.recommendations[0].score_improvement < 0.0);
    let s = &set.summary;
    assert!(
        (s.predicted_health - s.cluster_health).abs() < 0.1,
        "{} -> {}",
        s.cluster_health,
        s.predicted_health
    );
}

#[test]
fn an_affinity_group_moves_together_or_not_at_all() {
    let app = |g: Value| with(g, "tags", json!(["plb_affinity_app"]));
    let v = view_json(
        vec![
            node("hot", 16, 128.0, 90.0, 80.0, 1.0),
            node("cool", 16, 128.0, 10.0, 20.0, 1.0),
        ],
        vec![
            app(guest(1, "hot", 90.0, 8, 16.0, 16.0)),
            app(guest(2, "hot", 5.0, 1, 1.0, 2.0)),
            guest(3, "hot", 5.0, 1, 1.0, 2.0),
        ],
    );
    let set = plan(&cluster(&v), None);
    let app_moves: Vec<_> = set
        .recommendations
        .iter()
        .filter(|r| r.vmid <= 2)
        .map(|r| (r.vmid, r.target_node.as_str(), r.affinity_leader_vmid))
        .collect();
    assert_eq!(app_moves, [(1, "cool", None), (2, "cool", Some(1))]);
    assert_eq!(set.recommendations[0].affinity_companions, [2]);
    assert_eq!(set.execution_plan.parallel_groups[0], [1, 2]);

    // with one member ignored the group stays, and says why
    let v2 = view_json(
        vec![
            node("hot", 16, 128.0, 90.0, 80.0, 1.0),
            node("cool", 16, 128.0, 10.0, 20.0, 1.0),
        ],
        vec![
            app(guest(1, "hot", 90.0, 8, 16.0, 16.0)),
            with(
                guest(2, "hot", 5.0, 1, 1.0, 2.0),
                "tags",
                json!(["plb_affinity_app", "plb_ignore"]),
            ),
            guest(3, "hot", 5.0, 1, 1.0, 2.0),
        ],
    );
    let set = plan(&cluster(&v2), None);
    assert!(set.recommendations.iter().all(|r| r.vmid == 3));
    let why = set.skipped.iter().find(|s| s.vmid == 1).expect("1 skipped");
    assert_eq!(why.reason, SkipReason::HasIgnoreTag);
    assert!(
        why.detail.contains("moves with its affinity group"),
        "{}",
        why.detail
    );
}

#[test]
fn balancing_never_empties_a_node() {
    let v = view_json(
        vec![
            node("big", 32, 256.0, 10.0, 10.0, 1.0),
            node("small", 8, 32.0, 50.0, 75.0, 1.0),
        ],
        vec![
            guest(1, "big", 10.0, 2, 25.6, 32.0),
            guest(2, "small", 50.0, 8, 24.0, 24.0),
        ],
    );
    let set = plan(&cluster(&v), None);
    assert!(set.recommendations.is_empty(), "{:?}", moves(&set));
    let why = set.skipped.iter().find(|s| s.vmid == 2).expect("2 skipped");
    assert_eq!(why.reason, SkipReason::NoSuitableTarget);
    assert!(
        why.detail.contains("without running guests"),
        "{}",
        why.detail
    );
}

#[test]
fn limits_defer_the_rest_with_its_gain() {
    let v = view_json(
        vec![
            node("hot", 16, 128.0, 20.0, 90.0, 1.0),
            node("a", 16, 128.0, 10.0, 10.0, 1.0),
            node("b", 16, 128.0, 10.0, 10.0, 1.0),
        ],
        (1..=8)
            .map(|i| guest(i, "hot", 5.0, 2, 14.0, 14.0))
            .chain([
                guest(20, "a", 5.0, 2, 12.0, 12.0),
                guest(21, "b", 5.0, 2, 12.0, 12.0),
            ])
            .collect(),
    );
    let mut c = cluster(&v);
    let full = plan(&c, None);
    assert!(full.recommendations.len() >= 3, "{:?}", moves(&full));
    c.config = c
        .config
        .with_text_override("max_moves", "2")
        .expect("valid");
    let cut = plan(&c, None);
    assert_eq!(moves(&cut), moves(&full)[..2].to_vec());
    assert_eq!(cut.deferred.len(), full.recommendations.len() - 2);
    assert!(
        cut.deferred
            .iter()
            .all(|d| d.reason == "max_moves (2) reached" && d.gain > 0.0)
    );
    // the gRPC-style limit behaves the same
    let limited = plan(&cluster(&v), Some(2));
    assert_eq!(moves(&limited), moves(&cut));
}

#[test]
fn a_calm_cluster_gets_nothing_and_says_so() {
    let v = view_json(
        vec![
            node("a", 16, 128.0, 30.0, 40.0, 1.0),
            node("b", 16, 128.0, 33.0, 44.0, 1.0),
        ],
        vec![guest(1, "a", 5.0, 2, 2.0, 4.0)],
    );
    let set = plan(&cluster(&v), None);
    assert!(set.recommendations.is_empty());
    assert!(
        set.summary
            .convergence_message
            .as_deref()
            .is_some_and(|m| m.starts_with("cluster is balanced"))
    );
    assert_eq!(
        set.prediction.objective_before,
        set.prediction.objective_after
    );
}

// --- the public plan-quality scenarios

struct Judged {
    name: String,
    moves: usize,
    gib: f64,
    mem_spread: f64,
    cpu_spread: f64,
    mandatory_only: bool,
}

/// Plans one public scenario and checks every per-cluster target from the plan's own
/// predicted after-state; returns the figures the totals are judged on.
fn judge(name: &str, view: &ClusterView) -> Judged {
    let c = view.clone().validate().expect("valid scenario");
    let set = plan(&c, None);
    let stressed = stressed(&c);
    let p = &set.prediction;
    let mut placement: BTreeMap<u32, usize> = c.guests.iter().map(|g| (g.vmid, g.node)).collect();
    for r in &set.recommendations {
        placement.insert(r.vmid, c.node_index(&r.target_node).expect("node"));
    }
    let running = |g: &&proxbalance_engine::Guest| g.is_running();
    // rules
    let mut pairs = 0;
    let mut together: BTreeMap<(&str, usize), usize> = BTreeMap::new();
    for g in c.guests.iter().filter(running) {
        for grp in &g.tags.exclude {
            let n = together
                .entry((grp.as_str(), placement[&g.vmid]))
                .or_default();
            pairs += *n;
            *n += 1;
        }
    }
    assert_eq!(pairs, 0, "{name}: anti-affinity pairs left");
    assert!(set.unresolved.is_empty(), "{name}: {:?}", set.unresolved);
    let mut groups: BTreeMap<&str, (BTreeSet<usize>, BTreeSet<usize>)> = BTreeMap::new();
    for g in c.guests.iter().filter(running) {
        for grp in &g.tags.affinity {
            let e = groups.entry(grp.as_str()).or_default();
            e.0.insert(g.node);
            e.1.insert(placement[&g.vmid]);
        }
    }
    for (grp, (before, after)) in groups {
        assert!(
            before.len() > 1 || after.len() == 1,
            "{name}: affinity group {grp} split"
        );
    }
    // per node
    for n in &p.nodes {
        if n.maintenance {
            continue;
        }
        assert!(
            n.after.mem <= c.thresholds.mem,
            "{name}: {} memory {}",
            n.node,
            n.after.mem
        );
        assert!(
            n.after.cpu <= c.thresholds.cpu,
            "{name}: {} CPU {}",
            n.node,
            n.after.cpu
        );
        assert!(
            n.after.committed_pct <= 95.0 || n.before.committed_pct > 95.0,
            "{name}: {} newly committed {}",
            n.node,
            n.after.committed_pct
        );
        assert!(
            n.after.running_guests > 0 || n.before.running_guests == 0,
            "{name}: {} emptied",
            n.node
        );
        let i = c.node_index(&n.node).expect("node");
        if stressed[i] {
            assert!(
                n.after.iowait < c.thresholds.iowait,
                "{name}: {} still under IOWait stress ({})",
                n.node,
                n.after.iowait
            );
            assert!(
                set.recommendations
                    .iter()
                    .any(|r| r.source_node == n.node && r.term == MoveTerm::IowaitRelief),
                "{name}: {} not relieved",
                n.node
            );
        }
    }
    // moves
    let mut gib = 0.0;
    for r in &set.recommendations {
        let g = c.guest(r.vmid).expect("guest");
        assert!(!g.tags.ignore, "{name}: ignored guest {} moved", g.vmid);
        let to = c.node_index(&r.target_node).expect("node");
        assert!(
            !stressed[to],
            "{name}: {} moved onto stressed {}",
            g.vmid, r.target_node
        );
        if g.is_running() {
            gib += g.mem_max_gb;
        }
    }
    Judged {
        name: name.to_owned(),
        moves: set.recommendations.len(),
        gib,
        mem_spread: p.imbalance_after.mem_spread,
        cpu_spread: p.imbalance_after.cpu_spread,
        mandatory_only: set
            .recommendations
            .iter()
            .all(|r| MANDATORY.contains(&r.term)),
    }
}

/// The targets of the public benchmark (issue 10), from the plans' own predictions.
#[test]
fn the_public_scenarios_meet_their_targets() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/quality");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/quality")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 10);
    let judged: Vec<Judged> = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).expect("readable");
            let view: ClusterView = serde_json::from_str(&text).expect("a cluster view");
            let name = f.file_stem().expect("name").to_string_lossy().into_owned();
            judge(&name, &view)
        })
        .collect();
    let n = judged.len() as f64;
    let moves: usize = judged.iter().map(|j| j.moves).sum();
    let gib: f64 = judged.iter().map(|j| j.gib).sum();
    let mem = judged.iter().map(|j| j.mem_spread).sum::<f64>() / n;
    let cpu = judged.iter().map(|j| j.cpu_spread).sum::<f64>() / n;
    assert!(mem <= 10.0, "mean memory spread {mem}");
    assert!(cpu <= 25.0, "mean CPU spread {cpu}");
    assert!(moves <= 120, "{moves} moves");
    assert!(gib <= 2000.0, "{gib} GiB moved");
    let balanced = judged
        .iter()
        .find(|j| j.name.starts_with("p07"))
        .expect("p07");
    assert!(
        balanced.mandatory_only && balanced.moves >= 1,
        "p07 got balancing moves"
    );
}
