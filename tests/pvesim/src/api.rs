//! The `/api2/json` request handlers: authentication, routing, parameter checks and the JSON
//! every endpoint returns, with PVE's field names, units and typing quirks.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::model::{Sim, Task, TaskEffect, tick};
use crate::prng::hash_str;
use crate::rrd;
use crate::scenario::{ALL_PRIVILEGES, GuestKind};

/// An HTTP method the API distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Post,
    Put,
    Delete,
    Other,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Other => "OPTIONS",
        }
    }
}

/// A parsed request.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    pub method: Method,
    /// Decoded path segments after `/api2/json`.
    pub segments: Vec<String>,
    /// Query and body parameters, merged.
    pub params: Vec<(String, String)>,
    /// The `Authorization` header, if any.
    pub authorization: Option<&'a str>,
    /// Index of the node this endpoint represents (the "local" node).
    pub local_node: usize,
}

/// A response: status, reason phrase, body.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub status: u16,
    pub reason: Option<String>,
    pub body: Vec<u8>,
    /// Extra delay before answering (401 delay), milliseconds.
    pub delay_ms: u64,
}

/// A failure, rendered the way PVE renders it.
#[derive(Debug, Clone)]
pub(crate) enum ApiError {
    Unauthorized(&'static str),
    Forbidden(String),
    Params(BTreeMap<String, String>),
    Status(u16, String),
    Proxy(u16, &'static str),
    NotImplemented(String),
}

type ApiResult = Result<Value, ApiError>;

fn param_error(name: &str, msg: impl Into<String>) -> ApiError {
    let mut m = BTreeMap::new();
    m.insert(name.to_string(), msg.into());
    ApiError::Params(m)
}

fn server_error(msg: impl Into<String>) -> ApiError {
    ApiError::Status(500, msg.into())
}

/// Renders an error reply. `with_message`: PVE ≥ 8.3 puts the message in the body.
pub(crate) fn error_reply(err: ApiError, with_message: bool, delay_ms: u64) -> Reply {
    let (status, msg, body): (u16, String, Option<Value>) = match err {
        ApiError::Unauthorized(reason) => {
            return Reply {
                status: 401,
                reason: Some(reason.to_string()),
                body: Vec::new(),
                delay_ms,
            };
        }
        ApiError::Proxy(code, reason) => {
            return Reply {
                status: code,
                reason: Some(reason.to_string()),
                body: Vec::new(),
                delay_ms: 0,
            };
        }
        ApiError::Forbidden(m) => (403, m, None),
        ApiError::Params(errors) => {
            let msg = "Parameter verification failed.".to_string();
            let mut b = json!({"data": null, "errors": errors});
            if with_message {
                b["message"] = json!(format!("{msg}\n"));
            }
            (400, msg, Some(b))
        }
        ApiError::Status(code, m) => (code, m, None),
        ApiError::NotImplemented(m) => (501, m, None),
    };
    let body = body.unwrap_or_else(|| {
        if with_message {
            json!({"data": null, "message": format!("{msg}\n")})
        } else {
            json!({"data": null})
        }
    });
    let reason = msg.lines().next().unwrap_or("").to_string();
    Reply {
        status,
        reason: Some(reason),
        body: body.to_string().into_bytes(),
        delay_ms: 0,
    }
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub user: String,
    pub tokenid: String,
    pub privileges: BTreeSet<String>,
}

impl Caller {
    fn require(&self, path: &str, privilege: &str) -> Result<(), ApiError> {
        if self.privileges.contains(privilege) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "Permission check failed ({path}, {privilege})"
            )))
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits a raw path (after `/api2/json`) into decoded segments.
pub(crate) fn split_path(raw: &str) -> Vec<String> {
    raw.split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect()
}

/// The route template of a path, for request counting (`/nodes/{node}/qemu/{vmid}/rrddata`).
pub(crate) fn route_of(segments: &[String]) -> String {
    let mut out = String::new();
    for (i, s) in segments.iter().enumerate() {
        let prev = if i > 0 { segments[i - 1].as_str() } else { "" };
        let first = segments.first().map(String::as_str).unwrap_or("");
        let name = match prev {
            "nodes" if i == 1 => "{node}",
            "qemu" | "lxc" if i == 3 && first == "nodes" => "{vmid}",
            "tasks" if first == "nodes" => "{upid}",
            "pools" if i == 1 => "{poolid}",
            "storage" if first == "nodes" && i == 3 => "{storage}",
            "resources" if i == 3 && segments.get(1).map(String::as_str) == Some("ha") => "{sid}",
            _ => s.as_str(),
        };
        out.push('/');
        out.push_str(name);
    }
    if out.is_empty() { "/".to_string() } else { out }
}

/// Checks the `Authorization` header against the scenario's tokens.
pub(crate) fn authenticate(sim: &Sim, header: Option<&str>, now: f64) -> Result<Caller, ApiError> {
    let Some(h) = header else {
        return Err(ApiError::Unauthorized("No ticket"));
    };
    // PVE looks for `PVEAPIToken=` or `PVEAPIToken ` anywhere at a word start.
    let pos = h
        .match_indices("PVEAPIToken")
        .map(|(i, _)| i)
        .find(|&i| i == 0 || h.as_bytes()[i - 1].is_ascii_whitespace());
    let Some(pos) = pos else {
        return Err(ApiError::Unauthorized("No ticket"));
    };
    let rest = &h[pos + "PVEAPIToken".len()..];
    let Some(rest) = rest.strip_prefix('=').or_else(|| rest.strip_prefix(' ')) else {
        return Err(ApiError::Unauthorized("No ticket"));
    };
    let value = percent_decode(rest.split(';').next().unwrap_or(""));
    let Some((id, secret)) = value.rsplit_once('=') else {
        return Err(ApiError::Unauthorized("Authentication failed!"));
    };
    let Some(token) = sim
        .scenario
        .tokens
        .iter()
        .find(|t| t.id == id && t.secret == secret)
    else {
        return Err(ApiError::Unauthorized("Authentication failed!"));
    };
    if token.expire.is_some_and(|e| (e as f64) <= now) {
        return Err(ApiError::Unauthorized("Authentication failed!"));
    }
    let (user, tokenid) = token.id.split_once('!').unwrap_or((token.id.as_str(), ""));
    let privileges = match &token.privileges {
        Some(p) => p.iter().cloned().collect(),
        None => ALL_PRIVILEGES.iter().map(|s| s.to_string()).collect(),
    };
    Ok(Caller {
        user: user.to_string(),
        tokenid: tokenid.to_string(),
        privileges,
    })
}

/// Request parameters with PVE's checks.
struct Params<'a> {
    list: &'a [(String, String)],
}

impl<'a> Params<'a> {
    /// Rejects parameters the endpoint does not define (`additionalProperties => 0`).
    fn allow(&self, allowed: &[&str]) -> Result<(), ApiError> {
        let mut errors = BTreeMap::new();
        for (k, _) in self.list {
            if !allowed.contains(&k.as_str()) {
                errors.insert(
                    k.clone(),
                    "property is not defined in schema and the schema does not allow additional properties"
                        .to_string(),
                );
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Params(errors))
        }
    }

    fn get(&self, name: &str) -> Option<&'a str> {
        self.list
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(Some(true)),
                "0" | "false" | "no" | "off" => Ok(Some(false)),
                _ => Err(param_error(
                    name,
                    format!("type check ('boolean') failed - got '{v}'"),
                )),
            },
        }
    }

    fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| {
                param_error(name, format!("type check ('integer') failed - got '{v}'"))
            }),
        }
    }

    fn number(&self, name: &str) -> Result<Option<f64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .map(Some)
                .ok_or_else(|| {
                    param_error(name, format!("type check ('number') failed - got '{v}'"))
                }),
        }
    }

    fn enumeration(&self, name: &str, values: &[&str]) -> Result<Option<&'a str>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) if values.contains(&v) => Ok(Some(v)),
            Some(v) => Err(param_error(
                name,
                format!(
                    "value '{v}' does not have a value in the enumeration '{}'",
                    values.join(", ")
                ),
            )),
        }
    }

    fn required(&self, name: &str) -> Result<&'a str, ApiError> {
        self.get(name)
            .ok_or_else(|| param_error(name, "property is missing and it is not optional"))
    }
}

/// Context the handlers need beside the simulation.
pub(crate) struct Ctx<'a> {
    /// Each node's certificate fingerprint, in node order.
    pub fingerprints: &'a [String],
}

/// Handles one request against the simulation at simulated time `now`.
pub(crate) fn handle(sim: &mut Sim, ctx: &Ctx<'_>, req: &Request<'_>, now: f64) -> Reply {
    sim.settle(now);
    let with_message = sim.version_tuple() >= (8, 3, 0);
    let delay = sim.scenario.cluster.auth_failure_delay_ms;
    let caller = match authenticate(sim, req.authorization, now) {
        Ok(c) => c,
        Err(e) => return error_reply(e, with_message, delay),
    };
    match route(sim, ctx, req, &caller, now) {
        Ok(data) => {
            let body = json!({ "data": data });
            Reply {
                status: 200,
                reason: None,
                body: body.to_string().into_bytes(),
                delay_ms: 0,
            }
        }
        Err(e) => error_reply(e, with_message, 0),
    }
}

