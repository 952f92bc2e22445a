//! `rrddata` series for nodes and guests, computed from the load profiles so history and
//! "current" values agree. Layouts (resolution × points) follow the RRD files of PVE 8 and 9.

use serde_json::{Map, Value, json};

use crate::model::{SWAP_TOTAL, Sim};
use crate::scenario::{Flavour, GuestKind, gib_bytes};

/// The RRD timeframes PVE accepts.
pub(crate) const TIMEFRAMES: &[&str] = &["hour", "day", "week", "month", "year", "decade"];

/// `(resolution seconds, number of points)` of a timeframe; `None` if the flavour or the kind
/// of series has no such timeframe.
pub(crate) fn layout(flavour: Flavour, timeframe: &str, node: bool) -> Option<(i64, usize)> {
    match flavour {
        Flavour::Pve8 => match timeframe {
            "hour" => Some((60, 70)),
            "day" => Some((1800, 70)),
            "week" => Some((10_800, 70)),
            "month" => Some((43_200, 70)),
            "year" => Some((604_800, 70)),
            _ => None,
        },
        Flavour::Pve9 => match timeframe {
            "hour" => Some((60, 60)),
            "day" => Some((60, 1440)),
            "week" => Some((1800, 336)),
            "month" => Some((1800, 1440)),
            "year" => Some((21_600, 1440)),
            "decade" if node => Some((604_800, 570)),
            _ => None,
        },
    }
}

/// Point times (end of each bucket) and the sample offsets inside a bucket.
fn grid(now: f64, res: i64, count: usize) -> (Vec<i64>, Vec<f64>) {
    let last = (now as i64).div_euclid(res) * res;
    let times = (0..count)
        .map(|i| last - (count - 1 - i) as i64 * res)
        .collect();
    let m = (res / 10).clamp(1, 6);
    let offsets = (0..m)
        .map(|k| -(res as f64) + (k + 1) as f64 * res as f64 / m as f64)
        .collect();
    (times, offsets)
}

