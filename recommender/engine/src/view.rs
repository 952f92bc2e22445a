//! The cluster view: the engine's input, in its JSON form (`proxbalance.cluster-view.v1`) and as a
//! validated model with the derived per-node fields.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Overrides, PenaltyConfig, Thresholds};
use crate::error::ViewError;
use crate::numeric::round_to;
use crate::rules::{Rule, RuleView};
use crate::tags::GuestTags;

/// The value of the `format` field of every cluster view.
pub const VIEW_FORMAT: &str = "proxbalance.cluster-view.v1";

/// One cluster at one instant, as exchanged in JSON (docs/engine.md §1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterView {
    /// Always [`VIEW_FORMAT`].
    pub format: String,
    /// Cluster name.
    pub cluster: String,
    /// The instant the view describes, unix seconds.
    pub now: i64,
    /// Thresholds in percent; absent means 60/70/30.
    #[serde(default)]
    pub thresholds: Option<Thresholds>,
    /// Nodes being drained: their guests are evacuated and they receive nothing.
    #[serde(default)]
    pub maintenance_nodes: Vec<String>,
    /// The cluster's nodes.
    pub nodes: Vec<NodeView>,
    /// Every guest of the cluster, on whatever node.
    #[serde(default)]
    pub guests: Vec<GuestView>,
    /// Partial penalty configuration laid over the defaults; unknown keys are refused.
    #[serde(default)]
    pub penalty_config: serde_json::Map<String, serde_json::Value>,
    /// Placement rules beyond the guests' tags: pool rules, Proxmox HA rules and groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleView>,
    /// Proxmox VE's own cluster resource scheduler, as `/cluster/options` sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crs: Option<Crs>,
}

/// The mode of Proxmox VE's cluster resource scheduler for HA resources.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CrsMode {
    /// Recovery places HA resources by count (the default).
    #[default]
    Basic,
    /// Placement by configured CPU and memory.
    Static,
    /// Placement by measured load (PVE 9.2).
    Dynamic,
}

/// Proxmox VE's cluster resource scheduler settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Crs {
    #[serde(default)]
    pub ha: CrsMode,
    /// `ha-auto-rebalance`: PVE moves HA resources itself to balance load.
    #[serde(default)]
    pub auto_rebalance: bool,
}

impl Crs {
    /// PVE balances its HA resources itself (`ha = dynamic` with auto-rebalance): a second
    /// balancer moving them would fight it.
    pub fn balances_ha(&self) -> bool {
        self.ha == CrsMode::Dynamic && self.auto_rebalance
    }
}

/// A node in the JSON view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeView {
    pub name: String,
    pub status: NodeStatus,
    pub cpu_cores: u32,
    pub total_mem_gb: f64,
    pub current: CurrentMetrics,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_24h: Option<DayAverages>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub week: Option<WeekStats>,
    #[serde(default)]
    pub history: Vec<HistorySample>,
    #[serde(default)]
    pub storage: Vec<Storage>,
    /// Memory held back from guests on this node, GiB; absent: the configuration's
    /// `node_reserve_gb` / `node_reserve_percent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve_gb: Option<f64>,
}

/// Whether a node can take part: only `online` nodes are sources or targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    Online,
    Offline,
    Unknown,
}

impl NodeStatus {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Online => "online",
            NodeStatus::Offline => "offline",
            NodeStatus::Unknown => "unknown",
        }
    }
}

/// Live values, percent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurrentMetrics {
    pub cpu: f64,
    pub mem: f64,
    pub iowait: f64,
}

/// 24-hour averages, percent (load is the raw load average).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DayAverages {
    pub cpu: f64,
    pub mem: f64,
    pub iowait: f64,
    #[serde(default)]
    pub load: f64,
}

/// Seven-day averages and maxima, percent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeekStats {
    pub avg_cpu: f64,
    pub max_cpu: f64,
    pub avg_mem: f64,
    pub max_mem: f64,
    pub avg_iowait: f64,
}

/// One point of node history, used for trend and stability.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistorySample {
    /// Unix seconds.
    pub t: i64,
    pub cpu: f64,
    pub mem: f64,
    pub iowait: f64,
}

