//! Typed views of the PVE API responses the collector reads.
//!
//! Every field is optional and decoded leniently (see [`super::lenient`]); unknown fields are
//! ignored and unknown enum values are kept as strings, so a new PVE release does not break
//! decoding.

use super::lenient::{opt_bool, opt_f64, opt_f64_list, opt_i64, opt_string, opt_u64, opt_vmid};
use serde::Deserialize;

/// One row of `GET /cluster/resources`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct ClusterResource {
    /// `node/<n>`, `qemu/<vmid>`, `lxc/<vmid>`, `storage/<node>/<sid>`, ...
    #[serde(deserialize_with = "opt_string")]
    pub id: Option<String>,
    /// `node`, `qemu`, `lxc`, `storage`, `pool`, `sdn`, `network`, ...
    #[serde(rename = "type", deserialize_with = "opt_string")]
    pub kind: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub node: Option<String>,
    #[serde(deserialize_with = "opt_vmid")]
    pub vmid: Option<u32>,
    #[serde(deserialize_with = "opt_string")]
    pub name: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub status: Option<String>,
    #[serde(deserialize_with = "opt_f64")]
    pub cpu: Option<f64>,
    #[serde(deserialize_with = "opt_f64")]
    pub maxcpu: Option<f64>,
    #[serde(deserialize_with = "opt_u64")]
    pub mem: Option<u64>,
    #[serde(deserialize_with = "opt_u64")]
    pub maxmem: Option<u64>,
    #[serde(deserialize_with = "opt_u64")]
    pub memhost: Option<u64>,
    #[serde(deserialize_with = "opt_u64")]
    pub disk: Option<u64>,
    #[serde(deserialize_with = "opt_u64")]
    pub maxdisk: Option<u64>,
    #[serde(deserialize_with = "opt_u64")]
    pub netin: Option<u64>,
    #[serde(deserialize_with = "opt_u64")]
    pub netout: Option<u64>,
    #[serde(deserialize_with = "opt_u64")]
    pub diskread: Option<u64>,
    #[serde(deserialize_with = "opt_u64")]
    pub diskwrite: Option<u64>,
    #[serde(deserialize_with = "opt_u64")]
    pub uptime: Option<u64>,
    #[serde(deserialize_with = "opt_bool")]
    pub template: Option<bool>,
    #[serde(deserialize_with = "opt_string")]
    pub tags: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub lock: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub pool: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub hastate: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub storage: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub plugintype: Option<String>,
    #[serde(deserialize_with = "opt_bool")]
    pub shared: Option<bool>,
    #[serde(deserialize_with = "opt_string")]
    pub content: Option<String>,
}

/// One row of `GET /cluster/status` (`type` = `cluster` or `node`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct ClusterStatusRow {
    #[serde(rename = "type", deserialize_with = "opt_string")]
    pub kind: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub name: Option<String>,
    #[serde(deserialize_with = "opt_bool")]
    pub quorate: Option<bool>,
    #[serde(deserialize_with = "opt_bool")]
    pub online: Option<bool>,
    #[serde(deserialize_with = "opt_bool")]
    pub local: Option<bool>,
    #[serde(deserialize_with = "opt_string")]
    pub ip: Option<String>,
    #[serde(deserialize_with = "opt_u64")]
    pub nodes: Option<u64>,
}

/// `GET /cluster/options` (only what the collector uses).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct ClusterOptions {
    /// `crs`: an object when read with Sys.Audit, a property string otherwise.
    pub crs: Option<serde_json::Value>,
}

/// `GET /version`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Version {
    #[serde(deserialize_with = "opt_string")]
    pub version: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub release: Option<String>,
}

/// The inner object of `GET /cluster/metrics/export` (`{"data":{"data":[...]}}`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct MetricsExport {
    pub data: Vec<MetricSample>,
}

/// One sample of `/cluster/metrics/export`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct MetricSample {
    #[serde(deserialize_with = "opt_string")]
    pub id: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub metric: Option<String>,
    #[serde(deserialize_with = "opt_f64")]
    pub value: Option<f64>,
    #[serde(deserialize_with = "opt_i64")]
    pub timestamp: Option<i64>,
}

