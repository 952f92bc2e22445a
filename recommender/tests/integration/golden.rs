//! The golden cases of `engine/tests/golden/` through `proxbalance options --format json`: every
//! target's score, penalties, stability factor, components and gate, as the reference model
//! computes them with the rules of docs/engine.md.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// The golden cases, kept with the engine's tests.
fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("engine/tests/golden")
}

fn cases() -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = std::fs::read_dir(golden_dir())
        .expect("golden dir readable")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            name.ends_with(".json") && name.starts_with(|c: char| c.is_ascii_digit())
        })
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("readable");
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            (name, serde_json::from_str(&text).expect("json"))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        out.len() >= 11,
        "expected the eleven golden cases, found {}",
        out.len()
    );
    out
}

/// Numbers within `tol`, anything else equal.
fn close(actual: &Value, expected: &Value, tol: f64, what: &str, errors: &mut Vec<String>) {
    match (actual.as_f64(), expected.as_f64()) {
        (Some(a), Some(e)) if (a - e).abs() <= tol => {}
        (Some(a), Some(e)) => errors.push(format!("{what}: got {a}, expected {e}")),
        _ if actual == expected => {}
        _ => errors.push(format!("{what}: got {actual}, expected {expected}")),
    }
}

/// Scores, components and metrics within 1e-6; penalties, factor and trend exactly.
fn compare_entry(actual: &Value, expected: &Value, label: &str, errors: &mut Vec<String>) {
    close(
        &actual["score"],
        &expected["score"],
        1e-6,
        &format!("{label}.score"),
        errors,
    );
    close(
        &actual["cpu_stability_factor"],
        &expected["cpu_stability_factor"],
        0.0,
        &format!("{label}.cpu_stability_factor"),
        errors,
    );
    for (group, tol) in [("components", 1e-6), ("penalties", 0.0), ("metrics", 1e-6)] {
        let Some(fields) = expected[group].as_object() else {
            continue;
        };
        for (k, v) in fields {
            close(
                &actual[group][k],
                v,
                tol,
                &format!("{label}.{group}.{k}"),
                errors,
            );
        }
    }
    match expected["trend"].as_object() {
        None if actual["trend"].is_null() => {}
        None => errors.push(format!(
            "{label}.trend: expected null, got {}",
            actual["trend"]
        )),
        Some(trend) => {
            for (k, v) in trend {
                close(
                    &actual["trend"][k],
                    v,
                    0.0,
                    &format!("{label}.trend.{k}"),
                    errors,
                );
            }
        }
    }
}

#[test]
fn every_golden_case_matches_through_the_cli() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut errors = Vec::new();
    for (file, case) in cases() {
        let view_path = dir.path().join(&file);
        std::fs::write(&view_path, case["view"].to_string()).expect("write view");
        let vmid = case["vmid"].as_u64().expect("vmid");
        let out = Command::new(env!("CARGO_BIN_EXE_proxbalance"))
            .args([
                "options",
                "--format",
                "json",
                "--vmid",
                &vmid.to_string(),
                "--input",
            ])
            .arg(&view_path)
            .output()
            .expect("run proxbalance");
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let options: Value = serde_json::from_slice(&out.stdout).expect("options JSON");
        let expected = &case["expected"];
        close(
            &options["source"]["node"],
            &expected["source"]["node"],
            0.0,
            &format!("{file} source.node"),
            &mut errors,
        );
        compare_entry(
            &options["source"],
            &expected["source"],
            &format!("{file} source"),
            &mut errors,
        );
        // the golden files list online, non-maintenance targets; options lists every other node
        let listed: Vec<&Value> = options["targets"]
            .as_array()
            .expect("targets")
            .iter()
            .filter(|t| !t["score"].is_null() && t["gate_reason"] != "node in maintenance")
            .collect();
        let exp_targets = expected["targets"].as_array().expect("targets");
        if listed.len() != exp_targets.len() {
            errors.push(format!(
                "{file}: {} targets listed, expected {}",
                listed.len(),
                exp_targets.len()
            ));
        }
        for (act, exp) in listed.iter().zip(exp_targets) {
            let label = format!("{file} {}", exp["node"]);
            close(
                &act["node"],
                &exp["node"],
                0.0,
                &format!("{label}.node"),
                &mut errors,
            );
            close(
                &act["eligible"],
                &exp["eligible"],
                0.0,
                &format!("{label}.eligible"),
                &mut errors,
            );
            close(
                &act["gate_reason"],
                &exp["gate_reason"],
                0.0,
                &format!("{label}.gate_reason"),
                &mut errors,
            );
            compare_entry(act, exp, &label, &mut errors);
        }
    }
    assert!(
        errors.is_empty(),
        "{} mismatches:\n{}",
        errors.len(),
        errors.join("\n")
    );
}
