//! Messages and settings the state's unit tests build on.

use proxbalance_proto::SCHEMA_VERSION;
use proxbalance_proto::subjects::Subjects;
use proxbalance_proto::v1 as pb;

pub use super::{Arrival, Ingested, Rejection, State, StateSettings};

pub const T0: i64 = 1_764_230_400_000;

pub fn settings() -> StateSettings {
    StateSettings {
        staleness_ms: 60_000,
        ..StateSettings::default()
    }
}

/// A message stored and applied at `T0`.
pub fn at_t0() -> Arrival {
    Arrival::at(T0)
}

pub fn snap(node: &str, cycle: u64, at: i64, cpu: f64) -> pb::NodeSnapshot {
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

pub fn status(cycle: u64, nodes: &[&str]) -> pb::ClusterStatus {
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

pub fn ingest_snap(st: &mut State, s: &pb::NodeSnapshot) -> Result<Ingested, Rejection> {
    st.ingest(
        &Subjects::default().snapshot(&s.cluster, &s.node),
        &proxbalance_proto::encode(s),
        Arrival::at(s.observed_at_unix_ms),
    )
}

/// A history of `node` collected at `at`: a day of one-minute points at 5 % IOWait.
pub fn history(node: &str, at: i64) -> pb::NodeHistory {
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

pub const GIB: f64 = (1u64 << 30) as f64;

/// Applies `msg` (a snapshot, history or status) on its subject at `at`.
pub fn ingest_at<M: prost::Message>(
    st: &mut State,
    subject: &str,
    msg: &M,
    at: Arrival,
) -> Result<Ingested, Rejection> {
    st.ingest(subject, &proxbalance_proto::encode(msg), at)
}

/// Applies `s` as NATS would deliver it at `wall_ms` (stored then too).
pub fn ingest_snap_at(
    st: &mut State,
    s: &pb::NodeSnapshot,
    wall_ms: i64,
) -> Result<Ingested, Rejection> {
    ingest_at(
        st,
        &Subjects::default().snapshot(&s.cluster, &s.node),
        s,
        Arrival::at(wall_ms),
    )
}

/// The refusal of `r` as `label | message`.
pub fn refusal(r: Result<Ingested, Rejection>) -> String {
    match r {
        Ok(ok) => panic!("accepted: {ok:?}"),
        Err(e) => format!("{} | {e}", e.label()),
    }
}

pub const DAY_MS: i64 = 86_400_000;

/// `(node, state, since, clear cause)` of each overload event.
pub fn lifecycle(
    events: &[pb::OverloadEvent],
) -> Vec<(String, pb::OverloadState, i64, pb::OverloadClearCause)> {
    events
        .iter()
        .map(|e| (e.node.clone(), e.state(), e.since_unix_ms, e.clear_cause()))
        .collect()
}

/// Node `node` at 90 % CPU (overloaded) in `cycle`, observed at `at`, with a guest of its own
/// (vmid 100 on `a`, 200 on `b`, 300 elsewhere).
pub fn hot(node: &str, cycle: u64, at: i64) -> pb::NodeSnapshot {
    let mut s = snap(node, cycle, at, 0.9);
    s.guests[0].vmid = match node {
        "a" => 100,
        "b" => 200,
        _ => 300,
    };
    s
}
