//! Agent sessions: create from an agent spec, turns (`generate`,
//! `stream`, `generate_object`), history, context usage, clear, compact,
//! cancel, confirmations, destroy.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use void_box::agent::Decision;

use super::{ApiError, AppState, Body};
use crate::sessions::{Session, SessionOptions, Totals, TurnError, TurnEvent};

/// A session.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SessionInfo {
    /// Its id.
    pub id: String,
    /// The agent's name.
    pub name: String,
    /// When it was made (ms since the epoch).
    pub created_unix_ms: u64,
    /// Messages in its conversation.
    pub messages: usize,
    /// Whether a turn is under way.
    pub busy: bool,
    /// Tokens, cost and turns so far.
    #[schema(value_type = Object)]
    pub totals: Totals,
}

fn info(session: &Session) -> SessionInfo {
    SessionInfo {
        id: session.id.clone(),
        name: session.name.clone(),
        created_unix_ms: session.created_unix_ms,
        messages: session.history().len(),
        busy: session.busy(),
        totals: session.totals(),
    }
}

fn session_of(state: &AppState, id: &str) -> Result<Arc<Session>, ApiError> {
    state
        .sessions
        .get(id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no session `{id}`")))
}

fn turn_error(e: TurnError) -> ApiError {
    match e {
        TurnError::Busy => ApiError::new(StatusCode::CONFLICT, "a turn is under way"),
        TurnError::Full(full) => full.error(),
        TurnError::Invalid(message) => ApiError::bad_request(message),
        TurnError::Failed(message) => ApiError::new(StatusCode::BAD_GATEWAY, message),
    }
}

/// Makes a session of an agent spec (`kind: agent`).
#[utoipa::path(post, path = "/v1/sessions", request_body = SessionOptions,
    responses((status = 201, body = SessionInfo), (status = 422, body = ApiError)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    Body(options): Body<SessionOptions>,
) -> Result<(StatusCode, Json<SessionInfo>), ApiError> {
    let session = state
        .sessions
        .create(options)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    Ok((StatusCode::CREATED, Json(info(&session))))
}

/// Every open session.
#[utoipa::path(get, path = "/v1/sessions", responses((status = 200, body = [SessionInfo])))]
pub(crate) async fn list(State(state): State<AppState>) -> Json<Vec<SessionInfo>> {
    Json(state.sessions.list().iter().map(|s| info(s)).collect())
}

/// One session.
#[utoipa::path(get, path = "/v1/sessions/{id}", params(("id" = String, Path)),
    responses((status = 200, body = SessionInfo), (status = 404, body = ApiError)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SessionInfo>, ApiError> {
    Ok(Json(info(&*session_of(&state, &id)?)))
}

/// Ends a session: its turn cancelled, its sandbox gone.
#[utoipa::path(delete, path = "/v1/sessions/{id}", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ApiError)))]
pub(crate) async fn destroy(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.sessions.destroy(&id).await {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no session `{id}`"),
        ))
    }
}

/// A user's turn.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TurnRequest {
    /// What the user says.
    pub message: String,
    /// `generate_object` (required there): the JSON Schema the answer
    /// must validate against.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub schema: Option<serde_json::Value>,
}

/// The turn's events until its end: its result, or why it failed.
async fn until_done(
    mut events: tokio::sync::mpsc::Receiver<TurnEvent>,
) -> Result<serde_json::Value, ApiError> {
    while let Some(event) = events.recv().await {
        match event {
            TurnEvent::Done { result } => return Ok(result),
            TurnEvent::Error { message } => {
                return Err(ApiError::new(StatusCode::BAD_GATEWAY, message))
            }
            _ => {}
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "the turn was cancelled",
    ))
}

/// One turn: the agent loop on the conversation and `message`, tools in
/// the session's sandbox; answers once the model does.
#[utoipa::path(post, path = "/v1/sessions/{id}/generate", params(("id" = String, Path)),
    request_body = TurnRequest,
    responses((status = 200, description = "the turn's result: {text, output, tool_calls, usage, cost_usd, model_calls}", body = Object),
        (status = 400, body = ApiError), (status = 404, body = ApiError),
        (status = 409, description = "another turn is under way, or this one was cancelled", body = ApiError),
        (status = 429, body = ApiError), (status = 502, description = "the model or the sandbox failed", body = ApiError)))]
pub(crate) async fn generate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(request): Body<TurnRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let session = session_of(&state, &id)?;
    let events = state
        .sessions
        .turn(&session, request.message, request.schema)
        .map_err(turn_error)?;
    Ok(Json(until_done(events).await?))
}

/// A turn whose answer is a JSON value valid against `schema`
/// (`result.output`).
#[utoipa::path(post, path = "/v1/sessions/{id}/generate_object", params(("id" = String, Path)),
    request_body = TurnRequest,
    responses((status = 200, description = "the turn's result, `output` the JSON value", body = Object),
        (status = 400, body = ApiError), (status = 404, body = ApiError),
        (status = 409, body = ApiError), (status = 429, body = ApiError),
        (status = 502, body = ApiError)))]
