//! Multi-resolution rolling windows of one node's load (ARCHITECTURE.md, "Recommender state").
//!
//! A [`NodeWindow`] keeps three views of the same series, each in a fixed amount of memory:
//!
//! - the raw samples of the last hour (at most [`RAW_CAPACITY`], the oldest dropped first);
//! - 1-minute buckets covering 24 hours ([`MINUTE_BUCKETS`]), for the 24-hour averages and maxima;
//! - 30-minute buckets covering 7 days ([`HALF_HOUR_BUCKETS`]), for the weekly figures, the
//!   24-hour load average and the hourly series that trend and stability are computed from.
//!
//! Buckets live in rings indexed by their absolute slot (minutes or half hours since the epoch),
//! so memory never grows with uptime and an old slot is simply overwritten by a newer one.
//!
//! Live samples ([`NodeWindow::record`]) and history ([`NodeWindow::seed`], e.g. the RRD series
//! PVE keeps) meet in the same buckets: a seeded bucket is replaced by the first live sample that
//! falls into it, and seeding never touches a bucket that holds live data. The result therefore
//! does not depend on whether history arrives before or after the live samples.
//!
//! Percentages are 0–100, load is the raw load average, time is unix milliseconds. Values are
//! kept as `f32` in buckets to keep a node's windows under 64 KiB.

use std::collections::VecDeque;

use crate::view::HistorySample;

/// Most raw samples kept (one every 10 s for an hour).
pub const RAW_CAPACITY: usize = 360;
/// 1-minute buckets: 24 hours.
pub const MINUTE_BUCKETS: usize = 24 * 60;
/// 30-minute buckets: 7 days.
pub const HALF_HOUR_BUCKETS: usize = 7 * 48;

const MINUTE_MS: i64 = 60_000;
const HALF_HOUR_MS: i64 = 30 * MINUTE_MS;
const HOUR_MS: i64 = 2 * HALF_HOUR_MS;
const RAW_SPAN_MS: i64 = HOUR_MS;
const DAY_MS: i64 = 24 * HOUR_MS;
const WEEK_MS: i64 = 7 * DAY_MS;
/// The longest interval one history point is taken to describe.
const MAX_SEED_SPAN_MS: i64 = 3 * HOUR_MS;
/// Marks a bucket whose values come from history rather than live samples.
const SEEDED: u16 = 0x8000;
const COUNT_MASK: u16 = 0x7fff;

/// One observation of a node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Unix milliseconds.
    pub t_ms: i64,
    /// CPU, percent.
    pub cpu: f64,
    /// Memory used, percent of the node's memory.
    pub mem: f64,
    /// IOWait, percent.
    pub iowait: f64,
    /// Load average (1 minute).
    pub load: f64,
}

impl Sample {
    fn is_valid(&self) -> bool {
        [self.cpu, self.mem, self.iowait, self.load]
            .iter()
            .all(|v| v.is_finite() && *v >= 0.0)
    }
}

/// Averages and maxima over a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowStats {
    pub avg_cpu: f64,
    pub max_cpu: f64,
    pub avg_mem: f64,
    pub max_mem: f64,
    pub avg_iowait: f64,
    pub avg_load: f64,
    /// Buckets that held data.
    pub buckets: usize,
}

#[derive(Debug, Clone, Copy)]
struct RawSample {
    t_ms: i64,
    cpu: f32,
    mem: f32,
    iowait: f32,
    load: f32,
}

/// A 1-minute bucket (28 bytes): slot, sample count with the seeded flag, sums and maxima.
#[derive(Debug, Clone, Copy, Default)]
struct MinuteBucket {
    slot: u32,
    count: u16,
    cpu_sum: f32,
    mem_sum: f32,
    iowait_sum: f32,
    cpu_max: f32,
    mem_max: f32,
}

/// A 30-minute bucket (32 bytes): like [`MinuteBucket`] plus the load sum.
#[derive(Debug, Clone, Copy, Default)]
struct HalfHourBucket {
    slot: u32,
    count: u16,
    cpu_sum: f32,
    mem_sum: f32,
    iowait_sum: f32,
    load_sum: f32,
    cpu_max: f32,
    mem_max: f32,
}

/// What both bucket kinds have in common.
trait Bucket: Copy + Default {
    fn slot(&self) -> u32;
    fn count(&self) -> u16;
    /// Starts the bucket over for `slot` with one sample.
    fn reset(&mut self, slot: u32, s: &Sample, seeded: bool);
    /// Adds a live sample to a live bucket.
    fn add(&mut self, s: &Sample);
    fn is_seeded(&self) -> bool {
        self.count() & SEEDED != 0
    }
    fn samples(&self) -> u16 {
        self.count() & COUNT_MASK
    }
}

