//! E2B compatibility: the official E2B SDKs, unmodified, pointed at the
//! daemon (`E2B_API_URL` and `E2B_SANDBOX_URL` both the daemon's
//! address, `E2B_API_KEY` its token) create and use void-box sandboxes.
//!
//! - `control`: E2B's REST control plane (`/sandboxes`, `/v2/sandboxes`);
//! - `connect`: the Connect protocol (JSON codec, enveloped streams);
//! - `process`, `filesystem`: envd's two Connect services, translated to
//!   the guest protocol (no E2B code runs in the guest);
//! - `files`: envd's `GET`/`POST /files`.
//!
//! An envd call names its sandbox in `E2b-Sandbox-Id` and proves it may
//! use it with that sandbox's own `X-Access-Token` (older SDKs send only
//! the token, which is then enough to find it). The daemon's token is
//! not needed, nor accepted in its place.

mod connect;
mod control;
mod files;
mod filesystem;
mod process;
mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use subtle::ConstantTimeEq;

use crate::api::AppState;
use crate::registry::Live;

pub(crate) use control::api_key;
pub(crate) use watch::Watchers;

/// The envd version reported to the SDKs: the features of 0.5.7 (stdin
/// closing, octet-stream uploads) without 0.6's file metadata.
pub(crate) const ENVD_VERSION: &str = "0.5.7";
/// The E2B user's home: the default working directory and where relative
/// paths point; the file calls reach it beside `/workspace` and `/tmp`.
pub(crate) const E2B_HOME: &str = "/home/user";

/// What the daemon's E2B API is configured with (plain data, in
/// [`crate::ServeConfig`]).
#[derive(Debug, Clone)]
pub struct E2bConfig {
    /// Template aliases: a name the SDK asks for, and the snapshot or image
    /// reference it stands for (`base` is the plain guest unless aliased).
    pub templates: BTreeMap<String, String>,
    /// Guest RAM of each E2B sandbox, in MiB.
    pub memory_mb: u32,
    /// Sandboxes kept booted ahead per template (and network choice), so a
    /// create takes one that is ready; 0: every create boots.
    pub pool: usize,
}

impl Default for E2bConfig {
    fn default() -> Self {
        E2bConfig {
            templates: BTreeMap::new(),
            memory_mb: 512,
            pool: 0,
        }
    }
}

/// Whether a request is an envd call (its path is envd's), which carries
/// a sandbox's access token instead of the daemon's.
pub(crate) fn is_envd_path(path: &str) -> bool {
    path.starts_with("/process.Process/")
        || path.starts_with("/filesystem.Filesystem/")
        || path == "/files"
        || path == "/health"
}

/// Every E2B route.
pub(crate) fn routes() -> Router<AppState> {
    let one = "/sandboxes/{id}";
    Router::new()
        .route("/sandboxes", post(control::create).get(control::list))
        .route("/v2/sandboxes", post(control::create).get(control::list))
        .route(one, get(control::get).delete(control::kill))
        .route(&format!("{one}/timeout"), post(control::set_timeout))
        .route(&format!("{one}/connect"), post(control::connect))
        .route("/v2/sandboxes/{id}/connect", post(control::connect))
        .route("/health", get(health))
        .route("/process.Process/{method}", post(process::call))
        .route("/filesystem.Filesystem/{method}", post(filesystem::call))
        .route(
            "/files",
            get(files::read)
                .post(files::write)
                .layer(axum::extract::DefaultBodyLimit::max(
                    crate::api::UPLOAD_LIMIT,
                )),
        )
}

/// Why an envd call has no sandbox.
pub(crate) enum Refusal {
    /// No such sandbox (or it ended): E2B's proxy answers 502.
    Gone(String),
    /// The access token is missing or wrong.
    Token,
    /// A port other than envd's (user services are not proxied).
    Port(String),
}

