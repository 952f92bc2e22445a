//! The shipped demo scenario (`deploy/demo-scenario.toml`) yields the numbers it was designed
//! for, read back through the API the collector uses (including the RRD history).

use std::net::SocketAddr;

use pvesim::{RunningSim, Scenario, Simulator};
use serde_json::Value;

const DEMO: &str = include_str!("../../../../deploy/demo-scenario.toml");
const TOKEN: &str = "PVEAPIToken=proxbalance@pve!collector=5f0c8a8e-2b1d-4c3e-9a77-0d1e2f3a4b5c";

async fn start() -> (RunningSim, reqwest::Client) {
    let mut s = Scenario::from_toml_str(DEMO).expect("demo scenario parses");
    s.cluster.start_time = Some(1_764_230_400);
    s.cluster.acceleration = 0.0;
    let sim = Simulator::start(s, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("start");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(sim.ca_pem().as_bytes()).expect("ca");
    let c = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .expect("client");
    (sim, c)
}

async fn data(c: &reqwest::Client, sim: &RunningSim, path: &str) -> Value {
    let r = c
        .get(format!("{}{path}", sim.api_url()))
        .header("Authorization", TOKEN)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200, "{path}");
    let v: Value = r.json().await.expect("json");
    v["data"].clone()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn cv(v: &[f64]) -> f64 {
    let m = mean(v);
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64;
    var.sqrt() / m.abs()
}

/// The reference stability mapping (docs/engine.md §3).
fn stability(cv: f64) -> f64 {
    let s = if cv <= 0.10 {
        (100 - (100.0 * cv) as i64).max(90)
    } else if cv <= 0.20 {
        (90 - (200.0 * (cv - 0.1)) as i64).max(70)
    } else if cv <= 0.35 {
        (70 - (200.0 * (cv - 0.2)) as i64).max(40)
    } else {
        (40 - (100.0 * (cv - 0.35)) as i64).max(5)
    };
    s as f64
}

/// Hourly series (percent) of one RRD field from the week timeframe (two 30-minute points per hour).
fn hourly(week: &Value, field: &str) -> Vec<f64> {
    let pts: Vec<f64> = week
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p[field].as_f64())
        .collect();
    pts.chunks(2).map(|c| mean(c) * 100.0).collect()
}

#[tokio::test]
async fn demo_shows_the_four_behaviours() {
    let (sim, c) = start().await;
    let resources = data(&c, &sim, "/cluster/resources").await;
    let rows = resources.as_array().cloned().unwrap_or_default();
    let node = |n: &str| {
        rows.iter()
            .find(|r| r["type"] == "node" && r["node"] == n)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let committed = |n: &str| -> f64 {
        rows.iter()
            .filter(|r| {
                (r["type"] == "qemu" || r["type"] == "lxc")
                    && r["node"] == n
                    && r["status"] == "running"
            })
            .map(|r| r["maxmem"].as_f64().unwrap_or(0.0))
            .sum()
    };
    let ratio = |n: &str| committed(n) / node(n)["maxmem"].as_f64().unwrap_or(1.0);
    let used = |n: &str| {
        node(n)["mem"].as_f64().unwrap_or(0.0) / node(n)["maxmem"].as_f64().unwrap_or(1.0)
    };

    // (1) ~90 % committed, ~60 % used.
    assert!(
        (ratio("pve1") - 0.90).abs() < 0.01,
        "pve1 committed {}",
        ratio("pve1")
    );
    assert!(
        (used("pve1") - 0.60).abs() < 0.04,
        "pve1 used {}",
        used("pve1")
    );
    eprintln!(
        "pve1 committed {:.3} used {:.3}; pve2 ratio {:.3}; pve3 ratio {:.3}",
        ratio("pve1"),
        used("pve1"),
        ratio("pve2"),
        ratio("pve3")
    );
    // (2) overcommit ~1.3 and ~1.1.
    assert!(
        (ratio("pve2") - 1.30).abs() < 0.01,
        "pve2 {}",
        ratio("pve2")
    );
    assert!(
        ratio("pve3") > 1.05 && ratio("pve3") < 1.15,
        "pve3 {}",
        ratio("pve3")
    );
    for n in sim.node_names() {
        assert_eq!(
            committed(&n) as u64,
            sim.committed_mem_bytes(&n).expect("node"),
            "{n}"
        );
    }

    // (3) volatile vs steady, from a week of hourly history.
    let mut overall = std::collections::BTreeMap::new();
    for n in ["pve4", "pve5"] {
        let week = data(&c, &sim, &format!("/nodes/{n}/rrddata?timeframe=week")).await;
        let cpu = hourly(&week, "cpu");
        assert_eq!(cpu.len(), 168);
        let mem: Vec<f64> = week
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some(p["memused"].as_f64()? / p["memtotal"].as_f64()? * 100.0))
            .collect();
        let iow = hourly(&week, "iowait");
        let o = (0.55 * stability(cv(&cpu))
            + 0.15 * stability(cv(&mem))
            + 0.30 * stability(cv(&iow))) as i64;
        overall.insert(n, (cv(&cpu), o));
    }
    eprintln!("stability (cpu cv, overall): {overall:?}");
    assert!(
        overall["pve4"].0 > 0.35 && overall["pve4"].1 < 40,
        "pve4 {:?}",
        overall["pve4"]
    );
    assert!(
        overall["pve5"].0 < 0.10 && overall["pve5"].1 >= 80,
        "pve5 {:?}",
        overall["pve5"]
    );

    // (4) IOWait now and over the day.
    for (n, lo, hi) in [("pve6", 0.21, 1.0), ("pve7", 0.06, 0.10)] {
        let day = data(&c, &sim, &format!("/nodes/{n}/rrddata?timeframe=day")).await;
        let io: Vec<f64> = day
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["iowait"].as_f64())
            .collect();
        assert_eq!(io.len(), 1440);
        let now = io.last().copied().unwrap_or(0.0);
        assert!((now - 0.35).abs() < 0.03, "{n} iowait now {now}");
        let avg = mean(&io);
        eprintln!("{n}: iowait now {now:.3}, 24 h {avg:.3}");
        assert!(avg > lo && avg < hi, "{n} 24 h iowait {avg}");
    }
    // The metrics export agrees on the current IOWait.
    let m = data(&c, &sim, "/cluster/metrics/export?node-list=pve6").await;
    let iow = m["data"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["metric"] == "cpu_iowait"))
        .and_then(|r| r["value"].as_f64())
        .unwrap_or(0.0);
    assert!((iow - 0.35).abs() < 0.03, "{iow}");
    sim.shutdown().await;
}
