//! The human display: progress lines per box or step, `[vm:NAME]` lines
//! for the model's text, tool calls and command output, then a summary
//! table, the timeline and the output.

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use void_box::agent::RunResult;
use void_box::event::{EventLine, RunEvent};
use void_box::llm::TokenUsage;
use void_box::pipeline::BoxStatus;
use void_box::workflow::WorkflowError;

use super::{exit_with, stderr_is_terminal, Display, PROGRESS};
use void_box::spec::RunOutcome;

/// Live state of one box or step.
#[derive(Default, Clone)]
struct Unit {
    duration: Option<Duration>,
    tokens: TokenUsage,
    cost: Option<f64>,
    state: String,
}

/// The longest unfinished line kept; a longer one is printed as it is.
const MAX_PARTIAL_LINE: usize = 64 << 10;

pub(super) struct Human {
    multi: Option<MultiProgress>,
    bars: HashMap<String, ProgressBar>,
    units: HashMap<String, Unit>,
    /// Text not yet ended by a newline, per box (and stream).
    partial: HashMap<String, String>,
    width: usize,
    /// The timeline picture and trace id, printed under the summary.
    timeline: Option<(String, Option<String>)>,
}

impl Human {
    pub(super) fn new(names: &[String]) -> Self {
        let tty = stderr_is_terminal();
        let width = names.iter().map(|n| n.len()).max().unwrap_or(8).max(8);
        let multi = tty.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        if let Some(m) = &multi {
            let _ = PROGRESS.set(m.clone());
        }
        let mut bars = HashMap::new();
        if let Some(multi) = &multi {
            for name in names {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(style(width, false));
                bar.set_prefix(name.clone());
                bar.set_message("pending");
                bars.insert(name.clone(), bar);
            }
        }
        Human {
            multi,
            bars,
            units: HashMap::new(),
            partial: HashMap::new(),
            width,
            timeline: None,
        }
    }

    /// A line above the progress lines (or straight to stderr). Control
    /// characters are shown, not sent: model text and guest output must not
    /// drive the operator's terminal (OSC 52 writes the clipboard).
    fn line(&self, text: String) {
        let text = visible_controls(&text);
        match &self.multi {
            Some(m) => {
                let _ = m.println(text);
            }
            None => eprintln!("{text}"),
        }
    }

    fn vm_line(&self, name: &str, text: &str) {
        self.line(format!("[vm:{name}] {text}"));
    }

    /// Prints whole lines of streamed text; keeps the rest.
    fn stream(&mut self, key: String, name: &str, text: &str) {
        let buf = self.partial.entry(key).or_default();
        buf.push_str(text);
        let mut lines = Vec::new();
        while let Some(i) = buf.find('\n') {
            lines.push(buf[..i].to_string());
            buf.drain(..=i);
        }
        // A guest that never prints a newline still costs at most this.
        if buf.len() >= MAX_PARTIAL_LINE {
            lines.push(std::mem::take(buf));
        }
        for l in lines {
            self.vm_line(name, &l);
        }
    }

    fn flush(&mut self, name: &str) {
        let keys: Vec<String> = self
            .partial
            .keys()
            .filter(|k| k.split('\u{0}').next() == Some(name))
            .cloned()
            .collect();
        for k in keys {
            if let Some(rest) = self.partial.remove(&k) {
                if !rest.trim().is_empty() {
                    self.vm_line(name, &rest);
                }
            }
        }
    }

    fn update(&mut self, name: &str) {
        let Some(bar) = self.bars.get(name) else {
            return;
        };
        let unit = self.units.get(name).cloned().unwrap_or_default();
        let tokens = tokens_text(unit.tokens);
        bar.set_message(format!("{:<18} {tokens}", unit.state));
    }

    fn unit(&mut self, name: &str) -> &mut Unit {
        self.units.entry(name.to_string()).or_default()
    }

