//! Who may call the gRPC server: TLS (optionally mutual) and an optional bearer token.
//!
//! [`GrpcSecurity::load`] reads the files named by `[grpc]` once, at start, so a missing or
//! malformed certificate, key or token stops the service with the key named. [`server_builder`]
//! turns it into a tonic server builder: TLS through tonic's ring-backed rustls acceptor, and
//! the [`BearerLayer`] in front of every route.
//!
//! The bearer check covers every service except `grpc.health.v1.Health`: health probes
//! (Kubernetes' gRPC probe, load balancers) cannot send a token, and health reveals nothing
//! but SERVING/NOT_SERVING. Reflection and `proxbalance.v1.Recommender` need the token. A call
//! without `authorization: Bearer <token>`, or with another token, gets `UNAUTHENTICATED`
//! before it reaches a handler; the token is compared in constant time and never logged.
//!
//! The web dashboard (`[http]`) is served with the same material: [`GrpcSecurity::http_tls`]
//! is a rustls configuration built from the same certificate, key and client CA, and
//! [`GrpcSecurity::authorizes`] is the same bearer check.

use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use proxbalance_runtime::Secret;
use tonic::codegen::http;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::{ConfigError, GrpcConfig};

/// The path prefix of the health service, which stays open to unauthenticated probes.
pub const HEALTH_PATH_PREFIX: &str = "/grpc.health.v1.Health/";

/// The loaded TLS material and token of `[grpc]`.
#[derive(Clone, Default)]
pub struct GrpcSecurity {
    tls: Option<ServerTlsConfig>,
    http_tls: Option<Arc<rustls::ServerConfig>>,
    token: Option<Arc<Secret>>,
}

impl std::fmt::Debug for GrpcSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcSecurity")
            .field("tls", &self.tls.is_some())
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

fn read_pem(path: &Path, field: &str) -> Result<Vec<u8>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| ConfigError::Invalid {
        field: field.to_owned(),
        detail: format!("cannot read {}: {e}", path.display()),
    })?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(ConfigError::Invalid {
            field: field.to_owned(),
            detail: format!("{} holds no PEM block", path.display()),
        });
    }
    Ok(bytes)
}

