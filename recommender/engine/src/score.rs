//! Node metrics and the target score (docs/engine.md §3–4).

use serde::{Deserialize, Serialize};

use crate::config::{PenaltyConfig, Thresholds};
use crate::numeric::{mean, round_int, trunc};
use crate::trend::{TrendAnalysis, TrendSummary};
use crate::view::{CurrentMetrics, DayAverages, Guest, Node, WeekStats};

/// Calls `$callback! { key: Class, ... }` with every penalty key, in the order score details list
/// them, and the class that decides how it is scaled, capped and explained. This list is the one
/// declaration of the keys: the breakdown struct, [`PENALTY_KEYS`], and (in the recommender) the
/// protobuf conversion are generated from it.
#[macro_export]
macro_rules! penalty_keys {
    ($callback:ident) => {
        $callback! {
            current_cpu: Cpu,
            current_mem: Memory,
            sustained_cpu: Cpu,
            sustained_mem: Memory,
            iowait_current: Iowait,
            iowait_sustained: Iowait,
            cpu_trend: Cpu,
            mem_trend: Memory,
            cpu_spikes: Cpu,
            mem_spikes: Memory,
            predicted_cpu: Cpu,
            predicted_mem: Memory,
            mem_overcommit: Overcommit,
        }
    };
}

/// What a penalty is about. CPU penalties are multiplied by the stability factor (step 7);
/// memory and overcommit penalties share the memory cap (step 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PenaltyClass {
    Cpu,
    Memory,
    Iowait,
    Overcommit,
}

macro_rules! define_breakdown {
    ($($key:ident : $class:ident),* $(,)?) => {
        /// How many penalty keys there are.
        const PENALTY_COUNT: usize = [$(stringify!($key)),*].len();

        /// The penalty keys, in the order score details list them.
        pub const PENALTY_KEYS: [&str; PENALTY_COUNT] = [$(stringify!($key)),*];

        /// Penalty points by key; 0 where a penalty does not apply.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
        pub struct PenaltyBreakdown {
            $(pub $key: f64,)*
        }

        impl PenaltyBreakdown {
            /// `(key, points)` pairs in [`PENALTY_KEYS`] order.
            pub fn entries(&self) -> [(&'static str, f64); PENALTY_COUNT] {
                [$((stringify!($key), self.$key)),*]
            }

            /// Each key's points with its class, mutable.
            fn classified_mut(&mut self) -> [(PenaltyClass, &mut f64); PENALTY_COUNT] {
                [$((PenaltyClass::$class, &mut self.$key)),*]
            }

            /// Each key's points with its class.
            pub fn classified(&self) -> [(PenaltyClass, f64); PENALTY_COUNT] {
                [$((PenaltyClass::$class, self.$key)),*]
            }
        }
    };
}

penalty_keys!(define_breakdown);

impl PenaltyBreakdown {
    /// Σ of all penalties.
    pub fn total(&self) -> f64 {
        self.entries().iter().map(|(_, v)| v).sum()
    }

    /// Σ of the penalties of one class.
    pub fn class_total(&self, class: PenaltyClass) -> f64 {
        self.classified()
            .iter()
            .filter(|(c, _)| *c == class)
            .map(|(_, v)| v)
            .sum()
    }

    /// The terms the memory cap applies to: memory and overcommit penalties.
    fn mem_terms(&mut self) -> impl Iterator<Item = &mut f64> {
        self.classified_mut()
            .into_iter()
            .filter(|(c, _)| matches!(c, PenaltyClass::Memory | PenaltyClass::Overcommit))
            .map(|(_, v)| v)
    }

    /// The terms the CPU stability factor multiplies.
    fn cpu_terms(&mut self) -> impl Iterator<Item = &mut f64> {
        self.classified_mut()
            .into_iter()
            .filter(|(c, _)| *c == PenaltyClass::Cpu)
            .map(|(_, v)| v)
    }
}

/// The four weighted components of a score.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Components {
    /// Node health, 0–100, lower is better (weight 0.25).
    pub health: f64,
    /// Health after the move (weight 0.40).
    pub predicted_health: f64,
    /// Lack of headroom after the move (weight 0.20).
    pub headroom: f64,
    /// Mean usage of the node's active storages (weight 0.15).
    pub storage: f64,
}

