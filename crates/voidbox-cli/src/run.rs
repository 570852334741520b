//! `voidbox run --file SPEC`: runs an agent, pipeline, workflow or
//! sandbox command from a spec, with live progress (human) or one JSON
//! object per event (json).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use void_box::agent::{AgentError, AgentEvent, EventSink, RunResult};
use void_box::llm::TokenUsage;
use void_box::observe::timeline::Timeline;
use void_box::pipeline::{BoxStatus, PipelineError, PipelineResult};
use void_box::spec::{OutputStream, Runnable, SandboxResult};
use void_box::workflow::{StepAction, WorkflowError, WorkflowResult};

use crate::spec_cmd::{load_checked, print_error};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Live progress, the model's text and tool calls, a summary table.
    Human,
    /// One JSON object per line per event, then a `result` object.
    Json,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The spec file (`.json`: JSON, anything else: YAML).
    #[arg(long, short = 'f', value_name = "FILE")]
    file: PathBuf,
    /// Input for the first stage (root steps, the sandbox command's
    /// stdin): text, or `@PATH` to read a file.
    #[arg(long, value_name = "TEXT|@FILE")]
    input: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    output: OutputFormat,
    /// Also write the run's events as JSON lines to FILE (for `voidbox report`).
    #[arg(long, value_name = "FILE")]
    save_run: Option<PathBuf>,
}

/// The live progress display, when there is one: log lines go above it
/// instead of through it (see [`LogWriter`]).
static PROGRESS: OnceLock<MultiProgress> = OnceLock::new();

/// Where `tracing` writes: stderr, around the progress lines when they
/// are drawn, so warnings do not tear them.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match PROGRESS.get() {
            Some(m) => m.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// How the run ended, whatever the kind.
enum Outcome {
    Agent(Result<RunResult, AgentError>),
    Pipeline(Result<PipelineResult, PipelineError>),
    Workflow(Result<WorkflowResult, WorkflowError>),
    Sandbox(Result<SandboxResult, void_box::Error>),
}

/// What the display receives while the run goes on.
enum Feed {
    Event(AgentEvent),
    Output(String, OutputStream, Vec<u8>),
}

