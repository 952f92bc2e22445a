//! The HTTPS server and the in-process handle tests use to control the simulation.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::api::{self, Method, Reply};
use crate::clock::{SimClock, wall_clock_epoch};
use crate::model::{DownMode, GuestSample, NodeSample, Sim, tick};
use crate::scenario::Scenario;
use crate::tls::{self, Certs};

/// A fault injected into one API path (matched by prefix of the path after `/api2/json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and message instead of the real response.
    Status(u16, String),
    /// Wait this long before answering normally.
    Delay(Duration),
    /// Answer 200 with the real body cut in half.
    Truncated,
    /// Answer 200 with an HTML body.
    NotJson,
}

struct Shared {
    sim: Mutex<Sim>,
    clock: SimClock,
    /// One certificate per node, in node order: endpoint `i` answers as node `i` with its own.
    certs: Vec<Certs>,
    /// The TLS acceptor of each node's certificate.
    acceptors: Vec<TlsAcceptor>,
    /// Every node's fingerprint, for `/nodes`' `ssl_fingerprint`.
    fingerprints: Vec<String>,
    counts: Mutex<HashMap<String, u64>>,
    route_counts: Mutex<HashMap<String, u64>>,
    faults: Mutex<Vec<(String, Fault)>>,
    shutdown: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data behind every lock stays consistent between statements; recover from poisoning.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Endpoint {
    addr: SocketAddr,
    local_node: usize,
    cancel: Option<CancellationToken>,
    task: Option<JoinHandle<()>>,
}

/// Entry point: builds the simulation and serves it.
#[derive(Debug, Clone, Copy)]
pub struct Simulator;

impl Simulator {
    /// Starts the simulator for `scenario` on `listen` (port 0 picks a free port) on the current
    /// tokio runtime. The clock starts at the scenario's `start_time` (or the real time) and runs
    /// at its `acceleration` (0 = manual).
    pub async fn start(scenario: Scenario, listen: SocketAddr) -> Result<RunningSim, Error> {
        scenario.validate()?;
        let start = scenario.cluster.start_time.unwrap_or_else(wall_clock_epoch) as f64;
        let clock = SimClock::accelerated(start, scenario.cluster.acceleration);
        let mut names: Vec<String> = scenario.nodes.iter().map(|n| n.name.clone()).collect();
        if names.is_empty() {
            names.push(String::new());
        }
        let mut extra = vec![listen.ip().to_string()];
        extra.extend(names.iter().cloned());
        let certs = tls::generate_cluster(&scenario.cluster.name, &names, &extra)
            .map_err(|e| Error::Cert(e.to_string()))?;
        let acceptors = certs
            .iter()
            .map(|c| {
                tls::server_config(c)
                    .map(|cfg| TlsAcceptor::from(Arc::new(cfg)))
                    .map_err(|e| Error::Tls(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let fingerprints = certs.iter().map(|c| c.fingerprint.clone()).collect();
        let shared = Arc::new(Shared {
            sim: Mutex::new(Sim::new(scenario, start)),
            clock,
            certs,
            acceptors,
            fingerprints,
            counts: Mutex::new(HashMap::new()),
            route_counts: Mutex::new(HashMap::new()),
            faults: Mutex::new(Vec::new()),
            shutdown: CancellationToken::new(),
        });
        let running = RunningSim {
            shared,
            endpoints: Mutex::new(Vec::new()),
        };
        running.add_endpoint(listen).await?;
        Ok(running)
    }
}

/// A running simulator: its address and certificate, and controls for tests. Dropping it stops
/// serving; [`RunningSim::shutdown`] does the same and waits for the listeners to close.
pub struct RunningSim {
    shared: Arc<Shared>,
    endpoints: Mutex<Vec<Endpoint>>,
}

impl std::fmt::Debug for RunningSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningSim")
            .field("endpoints", &self.endpoints())
            .finish_non_exhaustive()
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

fn spawn_endpoint(
    shared: Arc<Shared>,
    listener: TcpListener,
    local_node: usize,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = cancel.cancelled() => break,
                a = listener.accept() => a,
            };
            let Ok((tcp, _peer)) = accepted else {
                // Out of descriptors or similar: back off briefly instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let shared = shared.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                let tls = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = tokio::time::timeout(Duration::from_secs(10), shared.acceptors[local_node % shared.acceptors.len()].accept(tcp)) => r,
                };
                let Ok(Ok(stream)) = tls else { return };
                let svc_shared = shared.clone();
                let svc = service_fn(move |req| {
                    let s = svc_shared.clone();
                    async move { Ok::<_, std::convert::Infallible>(serve(s, local_node, req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), svc);
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = conn => {}
                }
            });
        }
    })
}

const MAX_BODY: usize = 1 << 20;

fn params_from_json(v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    if let Some(o) = v.as_object() {
        for (k, v) in o {
            let s = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Bool(b) => if *b { "1" } else { "0" }.to_string(),
                serde_json::Value::Null => continue,
                other => other.to_string(),
            };
            out.push((k.clone(), s));
        }
    }
}

