//! MCP skills: an MCP server started over stdio inside the guest, driven
//! from the host with the official Rust SDK (`rmcp`). Its tools become
//! agent tools.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ContentBlock,
    Implementation, PaginatedRequestParams, ResourceContents, Tool,
};
use rmcp::service::{RunningService, ServiceError};
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;

use super::stdio::GuestStdio;
use crate::llm::ToolSpec;
use crate::{Error, Exec, Sandbox};

/// Longest tool name the model APIs accept.
const MAX_TOOL_NAME: usize = 64;
/// How long [`McpSession::close`] lets the server exit on its own after its
/// stdin closes, before killing it.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How long [`McpSession::close`] waits for the guest to report the kill.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// What an MCP tool call returned.
#[derive(Debug, Clone, PartialEq)]
pub struct McpCallResult {
    /// The text content of the result (non-text parts summarised).
    pub text: String,
    /// The server flagged the call as failed.
    pub is_error: bool,
}

/// A running MCP server in a sandbox.
///
/// Dropping the session kills the server and stops every task it started;
/// [`close`](Self::close) first lets the server exit on its own.
pub struct McpSession {
    name: String,
    tools: Vec<ToolSpec>,
    /// Agent-facing tool name → the server's name for it.
    real_names: HashMap<String, String>,
    client: RunningService<RoleClient, ClientConfig>,
    stdio: GuestStdio,
}

impl fmt::Debug for McpSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpSession")
            .field("name", &self.name)
            .field("tools", &self.tools)
            .finish_non_exhaustive()
    }
}

impl McpSession {
    /// Starts `command args..` in the guest (stdin/stdout are the MCP stdio
    /// transport), initializes the session and lists its tools, all within
    /// `deadline`.
    ///
    /// Tools are named `mcp__<skill>__<tool>` for the agent (only
    /// `[a-zA-Z0-9_-]`, at most 64 characters). A server that exits, breaks
    /// the protocol or does not answer in time fails with an error naming
    /// the skill and quoting the server's stderr.
    pub async fn start(
        sandbox: &Sandbox,
        name: &str,
        command: &str,
        args: &[String],
        deadline: Duration,
    ) -> crate::Result<McpSession> {
        let started = Instant::now();
        let exec = Exec::new(command).args(args.iter().cloned()).stdin_stream();
        let stream = match tokio::time::timeout(deadline, sandbox.exec_stream(exec)).await {
            Ok(Ok(stream)) => stream,
            // The guest's refusal (not allowed, not found) keeps its kind.
            Ok(Err(Error::Guest { kind, message })) => {
                return Err(Error::Guest {
                    kind,
                    message: format!("MCP skill `{name}`: cannot start `{command}`: {message}"),
                })
            }
            Ok(Err(e)) => return Err(skill_error(name, format!("cannot start `{command}`: {e}"))),
            Err(_) => {
                return Err(Error::Timeout(format!(
                    "MCP skill `{name}`: the guest did not start `{command}` within {deadline:?}"
                )))
            }
        };
        let (stdio, stdout, stdin) = GuestStdio::start(stream);
        let handshake = async {
            let client = client_config()
                .serve((stdout, stdin))
                .await
                .map_err(|e| format!("initialize failed: {e}"))?;
            let tools = list_tools(&client, name).await?;
            Ok::<_, String>((client, tools))
        };
        let remaining = deadline.saturating_sub(started.elapsed());
        let (client, listed) = match tokio::time::timeout(remaining, handshake).await {
            Ok(Ok(done)) => done,
            // Dropping `stdio` on the way out kills the server.
            Ok(Err(what)) => return Err(skill_error(name, startup_failure(&stdio, what))),
            Err(_) => {
                let what = format!(
                    "the MCP server did not complete initialize and tools/list within {deadline:?}"
                );
                return Err(Error::Timeout(format!(
                    "MCP skill `{name}`: {}",
                    startup_failure(&stdio, what)
                )));
            }
        };
        let (tools, real_names) = agent_tools(name, listed);
        tracing::debug!(
            skill = name,
            tools = tools.len(),
            elapsed = ?started.elapsed(),
            "MCP session started"
        );
        Ok(McpSession {
            name: name.to_string(),
            tools,
            real_names,
            client,
            stdio,
        })
    }

    /// The skill's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server's tools, as the server describes them, under their
    /// agent-facing names (`mcp__<skill>__<tool>`).
    pub fn tools(&self) -> &[ToolSpec] {
        &self.tools
    }

