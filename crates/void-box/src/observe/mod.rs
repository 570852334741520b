//! Observability: OpenTelemetry traces and metrics over OTLP, and the trace
//! context that reaches guest commands as `TRACEPARENT`.
//!
//! The library always creates `tracing` spans (run → stage → turn → LLM
//! call / tool call, and sandbox boot) and records metrics through the
//! global OpenTelemetry meter. Nothing leaves the process unless
//! [`Telemetry::init`] found an endpoint (`VOIDBOX_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT`); without one no exporter, thread or
//! sampling task exists, and the instruments are no-ops.

pub mod metrics;
pub mod report;
pub mod timeline;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether an exporter is installed (guest telemetry is sampled only then).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/HTTP with protobuf bodies (`/v1/traces`, `/v1/metrics`).
    HttpProtobuf,
    /// OTLP/gRPC.
    Grpc,
}

/// Where and how to export, read from the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct ObserveConfig {
    /// Collector endpoint; `None` disables export.
    pub endpoint: Option<String>,
    /// Transport.
    pub protocol: Protocol,
    /// `service.name` of the resource.
    pub service_name: String,
    /// Extra request headers (`OTEL_EXPORTER_OTLP_HEADERS`: `k=v,k2=v2`).
    pub headers: Vec<(String, String)>,
    /// How often metrics are pushed (they are also pushed at shutdown).
    pub metrics_interval: Duration,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl ObserveConfig {
    /// `VOIDBOX_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`;
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc` or `http/protobuf`, the
    /// default, except that port 4317 means gRPC); `OTEL_EXPORTER_OTLP_HEADERS`;
    /// `OTEL_SERVICE_NAME` (default `voidbox`).
    pub fn from_env() -> Self {
        let endpoint = env("VOIDBOX_OTLP_ENDPOINT").or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let protocol = match env("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
            Some("grpc") => Protocol::Grpc,
            Some(_) => Protocol::HttpProtobuf,
            None if endpoint
                .as_deref()
                .is_some_and(|e| e.trim_end_matches('/').ends_with(":4317")) =>
            {
                Protocol::Grpc
            }
            None => Protocol::HttpProtobuf,
        };
        let headers = env("OTEL_EXPORTER_OTLP_HEADERS")
            .map(|h| {
                h.split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        ObserveConfig {
            endpoint,
            protocol,
            service_name: env("OTEL_SERVICE_NAME").unwrap_or_else(|| "voidbox".into()),
            headers,
            metrics_interval: Duration::from_secs(10),
        }
    }
}

/// An exporter could not be built.
#[derive(Debug, thiserror::Error)]
#[error("OTLP exporter for {endpoint}: {message}")]
pub struct ObserveError {
    endpoint: String,
    message: String,
}

/// The installed exporters; [`shutdown`](Self::shutdown) flushes them.
#[derive(Debug, Default)]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

impl Telemetry {
    /// Installs OTLP exporters for traces and metrics as the global
    /// providers, when `config` names an endpoint. gRPC needs a Tokio runtime.
    pub fn init(config: &ObserveConfig) -> Result<Telemetry, ObserveError> {
        crate::tls::install_crypto_provider();
        let Some(endpoint) = config.endpoint.as_deref() else {
            return Ok(Telemetry::default());
        };
        let fail = |e: &dyn std::fmt::Display| ObserveError {
            endpoint: endpoint.to_string(),
            message: e.to_string(),
        };
        let base = endpoint.trim_end_matches('/');
        let headers: std::collections::HashMap<String, String> =
            config.headers.iter().cloned().collect();
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let (spans, metrics) = match config.protocol {
            Protocol::HttpProtobuf => (
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_endpoint(format!("{base}/v1/traces"))
                    .with_headers(headers.clone())
                    .build()
                    .map_err(|e| fail(&e))?,
                opentelemetry_otlp::MetricExporter::builder()
                    .with_http()
                    .with_endpoint(format!("{base}/v1/metrics"))
                    .with_headers(headers)
                    .build()
                    .map_err(|e| fail(&e))?,
            ),
            Protocol::Grpc => {
                let metadata = tonic_metadata(&config.headers);
                (
                    opentelemetry_otlp::SpanExporter::builder()
                        .with_tonic()
                        .with_endpoint(base)
                        .with_metadata(metadata.clone())
                        .build()
                        .map_err(|e| fail(&e))?,
                    opentelemetry_otlp::MetricExporter::builder()
                        .with_tonic()
                        .with_endpoint(base)
                        .with_metadata(metadata)
                        .build()
                        .map_err(|e| fail(&e))?,
                )
            }
        };
        let tracer = SdkTracerProvider::builder()
            .with_batch_exporter(spans)
            .with_resource(resource.clone())
            .build();
        let reader = PeriodicReader::builder(metrics)
            .with_interval(config.metrics_interval)
            .build();
        let meter = SdkMeterProvider::builder()
            .with_reader(reader)
            .with_resource(resource)
            .build();
        opentelemetry::global::set_tracer_provider(tracer.clone());
        opentelemetry::global::set_meter_provider(meter.clone());
        ENABLED.store(true, Ordering::Relaxed);
        Ok(Telemetry {
            tracer: Some(tracer),
            meter: Some(meter),
        })
    }

    /// Whether anything is exported.
    pub fn is_enabled(&self) -> bool {
        self.tracer.is_some()
    }

    /// A `tracing` layer that turns spans into OpenTelemetry spans, when
    /// exporting. It takes INFO and above only, whatever `VOIDBOX_LOG` says:
    /// debug events carry tool arguments (file contents, commands), which
    /// are not for a collector.
    pub fn layer<S>(&self) -> Option<impl tracing_subscriber::Layer<S>>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        use tracing_subscriber::Layer;
        let tracer = self.tracer.as_ref()?.tracer("void-box");
        Some(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
        )
    }

    /// Flushes and stops the exporters (call before exiting).
    pub fn shutdown(self) {
        ENABLED.store(false, Ordering::Relaxed);
        if let Some(tracer) = self.tracer {
            if let Err(e) = tracer.shutdown() {
                tracing::warn!("flushing traces: {e}");
            }
        }
        if let Some(meter) = self.meter {
            if let Err(e) = meter.shutdown() {
                tracing::warn!("flushing metrics: {e}");
            }
        }
    }
}

fn tonic_metadata(headers: &[(String, String)]) -> tonic::metadata::MetadataMap {
    let mut map = tonic::metadata::MetadataMap::new();
    for (k, v) in headers {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(k.as_bytes()),
            v.parse(),
        ) {
            map.insert(key, value);
        }
    }
    map
}

/// The current span's W3C `traceparent`, when it belongs to a sampled trace.
pub fn traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let sc = span.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// The current trace id (32 hex digits), when tracing is exported.
pub fn trace_id() -> Option<String> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.trace_id().to_string())
}
