//! The web dashboard and its JSON API (`[http] listen`), HTTP/1.1 over hyper.
//!
//! Read-only, served with `[grpc]`'s TLS material and bearer token ([`super::auth`]): the
//! pages and their assets (embedded in the binary, no request leaves the recommender) are
//! open, every `/api/v1/` request needs the token when one is configured. Answers are read
//! from what ingest keeps: the cached set (its JSON encoded once per set), the overview and
//! node figures built under the read lock without planning; only a guest's `options` computes,
//! holding one of `grpc.max_fresh_plans` permits like gRPC's fresh plans. Live updates are
//! server-sent events fed by the broadcast channels of the gRPC watches ([`live`]). The server
//! stops with the service's shutdown token: live streams end at once, open requests get
//! `grpc.shutdown_timeout_ms`.

mod live;
mod router;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::{Shared, metric};

pub use router::{Body, route};

/// Longest time a client may take to send a request's headers, and to finish its TLS
/// handshake.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the dashboard on `listener` until the shutdown token is cancelled.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener, shutdown_timeout: Duration) {
    let tls = shared
        .security
        .http_tls()
        .map(tokio_rustls::TlsAcceptor::from);
    let token = shared.shutdown.clone();
    let base = Context::new(shared);
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = token.cancelled() => break,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "dashboard: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let ctx = base.clone();
        let tls = tls.clone();
        let token = token.clone();
        connections.spawn(async move {
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => connection(ctx, stream, peer, token).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "dashboard: TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(%peer, "dashboard: TLS handshake timed out"),
                    }
                }
                None => connection(ctx, tcp, peer, token).await,
            }
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(shutdown_timeout, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout_ms = shutdown_timeout.as_millis() as u64,
            "dashboard shutdown timed out; closing"
        );
    }
}

/// What every request of the server shares.
#[derive(Debug, Clone)]
pub struct Context {
    /// The service's state.
    pub shared: Arc<Shared>,
    /// Permits of the live streams (`http.max_streams`).
    pub streams: Arc<tokio::sync::Semaphore>,
}

impl Context {
    /// A context over `shared` with `http.max_streams` stream permits.
    pub fn new(shared: Arc<Shared>) -> Self {
        let streams = Arc::new(tokio::sync::Semaphore::new(shared.config.http.max_streams));
        Context { shared, streams }
    }
}

