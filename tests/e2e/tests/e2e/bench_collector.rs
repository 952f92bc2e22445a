//! Collector cycle figures on pvesim for `BENCHMARKS.md` (ignored by default; run with
//! `cargo test -p proxbalance-e2e --release --test e2e bench_collector:: -- --ignored --nocapture`).

use std::time::{Duration, Instant};

use proxbalance_collector::cycle::{ClusterCollector, CycleSettings};
use proxbalance_collector::publisher::{Publisher, StreamLimits};
use proxbalance_collector::pve::tls::parse_fingerprint;
use proxbalance_collector::pve::{ApiToken, PveClient, PveClientSettings, TlsVerification};
use proxbalance_e2e::NatsServer;
use proxbalance_proto::subjects::Subjects;
use pvesim::{DEFAULT_TOKEN_ID, DEFAULT_TOKEN_SECRET, Scenario, Simulator};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; prints figures"]
async fn cycle_figures() {
    proxbalance_collector::app::install_crypto_provider();
    let nats = NatsServer::start().unwrap();
    let nc = async_nats::connect(nats.url()).await.unwrap();
    let publisher = Publisher::new(
        nc,
        Subjects::default(),
        &StreamLimits::default(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    println!(
        "| nodes / guests | requests, first cycle | requests per cycle | cycle wall time (collect) | publish wall time |"
    );
    println!("|---|---|---|---|---|");
    for (nodes, guests) in [(8, 200), (32, 1000), (64, 4000)] {
        let sim = Simulator::start(
            Scenario::generated(nodes, guests, 11),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let client = PveClient::new(PveClientSettings {
            cluster: format!("bench{nodes}"),
            endpoints: vec![format!("https://{}", sim.local_addr())],
            token: ApiToken::new(DEFAULT_TOKEN_ID, DEFAULT_TOKEN_SECRET).unwrap(),
            tls: TlsVerification::Fingerprints(vec![
                parse_fingerprint(&sim.fingerprint_sha256()).unwrap(),
            ]),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            max_concurrency: 4,
        })
        .unwrap();
        let mut c = ClusterCollector::new(
            CycleSettings {
                cluster: format!("bench{nodes}"),
                guest_config_ttl: Duration::from_secs(600),
                guest_config_budget: 256,
                rrd_refresh: Duration::from_secs(60),
                history_interval: Duration::from_secs(3600),
                use_metrics_export: true,
            },
            client,
        );
        let first = c.collect().await;
        let mut times = Vec::new();
        let mut pub_times = Vec::new();
        let mut requests = Vec::new();
        for _ in 0..5 {
            sim.advance(10.0);
            let t = Instant::now();
            let out = c.collect().await;
            times.push(t.elapsed());
            let t = Instant::now();
            let report = publisher.publish_cycle(&out).await;
            pub_times.push(t.elapsed());
            assert_eq!(report.failed, 0);
            requests.push(out.status.api_requests);
        }
        times.sort();
        pub_times.sort();
        println!(
            "| {nodes} / {guests} | {} | {:?} | median {:.1} ms | median {:.1} ms |",
            first.status.api_requests,
            requests,
            times[2].as_secs_f64() * 1000.0,
            pub_times[2].as_secs_f64() * 1000.0
        );
        sim.shutdown().await;
    }
}
