//! `--output json`: one JSON object per line per event, then a `result`.

use std::io::Write;
use std::process::ExitCode;

use serde_json::{json, Value};
use void_box::event::EventLine;

use super::{exit_with, now_ms, to_json, Display};
use void_box::spec::RunOutcome;

/// Prints JSON lines; knows the trace id for the lines it makes itself.
pub(super) struct JsonLines {
    trace_id: Option<String>,
}

impl JsonLines {
    pub(super) fn new(trace_id: Option<String>) -> Self {
        JsonLines { trace_id }
    }

    fn emit(&self, mut value: Value) {
        if let Value::Object(map) = &mut value {
            map.entry("ts_ms").or_insert_with(|| now_ms().into());
            if let Some(id) = &self.trace_id {
                map.entry("trace_id").or_insert_with(|| id.clone().into());
            }
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{value}");
        let _ = out.flush();
    }
}

impl Display for JsonLines {
    fn feed(&mut self, line: EventLine) {
        self.emit(to_json(&line));
    }

    fn cancelled(&mut self) {
        self.emit(json!({"event": "cancelled"}));
        eprintln!("cancelled");
    }

    fn finish(&mut self, outcome: RunOutcome) -> ExitCode {
        let ending = outcome.ending();
        self.emit(json!({
            "event": "result",
            "kind": ending.kind,
            "success": ending.error.is_none(),
            "output": ending.output,
            "error": ending.error,
            "result": ending.report,
        }));
        exit_with(ending.error)
    }
}