/// One point of a node's `rrddata`. Data sources without a value are absent.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct RrdPoint {
    #[serde(deserialize_with = "opt_i64")]
    pub time: Option<i64>,
    #[serde(deserialize_with = "opt_f64")]
    pub cpu: Option<f64>,
    #[serde(deserialize_with = "opt_f64")]
    pub iowait: Option<f64>,
    #[serde(deserialize_with = "opt_f64")]
    pub loadavg: Option<f64>,
    #[serde(deserialize_with = "opt_f64")]
    pub memtotal: Option<f64>,
    #[serde(deserialize_with = "opt_f64")]
    pub memused: Option<f64>,
    #[serde(deserialize_with = "opt_f64")]
    pub memavailable: Option<f64>,
    /// Older name of `memavailable` in migrated PVE 8 data.
    #[serde(deserialize_with = "opt_f64")]
    pub memfree: Option<f64>,
    #[serde(deserialize_with = "opt_f64")]
    pub pressurecpusome: Option<f64>,
    #[serde(deserialize_with = "opt_f64")]
    pub pressureiosome: Option<f64>,
    #[serde(deserialize_with = "opt_f64")]
    pub pressureiofull: Option<f64>,
    #[serde(deserialize_with = "opt_f64")]
    pub pressurememorysome: Option<f64>,
    #[serde(deserialize_with = "opt_f64")]
    pub pressurememoryfull: Option<f64>,
}

/// `GET /nodes/{node}/status` (proxied to the node; fails with 595/596 when it is unreachable).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct NodeStatus {
    #[serde(deserialize_with = "opt_f64_list")]
    pub loadavg: Option<Vec<f64>>,
    /// IOWait of the answering worker (a delta; used only when nothing better exists).
    #[serde(deserialize_with = "opt_f64")]
    pub wait: Option<f64>,
    pub memory: Option<MemoryInfo>,
    pub swap: Option<MemoryInfo>,
    pub ksm: Option<KsmInfo>,
    pub cpuinfo: Option<CpuInfo>,
    #[serde(deserialize_with = "opt_string")]
    pub pveversion: Option<String>,
}

/// Memory or swap block of the node status.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct MemoryInfo {
    #[serde(deserialize_with = "opt_u64")]
    pub total: Option<u64>,
    #[serde(deserialize_with = "opt_u64")]
    pub used: Option<u64>,
    #[serde(deserialize_with = "opt_u64")]
    pub free: Option<u64>,
    /// PVE 9 only.
    #[serde(deserialize_with = "opt_u64")]
    pub available: Option<u64>,
}

/// KSM block of the node status.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct KsmInfo {
    #[serde(deserialize_with = "opt_u64")]
    pub shared: Option<u64>,
}

/// CPU block of the node status.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct CpuInfo {
    #[serde(deserialize_with = "opt_u64")]
    pub cpus: Option<u64>,
}

/// One entry of `GET /cluster/ha/resources`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct HaResource {
    #[serde(deserialize_with = "opt_string")]
    pub sid: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub state: Option<String>,
    /// The resource's HA group (PVE 8; gone once groups are migrated to rules).
    #[serde(deserialize_with = "opt_string")]
    pub group: Option<String>,
}

/// One rule of `GET /cluster/ha/rules` (PVE 9).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct HaRuleRow {
    /// The rule id.
    #[serde(deserialize_with = "opt_string")]
    pub rule: Option<String>,
    /// `node-affinity`, `resource-affinity`, ...
    #[serde(rename = "type", deserialize_with = "opt_string")]
    pub kind: Option<String>,
    /// `vm:100,ct:101`.
    #[serde(deserialize_with = "opt_string")]
    pub resources: Option<String>,
    /// Node affinity: `node[:priority],...`.
    #[serde(deserialize_with = "opt_string")]
    pub nodes: Option<String>,
    /// Node affinity: only the listed nodes.
    #[serde(deserialize_with = "opt_bool")]
    pub strict: Option<bool>,
    /// Resource affinity: `positive` or `negative`.
    #[serde(deserialize_with = "opt_string")]
    pub affinity: Option<String>,
    /// The rule is configured but not in force.
    #[serde(deserialize_with = "opt_bool")]
    pub disable: Option<bool>,
}

/// One group of `GET /cluster/ha/groups` (PVE 8).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct HaGroupRow {
    /// The group name.
    #[serde(deserialize_with = "opt_string")]
    pub group: Option<String>,
    /// `node[:priority],...`.
    #[serde(deserialize_with = "opt_string")]
    pub nodes: Option<String>,
    /// Only the listed nodes.
    #[serde(deserialize_with = "opt_bool")]
    pub restricted: Option<bool>,
}

/// One row of `GET /cluster/ha/status/current`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct HaStatusRow {
    #[serde(deserialize_with = "opt_string")]
    pub id: Option<String>,
    #[serde(rename = "type", deserialize_with = "opt_string")]
    pub kind: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub node: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub status: Option<String>,
}

/// A guest config (`/nodes/{n}/qemu/{id}/config` or `/lxc/{id}/config`) kept as a flat map,
/// because the interesting keys (`scsi0`, `mp3`, `hostpci1`, ...) are numbered.
pub type GuestConfig = serde_json::Map<String, serde_json::Value>;