impl Bucket for MinuteBucket {
    fn slot(&self) -> u32 {
        self.slot
    }
    fn count(&self) -> u16 {
        self.count
    }
    fn reset(&mut self, slot: u32, s: &Sample, seeded: bool) {
        *self = MinuteBucket {
            slot,
            count: if seeded { SEEDED | 1 } else { 1 },
            cpu_sum: s.cpu as f32,
            mem_sum: s.mem as f32,
            iowait_sum: s.iowait as f32,
            cpu_max: s.cpu as f32,
            mem_max: s.mem as f32,
        };
    }
    fn add(&mut self, s: &Sample) {
        if self.samples() < COUNT_MASK {
            self.count += 1;
            self.cpu_sum += s.cpu as f32;
            self.mem_sum += s.mem as f32;
            self.iowait_sum += s.iowait as f32;
        }
        self.cpu_max = self.cpu_max.max(s.cpu as f32);
        self.mem_max = self.mem_max.max(s.mem as f32);
    }
}

impl Bucket for HalfHourBucket {
    fn slot(&self) -> u32 {
        self.slot
    }
    fn count(&self) -> u16 {
        self.count
    }
    fn reset(&mut self, slot: u32, s: &Sample, seeded: bool) {
        *self = HalfHourBucket {
            slot,
            count: if seeded { SEEDED | 1 } else { 1 },
            cpu_sum: s.cpu as f32,
            mem_sum: s.mem as f32,
            iowait_sum: s.iowait as f32,
            load_sum: s.load as f32,
            cpu_max: s.cpu as f32,
            mem_max: s.mem as f32,
        };
    }
    fn add(&mut self, s: &Sample) {
        if self.samples() < COUNT_MASK {
            self.count += 1;
            self.cpu_sum += s.cpu as f32;
            self.mem_sum += s.mem as f32;
            self.iowait_sum += s.iowait as f32;
            self.load_sum += s.load as f32;
        }
        self.cpu_max = self.cpu_max.max(s.cpu as f32);
        self.mem_max = self.mem_max.max(s.mem as f32);
    }
}

/// A ring of buckets indexed by absolute slot; allocated in full on first use.
#[derive(Debug, Clone)]
struct Ring<B> {
    width_ms: i64,
    buckets: Box<[B]>,
    len: usize,
}

impl<B: Bucket> Ring<B> {
    fn new(width_ms: i64, len: usize) -> Self {
        Ring {
            width_ms,
            buckets: Box::default(),
            len,
        }
    }

    /// The slot of `t_ms`, or `None` before 1970 or past the year 10,000.
    fn slot_of(&self, t_ms: i64) -> Option<u32> {
        u32::try_from(t_ms.div_euclid(self.width_ms)).ok()
    }

    fn cell(&mut self, slot: u32) -> &mut B {
        if self.buckets.is_empty() {
            self.buckets = vec![B::default(); self.len].into_boxed_slice();
        }
        &mut self.buckets[slot as usize % self.len]
    }

    fn get(&self, slot: u32) -> Option<&B> {
        let b = self.buckets.get(slot as usize % self.len)?;
        (b.samples() > 0 && b.slot() == slot).then_some(b)
    }

    fn record(&mut self, s: &Sample) {
        let Some(slot) = self.slot_of(s.t_ms) else {
            return;
        };
        let b = self.cell(slot);
        if b.samples() == 0 || slot > b.slot() || (slot == b.slot() && b.is_seeded()) {
            b.reset(slot, s, false);
        } else if slot == b.slot() {
            b.add(s);
        }
        // slot < b.slot(): the cell already holds a newer slot; the sample is too old to keep.
    }

    fn seed(&mut self, s: &Sample) {
        let Some(slot) = self.slot_of(s.t_ms) else {
            return;
        };
        let b = self.cell(slot);
        if b.samples() == 0 || slot > b.slot() || (slot == b.slot() && b.is_seeded()) {
            b.reset(slot, s, true);
        }
    }

    /// Buckets with data whose slot lies in `(now − span, now]`, oldest first.
    fn within(&self, now_ms: i64, span_ms: i64) -> impl Iterator<Item = &B> {
        let last = self.slot_of(now_ms);
        let first = self.slot_of(now_ms - span_ms + self.width_ms);
        let range = match (first, last) {
            (Some(f), Some(l)) if f <= l => Some(f..=l),
            (None, Some(l)) => Some(0..=l),
            _ => None,
        };
        range
            .into_iter()
            .flatten()
            .filter_map(move |slot| self.get(slot))
    }

