//! Observability end to end: a two-stage pipeline with real VMs, exported
//! over OTLP/HTTP to a receiver on 127.0.0.1 that decodes the protobuf
//! with `opentelemetry-proto`. Its own test binary: it installs the global
//! tracer and meter providers and the global subscriber. The second stage
//! sends a secret through the edge: its real value must appear in no span
//! and no log line.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::mock_llm::{turn, MockLlmServer, Wire};
use common::registry::TestRegistry;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;
use void_box::agent::VoidBox;
use void_box::llm::{LlmProvider, MockScript, MockTurn};
use void_box::observe::{ObserveConfig, Protocol, Telemetry};
use void_box::pipeline::Pipeline;
use void_box::skill::Skill;

#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    metrics: Vec<String>,
    headers: Vec<String>,
}

type Shared = Arc<Mutex<Received>>;

async fn traces(State(r): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let request = ExportTraceServiceRequest::decode(body).expect("valid OTLP trace protobuf");
    let mut r = r.lock().unwrap();
    if let Some(v) = headers.get("x-team") {
        r.headers.push(v.to_str().unwrap().to_string());
    }
    for rs in request.resource_spans {
        for ss in rs.scope_spans {
            r.spans.extend(ss.spans);
        }
    }
    StatusCode::OK
}

async fn metrics(State(r): State<Shared>, body: Bytes) -> StatusCode {
    let request = ExportMetricsServiceRequest::decode(body).expect("valid OTLP metrics protobuf");
    let mut r = r.lock().unwrap();
    for rm in request.resource_metrics {
        for sm in rm.scope_metrics {
            r.metrics.extend(sm.metrics.into_iter().map(|m| m.name));
        }
    }
    StatusCode::OK
}

/// Every log line at DEBUG and above, as `voidbox -v` would print them.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An HTTP server on loopback that answers `ok` and keeps the
/// `Authorization` headers it was sent.
async fn auth_recorder() -> (u16, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let keep = seen.clone();
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move |headers: HeaderMap| async move {
            if let Some(v) = headers.get("authorization") {
                keep.lock().unwrap().push(v.to_str().unwrap().to_string());
            }
            "ok"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, seen)
}

fn attr(span: &Span, key: &str) -> Option<AnyValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone())
        .and_then(|v| v.value)
}

fn int_attr(span: &Span, key: &str) -> Option<i64> {
    match attr(span, key)? {
        AnyValue::IntValue(i) => Some(i),
        _ => None,
    }
}

