//! Trend and stability of a node's history (docs/engine.md §3).

use serde::{Deserialize, Serialize};

use crate::numeric::{mean, round_to, trunc};
use crate::view::HistorySample;

/// How far a fitted trend can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    High,
    Medium,
    Low,
}

impl Confidence {
    /// How much of the fitted rate counts toward the trend penalty.
    fn weight(self) -> f64 {
        match self {
            Confidence::High => 1.0,
            Confidence::Medium => 0.5,
            Confidence::Low => 0.0,
        }
    }
}

/// Direction of a fitted trend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    SustainedIncrease,
    Rising,
    Stable,
    Falling,
    SustainedDecrease,
    Unknown,
}

/// The trend of one metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricTrend {
    /// Least-squares slope in percentage points per day, two decimals.
    pub rate_per_day: f64,
    pub r_squared: f64,
    pub confidence: Confidence,
    pub direction: Direction,
    /// 0–100 from the coefficient of variation; higher is steadier.
    pub stability: f64,
}

impl MetricTrend {
    const NO_DATA: MetricTrend = MetricTrend {
        rate_per_day: 0.0,
        r_squared: 0.0,
        confidence: Confidence::Low,
        direction: Direction::Unknown,
        stability: 50.0,
    };

    /// The rate weighted by confidence, as the trend penalty reads it.
    pub fn weighted_rate(&self) -> f64 {
        self.rate_per_day * self.confidence.weight()
    }
}

/// Trend and stability of a node over its history window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrendAnalysis {
    pub cpu: MetricTrend,
    pub mem: MetricTrend,
    pub iowait: MetricTrend,
    /// `int(0.55·cpu + 0.15·mem + 0.30·iowait)` of the three stabilities.
    pub overall_stability: f64,
    /// Multiplies the CPU penalties: 0.7, 0.85, 1.0 or 1.3.
    pub cpu_stability_factor: f64,
    /// The CPU series' last fifth is more than 10 points above its first fifth.
    pub cpu_rising: bool,
    pub samples: usize,
}

/// The trend fields that score details carry.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrendSummary {
    pub cpu_rate_per_day: f64,
    pub cpu_confidence: Confidence,
    pub cpu_stability: f64,
    pub mem_stability: f64,
    pub iowait_stability: f64,
    pub overall_stability: f64,
    pub samples: usize,
}

impl TrendAnalysis {
    /// Analyses `history` (already limited to the last 168 h and sorted by time).
    pub fn of(history: &[HistorySample]) -> Self {
        let cpu: Vec<f64> = history.iter().map(|s| s.cpu).collect();
        let mem: Vec<f64> = history.iter().map(|s| s.mem).collect();
        let iowait: Vec<f64> = history.iter().map(|s| s.iowait).collect();
        let hours: Vec<f64> = history
            .iter()
            // in f64: timestamps come from outside and their difference may not fit an i64
            .map(|s| (s.t as f64 - history[0].t as f64) / 3600.0)
            .collect();
        let cpu = metric_trend(&hours, &cpu);
        let mem = metric_trend(&hours, &mem);
        let iowait = metric_trend(&hours, &iowait);
        let overall_stability =
            trunc(0.55 * cpu.stability + 0.15 * mem.stability + 0.30 * iowait.stability);
        TrendAnalysis {
            cpu,
            mem,
            iowait,
            overall_stability,
            cpu_stability_factor: stability_factor(overall_stability),
            cpu_rising: rising_label(history),
            samples: history.len(),
        }
    }

    /// The fields shown in score details.
    pub fn summary(&self) -> TrendSummary {
        TrendSummary {
            cpu_rate_per_day: self.cpu.rate_per_day,
            cpu_confidence: self.cpu.confidence,
            cpu_stability: self.cpu.stability,
            mem_stability: self.mem.stability,
            iowait_stability: self.iowait.stability,
            overall_stability: self.overall_stability,
            samples: self.samples,
        }
    }
}

/// The seed's phase 3: steady nodes have their CPU penalties cut, volatile ones inflated.
pub(crate) fn stability_factor(overall: f64) -> f64 {
    if overall >= 80.0 {
        0.7
    } else if overall >= 60.0 {
        0.85
    } else if overall < 40.0 {
        1.3
    } else {
        1.0
    }
}

