//! The scenario file: a cluster, its nodes, guests, API tokens and load profiles (TOML).
//!
//! See `Scenario` for the layout. Parsing rejects unknown keys, and every validation error names
//! the offending field as a path such as `guests[3].node`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::load::{LoadSpec, Shape};
use crate::prng::SplitMix64;

/// The token id a generated scenario (and the CLI's `--generated`) accepts.
pub const DEFAULT_TOKEN_ID: &str = "collector@pve!lb";
/// The secret of [`DEFAULT_TOKEN_ID`] in generated scenarios.
pub const DEFAULT_TOKEN_SECRET: &str = "8a1f3c2e-4b7d-4f0e-9c55-2d6a0b1e7f43";

/// Every privilege the simulator knows; a token without a `privileges` list has all of them.
pub const ALL_PRIVILEGES: &[&str] = &[
    "Sys.Audit",
    "Sys.Console",
    "VM.Audit",
    "VM.Migrate",
    "Datastore.Audit",
    "Pool.Audit",
];

/// A scenario could not be read or is inconsistent.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario {path}: {source}")]
    Io {
        /// The path given.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type; the message
    /// names the key and its line.
    #[error("invalid scenario: {0}")]
    Parse(String),
    /// A value is out of range or refers to something that does not exist.
    #[error("invalid scenario: {field}: {message}")]
    Invalid {
        /// Path of the field, e.g. `guests[3].node`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// The Proxmox VE major version the simulator imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavour {
    /// PVE 8 (default version 8.2.4): no `/cluster/metrics/export`, no `memhost`, no PSI, no
    /// `memory.available`, 70-point RRD layout, HA groups, errors without `message` (< 8.3).
    Pve8,
    /// PVE 9 (default version 9.1.1): metrics export, `memhost`, PSI, new RRD resolutions, HA rules.
    #[default]
    Pve9,
}

/// A whole scenario.
///
/// ```toml
/// [cluster]
/// name = "demo"
/// flavour = "pve9"          # or "pve8"
/// seed = 42
/// start_time = 1764230400   # simulated epoch at start; default: the real time
/// acceleration = 1.0        # simulated seconds per real second; 0 = manual clock
///
/// [[tokens]]
/// id = "collector@pve!lb"
/// secret = "s3cret"
///
/// [[nodes]]
/// name = "pve1"
/// cores = 32
/// memory_gb = 256
/// storages = [{ id = "ceph-vm", type = "rbd", shared = true, total_gb = 10000, used_gb = 3000 }]
/// load = { cpu = 0.03, iowait = 0.01 }
///
/// [[guests]]
/// vmid = 101
/// kind = "qemu"
/// node = "pve1"
/// cores = 4
/// memory_gb = 8
/// disks = [{ storage = "ceph-vm", size_gb = 32 }]
/// load = { shape = "diurnal", cpu = 0.3, mem = 0.6 }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Cluster-wide settings.
    pub cluster: ClusterSpec,
    /// API tokens that may call the API.
    #[serde(default)]
    pub tokens: Vec<TokenSpec>,
    /// The cluster members.
    pub nodes: Vec<NodeSpec>,
    /// The virtual machines and containers.
    #[serde(default)]
    pub guests: Vec<GuestSpec>,
    /// HA placement rules, written in PVE 9's form: PVE 9 serves them at `/cluster/ha/rules`;
    /// PVE 8 serves each node-affinity rule as an HA group of the same name at
    /// `/cluster/ha/groups` (`strict` → `restricted`), named by its resources' `group` in
    /// `/cluster/ha/resources` (PVE 8 has no resource-affinity rules).
    #[serde(default)]
    pub ha_rules: Vec<HaRuleSpec>,
}

/// Cluster-wide settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// Cluster name (as in `/cluster/status`).
    pub name: String,
    /// PVE 8 or 9 behaviour.
    #[serde(default)]
    pub flavour: Flavour,
    /// Exact version string for `/version`, e.g. `"8.2.4"`; defaults by flavour.
    #[serde(default)]
    pub version: Option<String>,
    /// Seed of every random-looking value.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Simulated epoch seconds at start; `None` takes the real time.
    #[serde(default)]
    pub start_time: Option<i64>,
    /// Simulated seconds per real second; 0 makes the clock manual.
    #[serde(default = "default_acceleration")]
    pub acceleration: f64,
    /// Memory copied per simulated second during a migration, in MiB/s.
    #[serde(default = "default_migration_bw")]
    pub migration_mib_s: f64,
    /// Delay before a 401 answer in milliseconds (real PVE waits 3000).
    #[serde(default)]
    pub auth_failure_delay_ms: u64,
    /// `crs.ha` of `/cluster/options` (`basic`, `static`, `dynamic`; `dynamic` from PVE 9.2).
    #[serde(default = "default_crs")]
    pub crs_ha: String,
    /// `crs.ha-auto-rebalance` of `/cluster/options`: PVE balances HA resources itself
    /// (PVE 9.2 on; the key is absent before).
    #[serde(default)]
    pub crs_auto_rebalance: bool,
}