    /// Calls one tool, by its agent-facing name, within `deadline`.
    ///
    /// `arguments` is a JSON object (or null for none). A JSON-RPC error the
    /// server answers (unknown tool, invalid arguments) comes back as a
    /// result with `is_error`, for the model to correct; a dead or silent
    /// server is an `Err`.
    pub async fn call(
        &self,
        tool: &str,
        arguments: Value,
        deadline: Duration,
    ) -> crate::Result<McpCallResult> {
        let Some(real) = self.real_names.get(tool) else {
            return Err(skill_error(
                &self.name,
                format!("no tool `{tool}` in this MCP session"),
            ));
        };
        let mut params = CallToolRequestParams::new(real.clone());
        match arguments {
            Value::Null => {}
            Value::Object(map) => params = params.with_arguments(map),
            other => {
                return Err(skill_error(
                    &self.name,
                    format!("arguments of `{tool}` must be a JSON object, not {other}"),
                ))
            }
        }
        match tokio::time::timeout(deadline, self.client.call_tool(params)).await {
            Ok(Ok(result)) => Ok(call_result(result)),
            Ok(Err(ServiceError::McpError(e))) => Ok(McpCallResult {
                text: format!("MCP error {}: {}", e.code.0, e.message),
                is_error: true,
            }),
            Ok(Err(e)) => Err(skill_error(
                &self.name,
                self.session_failure(format!("calling `{real}` failed: {e}")),
            )),
            // Dropping the call sent the server a cancellation.
            Err(_) => Err(Error::Timeout(format!(
                "MCP skill `{}`: `{real}` did not answer within {deadline:?}",
                self.name
            ))),
        }
    }

    /// Ends the session: closes the server's stdin, gives it a moment to
    /// exit, then kills it, and waits (boundedly) until the guest reports it
    /// gone.
    pub async fn close(self) {
        let McpSession {
            name,
            mut client,
            stdio,
            ..
        } = self;
        // Cancelling the client closes the transport, hence the server's stdin.
        let _ = client.close_with_timeout(CLOSE_GRACE).await;
        if !stdio.wait_end(CLOSE_GRACE).await {
            stdio.cancel();
            if !stdio.wait_end(KILL_WAIT).await {
                tracing::warn!(
                    skill = name,
                    "the guest did not report the MCP server's end"
                );
            }
        }
        // Dropping `stdio` stops the pumps.
    }

    /// Why the session broke, with the server's end and stderr tail.
    fn session_failure(&self, what: String) -> String {
        let mut message = what;
        if let Some(end) = self.stdio.end() {
            message.push_str(&format!("; the MCP server {end}"));
        }
        message + &stderr_section(&self.stdio)
    }
}

/// How we introduce ourselves to servers.
fn client_config() -> ClientConfig {
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("void-box", env!("CARGO_PKG_VERSION")),
    )
}

fn skill_error(skill: &str, message: String) -> Error {
    Error::Skill {
        skill: skill.to_string(),
        message,
    }
}

/// Why starting failed: what went wrong, how the server ended, and what it
/// printed (stdout too: a server that is not one prints something else).
fn startup_failure(stdio: &GuestStdio, what: String) -> String {
    let mut message = what;
    match stdio.end() {
        Some(end) => message.push_str(&format!("; the MCP server {end}")),
        None => message.push_str("; the MCP server was still running"),
    }
    let stdout = stdio.stdout_tail();
    if !stdout.trim().is_empty() {
        message.push_str(&format!(
            "\n--- server stdout (tail) ---\n{}",
            stdout.trim_end()
        ));
    }
    message + &stderr_section(stdio)
}

fn stderr_section(stdio: &GuestStdio) -> String {
    let stderr = stdio.stderr_tail();
    if stderr.trim().is_empty() {
        "; it wrote nothing to stderr".into()
    } else {
        format!("\n--- server stderr (tail) ---\n{}", stderr.trim_end())
    }
}

/// What one MCP server may put into every model request: its tool list
/// goes there whole, so a hostile server could otherwise inflate each
/// request's cost without end or fill it with instructions.
const MAX_TOOLS: usize = 128;
/// Pages of `tools/list` followed.
const MAX_TOOL_PAGES: usize = 16;
/// Bytes of one tool's description (longer ones are cut).
const MAX_DESCRIPTION: usize = 4096;
/// Bytes of one tool's input schema as JSON (tools with larger ones are left out).
const MAX_SCHEMA: usize = 32 * 1024;

