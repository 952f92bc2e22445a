//! The `proxbalance-recommender` binary: refuses a bad configuration naming the key, and shuts
//! down cleanly on SIGTERM.

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
fn sigterm_stops_the_service_gracefully() {
    let nats = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.toml");
    std::fs::write(
        &file,
        format!(
            "[nats]\nurl = \"{}\"\n[grpc]\nlisten = \"127.0.0.1:0\"\n",
            nats.url()
        ),
    )
    .unwrap();
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
