//! Subcommands that talk to a running recommender over gRPC: `recommendations`, `state`,
//! `options --server`, `watch` and `events`.
//!
//! `recommendations --format json` prints exactly what `plan --format json` prints for the same
//! cluster view: the protobuf set is converted back to the engine's types losslessly and
//! rendered by the same functions.

use std::io::Write;

use proxbalance_proto::v1 as pb;
use proxbalance_proto::v1::recommender_client::RecommenderClient;
use serde_json::{Value, json};
use tonic::Code;
use tonic::transport::Channel;

use super::offline::{render_options, render_plan, to_json};
use super::table::Table;
use super::{CliError, EventsArgs, Format, RecommendationsArgs, ServerArgs, StateArgs, WatchArgs};
use crate::convert;
use crate::state::dashboard::{event_json, pct, reason_word, state_word, status_word};

const MAX_MESSAGE: usize = 256 * 1024 * 1024;

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Output)
}

/// The scheme is `http://` when the URL has none, or `https://` when TLS files are given.
fn endpoint(server: &ServerArgs) -> String {
    if server.server.contains("://") {
        server.server.clone()
    } else if server.ca.is_some() || server.cert.is_some() {
        format!("https://{}", server.server)
    } else {
        format!("http://{}", server.server)
    }
}

fn read_file(path: &std::path::Path, flag: &str) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError::Input(format!("{flag} {}: {e}", path.display())))
}

/// The environment variable the bearer token is read from when --token-file is not given.
pub const TOKEN_ENV: &str = "PROXBALANCE_TOKEN";

/// Adds `authorization: Bearer <token>` to every call when a token is configured.
#[derive(Clone)]
pub struct BearerToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "BearerToken(***)"
        } else {
            "BearerToken(None)"
        })
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

fn bearer(server: &ServerArgs) -> Result<BearerToken, CliError> {
    let token = match &server.token_file {
        Some(path) => proxbalance_runtime::Secret::from_file(path, "--token-file")
            .map(Some)
            .map_err(|e| CliError::Input(format!("{}: {}", e.field, e.detail)))?,
        None => match std::env::var(TOKEN_ENV) {
            Ok(v) if !v.trim().is_empty() => Some(proxbalance_runtime::Secret::new(v.trim())),
            _ => None,
        },
    };
    let Some(token) = token else {
        return Ok(BearerToken(None));
    };
    let mut value: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
        format!("Bearer {}", token.expose()).parse().map_err(|_| {
            CliError::Input("the bearer token has characters a header cannot carry".into())
        })?;
    value.set_sensitive(true);
    Ok(BearerToken(Some(value)))
}

/// A client of the recommender at `--server`, with TLS and the bearer token when configured.
pub type Client =
    RecommenderClient<tonic::service::interceptor::InterceptedService<Channel, BearerToken>>;

async fn connect(server: &ServerArgs) -> Result<Client, CliError> {
    let url = endpoint(server);
    let mut endpoint = tonic::transport::Endpoint::from_shared(url.clone())
        .map_err(|e| {
            CliError::Input(format!(
                "--server {:?}: {e}",
                proxbalance_runtime::redact_url(&url)
            ))
        })?
        // A large cluster's set is several hundred KiB: HTTP/2's default 64 KiB window would make
        // every response wait for window updates.
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(16 << 20));
    if url.starts_with("https://") {
        let mut tls = tonic::transport::ClientTlsConfig::new();
        if let Some(ca) = &server.ca {
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(read_file(
                ca, "--ca",
            )?));
        }
        if let (Some(cert), Some(key)) = (&server.cert, &server.key) {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                read_file(cert, "--cert")?,
                read_file(key, "--key")?,
            ));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| CliError::Input(format!("--ca/--cert/--key: {e}")))?;
    }
    let interceptor = bearer(server)?;
    let channel = endpoint.connect().await.map_err(|e| {
        CliError::Unavailable(format!(
            "cannot reach the recommender at {}: {e}",
            proxbalance_runtime::redact_url(&url)
        ))
    })?;
    Ok(RecommenderClient::with_interceptor(channel, interceptor)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}

