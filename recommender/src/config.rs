//! The service configuration: a TOML file, every key overridable by environment variables with
//! the prefix `PROXBALANCE_RECOMMENDER__` and `__` between levels
//! (e.g. `PROXBALANCE_RECOMMENDER__NATS__URL`). Unknown keys are refused with the key named.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proxbalance_engine::{Overrides, PenaltyConfig, Preset, Thresholds};
use proxbalance_proto::subjects::Subjects;
use serde::Deserialize;

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "PROXBALANCE_RECOMMENDER__";

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or environment could not be read into the configuration (names the key).
    #[error(transparent)]
    Load(#[from] proxbalance_runtime::RuntimeError),
    /// A value is out of range or inconsistent.
    #[error("configuration, {field}: {detail}")]
    Invalid {
        /// The key at fault.
        field: String,
        /// What was expected.
        detail: String,
    },
}

fn invalid(field: &str, detail: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_owned(),
        detail: detail.into(),
    }
}

/// The whole recommender configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// NATS connection, subjects and the events stream.
    #[serde(default)]
    pub nats: NatsConfig,
    /// The gRPC listener.
    #[serde(default)]
    pub grpc: GrpcConfig,
    /// The web dashboard and its JSON API.
    #[serde(default)]
    pub http: HttpConfig,
    /// Prometheus exporter.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Rolling state: replay and staleness.
    #[serde(default)]
    pub state: StateConfig,
    /// Overload detection and its hysteresis.
    #[serde(default)]
    pub overload: OverloadConfig,
    /// The engine configuration every cluster is planned with.
    #[serde(default)]
    pub engine: EngineConfig,
    /// Log format and the opt-in OTLP trace export.
    #[serde(default)]
    pub telemetry: proxbalance_runtime::TelemetryConfig,
}

proxbalance_runtime::nats_table! {
    /// NATS settings: the connection and login keys (`url`, `user`, `tls_ca_file`, …) and these.
    pub struct NatsConfig {
        /// Subject prefix shared with the collector.
        pub subject_prefix: String = proxbalance_proto::subjects::DEFAULT_PREFIX.into(),
        /// Time to wait for an event publish acknowledgement, ms.
        pub publish_timeout_ms: u64 = 5000,
        /// `max_age` of the events stream when the recommender creates it, seconds.
        pub events_max_age_s: u64 = 86_400,
        /// Replicas of the events stream when the recommender creates it.
        pub events_replicas: usize = 1,
    }
}

/// gRPC settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// Listen address (`host:port`; port 0 picks a free port).
    pub listen: String,
    /// Longest wait for open calls to finish at shutdown, ms.
    pub shutdown_timeout_ms: u64,
    /// PEM certificate (chain) of the server; with `tls_key_file` the server speaks TLS only.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA whose client certificates are required (mutual TLS); needs `tls_cert_file`.
    pub tls_client_ca_file: Option<PathBuf>,
    /// File holding the bearer token every call but health must carry.
    pub token_file: Option<PathBuf>,
    /// Name of the environment variable holding the bearer token (instead of `token_file`).
    pub token_env: Option<String>,
    /// Longest time a call may take to produce its answer (for a watch: its first message
    /// header), ms; a client's shorter `grpc-timeout` wins. Beyond it: `CANCELLED`.
    pub request_timeout_ms: u64,
    /// Calls served at once on one connection; more wait their turn.
    pub concurrency_limit_per_connection: usize,
    /// HTTP/2 streams (calls, watches included) one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// Interval of HTTP/2 keepalive pings to each client, ms: a peer that vanished (its watch
    /// streams with it) is found and dropped.
    pub keepalive_interval_ms: u64,
    /// Time to wait for a keepalive ping's answer before the connection is closed, ms.
    pub keepalive_timeout_ms: u64,
    /// Requests computed afresh at once (`GetRecommendations` with overrides or a limit,
    /// `GetMigrationOptions`); more are refused with `RESOURCE_EXHAUSTED`. Default: half the
    /// CPUs, at least 1, so that cached answers keep a CPU.
    pub max_fresh_plans: Option<usize>,
}

