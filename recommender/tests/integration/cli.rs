//! The `proxbalance` command line: output structure, formats and refusal of bad input.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

fn view() -> Value {
    let node = |name: &str, cpu: f64, mem: f64| {
        json!({"name": name, "status": "online", "cpu_cores": 16, "total_mem_gb": 64.0,
               "current": {"cpu": cpu, "mem": mem, "iowait": 2.0},
               "avg_24h": {"cpu": cpu, "mem": mem, "iowait": 2.0, "load": 0.0},
               "week": {"avg_cpu": cpu, "max_cpu": cpu + 10.0, "avg_mem": mem, "max_mem": mem + 5.0, "avg_iowait": 2.0}})
    };
    let guest = |vmid: u32, node: &str, cpu: f64, cores: u32, mem: f64, tags: Value| {
        json!({"vmid": vmid, "name": format!("g{vmid}"), "type": "qemu", "node": node, "status": "running",
               "cpu_percent": cpu, "cpu_cores": cores, "mem_used_gb": mem, "mem_max_gb": mem, "tags": tags})
    };
    json!({
        "format": "proxbalance.cluster-view.v1", "cluster": "lab", "now": 1_764_230_400,
        "nodes": [node("pve1", 78.0, 72.0), node("pve2", 30.0, 40.0), node("pve3", 45.0, 50.0)],
        "guests": [
            guest(101, "pve1", 80.0, 8, 16.0, json!([])),
            guest(102, "pve1", 40.0, 4, 8.0, json!(["exclude_db"])),
            guest(103, "pve1", 10.0, 2, 4.0, json!(["ignore"])),
            guest(201, "pve2", 10.0, 2, 4.0, json!(["exclude_db"])),
            guest(301, "pve3", 10.0, 2, 4.0, json!([]))
        ]
    })
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_proxbalance"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn proxbalance");
    let mut pipe = child.stdin.take().expect("stdin");
    pipe.write_all(stdin.unwrap_or("").as_bytes())
        .expect("write stdin");
    drop(pipe);
    child.wait_with_output().expect("wait")
}

fn with_file<T>(v: &Value, f: impl FnOnce(&str) -> T) -> T {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("view.json");
    std::fs::write(&path, v.to_string()).expect("write");
    f(path.to_str().expect("utf-8 path"))
}

