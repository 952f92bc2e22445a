//! The recommender's in-memory state, free of I/O: messages in, cluster views, cached
//! recommendation sets and overload transitions out.
//!
//! [`State::ingest`] takes a NATS subject and payload, checks them (decoding, schema version,
//! subject against payload, numbers) and applies them: a snapshot extends its node's
//! [`NodeWindow`], a history seeds it, a cluster status records the cycle's node list. It
//! reports when a cluster's cycle is complete (its `ClusterStatus` arrived, or every node the
//! last status listed has sent this cycle's snapshot); the caller then evaluates overload
//! ([`State::evaluate_overload`]) and recomputes ([`State::view`], the engine, [`State::store_set`]).
//!
//! Time: the windows and the engine view use the data's own clock (the newest snapshot of the
//! cluster), so replicas and restarts that saw the same messages compute the same set.
//! Staleness compares a node's last snapshot with the later of that instant and the wall clock.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proxbalance_engine::window::{NodeWindow, Sample};
use proxbalance_engine::{
    self as engine, ClusterView, CurrentMetrics, DayAverages, GuestKind, GuestView, NodeStatus,
    NodeView, PenaltyConfig, Thresholds, VIEW_FORMAT, WeekStats,
};
use proxbalance_proto::codec::{self, CodecError};
use proxbalance_proto::subjects::{Subject, SubjectError, Subjects};
use proxbalance_proto::v1 as pb;

use crate::config::OverloadConfig;
use crate::convert;
use crate::overload::{Limits, NodeOverload, Reading};

const GIB: f64 = (1u64 << 30) as f64;

/// Bounds a message must respect, whatever a collector could plausibly send. Beyond them a
/// message is refused rather than trusted: a single hostile snapshot must not make the engine
/// refuse its cluster's view or make the recommender allocate without limit.
pub mod limits {
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
    /// Most nodes, or errors, in a cluster status.
    pub const MAX_STATUS_ENTRIES: usize = 10_000;
    /// Latest observation time accepted (year 3000), unix ms.
    pub const MAX_TIME_MS: i64 = 32_503_680_000_000;
    pub use proxbalance_proto::codec::{MAX_GUESTS_PER_SNAPSHOT, MAX_STORAGES_PER_SNAPSHOT};
}

/// What is wrong with a field; each has its own metric label (see [`Rejection::label`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// NaN or ±infinity.
    NotFinite,
    /// Below zero (or an unsigned size of 2⁶³ or more).
    Negative,
    /// Finite and non-negative but beyond the bounds of [`limits`].
    OutOfRange,
    /// A used amount above its total (memory, swap, a storage).
    UsedExceedsTotal,
    /// The same vmid twice in one snapshot.
    DuplicateGuest,
    /// A vmid another node of the cluster already reported in the same cycle.
    GuestOnTwoNodes,
    /// A list longer than its limit.
    TooMany,
    /// A name or text longer than its limit.
    TooLong,
    /// Anything else no collector produces (empty name, vmid 0, unknown enum value, ...).
    Invalid,
}

impl Problem {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Problem::NotFinite => "not_finite",
            Problem::Negative => "negative_value",
            Problem::OutOfRange => "out_of_range",
            Problem::UsedExceedsTotal => "used_exceeds_total",
            Problem::DuplicateGuest => "duplicate_guest",
            Problem::GuestOnTwoNodes => "guest_on_two_nodes",
            Problem::TooMany => "too_many_items",
            Problem::TooLong => "name_too_long",
            Problem::Invalid => "invalid_value",
        }
    }
}

/// Why a message was refused. Never fatal: the message is counted, logged and dropped.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// The subject is not one the recommender consumes.
    #[error(transparent)]
    Subject(#[from] SubjectError),
    /// The payload does not decode or has an unknown schema version.
    #[error(transparent)]
    Decode(#[from] CodecError),
    /// The subject names another cluster or node than the payload.
    #[error("{field}: subject says {subject:?}, payload says {payload:?}")]
    Mismatch {
        /// `cluster` or `node`.
        field: &'static str,
        /// The name in the subject.
        subject: String,
        /// The name in the payload.
        payload: String,
    },
    /// A field holds a value no collector produces (NaN, negative, empty name, ...).
    #[error("{field}: {detail}")]
    Invalid {
        /// Path of the field (e.g. `guests[2].disk_read_bps`).
        field: String,
        /// What was expected.
        detail: String,
        /// The kind of problem, for the metric label.
        problem: Problem,
    },
}

impl Rejection {
    /// A short label for the rejection metric
    /// (`proxbalance_recommender_messages_rejected_total{reason}`).
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::Subject(_) => "subject",
            Rejection::Decode(CodecError::UnsupportedSchemaVersion { .. }) => "schema_version",
            Rejection::Decode(CodecError::TooLarge { .. }) => "too_large",
            Rejection::Decode(CodecError::TooMany { .. }) => "too_many_items",
            Rejection::Decode(_) => "decode",
            Rejection::Mismatch { .. } => "subject_mismatch",
            Rejection::Invalid { problem, .. } => problem.label(),
        }
    }
}

fn reject(problem: Problem, field: impl Into<String>, detail: impl Into<String>) -> Rejection {
    Rejection::Invalid {
        field: field.into(),
        detail: detail.into(),
        problem,
    }
}

fn invalid(field: impl Into<String>, detail: &str) -> Rejection {
    reject(Problem::Invalid, field, detail)
}

/// A finite number in `0..=max`.
fn check_number(field: impl FnOnce() -> String, v: f64, max: f64) -> Result<(), Rejection> {
    if !v.is_finite() {
        Err(reject(
            Problem::NotFinite,
            field(),
            "expected a finite number",
        ))
    } else if v < 0.0 {
        Err(reject(Problem::Negative, field(), "expected a number ≥ 0"))
    } else if v > max {
        Err(reject(
            Problem::OutOfRange,
            field(),
            format!("expected a number ≤ {max}"),
        ))
    } else {
        Ok(())
    }
}

/// A size in bytes: below 2⁶³ (else it was negative) and at most [`limits::MAX_BYTES`].
fn check_bytes(field: impl FnOnce() -> String, v: u64) -> Result<(), Rejection> {
    if i64::try_from(v).is_err() {
        Err(reject(
            Problem::Negative,
            field(),
            "expected a size ≥ 0 (found a negative number stored as unsigned)",
        ))
    } else if v > limits::MAX_BYTES {
        Err(reject(
            Problem::OutOfRange,
            field(),
            format!("expected a size ≤ {} bytes", limits::MAX_BYTES),
        ))
    } else {
        Ok(())
    }
}

fn check_used(field: impl FnOnce() -> String, used: u64, total: u64) -> Result<(), Rejection> {
    if used > total {
        Err(reject(
            Problem::UsedExceedsTotal,
            field(),
            format!("{used} bytes used exceed the total of {total}"),
        ))
    } else {
        Ok(())
    }
}

fn check_len(field: impl FnOnce() -> String, v: &str, max: usize) -> Result<(), Rejection> {
    if v.len() > max {
        Err(reject(
            Problem::TooLong,
            field(),
            format!("{} bytes exceed the limit of {max}", v.len()),
        ))
    } else {
        Ok(())
    }
}

// The field names are built only when a check fails: validation runs for every snapshot and
// formatting a path per guest and list would dominate ingest.
fn check_name(field: impl Fn() -> String, v: &str) -> Result<(), Rejection> {
    if v.trim().is_empty() {
        Err(invalid(field(), "expected a non-empty name"))
    } else {
        check_len(field, v, limits::MAX_NAME_BYTES)
    }
}

