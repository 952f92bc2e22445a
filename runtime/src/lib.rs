//! What the proxbalance services share at run time, kept in one place so the collector and the
//! recommender behave alike:
//!
//! - [`NatsSettings`] and [`connect_nats`]: the NATS connection (URL, credentials file, timeout);
//! - [`load_config`]: a TOML file with environment overrides, unknown keys refused;
//! - [`init_logging`]: `tracing` to stderr, text or JSON, filtered by `RUST_LOG`;
//! - [`start_metrics_exporter`]: the Prometheus `/metrics` listener;
//! - [`shutdown_on_signal`]: a cancellation token cancelled by SIGTERM or SIGINT;
//! - [`install_crypto_provider`]: the process-wide rustls provider (ring).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

/// Why a run-time facility could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// NATS could not be reached or the credentials could not be read.
    #[error("cannot connect to NATS at {url}: {detail}")]
    Connect {
        /// The configured URL.
        url: String,
        /// What failed.
        detail: String,
    },
    /// The configuration file or environment could not be read into the configuration.
    #[error("configuration: {0}")]
    Config(#[from] Box<figment::Error>),
    /// The metrics listener address is not `host:port`, or the exporter failed to start.
    #[error("metrics.listen: {0}")]
    Metrics(String),
}

/// How to reach NATS. Embedded as the connection part of each service's `[nats]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSettings {
    /// Server URL(s), comma-separated.
    pub url: String,
    /// Time to wait for the initial connection, milliseconds.
    pub connect_timeout_ms: u64,
    /// A NATS credentials file (JWT + nkey), if the server requires it.
    pub credentials_file: Option<PathBuf>,
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            connect_timeout_ms: 5000,
            credentials_file: None,
        }
    }
}

/// Connects to NATS as `client_name` with the given settings. The client reconnects on its own
/// after the first connection succeeds.
pub async fn connect_nats(
    settings: &NatsSettings,
    client_name: &str,
) -> Result<async_nats::Client, RuntimeError> {
    let url = settings.url.clone();
    let mut opts = async_nats::ConnectOptions::new()
        .name(client_name)
        .connection_timeout(Duration::from_millis(settings.connect_timeout_ms.max(1)));
    if let Some(creds) = &settings.credentials_file {
        opts = opts
            .credentials_file(creds)
            .await
            .map_err(|e| RuntimeError::Connect {
                url: url.clone(),
                detail: format!("nats.credentials_file {}: {e}", creds.display()),
            })?;
    }
    opts.connect(url.as_str())
        .await
        .map_err(|e| RuntimeError::Connect {
            url,
            detail: e.to_string(),
        })
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
    fig = fig.merge(Env::prefixed(env_prefix).split("__"));
    fig.extract().map_err(|e| RuntimeError::Config(Box::new(e)))
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

/// Starts the Prometheus exporter on `listen` (`host:port`) and installs it as the global
/// metrics recorder. `None` starts nothing.
pub fn start_metrics_exporter(listen: Option<&str>) -> Result<Option<SocketAddr>, RuntimeError> {
    let Some(listen) = listen else {
        return Ok(None);
    };
    let addr: SocketAddr = listen
        .parse()
        .map_err(|_| RuntimeError::Metrics(format!("expected host:port, found {listen:?}")))?;
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| RuntimeError::Metrics(format!("cannot start the exporter on {addr}: {e}")))?;
    tracing::info!(%addr, "Prometheus metrics at /metrics");
    Ok(Some(addr))
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
    fn metrics_listen_must_be_an_address() {
        let err = start_metrics_exporter(Some("nope")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "metrics.listen: expected host:port, found \"nope\""
        );
        assert_eq!(start_metrics_exporter(None).unwrap(), None);
    }

    #[tokio::test]
    async fn unreachable_nats_names_the_url() {
        let s = NatsSettings {
            url: "nats://127.0.0.1:1".into(),
            connect_timeout_ms: 200,
            credentials_file: None,
        };
        let err = connect_nats(&s, "test").await.unwrap_err().to_string();
        assert!(
            err.starts_with("cannot connect to NATS at nats://127.0.0.1:1:"),
            "{err}"
        );
    }
}