fn build(reply: Reply) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = Response::new(Full::new(Bytes::from(reply.body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    h.insert(
        header::SERVER,
        HeaderValue::from_static("pve-api-daemon/3.0"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=0"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if let Some(reason) = reply.reason
        && let Ok(rp) = hyper::ext::ReasonPhrase::try_from(reason.into_bytes())
    {
        resp.extensions_mut().insert(rp);
    }
    resp
}

async fn serve(
    shared: Arc<Shared>,
    local_node: usize,
    req: hyper::Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let Some(api_path) = path.strip_prefix("/api2/json") else {
        return build(Reply {
            status: 404,
            reason: Some("Not Found".into()),
            body: Vec::new(),
            delay_ms: 0,
        });
    };
    let api_path = if api_path.is_empty() { "/" } else { api_path }.to_string();
    let segments = api::split_path(&api_path);
    *lock(&shared.counts).entry(path.clone()).or_insert(0) += 1;
    *lock(&shared.route_counts)
        .entry(api::route_of(&segments))
        .or_insert(0) += 1;

    let fault = lock(&shared.faults)
        .iter()
        .find(|(prefix, _)| api_path.starts_with(prefix.as_str()))
        .map(|(_, f)| f.clone());
    match &fault {
        Some(Fault::Status(code, msg)) => {
            let body = serde_json::json!({"data": null, "message": format!("{msg}\n")})
                .to_string()
                .into_bytes();
            return build(Reply {
                status: *code,
                reason: Some(msg.clone()),
                body,
                delay_ms: 0,
            });
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(*d).await,
        Some(Fault::NotJson) => {
            let mut r = build(Reply {
                status: 200,
                reason: None,
                body: b"<html><body>502 Bad Gateway</body></html>".to_vec(),
                delay_ms: 0,
            });
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            return r;
        }
        _ => {}
    }

    let method = match *req.method() {
        hyper::Method::GET | hyper::Method::HEAD => Method::Get,
        hyper::Method::POST => Method::Post,
        hyper::Method::PUT => Method::Put,
        hyper::Method::DELETE => Method::Delete,
        _ => Method::Other,
    };
    let mut params: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    if matches!(method, Method::Post | Method::Put | Method::Delete) {
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                let body =
                    br#"{"data":null,"message":"request body too large or unreadable\n"}"#.to_vec();
                return build(Reply {
                    status: 400,
                    reason: Some("request body too large or unreadable".into()),
                    body,
                    delay_ms: 0,
                });
            }
        };
        if is_json {
            match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(v) => params_from_json(&v, &mut params),
                Err(e) => {
                    let msg = format!("malformed JSON body: {e}");
                    let body = serde_json::json!({"data": null, "message": format!("{msg}\n")})
                        .to_string()
                        .into_bytes();
                    return build(Reply {
                        status: 400,
                        reason: Some(msg),
                        body,
                        delay_ms: 0,
                    });
                }
            }
        } else {
            params.extend(form_urlencoded::parse(&body).into_owned());
        }
    }

    let request = api::Request {
        method,
        segments,
        params,
        authorization: authorization.as_deref(),
        local_node,
    };
    let reply = {
        let now = shared.clock.now();
        let mut sim = lock(&shared.sim);
        let ctx = api::Ctx {
            fingerprints: &shared.fingerprints,
        };
        api::handle(&mut sim, &ctx, &request, now)
    };
    if reply.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(reply.delay_ms)).await;
    }
    let mut reply = reply;
    if fault == Some(Fault::Truncated) {
        let half = reply.body.len() / 2;
        reply.body.truncate(half);
    }
    build(reply)
}

