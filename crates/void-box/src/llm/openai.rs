//! OpenAI chat completions (and compatible servers) with SSE streaming.

use eventsource_stream::Event;
use reqwest::header::{HeaderMap, AUTHORIZATION};
use serde_json::{json, Map, Value};

use super::http::{excerpt, parse_data, HttpClient, HttpConfig};
use super::{
    ChatRequest, ChatResponse, ContentBlock, LlmError, Role, StopReason, TextSink, TokenUsage,
};

const PROVIDER: &str = "openai";

/// A client of `POST {base_url}/chat/completions`.
#[derive(Debug)]
pub struct Client {
    http: HttpClient,
    url: String,
}

impl Client {
    /// A client for the configured endpoint and model.
    pub fn new(config: HttpConfig) -> Result<Self, LlmError> {
        let url = format!("{}/chat/completions", config.base_url);
        Ok(Client {
            http: HttpClient::new(PROVIDER, config)?,
            url,
        })
    }

    /// Sends one request, streaming text to `on_text` as it arrives.
    pub async fn complete(
        &self,
        request: &ChatRequest,
        on_text: TextSink<'_>,
    ) -> Result<ChatResponse, LlmError> {
        let config = self.http.config();
        let body = request_body(&config.model, &config.base_url, request);
        let mut headers = HeaderMap::new();
        if let Some(key) = &config.api_key {
            headers.insert(AUTHORIZATION, key.header_value(PROVIDER, "Bearer ")?);
        }
        self.http
            .call(|deadline| async move {
                let mut stream = self
                    .http
                    .post_sse(&self.url, headers, &body, deadline)
                    .await?;
                let mut parser = StreamParser::new(&config.model);
                while let Some(event) = stream.next().await? {
                    if parser.on_event(&event, on_text)? {
                        return parser.finish();
                    }
                    if parser.producing {
                        // Not before: reasoning models may think silently for minutes.
                        stream.arm_idle_timeout();
                    }
                }
                if parser.finish_reason.is_some() {
                    // Some compatible servers close without `[DONE]`.
                    return parser.finish();
                }
                Err(LlmError::Malformed {
                    provider: PROVIDER,
                    message: "stream ended early, before `[DONE]` or a finish_reason".into(),
                })
            })
            .await
    }
}