fn not_implemented(req: &Request<'_>) -> ApiError {
    ApiError::NotImplemented(format!(
        "Method '{} /{}' not implemented",
        req.method.as_str(),
        req.segments.join("/")
    ))
}

fn route(sim: &mut Sim, ctx: &Ctx<'_>, req: &Request<'_>, caller: &Caller, now: f64) -> ApiResult {
    let p = Params { list: &req.params };
    let segs: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    use Method::{Get, Post};
    match (req.method, segs.as_slice()) {
        (Get, []) => Ok(
            json!([{"subdir":"version"},{"subdir":"cluster"},{"subdir":"nodes"},{"subdir":"pools"},{"subdir":"access"}]),
        ),
        (Get, ["version"]) => {
            p.allow(&[])?;
            Ok(version(sim))
        }
        (Get, ["access", "permissions"]) => {
            p.allow(&["path", "userid"])?;
            Ok(permissions(caller))
        }
        (Get, ["nodes"]) => {
            p.allow(&[])?;
            Ok(nodes_list(sim, ctx, now))
        }
        (Get, ["nodes", n]) => {
            proxied(sim, n, now)?;
            Ok(json!(
                [
                    "status", "rrddata", "storage", "qemu", "lxc", "tasks", "version"
                ]
                .iter()
                .map(|s| json!({"name": s}))
                .collect::<Vec<_>>()
            ))
        }
        (Get, ["nodes", n, "version"]) => {
            p.allow(&["node"])?;
            proxied(sim, n, now)?;
            Ok(version(sim))
        }
        (Get, ["nodes", n, "status"]) => {
            p.allow(&["node"])?;
            caller.require(&format!("/nodes/{n}"), "Sys.Audit")?;
            let i = proxied(sim, n, now)?;
            Ok(node_status(sim, i, now))
        }
        (Get, ["nodes", n, "rrddata"]) => {
            p.allow(&["node", "timeframe", "cf"])?;
            caller.require(&format!("/nodes/{n}"), "Sys.Audit")?;
            let i = known_node(sim, n)?;
            let (tf, max) = rrd_params(sim, &p, true)?;
            Ok(Value::Array(rrd::node_series(sim, i, now, tf, max)))
        }
        (Get, ["nodes", n, "storage"]) => {
            p.allow(&["node", "content", "enabled", "format", "storage", "target"])?;
            let i = proxied(sim, n, now)?;
            Ok(node_storage(sim, i, caller, p.get("storage")))
        }
        (Get, ["nodes", n, kind @ ("qemu" | "lxc")]) => {
            p.allow(&["node", "full"])?;
            let full = p.bool("full")?.unwrap_or(false);
            let i = proxied(sim, n, now)?;
            let kind = if *kind == "qemu" {
                GuestKind::Qemu
            } else {
                GuestKind::Lxc
            };
            Ok(guest_list(sim, i, kind, full, caller, now))
        }
        (Get, ["nodes", n, kind @ ("qemu" | "lxc"), vmid]) => {
            let i = proxied(sim, n, now)?;
            guest_on(sim, i, kind, vmid)?;
            Ok(
                json!([{"subdir":"config"},{"subdir":"status"},{"subdir":"rrddata"},{"subdir":"migrate"}]),
            )
        }
        (
            Get,
            [
                "nodes",
                n,
                kind @ ("qemu" | "lxc"),
                vmid,
                "status",
                "current",
            ],
        ) => {
            p.allow(&["node", "vmid"])?;
            caller.require(&format!("/vms/{vmid}"), "VM.Audit")?;
            let i = proxied(sim, n, now)?;
            let g = guest_on(sim, i, kind, vmid)?;
            Ok(guest_status(sim, g, now, true))
        }
        (Get, ["nodes", n, kind @ ("qemu" | "lxc"), vmid, "config"]) => {
            p.allow(&["node", "vmid", "current", "snapshot"])?;
            p.bool("current")?;
            caller.require(&format!("/vms/{vmid}"), "VM.Audit")?;
            let i = proxied(sim, n, now)?;
            let g = guest_on(sim, i, kind, vmid)?;
            Ok(guest_config(sim, g))
        }
        (Get, ["nodes", n, kind @ ("qemu" | "lxc"), vmid, "rrddata"]) => {
            p.allow(&["node", "vmid", "timeframe", "cf"])?;
            caller.require(&format!("/vms/{vmid}"), "VM.Audit")?;
            known_node(sim, n)?;
            let g = sim
                .guest_index
                .get(&parse_vmid(vmid)?)
                .copied()
                .ok_or_else(|| server_error(config_missing(n, kind, vmid)))?;
            let (tf, max) = rrd_params(sim, &p, false)?;
            Ok(Value::Array(rrd::guest_series(sim, g, now, tf, max)))
        }
        (Get, ["nodes", n, kind @ ("qemu" | "lxc"), vmid, "migrate"]) => {
            if *kind == "lxc" && !sim.pve9() {
                return Err(not_implemented(req));
            }
            p.allow(&["node", "vmid", "target"])?;
            caller.require(&format!("/vms/{vmid}"), "VM.Migrate")?;
            let i = proxied(sim, n, now)?;
            let g = guest_on(sim, i, kind, vmid)?;
            migrate_precondition(sim, g, now)
        }
        (Post, ["nodes", n, kind @ ("qemu" | "lxc"), vmid, "migrate"]) => {
            caller.require(&format!("/vms/{vmid}"), "VM.Migrate")?;
            migrate(sim, caller, n, kind, vmid, &p, now)
        }
        (Get, ["nodes", n, "tasks"]) => {
            p.allow(&[
                "node",
                "start",
                "limit",
                "vmid",
                "typefilter",
                "userfilter",
                "errors",
                "source",
                "since",
                "until",
                "statusfilter",
            ])?;
            let i = proxied(sim, n, now)?;
            node_tasks(sim, i, &p)
        }
        (Get, ["nodes", n, "tasks", upid]) => {
            proxied(sim, n, now)?;
            find_task(sim, upid)?;
            Ok(json!([{"name":"log"},{"name":"status"}]))
        }
        (Get, ["nodes", n, "tasks", upid, "status"]) => {
            p.allow(&["node", "upid"])?;
            proxied(sim, n, now)?;
            let t = find_task(sim, upid)?;
            Ok(task_status(&sim.tasks[t]))
        }
        (Get, ["nodes", n, "tasks", upid, "log"]) => {
            p.allow(&["node", "upid", "start", "limit", "download"])?;
            proxied(sim, n, now)?;
            let t = find_task(sim, upid)?;
            let start = p.int("start")?.unwrap_or(0).max(0) as usize;
            let limit = p.int("limit")?.unwrap_or(50).max(0) as usize;
            let task = &sim.tasks[t];
            let mut lines = task.log.clone();
            if task.done {
                lines.push(if task.exitstatus == "OK" {
                    "TASK OK".to_string()
                } else {
                    format!("TASK ERROR: {}", task.exitstatus)
                });
            }
            Ok(Value::Array(
                lines
                    .iter()
                    .enumerate()
                    .skip(start)
                    .take(limit)
                    .map(|(i, l)| json!({"n": i + 1, "t": l}))
                    .collect(),
            ))
        }
        (Get, ["cluster"]) => Ok(
            json!([{"name":"resources"},{"name":"status"},{"name":"options"},{"name":"tasks"},{"name":"ha"},{"name":"metrics"}]),
        ),
        (Get, ["cluster", "resources"]) => {
            p.allow(&["type"])?;
            let ty = p.enumeration("type", &["vm", "storage", "node", "sdn"])?;
            Ok(cluster_resources(sim, ty, caller, now))
        }
        (Get, ["cluster", "status"]) => {
            p.allow(&[])?;
            caller.require("/", "Sys.Audit")?;
            Ok(cluster_status(sim, req.local_node, now))
        }
        (Get, ["cluster", "options"]) => {
            p.allow(&[])?;
            caller.require("/", "Sys.Audit")?;
            Ok(cluster_options(sim))
        }
        (Get, ["cluster", "tasks"]) => {
            p.allow(&[])?;
            Ok(Value::Array(
                sim.tasks.iter().rev().take(500).map(task_row).collect(),
            ))
        }
        (Get, ["cluster", "metrics", "export"]) => {
            if !metrics_export_available(sim) {
                return Err(not_implemented(req));
            }
            p.allow(&["history", "local-only", "node-list", "start-time"])?;
            caller.require("/", "Sys.Audit")?;
            metrics_export(sim, &p, req.local_node, now)
        }
        (Get, ["cluster", "ha", "resources"]) => {
            p.allow(&["type"])?;
            let ty = p.enumeration("type", &["vm", "ct"])?;
            caller.require("/", "Sys.Audit")?;
            Ok(ha_resources(sim, ty))
        }
        (Get, ["cluster", "ha", "resources", sid]) => {
            caller.require("/", "Sys.Audit")?;
            let all = ha_resources(sim, None);
            all.as_array()
                .and_then(|a| a.iter().find(|r| r["sid"] == *sid).cloned())
                .ok_or_else(|| server_error(format!("no such resource '{sid}'")))
        }
        (Get, ["cluster", "ha", "status", "current"]) => {
            p.allow(&[])?;
            caller.require("/", "Sys.Audit")?;
            Ok(ha_status_current(sim, now))
        }
        (Get, ["cluster", "ha", "status", "manager_status"]) => {
            p.allow(&[])?;
            caller.require("/", "Sys.Audit")?;
            Ok(ha_manager_status(sim, now))
        }
        (Get, ["cluster", "ha", "rules"]) => {
            if !sim.pve9() {
                return Err(not_implemented(req));
            }
            p.allow(&["type", "resource"])?;
            caller.require("/", "Sys.Audit")?;
            Ok(ha_rules(sim, p.get("type"), p.get("resource")))
        }
        (Get, ["cluster", "ha", "groups"]) => {
            caller.require("/", "Sys.Audit")?;
            if sim.pve9() {
                return Err(server_error(
                    "cannot index groups: ha groups have been migrated to rules",
                ));
            }
            Ok(ha_groups(sim))
        }
        (Get, ["pools"]) => {
            p.allow(&["poolid", "type"])?;
            Ok(match p.get("poolid") {
                Some(id) => Value::Array(vec![pool_detail(sim, id, caller).map(|mut v| {
                    v["poolid"] = json!(id);
                    v
                })?]),
                None => Value::Array(sim.pools().keys().map(|k| json!({"poolid": k})).collect()),
            })
        }
        (Get, ["pools", id]) => {
            p.allow(&["poolid", "type"])?;
            pool_detail(sim, id, caller)
        }
        _ => Err(not_implemented(req)),
    }
}

