//! The recommender's gRPC server with TLS, mutual TLS and a bearer token (`[grpc]`), and the
//! CLI's `--ca`, `--cert`, `--key` and `--token-file` against it. The recommender runs
//! in-process on a real nats-server; calls use `ListClusters` (answered without data) and the
//! health service (open to probes by design).

use std::path::Path;

use crate::support::cli;
use proxbalance_e2e::NatsServer;
use proxbalance_e2e::pki::TestPki;
use proxbalance_proto::v1 as pb;
use proxbalance_proto::v1::recommender_client::RecommenderClient;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const TOKEN: &str = "grpc-test-token-6a1f";
/// What the recommender answers for a cluster it has no data for: a call that got past TLS and
/// the token check.
const NO_DATA: &str = "recommender: Unavailable: cluster \"nope\": no data yet (the recommender is starting or no snapshot has arrived)";

struct Running {
    _nats: NatsServer,
    shutdown: CancellationToken,
    service: Option<proxbalance_recommender::RunningService>,
    port: u16,
}

impl Running {
    async fn start(grpc: &str) -> Running {
        proxbalance_runtime::install_crypto_provider();
        let nats = NatsServer::start().unwrap();
        let cfg = proxbalance_recommender::Config::from_toml(&format!(
            "[nats]\nurl = {:?}\n[grpc]\nlisten = \"127.0.0.1:0\"\n{grpc}",
            nats.url()
        ))
        .unwrap();
        let shutdown = CancellationToken::new();
        let service = proxbalance_recommender::start(cfg, shutdown.clone())
            .await
            .unwrap();
        let port = service.grpc_addr().port();
        Running {
            _nats: nats,
            shutdown,
            service: Some(service),
            port,
        }
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        self.service.take().unwrap().wait().await.unwrap();
    }
}

fn pem(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// A TLS channel trusting `ca`, with the client identity when given.
async fn tls_channel(
    port: u16,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem(ca)));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(pem(cert), pem(key)));
    }
    Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

async fn list(channel: Channel, token: Option<&str>) -> Result<Vec<String>, tonic::Status> {
    let mut client = RecommenderClient::new(channel);
    let mut req = tonic::Request::new(pb::ListClustersRequest::default());
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", t.parse().unwrap());
    }
    client.list_clusters(req).await.map(|r| {
        r.into_inner()
            .clusters
            .into_iter()
            .map(|c| c.name)
            .collect()
    })
}

async fn health(channel: Channel) -> Result<i32, tonic::Status> {
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|r| r.into_inner().status)
}

/// How a TLS client was turned away: the handshake failed while connecting (the client
/// refused the server), or the first call failed at the transport (the server refused the
/// client, or spoke no TLS). Returns the error chain as text for exact checks.
async fn refused(
    channel: Result<Channel, tonic::transport::Error>,
    token: Option<&str>,
) -> (&'static str, String) {
    use std::error::Error;
    let chain = |e: &dyn Error| {
        let mut text = e.to_string();
        let mut cur = e.source();
        while let Some(s) = cur {
            text.push_str(": ");
            text.push_str(&s.to_string());
            cur = s.source();
        }
        text
    };
    match channel {
        Err(e) => ("connect", chain(&e)),
        Ok(ch) => {
            let status = list(ch, token).await.unwrap_err();
            // In TLS 1.3 the client finishes its handshake before the server checks the client
            // certificate: the server's alert and closed connection reach the call either as a
            // transport error or as the cancelled request, depending on which is read first.
            let seen = (status.code(), status.message());
            assert!(
                seen == (Code::Unknown, "transport error")
                    || seen == (Code::Cancelled, "operation was canceled"),
                "{status:?}"
            );
            ("call", chain(&status))
        }
    }
}

#[tokio::test]
async fn bearer_token_refuses_missing_and_wrong_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let run = Running::start(&format!(
        "token_file = {:?}\n",
        token_file.display().to_string()
    ))
    .await;
    let channel = Endpoint::from_shared(format!("http://127.0.0.1:{}", run.port))
        .unwrap()
        .connect()
        .await
        .unwrap();

    let err = list(channel.clone(), None).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unauthenticated, "missing bearer token")
    );
    for wrong in [
        "Bearer grpc-test-token-6a1".to_owned(),
        format!("Bearer {TOKEN}x"),
        format!("Basic {TOKEN}"),
        TOKEN.to_owned(),
    ] {
        let err = list(channel.clone(), Some(&wrong)).await.unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (Code::Unauthenticated, "invalid bearer token"),
            "{wrong}"
        );
    }
    assert_eq!(
        list(channel.clone(), Some(&format!("Bearer {TOKEN}")))
            .await
            .unwrap(),
        Vec::<String>::new()
    );
    // Health stays open for probes (NOT_SERVING here: no data yet, but answered).
    assert_eq!(health(channel.clone()).await.unwrap(), 2);

    // The CLI: token from --token-file passes; without a token it is refused.
    let server = format!("127.0.0.1:{}", run.port);
    let base = ["state", "--server", &server, "--cluster", "nope"];
    let token_path = token_file.to_str().unwrap();
    let err = cli(&[&base[..], &["--token-file", token_path]].concat())
        .await
        .unwrap_err();
    // Past authentication: the recommender itself answers that it has no data for the cluster.
    assert_eq!(err.to_string(), NO_DATA);
    let err = cli(&base).await.unwrap_err().to_string();
    assert_eq!(err, "recommender: Unauthenticated: missing bearer token");
    run.stop().await;
}

