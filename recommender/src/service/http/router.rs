//! The routes of the dashboard: its embedded pages and the JSON API under `/api/v1/`.
//!
//! | route | answer |
//! |---|---|
//! | `GET /`, `/app.js`, `/style.css` | the dashboard (no token needed: it holds no data) |
//! | `GET /api/v1/clusters?q=&offset=&limit=` | every cluster's overview, worst first |
//! | `GET /api/v1/clusters/{cluster}` | the cluster's nodes, figures and 24 h series |
//! | `GET /api/v1/clusters/{cluster}/recommendations` | the cached set, as the CLI prints it |
//! | `GET /api/v1/clusters/{cluster}/guests/{vmid}` | a guest's figures |
//! | `GET /api/v1/clusters/{cluster}/guests/{vmid}/options` | every node as its target |
//! | `GET /api/v1/events?cluster=&limit=` | the latest overload events, newest first |
//! | `GET /api/v1/stream?cluster=` | server-sent events: `set`, `overload` |
//!
//! Errors are JSON, `{"error": "...", "status": N}`: 400 for a malformed parameter (named),
//! 401 without the bearer token, 404 for an unknown route, cluster or guest, 405 for a
//! method other than GET, 429 when `grpc.max_fresh_plans` options are computing, 503 while
//! there is no data, the data is too old, or every live stream is taken.

use std::convert::Infallible;

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use proxbalance_engine as engine;
use serde_json::{Value, json};
use tonic::Code;

use super::Context;
use super::live;
use crate::service::grpc::{self, Service};
use crate::service::wall_ms;
use crate::state::dashboard::event_json;

/// The body of every answer.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// Clusters per page of `/api/v1/clusters` unless `limit` says otherwise, and the most.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
/// Events of `/api/v1/events` unless `limit` says otherwise.
const DEFAULT_EVENTS: usize = 200;

/// The page may load its own script and style and talk to its own origin, nothing else.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

fn respond(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

const JSON: &str = "application/json";

fn json_bytes(status: StatusCode, bytes: impl Into<Bytes>) -> Response<Body> {
    respond(status, JSON, full(bytes))
}

fn json_value(v: &Value) -> Response<Body> {
    json_bytes(StatusCode::OK, v.to_string())
}

/// An error answer: `{"error": message, "status": code}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let body = json!({ "error": message.into(), "status": status.as_u16() });
    let mut r = json_bytes(status, body.to_string());
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
    }
    r
}

/// The HTTP answer of a gRPC status (the same checks and messages as the gRPC calls).
fn from_status(s: &tonic::Status) -> Response<Body> {
    let status = match s.code() {
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Cancelled | Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, s.message())
}

/// Decodes `%XX` escapes of a path segment; `None` when they are malformed or not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The value of query parameter `key`, decoded.
fn query<B>(req: &Request<B>, key: &str) -> Option<String> {
    let q = req.uri().query()?;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// A numeric query parameter, its default when absent, 400 naming it when malformed.
fn number<B>(
    req: &Request<B>,
    key: &str,
    default: usize,
    max: usize,
) -> Result<usize, Box<Response<Body>>> {
    match query(req, key) {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| {
                Box::new(error(
                    StatusCode::BAD_REQUEST,
                    format!("{key}: expected a whole number from 0 to {max}, found {v:?}"),
                ))
            }),
    }
}