fn version(sim: &Sim) -> Value {
    let v = sim.scenario.version();
    let (ma, mi, _) = sim.version_tuple();
    let repoid = format!("{:016x}", hash_str(&v));
    json!({"version": v, "release": format!("{ma}.{mi}"), "repoid": repoid})
}

fn permissions(caller: &Caller) -> Value {
    let privs: Map<String, Value> = caller
        .privileges
        .iter()
        .map(|p| (p.clone(), json!(1)))
        .collect();
    json!({ "/": privs.clone(), "/vms": privs.clone(), "/nodes": privs.clone(), "/storage": privs })
}

fn known_node(sim: &Sim, n: &str) -> Result<usize, ApiError> {
    sim.node_index.get(n).copied().ok_or_else(|| {
        server_error(format!("hostname lookup '{n}' failed - failed to get address info for: {n}: Name or service not known"))
    })
}

/// Resolves a node for a call PVE proxies to it; a downed node answers 595/596.
fn proxied(sim: &Sim, n: &str, now: f64) -> Result<usize, ApiError> {
    let i = known_node(sim, n)?;
    if !sim.node_online_at(i, now) {
        let (code, reason) = sim.nodes[i].down_mode.status();
        return Err(ApiError::Proxy(code, reason));
    }
    Ok(i)
}

fn parse_vmid(vmid: &str) -> Result<u32, ApiError> {
    vmid.parse::<u32>()
        .ok()
        .filter(|v| *v >= 100)
        .ok_or_else(|| {
            param_error(
                "vmid",
                format!("value '{vmid}' does not look like a valid VM ID"),
            )
        })
}

fn config_missing(n: &str, kind: &str, vmid: &str) -> String {
    if kind == "qemu" {
        format!("Configuration file 'nodes/{n}/qemu-server/{vmid}.conf' does not exist")
    } else {
        format!("Configuration file 'nodes/{n}/lxc/{vmid}.conf' does not exist")
    }
}

/// The guest `vmid` of `kind` configured on node `i`, or PVE's "does not exist" error.
fn guest_on(sim: &Sim, i: usize, kind: &str, vmid: &str) -> Result<usize, ApiError> {
    let id = parse_vmid(vmid)?;
    let n = &sim.nodes[i].spec.name;
    sim.guest_index
        .get(&id)
        .copied()
        .filter(|&g| sim.guests[g].node == i && sim.guests[g].spec.kind.as_str() == kind)
        .ok_or_else(|| server_error(config_missing(n, kind, vmid)))
}

fn rrd_params<'a>(sim: &Sim, p: &Params<'a>, node: bool) -> Result<(&'a str, bool), ApiError> {
    let allowed: &[&str] = if node && sim.pve9() {
        &["hour", "day", "week", "month", "year", "decade"]
    } else {
        &rrd::TIMEFRAMES[..5]
    };
    p.required("timeframe")?;
    let tf = p.enumeration("timeframe", allowed)?.unwrap_or("hour");
    let cf = p
        .enumeration("cf", &["AVERAGE", "MAX"])?
        .unwrap_or("AVERAGE");
    Ok((tf, cf == "MAX"))
}

fn level() -> &'static str {
    ""
}

fn nodes_list(sim: &Sim, ctx: &Ctx<'_>, now: f64) -> Value {
    let mut rows = Vec::new();
    for (i, n) in sim.nodes.iter().enumerate() {
        let name = &n.spec.name;
        let mut r = json!({"node": name, "id": format!("node/{name}"), "type": "node", "level": level(),
            "ssl_fingerprint": ctx.fingerprints.get(i).map_or("", String::as_str)});
        if sim.node_online_at(i, now) {
            let s = sim.node_sample_now(i, now);
            r["status"] = json!("online");
            r["cpu"] = json!(s.cpu);
            r["maxcpu"] = json!(n.spec.cores);
            r["mem"] = json!(s.mem_used as u64);
            r["maxmem"] = json!(s.mem_total as u64);
            r["disk"] = json!(s.root_used as u64);
            r["maxdisk"] = json!(crate::scenario::gib_bytes(n.spec.rootfs_gb));
            r["uptime"] = json!(sim.node_uptime(i, now));
        } else {
            r["status"] = json!("offline");
        }
        rows.push(r);
    }
    Value::Array(rows)
}

fn node_status(sim: &Sim, i: usize, now: f64) -> Value {
    let n = &sim.nodes[i];
    let s = sim.node_sample_now(i, now);
    let total = s.mem_total as u64;
    let used = s.mem_used as u64;
    let available = total - used.min(total);
    let free = (available as f64 * 0.8) as u64;
    let (ma, mi, pa) = sim.version_tuple();
    let phys = n.spec.physical_cores.unwrap_or((n.spec.cores / 2).max(1));
    let load = [s.loadavg, s.loadavg * 0.97, s.loadavg * 0.93];
    let mut memory = json!({"total": total, "used": used, "free": free});
    if sim.pve9() {
        memory["available"] = json!(available);
    }
    let root_total = crate::scenario::gib_bytes(n.spec.rootfs_gb);
    let root_used = s.root_used as u64;
    let kernel = if sim.pve9() {
        "6.14.11-4-pve"
    } else {
        "6.8.12-4-pve"
    };
    json!({
        "cpu": s.cpu,
        "wait": s.iowait,
        "idle": 0,
        "uptime": sim.node_uptime(i, now),
        "loadavg": load.iter().map(|l| format!("{l:.2}")).collect::<Vec<_>>(),
        "memory": memory,
        "swap": {"total": crate::model::SWAP_TOTAL as u64, "used": s.swap_used as u64,
                 "free": (crate::model::SWAP_TOTAL - s.swap_used).max(0.0) as u64},
        "ksm": {"shared": 0},
        "rootfs": {"total": root_total, "used": root_used, "free": root_total - root_used.min(root_total),
                   "avail": (root_total - root_used.min(root_total)) / 10 * 9},
        "cpuinfo": {"cpus": n.spec.cores, "cores": phys, "sockets": n.spec.sockets,
                    "model": "AMD EPYC 7402P 24-Core Processor", "mhz": "2800.000", "hvm": "1",
                    "flags": "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov", "user_hz": 100},
        "kversion": format!("Linux {kernel} #1 SMP PREEMPT_DYNAMIC PMX"),
        "current-kernel": {"sysname": "Linux", "release": kernel, "version": "#1 SMP PREEMPT_DYNAMIC PMX", "machine": "x86_64"},
        "boot-info": {"mode": "efi", "secureboot": 0},
        "pveversion": format!("pve-manager/{ma}.{mi}.{pa}/{:016x}", hash_str(&sim.scenario.version())),
    })
}

fn node_storage(sim: &Sim, i: usize, caller: &Caller, only: Option<&str>) -> Value {
    if !caller.privileges.contains("Datastore.Audit") {
        return json!([]);
    }
    let rows = sim.nodes[i]
        .spec
        .storages
        .iter()
        .filter(|s| only.is_none_or(|o| o == s.id))
        .map(|s| {
            let total = crate::scenario::gib_bytes(s.total_gb);
            let used = crate::scenario::gib_bytes(s.used_gb);
            let mut r = json!({"storage": s.id, "type": s.kind, "content": s.content,
                "shared": u8::from(s.shared), "enabled": 1, "active": u8::from(s.active)});
            if s.active {
                r["total"] = json!(total);
                r["used"] = json!(used);
                r["avail"] = json!(total - used.min(total));
                r["used_fraction"] = json!(used as f64 / total as f64);
            }
            r
        })
        .collect();
    Value::Array(rows)
}

