//! Secrets never reach the logs or the errors. Both services run in-process against the shipped
//! `deploy/nats-server.conf` and pvesim with `tracing` at `trace` for every crate (async-nats,
//! rustls, hyper, h2, tonic included), through successful runs and failure paths: a wrong PVE
//! token, refused NATS logins (wrong password, unknown nkey), an unreachable server, a URL with
//! a password in it. Everything printed, plus the `Display` and `Debug` of every error and
//! configuration, is searched for each secret string.
//!
//! One test in this file: the `tracing` subscriber is global to the test binary.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxbalance_collector::config::Config as CollectorConfig;
use proxbalance_e2e::NatsServer;
use proxbalance_recommender::Config as RecommenderConfig;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const DEMO: &str = include_str!("../../../deploy/demo-scenario.toml");
const PVE_TOKEN_ID: &str = "proxbalance@pve!collector";
const PVE_TOKEN_SECRET: &str = "5f0c8a8e-2b1d-4c3e-9a77-0d1e2f3a4b5c";
const WRONG_PVE_SECRET: &str = "wrong-pve-secret-7d1c2b";
const COLLECTOR_PASSWORD: &str = "collector-pw-91f3aa";
const RECOMMENDER_PASSWORD: &str = "recommender-pw-0b77c4";
const WRONG_NATS_PASSWORD: &str = "wrong-nats-pw-5e21d9";
const URL_PASSWORD: &str = "url-pw-c0ffee42";
const GRPC_TOKEN: &str = "grpc-token-3f9e1d";
const WRONG_GRPC_TOKEN: &str = "wrong-grpc-token-8a4c2e";
const WAIT: Duration = Duration::from_secs(30);