/// The metrics a score was computed from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ScoreMetrics {
    /// Time-blended CPU, percent.
    pub cpu_blend: f64,
    /// Time-blended IOWait, percent (the measured value, even on an exempt node).
    pub iowait_blend: f64,
    /// Current memory, percent.
    pub mem: f64,
    pub predicted_cpu: f64,
    pub predicted_mem: f64,
    pub predicted_iowait: f64,
    /// The overcommit ratio the `mem_overcommit` penalty was decided on (pending included).
    pub overcommit_ratio: f64,
}

/// Why a node scored what it did. Lower scores are better targets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoreDetails {
    pub score: f64,
    pub penalties: PenaltyBreakdown,
    pub total_penalties: f64,
    pub cpu_stability_factor: f64,
    pub components: Components,
    pub metrics: ScoreMetrics,
    /// Absent when the time weights switch trend analysis off.
    pub trend: Option<TrendSummary>,
}

impl ScoreDetails {
    /// What the reference shows users: `max(0, 100 − min(score, 100))`.
    pub fn suitability(&self) -> f64 {
        (100.0 - self.score.min(100.0)).max(0.0)
    }
}

/// What moving a guest does to a node's load, in percentage points of that node.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Impact {
    pub cpu: f64,
    pub mem: f64,
    pub io: f64,
}

impl Impact {
    /// The guest's share of `node`: CPU over the node's cores, used memory over its RAM, and
    /// 100 MB/s of disk I/O as 5 points of IOWait, at most 20.
    pub fn of(guest: &Guest, node: &Node) -> Self {
        let cores = f64::from(node.cpu_cores.max(1));
        let mem = if node.total_mem_gb > 0.0 {
            guest.mem_used_gb / node.total_mem_gb * 100.0
        } else {
            0.0
        };
        Impact {
            cpu: guest.cpu_percent * f64::from(guest.cpu_cores) / cores,
            mem,
            io: io_impact(guest),
        }
    }
}

/// 100 MiB/s of disk I/O counts as 5 points of IOWait, capped at 20.
pub(crate) fn io_impact(guest: &Guest) -> f64 {
    (guest.disk_io_bps() / 1_048_576.0 / 100.0 * 5.0).min(20.0)
}

/// The figures of a node that a plan changes. The reference generator lowers the current values
/// and committed memory as guests leave and counts arrivals as pending; the cluster planner
/// shifts every figure (current, 24 h and week) as guests move, with nothing pending.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NodeLoad {
    pub current: CurrentMetrics,
    /// 24-hour averages; `None` when the node has no history.
    pub day: Option<DayAverages>,
    /// Week averages and maxima.
    pub week: Option<WeekStats>,
    pub committed_mem_gb: f64,
    pub overcommit_ratio: f64,
    /// A running guest on the node is tagged `io_exempt` or has a passthrough disk.
    pub iowait_exempt: bool,
    pub pending: Impact,
    pub pending_mem_max_gb: f64,
}

impl NodeLoad {
    pub fn of(node: &Node) -> Self {
        NodeLoad {
            current: node.current,
            day: node.avg_24h,
            week: node.week,
            committed_mem_gb: node.committed_mem_gb,
            overcommit_ratio: node.mem_overcommit_ratio,
            iowait_exempt: node.iowait_exempt,
            pending: Impact::default(),
            pending_mem_max_gb: 0.0,
        }
    }

    /// Whether IOWait is not held against this node.
    pub fn iowait_exempt(&self, cfg: &PenaltyConfig) -> bool {
        cfg.iowait_exempt_enabled && self.iowait_exempt
    }

    /// Time-blended CPU and IOWait (§4.1): the current values weighed with the 24 h and week
    /// averages when the node has history, the current values alone when it has none.
    pub fn blend(&self, cfg: &PenaltyConfig) -> (f64, f64) {
        let current = &self.current;
        match self.day {
            Some(day) => {
                let (week_cpu, week_io) = self
                    .week
                    .map_or((day.cpu, day.iowait), |w| (w.avg_cpu, w.avg_iowait));
                (
                    current.cpu * cfg.weight_current
                        + day.cpu * cfg.weight_24h
                        + week_cpu * cfg.weight_7d,
                    current.iowait * cfg.weight_current
                        + day.iowait * cfg.weight_24h
                        + week_io * cfg.weight_7d,
                )
            }
            None => (current.cpu, current.iowait),
        }
    }
}

