//! Logs and traces, set up the same way in both services.
//!
//! Logs always go to stderr through `tracing`, as text or JSON lines, filtered by `RUST_LOG`
//! (default `info`). Traces are opt-in: only when an OTLP endpoint is configured
//! (`telemetry.otlp_endpoint`, else `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else
//! `OTEL_EXPORTER_OTLP_ENDPOINT`) are spans turned into OpenTelemetry spans and sent over
//! OTLP/gRPC in batches, from a background thread, with one attempt per batch (no retries) and
//! a bounded timeout. With no endpoint nothing is exported and nothing about it is logged.
//!
//! Trace context crosses process boundaries as a W3C `traceparent` string:
//! [`current_traceparent`] gives the current span's, [`set_parent_from_traceparent`] makes a
//! span the child of one that arrived in a NATS header or gRPC metadata.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_otlp::WithTonicConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use serde::Deserialize;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Why logging or tracing could not be set up; the message names the key at fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TelemetryError(String);

/// The W3C trace context header, on NATS messages and in gRPC metadata.
pub const TRACEPARENT: &str = "traceparent";

/// Environment variables read, in this order, when `telemetry.otlp_endpoint` is not set.
pub const OTLP_ENDPOINT_ENV: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The `[telemetry]` table of both services.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `text` or `json` (the `--json-logs` flag forces `json`).
    pub log_format: LogFormat,
    /// OTLP/gRPC collector to send traces to (e.g. `http://otel-collector:4317`). When absent,
    /// the standard environment variables are read; when they are absent too, no traces leave
    /// the process.
    pub otlp_endpoint: Option<String>,
    /// Longest time one export (and the final flush at shutdown) may take, milliseconds.
    pub otlp_timeout_ms: u64,
    /// Fraction of new traces recorded, 0 to 1; a trace started elsewhere follows its parent's
    /// decision.
    pub sample_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Text,
            otlp_endpoint: None,
            otlp_timeout_ms: 2000,
            sample_ratio: 1.0,
        }
    }
}

impl TelemetryConfig {
    /// The endpoint traces go to: the key, else the environment, else none. Empty values count
    /// as absent.
    pub fn resolved_endpoint(&self) -> Option<String> {
        let from_env = || {
            OTLP_ENDPOINT_ENV
                .iter()
                .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
        };
        self.otlp_endpoint
            .clone()
            .filter(|v| !v.trim().is_empty())
            .or_else(from_env)
    }

    /// Checks ranges; errors name the key.
    pub fn validate(&self) -> Result<(), TelemetryError> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(TelemetryError(format!(
                "telemetry.sample_ratio: expected a number from 0 to 1, found {}",
                self.sample_ratio
            )));
        }
        if self.otlp_timeout_ms == 0 {
            return Err(TelemetryError(
                "telemetry.otlp_timeout_ms: expected > 0".into(),
            ));
        }
        Ok(())
    }
}

/// What [`init_telemetry`] set up; call [`Telemetry::shutdown`] last, to flush pending spans.
#[derive(Debug)]
#[must_use = "call shutdown() at the end so pending spans are exported"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    timeout: Duration,
}

impl Telemetry {
    /// Whether spans are exported by OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is still queued and stops the exporter, waiting at most the configured
    /// timeout. The SDK's shutdown blocks, so it runs on a blocking thread.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let timeout = self.timeout;
        match tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(timeout)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "trace exporter shutdown"),
            Err(e) => tracing::warn!(error = %e, "trace exporter shutdown task"),
        }
    }
}

/// The filter of the log output: `RUST_LOG`, else `info`.
fn log_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

/// The layer that turns `tracing` spans into OpenTelemetry spans of `provider`. Spans of the
/// transport crates (and of the exporter itself) are left out, so exporting never feeds itself.
pub fn otel_layer<S>(provider: &SdkTracerProvider, service: &str) -> impl Layer<S> + Send + Sync
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let targets = tracing_subscriber::filter::Targets::new()
        .with_default(tracing::Level::INFO)
        .with_target("h2", tracing::level_filters::LevelFilter::OFF)
        .with_target("hyper", tracing::level_filters::LevelFilter::OFF)
        .with_target("hyper_util", tracing::level_filters::LevelFilter::OFF)
        .with_target("tonic", tracing::level_filters::LevelFilter::OFF)
        .with_target("tower", tracing::level_filters::LevelFilter::OFF)
        .with_target("reqwest", tracing::level_filters::LevelFilter::OFF)
        .with_target("opentelemetry", tracing::level_filters::LevelFilter::OFF)
        .with_target(
            "opentelemetry_sdk",
            tracing::level_filters::LevelFilter::OFF,
        )
        .with_target(
            "opentelemetry_otlp",
            tracing::level_filters::LevelFilter::OFF,
        );
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(service.to_owned()))
        .with_filter(targets)
}

