//! Typed events of a run, for callers and the layers above (pipelines,
//! progress displays, traces).

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use crate::llm::TokenUsage;

/// Something that happened during a box's run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AgentEvent {
    /// The box's stage began (before the sandbox boots).
    StageStarted {
        /// Box name.
        box_name: String,
    },
    /// The sandbox is up.
    SandboxReady {
        /// Box name.
        box_name: String,
        /// How long it took to boot.
        #[serde(with = "millis")]
        boot: Duration,
    },
    /// A model turn begins.
    TurnStarted {
        /// Box name.
        box_name: String,
        /// 1-based turn number.
        turn: u32,
    },
    /// Text streamed from the model.
    TextDelta {
        /// Box name.
        box_name: String,
        /// The new text.
        text: String,
    },
    /// A tool call is about to run (after permission and hooks).
    ToolCallStarted {
        /// Box name.
        box_name: String,
        /// Call id.
        id: String,
        /// Tool name.
        name: String,
        /// Arguments as they will run.
        arguments: Value,
    },
    /// A tool call ended (or was refused).
    ToolCallFinished {
        /// Box name.
        box_name: String,
        /// Call id.
        id: String,
        /// Tool name.
        name: String,
        /// First line(s) of the result.
        summary: String,
        /// Failed or refused.
        is_error: bool,
        /// Wall time.
        #[serde(with = "millis")]
        duration: Duration,
    },
    /// Token counts so far in this stage.
    Usage {
        /// Box name.
        box_name: String,
        /// Totals so far.
        total: TokenUsage,
        /// Cost so far, when the model's price is known.
        cost_usd: Option<f64>,
    },
    /// Output of a command a workflow step or sandbox spec runs, as it
    /// is produced.
    Output {
        /// Step or box name.
        box_name: String,
        /// Which stream.
        stream: OutputStream,
        /// The text (lossily decoded).
        text: String,
    },
    /// The stage ended.
    StageFinished {
        /// Box name.
        box_name: String,
        /// Whether it succeeded.
        success: bool,
        /// Wall time.
        #[serde(with = "millis")]
        duration: Duration,
        /// The error, when it failed.
        error: Option<String>,
    },
}

/// Which stream a chunk of command output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

mod millis {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

/// Where a run sends its events; sending never blocks and never fails the
/// run (a dropped receiver is fine).
#[derive(Debug, Clone, Default)]
pub struct EventSink {
    tx: Option<UnboundedSender<AgentEvent>>,
}

impl EventSink {
    /// Events go nowhere.
    pub fn none() -> Self {
        EventSink { tx: None }
    }

    /// Events go to this channel.
    pub fn channel(tx: UnboundedSender<AgentEvent>) -> Self {
        EventSink { tx: Some(tx) }
    }

    /// Sends one event.
    pub fn emit(&self, event: AgentEvent) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(event);
        }
    }
}