/// A storage as seen from one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    pub id: String,
    pub active: bool,
    #[serde(default)]
    pub shared: bool,
    pub usage_pct: f64,
}

/// A guest in the JSON view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestView {
    pub vmid: u32,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type")]
    pub kind: GuestKind,
    pub node: String,
    pub status: String,
    /// CPU use relative to the guest's own vCPUs, percent.
    pub cpu_percent: f64,
    pub cpu_cores: u32,
    pub mem_used_gb: f64,
    pub mem_max_gb: f64,
    #[serde(default)]
    pub disk_read_bps: f64,
    #[serde(default)]
    pub disk_write_bps: f64,
    #[serde(default)]
    pub net_in_bps: f64,
    #[serde(default)]
    pub net_out_bps: f64,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub ha_managed: bool,
    #[serde(default)]
    pub lock: Option<String>,
    #[serde(default)]
    pub template: bool,
    #[serde(default)]
    pub passthrough: bool,
    #[serde(default)]
    pub unshared_bind_mount: bool,
    #[serde(default)]
    pub storages: Vec<String>,
    /// Whether the guest's configuration has been read. Until it is, passthrough disks and bind
    /// mounts are unknown and the guest is not moved (`config_unknown`).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub config_known: bool,
    /// The Proxmox resource pool the guest belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

fn yes() -> bool {
    true
}

fn is_true(v: &bool) -> bool {
    *v
}

/// Virtual machine or container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestKind {
    Qemu,
    Lxc,
}

impl GuestKind {
    /// The wire spelling (`qemu` or `lxc`).
    pub fn as_str(self) -> &'static str {
        match self {
            GuestKind::Qemu => "qemu",
            GuestKind::Lxc => "lxc",
        }
    }
}

/// A validated node with its derived fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub status: NodeStatus,
    pub cpu_cores: u32,
    pub total_mem_gb: f64,
    pub current: CurrentMetrics,
    pub avg_24h: Option<DayAverages>,
    pub week: Option<WeekStats>,
    /// Samples within the last 168 h, sorted by time.
    pub history: Vec<HistorySample>,
    /// Sorted by id.
    pub storage: Vec<Storage>,
    /// Σ `mem_max_gb` of the node's running guests.
    pub committed_mem_gb: f64,
    /// `committed_mem_gb / total_mem_gb`, two decimals; 0 without memory.
    pub mem_overcommit_ratio: f64,
    /// A running guest on the node is tagged `io_exempt` or has a passthrough disk.
    pub iowait_exempt: bool,
    /// Whether the node is listed as in maintenance.
    pub maintenance: bool,
    /// Memory held back from guests, GiB, when the view sets it for this node.
    pub reserve_gb: Option<f64>,
}

impl Node {
    /// A node has history exactly when its 24-hour averages are known.
    pub fn has_historical(&self) -> bool {
        self.avg_24h.is_some()
    }

    /// Whether the node may be a source or a target at all.
    pub fn is_online(&self) -> bool {
        self.status == NodeStatus::Online
    }

    /// The memory the node offers guests, GiB: its RAM less the reserve (the view's, else the
    /// larger of `node_reserve_gb` and `node_reserve_percent` of its RAM), never below 0.
    pub fn offered_mem_gb(&self, cfg: &PenaltyConfig) -> f64 {
        let reserve = self.reserve_gb.unwrap_or_else(|| {
            cfg.node_reserve_gb
                .max(cfg.node_reserve_percent / 100.0 * self.total_mem_gb)
        });
        (self.total_mem_gb - reserve).max(0.0)
    }
}

/// A validated guest.
#[derive(Debug, Clone, PartialEq)]
pub struct Guest {
    pub vmid: u32,
    pub name: String,
    pub kind: GuestKind,
    /// Index of the guest's node in [`Cluster::nodes`].
    pub node: usize,
    pub status: String,
    /// `status == "running"`, decided once.
    pub running: bool,
    pub cpu_percent: f64,
    pub cpu_cores: u32,
    pub mem_used_gb: f64,
    pub mem_max_gb: f64,
    pub disk_read_bps: f64,
    pub disk_write_bps: f64,
    pub net_in_bps: f64,
    pub net_out_bps: f64,
    pub raw_tags: Vec<String>,
    pub tags: GuestTags,
    pub ha_managed: bool,
    pub lock: Option<String>,
    pub template: bool,
    pub passthrough: bool,
    pub unshared_bind_mount: bool,
    pub storages: Vec<String>,
    /// The configuration has been read (passthrough and bind mounts are known).
    pub config_known: bool,
    pub pool: Option<String>,
}