/// Everything the subscriber writes, and a wake-up on every write.
#[derive(Clone, Default)]
struct Capture {
    text: Arc<Mutex<Vec<u8>>>,
    wrote: Arc<Notify>,
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.text.lock().unwrap()).into_owned()
    }

    /// Adds text that did not come through `tracing` (errors, configurations).
    fn record(&self, text: &str) {
        self.text.lock().unwrap().extend_from_slice(text.as_bytes());
        self.text.lock().unwrap().push(b'\n');
    }

    /// Waits until the output contains `needle` (woken by each write).
    async fn wait_for(&self, needle: &str) {
        tokio::time::timeout(WAIT, async {
            loop {
                let wrote = self.wrote.notified();
                tokio::pin!(wrote);
                wrote.as_mut().enable();
                if self.text().contains(needle) {
                    return;
                }
                wrote.await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            let text = self.text();
            let tail = &text[text.len().saturating_sub(4000)..];
            panic!("{needle:?} was not logged within the wait; the output ends with {tail}")
        });
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.text.lock().unwrap().extend_from_slice(buf);
        self.wrote.notify_waiters();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn write_file(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.display().to_string()
}

fn shipped_config(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nats-server.conf"),
    )
    .unwrap();
    let text = text
        .replace(
            r#"store_dir: "/var/lib/nats/jetstream""#,
            &format!("store_dir: {:?}", dir.join("js").display().to_string()),
        )
        .replace(r#"http: "127.0.0.1:8222""#, r#"http: "127.0.0.1:-1""#);
    let path = dir.join("nats-server.conf");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn no_secret_appears_in_logs_or_errors() {
    let capture = Capture::default();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_writer(capture.clone())
        .with_ansi(false)
        .init();
    proxbalance_runtime::install_crypto_provider();

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let unknown_nkey = nkeys::KeyPair::new_user();
    let unknown_seed = unknown_nkey.seed().unwrap();
    let server = NatsServer::start_with_config(
        &shipped_config(d),
        None,
        &[
            ("COLLECTOR_PASSWORD", COLLECTOR_PASSWORD),
            ("RECOMMENDER_PASSWORD", RECOMMENDER_PASSWORD),
            ("EVENTS_NKEY", &nkeys::KeyPair::new_user().public_key()),
        ],
    )
    .unwrap();
    let url = server.url();
    let mut scenario = pvesim::Scenario::from_toml_str(DEMO).unwrap();
    scenario.cluster.acceleration = 0.0;
    let sim = pvesim::Simulator::start(scenario, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();

    let collector_pw = write_file(d, "collector-pw", &format!("{COLLECTOR_PASSWORD}\n"));
    let recommender_pw = write_file(d, "recommender-pw", RECOMMENDER_PASSWORD);
    let wrong_pw = write_file(d, "wrong-pw", WRONG_NATS_PASSWORD);
    let seed_file = write_file(d, "unknown.nkey", &unknown_seed);
    let good_token = write_file(d, "pve-token", PVE_TOKEN_SECRET);
    let wrong_token = write_file(d, "wrong-pve-token", WRONG_PVE_SECRET);
    let cluster = |token: &str| {
        format!(
            "[[clusters]]\nname = \"demo\"\nendpoints = [\"https://{}\"]\ntoken_id = {PVE_TOKEN_ID:?}\ntoken_secret_file = {token:?}\nfingerprint = {:?}\ninterval_s = 0.3\n",
            sim.local_addr(),
            sim.fingerprint_sha256(),
        )
    };
    let collector = |nats: &str, token: &str| {
        let cfg = CollectorConfig::from_toml(&format!(
            "[nats]\nurl = {url:?}\n{nats}\n{}",
            cluster(token)
        ))
        .unwrap();
        capture.record(&format!("{cfg:?}"));
        cfg
    };
    // `nats` may end with a `[grpc]` continuation (`token_file = …`).
    let recommender = |nats: &str| {
        let (nats, grpc) = nats.split_once("[grpc]\n").unwrap_or((nats, ""));
        let cfg = RecommenderConfig::from_toml(&format!(
            "[nats]\nurl = {url:?}\n{nats}\n[grpc]\nlisten = \"127.0.0.1:0\"\n{grpc}\n"
        ))
        .unwrap();
        capture.record(&format!("{cfg:?}"));
        cfg
    };

    // 1. Both services log in; the collector's PVE token is wrong for the first run.
    let shutdown = CancellationToken::new();
    let running = proxbalance_recommender::start(
        recommender(&format!(
            "user = \"recommender\"\npassword_file = {recommender_pw:?}"
        )),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let mut notices = running.shared().changes.subscribe();
    let bad_pve = tokio::spawn(proxbalance_collector::run(
        collector(
            &format!("user = \"collector\"\npassword_file = {collector_pw:?}"),
            &wrong_token,
        ),
        shutdown.clone(),
    ));
    // A cycle that the PVE API refused (401), logged with its error.
    capture.wait_for("cycle done cluster=demo").await;
    assert!(capture.text().contains("nodes=0 errors="));
    shutdown.cancel();
    bad_pve.await.unwrap().unwrap();
    running.wait().await.unwrap();

    // 2. The right token: a full cycle through NATS to a recomputation; the recommender wants
    //    a gRPC bearer token, and gets calls without, with a wrong and with the right one.
    let shutdown = CancellationToken::new();
    let grpc_token = write_file(d, "grpc-token", GRPC_TOKEN);
    let running = proxbalance_recommender::start(
        recommender(&format!(
            "user = \"recommender\"\npassword_file = {recommender_pw:?}\n[grpc]\ntoken_file = {grpc_token:?}\n[http]\nlisten = \"127.0.0.1:0\""
        )),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let mut notices2 = running.shared().changes.subscribe();
    let good = tokio::spawn(proxbalance_collector::run(
        collector(
            &format!("user = \"collector\"\npassword_file = {collector_pw:?}"),
            &good_token,
        ),
        shutdown.clone(),
    ));
    let notice = tokio::time::timeout(WAIT, notices2.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(notice.event.cluster, "demo");
    assert!(notices.try_recv().is_err(), "the wrong token produced data");
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", running.grpc_addr()))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut client = proxbalance_proto::v1::recommender_client::RecommenderClient::new(channel);
    for (token, code) in [
        (None, tonic::Code::Unauthenticated),
        (Some(WRONG_GRPC_TOKEN), tonic::Code::Unauthenticated),
        (Some(GRPC_TOKEN), tonic::Code::Ok),
    ] {
        let mut req = tonic::Request::new(proxbalance_proto::v1::ListClustersRequest::default());
        if let Some(t) = token {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        let got = client.list_clusters(req).await;
        match &got {
            Ok(_) => capture.record("list_clusters: OK"),
            Err(s) => capture.record(&format!("{s} {s:?}")),
        }
        assert_eq!(got.map_or_else(|s| s.code(), |_| tonic::Code::Ok), code);
    }
    // The dashboard's API takes the same token, in the same header.
    let dashboard = format!("http://{}", running.http_addr().unwrap());
    let http = reqwest::Client::new();
    for (token, status) in [
        (None, 401),
        (Some(WRONG_GRPC_TOKEN), 401),
        (Some(GRPC_TOKEN), 200),
    ] {
        for path in ["/api/v1/clusters", "/api/v1/clusters/demo"] {
            let mut req = http.get(format!("{dashboard}{path}"));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status().as_u16(), status, "{path}");
            capture.record(&format!("GET {path}: {}", r.text().await.unwrap()));
        }
    }
    let mut live = http
        .get(format!("{dashboard}/api/v1/stream"))
        .bearer_auth(GRPC_TOKEN)
        .send()
        .await
        .unwrap();
    let hello = live.chunk().await.unwrap().unwrap();
    capture.record(&String::from_utf8_lossy(&hello));
    drop(live);
    shutdown.cancel();
    good.await.unwrap().unwrap();
    running.wait().await.unwrap();

    // 3. Refused logins and connection errors: every error is recorded, Display and Debug.
    let mut errors = Vec::new();
    let never = CancellationToken::new();
    for nats in [
        format!("user = \"collector\"\npassword_file = {wrong_pw:?}"),
        format!("nkey_seed_file = {seed_file:?}"),
    ] {
        let err = proxbalance_collector::run(collector(&nats, &good_token), never.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(err, proxbalance_collector::app::RunError::Connect { .. }),
            "{err}"
        );
        errors.push((format!("{err}"), format!("{err:?}")));
        let err = proxbalance_recommender::start(recommender(&nats), never.clone())
            .await
            .unwrap_err();
        errors.push((format!("{err}"), format!("{err:?}")));
    }
    // An unreachable server.
    let unreachable = format!(
        "[nats]\nurl = \"nats://127.0.0.1:1\"\nconnect_timeout_ms = 300\nuser = \"collector\"\npassword_file = {collector_pw:?}\n{}",
        cluster(&good_token)
    );
    let err = proxbalance_collector::run(
        CollectorConfig::from_toml(&unreachable).unwrap(),
        never.clone(),
    )
    .await
    .unwrap_err();
    errors.push((format!("{err}"), format!("{err:?}")));
    // A password in the URL is refused by both services, without echoing it.
    let in_url = format!(
        "nats://collector:{URL_PASSWORD}@127.0.0.1:{}",
        server.port()
    );
    let err = CollectorConfig::from_toml(&format!(
        "[nats]\nurl = {in_url:?}\n{}",
        cluster(&good_token)
    ))
    .unwrap_err();
    errors.push((format!("{err}"), format!("{err:?}")));
    let err = RecommenderConfig::from_toml(&format!("[nats]\nurl = {in_url:?}\n")).unwrap_err();
    errors.push((format!("{err}"), format!("{err:?}")));
    // The redaction itself, for URLs that reach an error some other way.
    errors.push((
        proxbalance_runtime::redact_url(&in_url),
        proxbalance_runtime::NatsSettings {
            url: in_url.clone(),
            ..Default::default()
        }
        .redacted_url(),
    ));
    for (display, debug) in &errors {
        capture.record(display);
        capture.record(debug);
    }
    assert!(
        errors[0].0.contains("authorization violation"),
        "{}",
        errors[0].0
    );
    assert_eq!(
        errors[errors.len() - 3].0,
        "configuration, nats.url: credentials in the URL are refused; use nats.user with nats.password_file or nats.password_env"
    );
    assert_eq!(
        errors[errors.len() - 1].0,
        format!("nats://***@127.0.0.1:{}", server.port())
    );

    // The output is real: trace level was on, the failures were logged.
    let text = capture.text();
    for expected in [
        "write operation: CONNECT",
        "TRACE",
        "401",
        "cycle done",
        "recommender listening",
    ] {
        assert!(text.contains(expected), "the output lacks {expected:?}");
    }
    for secret in [
        PVE_TOKEN_SECRET,
        WRONG_PVE_SECRET,
        COLLECTOR_PASSWORD,
        RECOMMENDER_PASSWORD,
        WRONG_NATS_PASSWORD,
        URL_PASSWORD,
        GRPC_TOKEN,
        WRONG_GRPC_TOKEN,
        unknown_seed.as_str(),
    ] {
        let hits = text.matches(secret).count();
        assert_eq!(hits, 0, "{secret:?} appears {hits} times in the output");
    }
}