/// The fields a guest list row and `status/current` share.
fn guest_status(sim: &Sim, g: usize, now: f64, full: bool) -> Value {
    let rt = &sim.guests[g];
    let qemu = rt.spec.kind == GuestKind::Qemu;
    let pve9 = sim.pve9();
    let maxmem = sim.maxmem(g);
    let maxdisk = sim.guest_maxdisk(g);
    let mut r = Map::new();
    r.insert("vmid".into(), json!(rt.spec.vmid));
    if !qemu {
        r.insert("type".into(), json!("lxc"));
    }
    r.insert("name".into(), json!(rt.name));
    r.insert(
        "status".into(),
        json!(if rt.running { "running" } else { "stopped" }),
    );
    r.insert("uptime".into(), json!(sim.guest_uptime(g, now)));
    r.insert("cpus".into(), json!(sim.guest_maxcpu(g)));
    r.insert("maxmem".into(), json!(maxmem));
    r.insert("maxdisk".into(), json!(maxdisk));
    if rt.running {
        let s = sim.guest_sample(g, tick(now));
        let c = sim.counters_at(g, tick(now));
        r.insert("pid".into(), json!(100_000 + rt.spec.vmid));
        r.insert("cpu".into(), json!(s.cpu));
        let mem = if qemu && !full { s.memhost } else { s.mem };
        r.insert("mem".into(), json!(mem as u64));
        r.insert(
            "disk".into(),
            json!(if qemu {
                0
            } else {
                (maxdisk as f64 * 0.4) as u64
            }),
        );
        r.insert("netin".into(), json!(c.net_in as u64));
        r.insert("netout".into(), json!(c.net_out as u64));
        if !qemu || full {
            r.insert("diskread".into(), json!(c.disk_read as u64));
            r.insert("diskwrite".into(), json!(c.disk_write as u64));
        }
        if pve9 {
            if qemu {
                r.insert("memhost".into(), json!(s.memhost as u64));
            }
            let cpu_pct = s.cpu * 100.0;
            let io = (s.disk_read + s.disk_write) / 1e7;
            let psi = [
                (
                    "pressurecpusome",
                    ((cpu_pct - 70.0).max(0.0) * 0.5).min(100.0),
                ),
                (
                    "pressurecpufull",
                    ((cpu_pct - 85.0).max(0.0) * 0.3).min(100.0),
                ),
                ("pressureiosome", io.min(100.0)),
                ("pressureiofull", (io / 2.0).min(100.0)),
                (
                    "pressurememorysome",
                    ((s.mem / maxmem as f64 - 0.9).max(0.0) * 100.0).min(100.0),
                ),
                ("pressurememoryfull", 0.0),
            ];
            for (k, v) in psi {
                // Containers report PSI as the raw strings read from cgroup files.
                let val = if qemu {
                    json!(v)
                } else {
                    json!(format!("{v:.2}"))
                };
                r.insert(k.into(), val);
            }
        }
        if qemu && full {
            r.insert("qmpstatus".into(), json!("running"));
            let actual = maxmem;
            let free = maxmem.saturating_sub(s.mem as u64);
            r.insert("balloon".into(), json!(actual));
            r.insert("freemem".into(), json!(free));
            r.insert(
                "ballooninfo".into(),
                json!({"actual": actual, "max_mem": maxmem, "total_mem": maxmem, "free_mem": free,
                       "mem_swapped_in": 0, "mem_swapped_out": 0, "major_page_faults": 1811,
                       "minor_page_faults": 3_803_793, "last_update": now as i64}),
            );
            r.insert("running-machine".into(), json!("pc-i440fx-9.0+pve0"));
            r.insert(
                "running-qemu".into(),
                json!(if pve9 { "10.0.2" } else { "9.0.2" }),
            );
            r.insert("nics".into(), json!({format!("tap{}i0", rt.spec.vmid): {"netin": c.net_in as u64, "netout": c.net_out as u64}}));
        }
        if !qemu {
            r.insert("swap".into(), json!(0));
            r.insert("maxswap".into(), json!(512u64 << 20));
        }
    } else {
        for k in ["cpu", "mem", "disk", "netin", "netout"] {
            r.insert(k.into(), json!(0));
        }
        if !qemu {
            r.insert("diskread".into(), json!(0));
            r.insert("diskwrite".into(), json!(0));
            r.insert("swap".into(), json!(0));
            r.insert("maxswap".into(), json!(512u64 << 20));
        } else if pve9 {
            r.insert("memhost".into(), json!(0));
        }
        if qemu && full {
            r.insert("qmpstatus".into(), json!("stopped"));
        }
    }
    if qemu && let Some(b) = rt.spec.balloon_min_gb.filter(|b| *b > 0.0) {
        r.insert("balloon_min".into(), json!(crate::scenario::mem_bytes(b)));
        r.insert("shares".into(), json!(1000));
    }
    if !rt.spec.tags.is_empty() {
        r.insert("tags".into(), json!(rt.spec.tags.join(";")));
    }
    if let Some(l) = &rt.lock {
        r.insert("lock".into(), json!(l));
    }
    if rt.spec.template {
        r.insert("template".into(), json!(1));
    }
    if full {
        let ha = match sim.ha_state(g) {
            Some(state) => {
                let mut ha = json!({"managed": 1, "state": state});
                if let Some(group) = sim.ha_group(g) {
                    ha["group"] = json!(group);
                }
                ha
            }
            None => json!({"managed": 0}),
        };
        r.insert("ha".into(), ha);
        if qemu {
            r.insert("agent".into(), json!(1));
        }
    }
    Value::Object(r)
}

fn guest_list(
    sim: &Sim,
    i: usize,
    kind: GuestKind,
    full: bool,
    caller: &Caller,
    now: f64,
) -> Value {
    if !caller.privileges.contains("VM.Audit") {
        return json!([]);
    }
    let mut gs: Vec<usize> = sim
        .guests_on(i)
        .into_iter()
        .filter(|&g| sim.guests[g].spec.kind == kind)
        .collect();
    // PVE answers in hash order; keep the output stable but not sorted by vmid.
    gs.sort_by_key(|&g| hash_str(&sim.guests[g].spec.vmid.to_string()));
    Value::Array(
        gs.into_iter()
            .map(|g| {
                let mut v = guest_status(sim, g, now, kind == GuestKind::Qemu && full);
                if let Some(o) = v.as_object_mut() {
                    o.remove("ha");
                    o.remove("agent");
                }
                v
            })
            .collect(),
    )
}

fn guest_config(sim: &Sim, g: usize) -> Value {
    let rt = &sim.guests[g];
    let mut c = Map::new();
    let tags = rt.spec.tags.join(";");
    match rt.spec.kind {
        GuestKind::Qemu => {
            c.insert("name".into(), json!(rt.name));
            // String-typed since qemu-server 8.0.8.
            c.insert("memory".into(), json!(sim.memory_mib(g).to_string()));
            if let Some(b) = rt.spec.balloon_min_gb {
                c.insert("balloon".into(), json!(crate::scenario::mem_mib(b)));
            }
            c.insert("cores".into(), json!(rt.spec.cores));
            c.insert("sockets".into(), json!(1));
            c.insert("cpu".into(), json!("x86-64-v2-AES"));
            c.insert("numa".into(), json!(0));
            c.insert("ostype".into(), json!("l26"));
            c.insert("scsihw".into(), json!("virtio-scsi-single"));
            c.insert("agent".into(), json!("1"));
            c.insert("boot".into(), json!("order=scsi0"));
            c.insert(
                "net0".into(),
                json!(format!(
                    "virtio=BC:24:11:{:02X}:{:02X}:{:02X},bridge=vmbr0",
                    (rt.spec.vmid >> 16) & 0xff,
                    (rt.spec.vmid >> 8) & 0xff,
                    rt.spec.vmid & 0xff
                )),
            );
            for (i, dev) in rt.spec.hostpci.iter().enumerate() {
                c.insert(format!("hostpci{i}"), json!(format!("{dev},pcie=1")));
            }
        }
        GuestKind::Lxc => {
            c.insert("hostname".into(), json!(rt.name));
            c.insert("memory".into(), json!(sim.memory_mib(g)));
            c.insert("swap".into(), json!(512));
            c.insert("cores".into(), json!(rt.spec.cores));
            c.insert("ostype".into(), json!("debian"));
            c.insert("arch".into(), json!("amd64"));
            c.insert("unprivileged".into(), json!(1));
            c.insert(
                "net0".into(),
                json!("name=eth0,bridge=vmbr0,ip=dhcp,type=veth"),
            );
        }
    }
    for d in &rt.disks {
        c.insert(d.key.clone(), json!(d.value));
    }
    if !tags.is_empty() {
        c.insert("tags".into(), json!(tags));
    }
    if let Some(l) = &rt.lock {
        c.insert("lock".into(), json!(l));
    }
    if rt.spec.template {
        c.insert("template".into(), json!(1));
    }
    let digest = format!(
        "{:016x}{:016x}{:08x}",
        hash_str(&format!("{c:?}")),
        hash_str(&rt.name),
        rt.spec.vmid
    );
    c.insert("digest".into(), json!(digest));
    Value::Object(c)
}

