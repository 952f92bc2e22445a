//! Faults of the recommender process itself, on the real `proxbalance-recommender` binary (this
//! file lives in the recommender package because Cargo gives the binary's path,
//! `CARGO_BIN_EXE_*`, only to its own package's tests). The collector and pvesim of
//! `tests/e2e` publish the demo scenario to a real nats-server.
//!
//! One run, in order:
//! 1. the service is killed with SIGKILL and started again: it rebuilds its windows from the
//!    history and the replay and serves the same recommendations as before;
//! 2. hostile snapshots published to NATS are refused and counted under their exact reason
//!    labels on `/metrics`;
//! 3. SIGTERM with two open watch streams: the process exits within its shutdown timeout and
//!    the streams end.

use crate::support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proxbalance_collector::publisher::StreamLimits;
use proxbalance_e2e::NatsServer;
use proxbalance_proto::SCHEMA_VERSION;
use proxbalance_proto::subjects::Subjects;
use proxbalance_proto::v1 as pb;
use support::{Driver, WAIT, connect, recommendations, until_cycle, watch};

const BIN: &str = env!("CARGO_BIN_EXE_proxbalance-recommender");
const SHUTDOWN_TIMEOUT_MS: u64 = 2000;

/// A running `proxbalance-recommender` child process.
struct Process {
    child: Child,
    grpc: String,
    log: Arc<Mutex<Vec<String>>>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl Process {
    /// Starts the binary and waits for its "recommender listening" log line (JSON logs).
    fn start(dir: &std::path::Path, nats_url: &str, metrics_port: u16) -> Process {
        let file = dir.join("recommender.toml");
        std::fs::write(
            &file,
            format!(
                "[nats]\nurl = \"{nats_url}\"\n[grpc]\nlisten = \"127.0.0.1:0\"\n\
                 shutdown_timeout_ms = {SHUTDOWN_TIMEOUT_MS}\n\
                 [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n"
            ),
        )
        .expect("config");
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&file)
            .arg("--json-logs")
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the recommender");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        for out in [
            Box::new(child.stderr.take().expect("stderr")) as Box<dyn Read + Send>,
            Box::new(child.stdout.take().expect("stdout")),
        ] {
            let log = log.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                        && v["fields"]["message"] == "recommender listening"
                        && let Some(addr) = v["fields"]["grpc_addr"].as_str()
                    {
                        let _ = tx.send(addr.to_owned());
                    }
                    log.lock().expect("log").push(line);
                }
            });
        }
        let addr = rx.recv_timeout(WAIT).unwrap_or_else(|_| {
            panic!(
                "no 'recommender listening' line: {:?}",
                log.lock().expect("log")
            )
        });
        Process {
            child,
            grpc: format!("http://{addr}"),
            log,
        }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the health service reports SERVING.
async fn serving(url: &str) {
    let channel = tonic::transport::Channel::from_shared(url.to_owned())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut stream = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: "proxbalance.v1.Recommender".into(),
        })
        .await
        .expect("health watch")
        .into_inner();
    tokio::time::timeout(WAIT, async {
        while let Some(m) = stream.message().await.expect("health message") {
            if m.status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
                return;
            }
        }
        panic!("health stream ended");
    })
    .await
    .expect("serving in time");
}

/// `proxbalance_recommender_messages_rejected_total` by reason, scraped from `/metrics`.
fn rejected(metrics_port: u16) -> BTreeMap<String, u64> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", metrics_port)).expect("metrics");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("request");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("response");
    body.lines()
        .filter_map(|l| l.strip_prefix("proxbalance_recommender_messages_rejected_total{"))
        .filter_map(|l| {
            let reason = l.split("reason=\"").nth(1)?.split('"').next()?.to_owned();
            let value = l.rsplit(' ').next()?.parse::<f64>().ok()?;
            Some((reason, value as u64))
        })
        .collect()
}

