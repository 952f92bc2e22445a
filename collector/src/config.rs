//! Configuration: a TOML file, every key overridable by environment variables with the prefix
//! `PROXBALANCE_COLLECTOR__` and `__` between levels (e.g. `PROXBALANCE_COLLECTOR__NATS__URL`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Toml};
use serde::Deserialize;

use crate::cycle::CycleSettings;
use crate::publisher::StreamLimits;
use crate::pve::tls::parse_fingerprint;
use crate::pve::{ApiToken, PveClientSettings, PveError, TlsVerification};

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "PROXBALANCE_COLLECTOR__";

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or environment could not be parsed into the configuration.
    #[error("configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    /// A value is out of range or inconsistent.
    #[error("configuration, {field}: {detail}")]
    Invalid {
        /// The key at fault (e.g. `clusters[0].endpoints`).
        field: String,
        /// What was expected.
        detail: String,
    },
    /// The PVE client settings of a cluster are unusable.
    #[error("configuration, clusters[{index}]: {source}")]
    Pve {
        /// Index of the cluster.
        index: usize,
        /// The client's error.
        #[source]
        source: PveError,
    },
}

/// The whole collector configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// NATS connection and streams.
    #[serde(default)]
    pub nats: NatsConfig,
    /// Prometheus exporter.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The PVE clusters to poll.
    #[serde(default)]
    pub clusters: Vec<ClusterConfig>,
    /// Log format and the opt-in OTLP trace export.
    #[serde(default)]
    pub telemetry: proxbalance_runtime::TelemetryConfig,
}

proxbalance_runtime::nats_table! {
    /// NATS settings: the connection and login keys (`url`, `user`, `tls_ca_file`, …) and these.
    pub struct NatsConfig {
        /// Subject prefix (several deployments can share one NATS).
        pub subject_prefix: String = proxbalance_proto::subjects::DEFAULT_PREFIX.into(),
        /// Time to wait for a publish acknowledgement.
        pub publish_timeout_ms: u64 = 5000,
        /// Most messages per cluster kept for re-publishing after a failed publish or
        /// acknowledgement (0 keeps none); beyond it the oldest are dropped and counted.
        pub retry_buffer_messages: usize = 10_000,
        /// `max_age` of the snapshot stream, seconds.
        pub snapshots_max_age_s: u64 = 7200,
        /// `max_bytes` of the snapshot stream (-1 = unlimited).
        pub snapshots_max_bytes: i64 = -1,
        /// `max_age` of the history stream, seconds (0 = unlimited): a node removed from its
        /// cluster is forgotten after it (the recommender applies no older history either).
        pub history_max_age_s: u64 = 86_400,
        /// Stream replicas.
        pub replicas: usize = 1,
        /// De-duplication window, seconds.
        pub duplicate_window_s: u64 = 120,
    }
}

impl NatsConfig {
    /// The stream limits of this configuration.
    pub fn stream_limits(&self) -> StreamLimits {
        StreamLimits {
            snapshots_max_age: Duration::from_secs(self.snapshots_max_age_s),
            snapshots_max_bytes: self.snapshots_max_bytes,
            history_max_age: Duration::from_secs(self.history_max_age_s),
            replicas: self.replicas,
            duplicate_window: Duration::from_secs(self.duplicate_window_s),
        }
    }
}

/// Prometheus exporter settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the `/metrics` HTTP listener (e.g. `127.0.0.1:9464`); none = no exporter.
    pub listen: Option<String>,
}

/// One PVE cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Name on the wire (subjects, messages).
    pub name: String,
    /// API base URLs (`https://host:8006`), tried in order with failover.
    pub endpoints: Vec<String>,
    /// Token id `user@realm!tokenid`.
    pub token_id: String,
    /// File holding the token secret (preferred).
    #[serde(default)]
    pub token_secret_file: Option<PathBuf>,
    /// Environment variable holding the token secret.
    #[serde(default)]
    pub token_secret_env: Option<String>,
    /// PEM file of the CA that signed the nodes' certificates (`pve-root-ca.pem`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Pinned SHA-256 fingerprints of the API certificates: one (`fingerprint = "AB:…"`) or a
    /// list (`fingerprint = ["AB:…", "CD:…"]`, one per endpoint: each PVE node has its own
    /// certificate). The certificate of whichever endpoint answers must be one of them.
    #[serde(default, deserialize_with = "one_or_many")]
    pub fingerprint: Vec<String>,
    /// Accept any certificate (labs only; logged as a warning).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Seconds between cycles.
    #[serde(default = "defaults::interval_s")]
    pub interval_s: f64,
    /// Timeout of one request, ms.
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Timeout of a TCP connect, ms.
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Most requests in flight to this cluster.
    #[serde(default = "defaults::max_concurrency")]
    pub max_concurrency: usize,
    /// Seconds a guest config stays cached.
    #[serde(default = "defaults::guest_config_ttl_s")]
    pub guest_config_ttl_s: u64,
    /// Most guest configs fetched per cycle.
    #[serde(default = "defaults::guest_config_budget")]
    pub guest_config_budget: usize,
    /// Seconds between refreshes of the per-node RRD IOWait fallback.
    #[serde(default = "defaults::rrd_refresh_s")]
    pub rrd_refresh_s: u64,
    /// Seconds between `NodeHistory` collections.
    #[serde(default = "defaults::history_interval_s")]
    pub history_interval_s: u64,
    /// Use `/cluster/metrics/export` on PVE ≥ 8.2.5.
    #[serde(default = "defaults::yes")]
    pub use_metrics_export: bool,
}

