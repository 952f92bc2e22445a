//! Pure construction of the wire messages from PVE answers (no I/O, no clock).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proxbalance_proto::SCHEMA_VERSION;
use proxbalance_proto::v1::{
    ClusterNode, ClusterStatus, CollectionError, CrsSettings, Guest, GuestKind, HistoryPoint,
    NodeHistory, NodeSnapshot, NodeStatus as WireNodeStatus, Pressure, Storage,
};

use crate::pve::PveError;
use crate::pve::types::{
    ClusterResource, ClusterStatusRow, GuestConfig, HaResource, HaStatusRow, NodeStatus, RrdPoint,
};

/// What the collector takes from a guest's config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestConfigInfo {
    /// Ballooning minimum in bytes (0 when ballooning has no minimum or is off).
    pub balloon_min_bytes: u64,
    /// Storage ids referenced by disks, volumes and mount points, sorted and unique.
    pub storages: Vec<String>,
    /// A PCI/USB/device passthrough or physical disk blocks live migration.
    pub passthrough: bool,
    /// A container bind mount without `shared=1`.
    pub unshared_bind_mount: bool,
}

fn key_is(key: &str, prefix: &str) -> bool {
    key.strip_prefix(prefix)
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
}

fn value_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Splits `storage:volume,opt=...` into the storage id (if any) and the options.
fn volume_storage(value: &str) -> (Option<&str>, Vec<(&str, &str)>) {
    let mut parts = value.split(',');
    let first = parts.next().unwrap_or("");
    let opts: Vec<(&str, &str)> = parts
        .filter_map(|p| p.split_once('=').or(Some((p, ""))))
        .collect();
    // `volume=` may be given explicitly as the first option.
    let vol = first
        .strip_prefix("volume=")
        .or_else(|| first.strip_prefix("file="))
        .unwrap_or(first);
    let storage = vol
        .split_once(':')
        .map(|(s, _)| s)
        .filter(|s| !s.is_empty() && !s.starts_with('/'));
    (storage, opts)
}

/// Reads balloon minimum, storages, passthrough and bind mounts from a guest config.
pub fn parse_guest_config(kind: GuestKind, config: &GuestConfig) -> GuestConfigInfo {
    let mut info = GuestConfigInfo::default();
    let mut storages = BTreeSet::new();
    for (key, value) in config {
        let Some(text) = value_text(value) else {
            continue;
        };
        match kind {
            GuestKind::Qemu => {
                if key == "balloon" {
                    let mib = text.trim().parse::<u64>().unwrap_or(0);
                    info.balloon_min_bytes = mib.saturating_mul(1 << 20);
                } else if ["ide", "sata", "scsi", "virtio", "unused"]
                    .iter()
                    .any(|p| key_is(key, p))
                    || key == "efidisk0"
                    || key == "tpmstate0"
                {
                    let (storage, _) = volume_storage(&text);
                    match storage {
                        Some(s) => {
                            storages.insert(s.to_owned());
                        }
                        None => {
                            // A physical device path (`/dev/disk/by-id/...`) cannot move.
                            if text.starts_with('/') {
                                info.passthrough = true;
                            }
                        }
                    }
                } else if key_is(key, "hostpci")
                    || key == "ivshmem"
                    || (key_is(key, "usb")
                        && !text.contains("mapping=")
                        && !text.starts_with("spice"))
                {
                    info.passthrough = true;
                }
            }
            GuestKind::Lxc | GuestKind::Unspecified => {
                if key == "rootfs" || key_is(key, "mp") || key_is(key, "unused") {
                    let (storage, opts) = volume_storage(&text);
                    match storage {
                        Some(s) => {
                            storages.insert(s.to_owned());
                        }
                        None => {
                            let shared = opts
                                .iter()
                                .any(|(k, v)| *k == "shared" && matches!(*v, "1" | "true"));
                            if !shared {
                                info.unshared_bind_mount = true;
                            }
                        }
                    }
                } else if key_is(key, "dev") {
                    info.passthrough = true;
                }
            }
        }
    }
    info.storages = storages.into_iter().collect();
    info
}

