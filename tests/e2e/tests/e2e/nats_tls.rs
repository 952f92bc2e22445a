//! NATS over TLS for both services: a nats-server with a certificate from a test CA (rcgen),
//! then with client verification (`verify: true`). The services connect with `nats.tls_ca_file`
//! (and `nats.tls_cert_file`/`tls_key_file` for mutual TLS); a CA that did not sign the server's
//! certificate, or a missing client certificate, is refused.

use std::path::Path;

use proxbalance_collector::config::Config as CollectorConfig;
use proxbalance_e2e::NatsServer;
use proxbalance_e2e::pki::TestPki;
use proxbalance_recommender::Config as RecommenderConfig;
use tokio_util::sync::CancellationToken;

fn tls_server(dir: &Path, pki: &TestPki, verify: bool) -> NatsServer {
    let conf = dir.join("tls.conf");
    std::fs::write(
        &conf,
        format!(
            "port: 4222\njetstream {{ store_dir: {:?} }}\ntls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: {verify}\n  timeout: 5\n}}\n",
            dir.join("js").display().to_string(),
            pki.server_cert.display().to_string(),
            pki.server_key.display().to_string(),
            pki.ca.display().to_string(),
        ),
    )
    .unwrap();
    NatsServer::start_with_config(&conf, None, &[]).unwrap()
}

fn collector(url: &str, nats: &str) -> CollectorConfig {
    CollectorConfig::from_toml(&format!(
        "[nats]\nurl = {url:?}\nconnect_timeout_ms = 3000\n{nats}\n[[clusters]]\nname = \"x\"\nendpoints = [\"https://127.0.0.1:1\"]\ntoken_id = \"a@b!c\"\ninsecure_skip_verify = true\n"
    ))
    .unwrap()
}

fn recommender(url: &str, nats: &str) -> RecommenderConfig {
    RecommenderConfig::from_toml(&format!(
        "[nats]\nurl = {url:?}\nconnect_timeout_ms = 3000\n{nats}\n[grpc]\nlisten = \"127.0.0.1:0\"\n"
    ))
    .unwrap()
}

fn ca_line(path: &Path) -> String {
    format!("tls_ca_file = {:?}\n", path.display().to_string())
}

/// Both services log in; the recommender creates its events stream over the TLS connection,
/// the collector publishes with acknowledgement.
async fn both_connect(url: &str, nats: &str) {
    let c = proxbalance_collector::app::connect_nats(&collector(url, nats))
        .await
        .unwrap()
        .client;
    let ack = async_nats::jetstream::new(c.clone())
        .get_or_create_stream(async_nats::jetstream::stream::Config {
            name: "TLS_CHECK".into(),
            subjects: vec!["tls.check".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ack.cached_info().config.name, "TLS_CHECK");
    let shutdown = CancellationToken::new();
    let running = proxbalance_recommender::start(recommender(url, nats), shutdown.clone())
        .await
        .unwrap();
    shutdown.cancel();
    running.wait().await.unwrap();
}

async fn both_refused(url: &str, nats: &str) -> (String, String) {
    let c = proxbalance_collector::app::connect_nats(&collector(url, nats))
        .await
        .unwrap_err()
        .to_string();
    let r = proxbalance_recommender::start(recommender(url, nats), CancellationToken::new())
        .await
        .unwrap_err()
        .to_string();
    (c, r)
}

#[tokio::test]
async fn services_connect_over_tls_with_the_ca_file_and_refuse_another_ca() {
    proxbalance_runtime::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path(), "nats").unwrap();
    let other = TestPki::generate(dir.path(), "other").unwrap();
    let server = tls_server(dir.path(), &pki, false);
    let url = server.url();

    both_connect(&url, &ca_line(&pki.ca)).await;
    // A `tls://` URL with the CA file is the same.
    both_connect(
        &format!("tls://127.0.0.1:{}", server.port()),
        &ca_line(&pki.ca),
    )
    .await;

    let prefix = format!("cannot connect to NATS at {url}: ");
    let (c, r) = both_refused(&url, &ca_line(&other.ca)).await;
    for e in [&c, &r] {
        assert!(e.starts_with(&prefix), "{e}");
        assert!(e.contains("UnknownIssuer"), "{e}");
    }
}

#[tokio::test]
async fn mutual_tls_needs_a_client_certificate_of_the_servers_ca() {
    proxbalance_runtime::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path(), "nats").unwrap();
    let other = TestPki::generate(dir.path(), "other").unwrap();
    let server = tls_server(dir.path(), &pki, true);
    let url = server.url();
    let with_cert = |p: &TestPki| {
        format!(
            "{}tls_cert_file = {:?}\ntls_key_file = {:?}\n",
            ca_line(&pki.ca),
            p.client_cert.display().to_string(),
            p.client_key.display().to_string()
        )
    };

    both_connect(&url, &with_cert(&pki)).await;

    let prefix = format!("cannot connect to NATS at {url}: ");
    for nats in [ca_line(&pki.ca), with_cert(&other)] {
        let (c, r) = both_refused(&url, &nats).await;
        for e in [&c, &r] {
            assert_eq!(
                *e,
                format!("{prefix}IO error: received fatal alert: BadCertificate"),
                "{nats}"
            );
        }
    }
}
