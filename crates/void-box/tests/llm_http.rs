//! The Anthropic and OpenAI providers against a local server speaking
//! their streaming wire formats: streaming, tool calls, retries, errors,
//! timeouts, request shapes, and that the API key never leaks into errors.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::mock_llm::{turn, MockLlmServer, Reply, Wire, DEFAULT_USAGE};
use serde_json::{json, Value};
use void_box::llm::{
    ChatClient, ChatRequest, ChatResponse, ContentBlock, LlmError, LlmProvider, Message, Role,
    StopReason, ToolSpec,
};

/// A unique key in a unique environment variable, so tests run in parallel.
fn set_key(test: &str, wire: Wire) -> (String, String) {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let env = format!("VB_TEST_KEY_{}_{wire:?}", test.to_uppercase());
    let key = format!("sk-vbtest-{test}-{nanos}");
    std::env::set_var(&env, &key);
    (env, key)
}

struct Fixture {
    server: MockLlmServer,
    key: String,
    provider: LlmProvider,
}

async fn fixture(test: &str, wire: Wire) -> Fixture {
    let server = MockLlmServer::start().await;
    let (env, key) = set_key(test, wire);
    let provider = server
        .provider(wire, &env)
        .timeout(Duration::from_secs(20))
        .max_retries(3);
    Fixture {
        server,
        key,
        provider,
    }
}

fn simple_request() -> ChatRequest {
    ChatRequest {
        system: "You are terse.".into(),
        messages: vec![Message::user_text("hi")],
        tools: Vec::new(),
        max_tokens: 256,
    }
}

/// Runs one call, returning the result and the text pieces the sink saw.
async fn complete(
    client: &mut ChatClient,
    request: &ChatRequest,
) -> (Result<ChatResponse, LlmError>, Vec<String>) {
    let seen = Mutex::new(Vec::new());
    let sink = |t: &str| seen.lock().unwrap().push(t.to_string());
    let result = client.complete(request, &sink).await;
    (result, seen.into_inner().unwrap())
}

async fn call(f: &Fixture) -> (Result<ChatResponse, LlmError>, Vec<String>) {
    let mut client = f.provider.connect().expect("connect");
    complete(&mut client, &simple_request()).await
}

fn assert_no_key(err: &LlmError, key: &str) {
    let shown = format!("{err} | {err:?}");
    assert!(!shown.contains(key), "the key leaked: {shown}");
}

/// Declares `mod $check { anthropic, openai }` tests running `$check(wire)`.
macro_rules! for_both_wires {
    ($($check:ident),* $(,)?) => {$(
        mod $check {
            use super::*;

            #[tokio::test]
            async fn anthropic() {
                super::$check(Wire::Anthropic).await
            }

            #[tokio::test]
            async fn openai() {
                super::$check(Wire::OpenAi).await
            }
        }
    )*};
}

for_both_wires!(
    streamed_text,
    streamed_tool_call,
    retry_after_429_is_honoured,
    retry_after_500,
    retries_are_bounded,
    retry_after_past_deadline_fails_now,
    unauthorized_fails_at_once,
    malformed_json_is_reported,
    stream_ending_early_is_an_error,
    error_event_in_stream,
    non_sse_response_is_malformed,
    request_body_shape,
    api_key_header,
    timeout_mid_stream,
    timeout_before_headers,
    connection_refused_is_retried,
    missing_key,
);

async fn streamed_text(wire: Wire) {
    let f = fixture("text", wire).await;
    f.server.push_turn(turn("Hello there, small world!", &[]));
    let (result, seen) = call(&f).await;
    let response = result.unwrap();
    assert_eq!(seen, ["Hello ", "there, ", "small ", "world!"]);
    assert_eq!(response.text(), "Hello there, small world!");
    assert_eq!(
        response.content,
        [ContentBlock::Text {
            text: "Hello there, small world!".into()
        }]
    );
    assert_eq!(response.stop_reason, StopReason::EndTurn);
    assert_eq!(response.usage, DEFAULT_USAGE);
    let model = match wire {
        Wire::Anthropic => "claude-test",
        Wire::OpenAi => "gpt-test",
    };
    assert_eq!(response.model, model);
    assert_eq!(f.server.request_count(), 1);
}