fn reduce(values: &[f64], max: bool) -> f64 {
    if max {
        values.iter().copied().fold(f64::MIN, f64::max)
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

const NODE_DS8: &[&str] = &[
    "cpu",
    "iowait",
    "loadavg",
    "maxcpu",
    "memtotal",
    "memused",
    "swaptotal",
    "swapused",
    "roottotal",
    "rootused",
    "netin",
    "netout",
];
const NODE_DS9_EXTRA: &[&str] = &[
    "memavailable",
    "arcsize",
    "pressurecpusome",
    "pressureiosome",
    "pressureiofull",
    "pressurememorysome",
    "pressurememoryfull",
];

/// The node series for `timeframe` (already validated), reduced with AVERAGE or MAX.
pub(crate) fn node_series(sim: &Sim, n: usize, now: f64, timeframe: &str, max: bool) -> Vec<Value> {
    let Some((res, count)) = layout(sim.flavour(), timeframe, true) else {
        return Vec::new();
    };
    let (times, offsets) = grid(now, res, count);
    let candidates = sim.guests_ever_on(n);
    let spec = &sim.nodes[n].spec;
    let pve9 = sim.pve9();
    let mut names: Vec<&str> = NODE_DS8.to_vec();
    if pve9 {
        names.extend_from_slice(NODE_DS9_EXTRA);
    }
    let mut out = Vec::with_capacity(count);
    let mut cols: Vec<Vec<f64>> = vec![Vec::with_capacity(offsets.len()); names.len()];
    for &t in &times {
        for c in cols.iter_mut() {
            c.clear();
        }
        for &off in &offsets {
            let ts = t as f64 + off;
            if !sim.node_online_at(n, ts) {
                continue;
            }
            let members = sim.running_on_at(n, ts, &candidates);
            let s = sim.node_sample(n, ts, &members);
            let mut vals = vec![
                s.cpu,
                s.iowait,
                s.loadavg,
                f64::from(spec.cores),
                s.mem_total,
                s.mem_used,
                SWAP_TOTAL,
                s.swap_used,
                gib_bytes(spec.rootfs_gb) as f64,
                s.root_used,
                s.net_in,
                s.net_out,
            ];
            if pve9 {
                vals.extend_from_slice(&[
                    s.mem_total - s.mem_used,
                    0.0,
                    s.psi_cpu_some,
                    s.psi_io_some,
                    s.psi_io_full,
                    s.psi_mem_some,
                    s.psi_mem_full,
                ]);
            }
            for (c, v) in cols.iter_mut().zip(vals) {
                c.push(v);
            }
        }
        let mut point = Map::new();
        point.insert("time".into(), json!(t));
        if !cols[0].is_empty() {
            for (name, c) in names.iter().zip(&cols) {
                point.insert((*name).into(), json!(reduce(c, max)));
            }
        }
        out.push(Value::Object(point));
    }
    out
}

/// The guest series for `timeframe` (already validated), reduced with AVERAGE or MAX.
pub(crate) fn guest_series(
    sim: &Sim,
    g: usize,
    now: f64,
    timeframe: &str,
    max: bool,
) -> Vec<Value> {
    let Some((res, count)) = layout(sim.flavour(), timeframe, false) else {
        return Vec::new();
    };
    let (times, offsets) = grid(now, res, count);
    let rt = &sim.guests[g];
    let pve9 = sim.pve9();
    let qemu = rt.spec.kind == GuestKind::Qemu;
    let maxcpu = f64::from(sim.guest_maxcpu(g));
    let maxmem = sim.maxmem(g) as f64;
    let maxdisk = sim.guest_maxdisk(g) as f64;
    let disk_used = if qemu { 0.0 } else { maxdisk * 0.4 };
    let mut out = Vec::with_capacity(count);
    for &t in &times {
        let mut cols: Vec<[f64; 13]> = Vec::with_capacity(offsets.len());
        let mut seen = false;
        for &off in &offsets {
            let ts = t as f64 + off;
            let node = sim.guest_node_at(g, ts);
            if !sim.node_online_at(node, ts) {
                continue;
            }
            seen = true;
            if !rt.running {
                continue;
            }
            let s = sim.guest_sample(g, ts);
            let cpu_pct = s.cpu * 100.0;
            cols.push([
                s.cpu,
                s.mem,
                s.memhost,
                s.net_in,
                s.net_out,
                s.disk_read,
                s.disk_write,
                ((cpu_pct - 70.0).max(0.0) * 0.5).min(100.0),
                ((cpu_pct - 85.0).max(0.0) * 0.3).min(100.0),
                ((s.disk_read + s.disk_write) / 1e7).min(100.0),
                ((s.disk_read + s.disk_write) / 2e7).min(100.0),
                ((s.mem / maxmem - 0.9).max(0.0) * 100.0).min(100.0),
                ((s.mem / maxmem - 0.95).max(0.0) * 50.0).min(100.0),
            ]);
        }
        let mut p = Map::new();
        p.insert("time".into(), json!(t));
        if seen {
            p.insert("maxcpu".into(), json!(maxcpu));
            p.insert("maxmem".into(), json!(maxmem));
            p.insert("maxdisk".into(), json!(maxdisk));
            p.insert("disk".into(), json!(disk_used));
        }
        if !cols.is_empty() {
            let col = |i: usize| reduce(&cols.iter().map(|c| c[i]).collect::<Vec<_>>(), max);
            p.insert("cpu".into(), json!(col(0)));
            p.insert("mem".into(), json!(col(1)));
            p.insert("netin".into(), json!(col(3)));
            p.insert("netout".into(), json!(col(4)));
            p.insert("diskread".into(), json!(col(5)));
            p.insert("diskwrite".into(), json!(col(6)));
            if pve9 {
                if qemu {
                    p.insert("memhost".into(), json!(col(2)));
                }
                p.insert("pressurecpusome".into(), json!(col(7)));
                p.insert("pressurecpufull".into(), json!(col(8)));
                p.insert("pressureiosome".into(), json!(col(9)));
                p.insert("pressureiofull".into(), json!(col(10)));
                p.insert("pressurememorysome".into(), json!(col(11)));
                p.insert("pressurememoryfull".into(), json!(col(12)));
            }
        }
        out.push(Value::Object(p));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    fn sim(flavour: &str) -> Sim {
        let s = Scenario::from_toml_str(&format!(
            r#"
[cluster]
name = "t"
flavour = "{flavour}"
[[nodes]]
name = "a"
cores = 8
memory_gb = 32
storages = [{{ id = "local", total_gb = 100 }}]
load = {{ cpu = 0.0, iowait = 0.0, noise = 0.0 }}
[[guests]]
vmid = 100
kind = "qemu"
node = "a"
cores = 8
memory_gb = 4
load = {{ shape = "step", cpu = 0.1, noise = 0.0, amplitude = 3.0, step_at_hours = -6.0, disk_read_mb_s = 0, disk_write_mb_s = 0 }}
"#
        ))
        .expect("scenario");
        Sim::new(s, 1_764_230_400.0)
    }

    #[test]
    fn layouts_by_flavour() {
        assert_eq!(layout(Flavour::Pve8, "day", true), Some((1800, 70)));
        assert_eq!(layout(Flavour::Pve9, "day", true), Some((60, 1440)));
        assert_eq!(layout(Flavour::Pve9, "decade", false), None);
        let s = sim("pve9");
        let v = node_series(&s, 0, 1_764_230_400.0, "hour", false);
        assert_eq!(v.len(), 60);
        let t: Vec<i64> = v.iter().map(|p| p["time"].as_i64().unwrap_or(0)).collect();
        assert!(t.windows(2).all(|w| w[1] - w[0] == 60));
        assert!(v[0].get("pressureiosome").is_some());
        let s8 = sim("pve8");
        let v8 = node_series(&s8, 0, 1_764_230_400.0, "hour", false);
        assert_eq!(v8.len(), 70);
        assert!(v8[0].get("memavailable").is_none());
    }

    #[test]
    fn day_average_reflects_the_profile() {
        // CPU 10 % for 18 h then 40 % for the last 6 h: the 24 h average is 17.5 %.
        let s = sim("pve9");
        let v = node_series(&s, 0, 1_764_230_400.0, "day", false);
        let avg = v.iter().filter_map(|p| p["cpu"].as_f64()).sum::<f64>() / v.len() as f64;
        assert!((avg - 0.175).abs() < 0.002, "{avg}");
        let last = v.last().and_then(|p| p["cpu"].as_f64()).unwrap_or(0.0);
        assert!((last - 0.4).abs() < 1e-9, "{last}");
        let g = guest_series(&s, 0, 1_764_230_400.0, "day", true);
        assert_eq!(g.len(), 1440);
        assert!(g[0].get("memhost").is_some());
    }

    #[test]
    fn down_node_points_have_only_time() {
        let mut s = sim("pve9");
        s.set_node_online(
            0,
            false,
            1_764_230_400.0 - 300.0,
            crate::model::DownMode::NoRoute,
        );
        let v = node_series(&s, 0, 1_764_230_400.0, "hour", false);
        let last = v
            .last()
            .and_then(|p| p.as_object())
            .map(|o| o.len())
            .unwrap_or(0);
        assert_eq!(last, 1);
        assert!(v[0].get("cpu").is_some());
    }
}