fn snapshot(node: &str, vmids: &[u32]) -> pb::NodeSnapshot {
    pb::NodeSnapshot {
        schema_version: SCHEMA_VERSION,
        cluster: "hostile".into(),
        node: node.into(),
        cycle: 1,
        observed_at_unix_ms: 1_764_230_400_000,
        status: pb::NodeStatus::Online as i32,
        cpu_fraction: 0.3,
        cpu_threads: 8,
        mem_used_bytes: 1 << 30,
        mem_total_bytes: 8 << 30,
        guests: vmids
            .iter()
            .map(|v| pb::Guest {
                vmid: *v,
                kind: pb::GuestKind::Lxc as i32,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// Publishes the hostile messages, each on node `b`'s subject (a genuine node `a` first), and
/// returns the reason each must be counted under.
async fn publish_hostile(nats_url: &str) -> BTreeMap<String, u64> {
    let nc = async_nats::connect(nats_url).await.expect("nats");
    let js = async_nats::jetstream::new(nc);
    let subjects = Subjects::default();
    let publish = |subject: String, payload: Vec<u8>| {
        let js = js.clone();
        async move {
            js.publish(subject, payload.into())
                .await
                .expect("publish")
                .await
                .expect("ack");
        }
    };
    let b = subjects.snapshot("hostile", "b");
    publish(
        subjects.snapshot("hostile", "a"),
        proxbalance_proto::encode(&snapshot("a", &[100])),
    )
    .await;
    let mut cases: Vec<(&str, pb::NodeSnapshot)> = Vec::new();
    let mut s = snapshot("b", &[200]);
    s.cpu_fraction = f64::NAN;
    cases.push(("not_finite", s));
    let mut s = snapshot("b", &[200]);
    s.mem_total_bytes = (-1i64) as u64;
    cases.push(("negative_value", s));
    let mut s = snapshot("b", &[200]);
    s.mem_used_bytes = 9 << 30;
    cases.push(("used_exceeds_total", s));
    cases.push(("guest_on_two_nodes", snapshot("b", &[200, 100])));
    cases.push(("duplicate_guest", snapshot("b", &[200, 200])));
    // 10,001 guests: over the limit, under NATS' 1 MiB payload maximum (the 100,000-guest
    // and megabyte-name cases are in hostile_snapshots.rs beside this file: NATS refuses such payloads).
    let many: Vec<u32> = (1..=10_001).collect();
    cases.push(("too_many_items", snapshot("b", &many)));
    let mut s = snapshot("b", &[200]);
    s.guests[0].name = "x".repeat(300);
    cases.push(("name_too_long", s));
    let mut s = snapshot("b", &[200]);
    s.schema_version = 2;
    cases.push(("schema_version", s));
    for (_, s) in &cases {
        publish(b.clone(), proxbalance_proto::encode(s)).await;
    }
    // The subject names node b, the payload node a.
    publish(b.clone(), proxbalance_proto::encode(&snapshot("a", &[300]))).await;
    publish(b.clone(), b"<html>not protobuf</html>".to_vec()).await;
    let mut expected: BTreeMap<String, u64> =
        cases.iter().map(|(l, _)| ((*l).to_owned(), 1)).collect();
    expected.insert("subject_mismatch".into(), 1);
    expected.insert("decode".into(), 1);
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_recommender_rebuilds_refuses_hostile_input_and_shuts_down_in_time() {
    support::log();
    let nats = NatsServer::start().expect("nats-server");
    let url = nats.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics_port = free_port();
    let mut driver = Driver::start(
        "demo",
        &url,
        &StreamLimits::default(),
        Duration::from_secs(5),
    )
    .await;

    // 1. Three cycles, served by the first process.
    let first = Process::start(dir.path(), &url, metrics_port);
    let client = connect(&first.grpc).await;
    let mut w = watch(&client, "demo").await;
    for _ in 0..3 {
        let (out, report) = driver.cycle(10.0).await;
        assert!(out.status.errors.is_empty(), "{:?}", out.status.errors);
        assert_eq!(report.failed, 0);
    }
    until_cycle(&mut w, driver.last_cycle).await;
    let before = recommendations(&client, "demo").await;
    assert!(!before.recommendations.is_empty());
    drop(w);

    // SIGKILL: no shutdown path runs.
    let mut first = first;
    first.child.kill().expect("SIGKILL");
    let status = first.child.wait().expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );

    // A new process reads the history and replays the stream: the same set.
    let second = Process::start(dir.path(), &url, metrics_port);
    serving(&second.grpc).await;
    let client = connect(&second.grpc).await;
    let after = recommendations(&client, "demo").await;
    assert_eq!(
        after, before,
        "the same recommendations after SIGKILL and replay"
    );

    // 2. Hostile snapshots, then one genuine cycle: once it is recomputed, every message
    // published before it has been read.
    let mut w = watch(&client, "demo").await;
    let expected = publish_hostile(&url).await;
    let (_, report) = driver.cycle(10.0).await;
    assert_eq!(report.failed, 0);
    until_cycle(&mut w, driver.last_cycle).await;
    assert_eq!(rejected(metrics_port), expected, "{:?}", second.log());

    // 3. SIGTERM with two watch streams open.
    let mut events = client
        .clone()
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .expect("watch events")
        .into_inner();
    let mut second = second;
    let term = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &second.child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || {
        let exit = second.child.wait().expect("wait");
        (exit, second)
    });
    let (exit, second) = tokio::time::timeout(WAIT, exit)
        .await
        .expect("exits")
        .expect("join");
    let took = term.elapsed();
    assert!(exit.success(), "{exit:?}: {:?}", second.log());
    assert!(
        took < Duration::from_millis(SHUTDOWN_TIMEOUT_MS + 1000),
        "shutdown took {took:?}"
    );
    for end in [
        tokio::time::timeout(WAIT, w.message())
            .await
            .map(|r| r.map(|m| m.is_some())),
        tokio::time::timeout(WAIT, events.message())
            .await
            .map(|r| r.map(|m| m.is_some())),
    ] {
        let end = end.expect("stream ends in time");
        assert!(matches!(end, Ok(false) | Err(_)), "{end:?}");
    }
    println!("SIGTERM with 2 open watch streams: exited in {took:?}");
    drop(second);
    driver.sim.shutdown().await;
}