fn check_count(field: impl FnOnce() -> String, n: usize, max: usize) -> Result<(), Rejection> {
    if n > max {
        Err(reject(
            Problem::TooMany,
            field(),
            format!("{n} entries exceed the limit of {max}"),
        ))
    } else {
        Ok(())
    }
}

fn check_match(field: &'static str, subject: &str, payload: &str) -> Result<(), Rejection> {
    if subject == payload {
        Ok(())
    } else {
        Err(Rejection::Mismatch {
            field,
            subject: subject.to_owned(),
            payload: payload.to_owned(),
        })
    }
}

/// Checks a snapshot on its own: names, numbers, sizes and counts within [`limits`], used
/// amounts within their totals, no vmid twice. Whether another node claims one of its guests
/// in the same cycle needs the state and is checked by [`State::ingest`].
pub fn validate_snapshot(s: &pb::NodeSnapshot) -> Result<(), Rejection> {
    use limits::*;
    check_name(|| "cluster".to_owned(), &s.cluster)?;
    check_name(|| "node".to_owned(), &s.node)?;
    if s.observed_at_unix_ms <= 0 || s.observed_at_unix_ms > MAX_TIME_MS {
        return Err(invalid(
            "observed_at_unix_ms",
            "expected a time between 1970 and 3000",
        ));
    }
    if pb::NodeStatus::try_from(s.status).is_err() {
        return Err(invalid("status", "expected a known node status"));
    }
    for (k, v) in [("ha_state", &s.ha_state), ("pve_version", &s.pve_version)] {
        check_len(|| k.to_owned(), v, MAX_NAME_BYTES)?;
    }
    check_len(|| "error".to_owned(), &s.error, MAX_TEXT_BYTES)?;
    check_number(|| "cpu_fraction".into(), s.cpu_fraction, MAX_FRACTION)?;
    if let Some(v) = s.iowait_fraction {
        check_number(|| "iowait_fraction".into(), v, MAX_FRACTION)?;
    }
    check_count(|| "load_average".to_owned(), s.load_average.len(), MAX_LIST)?;
    for (i, v) in s.load_average.iter().enumerate() {
        check_number(|| format!("load_average[{i}]"), *v, MAX_LOAD)?;
    }
    check_number(|| "overcommit_ratio".into(), s.overcommit_ratio, MAX_RATIO)?;
    for (k, v) in [
        ("mem_used_bytes", s.mem_used_bytes),
        ("mem_total_bytes", s.mem_total_bytes),
        ("mem_available_bytes", s.mem_available_bytes),
        ("committed_mem_bytes", s.committed_mem_bytes),
        ("swap_used_bytes", s.swap_used_bytes),
        ("swap_total_bytes", s.swap_total_bytes),
        ("ksm_shared_bytes", s.ksm_shared_bytes),
    ] {
        check_bytes(|| k.to_owned(), v)?;
    }
    check_used(
        || "mem_used_bytes".to_owned(),
        s.mem_used_bytes,
        s.mem_total_bytes,
    )?;
    check_used(
        || "mem_available_bytes".to_owned(),
        s.mem_available_bytes,
        s.mem_total_bytes,
    )?;
    check_used(
        || "swap_used_bytes".to_owned(),
        s.swap_used_bytes,
        s.swap_total_bytes,
    )?;
    if let Some(p) = &s.pressure {
        for (k, v) in [
            ("cpu_some", p.cpu_some),
            ("io_some", p.io_some),
            ("io_full", p.io_full),
            ("memory_some", p.memory_some),
            ("memory_full", p.memory_full),
        ] {
            check_number(|| format!("pressure.{k}"), v, 100.0)?;
        }
    }
    check_count(
        || "storages".to_owned(),
        s.storages.len(),
        MAX_STORAGES_PER_SNAPSHOT,
    )?;
    for (i, st) in s.storages.iter().enumerate() {
        check_name(|| format!("storages[{i}].id"), &st.id)?;
        check_len(|| format!("storages[{i}].type"), &st.r#type, MAX_NAME_BYTES)?;
        check_len(
            || format!("storages[{i}].content"),
            &st.content,
            MAX_NAME_BYTES,
        )?;
        check_bytes(|| format!("storages[{i}].total_bytes"), st.total_bytes)?;
        check_bytes(|| format!("storages[{i}].used_bytes"), st.used_bytes)?;
        check_used(
            || format!("storages[{i}].used_bytes"),
            st.used_bytes,
            st.total_bytes,
        )?;
    }
    check_count(
        || "guests".to_owned(),
        s.guests.len(),
        MAX_GUESTS_PER_SNAPSHOT,
    )?;
    let mut vmids = BTreeSet::new();
    for (i, g) in s.guests.iter().enumerate() {
        if g.vmid == 0 {
            return Err(invalid(format!("guests[{i}].vmid"), "expected ≥ 1"));
        }
        if !vmids.insert(g.vmid) {
            return Err(reject(
                Problem::DuplicateGuest,
                format!("guests[{i}].vmid"),
                format!("vmid {} is listed twice", g.vmid),
            ));
        }
        if !matches!(
            pb::GuestKind::try_from(g.kind),
            Ok(pb::GuestKind::Qemu | pb::GuestKind::Lxc)
        ) {
            return Err(invalid(format!("guests[{i}].kind"), "expected qemu or lxc"));
        }
        for (k, v) in [
            ("name", &g.name),
            ("status", &g.status),
            ("ha_state", &g.ha_state),
            ("lock", &g.lock),
            ("pool", &g.pool),
        ] {
            check_len(|| format!("guests[{i}].{k}"), v, MAX_NAME_BYTES)?;
        }
        check_number(
            || format!("guests[{i}].cpu_fraction"),
            g.cpu_fraction,
            MAX_FRACTION,
        )?;
        check_number(|| format!("guests[{i}].vcpus"), g.vcpus, MAX_VCPUS)?;
        for (k, v) in [
            ("disk_read_bps", g.disk_read_bps),
            ("disk_write_bps", g.disk_write_bps),
            ("net_in_bps", g.net_in_bps),
            ("net_out_bps", g.net_out_bps),
        ] {
            check_number(|| format!("guests[{i}].{k}"), v, MAX_RATE_BPS)?;
        }
        for (k, v) in [
            ("mem_used_bytes", g.mem_used_bytes),
            ("mem_max_bytes", g.mem_max_bytes),
            ("balloon_min_bytes", g.balloon_min_bytes),
            ("mem_host_bytes", g.mem_host_bytes),
        ] {
            check_bytes(|| format!("guests[{i}].{k}"), v)?;
        }
        for (k, list) in [
            ("tags", &g.tags),
            ("storages", &g.storages),
            ("local_storages", &g.local_storages),
        ] {
            check_count(|| format!("guests[{i}].{k}"), list.len(), MAX_LIST)?;
            for (j, v) in list.iter().enumerate() {
                check_len(|| format!("guests[{i}].{k}[{j}]"), v, MAX_NAME_BYTES)?;
            }
        }
        for (j, st) in g.storages.iter().enumerate() {
            check_name(|| format!("guests[{i}].storages[{j}]"), st)?;
        }
    }
    Ok(())
}

fn validate_history(h: &pb::NodeHistory) -> Result<(), Rejection> {
    check_name(|| "cluster".to_owned(), &h.cluster)?;
    check_name(|| "node".to_owned(), &h.node)?;
    for (series, points) in [("day", &h.day), ("week", &h.week)] {
        check_count(
            || series.to_owned(),
            points.len(),
            limits::MAX_HISTORY_POINTS,
        )?;
        for (i, p) in points.iter().enumerate() {
            for (k, v, max) in [
                ("cpu_fraction", p.cpu_fraction, limits::MAX_FRACTION),
                ("iowait_fraction", p.iowait_fraction, limits::MAX_FRACTION),
                ("mem_used_bytes", p.mem_used_bytes, limits::MAX_BYTES as f64),
                (
                    "mem_total_bytes",
                    p.mem_total_bytes,
                    limits::MAX_BYTES as f64,
                ),
                ("load_average", p.load_average, limits::MAX_LOAD),
            ] {
                if let Some(v) = v {
                    check_number(|| format!("{series}[{i}].{k}"), v, max)?;
                }
            }
            // Averages of used ≤ total stay so; without this a tiny total would make an
            // infinite memory percentage.
            if let (Some(used), Some(total)) = (p.mem_used_bytes, p.mem_total_bytes)
                && used > total
            {
                return Err(reject(
                    Problem::UsedExceedsTotal,
                    format!("{series}[{i}].mem_used_bytes"),
                    format!("{used:.0} bytes used exceed the total of {total:.0}"),
                ));
            }
        }
    }
    Ok(())
}

fn validate_status(st: &pb::ClusterStatus) -> Result<(), Rejection> {
    check_name(|| "cluster".to_owned(), &st.cluster)?;
    check_count(
        || "nodes".to_owned(),
        st.nodes.len(),
        limits::MAX_STATUS_ENTRIES,
    )?;
    check_count(
        || "errors".to_owned(),
        st.errors.len(),
        limits::MAX_STATUS_ENTRIES,
    )?;
    for (i, n) in st.nodes.iter().enumerate() {
        check_name(|| format!("nodes[{i}].node"), &n.node)?;
    }
    check_count(
        || "histories".to_owned(),
        st.histories.len(),
        limits::MAX_STATUS_ENTRIES,
    )?;
    for (i, n) in st.histories.iter().enumerate() {
        check_name(|| format!("histories[{i}]"), n)?;
    }
    check_len(
        || "pve_version".to_owned(),
        &st.pve_version,
        limits::MAX_NAME_BYTES,
    )?;
    check_len(
        || "endpoint".to_owned(),
        &st.endpoint,
        limits::MAX_TEXT_BYTES,
    )?;
    Ok(())
}

/// Settings of the state.
#[derive(Debug, Clone)]
pub struct StateSettings {
    /// Subjects of the deployment.
    pub subjects: Subjects,
    /// A node whose last snapshot is older than this is stale, ms.
    pub staleness_ms: i64,
    /// Overload detection.
    pub overload: OverloadConfig,
    /// The engine configuration of every view.
    pub config: PenaltyConfig,
    /// The thresholds of every view (and of overload detection).
    pub thresholds: Thresholds,
}

/// What a message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// A snapshot was applied; `completed` is set when it completed its cluster's cycle.
    Snapshot {
        cluster: String,
        observed_at_ms: i64,
        completed: Option<u64>,
    },
    /// A cluster status was applied; `completed` is set unless its cycle was already complete.
    Status {
        cluster: String,
        completed: Option<u64>,
    },
    /// A history seeded a node's windows; `completed` is set when the cycle's status was
    /// waiting for it (see [`pb::ClusterStatus::histories`]) and it was the last.
    History {
        cluster: String,
        completed: Option<u64>,
    },
    /// A message of another kind on a consumed subject (e.g. an event), or a copy of the
    /// snapshot a node last reported (same cycle: a re-publish JetStream did not de-duplicate,
    /// e.g. outside its duplicate window); nothing to do.
    Ignored,
}

