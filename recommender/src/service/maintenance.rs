//! What the service does by the wall clock rather than on a message: every second, the
//! per-cluster gauges are set from the state.

use std::sync::Arc;
use std::time::Duration;

use super::{Shared, metric};

/// How often the maintenance runs.
const EVERY: Duration = Duration::from_secs(1);

/// Runs until shutdown (see the module documentation).
pub async fn maintenance_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let skews = shared.read().clock_skews();
        for (cluster, skew_ms) in skews {
            metrics::gauge!(metric::CLOCK_SKEW, "cluster" => cluster).set(skew_ms as f64 / 1000.0);
        }
    }
}
