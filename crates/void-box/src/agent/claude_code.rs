//! The claude-code engine: the claude-code CLI runs inside the guest with
//! `--output-format stream-json`; its stream becomes our result and events.
//!
//! The CLI talks to the box's model itself, through the sandbox's network:
//! [`model_route`] names the endpoint as the guest sees it (the host's
//! loopback becomes `host.voidbox.internal`), and the key goes in as an
//! edge secret, so the guest holds a placeholder that is worth nothing
//! anywhere but on that route.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use super::tools::summarize;
use super::{AgentError, Decision, RunResult, ToolCallRecord, VoidBox};
use crate::event::{EventSink, RunEvent};
use crate::llm::{price_per_million, LlmProvider, ProviderKind, TokenUsage};
use crate::net::HOST_ALIAS;
use crate::skill::Provisioned;
use crate::{Exec, ExecEvent, Sandbox, WORKSPACE_DIR};

const ENGINE: &str = "claude-code";
/// A stream-json line longer than this is a broken stream, not a message.
const MAX_LINE: usize = 4 << 20;
const STDERR_TAIL: usize = 4096;
/// When the box sets no run timeout, claude-code gets this long.
const DEFAULT_RUN_LIMIT: Duration = Duration::from_secs(30 * 60);
/// claude-code's home in the guest: writable by any command user, image
/// or not.
const HOME: &str = "/tmp/claude-home";
/// What keeps claude-code to the model API: no telemetry, error reports,
/// update checks or other non-essential traffic (which the network would
/// refuse anyway). A box's own `env` overrides them.
pub(super) const QUIET_ENV: [(&str, &str); 4] = [
    ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
    ("DISABLE_TELEMETRY", "1"),
    ("DISABLE_ERROR_REPORTING", "1"),
    ("DISABLE_AUTOUPDATER", "1"),
];

/// How claude-code in the guest reaches the box's model.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ModelRoute {
    /// `ANTHROPIC_BASE_URL` as the guest names it.
    pub base_url: String,
    /// The `HOST:PORT` rule that lets the guest reach it.
    pub host_rule: String,
    /// The key the edge swaps in for the guest's placeholder.
    pub key: Option<String>,
}