/// Storages a guest's volumes need on a target, with whether each is shared.
fn guest_storages(sim: &Sim, g: usize) -> Vec<(String, bool)> {
    let rt = &sim.guests[g];
    let src = &sim.nodes[rt.node].spec;
    let mut out: Vec<(String, bool)> = Vec::new();
    for d in &rt.disks {
        if let Some(s) = &d.storage {
            let shared = src
                .storages
                .iter()
                .find(|st| &st.id == s)
                .is_some_and(|st| st.shared)
                || d.shared_flag;
            if !out.iter().any(|(x, _)| x == s) {
                out.push((s.clone(), shared));
            }
        }
    }
    out
}

fn storage_on(sim: &Sim, n: usize, sid: &str) -> bool {
    sim.nodes[n]
        .spec
        .storages
        .iter()
        .any(|s| s.id == sid && s.active)
}

fn migrate_precondition(sim: &Sim, g: usize, now: f64) -> ApiResult {
    let rt = &sim.guests[g];
    if let Some(l) = &rt.lock {
        return Err(server_error(format!("VM is locked ({l})")));
    }
    if !sim.quorate(now) {
        return Err(server_error("cluster not ready - no quorum?"));
    }
    let storages = guest_storages(sim, g);
    let mut allowed = Vec::new();
    let mut not_allowed = Map::new();
    for (i, n) in sim.nodes.iter().enumerate() {
        if i == rt.node {
            continue;
        }
        let missing: Vec<&String> = storages
            .iter()
            .filter(|(s, _)| !storage_on(sim, i, s))
            .map(|(s, _)| s)
            .collect();
        if rt.spec.kind == GuestKind::Qemu {
            if missing.is_empty() {
                allowed.push(n.spec.name.clone());
                not_allowed.insert(n.spec.name.clone(), json!({}));
            } else {
                not_allowed.insert(
                    n.spec.name.clone(),
                    json!({"unavailable_storages": missing}),
                );
            }
        } else if missing.is_empty() {
            allowed.push(n.spec.name.clone());
        }
    }
    if rt.spec.kind == GuestKind::Lxc {
        return Ok(
            json!({"running": u8::from(rt.running), "allowed-nodes": allowed,
            "not-allowed-nodes": not_allowed, "dependent-ha-resources": []}),
        );
    }
    let local_disks: Vec<Value> = rt
        .disks
        .iter()
        .filter(|d| {
            d.host_path
                || !storages
                    .iter()
                    .any(|(s, sh)| Some(s) == d.storage.as_ref() && *sh)
        })
        .map(|d| {
            let volid = d.value.split(',').next().unwrap_or("").to_string();
            json!({"volid": volid, "size": d.size, "drivename": d.key, "cdrom": 0, "is_unused": 0,
                   "is_attached": 1, "is_cloudinit": 0, "is_vmstate": 0, "is_tpmstate": 0,
                   "replicate": 1, "shared": 0})
        })
        .collect();
    let local_resources: Vec<String> = (0..rt.spec.hostpci.len())
        .map(|i| format!("hostpci{i}"))
        .collect();
    let mut r = json!({"running": u8::from(rt.running), "allowed_nodes": allowed,
        "not_allowed_nodes": not_allowed, "local_disks": local_disks,
        "local_resources": local_resources, "mapped-resources": [], "mapped-resource-info": {}});
    if sim.pve9() {
        r["has-dbus-vmstate"] = json!(1);
    }
    Ok(r)
}

fn fmt_upid(
    node: &str,
    pid: u32,
    pstart: u64,
    start: i64,
    kind: &str,
    id: &str,
    user: &str,
) -> String {
    format!("UPID:{node}:{pid:08X}:{pstart:08X}:{start:08X}:{kind}:{id}:{user}:")
}

#[allow(clippy::too_many_arguments)]
fn new_task(
    sim: &mut Sim,
    node: usize,
    kind: &str,
    id: &str,
    user: &str,
    tokenid: Option<&str>,
    now: f64,
    duration: f64,
    exitstatus: &str,
    log: Vec<String>,
    effect: TaskEffect,
) -> String {
    let pid = sim.alloc_pid();
    let pstart = ((now - sim.nodes[node].boot).max(0.0) * 100.0) as u64;
    let start = now as i64;
    let full_user = match tokenid {
        Some(t) => format!("{user}!{t}"),
        None => user.to_string(),
    };
    let name = sim.nodes[node].spec.name.clone();
    let upid = fmt_upid(&name, pid, pstart, start, kind, id, &full_user);
    sim.tasks.push(Task {
        upid: upid.clone(),
        node: name,
        pid,
        pstart,
        starttime: start,
        kind: kind.to_string(),
        id: id.to_string(),
        user: user.to_string(),
        tokenid: tokenid.map(str::to_string),
        end: now + duration,
        exitstatus: exitstatus.to_string(),
        log,
        effect,
        done: false,
    });
    upid
}

