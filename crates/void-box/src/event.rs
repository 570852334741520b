//! Typed events of a run, whatever runs: an agent box, a pipeline, a
//! workflow or a sandbox command. Callers, progress displays, saved runs
//! (`--save-run`) and the timeline all read this one type.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use crate::llm::TokenUsage;
use crate::sandbox::OutputStream;

/// Something that happened during a run. `box_name` names the box, the
/// workflow step or the sandbox spec it happened in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
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
        #[serde(with = "crate::millis")]
        boot: Duration,
        /// What isolates it: `kvm`, or `tcg` (software emulation). Absent
        /// only in runs saved before it was recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        accel: Option<crate::vm::Accel>,
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
        #[serde(with = "crate::millis")]
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
        #[serde(with = "crate::millis")]
        duration: Duration,
        /// The error, when it failed.
        error: Option<String>,
    },
}

/// Where a run sends its events; sending never blocks and never fails the
/// run (a dropped receiver is fine).
#[derive(Debug, Clone, Default)]
pub struct EventSink {
    tx: Option<UnboundedSender<RunEvent>>,
}

impl EventSink {
    /// Events go nowhere.
    pub fn none() -> Self {
        EventSink { tx: None }
    }

    /// Events go to this channel.
    pub fn channel(tx: UnboundedSender<RunEvent>) -> Self {
        EventSink { tx: Some(tx) }
    }

    /// Sends one event.
    pub fn emit(&self, event: RunEvent) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(event);
        }
    }
}

/// One event as a saved run holds it (a line of `voidbox run --output
/// json`): when it happened and, when the run was traced, its trace id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventLine {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// The run's trace id, when it was traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The event.
    #[serde(flatten)]
    pub event: RunEvent,
}