fn metric_trend(hours: &[f64], values: &[f64]) -> MetricTrend {
    let n = values.len();
    if n < 4 {
        return MetricTrend::NO_DATA;
    }
    let mx = mean(hours.iter().copied());
    let my = mean(values.iter().copied());
    let (mut ss_xx, mut ss_yy, mut ss_xy) = (0.0, 0.0, 0.0);
    for (&x, &y) in hours.iter().zip(values) {
        ss_xx += (x - mx) * (x - mx);
        ss_yy += (y - my) * (y - my);
        ss_xy += (x - mx) * (y - my);
    }
    let slope = if ss_xx > 0.0 { ss_xy / ss_xx } else { 0.0 };
    let r_squared = if ss_yy == 0.0 {
        1.0
    } else if ss_xx == 0.0 {
        0.0
    } else {
        ss_xy * ss_xy / (ss_xx * ss_yy)
    };
    let rate_per_day = round_to(slope * 24.0, 2);
    let confidence = if r_squared >= 0.7 && n >= 12 {
        Confidence::High
    } else if r_squared >= 0.4 {
        Confidence::Medium
    } else {
        Confidence::Low
    };
    let direction = if rate_per_day >= 3.0 {
        Direction::SustainedIncrease
    } else if rate_per_day >= 0.5 {
        Direction::Rising
    } else if rate_per_day <= -3.0 {
        Direction::SustainedDecrease
    } else if rate_per_day <= -0.5 {
        Direction::Falling
    } else {
        Direction::Stable
    };
    let stdev = (ss_yy / (n - 1) as f64).sqrt();
    MetricTrend {
        rate_per_day,
        r_squared,
        confidence,
        direction,
        stability: stability_score(my, stdev),
    }
}

fn stability_score(mean: f64, stdev: f64) -> f64 {
    if mean == 0.0 {
        return 100.0;
    }
    let cv = stdev / mean.abs();
    if cv <= 0.10 {
        f64::max(90.0, 100.0 - trunc(100.0 * cv))
    } else if cv <= 0.20 {
        f64::max(70.0, 90.0 - trunc(200.0 * (cv - 0.1)))
    } else if cv <= 0.35 {
        f64::max(40.0, 70.0 - trunc(200.0 * (cv - 0.2)))
    } else {
        f64::max(5.0, 40.0 - trunc(100.0 * (cv - 0.35)))
    }
}

/// The collector-style label: mean of the last fifth minus mean of the first fifth above 10.
fn rising_label(history: &[HistorySample]) -> bool {
    let n = history.len();
    if n == 0 {
        return false;
    }
    let k = (n / 5).max(1);
    let first = mean(history[..k].iter().map(|s| s.cpu));
    let last = mean(history[n - k..].iter().map(|s| s.cpu));
    last - first > 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(cpu: &[f64]) -> Vec<HistorySample> {
        cpu.iter()
            .enumerate()
            .map(|(i, &c)| HistorySample {
                t: i as i64 * 3600,
                cpu: c,
                mem: 50.0,
                iowait: 0.0,
            })
            .collect()
    }

    #[test]
    fn fewer_than_four_samples_is_no_data() {
        let t = TrendAnalysis::of(&series(&[10.0, 90.0, 10.0]));
        assert_eq!(t.cpu, MetricTrend::NO_DATA);
        assert_eq!(t.overall_stability, 50.0);
        assert_eq!(t.cpu_stability_factor, 1.0);
    }

    #[test]
    fn flat_series_is_high_confidence_and_steady() {
        let t = TrendAnalysis::of(&series(&[92.0; 24]));
        assert_eq!(t.cpu.rate_per_day, 0.0);
        assert_eq!(t.cpu.r_squared, 1.0);
        assert_eq!(t.cpu.confidence, Confidence::High);
        assert_eq!(t.cpu.stability, 100.0);
        // a mean of 0 counts as perfectly steady
        assert_eq!(t.iowait.stability, 100.0);
        assert_eq!(t.cpu_stability_factor, 0.7);
    }

    #[test]
    fn linear_climb() {
        let cpu: Vec<f64> = (0..48).map(|i| 30.0 + i as f64 * 0.5).collect();
        let t = TrendAnalysis::of(&series(&cpu));
        assert_eq!(t.cpu.rate_per_day, 12.0);
        assert_eq!(t.cpu.confidence, Confidence::High);
        assert_eq!(t.cpu.direction, Direction::SustainedIncrease);
        assert!(t.cpu_rising);
    }

    #[test]
    fn extreme_timestamps_do_not_overflow() {
        let mut h = series(&[10.0, 20.0, 30.0, 40.0]);
        h[0].t = i64::MIN;
        h[3].t = i64::MAX;
        let t = TrendAnalysis::of(&h);
        assert_eq!(t.samples, 4);
        assert!(t.cpu.rate_per_day.is_finite());
    }

    #[test]
    fn stability_bands() {
        assert_eq!(stability_score(100.0, 5.0), 95.0);
        // 200 × (0.15 − 0.1) is 9.999… in f64, so int() gives 9
        assert_eq!(stability_score(100.0, 15.0), 81.0);
        assert_eq!(stability_score(100.0, 27.0), 56.0);
        assert_eq!(stability_score(100.0, 50.0), 25.0);
        assert_eq!(stability_score(10.0, 100.0), 5.0);
        assert_eq!(stability_factor(79.0), 0.85);
        assert_eq!(stability_factor(39.0), 1.3);
        assert_eq!(stability_factor(40.0), 1.0);
    }
}
