//! Overload detection with hysteresis, per node and reason. Pure: the caller feeds one
//! evaluation per completed cycle and publishes the transitions it gets back.
//!
//! A reason is `raised` after `raise_cycles` consecutive cycles over its threshold, and
//! `cleared` after `clear_cycles` consecutive cycles below the clear level (threshold minus the
//! margin). Values between the clear level and the threshold keep the current state, so a node
//! hovering around a threshold does not flap.

use proxbalance_proto::v1::{OverloadClearCause, OverloadReason, OverloadState};

use crate::config::OverloadConfig;

/// The reasons, in the order they are evaluated and reported.
pub const REASONS: [OverloadReason; 4] = [
    OverloadReason::Cpu,
    OverloadReason::Memory,
    OverloadReason::Iowait,
    OverloadReason::MemOvercommit,
];

/// The figures of one node in one cycle that overload is decided on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// Observation time, unix ms.
    pub at_ms: i64,
    /// CPU, percent.
    pub cpu: f64,
    /// Memory used, percent.
    pub mem: f64,
    /// IOWait, percent.
    pub iowait: f64,
    /// 24-hour averages, when known (`cpu`, `mem`, `iowait`).
    pub avg_24h: Option<(f64, f64, f64)>,
    /// Committed memory over total memory.
    pub overcommit_ratio: f64,
}

/// The thresholds overload is judged against (percent; the ratio for overcommit).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub cpu: f64,
    pub mem: f64,
    pub iowait: f64,
}

/// One transition.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub reason: OverloadReason,
    pub state: OverloadState,
    pub value: f64,
    pub avg_24h: Option<f64>,
    pub threshold: f64,
    /// When the condition began (raised) or when the value first fell below the clear level
    /// (cleared), unix ms.
    pub since_ms: i64,
    pub at_ms: i64,
    /// Why a `cleared` transition cleared (unspecified for `raised`).
    pub clear_cause: OverloadClearCause,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct ReasonState {
    raised: bool,
    /// Consecutive cycles pointing to the other state.
    streak: u32,
    /// Start of the current streak, unix ms.
    streak_since_ms: i64,
}

/// The overload state of one node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeOverload {
    states: [ReasonState; 4],
}

impl NodeOverload {
    /// The reasons currently raised.
    pub fn raised(&self) -> Vec<OverloadReason> {
        REASONS
            .iter()
            .zip(&self.states)
            .filter(|(_, s)| s.raised)
            .map(|(r, _)| *r)
            .collect()
    }

    /// Clears every raised reason at `at_ms` for `cause` (the node went offline, stale or
    /// away): no reading decides it, so the value is 0. The hysteresis starts over, so a node
    /// back over a threshold is raised again after `raise_cycles`. Nothing when none is raised.
    pub fn clear_all(
        &mut self,
        at_ms: i64,
        cause: OverloadClearCause,
        limits: &Limits,
        cfg: &OverloadConfig,
    ) -> Vec<Transition> {
        let thresholds = [
            limits.cpu,
            limits.mem,
            limits.iowait,
            cfg.overcommit_threshold,
        ];
        let mut out = Vec::new();
        for ((reason, st), threshold) in REASONS.iter().zip(&mut self.states).zip(thresholds) {
            if st.raised {
                out.push(Transition {
                    reason: *reason,
                    state: OverloadState::Cleared,
                    value: 0.0,
                    avg_24h: None,
                    threshold,
                    since_ms: at_ms,
                    at_ms,
                    clear_cause: cause,
                });
            }
            *st = ReasonState::default();
        }
        out
    }