impl Guest {
    /// Whether the guest is running (`status == "running"`).
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Disk read plus write, bytes per second.
    pub fn disk_io_bps(&self) -> f64 {
        self.disk_read_bps + self.disk_write_bps
    }
}

/// A validated cluster: nodes sorted by name, guests by vmid, the penalty configuration merged.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub name: String,
    pub now: i64,
    pub thresholds: Thresholds,
    pub config: PenaltyConfig,
    pub nodes: Vec<Node>,
    pub guests: Vec<Guest>,
    /// Every placement rule, from tags first, then the view's, each by name.
    pub rules: Vec<Rule>,
    pub crs: Crs,
}

const HISTORY_WINDOW_SECS: i64 = 168 * 3600;

impl Cluster {
    /// Parses and validates a JSON cluster view.
    pub fn from_json(text: &str) -> Result<Self, ViewError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let view: ClusterView = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { "view".to_owned() } else { path };
            ViewError::new(path, strip_position(&e.inner().to_string()))
        })?;
        de.end()
            .map_err(|e| ViewError::new("view", strip_position(&e.to_string())))?;
        view.validate()
    }

    /// Index of the node called `name`.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes
            .binary_search_by(|n| n.name.as_str().cmp(name))
            .ok()
    }

    /// The guest with this vmid.
    pub fn guest(&self, vmid: u32) -> Option<&Guest> {
        self.guests
            .binary_search_by(|g| g.vmid.cmp(&vmid))
            .ok()
            .map(|i| &self.guests[i])
    }

    /// Applies a caller's overrides: configuration (preset, then penalty keys), thresholds, and
    /// maintenance nodes added to those of the view.
    pub fn apply(&mut self, overrides: &Overrides) -> Result<(), ConfigError> {
        let (config, thresholds) = overrides.apply(&self.config, &self.thresholds)?;
        if !overrides.maintenance_nodes.is_empty() {
            let mut names: Vec<String> = self
                .nodes
                .iter()
                .filter(|n| n.maintenance)
                .map(|n| n.name.clone())
                .collect();
            names.extend(overrides.maintenance_nodes.iter().cloned());
            self.set_maintenance(&names)
                .map_err(|e| ConfigError::InvalidValue {
                    key: "maintenance_nodes".to_owned(),
                    expected: e.message,
                })?;
        }
        self.config = config;
        self.thresholds = thresholds;
        Ok(())
    }

    /// Sets which nodes are in maintenance (names unknown to the cluster are refused).
    pub fn set_maintenance<S: AsRef<str>>(&mut self, names: &[S]) -> Result<(), ViewError> {
        for (i, name) in names.iter().enumerate() {
            if self.node_index(name.as_ref()).is_none() {
                return Err(ViewError::new(
                    format!("maintenance_nodes[{i}]"),
                    format!("no node named {:?} in the cluster", name.as_ref()),
                ));
            }
        }
        for node in &mut self.nodes {
            node.maintenance = names.iter().any(|n| n.as_ref() == node.name);
        }
        Ok(())
    }
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// Checks that a number is finite and not negative.
fn non_negative(path: impl FnOnce() -> String, value: f64) -> Result<f64, ViewError> {
    if !value.is_finite() {
        Err(ViewError::new(path(), "must be a finite number"))
    } else if value < 0.0 {
        Err(ViewError::new(path(), "must be ≥ 0"))
    } else {
        Ok(value)
    }
}

