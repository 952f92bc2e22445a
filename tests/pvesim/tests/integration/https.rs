//! The simulator over real HTTPS with a reqwest client pinned to its CA.

use std::net::SocketAddr;

use pvesim::{DownMode, Fault, RunningSim, Scenario, Simulator};
use serde_json::Value;

pub(crate) const TOKEN: &str = "PVEAPIToken=collector@pve!lb=0b9d3f4e-1111-2222-3333-444455556666";

fn scenario(flavour: &str) -> Scenario {
    Scenario::from_toml_str(&format!(
        r#"
[cluster]
name = "itest"
flavour = "{flavour}"
seed = 3
start_time = 1764230400
acceleration = 0

[[tokens]]
id = "collector@pve!lb"
secret = "0b9d3f4e-1111-2222-3333-444455556666"

[[tokens]]
id = "audit@pve!ro"
secret = "ro"
privileges = ["VM.Audit"]

[[nodes]]
name = "pve1"
cores = 16
memory_gb = 64
storages = [{{ id = "ceph-vm", type = "rbd", shared = true, total_gb = 4000, used_gb = 1000 }},
            {{ id = "local-lvm", type = "lvmthin", total_gb = 500 }}]
[[nodes]]
name = "pve2"
cores = 16
memory_gb = 64
storages = [{{ id = "ceph-vm", type = "rbd", shared = true, total_gb = 4000, used_gb = 1000 }},
            {{ id = "local-lvm", type = "lvmthin", total_gb = 500 }}]
[[nodes]]
name = "pve3"
cores = 8
memory_gb = 32
storages = [{{ id = "ceph-vm", type = "rbd", shared = true, total_gb = 4000, used_gb = 1000 }}]

[[guests]]
vmid = 100
kind = "qemu"
name = "web1"
node = "pve1"
cores = 4
memory_gb = 8
balloon_min_gb = 4
tags = ["prod", "web"]
disks = [{{ storage = "ceph-vm", size_gb = 32 }}]
load = {{ shape = "io_heavy", cpu = 0.3, mem = 0.6 }}

[[guests]]
vmid = 101
kind = "lxc"
node = "pve1"
memory_gb = 2
disks = [{{ storage = "local-lvm", size_gb = 8 }}, {{ path = "/srv/data", mp = "/data" }}]

[[guests]]
vmid = 102
kind = "qemu"
node = "pve3"
memory_gb = 16
status = "stopped"
"#
    ))
    .expect("scenario")
}

/// A client trusting the CA of `ca_pem` only.
pub(crate) fn client(ca_pem: &str) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("ca");
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .expect("client")
}

