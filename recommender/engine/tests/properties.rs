//! Properties of generated clusters for both planners: permutation invariance, and, for the
//! reference generator, hard gates held across the whole plan (arrivals and departures
//! counted), no guest twice, the improvement gate; structured fuzzing of the input. The cluster
//! planner's own properties are in `planner.rs`.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proxbalance_engine::synthetic::{Rng, cluster_view};
use proxbalance_engine::{CapacityBasis, Cluster, ClusterView, GuestTags, PlannerKind, plan};

fn shuffled(mut view: ClusterView, seed: u64) -> ClusterView {
    let mut rng = Rng::new(seed);
    for i in (1..view.nodes.len()).rev() {
        let j = rng.below(i + 1);
        view.nodes.swap(i, j);
    }
    for i in (1..view.guests.len()).rev() {
        let j = rng.below(i + 1);
        view.guests.swap(i, j);
    }
    view
}

fn validated(view: ClusterView) -> Cluster {
    view.validate()
        .unwrap_or_else(|e| panic!("generated view refused: {e}"))
}

/// The cluster, planned by the reference generator.
fn reference(mut c: Cluster) -> Cluster {
    c.config.planner = PlannerKind::Reference;
    c
}

/// Replays a reference plan against the view and checks every hard gate on the final
/// placement.
fn check_gates(c: &Cluster) -> Result<(), TestCaseError> {
    assert_eq!(c.config.planner, PlannerKind::Reference);
    let set = plan(c, None);
    let mut seen = BTreeSet::new();
    // committed memory per node after every move (running guests leave, every arrival counts)
    let mut committed: Vec<f64> = c.nodes.iter().map(|n| n.committed_mem_gb).collect();
    // memory in use per node, GiB, for the `used` basis: departures free what the guest uses
    let mut used: Vec<f64> = c
        .nodes
        .iter()
        .map(|n| n.current.mem / 100.0 * n.total_mem_gb)
        .collect();
    let mut placement: BTreeMap<u32, usize> = c.guests.iter().map(|g| (g.vmid, g.node)).collect();
    for r in &set.recommendations {
        prop_assert!(seen.insert(r.vmid), "guest {} recommended twice", r.vmid);
        let g = c.guest(r.vmid).expect("recommended guest exists");
        let src = g.node;
        prop_assert_eq!(&c.nodes[src].name, &r.source_node);
        let ti = c.node_index(&r.target_node).expect("target exists");
        let t = &c.nodes[ti];
        prop_assert!(ti != src, "guest {} moved onto its own node", r.vmid);
        prop_assert!(
            t.is_online() && !t.maintenance,
            "target {} not eligible",
            t.name
        );
        prop_assert!(
            c.nodes[src].is_online(),
            "source {} not online",
            c.nodes[src].name
        );
        for s in &g.storages {
            prop_assert!(
                t.storage.iter().any(|x| &x.id == s && x.active),
                "guest {} needs storage {} that {} lacks",
                r.vmid,
                s,
                t.name
            );
        }
        if r.affinity_leader_vmid.is_none() {
            prop_assert!(
                r.score_improvement >= c.config.min_score_improvement,
                "guest {} improves only {}",
                r.vmid,
                r.score_improvement
            );
        }
        if g.is_running() {
            committed[src] -= g.mem_max_gb;
        }
        committed[ti] += g.mem_max_gb;
        used[src] = (used[src] - g.mem_used_gb).max(0.0);
        used[ti] += g.mem_max_gb;
        placement.insert(r.vmid, ti);
    }
    // every arrival passed the gate with all earlier moves counted, and later departures only
    // free memory, so the final placement must fit too
    let basis = match c.config.capacity_basis {
        CapacityBasis::Committed => &committed,
        CapacityBasis::Used => &used,
    };
    for r in &set.recommendations {
        let ti = c.node_index(&r.target_node).expect("target");
        let cap = (1.0 - c.config.capacity_headroom) * c.nodes[ti].total_mem_gb;
        prop_assert!(
            basis[ti] <= cap + 1e-6,
            "{} over capacity: {} > {}",
            r.target_node,
            basis[ti],
            cap
        );
    }
    // anti-affinity: a moved guest is the only member of each of its exclude groups on its target
    for r in &set.recommendations {
        let g = c.guest(r.vmid).expect("guest");
        let ti = placement[&r.vmid];
        for other in c
            .guests
            .iter()
            .filter(|o| o.vmid != g.vmid && placement[&o.vmid] == ti)
        {
            let shared: Vec<_> = g.tags.exclude.intersection(&other.tags.exclude).collect();
            prop_assert!(
                shared.is_empty(),
                "{} and {} share {:?} on {}",
                g.vmid,
                other.vmid,
                shared,
                r.target_node
            );
        }
    }
    // every recommended or skipped guest is accounted once
    for s in &set.skipped {
        prop_assert!(
            !seen.contains(&s.vmid),
            "guest {} both moved and skipped",
            s.vmid
        );
        prop_assert!(seen.insert(s.vmid), "guest {} skipped twice", s.vmid);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn output_does_not_depend_on_input_order(nodes in 2usize..9, guests in 0usize..60, seed: u64, perm: u64, reference_planner: bool) {
        let view = cluster_view(nodes, guests, seed);
        let prepare = |c: Cluster| if reference_planner { reference(c) } else { c };
        let a = plan(&prepare(validated(view.clone())), None);
        let b = plan(&prepare(validated(shuffled(view, perm))), None);
        prop_assert_eq!(serde_json::to_string(&a).expect("json"), serde_json::to_string(&b).expect("json"));
    }

    #[test]
    fn plans_never_break_a_hard_gate(nodes in 2usize..10, guests in 0usize..80, seed: u64) {
        check_gates(&reference(validated(cluster_view(nodes, guests, seed))))?;
    }

    #[test]
    fn gates_hold_under_other_configurations(
        nodes in 2usize..8,
        guests in 0usize..60,
        seed: u64,
        msi in 0.0f64..40.0,
        used_basis: bool,
        aggressive: bool,
    ) {
        let mut c = reference(validated(cluster_view(nodes, guests, seed)));
        let mut o = proxbalance_engine::Overrides::default();
        if aggressive {
            o.preset = Some(proxbalance_engine::Preset::Aggressive);
        }
        o.penalties.insert("min_score_improvement".into(), msi.into());
        o.penalties.insert("planner".into(), "reference".into());
        if used_basis {
            o.penalties.insert("capacity_basis".into(), "used".into());
        }
        c.apply(&o).expect("valid overrides");
        check_gates(&c)?;
    }

    #[test]
    fn tag_parsing_never_panics(raw in proptest::collection::vec(".{0,40}", 0..6)) {
        let _ = GuestTags::parse(&raw);
    }

    #[test]
    fn arbitrary_json_never_panics(text in ".{0,300}") {
        let _ = Cluster::from_json(&text);
    }
}

/// A value that is wrong in some way for most fields of a cluster view.
fn hostile_value(rng: &mut Rng) -> serde_json::Value {
    use serde_json::json;
    let choices = [
        json!(null),
        json!(-1),
        json!(-1e300),
        json!(1e300),
        json!(0),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(""),
        json!("x".repeat(1000)),
        json!(true),
        json!([]),
        json!({}),
        json!(0.5),
        json!("online"),
        json!("running"),
    ];
    choices[rng.below(choices.len())].clone()
}

/// Replaces or removes one value somewhere in a JSON document.
fn mutate(v: &mut serde_json::Value, rng: &mut Rng) {
    use serde_json::Value;
    let n = match v {
        Value::Object(m) => m.len(),
        Value::Array(a) => a.len(),
        _ => 0,
    };
    if n == 0 {
        *v = hostile_value(rng);
        return;
    }
    let i = rng.below(n);
    if rng.chance(0.75) {
        let child = match v {
            Value::Object(m) => m.values_mut().nth(i),
            Value::Array(a) => a.get_mut(i),
            _ => None,
        };
        if let Some(child) = child {
            mutate(child, rng);
            return;
        }
    }
    match v {
        Value::Object(m) => {
            if let Some(k) = m.keys().nth(i).cloned() {
                m.remove(&k);
            }
        }
        Value::Array(a) => a[i] = hostile_value(rng),
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Structured fuzzing of the cluster-view input: valid views with a few values replaced or
    /// removed are either refused with an error or planned, never a panic.
    #[test]
    fn mutated_views_are_refused_or_planned(seed: u64, mutations in 1usize..6) {
        let view = cluster_view(4, 24, seed);
        let mut doc = serde_json::to_value(&view).expect("json");
        let mut rng = Rng::new(seed ^ 0x5eed);
        for _ in 0..mutations {
            mutate(&mut doc, &mut rng);
        }
        if let Ok(cluster) = Cluster::from_json(&doc.to_string()) {
            let set = plan(&cluster, None);
            prop_assert!(set.recommendations.len() <= cluster.guests.len());
            if let Some(g) = cluster.guests.first() {
                prop_assert!(proxbalance_engine::migration_options(&cluster, g.vmid).is_ok());
            }
        }
    }
}

#[test]
fn reference_limit_truncates_after_sorting() {
    let c = reference(validated(cluster_view(16, 300, 7)));
    let full = plan(&c, None);
    assert!(
        full.recommendations.len() > 3,
        "the generated cluster should need several moves"
    );
    let top = plan(&c, Some(3));
    assert_eq!(
        top.recommendations,
        full.recommendations[..3]
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.has_conflict = top
                    .recommendations
                    .iter()
                    .find(|t| t.vmid == r.vmid)
                    .is_some_and(|t| t.has_conflict);
                r
            })
            .collect::<Vec<_>>()
    );
    assert_eq!(top.execution_plan.total_steps, 3);
}