/// The freshest IOWait (and PVE 9 pressure) of a node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeSample {
    /// IOWait fraction 0..1.
    pub iowait: Option<f64>,
    /// Time of the sample, unix ms.
    pub at_unix_ms: i64,
    /// Pressure stall information, when the source has it.
    pub pressure: Option<Pressure>,
}

/// The newest RRD point with an IOWait value, as a [`NodeSample`].
pub fn sample_from_rrd(points: &[RrdPoint]) -> Option<NodeSample> {
    let p = points
        .iter()
        .filter(|p| p.iowait.is_some() && p.time.is_some())
        .max_by_key(|p| p.time.unwrap_or(i64::MIN))?;
    let pressure = if p.pressurecpusome.is_some() || p.pressureiosome.is_some() {
        Some(Pressure {
            cpu_some: p.pressurecpusome.unwrap_or(0.0),
            io_some: p.pressureiosome.unwrap_or(0.0),
            io_full: p.pressureiofull.unwrap_or(0.0),
            memory_some: p.pressurememorysome.unwrap_or(0.0),
            memory_full: p.pressurememoryfull.unwrap_or(0.0),
        })
    } else {
        None
    };
    Some(NodeSample {
        iowait: p.iowait,
        at_unix_ms: p.time.unwrap_or(0).saturating_mul(1000),
        pressure,
    })
}

/// Disk and network rates of a guest, bytes per second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GuestRates {
    /// Disk read.
    pub disk_read: f64,
    /// Disk write.
    pub disk_write: f64,
    /// Network in (to the guest).
    pub net_in: f64,
    /// Network out (from the guest).
    pub net_out: f64,
}

/// Turns PVE's cumulative counters into rates by differencing successive observations.
///
/// A counter that went backwards (guest restart) or an observation with no earlier one gives
/// no rate; an observation at the same timestamp as the previous one keeps the previous rate.
#[derive(Debug, Default)]
pub struct RateTracker {
    prev: HashMap<(u32, u8), (f64, i64, Option<f64>)>,
}

impl RateTracker {
    /// Records `value` of counter `metric` (0..=3) of guest `vmid` at `at_ms`; returns the rate.
    pub fn observe(&mut self, vmid: u32, metric: u8, value: f64, at_ms: i64) -> Option<f64> {
        let key = (vmid, metric);
        let rate = match self.prev.get(&key) {
            Some(&(v0, t0, r0)) if at_ms == t0 && value == v0 => r0,
            Some(&(v0, t0, _)) if at_ms > t0 && value >= v0 => {
                Some((value - v0) / ((at_ms - t0) as f64 / 1000.0))
            }
            _ => None,
        };
        self.prev.insert(key, (value, at_ms, rate));
        rate
    }

    /// Forgets guests not in `alive`, bounding memory to the current guests.
    pub fn retain(&mut self, alive: &BTreeSet<u32>) {
        self.prev.retain(|(vmid, _), _| alive.contains(vmid));
    }
}

/// HA information of a cycle.
#[derive(Debug, Clone, Default)]
pub struct HaInfo {
    /// `vm:100` / `ct:200` → configured state, when `/cluster/ha/resources` was read.
    pub resources: Option<BTreeMap<String, String>>,
    /// Nodes whose LRM reports maintenance mode.
    pub maintenance_nodes: BTreeSet<String>,
}

impl HaInfo {
    /// Builds it from the HA resources list (if read) and the HA status rows.
    pub fn new(resources: Option<&[HaResource]>, status: &[HaStatusRow]) -> Self {
        let resources = resources.map(|rs| {
            rs.iter()
                .filter_map(|r| {
                    Some((
                        r.sid.clone()?,
                        r.state.clone().unwrap_or_else(|| "started".into()),
                    ))
                })
                .collect()
        });
        let maintenance_nodes = status
            .iter()
            .filter(|r| r.kind.as_deref() == Some("lrm"))
            .filter(|r| {
                r.status
                    .as_deref()
                    .is_some_and(|s| s.contains("maintenance"))
            })
            .filter_map(|r| r.node.clone())
            .collect();
        Self {
            resources,
            maintenance_nodes,
        }
    }
}