#[tokio::test]
async fn tls_serves_only_tls_clients_that_trust_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path(), "grpc").unwrap();
    let other = TestPki::generate(dir.path(), "other").unwrap();
    let run = Running::start(&format!(
        "tls_cert_file = {:?}\ntls_key_file = {:?}\n",
        pki.server_cert.display().to_string(),
        pki.server_key.display().to_string()
    ))
    .await;

    let channel = tls_channel(run.port, &pki.ca, None).await.unwrap();
    assert_eq!(
        list(channel.clone(), None).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(health(channel).await.unwrap(), 2);

    // A client trusting another CA refuses the server.
    let (stage, text) = refused(tls_channel(run.port, &other.ca, None).await, None).await;
    assert_eq!(stage, "connect", "{text}");
    assert!(text.contains("UnknownIssuer"), "{text}");
    // Plain HTTP/2 is not answered.
    let plain = Endpoint::from_shared(format!("http://127.0.0.1:{}", run.port))
        .unwrap()
        .connect()
        .await;
    let (stage, text) = refused(plain, None).await;
    assert_eq!(stage, "call", "{text}");

    // The CLI with --ca.
    let server = format!("127.0.0.1:{}", run.port);
    let err = cli(&[
        "state",
        "--server",
        &server,
        "--cluster",
        "nope",
        "--ca",
        pki.ca.to_str().unwrap(),
    ])
    .await
    .unwrap_err();
    assert_eq!(err.to_string(), NO_DATA);
    run.stop().await;
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_of_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path(), "grpc").unwrap();
    let other = TestPki::generate(dir.path(), "other").unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let run = Running::start(&format!(
        "tls_cert_file = {:?}\ntls_key_file = {:?}\ntls_client_ca_file = {:?}\ntoken_file = {:?}\n",
        pki.server_cert.display().to_string(),
        pki.server_key.display().to_string(),
        pki.ca.display().to_string(),
        token_file.display().to_string(),
    ))
    .await;

    let with_cert = tls_channel(run.port, &pki.ca, Some((&pki.client_cert, &pki.client_key)))
        .await
        .unwrap();
    assert_eq!(
        list(with_cert.clone(), Some(&format!("Bearer {TOKEN}")))
            .await
            .unwrap(),
        Vec::<String>::new()
    );
    // TLS and the token are independent: the certificate alone is not enough.
    let err = list(with_cert, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // Without a client certificate, or with one of another CA, the handshake fails.
    let bearer = format!("Bearer {TOKEN}");
    for (identity, alert) in [
        (None, "received fatal alert: CertificateRequired"),
        (
            Some((other.client_cert.as_path(), other.client_key.as_path())),
            "received fatal alert: UnknownCA",
        ),
    ] {
        let (stage, text) = refused(
            tls_channel(run.port, &pki.ca, identity).await,
            Some(&bearer),
        )
        .await;
        assert_eq!(stage, "call", "{text}");
        assert!(
            text.contains(alert) || text.starts_with("status: Cancelled"),
            "{text}"
        );
    }

    // The CLI with --ca, --cert, --key and --token-file.
    let server = format!("127.0.0.1:{}", run.port);
    let base = [
        "state",
        "--server",
        &server,
        "--cluster",
        "nope",
        "--ca",
        pki.ca.to_str().unwrap(),
        "--token-file",
        token_file.to_str().unwrap(),
    ];
    let client = [
        "--cert",
        pki.client_cert.to_str().unwrap(),
        "--key",
        pki.client_key.to_str().unwrap(),
    ];
    let err = cli(&[&base[..], &client[..]].concat()).await.unwrap_err();
    assert_eq!(err.to_string(), NO_DATA);
    // Without --cert/--key the server ends the handshake.
    let err = cli(&base).await.unwrap_err();
    let err = err.to_string();
    assert!(
        err == "recommender: Unknown: transport error"
            || err == "recommender: Cancelled: operation was canceled",
        "{err}"
    );
    run.stop().await;
}

#[tokio::test]
async fn unusable_tls_and_token_settings_stop_the_start_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start().unwrap();
    let missing = dir.path().join("missing.pem");
    let cases = [
        (
            format!("token_file = {:?}\n", missing.display().to_string()),
            format!(
                "configuration, grpc.token_file: cannot read {}: No such file or directory (os error 2)",
                missing.display()
            ),
        ),
        (
            format!(
                "tls_cert_file = {:?}\ntls_key_file = {:?}\n",
                missing.display().to_string(),
                missing.display().to_string()
            ),
            format!(
                "configuration, grpc.tls_cert_file: cannot read {}: No such file or directory (os error 2)",
                missing.display()
            ),
        ),
        (
            "tls_client_ca_file = \"/x\"\n".to_owned(),
            "configuration, grpc.tls_client_ca_file: mutual TLS needs grpc.tls_cert_file and grpc.tls_key_file".to_owned(),
        ),
    ];
    for (grpc, expected) in cases {
        let err = proxbalance_recommender::Config::from_toml(&format!(
            "[nats]\nurl = {:?}\n[grpc]\nlisten = \"127.0.0.1:0\"\n{grpc}",
            nats.url()
        ))
        .map_err(proxbalance_recommender::ServiceError::from);
        let err = match err {
            Err(e) => e,
            Ok(cfg) => proxbalance_recommender::start(cfg, CancellationToken::new())
                .await
                .unwrap_err(),
        };
        assert_eq!(err.to_string(), expected);
    }
}
