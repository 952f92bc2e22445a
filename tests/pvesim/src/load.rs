//! Load profiles: how a guest's (or a node's own) CPU, memory, disk and network load moves over
//! simulated time. Every value is a pure function of the scenario seed, the entity and the time,
//! so the RRD history served for any past instant agrees with what was "current" back then.

use serde::{Deserialize, Serialize};

use crate::prng::unit;

/// Bytes in one "MB" of the scenario's `*_mb_s` rates (decimal megabytes, like disk vendors and
/// the engine's "100 MB/s").
pub const MB: f64 = 1_000_000.0;

/// Samples are produced on pvestatd's 10-second grid.
pub const SAMPLE_STEP: i64 = 10;

/// The shape of a load profile over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// Constant level plus noise.
    #[default]
    Steady,
    /// A day/night cycle: `1 + amplitude·cos(2π(hour − peak_hour)/24)`.
    Diurnal,
    /// Baseline with bursts: in each window of `spike_minutes`, with probability
    /// `spike_probability`, the level is multiplied by `1 + amplitude`.
    Spiky,
    /// Rising (or falling) linearly: `1 + growth_per_day × days since scenario start`; memory
    /// grows with it.
    Growing,
    /// A level change at `step_at_hours` relative to the scenario start: `1` before, `1 + amplitude` after.
    Step,
    /// Steady, with heavy disk I/O by default (80 MB/s read, 120 MB/s write unless given).
    IoHeavy,
}

/// A load profile. For a guest, `cpu` is the fraction of its own vCPUs and `mem` the fraction of
/// its maximum memory in use; for a node (its own host load, beside its guests) `cpu` is the
/// fraction of all host threads and `iowait` the base IOWait fraction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadSpec {
    /// How the level moves over time.
    pub shape: Shape,
    /// Baseline CPU fraction (0..1).
    pub cpu: f64,
    /// Fraction of maximum memory in use (guests only, 0..1).
    pub mem: f64,
    /// Base IOWait fraction (nodes only, 0..1).
    pub iowait: f64,
    /// Disk read rate in MB/s (guests only). `None` means 0.5, or 80 for `io_heavy`.
    pub disk_read_mb_s: Option<f64>,
    /// Disk write rate in MB/s (guests only). `None` means 0.5, or 120 for `io_heavy`.
    pub disk_write_mb_s: Option<f64>,
    /// Network receive rate in MB/s (guests only).
    pub net_in_mb_s: f64,
    /// Network send rate in MB/s (guests only).
    pub net_out_mb_s: f64,
    /// Relative swing of `diurnal`, burst height of `spiky`, level change of `step`.
    pub amplitude: f64,
    /// Relative random noise on every 10-second sample (0.05 = ±5 %).
    pub noise: f64,
    /// Hour of day (UTC) of the diurnal maximum.
    pub peak_hour: f64,
    /// Probability that a `spiky` window is a burst.
    pub spike_probability: f64,
    /// Length of a `spiky` window in minutes.
    pub spike_minutes: u32,
    /// Relative growth per day of `growing`.
    pub growth_per_day: f64,
    /// When a `step` happens, in hours relative to the scenario start (negative = in the past).
    pub step_at_hours: f64,
}

impl Default for LoadSpec {
    fn default() -> Self {
        Self {
            shape: Shape::Steady,
            cpu: 0.1,
            mem: 0.5,
            iowait: 0.005,
            disk_read_mb_s: None,
            disk_write_mb_s: None,
            net_in_mb_s: 0.2,
            net_out_mb_s: 0.2,
            amplitude: 0.5,
            noise: 0.05,
            peak_hour: 14.0,
            spike_probability: 0.2,
            spike_minutes: 60,
            growth_per_day: 0.05,
            step_at_hours: -1.0,
        }
    }
}

/// One instantaneous sample of a load profile (rates in bytes per second).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LoadSample {
    /// CPU fraction (0..1).
    pub cpu: f64,
    /// Memory fraction (0..1).
    pub mem: f64,
    /// IOWait fraction (node base only).
    pub iowait: f64,
    /// Disk read bytes/s.
    pub disk_read: f64,
    /// Disk write bytes/s.
    pub disk_write: f64,
    /// Network receive bytes/s.
    pub net_in: f64,
    /// Network send bytes/s.
    pub net_out: f64,
}

// Noise streams, one per metric so they are independent.
const S_CPU: u64 = 1;
const S_MEM: u64 = 2;
const S_IOW: u64 = 3;
const S_DR: u64 = 4;
const S_DW: u64 = 5;
const S_NI: u64 = 6;
const S_NO: u64 = 7;
const S_SPIKE: u64 = 8;

impl LoadSpec {
    /// The disk read rate in MB/s after applying the shape's default.
    pub fn disk_read(&self) -> f64 {
        self.disk_read_mb_s
            .unwrap_or(if self.shape == Shape::IoHeavy {
                80.0
            } else {
                0.5
            })
    }

    /// The disk write rate in MB/s after applying the shape's default.
    pub fn disk_write(&self) -> f64 {
        self.disk_write_mb_s
            .unwrap_or(if self.shape == Shape::IoHeavy {
                120.0
            } else {
                0.5
            })
    }