/// The encoded `GetRecommendationsResponse` of a cached set (`computed_fresh` false), written
/// field by field so that the set, up to a megabyte of messages, is not cloned into a response
/// message first.
fn cached_response(set: &pb::RecommendationSet, generation: u64) -> prost::bytes::Bytes {
    use prost::Message;
    // Field numbers of `GetRecommendationsResponse` (recommender.proto).
    const SET: u32 = 1;
    const GENERATION: u32 = 3;
    let mut buf = Vec::with_capacity(set.encoded_len() + 16);
    prost::encoding::message::encode(SET, set, &mut buf);
    if generation != 0 {
        prost::encoding::uint64::encode(GENERATION, &generation, &mut buf);
    }
    buf.into()
}

/// A cached recommendation set. Only the full set is kept as messages; its basic view
/// ([`convert::basic_view`]) is kept encoded, and built again when a watcher needs it.
#[derive(Debug, Clone)]
pub struct Cached {
    /// The set, converted once for gRPC.
    pub full: Arc<pb::RecommendationSet>,
    /// Increases with every change of the moves.
    pub generation: u64,
    /// The collection cycle the set was computed on.
    pub cycle: u64,
    /// The `GetRecommendationsResponse` for this set in the full and in the basic view,
    /// encoded once: served as they are to every request without overrides, so a busy
    /// recommender does not re-encode the same megabyte.
    pub encoded_full: prost::bytes::Bytes,
    /// See `encoded_full`.
    pub encoded_basic: prost::bytes::Bytes,
}

impl Cached {
    /// The encoded `GetRecommendationsResponse` in the full or the basic view.
    pub fn encoded(&self, full: bool) -> &prost::bytes::Bytes {
        if full {
            &self.encoded_full
        } else {
            &self.encoded_basic
        }
    }
}

#[derive(Debug, Default)]
struct NodeState {
    latest: Option<pb::NodeSnapshot>,
    window: NodeWindow,
    overload: NodeOverload,
    /// Observation time of the snapshot overload was last evaluated on.
    evaluated_at_ms: Option<i64>,
    /// Collection time of the newest history applied.
    history_at_ms: Option<i64>,
}

/// A cycle whose status arrived before some of the histories it lists.
#[derive(Debug)]
struct AwaitingHistories {
    cycle: u64,
    /// The status' collection time: a history at least as new belongs to the cycle.
    collected_at_ms: i64,
    nodes: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct ClusterState {
    nodes: BTreeMap<String, NodeState>,
    status: Option<pb::ClusterStatus>,
    completed_cycle: Option<u64>,
    /// Set while the last status' cycle waits for its histories.
    awaiting: Option<AwaitingHistories>,
    cached: Option<Cached>,
    /// vmid → the node whose latest snapshot lists it (the last one applied, when several do),
    /// so the check that a guest is on one node per cycle does not scan every node.
    claims: std::collections::HashMap<u32, String>,
}

impl ClusterState {
    /// The newest observation of the cluster, unix ms.
    fn data_now_ms(&self) -> Option<i64> {
        self.nodes
            .values()
            .filter_map(|n| n.latest.as_ref().map(|s| s.observed_at_unix_ms))
            .max()
    }
}

/// Everything the recommender knows. See the module documentation.
#[derive(Debug)]
pub struct State {
    settings: StateSettings,
    clusters: BTreeMap<String, ClusterState>,
    /// Snapshots applied since start (what the fault tests compare with what was published).
    snapshots_applied: u64,
}

fn sample_of(s: &pb::NodeSnapshot, previous_iowait: f64) -> Sample {
    let mem = if s.mem_total_bytes > 0 {
        s.mem_used_bytes as f64 / s.mem_total_bytes as f64 * 100.0
    } else {
        0.0
    };
    Sample {
        t_ms: s.observed_at_unix_ms,
        cpu: s.cpu_fraction * 100.0,
        mem,
        iowait: s.iowait_fraction.map_or(previous_iowait, |v| v * 100.0),
        load: s.load_average.first().copied().unwrap_or(0.0),
    }
}

fn history_samples(points: &[pb::HistoryPoint]) -> Vec<Sample> {
    points
        .iter()
        .filter_map(|p| {
            let cpu = p.cpu_fraction?;
            let total = p.mem_total_bytes.filter(|t| *t > 0.0)?;
            let used = p.mem_used_bytes?;
            Some(Sample {
                t_ms: p.time_unix_ms,
                cpu: cpu * 100.0,
                mem: used / total * 100.0,
                iowait: p.iowait_fraction.unwrap_or(0.0) * 100.0,
                load: p.load_average.unwrap_or(0.0),
            })
        })
        .collect()
}

fn reason_word(r: pb::OverloadReason) -> &'static str {
    match r {
        pb::OverloadReason::Cpu => "cpu",
        pb::OverloadReason::Memory => "memory",
        pb::OverloadReason::Iowait => "iowait",
        pb::OverloadReason::MemOvercommit => "mem_overcommit",
        pb::OverloadReason::Unspecified => "unspecified",
    }
}

