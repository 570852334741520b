//! Anthropic Messages API with SSE streaming.

use eventsource_stream::Event;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Map, Value};

use super::http::{excerpt, parse_data, HttpClient, HttpConfig};
use super::{
    ChatRequest, ChatResponse, ContentBlock, LlmError, Role, StopReason, TextSink, TokenUsage,
};

const PROVIDER: &str = "anthropic";
const API_VERSION: &str = "2023-06-01";

/// A client of `POST {base_url}/v1/messages`.
#[derive(Debug)]
pub struct Client {
    http: HttpClient,
    url: String,
}

impl Client {
    /// A client for the configured endpoint and model.
    pub fn new(config: HttpConfig) -> Result<Self, LlmError> {
        let url = format!("{}/v1/messages", config.base_url);
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
        let body = request_body(&config.model, request);
        let mut headers = HeaderMap::new();
        headers.insert("anthropic-version", HeaderValue::from_static(API_VERSION));
        if let Some(key) = &config.api_key {
            headers.insert("x-api-key", key.header_value(PROVIDER, "")?);
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
                    if parser.started {
                        // Anthropic pings while the model thinks, so silence means trouble.
                        stream.arm_idle_timeout();
                    }
                }
                Err(LlmError::Malformed {
                    provider: PROVIDER,
                    message: "stream ended early, before `message_stop`".into(),
                })
            })
            .await
    }
}

/// The Messages API request for `request`.
fn request_body(model: &str, request: &ChatRequest) -> Value {
    let messages: Vec<Value> = request
        .messages
        .iter()
        .map(|m| {
            let content: Vec<Value> = m
                .content
                .iter()
                // The API rejects empty text blocks.
                .filter(|b| !matches!(b, ContentBlock::Text { text } if text.is_empty()))
                .map(|b| match b {
                    ContentBlock::Text { text } => json!({"type": "text", "text": text}),
                    ContentBlock::ToolUse { id, name, input } => {
                        json!({"type": "tool_use", "id": id, "name": name, "input": input})
                    }
                    ContentBlock::ToolResult {
                        tool_use_id,
                        content,
                        is_error,
                    } => json!({
                        "type": "tool_result",
                        "tool_use_id": tool_use_id,
                        "content": content,
                        "is_error": is_error,
                    }),
                })
                .collect();
            let role = match m.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            json!({"role": role, "content": content})
        })
        .collect();
    let mut body = json!({
        "model": model,
        "max_tokens": request.max_tokens,
        "stream": true,
        "messages": messages,
    });
    if !request.system.is_empty() {
        body["system"] = json!(request.system);
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "description": t.description,
                    "input_schema": t.input_schema,
                })
            })
            .collect();
    }
    body
}

/// A content block still being streamed.
enum OpenBlock {
    Text(String),
    ToolUse {
        id: String,
        name: String,
        /// What `content_block_start` carried, used when no delta follows.
        initial: Value,
        json: String,
    },
    /// A block type we do not use (thinking, server tools...).
    Ignored,
}

/// Folds the events of one streamed message into a [`ChatResponse`].
struct StreamParser {
    model: String,
    usage: TokenUsage,
    stop_reason: Option<StopReason>,
    open: Vec<(u64, OpenBlock)>,
    done: Vec<(u64, ContentBlock)>,
    started: bool,
}

impl StreamParser {
    fn new(model: &str) -> Self {
        StreamParser {
            model: model.to_string(),
            usage: TokenUsage::default(),
            stop_reason: None,
            open: Vec::new(),
            done: Vec::new(),
            started: false,
        }
    }