/// The server's tools: pages of `tools/list` until the last, or until
/// [`MAX_TOOL_PAGES`] pages or [`MAX_TOOLS`] tools.
async fn list_tools(
    client: &rmcp::Peer<RoleClient>,
    skill: &str,
) -> std::result::Result<Vec<Tool>, String> {
    let mut tools = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0..MAX_TOOL_PAGES {
        let params =
            (page > 0).then(|| PaginatedRequestParams::default().with_cursor(cursor.take()));
        let listed = client
            .list_tools(params)
            .await
            .map_err(|e| format!("listing tools failed: {e}"))?;
        tools.extend(listed.tools);
        if tools.len() > MAX_TOOLS {
            break;
        }
        match listed.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(tools),
        }
    }
    tracing::warn!(
        skill,
        "the MCP server lists more than {MAX_TOOLS} tools or {MAX_TOOL_PAGES} pages; the rest are left out"
    );
    Ok(tools)
}

/// The agent-facing specs of `tools` (at most [`MAX_TOOLS`], descriptions
/// cut at [`MAX_DESCRIPTION`], none with a schema over [`MAX_SCHEMA`]) and
/// the map back to their real names.
fn agent_tools(skill: &str, tools: Vec<Tool>) -> (Vec<ToolSpec>, HashMap<String, String>) {
    let mut specs = Vec::with_capacity(tools.len().min(MAX_TOOLS));
    let mut real_names = HashMap::new();
    for tool in tools {
        if specs.len() == MAX_TOOLS {
            tracing::warn!(
                skill,
                "more than {MAX_TOOLS} MCP tools; the rest are left out"
            );
            break;
        }
        if real_names.values().any(|real| *real == tool.name) {
            continue; // listed twice
        }
        let input_schema = Value::Object((*tool.input_schema).clone());
        let schema_len = serde_json::to_vec(&input_schema).map_or(usize::MAX, |j| j.len());
        if schema_len > MAX_SCHEMA {
            tracing::warn!(
                skill,
                tool = %tool.name,
                "left out: its input schema is {schema_len} bytes (limit {MAX_SCHEMA})"
            );
            continue;
        }
        let name = unique_name(&agent_tool_name(skill, &tool.name), &real_names);
        real_names.insert(name.clone(), tool.name.to_string());
        let description = tool
            .description
            .map(|d| d.into_owned())
            .or(tool.title)
            .unwrap_or_default();
        specs.push(ToolSpec {
            name,
            description: cut(description, MAX_DESCRIPTION),
            input_schema,
        });
    }
    (specs, real_names)
}

/// `text` cut to at most `max` bytes, on a character boundary, marked.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max.saturating_sub(3);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

