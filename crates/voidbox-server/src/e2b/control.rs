//! E2B's control plane (its REST API, `X-API-Key` = the daemon's token):
//! create, list, get, connect, set the timeout of and kill sandboxes.
//! A template is an alias the daemon was given, a snapshot's name, an
//! image reference, or `base` (the plain guest).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use void_box::net::NetworkPolicy;
use void_box::sandbox::snapshot::SnapshotStore;
use void_box::SandboxConfig;

use super::{E2B_HOME, ENVD_VERSION};
use crate::api::AppState;
use crate::registry::{CreateError, E2bIdentity, Live};

/// Longest timeout a sandbox may be given (E2B's own bound for Pro).
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// The domain answered to the SDK: one that never resolves, so an SDK
/// not pointed at the daemon (no `E2B_SANDBOX_URL`) cannot send a
/// sandbox's token anywhere.
const DOMAIN: &str = "voidbox.invalid";

/// E2B's error body: `{"code": status, "message"}`.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    E2bError(status, message.into()).into_response()
}

/// An error of the control plane.
pub(crate) struct E2bError(pub StatusCode, pub String);

impl IntoResponse for E2bError {
    fn into_response(self) -> Response {
        let (status, message) = (self.0, self.1);
        (
            status,
            Json(json!({"code": status.as_u16(), "message": message})),
        )
            .into_response()
    }
}

/// The body of `POST /sandboxes`, as the SDKs send it; fields we do not
/// act on are read and ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewSandbox {
    #[serde(rename = "templateID")]
    template_id: String,
    #[serde(default)]
    timeout: Option<u64>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    env_vars: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "allow_internet_access")]
    allow_internet_access: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
struct TimeoutBody {
    #[serde(default)]
    timeout: Option<u64>,
}

fn json_body<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, E2bError> {
    if body.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| E2bError(StatusCode::BAD_REQUEST, format!("the request body: {e}")))
}

fn timeout_of(secs: Option<u64>) -> Result<Duration, E2bError> {
    let secs = secs.unwrap_or(300);
    let timeout = Duration::from_secs(secs);
    if secs == 0 || timeout > MAX_TIMEOUT {
        return Err(E2bError(
            StatusCode::BAD_REQUEST,
            format!("timeout {secs}s is not between 1s and 24h"),
        ));
    }
    Ok(timeout)
}

/// What a template name stands for.
fn resolve_template(state: &AppState, name: &str) -> Result<SandboxConfig, E2bError> {
    let target = state.e2b.templates.get(name).map_or(name, String::as_str);
    let mut config = SandboxConfig::default();
    if SnapshotStore::default_location().contains(target) {
        config.snapshot = Some(target.to_string());
    } else if target == "base" {
        // The plain guest.
    } else if target.contains(['/', ':', '@']) {
        config.image = Some(target.to_string());
    } else {
        return Err(E2bError(
            StatusCode::NOT_FOUND,
            format!("template '{name}' not found (not an alias, a snapshot or an image reference)"),
        ));
    }
    Ok(config)
}