/// The `Nats-Msg-Id` of an overload event: the same transition computed by two replicas gets
/// the same id, so JetStream stores it once.
pub fn overload_event_id(e: &pb::OverloadEvent) -> String {
    let state = if e.state == pb::OverloadState::Raised as i32 {
        "raised"
    } else {
        "cleared"
    };
    let reason = pb::OverloadReason::try_from(e.reason).map_or("unspecified", reason_word);
    format!(
        "{}:{}:{reason}:{state}:{}",
        e.cluster, e.node, e.since_unix_ms
    )
}

/// The `Nats-Msg-Id` of a recommendations-changed event: the cycle it was computed for, the
/// same on every replica. (The view's instant, in seconds, was used before: two cycles
/// completing within one second then shared an id and JetStream dropped the second event.)
pub fn recommendations_event_id(e: &pb::RecommendationsChanged) -> String {
    format!("{}:recommendations:{}", e.cluster, e.cycle)
}

impl State {
    /// An empty state.
    pub fn new(settings: StateSettings) -> Self {
        State {
            settings,
            clusters: BTreeMap::new(),
            snapshots_applied: 0,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &StateSettings {
        &self.settings
    }

    /// Snapshots applied since the state was created (refused ones excluded).
    pub fn snapshots_applied(&self) -> u64 {
        self.snapshots_applied
    }

    /// Checks and applies one message.
    pub fn ingest(&mut self, subject: &str, payload: &[u8]) -> Result<Ingested, Rejection> {
        match self.settings.subjects.parse(subject)? {
            Subject::Snapshot { cluster, node } => {
                let s = codec::decode_snapshot(payload)?;
                check_match("cluster", &cluster, &s.cluster)?;
                check_match("node", &node, &s.node)?;
                validate_snapshot(&s)?;
                if self.already_applied(&s) {
                    return Ok(Ingested::Ignored);
                }
                self.check_guests_unclaimed(&s)?;
                Ok(self.apply_snapshot(s))
            }
            Subject::History { cluster, node } => {
                let h = codec::decode_history(payload)?;
                check_match("cluster", &cluster, &h.cluster)?;
                check_match("node", &node, &h.node)?;
                validate_history(&h)?;
                Ok(self.apply_history(&h))
            }
            Subject::ClusterStatus { cluster } => {
                let st = codec::decode_cluster_status(payload)?;
                check_match("cluster", &cluster, &st.cluster)?;
                validate_status(&st)?;
                Ok(self.apply_status(st))
            }
            Subject::Overload { .. } | Subject::Recommendations { .. } => Ok(Ingested::Ignored),
        }
    }

    /// Whether `s` is the snapshot its node last reported again (same cycle).
    fn already_applied(&self, s: &pb::NodeSnapshot) -> bool {
        self.clusters
            .get(&s.cluster)
            .and_then(|c| c.nodes.get(&s.node))
            .and_then(|n| n.latest.as_ref())
            .is_some_and(|l| l.cycle == s.cycle && l.observed_at_unix_ms == s.observed_at_unix_ms)
    }

    /// Refuses a snapshot that lists a guest another node of its cluster already reported in
    /// the same cycle: one cycle reads every guest's node from one `/cluster/resources`
    /// answer, so a genuine collector never does that (a guest reported by two nodes in
    /// different cycles is a migration; the fresher report wins in the view). The first claim
    /// in stream order stands, so every replica refuses the same message.
    fn check_guests_unclaimed(&self, s: &pb::NodeSnapshot) -> Result<(), Rejection> {
        let Some(c) = self.clusters.get(&s.cluster) else {
            return Ok(());
        };
        for (i, g) in s.guests.iter().enumerate() {
            let Some(name) = c.claims.get(&g.vmid) else {
                continue;
            };
            let same_cycle = c
                .nodes
                .get(name)
                .and_then(|n| n.latest.as_ref())
                .is_some_and(|other| other.cycle == s.cycle);
            if *name != s.node && same_cycle {
                return Err(reject(
                    Problem::GuestOnTwoNodes,
                    format!("guests[{i}].vmid"),
                    format!(
                        "vmid {} was already reported by node {name:?} in cycle {}",
                        g.vmid, s.cycle
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Applies a checked snapshot.
    pub fn apply_snapshot(&mut self, s: pb::NodeSnapshot) -> Ingested {
        self.snapshots_applied += 1;
        let cluster_name = s.cluster.clone();
        let cycle = s.cycle;
        let observed_at_ms = s.observed_at_unix_ms;
        let c = self.clusters.entry(s.cluster.clone()).or_default();
        let node = c.nodes.entry(s.node.clone()).or_default();
        let prev_iowait = node.window.latest().map_or(0.0, |l| l.iowait);
        if s.status == pb::NodeStatus::Online as i32 {
            node.window.record(sample_of(&s, prev_iowait));
        }
        if node
            .latest
            .as_ref()
            .is_none_or(|l| l.observed_at_unix_ms <= s.observed_at_unix_ms)
        {
            if let Some(old) = &node.latest {
                for g in &old.guests {
                    if c.claims.get(&g.vmid).is_some_and(|owner| *owner == s.node) {
                        c.claims.remove(&g.vmid);
                    }
                }
            }
            for g in &s.guests {
                c.claims.insert(g.vmid, s.node.clone());
            }
            node.latest = Some(s);
        }
        // The cycle is complete when every node of the last status has sent this cycle.
        let completed = match &c.status {
            Some(st) if !st.nodes.is_empty() && c.completed_cycle != Some(cycle) => {
                let all = st.nodes.iter().all(|n| {
                    c.nodes
                        .get(&n.node)
                        .and_then(|x| x.latest.as_ref())
                        .is_some_and(|l| l.cycle == cycle)
                });
                all.then_some(cycle)
            }
            _ => None,
        };
        if completed.is_some() {
            c.completed_cycle = completed;
            // A newer cycle completed: the histories still awaited are not coming.
            c.awaiting = None;
        }
        Ingested::Snapshot {
            cluster: cluster_name,
            observed_at_ms,
            completed,
        }
    }

    /// Applies a checked history.
    pub fn apply_history(&mut self, h: &pb::NodeHistory) -> Ingested {
        let c = self.clusters.entry(h.cluster.clone()).or_default();
        let node = c.nodes.entry(h.node.clone()).or_default();
        node.window
            .seed(&history_samples(&h.day), &history_samples(&h.week));
        node.history_at_ms = node.history_at_ms.max(Some(h.collected_at_unix_ms));
        let mut completed = None;
        if let Some(w) = &mut c.awaiting
            && h.collected_at_unix_ms >= w.collected_at_ms
            && w.nodes.remove(&h.node)
            && w.nodes.is_empty()
        {
            completed = (c.completed_cycle != Some(w.cycle)).then_some(w.cycle);
            c.awaiting = None;
            if completed.is_some() {
                c.completed_cycle = completed;
            }
        }
        Ingested::History {
            cluster: h.cluster.clone(),
            completed,
        }
    }

    /// Applies a checked cluster status.
    pub fn apply_status(&mut self, st: pb::ClusterStatus) -> Ingested {
        let cluster = st.cluster.clone();
        let c = self.clusters.entry(st.cluster.clone()).or_default();
        let cycle = st.cycle;
        let mut completed = (c.completed_cycle != Some(cycle)).then_some(cycle);
        // The histories this cycle published that have not been applied yet: the cycle
        // completes with the last of them (the streams are consumed apart, so a history
        // stored before the status may be delivered after it).
        let missing: BTreeSet<String> = st
            .histories
            .iter()
            .filter(|n| {
                c.nodes
                    .get(n.as_str())
                    .and_then(|x| x.history_at_ms)
                    .is_none_or(|at| at < st.collected_at_unix_ms)
            })
            .cloned()
            .collect();
        c.awaiting = None;
        if completed.is_some() && !missing.is_empty() {
            c.awaiting = Some(AwaitingHistories {
                cycle,
                collected_at_ms: st.collected_at_unix_ms,
                nodes: missing,
            });
            completed = None;
        }
        c.status = Some(st);
        if completed.is_some() {
            c.completed_cycle = completed;
        }
        Ingested::Status { cluster, completed }
    }

    fn is_stale(&self, latest_ms: i64, reference_ms: i64) -> bool {
        reference_ms - latest_ms > self.settings.staleness_ms
    }

    /// Evaluates overload on every node of `cluster` that is online, fresh and has a snapshot
    /// not evaluated yet, and returns the events of the transitions.
    pub fn evaluate_overload(&mut self, cluster: &str, wall_ms: i64) -> Vec<pb::OverloadEvent> {
        let staleness = self.settings.staleness_ms;
        let cfg = self.settings.overload.clone();
        let t = self.settings.thresholds;
        let limits = Limits {
            cpu: t.cpu,
            mem: t.mem,
            iowait: t.iowait,
        };
        let Some(c) = self.clusters.get_mut(cluster) else {
            return Vec::new();
        };
        let Some(data_now) = c.data_now_ms() else {
            return Vec::new();
        };
        let reference = data_now.max(wall_ms);
        let mut events = Vec::new();
        for (name, node) in &mut c.nodes {
            let Some(s) = &node.latest else { continue };
            if s.status != pb::NodeStatus::Online as i32
                || reference - s.observed_at_unix_ms > staleness
                || node.evaluated_at_ms == Some(s.observed_at_unix_ms)
            {
                continue;
            }
            node.evaluated_at_ms = Some(s.observed_at_unix_ms);
            let Some(cur) = node.window.latest() else {
                continue;
            };
            let day = node.window.day_stats(s.observed_at_unix_ms);
            let reading = Reading {
                at_ms: s.observed_at_unix_ms,
                cpu: cur.cpu,
                mem: cur.mem,
                iowait: cur.iowait,
                avg_24h: day.map(|d| (d.avg_cpu, d.avg_mem, d.avg_iowait)),
                overcommit_ratio: s.overcommit_ratio,
            };
            for tr in node.overload.evaluate(&reading, &limits, &cfg) {
                let mut e = pb::OverloadEvent {
                    cluster: cluster.to_owned(),
                    node: name.clone(),
                    reason: tr.reason as i32,
                    state: tr.state as i32,
                    value: tr.value,
                    avg_24h: tr.avg_24h,
                    threshold: tr.threshold,
                    since_unix_ms: tr.since_ms,
                    at_unix_ms: tr.at_ms,
                    event_id: String::new(),
                };
                e.event_id = overload_event_id(&e);
                events.push(e);
            }
        }
        events
    }

    /// The engine's view of `cluster` built from the windows, or `None` for an unknown
    /// cluster or one without snapshots.
    pub fn view(&self, cluster: &str, wall_ms: i64) -> Option<ClusterView> {
        let c = self.clusters.get(cluster)?;
        let data_now = c.data_now_ms()?;
        let reference = data_now.max(wall_ms);
        let mut nodes = Vec::new();
        let mut maintenance = Vec::new();
        // vmid → (observed_at, node name, guest): the freshest report of a guest wins.
        let mut guests: BTreeMap<u32, (i64, &str, &pb::Guest)> = BTreeMap::new();
        for (name, n) in &c.nodes {
            let Some(s) = &n.latest else { continue };
            let stale = self.is_stale(s.observed_at_unix_ms, reference);
            let total_mem_gb = s.mem_total_bytes as f64 / GIB;
            let status = match pb::NodeStatus::try_from(s.status) {
                Ok(pb::NodeStatus::Online) if !stale && total_mem_gb > 0.0 => NodeStatus::Online,
                Ok(pb::NodeStatus::Offline) => NodeStatus::Offline,
                _ => NodeStatus::Unknown,
            };
            let cur = sample_of(s, n.window.latest().map_or(0.0, |l| l.iowait));
            let day = n.window.day_stats(data_now);
            let week = n.window.week_stats(data_now);
            let mut storage: Vec<engine::Storage> = Vec::new();
            let mut ids = BTreeSet::new();
            for st in &s.storages {
                if ids.insert(st.id.as_str()) {
                    storage.push(engine::Storage {
                        id: st.id.clone(),
                        active: st.active,
                        shared: st.shared,
                        usage_pct: if st.total_bytes > 0 {
                            st.used_bytes as f64 / st.total_bytes as f64 * 100.0
                        } else {
                            0.0
                        },
                    });
                }
            }
            if s.maintenance && status == NodeStatus::Online {
                maintenance.push(name.clone());
            }
            nodes.push(NodeView {
                name: name.clone(),
                status,
                cpu_cores: s.cpu_threads.max(1),
                total_mem_gb,
                current: CurrentMetrics {
                    cpu: cur.cpu,
                    mem: cur.mem,
                    iowait: cur.iowait,
                },
                avg_24h: day.map(|d| DayAverages {
                    cpu: d.avg_cpu,
                    mem: d.avg_mem,
                    iowait: d.avg_iowait,
                    load: d.avg_load,
                }),
                week: week.map(|w| WeekStats {
                    avg_cpu: w.avg_cpu,
                    max_cpu: w.max_cpu,
                    avg_mem: w.avg_mem,
                    max_mem: w.max_mem,
                    avg_iowait: w.avg_iowait,
                }),
                history: n.window.hourly(data_now),
                storage,
            });
            for g in &s.guests {
                let better = guests.get(&g.vmid).is_none_or(|(t, node, _)| {
                    (s.observed_at_unix_ms, name.as_str()) > (*t, *node)
                });
                if better {
                    guests.insert(g.vmid, (s.observed_at_unix_ms, name.as_str(), g));
                }
            }
        }
        let guests = guests
            .into_values()
            .map(|(_, node, g)| GuestView {
                vmid: g.vmid,
                name: g.name.clone(),
                kind: if g.kind == pb::GuestKind::Lxc as i32 {
                    GuestKind::Lxc
                } else {
                    GuestKind::Qemu
                },
                node: node.to_owned(),
                status: if g.status.trim().is_empty() {
                    "unknown".to_owned()
                } else {
                    g.status.clone()
                },
                cpu_percent: g.cpu_fraction * 100.0,
                cpu_cores: (g.vcpus.ceil() as u32).max(1),
                mem_used_gb: g.mem_used_bytes as f64 / GIB,
                mem_max_gb: g.mem_max_bytes as f64 / GIB,
                disk_read_bps: g.disk_read_bps,
                disk_write_bps: g.disk_write_bps,
                net_in_bps: g.net_in_bps,
                net_out_bps: g.net_out_bps,
                tags: g.tags.clone(),
                ha_managed: g.ha_managed,
                lock: (!g.lock.is_empty()).then(|| g.lock.clone()),
                template: g.template,
                passthrough: g.passthrough,
                unshared_bind_mount: g.unshared_bind_mount,
                storages: g.storages.clone(),
                config_known: g.config_known,
            })
            .collect();
        Some(ClusterView {
            format: VIEW_FORMAT.to_owned(),
            cluster: cluster.to_owned(),
            now: data_now.div_euclid(1000),
            thresholds: Some(self.settings.thresholds),
            maintenance_nodes: maintenance,
            nodes,
            guests,
            penalty_config: self.settings.config.to_map(),
        })
    }

    /// Caches a freshly computed set and returns the change event (without the set: its views
    /// are in [`State::cached`]), with `true` when its moves differ from the cached ones (the
    /// first set of a cluster always counts as a change).
    pub fn store_set(
        &mut self,
        set: engine::RecommendationSet,
        at_ms: i64,
        cycle: u64,
    ) -> (pb::RecommendationsChanged, bool) {
        let c = self.clusters.entry(set.cluster.clone()).or_default();
        let full = Arc::new(convert::set_to_proto(&set));
        let moves = |s: &pb::RecommendationSet| -> BTreeMap<u32, (String, String)> {
            s.recommendations
                .iter()
                .map(|r| (r.vmid, (r.source_node.clone(), r.target_node.clone())))
                .collect()
        };
        let new_moves = moves(&full);
        let (old_moves, generation) = match &c.cached {
            Some(old) => (Some(moves(&old.full)), old.generation),
            None => (None, 0),
        };
        let changed = old_moves.as_ref() != Some(&new_moves);
        let generation = if changed { generation + 1 } else { generation };
        let event = {
            let old = if changed {
                old_moves.unwrap_or_default()
            } else {
                new_moves.clone()
            };
            pb::RecommendationsChanged {
                cluster: set.cluster.clone(),
                at_unix_ms: at_ms,
                generation,
                added_vmids: new_moves
                    .keys()
                    .filter(|v| !old.contains_key(v))
                    .copied()
                    .collect(),
                removed_vmids: old
                    .keys()
                    .filter(|v| !new_moves.contains_key(v))
                    .copied()
                    .collect(),
                changed_vmids: new_moves
                    .iter()
                    .filter(|(v, m)| old.get(v).is_some_and(|o| o != *m))
                    .map(|(v, _)| *v)
                    .collect(),
                recommendations: None,
                cycle,
            }
        };
        c.cached = Some(Cached {
            encoded_full: cached_response(&full, generation),
            encoded_basic: cached_response(&convert::basic_view(&full), generation),
            full,
            generation,
            cycle,
        });
        (event, changed)
    }

    /// The cached set of a cluster.
    pub fn cached(&self, cluster: &str) -> Option<&Cached> {
        self.clusters.get(cluster)?.cached.as_ref()
    }

    /// Whether the cluster is known (some message named it).
    pub fn knows(&self, cluster: &str) -> bool {
        self.clusters.contains_key(cluster)
    }

    /// Names of the clusters with at least one snapshot.
    pub fn cluster_names(&self) -> Vec<String> {
        self.clusters
            .iter()
            .filter(|(_, c)| c.data_now_ms().is_some())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Whether some cluster has a cached set and a node whose snapshot is fresh by the wall clock.
    pub fn has_fresh_data(&self, wall_ms: i64) -> bool {
        self.clusters.values().any(|c| {
            c.cached.is_some()
                && c.nodes.values().any(|n| {
                    n.latest
                        .as_ref()
                        .is_some_and(|s| !self.is_stale(s.observed_at_unix_ms, wall_ms))
                })
        })
    }

    /// The summaries of every cluster with snapshots.
    pub fn summaries(&self, wall_ms: i64) -> Vec<pb::ClusterSummary> {
        self.clusters
            .iter()
            .filter_map(|(name, c)| {
                let data_now = c.data_now_ms()?;
                let reference = data_now.max(wall_ms);
                let latest: Vec<&pb::NodeSnapshot> =
                    c.nodes.values().filter_map(|n| n.latest.as_ref()).collect();
                Some(pb::ClusterSummary {
                    name: name.clone(),
                    nodes: latest.len() as u32,
                    guests: latest.iter().map(|s| s.guests.len() as u32).sum(),
                    stale_nodes: latest
                        .iter()
                        .filter(|s| self.is_stale(s.observed_at_unix_ms, reference))
                        .count() as u32,
                    last_snapshot_unix_ms: data_now,
                    recommendations: c
                        .cached
                        .as_ref()
                        .map_or(0, |x| x.full.recommendations.len() as u32),
                })
            })
            .collect()
    }

    /// The state of one cluster for `GetClusterState`.
    pub fn cluster_state(
        &self,
        cluster: &str,
        wall_ms: i64,
    ) -> Option<pb::GetClusterStateResponse> {
        let c = self.clusters.get(cluster)?;
        let data_now = c.data_now_ms()?;
        let reference = data_now.max(wall_ms);
        let nodes = c
            .nodes
            .values()
            .filter_map(|n| {
                let s = n.latest.as_ref()?;
                let day = n.window.day_stats(data_now);
                let week = n.window.week_stats(data_now);
                Some(pb::NodeState {
                    latest: Some(s.clone()),
                    stale: self.is_stale(s.observed_at_unix_ms, reference),
                    stats: Some(pb::NodeWindowStats {
                        avg_cpu_24h: day.map_or(0.0, |d| d.avg_cpu),
                        max_cpu_24h: day.map_or(0.0, |d| d.max_cpu),
                        avg_mem_24h: day.map_or(0.0, |d| d.avg_mem),
                        max_mem_24h: day.map_or(0.0, |d| d.max_mem),
                        avg_iowait_24h: day.map_or(0.0, |d| d.avg_iowait),
                        avg_cpu_7d: week.map_or(0.0, |w| w.avg_cpu),
                        max_cpu_7d: week.map_or(0.0, |w| w.max_cpu),
                        avg_mem_7d: week.map_or(0.0, |w| w.avg_mem),
                        max_mem_7d: week.map_or(0.0, |w| w.max_mem),
                        avg_iowait_7d: week.map_or(0.0, |w| w.avg_iowait),
                        avg_load_24h: day.map_or(0.0, |d| d.avg_load),
                    }),
                    overloaded: n.overload.raised().into_iter().map(|r| r as i32).collect(),
                    hourly_samples: n.window.hourly(data_now).len() as u32,
                    raw_samples: n.window.raw().count() as u32,
                })
            })
            .collect();
        Some(pb::GetClusterStateResponse {
            cluster: cluster.to_owned(),
            nodes,
            last_status: c.status.clone(),
        })
    }

    /// Bytes of window state per tracked node (the memory budget's figure, guests excluded).
    pub fn window_bytes_per_node(&self) -> usize {
        NodeWindow::new().memory_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxbalance_proto::SCHEMA_VERSION;

    const T0: i64 = 1_764_230_400_000;

    fn settings() -> StateSettings {
        StateSettings {
            subjects: Subjects::default(),
            staleness_ms: 60_000,
            overload: OverloadConfig::default(),
            config: PenaltyConfig::default(),
            thresholds: Thresholds::default(),
        }
    }

    fn snap(node: &str, cycle: u64, at: i64, cpu: f64) -> pb::NodeSnapshot {
        pb::NodeSnapshot {
            schema_version: SCHEMA_VERSION,
            cluster: "c".into(),
            node: node.into(),
            cycle,
            observed_at_unix_ms: at,
            status: pb::NodeStatus::Online as i32,
            cpu_fraction: cpu,
            cpu_threads: 8,
            iowait_fraction: Some(0.01),
            mem_used_bytes: 8 << 30,
            mem_total_bytes: 32 << 30,
            committed_mem_bytes: 8 << 30,
            overcommit_ratio: 0.25,
            guests: vec![pb::Guest {
                vmid: if node == "a" { 100 } else { 200 },
                kind: pb::GuestKind::Qemu as i32,
                name: format!("g-{node}"),
                status: "running".into(),
                cpu_fraction: 0.5,
                vcpus: 2.0,
                mem_used_bytes: 4 << 30,
                mem_max_bytes: 8 << 30,
                config_known: true,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn status(cycle: u64, nodes: &[&str]) -> pb::ClusterStatus {
        pb::ClusterStatus {
            schema_version: SCHEMA_VERSION,
            cluster: "c".into(),
            cycle,
            nodes: nodes
                .iter()
                .map(|n| pb::ClusterNode {
                    node: (*n).into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn ingest_snap(st: &mut State, s: &pb::NodeSnapshot) -> Result<Ingested, Rejection> {
        st.ingest(
            &Subjects::default().snapshot(&s.cluster, &s.node),
            &proxbalance_proto::encode(s),
        )
    }

    #[test]
    fn invalid_messages_are_rejected_with_a_reason() {
        let mut st = State::new(settings());
        let subj = Subjects::default();
        let e = st
            .ingest(&subj.snapshot("c", "a"), &[0xff, 0xff])
            .unwrap_err();
        assert_eq!(e.label(), "decode");
        let mut s = snap("a", 1, T0, 0.5);
        s.schema_version = 7;
        let e = ingest_snap(&mut st, &s).unwrap_err();
        assert_eq!(e.label(), "schema_version");
        let s = snap("b", 1, T0, 0.5);
        let e = st
            .ingest(&subj.snapshot("c", "a"), &proxbalance_proto::encode(&s))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "node: subject says \"a\", payload says \"b\""
        );
        let mut s = snap("a", 1, T0, f64::NAN);
        let e = ingest_snap(&mut st, &s).unwrap_err();
        assert_eq!(e.to_string(), "cpu_fraction: expected a finite number");
        s.cpu_fraction = 0.1;
        s.guests[0].disk_read_bps = -1.0;
        let e = ingest_snap(&mut st, &s).unwrap_err();
        assert_eq!(
            e.to_string(),
            "guests[0].disk_read_bps: expected a number ≥ 0"
        );
        assert_eq!(e.label(), "negative_value");
        let e = st.ingest("other.v1.snapshot.c.a", &[]).unwrap_err();
        assert_eq!(e.label(), "subject");
        assert!(st.cluster_names().is_empty());
    }

    #[test]
    fn cycle_completes_on_status_or_when_every_listed_node_reported() {
        let mut st = State::new(settings());
        let r = ingest_snap(&mut st, &snap("a", 1, T0, 0.5)).unwrap();
        assert_eq!(
            r,
            Ingested::Snapshot {
                cluster: "c".into(),
                observed_at_ms: T0,
                completed: None
            }
        );
        assert_eq!(
            st.apply_status(status(1, &["a", "b"])),
            Ingested::Status {
                cluster: "c".into(),
                completed: Some(1)
            }
        );
        // Cycle 2: complete once a and b have both reported; the status then adds nothing.
        let r = ingest_snap(&mut st, &snap("a", 2, T0 + 10_000, 0.5)).unwrap();
        assert!(matches!(
            r,
            Ingested::Snapshot {
                completed: None,
                ..
            }
        ));
        ingest_snap(&mut st, &snap("b", 1, T0, 0.5)).unwrap();
        let r = ingest_snap(&mut st, &snap("b", 2, T0 + 10_000, 0.5)).unwrap();
        assert!(
            matches!(
                r,
                Ingested::Snapshot {
                    completed: Some(2),
                    ..
                }
            ),
            "{r:?}"
        );
        assert!(matches!(
            st.apply_status(status(2, &["a", "b"])),
            Ingested::Status {
                completed: None,
                ..
            }
        ));
    }

    /// A history of `node` collected at `at`: a day of one-minute points at 5 % IOWait.
    fn history(node: &str, at: i64) -> pb::NodeHistory {
        pb::NodeHistory {
            schema_version: SCHEMA_VERSION,
            cluster: "c".into(),
            node: node.into(),
            collected_at_unix_ms: at,
            day: (1..=1440)
                .map(|m| pb::HistoryPoint {
                    time_unix_ms: at - m * 60_000,
                    cpu_fraction: Some(0.1),
                    iowait_fraction: Some(0.05),
                    mem_used_bytes: Some(8.0 * GIB),
                    mem_total_bytes: Some(32.0 * GIB),
                    load_average: Some(1.0),
                })
                .collect(),
            week: Vec::new(),
        }
    }

    const GIB: f64 = (1u64 << 30) as f64;

    fn iowait_burst(node: &str) -> pb::NodeSnapshot {
        let mut s = snap(node, 1, T0, 0.1);
        s.iowait_fraction = Some(0.4);
        s
    }

    fn history_completion(r: Ingested) -> Option<u64> {
        match r {
            Ingested::History { completed, .. } => completed,
            other => panic!("not a history: {other:?}"),
        }
    }

    #[test]
    fn a_status_listing_histories_completes_its_cycle_with_the_last_of_them() {
        let mut st = State::new(settings());
        ingest_snap(&mut st, &iowait_burst("a")).unwrap();
        ingest_snap(&mut st, &snap("b", 1, T0, 0.1)).unwrap();
        let mut s1 = status(1, &["a", "b"]);
        s1.collected_at_unix_ms = T0;
        s1.histories = vec!["a".into(), "b".into()];
        // The status overtook the histories it lists: the cycle waits for them.
        assert_eq!(
            st.apply_status(s1),
            Ingested::Status {
                cluster: "c".into(),
                completed: None
            }
        );
        // An older history of a does not count; a's and b's of this cycle do, the last completes.
        assert_eq!(
            history_completion(st.apply_history(&history("a", T0 - 1))),
            None
        );
        assert_eq!(
            history_completion(st.apply_history(&history("a", T0))),
            None
        );
        assert_eq!(
            history_completion(st.apply_history(&history("b", T0))),
            Some(1)
        );
        assert_eq!(
            history_completion(st.apply_history(&history("b", T0))),
            None
        );
        // So a's first evaluation knows its 24 h IOWait average (5 %): a 40 % burst alone does
        // not pass the rule (24 h average above 0.7 × 30 %).
        let events = st.evaluate_overload("c", T0);
        assert!(
            events
                .iter()
                .all(|e| e.reason() != pb::OverloadReason::Iowait),
            "{events:?}"
        );
        // Without its history the burst would look sustained.
        let mut blind = State::new(settings());
        ingest_snap(&mut blind, &iowait_burst("a")).unwrap();
        blind.apply_status(status(1, &["a"]));
        let events = blind.evaluate_overload("c", T0);
        assert!(
            events
                .iter()
                .any(|e| e.reason() == pb::OverloadReason::Iowait),
            "{events:?}"
        );

        // Histories applied before their status: the status completes the cycle at once.
        let mut st = State::new(settings());
        st.apply_history(&history("a", T0));
        ingest_snap(&mut st, &snap("a", 1, T0, 0.1)).unwrap();
        let mut s1 = status(1, &["a"]);
        s1.collected_at_unix_ms = T0;
        s1.histories = vec!["a".into()];
        assert!(matches!(
            st.apply_status(s1),
            Ingested::Status {
                completed: Some(1),
                ..
            }
        ));

        // A history that never comes holds its cycle back until the next one completes.
        let mut st = State::new(settings());
        ingest_snap(&mut st, &snap("a", 1, T0, 0.1)).unwrap();
        let mut s1 = status(1, &["a"]);
        s1.collected_at_unix_ms = T0;
        s1.histories = vec!["a".into()];
        assert!(matches!(
            st.apply_status(s1),
            Ingested::Status {
                completed: None,
                ..
            }
        ));
        let r = ingest_snap(&mut st, &snap("a", 2, T0 + 10_000, 0.1)).unwrap();
        assert!(
            matches!(
                r,
                Ingested::Snapshot {
                    completed: Some(2),
                    ..
                }
            ),
            "{r:?}"
        );
        assert_eq!(
            history_completion(st.apply_history(&history("a", T0))),
            None
        );
    }

    #[test]
    fn view_marks_stale_and_offline_nodes_and_dedupes_guests() {
        let mut st = State::new(settings());
        ingest_snap(&mut st, &snap("a", 1, T0, 0.5)).unwrap();
        // Guest 100 migrated to b by the next cycle: b's report is fresher. (In the same cycle
        // it would be a guest on two nodes, refused.)
        let mut b = snap("b", 2, T0 + 120_000, 0.2);
        b.guests[0].vmid = 100;
        ingest_snap(&mut st, &b).unwrap();
        let mut c = snap("d", 1, T0 + 120_000, 0.2);
        c.status = pb::NodeStatus::Unreachable as i32;
        c.guests.clear();
        ingest_snap(&mut st, &c).unwrap();
        let view = st.view("c", T0).unwrap();
        assert_eq!(view.now, (T0 + 120_000) / 1000);
        let status: Vec<(&str, NodeStatus)> = view
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.status))
            .collect();
        assert_eq!(
            status,
            vec![
                ("a", NodeStatus::Unknown),
                ("b", NodeStatus::Online),
                ("d", NodeStatus::Unknown)
            ]
        );
        assert_eq!(view.guests.len(), 1);
        assert_eq!(view.guests[0].node, "b");
        assert_eq!(view.guests[0].cpu_percent, 50.0);
        let b = &view.nodes[1];
        assert_eq!(b.current.cpu, 20.0);
        assert_eq!(b.current.mem, 25.0);
        assert_eq!(b.total_mem_gb, 32.0);
        assert_eq!(b.avg_24h.map(|d| d.cpu), Some(20.0));
        // The view is valid for the engine.
        let cluster = view.validate().unwrap();
        assert_eq!(engine::plan(&cluster, None).cluster, "c");
        // Wall clock far ahead: everything is stale, and the state is not fresh.
        assert!(!st.has_fresh_data(T0)); // no cached set yet
        let v = st.view("c", T0 + 3_600_000).unwrap();
        assert!(v.nodes.iter().all(|n| n.status != NodeStatus::Online));
    }

    #[test]
    fn a_guest_whose_configuration_is_unread_stays_where_it_is() {
        let mut st = State::new(settings());
        let mut a = snap("a", 1, T0, 0.95);
        a.guests[0].passthrough = false;
        a.guests[0].config_known = false;
        ingest_snap(&mut st, &a).unwrap();
        ingest_snap(&mut st, &snap("b", 1, T0, 0.05)).unwrap();
        let view = st.view("c", T0).unwrap();
        let guest = view.guests.iter().find(|g| g.vmid == 100).unwrap();
        assert!(!guest.config_known);
        let cluster = view.validate().unwrap();
        let set = engine::plan(&cluster, None);
        assert!(set.recommendations.iter().all(|r| r.vmid != 100));
        let skipped = set.skipped.iter().find(|s| s.vmid == 100).unwrap();
        assert_eq!(skipped.reason, engine::SkipReason::ConfigUnknown);
        let options = engine::migration_options(&cluster, 100).unwrap();
        assert_eq!(
            options.source.guest_gate.map(|g| g.reason),
            Some(engine::SkipReason::ConfigUnknown)
        );
    }

    #[test]
    fn store_set_reports_changes_only_when_moves_differ() {
        let mut st = State::new(settings());
        let cluster = engine::synthetic::cluster_view(6, 60, 3)
            .validate()
            .unwrap();
        let set = engine::plan(&cluster, None);
        let (e1, changed) = st.store_set(set.clone(), 1, 1);
        assert!(changed);
        assert_eq!(e1.generation, 1);
        assert_eq!(e1.cycle, 1);
        assert_eq!(e1.added_vmids.len(), set.recommendations.len());
        let (same, changed) = st.store_set(set.clone(), 2, 2);
        assert!(!changed);
        assert_eq!((same.generation, same.cycle), (1, 2));
        assert!(same.added_vmids.is_empty() && same.removed_vmids.is_empty());
        let mut fewer = set.clone();
        let gone = fewer.recommendations.pop().unwrap().vmid;
        let (e2, changed) = st.store_set(fewer, 3, 3);
        assert!(changed);
        assert_eq!(e2.generation, 2);
        assert_eq!(e2.removed_vmids, vec![gone]);
        assert!(e2.added_vmids.is_empty());
        assert_eq!(st.cached(&set.cluster).unwrap().generation, 2);
    }

    #[test]
    fn cached_responses_decode_to_the_response_message() {
        let cluster = engine::synthetic::cluster_view(6, 60, 3)
            .validate()
            .unwrap();
        let set = convert::set_to_proto(&engine::plan(&cluster, None));
        for generation in [0, 1, u64::MAX] {
            let bytes = cached_response(&set, generation);
            let expected = pb::GetRecommendationsResponse {
                set: Some(set.clone()),
                computed_fresh: false,
                generation,
            };
            assert_eq!(
                <pb::GetRecommendationsResponse as prost::Message>::decode(bytes.clone()).unwrap(),
                expected
            );
            assert_eq!(bytes, prost::Message::encode_to_vec(&expected));
        }
    }

    #[test]
    fn overload_events_carry_deterministic_ids() {
        let mut st = State::new(settings());
        st.apply_status(status(1, &["a"]));
        ingest_snap(&mut st, &snap("a", 1, T0, 0.9)).unwrap();
        let ev = st.evaluate_overload("c", T0);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].event_id, format!("c:a:cpu:raised:{T0}"));
        assert_eq!(ev[0].value, 90.0);
        // The same snapshot is not evaluated twice.
        assert!(st.evaluate_overload("c", T0).is_empty());
    }
}