    /// Evaluates one cycle and returns the transitions, in [`REASONS`] order.
    pub fn evaluate(
        &mut self,
        r: &Reading,
        limits: &Limits,
        cfg: &OverloadConfig,
    ) -> Vec<Transition> {
        let m = cfg.clear_margin;
        let avg = r.avg_24h;
        // (value, avg, threshold, over, below the clear level)
        let iow_avg = avg.map_or(r.iowait, |a| a.2);
        let checks = [
            (
                r.cpu,
                avg.map(|a| a.0),
                limits.cpu,
                r.cpu > limits.cpu,
                r.cpu < limits.cpu - m,
            ),
            (
                r.mem,
                avg.map(|a| a.1),
                limits.mem,
                r.mem > limits.mem,
                r.mem < limits.mem - m,
            ),
            (
                r.iowait,
                avg.map(|a| a.2),
                limits.iowait,
                r.iowait > limits.iowait && iow_avg > 0.7 * limits.iowait,
                r.iowait < limits.iowait - m,
            ),
            (
                r.overcommit_ratio,
                None,
                cfg.overcommit_threshold,
                r.overcommit_ratio > cfg.overcommit_threshold,
                r.overcommit_ratio < cfg.overcommit_threshold - cfg.overcommit_clear_margin,
            ),
        ];
        let mut out = Vec::new();
        for ((reason, st), (value, avg, threshold, over, clear)) in
            REASONS.iter().zip(self.states.iter_mut()).zip(checks)
        {
            let towards_other = if st.raised { clear } else { over };
            if towards_other {
                if st.streak == 0 {
                    st.streak_since_ms = r.at_ms;
                }
                st.streak += 1;
                let needed = if st.raised {
                    cfg.clear_cycles
                } else {
                    cfg.raise_cycles
                };
                if st.streak >= needed {
                    st.raised = !st.raised;
                    st.streak = 0;
                    out.push(Transition {
                        reason: *reason,
                        state: if st.raised {
                            OverloadState::Raised
                        } else {
                            OverloadState::Cleared
                        },
                        value,
                        avg_24h: avg,
                        threshold,
                        since_ms: st.streak_since_ms,
                        at_ms: r.at_ms,
                        clear_cause: if st.raised {
                            OverloadClearCause::Unspecified
                        } else {
                            OverloadClearCause::BelowThreshold
                        },
                    });
                }
            } else {
                // Back on the current side, or between the two levels: the streak starts over.
                st.streak = 0;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(at: i64, cpu: f64) -> Reading {
        Reading {
            at_ms: at,
            cpu,
            mem: 10.0,
            iowait: 1.0,
            avg_24h: Some((cpu, 10.0, 1.0)),
            overcommit_ratio: 0.5,
        }
    }

    const LIMITS: Limits = Limits {
        cpu: 60.0,
        mem: 70.0,
        iowait: 30.0,
    };

    fn states(t: &[Transition]) -> Vec<(OverloadReason, OverloadState, i64, i64)> {
        t.iter()
            .map(|t| (t.reason, t.state, t.since_ms, t.at_ms))
            .collect()
    }

    #[test]
    fn raise_then_exactly_one_clear_after_the_hysteresis() {
        let cfg = OverloadConfig::default(); // margin 5, clear after 3 cycles
        let mut n = NodeOverload::default();
        let mut all = Vec::new();
        // 50, 65 (raise), 58 (between 55 and 60: stays raised), 50, 62 (resets), 50, 50, 50 (clear), 50
        for (i, cpu) in [50.0, 65.0, 58.0, 50.0, 62.0, 50.0, 50.0, 50.0, 50.0]
            .into_iter()
            .enumerate()
        {
            all.extend(n.evaluate(&reading(i as i64 * 10, cpu), &LIMITS, &cfg));
        }
        assert_eq!(
            states(&all),
            vec![
                (OverloadReason::Cpu, OverloadState::Raised, 10, 10),
                (OverloadReason::Cpu, OverloadState::Cleared, 50, 70),
            ]
        );
        assert!(n.raised().is_empty());
    }

    #[test]
    fn clearing_all_reports_each_raised_reason_once_and_starts_over() {
        let cfg = OverloadConfig::default();
        let mut n = NodeOverload::default();
        let mut r = reading(0, 65.0);
        r.overcommit_ratio = 1.3;
        assert_eq!(n.evaluate(&r, &LIMITS, &cfg).len(), 2);
        let cleared = n.clear_all(50, OverloadClearCause::NodeStale, &LIMITS, &cfg);
        assert_eq!(
            cleared
                .iter()
                .map(|t| (
                    t.reason,
                    t.state,
                    t.since_ms,
                    t.at_ms,
                    t.threshold,
                    t.clear_cause
                ))
                .collect::<Vec<_>>(),
            vec![
                (
                    OverloadReason::Cpu,
                    OverloadState::Cleared,
                    50,
                    50,
                    60.0,
                    OverloadClearCause::NodeStale
                ),
                (
                    OverloadReason::MemOvercommit,
                    OverloadState::Cleared,
                    50,
                    50,
                    1.2,
                    OverloadClearCause::NodeStale
                ),
            ]
        );
        assert!(n.raised().is_empty());
        assert!(
            n.clear_all(60, OverloadClearCause::NodeStale, &LIMITS, &cfg)
                .is_empty()
        );
        // Back over the threshold: raised again, a new episode.
        let t = n.evaluate(&reading(70, 65.0), &LIMITS, &cfg);
        assert_eq!(
            states(&t),
            vec![(OverloadReason::Cpu, OverloadState::Raised, 70, 70)]
        );
    }

    #[test]
    fn iowait_needs_the_24h_average_too_and_overcommit_uses_the_ratio() {
        let cfg = OverloadConfig::default();
        let mut n = NodeOverload::default();
        let mut r = reading(0, 10.0);
        r.iowait = 35.0;
        r.avg_24h = Some((10.0, 10.0, 8.0));
        r.overcommit_ratio = 1.3;
        let t = n.evaluate(&r, &LIMITS, &cfg);
        assert_eq!(
            states(&t),
            vec![(OverloadReason::MemOvercommit, OverloadState::Raised, 0, 0)]
        );
        r.avg_24h = Some((10.0, 10.0, 25.0));
        r.at_ms = 10;
        let t = n.evaluate(&r, &LIMITS, &cfg);
        assert_eq!(
            states(&t),
            vec![(OverloadReason::Iowait, OverloadState::Raised, 10, 10)]
        );
        assert_eq!(t[0].avg_24h, Some(25.0));
        assert_eq!(
            n.raised(),
            vec![OverloadReason::Iowait, OverloadReason::MemOvercommit]
        );
    }
}
