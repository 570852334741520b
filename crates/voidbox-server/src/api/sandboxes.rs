//! Sandboxes: create from a configuration, list, get, end, set a timeout.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use void_box::SandboxConfig;

use super::{ApiError, AppState, Body};
use crate::registry::{CreateError, Live};

/// Most seconds a timeout may be (a day).
const MAX_TIMEOUT_SECS: u64 = 24 * 3600;

/// A sandbox to create.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateSandbox {
    /// Its configuration, as `SandboxConfig` serializes (every field has a
    /// default: `{}` is the default sandbox; `{"snapshot": "py"}` starts
    /// from a snapshot; `{"image": "python:3.12-slim", "memory_mb": 1024}`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub config: Option<serde_json::Value>,
    /// Seconds until it is ended; none: until it is deleted or the daemon
    /// stops.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Labels of the caller's, returned as given.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A sandbox the daemon holds.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SandboxInfo {
    /// Its id.
    pub id: String,
    /// `kvm` or `tcg`.
    pub accel: String,
    /// How long it took to start (a boot or a restore).
    pub boot_ms: u64,
    /// When it was created (ms since the epoch).
    pub created_unix_ms: u64,
    /// When it will be ended, if it has a timeout.
    pub expires_unix_ms: Option<u64>,
    /// Guest RAM.
    pub memory_mb: u32,
    /// Guest CPUs.
    pub vcpus: u32,
    /// Its OCI image.
    pub image: Option<String>,
    /// The snapshot it started from.
    pub snapshot: Option<String>,
    /// The caller's labels.
    pub metadata: BTreeMap<String, String>,
}

impl SandboxInfo {
    pub fn of(live: &Live) -> SandboxInfo {
        SandboxInfo {
            id: live.sandbox.id(),
            accel: live.sandbox.accel().to_string(),
            boot_ms: live.sandbox.boot_time().as_millis() as u64,
            created_unix_ms: live.created_unix_ms,
            expires_unix_ms: live.expires_unix_ms(),
            memory_mb: live.memory_mb,
            vcpus: live.vcpus,
            image: live.image.clone(),
            snapshot: live.snapshot.clone(),
            metadata: live.metadata.clone(),
        }
    }
}

/// A new timeout.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetTimeout {
    /// Seconds from now until the sandbox is ended.
    pub timeout_secs: u64,
}

fn timeout(secs: Option<u64>) -> Result<Option<Duration>, ApiError> {
    match secs {
        Some(s) if s == 0 || s > MAX_TIMEOUT_SECS => Err(ApiError::bad_request(format!(
            "timeout_secs {s} is outside 1-{MAX_TIMEOUT_SECS}"
        ))),
        other => Ok(other.map(Duration::from_secs)),
    }
}

/// The sandbox `id`, or 404.
pub(crate) fn live(state: &AppState, id: &str) -> Result<Arc<Live>, ApiError> {
    state
        .registry
        .get(id)
        .ok_or_else(|| ApiError::no_sandbox(id))
}

/// Boots a sandbox (or restores it from a snapshot) and holds it.
#[utoipa::path(post, path = "/v1/sandboxes", request_body = CreateSandbox,
    responses((status = 201, body = SandboxInfo), (status = 400, body = ApiError),
        (status = 422, body = ApiError), (status = 429, body = ApiError)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    Body(request): Body<CreateSandbox>,
) -> Result<(StatusCode, Json<SandboxInfo>), ApiError> {
    let config: SandboxConfig = match request.config {
        None => SandboxConfig::default(),
        Some(value) => serde_json::from_value(value)
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("config: {e}")))?,
    };
    let after = timeout(request.timeout_secs)?;
    let live = state
        .registry
        .create(config, after, request.metadata, None, None)
        .await
        .map_err(|e| match e {
            // A sandbox ends in seconds (a delete, a timeout): try then.
            CreateError::Full(max) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("{max} sandboxes are alive, the daemon's limit"),
            )
            .retry_after(5),
            CreateError::Config(why) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, why),
            CreateError::Boot(e) => ApiError::from_sandbox(e),
        })?;
    Ok((StatusCode::CREATED, Json(SandboxInfo::of(&live))))
}

/// Every sandbox the daemon holds.
#[utoipa::path(get, path = "/v1/sandboxes", responses((status = 200, body = [SandboxInfo])))]
pub(crate) async fn list(State(state): State<AppState>) -> Json<Vec<SandboxInfo>> {
    Json(
        state
            .registry
            .list()
            .iter()
            .map(|l| SandboxInfo::of(l))
            .collect(),
    )
}

/// One sandbox.
#[utoipa::path(get, path = "/v1/sandboxes/{id}", params(("id" = String, Path)),
    responses((status = 200, body = SandboxInfo), (status = 404, body = ApiError)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SandboxInfo>, ApiError> {
    let live = live(&state, &id)?;
    Ok(Json(SandboxInfo::of(&live)))
}

/// Ends a sandbox now.
#[utoipa::path(delete, path = "/v1/sandboxes/{id}", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ApiError)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.registry.end(&id, "deleted") {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::no_sandbox(&id))
    }
}

/// Ends the sandbox `timeout_secs` from now.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/timeout", params(("id" = String, Path)),
    request_body = SetTimeout,
    responses((status = 204), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub(crate) async fn set_timeout(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(request): Body<SetTimeout>,
) -> Result<StatusCode, ApiError> {
    let after = timeout(Some(request.timeout_secs))?;
    live(&state, &id)?.set_timeout(after);
    Ok(StatusCode::NO_CONTENT)
}
