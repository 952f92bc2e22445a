//! What a balancer reads to respect placement: HA rules (PVE 9) and groups (PVE 8), HA
//! resources, `/cluster/options` `crs` and pools, over real HTTPS.

use std::net::SocketAddr;

use pvesim::{RunningSim, Scenario, Simulator};
use serde_json::{Value, json};

use crate::https::{TOKEN, client};

/// Three nodes; guests 100, 101 (VMs) and 200 (a container) HA-managed; 300 and 301 in pool
/// `db`; `rules` appended as given.
fn scenario(cluster: &str, rules: &str) -> Scenario {
    let mut text = format!(
        r#"
{cluster}
seed = 3
start_time = 1764230400
acceleration = 0

[[tokens]]
id = "collector@pve!lb"
secret = "0b9d3f4e-1111-2222-3333-444455556666"
"#
    );
    for n in ["pve1", "pve2", "pve3"] {
        text.push_str(&format!(
            "[[nodes]]\nname = \"{n}\"\ncores = 8\nmemory_gb = 64\nstorages = [{{ id = \"ceph\", type = \"rbd\", shared = true, total_gb = 1000 }}]\n"
        ));
    }
    for (vmid, kind, node, extra) in [
        (100, "qemu", "pve1", "ha = \"started\""),
        (101, "qemu", "pve2", "ha = \"started\""),
        (200, "lxc", "pve3", "ha = \"started\""),
        (300, "qemu", "pve1", "pool = \"db\""),
        (301, "qemu", "pve1", "pool = \"db\""),
    ] {
        text.push_str(&format!(
            "[[guests]]\nvmid = {vmid}\nkind = \"{kind}\"\nnode = \"{node}\"\nmemory_gb = 4\n{extra}\n"
        ));
    }
    text.push_str(rules);
    Scenario::from_toml_str(&text).expect("scenario")
}

