//! Errors of the PVE client. Every variant names the API endpoint and the request path.

/// What went wrong talking to one PVE API endpoint.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PveError {
    /// HTTP 401: the token is wrong, expired or disabled.
    #[error("authentication failed (HTTP 401: {reason}) at {endpoint} GET {path}")]
    Auth {
        /// Base URL of the API endpoint.
        endpoint: String,
        /// Request path below `/api2/json`.
        path: String,
        /// Reason phrase or message of the response.
        reason: String,
    },
    /// HTTP 403: the token lacks a privilege.
    #[error("permission denied (HTTP 403: {message}) at {endpoint} GET {path}")]
    Permission {
        /// Base URL of the API endpoint.
        endpoint: String,
        /// Request path below `/api2/json`.
        path: String,
        /// PVE's message (names the ACL path and privilege).
        message: String,
    },
    /// HTTP 595/596: the endpoint could not proxy the request to the node.
    #[error("node unreachable (HTTP {status}: {reason}) at {endpoint} GET {path}")]
    NodeUnreachable {
        /// Base URL of the API endpoint.
        endpoint: String,
        /// Request path below `/api2/json`.
        path: String,
        /// 595 (connect) or 596 (TLS/request/headers).
        status: u16,
        /// Reason phrase or message of the response.
        reason: String,
    },
    /// No complete answer within the request timeout.
    #[error("timed out after {timeout_ms} ms at {endpoint} GET {path}")]
    Timeout {
        /// Base URL of the API endpoint.
        endpoint: String,
        /// Request path below `/api2/json`.
        path: String,
        /// The configured timeout.
        timeout_ms: u64,
    },
    /// The body is not the JSON that was expected.
    #[error("cannot decode the response of {endpoint} GET {path}: {detail}")]
    Decode {
        /// Base URL of the API endpoint.
        endpoint: String,
        /// Request path below `/api2/json`.
        path: String,
        /// The JSON path of the offending field and what was expected there.
        detail: String,
    },
    /// Any other HTTP error status.
    #[error("HTTP {status} ({message}) at {endpoint} GET {path}")]
    Http {
        /// Base URL of the API endpoint.
        endpoint: String,
        /// Request path below `/api2/json`.
        path: String,
        /// The status code.
        status: u16,
        /// PVE's message or the reason phrase.
        message: String,
    },
    /// The TLS handshake failed (unknown CA, pinned fingerprint mismatch, ...).
    #[error("TLS verification failed at {endpoint} GET {path}: {detail}")]
    Tls {
        /// Base URL of the API endpoint.
        endpoint: String,
        /// Request path below `/api2/json`.
        path: String,
        /// What the verifier refused.
        detail: String,
    },
    /// Connection refused, reset, DNS failure, ...
    #[error("transport error at {endpoint} GET {path}: {detail}")]
    Transport {
        /// Base URL of the API endpoint.
        endpoint: String,
        /// Request path below `/api2/json`.
        path: String,
        /// The underlying error chain.
        detail: String,
    },
    /// The client could not be built from its configuration.
    #[error("PVE client configuration, {field}: {detail}")]
    Config {
        /// The configuration key at fault.
        field: String,
        /// What was expected.
        detail: String,
    },
}

impl PveError {
    /// Whether another endpoint of the same cluster may succeed where this one failed.
    pub fn should_fail_over(&self) -> bool {
        matches!(
            self,
            PveError::Timeout { .. } | PveError::Tls { .. } | PveError::Transport { .. }
        )
    }

    /// A short, stable label for metrics and the wire (`auth`, `permission`, ...).
    pub fn kind_label(&self) -> &'static str {
        match self {
            PveError::Auth { .. } => "auth",
            PveError::Permission { .. } => "permission",
            PveError::NodeUnreachable { .. } => "node_unreachable",
            PveError::Timeout { .. } => "timeout",
            PveError::Decode { .. } => "decode",
            PveError::Http { .. } => "http",
            PveError::Tls { .. } => "tls",
            PveError::Transport { .. } => "transport",
            PveError::Config { .. } => "config",
        }
    }

    /// The wire enum value for this error.
    pub fn wire_kind(&self) -> proxbalance_proto::v1::CollectionErrorKind {
        use proxbalance_proto::v1::CollectionErrorKind as K;
        match self {
            PveError::Auth { .. } => K::Auth,
            PveError::Permission { .. } => K::Permission,
            PveError::NodeUnreachable { .. } => K::NodeUnreachable,
            PveError::Timeout { .. } => K::Timeout,
            PveError::Decode { .. } => K::Decode,
            PveError::Http { .. } => K::Http,
            PveError::Tls { .. } => K::Tls,
            PveError::Transport { .. } | PveError::Config { .. } => K::Transport,
        }
    }

    /// The endpoint and path of the failed request, when there was one.
    pub fn location(&self) -> (&str, &str) {
        match self {
            PveError::Auth { endpoint, path, .. }
            | PveError::Permission { endpoint, path, .. }
            | PveError::NodeUnreachable { endpoint, path, .. }
            | PveError::Timeout { endpoint, path, .. }
            | PveError::Decode { endpoint, path, .. }
            | PveError::Http { endpoint, path, .. }
            | PveError::Tls { endpoint, path, .. }
            | PveError::Transport { endpoint, path, .. } => (endpoint, path),
            PveError::Config { .. } => ("", ""),
        }
    }
}