/// The route to `llm` for claude-code in the guest; `None` for the mock
/// model (nothing to reach). claude-code speaks only Anthropic's API, and
/// a secret goes to a name, so an endpoint given as an address other than
/// the host's loopback is refused.
pub(super) fn model_route(llm: &LlmProvider) -> Result<Option<ModelRoute>, String> {
    match llm.kind() {
        ProviderKind::Mock(_) => return Ok(None),
        ProviderKind::OpenAi => {
            return Err(format!(
                "claude-code speaks Anthropic's Messages API; {} is an OpenAI-style provider",
                llm.provider_name()
            ))
        }
        ProviderKind::Anthropic => {}
    }
    let endpoint = llm.endpoint();
    let mut url = reqwest::Url::parse(endpoint)
        .map_err(|e| format!("the model's endpoint `{endpoint}`: {e}"))?;
    let (host, port) = match (url.host_str(), url.port_or_known_default()) {
        (Some(host), Some(port)) => (host.to_ascii_lowercase(), port),
        _ => return Err(format!("the model's endpoint `{endpoint}` has no host")),
    };
    let address = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>();
    let guest_host = match address {
        Ok(ip) if ip.is_loopback() => HOST_ALIAS.to_string(),
        Err(_) if host == "localhost" => HOST_ALIAS.to_string(),
        Err(_) => host,
        Ok(_) => {
            return Err(format!(
                "the model's endpoint `{endpoint}` is an address; name it by host name \
                 (its key goes only to names)"
            ))
        }
    };
    url.set_host(Some(&guest_host))
        .map_err(|e| format!("the model's endpoint `{endpoint}`: {e}"))?;
    let key = llm.api_key().map_err(|e| e.to_string())?;
    Ok(Some(ModelRoute {
        base_url: url.as_str().trim_end_matches('/').to_string(),
        host_rule: format!("{guest_host}:{port}"),
        key,
    }))
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamLine {
    System {
        #[serde(default)]
        model: Option<String>,
    },
    Assistant {
        message: StreamMessage,
    },
    User {
        message: StreamMessage,
    },
    Result(ResultLine),
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct StreamMessage {
    #[serde(default)]
    content: Vec<Value>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct Usage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_creation_input_tokens: u64,
    #[serde(default)]
    cache_read_input_tokens: u64,
}

impl Usage {
    fn tokens(self) -> TokenUsage {
        TokenUsage {
            input_tokens: self.input_tokens
                + self.cache_creation_input_tokens
                + self.cache_read_input_tokens,
            output_tokens: self.output_tokens,
        }
    }
}

#[derive(Deserialize)]
struct ResultLine {
    #[serde(default)]
    subtype: String,
    #[serde(default)]
    is_error: bool,
    #[serde(default)]
    result: Option<String>,
    #[serde(default)]
    num_turns: Option<u32>,
    #[serde(default)]
    total_cost_usd: Option<f64>,
    #[serde(default)]
    usage: Option<Usage>,
}

/// Folds stream-json lines into events and a result.
struct Parser<'a> {
    box_name: &'a str,
    events: &'a EventSink,
    model: String,
    usage: TokenUsage,
    turns: u32,
    pending: HashMap<String, (String, Value, Instant)>,
    records: Vec<ToolCallRecord>,
    text: String,
    result: Option<ResultLine>,
}

impl Parser<'_> {
    fn line(&mut self, line: &str) -> Result<(), String> {
        let line = line.trim();
        if line.is_empty() {
            return Ok(());
        }
        let parsed: StreamLine = serde_json::from_str(line).map_err(|e| {
            let excerpt: String = line.chars().take(120).collect();
            format!("not stream-json ({e}): {excerpt}")
        })?;
        match parsed {
            StreamLine::System { model } => {
                if let Some(m) = model {
                    self.model = m;
                }
            }
            StreamLine::Assistant { message } => {
                self.turns += 1;
                if let Some(m) = message.model {
                    self.model = m;
                }
                if let Some(u) = message.usage {
                    self.usage += u.tokens();
                    self.emit_usage();
                }
                for block in message.content {
                    match block.get("type").and_then(Value::as_str) {
                        Some("text") => {
                            let text = block["text"].as_str().unwrap_or_default().to_string();
                            self.text = text.clone();
                            self.events.emit(RunEvent::TextDelta {
                                box_name: self.box_name.into(),
                                text,
                            });
                        }
                        Some("tool_use") => {
                            let id = block["id"].as_str().unwrap_or_default().to_string();
                            let name = block["name"].as_str().unwrap_or_default().to_string();
                            let input = block.get("input").cloned().unwrap_or(Value::Null);
                            self.events.emit(RunEvent::ToolCallStarted {
                                box_name: self.box_name.into(),
                                id: id.clone(),
                                name: name.clone(),
                                arguments: input.clone(),
                            });
                            self.pending.insert(id, (name, input, Instant::now()));
                        }
                        _ => {}
                    }
                }
            }
            StreamLine::User { message } => {
                for block in message.content {
                    if block.get("type").and_then(Value::as_str) != Some("tool_result") {
                        continue;
                    }
                    let id = block["tool_use_id"].as_str().unwrap_or_default();
                    let Some((name, arguments, started)) = self.pending.remove(id) else {
                        continue;
                    };
                    let summary = summarize(&result_text(&block["content"]));
                    let is_error = block["is_error"].as_bool().unwrap_or(false);
                    let duration = started.elapsed();
                    self.events.emit(RunEvent::ToolCallFinished {
                        box_name: self.box_name.into(),
                        id: id.into(),
                        name: name.clone(),
                        summary: summary.clone(),
                        is_error,
                        duration,
                    });
                    self.records.push(ToolCallRecord {
                        id: id.into(),
                        name,
                        arguments,
                        summary,
                        is_error,
                        duration,
                    });
                }
            }
            StreamLine::Result(result) => self.result = Some(result),
            StreamLine::Other => {}
        }
        Ok(())
    }

    fn emit_usage(&self) {
        self.events.emit(RunEvent::Usage {
            box_name: self.box_name.into(),
            total: self.usage,
            cost_usd: price_per_million(&self.model)
                .map(|p| p.cost(self.usage.input_tokens, self.usage.output_tokens)),
        });
    }
}

