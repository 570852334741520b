//! A scripted LLM server on 127.0.0.1 that speaks both streaming wire
//! formats: Anthropic Messages (`POST /v1/messages`) and OpenAI chat
//! completions (`POST /v1/chat/completions`). Each request takes the next
//! scripted [`Reply`]; every request is captured for assertions.
//!
//! Point Anthropic at [`MockLlmServer::anthropic_url`] (the server URL) and
//! OpenAI at [`MockLlmServer::openai_url`] (URL + `/v1`), or use
//! [`MockLlmServer::provider`].
//!
//! Tool-call ids are `toolu_{turn}_{i}` (Anthropic) and `call_{turn}_{i}`
//! (OpenAI): `turn` counts the scripted turns served so far from 1, `i`
//! is the call's position in the turn from 0.

// Shared by several test binaries; each uses a part of it.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};
use void_box::llm::{LlmProvider, TokenUsage};

pub use void_box::llm::MockTurn;

/// A scripted turn: `text`, then tool calls as `(name, arguments)`.
pub fn turn(text: &str, tool_calls: &[(&str, Value)]) -> MockTurn {
    tool_calls
        .iter()
        .fold(MockTurn::text(text), |t, (name, input)| {
            t.call(name, input.clone())
        })
}

/// Which wire format a request used (told by its path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// `POST /v1/messages`.
    Anthropic,
    /// `POST /v1/chat/completions` (or `/chat/completions`).
    OpenAi,
}

/// What the server answers to one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A well-formed streamed answer: text deltas, then tool calls with
    /// their arguments split across several deltas.
    Turn(MockTurn),
    /// An error status; `body: None` gives the provider's usual JSON error.
    Status {
        /// HTTP status.
        status: u16,
        /// `Retry-After` header value, if any.
        retry_after: Option<String>,
        /// Response body.
        body: Option<String>,
    },
    /// A 200 stream with a data line that is not valid JSON.
    MalformedJson,
    /// The turn's stream, cut before `message_stop` / finish_reason / `[DONE]`.
    EndEarly(MockTurn),
    /// A 200 stream carrying the provider's in-stream error with this message.
    StreamError(String),
    /// Headers and a first event, then silence forever.
    Hang,
    /// Never even sends the headers.
    NoResponse,
    /// Anything else: status, content type and body as given.
    Raw {
        /// HTTP status.
        status: u16,
        /// `content-type` header.
        content_type: String,
        /// The whole body.
        body: String,
    },
}

/// One request the server received.
#[derive(Debug, Clone)]
pub struct CapturedRequest {
    /// Which API it called.
    pub wire: Wire,
    /// Request path.
    pub path: String,
    /// Headers, names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The JSON body (a string value if it was not JSON).
    pub body: Value,
    /// When it arrived.
    pub received_at: Instant,
}