/// NOT_FOUND and INVALID_ARGUMENT are the caller's input (exit 2); the rest is the service's.
fn status_error(s: tonic::Status) -> CliError {
    match s.code() {
        Code::NotFound | Code::InvalidArgument => CliError::Input(s.message().to_owned()),
        code => CliError::Unavailable(format!("recommender: {code:?}: {}", s.message())),
    }
}

fn converted<T>(r: Result<T, convert::ConvertError>) -> Result<T, CliError> {
    r.map_err(|e| CliError::Unavailable(format!("the recommender sent an unreadable answer: {e}")))
}

/// `proxbalance recommendations`.
pub(super) fn recommendations(args: &RecommendationsArgs) -> Result<String, CliError> {
    let overrides = super::overrides_from(&args.tuning, args.limit)?;
    runtime()?.block_on(async {
        let mut client = connect(&args.server).await?;
        let request = pb::GetRecommendationsRequest {
            cluster: args.cluster.clone(),
            overrides: Some(convert::overrides_to_proto(&overrides)),
            limit: overrides
                .limit
                .map_or(0, |l| u32::try_from(l).unwrap_or(u32::MAX)),
            // What `plan` prints: the score breakdowns and the skipped guests too.
            view: pb::SetView::Full.into(),
        };
        let resp = client
            .get_recommendations(request)
            .await
            .map_err(status_error)?
            .into_inner();
        let set = resp
            .set
            .ok_or_else(|| CliError::Unavailable("the recommender sent no set".into()))?;
        let set = converted(convert::set_from_proto(&set))?;
        match args.format {
            Format::Json => to_json(&set),
            Format::Table => Ok(render_plan(&set)),
        }
    })
}

/// `proxbalance options --server`.
pub(super) fn options(
    server: &ServerArgs,
    cluster: &str,
    vmid: u32,
    tuning: &super::TuningArgs,
    format: Format,
) -> Result<String, CliError> {
    let overrides = super::overrides_from(tuning, None)?;
    runtime()?.block_on(async {
        let mut client = connect(server).await?;
        let resp = client
            .get_migration_options(pb::GetMigrationOptionsRequest {
                cluster: cluster.to_owned(),
                vmid,
                overrides: Some(convert::overrides_to_proto(&overrides)),
            })
            .await
            .map_err(status_error)?
            .into_inner();
        let o = resp
            .options
            .ok_or_else(|| CliError::Unavailable("the recommender sent no options".into()))?;
        let o = converted(convert::options_from_proto(&o))?;
        match format {
            Format::Json => to_json(&o),
            Format::Table => Ok(render_options(&o)),
        }
    })
}

