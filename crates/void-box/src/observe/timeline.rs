//! A run's timeline, rebuilt from its events: per stage, when it booted,
//! when the model was thinking, when tools ran. Rendered in the terminal
//! at the end of `voidbox run` and as HTML by `voidbox report`.

use serde::Serialize;

use crate::event::{EventLine, RunEvent};

/// What a stretch of a stage's time was spent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentKind {
    /// Booting the sandbox.
    Boot,
    /// Waiting for the model.
    Llm,
    /// A tool call in the sandbox.
    Tool,
}

/// One stretch of time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    /// What it was.
    pub kind: SegmentKind,
    /// `boot`, `turn 2`, `bash`, ...
    pub label: String,
    /// Start, ms from the run's start.
    pub start_ms: u64,
    /// End, ms from the run's start.
    pub end_ms: u64,
    /// A failed tool call.
    pub is_error: bool,
}

/// One box or workflow step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageTimeline {
    /// Box or step name.
    pub name: String,
    /// Start, ms from the run's start.
    pub start_ms: u64,
    /// End, ms from the run's start (`None`: never finished).
    pub end_ms: Option<u64>,
    /// Whether it succeeded (`None`: never finished).
    pub success: Option<bool>,
    /// The error, when it failed.
    pub error: Option<String>,
    /// Input and output tokens.
    pub tokens: (u64, u64),
    /// Cost in USD, when known.
    pub cost_usd: Option<f64>,
    /// Boot, model and tool stretches, in time order.
    pub segments: Vec<Segment>,
}

/// A whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timeline {
    /// The trace id, when the run was traced.
    pub trace_id: Option<String>,
    /// The run's length in ms.
    pub duration_ms: u64,
    /// Stages in the order they started.
    pub stages: Vec<StageTimeline>,
}