async fn streamed_tool_call(wire: Wire) {
    let f = fixture("tool", wire).await;
    let args = json!({"path": "/etc/hosts", "lines": [1, 2, 3], "note": "ünïcödé"});
    f.server.push_turn(turn(
        "Let me look.",
        &[("read_file", args.clone()), ("list_dir", json!({}))],
    ));
    let (result, seen) = call(&f).await;
    let response = result.unwrap();
    assert_eq!(seen.concat(), "Let me look.");
    assert_eq!(response.stop_reason, StopReason::ToolUse);
    let prefix = match wire {
        Wire::Anthropic => "toolu",
        Wire::OpenAi => "call",
    };
    let calls: Vec<_> = response.tool_uses().collect();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[0],
        (format!("{prefix}_1_0").as_str(), "read_file", &args)
    );
    assert_eq!(
        calls[1],
        (format!("{prefix}_1_1").as_str(), "list_dir", &json!({}))
    );
    assert!(matches!(response.content[0], ContentBlock::Text { .. }));
}

async fn retry_after_429_is_honoured(wire: Wire) {
    let f = fixture("r429", wire).await;
    f.server.push_status(429, Some("1"));
    f.server.push_turn(turn("after the wait", &[]));
    let (result, _) = call(&f).await;
    assert_eq!(result.unwrap().text(), "after the wait");
    let requests = f.server.requests();
    assert_eq!(requests.len(), 2);
    let waited = requests[1].received_at - requests[0].received_at;
    assert!(waited >= Duration::from_millis(950), "waited {waited:?}");
}

async fn retry_after_500(wire: Wire) {
    let f = fixture("r500", wire).await;
    f.server.push_status(500, None);
    f.server.push_turn(turn("recovered", &[]));
    let (result, _) = call(&f).await;
    assert_eq!(result.unwrap().text(), "recovered");
    assert_eq!(f.server.request_count(), 2);
}

