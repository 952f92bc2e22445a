//! Upper bounds on what a move can gain, from arithmetic on figures already known, so that
//! most candidate moves are never scored.
//!
//! A move's gain splits exactly into a source part (what the source gains when the guests
//! leave, known once per unit and source state), a target part and a small cross term of the
//! spread terms:
//!
//! ```text
//! Σ(x − mean)² changes by  −2·xs·(ms − μ) + xs² + 2·xt·(mt − μ) + xt² − (xt − xs)²/n
//! ```
//!
//! for a guest worth `xs` points on its source (at `ms`) and `xt` on its target (at `mt`). On the
//! target, the spread and excess terms are computed exactly (a few multiplications); the rest
//! can only cost: adding load never lowers a node's score (up to the rounding of the memory
//! cap, covered by [`SCORE_SLACK`]), and the anti-affinity gate keeps new pairs out. An affinity
//! group the target already holds gains at most `affinity_weight`.

use super::objective::{Balance, Values, Weights};
use super::sim::Sim;
use super::units::Unit;

/// Objective points that rounding in the memory cap can take off a score as load grows.
const SCORE_SLACK: f64 = 2.0;

/// The figures the bounds read, for the cluster as it stands.
pub(crate) struct Bounder {
    /// Eligible nodes and the means of their memory and CPU figures.
    n: f64,
    mean_mem: f64,
    mean_cpu: f64,
    /// Per node: 100 / RAM (GiB) and 100 / cores, to turn a contribution into points.
    per_gib: Vec<f64>,
    per_core: Vec<f64>,
}

impl Bounder {
    pub fn new(sim: &Sim<'_>, values: &[Values]) -> Self {
        let eligible: Vec<usize> = (0..sim.nodes.len())
            .filter(|&i| sim.nodes[i].eligible)
            .collect();
        let n = eligible.len().max(1) as f64;
        Bounder {
            n,
            mean_mem: eligible.iter().map(|&i| values[i].mem).sum::<f64>() / n,
            mean_cpu: eligible.iter().map(|&i| values[i].cpu).sum::<f64>() / n,
            per_gib: sim
                .cluster
                .nodes
                .iter()
                .map(|n| {
                    let offered = n.offered_mem_gb(sim.cfg);
                    if offered > 0.0 { 100.0 / offered } else { 0.0 }
                })
                .collect(),
            per_core: sim
                .cluster
                .nodes
                .iter()
                .map(|n| 100.0 / f64::from(n.cpu_cores.max(1)))
                .collect(),
        }
    }

    /// Whether a node stands at or above the mean memory and the mean CPU.
    pub fn above_means(&self, v: Values) -> bool {
        v.mem >= self.mean_mem && v.cpu >= self.mean_cpu
    }

    /// The spread terms' source part for a unit whose source goes from `old` to `new`.
    pub fn source_spread(&self, w: &Weights, old: Values, new: Values) -> f64 {
        let (xm, xc) = (old.mem - new.mem, old.cpu - new.cpu);
        w.mem * (2.0 * xm * (old.mem - self.mean_mem) - xm * xm)
            + w.cpu * (2.0 * xc * (old.cpu - self.mean_cpu) - xc * xc)
    }

    /// An upper bound on the target part of moving `u` (whose source drops by `drop`) to node
    /// `t`, which stands at `at`.
    #[allow(clippy::too_many_arguments)]
    pub fn target(
        &self,
        w: &Weights,
        sim: &Sim<'_>,
        balance: &Balance,
        u: &Unit,
        drop: Values,
        t: usize,
        at: Values,
    ) -> f64 {
        let xm = u.contribution.mem_used_gb * self.per_gib[t];
        let xc = u.contribution.cores_used * self.per_core[t];
        let (dm, dc) = (xm - drop.mem, xc - drop.cpu);
        let spread = w.mem * (-2.0 * xm * (at.mem - self.mean_mem) - xm * xm + dm * dm / self.n)
            + w.cpu * (-2.0 * xc * (at.cpu - self.mean_cpu) - xc * xc + dc * dc / self.n);
        let after = Values {
            mem: at.mem + xm,
            cpu: at.cpu + xc,
            iowait: at.iowait + u.contribution.io_points,
        };
        let mut bound = spread + balance.excess_gain(w, at, after) + SCORE_SLACK;
        for &(rule, k) in &u.pins {
            let off = |n: usize| f64::from(u8::from(!sim.groups.pin_allows(rule, n)));
            bound += w.pin * f64::from(k) * (off(u.node) - off(t));
        }
        for &(grp, _) in &u.affinity {
            if sim.groups.affinity_running(t, grp) > 0 {
                bound += w.affinity;
            }
        }
        bound
    }
}