/// `fingerprint`: one string, or a list of them.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a SHA-256 fingerprint or a list of them")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![v.to_owned()])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(v) = seq.next_element::<String>()? {
                out.push(v);
            }
            Ok(out)
        }
    }
    d.deserialize_any(Visitor)
}

mod defaults {
    pub fn interval_s() -> f64 {
        30.0
    }
    pub fn request_timeout_ms() -> u64 {
        10_000
    }
    pub fn connect_timeout_ms() -> u64 {
        5_000
    }
    pub fn max_concurrency() -> usize {
        4
    }
    pub fn guest_config_ttl_s() -> u64 {
        600
    }
    pub fn guest_config_budget() -> usize {
        256
    }
    pub fn rrd_refresh_s() -> u64 {
        60
    }
    pub fn history_interval_s() -> u64 {
        3600
    }
    pub fn yes() -> bool {
        true
    }
}

impl ClusterConfig {
    /// A cluster with default tunables.
    pub fn new(name: &str, endpoints: Vec<String>, token_id: &str) -> Self {
        Self {
            name: name.into(),
            endpoints,
            token_id: token_id.into(),
            token_secret_file: None,
            token_secret_env: None,
            ca_file: None,
            fingerprint: Vec::new(),
            insecure_skip_verify: false,
            interval_s: defaults::interval_s(),
            request_timeout_ms: defaults::request_timeout_ms(),
            connect_timeout_ms: defaults::connect_timeout_ms(),
            max_concurrency: defaults::max_concurrency(),
            guest_config_ttl_s: defaults::guest_config_ttl_s(),
            guest_config_budget: defaults::guest_config_budget(),
            rrd_refresh_s: defaults::rrd_refresh_s(),
            history_interval_s: defaults::history_interval_s(),
            use_metrics_export: true,
        }
    }

    /// The TLS mode: exactly one of `ca_file`, `fingerprint`, `insecure_skip_verify`.
    pub fn tls(&self) -> Result<TlsVerification, PveError> {
        let pinned = !self.fingerprint.is_empty();
        match (&self.ca_file, pinned, self.insecure_skip_verify) {
            (Some(ca), false, false) => Ok(TlsVerification::CaFile(ca.clone())),
            (None, true, false) => Ok(TlsVerification::Fingerprints(
                self.fingerprint
                    .iter()
                    .map(|fp| parse_fingerprint(fp))
                    .collect::<Result<_, _>>()?,
            )),
            (None, false, true) => Ok(TlsVerification::InsecureSkipVerify),
            _ => Err(PveError::Config {
                field: "tls".into(),
                detail:
                    "expected exactly one of ca_file, fingerprint or insecure_skip_verify = true"
                        .into(),
            }),
        }
    }

    /// The PVE client settings (reads the token secret).
    pub fn client_settings(&self) -> Result<PveClientSettings, PveError> {
        Ok(PveClientSettings {
            cluster: self.name.clone(),
            endpoints: self.endpoints.clone(),
            token: ApiToken::load(
                &self.token_id,
                self.token_secret_file.as_ref(),
                self.token_secret_env.as_deref(),
            )?,
            tls: self.tls()?,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            max_concurrency: self.max_concurrency,
        })
    }

    /// The cycle settings.
    pub fn cycle_settings(&self) -> CycleSettings {
        CycleSettings {
            cluster: self.name.clone(),
            guest_config_ttl: Duration::from_secs(self.guest_config_ttl_s),
            guest_config_budget: self.guest_config_budget,
            rrd_refresh: Duration::from_secs(self.rrd_refresh_s),
            history_interval: Duration::from_secs(self.history_interval_s),
            use_metrics_export: self.use_metrics_export,
        }
    }

    /// The cycle interval.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.interval_s)
    }
}