/// Answers one request; returns the answer and the route's name (the metric label).
pub async fn route<B>(ctx: &Context, req: &Request<B>) -> (Response<Body>, &'static str) {
    let path = req.uri().path();
    if req.method() != Method::GET {
        return (
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "{} {path}: the dashboard is read-only (GET only)",
                    req.method()
                ),
            ),
            "method_not_allowed",
        );
    }
    match path {
        "/" | "/index.html" => {
            return (
                respond(StatusCode::OK, "text/html; charset=utf-8", full(INDEX_HTML)),
                "asset",
            );
        }
        "/app.js" => {
            return (
                respond(
                    StatusCode::OK,
                    "text/javascript; charset=utf-8",
                    full(APP_JS),
                ),
                "asset",
            );
        }
        "/style.css" => {
            return (
                respond(StatusCode::OK, "text/css; charset=utf-8", full(STYLE_CSS)),
                "asset",
            );
        }
        _ => {}
    }
    let Some(api) = path.strip_prefix("/api/v1/") else {
        return (
            error(StatusCode::NOT_FOUND, format!("{path}: no such page")),
            "not_found",
        );
    };
    if !ctx.shared.security.authorizes(req.headers()) {
        let message = if req.headers().contains_key(header::AUTHORIZATION) {
            "invalid bearer token"
        } else {
            "missing bearer token (authorization: Bearer <token>, the token of [grpc])"
        };
        return (error(StatusCode::UNAUTHORIZED, message), "unauthorized");
    }
    let segments: Option<Vec<String>> = api.split('/').map(percent_decode).collect();
    let Some(segments) = segments else {
        return (
            error(
                StatusCode::BAD_REQUEST,
                format!("{path}: malformed %-escape in the path"),
            ),
            "bad_request",
        );
    };
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match segments.as_slice() {
        ["clusters"] => (clusters(ctx, req), "clusters"),
        ["clusters", cluster] => (cluster_state(ctx, cluster), "cluster"),
        ["clusters", cluster, "recommendations"] => {
            (recommendations(ctx, cluster).await, "recommendations")
        }
        ["clusters", cluster, "guests", vmid] => (guest(ctx, cluster, vmid), "guest"),
        ["clusters", cluster, "guests", vmid, "options"] => {
            (options(ctx, cluster, vmid).await, "options")
        }
        ["events"] => (events(ctx, req), "events"),
        ["stream"] => (stream(ctx, req), "stream"),
        _ => (
            error(StatusCode::NOT_FOUND, format!("{path}: no such API route")),
            "not_found",
        ),
    }
}

/// `GET /api/v1/clusters`.
fn clusters<B>(ctx: &Context, req: &Request<B>) -> Response<Body> {
    let (offset, limit) = match (
        number(req, "offset", 0, usize::MAX),
        number(req, "limit", DEFAULT_PAGE, MAX_PAGE),
    ) {
        (Ok(o), Ok(l)) => (o, l),
        (Err(e), _) | (_, Err(e)) => return *e,
    };
    let needle = query(req, "q").unwrap_or_default().to_lowercase();
    let max_age_ms = i64::try_from(ctx.shared.config.state.max_answer_age_s)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000);
    let all = ctx.shared.read().overview(wall_ms(), max_age_ms);
    let total = all.len();
    let mut counts = [0usize; 3];
    for c in &all {
        counts[c.health as usize] += 1;
    }
    let matched: Vec<_> = all
        .into_iter()
        .filter(|c| needle.is_empty() || c.name.to_lowercase().contains(&needle))
        .collect();
    let page: Vec<_> = matched.iter().skip(offset).take(limit).collect();
    json_value(&json!({
        "total": total,
        "matched": matched.len(),
        "offset": offset,
        "limit": limit,
        "health": { "critical": counts[0], "warning": counts[1], "ok": counts[2] },
        "clusters": page,
    }))
}

/// 404 (or 503 while nothing arrived) for a cluster without snapshots.
fn unknown(ctx: &Context, cluster: &str) -> Response<Body> {
    let state = ctx.shared.read();
    from_status(&grpc::unknown_cluster(&ctx.shared, &state, cluster))
}

/// `GET /api/v1/clusters/{cluster}`.
fn cluster_state(ctx: &Context, cluster: &str) -> Response<Body> {
    let value = ctx.shared.read().dashboard_cluster(cluster, wall_ms());
    match value {
        Some(v) => json_value(&v),
        None => unknown(ctx, cluster),
    }
}

/// `GET /api/v1/clusters/{cluster}/recommendations`: the cached set's JSON, encoded once per
/// set, inside `{"cluster", "generation", "cycle", "data_at_unix_ms", "age_ms", "set"}`.
async fn recommendations(ctx: &Context, cluster: &str) -> Response<Body> {
    let cached = {
        let state = ctx.shared.read();
        if !state.knows(cluster) {
            return from_status(&grpc::unknown_cluster(&ctx.shared, &state, cluster));
        }
        state.cached(cluster).cloned()
    };
    let Some(cached) = cached else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "cluster {cluster:?}: no recommendations yet (waiting for a complete collection cycle)"
            ),
        );
    };
    let age_ms = match grpc::fresh_enough(&ctx.shared, cluster, cached.data_at_ms) {
        Ok(age) => age,
        Err(s) => return from_status(&s),
    };
    let set = if cached.has_json() {
        cached.set_json()
    } else {
        let c = cached.clone();
        match tokio::task::spawn_blocking(move || c.set_json()).await {
            Ok(r) => r,
            Err(e) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("encoding the set: {e}"),
                );
            }
        }
    };
    let set = match set {
        Ok(s) => s,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding the set: {e}"),
            );
        }
    };
    let head = json!({
        "cluster": cluster,
        "generation": cached.generation,
        "cycle": cached.cycle,
        "data_at_unix_ms": cached.data_at_ms,
        "age_ms": age_ms,
    })
    .to_string();
    // `{"cluster":…,"age_ms":N` + `,"set":` + the cached bytes + `}`: the set is not copied.
    let open = head.strip_suffix('}').unwrap_or(&head).to_owned() + ",\"set\":";
    let frames = [Bytes::from(open), set, Bytes::from_static(b"}")]
        .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let body = StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync();
    respond(StatusCode::OK, JSON, body)
}