fn str_attr(span: &Span, key: &str) -> Option<String> {
    match attr(span, key)? {
        AnyValue::StringValue(s) => Some(s),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_stage_pipeline_exports_its_span_tree_and_metrics() {
    let received: Shared = Arc::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/metrics", post(metrics))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let telemetry = Telemetry::init(&ObserveConfig {
        endpoint: Some(endpoint),
        protocol: Protocol::HttpProtobuf,
        service_name: "voidbox-test".into(),
        headers: vec![("x-team".into(), "agents".into())],
        metrics_interval: Duration::from_secs(3600),
    })
    .unwrap();
    let logs = Logs::default();
    let log_writer = logs.clone();
    let subscriber = tracing_subscriber::registry().with(telemetry.layer()).with(
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || log_writer.clone())
            .with_filter(tracing_subscriber::filter::LevelFilter::DEBUG),
    );
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let registry = TestRegistry::start();
    registry.push("python", "latest", "python");
    let (api_port, api_seen) = auth_recorder().await;
    let api = format!("host.voidbox.internal:{api_port}");
    let real = "ghp_observe-real-value-5f3a9c";
    std::env::set_var("VB_OBSERVE_TOKEN", real);

    std::env::set_var("VB_OBSERVE_KEY", "sk-observe");
    let llm = MockLlmServer::with_turns([
        turn(
            "Checking.",
            &[("bash", json!({"command": "printf %s \"$TRACEPARENT\""}))],
        ),
        turn("first done", &[]),
    ])
    .await;
    let first = VoidBox::new("first")
        .llm(llm.provider(Wire::Anthropic, "VB_OBSERVE_KEY"))
        .prompt("trace me")
        .build()
        .unwrap();
    // A request with the secret through the edge, then long enough for
    // two guest telemetry samples.
    let request = format!(
        "curl -sS --max-time 20 -H \"Authorization: Bearer $API_TOKEN\" http://{api}/; sleep 2.5"
    );
    let second = VoidBox::new("second")
        .image(&registry.reference("python:latest"))
        .skill(
            Skill::cli("curl")
                .network(&api)
                .secret("API_TOKEN", "VB_OBSERVE_TOKEN", &[&api]),
        )
        .llm(LlmProvider::mock(MockScript::new(vec![
            MockTurn::default().call("bash", json!({ "command": request })),
            MockTurn::text("second done"),
        ])))
        .build()
        .unwrap();
    let root = tracing::info_span!("run");
    let result = Pipeline::named("observed", first)
        .pipe(second)
        .run_with(None, Default::default())
        .instrument(root)
        .await
        .unwrap();
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .unwrap();

    let r = received.lock().unwrap();
    assert!(r.headers.iter().all(|h| h == "agents") && !r.headers.is_empty());
    let by_id: HashMap<Vec<u8>, &Span> = r.spans.iter().map(|s| (s.span_id.clone(), s)).collect();
    let named = |name: &str| -> Vec<&Span> { r.spans.iter().filter(|s| s.name == name).collect() };
    let parent = |s: &Span| by_id.get(&s.parent_span_id).map(|p| p.name.clone());

    let run = named("run")[0];
    assert!(
        r.spans.iter().all(|s| s.trace_id == run.trace_id),
        "one trace per run"
    );
    let pipeline = named("pipeline observed")[0];
    assert_eq!(parent(pipeline).as_deref(), Some("run"));
    for stage in ["stage first", "stage second"] {
        let span = named(stage)[0];
        assert_eq!(parent(span).as_deref(), Some("pipeline observed"));
        assert!(
            int_attr(span, "gen_ai.usage.input_tokens").unwrap_or(0) > 0,
            "{stage}: {:?}",
            span.attributes
        );
    }
    let boots = named("sandbox.boot");
    assert_eq!(boots.len(), 2);
    for boot in &boots {
        assert!(parent(boot).unwrap().starts_with("stage "));
        assert!(str_attr(boot, "voidbox.sandbox_id")
            .unwrap()
            .starts_with("voidbox-"));
        assert!(int_attr(boot, "voidbox.boot_ms").unwrap() > 0);
    }
    let chat = named("chat claude-test");
    assert_eq!(chat.len(), 2);
    assert_eq!(parent(chat[0]).as_deref(), Some("turn 1"));
    assert_eq!(
        str_attr(chat[0], "gen_ai.system").as_deref(),
        Some("anthropic")
    );
    assert_eq!(
        str_attr(chat[0], "gen_ai.request.model").as_deref(),
        Some("claude-test")
    );
    assert_eq!(int_attr(chat[0], "gen_ai.usage.input_tokens"), Some(100));
    assert_eq!(int_attr(chat[0], "gen_ai.usage.output_tokens"), Some(20));
    let turn = by_id[&chat[0].parent_span_id];
    assert_eq!(parent(turn).as_deref(), Some("stage first"));
    let tools = named("execute_tool bash");
    assert_eq!(tools.len(), 2);
    assert_eq!(int_attr(tools[0], "voidbox.exit_code"), Some(0));
    assert_eq!(
        str_attr(tools[0], "gen_ai.tool.name").as_deref(),
        Some("bash")
    );

    // The command in the guest saw the trace context of its tool span.
    let traceparent = &result.stages[0].boxes[0]
        .result
        .as_ref()
        .unwrap()
        .tool_calls[0]
        .summary;
    let tool = tools
        .iter()
        .find(|t| t.parent_span_id == turn.span_id)
        .expect("the first stage's tool span is a child of its first turn");
    assert_eq!(
        *traceparent,
        format!(
            "00-{}-{}-01",
            hex::encode(&run.trace_id),
            hex::encode(&tool.span_id)
        )
    );

    // The secret went out swapped, and its value is in no span, span
    // event or attribute, and in no log line.
    assert_eq!(*api_seen.lock().unwrap(), [format!("Bearer {real}")]);
    let second_tool = &result.stages[1].boxes[0]
        .result
        .as_ref()
        .unwrap()
        .tool_calls[0];
    assert!(second_tool.summary.contains("ok"), "{second_tool:?}");
    let network = named("sandbox.network");
    assert!(
        network
            .iter()
            .flat_map(|s| &s.events)
            .any(|e| e.name == "network allowed"
                && format!("{:?}", e.attributes).contains(&api_port.to_string())),
        "the audit trail as span events: {network:?}"
    );
    assert!(
        !format!("{:?}", r.spans).contains(real),
        "a span holds the secret"
    );
    let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string();
    assert!(
        logs.contains(&api_port.to_string()),
        "the log capture works: {logs}"
    );
    assert!(!logs.contains(real), "a log line holds the secret: {logs}");

    for metric in [
        "voidbox.stage.duration",
        "gen_ai.client.token.usage",
        "gen_ai.client.operation.duration",
        "voidbox.tokens",
        "voidbox.cost",
        "voidbox.tool.calls",
        "voidbox.sandbox.boot.duration",
        "voidbox.exec.duration",
        "voidbox.guest.cpu.utilization",
        "voidbox.guest.memory.used",
        "voidbox.network.attempts",
        "voidbox.network.io",
    ] {
        assert!(
            r.metrics.iter().any(|m| m == metric),
            "missing {metric}: {:?}",
            r.metrics
        );
    }
}