async fn start(flavour: &str) -> (RunningSim, reqwest::Client) {
    let sim = Simulator::start(scenario(flavour), SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("start");
    let c = client(&sim.ca_pem());
    (sim, c)
}

async fn get(c: &reqwest::Client, sim: &RunningSim, path: &str) -> (u16, String, Value) {
    let r = c
        .get(format!("{}{path}", sim.api_url()))
        .header("Authorization", TOKEN)
        .send()
        .await
        .expect("send");
    let status = r.status();
    let reason = status.canonical_reason().unwrap_or("").to_string();
    let text = r.text().await.unwrap_or_default();
    (
        status.as_u16(),
        reason,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

async fn post(
    c: &reqwest::Client,
    sim: &RunningSim,
    path: &str,
    form: &[(&str, &str)],
) -> (u16, Value) {
    let r = c
        .post(format!("{}{path}", sim.api_url()))
        .header("Authorization", TOKEN)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(
            form.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&"),
        )
        .send()
        .await
        .expect("send");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn token_auth_and_envelope() {
    let (sim, c) = start("pve9").await;
    let f = sim.fingerprint_sha256();
    assert_eq!(f.len(), 95);
    assert!(
        f.chars()
            .all(|ch| ch == ':' || ch.is_ascii_hexdigit() && !ch.is_ascii_lowercase())
    );

    let (st, _, v) = get(&c, &sim, "/version").await;
    assert_eq!(st, 200);
    assert_eq!(v["data"]["version"], "9.1.1");
    assert_eq!(v["data"]["release"], "9.1");

    let url = format!("{}/version", sim.api_url());
    let r = c.get(&url).send().await.expect("send");
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.text().await.unwrap_or_default().is_empty());
    let r = c
        .get(&url)
        .header("Authorization", "PVEAPIToken=collector@pve!lb=wrong")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401);
    // The space form and URL escaping are accepted like PVE does.
    let r = c
        .get(&url)
        .header(
            "Authorization",
            "PVEAPIToken collector%40pve%21lb=0b9d3f4e-1111-2222-3333-444455556666",
        )
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    // A token without Sys.Audit gets 403 with PVE's message.
    let r = c
        .get(format!("{}/cluster/status", sim.api_url()))
        .header("Authorization", "PVEAPIToken=audit@pve!ro=ro")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 403);
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(v["message"], "Permission check failed (/, Sys.Audit)\n");

    // Unknown path and bad parameters.
    let (st, _, _) = get(&c, &sim, "/no/such/thing").await;
    assert_eq!(st, 501);
    let (st, _, v) = get(&c, &sim, "/nodes/pve1/rrddata?timeframe=fortnight").await;
    assert_eq!(st, 400);
    assert!(
        v["errors"]["timeframe"]
            .as_str()
            .unwrap_or("")
            .contains("enumeration")
    );
    let (st, _, v) = get(&c, &sim, "/cluster/resources?bogus=1").await;
    assert_eq!(st, 400);
    assert!(v["errors"]["bogus"].is_string());

    assert_eq!(sim.route_counts().get("/cluster/resources"), Some(&1));
    assert!(sim.total_requests() >= 8);

    // A client trusting another CA is refused.
    let other = pvesim::tls::generate("x", "pve1", &[]).expect("certs");
    let stranger = client(&other.ca_pem);
    assert!(
        stranger
            .get(&url)
            .header("Authorization", TOKEN)
            .send()
            .await
            .is_err()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn resources_are_consistent_with_the_scenario() {
    let (sim, c) = start("pve9").await;
    let (st, _, v) = get(&c, &sim, "/cluster/resources").await;
    assert_eq!(st, 200);
    let rows = v["data"].as_array().cloned().unwrap_or_default();
    for node in ["pve1", "pve2", "pve3"] {
        let committed: u64 = rows
            .iter()
            .filter(|r| {
                (r["type"] == "qemu" || r["type"] == "lxc")
                    && r["node"] == node
                    && r["status"] == "running"
            })
            .map(|r| r["maxmem"].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(committed, sim.committed_mem_bytes(node).expect("node"));
        assert_eq!(committed, sim.scenario().committed_mem_bytes(node));
    }
    let web = rows
        .iter()
        .find(|r| r["vmid"] == 100)
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(web["tags"], "prod;web");
    assert_eq!(web["disk"], 0);
    assert_eq!(web["template"], 0);
    assert!(web["memhost"].as_u64().unwrap_or(0) > web["mem"].as_u64().unwrap_or(u64::MAX));
    let ct = rows
        .iter()
        .find(|r| r["vmid"] == 101)
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(ct["memhost"], 0);
    assert!(ct.get("lock").is_none());
    let stopped = rows
        .iter()
        .find(|r| r["vmid"] == 102)
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(stopped["status"], "stopped");
    assert_eq!(stopped["cpu"], 0);

    // Disk counters are cumulative: their difference over time is the profile's rate.
    let read = |v: &Value| {
        v["data"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["vmid"] == 100))
            .and_then(|r| r["diskread"].as_f64())
            .unwrap_or(0.0)
    };
    let before = read(&v);
    sim.advance(300.0);
    let (_, _, v2) = get(&c, &sim, "/cluster/resources?type=vm").await;
    let rate = (read(&v2) - before) / 300.0;
    assert!((rate / 1e6 - 80.0).abs() < 8.0, "read rate {rate}");

    // Node status quirks: loadavg strings, memory.available on PVE 9.
    let (_, _, st) = get(&c, &sim, "/nodes/pve1/status").await;
    assert!(st["data"]["loadavg"][0].is_string());
    assert!(st["data"]["memory"]["available"].is_u64());
    assert!(st["data"]["cpuinfo"]["mhz"].is_string());

    // Config: memory as a string, balloon in MiB, CT bind mount.
    let (_, _, cfg) = get(&c, &sim, "/nodes/pve1/qemu/100/config").await;
    assert_eq!(cfg["data"]["memory"], "8192");
    assert_eq!(cfg["data"]["balloon"], 4096);
    assert!(
        cfg["data"]["scsi0"]
            .as_str()
            .unwrap_or("")
            .starts_with("ceph-vm:vm-100-disk-0")
    );
    let (_, _, cfg) = get(&c, &sim, "/nodes/pve1/lxc/101/config").await;
    assert_eq!(cfg["data"]["mp0"], "/srv/data,mp=/data");
    assert_eq!(cfg["data"]["memory"], 2048);

    // RRD: hour has 60 points on PVE 9, PSI present; metrics export has the double data.
    let (_, _, rrd) = get(&c, &sim, "/nodes/pve1/rrddata?timeframe=hour&cf=AVERAGE").await;
    assert_eq!(rrd["data"].as_array().map(Vec::len), Some(60));
    assert!(rrd["data"][59]["pressureiosome"].is_number());
    let (st, _, m) = get(&c, &sim, "/cluster/metrics/export?node-list=pve1").await;
    assert_eq!(st, 200);
    let metrics = m["data"]["data"].as_array().cloned().unwrap_or_default();
    assert!(
        metrics
            .iter()
            .any(|r| r["id"] == "node/pve1" && r["metric"] == "cpu_iowait")
    );
    assert!(!metrics.iter().any(|r| r["id"] == "node/pve2"));
    sim.shutdown().await;
}

#[tokio::test]
async fn downed_node_answers_595_and_shows_offline() {
    let (sim, c) = start("pve9").await;
    sim.node_down("pve3", DownMode::NoRoute).expect("down");
    let (st, reason, _) = get(&c, &sim, "/nodes/pve3/status").await;
    assert_eq!(st, 595);
    let _ = reason;
    let (st, _, _) = get(&c, &sim, "/nodes/pve3/qemu").await;
    assert_eq!(st, 595);
    // Served from the cluster file system: still answers.
    let (st, _, _) = get(&c, &sim, "/nodes/pve3/rrddata?timeframe=hour").await;
    assert_eq!(st, 200);
    let (_, _, v) = get(&c, &sim, "/cluster/resources?type=node").await;
    let row = v["data"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["node"] == "pve3").cloned())
        .unwrap_or(Value::Null);
    assert_eq!(row["status"], "offline");
    assert!(row.get("cpu").is_none());
    let (_, _, v) = get(&c, &sim, "/cluster/status").await;
    let row = v["data"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == "pve3").cloned())
        .unwrap_or(Value::Null);
    assert_eq!(row["online"], 0);
    sim.node_down("pve2", DownMode::Timeout).expect("down");
    let (st, _, _) = get(&c, &sim, "/nodes/pve2/status").await;
    assert_eq!(st, 596);
    sim.node_up("pve3").expect("up");
    let (st, _, _) = get(&c, &sim, "/nodes/pve3/status").await;
    assert_eq!(st, 200);
    assert!(matches!(
        sim.node_down("nope", DownMode::NoRoute),
        Err(pvesim::Error::UnknownNode(_))
    ));
    sim.shutdown().await;
}

#[tokio::test]
async fn migrate_task_runs_to_completion_on_the_simulated_clock() {
    let (sim, c) = start("pve9").await;
    // Synchronous refusals.
    let (st, v) = post(
        &c,
        &sim,
        "/nodes/pve1/qemu/100/migrate",
        &[("target", "pve2")],
    )
    .await;
    assert_eq!(st, 500, "{v}");
    let (st, v) = post(
        &c,
        &sim,
        "/nodes/pve1/qemu/100/migrate",
        &[("target", "pve1"), ("online", "1")],
    )
    .await;
    assert_eq!(st, 400);
    assert_eq!(v["errors"]["target"], "target is local node.");
    let (st, _) = post(
        &c,
        &sim,
        "/nodes/pve1/qemu/100/migrate",
        &[("target", "pve9"), ("online", "1")],
    )
    .await;
    assert_eq!(st, 500);
    let (st, v) = post(
        &c,
        &sim,
        "/nodes/pve1/qemu/100/migrate",
        &[("target", "pve2"), ("online", "maybe")],
    )
    .await;
    assert_eq!(st, 400);
    assert!(v["errors"]["online"].is_string());

    let (st, v) = post(
        &c,
        &sim,
        "/nodes/pve1/qemu/100/migrate",
        &[("target", "pve2"), ("online", "1")],
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let upid = v["data"].as_str().unwrap_or("").to_string();
    assert!(
        upid.starts_with("UPID:pve1:") && upid.ends_with(":qmigrate:100:collector@pve!lb:"),
        "{upid}"
    );
    let enc: String = upid
        .replace(':', "%3A")
        .replace('@', "%40")
        .replace('!', "%21");
    let status_path = format!("/nodes/pve1/tasks/{enc}/status");

    let (_, _, s) = get(&c, &sim, &status_path).await;
    assert_eq!(s["data"]["status"], "running");
    assert_eq!(s["data"]["type"], "qmigrate");
    assert_eq!(s["data"]["id"], "100");
    assert_eq!(s["data"]["tokenid"], "lb");
    let (_, _, r) = get(&c, &sim, "/cluster/resources?type=vm").await;
    let row = r["data"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["vmid"] == 100).cloned())
        .unwrap_or(Value::Null);
    assert_eq!(row["lock"], "migrate");
    assert_eq!(row["node"], "pve1");
    // A second migration while locked is refused.
    let (st, _) = post(
        &c,
        &sim,
        "/nodes/pve1/qemu/100/migrate",
        &[("target", "pve2"), ("online", "1")],
    )
    .await;
    assert_eq!(st, 500);

    // 8 GiB at 1 GiB/s plus setup: done well within 30 simulated seconds.
    sim.advance(30.0);
    let (_, _, s) = get(&c, &sim, &status_path).await;
    assert_eq!(s["data"]["status"], "stopped");
    assert_eq!(s["data"]["exitstatus"], "OK");
    assert_eq!(sim.guest_node(100).as_deref(), Some("pve2"));
    let (_, _, r) = get(&c, &sim, "/cluster/resources?type=vm").await;
    let row = r["data"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["vmid"] == 100).cloned())
        .unwrap_or(Value::Null);
    assert_eq!(row["node"], "pve2");
    assert!(row.get("lock").is_none());
    let (st, _, v) = get(&c, &sim, "/nodes/pve1/qemu/100/status/current").await;
    assert_eq!(st, 500);
    assert_eq!(
        v["message"],
        "Configuration file 'nodes/pve1/qemu-server/100.conf' does not exist\n"
    );
    let (st, _, _) = get(&c, &sim, "/nodes/pve2/qemu/100/status/current").await;
    assert_eq!(st, 200);
    assert_eq!(sim.committed_mem_bytes("pve2").ok(), Some(8 << 30));

    // The CT with an unshared bind mount: accepted, then aborted inside the task.
    let (st, v) = post(
        &c,
        &sim,
        "/nodes/pve1/lxc/101/migrate",
        &[("target", "pve2"), ("restart", "1")],
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let upid = v["data"].as_str().unwrap_or("").to_string();
    assert!(upid.contains(":vzmigrate:101:"));
    sim.advance(10.0);
    let (_, _, t) = get(&c, &sim, "/cluster/tasks").await;
    let row = t["data"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["upid"] == upid.as_str()).cloned())
        .unwrap_or(Value::Null);
    assert_eq!(row["status"], "migration aborted");
    assert_eq!(sim.guest_node(101).as_deref(), Some("pve1"));

    let (st, _, v) = get(
        &c,
        &sim,
        "/nodes/pve1/tasks/UPID:pve1:00000001:00000001:00000001:qmigrate:1:a@pve!x:/status",
    )
    .await;
    assert_eq!(st, 400);
    assert_eq!(v["errors"]["upid"], "no such task");
    sim.shutdown().await;
}