    fn summary(&self, rows: &[Row]) {
        let name_w = rows
            .iter()
            .map(|r| r.stage.len())
            .max()
            .unwrap_or(5)
            .max(self.width + 2)
            .max(5);
        let mut out = String::new();
        out.push_str(&format!(
            "\n{:<name_w$}  {:<10}  {:>9}  {:>15}  {:>8}\n",
            "STAGE", "STATUS", "DURATION", "TOKENS (in/out)", "COST"
        ));
        for r in rows {
            out.push_str(&format!(
                "{:<name_w$}  {:<10}  {:>9}  {:>15}  {:>8}\n",
                r.stage, r.status, r.duration, r.tokens, r.cost
            ));
        }
        eprint!("{out}");
    }

    fn row(
        &self,
        stage: String,
        name: &str,
        status: &str,
        duration: Duration,
        result: Option<&RunResult>,
    ) -> Row {
        let live = self.units.get(name).cloned().unwrap_or_default();
        let (tokens, cost) = match result {
            Some(r) => (r.usage, r.cost_usd),
            None => (live.tokens, live.cost),
        };
        let duration = if duration.is_zero() {
            live.duration.unwrap_or_default()
        } else {
            duration
        };
        Row {
            stage,
            status: status.to_string(),
            duration: if status == "skipped" || status == "cancelled" {
                "-".into()
            } else {
                secs(duration)
            },
            tokens: if tokens == TokenUsage::default() {
                "-".into()
            } else {
                format!("{}/{}", tokens.input_tokens, tokens.output_tokens)
            },
            cost: cost.map_or("-".into(), |c| format!("${c:.4}")),
        }
    }
}

struct Row {
    stage: String,
    status: String,
    duration: String,
    tokens: String,
    cost: String,
}

/// `text` with every control character but tab and newline written as
/// `\u{..}` (ESC, BEL, CSI and the other C0 and C1 codes included).
fn visible_controls(text: &str) -> std::borrow::Cow<'_, str> {
    let shown = |c: char| !c.is_control() || c == '\t' || c == '\n';
    if text.chars().all(shown) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if shown(c) {
            out.push(c);
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    std::borrow::Cow::Owned(out)
}

fn style(width: usize, running: bool) -> ProgressStyle {
    let template = if running {
        format!("{{spinner:.cyan}} {{prefix:<{width}.bold}} {{msg}} {{elapsed:>4}}")
    } else {
        format!("  {{prefix:<{width}}} {{msg}}")
    };
    ProgressStyle::with_template(&template)
        .expect("valid template")
        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
}