/// A tool result's content: a string, or a list of text parts.
fn result_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}

fn argv(vbox: &VoidBox, skills: &Provisioned, input: Option<&str>) -> Vec<String> {
    let c = &vbox.inner.config;
    let mut args = vec![
        "-p".to_string(),
        vbox.task(input),
        "--output-format".into(),
        "stream-json".into(),
        "--verbose".into(),
        "--max-turns".into(),
        c.max_turns.to_string(),
    ];
    if let Some(llm) = &c.llm {
        if !matches!(llm.kind(), ProviderKind::Mock(_)) {
            args.extend(["--model".into(), llm.model().to_string()]);
        }
    }
    let mut system = skills.announcement();
    if let Some(schema) = &c.output_schema {
        system.push_str(&format!(
            "Your final answer must be only a JSON value that validates against this JSON Schema:\n{}\n",
            schema.schema()
        ));
    }
    if !system.is_empty() {
        args.extend(["--append-system-prompt".into(), system]);
    }
    // claude-code's own rule syntax (`Bash(git *)`) passes through as written.
    let allow: Vec<&str> = c.permissions.allow_rules().collect();
    let deny: Vec<&str> = c.permissions.deny_rules().collect();
    if !allow.is_empty() {
        args.extend(["--allowedTools".into(), allow.join(",")]);
    }
    if !deny.is_empty() {
        args.extend(["--disallowedTools".into(), deny.join(",")]);
    }
    if c.permissions.default == Decision::Allow {
        // The VM is the isolation boundary, as for the built-in engine.
        args.extend(["--permission-mode".into(), "bypassPermissions".into()]);
    }
    args
}

