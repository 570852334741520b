//! The CLI against a daemon: `voidbox run --remote`, `ps`, `logs`,
//! `cancel`. The daemon runs the spec (its VMs, its images); the CLI
//! sends the spec's text and follows the run's events.

mod client;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use hyper::Method;
use serde_json::{json, Value};
use voidbox_server::Listen;

pub use client::{Address, Remote};

/// Which daemon, and its token.
#[derive(Args, Debug, Clone)]
pub struct RemoteArgs {
    /// The daemon: `unix:PATH`, `tcp:HOST:PORT` or `http://HOST:PORT`
    /// (default: `voidbox serve`'s default socket).
    #[arg(long, value_name = "ADDRESS", env = "VOIDBOX_REMOTE")]
    pub remote: Option<String>,
    /// A file holding the daemon's token.
    #[arg(
        long = "remote-token-file",
        value_name = "FILE",
        env = "VOIDBOX_TOKEN_FILE"
    )]
    pub token_file: Option<PathBuf>,
}

impl RemoteArgs {
    /// The daemon these options name.
    pub fn connect(&self) -> Result<Remote> {
        let address = match &self.remote {
            Some(text) => Address::parse(text)?,
            None => match Listen::default_socket() {
                Listen::Unix(path) => Address::Unix(path),
                Listen::Tcp(addr) => Address::Tcp(addr.to_string()),
            },
        };
        let token = match &self.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading the token file {}", path.display()))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        Ok(Remote::new(address, token))
    }
}

/// `voidbox ps`: the daemon's runs, newest first.
pub async fn ps(args: &RemoteArgs) -> Result<ExitCode> {
    let runs = args.connect()?.call(Method::GET, "/v1/runs", None).await?;
    let runs = runs.as_array().cloned().unwrap_or_default();
    println!(
        "{:<22} {:<20} {:<9} {:<10} {:>10}",
        "RUN", "NAME", "KIND", "STATUS", "SECONDS"
    );
    for run in runs {
        let seconds = match (
            run["created_unix_ms"].as_u64(),
            run["ended_unix_ms"].as_u64(),
        ) {
            (Some(start), Some(end)) => format!("{:.1}", end.saturating_sub(start) as f64 / 1000.0),
            _ => "-".into(),
        };
        println!(
            "{:<22} {:<20} {:<9} {:<10} {:>10}",
            text(&run["id"]),
            text(&run["name"]),
            text(&run["kind"]),
            text(&run["status"]),
            seconds
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// `voidbox logs RUN [--follow]`: the run's events as JSON lines (as
/// `voidbox run --output json` prints them).
pub async fn logs(args: &RemoteArgs, run: &str, follow: bool) -> Result<ExitCode> {
    let remote = args.connect()?;
    let path = format!("/v1/runs/{run}/events?follow={follow}");
    let mut stdout = std::io::stdout().lock();
    remote
        .events(&path, None, |name, _, data| {
            if name == "end" {
                return false;
            }
            let _ = writeln!(stdout, "{data}");
            true
        })
        .await?;
    Ok(ExitCode::SUCCESS)
}

/// `voidbox cancel RUN`.
pub async fn cancel(args: &RemoteArgs, run: &str) -> Result<ExitCode> {
    let answer = args
        .connect()?
        .call(Method::POST, &format!("/v1/runs/{run}/cancel"), None)
        .await?;
    println!("{run}: {}", text(&answer["status"]));
    Ok(ExitCode::SUCCESS)
}

/// `voidbox run --remote`: sends the spec's text, follows its events
/// (human lines on stderr, or JSON lines on stdout), prints its output;
/// exits 0 when it succeeded.
pub async fn run(
    args: &RemoteArgs,
    file: &Path,
    input: Option<String>,
    json_lines: bool,
) -> Result<ExitCode> {
    let spec = std::fs::read_to_string(file)
        .with_context(|| format!("reading the spec {}", file.display()))?;
    let format = if file.extension().is_some_and(|e| e == "json") {
        "json"
    } else {
        "yaml"
    };
    let remote = args.connect()?;
    let submitted = remote
        .call(
            Method::POST,
            "/v1/runs",
            Some(json!({"spec": spec, "format": format, "input": input})),
        )
        .await?;
    let id = text(&submitted["id"]).to_string();
    if !json_lines {
        eprintln!(
            "voidbox: run {id} on the daemon ({})",
            text(&submitted["status"])
        );
    }
    let path = format!("/v1/runs/{id}/events");
    let mut ended = false;
    let mut last: Option<String> = None;
    // A dropped connection resumes after the last event seen, a few times.
    let mut attempts = 0;
    while !ended {
        let resume = last.clone();
        let followed = remote
            .events(&path, resume.as_deref(), |name, event_id, data| {
                if name == "end" {
                    ended = true;
                    return false;
                }
                if let Some(n) = event_id {
                    last = Some(n.to_string());
                }
                if json_lines {
                    println!("{data}");
                } else if let Ok(event) = serde_json::from_str::<Value>(data) {
                    show(&event);
                }
                true
            })
            .await;
        attempts += 1;
        if !ended && attempts >= 5 {
            followed?;
            anyhow::bail!("the run's events stopped before its end");
        }
        if !ended {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
    // The run as it ended, whole.
    let run = remote
        .call(Method::GET, &format!("/v1/runs/{id}"), None)
        .await?;
    if json_lines {
        println!("{}", json!({"event": "result", "run": run}));
    } else {
        eprintln!();
        match &run["output"] {
            Value::Null => {}
            Value::String(s) => print!("{s}"),
            other => println!("{other}"),
        }
        if let Some(error) = run["error"].as_str() {
            eprintln!("voidbox: {error}");
        }
    }
    Ok(if run["status"] == "succeeded" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// One event, briefly, on stderr.
fn show(event: &Value) {
    let who = text(&event["box_name"]);
    match text(&event["event"]) {
        "stage_started" => eprintln!("▶ {who}"),
        "text_delta" => eprint!("{}", text(&event["text"])),
        "tool_call_started" => {
            let mut args = event["arguments"].to_string();
            if args.len() > 100 {
                args.truncate(args.floor_char_boundary(100));
                args.push('…');
            }
            eprintln!("\n  → {} {args}", text(&event["name"]));
        }
        "tool_call_finished" if event["is_error"] == true => {
            eprintln!("  ✗ {}: {}", text(&event["name"]), text(&event["summary"]));
        }
        "stage_finished" => match event["error"].as_str() {
            Some(error) => eprintln!("\n■ {who} failed: {error}"),
            None => eprintln!("\n■ {who} done"),
        },
        _ => {}
    }
}