fn default_seed() -> u64 {
    1
}
fn default_acceleration() -> f64 {
    1.0
}
fn default_migration_bw() -> f64 {
    1024.0
}
fn default_crs() -> String {
    "basic".to_string()
}

/// An API token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// Full token id `user@realm!tokenid`.
    pub id: String,
    /// The secret (usually a UUID).
    pub secret: String,
    /// Privileges granted; `None` grants all of [`ALL_PRIVILEGES`].
    #[serde(default)]
    pub privileges: Option<Vec<String>>,
    /// Expiry in epoch seconds of simulated time; `None` never expires.
    #[serde(default)]
    pub expire: Option<i64>,
}

/// A cluster member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Node name.
    pub name: String,
    /// Logical CPUs (threads), PVE's `maxcpu`.
    pub cores: u32,
    /// Physical cores per socket × sockets is `cores / 2` unless given.
    #[serde(default)]
    pub physical_cores: Option<u32>,
    /// Sockets.
    #[serde(default = "one_u32")]
    pub sockets: u32,
    /// RAM in GiB (MemTotal).
    pub memory_gb: f64,
    /// Memory the host itself uses in GiB (kernel, ZFS ARC, services).
    #[serde(default = "default_base_mem")]
    pub base_mem_gb: f64,
    /// Root filesystem size in GiB.
    #[serde(default = "default_rootfs")]
    pub rootfs_gb: f64,
    /// Address shown in `/cluster/status`; default `10.0.0.<index+1>`.
    #[serde(default)]
    pub ip: Option<String>,
    /// Starts offline.
    #[serde(default)]
    pub offline: bool,
    /// In HA maintenance mode (shown in `hastate`, HA status and manager status).
    #[serde(default)]
    pub maintenance: bool,
    /// IOWait added per MB/s of disk I/O of the node's running guests (default 0.0005, so
    /// 100 MB/s adds 5 points).
    #[serde(default = "default_iowait_per_mb")]
    pub iowait_per_mb_s: f64,
    /// The host's own load (its `cpu` and `iowait`), beside its guests'.
    #[serde(default = "default_node_load")]
    pub load: LoadSpec,
    /// Storages enabled on this node.
    #[serde(default)]
    pub storages: Vec<StorageSpec>,
}

fn one_u32() -> u32 {
    1
}
fn default_base_mem() -> f64 {
    2.0
}
fn default_rootfs() -> f64 {
    100.0
}
fn default_iowait_per_mb() -> f64 {
    0.0005
}
fn default_node_load() -> LoadSpec {
    LoadSpec {
        cpu: 0.02,
        iowait: 0.005,
        noise: 0.05,
        ..LoadSpec::default()
    }
}

/// A storage as seen on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSpec {
    /// Storage id, e.g. `local-lvm`.
    pub id: String,
    /// Plugin type, e.g. `lvmthin`, `zfspool`, `dir`, `rbd`, `nfs`.
    #[serde(rename = "type", default = "default_storage_type")]
    pub kind: String,
    /// Shared between nodes (Ceph, NFS, …).
    #[serde(default)]
    pub shared: bool,
    /// Size in GiB.
    pub total_gb: f64,
    /// Used space in GiB.
    #[serde(default)]
    pub used_gb: f64,
    /// Content types.
    #[serde(default = "default_content")]
    pub content: String,
    /// Whether the storage is active on this node.
    #[serde(default = "yes")]
    pub active: bool,
}

fn default_storage_type() -> String {
    "dir".to_string()
}
fn default_content() -> String {
    "images,rootdir".to_string()
}
fn yes() -> bool {
    true
}

/// Virtual machine or container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestKind {
    /// A QEMU virtual machine.
    Qemu,
    /// An LXC container.
    Lxc,
}

impl GuestKind {
    /// `qemu` or `lxc`, as in API paths.
    pub fn as_str(self) -> &'static str {
        match self {
            GuestKind::Qemu => "qemu",
            GuestKind::Lxc => "lxc",
        }
    }
}

/// Power state of a guest in the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestStatus {
    /// Running.
    #[default]
    Running,
    /// Stopped.
    Stopped,
}

