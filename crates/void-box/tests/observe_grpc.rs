//! OTLP over gRPC: spans and metrics reach a tonic receiver on 127.0.0.1
//! with the configured headers as metadata. Its own test binary: it
//! installs the global providers and subscriber.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use tracing_subscriber::layer::SubscriberExt;
use void_box::observe::{metrics, ObserveConfig, Protocol, Telemetry};

#[derive(Default, Clone)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
    metrics: Arc<Mutex<Vec<String>>>,
    team: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if let Some(team) = request.metadata().get("x-team") {
            self.team
                .lock()
                .unwrap()
                .push(team.to_str().unwrap().into());
        }
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                self.spans.lock().unwrap().extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        for rm in request.into_inner().resource_metrics {
            for sm in rm.scope_metrics {
                self.metrics
                    .lock()
                    .unwrap()
                    .extend(sm.metrics.into_iter().map(|m| m.name));
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_and_metrics_reach_a_grpc_receiver() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(receiver.clone()))
        .add_service(MetricsServiceServer::new(receiver.clone()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);

    let telemetry = Telemetry::init(&ObserveConfig {
        endpoint: Some(format!("http://{address}")),
        protocol: Protocol::Grpc,
        service_name: "voidbox-grpc-test".into(),
        headers: vec![("x-team".into(), "agents".into())],
        metrics_interval: Duration::from_secs(3600),
    })
    .unwrap();
    assert!(telemetry.is_enabled() && void_box::observe::enabled());
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(telemetry.layer()))
        .unwrap();
    let traceparent = {
        let root = tracing::info_span!("grpc-root");
        let _root = root.enter();
        let child = tracing::info_span!("grpc-child");
        let _child = child.enter();
        // Debug carries tool arguments; only INFO and above is exported.
        tracing::info!("info-event");
        tracing::debug!(args = "SECRET-TOOL-ARGS", "debug-event");
        drop(tracing::debug_span!("grpc-debug").entered());
        metrics::stage_finished("box", true, Duration::from_millis(5));
        void_box::observe::traceparent().unwrap()
    };
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .unwrap();

    let spans = receiver.spans.lock().unwrap();
    let root = spans
        .iter()
        .find(|s| s.name == "grpc-root")
        .expect("root span");
    let child = spans
        .iter()
        .find(|s| s.name == "grpc-child")
        .expect("child span");
    assert_eq!(child.parent_span_id, root.span_id);
    let events: Vec<&str> = child.events.iter().map(|e| e.name.as_str()).collect();
    assert!(events.contains(&"info-event"), "{events:?}");
    assert!(!events.contains(&"debug-event"), "{events:?}");
    assert!(!spans.iter().any(|s| s.name == "grpc-debug"));
    assert!(!format!("{spans:?}").contains("SECRET-TOOL-ARGS"));
    assert_eq!(
        traceparent,
        format!(
            "00-{}-{}-01",
            hex::encode(&child.trace_id),
            hex::encode(&child.span_id)
        )
    );
    assert_eq!(*receiver.team.lock().unwrap(), ["agents"]);
    assert!(receiver
        .metrics
        .lock()
        .unwrap()
        .iter()
        .any(|m| m == "voidbox.stage.duration"));
}

#[test]
fn config_reads_the_standard_environment() {
    // Runs in the same process as the test above, so it only reads values
    // it sets itself and restores nothing the other test needs.
    std::env::set_var("VOIDBOX_OTLP_ENDPOINT", "http://collector:4317");
    std::env::set_var("OTEL_EXPORTER_OTLP_HEADERS", "a=1, b = two");
    std::env::set_var("OTEL_SERVICE_NAME", "svc");
    let config = ObserveConfig::from_env();
    assert_eq!(config.endpoint.as_deref(), Some("http://collector:4317"));
    assert_eq!(config.protocol, Protocol::Grpc, "port 4317 means gRPC");
    assert_eq!(
        config.headers,
        [("a".into(), "1".into()), ("b".into(), "two".into())]
    );
    assert_eq!(config.service_name, "svc");
    std::env::set_var("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
    assert_eq!(ObserveConfig::from_env().protocol, Protocol::HttpProtobuf);
    for var in [
        "VOIDBOX_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_SERVICE_NAME",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        std::env::remove_var(var);
    }
    assert_eq!(ObserveConfig::from_env().endpoint, None);
}
