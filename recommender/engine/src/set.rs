//! What a plan says: the recommendation set and its parts, the same for both planners.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{PlannerKind, Thresholds};
use crate::score::ScoreDetails;
use crate::view::{GuestKind, NodeStatus};

/// Why a guest is recommended to move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonKind {
    MaintenanceEvacuation,
    IowaitRelief,
    CpuImbalance,
    MemImbalance,
    /// Separating guests of one anti-affinity group (cluster planner).
    AntiAffinity,
    /// Lowering a node's committed-memory overcommit (cluster planner).
    Overcommit,
    /// Moving a guest to the nodes its node-affinity rule (a pin) allows (cluster planner).
    NodeAffinity,
    /// Bringing an affinity group together (cluster planner).
    Affinity,
}

impl ReasonKind {
    /// The reason in words, for people.
    pub fn describe(self) -> &'static str {
        match self {
            ReasonKind::MaintenanceEvacuation => "evacuate node in maintenance",
            ReasonKind::IowaitRelief => "relieve I/O pressure",
            ReasonKind::CpuImbalance => "balance CPU load",
            ReasonKind::MemImbalance => "balance memory load",
            ReasonKind::AntiAffinity => "separate an anti-affinity group",
            ReasonKind::Overcommit => "relieve memory overcommit",
            ReasonKind::NodeAffinity => "move to the nodes its rule allows",
            ReasonKind::Affinity => "bring an affinity group together",
        }
    }

    /// CPU or memory imbalance, whichever differs more between source and target (reference
    /// §5.1).
    pub(crate) fn by_balance(source: &ScoreDetails, target: &ScoreDetails) -> Self {
        if source.metrics.cpu_blend - target.metrics.cpu_blend
            > source.metrics.mem - target.metrics.mem
        {
            ReasonKind::CpuImbalance
        } else {
            ReasonKind::MemImbalance
        }
    }

    /// The objective term a reason stands for.
    pub fn term(self) -> MoveTerm {
        match self {
            ReasonKind::MaintenanceEvacuation => MoveTerm::Maintenance,
            ReasonKind::IowaitRelief => MoveTerm::IowaitRelief,
            ReasonKind::CpuImbalance => MoveTerm::CpuBalance,
            ReasonKind::MemImbalance => MoveTerm::MemoryBalance,
            ReasonKind::AntiAffinity => MoveTerm::AntiAffinity,
            ReasonKind::Overcommit => MoveTerm::Overcommit,
            ReasonKind::NodeAffinity => MoveTerm::NodeAffinity,
            ReasonKind::Affinity => MoveTerm::Affinity,
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
    /// Proxmox balances HA resources itself (`crs` `ha = dynamic` with auto-rebalance).
    ManagedByPveCrs,
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
            SkipReason::ManagedByPveCrs => "managed_by_pve_crs",
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

/// How risky a move is (docs/engine.md §7): 0–100 and a level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Risk {
    pub score: f64,
    /// `low`, `moderate`, `high` or `very_high`.
    pub level: String,
    pub factors: Vec<String>,
}

/// Whether a move is worth what it costs (docs/engine.md §7).
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
    /// The objective term the move improved most, or the mandatory work it does.
    pub term: MoveTerm,
    /// The move's effect on the plan objective, term by term (cluster planner only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gain: Option<ObjectiveGain>,
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

/// The output of [`plan`](crate::plan).
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
    /// The planner that produced the set.
    pub planner: PlannerKind,
    /// Every online node before and after the plan, and the cluster's imbalance.
    pub prediction: Prediction,
    /// Moves the plan would make but that its limits (`max_moves`, `max_gib`) leave for later.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deferred: Vec<DeferredMove>,
    /// Rule violations the plan leaves in place, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unresolved: Vec<Unresolved>,
}

/// The objective term a move improves most, or the mandatory work it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveTerm {
    /// Evacuating a node in maintenance.
    Maintenance,
    /// Separating two guests of one anti-affinity group.
    AntiAffinity,
    /// Moving disk I/O off an IOWait-stressed node (docs/engine.md §5).
    IowaitRelief,
    /// Memory imbalance and memory penalties.
    MemoryBalance,
    /// CPU imbalance and CPU penalties.
    CpuBalance,
    /// The committed-memory overcommit penalty.
    Overcommit,
    /// IOWait penalties outside the mandatory relief.
    Iowait,
    /// Bringing an affinity group together.
    Affinity,
    /// The score components (health, predicted health, headroom).
    NodeHealth,
    /// Moving a guest onto the nodes its node-affinity rule (pin) allows.
    NodeAffinity,
}