fn build_provider(
    service: &str,
    endpoint: &str,
    cfg: &TelemetryConfig,
) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_millis(cfg.otlp_timeout_ms))
        .with_retry_policy(opentelemetry_otlp::RetryPolicy::disabled())
        .build()
        .map_err(|e| {
            TelemetryError(format!(
                "telemetry.otlp_endpoint {}: {e}",
                crate::redact_url(endpoint)
            ))
        })?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_owned())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            cfg.sample_ratio,
        ))))
        .with_resource(resource)
        .build())
}

/// Installs the process's `tracing` subscriber: the log output (JSON when `json_logs` or
/// `telemetry.log_format = "json"`), plus the OTLP trace export when an endpoint is configured.
/// Must be called inside a tokio runtime (the gRPC channel needs it). Fails when a subscriber
/// is already installed or the endpoint is unusable.
pub fn init_telemetry(
    service: &str,
    cfg: &TelemetryConfig,
    json_logs: bool,
) -> Result<Telemetry, TelemetryError> {
    cfg.validate()?;
    let json = json_logs || cfg.log_format == LogFormat::Json;
    type Boxed = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;
    let fmt: Boxed = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(log_filter())
            .boxed()
    } else {
        // Colours only on a terminal, so log files and journald get plain text.
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .with_filter(log_filter())
            .boxed()
    };
    let endpoint = cfg.resolved_endpoint();
    let provider = endpoint
        .as_deref()
        .map(|ep| build_provider(service, ep, cfg))
        .transpose()?;
    let mut layers: Vec<Boxed> = vec![fmt];
    if let Some(p) = &provider {
        layers.push(Box::new(otel_layer(p, service)));
    }
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| TelemetryError(format!("telemetry: cannot install the subscriber: {e}")))?;
    if let Some(ep) = &endpoint {
        tracing::info!(endpoint = %crate::redact_url(ep), "exporting traces by OTLP/gRPC");
    }
    Ok(Telemetry {
        provider,
        timeout: Duration::from_millis(cfg.otlp_timeout_ms),
    })
}

/// The W3C `traceparent` of the current span, when it is part of a recorded OpenTelemetry
/// trace; `None` when no trace layer is installed or the span is not sampled in.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// The W3C `traceparent` of `span`, as [`current_traceparent`].
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// Makes `span` a child of the remote span named by `traceparent` (from a NATS header or gRPC
/// metadata). A malformed value is ignored: the span then starts a trace of its own.
pub fn set_parent_from_traceparent(span: &tracing::Span, traceparent: &str) {
    // Called for every ingested message: nothing to link when no subscriber records the span.
    if span.is_disabled() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&OneHeader(traceparent.trim()));
    if cx.span().span_context().is_valid() {
        // Fails only when no trace layer is installed, where there is nothing to link.
        let _ = span.set_parent(cx);
    }
}

/// A carrier holding only a `traceparent` value, read without copying it into a map.
struct OneHeader<'a>(&'a str);

impl opentelemetry::propagation::Extractor for OneHeader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        key.eq_ignore_ascii_case(TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let c = TelemetryConfig::default();
        assert_eq!(c.log_format, LogFormat::Text);
        assert!(c.validate().is_ok());
        let bad = TelemetryConfig {
            sample_ratio: 1.5,
            ..TelemetryConfig::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "telemetry.sample_ratio: expected a number from 0 to 1, found 1.5"
        );
    }

    #[test]
    fn configured_endpoint_wins_and_blank_is_absent() {
        let c = TelemetryConfig {
            otlp_endpoint: Some("http://collector:4317".into()),
            ..TelemetryConfig::default()
        };
        assert_eq!(
            c.resolved_endpoint().as_deref(),
            Some("http://collector:4317")
        );
    }

    #[test]
    fn without_a_trace_layer_there_is_no_traceparent() {
        let span = tracing::info_span!("x");
        assert_eq!(traceparent_of(&span), None);
        // And linking is a harmless no-op.
        set_parent_from_traceparent(
            &span,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        set_parent_from_traceparent(&span, "garbage");
    }

    #[test]
    fn parent_and_child_share_the_trace() {
        use opentelemetry_sdk::trace::InMemorySpanExporter;
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry().with(otel_layer(&provider, "test"));
        tracing::subscriber::with_default(subscriber, || {
            let remote = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
            let span = tracing::info_span!("child");
            set_parent_from_traceparent(&span, remote);
            let tp = traceparent_of(&span).expect("a traceparent");
            assert!(
                tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
                "{tp}"
            );
            assert!(!tp.contains("b7ad6b7169203331"), "{tp}");
        });
        provider.force_flush().unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        assert_eq!(spans.len(), 1);
        assert_eq!(
            spans[0].parent_span_id.to_string(),
            "b7ad6b7169203331",
            "{spans:?}"
        );
    }
}
