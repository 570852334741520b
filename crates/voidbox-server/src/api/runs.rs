//! Runs: submit a spec (inline or by path) with input, list, get, follow
//! its events as Server-Sent Events (resuming after `Last-Event-ID`),
//! cancel, and read a stage's output.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures::Stream;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use void_box::spec::HostAccess;

use super::{ApiError, AppState, Body};
use crate::runs::{Run, Status};

/// A spec to run.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitRun {
    /// The spec's text, YAML (or JSON with `format: json`). Its `file:`
    /// skills resolve in an empty directory of its own.
    #[serde(default)]
    pub spec: Option<String>,
    /// `yaml` (the default) or `json`, for `spec`.
    #[serde(default)]
    pub format: Option<String>,
    /// Or the path of a spec file on the daemon's host.
    #[serde(default)]
    pub path: Option<String>,
    /// Input for the first stage.
    #[serde(default)]
    pub input: Option<String>,
}

/// A run, and how it ended when it did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RunInfo {
    /// Its id.
    pub id: String,
    /// The spec's name.
    pub name: String,
    /// `agent`, `pipeline`, `workflow` or `sandbox`.
    pub kind: String,
    /// Where it is.
    pub status: Status,
    /// When it started (ms since the epoch).
    pub created_unix_ms: u64,
    /// When it ended.
    pub ended_unix_ms: Option<u64>,
    /// Its output: an agent's file, schema output or text; a pipeline's or
    /// workflow's output; a command's stdout.
    #[schema(value_type = Object)]
    pub output: Option<serde_json::Value>,
    /// Why it failed.
    pub error: Option<String>,
    /// The whole result (stages, usage, cost), once it ended.
    #[schema(value_type = Object)]
    pub result: Option<serde_json::Value>,
    /// Events kept so far.
    pub events: u64,
    /// Events dropped past the daemon's bound.
    pub events_dropped: u64,
}

fn info(run: &Run, with_result: bool) -> RunInfo {
    let state = run.state();
    let ending = state.ending.as_ref();
    RunInfo {
        id: run.id.clone(),
        name: run.name.clone(),
        kind: run.kind.clone(),
        status: state.status,
        created_unix_ms: run.created_unix_ms,
        ended_unix_ms: state.ended_unix_ms,
        output: ending.and_then(|e| e.output.clone()),
        error: match state.status {
            Status::Cancelled => Some("cancelled".into()),
            _ => ending.and_then(|e| e.error.clone()),
        },
        result: ending
            .filter(|_| with_result)
            .and_then(|e| e.report.clone()),
        events: state.kept() as u64,
        events_dropped: state.events_dropped,
    }
}

fn run_of(state: &AppState, id: &str) -> Result<Arc<Run>, ApiError> {
    state
        .runs
        .get(id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no run `{id}`")))
}

/// Checks a spec and starts running it.
#[utoipa::path(post, path = "/v1/runs", request_body = SubmitRun,
    responses((status = 201, body = RunInfo), (status = 400, body = ApiError),
        (status = 422, body = ApiError)))]
pub(crate) async fn submit(
    State(state): State<AppState>,
    Body(request): Body<SubmitRun>,
) -> Result<(StatusCode, Json<RunInfo>), ApiError> {
    let unprocessable = |e: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e);
    // The directory an inline spec lives in: empty, its own.
    let home = tempfile::tempdir()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let spec = match (request.spec, request.path) {
        (Some(text), None) => {
            let name = match request.format.as_deref() {
                None | Some("yaml") => "spec.yaml",
                Some("json") => "spec.json",
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "format `{other}` is neither yaml nor json"
                    )))
                }
            };
            void_box::spec::parse_with(&text, home.path().join(name), HostAccess::default())
                .map_err(|e| unprocessable(e.to_string()))?
        }
        (None, Some(path)) => {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(ApiError::bad_request("`path` must be absolute"));
            }
            void_box::spec::load_with(&path, HostAccess::default())
                .map_err(|e| unprocessable(e.to_string()))?
        }
        _ => {
            return Err(ApiError::bad_request(
                "give either `spec` (its text) or `path`",
            ))
        }
    };
    let runnable = spec.runnable().map_err(|e| unprocessable(e.to_string()))?;
    let run = state.runs.start(
        spec.name().to_string(),
        spec.kind().to_string(),
        runnable,
        request.input,
    );
    Ok((StatusCode::CREATED, Json(info(&run, false))))
}

