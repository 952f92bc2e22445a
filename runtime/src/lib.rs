//! What the proxbalance services share at run time, kept in one place so the collector and the
//! recommender behave alike:
//!
//! - [`NatsSettings`] and [`connect_nats`]: the NATS connection (URL, timeout, user/password,
//!   nkey or credentials file, TLS, the service's own inbox prefix); secrets come from files or
//!   the environment ([`secret`]);
//! - [`publish`]: the one JetStream publish path, with permanent and transient failures told
//!   apart;
//! - [`load_config`]: a TOML file with environment overrides, unknown keys refused;
//! - [`init_logging`]: `tracing` to stderr, text or JSON, filtered by `RUST_LOG`;
//! - [`start_metrics_exporter`]: the Prometheus `/metrics` listener;
//! - [`shutdown_on_signal`]: a cancellation token cancelled by SIGTERM or SIGINT;
//! - [`install_crypto_provider`]: the process-wide rustls provider (ring).
//! - [`tasks`]: the service's long-lived tasks, a panic in one stopping the service with an error.
//! - [`telemetry`]: logs (text or JSON) and opt-in OpenTelemetry traces over OTLP, with the
//!   `traceparent` helpers that carry a trace across NATS and gRPC.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

mod env_lists;
pub mod publish;
pub mod secret;

pub use publish::{
    JetStreamPublisher, NatsConnection, OutMessage, PublishError, PublishFailure, Refusals,
};

pub use secret::{Secret, SecretError, redact_url};

pub mod tasks;
pub mod telemetry;

pub use tasks::{CriticalTasks, TaskFailure};
pub use telemetry::{Telemetry, TelemetryConfig, TelemetryError, init_telemetry};

/// Why a run-time facility could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// NATS could not be reached or refused the login.
    #[error("cannot connect to NATS at {url}: {detail}")]
    Connect {
        /// The configured URL, with any user-info replaced by `***` ([`redact_url`]).
        url: String,
        /// What failed (never a secret).
        detail: String,
    },
    /// A NATS setting is inconsistent or a file it names is unusable.
    #[error("configuration, {field}: {detail}")]
    Invalid {
        /// The key at fault (e.g. `nats.password_file`).
        field: String,
        /// What was expected.
        detail: String,
    },
    /// A secret could not be read from its file or environment variable.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The configuration file or environment could not be read into the configuration.
    #[error("configuration: {0}")]
    Config(#[from] Box<figment::Error>),
    /// The metrics listener address is not `host:port`, or the exporter failed to start.
    #[error("metrics.listen: {0}")]
    Metrics(String),
}

