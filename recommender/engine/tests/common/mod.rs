//! Builders for hand-written cluster views.
#![allow(dead_code)]

use proxbalance_engine::Cluster;
use serde_json::{Value, json};

pub const NOW: i64 = 1_764_230_400;

/// An online node without history.
pub fn node(name: &str, cores: u32, mem_gb: f64, cpu: f64, mem: f64, iowait: f64) -> Value {
    json!({
        "name": name, "status": "online", "cpu_cores": cores, "total_mem_gb": mem_gb,
        "current": {"cpu": cpu, "mem": mem, "iowait": iowait},
        "storage": [{"id": "local-lvm", "active": true, "shared": false, "usage_pct": 0.0}]
    })
}

/// Adds 24 h and week figures equal to the current ones, with the given 24 h IOWait.
pub fn steady_history(mut n: Value, iowait_24h: f64) -> Value {
    let c = n["current"].clone();
    n["avg_24h"] = json!({"cpu": c["cpu"], "mem": c["mem"], "iowait": iowait_24h, "load": 0.0});
    n["week"] = json!({"avg_cpu": c["cpu"], "max_cpu": c["cpu"], "avg_mem": c["mem"],
                       "max_mem": c["mem"], "avg_iowait": iowait_24h});
    n
}

/// ProxBalance's own test set-up: 24 h and week averages equal to the current values, week maxima
/// 10 points (CPU) and 5 points (memory) above.
pub fn reference_history(mut n: Value) -> Value {
    let c = n["current"].clone();
    let (cpu, mem) = (
        c["cpu"].as_f64().unwrap_or(0.0),
        c["mem"].as_f64().unwrap_or(0.0),
    );
    n["avg_24h"] = json!({"cpu": cpu, "mem": mem, "iowait": c["iowait"], "load": 0.0});
    n["week"] = json!({"avg_cpu": cpu, "max_cpu": cpu + 10.0, "avg_mem": mem,
                       "max_mem": mem + 5.0, "avg_iowait": c["iowait"]});
    n
}

/// Hourly `(cpu, iowait)` samples over the last `samples.len()` hours.
pub fn with_history(mut n: Value, samples: &[(f64, f64)]) -> Value {
    let len = samples.len() as i64;
    n["history"] = samples
        .iter()
        .enumerate()
        .map(|(i, &(c, io))| json!({"t": NOW - (len - i as i64) * 3600, "cpu": c, "mem": 50.0, "iowait": io}))
        .collect();
    n
}

/// A running qemu guest.
pub fn guest(
    vmid: u32,
    node: &str,
    cpu_percent: f64,
    cores: u32,
    used_gb: f64,
    max_gb: f64,
) -> Value {
    json!({
        "vmid": vmid, "name": format!("g{vmid}"), "type": "qemu", "node": node, "status": "running",
        "cpu_percent": cpu_percent, "cpu_cores": cores, "mem_used_gb": used_gb, "mem_max_gb": max_gb,
        "storages": ["local-lvm"]
    })
}

pub fn with(mut v: Value, key: &str, value: Value) -> Value {
    v[key] = value;
    v
}

pub fn view_json(nodes: Vec<Value>, guests: Vec<Value>) -> Value {
    json!({
        "format": "proxbalance.cluster-view.v1", "cluster": "test", "now": NOW,
        "thresholds": {"cpu": 60, "mem": 70, "iowait": 30},
        "nodes": nodes, "guests": guests
    })
}

pub fn cluster(v: &Value) -> Cluster {
    Cluster::from_json(&v.to_string()).unwrap_or_else(|e| panic!("invalid test view: {e}"))
}

/// The view planned by the reference generator (`planner = "reference"`).
pub fn reference(v: &Value) -> Cluster {
    let mut v = v.clone();
    v["penalty_config"]["planner"] = json!("reference");
    cluster(&v)
}

// --- the seed's scenarios (docs/engine.md), one view each for both planners' tests

/// Seed scenario 1: `full` is at 90 % committed and 60 % used; `src` is hot; `roomy` has room.
/// `extra` guests join `src`'s.
pub fn seed_full_node_view(extra: Vec<Value>) -> Value {
    let mut guests = vec![guest(999, "src", 50.0, 4, 6.0, 8.0)];
    guests.extend(extra);
    guests.extend([
        guest(1, "full", 5.0, 2, 19.2, 28.8),
        guest(2, "full", 5.0, 2, 19.2, 28.8),
        guest(3, "roomy", 5.0, 2, 20.0, 20.0),
    ]);
    view_json(
        vec![
            node("src", 16, 64.0, 88.0, 80.0, 2.0),
            node("full", 16, 64.0, 20.0, 60.0, 2.0),
            node("roomy", 16, 128.0, 30.0, 40.0, 2.0),
        ],
        guests,
    )
}

/// Seed scenario 4: `hot-io` has sustained IOWait (35 now, 25 over 24 h) from guests 11–13
/// (150, 100, 50 MiB/s; guest 14 does no disk I/O); `spike-io` has the same IOWait now but only
/// 8 over 24 h; `calm-a` and `calm-b` are idle.
pub fn seed_iowait_view() -> Value {
    let mib = 1_048_576.0;
    let io = |g: Value, mbps: f64| with(g, "disk_read_bps", json!(mbps * mib));
    view_json(
        vec![
            steady_history(node("hot-io", 32, 256.0, 30.0, 40.0, 35.0), 25.0),
            steady_history(node("spike-io", 32, 256.0, 30.0, 40.0, 35.0), 8.0),
            steady_history(node("calm-a", 32, 256.0, 20.0, 30.0, 1.0), 1.0),
            steady_history(node("calm-b", 32, 256.0, 22.0, 30.0, 1.0), 1.0),
        ],
        vec![
            io(guest(11, "hot-io", 10.0, 2, 4.0, 8.0), 150.0),
            io(guest(12, "hot-io", 10.0, 2, 4.0, 8.0), 100.0),
            io(guest(13, "hot-io", 10.0, 2, 4.0, 8.0), 50.0),
            guest(14, "hot-io", 10.0, 2, 4.0, 8.0),
            io(guest(21, "spike-io", 10.0, 2, 4.0, 8.0), 150.0),
            io(guest(22, "spike-io", 10.0, 2, 4.0, 8.0), 100.0),
        ],
    )
}