/// Every run the daemon knows, newest first.
#[utoipa::path(get, path = "/v1/runs", responses((status = 200, body = [RunInfo])))]
pub(crate) async fn list(State(state): State<AppState>) -> Json<Vec<RunInfo>> {
    Json(state.runs.list().iter().map(|r| info(r, false)).collect())
}

/// One run, with its whole result once it ended.
#[utoipa::path(get, path = "/v1/runs/{id}", params(("id" = String, Path)),
    responses((status = 200, body = RunInfo), (status = 404, body = ApiError)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunInfo>, ApiError> {
    let run = run_of(&state, &id)?;
    Ok(Json(info(&run, true)))
}

/// Cancels a running run; its VMs are killed.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", params(("id" = String, Path)),
    responses((status = 200, body = RunInfo), (status = 404, body = ApiError),
        (status = 409, body = ApiError)))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunInfo>, ApiError> {
    let run = run_of(&state, &id)?;
    if !state.runs.cancel(&run) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("run `{id}` has ended"),
        ));
    }
    Ok(Json(info(&run, false)))
}

/// The run's events as Server-Sent Events, each with its number as `id`
/// and its kind as `event` (data: the event as `voidbox run --output
/// json` prints it), from after `Last-Event-ID`; `end` closes the stream
/// once the run ended.
#[utoipa::path(get, path = "/v1/runs/{id}/events", params(("id" = String, Path),
        ("Last-Event-ID" = Option<u64>, Header, description = "resume after this event")),
    responses((status = 200, description = "text/event-stream"), (status = 404, body = ApiError)))]
pub(crate) async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let run = run_of(&state, &id)?;
    let after = match headers.get("last-event-id") {
        None => 0,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| ApiError::bad_request("Last-Event-ID is not an event number"))?,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let mut changed = run.subscribe();
        let mut last = after;
        loop {
            changed.mark_unchanged();
            let (events, ended) = run.events_after(last);
            for (n, json) in events {
                let kind = serde_json::from_str::<serde_json::Value>(&json)
                    .ok()
                    .and_then(|v| v["event"].as_str().map(String::from))
                    .unwrap_or_else(|| "event".into());
                let event = Event::default().id(n.to_string()).event(kind).data(&*json);
                if tx.send(event).await.is_err() {
                    return;
                }
                last = n;
            }
            if ended {
                let status = serde_json::to_string(&info(&run, false)).unwrap_or_default();
                let _ = tx.send(Event::default().event("end").data(status)).await;
                return;
            }
            if changed.changed().await.is_err() {
                return;
            }
        }
    });
    let stream = futures::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// A box's or step's output in an ended run: its output file, else its
/// output, text or stdout.
#[utoipa::path(get, path = "/v1/runs/{id}/stages/{stage}/output",
    params(("id" = String, Path), ("stage" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = ApiError)))]
pub(crate) async fn stage_output(
    State(state): State<AppState>,
    Path((id, stage)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let run = run_of(&state, &id)?;
    let report = run
        .state()
        .ending
        .as_ref()
        .and_then(|e| e.report.clone())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("run `{id}` has no result yet"),
            )
        })?;
    let found = stage_named(&report, &stage).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("run `{id}` has no stage `{stage}`"),
        )
    })?;
    let output = ["file", "output", "text", "stdout"]
        .iter()
        .find_map(|k| {
            found
                .get(*k)
                .or_else(|| found.get("result").and_then(|r| r.get(*k)))
                .filter(|v| !v.is_null())
        })
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    Ok(Json(output))
}

/// The box (pipeline), step (workflow) or the agent itself named `name`
/// in a run's result.
fn stage_named<'a>(report: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    let named = |v: &&serde_json::Value| v["name"] == name || v["box_name"] == name;
    if let Some(stages) = report["stages"].as_array() {
        return stages
            .iter()
            .filter_map(|s| s["boxes"].as_array())
            .flatten()
            .find(named);
    }
    if let Some(steps) = report["steps"].as_array() {
        return steps.iter().find(named);
    }
    Some(report).filter(named)
}
