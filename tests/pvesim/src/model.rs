//! The simulated cluster: placement of guests, node availability, tasks, and the metrics every
//! endpoint derives from the load profiles. All functions take the simulated time explicitly.

use std::collections::{BTreeMap, HashMap};

use crate::load::{LoadSample, MB, SAMPLE_STEP};
use crate::prng::{hash_str, unit};
use crate::scenario::{
    Flavour, GuestKind, GuestSpec, GuestStatus, NodeSpec, Scenario, gib_bytes, mem_bytes, mem_mib,
};

/// How a downed node's node-scoped endpoints fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DownMode {
    /// HTTP 595 "No route to host" (connection refused/unreachable).
    #[default]
    NoRoute,
    /// HTTP 596 "Connection timed out" (peer hung).
    Timeout,
}

impl DownMode {
    /// The pseudo-status and reason phrase PVE's proxy answers with.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            DownMode::NoRoute => (595, "No route to host"),
            DownMode::Timeout => (596, "Connection timed out"),
        }
    }
}

/// A resolved disk of a guest.
#[derive(Debug, Clone)]
pub(crate) struct Disk {
    pub key: String,
    /// Config value, e.g. `ceph-vm:vm-101-disk-0,size=32G`.
    pub value: String,
    pub storage: Option<String>,
    pub size: u64,
    /// A host path (passthrough device or bind mount).
    pub host_path: bool,
    pub shared_flag: bool,
}

/// Cumulative counters of a guest at a point in simulated time.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counters {
    pub at: f64,
    pub net_in: f64,
    pub net_out: f64,
    pub disk_read: f64,
    pub disk_write: f64,
}

#[derive(Debug, Clone)]
pub(crate) struct NodeRt {
    pub spec: NodeSpec,
    pub entity: u64,
    pub boot: f64,
    pub ip: String,
    /// Down intervals `[from, to)`; an open interval means still down.
    pub down: Vec<(f64, Option<f64>)>,
    pub down_mode: DownMode,
    pub maintenance: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct GuestRt {
    pub spec: GuestSpec,
    pub name: String,
    pub node: usize,
    /// Completed moves: (time, from, to).
    pub moves: Vec<(f64, usize, usize)>,
    pub lock: Option<String>,
    pub running: bool,
    pub started: f64,
    pub disks: Vec<Disk>,
    pub counters: Counters,
    pub entity: u64,
}

/// A task (migration) with its lifecycle in simulated time.
#[derive(Debug, Clone)]
pub(crate) struct Task {
    pub upid: String,
    pub node: String,
    pub pid: u32,
    pub pstart: u64,
    pub starttime: i64,
    pub kind: String,
    pub id: String,
    pub user: String,
    pub tokenid: Option<String>,
    pub end: f64,
    pub exitstatus: String,
    pub log: Vec<String>,
    /// What happens when the task ends.
    pub effect: TaskEffect,
    pub done: bool,
}

#[derive(Debug, Clone)]
pub(crate) enum TaskEffect {
    None,
    Move {
        guest: usize,
        target: usize,
        restart: bool,
    },
    Unlock {
        guest: usize,
    },
}

/// Metrics of a node at one instant (rates in bytes/s, fractions 0..1).
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeSample {
    /// CPU fraction of all threads.
    pub cpu: f64,
    /// IOWait fraction.
    pub iowait: f64,
    /// 1-minute load average.
    pub loadavg: f64,
    /// Memory used (MemTotal − MemAvailable), bytes.
    pub mem_used: f64,
    /// Memory total, bytes.
    pub mem_total: f64,
    /// Swap used, bytes.
    pub swap_used: f64,
    /// Root fs used, bytes.
    pub root_used: f64,
    /// Network receive bytes/s (physical NICs).
    pub net_in: f64,
    /// Network send bytes/s.
    pub net_out: f64,
    /// PSI cpu some (percent).
    pub psi_cpu_some: f64,
    /// PSI io some (percent).
    pub psi_io_some: f64,
    /// PSI io full (percent).
    pub psi_io_full: f64,
    /// PSI memory some (percent).
    pub psi_mem_some: f64,
    /// PSI memory full (percent).
    pub psi_mem_full: f64,
}

/// Metrics of a running guest at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct GuestSample {
    /// CPU fraction of its own vCPUs.
    pub cpu: f64,
    /// Guest-visible memory used, bytes.
    pub mem: f64,
    /// Host-side memory of the guest, bytes.
    pub memhost: f64,
    /// Disk read bytes/s.
    pub disk_read: f64,
    /// Disk write bytes/s.
    pub disk_write: f64,
    /// Network receive bytes/s.
    pub net_in: f64,
    /// Network send bytes/s.
    pub net_out: f64,
}

