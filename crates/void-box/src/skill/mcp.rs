//! MCP skills: an MCP server started over stdio inside the guest, driven
//! from the host with the official Rust SDK (`rmcp`). Its tools become
//! agent tools.

use std::time::Duration;

use serde_json::Value;

use crate::llm::ToolSpec;
use crate::Sandbox;

/// What an MCP tool call returned.
#[derive(Debug, Clone, PartialEq)]
pub struct McpCallResult {
    /// The text content of the result (non-text parts summarised).
    pub text: String,
    /// The server flagged the call as failed.
    pub is_error: bool,
}

/// A running MCP server in a sandbox.
#[derive(Debug)]
pub struct McpSession {
    name: String,
    tools: Vec<ToolSpec>,
}

impl McpSession {
    /// Starts `command args..` in the guest (stdin/stdout are the MCP stdio
    /// transport), initializes the session and lists its tools, all within
    /// `deadline`.
    pub async fn start(
        _sandbox: &Sandbox,
        name: &str,
        _command: &str,
        _args: &[String],
        _deadline: Duration,
    ) -> crate::Result<McpSession> {
        Err(crate::Error::Launch(format!(
            "MCP skill `{name}`: not implemented yet"
        )))
    }

    /// The skill's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server's tools, as the server describes them.
    pub fn tools(&self) -> &[ToolSpec] {
        &self.tools
    }

    /// Calls one tool, within `deadline`.
    pub async fn call(
        &self,
        tool: &str,
        _arguments: Value,
        _deadline: Duration,
    ) -> crate::Result<McpCallResult> {
        Err(crate::Error::Launch(format!(
            "MCP tool `{tool}`: not implemented yet"
        )))
    }

    /// Ends the session and the server process.
    pub async fn close(self) {}
}