/// Declares a `[nats]` configuration table: the connection and login keys every service shares
/// (declared here once; [`NatsSettings`] is the table with nothing else), then the service's own
/// keys, each with its default. The table refuses unknown keys, gives every key a default, and
/// has `connection()`, the shared part as a [`NatsSettings`] for [`connect_nats`].
///
/// (The shared keys cannot be a `#[serde(flatten)]`-ed [`NatsSettings`]: flatten does not work
/// with `deny_unknown_fields`, and errors inside a flattened struct lose the key's name.)
#[macro_export]
macro_rules! nats_table {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty = $default:expr ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, serde::Deserialize)]
        #[serde(deny_unknown_fields, default)]
        $vis struct $name {
            /// Server URL(s), comma-separated; `tls://` requires TLS.
            pub url: String,
            /// Time to wait for the initial connection, milliseconds.
            pub connect_timeout_ms: u64,
            /// A NATS credentials file (JWT + nkey seed), for servers with an operator.
            pub credentials_file: Option<std::path::PathBuf>,
            /// User name for user/password login (with `password_file` or `password_env`).
            pub user: Option<String>,
            /// File holding the password of `user` (e.g. a systemd credential).
            pub password_file: Option<std::path::PathBuf>,
            /// Name of the environment variable holding the password of `user`.
            pub password_env: Option<String>,
            /// File holding the nkey seed (`SU…`) for nkey login.
            pub nkey_seed_file: Option<std::path::PathBuf>,
            /// PEM file of the CA that signed the server's certificate; setting it requires TLS.
            pub tls_ca_file: Option<std::path::PathBuf>,
            /// PEM client certificate for mutual TLS (with `tls_key_file`).
            pub tls_cert_file: Option<std::path::PathBuf>,
            /// PEM private key of `tls_cert_file`.
            pub tls_key_file: Option<std::path::PathBuf>,
            /// Refuse to talk to a server without TLS even when no CA file is given.
            pub tls_required: bool,
            /// Prefix of this service's reply subjects (JetStream acknowledgements, API
            /// replies, consumer deliveries); none: `_INBOX_<service>` (see
            /// [`inbox_prefix`]($crate::inbox_prefix)). The server's permissions let each
            /// service subscribe to its own prefix only.
            pub inbox_prefix: Option<String>,
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    url: "nats://127.0.0.1:4222".into(),
                    connect_timeout_ms: 5000,
                    credentials_file: None,
                    user: None,
                    password_file: None,
                    password_env: None,
                    nkey_seed_file: None,
                    tls_ca_file: None,
                    tls_cert_file: None,
                    tls_key_file: None,
                    tls_required: false,
                    inbox_prefix: None,
                    $( $field: $default, )*
                }
            }
        }

        impl $name {
            /// The connection and login part, for [`connect_nats`]($crate::connect_nats).
            pub fn connection(&self) -> $crate::NatsSettings {
                $crate::NatsSettings {
                    url: self.url.clone(),
                    connect_timeout_ms: self.connect_timeout_ms,
                    credentials_file: self.credentials_file.clone(),
                    user: self.user.clone(),
                    password_file: self.password_file.clone(),
                    password_env: self.password_env.clone(),
                    nkey_seed_file: self.nkey_seed_file.clone(),
                    tls_ca_file: self.tls_ca_file.clone(),
                    tls_cert_file: self.tls_cert_file.clone(),
                    tls_key_file: self.tls_key_file.clone(),
                    tls_required: self.tls_required,
                    inbox_prefix: self.inbox_prefix.clone(),
                }
            }
        }
    };
}

nats_table! {
    /// How to reach NATS and log in: the keys every service's `[nats]` table starts with
    /// (`nats.url`, `nats.user`, …; see [`nats_table!`]).
    ///
    /// At most one login method: `user` with `password_file` or `password_env`,
    /// `nkey_seed_file`, or `credentials_file`. Secrets are read from files or the environment
    /// when connecting, never from the URL (a URL with `user:password@` is refused) nor the
    /// command line.
    pub struct NatsSettings {}
}

impl NatsSettings {
    /// Checks that the login and TLS settings are consistent, without reading any file.
    /// Errors name the key with the `nats.` prefix.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        let invalid = |field: &str, detail: &str| RuntimeError::Invalid {
            field: format!("nats.{field}"),
            detail: detail.to_owned(),
        };
        if secret::url_has_userinfo(&self.url) {
            return Err(invalid(
                "url",
                "credentials in the URL are refused; use nats.user with nats.password_file or nats.password_env",
            ));
        }
        let methods = [
            self.user.is_some(),
            self.nkey_seed_file.is_some(),
            self.credentials_file.is_some(),
        ];
        if methods.iter().filter(|m| **m).count() > 1 {
            return Err(invalid(
                "user",
                "expected at most one of user, nkey_seed_file and credentials_file",
            ));
        }
        match (
            self.user.as_deref(),
            &self.password_file,
            &self.password_env,
        ) {
            (Some(""), _, _) => return Err(invalid("user", "expected a non-empty name")),
            (Some(_), Some(_), Some(_)) => {
                return Err(invalid(
                    "password_file",
                    "expected one of password_file and password_env, not both",
                ));
            }
            (Some(_), None, None) => {
                return Err(invalid(
                    "password_file",
                    "nats.user needs nats.password_file or nats.password_env",
                ));
            }
            (None, Some(_), _) => {
                return Err(invalid("password_file", "set only together with nats.user"));
            }
            (None, None, Some(_)) => {
                return Err(invalid("password_env", "set only together with nats.user"));
            }
            _ => {}
        }
        if let Some("") = self.password_env.as_deref() {
            return Err(invalid("password_env", "expected a variable name"));
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), None) => {
                return Err(invalid("tls_key_file", "required with nats.tls_cert_file"));
            }
            (None, Some(_)) => {
                return Err(invalid("tls_cert_file", "required with nats.tls_key_file"));
            }
            _ => {}
        }
        if let Some(prefix) = &self.inbox_prefix
            && !proxbalance_proto::subjects::is_literal_prefix(prefix)
        {
            return Err(invalid(
                "inbox_prefix",
                "expected dot-separated non-empty tokens without `*`, `>` or whitespace",
            ));
        }
        Ok(())
    }

    /// The URL as it may be logged (user-info replaced by `***`).
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// The inbox prefix a service named `client_name` uses: `nats.inbox_prefix` when set, else
/// `_INBOX_` followed by the name without its `proxbalance-` start (`_INBOX_collector`,
/// `_INBOX_recommender`). With a prefix of its own per service, the server's permissions can
/// let each read only its own replies (`deploy/nats-server.conf`).
pub fn inbox_prefix(settings: &NatsSettings, client_name: &str) -> String {
    settings.inbox_prefix.clone().unwrap_or_else(|| {
        format!(
            "_INBOX_{}",
            client_name
                .strip_prefix("proxbalance-")
                .unwrap_or(client_name)
        )
    })
}