/// A virtual machine or container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestSpec {
    /// Cluster-unique id.
    pub vmid: u32,
    /// `qemu` or `lxc`.
    pub kind: GuestKind,
    /// Name (VM name or CT hostname); default `VM <id>` / `CT<id>`.
    #[serde(default)]
    pub name: Option<String>,
    /// The node it starts on.
    pub node: String,
    /// vCPUs.
    #[serde(default = "one_u32")]
    pub cores: u32,
    /// Maximum memory in GiB (config `memory`).
    pub memory_gb: f64,
    /// Balloon minimum in GiB (qemu config `balloon`); `None` = no auto-ballooning.
    #[serde(default)]
    pub balloon_min_gb: Option<f64>,
    /// Power state.
    #[serde(default)]
    pub status: GuestStatus,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// HA request state (`started`, `stopped`, `disabled`, `ignored`) if HA-managed.
    #[serde(default)]
    pub ha: Option<String>,
    /// A config lock (`backup`, `snapshot`, …).
    #[serde(default)]
    pub lock: Option<String>,
    /// A template.
    #[serde(default)]
    pub template: bool,
    /// Resource pool.
    #[serde(default)]
    pub pool: Option<String>,
    /// Disks (qemu) or rootfs and mount points (lxc); empty gives one disk on the node's first
    /// storage.
    #[serde(default)]
    pub disks: Vec<DiskSpec>,
    /// PCI devices passed through (qemu `hostpciN`).
    #[serde(default)]
    pub hostpci: Vec<String>,
    /// Days the guest has been running at start; default drawn from the seed.
    #[serde(default)]
    pub uptime_days: Option<f64>,
    /// Its load over time.
    #[serde(default)]
    pub load: LoadSpec,
}

/// A disk, rootfs or mount point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// Config key (`scsi0`, `virtio1`, `rootfs`, `mp0`); default in order `scsi0..` or `rootfs, mp0..`.
    #[serde(default)]
    pub key: Option<String>,
    /// Storage holding the volume (exclusive with `path`).
    #[serde(default)]
    pub storage: Option<String>,
    /// A host path: a passed-through block device (`/dev/...`, qemu) or a bind mount (lxc).
    #[serde(default)]
    pub path: Option<String>,
    /// Size in GiB.
    #[serde(default = "default_disk_gb")]
    pub size_gb: f64,
    /// Mount point inside a container (lxc `mp`).
    #[serde(default)]
    pub mp: Option<String>,
    /// `shared=1` on the volume (a bind mount present on every node).
    #[serde(default)]
    pub shared: bool,
}

fn default_disk_gb() -> f64 {
    32.0
}

/// An HA rule (PVE 9 form; see [`Scenario::ha_rules`] for PVE 8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaRuleSpec {
    /// Rule id (PVE 8: the group name).
    pub rule: String,
    /// `node-affinity` or `resource-affinity`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Comma-separated HA resource ids (`vm:101,ct:102`) of HA-managed guests.
    pub resources: String,
    /// `positive` or `negative` (resource-affinity).
    #[serde(default)]
    pub affinity: Option<String>,
    /// `node[:prio],...` (node-affinity).
    #[serde(default)]
    pub nodes: Option<String>,
    /// Strict node affinity (PVE 8: the group's `restricted`).
    #[serde(default)]
    pub strict: bool,
    /// `disable` (PVE 9): the rule is listed but not in force.
    #[serde(default)]
    pub disable: bool,
    /// `nofailback` of the group (PVE 8 only; PVE 9 moved it to the resources).
    #[serde(default)]
    pub nofailback: bool,
}

impl HaRuleSpec {
    /// The HA resource ids of `resources`.
    pub fn resource_ids(&self) -> impl Iterator<Item = &str> {
        self.resources
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

impl Scenario {
    /// Parses and validates a scenario from TOML text.
    pub fn from_toml_str(text: &str) -> Result<Self, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse(e.to_string()))?;
        s.validate()?;
        Ok(s)
    }

