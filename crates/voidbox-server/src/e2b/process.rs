//! envd's `process.Process` service over our guest protocol: `Start`
//! (followed as a stream; the command outlives its client), `Connect`
//! (follow a running one again), `List`, `SendInput`, `CloseStdin`,
//! `SendSignal`. PTYs (`Update`, a `pty` in `Start`) and `StreamInput`
//! are not served.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use void_box::{Exec, ExitStatus};

use super::connect::{
    header_text, stream_error, stream_request, stream_response, unary_request, unary_response,
    Code, ConnectError,
};
use super::{absolute, envd_user, home_of, keepalive_interval, EnvdSandbox};
use crate::processes::{Process, ProcessEvent, ProcessInfo, Unfollowed};
use crate::registry::Live;

#[derive(Debug, Deserialize, Serialize, Default, Clone)]
#[serde(default)]
struct ProcessConfig {
    cmd: String,
    args: Vec<String>,
    envs: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cwd: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct StartRequest {
    process: ProcessConfig,
    pty: Option<Value>,
    tag: Option<String>,
    stdin: Option<bool>,
}

/// `{"pid": N}` or `{"tag": "..."}`.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct Selector {
    pid: Option<u32>,
    tag: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct Selected {
    process: Selector,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct SendInputRequest {
    process: Selector,
    input: Input,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct Input {
    stdin: Option<String>,
    pty: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct SendSignalRequest {
    process: Selector,
    signal: String,
}

/// Every `process.Process` method.
pub(crate) async fn call(
    EnvdSandbox(live): EnvdSandbox,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let unary = |result: Result<Value, ConnectError>| match result {
        Ok(message) => unary_response(message),
        Err(e) => e.into_response(),
    };
    match method.as_str() {
        "Start" => match stream_request::<StartRequest>(&body) {
            Ok(request) => start(&live, request, &headers).await,
            Err(e) => stream_error(e),
        },
        "Connect" => match stream_request::<Selected>(&body) {
            Ok(request) => match find(&live, &request.process) {
                Ok(process) => follow(process.pid, process.follow(), &headers),
                Err(e) => stream_error(e),
            },
            Err(e) => stream_error(e),
        },
        "List" => unary(Ok(list(&live))),
        "SendInput" => unary(send_input(&live, &body).await),
        "CloseStdin" => unary(unary_request::<Selected>(&body).and_then(|r| {
            let process = find(&live, &r.process)?;
            process
                .stdin()
                .close()
                .map_err(ConnectError::from_sandbox)?;
            Ok(json!({}))
        })),
        "SendSignal" => unary(unary_request::<SendSignalRequest>(&body).and_then(|r| {
            if !matches!(r.signal.as_str(), "SIGNAL_SIGKILL" | "SIGNAL_SIGTERM") {
                return Err(ConnectError::invalid(format!(
                    "signal `{}`: SIGNAL_SIGKILL or SIGNAL_SIGTERM",
                    r.signal
                )));
            }
            // Both end the command and all it started (SIGKILL to its group).
            let process = find(&live, &r.process)?;
            process
                .stdin()
                .kill_command()
                .map_err(ConnectError::from_sandbox)?;
            Ok(json!({}))
        })),
        "Update" | "StreamInput" => unary(Err(ConnectError::new(
            Code::Unimplemented,
            format!("process.Process/{method}: PTYs and streamed input are not served"),
        ))),
        _ => unary(Err(ConnectError::new(
            Code::Unimplemented,
            format!("process.Process/{method} does not exist"),
        ))),
    }
}

fn find(live: &Live, selector: &Selector) -> Result<Arc<Process>, ConnectError> {
    let found = match (selector.pid, &selector.tag) {
        (Some(pid), _) => live.processes.get(pid),
        (None, Some(tag)) => live.processes.tagged(tag),
        (None, None) => return Err(ConnectError::invalid("select a process by pid or tag")),
    };
    found.ok_or_else(|| ConnectError::not_found("no such process is running"))
}

async fn start(live: &Arc<Live>, request: StartRequest, headers: &HeaderMap) -> Response {
    if request.pty.is_some() {
        return stream_error(ConnectError::new(
            Code::Unimplemented,
            "PTYs are not served",
        ));
    }
    let user = envd_user(headers);
    let config = request.process;
    let cwd = absolute(
        config.cwd.as_deref().unwrap_or(home_of(user.as_deref())),
        user.as_deref(),
    );
    let mut exec = Exec::new(&config.cmd)
        .args(config.args.iter().cloned())
        .cwd(&cwd);
    // The sandbox's create-time variables, under the command's own.
    let defaults = live.e2b.as_ref().map(|e| &e.envs);
    for (k, v) in defaults.into_iter().flatten().chain(&config.envs) {
        exec = exec.env(k, v);
    }
    if let Some(user) = &user {
        exec = exec.user(user);
    }
    // envd runs a command for at most its call's deadline (0: none).
    let limit = header_text(headers, "connect-timeout-ms")
        .and_then(|ms| ms.parse::<u64>().ok())
        .filter(|ms| *ms > 0);
    if let Some(ms) = limit {
        exec = exec.timeout(Duration::from_millis(ms));
    }
    if request.stdin == Some(true) {
        exec = exec.stdin_stream();
    }
    let stream = match live.sandbox.exec_stream(exec).await {
        Ok(stream) => stream,
        Err(e) => return stream_error(ConnectError::from_sandbox(e)),
    };
    let info = ProcessInfo {
        cmd: config.cmd,
        args: config.args,
        envs: config.envs,
        cwd: Some(cwd),
        tag: request.tag,
    };
    let (process, events) = live.processes.start(stream, info, Unfollowed::RunsOn);
    follow(process.pid, events, headers)
}

/// A followed process as envd's stream: `start`, `data`, then `end`,
/// with a `keepalive` every `Keepalive-Ping-Interval` seconds.
fn follow(pid: u32, events: mpsc::Receiver<ProcessEvent>, headers: &HeaderMap) -> Response {
    stream_response(messages(pid, events, keepalive_interval(headers)))
}

fn messages(
    pid: u32,
    mut events: mpsc::Receiver<ProcessEvent>,
    keepalive: Duration,
) -> impl Stream<Item = Result<Value, ConnectError>> + Send {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let event = |e: Value| Ok(json!({ "event": e }));
        if tx
            .send(event(json!({"start": {"pid": pid}})))
            .await
            .is_err()
        {
            return;
        }
        let mut ticks =
            tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
        loop {
            let message = tokio::select! {
                got = events.recv() => match got {
                    Some(ProcessEvent::Stdout(d)) => event(json!({"data": {"stdout": b64(&d)}})),
                    Some(ProcessEvent::Stderr(d)) => event(json!({"data": {"stderr": b64(&d)}})),
                    Some(ProcessEvent::Exit(status)) => {
                        let end = end_of(&status);
                        let _ = tx.send(end).await;
                        return;
                    }
                    Some(ProcessEvent::Failed(message)) => {
                        let _ = tx.send(Err(ConnectError::new(Code::Unavailable, message))).await;
                        return;
                    }
                    None => return,
                },
                _ = ticks.tick() => event(json!({"keepalive": {}})),
            };
            // The client went away: the command runs on without it.
            if tx.send(message).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// envd's `end` event (a command its deadline killed ends the call with
/// `deadline_exceeded`, as envd's context does).
fn end_of(status: &ExitStatus) -> Result<Value, ConnectError> {
    if status.timed_out {
        return Err(ConnectError::new(
            Code::DeadlineExceeded,
            "the command's timeout passed; it was killed",
        ));
    }
    let end = match (status.code, status.signal) {
        (Some(code), _) => {
            json!({"exitCode": code, "exited": true, "status": format!("exit status {code}")})
        }
        (None, Some(signal)) => json!({
            "exitCode": -1,
            "exited": false,
            "status": format!("signal: {}", signal_name(signal)),
        }),
        (None, None) => json!({"exitCode": -1, "exited": false, "status": "unknown"}),
    };
    Ok(json!({"event": {"end": end}}))
}

/// Go's names for the signals a command is most often ended by.
fn signal_name(signal: i32) -> String {
    match signal {
        9 => "killed".into(),
        15 => "terminated".into(),
        2 => "interrupt".into(),
        6 => "aborted".into(),
        11 => "segmentation fault".into(),
        13 => "broken pipe".into(),
        other => format!("signal {other}"),
    }
}

fn list(live: &Live) -> Value {
    let processes: Vec<Value> = live
        .processes
        .list()
        .iter()
        .map(|p| {
            let config = ProcessConfig {
                cmd: p.info.cmd.clone(),
                args: p.info.args.clone(),
                envs: p.info.envs.clone(),
                cwd: p.info.cwd.clone(),
            };
            let mut info = json!({"config": config, "pid": p.pid});
            if let Some(tag) = &p.info.tag {
                info["tag"] = json!(tag);
            }
            info
        })
        .collect();
    json!({ "processes": processes })
}

async fn send_input(live: &Live, body: &Bytes) -> Result<Value, ConnectError> {
    let request: SendInputRequest = unary_request(body)?;
    if request.input.pty.is_some() {
        return Err(ConnectError::new(
            Code::Unimplemented,
            "PTYs are not served",
        ));
    }
    let data = base64::engine::general_purpose::STANDARD
        .decode(request.input.stdin.unwrap_or_default())
        .map_err(|e| ConnectError::invalid(format!("input.stdin is not base64: {e}")))?;
    let process = find(live, &request.process)?;
    process
        .stdin()
        .write(&data)
        .await
        .map_err(ConnectError::from_sandbox)?;
    Ok(json!({}))
}