/// `POST /sandboxes` (and `/v2/sandboxes`): boots a sandbox and answers
/// once its guest answers, 201.
pub(crate) async fn create(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, E2bError> {
    let request: NewSandbox = serde_json::from_slice(&body)
        .map_err(|e| E2bError(StatusCode::BAD_REQUEST, format!("the request body: {e}")))?;
    let timeout = timeout_of(request.timeout)?;
    let mut config = resolve_template(&state, &request.template_id)?;
    // E2B's sandboxes: any command, a home the file calls reach, the
    // SDK's environment, the internet unless it says no.
    config.allowed_commands = vec!["*".into()];
    config.file_roots = vec![E2B_HOME.into()];
    config.env = vec![("HOME".into(), E2B_HOME.into())];
    if request.allow_internet_access.unwrap_or(true) {
        config.network = NetworkPolicy::public();
    }
    config.memory_mb = state.e2b.memory_mb;
    let identity = E2bIdentity {
        template: request.template_id.clone(),
        access_token: format!("{:032x}", rand::random::<u128>()),
        envs: request.env_vars.unwrap_or_default(),
        watchers: Default::default(),
    };
    let metadata = request.metadata.unwrap_or_default();
    match state
        .registry
        .create(
            config,
            Some(timeout),
            metadata,
            Some(identity),
            state.e2b_pool.as_deref(),
        )
        .await
    {
        Ok(live) => Ok((StatusCode::CREATED, Json(sandbox_json(&live))).into_response()),
        Err(CreateError::Full(max)) => Err(E2bError(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{max} sandboxes are running, the daemon's limit"),
        )),
        Err(CreateError::Config(message)) => Err(E2bError(StatusCode::BAD_REQUEST, message)),
        Err(CreateError::Boot(e)) => {
            Err(E2bError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
        }
    }
}

fn identity(live: &Live) -> &E2bIdentity {
    live.e2b
        .as_ref()
        .expect("only E2B sandboxes are looked up here")
}

/// The `Sandbox` answer of create and connect.
fn sandbox_json(live: &Live) -> Value {
    let e2b = identity(live);
    json!({
        "templateID": e2b.template,
        "sandboxID": live.sandbox.id(),
        "clientID": "voidbox",
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": e2b.access_token,
        "trafficAccessToken": null,
        "domain": DOMAIN,
    })
}

fn rfc3339(unix_ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(unix_ms as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `ListedSandbox`, and with `detail` `SandboxDetail`.
fn listed_json(live: &Live, detail: bool) -> Value {
    let e2b = identity(live);
    let mut out = json!({
        "templateID": e2b.template,
        "sandboxID": live.sandbox.id(),
        "clientID": "voidbox",
        "startedAt": rfc3339(live.created_unix_ms),
        "endAt": rfc3339(live.expires_unix_ms().unwrap_or(live.created_unix_ms)),
        "cpuCount": live.vcpus,
        "memoryMB": live.memory_mb,
        "diskSizeMB": 0,
        "state": "running",
        "envdVersion": ENVD_VERSION,
        "metadata": live.metadata,
    });
    if detail {
        out["envdAccessToken"] = json!(e2b.access_token);
        out["domain"] = json!(DOMAIN);
    }
    out
}

/// The E2B sandbox `id`, or 404.
fn e2b_sandbox(state: &AppState, id: &str) -> Result<Arc<Live>, E2bError> {
    state
        .registry
        .get(id)
        .filter(|l| l.e2b.is_some())
        .ok_or_else(|| E2bError(StatusCode::NOT_FOUND, format!("sandbox '{id}' not found")))
}

/// `GET /sandboxes/{id}`.
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, E2bError> {
    let live = e2b_sandbox(&state, &id)?;
    Ok(Json(listed_json(&live, true)).into_response())
}

/// `DELETE /sandboxes/{id}`: 204, or 404 when it is not running.
pub(crate) async fn kill(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, E2bError> {
    e2b_sandbox(&state, &id)?;
    state.registry.end(&id, "killed through the E2B API");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /sandboxes/{id}/timeout`: ends it that many seconds from now.
pub(crate) async fn set_timeout(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, E2bError> {
    let live = e2b_sandbox(&state, &id)?;
    let timeout = timeout_of(json_body::<TimeoutBody>(&body)?.timeout)?;
    live.set_timeout(Some(timeout));
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /sandboxes/{id}/connect` (and `/v2/...`): a running sandbox,
/// its timeout pushed out to at least `timeout` from now; 200.
pub(crate) async fn connect(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, E2bError> {
    let live = e2b_sandbox(&state, &id)?;
    let timeout = timeout_of(json_body::<TimeoutBody>(&body)?.timeout)?;
    let wanted = crate::registry::unix_ms() + timeout.as_millis() as u64;
    if live.expires_unix_ms().is_some_and(|at| at < wanted) {
        live.set_timeout(Some(timeout));
    }
    Ok(Json(sandbox_json(&live)).into_response())
}

/// `GET /v2/sandboxes` (and `/sandboxes`): the running E2B sandboxes,
/// filtered by `metadata` (`k=v&k2=v2`, URL-encoded), `state` and
/// `template`, in id order (`order` and `startedAfter` are not read), a page
/// of `limit` after `nextToken`, the next page's token in `X-Next-Token`.
pub(crate) async fn list(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let params: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    // `k=v&k2=v2`, each key and value percent-encoded before the whole
    // was: decoded twice.
    let wanted: Vec<(String, String)> = match param("metadata") {
        Some(text) => match serde_urlencoded::from_str::<Vec<(String, String)>>(text) {
            Ok(pairs) => pairs
                .into_iter()
                .map(|(k, v)| (percent_decoded(&k), percent_decoded(&v)))
                .collect(),
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("metadata: {e}")),
        },
        None => Vec::new(),
    };
    let running_wanted = param("state").is_none_or(|s| s.split(',').any(|s| s == "running"));
    let limit = match param("limit").map(str::parse::<usize>) {
        None => 100,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => return error(StatusCode::BAD_REQUEST, "limit must be 1 to 1000"),
    };
    let after = param("nextToken").unwrap_or("");
    let template = param("template").filter(|t| !t.is_empty());
    let mut matching: Vec<Arc<Live>> = state
        .registry
        .list()
        .into_iter()
        .filter(|l| l.e2b.is_some() && running_wanted)
        .filter(|l| wanted.iter().all(|(k, v)| l.metadata.get(k) == Some(v)))
        .filter(|l| template.is_none_or(|t| identity(l).template == t))
        .filter(|l| l.sandbox.id().as_str() > after)
        .collect();
    let more = matching.len() > limit;
    matching.truncate(limit);
    let page: Vec<Value> = matching.iter().map(|l| listed_json(l, false)).collect();
    let mut response = Json(page).into_response();
    if more {
        if let Some(Ok(token)) = matching
            .last()
            .map(|l| HeaderValue::from_str(&l.sandbox.id()))
        {
            response.headers_mut().insert("x-next-token", token);
        }
    }
    response
}

fn percent_decoded(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// Whether `headers` carry the daemon's token as E2B's `X-API-Key`.
pub(crate) fn api_key(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-api-key").and_then(|v| v.to_str().ok())
}