impl CapturedRequest {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct ServerState {
    replies: VecDeque<Reply>,
    requests: Vec<CapturedRequest>,
    turns_served: usize,
    usage: Option<TokenUsage>,
}

/// The scripted server; stops when dropped.
pub struct MockLlmServer {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub url: String,
    state: Arc<Mutex<ServerState>>,
    task: tokio::task::JoinHandle<()>,
}

/// Usage reported for each turn unless [`MockLlmServer::set_usage`] changes it.
pub const DEFAULT_USAGE: TokenUsage = TokenUsage {
    input_tokens: 100,
    output_tokens: 20,
};

impl MockLlmServer {
    /// Starts an empty server on an ephemeral port (needs a tokio runtime).
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(ServerState::default()));
        let app = Router::new()
            .route("/v1/messages", post(handle))
            .route("/v1/chat/completions", post(handle))
            .route("/chat/completions", post(handle))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mock LLM server");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockLlmServer { url, state, task }
    }

    /// Starts a server that plays these turns, one per request.
    pub async fn with_turns(turns: impl IntoIterator<Item = MockTurn>) -> Self {
        let server = Self::start().await;
        for t in turns {
            server.push_turn(t);
        }
        server
    }

    /// Queues a well-formed streamed turn.
    pub fn push_turn(&self, turn: MockTurn) -> &Self {
        self.push(Reply::Turn(turn))
    }

    /// Queues any reply.
    pub fn push(&self, reply: Reply) -> &Self {
        self.lock().replies.push_back(reply);
        self
    }

    /// Queues an error status with the provider's usual JSON body.
    pub fn push_status(&self, status: u16, retry_after: Option<&str>) -> &Self {
        self.push(Reply::Status {
            status,
            retry_after: retry_after.map(str::to_string),
            body: None,
        })
    }

    /// Token usage reported by later turns.
    pub fn set_usage(&self, usage: TokenUsage) {
        self.lock().usage = Some(usage);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<CapturedRequest> {
        self.lock().requests.clone()
    }

    /// How many requests arrived.
    pub fn request_count(&self) -> usize {
        self.lock().requests.len()
    }

    /// How many scripted replies are still queued.
    pub fn remaining(&self) -> usize {
        self.lock().replies.len()
    }

    /// Base URL for [`LlmProvider::anthropic`].
    pub fn anthropic_url(&self) -> String {
        self.url.clone()
    }

    /// Base URL for OpenAI-compatible providers.
    pub fn openai_url(&self) -> String {
        format!("{}/v1", self.url)
    }

    /// A provider of this wire format pointed at this server, reading its
    /// key from `key_env` (models `claude-test` and `gpt-test`).
    pub fn provider(&self, wire: Wire, key_env: &str) -> LlmProvider {
        match wire {
            Wire::Anthropic => LlmProvider::anthropic("claude-test")
                .base_url(&self.anthropic_url())
                .api_key_env(key_env),
            Wire::OpenAi => LlmProvider::openai("gpt-test")
                .base_url(&self.openai_url())
                .api_key_env(key_env),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ServerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for MockLlmServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(state): State<Arc<Mutex<ServerState>>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let wire = if path.ends_with("/messages") {
        Wire::Anthropic
    } else {
        Wire::OpenAi
    };
    let headers = header_list(request.headers());
    let bytes = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock-model")
        .to_string();

    let (reply, turn_no, usage, request_no) = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.requests.push(CapturedRequest {
            wire,
            path,
            headers,
            body,
            received_at: Instant::now(),
        });
        let reply = s.replies.pop_front();
        if matches!(reply, Some(Reply::Turn(_) | Reply::EndEarly(_))) {
            s.turns_served += 1;
        }
        (
            reply,
            s.turns_served,
            s.usage.unwrap_or(DEFAULT_USAGE),
            s.requests.len(),
        )
    };
    let wire_fmt = WireFormat {
        wire,
        model,
        turn_no,
        usage,
    };

    match reply {
        None => json_response(
            400,
            None,
            json!({"error": {"type": "invalid_request_error",
                "message": format!("mock LLM server: no scripted reply left for request #{request_no}")}}),
        ),
        Some(Reply::Turn(t)) => sse(wire_fmt.turn_events(&t, true), false),
        Some(Reply::EndEarly(t)) => sse(wire_fmt.turn_events(&t, false), false),
        Some(Reply::Status {
            status,
            retry_after,
            body,
        }) => {
            let body = body.unwrap_or_else(|| wire_fmt.error_body(status).to_string());
            raw(status, "application/json", retry_after.as_deref(), body)
        }
        Some(Reply::MalformedJson) => sse(wire_fmt.malformed_events(), false),
        Some(Reply::StreamError(message)) => sse(wire_fmt.stream_error_events(&message), false),
        Some(Reply::Hang) => sse(wire_fmt.first_event(), true),
        Some(Reply::NoResponse) => std::future::pending().await,
        Some(Reply::Raw {
            status,
            content_type,
            body,
        }) => raw(status, &content_type, None, body),
    }
}

fn header_list(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// An SSE response sending each event as its own chunk, then either
/// closing or hanging forever.
fn sse(events: Vec<String>, hang: bool) -> Response {
    let chunks = stream::iter(
        events
            .into_iter()
            .map(|e| Ok::<_, Infallible>(Bytes::from(e))),
    );
    let body = if hang {
        Body::from_stream(chunks.chain(stream::pending()))
    } else {
        Body::from_stream(chunks)
    };
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body)
        .expect("valid response")
}

fn raw(status: u16, content_type: &str, retry_after: Option<&str>, body: String) -> Response {
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", content_type);
    if let Some(r) = retry_after {
        builder = builder.header("retry-after", r);
    }
    builder.body(Body::from(body)).expect("valid response")
}

fn json_response(status: u16, retry_after: Option<&str>, body: Value) -> Response {
    raw(status, "application/json", retry_after, body.to_string())
}

/// Splits `s` into about `parts` pieces on character boundaries.
fn split_in(s: &str, parts: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let size = chars.len().div_ceil(parts.max(1)).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// Text deltas: one per word, spaces kept.
fn text_pieces(text: &str) -> Vec<String> {
    text.split_inclusive(' ').map(str::to_string).collect()
}

struct WireFormat {
    wire: Wire,
    model: String,
    turn_no: usize,
    usage: TokenUsage,
}

impl WireFormat {
    fn anthropic_event(name: &str, data: Value) -> String {
        format!("event: {name}\ndata: {data}\n\n")
    }

    fn openai_chunk(&self, delta: Value, finish_reason: Option<&str>) -> String {
        let data = json!({
            "id": format!("chatcmpl-mock-{}", self.turn_no),
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null,
                "finish_reason": finish_reason}],
            "usage": null,
        });
        format!("data: {data}\n\n")
    }

    fn first_event(&self) -> Vec<String> {
        match self.wire {
            Wire::Anthropic => vec![
                Self::anthropic_event(
                    "message_start",
                    json!({"type": "message_start", "message": {
                        "id": format!("msg_mock_{}", self.turn_no), "type": "message",
                        "role": "assistant", "model": self.model, "content": [],
                        "stop_reason": null, "stop_sequence": null,
                        "usage": {"input_tokens": self.usage.input_tokens, "output_tokens": 1}}}),
                ),
                Self::anthropic_event("ping", json!({"type": "ping"})),
            ],
            Wire::OpenAi => {
                vec![self.openai_chunk(json!({"role": "assistant", "content": ""}), None)]
            }
        }
    }

    /// The events of `turn`; `complete: false` stops before the end markers.
    fn turn_events(&self, turn: &MockTurn, complete: bool) -> Vec<String> {
        let mut events = self.first_event();
        match self.wire {
            Wire::Anthropic => {
                let mut index = 0;
                if !turn.text.is_empty() {
                    events.push(Self::anthropic_event(
                        "content_block_start",
                        json!({"type": "content_block_start", "index": index,
                            "content_block": {"type": "text", "text": ""}}),
                    ));
                    for piece in text_pieces(&turn.text) {
                        events.push(Self::anthropic_event(
                            "content_block_delta",
                            json!({"type": "content_block_delta", "index": index,
                                "delta": {"type": "text_delta", "text": piece}}),
                        ));
                    }
                    events.push(Self::anthropic_event(
                        "content_block_stop",
                        json!({"type": "content_block_stop", "index": index}),
                    ));
                    index += 1;
                }
                for (i, call) in turn.tool_calls.iter().enumerate() {
                    events.push(Self::anthropic_event(
                        "content_block_start",
                        json!({"type": "content_block_start", "index": index,
                            "content_block": {"type": "tool_use",
                                "id": format!("toolu_{}_{i}", self.turn_no),
                                "name": call.name, "input": {}}}),
                    ));
                    let mut pieces = vec![String::new()];
                    pieces.extend(split_in(&call.input.to_string(), 3));
                    for piece in pieces {
                        events.push(Self::anthropic_event(
                            "content_block_delta",
                            json!({"type": "content_block_delta", "index": index,
                                "delta": {"type": "input_json_delta", "partial_json": piece}}),
                        ));
                    }
                    events.push(Self::anthropic_event(
                        "content_block_stop",
                        json!({"type": "content_block_stop", "index": index}),
                    ));
                    index += 1;
                }
                if complete {
                    let stop = if turn.tool_calls.is_empty() {
                        "end_turn"
                    } else {
                        "tool_use"
                    };
                    events.push(Self::anthropic_event(
                        "message_delta",
                        json!({"type": "message_delta",
                            "delta": {"stop_reason": stop, "stop_sequence": null},
                            "usage": {"output_tokens": self.usage.output_tokens}}),
                    ));
                    events.push(Self::anthropic_event(
                        "message_stop",
                        json!({"type": "message_stop"}),
                    ));
                }
            }
            Wire::OpenAi => {
                for piece in text_pieces(&turn.text) {
                    events.push(self.openai_chunk(json!({"content": piece}), None));
                }
                for (i, call) in turn.tool_calls.iter().enumerate() {
                    events.push(self.openai_chunk(
                        json!({"tool_calls": [{"index": i,
                            "id": format!("call_{}_{i}", self.turn_no), "type": "function",
                            "function": {"name": call.name, "arguments": ""}}]}),
                        None,
                    ));
                    for piece in split_in(&call.input.to_string(), 3) {
                        events.push(self.openai_chunk(
                            json!({"tool_calls": [{"index": i,
                                "function": {"arguments": piece}}]}),
                            None,
                        ));
                    }
                }
                if complete {
                    let finish = if turn.tool_calls.is_empty() {
                        "stop"
                    } else {
                        "tool_calls"
                    };
                    events.push(self.openai_chunk(json!({}), Some(finish)));
                    let usage = json!({
                        "id": format!("chatcmpl-mock-{}", self.turn_no),
                        "object": "chat.completion.chunk",
                        "created": 1_700_000_000,
                        "model": self.model,
                        "choices": [],
                        "usage": {"prompt_tokens": self.usage.input_tokens,
                            "completion_tokens": self.usage.output_tokens,
                            "total_tokens": self.usage.input_tokens + self.usage.output_tokens},
                    });
                    events.push(format!("data: {usage}\n\n"));
                    events.push("data: [DONE]\n\n".to_string());
                }
            }
        }
        events
    }

    fn malformed_events(&self) -> Vec<String> {
        let mut events = self.first_event();
        match self.wire {
            Wire::Anthropic => {
                events.push(
                    "event: content_block_start\ndata: {\"type\": \"content_block_start\", \"index\": 0,\n\n"
                        .to_string(),
                );
                events.push(Self::anthropic_event(
                    "message_stop",
                    json!({"type": "message_stop"}),
                ));
            }
            Wire::OpenAi => {
                events.push(
                    "data: {\"choices\": [{\"index\": 0, \"delta\": {\"content\": \"oops\"\n\n"
                        .to_string(),
                );
                events.push("data: [DONE]\n\n".to_string());
            }
        }
        events
    }

    fn stream_error_events(&self, message: &str) -> Vec<String> {
        let mut events = self.first_event();
        match self.wire {
            Wire::Anthropic => events.push(Self::anthropic_event(
                "error",
                json!({"type": "error", "error": {"type": "overloaded_error", "message": message}}),
            )),
            Wire::OpenAi => {
                let data = json!({"error": {"message": message, "type": "server_error",
                    "param": null, "code": null}});
                events.push(format!("data: {data}\n\n"));
            }
        }
        events
    }

    fn error_body(&self, status: u16) -> Value {
        let (kind, message) = match status {
            401 => ("authentication_error", "invalid x-api-key"),
            403 => ("permission_error", "forbidden"),
            404 => ("not_found_error", "not found"),
            429 => ("rate_limit_error", "rate limited, slow down"),
            529 => ("overloaded_error", "Overloaded"),
            s if s >= 500 => ("api_error", "internal server error"),
            _ => ("invalid_request_error", "bad request"),
        };
        match self.wire {
            Wire::Anthropic => {
                json!({"type": "error", "error": {"type": kind, "message": message}})
            }
            Wire::OpenAi => {
                json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
            }
        }
    }
}