/// The vmid of a path, or 400.
fn vmid(text: &str) -> Result<u32, Box<Response<Body>>> {
    text.parse::<u32>().ok().filter(|v| *v > 0).ok_or_else(|| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("vmid: expected a guest id ≥ 1, found {text:?}"),
        ))
    })
}

/// `GET /api/v1/clusters/{cluster}/guests/{vmid}`.
fn guest(ctx: &Context, cluster: &str, vmid_text: &str) -> Response<Body> {
    let vmid = match vmid(vmid_text) {
        Ok(v) => v,
        Err(e) => return *e,
    };
    let (known, value) = {
        let state = ctx.shared.read();
        (state.knows(cluster), state.dashboard_guest(cluster, vmid))
    };
    match value {
        Some(v) => json_value(&v),
        None if known => error(
            StatusCode::NOT_FOUND,
            format!("vmid: no node of cluster {cluster:?} lists guest {vmid}"),
        ),
        None => unknown(ctx, cluster),
    }
}

/// `GET /api/v1/clusters/{cluster}/guests/{vmid}/options`: computed like `GetMigrationOptions`,
/// holding one of `grpc.max_fresh_plans` permits (429 beyond them).
async fn options(ctx: &Context, cluster: &str, vmid_text: &str) -> Response<Body> {
    let vmid = match vmid(vmid_text) {
        Ok(v) => v,
        Err(e) => return *e,
    };
    let svc = Service::new(ctx.shared.clone());
    let r = svc
        .compute_afresh(cluster, None, 0, move |tuned| {
            let options = engine::migration_options(&tuned.model, vmid)
                .map_err(|e| tonic::Status::not_found(e.to_string()))?;
            serde_json::to_vec(&options).map_err(|e| tonic::Status::internal(e.to_string()))
        })
        .await;
    match r {
        Ok(bytes) => json_bytes(StatusCode::OK, bytes),
        Err(s) => from_status(&s),
    }
}

/// `GET /api/v1/events`.
fn events<B>(ctx: &Context, req: &Request<B>) -> Response<Body> {
    let limit = match number(
        req,
        "limit",
        DEFAULT_EVENTS,
        crate::service::events::RECENT_EVENTS,
    ) {
        Ok(l) => l,
        Err(e) => return *e,
    };
    let cluster = query(req, "cluster").unwrap_or_default();
    let events: Vec<Value> = ctx
        .shared
        .recent_events
        .latest(&cluster, limit)
        .iter()
        .map(|e| event_json(e))
        .collect();
    json_value(&json!({ "events": events }))
}

/// `GET /api/v1/stream`: server-sent events, at most `http.max_streams` at once (503 beyond).
fn stream<B>(ctx: &Context, req: &Request<B>) -> Response<Body> {
    let Ok(permit) = ctx.streams.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} live streams are open (http.max_streams); retry later",
                ctx.shared.config.http.max_streams
            ),
        );
    };
    let cluster = query(req, "cluster").unwrap_or_default();
    let frames = live::stream(&ctx.shared, cluster, permit);
    let mut r = respond(
        StatusCode::OK,
        "text/event-stream",
        StreamBody::new(frames).boxed_unsync(),
    );
    r.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_escapes_decode_or_are_refused() {
        assert_eq!(percent_decode("a%20b%2Fc").as_deref(), Some("a b/c"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }

    #[test]
    fn grpc_codes_map_to_http_statuses() {
        for (code, status) in [
            (Code::NotFound, 404),
            (Code::InvalidArgument, 400),
            (Code::Unavailable, 503),
            (Code::ResourceExhausted, 429),
            (Code::Internal, 500),
        ] {
            let r = from_status(&tonic::Status::new(code, "x"));
            assert_eq!(r.status().as_u16(), status, "{code:?}");
        }
    }
}
