//! One collection cycle of one cluster: the PVE requests of the call plan, the caches that
//! keep the request count independent of the number of guests, and the resulting messages.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use proxbalance_proto::v1::{
    ClusterStatus, CollectionError, CrsSettings, GuestKind, NodeHistory, NodeSnapshot,
};

use crate::placement::{HaRulesOutcome, HaRulesReader};
use crate::pve::types::{
    ClusterOptions, ClusterResource, ClusterStatusRow, GuestConfig, HaResource, HaStatusRow,
    MetricsExport, NodeStatus, RrdPoint, Version,
};
use crate::pve::{PveClient, PveError};
use crate::snapshot::{
    self, CycleData, GuestConfigInfo, GuestRates, HaInfo, NodeSample, RateTracker,
};

/// Tunables of a cluster's collection.
#[derive(Debug, Clone)]
pub struct CycleSettings {
    /// Cluster name used on the wire.
    pub cluster: String,
    /// How long a guest config stays cached.
    pub guest_config_ttl: Duration,
    /// Most guest configs fetched in one cycle (keeps the per-cycle request count bounded).
    pub guest_config_budget: usize,
    /// How often the per-node `rrddata?timeframe=hour` fallback is refreshed.
    pub rrd_refresh: Duration,
    /// How often `NodeHistory` is collected (also at start).
    pub history_interval: Duration,
    /// Use `/cluster/metrics/export` when the PVE version offers it.
    pub use_metrics_export: bool,
}

/// The messages of one cycle.
#[derive(Debug, Clone)]
pub struct CycleOutput {
    /// One snapshot per node, sorted by node.
    pub snapshots: Vec<NodeSnapshot>,
    /// The cluster status of the cycle.
    pub status: ClusterStatus,
    /// Node histories, when due this cycle.
    pub histories: Vec<NodeHistory>,
}

#[derive(Debug)]
struct CachedConfig {
    fetched: Instant,
    info: GuestConfigInfo,
    node: String,
}

/// State of one cluster's collection across cycles.
#[derive(Debug)]
pub struct ClusterCollector {
    settings: CycleSettings,
    client: PveClient,
    cycle: u64,
    version: Option<Version>,
    metrics_export: Option<bool>,
    rates: RateTracker,
    configs: HashMap<u32, CachedConfig>,
    rrd_cache: BTreeMap<String, (Instant, NodeSample)>,
    last_history: Option<Instant>,
    known_nodes: BTreeSet<String>,
    ha_rules: HaRulesReader,
    /// `crs` of `/cluster/options` as last read.
    crs: Option<CrsSettings>,
}

/// Whether a PVE version string (`8.2.5`, `9.1`) is at least `major.minor.patch`.
pub fn version_at_least(version: &str, want: (u64, u64, u64)) -> bool {
    let mut it = version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u64>().unwrap_or(0));
    let have = (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    );
    have >= want
}

fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl ClusterCollector {
    /// A collector for one cluster.
    pub fn new(settings: CycleSettings, client: PveClient) -> Self {
        Self {
            settings,
            client,
            cycle: 0,
            version: None,
            metrics_export: None,
            rates: RateTracker::default(),
            configs: HashMap::new(),
            rrd_cache: BTreeMap::new(),
            last_history: None,
            known_nodes: BTreeSet::new(),
            ha_rules: HaRulesReader::default(),
            crs: None,
        }
    }

    /// The cluster name.
    pub fn cluster(&self) -> &str {
        &self.settings.cluster
    }

    /// Runs one cycle. Never fails: when the cluster-wide requests fail, every node known from
    /// earlier cycles is published with status `UNKNOWN` and the error.
    pub async fn collect(&mut self) -> CycleOutput {
        let started = Instant::now();
        let requests_before = self.client.requests_sent();
        let now_ms = now_unix_ms();
        // The cycle id is the cycle's start in unix ms (kept increasing if the clock steps
        // back): unlike a counter it does not start over when the collector restarts, so a
        // restarted collector's `Nats-Msg-Id`s never collide with the previous run's within
        // JetStream's de-duplication window.
        self.cycle = (self.cycle + 1).max(u64::try_from(now_ms).unwrap_or(0));
        let mut errors: Vec<CollectionError> = Vec::new();
        let client = self.client.clone();
        let c = &client;
        let cluster = self.settings.cluster.clone();

        if self.version.is_none() {
            match c.get::<Version>("/version").await {
                Ok(v) => self.version = Some(v),
                Err(e) => errors.push(snapshot::collection_error("", &e)),
            }
        }
        let version_text = self
            .version
            .as_ref()
            .and_then(|v| v.version.clone().or_else(|| v.release.clone()))
            .unwrap_or_default();
        let release = self
            .version
            .as_ref()
            .and_then(|v| v.release.clone().or_else(|| v.version.clone()))
            .unwrap_or_default();
        if self.metrics_export.is_none() && self.version.is_some() {
            self.metrics_export = Some(
                self.settings.use_metrics_export && version_at_least(&version_text, (8, 2, 5)),
            );
        }

        let (resources, status_rows, options, ha_res, ha_status) = tokio::join!(
            c.get::<Vec<ClusterResource>>("/cluster/resources"),
            c.get::<Vec<ClusterStatusRow>>("/cluster/status"),
            c.get::<ClusterOptions>("/cluster/options"),
            c.get::<Vec<HaResource>>("/cluster/ha/resources"),
            c.get::<Vec<HaStatusRow>>("/cluster/ha/status/current"),
        );
        let resources = match resources {
            Ok(r) => r,
            Err(e) => {
                // Nothing of the cluster is known this cycle: PVE's settings and HA rules
                // are those read last.
                let mut out =
                    self.failed_cycle(now_ms, started, requests_before, errors, &e, &release);
                set_ha_rules(&mut out.status, self.ha_rules.last());
                return out;
            }
        };
        // PVE's scheduler settings; when they cannot be read, those read last stay: whether PVE
        // balances HA resources itself decides whether HA guests may be recommended.
        match options {
            Ok(o) => self.crs = Some(snapshot::parse_crs(o.crs.as_ref())),
            Err(e) => errors.push(snapshot::collection_error("", &e)),
        }
        let crs = self.crs.clone().unwrap_or_default();
        let ha_res = ha_res
            .map_err(|e| errors.push(snapshot::collection_error("", &e)))
            .ok();
        // HA rules, or PVE 8 groups with the members `ha_res` names (see `placement`).
        let ha_rules = self
            .ha_rules
            .read(
                c,
                &cluster,
                &release,
                ha_res.as_deref(),
                now_ms,
                &mut errors,
            )
            .await;
        let status_rows = status_rows.unwrap_or_else(|e| {
            errors.push(snapshot::collection_error("", &e));
            Vec::new()
        });
        let ha_status = ha_status.unwrap_or_else(|e| {
            errors.push(snapshot::collection_error("", &e));
            Vec::new()
        });

        let names = snapshot::node_names(&resources, &status_rows);
        let online: Vec<String> = names
            .iter()
            .filter(|n| snapshot::pve_says_online(n, &resources, &status_rows))
            .cloned()
            .collect();

        // Node status of every online node (proxied: reveals unreachable nodes).
        let statuses = join_all(online.iter().map(|n| {
            let path = format!("/nodes/{n}/status");
            async move { (n.clone(), c.get::<NodeStatus>(&path).await) }
        }))
        .await;
        let node_status: BTreeMap<String, Result<NodeStatus, PveError>> =
            statuses.into_iter().collect();
        for (n, r) in &node_status {
            if let Err(e) = r {
                errors.push(snapshot::collection_error(n, e));
            }
        }

        let mut node_errors: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut samples: BTreeMap<String, NodeSample> = BTreeMap::new();
        let mut rates: HashMap<u32, GuestRates> = HashMap::new();
        let mut export_ok = false;
        if self.metrics_export == Some(true) {
            match c.get::<MetricsExport>("/cluster/metrics/export").await {
                Ok(export) => {
                    export_ok = true;
                    self.apply_export(&export, &mut samples, &mut rates);
                }
                Err(
                    e @ PveError::Http {
                        status: 400 | 404 | 501,
                        ..
                    },
                ) => {
                    tracing::info!(cluster = %self.settings.cluster, error = %e, "metrics export not offered; using per-node rrddata");
                    self.metrics_export = Some(false);
                }
                Err(e) => errors.push(snapshot::collection_error("", &e)),
            }
        }
        // Per-node RRD fallback for IOWait (and PVE 9 pressure).
        let need_rrd: Vec<String> = online
            .iter()
            .filter(|n| samples.get(*n).is_none_or(|s| s.iowait.is_none()))
            .filter(|n| {
                self.rrd_cache
                    .get(*n)
                    .is_none_or(|(t, _)| t.elapsed() >= self.settings.rrd_refresh)
            })
            .cloned()
            .collect();
        let rrd = join_all(need_rrd.iter().map(|n| {
            let path = format!("/nodes/{n}/rrddata?timeframe=hour&cf=AVERAGE");
            async move { (n.clone(), c.get::<Vec<RrdPoint>>(&path).await) }
        }))
        .await;
        for (n, r) in rrd {
            match r {
                Ok(points) => {
                    if let Some(s) = snapshot::sample_from_rrd(&points) {
                        self.rrd_cache.insert(n, (Instant::now(), s));
                    }
                }
                Err(e) => {
                    node_errors
                        .entry(n.clone())
                        .or_default()
                        .push(e.to_string());
                    errors.push(snapshot::collection_error(&n, &e));
                }
            }
        }
        for n in &online {
            if samples.get(n).is_none_or(|s| s.iowait.is_none())
                && let Some((_, s)) = self.rrd_cache.get(n)
            {
                let pressure = samples.get(n).and_then(|x| x.pressure).or(s.pressure);
                samples.insert(
                    n.clone(),
                    NodeSample {
                        pressure,
                        ..s.clone()
                    },
                );
            }
        }
        if !export_ok {
            self.rates_from_resources(&resources, now_ms, &mut rates);
        }

        // Guest configs, cached with a TTL and fetched within a per-cycle budget.
        self.refresh_configs(&resources, &node_status).await;
        let alive: BTreeSet<u32> = resources.iter().filter_map(|r| r.vmid).collect();
        self.configs.retain(|vmid, _| alive.contains(vmid));
        self.rates.retain(&alive);
        self.rrd_cache.retain(|n, _| names.contains(n));
        let configs: HashMap<u32, GuestConfigInfo> = self
            .configs
            .iter()
            .map(|(k, v)| (*k, v.info.clone()))
            .collect();

        let data = CycleData {
            cluster: &cluster,
            cycle: self.cycle,
            now_unix_ms: now_ms,
            pve_version: &release,
            resources: &resources,
            status_rows: &status_rows,
            ha: HaInfo::new(ha_res.as_deref(), &ha_status),
            node_status,
            samples,
            rates,
            configs,
            node_errors,
        };
        let snapshots = snapshot::build_snapshots(&data);

        let histories = if self
            .last_history
            .is_none_or(|t| t.elapsed() >= self.settings.history_interval)
        {
            self.last_history = Some(Instant::now());
            self.collect_histories(&names, now_ms, &mut errors).await
        } else {
            Vec::new()
        };

        self.known_nodes = names;
        let requests = self.client.requests_sent().saturating_sub(requests_before);
        let mut status = snapshot::build_cluster_status(
            &data,
            &snapshots,
            crs,
            errors,
            i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
            u32::try_from(requests).unwrap_or(u32::MAX),
            self.client.current_endpoint(),
        );
        status.histories = histories.iter().map(|h| h.node.clone()).collect();
        set_ha_rules(&mut status, ha_rules);
        CycleOutput {
            snapshots,
            status,
            histories,
        }
    }

    fn failed_cycle(
        &mut self,
        now_ms: i64,
        started: Instant,
        requests_before: u64,
        mut errors: Vec<CollectionError>,
        err: &PveError,
        release: &str,
    ) -> CycleOutput {
        tracing::warn!(cluster = %self.settings.cluster, error = %err, "cluster resources could not be read");
        errors.push(snapshot::collection_error("", err));
        let snapshots = self
            .known_nodes
            .iter()
            .map(|n| NodeSnapshot {
                schema_version: proxbalance_proto::SCHEMA_VERSION,
                cluster: self.settings.cluster.clone(),
                node: n.clone(),
                cycle: self.cycle,
                observed_at_unix_ms: now_ms,
                status: proxbalance_proto::v1::NodeStatus::Unknown as i32,
                error: err.to_string(),
                pve_version: release.to_owned(),
                ..Default::default()
            })
            .collect::<Vec<_>>();
        let data = CycleData {
            cluster: &self.settings.cluster,
            cycle: self.cycle,
            now_unix_ms: now_ms,
            pve_version: release,
            ..Default::default()
        };
        let requests = self.client.requests_sent().saturating_sub(requests_before);
        let mut status = snapshot::build_cluster_status(
            &data,
            &snapshots,
            self.crs.clone().unwrap_or_default(),
            errors,
            i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
            u32::try_from(requests).unwrap_or(u32::MAX),
            self.client.current_endpoint(),
        );
        status.quorate = false;
        CycleOutput {
            snapshots,
            status,
            histories: Vec::new(),
        }
    }

    fn apply_export(
        &mut self,
        export: &MetricsExport,
        samples: &mut BTreeMap<String, NodeSample>,
        rates: &mut HashMap<u32, GuestRates>,
    ) {
        // Keep only the newest sample per (id, metric).
        let mut latest: HashMap<(&str, &str), (f64, i64)> = HashMap::new();
        for s in &export.data {
            let (Some(id), Some(metric), Some(value), Some(ts)) =
                (s.id.as_deref(), s.metric.as_deref(), s.value, s.timestamp)
            else {
                continue;
            };
            let entry = latest.entry((id, metric)).or_insert((value, ts));
            if ts > entry.1 {
                *entry = (value, ts);
            }
        }
        for ((id, metric), (value, ts)) in latest {
            if let Some(node) = id.strip_prefix("node/") {
                if metric == "cpu_iowait" {
                    samples.insert(
                        node.to_owned(),
                        NodeSample {
                            iowait: Some(value),
                            at_unix_ms: ts.saturating_mul(1000),
                            pressure: None,
                        },
                    );
                }
                continue;
            }
            let Some(vmid) = id
                .strip_prefix("qemu/")
                .or_else(|| id.strip_prefix("lxc/"))
                .and_then(|v| v.parse::<u32>().ok())
            else {
                continue;
            };
            let idx = match metric {
                "disk_read" => 0,
                "disk_write" => 1,
                "net_in" => 2,
                "net_out" => 3,
                _ => continue,
            };
            if let Some(rate) = self
                .rates
                .observe(vmid, idx, value, ts.saturating_mul(1000))
            {
                let r = rates.entry(vmid).or_default();
                match idx {
                    0 => r.disk_read = rate,
                    1 => r.disk_write = rate,
                    2 => r.net_in = rate,
                    _ => r.net_out = rate,
                }
            }
        }
    }

    /// Guest rates from the cumulative counters of `/cluster/resources` (no metrics export).
    ///
    /// pvestatd refreshes a guest's counters every 10 s, in one cache entry with its `uptime`,
    /// whatever the collector's interval: the collector's own clock would divide 10 s of I/O
    /// by 5 s and then none by the next 5 s (rates alternating 2× and 0 at a 5 s interval, ±33 %
    /// at 15 s). The uptime is the counters' own clock: its difference is exactly the time the
    /// counters' difference accrued over, and an unchanged uptime marks an unchanged sample
    /// (its rate is kept). It falls back when the guest restarts (uptime and counters start over:
    /// no rate for that cycle). Without an uptime, the collector's clock is used.
    fn rates_from_resources(
        &mut self,
        resources: &[ClusterResource],
        now_ms: i64,
        rates: &mut HashMap<u32, GuestRates>,
    ) {
        for r in resources {
            let Some(vmid) = r.vmid else { continue };
            if !matches!(r.kind.as_deref(), Some("qemu" | "lxc")) {
                continue;
            }
            let sampled_ms = r.uptime.map_or(now_ms, |u| {
                i64::try_from(u.saturating_mul(1000)).unwrap_or(i64::MAX)
            });
            let counters = [r.diskread, r.diskwrite, r.netin, r.netout];
            let mut out = GuestRates::default();
            for (idx, v) in counters.iter().enumerate() {
                let Some(v) = v else { continue };
                if let Some(rate) = self.rates.observe(vmid, idx as u8, *v as f64, sampled_ms) {
                    match idx {
                        0 => out.disk_read = rate,
                        1 => out.disk_write = rate,
                        2 => out.net_in = rate,
                        _ => out.net_out = rate,
                    }
                }
            }
            rates.insert(vmid, out);
        }
    }

    async fn refresh_configs(
        &mut self,
        resources: &[ClusterResource],
        node_status: &BTreeMap<String, Result<NodeStatus, PveError>>,
    ) {
        let ttl = self.settings.guest_config_ttl;
        let mut due: Vec<(u32, GuestKind, String, bool)> = resources
            .iter()
            .filter_map(|r| {
                let kind = match r.kind.as_deref() {
                    Some("qemu") => GuestKind::Qemu,
                    Some("lxc") => GuestKind::Lxc,
                    _ => return None,
                };
                let vmid = r.vmid?;
                let node = r.node.clone()?;
                // Only nodes that answered their status can answer a proxied config read.
                if !node_status.get(&node).is_some_and(|s| s.is_ok()) {
                    return None;
                }
                let fresh = self
                    .configs
                    .get(&vmid)
                    .is_some_and(|c| c.node == node && c.fetched.elapsed() < ttl);
                if fresh {
                    return None;
                }
                Some((vmid, kind, node, r.status.as_deref() == Some("running")))
            })
            .collect();
        // Running guests first, never-fetched before stale, then by vmid.
        due.sort_by_key(|(vmid, _, _, running)| (!running, self.configs.contains_key(vmid), *vmid));
        due.truncate(self.settings.guest_config_budget);
        let c = &self.client;
        let fetched = join_all(due.into_iter().map(|(vmid, kind, node, _)| async move {
            let path = match kind {
                GuestKind::Qemu => format!("/nodes/{node}/qemu/{vmid}/config"),
                _ => format!("/nodes/{node}/lxc/{vmid}/config"),
            };
            (vmid, kind, node, c.get::<GuestConfig>(&path).await)
        }))
        .await;
        for (vmid, kind, node, r) in fetched {
            match r {
                Ok(cfg) => {
                    self.configs.insert(
                        vmid,
                        CachedConfig {
                            fetched: Instant::now(),
                            info: snapshot::parse_guest_config(kind, &cfg),
                            node,
                        },
                    );
                }
                Err(e) => {
                    tracing::debug!(cluster = %self.settings.cluster, vmid, error = %e, "guest config not read");
                }
            }
        }
    }

    async fn collect_histories(
        &self,
        names: &BTreeSet<String>,
        now_ms: i64,
        errors: &mut Vec<CollectionError>,
    ) -> Vec<NodeHistory> {
        let c = &self.client;
        let cluster = self.settings.cluster.clone();
        let results = join_all(names.iter().map(|n| {
            let cluster = cluster.clone();
            async move {
                let day = c
                    .get::<Vec<RrdPoint>>(&format!("/nodes/{n}/rrddata?timeframe=day&cf=AVERAGE"))
                    .await;
                let week = c
                    .get::<Vec<RrdPoint>>(&format!("/nodes/{n}/rrddata?timeframe=week&cf=AVERAGE"))
                    .await;
                match (day, week) {
                    (Ok(d), Ok(w)) => Ok(snapshot::build_history(&cluster, n, now_ms, &d, &w)),
                    (Err(e), _) | (_, Err(e)) => Err((n.clone(), e)),
                }
            }
        }))
        .await;
        let mut out = Vec::new();
        for r in results {
            match r {
                Ok(h) => out.push(h),
                Err((n, e)) => errors.push(snapshot::collection_error(&n, &e)),
            }
        }
        out
    }
}

fn set_ha_rules(status: &mut ClusterStatus, ha: HaRulesOutcome) {
    status.ha_rules = ha.rules;
    status.ha_rules_source = ha.source as i32;
    status.ha_rules_read_at_unix_ms = ha.read_at_unix_ms;
}

#[cfg(test)]
mod tests {
    use super::version_at_least;

    #[test]
    fn version_comparison() {
        assert!(version_at_least("8.2.5", (8, 2, 5)));
        assert!(version_at_least("9.1", (8, 2, 5)));
        assert!(version_at_least("8.3.0", (8, 2, 5)));
        assert!(!version_at_least("8.2.4", (8, 2, 5)));
        assert!(!version_at_least("8.1", (8, 2, 5)));
        assert!(!version_at_least("", (8, 2, 5)));
    }
}
