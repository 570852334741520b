//! `voidbox report RUN.jsonl`: a saved run (the lines of
//! `voidbox run --output json`, or `--save-run`) as a self-contained HTML
//! page with a timeline per stage.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use void_box::observe::report::render_html;
use void_box::observe::timeline::Timeline;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The saved run: one JSON event per line.
    run: PathBuf,
    /// Where to write the page (default: the run's path with `.html`).
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
}

pub fn run(args: ReportArgs) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&args.run)
        .with_context(|| format!("reading {}", args.run.display()))?;
    let timeline = Timeline::from_jsonl(&text);
    if timeline.stages.is_empty() {
        bail!(
            "{} holds no stage events; save a run with `voidbox run --output json > RUN.jsonl` \
             or `voidbox run --save-run RUN.jsonl`",
            args.run.display()
        );
    }
    let title = run_title(&text).unwrap_or_else(|| {
        args.run
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into())
    });
    let output = args
        .output
        .unwrap_or_else(|| args.run.with_extension("html"));
    std::fs::write(&output, render_html(&title, &timeline))
        .with_context(|| format!("writing {}", output.display()))?;
    println!("{}", output.display());
    Ok(ExitCode::SUCCESS)
}

/// The run's name, from its final `result` line when there is one.
fn run_title(text: &str) -> Option<String> {
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "result")
        .and_then(|v| {
            v.get("name")
                .or_else(|| v.pointer("/result/name"))
                .or_else(|| v.pointer("/result/box_name"))
                .and_then(|n| n.as_str())
                .map(str::to_string)
        })
}
