//! Runs: submit a spec (inline or by path) with input, list, get, follow
//! its events as Server-Sent Events (resuming after `Last-Event-ID`),
//! cancel, and read a stage's output.

use std::convert::Infallible;
use std::path::PathBuf;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures::Stream;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use void_box::spec::HostAccess;

use super::{ApiError, AppState, Body};
use crate::runs::StartError;
use crate::spec_text::{self, SpecTextError};
use crate::store::StoredRun;

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

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Status {
    /// Waiting for its turn in the generate lane.
    Queued,
    /// Under way.
    Running,
    /// Ended, every stage well.
    Succeeded,
    /// Ended with an error (or the daemon stopped while it ran).
    Failed,
    /// Cancelled.
    Cancelled,
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
    /// workflow's output; a command's stdout. Any JSON value.
    pub output: Option<serde_json::Value>,
    /// Why it failed.
    pub error: Option<String>,
    /// The whole result (stages, usage, cost), once it ended.
    pub result: Option<serde_json::Value>,
    /// Events kept so far.
    pub events: u64,
    /// Events dropped past the daemon's bound.
    pub events_dropped: u64,
}

fn info(run: StoredRun, with_result: bool) -> RunInfo {
    RunInfo {
        status: match run.status.as_str() {
            "queued" => Status::Queued,
            "running" => Status::Running,
            "succeeded" => Status::Succeeded,
            "cancelled" => Status::Cancelled,
            _ => Status::Failed,
        },
        id: run.id,
        name: run.name,
        kind: run.kind,
        created_unix_ms: run.created_unix_ms,
        ended_unix_ms: run.ended_unix_ms,
        output: run.output,
        error: run.error,
        result: run.result.filter(|_| with_result),
        events: run.events,
        events_dropped: run.events_dropped,
    }
}

fn run_of(state: &AppState, id: &str) -> Result<StoredRun, ApiError> {
    state
        .runs
        .get(id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no run `{id}`")))
}

/// Checks a spec and starts running it.
#[utoipa::path(post, path = "/v1/runs", request_body = SubmitRun,
    responses((status = 201, body = RunInfo), (status = 400, body = ApiError),
        (status = 422, body = ApiError),
        (status = 429, description = "the generate lane's queue is full (Retry-After)", body = ApiError)))]
pub(crate) async fn submit(
    State(state): State<AppState>,
    Body(request): Body<SubmitRun>,
) -> Result<(StatusCode, Json<RunInfo>), ApiError> {
    let unprocessable = |e: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e);
    let spec = match (request.spec, request.path) {
        (Some(text), None) => {
            spec_text::parse(&text, request.format.as_deref()).map_err(|e| match e {
                SpecTextError::Format(m) => ApiError::bad_request(m),
                SpecTextError::Spec(m) => unprocessable(m),
                SpecTextError::Io(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m),
            })?
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
    let run = state
        .runs
        .start(
            spec.name().to_string(),
            spec.kind().to_string(),
            runnable,
            request.input,
        )
        .map_err(|e| match e {
            StartError::Full(full) => full.error(),
            StartError::Store(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        })?;
    Ok((StatusCode::CREATED, Json(info(run, false))))
}

/// Every run the daemon knows, newest first.
#[utoipa::path(get, path = "/v1/runs", responses((status = 200, body = [RunInfo])))]
pub(crate) async fn list(State(state): State<AppState>) -> Json<Vec<RunInfo>> {
    Json(
        state
            .runs
            .list()
            .into_iter()
            .map(|r| info(r, false))
            .collect(),
    )
}

/// One run, with its whole result once it ended.
#[utoipa::path(get, path = "/v1/runs/{id}", params(("id" = String, Path)),
    responses((status = 200, body = RunInfo), (status = 404, body = ApiError)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunInfo>, ApiError> {
    Ok(Json(info(run_of(&state, &id)?, true)))
}

/// Cancels a running run; its VMs are killed.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", params(("id" = String, Path)),
    responses((status = 200, body = RunInfo), (status = 404, body = ApiError),
        (status = 409, body = ApiError)))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunInfo>, ApiError> {
    run_of(&state, &id)?;
    if !state.runs.cancel(&id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("run `{id}` has ended"),
        ));
    }
    Ok(Json(info(run_of(&state, &id)?, false)))
}

/// Whether to wait for a running run's next events.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct EventsParams {
    /// `false`: end (with `end`) once the events kept so far are sent,
    /// even while the run goes on. Default `true`.
    #[serde(default)]
    pub follow: Option<bool>,
}

/// The run's events as Server-Sent Events, each with its number as `id`
/// and its kind as `event` (data: the event as `voidbox run --output
/// json` prints it), from after `Last-Event-ID`; `end` (the run as it is)
/// closes the stream once the run ended, or with `follow=false` once the
/// kept events are sent.
#[utoipa::path(get, path = "/v1/runs/{id}/events", params(("id" = String, Path),
        ("Last-Event-ID" = Option<u64>, Header, description = "resume after this event"),
        EventsParams),
    responses((status = 200, description = "text/event-stream"), (status = 404, body = ApiError)))]
pub(crate) async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<EventsParams>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let follow = params.follow.unwrap_or(true);
    run_of(&state, &id)?;
    let after = match headers.get("last-event-id") {
        None => 0,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| ApiError::bad_request("Last-Event-ID is not an event number"))?,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    let runs = state.runs.clone();
    tokio::spawn(async move {
        let mut last = after;
        loop {
            // Watched before the store is read, so no news falls between.
            let mut news = runs.watch(&id);
            if let Some(news) = &mut news {
                news.mark_unchanged();
            }
            let events = runs.events_after(&id, last, 256);
            let caught_up = events.is_empty();
            for (n, json) in events {
                let kind = serde_json::from_str::<serde_json::Value>(&json)
                    .ok()
                    .and_then(|v| v["event"].as_str().map(String::from))
                    .unwrap_or_else(|| "event".into());
                let event = Event::default().id(n.to_string()).event(kind).data(json);
                if tx.send(event).await.is_err() {
                    return;
                }
                last = n;
            }
            if !caught_up {
                continue;
            }
            match news {
                Some(mut news) if follow => {
                    if news.changed().await.is_err() {
                        return;
                    }
                }
                // Not running (or not followed): what is kept was sent.
                _ => {
                    let end = runs.get(&id).map(|r| info(r, false));
                    let data = serde_json::to_string(&end).unwrap_or_default();
                    let _ = tx.send(Event::default().event("end").data(data)).await;
                    return;
                }
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
    let report = run_of(&state, &id)?.result.ok_or_else(|| {
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