    /// The shape multiplier at time `t` for an entity (before noise). Never negative.
    pub fn factor(&self, seed: u64, entity: u64, t: f64, start: f64) -> f64 {
        let f = match self.shape {
            Shape::Steady | Shape::IoHeavy => 1.0,
            Shape::Diurnal => {
                let hour = (t.rem_euclid(86_400.0)) / 3600.0;
                1.0 + self.amplitude
                    * (2.0 * std::f64::consts::PI * (hour - self.peak_hour) / 24.0).cos()
            }
            Shape::Spiky => {
                let window = (self.spike_minutes.max(1) as f64) * 60.0;
                let w = (t / window).floor() as i64;
                if unit(seed, entity, S_SPIKE, w) < self.spike_probability {
                    1.0 + self.amplitude
                } else {
                    1.0
                }
            }
            Shape::Growing => 1.0 + self.growth_per_day * (t - start) / 86_400.0,
            Shape::Step => {
                if t < start + self.step_at_hours * 3600.0 {
                    1.0
                } else {
                    1.0 + self.amplitude
                }
            }
        };
        f.max(0.0)
    }

    fn noisy(&self, seed: u64, entity: u64, stream: u64, bucket: i64) -> f64 {
        1.0 + self.noise * (2.0 * unit(seed, entity, stream, bucket) - 1.0)
    }

    /// The profile's sample at time `t` (epoch seconds). The value is constant within one
    /// 10-second pvestatd tick.
    pub fn sample(&self, seed: u64, entity: u64, t: f64, start: f64) -> LoadSample {
        let bucket = (t / SAMPLE_STEP as f64).floor() as i64;
        let tick = (bucket * SAMPLE_STEP) as f64;
        let f = self.factor(seed, entity, tick, start);
        let n = |s| self.noisy(seed, entity, s, bucket);
        let mem_growth = if self.shape == Shape::Growing { f } else { 1.0 };
        let mem_noise = 1.0 + 0.2 * (n(S_MEM) - 1.0);
        LoadSample {
            cpu: (self.cpu * f * n(S_CPU)).clamp(0.0, 1.0),
            mem: (self.mem * mem_growth * mem_noise).clamp(0.0, 1.0),
            iowait: (self.iowait * f * n(S_IOW)).clamp(0.0, 1.0),
            disk_read: (self.disk_read() * MB * f * n(S_DR)).max(0.0),
            disk_write: (self.disk_write() * MB * f * n(S_DW)).max(0.0),
            net_in: (self.net_in_mb_s * MB * f * n(S_NI)).max(0.0),
            net_out: (self.net_out_mb_s * MB * f * n(S_NO)).max(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spiky() -> LoadSpec {
        LoadSpec {
            shape: Shape::Spiky,
            cpu: 0.2,
            amplitude: 3.0,
            spike_probability: 0.3,
            ..Default::default()
        }
    }

    #[test]
    fn samples_repeat_for_a_seed_and_differ_across_seeds() {
        let p = spiky();
        let a: Vec<_> = (0..500)
            .map(|i| p.sample(9, 101, i as f64 * 37.0, 0.0))
            .collect();
        let b: Vec<_> = (0..500)
            .map(|i| p.sample(9, 101, i as f64 * 37.0, 0.0))
            .collect();
        assert_eq!(a, b);
        let c: Vec<_> = (0..500)
            .map(|i| p.sample(10, 101, i as f64 * 37.0, 0.0))
            .collect();
        assert_ne!(a, c);
    }

    #[test]
    fn constant_within_a_tick() {
        let p = LoadSpec {
            noise: 0.3,
            ..Default::default()
        };
        assert_eq!(p.sample(1, 1, 100.0, 0.0), p.sample(1, 1, 109.9, 0.0));
    }

    #[test]
    fn shapes_behave_as_documented() {
        let d = LoadSpec {
            shape: Shape::Diurnal,
            amplitude: 0.5,
            peak_hour: 14.0,
            ..Default::default()
        };
        assert!((d.factor(0, 0, 14.0 * 3600.0, 0.0) - 1.5).abs() < 1e-9);
        assert!((d.factor(0, 0, 2.0 * 3600.0, 0.0) - 0.5).abs() < 1e-9);
        let g = LoadSpec {
            shape: Shape::Growing,
            growth_per_day: 0.1,
            ..Default::default()
        };
        assert!((g.factor(0, 0, 86_400.0 * 2.0, 0.0) - 1.2).abs() < 1e-9);
        let s = LoadSpec {
            shape: Shape::Step,
            amplitude: 4.0,
            step_at_hours: -1.0,
            ..Default::default()
        };
        assert_eq!(s.factor(0, 0, -7200.0, 0.0), 1.0);
        assert_eq!(s.factor(0, 0, -1800.0, 0.0), 5.0);
        let io = LoadSpec {
            shape: Shape::IoHeavy,
            ..Default::default()
        };
        assert_eq!(io.disk_write(), 120.0);
    }

    #[test]
    fn spiky_hourly_means_are_volatile() {
        let p = spiky();
        let hourly: Vec<f64> = (0..168)
            .map(|h| {
                (0..360)
                    .map(|k| p.sample(3, 7, (h * 3600 + k * 10) as f64, 0.0).cpu)
                    .sum::<f64>()
                    / 360.0
            })
            .collect();
        let mean = hourly.iter().sum::<f64>() / hourly.len() as f64;
        let var =
            hourly.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (hourly.len() - 1) as f64;
        assert!(var.sqrt() / mean > 0.35, "cv {}", var.sqrt() / mean);
    }
}
