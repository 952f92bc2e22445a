//! The plan objective: one number for a whole cluster, lower is better.
//!
//! ```text
//! J = node_score_weight    × Σ score(n)
//!   + balance_mem_weight   × Σ (mem%(n) − mean mem%)²
//!   + balance_cpu_weight   × Σ (cpu%(n) − mean cpu%)²
//!   + excess_mem_weight    × Σ max(0, mem%(n) − (memory threshold − excess_margin))²
//!   + excess_cpu_weight    × Σ max(0, cpu%(n) − (CPU threshold − excess_margin))²
//!   + excess_iowait_weight × Σ max(0, iowait%(n) − (IOWait threshold − excess_margin))²
//!   + anti_affinity_weight × (pairs of an anti-affinity group sharing a node)
//!   + affinity_weight      × Σ over affinity rules (nodes spanned − 1)
//!   + pin_weight           × (guests off the nodes of one of their node-affinity rules)
//! ```
//!
//! (Σ over `n` runs over the eligible nodes.)
//!
//! `score(n)` is the seed's node score for a guest of no size: the same gates, penalties,
//! overcommit, CPU stability factor and IOWait terms that `options` shows. Eligible nodes are
//! online and not in maintenance. The balance terms are sums, not means, so what one move gains
//! does not shrink as the cluster grows; CPU is the time-blended figure the scores use, memory
//! the current one. A move costs `move_cost + move_cost_per_gib × GiB`; a balancing move is taken
//! only when it lowers `J` by more than its cost plus `min_move_gain`.
//!
//! The excess terms are the smooth side of the scores' threshold penalties. A penalty only
//! changes when a node crosses a threshold, so a node that needs two moves to get below one
//! sees no gain from the first, and a node already past the last tier costs nothing more for
//! each guest piled on; the excess terms grow with every point, from `excess_margin` below the
//! threshold. They are zero on a cluster whose nodes all keep that margin, so a cluster that is
//! uneven but far from its limits is balanced only as far as the spread terms say. IOWait has
//! no spread term: only its excess counts, so I/O is not piled onto a node whose IOWait is
//! already high, even when its penalties are at their last tier. Like CPU it is the blended
//! figure, so a spike alone (high now, low over the day) is no reason to move anything.

use crate::config::PenaltyConfig;
use crate::score::NodeLoad;
use crate::set::{MoveTerm, ObjectiveGain};

use super::sim::{ScoreParts, Sim};

/// The objective's weights and the price of a move (configuration keys).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Weights {
    pub node_score: f64,
    pub mem: f64,
    pub cpu: f64,
    pub mem_excess: f64,
    pub cpu_excess: f64,
    pub iowait_excess: f64,
    pub anti_affinity: f64,
    pub affinity: f64,
    pub pin: f64,
    pub move_cost: f64,
    pub per_gib: f64,
    pub min_gain: f64,
}

impl Weights {
    pub fn of(cfg: &PenaltyConfig) -> Self {
        Weights {
            node_score: cfg.node_score_weight,
            mem: cfg.balance_mem_weight,
            cpu: cfg.balance_cpu_weight,
            mem_excess: cfg.excess_mem_weight,
            cpu_excess: cfg.excess_cpu_weight,
            iowait_excess: cfg.excess_iowait_weight,
            anti_affinity: cfg.anti_affinity_weight,
            affinity: cfg.affinity_weight,
            pin: cfg.pin_weight,
            move_cost: cfg.move_cost,
            per_gib: cfg.move_cost_per_gib,
            min_gain: cfg.min_move_gain,
        }
    }

    /// What migrating `gib` of configured memory costs.
    pub fn cost(&self, gib: f64) -> f64 {
        self.move_cost + self.per_gib * gib
    }
}

/// The figures of a node that the balance terms read: memory % (current, of the memory the node
/// offers guests once its reserve is held back), CPU % and IOWait % (both time-blended, as the
/// scores read them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Values {
    pub mem: f64,
    pub cpu: f64,
    pub iowait: f64,
}

pub(crate) fn balance_values(load: &NodeLoad, cfg: &PenaltyConfig, mem_scale: f64) -> Values {
    let (cpu, iowait) = load.blend(cfg);
    Values {
        mem: load.current.mem * mem_scale,
        cpu,
        iowait,
    }
}

/// Running sums over the eligible nodes, so a balance term and its change under a move cost
/// O(1): Σx and Σx² give Σ(x − mean)² = Σx² − (Σx)²/n.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Balance {
    n: f64,
    mem: (f64, f64),
    cpu: (f64, f64),
    /// Where the excess terms start (memory, CPU, IOWait), and Σ max(0, x − start)² of each.
    limits: (f64, f64, f64),
    excess: (f64, f64, f64),
}

fn excess(x: f64, limit: f64) -> f64 {
    let over = x - limit;
    if over > 0.0 { over * over } else { 0.0 }
}

fn spread_sq((s1, s2): (f64, f64), n: f64) -> f64 {
    if n > 0.0 {
        (s2 - s1 * s1 / n).max(0.0)
    } else {
        0.0
    }
}