    fn heap_bytes(&self) -> usize {
        self.len * std::mem::size_of::<B>()
    }
}

/// The rolling windows of one node. See the module documentation.
#[derive(Debug, Clone)]
pub struct NodeWindow {
    raw: VecDeque<RawSample>,
    minutes: Ring<MinuteBucket>,
    half_hours: Ring<HalfHourBucket>,
    latest: Option<Sample>,
}

impl Default for NodeWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeWindow {
    /// Empty windows.
    pub fn new() -> Self {
        NodeWindow {
            raw: VecDeque::new(),
            minutes: Ring::new(MINUTE_MS, MINUTE_BUCKETS),
            half_hours: Ring::new(HALF_HOUR_MS, HALF_HOUR_BUCKETS),
            latest: None,
        }
    }

    /// Adds a live sample. Samples with a negative or non-finite value are ignored.
    pub fn record(&mut self, s: Sample) {
        if !s.is_valid() {
            return;
        }
        if self.latest.is_none_or(|l| s.t_ms >= l.t_ms) {
            self.latest = Some(s);
        }
        let newest = self.latest.map_or(s.t_ms, |l| l.t_ms);
        if s.t_ms > newest - RAW_SPAN_MS {
            let raw = RawSample {
                t_ms: s.t_ms,
                cpu: s.cpu as f32,
                mem: s.mem as f32,
                iowait: s.iowait as f32,
                load: s.load as f32,
            };
            let at = self.raw.partition_point(|r| r.t_ms <= s.t_ms);
            self.raw.insert(at, raw);
            while self
                .raw
                .front()
                .is_some_and(|r| r.t_ms <= newest - RAW_SPAN_MS)
            {
                self.raw.pop_front();
            }
            while self.raw.len() > RAW_CAPACITY {
                self.raw.pop_front();
            }
        }
        self.minutes.record(&s);
        self.half_hours.record(&s);
    }

    /// Seeds the buckets from history: `day` points fill 1-minute buckets, `week` points
    /// 30-minute buckets. Each point describes the interval since the point before it (as an RRD
    /// average does), at most 3 hours; the first point of a series is taken to cover the series'
    /// smallest spacing. Buckets with live data are left alone, and points with a negative or
    /// non-finite value are skipped.
    pub fn seed(&mut self, day: &[Sample], week: &[Sample]) {
        for (points, minutes) in [(day, true), (week, false)] {
            let mut pts: Vec<Sample> = points.iter().copied().filter(Sample::is_valid).collect();
            pts.sort_by_key(|p| p.t_ms);
            pts.dedup_by_key(|p| p.t_ms);
            let spacing = pts
                .windows(2)
                .map(|w| w[1].t_ms - w[0].t_ms)
                .min()
                .unwrap_or(MINUTE_MS)
                .clamp(1, MAX_SEED_SPAN_MS);
            let width = if minutes { MINUTE_MS } else { HALF_HOUR_MS };
            let mut prev: Option<i64> = None;
            for p in &pts {
                let span = prev.map_or(spacing, |t| (p.t_ms - t).clamp(1, MAX_SEED_SPAN_MS));
                prev = Some(p.t_ms);
                // Cover (t − span, t]: the buckets from the one holding t − span to the one
                // holding the last instant before t.
                let lo = (p.t_ms - span).div_euclid(width);
                let hi = (p.t_ms - 1).div_euclid(width);
                for slot in lo..=hi {
                    let at = Sample {
                        t_ms: slot * width,
                        ..*p
                    };
                    if minutes {
                        self.minutes.seed(&at);
                    } else {
                        self.half_hours.seed(&at);
                    }
                }
            }
        }
    }

    /// The newest live sample.
    pub fn latest(&self) -> Option<Sample> {
        self.latest
    }