impl Timeline {
    /// Rebuilds the timeline from a run's events, with times relative to
    /// the first one.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a EventLine>) -> Timeline {
        let events: Vec<&EventLine> = events.into_iter().collect();
        let origin = events.iter().map(|e| e.ts_ms).min().unwrap_or(0);
        let mut timeline = Timeline::default();
        let mut open_turn: Vec<(String, u64, String)> = Vec::new();
        let mut open_tools: Vec<(String, String, u64, String)> = Vec::new();
        for line in events {
            let at = line.ts_ms - origin;
            timeline.duration_ms = timeline.duration_ms.max(at);
            if timeline.trace_id.is_none() {
                timeline.trace_id = line.trace_id.clone();
            }
            let stage = |t: &Timeline, name: &str| t.stages.iter().rposition(|s| s.name == name);
            match &line.event {
                RunEvent::StageStarted { box_name } => timeline.stages.push(StageTimeline {
                    name: box_name.clone(),
                    start_ms: at,
                    end_ms: None,
                    success: None,
                    error: None,
                    tokens: (0, 0),
                    cost_usd: None,
                    segments: Vec::new(),
                }),
                RunEvent::SandboxReady { box_name, boot, .. } => {
                    if let Some(i) = stage(&timeline, box_name) {
                        let boot = u64::try_from(boot.as_millis()).unwrap_or(u64::MAX);
                        let s = &mut timeline.stages[i];
                        s.segments.push(Segment {
                            kind: SegmentKind::Boot,
                            label: "boot".into(),
                            start_ms: at.saturating_sub(boot).max(s.start_ms),
                            end_ms: at,
                            is_error: false,
                        });
                    }
                }
                RunEvent::TurnStarted { box_name, turn } => {
                    open_turn.retain(|(n, _, _)| n != box_name);
                    open_turn.push((box_name.clone(), at, format!("turn {turn}")));
                }
                RunEvent::Usage {
                    box_name,
                    total,
                    cost_usd,
                } => {
                    if let Some(pos) = open_turn.iter().position(|(n, _, _)| n == box_name) {
                        let (_, start, label) = open_turn.remove(pos);
                        if let Some(i) = stage(&timeline, box_name) {
                            timeline.stages[i].segments.push(Segment {
                                kind: SegmentKind::Llm,
                                label,
                                start_ms: start,
                                end_ms: at,
                                is_error: false,
                            });
                        }
                    }
                    if let Some(i) = stage(&timeline, box_name) {
                        timeline.stages[i].tokens = (total.input_tokens, total.output_tokens);
                        timeline.stages[i].cost_usd = *cost_usd;
                    }
                }
                // A wait for a person shows as the tool call's time.
                RunEvent::ConfirmationRequired { .. } | RunEvent::ConfirmationAnswered { .. } => {}
                RunEvent::ToolCallStarted {
                    box_name, id, name, ..
                } => {
                    open_tools.push((box_name.clone(), id.clone(), at, name.clone()));
                }
                RunEvent::ToolCallFinished {
                    box_name,
                    id,
                    is_error,
                    ..
                } => {
                    if let Some(pos) = open_tools
                        .iter()
                        .position(|(n, i, _, _)| n == box_name && i == id)
                    {
                        let (_, _, start, tool) = open_tools.remove(pos);
                        if let Some(i) = stage(&timeline, box_name) {
                            timeline.stages[i].segments.push(Segment {
                                kind: SegmentKind::Tool,
                                label: tool,
                                start_ms: start,
                                end_ms: at,
                                is_error: *is_error,
                            });
                        }
                    }
                }
                RunEvent::StageFinished {
                    box_name,
                    success,
                    error,
                    ..
                } => {
                    if let Some(i) = stage(&timeline, box_name) {
                        let s = &mut timeline.stages[i];
                        s.end_ms = Some(at);
                        s.success = Some(*success);
                        s.error = error.clone();
                    }
                }
                RunEvent::TextDelta { .. } | RunEvent::Output { .. } | RunEvent::Network { .. } => {
                }
            }
        }
        for s in &mut timeline.stages {
            s.segments.sort_by_key(|g| g.start_ms);
        }
        timeline
    }

    /// Reads a saved run: one JSON object per line. Lines that are not
    /// events (the `result` and `cancelled` lines, anything else) are
    /// skipped.
    pub fn from_jsonl(text: &str) -> Timeline {
        let lines: Vec<EventLine> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<EventLine>(l).ok())
            .collect();
        Timeline::from_events(&lines)
    }

    /// A text picture for the terminal: one bar per stage over `width`
    /// columns (`▒` boot, `█` model, `▓` tool, `·` other work).
    pub fn render_text(&self, width: usize) -> String {
        let width = width.max(10);
        let total = self.duration_ms.max(1) as f64;
        let col = |ms: u64| ((ms as f64 / total) * width as f64).floor() as usize;
        let name_width = self
            .stages
            .iter()
            .map(|s| s.name.chars().count())
            .max()
            .unwrap_or(4)
            .min(24);
        let mut out = String::new();
        for s in &self.stages {
            let mut bar: Vec<char> = vec![' '; width];
            let end = s.end_ms.unwrap_or(self.duration_ms);
            for c in bar
                .iter_mut()
                .take(col(end).min(width))
                .skip(col(s.start_ms))
            {
                *c = '·';
            }
            for g in &s.segments {
                let mark = match g.kind {
                    SegmentKind::Boot => '▒',
                    SegmentKind::Llm => '█',
                    SegmentKind::Tool => '▓',
                };
                let (a, b) = (col(g.start_ms).min(width - 1), col(g.end_ms).min(width));
                for c in bar.iter_mut().take(b.max(a + 1)).skip(a) {
                    *c = mark;
                }
            }
            let status = match s.success {
                Some(true) => "ok",
                Some(false) => "FAILED",
                None => "unfinished",
            };
            let name: String = s.name.chars().take(name_width).collect();
            out.push_str(&format!(
                "{name:<name_width$} │{}│ {:>7.1}s {status}\n",
                bar.into_iter().collect::<String>(),
                (end.saturating_sub(s.start_ms)) as f64 / 1000.0,
            ));
        }
        out.push_str(&format!(
            "{:<name_width$}  0s{:>w$}\n{:<name_width$}  ▒ boot  █ model  ▓ tool  · other\n",
            "",
            format!("{:.1}s", total / 1000.0),
            "",
            w = width.saturating_sub(2),
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A saved run as `--save-run` writes it, `result` line included.
    const RUN: &str = r#"{"event": "stage_started", "box_name": "a", "ts_ms": 1000}
{"event": "sandbox_ready", "box_name": "a", "boot": 2000, "ts_ms": 3000, "trace_id": "t-1"}
{"event": "turn_started", "box_name": "a", "turn": 1, "ts_ms": 3000}
{"event": "usage", "box_name": "a", "total": {"input_tokens": 10, "output_tokens": 2}, "cost_usd": 0.5, "ts_ms": 4000}
{"event": "tool_call_started", "box_name": "a", "id": "t1", "name": "bash", "arguments": {}, "ts_ms": 4000}
{"event": "tool_call_finished", "box_name": "a", "id": "t1", "name": "bash", "summary": "", "is_error": true, "duration": 1000, "ts_ms": 5000}
{"event": "stage_finished", "box_name": "a", "success": false, "duration": 5000, "error": "boom", "ts_ms": 6000}
{"event": "stage_started", "box_name": "b", "ts_ms": 6000}
{"event": "stage_finished", "box_name": "b", "success": true, "duration": 5000, "error": null, "ts_ms": 11000}
{"event": "result", "ok": true, "ts_ms": 11000}
not json
"#;

    #[test]
    fn rebuilds_segments_relative_to_the_start() {
        let t = Timeline::from_jsonl(RUN);
        assert_eq!(t.duration_ms, 10_000);
        assert_eq!(t.trace_id.as_deref(), Some("t-1"));
        assert_eq!(t.stages.len(), 2);
        let a = &t.stages[0];
        assert_eq!(
            (a.start_ms, a.end_ms, a.success),
            (0, Some(5000), Some(false))
        );
        assert_eq!(a.error.as_deref(), Some("boom"));
        assert_eq!(a.tokens, (10, 2));
        let kinds: Vec<SegmentKind> = a.segments.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            [SegmentKind::Boot, SegmentKind::Llm, SegmentKind::Tool]
        );
        assert_eq!((a.segments[0].start_ms, a.segments[0].end_ms), (0, 2000));
        assert!(a.segments[2].is_error);
    }

    #[test]
    fn saved_lines_are_the_typed_events() {
        // What the CLI writes is what the timeline reads: a typed event
        // round-trips through its JSON line.
        let line = EventLine {
            ts_ms: 5,
            trace_id: None,
            event: RunEvent::SandboxReady {
                box_name: "a".into(),
                boot: std::time::Duration::from_millis(1500),
                accel: Some(crate::vm::Accel::Tcg),
            },
        };
        let json = serde_json::to_string(&line).unwrap();
        assert_eq!(
            json,
            r#"{"ts_ms":5,"event":"sandbox_ready","box_name":"a","boot":1500,"accel":"tcg"}"#
        );
        assert_eq!(serde_json::from_str::<EventLine>(&json).unwrap(), line);
        // A run saved before the accelerator was recorded still reads.
        let old = r#"{"ts_ms":5,"event":"sandbox_ready","box_name":"a","boot":1500}"#;
        let old: EventLine = serde_json::from_str(old).unwrap();
        assert!(matches!(
            old.event,
            RunEvent::SandboxReady { accel: None, .. }
        ));
    }

    #[test]
    fn text_render_draws_a_bar_per_stage() {
        let text = Timeline::from_jsonl(RUN).render_text(20);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("a │▒▒▒▒██▓▓"), "{text}");
        assert!(lines[0].ends_with("5.0s FAILED"), "{text}");
        assert!(lines[1].starts_with("b │          ··········│"), "{text}");
        assert!(text.contains("▒ boot  █ model  ▓ tool"));
    }
}