async fn retries_are_bounded(wire: Wire) {
    let f = fixture("bounded", wire).await;
    for _ in 0..4 {
        f.server.push_status(503, Some("0"));
    }
    let provider = f.provider.clone().max_retries(2);
    let mut client = provider.connect().unwrap();
    let err = complete(&mut client, &simple_request())
        .await
        .0
        .unwrap_err();
    assert!(
        matches!(
            err,
            LlmError::Status {
                status: 503,
                attempts: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(f.server.request_count(), 3);
    assert_no_key(&err, &f.key);
}

async fn retry_after_past_deadline_fails_now(wire: Wire) {
    let f = fixture("deadline", wire).await;
    f.server.push_status(429, Some("30"));
    f.server.push_turn(turn("never", &[]));
    let provider = f.provider.clone().timeout(Duration::from_secs(5));
    let mut client = provider.connect().unwrap();
    let started = Instant::now();
    let err = complete(&mut client, &simple_request())
        .await
        .0
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        matches!(err, LlmError::Status { status: 429, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("rate limited"), "{err}");
    assert_eq!(f.server.request_count(), 1);
}

async fn unauthorized_fails_at_once(wire: Wire) {
    let f = fixture("unauth", wire).await;
    // Some servers echo the key they got; it must not reach our error.
    f.server.push(Reply::Status {
        status: 401,
        retry_after: None,
        body: Some(format!(
            r#"{{"error": {{"message": "Incorrect API key provided: {}"}}}}"#,
            f.key
        )),
    });
    f.server.push_turn(turn("should not be reached", &[]));
    let started = Instant::now();
    let (result, _) = call(&f).await;
    let err = result.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        matches!(
            err,
            LlmError::Status {
                status: 401,
                attempts: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("Incorrect API key provided: ***"));
    assert_no_key(&err, &f.key);
    assert_eq!(f.server.request_count(), 1);
    assert_eq!(f.server.remaining(), 1);
}

async fn malformed_json_is_reported(wire: Wire) {
    let f = fixture("malformed", wire).await;
    f.server.push(Reply::MalformedJson);
    let err = call(&f).await.0.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, LlmError::Malformed { .. }), "{err:?}");
    assert!(message.contains("invalid JSON"), "{message}");
    let (event, excerpt) = match wire {
        Wire::Anthropic => ("`content_block_start` event", "\"index\": 0,"),
        Wire::OpenAi => ("`message` event", "\"content\": \"oops\""),
    };
    assert!(
        message.contains(event) && message.contains(excerpt),
        "{message}"
    );
    assert_no_key(&err, &f.key);
    assert_eq!(
        f.server.request_count(),
        1,
        "malformed streams are not retried"
    );
}

async fn stream_ending_early_is_an_error(wire: Wire) {
    let f = fixture("early", wire).await;
    f.server.push(Reply::EndEarly(turn(
        "cut short",
        &[("x", json!({"a": 1}))],
    )));
    let (result, seen) = call(&f).await;
    let err = result.unwrap_err();
    assert!(matches!(err, LlmError::Malformed { .. }), "{err:?}");
    assert!(err.to_string().contains("stream ended early"), "{err}");
    assert_eq!(seen.concat(), "cut short");
    assert_no_key(&err, &f.key);
}

async fn error_event_in_stream(wire: Wire) {
    let f = fixture("remote", wire).await;
    f.server
        .push(Reply::StreamError("Overloaded, try later".into()));
    let err = call(&f).await.0.unwrap_err();
    assert!(matches!(err, LlmError::Remote { .. }), "{err:?}");
    assert!(err.to_string().contains("Overloaded, try later"), "{err}");
    assert_no_key(&err, &f.key);
}

async fn non_sse_response_is_malformed(wire: Wire) {
    let f = fixture("notsse", wire).await;
    f.server.push(Reply::Raw {
        status: 200,
        content_type: "text/html; charset=utf-8".into(),
        body: "<html>captive portal</html>".into(),
    });
    let err = call(&f).await.0.unwrap_err();
    assert!(matches!(err, LlmError::Malformed { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("text/html") && message.contains("captive portal"),
        "{message}"
    );
}

fn conversation() -> ChatRequest {
    ChatRequest {
        system: "You are a careful agent.".into(),
        messages: vec![
            Message::user_text("List /tmp, then read notes.txt."),
            Message {
                role: Role::Assistant,
                content: vec![
                    ContentBlock::Text {
                        text: "Sure.".into(),
                    },
                    ContentBlock::ToolUse {
                        id: "t1".into(),
                        name: "list_dir".into(),
                        input: json!({"path": "/tmp"}),
                    },
                    ContentBlock::ToolUse {
                        id: "t2".into(),
                        name: "read_file".into(),
                        input: json!({"path": "/tmp/notes.txt"}),
                    },
                ],
            },
            Message {
                role: Role::User,
                content: vec![
                    ContentBlock::ToolResult {
                        tool_use_id: "t1".into(),
                        content: "notes.txt".into(),
                        is_error: false,
                    },
                    ContentBlock::ToolResult {
                        tool_use_id: "t2".into(),
                        content: "permission denied".into(),
                        is_error: true,
                    },
                ],
            },
        ],
        tools: vec![
            ToolSpec {
                name: "list_dir".into(),
                description: "Lists a directory.".into(),
                input_schema: json!({"type": "object",
                    "properties": {"path": {"type": "string"}}, "required": ["path"]}),
            },
            ToolSpec {
                name: "read_file".into(),
                description: "Reads a file.".into(),
                input_schema: json!({"type": "object",
                    "properties": {"path": {"type": "string"}}}),
            },
        ],
        max_tokens: 512,
    }
}

async fn request_body_shape(wire: Wire) {
    let f = fixture("shape", wire).await;
    f.server.push_turn(turn("ok", &[]));
    let mut client = f.provider.connect().unwrap();
    complete(&mut client, &conversation()).await.0.unwrap();
    let requests = f.server.requests();
    let request = &requests[0];
    assert_eq!(request.wire, wire);
    assert_eq!(request.header("content-type"), Some("application/json"));
    let schema_list = json!({"type": "object",
        "properties": {"path": {"type": "string"}}, "required": ["path"]});
    let schema_read = json!({"type": "object", "properties": {"path": {"type": "string"}}});
    let expected: Value = match wire {
        Wire::Anthropic => {
            assert_eq!(request.path, "/v1/messages");
            json!({
                "model": "claude-test",
                "max_tokens": 512,
                "stream": true,
                "system": "You are a careful agent.",
                "messages": [
                    {"role": "user", "content": [
                        {"type": "text", "text": "List /tmp, then read notes.txt."}]},
                    {"role": "assistant", "content": [
                        {"type": "text", "text": "Sure."},
                        {"type": "tool_use", "id": "t1", "name": "list_dir",
                            "input": {"path": "/tmp"}},
                        {"type": "tool_use", "id": "t2", "name": "read_file",
                            "input": {"path": "/tmp/notes.txt"}}]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "notes.txt",
                            "is_error": false},
                        {"type": "tool_result", "tool_use_id": "t2",
                            "content": "permission denied", "is_error": true}]},
                ],
                "tools": [
                    {"name": "list_dir", "description": "Lists a directory.",
                        "input_schema": schema_list},
                    {"name": "read_file", "description": "Reads a file.",
                        "input_schema": schema_read},
                ],
            })
        }
        Wire::OpenAi => {
            assert_eq!(request.path, "/v1/chat/completions");
            json!({
                "model": "gpt-test",
                "max_tokens": 512,
                "stream": true,
                "stream_options": {"include_usage": true},
                "messages": [
                    {"role": "system", "content": "You are a careful agent."},
                    {"role": "user", "content": "List /tmp, then read notes.txt."},
                    {"role": "assistant", "content": "Sure.", "tool_calls": [
                        {"id": "t1", "type": "function", "function": {"name": "list_dir",
                            "arguments": "{\"path\":\"/tmp\"}"}},
                        {"id": "t2", "type": "function", "function": {"name": "read_file",
                            "arguments": "{\"path\":\"/tmp/notes.txt\"}"}}]},
                    {"role": "tool", "tool_call_id": "t1", "content": "notes.txt"},
                    {"role": "tool", "tool_call_id": "t2",
                        "content": "ERROR: permission denied"},
                ],
                "tools": [
                    {"type": "function", "function": {"name": "list_dir",
                        "description": "Lists a directory.", "parameters": schema_list}},
                    {"type": "function", "function": {"name": "read_file",
                        "description": "Reads a file.", "parameters": schema_read}},
                ],
            })
        }
    };
    assert_eq!(request.body, expected);

    // No tools: no `tools` field at all.
    f.server.push_turn(turn("ok", &[]));
    complete(&mut client, &simple_request()).await.0.unwrap();
    assert!(f.server.requests()[1].body.get("tools").is_none());
}

async fn api_key_header(wire: Wire) {
    let f = fixture("header", wire).await;
    f.server.push_turn(turn("ok", &[]));
    call(&f).await.0.unwrap();
    let request = &f.server.requests()[0];
    match wire {
        Wire::Anthropic => {
            assert_eq!(request.header("x-api-key"), Some(f.key.as_str()));
            assert_eq!(request.header("anthropic-version"), Some("2023-06-01"));
            assert_eq!(request.header("authorization"), None);
        }
        Wire::OpenAi => {
            let bearer = format!("Bearer {}", f.key);
            assert_eq!(request.header("authorization"), Some(bearer.as_str()));
            assert_eq!(request.header("x-api-key"), None);

            // A keyless compatible server gets no Authorization header.
            f.server.push_turn(turn("ok", &[]));
            let provider = LlmProvider::openai_compatible(&f.server.openai_url(), "local");
            let mut client = provider.connect().unwrap();
            complete(&mut client, &simple_request()).await.0.unwrap();
            assert_eq!(f.server.requests()[1].header("authorization"), None);
        }
    }
}

async fn timeout_with(wire: Wire, test: &str, reply: Reply) {
    let f = fixture(test, wire).await;
    f.server.push(reply);
    let deadline = Duration::from_millis(1500);
    let provider = f.provider.clone().timeout(deadline);
    let mut client = provider.connect().unwrap();
    let started = Instant::now();
    let err = complete(&mut client, &simple_request())
        .await
        .0
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(err, LlmError::Timeout { .. }), "{err:?}");
    assert!(
        elapsed >= deadline - Duration::from_millis(50) && elapsed < deadline * 2,
        "took {elapsed:?}"
    );
    assert_no_key(&err, &f.key);
    assert_eq!(f.server.request_count(), 1, "timeouts are not retried");
}

async fn timeout_mid_stream(wire: Wire) {
    timeout_with(wire, "hang", Reply::Hang).await
}

async fn timeout_before_headers(wire: Wire) {
    timeout_with(wire, "noresp", Reply::NoResponse).await
}

async fn connection_refused_is_retried(wire: Wire) {
    // A port that was just free: nothing listens there.
    let url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let (env, key) = set_key("refused", wire);
    let provider = match wire {
        Wire::Anthropic => LlmProvider::anthropic("m").base_url(&url),
        Wire::OpenAi => LlmProvider::openai("m").base_url(&format!("{url}/v1")),
    }
    .api_key_env(&env)
    .max_retries(1)
    .timeout(Duration::from_secs(10));
    let mut client = provider.connect().unwrap();
    let started = Instant::now();
    let err = complete(&mut client, &simple_request())
        .await
        .0
        .unwrap_err();
    assert!(matches!(err, LlmError::Transport { .. }), "{err:?}");
    assert!(err.to_string().contains("2 attempt(s)"), "{err}");
    // One backoff step (250–500 ms) separates the two attempts.
    assert!(started.elapsed() >= Duration::from_millis(240));
    assert_no_key(&err, &key);
}

async fn missing_key(wire: Wire) {
    let server = MockLlmServer::start().await;
    let env = format!("VB_TEST_KEY_UNSET_{wire:?}");
    let err = server.provider(wire, &env).connect().unwrap_err();
    assert!(
        matches!(err, LlmError::MissingApiKey { env: ref e } if *e == env),
        "{err:?}"
    );
}