mod windows {
    use proptest::prelude::*;
    use proxbalance_engine::window::{NodeWindow, Sample};

    const T0: i64 = 1_764_230_400_000;

    fn sample() -> impl Strategy<Value = Sample> {
        (
            0i64..(10 * 24 * 3600 * 1000),
            0f64..100.0,
            0f64..100.0,
            0f64..100.0,
            0f64..64.0,
        )
            .prop_map(|(dt, cpu, mem, iowait, load)| Sample {
                t_ms: T0 + dt,
                cpu,
                mem,
                iowait,
                load,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Memory stays bounded whatever is fed, and statistics stay within the samples' range.
        #[test]
        fn bounded_and_within_range(samples in proptest::collection::vec(sample(), 0..2000),
                                    seed in proptest::collection::vec(sample(), 0..300)) {
            let mut w = NodeWindow::new();
            w.seed(&seed, &seed);
            for s in &samples {
                w.record(*s);
            }
            prop_assert!(w.memory_bytes() <= 64 * 1024);
            prop_assert!(w.raw().count() <= proxbalance_engine::window::RAW_CAPACITY);
            let now = samples.iter().chain(&seed).map(|s| s.t_ms).max().unwrap_or(T0);
            for stats in [w.day_stats(now), w.week_stats(now)].into_iter().flatten() {
                for v in [stats.avg_cpu, stats.max_cpu, stats.avg_mem, stats.max_mem, stats.avg_iowait] {
                    prop_assert!((0.0..=100.0001).contains(&v), "{v}");
                }
                prop_assert!(stats.avg_cpu <= stats.max_cpu + 1e-3);
            }
            let hourly = w.hourly(now);
            prop_assert!(hourly.len() <= 168);
            prop_assert!(hourly.windows(2).all(|p| p[0].t < p[1].t));
        }

        /// History and live samples give the same windows in either order.
        #[test]
        fn seeding_order_does_not_matter(samples in proptest::collection::vec(sample(), 0..200),
                                         day in proptest::collection::vec(sample(), 0..200),
                                         week in proptest::collection::vec(sample(), 0..100)) {
            let mut a = NodeWindow::new();
            a.seed(&day, &week);
            for s in &samples { a.record(*s); }
            let mut b = NodeWindow::new();
            for s in &samples { b.record(*s); }
            b.seed(&day, &week);
            let now = T0 + 10 * 24 * 3600 * 1000;
            prop_assert_eq!(a.day_stats(now), b.day_stats(now));
            prop_assert_eq!(a.week_stats(now), b.week_stats(now));
            prop_assert_eq!(a.hourly(now), b.hourly(now));
        }

        /// A constant series averages to itself.
        #[test]
        fn constant_series(v in 0f64..100.0, n in 1usize..500) {
            let mut w = NodeWindow::new();
            for i in 0..n {
                w.record(Sample { t_ms: T0 + i as i64 * 10_000, cpu: v, mem: v, iowait: v, load: v });
            }
            let now = T0 + n as i64 * 10_000;
            let d = w.day_stats(now).unwrap();
            prop_assert!((d.avg_cpu - v).abs() < 1e-3 * v.max(1.0));
            prop_assert!((d.max_mem - v).abs() < 1e-4 * v.max(1.0));
            let h = w.hourly(now);
            prop_assert!(h.iter().all(|x| (x.iowait - v).abs() < 1e-3 * v.max(1.0)));
        }
    }
}
