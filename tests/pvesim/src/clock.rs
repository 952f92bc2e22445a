//! The simulated clock: real time multiplied by an acceleration factor, or a manual clock
//! that only moves when a test tells it to.

use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy)]
enum Mode {
    /// `now = origin_sim + (real elapsed since origin_real) × factor`.
    Running {
        origin_real: Instant,
        origin_sim: f64,
        factor: f64,
    },
    /// `now` stays where it was put.
    Manual { now: f64 },
}

/// The source of simulated time (Unix epoch seconds, fractional).
///
/// Every metric, RRD point, task and timestamp the simulator serves is computed from this clock,
/// so a test that uses [`SimClock::manual`] and [`SimClock::advance`] is fully deterministic.
#[derive(Debug)]
pub struct SimClock {
    mode: Mutex<Mode>,
}

impl SimClock {
    /// A clock that starts at `start` (epoch seconds) and runs `factor` times faster than real
    /// time. A factor of 0 (or below) gives a manual clock.
    pub fn accelerated(start: f64, factor: f64) -> Self {
        let mode = if factor > 0.0 && factor.is_finite() {
            Mode::Running {
                origin_real: Instant::now(),
                origin_sim: start,
                factor,
            }
        } else {
            Mode::Manual { now: start }
        };
        Self {
            mode: Mutex::new(mode),
        }
    }

    /// A clock standing still at `start` until [`SimClock::advance`] or [`SimClock::set`].
    pub fn manual(start: f64) -> Self {
        Self {
            mode: Mutex::new(Mode::Manual { now: start }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Mode> {
        // A poisoned clock still holds a valid value; keep serving it.
        self.mode.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current simulated time in epoch seconds.
    pub fn now(&self) -> f64 {
        match *self.lock() {
            Mode::Running {
                origin_real,
                origin_sim,
                factor,
            } => origin_sim + origin_real.elapsed().as_secs_f64() * factor,
            Mode::Manual { now } => now,
        }
    }

    /// Whether the clock only moves on request.
    pub fn is_manual(&self) -> bool {
        matches!(*self.lock(), Mode::Manual { .. })
    }

    /// Stops the clock at its current value (it becomes manual).
    pub fn pause(&self) {
        let now = self.now();
        *self.lock() = Mode::Manual { now };
    }

    /// Lets the clock run from its current value at `factor` × real time (0 pauses it).
    pub fn set_acceleration(&self, factor: f64) {
        let now = self.now();
        *self.lock() = if factor > 0.0 && factor.is_finite() {
            Mode::Running {
                origin_real: Instant::now(),
                origin_sim: now,
                factor,
            }
        } else {
            Mode::Manual { now }
        };
    }

    /// Moves the clock by `seconds` (may be negative) and keeps its mode.
    pub fn advance(&self, seconds: f64) {
        let mut mode = self.lock();
        match &mut *mode {
            Mode::Running { origin_sim, .. } => *origin_sim += seconds,
            Mode::Manual { now } => *now += seconds,
        }
    }

    /// Puts the clock at `epoch` seconds and keeps its mode.
    pub fn set(&self, epoch: f64) {
        let mut mode = self.lock();
        match &mut *mode {
            Mode::Running {
                origin_real,
                origin_sim,
                ..
            } => {
                *origin_real = Instant::now();
                *origin_sim = epoch;
            }
            Mode::Manual { now } => *now = epoch,
        }
    }
}

/// The real wall-clock time in whole epoch seconds.
pub fn wall_clock_epoch() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_on_request() {
        let c = SimClock::manual(1000.0);
        assert_eq!(c.now(), 1000.0);
        c.advance(30.0);
        assert_eq!(c.now(), 1030.0);
        c.set(5.0);
        assert_eq!(c.now(), 5.0);
        assert!(c.is_manual());
    }

    #[test]
    fn accelerated_clock_runs_faster() {
        let c = SimClock::accelerated(0.0, 1000.0);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(c.now() >= 19.0);
        c.pause();
        let t = c.now();
        assert_eq!(c.now(), t);
    }
}
