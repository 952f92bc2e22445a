//! `plan` on generated clusters, 8 nodes / 200 guests, 64 / 4,000 and 256 / 20,000, with the
//! cluster planner (the default) and the reference generator.
//!
//! `cargo bench -p proxbalance-engine --bench plan`; the figures go to BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use proxbalance_engine::synthetic::cluster_view;
use proxbalance_engine::{Cluster, PlannerKind, migration_options, plan};

fn sizes(c: &mut Criterion) {
    for planner in [PlannerKind::Cluster, PlannerKind::Reference] {
        let mut group = c.benchmark_group(format!("plan/{}", planner.as_str()));
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(5));
        for (nodes, guests) in [(8usize, 200usize), (64, 4_000), (256, 20_000)] {
            let mut cluster: Cluster = cluster_view(nodes, guests, 42)
                .validate()
                .expect("valid synthetic cluster");
            cluster.config.planner = planner;
            let set = plan(&cluster, None);
            eprintln!(
                "{} {nodes} nodes / {guests} guests: {} moves, {} unresolved",
                planner.as_str(),
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
