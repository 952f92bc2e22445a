//! Runs `deploy/demo.sh --once --options 601` as a newcomer would, and checks that what it prints
//! shows the demo scenario's behaviours: IOWait relief off pve6, an overcommit penalty, and a
//! target refused by the memory capacity gate.
//!
//! The script is given the binaries `cargo test --workspace` has already built (the directory
//! beside this test's executable) so it does not run cargo itself; when they are missing there
//! (e.g. `cargo test -p proxbalance-e2e` alone) it builds them with cargo.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BINARIES: [&str; 4] = [
    "pvesim",
    "proxbalance-collector",
    "proxbalance-recommender",
    "proxbalance",
];

/// `target/<profile>`: the test executable lives in its `deps/` directory.
fn prebuilt_bin_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.parent()?.to_path_buf();
    BINARIES
        .iter()
        .all(|b| dir.join(b).is_file())
        .then_some(dir)
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the demo with a hard limit; returns its standard output.
fn run_demo(limit: Duration) -> String {
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("deploy/demo.sh"))
        .args(["--once", "--options", "601"])
        .env("PROXBALANCE_DEMO_TIMEOUT_S", "90")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = prebuilt_bin_dir() {
        cmd.env("PROXBALANCE_BIN_DIR", dir);
    }
    let mut child = cmd.spawn().expect("bash runs deploy/demo.sh");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).map(|_| s)
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the demo") {
            break status;
        }
        if started.elapsed() > limit {
            // SIGTERM lets the script's trap stop its children and remove its directory.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            std::thread::sleep(Duration::from_secs(8));
            let _ = child.kill();
            let _ = child.wait();
            let err = err.join().unwrap().unwrap_or_default();
            panic!("the demo did not finish within {limit:?}; its stderr:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = out.join().unwrap().expect("stdout is UTF-8");
    let err = err.join().unwrap().unwrap_or_default();
    assert!(
        status.success(),
        "demo.sh --once exited with {status}; stderr:\n{err}"
    );
    out
}

#[test]
fn demo_once_shows_the_seeded_behaviours() {
    let out = run_demo(Duration::from_secs(120));
    let docs: Vec<Value> = serde_json::Deserializer::from_str(&out)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("the demo printed something that is not JSON ({e}):\n{out}"));
    assert_eq!(docs.len(), 2, "recommendations then options:\n{out}");
    let (set, options) = (&docs[0], &docs[1]);
    assert_eq!(set["cluster"], "demo");

    // pve6 is under sustained IOWait: its busiest-disk guest, pg-primary, is moved off.
    let relief: Vec<(u64, &str)> = set["recommendations"]
        .as_array()
        .expect("recommendations")
        .iter()
        .filter(|r| r["reason"]["kind"] == "iowait_relief")
        .map(|r| {
            (
                r["vmid"].as_u64().expect("vmid"),
                r["source_node"].as_str().expect("source_node"),
            )
        })
        .collect();
    assert_eq!(relief, vec![(601, "pve6")], "{set:#}");

    // pve2 (ratio 1.30) and pve3 (1.09) carry overcommit penalties; the others none.
    let penalty = |node: &str| {
        set["node_scores"]
            .as_array()
            .expect("node_scores")
            .iter()
            .find(|n| n["node"] == node)
            .unwrap_or_else(|| panic!("{node} scored"))["penalties"]["mem_overcommit"]
            .as_f64()
            .expect("mem_overcommit")
    };
    assert_eq!(penalty("pve2"), 40.0);
    assert_eq!(penalty("pve3"), 15.0);
    assert_eq!(penalty("pve5"), 0.0);

    // pve1 is 90 % committed: the capacity gate refuses it as a target for guest 601.
    assert_eq!(options["vmid"], 601);
    let pve1 = options["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .find(|t| t["node"] == "pve1")
        .expect("pve1 among the targets");
    assert_eq!(pve1["gate_reason"], "insufficient memory capacity");
    assert_eq!(pve1["eligible"], false);
}
