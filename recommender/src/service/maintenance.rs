//! What the service does by the wall clock rather than on a message, every second: once the
//! replay is done, the state's sweep (overloads of nodes gone quiet cleared and published,
//! nodes and clusters past the retention forgotten), and the per-cluster gauges.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;

use super::ingest::emit_overload;
use super::{Outgoing, Shared, metric, wall_ms};

/// How often the maintenance runs.
const EVERY: Duration = Duration::from_secs(1);

/// Runs until shutdown (see the module documentation).
pub async fn maintenance_loop(shared: Arc<Shared>, out: mpsc::Sender<Outgoing>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        // While replaying, the state's clock is the replayed data's: the sweep waits (the
        // ingest loop runs it when the replay ends).
        if shared.ready.load(Ordering::Acquire) {
            let events = shared.write().sweep(wall_ms());
            emit_overload(&shared, &out, events);
        }
        let skews = shared.read().clock_skews();
        for (cluster, skew_ms) in skews {
            metrics::gauge!(metric::CLOCK_SKEW, "cluster" => cluster).set(skew_ms as f64 / 1000.0);
        }
    }
}