    /// The raw samples of the last hour, oldest first.
    pub fn raw(&self) -> impl Iterator<Item = Sample> + '_ {
        self.raw.iter().map(|r| Sample {
            t_ms: r.t_ms,
            cpu: f64::from(r.cpu),
            mem: f64::from(r.mem),
            iowait: f64::from(r.iowait),
            load: f64::from(r.load),
        })
    }

    /// Averages and maxima of the 24 hours up to `now_ms` (1-minute buckets; the load average
    /// from the 30-minute buckets). `None` without data in that window.
    pub fn day_stats(&self, now_ms: i64) -> Option<WindowStats> {
        let mut acc = Acc::default();
        for b in self.minutes.within(now_ms, DAY_MS) {
            acc.add(b.cpu_sum, b.mem_sum, b.iowait_sum, b.samples());
            acc.max(b.cpu_max, b.mem_max);
        }
        let mut load = Acc::default();
        for b in self.half_hours.within(now_ms, DAY_MS) {
            load.add(b.load_sum, 0.0, 0.0, b.samples());
        }
        acc.finish(load.cpu_mean())
    }

    /// Averages and maxima of the 7 days up to `now_ms` (30-minute buckets).
    pub fn week_stats(&self, now_ms: i64) -> Option<WindowStats> {
        let mut acc = Acc::default();
        let mut load = Acc::default();
        for b in self.half_hours.within(now_ms, WEEK_MS) {
            acc.add(b.cpu_sum, b.mem_sum, b.iowait_sum, b.samples());
            acc.max(b.cpu_max, b.mem_max);
            load.add(b.load_sum, 0.0, 0.0, b.samples());
        }
        acc.finish(load.cpu_mean())
    }

    /// One sample per hour for the 168 hours up to `now_ms` (the current hour included), each the mean of that hour's
    /// 30-minute buckets, stamped with the hour's start (unix seconds); hours without data are
    /// left out.
    pub fn hourly(&self, now_ms: i64) -> Vec<HistorySample> {
        let mut out: Vec<HistorySample> = Vec::new();
        let mut current: Option<(i64, Acc)> = None;
        let first_hour = now_ms.div_euclid(HOUR_MS) - 167;
        for b in self.half_hours.within(now_ms, WEEK_MS) {
            let hour = i64::from(b.slot) * HALF_HOUR_MS / HOUR_MS;
            if hour < first_hour {
                continue;
            }
            let mut acc = match current.take() {
                Some((h, acc)) if h == hour => acc,
                Some((h, acc)) => {
                    out.extend(acc.hour_sample(h));
                    Acc::default()
                }
                None => Acc::default(),
            };
            acc.add(b.cpu_sum, b.mem_sum, b.iowait_sum, b.samples());
            current = Some((hour, acc));
        }
        if let Some((h, acc)) = current {
            out.extend(acc.hour_sample(h));
        }
        out
    }

    /// Bytes this window holds on the heap and inline, at most (the rings once allocated, the
    /// raw samples at capacity): the figure the memory budget of a tracked node is checked on.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.minutes.heap_bytes()
            + self.half_hours.heap_bytes()
            + self.raw.capacity().max(RAW_CAPACITY + 1) * std::mem::size_of::<RawSample>()
    }
}

/// Mean of bucket means (time-weighted: every bucket counts once) and maxima.
#[derive(Debug, Default, Clone, Copy)]
struct Acc {
    n: usize,
    cpu: f64,
    mem: f64,
    iowait: f64,
    cpu_max: f64,
    mem_max: f64,
}

impl Acc {
    fn add(&mut self, cpu_sum: f32, mem_sum: f32, iowait_sum: f32, samples: u16) {
        if samples == 0 {
            return;
        }
        let k = f64::from(samples);
        self.n += 1;
        self.cpu += f64::from(cpu_sum) / k;
        self.mem += f64::from(mem_sum) / k;
        self.iowait += f64::from(iowait_sum) / k;
    }

    fn max(&mut self, cpu: f32, mem: f32) {
        self.cpu_max = self.cpu_max.max(f64::from(cpu));
        self.mem_max = self.mem_max.max(f64::from(mem));
    }