/// Serves one connection (keep-alive), shut down gracefully with the token.
async fn connection<S>(
    ctx: Context,
    stream: S,
    peer: SocketAddr,
    token: tokio_util::sync::CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let ctx = ctx.clone();
        // Only GET is served: the request's body is never read.
        let (parts, _body) = req.into_parts();
        let req = hyper::Request::from_parts(parts, ());
        async move {
            let started = Instant::now();
            let (response, route_name) = route(&ctx, &req).await;
            metrics::histogram!(
                metric::HTTP_LATENCY,
                "route" => route_name,
                "status" => response.status().as_u16().to_string()
            )
            .record(started.elapsed().as_secs_f64());
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = token.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "dashboard connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use http_body_util::BodyExt;
    use serde_json::Value;

    use super::*;
    use crate::config::Config;
    use crate::service::{auth, state_settings, wall_ms};
    use crate::state::Arrival;

    const TOKEN: &str = "dashboard-t0ken";

    /// A service state with a token, cluster `c` (node `a` running guest 100) and a cached set
    /// of the synthetic cluster.
    fn context(dir: &tempfile::TempDir) -> Context {
        let path = dir.path().join("token");
        std::fs::write(&path, TOKEN).unwrap();
        let mut config = Config::default();
        config.grpc.token_file = Some(path);
        let security = auth::GrpcSecurity::load(&config.grpc).unwrap();
        let settings = state_settings(&config).unwrap();
        let shared = Arc::new(Shared::new(
            config,
            settings,
            security,
            tokio_util::sync::CancellationToken::new(),
        ));
        shared.ready.store(true, Ordering::Release);
        let now = wall_ms();
        let snapshot = crate::state::test_support::snap("a", 1, now, 0.25);
        let subjects = shared.read().settings().subjects.clone();
        shared
            .write()
            .ingest(
                &subjects.snapshot("c", "a"),
                &proxbalance_proto::encode(&snapshot),
                Arrival::at(now),
            )
            .unwrap();
        let model = proxbalance_engine::synthetic::cluster_view(6, 60, 3)
            .validate()
            .unwrap();
        let set = proxbalance_engine::plan(&model, None);
        shared.write().store_set(set, now, 1, now);
        Context::new(shared)
    }

    async fn get(ctx: &Context, path: &str, token: Option<&str>) -> (u16, String, Value) {
        let mut req = hyper::Request::builder().uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let (resp, _) = route(ctx, &req.body(()).unwrap()).await;
        let status = resp.status().as_u16();
        let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = if ct == "application/json" {
            serde_json::from_slice(&bytes).unwrap()
        } else {
            Value::Null
        };
        (status, ct, json)
    }

    #[tokio::test]
    async fn pages_are_open_and_the_api_needs_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(&dir);
        for (path, ct) in [
            ("/", "text/html; charset=utf-8"),
            ("/app.js", "text/javascript; charset=utf-8"),
            ("/style.css", "text/css; charset=utf-8"),
        ] {
            let (status, content_type, _) = get(&ctx, path, None).await;
            assert_eq!((status, content_type.as_str()), (200, ct), "{path}");
        }
        for path in [
            "/api/v1/clusters",
            "/api/v1/clusters/c",
            "/api/v1/clusters/c/recommendations",
            "/api/v1/events",
            "/api/v1/stream",
            "/api/v1/nope",
        ] {
            let (status, _, body) = get(&ctx, path, None).await;
            assert_eq!(status, 401, "{path}");
            assert_eq!(body["status"], 401);
            assert!(
                body["error"]
                    .as_str()
                    .unwrap()
                    .contains("missing bearer token")
            );
            let (status, _, body) = get(&ctx, path, Some("wrong")).await;
            assert_eq!(
                (status, body["error"].as_str()),
                (401, Some("invalid bearer token"))
            );
        }
    }

    #[tokio::test]
    async fn api_answers_json_and_names_what_is_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(&dir);
        let t = Some(TOKEN);
        let (status, ct, body) = get(&ctx, "/api/v1/clusters", t).await;
        assert_eq!((status, ct.as_str()), (200, "application/json"));
        assert_eq!(body["total"], 1);
        assert_eq!(body["clusters"][0]["name"], "c");
        assert_eq!(body["clusters"][0]["guests"], 1);
        let (_, _, body) = get(&ctx, "/api/v1/clusters?q=zzz", t).await;
        assert_eq!(
            (body["total"].as_u64(), body["matched"].as_u64()),
            (Some(1), Some(0))
        );
        let (status, _, body) = get(&ctx, "/api/v1/clusters?limit=x", t).await;
        assert_eq!(status, 400);
        assert!(
            body["error"].as_str().unwrap().starts_with("limit:"),
            "{body}"
        );

        let (status, _, body) = get(&ctx, "/api/v1/clusters/c", t).await;
        assert_eq!(status, 200);
        assert_eq!(body["nodes"][0]["node"], "a");
        let (status, _, body) = get(&ctx, "/api/v1/clusters/nope", t).await;
        assert_eq!(status, 404);
        assert!(
            body["error"].as_str().unwrap().contains("\"nope\""),
            "{body}"
        );

        let (status, _, body) = get(&ctx, "/api/v1/clusters/synthetic-3/recommendations", t).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["set"]["recommendations"].is_array());
        assert_eq!(body["set"]["cluster"], "synthetic-3");
        assert_eq!(body["generation"], 1);
        let (status, _, body) = get(&ctx, "/api/v1/clusters/c/recommendations", t).await;
        assert_eq!(status, 503, "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("no recommendations yet")
        );
        let (status, _, _) = get(&ctx, "/api/v1/clusters/nope/recommendations", t).await;
        assert_eq!(status, 404);

        let (status, _, body) = get(&ctx, "/api/v1/clusters/c/guests/100", t).await;
        assert_eq!((status, body["name"].as_str()), (200, Some("g-a")));
        let (status, _, body) = get(&ctx, "/api/v1/clusters/c/guests/999", t).await;
        assert_eq!(status, 404);
        assert!(
            body["error"].as_str().unwrap().starts_with("vmid:"),
            "{body}"
        );
        let (status, _, _) = get(&ctx, "/api/v1/clusters/c/guests/abc", t).await;
        assert_eq!(status, 400);
        let (status, _, body) = get(&ctx, "/api/v1/clusters/c/guests/100/options", t).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["vmid"], 100);
        assert!(body["targets"].is_array());

        let (status, _, body) = get(&ctx, "/api/v1/events", t).await;
        assert_eq!(
            (status, body["events"].as_array().map(Vec::len)),
            (200, Some(0))
        );
        let (status, _, _) = get(&ctx, "/api/v1/clusters/c/nodes", t).await;
        assert_eq!(status, 404);
        let (status, _, _) = get(&ctx, "/favicon.ico", None).await;
        assert_eq!(status, 404);
        let (status, _, _) = get(&ctx, "/api/v1/clusters/%zz", t).await;
        assert_eq!(status, 400);
    }

    #[tokio::test]
    async fn only_get_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(&dir);
        let req = hyper::Request::builder()
            .method("POST")
            .uri("/api/v1/clusters")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(())
            .unwrap();
        let (resp, _) = route(&ctx, &req).await;
        assert_eq!(resp.status().as_u16(), 405);
        assert_eq!(resp.headers()["allow"], "GET");
    }

    #[tokio::test]
    async fn live_streams_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(&dir);
        let permits = ctx.shared.config.http.max_streams;
        let mut open = Vec::new();
        for _ in 0..permits {
            let req = hyper::Request::builder()
                .uri("/api/v1/stream?cluster=c")
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(())
                .unwrap();
            let (resp, _) = route(&ctx, &req).await;
            assert_eq!(resp.status().as_u16(), 200);
            assert_eq!(resp.headers()["content-type"], "text/event-stream");
            open.push(resp);
        }
        let (status, _, body) = get(&ctx, "/api/v1/stream", Some(TOKEN)).await;
        assert_eq!(status, 503);
        assert!(body["error"].as_str().unwrap().contains("http.max_streams"));
        let first = open.pop().unwrap();
        let mut body = first.into_body();
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert!(frame.starts_with(b"event: hello\n"), "{frame:?}");
        drop(body);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let req = hyper::Request::builder()
                .uri("/api/v1/stream")
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(())
                .unwrap();
            let (resp, _) = route(&ctx, &req).await;
            if resp.status().as_u16() == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "a closed stream frees its place");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