/// Builds the connect options of `settings` (login, TLS, timeout, name, inbox prefix), reading
/// the password or seed from its file or environment variable. The tests use it to connect
/// exactly as a service does.
pub async fn nats_connect_options(
    settings: &NatsSettings,
    client_name: &str,
) -> Result<async_nats::ConnectOptions, RuntimeError> {
    settings.validate()?;
    let mut opts = async_nats::ConnectOptions::new();
    if let Some(user) = &settings.user {
        let password = match (&settings.password_file, &settings.password_env) {
            (Some(file), _) => Secret::from_file(file, "nats.password_file")?,
            (None, Some(var)) => Secret::from_env(var, "nats.password_env")?,
            (None, None) => unreachable!("validated"),
        };
        opts = opts.user_and_password(user.clone(), password.expose().to_owned());
    }
    if let Some(file) = &settings.nkey_seed_file {
        let seed = Secret::from_file(file, "nats.nkey_seed_file")?;
        // Checked here so that a bad seed is reported with its key, not at the first connect.
        if nkeys::KeyPair::from_seed(seed.expose()).is_err() {
            return Err(RuntimeError::Invalid {
                field: "nats.nkey_seed_file".into(),
                detail: format!("{} does not hold an nkey seed", file.display()),
            });
        }
        opts = opts.nkey(seed.expose().to_owned());
    }
    if let Some(creds) = &settings.credentials_file {
        opts = opts
            .credentials_file(creds)
            .await
            .map_err(|e| RuntimeError::Invalid {
                field: "nats.credentials_file".into(),
                detail: format!("{}: {}", creds.display(), e.kind()),
            })?;
    }
    for (field, file) in [
        ("nats.tls_ca_file", &settings.tls_ca_file),
        ("nats.tls_cert_file", &settings.tls_cert_file),
        ("nats.tls_key_file", &settings.tls_key_file),
    ] {
        if let Some(file) = file
            && let Err(e) = std::fs::metadata(file)
        {
            return Err(RuntimeError::Invalid {
                field: field.into(),
                detail: format!("cannot read {}: {e}", file.display()),
            });
        }
    }
    if let Some(ca) = &settings.tls_ca_file {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&settings.tls_cert_file, &settings.tls_key_file) {
        opts = opts
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    if settings.tls_required {
        opts = opts.require_tls(true);
    }
    Ok(opts
        .name(client_name)
        .custom_inbox_prefix(inbox_prefix(settings, client_name))
        .connection_timeout(Duration::from_millis(settings.connect_timeout_ms.max(1))))
}

/// Connects to NATS as `client_name` with the given settings. The client reconnects on its own
/// after the first connection succeeds; the server's refusals of publishes are fed to the
/// connection's [`Refusals`] (see [`publish`]). Errors carry the redacted URL and never a secret.
pub async fn connect_nats(
    settings: &NatsSettings,
    client_name: &str,
) -> Result<NatsConnection, RuntimeError> {
    let refusals = Refusals::default();
    let feed = refusals.clone();
    let opts = nats_connect_options(settings, client_name)
        .await?
        .event_callback(move |event| {
            let feed = feed.clone();
            // async-nats logs every event itself.
            async move {
                if let async_nats::Event::ServerError(e) = &event {
                    feed.observe(e);
                }
            }
        });
    // `url` may list several servers, comma-separated (a cluster): the client needs more than
    // the one it first reaches to survive that one's loss, since the servers it learns from
    // the cluster's gossip depend on timing.
    let servers = settings
        .url
        .split(',')
        .map(|u| u.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RuntimeError::Connect {
            url: settings.redacted_url(),
            detail: redact_url(&e.to_string()),
        })?;
    let client = opts
        .connect(servers)
        .await
        .map_err(|e| RuntimeError::Connect {
            url: settings.redacted_url(),
            detail: redact_url(&e.to_string()),
        })?;
    Ok(NatsConnection::new(client, refusals))
}

/// Loads a configuration: the TOML file (if given), then environment variables named
/// `<env_prefix><KEY>` with `__` between nesting levels (e.g. `PROXBALANCE_RECOMMENDER__NATS__URL`).
/// Unknown keys are refused when `T` denies them; the error names the key.
pub fn load_config<T: DeserializeOwned>(
    path: Option<&Path>,
    env_prefix: &str,
) -> Result<T, RuntimeError> {
    let mut fig = Figment::new();
    if let Some(p) = path {
        fig = fig.merge(Toml::file_exact(p));
    }
    // List elements (`PREFIX__CLUSTERS__0__KEY`) are applied after figment: see `env_lists`.
    fig = fig.merge(
        Env::prefixed(env_prefix)
            .filter(|k| !env_lists::addresses_list_element(k.as_str()))
            .split("__"),
    );
    let mut merged: serde_json::Value = fig
        .extract()
        .map_err(|e| RuntimeError::Config(Box::new(e)))?;
    env_lists::apply(&mut merged, env_prefix, std::env::vars())?;
    Figment::from(figment::providers::Serialized::defaults(merged))
        .extract()
        .map_err(|e| RuntimeError::Config(Box::new(e)))
}

/// Parses a configuration from TOML text alone (tests, examples).
pub fn config_from_toml<T: DeserializeOwned>(text: &str) -> Result<T, RuntimeError> {
    Figment::new()
        .merge(Toml::string(text))
        .extract()
        .map_err(|e| RuntimeError::Config(Box::new(e)))
}

/// Installs the ring TLS provider as the process default (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Sends `tracing` output to stderr, as JSON lines or text, filtered by `RUST_LOG` (default
/// `info`). Does nothing when a subscriber is already installed.
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Upper bounds (seconds) of the buckets of every duration histogram (every metric whose name
/// ends in `_seconds` and is recorded with `histogram!`): 1 ms to 60 s, about ×2.5 apart. They
/// cover a gRPC call served from the cache (about 1 ms), a recomputation (ms to s) and a
/// collection cycle (tenths of a second to tens of seconds).
pub const DURATION_BUCKETS_SECONDS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Starts the Prometheus exporter on `listen` (`host:port`) and installs it as the global
/// metrics recorder; series idle for `idle_timeout` are dropped (see [`prometheus_builder`]).
/// `None` starts nothing.
pub fn start_metrics_exporter(
    listen: Option<&str>,
    idle_timeout: Option<Duration>,
) -> Result<Option<SocketAddr>, RuntimeError> {
    let Some(listen) = listen else {
        return Ok(None);
    };
    let addr: SocketAddr = listen
        .parse()
        .map_err(|_| RuntimeError::Metrics(format!("expected host:port, found {listen:?}")))?;
    prometheus_builder(idle_timeout)
        .with_http_listener(addr)
        .install()
        .map_err(|e| RuntimeError::Metrics(format!("cannot start the exporter on {addr}: {e}")))?;
    tracing::info!(%addr, "Prometheus metrics at /metrics");
    Ok(Some(addr))
}

/// The exporter's builder.
///
/// - Durations are Prometheus histograms with [`DURATION_BUCKETS_SECONDS`] (`NAME_bucket{le=…}`,
///   `NAME_sum`, `NAME_count`), not summaries: a summary's quantiles cannot be aggregated
///   across replicas or clusters, a histogram's buckets can
///   (`histogram_quantile(0.99, sum by (le) (rate(NAME_bucket[5m])))`).
/// - With `idle_timeout`, a series not updated for that long leaves the scrape output (until
///   it is updated again): the labels of a cluster or node that disappeared do not stay
///   forever.
pub fn prometheus_builder(
    idle_timeout: Option<Duration>,
) -> metrics_exporter_prometheus::PrometheusBuilder {
    let with_buckets = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &DURATION_BUCKETS_SECONDS,
        );
    // Only an empty list is refused, and the list is a non-empty constant.
    with_buckets
        .unwrap_or_else(|_| metrics_exporter_prometheus::PrometheusBuilder::new())
        .idle_timeout(metrics_util::MetricKindMask::ALL, idle_timeout)
}

/// A token that is cancelled when the process receives SIGTERM or SIGINT (Ctrl-C). Must be
/// called inside a tokio runtime.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        match term {
            Ok(mut term) => {
                tokio::select! {
                    r = tokio::signal::ctrl_c() => {
                        if let Err(e) = r {
                            tracing::error!(error = %e, "cannot listen for SIGINT; shutting down");
                        }
                    }
                    _ = term.recv() => {}
                }
                tracing::info!("shutdown signal received");
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot install the SIGTERM handler; shutting down")
            }
        }
        cancel.cancel();
    });
    token
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[serde(default)]
        nats: NatsSettings,
    }

    #[test]
    fn nats_settings_default_and_refuse_unknown_keys() {
        let s: Sample = config_from_toml("[nats]\nurl = \"nats://h:1\"\n").unwrap();
        assert_eq!(s.nats.url, "nats://h:1");
        assert_eq!(s.nats.connect_timeout_ms, 5000);
        let err = config_from_toml::<Sample>("[nats]\nurll = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("urll"), "{err}");
    }

    #[test]
    fn idle_series_leave_the_scrape_output() {
        let recorder = prometheus_builder(Some(Duration::from_millis(200))).build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::gauge!("gone_seconds", "cluster" => "old").set(1.0);
        });
        assert!(handle.render().contains("gone_seconds{cluster=\"old\"} 1"));
        // The exporter's idle clock is real time: there is no event to wait on but its passing.
        std::thread::sleep(Duration::from_millis(300));
        metrics::with_local_recorder(&recorder, || {
            metrics::gauge!("kept_seconds", "cluster" => "live").set(2.0);
        });
        let out = handle.render();
        assert!(!out.contains("gone_seconds"), "{out}");
        assert!(out.contains("kept_seconds{cluster=\"live\"} 2"), "{out}");
    }

    #[test]
    fn durations_are_histograms_with_the_documented_buckets() {
        let recorder = prometheus_builder(None).build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!("unit_test_duration_seconds", "cluster" => "a").record(0.003);
            metrics::histogram!("unit_test_duration_seconds", "cluster" => "a").record(7.0);
        });
        let text = handle.render();
        assert!(!text.contains("quantile="), "{text}");
        assert!(
            text.contains("# TYPE unit_test_duration_seconds histogram"),
            "{text}"
        );
        let bucket = |le: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("unit_test_duration_seconds_bucket")
                        && l.contains(&format!("le=\"{le}\""))
                })
                .and_then(|l| l.rsplit(' ').next())
                .map(str::to_owned)
        };
        for le in DURATION_BUCKETS_SECONDS {
            assert!(bucket(&le.to_string()).is_some(), "le={le}: {text}");
        }
        assert_eq!(bucket("0.0025").as_deref(), Some("0"));
        assert_eq!(bucket("0.005").as_deref(), Some("1"));
        assert_eq!(bucket("5").as_deref(), Some("1"));
        assert_eq!(bucket("10").as_deref(), Some("2"));
        assert_eq!(bucket("+Inf").as_deref(), Some("2"));
        assert!(
            text.contains("unit_test_duration_seconds_count{cluster=\"a\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn metrics_listen_must_be_an_address() {
        let err = start_metrics_exporter(Some("nope"), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "metrics.listen: expected host:port, found \"nope\""
        );
        assert_eq!(start_metrics_exporter(None, None).unwrap(), None);
    }

    #[tokio::test]
    async fn unreachable_nats_names_the_url() {
        let s = NatsSettings {
            url: "nats://127.0.0.1:1".into(),
            connect_timeout_ms: 200,
            ..Default::default()
        };
        let err = connect_nats(&s, "test").await.unwrap_err().to_string();
        assert!(
            err.starts_with("cannot connect to NATS at nats://127.0.0.1:1:"),
            "{err}"
        );
    }

    #[test]
    fn each_service_has_an_inbox_prefix_of_its_own() {
        let base = NatsSettings::default();
        assert_eq!(
            inbox_prefix(&base, "proxbalance-collector"),
            "_INBOX_collector"
        );
        assert_eq!(
            inbox_prefix(&base, "proxbalance-recommender"),
            "_INBOX_recommender"
        );
        let custom = NatsSettings {
            inbox_prefix: Some("_INBOX_lab.collector".into()),
            ..base.clone()
        };
        assert!(custom.validate().is_ok());
        assert_eq!(
            inbox_prefix(&custom, "proxbalance-collector"),
            "_INBOX_lab.collector"
        );
        for bad in ["", "_INBOX.>", "a..b", "a b"] {
            let err = NatsSettings {
                inbox_prefix: Some(bad.into()),
                ..base.clone()
            }
            .validate()
            .unwrap_err()
            .to_string();
            assert_eq!(
                err,
                "configuration, nats.inbox_prefix: expected dot-separated non-empty tokens without `*`, `>` or whitespace",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn login_settings_are_checked_and_name_the_key() {
        let base = NatsSettings::default();
        let check = |s: NatsSettings| s.validate().unwrap_err().to_string();
        assert_eq!(
            check(NatsSettings {
                url: "nats://collector:hunter2@h:4222".into(),
                ..base.clone()
            }),
            "configuration, nats.url: credentials in the URL are refused; use nats.user with nats.password_file or nats.password_env"
        );
        assert_eq!(
            check(NatsSettings {
                user: Some("u".into()),
                ..base.clone()
            }),
            "configuration, nats.password_file: nats.user needs nats.password_file or nats.password_env"
        );
        assert_eq!(
            check(NatsSettings {
                user: Some("u".into()),
                password_env: Some("X".into()),
                nkey_seed_file: Some("s".into()),
                ..base.clone()
            }),
            "configuration, nats.user: expected at most one of user, nkey_seed_file and credentials_file"
        );
        assert_eq!(
            check(NatsSettings {
                password_env: Some("X".into()),
                ..base.clone()
            }),
            "configuration, nats.password_env: set only together with nats.user"
        );
        assert_eq!(
            check(NatsSettings {
                tls_cert_file: Some("c".into()),
                ..base.clone()
            }),
            "configuration, nats.tls_key_file: required with nats.tls_cert_file"
        );
        assert!(
            NatsSettings {
                user: Some("u".into()),
                password_file: Some("/p".into()),
                tls_ca_file: Some("/ca".into()),
                ..base
            }
            .validate()
            .is_ok()
        );
    }

    #[tokio::test]
    async fn unreadable_secrets_name_the_key_and_not_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("seed");
        std::fs::write(&seed, "not-a-seed-but-secret\n").unwrap();
        let s = NatsSettings {
            nkey_seed_file: Some(seed.clone()),
            ..Default::default()
        };
        let err = nats_connect_options(&s, "t").await.unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "configuration, nats.nkey_seed_file: {} does not hold an nkey seed",
                seed.display()
            )
        );
        let missing = dir.path().join("missing");
        let s = NatsSettings {
            user: Some("u".into()),
            password_file: Some(missing.clone()),
            ..Default::default()
        };
        let err = nats_connect_options(&s, "t").await.unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "configuration, nats.password_file: cannot read {}: ",
                missing.display()
            )),
            "{err}"
        );
    }
}
