//! `tests/golden/settings.json`: the simplified settings → penalty configuration mapping.
//! (The per-target golden cases run through `proxbalance options`, in the recommender's tests.)

use std::path::PathBuf;

use proxbalance_engine::{MigrationSettings, PenaltyConfig};

/// The configuration keys the reference model does not have: the cluster planner's, the
/// placement rules' and the node reserve.
const PLANNER_KEYS: [&str; 19] = [
    "planner",
    "node_score_weight",
    "balance_mem_weight",
    "balance_cpu_weight",
    "excess_mem_weight",
    "excess_cpu_weight",
    "excess_iowait_weight",
    "excess_margin",
    "anti_affinity_weight",
    "affinity_weight",
    "move_cost",
    "move_cost_per_gib",
    "min_move_gain",
    "max_moves",
    "max_gib",
    "pin_weight",
    "ha_guests",
    "node_reserve_gb",
    "node_reserve_percent",
];
use serde_json::Value;

/// The golden cases, kept beside this test.
fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

#[test]
fn settings_mapping_matches() {
    let text = std::fs::read_to_string(golden_dir().join("settings.json")).expect("settings.json");
    let doc: Value = serde_json::from_str(&text).expect("json");
    let cases = doc["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 9);
    for case in cases {
        let settings = MigrationSettings {
            sensitivity: case["sensitivity"].as_u64().expect("sensitivity") as u8,
            trend_weight: case["trend_weight"].as_f64().expect("trend_weight"),
            ..Default::default()
        };
        let config = serde_json::to_value(settings.to_config().expect("valid")).expect("json");
        let expected = case["config"].as_object().expect("config");
        let actual = config.as_object().expect("object");
        // every key of the scoring model is mapped as the reference maps it; the keys the model
        // does not have (the cluster planner's) keep their defaults, whatever the settings
        let defaults = PenaltyConfig::default().to_map();
        for (k, v) in actual.iter().filter(|(k, _)| !expected.contains_key(*k)) {
            assert_eq!(Some(v), defaults.get(k), "{k} is not the planner's default");
            assert!(
                PLANNER_KEYS.contains(&k.as_str()),
                "{k} is neither golden nor a planner key"
            );
        }
        for (k, v) in expected {
            let a = &actual[k];
            let same = match (a.as_f64(), v.as_f64()) {
                (Some(x), Some(y)) => x == y,
                _ => a == v,
            };
            assert!(
                same,
                "{k} for sensitivity {} trend {}: got {a}, expected {v}",
                settings.sensitivity, settings.trend_weight
            );
        }
    }
}