/// Per-node facts that do not change within a run, computed once.
#[derive(Debug, Clone)]
pub(crate) struct PreparedNode<'a> {
    pub node: &'a Node,
    /// `None` when the time weights switch trend analysis off.
    pub trend: Option<TrendAnalysis>,
    /// Mean usage of active storages, percent.
    pub storage_usage: f64,
}

impl<'a> PreparedNode<'a> {
    pub fn new(node: &'a Node, cfg: &PenaltyConfig) -> Self {
        let trend =
            (cfg.weight_24h > 0.0 || cfg.weight_7d > 0.0).then(|| TrendAnalysis::of(&node.history));
        let storage_usage = mean(
            node.storage
                .iter()
                .filter(|s| s.active)
                .map(|s| s.usage_pct),
        );
        PreparedNode {
            node,
            trend,
            storage_usage,
        }
    }

    /// Node health, 0–100, lower is better (§4.2).
    pub fn health(&self, load: &NodeLoad, cfg: &PenaltyConfig) -> f64 {
        let (cpu, iowait) = load.blend(cfg);
        let iowait = if load.iowait_exempt(cfg) { 0.0 } else { iowait };
        let load_avg = load.day.map_or(0.0, |d| d.load);
        let load_pct = load_avg / f64::from(self.node.cpu_cores.max(1)) * 100.0;
        0.40 * cpu
            + 0.15 * load.current.mem
            + 0.25 * iowait
            + 0.10 * load_pct
            + 0.10 * self.storage_usage
    }
}

/// Picks the tier of a value against a threshold and two offsets above it.
fn tier3(value: f64, threshold: f64, off1: f64, off2: f64, points: [f64; 3]) -> f64 {
    if value > threshold + off2 {
        points[2]
    } else if value > threshold + off1 {
        points[1]
    } else if value > threshold {
        points[0]
    } else {
        0.0
    }
}

/// Picks the first tier whose limit the value exceeds (limits in descending order).
fn tiered<const N: usize>(value: f64, limits: [f64; N], points: [f64; N]) -> f64 {
    limits
        .iter()
        .zip(points)
        .find(|(limit, _)| value > **limit)
        .map_or(0.0, |(_, p)| p)
}

/// The part of a node's score that depends on the node and its load but not on the guest:
/// steps 1–5 of §4.4 (CPU terms already multiplied by the stability factor), the blended
/// metrics and the health component. Computed once per node and again when a departure
/// changes the node's load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct NodeBase {
    penalties: PenaltyBreakdown,
    factor: f64,
    cpu_blend: f64,
    iowait_blend: f64,
    mem_now: f64,
    health: f64,
    storage: f64,
    trend: Option<TrendSummary>,
}