    fn cpu_mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.cpu / self.n as f64
        }
    }

    fn finish(self, avg_load: f64) -> Option<WindowStats> {
        (self.n > 0).then(|| {
            let n = self.n as f64;
            WindowStats {
                avg_cpu: self.cpu / n,
                max_cpu: self.cpu_max,
                avg_mem: self.mem / n,
                max_mem: self.mem_max,
                avg_iowait: self.iowait / n,
                avg_load,
                buckets: self.n,
            }
        })
    }

    fn hour_sample(self, hour: i64) -> Option<HistorySample> {
        (self.n > 0).then(|| {
            let n = self.n as f64;
            HistorySample {
                t: hour * 3600,
                cpu: self.cpu / n,
                mem: self.mem / n,
                iowait: self.iowait / n,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_764_230_400_000; // a whole hour

    fn s(t_ms: i64, cpu: f64) -> Sample {
        Sample {
            t_ms,
            cpu,
            mem: cpu / 2.0,
            iowait: 1.0,
            load: 2.0,
        }
    }

    #[test]
    fn bucket_sizes_keep_a_node_under_64_kib() {
        assert_eq!(std::mem::size_of::<MinuteBucket>(), 28);
        assert_eq!(std::mem::size_of::<HalfHourBucket>(), 32);
        let mut w = NodeWindow::new();
        for i in 0..100_000 {
            w.record(s(T0 + i * 1000, 10.0));
        }
        assert!(w.raw.len() <= RAW_CAPACITY);
        assert!(w.memory_bytes() <= 64 * 1024, "{}", w.memory_bytes());
    }

    #[test]
    fn day_stats_are_means_of_minute_buckets_with_maxima() {
        let mut w = NodeWindow::new();
        // Minute 0: 10 and 30 (mean 20); minute 1: 50.
        w.record(s(T0, 10.0));
        w.record(s(T0 + 10_000, 30.0));
        w.record(s(T0 + 60_000, 50.0));
        let d = w.day_stats(T0 + 60_000).unwrap();
        assert_eq!(d.avg_cpu, 35.0);
        assert_eq!(d.max_cpu, 50.0);
        assert_eq!(d.avg_mem, 17.5);
        assert_eq!(d.max_mem, 25.0);
        assert_eq!(d.avg_iowait, 1.0);
        assert_eq!(d.avg_load, 2.0);
        assert_eq!(d.buckets, 2);
        // A day later the minute buckets are out of the window.
        assert_eq!(w.day_stats(T0 + DAY_MS + 60_000), None);
        assert_eq!(w.raw().count(), 3);
        assert_eq!(w.latest().map(|l| l.cpu), Some(50.0));
    }

    #[test]
    fn raw_samples_keep_one_hour() {
        let mut w = NodeWindow::new();
        w.record(s(T0, 1.0));
        w.record(s(T0 + HOUR_MS - 1, 2.0));
        assert_eq!(w.raw().count(), 2);
        w.record(s(T0 + HOUR_MS, 3.0));
        let raw: Vec<f64> = w.raw().map(|r| r.cpu).collect();
        assert_eq!(raw, vec![2.0, 3.0]);
    }

    #[test]
    fn seeding_fills_the_interval_each_point_describes_and_live_data_wins() {
        let mut w = NodeWindow::new();
        // Two day points 30 minutes apart: each covers the 30 minutes before it (minute buckets
        // 0..=29 at 20, 30..=59 at 40; the first point takes the series' spacing).
        let day = [s(T0 + HALF_HOUR_MS, 20.0), s(T0 + HOUR_MS, 40.0)];
        w.seed(&day, &[]);
        let d = w.day_stats(T0 + HOUR_MS).unwrap();
        assert_eq!(d.buckets, 60);
        assert_eq!(d.avg_cpu, 30.0);
        assert_eq!(d.max_cpu, 40.0);
        // A live sample replaces the seeded bucket it falls into.
        w.record(s(T0 + 59 * MINUTE_MS + 1, 100.0));
        let d2 = w.day_stats(T0 + HOUR_MS).unwrap();
        assert_eq!(d2.buckets, 60);
        assert!((d2.avg_cpu - (30.0 * 20.0 + 29.0 * 40.0 + 100.0) / 60.0).abs() < 1e-9);
        // Seeding again does not overwrite it.
        w.seed(&day, &[]);
        assert_eq!(w.day_stats(T0 + HOUR_MS), Some(d2));
    }

    #[test]
    fn hourly_series_from_half_hour_buckets() {
        let mut w = NodeWindow::new();
        let week: Vec<Sample> = (1..=8)
            .map(|i| s(T0 + i * HALF_HOUR_MS, if i % 2 == 0 { 30.0 } else { 10.0 }))
            .collect();
        w.seed(&[], &week);
        let h = w.hourly(T0 + 4 * HOUR_MS);
        // Point i covers the half hour before it: hours 0..=3 each get a 10 and a 30 → 20.
        assert_eq!(h.len(), 4);
        assert_eq!(h[0].t, T0 / 1000);
        assert!(h[..4].iter().all(|x| x.cpu == 20.0), "{h:?}");
        let wk = w.week_stats(T0 + 4 * HOUR_MS).unwrap();
        assert_eq!(wk.max_cpu, 30.0);
    }

    #[test]
    fn invalid_samples_are_ignored() {
        let mut w = NodeWindow::new();
        w.record(Sample {
            t_ms: T0,
            cpu: f64::NAN,
            mem: 1.0,
            iowait: 0.0,
            load: 0.0,
        });
        w.record(s(T0, -1.0));
        w.seed(&[s(T0, f64::INFINITY)], &[s(-5, 1.0)]);
        assert_eq!(w.latest(), None);
        assert_eq!(w.day_stats(T0), None);
    }
}