impl ClusterView {
    /// Validates the view and derives committed memory, the overcommit ratio and the IOWait
    /// exemption of every node.
    pub fn validate(self) -> Result<Cluster, ViewError> {
        if self.format != VIEW_FORMAT {
            return Err(ViewError::new(
                "format",
                format!("must be {VIEW_FORMAT:?}, got {:?}", self.format),
            ));
        }
        if self.cluster.trim().is_empty() {
            return Err(ViewError::new("cluster", "must not be empty"));
        }
        let thresholds = self.thresholds.unwrap_or_default();
        thresholds
            .validate()
            .map_err(|e| ViewError::new("thresholds", e.to_string()))?;
        let config = PenaltyConfig::default()
            .with_overrides(&self.penalty_config)
            .map_err(|e| ViewError::new("penalty_config", e.to_string()))?;

        let mut nodes = Vec::with_capacity(self.nodes.len());
        let mut seen = BTreeSet::new();
        for (i, n) in self.nodes.into_iter().enumerate() {
            let node = validate_node(i, n, self.now)?;
            if !seen.insert(node.name.clone()) {
                return Err(ViewError::new(
                    format!("nodes[{i}].name"),
                    format!("duplicate node name {:?}", node.name),
                ));
            }
            nodes.push(node);
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let index: BTreeMap<&str, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_str(), i))
            .collect();

        let mut guests = Vec::with_capacity(self.guests.len());
        let mut vmids = BTreeSet::new();
        for (i, g) in self.guests.into_iter().enumerate() {
            let guest = validate_guest(i, g, &index)?;
            if !vmids.insert(guest.vmid) {
                return Err(ViewError::new(
                    format!("guests[{i}].vmid"),
                    format!("duplicate vmid {}", guest.vmid),
                ));
            }
            guests.push(guest);
        }
        guests.sort_by_key(|g| g.vmid);

        for g in guests.iter().filter(|g| g.is_running()) {
            let node = &mut nodes[g.node];
            node.committed_mem_gb += g.mem_max_gb;
            if g.tags.io_exempt || g.passthrough {
                node.iowait_exempt = true;
            }
        }
        for node in &mut nodes {
            node.mem_overcommit_ratio = overcommit_ratio(node.committed_mem_gb, node.total_mem_gb);
        }

        let rules = crate::rules::resolve(self.rules, &guests, &nodes)?;
        let mut cluster = Cluster {
            name: self.cluster,
            now: self.now,
            thresholds,
            config,
            nodes,
            guests,
            rules,
            crs: self.crs.unwrap_or_default(),
        };
        cluster.set_maintenance(&self.maintenance_nodes)?;
        Ok(cluster)
    }
}

/// `committed / total`, two decimals, 0 without memory.
pub(crate) fn overcommit_ratio(committed_gb: f64, total_gb: f64) -> f64 {
    if total_gb > 0.0 {
        round_to(committed_gb / total_gb, 2)
    } else {
        0.0
    }
}