impl MoveTerm {
    /// The reason kind a move made for this term is reported under; terms without one of their
    /// own fall back to the CPU-or-memory rule of [`ReasonKind::by_balance`].
    pub(crate) fn reason_kind(self, source: &ScoreDetails, target: &ScoreDetails) -> ReasonKind {
        match self {
            MoveTerm::Maintenance => ReasonKind::MaintenanceEvacuation,
            MoveTerm::IowaitRelief => ReasonKind::IowaitRelief,
            MoveTerm::AntiAffinity => ReasonKind::AntiAffinity,
            MoveTerm::Overcommit => ReasonKind::Overcommit,
            MoveTerm::NodeAffinity => ReasonKind::NodeAffinity,
            MoveTerm::Affinity => ReasonKind::Affinity,
            MoveTerm::MemoryBalance => ReasonKind::MemImbalance,
            MoveTerm::CpuBalance => ReasonKind::CpuImbalance,
            MoveTerm::Iowait | MoveTerm::NodeHealth => ReasonKind::by_balance(source, target),
        }
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MoveTerm::Maintenance => "maintenance",
            MoveTerm::AntiAffinity => "anti_affinity",
            MoveTerm::IowaitRelief => "iowait_relief",
            MoveTerm::MemoryBalance => "memory_balance",
            MoveTerm::CpuBalance => "cpu_balance",
            MoveTerm::Overcommit => "overcommit",
            MoveTerm::Iowait => "iowait",
            MoveTerm::Affinity => "affinity",
            MoveTerm::NodeHealth => "node_health",
            MoveTerm::NodeAffinity => "node_affinity",
        }
    }
}

/// How much a move lowers the plan objective, term by term (positive: the objective falls).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ObjectiveGain {
    /// The node scores' components (health, predicted health, headroom, storage).
    pub node_health: f64,
    /// Memory imbalance and the memory penalties of the node scores.
    pub memory_balance: f64,
    /// CPU imbalance and the CPU penalties of the node scores.
    pub cpu_balance: f64,
    pub overcommit: f64,
    pub iowait: f64,
    pub anti_affinity: f64,
    pub affinity: f64,
    /// Guests moved onto (or off) the nodes of their node-affinity rules.
    pub pins: f64,
    /// Σ of the terms.
    pub total: f64,
    /// What the migration costs in objective points (fixed part plus GiB to copy).
    pub cost: f64,
}

/// A node's figures at one point of a plan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeFigures {
    /// CPU, percent of the node's cores.
    pub cpu: f64,
    /// Memory in use, percent.
    pub mem: f64,
    /// Committed memory (Σ maxmem of running guests), percent of RAM.
    pub committed_pct: f64,
    pub overcommit_ratio: f64,
    /// IOWait now and over 24 h, percent.
    pub iowait: f64,
    pub iowait_24h: f64,
    /// The node's score as a target for a guest of no size (lower is better).
    pub score: f64,
    pub running_guests: u32,
}

/// One node before and after the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodePrediction {
    pub node: String,
    /// In maintenance: receives nothing, its guests leave.
    pub maintenance: bool,
    pub before: NodeFigures,
    pub after: NodeFigures,
}

/// How unevenly load is spread over the nodes that can take guests (online, not in
/// maintenance).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Imbalance {
    /// Highest minus lowest memory %, and the population standard deviation.
    pub mem_spread: f64,
    pub mem_stddev: f64,
    /// The same for CPU %.
    pub cpu_spread: f64,
    pub cpu_stddev: f64,
    /// PVE CRS's measure: the coefficient of variation of (CPU % + memory %) / 2 divided by
    /// √(n − 1), from 0 (even) to 1.
    pub normalized_cv: f64,
}

/// The cluster as the plan leaves it, as predicted by the plan's own model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Every online node, by name.
    pub nodes: Vec<NodePrediction>,
    pub imbalance_before: Imbalance,
    pub imbalance_after: Imbalance,
    /// The plan objective before and after (cluster planner; 0 for the reference generator).
    pub objective_before: f64,
    pub objective_after: f64,
}

/// A move left for a later plan by `max_moves` or `max_gib`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeferredMove {
    pub vmid: u32,
    pub name: String,
    pub source_node: String,
    pub target_node: String,
    pub term: MoveTerm,
    pub mem_gb: f64,
    /// The objective gain net of the move's cost, as planned.
    pub gain: f64,
    /// The limit that deferred it.
    pub reason: String,
}

/// A rule violation the plan leaves in place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unresolved {
    /// `anti_affinity`, `affinity`, `node_affinity`, `iowait` or `maintenance`.
    pub rule: String,
    pub node: String,
    /// The anti-affinity group, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub vmids: Vec<u32>,
    /// Why the plan could not resolve it.
    pub detail: String,
}
