//! Checking messages before they touch the state: every field within [`limits`], each refusal
//! a [`Rejection`] naming the field, what was expected and a metric label.

use std::collections::BTreeSet;

use proxbalance_proto::codec::CodecError;
use proxbalance_proto::subjects::SubjectError;
use proxbalance_proto::v1 as pb;

use super::limits;

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
    /// A time later than the recommender's clock plus the allowed skew.
    AheadOfClock,
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
            Problem::AheadOfClock => "future_time",
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

pub(super) fn reject(
    problem: Problem,
    field: impl Into<String>,
    detail: impl Into<String>,
) -> Rejection {
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

pub(super) fn check_match(
    field: &'static str,
    subject: &str,
    payload: &str,
) -> Result<(), Rejection> {
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
/// in the same cycle needs the state and is checked by [`super::State::ingest`].
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

/// Checks a history: names, point counts and values within [`limits`], used ≤ total.
pub fn validate_history(h: &pb::NodeHistory) -> Result<(), Rejection> {
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

/// Checks a cluster status: names, list lengths and texts within [`limits`].
pub fn validate_status(st: &pb::ClusterStatus) -> Result<(), Rejection> {
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
    check_count(
        || "ha_rules".to_owned(),
        st.ha_rules.len(),
        limits::MAX_HA_RULES_PER_STATUS,
    )?;
    for (i, r) in st.ha_rules.iter().enumerate() {
        check_name(|| format!("ha_rules[{i}].name"), &r.name)?;
        check_count(
            || format!("ha_rules[{i}].vmids"),
            r.vmids.len(),
            limits::MAX_RULE_GUESTS,
        )?;
        check_count(
            || format!("ha_rules[{i}].nodes"),
            r.nodes.len(),
            limits::MAX_STATUS_ENTRIES,
        )?;
        for (j, n) in r.nodes.iter().enumerate() {
            check_name(|| format!("ha_rules[{i}].nodes[{j}].node"), &n.node)?;
        }
    }
    Ok(())
}

/// A time at most `skew_ms` after `wall_ms`.
pub(super) fn check_not_ahead(
    field: impl FnOnce() -> String,
    t_ms: i64,
    wall_ms: i64,
    skew_ms: i64,
) -> Result<(), Rejection> {
    if t_ms.saturating_sub(wall_ms) > skew_ms {
        Err(reject(
            Problem::AheadOfClock,
            field(),
            format!(
                "{} ms ahead of the recommender's clock (at most {skew_ms} ms allowed: \
                 state.max_clock_skew_s)",
                t_ms.saturating_sub(wall_ms)
            ),
        ))
    } else {
        Ok(())
    }
}

/// Checks that no time of a history (its collection, its points) is ahead of the clock.
pub(super) fn check_history_not_ahead(
    h: &pb::NodeHistory,
    wall_ms: i64,
    skew_ms: i64,
) -> Result<(), Rejection> {
    check_not_ahead(
        || "collected_at_unix_ms".to_owned(),
        h.collected_at_unix_ms,
        wall_ms,
        skew_ms,
    )?;
    for (series, points) in [("day", &h.day), ("week", &h.week)] {
        for (i, p) in points.iter().enumerate() {
            check_not_ahead(
                || format!("{series}[{i}].time_unix_ms"),
                p.time_unix_ms,
                wall_ms,
                skew_ms,
            )?;
        }
    }
    Ok(())
}
