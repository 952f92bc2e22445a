//! The PVE API client: token auth, verified TLS, endpoint failover, timeouts and bounded
//! concurrency.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use super::error::PveError;
use super::tls::{TlsVerification, client_config};

/// A PVE API token. The secret is never printed: `Debug` shows only the token id.
#[derive(Clone)]
pub struct ApiToken {
    id: String,
    secret: String,
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiToken")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl ApiToken {
    /// A token from its id (`user@realm!tokenid`) and secret.
    pub fn new(id: &str, secret: &str) -> Result<Self, PveError> {
        let valid_id = id
            .split_once('@')
            .and_then(|(user, rest)| rest.split_once('!').map(|(realm, tok)| (user, realm, tok)))
            .is_some_and(|(u, r, t)| !u.is_empty() && !r.is_empty() && !t.is_empty());
        if !valid_id || id.chars().any(|c| c.is_whitespace() || c == '=') {
            return Err(PveError::Config {
                field: "token_id".into(),
                detail: format!("expected `user@realm!tokenid`, found {id:?}"),
            });
        }
        let secret = secret.trim();
        if secret.is_empty() || secret.chars().any(|c| c.is_control()) {
            return Err(PveError::Config {
                field: "token secret".into(),
                detail: "expected a non-empty secret without control characters".into(),
            });
        }
        Ok(Self {
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// Loads the secret from a file (first choice) or an environment variable.
    pub fn load(
        id: &str,
        secret_file: Option<&PathBuf>,
        secret_env: Option<&str>,
    ) -> Result<Self, PveError> {
        if let Some(path) = secret_file {
            let secret = std::fs::read_to_string(path).map_err(|e| PveError::Config {
                field: "token_secret_file".into(),
                detail: format!("cannot read {}: {e}", path.display()),
            })?;
            return Self::new(id, &secret);
        }
        if let Some(var) = secret_env {
            let secret = std::env::var(var).map_err(|_| PveError::Config {
                field: "token_secret_env".into(),
                detail: format!("expected the environment variable {var} to hold the token secret"),
            })?;
            return Self::new(id, &secret);
        }
        Err(PveError::Config {
            field: "token_secret_file".into(),
            detail: "expected token_secret_file or token_secret_env".into(),
        })
    }

    /// The token id (`user@realm!tokenid`).
    pub fn id(&self) -> &str {
        &self.id
    }

    fn header_value(&self) -> Result<HeaderValue, PveError> {
        let mut value = HeaderValue::from_str(&format!("PVEAPIToken={}={}", self.id, self.secret))
            .map_err(|_| PveError::Config {
                field: "token".into(),
                detail: "expected the token id and secret to be valid HTTP header characters"
                    .into(),
            })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// Settings of a [`PveClient`].
#[derive(Debug, Clone)]
pub struct PveClientSettings {
    /// Name of the cluster, used in metrics labels.
    pub cluster: String,
    /// Base URLs, e.g. `https://pve1.example:8006`; tried in order, the last good one first.
    pub endpoints: Vec<String>,
    /// The API token.
    pub token: ApiToken,
    /// Server certificate verification.
    pub tls: TlsVerification,
    /// Timeout of one request (connect, send, receive).
    pub request_timeout: Duration,
    /// Timeout of the TCP connect.
    pub connect_timeout: Duration,
    /// Most requests in flight at once.
    pub max_concurrency: usize,
}

/// A client for one cluster's PVE API.
#[derive(Debug, Clone)]
pub struct PveClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cluster: String,
    endpoints: Vec<String>,
    http: reqwest::Client,
    auth: HeaderValue,
    permits: Semaphore,
    preferred: AtomicUsize,
    timeout: Duration,
    requests: AtomicU64,
}

/// `{"data": ...}` envelope of every PVE answer.
#[derive(serde::Deserialize)]
struct Envelope<T> {
    data: Option<T>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct ErrorBody {
    message: Option<String>,
}

/// The path with node names, vmids and query removed, for metric labels
/// (`/nodes/{node}/qemu/{vmid}/config`).
pub fn path_template(path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    let mut out = Vec::new();
    let mut prev = "";
    for seg in path.split('/') {
        let t = if prev == "nodes" {
            "{node}"
        } else if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            "{vmid}"
        } else if prev == "tasks" {
            "{upid}"
        } else {
            seg
        };
        out.push(t);
        prev = seg;
    }
    out.join("/")
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> (String, bool) {
    let mut parts = vec![err.to_string()];
    let mut tls = false;
    let mut cur = err.source();
    while let Some(e) = cur {
        if e.downcast_ref::<rustls::Error>().is_some() {
            tls = true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        {
            tls = true;
        }
        let s = e.to_string();
        let lower = s.to_ascii_lowercase();
        if lower.contains("certificate") || lower.contains("handshake") || lower.contains("tls") {
            tls = true;
        }
        if parts.last() != Some(&s) {
            parts.push(s);
        }
        cur = e.source();
    }
    (parts.join(": "), tls)
}

impl PveClient {
    /// Builds the client; fails on an empty endpoint list, a bad URL or an unusable TLS setting.
    pub fn new(settings: PveClientSettings) -> Result<Self, PveError> {
        if settings.endpoints.is_empty() {
            return Err(PveError::Config {
                field: "endpoints".into(),
                detail: "expected at least one API endpoint URL".into(),
            });
        }
        let mut endpoints = Vec::with_capacity(settings.endpoints.len());
        for (i, e) in settings.endpoints.iter().enumerate() {
            let e = e.trim_end_matches('/');
            if !e.starts_with("https://") {
                return Err(PveError::Config {
                    field: format!("endpoints[{i}]"),
                    detail: format!("expected an https:// URL, found {e:?}"),
                });
            }
            endpoints.push(e.to_owned());
        }
        let tls = client_config(&settings.tls)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(settings.request_timeout)
            .connect_timeout(settings.connect_timeout)
            .pool_max_idle_per_host(settings.max_concurrency.max(1))
            .build()
            .map_err(|e| PveError::Config {
                field: "tls".into(),
                detail: format!("cannot build the HTTP client: {}", error_chain(&e).0),
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                cluster: settings.cluster,
                endpoints,
                http,
                auth: settings.token.header_value()?,
                permits: Semaphore::new(settings.max_concurrency.max(1)),
                preferred: AtomicUsize::new(0),
                timeout: settings.request_timeout,
                requests: AtomicU64::new(0),
            }),
        })
    }

    /// Number of HTTP requests sent so far (for per-cycle accounting).
    pub fn requests_sent(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// The endpoint tried first (the last one that answered).
    pub fn current_endpoint(&self) -> &str {
        let i = self.inner.preferred.load(Ordering::Relaxed) % self.inner.endpoints.len();
        &self.inner.endpoints[i]
    }

    /// `GET /api2/json<path>` and decode `data` as `T`, failing over to the next endpoint on
    /// transport errors, TLS failures and timeouts. A `null` `data` decodes as `T::default()`.
    pub async fn get<T: DeserializeOwned + Default>(&self, path: &str) -> Result<T, PveError> {
        let n = self.inner.endpoints.len();
        let start = self.inner.preferred.load(Ordering::Relaxed) % n;
        let mut last = None;
        for k in 0..n {
            let i = (start + k) % n;
            let endpoint = &self.inner.endpoints[i];
            match self.get_from(endpoint, path).await {
                Ok(v) => {
                    if i != start {
                        self.inner.preferred.store(i, Ordering::Relaxed);
                        tracing::warn!(cluster = %self.inner.cluster, endpoint = %endpoint, "failed over to another PVE API endpoint");
                        metrics::counter!("proxbalance_collector_endpoint_failovers_total", "cluster" => self.inner.cluster.clone()).increment(1);
                    }
                    return Ok(v);
                }
                Err(e) if e.should_fail_over() && k + 1 < n => {
                    tracing::warn!(cluster = %self.inner.cluster, error = %e, "PVE API endpoint failed, trying the next one");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| PveError::Config {
            field: "endpoints".into(),
            detail: "expected at least one API endpoint URL".into(),
        }))
    }

    async fn get_from<T: DeserializeOwned + Default>(
        &self,
        endpoint: &str,
        path: &str,
    ) -> Result<T, PveError> {
        let template = path_template(path);
        let labels = [
            ("cluster", self.inner.cluster.clone()),
            ("endpoint", endpoint.to_owned()),
            ("path", template),
        ];
        metrics::counter!("proxbalance_collector_api_requests_total", &labels).increment(1);
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        // A child of the cycle's span in the trace; the path is the template, without ids.
        let span = tracing::info_span!(
            "pve.request",
            http.method = "GET",
            endpoint = %endpoint,
            path = %labels[2].1,
            error = tracing::field::Empty,
        );
        let result = self.fetch(endpoint, path).instrument(span.clone()).await;
        if let Err(e) = &result {
            span.record("error", e.kind_label());
            let mut labels = labels.to_vec();
            labels.push(("kind", e.kind_label().to_owned()));
            metrics::counter!("proxbalance_collector_api_errors_total", &labels).increment(1);
        }
        result
    }

    async fn fetch<T: DeserializeOwned + Default>(
        &self,
        endpoint: &str,
        path: &str,
    ) -> Result<T, PveError> {
        let _permit = self
            .inner
            .permits
            .acquire()
            .await
            .map_err(|_| PveError::Transport {
                endpoint: endpoint.to_owned(),
                path: path.to_owned(),
                detail: "the client is shutting down".into(),
            })?;
        let url = format!("{endpoint}/api2/json{path}");
        let send_err = |e: reqwest::Error| {
            if e.is_timeout() {
                return PveError::Timeout {
                    endpoint: endpoint.to_owned(),
                    path: path.to_owned(),
                    timeout_ms: u64::try_from(self.inner.timeout.as_millis()).unwrap_or(u64::MAX),
                };
            }
            let (detail, tls) = error_chain(&e);
            if tls {
                PveError::Tls {
                    endpoint: endpoint.to_owned(),
                    path: path.to_owned(),
                    detail,
                }
            } else {
                PveError::Transport {
                    endpoint: endpoint.to_owned(),
                    path: path.to_owned(),
                    detail,
                }
            }
        };
        let response = self
            .inner
            .http
            .get(&url)
            .header(AUTHORIZATION, self.inner.auth.clone())
            .send()
            .await
            .map_err(send_err)?;
        let status = response.status();
        // PVE puts the message of 595/596 only in the reason phrase, which the HTTP client
        // does not expose; describe those statuses instead.
        let reason = match status.as_u16() {
            595 => Some("the API endpoint could not connect to the node".to_owned()),
            596 => Some("the node did not answer the proxied request".to_owned()),
            _ => None,
        };
        let body = response.bytes().await.map_err(send_err)?;
        if status.is_success() {
            let mut de = serde_json::Deserializer::from_slice(&body);
            let env: Envelope<T> =
                serde_path_to_error::deserialize(&mut de).map_err(|e| PveError::Decode {
                    endpoint: endpoint.to_owned(),
                    path: path.to_owned(),
                    detail: format!("at `{}`: {}", e.path(), e.inner()),
                })?;
            return Ok(env.data.unwrap_or_default());
        }
        let message = serde_json::from_slice::<ErrorBody>(&body)
            .ok()
            .and_then(|b| b.message)
            .map(|m| m.trim_end().to_owned())
            .filter(|m| !m.is_empty())
            .or(reason)
            .unwrap_or_else(|| {
                status
                    .canonical_reason()
                    .unwrap_or("no reason given")
                    .to_owned()
            });
        let (endpoint, path) = (endpoint.to_owned(), path.to_owned());
        Err(match status.as_u16() {
            401 => PveError::Auth {
                endpoint,
                path,
                reason: message,
            },
            403 => PveError::Permission {
                endpoint,
                path,
                message,
            },
            s @ (595 | 596) => PveError::NodeUnreachable {
                endpoint,
                path,
                status: s,
                reason: message,
            },
            s => PveError::Http {
                endpoint,
                path,
                status: s,
                message,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_debug_hides_the_secret() {
        let t = ApiToken::new("collector@pve!lb", "8a1f3c2e-secret").unwrap();
        let dbg = format!("{t:?}");
        assert!(!dbg.contains("8a1f3c2e"), "{dbg}");
        assert!(dbg.contains("collector@pve!lb"));
        let v = t.header_value().unwrap();
        assert!(v.is_sensitive());
        assert_eq!(
            v.to_str().unwrap(),
            "PVEAPIToken=collector@pve!lb=8a1f3c2e-secret"
        );
    }

    #[test]
    fn token_ids_are_checked() {
        for bad in [
            "",
            "collector",
            "collector@pve",
            "@pve!x",
            "a@!x",
            "a@b!",
            "a b@c!d",
        ] {
            let err = ApiToken::new(bad, "s").unwrap_err().to_string();
            assert!(
                err.contains("token_id: expected `user@realm!tokenid`"),
                "{bad}: {err}"
            );
        }
        assert!(ApiToken::new("a@b!c", "  ").is_err());
    }

    #[test]
    fn secret_from_file_is_trimmed_and_missing_sources_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        std::fs::write(&p, "abc-123\n").unwrap();
        let t = ApiToken::load("a@pve!t", Some(&p), None).unwrap();
        assert_eq!(t.secret, "abc-123");
        let err =
            ApiToken::load("a@pve!t", None, Some("PROXBALANCE_TEST_SURELY_UNSET_VAR")).unwrap_err();
        assert!(
            err.to_string()
                .contains("PROXBALANCE_TEST_SURELY_UNSET_VAR")
        );
        let err = ApiToken::load("a@pve!t", None, None).unwrap_err();
        assert!(
            err.to_string()
                .contains("expected token_secret_file or token_secret_env")
        );
    }

    #[test]
    fn path_templates_drop_names_and_ids() {
        assert_eq!(path_template("/cluster/resources"), "/cluster/resources");
        assert_eq!(path_template("/nodes/pve1/status"), "/nodes/{node}/status");
        assert_eq!(
            path_template("/nodes/pve1/qemu/101/config"),
            "/nodes/{node}/qemu/{vmid}/config"
        );
        assert_eq!(
            path_template("/nodes/pve2/rrddata?timeframe=hour"),
            "/nodes/{node}/rrddata"
        );
    }

    #[test]
    fn endpoints_must_be_https() {
        let err = PveClient::new(PveClientSettings {
            cluster: "c".into(),
            endpoints: vec!["http://x:8006".into()],
            token: ApiToken::new("a@b!c", "s").unwrap(),
            tls: TlsVerification::InsecureSkipVerify,
            request_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            max_concurrency: 1,
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "PVE client configuration, endpoints[0]: expected an https:// URL, found \"http://x:8006\""
        );
    }
}