/// `mcp__<skill>__<tool>`, other characters replaced by `_`, cut to 64.
fn agent_tool_name(skill: &str, tool: &str) -> String {
    let mut name: String = format!("mcp__{skill}__{tool}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    // Only ASCII is left, so any byte index is a char boundary.
    name.truncate(MAX_TOOL_NAME);
    name
}

/// `name`, or, when sanitizing or cutting made it collide, `name` with a
/// numbered suffix (still at most 64 characters).
fn unique_name(name: &str, taken: &HashMap<String, String>) -> String {
    if !taken.contains_key(name) {
        return name.to_string();
    }
    (2..)
        .map(|n| {
            let suffix = format!("_{n}");
            let keep = name.len().min(MAX_TOOL_NAME - suffix.len());
            format!("{}{suffix}", &name[..keep])
        })
        .find(|candidate| !taken.contains_key(candidate))
        .expect("some suffix is free")
}

/// Text parts joined by newlines; other parts summarised.
fn call_result(result: CallToolResult) -> McpCallResult {
    let mut parts: Vec<String> = result.content.iter().map(content_text).collect();
    if parts.is_empty() {
        if let Some(structured) = &result.structured_content {
            parts.push(structured.to_string());
        }
    }
    McpCallResult {
        text: parts.join("\n"),
        is_error: result.is_error.unwrap_or(false),
    }
}

fn content_text(content: &ContentBlock) -> String {
    match content {
        ContentBlock::Text(text) => text.text.clone(),
        ContentBlock::Image(image) => format!("[image: {}]", image.mime_type),
        ContentBlock::Audio(audio) => format!("[audio: {}]", audio.mime_type),
        ContentBlock::Resource(embedded) => match &embedded.resource {
            ResourceContents::TextResourceContents { text, .. } => text.clone(),
            ResourceContents::BlobResourceContents { uri, mime_type, .. } => format!(
                "[resource: {uri} ({})]",
                mime_type.as_deref().unwrap_or("binary")
            ),
            _ => "[resource]".into(),
        },
        ContentBlock::ResourceLink(link) => format!("[resource link: {}]", link.uri),
        #[allow(unreachable_patterns)]
        _ => "[unsupported content]".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str) -> Tool {
        serde_json::from_value(serde_json::json!({
            "name": name,
            "description": format!("does {name}"),
            "inputSchema": {"type": "object"}
        }))
        .unwrap()
    }

    #[test]
    fn a_server_cannot_inflate_every_model_request() {
        let mut tools: Vec<Tool> = (0..300).map(|i| tool(&format!("t{i}"))).collect();
        tools[0].description = Some("é".repeat(10_000).into());
        let huge: serde_json::Map<String, Value> = (0..5000)
            .map(|i| (format!("field{i}"), serde_json::json!({"type": "string"})))
            .collect();
        tools[1].input_schema = std::sync::Arc::new(huge);
        let (specs, real) = agent_tools("s", tools);
        assert_eq!(specs.len(), MAX_TOOLS);
        assert_eq!(real.len(), MAX_TOOLS);
        assert!(specs[0].description.len() <= MAX_DESCRIPTION);
        assert!(specs[0].description.ends_with("..."));
        assert!(
            !real.values().any(|r| r == "t1"),
            "the huge schema is left out"
        );
        let total: usize = specs
            .iter()
            .map(|t| t.description.len() + t.input_schema.to_string().len())
            .sum();
        assert!(total < MAX_TOOLS * (MAX_DESCRIPTION + MAX_SCHEMA));
    }

    #[test]
    fn sessions_can_move_between_tasks() {
        fn shareable<T: Send + Sync>() {}
        shareable::<McpSession>();
    }

    #[test]
    fn names_are_prefixed_sanitized_and_cut() {
        assert_eq!(agent_tool_name("calc", "add"), "mcp__calc__add");
        assert_eq!(
            agent_tool_name("my skill", "files/read.v2"),
            "mcp__my_skill__files_read_v2"
        );
        assert_eq!(agent_tool_name("é", "x"), "mcp_____x");
        let long = agent_tool_name("s", &"t".repeat(100));
        assert_eq!(long.len(), 64);
        assert!(long.starts_with("mcp__s__ttt"));
    }

    #[test]
    fn colliding_names_get_suffixes_and_map_back() {
        let long_a = format!("{}a", "t".repeat(70));
        let long_b = format!("{}b", "t".repeat(70));
        let (specs, real) = agent_tools(
            "s",
            vec![
                tool("a.b"),
                tool("a/b"),
                tool(&long_a),
                tool(&long_b),
                tool("a.b"),
            ],
        );
        let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names.len(), 4, "{names:?}");
        assert_eq!(names[0], "mcp__s__a_b");
        assert_eq!(names[1], "mcp__s__a_b_2");
        assert_eq!(names[2].len(), 64);
        assert!(
            names[3].ends_with("_2") && names[3].len() == 64,
            "{names:?}"
        );
        assert_eq!(real["mcp__s__a_b"], "a.b");
        assert_eq!(real["mcp__s__a_b_2"], "a/b");
        assert_eq!(real[names[3]], long_b);
        assert_eq!(specs[0].description, "does a.b");
        assert_eq!(specs[0].input_schema, serde_json::json!({"type": "object"}));
    }

    #[test]
    fn results_join_text_and_summarise_the_rest() {
        let result: CallToolResult = serde_json::from_value(serde_json::json!({
            "content": [
                {"type": "text", "text": "one"},
                {"type": "image", "data": "AAAA", "mimeType": "image/png"},
                {"type": "text", "text": "two"}
            ],
            "isError": true
        }))
        .unwrap();
        assert_eq!(
            call_result(result),
            McpCallResult {
                text: "one\n[image: image/png]\ntwo".into(),
                is_error: true
            }
        );
        let structured: CallToolResult = serde_json::from_value(serde_json::json!({
            "content": [],
            "structuredContent": {"sum": 7}
        }))
        .unwrap();
        assert_eq!(call_result(structured).text, r#"{"sum":7}"#);
    }
}