pub(crate) const SWAP_TOTAL: f64 = 8.0 * 1024.0 * 1024.0 * 1024.0;

/// The whole mutable simulation.
#[derive(Debug)]
pub(crate) struct Sim {
    pub scenario: Scenario,
    pub seed: u64,
    pub start: f64,
    pub nodes: Vec<NodeRt>,
    pub node_index: HashMap<String, usize>,
    pub guests: Vec<GuestRt>,
    pub guest_index: HashMap<u32, usize>,
    pub tasks: Vec<Task>,
    pub next_pid: u32,
}

impl Sim {
    pub fn new(scenario: Scenario, start: f64) -> Self {
        let seed = scenario.cluster.seed;
        let nodes: Vec<NodeRt> = scenario
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let entity = hash_str(&n.name) | (1 << 63);
                let uptime_days = 5.0 + 40.0 * unit(seed, entity, 100, 0);
                NodeRt {
                    spec: n.clone(),
                    entity,
                    boot: (start - uptime_days * 86_400.0).floor(),
                    ip: n.ip.clone().unwrap_or_else(|| format!("10.0.0.{}", i + 1)),
                    down: if n.offline {
                        vec![(start - 600.0, None)]
                    } else {
                        Vec::new()
                    },
                    down_mode: DownMode::NoRoute,
                    maintenance: n.maintenance,
                }
            })
            .collect();
        let node_index: HashMap<String, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.spec.name.clone(), i))
            .collect();
        let mut sim = Sim {
            seed,
            start,
            nodes,
            node_index,
            guests: Vec::with_capacity(scenario.guests.len()),
            guest_index: HashMap::new(),
            tasks: Vec::new(),
            next_pid: 0x0016_E9A5,
            scenario,
        };
        for (i, g) in sim.scenario.guests.clone().into_iter().enumerate() {
            let node = sim.node_index.get(&g.node).copied().unwrap_or(0);
            let entity = u64::from(g.vmid);
            let uptime_days = g
                .uptime_days
                .unwrap_or_else(|| 0.5 + 30.0 * unit(seed, entity, 101, 0));
            let running = g.status == GuestStatus::Running && !g.template;
            let disks = resolve_disks(&g, &sim.nodes[node].spec);
            let name = g.name.clone().unwrap_or_else(|| match g.kind {
                GuestKind::Qemu => format!("VM {}", g.vmid),
                GuestKind::Lxc => format!("CT{}", g.vmid),
            });
            let started = (start - uptime_days * 86_400.0).floor();
            let mut rt = GuestRt {
                name,
                node,
                moves: Vec::new(),
                lock: g.lock.clone(),
                running,
                started,
                disks,
                counters: Counters::default(),
                entity,
                spec: g,
            };
            if running {
                // Start the counters at "mean rate × uptime" so they look like long-running ones.
                let mean = rt.spec.load.sample(seed, entity, start, start);
                let up = start - started;
                rt.counters = Counters {
                    at: start,
                    net_in: mean.net_in * up,
                    net_out: mean.net_out * up,
                    disk_read: mean.disk_read * up,
                    disk_write: mean.disk_write * up,
                };
            } else {
                rt.counters.at = start;
            }
            sim.guest_index.insert(rt.spec.vmid, i);
            sim.guests.push(rt);
        }
        sim
    }

    pub fn flavour(&self) -> Flavour {
        self.scenario.cluster.flavour
    }

    pub fn pve9(&self) -> bool {
        self.flavour() == Flavour::Pve9
    }

    /// `(major, minor, patch)` of the configured version.
    pub fn version_tuple(&self) -> (u32, u32, u32) {
        crate::scenario::version_tuple(&self.scenario.version())
    }

    pub fn node_online_at(&self, n: usize, t: f64) -> bool {
        !self.nodes[n]
            .down
            .iter()
            .any(|&(a, b)| t >= a && b.is_none_or(|b| t < b))
    }

    /// When the node went down (if it is down at `t`).
    pub fn node_down_since(&self, n: usize, t: f64) -> Option<f64> {
        self.nodes[n]
            .down
            .iter()
            .find(|&&(a, b)| t >= a && b.is_none_or(|b| t < b))
            .map(|&(a, _)| a)
    }

    pub fn set_node_online(&mut self, n: usize, online: bool, now: f64, mode: DownMode) {
        let node = &mut self.nodes[n];
        let is_down = node.down.last().is_some_and(|&(_, b)| b.is_none());
        if online && is_down {
            if let Some(last) = node.down.last_mut() {
                last.1 = Some(now);
            }
        } else if !online {
            node.down_mode = mode;
            if !is_down {
                node.down.push((now, None));
            }
        }
    }

    pub fn quorate(&self, now: f64) -> bool {
        let online = (0..self.nodes.len())
            .filter(|&n| self.node_online_at(n, now))
            .count();
        online * 2 > self.nodes.len()
    }

    /// The node a guest was placed on at time `t` (history follows completed moves).
    pub fn guest_node_at(&self, g: usize, t: f64) -> usize {
        let rt = &self.guests[g];
        let mut node = rt.moves.first().map(|m| m.1).unwrap_or(rt.node);
        for &(when, _, to) in &rt.moves {
            if when <= t {
                node = to;
            }
        }
        node
    }

    /// Guests that were ever placed on node `n`.
    pub fn guests_ever_on(&self, n: usize) -> Vec<usize> {
        (0..self.guests.len())
            .filter(|&g| {
                let rt = &self.guests[g];
                rt.node == n || rt.moves.iter().any(|m| m.1 == n || m.2 == n)
            })
            .collect()
    }

    /// Guests currently placed on node `n`.
    pub fn guests_on(&self, n: usize) -> Vec<usize> {
        (0..self.guests.len())
            .filter(|&g| self.guests[g].node == n)
            .collect()
    }

    /// The running guests on `n` at time `t`, from a candidate list.
    pub fn running_on_at(&self, n: usize, t: f64, candidates: &[usize]) -> Vec<usize> {
        candidates
            .iter()
            .copied()
            .filter(|&g| self.guests[g].running && self.guest_node_at(g, t) == n)
            .collect()
    }

    pub fn maxmem(&self, g: usize) -> u64 {
        mem_bytes(self.guests[g].spec.memory_gb)
    }

    /// `maxcpu` of a guest: its vCPUs capped at its node's threads.
    pub fn guest_maxcpu(&self, g: usize) -> u32 {
        let rt = &self.guests[g];
        rt.spec.cores.min(self.nodes[rt.node].spec.cores)
    }

    pub fn guest_maxdisk(&self, g: usize) -> u64 {
        let rt = &self.guests[g];
        rt.disks
            .iter()
            .find(|d| !d.host_path)
            .or(rt.disks.first())
            .map(|d| d.size)
            .unwrap_or(0)
    }

    /// A running guest's profile sample at `t`.
    pub fn guest_load(&self, g: usize, t: f64) -> LoadSample {
        let rt = &self.guests[g];
        rt.spec.load.sample(self.seed, rt.entity, t, self.start)
    }

    pub fn guest_sample(&self, g: usize, t: f64) -> GuestSample {
        let l = self.guest_load(g, t);
        let maxmem = self.maxmem(g) as f64;
        let mem = (l.mem * maxmem).max(16.0 * 1024.0 * 1024.0).min(maxmem);
        let memhost = match self.guests[g].spec.kind {
            GuestKind::Qemu => mem * 1.02 + 150.0 * 1024.0 * 1024.0,
            GuestKind::Lxc => mem,
        };
        GuestSample {
            cpu: l.cpu,
            mem,
            memhost,
            disk_read: l.disk_read,
            disk_write: l.disk_write,
            net_in: l.net_in,
            net_out: l.net_out,
        }
    }

    /// A node's metrics at `t`, given the guests running on it at that time.
    pub fn node_sample(&self, n: usize, t: f64, members: &[usize]) -> NodeSample {
        let node = &self.nodes[n];
        let spec = &node.spec;
        let base = spec.load.sample(self.seed, node.entity, t, self.start);
        let threads = f64::from(spec.cores);
        let mut cpu_threads = base.cpu * threads;
        let mut io_mb = 0.0;
        let mut mem_used = gib_bytes(spec.base_mem_gb) as f64;
        let mut net_in = 0.0;
        let mut net_out = 0.0;
        for &g in members {
            let s = self.guest_sample(g, t);
            cpu_threads += s.cpu * f64::from(self.guest_maxcpu(g));
            io_mb += (s.disk_read + s.disk_write) / MB;
            mem_used += s.memhost;
            net_in += s.net_in;
            net_out += s.net_out;
        }
        let mem_total = gib_bytes(spec.memory_gb) as f64;
        let cpu = (cpu_threads / threads).clamp(0.0, 1.0);
        let iowait = (base.iowait + io_mb * spec.iowait_per_mb_s).clamp(0.0, 0.99);
        let mem_used = mem_used.min(mem_total * 0.99);
        let mem_frac = mem_used / mem_total;
        let swap_used = if mem_frac > 0.8 {
            (mem_frac - 0.8) * SWAP_TOTAL
        } else {
            0.0
        } + 4096.0 * 1024.0;
        NodeSample {
            cpu,
            iowait,
            loadavg: cpu * threads * 1.05 + iowait * threads * 0.5,
            mem_used,
            mem_total,
            swap_used,
            root_used: gib_bytes(spec.rootfs_gb) as f64 * 0.22,
            net_in: net_in * 1.02 + 2000.0,
            net_out: net_out * 1.02 + 1500.0,
            psi_cpu_some: ((cpu - 0.5).max(0.0) * 120.0).min(100.0),
            psi_io_some: (iowait * 100.0 * 1.3).min(100.0),
            psi_io_full: (iowait * 100.0).min(100.0),
            psi_mem_some: ((mem_frac - 0.9).max(0.0) * 200.0).min(100.0),
            psi_mem_full: ((mem_frac - 0.95).max(0.0) * 100.0).min(100.0),
        }
    }

    /// The node's metrics now (10-s tick), with its current guests.
    pub fn node_sample_now(&self, n: usize, now: f64) -> NodeSample {
        let t = tick(now);
        let members: Vec<usize> = self
            .guests_on(n)
            .into_iter()
            .filter(|&g| self.guests[g].running)
            .collect();
        self.node_sample(n, t, &members)
    }

    /// Σ maxmem of the running guests currently on `n`.
    pub fn committed(&self, n: usize) -> u64 {
        self.guests_on(n)
            .into_iter()
            .filter(|&g| self.guests[g].running)
            .map(|g| self.maxmem(g))
            .sum()
    }

    /// Cumulative counters of a guest at `t`, integrated on the 10-s grid from the cached point.
    pub fn counters_at(&self, g: usize, t: f64) -> Counters {
        let rt = &self.guests[g];
        let mut c = rt.counters;
        if !rt.running {
            return Counters {
                at: t,
                ..Counters::default()
            };
        }
        let (from, to, sign) = if t >= c.at {
            (c.at, t, 1.0)
        } else {
            (t, c.at, -1.0)
        };
        let span = to - from;
        let step = if span > 6.0 * 3600.0 {
            600.0
        } else {
            SAMPLE_STEP as f64
        };
        let mut s = from;
        while s < to {
            let e = (((s / step).floor() + 1.0) * step).min(to);
            let l = self.guest_load(g, s);
            let d = (e - s) * sign;
            c.net_in += l.net_in * d;
            c.net_out += l.net_out * d;
            c.disk_read += l.disk_read * d;
            c.disk_write += l.disk_write * d;
            s = e;
        }
        c.at = t;
        c.net_in = c.net_in.max(0.0);
        c.net_out = c.net_out.max(0.0);
        c.disk_read = c.disk_read.max(0.0);
        c.disk_write = c.disk_write.max(0.0);
        c
    }

    /// Brings counters forward and completes tasks that ended by `now`.
    pub fn settle(&mut self, now: f64) {
        for g in 0..self.guests.len() {
            if self.guests[g].running && now > self.guests[g].counters.at {
                let c = self.counters_at(g, tick(now));
                self.guests[g].counters = c;
            }
        }
        let mut due: Vec<usize> = (0..self.tasks.len())
            .filter(|&i| !self.tasks[i].done && self.tasks[i].end <= now)
            .collect();
        due.sort_by(|&a, &b| {
            self.tasks[a]
                .end
                .total_cmp(&self.tasks[b].end)
                .then(a.cmp(&b))
        });
        for i in due {
            self.tasks[i].done = true;
            let end = self.tasks[i].end;
            match self.tasks[i].effect.clone() {
                TaskEffect::None => {}
                TaskEffect::Unlock { guest } => {
                    self.guests[guest].lock = None;
                }
                TaskEffect::Move {
                    guest,
                    target,
                    restart,
                } => {
                    let from = self.guests[guest].node;
                    let rt = &mut self.guests[guest];
                    rt.moves.push((end, from, target));
                    rt.node = target;
                    rt.lock = None;
                    if restart && rt.running {
                        rt.started = end;
                        rt.counters = Counters {
                            at: end,
                            ..Counters::default()
                        };
                    }
                }
            }
        }
    }

    pub fn alloc_pid(&mut self) -> u32 {
        self.next_pid = self.next_pid.wrapping_add(0x1A3);
        self.next_pid
    }

    pub fn node_uptime(&self, n: usize, now: f64) -> i64 {
        (now - self.nodes[n].boot).max(0.0) as i64
    }

    pub fn guest_uptime(&self, g: usize, now: f64) -> i64 {
        let rt = &self.guests[g];
        if rt.running {
            (now - rt.started).max(0.0) as i64
        } else {
            0
        }
    }

    /// HA resource id (`vm:100` / `ct:100`).
    pub fn sid(&self, g: usize) -> String {
        let rt = &self.guests[g];
        match rt.spec.kind {
            GuestKind::Qemu => format!("vm:{}", rt.spec.vmid),
            GuestKind::Lxc => format!("ct:{}", rt.spec.vmid),
        }
    }

    /// The HA CRM state of a guest (`started`, `migrate`, …) if HA-managed.
    pub fn ha_state(&self, g: usize) -> Option<String> {
        let rt = &self.guests[g];
        let req = rt.spec.ha.as_deref()?;
        if rt.lock.as_deref() == Some("migrate") {
            return Some("migrate".to_string());
        }
        Some(match req {
            "enabled" => "started".to_string(),
            other => other.to_string(),
        })
    }

    /// The HA group of a guest on PVE 8: the node-affinity rule naming its HA resource (the
    /// scenario allows one per resource there). `None` on PVE 9, where groups became rules.
    pub fn ha_group(&self, g: usize) -> Option<&str> {
        if self.pve9() {
            return None;
        }
        let sid = self.sid(g);
        self.scenario
            .ha_rules
            .iter()
            .find(|r| r.kind == "node-affinity" && r.resource_ids().any(|s| s == sid))
            .map(|r| r.rule.as_str())
    }

    /// Pool name → member guests.
    pub fn pools(&self) -> BTreeMap<String, Vec<usize>> {
        let mut m: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, g) in self.guests.iter().enumerate() {
            if let Some(p) = &g.spec.pool {
                m.entry(p.clone()).or_default().push(i);
            }
        }
        m
    }

    /// Config value of `memory` in MiB.
    pub fn memory_mib(&self, g: usize) -> u64 {
        mem_mib(self.guests[g].spec.memory_gb)
    }
}

