//! The recommender's in-memory state, free of I/O: messages in, cluster views, cached
//! recommendation sets and overload transitions out.
//!
//! - [`limits`], [`validate`]: what a message must respect, and the refusals.
//! - [`ingest`]: applying messages and completing a cluster's cycles ([`State::ingest`]).
//! - [`overload`]: evaluating a completed cycle's overload ([`State::evaluate_overload`]).
//! - [`view`]: the engine's view of a cluster ([`State::view`]).
//! - [`cache`]: the cached set of each cluster ([`State::store_set`], [`State::cached`]).
//! - [`sweep`]: what the wall clock does: quiet nodes' overloads cleared, old nodes evicted.
//! - [`answers`]: summaries and cluster states for gRPC.
//! - [`dashboard`]: the overview, nodes and guests of the web dashboard.
//! - [`event_ids`]: the `Nats-Msg-Id` of the published events.
//!
//! The caller applies a message; when it completes a cycle, it evaluates overload and
//! recomputes (the view, the engine, `store_set`).

pub mod answers;
pub mod cache;
pub mod dashboard;
pub mod event_ids;
pub mod ingest;
pub mod limits;
pub mod overload;
pub mod sweep;
#[cfg(test)]
pub(crate) mod test_support;
pub mod validate;
pub mod view;

use std::collections::{BTreeMap, HashMap};

use proxbalance_engine::window::NodeWindow;
use proxbalance_engine::{PenaltyConfig, Thresholds};
use proxbalance_proto::subjects::Subjects;
use proxbalance_proto::v1 as pb;

use crate::config::OverloadConfig;
use crate::overload::NodeOverload;
use ingest::AwaitingHistories;

pub use cache::{Cached, Encoded};
pub use event_ids::{overload_event_id, recommendations_event_id};
pub use ingest::Ingested;
pub use validate::{Problem, Rejection, validate_snapshot};

/// Settings of the state.
#[derive(Debug, Clone)]
pub struct StateSettings {
    /// Subjects of the deployment.
    pub subjects: Subjects,
    /// A node whose last snapshot is older than this is stale, ms.
    pub staleness_ms: i64,
    /// Overload detection.
    pub overload: OverloadConfig,
    /// The engine configuration of every view.
    pub config: PenaltyConfig,
    /// The thresholds of every view (and of overload detection).
    pub thresholds: Thresholds,
    /// A message observed later than the wall clock plus this is refused, ms (a collector
    /// whose clock is ahead must not drag its cluster's clock into the future).
    pub max_clock_skew_ms: i64,
    /// A node without a snapshot for this long, and then a cluster without nodes, is evicted
    /// ([`State::sweep`]); an older history is not applied, ms.
    pub retention_ms: i64,
    /// Pool rules and node reserves of the configuration ([`crate::placement`]).
    pub placement: crate::placement::Placement,
}

impl Default for StateSettings {
    /// The defaults of the service's configuration.
    fn default() -> Self {
        StateSettings {
            subjects: Subjects::default(),
            staleness_ms: 120_000,
            overload: OverloadConfig::default(),
            config: PenaltyConfig::default(),
            thresholds: Thresholds::default(),
            max_clock_skew_ms: 30_000,
            retention_ms: 86_400_000,
            placement: crate::placement::Placement::default(),
        }
    }
}

/// When a message is applied, unix ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// The recommender's wall clock: a message observed after it plus
    /// [`StateSettings::max_clock_skew_ms`] is refused.
    pub wall_ms: i64,
    /// When NATS stored the message (its JetStream timestamp): the sender's clock skew is its
    /// observation time minus this, so a message replayed at start measures the skew it had
    /// when it was published.
    pub stored_ms: i64,
}

impl Arrival {
    /// A message stored and applied at `ms`.
    pub fn at(ms: i64) -> Self {
        Arrival {
            wall_ms: ms,
            stored_ms: ms,
        }
    }
}

#[derive(Debug, Default)]
struct NodeState {
    latest: Option<pb::NodeSnapshot>,
    window: NodeWindow,
    overload: NodeOverload,
    /// Observation time of the snapshot overload was last evaluated on.
    evaluated_at_ms: Option<i64>,
    /// Collection time of the newest history applied.
    history_at_ms: Option<i64>,
    /// When the node turned stale between its previous snapshot and `latest` (the previous
    /// one's time plus the staleness), until overload evaluation has cleared what was raised.
    gap_at_ms: Option<i64>,
    /// Committed memory hour by hour over the last day (for the dashboard).
    committed: dashboard::CommittedHours,
    /// Whether `latest` belongs to the cluster's last completed cycle or a later one. A node
    /// whose snapshot of the completing cycle was refused or lost is neither source nor target
    /// until it reports again (its previous snapshot may not be stale yet, but it is not
    /// this cycle's).
    current: bool,
}