impl RunningSim {
    fn sim(&self) -> MutexGuard<'_, Sim> {
        lock(&self.shared.sim)
    }

    fn node_idx(sim: &Sim, node: &str) -> Result<usize, Error> {
        sim.node_index
            .get(node)
            .copied()
            .ok_or_else(|| Error::UnknownNode(node.to_string()))
    }

    /// The address of the first endpoint.
    pub fn local_addr(&self) -> SocketAddr {
        lock(&self.endpoints)
            .first()
            .map(|e| e.addr)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Addresses of all endpoints, in the order they were added.
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        lock(&self.endpoints).iter().map(|e| e.addr).collect()
    }

    /// `https://<addr>/api2/json` of the first endpoint.
    pub fn api_url(&self) -> String {
        format!("https://{}/api2/json", self.local_addr())
    }

    /// SHA-256 fingerprint of the first endpoint's certificate (the first node's), in PVE's
    /// colon-separated upper-case hex form.
    pub fn fingerprint_sha256(&self) -> String {
        self.shared.fingerprints[0].clone()
    }

    /// Every node's certificate fingerprint, in node order (what `/nodes` reports as
    /// `ssl_fingerprint`). Endpoint `i` presents node `i`'s (mod the node count), as each PVE
    /// node serves its own certificate.
    pub fn fingerprints(&self) -> Vec<String> {
        self.shared.fingerprints.clone()
    }

    /// The fingerprint of the certificate endpoint `index` presents.
    pub fn endpoint_fingerprint(&self, index: usize) -> Result<String, Error> {
        let eps = lock(&self.endpoints);
        let ep = eps.get(index).ok_or(Error::UnknownEndpoint(index))?;
        Ok(self.shared.fingerprints[ep.local_node % self.shared.fingerprints.len()].clone())
    }

    /// The cluster CA certificate (`pve-root-ca.pem`) that signed every node's certificate.
    pub fn ca_pem(&self) -> String {
        self.shared.certs[0].ca_pem.clone()
    }

    /// The first endpoint's certificate (the first node's), PEM.
    pub fn leaf_pem(&self) -> String {
        self.shared.certs[0].leaf_pem.clone()
    }

    /// A copy of the scenario being simulated (as loaded; placement changes are not reflected).
    pub fn scenario(&self) -> Scenario {
        self.sim().scenario.clone()
    }

    /// The `Authorization` header value for the scenario's first token, if any.
    pub fn token_header(&self) -> Option<String> {
        self.sim()
            .scenario
            .tokens
            .first()
            .map(|t| format!("PVEAPIToken={}={}", t.id, t.secret))
    }

    /// Adds another listening endpoint sharing the same cluster state (a second "node" to fail
    /// over to) and returns its address. Endpoint `i` answers as node `i` (mod the node count)
    /// for `local` flags and `local-only` metrics, and presents node `i`'s certificate.
    pub async fn add_endpoint(&self, listen: SocketAddr) -> Result<SocketAddr, Error> {
        let listener = bind(listen).await?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: listen,
            source,
        })?;
        let cancel = self.shared.shutdown.child_token();
        let mut eps = lock(&self.endpoints);
        let local_node = eps.len() % self.sim().nodes.len().max(1);
        let task = spawn_endpoint(self.shared.clone(), listener, local_node, cancel.clone());
        eps.push(Endpoint {
            addr,
            local_node,
            cancel: Some(cancel),
            task: Some(task),
        });
        Ok(addr)
    }

    /// Stops endpoint `index`: closes its listener and drops its open connections, so clients
    /// see connection refused. The address is kept for [`RunningSim::start_endpoint`].
    pub async fn stop_endpoint(&self, index: usize) -> Result<(), Error> {
        let (cancel, task) = {
            let mut eps = lock(&self.endpoints);
            let ep = eps.get_mut(index).ok_or(Error::UnknownEndpoint(index))?;
            (ep.cancel.take(), ep.task.take())
        };
        if let Some(c) = cancel {
            c.cancel();
        }
        if let Some(t) = task {
            let _ = t.await;
        }
        Ok(())
    }

    /// Starts a stopped endpoint again on its previous address.
    pub async fn start_endpoint(&self, index: usize) -> Result<(), Error> {
        let (addr, local_node, running) = {
            let eps = lock(&self.endpoints);
            let ep = eps.get(index).ok_or(Error::UnknownEndpoint(index))?;
            (ep.addr, ep.local_node, ep.task.is_some())
        };
        if running {
            return Ok(());
        }
        let listener = bind(addr).await?;
        let cancel = self.shared.shutdown.child_token();
        let task = spawn_endpoint(self.shared.clone(), listener, local_node, cancel.clone());
        let mut eps = lock(&self.endpoints);
        if let Some(ep) = eps.get_mut(index) {
            ep.cancel = Some(cancel);
            ep.task = Some(task);
        }
        Ok(())
    }

    /// Takes a node down: its proxied endpoints answer 595 ("No route to host") or 596
    /// ("Connection timed out"), `/cluster/resources` and `/nodes` show it offline, its guests
    /// turn `unknown` after 5 simulated minutes and its RRD history has a gap.
    pub fn node_down(&self, node: &str, mode: DownMode) -> Result<(), Error> {
        let now = self.shared.clock.now();
        let mut sim = self.sim();
        let i = Self::node_idx(&sim, node)?;
        sim.settle(now);
        sim.set_node_online(i, false, now, mode);
        Ok(())
    }

    /// Brings a downed node back.
    pub fn node_up(&self, node: &str) -> Result<(), Error> {
        let now = self.shared.clock.now();
        let mut sim = self.sim();
        let i = Self::node_idx(&sim, node)?;
        sim.settle(now);
        sim.set_node_online(i, true, now, DownMode::NoRoute);
        Ok(())
    }

    /// Takes a node down (595, "No route to host") or brings it back.
    pub fn set_node_online(&self, node: &str, online: bool) -> Result<(), Error> {
        if online {
            self.node_up(node)
        } else {
            self.node_down(node, DownMode::NoRoute)
        }
    }

    /// Whether a node is online now.
    pub fn node_online(&self, node: &str) -> Result<bool, Error> {
        let now = self.shared.clock.now();
        let sim = self.sim();
        let i = Self::node_idx(&sim, node)?;
        Ok(sim.node_online_at(i, now))
    }

    /// Puts a node into (or out of) HA maintenance mode.
    pub fn set_maintenance(&self, node: &str, on: bool) -> Result<(), Error> {
        let mut sim = self.sim();
        let i = Self::node_idx(&sim, node)?;
        sim.nodes[i].maintenance = on;
        Ok(())
    }

    /// Makes every request whose path (after `/api2/json`) starts with `path_prefix` fail or
    /// misbehave as `fault` says, until [`RunningSim::clear_faults`]. Earlier faults win.
    pub fn inject_fault(&self, path_prefix: &str, fault: Fault) {
        lock(&self.shared.faults).push((path_prefix.to_string(), fault));
    }

    /// Removes every injected fault.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// The simulated time (epoch seconds).
    pub fn now(&self) -> f64 {
        self.shared.clock.now()
    }

    /// Moves simulated time forward by `seconds` (tasks that end meanwhile complete on the next
    /// request or inspection).
    pub fn advance(&self, seconds: f64) {
        self.shared.clock.advance(seconds);
    }

    /// Puts simulated time at `epoch` seconds.
    pub fn set_time(&self, epoch: f64) {
        self.shared.clock.set(epoch);
    }

    /// Stops the clock; from now on it moves only through [`RunningSim::advance`] and
    /// [`RunningSim::set_time`].
    pub fn pause_clock(&self) {
        self.shared.clock.pause();
    }

    /// Lets the clock run at `factor` × real time (0 pauses it).
    pub fn set_acceleration(&self, factor: f64) {
        self.shared.clock.set_acceleration(factor);
    }

    /// Requests served per exact path (`/api2/json/...`, without query), since start or the
    /// last reset.
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        lock(&self.shared.counts)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Requests per route template (`/nodes/{node}/qemu/{vmid}/rrddata`).
    pub fn route_counts(&self) -> BTreeMap<String, u64> {
        lock(&self.shared.route_counts)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// All requests counted.
    pub fn total_requests(&self) -> u64 {
        lock(&self.shared.counts).values().sum()
    }

    /// Clears the request counters.
    pub fn reset_request_counts(&self) {
        lock(&self.shared.counts).clear();
        lock(&self.shared.route_counts).clear();
    }

    /// Names of all nodes.
    pub fn node_names(&self) -> Vec<String> {
        self.sim()
            .nodes
            .iter()
            .map(|n| n.spec.name.clone())
            .collect()
    }

    /// Committed memory of a node now: Σ maxmem (bytes) of the running guests placed on it.
    pub fn committed_mem_bytes(&self, node: &str) -> Result<u64, Error> {
        let now = self.shared.clock.now();
        let mut sim = self.sim();
        sim.settle(now);
        let i = Self::node_idx(&sim, node)?;
        Ok(sim.committed(i))
    }

    /// Total memory of a node in bytes.
    pub fn node_mem_total(&self, node: &str) -> Result<u64, Error> {
        let sim = self.sim();
        let i = Self::node_idx(&sim, node)?;
        Ok(crate::scenario::gib_bytes(sim.nodes[i].spec.memory_gb))
    }

    /// The node a guest is placed on now (after completed migrations).
    pub fn guest_node(&self, vmid: u32) -> Option<String> {
        let now = self.shared.clock.now();
        let mut sim = self.sim();
        sim.settle(now);
        let g = *sim.guest_index.get(&vmid)?;
        Some(sim.nodes[sim.guests[g].node].spec.name.clone())
    }

    /// A node's metrics at the current 10-second tick, as the API serves them.
    pub fn node_metrics(&self, node: &str) -> Result<NodeSample, Error> {
        let now = self.shared.clock.now();
        let mut sim = self.sim();
        sim.settle(now);
        let i = Self::node_idx(&sim, node)?;
        Ok(sim.node_sample_now(i, now))
    }

    /// A running guest's metrics at the current tick (`None` if unknown or stopped).
    pub fn guest_metrics(&self, vmid: u32) -> Option<GuestSample> {
        let now = self.shared.clock.now();
        let sim = self.sim();
        let g = *sim.guest_index.get(&vmid)?;
        sim.guests[g]
            .running
            .then(|| sim.guest_sample(g, tick(now)))
    }

    /// Mean IOWait and CPU fraction of a node over `[now − seconds, now]`, computed from the
    /// profiles on the 10-second grid (what a 24 h average from RRD data approximates).
    pub fn node_average(&self, node: &str, seconds: f64) -> Result<(f64, f64), Error> {
        let now = self.shared.clock.now();
        let sim = self.sim();
        let i = Self::node_idx(&sim, node)?;
        let candidates = sim.guests_ever_on(i);
        let step = 60.0;
        let n = (seconds / step).max(1.0) as usize;
        let (mut cpu, mut iow, mut k) = (0.0, 0.0, 0usize);
        for j in 0..n {
            let t = tick(now) - j as f64 * step;
            if !sim.node_online_at(i, t) {
                continue;
            }
            let m = sim.running_on_at(i, t, &candidates);
            let s = sim.node_sample(i, t, &m);
            cpu += s.cpu;
            iow += s.iowait;
            k += 1;
        }
        let k = k.max(1) as f64;
        Ok((cpu / k, iow / k))
    }

    /// Stops every endpoint and waits for the listeners to close.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        let tasks: Vec<JoinHandle<()>> = lock(&self.endpoints)
            .iter_mut()
            .filter_map(|e| e.task.take())
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }
}