/// Everything one cycle read, ready to be turned into snapshots.
#[derive(Debug, Default)]
pub struct CycleData<'a> {
    /// Cluster name (from the configuration).
    pub cluster: &'a str,
    /// Cycle number.
    pub cycle: u64,
    /// Collection time, unix ms.
    pub now_unix_ms: i64,
    /// `/version` release.
    pub pve_version: &'a str,
    /// `/cluster/resources`.
    pub resources: &'a [ClusterResource],
    /// `/cluster/status`.
    pub status_rows: &'a [ClusterStatusRow],
    /// HA resources and maintenance.
    pub ha: HaInfo,
    /// `/nodes/{node}/status` per node that PVE lists online.
    pub node_status: BTreeMap<String, Result<NodeStatus, PveError>>,
    /// Freshest IOWait per node.
    pub samples: BTreeMap<String, NodeSample>,
    /// Disk/net rates per vmid.
    pub rates: HashMap<u32, GuestRates>,
    /// Parsed guest configs per vmid.
    pub configs: HashMap<u32, GuestConfigInfo>,
    /// Per-node errors besides the node status (e.g. IOWait source failures).
    pub node_errors: BTreeMap<String, Vec<String>>,
}

fn guest_kind(kind: Option<&str>) -> Option<GuestKind> {
    match kind {
        Some("qemu") => Some(GuestKind::Qemu),
        Some("lxc") => Some(GuestKind::Lxc),
        _ => None,
    }
}