impl Refusal {
    /// The answer, in the REST routes' shape.
    pub fn response(self) -> Response {
        match self {
            Refusal::Gone(id) => control::error(
                StatusCode::BAD_GATEWAY,
                // The SDKs look for "was not found" to say the sandbox is gone.
                format!("The sandbox {id} was not found"),
            ),
            Refusal::Token => control::error(
                StatusCode::UNAUTHORIZED,
                "the sandbox's X-Access-Token is missing or wrong",
            ),
            Refusal::Port(port) => control::error(
                StatusCode::BAD_GATEWAY,
                format!("port {port}: only envd (49983) is served"),
            ),
        }
    }
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The sandbox an envd call is for, its token checked.
pub(crate) fn envd_sandbox(state: &AppState, headers: &HeaderMap) -> Result<Arc<Live>, Refusal> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(port) = text("e2b-sandbox-port").filter(|p| *p != "49983") {
        return Err(Refusal::Port(port.to_string()));
    }
    let token = text("x-access-token");
    match text("e2b-sandbox-id") {
        Some(id) => {
            let live = state
                .registry
                .get(id)
                .filter(|l| l.e2b.is_some())
                .ok_or_else(|| Refusal::Gone(id.to_string()))?;
            let expected = &live.e2b.as_ref().map(|e| e.access_token.as_str());
            match (token, expected) {
                (Some(given), Some(expected)) if same(given, expected) => Ok(live),
                _ => Err(Refusal::Token),
            }
        }
        // SDKs that drop the routing headers on some calls: the token
        // alone names the sandbox.
        None => {
            let token = token.ok_or(Refusal::Token)?;
            state
                .registry
                .list()
                .into_iter()
                .find(|l| l.e2b.as_ref().is_some_and(|e| same(&e.access_token, token)))
                .ok_or(Refusal::Token)
        }
    }
}

/// An envd call's sandbox, its token checked: the extractor of every envd
/// route (a refusal is answered as E2B's proxy would).
pub(crate) struct EnvdSandbox(pub Arc<Live>);

impl axum::extract::FromRequestParts<AppState> for EnvdSandbox {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Response> {
        envd_sandbox(state, &parts.headers)
            .map(EnvdSandbox)
            .map_err(Refusal::response)
    }
}

/// The user an envd call runs as (`Authorization: Basic base64(user:)`):
/// `None` for E2B's `user`, which is the sandbox's own user.
pub(crate) fn envd_user(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text.split(':').next().unwrap_or("");
    (!user.is_empty() && user != "user").then(|| user.to_string())
}

/// The home of `user` (as [`envd_user`] gives it), where relative paths
/// point.
pub(crate) fn home_of(user: Option<&str>) -> &'static str {
    match user {
        Some("root") => "/root",
        _ => E2B_HOME,
    }
}

/// `path` made absolute: relative ones (and `~/...`) from the user's home.
pub(crate) fn absolute(path: &str, user: Option<&str>) -> String {
    let home = home_of(user);
    if path.starts_with('/') {
        path.to_string()
    } else if path == "~" || path.is_empty() {
        home.to_string()
    } else if let Some(rest) = path.strip_prefix("~/") {
        format!("{home}/{rest}")
    } else {
        format!("{home}/{path}")
    }
}

/// How often a stream sends a keepalive: `Keepalive-Ping-Interval`
/// seconds (50 when absent), so that clients with idle timeouts (undici:
/// 300 s) keep a quiet stream.
pub(crate) fn keepalive_interval(headers: &HeaderMap) -> std::time::Duration {
    let secs = headers
        .get("keepalive-ping-interval")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| (1..=3600).contains(s))
        .unwrap_or(50);
    std::time::Duration::from_secs(secs)
}

/// envd's `GET /health`: 204 while the sandbox runs, 502 once it is gone.
async fn health(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: HeaderMap,
) -> Response {
    use axum::response::IntoResponse;
    match envd_sandbox(&state, &headers) {
        Ok(live) if live.sandbox.is_alive() => StatusCode::NO_CONTENT.into_response(),
        Ok(live) => Refusal::Gone(live.sandbox.id()).response(),
        Err(refusal) => refusal.response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_paths_are_read_as_envd_reads_them() {
        let mut headers = HeaderMap::new();
        assert_eq!(envd_user(&headers), None);
        headers.insert("authorization", "Basic cm9vdDo=".parse().unwrap()); // root:
        assert_eq!(envd_user(&headers).as_deref(), Some("root"));
        headers.insert("authorization", "Basic dXNlcjo=".parse().unwrap()); // user:
        assert_eq!(envd_user(&headers), None);
        assert_eq!(absolute("a/b.txt", None), "/home/user/a/b.txt");
        assert_eq!(absolute("~/x", Some("root")), "/root/x");
        assert_eq!(absolute("/tmp/x", None), "/tmp/x");
        assert!(is_envd_path("/process.Process/Start"));
        assert!(!is_envd_path("/sandboxes"));
    }
}