pub async fn run(args: RunArgs) -> Result<ExitCode> {
    let (spec, runnable) = match load_checked(&args.file) {
        Ok(found) => found,
        Err(e) => {
            print_error(&e);
            return Ok(ExitCode::from(1));
        }
    };
    let input = match &args.input {
        Some(text) => match text.strip_prefix('@') {
            Some(path) => Some(
                std::fs::read_to_string(path).with_context(|| format!("reading input {path}"))?,
            ),
            None => Some(text.clone()),
        },
        None => None,
    };
    let units = unit_names(&runnable);
    // One trace per run; its id goes on every JSON line, in the header and
    // under the summary, so logs and traces can be joined.
    let span = tracing::info_span!(
        "run",
        otel.name = %format!("voidbox run {}", spec.name()),
        voidbox.kind = %spec.kind(),
        voidbox.spec = %spec.name(),
    );
    let trace_id = span.in_scope(void_box::observe::trace_id);
    if args.output == OutputFormat::Human {
        // Before the progress lines exist, so it does not tear them.
        match &trace_id {
            Some(id) => eprintln!("voidbox: running {} (trace {id})", spec.summary()),
            None => eprintln!("voidbox: running {}", spec.summary()),
        }
    }
    let mut recorder = Recorder::new(args.save_run.as_deref(), trace_id.clone())?;
    let mut display: Box<dyn Display> = match args.output {
        OutputFormat::Human => Box::new(Human::new(&units)),
        OutputFormat::Json => Box::new(JsonLines {
            trace_id: trace_id.clone(),
        }),
    };

    let (tx, mut rx) = mpsc::unbounded_channel::<Feed>();
    let (event_tx, mut event_rx) = mpsc::unbounded_channel::<AgentEvent>();
    let sink = EventSink::channel(event_tx);
    let output_tx = tx.clone();
    // Events arrive on their own channel (EventSink's type); fold them in.
    tokio::spawn(async move {
        while let Some(e) = event_rx.recv().await {
            if tx.send(Feed::Event(e)).is_err() {
                break;
            }
        }
    });
    // Boxed so that Ctrl-C can drop it: dropping the run kills every VM.
    let mut execution = Box::pin(tracing::Instrument::instrument(
        async move {
            let input = input.as_deref();
            match &runnable {
                Runnable::Agent(a) => Outcome::Agent(a.run_with(input, sink).await),
                Runnable::Pipeline(p) => Outcome::Pipeline(p.run_with(input, sink).await),
                Runnable::Workflow(w) => Outcome::Workflow(
                    w.run_with(input, sink, &void_box::sandbox::VmProvider)
                        .await,
                ),
                Runnable::Sandbox(s) => {
                    let name = s.name().to_string();
                    let on_output = move |stream: OutputStream, data: &[u8]| {
                        let _ = output_tx.send(Feed::Output(name.clone(), stream, data.to_vec()));
                    };
                    Outcome::Sandbox(s.run_with(input, sink, &on_output).await)
                }
            }
        },
        span,
    ));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let outcome = loop {
        tokio::select! {
            outcome = &mut execution => break outcome,
            Some(feed) = rx.recv() => {
                let line = recorder.record(&feed);
                display.feed(feed, line);
            }
            _ = &mut ctrl_c => {
                drop(execution);
                recorder.write(json!({"event": "cancelled"}));
                display.cancelled();
                return Ok(ExitCode::from(130));
            }
        }
    };
    // What was sent before the run ended is still queued; show it first.
    tokio::time::sleep(Duration::from_millis(20)).await;
    while let Ok(feed) = rx.try_recv() {
        let line = recorder.record(&feed);
        display.feed(feed, line);
    }
    let timeline = Timeline::from_events(recorder.events.iter());
    display.set_timeline(timeline.render_text(48), trace_id);
    let code = display.finish(outcome);
    recorder
        .write(json!({"event": "result", "name": spec.name(), "kind": spec.kind().to_string()}));
    Ok(code)
}

/// Every event of the run as the JSON line `--output json` prints (with
/// `ts_ms` and, when traced, `trace_id`), kept for the timeline and
/// written to `--save-run`.
struct Recorder {
    events: Vec<Value>,
    file: Option<std::io::BufWriter<std::fs::File>>,
    trace_id: Option<String>,
}

impl Recorder {
    fn new(path: Option<&std::path::Path>, trace_id: Option<String>) -> Result<Self> {
        let file = match path {
            None => None,
            Some(p) => Some(std::io::BufWriter::new(
                std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
            )),
        };
        Ok(Recorder {
            events: Vec::new(),
            file,
            trace_id,
        })
    }

    fn stamp(&self, mut value: Value) -> Value {
        if let Value::Object(map) = &mut value {
            map.insert("ts_ms".into(), now_ms().into());
            if let Some(id) = &self.trace_id {
                map.insert("trace_id".into(), id.clone().into());
            }
        }
        value
    }

    /// Stamps a feed; the display prints exactly this value in JSON mode.
    fn record(&mut self, feed: &Feed) -> Value {
        let value = self.stamp(feed_value(feed));
        self.events.push(value.clone());
        self.save(&value);
        value
    }

    /// A line only the saved run gets.
    fn write(&mut self, value: Value) {
        let value = self.stamp(value);
        self.save(&value);
    }

    fn save(&mut self, value: &Value) {
        if let Some(file) = &mut self.file {
            // A full disk loses the saved copy, not the run.
            let _ = writeln!(file, "{value}").and_then(|_| file.flush());
        }
    }
}

fn feed_value(feed: &Feed) -> Value {
    match feed {
        Feed::Event(e) => serde_json::to_value(e).unwrap_or(Value::Null),
        Feed::Output(name, stream, data) => json!({
            "event": "output",
            "box_name": name,
            "stream": stream,
            "text": String::from_utf8_lossy(data),
        }),
    }
}