fn hms(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

fn migrate(
    sim: &mut Sim,
    caller: &Caller,
    n: &str,
    kind: &str,
    vmid: &str,
    p: &Params<'_>,
    now: f64,
) -> ApiResult {
    let qemu = kind == "qemu";
    if qemu {
        let mut allowed = vec![
            "node",
            "vmid",
            "target",
            "online",
            "with-local-disks",
            "targetstorage",
            "bwlimit",
            "force",
            "migration_type",
            "migration_network",
        ];
        if sim.pve9() {
            allowed.push("with-conntrack-state");
        }
        p.allow(&allowed)?;
    } else {
        p.allow(&[
            "node",
            "vmid",
            "target",
            "restart",
            "timeout",
            "online",
            "target-storage",
            "bwlimit",
        ])?;
    }
    let online = p.bool("online")?.unwrap_or(false);
    let local_disks = p.bool("with-local-disks")?.unwrap_or(false);
    let restart = p.bool("restart")?.unwrap_or(false);
    p.bool("with-conntrack-state")?;
    p.bool("force")?;
    p.int("timeout")?;
    let bwlimit = p.number("bwlimit")?;
    if caller.user != "root@pam" {
        for opt in ["force", "migration_type", "migration_network"] {
            if p.get(opt).is_some() {
                return Err(param_error(opt, "Only root may use this option."));
            }
        }
    }
    let target = p.required("target")?.to_string();
    let src = proxied(sim, n, now)?;
    let g = guest_on(sim, src, kind, vmid)?;
    if target == sim.nodes[src].spec.name {
        return Err(param_error("target", "target is local node."));
    }
    let Some(&tgt) = sim.node_index.get(&target) else {
        return Err(server_error(format!("no such cluster node '{target}'")));
    };
    if !sim.quorate(now) {
        return Err(server_error("cluster not ready - no quorum?"));
    }
    let rt = sim.guests[g].clone();
    if let Some(l) = &rt.lock {
        let what = if qemu { "VM" } else { "CT" };
        return Err(server_error(format!("{what} is locked ({l})")));
    }
    if rt.running && qemu && !online {
        return Err(server_error("can't migrate running VM without --online"));
    }
    if rt.running && !qemu && !online && !restart {
        return Err(server_error(
            "can't migrate running container without --online or --restart",
        ));
    }
    let target_storage_given =
        p.get("targetstorage").is_some() || p.get("target-storage").is_some();
    if !target_storage_given {
        for (s, _) in guest_storages(sim, g) {
            if !storage_on(sim, tgt, &s) {
                return Err(server_error(format!(
                    "storage '{s}' is not available on node '{target}'"
                )));
            }
        }
    }
    let task_kind = if qemu { "qmigrate" } else { "vzmigrate" };
    let source_name = sim.nodes[src].spec.name.clone();
    // Reasons the migration fails inside the task.
    let mut abort: Option<String> = None;
    if !sim.node_online_at(tgt, now) {
        abort = Some(format!(
            "Can't connect to destination address using public key (node '{target}')"
        ));
    } else if qemu {
        if let Some(d) = rt.disks.iter().find(|d| d.host_path) {
            abort = Some(format!(
                "can't migrate local disk '{}': local file/device",
                d.value.split(',').next().unwrap_or("")
            ));
        } else if !rt.spec.hostpci.is_empty() {
            abort = Some("can't migrate VM which uses local devices: hostpci0".to_string());
        } else if rt.running && !local_disks {
            let shared = guest_storages(sim, g);
            if let Some((s, _)) = shared.iter().find(|(_, sh)| !sh) {
                abort = Some(format!(
                    "can't live migrate attached local disks without with-local-disks option (storage '{s}')"
                ));
            }
        }
    } else if rt.running && online {
        abort = Some("lxc live migration is currently not implemented".to_string());
    } else if let Some(d) = rt.disks.iter().find(|d| d.host_path && !d.shared_flag) {
        abort = Some(format!("cannot migrate local bind mount point '{}'", d.key));
    }
    let mib_s = bwlimit
        .map(|kib| (kib / 1024.0).max(1.0))
        .unwrap_or(f64::INFINITY)
        .min(sim.scenario.cluster.migration_mib_s);
    let mem_mib = sim.memory_mib(g) as f64;
    let local_mib: f64 = if local_disks || !rt.running {
        let shared = guest_storages(sim, g);
        rt.disks
            .iter()
            .filter(|d| {
                d.storage
                    .as_ref()
                    .is_some_and(|s| shared.iter().any(|(x, sh)| x == s && !sh))
            })
            .map(|d| d.size as f64 / 1_048_576.0)
            .sum()
    } else {
        0.0
    };
    let transfer = if rt.running { mem_mib } else { 0.0 } + local_mib;
    let duration = if abort.is_some() {
        2.0
    } else {
        2.0 + transfer / mib_s + if !qemu && rt.running { 5.0 } else { 0.0 }
    };
    let start_line = format!(
        "{} starting migration of {} {} to node '{target}'",
        hms(0.0),
        if qemu { "VM" } else { "CT" },
        rt.spec.vmid
    );
    let (exit, log, effect) = match &abort {
        Some(reason) => (
            "migration aborted".to_string(),
            vec![
                start_line,
                format!(
                    "ERROR: migration aborted (duration {}): {reason}",
                    hms(duration)
                ),
            ],
            TaskEffect::Unlock { guest: g },
        ),
        None => (
            "OK".to_string(),
            vec![
                start_line,
                format!(
                    "transferred {:.1} GiB of memory/disk state",
                    transfer / 1024.0
                ),
                format!(
                    "migration finished successfully (duration {})",
                    hms(duration)
                ),
            ],
            TaskEffect::Move {
                guest: g,
                target: tgt,
                restart: !qemu && rt.running,
            },
        ),
    };
    sim.guests[g].lock = Some("migrate".to_string());
    let ha = rt.spec.ha.as_deref().is_some_and(|h| h != "ignored");
    let id = rt.spec.vmid.to_string();
    if ha {
        // The API only queues an HA request; the LRM then runs the real migration as root@pam.
        let ha_upid = new_task(
            sim,
            src,
            "hamigrate",
            &id,
            &caller.user,
            Some(&caller.tokenid),
            now,
            1.0,
            "OK",
            vec![format!(
                "requesting HA migration for {} to node {target}",
                sim.sid(g)
            )],
            TaskEffect::None,
        );
        new_task(
            sim,
            src,
            task_kind,
            &id,
            "root@pam",
            None,
            now + 1.0,
            duration,
            &exit,
            log,
            effect,
        );
        let _ = source_name;
        return Ok(json!(ha_upid));
    }
    let upid = new_task(
        sim,
        src,
        task_kind,
        &id,
        &caller.user,
        Some(&caller.tokenid),
        now,
        duration,
        &exit,
        log,
        effect,
    );
    Ok(json!(upid))
}

fn find_task(sim: &Sim, upid: &str) -> Result<usize, ApiError> {
    if !upid.starts_with("UPID:") || upid.split(':').count() < 9 {
        return Err(param_error("upid", "unable to parse worker upid"));
    }
    sim.tasks
        .iter()
        .position(|t| t.upid == upid)
        .ok_or_else(|| param_error("upid", "no such task"))
}

fn task_row(t: &Task) -> Value {
    let mut r = json!({"upid": t.upid, "node": t.node, "pid": t.pid, "pstart": t.pstart,
        "starttime": t.starttime, "type": t.kind, "id": t.id, "user": t.user});
    if let Some(tok) = &t.tokenid {
        r["tokenid"] = json!(tok);
    }
    if t.done {
        r["status"] = json!(t.exitstatus);
        r["endtime"] = json!(t.end as i64);
    }
    r
}

fn task_status(t: &Task) -> Value {
    let mut r = json!({"upid": t.upid, "node": t.node, "pid": t.pid, "pstart": t.pstart,
        "starttime": t.starttime, "type": t.kind, "id": t.id, "user": t.user,
        "status": if t.done { "stopped" } else { "running" }});
    if let Some(tok) = &t.tokenid {
        r["tokenid"] = json!(tok);
    }
    if t.done {
        r["exitstatus"] = json!(t.exitstatus);
    }
    r
}

fn node_tasks(sim: &Sim, i: usize, p: &Params<'_>) -> ApiResult {
    let name = &sim.nodes[i].spec.name;
    let source = p
        .enumeration("source", &["archive", "active", "all"])?
        .unwrap_or("archive");
    let vmid = p.int("vmid")?;
    let start = p.int("start")?.unwrap_or(0).max(0) as usize;
    let limit = p.int("limit")?.unwrap_or(50).max(0) as usize;
    let since = p.int("since")?;
    let until = p.int("until")?;
    let errors = p.bool("errors")?.unwrap_or(false);
    let typefilter = p.get("typefilter");
    let userfilter = p.get("userfilter");
    let rows: Vec<Value> = sim
        .tasks
        .iter()
        .rev()
        .filter(|t| &t.node == name)
        .filter(|t| match source {
            "active" => !t.done,
            "archive" => t.done,
            _ => true,
        })
        .filter(|t| vmid.is_none_or(|v| t.id == v.to_string()))
        .filter(|t| typefilter.is_none_or(|f| t.kind == f))
        .filter(|t| userfilter.is_none_or(|u| t.user.contains(u)))
        .filter(|t| since.is_none_or(|s| t.starttime >= s))
        .filter(|t| until.is_none_or(|u| t.starttime <= u))
        .filter(|t| !errors || (t.done && t.exitstatus != "OK"))
        .skip(start)
        .take(limit)
        .map(task_row)
        .collect();
    Ok(Value::Array(rows))
}

fn cluster_resources(sim: &Sim, ty: Option<&str>, caller: &Caller, now: f64) -> Value {
    let mut rows = Vec::new();
    let sys = caller.privileges.contains("Sys.Audit");
    let vm_audit = caller.privileges.contains("VM.Audit");
    let ds = caller.privileges.contains("Datastore.Audit");
    let node_hastate = sim.version_tuple() >= (8, 3, 0);
    let pve9 = sim.pve9();
    let stale = 300.0;
    if ty.is_none() || ty == Some("node") {
        for (i, n) in sim.nodes.iter().enumerate() {
            let name = &n.spec.name;
            let mut r = json!({"id": format!("node/{name}"), "type": "node", "node": name, "level": level()});
            let down = sim.node_down_since(i, now);
            r["status"] = json!(if down.is_some() { "offline" } else { "online" });
            if sys {
                match down {
                    None => {
                        let s = sim.node_sample_now(i, now);
                        r["cgroup-mode"] = json!(2);
                        r["cpu"] = json!(s.cpu);
                        r["maxcpu"] = json!(n.spec.cores);
                        r["mem"] = json!(s.mem_used as u64);
                        r["maxmem"] = json!(s.mem_total as u64);
                        r["disk"] = json!(s.root_used as u64);
                        r["maxdisk"] = json!(crate::scenario::gib_bytes(n.spec.rootfs_gb));
                        r["uptime"] = json!(sim.node_uptime(i, now));
                    }
                    Some(since) if now - since < stale => {
                        r["maxcpu"] = json!(n.spec.cores);
                        r["maxmem"] = json!(crate::scenario::gib_bytes(n.spec.memory_gb));
                        r["maxdisk"] = json!(crate::scenario::gib_bytes(n.spec.rootfs_gb));
                    }
                    Some(_) => {
                        if let Some(o) = r.as_object_mut() {
                            o.remove("level");
                        }
                    }
                }
            } else if let Some(o) = r.as_object_mut() {
                o.retain(|k, _| ["id", "type", "node", "status", "level"].contains(&k.as_str()));
            }
            if node_hastate {
                let hs = if down.is_some() {
                    "unknown"
                } else if n.maintenance {
                    "maintenance"
                } else {
                    "online"
                };
                r["hastate"] = json!(hs);
            }
            rows.push(r);
        }
    }
    if (ty.is_none() || ty == Some("vm")) && vm_audit {
        for (g, rt) in sim.guests.iter().enumerate() {
            let kind = rt.spec.kind.as_str();
            let node = &sim.nodes[rt.node].spec.name;
            let mut r = json!({"id": format!("{kind}/{}", rt.spec.vmid), "type": kind, "vmid": rt.spec.vmid, "node": node});
            let down = sim.node_down_since(rt.node, now);
            let extras = |r: &mut Value| {
                if !rt.spec.tags.is_empty() {
                    r["tags"] = json!(rt.spec.tags.join(";"));
                }
                if let Some(l) = &rt.lock {
                    r["lock"] = json!(l);
                }
                if let Some(p) = &rt.spec.pool {
                    r["pool"] = json!(p);
                }
                if let Some(h) = sim.ha_state(g) {
                    r["hastate"] = json!(h);
                }
            };
            if let Some(since) = down
                && now - since >= stale
            {
                r["status"] = json!("unknown");
                extras(&mut r);
                rows.push(r);
                continue;
            }
            // While the node's last report is fresh, values are frozen at its last tick.
            let t = down.map(tick).unwrap_or_else(|| tick(now));
            r["name"] = json!(rt.name);
            r["template"] = json!(u8::from(rt.spec.template));
            r["maxcpu"] = json!(sim.guest_maxcpu(g));
            r["maxmem"] = json!(sim.maxmem(g));
            let maxdisk = sim.guest_maxdisk(g);
            r["maxdisk"] = json!(maxdisk);
            if rt.running {
                let s = sim.guest_sample(g, t);
                let c = sim.counters_at(g, t);
                r["status"] = json!("running");
                r["cpu"] = json!(s.cpu);
                r["mem"] = json!(s.mem as u64);
                if pve9 {
                    r["memhost"] = json!(if kind == "qemu" { s.memhost as u64 } else { 0 });
                }
                r["disk"] = json!(if kind == "qemu" {
                    0
                } else {
                    (maxdisk as f64 * 0.4) as u64
                });
                r["netin"] = json!(c.net_in as u64);
                r["netout"] = json!(c.net_out as u64);
                r["diskread"] = json!(c.disk_read as u64);
                r["diskwrite"] = json!(c.disk_write as u64);
                r["uptime"] = json!(sim.guest_uptime(g, t));
            } else {
                r["status"] = json!("stopped");
                for k in [
                    "cpu",
                    "mem",
                    "disk",
                    "netin",
                    "netout",
                    "diskread",
                    "diskwrite",
                    "uptime",
                ] {
                    r[k] = json!(0);
                }
                if pve9 {
                    r["memhost"] = json!(0);
                }
            }
            extras(&mut r);
            rows.push(r);
        }
    }
    if (ty.is_none() || ty == Some("storage")) && ds {
        for (i, n) in sim.nodes.iter().enumerate() {
            let name = &n.spec.name;
            let down = sim
                .node_down_since(i, now)
                .is_some_and(|s| now - s >= stale);
            for s in &n.spec.storages {
                let mut r = json!({"id": format!("storage/{name}/{}", s.id), "type": "storage", "storage": s.id,
                    "node": name, "plugintype": s.kind, "shared": u8::from(s.shared), "content": s.content});
                if down || !s.active {
                    r["status"] = json!("unknown");
                } else {
                    r["status"] = json!("available");
                    r["disk"] = json!(crate::scenario::gib_bytes(s.used_gb));
                    r["maxdisk"] = json!(crate::scenario::gib_bytes(s.total_gb));
                }
                rows.push(r);
            }
        }
    }
    if ty.is_none() {
        for p in sim.pools().keys() {
            rows.push(json!({"id": format!("/pool/{p}"), "type": "pool", "pool": p}));
        }
    }
    Value::Array(rows)
}

fn cluster_status(sim: &Sim, local: usize, now: f64) -> Value {
    let mut rows = vec![
        json!({"type": "cluster", "id": "cluster", "name": sim.scenario.cluster.name,
        "nodes": sim.nodes.len(), "version": sim.nodes.len() + 2, "quorate": u8::from(sim.quorate(now))}),
    ];
    for (i, n) in sim.nodes.iter().enumerate() {
        rows.push(json!({"type": "node", "id": format!("node/{}", n.spec.name), "name": n.spec.name,
            "nodeid": i + 1, "online": u8::from(sim.node_online_at(i, now)), "local": u8::from(i == local),
            "ip": n.ip, "level": level()}));
    }
    Value::Array(rows)
}

fn cluster_options(sim: &Sim) -> Value {
    let c = &sim.scenario.cluster;
    let mut crs = json!({"ha": c.crs_ha, "ha-rebalance-on-start": 0});
    if sim.version_tuple() >= (9, 2, 0) {
        crs["ha-auto-rebalance"] = json!(u8::from(c.crs_auto_rebalance));
    }
    json!({"keyboard": "en-us", "migration": {"type": "secure"}, "ha": {"shutdown_policy": "conditional"},
        "crs": crs, "description": format!("pvesim cluster {}", sim.scenario.cluster.name)})
}

fn metrics_export_available(sim: &Sim) -> bool {
    sim.version_tuple() >= (8, 2, 5)
}

fn metrics_export(sim: &Sim, p: &Params<'_>, local: usize, now: f64) -> ApiResult {
    let history = p.bool("history")?.unwrap_or(false);
    let local_only = p.bool("local-only")?.unwrap_or(false);
    let start_time = p.int("start-time")?;
    let node_list: Option<Vec<String>> = p.get("node-list").map(|s| {
        s.split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect()
    });
    let latest = tick(now) as i64;
    let oldest = latest - 1790;
    let mut gens: Vec<i64> = if history {
        (0..180).map(|k| oldest + k * 10).collect()
    } else {
        vec![latest]
    };
    if let Some(st) = start_time {
        gens.retain(|&t| t > st);
    }
    let nodes: Vec<usize> = (0..sim.nodes.len())
        .filter(|&i| !local_only || i == local)
        .filter(|&i| {
            node_list
                .as_ref()
                .is_none_or(|l| l.contains(&sim.nodes[i].spec.name))
        })
        .filter(|&i| sim.node_online_at(i, now))
        .collect();
    let mut rows = Vec::new();
    let gauge = |rows: &mut Vec<Value>, id: &str, metric: &str, value: f64, ts: i64| {
        rows.push(
            json!({"id": id, "metric": metric, "value": value, "timestamp": ts, "type": "gauge"}),
        );
    };
    let derive = |rows: &mut Vec<Value>, id: &str, metric: &str, value: f64, ts: i64| {
        rows.push(json!({"id": id, "metric": metric, "value": value.floor(), "timestamp": ts, "type": "derive"}));
    };
    for &ts in &gens {
        let t = ts as f64;
        for &i in &nodes {
            if !sim.node_online_at(i, t) {
                continue;
            }
            let n = &sim.nodes[i];
            let candidates = sim.guests_ever_on(i);
            let members = sim.running_on_at(i, t, &candidates);
            let s = sim.node_sample(i, t, &members);
            let id = format!("node/{}", n.spec.name);
            let threads = f64::from(n.spec.cores);
            gauge(&mut rows, &id, "uptime", (t - n.boot).max(0.0), ts);
            let net: (f64, f64) = members.iter().fold((0.0, 0.0), |a, &g| {
                let c = sim.counters_at(g, t);
                (a.0 + c.net_in, a.1 + c.net_out)
            });
            derive(&mut rows, &id, "net_in", net.0, ts);
            derive(&mut rows, &id, "net_out", net.1, ts);
            gauge(&mut rows, &id, "cpu_avg1", s.loadavg, ts);
            gauge(&mut rows, &id, "cpu_avg5", s.loadavg * 0.97, ts);
            gauge(&mut rows, &id, "cpu_avg15", s.loadavg * 0.93, ts);
            gauge(&mut rows, &id, "cpu_max", threads, ts);
            gauge(&mut rows, &id, "cpu_current", s.cpu, ts);
            gauge(&mut rows, &id, "cpu_iowait", s.iowait, ts);
            gauge(&mut rows, &id, "mem_total", s.mem_total, ts);
            gauge(&mut rows, &id, "mem_used", s.mem_used.floor(), ts);
            gauge(&mut rows, &id, "swap_total", crate::model::SWAP_TOTAL, ts);
            gauge(&mut rows, &id, "swap_used", s.swap_used.floor(), ts);
            gauge(
                &mut rows,
                &id,
                "disk_total",
                crate::scenario::gib_bytes(n.spec.rootfs_gb) as f64,
                ts,
            );
            gauge(&mut rows, &id, "disk_used", s.root_used.floor(), ts);
            for g in candidates
                .iter()
                .copied()
                .filter(|&g| sim.guest_node_at(g, t) == i)
            {
                let rt = &sim.guests[g];
                let kind = rt.spec.kind.as_str();
                let id = format!("{kind}/{}", rt.spec.vmid);
                let maxdisk = sim.guest_maxdisk(g) as f64;
                gauge(
                    &mut rows,
                    &id,
                    "cpu_max",
                    f64::from(sim.guest_maxcpu(g)),
                    ts,
                );
                gauge(&mut rows, &id, "mem_total", sim.maxmem(g) as f64, ts);
                gauge(&mut rows, &id, "disk_total", maxdisk, ts);
                if rt.running {
                    let gs = sim.guest_sample(g, t);
                    let c = sim.counters_at(g, t);
                    gauge(&mut rows, &id, "uptime", (t - rt.started).max(0.0), ts);
                    gauge(&mut rows, &id, "cpu_current", gs.cpu, ts);
                    gauge(&mut rows, &id, "mem_used", gs.mem.floor(), ts);
                    derive(&mut rows, &id, "disk_read", c.disk_read, ts);
                    derive(&mut rows, &id, "disk_write", c.disk_write, ts);
                    derive(&mut rows, &id, "net_in", c.net_in, ts);
                    derive(&mut rows, &id, "net_out", c.net_out, ts);
                    if kind == "lxc" {
                        gauge(&mut rows, &id, "disk_used", (maxdisk * 0.4).floor(), ts);
                    }
                } else {
                    gauge(&mut rows, &id, "uptime", 0.0, ts);
                }
            }
            for st in &n.spec.storages {
                let id = format!("storage/{}/{}", n.spec.name, st.id);
                gauge(
                    &mut rows,
                    &id,
                    "disk_total",
                    crate::scenario::gib_bytes(st.total_gb) as f64,
                    ts,
                );
                gauge(
                    &mut rows,
                    &id,
                    "disk_used",
                    crate::scenario::gib_bytes(st.used_gb) as f64,
                    ts,
                );
            }
        }
    }
    Ok(json!({"data": rows}))
}

fn ha_resources(sim: &Sim, ty: Option<&str>) -> Value {
    let rows: Vec<Value> = sim
        .guests
        .iter()
        .enumerate()
        .filter_map(|(g, rt)| {
            let state = rt.spec.ha.as_ref()?;
            let t = if rt.spec.kind == GuestKind::Qemu {
                "vm"
            } else {
                "ct"
            };
            if ty.is_some_and(|x| x != t) {
                return None;
            }
            let mut row = json!({"sid": sim.sid(g), "type": t, "state": state,
                "digest": format!("{:016x}", hash_str(&sim.sid(g)))});
            if let Some(group) = sim.ha_group(g) {
                row["group"] = json!(group);
            }
            Some(row)
        })
        .collect();
    Value::Array(rows)
}

fn ctime(t: f64) -> String {
    // A compact C-style timestamp in UTC ("Fri Aug 14 10:00:02 2026").
    let secs = t.max(0.0) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, (rem / 60) % 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let mn = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(mo - 1) as usize];
    format!("{wd} {mn} {d:>2} {h:02}:{m:02}:{s:02} {y}")
}