impl GrpcConfig {
    /// `max_fresh_plans`, or its default: half the CPUs, at least 1.
    pub fn fresh_plans(&self) -> usize {
        self.max_fresh_plans.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
        })
    }
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".into(),
            shutdown_timeout_ms: 5000,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            token_file: None,
            token_env: None,
            request_timeout_ms: 30_000,
            concurrency_limit_per_connection: 32,
            max_concurrent_streams: 128,
            keepalive_interval_ms: 30_000,
            keepalive_timeout_ms: 10_000,
            max_fresh_plans: None,
        }
    }
}

/// Web dashboard settings: served with the TLS and bearer token of `[grpc]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address of the dashboard and `/api/v1/` (`host:port`; port 0 picks a free
    /// port); none = no dashboard.
    pub listen: Option<String>,
    /// Live streams (`/api/v1/stream`) open at once; more are refused with 503.
    pub max_streams: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: None,
            max_streams: 64,
        }
    }
}

/// Prometheus exporter settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the `/metrics` HTTP listener (e.g. `127.0.0.1:9465`); none = no exporter.
    pub listen: Option<String>,
}

/// Rolling state settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// At start the snapshot stream is replayed from now minus this, seconds (the snapshot
    /// stream's `max_age` should be at least this).
    pub replay_window_s: u64,
    /// A node whose last snapshot is older than this is stale: neither source nor target, s.
    pub staleness_s: u64,
    /// Snapshots, histories and statuses observed more than this after the recommender's
    /// clock are refused (`future_time`), s; less than `staleness_s`.
    pub max_clock_skew_s: u64,
    /// A cluster's recommendations whose newest snapshot is older than this are not served
    /// (`UNAVAILABLE`), s: its collector stopped, and the set describes the past.
    pub max_answer_age_s: u64,
    /// A node without a snapshot for this long, and a cluster without a node, is forgotten
    /// (windows, cached set, metric labels), s; histories older than this are not applied.
    pub retention_s: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            replay_window_s: 7200,
            staleness_s: 120,
            max_clock_skew_s: 30,
            max_answer_age_s: 300,
            retention_s: 86_400,
        }
    }
}

/// Overload detection settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OverloadConfig {
    /// A raised CPU, memory or IOWait overload clears only below its threshold minus this,
    /// percentage points.
    pub clear_margin: f64,
    /// The overcommit ratio above which `mem_overcommit` is raised.
    pub overcommit_threshold: f64,
    /// `mem_overcommit` clears only below the threshold minus this.
    pub overcommit_clear_margin: f64,
    /// Consecutive cycles over a threshold before `raised`.
    pub raise_cycles: u32,
    /// Consecutive cycles below the clear level before `cleared`.
    pub clear_cycles: u32,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        Self {
            clear_margin: 5.0,
            overcommit_threshold: 1.2,
            overcommit_clear_margin: 0.05,
            raise_cycles: 1,
            clear_cycles: 3,
        }
    }
}

/// The engine configuration every cluster is planned with (gRPC requests may override it).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Preset to start from (`conservative`, `balanced`, `aggressive`); default balanced.
    pub preset: Option<String>,
    /// Thresholds in percent (`cpu`, `mem`, `iowait`); 60/70/30 when absent.
    pub thresholds: BTreeMap<String, f64>,
    /// Penalty keys laid over the preset (any key of `proxbalance config defaults`).
    pub penalties: serde_json::Map<String, serde_json::Value>,
    /// Rules of the Proxmox resource pool of each name, in every cluster
    /// (`[engine.pools.<pool>]`); a cluster's own entry replaces it there.
    pub pools: BTreeMap<String, PoolRules>,
    /// Per-cluster settings (`[engine.clusters.<cluster>]`).
    pub clusters: BTreeMap<String, ClusterEngineConfig>,
}

/// The rules of one Proxmox resource pool, as ProxLB writes them (`[engine.pools.<pool>]`).
/// Each becomes a placement rule of the cluster view binding the pool's guests: `affinity` /
/// `anti_affinity` named `pool:<pool>`, `pin` named `pool:<pool>` too, or `pool:<pool>:pin`
/// when the pool also has one of the others. A table asking nothing makes no rule (in a
/// cluster's `pools`, it removes the global entry there).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolRules {
    /// Keep the pool's guests on one node.
    #[serde(default)]
    pub affinity: bool,
    /// Never two of the pool's guests on one node.
    #[serde(default)]
    pub anti_affinity: bool,
    /// Run the pool's guests on these nodes (any of them).
    #[serde(default)]
    pub pin: Vec<String>,
    /// Hard constraints (the default); `false`: costs in the planner's objective.
    #[serde(default = "yes")]
    pub strict: bool,
}

