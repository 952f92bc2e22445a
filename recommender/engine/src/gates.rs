//! The hard gates, as ordered tables: the guest gates that keep a guest where it is, and the
//! target gates that refuse a node as a destination. Both planners and the migration options
//! read these tables, so a gate is declared once, with the reason it reports and the place in
//! the order that decides which reason a guest or target gets when several apply.

use crate::config::HaGuests;
use crate::rules::{Rule, RuleSource};
use crate::set::SkipReason;
use crate::view::{Cluster, Guest};

/// A reason a guest stays where it is, whatever the scores say.
pub(crate) struct GuestGate {
    pub reason: SkipReason,
    /// A guest on a node in maintenance is moved anyway.
    pub maintenance_bypasses: bool,
    /// The detail to report when the gate applies to the guest of the cluster.
    applies: fn(&Cluster, &Guest) -> Option<String>,
}

/// The guest gates in the order they are checked; the first that applies is reported.
pub(crate) const GUEST_GATES: [GuestGate; 9] = [
    // The operator's explicit word comes before anything inferred from the guest.
    GuestGate {
        reason: SkipReason::HasIgnoreTag,
        maintenance_bypasses: true,
        applies: |_, g| g.tags.ignore.then(|| "tagged ignore".to_owned()),
    },
    // When Proxmox balances its HA resources itself, a second balancer moving them would fight
    // it, maintenance or not (HA evacuates a node in maintenance mode on its own).
    GuestGate {
        reason: SkipReason::ManagedByPveCrs,
        maintenance_bypasses: false,
        applies: |c, g| {
            (g.ha_managed && c.crs.balances_ha()).then(|| {
                "an HA resource, and Proxmox balances HA resources itself (crs ha=dynamic with auto-rebalance)"
                    .to_owned()
            })
        },
    },
    // Proxmox HA decides where its resources run, unless the operator asks for moves within
    // their HA rules (`ha_guests = "recommend"`).
    GuestGate {
        reason: SkipReason::HaManaged,
        maintenance_bypasses: true,
        applies: |c, g| {
            (g.ha_managed && c.config.ha_guests == HaGuests::Skip)
                .then(|| "managed by Proxmox HA, which decides where it runs".to_owned())
        },
    },
    // Templates and locked guests cannot be migrated at all, maintenance or not, so they are
    // reported as such before the softer reasons below.
    GuestGate {
        reason: SkipReason::Template,
        maintenance_bypasses: false,
        applies: |_, g| {
            g.template
                .then(|| "a template, not a running guest".to_owned())
        },
    },
    GuestGate {
        reason: SkipReason::Locked,
        maintenance_bypasses: false,
        applies: |_, g| g.lock.as_ref().map(|lock| format!("locked ({lock})")),
    },
    // A stopped guest has no load to balance; off a maintenance node it still has to go.
    GuestGate {
        reason: SkipReason::Stopped,
        maintenance_bypasses: true,
        applies: |_, g| (!g.is_running()).then(|| format!("status {}", g.status)),
    },
    // Until the configuration is read, a passthrough disk may be hiding: treat it as one.
    GuestGate {
        reason: SkipReason::ConfigUnknown,
        maintenance_bypasses: false,
        applies: |_, g| {
            (!g.config_known).then(|| {
                "configuration not read yet: passthrough disks and bind mounts are unknown"
                    .to_owned()
            })
        },
    },
    // A passthrough device exists on this host only: not even maintenance can move the guest.
    GuestGate {
        reason: SkipReason::PassthroughDisk,
        maintenance_bypasses: false,
        applies: |_, g| {
            g.passthrough
                .then(|| "has a passthrough disk pinning it to its node".to_owned())
        },
    },
    // A bind mount of a host path may exist elsewhere; only maintenance takes that risk (and
    // the move carries a warning).
    GuestGate {
        reason: SkipReason::UnsharedBindMount,
        maintenance_bypasses: true,
        applies: |_, g| {
            g.unshared_bind_mount
                .then(|| "has a bind mount of a host path that is not shared".to_owned())
        },
    },
];

/// The first guest gate that keeps `g` (of `cluster`) where it is, with its detail.
/// `on_maintenance`: the guest's node is in maintenance, which lets the gates that allow it pass.
pub(crate) fn guest_gate(
    cluster: &Cluster,
    g: &Guest,
    on_maintenance: bool,
) -> Option<(SkipReason, String)> {
    GUEST_GATES
        .iter()
        .filter(|gate| !(on_maintenance && gate.maintenance_bypasses))
        .find_map(|gate| (gate.applies)(cluster, g).map(|detail| (gate.reason, detail)))
}

/// Why a node was refused as a target before scoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TargetGate {
    PinnedElsewhere,
    AntiAffinity,
    MemoryCapacity,
    Storage,
    IowaitStressed,
    EmptiesSource,
    SplitsGroup,
}