#[derive(Debug, Default)]
struct ClusterState {
    nodes: BTreeMap<String, NodeState>,
    status: Option<pb::ClusterStatus>,
    completed_cycle: Option<u64>,
    /// Set while the last status' cycle waits for its histories.
    awaiting: Option<AwaitingHistories>,
    cached: Option<std::sync::Arc<Cached>>,
    /// vmid → the node whose latest snapshot lists it (the last one applied, when several do),
    /// so the check that a guest is on one node per cycle does not scan every node.
    claims: HashMap<u32, String>,
    /// The collector's clock minus NATS' at the last snapshot or status (accepted or refused
    /// for being ahead), ms.
    clock_skew_ms: Option<i64>,
    /// The placement rules the cached set was planned with (for `GetClusterState`).
    rules: Vec<pb::PlacementRule>,
}

impl ClusterState {
    /// The newest observation of the cluster, unix ms.
    fn data_now_ms(&self) -> Option<i64> {
        self.nodes
            .values()
            .filter_map(|n| n.latest.as_ref().map(|s| s.observed_at_unix_ms))
            .max()
    }

    /// Records that `cycle` completed: the nodes whose latest snapshot is of another cycle
    /// are no longer current.
    fn complete(&mut self, cycle: u64) {
        self.completed_cycle = Some(cycle);
        for n in self.nodes.values_mut() {
            n.current = n.latest.as_ref().is_some_and(|s| s.cycle == cycle);
        }
    }
}

/// Everything the recommender knows. See the module documentation.
#[derive(Debug)]
pub struct State {
    settings: StateSettings,
    clusters: BTreeMap<String, ClusterState>,
    /// Snapshots applied since start (what the fault tests compare with what was published).
    snapshots_applied: u64,
}

impl State {
    /// An empty state.
    pub fn new(settings: StateSettings) -> Self {
        State {
            settings,
            clusters: BTreeMap::new(),
            snapshots_applied: 0,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &StateSettings {
        &self.settings
    }

    /// Snapshots applied since the state was created (refused ones excluded).
    pub fn snapshots_applied(&self) -> u64 {
        self.snapshots_applied
    }

    fn is_stale(&self, latest_ms: i64, reference_ms: i64) -> bool {
        reference_ms - latest_ms > self.settings.staleness_ms
    }

    /// The newest observation of `cluster` (the data's own clock), unix ms.
    pub fn data_time_ms(&self, cluster: &str) -> Option<i64> {
        self.clusters.get(cluster)?.data_now_ms()
    }

    /// The clock skew of every cluster's collector (see [`ClusterState`]), ms.
    pub fn clock_skews(&self) -> Vec<(String, i64)> {
        self.clusters
            .iter()
            .filter_map(|(name, c)| Some((name.clone(), c.clock_skew_ms?)))
            .collect()
    }

    /// Whether the cluster's Proxmox HA rules (or groups) have been read: until then its HA
    /// guests are not planned, whatever `ha_guests` says.
    pub fn ha_rules_known(&self, cluster: &str) -> bool {
        self.clusters
            .get(cluster)
            .is_some_and(|c| crate::placement::ha_rules_known(c.status.as_ref()))
    }

    /// Whether the cluster is known (some message named it).
    pub fn knows(&self, cluster: &str) -> bool {
        self.clusters.contains_key(cluster)
    }

    /// Names of the clusters with at least one snapshot.
    pub fn cluster_names(&self) -> Vec<String> {
        self.clusters
            .iter()
            .filter(|(_, c)| c.data_now_ms().is_some())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Whether some cluster has a cached set and a node whose snapshot is fresh by the wall clock.
    pub fn has_fresh_data(&self, wall_ms: i64) -> bool {
        self.clusters.values().any(|c| {
            c.cached.is_some()
                && c.nodes.values().any(|n| {
                    n.latest
                        .as_ref()
                        .is_some_and(|s| !self.is_stale(s.observed_at_unix_ms, wall_ms))
                })
        })
    }

    /// Bytes of window state per tracked node (the memory budget's figure, guests excluded).
    pub fn window_bytes_per_node(&self) -> usize {
        NodeWindow::new().memory_bytes()
    }
}
