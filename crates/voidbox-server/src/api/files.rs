//! Files below the guest's writable roots (`/workspace`, `/tmp`): read,
//! write, stat, list, make a directory, remove, rename.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use void_box::FileKind;

use super::sandboxes::live;
use super::{ApiError, AppState, Body, UPLOAD_LIMIT};

/// A guest path.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct PathParam {
    /// Absolute, below `/workspace` or `/tmp`.
    pub path: String,
}

/// A guest path to write, and its mode.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct WriteParams {
    /// Absolute, below `/workspace` or `/tmp`; parents are made.
    pub path: String,
    /// Permission bits (default 0644).
    #[serde(default)]
    pub mode: Option<u32>,
}

/// What a path is.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Stat {
    /// Its name (the last part of the path).
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: String,
    /// Bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Last modification, ms since the epoch.
    pub modified_unix_ms: i64,
}

fn stat_of(name: String, stat: &void_box::FileStat) -> Stat {
    Stat {
        name,
        kind: match stat.kind {
            FileKind::File => "file",
            FileKind::Dir => "dir",
            FileKind::Symlink => "symlink",
            FileKind::Other => "other",
        }
        .into(),
        size: stat.size,
        mode: stat.mode,
        modified_unix_ms: stat.mtime_unix_ns / 1_000_000,
    }
}

fn last_name(path: &str) -> String {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A file's bytes.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/files", params(("id" = String, Path), PathParam),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 413, body = ApiError)))]
pub(crate) async fn read(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<PathParam>,
) -> Result<impl IntoResponse, ApiError> {
    let data = live(&state, &id)?
        .sandbox
        .read_file_limited(&q.path, UPLOAD_LIMIT as u64)
        .await
        .map_err(ApiError::from_sandbox)?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data))
}

/// Writes the body to a file, replacing it whole.
#[utoipa::path(put, path = "/v1/sandboxes/{id}/files", params(("id" = String, Path), WriteParams),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 204), (status = 403, body = ApiError), (status = 404, body = ApiError),
        (status = 413, body = ApiError)))]
pub(crate) async fn write(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<WriteParams>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let live = live(&state, &id)?;
    match q.mode {
        Some(mode) if mode > 0o7777 => {
            return Err(ApiError::bad_request(format!(
                "mode {mode:o} is not permission bits"
            )))
        }
        Some(mode) => live.sandbox.write_file_mode(&q.path, &body, mode).await,
        None => live.sandbox.write_file(&q.path, &body).await,
    }
    .map_err(ApiError::from_sandbox)?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a path is (a final symlink is not followed).
#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/stat", params(("id" = String, Path), PathParam),
    responses((status = 200, body = Stat), (status = 404, body = ApiError)))]
pub(crate) async fn stat(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<PathParam>,
) -> Result<Json<Stat>, ApiError> {
    let stat = live(&state, &id)?
        .sandbox
        .stat(&q.path)
        .await
        .map_err(ApiError::from_sandbox)?;
    Ok(Json(stat_of(last_name(&q.path), &stat)))
}

/// A directory's entries, in name order.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/list", params(("id" = String, Path), PathParam),
    responses((status = 200, body = [Stat]), (status = 404, body = ApiError)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<PathParam>,
) -> Result<Json<Vec<Stat>>, ApiError> {
    let entries = live(&state, &id)?
        .sandbox
        .list(&q.path)
        .await
        .map_err(ApiError::from_sandbox)?;
    Ok(Json(
        entries
            .into_iter()
            .map(|e| stat_of(e.name, &e.stat))
            .collect(),
    ))
}

/// A directory to make.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Mkdir {
    /// Absolute, below `/workspace` or `/tmp`; parents are made.
    pub path: String,
}

/// Makes a directory and its parents.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/mkdir", params(("id" = String, Path)),
    request_body = Mkdir, responses((status = 204), (status = 403, body = ApiError)))]
pub(crate) async fn mkdir(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(request): Body<Mkdir>,
) -> Result<StatusCode, ApiError> {
    live(&state, &id)?
        .sandbox
        .mkdir(&request.path)
        .await
        .map_err(ApiError::from_sandbox)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a file, a symlink or a directory with what it holds.
#[utoipa::path(delete, path = "/v1/sandboxes/{id}/files", params(("id" = String, Path), PathParam),
    responses((status = 204), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<PathParam>,
) -> Result<StatusCode, ApiError> {
    live(&state, &id)?
        .sandbox
        .remove(&q.path)
        .await
        .map_err(ApiError::from_sandbox)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A move.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rename {
    /// What moves.
    pub from: String,
    /// Where to (its directory exists; a file there is replaced).
    pub to: String,
}

/// Moves a file or a directory.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/rename", params(("id" = String, Path)),
    request_body = Rename,
    responses((status = 204), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub(crate) async fn rename(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(request): Body<Rename>,
) -> Result<StatusCode, ApiError> {
    live(&state, &id)?
        .sandbox
        .rename(&request.from, &request.to)
        .await
        .map_err(ApiError::from_sandbox)?;
    Ok(StatusCode::NO_CONTENT)
}