fn master_node(sim: &Sim, now: f64) -> usize {
    (0..sim.nodes.len())
        .find(|&i| sim.node_online_at(i, now))
        .unwrap_or(0)
}

fn ha_status_current(sim: &Sim, now: f64) -> Value {
    let master = master_node(sim, now);
    let mname = &sim.nodes[master].spec.name;
    let quorate = sim.quorate(now);
    let ts = now as i64;
    let mut rows = vec![
        json!({"id": "quorum", "type": "quorum", "node": mname,
            "status": if quorate { "OK".to_string() } else { format!("No quorum on node '{mname}'!") },
            "quorate": u8::from(quorate)}),
        json!({"id": "master", "type": "master", "node": mname, "status": format!("{mname} (active, {})", ctime(now)), "timestamp": ts}),
    ];
    for (i, n) in sim.nodes.iter().enumerate() {
        let name = &n.spec.name;
        let (state, t) = match sim.node_down_since(i, now) {
            Some(since) => ("old timestamp - dead?", since),
            None if n.maintenance => ("maintenance mode", now),
            None => ("active", now),
        };
        rows.push(
            json!({"id": format!("lrm:{name}"), "type": "lrm", "node": name,
            "status": format!("{name} ({state}, {})", ctime(t)), "timestamp": t as i64}),
        );
    }
    for (g, rt) in sim.guests.iter().enumerate() {
        if rt.spec.ha.is_none() {
            continue;
        }
        let sid = sim.sid(g);
        let node = &sim.nodes[rt.node].spec.name;
        let state = sim.ha_state(g).unwrap_or_default();
        let req = rt.spec.ha.clone().unwrap_or_default();
        rows.push(
            json!({"id": format!("service:{sid}"), "type": "service", "sid": sid, "node": node,
            "state": state, "crm_state": state, "request_state": req,
            "status": format!("{sid} ({node}, {state})"), "max_restart": 1, "max_relocate": 1}),
        );
    }
    Value::Array(rows)
}

