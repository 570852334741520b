//! Commands: run one and get its output, or start one and follow it as
//! Server-Sent Events, writing its stdin and killing it by pid meanwhile.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use base64::Engine;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};
use void_box::{Exec, ExitStatus};

use super::sandboxes::live;
use super::{ApiError, AppState, Body};
use crate::processes::{Process, ProcessEvent, ProcessInfo, Unfollowed};

/// Output a collected command keeps per stream (its head and tail).
const MAX_COLLECTED: usize = 16 << 20;

/// A command to run.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExecRequest {
    /// The program and its arguments (`["python3", "-c", "print(1)"]`).
    #[serde(default)]
    pub command: Vec<String>,
    /// Or a shell command line, run with `sh -c`.
    #[serde(default)]
    pub shell: Option<String>,
    /// Variables beside the sandbox's.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Run as this user of the sandbox's root (`root`, `UID[:GID]`,
    /// `NAME[:GROUP]`) instead of the sandbox's.
    #[serde(default)]
    pub user: Option<String>,
    /// Seconds after which everything it started is killed.
    #[serde(default)]
    pub timeout_secs: Option<f64>,
    /// Its stdin, then closed.
    #[serde(default)]
    pub stdin: Option<String>,
    /// `exec/stream` only: keep stdin open for
    /// `POST .../processes/{pid}/stdin`.
    #[serde(default)]
    pub stdin_open: bool,
}

impl ExecRequest {
    /// What it runs, for listings.
    fn info(&self) -> ProcessInfo {
        let (cmd, args) = match (&self.shell, self.command.split_first()) {
            (Some(line), _) => ("sh".to_string(), vec!["-c".to_string(), line.clone()]),
            (None, Some((program, args))) => (program.clone(), args.to_vec()),
            (None, None) => (String::new(), Vec::new()),
        };
        ProcessInfo {
            cmd,
            args,
            envs: self.env.clone(),
            cwd: self.cwd.clone(),
            tag: None,
        }
    }

    fn exec(self) -> Result<Exec, ApiError> {
        let mut exec = match (self.shell, self.command.split_first()) {
            (Some(line), None) => Exec::shell(line),
            (None, Some((program, args))) => Exec::new(program).args(args.iter().cloned()),
            _ => {
                return Err(ApiError::bad_request(
                    "give either `command` (a program and its arguments) or `shell`",
                ))
            }
        };
        for (k, v) in self.env {
            exec = exec.env(k, v);
        }
        if let Some(dir) = self.cwd {
            exec = exec.cwd(dir);
        }
        if let Some(user) = self.user {
            exec = exec.user(user);
        }
        if let Some(secs) = self.timeout_secs {
            let limit = Duration::try_from_secs_f64(secs)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    ApiError::bad_request(format!("timeout_secs {secs} is not a positive number"))
                })?;
            exec = exec.timeout(limit);
        }
        match (self.stdin, self.stdin_open) {
            (Some(_), true) => Err(ApiError::bad_request(
                "give `stdin` or `stdin_open`, not both",
            )),
            (Some(text), false) => Ok(exec.stdin_bytes(text.into_bytes())),
            (None, true) => Ok(exec.stdin_stream()),
            (None, false) => Ok(exec),
        }
    }
}

/// How a command ended, and what it wrote.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ExecResult {
    /// Its exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    /// Whether its timeout killed it.
    pub timed_out: bool,
    /// Its stdout (UTF-8, lossy; head and tail past 16 MiB).
    pub stdout: String,
    /// Its stderr, likewise.
    pub stderr: String,
}

fn ended(status: &ExitStatus) -> (Option<i32>, Option<i32>, bool) {
    (status.code, status.signal, status.timed_out)
}

/// Runs a command to its end and returns its output.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec", params(("id" = String, Path)),
    request_body = ExecRequest,
    responses((status = 200, body = ExecResult), (status = 400, body = ApiError),
        (status = 403, body = ApiError), (status = 404, body = ApiError)))]
pub(crate) async fn run(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(request): Body<ExecRequest>,
) -> Result<Json<ExecResult>, ApiError> {
    if request.stdin_open {
        return Err(ApiError::bad_request("`stdin_open` is for exec/stream"));
    }
    let exec = request.exec()?.max_output(MAX_COLLECTED);
    let live = live(&state, &id)?;
    let out = live
        .sandbox
        .exec(exec)
        .await
        .map_err(ApiError::from_sandbox)?;
    let (exit_code, signal, timed_out) = ended(&out.status);
    Ok(Json(ExecResult {
        exit_code,
        signal,
        timed_out,
        stdout: out.stdout_text(),
        stderr: out.stderr_text(),
    }))
}

