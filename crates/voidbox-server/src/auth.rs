//! The bearer token: `Authorization: Bearer TOKEN` (or E2B's
//! `X-API-Key: TOKEN`) on every request but `/v1/health` and envd calls
//! (which carry their sandbox's own token, checked by `e2b`), compared in
//! constant time.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use crate::api::{ApiError, AppState};

/// Refuses a request without the daemon's token (when it has one).
pub(crate) async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(token) = state.token.as_deref() else {
        return Ok(next.run(request).await);
    };
    let path = request.uri().path();
    if path == "/v1/health" || crate::e2b::is_envd_path(path) {
        return Ok(next.run(request).await);
    }
    let given = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| crate::e2b::api_key(request.headers()))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        Ok(next.run(request).await)
    } else {
        Err(ApiError::unauthorized())
    }
}