impl Config {
    /// Loads the TOML file (if given) with environment overrides, then validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let cfg: Config =
            proxbalance_runtime::load_config(path, ENV_PREFIX).map_err(|e| match e {
                proxbalance_runtime::RuntimeError::Config(e) => ConfigError::Parse(e),
                other => ConfigError::Invalid {
                    field: "configuration".into(),
                    detail: other.to_string(),
                },
            })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a TOML string (no environment), then validates.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let cfg: Config = Figment::new()
            .merge(Toml::string(text))
            .extract()
            .map_err(Box::new)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges and consistency; every error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: String, detail: &str| ConfigError::Invalid {
            field,
            detail: detail.to_owned(),
        };
        if self.clusters.is_empty() {
            return Err(invalid("clusters".into(), "expected at least one cluster"));
        }
        proxbalance_proto::subjects::Subjects::new(&self.nats.subject_prefix).map_err(|e| {
            ConfigError::Invalid {
                field: "nats.subject_prefix".into(),
                detail: e.to_string(),
            }
        })?;
        if self.nats.publish_timeout_ms == 0 {
            return Err(invalid("nats.publish_timeout_ms".into(), "expected > 0"));
        }
        self.nats.connection().validate().map_err(|e| match e {
            proxbalance_runtime::RuntimeError::Invalid { field, detail } => {
                ConfigError::Invalid { field, detail }
            }
            other => invalid("nats".into(), &other.to_string()),
        })?;
        let mut names = std::collections::BTreeSet::new();
        for (i, c) in self.clusters.iter().enumerate() {
            if c.name.is_empty() || !names.insert(c.name.clone()) {
                return Err(invalid(
                    format!("clusters[{i}].name"),
                    "expected a non-empty, unique name",
                ));
            }
            if c.endpoints
                .iter()
                .any(|e| proxbalance_runtime::secret::url_has_userinfo(e))
            {
                // Named without the value: it would carry the credentials.
                return Err(invalid(
                    format!("clusters[{i}].endpoints"),
                    "credentials in the URL are refused; the API token comes from token_secret_file or token_secret_env",
                ));
            }
            if !(c.interval_s.is_finite() && c.interval_s >= 0.1) {
                return Err(invalid(
                    format!("clusters[{i}].interval_s"),
                    "expected a number ≥ 0.1",
                ));
            }
            if c.request_timeout_ms == 0 {
                return Err(invalid(
                    format!("clusters[{i}].request_timeout_ms"),
                    "expected > 0",
                ));
            }
            if c.max_concurrency == 0 {
                return Err(invalid(
                    format!("clusters[{i}].max_concurrency"),
                    "expected > 0",
                ));
            }
            c.tls()
                .map_err(|source| ConfigError::Pve { index: i, source })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[nats]
url = "nats://127.0.0.1:4222"

[[clusters]]
name = "prod"
endpoints = ["https://pve1:8006", "https://pve2:8006"]
token_id = "collector@pve!lb"
token_secret_env = "PVE_SECRET"
fingerprint = "80:D4:F2:DF:64:95:CD:8D:A0:82:82:AC:48:BA:C0:7A:1B:6B:87:8B:FE:B9:83:1C:95:4E:79:58:77:99:69:F5"
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let cfg = Config::from_toml(MINIMAL).unwrap();
        assert_eq!(cfg.nats.subject_prefix, "proxbalance");
        assert_eq!(cfg.nats.publish_timeout_ms, 5000);
        let c = &cfg.clusters[0];
        assert_eq!(c.interval_s, 30.0);
        assert_eq!(c.guest_config_ttl_s, 600);
        assert!(
            matches!(c.tls().unwrap(), TlsVerification::Fingerprints(fps) if fps.len() == 1 && fps[0][0] == 0x80)
        );
    }

    #[test]
    fn one_fingerprint_per_endpoint() {
        let fp = |b: u8| {
            format!("{b:02X}:")
                .repeat(32)
                .trim_end_matches(':')
                .to_owned()
        };
        let text = MINIMAL
            .lines()
            .filter(|l| !l.starts_with("fingerprint"))
            .collect::<Vec<_>>()
            .join("\n");
        let cfg = Config::from_toml(&format!(
            "{text}\nfingerprint = [{:?}, {:?}]\n",
            fp(0x11),
            fp(0x22)
        ))
        .unwrap();
        assert_eq!(
            cfg.clusters[0].tls().unwrap(),
            TlsVerification::Fingerprints(vec![[0x11; 32], [0x22; 32]])
        );
        let err = Config::from_toml(&format!(
            "{text}\nfingerprint = [{:?}, \"nope\"]\n",
            fp(0x11)
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("configuration, clusters[0]: PVE client configuration, tls.fingerprint: expected a SHA-256 fingerprint"),
            "{err}"
        );
        let err = Config::from_toml(&format!("{text}\nfingerprint = 7\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a SHA-256 fingerprint or a list of them"),
            "{err}"
        );
    }

    #[test]
    fn two_tls_modes_are_refused() {
        let text = format!("{MINIMAL}insecure_skip_verify = true\n");
        let err = Config::from_toml(&text).unwrap_err().to_string();
        assert_eq!(
            err,
            "configuration, clusters[0]: PVE client configuration, tls: expected exactly one of ca_file, fingerprint or insecure_skip_verify = true"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let err = Config::from_toml(&format!("{MINIMAL}bogus = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
        let err = Config::from_toml(&format!("{MINIMAL}interval_s = 0\n"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "configuration, clusters[0].interval_s: expected a number ≥ 0.1"
        );
        let err =
            Config::from_toml(&MINIMAL.replace("https://pve1:8006", "https://root:pw@pve1:8006"))
                .unwrap_err()
                .to_string();
        assert_eq!(
            err,
            "configuration, clusters[0].endpoints: credentials in the URL are refused; the API token comes from token_secret_file or token_secret_env"
        );
        let err = Config::from_toml("[nats]\n").unwrap_err().to_string();
        assert_eq!(
            err,
            "configuration, clusters: expected at least one cluster"
        );
    }
}
