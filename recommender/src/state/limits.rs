//! Bounds a message must respect, whatever a collector could plausibly send. Beyond them a
//! message is refused rather than trusted: a single hostile snapshot must not make the engine
//! refuse its cluster's view or make the recommender allocate without limit.

/// Longest cluster, node, guest, storage, tag, pool, lock or status text, in bytes (the
/// length of a DNS name; PVE's own names are shorter).
pub const MAX_NAME_BYTES: usize = 253;
/// Longest free-text field (a node's or a status's error text), in bytes.
pub const MAX_TEXT_BYTES: usize = 4096;
/// Largest memory, swap or storage size, in bytes (1 EiB). A size of 2⁶³ or more is a
/// negative number written into an unsigned field and is reported as negative.
pub const MAX_BYTES: u64 = 1 << 60;
/// Largest CPU or IOWait fraction (1.0 = all CPUs busy; guests briefly exceed 1).
pub const MAX_FRACTION: f64 = 64.0;
/// Largest overcommit ratio.
pub const MAX_RATIO: f64 = 10_000.0;
/// Largest disk or network rate, bytes per second (10 TB/s).
pub const MAX_RATE_BPS: f64 = 1e13;
/// Largest vCPU count of a guest, and load average of a node.
pub const MAX_VCPUS: f64 = 65_536.0;
/// Largest load average.
pub const MAX_LOAD: f64 = 1e6;
/// Most tags, or storages, of one guest; most load-average values of a node.
pub const MAX_LIST: usize = 256;
/// Most points of one history series (PVE's RRD gives about 70).
pub const MAX_HISTORY_POINTS: usize = 20_000;
/// Most nodes, or errors, in a cluster status; most nodes of one HA rule.
pub const MAX_STATUS_ENTRIES: usize = 10_000;
/// Most guests one HA rule binds.
pub const MAX_RULE_GUESTS: usize = 100_000;
/// Latest observation time accepted (year 3000), unix ms.
pub const MAX_TIME_MS: i64 = 32_503_680_000_000;
pub use proxbalance_proto::codec::{
    MAX_GUESTS_PER_SNAPSHOT, MAX_HA_RULES_PER_STATUS, MAX_STORAGES_PER_SNAPSHOT,
};