pub(crate) async fn generate_object(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(request): Body<TurnRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if request.schema.is_none() {
        return Err(ApiError::bad_request("`schema` is required"));
    }
    generate(State(state), Path(id), Body(request)).await
}

/// A turn followed as Server-Sent Events: `text_delta`, `tool_call`,
/// `tool_result`, `confirmation_required` (answer it at
/// `.../confirmations/{id}`), `confirmation_answered`, `usage`, then
/// `done` (the result) or `error`.
#[utoipa::path(post, path = "/v1/sessions/{id}/stream", params(("id" = String, Path)),
    request_body = TurnRequest,
    responses((status = 200, description = "text/event-stream of TurnEvent"), (status = 400, body = ApiError),
        (status = 404, body = ApiError), (status = 409, body = ApiError), (status = 429, body = ApiError)))]
pub(crate) async fn stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(request): Body<TurnRequest>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let session = session_of(&state, &id)?;
    let events = state
        .sessions
        .turn(&session, request.message, request.schema)
        .map_err(turn_error)?;
    let followed = tokio_stream::wrappers::ReceiverStream::new(events)
        .chain(futures::stream::once(async {
            // The channel closed: a cancel (the turn's last event, when it
            // ended, was sent before).
            TurnEvent::Error {
                message: "the turn was cancelled".into(),
            }
        }))
        .scan(false, |done, event| {
            let last = *done;
            *done = *done || matches!(event, TurnEvent::Done { .. } | TurnEvent::Error { .. });
            futures::future::ready((!last).then_some(event))
        })
        .map(|event| {
            let json = serde_json::to_value(&event).unwrap_or_default();
            let name = json["event"].as_str().unwrap_or("event").to_string();
            Ok(Event::default().event(name).data(json.to_string()))
        });
    Ok(Sse::new(followed).keep_alive(KeepAlive::default()))
}

/// The conversation's messages (the model's wire format: roles and
/// content blocks).
#[utoipa::path(get, path = "/v1/sessions/{id}/history", params(("id" = String, Path)),
    responses((status = 200, body = [Object]), (status = 404, body = ApiError)))]
pub(crate) async fn history(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<void_box::llm::Message>>, ApiError> {
    Ok(Json(session_of(&state, &id)?.history()))
}

/// How full the conversation is: messages, their estimated tokens, and
/// the last model call's input tokens.
#[utoipa::path(get, path = "/v1/sessions/{id}/context", params(("id" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = ApiError)))]
pub(crate) async fn context(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let session = session_of(&state, &id)?;
    let history = session.history();
    let bytes = serde_json::to_string(&history).map_or(0, |s| s.len());
    let totals = session.totals();
    Ok(Json(serde_json::json!({
        "messages": history.len(),
        "estimated_tokens": bytes.div_ceil(4),
        "last_input_tokens": totals.last_input_tokens,
        "totals": totals,
    })))
}

/// Forgets the conversation (the sandbox and its files stay).
#[utoipa::path(post, path = "/v1/sessions/{id}/clear", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub(crate) async fn clear(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let session = session_of(&state, &id)?;
    state.sessions.clear(&session).map_err(turn_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replaces the conversation by the model's summary of it.
#[utoipa::path(post, path = "/v1/sessions/{id}/compact", params(("id" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub(crate) async fn compact(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let session = session_of(&state, &id)?;
    let (before, after) = state.sessions.compact(&session).await.map_err(turn_error)?;
    Ok(Json(
        serde_json::json!({"messages_before": before, "messages_after": after}),
    ))
}

/// Cancels the turn under way.
#[utoipa::path(post, path = "/v1/sessions/{id}/cancel", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if session_of(&state, &id)?.cancel() {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(StatusCode::CONFLICT, "no turn is under way"))
    }
}

/// An answer to a `confirmation_required` event.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfirmRequest {
    /// `allow` or `deny`.
    #[schema(value_type = String)]
    pub decision: Decision,
}

/// Answers a confirmation the agent waits for.
#[utoipa::path(post, path = "/v1/sessions/{id}/confirmations/{confirmation}",
    params(("id" = String, Path), ("confirmation" = String, Path)),
    request_body = ConfirmRequest,
    responses((status = 204), (status = 404, body = ApiError)))]
pub(crate) async fn confirm(
    State(state): State<AppState>,
    Path((id, confirmation)): Path<(String, String)>,
    Body(request): Body<ConfirmRequest>,
) -> Result<Response, ApiError> {
    let session = session_of(&state, &id)?;
    if session.confirm(&confirmation, request.decision) {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no confirmation `{confirmation}` is waiting"),
        ))
    }
}