/// `plan --input - --format json` with `extra` arguments on `v`: the set, after checking the
/// command succeeded.
fn plan_json(v: &Value, extra: &[&str]) -> Value {
    let mut args = vec!["plan", "--input", "-", "--format", "json"];
    args.extend_from_slice(extra);
    let out = run(&args, Some(&v.to_string()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn refused(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(2),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout, got {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn plan_json_has_the_documented_structure() {
    let set = plan_json(&view(), &["--set", "planner=reference"]);
    for key in [
        "recommendations",
        "skipped",
        "conflicts",
        "execution_plan",
        "summary",
        "node_scores",
    ] {
        assert!(!set[key].is_null(), "missing {key}");
    }
    let recs = set["recommendations"].as_array().expect("array");
    assert_eq!(
        recs.iter()
            .map(|r| r["vmid"].as_u64().expect("vmid"))
            .collect::<Vec<_>>(),
        [102, 101]
    );
    let r = &recs[0];
    for key in [
        "vmid",
        "name",
        "type",
        "source_node",
        "target_node",
        "source_score",
        "target_score",
        "score_improvement",
        "confidence",
        "risk",
        "mem_gb",
        "command",
        "score_details",
    ] {
        assert!(!r[key].is_null(), "recommendation lacks {key}");
    }
    assert_eq!(r["type"], "qemu");
    assert_eq!(r["reason"]["kind"], "cpu_imbalance");
    assert_eq!(r["command"], "qm migrate 102 pve3 --online");
    assert_eq!(
        r["score_details"]["target"]["penalties"]
            .as_object()
            .expect("penalties")
            .len(),
        13
    );
    let skipped: Vec<(u64, &str)> = set["skipped"]
        .as_array()
        .expect("skipped")
        .iter()
        .map(|s| {
            (
                s["vmid"].as_u64().expect("vmid"),
                s["reason"].as_str().expect("reason"),
            )
        })
        .collect();
    assert_eq!(
        skipped,
        [
            (103, "has_ignore_tag"),
            (201, "source_memory_healthy"),
            (301, "source_memory_healthy")
        ]
    );
    assert_eq!(set["summary"]["skip_reasons"]["source_memory_healthy"], 2);
    assert!(
        set["skipped"][0]["detail"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );
    assert_eq!(set["planner"], "reference");
}

#[test]
fn the_cluster_planner_explains_its_plan_in_json() {
    let set = plan_json(&view(), &[]);
    assert_eq!(set["planner"], "cluster");
    let recs = set["recommendations"].as_array().expect("array");
    let moves: Vec<(u64, &str, &str)> = recs
        .iter()
        .map(|r| {
            (
                r["vmid"].as_u64().expect("vmid"),
                r["target_node"].as_str().expect("target"),
                r["term"].as_str().expect("term"),
            )
        })
        .collect();
    // 102 takes its CPU to pve3, which 301 then leaves for pve2; 101 stays: on any other
    // node its 6.4 busy cores would only move the CPU hot spot
    assert_eq!(
        moves,
        [
            (102, "pve3", "cpu_balance"),
            (301, "pve2", "memory_balance")
        ]
    );
    let gain = &recs[0]["gain"];
    for key in [
        "node_health",
        "memory_balance",
        "cpu_balance",
        "overcommit",
        "iowait",
        "anti_affinity",
        "affinity",
        "total",
        "cost",
    ] {
        assert!(gain[key].is_number(), "gain lacks {key}");
    }
    assert_eq!(gain["cost"], 36.0);
    assert!(recs[0]["score_details"]["source"]["score"].is_number());
    let p = &set["prediction"];
    let nodes = p["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3);
    assert_eq!(nodes[0]["node"], "pve1");
    assert_eq!(nodes[0]["before"]["cpu"], 78.0);
    assert_eq!(nodes[0]["after"]["cpu"], 68.0);
    assert_eq!(nodes[0]["after"]["mem"], 59.5);
    assert!(p["objective_after"].as_f64() < p["objective_before"].as_f64());
    assert_eq!(p["imbalance_before"]["mem_spread"], 32.0);
    let skipped = &set["skipped"][0];
    assert_eq!(
        (skipped["vmid"].as_u64(), skipped["reason"].as_str()),
        (Some(101), Some("insufficient_improvement"))
    );
    assert!(
        skipped["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("every move would raise the plan objective")),
        "{skipped}"
    );
    assert_eq!(
        set["execution_plan"]["parallel_groups"],
        json!([[102], [301]])
    );
}

#[test]
fn plan_table_is_for_people() {
    let out = with_file(&view(), |p| run(&["plan", "--input", p], None));
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let header = text
        .lines()
        .find(|l| l.starts_with("VMID"))
        .expect("header row");
    let row = text
        .lines()
        .find(|l| l.starts_with("102 "))
        .expect("row for 102");
    assert_eq!(
        header.find("FROM"),
        row.find("pve1"),
        "columns align:\n{text}"
    );
    assert!(row.ends_with("balance CPU load"), "{row}");
    assert!(row.contains(" cpu_balance "), "{row}");
    assert!(text.contains("tagged ignore"));
    assert!(
        text.contains("Planner cluster: memory spread 32.0 -> 13.2 points"),
        "{text}"
    );
    let pve1 = text
        .lines()
        .find(|l| l.starts_with("pve1 "))
        .expect("node row for pve1");
    assert!(
        pve1.contains("78.0 -> 68.0") && pve1.contains("72.0 -> 59.5"),
        "{pve1}"
    );
}

#[test]
fn tuning_flags_change_the_plan() {
    let v = view();
    let set = plan_json(&v, &["--set", "min_move_gain=5000"]);
    assert_eq!(set["recommendations"].as_array().map(Vec::len), Some(0));
    assert_eq!(set["summary"]["active_preset"], "custom");

    let set = plan_json(&v, &["--set", "max_moves=1"]);
    assert_eq!(set["recommendations"].as_array().map(Vec::len), Some(1));
    assert_eq!(set["deferred"][0]["vmid"], 301);
    assert_eq!(set["deferred"][0]["reason"], "max_moves (1) reached");

    let set = plan_json(&v, &["--maintenance", "pve3", "--limit", "1"]);
    let recs = set["recommendations"].as_array().expect("recs");
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["reason"]["kind"], "maintenance_evacuation");
    assert_eq!(recs[0]["source_node"], "pve3");

    let set = plan_json(
        &v,
        &["--preset", "conservative", "--set", "thresholds.cpu=90"],
    );
    assert_eq!(set["thresholds"]["cpu"], 90.0);
    assert_eq!(set["summary"]["active_preset"], "conservative");
}

#[test]
fn options_lists_every_other_node() {
    let out = with_file(&view(), |p| {
        run(
            &["options", "--input", p, "--vmid", "102", "--format", "json"],
            None,
        )
    });
    assert!(out.status.success());
    let o: Value = serde_json::from_slice(&out.stdout).expect("json");
    let targets = o["targets"].as_array().expect("targets");
    assert_eq!(
        targets
            .iter()
            .map(|t| t["node"].as_str().expect("node"))
            .collect::<Vec<_>>(),
        ["pve2", "pve3"]
    );
    assert_eq!(targets[0]["eligible"], false);
    assert_eq!(targets[0]["gate_reason"], "anti-affinity conflict");
    assert_eq!(targets[1]["gate_reason"], Value::Null);
    for key in ["score", "penalties", "cpu_stability_factor", "components"] {
        assert!(!targets[1][key].is_null(), "target lacks {key}");
    }
    let table = with_file(&view(), |p| {
        run(&["options", "--input", p, "--vmid", "102"], None)
    });
    let text = String::from_utf8(table.stdout).expect("utf-8");
    assert!(
        text.contains("pve2  no") && text.contains("anti-affinity conflict"),
        "{text}"
    );
}

#[test]
fn config_commands() {
    let out = run(&["config", "defaults", "--format", "json"], None);
    let c: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(c["mem_overcommit_penalty"], 15.0);
    assert_eq!(c["capacity_basis"], "committed");
    let out = run(&["config", "presets", "--format", "json"], None);
    let p: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(p["aggressive"]["min_score_improvement"], 8.0);
    assert_eq!(p.as_object().map(|m| m.len()), Some(3));
    let out = run(&["config", "presets"], None);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("KEY"));
}

#[test]
fn bad_input_exits_2_with_the_field_named() {
    let mut bad = view();
    bad["guests"][3]["mem_max_gb"] = json!(-4);
    let err = with_file(&bad, |p| refused(&run(&["plan", "--input", p], None)));
    assert!(err.contains("guests[3].mem_max_gb: must be ≥ 0"), "{err}");

    let err = refused(&run(&["plan", "--input", "-"], Some("{not json")));
    assert!(err.contains("invalid cluster view -"), "{err}");

    let err = refused(&run(&["plan", "--input", "/nonexistent/view.json"], None));
    assert!(
        err.contains("reading the cluster view /nonexistent/view.json"),
        "{err}"
    );

    let err = with_file(&view(), |p| {
        refused(&run(&["plan", "--input", p, "--set", "cpu_hi=3"], None))
    });
    assert!(err.contains("unknown key \"cpu_hi\""), "{err}");

    let err = with_file(&view(), |p| {
        refused(&run(&["plan", "--input", p, "--set", "nonsense"], None))
    });
    assert!(err.contains("expected KEY=VALUE"), "{err}");

    let err = with_file(&view(), |p| {
        refused(&run(&["plan", "--input", p, "--preset", "wild"], None))
    });
    assert!(err.contains("unknown preset"), "{err}");

    let err = with_file(&view(), |p| {
        refused(&run(&["plan", "--input", p, "--maintenance", "pve9"], None))
    });
    assert!(err.contains("pve9"), "{err}");

    let err = with_file(&view(), |p| {
        refused(&run(&["options", "--input", p, "--vmid", "999"], None))
    });
    assert!(err.contains("no guest with vmid 999"), "{err}");

    let err = refused(&run(&["plan", "--format", "yaml", "--input", "-"], None));
    assert!(err.contains("yaml"), "{err}");
}