impl Balance {
    pub fn of(sim: &Sim<'_>) -> Self {
        let margin = sim.cfg.excess_margin;
        let mut b = Balance {
            limits: (
                sim.t.mem - margin,
                sim.t.cpu - margin,
                sim.t.iowait - margin,
            ),
            ..Balance::default()
        };
        let changes: Vec<(Values, Values)> = (0..sim.nodes.len())
            .filter(|&i| sim.nodes[i].eligible)
            .map(|i| {
                let zero = Values {
                    mem: 0.0,
                    cpu: 0.0,
                    iowait: 0.0,
                };
                (zero, sim.values(i, &sim.nodes[i].load))
            })
            .collect();
        b.n = changes.len() as f64;
        b.changed(&changes)
    }

    /// Σ(x − mean)² of memory % and of CPU %.
    pub fn values(&self) -> (f64, f64) {
        (spread_sq(self.mem, self.n), spread_sq(self.cpu, self.n))
    }

    /// What the excess terms gain when one node goes from `old` to `new`.
    pub fn excess_gain(&self, w: &Weights, old: Values, new: Values) -> f64 {
        let (l, e) = (self.limits, excess);
        w.mem_excess * (e(old.mem, l.0) - e(new.mem, l.0))
            + w.cpu_excess * (e(old.cpu, l.1) - e(new.cpu, l.1))
            + w.iowait_excess * (e(old.iowait, l.2) - e(new.iowait, l.2))
    }

    /// The memory, CPU and IOWait parts of the objective: the weighted spread and excess
    /// terms.
    pub fn terms(&self, w: &Weights) -> (f64, f64, f64) {
        let (vm, vc) = self.values();
        (
            w.mem * vm + w.mem_excess * self.excess.0,
            w.cpu * vc + w.cpu_excess * self.excess.1,
            w.iowait_excess * self.excess.2,
        )
    }

    /// The sums once the eligible nodes in `changes` go from their old values to new ones.
    pub fn changed(&self, changes: &[(Values, Values)]) -> Balance {
        let mut b = *self;
        for &(old, new) in changes {
            b.mem.0 += new.mem - old.mem;
            b.mem.1 += new.mem * new.mem - old.mem * old.mem;
            b.cpu.0 += new.cpu - old.cpu;
            b.cpu.1 += new.cpu * new.cpu - old.cpu * old.cpu;
            b.excess.0 += excess(new.mem, b.limits.0) - excess(old.mem, b.limits.0);
            b.excess.1 += excess(new.cpu, b.limits.1) - excess(old.cpu, b.limits.1);
            b.excess.2 += excess(new.iowait, b.limits.2) - excess(old.iowait, b.limits.2);
        }
        b
    }
}

/// The objective's value for the cluster as it stands.
pub(crate) fn objective(sim: &Sim<'_>, w: &Weights) -> f64 {
    let scores: f64 = sim
        .nodes
        .iter()
        .filter(|n| n.eligible)
        .map(|n| n.score.total())
        .sum();
    let (mem, cpu, iowait) = Balance::of(sim).terms(w);
    w.node_score * scores
        + mem
        + cpu
        + iowait
        + w.anti_affinity * sim.groups.violating_pairs() as f64
        + w.affinity * sim.groups.affinity_splits() as f64
        + w.pin * sim.groups.pins_off() as f64
}

/// The change in the node-score part when a node's score goes from `old` to `new`, as gains
/// (positive when the score falls), attributed term by term.
pub(crate) fn score_gain(
    gain: &mut ObjectiveGain,
    w: &Weights,
    old: &ScoreParts,
    new: &ScoreParts,
) {
    gain.node_health += w.node_score * (old.components - new.components);
    gain.memory_balance += w.node_score * (old.mem - new.mem);
    gain.cpu_balance += w.node_score * (old.cpu - new.cpu);
    gain.overcommit += w.node_score * (old.overcommit - new.overcommit);
    gain.iowait += w.node_score * (old.iowait - new.iowait);
}

impl ObjectiveGain {
    /// Sets `total` to the sum of the terms.
    pub(crate) fn summed(mut self) -> Self {
        self.total = self.node_health
            + self.memory_balance
            + self.cpu_balance
            + self.overcommit
            + self.iowait
            + self.anti_affinity
            + self.affinity
            + self.pins;
        self
    }

    /// The gain net of the move's cost.
    pub fn net(&self) -> f64 {
        self.total - self.cost
    }

    /// The term that gained most (ties: the order below).
    pub fn main_term(&self) -> MoveTerm {
        [
            (MoveTerm::AntiAffinity, self.anti_affinity),
            (MoveTerm::NodeAffinity, self.pins),
            (MoveTerm::Overcommit, self.overcommit),
            (MoveTerm::Iowait, self.iowait),
            (MoveTerm::MemoryBalance, self.memory_balance),
            (MoveTerm::CpuBalance, self.cpu_balance),
            (MoveTerm::Affinity, self.affinity),
            (MoveTerm::NodeHealth, self.node_health),
        ]
        .into_iter()
        .fold(
            (MoveTerm::MemoryBalance, f64::NEG_INFINITY),
            |best, (t, v)| {
                if v > best.1 { (t, v) } else { best }
            },
        )
        .0
    }
}