    /// Handles one event; `true` once the message is complete.
    fn on_event(&mut self, event: &Event, on_text: TextSink<'_>) -> Result<bool, LlmError> {
        let data = parse_data(PROVIDER, event)?;
        // Without an `event:` line the SSE name is "message"; the JSON still says.
        let kind = match event.event.as_str() {
            "message" => data
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("message"),
            name => name,
        };
        match kind {
            "message_start" => {
                self.started = true;
                let message = data.get("message").unwrap_or(&Value::Null);
                if let Some(model) = message.get("model").and_then(Value::as_str) {
                    self.model = model.to_string();
                }
                if let Some(usage) = message.get("usage") {
                    self.read_usage(usage);
                }
            }
            "content_block_start" => {
                let index = block_index(&data, kind)?;
                let block = data.get("content_block").unwrap_or(&Value::Null);
                let open = match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let text = str_field(block, "text").unwrap_or("");
                        if !text.is_empty() {
                            on_text(text);
                        }
                        OpenBlock::Text(text.to_string())
                    }
                    Some("tool_use") => {
                        let (Some(id), Some(name)) =
                            (str_field(block, "id"), str_field(block, "name"))
                        else {
                            return Err(malformed(format!(
                                "tool_use block {index} without id or name: `{}`",
                                excerpt(&event.data, 120)
                            )));
                        };
                        OpenBlock::ToolUse {
                            id: id.to_string(),
                            name: name.to_string(),
                            initial: block.get("input").cloned().unwrap_or(Value::Null),
                            json: String::new(),
                        }
                    }
                    _ => OpenBlock::Ignored,
                };
                self.open.retain(|(i, _)| *i != index);
                self.open.push((index, open));
            }
            "content_block_delta" => {
                let index = block_index(&data, kind)?;
                let delta = data.get("delta").unwrap_or(&Value::Null);
                let Some((_, block)) = self.open.iter_mut().find(|(i, _)| *i == index) else {
                    return Err(malformed(format!(
                        "content_block_delta for block {index}, which was never started"
                    )));
                };
                match (delta.get("type").and_then(Value::as_str), block) {
                    (Some("text_delta"), OpenBlock::Text(text)) => {
                        let piece = str_field(delta, "text").unwrap_or("");
                        if !piece.is_empty() {
                            on_text(piece);
                            text.push_str(piece);
                        }
                    }
                    (Some("input_json_delta"), OpenBlock::ToolUse { json, .. }) => {
                        json.push_str(str_field(delta, "partial_json").unwrap_or(""));
                    }
                    (Some(t @ ("text_delta" | "input_json_delta")), _) => {
                        return Err(malformed(format!(
                            "`{t}` for block {index}, which is of another type"
                        )));
                    }
                    // thinking_delta, signature_delta, citations...
                    _ => {}
                }
            }
            "content_block_stop" => {
                let index = block_index(&data, kind)?;
                let Some(pos) = self.open.iter().position(|(i, _)| *i == index) else {
                    return Err(malformed(format!(
                        "content_block_stop for block {index}, which was never started"
                    )));
                };
                let (_, block) = self.open.remove(pos);
                self.close(index, block)?;
            }
            "message_delta" => {
                if let Some(reason) = data
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    self.stop_reason = Some(match reason {
                        "end_turn" => StopReason::EndTurn,
                        "tool_use" => StopReason::ToolUse,
                        "max_tokens" => StopReason::MaxTokens,
                        other => StopReason::Other(other.to_string()),
                    });
                }
                if let Some(usage) = data.get("usage") {
                    self.read_usage(usage);
                }
            }
            "message_stop" => return Ok(true),
            "error" => {
                let error = data.get("error").unwrap_or(&Value::Null);
                let message = str_field(error, "message").unwrap_or("(no message)");
                let message = match str_field(error, "type") {
                    Some(kind) => format!("{kind}: {message}"),
                    None => message.to_string(),
                };
                return Err(LlmError::Remote {
                    provider: PROVIDER,
                    message,
                });
            }
            // `ping`, and event types added after this was written.
            _ => {}
        }
        Ok(false)
    }

    fn close(&mut self, index: u64, block: OpenBlock) -> Result<(), LlmError> {
        match block {
            OpenBlock::Text(text) if !text.is_empty() => {
                self.done.push((index, ContentBlock::Text { text }));
            }
            OpenBlock::ToolUse {
                id,
                name,
                initial,
                json,
            } => {
                let input = if json.trim().is_empty() {
                    match initial {
                        Value::Object(_) => initial,
                        _ => Value::Object(Map::new()),
                    }
                } else {
                    serde_json::from_str(&json).map_err(|e| {
                        malformed(format!(
                            "invalid JSON arguments for tool `{name}` ({e}): `{}`",
                            excerpt(&json, 120)
                        ))
                    })?
                };
                self.done
                    .push((index, ContentBlock::ToolUse { id, name, input }));
            }
            _ => {}
        }
        Ok(())
    }

    /// `message_start` and `message_delta` both carry running totals.
    fn read_usage(&mut self, usage: &Value) {
        let field = |name: &str| usage.get(name).and_then(Value::as_u64);
        // Cached prompt tokens are still prompt tokens.
        let input = [
            "input_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        ]
        .iter()
        .filter_map(|name| field(name))
        .reduce(|a, b| a.saturating_add(b));
        if let Some(input) = input {
            self.usage.input_tokens = input;
        }
        if let Some(output) = field("output_tokens") {
            self.usage.output_tokens = output;
        }
    }

    fn finish(mut self) -> Result<ChatResponse, LlmError> {
        // Blocks left open at message_stop are complete as far as the model is concerned.
        for (index, block) in std::mem::take(&mut self.open) {
            self.close(index, block)?;
        }
        self.done.sort_by_key(|(index, _)| *index);
        let content: Vec<ContentBlock> = self.done.into_iter().map(|(_, b)| b).collect();
        let stop_reason = self.stop_reason.unwrap_or_else(|| {
            if content
                .iter()
                .any(|b| matches!(b, ContentBlock::ToolUse { .. }))
            {
                StopReason::ToolUse
            } else {
                StopReason::EndTurn
            }
        });
        Ok(ChatResponse {
            content,
            stop_reason,
            usage: self.usage,
            model: self.model,
        })
    }
}

