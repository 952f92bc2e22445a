//! The entry point: one cluster view in, one recommendation set out, by the configured planner.

use crate::config::PlannerKind;
use crate::set::RecommendationSet;
use crate::view::Cluster;

/// Computes the recommendation set for a cluster with the planner its configuration names
/// (`planner`: `cluster`, the default, or `reference`). `limit` caps the moves: the cluster
/// planner defers the rest, the reference generator truncates its sorted list.
pub fn plan(cluster: &Cluster, limit: Option<usize>) -> RecommendationSet {
    match cluster.config.planner {
        PlannerKind::Cluster => crate::planner::plan(cluster, limit),
        PlannerKind::Reference => crate::reference::generate(cluster, limit),
    }
}
