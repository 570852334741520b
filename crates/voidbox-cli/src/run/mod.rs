//! `voidbox run --file SPEC`: runs an agent, pipeline, workflow or
//! sandbox command from a spec, with live progress (human) or one JSON
//! object per event (json).

mod human;
mod json;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use indicatif::MultiProgress;
use serde_json::{json, Value};
use void_box::event::{EventLine, EventSink, RunEvent};
use void_box::observe::timeline::Timeline;
use void_box::sandbox::SandboxPool;
use void_box::spec::{RunOutcome, Runnable};
use void_box::workflow::StepAction;

use crate::spec_cmd::{load_checked, print_error, HostAccessArgs};
use crate::stop::StopSignals;

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
    #[command(flatten)]
    access: HostAccessArgs,
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
    /// Keep N sandboxes of each configuration the spec uses booted ahead,
    /// refilled in the background while the run lasts: later stages find
    /// theirs ready (each is still used once).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pool: usize,
    /// Run it on a daemon (`voidbox serve`) instead: `unix:PATH`,
    /// `tcp:HOST:PORT` or `http://HOST:PORT`. The spec's text is sent; its
    /// `file:` skills and host grants do not travel.
    #[arg(long, value_name = "ADDRESS", env = "VOIDBOX_REMOTE")]
    remote: Option<String>,
    /// A file holding the daemon's token (with --remote).
    #[arg(
        long = "remote-token-file",
        value_name = "FILE",
        env = "VOIDBOX_TOKEN_FILE"
    )]
    remote_token_file: Option<PathBuf>,
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

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

pub async fn run(args: RunArgs) -> Result<ExitCode> {
    if args.remote.is_some() {
        let remote = crate::remote::RemoteArgs {
            remote: args.remote.clone(),
            token_file: args.remote_token_file.clone(),
        };
        let input = read_input(args.input.as_deref())?;
        return crate::remote::run(
            &remote,
            &args.file,
            input,
            args.output == OutputFormat::Json,
        )
        .await;
    }
    let (spec, runnable) = match load_checked(&args.file, &args.access) {
        Ok(found) => found,
        Err(e) => {
            print_error(&e);
            return Ok(ExitCode::from(1));
        }
    };
    let input = read_input(args.input.as_deref())?;
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
    // Images are pulled before any VM boots, with their own progress.
    let show = match args.output {
        OutputFormat::Human => crate::pull::Show::Human,
        OutputFormat::Json => crate::pull::Show::Json,
    };
    if let Err(e) = crate::pull::ensure_all(&runnable.images(), show).await {
        eprintln!("voidbox: {e:#}");
        return Ok(ExitCode::from(1));
    }
    let mut recorder = Recorder::new(args.save_run.as_deref(), trace_id.clone())?;
    let mut display: Box<dyn Display> = match args.output {
        OutputFormat::Human => Box::new(human::Human::new(&units)),
        OutputFormat::Json => Box::new(json::JsonLines::new(trace_id.clone())),
    };

    let pool = SandboxPool::new(args.pool);
    if args.pool > 0 {
        for config in runnable.sandboxes() {
            pool.warm(&config);
        }
    }
    let (sink, mut rx) = EventSink::channel();
    // Boxed so that a stop signal can drop it: dropping the run kills every VM.
    let mut execution = Box::pin(tracing::Instrument::instrument(
        async move { runnable.run_on(&pool, input.as_deref(), sink).await },
        span,
    ));
    let mut stop = StopSignals::new()?;
    let outcome = loop {
        tokio::select! {
            outcome = &mut execution => break outcome,
            Some(event) = rx.recv() => display.feed(recorder.record(event)),
            code = stop.next() => {
                drop(execution);
                recorder.write(json!({"event": "cancelled"}));
                display.cancelled();
                return Ok(ExitCode::from(code));
            }
        }
    };
    // What was sent before the run ended is still queued; show it first.
    tokio::time::sleep(Duration::from_millis(20)).await;
    while let Some(event) = rx.try_recv() {
        display.feed(recorder.record(event));
    }
    let timeline = Timeline::from_events(&recorder.events);
    display.set_timeline(timeline.render_text(48), trace_id);
    let code = display.finish(outcome);
    recorder
        .write(json!({"event": "result", "name": spec.name(), "kind": spec.kind().to_string()}));
    Ok(code)
}

/// `--input`: the text, or the file `@PATH` names.
fn read_input(input: Option<&str>) -> Result<Option<String>> {
    Ok(match input {
        Some(text) => match text.strip_prefix('@') {
            Some(path) => Some(
                std::fs::read_to_string(path).with_context(|| format!("reading input {path}"))?,
            ),
            None => Some(text.to_string()),
        },
        None => None,
    })
}

/// Every event of the run as the JSON line `--output json` prints (with
/// `ts_ms` and, when traced, `trace_id`), written to `--save-run` and,
/// except output, kept for the timeline.
struct Recorder {
    events: Vec<EventLine>,
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

    /// Stamps an event; the display shows exactly this line.
    fn record(&mut self, event: RunEvent) -> EventLine {
        let line = EventLine {
            ts_ms: now_ms(),
            trace_id: self.trace_id.clone(),
            event,
        };
        self.save(&to_json(&line));
        // The timeline does not draw output, and a guest can print without
        // end: output goes to the display and the saved run, not to memory.
        if !matches!(line.event, RunEvent::Output { .. }) {
            self.events.push(line.clone());
        }
        line
    }

    /// A line only the saved run gets.
    fn write(&mut self, mut value: Value) {
        if let Value::Object(map) = &mut value {
            map.insert("ts_ms".into(), now_ms().into());
            if let Some(id) = &self.trace_id {
                map.insert("trace_id".into(), id.clone().into());
            }
        }
        self.save(&value);
    }

    fn save(&mut self, value: &Value) {
        if let Some(file) = &mut self.file {
            // A full disk loses the saved copy, not the run.
            let _ = writeln!(file, "{value}").and_then(|_| file.flush());
        }
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
    /// One event, as the recorder stamped it.
    fn feed(&mut self, line: EventLine);
    /// The run's timeline and trace id, shown with the summary.
    fn set_timeline(&mut self, _timeline: String, _trace_id: Option<String>) {}
    fn cancelled(&mut self);
    fn finish(&mut self, outcome: RunOutcome) -> ExitCode;
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Prints the error, if any, and picks the exit code.
fn exit_with(error: Option<String>) -> ExitCode {
    match error {
        None => ExitCode::SUCCESS,
        Some(e) => {
            eprintln!("voidbox: {e}");
            ExitCode::from(1)
        }
    }
}

/// Whether stderr is a terminal (progress lines are drawn only there).
fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}