    /// Reads, parses and validates a scenario file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ScenarioError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml_str(&text)
    }

    /// Serializes the scenario back to TOML (e.g. to save a generated one).
    pub fn to_toml_string(&self) -> Result<String, ScenarioError> {
        toml::to_string(self).map_err(|e| ScenarioError::Parse(e.to_string()))
    }

    /// The version string `/version` reports.
    pub fn version(&self) -> String {
        self.cluster
            .version
            .clone()
            .unwrap_or_else(|| match self.cluster.flavour {
                Flavour::Pve8 => "8.2.4".to_string(),
                Flavour::Pve9 => "9.1.1".to_string(),
            })
    }

    /// Σ maximum memory (bytes) of the running guests the scenario places on `node` at start:
    /// the committed memory a collector must report for it.
    pub fn committed_mem_bytes(&self, node: &str) -> u64 {
        self.guests
            .iter()
            .filter(|g| g.node == node && g.status == GuestStatus::Running)
            .map(|g| mem_bytes(g.memory_gb))
            .sum()
    }

    /// Checks ranges and cross references; the error names the field.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let c = &self.cluster;
        if c.name.trim().is_empty() {
            return Err(invalid("cluster.name", "must not be empty"));
        }
        if !c.acceleration.is_finite() || c.acceleration < 0.0 {
            return Err(invalid(
                "cluster.acceleration",
                "must be a finite number ≥ 0",
            ));
        }
        if !c.migration_mib_s.is_finite() || c.migration_mib_s <= 0.0 {
            return Err(invalid("cluster.migration_mib_s", "must be > 0"));
        }
        if let Some(v) = &c.version {
            let major = v.split('.').next().and_then(|m| m.parse::<u32>().ok());
            let want = match c.flavour {
                Flavour::Pve8 => 8,
                Flavour::Pve9 => 9,
            };
            if major != Some(want) {
                return Err(invalid(
                    "cluster.version",
                    format!("'{v}' does not match flavour pve{want}"),
                ));
            }
        }
        if !["basic", "static", "dynamic"].contains(&c.crs_ha.as_str()) {
            return Err(invalid(
                "cluster.crs_ha",
                "must be basic, static or dynamic",
            ));
        }
        let pve_9_2 = c.flavour == Flavour::Pve9 && version_tuple(&self.version()) >= (9, 2, 0);
        if c.crs_ha == "dynamic" && !pve_9_2 {
            return Err(invalid(
                "cluster.crs_ha",
                format!(
                    "dynamic needs PVE 9.2 or later (version {})",
                    self.version()
                ),
            ));
        }
        if c.crs_auto_rebalance && !pve_9_2 {
            return Err(invalid(
                "cluster.crs_auto_rebalance",
                format!("needs PVE 9.2 or later (version {})", self.version()),
            ));
        }
        for (i, t) in self.tokens.iter().enumerate() {
            let f = format!("tokens[{i}]");
            let ok = t.id.split_once('!').is_some_and(|(user, tok)| {
                user.contains('@')
                    && !tok.is_empty()
                    && !user.starts_with('@')
                    && !user.ends_with('@')
            });
            if !ok {
                return Err(invalid(
                    format!("{f}.id"),
                    "must look like user@realm!tokenid",
                ));
            }
            if t.secret.is_empty() {
                return Err(invalid(format!("{f}.secret"), "must not be empty"));
            }
            if let Some(privs) = &t.privileges {
                for (j, p) in privs.iter().enumerate() {
                    if !ALL_PRIVILEGES.contains(&p.as_str()) {
                        return Err(invalid(
                            format!("{f}.privileges[{j}]"),
                            format!(
                                "unknown privilege '{p}' (known: {})",
                                ALL_PRIVILEGES.join(", ")
                            ),
                        ));
                    }
                }
            }
        }
        if self.nodes.is_empty() {
            return Err(invalid("nodes", "at least one node is required"));
        }
        let mut names = BTreeSet::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let f = format!("nodes[{i}]");
            if n.name.is_empty()
                || !n
                    .name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
            {
                return Err(invalid(
                    format!("{f}.name"),
                    "must be a host name (letters, digits, '-')",
                ));
            }
            if !names.insert(n.name.as_str()) {
                return Err(invalid(
                    format!("{f}.name"),
                    format!("duplicate node '{}'", n.name),
                ));
            }
            if n.cores == 0 || n.cores > 4096 {
                return Err(invalid(format!("{f}.cores"), "must be between 1 and 4096"));
            }
            if n.sockets == 0 {
                return Err(invalid(format!("{f}.sockets"), "must be ≥ 1"));
            }
            positive(&format!("{f}.memory_gb"), n.memory_gb)?;
            non_negative(&format!("{f}.base_mem_gb"), n.base_mem_gb)?;
            if n.base_mem_gb >= n.memory_gb {
                return Err(invalid(
                    format!("{f}.base_mem_gb"),
                    "must be below memory_gb",
                ));
            }
            positive(&format!("{f}.rootfs_gb"), n.rootfs_gb)?;
            non_negative(&format!("{f}.iowait_per_mb_s"), n.iowait_per_mb_s)?;
            check_load(&format!("{f}.load"), &n.load)?;
            let mut sids = BTreeSet::new();
            for (j, s) in n.storages.iter().enumerate() {
                let sf = format!("{f}.storages[{j}]");
                if s.id.is_empty() || s.id.contains(':') {
                    return Err(invalid(
                        format!("{sf}.id"),
                        "must be a storage id without ':'",
                    ));
                }
                if !sids.insert(s.id.as_str()) {
                    return Err(invalid(
                        format!("{sf}.id"),
                        format!("duplicate storage '{}'", s.id),
                    ));
                }
                positive(&format!("{sf}.total_gb"), s.total_gb)?;
                non_negative(&format!("{sf}.used_gb"), s.used_gb)?;
                if s.used_gb > s.total_gb {
                    return Err(invalid(format!("{sf}.used_gb"), "must not exceed total_gb"));
                }
            }
        }
        let mut vmids = BTreeSet::new();
        for (i, g) in self.guests.iter().enumerate() {
            let f = format!("guests[{i}]");
            if g.vmid < 100 || g.vmid > 999_999_999 {
                return Err(invalid(
                    format!("{f}.vmid"),
                    "must be between 100 and 999999999",
                ));
            }
            if !vmids.insert(g.vmid) {
                return Err(invalid(
                    format!("{f}.vmid"),
                    format!("duplicate vmid {}", g.vmid),
                ));
            }
            let Some(node) = self.nodes.iter().find(|n| n.name == g.node) else {
                return Err(invalid(
                    format!("{f}.node"),
                    format!("unknown node '{}'", g.node),
                ));
            };
            if g.cores == 0 || g.cores > 1024 {
                return Err(invalid(format!("{f}.cores"), "must be between 1 and 1024"));
            }
            positive(&format!("{f}.memory_gb"), g.memory_gb)?;
            if let Some(b) = g.balloon_min_gb {
                if g.kind == GuestKind::Lxc {
                    return Err(invalid(
                        format!("{f}.balloon_min_gb"),
                        "only virtual machines balloon",
                    ));
                }
                non_negative(&format!("{f}.balloon_min_gb"), b)?;
                if b > g.memory_gb {
                    return Err(invalid(
                        format!("{f}.balloon_min_gb"),
                        "must not exceed memory_gb",
                    ));
                }
            }
            if let Some(h) = &g.ha
                && !["started", "stopped", "disabled", "ignored", "enabled"].contains(&h.as_str())
            {
                return Err(invalid(
                    format!("{f}.ha"),
                    "must be started, stopped, disabled or ignored",
                ));
            }
            if !g.hostpci.is_empty() && g.kind == GuestKind::Lxc {
                return Err(invalid(
                    format!("{f}.hostpci"),
                    "only virtual machines have PCI passthrough",
                ));
            }
            if let Some(u) = g.uptime_days {
                non_negative(&format!("{f}.uptime_days"), u)?;
            }
            check_load(&format!("{f}.load"), &g.load)?;
            let mut keys = BTreeSet::new();
            for (j, d) in g.disks.iter().enumerate() {
                let df = format!("{f}.disks[{j}]");
                match (&d.storage, &d.path) {
                    (Some(s), None) => {
                        if !node.storages.iter().any(|st| &st.id == s) {
                            return Err(invalid(
                                format!("{df}.storage"),
                                format!("storage '{s}' is not defined on node '{}'", node.name),
                            ));
                        }
                    }
                    (None, Some(p)) => {
                        if !p.starts_with('/') {
                            return Err(invalid(
                                format!("{df}.path"),
                                "must be an absolute host path",
                            ));
                        }
                    }
                    _ => return Err(invalid(df, "give exactly one of `storage` or `path`")),
                }
                non_negative(&format!("{df}.size_gb"), d.size_gb)?;
                if let Some(k) = &d.key
                    && !keys.insert(k.clone())
                {
                    return Err(invalid(
                        format!("{df}.key"),
                        format!("duplicate disk key '{k}'"),
                    ));
                }
            }
            if g.disks.is_empty() && node.storages.is_empty() {
                return Err(invalid(
                    format!("{f}.disks"),
                    format!(
                        "no disks given and node '{}' has no storage for a default disk",
                        node.name
                    ),
                ));
            }
        }
        self.validate_ha_rules()?;
        Ok(())
    }

    /// HA rules as PVE refuses them: unknown or unmanaged resources, unknown nodes, keys of the
    /// other rule type; on PVE 8 also what groups cannot express.
    fn validate_ha_rules(&self) -> Result<(), ScenarioError> {
        let pve8 = self.cluster.flavour == Flavour::Pve8;
        let mut ids = BTreeSet::new();
        let mut grouped: BTreeMap<&str, &str> = BTreeMap::new();
        for (i, r) in self.ha_rules.iter().enumerate() {
            let f = format!("ha_rules[{i}]");
            let id_ok = r
                .rule
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
                && r.rule
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !id_ok {
                return Err(invalid(
                    format!("{f}.rule"),
                    "must start with a letter and hold letters, digits, '-', '_' or '.'",
                ));
            }
            if !ids.insert(r.rule.as_str()) {
                return Err(invalid(
                    format!("{f}.rule"),
                    format!("duplicate rule '{}'", r.rule),
                ));
            }
            if r.resource_ids().next().is_none() {
                return Err(invalid(format!("{f}.resources"), "must name a resource"));
            }
            for sid in r.resource_ids() {
                let guest = sid.split_once(':').and_then(|(t, id)| {
                    let id = id.parse::<u32>().ok()?;
                    self.guests.iter().find(|g| {
                        g.vmid == id
                            && matches!(
                                (t, g.kind),
                                ("vm", GuestKind::Qemu) | ("ct", GuestKind::Lxc)
                            )
                    })
                });
                match guest {
                    None => {
                        return Err(invalid(
                            format!("{f}.resources"),
                            format!("unknown HA resource '{sid}'"),
                        ));
                    }
                    Some(g) if g.ha.is_none() => {
                        return Err(invalid(
                            format!("{f}.resources"),
                            format!("'{sid}' is not HA-managed (give the guest `ha`)"),
                        ));
                    }
                    Some(_) => {}
                }
            }
            match r.kind.as_str() {
                "node-affinity" => {
                    let Some(nodes) = r.nodes.as_deref() else {
                        return Err(invalid(
                            format!("{f}.nodes"),
                            "a node-affinity rule needs nodes",
                        ));
                    };
                    if r.affinity.is_some() {
                        return Err(invalid(
                            format!("{f}.affinity"),
                            "only resource-affinity rules have an affinity",
                        ));
                    }
                    for entry in nodes.split(',') {
                        let (name, prio) = match entry.trim().split_once(':') {
                            Some((n, p)) => (n, Some(p)),
                            None => (entry.trim(), None),
                        };
                        if !self.nodes.iter().any(|n| n.name == name) {
                            return Err(invalid(
                                format!("{f}.nodes"),
                                format!("unknown node '{name}'"),
                            ));
                        }
                        if prio.is_some_and(|p| p.parse::<u32>().map_or(true, |p| p > 1000)) {
                            return Err(invalid(
                                format!("{f}.nodes"),
                                format!("'{entry}': the priority must be 0–1000"),
                            ));
                        }
                    }
                    if pve8 {
                        for sid in r.resource_ids() {
                            if let Some(other) = grouped.insert(sid, r.rule.as_str()) {
                                return Err(invalid(
                                    format!("{f}.resources"),
                                    format!(
                                        "'{sid}' is already in group '{other}' (a PVE 8 HA \
                                         resource has one group)"
                                    ),
                                ));
                            }
                        }
                    }
                }
                "resource-affinity" => {
                    if pve8 {
                        return Err(invalid(
                            format!("{f}.type"),
                            "PVE 8 has no resource-affinity rules (HA groups only)",
                        ));
                    }
                    if !matches!(r.affinity.as_deref(), Some("positive" | "negative")) {
                        return Err(invalid(
                            format!("{f}.affinity"),
                            "must be positive or negative",
                        ));
                    }
                    if r.nodes.is_some() || r.strict {
                        return Err(invalid(
                            format!("{f}.nodes"),
                            "only node-affinity rules have nodes and strict",
                        ));
                    }
                }
                _ => {
                    return Err(invalid(
                        format!("{f}.type"),
                        "must be node-affinity or resource-affinity",
                    ));
                }
            }
            if pve8 && r.disable {
                return Err(invalid(
                    format!("{f}.disable"),
                    "PVE 8 HA groups cannot be disabled",
                ));
            }
            if !pve8 && r.nofailback {
                return Err(invalid(
                    format!("{f}.nofailback"),
                    "a PVE 8 group option (PVE 9 sets failback per resource)",
                ));
            }
        }
        Ok(())
    }

    /// A synthetic cluster of `nodes` nodes and `guests` guests for benchmarks, deterministic for
    /// `seed`: mixed node sizes, 80 % VMs / 20 % containers, every profile shape, a shared Ceph
    /// storage plus a local one per node, about 60–85 % of memory committed, and the token
    /// [`DEFAULT_TOKEN_ID`] / [`DEFAULT_TOKEN_SECRET`]. The clock is manual.
    pub fn generated(nodes: usize, guests: usize, seed: u64) -> Scenario {
        let nodes = nodes.max(1);
        let mut rng = SplitMix64::new(seed);
        let sizes: [(u32, f64); 3] = [(32, 256.0), (48, 384.0), (64, 512.0)];
        let mut node_specs = Vec::with_capacity(nodes);
        for i in 0..nodes {
            let (cores, mem) = sizes[rng.below(3) as usize];
            node_specs.push(NodeSpec {
                name: format!("pve{}", i + 1),
                cores,
                physical_cores: None,
                sockets: 2,
                memory_gb: mem,
                base_mem_gb: 4.0,
                rootfs_gb: 100.0,
                ip: None,
                offline: false,
                maintenance: false,
                iowait_per_mb_s: 0.0005,
                load: LoadSpec {
                    cpu: rng.range_f64(0.01, 0.04),
                    iowait: rng.range_f64(0.001, 0.02),
                    ..default_node_load()
                },
                storages: vec![
                    StorageSpec {
                        id: "local-lvm".into(),
                        kind: "lvmthin".into(),
                        shared: false,
                        total_gb: 1800.0,
                        used_gb: 200.0,
                        content: "images,rootdir".into(),
                        active: true,
                    },
                    StorageSpec {
                        id: "ceph-vm".into(),
                        kind: "rbd".into(),
                        shared: true,
                        total_gb: 100_000.0,
                        used_gb: 30_000.0,
                        content: "images,rootdir".into(),
                        active: true,
                    },
                ],
            });
        }
        // Spread guests so each node's committed memory lands near a drawn target fill.
        let targets: Vec<f64> = node_specs
            .iter()
            .map(|n| n.memory_gb * rng.range_f64(0.6, 0.85))
            .collect();
        let mut filled = vec![0.0f64; nodes];
        let mems = [1.0, 2.0, 4.0, 4.0, 8.0, 8.0, 16.0, 32.0];
        let shapes = [
            Shape::Steady,
            Shape::Steady,
            Shape::Diurnal,
            Shape::Diurnal,
            Shape::Spiky,
            Shape::Growing,
            Shape::IoHeavy,
        ];
        let mut guest_specs = Vec::with_capacity(guests);
        let total_target: f64 = targets.iter().sum();
        let scale = total_target / (guests.max(1) as f64 * 8.0);
        for k in 0..guests {
            let vmid = 100 + k as u32;
            let kind = if rng.below(5) == 0 {
                GuestKind::Lxc
            } else {
                GuestKind::Qemu
            };
            let mut memory_gb =
                mems[rng.below(mems.len() as u64) as usize] * scale.clamp(0.125, 4.0);
            memory_gb = (memory_gb * 4.0).round().max(1.0) / 4.0;
            // The node furthest below its target fill (ties: lowest index) takes the guest.
            let node = (0..nodes)
                .max_by(|&a, &b| {
                    let ra = (targets[a] - filled[a]) / node_specs[a].memory_gb;
                    let rb = (targets[b] - filled[b]) / node_specs[b].memory_gb;
                    ra.total_cmp(&rb).then(b.cmp(&a))
                })
                .unwrap_or(0);
            let running = rng.below(20) != 0;
            if running {
                filled[node] += memory_gb;
            }
            let shape = shapes[rng.below(shapes.len() as u64) as usize];
            let storage = if rng.below(4) == 0 {
                "local-lvm"
            } else {
                "ceph-vm"
            };
            let cores = [1u32, 2, 2, 4, 4, 8][rng.below(6) as usize];
            guest_specs.push(GuestSpec {
                vmid,
                kind,
                name: Some(format!(
                    "{}-{vmid}",
                    if kind == GuestKind::Qemu { "vm" } else { "ct" }
                )),
                node: node_specs[node].name.clone(),
                cores,
                memory_gb,
                balloon_min_gb: (kind == GuestKind::Qemu && rng.below(3) == 0)
                    .then_some(memory_gb / 2.0),
                status: if running {
                    GuestStatus::Running
                } else {
                    GuestStatus::Stopped
                },
                tags: if rng.below(10) == 0 {
                    vec!["prod".into()]
                } else {
                    Vec::new()
                },
                ha: (rng.below(10) == 0).then(|| "started".to_string()),
                lock: None,
                template: false,
                pool: None,
                disks: vec![DiskSpec {
                    key: None,
                    storage: Some(storage.into()),
                    path: None,
                    size_gb: if kind == GuestKind::Qemu { 32.0 } else { 8.0 },
                    mp: None,
                    shared: false,
                }],
                hostpci: Vec::new(),
                uptime_days: None,
                load: LoadSpec {
                    shape,
                    cpu: rng.range_f64(0.02, 0.5),
                    mem: rng.range_f64(0.3, 0.85),
                    net_in_mb_s: rng.range_f64(0.0, 2.0),
                    net_out_mb_s: rng.range_f64(0.0, 2.0),
                    amplitude: rng.range_f64(0.2, 1.5),
                    noise: 0.05,
                    ..LoadSpec::default()
                },
            });
        }
        Scenario {
            cluster: ClusterSpec {
                name: format!("gen-{nodes}x{guests}"),
                flavour: Flavour::Pve9,
                version: None,
                seed,
                start_time: Some(1_764_230_400),
                acceleration: 0.0,
                migration_mib_s: default_migration_bw(),
                auth_failure_delay_ms: 0,
                crs_ha: default_crs(),
                crs_auto_rebalance: false,
            },
            tokens: vec![TokenSpec {
                id: DEFAULT_TOKEN_ID.into(),
                secret: DEFAULT_TOKEN_SECRET.into(),
                privileges: None,
                expire: None,
            }],
            nodes: node_specs,
            guests: guest_specs,
            ha_rules: Vec::new(),
        }
    }

    /// Committed memory (bytes) of every node at start, keyed by node name.
    pub fn committed_by_node(&self) -> BTreeMap<String, u64> {
        self.nodes
            .iter()
            .map(|n| (n.name.clone(), self.committed_mem_bytes(&n.name)))
            .collect()
    }
}