fn ha_manager_status(sim: &Sim, now: f64) -> Value {
    let master = master_node(sim, now);
    let mname = sim.nodes[master].spec.name.clone();
    let mut node_status = Map::new();
    let mut node_request = Map::new();
    let mut lrm = Map::new();
    for (i, n) in sim.nodes.iter().enumerate() {
        let name = n.spec.name.clone();
        let st = if !sim.node_online_at(i, now) {
            "unknown"
        } else if n.maintenance {
            "maintenance"
        } else {
            "online"
        };
        node_status.insert(name.clone(), json!(st));
        if n.maintenance {
            node_request.insert(name.clone(), json!({"maintenance": 1}));
        }
        let mode = if n.maintenance {
            "maintenance"
        } else {
            "active"
        };
        lrm.insert(
            name,
            json!({"mode": mode, "state": mode, "results": {}, "timestamp": now as i64}),
        );
    }
    let mut services = Map::new();
    for (g, rt) in sim.guests.iter().enumerate() {
        if rt.spec.ha.is_none() {
            continue;
        }
        let state = sim.ha_state(g).unwrap_or_default();
        let mut s = json!({"node": sim.nodes[rt.node].spec.name, "state": state,
            "uid": format!("{:022x}", hash_str(&sim.sid(g)))});
        if rt.running {
            s["running"] = json!(1);
        }
        services.insert(sim.sid(g), s);
    }
    json!({"quorum": {"node": mname, "quorate": u8::from(sim.quorate(now))},
        "manager_status": {"master_node": mname, "timestamp": now as i64, "node_status": node_status,
            "node_request": node_request, "service_status": services},
        "lrm_status": lrm})
}

fn ha_rules(sim: &Sim, ty: Option<&str>, resource: Option<&str>) -> Value {
    Value::Array(
        sim.scenario
            .ha_rules
            .iter()
            .enumerate()
            .filter(|(_, r)| ty.is_none_or(|t| t == r.kind))
            .filter(|(_, r)| resource.is_none_or(|x| r.resources.split(',').any(|s| s == x)))
            .map(|(i, r)| {
                let mut v = json!({"rule": r.rule, "type": r.kind, "resources": r.resources,
                    "disable": u8::from(r.disable), "order": i + 1,
                    "digest": format!("{:016x}", hash_str(&r.rule))});
                if let Some(a) = &r.affinity {
                    v["affinity"] = json!(a);
                }
                if let Some(n) = &r.nodes {
                    v["nodes"] = json!(n);
                    v["strict"] = json!(u8::from(r.strict));
                }
                v
            })
            .collect(),
    )
}

fn ha_groups(sim: &Sim) -> Value {
    Value::Array(
        sim.scenario
            .ha_rules
            .iter()
            .filter(|r| r.kind == "node-affinity")
            .map(|r| {
                json!({"group": r.rule, "type": "group", "nodes": r.nodes.clone().unwrap_or_default(),
                    "restricted": u8::from(r.strict), "nofailback": u8::from(r.nofailback),
                    "digest": format!("{:016x}", hash_str(&r.rule))})
            })
            .collect(),
    )
}

fn pool_detail(sim: &Sim, id: &str, caller: &Caller) -> ApiResult {
    let pools = sim.pools();
    let Some(members) = pools.get(id) else {
        return Err(server_error(format!("pool '{id}' does not exist")));
    };
    if !caller.privileges.contains("Pool.Audit") && !caller.privileges.contains("VM.Audit") {
        return Err(ApiError::Forbidden(format!(
            "Permission check failed (/pool/{id}, Pool.Audit)"
        )));
    }
    let rows: Vec<Value> = members
        .iter()
        .map(|&g| {
            let rt = &sim.guests[g];
            let kind = rt.spec.kind.as_str();
            json!({"id": format!("{kind}/{}", rt.spec.vmid), "type": kind, "vmid": rt.spec.vmid,
                "node": sim.nodes[rt.node].spec.name, "name": rt.name,
                "status": if rt.running { "running" } else { "stopped" },
                "maxmem": sim.maxmem(g), "maxcpu": sim.guest_maxcpu(g)})
        })
        .collect();
    Ok(json!({"members": rows}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_templated() {
        let r = |p: &str| route_of(&split_path(p));
        assert_eq!(
            r("/nodes/pve1/qemu/100/rrddata"),
            "/nodes/{node}/qemu/{vmid}/rrddata"
        );
        assert_eq!(r("/cluster/resources"), "/cluster/resources");
        assert_eq!(
            r(
                "/nodes/pve1/tasks/UPID%3Apve1%3A0016E9A5%3A1%3A2%3Aqmigrate%3A100%3Aa%40pve%21x%3A/status"
            ),
            "/nodes/{node}/tasks/{upid}/status"
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%40pve%21x"), "a@pve!x");
        assert_eq!(percent_decode("bad%zz%4"), "bad%zz%4");
    }

    #[test]
    fn ctime_formats_like_c() {
        assert_eq!(ctime(1_786_701_602.0), "Fri Aug 14 10:00:02 2026");
    }

    #[test]
    fn errors_render_like_pve() {
        let r = error_reply(param_error("target", "target is local node."), true, 0);
        assert_eq!(r.status, 400);
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        assert_eq!(v["errors"]["target"], "target is local node.");
        assert_eq!(v["message"], "Parameter verification failed.\n");
        let r = error_reply(
            ApiError::Status(500, "VM is locked (backup)".into()),
            false,
            0,
        );
        assert_eq!(r.reason.as_deref(), Some("VM is locked (backup)"));
        assert_eq!(r.body, br#"{"data":null}"#.to_vec());
        let r = error_reply(ApiError::Unauthorized("No ticket"), true, 5);
        assert!(r.body.is_empty() && r.status == 401 && r.delay_ms == 5);
    }
}
