//! What a run returns, and how it fails.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::llm::{LlmError, TokenUsage};
use crate::skill::SkillError;

/// One tool call the agent made.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCallRecord {
    /// Call id.
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Arguments as they ran (after hooks).
    pub arguments: Value,
    /// First line(s) of the result.
    pub summary: String,
    /// Failed or refused.
    pub is_error: bool,
    /// Wall time.
    #[serde(rename = "duration_ms", serialize_with = "crate::millis::serialize")]
    pub duration: Duration,
}

/// The outcome of a successful run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunResult {
    /// Box name.
    pub box_name: String,
    /// The final answer.
    pub text: String,
    /// The validated JSON answer, when the box has an output schema.
    pub output: Option<Value>,
    /// The contents of the box's declared output file, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Every tool call, in order.
    pub tool_calls: Vec<ToolCallRecord>,
    /// Tokens used.
    pub usage: TokenUsage,
    /// Cost in USD, when the model's price is known.
    pub cost_usd: Option<f64>,
    /// Model turns taken.
    pub turns: u32,
    /// Wall time, boot included.
    #[serde(rename = "duration_ms", serialize_with = "crate::millis::serialize")]
    pub duration: Duration,
    /// The model that answered.
    pub model: String,
    /// What isolated the box's sandbox: `kvm`, or `tcg` (software
    /// emulation, not hardware isolation).
    pub accel: crate::vm::Accel,
}

impl RunResult {
    /// What the next stage receives: the declared output file's contents,
    /// else the JSON output, else the text.
    pub fn handoff(&self) -> String {
        match (&self.file, &self.output) {
            (Some(file), _) => file.clone(),
            (None, Some(v)) => v.to_string(),
            (None, None) => self.text.clone(),
        }
    }
}

/// Why a box could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The box's configuration is invalid.
    #[error("box `{box_name}`: {message}")]
    Config {
        /// Box name.
        box_name: String,
        /// What is wrong.
        message: String,
    },
    /// A skill could not be provisioned.
    #[error("box `{box_name}`: {source}")]
    Skill {
        /// Box name.
        box_name: String,
        /// The skill's error.
        #[source]
        source: SkillError,
    },
    /// The sandbox failed.
    #[error("box `{box_name}`: sandbox: {source}")]
    Sandbox {
        /// Box name.
        box_name: String,
        /// The sandbox's error.
        #[source]
        source: crate::Error,
    },
    /// The model call failed.
    #[error("box `{box_name}`: LLM: {source}")]
    Llm {
        /// Box name.
        box_name: String,
        /// The provider's error.
        #[source]
        source: LlmError,
    },
    /// The agent did not finish within its turn budget.
    #[error("box `{box_name}`: no final answer after {max_turns} turns")]
    MaxTurns {
        /// Box name.
        box_name: String,
        /// The budget.
        max_turns: u32,
    },
    /// The final answer never validated against the output schema.
    #[error("box `{box_name}`: output does not match the schema after {attempts} attempt(s): {}", errors.join("; "))]
    InvalidOutput {
        /// Box name.
        box_name: String,
        /// Answers checked.
        attempts: u32,
        /// The last validation errors.
        errors: Vec<String>,
    },
    /// The reasoning engine (claude-code) failed.
    #[error("box `{box_name}`: {engine}: {message}")]
    Engine {
        /// Box name.
        box_name: String,
        /// Engine name.
        engine: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The whole run took longer than the box's timeout.
    #[error("box `{box_name}`: run timed out after {after:?}")]
    Timeout {
        /// Box name.
        box_name: String,
        /// The limit.
        after: Duration,
    },
}