/// OpenAI's own API rejects `max_tokens` for newer models; most compatible
/// servers only know `max_tokens`.
fn max_tokens_field(base_url: &str) -> &'static str {
    let host = base_url
        .split_once("://")
        .map_or(base_url, |(_, rest)| rest)
        .split(['/', ':'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if host == "api.openai.com" || host.ends_with(".openai.azure.com") {
        "max_completion_tokens"
    } else {
        "max_tokens"
    }
}

/// The chat-completions request for `request`.
fn request_body(model: &str, base_url: &str, request: &ChatRequest) -> Value {
    let mut messages = Vec::new();
    if !request.system.is_empty() {
        messages.push(json!({"role": "system", "content": request.system}));
    }
    for message in &request.messages {
        let text: String = message
            .content
            .iter()
            .filter_map(|b| match b {
                ContentBlock::Text { text } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        match message.role {
            Role::Assistant => {
                let calls: Vec<Value> = message
                    .content
                    .iter()
                    .filter_map(|b| match b {
                        ContentBlock::ToolUse { id, name, input } => Some(json!({
                            "id": id,
                            "type": "function",
                            "function": {"name": name, "arguments": input.to_string()},
                        })),
                        _ => None,
                    })
                    .collect();
                let mut m = json!({
                    "role": "assistant",
                    "content": if text.is_empty() { Value::Null } else { json!(text) },
                });
                if !calls.is_empty() {
                    m["tool_calls"] = json!(calls);
                }
                messages.push(m);
            }
            Role::User => {
                // Tool messages must directly follow the assistant's tool calls,
                // so they go before any text of the same turn.
                let mut results = 0;
                for block in &message.content {
                    if let ContentBlock::ToolResult {
                        tool_use_id,
                        content,
                        is_error,
                    } = block
                    {
                        let content = if *is_error {
                            format!("ERROR: {content}")
                        } else {
                            content.clone()
                        };
                        messages.push(json!({
                            "role": "tool",
                            "tool_call_id": tool_use_id,
                            "content": content,
                        }));
                        results += 1;
                    }
                }
                if !text.is_empty() || results == 0 {
                    messages.push(json!({"role": "user", "content": text}));
                }
            }
        }
    }
    let mut body = json!({
        "model": model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    body[max_tokens_field(base_url)] = json!(request.max_tokens);
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| {
                json!({
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.input_schema,
                    },
                })
            })
            .collect();
    }
    body
}

/// A tool call being streamed.
#[derive(Default)]
struct PartialCall {
    index: Option<u64>,
    id: String,
    name: String,
    arguments: String,
}

/// Folds the chunks of one streamed completion into a [`ChatResponse`].
struct StreamParser {
    model: String,
    text: String,
    calls: Vec<PartialCall>,
    finish_reason: Option<String>,
    usage: TokenUsage,
    producing: bool,
}

impl StreamParser {
    fn new(model: &str) -> Self {
        StreamParser {
            model: model.to_string(),
            text: String::new(),
            calls: Vec::new(),
            finish_reason: None,
            usage: TokenUsage::default(),
            producing: false,
        }
    }

    /// Handles one event; `true` at `[DONE]`.
    fn on_event(&mut self, event: &Event, on_text: TextSink<'_>) -> Result<bool, LlmError> {
        if event.data.trim() == "[DONE]" {
            return Ok(true);
        }
        let data = parse_data(PROVIDER, event)?;
        if let Some(error) = data.get("error").filter(|e| !e.is_null()) {
            return Err(LlmError::Remote {
                provider: PROVIDER,
                message: remote_message(error),
            });
        }
        if event.event == "error" {
            return Err(LlmError::Remote {
                provider: PROVIDER,
                message: remote_message(&data),
            });
        }
        if let Some(model) = data.get("model").and_then(Value::as_str) {
            self.model = model.to_string();
        }
        if let Some(usage) = data.get("usage").filter(|u| u.is_object()) {
            let field = |name: &str| usage.get(name).and_then(Value::as_u64);
            self.usage = TokenUsage {
                input_tokens: field("prompt_tokens").unwrap_or(self.usage.input_tokens),
                output_tokens: field("completion_tokens").unwrap_or(self.usage.output_tokens),
            };
        }
        // We ask for one choice; servers that send more are read for the first.
        let choice = data.get("choices").and_then(Value::as_array).and_then(|c| {
            c.iter()
                .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
        });
        let Some(choice) = choice else {
            return Ok(false);
        };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        if let Some(text) = delta.get("content").and_then(Value::as_str) {
            if !text.is_empty() {
                self.producing = true;
                on_text(text);
                self.text.push_str(text);
            }
        }
        if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
            for (position, call) in calls.iter().enumerate() {
                self.producing = true;
                self.tool_call_delta(position, call);
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_string());
        }
        Ok(false)
    }

    fn tool_call_delta(&mut self, position: usize, delta: &Value) {
        let index = delta.get("index").and_then(Value::as_u64);
        let id = delta.get("id").and_then(Value::as_str).unwrap_or("");
        let function = delta.get("function").unwrap_or(&Value::Null);
        let name = function.get("name").and_then(Value::as_str).unwrap_or("");
        let arguments = function
            .get("arguments")
            .and_then(Value::as_str)
            .unwrap_or("");
        // Fragments are keyed by `index`; servers that omit it send whole
        // calls, told apart by id or by position.
        let slot = match index {
            Some(index) => self.calls.iter().position(|c| c.index == Some(index)),
            None if !id.is_empty() => self.calls.iter().position(|c| c.id == id),
            None => self.calls.len().checked_sub(1).filter(|_| position == 0),
        };
        let call = match slot {
            Some(slot) => &mut self.calls[slot],
            None => {
                self.calls.push(PartialCall {
                    index,
                    ..Default::default()
                });
                let last = self.calls.len() - 1;
                &mut self.calls[last]
            }
        };
        // id and name come whole (some servers repeat them); arguments in pieces.
        if call.id.is_empty() {
            call.id = id.to_string();
        }
        if call.name.is_empty() {
            call.name = name.to_string();
        }
        call.arguments.push_str(arguments);
    }

    fn finish(self) -> Result<ChatResponse, LlmError> {
        let mut content = Vec::new();
        if !self.text.is_empty() {
            content.push(ContentBlock::Text { text: self.text });
        }
        let has_calls = !self.calls.is_empty();
        for (n, call) in self.calls.into_iter().enumerate() {
            if call.name.is_empty() {
                return Err(LlmError::Malformed {
                    provider: PROVIDER,
                    message: format!("tool call {n} has no function name"),
                });
            }
            let input = if call.arguments.trim().is_empty() {
                Value::Object(Map::new())
            } else {
                serde_json::from_str(&call.arguments).map_err(|e| LlmError::Malformed {
                    provider: PROVIDER,
                    message: format!(
                        "invalid JSON arguments for tool `{}` ({e}): `{}`",
                        call.name,
                        excerpt(&call.arguments, 120)
                    ),
                })?
            };
            let id = if call.id.is_empty() {
                format!("call_{n}")
            } else {
                call.id
            };
            content.push(ContentBlock::ToolUse {
                id,
                name: call.name,
                input,
            });
        }
        let stop_reason = match self.finish_reason.as_deref() {
            // Some compatible servers say "stop" even when they call tools.
            Some("tool_calls" | "function_call") => StopReason::ToolUse,
            Some("stop") | None if has_calls => StopReason::ToolUse,
            Some("stop") | None => StopReason::EndTurn,
            Some("length") => StopReason::MaxTokens,
            Some(other) => StopReason::Other(other.to_string()),
        };
        Ok(ChatResponse {
            content,
            stop_reason,
            usage: self.usage,
            model: self.model,
        })
    }
}

/// The message of an error object (`{"message": ..}`), or the value itself.
fn remote_message(error: &Value) -> String {
    let inner = error.get("error").unwrap_or(error);
    match inner.get("message").and_then(Value::as_str) {
        Some(message) => message.to_string(),
        None => match inner.as_str() {
            Some(s) => s.to_string(),
            None => excerpt(&inner.to_string(), 300),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::llm::{Message, ToolSpec};

    fn chunk(data: Value) -> Event {
        Event {
            event: "message".into(),
            data: data.to_string(),
            ..Default::default()
        }
    }

    fn done() -> Event {
        Event {
            event: "message".into(),
            data: "[DONE]".into(),
            ..Default::default()
        }
    }

    fn run(events: &[Event]) -> (Result<ChatResponse, LlmError>, Vec<String>) {
        let seen = Mutex::new(Vec::new());
        let sink = |t: &str| seen.lock().unwrap().push(t.to_string());
        let mut parser = StreamParser::new("requested");
        let mut result = Err(LlmError::Malformed {
            provider: PROVIDER,
            message: "stream ended early".into(),
        });
        for e in events {
            match parser.on_event(e, &sink) {
                Ok(false) => continue,
                Ok(true) => {
                    result = parser.finish();
                    break;
                }
                Err(err) => {
                    result = Err(err);
                    break;
                }
            }
        }
        (result, seen.into_inner().unwrap())
    }

    #[test]
    fn text_and_tool_calls() {
        let events = [
            chunk(json!({"model": "gpt-x", "choices": [{"index": 0,
                "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]})),
            chunk(json!({"choices": [{"index": 0, "delta": {"content": "Hi "}}]})),
            chunk(json!({"choices": [{"index": 0, "delta": {"content": "there"}}]})),
            chunk(
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0,
                "id": "c1", "type": "function",
                "function": {"name": "read", "arguments": ""}}]}}]}),
            ),
            chunk(
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0,
                "function": {"arguments": "{\"pa"}}]}}]}),
            ),
            chunk(
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1,
                "id": "c2", "function": {"name": "list", "arguments": ""}}]}}]}),
            ),
            chunk(
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0,
                "function": {"arguments": "th\":\"/a\"}"}}]}}]}),
            ),
            chunk(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})),
            chunk(json!({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 7}})),
            done(),
        ];
        let (result, seen) = run(&events);
        let response = result.unwrap();
        assert_eq!(seen, ["Hi ", "there"]);
        assert_eq!(response.model, "gpt-x");
        assert_eq!(response.stop_reason, StopReason::ToolUse);
        assert_eq!(
            response.usage,
            TokenUsage {
                input_tokens: 12,
                output_tokens: 7
            }
        );
        let calls: Vec<_> = response.tool_uses().collect();
        assert_eq!(calls[0], ("c1", "read", &json!({"path": "/a"})));
        assert_eq!(calls[1], ("c2", "list", &json!({})));
    }

    #[test]
    fn whole_calls_without_index() {
        let (result, _) = run(&[
            chunk(json!({"choices": [{"delta": {"tool_calls": [
                {"id": "a", "function": {"name": "one", "arguments": "{}"}},
                {"id": "b", "function": {"name": "two", "arguments": "{\"x\":1}"}}]},
                "finish_reason": "stop"}]})),
            done(),
        ]);
        let response = result.unwrap();
        assert_eq!(response.stop_reason, StopReason::ToolUse);
        let names: Vec<_> = response.tool_uses().map(|(_, n, _)| n).collect();
        assert_eq!(names, ["one", "two"]);
    }

    #[test]
    fn errors_are_clear() {
        let err = run(&[chunk(json!({"error": {"message": "rate limited"}}))])
            .0
            .unwrap_err();
        assert!(matches!(err, LlmError::Remote { .. }) && err.to_string().contains("rate limited"));

        let err = run(&[
            chunk(
                json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "a",
                "function": {"name": "grep", "arguments": "{\"q\":"}}]}}]}),
            ),
            done(),
        ])
        .0
        .unwrap_err();
        assert!(err.to_string().contains("tool `grep`"), "{err}");

        let bad = Event {
            event: "message".into(),
            data: "{\"choices\": [".into(),
            ..Default::default()
        };
        let err = run(&[bad]).0.unwrap_err().to_string();
        assert!(
            err.contains("invalid JSON") && err.contains("{\"choices\": ["),
            "{err}"
        );
    }

    #[test]
    fn odd_inputs_never_panic() {
        for data in [
            json!(null),
            json!([1]),
            json!({"choices": null}),
            json!({"choices": [null, 3]}),
            json!({"choices": [{"delta": {"tool_calls": [null, {"index": -1}]}}]}),
            json!({"choices": [{"delta": {"content": 4}, "finish_reason": 1}]}),
            json!({"usage": {"prompt_tokens": "x"}}),
            json!({"error": 5}),
        ] {
            let _ = run(&[chunk(data), done()]);
        }
    }

    #[test]
    fn request_shape() {
        let request = ChatRequest {
            system: "be brief".into(),
            messages: vec![
                Message::user_text("hi"),
                Message {
                    role: Role::Assistant,
                    content: vec![
                        ContentBlock::Text {
                            text: "looking".into(),
                        },
                        ContentBlock::ToolUse {
                            id: "c1".into(),
                            name: "read".into(),
                            input: json!({"path": "/a"}),
                        },
                    ],
                },
                Message {
                    role: Role::User,
                    content: vec![ContentBlock::ToolResult {
                        tool_use_id: "c1".into(),
                        content: "nope".into(),
                        is_error: true,
                    }],
                },
            ],
            tools: vec![ToolSpec {
                name: "read".into(),
                description: "reads".into(),
                input_schema: json!({"type": "object"}),
            }],
            max_tokens: 100,
        };
        let body = request_body("m", "http://localhost:11434/v1", &request);
        assert_eq!(
            body,
            json!({
                "model": "m", "max_tokens": 100, "stream": true,
                "stream_options": {"include_usage": true},
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "looking", "tool_calls": [{"id": "c1",
                        "type": "function",
                        "function": {"name": "read", "arguments": "{\"path\":\"/a\"}"}}]},
                    {"role": "tool", "tool_call_id": "c1", "content": "ERROR: nope"},
                ],
                "tools": [{"type": "function", "function": {"name": "read",
                    "description": "reads", "parameters": {"type": "object"}}}],
            })
        );
        let body = request_body("m", "https://api.openai.com/v1", &request);
        assert_eq!(body["max_completion_tokens"], 100);
        assert!(body.get("max_tokens").is_none());
    }
}
