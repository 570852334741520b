//! `voidbox run` with an OTLP endpoint in the environment: the whole run is
//! one trace whose root is the CLI's `voidbox run` span, every JSON line
//! carries its id, and the spans reach the collector before the process
//! exits. Also: an unreachable collector costs the run nothing.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

const SPEC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/specs/quick_demo.yaml"
);

fn voidbox_run(endpoint: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_voidbox"))
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OLLAMA_MODEL")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .args(["run", "--file", SPEC, "--output", "json"])
        .output()
        .unwrap()
}

async fn traces(State(spans): State<Arc<Mutex<Vec<Span>>>>, body: Bytes) -> StatusCode {
    let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
    for rs in request.resource_spans {
        for ss in rs.scope_spans {
            spans.lock().unwrap().extend(ss.spans);
        }
    }
    StatusCode::OK
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_is_one_trace_rooted_at_the_cli() {
    let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/metrics", post(|| async { StatusCode::OK }))
        .with_state(spans.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let out = tokio::task::spawn_blocking(move || voidbox_run(&endpoint))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let trace_id = lines[0]["trace_id"]
        .as_str()
        .expect("trace id on JSON lines")
        .to_string();
    assert!(lines.iter().all(|l| l["trace_id"] == trace_id.as_str()));

    let spans = spans.lock().unwrap();
    let by_id: HashMap<&[u8], &Span> = spans.iter().map(|s| (s.span_id.as_slice(), s)).collect();
    let root = spans
        .iter()
        .find(|s| s.name == "voidbox run quick-demo")
        .expect("the CLI's root span was exported before exit");
    assert!(root.parent_span_id.is_empty());
    assert_eq!(hex(&root.trace_id), trace_id);
    for name in [
        "pipeline quick-demo",
        "stage scout",
        "stage reporter",
        "execute_tool bash",
    ] {
        let span = spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(hex(&span.trace_id), trace_id, "{name}");
        // Every span chains up to the root.
        let mut at: &Span = span;
        while !at.parent_span_id.is_empty() {
            at = by_id[at.parent_span_id.as_slice()];
        }
        assert_eq!(at.name, "voidbox run quick-demo");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn an_unreachable_collector_does_not_fail_the_run() {
    let out = voidbox_run("http://127.0.0.1:9");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
