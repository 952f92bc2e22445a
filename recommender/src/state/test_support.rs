//! Messages and settings the state's unit tests build on.

use proxbalance_proto::SCHEMA_VERSION;
use proxbalance_proto::subjects::Subjects;
use proxbalance_proto::v1 as pb;

use super::{Ingested, Rejection, State, StateSettings};
use crate::config::OverloadConfig;
use proxbalance_engine::{PenaltyConfig, Thresholds};

pub const T0: i64 = 1_764_230_400_000;

pub fn settings() -> StateSettings {
    StateSettings {
        subjects: Subjects::default(),
        staleness_ms: 60_000,
        overload: OverloadConfig::default(),
        config: PenaltyConfig::default(),
        thresholds: Thresholds::default(),
    }
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