fn tokens_text(t: TokenUsage) -> String {
    if t == TokenUsage::default() {
        String::new()
    } else {
        format!("{}/{} tok", t.input_tokens, t.output_tokens)
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn status_text(s: BoxStatus) -> &'static str {
    match s {
        BoxStatus::Succeeded => "ok",
        BoxStatus::Failed => "failed",
        BoxStatus::Cancelled => "cancelled",
        BoxStatus::Skipped => "skipped",
    }
}

/// One line of a tool call's arguments.
fn brief(v: &Value, max: usize) -> String {
    let text = match v.get("command").and_then(Value::as_str) {
        Some(cmd) => cmd.replace('\n', " "),
        None => v.to_string(),
    };
    if text.chars().count() > max {
        format!("{}…", text.chars().take(max).collect::<String>())
    } else {
        text
    }
}

impl Display for Human {
    fn set_timeline(&mut self, timeline: String, trace_id: Option<String>) {
        self.timeline = Some((timeline, trace_id));
    }

    fn feed(&mut self, line: EventLine) {
        match line.event {
            RunEvent::StageStarted { box_name } => {
                let unit = self.unit(&box_name);
                *unit = Unit {
                    state: "booting".into(),
                    ..Unit::default()
                };
                if let Some(bar) = self.bars.get(&box_name) {
                    bar.set_style(style(self.width, true));
                    bar.reset_elapsed();
                    bar.enable_steady_tick(Duration::from_millis(120));
                }
                self.update(&box_name);
                if self.multi.is_none() {
                    self.vm_line(&box_name, "starting");
                }
            }
            RunEvent::SandboxReady {
                box_name,
                boot,
                accel,
            } => {
                self.unit(&box_name).state = "running".into();
                self.update(&box_name);
                let on = accel.map(|a| format!(" on {a}: {}", a.isolation()));
                let line = format!("booted in {}{}", secs(boot), on.unwrap_or_default());
                self.vm_line(&box_name, &line);
            }
            RunEvent::TurnStarted { box_name, turn } => {
                self.flush(&box_name);
                self.unit(&box_name).state = format!("turn {turn}");
                self.update(&box_name);
            }
            RunEvent::Output {
                box_name,
                stream,
                text,
            } => {
                // Keyed by stream so that stdout and stderr lines never mix.
                let key = format!("{box_name}\u{0}{stream:?}");
                self.stream(key, &box_name, &text);
            }
            RunEvent::TextDelta { box_name, text } => {
                self.stream(box_name.clone(), &box_name, &text);
            }
            RunEvent::ToolCallStarted {
                box_name,
                name,
                arguments,
                ..
            } => {
                self.flush(&box_name);
                self.unit(&box_name).state = format!("tool {name}");
                self.update(&box_name);
                self.vm_line(&box_name, &format!("→ {name} {}", brief(&arguments, 100)));
            }
            RunEvent::ConfirmationRequired { box_name, tool, .. } => {
                self.vm_line(&box_name, &format!("? {tool} waits for a decision"));
            }
            RunEvent::ConfirmationAnswered {
                box_name,
                decision,
                by,
                ..
            } => {
                self.vm_line(&box_name, &format!("? {decision} (by the {by})"));
            }
            RunEvent::ToolCallFinished {
                box_name,
                name,
                summary,
                is_error,
                duration,
                ..
            } => {
                let first = summary.lines().next().unwrap_or("").trim();
                let first: String = first.chars().take(100).collect();
                let how = if is_error { "error" } else { "ok" };
                self.vm_line(
                    &box_name,
                    &format!("← {name} {how} ({}ms) {first}", duration.as_millis()),
                );
            }
            RunEvent::Usage {
                box_name,
                total,
                cost_usd,
            } => {
                let unit = self.unit(&box_name);
                unit.tokens = total;
                unit.cost = cost_usd;
                self.update(&box_name);
            }
            RunEvent::Network {
                box_name,
                connection,
            } => {
                // Allowed DNS answers are noise beside the connections.
                let quiet =
                    connection.kind == void_box::net::NetworkEventKind::Dns && connection.allowed;
                if !quiet {
                    self.flush(&box_name);
                    self.vm_line(&box_name, &format!("net {}", connection.summary()));
                }
            }
            RunEvent::StageFinished {
                box_name,
                success,
                duration,
                error,
            } => {
                self.flush(&box_name);
                let unit = self.unit(&box_name);
                unit.duration = Some(duration);
                unit.state = if success { "done" } else { "failed" }.into();
                let tokens = tokens_text(unit.tokens);
                if let Some(bar) = self.bars.get(&box_name) {
                    bar.set_style(style(self.width, false));
                    let mark = if success { "✓ done" } else { "✗ failed" };
                    bar.finish_with_message(format!("{mark:<18} {tokens} {}", secs(duration)));
                }
                match error {
                    Some(e) => self.vm_line(&box_name, &format!("failed: {e}")),
                    None => self.vm_line(&box_name, &format!("done in {}", secs(duration))),
                }
            }
        }
    }

    fn cancelled(&mut self) {
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
        eprintln!("cancelled");
    }

    fn finish(&mut self, outcome: RunOutcome) -> ExitCode {
        for bar in self.bars.values() {
            if !bar.is_finished() {
                bar.set_style(style(self.width, false));
                bar.finish_with_message("not run");
            }
        }
        let rows = self.rows(&outcome);
        let ending = outcome.ending();
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
        if !rows.is_empty() {
            self.summary(&rows);
        }
        if let Some((picture, trace_id)) = self.timeline.take() {
            eprintln!();
            eprint!("{picture}");
            if let Some(id) = trace_id {
                eprintln!("trace {id}");
            }
        }
        let output = match ending.output {
            Some(Value::String(text)) => text,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        if !output.is_empty() {
            eprintln!();
            let mut stdout = std::io::stdout().lock();
            let _ = write!(stdout, "{output}");
            if !output.ends_with('\n') {
                let _ = writeln!(stdout);
            }
            let _ = stdout.flush();
        }
        exit_with(ending.error)
    }
}

impl Human {
    /// The summary table's rows: one per box or step.
    fn rows(&self, outcome: &RunOutcome) -> Vec<Row> {
        let mut rows = Vec::new();
        match outcome {
            RunOutcome::Agent(Ok(result)) => rows.push(self.row(
                result.box_name.clone(),
                &result.box_name,
                "ok",
                result.duration,
                Some(result),
            )),
            RunOutcome::Agent(Err(_)) => {
                let name = self.units.keys().next().cloned().unwrap_or_default();
                rows.push(self.row(name.clone(), &name, "failed", Duration::ZERO, None));
            }
            RunOutcome::Pipeline(r) => {
                let report = match r {
                    Ok(p) => p,
                    Err(e) => &*e.report,
                };
                for stage in &report.stages {
                    let fan = stage.boxes.len() > 1;
                    for b in &stage.boxes {
                        let label = if fan {
                            format!("{}. {} ∥", stage.index + 1, b.box_name)
                        } else {
                            format!("{}. {}", stage.index + 1, b.box_name)
                        };
                        rows.push(self.row(
                            label,
                            &b.box_name,
                            status_text(b.status),
                            b.duration,
                            b.result.as_ref(),
                        ));
                    }
                }
            }
            RunOutcome::Workflow(r) => {
                let report = match r {
                    Ok(w) => Some(w),
                    Err(WorkflowError::StepFailed { report, .. }) => Some(&**report),
                    Err(_) => None,
                };
                for s in report.iter().flat_map(|w| &w.steps) {
                    rows.push(self.row(
                        s.name.clone(),
                        &s.name,
                        status_text(s.status),
                        s.duration,
                        s.result.as_ref(),
                    ));
                }
            }
            RunOutcome::Sandbox(Ok(s)) => {
                let status = match (s.success, s.exit_code) {
                    (true, _) => "ok".to_string(),
                    (false, Some(c)) => format!("exit {c}"),
                    (false, None) => "failed".into(),
                };
                rows.push(self.row(s.name.clone(), &s.name, &status, s.duration, None));
            }
            RunOutcome::Sandbox(Err(_)) => {}
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_from_the_guest_or_the_model_are_shown_not_sent() {
        // OSC 52 (write the clipboard), a title change, CSI, BEL and a C1 CSI.
        let hostile = "ok \u{1b}]52;c;ZXZpbA==\u{7}\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}31m end\ttab";
        let shown = visible_controls(hostile);
        assert!(
            !shown.chars().any(|c| c.is_control() && c != '\t'),
            "{shown}"
        );
        assert_eq!(
            shown,
            "ok \\u{1b}]52;c;ZXZpbA==\\u{7}\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\u{9b}31m end\ttab"
        );
        assert!(matches!(
            visible_controls("plain ünïcode"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn a_line_without_end_does_not_grow_without_end() {
        let mut human = Human::new(&["a".to_string()]);
        let chunk = "x".repeat(4096);
        for _ in 0..100 {
            human.stream("a\u{0}stdout".into(), "a", &chunk);
            let kept: usize = human.partial.values().map(String::len).sum();
            assert!(kept < MAX_PARTIAL_LINE, "{kept} bytes kept");
        }
        human.stream("a\u{0}stdout".into(), "a", "end\n");
        assert!(human.partial.values().all(String::is_empty));
    }
}