/// `proxbalance state`.
pub(super) fn state(args: &StateArgs) -> Result<String, CliError> {
    runtime()?.block_on(async {
        let mut client = connect(&args.server).await?;
        let resp = client
            .get_cluster_state(pb::GetClusterStateRequest {
                cluster: args.cluster.clone(),
            })
            .await
            .map_err(status_error)?
            .into_inner();
        let rows: Vec<Value> = resp
            .nodes
            .iter()
            .filter_map(|n| {
                let s = n.latest.as_ref()?;
                let st = n.stats.unwrap_or_default();
                Some(json!({
                    "node": s.node,
                    "status": status_word(s.status),
                    "stale": n.stale,
                    "missed_cycle": n.missed_cycle,
                    "maintenance": s.maintenance,
                    "cycle": s.cycle,
                    "observed_at_unix_ms": s.observed_at_unix_ms,
                    "cpu": s.cpu_fraction * 100.0,
                    "mem": pct(s.mem_used_bytes, s.mem_total_bytes),
                    "iowait": s.iowait_fraction.map(|v| v * 100.0),
                    "committed_mem_bytes": s.committed_mem_bytes,
                    "overcommit_ratio": s.overcommit_ratio,
                    "guests": s.guests.len(),
                    "avg_cpu_24h": st.avg_cpu_24h,
                    "max_cpu_24h": st.max_cpu_24h,
                    "avg_mem_24h": st.avg_mem_24h,
                    "avg_iowait_24h": st.avg_iowait_24h,
                    "avg_cpu_7d": st.avg_cpu_7d,
                    "max_cpu_7d": st.max_cpu_7d,
                    "hourly_samples": n.hourly_samples,
                    "raw_samples": n.raw_samples,
                    "overloaded": n.overloaded.iter().map(|r| reason_word(*r)).collect::<Vec<_>>(),
                }))
            })
            .collect();
        let placement = placement_json(&resp);
        match args.format {
            Format::Json => to_json(&json!({
                "cluster": resp.cluster,
                "clock_skew_ms": resp.clock_skew_ms,
                "nodes": rows,
                "crs": placement["crs"],
                "ha_guests": placement["ha_guests"],
                "ha_rules": placement["ha_rules"],
                "rules": placement["rules"],
            })),
            Format::Table => {
                let mut t = Table::new([
                    "NODE",
                    "STATUS",
                    "CPU%",
                    "MEM%",
                    "IOWAIT%",
                    "OVERCOMMIT",
                    "GUESTS",
                    "CPU 24H",
                    "IOWAIT 24H",
                    "CPU 7D",
                    "OVERLOADED",
                ]);
                for r in &rows {
                    let f = |k: &str| r[k].as_f64().map_or("-".to_owned(), |v| format!("{v:.1}"));
                    let mut status = r["status"].as_str().unwrap_or("").to_owned();
                    if r["stale"].as_bool() == Some(true) {
                        status.push_str(" (stale)");
                    } else if r["missed_cycle"].as_bool() == Some(true) {
                        status.push_str(" (missed cycle)");
                    }
                    if r["maintenance"].as_bool() == Some(true) {
                        status.push_str(" (maintenance)");
                    }
                    let overloaded: Vec<&str> = r["overloaded"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    t.row(vec![
                        r["node"].as_str().unwrap_or("").to_owned(),
                        status,
                        f("cpu"),
                        f("mem"),
                        f("iowait"),
                        r["overcommit_ratio"]
                            .as_f64()
                            .map_or("-".into(), |v| format!("{v:.2}")),
                        r["guests"].to_string(),
                        f("avg_cpu_24h"),
                        f("avg_iowait_24h"),
                        f("avg_cpu_7d"),
                        overloaded.join(", "),
                    ]);
                }
                let skew = resp.clock_skew_ms.map_or(String::new(), |ms| {
                    format!(" (collector clock {:+.1} s from NATS')", ms as f64 / 1000.0)
                });
                Ok(format!(
                    "Cluster {}{skew}:\n{}\n{}",
                    resp.cluster,
                    t.render(),
                    render_placement(&placement)
                ))
            }
        }
    })
}

/// The placement part of `state`: Proxmox's balancer, how HA guests are treated, where the
/// HA rules come from, and the rules the last set was planned with.
fn placement_json(resp: &pb::GetClusterStateResponse) -> Value {
    let status = resp.last_status.as_ref();
    let crs = status.and_then(|s| s.crs.as_ref());
    let ha_guests = match pb::HaGuests::try_from(resp.ha_guests) {
        Ok(pb::HaGuests::Skip) => "skip",
        Ok(pb::HaGuests::Recommend) => "recommend",
        Ok(pb::HaGuests::SkipRulesUnknown) => "skip_rules_unknown",
        Ok(pb::HaGuests::ManagedByPveCrs) => "managed_by_pve_crs",
        _ => "unknown",
    };
    let source = match status.map(|s| pb::HaRulesSource::try_from(s.ha_rules_source)) {
        Some(Ok(pb::HaRulesSource::Rules)) => "rules",
        Some(Ok(pb::HaRulesSource::Groups)) => "groups",
        _ => "not_read",
    };
    let rules: Vec<Value> = resp
        .rules
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "kind": r.kind,
                "strict": r.strict,
                "source": r.source,
                "vmids": r.vmids,
                "nodes": r.nodes.iter().map(|n| json!({
                    "node": n.node, "priority": n.priority, "allowed": n.allowed,
                })).collect::<Vec<_>>(),
                "unknown_nodes": r.unknown_nodes,
            })
        })
        .collect();
    json!({
        "crs": {
            "ha": crs.map_or("", |c| c.ha.as_str()),
            "auto_rebalance": crs.is_some_and(|c| c.ha_auto_rebalance),
            "pve_balances_ha": resp.pve_balances_ha,
        },
        "ha_guests": ha_guests,
        "ha_rules": {
            "source": source,
            "count": status.map_or(0, |s| s.ha_rules.len()),
            "read_at_unix_ms": status.map_or(0, |s| s.ha_rules_read_at_unix_ms),
            "cycle_at_unix_ms": status.map_or(0, |s| s.collected_at_unix_ms),
        },
        "rules": rules,
    })
}

