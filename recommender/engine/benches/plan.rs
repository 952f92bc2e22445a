//! `plan` on generated clusters, 8 nodes / 200 guests, 64 / 4,000 and 256 / 20,000, with the
//! cluster planner (the default), the reference generator, and the cluster planner on the same
//! clusters with placement rules.
//!
//! `cargo bench -p proxbalance-engine --bench plan`; the figures go to BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use proxbalance_engine::synthetic::{cluster_view, cluster_view_with_rules};
use proxbalance_engine::{Cluster, ClusterView, PlannerKind, migration_options, plan};

/// A generated view: `(nodes, guests, seed)` → view.
type Generator = fn(usize, usize, u64) -> ClusterView;

fn sizes(c: &mut Criterion) {
    let variants: [(&str, PlannerKind, Generator); 3] = [
        ("cluster", PlannerKind::Cluster, cluster_view),
        ("reference", PlannerKind::Reference, cluster_view),
        // pools, HA rules, pins and reserves on the same clusters
        (
            "cluster+rules",
            PlannerKind::Cluster,
            cluster_view_with_rules,
        ),
    ];
    for (label, planner, generate) in variants {
        let mut group = c.benchmark_group(format!("plan/{label}"));
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(5));
        for (nodes, guests) in [(8usize, 200usize), (64, 4_000), (256, 20_000)] {
            let mut cluster: Cluster = generate(nodes, guests, 42)
                .validate()
                .expect("valid synthetic cluster");
            cluster.config.planner = planner;
            let set = plan(&cluster, None);
            eprintln!(
                "{label} {nodes} nodes / {guests} guests: {} moves, {} unresolved",
                set.recommendations.len(),
                set.unresolved.len()
            );
            group.bench_with_input(
                BenchmarkId::from_parameter(format!("{nodes}x{guests}")),
                &cluster,
                |b, c| b.iter(|| plan(black_box(c), None)),
            );
        }
        group.finish();
    }

    let cluster = cluster_view(64, 4_000, 42)
        .validate()
        .expect("valid synthetic cluster");
    let vmid = cluster.guests[0].vmid;
    c.bench_function("options/64x4000", |b| {
        b.iter(|| migration_options(black_box(&cluster), vmid))
    });
    c.bench_function("validate/64x4000", |b| {
        let view = cluster_view(64, 4_000, 42);
        b.iter(|| black_box(view.clone()).validate())
    });
}

criterion_group!(benches, sizes);
criterion_main!(benches);
