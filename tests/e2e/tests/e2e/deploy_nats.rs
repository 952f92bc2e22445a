//! `deploy/nats-server.conf` against a real nats-server (Debian's 2.9.10 in CI): the file is run
//! as shipped, except for its port (random), monitoring port (random) and JetStream store
//! directory (temporary), with the secrets it reads from the environment.
//!
//! - the real collector and recommender (`run`/`start`, in-process, against pvesim) log in with
//!   the settings of their configuration — user with a password file, or an nkey seed file —
//!   and carry a cycle from the PVE API to gRPC and to an event consumer;
//! - the collector, through its own connection code and publisher, creates its streams and
//!   publishes with acknowledgement, and is refused every other subject;
//! - the recommender reads the snapshot and the history, creates the events stream and
//!   publishes an event, and cannot forge snapshots or touch the collector's streams;
//! - an event consumer (an nkey user) receives the event over core NATS and through a durable
//!   JetStream consumer, and can publish nothing and read nothing else;
//! - in operator mode (a server trusting an operator JWT, accounts from a memory resolver), the
//!   services log in with `nats.credentials_file`, their users holding the shipped permission
//!   sets as JWT permissions, and credentials not signed by a trusted account are refused.
//!
//! A refused publish or subscription does not fail on the client: the server answers with
//! `-ERR 'Permissions Violation for …'`, which async-nats reports as an event. Every connection
//! here forwards those errors to a channel, and the tests assert the exact sequence.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use async_nats::{ConnectOptions, Event, ServerError};
use futures_util::StreamExt;
use proxbalance_collector::config::Config as CollectorConfig;
use proxbalance_collector::publisher::Publisher;
use proxbalance_e2e::{HarnessError, NatsServer, jwt};
use proxbalance_proto::headers;
use proxbalance_proto::subjects::{EVENTS_STREAM, HISTORY_STREAM, SNAPSHOTS_STREAM, Subjects};
use proxbalance_proto::v1::{NodeHistory, NodeSnapshot, OverloadEvent};
use proxbalance_recommender::Config as RecommenderConfig;
use proxbalance_runtime::OutMessage;
use tokio::sync::mpsc;

const COLLECTOR_PASSWORD: &str = "collector-test-secret";
const RECOMMENDER_PASSWORD: &str = "recommender-test-secret";
/// Generous bound for a server round trip on a loaded 2-core machine; never reached when
/// things work, since every wait ends on the awaited event.
const WAIT: Duration = Duration::from_secs(15);

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// Replaces `from` by `to`, asserting `from` occurs exactly once (so a change to the shipped
/// file cannot silently turn the test into a test of something else).
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "deploy/nats-server.conf: expected exactly one {from:?}"
    );
    text.replacen(from, to, 1)
}

/// The shipped configuration, running.
struct Deployed {
    server: NatsServer,
    /// Seed of the nkey user whose public key the server got as `EVENTS_NKEY`.
    events_seed: String,
    _dir: tempfile::TempDir,
}

fn shipped_config(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(deploy_dir().join("nats-server.conf")).unwrap();
    let store = dir.join("jetstream");
    let text = replace_once(
        &text,
        r#"store_dir: "/var/lib/nats/jetstream""#,
        &format!("store_dir: {:?}", store.display().to_string()),
    );
    let text = replace_once(
        &text,
        r#"http: "127.0.0.1:8222""#,
        r#"http: "127.0.0.1:-1""#,
    );
    let path = dir.join("nats-server.conf");
    std::fs::write(&path, text).unwrap();
    path
}

fn deploy() -> Deployed {
    let dir = tempfile::tempdir().unwrap();
    let conf = shipped_config(dir.path());
    let events_key = nkeys::KeyPair::new_user();
    let server = NatsServer::start_with_config(
        &conf,
        None,
        &[
            ("COLLECTOR_PASSWORD", COLLECTOR_PASSWORD),
            ("RECOMMENDER_PASSWORD", RECOMMENDER_PASSWORD),
            ("EVENTS_NKEY", &events_key.public_key()),
        ],
    )
    .unwrap();
    let log = server.log();
    assert!(log.contains("Starting JetStream"), "{log}");
    Deployed {
        server,
        events_seed: events_key.seed().unwrap(),
        _dir: dir,
    }
}

/// A client whose server errors (permission violations) arrive on the returned channel.
async fn connect(
    opts: ConnectOptions,
    url: &str,
) -> (async_nats::Client, mpsc::UnboundedReceiver<ServerError>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = opts
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let Event::ServerError(e) = event {
                    let _ = tx.send(e);
                }
            }
        })
        .connect(url)
        .await
        .unwrap();
    (client, rx)
}

