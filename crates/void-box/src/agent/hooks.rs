//! Pre- and post-tool hooks: code the caller runs around every tool call,
//! able to block or rewrite it.

use std::sync::Arc;

use serde_json::Value;

use super::tools::ToolOutcome;

/// A tool call as a hook sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall<'a> {
    /// The box making it.
    pub box_name: &'a str,
    /// Tool name.
    pub tool: &'a str,
    /// Arguments.
    pub arguments: &'a Value,
}

/// What a pre-tool hook decides.
#[derive(Debug, Clone, PartialEq)]
pub enum PreToolAction {
    /// Run the call as it is.
    Continue,
    /// Refuse it; the model sees this reason.
    Block(String),
    /// Run it with these arguments instead.
    Rewrite(Value),
}

/// What a post-tool hook decides.
#[derive(Debug, Clone, PartialEq)]
pub enum PostToolAction {
    /// Pass the result on.
    Keep,
    /// Show the model this result instead.
    Replace(ToolOutcome),
}

/// Runs before each tool call.
pub type PreToolHook = Arc<dyn Fn(&ToolCall<'_>) -> PreToolAction + Send + Sync>;
/// Runs after each tool call.
pub type PostToolHook = Arc<dyn Fn(&ToolCall<'_>, &ToolOutcome) -> PostToolAction + Send + Sync>;