impl NodeBase {
    pub fn new(
        cfg: &PenaltyConfig,
        t: &Thresholds,
        pn: &PreparedNode<'_>,
        load: &NodeLoad,
    ) -> Self {
        let cur = load.current;
        let mut p = PenaltyBreakdown::default();

        // 1. current load
        let (c1, c2) = (cfg.cpu_threshold_offset_1, cfg.cpu_threshold_offset_2);
        let (m1, m2) = (cfg.mem_threshold_offset_1, cfg.mem_threshold_offset_2);
        p.current_cpu = tier3(
            cur.cpu,
            t.cpu,
            c1,
            c2,
            [
                cfg.cpu_high_penalty,
                cfg.cpu_very_high_penalty,
                cfg.cpu_extreme_penalty,
            ],
        );
        p.current_mem = tier3(
            cur.mem,
            t.mem,
            m1,
            m2,
            [
                cfg.mem_high_penalty,
                cfg.mem_very_high_penalty,
                cfg.mem_extreme_penalty,
            ],
        );

        // 2. sustained load over the week
        let week = load.week.filter(|_| cfg.weight_7d > 0.0);
        if let Some(w) = week {
            p.sustained_cpu = tiered(
                w.avg_cpu,
                [90.0, 80.0, 70.0],
                [
                    cfg.cpu_sustained_critical,
                    cfg.cpu_sustained_very_high,
                    cfg.cpu_sustained_high,
                ],
            );
            p.sustained_mem = tiered(
                w.avg_mem,
                [95.0, 90.0, 80.0],
                [
                    cfg.mem_sustained_critical,
                    cfg.mem_sustained_very_high,
                    cfg.mem_sustained_high,
                ],
            );
        }

        // 3. IOWait, now and over the week
        if !load.iowait_exempt(cfg) {
            p.iowait_current = tiered(
                cur.iowait,
                [30.0, 20.0, 10.0],
                [
                    cfg.iowait_extreme_penalty,
                    cfg.iowait_very_high_penalty,
                    cfg.iowait_high_penalty,
                ],
            );
            if let Some(w) = week {
                p.iowait_sustained = tiered(
                    w.avg_iowait,
                    [20.0, 15.0, 10.0],
                    [
                        cfg.iowait_sustained_critical,
                        cfg.iowait_sustained_high,
                        cfg.iowait_sustained_elevated,
                    ],
                );
            }
        }

        // 4. trend and stability
        let factor = pn.trend.map_or(1.0, |tr| tr.cpu_stability_factor);
        if let Some(tr) = &pn.trend {
            p.cpu_trend = trend_penalty(tr.cpu.weighted_rate(), cfg.cpu_trend_rising_penalty);
            if cfg.mem_trend_rising_penalty > 0.0 {
                p.mem_trend = trend_penalty(tr.mem.weighted_rate(), cfg.mem_trend_rising_penalty);
            }
        }

        // 5. spikes over the week
        if let Some(w) = week {
            p.cpu_spikes = tiered(
                w.max_cpu,
                [95.0, 90.0, 80.0, 70.0],
                [
                    cfg.cpu_spike_extreme,
                    cfg.cpu_spike_very_high,
                    cfg.cpu_spike_high,
                    cfg.cpu_spike_moderate,
                ],
            );
            p.mem_spikes = tiered(
                w.max_mem,
                [98.0, 95.0, 90.0, 85.0],
                [
                    cfg.mem_spike_extreme,
                    cfg.mem_spike_very_high,
                    cfg.mem_spike_high,
                    cfg.mem_spike_moderate,
                ],
            );
        }

        // 7. (for the node-only CPU terms; predicted_cpu is still 0) the stability factor
        for v in p.cpu_terms() {
            *v = apply_factor(*v, factor);
        }

        let (cpu_blend, iowait_blend) = load.blend(cfg);
        NodeBase {
            penalties: p,
            factor,
            cpu_blend,
            iowait_blend,
            mem_now: cur.mem,
            health: pn.health(load, cfg),
            storage: pn.storage_usage,
            trend: pn.trend.map(|tr| tr.summary()),
        }
    }

