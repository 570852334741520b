//! A run's timeline, rebuilt from its events: per stage, when it booted,
//! when the model was thinking, when tools ran. Rendered in the terminal
//! at the end of `voidbox run` and as HTML by `voidbox report`.

use serde::Serialize;
use serde_json::Value;

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
    /// Rebuilds the timeline from JSON event objects (the lines of
    /// `voidbox run --output json`): each has an `event` tag, a `box_name`
    /// and a `ts_ms` timestamp. Unknown events and lines are skipped.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a Value>) -> Timeline {
        let events: Vec<&Value> = events
            .into_iter()
            .filter(|e| e.get("ts_ms").and_then(Value::as_u64).is_some())
            .collect();
        let origin = events
            .iter()
            .filter_map(|e| e["ts_ms"].as_u64())
            .min()
            .unwrap_or(0);
        let mut timeline = Timeline::default();
        let mut open_turn: Vec<(String, u64, String)> = Vec::new();
        let mut open_tools: Vec<(String, String, u64, String)> = Vec::new();
        for e in events {
            let at = e["ts_ms"].as_u64().unwrap_or(origin) - origin;
            timeline.duration_ms = timeline.duration_ms.max(at);
            if timeline.trace_id.is_none() {
                timeline.trace_id = e
                    .get("trace_id")
                    .and_then(Value::as_str)
                    .map(str::to_string);
            }
            let name = e
                .get("box_name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let stage = |t: &mut Timeline| -> Option<usize> {
                t.stages.iter().rposition(|s| s.name == name)
            };
            match e.get("event").and_then(Value::as_str).unwrap_or("") {
                "stage_started" => timeline.stages.push(StageTimeline {
                    name: name.clone(),
                    start_ms: at,
                    end_ms: None,
                    success: None,
                    error: None,
                    tokens: (0, 0),
                    cost_usd: None,
                    segments: Vec::new(),
                }),
                "sandbox_ready" => {
                    if let Some(i) = stage(&mut timeline) {
                        let boot = e["boot"].as_u64().unwrap_or(0);
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
                "turn_started" => {
                    let turn = e["turn"].as_u64().unwrap_or(0);
                    open_turn.retain(|(n, _, _)| n != &name);
                    open_turn.push((name.clone(), at, format!("turn {turn}")));
                }
                "usage" => {
                    if let Some(pos) = open_turn.iter().position(|(n, _, _)| n == &name) {
                        let (_, start, label) = open_turn.remove(pos);
                        if let Some(i) = stage(&mut timeline) {
                            timeline.stages[i].segments.push(Segment {
                                kind: SegmentKind::Llm,
                                label,
                                start_ms: start,
                                end_ms: at,
                                is_error: false,
                            });
                        }
                    }
                    if let Some(i) = stage(&mut timeline) {
                        let total = &e["total"];
                        timeline.stages[i].tokens = (
                            total["input_tokens"].as_u64().unwrap_or(0),
                            total["output_tokens"].as_u64().unwrap_or(0),
                        );
                        timeline.stages[i].cost_usd = e["cost_usd"].as_f64();
                    }
                }
                "tool_call_started" => {
                    let id = e["id"].as_str().unwrap_or("").to_string();
                    let tool = e["name"].as_str().unwrap_or("tool").to_string();
                    open_tools.push((name.clone(), id, at, tool));
                }
                "tool_call_finished" => {
                    let id = e["id"].as_str().unwrap_or("");
                    if let Some(pos) = open_tools
                        .iter()
                        .position(|(n, i, _, _)| n == &name && i == id)
                    {
                        let (_, _, start, tool) = open_tools.remove(pos);
                        if let Some(i) = stage(&mut timeline) {
                            timeline.stages[i].segments.push(Segment {
                                kind: SegmentKind::Tool,
                                label: tool,
                                start_ms: start,
                                end_ms: at,
                                is_error: e["is_error"].as_bool().unwrap_or(false),
                            });
                        }
                    }
                }
                "stage_finished" => {
                    if let Some(i) = stage(&mut timeline) {
                        let s = &mut timeline.stages[i];
                        s.end_ms = Some(at);
                        s.success = e["success"].as_bool();
                        s.error = e["error"].as_str().map(str::to_string);
                    }
                }
                _ => {}
            }
        }
        for s in &mut timeline.stages {
            s.segments.sort_by_key(|g| g.start_ms);
        }
        timeline
    }

    /// Reads a saved run: one JSON object per line; lines that are not
    /// JSON objects are skipped.
    pub fn from_jsonl(text: &str) -> Timeline {
        let values: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(Value::is_object)
            .collect();
        Timeline::from_events(values.iter())
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
    use serde_json::json;

    fn run() -> Vec<Value> {
        vec![
            json!({"event": "stage_started", "box_name": "a", "ts_ms": 1000}),
            json!({"event": "sandbox_ready", "box_name": "a", "boot": 2000, "ts_ms": 3000}),
            json!({"event": "turn_started", "box_name": "a", "turn": 1, "ts_ms": 3000}),
            json!({"event": "usage", "box_name": "a", "total": {"input_tokens": 10, "output_tokens": 2}, "cost_usd": 0.5, "ts_ms": 4000}),
            json!({"event": "tool_call_started", "box_name": "a", "id": "t1", "name": "bash", "ts_ms": 4000}),
            json!({"event": "tool_call_finished", "box_name": "a", "id": "t1", "name": "bash", "is_error": true, "ts_ms": 5000}),
            json!({"event": "stage_finished", "box_name": "a", "success": false, "error": "boom", "ts_ms": 6000}),
            json!({"event": "stage_started", "box_name": "b", "ts_ms": 6000}),
            json!({"event": "stage_finished", "box_name": "b", "success": true, "ts_ms": 11000}),
            json!({"event": "result", "ok": true}),
        ]
    }

    #[test]
    fn rebuilds_segments_relative_to_the_start() {
        let events = run();
        let t = Timeline::from_events(events.iter());
        assert_eq!(t.duration_ms, 10_000);
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
    fn text_render_draws_a_bar_per_stage() {
        let events = run();
        let text = Timeline::from_events(events.iter()).render_text(20);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("a │▒▒▒▒██▓▓"), "{text}");
        assert!(lines[0].ends_with("5.0s FAILED"), "{text}");
        assert!(lines[1].starts_with("b │          ··········│"), "{text}");
        assert!(text.contains("▒ boot  █ model  ▓ tool"));
    }
}