fn parse_tags(tags: Option<&str>) -> Vec<String> {
    tags.map(|t| {
        t.split([';', ',', ' '])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

/// The nodes of the cycle: those in `/cluster/resources` and those in `/cluster/status`, sorted.
pub fn node_names(
    resources: &[ClusterResource],
    status_rows: &[ClusterStatusRow],
) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = resources
        .iter()
        .filter(|r| r.kind.as_deref() == Some("node"))
        .filter_map(|r| r.node.clone())
        .collect();
    names.extend(
        status_rows
            .iter()
            .filter(|r| r.kind.as_deref() == Some("node"))
            .filter_map(|r| r.name.clone()),
    );
    names
}

/// Whether PVE itself considers the node online (resources and cluster status agree).
pub fn pve_says_online(
    node: &str,
    resources: &[ClusterResource],
    status_rows: &[ClusterStatusRow],
) -> bool {
    let res = resources
        .iter()
        .find(|r| r.kind.as_deref() == Some("node") && r.node.as_deref() == Some(node));
    let row = status_rows
        .iter()
        .find(|r| r.kind.as_deref() == Some("node") && r.name.as_deref() == Some(node));
    let res_online = res.map(|r| r.status.as_deref() == Some("online"));
    let row_online = row.and_then(|r| r.online);
    match (res_online, row_online) {
        (Some(a), Some(b)) => a && b,
        (Some(a), None) => a,
        (None, Some(b)) => b,
        (None, None) => false,
    }
}

/// Builds one snapshot per node (sorted by node name). Never fails: what could not be read
/// is reported in the snapshot's status and `error`.
pub fn build_snapshots(data: &CycleData<'_>) -> Vec<NodeSnapshot> {
    let names = node_names(data.resources, data.status_rows);
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        out.push(build_node(data, &name));
    }
    out
}

fn build_node(data: &CycleData<'_>, name: &str) -> NodeSnapshot {
    let res = data
        .resources
        .iter()
        .find(|r| r.kind.as_deref() == Some("node") && r.node.as_deref() == Some(name));
    let mut errors: Vec<String> = data.node_errors.get(name).cloned().unwrap_or_default();
    let online = pve_says_online(name, data.resources, data.status_rows);
    let node_status = data.node_status.get(name);
    let status = if online {
        match node_status {
            Some(Ok(_)) | None => WireNodeStatus::Online,
            Some(Err(e)) => {
                errors.insert(0, e.to_string());
                WireNodeStatus::Unreachable
            }
        }
    } else {
        match res.and_then(|r| r.status.as_deref()) {
            Some("unknown") => WireNodeStatus::Unknown,
            _ => WireNodeStatus::Offline,
        }
    };
    let ns = node_status.and_then(|r| r.as_ref().ok());
    let ha_state = res.and_then(|r| r.hastate.clone()).unwrap_or_default();
    let maintenance = ha_state == "maintenance" || data.ha.maintenance_nodes.contains(name);

    let mem_total = res
        .and_then(|r| r.maxmem)
        .or_else(|| ns.and_then(|s| s.memory.as_ref()?.total))
        .unwrap_or(0);
    let mem_used = res
        .and_then(|r| r.mem)
        .or_else(|| ns.and_then(|s| s.memory.as_ref()?.used))
        .unwrap_or(0);
    let mem_available = ns
        .and_then(|s| s.memory.as_ref()?.available)
        .unwrap_or_else(|| mem_total.saturating_sub(mem_used));

    // Storages of this node.
    let storages: Vec<Storage> = {
        let mut v: Vec<Storage> = data
            .resources
            .iter()
            .filter(|r| r.kind.as_deref() == Some("storage") && r.node.as_deref() == Some(name))
            .filter_map(|r| {
                Some(Storage {
                    id: r.storage.clone()?,
                    r#type: r.plugintype.clone().unwrap_or_default(),
                    shared: r.shared.unwrap_or(false),
                    active: r.status.as_deref() == Some("available"),
                    total_bytes: r.maxdisk.unwrap_or(0),
                    used_bytes: r.disk.unwrap_or(0),
                    content: r.content.clone().unwrap_or_default(),
                })
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    };
    let shared_of = |sid: &str| storages.iter().find(|s| s.id == sid).map(|s| s.shared);

    let mut guests: Vec<Guest> = data
        .resources
        .iter()
        .filter(|r| r.node.as_deref() == Some(name))
        .filter_map(|r| {
            let kind = guest_kind(r.kind.as_deref())?;
            let vmid = r.vmid?;
            let cfg = data.configs.get(&vmid);
            let rates = data.rates.get(&vmid).copied().unwrap_or_default();
            let sid = format!(
                "{}:{vmid}",
                if kind == GuestKind::Qemu { "vm" } else { "ct" }
            );
            let ha_state = r.hastate.clone().unwrap_or_default();
            let ha_managed = match &data.ha.resources {
                Some(map) => map.get(&sid).is_some_and(|s| s != "ignored"),
                None => !ha_state.is_empty() && ha_state != "ignored",
            };
            let storages = cfg.map(|c| c.storages.clone()).unwrap_or_default();
            let local_storages = storages
                .iter()
                .filter(|s| shared_of(s) != Some(true))
                .cloned()
                .collect();
            Some(Guest {
                vmid,
                kind: kind as i32,
                name: r.name.clone().unwrap_or_default(),
                status: r.status.clone().unwrap_or_else(|| "unknown".into()),
                cpu_fraction: r.cpu.unwrap_or(0.0),
                vcpus: r.maxcpu.unwrap_or(0.0),
                mem_used_bytes: r.mem.unwrap_or(0),
                mem_max_bytes: r.maxmem.unwrap_or(0),
                balloon_min_bytes: cfg.map_or(0, |c| c.balloon_min_bytes),
                disk_read_bps: rates.disk_read,
                disk_write_bps: rates.disk_write,
                net_in_bps: rates.net_in,
                net_out_bps: rates.net_out,
                tags: parse_tags(r.tags.as_deref()),
                ha_state,
                ha_managed,
                lock: r.lock.clone().unwrap_or_default(),
                template: r.template.unwrap_or(false),
                pool: r.pool.clone().unwrap_or_default(),
                passthrough: cfg.is_some_and(|c| c.passthrough),
                unshared_bind_mount: cfg.is_some_and(|c| c.unshared_bind_mount),
                storages,
                config_known: cfg.is_some(),
                uptime_s: r.uptime.unwrap_or(0),
                mem_host_bytes: r.memhost.unwrap_or(0),
                local_storages,
            })
        })
        .collect();
    guests.sort_by_key(|g| g.vmid);

    let committed: u64 = guests
        .iter()
        .filter(|g| g.status == "running")
        .map(|g| g.mem_max_bytes)
        .fold(0u64, u64::saturating_add);
    let overcommit_ratio = if mem_total > 0 {
        committed as f64 / mem_total as f64
    } else {
        0.0
    };

    let sample = data.samples.get(name);
    let reachable = status == WireNodeStatus::Online;
    NodeSnapshot {
        schema_version: SCHEMA_VERSION,
        cluster: data.cluster.to_owned(),
        node: name.to_owned(),
        cycle: data.cycle,
        observed_at_unix_ms: data.now_unix_ms,
        status: status as i32,
        ha_state,
        maintenance,
        cpu_fraction: if reachable {
            res.and_then(|r| r.cpu).unwrap_or(0.0)
        } else {
            0.0
        },
        cpu_threads: res
            .and_then(|r| r.maxcpu)
            .map(|c| c as u32)
            .or_else(|| ns.and_then(|s| s.cpuinfo.as_ref()?.cpus).map(|c| c as u32))
            .unwrap_or(0),
        iowait_fraction: if reachable {
            sample.and_then(|s| s.iowait)
        } else {
            None
        },
        iowait_sampled_at_unix_ms: if reachable {
            sample.map_or(0, |s| s.at_unix_ms)
        } else {
            0
        },
        load_average: ns.and_then(|s| s.loadavg.clone()).unwrap_or_default(),
        mem_used_bytes: mem_used,
        mem_total_bytes: mem_total,
        mem_available_bytes: mem_available,
        committed_mem_bytes: committed,
        overcommit_ratio,
        swap_used_bytes: ns.and_then(|s| s.swap.as_ref()?.used).unwrap_or(0),
        swap_total_bytes: ns.and_then(|s| s.swap.as_ref()?.total).unwrap_or(0),
        ksm_shared_bytes: ns.and_then(|s| s.ksm.as_ref()?.shared).unwrap_or(0),
        pressure: if reachable {
            sample.and_then(|s| s.pressure)
        } else {
            None
        },
        storages,
        guests,
        error: errors.join("; "),
        pve_version: data.pve_version.to_owned(),
    }
}

/// Parses `crs` of `/cluster/options`, given as an object or as a property string
/// (`ha=static,ha-rebalance-on-start=1`).
pub fn parse_crs(crs: Option<&serde_json::Value>) -> CrsSettings {
    let mut out = CrsSettings::default();
    let mut set = |k: &str, v: &str| match k {
        "ha" => out.ha = v.to_owned(),
        "ha-rebalance-on-start" => out.ha_rebalance_on_start = matches!(v, "1" | "true"),
        "ha-auto-rebalance" => out.ha_auto_rebalance = matches!(v, "1" | "true"),
        "ha-auto-rebalance-threshold" => out.ha_auto_rebalance_threshold = v.parse().ok(),
        _ => {}
    };
    match crs {
        Some(serde_json::Value::Object(map)) => {
            for (k, v) in map {
                let text = match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Bool(b) => if *b { "1" } else { "0" }.to_owned(),
                    other => other.to_string(),
                };
                set(k, &text);
            }
        }
        Some(serde_json::Value::String(s)) => {
            for part in s.split(',') {
                match part.split_once('=') {
                    Some((k, v)) => set(k.trim(), v.trim()),
                    None => set("ha", part.trim()),
                }
            }
        }
        _ => {}
    }
    out
}

/// Builds the cycle's [`ClusterStatus`].
pub fn build_cluster_status(
    data: &CycleData<'_>,
    snapshots: &[NodeSnapshot],
    crs: CrsSettings,
    errors: Vec<CollectionError>,
    duration_ms: i64,
    api_requests: u32,
    endpoint: &str,
) -> ClusterStatus {
    let quorate = data
        .status_rows
        .iter()
        .find(|r| r.kind.as_deref() == Some("cluster"))
        .and_then(|r| r.quorate)
        // A standalone node has no cluster row and is always quorate.
        .unwrap_or(!data.status_rows.is_empty());
    let nodes = snapshots
        .iter()
        .map(|s| ClusterNode {
            node: s.node.clone(),
            status: s.status,
            ip: data
                .status_rows
                .iter()
                .find(|r| {
                    r.kind.as_deref() == Some("node") && r.name.as_deref() == Some(s.node.as_str())
                })
                .and_then(|r| r.ip.clone())
                .unwrap_or_default(),
            ha_state: s.ha_state.clone(),
            maintenance: s.maintenance,
        })
        .collect();
    ClusterStatus {
        schema_version: SCHEMA_VERSION,
        cluster: data.cluster.to_owned(),
        cycle: data.cycle,
        collected_at_unix_ms: data.now_unix_ms,
        duration_ms,
        nodes,
        quorate,
        pve_version: data.pve_version.to_owned(),
        crs: Some(crs),
        errors,
        api_requests,
        endpoint: endpoint.to_owned(),
        // Set by the cycle, which knows which histories it publishes and its HA rules.
        histories: Vec::new(),
        ha_rules: Vec::new(),
        ha_rules_source: 0,
        ha_rules_read_at_unix_ms: 0,
    }
}

/// A wire [`CollectionError`] from a PVE error.
pub fn collection_error(node: &str, err: &PveError) -> CollectionError {
    let (endpoint, path) = err.location();
    CollectionError {
        node: node.to_owned(),
        endpoint: endpoint.to_owned(),
        path: path.to_owned(),
        kind: err.wire_kind() as i32,
        message: err.to_string(),
    }
}

/// `v` rounded to single precision (24 significant bits, about 7 decimal digits), as
/// `HistoryPoint` values travel: an RRD average carries no more, and the zeroed low bits let
/// gzip shrink a PVE 9 history (1,776 points) below 64 KiB whatever its values. Values beyond
/// single precision's range (never a CPU fraction, load or memory size) are kept as they are.
pub fn single_precision(v: f64) -> f64 {
    let rounded = f64::from(v as f32);
    if rounded.is_finite() || !v.is_finite() {
        rounded
    } else {
        v
    }
}

/// Builds a node's history from its day and week RRD series, values at [`single_precision`].
pub fn build_history(
    cluster: &str,
    node: &str,
    now_unix_ms: i64,
    day: &[RrdPoint],
    week: &[RrdPoint],
) -> NodeHistory {
    let convert = |points: &[RrdPoint]| -> Vec<HistoryPoint> {
        let mut v: Vec<HistoryPoint> = points
            .iter()
            .filter_map(|p| {
                Some(HistoryPoint {
                    time_unix_ms: p.time?.saturating_mul(1000),
                    cpu_fraction: p.cpu.map(single_precision),
                    iowait_fraction: p.iowait.map(single_precision),
                    mem_used_bytes: p.memused.map(single_precision),
                    mem_total_bytes: p.memtotal.map(single_precision),
                    load_average: p.loadavg.map(single_precision),
                })
            })
            // A point with only a time carries nothing.
            .filter(|h| {
                h.cpu_fraction.is_some()
                    || h.mem_used_bytes.is_some()
                    || h.iowait_fraction.is_some()
            })
            .collect();
        v.sort_by_key(|h| h.time_unix_ms);
        v
    };
    NodeHistory {
        schema_version: SCHEMA_VERSION,
        cluster: cluster.to_owned(),
        node: node.to_owned(),
        collected_at_unix_ms: now_unix_ms,
        day: convert(day),
        week: convert(week),
    }
}