fn validate_node(i: usize, n: NodeView, now: i64) -> Result<Node, ViewError> {
    let p = |field: &str| format!("nodes[{i}].{field}");
    if n.name.trim().is_empty() {
        return Err(ViewError::new(p("name"), "must not be empty"));
    }
    if n.status == NodeStatus::Online && n.cpu_cores == 0 {
        return Err(ViewError::new(
            p("cpu_cores"),
            "must be ≥ 1 on an online node",
        ));
    }
    non_negative(|| p("total_mem_gb"), n.total_mem_gb)?;
    if n.status == NodeStatus::Online && n.total_mem_gb <= 0.0 {
        return Err(ViewError::new(
            p("total_mem_gb"),
            "must be > 0 on an online node",
        ));
    }
    let c = n.current;
    for (field, v) in [("cpu", c.cpu), ("mem", c.mem), ("iowait", c.iowait)] {
        non_negative(|| p(&format!("current.{field}")), v)?;
    }
    if let Some(a) = n.avg_24h {
        for (field, v) in [
            ("cpu", a.cpu),
            ("mem", a.mem),
            ("iowait", a.iowait),
            ("load", a.load),
        ] {
            non_negative(|| p(&format!("avg_24h.{field}")), v)?;
        }
    }
    if let Some(w) = n.week {
        for (field, v) in [
            ("avg_cpu", w.avg_cpu),
            ("max_cpu", w.max_cpu),
            ("avg_mem", w.avg_mem),
            ("max_mem", w.max_mem),
            ("avg_iowait", w.avg_iowait),
        ] {
            non_negative(|| p(&format!("week.{field}")), v)?;
        }
    }
    for (j, s) in n.history.iter().enumerate() {
        for (field, v) in [("cpu", s.cpu), ("mem", s.mem), ("iowait", s.iowait)] {
            non_negative(|| p(&format!("history[{j}].{field}")), v)?;
        }
    }
    let mut ids = BTreeSet::new();
    for (j, s) in n.storage.iter().enumerate() {
        if s.id.is_empty() {
            return Err(ViewError::new(
                p(&format!("storage[{j}].id")),
                "must not be empty",
            ));
        }
        if !ids.insert(s.id.as_str()) {
            return Err(ViewError::new(
                p(&format!("storage[{j}].id")),
                format!("duplicate storage id {:?}", s.id),
            ));
        }
        non_negative(|| p(&format!("storage[{j}].usage_pct")), s.usage_pct)?;
    }
    if let Some(r) = n.reserve_gb {
        non_negative(|| p("reserve_gb"), r)?;
    }
    let mut history: Vec<HistorySample> = n
        .history
        .into_iter()
        .filter(|s| now.saturating_sub(s.t) <= HISTORY_WINDOW_SECS)
        .collect();
    history.sort_by(|a, b| {
        a.t.cmp(&b.t)
            .then(a.cpu.total_cmp(&b.cpu))
            .then(a.mem.total_cmp(&b.mem))
            .then(a.iowait.total_cmp(&b.iowait))
    });
    let mut storage = n.storage;
    storage.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Node {
        name: n.name,
        status: n.status,
        cpu_cores: n.cpu_cores,
        total_mem_gb: n.total_mem_gb,
        current: n.current,
        avg_24h: n.avg_24h,
        week: n.week,
        history,
        storage,
        committed_mem_gb: 0.0,
        mem_overcommit_ratio: 0.0,
        iowait_exempt: false,
        maintenance: false,
        reserve_gb: n.reserve_gb,
    })
}