    /// `score(node, guest, pending, adding)` (docs/engine.md §4) from this base. With `adding` the
    /// guest and every pending arrival are added to the node; without, the guest is taken off it
    /// and pending is ignored. `impact` is the guest's impact measured against this node.
    pub fn score(
        &self,
        cfg: &PenaltyConfig,
        t: &Thresholds,
        node: &Node,
        load: &NodeLoad,
        impact: Impact,
        adding: bool,
    ) -> ScoreDetails {
        let mut p = self.penalties;

        // 6. the load after the move
        let after = |base: f64, delta: f64, pending: f64| -> f64 {
            if adding {
                ((base + delta).min(100.0) + pending).min(100.0)
            } else {
                (base - delta).clamp(0.0, 100.0)
            }
        };
        let pcpu = after(self.cpu_blend, impact.cpu, load.pending.cpu);
        let pmem = after(self.mem_now, impact.mem, load.pending.mem);
        let piow = after(self.iowait_blend, impact.io, load.pending.io);
        p.predicted_cpu = tier3(
            pcpu,
            t.cpu,
            cfg.cpu_threshold_offset_1,
            cfg.cpu_threshold_offset_2,
            [
                cfg.predicted_cpu_over_penalty,
                cfg.predicted_cpu_high_penalty,
                cfg.predicted_cpu_extreme_penalty,
            ],
        );
        p.predicted_mem = tier3(
            pmem,
            t.mem,
            cfg.mem_threshold_offset_1,
            cfg.mem_threshold_offset_2,
            [
                cfg.predicted_mem_over_penalty,
                cfg.predicted_mem_high_penalty,
                cfg.predicted_mem_extreme_penalty,
            ],
        );

        // 7. the stability factor on the predicted CPU term
        p.predicted_cpu = apply_factor(p.predicted_cpu, self.factor);

        // 8. committed-memory overcommit (seed phase 2)
        let ratio = if adding && node.total_mem_gb > 0.0 {
            load.overcommit_ratio + load.pending_mem_max_gb / node.total_mem_gb
        } else {
            load.overcommit_ratio
        };
        p.mem_overcommit = if ratio > 1.2 {
            cfg.mem_overcommit_high_penalty
        } else if ratio > 1.0 {
            cfg.mem_overcommit_penalty
        } else {
            0.0
        };

        // 9. cap on the memory penalties
        let mem_sum: f64 = p.mem_terms().map(|v| *v).sum();
        if cfg.mem_penalty_cap > 0.0 && mem_sum > cfg.mem_penalty_cap {
            let scale = cfg.mem_penalty_cap / mem_sum;
            for v in p.mem_terms() {
                if *v > 0.0 {
                    *v = round_int(*v * scale);
                }
            }
        }

        // 10–11. total
        let total_penalties = p.total();
        let components = Components {
            health: self.health,
            predicted_health: 0.40 * pcpu
                + 0.15 * pmem
                + 0.25 * piow
                + 0.15 * self.cpu_blend
                + 0.05 * self.mem_now,
            headroom: 100.0 - (0.65 * (100.0 - pcpu) + 0.35 * (100.0 - pmem)),
            storage: self.storage,
        };
        let score = 0.25 * components.health
            + 0.40 * components.predicted_health
            + 0.20 * components.headroom
            + 0.15 * components.storage
            + total_penalties;
        ScoreDetails {
            score,
            penalties: p,
            total_penalties,
            cpu_stability_factor: self.factor,
            components,
            metrics: ScoreMetrics {
                cpu_blend: self.cpu_blend,
                iowait_blend: self.iowait_blend,
                mem: self.mem_now,
                predicted_cpu: pcpu,
                predicted_mem: pmem,
                predicted_iowait: piow,
                overcommit_ratio: ratio,
            },
            trend: self.trend,
        }
    }
}

/// Step 7: a non-zero CPU term times the stability factor, rounded half to even.
fn apply_factor(v: f64, factor: f64) -> f64 {
    if v != 0.0 { round_int(v * factor) } else { 0.0 }
}

fn trend_penalty(rate: f64, base: f64) -> f64 {
    if rate > 3.0 {
        trunc(3.0 * base)
    } else if rate > 1.0 {
        trunc(2.0 * base)
    } else if rate > 0.5 {
        base
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers() {
        assert_eq!(tier3(75.0, 60.0, 10.0, 20.0, [20.0, 50.0, 100.0]), 50.0);
        assert_eq!(tier3(60.0, 60.0, 10.0, 20.0, [20.0, 50.0, 100.0]), 0.0);
        assert_eq!(tier3(80.1, 60.0, 10.0, 20.0, [20.0, 50.0, 100.0]), 100.0);
        assert_eq!(
            tiered(85.0, [95.0, 90.0, 80.0, 70.0], [30.0, 20.0, 10.0, 5.0]),
            10.0
        );
        assert_eq!(
            tiered(70.0, [95.0, 90.0, 80.0, 70.0], [30.0, 20.0, 10.0, 5.0]),
            0.0
        );
    }

    #[test]
    fn trend_penalty_bands() {
        assert_eq!(trend_penalty(10.0, 15.0), 45.0);
        assert_eq!(trend_penalty(2.0, 15.0), 30.0);
        assert_eq!(trend_penalty(0.6, 15.0), 15.0);
        assert_eq!(trend_penalty(0.5, 15.0), 0.0);
    }
}