/// One event of a followed command (the SSE event's data; its name is
/// the `event` field).
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum ExecStreamEvent {
    /// The command runs, as this guest pid.
    Started {
        /// Its pid, for `.../processes/{pid}`.
        pid: u32,
    },
    /// Bytes of its stdout, base64.
    Stdout {
        /// The bytes, base64.
        data: String,
    },
    /// Bytes of its stderr, base64.
    Stderr {
        /// The bytes, base64.
        data: String,
    },
    /// It ended; nothing follows.
    Exit {
        /// Its exit code, when it exited.
        exit_code: Option<i32>,
        /// The signal that ended it.
        signal: Option<i32>,
        /// Whether its timeout killed it.
        timed_out: bool,
    },
    /// Following it failed; nothing follows.
    Error {
        /// Why.
        message: String,
    },
}

impl ExecStreamEvent {
    fn sse(&self) -> Event {
        let name = match self {
            ExecStreamEvent::Started { .. } => "started",
            ExecStreamEvent::Stdout { .. } => "stdout",
            ExecStreamEvent::Stderr { .. } => "stderr",
            ExecStreamEvent::Exit { .. } => "exit",
            ExecStreamEvent::Error { .. } => "error",
        };
        Event::default()
            .event(name)
            .data(serde_json::to_string(self).unwrap_or_default())
    }
}

/// Starts a command and follows it: `started` (its pid), `stdout` and
/// `stderr` (base64), then `exit`. Closing the stream kills the command.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec/stream", params(("id" = String, Path)),
    request_body = ExecRequest,
    responses((status = 200, description = "text/event-stream of ExecStreamEvent", body = ExecStreamEvent),
        (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub(crate) async fn stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(request): Body<ExecRequest>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let info = request.info();
    let exec = request.exec()?;
    let live = live(&state, &id)?;
    let running = live
        .sandbox
        .exec_stream(exec)
        .await
        .map_err(ApiError::from_sandbox)?;
    let (process, events) = live.processes.start(running, info, Unfollowed::Killed);
    let b64 = |d: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(d);
    let started = futures::stream::iter([ExecStreamEvent::Started { pid: process.pid }]);
    let followed =
        tokio_stream::wrappers::ReceiverStream::new(events).map(move |event| match event {
            ProcessEvent::Stdout(d) => ExecStreamEvent::Stdout { data: b64(d) },
            ProcessEvent::Stderr(d) => ExecStreamEvent::Stderr { data: b64(d) },
            ProcessEvent::Exit(status) => {
                let (exit_code, signal, timed_out) = ended(&status);
                ExecStreamEvent::Exit {
                    exit_code,
                    signal,
                    timed_out,
                }
            }
            ProcessEvent::Failed(message) => ExecStreamEvent::Error { message },
        });
    let events = started.chain(followed).map(|e| Ok(e.sse()));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// The followed process `pid` of sandbox `id`, or 404.
fn followed(state: &AppState, id: &str, pid: u32) -> Result<Arc<Process>, ApiError> {
    live(state, id)?.processes.get(pid).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no process {pid} is followed"),
        )
    })
}

/// Whether to close stdin after the body is written.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct StdinParams {
    /// Close stdin after writing the body (the command reads end-of-file).
    #[serde(default)]
    pub eof: bool,
}

/// Writes the body to a followed command's stdin.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/processes/{pid}/stdin",
    params(("id" = String, Path), ("pid" = u32, Path), StdinParams),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 204), (status = 404, body = ApiError)))]
pub(crate) async fn stdin(
    State(state): State<AppState>,
    Path((id, pid)): Path<(String, u32)>,
    Query(params): Query<StdinParams>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let process = followed(&state, &id, pid)?;
    let writer = process.stdin();
    if !body.is_empty() {
        writer.write(&body).await.map_err(ApiError::from_sandbox)?;
    }
    if params.eof {
        writer.close().map_err(ApiError::from_sandbox)?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Kills a followed command and everything it started.
#[utoipa::path(delete, path = "/v1/sandboxes/{id}/processes/{pid}",
    params(("id" = String, Path), ("pid" = u32, Path)),
    responses((status = 204), (status = 404, body = ApiError)))]
pub(crate) async fn kill(
    State(state): State<AppState>,
    Path((id, pid)): Path<(String, u32)>,
) -> Result<StatusCode, ApiError> {
    let process = followed(&state, &id, pid)?;
    process
        .stdin()
        .kill_command()
        .map_err(ApiError::from_sandbox)?;
    Ok(StatusCode::NO_CONTENT)
}
