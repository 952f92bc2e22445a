//! Bad gRPC requests: out-of-range and malformed overrides, unknown keys, an oversized request.
//! Each is refused with a status naming what is wrong (`INVALID_ARGUMENT`; `OUT_OF_RANGE` for a
//! request over the 4 MiB decoding limit, which tonic refuses before decoding), and the
//! service keeps answering.

use crate::support;

use proxbalance_e2e::NatsServer;
use proxbalance_proto::v1 as pb;
use support::Recommender;

fn request(overrides: pb::Overrides) -> pb::GetRecommendationsRequest {
    pb::GetRecommendationsRequest {
        cluster: "demo".into(),
        overrides: Some(overrides),
        ..Default::default()
    }
}

fn thresholds(cpu: f64) -> pb::Overrides {
    pb::Overrides {
        thresholds: Some(pb::Thresholds {
            cpu: Some(cpu),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn penalty(key: &str, value: &str) -> pb::Overrides {
    pb::Overrides {
        penalties: [(key.to_owned(), value.to_owned())].into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_a_status_and_never_crash() {
    let support::Live {
        rec,
        demo,
        nats: _nats,
        ..
    } = support::Live::start(|_| {}).await;
    let good = rec.recommendations("demo").await;

    let huge = "n".repeat(5 << 20);
    let cases: Vec<(pb::GetRecommendationsRequest, tonic::Code)> = vec![
        (request(thresholds(-5.0)), tonic::Code::InvalidArgument),
        (request(thresholds(250.0)), tonic::Code::InvalidArgument),
        (request(thresholds(f64::NAN)), tonic::Code::InvalidArgument),
        (
            request(penalty("no_such_key", "1")),
            tonic::Code::InvalidArgument,
        ),
        (
            request(penalty("min_score_improvement", "lots")),
            tonic::Code::InvalidArgument,
        ),
        (
            request(penalty("min_score_improvement", "-1e309")),
            tonic::Code::InvalidArgument,
        ),
        (
            request(pb::Overrides {
                preset: Some("reckless".into()),
                ..Default::default()
            }),
            tonic::Code::InvalidArgument,
        ),
        (
            request(pb::Overrides {
                maintenance_nodes: vec!["nope".into()],
                ..Default::default()
            }),
            tonic::Code::InvalidArgument,
        ),
        (
            request(pb::Overrides {
                maintenance_nodes: vec![huge],
                ..Default::default()
            }),
            tonic::Code::OutOfRange,
        ),
    ];
    let mut seen = Vec::new();
    for (req, code) in cases {
        let err = rec
            .client
            .clone()
            .get_recommendations(req)
            .await
            .expect_err("refused");
        seen.push(format!("{:?}: {}", err.code(), err.message()));
        assert_eq!(err.code(), code, "{seen:?}");
    }
    // The other methods with overrides: the same checks.
    let err = rec
        .client
        .clone()
        .get_migration_options(pb::GetMigrationOptionsRequest {
            cluster: "demo".into(),
            vmid: 601,
            overrides: Some(penalty("no_such_key", "1")),
        })
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "overrides.penalties.no_such_key: unknown key"
    );
    assert_eq!(
        seen,
        vec![
            "InvalidArgument: overrides.thresholds.cpu: must be within 1–100, got -5",
            "InvalidArgument: overrides.thresholds.cpu: must be within 1–100, got 250",
            "InvalidArgument: overrides.thresholds.cpu: must be within 1–100, got NaN",
            "InvalidArgument: overrides.penalties.no_such_key: unknown key",
            "InvalidArgument: overrides.penalties.min_score_improvement: must be a number",
            "InvalidArgument: overrides.penalties.min_score_improvement: must be a number",
            "InvalidArgument: overrides.preset: unknown preset \"reckless\" (expected conservative, balanced or aggressive)",
            "InvalidArgument: overrides.maintenance_nodes: no node named \"nope\" in the cluster",
            "OutOfRange: Error, decoded message length too large: found 5242896 bytes, the limit is: 4194304 bytes",
        ]
    );
    // Still serving, unchanged.
    assert_eq!(rec.recommendations("demo").await, good);
    rec.stop().await;
    demo.sim.shutdown().await;
}

/// Asks `$client` (a reflection client of version module `$v`) one question; the answer.
macro_rules! reflect {
    ($client:expr, $v:ident, $request:expr) => {{
        let request = $v::ServerReflectionRequest {
            host: String::new(),
            message_request: Some($request),
        };
        $client
            .server_reflection_info(futures_util::stream::iter([request]))
            .await
            .expect("reflection is served")
            .into_inner()
            .message()
            .await
            .expect("answer")
            .expect("one answer")
            .message_response
    }};
}

/// The sorted service names of a `ListServices` answer of version module `$v`.
macro_rules! listed {
    ($answer:expr, $v:ident) => {
        match $answer {
            Some($v::server_reflection_response::MessageResponse::ListServicesResponse(l)) => {
                let mut names: Vec<String> = l.service.into_iter().map(|s| s.name).collect();
                names.sort();
                names
            }
            other => panic!("not a service list: {other:?}"),
        }
    };
}

/// Both reflection versions list every service the server answers (health included) and
/// describe health's file: grpcurl speaks v1, Python's grpcio-reflection only v1alpha.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_serves_v1_and_v1alpha_clients_every_service() {
    use prost::Message as _;
    use tonic_reflection::pb::{v1, v1alpha};

    support::log();
    let nats = NatsServer::start().expect("nats-server");
    let rec = Recommender::start(&nats.url()).await;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", rec.service.grpc_addr()))
            .expect("url")
            .connect()
            .await
            .expect("connect");
    let expected_services = vec![
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "proxbalance.v1.Recommender",
    ];

    // v1alpha, the only version grpcio-reflection speaks.
    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let list = v1alpha::server_reflection_request::MessageRequest::ListServices(String::new());
    assert_eq!(
        listed!(reflect!(alpha, v1alpha, list), v1alpha),
        expected_services
    );
    let health = v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
        "grpc.health.v1.Health".into(),
    );
    match reflect!(alpha, v1alpha, health) {
        Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(f)) => {
            let file =
                prost_types::FileDescriptorProto::decode(f.file_descriptor_proto[0].as_slice())
                    .expect("a file descriptor");
            let services: Vec<&str> = file.service.iter().map(|s| s.name()).collect();
            assert_eq!(
                (file.package(), services),
                ("grpc.health.v1", vec!["Health"])
            );
        }
        other => panic!("not a file: {other:?}"),
    }

    // v1, what grpcurl asks first: the same list.
    let mut v1c = v1::server_reflection_client::ServerReflectionClient::new(channel);
    let list = v1::server_reflection_request::MessageRequest::ListServices(String::new());
    assert_eq!(listed!(reflect!(v1c, v1, list), v1), expected_services);
    rec.stop().await;
}