fn yes() -> bool {
    true
}

/// Settings of one cluster (`[engine.clusters.<cluster>]`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterEngineConfig {
    /// Memory every node of the cluster holds back from guests, GiB (instead of
    /// `engine.penalties.node_reserve_gb`).
    pub node_reserve_gb: Option<f64>,
    /// The same as a percentage of each node's RAM (instead of
    /// `engine.penalties.node_reserve_percent`); the larger of the two applies.
    pub node_reserve_percent: Option<f64>,
    /// Per-node settings (`[engine.clusters.<cluster>.nodes.<node>]`).
    pub nodes: BTreeMap<String, NodeEngineConfig>,
    /// Pool rules of this cluster, replacing the global entry of the same pool.
    pub pools: BTreeMap<String, PoolRules>,
}

/// Settings of one node (`[engine.clusters.<cluster>.nodes.<node>]`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeEngineConfig {
    /// Memory the node holds back from guests, GiB (instead of the cluster's or the global
    /// reserve).
    pub reserve_gb: Option<f64>,
}

/// Whether `name` is a Proxmox pool id: letters, digits, `-`, `_` and `.`.
fn is_pool_id(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn check_pools(prefix: &str, pools: &BTreeMap<String, PoolRules>) -> Result<(), ConfigError> {
    for (name, rules) in pools {
        let key = format!("{prefix}.{name}");
        if !is_pool_id(name) {
            return Err(invalid(
                &key,
                "expected a Proxmox pool id (letters, digits, '-', '_' and '.')",
            ));
        }
        if rules.affinity && rules.anti_affinity {
            return Err(invalid(
                &format!("{key}.anti_affinity"),
                "a pool cannot ask affinity and anti_affinity at once",
            ));
        }
        if let Some(i) = rules.pin.iter().position(|n| n.trim().is_empty()) {
            return Err(invalid(&format!("{key}.pin[{i}]"), "expected a node name"));
        }
    }
    Ok(())
}

fn check_reserve_gb(key: &str, v: Option<f64>) -> Result<(), ConfigError> {
    match v {
        Some(v) if !(v.is_finite() && v >= 0.0) => {
            Err(invalid(key, "expected a number of GiB ≥ 0"))
        }
        _ => Ok(()),
    }
}

impl EngineConfig {
    /// Checks the pool rules and the per-cluster and per-node settings; errors name the key.
    pub fn validate_placement(&self) -> Result<(), ConfigError> {
        check_pools("engine.pools", &self.pools)?;
        for (cluster, c) in &self.clusters {
            let prefix = format!("engine.clusters.{cluster}");
            if cluster.trim().is_empty() {
                return Err(invalid(&prefix, "expected a cluster name"));
            }
            check_reserve_gb(&format!("{prefix}.node_reserve_gb"), c.node_reserve_gb)?;
            if let Some(p) = c.node_reserve_percent
                && !(p.is_finite() && (0.0..100.0).contains(&p))
            {
                return Err(invalid(
                    &format!("{prefix}.node_reserve_percent"),
                    "expected a percentage ≥ 0 and below 100",
                ));
            }
            for (node, n) in &c.nodes {
                let key = format!("{prefix}.nodes.{node}");
                if node.trim().is_empty() {
                    return Err(invalid(&key, "expected a node name"));
                }
                check_reserve_gb(&format!("{key}.reserve_gb"), n.reserve_gb)?;
            }
            check_pools(&format!("{prefix}.pools"), &c.pools)?;
        }
        Ok(())
    }

    /// The merged penalty configuration and thresholds; errors name the key.
    pub fn resolve(&self) -> Result<(PenaltyConfig, Thresholds), ConfigError> {
        let preset = match &self.preset {
            Some(p) => {
                Some(Preset::from_name(p).map_err(|e| invalid("engine.preset", e.to_string()))?)
            }
            None => None,
        };
        let overrides = Overrides {
            preset,
            penalties: self.penalties.clone(),
            thresholds: self.thresholds.clone(),
            ..Default::default()
        };
        overrides
            .apply(&PenaltyConfig::default(), &Thresholds::default())
            .map_err(|e| match e {
                proxbalance_engine::ConfigError::UnknownKey { key }
                    if key.starts_with("thresholds.") =>
                {
                    invalid(
                        &format!("engine.{key}"),
                        "unknown key (expected cpu, mem or iowait)",
                    )
                }
                proxbalance_engine::ConfigError::UnknownKey { key } => {
                    invalid(&format!("engine.penalties.{key}"), "unknown key")
                }
                proxbalance_engine::ConfigError::InvalidValue { key, expected }
                    if key.starts_with("thresholds.") =>
                {
                    invalid(&format!("engine.{key}"), expected)
                }
                proxbalance_engine::ConfigError::InvalidValue { key, expected } => {
                    invalid(&format!("engine.penalties.{key}"), expected)
                }
                other => invalid("engine", other.to_string()),
            })
    }
}

impl Config {
    /// Loads the TOML file (if given) with environment overrides, then validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let cfg: Config = proxbalance_runtime::load_config(path, ENV_PREFIX)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a TOML string (no environment), then validates.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let cfg: Config = proxbalance_runtime::config_from_toml(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The subjects of the configured prefix.
    pub fn subjects(&self) -> Result<Subjects, ConfigError> {
        Subjects::new(&self.nats.subject_prefix)
            .map_err(|e| invalid("nats.subject_prefix", e.to_string()))
    }

    /// The replay window.
    pub fn replay_window(&self) -> Duration {
        Duration::from_secs(self.state.replay_window_s)
    }

    /// The retention ([`StateConfig::retention_s`]).
    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.state.retention_s)
    }

    /// Checks ranges and consistency; every error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.subjects()?;
        if self.nats.publish_timeout_ms == 0 {
            return Err(invalid("nats.publish_timeout_ms", "expected > 0"));
        }
        self.nats.connection().validate().map_err(|e| match e {
            proxbalance_runtime::RuntimeError::Invalid { field, detail } => {
                ConfigError::Invalid { field, detail }
            }
            other => ConfigError::Load(other),
        })?;
        if self.grpc.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "grpc.listen",
                format!("expected host:port, found {:?}", self.grpc.listen),
            ));
        }
        if let Some(listen) = &self.http.listen
            && listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(invalid(
                "http.listen",
                format!("expected host:port, found {listen:?}"),
            ));
        }
        if self.http.max_streams == 0 {
            return Err(invalid("http.max_streams", "expected > 0"));
        }
        let g = &self.grpc;
        match (&g.tls_cert_file, &g.tls_key_file) {
            (Some(_), None) => {
                return Err(invalid(
                    "grpc.tls_key_file",
                    "required with grpc.tls_cert_file",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "grpc.tls_cert_file",
                    "required with grpc.tls_key_file",
                ));
            }
            _ => {}
        }
        if g.tls_client_ca_file.is_some() && g.tls_cert_file.is_none() {
            return Err(invalid(
                "grpc.tls_client_ca_file",
                "mutual TLS needs grpc.tls_cert_file and grpc.tls_key_file",
            ));
        }
        if g.token_file.is_some() && g.token_env.is_some() {
            return Err(invalid(
                "grpc.token_file",
                "expected one of token_file and token_env, not both",
            ));
        }
        if self.state.replay_window_s == 0 {
            return Err(invalid("state.replay_window_s", "expected > 0"));
        }
        let st = &self.state;
        if st.staleness_s == 0 {
            return Err(invalid("state.staleness_s", "expected > 0"));
        }
        if st.max_clock_skew_s >= st.staleness_s {
            return Err(invalid(
                "state.max_clock_skew_s",
                format!(
                    "expected less than state.staleness_s ({} s): a node that far ahead would \
                     make the others look stale",
                    st.staleness_s
                ),
            ));
        }
        if st.max_answer_age_s == 0 {
            return Err(invalid("state.max_answer_age_s", "expected > 0"));
        }
        if st.retention_s <= st.staleness_s {
            return Err(invalid(
                "state.retention_s",
                format!(
                    "expected more than state.staleness_s ({} s)",
                    st.staleness_s
                ),
            ));
        }
        for (field, value) in [
            ("grpc.request_timeout_ms", g.request_timeout_ms),
            ("grpc.keepalive_interval_ms", g.keepalive_interval_ms),
            ("grpc.keepalive_timeout_ms", g.keepalive_timeout_ms),
            (
                "grpc.concurrency_limit_per_connection",
                g.concurrency_limit_per_connection as u64,
            ),
            (
                "grpc.max_concurrent_streams",
                u64::from(g.max_concurrent_streams),
            ),
        ] {
            if value == 0 {
                return Err(invalid(field, "expected > 0"));
            }
        }
        if g.max_fresh_plans == Some(0) {
            return Err(invalid("grpc.max_fresh_plans", "expected ≥ 1"));
        }
        let o = &self.overload;
        if !(o.clear_margin.is_finite() && o.clear_margin >= 0.0) {
            return Err(invalid("overload.clear_margin", "expected a number ≥ 0"));
        }
        if !(o.overcommit_threshold.is_finite() && o.overcommit_threshold > 0.0) {
            return Err(invalid(
                "overload.overcommit_threshold",
                "expected a number > 0",
            ));
        }
        if !(o.overcommit_clear_margin.is_finite() && o.overcommit_clear_margin >= 0.0) {
            return Err(invalid(
                "overload.overcommit_clear_margin",
                "expected a number ≥ 0",
            ));
        }
        if o.raise_cycles == 0 {
            return Err(invalid("overload.raise_cycles", "expected ≥ 1"));
        }
        if o.clear_cycles == 0 {
            return Err(invalid("overload.clear_cycles", "expected ≥ 1"));
        }
        self.engine.resolve()?;
        self.engine.validate_placement()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_gets_defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.nats.url, "nats://127.0.0.1:4222");
        assert_eq!(c.state.replay_window_s, 7200);
        assert_eq!(c.state.staleness_s, 120);
        assert_eq!(c.overload.clear_cycles, 3);
        assert_eq!(c.grpc.listen, "127.0.0.1:50051");
        let (cfg, t) = c.engine.resolve().unwrap();
        assert_eq!(cfg, PenaltyConfig::default());
        assert_eq!(t, Thresholds::default());
    }

    #[test]
    fn unknown_keys_are_refused_with_the_key() {
        let err = Config::from_toml("[state]\nreplay_window = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("replay_window"), "{err}");
        let err = Config::from_toml("[engine.penalties]\nbogus = 1\n")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "configuration, engine.penalties.bogus: unknown key");
        let err = Config::from_toml("[engine.thresholds]\ndisk = 1\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "configuration, engine.thresholds.disk: unknown key (expected cpu, mem or iowait)"
        );
        let err = Config::from_toml("[engine.thresholds]\ncpu = 500\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "configuration, engine.thresholds.cpu: must be within 1–100, got 500"
        );
        let err = Config::from_toml("[overload]\nclear_cycles = 0\n")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "configuration, overload.clear_cycles: expected ≥ 1");
        let err = Config::from_toml("[grpc]\nlisten = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "configuration, grpc.listen: expected host:port, found \"x\""
        );
        let err = Config::from_toml("[http]\nlisten = \"localhost\"\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "configuration, http.listen: expected host:port, found \"localhost\""
        );
        let err = Config::from_toml("[http]\nmax_streams = 0\n")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "configuration, http.max_streams: expected > 0");
        assert!(Config::default().http.listen.is_none());
    }

    #[test]
    fn the_example_in_deploy_loads_and_equals_the_defaults() {
        let text = include_str!("../../deploy/recommender.example.toml");
        let c = Config::from_toml(text).unwrap();
        let d = Config::default();
        assert_eq!(c.nats.url, d.nats.url);
        assert_eq!(c.grpc.listen, d.grpc.listen);
        assert_eq!(c.state.replay_window_s, d.state.replay_window_s);
        assert_eq!(c.overload.clear_cycles, d.overload.clear_cycles);
        assert_eq!(c.engine.resolve().unwrap(), d.engine.resolve().unwrap());
    }

    #[test]
    fn pool_cluster_and_node_keys_are_checked_with_the_key_named() {
        let err = |text: &str| Config::from_toml(text).unwrap_err().to_string();
        let e = err("[engine.pools.db]\nanti_afinity = true\n");
        assert!(e.contains("anti_afinity"), "{e}");
        let e = err("[engine.clusters.prod]\nreserve_gb = 4\n");
        assert!(e.contains("reserve_gb"), "{e}");
        let e = err("[engine.clusters.prod.nodes.pve1]\nnode_reserve_gb = 4\n");
        assert!(e.contains("node_reserve_gb"), "{e}");
        let e = err("[engine.clusters.prod.pools.db]\npinned = [\"pve1\"]\n");
        assert!(e.contains("pinned"), "{e}");
        assert_eq!(
            err("[engine.pools.db]\naffinity = true\nanti_affinity = true\n"),
            "configuration, engine.pools.db.anti_affinity: a pool cannot ask affinity and \
             anti_affinity at once"
        );
        assert_eq!(
            err("[engine.pools.\"db pool\"]\naffinity = true\n"),
            "configuration, engine.pools.db pool: expected a Proxmox pool id (letters, digits, \
             '-', '_' and '.')"
        );
        assert_eq!(
            err("[engine.clusters.prod.pools.web]\npin = [\"pve1\", \" \"]\n"),
            "configuration, engine.clusters.prod.pools.web.pin[1]: expected a node name"
        );
        assert_eq!(
            err("[engine.clusters.prod]\nnode_reserve_percent = 100\n"),
            "configuration, engine.clusters.prod.node_reserve_percent: expected a percentage ≥ 0 \
             and below 100"
        );
        assert_eq!(
            err("[engine.clusters.prod.nodes.pve1]\nreserve_gb = -1\n"),
            "configuration, engine.clusters.prod.nodes.pve1.reserve_gb: expected a number of GiB ≥ 0"
        );
        let e = err("[engine.pools.db]\nstrict = \"yes\"\n");
        assert!(e.contains("strict"), "{e}");
        let ok = Config::from_toml(
            "[engine.pools.db]\nanti_affinity = true\n[engine.pools.web]\npin = [\"pve1\"]\n\
             strict = false\n[engine.clusters.prod]\nnode_reserve_gb = 8\n\
             [engine.clusters.prod.nodes.pve1]\nreserve_gb = 16\n\
             [engine.penalties]\nha_guests = \"recommend\"\n",
        )
        .unwrap();
        assert!(ok.engine.pools["db"].strict);
        assert!(!ok.engine.pools["web"].strict);
        assert_eq!(ok.engine.clusters["prod"].node_reserve_gb, Some(8.0));
        assert_eq!(
            ok.engine.clusters["prod"].nodes["pve1"].reserve_gb,
            Some(16.0)
        );
        let (cfg, _) = ok.engine.resolve().unwrap();
        assert_eq!(cfg.ha_guests, proxbalance_engine::HaGuests::Recommend);
        assert_eq!(
            err("[engine.penalties]\nha_guests = \"always\"\n"),
            "configuration, engine.penalties.ha_guests: must be \"skip\" or \"recommend\""
        );
    }

    #[test]
    fn the_examples_commented_out_in_deploy_load() {
        // Every commented-out key and table of the [engine] part, uncommented.
        let text = include_str!("../../deploy/recommender.example.toml");
        let engine = &text[text.find("[engine]").unwrap()..];
        let uncommented: String = engine
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.starts_with('[')
                        || rest.split_once(" = ").is_some_and(|(k, _)| {
                            k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                        }) =>
                {
                    rest
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let c = Config::from_toml(&uncommented).unwrap();
        assert_eq!(c.engine.pools.keys().collect::<Vec<_>>(), ["db", "web"]);
        assert_eq!(c.engine.pools["web"].pin, ["pve1", "pve2"]);
        let prod = &c.engine.clusters["prod"];
        assert_eq!(prod.node_reserve_gb, Some(8.0));
        assert_eq!(prod.nodes["pve1"].reserve_gb, Some(16.0));
        assert!(!prod.pools["db"].anti_affinity);
        let (cfg, _) = c.engine.resolve().unwrap();
        assert_eq!(cfg.ha_guests, proxbalance_engine::HaGuests::Skip);
    }

    #[test]
    fn engine_section_is_applied() {
        let c = Config::from_toml(
            "[engine]\npreset = \"aggressive\"\n[engine.penalties]\nmin_score_improvement = 20\n[engine.thresholds]\ncpu = 70\n",
        )
        .unwrap();
        let (cfg, t) = c.engine.resolve().unwrap();
        assert_eq!(cfg.min_score_improvement, 20.0);
        assert_eq!(t.cpu, 70.0);
    }
}