async fn next_error(rx: &mut mpsc::UnboundedReceiver<ServerError>) -> ServerError {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("no server error within the wait")
        .expect("error channel closed")
}

fn publish_violation(subject: &str) -> ServerError {
    ServerError::Other(format!(
        "Permissions Violation for Publish to \"{subject}\""
    ))
}

fn subscribe_violation(subject: &str) -> ServerError {
    ServerError::Other(format!(
        "Permissions Violation for Subscription to \"{subject}\""
    ))
}

/// Publishes to each subject and asserts the server refuses each, in order.
async fn assert_publish_refused(
    client: &async_nats::Client,
    errors: &mut mpsc::UnboundedReceiver<ServerError>,
    subjects: &[&str],
) {
    for subject in subjects {
        client
            .publish((*subject).to_owned(), "forged".into())
            .await
            .unwrap();
        client.flush().await.unwrap();
        assert_eq!(next_error(errors).await, publish_violation(subject));
    }
}

/// Subscribes to each subject and asserts the server refuses each, in order.
async fn assert_subscribe_refused(
    client: &async_nats::Client,
    errors: &mut mpsc::UnboundedReceiver<ServerError>,
    subjects: &[&str],
) {
    for subject in subjects {
        let _sub = client.subscribe((*subject).to_owned()).await.unwrap();
        client.flush().await.unwrap();
        assert_eq!(next_error(errors).await, subscribe_violation(subject));
    }
}

fn snapshot() -> NodeSnapshot {
    NodeSnapshot {
        schema_version: proxbalance_proto::SCHEMA_VERSION,
        cluster: "demo".into(),
        node: "pve6".into(),
        cycle: 7,
        observed_at_unix_ms: 1_764_244_800_000,
        cpu_threads: 32,
        ..Default::default()
    }
}

fn history() -> NodeHistory {
    NodeHistory {
        schema_version: proxbalance_proto::SCHEMA_VERSION,
        cluster: "demo".into(),
        node: "pve6".into(),
        collected_at_unix_ms: 1_764_244_700_000,
        ..Default::default()
    }
}

fn overload_event() -> OverloadEvent {
    OverloadEvent {
        cluster: "demo".into(),
        node: "pve6".into(),
        value: 0.35,
        avg_24h: Some(0.31),
        threshold: 0.2,
        since_unix_ms: 1_764_244_000_000,
        at_unix_ms: 1_764_244_800_000,
        event_id: "demo:pve6:iowait:1764244000000".into(),
        ..Default::default()
    }
}

/// A `[nats]` table that logs in as `user` with a password file (written into `dir`).
fn password_login(url: &str, user: &str, password: &str, dir: &Path) -> String {
    let file = dir.join(format!("{user}-nats-password"));
    // Trailing newline as `echo` writes it: the services strip it.
    std::fs::write(&file, format!("{password}\n")).unwrap();
    format!(
        "[nats]\nurl = {url:?}\nuser = {user:?}\npassword_file = {:?}\n",
        file.display().to_string()
    )
}

/// A `[nats]` table that logs in with an nkey seed file (written into `dir`).
fn nkey_login(url: &str, name: &str, seed: &str, dir: &Path) -> String {
    let file = dir.join(format!("{name}.nkey"));
    std::fs::write(&file, seed).unwrap();
    format!(
        "[nats]\nurl = {url:?}\nnkey_seed_file = {:?}\n",
        file.display().to_string()
    )
}

/// The stream limits come from the collector's defaults.
const COLLECTOR_TOML: &str = r#"
[[clusters]]
name = "demo"
endpoints = ["https://127.0.0.1:8006"]
token_id = "proxbalance@pve!collector"
insecure_skip_verify = true
"#;

