//! The `proxbalance-collector` binary against a real nats-server: a panic in a cluster's task
//! (made on purpose through the debug-build variable `PROXBALANCE_DEBUG_PANIC_TASK`) stops the
//! whole process with status 1 and the task named, so that systemd or Kubernetes restarts it.
//! Before, the cluster's task ended and the process lived on, publishing nothing for that
//! cluster while its other clusters and its metrics listener looked healthy.

use std::process::{Command, Stdio};
use std::time::Duration;

use proxbalance_e2e::NatsServer;

const BIN: &str = env!("CARGO_BIN_EXE_proxbalance-collector");

#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "the binaries read PROXBALANCE_DEBUG_PANIC_TASK only in debug builds"
)]
fn a_panicking_cluster_task_makes_the_process_exit_with_an_error() {
    let nats = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    // Two clusters whose API is unreachable (port 9 on loopback): their cycles fail and are
    // retried, which is no reason to exit; only the panic of `lab`'s task is.
    let cluster = |name: &str| {
        format!(
            "[[clusters]]\nname = \"{name}\"\nendpoints = [\"https://127.0.0.1:9\"]\n\
             token_id = \"proxbalance@pve!collector\"\ntoken_secret_env = \"PVE_TOKEN\"\n\
             insecure_skip_verify = true\ninterval_s = 1.0\n"
        )
    };
    std::fs::write(
        &file,
        format!(
            "[nats]\nurl = \"{}\"\n{}{}",
            nats.url(),
            cluster("prod"),
            cluster("lab")
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&file)
        .env("RUST_LOG", "info")
        .env("PVE_TOKEN", "00000000-0000-0000-0000-000000000000")
        .env(proxbalance_runtime::tasks::PANIC_TASK_ENV, "cluster:lab")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let out = proxbalance_e2e::output_within(child, Duration::from_secs(60))
        .expect("the process exits after a cluster's task panicked");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "task cluster:lab panicked: PROXBALANCE_DEBUG_PANIC_TASK asked task cluster:lab \
             to panic; the service stopped so that it can be restarted"
        ),
        "{err}"
    );
}
