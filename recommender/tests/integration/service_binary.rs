//! The `proxbalance-recommender` binary: refuses a bad configuration naming the key, shuts
//! down cleanly on SIGTERM, and exits with an error when one of its tasks panics.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proxbalance_e2e::NatsServer;

const BIN: &str = env!("CARGO_BIN_EXE_proxbalance-recommender");

#[test]
fn unknown_key_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.toml");
    std::fs::write(&file, "[state]\nreplay_windw_s = 60\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&file)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("replay_windw_s"), "{err}");
}

#[test]
fn placement_keys_are_read_from_the_environment_and_checked() {
    // Each variable alone: the process refuses it naming the key it reached.
    for (var, value, expected) in [
        (
            "PROXBALANCE_RECOMMENDER__ENGINE__CLUSTERS__PROD__NODES__PVE1__RESERVE_GB",
            "-1",
            "engine.clusters.prod.nodes.pve1.reserve_gb: expected a number of GiB ≥ 0",
        ),
        (
            "PROXBALANCE_RECOMMENDER__ENGINE__CLUSTERS__PROD__NODE_RESERVE_PERCENT",
            "100",
            "engine.clusters.prod.node_reserve_percent: expected a percentage ≥ 0 and below 100",
        ),
        (
            "PROXBALANCE_RECOMMENDER__ENGINE__POOLS__DB__ANTI_AFINITY",
            "true",
            "anti_afinity",
        ),
        (
            "PROXBALANCE_RECOMMENDER__ENGINE__PENALTIES__HA_GUESTS",
            "always",
            "engine.penalties.ha_guests: must be \"skip\" or \"recommend\"",
        ),
    ] {
        let out = Command::new(BIN)
            .env_remove("RUST_LOG")
            .env(var, value)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{var}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{var}: {err}");
    }
}

/// A configuration file in `dir` for the nats-server at `nats_url`, gRPC on a free port.
fn config_file(dir: &std::path::Path, nats_url: &str) -> std::path::PathBuf {
    let file = dir.join("r.toml");
    std::fs::write(
        &file,
        format!("[nats]\nurl = \"{nats_url}\"\n[grpc]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    file
}

#[test]
fn sigterm_stops_the_service_gracefully() {
    let nats = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(dir.path(), &nats.url());
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&file)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    // The log line is the event we wait for.
    loop {
        let line = lines.next().expect("log open").unwrap();
        if line.contains("recommender listening") {
            break;
        }
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let started = Instant::now();
    let exit = child.wait().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(exit.success(), "{exit:?}: {rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("shutdown signal received")),
        "{rest:?}"
    );
    assert!(
        rest.iter().any(|l| l.contains("recommender stopped")),
        "{rest:?}"
    );
}

/// A panic in the ingest task (made on purpose through the debug-build variable
/// `PROXBALANCE_DEBUG_PANIC_TASK`) stops the whole process with status 1 and the task named,
/// so that systemd or Kubernetes restarts it. Before, the task ended and the process lived on,
/// still answering gRPC, with nothing ingested any more.
#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "the binaries read PROXBALANCE_DEBUG_PANIC_TASK only in debug builds"
)]
fn a_panicking_task_makes_the_process_exit_with_an_error() {
    let nats = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(dir.path(), &nats.url());
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&file)
        .env("RUST_LOG", "info")
        .env(proxbalance_runtime::tasks::PANIC_TASK_ENV, "ingest")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let out = proxbalance_e2e::output_within(child, Duration::from_secs(60))
        .expect("the process exits after its ingest task panicked");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("task ingest panicked: PROXBALANCE_DEBUG_PANIC_TASK asked task ingest to panic; the service stopped so that it can be restarted"),
        "{err}"
    );
}
