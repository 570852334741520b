//! The routes, their shared state and their one error shape
//! (`{"code": HTTP status, "message": "..."}`).

pub(crate) mod exec;
pub(crate) mod files;
pub(crate) mod health;
pub(crate) mod runs;
pub(crate) mod sandboxes;
pub(crate) mod sessions;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use crate::lanes::Lanes;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::runs::Runs;
use crate::store::Store;
use crate::ServeConfig;

/// Largest request body, but for file uploads.
pub(crate) const BODY_LIMIT: usize = 1 << 20;
/// Largest file upload (the guest's file API takes more, the daemon holds
/// the body in memory).
pub(crate) const UPLOAD_LIMIT: usize = 256 << 20;

/// What every handler sees.
#[derive(Clone)]
pub(crate) struct AppState {
    pub registry: Arc<Registry>,
    pub runs: Arc<Runs>,
    pub sessions: Arc<crate::sessions::Sessions>,
    pub metrics: Arc<Metrics>,
    pub lanes: Arc<Lanes>,
    pub token: Option<Arc<str>>,
    pub e2b: Arc<crate::e2b::E2bConfig>,
    /// Where E2B creates take their sandboxes from, when pooled.
    pub e2b_pool: Option<Arc<dyn void_box::sandbox::SandboxProvider>>,
}

impl AppState {
    pub fn new(config: &ServeConfig, store: Arc<Store>) -> AppState {
        let metrics = Arc::new(Metrics::default());
        let lanes = Arc::new(Lanes::new(config.lanes));
        AppState {
            registry: Arc::new(Registry::new(
                config.provider.clone(),
                config.max_sandboxes,
                metrics.clone(),
                store.clone(),
            )),
            runs: Arc::new(Runs::new(
                config.provider.clone(),
                store.clone(),
                lanes.clone(),
            )),
            sessions: Arc::new(crate::sessions::Sessions::load(
                config.provider.clone(),
                store,
                lanes.clone(),
            )),
            metrics,
            lanes,
            token: config.token.as_deref().map(Arc::from),
            e2b: Arc::new(config.e2b.clone()),
            e2b_pool: (config.e2b.pool > 0).then(|| {
                let pool = void_box::sandbox::SandboxPool::with_provider(
                    config.provider.clone(),
                    config.e2b.pool,
                );
                Arc::new(pool) as Arc<dyn void_box::sandbox::SandboxProvider>
            }),
        }
    }
}

/// Every route.
pub(crate) fn router(state: AppState) -> Router {
    let sandbox = "/v1/sandboxes/{id}";
    Router::new()
        .route("/v1/health", get(health::health))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(health::openapi))
        .route("/v1/runs", post(runs::submit).get(runs::list))
        .route("/v1/runs/{id}", get(runs::get))
        .route("/v1/runs/{id}/cancel", post(runs::cancel))
        .route("/v1/runs/{id}/events", get(runs::events))
        .route(
            "/v1/runs/{id}/stages/{stage}/output",
            get(runs::stage_output),
        )
        .route(
            "/v1/sandboxes",
            post(sandboxes::create).get(sandboxes::list),
        )
        .route(sandbox, get(sandboxes::get).delete(sandboxes::delete))
        .route(&format!("{sandbox}/timeout"), post(sandboxes::set_timeout))
        .route(&format!("{sandbox}/exec"), post(exec::run))
        .route(&format!("{sandbox}/exec/stream"), post(exec::stream))
        .route(
            &format!("{sandbox}/processes/{{pid}}/stdin"),
            post(exec::stdin).layer(DefaultBodyLimit::max(UPLOAD_LIMIT)),
        )
        .route(
            &format!("{sandbox}/processes/{{pid}}"),
            axum::routing::delete(exec::kill),
        )
        .route(
            &format!("{sandbox}/files"),
            get(files::read)
                .put(files::write)
                .delete(files::remove)
                .layer(DefaultBodyLimit::max(UPLOAD_LIMIT)),
        )
        .route(&format!("{sandbox}/files/stat"), get(files::stat))
        .route(&format!("{sandbox}/files/list"), get(files::list))
        .route(&format!("{sandbox}/files/mkdir"), post(files::mkdir))
        .route(&format!("{sandbox}/files/rename"), post(files::rename))
        .route("/v1/sessions", post(sessions::create).get(sessions::list))
        .route(
            "/v1/sessions/{id}",
            get(sessions::get).delete(sessions::destroy),
        )
        .route("/v1/sessions/{id}/generate", post(sessions::generate))
        .route(
            "/v1/sessions/{id}/generate_object",
            post(sessions::generate_object),
        )
        .route("/v1/sessions/{id}/stream", post(sessions::stream))
        .route("/v1/sessions/{id}/history", get(sessions::history))
        .route("/v1/sessions/{id}/context", get(sessions::context))
        .route("/v1/sessions/{id}/clear", post(sessions::clear))
        .route("/v1/sessions/{id}/compact", post(sessions::compact))
        .route("/v1/sessions/{id}/cancel", post(sessions::cancel))
        .route(
            "/v1/sessions/{id}/confirmations/{confirmation}",
            post(sessions::confirm),
        )
        .merge(crate::e2b::routes())
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::lanes::admit,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require_token,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::access::log,
        ))
        .with_state(state)
}

/// An error answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ApiError {
    /// The HTTP status.
    pub code: u16,
    /// What went wrong.
    pub message: String,
    /// Seconds to wait before trying again (the `Retry-After` header).
    #[serde(skip)]
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code: status.as_u16(),
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same, with a `Retry-After` of `secs`.
    pub fn retry_after(mut self, secs: u32) -> ApiError {
        self.retry_after = Some(secs);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a valid `Authorization: Bearer TOKEN` is required",
        )
    }

    pub fn no_sandbox(id: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, format!("no sandbox `{id}`"))
    }

    /// A failure of the library, as the status it is.
    pub fn from_sandbox(e: void_box::Error) -> ApiError {
        use void_box::ErrorKind;
        let status = match &e {
            void_box::Error::Guest { kind, .. } => match kind {
                ErrorKind::NotFound => StatusCode::NOT_FOUND,
                ErrorKind::PathEscape | ErrorKind::NotAllowed => StatusCode::FORBIDDEN,
                ErrorKind::InvalidRequest => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            void_box::Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            void_box::Error::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            void_box::Error::Disconnected(_) => StatusCode::GONE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after;
        let mut response = (status, Json(self)).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

/// A JSON body, its rejection a JSON error that names what is wrong.
pub(crate) struct Body<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for Body<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(ApiError::new(rejection.status(), rejection.body_text())),
        }
    }
}