pub(super) async fn run(
    vbox: &VoidBox,
    sandbox: &Sandbox,
    skills: &Provisioned,
    input: Option<&str>,
    events: &EventSink,
) -> Result<RunResult, AgentError> {
    let c = &vbox.inner.config;
    let box_name = c.name.as_str();
    let fail = |message: String| AgentError::Engine {
        box_name: box_name.into(),
        engine: ENGINE,
        message,
    };
    let started = Instant::now();
    let command = &c.claude_code_command;
    let found = sandbox
        .exec(Exec::new("sh").args([
            "-c",
            "command -v \"$1\" && mkdir -p \"$2\"",
            "sh",
            command,
            HOME,
        ]))
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !found.status.success() {
        return Err(fail(format!(
            "`{command}` is not in the guest image; use an image with the claude-code CLI \
             or point .claude_code_command(..) at it"
        )));
    }

    let limit = c.timeout.unwrap_or(DEFAULT_RUN_LIMIT);
    let mut stream = sandbox
        .exec_stream(
            Exec::new(command)
                .args(argv(vbox, skills, input))
                .cwd(WORKSPACE_DIR)
                .env("HOME", HOME)
                .timeout(limit),
        )
        .await
        .map_err(|e| fail(e.to_string()))?;
    let mut parser = Parser {
        box_name,
        events,
        model: c
            .llm
            .as_ref()
            .map(|l| l.model().to_string())
            .unwrap_or_default(),
        usage: TokenUsage::default(),
        turns: 0,
        pending: HashMap::new(),
        records: Vec::new(),
        text: String::new(),
        result: None,
    };
    let mut buffer = Vec::new();
    let mut stderr = Vec::new();
    let status = loop {
        match stream.next().await.map_err(|e| fail(e.to_string()))? {
            Some(ExecEvent::Stdout(chunk)) => {
                buffer.extend_from_slice(&chunk);
                while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    parser
                        .line(&String::from_utf8_lossy(&line))
                        .map_err(&fail)?;
                }
                if buffer.len() > MAX_LINE {
                    let _ = stream.cancel();
                    return Err(fail(format!("a stream-json line exceeds {MAX_LINE} bytes")));
                }
            }
            Some(ExecEvent::Stderr(chunk)) => {
                stderr.extend_from_slice(&chunk);
                let excess = stderr.len().saturating_sub(STDERR_TAIL);
                stderr.drain(..excess);
            }
            Some(ExecEvent::Exit(status)) => break status,
            None => return Err(fail("the stream ended without an exit status".into())),
        }
    };
    parser
        .line(&String::from_utf8_lossy(&buffer))
        .map_err(&fail)?;
    let stderr = String::from_utf8_lossy(&stderr).trim().to_string();
    let Some(result) = parser.result.take() else {
        return Err(fail(format!(
            "exited ({status:?}) without a result message; stderr: {stderr}"
        )));
    };
    if result.is_error || result.subtype != "success" {
        return Err(fail(format!(
            "run failed ({}): {}",
            result.subtype,
            result.result.unwrap_or(stderr)
        )));
    }
    if let Some(u) = result.usage {
        // The result's totals are authoritative over per-message sums.
        parser.usage = u.tokens();
    }
    let text = result.result.unwrap_or(parser.text);
    let output = match &c.output_schema {
        None => None,
        Some(schema) => Some(
            schema
                .check(&text)
                .map_err(|errors| AgentError::InvalidOutput {
                    box_name: box_name.into(),
                    attempts: 1,
                    errors,
                })?,
        ),
    };
    let cost_usd = result.total_cost_usd.or_else(|| {
        price_per_million(&parser.model)
            .map(|p| p.cost(parser.usage.input_tokens, parser.usage.output_tokens))
    });
    Ok(RunResult {
        box_name: box_name.into(),
        text,
        output,
        file: None,
        tool_calls: parser.records,
        usage: parser.usage,
        cost_usd,
        turns: result.num_turns.unwrap_or(parser.turns),
        duration: started.elapsed(),
        model: parser.model,
        accel: sandbox.accel(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(url: &str) -> Result<Option<ModelRoute>, String> {
        model_route(
            &LlmProvider::anthropic("m")
                .base_url(url)
                .api_key_env("VB_CC_ROUTE_KEY"),
        )
    }

    #[test]
    fn the_guest_reaches_the_model_by_name_with_the_key_at_the_edge() {
        std::env::set_var("VB_CC_ROUTE_KEY", "k");
        let local = route("http://127.0.0.1:8123/").unwrap().unwrap();
        assert_eq!(local.base_url, "http://host.voidbox.internal:8123");
        assert_eq!(local.host_rule, "host.voidbox.internal:8123");
        assert_eq!(local.key.as_deref(), Some("k"));
        let local = route("http://localhost:9000").unwrap().unwrap();
        assert_eq!(local.host_rule, "host.voidbox.internal:9000");
        let public = route("https://api.anthropic.com").unwrap().unwrap();
        assert_eq!(public.base_url, "https://api.anthropic.com");
        assert_eq!(public.host_rule, "api.anthropic.com:443");
        let err = route("http://203.0.113.7:80").unwrap_err();
        assert!(err.contains("is an address"), "{err}");
        let err = model_route(&LlmProvider::openai("gpt")).unwrap_err();
        assert!(err.contains("Anthropic"), "{err}");
        assert_eq!(
            model_route(&LlmProvider::mock(crate::llm::MockScript::new(vec![]))).unwrap(),
            None
        );
    }
}