#[tokio::test]
async fn each_account_gets_exactly_its_rights() {
    let deployed = deploy();
    let url = deployed.server.url();
    let subjects = Subjects::default();

    // ---------------------------------------------------------------- collector
    // Logged in with the collector's own settings (user + password file) and connection code;
    // stream creation and publishing are the collector's own code too.
    let secrets = tempfile::tempdir().unwrap();
    let collector_cfg = CollectorConfig::from_toml(&format!(
        "{}{COLLECTOR_TOML}",
        password_login(&url, "collector", COLLECTOR_PASSWORD, secrets.path())
    ))
    .unwrap();
    let (collector, mut collector_errors) = connect(
        proxbalance_runtime::nats_connect_options(
            &collector_cfg.nats.connection(),
            "proxbalance-collector",
        )
        .await
        .unwrap(),
        &url,
    )
    .await;
    let limits = collector_cfg.nats.stream_limits();
    // Creates PROXBALANCE_SNAPSHOTS and PROXBALANCE_HISTORY (STREAM.INFO, then STREAM.CREATE).
    let publisher = Publisher::new(
        collector.clone(),
        subjects.clone(),
        &limits,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    // Each publish returns only once the stream acknowledged it.
    let snap = snapshot();
    let message = |subject: String, msg_id: String, message_type, payload: Vec<u8>| OutMessage {
        stream: if message_type == "proxbalance.v1.NodeHistory" {
            subjects.history_stream()
        } else {
            subjects.snapshots_stream()
        },
        subject,
        msg_id,
        message_type,
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        content_encoding: None,
        payload: payload.into(),
    };
    publisher
        .publish(&message(
            subjects.snapshot("demo", "pve6"),
            headers::snapshot_msg_id("demo", "pve6", 7),
            "proxbalance.v1.NodeSnapshot",
            proxbalance_proto::encode(&snap),
        ))
        .await
        .unwrap();
    let hist = history();
    publisher
        .publish(&message(
            subjects.history("demo", "pve6"),
            headers::history_msg_id("demo", "pve6", hist.collected_at_unix_ms),
            "proxbalance.v1.NodeHistory",
            proxbalance_proto::encode(&hist),
        ))
        .await
        .unwrap();
    // Stream look-up on an existing stream also works (a restarted collector).
    Publisher::new(
        collector.clone(),
        subjects.clone(),
        &limits,
        Duration::from_secs(5),
    )
    .await
    .unwrap();

    // Everything else is refused to the collector.
    assert_publish_refused(
        &collector,
        &mut collector_errors,
        &[
            "proxbalance.v1.event.x",
            "proxbalance.v1.event.overload.demo.pve6",
            "proxbalance.v2.snapshot.demo.pve6",
            "other.subject",
            "$JS.API.STREAM.CREATE.PROXBALANCE_EVENTS",
            "$JS.API.STREAM.UPDATE.PROXBALANCE_SNAPSHOTS",
            "$JS.API.STREAM.DELETE.PROXBALANCE_SNAPSHOTS",
            "$JS.API.STREAM.PURGE.PROXBALANCE_HISTORY",
            "$JS.API.CONSUMER.CREATE.PROXBALANCE_SNAPSHOTS",
        ],
    )
    .await;
    assert_subscribe_refused(
        &collector,
        &mut collector_errors,
        // Nor another's replies: each service has an inbox prefix of its own.
        &[
            "proxbalance.v1.snapshot.>",
            "proxbalance.v1.event.>",
            ">",
            "_INBOX.>",
            "_INBOX_recommender.>",
            "_INBOX_events.>",
        ],
    )
    .await;

    // ---------------------------------------------------------------- event consumer, listening
    let (events, mut events_errors) = connect(
        ConnectOptions::with_nkey(deployed.events_seed.clone())
            .custom_inbox_prefix("_INBOX_events"),
        &url,
    )
    .await;
    let mut live = events.subscribe(subjects.all_events()).await.unwrap();
    events.flush().await.unwrap();

    // ---------------------------------------------------------------- recommender
    let recommender_cfg = RecommenderConfig::from_toml(&password_login(
        &url,
        "recommender",
        RECOMMENDER_PASSWORD,
        secrets.path(),
    ))
    .unwrap();
    let (recommender, mut recommender_errors) = connect(
        proxbalance_runtime::nats_connect_options(
            &recommender_cfg.nats.connection(),
            "proxbalance-recommender",
        )
        .await
        .unwrap(),
        &url,
    )
    .await;
    let js = jetstream::new(recommender.clone());
    let mut snapshots = js.get_stream(SNAPSHOTS_STREAM).await.unwrap();
    let info = snapshots.info().await.unwrap();
    assert_eq!(
        info.config.subjects,
        vec![
            "proxbalance.v1.snapshot.>".to_owned(),
            "proxbalance.v1.cluster.*".to_owned()
        ]
    );
    // Only the one snapshot: the collector's refused STREAM.DELETE changed nothing.
    assert_eq!(info.state.messages, 1);

    let consumer: consumer::PullConsumer = snapshots
        .create_consumer(consumer::pull::Config {
            name: Some("recommender-replay".into()),
            filter_subject: subjects.all_snapshots(),
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(WAIT)
        .messages()
        .await
        .unwrap();
    let msg = batch.next().await.unwrap().unwrap();
    assert_eq!(msg.subject.as_str(), "proxbalance.v1.snapshot.demo.pve6");
    assert_eq!(
        msg.headers
            .as_ref()
            .and_then(|h| h.get(headers::MSG_ID))
            .map(|v| v.as_str().to_owned()),
        Some("snapshot:demo:pve6:7".to_owned())
    );
    let got: NodeSnapshot = proxbalance_proto::decode(&msg.payload).unwrap();
    assert_eq!(got, snap);
    // The acknowledgement reaches the server (double_ack waits for its confirmation).
    msg.double_ack().await.unwrap();
    assert_eq!(consumer.clone().info().await.unwrap().num_ack_pending, 0);

    // The latest history per node, by direct get (the stream allows it).
    let history_stream = js.get_stream(HISTORY_STREAM).await.unwrap();
    let last = history_stream
        .direct_get_last_for_subject(subjects.history("demo", "pve6"))
        .await
        .unwrap();
    let got: NodeHistory = proxbalance_proto::decode(&last.payload).unwrap();
    assert_eq!(got, hist);

    // The recommender owns PROXBALANCE_EVENTS and publishes events with acknowledgement.
    js.get_or_create_stream(stream::Config {
        name: EVENTS_STREAM.into(),
        subjects: vec![subjects.all_events()],
        storage: stream::StorageType::File,
        max_age: Duration::from_secs(24 * 3600),
        ..Default::default()
    })
    .await
    .unwrap();
    let event = overload_event();
    let event_subject = subjects.overload("demo", "pve6");
    let ack = js
        .publish(
            event_subject.clone(),
            proxbalance_proto::encode(&event).into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ack.stream, EVENTS_STREAM);
    assert_eq!(ack.sequence, 1);

    assert_publish_refused(
        &recommender,
        &mut recommender_errors,
        &[
            "proxbalance.v1.snapshot.demo.pve6",
            "proxbalance.v1.history.demo.pve6",
            "proxbalance.v1.cluster.demo",
            "other.subject",
            "$JS.API.STREAM.CREATE.PROXBALANCE_SNAPSHOTS",
            "$JS.API.STREAM.DELETE.PROXBALANCE_SNAPSHOTS",
            "$JS.API.STREAM.PURGE.PROXBALANCE_HISTORY",
        ],
    )
    .await;
    assert_subscribe_refused(
        &recommender,
        &mut recommender_errors,
        &[
            ">",
            "other.>",
            "_INBOX.>",
            "_INBOX_collector.>",
            "_INBOX_events.>",
        ],
    )
    .await;

    // ---------------------------------------------------------------- event consumer
    // Live, over core NATS.
    let got = tokio::time::timeout(WAIT, live.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.subject.as_str(), event_subject);
    assert_eq!(
        proxbalance_proto::decode::<OverloadEvent>(&got.payload).unwrap(),
        event
    );

    // After the fact, through a durable JetStream consumer.
    let events_js = jetstream::new(events.clone());
    let events_stream = events_js.get_stream(EVENTS_STREAM).await.unwrap();
    let audit: consumer::PullConsumer = events_stream
        .get_or_create_consumer(
            "audit",
            consumer::pull::Config {
                durable_name: Some("audit".into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut batch = audit
        .fetch()
        .max_messages(1)
        .expires(WAIT)
        .messages()
        .await
        .unwrap();
    let msg = batch.next().await.unwrap().unwrap();
    assert_eq!(msg.subject.as_str(), event_subject);
    assert_eq!(
        proxbalance_proto::decode::<OverloadEvent>(&msg.payload).unwrap(),
        event
    );
    msg.double_ack().await.unwrap();
    let mut audit = audit;
    let audit_info = audit.info().await.unwrap();
    assert_eq!(
        (
            audit_info.num_ack_pending,
            audit_info.ack_floor.stream_sequence
        ),
        (0, 1)
    );

    // … and it can publish nothing, nor read anything but events.
    assert_publish_refused(
        &events,
        &mut events_errors,
        &[
            "proxbalance.v1.event.overload.demo.pve6",
            "proxbalance.v1.event.x",
            "proxbalance.v1.snapshot.demo.pve6",
            "other.subject",
            "$JS.API.STREAM.CREATE.PROXBALANCE_EVENTS",
            "$JS.API.STREAM.DELETE.PROXBALANCE_EVENTS",
            "$JS.API.STREAM.INFO.PROXBALANCE_SNAPSHOTS",
            "$JS.API.CONSUMER.CREATE.PROXBALANCE_SNAPSHOTS",
            "$JS.API.CONSUMER.MSG.NEXT.PROXBALANCE_SNAPSHOTS.recommender-replay",
        ],
    )
    .await;
    assert_subscribe_refused(
        &events,
        &mut events_errors,
        &[
            "proxbalance.v1.snapshot.>",
            "proxbalance.v1.>",
            "_INBOX.>",
            "_INBOX_collector.>",
            "_INBOX_recommender.>",
            ">",
        ],
    )
    .await;

    // No other error happened on any connection.
    for (client, errors) in [
        (&collector, &mut collector_errors),
        (&recommender, &mut recommender_errors),
        (&events, &mut events_errors),
    ] {
        assert_publish_refused(client, errors, &["sentinel"]).await;
        assert!(errors.try_recv().is_err());
    }
}

#[tokio::test]
async fn unknown_users_wrong_passwords_and_unknown_nkeys_are_refused() {
    let deployed = deploy();
    let url = deployed.server.url();
    let attempts = [
        ConnectOptions::new(),
        ConnectOptions::with_user_and_password("collector".into(), "wrong".into()),
        ConnectOptions::with_user_and_password("recommender".into(), COLLECTOR_PASSWORD.into()),
        ConnectOptions::with_user_and_password("events".into(), "".into()),
        ConnectOptions::with_nkey(nkeys::KeyPair::new_user().seed().unwrap()),
    ];
    for (i, opts) in attempts.into_iter().enumerate() {
        let err = opts
            .connect(url.as_str())
            .await
            .map(|_| ())
            .expect_err(&format!("attempt {i} connected"));
        assert_eq!(
            err.kind(),
            async_nats::ConnectErrorKind::AuthorizationViolation,
            "attempt {i}: {err}"
        );
    }
}

#[test]
fn the_secrets_are_required_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let conf = shipped_config(dir.path());
    let err = NatsServer::start_with_config(
        &conf,
        None,
        &[
            ("COLLECTOR_PASSWORD", COLLECTOR_PASSWORD),
            ("EVENTS_NKEY", &nkeys::KeyPair::new_user().public_key()),
        ],
    )
    .unwrap_err();
    match err {
        HarnessError::ConfigRejected { log, .. } => assert!(
            log.contains("variable reference for 'RECOMMENDER_PASSWORD'"),
            "{log}"
        ),
        other => panic!("expected ConfigRejected, got {other}"),
    }
}

// ------------------------------------------------------------------------ the real services

const DEMO: &str = include_str!("../../../../deploy/demo-scenario.toml");
const PVE_TOKEN_ID: &str = "proxbalance@pve!collector";
const PVE_TOKEN_SECRET: &str = "5f0c8a8e-2b1d-4c3e-9a77-0d1e2f3a4b5c";

/// The shipped file with the `collector` and `recommender` users switched to nkey login, as the
/// file's header describes (the permissions stay the same).
fn nkey_variant(dir: &Path) -> PathBuf {
    let path = shipped_config(dir);
    let text = std::fs::read_to_string(&path).unwrap();
    let text = replace_once(
        &text,
        "{ user: collector, password: $COLLECTOR_PASSWORD, permissions: $COLLECTOR_PERMISSIONS }",
        "{ nkey: $COLLECTOR_NKEY, permissions: $COLLECTOR_PERMISSIONS }",
    );
    let text = replace_once(
        &text,
        "{ user: recommender, password: $RECOMMENDER_PASSWORD, permissions: $RECOMMENDER_PERMISSIONS }",
        "{ nkey: $RECOMMENDER_NKEY, permissions: $RECOMMENDER_PERMISSIONS }",
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the collector (`run`) and the recommender (`start`) with the given `[nats]` tables
/// against pvesim and the server at `url`, and checks that one cycle travels from the PVE API
/// to gRPC and, as `RecommendationsChanged`, to the event consumer logged in with `events`
/// (its inbox prefix is set here). Then checks, through connections made with the services' own
/// settings, that each is refused a subject outside its rights.
async fn run_services(
    url: &str,
    collector_nats: &str,
    recommender_nats: &str,
    events: ConnectOptions,
    dir: &Path,
) {
    proxbalance_runtime::install_crypto_provider();
    let mut scenario = pvesim::Scenario::from_toml_str(DEMO).unwrap();
    scenario.cluster.acceleration = 0.0;
    let sim = pvesim::Simulator::start(scenario, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let token_file = dir.join("pve-token");
    std::fs::write(&token_file, PVE_TOKEN_SECRET).unwrap();
    let collector_cfg = CollectorConfig::from_toml(&format!(
        "{collector_nats}\n[[clusters]]\nname = \"demo\"\nendpoints = [\"https://{}\"]\ntoken_id = {PVE_TOKEN_ID:?}\ntoken_secret_file = {:?}\nfingerprint = {:?}\ninterval_s = 0.5\n",
        sim.local_addr(),
        token_file.display().to_string(),
        sim.fingerprint_sha256(),
    ))
    .unwrap();
    let recommender_cfg = RecommenderConfig::from_toml(&format!(
        "{recommender_nats}\n[grpc]\nlisten = \"127.0.0.1:0\"\n"
    ))
    .unwrap();

    // The event consumer listens before anything happens.
    let (events, _events_errors) = connect(events.custom_inbox_prefix("_INBOX_events"), url).await;
    let mut live = events
        .subscribe("proxbalance.v1.event.recommendations.demo")
        .await
        .unwrap();
    events.flush().await.unwrap();

    // The collector's streams exist before the recommender starts (made by the collector's own
    // connection and publisher code), and the recommender's replay of them — empty — ends
    // before the first cycle: a cycle applied while replaying is recomputed without an event.
    let nc = proxbalance_collector::app::connect_nats(&collector_cfg)
        .await
        .unwrap()
        .client;
    Publisher::new(
        nc,
        Subjects::default(),
        &collector_cfg.nats.stream_limits(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let recommender = proxbalance_recommender::start(recommender_cfg.clone(), shutdown.clone())
        .await
        .unwrap();
    let mut notices = recommender.shared().changes.subscribe();
    // `ready` has no notification of its own; it turns true within milliseconds.
    tokio::time::timeout(WAIT, async {
        while !recommender
            .shared()
            .ready
            .load(std::sync::atomic::Ordering::Acquire)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the recommender's replay did not end");
    let grpc_addr = recommender.grpc_addr();
    let collector = tokio::spawn(proxbalance_collector::run(
        collector_cfg.clone(),
        shutdown.clone(),
    ));

    // The first recomputation of the demo cluster changes the (empty) set of moves.
    let notice = tokio::time::timeout(WAIT, notices.recv())
        .await
        .expect("no recomputation within the wait")
        .unwrap();
    assert!(notice.changed);
    assert_eq!(notice.event.cluster, "demo");
    let mut added = notice.event.added_vmids.clone();
    added.sort_unstable();
    assert!(!added.is_empty());

    // gRPC serves that set.
    let mut client = proxbalance_proto::v1::recommender_client::RecommenderClient::connect(
        format!("http://{grpc_addr}"),
    )
    .await
    .unwrap();
    let set = client
        .get_recommendations(proxbalance_proto::v1::GetRecommendationsRequest {
            cluster: "demo".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .set
        .unwrap();
    let mut vmids: Vec<u32> = set.recommendations.iter().map(|r| r.vmid).collect();
    vmids.sort_unstable();
    assert_eq!(vmids, added);

    // The event reached the consumer through the server's permissions.
    let msg = tokio::time::timeout(WAIT, live.next())
        .await
        .expect("no event within the wait")
        .unwrap();
    assert_eq!(
        msg.subject.as_str(),
        "proxbalance.v1.event.recommendations.demo"
    );
    let got: proxbalance_proto::v1::RecommendationsChanged =
        proxbalance_proto::decode(&msg.payload).unwrap();
    assert_eq!(got.added_vmids, notice.event.added_vmids);

    // With the same settings, each service is refused what its account may not do.
    let (c, mut c_errors) = connect(
        proxbalance_runtime::nats_connect_options(&collector_cfg.nats.connection(), "probe")
            .await
            .unwrap(),
        url,
    )
    .await;
    assert_publish_refused(
        &c,
        &mut c_errors,
        &[
            "proxbalance.v1.event.recommendations.demo",
            "$JS.API.STREAM.DELETE.PROXBALANCE_SNAPSHOTS",
        ],
    )
    .await;
    let (r, mut r_errors) = connect(
        proxbalance_runtime::nats_connect_options(&recommender_cfg.nats.connection(), "probe")
            .await
            .unwrap(),
        url,
    )
    .await;
    assert_publish_refused(
        &r,
        &mut r_errors,
        &[
            "proxbalance.v1.snapshot.demo.pve1",
            "$JS.API.STREAM.DELETE.PROXBALANCE_SNAPSHOTS",
        ],
    )
    .await;

    shutdown.cancel();
    collector.await.unwrap().unwrap();
    recommender.wait().await.unwrap();
}

#[tokio::test]
async fn the_real_services_log_in_with_password_files() {
    let deployed = deploy();
    let dir = tempfile::tempdir().unwrap();
    let url = deployed.server.url();
    run_services(
        &url,
        &password_login(&url, "collector", COLLECTOR_PASSWORD, dir.path()),
        &password_login(&url, "recommender", RECOMMENDER_PASSWORD, dir.path()),
        ConnectOptions::with_nkey(deployed.events_seed.clone()),
        dir.path(),
    )
    .await;
}

#[tokio::test]
async fn the_real_services_log_in_with_nkey_seed_files() {
    let dir = tempfile::tempdir().unwrap();
    let conf = nkey_variant(dir.path());
    let collector_key = nkeys::KeyPair::new_user();
    let recommender_key = nkeys::KeyPair::new_user();
    let events_key = nkeys::KeyPair::new_user();
    let server = NatsServer::start_with_config(
        &conf,
        None,
        &[
            ("COLLECTOR_NKEY", &collector_key.public_key()),
            ("RECOMMENDER_NKEY", &recommender_key.public_key()),
            ("EVENTS_NKEY", &events_key.public_key()),
        ],
    )
    .unwrap();
    let url = server.url();
    run_services(
        &url,
        &nkey_login(
            &url,
            "collector",
            &collector_key.seed().unwrap(),
            dir.path(),
        ),
        &nkey_login(
            &url,
            "recommender",
            &recommender_key.seed().unwrap(),
            dir.path(),
        ),
        ConnectOptions::with_nkey(events_key.seed().unwrap()),
        dir.path(),
    )
    .await;
}

// ------------------------------------------------------------------------ operator mode (JWT)

/// A permission set of the shipped file (e.g. `COLLECTOR_PERMISSIONS`) as the `pub` and `sub`
/// of a user JWT: in operator mode the account grants each user the rights the file grants.
fn shipped_permissions(set: &str) -> (serde_json::Value, serde_json::Value) {
    let text = std::fs::read_to_string(deploy_dir().join("nats-server.conf")).unwrap();
    let head = format!("\n{set} = {{\n");
    assert_eq!(
        text.matches(&head).count(),
        1,
        "deploy/nats-server.conf: expected exactly one {set}"
    );
    let block = &text[text.find(&head).unwrap() + head.len()..];
    let block = &block[..block.find("\n}\n").unwrap()];
    // Only allow lists are carried over: a deny list would be silently lost.
    assert!(!block.contains("deny"), "{set}: {block}");
    let (publish, subscribe) = block.split_once("\n  subscribe: {").unwrap();
    let allow = |part: &str| {
        let subjects: Vec<&str> = part
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .flat_map(|l| l.split('"').skip(1).step_by(2))
            .collect();
        assert!(!subjects.is_empty(), "{set}: no subject in {part}");
        serde_json::json!({ "allow": subjects })
    };
    (allow(publish), allow(subscribe))
}

/// A `[nats]` table that logs in with a credentials file (written into `dir`).
fn credentials_login(url: &str, name: &str, creds: &str, dir: &Path) -> String {
    let file = dir.join(format!("{name}.creds"));
    std::fs::write(&file, creds).unwrap();
    format!(
        "[nats]\nurl = {url:?}\ncredentials_file = {:?}\n",
        file.display().to_string()
    )
}

/// A nats-server in operator mode: it trusts one operator, whose account `PROXBALANCE`
/// (JetStream enabled) issues the users; the configuration names no user.
struct OperatorMode {
    server: NatsServer,
    /// The account's key pair, which signs the user JWTs.
    account: nkeys::KeyPair,
    dir: tempfile::TempDir,
}

fn operator_mode() -> OperatorMode {
    let dir = tempfile::tempdir().unwrap();
    let mut operator = jwt::Operator::new();
    let account = operator.account("PROXBALANCE");
    let conf = operator.write_server_config(dir.path()).unwrap();
    let server = NatsServer::start_with_config(&conf, None, &[]).unwrap();
    let log = server.log();
    assert!(log.contains("Trusted Operators"), "{log}");
    assert!(log.contains("Starting JetStream"), "{log}");
    OperatorMode {
        server,
        account,
        dir,
    }
}

/// Credentials of a new user of `account` with the rights of the shipped permission set `set`.
fn user_creds(account: &nkeys::KeyPair, name: &str, set: &str) -> String {
    let user = nkeys::KeyPair::new_user();
    let (publish, subscribe) = shipped_permissions(set);
    jwt::creds(
        &jwt::user_jwt(account, &user, name, jwt::user_nats(publish, subscribe)),
        &user,
    )
}

#[tokio::test]
async fn the_real_services_log_in_with_credentials_files() {
    let op = operator_mode();
    let url = op.server.url();
    let dir = op.dir.path();
    run_services(
        &url,
        &credentials_login(
            &url,
            "collector",
            &user_creds(&op.account, "collector", "COLLECTOR_PERMISSIONS"),
            dir,
        ),
        &credentials_login(
            &url,
            "recommender",
            &user_creds(&op.account, "recommender", "RECOMMENDER_PERMISSIONS"),
            dir,
        ),
        ConnectOptions::with_credentials(&user_creds(&op.account, "events", "EVENTS_PERMISSIONS"))
            .unwrap(),
        dir,
    )
    .await;
}

#[tokio::test]
async fn credentials_not_signed_by_a_trusted_account_are_refused() {
    let op = operator_mode();
    let url = op.server.url();
    let dir = op.dir.path();
    let all = || jwt::user_nats(serde_json::json!({}), serde_json::json!({}));
    let user = nkeys::KeyPair::new_user();
    let other_user = nkeys::KeyPair::new_user();
    let stranger = nkeys::KeyPair::new_account();
    let valid = jwt::user_jwt(&op.account, &user, "valid", all());
    // Each case with the reason the server logs (at debug level) for refusing it.
    let cases = [
        // Names the trusted account as issuer, but another key signed it.
        (
            "forged",
            jwt::encode(
                &jwt::claims(
                    &op.account.public_key(),
                    &user.public_key(),
                    "forged",
                    all(),
                ),
                &stranger,
            ),
            &user,
            "User JWT not valid: claim failed V2 signature verification",
        ),
        // Issued and signed by an account the operator never signed.
        (
            "unknown-account",
            jwt::user_jwt(&stranger, &user, "stranger", all()),
            &user,
            "Account JWT lookup error: account missing",
        ),
        // The valid JWT without its signature.
        (
            "unsigned",
            valid[..=valid.rfind('.').unwrap()].to_owned(),
            &user,
            "User JWT not valid: claim failed V2 signature verification",
        ),
        // The valid JWT with the seed of another user: the nonce signature does not match.
        (
            "other-seed",
            valid.clone(),
            &other_user,
            "Signature not verified",
        ),
    ];
    let never = tokio_util::sync::CancellationToken::new();
    for (name, user_jwt, key, reason) in cases {
        let log_before = op.server.log().len();
        let creds = jwt::creds(&user_jwt, key);
        let seed = key.seed().unwrap();
        assert!(creds.contains(&seed));

        let err = ConnectOptions::with_credentials(&creds)
            .unwrap()
            .connect(url.as_str())
            .await
            .map(|_| ())
            .expect_err(name);
        assert_eq!(
            err.kind(),
            async_nats::ConnectErrorKind::AuthorizationViolation,
            "{name}: {err}"
        );

        // Both services refuse to start, naming NATS and its URL, never the seed.
        let nats = credentials_login(&url, name, &creds, dir);
        let expected = format!(
            "cannot connect to NATS at {url}: authorization violation: nats: authorization violation"
        );
        let collector = proxbalance_collector::run(
            CollectorConfig::from_toml(&format!("{nats}{COLLECTOR_TOML}")).unwrap(),
            never.clone(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                collector,
                proxbalance_collector::app::RunError::Connect { .. }
            ),
            "{name}: {collector}"
        );
        let recommender = proxbalance_recommender::start(
            RecommenderConfig::from_toml(&format!("{nats}[grpc]\nlisten = \"127.0.0.1:0\"\n"))
                .unwrap(),
            never.clone(),
        )
        .await
        .map(|_| ())
        .unwrap_err();
        for text in [
            collector.to_string(),
            format!("{collector:?}"),
            recommender.to_string(),
            format!("{recommender:?}"),
        ] {
            assert!(!text.contains(&seed), "{name}: seed in {text}");
        }
        assert_eq!(collector.to_string(), expected, "{name}");
        assert_eq!(recommender.to_string(), expected, "{name}");

        // Three refused logins (plain client, collector, recommender), each for that reason;
        // the server logs it before it answers the client.
        let log = op.server.log();
        let log = &log[log_before..];
        assert_eq!(log.matches(reason).count(), 3, "{name}: {log}");
        assert_eq!(
            log.matches("authentication error").count(),
            3,
            "{name}: {log}"
        );
    }

    // The same server lets the valid credentials in: the refusals are the credentials'.
    let client = ConnectOptions::with_credentials(&jwt::creds(&valid, &user))
        .unwrap()
        .connect(url.as_str())
        .await
        .unwrap();
    client.flush().await.unwrap();
    assert!(
        op.server
            .log()
            .contains("(claim-name: \"valid\", claim-tags: []) signed with"),
        "{}",
        op.server.log()
    );
}