/// [`placement_json`] for people.
fn render_placement(p: &Value) -> String {
    let crs = &p["crs"];
    let mode = crs["ha"]
        .as_str()
        .filter(|m| !m.is_empty())
        .unwrap_or("basic");
    let mut out = format!(
        "Proxmox CRS: ha={mode}, auto-rebalance {}{}\n",
        if crs["auto_rebalance"].as_bool() == Some(true) {
            "on"
        } else {
            "off"
        },
        if crs["pve_balances_ha"].as_bool() == Some(true) {
            " (Proxmox balances HA resources itself)"
        } else {
            ""
        }
    );
    let ha = &p["ha_rules"];
    let read = match ha["source"].as_str() {
        Some("rules") => "/cluster/ha/rules",
        Some("groups") => "/cluster/ha/groups",
        _ => "",
    };
    let kept = ha["read_at_unix_ms"].as_i64().unwrap_or(0);
    let cycle = ha["cycle_at_unix_ms"].as_i64().unwrap_or(0);
    if read.is_empty() {
        out.push_str("HA rules: not read yet\n");
    } else {
        out.push_str(&format!("HA rules: {} from {read}", ha["count"]));
        if kept < cycle {
            out.push_str(&format!(
                " (the last cycle's read failed: kept from {:.0} s earlier)",
                (cycle - kept) as f64 / 1000.0
            ));
        }
        out.push('\n');
    }
    out.push_str(match p["ha_guests"].as_str() {
        Some("recommend") => {
            "HA guests: planned within their HA rules (ha-manager crm-command migrate)\n"
        }
        Some("skip_rules_unknown") => {
            "HA guests: left where they are until the HA rules are read (ha_guests = recommend)\n"
        }
        Some("managed_by_pve_crs") => {
            "HA guests: left to Proxmox, which balances them (managed_by_pve_crs)\n"
        }
        _ => "HA guests: left where they are (ha_guests = skip)\n",
    });
    let rules = p["rules"].as_array().cloned().unwrap_or_default();
    if rules.is_empty() {
        out.push_str("Placement rules: none\n");
        return out;
    }
    let mut t = Table::new(["RULE", "KIND", "STRICT", "SOURCE", "GUESTS", "NODES"]);
    for r in &rules {
        let guests: Vec<String> = r["vmids"]
            .as_array()
            .into_iter()
            .flatten()
            .map(Value::to_string)
            .collect();
        let mut nodes: Vec<String> = r["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| {
                format!(
                    "{}:{}{}",
                    n["node"].as_str().unwrap_or(""),
                    n["priority"],
                    if n["allowed"].as_bool() == Some(true) {
                        "*"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        nodes.extend(
            r["unknown_nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|n| format!("{n} (no such node)")),
        );
        t.row(vec![
            r["name"].as_str().unwrap_or("").to_owned(),
            r["kind"].as_str().unwrap_or("").to_owned(),
            if r["strict"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            }
            .to_owned(),
            r["source"].as_str().unwrap_or("").to_owned(),
            if guests.is_empty() {
                "-".to_owned()
            } else {
                guests.join(", ")
            },
            nodes.join(", "),
        ]);
    }
    out.push_str("Placement rules (node:priority, * = allowed now):\n");
    out.push_str(&t.render());
    out
}

fn write_line(out: &mut dyn Write, line: &str) -> Result<(), CliError> {
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// `proxbalance watch`: prints the current set of each cluster, then every change.
pub(super) fn watch(args: &WatchArgs, out: &mut dyn Write) -> Result<(), CliError> {
    runtime()?.block_on(async {
        let mut client = connect(&args.server).await?;
        let mut stream = client
            .watch_recommendations(pb::WatchRecommendationsRequest {
                cluster: args.cluster.clone().unwrap_or_default(),
                every_recompute: false,
                view: pb::SetView::Full.into(),
            })
            .await
            .map_err(status_error)?
            .into_inner();
        let mut seen = 0usize;
        while args.count.is_none_or(|n| seen < n) {
            let Some(change) = stream.message().await.map_err(status_error)? else {
                break;
            };
            seen += 1;
            let set = match &change.recommendations {
                Some(s) => Some(converted(convert::set_from_proto(s))?),
                None => None,
            };
            match args.format {
                Format::Json => {
                    let v = json!({
                        "cluster": change.cluster,
                        "generation": change.generation,
                        "at_unix_ms": change.at_unix_ms,
                        "added": change.added_vmids,
                        "removed": change.removed_vmids,
                        "changed": change.changed_vmids,
                        "set": set,
                    });
                    write_line(out, &v.to_string())?;
                }
                Format::Table => {
                    let total = set.as_ref().map_or(0, |s| s.recommendations.len());
                    write_line(
                        out,
                        &format!(
                            "{} generation {}: {} recommendation(s); added {:?}, removed {:?}, changed {:?}",
                            change.cluster,
                            change.generation,
                            total,
                            change.added_vmids,
                            change.removed_vmids,
                            change.changed_vmids
                        ),
                    )?;
                    if let Some(set) = &set {
                        out.write_all(render_plan(set).as_bytes())?;
                        out.flush()?;
                    }
                }
            }
        }
        Ok(())
    })
}

/// `proxbalance events`: prints overload events as they happen.
pub(super) fn events(args: &EventsArgs, out: &mut dyn Write) -> Result<(), CliError> {
    runtime()?.block_on(async {
        let mut client = connect(&args.server).await?;
        let mut stream = client
            .watch_events(pb::WatchEventsRequest {
                cluster: args.cluster.clone().unwrap_or_default(),
                node: args.node.clone().unwrap_or_default(),
            })
            .await
            .map_err(status_error)?
            .into_inner();
        let mut seen = 0usize;
        while args.count.is_none_or(|n| seen < n) {
            let Some(e) = stream.message().await.map_err(status_error)? else {
                break;
            };
            seen += 1;
            match args.format {
                Format::Json => {
                    let v = event_json(&e);
                    write_line(out, &v.to_string())?;
                }
                Format::Table => write_line(
                    out,
                    &format!(
                        "{} {}/{}: {} {} (value {:.2}, threshold {:.2}{})",
                        e.at_unix_ms,
                        e.cluster,
                        e.node,
                        reason_word(e.reason),
                        state_word(e.state),
                        e.value,
                        e.threshold,
                        e.avg_24h
                            .map_or(String::new(), |a| format!(", 24 h average {a:.2}"))
                    ),
                )?,
            }
        }
        Ok(())
    })
}