/// Box or step names in run order, for the progress lines.
fn unit_names(runnable: &Runnable) -> Vec<String> {
    match runnable {
        Runnable::Agent(a) => vec![a.name().to_string()],
        Runnable::Pipeline(p) => p
            .stages()
            .iter()
            .flat_map(|s| s.boxes().iter().map(|b| b.name().to_string()))
            .collect(),
        Runnable::Workflow(w) => w.steps().iter().map(|s| s.name().to_string()).collect(),
        Runnable::Sandbox(s) => vec![s.name().to_string()],
    }
    .into_iter()
    .chain(match runnable {
        // Agent steps' boxes may be named differently from their steps.
        Runnable::Workflow(w) => w
            .steps()
            .iter()
            .filter_map(|s| match s.action() {
                StepAction::Agent(b) if b.name() != s.name() => Some(b.name().to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    })
    .collect()
}

trait Display {
    /// One event, with the JSON line the recorder made of it.
    fn feed(&mut self, feed: Feed, line: Value);
    /// The run's timeline and trace id, shown with the summary.
    fn set_timeline(&mut self, _timeline: String, _trace_id: Option<String>) {}
    fn cancelled(&mut self);
    fn finish(&mut self, outcome: Outcome) -> ExitCode;
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

// ---------------------------------------------------------------- JSON

/// Prints JSON lines; knows the trace id for the lines it makes itself.
struct JsonLines {
    trace_id: Option<String>,
}

impl JsonLines {
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
    fn feed(&mut self, _feed: Feed, line: Value) {
        self.emit(line);
    }

    fn cancelled(&mut self) {
        self.emit(json!({"event": "cancelled"}));
        eprintln!("cancelled");
    }

    fn finish(&mut self, outcome: Outcome) -> ExitCode {
        let (kind, result, error) = match outcome {
            Outcome::Agent(r) => ("agent", r.as_ref().ok().map(to_json), err_text(&r)),
            Outcome::Pipeline(r) => {
                let report = match &r {
                    Ok(p) => Some(to_json(p)),
                    Err(e) => Some(to_json(&e.report)),
                };
                ("pipeline", report, err_text(&r))
            }
            Outcome::Workflow(r) => {
                let report = match &r {
                    Ok(w) => Some(to_json(w)),
                    Err(WorkflowError::StepFailed { report, .. }) => Some(to_json(report)),
                    Err(_) => None,
                };
                ("workflow", report, err_text(&r))
            }
            Outcome::Sandbox(r) => {
                let error = match &r {
                    Ok(s) if !s.success => Some(exit_text(s)),
                    _ => err_text(&r),
                };
                ("sandbox", r.as_ref().ok().map(to_json), error)
            }
        };
        let output = result
            .as_ref()
            .and_then(|r| {
                // An agent's output file, else pipeline/workflow `output` or
                // an agent's schema `output`, else its `text`; a command's `stdout`.
                ["file", "output", "text", "stdout"]
                    .iter()
                    .find_map(|k| r.get(*k).filter(|v| !v.is_null()))
            })
            .cloned()
            .unwrap_or(Value::Null);
        self.emit(json!({
            "event": "result",
            "kind": kind,
            "success": error.is_none(),
            "output": output,
            "error": error,
            "result": result,
        }));
        match error {
            None => ExitCode::SUCCESS,
            Some(e) => {
                eprintln!("voidbox: {e}");
                ExitCode::from(1)
            }
        }
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn err_text<T, E: std::fmt::Display>(r: &Result<T, E>) -> Option<String> {
    r.as_ref().err().map(|e| e.to_string())
}

fn exit_text(s: &SandboxResult) -> String {
    match (s.exit_code, s.signal) {
        (Some(code), _) => format!("`{}` exited with code {code}", s.name),
        (None, Some(sig)) => format!("`{}` was killed by signal {sig}", s.name),
        _ => format!("`{}` failed", s.name),
    }
}

// ---------------------------------------------------------------- human

/// Live state of one box or step.
#[derive(Default, Clone)]
struct Unit {
    duration: Option<Duration>,
    tokens: TokenUsage,
    cost: Option<f64>,
    state: String,
}

struct Human {
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
    fn new(names: &[String]) -> Self {
        let tty = std::io::stderr().is_terminal();
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

    /// A line above the progress lines (or straight to stderr).
    fn line(&self, text: String) {
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

    fn feed(&mut self, feed: Feed, _line: Value) {
        let event = match feed {
            Feed::Output(name, stream, data) => {
                let key = format!("{name}\u{0}{stream:?}");
                self.stream(key, &name, &String::from_utf8_lossy(&data));
                return;
            }
            Feed::Event(e) => e,
        };
        match event {
            AgentEvent::StageStarted { box_name } => {
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
            AgentEvent::SandboxReady { box_name, boot } => {
                self.unit(&box_name).state = "running".into();
                self.update(&box_name);
                self.vm_line(&box_name, &format!("booted in {}", secs(boot)));
            }
            AgentEvent::TurnStarted { box_name, turn } => {
                self.flush(&box_name);
                self.unit(&box_name).state = format!("turn {turn}");
                self.update(&box_name);
            }
            AgentEvent::Output {
                box_name,
                stream,
                text,
            } => {
                // Keyed by stream so that stdout and stderr lines never mix.
                let key = format!("{box_name}\u{0}{stream:?}");
                self.stream(key, &box_name, &text);
            }
            AgentEvent::TextDelta { box_name, text } => {
                self.stream(box_name.clone(), &box_name, &text);
            }
            AgentEvent::ToolCallStarted {
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
            AgentEvent::ToolCallFinished {
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
            AgentEvent::Usage {
                box_name,
                total,
                cost_usd,
            } => {
                let unit = self.unit(&box_name);
                unit.tokens = total;
                unit.cost = cost_usd;
                self.update(&box_name);
            }
            AgentEvent::StageFinished {
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

    fn finish(&mut self, outcome: Outcome) -> ExitCode {
        for bar in self.bars.values() {
            if !bar.is_finished() {
                bar.set_style(style(self.width, false));
                bar.finish_with_message("not run");
            }
        }
        let mut rows = Vec::new();
        let (output, error) = match &outcome {
            Outcome::Agent(r) => {
                let name = self.units.keys().next().cloned().unwrap_or_default();
                match r {
                    Ok(result) => {
                        rows.push(self.row(
                            result.box_name.clone(),
                            &result.box_name,
                            "ok",
                            result.duration,
                            Some(result),
                        ));
                        (Some(result.handoff()), None)
                    }
                    Err(e) => {
                        rows.push(self.row(name.clone(), &name, "failed", Duration::ZERO, None));
                        (None, Some(e.to_string()))
                    }
                }
            }
            Outcome::Pipeline(r) => {
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
                (report.output.clone(), err_text(r))
            }
            Outcome::Workflow(r) => {
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
                (report.and_then(|w| w.output.clone()), err_text(r))
            }
            Outcome::Sandbox(r) => match r {
                Ok(s) => {
                    let status = if s.success {
                        "ok".to_string()
                    } else {
                        match s.exit_code {
                            Some(c) => format!("exit {c}"),
                            None => "failed".into(),
                        }
                    };
                    rows.push(self.row(s.name.clone(), &s.name, &status, s.duration, None));
                    let error = (!s.success).then(|| exit_text(s));
                    (Some(s.stdout.clone()), error)
                }
                Err(e) => (None, Some(e.to_string())),
            },
        };
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
        if let Some(out) = output.filter(|o| !o.is_empty()) {
            eprintln!();
            let mut stdout = std::io::stdout().lock();
            let _ = write!(stdout, "{out}");
            if !out.ends_with('\n') {
                let _ = writeln!(stdout);
            }
            let _ = stdout.flush();
        }
        match error {
            None => ExitCode::SUCCESS,
            Some(e) => {
                eprintln!("voidbox: {e}");
                ExitCode::from(1)
            }
        }
    }
}