/// The pvestatd tick (10 s) at or before `t`.
pub fn tick(t: f64) -> f64 {
    (t / SAMPLE_STEP as f64).floor() * SAMPLE_STEP as f64
}

fn resolve_disks(g: &GuestSpec, node: &NodeSpec) -> Vec<Disk> {
    let mut out = Vec::new();
    let specs: Vec<crate::scenario::DiskSpec> = if g.disks.is_empty() {
        let st = node.storages.first().map(|s| s.id.clone());
        vec![crate::scenario::DiskSpec {
            key: None,
            storage: st,
            path: None,
            size_gb: if g.kind == GuestKind::Qemu { 32.0 } else { 8.0 },
            mp: None,
            shared: false,
        }]
    } else {
        g.disks.clone()
    };
    let mut next_scsi = 0;
    let mut next_mp = 0;
    let mut disk_no = 0;
    let mut have_rootfs = false;
    for d in specs {
        let key = match &d.key {
            Some(k) => k.clone(),
            None => match g.kind {
                GuestKind::Qemu => {
                    let k = format!("scsi{next_scsi}");
                    next_scsi += 1;
                    k
                }
                GuestKind::Lxc if !have_rootfs && d.storage.is_some() => "rootfs".to_string(),
                GuestKind::Lxc => {
                    let k = format!("mp{next_mp}");
                    next_mp += 1;
                    k
                }
            },
        };
        if key == "rootfs" {
            have_rootfs = true;
        }
        let size = gib_bytes(d.size_gb);
        let size_str = format_size(d.size_gb);
        let (value, host_path) = match (&d.storage, &d.path) {
            (Some(s), _) => {
                let vol = match g.kind {
                    GuestKind::Qemu => format!("{s}:vm-{}-disk-{disk_no}", g.vmid),
                    GuestKind::Lxc => format!("{s}:subvol-{}-disk-{disk_no}", g.vmid),
                };
                disk_no += 1;
                let mut v = format!("{vol},size={size_str}");
                if g.kind == GuestKind::Qemu {
                    v = format!("{vol},iothread=1,size={size_str}");
                }
                if let Some(mp) = &d.mp {
                    v = format!("{vol},mp={mp},size={size_str}");
                }
                (v, false)
            }
            (None, Some(p)) => {
                let v = match g.kind {
                    GuestKind::Qemu => format!("{p},size={size_str}"),
                    GuestKind::Lxc => {
                        let mp = d.mp.clone().unwrap_or_else(|| format!("/mnt/{}", key));
                        format!("{p},mp={mp}")
                    }
                };
                (v, true)
            }
            (None, None) => continue,
        };
        let value = if d.shared {
            format!("{value},shared=1")
        } else {
            value
        };
        out.push(Disk {
            key,
            value,
            storage: d.storage.clone(),
            size,
            host_path,
            shared_flag: d.shared,
        });
    }
    out
}

