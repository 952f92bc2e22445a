//! `deploy/nats-server.conf` against a real nats-server (Debian's 2.9.10 in CI): the file is run
//! as shipped, except for its port (random), monitoring port (random) and JetStream store
//! directory (temporary), with the secrets it reads from the environment.
//!
//! - the collector, through its own connection code and publisher, creates its streams and
//!   publishes with acknowledgement, and is refused every other subject;
//! - the recommender reads the snapshot and the history, creates the events stream and
//!   publishes an event, and cannot forge snapshots or touch the collector's streams;
//! - an event consumer (an nkey user) receives the event over core NATS and through a durable
//!   JetStream consumer, and can publish nothing and read nothing else.
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
use proxbalance_e2e::{HarnessError, NatsServer};
use proxbalance_proto::headers;
use proxbalance_proto::subjects::{EVENTS_STREAM, HISTORY_STREAM, SNAPSHOTS_STREAM, Subjects};
use proxbalance_proto::v1::{NodeHistory, NodeSnapshot, OverloadEvent};
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
    // The collector's configuration has no user/password or nkey settings yet (only a JWT
    // credentials file, which a server without an operator ignores), so the connection is made
    // here; stream creation and publishing are the collector's own code.
    let (collector, mut collector_errors) = connect(
        ConnectOptions::with_user_and_password("collector".into(), COLLECTOR_PASSWORD.into())
            .name("proxbalance-collector"),
        &url,
    )
    .await;
    let limits = CollectorConfig::from_toml(COLLECTOR_TOML)
        .unwrap()
        .nats
        .stream_limits();
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
    publisher
        .publish(
            subjects.snapshot("demo", "pve6"),
            headers::snapshot_msg_id("demo", "pve6", 7),
            "proxbalance.v1.NodeSnapshot",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            proxbalance_proto::encode(&snap),
        )
        .await
        .unwrap();
    let hist = history();
    publisher
        .publish(
            subjects.history("demo", "pve6"),
            headers::history_msg_id("demo", "pve6", hist.collected_at_unix_ms),
            "proxbalance.v1.NodeHistory",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            proxbalance_proto::encode(&hist),
        )
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
        &["proxbalance.v1.snapshot.>", "proxbalance.v1.event.>", ">"],
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
    let (recommender, mut recommender_errors) = connect(
        ConnectOptions::with_user_and_password("recommender".into(), RECOMMENDER_PASSWORD.into()),
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
        Some("demo:pve6:7".to_owned())
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
    assert_subscribe_refused(&recommender, &mut recommender_errors, &[">", "other.>"]).await;

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