async fn start(scenario: Scenario) -> (RunningSim, reqwest::Client) {
    let sim = Simulator::start(scenario, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("start");
    let c = client(&sim.ca_pem());
    (sim, c)
}

async fn get(c: &reqwest::Client, sim: &RunningSim, path: &str) -> (u16, Value) {
    let r = c
        .get(format!("{}{path}", sim.api_url()))
        .header("Authorization", TOKEN)
        .send()
        .await
        .expect("send");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The `data` of rows without their `digest` (a hash, checked for presence only).
fn rows(v: &Value) -> Vec<Value> {
    v["data"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut r| {
            let digest = r.as_object_mut().and_then(|o| o.remove("digest"));
            assert!(digest.is_some_and(|d| d.is_string()), "{r}");
            r
        })
        .collect()
}

const RULES: &str = r#"
[[ha_rules]]
rule = "prefer-pve1"
type = "node-affinity"
resources = "vm:100,ct:200"
nodes = "pve1:2,pve2:1"
strict = true

[[ha_rules]]
rule = "apart"
type = "resource-affinity"
resources = "vm:100,vm:101"
affinity = "negative"

[[ha_rules]]
rule = "off"
type = "resource-affinity"
resources = "vm:101,ct:200"
affinity = "positive"
disable = true
"#;

#[tokio::test]
async fn pve9_serves_rules_refuses_groups_and_reports_its_own_balancer() {
    let (sim, c) = start(scenario(
        "[cluster]\nname = \"p9\"\nversion = \"9.2.0\"\ncrs_ha = \"dynamic\"\ncrs_auto_rebalance = true",
        RULES,
    ))
    .await;
    let (st, v) = get(&c, &sim, "/cluster/ha/rules").await;
    assert_eq!(st, 200);
    assert_eq!(
        rows(&v),
        vec![
            json!({"rule": "prefer-pve1", "type": "node-affinity", "resources": "vm:100,ct:200",
                "nodes": "pve1:2,pve2:1", "strict": 1, "disable": 0, "order": 1}),
            json!({"rule": "apart", "type": "resource-affinity", "resources": "vm:100,vm:101",
                "affinity": "negative", "disable": 0, "order": 2}),
            json!({"rule": "off", "type": "resource-affinity", "resources": "vm:101,ct:200",
                "affinity": "positive", "disable": 1, "order": 3}),
        ]
    );
    let (_, v) = get(&c, &sim, "/cluster/ha/rules?type=node-affinity").await;
    assert_eq!(rows(&v).len(), 1);
    let (_, v) = get(&c, &sim, "/cluster/ha/rules?resource=vm:101").await;
    let names: Vec<&str> = v["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["rule"].as_str())
        .collect();
    assert_eq!(names, ["apart", "off"]);

    let (st, v) = get(&c, &sim, "/cluster/ha/groups").await;
    assert_eq!(st, 500);
    assert_eq!(
        v,
        json!({"data": null, "message": "cannot index groups: ha groups have been migrated to rules\n"})
    );
    // HA resources name no group once groups are rules.
    let (_, v) = get(&c, &sim, "/cluster/ha/resources").await;
    assert!(rows(&v).iter().all(|r| r.get("group").is_none()), "{v}");
    let (_, v) = get(&c, &sim, "/cluster/options").await;
    assert_eq!(
        v["data"]["crs"],
        json!({"ha": "dynamic", "ha-rebalance-on-start": 0, "ha-auto-rebalance": 1})
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn pve8_serves_groups_named_by_its_resources_and_no_rules() {
    let rules = r#"
[[ha_rules]]
rule = "prefer-pve1"
type = "node-affinity"
resources = "vm:100,ct:200"
nodes = "pve1:2,pve2:1"
nofailback = true

[[ha_rules]]
rule = "only-pve2"
type = "node-affinity"
resources = "vm:101"
nodes = "pve2"
strict = true
"#;
    let (sim, c) = start(scenario(
        "[cluster]\nname = \"p8\"\nflavour = \"pve8\"\ncrs_ha = \"static\"",
        rules,
    ))
    .await;
    let (st, _) = get(&c, &sim, "/cluster/ha/rules").await;
    assert_eq!(st, 501);
    let (st, v) = get(&c, &sim, "/cluster/ha/groups").await;
    assert_eq!(st, 200);
    assert_eq!(
        rows(&v),
        vec![
            json!({"group": "prefer-pve1", "type": "group", "nodes": "pve1:2,pve2:1",
                "restricted": 0, "nofailback": 1}),
            json!({"group": "only-pve2", "type": "group", "nodes": "pve2",
                "restricted": 1, "nofailback": 0}),
        ]
    );
    let (_, v) = get(&c, &sim, "/cluster/ha/resources").await;
    assert_eq!(
        rows(&v),
        vec![
            json!({"sid": "vm:100", "type": "vm", "state": "started", "group": "prefer-pve1"}),
            json!({"sid": "vm:101", "type": "vm", "state": "started", "group": "only-pve2"}),
            json!({"sid": "ct:200", "type": "ct", "state": "started", "group": "prefer-pve1"}),
        ]
    );
    let (_, v) = get(&c, &sim, "/nodes/pve2/qemu/101/status/current").await;
    assert_eq!(
        v["data"]["ha"],
        json!({"managed": 1, "state": "started", "group": "only-pve2"})
    );
    // PVE 8 has no automatic rebalancing: the key is absent.
    let (_, v) = get(&c, &sim, "/cluster/options").await;
    assert_eq!(
        v["data"]["crs"],
        json!({"ha": "static", "ha-rebalance-on-start": 0})
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn pools_list_their_members_and_guests_name_their_pool() {
    let (sim, c) = start(scenario("[cluster]\nname = \"p\"", "")).await;
    let (_, v) = get(&c, &sim, "/pools").await;
    assert_eq!(v["data"], json!([{"poolid": "db"}]));
    for path in ["/pools?poolid=db", "/pools/db"] {
        let (st, v) = get(&c, &sim, path).await;
        assert_eq!(st, 200, "{path}");
        let data = if v["data"].is_array() {
            v["data"][0].clone()
        } else {
            v["data"].clone()
        };
        let members: Vec<(&str, u64)> = data["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| Some((m["node"].as_str()?, m["vmid"].as_u64()?)))
            .collect();
        assert_eq!(members, [("pve1", 300), ("pve1", 301)], "{path}");
    }
    let (st, v) = get(&c, &sim, "/pools/nope").await;
    assert_eq!(st, 500);
    assert_eq!(v["message"], "pool 'nope' does not exist\n");
    // `/cluster/resources` names every guest's pool and lists the pool itself.
    let (_, v) = get(&c, &sim, "/cluster/resources").await;
    let pools: Vec<(String, Value)> = v["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["type"] != "storage" && r["type"] != "node")
        .map(|r| (r["id"].as_str().unwrap_or("").to_owned(), r["pool"].clone()))
        .collect();
    assert_eq!(
        pools,
        [
            ("qemu/100".to_owned(), Value::Null),
            ("qemu/101".to_owned(), Value::Null),
            ("lxc/200".to_owned(), Value::Null),
            ("qemu/300".to_owned(), json!("db")),
            ("qemu/301".to_owned(), json!("db")),
            ("/pool/db".to_owned(), json!("db")),
        ]
    );
    sim.shutdown().await;
}

#[test]
fn rules_pve_would_refuse_are_refused_with_the_field() {
    let err = |cluster: &str, rules: &str| {
        let text = format!(
            "{cluster}\n[[tokens]]\nid = \"a@pve!x\"\nsecret = \"s\"\n\
             [[nodes]]\nname = \"pve1\"\ncores = 8\nmemory_gb = 64\nstorages = [{{ id = \"l\", total_gb = 10 }}]\n\
             [[nodes]]\nname = \"pve2\"\ncores = 8\nmemory_gb = 64\nstorages = [{{ id = \"l\", total_gb = 10 }}]\n\
             [[guests]]\nvmid = 100\nkind = \"qemu\"\nnode = \"pve1\"\nmemory_gb = 1\nha = \"started\"\n\
             [[guests]]\nvmid = 101\nkind = \"qemu\"\nnode = \"pve1\"\nmemory_gb = 1\n{rules}"
        );
        Scenario::from_toml_str(&text)
            .expect_err("must be refused")
            .to_string()
    };
    let pve9 = "[cluster]\nname = \"t\"";
    let pve8 = "[cluster]\nname = \"t\"\nflavour = \"pve8\"";
    let node = |res: &str, nodes: &str| {
        format!(
            "[[ha_rules]]\nrule = \"r\"\ntype = \"node-affinity\"\nresources = \"{res}\"\nnodes = \"{nodes}\"\n"
        )
    };
    assert_eq!(
        err(pve9, &node("vm:101", "pve1")),
        "invalid scenario: ha_rules[0].resources: 'vm:101' is not HA-managed (give the guest `ha`)"
    );
    assert_eq!(
        err(pve9, &node("ct:100", "pve1")),
        "invalid scenario: ha_rules[0].resources: unknown HA resource 'ct:100'"
    );
    assert_eq!(
        err(pve9, &node("vm:100", "pve1,pve7")),
        "invalid scenario: ha_rules[0].nodes: unknown node 'pve7'"
    );
    assert_eq!(
        err(pve9, &node("vm:100", "pve1:high")),
        "invalid scenario: ha_rules[0].nodes: 'pve1:high': the priority must be 0–1000"
    );
    assert_eq!(
        err(
            pve9,
            "[[ha_rules]]\nrule = \"r\"\ntype = \"resource-affinity\"\nresources = \"vm:100\"\n"
        ),
        "invalid scenario: ha_rules[0].affinity: must be positive or negative"
    );
    assert_eq!(
        err(
            pve8,
            "[[ha_rules]]\nrule = \"r\"\ntype = \"resource-affinity\"\nresources = \"vm:100\"\naffinity = \"negative\"\n"
        ),
        "invalid scenario: ha_rules[0].type: PVE 8 has no resource-affinity rules (HA groups only)"
    );
    assert_eq!(
        err(
            pve8,
            &format!(
                "{}{}",
                node("vm:100", "pve1"),
                node("vm:100", "pve2").replace("\"r\"", "\"s\"")
            )
        ),
        "invalid scenario: ha_rules[1].resources: 'vm:100' is already in group 'r' (a PVE 8 HA resource has one group)"
    );
    assert_eq!(
        err(pve8, &format!("{}disable = true\n", node("vm:100", "pve1"))),
        "invalid scenario: ha_rules[0].disable: PVE 8 HA groups cannot be disabled"
    );
    assert_eq!(
        err("[cluster]\nname = \"t\"\ncrs_ha = \"dynamic\"", ""),
        "invalid scenario: cluster.crs_ha: dynamic needs PVE 9.2 or later (version 9.1.1)"
    );
    assert_eq!(
        err(
            "[cluster]\nname = \"t\"\nflavour = \"pve8\"\ncrs_auto_rebalance = true",
            ""
        ),
        "invalid scenario: cluster.crs_auto_rebalance: needs PVE 9.2 or later (version 8.2.4)"
    );
}
