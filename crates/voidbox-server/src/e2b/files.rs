//! envd's `GET /files` (a file's bytes) and `POST /files` (uploads, as
//! `multipart/form-data` parts named by their destination or as one
//! `application/octet-stream` body), over our file API. Signed URLs are
//! not served: every call carries its sandbox's access token.

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use void_box::ErrorKind;
use void_box_protocol::FileKind;

use super::control::{error, E2bError};
use super::{absolute, envd_user, EnvdSandbox};
use crate::api::{AppState, UPLOAD_LIMIT};

#[derive(Debug, Deserialize)]
pub(crate) struct FileParams {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    username: Option<String>,
}

/// The call's user: `username`, else its Basic authorization; `None`:
/// E2B's `user`, the sandbox's own.
fn user_of(params: &FileParams, headers: &HeaderMap) -> Option<String> {
    match params.username.as_deref() {
        Some("") | Some("user") => None,
        Some(name) => Some(name.to_string()),
        None => envd_user(headers),
    }
}

/// A file error as envd's REST answers it.
fn file_error(path: &str, e: void_box::Error) -> Response {
    let status = match e.guest_kind() {
        Some(ErrorKind::NotFound) => StatusCode::NOT_FOUND,
        Some(ErrorKind::PathEscape) | Some(ErrorKind::NotAllowed) => StatusCode::FORBIDDEN,
        Some(ErrorKind::InvalidRequest) => StatusCode::BAD_REQUEST,
        _ => match e {
            void_box::Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        },
    };
    error(status, format!("{path}: {e}"))
}

/// `GET /files?path=`: the file's bytes.
pub(crate) async fn read(
    EnvdSandbox(live): EnvdSandbox,
    Query(params): Query<FileParams>,
    headers: HeaderMap,
) -> Response {
    let user = user_of(&params, &headers);
    let Some(path) = params.path.as_deref() else {
        return error(StatusCode::BAD_REQUEST, "`path` is required");
    };
    let path = absolute(path, user.as_deref());
    match live.sandbox.stat(&path).await {
        Ok(stat) if stat.kind == FileKind::Dir => {
            return error(StatusCode::BAD_REQUEST, format!("{path} is a directory"))
        }
        Ok(_) => {}
        Err(e) => return file_error(&path, e),
    }
    match live
        .sandbox
        .read_file_limited(&path, UPLOAD_LIMIT as u64)
        .await
    {
        Ok(data) => ([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response(),
        Err(e) => file_error(&path, e),
    }
}

/// `data` decompressed, at most [`UPLOAD_LIMIT`] of it (a gzip bomb
/// stops there).
fn gunzip(data: &[u8]) -> Result<Bytes, E2bError> {
    use std::io::Read;
    let mut plain = Vec::new();
    let read = flate2::read::GzDecoder::new(data)
        .take(UPLOAD_LIMIT as u64 + 1)
        .read_to_end(&mut plain);
    match read {
        Err(e) => Err(E2bError(
            StatusCode::BAD_REQUEST,
            format!("the gzip body: {e}"),
        )),
        Ok(n) if n > UPLOAD_LIMIT => Err(E2bError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the upload inflates past {UPLOAD_LIMIT} bytes"),
        )),
        Ok(_) => Ok(Bytes::from(plain)),
    }
}

/// `POST /files`: writes each uploaded file and lists what it wrote.
pub(crate) async fn write(
    State(state): State<AppState>,
    EnvdSandbox(live): EnvdSandbox,
    Query(params): Query<FileParams>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let user = user_of(&params, &headers);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut uploads: Vec<(String, Bytes)> = Vec::new();
    if content_type.starts_with("multipart/form-data") {
        let mut form = match Multipart::from_request(request, &state).await {
            Ok(form) => form,
            Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
        };
        loop {
            let field = match form.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => break,
                Err(e) => return error(e.status(), e.body_text()),
            };
            // The `path` given, else the part's name: its destination.
            let name = params.path.clone().or_else(|| {
                field
                    .file_name()
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
            });
            let Some(name) = name else {
                return error(StatusCode::BAD_REQUEST, "a part names no destination");
            };
            match field.bytes().await {
                Ok(data) => uploads.push((absolute(&name, user.as_deref()), data)),
                Err(e) => return error(e.status(), e.body_text()),
            }
        }
    } else {
        let gzip = match headers.get(header::CONTENT_ENCODING).map(|v| v.as_bytes()) {
            None | Some(b"identity") => false,
            Some(b"gzip") => true,
            Some(_) => {
                return error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "uploads are plain or gzip",
                )
            }
        };
        let Some(path) = params.path.as_deref() else {
            return error(StatusCode::BAD_REQUEST, "`path` is required");
        };
        let mut data = match Bytes::from_request(request, &state).await {
            Ok(data) => data,
            Err(e) => return error(e.status(), e.body_text()),
        };
        if gzip {
            data = match gunzip(&data) {
                Ok(plain) => plain,
                Err(e) => return e.into_response(),
            };
        }
        uploads.push((absolute(path, user.as_deref()), data));
    }
    if uploads.is_empty() {
        return error(StatusCode::BAD_REQUEST, "no file was uploaded");
    }
    let mut written = Vec::new();
    for (path, data) in uploads {
        if let Err(e) = live.sandbox.write_file(&path, &data).await {
            return file_error(&path, e);
        }
        let name = path.rsplit('/').next().unwrap_or("").to_string();
        written.push(json!({"name": name, "path": path, "type": "file"}));
    }
    Json(written).into_response()
}