fn validate_guest(
    i: usize,
    g: GuestView,
    nodes: &BTreeMap<&str, usize>,
) -> Result<Guest, ViewError> {
    let p = |field: &str| format!("guests[{i}].{field}");
    if g.vmid == 0 {
        return Err(ViewError::new(p("vmid"), "must be ≥ 1"));
    }
    let node = *nodes
        .get(g.node.as_str())
        .ok_or_else(|| ViewError::new(p("node"), format!("no node named {:?} in nodes", g.node)))?;
    if g.status.trim().is_empty() {
        return Err(ViewError::new(p("status"), "must not be empty"));
    }
    for (field, v) in [
        ("cpu_percent", g.cpu_percent),
        ("mem_used_gb", g.mem_used_gb),
        ("mem_max_gb", g.mem_max_gb),
        ("disk_read_bps", g.disk_read_bps),
        ("disk_write_bps", g.disk_write_bps),
        ("net_in_bps", g.net_in_bps),
        ("net_out_bps", g.net_out_bps),
    ] {
        non_negative(|| p(field), v)?;
    }
    for (j, s) in g.storages.iter().enumerate() {
        if s.is_empty() {
            return Err(ViewError::new(
                p(&format!("storages[{j}]")),
                "must not be empty",
            ));
        }
    }
    let name = if g.name.is_empty() {
        match g.kind {
            GuestKind::Qemu => format!("VM-{}", g.vmid),
            GuestKind::Lxc => format!("CT-{}", g.vmid),
        }
    } else {
        g.name
    };
    let mut storages = g.storages;
    storages.sort();
    storages.dedup();
    Ok(Guest {
        vmid: g.vmid,
        name,
        kind: g.kind,
        node,
        running: g.status == "running",
        status: g.status,
        cpu_percent: g.cpu_percent,
        cpu_cores: g.cpu_cores,
        mem_used_gb: g.mem_used_gb,
        mem_max_gb: g.mem_max_gb,
        disk_read_bps: g.disk_read_bps,
        disk_write_bps: g.disk_write_bps,
        net_in_bps: g.net_in_bps,
        net_out_bps: g.net_out_bps,
        tags: GuestTags::parse(&g.tags),
        raw_tags: g.tags,
        ha_managed: g.ha_managed,
        lock: g.lock.filter(|l| !l.is_empty()),
        template: g.template,
        passthrough: g.passthrough,
        unshared_bind_mount: g.unshared_bind_mount,
        storages,
        config_known: g.config_known,
        pool: g.pool.filter(|p| !p.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(guest_extra: &str) -> String {
        format!(
            r#"{{"format":"proxbalance.cluster-view.v1","cluster":"c","now":1000000,
            "nodes":[{{"name":"b","status":"online","cpu_cores":8,"total_mem_gb":64,
                       "current":{{"cpu":10,"mem":20,"iowait":1}}}},
                     {{"name":"a","status":"online","cpu_cores":8,"total_mem_gb":32,
                       "current":{{"cpu":10,"mem":20,"iowait":1}}}}],
            "guests":[{{"vmid":101,"type":"qemu","node":"b","status":"running","cpu_percent":5,
                        "cpu_cores":2,"mem_used_gb":4,"mem_max_gb":8,"tags":["io_exempt"]}},
                      {{"vmid":102,"type":"lxc","node":"b","status":"stopped","cpu_percent":0,
                        "cpu_cores":1,"mem_used_gb":0,"mem_max_gb":16{guest_extra}}}]}}"#
        )
    }

    #[test]
    fn derives_committed_memory_from_running_guests_only() {
        let c = Cluster::from_json(&doc("")).expect("valid view");
        assert_eq!(c.nodes[0].name, "a");
        let b = &c.nodes[1];
        assert_eq!(b.committed_mem_gb, 8.0);
        // 8 / 64 = 0.125 rounds half to even
        assert_eq!(b.mem_overcommit_ratio, 0.12);
        assert!(b.iowait_exempt);
        assert!(!c.nodes[0].iowait_exempt);
        assert_eq!(c.guest(102).map(|g| g.name.as_str()), Some("CT-102"));
    }

    #[test]
    fn errors_name_the_object_and_field() {
        let e = Cluster::from_json(&doc(r#","disk_read_bps":-1"#)).unwrap_err();
        assert_eq!(e.to_string(), "guests[1].disk_read_bps: must be ≥ 0");
        let e = Cluster::from_json(&doc(r#","bogus":1"#)).unwrap_err();
        assert_eq!(e.path, "guests[1].bogus");
        assert!(e.message.starts_with("unknown field `bogus`"), "{e}");
        let e = Cluster::from_json(&doc("").replace(
            r#""node":"b","status":"stopped""#,
            r#""node":"zz","status":"stopped""#,
        ))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"guests[1].node: no node named "zz" in nodes"#
        );
        let e = Cluster::from_json(&doc("").replace("\"vmid\":102", "\"vmid\":101")).unwrap_err();
        assert_eq!(e.to_string(), "guests[1].vmid: duplicate vmid 101");
        let e = Cluster::from_json(&doc("").replace(r#""mem_max_gb":16"#, r#""mem_max_gb":1e999"#))
            .unwrap_err();
        assert_eq!(e.path, "guests[1].mem_max_gb");
        let e = Cluster::from_json(
            &doc("").replace(r#""cpu_cores":8,"total_mem_gb":32"#, r#""total_mem_gb":32"#),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "nodes[1]: missing field `cpu_cores`");
    }

    #[test]
    fn unknown_maintenance_node_and_penalty_key_are_refused() {
        let text = doc("").replace(
            r#""now":1000000,"#,
            r#""now":1000000,"maintenance_nodes":["x"],"#,
        );
        let e = Cluster::from_json(&text).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"maintenance_nodes[0]: no node named "x" in the cluster"#
        );
        let text = doc("").replace(
            r#""now":1000000,"#,
            r#""now":1000000,"penalty_config":{"nope":1},"#,
        );
        let e = Cluster::from_json(&text).unwrap_err();
        assert_eq!(e.path, "penalty_config");
        assert!(e.message.contains("nope"), "{e}");
    }
}