/// `(major, minor, patch)` of a version string such as `9.2.1` (missing parts are 0).
pub fn version_tuple(version: &str) -> (u32, u32, u32) {
    let mut it = version
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

/// GiB (possibly fractional) to bytes, rounded to whole MiB as PVE configs store memory in MiB.
pub fn mem_bytes(gb: f64) -> u64 {
    mem_mib(gb) * 1024 * 1024
}

/// GiB to whole MiB.
pub fn mem_mib(gb: f64) -> u64 {
    (gb * 1024.0).round().max(0.0) as u64
}

/// GiB (fractional) to bytes.
pub fn gib_bytes(gb: f64) -> u64 {
    (gb * GIB).round().max(0.0) as u64
}

fn positive(field: &str, v: f64) -> Result<(), ScenarioError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(invalid(field, "must be a finite number > 0"))
    }
}

fn non_negative(field: &str, v: f64) -> Result<(), ScenarioError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(invalid(field, "must be a finite number ≥ 0"))
    }
}

fn fraction(field: &str, v: f64) -> Result<(), ScenarioError> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(invalid(field, "must be a fraction between 0 and 1"))
    }
}

fn check_load(f: &str, l: &LoadSpec) -> Result<(), ScenarioError> {
    fraction(&format!("{f}.cpu"), l.cpu)?;
    fraction(&format!("{f}.mem"), l.mem)?;
    fraction(&format!("{f}.iowait"), l.iowait)?;
    fraction(&format!("{f}.spike_probability"), l.spike_probability)?;
    fraction(&format!("{f}.noise"), l.noise)?;
    if let Some(v) = l.disk_read_mb_s {
        non_negative(&format!("{f}.disk_read_mb_s"), v)?;
    }
    if let Some(v) = l.disk_write_mb_s {
        non_negative(&format!("{f}.disk_write_mb_s"), v)?;
    }
    non_negative(&format!("{f}.net_in_mb_s"), l.net_in_mb_s)?;
    non_negative(&format!("{f}.net_out_mb_s"), l.net_out_mb_s)?;
    non_negative(&format!("{f}.amplitude"), l.amplitude)?;
    if !l.growth_per_day.is_finite() {
        return Err(invalid(format!("{f}.growth_per_day"), "must be finite"));
    }
    if !l.step_at_hours.is_finite() {
        return Err(invalid(format!("{f}.step_at_hours"), "must be finite"));
    }
    if !(l.peak_hour.is_finite() && (0.0..24.0).contains(&l.peak_hour)) {
        return Err(invalid(
            format!("{f}.peak_hour"),
            "must be an hour in [0, 24)",
        ));
    }
    if l.spike_minutes == 0 {
        return Err(invalid(format!("{f}.spike_minutes"), "must be ≥ 1"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[cluster]
name = "t"
[[tokens]]
id = "a@pve!x"
secret = "s"
[[nodes]]
name = "pve1"
cores = 8
memory_gb = 64
storages = [{ id = "local", total_gb = 100 }]
[[guests]]
vmid = 100
kind = "qemu"
node = "pve1"
memory_gb = 4
"#;

    fn err(text: &str) -> String {
        Scenario::from_toml_str(text)
            .expect_err("must fail")
            .to_string()
    }

    #[test]
    fn minimal_parses_with_defaults() {
        let s = Scenario::from_toml_str(MINIMAL).expect("parse");
        assert_eq!(s.cluster.flavour, Flavour::Pve9);
        assert_eq!(s.version(), "9.1.1");
        assert_eq!(s.guests[0].cores, 1);
        assert_eq!(s.committed_mem_bytes("pve1"), 4 << 30);
    }

    #[test]
    fn errors_name_the_field() {
        let e = err(&MINIMAL.replace("node = \"pve1\"", "node = \"pve9\""));
        assert!(e.contains("guests[0].node") && e.contains("pve9"), "{e}");
        let e = err(&MINIMAL.replace("memory_gb = 4", "memory_gb = -4"));
        assert!(e.contains("guests[0].memory_gb"), "{e}");
        let e = err(&MINIMAL.replace("cores = 8", "cores = 8\nbogus = 1"));
        assert!(e.contains("bogus"), "{e}");
        let e = err(&MINIMAL.replace("cores = 8\n", ""));
        assert!(e.contains("cores"), "{e}");
        let e = err(&MINIMAL.replace("id = \"a@pve!x\"", "id = \"nobang\""));
        assert!(e.contains("tokens[0].id"), "{e}");
        let e = err(&format!("{MINIMAL}disks = [{{ storage = \"nfs\" }}]\n"));
        assert!(e.contains("guests[0].disks[0].storage"), "{e}");
        let e = err(&format!("{MINIMAL}load = {{ cpu = 1.5 }}\n"));
        assert!(e.contains("guests[0].load.cpu"), "{e}");
        let e = err(&format!(
            "{MINIMAL}[[guests]]\nvmid = 100\nkind = \"lxc\"\nnode = \"pve1\"\nmemory_gb = 1\n"
        ));
        assert!(
            e.contains("guests[1].vmid") && e.contains("duplicate"),
            "{e}"
        );
        let e = err(&MINIMAL.replace("kind = \"qemu\"", "kind = \"openvz\""));
        assert!(e.contains("openvz") || e.contains("kind"), "{e}");
        let e = err("not toml at all [");
        assert!(e.starts_with("invalid scenario"), "{e}");
    }

    #[test]
    fn generated_is_deterministic_and_valid() {
        let a = Scenario::generated(8, 200, 7);
        let b = Scenario::generated(8, 200, 7);
        assert_eq!(a, b);
        a.validate().expect("valid");
        assert_eq!(a.nodes.len(), 8);
        assert_eq!(a.guests.len(), 200);
        for n in &a.nodes {
            let ratio = a.committed_mem_bytes(&n.name) as f64 / gib_bytes(n.memory_gb) as f64;
            assert!(ratio > 0.3 && ratio < 1.2, "{} {ratio}", n.name);
        }
        let big = Scenario::generated(64, 4000, 1);
        big.validate().expect("valid");
        let text = big.to_toml_string().expect("toml");
        assert_eq!(Scenario::from_toml_str(&text).expect("round trip"), big);
    }
}