impl TargetGate {
    /// The reason as reported, e.g. `pve2: insufficient memory capacity`.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetGate::PinnedElsewhere => "pinned elsewhere",
            TargetGate::AntiAffinity => "anti-affinity conflict",
            TargetGate::MemoryCapacity => "insufficient memory capacity",
            TargetGate::Storage => "storage incompatible",
            TargetGate::IowaitStressed => "target under IOWait stress",
            TargetGate::EmptiesSource => "would leave its source without running guests",
            TargetGate::SplitsGroup => "would leave a guest of its strict affinity rule behind",
        }
    }

    /// The refusal as shown to people: a rule's gate names the rule that refuses, e.g.
    /// `pinned elsewhere (tag pin_pve1 of 2)` or `anti-affinity conflict (rule pool:db)`; a
    /// guest's own `exclude_` tag goes unnamed (the guest's tags already say it).
    pub fn describe(self, rule: Option<&Rule>) -> String {
        match rule {
            Some(r) if !(self == TargetGate::AntiAffinity && r.source == RuleSource::Tag) => {
                format!("{} ({})", self.as_str(), r.label())
            }
            _ => self.as_str().to_owned(),
        }
    }

    /// Whether the gate judges the move's source rather than its target: it then refuses every
    /// target alike, and a caller trying many targets can settle it once.
    pub fn judges_source(self) -> bool {
        matches!(self, TargetGate::EmptiesSource | TargetGate::SplitsGroup)
    }
}

/// The seed's target gates (docs/engine.md §5), in the order they are checked and reported.
pub(crate) const SEED_TARGET_GATES: [TargetGate; 4] = [
    // Rules the operator wrote are reported before facts about capacity; where a guest may run
    // at all comes before whom it may not run with.
    TargetGate::PinnedElsewhere,
    TargetGate::AntiAffinity,
    // Memory that is not there cannot be planned around; storage only matters once it fits.
    TargetGate::MemoryCapacity,
    TargetGate::Storage,
];

/// The cluster planner's target gates: the seed's, then the two it adds because it plans the
/// whole cluster rather than one guest at a time.
pub(crate) const PLANNER_TARGET_GATES: [TargetGate; 7] = [
    TargetGate::PinnedElsewhere,
    TargetGate::AntiAffinity,
    TargetGate::MemoryCapacity,
    TargetGate::Storage,
    // Moving load onto a node that is already IOWait-stressed feeds the problem the IOWait
    // trigger exists to relieve.
    TargetGate::IowaitStressed,
    // A balancing move never leaves a node (outside maintenance) without running guests: that
    // is an evacuation, which only the operator asks for. Mandatory moves skip this gate.
    TargetGate::EmptiesSource,
    // Guests that a strict affinity rule keeps together move together; a group that came
    // together during the plan must not be split by a later move of part of it.
    TargetGate::SplitsGroup,
];

/// What a planner's state answers about a node, for the target gates. `D` is what the moving
/// guest (or group of guests) needs, in the planner's own representation.
pub(crate) trait TargetState<D: ?Sized> {
    /// A strict node-affinity rule of the demand's guests leaves the node out.
    fn pinned_elsewhere(&self, demand: &D, node: usize) -> bool;
    /// A guest on the node (or pending to it) shares a strict anti-affinity rule with the
    /// demand.
    fn anti_affinity_conflict(&self, demand: &D, node: usize) -> bool;
    /// The node cannot hold the demand's memory within the capacity headroom.
    fn lacks_memory(&self, demand: &D, node: usize) -> bool;
    /// Some storage the demand uses is missing or inactive on the node.
    fn lacks_storage(&self, demand: &D, node: usize) -> bool;
    /// The node is IOWait-stressed (docs/engine.md §5).
    fn iowait_stressed(&self, node: usize) -> bool;
    /// Moving the demand off its node would leave that node without running guests.
    fn empties_source(&self, demand: &D) -> bool;
    /// Moving the demand off its node would leave a guest of one of its strict affinity rules
    /// behind there.
    fn splits_group(&self, demand: &D) -> bool;
}

impl TargetGate {
    /// Whether this gate refuses `node` for `demand`.
    pub fn refuses<D: ?Sized, S: TargetState<D> + ?Sized>(
        self,
        state: &S,
        demand: &D,
        node: usize,
    ) -> bool {
        match self {
            TargetGate::PinnedElsewhere => state.pinned_elsewhere(demand, node),
            TargetGate::AntiAffinity => state.anti_affinity_conflict(demand, node),
            TargetGate::MemoryCapacity => state.lacks_memory(demand, node),
            TargetGate::Storage => state.lacks_storage(demand, node),
            TargetGate::IowaitStressed => state.iowait_stressed(node),
            TargetGate::EmptiesSource => state.empties_source(demand),
            TargetGate::SplitsGroup => state.splits_group(demand),
        }
    }
}

/// The first gate of `gates` that refuses `node` for `demand`.
pub(crate) fn first_refusal<D: ?Sized, S: TargetState<D> + ?Sized>(
    gates: &[TargetGate],
    state: &S,
    demand: &D,
    node: usize,
) -> Option<TargetGate> {
    gates
        .iter()
        .copied()
        .find(|gate| gate.refuses(state, demand, node))
}