#[tokio::test]
async fn endpoints_faults_and_pve8_flavour() {
    let (sim, c) = start("pve8").await;
    let (_, _, v) = get(&c, &sim, "/version").await;
    assert_eq!(v["data"]["version"], "8.2.4");
    let (st, _, v) = get(&c, &sim, "/cluster/metrics/export").await;
    assert_eq!(st, 501);
    assert_eq!(v, serde_json::json!({"data": null}));
    let (_, _, rrd) = get(&c, &sim, "/nodes/pve2/rrddata?timeframe=day").await;
    let points = rrd["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(points.len(), 70);
    assert!(points[69]["iowait"].is_number());
    assert!(points[69].get("pressureiosome").is_none());
    let (_, _, st) = get(&c, &sim, "/nodes/pve1/status").await;
    assert!(st["data"]["memory"].get("available").is_none());

    // A second endpoint shares the state; stopping the first refuses connections.
    let second = sim
        .add_endpoint(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("endpoint");
    sim.stop_endpoint(0).await.expect("stop");
    assert!(
        c.get(format!("{}/version", sim.api_url()))
            .header("Authorization", TOKEN)
            .send()
            .await
            .is_err()
    );
    let r = c
        .get(format!("https://{second}/api2/json/cluster/status"))
        .header("Authorization", TOKEN)
        .send()
        .await
        .expect("second");
    assert_eq!(r.status().as_u16(), 200);
    sim.start_endpoint(0).await.expect("start");
    let (st, _, _) = get(&c, &sim, "/version").await;
    assert_eq!(st, 200);

    sim.inject_fault("/cluster/resources", Fault::Status(500, "boom".into()));
    sim.inject_fault("/cluster/status", Fault::Truncated);
    let (st, _, _) = get(&c, &sim, "/cluster/resources").await;
    assert_eq!(st, 500);
    let (st, _, v) = get(&c, &sim, "/cluster/status").await;
    assert_eq!(st, 200);
    assert_eq!(v, Value::Null, "truncated body must not parse");
    sim.clear_faults();
    let (st, _, _) = get(&c, &sim, "/cluster/resources").await;
    assert_eq!(st, 200);
    sim.shutdown().await;
}
