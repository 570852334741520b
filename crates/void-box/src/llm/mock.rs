//! The scripted mock provider: deterministic answers and tool calls, so
//! demos and tests run offline.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ChatRequest, ChatResponse, ContentBlock, LlmError, StopReason, TextSink, TokenUsage};

/// One scripted tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockToolCall {
    /// Tool name.
    pub name: String,
    /// Arguments.
    #[serde(default = "empty_object")]
    pub input: Value,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// One scripted model turn: text, then tool calls (none ends the run).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockTurn {
    /// What the model says.
    #[serde(default)]
    pub text: String,
    /// Tools it calls.
    #[serde(default)]
    pub tool_calls: Vec<MockToolCall>,
}

impl MockTurn {
    /// A turn that only answers.
    pub fn text(text: impl Into<String>) -> Self {
        MockTurn {
            text: text.into(),
            tool_calls: Vec::new(),
        }
    }

    /// Adds a tool call.
    pub fn call(mut self, name: &str, input: Value) -> Self {
        self.tool_calls.push(MockToolCall {
            name: name.to_string(),
            input,
        });
        self
    }
}

/// The turns a mock model plays, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockScript {
    /// One entry per model call.
    pub turns: Vec<MockTurn>,
}

impl MockScript {
    /// A script from turns.
    pub fn new(turns: Vec<MockTurn>) -> Self {
        MockScript { turns }
    }

    /// A script of a single answer.
    pub fn reply(text: impl Into<String>) -> Self {
        MockScript::new(vec![MockTurn::text(text)])
    }

    /// Reads a script from a JSON or YAML file: `{turns: [{text, tool_calls: [{name, input}]}]}`.
    pub fn from_file(path: &Path) -> Result<Self, LlmError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| LlmError::Mock(format!("cannot read {}: {e}", path.display())))?;
        serde_saphyr::from_str(&text)
            .map_err(|e| LlmError::Mock(format!("{}: {e}", path.display())))
    }
}

/// A mock model for one run: it plays the next turn on each call.
#[derive(Debug)]
pub struct MockModel {
    script: MockScript,
    next: usize,
}

impl MockModel {
    pub fn new(script: MockScript) -> Self {
        MockModel { script, next: 0 }
    }

    pub fn complete(
        &mut self,
        request: &ChatRequest,
        on_text: TextSink<'_>,
    ) -> Result<ChatResponse, LlmError> {
        // The conversation's own count of model answers picks the turn, so
        // a conversation continued later (a session's next turn) goes on
        // with the script instead of starting it over.
        let answered = request
            .messages
            .iter()
            .filter(|m| m.role == super::Role::Assistant)
            .count();
        let index = self.next.max(answered);
        let Some(turn) = self.script.turns.get(index) else {
            return Err(LlmError::Mock(format!(
                "the script has {} turn(s) and the agent asked for turn {}",
                self.script.turns.len(),
                index + 1
            )));
        };
        self.next += 1;
        let mut content = Vec::new();
        if !turn.text.is_empty() {
            on_text(&turn.text);
            content.push(ContentBlock::Text {
                text: turn.text.clone(),
            });
        }
        for (i, call) in turn.tool_calls.iter().enumerate() {
            content.push(ContentBlock::ToolUse {
                id: format!("mock_{}_{}", index + 1, i + 1),
                name: call.name.clone(),
                input: call.input.clone(),
            });
        }
        // Token counts are estimated (4 bytes a token) so demos show usage.
        let prompt_bytes: usize =
            request.system.len() + serde_json::to_string(&request.messages).map_or(0, |s| s.len());
        let answer_bytes = serde_json::to_string(&content).map_or(0, |s| s.len());
        Ok(ChatResponse {
            stop_reason: if turn.tool_calls.is_empty() {
                StopReason::EndTurn
            } else {
                StopReason::ToolUse
            },
            content,
            usage: TokenUsage {
                input_tokens: prompt_bytes.div_ceil(4) as u64,
                output_tokens: answer_bytes.div_ceil(4) as u64,
            },
            model: "mock".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ChatRequest {
        ChatRequest {
            system: "s".into(),
            messages: vec![super::super::Message::user_text("hi")],
            tools: vec![],
            max_tokens: 100,
        }
    }

    #[test]
    fn plays_turns_in_order_then_errors() {
        let script = MockScript::new(vec![
            MockTurn::text("looking").call("ls", serde_json::json!({"path": "/"})),
            MockTurn::text("done"),
        ]);
        let mut model = MockModel::new(script);
        let seen = std::sync::Mutex::new(String::new());
        let sink = |t: &str| seen.lock().unwrap().push_str(t);
        let first = model.complete(&request(), &sink).unwrap();
        assert_eq!(first.stop_reason, StopReason::ToolUse);
        assert_eq!(first.tool_uses().count(), 1);
        let second = model.complete(&request(), &sink).unwrap();
        assert_eq!(second.text(), "done");
        assert_eq!(*seen.lock().unwrap(), "lookingdone");
        let err = model.complete(&request(), &sink).unwrap_err().to_string();
        assert!(err.contains("asked for turn 3"), "{err}");
    }

    #[test]
    fn reads_yaml_script_and_rejects_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("s.yaml");
        std::fs::write(
            &good,
            "turns:\n  - text: hi\n    tool_calls:\n      - name: bash\n        input: {command: ls}\n",
        )
        .unwrap();
        let script = MockScript::from_file(&good).unwrap();
        assert_eq!(script.turns[0].tool_calls[0].input["command"], "ls");
        let bad = dir.path().join("b.yaml");
        std::fs::write(&bad, "turns:\n  - txt: hi\n").unwrap();
        let err = MockScript::from_file(&bad).unwrap_err().to_string();
        assert!(err.contains("b.yaml") && err.contains("txt"), "{err}");
    }
}