fn format_size(gb: f64) -> String {
    if (gb.fract()).abs() < 1e-9 {
        format!("{}G", gb as u64)
    } else {
        format!("{}M", (gb * 1024.0).round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario() -> Scenario {
        Scenario::from_toml_str(
            r#"
[cluster]
name = "t"
seed = 5
[[nodes]]
name = "a"
cores = 16
memory_gb = 64
storages = [{ id = "ceph", type = "rbd", shared = true, total_gb = 1000 }]
[[nodes]]
name = "b"
cores = 16
memory_gb = 64
storages = [{ id = "ceph", type = "rbd", shared = true, total_gb = 1000 }]
[[guests]]
vmid = 100
kind = "qemu"
node = "a"
cores = 4
memory_gb = 8
load = { cpu = 0.5, mem = 0.5, disk_read_mb_s = 100, disk_write_mb_s = 100 }
[[guests]]
vmid = 101
kind = "lxc"
node = "a"
memory_gb = 2
[[guests]]
vmid = 102
kind = "qemu"
node = "a"
memory_gb = 16
status = "stopped"
"#,
        )
        .expect("scenario")
    }

    #[test]
    fn committed_memory_counts_running_guests_only() {
        let s = scenario();
        let sim = Sim::new(s.clone(), 1_000_000.0);
        assert_eq!(sim.committed(0), (10u64) << 30);
        assert_eq!(sim.committed(0), s.committed_mem_bytes("a"));
        assert_eq!(sim.committed(1), 0);
    }

    #[test]
    fn node_metrics_derive_from_guests() {
        let sim = Sim::new(scenario(), 1_000_000.0);
        let a = sim.node_sample_now(0, 1_000_000.0);
        let b = sim.node_sample_now(1, 1_000_000.0);
        // 200 MB/s of guest disk I/O at 0.0005 per MB/s adds about 10 points of IOWait.
        assert!(a.iowait > 0.09 && a.iowait < 0.13, "{}", a.iowait);
        assert!(b.iowait < 0.02);
        // 4 vCPUs at ~50 % on 16 threads is ~12.5 % plus the host's own ~2 %.
        assert!(a.cpu > 0.12 && a.cpu < 0.18, "{}", a.cpu);
        assert!(a.mem_used > b.mem_used + 4.0 * 1024.0 * 1024.0 * 1024.0);
    }

    #[test]
    fn counters_integrate_rates() {
        let mut sim = Sim::new(scenario(), 1_000_000.0);
        let c0 = sim.counters_at(0, 1_000_000.0);
        sim.settle(1_000_600.0);
        let c1 = sim.counters_at(0, 1_000_600.0);
        let rate = (c1.disk_read - c0.disk_read) / 600.0;
        assert!((rate / MB - 100.0).abs() < 5.0, "{rate}");
        // Integrating backwards from the new cache point gives the old value back.
        let back = sim.counters_at(0, 1_000_000.0);
        assert!((back.disk_read - c0.disk_read).abs() < 1.0);
    }

    #[test]
    fn down_intervals() {
        let mut sim = Sim::new(scenario(), 0.0);
        sim.set_node_online(1, false, 100.0, DownMode::Timeout);
        assert!(sim.node_online_at(1, 50.0));
        assert!(!sim.node_online_at(1, 150.0));
        sim.set_node_online(1, true, 200.0, DownMode::NoRoute);
        assert!(sim.node_online_at(1, 250.0));
        assert!(!sim.node_online_at(1, 199.0));
        assert_eq!(sim.nodes[1].down_mode, DownMode::Timeout);
    }
}