/// The rustls configuration of the dashboard's HTTPS: the same certificate, key and client CA
/// as gRPC's, HTTP/1.1 only.
fn http_tls_config(
    cert: &[u8],
    key: &[u8],
    client_ca: Option<&[u8]>,
) -> Result<rustls::ServerConfig, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |field: &str, detail: String| ConfigError::Invalid {
        field: field.to_owned(),
        detail,
    };
    let certs = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("grpc.tls_cert_file", format!("not a PEM certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| bad("grpc.tls_key_file", format!("not a PEM private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("grpc.tls_cert_file", e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca) {
                let c = c.map_err(|e| {
                    bad(
                        "grpc.tls_client_ca_file",
                        format!("not a PEM certificate: {e}"),
                    )
                })?;
                roots
                    .add(c)
                    .map_err(|e| bad("grpc.tls_client_ca_file", e.to_string()))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| bad("grpc.tls_client_ca_file", e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        bad(
            "grpc.tls_key_file",
            format!("the certificate and key are not usable: {e}"),
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl GrpcSecurity {
    /// Reads the certificate, key, client CA and token that `[grpc]` names.
    pub fn load(config: &GrpcConfig) -> Result<Self, ConfigError> {
        let mut http_tls = None;
        let tls = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => {
                let cert = read_pem(cert, "grpc.tls_cert_file")?;
                let key = read_pem(key, "grpc.tls_key_file")?;
                let client_ca = match &config.tls_client_ca_file {
                    Some(ca) => Some(read_pem(ca, "grpc.tls_client_ca_file")?),
                    None => None,
                };
                http_tls = Some(Arc::new(http_tls_config(
                    &cert,
                    &key,
                    client_ca.as_deref(),
                )?));
                let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
                if let Some(ca) = client_ca {
                    tls = tls.client_ca_root(Certificate::from_pem(ca));
                }
                // Fails now, with the key named, rather than on the first connection.
                tonic::transport::Server::builder()
                    .tls_config(tls.clone())
                    .map_err(|e| ConfigError::Invalid {
                        field: "grpc.tls_key_file".into(),
                        detail: format!("the certificate and key are not usable: {e}"),
                    })?;
                Some(tls)
            }
            _ => None,
        };
        let token = match (&config.token_file, &config.token_env) {
            (Some(file), _) => Some(Secret::from_file(file, "grpc.token_file")),
            (None, Some(var)) => Some(Secret::from_env(var, "grpc.token_env")),
            (None, None) => None,
        }
        .transpose()
        .map_err(|e| ConfigError::Invalid {
            field: e.field,
            detail: e.detail,
        })?
        .map(Arc::new);
        Ok(Self {
            tls,
            http_tls,
            token,
        })
    }

    /// The dashboard's TLS configuration (built from the same files as gRPC's), when
    /// `[grpc]` has a certificate.
    pub fn http_tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.http_tls.clone()
    }

    /// Whether a request with `headers` may pass: no token is configured, or they carry
    /// `authorization: Bearer <token>` (compared in constant time).
    pub fn authorizes(&self, headers: &http::HeaderMap) -> bool {
        self.token
            .as_ref()
            .is_none_or(|token| authorized(headers, token))
    }

    /// Whether the server speaks TLS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether calls need the bearer token.
    pub fn token_required(&self) -> bool {
        self.token.is_some()
    }
}

/// A tonic server builder with this security: TLS when configured, the bearer check always (a
/// pass-through without a token).
pub fn server_builder(
    security: &GrpcSecurity,
) -> Result<
    tonic::transport::Server<tower_layer::Stack<BearerLayer, tower_layer::Identity>>,
    tonic::transport::Error,
> {
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &security.tls {
        builder = builder.tls_config(tls.clone())?;
    }
    Ok(builder.layer(BearerLayer {
        token: security.token.clone(),
    }))
}

/// Refuses calls without the right bearer token (see the module documentation).
#[derive(Clone)]
pub struct BearerLayer {
    token: Option<Arc<Secret>>,
}

impl std::fmt::Debug for BearerLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerLayer")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

impl<S> tower_layer::Layer<S> for BearerLayer {
    type Service = Bearer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Bearer {
            inner,
            token: self.token.clone(),
        }
    }
}

/// The service [`BearerLayer`] wraps around the routes.
#[derive(Clone)]
pub struct Bearer<S> {
    inner: S,
    token: Option<Arc<Secret>>,
}

impl<S> std::fmt::Debug for Bearer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bearer")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

/// Compares in time that depends only on the lengths.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `headers` carry `authorization: Bearer <token>`.
fn authorized(headers: &http::HeaderMap, token: &Secret) -> bool {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let Some(given) = value
        .strip_prefix(b"Bearer ")
        .or_else(|| value.strip_prefix(b"bearer "))
    else {
        return false;
    };
    same_bytes(given, token.expose().as_bytes())
}

impl<S, B, RB> tower_service::Service<http::Request<B>> for Bearer<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>>,
    RB: Default,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Self::Response, Self::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if let Some(token) = &self.token
            && !req.uri().path().starts_with(HEALTH_PATH_PREFIX)
            && !authorized(req.headers(), token)
        {
            tracing::debug!(
                path = req.uri().path(),
                "gRPC call refused: no valid bearer token"
            );
            let status = if req.headers().contains_key(http::header::AUTHORIZATION) {
                tonic::Status::unauthenticated("invalid bearer token")
            } else {
                tonic::Status::unauthenticated("missing bearer token")
            };
            return Either::Left(ready(Ok(status.into_http())));
        }
        Either::Right(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_passes() {
        let token = Secret::new("t0k3n");
        let mut h = http::HeaderMap::new();
        assert!(!authorized(&h, &token));
        h.insert(http::header::AUTHORIZATION, "Bearer t0k3n".parse().unwrap());
        assert!(authorized(&h, &token));
        for wrong in [
            "Bearer t0k3",
            "Bearer t0k3n ",
            "Basic t0k3n",
            "t0k3n",
            "Bearer T0K3N",
        ] {
            h.insert(http::header::AUTHORIZATION, wrong.parse().unwrap());
            assert!(!authorized(&h, &token), "{wrong}");
        }
    }

    #[test]
    fn debug_hides_the_token() {
        let s = GrpcSecurity {
            tls: None,
            http_tls: None,
            token: Some(Arc::new(Secret::new("t0k3n"))),
        };
        assert_eq!(
            format!("{s:?}"),
            "GrpcSecurity { tls: false, token: Some(\"***\") }"
        );
    }
}