fn block_index(data: &Value, kind: &str) -> Result<u64, LlmError> {
    data.get("index")
        .and_then(Value::as_u64)
        .ok_or_else(|| malformed(format!("`{kind}` event without a block index")))
}

fn str_field<'a>(value: &'a Value, name: &str) -> Option<&'a str> {
    value.get(name).and_then(Value::as_str)
}

fn malformed(message: String) -> LlmError {
    LlmError::Malformed {
        provider: PROVIDER,
        message,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::llm::{Message, ToolSpec};

    fn event(name: &str, data: Value) -> Event {
        Event {
            event: name.into(),
            data: data.to_string(),
            ..Default::default()
        }
    }

    fn run(events: &[Event]) -> (Result<ChatResponse, LlmError>, Vec<String>) {
        let seen = Mutex::new(Vec::new());
        let sink = |t: &str| seen.lock().unwrap().push(t.to_string());
        let mut parser = StreamParser::new("requested");
        let mut result = Err(malformed("stream ended early".into()));
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
    fn text_and_tool_use() {
        let events = [
            event(
                "message_start",
                json!({"type": "message_start", "message": {"model": "claude-x",
                    "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 1}}}),
            ),
            event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
            ),
            event("ping", json!({"type": "ping"})),
            event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": "Hi "}}),
            ),
            event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": "there"}}),
            ),
            event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 1,
                "content_block": {"type": "tool_use", "id": "t1", "name": "read", "input": {}}}),
            ),
            event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": "{\"pa"}}),
            ),
            event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": "th\": \"/a\"}"}}),
            ),
            event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 1}),
            ),
            event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 2,
                "content_block": {"type": "tool_use", "id": "t2", "name": "list", "input": {}}}),
            ),
            event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 2,
                "delta": {"type": "input_json_delta", "partial_json": ""}}),
            ),
            event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 2}),
            ),
            event(
                "message_delta",
                json!({"type": "message_delta",
                "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 42}}),
            ),
            event("message_stop", json!({"type": "message_stop"})),
        ];
        let (result, seen) = run(&events);
        let response = result.unwrap();
        assert_eq!(seen, ["Hi ", "there"]);
        assert_eq!(response.text(), "Hi there");
        assert_eq!(response.model, "claude-x");
        assert_eq!(response.stop_reason, StopReason::ToolUse);
        assert_eq!(
            response.usage,
            TokenUsage {
                input_tokens: 15,
                output_tokens: 42
            }
        );
        let calls: Vec<_> = response.tool_uses().collect();
        assert_eq!(calls[0], ("t1", "read", &json!({"path": "/a"})));
        assert_eq!(calls[1], ("t2", "list", &json!({})));
    }

    #[test]
    fn errors_are_clear() {
        let (result, _) = run(&[event(
            "error",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        )]);
        let err = result.unwrap_err();
        assert!(matches!(err, LlmError::Remote { .. }));
        assert!(err.to_string().contains("overloaded_error: Overloaded"));

        let bad = Event {
            event: "content_block_delta".into(),
            data: "{\"type\": ".into(),
            ..Default::default()
        };
        let err = run(&[bad]).0.unwrap_err().to_string();
        assert!(
            err.contains("content_block_delta") && err.contains("{\"type\":"),
            "{err}"
        );

        let err = run(&[
            event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "tool_use", "id": "t1", "name": "read", "input": {}}}),
            ),
            event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": "{\"path\": "}}),
            ),
            event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
        ])
        .0
        .unwrap_err()
        .to_string();
        assert!(err.contains("tool `read`"), "{err}");
    }

    #[test]
    fn odd_inputs_never_panic() {
        let samples = [
            json!(null),
            json!([]),
            json!({"index": -1}),
            json!({"index": 0, "delta": {"type": "text_delta", "text": 5}}),
            json!({"index": 0, "content_block": {"type": "tool_use"}}),
            json!({"message": "x", "usage": {"output_tokens": "many"}}),
        ];
        for name in [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message",
            "error",
        ] {
            for data in &samples {
                let _ = run(&[event(name, data.clone())]);
            }
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
                    content: vec![ContentBlock::ToolUse {
                        id: "t1".into(),
                        name: "read".into(),
                        input: json!({"path": "/a"}),
                    }],
                },
                Message {
                    role: Role::User,
                    content: vec![ContentBlock::ToolResult {
                        tool_use_id: "t1".into(),
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
        let body = request_body("m", &request);
        assert_eq!(
            body,
            json!({
                "model": "m", "max_tokens": 100, "stream": true, "system": "be brief",
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t1",
                        "name": "read", "input": {"path": "/a"}}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                        "content": "nope", "is_error": true}]},
                ],
                "tools": [{"name": "read", "description": "reads",
                    "input_schema": {"type": "object"}}],
            })
        );
    }
}
